//! `strata agent`: the node daemon. A short sequence of steps, each its own
//! function, so later steps (networking, cluster join) slot in between:
//!
//! 1. read the role baked into the image (`/etc/strata/role.toml`);
//! 2. find the node's user-data (`--user-data FILE`, else the `bootstrap`
//!    providers; a node without user-data still comes up and says so);
//! 3. count this boot under the state directory (`/var/lib/strata/boots`);
//! 4. apply the node's firewall ([`crate::firewall`]: the role file's
//!    ports, and on a master the API's and etcd's) before anything listens,
//!    read the node's facts (read-only root, dm-verity, booted slot);
//! 5. write the health file, print the ready marker on the console (with
//!    the boot times, [`crate::boot_times`]) and tell systemd `READY=1`;
//! 6. stay up; print `STRATA-BOOT` with systemd's boot split once
//!    `multi-user.target` is reached.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use configs::user_data::UserData;

use crate::health::{self, Health};

/// Where the daemon reads and writes.
#[derive(Debug, Clone)]
pub struct Options {
    pub role_file: PathBuf,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub user_data: Option<PathBuf>,
    /// Console device for the ready marker (`/dev/ttyS0`, falling back to
    /// `/dev/console`); stdout only when absent.
    pub console: Option<PathBuf>,
    /// Exit after reporting instead of staying up (for tests).
    pub once: bool,
    /// Write the user-data's network settings for systemd-networkd and
    /// reload it (inside an image).
    pub apply_network: bool,
}

/// Runs the daemon.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let role = read_role(&opts.role_file)?;
    let (user_data, found) = user_data(opts);
    let mut problems = Vec::new();
    let boots = match count_boot(&opts.state_dir) {
        Ok(n) => n,
        Err(e) => {
            problems.push(health::Problem::BootCounter(format!("{e:#}")));
            0
        }
    };
    // The firewall before anything listens: a node whose firewall does not
    // load is not healthy, so an image that brings such a ruleset is not
    // blessed and its slot falls back.
    let firewall = Arc::new(crate::firewall::at_boot(
        &role,
        found.as_ref(),
        &opts.run_dir,
    ));
    if let Err(e) = firewall.apply() {
        tracing::error!("cannot apply the node's firewall: {e:#}");
        problems.push(health::Problem::Firewall(format!("{e:#}")));
    }
    let facts = health::facts(&health::Sources::default());
    let mut health = Health {
        healthy: problems.is_empty(),
        role: role.role,
        boots,
        facts,
        user_data,
        problems,
        boot: None,
    };
    // Where the user-data came from, on the console: the QEMU tests read
    // it to tell a config disk's filesystem from fw_cfg.
    tracing::info!("user-data: {}", health.user_data);
    let Some(ud) = found else {
        // A node without user-data is a healthy image waiting for its
        // configuration: it says so and stays up. It is Ready before
        // multi-user.target, which waits for its `READY=1`.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        health.boot = Some(runtime.block_on(crate::boot_times::read()));
        report(opts, &health)?;
        if !opts.once {
            runtime.block_on(async {
                let mut printed = false;
                while !printed
                    && health
                        .boot
                        .is_some_and(|b| b.multi_user != crate::boot_times::Milestone::Unknown)
                {
                    printed = boot_line(opts, &mut health, printed).await?;
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                anyhow::Ok(())
            })?;
            loop {
                std::thread::park();
            }
        }
        return Ok(());
    };
    if ud.role != role.role {
        anyhow::bail!(
            "user-data is for a {} node but this image is a {} image",
            ud.role,
            role.role
        );
    }
    // Step 6: the network from the user-data, then the cluster. The boot is
    // healthy only once the node is Ready in the cluster.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    if opts.apply_network
        && let Err(e) = runtime.block_on(apply_network(&ud.network))
    {
        tracing::warn!("cannot apply the network settings: {e:#}");
    }
    health.healthy = false;
    health.problems.push(health::Problem::Joining);
    health::write(&opts.run_dir, &health)?;
    crate::notify::notify("READY=1\nSTATUS=joining the cluster")
        .context("cannot notify systemd")?;
    let cluster = runtime.spawn(crate::cluster::run(
        opts.state_dir.clone(),
        ud,
        Some(firewall),
    ));
    runtime.block_on(async {
        let mut reported = false;
        let mut boot_printed = false;
        loop {
            if cluster.is_finished() {
                let result = cluster.await;
                let why = match result {
                    Ok(Ok(())) => "the cluster membership ended".to_string(),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(e) => format!("the cluster task failed: {e}"),
                };
                health.healthy = false;
                health.problems = vec![health::Problem::Ended(why.clone())];
                let _ = health::write(&opts.run_dir, &health);
                anyhow::bail!("{why}");
            }
            let (phase, message) = crate::cluster::node::read_phase(&opts.state_dir);
            let ready = phase == crate::cluster::node::Phase::Ready;
            if ready != health.healthy || !reported {
                health.problems.retain(|p| {
                    !matches!(
                        p,
                        health::Problem::Joining | health::Problem::Cluster { .. }
                    )
                });
                if !ready {
                    health.problems.push(health::Problem::Cluster {
                        phase: phase.to_string(),
                        message: message.clone(),
                    });
                }
                health.healthy = health.problems.is_empty();
                if health.healthy {
                    if health.boot.is_none() {
                        health.boot = Some(crate::boot_times::read().await);
                    }
                    report(opts, &health)?;
                    reported = true;
                } else {
                    health::write(&opts.run_dir, &health)?;
                }
            }
            boot_printed = boot_line(opts, &mut health, boot_printed).await?;
            if opts.once && health.healthy {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
}

/// Writes the node's `.network` file for systemd-networkd and asks it to
/// reload (only inside an image, where networkd runs).
async fn apply_network(network: &configs::user_data::Network) -> anyhow::Result<()> {
    let plan = bootstrap::apply_network(network);
    if let Some(dir) = plan.path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&plan.path, &plan.contents)
        .with_context(|| format!("cannot write {}", plan.path.display()))?;
    crate::systemd::reload_networkd().await?;
    Ok(())
}

/// Step 1: the role defaults of the image.
fn read_role(path: &Path) -> anyhow::Result<configs::role::RoleConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the role file {}", path.display()))?;
    Ok(configs::role::RoleConfig::parse(
        &path.display().to_string(),
        &text,
    )?)
}

/// Step 2: where the user-data came from (or why there is none), and the
/// user-data itself when there is one.
fn user_data(opts: &Options) -> (String, Option<UserData>) {
    if let Some(file) = &opts.user_data {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => return (format!("error: cannot read {}: {e}", file.display()), None),
        };
        return match UserData::parse(&file.display().to_string(), &text) {
            Ok(u) => (
                format!("file:{} (node {})", file.display(), u.name),
                Some(u),
            ),
            Err(e) => (format!("error: {e}"), None),
        };
    }
    match bootstrap::discover(&opts.state_dir) {
        Ok(d) => (
            format!("{} (node {})", d.source, d.user_data.name),
            Some(d.user_data),
        ),
        Err(bootstrap::Error::NotFound { .. }) => ("none".to_string(), None),
        Err(e) => (format!("error: {e}"), None),
    }
}

/// Step 3: counts this boot; the counter lives on the state partition.
pub fn count_boot(state_dir: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create {}", state_dir.display()))?;
    let path = state_dir.join("boots");
    let before = match std::fs::read_to_string(&path) {
        Ok(t) => t
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{}: not a boot count", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let now = before + 1;
    crate::state::write_atomic(&path, format!("{now}\n").as_bytes(), None)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(now)
}

/// Step 6: prints the `STRATA-BOOT` line once `multi-user.target` is
/// reached, asking systemd again while it is pending (and keeping the
/// answer in the health file); returns whether the line has been printed.
async fn boot_line(opts: &Options, health: &mut Health, printed: bool) -> anyhow::Result<bool> {
    let Some(boot) = health.boot.as_mut().filter(|_| !printed) else {
        return Ok(printed);
    };
    let reached = boot.refresh().await;
    let line = boot.boot_line();
    if reached {
        health::write(&opts.run_dir, health)?;
    }
    match line {
        Some(line) => {
            console(opts, &line);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Step 5: health file, console marker, systemd readiness.
fn report(opts: &Options, health: &Health) -> anyhow::Result<()> {
    health::write(&opts.run_dir, health)?;
    let mut line = health.marker();
    for p in &health.problems {
        line.push_str(&format!("\r\nSTRATA-PROBLEM {p}"));
    }
    console(opts, &line);
    let status = if health.healthy {
        "healthy"
    } else {
        "unhealthy"
    };
    crate::notify::notify(&format!("READY=1\nSTATUS={status}: {line}"))
        .context("cannot notify systemd")?;
    Ok(())
}

/// Prints `line` on stdout and on the console device.
fn console(opts: &Options, line: &str) {
    println!("{line}");
    if let Some(console) = &opts.console {
        let written = [console.as_path(), Path::new("/dev/console")]
            .iter()
            .any(|dev| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(dev)
                    .and_then(|mut f| f.write_all(format!("\r\n{line}\r\n").as_bytes()))
                    .is_ok()
            });
        if !written {
            tracing::warn!(
                console = %console.display(),
                "cannot write a console line to {} or /dev/console",
                console.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boots_are_counted_across_runs() {
        let dir = std::env::temp_dir().join(format!("strata-boots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(count_boot(&dir).unwrap(), 1);
        assert_eq!(count_boot(&dir).unwrap(), 2);
        std::fs::write(dir.join("boots"), "many\n").unwrap();
        let e = count_boot(&dir).unwrap_err();
        assert!(
            format!("{e:#}").ends_with("boots: not a boot count: invalid digit found in string"),
            "{e:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
