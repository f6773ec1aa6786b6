//! Node upgrades as the cluster keeps them: the update bundles the masters
//! hold (`/strata/bundles/<sha256>`), the upgrade or rollback an operator
//! ordered for a node (`/strata/upgrades/<node>`) with how far the node got,
//! and what a node says of its image when it registers. Every type reads
//! what a newer release wrote: unknown fields are ignored and unknown
//! states read as `Unknown`.

use serde::{Deserialize, Serialize};

use configs::Role;
use image::slot::{Slot, SlotState, UpgradeResult};

use crate::format::Format;

/// A bundle the masters keep, content-addressed by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// Lowercase hex SHA-256 of the whole bundle.
    pub sha256: String,
    pub version: String,
    pub role: Role,
    pub size: u64,
    /// Unix seconds of the push.
    pub pushed_at: u64,
    /// Who pushed it.
    pub by: String,
    /// The masters that hold its bytes (a master adds itself once it has
    /// them; the others copy them from one of these).
    #[serde(default)]
    pub holders: Vec<String>,
}

/// `POST /v1/nodes/{name}/upgrade`: install a bundle the masters hold,
/// named by its version (for the node's role) or its digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub allow_downgrade: bool,
}

/// What a node is ordered to do with its slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Download the bundle, install it into the other slot, reboot.
    Install {
        sha256: String,
        version: String,
        size: u64,
        #[serde(default)]
        allow_downgrade: bool,
    },
    /// Boot the other slot, which booted healthy before.
    Rollback,
    /// An action a newer master ordered.
    #[serde(other)]
    Unknown,
}

/// How far a node got with its order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Progress {
    /// Ordered; the node has not picked it up.
    Ordered,
    /// Downloading the bundle: bytes so far of the whole.
    Downloading { bytes: u64, total: u64 },
    /// Checking the downloaded bundle's signature and digests, before
    /// anything is written.
    Verifying,
    /// Writing the other slot.
    Writing,
    /// Written (or, for a rollback, chosen): the node is rebooting into it.
    Rebooting,
    /// The node came back on the new slot and it was blessed.
    Succeeded,
    /// It did not happen, and why (nothing written, or the new slot did
    /// not get healthy and the node booted the old one again).
    Failed { reason: String },
    /// A phase a newer node reported.
    #[serde(other)]
    Unknown,
}

impl Progress {
    /// Nothing more will happen for this order.
    pub fn is_final(&self) -> bool {
        matches!(self, Progress::Succeeded | Progress::Failed { .. })
    }
}

/// `/strata/upgrades/<node>`: the last order for a node and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeOrder {
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// Unique per order (the node remembers which it carried out).
    pub id: String,
    pub node: String,
    #[serde(flatten)]
    pub action: Action,
    /// Unix seconds of the order.
    pub at: u64,
    pub by: String,
    pub progress: Progress,
    /// Unix seconds of the last progress.
    #[serde(default)]
    pub updated_at: u64,
}

/// `PUT /v1/nodes/{name}/upgrade/progress`: a node reports its order's
/// progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    pub id: String,
    pub progress: Progress,
}

/// What a node says of its image when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageStatus {
    /// The version it runs.
    pub version: String,
    /// The slot it booted.
    pub booted: Slot,
    /// The other slot.
    pub other: OtherSlot,
    /// How its last upgrade ended (absent when it never upgraded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_upgrade: Option<UpgradeResult>,
}

/// The slot a node did not boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherSlot {
    pub slot: Slot,
    /// The version written there, when the node wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub state: SlotState,
}

/// Why an upgrade cannot be ordered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRefused {
    #[error("name the bundle by --version or by its digest, not both")]
    BothNamed,
    #[error("name the bundle by --version or by its digest")]
    NoneNamed,
    #[error(
        "no bundle of version {version} for {role} nodes is on the masters: push it with `strata bundle push FILE`"
    )]
    NoVersion { version: String, role: Role },
    #[error("no bundle with digest {0} is on the masters: `strata bundle list` shows them")]
    NoDigest(String),
    #[error(
        "bundle {sha256} is for {bundle} nodes and node `{node}` is a {role} node: push the bundle of its role"
    )]
    WrongRole {
        sha256: String,
        bundle: Role,
        node: String,
        role: Role,
    },
    #[error("node `{node}` is still carrying out its last order ({progress}): wait for it to end")]
    Busy { node: String, progress: String },
}

/// The bundle an upgrade request names for a node of `role`, among
/// `bundles`. Pure.
pub fn pick_bundle<'a>(
    req: &UpgradeRequest,
    node: &str,
    role: Role,
    bundles: &'a [BundleRecord],
) -> Result<&'a BundleRecord, OrderRefused> {
    let bundle = match (&req.version, &req.sha256) {
        (Some(_), Some(_)) => return Err(OrderRefused::BothNamed),
        (None, None) => return Err(OrderRefused::NoneNamed),
        (Some(v), None) => bundles
            .iter()
            // `0.2.0` names `0.2.0+g1a2b3c` too (an image's build metadata).
            .filter(|b| {
                b.role == role && (b.version == *v || b.version.split('+').next() == Some(v))
            })
            .max_by_key(|b| b.pushed_at)
            .ok_or_else(|| OrderRefused::NoVersion {
                version: v.clone(),
                role,
            })?,
        (None, Some(d)) => bundles
            .iter()
            .find(|b| b.sha256 == *d)
            .ok_or_else(|| OrderRefused::NoDigest(d.clone()))?,
    };
    if bundle.role != role {
        return Err(OrderRefused::WrongRole {
            sha256: bundle.sha256.clone(),
            bundle: bundle.role,
            node: node.to_string(),
            role,
        });
    }
    Ok(bundle)
}

/// An order that made no progress for this long no longer blocks a new
/// one (its node went away mid-way).
pub const STALE_ORDER_SECONDS: u64 = 1800;

/// An order in flight that a new one must not replace: picked up by the
/// node and not ended, and not stale (no progress for `stale_after`
/// seconds, a node that went away mid-way).
pub fn busy(order: &UpgradeOrder, now: u64, stale_after: u64) -> bool {
    !order.progress.is_final()
        && order.progress != Progress::Ordered
        && now.saturating_sub(order.updated_at.max(order.at)) < stale_after
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Progress::Ordered => f.write_str("ordered"),
            Progress::Downloading { bytes, total } => {
                write!(f, "downloading {}/{} MiB", bytes >> 20, total >> 20)
            }
            Progress::Verifying => f.write_str("verifying"),
            Progress::Writing => f.write_str("writing"),
            Progress::Rebooting => f.write_str("rebooting"),
            Progress::Succeeded => f.write_str("succeeded"),
            Progress::Failed { reason } => write!(f, "failed: {reason}"),
            Progress::Unknown => f.write_str("unknown"),
        }
    }
}

#[cfg(test)]
mod tests;
