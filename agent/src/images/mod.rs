//! The OCI image store: pulls images from registries (`oci-client`), imports
//! OCI layout directories, their tarballs and `docker save` archives, and keeps
//! every layer once, extracted, keyed by its uncompressed digest (the diff id).
//!
//! Layout under the store root (default `/var/lib/strata/images`):
//! - `layers/<hex>/`: one extracted layer, named by the sha256 of its
//!   uncompressed tar; only complete, verified layers appear there (they are
//!   extracted into `tmp/` and renamed).
//! - `blobs/sha256/<hex>`: image configuration blobs.
//! - `images/<hex of the name>.json`: one [`ImageRecord`] per image name.
//! - `tmp/`: work in progress, cleared by [`ImageStore::gc`].
//!
//! Every blob is checked against its digest before anything is stored: a
//! corrupted blob is refused with [`ImageError::Digest`] and leaves nothing.

mod layer;
mod pull;
mod source;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use pull::{PullAuth, PullOptions, parse_reference};

/// Errors callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("malformed image reference {reference:?}: {reason}")]
    MalformedReference { reference: String, reason: String },
    #[error("unknown image {reference}: the registry has no such repository or tag")]
    UnknownImage { reference: String },
    #[error("registry {registry} is unreachable: {reason}")]
    Unreachable { registry: String, reason: String },
    #[error("registry {registry} refused the credentials for {reference}")]
    Unauthorized { registry: String, reference: String },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("image {reference} is not in the store (pull or import it first)")]
    NotInStore { reference: String },
    #[error("{path}: {reason}")]
    BadArchive { path: String, reason: String },
    #[error("registry error for {reference}: {reason}")]
    Registry { reference: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }
}

/// The parts of an image configuration a task needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// One image known to the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The name it was pulled or imported as (`registry/repo:tag`).
    pub name: String,
    /// `sha256:<hex>` of the config blob: the image id.
    pub config_digest: String,
    /// Uncompressed layer digests (`sha256:<hex>`), bottom first.
    pub layers: Vec<String>,
    pub config: ImageConfig,
}

/// The image store rooted at a directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) a store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let root = root.into();
        for sub in ["layers", "blobs/sha256", "images", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(ImageError::io(format!("cannot create {}", dir.display())))?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of an extracted layer, by `sha256:<hex>` digest.
    pub fn layer_dir(&self, digest: &str) -> PathBuf {
        self.root.join("layers").join(hex_of(digest))
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", sha256_hex(name.as_bytes())))
    }

    /// The image stored under `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<ImageRecord>, ImageError> {
        let name = normalize_name(name);
        let path = self.record_path(&name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| ImageError::BadArchive {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io(format!("cannot read {}", path.display()))(e)),
        }
    }

    /// Every image in the store, sorted by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&dir)
            .map_err(ImageError::io(format!("cannot list {}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path)
                    .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
                if let Ok(rec) = serde_json::from_slice::<ImageRecord>(&bytes) {
                    out.push(rec);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Forgets the image named `name` (its layers go at the next [`Self::gc`]).
    pub fn remove(&self, name: &str) -> Result<bool, ImageError> {
        let path = self.record_path(&normalize_name(name));
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ImageError::io(format!("cannot remove {}", path.display()))(
                e,
            )),
        }
    }

    /// Deletes every layer and config blob that no image and no entry of
    /// `in_use` (layer digests still mounted by tasks) references, and clears
    /// `tmp/`. Returns the removed layer digests.
    pub fn gc(&self, in_use: &BTreeSet<String>) -> Result<Vec<String>, ImageError> {
        let images = self.list()?;
        let mut keep: BTreeSet<String> = in_use.iter().map(|d| hex_of(d).to_string()).collect();
        let mut keep_blobs = BTreeSet::new();
        for img in &images {
            keep.extend(img.layers.iter().map(|d| hex_of(d).to_string()));
            keep_blobs.insert(hex_of(&img.config_digest).to_string());
        }
        let mut removed = Vec::new();
        let layers = self.root.join("layers");
        for entry in std::fs::read_dir(&layers)
            .map_err(ImageError::io(format!("cannot list {}", layers.display())))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(&name) {
                remove_tree(&entry.path())?;
                removed.push(format!("sha256:{name}"));
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for entry in std::fs::read_dir(&blobs)
            .map_err(ImageError::io(format!("cannot list {}", blobs.display())))?
            .flatten()
        {
            if !keep_blobs.contains(&*entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            remove_tree(&entry.path())?;
        }
        removed.sort();
        Ok(removed)
    }

    /// A fresh, unique work directory under `tmp/`.
    pub(crate) fn temp_dir(&self, what: &str) -> Result<TempDir, ImageError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self
            .root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()));
        let _ = remove_tree(&path);
        std::fs::create_dir_all(&path)
            .map_err(ImageError::io(format!("cannot create {}", path.display())))?;
        Ok(TempDir(path))
    }

    /// Stores a verified config blob and writes the image record.
    pub(crate) fn commit_image(
        &self,
        name: &str,
        config_blob: &[u8],
        layers: Vec<String>,
    ) -> Result<ImageRecord, ImageError> {
        let config_digest = format!("sha256:{}", sha256_hex(config_blob));
        let blob = self.root.join("blobs/sha256").join(hex_of(&config_digest));
        crate::state::write_atomic(&blob, config_blob, None)
            .map_err(ImageError::io(format!("cannot write {}", blob.display())))?;
        let record = ImageRecord {
            name: normalize_name(name),
            config_digest,
            layers,
            config: parse_config(config_blob)
                .map(|(c, _)| c)
                .unwrap_or_default(),
        };
        let json = serde_json::to_vec_pretty(&record).expect("an image record always serializes");
        let path = self.record_path(&record.name);
        crate::state::write_atomic(&path, &json, None)
            .map_err(ImageError::io(format!("cannot write {}", path.display())))?;
        Ok(record)
    }

    /// Extracts one layer stream (gzip or plain tar) whose uncompressed
    /// digest must be `diff_id`, unless that layer is already stored.
    pub(crate) fn store_layer(&self, reader: impl Read, diff_id: &str) -> Result<(), ImageError> {
        let dest = self.layer_dir(diff_id);
        if dest.is_dir() {
            return Ok(());
        }
        let tmp = self.temp_dir("layer")?;
        let actual = layer::extract(reader, &tmp.0)?;
        if actual != diff_id {
            return Err(ImageError::Digest {
                what: format!("layer {diff_id} (uncompressed)"),
                expected: diff_id.to_string(),
                actual,
            });
        }
        match std::fs::rename(&tmp.0, &dest) {
            Ok(()) => {}
            // Another pull stored the same layer meanwhile.
            Err(_) if dest.is_dir() => {}
            Err(e) => {
                return Err(ImageError::io(format!("cannot store {}", dest.display()))(
                    e,
                ));
            }
        }
        Ok(())
    }
}

/// A directory removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir(pub(crate) PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.0);
    }
}

/// Removes a tree that may hold read-only directories.
pub(crate) fn remove_tree(path: &Path) -> Result<(), ImageError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if std::fs::remove_dir_all(path).is_ok() {
        return Ok(());
    }
    // Make every directory writable and try again.
    fn chmod_dirs(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::symlink_metadata(p) {
            if md.is_dir() {
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
                for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
                    chmod_dirs(&e.path());
                }
            }
        }
    }
    chmod_dirs(path);
    std::fs::remove_dir_all(path)
        .map_err(ImageError::io(format!("cannot remove {}", path.display())))
}

/// `sha256:<hex>` -> `<hex>` (other strings unchanged).
pub fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks `bytes` against `expected` (`sha256:<hex>`).
pub(crate) fn verify(what: &str, bytes: &[u8], expected: &str) -> Result<(), ImageError> {
    let actual = format!("sha256:{}", sha256_hex(bytes));
    if actual != expected {
        return Err(ImageError::Digest {
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Canonical image name: registry, repository and tag (`:latest` added).
pub fn normalize_name(name: &str) -> String {
    match name.parse::<oci_client::Reference>() {
        Ok(r) => r.whole(),
        Err(_) => name.to_string(),
    }
}

/// Parses an image configuration blob: the runtime config and the diff ids.
pub fn parse_config(blob: &[u8]) -> Result<(ImageConfig, Vec<String>), String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        config: Option<RawConfig>,
        rootfs: RawRootfs,
    }
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "PascalCase")]
    struct RawConfig {
        #[serde(default)]
        entrypoint: Option<Vec<String>>,
        #[serde(default)]
        cmd: Option<Vec<String>>,
        #[serde(default)]
        env: Option<Vec<String>>,
        #[serde(default)]
        working_dir: Option<String>,
        #[serde(default)]
        user: Option<String>,
    }
    #[derive(Deserialize)]
    struct RawRootfs {
        diff_ids: Vec<String>,
    }
    let raw: Raw = serde_json::from_slice(blob).map_err(|e| format!("bad image config: {e}"))?;
    let c = raw.config.unwrap_or_default();
    let config = ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
    };
    Ok((config, raw.rootfs.diff_ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn config_is_parsed() {
        let blob = br#"{"architecture":"amd64","config":{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":""},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#;
        let parsed = parse_config(blob);
        expect![[r#"
            Ok(
                (
                    ImageConfig {
                        entrypoint: [],
                        cmd: [
                            "sh",
                        ],
                        env: [
                            "PATH=/bin",
                        ],
                        working_dir: None,
                        user: None,
                    },
                    [
                        "sha256:aa",
                    ],
                ),
            )
        "#]]
        .assert_debug_eq(&parsed);
    }

    #[test]
    fn names_are_normalized() {
        let got: Vec<String> = [
            "busybox",
            "127.0.0.1:5000/bb",
            "127.0.0.1:5000/bb:v1",
            "x@@",
        ]
        .iter()
        .map(|n| normalize_name(n))
        .collect();
        expect![[r#"
            [
                "docker.io/library/busybox:latest",
                "127.0.0.1:5000/bb:latest",
                "127.0.0.1:5000/bb:v1",
                "x@@",
            ]
        "#]]
        .assert_debug_eq(&got);
    }

    #[test]
    fn gc_removes_unreferenced_layers_and_a_bad_layer_is_refused() {
        let dir = std::env::temp_dir().join(format!("strata-images-test-{}", std::process::id()));
        let store = ImageStore::open(&dir).expect("store opens");
        // A tar with one file, stored under its real digest.
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, "hello", &b"hi"[..])
            .expect("tar entry");
        let bytes = tar.into_inner().expect("tar done");
        let digest = format!("sha256:{}", sha256_hex(&bytes));
        let err = store
            .store_layer(&bytes[..], "sha256:00")
            .expect_err("wrong digest");
        assert!(matches!(err, ImageError::Digest { .. }), "{err}");
        assert!(!store.layer_dir("sha256:00").exists());
        store
            .store_layer(&bytes[..], &digest)
            .expect("layer stored");
        assert_eq!(
            std::fs::read(store.layer_dir(&digest).join("hello")).expect("file"),
            b"hi"
        );
        let config = format!(r#"{{"rootfs":{{"diff_ids":["{digest}"]}}}}"#);
        store
            .commit_image("example.org/a:1", config.as_bytes(), vec![digest.clone()])
            .expect("commit");
        assert_eq!(
            store.gc(&BTreeSet::new()).expect("gc"),
            Vec::<String>::new()
        );
        assert!(store.remove("example.org/a:1").expect("remove"));
        assert_eq!(
            store.gc(&BTreeSet::new()).expect("gc"),
            vec![digest.clone()]
        );
        assert!(!store.layer_dir(&digest).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
