//! Expressions read and walked: each case prints the times an expression
//! names after a start, in its zone and in UTC, or why it was refused.

use expect_test::{Expect, expect};
use jiff::civil::DateTime;

use super::*;
use crate::job::tz;

/// The unix second of local time `at` (`2027-03-14T01:00`) in `zone`
/// (an earlier pass of an overlap).
fn at(zone: &TimeZone, at: &str) -> u64 {
    let civil: DateTime = at.parse().expect("a civil date-time");
    let zoned = civil.to_zoned(zone.clone()).expect("a time in the zone");
    u64::try_from(zoned.timestamp().as_second()).expect("after 1970")
}

fn show(zone: &TimeZone, t: u64) -> String {
    let ts = Timestamp::from_second(i64::try_from(t).expect("in range")).expect("in range");
    let local = ts.to_zoned(zone.clone());
    format!(
        "{} {} = {}",
        local.strftime("%Y-%m-%d %H:%M %a"),
        local.strftime("%Z"),
        ts.strftime("%H:%MZ")
    )
}

/// The first `n` times of `expr` in `dialect` and zone `zone` after local
/// time `from`, one a line.
fn check(expr: &str, dialect: Dialect, zone: &str, from: &str, n: usize, expected: Expect) {
    let zone = tz::zone(zone).expect("a known zone");
    let got = match Cron::parse(expr, dialect) {
        Err(e) => format!("error: {e}"),
        Ok(cron) => {
            let mut t = at(&zone, from);
            let mut lines = Vec::new();
            for _ in 0..n {
                match cron.next_after(&zone, t) {
                    Some(next) => {
                        lines.push(show(&zone, next));
                        t = next;
                    }
                    None => {
                        lines.push("(no more)".to_string());
                        break;
                    }
                }
            }
            lines.join("\n")
        }
    };
    expected.assert_eq(&got);
}

use Dialect::{Metronome, Strata};

#[test]
fn five_fields_fire_each_minute_in_utc() {
    check(
        "* * * * *",
        Strata,
        "UTC",
        "2026-12-31T23:58",
        3,
        expect![[r#"
        2026-12-31 23:59 Thu UTC = 23:59Z
        2027-01-01 00:00 Fri UTC = 00:00Z
        2027-01-01 00:01 Fri UTC = 00:01Z"#]],
    );
    check(
        "*/20 3 * * *",
        Strata,
        "UTC",
        "2026-12-01T00:00",
        4,
        expect![[r#"
        2026-12-01 03:00 Tue UTC = 03:00Z
        2026-12-01 03:20 Tue UTC = 03:20Z
        2026-12-01 03:40 Tue UTC = 03:40Z
        2026-12-02 03:00 Wed UTC = 03:00Z"#]],
    );
    check(
        "@daily",
        Strata,
        "UTC",
        "2026-12-01T12:00",
        2,
        expect![[r#"
        2026-12-02 00:00 Wed UTC = 00:00Z
        2026-12-03 00:00 Thu UTC = 00:00Z"#]],
    );
    check(
        "0 9 * * MON-FRI",
        Strata,
        "Europe/Paris",
        "2026-12-04T10:00",
        2,
        expect![[r#"
        2026-12-07 09:00 Mon CET = 08:00Z
        2026-12-08 09:00 Tue CET = 08:00Z"#]],
    );
    check(
        "0 0 L * *",
        Strata,
        "UTC",
        "2027-02-01T00:00",
        2,
        expect![[r#"
        2027-02-28 00:00 Sun UTC = 00:00Z
        2027-03-31 00:00 Wed UTC = 00:00Z"#]],
    );
}

#[test]
fn metronome_days_are_and_vixie_days_are_or() {
    // Friday the 13th for Metronome; every 13th and every Friday for cron.
    check(
        "0 0 13 * FRI",
        Metronome,
        "UTC",
        "2026-01-01T00:00",
        2,
        expect![[r#"
        2026-02-13 00:00 Fri UTC = 00:00Z
        2026-03-13 00:00 Fri UTC = 00:00Z"#]],
    );
    check(
        "0 0 13 * FRI",
        Strata,
        "UTC",
        "2026-11-01T00:00",
        3,
        expect![[r#"
        2026-11-06 00:00 Fri UTC = 00:00Z
        2026-11-13 00:00 Fri UTC = 00:00Z
        2026-11-20 00:00 Fri UTC = 00:00Z"#]],
    );
    // And Metronome's `0/15`.
    check(
        "0/15 1 * * *",
        Metronome,
        "UTC",
        "2026-12-01T00:00",
        2,
        expect![[r#"
        2026-12-01 01:00 Tue UTC = 01:00Z
        2026-12-01 01:15 Tue UTC = 01:15Z"#]],
    );
    check(
        "0/15 1 * * *",
        Strata,
        "UTC",
        "2026-12-01T00:00",
        2,
        expect![[
            r#"error: `0/15 1 * * *` is not a valid cron expression: invalid step syntax: single number steps like "0/15" are not allowed. Use "*/15" for wildcard steps or "X-Y/15" for range steps"#
        ]],
    );
}

#[test]
fn metronome_year_field_reads() {
    check(
        "0 12 1 1 * 2028",
        Metronome,
        "UTC",
        "2026-12-01T00:00",
        2,
        expect![[r#"
        2028-01-01 12:00 Sat UTC = 12:00Z
        (no more)"#]],
    );
    check(
        "0 12 1 1 * 2028",
        Strata,
        "UTC",
        "2026-12-01T00:00",
        1,
        expect![
            "error: `0 12 1 1 * 2028` has 6 fields: a cron expression has five (minute hour day-of-month month day-of-week); seconds are not supported"
        ],
    );
}

#[test]
fn bad_expressions_are_refused_with_their_reason() {
    let bad = |expr: &str, dialect: Dialect, expected: Expect| {
        let got = match Cron::parse(expr, dialect) {
            Ok(c) => format!("read: {}", c.expr()),
            Err(e) => e.to_string(),
        };
        expected.assert_eq(&got);
    };
    bad("", Strata, expect!["the cron expression is empty"]);
    bad(
        "@reboot",
        Strata,
        expect!["`@reboot` has no meaning for a cluster's schedule: use a time, as `0 3 * * *`"],
    );
    bad(
        "0 0 * * * *",
        Strata,
        expect![
            "`0 0 * * * *` has 6 fields: a cron expression has five (minute hour day-of-month month day-of-week); seconds are not supported"
        ],
    );
    bad(
        "0 0 0 * * * *",
        Metronome,
        expect![
            "`0 0 0 * * * *` has 7 fields: a cron expression has five (minute hour day-of-month month day-of-week), and Metronome's may add the year"
        ],
    );
    bad(
        "0 0 *",
        Strata,
        expect![
            "`0 0 *` has 3 fields: a cron expression has five (minute hour day-of-month month day-of-week)"
        ],
    );
    bad(
        "61 * * * *",
        Strata,
        expect!["`61 * * * *` is not a valid cron expression: number out of bounds"],
    );
    bad(
        "* * * * BLUE",
        Strata,
        expect![
            "`* * * * BLUE` is not a valid cron expression: the expression contains illegal character 'B' in part 'BLUE'"
        ],
    );
    bad(
        "0 0 30 2 *",
        Strata,
        expect!["`0 0 30 2 *` never fires (no date from 2000 on matches it)"],
    );
    // A year gone by reads: it fired once (`JobSpec::check_times`, which
    // `strata job validate` runs, refuses a schedule with no time left).
    bad("0 0 1 1 * 2001", Metronome, expect!["read: 0 0 1 1 * 2001"]);
    bad(
        "0 0 1 1 * 1999",
        Metronome,
        expect!["`0 0 1 1 * 1999` never fires (no date from 2000 on matches it)"],
    );
    bad(
        "R/2026-12-01T00:00:00Z/PT1H",
        Metronome,
        expect![
            "`R/2026-12-01T00:00:00Z/PT1H` is an ISO 8601 repeating interval (Chronos): Strata's schedules take a cron expression, as `0 * * * *` for every hour"
        ],
    );
}

#[test]
fn gap_fixed_time_runs_after_the_gap() {
    // America/Chicago skips 02:00-03:00 on 2027-03-14.
    check(
        "30 2 * * *",
        Strata,
        "America/Chicago",
        "2027-03-13T00:00",
        3,
        expect![[r#"
        2027-03-13 02:30 Sat CST = 08:30Z
        2027-03-14 03:00 Sun CDT = 08:00Z
        2027-03-15 02:30 Mon CDT = 07:30Z"#]],
    );
}

#[test]
fn gap_interval_loses_no_real_minute() {
    check(
        "*/30 * * * *",
        Strata,
        "America/Chicago",
        "2027-03-14T01:00",
        4,
        expect![[r#"
        2027-03-14 01:30 Sun CST = 07:30Z
        2027-03-14 03:00 Sun CDT = 08:00Z
        2027-03-14 03:30 Sun CDT = 08:30Z
        2027-03-14 04:00 Sun CDT = 09:00Z"#]],
    );
}

#[test]
fn overlap_fixed_time_runs_once_first_pass() {
    // America/Chicago repeats 01:00-02:00 on 2026-11-01.
    check(
        "30 1 * * *",
        Strata,
        "America/Chicago",
        "2026-10-31T12:00",
        3,
        expect![[r#"
        2026-11-01 01:30 Sun CDT = 06:30Z
        2026-11-02 01:30 Mon CST = 07:30Z
        2026-11-03 01:30 Tue CST = 07:30Z"#]],
    );
}

#[test]
fn overlap_interval_runs_in_both_passes() {
    check(
        "*/30 * * * *",
        Strata,
        "America/Chicago",
        "2026-11-01T00:15",
        6,
        expect![[r#"
        2026-11-01 00:30 Sun CDT = 05:30Z
        2026-11-01 01:00 Sun CDT = 06:00Z
        2026-11-01 01:30 Sun CDT = 06:30Z
        2026-11-01 01:00 Sun CST = 07:00Z
        2026-11-01 01:30 Sun CST = 07:30Z
        2026-11-01 02:00 Sun CST = 08:00Z"#]],
    );
}

#[test]
fn half_hour_shift_lord_howe() {
    // Lord Howe Island moves by 30 minutes: 02:00 becomes 02:30 on 2026-10-04.
    check(
        "*/15 2 * * *",
        Strata,
        "Australia/Lord_Howe",
        "2026-10-03T01:50",
        6,
        expect![[r#"
        2026-10-03 02:00 Sat +1030 = 15:30Z
        2026-10-03 02:15 Sat +1030 = 15:45Z
        2026-10-03 02:30 Sat +1030 = 16:00Z
        2026-10-03 02:45 Sat +1030 = 16:15Z
        2026-10-04 02:30 Sun +11 = 15:30Z
        2026-10-04 02:45 Sun +11 = 15:45Z"#]],
    );
}

#[test]
fn midnight_gap_daily_job() {
    // America/Santiago skips 00:00-01:00 on 2026-09-06.
    check(
        "0 0 * * *",
        Strata,
        "America/Santiago",
        "2026-09-04T12:00",
        3,
        expect![[r#"
        2026-09-05 00:00 Sat -04 = 04:00Z
        2026-09-06 01:00 Sun -03 = 04:00Z
        2026-09-07 00:00 Mon -03 = 03:00Z"#]],
    );
}

#[test]
fn due_lists_the_times_in_a_window_up_to_a_limit() {
    let cron = Cron::parse("*/10 * * * *", Strata).expect("valid");
    let utc = TimeZone::UTC;
    let from = at(&utc, "2026-12-01T00:00");
    let show_all = |(times, more): (Vec<u64>, bool)| {
        let t: Vec<String> = times.iter().map(|t| show(&utc, *t)).collect();
        format!("{} more={more}", t.join(", "))
    };
    expect!["2026-12-01 00:10 Tue UTC = 00:10Z, 2026-12-01 00:20 Tue UTC = 00:20Z, 2026-12-01 00:30 Tue UTC = 00:30Z, 2026-12-01 00:40 Tue UTC = 00:40Z, 2026-12-01 00:50 Tue UTC = 00:50Z, 2026-12-01 01:00 Tue UTC = 01:00Z more=false"].assert_eq(&show_all(cron.due(&utc, from, from + 3600, 10)));
    expect!["2026-12-01 00:10 Tue UTC = 00:10Z, 2026-12-01 00:20 Tue UTC = 00:20Z more=true"]
        .assert_eq(&show_all(cron.due(&utc, from, from + 3600, 2)));
    // The end is inclusive, the start is not.
    expect!["2026-12-01 00:10 Tue UTC = 00:10Z more=false"].assert_eq(&show_all(cron.due(
        &utc,
        from,
        from + 600,
        10,
    )));
}
