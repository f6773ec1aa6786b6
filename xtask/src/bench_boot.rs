//! `cargo xtask bench boot`: how long each role takes from QEMU start to
//! Ready, beside the time systemd took to `multi-user.target` in the same
//! boot. A 1 master + 1 private + 1 public cluster boots together from the
//! built images (as `cargo xtask cluster up` does); then, unless
//! `--no-single`, one master VM alone without user-data. Per node it prints
//! the host's wall time from QEMU start to the agent's `STRATA-READY`
//! marker, the guest's CLOCK_MONOTONIC at Ready (`ready_ms`) and at
//! `multi-user.target` (`multi_user_ms`), their difference, the host time
//! before the guest kernel started, and systemd-analyze's split. The
//! figures come from the agent's console lines
//! ([`qemu_tests::boot_times`]); the machine's load average is printed
//! with them, since other work on the host slows TCG down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use configs::Role;
use qemu_tests::boot_times::BootTimes;
use qemu_tests::cluster::{Layout, Prepared};
use qemu_tests::{Vm, VmConfig};

use crate::image::{self, Kernel, RoleArg};
use crate::{deps, project_root};

/// How long one boot may take before the benchmark gives up.
const TIMEOUT: Duration = Duration::from_secs(900);

/// Arguments of `cargo xtask bench boot`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Skip the single VM without user-data.
    #[arg(long)]
    pub no_single: bool,
}

/// One measured boot.
#[derive(Debug, Clone)]
pub struct Row {
    pub node: String,
    pub times: BootTimes,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    deps::ensure("cargo xtask bench boot", deps::BOOT)?;
    let root = project_root();
    let images = qemu_tests::env::images_dir();
    let missing = ["master", "private", "public"]
        .iter()
        .any(|r| !images.join(format!("strata-{r}.qcow2")).exists());
    if missing {
        image::build(&image::Args {
            role: RoleArg::All,
            out: Some(images.clone()),
            kernel: Kernel::Cloud,
            signing_key: None,
            disk_size_mib: ::image::plan::DEFAULT_DISK_SIZE / ::image::plan::MIB,
            version: None,
        })?;
    }
    let strata = strata_bin(&root)?;
    let work = root.join(format!("target/bench-boot/{}", qemu_tests::unique()));
    let _ = std::fs::remove_dir_all(&work);

    let load_before = load_average();
    let cluster = boot_cluster(&work.join("cluster"), &strata, &images)?;
    let load_cluster = load_average();
    let single = if args.no_single {
        None
    } else {
        let rows = boot_single(&work.join("single"), &images, Role::Master)?;
        Some((rows, load_average()))
    };
    let _ = std::fs::remove_dir_all(&work);

    println!("\nbench boot (OVMF, TCG, 1 vCPU per VM; guest times from the kernel's start):");
    println!("load average before: {load_before}");
    println!(
        "\n1 master + 1 private + 1 public booting together, user-data on fw_cfg (load average after: {load_cluster}):"
    );
    print!("{}", table(&cluster));
    if let Some((rows, load)) = single {
        println!("\none master VM alone, no user-data (load average after: {load}):");
        print!("{}", table(&rows));
    }
    println!("\n{LEGEND}");
    Ok(())
}

/// What the columns mean.
const LEGEND: &str = "kernels: kernels started up to the marker (more than 1: the guest rebooted, \
and the guest's figures are of its last boot); host: QEMU start to the STRATA-READY line on the host's clock; \
ready, multi-user: the guest's CLOCK_MONOTONIC at Ready and at multi-user.target; \
after-mu: Ready minus multi-user (negative: Ready first); \
pre-kernel: host minus ready (QEMU, firmware and boot loader); \
firmware..userspace: systemd-analyze's split, userspace up to multi-user.target.";

/// The cluster: every VM started at once, each one's figures read from its
/// console (with the time each line was read, so waiting for one VM does
/// not skew another's figure).
fn boot_cluster(dir: &Path, strata: &Path, images: &Path) -> anyhow::Result<Vec<Row>> {
    let layout = Layout {
        masters: 1,
        private: 1,
        public: 1,
    };
    let prepared = Prepared::new(dir, layout, strata, images)?;
    let mut vms = Vec::new();
    for node in &prepared.nodes {
        vms.push(Vm::spawn(prepared.vm_config(node)?)?);
    }
    let mut rows = Vec::new();
    for vm in &mut vms {
        let times = vm.boot_times(TIMEOUT)?;
        eprintln!("xtask: {}: {}", vm.config.name, times.ready_line);
        rows.push(Row {
            node: vm.config.name.clone(),
            times,
        });
    }
    let names: Vec<&str> = prepared.nodes.iter().map(|n| n.name.as_str()).collect();
    prepared
        .wait_ready(&names, Duration::from_secs(60))
        .context("the cluster's nodes are not all Ready through the API")?;
    Ok(rows)
}

/// One VM of `role` without user-data.
fn boot_single(dir: &Path, images: &Path, role: Role) -> anyhow::Result<Vec<Row>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let disk = dir.join(format!("{role}.qcow2"));
    qemu_tests::overlay(&images.join(format!("strata-{role}.qcow2")), &disk, 0)?;
    let mut vm = Vm::spawn(VmConfig::new(role.as_str(), &disk, dir))?;
    let times = vm.boot_times(TIMEOUT)?;
    eprintln!("xtask: {role}: {}", times.ready_line);
    Ok(vec![Row {
        node: format!("{role} (alone)"),
        times,
    }])
}

/// The figures of `rows` as a table, in seconds.
pub fn table(rows: &[Row]) -> String {
    let s = |ms: u64| format!("{:.1}", ms as f64 / 1000.0);
    let d = |ms: i64| format!("{:.1}", ms as f64 / 1000.0);
    let mut out = format!(
        "{:<16} {:>7} {:>6} {:>6} {:>10} {:>8} {:>10} | {:>8} {:>6} {:>6} {:>6} {:>9}\n",
        "node",
        "kernels",
        "host",
        "ready",
        "multi-user",
        "after-mu",
        "pre-kernel",
        "firmware",
        "loader",
        "kernel",
        "initrd",
        "userspace"
    );
    for r in rows {
        let t = &r.times;
        out.push_str(&format!(
            "{:<16} {:>7} {:>6} {:>6} {:>10} {:>8} {:>10} | {:>8} {:>6} {:>6} {:>6} {:>9}\n",
            r.node,
            t.kernel_starts,
            s(t.host_ready_ms),
            s(t.ready_ms),
            s(t.multi_user_ms),
            d(t.ready_after_multi_user_ms()),
            d(t.before_kernel_ms()),
            s(t.firmware_ms),
            s(t.loader_ms),
            s(t.kernel_ms),
            s(t.initrd_ms),
            s(t.userspace_ms),
        ));
    }
    out
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// The host's `strata` for `cluster init` and the CLI: `STRATA_BIN`, else
/// the copy the image build put in the images, else a release build.
pub(crate) fn strata_bin(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("STRATA_BIN") {
        return Ok(PathBuf::from(p));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let candidates = [
        root.join("target/image-work/strata"),
        target.join("release/strata"),
        root.join("target/release/strata"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no strata binary in {:?}: run `cargo xtask image --role all` or set STRATA_BIN",
                candidates
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        let row = |node: &str, ready: &str, at: u64, boot: &str| Row {
            node: node.to_string(),
            times: BootTimes::parse(
                ready,
                Duration::from_millis(at),
                boot,
                Duration::from_millis(at + 500),
            )
            .expect("consistent figures"),
        };
        let rows = [
            row(
                "private-1",
                "STRATA-READY role=private ready_ms=41250 multi_user_ms=23800",
                52_100,
                "STRATA-BOOT ready_ms=41250 multi_user_ms=23800 firmware_ms=5500 loader_ms=900 kernel_ms=4100 initrd_ms=0 userspace_ms=19700",
            ),
            row(
                "master (alone)",
                "STRATA-READY role=master ready_ms=18000 multi_user_ms=pending",
                26_000,
                "STRATA-BOOT ready_ms=18000 multi_user_ms=18100 firmware_ms=0 loader_ms=0 kernel_ms=3000 initrd_ms=0 userspace_ms=15100",
            ),
        ];
        expect_test::expect![[r#"
            node             kernels   host  ready multi-user after-mu pre-kernel | firmware loader kernel initrd userspace
            private-1              1   52.1   41.2       23.8     17.4       10.8 |      5.5    0.9    4.1    0.0      19.7
            master (alone)         1   26.0   18.0       18.1     -0.1        8.0 |      0.0    0.0    3.0    0.0      15.1
        "#]]
        .assert_eq(&table(&rows));
    }
}
