//! How an app's port is reached from outside its tasks: an [`Exposure`]
//! on the public agents' edge proxy (HTTP by host name and path prefix,
//! or a public TCP port) and [`VipSpec`]s, the stable service addresses
//! that every node balances over the port's healthy instances.
//!
//! Both are read from Strata's TOML (`[[ports.expose]]`, `vips`) and from
//! Marathon's labels ([`marathon_labels`]: Marathon-LB's `HAPROXY_*` on
//! the app, DC/OS's `VIP_n` on a port), so that a Marathon app keeps its
//! meaning. Which host, path, port or VIP another app already holds is
//! the cluster's to say at deploy time; what one app asks for is checked
//! here ([`check_port`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::doc::Problems;
use super::group::Places;
use super::{PortSpec, Protocol, check_label};

/// The longest host name the edge routes (a DNS name's limit).
pub const MAX_HOST: usize = 253;
/// The longest path prefix the edge routes.
pub const MAX_PATH: usize = 1024;

/// One way a port is served by the edge proxy on the public agents.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Exposure {
    /// HTTP (and HTTPS where the host has a certificate) for requests to
    /// `host` whose path is `path` or lies under it.
    Http {
        /// A lowercase DNS name, no wildcard.
        host: String,
        /// A path prefix: `/`, or `/api` (no trailing `/`).
        #[serde(default = "root_path")]
        path: String,
        /// Plain HTTP requests are redirected to HTTPS.
        #[serde(default, skip_serializing_if = "is_false")]
        redirect_https: bool,
    },
    /// A TCP port of the public agents, proxied as a byte stream.
    Tcp { port: u16 },
    /// A kind a newer writer knows: kept, refused by [`check_port`].
    #[serde(other)]
    Unknown,
}

fn root_path() -> String {
    String::from("/")
}

fn is_false(b: &bool) -> bool {
    !b
}

impl Exposure {
    /// An HTTP exposure with its host lowercased and its path without a
    /// trailing `/` (`/api/` routes as `/api`).
    pub fn http(host: &str, path: &str, redirect_https: bool) -> Exposure {
        Exposure::Http {
            host: host.trim().to_ascii_lowercase(),
            path: normal_path(path.trim()),
            redirect_https,
        }
    }
}

fn normal_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() && path.starts_with('/') {
        root_path()
    } else {
        trimmed.to_string()
    }
}

impl fmt::Display for Exposure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exposure::Http {
                host,
                path,
                redirect_https,
            } => {
                write!(f, "http://{host}{path}")?;
                if *redirect_https {
                    f.write_str(" (redirected to https)")?;
                }
                Ok(())
            }
            Exposure::Tcp { port } => write!(f, "tcp :{port}"),
            Exposure::Unknown => f.write_str("an exposure of an unknown kind"),
        }
    }
}

/// A service address a port asks for: a name the cluster gives an address
/// of its VIP range (`shop-web:80`, answered as `shop-web.l4lb.<zone>`),
/// or a fixed address of that range (`198.18.4.2:80`). Stored as the text
/// written; text this version cannot read is kept as [`VipSpec::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum VipSpec {
    Named { name: String, port: u16 },
    Fixed { address: Ipv4Addr, port: u16 },
    Unknown(String),
}

impl VipSpec {
    /// Reads `name:port`, DC/OS's `/name:port` (the parts of `/a/b` are
    /// joined from the last, `b-a`, as app ids name their DNS label) or
    /// `a.b.c.d:port`.
    pub fn parse(text: &str) -> Result<VipSpec, String> {
        let Some((left, port)) = text.rsplit_once(':') else {
            return Err(format!(
                "VIP {text:?} has no port: write name:port (shop-web:80) or address:port"
            ));
        };
        let port = match port.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(format!(
                    "VIP {text:?}: port {port:?} is not a port number from 1 to 65535"
                ));
            }
        };
        if let Ok(address) = left.parse::<Ipv4Addr>() {
            return Ok(VipSpec::Fixed { address, port });
        }
        let parts: Vec<&str> = left.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return Err(format!(
                "VIP {text:?} has no name: write name:port (shop-web:80) or address:port"
            ));
        }
        let name = parts.into_iter().rev().collect::<Vec<_>>().join("-");
        check_label(&name).map_err(|why| format!("VIP {text:?}: name {name:?} {why}"))?;
        Ok(VipSpec::Named { name, port })
    }

    pub fn port(&self) -> Option<u16> {
        match self {
            VipSpec::Named { port, .. } | VipSpec::Fixed { port, .. } => Some(*port),
            VipSpec::Unknown(_) => None,
        }
    }
}

impl fmt::Display for VipSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VipSpec::Named { name, port } => write!(f, "{name}:{port}"),
            VipSpec::Fixed { address, port } => write!(f, "{address}:{port}"),
            VipSpec::Unknown(text) => f.write_str(text),
        }
    }
}

impl Serialize for VipSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for VipSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<VipSpec, D::Error> {
        let text = String::deserialize(d)?;
        Ok(VipSpec::parse(&text).unwrap_or(VipSpec::Unknown(text)))
    }
}

/// Checks a host name the edge routes by: lowercase DNS labels joined by
/// `.`, at most 253 characters.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() || host.len() > MAX_HOST {
        return Err(format!(
            "host {host:?} must be a DNS name of 1 to {MAX_HOST} characters"
        ));
    }
    if host.starts_with("*.") {
        return Err(format!(
            "host {host:?}: the edge routes whole host names, not wildcards"
        ));
    }
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("host {host:?} must be lowercase"));
    }
    for label in host.split('.') {
        check_label(label).map_err(|why| format!("host {host:?}: {label:?} {why}"))?;
    }
    Ok(())
}

/// Checks a path prefix: starts with `/`, no trailing `/` but the root's,
/// no query, fragment, space or empty segment.
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with '/'"));
    }
    if path.len() > MAX_PATH {
        return Err(format!(
            "path {path:?} is longer than {MAX_PATH} characters"
        ));
    }
    if let Some(c) = path
        .chars()
        .find(|c| matches!(c, '?' | '#' | '%' | '\\') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "path {path:?} holds {c:?}: a route is a plain path prefix"
        ));
    }
    if path.len() > 1 && (path.ends_with('/') || path.contains("//")) {
        return Err(format!(
            "path {path:?} has an empty segment: write it as {:?}",
            format!(
                "/{}",
                path.split('/')
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join("/")
            )
        ));
    }
    Ok(())
}

/// Checks port `i`'s exposures and VIPs against themselves and against
/// the app's other ports (`before`, the ports ahead of it).
pub(super) fn check_port(
    i: usize,
    port: &PortSpec,
    before: &[PortSpec],
    bad: &mut dyn FnMut(&str, String),
) {
    for (k, e) in port.expose.iter().enumerate() {
        let at = format!("ports[{i}].expose[{k}]");
        if port.protocol == Protocol::Udp {
            bad(
                &at,
                format!(
                    "ports[{i}] is udp, and the edge proxies tcp: expose a tcp port, or use a VIP for udp"
                ),
            );
        }
        match e {
            Exposure::Http { host, path, .. } => {
                if let Err(why) = check_host(host) {
                    bad(&at, why);
                }
                if let Err(why) = check_path(path) {
                    bad(&at, why);
                }
            }
            Exposure::Tcp { port: 0 } => bad(
                &at,
                "public tcp port 0: expected a port from 1 to 65535".into(),
            ),
            Exposure::Tcp { .. } => {}
            Exposure::Unknown => bad(
                &at,
                "an exposure of a kind this version does not know: expected http (host, path) or tcp (port)".into(),
            ),
        }
        let same = |other: &Exposure| match (e, other) {
            (
                Exposure::Http { host, path, .. },
                Exposure::Http {
                    host: h, path: p, ..
                },
            ) => host == h && path == p,
            (Exposure::Tcp { port }, Exposure::Tcp { port: p }) => port == p,
            _ => false,
        };
        if let Some(j) = port.expose[..k].iter().position(same) {
            bad(&at, format!("{e} is also ports[{i}].expose[{j}]"));
        }
        for (j, q) in before.iter().enumerate() {
            if q.expose.iter().any(same) {
                bad(&at, format!("{e} is also asked for by ports[{j}]"));
            }
        }
    }
    for (k, v) in port.vips.iter().enumerate() {
        let at = format!("ports[{i}].vips[{k}]");
        if let VipSpec::Unknown(text) = v {
            bad(
                &at,
                format!(
                    "VIP {text:?} is not name:port (shop-web:80) or address:port (198.18.0.10:80)"
                ),
            );
            continue;
        }
        if port.vips[..k].contains(v) {
            bad(&at, format!("VIP {v} is asked for twice"));
        }
        for (j, q) in before.iter().enumerate() {
            if q.vips.contains(v) && q.protocol.overlaps(port.protocol) {
                bad(&at, format!("VIP {v} is also ports[{j}]'s"));
            }
        }
    }
}

/// Where the app's label `key` was written.
fn label(places: &Places, key: &str) -> super::Place {
    places.at(&format!("labels.{key}"))
}

/// Every public TCP port `app` asks for outside the edge's range
/// (`cluster.toml [edge] tcp_ports`), a problem each.
pub fn outside_edge(app: &super::AppSpec, edge: &configs::cluster::Edge) -> Vec<String> {
    let [first, last] = edge.tcp_ports;
    let mut out = Vec::new();
    for (j, port) in app.ports.iter().enumerate() {
        for e in &port.expose {
            if let Exposure::Tcp { port: number } = e
                && !edge.tcp_allows(*number)
            {
                out.push(format!(
                    "{}: ports[{j}] asks for public TCP port {number}, outside the edge's ports {first}-{last} (cluster.toml [edge] tcp_ports)",
                    app.id
                ));
            }
        }
    }
    out
}

/// Marathon-LB's labels that are zdd.py's bookkeeping: kept as labels,
/// with no meaning here (Strata rolls deployments itself).
const BOOKKEEPING: &[&str] = &["HAPROXY_DEPLOYMENT_", "HAPROXY_APP_ID"];

/// The per-port Marathon-LB labels Strata reads (`HAPROXY_{n}_<FIELD>`).
const PORT_FIELDS: &[&str] = &[
    "GROUP",
    "VHOST",
    "PATH",
    "PORT",
    "ENABLED",
    "MODE",
    "REDIRECT_TO_HTTPS",
];

/// Reads Marathon-LB's `HAPROXY_*` labels of the app and DC/OS's `VIP_n`
/// labels of its ports into the ports' exposures and VIPs. The labels stay
/// as they were written. A label that would change how Marathon-LB renders
/// its HAProxy configuration is refused by name: Strata renders the edge
/// itself, and nothing is ignored in silence.
pub(super) fn marathon_labels(
    labels: &BTreeMap<String, String>,
    ports: &mut [PortSpec],
    places: &mut Places,
    p: &mut Problems,
) {
    // HAPROXY_{n}_{FIELD} by port, checked for a port that exists.
    let mut per_port: BTreeMap<usize, BTreeMap<&str, (&str, &str)>> = BTreeMap::new();
    for (key, value) in labels {
        let Some(rest) = key.strip_prefix("HAPROXY_") else {
            continue;
        };
        if key == "HAPROXY_GROUP" || BOOKKEEPING.iter().any(|b| key.starts_with(b)) {
            continue;
        }
        let indexed = rest.split_once('_').and_then(|(n, field)| {
            let n = n.parse::<usize>().ok()?;
            let field = PORT_FIELDS.iter().find(|f| **f == field)?;
            Some((n, *field))
        });
        match indexed {
            Some((n, _)) if n >= ports.len() => p.at(
                &label(places, key),
                format!(
                    "label {key} is for ports[{n}], and the app has {} port(s)",
                    ports.len()
                ),
            ),
            Some((n, field)) => {
                per_port
                    .entry(n)
                    .or_default()
                    .insert(field, (key.as_str(), value.as_str()));
            }
            None => p.at(
                &label(places, key),
                format!(
                    "label {key}: Strata renders the edge's HAProxy configuration itself and reads only HAPROXY_GROUP and HAPROXY_n_{{{}}}; a certificate is given with `strata edge cert set HOST FILE`",
                    PORT_FIELDS.join(",")
                ),
            ),
        }
    }
    let app_group = labels.get("HAPROXY_GROUP").map(String::as_str);
    let empty = BTreeMap::new();
    for (n, port) in ports.iter_mut().enumerate() {
        let fields = per_port.get(&n).unwrap_or(&empty);
        let get = |field: &str| fields.get(field).copied();
        let (group_key, group) = match get("GROUP") {
            Some((k, v)) => (k.to_string(), Some(v)),
            None => ("HAPROXY_GROUP".to_string(), app_group),
        };
        let enabled = match get("ENABLED") {
            None => true,
            Some((_, "true")) => true,
            Some((_, "false")) => false,
            Some((k, v)) => {
                p.at(
                    &label(places, k),
                    format!("label {k} is {v:?}: expected \"true\" or \"false\""),
                );
                true
            }
        };
        match group {
            None => {
                for field in ["VHOST", "PATH", "PORT", "REDIRECT_TO_HTTPS"] {
                    if let Some((k, _)) = get(field) {
                        p.at(
                            &label(places, k),
                            format!("label {k} needs HAPROXY_GROUP=external (or HAPROXY_{n}_GROUP) for ports[{n}] to be exposed"),
                        );
                    }
                }
                continue;
            }
            Some("external") => {}
            Some("internal") => {
                p.at(
                    &label(places, &group_key),
                    format!("label {group_key} is \"internal\": Strata has no internal edge; give ports[{n}] a VIP (`VIP_0` on the port's labels) to reach it inside the cluster"),
                );
                continue;
            }
            Some(other) => {
                p.at(
                    &label(places, &group_key),
                    format!("label {group_key} is {other:?}: the edge on the public agents serves the group \"external\""),
                );
                continue;
            }
        }
        if !enabled {
            continue;
        }
        if let Some((k, v)) = get("MODE")
            && v != "http"
            && v != "tcp"
        {
            p.at(
                &label(places, k),
                format!("label {k} is {v:?}: expected \"http\" or \"tcp\""),
            );
        }
        let redirect = match get("REDIRECT_TO_HTTPS") {
            None | Some((_, "false")) => false,
            Some((_, "true")) => true,
            Some((k, v)) => {
                p.at(
                    &label(places, k),
                    format!("label {k} is {v:?}: expected \"true\" or \"false\""),
                );
                false
            }
        };
        let hosts: Vec<&str> = get("VHOST")
            .map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .filter(|h| !h.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let path = match get("PATH") {
            Some((k, _)) if hosts.is_empty() => {
                p.at(
                    &label(places, k),
                    format!(
                        "label {k} routes by path under a host name: set HAPROXY_{n}_VHOST too"
                    ),
                );
                "/"
            }
            Some((_, v)) => v,
            None => "/",
        };
        for host in &hosts {
            let k = port.expose.len();
            if let Some((vk, _)) = get("VHOST") {
                places.put(format!("ports[{n}].expose[{k}]"), &label(places, vk));
            }
            port.expose.push(Exposure::http(host, path, redirect));
        }
        let tcp = match get("PORT") {
            Some((k, v)) => match v.parse::<u16>() {
                Ok(number) if number != 0 => {
                    places.put(
                        format!("ports[{n}].expose[{}]", port.expose.len()),
                        &label(places, k),
                    );
                    Some(number)
                }
                _ => {
                    p.at(
                        &label(places, k),
                        format!("label {k} is {v:?}: expected a port from 1 to 65535"),
                    );
                    continue;
                }
            },
            None => port.service_port,
        };
        match tcp {
            Some(number) => port.expose.push(Exposure::Tcp { port: number }),
            None if hosts.is_empty() => p.at(
                &label(places, &group_key),
                format!("ports[{n}] is exposed ({group_key}=external) but has no service port to serve it on: set its servicePort, or the label HAPROXY_{n}_PORT, or HAPROXY_{n}_VHOST"),
            ),
            None => {}
        }
    }
    // DC/OS's VIP labels, on each port.
    for (n, port) in ports.iter_mut().enumerate() {
        for (key, value) in &port.labels {
            let is_vip = key
                .strip_prefix("VIP_")
                .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
            if !is_vip {
                continue;
            }
            let at = places.at(&format!("ports[{n}].labels.{key}"));
            match VipSpec::parse(value) {
                Ok(v) => {
                    places.put(format!("ports[{n}].vips[{}]", port.vips.len()), &at);
                    port.vips.push(v);
                }
                Err(why) => p.at(&at, format!("label {key}: {why}")),
            }
        }
    }
}

/// What one app holds of the edge, so that no other app serves the same
/// host and path or the same public TCP port: the record behind a claim
/// key ([`claim_key`]). Tolerant: a field a newer writer adds is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The app that holds it.
    pub app: super::AppId,
    /// Which of its ports.
    pub port: usize,
    /// What it exposes there.
    pub exposure: Exposure,
}

/// The key a claim of `exposure` is stored under (after the store's
/// prefix): `http/<host>/<path in hex>` or `tcp/<port>`. `None` for an
/// exposure of a kind this version does not know.
pub fn claim_key(exposure: &Exposure) -> Option<String> {
    match exposure {
        Exposure::Http { host, path, .. } => {
            let hex: String = path.bytes().map(|b| format!("{b:02x}")).collect();
            Some(format!("http/{host}/{hex}"))
        }
        Exposure::Tcp { port } => Some(format!("tcp/{port}")),
        Exposure::Unknown => None,
    }
}

/// Every claim `spec` makes, by key.
pub fn claims_of(spec: &super::AppSpec) -> BTreeMap<String, Claim> {
    let mut out = BTreeMap::new();
    for (i, port) in spec.ports.iter().enumerate() {
        for e in &port.expose {
            if let Some(key) = claim_key(e) {
                out.entry(key).or_insert_with(|| Claim {
                    app: spec.id.clone(),
                    port: i,
                    exposure: e.clone(),
                });
            }
        }
    }
    out
}

/// The claims one deploy writes: `take` the free ones (stored only while
/// still absent), `keep` the ones the app holds already (while unchanged
/// since read), `free` the ones it held and no longer asks for, and
/// `stale` ones held by an app that no longer exists (overwritten while
/// unchanged since read). Revisions are the store's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimWrites {
    pub take: Vec<(String, Claim)>,
    pub keep: Vec<(String, i64)>,
    pub free: Vec<(String, i64)>,
    pub stale: Vec<(String, Claim, i64)>,
    /// Named VIPs leased their address now ([`crate::vip::allocate`]).
    pub leases: Vec<(String, std::net::Ipv4Addr)>,
}

/// Checks the claims of `request` (apps deployed together, each replacing
/// its stored self) against `held` (every stored claim, with its revision)
/// and each other; `exists` says whether an app exists (a claim of an app
/// that is gone is free). Returns the writes, or every conflict, each
/// naming the app that holds what is asked for.
pub fn check_claims(
    request: &[&super::AppSpec],
    held: &BTreeMap<String, (Claim, i64)>,
    exists: &dyn Fn(&super::AppId) -> bool,
) -> Result<ClaimWrites, Vec<String>> {
    let mut writes = ClaimWrites::default();
    let mut problems = Vec::new();
    let mut asked: BTreeMap<String, Claim> = BTreeMap::new();
    let requested: Vec<&super::AppId> = request.iter().map(|a| &a.id).collect();
    for spec in request {
        for (key, claim) in claims_of(spec) {
            let what = match &claim.exposure {
                Exposure::Tcp { port } => format!("public TCP port {port}"),
                other => other.to_string(),
            };
            if let Some(other) = asked.get(&key) {
                problems.push(format!(
                    "{}: ports[{}] asks for {what}, which {} (ports[{}]) of the same request asks for too: one app serves it",
                    spec.id, claim.port, other.app, other.port
                ));
                continue;
            }
            match held.get(&key) {
                Some((h, rev)) if h.app == spec.id => writes.keep.push((key.clone(), *rev)),
                Some((h, rev)) if !exists(&h.app) && !requested.contains(&&h.app) => {
                    writes.stale.push((key.clone(), claim.clone(), *rev))
                }
                Some((h, _)) => problems.push(format!(
                    "{}: ports[{}] asks for {what}, which {} (ports[{}]) already {}: choose another, or remove it from {} first",
                    spec.id,
                    claim.port,
                    h.app,
                    h.port,
                    if matches!(claim.exposure, Exposure::Tcp { .. }) { "has" } else { "serves" },
                    h.app
                )),
                None => writes.take.push((key.clone(), claim.clone())),
            }
            asked.insert(key, claim);
        }
    }
    for (key, (h, rev)) in held {
        if requested.contains(&&h.app) && !asked.contains_key(key) {
            writes.free.push((key.clone(), *rev));
        }
    }
    if problems.is_empty() {
        Ok(writes)
    } else {
        Err(problems)
    }
}
