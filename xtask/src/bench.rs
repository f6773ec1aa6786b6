//! `cargo xtask bench AREA`: runs one benchmark program and lets it print
//! its figures. The programs live beside the code they measure
//! (`agent/benches/*.rs`, `harness = false`), so the xtask itself never links
//! the agent and builds on a machine that has no build dependencies yet.

use std::process::Command;

use crate::{project_root, sh};

/// The benchmarks there are.
#[derive(Debug, clap::Subcommand)]
pub enum Area {
    /// Overlay throughput beside the underlay, join convergence, DNS latency (root).
    Overlay,
    /// Idle agent memory and how many heartbeating agents one master holds (root).
    Cluster,
    /// Placements per second persisted to etcd over 5000 simulated nodes, a
    /// 100-instance rolling deployment, leader failover, memory.
    Scheduler,
    /// Jobs: scheduled time to task running (p50, p99) with 1000 jobs due
    /// in the same minute over 500 simulated nodes, and the scheduling
    /// master's memory with 10 000 jobs defined.
    Jobs,
    /// The edge proxy's requests per second and p50/p99 latency beside
    /// direct and a hand-written HAProxy (keep-alive and new connections),
    /// and a VIP's connections per second beside direct (root; wrk).
    Edge,
    /// Image builds (cold, warm), sizes, and QEMU start to the ready marker.
    Image(crate::bench_image::Args),
    /// QEMU start to Ready per role, beside systemd's multi-user.target.
    Boot(crate::bench_boot::Args),
    /// One node's upgrade by image swap beside a plain reboot, the bytes
    /// written and the bundle's download rate (QEMU).
    Upgrade,
    /// Container runtime: start latency against crun, agent RSS, pull throughput (root).
    Runtime {
        /// Starts measured for each runtime.
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
    /// Internal: the crun half of `bench runtime`, run under `unshare -m`.
    #[command(hide = true)]
    RuntimeCrunInner {
        #[arg(long)]
        bundle: std::path::PathBuf,
        #[arg(long)]
        empty: std::path::PathBuf,
    },
}

/// Runs the benchmark of `area`, then fails if it left anything behind
/// (processes, mounts, namespaces, interfaces, cgroups, nftables tables).
pub fn run(area: Area) -> anyhow::Result<()> {
    let inner = matches!(area, Area::RuntimeCrunInner { .. });
    let before = crate::residue::Snapshot::take();
    run_area(area)?;
    if !inner && let Some(left) = crate::residue::Snapshot::take().left_behind_since(&before) {
        anyhow::bail!("the benchmark left things behind:\n{left}");
    }
    Ok(())
}

fn run_area(area: Area) -> anyhow::Result<()> {
    match area {
        Area::Overlay => agent_bench("overlay", crate::deps::BENCH_HOST),
        Area::Cluster => agent_bench("cluster", crate::deps::BENCH_HOST),
        Area::Scheduler => agent_bench("scheduler", crate::deps::BENCH_HOST),
        Area::Jobs => agent_bench("jobs", crate::deps::BENCH_HOST),
        Area::Edge => agent_bench("edge", crate::deps::BENCH_EDGE),
        Area::Image(args) => crate::bench_image::run(&args),
        Area::Boot(args) => crate::bench_boot::run(&args),
        Area::Upgrade => crate::bench_upgrade::run(),
        Area::Runtime { count } => crate::bench_runtime::run(count),
        Area::RuntimeCrunInner { bundle, empty } => {
            crate::bench_runtime::crun_inner(&bundle, &empty)
        }
    }
}

/// Builds (optimised) and runs the benchmark program `agent/benches/NAME.rs`.
fn agent_bench(name: &str, steps: &[crate::deps::Step]) -> anyhow::Result<()> {
    crate::deps::ensure(&format!("cargo xtask bench {name}"), steps)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    sh::run(
        Command::new(cargo)
            .current_dir(project_root())
            .args(["bench", "-p", "agent", "--bench", name]),
    )
}
