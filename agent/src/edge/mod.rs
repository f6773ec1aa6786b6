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
//!
//! Certificates (from the node's assignment watch) are files named by the
//! digest of their PEM, 0600 under `<dir>/certs/`, written before the
//! configuration that names them and removed once a configuration that
//! does not is in force; a new or renewed certificate reloads.

pub mod haproxy;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::edge::{EdgeCert, EdgeChange, EdgePlan};
use control::model::EdgeSettings;
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

    /// Where the certificates are (0700).
    pub fn certs(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// The file of the certificate whose PEM has `digest`
    /// ([`control::edge::tls_digest`]: hex, never a path of its own).
    pub fn cert(&self, digest: &str) -> PathBuf {
        self.certs().join(format!("{digest}.pem"))
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
    #[error(
        "the plan serves {host} over HTTPS but the edge holds no certificate for it (a bug of the agent: report it with the agent's log)"
    )]
    NoCert { host: String },
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
    /// The certificates the plans may name: digest to PEM.
    certs: BTreeMap<String, String>,
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
            certs: BTreeMap::new(),
        }
    }

    /// The certificates the next plans may serve (a plan names each by its
    /// [`control::edge::tls_digest`]).
    pub fn set_certs(&mut self, certs: &[EdgeCert]) {
        self.certs = certs
            .iter()
            .map(|c| (control::edge::tls_digest(c), c.pem.clone()))
            .collect();
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
        self.write_certs(plan)?;
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
        std::fs::rename(&tmp, &path).map_err(write_err)?;
        self.prune_certs(plan);
        Ok(())
    }

    /// Writes the certificates `plan` serves (0600, in a 0700 directory),
    /// each under its digest: a file in use is never rewritten.
    fn write_certs(&self, plan: &EdgePlan) -> Result<(), EdgeError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let Some(https) = &plan.https else {
            return Ok(());
        };
        let dir = self.paths.certs();
        let write_err = |path: PathBuf| move |source| EdgeError::Write { path, source };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(write_err(dir.clone()))?;
        for (host, digest) in &https.hosts {
            let pem = self
                .certs
                .get(digest)
                .ok_or_else(|| EdgeError::NoCert { host: host.clone() })?;
            let path = self.paths.cert(digest);
            if path.exists() {
                continue;
            }
            let tmp = path.with_extension("pem.new");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(write_err(tmp.clone()))?;
            std::io::Write::write_all(&mut file, pem.as_bytes()).map_err(write_err(tmp.clone()))?;
            // On disk before its name: a file under its digest is never
            // written again, so it must not be left short by a power loss.
            file.sync_all().map_err(write_err(tmp.clone()))?;
            std::fs::rename(&tmp, &path).map_err(write_err(path.clone()))?;
        }
        Ok(())
    }

    /// Removes the certificate files `plan` (now in force) does not name.
    fn prune_certs(&self, plan: &EdgePlan) {
        let Ok(entries) = std::fs::read_dir(self.paths.certs()) else {
            return;
        };
        let keep: Vec<PathBuf> = plan
            .https
            .iter()
            .flat_map(|h| h.hosts.values())
            .map(|d| self.paths.cert(d))
            .collect();
        for entry in entries.flatten() {
            let path = entry.path();
            if !keep.contains(&path)
                && let Err(e) = std::fs::remove_file(&path)
            {
                tracing::warn!(
                    "edge: cannot remove the old certificate {}: {e}",
                    path.display()
                );
            }
        }
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

/// What the edge follows: the services of the node watch and the
/// certificates of the assignment watch.
pub struct EdgeInputs {
    pub services: tokio::sync::watch::Receiver<Vec<Service>>,
    pub certs: tokio::sync::watch::Receiver<Vec<EdgeCert>>,
}

impl EdgeInputs {
    /// Waits for either input to change, at most `wait`: whether one did,
    /// `None` once the services' sender is gone.
    async fn changed(&mut self, wait: Duration) -> Option<bool> {
        tokio::select! {
            r = self.services.changed() => r.ok().map(|()| true),
            // A certificate sender that is gone (the task follower ended)
            // leaves the last certificates in force.
            Ok(()) = self.certs.changed() => Some(true),
            () = tokio::time::sleep(wait) => Some(false),
        }
    }
}

/// Keeps the node's edge proxy in line with its `inputs`, serving on
/// `ports`, and the firewall's edge ports with it, on
/// a thread of its own: HAProxy is that thread's child and gets SIGTERM
/// when it ends (`PR_SET_PDEATHSIG` follows the thread that forked), which
/// is when the services' sender is dropped or the agent exits. Failures
/// are logged and tried again with backoff. Call from within a tokio
/// runtime.
pub fn spawn(
    paths: EdgePaths,
    ports: EdgeSettings,
    mut inputs: EdgeInputs,
    firewall: Option<Arc<NodeFirewall>>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let handle = tokio::runtime::Handle::current();
    std::thread::Builder::new()
        .name("strata-edge".into())
        .spawn(move || {
            let mut edge = Edge::new(paths);
            let mut backoff =
                crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            let changed = |inputs: &mut EdgeInputs, wait| handle.block_on(inputs.changed(wait));
            // Certificates (by digest) HAProxy refused: their hosts are
            // served over plain HTTP, and every other change still goes
            // through, until a new certificate replaces them.
            let mut refused: std::collections::BTreeSet<String> = Default::default();
            loop {
                let services = inputs.services.borrow_and_update().clone();
                let certs = inputs.certs.borrow_and_update().clone();
                edge.set_certs(&certs);
                let mut hosts = control::edge::tls_hosts(&certs);
                hosts.retain(|_, digest| !refused.contains(digest));
                let next = control::edge::plan(&services, ports, &hosts, edge.applied());
                let result = edge.apply(&next);
                if let (Err(EdgeError::Refused { .. }), Some(https)) = (&result, &next.https) {
                    let names: Vec<&str> = https.hosts.keys().map(String::as_str).collect();
                    tracing::error!(
                        "edge: {HAPROXY} refuses the configuration with the certificates of {}: serving those hosts over plain HTTP until their certificates change (strata edge cert set); {}",
                        names.join(", "),
                        result.as_ref().err().map(ToString::to_string).unwrap_or_default()
                    );
                    refused.extend(https.hosts.values().cloned());
                    continue;
                }
                match result {
                    Ok(applied) => {
                        if applied != Applied::Nothing {
                            tracing::info!(
                                "edge: {applied:?}: {} route(s), {} HTTPS host(s), {} TCP port(s), {} backend(s), {} ready server(s)",
                                next.routes.len(),
                                next.https.as_ref().map_or(0, |h| h.hosts.len()),
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
                        match changed(&mut inputs, RESYNC) {
                            Some(true) => {}
                            None => return,
                            Some(false) => {
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
                        if changed(&mut inputs, wait).is_none() {
                            return;
                        }
                    }
                }
            }
        })
}

#[cfg(test)]
mod tests;
