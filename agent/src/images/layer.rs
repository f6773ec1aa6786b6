//! Layer extraction: a (possibly gzip-compressed) tar stream unpacked into a
//! directory, with OCI whiteouts turned into overlayfs whiteouts, while the
//! uncompressed stream is hashed so it can be checked against the diff id.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::ImageError;

/// A reader that hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpacks `reader` into `dest` and returns the `sha256:<hex>` of the
/// uncompressed tar.
pub(crate) fn extract(reader: impl Read, dest: &Path) -> Result<String, ImageError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let head = buffered
        .fill_buf()
        .map_err(ImageError::io("cannot read layer"))?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    let zstd = head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    if zstd {
        return Err(ImageError::BadArchive {
            path: dest.display().to_string(),
            reason: "zstd-compressed layers are not supported".into(),
        });
    }
    let decoded: Box<dyn Read> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut hashing = Hashing {
        inner: decoded,
        hasher: Sha256::new(),
    };
    unpack(&mut hashing, dest)?;
    // Hash the padding after the end-of-archive marker too.
    std::io::copy(&mut hashing, &mut std::io::sink())
        .map_err(ImageError::io("cannot read layer"))?;
    Ok(format!("sha256:{}", hex::encode(hashing.hasher.finalize())))
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn unpack(reader: &mut impl Read, dest: &Path) -> Result<(), ImageError> {
    let bad = |reason: String| ImageError::BadArchive {
        path: dest.display().to_string(),
        reason,
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(is_root());
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("bad layer tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("bad layer tar: {e}")))?;
        let path: PathBuf = entry
            .path()
            .map_err(|e| bad(format!("bad path in layer: {e}")))?
            .into_owned();
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(bad(format!(
                "layer entry {} escapes the layer",
                path.display()
            )));
        }
        let rel: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let Some(file_name) = rel.file_name() else {
            continue;
        };
        let name = file_name.as_bytes();
        if let Some(hidden) = name.strip_prefix(b".wh.") {
            let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
            std::fs::create_dir_all(&parent).map_err(ImageError::io(format!(
                "cannot create {}",
                parent.display()
            )))?;
            if hidden == b".wh..opq" {
                set_opaque(&parent)?;
            } else {
                let target = parent.join(std::ffi::OsStr::from_bytes(hidden));
                whiteout(&target)?;
            }
            continue;
        }
        entry.unpack_in(dest).map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            bad(format!("cannot unpack {}: {e}{cause}", rel.display()))
        })?;
    }
    Ok(())
}

/// An overlayfs whiteout: a 0/0 character device.
fn whiteout(path: &Path) -> Result<(), ImageError> {
    let _ = std::fs::remove_file(path);
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        nix::sys::stat::makedev(0, 0),
    )
    .map_err(|e| ImageError::io(format!("cannot create whiteout {}", path.display()))(e.into()))
}

/// Marks a directory opaque for overlayfs.
fn set_opaque(dir: &Path) -> Result<(), ImageError> {
    let c_path =
        std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| ImageError::BadArchive {
            path: dir.display().to_string(),
            reason: "nul in path".into(),
        })?;
    let name = c"trusted.overlay.opaque";
    // SAFETY: both strings are valid NUL-terminated C strings and the value
    // pointer/length describe a live one-byte buffer.
    let rc = unsafe { libc::setxattr(c_path.as_ptr(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(ImageError::io(format!(
            "cannot mark {} opaque",
            dir.display()
        ))(std::io::Error::last_os_error()));
    }
    Ok(())
}
