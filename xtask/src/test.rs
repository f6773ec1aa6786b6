//! `cargo xtask test`: every test tier, from fast to real, with what each
//! needs installed first. Each tier prints what it ran; under `CI=true` a tier
//! whose prerequisites are missing fails instead of being skipped.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::{deps, project_root, sh, under_ci};

/// The test tiers, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Tier {
    /// `cargo fmt --check`.
    Fmt,
    /// `cargo clippy --all-targets -D warnings`.
    Clippy,
    /// Pure unit tests and the tidy checks.
    Unit,
    /// Integration tests as root on this host: real etcd, containers, VXLAN.
    Host,
    /// Images built by the xtask, booted under QEMU.
    Qemu,
}

impl Tier {
    const ALL: [Tier; 5] = [Tier::Fmt, Tier::Clippy, Tier::Unit, Tier::Host, Tier::Qemu];

    fn name(self) -> &'static str {
        match self {
            Tier::Fmt => "fmt",
            Tier::Clippy => "clippy",
            Tier::Unit => "unit",
            Tier::Host => "host",
            Tier::Qemu => "qemu",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only these tiers (repeatable); all tiers by default.
    #[arg(long = "tier", value_enum)]
    tiers: Vec<Tier>,
    /// Do not install missing host packages (fail or skip instead).
    #[arg(long)]
    no_install: bool,
}

enum Outcome {
    Passed,
    Skipped(String),
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let tiers: Vec<Tier> = if args.tiers.is_empty() {
        Tier::ALL.to_vec()
    } else {
        args.tiers.clone()
    };
    let root = project_root();
    if !args.no_install {
        install(&tiers)?;
    }
    let mut passed = 0;
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for tier in tiers {
        let start = Instant::now();
        eprintln!("\n=== tier {}", tier.name());
        match run_tier(tier, &root) {
            Ok(Outcome::Passed) => {
                passed += 1;
                eprintln!(
                    "=== tier {}: passed in {:.0}s",
                    tier.name(),
                    start.elapsed().as_secs_f64()
                );
            }
            Ok(Outcome::Skipped(why)) => {
                eprintln!("=== tier {}: NOT RUN: {why}", tier.name());
                skipped.push(tier.name());
            }
            Err(err) => {
                eprintln!(
                    "=== tier {}: FAILED in {:.0}s: {err:#}",
                    tier.name(),
                    start.elapsed().as_secs_f64()
                );
                failed.push(tier.name());
            }
        }
    }
    println!(
        "tiers: {passed} passed, {} failed, {} skipped",
        failed.len(),
        skipped.len()
    );
    if !failed.is_empty() {
        bail!("tier(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Installs what the chosen tiers need, or explains why it cannot.
fn install(tiers: &[Tier]) -> anyhow::Result<()> {
    let mut packages: Vec<&str> = deps::BUILD_PACKAGES.to_vec();
    let mut backports: Vec<&str> = Vec::new();
    if tiers.contains(&Tier::Host) {
        packages.extend(deps::HOST_TEST_PACKAGES);
        packages.extend(deps::RUNTIME_PACKAGES);
    }
    if tiers.contains(&Tier::Qemu) {
        packages.extend(deps::QEMU_TEST_PACKAGES);
        packages.extend(deps::QEMU_REGISTRY_PACKAGES);
        packages.extend(deps::IMAGE_HOST_PACKAGES);
        backports.extend(deps::BACKPORTS_PACKAGES);
    }
    packages.sort_unstable();
    packages.dedup();
    match deps::ensure("cargo xtask test", &packages, &backports) {
        Ok(()) => Ok(()),
        // Outside CI a developer without root still gets the tiers that can run.
        Err(err) if !under_ci() && !sh::is_root() => {
            eprintln!("xtask: warning: {err:#}");
            Ok(())
        }
        Err(err) => Err(err),
    }
}

fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()));
    cmd.current_dir(root);
    cmd
}

fn run_tier(tier: Tier, root: &Path) -> anyhow::Result<Outcome> {
    match tier {
        Tier::Fmt => sh::run(cargo(root).args(["fmt", "--all", "--check"]))?,
        Tier::Clippy => sh::run(cargo(root).args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?,
        Tier::Unit => {
            sh::run(cargo(root).args([
                "test",
                "--workspace",
                "--exclude",
                "qemu-tests",
                "--lib",
                "--bins",
            ]))?;
            sh::run(cargo(root).args(["test", "-p", "xtask", "--test", "tidy"]))?;
        }
        Tier::Host => {
            if let Some(why) = root_required() {
                return Ok(Outcome::Skipped(why));
            }
            let tests = test_files(&root.join("agent/tests"), "host_")?;
            if tests.is_empty() {
                bail!("no host tests found under agent/tests/host_*.rs");
            }
            let mut cmd = cargo(root);
            cmd.args(["test", "-p", "agent"]);
            for t in &tests {
                cmd.args(["--test", t]);
            }
            cmd.args(["--", "--test-threads=1"]);
            sh::run(&mut cmd)?;
        }
        Tier::Qemu => {
            if let Some(why) = root_required() {
                return Ok(Outcome::Skipped(why));
            }
            let exe = std::env::current_exe().context("cannot find the xtask executable")?;
            sh::run(
                Command::new(&exe)
                    .current_dir(root)
                    .args(["image", "--role", "all"]),
            )?;
            // The bare-metal kernel, booted by one test.
            sh::run(
                Command::new(&exe)
                    .current_dir(root)
                    .args(["image", "--role", "private", "--kernel", "generic", "--out"])
                    .arg(qemu_tests::env::generic_images_dir()),
            )?;
            sh::run(cargo(root).args([
                "test",
                "-p",
                "qemu-tests",
                "--tests",
                "--",
                "--test-threads=1",
            ]))?;
        }
    }
    Ok(Outcome::Passed)
}

/// Why a tier that needs root cannot run here, or None. Under CI a missing
/// prerequisite is an error, never a skip.
fn root_required() -> Option<String> {
    if sh::is_root() {
        return None;
    }
    if under_ci() {
        // Run anyway: the tests' own environment checks fail loudly under CI.
        return None;
    }
    Some("needs root (network namespaces, loop devices, cgroups)".to_string())
}

/// Names of the test targets `dir/<prefix>*.rs`.
fn test_files(dir: &Path, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".rs")
            && stem.starts_with(prefix)
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}
