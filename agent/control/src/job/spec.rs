//! A job as Strata keeps it (`JobSpec`): what one run of it runs
//! (`RunSpec`) and when it runs by itself (`ScheduleSpec`), read from a
//! Metronome job JSON ([`super::metronome`]) or a Strata TOML file
//! ([`super::native`]), and the checks no reader can make field by field
//! ([`JobSpec::check`]). Stored and sent as JSON: every enum reads what a
//! newer writer wrote (`Unknown`), and a check refuses it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::cron::{Cron, Dialect};
use super::tz;
use crate::app::doc::{Place, Problem};
use crate::app::{AgentRole, Constraint, MAX_CPUS, MAX_DISK_MIB, MAX_MEM_MIB, MIN_MEM_MIB};
use crate::format::Format;

/// Runs kept per job when neither the job nor the cluster says.
pub const DEFAULT_HISTORY: u32 = 20;
/// The most runs a job may keep.
pub const MAX_HISTORY: u32 = 1000;
/// Metronome's defaults.
pub const DEFAULT_STARTING_DEADLINE_SECONDS: u64 = 900;
pub const DEFAULT_MAX_LAUNCH_DELAY_SECONDS: u64 = 3600;
pub const DEFAULT_KILL_GRACE_SECONDS: u64 = 10;

/// A job's id, as Metronome's `pathType`: dot-separated labels of
/// lowercase letters, digits and dashes, none starting or ending with a
/// dash (`prod.example.app`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Reads `text`, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<JobId, String> {
        if text.is_empty() {
            return Err("a job id is empty".into());
        }
        if text.len() > 200 {
            return Err(format!(
                "job id {text:?} is {} characters long: at most 200",
                text.len()
            ));
        }
        for label in text.split('.') {
            check_path_label(label).map_err(|why| format!("job id {text:?}: {why}"))?;
        }
        Ok(JobId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One label of a `pathType` (a job id's part, or a schedule id).
pub fn check_path_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("a part is empty (two dots, or a dot at an end)".into());
    }
    if label.len() > 63 {
        return Err(format!(
            "{label:?} is {} characters long: at most 63",
            label.len()
        ));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "{label:?} may hold only lowercase letters, digits and dashes"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("{label:?} may not start or end with a dash"));
    }
    Ok(())
}

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub id: JobId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub run: RunSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleSpec>,
    /// Finished runs kept (absent: the cluster's `[scheduler]
    /// job_history`, [`DEFAULT_HISTORY`] unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<u32>,
}

/// What one run of a job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The container image (an OCI reference).
    pub image: String,
    /// Pull the image for every run, even when the node has it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_pull: bool,
    /// A shell command (`/bin/sh -c`), or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    /// the command and its arguments, replacing the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub cpus: f64,
    /// MiB.
    pub mem: f64,
    /// MiB.
    #[serde(default)]
    pub disk: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// The agents a run may go to (empty: private agents).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_roles: Vec<AgentRole>,
    #[serde(default)]
    pub restart: Restart,
    /// A run not started this long after it was created fails.
    #[serde(default = "default_max_launch_delay")]
    pub max_launch_delay_seconds: u64,
    /// Between the stop signal and the kill.
    #[serde(default = "default_kill_grace")]
    pub kill_grace_seconds: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_max_launch_delay() -> u64 {
    DEFAULT_MAX_LAUNCH_DELAY_SECONDS
}

fn default_kill_grace() -> u64 {
    DEFAULT_KILL_GRACE_SECONDS
}

impl RunSpec {
    /// A run of `image` with Metronome's defaults (1 CPU, 128 MiB).
    pub fn new(image: &str) -> RunSpec {
        RunSpec {
            image: image.to_string(),
            force_pull: false,
            cmd: None,
            args: Vec::new(),
            user: None,
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
            env: BTreeMap::new(),
            constraints: Vec::new(),
            accepted_roles: Vec::new(),
            restart: Restart::default(),
            max_launch_delay_seconds: DEFAULT_MAX_LAUNCH_DELAY_SECONDS,
            kill_grace_seconds: DEFAULT_KILL_GRACE_SECONDS,
        }
    }
}

/// Whether a failed run is tried again, and for how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    #[serde(default)]
    pub policy: RestartPolicy,
    /// A run still going this long after it was created is killed and
    /// fails; no retry starts after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestartPolicy {
    /// A failed attempt fails the run.
    #[default]
    Never,
    /// A failed attempt is tried again (after a backoff, on any node),
    /// until the active deadline.
    OnFailure,
    #[serde(other)]
    Unknown,
}

impl RestartPolicy {
    pub fn parse(text: &str) -> Option<RestartPolicy> {
        match text {
            "NEVER" => Some(RestartPolicy::Never),
            "ON_FAILURE" => Some(RestartPolicy::OnFailure),
            _ => None,
        }
    }
}

/// When a job runs by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Unique within its job (a `pathType` label).
    pub id: String,
    pub cron: String,
    /// How `cron` reads (Metronome's files: [`Dialect::Metronome`]).
    #[serde(default = "default_dialect")]
    pub dialect: Dialect,
    /// An IANA zone name.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// A time missed (no leader then) still starts this long after it;
    /// later, it is recorded as skipped.
    #[serde(default = "default_starting_deadline")]
    pub starting_deadline_seconds: u64,
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    #[serde(default = "default_enabled")]
    pub enabled: bool,
}

fn default_dialect() -> Dialect {
    Dialect::Strata
}

fn default_timezone() -> String {
    "UTC".to_string()
}

fn default_starting_deadline() -> u64 {
    DEFAULT_STARTING_DEADLINE_SECONDS
}

fn default_enabled() -> bool {
    true
}

impl ScheduleSpec {
    /// A schedule `id` of `cron` in UTC, with the defaults.
    pub fn new(id: &str, cron: &str, dialect: Dialect) -> ScheduleSpec {
        ScheduleSpec {
            id: id.to_string(),
            cron: cron.to_string(),
            dialect,
            timezone: default_timezone(),
            starting_deadline_seconds: DEFAULT_STARTING_DEADLINE_SECONDS,
            concurrency_policy: ConcurrencyPolicy::default(),
            enabled: true,
        }
    }

    /// Its expression, read.
    pub fn parse_cron(&self) -> Result<Cron, String> {
        Cron::parse(&self.cron, self.dialect).map_err(|e| e.to_string())
    }

    /// Unix second `t` as a wall time in its zone (`2026-12-03 02:30
    /// CET`; in UTC when the zone is not known).
    pub fn local_time(&self, t: u64) -> String {
        tz::local(&self.zone().unwrap_or(jiff::tz::TimeZone::UTC), t)
    }

    /// Its zone, found.
    pub fn zone(&self) -> Result<jiff::tz::TimeZone, String> {
        tz::zone(&self.timezone).map_err(|e| e.to_string())
    }
}

/// What a due time does while an earlier run of the job is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConcurrencyPolicy {
    /// Start beside it.
    Allow,
    /// Skip this time (recorded as skipped, naming the run).
    #[default]
    Forbid,
    /// Stop it, then start.
    Replace,
    #[serde(other)]
    Unknown,
}

impl ConcurrencyPolicy {
    pub fn parse(text: &str) -> Option<ConcurrencyPolicy> {
        match text {
            "ALLOW" => Some(ConcurrencyPolicy::Allow),
            "FORBID" => Some(ConcurrencyPolicy::Forbid),
            "REPLACE" => Some(ConcurrencyPolicy::Replace),
            _ => None,
        }
    }
}

impl JobSpec {
    /// The enabled schedules with no time left after unix second `now` (a
    /// Metronome year gone by), each with the problem: checked where the
    /// time is known (`strata job validate`, the API), not by
    /// [`JobSpec::check`].
    pub fn check_times(&self, now: u64) -> Vec<(String, String)> {
        self.schedules
            .iter()
            .filter(|s| s.enabled)
            .filter_map(|s| {
                let (cron, zone) = (s.parse_cron().ok()?, s.zone().ok()?);
                cron.next_after(&zone, now).is_none().then(|| {
                    (
                        s.id.clone(),
                        format!(
                            "schedule {:?}: `{}` has no time left after {}: it would never run the job",
                            s.id,
                            s.cron,
                            tz::utc(now)
                        ),
                    )
                })
            })
            .collect()
    }

    /// A job `id` running `run`, with no schedule.
    pub fn new(id: JobId, run: RunSpec) -> JobSpec {
        JobSpec {
            format: Format::V1,
            id,
            description: None,
            labels: BTreeMap::new(),
            run,
            schedules: Vec::new(),
            history: None,
        }
    }

    /// What is wrong with the job as a whole, each problem placed by `at`
    /// from Strata's field path (`run.cpus`, `schedules[1].cron`). Every
    /// problem is reported.
    pub fn check(&self, at: &dyn Fn(&str) -> Place) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, message: String| {
            out.push(Problem {
                place: at(field),
                message,
            })
        };
        let r = &self.run;
        // An empty image is reported by the reader, as a missing field.
        if !r.image.is_empty()
            && let Err(why) = crate::task::spec::check_reference(&r.image)
        {
            bad("run.image", why);
        }
        if r.cmd.is_some() && !r.args.is_empty() {
            bad(
                "run.args",
                "a job has `cmd` or `args`, not both: `cmd` runs in a shell, `args` replaces the image's command".into(),
            );
        }
        if !(r.cpus > 0.0 && r.cpus <= MAX_CPUS) {
            bad(
                "run.cpus",
                format!(
                    "cpus {} is out of range: expected more than 0 and at most {MAX_CPUS} (no node has more)",
                    r.cpus
                ),
            );
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&r.mem) {
            bad(
                "run.mem",
                format!(
                    "mem {} MiB is out of range: expected {MIN_MEM_MIB} to {MAX_MEM_MIB} MiB",
                    r.mem
                ),
            );
        }
        if !(0.0..=MAX_DISK_MIB).contains(&r.disk) {
            bad(
                "run.disk",
                format!(
                    "disk {} MiB is out of range: expected 0 to {MAX_DISK_MIB} MiB",
                    r.disk
                ),
            );
        }
        for key in r.env.keys() {
            let ok = !key.is_empty()
                && !key.contains('=')
                && !key.bytes().next().is_some_and(|b| b.is_ascii_digit());
            if !ok {
                bad(
                    &format!("run.env.{key}"),
                    format!("environment variable name {key:?} is invalid"),
                );
            }
        }
        crate::app::check_constraints(&r.constraints, &mut |field, why| {
            bad(&format!("run.{field}"), why)
        });
        if r.accepted_roles.contains(&AgentRole::Unknown) {
            bad(
                "run.accepted_roles",
                "an unknown role: expected private or public".into(),
            );
        }
        if r.restart.policy == RestartPolicy::Unknown {
            bad(
                "run.restart.policy",
                "an unknown restart policy: expected NEVER or ON_FAILURE".into(),
            );
        }
        if r.restart.active_deadline_seconds == Some(0) {
            bad(
                "run.restart.active_deadline_seconds",
                "0 would kill every run as it starts: expected at least 1".into(),
            );
        }
        if r.max_launch_delay_seconds == 0 {
            bad(
                "run.max_launch_delay_seconds",
                "0 would fail every run before it starts: expected at least 1".into(),
            );
        }
        if let Some(h) = self.history
            && !(1..=MAX_HISTORY).contains(&h)
        {
            bad(
                "history",
                format!("{h} is out of range: expected 1 to {MAX_HISTORY} runs"),
            );
        }
        let mut ids = BTreeSet::new();
        for (i, s) in self.schedules.iter().enumerate() {
            let field = |name: &str| format!("schedules[{i}].{name}");
            if let Err(why) = check_path_label(&s.id) {
                bad(&field("id"), format!("schedule id: {why}"));
            } else if !ids.insert(s.id.as_str()) {
                bad(
                    &field("id"),
                    format!("schedule {:?} is defined twice", s.id),
                );
            }
            if s.dialect == Dialect::Unknown {
                bad(
                    &field("dialect"),
                    "an unknown cron dialect: expected strata or metronome".into(),
                );
            } else if let Err(why) = s.parse_cron() {
                bad(&field("cron"), why);
            }
            if let Err(why) = s.zone() {
                bad(&field("timezone"), why);
            }
            if s.starting_deadline_seconds == 0 {
                bad(
                    &field("starting_deadline_seconds"),
                    "0 would skip every time: expected at least 1".into(),
                );
            }
            if s.concurrency_policy == ConcurrencyPolicy::Unknown {
                bad(
                    &field("concurrency_policy"),
                    "an unknown concurrency policy: expected ALLOW, FORBID or REPLACE".into(),
                );
            }
        }
        out
    }
}
