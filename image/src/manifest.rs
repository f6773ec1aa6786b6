//! The image manifest: what an image is (role, version, kernel, every
//! package with its version), how its disk is laid out, the verity root hash
//! and the SHA-256 of every part and artifact.
//!
//! The same type is signed inside an update bundle (there `artifacts` is
//! empty: the bundle cannot hold its own digest) and published next to the
//! images as `strata-<role>.manifest.json` (with `artifacts` filled in).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use configs::Role;

/// The manifest format written by this crate.
pub const FORMAT: u32 = 1;

/// What an image is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub version: String,
    pub role: Role,
    /// Kernel package and release, e.g. `linux-image-cloud-amd64 6.1.0-37-cloud-amd64`.
    pub kernel: String,
    /// The timestamp every file of the root carries.
    pub source_date_epoch: u64,
    /// The dm-verity root hash of the root image (hex).
    pub root_hash: String,
    /// The dm-verity salt (hex).
    pub verity_salt: String,
    /// The kernel command line in the UKI.
    pub cmdline: String,
    /// Every Debian package in the root, name to version.
    pub packages: BTreeMap<String, String>,
    /// The disk layout of the full image.
    pub partitions: Vec<PartitionEntry>,
    /// The parts of the update bundle, in bundle order.
    pub parts: Vec<Digest>,
    /// The published artifacts (raw, qcow2, update bundle); empty inside a bundle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Digest>,
}

/// One partition of the disk image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionEntry {
    pub label: String,
    pub type_guid: String,
    pub uuid: String,
    pub offset: u64,
    pub size: u64,
}

/// A named blob with its size and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

impl Manifest {
    /// Canonical JSON bytes (the form that is signed and published).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        v.push(b'\n');
        v
    }

    /// Parses a manifest, naming `origin` in the error.
    pub fn parse(origin: &str, bytes: &[u8]) -> Result<Manifest, String> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("{origin}: not a strata manifest: {e}"))?;
        if m.format != FORMAT {
            return Err(format!(
                "{origin}: manifest format {} is not supported, expected {FORMAT}",
                m.format
            ));
        }
        Ok(m)
    }

    /// The partition entries of a plan.
    pub fn partitions_of(plan: &crate::plan::Plan) -> Vec<PartitionEntry> {
        plan.partitions
            .iter()
            .map(|p| PartitionEntry {
                label: p.label.clone(),
                type_guid: p.type_guid.clone(),
                uuid: p.uuid.clone(),
                offset: p.offset,
                size: p.size,
            })
            .collect()
    }
}
