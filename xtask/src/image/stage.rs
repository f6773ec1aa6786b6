//! The image's root tree: a hard-linked copy of the cached Debian tree with
//! the agent, its units, the role file, fstab, the update key and the
//! os-release of the image added. Files of the cache are never written
//! through: every change unlinks the file first.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::sh;

/// dracut configuration of the tree (also part of the tree's cache key).
pub const DRACUT_CONF: &str = include_str!("files/dracut.conf");

/// Units installed into `/usr/lib/systemd/system` and where they are enabled.
const UNITS: &[(&str, &str, Option<&str>)] = &[
    (
        "strata-agent.service",
        include_str!("files/strata-agent.service"),
        Some("multi-user.target.wants"),
    ),
    (
        "strata-health.service",
        include_str!("files/strata-health.service"),
        Some("boot-complete.target.requires"),
    ),
    (
        "strata-grow-state.service",
        include_str!("files/strata-grow-state.service"),
        Some("local-fs.target.wants"),
    ),
    (
        "strata-machine-id.service",
        include_str!("files/strata-machine-id.service"),
        Some("sysinit.target.wants"),
    ),
];

/// The login units masked in the image (links to `/dev/null`).
pub const MASKED_GETTYS: [&str; 5] = [
    "serial-getty@.service",
    "getty@.service",
    "autovt@.service",
    "console-getty.service",
    "getty.target",
];

/// What goes into the tree besides the cache.
pub struct Additions<'a> {
    pub agent: &'a Path,
    pub role_text: &'a str,
    pub public_key: &'a str,
    pub os_release: &'a str,
}

/// Makes `dir` a hard-linked copy of `tree` and adds the Strata files.
pub fn stage(tree: &Path, dir: &Path, add: &Additions<'_>) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    sh::output(Command::new("cp").arg("-al").arg(tree).arg(dir))?;
    let agent =
        std::fs::read(add.agent).with_context(|| format!("cannot read {}", add.agent.display()))?;
    put(dir, "usr/bin/strata", &agent, 0o755)?;
    for (name, text, wanted) in UNITS {
        put(
            dir,
            &format!("usr/lib/systemd/system/{name}"),
            text.as_bytes(),
            0o644,
        )?;
        if let Some(wants) = wanted {
            link(
                dir,
                &format!("etc/systemd/system/{wants}/{name}"),
                &format!("/usr/lib/systemd/system/{name}"),
            )?;
        }
    }
    put(
        dir,
        "usr/lib/strata/grow-state",
        include_bytes!("files/grow-state"),
        0o755,
    )?;
    put(
        dir,
        "usr/lib/strata/machine-id",
        include_bytes!("files/machine-id"),
        0o755,
    )?;
    // systemd-firstboot would prompt on the console at the first boot (the
    // machine-id is empty): the image is configured, never interactive.
    link(
        dir,
        "etc/systemd/system/systemd-firstboot.service",
        "/dev/null",
    )?;
    // No login anywhere: the serial console shows the boot and the agent's
    // status, never a login prompt (systemd-getty-generator would start
    // `serial-getty@ttyS0` for `console=ttyS0`, and Debian enables a getty
    // on tty1). Masking the templates masks every instance.
    for unit in MASKED_GETTYS {
        link(dir, &format!("etc/systemd/system/{unit}"), "/dev/null")?;
    }
    let tty1 = dir.join("etc/systemd/system/getty.target.wants/getty@tty1.service");
    if tty1.symlink_metadata().is_ok() {
        std::fs::remove_file(&tty1).with_context(|| format!("cannot remove {}", tty1.display()))?;
    }
    lock_root(dir)?;
    // systemd-networkd configures the links: the agent writes the node's
    // `.network` from its user-data at runtime (under /run/systemd/network,
    // sorting first); until then, and on nodes without user-data, every
    // ethernet link asks for DHCP (the fallback sorts after `90-*`).
    link(
        dir,
        "etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "/usr/lib/systemd/system/systemd-networkd.service",
    )?;
    link(
        dir,
        "etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
        "/usr/lib/systemd/system/systemd-networkd.socket",
    )?;
    put(
        dir,
        "usr/lib/systemd/network/99-strata-dhcp.network",
        include_bytes!("files/99-strata-dhcp.network"),
        0o644,
    )?;
    // Debian enables etcd.service when etcd-server is installed; on a
    // master the agent renders etcd's configuration first and then starts
    // it over D-Bus, so it must not start by itself with the defaults.
    // Likewise haproxy.service on public agents: the agent runs HAProxy
    // itself, from the cluster's services (`agent::edge`).
    for unit in ["etcd.service", "haproxy.service"] {
        let wants = dir
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        if wants.symlink_metadata().is_ok() {
            std::fs::remove_file(&wants)
                .with_context(|| format!("cannot remove {}", wants.display()))?;
        }
    }
    put(dir, "etc/fstab", include_bytes!("files/fstab"), 0o644)?;
    put(dir, "etc/machine-id", b"", 0o444)?;
    put(dir, "etc/hostname", b"strata\n", 0o644)?;
    put(dir, "etc/strata/role.toml", add.role_text.as_bytes(), 0o644)?;
    put(
        dir,
        "usr/share/strata/update.pub",
        add.public_key.as_bytes(),
        0o644,
    )?;
    put(dir, "usr/lib/os-release", add.os_release.as_bytes(), 0o644)?;
    // The kernel and initrd are in the UKI, not in the root.
    for entry in std::fs::read_dir(dir.join("boot"))
        .with_context(|| format!("cannot list {}/boot", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        }
        .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

/// The image's os-release: Debian's plus the image id and version.
pub fn os_release(tree: &Path, version: &str) -> anyhow::Result<String> {
    let path = tree.join("usr/lib/os-release");
    let base = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mut s: String = base
        .lines()
        .filter(|l| !l.starts_with("IMAGE_ID=") && !l.starts_with("IMAGE_VERSION="))
        .map(|l| format!("{l}\n"))
        .collect();
    s.push_str(&format!("IMAGE_ID=strata\nIMAGE_VERSION={version}\n"));
    Ok(s)
}

/// Makes sure root's password is locked in the staged `etc/shadow`
/// (Debian's tree has `*`): a root password in an image would be the same
/// on every node. Rewrites the file, unlinked first, only when it is not.
fn lock_root(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let path = dir.join("etc/shadow");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let Some(locked) = locked_shadow(&text) else {
        return Ok(());
    };
    let meta =
        std::fs::metadata(&path).with_context(|| format!("cannot stat {}", path.display()))?;
    put(dir, "etc/shadow", locked.as_bytes(), meta.mode() & 0o7777)?;
    std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid()))
        .with_context(|| format!("cannot chown {}", path.display()))
}

/// `shadow` with root's password field set to `*` (locked, no password),
/// or `None` when it is locked already (`*`, or `!` before a hash).
fn locked_shadow(shadow: &str) -> Option<String> {
    let mut changed = false;
    let lines: Vec<String> = shadow
        .lines()
        .map(|line| {
            let mut fields: Vec<&str> = line.split(':').collect();
            let open = fields.first() == Some(&"root")
                && fields
                    .get(1)
                    .is_some_and(|p| *p != "*" && !p.starts_with('!'));
            if open {
                fields[1] = "*";
                changed = true;
            }
            fields.join(":")
        })
        .collect();
    changed.then(|| lines.join("\n") + "\n")
}

/// Writes `rel` under `dir` as a new file (unlinking what was there).
fn put(dir: &Path, rel: &str, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Makes `rel` under `dir` a symlink to `target`.
fn link(dir: &Path, rel: &str, target: &str) -> anyhow::Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if path.symlink_metadata().is_ok() {
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    symlink(target, &path).with_context(|| format!("cannot link {} to {target}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_locked() {
        // Debian's tree: locked already, left alone.
        assert_eq!(
            locked_shadow("root:*:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n"),
            None
        );
        assert_eq!(locked_shadow("root:!$y$j9T$abc:19000:0:99999:7:::\n"), None);
        // An empty password or a hash: locked.
        assert_eq!(
            locked_shadow("root::19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n").as_deref(),
            Some("root:*:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n")
        );
        assert_eq!(
            locked_shadow("root:$y$j9T$abc:19000:0:99999:7:::\n").as_deref(),
            Some("root:*:19000:0:99999:7:::\n")
        );
    }
}
