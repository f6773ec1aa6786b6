//! Maps between byte offsets and field paths of a TOML document.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// The dotted path of the deepest key or value whose span holds `offset`.
pub(crate) fn path_at(text: &str, offset: usize) -> String {
    // Recover from syntax errors so that a broken document still names the
    // key the error is in.
    let (root, _errors) = DeTable::parse_recoverable(text);
    let mut path = String::new();
    walk_table(root.get_ref(), offset, &mut path);
    path
}

fn walk_table(table: &DeTable<'_>, offset: usize, path: &mut String) -> bool {
    for (key, value) in table {
        let key_hit = key.span().contains(&offset);
        let value_hit = value.span().contains(&offset);
        if key_hit || value_hit || holds(value, offset) {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key.get_ref());
            if !key_hit {
                walk_value(value, offset, path);
            }
            return true;
        }
    }
    false
}

fn holds(value: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    // Tables written as `[section]` headers span only their header, so look
    // inside them too.
    match value.get_ref() {
        DeValue::Table(t) => t.iter().any(|(k, v)| {
            k.span().contains(&offset) || v.span().contains(&offset) || holds(v, offset)
        }),
        DeValue::Array(a) => a
            .iter()
            .any(|v| v.span().contains(&offset) || holds(v, offset)),
        _ => false,
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut String) {
    match value.get_ref() {
        DeValue::Table(t) => {
            walk_table(t, offset, path);
        }
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                if item.span().contains(&offset) || holds(item, offset) {
                    path.push_str(&format!("[{i}]"));
                    walk_value(item, offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

/// For text that does not parse: the key of the last `key = ...` line at or
/// before `offset`, or the empty string.
pub(crate) fn key_before(text: &str, offset: usize) -> String {
    let before = &text[..floor_char_boundary(text, offset.min(text.len()))];
    before
        .lines()
        .rev()
        .find_map(|line| {
            let (key, _) = line.split_once('=')?;
            let key = key.trim();
            (!key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
            .then(|| key.to_string())
        })
        .unwrap_or_default()
}

/// The span of the value at dotted `path` (`a.b[2].c`), or of the nearest
/// parent that exists.
pub(crate) fn span_of(text: &str, path: &str) -> Option<Range<usize>> {
    let root = DeTable::parse(text).ok()?;
    let mut best: Option<Range<usize>> = None;
    let mut current: Option<&Spanned<DeValue<'_>>> = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    for segment in path.split('.') {
        let (name, indices) = split_indices(segment);
        let next = match (table, current) {
            (Some(t), _) => t.iter().find(|(k, _)| k.get_ref() == name).map(|(k, v)| {
                best = Some(k.span());
                v
            }),
            _ => None,
        };
        let Some(mut value) = next else { break };
        if value.span().end > value.span().start {
            best = Some(value.span());
        }
        for i in indices {
            match value.get_ref() {
                DeValue::Array(a) if i < a.len() => {
                    value = &a[i];
                    if value.span().end > value.span().start {
                        best = Some(value.span());
                    }
                }
                _ => return best,
            }
        }
        current = Some(value);
        table = value.get_ref().as_table();
    }
    best
}

fn split_indices(segment: &str) -> (&str, Vec<usize>) {
    let name_end = segment.find('[').unwrap_or(segment.len());
    let indices = segment[name_end..]
        .split(['[', ']'])
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (&segment[..name_end], indices)
}
