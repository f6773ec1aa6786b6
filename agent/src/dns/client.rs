//! A small blocking DNS query over UDP, usable from any thread (also one
//! that has entered a task's network namespace).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::Context as _;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// Sends one query for `name`/`rtype` to `server` and returns the reply.
pub fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> anyhow::Result<Message> {
    let qname = Name::from_ascii(name).with_context(|| format!("`{name}` is not a domain name"))?;
    let id = (std::process::id() as u16)
        ^ (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0) as u16);
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, rtype));
    let bytes = msg.to_vec().context("cannot encode the query")?;
    let sock = UdpSocket::bind("0.0.0.0:0").context("cannot bind a UDP socket")?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send_to(&bytes, server)
        .with_context(|| format!("cannot send to {server}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .with_context(|| format!("no answer from {server} for {name}"))?;
        if from != server {
            continue;
        }
        let reply =
            Message::from_vec(&buf[..n]).with_context(|| format!("bad answer from {server}"))?;
        if reply.metadata.id == id {
            return Ok(reply);
        }
    }
}

/// The A records of `name` from `server`.
pub fn lookup_a(server: SocketAddr, name: &str) -> anyhow::Result<Vec<Ipv4Addr>> {
    let reply = query(server, name, RecordType::A, Duration::from_secs(2))?;
    Ok(reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}
