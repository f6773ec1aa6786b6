//! `cargo xtask` entry point: parses the command line and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print benchmark figures for an area.
    Bench {
        #[command(subcommand)]
        area: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Container runtime: start latency against crun, agent RSS, pull throughput.
    Runtime {
        /// Starts measured for each runtime.
        #[arg(long, default_value_t = 200)]
        count: usize,
    },
    /// Internal: the crun half, run under `unshare -m`.
    #[command(hide = true)]
    RuntimeCrunInner {
        #[arg(long)]
        bundle: PathBuf,
        #[arg(long)]
        empty: PathBuf,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Bench {
            area: Bench::Runtime { count },
        } => xtask::bench_runtime::run(count),
        Command::Bench {
            area: Bench::RuntimeCrunInner { bundle, empty },
        } => xtask::bench_runtime::crun_inner(&bundle, &empty),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
