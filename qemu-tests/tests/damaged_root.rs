//! dm-verity seen from outside: bytes flipped in slot A's root partition of
//! a disk copy, inside the first block of the agent's binary, make reading
//! that file fail in the booted node (the kernel reports the very block the
//! test damaged as corrupted, and the agent cannot start), and the boot is
//! never blessed: the node reboots itself and the ESP still carries slot A's
//! boot counter, with every try it made counted.

use std::path::Path;
use std::time::Duration;

use qemu_tests::boot_times::kernel_starts;
use qemu_tests::disk::{self, EROFS_MAGIC};
use qemu_tests::{OVMF_CODE, OVMF_VARS, QEMU, Vm, VmConfig, env};

const TEST: &str = "a_damaged_root_block_fails_the_read_and_the_boot_is_not_blessed";

/// dm-verity's data block size (`veritysetup format`'s default), also the
/// erofs block size.
const BLOCK: u64 = 4096;

#[test]
fn a_damaged_root_block_fails_the_read_and_the_boot_is_not_blessed() {
    let images = env::images_dir();
    let (qcow2, manifest) = (
        images.join("strata-private.qcow2"),
        images.join("strata-private.manifest.json"),
    );
    if !env::require(
        TEST,
        &[
            &qcow2,
            &manifest,
            Path::new(OVMF_CODE),
            Path::new(OVMF_VARS),
        ],
        &[QEMU, "qemu-img", "dump.erofs", "mdir"],
    ) {
        return;
    }
    let dir = env::project_root().join(format!(
        "target/qemu-tests/damaged-{}",
        qemu_tests::unique()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("target/ is writable");

    let m = disk::manifest(&manifest).expect("the manifest reads");
    let raw = dir.join("disk.raw");
    disk::raw_copy(&qcow2, &raw).expect("qemu-img makes a raw copy");
    let (root, len) = disk::root_a(&m).expect("slot A's root in the manifest");
    assert_eq!(
        disk::read_u32(&raw, root + 1024).expect("read the superblock"),
        EROFS_MAGIC,
        "slot A does not start with an erofs superblock"
    );

    // Where the agent's first block (its ELF header, which exec reads first)
    // lies in slot A's erofs.
    let erofs = dir.join("root.erofs");
    disk::extract(&raw, root, len, &erofs).expect("copy slot A's erofs");
    let extents =
        disk::erofs_extents(&erofs, "/usr/bin/strata").expect("dump.erofs finds the agent");
    std::fs::remove_file(&erofs).expect("remove the erofs copy");
    let first = extents[0];
    assert_eq!(first.logical, 0, "{extents:?}");
    assert_eq!(first.physical % BLOCK, 0, "{extents:?}");
    assert!(first.physical + BLOCK <= len, "{extents:?}");
    let block = first.physical / BLOCK;
    disk::flip(&raw, root + first.physical + 64, 16).expect("flip 16 bytes");
    eprintln!("flipped 16 bytes in data block {block} of slot A (the agent's first block)");

    let mut vm = Vm::spawn(VmConfig::new("damaged", &raw, &dir)).expect("qemu starts");
    // Neither the agent's ready marker nor systemd's blessing may ever show.
    let never = |l: &str| {
        l.contains("STRATA-READY")
            || (l.contains("Finished") && l.contains("Boot Loader Entry as Good"))
    };
    let wait = |vm: &mut Vm, needle: &str, also: &[&str], secs: u64| {
        vm.wait_for_unless(needle, also, never, Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("{e:#}"))
            .0
    };
    let corrupted = format!("data block {block} is corrupted");
    let line = wait(&mut vm, "device-mapper: verity:", &[&corrupted], 400);
    eprintln!("damaged: {line}");
    // The health gate fails too, and its failure reboots the node: the next
    // kernel start shows that it rebooted by itself.
    let line = wait(&mut vm, "] Linux version ", &[], 400);
    eprintln!("damaged: rebooted: {line}");
    let log = vm.config.log();
    drop(vm);

    // What the first boot said, in whatever order systemd printed it.
    let console = std::fs::read_to_string(&log).expect("the console log");
    let first_boot: Vec<&str> = console
        .split("] Linux version ")
        .nth(1)
        .expect("a first kernel start")
        .lines()
        .collect();
    let said = |all: &[&str]| {
        first_boot
            .iter()
            .find(|l| all.iter().all(|a| l.contains(a)))
            .unwrap_or_else(|| {
                panic!(
                    "no console line with {all:?} in the first boot ({})",
                    log.display()
                )
            })
            .to_string()
    };
    // systemd could not execute the agent: the read of its first block
    // failed with EIO (the agent's unit puts its errors on the console).
    eprintln!(
        "damaged: {}",
        said(&["/usr/bin/strata", "Input/output error"])
    );
    eprintln!(
        "damaged: {}",
        said(&["Failed to start", "Strata node agent"])
    );
    // (systemd shortens the health unit's name and description.)
    eprintln!(
        "damaged: {}",
        said(&["Failed to start", "health gate for boot assessment"])
    );
    let starts = kernel_starts(&console) as u32;
    assert!(
        starts >= 2,
        "the node did not reboot: {starts} kernel start(s)"
    );
    let esp = disk::partition(&m, "ESP").expect("ESP");
    let entries = disk::esp_entries(&raw, esp).expect("mdir reads the ESP");
    assert_eq!(entries.len(), 1, "{entries:?}");
    // Each kernel start used one of slot A's three tries; none was blessed.
    assert_eq!(
        disk::boot_counter(&entries[0]),
        Some((3u32.saturating_sub(starts), starts)),
        "slot A's entry after {starts} kernel starts: {entries:?}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}
