//! `cargo xtask bench cluster`: figures of cluster formation on this host.
//!
//! Builds `strata` (release), makes a one-master cluster on loopback with a
//! real etcd started here, and prints: the resident memory of an idle agent
//! (and of the master), then how many simulated agents (in one process,
//! each with its own key, certificate and TLS connection, heartbeating at
//! the cluster's default interval) one master holds with no missed
//! heartbeat, ramping up until one is missed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::{deps, project_root, sh};

/// Arguments of `cargo xtask bench cluster`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Total simulated agents at each step of the ramp.
    #[arg(long, default_value = "500,1000,2000,4000,8000,12000,16000")]
    pub steps: String,
    /// Seconds each step is held and measured.
    #[arg(long, default_value_t = 20)]
    pub window_seconds: u64,
    /// Seconds the real agent idles after Ready before its memory is read.
    #[arg(long, default_value_t = 15)]
    pub idle_seconds: u64,
}

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
    fn spawn(&mut self, program: &Path, args: &[&str], log: &str) -> anyhow::Result<u32> {
        let file = std::fs::File::create(self.dir.join(log))
            .with_context(|| format!("cannot create {log}"))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {}", program.display()))?;
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

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn strata_binary(root: &Path) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    sh::run(Command::new(cargo).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "agent",
        "--bin",
        "strata",
    ]))?;
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release/strata"))
}

/// Runs the benchmark and prints its figures.
pub fn run(args: &Args) -> anyhow::Result<()> {
    deps::ensure("cargo xtask bench cluster", &["etcd-server"], &[])?;
    let root = project_root();
    let strata = strata_binary(&root)?;
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
         [[nodes]]\nname = \"master-1\"\nrole = \"master\"\naddress = \"127.0.0.1/8\"\n\
         [[nodes]]\nname = \"agent-1\"\nrole = \"private\"\n"
    );
    std::fs::write(dir.join("cluster.toml"), cluster)?;
    sh::output(Command::new(&strata).args([
        "cluster",
        "init",
        "--config",
        &p("cluster.toml"),
        "--out",
        &p("out"),
    ]))?;
    let client = format!("http://127.0.0.1:{etcd_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let etcd = s.spawn(
        Path::new("etcd"),
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
        &strata,
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
        &strata,
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
        let list = Command::new(&strata)
            .args(["node", "list", "--json", "--context", &context])
            .output()?;
        let ready = list.status.success()
            && serde_json::from_slice::<serde_json::Value>(&list.stdout).is_ok_and(|v| {
                v.as_array().is_some_and(|nodes| {
                    nodes.len() == 2 && nodes.iter().all(|n| n["state"] == "ready")
                })
            });
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
        "cluster Ready {:.1}s after start (master, agent and etcd on loopback)",
        start.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(args.idle_seconds));
    println!(
        "idle RSS {}s after Ready: agent {:.1} MiB, master {:.1} MiB (with its API), etcd {:.1} MiB",
        args.idle_seconds,
        rss_kib(agent)? as f64 / 1024.0,
        rss_kib(master)? as f64 / 1024.0,
        rss_kib(etcd)? as f64 / 1024.0
    );
    sh::run(Command::new(&strata).args([
        "cluster",
        "bench-agents",
        "--user-data",
        &p("out/user-data/agent-1.toml"),
        "--context",
        &context,
        "--steps",
        &args.steps,
        "--window-seconds",
        &args.window_seconds.to_string(),
    ]))?;
    println!(
        "master RSS after the ramp: {:.1} MiB",
        rss_kib(master)? as f64 / 1024.0
    );
    Ok(())
}
