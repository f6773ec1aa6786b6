//! The update bundles a master keeps on its state partition, each a file
//! named by the SHA-256 of its bytes (`<dir>/<sha256>.bundle`). An upload
//! lands in a hidden temporary file and is put under its name only once
//! the whole bundle verified with the images' update key; a node's
//! download is a download of such a file, never of an upload in progress.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::VerifyingKey;
use image::bundle::BundleError;
use image::manifest::Manifest;
use sha2::{Digest, Sha256};

/// Why a bundle is not kept, or cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{0}` is not a bundle digest (64 lowercase hexadecimal digits)")]
    BadDigest(String),
    #[error(transparent)]
    Refused(#[from] BundleError),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// A master's bundle directory and the key bundles must be signed with.
#[derive(Debug)]
pub struct BundleStore {
    dir: PathBuf,
    key: VerifyingKey,
    uploads: AtomicU64,
}

/// Whether `s` is a SHA-256 in lowercase hex (what names a bundle file).
pub fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl BundleStore {
    pub fn new(dir: PathBuf, key: VerifyingKey) -> BundleStore {
        BundleStore {
            dir,
            key,
            uploads: AtomicU64::new(0),
        }
    }

    /// The file of the bundle with digest `sha256` (which may not exist).
    pub fn path(&self, sha256: &str) -> Result<PathBuf, StoreError> {
        if !is_digest(sha256) {
            return Err(StoreError::BadDigest(sha256.to_string()));
        }
        Ok(self.dir.join(format!("{sha256}.bundle")))
    }

    /// A new temporary file name for an upload.
    pub fn upload_path(&self) -> Result<PathBuf, StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StoreError::Io {
            what: "create",
            path: self.dir.clone(),
            source,
        })?;
        let n = self.uploads.fetch_add(1, Ordering::Relaxed);
        Ok(self.dir.join(format!(".upload-{}-{n}", std::process::id())))
    }

    /// Where a copy of bundle `sha256` from another master is downloaded
    /// to (kept across attempts, so that a copy cut short resumes).
    pub fn replica_path(&self, sha256: &str) -> Result<PathBuf, StoreError> {
        if !is_digest(sha256) {
            return Err(StoreError::BadDigest(sha256.to_string()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| StoreError::Io {
            what: "create",
            path: self.dir.clone(),
            source,
        })?;
        Ok(self.dir.join(format!(".replica-{sha256}.part")))
    }

    /// Verifies the uploaded file `upload` and puts it under its digest;
    /// the upload is removed either way. Blocking: run it off the async
    /// threads.
    pub fn accept(&self, upload: &Path) -> Result<(String, Manifest, u64), StoreError> {
        let result = self.verify(upload).and_then(|(sha, manifest, size)| {
            let dest = self.path(&sha)?;
            std::fs::rename(upload, &dest).map_err(|source| StoreError::Io {
                what: "keep the bundle as",
                path: dest.clone(),
                source,
            })?;
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| StoreError::Io {
                    what: "flush",
                    path: self.dir.clone(),
                    source,
                })?;
            Ok((sha, manifest, size))
        });
        if result.is_err() {
            let _ = std::fs::remove_file(upload);
        }
        result
    }

    /// The digest, the manifest and the size of the bundle at `path`,
    /// read once: the digest of the bytes as the signature check reads
    /// them.
    pub fn verify(&self, path: &Path) -> Result<(String, Manifest, u64), StoreError> {
        let file = File::open(path).map_err(|source| StoreError::Io {
            what: "open",
            path: path.to_path_buf(),
            source,
        })?;
        let _ = file.sync_all();
        let mut reader = Hashing {
            inner: io::BufReader::new(file),
            hasher: Sha256::new(),
            size: 0,
        };
        let manifest = image::bundle::verify(&mut reader, &self.key)?;
        Ok((hex::encode(reader.hasher.finalize()), manifest, reader.size))
    }
}

/// A reader that hashes what goes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}
