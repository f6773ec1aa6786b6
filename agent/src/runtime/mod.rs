//! The container runtime: the only module that touches youki's
//! `libcontainer`.
//!
//! libcontainer must be driven from a single-threaded process, so every task
//! has a shim: the agent's shim launcher ([`launcher`]) forks one per task
//! (`strata shim --task-dir DIR`, hidden, runs one directly). The shim
//! detaches into its own session, mounts the task's overlayfs root in a
//! mount namespace of its own, writes `config.json`, creates and starts the
//! container with detach off, reports `ok <pid>` (or the error) on its stdout, pumps
//! the container's stdout/stderr into size-rotated files, reaps the init
//! process, records the exit status and cleans up (cgroup, mount). Shims do
//! not depend on the agent, so tasks outlive an agent restart; the agent
//! adopts them by reading the task directories ([`status`]).
//!
//! Task directory layout: `run.json` ([`RunParams`]), `state.json`
//! ([`ShimState`]), `exit.json` ([`ExitRecord`]), `bundle/` (`config.json`,
//! `rootfs/` mount point), `upper/` and `work/` (overlay), `logs/`.

pub mod idmap;
pub mod launcher;
pub mod logs;
pub mod names;
pub mod seccomp;
pub mod spec;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::state::{read_json, write_json};

/// Where libcontainer keeps its container state, under the state dir.
pub const RUNTIME_SUBDIR: &str = "runtime";

/// Everything the shim needs to run one generation of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunParams {
    pub task_id: String,
    pub generation: u64,
    pub container_id: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
    pub read_only: bool,
    /// CPU limit in thousandths of a core.
    pub cpu_millis: Option<u32>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<i64>,
    /// Extracted image layers, bottom first.
    pub layers: Vec<PathBuf>,
    /// A network namespace to join (otherwise a fresh, empty one).
    pub netns: Option<PathBuf>,
    /// Bind-mounted read-only over the task's `/etc/resolv.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<PathBuf>,
    /// The task's overlay address, when it was given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    pub hostname: String,
    pub log_max_bytes: u64,
    pub log_keep: u32,
    /// The parent cgroup of the task's cgroups (the agent's
    /// [`names::HostNames`] prefix).
    #[serde(default = "names::default_prefix")]
    pub cgroup_parent: String,
    /// Capabilities added to the default set (the spec's `cap_add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// The task's user namespace (the spec's `user_ns`): its ids and the
    /// node's they map to. Kept for the task's life, since what it wrote
    /// is owned by them on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ns: Option<idmap::IdRange>,
}

/// Written by the shim once the container runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimState {
    pub generation: u64,
    pub container_id: String,
    /// The parent cgroup the container runs under ([`RunParams::cgroup_parent`]).
    #[serde(default = "names::default_prefix")]
    pub cgroup_parent: String,
    pub shim_pid: i32,
    pub shim_start: u64,
    pub init_pid: i32,
    pub started_at_ms: u64,
}

/// Written by the shim when the container's init has exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub generation: u64,
    /// Exit code, or 128 + signal number when killed by a signal.
    pub code: i32,
    pub signal: Option<i32>,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
}

/// What a task directory says about its container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// No container was ever started from this directory.
    NotStarted,
    Running(ShimState),
    Exited(ExitRecord),
    /// The shim is gone without recording an exit.
    Lost(ShimState),
}

/// Paths inside a task directory.
#[derive(Debug, Clone)]
pub struct TaskDir(pub PathBuf);

impl TaskDir {
    pub fn run_json(&self) -> PathBuf {
        self.0.join("run.json")
    }
    pub fn state_json(&self) -> PathBuf {
        self.0.join("state.json")
    }
    pub fn exit_json(&self) -> PathBuf {
        self.0.join("exit.json")
    }
    pub fn bundle(&self) -> PathBuf {
        self.0.join("bundle")
    }
    pub fn rootfs(&self) -> PathBuf {
        self.0.join("bundle/rootfs")
    }
    /// The sysfs of a task in a user namespace with a network namespace
    /// the node made (`user_ns_network`).
    pub fn sysfs(&self) -> PathBuf {
        self.0.join("sysfs")
    }
    pub fn stdout_log(&self) -> PathBuf {
        self.0.join("logs/stdout.log")
    }
    pub fn stderr_log(&self) -> PathBuf {
        self.0.join("logs/stderr.log")
    }
    /// The libcontainer root: `<state dir>/runtime` (task dirs live in `<state dir>/tasks`).
    pub fn runtime_root(&self) -> PathBuf {
        self.0
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"))
            .join(RUNTIME_SUBDIR)
    }
}

/// Start time (clock ticks since boot) of a live, non-zombie process.
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is the state (field 3); starttime is field 22.
    if fields.first().is_some_and(|s| *s == "Z" || *s == "X") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Reads the state of a task directory.
pub fn status(dir: &TaskDir) -> Status {
    let state: Option<ShimState> = read_json(&dir.state_json());
    let exit: Option<ExitRecord> = read_json(&dir.exit_json());
    match (state, exit) {
        (None, None) => Status::NotStarted,
        (Some(s), Some(e)) if e.generation >= s.generation => Status::Exited(e),
        (None, Some(e)) => Status::Exited(e),
        (Some(s), _) => {
            if process_start(s.shim_pid) == Some(s.shim_start) {
                Status::Running(s)
            } else if let Some(e) =
                read_json::<ExitRecord>(&dir.exit_json()).filter(|e| e.generation >= s.generation)
            {
                // The shim wrote its exit between our two reads.
                Status::Exited(e)
            } else {
                Status::Lost(s)
            }
        }
    }
}

/// Cleans up after a shim that died without recording an exit (killed, or
/// the node rebooted): kills the container's init if it still runs in the
/// task's cgroup, removes the cgroup, libcontainer state and root mount, and
/// records exit code 255 so the restart policy can act.
pub fn recover_lost(dir: &TaskDir) -> anyhow::Result<()> {
    let Status::Lost(state) = status(dir) else {
        return Ok(());
    };
    let cgroup = names::cgroup_path(&state.cgroup_parent, &state.container_id);
    let in_cgroup = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|c| c.lines().any(|l| l.ends_with(&cgroup)))
    };
    if process_start(state.init_pid).is_some() && in_cgroup(state.init_pid) {
        let _ = nix::sys::signal::kill(Pid::from_raw(state.init_pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_start(state.init_pid).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let run: RunParams = read_json(&dir.run_json()).context("task has no run.json")?;
    let run = RunParams {
        container_id: state.container_id.clone(),
        ..run
    };
    cleanup(dir, &run, None);
    let record = ExitRecord {
        generation: state.generation,
        code: 255,
        signal: None,
        started_at_ms: state.started_at_ms,
        finished_at_ms: crate::clock::unix_millis(),
    };
    write_json(&dir.exit_json(), &record, None)
        .with_context(|| format!("cannot write {}", dir.exit_json().display()))
}

/// How long the agent waits for a shim to report the container running.
pub const SHIM_ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A started shim (its parent is the launcher, which lets the kernel reap it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub shim_pid: i32,
    pub init_pid: i32,
}

/// Stops the task's container: SIGTERM, then SIGKILL after `grace`, and
/// waits for the shim to record the exit. Returns the exit, if any.
pub fn stop(dir: &TaskDir, grace: Duration) -> anyhow::Result<Option<ExitRecord>> {
    let Status::Running(state) = status(dir) else {
        return Ok(read_json(&dir.exit_json()));
    };
    let signal = |sig: Signal| {
        // The init pid is the shim's child; it is only signalled while the shim lives.
        if process_start(state.shim_pid) == Some(state.shim_start) {
            let _ = nix::sys::signal::kill(Pid::from_raw(state.init_pid), sig);
        }
    };
    let exited = |deadline: Instant| -> bool {
        while Instant::now() < deadline {
            if !matches!(status(dir), Status::Running(_)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    };
    signal(Signal::SIGTERM);
    if !exited(Instant::now() + grace) {
        signal(Signal::SIGKILL);
        if !exited(Instant::now() + Duration::from_secs(10)) {
            bail!("task in {} did not stop after SIGKILL", dir.0.display());
        }
    }
    Ok(read_json(&dir.exit_json()))
}

/// Runs the workload as libcontainer's default executor does, after giving
/// every signal its default disposition and, for processes exec'd into a
/// task, loading the task's seccomp filter (`seccomp`).
///
/// The shim is a Rust program, which ignores SIGPIPE, and an ignored signal
/// stays ignored across exec: without the reset every task would start with
/// SIGPIPE ignored, and `yes | head -1` in it would print write errors
/// instead of ending quietly.
#[derive(Clone, Default)]
struct TaskExecutor {
    seccomp: Option<libcontainer::oci_spec::runtime::LinuxSeccomp>,
}

/// Gives every signal, the real-time ones and the two glibc keeps for
/// itself included (its `sigaction` refuses those), the default disposition.
fn reset_signal_dispositions() {
    // The kernel's `struct sigaction`: all zero is SIG_DFL with no flags and
    // an empty mask, whatever the architecture's field order.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let default = KernelSigaction {
        handler: 0,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: rt_sigaction reads a `struct sigaction` of the kernel's
        // size (8-byte sigset) from `default`, which outlives the call, and
        // writes nothing (no old action is asked for).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &raw const default,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

impl libcontainer::workload::Executor for TaskExecutor {
    fn exec(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        reset_signal_dispositions();
        if let Some(seccomp) = &self.seccomp {
            // The filter has no notify action, so there is no notify fd to pass on.
            libcontainer::seccomp::initialize_seccomp(seccomp).map_err(|e| {
                libcontainer::workload::ExecutorError::Other(format!(
                    "cannot load the seccomp filter: {e}"
                ))
            })?;
        }
        libcontainer::workload::default::get_executor().exec(spec)
    }

    fn validate(
        &self,
        spec: &libcontainer::oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::get_executor().validate(spec)
    }
}

/// Runs `args` inside the running task's namespaces and cgroup, with this
/// process's stdio, and returns its exit code. Single-threaded callers only.
pub fn exec(dir: &TaskDir, args: Vec<String>) -> anyhow::Result<i32> {
    let Status::Running(state) = status(dir) else {
        bail!("task in {} is not running", dir.0.display());
    };
    let run: RunParams = read_json(&dir.run_json()).context("task has no run.json")?;
    // libcontainer 0.7 joins every namespace of the task but its user
    // namespace: the command would run as the node's root.
    if run.user_ns.is_some() {
        bail!(
            "task {} runs in a user namespace, which exec cannot join yet: run what you need in the task's own command",
            run.task_id
        );
    }
    // The exec'd process gets the task's user and no_new_privs (and its
    // capabilities), and its seccomp filter: libcontainer's tenant builder
    // drops the spec's seccomp section, so the executor loads it, after the
    // process has joined the task and right before it execs (a task started
    // before tasks had a filter has none, and neither do its exec'd processes).
    let spec = libcontainer::oci_spec::runtime::Spec::load(dir.bundle().join("config.json"))
        .context("cannot read the task's config.json")?;
    let user = spec.process().as_ref().map(|p| p.user());
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());

    let pid = ContainerBuilder::new(state.container_id.clone(), SyscallType::default())
        .with_root_path(dir.runtime_root())
        .context("bad runtime root")?
        .with_executor(TaskExecutor { seccomp })
        .as_tenant()
        .with_container_args(args)
        .with_env(
            run.env
                .iter()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
        .with_cwd(Some(PathBuf::from(&run.cwd)))
        .with_user(user.map(|u| u.uid()))
        .with_group(user.map(|u| u.gid()))
        .with_no_new_privs(true)
        .with_detach(false)
        .build()
        .with_context(|| format!("cannot exec in container {}", state.container_id))?;
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).context("waitpid"),
        }
    }
}

/// Entry of the hidden `strata shim` subcommand. Never returns to a caller
/// that runs other work: it exits the process.
pub fn shim_main(task_dir: &Path) -> i32 {
    shim_run(task_dir, "")
}

/// Runs the shim of `task_dir`: its answer (`ok <pid>` or `error: ...`,
/// after `prefix`) goes to stdout in one write, then it supervises the
/// container until it exits.
fn shim_run(task_dir: &Path, prefix: &str) -> i32 {
    let dir = TaskDir(task_dir.to_path_buf());
    let _ = nix::unistd::setsid();
    match shim_start(&dir) {
        Ok(running) => {
            launcher::answer_line(&format!("{prefix}ok {}", running.init_pid));
            // From now on the agent may go away: stdout/stderr go to the shim log.
            if let Ok(log) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.0.join("logs/shim.log"))
            {
                let _ = nix::unistd::dup2(log.as_raw_fd(), 1);
                let _ = nix::unistd::dup2(log.as_raw_fd(), 2);
            }
            shim_supervise(&dir, running);
            0
        }
        Err(err) => {
            launcher::answer_line(&format!(
                "{prefix}error: {}",
                format!("{err:#}").replace('\n', " ")
            ));
            1
        }
    }
}

struct Running {
    container: libcontainer::container::Container,
    run: RunParams,
    init_pid: i32,
    started_at_ms: u64,
    stdout: OwnedFd,
    stderr: OwnedFd,
}

fn overlay_options(run: &RunParams, layers: &[PathBuf], dir: &TaskDir) -> anyhow::Result<String> {
    if layers.is_empty() {
        bail!("image of task {} has no layers", run.task_id);
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        dir.0.join("upper").display(),
        dir.0.join("work").display()
    );
    if opts.len() >= 4000 {
        bail!(
            "too many image layers ({}) for one overlay mount",
            run.layers.len()
        );
    }
    Ok(opts)
}

fn shim_start(dir: &TaskDir) -> anyhow::Result<Running> {
    let run: RunParams = read_json(&dir.run_json())
        .with_context(|| format!("cannot read {}", dir.run_json().display()))?;
    for sub in ["upper", "work", "logs", "bundle/rootfs"] {
        std::fs::create_dir_all(dir.0.join(sub))
            .with_context(|| format!("cannot create {}/{sub}", dir.0.display()))?;
    }
    let rootfs = dir.rootfs();
    // The root is mounted in a mount namespace of the shim's own (a slave
    // of the node's): the node's mount table does not grow with its tasks
    // (libcontainer reads it a dozen times for every start), and whatever
    // the shim mounts goes away with the shim and its container.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("cannot give the shim a mount namespace")?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("cannot make the shim's mounts private")?;
    detach_other_netns(run.netns.as_deref());
    let layers = match run.user_ns {
        Some(range) => user_ns_layers(dir, &run, range)?,
        None => run.layers.clone(),
    };
    let opts = overlay_options(&run, &layers, dir)?;
    // No device nodes and no set-uid bits from the image or from what the
    // task writes: /dev is a tmpfs of its own, and a node made elsewhere
    // (with CAP_MKNOD) cannot be opened. libcontainer's bind of the root
    // onto itself and its read-only remount keep both flags.
    nix::mount::mount(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        nix::mount::MsFlags::MS_NODEV | nix::mount::MsFlags::MS_NOSUID,
        Some(opts.as_str()),
    )
    .with_context(|| format!("cannot mount the overlay root at {}", rootfs.display()))?;
    if run.user_ns.is_some() {
        // The overlay holds private clones of its layers.
        for layer in &layers {
            let _ = nix::mount::umount2(layer, nix::mount::MntFlags::MNT_DETACH);
        }
        if let Some(netns) = &run.netns {
            user_ns_network(dir, netns)?;
        }
    }
    match shim_create(dir, &run, &rootfs) {
        Ok(r) => Ok(r),
        Err(err) => {
            cleanup(dir, &run, None);
            Err(err)
        }
    }
}

/// The task's layers mounted again with its ids (`<task>/lower/<i>`,
/// bottom first), and its upper directory given to its root: the image's
/// files are its root's, and what it writes is its ids' on disk.
fn user_ns_layers(
    dir: &TaskDir,
    run: &RunParams,
    range: idmap::IdRange,
) -> anyhow::Result<Vec<PathBuf>> {
    let userns = idmap::userns(range)?;
    let mut layers = Vec::new();
    for (i, layer) in run.layers.iter().enumerate() {
        let at = dir.0.join("lower").join(i.to_string());
        std::fs::create_dir_all(&at).with_context(|| format!("cannot create {}", at.display()))?;
        idmap::clone_idmapped(layer, &userns, &at)?;
        layers.push(at);
    }
    let upper = dir.0.join("upper");
    std::os::unix::fs::chown(&upper, Some(range.host_base), Some(range.host_base))
        .with_context(|| format!("cannot give {} to the task's root", upper.display()))?;
    Ok(layers)
}

/// Joins the task's network namespace, which the node made (so the
/// task's user namespace does not own it): libcontainer would join it only
/// after creating the user namespace, which the kernel refuses, so the
/// container inherits it from the shim instead. Binding low ports and
/// ping, which need capabilities of the namespace's owner, are opened to
/// every id there, and the task's `/sys` is a sysfs mounted here, since
/// the task cannot mount one for a namespace it does not own.
fn user_ns_network(dir: &TaskDir, netns: &Path) -> anyhow::Result<()> {
    crate::overlay::netns::enter(netns)?;
    for (knob, value) in [
        ("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0"),
        ("/proc/sys/net/ipv4/ping_group_range", "0 2147483647"),
    ] {
        std::fs::write(knob, value).with_context(|| format!("cannot set {knob}"))?;
    }
    let sysfs = dir.sysfs();
    std::fs::create_dir_all(&sysfs)
        .with_context(|| format!("cannot create {}", sysfs.display()))?;
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("sysfs"),
        &sysfs,
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .with_context(|| format!("cannot mount a sysfs at {}", sysfs.display()))
}

/// Detaches, from the shim's private mount table, the network namespace
/// handles of every other task (bind mounts under
/// [`crate::overlay::netns::NETNS_DIR`]), keeping `keep`, the task's own.
/// A node keeps one per networked task, and libcontainer reads the whole
/// table a dozen times for every start: with 100 of them a start took 2-3 ms
/// longer (each unmount here costs about 9 us, so detaching them wins back
/// about 1 ms of that). The node's own table is untouched (a slave's
/// unmounts do not propagate back).
fn detach_other_netns(keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(crate::overlay::netns::NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let handle = entry.path();
        if Some(handle.as_path()) != keep {
            // EINVAL: a file that is no mount point; nothing to do.
            let _ = nix::mount::umount2(&handle, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// The per-CPU `thermal_throttle` directories of this host
/// (`/sys/devices/system/cpu/cpuN/thermal_throttle`, on CPUs that have
/// one), masked in every task as Docker masks them: their counts of
/// thermal events are a side channel (GHSA-6fw5-f8r9-fgfm). Listed by the
/// shim, since the CPUs are the host's.
fn thermal_throttle_paths() -> Vec<String> {
    let cpu = Path::new("/sys/devices/system/cpu");
    let mut paths: Vec<String> = std::fs::read_dir(cpu)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("cpu"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|e| e.path().join("thermal_throttle"))
        .filter(|p| p.is_dir())
        .map(|p| p.display().to_string())
        .collect();
    paths.sort();
    paths
}

fn shim_create(dir: &TaskDir, run: &RunParams, rootfs: &Path) -> anyhow::Result<Running> {
    let (uid, gid) = spec::resolve_user(run.user.as_deref(), rootfs).map_err(anyhow::Error::msg)?;
    if let Some(range) = run.user_ns
        && (uid >= range.size || gid >= range.size)
    {
        bail!(
            "user {uid}:{gid} is outside the task's user namespace (ids 0 to {})",
            range.size - 1
        );
    }
    let sysfs = (run.user_ns.is_some() && run.netns.is_some()).then(|| dir.sysfs());
    let spec = spec::build(
        run,
        rootfs,
        uid,
        gid,
        &thermal_throttle_paths(),
        sysfs.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let bundle = dir.bundle();
    spec.save(bundle.join("config.json"))
        .context("cannot write config.json")?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let devnull = std::fs::File::open("/dev/null").context("cannot open /dev/null")?;
    let runtime_root = dir.runtime_root();
    std::fs::create_dir_all(&runtime_root)
        .with_context(|| format!("cannot create {}", runtime_root.display()))?;
    let mut container = ContainerBuilder::new(run.container_id.clone(), SyscallType::default())
        .with_root_path(&runtime_root)
        .context("bad runtime root")?
        .with_stdin(OwnedFd::from(devnull))
        .with_stdout(out_w)
        .with_stderr(err_w)
        .with_executor(TaskExecutor::default())
        .as_init(&bundle)
        .with_systemd(false)
        .with_detach(false)
        .build()
        .map_err(|e| {
            // A failed build may leave its state directory behind.
            let _ = std::fs::remove_dir_all(runtime_root.join(&run.container_id));
            anyhow::Error::new(e)
        })
        .with_context(|| format!("cannot create container {}", run.container_id))?;
    let init_pid = container.pid().map(|p| p.as_raw()).unwrap_or(0);
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        reap(init_pid);
        return Err(e).with_context(|| format!("cannot start container {}", run.container_id));
    }
    let started_at_ms = crate::clock::unix_millis();
    let me = std::process::id() as i32;
    let state = ShimState {
        generation: run.generation,
        container_id: run.container_id.clone(),
        cgroup_parent: run.cgroup_parent.clone(),
        shim_pid: me,
        shim_start: process_start(me).unwrap_or(0),
        init_pid,
        started_at_ms,
    };
    if let Err(e) = write_json(&dir.state_json(), &state, None) {
        let _ = container.delete(true);
        reap(init_pid);
        return Err(e).context("cannot write state.json");
    }
    Ok(Running {
        container,
        run: run.clone(),
        init_pid,
        started_at_ms,
        stdout: out_r,
        stderr: err_r,
    })
}

fn reap(pid: i32) {
    if pid > 0 {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }
}

/// Removes the container (cgroup, libcontainer state) and the root mount.
fn cleanup(
    dir: &TaskDir,
    run: &RunParams,
    container: Option<&mut libcontainer::container::Container>,
) {
    if let Some(c) = container {
        let _ = c.delete(true);
    }
    let _ = std::fs::remove_dir_all(dir.runtime_root().join(&run.container_id));
    // Any cgroup left behind (empty by now) goes too.
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        let rel = names::cgroup_path(&run.cgroup_parent, &run.container_id);
        for e in entries.flatten() {
            let _ = std::fs::remove_dir(e.path().join(rel.trim_start_matches('/')));
        }
    }
    let _ = nix::mount::umount2(&dir.rootfs(), nix::mount::MntFlags::MNT_DETACH);
}

/// A pidfd for `pid` (readable once the process exits), if the kernel has them.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Some(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

fn shim_supervise(dir: &TaskDir, mut r: Running) {
    let mut out =
        logs::RotatingWriter::open(&dir.stdout_log(), r.run.log_max_bytes, r.run.log_keep).ok();
    let mut err =
        logs::RotatingWriter::open(&dir.stderr_log(), r.run.log_max_bytes, r.run.log_keep).ok();
    let mut open = [true, true];
    let mut exit: Option<(i32, Option<i32>)> = None;
    let mut drain_deadline: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let pidfd = pidfd_open(r.init_pid);
    loop {
        // Reap children; the container init is one of them.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == r.init_pid => {
                    exit = Some((code, None))
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == r.init_pid => {
                    exit = Some((128 + sig as i32, Some(sig as i32)));
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if exit.is_some() && drain_deadline.is_none() {
            drain_deadline = Some(Instant::now() + Duration::from_millis(500));
        }
        if !open[0] && !open[1] && exit.is_some() {
            break;
        }
        if drain_deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut fds = Vec::new();
        let mut which = Vec::new();
        if open[0] {
            fds.push(nix::poll::PollFd::new(
                r.stdout.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
            which.push(0);
        }
        if open[1] {
            fds.push(nix::poll::PollFd::new(
                r.stderr.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
            which.push(1);
        }
        // While the init runs, its pidfd wakes us when it exits: an idle
        // shim sleeps in poll instead of waking up to check.
        let watch_exit = exit.is_none() && pidfd.is_some();
        if let Some(fd) = pidfd.as_ref().filter(|_| watch_exit) {
            fds.push(nix::poll::PollFd::new(
                fd.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
            which.push(2);
        }
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let timeout = if watch_exit {
            nix::poll::PollTimeout::NONE
        } else if exit.is_some() {
            nix::poll::PollTimeout::from(50u16)
        } else {
            nix::poll::PollTimeout::from(100u16)
        };
        let ready = nix::poll::poll(&mut fds, timeout).unwrap_or(0);
        if ready <= 0 {
            continue;
        }
        let revents: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|e| !e.is_empty()))
            .collect();
        drop(fds);
        for (i, has) in which.into_iter().zip(revents) {
            if !has || i == 2 {
                continue;
            }
            let fd = if i == 0 { &r.stdout } else { &r.stderr };
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => open[i] = false,
                Ok(n) => {
                    let w = if i == 0 { out.as_mut() } else { err.as_mut() };
                    if let Some(w) = w {
                        let _ = w.write_all(&buf[..n]);
                    }
                }
            }
        }
    }
    let (code, signal) = exit.unwrap_or((255, None));
    cleanup(dir, &r.run, Some(&mut r.container));
    let record = ExitRecord {
        generation: r.run.generation,
        code,
        signal,
        started_at_ms: r.started_at_ms,
        finished_at_ms: crate::clock::unix_millis(),
    };
    let _ = write_json(&dir.exit_json(), &record, None);
}
