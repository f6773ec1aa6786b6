//! `strata job`: batch work, once or on a schedule (Metronome's jobs).
//! `validate` reads a job file (Metronome's JSON as written, or Strata's
//! TOML) offline, reports every mistake at its place, and shows when each
//! schedule fires next, in its zone and in UTC. The others go through the
//! API: `add` stores a job (checked the same way first), `run` starts a
//! run now and with `--wait` exits with its exit code, `history`, `show`
//! and `list` read what the scheduling master recorded, and `logs` reads a
//! run's output from the node it ran on, through the masters.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;

use control::app::Problem;
use control::job::record::{RunRecord, RunState};
use control::job::{JobId, JobSpec, ScheduleSpec};

use super::output;
use super::target::{Target, runtime};

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
    /// Add a job to the cluster, or change it: checked as `validate`
    /// checks it, nothing stored on a problem.
    Add {
        /// The job file: `.json` (Metronome) or `.toml` (Strata).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every job: its schedules' next times, runs going, its last run.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One job: its definition, schedules and every run it keeps.
    Show {
        /// The job's id (`prod.backup`).
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start a run of a job now; with `--wait`, exit with its exit code.
    Run {
        /// The job's id.
        id: String,
        /// Wait until the run ends, showing where it is, and exit with its
        /// exit code (125 when it ended without one: killed, lost, past a
        /// deadline).
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A job's runs, oldest first: trigger, node, times, how each ended.
    History {
        /// The job's id.
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// A run's output (its last attempt's stdout, then its stderr), from
    /// the node it ran on, through the masters.
    Logs {
        /// The job's id.
        id: String,
        /// The run's id (`strata job history ID`); the newest run that
        /// was placed when absent.
        run: Option<String>,
        /// Go on with what the run writes until it ends.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop a run going (its task is stopped; the run ends killed).
    Kill {
        /// The job's id.
        id: String,
        /// The run's id (`strata job history ID`).
        run: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a job: its runs going are stopped, then it goes with its
    /// history.
    Remove {
        /// The job's id.
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Enable or disable one schedule of a job.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCommand,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Fire the schedule again, from now on (no missed time is started).
    Enable {
        /// The job's id.
        id: String,
        /// The schedule's id.
        schedule: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop firing the schedule (runs going go on).
    Disable {
        /// The job's id.
        id: String,
        /// The schedule's id.
        schedule: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The exit status of `job run --wait` for a run that ended without an
/// exit code (killed, lost, past a deadline, never started).
pub const NO_EXIT_CODE: i32 = 125;

pub fn run(command: JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Validate { file, next, json } => validate(&file, next, json),
        JobCommand::Add { file, target, json } => {
            let spec = read(&file)?;
            let record = runtime()?.block_on(target.client()?.put_job(&spec))?;
            output::emit(json, &record, |r| {
                format!(
                    "job {} stored (version {}){}\n",
                    r.spec.id,
                    r.version,
                    if r.spec.schedules.is_empty() {
                        ": it runs when asked (`strata job run`)"
                    } else {
                        ""
                    }
                )
            })
        }
        JobCommand::List { target, json } => {
            let jobs = runtime()?.block_on(target.client()?.list_jobs())?;
            output::emit(json, &jobs, |j| output::job_list(j))
        }
        JobCommand::Show { id, target, json } => {
            let id = parse_id(&id)?;
            let job = runtime()?.block_on(target.client()?.show_job(&id))?;
            output::emit(json, &job, output::job_show)
        }
        JobCommand::Run {
            id,
            wait,
            timeout,
            target,
            json,
        } => {
            let id = parse_id(&id)?;
            let client = target.client()?;
            let rt = runtime()?;
            let run = rt.block_on(client.start_run(&id))?;
            if !wait {
                return output::emit(json, &run, |r| {
                    format!("run {} of job {} queued\n", r.id, r.job)
                });
            }
            if !json {
                eprintln!("run {} of job {} queued", run.id, run.job);
            }
            let ended = rt.block_on(wait_run(&client, &id, &run, timeout, json))?;
            output::emit(json, &ended, output::run_ended)?;
            let code = match (ended.state, ended.exit_code) {
                (RunState::Succeeded, _) => 0,
                (_, Some(c)) if c != 0 => c,
                _ => NO_EXIT_CODE,
            };
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
        JobCommand::History { id, target, json } => {
            let id = parse_id(&id)?;
            let runs = runtime()?.block_on(target.client()?.list_runs(&id))?;
            output::emit(json, &runs, |r| output::run_history(r))
        }
        JobCommand::Logs {
            id,
            run,
            follow,
            target,
        } => {
            let id = parse_id(&id)?;
            let client = target.client()?;
            let rt = runtime()?;
            rt.block_on(async {
                let runs = client.list_runs(&id).await?;
                let chosen = match &run {
                    Some(r) => runs.iter().find(|x| x.id.as_str() == r).ok_or_else(|| {
                        anyhow::anyhow!(
                            "job {id} has no run `{r}`: `strata job history {id}` shows its runs"
                        )
                    })?,
                    None => runs
                        .iter()
                        .rev()
                        .find(|x| !x.attempts.is_empty())
                        .ok_or_else(|| {
                            anyhow::anyhow!(
                                "no run of job {id} has started yet: `strata job run {id}` starts one"
                            )
                        })?,
                };
                let Some(attempt) = chosen.attempts.last() else {
                    anyhow::bail!(
                        "run {} of job {id} was never placed ({}): it has no output",
                        chosen.id,
                        output::run_progress(chosen)
                    );
                };
                let stream = client.task_logs(&attempt.task, follow).await.with_context(|| {
                    format!(
                        "cannot read the output of run {} (task {} on node {})",
                        chosen.id, attempt.task, attempt.node
                    )
                })?;
                crate::exec::drive(stream, false, None).await?;
                Ok(())
            })
        }
        JobCommand::Kill {
            id,
            run,
            target,
            json,
        } => {
            let id = parse_id(&id)?;
            let r = runtime()?.block_on(target.client()?.kill_run(&id, &run))?;
            output::emit(json, &r, |r| {
                format!(
                    "run {} of job {}: stopping; it ends killed once its task stopped\n",
                    r.id, r.job
                )
            })
        }
        JobCommand::Remove { id, target, json } => {
            let id = parse_id(&id)?;
            let r = runtime()?.block_on(target.client()?.remove_job(&id))?;
            output::emit(json, &r, |r| {
                format!(
                    "removing job {}: its runs going stop, then it goes with its history\n",
                    r.spec.id
                )
            })
        }
        JobCommand::Schedule { command, target } => {
            let (id, schedule, json, enabled) = match command {
                ScheduleCommand::Enable { id, schedule, json } => (id, schedule, json, true),
                ScheduleCommand::Disable { id, schedule, json } => (id, schedule, json, false),
            };
            let id = parse_id(&id)?;
            let view =
                runtime()?.block_on(target.client()?.enable_schedule(&id, &schedule, enabled))?;
            output::emit(json, &view, |v| {
                let next = v
                    .schedules
                    .iter()
                    .find(|s| s.id == schedule)
                    .and_then(|s| s.next)
                    .map_or_else(|| "-".to_string(), control::job::tz::utc);
                format!(
                    "schedule {schedule} of job {} {} (next {next})\n",
                    v.record.spec.id,
                    if enabled { "enabled" } else { "disabled" }
                )
            })
        }
    }
}

fn parse_id(text: &str) -> anyhow::Result<JobId> {
    JobId::parse(text).map_err(|why| anyhow::anyhow!("{why} (a job id is `group.name`)"))
}

/// Reads and checks a job file as `validate` does.
fn read(file: &Path) -> anyhow::Result<JobSpec> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let origin = file.display().to_string();
    let read = control::job::read(&origin, &text)?;
    let late = read.job.check_times(crate::clock::unix_secs());
    if !late.is_empty() {
        let why: Vec<String> = late.into_iter().map(|(_, w)| format!("  {w}")).collect();
        anyhow::bail!("{origin}: {} problem(s)\n{}", why.len(), why.join("\n"));
    }
    Ok(read.job)
}

/// Waits for a run to end, printing where it is as that changes.
async fn wait_run(
    client: &crate::api::client::ApiClient,
    job: &JobId,
    run: &RunRecord,
    timeout: u64,
    json: bool,
) -> anyhow::Result<RunRecord> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut last = String::new();
    loop {
        let r = client.show_run(job, run.id.as_str()).await?;
        if r.state.ended() {
            return Ok(r);
        }
        let line = output::run_progress(&r);
        if !json && line != last {
            eprintln!("{line}");
            last = line;
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "run {} of job {job} has not ended after {timeout}s ({}): `strata job show {job}` shows it, `strata job kill {job} {}` stops it",
                r.id,
                r.state,
                r.id
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
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
