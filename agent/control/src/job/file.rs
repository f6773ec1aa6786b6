//! Reading a job file: `.json` is Metronome's job JSON, `.toml` Strata's
//! TOML (any other name is told apart by its first character), and a
//! schedule file the same way. Every problem of the file is reported, each
//! at its place (a JSON path, or a TOML line and column), and a file with
//! any problem gives no job.

use super::cron::Dialect;
use super::spec::{ConcurrencyPolicy, JobId, JobSpec, RunSpec, ScheduleSpec};
use super::{metronome, native};
use crate::app::FileError;
use crate::app::doc::{Fields, Node, Problems, Syntax};
use crate::app::group::{Places, parse_file};
use crate::app::native::string_map;

/// The job of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct JobFile {
    pub syntax: Syntax,
    pub job: JobSpec,
}

/// What both syntaxes share of a job: `id`, `run` (read by `run`),
/// `description`, `labels` and `schedules` (each read by `schedule`). The
/// object's fields come back for the reader's own keys and its `finish`.
pub(super) fn read_job_common<'a>(
    node: &'a Node,
    what: &str,
    run_missing: &str,
    p: &mut Problems,
    run: fn(&Node, &mut Places, &mut Problems) -> Option<RunSpec>,
    schedule: fn(&Node, &str, &mut Places, &mut Problems) -> Option<ScheduleSpec>,
) -> Option<(JobSpec, Places, Fields<'a>)> {
    let mut f = p.object(node, what)?;
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
            run(n, &mut places, p)
        }
        None => {
            p.at(&node.place, run_missing);
            None
        }
    };
    // A job whose id or run is refused is reported, never stored: these
    // stand in for them so that the rest is still read and checked.
    let mut spec = JobSpec::new(
        id.unwrap_or_else(|| JobId::parse("invalid").expect("a valid id")),
        run.unwrap_or_else(|| RunSpec::new("")),
    );
    if let Some(n) = f.get("description") {
        spec.description = p.str(n);
    }
    if let Some(n) = f.get("labels") {
        spec.labels = string_map(n, "labels", &mut places, p);
    }
    if let Some(n) = f.get("schedules") {
        places.put("schedules", &n.place);
        for (i, item) in p.array(n).unwrap_or_default().iter().enumerate() {
            if let Some(s) = schedule(item, &format!("schedules[{i}]"), &mut places, p) {
                spec.schedules.push(s);
            }
        }
    }
    Some((spec, places, f))
}

/// What a run reads alike in both syntaxes: `cpus`, `mem`, `disk`, `cmd`,
/// `args` and `user`.
pub(super) fn read_run_common(
    f: &mut Fields<'_>,
    run: &mut RunSpec,
    places: &mut Places,
    p: &mut Problems,
) {
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
}

/// How one syntax writes a schedule: what its object is called, the
/// cron's dialect, the names of its deadline and policy keys, the least
/// deadline it reads, the policy words its messages list, how a policy
/// word reads, and how its time zone is read.
pub(super) struct ScheduleSyntax {
    pub what: &'static str,
    pub dialect: Dialect,
    pub deadline: &'static str,
    pub deadline_min: i64,
    pub policy: &'static str,
    pub policies: &'static str,
    pub word: fn(&str) -> String,
    pub timezone: fn(&mut Fields<'_>, &str, &mut ScheduleSpec, &mut Places, &mut Problems),
}

/// Reads one schedule in `syntax` (a schedule file, or an entry of a
/// job's `schedules`), its places recorded under `at` (`schedules[0]`);
/// the object's fields come back for the reader's `finish`.
pub(super) fn read_schedule_common<'a>(
    node: &'a Node,
    at: &str,
    syntax: &ScheduleSyntax,
    places: &mut Places,
    p: &mut Problems,
) -> Option<(ScheduleSpec, Fields<'a>)> {
    let mut f = p.object(node, syntax.what)?;
    places.put(at, &node.place);
    let field = |name: &str| format!("{at}.{name}");
    let mut s = ScheduleSpec::new("", "", syntax.dialect);
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
    (syntax.timezone)(&mut f, &field("timezone"), &mut s, places, p);
    if let Some(n) = f.get(syntax.deadline) {
        places.put(field("starting_deadline_seconds"), &n.place);
        if let Some(v) = p.int(n, syntax.deadline_min, i64::from(u32::MAX)) {
            s.starting_deadline_seconds = v as u64;
        }
    }
    if let Some(n) = f.get(syntax.policy) {
        places.put(field("concurrency_policy"), &n.place);
        if let Some(text) = p.str(n) {
            match ConcurrencyPolicy::parse(&(syntax.word)(&text)) {
                Some(c) => s.concurrency_policy = c,
                None => p.at(
                    &n.place,
                    format!(
                        "unknown concurrency policy {text:?}: expected {}",
                        syntax.policies
                    ),
                ),
            }
        }
    }
    if let Some(n) = f.get("enabled") {
        s.enabled = p.bool(n).unwrap_or(true);
    }
    Some((s, f))
}

/// Reads the job in `text` (from `origin`, a file name) and checks it.
pub fn read(origin: &str, text: &str) -> Result<JobFile, FileError> {
    let (syntax, root) = parse_file(origin, text)?;
    let mut p = Problems::default();
    let read = match syntax {
        Syntax::Json => metronome::read_job(&root, &mut p),
        Syntax::Toml => native::read_job(&root, &mut p),
    };
    if let Some((job, places)) = &read {
        p.list.extend(job.check(&|field| places.at(field)));
    }
    match read {
        Some((job, _)) if p.list.is_empty() => Ok(JobFile { syntax, job }),
        _ => Err(FileError {
            origin: origin.to_string(),
            problems: p.list,
        }),
    }
}

/// Reads the lone schedule in `text` (Metronome's schedule JSON, or a
/// Strata TOML table) and checks it.
pub fn read_schedule(origin: &str, text: &str) -> Result<ScheduleSpec, FileError> {
    let (syntax, root) = parse_file(origin, text)?;
    let mut p = Problems::default();
    let mut places = Places::new(&root.place);
    let read = match syntax {
        Syntax::Json => metronome::read_schedule_at(&root, "schedules[0]", &mut places, &mut p),
        Syntax::Toml => native::read_schedule_at(&root, "schedules[0]", &mut places, &mut p),
    };
    if let Some(s) = &read {
        // Checked as the one schedule of a job that is otherwise fine.
        let mut job = JobSpec::new(
            JobId::parse("schedule").expect("a valid id"),
            RunSpec::new("busybox"),
        );
        job.schedules.push(s.clone());
        p.list.extend(job.check(&|field| places.at(field)));
    }
    match read {
        Some(s) if p.list.is_empty() => Ok(s),
        _ => Err(FileError {
            origin: origin.to_string(),
            problems: p.list,
        }),
    }
}

#[cfg(test)]
mod tests;
