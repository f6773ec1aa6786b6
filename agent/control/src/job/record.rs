//! What the masters keep of jobs in etcd: the job (`JobRecord`), where
//! each schedule stands (`ScheduleState`, written by the scheduling
//! master only), and each run (`RunRecord`) with its attempts. Every
//! record reads what a newer writer wrote: a `format` field, no unknown
//! key refused, and `Unknown` on every state enum.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::spec::{JobId, JobSpec};
use crate::format::Format;

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub spec: JobSpec,
    /// Bumped by every change of `spec`; a run records the one it ran.
    pub version: u64,
    pub created_at: u64,
    pub updated_at: u64,
    /// Being removed: its runs are stopped, then the record goes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub removing: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where one schedule of a job stands: every time at or before `cursor`
/// has been handled (fired or skipped) and is never handled again, by
/// any master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// Unix seconds: the last time handled, or when the schedule was
    /// (re-)enabled.
    pub cursor: u64,
    /// The next time after `cursor` (absent: none is left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
    /// What `cursor` was computed for (cron, dialect, zone): a change
    /// starts the schedule afresh from now, without backfill.
    pub fingerprint: String,
    /// Since when the schedule is enabled; absent while it is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled_since: Option<u64>,
    /// Times skipped beyond those recorded as runs (a long outage of a
    /// frequent schedule records at most the job's history of them).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped_unrecorded: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A run's id, unique within its job and ordered by time: a scheduled run
/// is `<yyyymmddHHMMSS of its time, UTC>-<schedule>`, a manual one
/// `<yyyymmddHHMMSS of the request>-manual-<4 hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    /// The run of `schedule` at unix second `at`: every master names it
    /// alike, so that one time makes at most one run.
    pub fn scheduled(at: u64, schedule: &str) -> RunId {
        RunId(format!("{}-{schedule}", stamp(at)))
    }

    /// A manual run asked for at `at`, told apart by `nonce`.
    pub fn manual(at: u64, nonce: u16) -> RunId {
        RunId(format!("{}-manual-{nonce:04x}", stamp(at)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `yyyymmddHHMMSS` of unix second `at`, in UTC.
pub fn stamp(at: u64) -> String {
    let ts = i64::try_from(at)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    ts.strftime("%Y%m%d%H%M%S").to_string()
}

/// What a task that is an attempt of a job's run records about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOf {
    pub job: JobId,
    pub run: RunId,
    pub attempt: u32,
    /// The scratch disk it was placed with, in MiB.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub disk_mib: u64,
}

/// What started a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Trigger {
    /// A schedule's time.
    Schedule { schedule: String, at: u64 },
    /// `strata job run`, by whom (the audit log's label of the token).
    Manual { by: String },
    #[serde(other)]
    Unknown,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Waiting for a node (or for its next attempt).
    Queued,
    /// An attempt placed or running.
    Active,
    Succeeded,
    Failed,
    /// A scheduled time that started no run ([`EndReason`] says why).
    Skipped,
    #[serde(other)]
    Unknown,
}

impl RunState {
    /// Whether the run is over.
    pub fn ended(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Skipped
        )
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunState::Queued => "queued",
            RunState::Active => "active",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Skipped => "skipped",
            RunState::Unknown => "unknown",
        })
    }
}

/// Why a run (or an attempt) ended, or a time was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EndReason {
    /// Its process exited (with the run's exit code).
    Exited,
    /// Still going at the active deadline: killed.
    Deadline,
    /// Not started within the job's max launch delay.
    LaunchDeadline,
    /// Its node stopped answering.
    LostNode,
    /// Its task's process vanished without an exit status.
    TaskLost,
    /// `strata job kill`, by whom.
    Killed { by: String },
    /// Stopped for a newer run (REPLACE).
    Replaced { by: RunId },
    /// Skipped: an earlier run was still going (FORBID).
    Forbidden { active: RunId },
    /// Skipped: missed (no scheduling master then) and past the
    /// schedule's starting deadline.
    Missed,
    /// Skipped: a newer time of the same schedule was due at once, and
    /// the policy starts only the newest.
    Superseded { by: RunId },
    /// Its job was removed.
    JobRemoved,
    #[serde(other)]
    Unknown,
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Exited => f.write_str("exited"),
            EndReason::Deadline => f.write_str("killed at its active deadline"),
            EndReason::LaunchDeadline => f.write_str("not started within its max launch delay"),
            EndReason::LostNode => f.write_str("its node was lost"),
            EndReason::TaskLost => f.write_str("its process vanished without an exit status"),
            EndReason::Killed { by } => write!(f, "killed by {by}"),
            EndReason::Replaced { by } => write!(f, "replaced by run {by}"),
            EndReason::Forbidden { active } => {
                write!(f, "skipped: run {active} was still going (FORBID)")
            }
            EndReason::Missed => f.write_str("skipped: missed past its starting deadline"),
            EndReason::Superseded { by } => write!(f, "skipped: superseded by run {by}"),
            EndReason::JobRemoved => f.write_str("its job was removed"),
            EndReason::Unknown => f.write_str("an unknown reason"),
        }
    }
}

/// One try of a run: one task on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1 for the first.
    pub n: u32,
    /// Its task's id (`<job>.<run>.<n>`).
    pub task: String,
    pub node: String,
    pub placed_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
}

/// A stop asked of a going run (an operator's kill, a newer run that
/// replaces it, a deadline, the job's removal): its attempt is stopped and
/// the run fails with `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    pub reason: EndReason,
    pub at: u64,
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub job: JobId,
    pub id: RunId,
    pub trigger: Trigger,
    pub created_at: u64,
    pub state: RunState,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<EndReason>,
    /// Why it waits for a node (the scheduler's words), while it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopRequest>,
    /// The job's version the run runs.
    pub spec_version: u64,
}

impl RunRecord {
    /// A run of `job` (at `version`) created at `now`, queued.
    pub fn queued(job: &JobId, id: RunId, trigger: Trigger, version: u64, now: u64) -> RunRecord {
        RunRecord {
            format: Format::V1,
            job: job.clone(),
            id,
            trigger,
            created_at: now,
            state: RunState::Queued,
            attempts: Vec::new(),
            next_attempt_at: None,
            finished_at: None,
            exit_code: None,
            reason: None,
            waiting: None,
            stop: None,
            spec_version: version,
        }
    }

    /// A scheduled time that started no run, recorded at `now`.
    pub fn skipped(
        job: &JobId,
        schedule: &str,
        at: u64,
        reason: EndReason,
        version: u64,
        now: u64,
    ) -> RunRecord {
        let mut r = RunRecord::queued(
            job,
            RunId::scheduled(at, schedule),
            Trigger::Schedule {
                schedule: schedule.to_string(),
                at,
            },
            version,
            now,
        );
        r.state = RunState::Skipped;
        r.finished_at = Some(now);
        r.reason = Some(reason);
        r
    }

    /// Whether it still counts as going: queued, active, or in a state a
    /// newer master wrote (which this one leaves alone).
    pub fn going(&self) -> bool {
        !self.state.ended()
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn records_from_a_newer_writer_read() {
        let run: RunRecord = serde_json::from_str(
            r#"{"format": 2, "job": "j", "id": "20261201100000-s", "created_at": 5,
                "trigger": {"kind": "webhook", "url": "x"}, "state": "paused",
                "reason": {"kind": "preempted", "by": "y"}, "spec_version": 3,
                "attempts": [{"n": 1, "task": "j.r.1", "node": "a", "placed_at": 6,
                              "reason": {"kind": "oom"}, "cgroup": "x"}],
                "priority": 7}"#,
        )
        .expect("a newer run reads");
        expect![[r#"Unknown Unknown Some(Unknown) true"#]].assert_eq(&format!(
            "{:?} {:?} {:?} {}",
            run.trigger,
            run.state,
            run.reason,
            run.going()
        ));
        let st: ScheduleState =
            serde_json::from_str(r#"{"format": 2, "cursor": 10, "fingerprint": "f", "jitter": 3}"#)
                .expect("a newer schedule state reads");
        assert_eq!((st.cursor, st.next, st.enabled_since), (10, None, None));
    }

    #[test]
    fn run_ids_sort_by_time_and_name_their_schedule() {
        expect!["20251201002000-nightly 20251201002000-manual-00af"].assert_eq(&format!(
            "{} {}",
            RunId::scheduled(1_764_548_400, "nightly"),
            RunId::manual(1_764_548_400, 0xaf)
        ));
    }
}
