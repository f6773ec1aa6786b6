//! The slot writer on a disk image made by `sfdisk` from the image's own
//! partition plan (small sizes), an ESP directory and a records directory:
//! what an install writes, and that a refused bundle writes nothing.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use ed25519_dalek::SigningKey;
use expect_test::{Expect, expect};
use image::bundle::{PART_ROOT, PART_UKI, PART_VERITY};
use image::manifest::{Digest, Manifest};
use image::plan::{Budget, MIB, PlanInput};

use super::*;

const HASH_A: &str = "aa112233445566778899aabbccddeeff0123456789abcdeffedcba98765432aa";
const HASH_B: &str = "bb112233445566778899aabbccddeeff0123456789abcdeffedcba98765432bb";

struct Lab {
    _dir: tempfile::TempDir,
    layout: Layout,
}

/// `sfdisk` is what builds the images' tables; without it the test cannot
/// make a disk and says so.
fn sfdisk() -> bool {
    let found = Command::new("sfdisk")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("skipped: sfdisk (Debian's fdisk) is not installed; `cargo xtask deps --install`");
    }
    found
}

/// A 12 MiB disk of the images' layout (roots of 3 MiB) booted from slot
/// A, whose UKI is blessed.
fn lab() -> Lab {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let budget = Budget {
        esp: MIB,
        root: 3 * MIB,
        verity: MIB,
        min_state: MIB,
        gpt_reserve: MIB,
    };
    let plan = image::plan::plan(&PlanInput {
        role: configs::Role::Private,
        version: "0.1.0",
        root_hash_a: HASH_A,
        disk_size: 12 * MIB,
        budget,
    })
    .expect("a plan");
    let disk = dir.path().join("disk.raw");
    File::create(&disk)
        .and_then(|f| f.set_len(12 * MIB))
        .expect("a sparse disk");
    let mut child = Command::new("sfdisk")
        .args([
            "--quiet",
            "--no-reread",
            "--no-tell-kernel",
            "--wipe",
            "never",
        ])
        .arg(&disk)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sfdisk runs");
    child
        .stdin
        .take()
        .expect("a pipe")
        .write_all(plan.sfdisk_script().as_bytes())
        .expect("the script goes in");
    assert!(child.wait().expect("sfdisk ends").success());
    let esp = dir.path().join("esp");
    std::fs::create_dir_all(esp.join("EFI/Linux")).expect("the ESP");
    std::fs::create_dir_all(esp.join("loader")).expect("the ESP");
    std::fs::write(esp.join("EFI/Linux/strata-a.efi"), b"uki a").expect("slot A's UKI");
    std::fs::write(esp.join("loader/loader.conf"), "timeout 0\neditor no\n").expect("loader");
    let layout = Layout {
        disk,
        sector: 512,
        esp,
        records: dir.path().join("records"),
    };
    Lab { _dir: dir, layout }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A bundle of `version` for `role` with a root of `root_len` bytes.
fn bundle(role: configs::Role, version: &str, root_len: usize, signer: &SigningKey) -> Vec<u8> {
    let root: Vec<u8> = (0..root_len).map(|i| (i % 251) as u8).collect();
    let verity = vec![7u8; 4096];
    let uki = b"MZ uki of slot b".to_vec();
    let digest = |name: &str, b: &[u8]| Digest {
        name: name.into(),
        size: b.len() as u64,
        sha256: image::sha256_hex(b),
    };
    let m = Manifest {
        format: image::manifest::FORMAT,
        version: version.into(),
        role,
        kernel: "linux 6.1".into(),
        source_date_epoch: 1,
        root_hash: HASH_B.into(),
        verity_salt: "00".repeat(32),
        cmdline: format!("roothash={HASH_B}"),
        packages: BTreeMap::new(),
        partitions: vec![],
        parts: vec![
            digest(PART_ROOT, &root),
            digest(PART_VERITY, &verity),
            digest(PART_UKI, &uki),
        ],
        artifacts: vec![],
    };
    let mut out = Vec::new();
    image::bundle::write(
        &mut out,
        &m,
        signer,
        &mut [
            (PART_ROOT, &mut &root[..]),
            (PART_VERITY, &mut &verity[..]),
            (PART_UKI, &mut &uki[..]),
        ],
    )
    .expect("a bundle");
    out
}

/// What the slots look like: the ESP's UKIs, `loader.conf`'s default, the
/// records, slot B's PARTUUIDs and a digest of its root partition.
fn render(lab: &Lab) -> String {
    let l = &lab.layout;
    let mut ukis: Vec<String> = std::fs::read_dir(l.esp.join("EFI/Linux"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    ukis.sort();
    let loader = std::fs::read_to_string(l.esp.join("loader/loader.conf")).unwrap();
    let default = loader
        .lines()
        .find(|l| l.starts_with("default"))
        .unwrap_or("(no default)");
    let mut records = String::new();
    for slot in Slot::BOTH {
        if let Ok(r) = std::fs::read_to_string(l.record_path(slot)) {
            let r: SlotRecord = serde_json::from_str(&r).unwrap();
            records.push_str(&format!("{slot}: {} {:?}; ", r.version, r.phase));
        }
    }
    let table = image::gpt::read(&mut File::open(&l.disk).unwrap(), 512).unwrap();
    let b = table.by_label("root-b").unwrap();
    let vb = table.by_label("verity-b").unwrap();
    format!(
        "ukis: {}\n{default}\nrecords: {records}\nroot-b {} verity-b {}\nroot-b sha256 {}",
        ukis.join(" "),
        b.uuid,
        vb.uuid,
        &hash_range(&l.disk, b.offset, b.size).unwrap()[..16],
    )
}

/// Installs `bundle`; also says whether the writer told it started on
/// the slot.
fn install(
    lab: &Lab,
    bundle: &[u8],
    allow_downgrade: bool,
) -> (Result<InstallPlan, UpgradeError>, bool) {
    let path = lab.layout.records.with_file_name("bundle.update");
    std::fs::write(&path, bundle).unwrap();
    let host = lab
        .layout
        .facts(configs::Role::Private, "0.1.0", Slot::A)
        .unwrap();
    let mut writing = false;
    let result = lab.layout.install(
        &host,
        &path,
        &key(1).verifying_key(),
        super::Install {
            allow_downgrade,
            now: 100,
            order: None,
            writing: &mut || writing = true,
        },
    );
    (result, writing)
}

/// Installs `bundle` on a fresh lab and renders the outcome and the disk.
fn check(bundle: &[u8], allow_downgrade: bool, expected: Expect) {
    let lab = lab();
    let before = render(&lab);
    let (result, writing) = install(&lab, bundle, allow_downgrade);
    let outcome = match result {
        Ok(plan) => {
            assert!(writing, "the writer did not say it started on the slot");
            format!("installed {} into slot {}", plan.version, plan.slot)
        }
        Err(e) => {
            assert!(!writing, "a refused bundle was said to be written: {e}");
            let after = render(&lab);
            assert_eq!(before, after, "a refused bundle changed the disk: {e}");
            let dir = lab.layout.records.parent().unwrap().display().to_string();
            format!(
                "refused, nothing changed: {}",
                e.to_string().replace(&dir, "LAB")
            )
        }
    };
    expected.assert_eq(&format!("{outcome}\n{}\n", render(&lab)));
}

#[test]
fn a_bundle_goes_into_the_other_slot() {
    if !sfdisk() {
        return;
    }
    check(
        &bundle(configs::Role::Private, "0.2.0", 2 * MIB as usize, &key(1)),
        false,
        expect![[r#"
            installed 0.2.0 into slot b
            ukis: strata-a.efi strata-b+3.efi
            default strata-b[.+][e1-9]*
            records: a: 0.1.0 Written; b: 0.2.0 Written; 
            root-b bb112233-4455-6677-8899-aabbccddeeff verity-b 01234567-89ab-cdef-fedc-ba98765432bb
            root-b sha256 eede1070d70ef388
        "#]],
    );
}

#[test]
fn the_written_slot_reads_back_and_the_table_stays_valid() {
    if !sfdisk() {
        return;
    }
    let lab = lab();
    let b = bundle(configs::Role::Private, "0.2.0", 2 * MIB as usize, &key(1));
    install(&lab, &b, false).0.unwrap();
    // The root's bytes are where the table says.
    let table = image::gpt::read(&mut File::open(&lab.layout.disk).unwrap(), 512).unwrap();
    let root_b = table.by_label("root-b").unwrap();
    let root: Vec<u8> = (0..2 * MIB as usize).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        hash_range(&lab.layout.disk, root_b.offset, root.len() as u64).unwrap(),
        image::sha256_hex(&root)
    );
    // sfdisk, which reads both copies of the table, finds nothing wrong
    // and sees the new PARTUUIDs.
    let verify = Command::new("sfdisk")
        .arg("--verify")
        .arg(&lab.layout.disk)
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let dump = Command::new("sfdisk")
        .arg("--dump")
        .arg(&lab.layout.disk)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout).to_lowercase();
    assert!(
        dump.contains("uuid=bb112233-4455-6677-8899-aabbccddeeff"),
        "{dump}"
    );
    // The node sees slot B as tried next, and the upgrade pending.
    let host = lab
        .layout
        .facts(configs::Role::Private, "0.1.0", Slot::A)
        .unwrap();
    assert_eq!(image::slot::state(&host.b), image::slot::SlotState::Trying);
    expect![[r#"
        Some(
            Pending {
                slot: B,
                version: "0.2.0",
            },
        )
    "#]]
    .assert_debug_eq(&lab.layout.last_result(&host));
    // A rollback needs a slot that booted healthy: B has not yet.
    expect!["slot b is trying: only a slot that booted healthy before can be rolled back to"]
        .assert_eq(&lab.layout.rollback(&host).unwrap_err().to_string());
}

#[test]
fn bad_bundles_change_nothing() {
    if !sfdisk() {
        return;
    }
    let good = bundle(configs::Role::Private, "0.2.0", 2 * MIB as usize, &key(1));
    let mut tampered = good.clone();
    let n = tampered.len();
    tampered[n - 5000] ^= 0x55;
    check(
        &tampered,
        false,
        expect![[r#"
            refused, nothing changed: bundle LAB/bundle.update is refused: bundle part `root.erofs` is corrupted: sha256 cb91c5225c74d2ad6c67173c593275a2050bf62f2e2b9757816e3356385de49d, the signed manifest says 1e075c8d478ad21844e33e830a695ef03a4d2488b69ee275bd8947618bb1be1e
            ukis: strata-a.efi
            (no default)
            records: 
            root-b 534b751e-e60d-80b2-90b5-c4a016bd9d96 verity-b fad0d747-5574-8a9c-9180-1aabdd676c6b
            root-b sha256 bbd05cf6097ac9b1
        "#]],
    );
    check(
        &good[..good.len() / 2],
        false,
        expect![[r#"
            refused, nothing changed: bundle LAB/bundle.update is refused: bundle is truncated: it ends inside part `root.erofs`
            ukis: strata-a.efi
            (no default)
            records: 
            root-b 534b751e-e60d-80b2-90b5-c4a016bd9d96 verity-b fad0d747-5574-8a9c-9180-1aabdd676c6b
            root-b sha256 bbd05cf6097ac9b1
        "#]],
    );
    check(
        &bundle(configs::Role::Private, "0.2.0", 1000, &key(2)),
        false,
        expect![[r#"
            refused, nothing changed: bundle LAB/bundle.update is refused: bundle signature does not match its manifest: it was not signed with this key or was altered
            ukis: strata-a.efi
            (no default)
            records: 
            root-b 534b751e-e60d-80b2-90b5-c4a016bd9d96 verity-b fad0d747-5574-8a9c-9180-1aabdd676c6b
            root-b sha256 bbd05cf6097ac9b1
        "#]],
    );
    check(
        &bundle(configs::Role::Master, "0.2.0", 1000, &key(1)),
        false,
        expect![[r#"
            refused, nothing changed: bundle LAB/bundle.update is refused: the bundle is for master nodes and this node is a private node: build or pick the bundle of its role
            ukis: strata-a.efi
            (no default)
            records: 
            root-b 534b751e-e60d-80b2-90b5-c4a016bd9d96 verity-b fad0d747-5574-8a9c-9180-1aabdd676c6b
            root-b sha256 bbd05cf6097ac9b1
        "#]],
    );
    check(
        &bundle(configs::Role::Private, "0.0.9", 1000, &key(1)),
        false,
        expect![[r#"
            refused, nothing changed: bundle LAB/bundle.update is refused: the bundle holds 0.0.9, older than the 0.1.0 this node runs: pass --allow-downgrade to go back on purpose
            ukis: strata-a.efi
            (no default)
            records: 
            root-b 534b751e-e60d-80b2-90b5-c4a016bd9d96 verity-b fad0d747-5574-8a9c-9180-1aabdd676c6b
            root-b sha256 bbd05cf6097ac9b1
        "#]],
    );
    check(
        &bundle(configs::Role::Private, "0.2.0", 4 * MIB as usize, &key(1)),
        false,
        expect![[r#"
            refused, nothing changed: the bundle's root.erofs of 4194304 bytes does not fit partition `root-b` of 3145728 bytes
            ukis: strata-a.efi
            (no default)
            records: 
            root-b 534b751e-e60d-80b2-90b5-c4a016bd9d96 verity-b fad0d747-5574-8a9c-9180-1aabdd676c6b
            root-b sha256 bbd05cf6097ac9b1
        "#]],
    );
}

#[test]
fn a_downgrade_goes_on_only_when_allowed() {
    if !sfdisk() {
        return;
    }
    check(
        &bundle(configs::Role::Private, "0.0.9", 1000, &key(1)),
        true,
        expect![[r#"
            installed 0.0.9 into slot b
            ukis: strata-a.efi strata-b+3.efi
            default strata-b[.+][e1-9]*
            records: a: 0.1.0 Written; b: 0.0.9 Written; 
            root-b bb112233-4455-6677-8899-aabbccddeeff verity-b 01234567-89ab-cdef-fedc-ba98765432bb
            root-b sha256 54bbd7fe7ea57c2c
        "#]],
    );
}

#[test]
fn a_rollback_boots_the_slot_that_was_good() {
    if !sfdisk() {
        return;
    }
    let lab = lab();
    install(
        &lab,
        &bundle(configs::Role::Private, "0.2.0", 1000, &key(1)),
        false,
    )
    .0
    .unwrap();
    // Slot B booted and was blessed.
    let linux = lab.layout.esp.join("EFI/Linux");
    std::fs::rename(linux.join("strata-b+3.efi"), linux.join("strata-b.efi")).unwrap();
    let host = lab
        .layout
        .facts(configs::Role::Private, "0.2.0", Slot::B)
        .unwrap();
    expect![[r#"
        Some(
            Succeeded {
                slot: B,
                version: "0.2.0",
            },
        )
    "#]]
    .assert_debug_eq(&lab.layout.last_result(&host));
    assert_eq!(lab.layout.rollback(&host).unwrap(), Slot::A);
    expect![[r#"
        timeout 0
        editor no
        default strata-a[.+][e1-9]*
    "#]]
    .assert_eq(&std::fs::read_to_string(lab.layout.esp.join("loader/loader.conf")).unwrap());
}
