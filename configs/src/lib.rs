//! Typed, validated models of every configuration file Strata reads.
//!
//! Pure: no I/O, no async. Callers read the bytes and pass them in with the
//! name of their origin (usually the path) so that every error names the file,
//! the line and column, the field and what was expected.
//!
//! - [`role::RoleConfig`]: the role defaults baked into an image
//!   (`configs/roles/{master,private,public}.toml`).
//! - [`cluster::ClusterConfig`]: the operator's `cluster.toml`.
//! - [`user_data::UserData`]: what one node is handed at first boot.

pub mod cluster;
mod error;
mod locate;
pub mod net;
pub mod role;
pub mod user_data;

use std::fmt;
use std::str::FromStr;

pub use error::Error;

/// The node roles of a Strata cluster.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs etcd and the API.
    Master,
    /// Runs workloads.
    Private,
    /// Runs workloads exposed outside the cluster.
    Public,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Master, Role::Private, Role::Public];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Private => "private",
            Role::Public => "public",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "master" => Ok(Role::Master),
            "private" => Ok(Role::Private),
            "public" => Ok(Role::Public),
            other => Err(format!(
                "unknown role `{other}`, expected one of master, private, public"
            )),
        }
    }
}

/// Which configuration file a text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Role,
    Cluster,
    UserData,
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "role" => Ok(Kind::Role),
            "cluster" => Ok(Kind::Cluster),
            "user-data" => Ok(Kind::UserData),
            other => Err(format!(
                "unknown kind `{other}`, expected one of role, cluster, user-data"
            )),
        }
    }
}

/// Parses and validates `text` (named `origin` in errors) as `kind`, or as the
/// kind its top-level keys suggest, and returns a one-paragraph summary.
pub fn check(origin: &str, text: &str, kind: Option<Kind>) -> Result<String, Error> {
    let kind = kind.unwrap_or_else(|| guess_kind(text));
    Ok(match kind {
        Kind::Role => {
            let r = role::RoleConfig::parse(origin, text)?;
            format!(
                "{origin}: role defaults for `{}` ({} extra packages, API port {})",
                r.role,
                r.packages.len(),
                r.agent.api_port
            )
        }
        Kind::Cluster => {
            let c = cluster::ClusterConfig::parse(origin, text)?;
            format!(
                "{origin}: cluster `{}` with {} master(s), {} node(s), overlay {} (/{} per node, VNI {})",
                c.name,
                c.masters.len(),
                c.nodes.len(),
                c.overlay.cidr,
                c.overlay.subnet_prefix,
                c.overlay.vni
            )
        }
        Kind::UserData => {
            let u = user_data::UserData::parse(origin, text)?;
            format!(
                "{origin}: user-data for node `{}` ({}) of cluster `{}`",
                u.name, u.role, u.cluster
            )
        }
    })
}

fn guess_kind(text: &str) -> Kind {
    let top: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    if top.contains(&"join_token") {
        Kind::UserData
    } else if top.contains(&"masters") {
        Kind::Cluster
    } else {
        Kind::Role
    }
}

#[cfg(test)]
mod tests;
