//! `strata job`: batch work, once or on a schedule (Metronome's jobs).
//! `validate` reads a job file (Metronome's JSON as written, or Strata's
//! TOML) offline, reports every mistake at its place, and shows when each
//! schedule fires next, in its zone and in UTC. The cluster's side (the
//! scheduling master's plan, runs, history) lands with the job API.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;

use control::app::Problem;
use control::job::{JobSpec, ScheduleSpec};

use super::output;

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Check a job file without a cluster: every mistake with its line and
    /// column (TOML) or JSON path, and each schedule's next times.
    Validate {
        /// The job file: `.json` (Metronome) or `.toml` (Strata).
        file: PathBuf,
        /// How many next times to show per schedule.
        #[arg(long, default_value_t = 3)]
        next: usize,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Validate { file, next, json } => validate(&file, next, json),
    }
}

/// What `job validate` found.
#[derive(Debug, Serialize)]
struct Validation<'a> {
    file: String,
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a JobSpec>,
    /// Each schedule's next times (unix seconds), by schedule id.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    next: Vec<NextTimes>,
    #[serde(skip_serializing_if = "<[Problem]>::is_empty")]
    problems: &'a [Problem],
}

#[derive(Debug, Serialize)]
struct NextTimes {
    schedule: String,
    times: Vec<u64>,
}

/// The next `n` times of schedule `s` after unix second `now`.
fn next_times(s: &ScheduleSpec, now: u64, n: usize) -> Vec<u64> {
    let (Ok(cron), Ok(zone)) = (s.parse_cron(), s.zone()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut at = now;
    while out.len() < n {
        match cron.next_after(&zone, at) {
            Some(t) => {
                out.push(t);
                at = t;
            }
            None => break,
        }
    }
    out
}

fn validate(file: &Path, n: usize, json: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let origin = file.display().to_string();
    let now = crate::clock::unix_secs();
    match control::job::read(&origin, &text) {
        Ok(read) if !read.job.check_times(now).is_empty() => {
            let problems: Vec<String> = read
                .job
                .check_times(now)
                .into_iter()
                .map(|(_, why)| format!("  {origin}: {why}"))
                .collect();
            anyhow::bail!(
                "{origin}: {} problem(s)\n{}",
                problems.len(),
                problems.join("\n")
            )
        }
        Ok(read) => {
            let next = read
                .job
                .schedules
                .iter()
                .map(|s| NextTimes {
                    schedule: s.id.clone(),
                    times: next_times(s, now, n),
                })
                .collect();
            let v = Validation {
                file: origin,
                valid: true,
                job: Some(&read.job),
                next,
                problems: &[],
            };
            output::emit(json, &v, |v| {
                output::job_validated(&v.file, &read.job, &|s| {
                    v.next
                        .iter()
                        .find(|t| t.schedule == s)
                        .map(|t| t.times.clone())
                        .unwrap_or_default()
                })
            })
        }
        Err(e) if json => {
            let v = Validation {
                file: origin,
                valid: false,
                job: None,
                next: Vec::new(),
                problems: &e.problems,
            };
            output::emit(true, &v, |_| String::new())?;
            anyhow::bail!("{}: {} problem(s)", e.origin, e.problems.len())
        }
        Err(e) => Err(e.into()),
    }
}
