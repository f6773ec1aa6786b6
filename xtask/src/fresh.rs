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
//! (The host's cargo home is the lower layer of an overlay there, so the
//! build inside writes nothing into it.)
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
    // The outer script runs in a private mount namespace (its mounts go
    // with it, even on failure) and takes every path as a parameter, never
    // pasted into its text. The host's cargo home is the lower layer of an
    // overlay, so the build inside writes only into the tree; the rustup
    // toolchain and the workspace are read-only.
    const OUTER: &str = r#"set -eu
T=$1 ROOT=$2 CH=$3 RH=$4
mount -t proc proc "$T/proc"
mount --rbind /sys "$T/sys"
mount --rbind /dev "$T/dev"
mkdir -p "$T$CH" "$T$RH" "$T/src" "$T/build/cargo-upper" "$T/build/cargo-work"
mount -t overlay overlay -o "lowerdir=$CH,upperdir=$T/build/cargo-upper,workdir=$T/build/cargo-work" "$T$CH"
mount --bind "$RH" "$T$RH"
mount -o remount,bind,ro "$T$RH"
mount --bind "$ROOT" "$T/src"
mount -o remount,bind,ro "$T/src"
exec chroot "$T" /usr/bin/env -i HOME=/root PATH="$CH/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  CARGO_HOME="$CH" RUSTUP_HOME="$RH" RUSTUP_TOOLCHAIN="${RUSTUP_TOOLCHAIN:-}" \
  CARGO_TARGET_DIR=/build/target CARGO_NET_OFFLINE=true CARGO_TERM_COLOR=never CARGO_PROFILE_DEV_DEBUG=0 \
  CI="${CI:-}" STRATA_XTASK_RUN="${STRATA_XTASK_RUN:-}" STRATA_HOST_PREFIX="${STRATA_HOST_PREFIX:-}" \
  /bin/sh -c "$INNER"
"#;
    const INNER: &str = r#"set -eu
[ -n "$RUSTUP_TOOLCHAIN" ] || unset RUSTUP_TOOLCHAIN
cd /src
cargo xtask deps --install agent-build
cargo build --locked -p agent --bin strata
test -x /build/target/debug/strata
"#;
    sh::run(
        Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                OUTER,
                "sh",
            ])
            .arg(tree)
            .arg(root)
            .arg(&cargo_home)
            .arg(&rustup_home)
            .env("INNER", INNER),
    )
    .context(
        "building the agent in a fresh bookworm tree failed: a package it needs is missing from \
         xtask/src/deps.rs (Step::AgentBuild), see the output above",
    )
}
