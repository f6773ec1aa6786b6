//! The `STRATA-CFG` provider for real: a small filesystem image labelled
//! `STRATA-CFG`, attached to a loop device, found through a by-label
//! directory holding a symlink to it, mounted read-only and unmounted again.
//!
//! The images are ext4: the host kernel of this tier has neither vfat nor
//! iso9660 (not in `/proc/filesystems`, no modules to load), so those two
//! are exercised only in the QEMU images, whose kernel loads them on mount.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bootstrap::Bootstrap;
use qemu_tests::testenv::{Need, require};

const USER_DATA: &str = "cluster = \"demo\"\nname = \"from-label\"\nrole = \"public\"\n\
                         masters = [\"10.9.0.10:6443\"]\njoin_token = \"t\"\n";

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A loop device attached to an image file, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(image: &Path) -> Loop {
        Loop(run(
            "losetup",
            &["--find", "--show", &image.display().to_string()],
        ))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A bootstrap with every path in `dir`, its by-label directory holding a
/// `STRATA-CFG` symlink to `device`, and no cloud reachable.
fn bootstrap(dir: &Path, device: &str) -> Bootstrap {
    let by_label = dir.join("by-label");
    std::fs::create_dir_all(&by_label).expect("by-label dir");
    std::os::unix::fs::symlink(device, by_label.join("STRATA-CFG")).expect("label symlink");
    let closed = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    Bootstrap {
        state_dir: dir.join("state"),
        fw_cfg_root: dir.join("no-fw-cfg"),
        load_fw_cfg_module: false,
        by_label_dir: by_label,
        cmdline_path: dir.join("cmdline"),
        ec2_endpoint: closed,
        gce_endpoint: closed,
        cloud_connect_timeout: Duration::from_secs(1),
        cloud_io_timeout: Duration::from_secs(1),
        url_timeout: Duration::from_secs(1),
    }
}

fn image(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(8 << 20))
        .expect("image file");
    path
}

/// The names in the state directory: the mount point must be gone.
fn state_entries(boot: &Bootstrap) -> Vec<String> {
    let entries = std::fs::read_dir(&boot.state_dir).expect("state dir exists");
    let mut names: Vec<String> = entries
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn strata_cfg_mounts() -> usize {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    mounts
        .lines()
        .filter(|l| l.contains(".strata-cfg."))
        .count()
}

#[test]
fn ext4_label_is_found_mounted_read_only_and_unmounted() {
    if !require(
        "ext4_label_is_found_mounted_read_only_and_unmounted",
        &[
            Need::Root,
            Need::Program("mkfs.ext4"),
            Need::Program("losetup"),
        ],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let content = dir.path().join("content");
    std::fs::create_dir_all(&content).expect("content dir");
    std::fs::write(content.join("user-data.toml"), USER_DATA).expect("user-data");
    let img = image(dir.path(), "cfg.img");
    let content_arg = content.display().to_string();
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-L",
            "STRATA-CFG",
            "-d",
            &content_arg,
            &img.display().to_string(),
        ],
    );
    let device = Loop::attach(&img);

    let boot = bootstrap(dir.path(), &device.0);
    let found = boot
        .discover()
        .expect("discover from the labelled filesystem");
    assert_eq!(
        found.source,
        format!("label:STRATA-CFG (ext4 on {})", device.0)
    );
    assert_eq!(found.user_data.name, "from-label");
    assert_eq!(
        std::fs::read_to_string(boot.state_file()).expect("kept user-data"),
        USER_DATA
    );
    assert_eq!(
        strata_cfg_mounts(),
        0,
        "the config filesystem is unmounted after reading"
    );
}

#[test]
fn ext4_label_without_user_data_is_an_error() {
    if !require(
        "ext4_label_without_user_data_is_an_error",
        &[
            Need::Root,
            Need::Program("mkfs.ext4"),
            Need::Program("losetup"),
        ],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let img = image(dir.path(), "cfg.img");
    run(
        "mkfs.ext4",
        &["-q", "-L", "STRATA-CFG", &img.display().to_string()],
    );
    let device = Loop::attach(&img);

    let boot = bootstrap(dir.path(), &device.0);
    let err = boot
        .discover()
        .expect_err("a config filesystem without user-data.toml is an error");
    let expected = format!(
        "label:STRATA-CFG: cannot read user-data.toml on {}: No such file or directory (os error 2)",
        device.0
    );
    assert_eq!(err.to_string(), expected);
    assert_eq!(
        state_entries(&boot),
        Vec::<String>::new(),
        "nothing is kept, the mount point is gone"
    );
    assert_eq!(
        strata_cfg_mounts(),
        0,
        "the config filesystem is unmounted after a failed read"
    );
}
