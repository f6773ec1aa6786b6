//! Simulated agents for `cargo xtask bench cluster` (`agent/benches/cluster.rs`):
//! many nodes in one process, each with its own key and certificate, joined
//! with the real join token through the real API, and each holding what a
//! real agent holds on the master: a heartbeat every interval on its own
//! connection, and the two long-polls a real agent keeps open on two more,
//! the node list (`GET /v1/watch/nodes/<revision>`, when it holds a subnet)
//! and its assignments (`GET /v1/watch/assignments/<revision>`), run by the
//! agent's own followers. It finds how many one master holds with no missed
//! heartbeat (failed watches show in the log, and as fewer answers).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use configs::user_data::UserData;

use crate::api::client::{ApiClient, Auth};
use crate::api::tls;
use crate::cluster::network::AbortOnDrop;
use control::model::{JoinRequest, JoinResponse, NodeInfo, NodeState, Registered};

use crate::pki::{JoinToken, NodeKey};

/// Counters shared by the simulated agents.
#[derive(Default)]
struct Stats {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Heartbeats that took longer than the interval.
    late: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
    /// Nodes whose first heartbeat went through.
    live: Mutex<HashSet<String>>,
    join_failed: AtomicU64,
    /// Answers of the node-list and assignment watches.
    node_answers: AtomicU64,
    assign_answers: AtomicU64,
    /// Simulated agents holding a node-list watch.
    node_watchers: AtomicU64,
}

/// The outcome of one step of the ramp.
#[derive(Debug, Clone)]
pub struct Step {
    pub agents: usize,
    pub heartbeats: u64,
    pub failed: u64,
    pub late: u64,
    /// Largest number of simulated nodes listed Unreachable at one sample.
    pub unreachable: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Simulated agents that could not join or register.
    pub join_failed: u64,
    /// Watch answers in the window (node list, assignments).
    pub node_answers: u64,
    pub assign_answers: u64,
    /// Agents holding both watches (the rest hold the assignment watch only:
    /// they got no subnet).
    pub node_watchers: u64,
}

impl Step {
    pub fn missed(&self) -> u64 {
        self.failed + self.late + self.unreachable as u64 + self.join_failed
    }
}

async fn sim_agent(
    ud: Arc<UserData>,
    name: String,
    local: std::net::IpAddr,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let token = JoinToken::parse(&ud.join_token)?;
    let key = NodeKey::generate()?;
    let joiner = ApiClient::new(
        ud.masters.clone(),
        tls::pinned_client_config(&token.ca_sha256)?,
        Auth::Tls,
    )
    .with_local_ip(local);
    let req = JoinRequest {
        format: Default::default(),
        token: ud.join_token.clone(),
        name: name.clone(),
        role: ud.role,
        csr_pem: key.csr(&name)?,
    };
    let joined: JoinResponse = joiner.join(&req).await?;
    drop(joiner);
    let connect = |timeout: Duration| -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(
            ud.masters.clone(),
            tls::client_config(&joined.ca_pem, Some((&joined.cert_pem, &key.key_pem)))?,
            Auth::Tls,
        )
        .with_local_ip(local)
        .with_timeout(timeout))
    };
    let client = connect(Duration::from_secs(15))?;
    let info = NodeInfo {
        format: Default::default(),
        name: name.clone(),
        role: ud.role,
        addresses: vec!["127.0.0.1".to_string()],
        cpus: 1,
        memory_bytes: 1 << 30,
        disk_bytes: 10 << 30,
        attributes: [("simulated".to_string(), "true".to_string())].into(),
        image: None,
    };
    let registered: Registered = client.register(&info).await?;
    let settings = &registered.settings;
    let interval = Duration::from_secs(u64::from(settings.heartbeat_interval_seconds));
    // The two long-polls of a real agent, each on its own connection
    // (`cluster::node::start_tasks` and `start_network`).
    let (tx, mut rx) = tokio::sync::watch::channel(None);
    let assignments = Arc::new(connect(crate::cluster::network::WATCH_TIMEOUT)?);
    let counter = stats.clone();
    let _follower = AbortOnDrop(tokio::spawn(crate::cluster::assignments::follow(
        assignments,
        tx,
        None,
        None,
        None,
    )));
    let _assignments = AbortOnDrop(tokio::spawn(async move {
        // Counts the answers that changed the assignments (the follower
        // passes on only those).
        while rx.changed().await.is_ok() {
            counter.assign_answers.fetch_add(1, Ordering::Relaxed);
        }
    }));
    let _nodes = if registered.subnet.is_some() && settings.network.is_some() {
        stats.node_watchers.fetch_add(1, Ordering::Relaxed);
        let nodes = connect(crate::cluster::network::WATCH_TIMEOUT)?;
        let counter = stats.clone();
        Some(AbortOnDrop(tokio::spawn(async move {
            crate::cluster::network::follow_nodes(&nodes, 0, |_| {
                counter.node_answers.fetch_add(1, Ordering::Relaxed);
            })
            .await
        })))
    } else {
        None
    };
    // Spread the agents over the interval, as real ones are.
    let offset = Duration::from_micros(
        u64::from(
            name.bytes()
                .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))),
        ) % interval.as_micros().max(1) as u64,
    );
    tokio::time::sleep(offset).await;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let t0 = Instant::now();
        let r = client.heartbeat(&name).await;
        let took = t0.elapsed();
        match r {
            Ok(_) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
                if took > interval {
                    stats.late.fetch_add(1, Ordering::Relaxed);
                }
                stats
                    .latencies_us
                    .lock()
                    .expect("stats lock")
                    .push(took.as_micros() as u64);
                stats.live.lock().expect("stats lock").insert(name.clone());
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("bench: {name}: heartbeat failed: {e}");
            }
        }
    }
}

/// Every simulated agent holds a socket: lift the soft limit on open files
/// to the hard one.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Ramps up simulated agents through `steps` (total counts), holding each
/// step for `window`, and stops after the first step with a miss.
/// `template` gives the join token and masters; `watcher`, a client with
/// the CLI's token (made from its context), watches the node list.
pub async fn ramp(
    template: UserData,
    watcher: ApiClient,
    steps: &[usize],
    window: Duration,
) -> anyhow::Result<Vec<Step>> {
    tls::install_default_provider();
    raise_fd_limit();
    let ud = Arc::new(template);
    let stats = Arc::new(Stats::default());
    let mut tasks = tokio::task::JoinSet::new();
    let mut started = 0usize;
    let mut out = Vec::new();
    for &target in steps {
        // Join in batches of 50, as a fleet booting in waves would.
        // Failures while this step's agents join count against the step.
        let failed_before = stats.failed.load(Ordering::Relaxed);
        let late_before = stats.late.load(Ordering::Relaxed);
        while started < target && stats.join_failed.load(Ordering::Relaxed) == 0 {
            let batch = (target - started).min(50);
            for i in started..started + batch {
                let (ud, stats) = (ud.clone(), stats.clone());
                let name = format!("sim-{i:05}");
                // 1,000 agents (3,000 connections) per loopback source address.
                let local = std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                    127,
                    1,
                    (i / 1000 / 250) as u8,
                    (i / 1000 % 250) as u8 + 1,
                ));
                tasks.spawn(async move {
                    sim_agent(ud, name.clone(), local, stats)
                        .await
                        .with_context(|| format!("simulated agent {name}"))
                });
            }
            started += batch;
            // Wait until this batch heartbeats (or gave up joining).
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                // A simulated agent only ends when it could not join or register.
                while let Some(done) = tasks.try_join_next() {
                    stats.join_failed.fetch_add(1, Ordering::Relaxed);
                    match done {
                        Ok(Err(e)) => tracing::info!("bench: {e:#}"),
                        Ok(Ok(())) => {}
                        Err(e) => {
                            tracing::info!("bench: a simulated agent stopped: {e}")
                        }
                    }
                }
                let settled = stats.live.lock().expect("stats lock").len()
                    + stats.join_failed.load(Ordering::Relaxed) as usize;
                if settled >= started || Instant::now() >= deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Measure this step.
        let ok_before = stats.ok.load(Ordering::Relaxed);
        let node_before = stats.node_answers.load(Ordering::Relaxed);
        let assign_before = stats.assign_answers.load(Ordering::Relaxed);
        stats.latencies_us.lock().expect("stats lock").clear();
        let end = Instant::now() + window;
        let mut unreachable = 0usize;
        while Instant::now() < end {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let live = stats.live.lock().expect("stats lock").clone();
            match watcher.list_nodes().await {
                Ok(nodes) => {
                    let n = nodes
                        .iter()
                        .filter(|n| {
                            n.state == NodeState::Unreachable && live.contains(&n.record.info.name)
                        })
                        .count();
                    unreachable = unreachable.max(n);
                }
                Err(e) => tracing::warn!("bench: node list failed: {e}"),
            }
        }
        let mut lat = std::mem::take(&mut *stats.latencies_us.lock().expect("stats lock"));
        lat.sort_unstable();
        let step = Step {
            agents: started,
            heartbeats: stats.ok.load(Ordering::Relaxed) - ok_before,
            failed: stats.failed.load(Ordering::Relaxed) - failed_before,
            late: stats.late.load(Ordering::Relaxed) - late_before,
            unreachable,
            p50_ms: percentile(&lat, 0.5),
            p99_ms: percentile(&lat, 0.99),
            max_ms: lat.last().map_or(0.0, |m| *m as f64 / 1000.0),
            join_failed: stats.join_failed.load(Ordering::Relaxed),
            node_answers: stats.node_answers.load(Ordering::Relaxed) - node_before,
            assign_answers: stats.assign_answers.load(Ordering::Relaxed) - assign_before,
            node_watchers: stats.node_watchers.load(Ordering::Relaxed),
        };
        println!(
            "agents {:>5}: {:>6} heartbeats, {} failed, {} late, {} unreachable, {} failed to join; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; watches: {} node-list answers ({} watchers), {} assignment answers",
            step.agents,
            step.heartbeats,
            step.failed,
            step.late,
            step.unreachable,
            step.join_failed,
            step.p50_ms,
            step.p99_ms,
            step.max_ms,
            step.node_answers,
            step.node_watchers,
            step.assign_answers
        );
        let missed = step.missed() > 0;
        out.push(step);
        if missed {
            break;
        }
    }
    tasks.abort_all();
    Ok(out)
}
