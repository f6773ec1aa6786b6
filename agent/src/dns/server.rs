//! The DNS server: names inside the cluster zone are answered from
//! [`Records`]; every other name goes to hickory's forwarder (a resolver
//! pointed at the upstream servers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::{LowerName, Name};
use hickory_resolver::config::{NameServerConfig, ResolverOpts};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::forwarder::{ForwardConfig, ForwardZoneHandler};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};

use super::records::Records;

/// Answers the zone from the records and forwards the rest.
pub struct Handler {
    zone: LowerName,
    records: Records,
    forward: Option<Catalog>,
}

impl Handler {
    /// `zone` like `strata.internal`; `upstreams` are resolver addresses
    /// (`ip:port`); with none, names outside the zone are refused.
    pub fn new(zone: &str, records: Records, upstreams: &[SocketAddr]) -> anyhow::Result<Handler> {
        let name = Name::from_ascii(zone).with_context(|| format!("`{zone}` is not a DNS zone"))?;
        let forward = if upstreams.is_empty() {
            None
        } else {
            let name_servers = upstreams
                .iter()
                .map(|u| {
                    let mut ns = NameServerConfig::udp_and_tcp(u.ip());
                    for c in &mut ns.connections {
                        c.port = u.port();
                    }
                    ns
                })
                .collect();
            let mut options = ResolverOpts::default();
            options.timeout = Duration::from_secs(2);
            options.attempts = 2;
            let fwd = ForwardZoneHandler::builder_tokio(ForwardConfig {
                name_servers,
                options: Some(options),
            })
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up forwarding to {upstreams:?}: {e}"))?;
            let mut catalog = Catalog::new();
            catalog.upsert(LowerName::from(Name::root()), vec![Arc::new(fwd)]);
            Some(catalog)
        };
        Ok(Handler {
            zone: LowerName::from(name),
            records,
            forward,
        })
    }
}

fn failed(request: &Request, code: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = code;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let Ok(info) = request.request_info() else {
            return failed(request, ResponseCode::FormErr);
        };
        let name = info.query.name().clone();
        let rtype = info.query.query_type();
        if self.zone.zone_of(&name) {
            let answer = self.records.read().answer(&self.zone, &name, rtype);
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.authoritative = true;
            metadata.recursion_available = self.forward.is_some();
            metadata.response_code = answer.code;
            let builder = MessageResponseBuilder::from_message_request(request);
            let response = builder.build(
                metadata,
                answer.answers.iter(),
                [].iter(),
                [].iter(),
                answer.additionals.iter(),
            );
            return match response_handle.send_response(response).await {
                Ok(info) => info,
                Err(_) => failed(request, ResponseCode::ServFail),
            };
        }
        match &self.forward {
            Some(catalog) => {
                catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
            None => {
                let builder = MessageResponseBuilder::from_message_request(request);
                let response = builder.error_msg(&request.metadata, ResponseCode::Refused);
                match response_handle.send_response(response).await {
                    Ok(info) => info,
                    Err(_) => failed(request, ResponseCode::ServFail),
                }
            }
        }
    }
}

/// A running DNS server; dropping it stops serving.
pub struct DnsServer {
    server: Server<Handler>,
    /// Where it listens (UDP and TCP on the same address).
    pub addr: SocketAddr,
}

impl DnsServer {
    /// Serves `handler` on UDP and TCP sockets already bound (in whatever
    /// namespace they were bound in). Must be called inside a tokio runtime.
    pub fn start(
        handler: Handler,
        udp: std::net::UdpSocket,
        tcp: Option<std::net::TcpListener>,
    ) -> anyhow::Result<DnsServer> {
        let addr = udp.local_addr().context("UDP socket has no address")?;
        udp.set_nonblocking(true)?;
        let mut server = Server::new(handler);
        server.register_socket(
            tokio::net::UdpSocket::from_std(udp).context("cannot register the UDP socket")?,
        );
        if let Some(tcp) = tcp {
            tcp.set_nonblocking(true)?;
            let tcp = tokio::net::TcpListener::from_std(tcp)
                .context("cannot register the TCP listener")?;
            server.register_listener(tcp, Duration::from_secs(5), 64);
        }
        Ok(DnsServer { server, addr })
    }

    /// Binds `addr` (UDP and TCP) and serves. With port 0, the port the
    /// system picks for UDP is taken for TCP too, trying again when that
    /// TCP port is in use.
    pub fn bind(handler: Handler, addr: SocketAddr) -> anyhow::Result<DnsServer> {
        let mut tries = 0;
        loop {
            let udp = std::net::UdpSocket::bind(addr)
                .with_context(|| format!("cannot bind UDP {addr}"))?;
            let picked = udp.local_addr()?;
            match std::net::TcpListener::bind(picked) {
                Ok(tcp) => return DnsServer::start(handler, udp, Some(tcp)),
                Err(e)
                    if addr.port() == 0
                        && e.kind() == std::io::ErrorKind::AddrInUse
                        && tries < 16 =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e).with_context(|| format!("cannot bind TCP {picked}")),
            }
        }
    }

    /// Stops serving and waits for the server's tasks.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.server
            .shutdown_gracefully()
            .await
            .context("DNS server shutdown")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use hickory_proto::rr::{RData, RecordType};

    use super::*;
    use crate::dns::client;
    use crate::dns::records::TaskRecord;

    /// A real UDP query against the server on loopback; a second server
    /// acts as the upstream for names outside the zone.
    #[test]
    fn answers_and_forwards_over_udp() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let upstream_records = Records::new();
        upstream_records.upsert(
            "www",
            TaskRecord {
                app: None,
                addr: Ipv4Addr::new(192, 0, 2, 80),
                ports: vec![],
                named: Default::default(),
            },
        );
        let local = Records::new();
        local.upsert(
            "web-1",
            TaskRecord {
                app: Some("web".into()),
                addr: Ipv4Addr::new(10, 200, 1, 2),
                ports: vec![8080],
                named: Default::default(),
            },
        );
        let (upstream, server) = rt.block_on(async {
            let upstream = DnsServer::bind(
                Handler::new("example.test", upstream_records, &[]).expect("handler"),
                "127.0.0.1:0".parse().expect("addr"),
            )
            .expect("upstream");
            let server = DnsServer::bind(
                Handler::new("strata.internal", local.clone(), &[upstream.addr]).expect("handler"),
                "127.0.0.1:0".parse().expect("addr"),
            )
            .expect("server");
            (upstream, server)
        });
        let addr = server.addr;
        assert_eq!(
            client::lookup_a(addr, "web.strata.internal.").expect("A"),
            [Ipv4Addr::new(10, 200, 1, 2)]
        );
        let srv = client::query(
            addr,
            "_web._tcp.strata.internal.",
            RecordType::SRV,
            Duration::from_secs(2),
        )
        .expect("SRV");
        let srv: Vec<String> = srv.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(srv, ["0 0 8080 web-1.strata.internal."]);
        // Forwarded through the upstream instance.
        assert_eq!(
            client::lookup_a(addr, "www.example.test.").expect("forwarded"),
            [Ipv4Addr::new(192, 0, 2, 80)]
        );
        let nx = client::query(
            addr,
            "nope.strata.internal.",
            RecordType::A,
            Duration::from_secs(2),
        )
        .expect("NX");
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);
        // Records follow a task stopping and starting, at once.
        local.remove("web-1");
        let gone = client::query(
            addr,
            "web.strata.internal.",
            RecordType::A,
            Duration::from_secs(2),
        )
        .expect("A");
        assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
        local.upsert(
            "web-2",
            TaskRecord {
                app: Some("web".into()),
                addr: Ipv4Addr::new(10, 200, 2, 9),
                ports: vec![],
                named: Default::default(),
            },
        );
        let back = client::query(
            addr,
            "web.strata.internal.",
            RecordType::A,
            Duration::from_secs(2),
        )
        .expect("A");
        assert!(
            matches!(back.answers.first().map(|r| &r.data), Some(RData::A(a)) if a.0 == Ipv4Addr::new(10, 200, 2, 9))
        );
        rt.block_on(async {
            server.stop().await.expect("stop");
            upstream.stop().await.expect("stop");
        });
    }
}
