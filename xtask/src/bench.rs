//! `cargo xtask bench AREA`: runs one benchmark program and lets it print
//! its figures. The programs live beside the code they measure
//! (`agent/benches/*.rs`, `harness = false`), so the xtask itself never links
//! the agent and builds on a machine that has no build dependencies yet.

use std::process::Command;

use crate::{project_root, sh};

/// The benchmarks there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Area {
    /// Overlay throughput beside the underlay, join convergence, DNS latency (root).
    Overlay,
    /// Idle agent memory, and how many heartbeating agents one master holds.
    Cluster,
}

impl Area {
    fn bench_target(self) -> &'static str {
        match self {
            Area::Overlay => "overlay",
            Area::Cluster => "cluster",
        }
    }
}

/// Builds (optimised) and runs the benchmark program of `area`.
pub fn run(area: Area) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    sh::run(Command::new(cargo).current_dir(project_root()).args([
        "bench",
        "-p",
        "agent",
        "--bench",
        area.bench_target(),
    ]))
}
