//! The edge proxy's plan: what a public agent's HAProxy serves, from the
//! services of the node watch ([`plan`]), and how to go from the plan in
//! force to the next one ([`changes`]): through the proxy's runtime API
//! when only servers moved (an instance started, stopped, turned healthy
//! or not; no reload, no connection dropped), or by a reload when the
//! structure changed (a route, a TCP port or a backend appeared or went,
//! or a backend needs more server slots).
//!
//! Pure. The agent renders the plan as HAProxy's configuration and speaks
//! to HAProxy (`agent::edge`); this module knows nothing of either.
//!
//! Each exposed app port gets a backend per mode (`shop.web.p0.http`,
//! `shop.web.p0.tcp`) with a fixed number of server slots, a power of two
//! of at least [`MIN_SLOTS`] and twice the instances, so that a rolling
//! deployment (old and new instances side by side) fits without a reload;
//! the slots grow only once the instances outnumber them.
//! An instance keeps its slot from one plan to the next; a new one takes
//! the lowest free slot; a backend's slots never shrink while it lives.
//! A server is `ready` while the cluster says its instance takes new
//! connections, `drain` while it is being stopped (its connections finish)
//! and `maint` otherwise: the cluster's health checks decide, not the
//! proxy's.
//!
//! TLS: a host with a certificate ([`EdgeCert`], set by an operator with
//! `strata edge cert set`) is served on the HTTPS port too, with the same
//! routes; its routes that ask for `redirect_https` answer plain HTTP with
//! a redirect. A host without one is served over HTTP only.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

use crate::app::Exposure;
use crate::format::Format;
use crate::model::EdgeSettings;
use crate::service::{BackendState, Service};

/// The fewest server slots a backend has.
pub const MIN_SLOTS: usize = 8;

/// A host's certificate for the edge, as stored (`/strata/edge/certs/
/// <host>`) and handed to public agents in their assignment watch: the
/// PEM holds the certificate chain and its private key. Never served to
/// operators ([`EdgeCertView`] is what they see).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCert {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub pem: String,
    /// What an operator sees of it.
    #[serde(flatten)]
    pub view: EdgeCertView,
}

/// A host's certificate without its key: what `strata edge cert list`
/// shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCertView {
    pub host: String,
    /// Hex sha256 of the leaf certificate (DER), as `openssl x509
    /// -fingerprint -sha256` prints it without colons.
    pub sha256: String,
    /// The leaf's DNS names.
    #[serde(default)]
    pub names: Vec<String>,
    /// Unix seconds after which the leaf is no longer valid.
    pub not_after: u64,
    /// Who set it (the operator's label).
    #[serde(default)]
    pub set_by: String,
    /// Unix seconds.
    #[serde(default)]
    pub set_at: u64,
}

impl EdgeCert {
    /// The largest PEM (chain and key) a certificate may have.
    pub const MAX_PEM: usize = 48 << 10;
}

/// The body of `PUT /v1/edge/certs/{host}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCertRequest {
    /// The certificate chain (leaf first) and its private key, PEM.
    pub pem: String,
}

/// The hosts that have a certificate, each with a digest of its PEM (a
/// new certificate for a host changes the plan).
pub type TlsHosts = BTreeMap<String, String>;

/// The digest [`TlsHosts`] keeps of a certificate: hex sha256 of its PEM
/// (chain and key).
pub fn tls_digest(cert: &EdgeCert) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(cert.pem.as_bytes()))
}

/// The [`TlsHosts`] of `certs`.
pub fn tls_hosts(certs: &[EdgeCert]) -> TlsHosts {
    certs
        .iter()
        .map(|c| (c.view.host.clone(), tls_digest(c)))
        .collect()
}

/// What one public agent's edge proxy serves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgePlan {
    /// The HTTP frontend's port, when any route is exposed over HTTP.
    pub http_port: Option<u16>,
    /// The HTTPS frontend, when a routed host has a certificate.
    pub https: Option<Https>,
    /// HTTP routes, by host, then the longest path first (the first route
    /// that matches a request takes it).
    pub routes: Vec<Route>,
    /// TCP frontends, by port.
    pub tcp: Vec<TcpFrontend>,
    /// Backends, by name.
    pub backends: Vec<EdgeBackend>,
}

/// The HTTPS frontend: its port and the routed hosts with a certificate
/// (host to [`tls_digest`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Https {
    pub port: u16,
    pub hosts: TlsHosts,
}

/// Requests to `host` whose path is `path` or lies under it go to
/// `backend`, or are redirected to HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: String,
    pub path: String,
    pub backend: String,
    /// Plain HTTP gets a redirect to HTTPS (only when `tls`).
    pub redirect_https: bool,
    /// The host has a certificate: the route is served over HTTPS too.
    pub tls: bool,
}

/// Connections to the public agents' TCP `port` go to `backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpFrontend {
    pub port: u16,
    pub backend: String,
}

/// How a backend proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http,
    Tcp,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Http => "http",
            Mode::Tcp => "tcp",
        })
    }
}

/// One app port in one mode: its server slots (`None`: free).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeBackend {
    pub name: String,
    pub mode: Mode,
    pub slots: Vec<Option<Server>>,
}

/// One instance in a slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub task: String,
    pub addr: SocketAddrV4,
    pub state: ServerState,
}

/// Whether a server takes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Takes new connections.
    Ready,
    /// Finishes what it has, takes nothing new.
    Drain,
    /// Takes nothing (down, unhealthy, unchecked, or a free slot).
    Maint,
}

impl fmt::Display for ServerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerState::Ready => "ready",
            ServerState::Drain => "drain",
            ServerState::Maint => "maint",
        })
    }
}

/// The name of the backend of `service` in `mode`.
pub fn backend_name(service: &Service, mode: Mode) -> String {
    format!("{}.p{}.{mode}", service.app.key(), service.port)
}

/// The server name of slot `i` (`s0`, `s1`, ...).
pub fn server_name(i: usize) -> String {
    format!("s{i}")
}

fn slot_count(instances: usize) -> usize {
    (2 * instances).max(MIN_SLOTS).next_power_of_two()
}

/// The edge of `services` on a node whose frontends listen on `ports`,
/// serving the hosts of `certs` over HTTPS too, keeping each instance in
/// the slot it has in `previous` (the plan in force).
pub fn plan(
    services: &[Service],
    ports: EdgeSettings,
    certs: &TlsHosts,
    previous: Option<&EdgePlan>,
) -> EdgePlan {
    let old: BTreeMap<&str, &EdgeBackend> = previous
        .map(|p| p.backends.iter().map(|b| (b.name.as_str(), b)).collect())
        .unwrap_or_default();
    let mut out = EdgePlan::default();
    for s in services {
        let mut modes = Vec::new();
        for e in &s.expose {
            match e {
                Exposure::Http {
                    host,
                    path,
                    redirect_https,
                } => {
                    let tls = certs.contains_key(host);
                    out.routes.push(Route {
                        host: host.clone(),
                        path: path.clone(),
                        backend: backend_name(s, Mode::Http),
                        redirect_https: *redirect_https && tls,
                        tls,
                    });
                    modes.push(Mode::Http);
                }
                Exposure::Tcp { port } => {
                    out.tcp.push(TcpFrontend {
                        port: *port,
                        backend: backend_name(s, Mode::Tcp),
                    });
                    modes.push(Mode::Tcp);
                }
                Exposure::Unknown => {}
            }
        }
        for mode in [Mode::Http, Mode::Tcp] {
            if modes.contains(&mode) {
                let name = backend_name(s, mode);
                let slots = place(s, old.get(name.as_str()).copied());
                out.backends.push(EdgeBackend { name, mode, slots });
            }
        }
    }
    if !out.routes.is_empty() {
        out.http_port = Some(ports.http_port);
    }
    let hosts: TlsHosts = out
        .routes
        .iter()
        .filter_map(|r| Some((r.host.clone(), certs.get(&r.host)?.clone())))
        .collect();
    if !hosts.is_empty() {
        out.https = Some(Https {
            port: ports.https_port,
            hosts,
        });
    }
    out.routes.sort_by(|a, b| {
        (&a.host, std::cmp::Reverse(a.path.len()), &a.path).cmp(&(
            &b.host,
            std::cmp::Reverse(b.path.len()),
            &b.path,
        ))
    });
    out.tcp.sort_by_key(|t| t.port);
    out.backends.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The slots of `service`'s backend: instances that had a slot in `old`
/// keep it, new ones take the lowest free one; the slots grow (to a power
/// of two of twice the instances) once the instances no longer fit, and
/// never shrink.
fn place(service: &Service, old: Option<&EdgeBackend>) -> Vec<Option<Server>> {
    let servers: Vec<Server> = service
        .backends
        .iter()
        .map(|b| Server {
            task: b.task.clone(),
            addr: b.addr,
            state: match b.state {
                BackendState::Ready => ServerState::Ready,
                BackendState::Draining => ServerState::Drain,
                BackendState::Down | BackendState::Unknown => ServerState::Maint,
            },
        })
        .collect();
    // Grown only once the instances outnumber the slots: a rolling
    // deployment's surge fits the slots its first plan gave.
    let count = match old {
        Some(old) if old.slots.len() >= servers.len() => old.slots.len(),
        _ => slot_count(servers.len()),
    };
    let mut slots: Vec<Option<Server>> = vec![None; count];
    for (i, was) in old.iter().flat_map(|o| o.slots.iter().enumerate()) {
        if let Some(was) = was
            && let Some(now) = servers.iter().find(|s| s.task == was.task)
        {
            slots[i] = Some(now.clone());
        }
    }
    for s in servers {
        if slots.iter().flatten().any(|t| t.task == s.task) {
            continue;
        }
        if let Some(free) = slots.iter_mut().find(|x| x.is_none()) {
            *free = Some(s);
        }
    }
    slots
}

/// One command of HAProxy's runtime API (its admin socket), as the line
/// it sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeCmd {
    /// `set server B/S addr A port P`
    Addr {
        backend: String,
        slot: usize,
        addr: SocketAddrV4,
    },
    /// `set server B/S state ready|drain|maint`
    State {
        backend: String,
        slot: usize,
        state: ServerState,
    },
}

impl fmt::Display for RuntimeCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeCmd::Addr {
                backend,
                slot,
                addr,
            } => write!(
                f,
                "set server {backend}/{} addr {} port {}",
                server_name(*slot),
                addr.ip(),
                addr.port()
            ),
            RuntimeCmd::State {
                backend,
                slot,
                state,
            } => write!(
                f,
                "set server {backend}/{} state {state}",
                server_name(*slot)
            ),
        }
    }
}

/// How to go from one plan to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeChange {
    /// The plans are equal.
    None,
    /// Only servers moved: these commands, in order, over the runtime API.
    Runtime(Vec<RuntimeCmd>),
    /// The structure changed: render the configuration again and reload.
    Reload,
}

/// What takes `applied` (the plan in force) to `next`.
pub fn changes(applied: &EdgePlan, next: &EdgePlan) -> EdgeChange {
    if applied == next {
        return EdgeChange::None;
    }
    let same_shape =
        applied.http_port == next.http_port
            && applied.https == next.https
            && applied.routes == next.routes
            && applied.tcp == next.tcp
            && applied.backends.len() == next.backends.len()
            && applied.backends.iter().zip(&next.backends).all(|(a, b)| {
                a.name == b.name && a.mode == b.mode && a.slots.len() == b.slots.len()
            });
    if !same_shape {
        return EdgeChange::Reload;
    }
    // Servers that take connections first, those that stop taking them
    // after: a batch never leaves a backend without a ready server that
    // it ends with.
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for (a, b) in applied.backends.iter().zip(&next.backends) {
        for (slot, (was, now)) in a.slots.iter().zip(&b.slots).enumerate() {
            let was_state = was.as_ref().map_or(ServerState::Maint, |w| w.state);
            let state = |state| RuntimeCmd::State {
                backend: b.name.clone(),
                slot,
                state,
            };
            let addr = now
                .as_ref()
                .filter(|n| was.as_ref().is_none_or(|w| w.addr != n.addr))
                .map(|n| RuntimeCmd::Addr {
                    backend: b.name.clone(),
                    slot,
                    addr: n.addr,
                });
            let now_state = now.as_ref().map_or(ServerState::Maint, |n| n.state);
            if now_state == ServerState::Ready {
                up.extend(addr);
                if was_state != ServerState::Ready {
                    up.push(state(ServerState::Ready));
                }
            } else {
                if was_state != now_state {
                    down.push(state(now_state));
                }
                down.extend(addr);
            }
        }
    }
    up.extend(down);
    let cmds = up;
    EdgeChange::Runtime(cmds)
}

/// Where outside clients reach one exposed port of an app
/// (`strata app show`): its URL and the public agents that serve it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExposedView {
    /// The index of the app's port.
    pub port_index: usize,
    /// `http://shop.test/api`, `https://shop.test/api`, `tcp://:10100`.
    pub url: String,
    /// Each Ready public agent that serves it: `public-1 203.0.113.7:80`.
    #[serde(default)]
    pub at: Vec<String>,
    /// What else to know: "redirected to https", "certificate valid until
    /// <unix seconds>", "no public agent is Ready".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The [`ExposedView`]s of `ports` (an app's), served by `public` (Ready
/// public agents: name and address) on `edge`'s ports, with the hosts of
/// `certs` over HTTPS too. Pure.
pub fn exposed(
    ports: &[crate::app::PortSpec],
    public: &[(String, String)],
    edge: EdgeSettings,
    certs: &[EdgeCertView],
) -> Vec<ExposedView> {
    let at = |port: u16| -> Vec<String> {
        public
            .iter()
            .map(|(name, addr)| format!("{name} {addr}:{port}"))
            .collect()
    };
    let none = public
        .is_empty()
        .then(|| "no public agent is Ready".to_string());
    let mut out = Vec::new();
    for (port_index, p) in ports.iter().enumerate() {
        for e in &p.expose {
            match e {
                Exposure::Http {
                    host,
                    path,
                    redirect_https,
                } => {
                    let cert = certs.iter().find(|c| &c.host == host);
                    let redirected = *redirect_https && cert.is_some();
                    out.push(ExposedView {
                        port_index,
                        url: format!("http://{host}{path}"),
                        at: at(edge.http_port),
                        note: none.clone().or_else(|| {
                            if redirected {
                                Some("redirected to https".into())
                            } else if *redirect_https {
                                Some("asks for https, but the host has no certificate (strata edge cert set)".into())
                            } else {
                                None
                            }
                        }),
                    });
                    if let Some(cert) = cert {
                        out.push(ExposedView {
                            port_index,
                            url: format!("https://{host}{path}"),
                            at: at(edge.https_port),
                            note: none.clone().or_else(|| {
                                Some(format!(
                                    "certificate valid until {}",
                                    crate::job::tz::utc(cert.not_after)
                                ))
                            }),
                        });
                    }
                }
                Exposure::Tcp { port } => out.push(ExposedView {
                    port_index,
                    url: format!("tcp://:{port}"),
                    at: at(*port),
                    note: none.clone(),
                }),
                Exposure::Unknown => {}
            }
        }
    }
    out
}

/// The TCP ports the edge of `plan` listens on, sorted: what a public
/// agent's firewall opens to everyone.
pub fn ports(plan: &EdgePlan) -> Vec<u16> {
    let mut out: Vec<u16> = plan.http_port.into_iter().collect();
    out.extend(plan.https.as_ref().map(|h| h.port));
    out.extend(plan.tcp.iter().map(|t| t.port));
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
