//! Host packages each part of the build and the tests needs, and their
//! installation with apt on Debian bookworm.
//!
//! QEMU comes from bookworm-backports: the machine's preinstalled
//! `qemu-utils` is the backports build and conflicts with bookworm's own
//! `qemu-system-x86`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::sh;

/// Needed to build the workspace at all (etcd-client needs protoc,
/// libcontainer links libseccomp).
pub const BUILD_PACKAGES: &[&str] = &[
    "protobuf-compiler",
    "libseccomp-dev",
    "pkg-config",
    "build-essential",
];

/// Needed by the host integration tier.
pub const HOST_TEST_PACKAGES: &[&str] = &[
    "etcd-server",
    "etcd-client",
    "iproute2",
    "nftables",
    "iperf3",
    "dbus",
    "dosfstools",
    "mtools",
];

/// Container runtime (host tier and `bench runtime`): libcontainer links
/// libseccomp; the host tests build an image from busybox-static with umoci,
/// serve it from a real registry (TLS certificates by openssl, htpasswd and
/// registry tokens by python3) and copy it with skopeo; the benchmark
/// compares with crun.
pub const RUNTIME_PACKAGES: &[&str] = &[
    "libseccomp-dev",
    "docker-registry",
    "umoci",
    "skopeo",
    "busybox-static",
    "crun",
    "openssl",
    "python3",
];

/// Needed by the QEMU tier (QEMU itself comes from backports, see
/// [`BACKPORTS_PACKAGES`]).
pub const QEMU_TEST_PACKAGES: &[&str] = &["ovmf", "mtools"];

/// Needed by the QEMU tier's cluster test besides QEMU: it serves a
/// busybox-static image built with umoci from a registry on the host side
/// (`qemu_tests::registry`).
pub const QEMU_REGISTRY_PACKAGES: &[&str] =
    &["docker-registry", "umoci", "skopeo", "busybox-static"];

/// Needed by `cargo xtask image` (mmdebstrap, erofs, dm-verity, the ESP
/// and the GPT disk, the UKI stub and systemd-boot; `qemu-img` comes with
/// the backports QEMU).
pub const IMAGE_HOST_PACKAGES: &[&str] = &[
    "mmdebstrap",
    "erofs-utils",
    "cryptsetup-bin",
    "dosfstools",
    "mtools",
    "fdisk",
    "binutils",
    "e2fsprogs",
    "systemd-boot-efi",
];

/// Installed from bookworm-backports.
pub const BACKPORTS_PACKAGES: &[&str] = &["qemu-system-x86", "qemu-utils", "seabios"];

const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/strata-backports.sources";

/// Whether a Debian package is installed.
pub fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Makes sure `packages` (and `backports` from bookworm-backports) are
/// installed: installs the missing ones when running as root on Debian and
/// says what it installed, or fails with the exact command to run.
pub fn ensure(what: &str, packages: &[&str], backports: &[&str]) -> anyhow::Result<()> {
    let missing: BTreeSet<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    let missing_bp: BTreeSet<&str> = backports
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() && missing_bp.is_empty() {
        return Ok(());
    }
    let list = |s: &BTreeSet<&str>| s.iter().copied().collect::<Vec<_>>().join(" ");
    let debian = Path::new("/etc/debian_version").exists() && sh::have("apt-get");
    if !sh::is_root() || !debian {
        let mut lines = Vec::new();
        if !missing_bp.is_empty() {
            lines.push(format!(
                "add a bookworm-backports apt source, then: apt-get install -t bookworm-backports {}",
                list(&missing_bp)
            ));
        }
        if !missing.is_empty() {
            lines.push(format!("apt-get install {}", list(&missing)));
        }
        bail!(
            "{what} needs host packages that are missing; run as root on Debian bookworm to have them installed, or:\n  {}",
            lines.join("\n  ")
        );
    }
    eprintln!(
        "xtask: {what}: installing {}",
        list(&missing.union(&missing_bp).copied().collect())
    );
    if !missing_bp.is_empty() {
        add_backports()?;
    }
    apt(&["update", "-q"])?;
    if !missing_bp.is_empty() {
        let mut args = vec![
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
        ];
        args.extend(missing_bp.iter().copied());
        apt(&args)?;
    }
    if !missing.is_empty() {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(missing.iter().copied());
        apt(&args)?;
    }
    eprintln!(
        "xtask: {what}: installed {}",
        list(&missing.union(&missing_bp).copied().collect())
    );
    Ok(())
}

fn apt(args: &[&str]) -> anyhow::Result<()> {
    sh::run(
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Adds bookworm-backports on the mirror the machine's apt sources use.
fn add_backports() -> anyhow::Result<()> {
    if Path::new(BACKPORTS_FILE).exists() {
        return Ok(());
    }
    let mirror = debian_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    let text = format!(
        "Types: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    std::fs::write(BACKPORTS_FILE, text)
        .with_context(|| format!("cannot write {BACKPORTS_FILE}"))?;
    eprintln!("xtask: added {BACKPORTS_FILE} (bookworm-backports on {mirror})");
    Ok(())
}

/// The Debian archive mirror named by the machine's apt sources.
pub fn debian_mirror() -> Option<String> {
    let mut texts: Vec<String> = std::fs::read_to_string("/etc/apt/sources.list")
        .ok()
        .into_iter()
        .collect();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.to_string_lossy().contains("strata-backports") {
                continue;
            }
            if p.extension().is_some_and(|e| e == "sources" || e == "list") {
                texts.extend(std::fs::read_to_string(&p).ok());
            }
        }
    }
    texts.iter().find_map(|t| mirror_in(t))
}

/// Finds the main Debian archive URL in a sources.list or deb822 text.
fn mirror_in(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let url = if let Some(rest) = l.strip_prefix("URIs:") {
                rest.split_whitespace().next()?
            } else if l.starts_with("deb ") {
                l.split_whitespace().find(|w| w.starts_with("http"))?
            } else {
                return None;
            };
            (url.trim_end_matches('/').ends_with("/debian"))
                .then(|| url.trim_end_matches('/').to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::mirror_in;

    #[test]
    fn finds_the_mirror() {
        let deb822 = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let list = "deb http://security.debian.org/debian-security bookworm-security main\ndeb [arch=amd64] http://ftp.de.debian.org/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(list).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
        assert_eq!(
            mirror_in("deb https://packages.cloud.google.com/apt cloud-sdk main\n"),
            None
        );
    }
}
