//! `cargo xtask bench cluster` (`cargo bench -p agent --bench cluster`):
//! on loopback, one master (`strata` with a real etcd started here) and one
//! real agent, then prints
//! - the resident memory of the idle agent (and of the master and etcd);
//! - how many simulated agents one master holds with no missed heartbeat:
//!   agents in this process, each with its own key, certificate and TLS
//!   connection, joined with the real token and heartbeating at the
//!   cluster's default interval, ramped through `STRATA_BENCH_STEPS`
//!   (default 500,1000,2000,4000,8000,12000,16000) until a step misses one
//!   (a failed or late heartbeat, a node shown Unreachable, a failed join).
//!   Each step is held for `STRATA_BENCH_WINDOW` seconds (default 20).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::cli::context::Context;
use agent::testing::bench::ramp;
use anyhow::{Context as _, bail};
use control::model::{NodeState, NodeStatus};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");
/// Seconds the real agent idles after Ready before its memory is read.
const IDLE_SECONDS: u64 = 15;

/// Processes killed and a directory removed on drop.
struct Scratch {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Scratch {
    fn spawn(&mut self, program: &str, args: &[&str], log: &str) -> anyhow::Result<u32> {
        let file = std::fs::File::create(self.dir.join(log))
            .with_context(|| format!("cannot create {log}"))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {program}"))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir.join(log)).unwrap_or_default()
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident memory of `pid` in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kib as f64 / 1024.0)
}

fn env_or<T: std::str::FromStr>(name: &str, default: &str) -> anyhow::Result<Vec<T>> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{name}: `{s}` is not a number"))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    agent::obs::init();
    if !qemu_tests::testenv::on_path("etcd") {
        bail!("`etcd` is missing: install etcd-server (see xtask/src/deps.rs)");
    }
    let steps: Vec<usize> = env_or("STRATA_BENCH_STEPS", "500,1000,2000,4000,8000,12000,16000")?;
    let window = Duration::from_secs(env_or::<u64>("STRATA_BENCH_WINDOW", "20")?[0]);
    let dir = std::env::temp_dir().join(format!("strata-bench-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut s = Scratch {
        dir: dir.clone(),
        children: Vec::new(),
    };
    let p = |f: &str| dir.join(f).display().to_string();

    let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
    let cluster = format!(
        "name = \"bench\"\nmasters = [\"127.0.0.1\"]\napi_port = {api_port}\n\
         [etcd]\nexternal = [\"http://127.0.0.1:{etcd_port}\"]\n\
         [overlay]\ncidr = \"10.0.0.0/8\"\nsubnet_prefix = 24\n\
         [[nodes]]\nname = \"master-1\"\nrole = \"master\"\naddress = \"127.0.0.1/8\"\n\
         [[nodes]]\nname = \"agent-1\"\nrole = \"private\"\n"
    );
    std::fs::write(dir.join("cluster.toml"), cluster)?;
    let init = Command::new(STRATA)
        .args([
            "cluster",
            "init",
            "--config",
            &p("cluster.toml"),
            "--out",
            &p("out"),
        ])
        .output()?;
    if !init.status.success() {
        bail!(
            "strata cluster init: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    let client = format!("http://127.0.0.1:{etcd_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let etcd = s.spawn(
        "etcd",
        &[
            "--name",
            "bench",
            "--data-dir",
            &p("etcd-data"),
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("bench={peer}"),
        ],
        "etcd.log",
    )?;
    let master = s.spawn(
        STRATA,
        &[
            "cluster",
            "run-node",
            "--user-data",
            &p("out/user-data/master-1.toml"),
            "--state-dir",
            &p("master"),
            "--listen",
            &format!("127.0.0.1:{api_port}"),
        ],
        "master.log",
    )?;
    let agent = s.spawn(
        STRATA,
        &[
            "cluster",
            "run-node",
            "--user-data",
            &p("out/user-data/agent-1.toml"),
            "--state-dir",
            &p("agent"),
        ],
        "agent.log",
    )?;
    let context = p("out/cli/context.toml");
    let start = Instant::now();
    loop {
        let list = Command::new(STRATA)
            .args(["node", "list", "--json", "--context", &context])
            .output()?;
        let ready = list.status.success()
            && serde_json::from_slice::<Vec<NodeStatus>>(&list.stdout)
                .is_ok_and(|n| n.len() == 2 && n.iter().all(|n| n.state == NodeState::Ready));
        if ready {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "the cluster did not become Ready within 60s\nmaster log:\n{}\nagent log:\n{}",
                s.log("master.log"),
                s.log("agent.log")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "cluster bench: master, agent and etcd on loopback, Ready {:.1}s after start",
        start.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(IDLE_SECONDS));
    println!(
        "idle RSS {IDLE_SECONDS}s after Ready: agent {:.1} MiB, master {:.1} MiB (with its API), etcd {:.1} MiB",
        rss_mib(agent)?,
        rss_mib(master)?,
        rss_mib(etcd)?
    );

    let template_path = p("out/user-data/agent-1.toml");
    let template = configs::user_data::UserData::parse(
        &template_path,
        &std::fs::read_to_string(&template_path)?,
    )?;
    let admin = Context::load(Path::new(&context))?.client(None)?;
    let results = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(ramp(template, admin, &steps, window))?;
    let held = results
        .iter()
        .filter(|s| s.missed() == 0)
        .map(|s| s.agents)
        .max()
        .unwrap_or(0);
    if results.iter().all(|s| s.missed() == 0) {
        println!(
            "simulated agents one master held with no missed heartbeat: {held} (the last step; raise STRATA_BENCH_STEPS to find the limit)"
        );
    } else {
        println!("simulated agents one master held with no missed heartbeat: {held}");
    }
    println!("master RSS after the ramp: {:.1} MiB", rss_mib(master)?);
    Ok(())
}
