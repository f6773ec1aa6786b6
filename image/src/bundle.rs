//! The update bundle: everything a node needs to install a new image into
//! its inactive slot, signed with ed25519.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic      8 bytes  "STRATAUP"
//! format     u32      1
//! length     u32      length of the manifest JSON, at most 1 MiB
//! manifest   JSON     a `Manifest` whose `parts` lists every part in order
//! signature  64 bytes ed25519 over the manifest bytes
//! parts      the bytes of each part of `manifest.parts`, back to back
//! ```
//!
//! The signature covers the manifest, and the manifest holds the size and
//! SHA-256 of every part, so one signature covers the whole bundle. Readers
//! stream: parts are hashed as they are read, and nothing can be trusted
//! until [`read`] returns `Ok`.

use std::io::{self, Read, Write};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest as _, Sha256};

use crate::manifest::Manifest;

/// First bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"STRATAUP";
/// The bundle format written by this crate.
pub const FORMAT: u32 = 1;
/// Largest manifest a bundle may carry.
pub const MAX_MANIFEST: u32 = 1024 * 1024;

/// Names of the parts, in bundle order.
pub const PART_ROOT: &str = "root.erofs";
pub const PART_VERITY: &str = "root.verity";
pub const PART_UKI: &str = "uki.efi";

/// Why a bundle is refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a strata update bundle: the file does not start with `STRATAUP`")]
    NotABundle,
    #[error("bundle format {0} is not supported, expected {FORMAT}")]
    UnsupportedFormat(u32),
    #[error("bundle manifest of {0} bytes is larger than the limit of {MAX_MANIFEST} bytes")]
    ManifestTooLarge(u32),
    #[error("bundle is truncated: it ends inside {0}")]
    Truncated(String),
    #[error(
        "bundle signature does not match its manifest: it was not signed with this key or was altered"
    )]
    BadSignature,
    #[error("bundle manifest is invalid: {0}")]
    BadManifest(String),
    #[error(
        "bundle part `{part}` is corrupted: sha256 {actual}, the signed manifest says {expected}"
    )]
    DigestMismatch {
        part: String,
        expected: String,
        actual: String,
    },
    #[error("bundle has {0} bytes of unexpected data after its last part")]
    TrailingData(u64),
    #[error("cannot read the bundle: {0}")]
    Io(#[from] io::Error),
}

/// Writes a bundle: header, manifest, signature, then each part read from
/// `parts` (same order and sizes as `manifest.parts`).
pub fn write<W: Write>(
    out: &mut W,
    manifest: &Manifest,
    key: &SigningKey,
    parts: &mut [(&str, &mut dyn Read)],
) -> Result<(), BundleError> {
    if !manifest.artifacts.is_empty() {
        return Err(BundleError::BadManifest(
            "a bundle manifest must not list artifacts".into(),
        ));
    }
    if parts.len() != manifest.parts.len() {
        return Err(BundleError::BadManifest(format!(
            "manifest lists {} parts, {} given",
            manifest.parts.len(),
            parts.len()
        )));
    }
    let json = manifest.to_json();
    let len = u32::try_from(json.len()).map_err(|_| BundleError::ManifestTooLarge(u32::MAX))?;
    if len > MAX_MANIFEST {
        return Err(BundleError::ManifestTooLarge(len));
    }
    let signature = key.sign(&json);
    out.write_all(MAGIC)?;
    out.write_all(&FORMAT.to_le_bytes())?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&json)?;
    out.write_all(&signature.to_bytes())?;
    for ((name, reader), digest) in parts.iter_mut().zip(&manifest.parts) {
        if *name != digest.name {
            return Err(BundleError::BadManifest(format!(
                "part `{name}` given where the manifest lists `{}`",
                digest.name
            )));
        }
        let copied = io::copy(&mut reader.take(digest.size + 1), out)?;
        if copied != digest.size {
            return Err(BundleError::BadManifest(format!(
                "part `{name}` has {copied} bytes, the manifest says {}",
                digest.size
            )));
        }
    }
    Ok(())
}

/// Verifies a whole bundle against `key` and returns its manifest.
pub fn verify<R: Read>(bundle: R, key: &VerifyingKey) -> Result<Manifest, BundleError> {
    read(bundle, key, |_, _| Ok(()))
}

/// Reads a bundle, handing each chunk of each part to `sink` (part name,
/// bytes) as it streams by. The signature is checked before any part is
/// read; digests are checked as each part ends. Only an `Ok` return means
/// that what went to `sink` is the signed content.
pub fn read<R: Read>(
    mut bundle: R,
    key: &VerifyingKey,
    mut sink: impl FnMut(&str, &[u8]) -> io::Result<()>,
) -> Result<Manifest, BundleError> {
    let mut magic = [0u8; 8];
    read_exact(&mut bundle, &mut magic, "the header")?;
    if &magic != MAGIC {
        return Err(BundleError::NotABundle);
    }
    let mut word = [0u8; 4];
    read_exact(&mut bundle, &mut word, "the header")?;
    let format = u32::from_le_bytes(word);
    if format != FORMAT {
        return Err(BundleError::UnsupportedFormat(format));
    }
    read_exact(&mut bundle, &mut word, "the header")?;
    let len = u32::from_le_bytes(word);
    if len > MAX_MANIFEST {
        return Err(BundleError::ManifestTooLarge(len));
    }
    let mut json = vec![0u8; len as usize];
    read_exact(&mut bundle, &mut json, "the manifest")?;
    let mut sig = [0u8; 64];
    read_exact(&mut bundle, &mut sig, "the signature")?;
    key.verify(&json, &Signature::from_bytes(&sig))
        .map_err(|_| BundleError::BadSignature)?;
    let manifest = Manifest::parse("bundle", &json).map_err(BundleError::BadManifest)?;
    let mut buf = vec![0u8; 1024 * 1024];
    for part in &manifest.parts {
        let mut hasher = Sha256::new();
        let mut left = part.size;
        while left > 0 {
            let want =
                usize::try_from(left.min(buf.len() as u64)).expect("at most the buffer length");
            let n = bundle.read(&mut buf[..want])?;
            if n == 0 {
                return Err(BundleError::Truncated(format!("part `{}`", part.name)));
            }
            hasher.update(&buf[..n]);
            sink(&part.name, &buf[..n])?;
            left -= n as u64;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != part.sha256 {
            return Err(BundleError::DigestMismatch {
                part: part.name.clone(),
                expected: part.sha256.clone(),
                actual,
            });
        }
    }
    let trailing = io::copy(&mut bundle, &mut io::sink())?;
    if trailing > 0 {
        return Err(BundleError::TrailingData(trailing));
    }
    Ok(manifest)
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), BundleError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => BundleError::Truncated(what.to_string()),
        _ => BundleError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use expect_test::{Expect, expect};

    use super::*;
    use crate::manifest::Digest;

    fn manifest(parts: &[(&str, &[u8])]) -> Manifest {
        Manifest {
            format: crate::manifest::FORMAT,
            version: "0.1.0".into(),
            role: configs::Role::Private,
            kernel: "linux-image-cloud-amd64 6.1.0-test".into(),
            source_date_epoch: 1_700_000_000,
            root_hash: "00".repeat(32),
            verity_salt: "11".repeat(32),
            cmdline: "ro".into(),
            packages: BTreeMap::from([("systemd".to_string(), "252".to_string())]),
            partitions: vec![],
            parts: parts
                .iter()
                .map(|(n, b)| Digest {
                    name: n.to_string(),
                    size: b.len() as u64,
                    sha256: crate::sha256_hex(b),
                })
                .collect(),
            artifacts: vec![],
        }
    }

    fn bundle_with(key: &SigningKey) -> Vec<u8> {
        let root = vec![1u8; 3000];
        let verity = vec![2u8; 100];
        let uki = b"MZ-uki".to_vec();
        let m = manifest(&[(PART_ROOT, &root), (PART_VERITY, &verity), (PART_UKI, &uki)]);
        let mut out = Vec::new();
        write(
            &mut out,
            &m,
            key,
            &mut [
                (PART_ROOT, &mut &root[..]),
                (PART_VERITY, &mut &verity[..]),
                (PART_UKI, &mut &uki[..]),
            ],
        )
        .unwrap();
        out
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// Verifies `bundle` with the key of seed 1 and renders the outcome.
    fn check(bundle: &[u8], expected: Expect) {
        let actual = match verify(bundle, &key(1).verifying_key()) {
            Ok(m) => format!(
                "ok: {} {} parts {:?}",
                m.role,
                m.version,
                m.parts.iter().map(|p| &p.name).collect::<Vec<_>>()
            ),
            Err(e) => format!("error: {e}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn a_good_bundle_verifies() {
        check(
            &bundle_with(&key(1)),
            expect![[r#"ok: private 0.1.0 parts ["root.erofs", "root.verity", "uki.efi"]"#]],
        );
    }

    #[test]
    fn parts_stream_to_the_sink() {
        let b = bundle_with(&key(1));
        let mut seen = BTreeMap::<String, usize>::new();
        read(&b[..], &key(1).verifying_key(), |name, bytes| {
            *seen.entry(name.to_string()).or_default() += bytes.len();
            Ok(())
        })
        .unwrap();
        expect![[r#"
            {
                "root.erofs": 3000,
                "root.verity": 100,
                "uki.efi": 6,
            }
        "#]]
        .assert_debug_eq(&seen);
    }

    #[test]
    fn another_key_is_refused() {
        check(
            &bundle_with(&key(2)),
            expect![
                "error: bundle signature does not match its manifest: it was not signed with this key or was altered"
            ],
        );
    }

    #[test]
    fn a_corrupted_part_is_refused() {
        let mut b = bundle_with(&key(1));
        let n = b.len();
        b[n - 10] ^= 0xff;
        check(
            &b,
            expect![
                "error: bundle part `root.verity` is corrupted: sha256 653f5ba2b47e05b86731b0d96edbcc69e44a55b75a082d319f48243fbb19ff8e, the signed manifest says a602b7a20e4bfa29f01e08439a888cf02df13fcf45f8257ad5c392bcc5996f92"
            ],
        );
    }

    #[test]
    fn an_altered_manifest_is_refused() {
        let mut b = bundle_with(&key(1));
        let at = b.windows(7).position(|w| w == b"private").unwrap();
        b[at..at + 6].copy_from_slice(b"public");
        check(
            &b,
            expect![
                "error: bundle signature does not match its manifest: it was not signed with this key or was altered"
            ],
        );
    }

    #[test]
    fn truncated_bundles_are_refused() {
        let b = bundle_with(&key(1));
        check(
            &b[..4],
            expect!["error: bundle is truncated: it ends inside the header"],
        );
        check(
            &b[..100],
            expect!["error: bundle is truncated: it ends inside the manifest"],
        );
        check(
            &b[..b.len() - 1],
            expect!["error: bundle is truncated: it ends inside part `uki.efi`"],
        );
    }

    #[test]
    fn trailing_data_and_bad_magic_are_refused() {
        let mut b = bundle_with(&key(1));
        b.extend_from_slice(b"extra");
        check(
            &b,
            expect!["error: bundle has 5 bytes of unexpected data after its last part"],
        );
        check(
            b"PK\x03\x04 a zip file, not a bundle",
            expect!["error: not a strata update bundle: the file does not start with `STRATAUP`"],
        );
    }

    #[test]
    fn a_part_of_the_wrong_size_is_not_written() {
        let m = manifest(&[(PART_ROOT, b"abc")]);
        let mut out = Vec::new();
        let e = write(&mut out, &m, &key(1), &mut [(PART_ROOT, &mut &b"abcd"[..])]).unwrap_err();
        expect!["bundle manifest is invalid: part `root.erofs` has 4 bytes, the manifest says 3"]
            .assert_eq(&e.to_string());
    }
}
