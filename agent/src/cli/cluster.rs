//! `strata cluster init|status|run-node`: make a cluster's files
//! ([`crate::cluster::init`]), ask the masters how the cluster is, run this
//! node's membership in the foreground.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;

use super::output;
use super::target::{Target, runtime};
use crate::cluster;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make a new cluster from cluster.toml: CA, join token, one user-data
    /// file per node, the CLI's token and context.
    Init {
        /// The operator's cluster.toml.
        #[arg(long)]
        config: PathBuf,
        /// Directory for the files.
        #[arg(long)]
        out: PathBuf,
        /// Replace the files of an existing cluster in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Masters, etcd health and leader, nodes Ready.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run this node's cluster membership in the foreground from a given
    /// user-data file (masters: etcd, the API; every node: join and
    /// heartbeats). For hosts without the image's first-boot providers.
    RunNode {
        /// The node's user-data.
        #[arg(long)]
        user_data: PathBuf,
        /// Where the node keeps its identity.
        #[arg(long, default_value = crate::state::STATE_DIR)]
        state_dir: PathBuf,
        /// Masters: the address the API listens on [default: 0.0.0.0:<api_port>].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
}

pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init { config, out, force } => init(&config, &out, force),
        ClusterCommand::Status { target, json } => {
            let client = target.client()?;
            let status = runtime()?.block_on(client.cluster_status())?;
            output::emit(json, &status, output::cluster_status)
        }
        ClusterCommand::RunNode {
            user_data,
            state_dir,
            listen,
        } => run_node(&user_data, state_dir, listen),
    }
}

/// Writes a new cluster's files under `out` and says what they are.
fn init(config: &Path, out: &Path, force: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let parsed = configs::cluster::ClusterConfig::parse(&config.display().to_string(), &text)?;
    let secrets = cluster::init::Secrets::generate(&parsed.name)?;
    let files = cluster::init::plan(&parsed, &text, &secrets)?;
    cluster::init::write(out, &files, force)?;
    println!(
        "cluster `{}`: {} file(s) written to {}",
        parsed.name,
        files.len(),
        out.display()
    );
    for f in &files {
        println!("  {}", out.join(&f.path).display());
    }
    println!("CA sha256: {}", secrets.ca.fingerprint()?);
    println!(
        "use the CLI with: export STRATA_CONTEXT={}",
        out.join("cli/context.toml").display()
    );
    Ok(())
}

/// Runs the node's side of the cluster from `user_data` until the process
/// ends, as the daemon would ([`cluster::run`]) but with `--listen`.
fn run_node(
    user_data: &Path,
    state_dir: PathBuf,
    listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(user_data)
        .with_context(|| format!("cannot read {}", user_data.display()))?;
    let ud = configs::user_data::UserData::parse(&user_data.display().to_string(), &text)?;
    runtime()?.block_on(async {
        if ud.role == configs::Role::Master {
            cluster::run_master(cluster::MasterOptions {
                state_dir,
                user_data: ud,
                etcd_paths: crate::etcd::render::EtcdPaths::standard(),
                listen,
            })
            .await
        } else {
            cluster::run_agent(cluster::AgentOptions {
                state_dir,
                user_data: ud,
                endpoints: None,
                underlay: None,
            })
            .await
        }
    })
}
