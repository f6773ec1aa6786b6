//! What a test tier or a benchmark leaves behind on the host: processes,
//! mounts, network namespaces, interfaces, cgroups, nftables tables and
//! loop devices. `cargo xtask test` and `cargo xtask bench` take a
//! [`Snapshot`] before and after each tier or bench and fail when something
//! new is still there.
//!
//! A process counts when it was started under the tier (it carries the
//! [`MARK`] variable in its environment, which every child of the xtask
//! inherits) or when it runs under this run's parent cgroup
//! ([`host_prefix`]: task inits, whose environment is their image's). Everything else is compared
//! by name: what exists after and did not before.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The environment variable that marks the processes a tier or bench starts.
pub const MARK: &str = "STRATA_XTASK_RUN";

/// The value of [`MARK`] for this run: the outermost xtask's (a nested
/// `xtask image` of the QEMU tier keeps its caller's, so that the caller
/// sees what the image build left running too).
pub fn mark_value() -> String {
    std::env::var(MARK).unwrap_or_else(|_| format!("xtask-{}", std::process::id()))
}

/// What is on the host at one moment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Snapshot {
    processes: BTreeSet<String>,
    mounts: BTreeSet<String>,
    netns: BTreeSet<String>,
    links: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    nft_tables: BTreeSet<String>,
    loops: BTreeSet<String>,
}

impl Snapshot {
    /// Reads the host's state now.
    pub fn take() -> Snapshot {
        Snapshot {
            processes: processes(&mark_value()),
            mounts: mounts(),
            netns: names(Path::new("/run/netns")),
            links: names(Path::new("/sys/class/net")),
            cgroups: cgroups(),
            nft_tables: nft_tables(),
            loops: loops(),
        }
    }

    /// This snapshot without the mount points under `dir`: where a tier
    /// running beside the others mounts and unmounts for a while.
    pub fn without_mounts_under(mut self, dir: &Path) -> Snapshot {
        self.mounts.retain(|m| !Path::new(m).starts_with(dir));
        self
    }

    /// What this snapshot holds that `before` did not, as a report, or None.
    pub fn left_behind_since(&self, before: &Snapshot) -> Option<String> {
        let mut out = Vec::new();
        let mut diff = |what: &str, after: &BTreeSet<String>, before: &BTreeSet<String>| {
            let new: Vec<&String> = after.difference(before).collect();
            if !new.is_empty() {
                let shown: Vec<&str> = new.iter().take(12).map(|s| s.as_str()).collect();
                let more = if new.len() > 12 {
                    format!(" and {} more", new.len() - 12)
                } else {
                    String::new()
                };
                out.push(format!("  {what}: {}{more}", shown.join(", ")));
            }
        };
        diff("processes", &self.processes, &before.processes);
        diff("mounts", &self.mounts, &before.mounts);
        diff("network namespaces", &self.netns, &before.netns);
        diff("interfaces", &self.links, &before.links);
        diff("cgroups", &self.cgroups, &before.cgroups);
        diff("nftables tables", &self.nft_tables, &before.nft_tables);
        diff("loop devices", &self.loops, &before.loops);
        (!out.is_empty()).then(|| out.join("\n"))
    }
}

/// Processes carrying `mark` in their environment or running in a Strata
/// cgroup, as `pid comm`. The xtask itself does not carry the mark.
fn processes(mark: &str) -> BTreeSet<String> {
    let needle = format!("{MARK}={mark}");
    let cgroup = format!("/{}/", host_prefix());
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if pid == std::process::id().to_string() {
            continue;
        }
        let proc = entry.path();
        let marked = std::fs::read(proc.join("environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()));
        let in_strata_cgroup = std::fs::read_to_string(proc.join("cgroup"))
            .is_ok_and(|c| c.lines().any(|l| l.contains(&cgroup)));
        if marked || in_strata_cgroup {
            let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
            out.insert(format!("{pid} {}", comm.trim()));
        }
    }
    out
}

/// Mount points of this mount namespace, but `/run/netns`: iproute2 (and
/// the agent, which does what `ip netns add` does) makes that directory a
/// mount point of its own the first time a named network namespace is made,
/// and it stays for the life of the host, shared by every user of `ip netns`.
fn mounts() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(String::from))
        .filter(|m| m != "/run/netns" && m != "/var/run/netns")
        .collect()
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The host prefix (`STRATA_HOST_PREFIX`) of the agents a tier or bench
/// starts: unique to this xtask process, so that its tasks' cgroups and
/// network namespaces are its own.
/// (`STRATA_HOST_PREFIX` when the caller set one, which the xtask's
/// children inherit.)
pub fn host_prefix() -> String {
    std::env::var(HOST_PREFIX).unwrap_or_else(|_| format!("strata-t{}", std::process::id()))
}

/// Checks a host prefix the caller set: the agent's rule (`strata-` and 1
/// to 12 lowercase letters or digits), and never a node's own `strata`,
/// since the xtask kills what runs under the prefix and removes its
/// cgroups.
pub fn check_host_prefix(prefix: &str) -> anyhow::Result<()> {
    let ok = prefix.strip_prefix("strata-").is_some_and(|rest| {
        (1..=12).contains(&rest.len())
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    });
    if !ok {
        anyhow::bail!(
            "{HOST_PREFIX}={prefix:?}: the xtask needs a run prefix of its own, `strata-` and 1-12 lowercase letters or digits (unset it to get `strata-t<pid>`)"
        );
    }
    Ok(())
}

/// The agent's environment variable for its host prefix
/// (`agent::runtime::names::ENV`; the xtask does not link the agent).
pub const HOST_PREFIX: &str = "STRATA_HOST_PREFIX";

/// Removes this run's parent cgroup in every hierarchy once its agents are
/// gone: an agent keeps its parent cgroup (on a node it lives as long as
/// the node), and the run made it. It fails only when the cgroup still
/// holds something, which the residue check then reports.
pub fn remove_parent_cgroups(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<std::path::PathBuf> =
        entries.flatten().map(|e| e.path().join(prefix)).collect();
    dirs.push(Path::new("/sys/fs/cgroup").join(prefix));
    for dir in dirs {
        if dir.is_dir() {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// Strata's cgroup directories under `/sys/fs/cgroup`, a few levels deep
/// (the tests' and tasks' cgroups are at most four levels down): those whose
/// path names Strata (the agents' parents `strata*`, crun's `strata-crun`).
/// Others belong to the machine (the sandbox or CI service running the
/// xtask makes and removes its own).
fn cgroups() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![(std::path::PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let path = e.path();
                let text = path.display().to_string();
                if text.contains("strata") {
                    out.insert(text);
                }
                if depth < 5 {
                    stack.push((path, depth + 1));
                }
            }
        }
    }
    out
}

fn nft_tables() -> BTreeSet<String> {
    Command::new("nft")
        .args(["list", "tables"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Attached loop devices and their backing files.
fn loops() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in names(Path::new("/sys/block")) {
        if let Ok(file) = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file")) {
            out.insert(format!("{name} ({})", file.trim()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_only_what_is_new() {
        let mut before = Snapshot::default();
        before.links.insert("lo".into());
        before.mounts.insert("/".into());
        let mut after = before.clone();
        assert_eq!(after.left_behind_since(&before), None);
        after.links.insert("strata0".into());
        after.netns.insert("strata-t1".into());
        // Something gone since is not residue.
        after.mounts.clear();
        assert_eq!(
            after.left_behind_since(&before).as_deref(),
            Some("  network namespaces: strata-t1\n  interfaces: strata0")
        );
    }
}
