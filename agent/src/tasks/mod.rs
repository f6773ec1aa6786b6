//! Tasks on this node: the task model ([`spec`]), pure restart planning
//! ([`plan`]) and the supervisor that carries plans out through the image
//! store and the runtime's shims.
//!
//! The single entry point is [`Supervisor::reconcile`]`(desired)`: the
//! static task directory loop ([`run_static_dir`]) calls it today, the API's
//! assignment watch can call it the same way. Everything the supervisor
//! knows lives in `<state dir>/tasks/<id>/`, so a restarted agent adopts the
//! tasks that kept running (their shims are independent processes).

pub mod probe;

pub use control::task::restart as plan;
pub use control::task::spec;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::images::{Digest, ImageStore, PullOptions};
use crate::runtime::{self, RunParams, Status, TaskDir};
use crate::state::{self, read_json};
pub use control::task::TaskState;
pub use plan::{Action, Observed, ObservedState};
pub use spec::{RestartPolicy, TaskSpec};

/// Log rotation: bytes per file and rotated files kept.
pub const LOG_MAX_BYTES: u64 = 8 << 20;
pub const LOG_KEEP: u32 = 3;
/// Delay before a task whose start failed is tried again.
pub const START_RETRY_MS: u64 = 5_000;

/// Gives tasks a network of their own: a namespace with an address on the
/// node's overlay and a resolver. Implemented by the overlay
/// ([`crate::overlay::node::OverlayTasks`]); the supervisor calls it from a
/// blocking thread.
pub trait TaskNetwork: Send + Sync + std::fmt::Debug {
    /// Makes task `task`'s namespace and address (the same address again
    /// for a task that had one).
    fn attach(&self, task: &str) -> anyhow::Result<TaskAddress>;
    /// Removes task `task`'s namespace and frees its address. Missing
    /// pieces are not an error.
    fn detach(&self, task: &str) -> anyhow::Result<()>;
}

/// What [`TaskNetwork::attach`] gives a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskAddress {
    /// The namespace to run the task in (`/var/run/netns/NAME`).
    pub netns: PathBuf,
    pub address: std::net::Ipv4Addr,
    /// The task's `/etc/resolv.conf`.
    pub resolv_conf: String,
}

/// Written by the supervisor beside the runtime's files.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct History {
    restarts: u32,
}

/// The directory holding all task directories.
pub fn tasks_root(state_dir: &Path) -> PathBuf {
    state_dir.join("tasks")
}

/// The directory of one task.
pub fn task_dir(state_dir: &Path, id: &str) -> TaskDir {
    TaskDir(tasks_root(state_dir).join(id))
}

/// [`state::write_json`] (durable), with the path in the error.
fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    state::write_json(path, value, None).with_context(|| format!("cannot write {}", path.display()))
}

/// One task as `strata task list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskInfo {
    pub id: String,
    pub image: String,
    pub state: TaskState,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub exit_code: Option<i32>,
    /// The task's overlay address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
}

/// Reads every task directory under `state_dir`.
pub fn list(state_dir: &Path) -> Vec<TaskInfo> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(tasks_root(state_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = TaskDir(entry.path());
        let Some(spec) = read_json::<TaskSpec>(&dir.0.join("spec.json")) else {
            continue;
        };
        let restarts = read_json::<History>(&dir.0.join("history.json"))
            .unwrap_or_default()
            .restarts;
        let stopped = dir.0.join("stopped").exists();
        let (state, pid, exit_code) = match runtime::status(&dir) {
            Status::NotStarted => (TaskState::Starting, None, None),
            Status::Running(s) => (TaskState::Running, Some(s.init_pid), None),
            Status::Exited(e) => (
                if stopped {
                    TaskState::Stopped
                } else {
                    TaskState::Exited
                },
                None,
                Some(e.code),
            ),
            Status::Lost(_) => (TaskState::Lost, None, None),
        };
        let address = read_json::<RunParams>(&dir.run_json()).and_then(|r| r.address);
        out.push(TaskInfo {
            id: spec.id,
            image: spec.image,
            state,
            pid,
            restarts,
            exit_code,
            address,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Stops a task by hand: it is marked stopped, so no restart policy brings
/// it back until its spec changes.
pub fn stop(
    state_dir: &Path,
    id: &str,
    grace: Option<Duration>,
) -> anyhow::Result<Option<runtime::ExitRecord>> {
    let dir = task_dir(state_dir, id);
    let spec: TaskSpec = read_json(&dir.0.join("spec.json"))
        .with_context(|| format!("no task {id:?} in {}", state_dir.display()))?;
    std::fs::write(dir.0.join("stopped"), b"")
        .with_context(|| format!("cannot mark task {id} stopped"))?;
    runtime::stop(
        &dir,
        grace.unwrap_or(Duration::from_secs(spec.stop_grace_secs)),
    )
}

/// Layers that task directories still use (for image garbage collection).
pub fn layers_in_use(state_dir: &Path) -> BTreeSet<Digest> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(tasks_root(state_dir))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Some(run) = read_json::<RunParams>(&entry.path().join("run.json")) {
            for l in run.layers {
                if let Some(digest) = l
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| Digest::from_hex(n).ok())
                {
                    out.insert(digest);
                }
            }
        }
    }
    out
}

/// An exclusive lock on `<state dir>/tasks.lock`: one supervisor per
/// state directory, so two agents never both start the same task. The file
/// is close-on-exec, so shims do not inherit the lock.
struct StateLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

impl std::fmt::Debug for StateLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateLock")
    }
}

impl StateLock {
    fn acquire(state_dir: &Path) -> anyhow::Result<Self> {
        let path = state_dir.join("tasks.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Self(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                bail!(
                    "another agent already supervises the tasks in {}",
                    state_dir.display()
                )
            }
            Err((_, e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

/// Carries out plans for this node's tasks.
#[derive(Debug)]
pub struct Supervisor {
    _lock: StateLock,
    state_dir: PathBuf,
    images: ImageStore,
    /// Forks the shims (one process, started with the first task).
    launcher: Arc<runtime::launcher::Launcher>,
    pull: PullOptions,
    /// Start failures: fingerprint and when to try again.
    failures: HashMap<String, (String, u64)>,
    /// Where new tasks get their network; without it a task gets an empty
    /// namespace of its own (or the one its spec names).
    network: Option<Arc<dyn TaskNetwork>>,
    /// Its tasks' cgroup parent ([`runtime::names`]).
    names: runtime::names::HostNames,
}

impl Supervisor {
    /// A supervisor over `state_dir` (images in `<state_dir>/images`),
    /// running shims from `exe` (the `strata` binary).
    pub fn new(state_dir: &Path, exe: PathBuf, pull: PullOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(tasks_root(state_dir))
            .with_context(|| format!("cannot create {}", tasks_root(state_dir).display()))?;
        let names = runtime::names::HostNames::from_env()?;
        let _lock = StateLock::acquire(state_dir)?;
        let images = ImageStore::open(state_dir.join("images"))?;
        Ok(Self {
            _lock,
            state_dir: state_dir.to_path_buf(),
            images,
            launcher: Arc::new(runtime::launcher::Launcher::new(exe)),
            pull,
            failures: HashMap::new(),
            network: None,
            names,
        })
    }

    /// Gives tasks started from now on their network from `network`.
    pub fn set_network(&mut self, network: Option<Arc<dyn TaskNetwork>>) {
        self.network = network;
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// What the task directories say.
    pub fn observe(&self) -> Vec<Observed> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(tasks_root(&self.state_dir))
            .into_iter()
            .flatten()
            .flatten()
        {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let dir = TaskDir(entry.path());
            let id = entry.file_name().to_string_lossy().into_owned();
            let spec: Option<TaskSpec> = read_json(&dir.0.join("spec.json"));
            let restarts = read_json::<History>(&dir.0.join("history.json"))
                .unwrap_or_default()
                .restarts;
            let stopped = dir.0.join("stopped").exists();
            let (fingerprint, state) = match (spec, runtime::status(&dir)) {
                // A directory without a started container: left over, replaced.
                (None, _) | (_, Status::NotStarted) => (String::new(), ObservedState::Lost),
                (Some(s), Status::Running(_)) => (s.fingerprint(), ObservedState::Running),
                (Some(s), Status::Exited(e)) => (
                    s.fingerprint(),
                    ObservedState::Exited {
                        code: e.code,
                        started_at_ms: e.started_at_ms,
                        finished_at_ms: e.finished_at_ms,
                    },
                ),
                (Some(s), Status::Lost(_)) => (s.fingerprint(), ObservedState::Lost),
            };
            out.push(Observed {
                id,
                fingerprint,
                state,
                restarts,
                stopped,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Brings the node's tasks to `desired`; returns one line per action
    /// taken (errors included: one task's failure does not stop the others).
    pub async fn reconcile(&mut self, desired: Vec<TaskSpec>) -> Vec<String> {
        let mut events = Vec::new();
        let mut valid = Vec::new();
        for spec in desired {
            match spec.validate() {
                Ok(()) => valid.push(spec),
                Err(e) => events.push(format!("task {}: invalid: {e}", spec.id)),
            }
        }
        // Shims that died without an exit record: clean up, record the loss.
        for obs in self
            .observe()
            .iter()
            .filter(|o| o.state == ObservedState::Lost && !o.fingerprint.is_empty())
        {
            let dir = task_dir(&self.state_dir, &obs.id);
            match tokio::task::spawn_blocking(move || runtime::recover_lost(&dir)).await {
                Ok(Ok(())) => events.push(format!("task {}: shim lost, cleaned up", obs.id)),
                Ok(Err(e)) => events.push(format!("task {}: cannot recover: {e:#}", obs.id)),
                Err(e) => events.push(format!("task {}: cannot recover: {e}", obs.id)),
            }
        }
        let now = crate::clock::unix_millis();
        let actions = plan::plan(&valid, &self.observe(), now);
        let by_id: BTreeMap<&str, &TaskSpec> = valid.iter().map(|s| (s.id.as_str(), s)).collect();
        for action in actions {
            let result = match &action {
                Action::Start { id } => {
                    let Some(spec) = by_id.get(id.as_str()).copied() else {
                        continue;
                    };
                    match self.failures.get(id) {
                        Some((fp, at)) if *fp == spec.fingerprint() && now < *at => continue,
                        _ => {}
                    }
                    let r = self.start(spec).await;
                    if r.is_err() {
                        self.failures
                            .insert(id.clone(), (spec.fingerprint(), now + START_RETRY_MS));
                    } else {
                        self.failures.remove(id);
                    }
                    r
                }
                Action::Restart { id, attempt } => self.restart(id, *attempt).await,
                Action::Remove { id } => self.remove(id).await,
                Action::Wait { .. } => continue,
            };
            match result {
                Ok(()) => events.push(format!("{action:?}: done")),
                Err(e) => events.push(format!("{action:?}: {e:#}")),
            }
        }
        events
    }

    /// Resolves the run parameters of a new task (pulling its image).
    async fn prepare(&self, spec: &TaskSpec) -> anyhow::Result<RunParams> {
        let image = self.images.ensure(&spec.image, &self.pull).await?;
        let command = if spec.command.is_empty() {
            // `args` replaces the image's command, not its entrypoint.
            let cmd = if spec.args.is_empty() {
                &image.config.cmd
            } else {
                &spec.args
            };
            image.config.entrypoint.iter().chain(cmd).cloned().collect()
        } else {
            spec.command.clone()
        };
        if command.is_empty() {
            bail!(
                "task {}: missing command: neither the task nor image {} gives one",
                spec.id,
                spec.image
            );
        }
        let mut env: Vec<String> = image
            .config
            .env
            .iter()
            .filter(|kv| {
                kv.split_once('=')
                    .is_none_or(|(k, _)| !spec.env.contains_key(k))
            })
            .cloned()
            .collect();
        if !env.iter().any(|kv| kv.starts_with("PATH=")) && !spec.env.contains_key("PATH") {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        env.extend(spec.env.iter().map(|(k, v)| format!("{k}={v}")));
        Ok(RunParams {
            task_id: spec.id.clone(),
            generation: 1,
            container_id: format!("{}-1", spec.id),
            args: command,
            env,
            cwd: spec
                .cwd
                .clone()
                .or(image.config.working_dir.clone())
                .unwrap_or_else(|| "/".into()),
            user: spec.user.clone().or(image.config.user.clone()),
            read_only: spec.read_only,
            cpu_millis: spec.cpu_millis(),
            memory_bytes: spec.mem.map(|m| m.0),
            pids: Some(spec.pids_limit()),
            layers: image
                .layers
                .iter()
                .map(|d| self.images.verified_layer_dir(&image.name, d))
                .collect::<Result<_, _>>()?,
            netns: spec.netns.clone(),
            resolv_conf: None,
            address: None,
            hostname: spec.id.clone(),
            log_max_bytes: LOG_MAX_BYTES,
            log_keep: LOG_KEEP,
            cgroup_parent: self.names.prefix().to_string(),
            cap_add: spec.cap_add.clone(),
            user_ns: None,
        })
    }

    /// Creates and starts a task; on failure nothing of it is left.
    pub async fn start(&mut self, spec: &TaskSpec) -> anyhow::Result<()> {
        let mut run = self.prepare(spec).await?;
        let dir = task_dir(&self.state_dir, &spec.id);
        if dir.0.exists() {
            crate::images::remove_tree(&dir.0)?;
        }
        std::fs::create_dir_all(dir.0.join("logs"))
            .with_context(|| format!("cannot create {}", dir.0.display()))?;
        if spec.user_ns {
            // The ranges the node's other tasks hold, from their run.json.
            let others = list(&self.state_dir);
            let used = others
                .iter()
                .filter(|t| t.id != spec.id)
                .filter_map(|t| {
                    read_json::<RunParams>(&task_dir(&self.state_dir, &t.id).run_json())
                })
                .filter_map(|r| r.user_ns.map(|u| u.host_base));
            run.user_ns = Some(
                runtime::idmap::free_range(used, control::task::spec::USER_NS_SIZE).ok_or_else(
                    || {
                        anyhow::anyhow!(
                            "task {}: every user namespace range of this node is taken",
                            spec.id
                        )
                    },
                )?,
            );
        }
        let network = if run.netns.is_none() {
            self.network.clone()
        } else {
            None
        };
        let result = async {
            if let Some(net) = &network {
                let (n, id) = (net.clone(), spec.id.clone());
                let a = tokio::task::spawn_blocking(move || n.attach(&id)).await??;
                let resolv = dir.0.join("resolv.conf");
                std::fs::write(&resolv, &a.resolv_conf)
                    .with_context(|| format!("cannot write {}", resolv.display()))?;
                run.netns = Some(a.netns);
                run.resolv_conf = Some(resolv);
                run.address = Some(a.address);
            }
            write_json(&dir.0.join("spec.json"), spec)?;
            write_json(&dir.0.join("history.json"), &History::default())?;
            write_json(&dir.run_json(), &run)?;
            self.spawn(&dir).await
        }
        .await;
        if result.is_err() {
            if let Some(net) = network {
                let id = spec.id.clone();
                let _ = tokio::task::spawn_blocking(move || net.detach(&id)).await;
            }
            let _ = nix::mount::umount2(&dir.rootfs(), nix::mount::MntFlags::MNT_DETACH);
            let _ = crate::images::remove_tree(&dir.0);
        }
        result.with_context(|| format!("task {}", spec.id))
    }

    async fn spawn(&mut self, dir: &TaskDir) -> anyhow::Result<()> {
        let (launcher, d) = (self.launcher.clone(), dir.clone());
        tokio::task::spawn_blocking(move || launcher.start(&d)).await??;
        Ok(())
    }

    async fn restart(&mut self, id: &str, attempt: u32) -> anyhow::Result<()> {
        let dir = task_dir(&self.state_dir, id);
        let mut run: RunParams =
            read_json(&dir.run_json()).with_context(|| format!("task {id} has no run.json"))?;
        run.generation += 1;
        run.container_id = format!("{id}-{}", run.generation);
        write_json(&dir.run_json(), &run)?;
        write_json(&dir.0.join("history.json"), &History { restarts: attempt })?;
        self.spawn(&dir).await
    }

    /// Stops (grace period, then SIGKILL) and deletes a task.
    pub async fn remove(&mut self, id: &str) -> anyhow::Result<()> {
        let dir = task_dir(&self.state_dir, id);
        let grace =
            read_json::<TaskSpec>(&dir.0.join("spec.json")).map_or(10, |s| s.stop_grace_secs);
        let d = dir.clone();
        tokio::task::spawn_blocking(move || runtime::stop(&d, Duration::from_secs(grace)))
            .await??;
        let attached = read_json::<RunParams>(&dir.run_json()).is_some_and(|r| r.address.is_some());
        if attached && let Some(net) = self.network.clone() {
            let task = id.to_string();
            tokio::task::spawn_blocking(move || net.detach(&task)).await??;
        }
        let _ = nix::mount::umount2(&dir.rootfs(), nix::mount::MntFlags::MNT_DETACH);
        crate::images::remove_tree(&dir.0)?;
        Ok(())
    }
}

/// Reads every `*.toml` task file of `dir`. Bad files are reported and
/// their last good spec (from `last_good`) kept, so a typo does not stop a
/// running task.
pub fn read_tasks_dir(
    dir: &Path,
    last_good: &mut BTreeMap<PathBuf, TaskSpec>,
) -> (Vec<TaskSpec>, Vec<String>) {
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    for path in files {
        seen.insert(path.clone());
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
            .and_then(|text| {
                control::task::file::parse(&path.display().to_string(), &text)
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(spec) => {
                last_good.insert(path, spec);
            }
            Err(e) => errors.push(e),
        }
    }
    last_good.retain(|p, _| seen.contains(p));
    let mut specs: Vec<TaskSpec> = Vec::new();
    for spec in last_good.values() {
        if specs.iter().any(|s| s.id == spec.id) {
            errors.push(format!(
                "task id {:?} is defined twice in {}",
                spec.id,
                dir.display()
            ));
            continue;
        }
        specs.push(spec.clone());
    }
    (specs, errors)
}

/// Options of the static task directory loop.
#[derive(Debug, Clone)]
pub struct StaticDirOptions {
    pub tasks_dir: PathBuf,
    pub state_dir: PathBuf,
    pub interval: Duration,
    pub pull: PullOptions,
}

/// The agent-side loop for a static task directory (like kubelet's static
/// pods): every interval, read the task files and reconcile. Runs until the
/// process is killed; tasks keep running after that.
pub fn run_static_dir(opts: StaticDirOptions) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the strata binary")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start tokio")?;
    rt.block_on(async move {
        let mut sup = Supervisor::new(&opts.state_dir, exe, opts.pull.clone())?;
        let mut last_good = BTreeMap::new();
        let mut last_errors = Vec::new();
        tracing::info!(
            tasks_dir = %opts.tasks_dir.display(),
            state_dir = %opts.state_dir.display(),
            "reconciling tasks from {} (state in {})",
            opts.tasks_dir.display(),
            opts.state_dir.display()
        );
        loop {
            let (desired, errors) = read_tasks_dir(&opts.tasks_dir, &mut last_good);
            if errors != last_errors {
                for e in &errors {
                    tracing::warn!("{e}");
                }
                last_errors = errors;
            }
            for event in sup.reconcile(desired).await {
                tracing::info!("{event}");
            }
            tokio::time::sleep(opts.interval).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_task_file_keeps_its_last_good_spec() {
        let dir =
            std::env::temp_dir().join(format!("strata-tasks-dir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let mut last_good = BTreeMap::new();
        let mut check = |files: &[(&str, &str)], expected: expect_test::Expect| {
            for entry in std::fs::read_dir(&dir).expect("read").flatten() {
                std::fs::remove_file(entry.path()).expect("rm");
            }
            for (name, text) in files {
                std::fs::write(dir.join(name), text).expect("write");
            }
            let (specs, errors) = read_tasks_dir(&dir, &mut last_good);
            let ids: Vec<String> = specs
                .iter()
                .map(|s| format!("{}:{:?}", s.id, s.command))
                .collect();
            let errors: Vec<String> = errors
                .iter()
                .map(|e| e.replace(&*dir.to_string_lossy(), "DIR"))
                .collect();
            expected.assert_debug_eq(&(ids, errors));
        };
        check(
            &[
                ("a.toml", "id = \"a\"\nimage = \"bb\"\ncommand = [\"x\"]"),
                ("notes.txt", "ignored"),
            ],
            expect_test::expect![[r#"
                (
                    [
                        "a:[\"x\"]",
                    ],
                    [],
                )
            "#]],
        );
        // A typo keeps the running spec and says why.
        check(
            &[(
                "a.toml",
                "id = \"a\"\nimage = \"bb\"\ncommand = [\"x\"]\nmem = \"1k\"",
            )],
            expect_test::expect![[r#"
                (
                    [
                        "a:[\"x\"]",
                    ],
                    [
                        "DIR/a.toml: memory limit 1024 bytes is below the minimum of 4194304 bytes (4 MiB)",
                    ],
                )
            "#]],
        );
        // A removed file removes the task; a duplicate id is refused.
        check(
            &[
                ("b.toml", "id = \"b\"\nimage = \"bb\""),
                ("c.toml", "id = \"b\"\nimage = \"bb\""),
            ],
            expect_test::expect![[r#"
                (
                    [
                        "b:[]",
                    ],
                    [
                        "task id \"b\" is defined twice in DIR",
                    ],
                )
            "#]],
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
