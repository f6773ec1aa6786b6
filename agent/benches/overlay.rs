//! `cargo xtask bench overlay` (`cargo bench -p agent --bench overlay`):
//! on a lab of network namespaces wired by the agent's overlay module (see `agent::testing::lab`), measures in one run
//! - TCP throughput task to task across two nodes over VXLAN, beside host
//!   to host over the underlay (iperf3, one stream), and their ratio;
//! - the time from a node joining to its routes being present on every
//!   peer (each node reconciling as its agent does on a node-list change);
//! - DNS query latency against a node's resolver from a task, p50 and p99.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::testing::lab::{self, Lab};
use anyhow::{Context as _, bail};

/// Seconds each iperf3 run lasts.
const IPERF_SECONDS: u32 = 3;

/// Rounds over the three paths.
const ROUNDS: usize = 3;

fn main() -> anyhow::Result<()> {
    for program in ["iperf3", "nft", "ip"] {
        if !qemu_tests::testenv::on_path(program) {
            bail!("`{program}` is missing: install it (see xtask/src/deps.rs)");
        }
    }
    for underlay_mtu in [1500, 9000] {
        run_with(underlay_mtu)?;
    }
    Ok(())
}

/// One full run on an underlay with links of `underlay_mtu`.
fn run_with(underlay_mtu: u32) -> anyhow::Result<()> {
    let tag = format!("ovb{}m{underlay_mtu}", std::process::id() % 100_000);
    let mut lab = Lab::new(&tag, 3, None, underlay_mtu).context("cannot build the lab")?;
    let two = [0, 1];
    for i in two {
        lab.reconcile(i, &two)?;
    }
    let a = lab.add_task(0, "a")?;
    let b = lab.add_task(1, "b")?;
    let ns_a = ns_name(&lab.task_ns("a")?)?;
    let ns_b = ns_name(&lab.task_ns("b")?)?;
    let node0 = ns_name(&lab.nodes[0].netns)?;
    let node1 = ns_name(&lab.nodes[1].netns)?;
    let mtu = agent::overlay::netlink::dump(Some(&lab.nodes[0].netns))?
        .link("strata-vx")
        .map(|l| l.mtu)
        .unwrap_or(0);

    println!(
        "overlay bench: 2 nodes, VXLAN MTU {mtu}, underlay MTU {underlay_mtu}, iperf3 1 TCP stream, {ROUNDS} rounds of {IPERF_SECONDS}s per path, interleaved"
    );
    // Interleaved rounds so that load from other processes hits every path alike.
    let gw1 = agent::overlay::plan::gateway(lab.nodes[1].subnet).to_string();
    let (mut under, mut over, mut vtep, mut ratios) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let u = iperf(&node1, &node0, &lab.nodes[1].underlay_ip.to_string())?;
        let o = iperf(&ns_b, &ns_a, &b.addr.to_string())?;
        let v = iperf(&node1, &node0, &gw1)?;
        ratios.push(o / u);
        under.push(u);
        over.push(o);
        vtep.push(v);
    }
    let (u, o, v, r) = (
        median(&mut under),
        median(&mut over),
        median(&mut vtep),
        median(&mut ratios),
    );
    println!("  host to host (underlay):       {:>7.2} Gbit/s", u / 1e9);
    println!(
        "  task to task (overlay):        {:>7.2} Gbit/s  ({} -> {})",
        o / 1e9,
        a.addr,
        b.addr
    );
    println!(
        "  node to node (overlay, no veth): {:>5.2} Gbit/s  (the kernel VXLAN ceiling)",
        v / 1e9
    );
    println!(
        "  ratio task overlay / underlay: {r:>7.3}  (median of per-round ratios; target >= 0.9)"
    );

    // Join convergence: every node runs the agent's follower
    // (`NodeNetwork` + `follow`) on a watch channel; node 2 leaves and joins
    // by a change of the peer list sent to all three, as the agent's watch on
    // the cluster's node list would; timed until every peer's fresh dump
    // shows the route to node 2's subnet.
    let subnet2 = lab.nodes[2].subnet;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let lab = std::sync::Arc::new(lab);
    let all = [0, 1, 2];
    let mut senders = Vec::new();
    let mut followers = Vec::new();
    for i in all {
        let (tx, rx) = tokio::sync::watch::channel(lab.peers(i, &two));
        let net = lab.nodes[i].net.clone();
        followers.push(rt.spawn(async move {
            agent::overlay::node::follow(net, rx, Duration::from_secs(30), |r| {
                if let Err(e) = r {
                    eprintln!("node {i}: {e:#}");
                }
            })
            .await;
        }));
        senders.push(tx);
    }
    let mut joins = Vec::new();
    for _ in 0..10 {
        for (i, tx) in senders.iter().enumerate() {
            tx.send(lab.peers(i, &two))?;
        }
        wait_routes(&lab, subnet2, false)?;
        let start = Instant::now();
        for (i, tx) in senders.iter().enumerate() {
            tx.send(lab.peers(i, &all))?;
        }
        wait_routes(&lab, subnet2, true)?;
        joins.push(start.elapsed());
    }
    drop(senders);
    for f in followers {
        rt.block_on(f)?;
    }
    joins.sort();
    println!(
        "  join to routes on every peer: median {:.1} ms, max {:.1} ms over {} joins (from the peer-list change; target < 1 s)",
        ms(joins[joins.len() / 2]),
        ms(joins[joins.len() - 1]),
        joins.len()
    );

    // DNS latency from task a to its node's resolver.
    let records = agent::dns::Records::new();
    records.upsert(
        "b",
        agent::dns::TaskRecord {
            app: Some("bench".into()),
            addr: b.addr,
            ports: vec![5201],
            named: Default::default(),
        },
    );
    let server = {
        let _guard = rt.enter();
        lab::start_dns(&lab, 0, "strata.internal", records, &[])?
    };
    let resolver: SocketAddr = server.addr;
    let task_a = lab.task_ns("a")?;
    let mut times = agent::overlay::netns::run_in(Some(&task_a), || {
        let mut times = Vec::with_capacity(2000);
        for i in 0..2000 {
            let name = if i % 2 == 0 {
                "b.strata.internal."
            } else {
                "bench.strata.internal."
            };
            let t = Instant::now();
            let found = agent::dns::client::lookup_a(resolver, name)?;
            times.push(t.elapsed());
            if found != [b.addr] {
                bail!("{name} resolved to {found:?}, expected {}", b.addr);
            }
        }
        Ok(times)
    })?;
    times.sort();
    println!(
        "  DNS A query from a task to its node's resolver: p50 {:.0} us, p99 {:.0} us over {} queries",
        us(times[times.len() / 2]),
        us(times[times.len() * 99 / 100]),
        times.len()
    );
    rt.block_on(server.stop())?;
    drop(rt);
    drop(lab);
    Ok(())
}

/// Polls the dumps of nodes 0 and 1 until the route to `subnet` is there
/// (`present`) or gone.
fn wait_routes(lab: &Lab, subnet: configs::net::Ipv4Cidr, present: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    for i in [0, 1] {
        loop {
            let d = agent::overlay::netlink::dump(Some(&lab.nodes[i].netns))?;
            if d.routes
                .iter()
                .any(|r| r.dst == subnet && r.dev == "strata-vx")
                == present
            {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!(
                    "node {i}: route to {subnet} still {} after 10 s",
                    if present { "missing" } else { "there" }
                );
            }
        }
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ns_name(path: &Path) -> anyhow::Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("{} is not a named namespace", path.display()))
}

/// Kills the iperf3 server if the client fails.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs an iperf3 server in `server_ns` and a client in `client_ns` against
/// `addr`; returns the received bits per second.
fn iperf(server_ns: &str, client_ns: &str, addr: &str) -> anyhow::Result<f64> {
    let _server = Server(
        Command::new("ip")
            .args(["netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the iperf3 server")?,
    );
    let mut last = String::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                client_ns,
                "iperf3",
                "-c",
                addr,
                "-J",
                "-t",
                &IPERF_SECONDS.to_string(),
            ])
            .output()
            .context("cannot run the iperf3 client")?;
        let json: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(j) => j,
            Err(_) => {
                last = String::from_utf8_lossy(&out.stderr).into_owned();
                continue;
            }
        };
        if let Some(bps) = json
            .pointer("/end/sum_received/bits_per_second")
            .and_then(serde_json::Value::as_f64)
        {
            return Ok(bps);
        }
        last = json.get("error").map(|e| e.to_string()).unwrap_or_default();
        if !last.contains("connect") {
            break;
        }
    }
    bail!("iperf3 from {client_ns} to {addr} failed: {last}")
}
