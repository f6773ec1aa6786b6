//! A schedule's cron expression and the times it names in a time zone.
//!
//! Two dialects, both minute-grained (no seconds field):
//!
//! - [`Dialect::Strata`], Vixie cron as in crontab(5): five fields, minute
//!   hour day-of-month month day-of-week (`0`-`7`, `7` is Sunday, names
//!   allowed), `@daily` and the other nicknames, and `L`, `W` and `#`. A day
//!   matches when its day of month *or* its day of week does, when both are
//!   restricted.
//! - [`Dialect::Metronome`], what a Metronome job file means by its cron:
//!   the same five fields and an optional sixth, the year; a day matches
//!   when its day of month *and* its day of week do (cron-utils'
//!   `matchDayOfWeekAndDayOfMonth`), and `0/15` means `*/15`.
//!
//! `@reboot` has no meaning for a cluster's schedule and is refused, as is
//! a seconds field, and an expression that never fires (`0 0 30 2 *`).
//!
//! Times are walked in the schedule's zone with croner's jiff backend:
//! across a daylight-saving gap, a fixed time (`30 2 * * *`) runs once at
//! the first minute after the gap and an interval (`*/15 * * * *`) skips
//! the minutes that do not exist; across an overlap, a fixed time runs
//! once, in the first pass, and an interval runs in both passes. Each
//! instant is produced once, in order: the caller keys a run by its
//! instant.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Which cron an expression is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// Vixie cron (a Strata job file).
    Strata,
    /// Metronome's (a Metronome job or schedule JSON).
    Metronome,
    /// One a newer writer stored; refused.
    #[serde(other)]
    Unknown,
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("the cron expression is empty")]
    Empty,
    #[error("`@reboot` has no meaning for a cluster's schedule: use a time, as `0 3 * * *`")]
    Reboot,
    #[error(
        "`{expr}` is an ISO 8601 repeating interval (Chronos): Strata's schedules take a cron expression, as `0 * * * *` for every hour"
    )]
    Interval { expr: String },
    #[error(
        "`{expr}` has {fields} field{}: a cron expression has five (minute hour day-of-month month day-of-week){}",
        if *.fields == 1 { "" } else { "s" },
        match (*.metronome, *.fields) {
            (true, _) => ", and Metronome's may add the year",
            (false, 6) => "; seconds are not supported",
            (false, _) => "",
        }
    )]
    Fields {
        expr: String,
        fields: usize,
        metronome: bool,
    },
    #[error("`{expr}` is not a valid cron expression: {why}")]
    Invalid { expr: String, why: String },
    #[error("`{expr}` never fires (no date from 2000 on matches it)")]
    Never { expr: String },
}

/// A parsed expression, with the text it was read from.
#[derive(Debug, Clone)]
pub struct Cron {
    expr: String,
    dialect: Dialect,
    inner: croner::Cron,
}

impl Cron {
    /// Reads `expr` in `dialect`.
    pub fn parse(expr: &str, dialect: Dialect) -> Result<Cron, CronError> {
        let text = expr.trim();
        if text.is_empty() {
            return Err(CronError::Empty);
        }
        if text.eq_ignore_ascii_case("@reboot") {
            return Err(CronError::Reboot);
        }
        if text.starts_with("R/") || text.starts_with("r/") {
            return Err(CronError::Interval {
                expr: text.to_string(),
            });
        }
        if dialect == Dialect::Unknown {
            return Err(CronError::Invalid {
                expr: text.to_string(),
                why: "its dialect is unknown to this release".to_string(),
            });
        }
        let fields = text.split_whitespace().count();
        let metronome = dialect == Dialect::Metronome;
        let nickname = text.starts_with('@');
        let (pattern, seconds, year) = match (fields, metronome) {
            _ if nickname => (
                text.to_string(),
                croner::parser::Seconds::Disallowed,
                croner::parser::Year::Disallowed,
            ),
            (5, _) => (
                text.to_string(),
                croner::parser::Seconds::Disallowed,
                croner::parser::Year::Disallowed,
            ),
            // Metronome's sixth field is the year.
            (6, true) => (
                format!("0 {text}"),
                croner::parser::Seconds::Required,
                croner::parser::Year::Required,
            ),
            _ => {
                return Err(CronError::Fields {
                    expr: text.to_string(),
                    fields,
                    metronome,
                });
            }
        };
        let inner = croner::parser::CronParser::builder()
            .seconds(seconds)
            .year(year)
            .dom_and_dow(metronome)
            .sloppy_ranges(metronome)
            .build()
            .parse(&pattern)
            .map_err(|e| CronError::Invalid {
                expr: text.to_string(),
                why: why(&e),
            })?;
        let cron = Cron {
            expr: text.to_string(),
            dialect,
            inner,
        };
        // Fires at all: from 2000 on, in UTC (a zone shifts a time, it
        // does not make a date exist).
        if cron.next_after(&TimeZone::UTC, 946_684_800).is_none() {
            return Err(CronError::Never {
                expr: text.to_string(),
            });
        }
        Ok(cron)
    }

    /// The text it was read from, trimmed.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The first time it names strictly after unix second `after`, in
    /// `zone`; `None` when there is none (a year passed, or out of range).
    pub fn next_after(&self, zone: &TimeZone, after: u64) -> Option<u64> {
        let from = Timestamp::from_second(i64::try_from(after).ok()?)
            .ok()?
            .to_zoned(zone.clone());
        let next = self.inner.find_next_occurrence(&from, false).ok()?;
        u64::try_from(next.timestamp().as_second()).ok()
    }

    /// The times it names in `after < t <= upto`, oldest first, at most
    /// `limit` of them, and whether more are due past the limit.
    pub fn due(&self, zone: &TimeZone, after: u64, upto: u64, limit: usize) -> (Vec<u64>, bool) {
        let mut out = Vec::new();
        let mut at = after;
        while let Some(t) = self.next_after(zone, at).filter(|t| *t <= upto) {
            if out.len() == limit {
                return (out, true);
            }
            out.push(t);
            at = t;
        }
        (out, false)
    }
}

/// croner's reason, in the project's words (lowercase, no final stop).
fn why(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    let text = match e {
        E::EmptyPattern => "it is empty".to_string(),
        E::InvalidDate => "it names a date that does not exist".to_string(),
        E::InvalidTime => "it names a time that does not exist".to_string(),
        E::TimeSearchLimitExceeded => "no date matches it".to_string(),
        E::InvalidPattern(m) | E::IllegalCharacters(m) | E::ComponentError(m) => m.clone(),
    };
    let text = text.replace("CronPattern", "the expression");
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
