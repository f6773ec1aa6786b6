//! `cargo xtask`: thin entry point; the work lives in the library.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, test and benchmark Strata")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark and print its figures.
    Bench {
        #[command(subcommand)]
        area: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Overlay throughput against the underlay, join convergence, DNS latency (needs root).
    Overlay,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench {
            area: Bench::Overlay,
        } => xtask::bench::overlay::run(),
    }
}
