//! Boot counting falls back: a slot-B UKI whose root hash matches no
//! partition (what a bad upgrade looks like) is tried three times, each try
//! ending at the initrd's timeout with a reboot, and then systemd-boot boots
//! slot A by itself, which comes up healthy and is blessed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use qemu_tests::{OVMF_CODE, OVMF_VARS, QEMU, Vm, VmConfig, env, marker_fields};

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_slot_that_fails_three_boots_falls_back_to_a() {
    let images = env::images_dir();
    let (qcow2, bundle, manifest) = (
        images.join("strata-private.qcow2"),
        images.join("strata-private.update"),
        images.join("strata-private.manifest.json"),
    );
    let key = env::project_root().join("target/strata-dev-signing.pem");
    if !env::require(
        "a_slot_that_fails_three_boots_falls_back_to_a",
        &[
            &qcow2,
            &bundle,
            &manifest,
            &key,
            Path::new(OVMF_CODE),
            Path::new(OVMF_VARS),
        ],
        &[QEMU, "qemu-img", "mcopy", "mdir"],
    ) {
        return;
    }
    let dir =
        env::project_root().join(format!("target/qemu-tests/fallback-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("target/ is writable");

    // Slot B's UKI: slot A's, with a root hash that matches no partition.
    let m =
        image::manifest::Manifest::parse("manifest", &std::fs::read(&manifest).expect("manifest"))
            .expect("manifest parses");
    let pem = std::fs::read_to_string(&key).expect("dev key");
    let key =
        <ed25519_dalek::SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
            .expect("dev key parses");
    let mut uki = Vec::new();
    image::bundle::read(
        std::fs::File::open(&bundle).expect("bundle"),
        &key.verifying_key(),
        |part, bytes| {
            if part == image::bundle::PART_UKI {
                uki.extend_from_slice(bytes);
            }
            Ok(())
        },
    )
    .expect("the bundle verifies");
    let needle = format!("roothash={}", m.root_hash);
    let at = uki
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("the UKI carries the root hash");
    let wrong: String = m.root_hash.chars().rev().collect();
    uki[at + 9..at + needle.len()].copy_from_slice(wrong.as_bytes());
    let broken = dir.join("strata-b+3.efi");
    std::fs::write(&broken, &uki).expect("write the slot B UKI");

    let disk = dir.join("disk.raw");
    output(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&qcow2)
            .arg(&disk),
    );
    let esp = m.partitions.iter().find(|p| p.label == "ESP").expect("ESP");
    let esp_image = format!("{}@@{}", disk.display(), esp.offset);
    output(
        Command::new("mcopy")
            .arg("-i")
            .arg(&esp_image)
            .arg(&broken)
            .arg("::/EFI/Linux/strata-b+3.efi"),
    );

    let mut vm = Vm::spawn(VmConfig::new("fallback", &disk, &dir)).expect("qemu starts");
    let line = vm
        .wait_for("STRATA-READY", Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("fallback: {line} after {:.1}s", vm.uptime().as_secs_f64());
    let fields = marker_fields(&line);
    assert_eq!(fields["slot"], "a");
    assert_eq!(fields["healthy"], "yes");
    vm.wait_for_all(
        "Boot Loader Entry as Good",
        &["Finished"],
        Duration::from_secs(120),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    vm.shutdown(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));

    let listing = output(
        Command::new("mdir")
            .args(["-b", "-i"])
            .arg(&esp_image)
            .arg("::/EFI/Linux"),
    );
    assert!(
        listing.contains("strata-b+0-3.efi"),
        "slot B did not use up its three tries: {listing}"
    );
    assert!(
        listing.contains("strata-a.efi"),
        "slot A was not blessed: {listing}"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}
