//! Node-local state files: how the agent writes and reads the files under
//! the state directory (task `run.json`, `state.json`, `exit.json`,
//! `spec.json`, `history.json`, the node identity and settings, the IPAM
//! book, image records, the boot counter) and the health files.
//!
//! The durability rule: a state file is never written in place and never
//! with `std::fs::write`. [`write_atomic`] (and [`write_json`] on top of it)
//! writes a hidden temporary file in the same directory, flushes it to disk
//! (`fsync`), renames it over the target and then flushes the directory, so
//! that after a crash or a power cut the file holds either its old or its
//! new contents, never nothing. Without the first flush ext4 may commit the
//! rename before the data and leave an empty file behind (an empty
//! `ipam.json` stops the overlay for good); without the second the rename
//! itself may be lost. Secrets are created with their final mode
//! (`Some(0o600)`), so they are never readable by others, not even for an
//! instant.
//!
//! Reading: [`read_json`] treats a missing, unreadable or corrupt file as
//! absent (for state that is recomputed or defaulted), [`read_json_strict`]
//! reports a corrupt or empty file as an error naming it (for state that
//! must not be silently forgotten).

use std::ffi::{OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where a node keeps what survives a reboot (the state partition).
pub const STATE_DIR: &str = "/var/lib/strata";
/// Where a node keeps what lasts until the next boot (tmpfs).
pub const RUN_DIR: &str = "/run/strata";

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file exists but cannot be read ([`read_json_strict`]).
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// The file is corrupt or empty ([`read_json_strict`]).
    #[error("cannot parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// For callers that want a typed error from [`write_atomic`] or
    /// [`write_json`] (which return the bare `io::Error`).
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Replaces `path` with `bytes` durably: a hidden temporary file in the
/// same directory (`.<file name>.tmp-<pid>-<n>`, created with `mode` when
/// given), `fsync`, rename over `path`, `fsync` of the directory. Creates
/// the parent directory. On failure the temporary file is removed and
/// `path` keeps its old contents.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(temp_name(name));
    // Pids repeat across boots: a leftover of a crashed process may hold
    // this name, with other permissions. Start afresh.
    let _ = std::fs::remove_file(&tmp);
    if let Err(e) = write_and_rename(&tmp, bytes, mode, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// Writes and flushes `tmp`, then renames it to `path`.
fn write_and_rename(tmp: &Path, bytes: &[u8], mode: Option<u32>, path: &Path) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    if let Some(mode) = mode {
        options.mode(mode);
    }
    let mut file = options.open(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(tmp, path)
}

/// The temporary name for a file named `name`: hidden, unique per file,
/// process and write (two threads replacing the same file never share it).
fn temp_name(name: &OsStr) -> OsString {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}-{n}", std::process::id()));
    tmp
}

/// [`write_atomic`] of `value` as pretty-printed JSON (no trailing
/// newline), the format of every JSON state file. Files written in another
/// format (compact, or with a newline) go through [`write_atomic`].
pub fn write_json<T: Serialize + ?Sized>(
    path: &Path,
    value: &T,
    mode: Option<u32>,
) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    write_atomic(path, &bytes, mode)
}

/// The JSON file at `path`; `None` when it is missing, unreadable or does
/// not parse.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The JSON file at `path`; `Ok(None)` only when it is missing. A file that
/// cannot be read, or is corrupt or empty, is an error naming it.
pub fn read_json_strict<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateFileError::Parse {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    type Doc = BTreeMap<String, u32>;

    fn doc(n: u32) -> Doc {
        BTreeMap::from([("n".to_string(), n)])
    }

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn round_trip_creates_the_parent_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.json");
        write_json(&path, &doc(1), None).expect("write");
        assert_eq!(read_json::<Doc>(&path), Some(doc(1)));
        assert_eq!(
            read_json_strict::<Doc>(&path).expect("strict"),
            Some(doc(1))
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\n  \"n\": 1\n}"
        );
        assert_eq!(names(&dir.path().join("sub")), ["state.json"]);
    }

    #[test]
    fn a_secret_is_created_with_its_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_atomic(&path, b"secret", Some(0o600)).expect("write");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"secret");
    }

    #[test]
    fn replaces_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("run.json");
        write_json(&path, &doc(1), None).expect("first");
        write_json(&path, &doc(2), None).expect("second");
        assert_eq!(read_json::<Doc>(&path), Some(doc(2)));
        assert_eq!(names(dir.path()), ["run.json"]);
    }

    #[test]
    fn two_files_of_one_stem_do_not_share_a_temp_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_atomic(&dir.path().join("node.key"), b"key", Some(0o600)).expect("key");
        write_atomic(&dir.path().join("node.crt"), b"crt", None).expect("crt");
        assert_eq!(names(dir.path()), ["node.crt", "node.key"]);
        assert_eq!(
            std::fs::read(dir.path().join("node.key")).expect("key"),
            b"key"
        );
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A non-empty directory cannot be replaced by a file.
        let path = dir.path().join("taken");
        std::fs::create_dir_all(path.join("inside")).expect("mkdir");
        assert!(write_atomic(&path, b"x", None).is_err());
        assert_eq!(names(dir.path()), ["taken"]);
    }

    #[test]
    fn a_missing_file_is_absent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing.json");
        assert_eq!(read_json::<Doc>(&path), None);
        assert_eq!(read_json_strict::<Doc>(&path).expect("strict"), None);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam.json");
        std::fs::write(&path, "{\"n\": ").expect("write");
        assert_eq!(read_json::<Doc>(&path), None);
        let e = read_json_strict::<Doc>(&path).expect_err("corrupt");
        assert!(matches!(e, StateFileError::Parse { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("cannot parse {}: ", path.display())),
            "{message}"
        );
    }

    #[test]
    fn an_empty_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, "").expect("write");
        assert_eq!(read_json::<Doc>(&path), None);
        let e = read_json_strict::<Doc>(&path).expect_err("empty");
        assert!(matches!(e, StateFileError::Parse { .. }), "{e:?}");
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("cannot parse {}: ", path.display())),
            "{message}"
        );
    }
}
