//! `cargo xtask bench upgrade`: one node's upgrade by image swap, beside a
//! plain reboot of the same node. A master and a private agent boot from
//! the built images; then, on the agent:
//!
//! 1. a plain reboot (`systemctl reboot` through `strata node exec`),
//!    timed from the command to the node Ready again (a new
//!    `ready_since`);
//! 2. `strata node upgrade --bundle` with a newer image's bundle (built
//!    into `target/images-upgrade` when missing), timed from the command to
//!    the order's end with the node Ready on the new version; its steps
//!    (push, download, write, reboot and blessing) timed from the order's
//!    progress as the CLI follows it;
//! 3. the bytes the upgrade wrote to the disk (the bundle's parts) and
//!    the download rate the node measured (its agent's log).
//!
//! TCG on a shared host: the load average is printed with the figures.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use qemu_tests::cluster::{Layout, Prepared};
use qemu_tests::{Vm, env};

use crate::image::{self, Kernel, RoleArg};
use crate::{deps, project_root};

const TIMEOUT: Duration = Duration::from_secs(900);

pub fn run() -> anyhow::Result<()> {
    deps::ensure("cargo xtask bench upgrade", deps::BOOT)?;
    let root = project_root();
    let images = env::images_dir();
    let newer = env::upgrade_images_dir();
    let build = |role: RoleArg, out: &Path, version: Option<&str>| -> anyhow::Result<()> {
        image::build(&image::Args {
            role,
            out: Some(out.to_path_buf()),
            kernel: Kernel::Cloud,
            signing_key: None,
            disk_size_mib: ::image::plan::DEFAULT_DISK_SIZE / ::image::plan::MIB,
            version: version
                .map(|v| ::image::version::ImageVersion::parse(v).map_err(anyhow::Error::msg))
                .transpose()?,
        })
        .map(|_| ())
    };
    if ["master", "private"]
        .iter()
        .any(|r| !images.join(format!("strata-{r}.qcow2")).exists())
    {
        build(RoleArg::All, &images, None)?;
    }
    let bundle = newer.join("strata-private.update");
    if !bundle.exists() {
        build(
            RoleArg::One(configs::Role::Private),
            &newer,
            Some(env::UPGRADE_VERSION),
        )?;
    }
    let manifest = qemu_tests::disk::manifest(&newer.join("strata-private.manifest.json"))?;
    let written: u64 = manifest.parts.iter().map(|p| p.size).sum();
    let strata = crate::bench_boot::strata_bin(&root)?;
    let work = root.join(format!("target/bench-upgrade/{}", qemu_tests::unique()));
    let _ = std::fs::remove_dir_all(&work);
    let load_before = load();

    let p = Prepared::new(
        &work,
        Layout {
            masters: 1,
            private: 1,
            public: 0,
        },
        &strata,
        &images,
    )?;
    let mut vms = Vec::new();
    for node in &p.nodes {
        vms.push(Vm::spawn(p.vm_config(node)?)?);
    }
    for vm in &mut vms {
        vm.wait_for("STRATA-READY", TIMEOUT)?;
    }
    p.wait_ready(&["master-1", "private-1"], Duration::from_secs(120))?;

    // 1. A plain reboot.
    let since = ready_since(&p)?;
    let asked = Instant::now();
    // The session ends with the node going down: its answer does not
    // matter, the node's next Ready does.
    let _ = p.strata(&["node", "exec", "private-1", "--", "systemctl", "reboot"]);
    wait_new_ready(&p, since)?;
    let reboot = asked.elapsed();
    eprintln!("xtask: private-1 rebooted in {:.1}s", reboot.as_secs_f64());

    // 2. The upgrade, as an operator runs it.
    let since = ready_since(&p)?;
    let asked = Instant::now();
    let out = Command::new(&strata)
        .args(["node", "upgrade"])
        .arg("--context")
        .arg(p.context())
        .arg("--endpoint")
        .arg(format!("127.0.0.1:{}", p.api_port))
        .args(["private-1", "--bundle"])
        .arg(&bundle)
        .args(["--wait", "--timeout", "15m"])
        .output()
        .context("cannot run strata node upgrade")?;
    let upgrade = asked.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("the upgrade failed: {stderr}");
    }
    wait_new_ready(&p, since)?;
    let ready = asked.elapsed();
    let show = p.strata(&["node", "show", "private-1"])?;
    let log = p
        .strata(&[
            "node",
            "exec",
            "private-1",
            "--",
            "journalctl",
            "-b",
            "-1",
            "-u",
            "strata-agent",
            "-o",
            "cat",
            "--grep",
            "upgrade: downloaded",
        ])
        .unwrap_or_default();
    let _ = std::fs::remove_dir_all(&work);
    drop(vms);

    println!(
        "\nbench upgrade (OVMF, TCG, 1 vCPU per VM; one private agent, a master serving the bundle)"
    );
    println!("load average before: {load_before}, after: {}", load());
    println!(
        "plain reboot, command to Ready again:          {:>7.1} s",
        reboot.as_secs_f64()
    );
    println!(
        "node upgrade --bundle, command to order end:   {:>7.1} s",
        upgrade.as_secs_f64()
    );
    println!(
        "node upgrade --bundle, command to Ready on new: {:>6.1} s",
        ready.as_secs_f64()
    );
    println!(
        "bytes written to the disk: {written} ({:.1} MiB: root, verity and UKI of {})",
        written as f64 / (1 << 20) as f64,
        manifest.version
    );
    println!(
        "download from the master (node's own measure): {}",
        log.lines()
            .last()
            .map_or("not found in the agent's log", str::trim)
    );
    println!("\nprogress as the CLI followed it:\n{stderr}");
    println!("{show}");
    Ok(())
}

/// private-1's `ready_since`.
fn ready_since(p: &Prepared) -> anyhow::Result<Option<u64>> {
    let nodes = p.node_rows()?;
    Ok(nodes
        .iter()
        .find(|r| r.name == "private-1" && r.state == "ready")
        .and_then(|r| r.ready_since))
}

/// Waits until private-1 is Ready since a later time than `since`.
fn wait_new_ready(p: &Prepared, since: Option<u64>) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(now)) = ready_since(p)
            && Some(now) != since
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("private-1 was not Ready again within {TIMEOUT:?}")
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
