//! Importing images from local archives: OCI image layout directories, tar
//! (or tar.gz) files holding one, and `docker save` archives (also the
//! `docker-archive:` format skopeo writes). Every blob is checked against
//! its digest before it is stored.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use super::{ImageError, ImageRecord, ImageStore, hex_of, parse_config, verify};

/// `sha256:<hex>` of a file's content.
pub(crate) fn hash_file(path: &Path) -> Result<String, ImageError> {
    let mut file = std::fs::File::open(path)
        .map_err(ImageError::io(format!("cannot open {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

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

impl ImageStore {
    /// Imports an image from `path` (an OCI layout directory, a tarball of
    /// one, or a `docker save` archive). `name` overrides the name found in
    /// the archive.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<ImageRecord, ImageError> {
        let md = std::fs::metadata(path)
            .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
        if md.is_dir() {
            return self.import_dir(path, name, path);
        }
        let tmp = self.temp_dir("import")?;
        let file = std::fs::File::open(path)
            .map_err(ImageError::io(format!("cannot open {}", path.display())))?;
        let mut buffered = std::io::BufReader::new(file);
        let gzip = std::io::BufRead::fill_buf(&mut buffered)
            .map_err(ImageError::io(format!("cannot read {}", path.display())))?
            .starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_ownerships(false);
        archive.unpack(&tmp.0).map_err(|e| ImageError::BadArchive {
            path: path.display().to_string(),
            reason: format!("not a tar archive: {e}"),
        })?;
        self.import_dir(&tmp.0, name, path)
    }

    fn import_dir(
        &self,
        dir: &Path,
        name: Option<&str>,
        origin: &Path,
    ) -> Result<ImageRecord, ImageError> {
        let bad = |reason: String| ImageError::BadArchive {
            path: origin.display().to_string(),
            reason,
        };
        if dir.join("oci-layout").is_file() && dir.join("index.json").is_file() {
            self.import_oci_layout(dir, name, origin)
        } else if dir.join("manifest.json").is_file() {
            self.import_docker_archive(dir, name, origin)
        } else {
            Err(bad("neither an OCI image layout (oci-layout, index.json) nor a docker save archive (manifest.json)".into()))
        }
    }

    fn import_oci_layout(
        &self,
        dir: &Path,
        name: Option<&str>,
        origin: &Path,
    ) -> Result<ImageRecord, ImageError> {
        let bad = |reason: String| ImageError::BadArchive {
            path: origin.display().to_string(),
            reason,
        };
        let blob_path = |digest: &str| -> Result<std::path::PathBuf, ImageError> {
            let hex = hex_of(digest);
            if !digest.starts_with("sha256:")
                || hex.len() != 64
                || !hex.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(bad(format!("unsupported digest {digest:?}")));
            }
            Ok(dir.join("blobs/sha256").join(hex))
        };
        let read_blob = |digest: &str, what: &str| -> Result<Vec<u8>, ImageError> {
            let path = blob_path(digest)?;
            let bytes = std::fs::read(&path)
                .map_err(ImageError::io(format!("cannot read {}", path.display())))?;
            verify(what, &bytes, digest)?;
            Ok(bytes)
        };
        let index_bytes = std::fs::read(dir.join("index.json")).map_err(ImageError::io(
            format!("cannot read index.json in {}", origin.display()),
        ))?;
        let index: Index = serde_json::from_slice(&index_bytes)
            .map_err(|e| bad(format!("bad index.json: {e}")))?;
        let mut desc = index
            .manifests
            .first()
            .cloned()
            .ok_or_else(|| bad("index.json lists no manifest".into()))?;
        let ref_name = desc
            .annotations
            .get("org.opencontainers.image.ref.name")
            .cloned();
        // Resolve nested indexes to the linux/amd64 manifest.
        for _ in 0..4 {
            if !desc.media_type.contains("index") && !desc.media_type.contains("manifest.list") {
                break;
            }
            let nested: Index = serde_json::from_slice(&read_blob(&desc.digest, "image index")?)
                .map_err(|e| bad(format!("bad nested index: {e}")))?;
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
                .ok_or_else(|| bad("nested index lists no manifest".into()))?;
        }
        let manifest: Manifest =
            serde_json::from_slice(&read_blob(&desc.digest, "image manifest")?)
                .map_err(|e| bad(format!("bad manifest: {e}")))?;
        let config = read_blob(&manifest.config.digest, "image config")?;
        let (_, diff_ids) = parse_config(&config).map_err(bad)?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(bad(
                "the manifest and the config disagree on the number of layers".into(),
            ));
        }
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            if self.layer_dir(diff_id).is_dir() {
                continue;
            }
            let path = blob_path(&layer.digest)?;
            let actual = hash_file(&path)?;
            if actual != layer.digest {
                return Err(ImageError::Digest {
                    what: format!("layer blob {}", layer.digest),
                    expected: layer.digest.clone(),
                    actual,
                });
            }
            let file = std::fs::File::open(&path)
                .map_err(ImageError::io(format!("cannot open {}", path.display())))?;
            self.store_layer(file, diff_id)?;
        }
        let default_name = match ref_name {
            Some(tag) if tag.contains('/') || tag.contains(':') => tag,
            Some(tag) => format!("localhost/import:{tag}"),
            None => format!("localhost/import@{}", manifest.config.digest),
        };
        self.commit_image(name.unwrap_or(&default_name), &config, diff_ids)
    }

    fn import_docker_archive(
        &self,
        dir: &Path,
        name: Option<&str>,
        origin: &Path,
    ) -> Result<ImageRecord, ImageError> {
        let bad = |reason: String| ImageError::BadArchive {
            path: origin.display().to_string(),
            reason,
        };
        let inside = |rel: &str| -> Result<std::path::PathBuf, ImageError> {
            if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
                return Err(bad(format!("entry {rel:?} escapes the archive")));
            }
            Ok(dir.join(rel))
        };
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).map_err(
                ImageError::io(format!("cannot read manifest.json in {}", origin.display())),
            )?)
            .map_err(|e| bad(format!("bad manifest.json: {e}")))?;
        let entry = entries
            .first()
            .ok_or_else(|| bad("manifest.json lists no image".into()))?;
        let config_path = inside(&entry.config)?;
        let config = std::fs::read(&config_path).map_err(ImageError::io(format!(
            "cannot read {}",
            config_path.display()
        )))?;
        // `<hex>.json` (docker) or `sha256:<hex>`/`blobs/sha256/<hex>` names carry the digest.
        let stem = Path::new(&entry.config)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = hex_of(&stem).to_string();
        if stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit()) {
            verify("image config", &config, &format!("sha256:{stem}"))?;
        }
        let (_, diff_ids) = parse_config(&config).map_err(bad)?;
        if diff_ids.len() != entry.layers.len() {
            return Err(bad(
                "manifest.json and the config disagree on the number of layers".into(),
            ));
        }
        for (layer, diff_id) in entry.layers.iter().zip(&diff_ids) {
            if self.layer_dir(diff_id).is_dir() {
                continue;
            }
            let path = inside(layer)?;
            let file = std::fs::File::open(&path)
                .map_err(ImageError::io(format!("cannot open {}", path.display())))?;
            // The stored layer is checked against the diff id as it is extracted.
            self.store_layer(file, diff_id)?;
        }
        let tag = entry.repo_tags.as_ref().and_then(|t| t.first().cloned());
        let default_name = tag
            .unwrap_or_else(|| format!("localhost/import@sha256:{}", super::sha256_hex(&config)));
        self.commit_image(name.unwrap_or(&default_name), &config, diff_ids)
    }
}
