//! `cargo xtask cluster up|status|down`: a whole local cluster in QEMU from
//! freshly built images (1 master, 1 private, 1 public by default) on a
//! private network of its own, with the first master's API forwarded to
//! loopback. The VMs run detached; their files live in `target/cluster/`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use configs::Role;
use qemu_tests::cluster::{Layout, Prepared};

use crate::image::{self, Kernel, RoleArg};
use crate::{deps, project_root};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Build missing images, boot the cluster, wait until every node is Ready.
    Up {
        /// Masters: 1 or 3.
        #[arg(long, default_value_t = 1)]
        masters: usize,
        /// Private agents.
        #[arg(long, default_value_t = 1)]
        private: usize,
        /// Public agents.
        #[arg(long, default_value_t = 1)]
        public: usize,
    },
    /// The cluster's status through the forwarded API.
    Status,
    /// Stop every VM of the cluster and remove its files.
    Down,
}

fn dir() -> PathBuf {
    project_root().join("target/cluster")
}

/// What `up` leaves for `status` and `down`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    api_port: u16,
    context: PathBuf,
    strata: PathBuf,
    vms: Vec<(String, u32)>,
}

pub fn run(command: &Command) -> anyhow::Result<()> {
    match command {
        Command::Up {
            masters,
            private,
            public,
        } => up(Layout {
            masters: *masters,
            private: *private,
            public: *public,
        }),
        Command::Status => status(),
        Command::Down => down(),
    }
}

fn up(layout: Layout) -> anyhow::Result<()> {
    if ![1, 3].contains(&layout.masters) {
        bail!(
            "--masters {} is not supported, expected 1 or 3",
            layout.masters
        );
    }
    if dir().join("state.json").exists() {
        bail!(
            "a cluster is already up (target/cluster/state.json): run `cargo xtask cluster down` first"
        );
    }
    deps::ensure("cargo xtask cluster up", deps::BOOT)?;
    let images = project_root().join("target/images");
    let strata = project_root().join("target/release/strata");
    let mut roles = vec![Role::Master];
    if layout.private > 0 {
        roles.push(Role::Private);
    }
    if layout.public > 0 {
        roles.push(Role::Public);
    }
    for role in roles {
        if !images.join(format!("strata-{role}.qcow2")).exists() || !strata.exists() {
            image::build(&image::Args {
                role: RoleArg::One(role),
                out: None,
                kernel: Kernel::Cloud,
                signing_key: None,
                disk_size_mib: ::image::plan::DEFAULT_DISK_SIZE / ::image::plan::MIB,
                version: None,
            })?;
        }
    }
    let dir = dir();
    let _ = std::fs::remove_dir_all(&dir);
    let prepared = Prepared::new(&dir, layout, &strata, &images)?;
    let mut vms = Vec::new();
    let start = Instant::now();
    for node in &prepared.nodes {
        let pid = qemu_tests::spawn_detached(prepared.vm_config(node)?, Some(&prepared.slot))?;
        eprintln!(
            "xtask: {} ({}, {}) booting, pid {pid}, console {}",
            node.name,
            node.role,
            node.address,
            dir.join(format!("{}-serial.log", node.name)).display()
        );
        vms.push((node.name.clone(), pid));
    }
    let state = State {
        api_port: prepared.api_port,
        context: prepared.context(),
        strata: strata.clone(),
        vms,
    };
    write_state(&state)?;
    let names: Vec<&str> = prepared.nodes.iter().map(|n| n.name.as_str()).collect();
    let states = prepared.wait_ready(&names, Duration::from_secs(600))?;
    println!(
        "cluster up: {} node(s) Ready after {:.0}s: {:?}",
        states.len(),
        start.elapsed().as_secs_f64(),
        states
    );
    println!("{}", prepared.strata(&["node", "list"])?);
    println!(
        "use it with:\n  {} --context {} --endpoint 127.0.0.1:{} node list\nstop it with: cargo xtask cluster down",
        strata.display(),
        prepared.context().display(),
        prepared.api_port
    );
    Ok(())
}

fn write_state(state: &State) -> anyhow::Result<()> {
    let path = dir().join("state.json");
    let text = serde_json::to_string_pretty(state).context("cannot serialize the cluster state")?;
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn read_state() -> anyhow::Result<State> {
    let path = dir().join("state.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no cluster is up ({} is missing): run `cargo xtask cluster up`",
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: not a cluster state file", path.display()))
}

fn status() -> anyhow::Result<()> {
    let state = read_state()?;
    for (name, pid) in &state.vms {
        let alive = Path::new(&format!("/proc/{pid}")).exists();
        println!(
            "{name}: pid {pid} {}",
            if alive { "running" } else { "gone" }
        );
    }
    crate::sh::run(
        std::process::Command::new(&state.strata)
            .args(["cluster", "status", "--context"])
            .arg(&state.context)
            .args(["--endpoint", &format!("127.0.0.1:{}", state.api_port)]),
    )
}

fn down() -> anyhow::Result<()> {
    let state = read_state()?;
    for (name, pid) in &state.vms {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let is_qemu =
            std::fs::read_to_string(proc_dir.join("comm")).is_ok_and(|c| c.starts_with("qemu"));
        if is_qemu {
            crate::sh::run(std::process::Command::new("kill").arg(pid.to_string()))?;
            eprintln!("xtask: stopped {name} (pid {pid})");
        }
    }
    std::fs::remove_dir_all(dir()).with_context(|| format!("cannot remove {}", dir().display()))?;
    println!("cluster down");
    Ok(())
}
