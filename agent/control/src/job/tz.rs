//! IANA time zones from the copy of the time zone database built into the
//! binary (jiff's bundled tzdb), never the node's `/usr/share/zoneinfo`:
//! every master of one image version answers the same, images need no
//! tzdata, and looking a zone up reads no file. A name that is not in it
//! is refused with the closest known name.

use std::sync::LazyLock;

use jiff::tz::{TimeZone, TimeZoneDatabase};

/// The bundled database, read once.
static DB: LazyLock<TimeZoneDatabase> = LazyLock::new(TimeZoneDatabase::bundled);

/// Why a zone name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("the time zone is empty: give an IANA name such as `UTC` or `Europe/Paris`")]
    Empty,
    #[error("`{name}` is not a known time zone{}", hint(.near))]
    Unknown { name: String, near: Option<String> },
}

fn hint(near: &Option<String>) -> String {
    match near {
        Some(n) => format!("; did you mean `{n}`?"),
        None => "; give an IANA name such as `UTC` or `Europe/Paris`".to_string(),
    }
}

/// The zone named `name` (case aside: `europe/paris` is `Europe/Paris`).
pub fn zone(name: &str) -> Result<TimeZone, ZoneError> {
    if name.trim().is_empty() {
        return Err(ZoneError::Empty);
    }
    DB.get(name).map_err(|_| ZoneError::Unknown {
        name: name.to_string(),
        near: DB
            .available()
            .map(|n| n.as_str().to_string())
            .find(|n| crate::app::doc::close(&n.to_ascii_lowercase(), &name.to_ascii_lowercase())),
    })
}

/// Unix second `t` as a wall time in `tz`, with the zone's abbreviation
/// (`2026-12-03 02:30 CET`).
pub fn local(tz: &TimeZone, t: u64) -> String {
    match i64::try_from(t)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
    {
        Some(ts) => ts
            .to_zoned(tz.clone())
            .strftime("%Y-%m-%d %H:%M %Z")
            .to_string(),
        None => t.to_string(),
    }
}

/// Unix second `t` in UTC, RFC 3339 (`2026-12-03T01:30:00Z`).
pub fn utc(t: u64) -> String {
    i64::try_from(t)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| t.to_string(), |ts| ts.to_string())
}

/// The name to show and store for `tz`: its IANA name.
pub fn name(tz: &TimeZone) -> &str {
    tz.iana_name().unwrap_or("UTC")
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    fn check(name: &str, expected: Expect) {
        let got = match super::zone(name) {
            Ok(tz) => format!("ok {}", super::name(&tz)),
            Err(e) => format!("error: {e}"),
        };
        expected.assert_eq(&got);
    }

    #[test]
    fn zones_are_found_by_iana_name_and_a_typo_gets_a_suggestion() {
        check("UTC", expect!["ok UTC"]);
        check("America/Chicago", expect!["ok America/Chicago"]);
        check("europe/paris", expect!["ok Europe/Paris"]);
        check("Australia/Lord_Howe", expect!["ok Australia/Lord_Howe"]);
        check(
            "America/Chicgo",
            expect![
                "error: `America/Chicgo` is not a known time zone; did you mean `America/Chicago`?"
            ],
        );
        check(
            "Mars/Olympus_Mons",
            expect![
                "error: `Mars/Olympus_Mons` is not a known time zone; give an IANA name such as `UTC` or `Europe/Paris`"
            ],
        );
        check(
            "+05:00",
            expect![
                "error: `+05:00` is not a known time zone; give an IANA name such as `UTC` or `Europe/Paris`"
            ],
        );
        check(
            "",
            expect![
                "error: the time zone is empty: give an IANA name such as `UTC` or `Europe/Paris`"
            ],
        );
    }
}
