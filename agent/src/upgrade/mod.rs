//! The only slot writer: what the agent sees of its A/B slots and how it
//! installs a verified update bundle into the slot it did not boot. The
//! decisions (may this bundle go on, which slot, which file names) are
//! [`image::slot`]'s; this module reads the facts they need and carries
//! out the plan on the disk, the ESP and the state partition.
//!
//! The order of an install, each step durable before the next:
//!
//! 1. the whole bundle is read and verified (signature, every part's
//!    digest) before anything is written; a refused bundle changes nothing;
//! 2. the slot's old UKIs are deleted, so that no UKI names a root that is
//!    about to change;
//! 3. the slot's record says `writing` (a cut from here on leaves the slot
//!    `empty`, never bootable);
//! 4. root and verity are written into the slot's partitions, the bundle
//!    read a second time with every digest checked again, and the disk
//!    flushed;
//! 5. the slot's PARTUUIDs are set from the new root hash (both copies of
//!    the GPT, [`image::gpt`]);
//! 6. the record says `written`;
//! 7. the new UKI is put under its final name with all its tries
//!    (`strata-b+3.efi`, through a temporary file and a rename);
//! 8. `loader.conf`'s `default` names the slot ([`image::slot::loader_default`]).
//!
//! The reboot is the caller's (systemd, over D-Bus).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use control::upgrade::{ImageStatus, OtherSlot};
use ed25519_dalek::VerifyingKey;
use image::bundle::{self, BundleError};
use image::slot::{
    HostFacts, InstallPlan, InstallRefused, RollbackRefused, Slot, SlotFacts, SlotRecord,
    UpgradeResult, WritePhase,
};
use serde::{Deserialize, Serialize};

use crate::state;

pub mod store;

/// The key update bundles are signed with, baked into every image.
pub const UPDATE_KEY: &str = "/usr/share/strata/update.pub";
/// Where the ESP is mounted on a node (systemd's gpt-auto generator mounts
/// it on the empty `/boot` of the image).
pub const ESP: &str = "/boot";

/// Why an install or a rollback did not happen, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot read the bundle {path}: {source}")]
    OpenBundle { path: PathBuf, source: io::Error },
    #[error("bundle {path} is refused: {source}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    #[error("bundle {path} is refused: {source}")]
    Refused {
        path: PathBuf,
        #[source]
        source: InstallRefused,
    },
    #[error(transparent)]
    Rollback(#[from] RollbackRefused),
    #[error("the bundle's {part} of {size} bytes does not fit partition `{label}` of {room} bytes")]
    TooLarge {
        part: String,
        size: u64,
        label: String,
        room: u64,
    },
    #[error("the partition table of {disk}: {source}")]
    Table {
        disk: PathBuf,
        #[source]
        source: image::gpt::GptError,
    },
    #[error(
        "this node did not boot from a slot (no `root-a` or `root-b` root): it cannot be upgraded"
    )]
    NoSlot,
    #[error("cannot find the node's disk: {0}")]
    NoDisk(String),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "bundle {path} changed while slot {slot} was written ({source}); the slot is left empty and the node boots as before"
    )]
    ChangedWhileWriting {
        path: PathBuf,
        slot: Slot,
        #[source]
        source: BundleError,
    },
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UpgradeError {
    let path = path.to_path_buf();
    move |source| UpgradeError::Io { what, path, source }
}

/// Where a node's slots are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The whole disk (a block device, or a disk image in tests).
    pub disk: PathBuf,
    /// Its logical block size.
    pub sector: u64,
    /// The mounted ESP.
    pub esp: PathBuf,
    /// Where the slot records and the last upgrade are kept (on the
    /// state partition).
    pub records: PathBuf,
}

/// How an install is asked for, and what it tells back while it runs.
pub struct Install<'a> {
    /// Install a bundle older than the running image.
    pub allow_downgrade: bool,
    /// Unix seconds, for the records.
    pub now: u64,
    /// The order carried out, kept in `last-upgrade.json`.
    pub order: Option<&'a str>,
    /// Called once, when every check passed and the records say the slot
    /// is being written (with the order, in `last-upgrade.json`), before
    /// the partitions change: a node cut from then on reports the slot
    /// interrupted, never "nothing changed".
    pub writing: &'a mut dyn FnMut(),
}

/// The upgrade the node carried out last (`last-upgrade.json`): its
/// result is judged at each boot from the slot it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastUpgrade {
    pub slot: Slot,
    pub version: String,
    /// Unix seconds at which it started.
    pub at: u64,
    /// The cluster's order it carried out, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

impl Layout {
    /// The layout of the node the agent runs on: the disk holding the
    /// partition labelled `state`, the ESP at [`ESP`], records under
    /// `state_dir/slots`.
    pub fn discover(state_dir: &Path) -> Result<Layout, UpgradeError> {
        let part = std::fs::canonicalize("/dev/disk/by-partlabel/state")
            .map_err(|e| UpgradeError::NoDisk(format!("/dev/disk/by-partlabel/state: {e}")))?;
        let name = part
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| UpgradeError::NoDisk(format!("{} has no name", part.display())))?;
        let sys = std::fs::canonicalize(Path::new("/sys/class/block").join(name).join(".."))
            .map_err(|e| UpgradeError::NoDisk(format!("/sys/class/block/{name}: {e}")))?;
        let disk_name = sys
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| UpgradeError::NoDisk(format!("{} has no name", sys.display())))?
            .to_string();
        let sector = std::fs::read_to_string(sys.join("queue/logical_block_size"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| {
                UpgradeError::NoDisk(format!("{disk_name} has no logical block size"))
            })?;
        Ok(Layout {
            disk: Path::new("/dev").join(disk_name),
            sector,
            esp: PathBuf::from(ESP),
            records: state_dir.join("slots"),
        })
    }

    fn linux_dir(&self) -> PathBuf {
        self.esp.join("EFI/Linux")
    }

    fn record_path(&self, slot: Slot) -> PathBuf {
        self.records.join(format!("slot-{slot}.json"))
    }

    fn last_path(&self) -> PathBuf {
        self.records.join("last-upgrade.json")
    }

    /// What the node sees of its slots, booted from `booted` and running
    /// `running`.
    pub fn facts(
        &self,
        role: configs::Role,
        running: &str,
        booted: Slot,
    ) -> Result<HostFacts, UpgradeError> {
        let dir = self.linux_dir();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(io_error("list", &dir))?
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        let record = |slot| -> Result<Option<SlotRecord>, UpgradeError> {
            state::read_json_strict(&self.record_path(slot)).map_err(|e| UpgradeError::Io {
                what: "read the slot record",
                path: self.record_path(slot),
                source: io::Error::other(e.to_string()),
            })
        };
        let mut host = HostFacts {
            role,
            running: running.to_string(),
            booted,
            a: SlotFacts {
                ukis: vec![],
                record: record(Slot::A)?,
            },
            b: SlotFacts {
                ukis: vec![],
                record: record(Slot::B)?,
            },
        };
        host.add_ukis(names.iter().map(String::as_str));
        Ok(host)
    }

    /// The result of the last upgrade, judged from `host`; `None` when
    /// the node never upgraded.
    pub fn last_result(&self, host: &HostFacts) -> Option<UpgradeResult> {
        let last = self.last_upgrade()?;
        Some(image::slot::upgrade_result(host, last.slot, &last.version))
    }

    /// The last upgrade this node started, if any.
    pub fn last_upgrade(&self) -> Option<LastUpgrade> {
        state::read_json(&self.last_path())
    }

    /// Installs the bundle at `path` into the slot `host` did not boot;
    /// see the module's steps. `host` must be fresh ([`Layout::facts`]).
    pub fn install(
        &self,
        host: &HostFacts,
        path: &Path,
        key: &VerifyingKey,
        call: Install<'_>,
    ) -> Result<InstallPlan, UpgradeError> {
        let Install {
            allow_downgrade,
            now,
            order,
            writing,
        } = call;
        // 1. Verify everything before writing anything.
        let open = || File::open(path).map_err(io_error("open the bundle", path));
        let manifest = bundle::verify(io::BufReader::new(open()?), key).map_err(|source| {
            UpgradeError::Bundle {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let plan =
            image::slot::plan_install(host, &manifest, allow_downgrade).map_err(|source| {
                UpgradeError::Refused {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        let slot = plan.slot;
        let mut disk = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.disk)
            .map_err(io_error("open the disk", &self.disk))?;
        let table =
            image::gpt::read(&mut disk, self.sector).map_err(|source| UpgradeError::Table {
                disk: self.disk.clone(),
                source,
            })?;
        let mut targets = Vec::new();
        for (part, label) in [
            (bundle::PART_ROOT, slot.root_label()),
            (bundle::PART_VERITY, slot.verity_label()),
        ] {
            let p = table
                .by_label(&label)
                .map_err(|source| UpgradeError::Table {
                    disk: self.disk.clone(),
                    source,
                })?;
            let size = manifest
                .parts
                .iter()
                .find(|d| d.name == part)
                .map(|d| d.size)
                .unwrap_or(0);
            if size > p.size {
                return Err(UpgradeError::TooLarge {
                    part: part.to_string(),
                    size,
                    label,
                    room: p.size,
                });
            }
            targets.push((part, p.offset));
        }

        // Every check passed: what follows changes the disk.

        // 2. The slot's old UKIs go first.
        let linux = self.linux_dir();
        for name in &plan.remove {
            let file = linux.join(name);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("remove the old UKI", &file)(e)),
            }
        }
        sync_dir(&linux)?;

        // 3. The record says the slot is being written.
        let mut record = SlotRecord {
            version: manifest.version.clone(),
            root_hash: manifest.root_hash.clone(),
            phase: WritePhase::Writing,
            at: now,
        };
        let record_path = self.record_path(slot);
        state::write_json(&record_path, &record, None)
            .map_err(io_error("write the slot record", &record_path))?;
        // The booted slot as the image build left it has no record: it
        // gets one, so that the node can say what it holds once it runs
        // the other.
        if host.slot(host.booted).record.is_none() {
            let booted = SlotRecord {
                version: host.running.clone(),
                root_hash: String::new(),
                phase: WritePhase::Written,
                at: now,
            };
            let path = self.record_path(host.booted);
            state::write_json(&path, &booted, None)
                .map_err(io_error("write the slot record", &path))?;
        }
        let last = LastUpgrade {
            slot,
            version: manifest.version.clone(),
            at: now,
            order: order.map(str::to_string),
        };
        state::write_json(&self.last_path(), &last, None)
            .map_err(io_error("write the last upgrade", &self.last_path()))?;
        // Said only now, when a cut is on record as one.
        writing();

        // 4. Root and verity, the bundle read and checked again.
        let mut uki = Vec::new();
        let mut current: Option<String> = None;
        let written = bundle::read(io::BufReader::new(open()?), key, |part, bytes| {
            if part == bundle::PART_UKI {
                uki.extend_from_slice(bytes);
                return Ok(());
            }
            if current.as_deref() != Some(part) {
                let start = targets
                    .iter()
                    .find(|(p, _)| *p == part)
                    .map(|(_, o)| *o)
                    .ok_or_else(|| io::Error::other(format!("unexpected part `{part}`")))?;
                disk.seek(SeekFrom::Start(start))?;
                current = Some(part.to_string());
            }
            disk.write_all(bytes)
        });
        if let Err(source) = written {
            return Err(match source {
                BundleError::Io(e) => io_error("write the slot", &self.disk)(e),
                source => UpgradeError::ChangedWhileWriting {
                    path: path.to_path_buf(),
                    slot,
                    source,
                },
            });
        }
        disk.sync_all()
            .map_err(io_error("flush the disk", &self.disk))?;

        // 5. The PARTUUIDs the new UKI's root hash names.
        image::gpt::set_uuids(
            &mut disk,
            self.sector,
            &[
                (&slot.root_label(), &plan.root_partuuid),
                (&slot.verity_label(), &plan.verity_partuuid),
            ],
        )
        .map_err(|source| UpgradeError::Table {
            disk: self.disk.clone(),
            source,
        })?;
        disk.sync_all()
            .map_err(io_error("flush the disk", &self.disk))?;

        // 6. Written.
        record.phase = WritePhase::Written;
        state::write_json(&record_path, &record, None)
            .map_err(io_error("write the slot record", &record_path))?;

        // 7. The UKI with all its tries.
        let uki_path = linux.join(&plan.uki);
        state::write_atomic(&uki_path, &uki, None).map_err(io_error("write the UKI", &uki_path))?;

        // 8. Boot it next.
        self.set_default(&plan.loader_default)?;
        Ok(plan)
    }

    /// Boots the other slot next, if it booted healthy before.
    pub fn rollback(&self, host: &HostFacts) -> Result<Slot, UpgradeError> {
        let slot = image::slot::plan_rollback(host)?;
        self.set_default(&image::slot::loader_default(slot))?;
        Ok(slot)
    }

    /// Replaces the `default` line of `loader/loader.conf` with `line`,
    /// keeping the others.
    fn set_default(&self, line: &str) -> Result<(), UpgradeError> {
        let path = self.esp.join("loader/loader.conf");
        let old = match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io_error("read", &path)(e)),
        };
        let mut text: String = old
            .lines()
            .filter(|l| l.split_whitespace().next() != Some("default"))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(line);
        text.push('\n');
        state::write_atomic(&path, text.as_bytes(), None).map_err(io_error("write", &path))
    }
}

/// The image version of an os-release file (`IMAGE_VERSION=`).
pub fn running_version(os_release: &Path) -> Option<String> {
    let text = std::fs::read_to_string(os_release).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("IMAGE_VERSION="))
        .map(|v| v.trim_matches('"').to_string())
}

/// The slot the node booted, from its health facts; `None` outside an
/// image.
pub fn booted_slot() -> Option<Slot> {
    match crate::health::slot(&crate::health::Sources::default()) {
        crate::health::Slot::A => Some(Slot::A),
        crate::health::Slot::B => Some(Slot::B),
        crate::health::Slot::None => None,
    }
}

/// What this node reports of its image; `None` outside an image (no
/// slot, no version, no disk to read).
pub fn image_status(state_dir: &Path, role: configs::Role) -> Option<ImageStatus> {
    let booted = booted_slot()?;
    let version = running_version(Path::new("/usr/lib/os-release"))?;
    let layout = match Layout::discover(state_dir) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("upgrade: cannot read the node's slots: {e}");
            return None;
        }
    };
    match layout.facts(role, &version, booted) {
        Ok(host) => Some(layout.status(&host)),
        Err(e) => {
            tracing::warn!("upgrade: cannot read the node's slots: {e}");
            None
        }
    }
}

impl Layout {
    /// What the node reports of its image, from `host`.
    pub fn status(&self, host: &HostFacts) -> ImageStatus {
        let other = host.booted.other();
        let facts = host.slot(other);
        let state = image::slot::state(facts);
        ImageStatus {
            version: host.running.clone(),
            booted: host.booted,
            other: OtherSlot {
                slot: other,
                version: facts
                    .record
                    .as_ref()
                    .filter(|_| state != image::slot::SlotState::Empty)
                    .map(|r| r.version.clone()),
                state,
            },
            last_upgrade: self.last_result(host),
        }
    }
}

/// Reads the update key baked into the image.
pub fn update_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the update key {}", path.display()))?;
    Ok(image::key::parse_public_key(
        &path.display().to_string(),
        &text,
    )?)
}

fn sync_dir(dir: &Path) -> Result<(), UpgradeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("flush", dir))
}

/// Hashes `len` bytes of `disk` from `offset` (what tests compare before
/// and after a refused install).
pub fn hash_range(disk: &Path, offset: u64, len: u64) -> io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = File::open(disk)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut h = Sha256::new();
    io::copy(&mut f.take(len), &mut h)?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests;
