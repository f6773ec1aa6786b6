//! Importing images from local archives: OCI image layout directories, tar
//! (or tar.gz) files holding one, and `docker save` archives (also the
//! `docker-archive:` format skopeo writes). Every blob is checked against
//! its digest before it is stored.
//!
//! An archive is extracted into `tmp/` by the layer extractor (`layer`,
//! archive rules: nothing outside the directory, no device nodes, bounded
//! size and entry count), and its members are read only through
//! [`open_in`] (`crate::inroot`): `openat2` with `RESOLVE_IN_ROOT`, so that a symbolic link in
//! the archive (`docker save` links repeated layers) resolves inside it and
//! never to a file of the host; only regular files are read, with reads
//! bounded by the store's [`Limits`](super::Limits).

use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::Deserialize;

use super::layer::{self, Rules};
use super::{Digest, ImageError, ImageRecord, ImageStore, parse_config, verify};

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize, Clone)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The directory an archive was extracted to (or the layout directory
/// given), as a descriptor its members are opened from.
struct Root {
    fd: OwnedFd,
    /// The archive or directory the operator named, for errors.
    origin: String,
}

impl Root {
    fn open(dir: &Path, origin: &Path) -> Result<Self, ImageError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(dir)
            .map_err(ImageError::io(format!("cannot open {}", dir.display())))?;
        Ok(Self {
            fd: OwnedFd::from(file),
            origin: origin.display().to_string(),
        })
    }

    fn bad(&self, reason: String) -> ImageError {
        ImageError::BadArchive {
            path: self.origin.clone(),
            reason,
        }
    }

    /// Opens the member `rel` for reading: resolved with the archive as
    /// its root (`..` and absolute symbolic links stay inside), no magic
    /// links, no other mount; non-blocking, so that a FIFO cannot hang the
    /// import; refused unless a regular file.
    fn open_in(&self, rel: &str) -> Result<File, ImageError> {
        use crate::inroot::{InRootError, open_regular};
        open_regular(&self.fd, rel).map_err(|e| match e {
            InRootError::Open(e) => {
                ImageError::io(format!("cannot open {rel} in {}", self.origin))(e)
            }
            InRootError::Stat(e) => {
                ImageError::io(format!("cannot read {rel} in {}", self.origin))(e)
            }
            InRootError::NotRegular => self.bad(format!("{rel} is not a regular file")),
        })
    }

    /// Whether `rel` is a regular file of the archive.
    fn has(&self, rel: &str) -> bool {
        self.open_in(rel).is_ok()
    }

    /// The member `rel` (the archive's `what`), refused when larger than
    /// `limit` bytes.
    fn read(&self, rel: &str, what: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        read_capped(
            self.open_in(rel)?,
            limit,
            &format!("{what} ({rel} in {})", self.origin),
        )
    }

    /// The member `rel` (a layer), refused when its size passes `limit`.
    fn open_layer(&self, rel: &str, limit: u64) -> Result<File, ImageError> {
        let file = self.open_in(rel)?;
        let size = file
            .metadata()
            .map_err(ImageError::io(format!(
                "cannot read {rel} in {}",
                self.origin
            )))?
            .len();
        if size > limit {
            return Err(ImageError::TooLarge {
                what: format!("layer {rel} in {}", self.origin),
                limit,
                declared: Some(size),
            });
        }
        Ok(file)
    }
}

/// All of `file`, refused when larger than `limit` bytes (by its size, then
/// while reading).
fn read_capped(file: File, limit: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    let size = file
        .metadata()
        .map_err(ImageError::io(format!("cannot read {what}")))?
        .len();
    if size > limit {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            limit,
            declared: Some(size),
        });
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(ImageError::io(format!("cannot read {what}")))?;
    if bytes.len() as u64 > limit {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            limit,
            declared: None,
        });
    }
    Ok(bytes)
}

impl ImageStore {
    /// Imports an image from `path` (an OCI layout directory, a tarball of
    /// one, or a `docker save` archive). `name` overrides the name found in
    /// the archive.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<ImageRecord, ImageError> {
        let md = std::fs::metadata(path)
            .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
        if md.is_dir() {
            return self.import_dir(&Root::open(path, path)?, name);
        }
        let tmp = self.temp_dir("import")?;
        let file =
            File::open(path).map_err(ImageError::io(format!("cannot open {}", path.display())))?;
        layer::extract(
            file,
            &tmp.0,
            &Rules::archive(self.limits()),
            &path.display().to_string(),
        )?;
        self.import_dir(&Root::open(&tmp.0, path)?, name)
    }

    fn import_dir(&self, root: &Root, name: Option<&str>) -> Result<ImageRecord, ImageError> {
        if root.has("oci-layout") && root.has("index.json") {
            self.import_oci_layout(root, name)
        } else if root.has("manifest.json") {
            self.import_docker_archive(root, name)
        } else {
            Err(root.bad("neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)".into()))
        }
    }

    fn import_oci_layout(
        &self,
        root: &Root,
        name: Option<&str>,
    ) -> Result<ImageRecord, ImageError> {
        let origin = root.origin.as_str();
        let digest_of = |desc: &Descriptor, what: &str| -> Result<Digest, ImageError> {
            Digest::parse(&desc.digest).map_err(ImageError::bad_digest(format!(
                "the {what} digest in {origin}"
            )))
        };
        let blob_path = |digest: &Digest| format!("blobs/sha256/{}", digest.hex());
        let read_blob = |digest: &Digest, what: &str, limit: u64| -> Result<Vec<u8>, ImageError> {
            let bytes = root.read(&blob_path(digest), what, limit)?;
            verify(&format!("{what} of {origin}"), &bytes, digest)?;
            Ok(bytes)
        };
        let limits = *self.limits();
        let index: Index =
            serde_json::from_slice(&root.read("index.json", "the index", limits.manifest)?)
                .map_err(|e| root.bad(format!("bad index.json: {e}")))?;
        let mut desc = index
            .manifests
            .first()
            .cloned()
            .ok_or_else(|| root.bad("index.json lists no manifest".into()))?;
        let ref_name = desc
            .annotations
            .get("org.opencontainers.image.ref.name")
            .cloned();
        // Resolve nested indexes to the linux/amd64 manifest.
        for _ in 0..4 {
            if !desc.media_type.contains("index") && !desc.media_type.contains("manifest.list") {
                break;
            }
            let digest = digest_of(&desc, "image index")?;
            let nested: Index =
                serde_json::from_slice(&read_blob(&digest, "image index", limits.manifest)?)
                    .map_err(|e| root.bad(format!("bad nested index: {e}")))?;
            desc = nested
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .or(nested.manifests.first())
                .cloned()
                .ok_or_else(|| root.bad("nested index lists no manifest".into()))?;
        }
        let manifest_digest = digest_of(&desc, "image manifest")?;
        let manifest: Manifest = serde_json::from_slice(&read_blob(
            &manifest_digest,
            "image manifest",
            limits.manifest,
        )?)
        .map_err(|e| root.bad(format!("bad manifest: {e}")))?;
        self.check_layer_count(origin, manifest.layers.len())?;
        let config_digest = digest_of(&manifest.config, "image config")?;
        let layer_digests = manifest
            .layers
            .iter()
            .map(|l| digest_of(l, "layer"))
            .collect::<Result<Vec<_>, _>>()?;
        let config = read_blob(&config_digest, "image config", limits.config)?;
        let (_, diff_ids) = parse_config(&config, origin)?;
        if diff_ids.len() != layer_digests.len() {
            return Err(
                root.bad("the manifest and the config disagree on the number of layers".into())
            );
        }
        for (blob, diff_id) in layer_digests.iter().zip(&diff_ids) {
            if self.has_layer(diff_id) {
                continue;
            }
            let file = root.open_layer(&blob_path(blob), limits.layer_compressed)?;
            // The blob digest and the diff id are both checked as the layer
            // is extracted, before it is kept.
            self.store_layer(file, diff_id, Some(blob))?;
        }
        let default_name = match ref_name {
            Some(tag) if tag.contains('/') || tag.contains(':') => tag,
            Some(tag) => format!("localhost/import:{tag}"),
            None => format!("localhost/import@{config_digest}"),
        };
        self.commit_image(name.unwrap_or(&default_name), &config, diff_ids)
    }

    fn import_docker_archive(
        &self,
        root: &Root,
        name: Option<&str>,
    ) -> Result<ImageRecord, ImageError> {
        let origin = root.origin.as_str();
        let limits = *self.limits();
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&root.read("manifest.json", "the manifest", limits.manifest)?)
                .map_err(|e| root.bad(format!("bad manifest.json: {e}")))?;
        let entry = entries
            .first()
            .ok_or_else(|| root.bad("manifest.json lists no image".into()))?;
        self.check_layer_count(origin, entry.layers.len())?;
        let config = root.read(&entry.config, "the image config", limits.config)?;
        // `<hex>.json` (docker) or `sha256:<hex>`/`blobs/sha256/<hex>` names carry the digest.
        let stem = Path::new(&entry.config)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = stem.strip_prefix("sha256:").unwrap_or(&stem);
        if let Ok(digest) = Digest::from_hex(stem) {
            verify(&format!("image config of {origin}"), &config, &digest)?;
        }
        let (_, diff_ids) = parse_config(&config, origin)?;
        if diff_ids.len() != entry.layers.len() {
            return Err(
                root.bad("manifest.json and the config disagree on the number of layers".into())
            );
        }
        for (layer, diff_id) in entry.layers.iter().zip(&diff_ids) {
            if self.has_layer(diff_id) {
                continue;
            }
            let file = root.open_layer(layer, limits.layer_compressed)?;
            // The stored layer is checked against the diff id as it is extracted.
            self.store_layer(file, diff_id, None)?;
        }
        let tag = entry.repo_tags.as_ref().and_then(|t| t.first().cloned());
        let default_name =
            tag.unwrap_or_else(|| format!("localhost/import@{}", Digest::of(&config)));
        self.commit_image(name.unwrap_or(&default_name), &config, diff_ids)
    }
}
