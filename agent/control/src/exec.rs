//! Break-glass commands on a node (`strata node exec`): what an admin asks
//! for ([`ExecRequest`]), the session a master keeps in etcd for the node
//! to pick up ([`ExecSession`]), and the frames both ends exchange once
//! the master has joined the admin's connection to the node's
//! ([`Frame`], [`Decoder`]).
//!
//! The master never reads the frames: it copies bytes between the two
//! upgraded connections. The node is the one that runs the command, and
//! the CLI the one that shows it, so only they speak this format.

use serde::{Deserialize, Serialize};

use crate::format::Format;

/// The `Upgrade` header's protocol on both legs of a session.
pub const PROTOCOL: &str = "strata-exec.v1";

/// How long the master waits for the node to attach to a session before
/// it gives up and answers 504.
pub const ATTACH_WAIT_SECONDS: u64 = 30;

/// The most arguments a command may have.
pub const MAX_ARGS: usize = 256;
/// The most bytes all the arguments may have together.
pub const MAX_COMMAND_BYTES: usize = 16 << 10;
/// The largest payload of one frame. Writers split larger data.
pub const MAX_FRAME: usize = 64 << 10;

/// What an admin asks to run (`POST /v1/nodes/{name}/exec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// The program and its arguments, run without a shell.
    pub command: Vec<String>,
    /// Run it on a pseudo-terminal (`-t`): its output comes as one stream.
    #[serde(default)]
    pub tty: bool,
    /// Forward the admin's standard input (`-i`); otherwise the command's
    /// standard input is empty.
    #[serde(default)]
    pub stdin: bool,
    /// The terminal's size, for `tty`.
    #[serde(default)]
    pub rows: u16,
    #[serde(default)]
    pub cols: u16,
}

/// Why an [`ExecRequest`] is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecRequestError {
    #[error("the command is empty: name a program to run, as in `strata node exec NODE -- uptime`")]
    Empty,
    #[error("the command has {0} arguments; at most {MAX_ARGS} are allowed")]
    TooManyArgs(usize),
    #[error("the command has {0} bytes; at most {MAX_COMMAND_BYTES} are allowed")]
    TooLong(usize),
    #[error("argument {0} holds a NUL byte, which no program can receive")]
    Nul(usize),
    #[error("the program name is empty")]
    EmptyProgram,
}

impl ExecRequest {
    /// Checks what the master and the node both check before anything
    /// runs.
    pub fn validate(&self) -> Result<(), ExecRequestError> {
        if self.command.is_empty() {
            return Err(ExecRequestError::Empty);
        }
        if self.command.len() > MAX_ARGS {
            return Err(ExecRequestError::TooManyArgs(self.command.len()));
        }
        let bytes: usize = self.command.iter().map(String::len).sum();
        if bytes > MAX_COMMAND_BYTES {
            return Err(ExecRequestError::TooLong(bytes));
        }
        if let Some(i) = self.command.iter().position(|a| a.contains('\0')) {
            return Err(ExecRequestError::Nul(i));
        }
        if self.command[0].is_empty() {
            return Err(ExecRequestError::EmptyProgram);
        }
        Ok(())
    }
}

/// A session waiting for its node, kept in etcd under
/// `/strata/exec/<node>/<id>` (bound to a lease, so it goes with the
/// master that holds the admin's connection) and handed to the node in its
/// assignment watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSession {
    /// The record's format (absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// 32 hex digits, made by the master.
    pub id: String,
    pub node: String,
    pub request: ExecRequest,
    /// The master that holds the admin's connection.
    pub master: String,
    /// Who asked (the audit log's label of the token).
    pub requested_by: String,
    /// A log session: the node streams this task's output instead of
    /// running `request` (whose command is then empty, which a node too
    /// old to know log sessions refuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<TaskLogs>,
}

/// What a log session streams: a task's output as its node keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskLogs {
    pub task: String,
    /// Go on with what the task writes until it ends.
    #[serde(default)]
    pub follow: bool,
}

/// `POST /v1/tasks/{id}/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    #[serde(default)]
    pub follow: bool,
}

impl ExecSession {
    /// Whether `id` is a session id as masters make them: the node puts it
    /// in a path.
    pub fn valid_id(id: &str) -> bool {
        id.len() == 32
            && id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }
}

/// One frame of a session. On the wire: a type byte, the payload's length
/// as a big-endian u32, and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Admin to node: bytes for the command's standard input.
    Stdin(Vec<u8>),
    /// Admin to node: the standard input ended.
    StdinEnd,
    /// Admin to node: the terminal's new size.
    Resize { rows: u16, cols: u16 },
    /// Node to admin: output (all of it on a terminal).
    Stdout(Vec<u8>),
    /// Node to admin: the standard error.
    Stderr(Vec<u8>),
    /// Node to admin: the command ended with this code (128 + the signal
    /// when a signal ended it). The last frame.
    Exit(i32),
    /// Node to admin: the command could not run. The last frame.
    Failed(String),
}

const STDIN: u8 = 0;
const STDIN_END: u8 = 1;
const RESIZE: u8 = 2;
const STDOUT: u8 = 3;
const STDERR: u8 = 4;
const EXIT: u8 = 5;
const FAILED: u8 = 6;

impl Frame {
    /// The frame's bytes. Payloads longer than [`MAX_FRAME`] are the
    /// writer's mistake: split data with [`Frame::chunks`].
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Stdin(b) => (STDIN, b.into()),
            Frame::StdinEnd => (STDIN_END, Vec::new().into()),
            Frame::Resize { rows, cols } => {
                let mut p = rows.to_be_bytes().to_vec();
                p.extend_from_slice(&cols.to_be_bytes());
                (RESIZE, p.into())
            }
            Frame::Stdout(b) => (STDOUT, b.into()),
            Frame::Stderr(b) => (STDERR, b.into()),
            Frame::Exit(code) => (EXIT, code.to_be_bytes().to_vec().into()),
            Frame::Failed(why) => (FAILED, why.as_bytes().into()),
        };
        let len = u32::try_from(payload.len()).expect("frames are split below 4 GiB");
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// `data` as frames of `make`, each at most [`MAX_FRAME`] long.
    pub fn chunks(data: &[u8], make: fn(Vec<u8>) -> Frame) -> impl Iterator<Item = Frame> + '_ {
        data.chunks(MAX_FRAME).map(move |c| make(c.to_vec()))
    }
}

/// Why a stream of frames is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("a frame of {0} bytes is longer than the {MAX_FRAME} allowed")]
    TooLong(u32),
    #[error("the {what} frame has {len} bytes, expected {expected}")]
    BadLength {
        what: &'static str,
        len: usize,
        expected: usize,
    },
}

/// Reads frames out of the bytes of a stream as they arrive.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let kind = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len as usize > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        let end = 5 + len as usize;
        if self.buf.len() < end {
            return Ok(None);
        }
        let payload: Vec<u8> = self.buf[5..end].to_vec();
        self.buf.drain(..end);
        let fixed = |what, expected| {
            if payload.len() == expected {
                Ok(())
            } else {
                Err(FrameError::BadLength {
                    what,
                    len: payload.len(),
                    expected,
                })
            }
        };
        let frame = match kind {
            STDIN => Frame::Stdin(payload),
            STDIN_END => {
                fixed("stdin-end", 0)?;
                Frame::StdinEnd
            }
            RESIZE => {
                fixed("resize", 4)?;
                Frame::Resize {
                    rows: u16::from_be_bytes([payload[0], payload[1]]),
                    cols: u16::from_be_bytes([payload[2], payload[3]]),
                }
            }
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            EXIT => {
                fixed("exit", 4)?;
                Frame::Exit(i32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]))
            }
            FAILED => Frame::Failed(String::from_utf8_lossy(&payload).into_owned()),
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(command: &[&str]) -> ExecRequest {
        ExecRequest {
            command: command.iter().map(|s| s.to_string()).collect(),
            tty: false,
            stdin: false,
            rows: 0,
            cols: 0,
        }
    }

    #[test]
    fn requests_are_checked() {
        fn check(command: &[&str], expected: &str) {
            let got = match request(command).validate() {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            assert_eq!(got, expected, "{command:?}");
        }
        check(&["uptime"], "ok");
        check(&["sh", "-c", "echo hi"], "ok");
        check(
            &[],
            "the command is empty: name a program to run, as in `strata node exec NODE -- uptime`",
        );
        check(&["", "x"], "the program name is empty");
        check(
            &["echo", "a\0b"],
            "argument 1 holds a NUL byte, which no program can receive",
        );
        let many = vec!["x"; MAX_ARGS + 1];
        check(
            &many,
            "the command has 257 arguments; at most 256 are allowed",
        );
        let long = "y".repeat(MAX_COMMAND_BYTES);
        check(
            &["echo", &long],
            "the command has 16388 bytes; at most 16384 are allowed",
        );
    }

    #[test]
    fn session_ids_are_lowercase_hex() {
        assert!(ExecSession::valid_id("0123456789abcdef0123456789abcdef"));
        assert!(!ExecSession::valid_id("0123456789ABCDEF0123456789abcdef"));
        assert!(!ExecSession::valid_id("../../etc/passwd"));
        assert!(!ExecSession::valid_id(""));
    }

    #[test]
    fn frames_read_back_whole_and_split() {
        let frames = vec![
            Frame::Stdin(b"hello\n".to_vec()),
            Frame::StdinEnd,
            Frame::Resize {
                rows: 40,
                cols: 120,
            },
            Frame::Stdout(vec![0; 3]),
            Frame::Stderr(b"oops".to_vec()),
            Frame::Exit(-1),
            Frame::Failed("no such program".into()),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        // Fed one byte at a time, and all at once.
        for step in [1, bytes.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in bytes.chunks(step) {
                d.push(piece);
                while let Some(f) = d.next_frame().expect("frames decode") {
                    got.push(f);
                }
            }
            assert_eq!(got, frames);
        }
    }

    #[test]
    fn bad_frames_are_named() {
        fn check(bytes: &[u8], expected: &str) {
            let mut d = Decoder::default();
            d.push(bytes);
            let got = d.next_frame().expect_err("a bad frame").to_string();
            assert_eq!(got, expected);
        }
        check(&[9, 0, 0, 0, 0], "unknown frame type 9");
        check(
            &[STDOUT, 0, 1, 0, 1],
            "a frame of 65537 bytes is longer than the 65536 allowed",
        );
        check(
            &[EXIT, 0, 0, 0, 1, 7],
            "the exit frame has 1 bytes, expected 4",
        );
    }

    #[test]
    fn large_output_is_split() {
        let data = vec![7u8; MAX_FRAME * 2 + 1];
        let lens: Vec<usize> = Frame::chunks(&data, Frame::Stdout)
            .map(|f| match f {
                Frame::Stdout(b) => b.len(),
                _ => 0,
            })
            .collect();
        assert_eq!(lens, vec![MAX_FRAME, MAX_FRAME, 1]);
    }
}
