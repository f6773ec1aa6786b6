//! What the CLI prints (pure, apart from [`emit`]): JSON with `--json`,
//! else a table or text rendered here. Node and master tables size their
//! columns to fit ([`table`]); the task tables keep fixed widths, as they
//! always had ([`fixed`]).

use std::path::Path;

use serde::Serialize;

use control::access::{JoinTokenCreated, JoinTokenRecord, UserTokenCreated, UserTokenRecord};
use control::audit::AuditRecord;
use control::model::{ClusterStatus, NodeStatus, TaskView};

use crate::images::ImageRecord;
use crate::tasks::TaskInfo;

/// Prints `value` as pretty JSON when `json`, else what `render` makes of
/// it (which ends with its own newline).
pub fn emit<T: Serialize + ?Sized>(
    json: bool,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", render(value));
    }
    Ok(())
}

/// The apps of a valid file, in the order they deploy.
pub fn app_validated(file: &str, apps: &[control::app::AppSpec]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            let ports: Vec<String> = a
                .ports
                .iter()
                .map(|p| {
                    let name = p
                        .name
                        .as_deref()
                        .map(|n| format!("{n}:"))
                        .unwrap_or_default();
                    match (p.container_port, p.host_port) {
                        (Some(c), Some(0)) => format!("{name}{c}->auto"),
                        (Some(c), Some(h)) => format!("{name}{c}->{h}"),
                        (Some(c), None) => format!("{name}{c}"),
                        (None, Some(0)) | (None, None) => format!("{name}auto"),
                        (None, Some(h)) => format!("{name}{h}"),
                    }
                })
                .collect();
            let constraints: Vec<String> = a.constraints.iter().map(|c| c.to_string()).collect();
            vec![
                a.id.to_string(),
                a.image.clone(),
                a.instances.to_string(),
                format!("{}", a.cpus),
                format!("{}", a.mem),
                if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join(",")
                },
                if constraints.is_empty() {
                    "-".into()
                } else {
                    constraints.join("; ")
                },
            ]
        })
        .collect();
    format!(
        "{file}: valid, {} app{} in deploy order\n{}",
        apps.len(),
        if apps.len() == 1 { "" } else { "s" },
        table(
            &[
                "ID",
                "IMAGE",
                "INSTANCES",
                "CPUS",
                "MEM",
                "PORTS",
                "CONSTRAINTS"
            ],
            &rows
        )
    ) + &apps
        .iter()
        .map(|a| exposed(&format!("{} ", a.id), &a.ports))
        .collect::<String>()
}

/// A line per exposure and VIP of `ports`, each starting with `lead`.
fn exposed(lead: &str, ports: &[control::app::PortSpec]) -> String {
    let mut out = String::new();
    for (i, p) in ports.iter().enumerate() {
        for e in &p.expose {
            out += &format!("{lead}ports[{i}] exposed on the public agents: {e}\n");
        }
        for v in &p.vips {
            out += &format!("{lead}ports[{i}] VIP: {v}\n");
        }
    }
    out
}

/// A job file read by `job validate`: the job, and each schedule with its
/// next times (`next` gives them by schedule id, in unix seconds).
pub fn job_validated(
    file: &str,
    job: &control::job::JobSpec,
    next: &dyn Fn(&str) -> Vec<u64>,
) -> String {
    let r = &job.run;
    let command = match (&r.cmd, r.args.is_empty()) {
        (Some(c), _) => c.clone(),
        (None, false) => r.args.join(" "),
        (None, true) => "(the image's)".to_string(),
    };
    let restart = match r.restart.policy {
        control::job::spec::RestartPolicy::OnFailure => "on-failure",
        _ => "never",
    };
    let deadline = r
        .restart
        .active_deadline_seconds
        .map_or_else(|| "-".to_string(), |d| format!("{d}s"));
    let constraints: Vec<String> = r.constraints.iter().map(|c| c.to_string()).collect();
    let mut out = format!(
        "{file}: valid\n{}",
        table(
            &[
                "JOB",
                "IMAGE",
                "COMMAND",
                "CPUS",
                "MEM",
                "RESTART",
                "DEADLINE",
                "CONSTRAINTS"
            ],
            &[vec![
                job.id.to_string(),
                r.image.clone(),
                command,
                format!("{}", r.cpus),
                format!("{}", r.mem),
                restart.to_string(),
                deadline,
                if constraints.is_empty() {
                    "-".into()
                } else {
                    constraints.join("; ")
                },
            ]]
        )
    );
    if job.schedules.is_empty() {
        out.push_str("no schedule: it runs when asked (`strata job run`)\n");
        return out;
    }
    let rows: Vec<Vec<String>> = job
        .schedules
        .iter()
        .map(|s| {
            let times = next(&s.id);
            let policy = serde_json::to_value(s.concurrency_policy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_ascii_lowercase))
                .unwrap_or_default();
            vec![
                s.id.clone(),
                s.cron.clone(),
                s.timezone.clone(),
                policy,
                if s.enabled { "yes" } else { "no" }.to_string(),
                times
                    .first()
                    .map_or_else(|| "never".to_string(), |t| s.local_time(*t)),
                times
                    .first()
                    .map_or_else(|| "-".to_string(), |t| control::job::tz::utc(*t)),
                times
                    .iter()
                    .skip(1)
                    .map(|t| s.local_time(*t))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "SCHEDULE",
            "CRON",
            "ZONE",
            "POLICY",
            "ENABLED",
            "NEXT",
            "NEXT (UTC)",
            "THEN",
        ],
        &rows,
    ));
    out
}

/// How a run ended or where it is, short: `succeeded`, `failed: exited
/// (exit code 3)`, `active on a1`.
fn run_outcome(r: &control::job::record::RunRecord) -> String {
    use control::job::record::RunState;
    match r.state {
        RunState::Queued | RunState::Active => {
            let mut out = r.state.to_string();
            if let Some(a) = r.attempts.last().filter(|a| a.finished_at.is_none()) {
                out.push_str(&format!(" on {}", a.node));
            }
            if let Some(w) = &r.waiting {
                out.push_str(&format!(" ({w})"));
            }
            if r.stop.is_some() {
                out.push_str(", stopping");
            }
            out
        }
        // The reason says it was skipped, and why.
        RunState::Skipped => r
            .reason
            .as_ref()
            .map_or_else(|| r.state.to_string(), |reason| reason.to_string()),
        _ => {
            let mut out = r.state.to_string();
            if let Some(reason) = &r.reason {
                out.push_str(&format!(": {reason}"));
            }
            if let Some(c) = r.exit_code {
                out.push_str(&format!(" (exit code {c})"));
            }
            out
        }
    }
}

/// What started a run: `manual (admin)` or `schedule nightly`.
fn run_trigger(r: &control::job::record::RunRecord) -> String {
    use control::job::record::Trigger;
    match &r.trigger {
        Trigger::Manual { by } => format!("manual ({by})"),
        Trigger::Schedule { schedule, .. } => format!("schedule {schedule}"),
        Trigger::Unknown => "-".into(),
    }
}

/// A unix second in UTC, `-` when absent.
fn utc_or_dash(t: Option<u64>) -> String {
    t.map_or_else(|| "-".into(), control::job::tz::utc)
}

/// `strata job list`.
pub fn job_list(jobs: &[control::job::view::JobView]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            let next = j
                .schedules
                .iter()
                .filter_map(|s| s.next.map(|t| (t, &s.id)))
                .min();
            let schedules = if j.schedules.is_empty() {
                "-".to_string()
            } else {
                j.schedules
                    .iter()
                    .map(|s| {
                        format!(
                            "{} ({}{})",
                            s.id,
                            s.cron,
                            if s.enabled { "" } else { ", disabled" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let going = j.runs.iter().filter(|r| r.going()).count();
            let last = j.runs.iter().rev().find(|r| r.state.ended());
            vec![
                j.record.spec.id.to_string(),
                if j.record.removing {
                    format!("{schedules} (removing)")
                } else {
                    schedules
                },
                next.map_or_else(
                    || "-".to_string(),
                    |(t, id)| format!("{} ({id})", control::job::tz::utc(t)),
                ),
                going.to_string(),
                last.map_or_else(
                    || "-".to_string(),
                    |r| format!("{} {}", r.id, run_outcome(r)),
                ),
            ]
        })
        .collect();
    table(
        &["JOB", "SCHEDULES", "NEXT RUN (UTC)", "GOING", "LAST RUN"],
        &rows,
    )
}

/// `strata job show`.
pub fn job_show(j: &control::job::view::JobView) -> String {
    let spec = &j.record.spec;
    let r = &spec.run;
    let mut out = format!(
        "job {} (version {}){}\n",
        spec.id,
        j.record.version,
        if j.record.removing {
            ", being removed"
        } else {
            ""
        }
    );
    if let Some(d) = &spec.description {
        out.push_str(&format!("  {d}\n"));
    }
    let command = match (&r.cmd, r.args.is_empty()) {
        (Some(c), _) => c.clone(),
        (None, false) => r.args.join(" "),
        (None, true) => "(the image's)".to_string(),
    };
    out.push_str(&format!(
        "  image {}, command `{command}`, {} cpus, {} MiB\n",
        r.image, r.cpus, r.mem
    ));
    if !j.schedules.is_empty() {
        let rows: Vec<Vec<String>> = j
            .schedules
            .iter()
            .map(|s| {
                vec![
                    s.id.clone(),
                    s.cron.clone(),
                    s.timezone.clone(),
                    if s.enabled { "yes" } else { "no" }.to_string(),
                    utc_or_dash(s.next),
                    s.skipped_unrecorded.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "SCHEDULE",
                "CRON",
                "ZONE",
                "ENABLED",
                "NEXT (UTC)",
                "UNRECORDED SKIPS",
            ],
            &rows,
        ));
    }
    if j.runs.is_empty() {
        out.push_str("no run yet\n");
    } else {
        out.push_str(&run_history(&j.runs));
    }
    out
}

/// `strata job history`.
pub fn run_history(runs: &[control::job::record::RunRecord]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let a = r.attempts.last();
            vec![
                r.id.to_string(),
                run_trigger(r),
                a.map_or_else(|| "-".to_string(), |a| a.node.clone()),
                r.attempts.len().to_string(),
                utc_or_dash(a.and_then(|a| a.started_at)),
                utc_or_dash(r.finished_at),
                run_outcome(r),
            ]
        })
        .collect();
    table(
        &[
            "RUN", "TRIGGER", "NODE", "ATTEMPTS", "STARTED", "FINISHED", "RESULT",
        ],
        &rows,
    )
}

/// Where a run waited on by `job run --wait` is.
pub fn run_progress(r: &control::job::record::RunRecord) -> String {
    format!("run {} of job {}: {}", r.id, r.job, run_outcome(r))
}

/// How a run waited on by `job run --wait` ended.
pub fn run_ended(r: &control::job::record::RunRecord) -> String {
    let node = r
        .attempts
        .last()
        .map_or_else(String::new, |a| format!(" on {}", a.node));
    format!("run {} of job {}{node}: {}\n", r.id, r.job, run_outcome(r))
}

/// What a deploy (scale, restart, rollback) started, per app; with
/// `dry_run`, the steps it would take.
pub fn deploy_outcomes(outcomes: &[control::app::record::DeployOutcome], dry_run: bool) -> String {
    let mut out = String::new();
    for o in outcomes {
        match &o.deployment {
            None => out += &format!("{}: unchanged (version {})\n", o.app, o.version),
            Some(d) => {
                let verb = if dry_run { "would deploy" } else { "deploying" };
                out += &format!(
                    "{}: {verb} version {} by deployment {} ({:?}{})\n",
                    o.app,
                    o.version,
                    d.id,
                    d.kind,
                    if d.canary > 0 {
                        format!(", {} canaries", d.canary)
                    } else {
                        String::new()
                    }
                );
                for step in &o.steps {
                    out += &format!("  {step}\n");
                }
            }
        }
    }
    if dry_run {
        out += "dry run: nothing was stored\n";
    }
    out
}

/// `strata app list`.
pub fn app_list(apps: &[control::app::record::AppView]) -> String {
    let rows: Vec<Vec<String>> = apps
        .iter()
        .map(|a| {
            let r = &a.record;
            vec![
                r.spec.id.to_string(),
                format!("{}/{}", a.healthy(), r.spec.instances),
                r.version.to_string(),
                r.deployment()
                    .map_or("-".into(), |d| format!("{} {}", d.id, d.state)),
                if r.removing {
                    "removing".into()
                } else {
                    r.waiting.clone().unwrap_or_else(|| "-".into())
                },
            ]
        })
        .collect();
    table(
        &["ID", "HEALTHY", "VERSION", "DEPLOYMENT", "WAITING"],
        &rows,
    )
}

/// `strata app show`.
pub fn app_show(a: &control::app::record::AppView, now: u64) -> String {
    let r = &a.record;
    let mut out = format!(
        "id:          {}\nimage:       {}\ninstances:   {} healthy, {} running, {} asked\nversion:     {} (definition of version {})\nresources:   {} cpus, {} MiB memory, {} MiB disk per instance\n",
        r.spec.id,
        r.spec.image,
        a.healthy(),
        a.running(),
        r.spec.instances,
        r.version,
        r.config_version,
        r.spec.cpus,
        r.spec.mem,
        r.spec.disk
    );
    if !r.spec.constraints.is_empty() {
        let c: Vec<String> = r.spec.constraints.iter().map(|c| c.to_string()).collect();
        out += &format!("constraints: {}\n", c.join("; "));
    }
    let mut ports = if a.exposed.is_empty() {
        exposed("", &r.spec.ports)
    } else {
        // Where outside clients reach each exposed port, then the VIPs.
        let mut out = String::new();
        for e in &a.exposed {
            let at = if e.at.is_empty() {
                String::new()
            } else {
                format!(" at {}", e.at.join(", "))
            };
            let note = e.note.as_ref().map_or(String::new(), |n| format!(" ({n})"));
            out += &format!("ports[{}] {}{at}{note}\n", e.port_index, e.url);
        }
        for (i, p) in r.spec.ports.iter().enumerate() {
            for v in &p.vips {
                out += &format!("ports[{i}] VIP: {v}\n");
            }
        }
        out
    };
    for (name, address) in &a.vip_addresses {
        ports += &format!("VIP {name} is {address}\n");
    }
    if !ports.is_empty() {
        out += "\nexposed:\n";
        out += &indent(&ports);
        out += "\n";
    }
    if r.removing {
        out += "removing:    its instances stop, then it goes\n";
    }
    if let Some(w) = &r.waiting {
        out += &format!("waiting:     {w}\n");
    }
    if r.launches.failures > 0 {
        out += &format!(
            "backoff:     {} failed launch{} in a row, the last {} ago\n",
            r.launches.failures,
            if r.launches.failures == 1 { "" } else { "es" },
            age(now.saturating_sub(r.launches.last_failure_at))
        );
    }
    if !r.deployments.is_empty() {
        out += "\ndeployments:\n";
        out += &indent(&deployment_list(&r.deployments, now));
    }
    if !a.instances.is_empty() {
        let rows: Vec<Vec<String>> = a
            .instances
            .iter()
            .map(|i| {
                vec![
                    i.id.clone(),
                    i.node.clone(),
                    i.version.to_string(),
                    if i.stopping {
                        format!("{} (stopping)", i.state)
                    } else {
                        i.state.to_string()
                    },
                    i.health.as_str().to_string(),
                    i.address.map_or("-".into(), |a| a.to_string()),
                    if i.host_ports.is_empty() {
                        "-".into()
                    } else {
                        i.host_ports
                            .iter()
                            .map(u16::to_string)
                            .collect::<Vec<_>>()
                            .join(",")
                    },
                ]
            })
            .collect();
        out += "\ninstances:\n";
        out += &indent(&table(
            &[
                "ID",
                "NODE",
                "VERSION",
                "STATE",
                "HEALTH",
                "ADDRESS",
                "HOST PORTS",
            ],
            &rows,
        ));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `strata app versions`.
pub fn app_versions(versions: &[control::app::record::AppVersion]) -> String {
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                v.version.to_string(),
                v.config_version.to_string(),
                format!("{:?}", v.kind).to_lowercase(),
                v.spec.instances.to_string(),
                v.spec.image.clone(),
                v.at.to_string(),
            ]
        })
        .collect();
    table(
        &["VERSION", "DEFINITION", "KIND", "INSTANCES", "IMAGE", "AT"],
        &rows,
    )
}

/// `strata deployment list` (and `show`).
pub fn deployment_list(deployments: &[control::deploy::Deployment], now: u64) -> String {
    let rows: Vec<Vec<String>> = deployments
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                format!("{:?}", d.kind).to_lowercase(),
                d.version.to_string(),
                d.state.to_string(),
                age(now.saturating_sub(d.started_at)),
                d.reason.clone().unwrap_or_else(|| {
                    if d.canary > 0 {
                        format!(
                            "{} canaries{}",
                            d.canary,
                            if d.promoted { ", promoted" } else { "" }
                        )
                    } else {
                        "-".into()
                    }
                }),
            ]
        })
        .collect();
    table(&["ID", "KIND", "VERSION", "STATE", "AGE", "DETAIL"], &rows)
}

/// Formats rows as left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    for r in rows {
        out.push(line(r.iter().map(String::as_str).collect()));
    }
    out.join("\n") + "\n"
}

/// How a column of a [`fixed`] table pads its cells.
#[derive(Debug, Clone, Copy)]
pub enum Pad {
    /// Left-aligned, padded to this many characters.
    Left(usize),
    /// Right-aligned (numbers), padded to this many characters.
    Right(usize),
    /// Not padded: the last column.
    None,
}

/// One column of a [`fixed`] table: its header, its padding, and the
/// separator that follows it.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub header: &'static str,
    pub pad: Pad,
    pub then: &'static str,
}

/// Formats rows as fixed-width columns: each cell (the header's too) padded
/// as its column says and followed by its separator, nothing trimmed, a
/// cell wider than its column pushing the rest of its line right.
pub fn fixed(columns: &[Column], rows: &[Vec<String>]) -> String {
    let header: Vec<&str> = columns.iter().map(|c| c.header).collect();
    let mut out = fixed_line(columns, &header);
    for r in rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        out.push_str(&fixed_line(columns, &cells));
    }
    out
}

/// One line of a [`fixed`] table, with its newline.
fn fixed_line(columns: &[Column], cells: &[&str]) -> String {
    let mut s = String::new();
    for (column, cell) in columns.iter().zip(cells) {
        match column.pad {
            Pad::Left(w) => s.push_str(&format!("{cell:<w$}")),
            Pad::Right(w) => s.push_str(&format!("{cell:>w$}")),
            Pad::None => s.push_str(cell),
        }
        s.push_str(column.then);
    }
    s.push('\n');
    s
}

const fn column(header: &'static str, pad: Pad, then: &'static str) -> Column {
    Column { header, pad, then }
}

/// The columns of `strata task list` against the cluster.
const CLUSTER_TASKS: [Column; 9] = [
    column("ID", Pad::Left(24), " "),
    column("NODE", Pad::Left(16), " "),
    column("STATE", Pad::Left(10), " "),
    column("ADDRESS", Pad::Left(15), " "),
    column("PID", Pad::Right(8), " "),
    column("RESTARTS", Pad::Right(8), " "),
    column("EXIT", Pad::Right(5), "  "),
    column("APP:PORTS", Pad::Left(20), " "),
    column("IMAGE", Pad::None, ""),
];

/// The columns of `strata task list` on this node.
const NODE_TASKS: [Column; 6] = [
    column("ID", Pad::Left(24), " "),
    column("STATE", Pad::Left(10), " "),
    column("PID", Pad::Right(8), " "),
    column("RESTARTS", Pad::Right(8), " "),
    column("EXIT", Pad::Right(5), "  "),
    column("IMAGE", Pad::None, ""),
];

/// A byte count in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `strata edge cert list`: hosts, names, how long each stays valid.
pub fn edge_certs(certs: &[control::edge::EdgeCertView], now: u64) -> String {
    if certs.is_empty() {
        return "no edge certificates: `strata edge cert set HOST FILE` serves a host over HTTPS\n"
            .into();
    }
    let rows: Vec<Vec<String>> = certs
        .iter()
        .map(|c| {
            let valid = if c.not_after <= now {
                "EXPIRED".to_string()
            } else {
                age(c.not_after - now)
            };
            vec![
                c.host.clone(),
                c.names.join(","),
                valid,
                c.sha256.chars().take(16).collect(),
                c.set_by.clone(),
            ]
        })
        .collect();
    table(&["HOST", "NAMES", "VALID FOR", "SHA256", "SET BY"], &rows)
}

/// A duration in seconds, short.
pub fn age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// An optional number, `-` when absent.
fn or_dash(n: Option<impl ToString>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// `strata node list`.
pub fn node_list(nodes: &[NodeStatus], now: u64) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let i = &n.record.info;
            vec![
                i.name.clone(),
                i.role.to_string(),
                match &n.cordon {
                    // As kubectl shows a cordoned node.
                    Some(_) => format!("{},Drained", n.state),
                    None => n.state.to_string(),
                },
                i.addresses.first().cloned().unwrap_or_else(|| "-".into()),
                i.cpus.to_string(),
                bytes(i.memory_bytes),
                n.ready_since
                    .map_or_else(|| "-".into(), |s| age(now.saturating_sub(s))),
                i.image
                    .as_ref()
                    .map_or_else(|| "-".into(), |m| m.version.clone()),
                i.image.as_ref().map_or_else(
                    || "-".into(),
                    |m| format!("{} ({} {})", m.booted, m.other.slot, m.other.state),
                ),
                upgrade_cell(n),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ROLE",
            "STATE",
            "ADDRESS",
            "CPUS",
            "MEMORY",
            "READY FOR",
            "VERSION",
            "SLOT",
            "UPGRADE",
        ],
        &rows,
    )
}

/// A node's last order in one cell: `0.2.0 rebooting`, `rollback failed`.
fn upgrade_cell(n: &NodeStatus) -> String {
    let Some(o) = &n.upgrade else {
        return "-".into();
    };
    let what = match &o.action {
        control::upgrade::Action::Install { version, .. } => version.clone(),
        control::upgrade::Action::Rollback => "rollback".into(),
        control::upgrade::Action::Unknown => "?".into(),
    };
    let progress = match &o.progress {
        control::upgrade::Progress::Failed { .. } => "failed".to_string(),
        p => p.to_string(),
    };
    format!("{what} {progress}")
}

/// A node's image and its last order, as `node show` prints them.
fn node_image(n: &NodeStatus, now: u64, kv: &mut dyn FnMut(&str, String)) {
    if let Some(m) = &n.record.info.image {
        kv("version:", m.version.clone());
        kv("booted slot:", m.booted.to_string());
        kv(
            "other slot:",
            format!(
                "{} {}{}",
                m.other.slot,
                m.other.state,
                m.other
                    .version
                    .as_ref()
                    .map_or_else(String::new, |v| format!(" ({v})"))
            ),
        );
        if let Some(r) = &m.last_upgrade {
            use image::slot::UpgradeResult as R;
            kv(
                "last upgrade:",
                match r {
                    R::Succeeded { slot, version } => {
                        format!("{version} into slot {slot}: succeeded")
                    }
                    R::Trying { slot, version } => {
                        format!("{version} into slot {slot}: booted, waiting to be blessed")
                    }
                    R::RolledBack {
                        slot,
                        version,
                        reason,
                    } => format!("{version} into slot {slot}: rolled back: {reason}"),
                    R::Pending { slot, version } => {
                        format!("{version} into slot {slot}: written, not booted")
                    }
                    R::Interrupted { slot, version } => {
                        format!("{version} into slot {slot}: interrupted while writing")
                    }
                    R::Unknown => "unknown".into(),
                },
            );
        }
    }
    if let Some(o) = &n.upgrade {
        let what = match &o.action {
            control::upgrade::Action::Install {
                version, sha256, ..
            } => {
                format!("upgrade to {version} ({})", &sha256[..12.min(sha256.len())])
            }
            control::upgrade::Action::Rollback => "rollback".into(),
            control::upgrade::Action::Unknown => "unknown action".into(),
        };
        kv(
            "order:",
            format!(
                "{what} by {}, {} ago: {}",
                o.by,
                age(now.saturating_sub(o.at)),
                o.progress
            ),
        );
    }
}

/// `strata node show NAME`.
/// `strata node firewall NAME`.
pub fn node_firewall(name: &str, r: &control::firewall::FirewallReport, now: u64) -> String {
    let rows: Vec<Vec<String>> = r
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            vec![
                i.to_string(),
                rule.rule.clone(),
                rule.packets.to_string(),
                bytes(rule.bytes),
            ]
        })
        .collect();
    let mut out = format!(
        "node {name}: applied {} ago, counted {} ago; dropped {} packet{} ({})\n",
        age(now.saturating_sub(r.applied_at)),
        age(now.saturating_sub(r.read_at)),
        r.dropped.packets,
        if r.dropped.packets == 1 { "" } else { "s" },
        bytes(r.dropped.bytes)
    );
    if let Some(why) = &r.rolled_back {
        out += &format!("rolled back: {why}\n");
    }
    for set in &r.sets {
        out += &format!("{set}\n");
    }
    out + &table(&["#", "RULE", "PACKETS", "BYTES"], &rows)
}

pub fn node_show(n: &NodeStatus, now: u64) -> String {
    let i = &n.record.info;
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    kv("name:", i.name.clone());
    kv("role:", i.role.to_string());
    kv("state:", n.state.to_string());
    if let Some(s) = n.ready_since {
        kv("ready for:", age(now.saturating_sub(s)));
    }
    if let Some(c) = &n.cordon {
        kv(
            "drained:",
            format!(
                "{} ago by {}; what still runs there is stopped {}",
                age(now.saturating_sub(c.since)),
                c.by,
                if c.deadline > now {
                    format!("in {}", age(c.deadline - now))
                } else {
                    "now".to_string()
                }
            ),
        );
    }
    kv("addresses:", i.addresses.join(", "));
    if let Some(s) = n.subnet {
        kv("subnet:", s.to_string());
    }
    kv("cpus:", i.cpus.to_string());
    kv("memory:", bytes(i.memory_bytes));
    kv("disk:", bytes(i.disk_bytes));
    kv(
        "joined:",
        format!("{} ago", age(now.saturating_sub(n.record.joined_at))),
    );
    kv(
        "registered:",
        format!("{} ago", age(now.saturating_sub(n.record.registered_at))),
    );
    kv("key sha256:", n.record.key_sha256.clone());
    for (k, v) in &i.attributes {
        kv("attribute:", format!("{k}={v}"));
    }
    node_image(n, now, &mut kv);
    out
}

/// `strata bundle list`.
pub fn bundle_list(bundles: &[control::upgrade::BundleRecord], now: u64) -> String {
    let rows: Vec<Vec<String>> = bundles
        .iter()
        .map(|b| {
            vec![
                b.version.clone(),
                b.role.to_string(),
                bytes(b.size),
                b.sha256.clone(),
                b.holders.join(","),
                format!("{} ago", age(now.saturating_sub(b.pushed_at))),
            ]
        })
        .collect();
    table(
        &["VERSION", "ROLE", "SIZE", "SHA256", "MASTERS", "PUSHED"],
        &rows,
    )
}

/// `strata cluster upgrade --status`: the rollout, then a row per node.
pub fn rollout(r: &control::rollout::Rollout, now: u64) -> String {
    let done = r.nodes.iter().filter(|p| {
        matches!(
            p.step,
            control::rollout::Step::Done | control::rollout::Step::Skipped
        )
    });
    let mut out = format!(
        "cluster upgrade to {}{}, started {} ago: {} of {} nodes done, at most {} agent(s) out at once\n",
        r.version,
        if r.by.is_empty() {
            String::new()
        } else {
            format!(" by {}", r.by)
        },
        age(now.saturating_sub(r.started_at)),
        done.count(),
        r.nodes.len(),
        r.max_unavailable
    );
    // A halt without a node is a cancel too (an older master does not
    // keep `cancelled_by`).
    if let Some(h) = r
        .halted
        .as_ref()
        .filter(|h| h.cancelled_by.is_some() || h.node.is_empty())
    {
        out += &format!(
            "HALTED: {}{}\n  `strata cluster upgrade --resume` goes on\n",
            h.reason,
            if h.node.is_empty() {
                String::new()
            } else {
                format!(
                    " while {} was in flight (it finishes its own upgrade)",
                    h.node
                )
            }
        );
    } else if let Some(h) = &r.halted {
        out += &format!(
            "HALTED at {}: {}\n  fix it, then `strata cluster upgrade --resume` tries {} again and goes on\n",
            h.node, h.reason, h.node
        );
    }
    let rows: Vec<Vec<String>> = r
        .nodes
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.role.to_string(),
                p.step.to_string(),
                age(now.saturating_sub(p.since)),
            ]
        })
        .collect();
    out + &table(&["NODE", "ROLE", "STEP", "FOR"], &rows)
}

/// `strata cluster status`.
pub fn cluster_status(s: &ClusterStatus, now: u64) -> String {
    let mut out = format!(
        "cluster {}: etcd {}, leader {}, {}/{} node(s) Ready (answered by {})\n",
        s.cluster,
        if s.etcd_quorum {
            "healthy"
        } else {
            "WITHOUT QUORUM"
        },
        s.etcd_leader.as_deref().unwrap_or("none"),
        s.nodes_ready,
        s.nodes_total,
        s.answered_by
    );
    if !s.etcd_alarms.is_empty() {
        out.push_str(&format!("etcd ALARMS: {}\n", s.etcd_alarms.join(", ")));
        if s.etcd_alarms.iter().any(|a| a.starts_with("NOSPACE")) {
            out.push_str(
                "  NOSPACE: etcd's backend quota is used up and it refuses writes until space is freed (compaction, defragmentation) and the alarm disarmed\n",
            );
        }
    }
    match &s.scheduler_leader {
        Some(l) => out.push_str(&format!(
            "scheduler: led by {} for {}\n",
            l.name,
            age(now.saturating_sub(l.since))
        )),
        None => out.push_str("scheduler: NO LEADER (a master takes over within seconds)\n"),
    }
    if let Some(r) = &s.cert_rotation {
        out.push_str(&format!(
            "last certificate rotation: {} ago, by {}\n",
            age(now.saturating_sub(r.at)),
            r.requested_by
        ));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .masters
        .iter()
        .map(|m| {
            let cert = s.master_certs.get(&m.name).map_or_else(
                || "-".to_string(),
                |c| {
                    format!(
                        "signed {} ago, expires {}",
                        age(now.saturating_sub(c.issued_at)),
                        expiry(Some(c.not_after), now)
                    )
                },
            );
            vec![
                m.name.clone(),
                m.endpoint.clone(),
                if m.healthy {
                    "healthy".into()
                } else {
                    "unhealthy".into()
                },
                if m.leader { "yes".into() } else { "no".into() },
                cert,
                m.version
                    .clone()
                    .or_else(|| m.error.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "MASTER",
            "ETCD ENDPOINT",
            "HEALTH",
            "LEADER",
            "API CERTIFICATE",
            "VERSION/ERROR",
        ],
        &rows,
    ));
    // Masters that are not etcd members (an external etcd).
    let others: Vec<String> = s
        .master_certs
        .iter()
        .filter(|(name, _)| !s.masters.iter().any(|m| &m.name == *name))
        .map(|(name, c)| {
            format!(
                "master {name}: API certificate signed {} ago, expires {}\n",
                age(now.saturating_sub(c.issued_at)),
                expiry(Some(c.not_after), now)
            )
        })
        .collect();
    if !others.is_empty() {
        out.push('\n');
        out.extend(others);
    }
    out
}

/// The `strata task list` table of the cluster's tasks.
pub fn task_list(tasks: &[TaskView]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let ports: Vec<String> = t.ports.iter().map(u16::to_string).collect();
            let app = match (&t.app, ports.is_empty()) {
                (None, true) => "-".to_string(),
                (app, _) => format!("{}:{}", app.as_deref().unwrap_or("-"), ports.join(",")),
            };
            vec![
                t.id.clone(),
                t.node.clone(),
                t.state.to_string(),
                or_dash(t.address),
                or_dash(t.pid),
                t.restarts.to_string(),
                or_dash(t.exit_code),
                app,
                t.image.clone(),
            ]
        })
        .collect();
    fixed(&CLUSTER_TASKS, &rows)
}

/// The `strata task list` table of the tasks in this node's state
/// directory.
pub fn local_task_list(tasks: &[TaskInfo]) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.state.to_string(),
                or_dash(t.pid),
                t.restarts.to_string(),
                or_dash(t.exit_code),
                t.image.clone(),
            ]
        })
        .collect();
    fixed(&NODE_TASKS, &rows)
}

/// When a token expires, seen at `now`: `never`, `in 1h`, `5m ago`.
fn expiry(expires_at: Option<u64>, now: u64) -> String {
    match expires_at {
        None => "never".to_string(),
        Some(t) if t > now => format!("in {}", age(t - now)),
        Some(t) => format!("{} ago", age(now - t)),
    }
}

/// A join token's uses: `used/limit`, or `used` of an unlimited one.
fn uses(t: &JoinTokenRecord) -> String {
    match t.uses_left {
        Some(left) => format!("{}/{}", t.used, t.used.saturating_add(left)),
        None => "unlimited".to_string(),
    }
}

/// `strata cluster token list`.
pub fn join_token_list(tokens: &[JoinTokenRecord], now: u64) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.state(now).to_string(),
                uses(t),
                expiry(t.expires_at, now),
                format!("{} ago", age(now.saturating_sub(t.created_at))),
                t.created_by.clone(),
                t.description.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATE",
            "USES",
            "EXPIRES",
            "CREATED",
            "CREATED BY",
            "DESCRIPTION",
        ],
        &rows,
    )
}

/// `strata cluster token create`: the token, shown this once.
pub fn join_token_created(c: &JoinTokenCreated, now: u64) -> String {
    let r = &c.record;
    format!(
        "join token {} (uses: {}, expires: {}):\n{}\n\
         It is shown only now. A node joins with it as the `join_token` of its user-data.\n",
        r.id,
        uses(r),
        expiry(r.expires_at, now),
        c.token
    )
}

/// `strata user token list`.
pub fn user_token_list(tokens: &[UserTokenRecord], now: u64) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.role.to_string(),
                t.state(now).to_string(),
                expiry(t.expires_at, now),
                format!("{} ago", age(now.saturating_sub(t.created_at))),
                t.created_by.clone(),
                t.name.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ROLE",
            "STATE",
            "EXPIRES",
            "CREATED",
            "CREATED BY",
            "NAME",
        ],
        &rows,
    )
}

/// `strata audit list`: one line per record, oldest first; the time is
/// how long ago (`now_ms`: Unix milliseconds).
pub fn audit_list(records: &[AuditRecord], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                format!("{} ago", age(now_ms.saturating_sub(r.at_ms) / 1000)),
                r.who.clone(),
                r.role.map(|role| role.to_string()).unwrap_or_default(),
                r.from.clone(),
                format!("{} {}", r.method, r.path),
                r.status.to_string(),
                r.master.clone(),
                r.detail.clone(),
            ]
        })
        .collect();
    table(
        &[
            "WHEN", "WHO", "ROLE", "FROM", "REQUEST", "STATUS", "MASTER", "DETAIL",
        ],
        &rows,
    )
}

/// `strata user token create`: the token, shown this once, and how to use
/// it (with the context written to `context`, when one was).
pub fn user_token_created(c: &UserTokenCreated, context: Option<&Path>, now: u64) -> String {
    let r = &c.record;
    let how = match context {
        Some(path) => format!(
            "The CLI uses it with --context {} (or STRATA_CONTEXT).",
            path.display()
        ),
        None => "It goes into a copy of a CLI context: its `token_file` names the file that \
                 holds it (or let --write-context FILE write one)."
            .to_string(),
    };
    format!(
        "user token {} (role {}, expires: {}):\n{}\nIt is shown only now. {how}\n",
        r.id,
        r.role,
        expiry(r.expires_at, now),
        c.token
    )
}

/// One stored image: what `strata image pull`, `import` and `list` print.
pub fn image_line(rec: &ImageRecord) -> String {
    format!(
        "{} {} ({} layers)",
        rec.name,
        rec.config_digest,
        rec.layers.len()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use configs::Role;
    use control::model::{
        Alive, ClusterStatus, MasterStatus, NodeInfo, NodeRecord, TaskView, node_statuses,
    };
    use control::task::TaskState;
    use expect_test::expect;

    use super::{
        audit_list, cluster_status, join_token_created, join_token_list, node_list, node_show,
        task_list, user_token_created, user_token_list,
    };

    #[test]
    fn a_validated_job_shows_its_run_and_each_schedule_next_times() {
        let file = control::job::read(
            "nightly.toml",
            "id = \"backup.nightly\"\n[run]\nimage = \"busybox:1.36\"\ncmd = \"echo dump\"\nrestart = { policy = \"on-failure\", active_deadline_seconds = 600 }\nconstraints = [[\"rack\", \"IS\", \"r1\"]]\n\n[[schedules]]\nid = \"nightly\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"\n\n[[schedules]]\nid = \"paused\"\ncron = \"0 * * * *\"\nenabled = false\nconcurrency_policy = \"allow\"\n",
        )
        .expect("a valid job");
        // 2026-12-03T01:30Z and the two days after; 02:00Z.
        let next = |s: &str| match s {
            "nightly" => vec![1_796_261_400, 1_796_347_800, 1_796_434_200],
            _ => vec![1_796_263_200],
        };
        expect![[r#"
            nightly.toml: valid
            JOB             IMAGE         COMMAND    CPUS  MEM  RESTART     DEADLINE  CONSTRAINTS
            backup.nightly  busybox:1.36  echo dump  1     128  on-failure  600s      rack IS r1
            SCHEDULE  CRON        ZONE          POLICY  ENABLED  NEXT                  NEXT (UTC)            THEN
            nightly   30 2 * * *  Europe/Paris  forbid  yes      2026-12-03 02:30 CET  2026-12-03T01:30:00Z  2026-12-04 02:30 CET, 2026-12-05 02:30 CET
            paused    0 * * * *   UTC           allow   no       2026-12-03 02:00 UTC  2026-12-03T02:00:00Z
        "#]].assert_eq(&super::job_validated("nightly.toml", &file.job, &next));
    }

    #[test]
    fn a_validated_app_lists_what_it_exposes_and_its_vips() {
        let file = control::app::read(
            "web.toml",
            "id = \"/shop/web\"\nimage = \"nginx:1\"\ninstances = 2\n[[ports]]\ncontainer_port = 80\nvips = [\"shop-web:80\"]\nexpose = [{ host = \"shop.example.com\", path = \"/api\" }, { tcp = 10100 }]\n",
        )
        .expect("a valid app");
        expect![[r#"
            web.toml: valid, 1 app in deploy order
            ID         IMAGE    INSTANCES  CPUS  MEM  PORTS  CONSTRAINTS
            /shop/web  nginx:1  2          1     128  80     -
            /shop/web ports[0] exposed on the public agents: http://shop.example.com/api
            /shop/web ports[0] exposed on the public agents: tcp :10100
            /shop/web ports[0] VIP: shop-web:80
        "#]]
        .assert_eq(&super::app_validated("web.toml", &file.apps));
    }

    #[test]
    fn a_node_firewall_shows_each_rule_with_its_counters() {
        use control::firewall::{Counter, FirewallInput, OverlayInput};
        let input = FirewallInput {
            role: configs::role::Firewall {
                tcp: vec![9464],
                udp: vec![],
                from: configs::role::Reach::Nodes,
            },
            overlay: Some(OverlayInput {
                vxlan_port: 4789,
                nodes: vec![
                    "10.9.0.10".parse().expect("ip"),
                    "10.9.0.21".parse().expect("ip"),
                ],
                bridge: "strata-br".into(),
                vxlan: "strata-vx".into(),
                gateway: "10.200.1.1".parse().expect("ip"),
            }),
            ..FirewallInput::default()
        };
        let plan = control::firewall::plan(&input);
        let counters = BTreeMap::from([
            (
                0,
                Counter {
                    packets: 1200,
                    bytes: 90_000,
                },
            ),
            (
                8,
                Counter {
                    packets: 310,
                    bytes: 48_000,
                },
            ),
            (
                plan.rules.len() - 1,
                Counter {
                    packets: 3,
                    bytes: 180,
                },
            ),
        ]);
        let report = plan.report(&counters, 1_796_000_000, 1_796_000_100);
        expect![[r#"
            node agent-1: applied 2m ago, counted 30s ago; dropped 3 packets (180 B)
            set nodes: 10.9.0.10, 10.9.0.21
            #   RULE                                                                         PACKETS  BYTES
            0   accept established and related                                               1200     87.9 KiB
            1   drop invalid                                                                 0        0 B
            2   accept loopback                                                              0        0 B
            3   accept icmp and icmpv6 errors, echo requests, neighbour discovery            0        0 B
            4   accept udp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)  0        0 B
            5   accept tcp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)  0        0 B
            6   drop everything else from strata-br, strata-vx                               0        0 B
            7   accept dhcp and dhcpv6 replies                                               0        0 B
            8   accept udp 4789 from the nodes (VXLAN)                                       310      46.9 KiB
            9   accept tcp 9464 from the nodes (the role's ports)                            0        0 B
            10  drop and count everything else                                               3        180 B
        "#]].assert_eq(&super::node_firewall("agent-1", &report, 1_796_000_130));
    }

    #[test]
    fn cluster_status_with_and_without_alarms() {
        let master = |name: &str, leader: bool| MasterStatus {
            name: name.into(),
            endpoint: "https://10.9.0.10:2379".into(),
            healthy: true,
            leader,
            version: Some("3.4.23".into()),
            error: None,
        };
        let mut status = ClusterStatus {
            format: Default::default(),
            cluster: "demo".into(),
            answered_by: "m1".into(),
            masters: vec![master("m1", true)],
            etcd_leader: Some("m1".into()),
            etcd_quorum: true,
            nodes_ready: 3,
            nodes_total: 3,
            etcd_alarms: Vec::new(),
            cert_rotation: None,
            master_certs: Default::default(),
            scheduler_leader: Some(control::app::record::LeaderRecord {
                format: Default::default(),
                name: "m1".into(),
                since: 999_000,
            }),
        };
        expect![[r#"
            cluster demo: etcd healthy, leader m1, 3/3 node(s) Ready (answered by m1)
            scheduler: led by m1 for 16m

            MASTER  ETCD ENDPOINT           HEALTH   LEADER  API CERTIFICATE  VERSION/ERROR
            m1      https://10.9.0.10:2379  healthy  yes     -                3.4.23
        "#]]
        .assert_eq(&cluster_status(&status, 1_000_000));
        // Without alarms the JSON is what readers before alarms read.
        expect![[r#"{"cluster":"demo","answered_by":"m1","masters":[{"name":"m1","endpoint":"https://10.9.0.10:2379","healthy":true,"leader":true,"version":"3.4.23"}],"etcd_leader":"m1","etcd_quorum":true,"nodes_ready":3,"nodes_total":3,"scheduler_leader":{"name":"m1","since":999000}}"#]]
            .assert_eq(&serde_json::to_string(&status).expect("json"));
        status.etcd_alarms = vec!["NOSPACE on m1".into()];
        expect![[r#"
            cluster demo: etcd healthy, leader m1, 3/3 node(s) Ready (answered by m1)
            etcd ALARMS: NOSPACE on m1
              NOSPACE: etcd's backend quota is used up and it refuses writes until space is freed (compaction, defragmentation) and the alarm disarmed
            scheduler: led by m1 for 16m

            MASTER  ETCD ENDPOINT           HEALTH   LEADER  API CERTIFICATE  VERSION/ERROR
            m1      https://10.9.0.10:2379  healthy  yes     -                3.4.23
        "#]]
        .assert_eq(&cluster_status(&status, 1_000_000));
        let json = serde_json::to_string(&status).expect("json");
        assert!(
            json.contains(r#","etcd_alarms":["NOSPACE on m1"],"#),
            "{json}"
        );
        // A rotation, and the masters' certificates.
        status.etcd_alarms.clear();
        let cert = control::model::MasterCert {
            format: Default::default(),
            serial: "0a".into(),
            issued_at: 1_000_000 - 30,
            not_after: 1_000_000 + 365 * 86400,
        };
        status.master_certs.insert("m1".into(), cert.clone());
        status.master_certs.insert("m9".into(), cert);
        status.cert_rotation = Some(control::model::CertRotation {
            format: Default::default(),
            at: 1_000_000 - 40,
            requested_by: "user token 0123456789ab (ops)".into(),
        });
        expect![[r#"
            cluster demo: etcd healthy, leader m1, 3/3 node(s) Ready (answered by m1)
            scheduler: led by m1 for 16m
            last certificate rotation: 40s ago, by user token 0123456789ab (ops)

            MASTER  ETCD ENDPOINT           HEALTH   LEADER  API CERTIFICATE                  VERSION/ERROR
            m1      https://10.9.0.10:2379  healthy  yes     signed 30s ago, expires in 365d  3.4.23

            master m9: API certificate signed 30s ago, expires in 365d
        "#]].assert_eq(&cluster_status(&status, 1_000_000));
        // An older writer's answer reads as no alarms.
        let old: ClusterStatus = serde_json::from_str(
            r#"{"cluster":"demo","answered_by":"m1","masters":[],"etcd_leader":null,"etcd_quorum":false,"nodes_ready":0,"nodes_total":0}"#,
        )
        .expect("an answer without alarms");
        assert!(old.etcd_alarms.is_empty());
    }

    fn record(name: &str, role: Role) -> NodeRecord {
        NodeRecord {
            info: NodeInfo {
                format: Default::default(),
                name: name.to_string(),
                role,
                addresses: vec!["10.9.0.21".to_string()],
                cpus: 2,
                memory_bytes: 2 << 30,
                disk_bytes: 20 << 30,
                attributes: BTreeMap::from([("arch".to_string(), "x86_64".to_string())]),
                image: None,
            },
            key_sha256: "ab".repeat(32),
            joined_at: 1000,
            registered_at: 1900,
            certs: Vec::new(),
        }
    }

    #[test]
    fn node_state_and_tables() {
        let records = vec![
            record("private-1", Role::Private),
            record("master-1", Role::Master),
            record("public-1", Role::Public),
        ];
        let alive = BTreeMap::from([
            (
                "master-1".to_string(),
                Alive {
                    format: Default::default(),
                    lease: 1,
                    since: 1100,
                },
            ),
            (
                "public-1".to_string(),
                Alive {
                    format: Default::default(),
                    lease: 2,
                    since: 1990,
                },
            ),
        ]);
        let nodes = node_statuses(records, &alive);
        expect![[r#"
            NAME       ROLE     STATE        ADDRESS    CPUS  MEMORY   READY FOR  VERSION  SLOT  UPGRADE
            master-1   master   Ready        10.9.0.21  2     2.0 GiB  15m        -        -     -
            private-1  private  Unreachable  10.9.0.21  2     2.0 GiB  -          -        -     -
            public-1   public   Ready        10.9.0.21  2     2.0 GiB  10s        -        -     -
        "#]]
        .assert_eq(&node_list(&nodes, 2000));
        expect![[r#"
            name:        private-1
            role:        private
            state:       Unreachable
            addresses:   10.9.0.21
            cpus:        2
            memory:      2.0 GiB
            disk:        20.0 GiB
            joined:      16m ago
            registered:  100s ago
            key sha256:  abababababababababababababababababababababababababababababababab
            attribute:   arch=x86_64
        "#]]
        .assert_eq(&node_show(&nodes[1], 2000));
        let json = serde_json::to_string(&nodes[0]).expect("json");
        expect![[r#"{"name":"master-1","role":"master","addresses":["10.9.0.21"],"cpus":2,"memory_bytes":2147483648,"disk_bytes":21474836480,"attributes":{"arch":"x86_64"},"key_sha256":"abababababababababababababababababababababababababababababababab","joined_at":1000,"registered_at":1900,"state":"ready","ready_since":1100}"#]].assert_eq(&json);
    }

    #[test]
    fn task_table() {
        let view = |id: &str, state: TaskState, app: Option<&str>, ports: &[u16]| TaskView {
            format: Default::default(),
            id: id.into(),
            node: "private-1".into(),
            image: "registry.example/web:1".into(),
            state,
            pid: (state == TaskState::Running).then_some(4242),
            restarts: 0,
            exit_code: None,
            address: (state == TaskState::Running).then(|| "10.200.1.2".parse().expect("address")),
            app: app.map(Into::into),
            ports: ports.to_vec(),
        };
        let table = task_list(&[
            view("web-1", TaskState::Running, Some("shop"), &[8080, 9090]),
            view("batch", TaskState::Pending, None, &[]),
            view("metrics", TaskState::Running, None, &[9100]),
        ]);
        expect![[r#"
            ID                       NODE             STATE      ADDRESS              PID RESTARTS  EXIT  APP:PORTS            IMAGE
            web-1                    private-1        running    10.200.1.2          4242        0     -  shop:8080,9090       registry.example/web:1
            batch                    private-1        pending    -                      -        0     -  -                    registry.example/web:1
            metrics                  private-1        running    10.200.1.2          4242        0     -  -:9100               registry.example/web:1
        "#]].assert_eq(&table);
    }

    #[test]
    fn token_tables() {
        use control::access::{
            JoinTokenCreated, JoinTokenRecord, JoinTokenRequest, UserTokenCreated, UserTokenRecord,
            UserTokenRequest,
        };
        use control::audit::AuditRecord;
        use control::rbac::Role;

        let now = 10_000;
        let boot = JoinTokenRecord::bootstrap(&"ab".repeat(32), 1_000);
        let rack = JoinTokenRecord {
            used: 1,
            uses_left: Some(1),
            ..JoinTokenRecord::new(
                &"cd".repeat(32),
                &JoinTokenRequest {
                    format: Default::default(),
                    ttl_seconds: Some(3600),
                    uses: Some(2),
                    description: "rack 4".into(),
                },
                "user token abababababab",
                9_000,
            )
        };
        let old = JoinTokenRecord {
            revoked_at: Some(9_500),
            ..JoinTokenRecord::new(
                &"ef".repeat(32),
                &JoinTokenRequest {
                    format: Default::default(),
                    ttl_seconds: Some(60),
                    uses: None,
                    description: String::new(),
                },
                "user token abababababab",
                9_000,
            )
        };
        expect![[r#"
            ID            STATE    USES       EXPIRES  CREATED  CREATED BY               DESCRIPTION
            abababababab  active   unlimited  never    2h ago   strata cluster init      the join token of the user-data `strata cluster init` wrote
            cdcdcdcdcdcd  active   1/2        in 43m   16m ago  user token abababababab  rack 4
            efefefefefef  revoked  unlimited  15m ago  16m ago  user token abababababab
        "#]]
        .assert_eq(&join_token_list(&[boot, rack.clone(), old], now));
        expect![[r#"
            join token cdcdcdcdcdcd (uses: 1/2, expires: in 43m):
            strata-join.v1.x.y
            It is shown only now. A node joins with it as the `join_token` of its user-data.
        "#]]
        .assert_eq(&join_token_created(
            &JoinTokenCreated {
                format: Default::default(),
                token: "strata-join.v1.x.y".into(),
                record: rack,
            },
            now,
        ));

        let admin = UserTokenRecord::bootstrap(&"ab".repeat(32), 1_000);
        let viewer = UserTokenRecord::new(
            &"cd".repeat(32),
            &UserTokenRequest {
                format: Default::default(),
                role: Role::Viewer,
                name: "ci".into(),
                ttl_seconds: Some(86_400),
            },
            "user token abababababab",
            9_000,
        );
        expect![[r#"
            ID            ROLE    STATE   EXPIRES  CREATED  CREATED BY               NAME
            abababababab  admin   active  never    2h ago   strata cluster init      the CLI token of `strata cluster init`
            cdcdcdcdcdcd  viewer  active  in 23h   16m ago  user token abababababab  ci
        "#]]
        .assert_eq(&user_token_list(&[admin, viewer.clone()], now));
        let created = UserTokenCreated {
            format: Default::default(),
            token: "strata-cli.v1.z".into(),
            record: viewer,
        };
        expect![[r#"
            user token cdcdcdcdcdcd (role viewer, expires: in 23h):
            strata-cli.v1.z
            It is shown only now. The CLI uses it with --context viewer.toml (or STRATA_CONTEXT).
        "#]]
        .assert_eq(&user_token_created(
            &created,
            Some(std::path::Path::new("viewer.toml")),
            now,
        ));

        let record = |at_s: u64, who: &str, role, request: &str, status, detail: &str| {
            let (method, path) = request.split_once(' ').expect("method and path");
            AuditRecord {
                format: Default::default(),
                at_ms: at_s * 1000,
                who: who.into(),
                role,
                from: "10.9.0.1".into(),
                operation: String::new(),
                method: method.into(),
                path: path.into(),
                status,
                detail: detail.into(),
                master: "master-1".into(),
            }
        };
        expect![[r#"
            WHEN     WHO                           ROLE    FROM      REQUEST                 STATUS  MASTER    DETAIL
            2h ago   join token abababababab               10.9.0.1  POST /v1/join           200     master-1  node agent-1 (private) joined, certificate serial 01
            16m ago  user token cdcdcdcdcdcd (ci)  viewer  10.9.0.1  POST /v1/tasks          403     master-1
            0s ago   node agent-1                          10.9.0.1  POST /v1/nodes/agent-1  200     master-1
        "#]]
        .assert_eq(&audit_list(
            &[
                record(
                    1_000,
                    "join token abababababab",
                    None,
                    "POST /v1/join",
                    200,
                    "node agent-1 (private) joined, certificate serial 01",
                ),
                record(
                    9_000,
                    "user token cdcdcdcdcdcd (ci)",
                    Some(Role::Viewer),
                    "POST /v1/tasks",
                    403,
                    "",
                ),
                record(now, "node agent-1", None, "POST /v1/nodes/agent-1", 200, ""),
            ],
            now * 1000,
        ));
    }
}
