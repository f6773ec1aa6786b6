//! `strata agent`: the node daemon, started by systemd as
//! strata-agent.service ([`crate::daemon`]).

use std::path::PathBuf;

use clap::Args;

// The daemon's flags (a `//` comment, to leave clap's about text to the
// `Agent` variant's doc comment).
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The role defaults baked into the image.
    #[arg(long, default_value = "/etc/strata/role.toml")]
    role_file: PathBuf,
    /// Where the node keeps its state (on the state partition).
    #[arg(long, default_value = crate::state::STATE_DIR)]
    state_dir: PathBuf,
    /// Where the health file goes.
    #[arg(long, default_value = crate::state::RUN_DIR)]
    run_dir: PathBuf,
    /// Read user-data from this file instead of the providers.
    #[arg(long)]
    user_data: Option<PathBuf>,
    /// Also print the ready marker on this console device.
    #[arg(long)]
    console: Option<PathBuf>,
    /// Report once and exit instead of staying up (once Ready when the
    /// node has user-data).
    #[arg(long)]
    once: bool,
    /// Do not write the user-data's network settings for
    /// systemd-networkd (outside an image).
    #[arg(long)]
    no_network: bool,
}

/// Runs the daemon until the process ends (or once, with `--once`).
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    crate::daemon::run(&crate::daemon::Options {
        role_file: args.role_file,
        state_dir: args.state_dir,
        run_dir: args.run_dir,
        user_data: args.user_data,
        console: args.console,
        once: args.once,
        apply_network: !args.no_network,
    })
}
