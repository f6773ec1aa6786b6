//! Health checks of this node's tasks, as their specs ask
//! (`TaskSpec::health_checks`): HTTP and TCP from inside the task's
//! network namespace (a thread of their own enters it, so a server bound
//! to the task's loopback answers too), COMMAND inside the container
//! (`strata task exec`, a process of its own). Each check runs every
//! `interval_seconds`, on a blocking thread, bounded by `timeout_seconds`.
//!
//! Marathon's rules: failures during `grace_period_seconds` after the task
//! started count only once the task was healthy; `max_consecutive_failures`
//! failures in a row (when not 0) kill the task, which then ends (and the
//! scheduler replaces it with the app's backoff). A task is healthy when
//! its every check last passed.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::app::{HealthCheck, HealthProtocol};
use control::task::Health;

use super::{TaskInfo, TaskSpec, TaskState};

/// What is known of one check of one task.
#[derive(Debug)]
struct CheckState {
    last_run: Option<Instant>,
    running: bool,
    /// The last result (none yet).
    passed: Option<bool>,
    failures: u32,
}

/// One task's checks.
#[derive(Debug)]
struct TaskChecks {
    /// When this node first saw it running.
    since: Instant,
    ever_healthy: bool,
    checks: Vec<Arc<Mutex<CheckState>>>,
}

/// The health checks of a node's tasks.
pub struct Prober {
    state_dir: PathBuf,
    exe: PathBuf,
    tasks: HashMap<String, TaskChecks>,
}

/// What a round of [`Prober::tick`] found.
#[derive(Debug, Default)]
pub struct Found {
    /// Health per task that has checks.
    pub health: HashMap<String, Health>,
    /// Tasks whose checks failed too often in a row: to kill.
    pub kill: Vec<String>,
}

impl Prober {
    pub fn new(state_dir: &Path, exe: PathBuf) -> Prober {
        Prober {
            state_dir: state_dir.to_path_buf(),
            exe,
            tasks: HashMap::new(),
        }
    }

    /// Starts the checks that are due, and reads what the finished ones
    /// found.
    pub fn tick(&mut self, desired: &[TaskSpec], local: &[TaskInfo]) -> Found {
        let mut found = Found::default();
        self.tasks.retain(|id, _| {
            local
                .iter()
                .any(|t| &t.id == id && t.state == TaskState::Running)
        });
        for spec in desired {
            if spec.health_checks.is_empty() {
                continue;
            }
            let Some(task) = local
                .iter()
                .find(|t| t.id == spec.id && t.state == TaskState::Running)
            else {
                continue;
            };
            let Some(pid) = task.pid else { continue };
            let t = self
                .tasks
                .entry(spec.id.clone())
                .or_insert_with(|| TaskChecks {
                    since: Instant::now(),
                    ever_healthy: false,
                    checks: spec
                        .health_checks
                        .iter()
                        .map(|_| {
                            Arc::new(Mutex::new(CheckState {
                                last_run: None,
                                running: false,
                                passed: None,
                                failures: 0,
                            }))
                        })
                        .collect(),
                });
            let mut all_passed = true;
            let mut any_failed = false;
            let mut kill = false;
            for (check, state) in spec.health_checks.iter().zip(&t.checks) {
                let mut s = state.lock().expect("check state lock poisoned");
                let in_grace = !t.ever_healthy
                    && t.since.elapsed()
                        < Duration::from_secs(u64::from(check.grace_period_seconds));
                match s.passed {
                    Some(true) => {}
                    Some(false) if in_grace => all_passed = false,
                    Some(false) => {
                        all_passed = false;
                        any_failed = true;
                        if check.max_consecutive_failures > 0
                            && s.failures >= check.max_consecutive_failures
                        {
                            kill = true;
                        }
                    }
                    None => all_passed = false,
                }
                let due = s.last_run.is_none_or(|at| {
                    at.elapsed() >= Duration::from_secs(u64::from(check.interval_seconds.max(1)))
                });
                if due && !s.running {
                    s.running = true;
                    s.last_run = Some(Instant::now());
                    drop(s);
                    start(
                        (&self.exe, &self.state_dir),
                        spec,
                        task,
                        pid,
                        check,
                        state.clone(),
                        in_grace,
                    );
                }
            }
            if all_passed {
                t.ever_healthy = true;
            }
            let health = if all_passed {
                Health::Healthy
            } else if any_failed {
                Health::Unhealthy
            } else {
                Health::Unknown
            };
            found.health.insert(spec.id.clone(), health);
            if kill {
                found.kill.push(spec.id.clone());
            }
        }
        found
    }
}

/// Runs one check on a thread of its own; its result lands in `state`.
fn start(
    (exe, state_dir): (&Path, &Path),
    spec: &TaskSpec,
    task: &TaskInfo,
    pid: i32,
    check: &HealthCheck,
    state: Arc<Mutex<CheckState>>,
    in_grace: bool,
) {
    let check = check.clone();
    let (exe, state_dir, id) = (exe.to_path_buf(), state_dir.to_path_buf(), spec.id.clone());
    let address = task.address;
    std::thread::spawn(move || {
        let passed = match run(&check, pid, address, &exe, &state_dir, &id) {
            Ok(()) => true,
            Err(why) => {
                tracing::debug!(task = %id, "health check {:?} failed: {why}", check.protocol);
                false
            }
        };
        let mut s = state.lock().expect("check state lock poisoned");
        s.running = false;
        s.passed = Some(passed);
        if passed {
            s.failures = 0;
        } else if !in_grace {
            s.failures += 1;
        }
    });
}

/// Runs one check; `Err` says why it failed.
fn run(
    check: &HealthCheck,
    pid: i32,
    address: Option<Ipv4Addr>,
    exe: &Path,
    state_dir: &Path,
    id: &str,
) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
    match check.protocol {
        HealthProtocol::Command => {
            let cmd = check.command.as_deref().ok_or("no command")?;
            command(exe, state_dir, id, cmd, timeout)
        }
        HealthProtocol::Tcp | HealthProtocol::Http | HealthProtocol::Https => {
            let port = check.port.ok_or("no port to check")?;
            // The task's own address where it has one (a server bound to
            // it answers there, one bound to all addresses too).
            let host = address.unwrap_or(Ipv4Addr::LOCALHOST);
            let check = check.clone();
            in_netns(pid, move || {
                probe(SocketAddr::from((host, port)), &check, timeout)
            })
        }
        HealthProtocol::Unknown => Err("a check of a kind this node does not know".into()),
    }
}

/// Connects to `addr` and, for HTTP and HTTPS, asks for the check's path;
/// `Err` says why the check failed.
fn probe(addr: SocketAddr, check: &HealthCheck, timeout: Duration) -> Result<(), String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    match check.protocol {
        HealthProtocol::Http => http(&mut stream, check),
        HealthProtocol::Https => {
            let config =
                crate::api::tls::health_check_client_config().map_err(|e| format!("TLS: {e}"))?;
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let mut tls = rustls::ClientConnection::new(Arc::new(config), name)
                .map_err(|e| format!("TLS: {e}"))?;
            http(&mut rustls::Stream::new(&mut tls, &mut stream), check)
        }
        _ => Ok(()),
    }
}

/// A GET of the check's path (over TLS for HTTPS): a 2xx or 3xx answer
/// passes (a 1xx one too with `ignore_http1xx`, as Marathon counts it
/// neither way).
fn http(stream: &mut (impl Read + Write), check: &HealthCheck) -> Result<(), String> {
    let path = check.path.as_deref().unwrap_or("/");
    // One write: over TLS, one record; over TCP, one segment.
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: strata-health\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .and_then(|()| stream.flush())
        .map_err(|e| format!("send: {e}"))?;
    // The status line may come in pieces: read until its end, a full
    // buffer or the end of the answer.
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < head.len() && !head[..n].contains(&b'\n') {
        match stream
            .read(&mut head[n..])
            .map_err(|e| format!("answer: {e}"))?
        {
            0 => break,
            got => n += got,
        }
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    match status {
        200..=399 => Ok(()),
        100..=199 if check.ignore_http1xx => Ok(()),
        s => Err(format!("HTTP {s}")),
    }
}

/// Runs `f` on a thread that entered the network namespace of process
/// `pid`.
fn in_netns(
    pid: i32,
    f: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Result<(), String> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| format!("the task's network namespace: {e}"))?;
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot enter the task's network namespace: {e}"))?;
        f()
    })
    .join()
    .map_err(|_| "the check's thread panicked".to_string())?
}

/// Runs `cmd` with `/bin/sh -c` inside the task's container; exit 0
/// passes. Killed at `timeout`.
fn command(
    exe: &Path,
    state_dir: &Path,
    id: &str,
    cmd: &str,
    timeout: Duration,
) -> Result<(), String> {
    let mut child = std::process::Command::new(exe)
        .args(["task", "exec", id, "--state-dir"])
        .arg(state_dir)
        .args(["--", "/bin/sh", "-c", cmd])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run the command: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("the command ended with {status}")),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// What kind of server answers on the test port.
    enum Server {
        Http(&'static str),
        /// TLS with a self-signed certificate for a name that is not the
        /// address checked, as a task's own certificate is.
        Https(&'static str),
        None,
    }

    /// Serves one connection as `server` says and runs a check of
    /// `protocol` against it.
    fn check(server: Server, protocol: HealthProtocol, expected: Result<(), &str>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
        let addr = listener.local_addr().expect("its address");
        let serve = |s: &mut dyn ReadWrite, status: &str| {
            // The whole request, up to its blank line, before answering:
            // closing with some of it unread would reset the connection.
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ =
                s.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes());
            let _ = s.flush();
        };
        let server = match server {
            Server::None => {
                drop(listener);
                None
            }
            Server::Http(status) => Some(std::thread::spawn(move || {
                let (mut s, _) = listener.accept().expect("accept");
                serve(&mut s, status);
            })),
            Server::Https(status) => Some(std::thread::spawn(move || {
                crate::api::tls::install_default_provider();
                let cert = rcgen::generate_simple_self_signed(vec!["web.example".into()])
                    .expect("a self-signed certificate");
                let config = rustls::ServerConfig::builder()
                    .with_no_client_auth()
                    .with_single_cert(
                        vec![cert.cert.der().clone()],
                        rustls::pki_types::PrivateKeyDer::Pkcs8(
                            cert.signing_key.serialize_der().into(),
                        ),
                    )
                    .expect("a server config");
                let (s, _) = listener.accept().expect("accept");
                let conn = rustls::ServerConnection::new(Arc::new(config)).expect("a session");
                let mut tls = rustls::StreamOwned::new(conn, s);
                serve(&mut tls, status);
                tls.conn.send_close_notify();
                let _ = tls.flush();
            })),
        };
        let mut hc = HealthCheck::new(protocol);
        hc.path = Some("/health".into());
        let actual = probe(addr, &hc, Duration::from_secs(1));
        if let Some(server) = server {
            server.join().expect("the test server");
        }
        match (actual, expected) {
            (Ok(()), Ok(())) => {}
            (Err(why), Err(want)) => assert!(why.contains(want), "{why:?} lacks {want:?}"),
            (actual, expected) => panic!("{actual:?}, expected {expected:?}"),
        }
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    #[test]
    fn checks() {
        use HealthProtocol::*;
        check(Server::Http("200 OK"), Tcp, Ok(()));
        check(Server::None, Tcp, Err("connect 127.0.0.1:"));
        check(Server::Http("200 OK"), Http, Ok(()));
        check(Server::Http("302 Found"), Http, Ok(()));
        check(
            Server::Http("503 Service Unavailable"),
            Http,
            Err("HTTP 503"),
        );
        check(Server::Https("204 No Content"), Https, Ok(()));
        check(Server::Https("500 Oops"), Https, Err("HTTP 500"));
        // A plain HTTP server does not pass an HTTPS check: it waits for
        // a request that never comes, the handshake until the timeout.
        check(Server::Http("200 OK"), Https, Err("send:"));
        // Nor a TLS one an HTTP check: it waits for the rest of what it
        // takes for a TLS record until the check's timeout.
        check(Server::Https("200 OK"), Http, Err("answer:"));
    }
}
