//! `cargo xtask bench jobs` (`cargo bench -p agent --bench jobs`): a real
//! etcd on loopback, simulated nodes registered in it
//! (`STRATA_BENCH_NODES`, default 500, each 16 cores and 64 GiB), the real
//! leader loop (`agent::cluster::scheduler`) as every master runs it, and
//! simulated agents that report a job's task running as soon as they see
//! it (and exited 0 a moment later), as nodes do. Prints, in one run:
//!
//! - the delay from a scheduled time to the run's task running, p50 and
//!   p99, with `STRATA_BENCH_JOBS` (default 1000) jobs due in the same
//!   minute (the time a simulated agent first sees the task, less the
//!   scheduled second: what a real node adds to start the container is
//!   `cargo xtask bench runtime`'s);
//! - the resident memory of this process (the scheduling master's side)
//!   and of etcd with `STRATA_BENCH_DEFINED` (default 10 000) jobs
//!   defined, after the leader has planned them for a while, and how long
//!   one of its rounds takes then.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent::cluster::scheduler::Scheduler;
use agent::etcd::Store;
use anyhow::{Context as _, bail};
use control::job::record::JobRecord;
use control::model::TaskReport;
use control::task::TaskState;

mod common;
use common::{Etcd, env_num, rss_mib};

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A job of the bench: `true` in busybox, on `cron` (UTC).
fn job(id: &str, cron: &str) -> JobRecord {
    let text = format!(
        "id = \"{id}\"\n[run]\nimage = \"example.org/bb:1\"\ncmd = \"true\"\ncpus = 0.1\nmem = 32\n\
         [[schedules]]\nid = \"s\"\ncron = \"{cron}\"\nconcurrency_policy = \"allow\"\n"
    );
    let spec = control::job::read("bench.toml", &text)
        .expect("the bench's job reads")
        .job;
    let now = agent::clock::unix_secs();
    JobRecord {
        format: Default::default(),
        spec,
        version: 1,
        created_at: now,
        updated_at: now,
        removing: false,
    }
}

/// Stores jobs as `strata job add` does, a few at a time.
async fn add(store: &Store, jobs: Vec<JobRecord>) -> anyhow::Result<()> {
    let mut pending = Vec::new();
    for j in jobs {
        let store = store.clone();
        pending.push(tokio::spawn(async move { store.put_job_if(&j, 0).await }));
        if pending.len() == 32 {
            for p in pending.drain(..) {
                if !p.await?? {
                    bail!("a bench job existed already");
                }
            }
        }
    }
    for p in pending {
        if !p.await?? {
            bail!("a bench job existed already");
        }
    }
    Ok(())
}

/// When each job task was first seen, in unix milliseconds, by task id.
type Seen = Arc<Mutex<BTreeMap<String, u64>>>;

/// The simulated agents: a job's task is reported running when first
/// seen, and exited 0 the next time round.
async fn agents(store: Store, seen: Seen) {
    loop {
        if let (Ok(tasks), Ok(reports)) = (store.list_tasks().await, store.task_reports().await) {
            for (id, t) in tasks {
                if t.run_of.is_none() {
                    continue;
                }
                let state = match reports.get(&id).map(|r| r.state) {
                    None => {
                        seen.lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(id.clone())
                            .or_insert_with(unix_ms);
                        TaskState::Running
                    }
                    Some(TaskState::Running) => TaskState::Exited,
                    Some(_) => continue,
                };
                let report = TaskReport {
                    format: Default::default(),
                    state,
                    pid: Some(1),
                    restarts: 0,
                    exit_code: (state == TaskState::Exited).then_some(0),
                    address: None,
                    health: None,
                    at: agent::clock::unix_secs(),
                };
                let _ = store.put_task_report(&id, &report).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let nodes = env_num("STRATA_BENCH_NODES", 500)?;
    let due = env_num("STRATA_BENCH_JOBS", 1000)?;
    let defined = env_num("STRATA_BENCH_DEFINED", 10_000)?.max(due);
    let etcd = Etcd::start("jobs")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(&etcd, nodes, due, defined))
}

async fn run(etcd: &Etcd, nodes: u64, due: u64, defined: u64) -> anyhow::Result<()> {
    let store = etcd.store().await?;
    let now = agent::clock::unix_secs();
    let records = common::simulated_nodes(nodes, now);
    store.register_simulated_nodes(&records, 3600, now).await?;
    let leader = tokio::spawn(
        Scheduler {
            store: store.clone(),
            name: "bench-1".to_string(),
            reserve: Default::default(),
        }
        .run(),
    );
    let seen: Seen = Arc::default();
    let sim = tokio::spawn(agents(store.clone(), seen.clone()));

    // `due` jobs whose one time a day is a minute from now (or the next
    // one, so that the leader has seen every schedule before it).
    let mut at = (agent::clock::unix_secs() / 60 + 1) * 60;
    if at - agent::clock::unix_secs() < 30 {
        at += 60;
    }
    let (hour, minute) = ((at / 3600) % 24, (at / 60) % 60);
    let t = Instant::now();
    add(
        &store,
        (0..due)
            .map(|i| {
                job(
                    &format!("bench.due-{i:05}"),
                    &format!("{minute} {hour} * * *"),
                )
            })
            .collect(),
    )
    .await?;
    println!(
        "jobs bench: {nodes} simulated nodes; {due} jobs due at {} stored in {:.1}s",
        control::job::tz::utc(at),
        t.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(at - agent::clock::unix_secs() + 300);
    loop {
        let n = seen.lock().unwrap_or_else(|p| p.into_inner()).len() as u64;
        if n >= due {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {n} of {due} runs started within 300s of their time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut delays: Vec<u64> = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .map(|ms| ms.saturating_sub(at * 1000))
        .collect();
    delays.sort_unstable();
    println!(
        "{due} runs due in the same minute: scheduled time to task running p50 {} ms, p99 {} ms, last {} ms (Metronome has no published figure; a run is due within 1 s of its minute by the leader's tick)",
        percentile(&delays, 0.5),
        percentile(&delays, 0.99),
        delays.last().copied().unwrap_or(0)
    );

    // Memory with `defined` jobs, once daily at 03:00.
    let t = Instant::now();
    add(
        &store,
        (due..defined)
            .map(|i| job(&format!("bench.daily-{i:05}"), "0 3 * * *"))
            .collect(),
    )
    .await?;
    println!(
        "{} more jobs stored in {:.1}s",
        defined - due,
        t.elapsed().as_secs_f64()
    );
    // Every schedule seen and advanced by the leader, then five rounds.
    let settle = Instant::now();
    loop {
        let states = store.count_prefix("/strata/job-schedules/").await?;
        if states >= defined as i64 {
            break;
        }
        if settle.elapsed() > Duration::from_secs(600) {
            bail!("the leader advanced only {states} of {defined} schedules within 600s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "the leader took up {defined} schedules within {:.1}s of the last one stored",
        settle.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    // One round's cost now: the time a manual run takes to be placed.
    let job = control::job::JobId::parse("bench.due-00000").map_err(anyhow::Error::msg)?;
    let (record, revision) = store.get_job(&job).await?.context("the job")?;
    let run = control::job::record::RunRecord::queued(
        &job,
        control::job::record::RunId::manual(agent::clock::unix_secs(), 1),
        control::job::record::Trigger::Manual { by: "bench".into() },
        record.version,
        agent::clock::unix_secs(),
    );
    let before = seen.lock().unwrap_or_else(|p| p.into_inner()).len();
    let t = Instant::now();
    if !store.create_run(&run, revision).await? {
        bail!("the bench's manual run was refused");
    }
    loop {
        if seen.lock().unwrap_or_else(|p| p.into_inner()).len() > before {
            break;
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("a manual run was not placed within 120s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "with {defined} jobs defined: a manual run placed and seen by its agent {:.0} ms after it was stored; this process (the scheduling master's side) {:.0} MiB RSS, etcd {:.0} MiB RSS",
        t.elapsed().as_secs_f64() * 1000.0,
        rss_mib(std::process::id())?,
        rss_mib(etcd.child.id())?
    );
    sim.abort();
    leader.abort();
    Ok(())
}
