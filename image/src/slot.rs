//! The A/B slots of a node's disk as its agent sees them, and what an
//! upgrade may do with them. Pure: the agent hands in what it read (the
//! booted slot, the UKI file names on the ESP, its own records of what it
//! wrote) and carries out what comes back.
//!
//! Each slot is a root partition, its verity partition and one UKI on the
//! ESP, `EFI/Linux/strata-<slot>[+LEFT[-DONE]].efi`. The suffix is
//! systemd-boot's boot counting: `+3` is a slot to be tried three times,
//! `+1-2` one that has one try left after two, `+0-3` one whose tries are
//! used up (systemd-boot boots it last, after every other entry), and no
//! suffix a slot `systemd-bless-boot` marked good once a boot of it
//! reached `boot-complete.target`, which `strata health --wait` gates.
//!
//! A slot's state (what `strata node list` shows):
//!
//! | state | the slot holds |
//! | --- | --- |
//! | `empty` | nothing bootable: never written, or a write that did not finish |
//! | `written` | a complete root and verity, no UKI yet |
//! | `trying` | a UKI with tries left: the next boots try it (or, booted, it is not blessed yet) |
//! | `failed` | a UKI whose tries are used up without a blessing |
//! | `good` | a blessed UKI: it booted healthy |

use std::fmt;

use serde::{Deserialize, Serialize};

use configs::Role;

use crate::manifest::Manifest;
use crate::version::ImageVersion;

/// How many times a newly installed slot is tried before the firmware's
/// boot loader goes back to the other one.
pub const TRIES: u32 = 3;

/// One of the two root slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub const BOTH: [Slot; 2] = [Slot::A, Slot::B];

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn letter(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }

    /// The GPT label of its root partition.
    pub fn root_label(self) -> String {
        format!("root-{}", self.letter())
    }

    /// The GPT label of its verity partition.
    pub fn verity_label(self) -> String {
        format!("verity-{}", self.letter())
    }

    /// The stem of its UKI's file name.
    pub fn uki_stem(self) -> String {
        format!("strata-{}", self.letter())
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.letter())
    }
}

/// Where a UKI stands in systemd-boot's boot counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootCount {
    /// No counter: blessed.
    Blessed,
    /// Tries left, and tries made.
    Counting { left: u32, done: u32 },
}

impl BootCount {
    /// Tries used up without a blessing.
    pub fn is_bad(self) -> bool {
        matches!(self, BootCount::Counting { left: 0, .. })
    }
}

/// A UKI file name of a slot, `strata-b+2-1.efi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uki {
    pub slot: Slot,
    pub count: BootCount,
}

impl Uki {
    /// A newly installed slot's UKI, to be tried [`TRIES`] times.
    pub fn fresh(slot: Slot) -> Uki {
        Uki {
            slot,
            count: BootCount::Counting {
                left: TRIES,
                done: 0,
            },
        }
    }

    /// Reads a file name of `EFI/Linux/`; `None` for a name that is not a
    /// slot's UKI (another entry an operator or a vendor put there).
    pub fn parse(name: &str) -> Option<Uki> {
        let stem = name.strip_suffix(".efi")?;
        let (base, counter) = match stem.split_once('+') {
            Some((b, c)) => (b, Some(c)),
            None => (stem, None),
        };
        let slot = Slot::BOTH.into_iter().find(|s| s.uki_stem() == base)?;
        let number = |t: &str| -> Option<u32> {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse().ok())
                .flatten()
        };
        let count = match counter {
            None => BootCount::Blessed,
            Some(c) => match c.split_once('-') {
                Some((l, d)) => BootCount::Counting {
                    left: number(l)?,
                    done: number(d)?,
                },
                None => BootCount::Counting {
                    left: number(c)?,
                    done: 0,
                },
            },
        };
        Some(Uki { slot, count })
    }

    /// Its file name in `EFI/Linux/`.
    pub fn file_name(&self) -> String {
        match self.count {
            BootCount::Blessed => format!("{}.efi", self.slot.uki_stem()),
            BootCount::Counting { left, done: 0 } => {
                format!("{}+{left}.efi", self.slot.uki_stem())
            }
            BootCount::Counting { left, done } => {
                format!("{}+{left}-{done}.efi", self.slot.uki_stem())
            }
        }
    }
}

/// The agent's own record of what it wrote into a slot, kept on the state
/// partition: written as `Writing` before the first byte goes to the slot
/// and as `Written` once every byte is on the disk, so that a write cut
/// short (a power loss, a killed VM) is never taken for a usable slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    pub version: String,
    pub root_hash: String,
    pub phase: WritePhase,
    /// Unix seconds of the last change.
    pub at: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WritePhase {
    Writing,
    Written,
    /// A phase a newer agent wrote.
    #[serde(other)]
    Unknown,
}

/// What the agent sees of one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotFacts {
    /// Its UKIs on the ESP (normally one; more after a cut-short rename).
    pub ukis: Vec<BootCount>,
    pub record: Option<SlotRecord>,
}

/// A slot's state; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotState {
    Empty,
    Written,
    Trying,
    Failed,
    Good,
    /// A state a newer agent reported.
    #[serde(other)]
    Unknown,
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotState::Empty => "empty",
            SlotState::Written => "written",
            SlotState::Trying => "trying",
            SlotState::Failed => "failed",
            SlotState::Good => "good",
            SlotState::Unknown => "unknown",
        })
    }
}

/// The state of a slot from what the agent sees of it.
pub fn state(facts: &SlotFacts) -> SlotState {
    let writing = facts
        .record
        .as_ref()
        .is_some_and(|r| r.phase != WritePhase::Written);
    if writing {
        // Whatever UKI is left there names a root that is not all there.
        return SlotState::Empty;
    }
    // The best of its UKIs: a blessed one, then one with tries left.
    if facts.ukis.contains(&BootCount::Blessed) {
        return SlotState::Good;
    }
    if facts.ukis.iter().any(|c| !c.is_bad()) {
        return SlotState::Trying;
    }
    if !facts.ukis.is_empty() {
        return SlotState::Failed;
    }
    match facts.record {
        Some(_) => SlotState::Written,
        None => SlotState::Empty,
    }
}

/// What the agent sees of its disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    pub role: Role,
    /// The version it runs (its os-release's `IMAGE_VERSION`).
    pub running: String,
    pub booted: Slot,
    pub a: SlotFacts,
    pub b: SlotFacts,
}

impl HostFacts {
    pub fn slot(&self, slot: Slot) -> &SlotFacts {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }

    /// UKI file names: sorts a directory listing of `EFI/Linux/` into the
    /// slots' facts (names of other entries are left alone).
    pub fn add_ukis<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        for uki in names.into_iter().filter_map(Uki::parse) {
            match uki.slot {
                Slot::A => self.a.ukis.push(uki.count),
                Slot::B => self.b.ukis.push(uki.count),
            }
        }
    }
}

/// Why a bundle is not installed. Nothing was written when one is
/// returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallRefused {
    #[error(
        "the bundle is for {bundle} nodes and this node is a {node} node: build or pick the bundle of its role"
    )]
    WrongRole { bundle: Role, node: Role },
    #[error("the bundle's {0}")]
    BadVersion(crate::version::VersionError),
    #[error("this node's own {0}")]
    BadRunningVersion(crate::version::VersionError),
    #[error(
        "the bundle holds {bundle}, older than the {running} this node runs: pass --allow-downgrade to go back on purpose"
    )]
    Downgrade { bundle: String, running: String },
    #[error("the bundle's root hash `{0}` is not at least 64 hexadecimal digits")]
    BadRootHash(String),
    #[error(
        "the booted slot {0} is not blessed yet: wait until the node is healthy, or roll it back"
    )]
    BootedNotGood(Slot),
}

/// What installing a bundle does, in order: remove the slot's old UKIs
/// (a blessed UKI left in front of a half-written root would be booted
/// with no tries to fall back on), record the slot as being written, write
/// root and verity, set their partition UUIDs, record it written, put the
/// new UKI (under a temporary name, then renamed), make it the loader's
/// default, then reboot. A cut anywhere leaves the booted slot as the only
/// bootable one, or the new one with all its tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    pub slot: Slot,
    pub version: String,
    /// The partition UUIDs systemd's verity generator looks for: the first
    /// and the last 128 bits of the root hash.
    pub root_partuuid: String,
    pub verity_partuuid: String,
    /// The slot's UKI file names to delete before anything else (what an
    /// earlier image or try left).
    pub remove: Vec<String>,
    /// The new UKI's file name.
    pub uki: String,
    /// The `default` line of `loader/loader.conf` that boots the slot next
    /// ([`loader_default`]), written last.
    pub loader_default: String,
}

/// The `default` line of `loader/loader.conf` that makes systemd-boot
/// (252) boot `slot` while its UKI is blessed or has tries left: the
/// pattern matches `strata-b.efi` and `strata-b+2-1.efi` but not
/// `strata-b+0-3.efi`, so once the slot's tries are used up nothing
/// matches and systemd-boot boots the first entry by its order, where
/// entries without tries come last: the other slot.
pub fn loader_default(slot: Slot) -> String {
    format!("default {}[.+][e1-9]*", slot.uki_stem())
}

/// Why `strata node rollback` cannot boot the other slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackRefused {
    #[error("slot {slot} is {state}: only a slot that booted healthy before can be rolled back to")]
    NotGood { slot: Slot, state: SlotState },
}

/// The slot `strata node rollback` boots: the other one, if it holds an
/// image that booted healthy (its UKI blessed). Setting
/// [`loader_default`] for it and rebooting is the rollback.
pub fn plan_rollback(host: &HostFacts) -> Result<Slot, RollbackRefused> {
    let other = host.booted.other();
    match state(host.slot(other)) {
        SlotState::Good => Ok(other),
        state => Err(RollbackRefused::NotGood { slot: other, state }),
    }
}

/// Whether a node running `running` may install `version`: not an older
/// one unless `allow_downgrade`. [`plan_install`] checks it again with
/// the bundle's signed manifest; a node checks it first with the version
/// an order names, before it downloads anything.
pub fn check_version(
    running: &str,
    version: &str,
    allow_downgrade: bool,
) -> Result<(), InstallRefused> {
    let new = ImageVersion::parse(version).map_err(InstallRefused::BadVersion)?;
    let current = ImageVersion::parse(running).map_err(InstallRefused::BadRunningVersion)?;
    if new.is_older_than(&current) && !allow_downgrade {
        return Err(InstallRefused::Downgrade {
            bundle: version.to_string(),
            running: running.to_string(),
        });
    }
    Ok(())
}

/// Checks a verified bundle's manifest against the node and plans its
/// installation into the slot that is not booted.
pub fn plan_install(
    host: &HostFacts,
    bundle: &Manifest,
    allow_downgrade: bool,
) -> Result<InstallPlan, InstallRefused> {
    if bundle.role != host.role {
        return Err(InstallRefused::WrongRole {
            bundle: bundle.role,
            node: host.role,
        });
    }
    check_version(&host.running, &bundle.version, allow_downgrade)?;
    let (root_partuuid, verity_partuuid) = crate::plan::slot_uuids(&bundle.root_hash)
        .map_err(|_| InstallRefused::BadRootHash(bundle.root_hash.clone()))?;
    if state(host.slot(host.booted)) != SlotState::Good {
        return Err(InstallRefused::BootedNotGood(host.booted));
    }
    let slot = host.booted.other();
    let remove = host
        .slot(slot)
        .ukis
        .iter()
        .map(|&count| Uki { slot, count }.file_name())
        .collect();
    Ok(InstallPlan {
        slot,
        version: bundle.version.clone(),
        root_partuuid,
        verity_partuuid,
        remove,
        uki: Uki::fresh(slot).file_name(),
        loader_default: loader_default(slot),
    })
}

/// How the last upgrade ended, judged at boot from the slot it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum UpgradeResult {
    /// The new slot booted and was blessed.
    Succeeded { slot: Slot, version: String },
    /// The node runs the new slot and waits for it to get healthy.
    Trying { slot: Slot, version: String },
    /// The new slot was not blessed within its tries: the node came back
    /// on the other one.
    RolledBack {
        slot: Slot,
        version: String,
        reason: String,
    },
    /// The slot was written but the node has not rebooted into it.
    Pending { slot: Slot, version: String },
    /// The write did not finish (the node went down while writing).
    Interrupted { slot: Slot, version: String },
    /// A result a newer agent reported.
    #[serde(other)]
    Unknown,
}

/// The result of the upgrade that wrote `slot` with `version`, from what
/// the node sees now.
pub fn upgrade_result(host: &HostFacts, slot: Slot, version: &str) -> UpgradeResult {
    let version = version.to_string();
    let facts = host.slot(slot);
    let state = state(facts);
    match (host.booted == slot, state) {
        // Booted and blessed, or blessed once and since rolled back from
        // by hand.
        (_, SlotState::Good) => UpgradeResult::Succeeded { slot, version },
        (true, _) => UpgradeResult::Trying { slot, version },
        (false, SlotState::Empty) => UpgradeResult::Interrupted { slot, version },
        (false, SlotState::Failed) => UpgradeResult::RolledBack {
            reason: format!(
                "slot {slot} did not get healthy in {} boots, so the node booted slot {} again",
                facts
                    .ukis
                    .iter()
                    .map(|c| match c {
                        BootCount::Counting { done, .. } => *done,
                        BootCount::Blessed => 0,
                    })
                    .max()
                    .unwrap_or(TRIES),
                slot.other()
            ),
            slot,
            version,
        },
        (false, _) => UpgradeResult::Pending { slot, version },
    }
}

#[cfg(test)]
mod tests;
