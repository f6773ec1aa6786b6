//! Metronome's job JSON (and its schedule JSON), read as written for
//! Metronome: its field names and shapes, and its cron (day of month AND
//! day of week, an optional year). What Metronome's API returns about a
//! job's state (`activeRuns`, `history`, `historySummary`) is ignored, so
//! an exported job adds as is. A field Strata lacks is accepted while it
//! holds its empty or default value, and is otherwise a problem that names
//! it; any other unknown field is a problem with the nearest known name.

use super::cron::Dialect;
use super::spec::{JobSpec, RestartPolicy, RunSpec, ScheduleSpec};
use crate::app::doc::{Fields, Node, Problems};
use crate::app::group::Places;
use crate::app::marathon::env;
use crate::app::{Constraint, Operator};

const JOB_KEYS: &[&str] = &["id", "description", "labels", "schedules", "run"];
/// What Metronome's API returns about a job's state: ignored.
const READ_ONLY: &[&str] = &["activeRuns", "history", "historySummary"];
const RUN_KEYS: &[&str] = &[
    "cmd",
    "args",
    "cpus",
    "mem",
    "disk",
    "docker",
    "ucr",
    "env",
    "placement",
    "user",
    "restart",
    "maxLaunchDelay",
    "taskKillGracePeriodSeconds",
    "networks",
];
pub(crate) const SCHEDULE_KEYS: &[&str] = &[
    "id",
    "cron",
    "timezone",
    "timeZone",
    "startingDeadlineSeconds",
    "concurrencyPolicy",
    "enabled",
];

/// Reads one Metronome job.
pub fn read_job(node: &Node, p: &mut Problems) -> Option<(JobSpec, Places)> {
    let (spec, places, mut f) = super::file::read_job_common(
        node,
        "a job (an object)",
        "missing field `run`: what a run of the job runs",
        p,
        read_run,
        read_schedule_at,
    )?;
    f.lacks(
        p,
        "dependencies",
        "Strata's jobs do not wait for other jobs; schedule them apart",
    );
    f.ignore(READ_ONLY);
    f.finish(p, JOB_KEYS);
    Some((spec, places))
}

/// Reads one Metronome schedule (a schedule file, or an entry of a job's
/// `schedules`), its places recorded under `at` (`schedules[0]`).
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

/// How Metronome writes a schedule (its default policy, FORBID, is
/// Strata's).
const SYNTAX: super::file::ScheduleSyntax = super::file::ScheduleSyntax {
    what: "a schedule (an object)",
    dialect: Dialect::Metronome,
    deadline: "startingDeadlineSeconds",
    deadline_min: 1,
    policy: "concurrencyPolicy",
    policies: "\"ALLOW\", \"FORBID\" or \"REPLACE\"",
    word: str::to_string,
    timezone,
};

/// Metronome's docs write it `timezone`, some of its clients `timeZone`:
/// either, not both.
fn timezone(
    f: &mut Fields<'_>,
    field: &str,
    s: &mut ScheduleSpec,
    places: &mut Places,
    p: &mut Problems,
) {
    match (f.get("timezone"), f.get("timeZone")) {
        (Some(a), Some(_)) => p.at(
            &a.place,
            "both `timezone` and `timeZone`: give the zone once",
        ),
        (Some(n), None) | (None, Some(n)) => {
            places.put(field, &n.place);
            s.timezone = p.str(n).unwrap_or_default();
        }
        (None, None) => {}
    }
}

fn read_run(node: &Node, places: &mut Places, p: &mut Problems) -> Option<RunSpec> {
    let mut f = p.object(node, "a run (an object)")?;
    let mut run = RunSpec::new("");
    let docker = f.get("docker");
    let ucr = f.get("ucr");
    match (docker, ucr) {
        (Some(d), Some(_)) => p.at(
            &d.place,
            "both `docker` and `ucr`: give the image in one of them",
        ),
        (Some(d), None) => {
            places.put("run.image", &d.place);
            docker_image(d, &mut run, places, p);
        }
        (None, Some(u)) => {
            places.put("run.image", &u.place);
            ucr_image(u, &mut run, places, p);
        }
        (None, None) => p.at(
            &node.place,
            "no image: Strata runs every job in a container image; set `run.docker.image` (a plain `cmd` runs in an image such as `busybox`)",
        ),
    }
    super::file::read_run_common(&mut f, &mut run, places, p);
    if let Some(n) = f.get("env") {
        run.env = env(n, "run.env", places, p);
    }
    if let Some(n) = f.get("placement") {
        places.put("run.constraints", &n.place);
        if let Some(mut pl) = p.object(n, "a placement (an object)") {
            if let Some(c) = pl.get("constraints") {
                run.constraints = constraints(c, places, p);
            }
            pl.finish(p, &["constraints"]);
        }
    }
    if let Some(n) = f.get("restart") {
        places.put("run.restart", &n.place);
        if let Some(mut r) = p.object(n, "a restart policy (an object)") {
            if let Some(pol) = r.get("policy") {
                places.put("run.restart.policy", &pol.place);
                if let Some(text) = p.str(pol) {
                    match RestartPolicy::parse(&text) {
                        Some(v) => run.restart.policy = v,
                        None => p.at(
                            &pol.place,
                            format!(
                                "unknown restart policy {text:?}: expected \"NEVER\" or \"ON_FAILURE\""
                            ),
                        ),
                    }
                }
            }
            if let Some(d) = r.get("activeDeadlineSeconds") {
                places.put("run.restart.active_deadline_seconds", &d.place);
                run.restart.active_deadline_seconds =
                    p.int(d, 0, i64::from(u32::MAX)).map(|v| v as u64);
            }
            r.finish(p, &["policy", "activeDeadlineSeconds"]);
        }
    }
    if let Some(n) = f.get("maxLaunchDelay") {
        places.put("run.max_launch_delay_seconds", &n.place);
        if let Some(v) = p.int(n, 0, i64::from(u32::MAX)) {
            run.max_launch_delay_seconds = v as u64;
        }
    }
    if let Some(n) = f.get("taskKillGracePeriodSeconds") {
        places.put("run.kill_grace_seconds", &n.place);
        if let Some(v) = p.f64(n) {
            if (0.0..=3600.0).contains(&v) {
                run.kill_grace_seconds = v.ceil() as u64;
            } else {
                p.at(
                    &n.place,
                    format!("{v} is out of range: expected 0 to 3600 seconds"),
                );
            }
        }
    }
    if let Some(n) = f.get("networks") {
        networks(n, p);
    }
    f.lacks(
        p,
        "artifacts",
        "Strata fetches no URIs into a run: build them into the image",
    );
    f.lacks(p, "gpus", "Strata does not place GPUs");
    f.lacks(
        p,
        "volumes",
        "Strata's jobs have no volumes yet: a run keeps its files in its own directory",
    );
    f.lacks(
        p,
        "secrets",
        "Strata has no secret store yet: give values in `env`",
    );
    f.finish(p, RUN_KEYS);
    Some(run)
}

fn docker_image(node: &Node, run: &mut RunSpec, places: &mut Places, p: &mut Problems) {
    let Some(mut d) = p.object(node, "a docker container (an object)") else {
        return;
    };
    match d.get("image") {
        Some(i) => {
            places.put("run.image", &i.place);
            run.image = p.str(i).unwrap_or_default();
            if run.image.is_empty() {
                p.at(
                    &i.place,
                    "the image is empty: give an image reference, as `busybox:1.36`",
                );
            }
        }
        None => p.at(&node.place, "missing field `image`"),
    }
    if let Some(n) = d.get("forcePullImage") {
        run.force_pull = p.bool(n).unwrap_or_default();
    }
    d.lacks(
        p,
        "privileged",
        "Strata runs no privileged containers: a job gets the default, confined one",
    );
    d.lacks(
        p,
        "parameters",
        "Strata passes no docker run parameters: the runtime's defaults are fixed",
    );
    d.finish(p, &["image", "forcePullImage"]);
}

fn ucr_image(node: &Node, run: &mut RunSpec, places: &mut Places, p: &mut Problems) {
    let Some(mut u) = p.object(node, "a UCR container (an object)") else {
        return;
    };
    match u.get("image") {
        Some(i) => {
            if let Some(mut img) = p.object(i, "an image (an object)") {
                match img.get("id") {
                    Some(id) => {
                        places.put("run.image", &id.place);
                        run.image = p.str(id).unwrap_or_default();
                        if run.image.is_empty() {
                            p.at(
                                &id.place,
                                "the image is empty: give an image reference, as `busybox:1.36`",
                            );
                        }
                    }
                    None => p.at(&i.place, "missing field `id`: the image's reference"),
                }
                if let Some(k) = img.get("kind")
                    && let Some(kind) = p.str(k)
                    && kind != "docker"
                {
                    p.at(
                        &k.place,
                        format!("image kind {kind:?}: Strata runs OCI (docker) images only"),
                    );
                }
                if let Some(n) = img.get("forcePull") {
                    run.force_pull = p.bool(n).unwrap_or_default();
                }
                img.finish(p, &["id", "kind", "forcePull"]);
            }
        }
        None => p.at(&node.place, "missing field `image`"),
    }
    u.lacks(
        p,
        "privileged",
        "Strata runs no privileged containers: a job gets the default, confined one",
    );
    u.finish(p, &["image"]);
}

/// Metronome's constraints: `{attribute, operator, value}` with IS (or its
/// older name EQ), LIKE and UNLIKE; `hostname` is the node's name.
fn constraints(node: &Node, places: &mut Places, p: &mut Problems) -> Vec<Constraint> {
    let mut out = Vec::new();
    for item in p.array(node).unwrap_or_default() {
        let Some(mut c) = p.object(item, "a constraint (an object)") else {
            continue;
        };
        places.put(format!("run.constraints[{}]", out.len()), &item.place);
        let attribute = c.get("attribute").and_then(|n| p.str(n));
        let operator = c.get("operator").and_then(|n| {
            let text = p.str(n)?;
            match text.as_str() {
                "IS" | "EQ" => Some(Operator::Is),
                "LIKE" => Some(Operator::Like),
                "UNLIKE" => Some(Operator::Unlike),
                _ => {
                    p.at(
                        &n.place,
                        format!(
                            "unknown operator {text:?}: expected \"IS\" (or \"EQ\"), \"LIKE\" or \"UNLIKE\""
                        ),
                    );
                    None
                }
            }
        });
        let value = c.get("value").and_then(|n| p.str(n));
        if attribute.is_none() && !c.has("attribute") {
            p.at(&item.place, "missing field `attribute`");
        }
        if operator.is_none() && !c.has("operator") {
            p.at(&item.place, "missing field `operator`");
        }
        c.finish(p, &["attribute", "operator", "value"]);
        if let (Some(field), Some(operator)) = (attribute, operator) {
            out.push(Constraint {
                field,
                operator,
                value,
            });
        }
    }
    out
}

/// `networks`: at most one, which is the overlay every run joins.
fn networks(node: &Node, p: &mut Problems) {
    let Some(items) = p.array(node) else { return };
    if items.len() > 1 {
        p.at(
            &node.place,
            "Strata joins a run to one network: the overlay; give one network",
        );
    }
    for item in items {
        let Some(mut n) = p.object(item, "a network (an object)") else {
            continue;
        };
        if let Some(m) = n.get("mode")
            && let Some(mode) = p.str(m)
            && !["host", "container/bridge", "container"].contains(&mode.as_str())
        {
            p.at(
                &m.place,
                format!(
                    "unknown network mode {mode:?}: expected \"host\", \"container/bridge\" or \"container\""
                ),
            );
        }
        if let Some(name) = n.get("name") {
            p.str(name);
        }
        n.lacks(p, "labels", "Strata's overlay takes no labels");
        n.finish(p, &["mode", "name"]);
    }
}
