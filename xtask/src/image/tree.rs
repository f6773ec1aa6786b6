//! The Debian root tree from mmdebstrap (minbase, bookworm with its
//! security and updates suites), cached under `target/image-cache/` by a
//! hash of its package list and sources: roles with the same packages share
//! one tree, and a rebuild that changes only the agent reuses it. Downloaded
//! `.deb` files are kept in `target/image-cache/debs` for the next tree.
//! Every use stamps a tree (`tree-<key>.used`); trees no build has used for
//! [`KEEP_UNUSED`] are removed by the next image build.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};

use super::Kernel;
use crate::{deps, sh};

/// Packages of every image, before the kernel and the role's packages.
pub const BASE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "iproute2",
    "dracut",
    "systemd-boot",
    "cryptsetup-bin",
    "dmsetup",
    "e2fsprogs",
    "fdisk",
    "nftables",
    // Trust roots for HTTPS registries (the agent pulls images).
    "ca-certificates",
    // The agent links libelf and zlib dynamically: libbpf (libcontainer's
    // cgroupsv2_devices, a task's device rules on cgroup v2) needs them.
    // Other packages pull both in today; named so that it stays so.
    "libelf1",
    "zlib1g",
];

/// Bump when the way a tree is made changes, so old caches are not reused.
const RECIPE: &str = "strata-tree-1";

/// How long a cached tree that no build uses is kept (an old package list,
/// a changed recipe): two weeks.
pub const KEEP_UNUSED: Duration = Duration::from_secs(14 * 24 * 3600);

/// A cached tree.
#[derive(Debug, Clone)]
pub struct Tree {
    pub dir: PathBuf,
    /// Every installed package, name to version.
    pub packages: BTreeMap<String, String>,
    /// Kernel release, e.g. `6.1.0-37-cloud-amd64`.
    pub kernel_release: String,
    pub kernel_package: String,
}

/// The full package list of a role's tree.
pub fn packages(kernel: Kernel, role_packages: &[String]) -> Vec<String> {
    let mut list: Vec<String> = BASE_PACKAGES.iter().map(|s| s.to_string()).collect();
    list.push(kernel.package().to_string());
    list.extend(role_packages.iter().cloned());
    list.sort();
    list.dedup();
    list
}

/// The apt sources of the tree: bookworm, bookworm-updates and
/// bookworm-security, on the mirrors the host's apt sources use.
pub fn sources() -> Vec<String> {
    let mirror =
        deps::debian_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    let security = security_mirror(&mirror);
    vec![
        format!("deb {mirror} bookworm main"),
        format!("deb {mirror} bookworm-updates main"),
        format!("deb {security} bookworm-security main"),
    ]
}

/// `…/debian` becomes `…/debian-security` (deb.debian.org, snapshot.debian.org
/// and most mirrors carry both side by side).
fn security_mirror(mirror: &str) -> String {
    format!("{mirror}-security")
}

/// Makes sure the tree for `packages` is in the cache and returns it.
pub fn ensure(root: &Path, packages: &[String]) -> anyhow::Result<Tree> {
    let cache = root.join("target/image-cache");
    std::fs::create_dir_all(cache.join("debs"))
        .with_context(|| format!("cannot create {}", cache.display()))?;
    let sources = sources();
    let key_text = format!(
        "{RECIPE}\n{}\n{}\n{}\n",
        packages.join(","),
        sources.join("\n"),
        super::stage::DRACUT_CONF
    );
    let key = &image::sha256_hex(key_text.as_bytes())[..16];
    let dir = cache.join(format!("tree-{key}"));
    if !dir.join("usr/bin/systemctl").exists() {
        make(&cache, &dir, packages, &sources)?;
    } else {
        eprintln!("xtask: using the cached tree {}", dir.display());
    }
    let stamp = dir.with_extension("used");
    std::fs::write(&stamp, b"").with_context(|| format!("cannot write {}", stamp.display()))?;
    let packages = installed(&dir)?;
    let (kernel_release, kernel_package) = kernel(&dir, &packages)?;
    Ok(Tree {
        dir,
        packages,
        kernel_release,
        kernel_package,
    })
}

/// Removes the cached trees (and their build leftovers) that are not in
/// `in_use` (tree directory names) and that no build has used for `keep`.
/// Returns what it removed.
pub fn prune(
    root: &Path,
    in_use: &BTreeSet<String>,
    keep: Duration,
) -> anyhow::Result<Vec<String>> {
    let cache = root.join("target/image-cache");
    let Ok(entries) = std::fs::read_dir(&cache) else {
        return Ok(vec![]);
    };
    let mut trees = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("tree-") || name.contains('.') || !e.path().is_dir() {
            continue;
        }
        // The stamp of the last use, or the tree's own time if it has none.
        let used = std::fs::metadata(cache.join(format!("{name}.used")))
            .or_else(|_| e.metadata())
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        trees.push((name, used));
    }
    let gone = stale(&trees, in_use, SystemTime::now(), keep);
    for name in &gone {
        for suffix in ["", ".tmp", ".dracut", ".debs"] {
            let path = cache.join(format!("{name}{suffix}"));
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        let _ = std::fs::remove_file(cache.join(format!("{name}.used")));
    }
    Ok(gone)
}

/// The trees of `trees` (name, last use) to remove: not in use, and unused
/// for longer than `keep` at `now`. Pure.
fn stale(
    trees: &[(String, SystemTime)],
    in_use: &BTreeSet<String>,
    now: SystemTime,
    keep: Duration,
) -> Vec<String> {
    trees
        .iter()
        .filter(|(name, used)| {
            !in_use.contains(name) && now.duration_since(*used).is_ok_and(|idle| idle > keep)
        })
        .map(|(name, _)| name.clone())
        .collect()
}

fn make(cache: &Path, dir: &Path, packages: &[String], sources: &[String]) -> anyhow::Result<()> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove {}", tmp.display()))?;
    }
    // Per tree, as trees can be made at the same time.
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let conf_dir = cache.join(format!("{name}.dracut"));
    std::fs::create_dir_all(&conf_dir)
        .with_context(|| format!("cannot create {}", conf_dir.display()))?;
    let conf = conf_dir.join("strata.conf");
    std::fs::write(&conf, super::stage::DRACUT_CONF)
        .with_context(|| format!("cannot write {}", conf.display()))?;
    let debs = cache.join("debs");
    let debs_out = cache.join(format!("{name}.debs"));
    if debs_out.exists() {
        std::fs::remove_dir_all(&debs_out)
            .with_context(|| format!("cannot remove {}", debs_out.display()))?;
    }
    std::fs::create_dir_all(&debs_out)
        .with_context(|| format!("cannot create {}", debs_out.display()))?;
    let start = Instant::now();
    let mut cmd = Command::new("mmdebstrap");
    cmd.args([
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        "--skip=essential/unlink",
    ])
    .arg(format!("--include={}", packages.join(",")))
    .args([
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        "--dpkgopt=path-include=/usr/share/locale/locale.alias",
        "--aptopt=APT::Install-Recommends \"false\"",
    ])
    .arg("--setup-hook=mkdir -p \"$1/etc/dracut.conf.d\" \"$1/var/cache/apt/archives\"")
    .arg(format!(
        "--setup-hook=copy-in {} /etc/dracut.conf.d/",
        conf.display()
    ))
    .arg(format!(
        "--setup-hook=sync-in {} /var/cache/apt/archives/",
        debs.display()
    ))
    .arg(format!(
        "--customize-hook=sync-out /var/cache/apt/archives {}",
        debs_out.display()
    ))
    .arg("bookworm")
    .arg(&tmp)
    .args(sources)
    .env("SOURCE_DATE_EPOCH", "0");
    eprintln!("$ {}", sh::display(&cmd));
    let out = cmd.output().context("cannot start mmdebstrap")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err
            .lines()
            .rev()
            .take(25)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let hint = if err.contains("Failed to fetch")
            || err.contains("Unable to locate package")
            || err.contains("404")
        {
            format!(
                "a package could not be downloaded or found: check that the mirrors are reachable ({}) and that every package in configs/roles/*.toml exists in bookworm",
                sources.join("; ")
            )
        } else {
            "mmdebstrap could not make the tree".to_string()
        };
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "{hint} ({} after {:.0}s):\n{}",
            out.status,
            start.elapsed().as_secs_f64(),
            tail.join("\n")
        );
    }
    std::fs::rename(&tmp, dir)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), dir.display()))?;
    // Keep the downloaded packages for the next tree.
    for entry in std::fs::read_dir(&debs_out)
        .with_context(|| format!("cannot list {}", debs_out.display()))?
    {
        let path = entry?.path();
        if let Some(file) = path.file_name() {
            std::fs::rename(&path, debs.join(file))
                .with_context(|| format!("cannot move {} to {}", path.display(), debs.display()))?;
        }
    }
    let _ = std::fs::remove_dir_all(&debs_out);
    let _ = std::fs::remove_dir_all(&conf_dir);
    eprintln!(
        "xtask: tree made in {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

/// The packages installed in `dir`.
fn installed(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = sh::output(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", dir.join("var/lib/dpkg").display()))
            .args(["-W", "-f=${Package}\t${Version}\t${db:Status-Abbrev}\n"]),
    )?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            let (name, version, status) = (f.next()?, f.next()?, f.next()?);
            status
                .starts_with("ii")
                .then(|| (name.to_string(), version.to_string()))
        })
        .collect())
}

/// The kernel release in `dir/boot` and its package.
fn kernel(dir: &Path, packages: &BTreeMap<String, String>) -> anyhow::Result<(String, String)> {
    let mut releases: Vec<String> = std::fs::read_dir(dir.join("boot"))
        .with_context(|| format!("cannot list {}/boot", dir.display()))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_string_lossy()
                .strip_prefix("vmlinuz-")
                .map(str::to_string)
        })
        .collect();
    releases.sort();
    let [release] = releases.as_slice() else {
        bail!(
            "expected one kernel in {}/boot, found {:?}",
            dir.display(),
            releases
        );
    };
    if !dir.join(format!("boot/initrd.img-{release}")).exists() {
        bail!(
            "the tree {} has no initrd for {release}: did dracut fail?",
            dir.display()
        );
    }
    let pkg = format!("linux-image-{release}");
    let version = packages.get(&pkg).cloned().unwrap_or_default();
    Ok((release.clone(), format!("{pkg} {version}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_old_trees_are_stale() {
        let day = Duration::from_secs(24 * 3600);
        let now = SystemTime::UNIX_EPOCH + 100 * day;
        let check = |trees: &[(&str, u32)], in_use: &[&str], expected: &[&str]| {
            let trees: Vec<(String, SystemTime)> = trees
                .iter()
                .map(|(n, days_ago)| (n.to_string(), now - *days_ago * day))
                .collect();
            let in_use = in_use.iter().map(|s| s.to_string()).collect();
            assert_eq!(stale(&trees, &in_use, now, KEEP_UNUSED), expected);
        };
        check(&[], &[], &[]);
        check(&[("tree-a", 1), ("tree-b", 30)], &[], &["tree-b"]);
        // In use by this build: kept however old its stamp.
        check(&[("tree-a", 30), ("tree-b", 30)], &["tree-a"], &["tree-b"]);
        // Exactly two weeks is not longer than two weeks.
        check(&[("tree-a", 14), ("tree-b", 15)], &[], &["tree-b"]);
        // Used just now.
        check(&[("tree-a", 0)], &[], &[]);
    }

    #[test]
    fn role_packages_join_the_base() {
        let p = packages(
            Kernel::Cloud,
            &["etcd-server".to_string(), "dbus".to_string()],
        );
        assert!(p.contains(&"etcd-server".to_string()));
        assert!(p.contains(&"linux-image-cloud-amd64".to_string()));
        assert_eq!(p.iter().filter(|x| *x == "dbus").count(), 1);
        assert!(!packages(Kernel::Generic, &[]).contains(&"linux-image-cloud-amd64".to_string()));
    }

    #[test]
    fn security_sits_next_to_the_mirror() {
        assert_eq!(
            security_mirror("http://deb.debian.org/debian"),
            "http://deb.debian.org/debian-security"
        );
    }
}
