//! The host tools an image build runs, and the Debian packages they come from.

use std::path::Path;

use anyhow::bail;

use crate::{deps, sh};

/// A program (or file) and the Debian package that provides it.
const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.erofs", "erofs-utils"),
    ("veritysetup", "cryptsetup-bin"),
    ("mkfs.vfat", "dosfstools"),
    ("mmd", "mtools"),
    ("mcopy", "mtools"),
    ("sfdisk", "fdisk"),
    ("objcopy", "binutils"),
    ("qemu-img", "qemu-utils"),
    ("mkfs.ext4", "e2fsprogs"),
    ("debugfs", "e2fsprogs"),
    ("sha256sum", "coreutils"),
    ("dpkg-query", "dpkg"),
    (
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        "systemd-boot-efi",
    ),
    (
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "systemd-boot-efi",
    ),
];

/// The missing tools and their packages.
pub fn missing() -> Vec<(&'static str, &'static str)> {
    TOOLS
        .iter()
        .copied()
        .filter(|(tool, _)| {
            if tool.starts_with('/') {
                !Path::new(tool).exists()
            } else {
                !sh::have(tool)
            }
        })
        .collect()
}

/// Installs the packages of missing tools (as root on Debian) or fails with
/// the `apt-get install` line to run.
pub fn ensure() -> anyhow::Result<()> {
    let missing = missing();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    packages.sort_unstable();
    packages.dedup();
    let names: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
    eprintln!("xtask: image: missing host tools: {}", names.join(", "));
    let backports: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| deps::BACKPORTS_PACKAGES.contains(p))
        .collect();
    packages.retain(|p| !backports.contains(p));
    deps::ensure("cargo xtask image", &packages, &backports)?;
    let still = self::missing();
    if !still.is_empty() {
        let names: Vec<&str> = still.iter().map(|(t, _)| *t).collect();
        bail!(
            "host tools still missing after installing their packages: {}",
            names.join(", ")
        );
    }
    Ok(())
}
