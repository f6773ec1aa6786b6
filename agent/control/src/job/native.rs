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

use std::collections::BTreeMap;

use super::cron::Dialect;
use super::spec::{ConcurrencyPolicy, JobId, JobSpec, RestartPolicy, RunSpec, ScheduleSpec};
use crate::app::doc::{Node, Problems, Value};
use crate::app::group::Places;
use crate::app::{AgentRole, Constraint, Operator};

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
    let mut f = p.object(node, "a job (a table)")?;
    let mut places = Places::new(&node.place);
    let id = match f.get("id") {
        Some(n) => {
            places.put("id", &n.place);
            p.str(n)
                .and_then(|t| JobId::parse(&t).map_err(|why| p.at(&n.place, why)).ok())
        }
        None => {
            p.at(&node.place, "missing field `id`: every job needs one");
            None
        }
    };
    let run = match f.get("run") {
        Some(n) => {
            places.put("run", &n.place);
            read_run(n, &mut places, p)
        }
        None => {
            p.at(
                &node.place,
                "missing table `run`: what a run of the job runs (its `image` at least)",
            );
            None
        }
    };
    let mut spec = JobSpec::new(
        id.unwrap_or_else(|| JobId::parse("invalid").expect("a valid id")),
        run.unwrap_or_else(|| RunSpec::new("")),
    );
    if let Some(n) = f.get("description") {
        spec.description = p.str(n);
    }
    if let Some(n) = f.get("labels") {
        spec.labels = strings(n, "labels", &mut places, p);
    }
    if let Some(n) = f.get("history") {
        places.put("history", &n.place);
        spec.history = p.int(n, 0, i64::from(u32::MAX)).map(|v| v as u32);
    }
    if let Some(n) = f.get("schedules") {
        places.put("schedules", &n.place);
        for (i, item) in p.array(n).unwrap_or_default().iter().enumerate() {
            if let Some(s) = read_schedule_at(item, &format!("schedules[{i}]"), &mut places, p) {
                spec.schedules.push(s);
            }
        }
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
    let mut f = p.object(node, "a schedule (a table)")?;
    places.put(at, &node.place);
    let field = |name: &str| format!("{at}.{name}");
    let mut s = ScheduleSpec::new("", "", Dialect::Strata);
    match f.get("id") {
        Some(n) => {
            places.put(field("id"), &n.place);
            s.id = p.str(n).unwrap_or_default();
        }
        None => p.at(&node.place, "missing field `id`: every schedule needs one"),
    }
    match f.get("cron") {
        Some(n) => {
            places.put(field("cron"), &n.place);
            s.cron = p.str(n).unwrap_or_default();
        }
        None => p.at(
            &node.place,
            "missing field `cron`: when the schedule runs the job",
        ),
    }
    if let Some(n) = f.get("timezone") {
        places.put(field("timezone"), &n.place);
        s.timezone = p.str(n).unwrap_or_default();
    }
    if let Some(n) = f.get("starting_deadline_seconds") {
        places.put(field("starting_deadline_seconds"), &n.place);
        if let Some(v) = p.int(n, 0, i64::from(u32::MAX)) {
            s.starting_deadline_seconds = v as u64;
        }
    }
    if let Some(n) = f.get("concurrency_policy") {
        places.put(field("concurrency_policy"), &n.place);
        if let Some(text) = p.str(n) {
            match ConcurrencyPolicy::parse(&word(&text)) {
                Some(c) => s.concurrency_policy = c,
                None => p.at(
                    &n.place,
                    format!(
                        "unknown concurrency policy {text:?}: expected \"allow\", \"forbid\" or \"replace\""
                    ),
                ),
            }
        }
    }
    if let Some(n) = f.get("enabled") {
        s.enabled = p.bool(n).unwrap_or(true);
    }
    f.finish(p, SCHEDULE_KEYS);
    Some(s)
}

fn read_run(node: &Node, places: &mut Places, p: &mut Problems) -> Option<RunSpec> {
    let mut f = p.object(node, "a run (a table)")?;
    let mut run = RunSpec::new("");
    match f.get("image") {
        Some(n) => {
            places.put("run.image", &n.place);
            run.image = p.str(n).unwrap_or_default();
        }
        None => p.at(
            &node.place,
            "missing field `image`: Strata runs every job in a container image",
        ),
    }
    if let Some(n) = f.get("force_pull") {
        run.force_pull = p.bool(n).unwrap_or_default();
    }
    for (key, slot) in [
        ("cpus", &mut run.cpus),
        ("mem", &mut run.mem),
        ("disk", &mut run.disk),
    ] {
        if let Some(n) = f.get(key) {
            places.put(format!("run.{key}"), &n.place);
            if let Some(v) = p.f64(n) {
                *slot = v;
            }
        }
    }
    if let Some(n) = f.get("cmd") {
        places.put("run.cmd", &n.place);
        run.cmd = p.str(n).filter(|c| !c.is_empty());
    }
    if let Some(n) = f.get("args") {
        places.put("run.args", &n.place);
        run.args = p.strings(n).unwrap_or_default();
    }
    if let Some(n) = f.get("user") {
        places.put("run.user", &n.place);
        run.user = p.str(n);
    }
    if let Some(n) = f.get("env") {
        run.env = strings(n, "run.env", places, p);
    }
    if let Some(n) = f.get("constraints") {
        run.constraints = constraints(n, places, p);
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

/// A table of strings.
fn strings(
    node: &Node,
    field: &str,
    places: &mut Places,
    p: &mut Problems,
) -> BTreeMap<String, String> {
    places.put(field, &node.place);
    let mut out = BTreeMap::new();
    let Value::Obj(entries) = &node.value else {
        p.at(
            &node.place,
            format!("expected a table of strings, found {}", node.kind()),
        );
        return out;
    };
    for (key, _, value) in entries {
        places.put(format!("{field}.{key}"), &value.place);
        if let Some(v) = p.str(value) {
            out.insert(key.clone(), v);
        }
    }
    out
}

/// Constraints as Marathon writes them: `[field, operator]` or `[field,
/// operator, value]`.
fn constraints(node: &Node, places: &mut Places, p: &mut Problems) -> Vec<Constraint> {
    places.put("run.constraints", &node.place);
    let mut out = Vec::new();
    for item in p.array(node).unwrap_or_default() {
        places.put(format!("run.constraints[{}]", out.len()), &item.place);
        let Some(parts) = p.strings(item) else {
            continue;
        };
        if !(2..=3).contains(&parts.len()) {
            p.at(
                &item.place,
                format!(
                    "a constraint is [field, operator] or [field, operator, value], found {} part(s)",
                    parts.len()
                ),
            );
            continue;
        }
        let Some(operator) = Operator::parse(&parts[1]) else {
            p.at(
                &item.place,
                format!(
                    "unknown operator {:?}: expected UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS",
                    parts[1]
                ),
            );
            continue;
        };
        out.push(Constraint {
            field: parts[0].clone(),
            operator,
            value: parts.get(2).cloned(),
        });
    }
    out
}
