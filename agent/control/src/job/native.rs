//! Strata's own job file, TOML in [`super::spec::JobSpec`]'s names:
//!
//! ```toml
//! id = "backup.nightly"
//! description = "dump the database"
//! history = 30
//!
//! [run]
//! image = "registry.example/pg-dump:16"
//! cmd = "pg_dump -h db.strata.internal app > /out/dump.sql"
//! cpus = 0.5
//! mem = 256
//! constraints = [["rack", "IS", "r1"]]
//! restart = { policy = "on-failure", active_deadline_seconds = 3600 }
//!
//! [[schedules]]
//! id = "nightly"
//! cron = "30 2 * * *"
//! timezone = "Europe/Paris"
//! concurrency_policy = "forbid"
//! ```
//!
//! Its cron is Vixie cron ([`super::cron::Dialect::Strata`]). Every
//! mistake is reported at its line and column; an unknown key is a problem
//! with the nearest known name.

use super::cron::Dialect;
use super::spec::{JobSpec, RestartPolicy, RunSpec, ScheduleSpec};
use crate::app::AgentRole;
use crate::app::doc::{Fields, Node, Problems};
use crate::app::group::Places;
use crate::app::native::{constraints, string_map};

const JOB_KEYS: &[&str] = &["id", "description", "labels", "history", "run", "schedules"];
const RUN_KEYS: &[&str] = &[
    "image",
    "force_pull",
    "cmd",
    "args",
    "user",
    "cpus",
    "mem",
    "disk",
    "env",
    "constraints",
    "accepted_roles",
    "restart",
    "max_launch_delay_seconds",
    "kill_grace_seconds",
];
pub(crate) const SCHEDULE_KEYS: &[&str] = &[
    "id",
    "cron",
    "timezone",
    "starting_deadline_seconds",
    "concurrency_policy",
    "enabled",
];

/// A word of a TOML file's enum: case and `-`/`_` aside
/// (`on-failure`, `ON_FAILURE`).
fn word(text: &str) -> String {
    text.to_ascii_uppercase().replace('-', "_")
}

/// Reads one Strata job.
pub fn read_job(node: &Node, p: &mut Problems) -> Option<(JobSpec, Places)> {
    let (mut spec, mut places, mut f) = super::file::read_job_common(
        node,
        "a job (a table)",
        "missing table `run`: what a run of the job runs (its `image` at least)",
        p,
        read_run,
        read_schedule_at,
    )?;
    if let Some(n) = f.get("history") {
        places.put("history", &n.place);
        spec.history = p.int(n, 0, i64::from(u32::MAX)).map(|v| v as u32);
    }
    f.finish(p, JOB_KEYS);
    Some((spec, places))
}

/// Reads one schedule (a schedule file, or an entry of `schedules`), its
/// places recorded under `at`.
pub fn read_schedule_at(
    node: &Node,
    at: &str,
    places: &mut Places,
    p: &mut Problems,
) -> Option<ScheduleSpec> {
    let (s, f) = super::file::read_schedule_common(node, at, &SYNTAX, places, p)?;
    f.finish(p, SCHEDULE_KEYS);
    Some(s)
}

/// How Strata's TOML writes a schedule.
const SYNTAX: super::file::ScheduleSyntax = super::file::ScheduleSyntax {
    what: "a schedule (a table)",
    dialect: Dialect::Strata,
    deadline: "starting_deadline_seconds",
    deadline_min: 0,
    policy: "concurrency_policy",
    policies: "\"allow\", \"forbid\" or \"replace\"",
    word,
    timezone,
};

fn timezone(
    f: &mut Fields<'_>,
    field: &str,
    s: &mut ScheduleSpec,
    places: &mut Places,
    p: &mut Problems,
) {
    if let Some(n) = f.get("timezone") {
        places.put(field, &n.place);
        s.timezone = p.str(n).unwrap_or_default();
    }
}

fn read_run(node: &Node, places: &mut Places, p: &mut Problems) -> Option<RunSpec> {
    let mut f = p.object(node, "a run (a table)")?;
    let mut run = RunSpec::new("");
    match f.get("image") {
        Some(n) => {
            places.put("run.image", &n.place);
            run.image = p.str(n).unwrap_or_default();
            if run.image.is_empty() {
                p.at(
                    &n.place,
                    "the image is empty: give an image reference, as `busybox:1.36`",
                );
            }
        }
        None => p.at(
            &node.place,
            "missing field `image`: Strata runs every job in a container image",
        ),
    }
    if let Some(n) = f.get("force_pull") {
        run.force_pull = p.bool(n).unwrap_or_default();
    }
    super::file::read_run_common(&mut f, &mut run, places, p);
    if let Some(n) = f.get("env") {
        run.env = string_map(n, "run.env", places, p);
    }
    if let Some(n) = f.get("constraints") {
        run.constraints = constraints(n, "run.constraints", places, p);
    }
    if let Some(n) = f.get("accepted_roles") {
        places.put("run.accepted_roles", &n.place);
        for role in p.strings(n).unwrap_or_default() {
            match role.as_str() {
                "private" => run.accepted_roles.push(AgentRole::Private),
                "public" => run.accepted_roles.push(AgentRole::Public),
                other => p.at(
                    &n.place,
                    format!("unknown role {other:?}: expected \"private\" or \"public\""),
                ),
            }
        }
    }
    if let Some(n) = f.get("restart") {
        places.put("run.restart", &n.place);
        if let Some(mut r) = p.object(n, "a restart policy (a table)") {
            if let Some(pol) = r.get("policy") {
                places.put("run.restart.policy", &pol.place);
                if let Some(text) = p.str(pol) {
                    match RestartPolicy::parse(&word(&text)) {
                        Some(v) => run.restart.policy = v,
                        None => p.at(
                            &pol.place,
                            format!(
                                "unknown restart policy {text:?}: expected \"never\" or \"on-failure\""
                            ),
                        ),
                    }
                }
            }
            if let Some(d) = r.get("active_deadline_seconds") {
                places.put("run.restart.active_deadline_seconds", &d.place);
                run.restart.active_deadline_seconds =
                    p.int(d, 0, i64::from(u32::MAX)).map(|v| v as u64);
            }
            r.finish(p, &["policy", "active_deadline_seconds"]);
        }
    }
    for (key, slot) in [
        (
            "max_launch_delay_seconds",
            &mut run.max_launch_delay_seconds,
        ),
        ("kill_grace_seconds", &mut run.kill_grace_seconds),
    ] {
        if let Some(n) = f.get(key) {
            places.put(format!("run.{key}"), &n.place);
            if let Some(v) = p.int(n, 0, i64::from(u32::MAX)) {
                *slot = v as u64;
            }
        }
    }
    f.finish(p, RUN_KEYS);
    Some(run)
}
