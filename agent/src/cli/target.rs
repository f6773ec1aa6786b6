//! How a command reaches what it acts on: a cluster through its API
//! ([`Target`]: `--context`, `--endpoint`, `$STRATA_CONTEXT`) or this
//! node's state directory ([`StateDir`]). Task commands that can do either
//! decide once, in [`Scope::of`].

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::context;
use crate::api::client::ApiClient;

/// Where the CLI finds the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The CLI context file [default: $STRATA_CONTEXT, else ~/.config/strata/context.toml].
    #[arg(long, global = true)]
    pub context: Option<PathBuf>,
    /// Use this API endpoint (host:port) instead of the context's.
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
}

impl Target {
    /// Whether the CLI is pointed at a cluster: a context or an endpoint
    /// given, or `$STRATA_CONTEXT` set.
    pub fn is_given(&self) -> bool {
        self.context.is_some()
            || self.endpoint.is_some()
            || std::env::var_os("STRATA_CONTEXT").is_some_and(|v| !v.is_empty())
    }

    /// A client of the cluster's API: the context file's endpoints (or
    /// `--endpoint`), CA and token.
    pub fn client(&self) -> anyhow::Result<ApiClient> {
        let path = context::resolve(self.context.as_deref());
        context::Context::load(&path)?.client(self.endpoint.clone())
    }
}

// This node's state directory (a `//` comment, as on every flattened
// argument struct here but `Target`, to leave clap's about texts alone).
#[derive(Debug, Clone, Args)]
pub struct StateDir {
    /// State directory (tasks in `tasks/`, images in `images/`).
    #[arg(long, default_value = crate::state::STATE_DIR)]
    pub state_dir: PathBuf,
}

/// Where a task command acts.
#[derive(Debug)]
pub enum Scope {
    /// The cluster, through its API.
    Cluster(Target),
    /// The tasks in this node's state directory.
    Node(PathBuf),
}

impl Scope {
    /// The cluster when a context or an endpoint is given (`--context`,
    /// `--endpoint`, `$STRATA_CONTEXT`), unless `--local` or a state
    /// directory other than the default is given; else this node.
    pub fn of(target: Target, state: StateDir, local: bool) -> Scope {
        let default_dir = state.state_dir == Path::new(crate::state::STATE_DIR);
        if !local && target.is_given() && default_dir {
            Scope::Cluster(target)
        } else {
            Scope::Node(state.state_dir)
        }
    }
}

/// A multi-threaded async runtime for the API calls of one command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
