//! Node health: the facts of the running node (read-only root, dm-verity,
//! the booted slot), the health file `/run/strata/health` the agent writes,
//! and `strata health --wait`, which gates `boot-complete.target` on it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// An A/B root slot (the root partition's GPT label `root-a`, `root-b`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
    /// Not booted from a slot (outside an image), or a label this release
    /// does not know.
    #[serde(other)]
    None,
}

impl Slot {
    /// The slot named by a partition label's suffix (`a`, `b`).
    pub fn from_label(suffix: &str) -> Slot {
        match suffix {
            "a" => Slot::A,
            "b" => Slot::B,
            _ => Slot::None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::A => "a",
            Slot::B => "b",
            Slot::None => "none",
        })
    }
}

/// What the agent found out about the node it runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// `/` is mounted read-only and a write to it is refused.
    pub root_read_only: bool,
    /// The root device is a dm-verity target.
    pub root_verity: bool,
    /// The slot the root came from, [`Slot::None`] outside an image.
    pub slot: Slot,
}

/// Why a node is not healthy. Written to the health file and the console
/// as text; read back, a problem is [`Problem::Other`]: the agent decides
/// from the variants it set, never from the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum Problem {
    /// The boot counter could not be kept.
    BootCounter(String),
    /// The node is joining its cluster.
    Joining,
    /// The node's cluster membership is not Ready: its phase and message.
    Cluster { phase: String, message: String },
    /// The cluster membership ended, and why.
    Ended(String),
    /// The node's firewall could not be applied at boot: an image whose
    /// firewall does not load is not blessed.
    Firewall(String),
    /// A problem read back from a health file.
    Other(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::BootCounter(m) | Problem::Ended(m) | Problem::Other(m) => f.write_str(m),
            Problem::Joining => f.write_str("joining the cluster"),
            Problem::Cluster { phase, message } => write!(f, "cluster: {phase}: {message}"),
            Problem::Firewall(m) => write!(f, "firewall: {m}"),
        }
    }
}

impl From<Problem> for String {
    fn from(p: Problem) -> String {
        p.to_string()
    }
}

impl From<String> for Problem {
    fn from(s: String) -> Problem {
        Problem::Other(s)
    }
}

/// The health file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub healthy: bool,
    pub role: configs::Role,
    pub boots: u64,
    pub facts: Facts,
    /// Where the user-data came from, or why there is none.
    pub user_data: String,
    /// Why the node is unhealthy (empty when healthy).
    pub problems: Vec<Problem>,
    /// The boot times of the first Ready (absent before it, and in health
    /// files of older agents).
    #[serde(default)]
    pub boot: Option<crate::boot_times::BootTimes>,
}

impl Health {
    /// The one line printed on the serial console when the agent is ready
    /// (with `ready_ms=` and `multi_user_ms=` once the boot times are known).
    pub fn marker(&self) -> String {
        let mut line = format!(
            "STRATA-READY role={} slot={} root={} verity={} boots={} user-data={} healthy={}",
            self.role,
            self.facts.slot,
            if self.facts.root_read_only {
                "ro"
            } else {
                "rw"
            },
            if self.facts.root_verity { "yes" } else { "no" },
            self.boots,
            self.user_data_kind(),
            if self.healthy { "yes" } else { "no" },
        );
        if let Some(boot) = &self.boot {
            line.push(' ');
            line.push_str(&boot.marker_fields());
        }
        line
    }

    /// Where the user-data came from, in one word: `fw_cfg`, `label`,
    /// `url`, `ec2-imds`, `gce-metadata`, `state` (kept from an earlier
    /// boot), `file`, `none` or `error`.
    pub fn user_data_kind(&self) -> &str {
        self.user_data
            .split([':', ' '])
            .next()
            .filter(|k| !k.is_empty())
            .unwrap_or("none")
    }
}

/// Where the system's facts are read from (tests point them elsewhere).
#[derive(Debug, Clone)]
pub struct Sources {
    pub mountinfo: PathBuf,
    pub sys_dev_block: PathBuf,
    pub sys_class_block: PathBuf,
    /// The directory whose writability is probed (`/`).
    pub root: PathBuf,
}

impl Default for Sources {
    fn default() -> Sources {
        Sources {
            mountinfo: "/proc/self/mountinfo".into(),
            sys_dev_block: "/sys/dev/block".into(),
            sys_class_block: "/sys/class/block".into(),
            root: "/".into(),
        }
    }
}

/// The root mount from a mountinfo text: (`major:minor`, read-only).
pub fn root_mount(mountinfo: &str) -> Option<(String, bool)> {
    // Fields: id parent major:minor root mountpoint options ... ; the last
    // line for `/` is the one in effect.
    mountinfo.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 5 && f[4] == "/").then(|| (f[2].to_string(), f[5].split(',').any(|o| o == "ro")))
    })
}

/// Reads the facts of this node.
pub fn facts(src: &Sources) -> Facts {
    let mountinfo = std::fs::read_to_string(&src.mountinfo).unwrap_or_default();
    let (dev, mounted_ro) = root_mount(&mountinfo).unwrap_or_default();
    let probe = src
        .root
        .join(format!(".strata-write-probe-{}", std::process::id()));
    let write_refused = match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            false
        }
        Err(_) => true,
    };
    let block = src.sys_dev_block.join(&dev);
    let dm_uuid = std::fs::read_to_string(block.join("dm/uuid")).unwrap_or_default();
    let root_verity = dm_uuid.starts_with("CRYPT-VERITY-");
    let slot = slot_of(src, &dev);
    Facts {
        root_read_only: mounted_ro && write_refused,
        root_verity,
        slot,
    }
}

/// The slot the root came from (without the other facts' write probe).
pub fn slot(src: &Sources) -> Slot {
    let mountinfo = std::fs::read_to_string(&src.mountinfo).unwrap_or_default();
    let (dev, _) = root_mount(&mountinfo).unwrap_or_default();
    slot_of(src, &dev)
}

/// The slot in the GPT label of the root partition `dev` (`major:minor`):
/// the device itself, or the first slave of a device-mapper root that has
/// one.
fn slot_of(src: &Sources, dev: &str) -> Slot {
    let block = src.sys_dev_block.join(dev);
    let mut names: Vec<String> = std::fs::read_dir(block.join("slaves"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut uevents = vec![block.join("uevent")];
    uevents.extend(
        names
            .iter()
            .map(|n| src.sys_class_block.join(n).join("uevent")),
    );
    uevents
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .find_map(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("PARTNAME=root-").map(Slot::from_label))
        })
        .unwrap_or(Slot::None)
}

/// Writes the health file atomically.
pub fn write(run_dir: &Path, health: &Health) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    let path = run_dir.join("health");
    let mut text = serde_json::to_string_pretty(health).context("cannot serialize the health")?;
    text.push('\n');
    crate::state::write_atomic(&path, text.as_bytes(), None)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Reads the health file, if there is one.
pub fn read(run_dir: &Path) -> anyhow::Result<Option<Health>> {
    let path = run_dir.join("health");
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{}: not a strata health file", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// `strata health`: prints the health; with `wait`, waits up to `timeout`
/// for the agent to write it. Fails unless the node is healthy.
pub fn check(run_dir: &Path, wait: bool, timeout: Duration) -> anyhow::Result<Health> {
    let start = Instant::now();
    loop {
        match read(run_dir)? {
            Some(h) if h.healthy => return Ok(h),
            // The agent reports unhealthy while it joins: keep waiting.
            Some(_) | None if wait && start.elapsed() < timeout => {
                std::thread::sleep(Duration::from_millis(250))
            }
            Some(h) => bail!(
                "node is unhealthy: {}",
                h.problems
                    .iter()
                    .map(Problem::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            None => bail!(
                "no health reported in {} after {:.0}s: is `strata agent` running?",
                run_dir.join("health").display(),
                start.elapsed().as_secs_f64()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_root_mount_counts() {
        let info = "22 1 253:0 / / ro,relatime shared:1 - erofs /dev/mapper/root ro\n\
                    30 22 8:6 / /var rw,relatime shared:2 - ext4 /dev/vda6 rw\n";
        assert_eq!(root_mount(info), Some(("253:0".to_string(), true)));
        let over = format!("{info}40 22 0:40 / / rw,relatime - overlay overlay rw\n");
        assert_eq!(root_mount(&over), Some(("0:40".to_string(), false)));
        assert_eq!(root_mount(""), None);
    }

    #[test]
    fn facts_of_a_verity_root_from_slot_b() {
        let dir = std::env::temp_dir().join(format!("strata-facts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dm = dir.join("dev/253:0");
        std::fs::create_dir_all(dm.join("dm")).unwrap();
        std::fs::create_dir_all(dm.join("slaves/vda4")).unwrap();
        std::fs::create_dir_all(dm.join("slaves/vda5")).unwrap();
        std::fs::write(dm.join("dm/uuid"), "CRYPT-VERITY-0123-root\n").unwrap();
        std::fs::create_dir_all(dir.join("class/vda4")).unwrap();
        std::fs::create_dir_all(dir.join("class/vda5")).unwrap();
        std::fs::write(
            dir.join("class/vda4/uevent"),
            "MAJOR=254\nDEVNAME=vda4\nPARTNAME=root-b\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("class/vda5/uevent"),
            "DEVNAME=vda5\nPARTNAME=verity-b\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("mountinfo"),
            "22 1 253:0 / / ro,relatime - erofs /dev/mapper/root ro\n",
        )
        .unwrap();
        let src = Sources {
            mountinfo: dir.join("mountinfo"),
            sys_dev_block: dir.join("dev"),
            sys_class_block: dir.join("class"),
            root: dir.join("no-such-dir"),
        };
        let f = facts(&src);
        assert_eq!(
            f,
            Facts {
                root_read_only: true,
                root_verity: true,
                slot: Slot::B
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn marker_and_wait() {
        let dir = std::env::temp_dir().join(format!("strata-health-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let e = check(&dir, false, Duration::ZERO).unwrap_err();
        assert!(e.to_string().starts_with("no health reported in"), "{e}");
        let mut h = Health {
            healthy: true,
            role: configs::Role::Master,
            boots: 2,
            facts: Facts {
                root_read_only: true,
                root_verity: true,
                slot: Slot::A,
            },
            user_data: "none".into(),
            problems: vec![],
            boot: None,
        };
        expect_test::expect![
            "STRATA-READY role=master slot=a root=ro verity=yes boots=2 user-data=none healthy=yes"
        ]
        .assert_eq(&h.marker());
        h.boot = Some(crate::boot_times::BootTimes {
            ready_ms: 24_310,
            multi_user: crate::boot_times::Milestone::Pending,
            split: None,
        });
        expect_test::expect![
            "STRATA-READY role=master slot=a root=ro verity=yes boots=2 user-data=none healthy=yes ready_ms=24310 multi_user_ms=pending"
        ]
        .assert_eq(&h.marker());
        // A health file written before the boot times existed still reads.
        let old = serde_json::to_value(&h).expect("serializes");
        let mut old = old.as_object().expect("an object").clone();
        old.remove("boot");
        let parsed: Health = serde_json::from_value(old.into()).expect("parses");
        assert_eq!(parsed.boot, None);
        write(&dir, &h).unwrap();
        assert_eq!(check(&dir, true, Duration::from_secs(1)).unwrap(), h);
        for (source, kind) in [
            ("fw_cfg:opt/strata/user-data (node n1)", "fw_cfg"),
            ("state:/var/lib/strata/user-data.toml (node n1)", "state"),
            ("error: invalid user-data: x", "error"),
            ("", "none"),
        ] {
            h.user_data = source.into();
            assert_eq!(h.user_data_kind(), kind);
        }
        h.healthy = false;
        h.problems = vec![Problem::BootCounter("cannot write the boot counter".into())];
        write(&dir, &h).unwrap();
        expect_test::expect!["node is unhealthy: cannot write the boot counter"].assert_eq(
            &check(&dir, true, Duration::from_secs(1))
                .unwrap_err()
                .to_string(),
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
