//! The schedules' plan over given states, and a harness that plays
//! scheduling masters over a day: each round plans from what is stored and
//! commits the plan or loses it (a master that died before its commit),
//! with a gap where no master schedules at all.

use std::collections::BTreeMap;

use expect_test::{Expect, expect};

use super::*;
use crate::job::record::RunState;

/// Unix second of `2026-12-01T10:00:00Z`-style UTC text.
fn t(text: &str) -> u64 {
    let ts: jiff::Timestamp = text.parse().expect("an RFC 3339 time");
    u64::try_from(ts.as_second()).expect("after 1970")
}

/// A job read from Strata TOML (`[run]` given), at version 1.
fn job(schedules: &str) -> JobRecord {
    let text =
        format!("id = \"j\"\nhistory = 3\n[run]\nimage = \"busybox\"\ncmd = \"true\"\n{schedules}");
    let file = crate::job::read("j.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    JobRecord {
        format: Format::V1,
        spec: file.job,
        version: 1,
        created_at: 0,
        updated_at: 0,
        removing: false,
    }
}

fn state(cursor: u64, next: u64, job: &JobRecord) -> ScheduleState {
    ScheduleState {
        format: Format::V1,
        cursor,
        next: Some(next),
        fingerprint: fingerprint(&job.spec.schedules[0]),
        enabled_since: Some(0),
        skipped_unrecorded: 0,
    }
}

fn going(id: &str) -> RunRecord {
    let mut r = RunRecord::queued(
        &JobId::parse("j").expect("valid"),
        RunId(id.to_string()),
        Trigger::Manual { by: "op".into() },
        1,
        0,
    );
    r.state = RunState::Active;
    r
}

fn check(
    job: &JobRecord,
    state: Option<ScheduleState>,
    runs: &[RunRecord],
    now: u64,
    expected: Expect,
) {
    let states: BTreeMap<String, ScheduleState> = state
        .into_iter()
        .map(|s| (job.spec.schedules[0].id.clone(), s))
        .collect();
    let runs: Vec<&RunRecord> = runs.iter().collect();
    let plan = plan_schedules(job, &states, &runs, 3, now);
    expected.assert_eq(&plan.to_string());
}

const MINUTELY: &str = "[[schedules]]\nid = \"s\"\ncron = \"* * * * *\"\nconcurrency_policy = \"allow\"\nstarting_deadline_seconds = 90\n";

#[test]
fn a_new_schedule_starts_from_now_without_backfill() {
    let j = job(MINUTELY);
    check(
        &j,
        None,
        &[],
        t("2026-12-01T10:00:30Z"),
        expect![[r#"
        advance j/s to 2026-12-01T10:00:30Z, next 2026-12-01T10:01:00Z
        wake at 2026-12-01T10:01:00Z
    "#]],
    );
}

#[test]
fn a_due_schedule_fires_one_run_keyed_by_its_time() {
    let j = job(MINUTELY);
    let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    check(
        &j,
        Some(st),
        &[],
        t("2026-12-01T10:01:02Z"),
        expect![[r#"
        fire j 20261201100100-s
        advance j/s to 2026-12-01T10:01:00Z, next 2026-12-01T10:02:00Z
        wake at 2026-12-01T10:02:00Z
    "#]],
    );
}

#[test]
fn a_settled_schedule_plans_nothing() {
    let j = job(MINUTELY);
    let st = state(t("2026-12-01T10:01:00Z"), t("2026-12-01T10:02:00Z"), &j);
    check(
        &j,
        Some(st),
        &[],
        t("2026-12-01T10:01:59Z"),
        expect![[r#"
        wake at 2026-12-01T10:02:00Z
    "#]],
    );
}

#[test]
fn missed_times_start_late_inside_the_deadline_and_are_skipped_past_it() {
    let j = job(MINUTELY);
    // Down from 10:00 to 10:05:10: 10:04 and 10:05 are within 90 s.
    let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    check(
        &j,
        Some(st),
        &[],
        t("2026-12-01T10:05:10Z"),
        expect![[r#"
        skip j 20261201100100-s: skipped: missed past its starting deadline
        skip j 20261201100200-s: skipped: missed past its starting deadline
        skip j 20261201100300-s: skipped: missed past its starting deadline
        fire j 20261201100400-s
        fire j 20261201100500-s
        advance j/s to 2026-12-01T10:05:00Z, next 2026-12-01T10:06:00Z
        wake at 2026-12-01T10:06:00Z
    "#]],
    );
}

#[test]
fn a_long_outage_records_at_most_history_skips() {
    let j = job(MINUTELY);
    let st = state(t("2026-12-01T00:00:00Z"), t("2026-12-01T00:01:00Z"), &j);
    check(
        &j,
        Some(st),
        &[],
        t("2026-12-01T10:00:30Z"),
        expect![[r#"
        skip j 20261201095600-s: skipped: missed past its starting deadline
        skip j 20261201095700-s: skipped: missed past its starting deadline
        skip j 20261201095800-s: skipped: missed past its starting deadline
        fire j 20261201095900-s
        fire j 20261201100000-s
        advance j/s to 2026-12-01T10:00:00Z, next 2026-12-01T10:01:00Z, 595 skipped unrecorded
        wake at 2026-12-01T10:01:00Z
    "#]],
    );
}

#[test]
fn forbid_and_replace_start_only_the_newest_of_several_due_times() {
    for (policy, expected) in [
        (
            "forbid",
            expect![[r#"
                skip j 20261201100100-s: skipped: superseded by run 20261201100200-s
                fire j 20261201100200-s
                advance j/s to 2026-12-01T10:02:00Z, next 2026-12-01T10:03:00Z
                wake at 2026-12-01T10:03:00Z
            "#]],
        ),
        (
            "replace",
            expect![[r#"
                skip j 20261201100100-s: skipped: superseded by run 20261201100200-s
                fire j 20261201100200-s
                advance j/s to 2026-12-01T10:02:00Z, next 2026-12-01T10:03:00Z
                wake at 2026-12-01T10:03:00Z
            "#]],
        ),
    ] {
        let j = job(&MINUTELY.replace("allow", policy));
        let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
        check(&j, Some(st), &[], t("2026-12-01T10:02:10Z"), expected);
    }
}

#[test]
fn a_time_another_master_handled_is_not_fired_again() {
    let j = job(MINUTELY);
    // Its run exists, and this master's cursor lags behind it.
    let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    let mut done = going("20261201100100-s");
    done.state = RunState::Succeeded;
    check(
        &j,
        Some(st),
        &[done],
        t("2026-12-01T10:01:30Z"),
        expect![[r#"
        advance j/s to 2026-12-01T10:01:00Z, next 2026-12-01T10:02:00Z
        wake at 2026-12-01T10:02:00Z
    "#]],
    );
}

#[test]
fn a_removed_schedule_is_forgotten_and_added_again_starts_afresh() {
    let j = job(MINUTELY);
    let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    let states = BTreeMap::from([("old".to_string(), st)]);
    let plan = plan_schedules(&j, &states, &[], 3, t("2026-12-01T10:05:30Z"));
    expect![[r#"
        forget j/old
        advance j/s to 2026-12-01T10:05:30Z, next 2026-12-01T10:06:00Z
        wake at 2026-12-01T10:06:00Z
    "#]]
    .assert_eq(&plan.to_string());
}

#[test]
fn replace_leaves_a_run_already_stopping_or_from_a_newer_master() {
    let j = job(&MINUTELY.replace("allow", "replace"));
    let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    let mut stopping = going("20261201095900-s");
    stopping.stop = Some(crate::job::record::StopRequest {
        reason: EndReason::Killed { by: "op".into() },
        at: 1,
    });
    let mut newer = going("20261201100000-s");
    newer.state = RunState::Unknown;
    check(
        &j,
        Some(st),
        &[stopping, newer],
        t("2026-12-01T10:01:01Z"),
        expect![[r#"
            fire j 20261201100100-s
            advance j/s to 2026-12-01T10:01:00Z, next 2026-12-01T10:02:00Z
            wake at 2026-12-01T10:02:00Z
        "#]],
    );
}

#[test]
fn the_starting_deadline_is_inclusive() {
    let j = job(MINUTELY);
    // 10:00 is exactly 90 s old at 10:01:30: it still starts.
    let st = state(t("2026-12-01T09:59:00Z"), t("2026-12-01T10:00:00Z"), &j);
    check(
        &j,
        Some(st),
        &[],
        t("2026-12-01T10:01:30Z"),
        expect![[r#"
        fire j 20261201100000-s
        fire j 20261201100100-s
        advance j/s to 2026-12-01T10:01:00Z, next 2026-12-01T10:02:00Z
        wake at 2026-12-01T10:02:00Z
    "#]],
    );
}

#[test]
fn forbid_skips_while_a_run_is_going() {
    let j = job(&MINUTELY.replace("allow", "forbid"));
    let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    check(
        &j,
        Some(st),
        &[going("20261201100000-s")],
        t("2026-12-01T10:01:01Z"),
        expect![[r#"
            skip j 20261201100100-s: skipped: run 20261201100000-s was still going (FORBID)
            advance j/s to 2026-12-01T10:01:00Z, next 2026-12-01T10:02:00Z
            wake at 2026-12-01T10:02:00Z
        "#]],
    );
}

#[test]
fn replace_stops_the_going_run_and_fires() {
    let j = job(&MINUTELY.replace("allow", "replace"));
    let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    check(
        &j,
        Some(st),
        &[going("20261201100000-s")],
        t("2026-12-01T10:01:01Z"),
        expect![[r#"
            stop j 20261201100000-s: replaced by run 20261201100100-s
            fire j 20261201100100-s
            advance j/s to 2026-12-01T10:01:00Z, next 2026-12-01T10:02:00Z
            wake at 2026-12-01T10:02:00Z
        "#]],
    );
}

#[test]
fn allow_fires_beside_a_going_run() {
    let j = job(MINUTELY);
    let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    check(
        &j,
        Some(st),
        &[going("20261201100000-s")],
        t("2026-12-01T10:01:01Z"),
        expect![[r#"
            fire j 20261201100100-s
            advance j/s to 2026-12-01T10:01:00Z, next 2026-12-01T10:02:00Z
            wake at 2026-12-01T10:02:00Z
        "#]],
    );
}

#[test]
fn disabling_stops_and_reenabling_does_not_backfill() {
    let mut j = job(MINUTELY);
    j.spec.schedules[0].enabled = false;
    let st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    check(
        &j,
        Some(st.clone()),
        &[],
        t("2026-12-01T10:03:00Z"),
        expect![[r#"
        advance j/s to 2026-12-01T10:00:00Z, next 2026-12-01T10:01:00Z, disabled
    "#]],
    );
    j.spec.schedules[0].enabled = true;
    let disabled = ScheduleState {
        enabled_since: None,
        ..st
    };
    check(
        &j,
        Some(disabled),
        &[],
        t("2026-12-01T11:00:30Z"),
        expect![[r#"
        advance j/s to 2026-12-01T11:00:30Z, next 2026-12-01T11:01:00Z
        wake at 2026-12-01T11:01:00Z
    "#]],
    );
}

#[test]
fn a_changed_cron_starts_afresh() {
    let j = job(MINUTELY);
    let mut st = state(t("2026-12-01T10:00:00Z"), t("2026-12-01T10:01:00Z"), &j);
    st.fingerprint = "strata */5 * * * * UTC".into();
    check(
        &j,
        Some(st),
        &[],
        t("2026-12-01T10:07:00Z"),
        expect![[r#"
        advance j/s to 2026-12-01T10:07:00Z, next 2026-12-01T10:08:00Z
        wake at 2026-12-01T10:08:00Z
    "#]],
    );
}

/// What the store holds: the schedules' states and the runs by id.
#[derive(Default)]
struct Store {
    states: BTreeMap<String, ScheduleState>,
    runs: BTreeMap<RunId, RunRecord>,
    /// Runs created twice (a key created where one existed: never).
    twice: Vec<RunId>,
    /// Runs stopped by a newer one (REPLACE).
    stopped: usize,
}

impl Store {
    /// Commits a plan as one transaction: each create only where no
    /// record has its key.
    fn commit(&mut self, plan: &Plan) {
        for a in &plan.actions {
            match a {
                Action::Fire(r) | Action::Skip(r) => {
                    if self.runs.contains_key(&r.id) {
                        self.twice.push(r.id.clone());
                    } else {
                        self.runs.insert(r.id.clone(), r.clone());
                    }
                }
                Action::Advance {
                    schedule, state, ..
                } => {
                    self.states.insert(schedule.clone(), state.clone());
                }
                Action::Forget { schedule, .. } => {
                    self.states.remove(schedule);
                }
                Action::Stop { run, .. } => {
                    if let Some(r) = self.runs.get_mut(run) {
                        r.state = RunState::Failed;
                        self.stopped += 1;
                    }
                }
            }
        }
    }
}

#[test]
fn failover_at_every_commit_point_gives_at_most_one_run_per_time() {
    // A day over the end of daylight-saving time in Chicago, with a
    // fixed time in the repeated hour, an interval through it, and a
    // REPLACE schedule whose runs outlast its period.
    let j = job(
        "[[schedules]]\nid = \"half\"\ncron = \"*/30 * * * *\"\ntimezone = \"America/Chicago\"\nconcurrency_policy = \"allow\"\nstarting_deadline_seconds = 600\n\
         [[schedules]]\nid = \"fixed\"\ncron = \"30 1 * * *\"\ntimezone = \"America/Chicago\"\nconcurrency_policy = \"allow\"\nstarting_deadline_seconds = 600\n\
         [[schedules]]\nid = \"quarter\"\ncron = \"*/15 * * * *\"\ntimezone = \"America/Chicago\"\nconcurrency_policy = \"replace\"\nstarting_deadline_seconds = 600\n",
    );
    let start = t("2026-10-31T12:00:00Z");
    let end = t("2026-11-02T12:00:00Z");
    let mut store = Store::default();
    let mut now = start;
    let mut round = 0u64;
    let mut lost = 0;
    while now < end {
        // A run lasts 20 minutes: REPLACE meets runs still going.
        for r in store.runs.values_mut() {
            if r.state == RunState::Queued && now >= r.created_at + 20 * 60 {
                r.state = RunState::Succeeded;
            }
        }
        let runs: Vec<&RunRecord> = store.runs.values().collect();
        let plan = plan_schedules(&j, &store.states, &runs, 1000, now);
        // Every third plan is lost with its master (before its commit).
        if round % 3 == 2 {
            lost += 1;
        } else {
            store.commit(&plan);
        }
        round += 1;
        // Masters plan every 7 minutes, none for 25 minutes once a day.
        now += if round % 200 == 100 { 25 * 60 } else { 7 * 60 };
    }
    assert!(store.twice.is_empty(), "created twice: {:?}", store.twice);
    // Every time each schedule names after the first plan is handled once
    // (started or skipped).
    let mut named = 0;
    for s in &j.spec.schedules {
        let cron = s.parse_cron().expect("valid");
        let zone = s.zone().expect("valid");
        let first = store
            .runs
            .values()
            .filter_map(|r| match &r.trigger {
                Trigger::Schedule { schedule, at } if *schedule == s.id => Some(*at),
                _ => None,
            })
            .min()
            .expect("the schedule ran");
        let last_handled = store.states[&s.id].cursor;
        let (times, more) = cron.due(&zone, first - 1, last_handled, 10_000);
        assert!(!more);
        for at in times {
            named += 1;
            assert!(
                store.runs.contains_key(&RunId::scheduled(at, &s.id)),
                "{} at {at} was never handled",
                s.id
            );
        }
    }
    let started = store
        .runs
        .values()
        .filter(|r| r.state != RunState::Skipped)
        .count();
    let skipped = store.runs.len() - started;
    let replaced = store.stopped;
    expect!["407 plans, 135 lost; 288 times named, 244 started (119 replaced), 44 skipped"].assert_eq(&format!(
        "{round} plans, {lost} lost; {named} times named, {started} started ({replaced} replaced), {skipped} skipped"
    ));
}
