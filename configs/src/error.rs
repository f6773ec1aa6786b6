//! The one error type of this crate: where, which field, what was expected.

use std::fmt;
use std::ops::Range;

use crate::locate;

/// A configuration error, located in its source text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    /// Where the text came from (a path, `fw_cfg:opt/strata/user-data`, ...).
    pub origin: String,
    /// 1-based line, 0 when the error has no position.
    pub line: usize,
    /// 1-based column, 0 when the error has no position.
    pub column: usize,
    /// Dotted path of the field (`overlay.cidr`, `nodes[2].name`), empty for
    /// the whole document.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Error {
    /// An error from the TOML parser or from serde, located by its span.
    pub(crate) fn from_toml(origin: &str, text: &str, err: &toml::de::Error) -> Error {
        let span = err.span();
        let message = tidy_message(err.message());
        let whole = span
            .as_ref()
            .is_some_and(|s| s.start == 0 && (s.end == 0 || s.end + 1 >= text.len()));
        let mut field = match &span {
            Some(s) if !whole => locate::path_at(text, s.start),
            _ => String::new(),
        };
        if field.is_empty()
            && let Some(s) = &span
        {
            field = locate::key_before(text, s.start);
        }
        // serde names a missing field only in its message; point at the
        // table that lacks it.
        if let Some(name) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.split('`').next())
        {
            field = if field.is_empty() || whole {
                name.to_string()
            } else {
                format!("{field}.{name}")
            };
        }
        Error::at(origin, text, span, field, message)
    }

    /// An error about the field at `path`, located in `text` if it is there.
    pub(crate) fn field(origin: &str, text: &str, path: &str, message: impl Into<String>) -> Error {
        let span = locate::span_of(text, path);
        Error::at(origin, text, span, path.to_string(), message.into())
    }

    fn at(
        origin: &str,
        text: &str,
        span: Option<Range<usize>>,
        field: String,
        message: String,
    ) -> Error {
        let (line, column) = span
            .map(|s| locate::line_col(text, s.start))
            .unwrap_or((0, 0));
        Error {
            origin: origin.to_string(),
            line,
            column,
            field,
            message,
        }
    }
}

fn tidy_message(message: &str) -> String {
    let m = message.trim().trim_end_matches('.');
    let mut chars = m.chars();
    match chars.next() {
        Some(c) if c.is_uppercase() && !chars.clone().next().is_some_and(char::is_uppercase) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => m.to_string(),
    }
}
