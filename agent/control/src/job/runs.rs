//! The scheduling master's plan for one job's runs: place a queued run
//! (or its next attempt), stop one asked to stop or past a deadline, end
//! a run whose attempt ended (or try again, by its restart policy), keep
//! only the job's history of ended runs, and remove a job once its runs
//! are over. Pure: the job, its runs and what the nodes reported of the
//! runs' tasks come in with `now`, and a `place` function that asks the
//! cluster's placer for a node (so that runs and app instances share one
//! count of what each node has free); the actions come out.

use std::collections::BTreeMap;
use std::fmt;

use super::record::{Attempt, EndReason, JobRecord, RunId, RunRecord, RunState, StopRequest};
use super::spec::{JobId, RestartPolicy};
use crate::task::state::TaskState;

/// How long a stop may take beyond the job's kill grace before the run
/// ends anyway (its node may be gone): the same as an app instance's.
pub const STOP_TIMEOUT_SECONDS: u64 = crate::deploy::STOP_TIMEOUT_SECONDS;

/// What the nodes last reported of an attempt's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub state: TaskState,
    pub exit_code: Option<i32>,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// Whether the task's node is Ready (its heartbeats arrive).
    pub node_ready: bool,
    /// Since when the task is being stopped, once a stop was asked.
    pub stopping_since: Option<u64>,
}

/// One change the plan asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAction {
    /// Start attempt `attempt` of the run on `node`: its task record and
    /// the attempt in the run; the run is active.
    Place {
        job: JobId,
        run: RunId,
        attempt: Attempt,
    },
    /// The run waits for a node, because `why` (written when it changes).
    Wait { job: JobId, run: RunId, why: String },
    /// Record a stop asked of the run.
    AskStop {
        job: JobId,
        run: RunId,
        stop: StopRequest,
    },
    /// Tell the attempt's node to stop its task.
    StopTask {
        job: JobId,
        run: RunId,
        task: String,
    },
    /// The attempt ended; a new one starts at `at`.
    Retry {
        job: JobId,
        run: RunId,
        ended: Attempt,
        at: u64,
    },
    /// The run is over.
    Finish {
        job: JobId,
        run: RunId,
        state: RunState,
        exit_code: Option<i32>,
        reason: EndReason,
        /// Its last attempt, as it ended.
        ended: Option<Attempt>,
    },
    /// Delete an ended run beyond the job's history, with its attempts'
    /// tasks.
    Trim { job: JobId, run: RunId },
    /// Delete the job: it is being removed and none of its runs is going.
    DeleteJob { job: JobId },
}

impl fmt::Display for RunAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunAction::Place { job, run, attempt } => write!(
                f,
                "place {job} {run} attempt {} on {} as {}",
                attempt.n, attempt.node, attempt.task
            ),
            RunAction::Wait { job, run, why } => write!(f, "wait {job} {run}: {why}"),
            RunAction::AskStop { job, run, stop } => {
                write!(f, "ask stop {job} {run}: {}", stop.reason)
            }
            RunAction::StopTask { job, run, task } => write!(f, "stop task {task} of {job} {run}"),
            RunAction::Retry {
                job,
                run,
                ended,
                at,
            } => write!(
                f,
                "retry {job} {run} at +{}s (attempt {} {})",
                at.saturating_sub(ended.finished_at.unwrap_or(*at)),
                ended.n,
                ended_text(ended)
            ),
            RunAction::Finish {
                job,
                run,
                state,
                exit_code,
                reason,
                ..
            } => {
                write!(f, "finish {job} {run} {state}: {reason}")?;
                if let Some(c) = exit_code {
                    write!(f, " (exit code {c})")?;
                }
                Ok(())
            }
            RunAction::Trim { job, run } => write!(f, "trim {job} {run}"),
            RunAction::DeleteJob { job } => write!(f, "delete job {job}"),
        }
    }
}

fn ended_text(a: &Attempt) -> String {
    match (&a.reason, a.exit_code) {
        (_, Some(c)) => format!("exited {c}"),
        (Some(r), None) => r.to_string(),
        (None, None) => "ended".to_string(),
    }
}

/// The task id of attempt `n` of `run` of `job`: `<job>.<run>.<n>`, or,
/// past the 63 characters a task id may have, the job's first characters,
/// a digest of the job and run, and `n`.
pub fn task_id(job: &JobId, run: &RunId, n: u32) -> String {
    let full = format!("{job}.{run}.{n}");
    if full.len() <= 63 {
        return full;
    }
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(format!("{job}/{run}").as_bytes()));
    let n = n.to_string();
    let room = 63 - 1 - 16 - 1 - n.len();
    let prefix: String = job.as_str().chars().take(room.min(40)).collect();
    let prefix = prefix.trim_end_matches(['.', '-']);
    format!("{prefix}.{}.{n}", &digest[..16])
}

/// The delay before attempt `n + 1` after attempt `n` failed: Marathon's
/// launch backoff (1 s, times 1.15 each time, at most 300 s).
pub fn retry_delay(n: u32) -> u64 {
    let b = crate::app::LaunchBackoff::default();
    let d = b.seconds * b.factor.powi(n.saturating_sub(1).min(100) as i32);
    d.min(b.max_launch_delay_seconds).ceil() as u64
}

/// A plan of the runs: its actions, in order, and the earliest time a
/// deadline or a retry needs another plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunPlan {
    pub actions: Vec<RunAction>,
    pub wake_at: Option<u64>,
}

impl RunPlan {
    fn wake(&mut self, at: u64) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

impl fmt::Display for RunPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for a in &self.actions {
            writeln!(f, "{a}")?;
        }
        if let Some(w) = self.wake_at {
            writeln!(f, "wake at {w}")?;
        }
        Ok(())
    }
}

/// Plans the runs of `job` at `now`. `tasks` holds what the nodes
/// reported of the runs' tasks (by task id); `place` asks for a node for a
/// run and returns it, or why none fits; `history` is how many ended runs
/// the job keeps.
pub fn plan_runs(
    job: &JobRecord,
    runs: &[&RunRecord],
    tasks: &BTreeMap<String, TaskView>,
    history: u32,
    now: u64,
    place: &mut dyn FnMut(&JobRecord, &RunRecord) -> Result<String, String>,
) -> RunPlan {
    let mut plan = RunPlan::default();
    let id = &job.spec.id;
    let spec = &job.spec.run;
    let mut going = 0;
    for r in runs {
        // A run in a state a newer master wrote is left to it.
        if r.state.ended() || r.state == RunState::Unknown {
            if r.state == RunState::Unknown {
                going += 1;
            }
            continue;
        }
        going += 1;
        let attempt = r.attempts.last();
        let task = attempt.and_then(|a| tasks.get(&a.task));
        let open = attempt.filter(|a| a.finished_at.is_none());
        // Whether the attempt's task still runs, or may: no report yet
        // (just placed), a state a newer node reported, or a node that is
        // Ready and has not reported it ended.
        let live = open.is_some()
            && task.is_none_or(|t| {
                t.node_ready
                    && matches!(
                        t.state,
                        TaskState::Pending
                            | TaskState::Starting
                            | TaskState::Running
                            | TaskState::Unknown
                    )
            });
        let ever_started = r.attempts.iter().any(|a| a.started_at.is_some())
            || task.is_some_and(|t| t.started_at.is_some() || t.state == TaskState::Running);
        let deadline = spec
            .restart
            .active_deadline_seconds
            .map(|d| r.created_at + d);
        // The attempt ended by itself (before any stop was asked): its
        // outcome counts, whenever the leader looks.
        if r.stop.is_none()
            && let Some(a) = open
            && !live
        {
            let ended = ended_attempt(a, task, now);
            let lost = ended.reason == Some(EndReason::LostNode);
            if lost {
                // Stopped where it was, should its node come back.
                plan.actions.push(RunAction::StopTask {
                    job: id.clone(),
                    run: r.id.clone(),
                    task: a.task.clone(),
                });
            }
            let succeeded = ended.reason == Some(EndReason::Exited) && ended.exit_code == Some(0);
            let in_time = deadline.is_none_or(|d| now < d);
            if !succeeded
                && spec.restart.policy == RestartPolicy::OnFailure
                && in_time
                && !job.removing
            {
                let at = ended.finished_at.unwrap_or(now) + retry_delay(a.n);
                plan.actions.push(RunAction::Retry {
                    job: id.clone(),
                    run: r.id.clone(),
                    ended,
                    at,
                });
                plan.wake(at);
            } else {
                finish(&mut plan, id, r, task, None, now);
            }
            continue;
        }
        // A stop asked, or one due now.
        let mut stop = r.stop.clone();
        if stop.is_none() {
            let reason = if job.removing {
                Some(EndReason::JobRemoved)
            } else if deadline.is_some_and(|d| now >= d) {
                Some(EndReason::Deadline)
            } else if !ever_started && now >= r.created_at + spec.max_launch_delay_seconds {
                Some(EndReason::LaunchDeadline)
            } else {
                None
            };
            if let Some(reason) = reason {
                let s = StopRequest { reason, at: now };
                plan.actions.push(RunAction::AskStop {
                    job: id.clone(),
                    run: r.id.clone(),
                    stop: s.clone(),
                });
                stop = Some(s);
            }
        }
        if let Some(s) = stop {
            let stopping = task.and_then(|t| t.stopping_since);
            match (open, live, stopping) {
                (Some(a), true, None) => plan.actions.push(RunAction::StopTask {
                    job: id.clone(),
                    run: r.id.clone(),
                    task: a.task.clone(),
                }),
                (Some(_), true, Some(since)) => {
                    let give_up = since + spec.kill_grace_seconds + STOP_TIMEOUT_SECONDS;
                    if now >= give_up {
                        finish(&mut plan, id, r, task, Some(s.reason), now);
                    } else {
                        plan.wake(give_up);
                    }
                }
                _ => finish(&mut plan, id, r, task, Some(s.reason), now),
            }
            continue;
        }
        if let Some(d) = deadline {
            plan.wake(d);
        }
        if !ever_started {
            plan.wake(r.created_at + spec.max_launch_delay_seconds);
        }
        if live {
            continue;
        }
        // Queued: place it once its next attempt is due.
        if let Some(at) = r.next_attempt_at
            && now < at
        {
            plan.wake(at);
            continue;
        }
        match place(job, r) {
            Ok(node) => {
                let n = attempt.map_or(1, |a| a.n + 1);
                plan.actions.push(RunAction::Place {
                    job: id.clone(),
                    run: r.id.clone(),
                    attempt: Attempt {
                        n,
                        task: task_id(id, &r.id, n),
                        node,
                        placed_at: now,
                        started_at: None,
                        finished_at: None,
                        exit_code: None,
                        reason: None,
                    },
                });
            }
            Err(why) => {
                if r.waiting.as_deref() != Some(why.as_str()) {
                    plan.actions.push(RunAction::Wait {
                        job: id.clone(),
                        run: r.id.clone(),
                        why,
                    });
                }
            }
        }
    }
    // Ended runs beyond the history, oldest first (run ids sort by time);
    // skipped times are kept apart, so that a frequent FORBID schedule or
    // an outage does not push out the runs that ran (and their logs).
    let keep = history.max(1) as usize;
    for skipped in [false, true] {
        let mut ended: Vec<&RunRecord> = runs
            .iter()
            .copied()
            .filter(|r| r.state.ended() && (r.state == RunState::Skipped) == skipped)
            .collect();
        ended.sort_by(|a, b| a.id.cmp(&b.id));
        if ended.len() > keep {
            for r in &ended[..ended.len() - keep] {
                plan.actions.push(RunAction::Trim {
                    job: id.clone(),
                    run: r.id.clone(),
                });
            }
        }
    }
    if job.removing && going == 0 {
        plan.actions.push(RunAction::DeleteJob { job: id.clone() });
    }
    plan
}

/// The attempt `a` as it ended, from its task's report.
fn ended_attempt(a: &Attempt, task: Option<&TaskView>, now: u64) -> Attempt {
    let reason = match task {
        Some(t) if !t.node_ready => EndReason::LostNode,
        Some(t) if t.state == TaskState::Lost => EndReason::TaskLost,
        Some(t) if t.state == TaskState::Exited => EndReason::Exited,
        // Stopped by its node, or no report at all.
        _ => EndReason::TaskLost,
    };
    Attempt {
        started_at: a.started_at.or(task.and_then(|t| t.started_at)),
        finished_at: Some(task.and_then(|t| t.finished_at).unwrap_or(now)),
        exit_code: task.and_then(|t| t.exit_code),
        reason: Some(reason),
        ..a.clone()
    }
}

/// Ends run `r`: succeeded when `stopped` is none and its attempt exited
/// 0, failed otherwise, with the attempt's exit code.
fn finish(
    plan: &mut RunPlan,
    job: &JobId,
    r: &RunRecord,
    task: Option<&TaskView>,
    stopped: Option<EndReason>,
    now: u64,
) {
    let ended = r.attempts.last().map(|a| match a.finished_at {
        Some(_) => a.clone(),
        None => ended_attempt(a, task, now),
    });
    let exit_code = ended.as_ref().and_then(|a| a.exit_code);
    let (state, reason) = match stopped {
        Some(reason) => (RunState::Failed, reason),
        None => {
            let reason = ended
                .as_ref()
                .and_then(|a| a.reason.clone())
                .unwrap_or(EndReason::Exited);
            if reason == EndReason::Exited && exit_code == Some(0) {
                (RunState::Succeeded, reason)
            } else {
                (RunState::Failed, reason)
            }
        }
    };
    plan.actions.push(RunAction::Finish {
        job: job.clone(),
        run: r.id.clone(),
        state,
        exit_code,
        reason,
        ended,
    });
}

#[cfg(test)]
mod tests;
