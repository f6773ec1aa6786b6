//! `cargo xtask bench scheduler` (`cargo bench -p agent --bench scheduler`):
//! a real etcd on loopback, simulated nodes registered in it (records and
//! live keys, `STRATA_BENCH_NODES`, default 5000, each 16 cores and 64 GiB),
//! and two schedulers in this process, the real leader loop
//! (`agent::cluster::scheduler`) as every master runs it, campaigning for
//! the one leadership. Prints, in one run:
//!
//! - a 100-instance rolling deployment end to end: `/bench/roll` deployed,
//!   then a new version of it rolled (minimum health 1, maximum over 0.5),
//!   with simulated agents that report every new instance running and
//!   healthy and every stopped one stopped, as nodes do;
//! - failover: the leader's task aborted (its lease is not renewed and
//!   expires, as when a master dies), then a scale asked; the time from the
//!   abort to that placement by the other scheduler;
//! - placements per second persisted to etcd: `STRATA_BENCH_TASKS`
//!   (default 100 000) instances of 100 apps deployed at once, timed until
//!   every one is a task record in etcd (Nomad's C1M published 3 750 per
//!   second on five servers);
//! - the resident memory of this process (the schedulers' side of a
//!   master) and of etcd with those tasks.

use std::time::{Duration, Instant};

use agent::cluster::scheduler::Scheduler;
use agent::etcd::Store;
use anyhow::{Context as _, bail};
use control::app::record::{AppRecord, AppVersion};
use control::app::{AppId, AppSpec};
use control::deploy::DeploymentState;
use control::deploy::apply::{self, Change};
use control::model::TaskReport;
use control::task::{Health, TaskState};

mod common;
use common::{Etcd, env_num, rss_mib};

fn app(id: &str, instances: u32, cmd: &str) -> AppSpec {
    let text = format!(
        "id = \"{id}\"\nimage = \"example.org/bb:1\"\ncmd = \"{cmd}\"\ninstances = {instances}\ncpus = 0.1\nmem = 32\n\
         [upgrade_strategy]\nminimum_health_capacity = 1.0\nmaximum_over_capacity = 0.5\n"
    );
    control::app::read("bench.toml", &text)
        .expect("the bench's app reads")
        .apps
        .remove(0)
}

/// Deploys apps as `strata app deploy` does (admitted, stored over what
/// was read).
async fn deploy(store: &Store, specs: Vec<AppSpec>) -> anyhow::Result<Vec<String>> {
    let now = agent::clock::unix_secs();
    let mut items: Vec<(AppRecord, AppVersion, i64)> = Vec::new();
    let mut ids = Vec::new();
    for spec in specs {
        let current = store.get_app(&spec.id).await?;
        if let Some(a) = apply::admit(
            current.as_ref().map(|(r, _)| r),
            spec,
            Change::Deploy { canary: 0 },
            now,
        ) {
            ids.push(a.deployment.id.clone());
            items.push((a.record, a.version, current.map_or(0, |(_, rev)| rev)));
        }
    }
    for part in items.chunks(20) {
        if !store.put_apps_if(part, &Default::default()).await? {
            bail!("an app changed while the bench deployed it");
        }
    }
    Ok(ids)
}

async fn deployment_state(store: &Store, app: &AppId, id: &str) -> anyhow::Result<DeploymentState> {
    let (r, _) = store.get_app(app).await?.context("the app is gone")?;
    Ok(r.deployments
        .iter()
        .find(|d| d.id == id)
        .map_or(DeploymentState::Unknown, |d| d.state))
}

/// The simulated agents: every task without a report is reported running
/// and healthy, every stopping one stopped.
async fn agents(store: Store) {
    loop {
        if let (Ok(tasks), Ok(reports)) = (store.list_tasks().await, store.task_reports().await) {
            for (id, t) in tasks {
                let state = if t.stopping {
                    TaskState::Stopped
                } else {
                    TaskState::Running
                };
                if reports.get(&id).is_some_and(|r| r.state == state) {
                    continue;
                }
                let report = TaskReport {
                    format: Default::default(),
                    state,
                    pid: Some(1),
                    restarts: 0,
                    exit_code: None,
                    address: None,
                    health: (state == TaskState::Running).then_some(Health::Healthy),
                    at: 0,
                };
                let _ = store.put_task_report(&id, &report).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn main() -> anyhow::Result<()> {
    let nodes = env_num("STRATA_BENCH_NODES", 5000)?;
    let tasks = env_num("STRATA_BENCH_TASKS", 100_000)?;
    let etcd = Etcd::start("scheduler")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(run(&etcd, nodes, tasks))
}

async fn run(etcd: &Etcd, nodes: u64, tasks: u64) -> anyhow::Result<()> {
    let store = etcd.store().await?;
    let now = agent::clock::unix_secs();
    let records = common::simulated_nodes(nodes, now);
    let t = Instant::now();
    store.register_simulated_nodes(&records, 3600, now).await?;
    println!(
        "scheduler bench: {nodes} simulated nodes registered in {:.1}s (16 cores, 64 GiB each)",
        t.elapsed().as_secs_f64()
    );
    let scheduler = |name: &str| Scheduler {
        store: store.clone(),
        name: name.to_string(),
        reserve: Default::default(),
    };
    let first = tokio::spawn(scheduler("bench-1").run());
    // The first leads before the second campaigns.
    let lead_start = Instant::now();
    loop {
        if store.scheduler_leader().await?.is_some() {
            break;
        }
        if lead_start.elapsed() > Duration::from_secs(20) {
            bail!("no scheduler took the lead within 20s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = tokio::spawn(scheduler("bench-2").run());
    let sim = tokio::spawn(agents(store.clone()));

    // A 100-instance rolling deployment with simulated agents.
    let roll = AppId::resolve(&AppId::root(), "/bench/roll").map_err(anyhow::Error::msg)?;
    let wait_done = |id: String| {
        let store = store.clone();
        let roll = roll.clone();
        async move {
            let t = Instant::now();
            loop {
                match deployment_state(&store, &roll, &id).await? {
                    DeploymentState::Succeeded => return Ok::<_, anyhow::Error>(t.elapsed()),
                    s if s.is_done() => bail!("deployment {id} ended {s}"),
                    _ => {}
                }
                if t.elapsed() > Duration::from_secs(600) {
                    bail!("deployment {id} did not finish within 600s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let ids = deploy(&store, vec![app("/bench/roll", 100, "v1")]).await?;
    let first_deploy = wait_done(ids[0].clone()).await?;
    let ids = deploy(&store, vec![app("/bench/roll", 100, "v2")]).await?;
    let rolled = wait_done(ids[0].clone()).await?;
    println!(
        "rolling deployment of 100 instances (minimum health 1, maximum over 0.5): first deploy {:.2}s, new version rolled in {:.2}s",
        first_deploy.as_secs_f64(),
        rolled.as_secs_f64()
    );

    // Failover: the leader dies; the other places the next instance.
    let leader = store.scheduler_leader().await?.context("a leader")?.name;
    let (dead, _alive) = if leader == "bench-1" {
        (first, second)
    } else {
        (second, first)
    };
    let killed = Instant::now();
    dead.abort();
    let before = store.count_prefix("/strata/tasks/").await?;
    deploy(&store, vec![app("/bench/roll", 101, "v2")]).await?;
    loop {
        if store.count_prefix("/strata/tasks/").await? > before {
            break;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("no scheduler placed anything within 60s of the leader's death");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = killed.elapsed();
    let next = store.scheduler_leader().await?.map(|l| l.name);
    println!(
        "failover: leader {leader} killed, first placement by {} after {:.2}s (its lease lives {}s)",
        next.as_deref().unwrap_or("?"),
        took.as_secs_f64(),
        agent::cluster::scheduler::LEASE_TTL
    );
    sim.abort();

    // Placements persisted to etcd.
    let apps = 100u64;
    let per_app = (tasks / apps).max(1) as u32;
    let specs: Vec<AppSpec> = (0..apps)
        .map(|i| app(&format!("/bench/load-{i:03}"), per_app, "sleep 1000"))
        .collect();
    let total = i64::from(per_app) * apps as i64;
    let base = store.count_prefix("/strata/tasks/").await?;
    let t = Instant::now();
    deploy(&store, specs).await?;
    loop {
        let placed = store.count_prefix("/strata/tasks/").await? - base;
        if placed >= total {
            break;
        }
        if t.elapsed() > Duration::from_secs(1800) {
            bail!("only {placed} of {total} instances placed after 1800s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = t.elapsed();
    println!(
        "placements: {total} instances of {apps} apps over {nodes} nodes persisted to etcd in {:.2}s: {:.0} per second (Nomad's C1M: 3750 per second on five servers; target here: 5000 on two cores)",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    // Let the scheduler settle on the full state before memory is read.
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "memory at {} tasks: this process (the schedulers, etcd client, snapshot) {:.0} MiB RSS, etcd {:.0} MiB RSS",
        store.count_prefix("/strata/tasks/").await?,
        rss_mib(std::process::id())?,
        rss_mib(etcd.child.id())?
    );
    Ok(())
}
