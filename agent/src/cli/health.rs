//! `strata health`: the node's health marker; fails unless the node is
//! healthy. With `--wait` it gates boot-complete.target ([`crate::health`]).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

// The command's flags (a `//` comment, to leave clap's about text to the
// `Health` variant's doc comment).
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// Wait for the agent to report (gates boot-complete.target).
    #[arg(long)]
    wait: bool,
    /// How long to wait, seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Where the agent writes the health file.
    #[arg(long, default_value = crate::state::RUN_DIR)]
    run_dir: PathBuf,
}

/// Prints the health marker, or fails with why the node is not healthy.
pub fn run(args: HealthArgs) -> anyhow::Result<()> {
    let h = crate::health::check(&args.run_dir, args.wait, Duration::from_secs(args.timeout))?;
    println!("{}", h.marker());
    Ok(())
}
