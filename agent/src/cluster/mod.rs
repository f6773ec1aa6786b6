//! Cluster formation: `strata cluster init` ([`init`]), the CLI's context
//! ([`context`]), a node's identity under its state directory
//! ([`identity`]), joining and heartbeats ([`node`]), the masters' control
//! plane ([`master`]) and the node model ([`model`]).
//!
//! The daemon calls [`run_master`] on masters and [`run_agent`] on private
//! and public agents; both run until the process ends.

pub mod bench;
pub mod context;
pub mod identity;
pub mod init;
pub mod master;
pub mod model;
pub mod node;
pub mod show;
pub mod sysinfo;

use std::path::PathBuf;

pub use master::{MasterOptions, run_master};
pub use node::{AgentOptions, run_agent};

/// Writes one line to the agent's log (stderr, which systemd's journal keeps).
pub fn log(message: &str) {
    eprintln!("strata: {message}");
}

/// Where a node keeps what it learned; `/var/lib/strata` on an image.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/strata")
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
