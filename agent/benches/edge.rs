//! `cargo xtask bench edge` (`cargo bench -p agent --bench edge`): on a
//! lab of network namespaces wired by the agent's overlay module (see
//! `agent::testing::lab`), two HTTP backends run as tasks on node 1; node 0
//! plays the public agent. Measures in one run, with wrk from node 0:
//! - requests per second and p50/p99 latency through the edge proxy (the
//!   agent's `agent::edge::Edge`: HAProxy configured from a plan of
//!   services), beside direct requests to one task and beside a
//!   hand-written HAProxy configuration for the same two backends, with
//!   keep-alive connections and with a new connection per request;
//! - connections per second through a VIP (nftables DNAT, `ip strata-vip`)
//!   beside direct, a new connection per request.
//!
//! Rounds are interleaved so that load from other processes hits every
//! path alike; each figure is the median of its rounds.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use agent::edge::{Edge, EdgePaths};
use agent::testing::lab::Lab;
use anyhow::{Context as _, bail};
use control::app::{AppId, Exposure, Protocol, VipSpec};
use control::service::{Backend, BackendState, Service};

/// Seconds each wrk run lasts.
const SECONDS: u32 = 3;
/// Rounds over the paths.
const ROUNDS: usize = 3;
/// wrk's connections.
const CONNECTIONS: u32 = 16;
/// The backends' port.
const BACKEND_PORT: u16 = 8080;
/// The edge's HTTP port and the hand-written HAProxy's.
const EDGE_PORT: u16 = 18080;
const HAND_PORT: u16 = 18081;
const HOST: &str = "bench.test";
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const VIP_PORT: u16 = 80;

fn main() -> anyhow::Result<()> {
    for program in ["wrk", "haproxy", "nft", "ip"] {
        if !qemu_tests::testenv::on_path(program) {
            bail!("`{program}` is missing: install it (see xtask/src/deps.rs)");
        }
    }
    let tag = format!("edb{}", std::process::id() % 100_000);
    let mut lab = Lab::new(&tag, 2, None, 1500).context("cannot build the lab")?;
    for i in [0, 1] {
        lab.reconcile(i, &[0, 1])?;
    }
    let mut backends = Vec::new();
    for task in ["a", "b"] {
        let addr = lab.add_task(1, task)?.addr;
        let ns = lab.task_ns(task)?;
        let listener = agent::overlay::netns::run_in(Some(&ns), || {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, BACKEND_PORT))
                .with_context(|| format!("cannot listen in task {task}"))
        })?;
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || qemu_tests::http::serve(conn, "ok"));
            }
        });
        backends.push(SocketAddrV4::new(addr, BACKEND_PORT));
    }
    let node0 = lab.nodes[0].netns.clone();
    let subnet0 = lab.nodes[0].subnet;
    let dir = tempfile::tempdir()?;
    // Everything that runs on node 0 runs on this one thread: HAProxy is
    // its child (and stops when it ends).
    agent::overlay::netns::run_in(Some(&node0), || {
        run_on_node0(&backends, subnet0, dir.path())
    })
}

fn service(backends: &[SocketAddrV4]) -> Service {
    Service {
        app: AppId::resolve(&AppId::root(), "/bench/web").expect("a valid id"),
        port: 0,
        protocol: Protocol::Tcp,
        expose: vec![Exposure::Http {
            host: HOST.into(),
            path: "/".into(),
            redirect_https: false,
        }],
        vips: vec![VipSpec::Named {
            name: "web".into(),
            port: VIP_PORT,
        }],
        checked: false,
        backends: backends
            .iter()
            .enumerate()
            .map(|(i, addr)| Backend {
                task: format!("web.{i}"),
                node: "node-1".into(),
                addr: *addr,
                state: BackendState::Ready,
            })
            .collect(),
    }
}

/// A hand-written HAProxy configuration for the same backends, as an
/// operator would write it for Marathon-LB's job.
fn hand_config(backends: &[SocketAddrV4]) -> String {
    let mut text = format!(
        "global\n    maxconn 4096\ndefaults\n    mode http\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\nfrontend hand\n    bind :{HAND_PORT}\n    default_backend web\nbackend web\n    balance roundrobin\n"
    );
    for (i, b) in backends.iter().enumerate() {
        text.push_str(&format!("    server s{i} {b}\n"));
    }
    text
}

/// One wrk run's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs wrk against `url` (from the current namespace).
fn wrk(url: &str, close: bool) -> anyhow::Result<Figures> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t1",
        &format!("-c{CONNECTIONS}"),
        &format!("-d{SECONDS}s"),
        "--latency",
        "-H",
        &format!("Host: {HOST}"),
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    let out = cmd.arg(url).stdin(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk {url}: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    if text.contains("Non-2xx") || text.contains("Socket errors") && !close {
        bail!("wrk {url} saw errors:\n{text}");
    }
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

fn parse_wrk(text: &str) -> Option<Figures> {
    let duration_ms = |s: &str| -> Option<f64> {
        let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = n.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            "m" => n * 60_000.0,
            _ => return None,
        })
    };
    let percentile = |p: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(p))
            .and_then(|rest| duration_ms(rest.trim()))
    };
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    Some(Figures {
        rps,
        p50_ms: percentile("50%")?,
        p99_ms: percentile("99%")?,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The medians of `runs`.
fn medians(runs: &[Figures]) -> Figures {
    Figures {
        rps: median(runs.iter().map(|f| f.rps).collect()),
        p50_ms: median(runs.iter().map(|f| f.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|f| f.p99_ms).collect()),
    }
}

/// Stops the hand-written HAProxy when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run_on_node0(
    backends: &[SocketAddrV4],
    subnet: configs::net::Ipv4Cidr,
    dir: &Path,
) -> anyhow::Result<()> {
    let services = [service(backends)];
    // The edge, as a public agent runs it.
    let mut edge = Edge::new(EdgePaths::new(dir.join("edge")));
    let ports = control::model::EdgeSettings {
        http_port: EDGE_PORT,
        https_port: EDGE_PORT + 1,
    };
    let plan = control::edge::plan(&services, ports, &Default::default(), None);
    edge.apply(&plan).context("cannot start the edge")?;
    // The hand-written HAProxy.
    let hand_cfg = dir.join("hand.cfg");
    std::fs::write(&hand_cfg, hand_config(backends))?;
    let _hand = Killed(
        Command::new("haproxy")
            .arg("-f")
            .arg(&hand_cfg)
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start the hand-written haproxy")?,
    );
    // The VIP, as every node balances it; the route to the VIP range is
    // the bench's (an image has its default route).
    let leases = [("web".to_string(), VIP)].into();
    let vips = control::vip::plan(&services, &leases);
    agent::overlay::nft::apply(&agent::overlay::nft::render_vips(&vips, subnet))?;
    Command::new("ip")
        .args(["route", "add", "198.18.0.0/16", "dev", "strata-br"])
        .status()?;
    let wait_for = |addr: SocketAddr| -> anyhow::Result<()> {
        for _ in 0..100 {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{addr} does not answer")
    };
    for addr in [
        SocketAddr::from((Ipv4Addr::LOCALHOST, EDGE_PORT)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, HAND_PORT)),
        SocketAddr::from((VIP, VIP_PORT)),
    ] {
        wait_for(addr)?;
    }

    let direct = format!("http://{}/", backends[0]);
    let through_edge = format!("http://127.0.0.1:{EDGE_PORT}/");
    let through_hand = format!("http://127.0.0.1:{HAND_PORT}/");
    let through_vip = format!("http://{VIP}:{VIP_PORT}/");
    println!(
        "edge bench: 2 backends on another node (over VXLAN), wrk -t1 -c{CONNECTIONS}, {ROUNDS} rounds of {SECONDS}s per path, interleaved, medians"
    );
    let result = (|| -> anyhow::Result<()> {
        for close in [false, true] {
            let (mut d, mut e, mut h) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                d.push(wrk(&direct, close)?);
                e.push(wrk(&through_edge, close)?);
                h.push(wrk(&through_hand, close)?);
            }
            let (d, e, h) = (medians(&d), medians(&e), medians(&h));
            let kind = if close {
                "new connection per request"
            } else {
                "keep-alive"
            };
            println!("  HTTP, {kind}:");
            for (name, f) in [
                ("direct to one task", d),
                ("through the edge", e),
                ("hand-written haproxy", h),
            ] {
                println!(
                    "    {name:<22} {:>9.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                    f.rps, f.p50_ms, f.p99_ms
                );
            }
            println!(
                "    edge / hand-written: {:.2} of the throughput (target >= 0.95), p99 {:+.2} ms; edge p99 over direct {:+.2} ms (target <= 1 ms)",
                e.rps / h.rps,
                e.p99_ms - h.p99_ms,
                e.p99_ms - d.p99_ms
            );
        }
        let (mut d, mut v) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            d.push(wrk(&direct, true)?);
            v.push(wrk(&through_vip, true)?);
        }
        let (d, v) = (medians(&d), medians(&v));
        println!("  VIP (nftables DNAT over 2 backends), new connection per request:");
        println!(
            "    direct to one task     {:>9.0} conn/s  p99 {:>6.2} ms",
            d.rps, d.p99_ms
        );
        println!(
            "    through the VIP        {:>9.0} conn/s  p99 {:>6.2} ms  ({:.2} of direct)",
            v.rps,
            v.p99_ms,
            v.rps / d.rps
        );
        Ok(())
    })();
    // The VIP table and the route go with the lab's namespaces.
    drop(edge);
    result
}
