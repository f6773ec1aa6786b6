//! The first-boot providers, in the order they are tried. Each says whether
//! it has user-data (its text, unvalidated), has none (and why), or has some
//! that cannot be read (an error naming it).

use std::fs;
use std::io;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use tempfile::Builder;

use crate::http::{self, Request};
use crate::{Bootstrap, Error};

/// What one provider found.
pub(crate) enum Found {
    Data { source: String, text: String },
    Nothing { source: String, why: String },
}

type Provider = fn(&Bootstrap) -> Result<Found, Error>;

/// Every provider, in the order they are tried.
pub(crate) const ALL: [Provider; 5] = [fw_cfg, label, cmdline, ec2, gce];

/// The QEMU fw_cfg entry (`-fw_cfg name=opt/strata/user-data,file=...`).
pub(crate) const FW_CFG_NAME: &str = "opt/strata/user-data";
/// The label of a configuration filesystem (vfat, iso9660 or ext4).
pub(crate) const LABEL: &str = "STRATA-CFG";
/// The user-data file at the root of that filesystem.
pub(crate) const LABEL_FILE: &str = "user-data.toml";
/// The kernel command line parameter naming a `http://` or `file://` URL.
pub(crate) const CMDLINE_KEY: &str = "strata.user_data=";

fn data(source: String, text: String) -> Result<Found, Error> {
    if text.trim().is_empty() {
        return Ok(Found::Nothing {
            source,
            why: "user-data is empty".into(),
        });
    }
    Ok(Found::Data { source, text })
}

fn nothing(source: &str, why: impl Into<String>) -> Result<Found, Error> {
    Ok(Found::Nothing {
        source: source.to_string(),
        why: why.into(),
    })
}

fn failed(source: &str, message: impl Into<String>) -> Error {
    Error::Provider {
        origin: source.to_string(),
        message: message.into(),
    }
}

/// QEMU fw_cfg through sysfs, loading `qemu_fw_cfg` once if needed.
fn fw_cfg(b: &Bootstrap) -> Result<Found, Error> {
    let source = format!("fw_cfg:{FW_CFG_NAME}");
    let root = &b.fw_cfg_root;
    if !root.exists() {
        if !b.load_fw_cfg_module {
            return nothing(&source, format!("no {}", root.display()));
        }
        let loaded = std::process::Command::new("modprobe")
            .arg("qemu_fw_cfg")
            .output();
        if !root.exists() {
            let why = match loaded {
                Ok(out) if out.status.success() => {
                    "loaded qemu_fw_cfg but it found no fw_cfg device".to_string()
                }
                Ok(out) => format!(
                    "modprobe qemu_fw_cfg: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => format!("cannot run modprobe: {e}"),
            };
            return nothing(&source, format!("no {} ({why})", root.display()));
        }
    }
    let raw = root.join("by_name").join(FW_CFG_NAME).join("raw");
    match fs::read(&raw) {
        Ok(bytes) => {
            let text =
                String::from_utf8(bytes).map_err(|_| failed(&source, "user-data is not UTF-8"))?;
            data(source, text)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            nothing(&source, format!("no {}", raw.display()))
        }
        Err(e) => Err(failed(
            &source,
            format!("cannot read {}: {e}", raw.display()),
        )),
    }
}

/// A filesystem labelled `STRATA-CFG` holding `user-data.toml`, mounted
/// read-only just long enough to read it. The mount point is a temporary
/// directory in the state directory, which must be writable anyway: `/tmp`
/// may still be on the read-only root this early.
fn label(b: &Bootstrap) -> Result<Found, Error> {
    let source = format!("label:{LABEL}");
    let link = b.by_label_dir.join(LABEL);
    if fs::symlink_metadata(&link).is_err() {
        return nothing(&source, format!("no {}", link.display()));
    }
    let fail = |message: String| failed(&source, message);
    let device = fs::canonicalize(&link)
        .map_err(|e| fail(format!("cannot resolve {}: {e}", link.display())))?;
    let dir = fs::create_dir_all(&b.state_dir)
        .and_then(|()| {
            Builder::new()
                .prefix(".strata-cfg.")
                .tempdir_in(&b.state_dir)
        })
        .map_err(|e| fail(format!("cannot make a mount point: {e}")))?;
    let fstype = mount_read_only(&device, dir.path()).map_err(fail)?;
    // Dropped before `dir`: unmounted, then the mount point removed.
    let _unmount = Unmount(dir.path());
    match fs::read_to_string(dir.path().join(LABEL_FILE)) {
        // The source names what was read: `label:STRATA-CFG (vfat on /dev/vdb)`.
        Ok(text) => data(format!("{source} ({fstype} on {})", device.display()), text),
        Err(e) => Err(fail(format!(
            "cannot read {LABEL_FILE} on {}: {e}",
            device.display()
        ))),
    }
}

/// Mounts `device` on `dir` read-only as the first filesystem type that
/// fits, and returns that type.
fn mount_read_only(device: &Path, dir: &Path) -> Result<&'static str, String> {
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut errors = Vec::new();
    for fstype in ["vfat", "iso9660", "ext4"] {
        match nix::mount::mount(Some(device), dir, Some(fstype), flags, None::<&str>) {
            Ok(()) => return Ok(fstype),
            Err(e) => errors.push(format!("{fstype}: {}", e.desc())),
        }
    }
    Err(format!(
        "cannot mount {} read-only ({})",
        device.display(),
        errors.join(", ")
    ))
}

/// Unmounts on drop, so the mount never outlives the read.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        // Nothing is open on it any more; a lazy unmount if something still is.
        if nix::mount::umount(self.0).is_err() {
            let _ = nix::mount::umount2(self.0, MntFlags::MNT_DETACH);
        }
    }
}

/// A `strata.user_data=URL` kernel parameter (`http://` or `file://`).
fn cmdline(b: &Bootstrap) -> Result<Found, Error> {
    let path = &b.cmdline_path;
    let line = match fs::read_to_string(path) {
        Ok(line) => line,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return nothing("cmdline", format!("no {}", path.display()));
        }
        Err(e) => {
            return Err(failed(
                "cmdline",
                format!("cannot read {}: {e}", path.display()),
            ));
        }
    };
    let Some(url) = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(CMDLINE_KEY))
    else {
        return nothing(
            "cmdline",
            format!("no {CMDLINE_KEY}URL in {}", path.display()),
        );
    };
    let source = format!("url:{url}");
    if let Some(file) = url.strip_prefix("file://") {
        let text = fs::read_to_string(file)
            .map_err(|e| failed(&source, format!("cannot read {file}: {e}")))?;
        return data(source, text);
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(failed(
            &source,
            "unsupported URL, expected http:// or file://",
        ));
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse()
                .map_err(|_| failed(&source, format!("bad port `{p}`")))?,
        ),
        None => (authority, 80),
    };
    let req = Request {
        method: "GET",
        host: authority,
        path,
        headers: &[],
        connect_timeout: b.url_timeout,
        io_timeout: b.url_timeout,
    };
    let resp = http::send_to_host(host, port, &req).map_err(|e| failed(&source, e.to_string()))?;
    if resp.status != 200 {
        return Err(failed(&source, format!("HTTP status {}", resp.status)));
    }
    let text =
        String::from_utf8(resp.body).map_err(|_| failed(&source, "user-data is not UTF-8"))?;
    data(source, text)
}

/// EC2 instance metadata, IMDSv2: a session token first, then the data.
fn ec2(b: &Bootstrap) -> Result<Found, Error> {
    const SOURCE: &str = "ec2-imds";
    let addr = b.ec2_endpoint;
    let host = addr.ip().to_string();
    let req = |method, path, headers| Request {
        method,
        host: &host,
        path,
        headers,
        connect_timeout: b.cloud_connect_timeout,
        io_timeout: b.cloud_io_timeout,
    };
    let token = match http::send(
        addr,
        &req(
            "PUT",
            "/latest/api/token",
            &[("X-aws-ec2-metadata-token-ttl-seconds", "300")],
        ),
    ) {
        Err(e) => return nothing(SOURCE, format!("no answer from {addr}: {e}")),
        Ok(r) if r.status != 200 => {
            return nothing(
                SOURCE,
                format!("{addr} refused an IMDSv2 token: HTTP status {}", r.status),
            );
        }
        Ok(r) => String::from_utf8(r.body).map_err(|_| failed(SOURCE, "token is not UTF-8"))?,
    };
    let resp = http::send(
        addr,
        &req(
            "GET",
            "/latest/user-data",
            &[("X-aws-ec2-metadata-token", token.trim())],
        ),
    )
    .map_err(|e| failed(SOURCE, format!("{addr}: {e}")))?;
    match resp.status {
        200 => {
            let text = String::from_utf8(resp.body)
                .map_err(|_| failed(SOURCE, "user-data is not UTF-8"))?;
            data(SOURCE.into(), text)
        }
        404 => nothing(SOURCE, "the instance has no user-data"),
        status => Err(failed(
            SOURCE,
            format!("{addr}: HTTP status {status} for /latest/user-data"),
        )),
    }
}

/// GCE metadata server: the `user-data` instance attribute.
fn gce(b: &Bootstrap) -> Result<Found, Error> {
    const SOURCE: &str = "gce-metadata";
    const PATH: &str = "/computeMetadata/v1/instance/attributes/user-data";
    let addr = b.gce_endpoint;
    let req = Request {
        method: "GET",
        host: "metadata.google.internal",
        path: PATH,
        headers: &[("Metadata-Flavor", "Google")],
        connect_timeout: b.cloud_connect_timeout,
        io_timeout: b.cloud_io_timeout,
    };
    let resp = match http::send(addr, &req) {
        Err(e) => return nothing(SOURCE, format!("no answer from {addr}: {e}")),
        Ok(r) => r,
    };
    // Another cloud's metadata service may answer on the same address.
    if resp.header("Metadata-Flavor") != Some("Google") {
        return nothing(
            SOURCE,
            format!(
                "{addr} is not a GCE metadata server (HTTP status {})",
                resp.status
            ),
        );
    }
    match resp.status {
        200 => {
            let text = String::from_utf8(resp.body)
                .map_err(|_| failed(SOURCE, "user-data is not UTF-8"))?;
            data(SOURCE.into(), text)
        }
        404 => nothing(SOURCE, "the instance has no user-data attribute"),
        status => Err(failed(
            SOURCE,
            format!("{addr}: HTTP status {status} for {PATH}"),
        )),
    }
}
