//! The fresh-machine tier: proves that what `deps` declares for the agent
//! build is enough on a new machine, by building the xtask and the agent in
//! a bookworm tree that holds only what such a machine has.
//!
//! The tree is made with `mmdebstrap --variant=buildd` plus [`FRESH_MACHINE`]
//! (cached by that list under `target/fresh/`, copied anew for every run).
//! Inside it, in a private mount namespace so that nothing stays mounted,
//! with the host's Rust toolchain and crate cache bind-mounted at their own
//! paths and the workspace read-only at `/src`:
//!
//! 1. `cargo xtask deps --install agent-build` builds the xtask and installs
//!    the agent build's packages exactly as `cargo xtask image` would (apt,
//!    `--no-install-recommends`);
//! 2. `cargo build -p agent --bin strata` builds and links the agent.
//!
//! A package missing from [`crate::deps::Step::AgentBuild`] fails step 2.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use crate::{deps, sh};

/// What a new machine of the project's kind has besides `buildd`'s
/// essentials and build-essential (`shared/MACHINE-NOTES.md`, "A fresh
/// machine"): the Rust toolchain is mounted in from the host.
pub const FRESH_MACHINE: &[&str] = &[
    "pkg-config",
    "libssl-dev",
    "git",
    "python3",
    "ca-certificates",
];

/// Runs the tier.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    // The tree builds offline from the host's crate cache.
    sh::run(
        Command::new(&cargo)
            .current_dir(root)
            .args(["fetch", "--locked"]),
    )?;
    let base = base_tree(root)?;
    let work = root.join("target/fresh/work");
    remove_tree(&work)?;
    sh::run(Command::new("cp").arg("-a").arg(&base).arg(&work))?;
    let result = build_inside(root, &work);
    // Keep the work tree of a failed run to look at; it goes next run.
    if result.is_ok() {
        remove_tree(&work)?;
    }
    result
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// The Rust toolchain's directories: `CARGO_HOME` and `RUSTUP_HOME`.
fn toolchain_dirs() -> anyhow::Result<(PathBuf, PathBuf)> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"));
    let rustup_home = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".rustup"));
    for dir in [&cargo_home, &rustup_home] {
        if !dir.is_dir() {
            bail!(
                "the fresh tier mounts the host's Rust toolchain, and {} does not exist (install Rust with rustup)",
                dir.display()
            );
        }
    }
    Ok((cargo_home.canonicalize()?, rustup_home.canonicalize()?))
}

/// The cached `buildd` tree with [`FRESH_MACHINE`], made when missing.
fn base_tree(root: &Path) -> anyhow::Result<PathBuf> {
    let key = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(FRESH_MACHINE.join(",").as_bytes());
        hex::encode(&h.finalize()[..6])
    };
    let dir = root.join("target/fresh");
    let base = dir.join(format!("base-{key}"));
    if base.join("etc/debian_version").exists() && dir.join(format!("base-{key}.ok")).exists() {
        return Ok(base);
    }
    remove_tree(&base)?;
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mirror =
        deps::debian_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".to_string());
    sh::run(
        Command::new("mmdebstrap")
            .args(["--variant=buildd", "--mode=root", "--quiet"])
            .arg(format!("--include={}", FRESH_MACHINE.join(",")))
            .arg("bookworm")
            .arg(&base)
            .arg(&mirror),
    )?;
    std::fs::write(dir.join(format!("base-{key}.ok")), "")?;
    Ok(base)
}

fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}

/// Builds the xtask and the agent inside `tree`.
fn build_inside(root: &Path, tree: &Path) -> anyhow::Result<()> {
    let (cargo_home, rustup_home) = toolchain_dirs()?;
    std::fs::copy("/etc/resolv.conf", tree.join("etc/resolv.conf"))
        .context("cannot give the tree the host's resolv.conf")?;
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN")
        .map(|t| format!("RUSTUP_TOOLCHAIN={t}"))
        .unwrap_or_default();
    let inner = "set -eu\n\
        cd /src\n\
        cargo xtask deps --install agent-build\n\
        cargo build --locked -p agent --bin strata\n\
        test -x /build/target/debug/strata\n";
    // Mounts made in the private namespace go with it, even on failure.
    let script = format!(
        "set -eu\n\
         T={tree}\n\
         mount -t proc proc \"$T/proc\"\n\
         mount --rbind /sys \"$T/sys\"\n\
         mount --rbind /dev \"$T/dev\"\n\
         for d in {cargo_home} {rustup_home}; do mkdir -p \"$T$d\"; mount --bind \"$d\" \"$T$d\"; done\n\
         mount -o remount,bind,ro \"$T{rustup_home}\"\n\
         mkdir -p \"$T/src\" \"$T/build\"\n\
         mount --bind {root} \"$T/src\"\n\
         mount -o remount,bind,ro \"$T/src\"\n\
         exec chroot \"$T\" /usr/bin/env -i HOME=/root \
           PATH={cargo_home}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
           CARGO_HOME={cargo_home} RUSTUP_HOME={rustup_home} {toolchain} \
           CARGO_TARGET_DIR=/build/target CARGO_NET_OFFLINE=true CARGO_TERM_COLOR=never \
           CARGO_PROFILE_DEV_DEBUG=0 CI='{ci}' \
           /bin/sh -c '{inner}'\n",
        tree = tree.display(),
        cargo_home = cargo_home.display(),
        rustup_home = rustup_home.display(),
        root = root.display(),
        ci = std::env::var("CI").unwrap_or_default(),
    );
    sh::run(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(script),
    )
    .context(
        "building the agent in a fresh bookworm tree failed: a package it needs is missing from \
         xtask/src/deps.rs (Step::AgentBuild), see the output above",
    )
}
