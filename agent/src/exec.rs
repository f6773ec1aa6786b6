//! The node's side of break-glass sessions (`strata node exec`): the
//! sessions a master offers in the assignment watch are attached to
//! ([`Sessions::offer`]) and their command run ([`serve`]). A log session
//! (`strata job logs`) runs no command: it streams a task's output from
//! its directory ([`serve_logs`]).
//!
//! The command runs as the agent does: root, with every capability, in
//! the host's namespaces and the host's root, which is what a privileged
//! debug container with the host's namespaces amounts to on an image that
//! has no other root to give. It runs without a shell, in `/`, with a
//! clean environment, in a process group (a session of its own on a
//! terminal) that is killed when the admin's connection ends or a moment
//! after the command exits. Only admins may open a session, and each is
//! in the audit log (`api::server::routes::exec`).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control::exec::{Decoder, ExecRequest, ExecSession, Frame, TaskLogs};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};

use crate::api::client::ApiClient;

/// How long output may still come after the command exited (from what it
/// left running) before the session ends.
const DRAIN: Duration = Duration::from_secs(2);

/// The sessions remembered as handled, so that a session still listed in
/// the next answer of the watch is not run twice.
const REMEMBERED: usize = 256;

/// The environment every command gets.
const ENV: &[(&str, &str)] = &[
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/root"),
    ("LANG", "C.UTF-8"),
];

/// Attaches to the sessions offered to this node, each once.
pub struct Sessions {
    client: Arc<ApiClient>,
    seen: Mutex<VecDeque<String>>,
    /// Where the node keeps its tasks (their logs), if it runs any.
    state_dir: Option<std::path::PathBuf>,
}

impl Sessions {
    /// `client` carries the node's certificate; `state_dir` holds the
    /// node's tasks.
    pub fn new(client: Arc<ApiClient>, state_dir: Option<std::path::PathBuf>) -> Sessions {
        Sessions {
            client,
            seen: Mutex::default(),
            state_dir,
        }
    }

    /// Starts every session of `offered` not started before. A session
    /// whose id or request is not as a master makes them is refused, as
    /// the API would refuse it.
    pub fn offer(&self, offered: &[ExecSession]) {
        for session in offered {
            {
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.contains(&session.id) {
                    continue;
                }
                if seen.len() == REMEMBERED {
                    seen.pop_front();
                }
                seen.push_back(session.id.clone());
            }
            if !ExecSession::valid_id(&session.id) {
                tracing::warn!("exec: session with a malformed id refused");
                continue;
            }
            if let Some(logs) = &session.logs {
                self.logs(session, logs);
                continue;
            }
            if let Err(e) = session.request.validate() {
                tracing::warn!(session = %session.id, "exec: session {} refused: {e}", session.id);
                continue;
            }
            tracing::info!(
                session = %session.id,
                "exec: session {} for {} (through master {}): {:?}",
                session.id,
                session.requested_by,
                session.master,
                session.request.command
            );
            let client = self.client.clone();
            let session = session.clone();
            tokio::spawn(async move {
                let stream = match client.attach_exec(&session.id).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(session = %session.id, "exec: cannot attach to session {}: {e}", session.id);
                        return;
                    }
                };
                match serve(stream, &session.request).await {
                    Ok(Some(code)) => tracing::info!(
                        session = %session.id,
                        "exec: session {} ended, the command exited with {code}",
                        session.id
                    ),
                    Ok(None) => tracing::info!(
                        session = %session.id,
                        "exec: session {} ended: the admin's connection closed first, the command was killed",
                        session.id
                    ),
                    Err(e) => {
                        tracing::warn!(session = %session.id, "exec: session {}: {e}", session.id)
                    }
                }
            });
        }
    }
}

impl Sessions {
    /// Starts a log session: attaches and streams the task's output.
    fn logs(&self, session: &ExecSession, logs: &TaskLogs) {
        let Some(state_dir) = self.state_dir.clone() else {
            tracing::warn!(session = %session.id, "exec: log session {} refused: this node keeps no tasks", session.id);
            return;
        };
        if !control::task::spec::valid_id(&logs.task) {
            tracing::warn!(session = %session.id, "exec: log session {} refused: a malformed task id", session.id);
            return;
        }
        tracing::info!(
            session = %session.id,
            "exec: log session {} for {} (through master {}): task {}",
            session.id,
            session.requested_by,
            session.master,
            logs.task
        );
        let client = self.client.clone();
        let (session, logs) = (session.clone(), logs.clone());
        tokio::spawn(async move {
            let stream = match client.attach_exec(&session.id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(session = %session.id, "exec: cannot attach to log session {}: {e}", session.id);
                    return;
                }
            };
            let dir = crate::tasks::task_dir(&state_dir, &logs.task);
            if let Err(e) = serve_logs(stream, &dir, &logs).await {
                tracing::info!(session = %session.id, "exec: log session {} ended: {e}", session.id);
            }
        });
    }
}

/// How often a followed log is looked at for what was written since.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// Streams the task's stdout then its stderr as frames, and with `follow`
/// what both get next until the task no longer runs; then `Exit(0)`. At
/// most a frame's bytes are held at a time, however long the logs; a
/// caller that goes away ends the session.
pub async fn serve_logs<S>(
    stream: S,
    dir: &crate::runtime::TaskDir,
    logs: &TaskLogs,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    if !dir.0.join("spec.json").exists() {
        let why = format!(
            "no task `{}` on this node (its directory is gone)",
            logs.task
        );
        wr.write_all(&Frame::Failed(why).encode()).await?;
        return wr.shutdown().await;
    }
    let files: [(std::path::PathBuf, MakeFrame); 2] = [
        (dir.stdout_log(), Frame::Stdout),
        (dir.stderr_log(), Frame::Stderr),
    ];
    let mut offsets = [0u64; 2];
    let mut buf = vec![0u8; control::exec::MAX_FRAME];
    let mut closed = [0u8; 64];
    loop {
        // Whether the task still runs, asked before reading, so that what
        // it wrote before it ended is read once more.
        let running = logs.follow
            && matches!(
                crate::runtime::status(dir),
                crate::runtime::Status::Running(_)
            );
        for (i, (path, make)) in files.iter().enumerate() {
            let Ok(mut file) = tokio::fs::File::open(path).await else {
                continue;
            };
            file.seek(std::io::SeekFrom::Start(offsets[i])).await?;
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                offsets[i] += n as u64;
                wr.write_all(&make(buf[..n].to_vec()).encode()).await?;
            }
        }
        if !running {
            break;
        }
        // The caller's side sends nothing but the end of its input: a
        // read that ends means it went away.
        tokio::select! {
            read = rd.read(&mut closed) => {
                if read? == 0 {
                    return Ok(());
                }
            }
            () = tokio::time::sleep(FOLLOW_EVERY) => {}
        }
    }
    wr.write_all(&Frame::Exit(0).encode()).await?;
    wr.shutdown().await
}

/// What the threads around the command tell the session.
enum Event {
    Frame(Frame),
    /// One of the outputs ended.
    OutputEnded,
    Exited(i32),
}

/// Makes the frame an output's bytes go in.
type MakeFrame = fn(Vec<u8>) -> Frame;

/// A running command and the ends of its standard streams.
struct Running {
    child: Child,
    /// Where its input goes (the terminal on a terminal), unless input is
    /// not forwarded.
    stdin: Option<File>,
    /// Its outputs, with the frame each one's bytes go in.
    outputs: Vec<(File, MakeFrame)>,
    /// The terminal's master side, for resizing.
    pty: Option<OwnedFd>,
}

/// Starts `request`'s command.
fn start(request: &ExecRequest) -> std::io::Result<Running> {
    let mut cmd = Command::new(&request.command[0]);
    cmd.args(&request.command[1..])
        .env_clear()
        .envs(ENV.iter().copied())
        .current_dir("/");
    if request.tty {
        let pty = open_pty(request)?;
        cmd.env("TERM", "xterm-256color")
            .stdin(Stdio::from(pty.slave.try_clone()?))
            .stdout(Stdio::from(pty.slave.try_clone()?))
            .stderr(Stdio::from(pty.slave));
        // SAFETY: between fork and exec the closure calls only setsid(2)
        // and ioctl(2), which are async-signal-safe, and allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The terminal on fd 0 becomes the session's controlling
                // terminal, so that ^C reaches the command.
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // The command holds the only copies of the terminal's slave side
        // now: reading the master ends once it and its children exit.
        drop(cmd);
        let mut master = File::from(pty.master);
        if !request.stdin {
            // No input: a command that reads it sees its end at once.
            let _ = master.write_all(&[4]);
        }
        let input = master.try_clone()?;
        let resize = OwnedFd::from(master.try_clone()?);
        Ok(Running {
            child,
            stdin: request.stdin.then_some(input),
            outputs: vec![(master, Frame::Stdout)],
            pty: Some(resize),
        })
    } else {
        cmd.stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take().map(|s| File::from(OwnedFd::from(s)));
        let stdout = child.stdout.take().map(|s| File::from(OwnedFd::from(s)));
        let stderr = child.stderr.take().map(|s| File::from(OwnedFd::from(s)));
        let mut outputs: Vec<(File, MakeFrame)> = Vec::new();
        outputs.extend(stdout.map(|f| (f, Frame::Stdout as MakeFrame)));
        outputs.extend(stderr.map(|f| (f, Frame::Stderr as MakeFrame)));
        Ok(Running {
            child,
            stdin,
            outputs,
            pty: None,
        })
    }
}

/// Both sides of a new terminal of the size `request` asks for (24x80 by
/// default), neither inherited by anything the agent starts: the slave
/// side reaches the command only as its standard streams.
fn open_pty(request: &ExecRequest) -> std::io::Result<Pty> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    nix::pty::grantpt(&master)?;
    nix::pty::unlockpt(&master)?;
    let name = nix::pty::ptsname_r(&master)?;
    // SAFETY: the descriptor is the master just opened, owned by nothing
    // else once `master` gives it up.
    let master = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    let slave = OwnedFd::from(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&name)?,
    );
    resize(
        &master,
        if request.rows == 0 { 24 } else { request.rows },
        if request.cols == 0 { 80 } else { request.cols },
    );
    Ok(Pty { master, slave })
}

/// A terminal's two sides.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

/// Kills what is left of a session's process group when the session ends,
/// however it ends (an error writing to the admin included).
struct KillGroup(Pid);

impl Drop for KillGroup {
    fn drop(&mut self) {
        let _ = killpg(self.0, Signal::SIGKILL);
    }
}

/// How many bytes of input may wait for the command to read them before
/// the session stops reading from the admin.
const MAX_PENDING_INPUT: usize = 1 << 20;

/// Sets the terminal's size.
fn resize(pty: &OwnedFd, rows: u16, cols: u16) {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is
    // valid for the call; the descriptor is open (owned by `pty`).
    let rc = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        tracing::debug!(
            "exec: cannot resize the terminal: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Runs `request`'s command with `stream` as its terminal or standard
/// streams, speaking the frames of `control::exec`, until it exits (its
/// code) or the stream ends (`None`: the command is killed).
pub async fn serve<S>(stream: S, request: &ExecRequest) -> std::io::Result<Option<i32>>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let running = match start(request) {
        Ok(r) => r,
        Err(e) => {
            let why = format!("cannot run `{}`: {e}", request.command[0]);
            wr.write_all(&Frame::Failed(why).encode()).await?;
            wr.shutdown().await?;
            return Ok(Some(127));
        }
    };
    let Running {
        mut child,
        stdin,
        outputs,
        pty,
    } = running;
    let group = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _kill = KillGroup(group);
    let (events, mut rx) = tokio::sync::mpsc::channel::<Event>(64);
    let open_outputs = outputs.len();
    for (mut file, make) in outputs {
        let events = events.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match file.read(&mut buf) {
                    // A terminal's master reads EIO once no process holds
                    // the slave side.
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let frames: Vec<Frame> = Frame::chunks(&buf[..n], make).collect();
                        for f in frames {
                            if events.blocking_send(Event::Frame(f)).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            let _ = events.blocking_send(Event::OutputEnded);
        });
    }
    {
        let events = events.clone();
        std::thread::spawn(move || {
            let code = match child.wait() {
                Ok(status) => status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)),
                Err(_) => 255,
            };
            let _ = events.blocking_send(Event::Exited(code));
        });
    }
    drop(events);
    // Input goes through a thread of its own, so that a command that does
    // not read cannot stall the session.
    let (input, input_rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
    // Bytes sent to the input thread and not written yet: the session
    // stops reading from the admin above [`MAX_PENDING_INPUT`].
    let pending = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    if let Some(mut stdin) = stdin {
        let tty = request.tty;
        let pending = pending.clone();
        std::thread::spawn(move || {
            while let Ok(Some(bytes)) = input_rx.recv() {
                let written = stdin.write_all(&bytes);
                pending.fetch_sub(bytes.len(), std::sync::atomic::Ordering::Relaxed);
                if written.is_err() {
                    return;
                }
            }
            // On a terminal, input ends as a typist ends it, with ^D; a
            // pipe is closed.
            if tty {
                let _ = stdin.write_all(&[4]);
            }
        });
    } else {
        // Input the request did not ask for is dropped.
        drop(input_rx);
    }
    let mut paused = tokio::time::interval(Duration::from_millis(20));

    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 16 << 10];
    let mut ended_outputs = 0;
    let mut exit: Option<i32> = None;
    // Armed once the command exits.
    let mut drain = Box::pin(tokio::time::sleep(Duration::from_secs(365 * 86400)));
    let result = loop {
        let reading = pending.load(std::sync::atomic::Ordering::Relaxed) < MAX_PENDING_INPUT;
        tokio::select! {
            read = rd.read(&mut buf), if reading => {
                let n = match read {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => n,
                };
                decoder.push(&buf[..n]);
                loop {
                    match decoder.next_frame() {
                        Ok(Some(Frame::Stdin(bytes))) => {
                            let len = bytes.len();
                            pending.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
                            if input.send(Some(bytes)).is_err() {
                                pending.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                        Ok(Some(Frame::StdinEnd)) => {
                            let _ = input.send(None);
                        }
                        Ok(Some(Frame::Resize { rows, cols })) => {
                            if let Some(pty) = &pty {
                                resize(pty, rows, cols);
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!("exec: the admin's side sent a bad frame: {e}");
                            let _ = killpg(group, Signal::SIGKILL);
                            return Ok(None);
                        }
                    }
                }
            }
            event = rx.recv() => match event {
                Some(Event::Frame(f)) => wr.write_all(&f.encode()).await?,
                Some(Event::OutputEnded) => ended_outputs += 1,
                Some(Event::Exited(code)) => {
                    exit = Some(code);
                    drain.as_mut().reset(tokio::time::Instant::now() + DRAIN);
                }
                None => {}
            },
            // While input waits for the command, look again shortly.
            _ = paused.tick(), if !reading => {}
            () = &mut drain => {
                // What the command left running still holds its output.
                let _ = killpg(group, Signal::SIGKILL);
                ended_outputs = open_outputs;
            }
        }
        if let Some(code) = exit
            && ended_outputs >= open_outputs
        {
            break Some(code);
        }
    };
    // Whatever is left of the session's processes goes with it (and with
    // `_kill` on any early return).
    let _ = killpg(group, Signal::SIGKILL);
    if let Some(code) = result {
        // Output that arrived with the last events.
        while let Ok(event) = rx.try_recv() {
            if let Event::Frame(f) = event {
                wr.write_all(&f.encode()).await?;
            }
        }
        wr.write_all(&Frame::Exit(code).encode()).await?;
        wr.shutdown().await?;
    }
    Ok(result)
}

/// The admin's side of a session (`strata node exec`): forwards this
/// process's standard input when `forward_stdin` (otherwise it is ended at
/// once) and the terminal sizes `sizes` gives, writes what the command
/// prints to this process's outputs, and returns the command's exit code.
pub async fn drive<S>(
    stream: S,
    forward_stdin: bool,
    sizes: Option<tokio::sync::mpsc::Receiver<(u16, u16)>>,
) -> anyhow::Result<i32>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    tokio::select! {
        code = show_output(rd) => code,
        sent = send_input(wr, forward_stdin, sizes) => match sent {
            Ok(never) => match never {},
            Err(e) => Err(anyhow::anyhow!("cannot send to the session: {e}")),
        },
    }
}

/// Sends standard input (or its end) and terminal sizes until the stream
/// fails.
async fn send_input<W: AsyncWrite + Unpin>(
    mut wr: W,
    forward_stdin: bool,
    mut sizes: Option<tokio::sync::mpsc::Receiver<(u16, u16)>>,
) -> std::io::Result<std::convert::Infallible> {
    let mut stdin = forward_stdin.then(tokio::io::stdin);
    if stdin.is_none() {
        wr.write_all(&Frame::StdinEnd.encode()).await?;
    }
    let mut buf = vec![0u8; 16 << 10];
    loop {
        tokio::select! {
            read = async { stdin.as_mut().expect("polled only with input").read(&mut buf).await }, if stdin.is_some() => {
                match read? {
                    0 => {
                        wr.write_all(&Frame::StdinEnd.encode()).await?;
                        stdin = None;
                    }
                    n => {
                        for f in Frame::chunks(&buf[..n], Frame::Stdin) {
                            wr.write_all(&f.encode()).await?;
                        }
                    }
                }
            }
            size = async { sizes.as_mut().expect("polled only with sizes").recv().await }, if sizes.is_some() => {
                match size {
                    Some((rows, cols)) => wr.write_all(&Frame::Resize { rows, cols }.encode()).await?,
                    None => sizes = None,
                }
            }
            else => std::future::pending::<()>().await,
        }
    }
}

/// Writes what the command prints to this process's outputs; its exit
/// code once it ended.
async fn show_output<R: AsyncRead + Unpin>(mut rd: R) -> anyhow::Result<i32> {
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            anyhow::bail!(
                "the session ended without the command's exit status: the node or the master went away (see `strata node list`)"
            );
        }
        decoder.push(&buf[..n]);
        while let Some(frame) = decoder.next_frame()? {
            match frame {
                Frame::Stdout(b) => {
                    out.write_all(&b).await?;
                    out.flush().await?;
                }
                Frame::Stderr(b) => {
                    err.write_all(&b).await?;
                    err.flush().await?;
                }
                Frame::Exit(code) => return Ok(code),
                Frame::Failed(why) => anyhow::bail!("{why}"),
                Frame::Stdin(_) | Frame::StdinEnd | Frame::Resize { .. } => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `command` with `input` through [`serve`] and returns what came
    /// back: stdout, stderr and the last frame.
    async fn run(command: &[&str], tty: bool, input: Option<&[u8]>) -> (String, String, Frame) {
        let (mut admin, node) = tokio::io::duplex(1 << 20);
        let request = ExecRequest {
            command: command.iter().map(|s| s.to_string()).collect(),
            tty,
            stdin: input.is_some(),
            rows: 30,
            cols: 100,
        };
        let served = tokio::spawn(async move { serve(node, &request).await });
        if let Some(input) = input {
            admin
                .write_all(&Frame::Stdin(input.to_vec()).encode())
                .await
                .expect("the session takes input");
            admin
                .write_all(&Frame::StdinEnd.encode())
                .await
                .expect("the session takes input");
        }
        let mut bytes = Vec::new();
        admin
            .read_to_end(&mut bytes)
            .await
            .expect("the session answers");
        served
            .await
            .expect("the session does not panic")
            .expect("the session runs");
        let mut d = Decoder::default();
        d.push(&bytes);
        let (mut out, mut err, mut last) = (Vec::new(), Vec::new(), None);
        while let Some(f) = d.next_frame().expect("the node sends frames") {
            match f {
                Frame::Stdout(b) => out.extend(b),
                Frame::Stderr(b) => err.extend(b),
                other => last = Some(other),
            }
        }
        (
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
            last.expect("a last frame"),
        )
    }

    /// The frames a log session of the task directory `dir` sends.
    async fn log_frames(dir: &crate::runtime::TaskDir) -> Vec<Frame> {
        let (mut admin, node) = tokio::io::duplex(1 << 20);
        let logs = TaskLogs {
            task: "t".into(),
            follow: false,
        };
        serve_logs(node, dir, &logs)
            .await
            .expect("the session is served");
        let mut bytes = Vec::new();
        admin
            .read_to_end(&mut bytes)
            .await
            .expect("the frames are read");
        let mut decoder = Decoder::default();
        decoder.push(&bytes);
        let mut frames = Vec::new();
        while let Some(f) = decoder.next_frame().expect("frames decode") {
            frames.push(f);
        }
        frames
    }

    #[tokio::test]
    async fn a_log_session_sends_stdout_then_stderr_in_frames_then_ends() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = crate::runtime::TaskDir(tmp.path().to_path_buf());
        std::fs::create_dir_all(dir.0.join("logs")).expect("logs");
        std::fs::write(dir.0.join("spec.json"), "{}").expect("spec");
        // Longer than a frame: it comes in several.
        let long = vec![b'x'; control::exec::MAX_FRAME + 10];
        std::fs::write(dir.stdout_log(), &long).expect("stdout");
        std::fs::write(dir.stderr_log(), "err\n").expect("stderr");
        let frames = log_frames(&dir).await;
        let kinds: Vec<String> = frames
            .iter()
            .map(|f| match f {
                Frame::Stdout(b) => format!("stdout {}", b.len()),
                Frame::Stderr(b) => format!("stderr {:?}", String::from_utf8_lossy(b)),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                format!("stdout {}", control::exec::MAX_FRAME),
                "stdout 10".to_string(),
                "stderr \"err\\n\"".to_string(),
                "Exit(0)".to_string(),
            ]
        );
    }

    #[tokio::test]
    async fn a_log_session_of_a_task_the_node_does_not_hold_fails() {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = crate::runtime::TaskDir(tmp.path().join("gone"));
        let frames = log_frames(&dir).await;
        assert_eq!(
            frames,
            [Frame::Failed(
                "no task `t` on this node (its directory is gone)".into()
            )]
        );
    }

    #[tokio::test]
    async fn output_streams_and_the_exit_code_come_back() {
        let (out, err, last) =
            run(&["sh", "-c", "echo out; echo err >&2; exit 7"], false, None).await;
        assert_eq!(
            (out.as_str(), err.as_str(), last),
            ("out\n", "err\n", Frame::Exit(7))
        );
    }

    #[tokio::test]
    async fn input_is_forwarded_and_ended() {
        let (out, _, last) = run(&["cat"], false, Some(b"hello\n")).await;
        assert_eq!((out.as_str(), last), ("hello\n", Frame::Exit(0)));
    }

    #[tokio::test]
    async fn a_terminal_has_the_asked_size_and_is_the_controlling_one() {
        let (out, err, last) =
            run(&["sh", "-c", "stty size; tty -s && echo tty"], true, None).await;
        assert_eq!(
            (out.as_str(), err.as_str(), last),
            ("30 100\r\ntty\r\n", "", Frame::Exit(0))
        );
    }

    #[tokio::test]
    async fn a_terminal_without_input_ends_it_at_once() {
        let (_, _, last) = run(&["cat"], true, None).await;
        assert_eq!(last, Frame::Exit(0));
    }

    #[tokio::test]
    async fn a_missing_program_is_named() {
        let (_, _, last) = run(&["/nonexistent/prog"], false, None).await;
        assert_eq!(
            last,
            Frame::Failed(
                "cannot run `/nonexistent/prog`: No such file or directory (os error 2)".into()
            )
        );
    }

    #[tokio::test]
    async fn what_the_command_leaves_running_does_not_hold_the_session() {
        let (out, _, last) = run(&["sh", "-c", "sleep 600 & echo started"], false, None).await;
        assert_eq!((out.as_str(), last), ("started\n", Frame::Exit(0)));
    }

    #[tokio::test]
    async fn a_signal_is_reported_as_shells_do() {
        let (_, _, last) = run(&["sh", "-c", "kill -TERM $$"], false, None).await;
        assert_eq!(last, Frame::Exit(128 + 15));
    }
}
