//! `cargo xtask`: builds images, runs every test tier, boots VMs and prints
//! benchmarks. Only the xtask runs host tools; the crates stay pure.

pub mod bench;
pub mod bench_boot;
pub mod bench_image;
pub mod bench_runtime;
pub mod bench_upgrade;
pub mod cluster;
pub mod deps;
pub mod fresh;
pub mod fuzz;
pub mod image;
pub mod qemu;
pub mod residue;
pub mod sh;
pub mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The Strata build and test driver.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the test tiers (format, clippy, unit, host integration, QEMU),
    /// installing what they need first.
    Test(test::Args),
    /// List (or `--install`) the host packages each step needs.
    Deps(deps::Args),
    /// Build the bootable disk images of the roles.
    Image(image::Args),
    /// Boot a built image under QEMU with the serial console on this terminal.
    Qemu(qemu::Args),
    /// A local cluster in QEMU: `up`, `status`, `down`.
    Cluster {
        #[command(subcommand)]
        command: cluster::Command,
    },
    /// Build the fuzz targets (`agent/fuzz`) and run each for a number of
    /// inputs.
    Fuzz(fuzz::Args),
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        area: bench::Area,
    },
    /// Internal: the fresh-machine tier alone, as `cargo xtask test` runs
    /// it beside the host tier.
    #[command(hide = true)]
    FreshTier,
}

/// Runs the xtask CLI and maps errors to an exit code.
pub fn main() -> ExitCode {
    // SAFETY: no other thread exists yet. Every process the xtask starts
    // inherits the mark, so that `residue` finds what a tier left running,
    // and the host prefix, so that the agents it starts keep their tasks'
    // cgroups and namespaces apart from any other run's.
    unsafe {
        std::env::set_var(residue::MARK, residue::mark_value());
        std::env::set_var(residue::HOST_PREFIX, residue::host_prefix());
    }
    if let Err(err) = residue::check_host_prefix(&residue::host_prefix()) {
        eprintln!("xtask: error: {err:#}");
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test::run(&args),
        Command::Deps(args) => deps::run(&args),
        Command::Image(args) => image::run(&args),
        Command::Qemu(args) => qemu::run(&args),
        Command::Bench { area } => bench::run(area),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Cluster { command } => cluster::run(&command),
        Command::FreshTier => fresh::run(&project_root()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of this crate's directory).
pub fn project_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}

/// Whether this process runs under CI (`CI` set to `true`, `1` or `yes`).
pub fn under_ci() -> bool {
    qemu_tests::env::under_ci()
}
