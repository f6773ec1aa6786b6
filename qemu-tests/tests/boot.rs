//! The private image boots under OVMF (TCG) to the agent's ready marker;
//! the root is read-only through dm-verity; the boot is blessed (the UKI
//! loses its `+3` counter); the serial console never shows a login prompt;
//! the state partition grows to fill a larger disk; and `/var` keeps the
//! boot counter across a reboot of the same disk. The master and public
//! images boot to their ready marker, healthy, read-only and through
//! verity, in `cluster.rs`'s join test; what this test checks beyond that
//! (the image's ESP, partitions and `/var`) is built the same for every
//! role. The image built with Debian's generic kernel (`--kernel generic`)
//! boots as public-1 there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use qemu_tests::observe::{Hold, Seen, wait_until_holding};
use qemu_tests::{OVMF_CODE, OVMF_VARS, QEMU, Vm, VmConfig, env, marker_fields, overlay};

const READY: Duration = Duration::from_secs(300);
const GROW_MIB: u64 = 512;
/// How long the console is watched for a login prompt once
/// multi-user.target, which would pull the gettys in, was reached: a getty
/// prints its prompt within a second or two of starting, even under TCG.
const NO_LOGIN_WINDOW: Duration = Duration::from_secs(15);

fn image(role: &str, ext: &str) -> PathBuf {
    env::images_dir().join(format!("strata-{role}.{ext}"))
}

fn ready(test: &str, role: &str) -> bool {
    let (qcow2, manifest) = (image(role, "qcow2"), image(role, "manifest.json"));
    env::require(
        test,
        &[
            &qcow2,
            &manifest,
            Path::new(OVMF_CODE),
            Path::new(OVMF_VARS),
        ],
        &[QEMU, "qemu-img", "mdir", "sfdisk", "dumpe2fs"],
    )
}

/// A fresh directory for one test's files.
fn workdir(name: &str) -> PathBuf {
    let dir = env::project_root().join(format!("target/qemu-tests/{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("target/ is writable");
    dir
}

fn manifest(role: &str) -> image::manifest::Manifest {
    let path = image(role, "manifest.json");
    let bytes = std::fs::read(&path).expect("the manifest is readable");
    image::manifest::Manifest::parse(&path.display().to_string(), &bytes)
        .expect("the manifest parses")
}

fn output(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Boots `disk` once and returns the fields of the ready marker; waits
/// for the boot to be blessed when the entry still counts tries (only then
/// does systemd-bless-boot run), then powers the VM off.
fn boot(config: &VmConfig, blessing: bool) -> std::collections::BTreeMap<String, String> {
    let mut vm = Vm::spawn(config.clone()).expect("qemu starts");
    let line = vm
        .wait_for("STRATA-READY", READY)
        .unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!(
        "{}: {line} after {:.1}s",
        config.name,
        vm.uptime().as_secs_f64()
    );
    if blessing {
        vm.wait_for_all(
            "Boot Loader Entry as Good",
            &["Finished"],
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        no_login_prompt(&vm);
    }
    vm.shutdown(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));
    marker_fields(&line)
}

/// The serial console shows the boot and the agent's status and never a
/// login prompt (the image masks the gettys): watched in the console's log,
/// which has every byte the guest wrote (a prompt ends in no newline), from
/// the boot on, until `STRATA-BOOT` says multi-user.target was reached and
/// then for [`NO_LOGIN_WINDOW`].
fn no_login_prompt(vm: &Vm) {
    let log = vm.config.log();
    let console = || std::fs::read_to_string(&log).unwrap_or_default();
    let look = || {
        let text = console();
        match text.lines().find(|l| l.contains("login:")) {
            Some(l) => Seen::Broken(format!("`{}` on the console", l.trim())),
            None => Seen::Holds(format!("{} console lines", text.lines().count())),
        }
    };
    wait_until_holding(
        &format!("{}: multi-user.target reached", vm.config.name),
        Duration::from_secs(120),
        Duration::from_millis(500),
        || console().contains("STRATA-BOOT").then_some(()),
        &look,
    );
    Hold::new(
        format!("{}: no login prompt on the console", vm.config.name),
        NO_LOGIN_WINDOW,
    )
    .every(Duration::from_millis(500))
    .check(&look);
}

fn boots_and_keeps_var(role: &str) {
    let test = format!("{role}_boots_verity_and_keeps_var");
    if !ready(&test, role) {
        return;
    }
    let dir = workdir(role);
    let disk = dir.join("disk.qcow2");
    overlay(&image(role, "qcow2"), &disk, GROW_MIB).expect("overlay");
    let mut config = VmConfig::new(&format!("{role}-1"), &disk, &dir);

    let first = boot(&config, true);
    assert_eq!(first["role"], role);
    assert_eq!(first["slot"], "a");
    assert_eq!(first["root"], "ro", "writing to / must fail");
    assert_eq!(first["verity"], "yes");
    assert_eq!(first["healthy"], "yes");
    assert_eq!(first["boots"], "1");
    // Without user-data the node is a healthy image waiting for its
    // configuration (the cluster tests hand user-data in through fw_cfg).
    assert_eq!(first["user-data"], "none");
    // Its boot times: the guest's clock at Ready, and multi-user.target
    // still to come, since it waits for the agent's `READY=1`, sent after
    // the marker (the `STRATA-BOOT` line follows; the cluster test and
    // `cargo xtask bench boot` read it).
    let ready_ms: u64 = first["ready_ms"].parse().expect("ready_ms is a number");
    assert!(ready_ms > 0, "{first:?}");
    assert_eq!(first["multi_user_ms"], "pending", "{first:?}");

    // After the first boot, on the disk: the entry is blessed and the state
    // partition fills the grown disk.
    let m = manifest(role);
    let raw = dir.join("disk.raw");
    output(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(&disk)
            .arg(&raw),
    );
    let esp = m
        .partitions
        .iter()
        .find(|p| p.label == "ESP")
        .expect("ESP in manifest");
    let listing = output(
        Command::new("mdir")
            .args(["-b", "-i"])
            .arg(format!("{}@@{}", raw.display(), esp.offset))
            .arg("::/EFI/Linux"),
    );
    assert!(
        listing.contains("strata-a.efi"),
        "the boot was not blessed: {listing}"
    );
    assert!(!listing.contains("+"), "a boot counter is left: {listing}");
    let table = output(Command::new("sfdisk").arg("--dump").arg(&raw));
    let state = table
        .lines()
        .find(|l| l.contains("name=\"state\""))
        .expect("state partition");
    let sectors: u64 = state
        .split(',')
        .find_map(|f| {
            f.trim()
                .strip_prefix("size=")
                .map(|s| s.trim().parse().expect("size"))
        })
        .expect("size field");
    let planned = m
        .partitions
        .iter()
        .find(|p| p.label == "state")
        .expect("state in manifest")
        .size;
    // It takes the grown space up to the backup GPT at the disk's new end.
    let grown = sectors * 512 - planned;
    assert!(
        grown > (GROW_MIB - 1) * 1024 * 1024 && grown <= (GROW_MIB + 1) * 1024 * 1024,
        "the state partition did not grow by {GROW_MIB} MiB: {state}"
    );
    std::fs::remove_file(&raw).expect("remove raw copy");

    // The second boot of the same disk sees the first one's counter.
    config.name = format!("{role}-2");
    let second = boot(&config, false);
    assert_eq!(second["boots"], "2", "/var lost the boot counter");
    assert_eq!(second["verity"], "yes");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn private_boots_verity_and_keeps_var() {
    boots_and_keeps_var("private");
}
