//! The shim launcher: one single-threaded process (`strata shim-launcher`,
//! hidden) that forks a shim per task instead of executing `strata` again.
//!
//! Executing the 30 MB `strata` binary, relocating it and parsing its
//! command line costs about 1.7 ms per task on the CI machine; forking the
//! small launcher costs a tenth of that. The agent starts one launcher when
//! it first starts a task and talks to it over its stdin and stdout, one line
//! per message, so that the protocol is plain text (the runtime benchmark
//! speaks it too):
//!
//! - agent to launcher: `<task dir>`
//! - launcher to agent: `<task dir>\tshim <pid>` once the shim is forked,
//!   then the shim's own answer, `<task dir>\tok <init pid>` or
//!   `<task dir>\terror: <message>`.
//!
//! Every message is written with one `write(2)` of less than `PIPE_BUF`
//! bytes, so the lines of shims answering at once never interleave. The
//! launcher exits when its stdin closes (the agent went away); shims live on
//! in their own sessions, as before. It ignores `SIGCHLD`, so the kernel
//! reaps the shims; each shim restores the default before it creates its
//! container, whose init it reaps itself.
//!
//! The launcher also keeps a helper process that moves itself into its own
//! cgroup when a request arrives ([`warm_target`]). Every container start
//! moves a new process into new cgroups, and the first such move after a
//! quiet spell waits for an RCU grace period in the kernel (the
//! `cgroup_threadgroup_rwsem` turning writer-ready), 10-20 ms on the CI
//! machine. A move that is already waiting lets later ones share its grace
//! period, so the helper's move makes the shim's set-up (reading its task,
//! mounting the root, writing the spec, creating the cgroups) overlap that
//! wait instead of preceding it.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::{ForkResult, Pid};

use super::{SHIM_ANSWER_TIMEOUT, Started, TaskDir};

/// Longest message a launcher or shim writes: under `PIPE_BUF` (4096), so
/// one `write(2)` is atomic.
const MAX_LINE: usize = 3500;

/// Writes `line` (a newline is added) to stdout with a single `write(2)`,
/// shortened to [`MAX_LINE`] bytes.
pub(super) fn answer_line(line: &str) {
    let mut bytes = line.as_bytes().to_vec();
    if bytes.len() > MAX_LINE {
        bytes.truncate(MAX_LINE);
        // Keep it valid UTF-8 for the reader.
        while std::str::from_utf8(&bytes).is_err() {
            bytes.pop();
        }
    }
    bytes.push(b'\n');
    let _ = nix::unistd::write(std::io::stdout(), &bytes);
}

/// Whether `dir` can travel in the launcher's line protocol.
fn valid_request(dir: &str) -> Result<(), String> {
    if !dir.starts_with('/') {
        return Err(format!("task dir {dir:?} is not an absolute path"));
    }
    if dir.contains(['\t', '\n']) {
        return Err(format!("task dir {dir:?} holds a tab or a newline"));
    }
    Ok(())
}

/// The `cgroup.procs` file of the calling process's own cgroup, from the
/// text of `/proc/self/cgroup`; `exists` says which candidate paths exist.
/// Any hierarchy will do: the lock a move takes is one for all of them.
pub fn warm_target(proc_self_cgroup: &str, exists: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        let mounts = if controllers.is_empty() {
            vec![root.to_path_buf(), root.join("unified")]
        } else {
            let name = controllers.strip_prefix("name=").unwrap_or(controllers);
            vec![root.join(name)]
        };
        for mount in mounts {
            let file = mount.join(relative).join("cgroup.procs");
            if exists(&file) {
                return Some(file);
            }
        }
    }
    None
}

/// The helper that starts the kernel's grace period early (see the module
/// docs). Dropping it ends the helper.
struct Warmer {
    kick: OwnedFd,
}

impl Warmer {
    fn start() -> Option<Warmer> {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let target = warm_target(&text, Path::exists)?;
        let procs = std::fs::OpenOptions::new().write(true).open(target).ok()?;
        let (rx, tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
        // SAFETY: the launcher is single-threaded (it never starts threads),
        // so the child is a full copy that may run any code.
        match unsafe { nix::unistd::fork() }.ok()? {
            ForkResult::Child => {
                drop(tx);
                let mut buf = [0u8; 64];
                // Each batch of kicks is one no-op move of this process into
                // the cgroup it is in ("0" is the writer itself).
                while matches!(nix::unistd::read(rx.as_raw_fd(), &mut buf), Ok(n) if n > 0) {
                    let _ = nix::unistd::write(&procs, b"0");
                }
                // SAFETY: _exit ends the process without running the
                // launcher's atexit handlers or flushing its buffers twice.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { .. } => {
                drop(rx);
                let flags = nix::fcntl::fcntl(tx.as_raw_fd(), nix::fcntl::F_GETFL).ok()?;
                let flags =
                    nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
                nix::fcntl::fcntl(tx.as_raw_fd(), nix::fcntl::F_SETFL(flags)).ok()?;
                Some(Warmer { kick: tx })
            }
        }
    }

    fn kick(&self) {
        // A full pipe means a move is already pending: nothing to add.
        let _ = nix::unistd::write(&self.kick, &[1]);
    }
}

/// The name (`comm`) of a forked shim, as `ps -e` and `pgrep` show it.
pub const SHIM_COMM: &str = "strata-shim";

/// Makes a forked shim recognisable: it is named [`SHIM_COMM`], works in its
/// task directory (`/proc/PID/cwd` says which task it serves), and, where
/// the process may (CAP_SYS_RESOURCE), shows `strata shim --task-dir DIR`
/// as its command line.
fn become_shim(dir: &str) {
    let _ = nix::sys::prctl::set_name(
        &std::ffi::CString::new(SHIM_COMM).expect("the shim's name has no NUL byte"),
    );
    let _ = std::env::set_current_dir(dir);
    set_cmdline(&["strata", "shim", "--task-dir", dir]);
}

/// The task directory that process `pid` serves, if it is a shim: a forked
/// one (named [`SHIM_COMM`], working in its task directory) or one run as
/// `strata shim --task-dir DIR`.
pub fn shim_task_dir(pid: i32) -> Option<PathBuf> {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    if comm.trim_end() == SHIM_COMM {
        return std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let i = args.iter().position(|a| *a == b"shim")?;
    if args.get(i + 1)? != b"--task-dir" {
        return None;
    }
    let dir = std::ffi::OsStr::from_bytes(args.get(i + 2)?);
    Some(PathBuf::from(dir))
}

/// Points this process's `/proc/self/cmdline` at `args`. Best effort: it
/// needs CAP_SYS_RESOURCE.
fn set_cmdline(args: &[&str]) {
    let mut buf = Vec::new();
    for a in args {
        buf.extend_from_slice(a.as_bytes());
        buf.push(0);
    }
    // The kernel reads the area for as long as the process lives.
    let area: &'static [u8] = Box::leak(buf.into_boxed_slice());
    let start = area.as_ptr() as libc::c_ulong;
    let end = start + area.len() as libc::c_ulong;
    // SAFETY: PR_SET_MM only records the addresses; they point into a
    // leaked allocation that stays valid until the process exits. The start
    // is set first: it lies below the current end (on the stack), as the
    // kernel requires start < end after each call.
    unsafe {
        libc::prctl(libc::PR_SET_MM, libc::PR_SET_MM_ARG_START, start, 0, 0);
        libc::prctl(libc::PR_SET_MM, libc::PR_SET_MM_ARG_END, end, 0, 0);
    }
}

/// Entry of the hidden `strata shim-launcher` subcommand.
pub fn launcher_main() -> i32 {
    // SAFETY: setting a signal disposition to SIG_IGN installs no handler.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGCHLD, SigHandler::SigIgn) };
    let warmer = Warmer::start();
    let devnull = match std::fs::File::open("/dev/null") {
        Ok(f) => f,
        Err(e) => {
            tracing::error!("shim launcher: cannot open /dev/null: {e}");
            return 1;
        }
    };
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(dir) = line else { break };
        if let Err(e) = valid_request(&dir) {
            answer_line(&format!("{}\terror: {e}", dir.replace(['\t', '\n'], " ")));
            continue;
        }
        if let Some(w) = &warmer {
            w.kick();
        }
        // SAFETY: the launcher is single-threaded (the warmer is a process,
        // not a thread), so the child may run any code.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                drop(warmer);
                // SAFETY: restoring the default disposition installs no handler.
                let _ = unsafe { nix::sys::signal::signal(Signal::SIGCHLD, SigHandler::SigDfl) };
                let _ = nix::unistd::dup2(devnull.as_raw_fd(), 0);
                become_shim(&dir);
                let prefix = format!("{dir}\t");
                std::process::exit(super::shim_run(Path::new(&dir), &prefix));
            }
            Ok(ForkResult::Parent { child }) => answer_line(&format!("{dir}\tshim {child}")),
            Err(e) => answer_line(&format!("{dir}\terror: cannot fork the shim: {e}")),
        }
    }
    0
}

/// The agent's side: starts shims through one launcher process, started on
/// first use and again if it dies.
#[derive(Debug)]
pub struct Launcher {
    exe: PathBuf,
    live: Mutex<Option<Live>>,
}

type Waiters = Arc<Mutex<HashMap<String, mpsc::Sender<String>>>>;

#[derive(Debug)]
struct Live {
    child: Child,
    stdin: ChildStdin,
    waiters: Waiters,
}

impl Drop for Live {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Launcher {
    /// A launcher running `exe` (the `strata` binary); nothing starts yet.
    pub fn new(exe: PathBuf) -> Launcher {
        Launcher {
            exe,
            live: Mutex::new(None),
        }
    }

    fn spawn(&self) -> anyhow::Result<Live> {
        let mut child = Command::new(&self.exe)
            .arg("shim-launcher")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {} shim-launcher", self.exe.display()))?;
        let stdin = child.stdin.take().context("launcher stdin")?;
        let stdout = child.stdout.take().context("launcher stdout")?;
        let waiters: Waiters = Arc::default();
        let w = waiters.clone();
        std::thread::Builder::new()
            .name("shim-launcher".into())
            .spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let Some((dir, msg)) = line.split_once('\t') else {
                        continue;
                    };
                    let waiters = w.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(tx) = waiters.get(dir) {
                        let _ = tx.send(msg.to_string());
                    }
                }
                // The launcher is gone: every waiter hears it as a hang-up.
                w.lock().unwrap_or_else(|p| p.into_inner()).clear();
            })
            .context("cannot start the launcher reader thread")?;
        Ok(Live {
            child,
            stdin,
            waiters,
        })
    }

    /// Starts the shim for the task in `dir` (whose `run.json` is written)
    /// and waits until the container runs or fails to start. Blocking.
    pub fn start(&self, dir: &TaskDir) -> anyhow::Result<Started> {
        let key = dir.0.display().to_string();
        valid_request(&key).map_err(anyhow::Error::msg)?;
        let (tx, rx) = mpsc::channel();
        {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            if live
                .as_mut()
                .is_none_or(|l| !matches!(l.child.try_wait(), Ok(None)))
            {
                *live = Some(self.spawn()?);
            }
            let l = live.as_mut().context("no launcher")?;
            let mut waiters = l.waiters.lock().unwrap_or_else(|p| p.into_inner());
            if waiters.contains_key(&key) {
                bail!("a shim for {key} is already starting");
            }
            waiters.insert(key.clone(), tx);
            drop(waiters);
            let sent = l
                .stdin
                .write_all(format!("{key}\n").as_bytes())
                .and_then(|()| l.stdin.flush());
            if let Err(e) = sent {
                l.waiters
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                *live = None;
                return Err(e).context("cannot reach the shim launcher");
            }
        }
        let result = self.wait_answer(&key, &rx);
        if let Some(l) = self.live.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            l.waiters
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
        }
        result
    }

    fn wait_answer(&self, key: &str, rx: &mpsc::Receiver<String>) -> anyhow::Result<Started> {
        let deadline = Instant::now() + SHIM_ANSWER_TIMEOUT;
        let mut shim_pid = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = match rx.recv_timeout(left) {
                Ok(msg) => msg,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(pid) = shim_pid {
                        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                    bail!("the shim did not start the container within {SHIM_ANSWER_TIMEOUT:?}");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the shim launcher exited before the shim for {key} answered")
                }
            };
            if let Some(pid) = msg.strip_prefix("shim ") {
                shim_pid = pid.parse().ok();
            } else if let Some(pid) = msg.strip_prefix("ok ") {
                let init_pid = pid
                    .parse()
                    .with_context(|| format!("bad shim answer {msg:?}"))?;
                return Ok(Started {
                    shim_pid: shim_pid.unwrap_or(0),
                    init_pid,
                });
            } else if let Some(err) = msg.strip_prefix("error: ") {
                bail!("{err}");
            } else {
                bail!("bad shim answer {msg:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(proc_self_cgroup: &str, existing: &[&str], expected: Option<&str>) {
        let got = warm_target(proc_self_cgroup, |p| {
            existing.iter().any(|e| Path::new(e) == p)
        });
        assert_eq!(
            got.as_deref(),
            expected.map(Path::new),
            "{proc_self_cgroup}"
        );
    }

    #[test]
    fn the_warm_up_moves_within_the_launchers_own_cgroup() {
        // Pure cgroup v2 (the images).
        check(
            "0::/system.slice/strata-agent.service\n",
            &["/sys/fs/cgroup/system.slice/strata-agent.service/cgroup.procs"],
            Some("/sys/fs/cgroup/system.slice/strata-agent.service/cgroup.procs"),
        );
        // v1 with a v2 `unified` beside it (the CI host): the first line
        // that resolves wins.
        let hybrid = "9:name=systemd:/\n8:pids:/a\n4:memory:/b\n0::/\n";
        check(
            hybrid,
            &[
                "/sys/fs/cgroup/systemd/cgroup.procs",
                "/sys/fs/cgroup/pids/a/cgroup.procs",
            ],
            Some("/sys/fs/cgroup/systemd/cgroup.procs"),
        );
        check(
            hybrid,
            &[
                "/sys/fs/cgroup/memory/b/cgroup.procs",
                "/sys/fs/cgroup/unified/cgroup.procs",
            ],
            Some("/sys/fs/cgroup/memory/b/cgroup.procs"),
        );
        check(
            hybrid,
            &["/sys/fs/cgroup/unified/cgroup.procs"],
            Some("/sys/fs/cgroup/unified/cgroup.procs"),
        );
        // Co-mounted controllers share one directory.
        check(
            "2:cpu,cpuacct:/x\n",
            &["/sys/fs/cgroup/cpu,cpuacct/x/cgroup.procs"],
            Some("/sys/fs/cgroup/cpu,cpuacct/x/cgroup.procs"),
        );
        // Nothing mounted where it says, or garbage: no warm-up.
        check("0::/\n", &[], None);
        check("garbage\n\n", &["/sys/fs/cgroup/cgroup.procs"], None);
    }

    #[test]
    fn requests_must_be_absolute_single_line_paths() {
        assert_eq!(valid_request("/var/lib/strata/tasks/web"), Ok(()));
        expect_test::expect![[r#"
            [
                Err(
                    "task dir \"tasks/web\" is not an absolute path",
                ),
                Err(
                    "task dir \"/a\\tb\" holds a tab or a newline",
                ),
            ]
        "#]]
        .assert_debug_eq(&[valid_request("tasks/web"), valid_request("/a\tb")]);
    }
}
