//! A minimal HTTP/1.1 client and server for the tests and benchmarks that
//! go through the edge proxy: one request per connection from the client,
//! keep-alive on the server unless the request asks to close.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One `GET path` for `host` on a new connection to `addr`, from the
/// calling thread's network namespace: the status code (0 when the answer
/// has none) and the body, trimmed.
pub fn get(addr: SocketAddr, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Answers every request of `conn` with `200` and `body` (and a newline),
/// keeping the connection open unless a request says `Connection: close`.
pub fn serve(mut conn: TcpStream, body: &str) {
    let _ = conn.set_nodelay(true);
    let body = format!("{body}\n");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            let close = String::from_utf8_lossy(&head)
                .to_ascii_lowercase()
                .contains("connection: close");
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{}\r\n{body}",
                body.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            if conn.write_all(answer.as_bytes()).is_err() || close {
                return;
            }
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
