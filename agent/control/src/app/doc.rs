//! An app file as a tree of values that each know their place: the JSON
//! path (`$.container.docker.image`) of a JSON document, the line, column
//! and dotted path of a TOML one. The readers ([`super::marathon`],
//! [`super::native`]) walk it and report every mistake at its place, where
//! serde would stop at the first.

use std::fmt;

/// Where a value is in its file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Place {
    /// `$.apps[2].cpus` (JSON) or `health_checks[0].path` (TOML); `$` or
    /// empty for the whole document.
    pub path: String,
    /// 1-based line and column; 0 when the format gives none (JSON values
    /// are placed by their path).
    pub line: usize,
    pub column: usize,
}

/// One value of the document.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Arr(Vec<Node>),
    /// Entries in the file's order (JSON: sorted by key), each with the
    /// place of its key.
    Obj(Vec<(String, Place, Node)>),
}

/// A value and its place.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub place: Place,
}

/// One mistake in a file: where and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    #[serde(flatten)]
    pub place: Place,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.place;
        if p.line > 0 {
            write!(f, "{}:{}: ", p.line, p.column)?;
            if !p.path.is_empty() {
                write!(f, "field `{}`: ", p.path)?;
            }
        } else if !p.path.is_empty() {
            write!(f, "{}: ", p.path)?;
        }
        write!(f, "{}", self.message)
    }
}

/// Which way a file is written: the key names its readers expect differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Json,
    Toml,
}

impl Syntax {
    /// The path of the document's root.
    fn root(self) -> &'static str {
        match self {
            Syntax::Json => "$",
            Syntax::Toml => "",
        }
    }

    /// The path of `key` in the object at `parent`.
    pub fn child(self, parent: &str, key: &str) -> String {
        let plain = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        match (self, plain) {
            (Syntax::Json, true) => format!("{parent}.{key}"),
            (Syntax::Json, false) => format!("{parent}[{key:?}]"),
            (Syntax::Toml, _) if parent.is_empty() => key.to_string(),
            (Syntax::Toml, _) => format!("{parent}.{key}"),
        }
    }
}

/// Parses a JSON document. A syntax error is the one problem, at its line
/// and column.
pub fn parse_json(text: &str) -> Result<Node, Problem> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| Problem {
        place: Place {
            path: String::new(),
            line: e.line(),
            column: e.column(),
        },
        message: format!("malformed JSON: {}", strip_position(&e.to_string())),
    })?;
    Ok(from_json(value, Syntax::Json.root().to_string()))
}

fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |i| &message[..i])
}

fn from_json(value: serde_json::Value, path: String) -> Node {
    use serde_json::Value as J;
    let value = match value {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => Value::Str(s),
        J::Array(items) => Value::Arr(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| from_json(v, format!("{path}[{i}]")))
                .collect(),
        ),
        J::Object(map) => Value::Obj(
            map.into_iter()
                .map(|(k, v)| {
                    let child = Syntax::Json.child(&path, &k);
                    let key_place = Place {
                        path: child.clone(),
                        line: 0,
                        column: 0,
                    };
                    (k, key_place, from_json(v, child))
                })
                .collect(),
        ),
    };
    Node {
        value,
        place: Place {
            path,
            line: 0,
            column: 0,
        },
    }
}

/// Parses a TOML document. Syntax errors are problems at their line and
/// column.
pub fn parse_toml(text: &str) -> Result<Node, Vec<Problem>> {
    use toml::de::DeTable;
    let root = DeTable::parse(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        vec![Problem {
            place: Place {
                path: String::new(),
                line,
                column,
            },
            message: format!("malformed TOML: {}", e.message().trim_end()),
        }]
    })?;
    let mut problems = Vec::new();
    let entries = toml_table(text, root.get_ref(), "", &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Node {
        value: Value::Obj(entries),
        place: Place {
            path: String::new(),
            line: 1,
            column: 1,
        },
    })
}

fn toml_table(
    text: &str,
    table: &toml::de::DeTable<'_>,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(String, Place, Node)> {
    table
        .iter()
        .map(|(key, value)| {
            let child = Syntax::Toml.child(path, key.get_ref());
            let (line, column) = line_col(text, key.span().start);
            let key_place = Place {
                path: child.clone(),
                line,
                column,
            };
            let node = toml_value(text, value, child, problems);
            (key.get_ref().to_string(), key_place, node)
        })
        .collect()
}

fn toml_value(
    text: &str,
    value: &toml::Spanned<toml::de::DeValue<'_>>,
    path: String,
    problems: &mut Vec<Problem>,
) -> Node {
    use toml::de::DeValue;
    let (line, column) = line_col(text, value.span().start);
    let place = Place { path, line, column };
    let value = match value.get_ref() {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let digits = digits
                .trim_start_matches("0x")
                .trim_start_matches("0o")
                .trim_start_matches("0b");
            match i64::from_str_radix(digits, i.radix()) {
                Ok(n) => Value::Int(n),
                Err(_) => {
                    problems.push(Problem {
                        place: place.clone(),
                        message: format!("integer {} is out of range", i.as_str()),
                    });
                    Value::Null
                }
            }
        }
        DeValue::Float(f) => Value::Float(parse_toml_float(f.as_str())),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Str(d.to_string()),
        DeValue::Array(items) => Value::Arr(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| toml_value(text, v, format!("{}[{i}]", place.path), problems))
                .collect(),
        ),
        DeValue::Table(t) => Value::Obj(toml_table(text, t, &place.path, problems)),
    };
    Node { value, place }
}

fn parse_toml_float(text: &str) -> f64 {
    let t = text.replace('_', "");
    match t.trim_start_matches(['+', '-']) {
        "inf" => f64::INFINITY,
        "nan" => f64::NAN,
        _ => t.parse().unwrap_or(f64::NAN),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Node {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match &self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Arr(_) => "an array",
            Value::Obj(_) => "an object",
        }
    }

    /// Whether the value is its type's empty or zero value (what a field
    /// Strata lacks may hold).
    pub fn is_empty(&self) -> bool {
        match &self.value {
            Value::Null => true,
            Value::Bool(b) => !b,
            Value::Int(i) => *i == 0,
            Value::Float(f) => *f == 0.0,
            Value::Str(s) => s.is_empty(),
            Value::Arr(a) => a.is_empty(),
            Value::Obj(o) => o.is_empty(),
        }
    }
}

/// Collects the problems of one document.
#[derive(Debug, Default)]
pub struct Problems {
    pub list: Vec<Problem>,
}

impl Problems {
    pub fn at(&mut self, place: &Place, message: impl Into<String>) {
        self.list.push(Problem {
            place: place.clone(),
            message: message.into(),
        });
    }

    fn expected(&mut self, node: &Node, what: &str) {
        self.at(
            &node.place,
            format!("expected {what}, found {}", describe(node)),
        );
    }

    /// A string.
    pub fn str(&mut self, node: &Node) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.expected(node, "a string");
                None
            }
        }
    }

    pub fn bool(&mut self, node: &Node) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => {
                self.expected(node, "true or false");
                None
            }
        }
    }

    /// A number (an integer is one).
    pub fn f64(&mut self, node: &Node) -> Option<f64> {
        match &node.value {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) if f.is_finite() => Some(*f),
            _ => {
                self.expected(node, "a number");
                None
            }
        }
    }

    /// A whole number from `min` to `max`.
    pub fn int(&mut self, node: &Node, min: i64, max: i64) -> Option<i64> {
        let n = match &node.value {
            Value::Int(i) => *i,
            // JSON writers often write 1.0 for 1.
            Value::Float(f) if f.fract() == 0.0 && f.is_finite() => *f as i64,
            _ => {
                self.expected(node, "a whole number");
                return None;
            }
        };
        if n < min || n > max {
            self.at(
                &node.place,
                format!("{n} is out of range: expected {min} to {max}"),
            );
            return None;
        }
        Some(n)
    }

    /// An array of strings.
    pub fn strings(&mut self, node: &Node) -> Option<Vec<String>> {
        let Value::Arr(items) = &node.value else {
            self.expected(node, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for item in items {
            match self.str(item) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// An array, item by item.
    pub fn array<'a>(&mut self, node: &'a Node) -> Option<&'a [Node]> {
        match &node.value {
            Value::Arr(items) => Some(items),
            _ => {
                self.expected(node, "an array");
                None
            }
        }
    }

    /// An object, to read field by field with [`Fields`].
    pub fn object<'a>(&mut self, node: &'a Node, what: &str) -> Option<Fields<'a>> {
        match &node.value {
            Value::Obj(entries) => Some(Fields {
                node,
                entries,
                used: vec![false; entries.len()],
            }),
            _ => {
                self.expected(node, what);
                None
            }
        }
    }
}

fn describe(node: &Node) -> String {
    match &node.value {
        Value::Str(s) if s.chars().count() <= 40 => format!("the string {s:?}"),
        Value::Int(i) => format!("{i}"),
        Value::Float(f) => format!("{f}"),
        Value::Bool(b) => format!("{b}"),
        _ => node.kind().to_string(),
    }
}

/// The fields of one object, each taken once; what is left at the end is
/// unknown.
pub struct Fields<'a> {
    pub node: &'a Node,
    entries: &'a [(String, Place, Node)],
    used: Vec<bool>,
}

impl<'a> Fields<'a> {
    /// The value of `key`, if present and not null (exports write null for
    /// an unset optional field).
    pub fn get(&mut self, key: &str) -> Option<&'a Node> {
        let i = self.entries.iter().position(|(k, _, _)| k == key)?;
        self.used[i] = true;
        let node = &self.entries[i].2;
        (node.value != Value::Null).then_some(node)
    }

    /// Whether `key` is present (even as null).
    pub fn has(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| k == key)
    }

    /// Marks keys that are read and ignored (what Marathon's API returns
    /// about an app's state, never part of its definition).
    pub fn ignore(&mut self, keys: &[&str]) {
        for (i, (k, _, _)) in self.entries.iter().enumerate() {
            if keys.contains(&k.as_str()) {
                self.used[i] = true;
            }
        }
    }

    /// A field Strata does not have: accepted while it holds its empty or
    /// default value, otherwise a problem that names it and says why.
    pub fn lacks(&mut self, p: &mut Problems, key: &str, why: &str) {
        if let Some(node) = self.get(key)
            && !node.is_empty()
        {
            p.at(
                &node.place,
                format!("`{key}` is not supported: {why}; remove it or leave it empty"),
            );
        }
    }

    /// Reports every key not taken, with the keys this object has.
    pub fn finish(self, p: &mut Problems, known: &[&str]) {
        for ((key, place, _), used) in self.entries.iter().zip(&self.used) {
            if !used {
                let near = known
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(key) || close(k, key));
                let hint = match near {
                    Some(k) => format!("; did you mean `{k}`?"),
                    None => format!("; expected one of: {}", known.join(", ")),
                };
                p.at(place, format!("unknown field `{key}`{hint}"));
            }
        }
    }
}

/// Whether two keys differ by at most one edit or one swap of neighbours
/// (a typo).
pub(crate) fn close(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 || a.len() < 4 {
        return false;
    }
    // Optimal string alignment distance, rows i-2, i-1 and i.
    let n = b.len();
    let mut before: Vec<usize> = vec![0; n + 1];
    let mut prev: Vec<usize> = (0..=n).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; n + 1];
        for j in 1..=n {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j - 1] + cost).min(prev[j] + 1).min(cur[j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cur[j] = cur[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[n] <= 1
}
