//! The partition plan: one GPT layout shared by every role, with UUIDs
//! derived from the role and the version so that builds are reproducible.
//!
//! Layout (1 MiB aligned): ESP, root-a, verity-a, root-b, verity-b, state.
//! The root and verity partitions of a slot get the PARTUUIDs systemd's
//! veritysetup generator expects: the first and the last 128 bits of the
//! slot's root hash. The state partition takes the rest of the disk and is
//! grown to fill a larger disk on first boot.

use serde::Serialize;

use configs::Role;

/// Bytes in a MiB.
pub const MIB: u64 = 1024 * 1024;
/// Logical sector size of the images.
pub const SECTOR: u64 = 512;

/// GPT partition type GUIDs from the Discoverable Partitions Specification.
pub mod types {
    /// EFI System Partition.
    pub const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    /// Root partition, x86-64.
    pub const ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    /// Root verity partition, x86-64.
    pub const ROOT_VERITY_X86_64: &str = "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5";
    /// `/var` partition.
    pub const VAR: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
}

/// Sizes the plan is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Budget {
    pub esp: u64,
    /// Each root slot (A and B have the same size).
    pub root: u64,
    /// Each verity hash partition.
    pub verity: u64,
    /// The smallest state partition the image is built with.
    pub min_state: u64,
    /// Space reserved at the start (protective MBR, primary GPT) and the end
    /// (backup GPT) of the disk.
    pub gpt_reserve: u64,
}

impl Budget {
    /// The budget of every role: ESP 256 MiB (two UKIs of about 40 MB plus
    /// systemd-boot, room for larger kernels), 512 MiB per root slot (roots
    /// are about 200 MB: room to grow 2.5 times), 16 MiB per hash partition
    /// (the hash tree of 512 MiB with 4 KiB blocks is about 4 MiB), state at least
    /// 256 MiB.
    pub const DEFAULT: Budget = Budget {
        esp: 256 * MIB,
        root: 512 * MIB,
        verity: 16 * MIB,
        min_state: 256 * MIB,
        gpt_reserve: MIB,
    };

    /// The smallest disk this budget fits on.
    pub fn min_disk(&self) -> u64 {
        2 * self.gpt_reserve + self.esp + 2 * (self.root + self.verity) + self.min_state
    }
}

/// The default size of a built disk image: 2 GiB (the raw file is sparse).
pub const DEFAULT_DISK_SIZE: u64 = 2048 * MIB;

/// One partition of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// GPT partition number, from 1.
    pub number: u32,
    /// GPT partition name (label).
    pub label: String,
    pub type_guid: String,
    pub uuid: String,
    /// Offset from the start of the disk, bytes.
    pub offset: u64,
    pub size: u64,
}

/// Where everything goes on the disk of one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub role: Role,
    pub version: String,
    pub disk_size: u64,
    pub disk_uuid: String,
    pub partitions: Vec<Partition>,
}

/// What the plan is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInput<'a> {
    pub role: Role,
    pub version: &'a str,
    /// The dm-verity root hash of slot A (hex, at least 64 digits).
    pub root_hash_a: &'a str,
    pub disk_size: u64,
    pub budget: Budget,
}

/// Why a plan cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "disk size of {disk} MiB is too small for the {role} image: the plan needs at least {needed} MiB \
         (ESP {esp} MiB, 2 x (root {root} MiB + verity {verity} MiB), state {state} MiB, GPT {gpt} MiB); \
         pass a disk size of at least {needed} MiB"
    )]
    DiskTooSmall {
        role: Role,
        disk: u64,
        needed: u64,
        esp: u64,
        root: u64,
        verity: u64,
        state: u64,
        gpt: u64,
    },
    #[error("disk size of {0} bytes is not a multiple of 1 MiB")]
    Unaligned(u64),
    #[error("root hash `{0}` is not at least 64 hex digits")]
    BadRootHash(String),
}

/// The PARTUUIDs of a slot's root and verity partitions from its root hash:
/// the first and the last 128 bits, formatted as UUIDs as they are.
pub fn slot_uuids(root_hash: &str) -> Result<(String, String), PlanError> {
    let bad = || PlanError::BadRootHash(root_hash.to_string());
    let bytes = hex::decode(root_hash).map_err(|_| bad())?;
    if bytes.len() < 32 {
        return Err(bad());
    }
    let mut first = [0u8; 16];
    let mut last = [0u8; 16];
    first.copy_from_slice(&bytes[..16]);
    last.copy_from_slice(&bytes[bytes.len() - 16..]);
    Ok((crate::format_uuid(&first), crate::format_uuid(&last)))
}

/// Makes the partition plan. Pure: the same input gives the same plan.
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let b = &input.budget;
    if input.disk_size % MIB != 0 {
        return Err(PlanError::Unaligned(input.disk_size));
    }
    if input.disk_size < b.min_disk() {
        return Err(PlanError::DiskTooSmall {
            role: input.role,
            disk: input.disk_size / MIB,
            needed: b.min_disk() / MIB,
            esp: b.esp / MIB,
            root: b.root / MIB,
            verity: b.verity / MIB,
            state: b.min_state / MIB,
            gpt: 2 * b.gpt_reserve / MIB,
        });
    }
    let (root_a, verity_a) = slot_uuids(input.root_hash_a)?;
    let role = input.role.as_str();
    let derived = |name: &str| crate::derived_uuid(&["strata", role, input.version, name]);
    let state_size = input.disk_size - 2 * b.gpt_reserve - b.esp - 2 * (b.root + b.verity);
    let parts: [(&str, &str, String, u64); 6] = [
        ("ESP", types::ESP, derived("esp"), b.esp),
        ("root-a", types::ROOT_X86_64, root_a, b.root),
        ("verity-a", types::ROOT_VERITY_X86_64, verity_a, b.verity),
        ("root-b", types::ROOT_X86_64, derived("root-b"), b.root),
        (
            "verity-b",
            types::ROOT_VERITY_X86_64,
            derived("verity-b"),
            b.verity,
        ),
        ("state", types::VAR, derived("state"), state_size),
    ];
    let mut offset = b.gpt_reserve;
    let mut partitions = Vec::new();
    for (i, (label, type_guid, uuid, size)) in parts.into_iter().enumerate() {
        partitions.push(Partition {
            number: i as u32 + 1,
            label: label.to_string(),
            type_guid: type_guid.to_string(),
            uuid,
            offset,
            size,
        });
        offset += size;
    }
    Ok(Plan {
        role: input.role,
        version: input.version.to_string(),
        disk_size: input.disk_size,
        disk_uuid: derived("disk"),
        partitions,
    })
}

impl Plan {
    /// The partition with `label`.
    pub fn partition(&self, label: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.label == label)
    }

    /// The plan as an `sfdisk` script.
    pub fn sfdisk_script(&self) -> String {
        let mut s = format!(
            "label: gpt\nlabel-id: {}\nunit: sectors\nsector-size: {SECTOR}\nfirst-lba: {}\nlast-lba: {}\n\n",
            self.disk_uuid.to_uppercase(),
            MIB / SECTOR,
            self.disk_size / SECTOR - 34,
        );
        for p in &self.partitions {
            s.push_str(&format!(
                "start={}, size={}, type={}, uuid={}, name=\"{}\"\n",
                p.offset / SECTOR,
                p.size / SECTOR,
                p.type_guid.to_uppercase(),
                p.uuid.to_uppercase(),
                p.label
            ));
        }
        s
    }

    /// A human-readable table of the plan.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} {} disk {} MiB uuid {}\n",
            self.role,
            self.version,
            self.disk_size / MIB,
            self.disk_uuid
        );
        for p in &self.partitions {
            s.push_str(&format!(
                "{} {:<8} offset {:>5} MiB size {:>5} MiB type {} uuid {}\n",
                p.number,
                p.label,
                p.offset / MIB,
                p.size / MIB,
                p.type_guid,
                p.uuid
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    const HASH: &str = "00112233445566778899aabbccddeeff0123456789abcdeffedcba9876543210";

    fn check(role: Role, disk_size: u64, expected: Expect) {
        let input = PlanInput {
            role,
            version: "0.1.0",
            root_hash_a: HASH,
            disk_size,
            budget: Budget::DEFAULT,
        };
        let actual = match plan(&input) {
            Ok(p) => p.render(),
            Err(e) => format!("error: {e}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn master_plan() {
        check(
            Role::Master,
            DEFAULT_DISK_SIZE,
            expect![[r#"
            master 0.1.0 disk 2048 MiB uuid 07d053cf-6b82-833b-814e-e63fa380957b
            1 ESP      offset     1 MiB size   256 MiB type c12a7328-f81f-11d2-ba4b-00a0c93ec93b uuid 23dacef4-44fe-8783-ad25-039bc6590b72
            2 root-a   offset   257 MiB size   512 MiB type 4f68bce3-e8cd-4db1-96e7-fbcaf984b709 uuid 00112233-4455-6677-8899-aabbccddeeff
            3 verity-a offset   769 MiB size    16 MiB type 2c7357ed-ebd2-46d9-aec1-23d437ec2bf5 uuid 01234567-89ab-cdef-fedc-ba9876543210
            4 root-b   offset   785 MiB size   512 MiB type 4f68bce3-e8cd-4db1-96e7-fbcaf984b709 uuid 432cf03b-92e5-80b5-ba75-df78f30ce976
            5 verity-b offset  1297 MiB size    16 MiB type 2c7357ed-ebd2-46d9-aec1-23d437ec2bf5 uuid 37b0c94e-779f-8e5e-b9c1-16932b6c8e03
            6 state    offset  1313 MiB size   734 MiB type 4d21b016-b534-45c2-a9fb-5c16e091fd2d uuid 8210d550-2b96-8abf-b117-5259243aead6
        "#]],
        );
    }

    #[test]
    fn private_plan() {
        check(
            Role::Private,
            DEFAULT_DISK_SIZE,
            expect![[r#"
            private 0.1.0 disk 2048 MiB uuid ae699644-8fd6-843b-b56e-45e0e529c4a4
            1 ESP      offset     1 MiB size   256 MiB type c12a7328-f81f-11d2-ba4b-00a0c93ec93b uuid fda9146f-8aeb-83dd-9220-a18eb12ad9fd
            2 root-a   offset   257 MiB size   512 MiB type 4f68bce3-e8cd-4db1-96e7-fbcaf984b709 uuid 00112233-4455-6677-8899-aabbccddeeff
            3 verity-a offset   769 MiB size    16 MiB type 2c7357ed-ebd2-46d9-aec1-23d437ec2bf5 uuid 01234567-89ab-cdef-fedc-ba9876543210
            4 root-b   offset   785 MiB size   512 MiB type 4f68bce3-e8cd-4db1-96e7-fbcaf984b709 uuid 534b751e-e60d-80b2-90b5-c4a016bd9d96
            5 verity-b offset  1297 MiB size    16 MiB type 2c7357ed-ebd2-46d9-aec1-23d437ec2bf5 uuid fad0d747-5574-8a9c-9180-1aabdd676c6b
            6 state    offset  1313 MiB size   734 MiB type 4d21b016-b534-45c2-a9fb-5c16e091fd2d uuid 9a576193-bd06-82f0-ae79-0f9f56ccc3a7
        "#]],
        );
    }

    #[test]
    fn public_plan() {
        check(
            Role::Public,
            DEFAULT_DISK_SIZE,
            expect![[r#"
            public 0.1.0 disk 2048 MiB uuid 2e9df48d-a0bb-8776-9222-c689af39de72
            1 ESP      offset     1 MiB size   256 MiB type c12a7328-f81f-11d2-ba4b-00a0c93ec93b uuid df1c422b-a1e8-84ff-a35f-2dfc07184574
            2 root-a   offset   257 MiB size   512 MiB type 4f68bce3-e8cd-4db1-96e7-fbcaf984b709 uuid 00112233-4455-6677-8899-aabbccddeeff
            3 verity-a offset   769 MiB size    16 MiB type 2c7357ed-ebd2-46d9-aec1-23d437ec2bf5 uuid 01234567-89ab-cdef-fedc-ba9876543210
            4 root-b   offset   785 MiB size   512 MiB type 4f68bce3-e8cd-4db1-96e7-fbcaf984b709 uuid 23881886-4e52-8db5-bb4d-ccb63b9691f0
            5 verity-b offset  1297 MiB size    16 MiB type 2c7357ed-ebd2-46d9-aec1-23d437ec2bf5 uuid 1c5570e9-80c3-8d4b-946b-5ef262c96e46
            6 state    offset  1313 MiB size   734 MiB type 4d21b016-b534-45c2-a9fb-5c16e091fd2d uuid 3c11ae32-951c-8289-b44e-208f8c8ed0c1
        "#]],
        );
    }

    #[test]
    fn disk_too_small_is_refused() {
        check(
            Role::Master,
            1024 * MIB,
            expect![
                "error: disk size of 1024 MiB is too small for the master image: the plan needs at least 1570 MiB (ESP 256 MiB, 2 x (root 512 MiB + verity 16 MiB), state 256 MiB, GPT 2 MiB); pass a disk size of at least 1570 MiB"
            ],
        );
    }

    #[test]
    fn unaligned_disk_is_refused() {
        check(
            Role::Private,
            DEFAULT_DISK_SIZE + 1,
            expect!["error: disk size of 2147483649 bytes is not a multiple of 1 MiB"],
        );
    }

    #[test]
    fn bad_root_hash_is_refused() {
        let input = PlanInput {
            role: Role::Public,
            version: "0.1.0",
            root_hash_a: "zz",
            disk_size: DEFAULT_DISK_SIZE,
            budget: Budget::DEFAULT,
        };
        expect!["root hash `zz` is not at least 64 hex digits"]
            .assert_eq(&plan(&input).unwrap_err().to_string());
    }

    #[test]
    fn slot_a_uuids_are_the_root_hash_halves() {
        let (root, verity) = slot_uuids(HASH).unwrap();
        assert_eq!(root, "00112233-4455-6677-8899-aabbccddeeff");
        assert_eq!(verity, "01234567-89ab-cdef-fedc-ba9876543210");
    }

    #[test]
    fn partitions_are_contiguous_and_fill_the_disk() {
        let input = PlanInput {
            role: Role::Master,
            version: "0.1.0",
            root_hash_a: HASH,
            disk_size: 4096 * MIB,
            budget: Budget::DEFAULT,
        };
        let p = plan(&input).unwrap();
        let mut end = MIB;
        for part in &p.partitions {
            assert_eq!(part.offset, end);
            assert_eq!(part.offset % MIB, 0);
            end += part.size;
        }
        assert_eq!(end, 4096 * MIB - MIB);
    }

    #[test]
    fn sfdisk_script_of_private() {
        let input = PlanInput {
            role: Role::Private,
            version: "0.1.0",
            root_hash_a: HASH,
            disk_size: DEFAULT_DISK_SIZE,
            budget: Budget::DEFAULT,
        };
        expect![[r#"
            label: gpt
            label-id: AE699644-8FD6-843B-B56E-45E0E529C4A4
            unit: sectors
            sector-size: 512
            first-lba: 2048
            last-lba: 4194270

            start=2048, size=524288, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=FDA9146F-8AEB-83DD-9220-A18EB12AD9FD, name="ESP"
            start=526336, size=1048576, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=00112233-4455-6677-8899-AABBCCDDEEFF, name="root-a"
            start=1574912, size=32768, type=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5, uuid=01234567-89AB-CDEF-FEDC-BA9876543210, name="verity-a"
            start=1607680, size=1048576, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=534B751E-E60D-80B2-90B5-C4A016BD9D96, name="root-b"
            start=2656256, size=32768, type=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5, uuid=FAD0D747-5574-8A9C-9180-1AABDD676C6B, name="verity-b"
            start=2689024, size=1503232, type=4D21B016-B534-45C2-A9FB-5C16E091FD2D, uuid=9A576193-BD06-82F0-AE79-0F9F56CCC3A7, name="state"
        "#]].assert_eq(&plan(&input).unwrap().sfdisk_script());
    }
}
