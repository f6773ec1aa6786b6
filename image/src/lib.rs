//! Pure models of a Strata disk image: the partition plan, the manifest and
//! the update bundle format. No I/O beyond what callers hand in; the xtask
//! builds images with it and the agent verifies and installs bundles with it.
//!
//! - [`plan`]: where each partition goes on the disk, its type GUID and its
//!   deterministic UUID, derived from the role and the version.
//! - [`manifest`]: what an image holds (packages, sizes, digests).
//! - [`bundle`]: the signed update bundle and its verification.
//! - [`key`]: ed25519 signing and verifying keys as files.
//! - [`version`]: image versions and their order.
//! - [`gpt`]: reading a GUID partition table and setting partition UUIDs.
//! - [`slot`]: the A/B slots' states and what an upgrade does with them.

pub mod bundle;
pub mod gpt;
pub mod key;
pub mod manifest;
pub mod plan;
pub mod slot;
pub mod version;

use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A UUID derived from `parts` (SHA-256 of the parts joined by `:`, first
/// 128 bits, version 8 and RFC 4122 variant bits set), so that the same
/// inputs always give the same UUID.
pub fn derived_uuid(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join(":").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    format_uuid(&b)
}

/// Formats 16 bytes as a lowercase UUID string as they are.
pub fn format_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_uuid_is_stable_and_versioned() {
        let a = derived_uuid(&["strata", "master", "0.1.0", "disk"]);
        assert_eq!(a, derived_uuid(&["strata", "master", "0.1.0", "disk"]));
        assert_ne!(a, derived_uuid(&["strata", "private", "0.1.0", "disk"]));
        assert_eq!(&a[14..15], "8");
        expect_test::expect!["07d053cf-6b82-833b-814e-e63fa380957b"].assert_eq(&a);
    }
}
