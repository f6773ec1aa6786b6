//! A tiny blocking HTTP/1.1 client over `std::net::TcpStream`, enough for
//! metadata services and plain `http://` URLs: one request per connection
//! (`Connection: close`), `Content-Length` or chunked bodies, no TLS, no
//! redirects.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Larger answers are refused: user-data is a few kilobytes.
const MAX_RESPONSE: u64 = 1 << 20;

/// One request.
pub(crate) struct Request<'a> {
    pub method: &'a str,
    /// The `Host` header.
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
}

/// A response, its body decoded.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `req` to `addr`.
pub(crate) fn send(addr: SocketAddr, req: &Request<'_>) -> io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, req.connect_timeout)?;
    exchange(&mut stream, req)
}

/// Resolves `host:port` and sends `req` to the first address that answers.
pub(crate) fn send_to_host(host: &str, port: u16, req: &Request<'_>) -> io::Result<Response> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{host} resolves to no address"),
    );
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, req.connect_timeout) {
            Ok(mut stream) => return exchange(&mut stream, req),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn exchange(stream: &mut TcpStream, req: &Request<'_>) -> io::Result<Response> {
    stream.set_read_timeout(Some(req.io_timeout))?;
    stream.set_write_timeout(Some(req.io_timeout))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        req.method, req.path, req.host
    );
    if req.method != "GET" {
        head.push_str("Content-Length: 0\r\n");
    }
    for (name, value) in req.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE + 1).read_to_end(&mut raw)?;
    if raw.len() as u64 > MAX_RESPONSE {
        return Err(invalid(format!(
            "response larger than {MAX_RESPONSE} bytes"
        )));
    }
    parse(&raw)
}

/// Parses a whole HTTP/1.x response.
pub(crate) fn parse(raw: &[u8]) -> io::Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| invalid("response ends inside its header"))?;
    let head =
        std::str::from_utf8(&raw[..end]).map_err(|_| invalid("response header is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line `{status_line}`")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    let rest = &raw[end + 4..];
    response.body = if response
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| invalid(format!("bad content-length `{len}`")))?;
        rest.get(..len)
            .ok_or_else(|| invalid("response body shorter than its content-length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| invalid("truncated chunk size"))?;
        let size = std::str::from_utf8(&rest[..eol]).ok().and_then(|s| {
            let s = s.split(';').next().unwrap_or_default().trim();
            usize::from_str_radix(s, 16).ok()
        });
        let size = size.ok_or_else(|| invalid("bad chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(rest.get(..size).ok_or_else(|| invalid("truncated chunk"))?);
        rest = rest
            .get(size + 2..)
            .ok_or_else(|| invalid("truncated chunk"))?;
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}
