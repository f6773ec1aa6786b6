//! `cargo xtask bench image`: cold build of all three roles (empty image cache: mmdebstrap
//! downloads and installs), warm rebuilds of all three after agent-only
//! changes with the agent's release build in the figure (a real edit of a
//! function in the agent library, undoing it, and touching the file without
//! a change), the time of every step, root erofs size per role, qcow2 size,
//! and the time from QEMU start to the agent's ready marker under OVMF and
//! TCG.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use configs::Role;
use qemu_tests::{Vm, VmConfig};

use crate::image::{self, Kernel, RoleArg};
use crate::{deps, project_root};

/// Arguments of `cargo xtask bench image`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Keep the image cache (skip the cold build).
    #[arg(long)]
    pub warm_only: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    bench_image(args.warm_only)
}

fn bench_image(warm_only: bool) -> anyhow::Result<()> {
    let root = project_root();
    let out = root.join("target/bench-images");
    let build = image::Args {
        role: RoleArg::All,
        out: Some(out.clone()),
        kernel: Kernel::Cloud,
        signing_key: None,
        disk_size_mib: ::image::plan::DEFAULT_DISK_SIZE / ::image::plan::MIB,
        version: None,
    };
    let mut figures = Vec::new();
    let mut steps = Vec::new();
    if !warm_only {
        let cache = root.join("target/image-cache");
        if cache.exists() {
            std::fs::remove_dir_all(&cache)
                .with_context(|| format!("cannot remove {}", cache.display()))?;
        }
        let t = Instant::now();
        let (built, shared) = image::build_timed(&build)?;
        figures.push(format!(
            "cold build, 3 roles (empty cache, downloads included): {:.1} s {}",
            secs(t.elapsed()),
            load()
        ));
        steps.push(format!("cold {shared}"));
        steps.extend(built.iter().map(|b| format!("cold {}", b.steps)));
    }
    let daemon = root.join("agent/src/daemon.rs");
    let text = std::fs::read_to_string(&daemon)
        .with_context(|| format!("cannot read {}", daemon.display()))?;
    // Three agent-only changes, each followed by a warm rebuild: an edit of
    // a message in a function of the daemon; undoing it, another change
    // that alters code; touching the file, which changes no code (cargo
    // still rebuilds the agent, incrementally, and every role is assembled
    // again). The file is put back afterwards, even when a build fails.
    let edited = text.replacen(EDIT_FROM, EDIT_TO, 1);
    if edited == text {
        bail!(
            "{}: `{EDIT_FROM}` not found: point the bench's EDIT_FROM at a string literal in a function of the daemon",
            daemon.display()
        );
    }
    let _restore = Restore {
        path: &daemon,
        text: &text,
    };
    let mut built = Vec::new();
    for (content, what, tag) in [
        (&edited, "after editing a function of the agent", "edit"),
        (
            &text,
            "after undoing the edit (another change of the agent's code)",
            "undo",
        ),
        (
            &text,
            "after touching daemon.rs without changing it",
            "touch",
        ),
    ] {
        std::fs::write(&daemon, content)
            .with_context(|| format!("cannot write {}", daemon.display()))?;
        let t = Instant::now();
        let (this, shared) = image::build_timed(&build)?;
        figures.push(format!(
            "warm rebuild, 3 roles, {what} (agent release build included): {:.1} s {}",
            secs(t.elapsed()),
            load()
        ));
        steps.push(format!("{tag} {shared}"));
        steps.extend(this.iter().map(|b| format!("{tag} {}", b.steps)));
        built = this;
    }
    let t = Instant::now();
    image::build(&image::Args {
        role: RoleArg::One(Role::Private),
        ..build.clone()
    })?;
    figures.push(format!(
        "warm rebuild, 1 role (private), nothing changed: {:.1} s {}",
        secs(t.elapsed()),
        load()
    ));
    for b in &built {
        let qcow2 = std::fs::metadata(&b.qcow2)?.len();
        figures.push(format!(
            "{}: root erofs {:.1} MB, qcow2 {:.1} MB, update bundle {:.1} MB",
            b.role,
            b.root_size as f64 / 1e6,
            qcow2 as f64 / 1e6,
            std::fs::metadata(&b.update)?.len() as f64 / 1e6
        ));
    }
    deps::ensure("cargo xtask bench image", deps::BOOT)?;
    let dir = root.join("target/bench-qemu");
    std::fs::create_dir_all(&dir)?;
    for b in &built {
        let secs = boot_time(&b.qcow2, &dir, b.role)?;
        figures.push(format!(
            "{}: QEMU start to ready marker (OVMF, TCG, 1 vCPU): {secs:.1} s",
            b.role
        ));
    }
    println!("\nbench image:");
    for f in &figures {
        println!("  {f}");
    }
    println!("steps (wall clock; roles run at the same time):");
    for s in &steps {
        println!("  {s}");
    }
    Ok(())
}

/// The edit of the bench's agent change: an error message in the daemon.
const EDIT_FROM: &str = "user-data is for a {} node but this image is a {} image";
const EDIT_TO: &str = "user-data is for a {} node, but this image is a {} image";

/// Puts a file's text back when dropped.
struct Restore<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, self.text) {
            eprintln!(
                "xtask: cannot restore {}: {e} (check it out again with git)",
                self.path.display()
            );
        }
    }
}

/// The load average, as `(load 1.23)`: other work on the machine slows
/// every figure.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(|s| format!("(load {s})")))
        .unwrap_or_default()
}

fn boot_time(image: &Path, dir: &Path, role: Role) -> anyhow::Result<f64> {
    let disk = dir.join(format!("{role}.qcow2"));
    qemu_tests::overlay(image, &disk, 0)?;
    let mut vm = Vm::spawn(VmConfig::new(role.as_str(), &disk, dir))?;
    vm.wait_for("STRATA-READY", Duration::from_secs(300))?;
    let t = secs(vm.uptime());
    drop(vm);
    let _ = std::fs::remove_file(&disk);
    Ok(t)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[cfg(test)]
mod tests {
    /// The bench's agent edit still finds its string.
    #[test]
    fn the_agent_edit_applies() {
        let daemon = crate::project_root().join("agent/src/daemon.rs");
        let text = std::fs::read_to_string(&daemon).expect("daemon.rs");
        assert!(
            text.contains(super::EDIT_FROM),
            "{} no longer holds `{}`: point EDIT_FROM at another message",
            daemon.display(),
            super::EDIT_FROM
        );
    }
}
