//! First-boot providers: where a node finds its user-data (QEMU fw_cfg, a
//! `STRATA-CFG` filesystem, a kernel command line URL, cloud metadata) and
//! how what it learned is kept under `/var/lib/strata` for later boots.
//!
//! [`discover`] first looks for `<state_dir>/user-data.toml`, kept from an
//! earlier boot. Without it the providers are tried in order; the first that
//! has data wins, its text is validated with
//! [`configs::user_data::UserData::parse`] and kept (atomically, mode 0600:
//! a master's user-data holds the cluster CA key). A provider that has data
//! which does not validate is an error naming it: discovery never falls
//! through to a different configuration.
//!
//! [`apply_network`] renders the systemd-networkd file for the node's static
//! or DHCP settings; writing it is the agent's job.
//!
//! Blocking and synchronous on purpose: it runs once, before anything else.

mod http;
mod network;
mod providers;

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use configs::user_data::UserData;

pub use network::{NETWORK_DIR, NETWORK_FILE, NetworkPlan, apply_network};

/// The metadata clients' HTTP/1.x response parser, for the fuzz targets
/// (`agent/fuzz`, built with `--cfg fuzzing`): the status and the decoded
/// body's length, or why the response was refused.
#[cfg(fuzzing)]
pub fn fuzz_http_response(raw: &[u8]) -> io::Result<(u16, usize)> {
    http::parse(raw).map(|r| (r.status, r.body.len()))
}

/// The user-data a node found and where it found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub user_data: UserData,
    /// `fw_cfg:opt/strata/user-data`, `label:STRATA-CFG`, `url:http://...`,
    /// `ec2-imds`, `gce-metadata` or `state:/var/lib/strata/user-data.toml`.
    pub source: String,
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A provider (or the kept state file) had user-data that does not
    /// validate; the error names the source, line and field.
    #[error("invalid user-data: {0}")]
    Invalid(#[from] configs::Error),
    /// A provider has data but it could not be read.
    #[error("{origin}: {message}")]
    Provider { origin: String, message: String },
    /// No provider had user-data.
    #[error("{}", NotFound(.tried))]
    NotFound {
        /// Each provider tried, and why it had nothing.
        tried: Vec<(String, String)>,
    },
    /// The user-data could not be kept under the state directory.
    #[error("cannot keep user-data in {path}: {err}")]
    Keep { path: PathBuf, err: io::Error },
}

struct NotFound<'a>(&'a [(String, String)]);

impl fmt::Display for NotFound<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no user-data found, tried:")?;
        for (origin, why) in self.0 {
            write!(f, "\n  {origin}: {why}")?;
        }
        Ok(())
    }
}

/// The name of the kept user-data file inside the state directory.
pub const STATE_FILE: &str = "user-data.toml";

/// Where discovery looks; [`Bootstrap::system`] gives the real paths, tests
/// point every field into a temporary directory or at loopback.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// Where the user-data is kept (`/var/lib/strata`).
    pub state_dir: PathBuf,
    /// The QEMU fw_cfg sysfs directory (`/sys/firmware/qemu_fw_cfg`).
    pub fw_cfg_root: PathBuf,
    /// Run `modprobe qemu_fw_cfg` once when `fw_cfg_root` is missing.
    pub load_fw_cfg_module: bool,
    /// Where filesystems appear by label (`/dev/disk/by-label`).
    pub by_label_dir: PathBuf,
    /// The kernel command line (`/proc/cmdline`).
    pub cmdline_path: PathBuf,
    /// The EC2 instance metadata service (`169.254.169.254:80`).
    pub ec2_endpoint: SocketAddr,
    /// The GCE metadata server (`169.254.169.254:80`).
    pub gce_endpoint: SocketAddr,
    /// Connect timeout for the cloud metadata services.
    pub cloud_connect_timeout: Duration,
    /// Read and write timeout for the cloud metadata services.
    pub cloud_io_timeout: Duration,
    /// Connect, read and write timeout for a `strata.user_data=http://` URL.
    pub url_timeout: Duration,
}

impl Bootstrap {
    /// The real system paths and endpoints.
    pub fn system(state_dir: &Path) -> Bootstrap {
        let metadata = SocketAddr::from(([169, 254, 169, 254], 80));
        Bootstrap {
            state_dir: state_dir.to_path_buf(),
            fw_cfg_root: "/sys/firmware/qemu_fw_cfg".into(),
            load_fw_cfg_module: true,
            by_label_dir: "/dev/disk/by-label".into(),
            cmdline_path: "/proc/cmdline".into(),
            ec2_endpoint: metadata,
            gce_endpoint: metadata,
            cloud_connect_timeout: Duration::from_secs(1),
            cloud_io_timeout: Duration::from_secs(2),
            url_timeout: Duration::from_secs(10),
        }
    }

    /// The kept user-data file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join(STATE_FILE)
    }

    /// Finds the node's user-data: the kept file, else the first provider
    /// that has some (then kept for later boots).
    pub fn discover(&self) -> Result<Discovered, Error> {
        let kept = self.state_file();
        match fs::read_to_string(&kept) {
            Ok(text) => {
                let source = format!("state:{}", kept.display());
                let user_data = UserData::parse(&source, &text)?;
                return Ok(Discovered { user_data, source });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Provider {
                    origin: format!("state:{}", kept.display()),
                    message: e.to_string(),
                });
            }
        }
        let mut tried = Vec::new();
        for provider in providers::ALL {
            match provider(self)? {
                providers::Found::Data { source, text } => {
                    let user_data = UserData::parse(&source, &text)?;
                    keep(&kept, &text)?;
                    return Ok(Discovered { user_data, source });
                }
                providers::Found::Nothing { source, why } => tried.push((source, why)),
            }
        }
        Err(Error::NotFound { tried })
    }
}

/// Finds the node's user-data with the default providers and the real
/// system paths, keeping it under `state_dir`.
pub fn discover(state_dir: &Path) -> Result<Discovered, Error> {
    Bootstrap::system(state_dir).discover()
}

/// Writes `text` to `path` atomically (temporary file, fsync, rename, fsync
/// of the directory), readable by root only.
fn keep(path: &Path, text: &str) -> Result<(), Error> {
    let err = |err| Error::Keep {
        path: path.to_path_buf(),
        err,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("toml.tmp");
    // A leftover from a crash could have other permissions; start afresh.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests;
