//! The OCI image store: pulls images from registries (`oci-client`), imports
//! OCI layout directories, their tarballs and `docker save` archives, and keeps
//! every layer once, extracted, keyed by its uncompressed digest (the diff id).
//!
//! Layout under the store root (default `/var/lib/strata/images`):
//! - `layers/<hex>/`: one extracted layer, named by the sha256 of its
//!   uncompressed tar. Layers are extracted into `tmp/`, checked against
//!   their diff id, and renamed here under the store lock.
//! - `verified/<hex>.json`: the marker written after that rename. A layer is
//!   used only when its marker names it and its directory is a real
//!   directory ([`ImageStore::has_layer`]); an unmarked `layers/<hex>` (a
//!   crash before the marker, or a store of an older agent, which wrote no
//!   markers) is never trusted: the next pull or import of that layer moves
//!   it to `quarantine/` and extracts the layer again.
//! - `blobs/sha256/<hex>`: image configuration blobs.
//! - `images/<hex of the name>.json`: one [`ImageRecord`] per image name.
//! - `tmp/`: work in progress, cleared by [`ImageStore::gc`].
//! - `store.lock`: taken (flock) around every change of `layers/`,
//!   `verified/` and the records, so that a gc and a pull in two processes
//!   do not interleave.
//!
//! Every digest read from a manifest, a config or an archive is a
//! [`Digest`] (`sha256:` and 64 lowercase hex digits) before it names a
//! file, and every blob is checked against its digest before anything is
//! stored: a corrupted blob is refused with [`ImageError::Digest`] and
//! leaves nothing. Manifests, configs and layers are bounded by [`Limits`];
//! extraction never leaves the layer's directory (see `layer`).

mod digest;
mod layer;
mod pull;
mod source;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use digest::{BadDigest, Digest};
pub use layer::EntryRefusal;
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
    #[error("{what}: {source}: the image is malformed and was not stored")]
    BadDigest {
        what: String,
        #[source]
        source: BadDigest,
    },
    #[error(
        "{what} is larger than the limit of {limit} bytes{}: the image was not stored; use a smaller image",
        declared_note(.declared)
    )]
    TooLarge {
        what: String,
        limit: u64,
        /// The size a descriptor or the file declared, when known before
        /// reading; `None` when the limit was passed while reading.
        declared: Option<u64>,
    },
    #[error(
        "{what} has more than {limit} entries: the image was not stored; use an image with fewer files"
    )]
    TooManyEntries { what: String, limit: u64 },
    #[error(
        "image {image} has {count} layers, more than the limit of {limit}: the image was not stored; flatten it"
    )]
    TooManyLayers {
        image: String,
        count: usize,
        limit: usize,
    },
    #[error(
        "{layer}: entry {entry:?} is refused: {reason}; the image is unsafe and was not stored"
    )]
    UnsafeEntry {
        layer: String,
        entry: String,
        reason: EntryRefusal,
    },
    #[error(
        "image {image} uses layer {digest}, which is missing or was stored without verification (by an older agent): pull or import the image again"
    )]
    Unverified { image: String, digest: Digest },
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

fn declared_note(declared: &Option<u64>) -> String {
    declared
        .map(|n| format!(" (it declares {n} bytes)"))
        .unwrap_or_default()
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }

    /// A digest read from `what` that is not a `sha256:<hex>` digest.
    pub(crate) fn bad_digest(what: impl Into<String>) -> impl FnOnce(BadDigest) -> Self {
        let what = what.into();
        move |source| ImageError::BadDigest { what, source }
    }
}

/// What the store accepts. A declared size above a limit is refused before
/// anything is downloaded or read; a stream that passes one is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a manifest or image index (also `index.json` and
    /// `manifest.json` of an archive).
    pub manifest: u64,
    /// Bytes of an image configuration.
    pub config: u64,
    /// Bytes of one layer blob as stored (compressed).
    pub layer_compressed: u64,
    /// Bytes of one layer's uncompressed tar (gzip bombs stop here).
    pub layer_uncompressed: u64,
    /// Entries of one layer's tar.
    pub layer_entries: u64,
    /// Layers of one image.
    pub max_layers: usize,
    /// Bytes of an archive to import, uncompressed.
    pub archive: u64,
    /// Entries of an archive to import.
    pub archive_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            manifest: 4 << 20,
            config: 8 << 20,
            layer_compressed: 4 << 30,
            layer_uncompressed: 16 << 30,
            layer_entries: 1_000_000,
            max_layers: 128,
            archive: 32 << 30,
            archive_entries: 100_000,
        }
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
    /// The digest of the config blob: the image id.
    pub config_digest: Digest,
    /// Uncompressed layer digests (diff ids), bottom first.
    pub layers: Vec<Digest>,
    pub config: ImageConfig,
}

/// The marker of a verified layer (`verified/<hex>.json`).
#[derive(Debug, Serialize, Deserialize)]
struct Verified {
    diff_id: Digest,
}

/// The image store rooted at a directory.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    limits: Limits,
}

impl ImageStore {
    /// Opens (creating if needed) a store under `root`, with the default
    /// [`Limits`].
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let root = root.into();
        for sub in [
            "layers",
            "verified",
            "quarantine",
            "blobs/sha256",
            "images",
            "tmp",
        ] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(ImageError::io(format!("cannot create {}", dir.display())))?;
        }
        Ok(Self {
            root,
            limits: Limits::default(),
        })
    }

    /// The same store with other limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the layer `digest` is (or would be) extracted. Only a layer
    /// for which [`Self::has_layer`] holds may be used: tasks take theirs
    /// from [`Self::verified_layer_dir`].
    pub fn layer_dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("layers").join(digest.hex())
    }

    fn marker_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("verified")
            .join(format!("{}.json", digest.hex()))
    }

    /// Whether layer `digest` was extracted and verified by this store: its
    /// marker names it and its directory is a real directory.
    pub fn has_layer(&self, digest: &Digest) -> bool {
        let marked = crate::state::read_json::<Verified>(&self.marker_path(digest))
            .is_some_and(|v| v.diff_id == *digest);
        marked && std::fs::symlink_metadata(self.layer_dir(digest)).is_ok_and(|m| m.is_dir())
    }

    /// The directory of layer `digest` of image `image`, for a task's root
    /// file system; [`ImageError::Unverified`] unless [`Self::has_layer`].
    pub fn verified_layer_dir(&self, image: &str, digest: &Digest) -> Result<PathBuf, ImageError> {
        if self.has_layer(digest) {
            Ok(self.layer_dir(digest))
        } else {
            Err(ImageError::Unverified {
                image: image.to_string(),
                digest: digest.clone(),
            })
        }
    }

    /// The first layer of `record` that is not verified, if any.
    pub fn unverified_layer(&self, record: &ImageRecord) -> Option<Digest> {
        record.layers.iter().find(|d| !self.has_layer(d)).cloned()
    }

    /// The store lock, held until the returned value is dropped.
    fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, ImageError> {
        let path = self.root.join("store.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(ImageError::io(format!("cannot open {}", path.display())))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| ImageError::io(format!("cannot lock {}", path.display()))(e.into()))
    }

    /// Refuses an image with more layers than the limit.
    pub(crate) fn check_layer_count(&self, image: &str, count: usize) -> Result<(), ImageError> {
        if count > self.limits.max_layers {
            return Err(ImageError::TooManyLayers {
                image: image.to_string(),
                count,
                limit: self.limits.max_layers,
            });
        }
        Ok(())
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

    /// Every image in the store, sorted by name. Records that do not parse
    /// (a malformed digest written by an older agent) are left out.
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
        let _lock = self.lock()?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(ImageError::io(format!("cannot remove {}", path.display()))(
                e,
            )),
        }
    }

    /// Deletes every layer and config blob that no image and no entry of
    /// `in_use` (layers still mounted by tasks) references, the markers and
    /// quarantined layers nothing uses, and what dead processes left in
    /// `tmp/`. Returns the removed layers.
    ///
    /// Under the store lock, each doomed layer loses its marker and is
    /// renamed into `tmp/`, so that no pull can find it half removed; the
    /// trees are removed after the lock is released.
    pub fn gc(&self, in_use: &BTreeSet<Digest>) -> Result<Vec<Digest>, ImageError> {
        let mut removed = Vec::new();
        let mut doomed = Vec::new();
        {
            let _lock = self.lock()?;
            let images = self.list()?;
            let mut keep: BTreeSet<String> = in_use.iter().map(|d| d.hex().to_string()).collect();
            let mut keep_blobs = BTreeSet::new();
            for img in &images {
                keep.extend(img.layers.iter().map(|d| d.hex().to_string()));
                keep_blobs.insert(img.config_digest.hex().to_string());
            }
            let layers = self.root.join("layers");
            for entry in std::fs::read_dir(&layers)
                .map_err(ImageError::io(format!("cannot list {}", layers.display())))?
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if keep.contains(&name) {
                    continue;
                }
                let marker = self.root.join("verified").join(format!("{name}.json"));
                let _ = std::fs::remove_file(&marker);
                let target = self.temp_path("gc");
                std::fs::rename(entry.path(), &target).map_err(ImageError::io(format!(
                    "cannot move {} out of the store",
                    entry.path().display()
                )))?;
                doomed.push(target);
                if let Ok(d) = Digest::from_hex(&name) {
                    removed.push(d);
                }
            }
            // Markers of layers that are gone.
            let verified = self.root.join("verified");
            for entry in std::fs::read_dir(&verified).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let hex = name.strip_suffix(".json").unwrap_or(&name);
                if !layers.join(hex).is_dir() {
                    let _ = std::fs::remove_file(entry.path());
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
        }
        // Quarantined layers (`<hex>-<pid>-<n>`) no task still mounts.
        let quarantine = self.root.join("quarantine");
        let used: BTreeSet<&str> = in_use.iter().map(|d| d.hex()).collect();
        for entry in std::fs::read_dir(&quarantine)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name.split('-').next().unwrap_or_default();
            if !used.contains(hex) {
                remove_tree(&entry.path())?;
            }
        }
        for path in &doomed {
            remove_tree(path)?;
        }
        // Work of processes that are gone (`<what>-<pid>-<n>`).
        let tmp = self.root.join("tmp");
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new("/proc").join(p.to_string()).exists());
            if !alive {
                remove_tree(&entry.path())?;
            }
        }
        removed.sort();
        Ok(removed)
    }

    /// A fresh, unique path under `tmp/`, not created.
    fn temp_path(&self, what: &str) -> PathBuf {
        self.root.join("tmp").join(unique_name(what))
    }

    /// A fresh, unique work directory under `tmp/`.
    pub(crate) fn temp_dir(&self, what: &str) -> Result<TempDir, ImageError> {
        let path = self.temp_path(what);
        let _ = remove_tree(&path);
        std::fs::create_dir_all(&path)
            .map_err(ImageError::io(format!("cannot create {}", path.display())))?;
        Ok(TempDir(path))
    }

    /// Stores a verified config blob and writes the image record, once
    /// every layer is verified (a gc may have removed one meanwhile).
    pub(crate) fn commit_image(
        &self,
        name: &str,
        config_blob: &[u8],
        layers: Vec<Digest>,
    ) -> Result<ImageRecord, ImageError> {
        let config_digest = Digest::of(config_blob);
        let name = normalize_name(name);
        let config = parse_config(config_blob, &name)
            .map(|(c, _)| c)
            .unwrap_or_default();
        let _lock = self.lock()?;
        if let Some(digest) = layers.iter().find(|d| !self.has_layer(d)) {
            return Err(ImageError::Unverified {
                image: name,
                digest: digest.clone(),
            });
        }
        let blob = self.root.join("blobs/sha256").join(config_digest.hex());
        crate::state::write_atomic(&blob, config_blob, None)
            .map_err(ImageError::io(format!("cannot write {}", blob.display())))?;
        let record = ImageRecord {
            name,
            config_digest,
            layers,
            config,
        };
        let path = self.record_path(&record.name);
        crate::state::write_json(&path, &record, None)
            .map_err(ImageError::io(format!("cannot write {}", path.display())))?;
        Ok(record)
    }

    /// Extracts one layer stream (gzip or plain tar) whose uncompressed
    /// digest must be `diff_id` (and whose raw digest must be `blob`, when
    /// given), unless that layer is already verified. Only a layer that
    /// passed both checks reaches `layers/`, with its marker.
    pub(crate) fn store_layer(
        &self,
        reader: impl Read,
        diff_id: &Digest,
        blob: Option<&Digest>,
    ) -> Result<(), ImageError> {
        if self.has_layer(diff_id) {
            return Ok(());
        }
        let tmp = self.temp_dir("layer")?;
        let got = layer::extract(
            reader,
            &tmp.0,
            &layer::Rules::layer(&self.limits),
            &format!("layer {diff_id}"),
        )?;
        if let Some(expected) = blob
            && got.blob != *expected
        {
            return Err(ImageError::Digest {
                what: format!("layer blob {expected}"),
                expected: expected.to_string(),
                actual: got.blob.to_string(),
            });
        }
        if got.diff_id != *diff_id {
            return Err(ImageError::Digest {
                what: format!("layer {diff_id} (uncompressed)"),
                expected: diff_id.to_string(),
                actual: got.diff_id.to_string(),
            });
        }
        self.commit_layer(&tmp, diff_id)
    }

    /// Renames a verified extraction to `layers/<hex>` and writes its
    /// marker, under the store lock. An unmarked directory already there is
    /// moved to `quarantine/`, never used.
    fn commit_layer(&self, tmp: &TempDir, diff_id: &Digest) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        if self.has_layer(diff_id) {
            // Another pull stored it meanwhile.
            return Ok(());
        }
        let dest = self.layer_dir(diff_id);
        if std::fs::symlink_metadata(&dest).is_ok() {
            let target = self
                .root
                .join("quarantine")
                .join(unique_name(diff_id.hex()));
            tracing::warn!(
                layer = %diff_id,
                to = %target.display(),
                "an unverified copy of a layer was in the store; it is quarantined and extracted again"
            );
            std::fs::rename(&dest, &target).map_err(ImageError::io(format!(
                "cannot quarantine {}",
                dest.display()
            )))?;
        }
        std::fs::rename(&tmp.0, &dest)
            .map_err(ImageError::io(format!("cannot store {}", dest.display())))?;
        // The layer's files reach the disk before the marker that vouches
        // for them.
        let dir = std::fs::File::open(&dest)
            .map_err(ImageError::io(format!("cannot open {}", dest.display())))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir))
            .map_err(|e| ImageError::io(format!("cannot flush {}", dest.display()))(e.into()))?;
        let marker = self.marker_path(diff_id);
        crate::state::write_json(
            &marker,
            &Verified {
                diff_id: diff_id.clone(),
            },
            None,
        )
        .map_err(ImageError::io(format!("cannot write {}", marker.display())))
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

/// `<prefix>-<pid>-<n>`: unique in this process, and tells gc whether the
/// process that made it is still alive.
fn unique_name(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks `bytes` against `expected`.
pub(crate) fn verify(what: &str, bytes: &[u8], expected: &Digest) -> Result<(), ImageError> {
    let actual = Digest::of(bytes);
    if actual != *expected {
        return Err(ImageError::Digest {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
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

/// Parses an image configuration blob: the runtime config and the diff ids,
/// each a valid [`Digest`]. `origin` (the image or archive) names the blob
/// in errors.
pub fn parse_config(blob: &[u8], origin: &str) -> Result<(ImageConfig, Vec<Digest>), ImageError> {
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
    let raw: Raw = serde_json::from_slice(blob).map_err(|e| ImageError::BadArchive {
        path: origin.to_string(),
        reason: format!("bad image config: {e}"),
    })?;
    let diff_ids = raw
        .rootfs
        .diff_ids
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Digest::parse(d).map_err(ImageError::bad_digest(format!(
                "diff id {} in the config of {origin}",
                i + 1
            )))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let c = raw.config.unwrap_or_default();
    let config = ImageConfig {
        entrypoint: c.entrypoint.unwrap_or_default(),
        cmd: c.cmd.unwrap_or_default(),
        env: c.env.unwrap_or_default(),
        working_dir: c.working_dir.filter(|w| !w.is_empty()),
        user: c.user.filter(|u| !u.is_empty()),
    };
    Ok((config, diff_ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    const AA: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn config_is_parsed() {
        let blob = format!(
            r#"{{"architecture":"amd64","config":{{"Env":["PATH=/bin"],"Cmd":["sh"],"WorkingDir":""}},"rootfs":{{"type":"layers","diff_ids":["{AA}"]}}}}"#
        );
        let parsed = parse_config(blob.as_bytes(), "t").expect("parsed");
        expect![[r#"
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
                    "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                ],
            )
        "#]]
        .assert_debug_eq(&parsed);
    }

    #[test]
    fn a_path_like_diff_id_is_refused() {
        let blob = br#"{"rootfs":{"type":"layers","diff_ids":["sha256:../../../../etc"]}}"#;
        let err = parse_config(blob, "example.org/a:1").expect_err("refused");
        expect![[r#"diff id 1 in the config of example.org/a:1: "sha256:../../../../etc" is not a sha256 digest (`sha256:` and 64 lowercase hex digits): the image is malformed and was not stored"#]]
        .assert_eq(&err.to_string());
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
    fn limit_errors_say_what_to_do() {
        let errors = [
            ImageError::TooLarge {
                what: "manifest of example.org/a:1".into(),
                limit: 4 << 20,
                declared: Some(5 << 20),
            },
            ImageError::TooLarge {
                what: "layer sha256:aa (uncompressed)".into(),
                limit: 1024,
                declared: None,
            },
            ImageError::TooManyLayers {
                image: "example.org/a:1".into(),
                count: 200,
                limit: 128,
            },
            ImageError::UnsafeEntry {
                layer: "layer sha256:aa".into(),
                entry: "../x".into(),
                reason: EntryRefusal::ParentDir,
            },
        ];
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        expect![[r#"
            [
                "manifest of example.org/a:1 is larger than the limit of 4194304 bytes (it declares 5242880 bytes): the image was not stored; use a smaller image",
                "layer sha256:aa (uncompressed) is larger than the limit of 1024 bytes: the image was not stored; use a smaller image",
                "image example.org/a:1 has 200 layers, more than the limit of 128: the image was not stored; flatten it",
                "layer sha256:aa: entry \"../x\" is refused: the name climbs out with `..`; the image is unsafe and was not stored",
            ]
        "#]]
        .assert_debug_eq(&text);
    }

    /// A tar with one file.
    fn one_file_tar() -> Vec<u8> {
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
        tar.into_inner().expect("tar done")
    }

    #[test]
    fn gc_removes_unreferenced_layers_and_a_bad_layer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("store opens");
        let bytes = one_file_tar();
        let digest = Digest::of(&bytes);
        let wrong = Digest::of(b"something else");
        let err = store
            .store_layer(&bytes[..], &wrong, None)
            .expect_err("wrong digest");
        assert!(matches!(err, ImageError::Digest { .. }), "{err}");
        assert!(!store.layer_dir(&wrong).exists());
        let err = store
            .store_layer(&bytes[..], &digest, Some(&wrong))
            .expect_err("wrong blob digest");
        assert!(matches!(err, ImageError::Digest { .. }), "{err}");
        assert!(!store.has_layer(&digest));
        store
            .store_layer(&bytes[..], &digest, Some(&digest))
            .expect("layer stored");
        assert!(store.has_layer(&digest));
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
            Vec::<Digest>::new()
        );
        assert!(store.remove("example.org/a:1").expect("remove"));
        assert_eq!(
            store.gc(&BTreeSet::new()).expect("gc"),
            vec![digest.clone()]
        );
        assert!(!store.layer_dir(&digest).exists());
        assert!(!store.has_layer(&digest));
        assert_eq!(
            std::fs::read_dir(store.root().join("verified"))
                .expect("verified")
                .count(),
            0
        );
    }

    #[test]
    fn an_unmarked_layer_is_never_used_and_is_quarantined_when_stored_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("store opens");
        let bytes = one_file_tar();
        let digest = Digest::of(&bytes);
        // What an older agent (or a crash before the marker) leaves.
        let old = store.layer_dir(&digest);
        std::fs::create_dir_all(&old).expect("mkdir");
        std::fs::write(old.join("planted"), b"x").expect("write");
        assert!(!store.has_layer(&digest));
        let err = store
            .verified_layer_dir("example.org/a:1", &digest)
            .expect_err("unverified");
        assert!(matches!(err, ImageError::Unverified { .. }), "{err}");
        let config = format!(r#"{{"rootfs":{{"diff_ids":["{digest}"]}}}}"#);
        let err = store
            .commit_image("example.org/a:1", config.as_bytes(), vec![digest.clone()])
            .expect_err("a record needs verified layers");
        assert!(matches!(err, ImageError::Unverified { .. }), "{err}");
        store
            .store_layer(&bytes[..], &digest, None)
            .expect("stored again");
        assert!(store.has_layer(&digest));
        assert!(!store.layer_dir(&digest).join("planted").exists());
        assert_eq!(
            std::fs::read_dir(store.root().join("quarantine"))
                .expect("quarantine")
                .count(),
            1
        );
        assert_eq!(
            store
                .verified_layer_dir("example.org/a:1", &digest)
                .expect("verified"),
            store.layer_dir(&digest)
        );
        // gc drops the quarantined copy nothing uses.
        store.gc(&BTreeSet::new()).expect("gc");
        assert_eq!(
            std::fs::read_dir(store.root().join("quarantine"))
                .expect("quarantine")
                .count(),
            0
        );
    }
}
