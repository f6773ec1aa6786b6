//! The scheduling master's plan for one job's schedules: which scheduled
//! times start a run, which are skipped and why, and where each schedule
//! then stands. Pure: the job, its schedules' states and its runs come in,
//! with `now`; the actions come out, and an already-settled job plans
//! nothing.
//!
//! At most one run per scheduled time, whichever master plans and however
//! often: a run's id is its schedule and time ([`RunId::scheduled`]), so
//! every master names it alike and the store creates it only where no
//! record has that key, in the same transaction that moves the schedule's
//! cursor past it; every time at or before the cursor is never planned
//! again. A time missed while no master scheduled starts late if it is
//! still within the schedule's starting deadline, and is recorded as
//! skipped otherwise (at most the job's history of them; the rest are
//! counted).

use std::collections::BTreeMap;
use std::fmt;

use super::record::{EndReason, JobRecord, RunId, RunRecord, ScheduleState, Trigger};
use super::spec::{ConcurrencyPolicy, JobId, ScheduleSpec};
use crate::format::Format;

/// The most times walked for one schedule in one plan: a schedule missed
/// for longer (a minute's schedule down for ten weeks) handles the rest
/// in the next plans, from where this one stopped.
pub const MAX_WALK: usize = 100_000;

/// One change the plan asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create this run (queued): a scheduled time starts.
    Fire(RunRecord),
    /// Create this run (skipped): a scheduled time starts nothing.
    Skip(RunRecord),
    /// Store where a schedule stands.
    Advance {
        job: JobId,
        schedule: String,
        state: ScheduleState,
    },
    /// Delete the state of a schedule the job no longer has.
    Forget { job: JobId, schedule: String },
    /// Stop a going run.
    Stop {
        job: JobId,
        run: RunId,
        reason: EndReason,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Fire(r) => write!(f, "fire {} {}", r.job, r.id),
            Action::Skip(r) => write!(
                f,
                "skip {} {}: {}",
                r.job,
                r.id,
                r.reason.as_ref().unwrap_or(&EndReason::Unknown)
            ),
            Action::Advance {
                job,
                schedule,
                state,
            } => {
                write!(f, "advance {job}/{schedule} to {}", show(state.cursor))?;
                match state.next {
                    Some(n) => write!(f, ", next {}", show(n))?,
                    None => write!(f, ", no next time")?,
                }
                if state.enabled_since.is_none() {
                    write!(f, ", disabled")?;
                }
                if state.skipped_unrecorded > 0 {
                    write!(f, ", {} skipped unrecorded", state.skipped_unrecorded)?;
                }
                Ok(())
            }
            Action::Stop { job, run, reason } => write!(f, "stop {job} {run}: {reason}"),
            Action::Forget { job, schedule } => write!(f, "forget {job}/{schedule}"),
        }
    }
}

/// `2026-12-01T00:20:00Z`.
fn show(t: u64) -> String {
    super::tz::utc(t)
}

/// A plan: its actions, in order, and when to plan again at the latest
/// (the earliest next time of any schedule).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub wake_at: Option<u64>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.actions {
            writeln!(f, "{a}")?;
        }
        if let Some(w) = self.wake_at {
            writeln!(f, "wake at {}", show(w))?;
        }
        Ok(())
    }
}

/// What identifies the times a schedule names: a change starts it afresh.
pub fn fingerprint(s: &ScheduleSpec) -> String {
    let dialect = serde_json::to_value(s.dialect)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    format!("{dialect} {} {}", s.cron.trim(), s.timezone)
}

/// Plans the schedules of `job` at `now`, given where they stand
/// (`states`, by schedule id) and the job's runs. `history` is how many
/// finished runs the job keeps (its own, or the cluster's default).
pub fn plan_schedules(
    job: &JobRecord,
    states: &BTreeMap<String, ScheduleState>,
    runs: &[&RunRecord],
    history: u32,
    now: u64,
) -> Plan {
    let mut plan = Plan::default();
    if job.removing {
        return plan;
    }
    let id = &job.spec.id;
    // Runs going now, oldest first: FORBID names the first, REPLACE stops
    // each; runs started by this plan join them.
    let mut going: Vec<RunId> = runs
        .iter()
        .filter(|r| r.going())
        .map(|r| r.id.clone())
        .collect();
    going.sort();
    // The ones REPLACE may stop: queued or active, and not stopping yet.
    let stoppable: std::collections::BTreeSet<&RunId> = runs
        .iter()
        .filter(|r| {
            matches!(
                r.state,
                super::record::RunState::Queued | super::record::RunState::Active
            ) && r.stop.is_none()
        })
        .map(|r| &r.id)
        .collect();
    let exists: std::collections::BTreeSet<&RunId> = runs.iter().map(|r| &r.id).collect();
    // A schedule removed from the job: its state goes, so that one added
    // again under its id starts afresh.
    for name in states.keys() {
        if !job.spec.schedules.iter().any(|s| &s.id == name) {
            plan.actions.push(Action::Forget {
                job: id.clone(),
                schedule: name.clone(),
            });
        }
    }
    for s in &job.spec.schedules {
        let fp = fingerprint(s);
        let state = states.get(&s.id);
        let wake = |plan: &mut Plan, t: Option<u64>| {
            if let Some(t) = t {
                plan.wake_at = Some(plan.wake_at.map_or(t, |w| w.min(t)));
            }
        };
        if !s.enabled {
            if let Some(st) = state.filter(|st| st.enabled_since.is_some()) {
                plan.actions.push(Action::Advance {
                    job: id.clone(),
                    schedule: s.id.clone(),
                    state: ScheduleState {
                        enabled_since: None,
                        ..st.clone()
                    },
                });
            }
            continue;
        }
        // A schedule a newer master stored and this one cannot read is
        // left alone.
        let (Ok(cron), Ok(zone)) = (s.parse_cron(), s.zone()) else {
            continue;
        };
        if s.concurrency_policy == ConcurrencyPolicy::Unknown {
            continue;
        }
        let st = match state {
            Some(st) if st.enabled_since.is_some() && st.fingerprint == fp => st,
            _ => {
                // New, re-enabled or changed: from now on, no backfill
                // (and never back before a time already handled, should
                // this master's clock lag).
                let from = state.map_or(now, |st| st.cursor.max(now));
                let next = cron.next_after(&zone, from);
                plan.actions.push(Action::Advance {
                    job: id.clone(),
                    schedule: s.id.clone(),
                    state: ScheduleState {
                        format: Format::V1,
                        cursor: from,
                        next,
                        fingerprint: fp,
                        enabled_since: Some(now),
                        skipped_unrecorded: state.map_or(0, |st| st.skipped_unrecorded),
                    },
                });
                wake(&mut plan, next);
                continue;
            }
        };
        let Some(next) = st.next else { continue };
        if now < next {
            wake(&mut plan, Some(next));
            continue;
        }
        let (due, _) = cron.due(&zone, st.cursor, now, MAX_WALK);
        let Some(&last) = due.last() else {
            // `next` came from another copy of the zone database: look
            // again from now.
            let next = cron.next_after(&zone, now);
            plan.actions.push(Action::Advance {
                job: id.clone(),
                schedule: s.id.clone(),
                state: ScheduleState { next, ..st.clone() },
            });
            wake(&mut plan, next);
            continue;
        };
        // A time whose run exists (written by another master) is done.
        let due: Vec<u64> = due
            .into_iter()
            .filter(|t| !exists.contains(&RunId::scheduled(*t, &s.id)))
            .collect();
        let deadline = s.starting_deadline_seconds;
        let (missed, ready): (Vec<u64>, Vec<u64>) =
            due.iter().partition(|t| now.saturating_sub(**t) > deadline);
        let mut unrecorded = st.skipped_unrecorded;
        let keep = history.max(1) as usize;
        let recorded = missed.len().min(keep);
        unrecorded += (missed.len() - recorded) as u64;
        for &t in &missed[missed.len() - recorded..] {
            plan.actions.push(Action::Skip(RunRecord::skipped(
                id,
                &s.id,
                t,
                EndReason::Missed,
                job.version,
                now,
            )));
        }
        // The times that start: each (ALLOW), or the newest.
        let starting: Vec<u64> = match s.concurrency_policy {
            ConcurrencyPolicy::Allow => ready.clone(),
            _ => ready.last().copied().into_iter().collect(),
        };
        if let Some(&newest) = starting.last() {
            let by = RunId::scheduled(newest, &s.id);
            for &t in ready.iter().filter(|t| !starting.contains(t)) {
                plan.actions.push(Action::Skip(RunRecord::skipped(
                    id,
                    &s.id,
                    t,
                    EndReason::Superseded { by: by.clone() },
                    job.version,
                    now,
                )));
            }
        }
        for t in starting {
            let run = RunId::scheduled(t, &s.id);
            match s.concurrency_policy {
                ConcurrencyPolicy::Forbid if !going.is_empty() => {
                    plan.actions.push(Action::Skip(RunRecord::skipped(
                        id,
                        &s.id,
                        t,
                        EndReason::Forbidden {
                            active: going[0].clone(),
                        },
                        job.version,
                        now,
                    )));
                    continue;
                }
                ConcurrencyPolicy::Replace => {
                    for old in going.drain(..) {
                        if stoppable.contains(&old) {
                            plan.actions.push(Action::Stop {
                                job: id.clone(),
                                run: old,
                                reason: EndReason::Replaced { by: run.clone() },
                            });
                        }
                    }
                }
                // Checked when the job was stored; a newer master's
                // policy fires nothing here.
                ConcurrencyPolicy::Unknown => continue,
                _ => {}
            }
            plan.actions.push(Action::Fire(RunRecord::queued(
                id,
                run.clone(),
                Trigger::Schedule {
                    schedule: s.id.clone(),
                    at: t,
                },
                job.version,
                now,
            )));
            going.push(run);
        }
        let next = cron.next_after(&zone, last);
        plan.actions.push(Action::Advance {
            job: id.clone(),
            schedule: s.id.clone(),
            state: ScheduleState {
                format: Format::V1,
                cursor: last,
                next,
                fingerprint: fp,
                enabled_since: st.enabled_since,
                skipped_unrecorded: unrecorded,
            },
        });
        wake(&mut plan, next);
    }
    plan
}

#[cfg(test)]
mod tests;
