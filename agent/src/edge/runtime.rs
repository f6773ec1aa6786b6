//! HAProxy's runtime API over its admin socket: one connection per
//! command, so that each answer is read whole and checked on its own.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddrV4;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use control::edge::{EdgePlan, RuntimeCmd, ServerState, server_name};

/// How long one command may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A command HAProxy did not carry out.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot reach haproxy's admin socket {path}: {source}")]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("haproxy refused `{command}`: {answer}")]
    Refused { command: String, answer: String },
    #[error("cannot read haproxy's answer to `{command}`: {answer:?}")]
    Answer { command: String, answer: String },
}

/// Sends `line` and returns the answer.
pub fn ask(admin: &Path, line: &str) -> Result<String, RuntimeError> {
    let io = |source| RuntimeError::Socket {
        path: admin.to_path_buf(),
        source,
    };
    let mut s = UnixStream::connect(admin).map_err(io)?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    s.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(io)?;
    Ok(answer)
}

/// Sends `cmd`; an answer other than the command's success is an error.
pub fn send(admin: &Path, cmd: &RuntimeCmd) -> Result<(), RuntimeError> {
    let command = cmd.to_string();
    let answer = ask(admin, &command)?;
    let text = answer.trim();
    let ok = match cmd {
        RuntimeCmd::Addr { .. } => text.contains("changed") || text.starts_with("no need"),
        RuntimeCmd::State { .. } => text.is_empty(),
    };
    if ok {
        Ok(())
    } else {
        Err(RuntimeError::Refused {
            command,
            answer: text.to_string(),
        })
    }
}

/// The pid of the worker that answers on the admin socket.
pub fn worker_pid(admin: &Path) -> Result<u32, RuntimeError> {
    let answer = ask(admin, "show info")?;
    answer
        .lines()
        .find_map(|l| l.strip_prefix("Pid: "))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| RuntimeError::Answer {
            command: "show info".into(),
            answer,
        })
}

/// One server as the drift check compares it: where it sends new
/// connections, `None` when it takes none.
pub type ServerView = Option<SocketAddrV4>;

/// Every server of every backend, by backend and server name, from `show
/// servers state`.
pub fn servers(admin: &Path) -> Result<BTreeMap<(String, String), ServerView>, RuntimeError> {
    let answer = ask(admin, "show servers state")?;
    parse_servers(&answer).ok_or_else(|| RuntimeError::Answer {
        command: "show servers state".into(),
        answer,
    })
}

/// Reads `show servers state` (format 1: `be_id be_name srv_id srv_name
/// srv_addr srv_op_state srv_admin_state ... srv_port` at column 18).
pub fn parse_servers(answer: &str) -> Option<BTreeMap<(String, String), ServerView>> {
    let mut out = BTreeMap::new();
    let mut lines = answer.lines();
    if lines.next()?.trim() != "1" {
        return None;
    }
    for line in lines {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 19 {
            return None;
        }
        let admin: u32 = cols[6].parse().ok()?;
        // Forced, inherited or resolution maintenance; forced or
        // inherited drain.
        let ready = admin & 0x23 == 0 && admin & 0x18 == 0;
        let addr = if ready {
            Some(SocketAddrV4::new(
                cols[4].parse().ok()?,
                cols[18].parse().ok()?,
            ))
        } else {
            None
        };
        out.insert((cols[1].to_string(), cols[3].to_string()), addr);
    }
    Some(out)
}

/// What [`servers`] should find for `plan`.
pub fn expected(plan: &EdgePlan) -> BTreeMap<(String, String), ServerView> {
    let mut out = BTreeMap::new();
    for b in &plan.backends {
        for (i, s) in b.slots.iter().enumerate() {
            let view = match s {
                Some(s) if s.state == ServerState::Ready => Some(s.addr),
                _ => None,
            };
            out.insert((b.name.clone(), server_name(i)), view);
        }
    }
    out
}
