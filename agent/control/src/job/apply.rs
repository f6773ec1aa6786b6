//! The scheduling master's round of jobs, between the stored records and
//! the pure plans: it builds what [`super::plan::plan_schedules`] and
//! [`super::runs::plan_runs`] read from the records at one revision
//! (jobs, schedule states, runs, their attempts' tasks and what the nodes
//! reported of them), places runs through the placer the apps' plan
//! counted with, and turns both plans into the writes that carry them
//! out: the runs a round creates (which the store writes only where no
//! record has their key), the runs and schedule states it changes, the
//! attempts' task records, and what it deletes.

use std::collections::{BTreeMap, BTreeSet};

use super::plan::{Action, plan_schedules};
use super::record::{Attempt, JobRecord, RunId, RunOf, RunRecord, RunState, ScheduleState};
use super::runs::{RunAction, TaskView, plan_runs};
use super::spec::JobId;
use crate::app::{AppId, AppSpec};
use crate::format::Format;
use crate::model::{TaskRecord, TaskReport};
use crate::schedule::{Placer, Resources, Strategy};
use crate::task::spec::Size;
use crate::task::state::TaskState;
use crate::task::{RestartPolicy, TaskSpec};

/// How many ended runs a job keeps when neither it nor the cluster says.
pub const DEFAULT_HISTORY: u32 = 20;

/// The records a round reads, at one revision.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub jobs: &'a [JobRecord],
    /// Where each schedule stands, by job, then by schedule.
    pub states: &'a BTreeMap<JobId, BTreeMap<String, ScheduleState>>,
    pub runs: &'a [RunRecord],
    pub tasks: &'a BTreeMap<String, TaskRecord>,
    pub reports: &'a BTreeMap<String, TaskReport>,
    /// The nodes that are Ready.
    pub ready: &'a BTreeSet<String>,
    /// The ended runs a job keeps unless it says otherwise.
    pub history: u32,
}

/// The writes that carry out a round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Runs to create: each only where no record has its key, so that one
    /// scheduled time makes at most one run whichever master plans it.
    pub create_runs: Vec<RunRecord>,
    pub put_runs: Vec<RunRecord>,
    pub delete_runs: Vec<(JobId, RunId)>,
    pub put_states: Vec<(JobId, String, ScheduleState)>,
    pub delete_states: Vec<(JobId, String)>,
    pub put_tasks: Vec<(String, TaskRecord)>,
    /// Attempts' tasks to delete (with their nodes' reports).
    pub delete_tasks: Vec<String>,
    /// Jobs to delete, with every schedule state and run they have left.
    pub delete_jobs: Vec<JobId>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// A round: its writes, what it did (a line per action, for the log) and
/// when to plan again at the latest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Round {
    pub changes: Changes,
    pub lines: Vec<String>,
    pub wake_at: Option<u64>,
}

/// One run as the round changes it.
struct Working {
    record: RunRecord,
    new: bool,
    changed: bool,
}

/// Plans every job at `now`, placing runs with `placer` (the one the apps'
/// plan of the same snapshot counted with, so that both never
/// oversubscribe a node).
pub fn round(input: &Input<'_>, now: u64, placer: &mut Placer) -> Round {
    let mut out = Round::default();
    let mut by_job: BTreeMap<&JobId, Vec<&RunRecord>> = BTreeMap::new();
    for r in input.runs {
        by_job.entry(&r.job).or_default().push(r);
    }
    let none = BTreeMap::new();
    for job in input.jobs {
        let id = &job.spec.id;
        let history = job.spec.history.unwrap_or(input.history);
        let mut runs: BTreeMap<RunId, Working> = by_job
            .remove(id)
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                (
                    r.id.clone(),
                    Working {
                        record: r.clone(),
                        new: false,
                        changed: false,
                    },
                )
            })
            .collect();
        observe_starts(&mut runs, input);
        let states = input.states.get(id).unwrap_or(&none);
        let refs: Vec<&RunRecord> = runs.values().map(|w| &w.record).collect();
        let sched = plan_schedules(job, states, &refs, history, now);
        wake(&mut out, sched.wake_at);
        for a in sched.actions {
            out.lines.push(a.to_string());
            match a {
                Action::Fire(r) | Action::Skip(r) => {
                    runs.insert(
                        r.id.clone(),
                        Working {
                            record: r,
                            new: true,
                            changed: true,
                        },
                    );
                }
                Action::Advance {
                    job,
                    schedule,
                    state,
                } => out.changes.put_states.push((job, schedule, state)),
                Action::Forget { job, schedule } => out.changes.delete_states.push((job, schedule)),
                Action::Stop { run, reason, .. } => {
                    if let Some(w) = runs.get_mut(&run)
                        && w.record.stop.is_none()
                    {
                        w.record.stop = Some(super::record::StopRequest { reason, at: now });
                        w.changed = true;
                    }
                }
            }
        }
        let views = task_views(&runs, input);
        let refs: Vec<&RunRecord> = runs.values().map(|w| &w.record).collect();
        let demand = demand(job);
        let mut place = |_: &JobRecord, _: &RunRecord| {
            placer
                .place(&demand, Strategy::BinPack)
                .map(|p| p.node)
                .map_err(|u| format!("no node can take the run: {}", u.why()))
        };
        let plan = plan_runs(job, &refs, &views, history, now, &mut place);
        wake(&mut out, plan.wake_at);
        for a in plan.actions {
            out.lines.push(a.to_string());
            apply(a, job, &mut runs, input, now, &mut out.changes);
        }
        for (_, w) in runs {
            match (w.new, w.changed) {
                (true, _) => out.changes.create_runs.push(w.record),
                (false, true) => out.changes.put_runs.push(w.record),
                _ => {}
            }
        }
    }
    // Runs of jobs that are gone (a job deleted by an older master that
    // left them): deleted with their tasks.
    for (job, runs) in by_job {
        for r in runs {
            out.lines
                .push(format!("trim {job} {}: its job is gone", r.id));
            out.changes.delete_runs.push((job.clone(), r.id.clone()));
            for a in &r.attempts {
                out.changes.delete_tasks.push(a.task.clone());
            }
        }
    }
    out
}

fn wake(out: &mut Round, at: Option<u64>) {
    if let Some(at) = at {
        out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// Notes when an attempt was first seen running (the report's time), so
/// that its start is kept once its task record goes.
fn observe_starts(runs: &mut BTreeMap<RunId, Working>, input: &Input<'_>) {
    for w in runs.values_mut() {
        if w.record.state.ended() {
            continue;
        }
        let Some(a) = w.record.attempts.last_mut() else {
            continue;
        };
        if a.started_at.is_some() || a.finished_at.is_some() {
            continue;
        }
        if let Some(r) = input.reports.get(&a.task)
            && r.state == TaskState::Running
        {
            a.started_at = Some(r.at);
            w.changed = true;
        }
    }
}

/// What the nodes reported of the runs' last attempts.
fn task_views(runs: &BTreeMap<RunId, Working>, input: &Input<'_>) -> BTreeMap<String, TaskView> {
    let mut out = BTreeMap::new();
    for w in runs.values() {
        let Some(a) = w.record.attempts.last() else {
            continue;
        };
        let Some(t) = input.tasks.get(&a.task) else {
            continue;
        };
        let report = input.reports.get(&a.task);
        let state = report.map_or(TaskState::Pending, |r| r.state);
        let ended = matches!(
            state,
            TaskState::Exited | TaskState::Stopped | TaskState::Lost
        );
        out.insert(
            a.task.clone(),
            TaskView {
                state,
                exit_code: report.and_then(|r| r.exit_code),
                started_at: report
                    .filter(|r| r.state == TaskState::Running)
                    .map(|r| r.at),
                finished_at: report.filter(|_| ended).map(|r| r.at),
                node_ready: input.ready.contains(&t.node),
                stopping_since: t.stopping_since,
            },
        );
    }
    out
}

/// Carries out one action of the runs' plan.
fn apply(
    a: RunAction,
    job: &JobRecord,
    runs: &mut BTreeMap<RunId, Working>,
    input: &Input<'_>,
    now: u64,
    changes: &mut Changes,
) {
    let mut change = |run: &RunId, f: &mut dyn FnMut(&mut RunRecord)| {
        if let Some(w) = runs.get_mut(run) {
            f(&mut w.record);
            w.changed = true;
        }
    };
    match a {
        RunAction::Place { run, attempt, .. } => {
            let mut spec = None;
            change(&run, &mut |r| {
                spec = Some(task_spec(job, r, &attempt));
                r.attempts.push(attempt.clone());
                r.state = RunState::Active;
                r.waiting = None;
                r.next_attempt_at = None;
            });
            if let Some(spec) = spec {
                changes.put_tasks.push((
                    attempt.task.clone(),
                    TaskRecord {
                        format: Format::V1,
                        node: attempt.node.clone(),
                        spec,
                        created_at: now,
                        instance_of: None,
                        host_ports: Vec::new(),
                        stopping: false,
                        stopping_since: None,
                        run_of: Some(RunOf {
                            job: job.spec.id.clone(),
                            run,
                            attempt: attempt.n,
                            disk_mib: Resources::of(&demand(job)).disk_mib,
                        }),
                    },
                ));
            }
        }
        RunAction::Wait { run, why, .. } => change(&run, &mut |r| r.waiting = Some(why.clone())),
        RunAction::AskStop { run, stop, .. } => change(&run, &mut |r| r.stop = Some(stop.clone())),
        RunAction::StopTask { task, .. } => {
            if let Some(t) = input.tasks.get(&task)
                && !t.stopping
            {
                let mut t = t.clone();
                t.stopping = true;
                t.stopping_since = Some(now);
                changes.put_tasks.push((task, t));
            }
        }
        RunAction::Retry { run, ended, at, .. } => change(&run, &mut |r| {
            end_attempt(r, &ended);
            r.state = RunState::Queued;
            r.next_attempt_at = Some(at);
        }),
        RunAction::Finish {
            run,
            state,
            exit_code,
            reason,
            ended,
            ..
        } => change(&run, &mut |r| {
            if let Some(e) = &ended {
                end_attempt(r, e);
            }
            r.state = state;
            r.exit_code = exit_code;
            r.reason = Some(reason.clone());
            r.finished_at = Some(now);
            r.waiting = None;
            r.next_attempt_at = None;
        }),
        RunAction::Trim { job, run } => {
            if let Some(w) = runs.remove(&run) {
                for a in &w.record.attempts {
                    changes.delete_tasks.push(a.task.clone());
                }
            }
            changes.delete_runs.push((job, run));
        }
        RunAction::DeleteJob { job } => {
            for (_, w) in std::mem::take(runs) {
                for a in &w.record.attempts {
                    changes.delete_tasks.push(a.task.clone());
                }
            }
            changes.delete_jobs.push(job);
        }
    }
}

/// Puts `ended` in place of the run's attempt of the same number.
fn end_attempt(r: &mut RunRecord, ended: &Attempt) {
    match r.attempts.iter_mut().find(|a| a.n == ended.n) {
        Some(a) => *a = ended.clone(),
        None => r.attempts.push(ended.clone()),
    }
}

/// What a run of `job` asks of a node, in the shape the placer reads.
pub fn demand(job: &JobRecord) -> AppSpec {
    let run = &job.spec.run;
    let mut app = AppSpec::new(AppId::for_job(&job.spec.id), &run.image);
    app.cpus = run.cpus;
    app.mem = run.mem;
    app.disk = run.disk;
    app.constraints = run.constraints.clone();
    app.accepted_roles = run.accepted_roles.clone();
    app
}

/// The task of attempt `attempt` of run `run` of `job`: the job's image
/// and command (`cmd` through `/bin/sh -c`), never restarted by its node
/// (the scheduling master decides a next attempt, maybe elsewhere), and
/// the run's names in its environment.
pub fn task_spec(job: &JobRecord, run: &RunRecord, attempt: &Attempt) -> TaskSpec {
    let spec = &job.spec.run;
    let mut env = spec.env.clone();
    env.insert("STRATA_JOB_ID".into(), job.spec.id.to_string());
    env.insert("STRATA_JOB_RUN_ID".into(), run.id.to_string());
    env.insert("STRATA_JOB_ATTEMPT".into(), attempt.n.to_string());
    if let super::record::Trigger::Schedule { at, .. } = run.trigger {
        env.insert("STRATA_JOB_SCHEDULED_AT".into(), super::tz::utc(at));
    }
    TaskSpec {
        id: attempt.task.clone(),
        image: spec.image.clone(),
        command: spec
            .cmd
            .as_ref()
            .map(|c| vec!["/bin/sh".to_string(), "-c".to_string(), c.clone()])
            .unwrap_or_default(),
        env,
        cwd: None,
        user: spec.user.clone(),
        cpus: Some(spec.cpus),
        mem: Some(Size((spec.mem * 1024.0 * 1024.0).ceil() as u64)),
        pids: None,
        read_only: false,
        restart: RestartPolicy::Never,
        stop_grace_secs: spec.kill_grace_seconds,
        netns: None,
        app: None,
        ports: Vec::new(),
        cap_add: Vec::new(),
        user_ns: false,
        args: spec.args.clone(),
        force_pull: spec.force_pull,
        health_checks: Vec::new(),
        port_names: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests;
