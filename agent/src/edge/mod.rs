//! The edge proxy of a public agent: the only module that speaks to
//! HAProxy. It follows the services of the node watch, plans the edge
//! ([`control::edge::plan`]) and brings HAProxy to the plan:
//! - instance churn (an instance started, stopped, turned healthy or not)
//!   goes over HAProxy's runtime API ([`runtime`], its admin socket):
//!   `set server ... addr`/`state`, no reload, no connection touched;
//! - a change of structure (a route, a TCP port, a backend, more server
//!   slots) writes the configuration again ([`haproxy::render`]), checks it
//!   with `haproxy -c` and reloads the master process (SIGUSR2): the new
//!   worker takes the listening sockets over, the old one finishes its
//!   connections (`hard-stop-after 15m`).
//!
//! HAProxy (Debian's package, in the public image) runs as the agent's
//! child in master-worker mode, in the agent's network namespace, and
//! stops with it. After each change the node's firewall opens exactly the
//! ports the edge listens on ([`crate::firewall::NodeFirewall::set_edge`]).
//! Every [`RESYNC`] the plan is applied again from scratch if HAProxy's
//! servers drifted from it (a worker restarted, a command lost).

pub mod haproxy;
pub mod runtime;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::edge::{EdgeChange, EdgePlan};
use control::service::Service;

use crate::firewall::NodeFirewall;

/// HAProxy's program.
pub const HAPROXY: &str = "haproxy";
/// How long a fresh worker may take to answer on its admin socket.
const WORKER_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the plan is checked against HAProxy without a change.
pub const RESYNC: Duration = Duration::from_secs(30);

/// Where the edge keeps its configuration and sockets.
#[derive(Debug, Clone)]
pub struct EdgePaths {
    dir: PathBuf,
}

impl EdgePaths {
    pub fn new(dir: PathBuf) -> EdgePaths {
        EdgePaths { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.join("haproxy.cfg")
    }

    /// The admin socket of the current worker (the runtime API).
    pub fn admin(&self) -> PathBuf {
        self.dir.join("admin.sock")
    }
}

/// What went wrong with the edge proxy.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("cannot write the edge's configuration {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {HAPROXY} (is Debian's haproxy package installed?): {0}")]
    Spawn(std::io::Error),
    #[error(
        "{HAPROXY} refuses the configuration the agent rendered, kept in {path}: {output} (a bug of the agent: report it with that file)"
    )]
    Refused { path: PathBuf, output: String },
    #[error("{HAPROXY} exited ({0}): its own messages are in the agent's log")]
    Exited(std::process::ExitStatus),
    #[error("cannot signal {HAPROXY}'s master process to reload: {0}")]
    Signal(nix::Error),
    #[error(
        "no {HAPROXY} worker answered on {path} within {WORKER_TIMEOUT:?} ({last}): its own messages are in the agent's log"
    )]
    NoWorker { path: PathBuf, last: String },
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
}

/// The running proxy and the plan it serves.
pub struct Edge {
    paths: EdgePaths,
    child: Option<Child>,
    /// The worker that serves `applied`.
    worker: Option<u32>,
    applied: Option<EdgePlan>,
    /// The next [`Edge::apply`] reloads (HAProxy drifted from `applied`).
    reload_next: bool,
}

/// What [`Edge::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The plan was in force already.
    Nothing,
    /// Started HAProxy.
    Started,
    /// Sent this many runtime commands.
    Runtime(usize),
    /// Reloaded with a new configuration.
    Reloaded,
}

impl Edge {
    pub fn new(paths: EdgePaths) -> Edge {
        Edge {
            paths,
            child: None,
            worker: None,
            applied: None,
            reload_next: false,
        }
    }

    /// The plan in force, if any.
    pub fn applied(&self) -> Option<&EdgePlan> {
        self.applied.as_ref()
    }

    /// Brings HAProxy to `next`: starts it when it does not run, sends
    /// runtime commands when only servers moved, else reloads. Blocks.
    pub fn apply(&mut self, next: &EdgePlan) -> Result<Applied, EdgeError> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            tracing::warn!("edge: {HAPROXY} exited ({status}); starting it again");
            self.child = None;
            self.applied = None;
        }
        if self.child.is_none() {
            self.write(next)?;
            self.start()?;
            self.applied = Some(next.clone());
            return Ok(Applied::Started);
        }
        if std::mem::take(&mut self.reload_next) {
            return self.reload(next);
        }
        let applied = self.applied.clone().unwrap_or_default();
        match control::edge::changes(&applied, next) {
            EdgeChange::None => Ok(Applied::Nothing),
            EdgeChange::Runtime(cmds) => {
                let admin = self.paths.admin();
                for cmd in &cmds {
                    if let Err(e) = runtime::send(&admin, cmd) {
                        tracing::warn!("edge: {e}; reloading instead");
                        return self.reload(next);
                    }
                }
                self.applied = Some(next.clone());
                Ok(Applied::Runtime(cmds.len()))
            }
            EdgeChange::Reload => self.reload(next),
        }
    }

    /// Whether HAProxy's servers still match the plan in force (a worker
    /// that restarted or a command that was lost makes them drift).
    pub fn drifted(&self) -> bool {
        let Some(plan) = &self.applied else {
            return false;
        };
        match runtime::servers(&self.paths.admin()) {
            Ok(found) => found != runtime::expected(plan),
            Err(_) => true,
        }
    }

    /// Makes the next [`Edge::apply`] reload, whatever changed (servers
    /// keep their slots).
    pub fn reload_next(&mut self) {
        self.reload_next = true;
    }

    /// Writes the configuration of `plan` once `haproxy -c` accepts it.
    fn write(&self, plan: &EdgePlan) -> Result<(), EdgeError> {
        let path = self.paths.config();
        let tmp = path.with_extension("cfg.new");
        let write_err = |source| EdgeError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(self.paths.dir()).map_err(write_err)?;
        std::fs::write(&tmp, haproxy::render(plan, &self.paths)).map_err(write_err)?;
        let check = Command::new(HAPROXY)
            .args(["-c", "-q", "-f"])
            .arg(&tmp)
            .stdin(Stdio::null())
            .output()
            .map_err(EdgeError::Spawn)?;
        if !check.status.success() {
            let output = [&check.stderr, &check.stdout]
                .iter()
                .map(|o| String::from_utf8_lossy(o).trim().to_string())
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(EdgeError::Refused { path: tmp, output });
        }
        std::fs::rename(&tmp, &path).map_err(write_err)
    }

    fn start(&mut self) -> Result<(), EdgeError> {
        let mut cmd = Command::new(HAPROXY);
        cmd.arg("-W")
            .arg("-f")
            .arg(self.paths.config())
            .stdin(Stdio::null());
        // SAFETY: between fork and exec the closure calls only prctl(2),
        // which is async-signal-safe, and allocates nothing.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                // HAProxy stops with the agent that started it.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = std::fs::remove_file(self.paths.admin());
        let child = cmd.spawn().map_err(EdgeError::Spawn)?;
        self.child = Some(child);
        self.worker = Some(self.wait_worker(None)?);
        Ok(())
    }

    fn reload(&mut self, next: &EdgePlan) -> Result<Applied, EdgeError> {
        self.write(next)?;
        let Some(child) = &self.child else {
            self.start()?;
            self.applied = Some(next.clone());
            return Ok(Applied::Started);
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR2)
            .map_err(EdgeError::Signal)?;
        self.worker = Some(self.wait_worker(self.worker)?);
        self.applied = Some(next.clone());
        Ok(Applied::Reloaded)
    }

    /// Waits until a worker other than `old` answers on the admin socket;
    /// returns its pid.
    fn wait_worker(&mut self, old: Option<u32>) -> Result<u32, EdgeError> {
        let admin = self.paths.admin();
        let deadline = Instant::now() + WORKER_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(EdgeError::Exited(status));
            }
            let last = match runtime::worker_pid(&admin) {
                Ok(pid) if Some(pid) != old => return Ok(pid),
                Ok(pid) => format!("the old worker {pid} still answers"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(EdgeError::NoWorker { path: admin, last });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// Keeps the node's edge proxy in line with the services `rx` holds,
/// serving HTTP on `http_port`, and the firewall's edge ports with it, on
/// a thread of its own: HAProxy is that thread's child and gets SIGTERM
/// when it ends (`PR_SET_PDEATHSIG` follows the thread that forked), which
/// is when the sender is dropped or the agent exits. Failures are logged
/// and tried again with backoff. Call from within a tokio runtime.
pub fn spawn(
    paths: EdgePaths,
    http_port: u16,
    mut rx: tokio::sync::watch::Receiver<Vec<Service>>,
    firewall: Option<Arc<NodeFirewall>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("strata-edge".into())
        .spawn(move || {
            let mut edge = Edge::new(paths);
            let mut backoff =
                crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            loop {
                let services = rx.borrow_and_update().clone();
                let next = control::edge::plan(&services, http_port, edge.applied());
                match edge.apply(&next) {
                    Ok(applied) => {
                        if applied != Applied::Nothing {
                            tracing::info!(
                                "edge: {applied:?}: {} route(s), {} TCP port(s), {} backend(s), {} ready server(s)",
                                next.routes.len(),
                                next.tcp.len(),
                                next.backends.len(),
                                next.backends
                                    .iter()
                                    .flat_map(|b| b.slots.iter().flatten())
                                    .filter(|s| s.state == control::edge::ServerState::Ready)
                                    .count()
                            );
                        }
                        if let Some(fw) = &firewall
                            && let Err(e) = fw.set_edge(control::edge::ports(&next))
                        {
                            tracing::warn!("edge: cannot open the edge's ports in the firewall: {e:#}");
                        }
                        backoff.reset();
                        let woke = handle
                            .block_on(async { tokio::time::timeout(RESYNC, rx.changed()).await });
                        match woke {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => return,
                            Err(_) => {
                                if edge.drifted() {
                                    tracing::warn!(
                                        "edge: {HAPROXY}'s servers drifted from the plan; reloading"
                                    );
                                    edge.reload_next();
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!("edge: {e}");
                        let wait = backoff.advance();
                        let closed = handle.block_on(async {
                            tokio::time::timeout(wait, rx.changed()).await
                        });
                        if matches!(closed, Ok(Err(_))) {
                            return;
                        }
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests;
