//! Cluster formation: `strata cluster init` ([`init`]; the CLI that reads
//! the context it writes is `crate::cli`), a node's identity under its
//! state directory ([`identity`]), joining and heartbeats ([`node`]) and the
//! masters' control plane ([`master`], with the scheduler's leader loop,
//! [`scheduler`]); the node model is
//! `control::model`.
//!
//! The daemon calls [`run_master`] on masters and [`run_agent`] on private
//! and public agents; both run until the process ends.

pub mod assignments;
pub mod bundles;
pub mod identity;
pub mod init;
pub mod master;
pub mod network;
pub mod node;
pub mod rollout;
pub mod scheduler;
pub mod sysinfo;
pub mod upgrade;

use std::path::PathBuf;
use std::sync::Arc;

pub use master::{MasterOptions, run_master, run_master_with};
pub use node::{AgentOptions, run_agent, run_agent_with};

use crate::firewall::NodeFirewall;

/// Runs the cluster side of a node from its user-data until the process
/// ends: [`run_master`] (etcd through systemd, the API, membership) on
/// masters, [`run_agent`] (join, register, heartbeats) on agents. What the
/// daemon calls once `bootstrap::discover` returned the user-data, with
/// the node's `firewall`, whose overlay part [`network`] keeps in line
/// with the node list.
pub async fn run(
    state_dir: PathBuf,
    user_data: configs::user_data::UserData,
    firewall: Option<Arc<NodeFirewall>>,
) -> anyhow::Result<()> {
    if user_data.role == configs::Role::Master {
        run_master_with(
            MasterOptions {
                state_dir,
                user_data,
                etcd_paths: crate::etcd::render::EtcdPaths::standard(),
                listen: None,
                update_key: crate::upgrade::UPDATE_KEY.into(),
            },
            firewall,
        )
        .await
    } else {
        run_agent_with(
            AgentOptions {
                state_dir,
                user_data,
                endpoints: None,
                underlay: None,
            },
            firewall,
        )
        .await
    }
}

#[cfg(test)]
mod tests;
