//! `strata agent`: the node daemon. A short sequence of steps, each its own
//! function, so later steps (networking, cluster join) slot in between:
//!
//! 1. read the role baked into the image (`/etc/strata/role.toml`);
//! 2. find the node's user-data (`--user-data FILE`, else the `bootstrap`
//!    providers; a node without user-data still comes up and says so);
//! 3. count this boot under the state directory (`/var/lib/strata/boots`);
//! 4. read the node's facts (read-only root, dm-verity, booted slot);
//! 5. write the health file, print the ready marker on the console and tell
//!    systemd `READY=1`;
//! 6. stay up.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

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
}

/// Runs the daemon.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let role = read_role(&opts.role_file)?;
    let user_data = user_data(opts);
    let mut problems = Vec::new();
    let boots = match count_boot(&opts.state_dir) {
        Ok(n) => n,
        Err(e) => {
            problems.push(format!("{e:#}"));
            0
        }
    };
    let facts = health::facts(&health::Sources::default());
    let health = Health {
        healthy: problems.is_empty(),
        role: role.role.to_string(),
        boots,
        facts,
        user_data,
        problems,
    };
    report(opts, &health)?;
    if !opts.once {
        loop {
            std::thread::park();
        }
    }
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

/// Step 2: where the user-data came from, or why there is none.
fn user_data(opts: &Options) -> String {
    if let Some(file) = &opts.user_data {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => return format!("error: cannot read {}: {e}", file.display()),
        };
        return match configs::user_data::UserData::parse(&file.display().to_string(), &text) {
            Ok(u) => format!("file:{} (node {})", file.display(), u.name),
            Err(e) => format!("error: {e}"),
        };
    }
    match bootstrap::discover(&opts.state_dir) {
        Ok(d) => format!("{} (node {})", d.source, d.user_data.name),
        Err(bootstrap::Error::NotFound { .. }) => "none".to_string(),
        Err(e) => format!("error: {e}"),
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
    let tmp = state_dir.join(".boots.tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    writeln!(f, "{now}")
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    Ok(now)
}

/// Step 5: health file, console marker, systemd readiness.
fn report(opts: &Options, health: &Health) -> anyhow::Result<()> {
    health::write(&opts.run_dir, health)?;
    let mut line = health.marker();
    for p in &health.problems {
        line.push_str(&format!("\r\nSTRATA-PROBLEM {p}"));
    }
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
            eprintln!(
                "strata: cannot write the ready marker to {} or /dev/console",
                console.display()
            );
        }
    }
    let status = if health.healthy {
        "healthy"
    } else {
        "unhealthy"
    };
    crate::notify::notify(&format!("READY=1\nSTATUS={status}: {line}"))
        .context("cannot notify systemd")?;
    Ok(())
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
