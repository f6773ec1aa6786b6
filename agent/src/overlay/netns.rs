//! Named network namespaces, as `ip netns` keeps them: a file under
//! `/var/run/netns/NAME` bind-mounted over a namespace. Tasks join theirs
//! through the OCI spec's network namespace `path`. Entering a namespace is
//! per thread, so code that must run inside one runs on a thread of its own.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/var/run/netns";

/// The path of the named namespace `name`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Creates the named namespace `name` (like `ip netns add`; its loopback
/// is down until [`super::netlink::attach_task`] or the caller brings it
/// up). Returns its path.
pub fn create(name: &str) -> anyhow::Result<PathBuf> {
    let target = path(name);
    std::fs::create_dir_all(NETNS_DIR).with_context(|| format!("cannot create {NETNS_DIR}"))?;
    File::create(&target).with_context(|| format!("cannot create {}", target.display()))?;
    let t = target.clone();
    let made = std::thread::scope(|s| {
        s.spawn(move || -> anyhow::Result<()> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)
                .context("cannot unshare the network namespace")?;
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &t,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("cannot bind-mount the new namespace on {}", t.display()))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    });
    if let Err(e) = made {
        let _ = std::fs::remove_file(&target);
        return Err(e);
    }
    Ok(target)
}

/// Deletes the named namespace `name` (like `ip netns delete`); the kernel
/// frees it once no process or socket uses it. Missing is not an error.
pub fn delete(name: &str) -> anyhow::Result<()> {
    let target = path(name);
    if !target.exists() {
        return Ok(());
    }
    match nix::mount::umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(e).with_context(|| format!("cannot unmount {}", target.display())),
    }
    std::fs::remove_file(&target).with_context(|| format!("cannot remove {}", target.display()))
}

/// Moves the calling thread into the namespace at `path`. Only call this on
/// a thread of your own (see [`run_in`]).
pub fn enter(path: &Path) -> anyhow::Result<()> {
    let f = File::open(path)
        .with_context(|| format!("cannot open network namespace {}", path.display()))?;
    nix::sched::setns(&f, CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter network namespace {}", path.display()))
}

/// Runs `f` on a new thread inside the namespace at `path` (or in the
/// caller's namespace when `None`) and returns its result.
pub fn run_in<T: Send>(
    path: Option<&Path>,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            if let Some(p) = path {
                enter(p)?;
            }
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread inside network namespace panicked"))?
    })
}

/// Spawns a long-lived thread inside the namespace at `path` (sockets it
/// opens stay in that namespace).
pub fn spawn_in<T: Send + 'static>(
    path: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<anyhow::Result<T>> {
    std::thread::spawn(move || {
        enter(&path)?;
        Ok(f())
    })
}
