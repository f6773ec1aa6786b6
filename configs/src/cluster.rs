//! The operator's `cluster.toml`.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::net::Ipv4Cidr;
use crate::{Error, Role};

/// A whole cluster as the operator describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Cluster name, a DNS label.
    pub name: String,
    /// Underlay addresses of the masters: 1, 3 or 5.
    pub masters: Vec<Ipv4Addr>,
    /// Port of the Strata API on every master.
    #[serde(default = "default_api_port")]
    pub api_port: u16,
    #[serde(default)]
    pub overlay: Overlay,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub heartbeat: Heartbeat,
    #[serde(default)]
    pub etcd: Etcd,
    #[serde(default)]
    pub registries: Registries,
    #[serde(default)]
    pub certificates: Certificates,
    #[serde(default)]
    pub scheduler: Scheduler,
    #[serde(default)]
    pub edge: Edge,
    #[serde(default)]
    pub vips: Vips,
    /// The nodes to make user-data for.
    #[serde(default)]
    pub nodes: Vec<Node>,
}

fn default_api_port() -> u16 {
    6443
}

/// The VXLAN overlay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// The cluster-wide overlay network, split into one subnet per node.
    pub cidr: Ipv4Cidr,
    /// Prefix length of each node's subnet.
    #[serde(default = "default_subnet_prefix")]
    pub subnet_prefix: u8,
    /// VXLAN network identifier, 1 to 16777215.
    #[serde(default = "default_vni")]
    pub vni: u32,
    /// VXLAN UDP port.
    #[serde(default = "default_vxlan_port")]
    pub port: u16,
    /// MTU of the overlay; the underlay's minus 50 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// Ranges an overlay must not use: the kernel or the underlay treat them specially.
const RESERVED: [(&str, &str); 4] = [
    ("0.0.0.0/8", "this network"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("224.0.0.0/3", "multicast and reserved"),
];

fn default_subnet_prefix() -> u8 {
    24
}
fn default_vni() -> u32 {
    4242
}
fn default_vxlan_port() -> u16 {
    4789
}

impl Default for Overlay {
    fn default() -> Self {
        Overlay {
            cidr: Ipv4Cidr {
                addr: Ipv4Addr::new(10, 200, 0, 0),
                prefix: 16,
            },
            subnet_prefix: default_subnet_prefix(),
            vni: default_vni(),
            port: default_vxlan_port(),
            mtu: None,
        }
    }
}

/// Service discovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Zone served for tasks and apps: `<name>.<zone>`.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Upstream resolvers for every other name.
    #[serde(default)]
    pub resolvers: Vec<Ipv4Addr>,
}

/// A registry as image references name it: a host name or IPv4 address,
/// with an optional port; no scheme, no path.
fn check_registry(r: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{r}` is not a registry: {why}, expected host or host:port like 10.0.2.2:5000"
        ))
    };
    if r.contains("://") {
        return bad("no scheme is wanted");
    }
    if r.contains('/') {
        return bad("no path is wanted");
    }
    let (host, port) = match r.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (r, None),
    };
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return bad("the port is not 1 to 65535");
    }
    let host_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if !host_ok {
        return bad("the host is not a name or address");
    }
    Ok(())
}

fn default_zone() -> String {
    "strata.internal".to_string()
}

impl Default for Dns {
    fn default() -> Self {
        Dns {
            zone: default_zone(),
            resolvers: Vec::new(),
        }
    }
}

/// Liveness of nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// Seconds between two heartbeats of an agent.
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
    /// Seconds without a heartbeat before a node is shown unreachable.
    #[serde(default = "default_grace")]
    pub grace_seconds: u32,
}

fn default_interval() -> u32 {
    2
}
fn default_grace() -> u32 {
    10
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            interval_seconds: default_interval(),
            grace_seconds: default_grace(),
        }
    }
}

/// What the scheduler leaves to each agent's own system (the agent, the
/// runtime, the kernel): never given to apps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scheduler {
    /// Thousandths of a core kept back on every agent.
    #[serde(default = "default_reserve_cpus")]
    pub reserve_cpu_millis: u32,
    /// MiB of memory kept back on every agent.
    #[serde(default = "default_reserve_mem")]
    pub reserve_mem_mib: u64,
    /// MiB of disk kept back on every agent.
    #[serde(default = "default_reserve_disk")]
    pub reserve_disk_mib: u64,
}

fn default_reserve_cpus() -> u32 {
    250
}
fn default_reserve_mem() -> u64 {
    256
}
fn default_reserve_disk() -> u64 {
    1024
}

impl Default for Scheduler {
    fn default() -> Self {
        Scheduler {
            reserve_cpu_millis: default_reserve_cpus(),
            reserve_mem_mib: default_reserve_mem(),
            reserve_disk_mib: default_reserve_disk(),
        }
    }
}

/// The edge proxy on the public agents: the ports it serves apps'
/// exposures on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Where HTTP exposures are served.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// Where HTTPS is served, for hosts with a certificate.
    #[serde(default = "default_https_port")]
    pub https_port: u16,
    /// The first and last port an app may expose over TCP (Marathon's
    /// service ports).
    #[serde(default = "default_edge_tcp_ports")]
    pub tcp_ports: [u16; 2],
}

fn default_http_port() -> u16 {
    80
}
fn default_https_port() -> u16 {
    443
}
fn default_edge_tcp_ports() -> [u16; 2] {
    [10000, 20000]
}

impl Default for Edge {
    fn default() -> Self {
        Edge {
            http_port: default_http_port(),
            https_port: default_https_port(),
            tcp_ports: default_edge_tcp_ports(),
        }
    }
}

impl Edge {
    /// Whether `port` is one an app may expose over TCP.
    pub fn tcp_allows(&self, port: u16) -> bool {
        (self.tcp_ports[0]..=self.tcp_ports[1]).contains(&port)
    }
}

/// The service addresses (VIPs) apps' ports ask for: named ones get an
/// address of `cidr`, fixed ones must lie in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vips {
    /// RFC 2544's benchmarking range by default: never an operator's LAN
    /// nor the internet.
    #[serde(default = "default_vip_cidr")]
    pub cidr: Ipv4Cidr,
}

fn default_vip_cidr() -> Ipv4Cidr {
    Ipv4Cidr {
        addr: Ipv4Addr::new(198, 18, 0, 0),
        prefix: 16,
    }
}

impl Default for Vips {
    fn default() -> Self {
        Vips {
            cidr: default_vip_cidr(),
        }
    }
}

/// The consensus store of the masters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Etcd {
    /// Client URLs of an etcd the masters use instead of starting their own
    /// (`http://`, or `https://` with certificates of the etcd CA that the
    /// masters derive from the cluster CA: they trust only it and present a
    /// client certificate of it). For hosts without systemd, such as the
    /// host test tier; nothing is started when set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external: Vec<String>,
    /// etcd's backend quota in bytes, 1 MiB to 8 GiB (etcd's suggested
    /// maximum): past it etcd raises the NOSPACE alarm and refuses writes.
    /// 2 GiB when absent. Only the etcd the masters start uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_bytes: Option<u64>,
}

/// Node certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificates {
    /// How long a node certificate is valid, in seconds, from its join or
    /// its renewal: a node renews its certificate once two thirds of that
    /// have passed. 60 seconds to 10 years; 365 days when absent.
    #[serde(default = "default_node_lifetime")]
    pub node_lifetime_seconds: u64,
}

fn default_node_lifetime() -> u64 {
    365 * 24 * 3600
}

impl Default for Certificates {
    fn default() -> Self {
        Certificates {
            node_lifetime_seconds: default_node_lifetime(),
        }
    }
}

/// How nodes reach OCI registries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    /// Registries (`host` or `host:port`, as in image references) reached
    /// over plain HTTP instead of HTTPS. Loopback registries always are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure: Vec<String>,
}

/// One node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub role: Role,
    /// Static underlay address with prefix; DHCP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The link the address goes on (`enp0s16`); every ethernet link when
    /// absent, so name it on nodes with more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

impl ClusterConfig {
    /// Parses and validates a `cluster.toml` read from `origin`.
    pub fn parse(origin: &str, text: &str) -> Result<ClusterConfig, Error> {
        let c: ClusterConfig =
            toml::from_str(text).map_err(|e| Error::from_toml(origin, text, &e))?;
        c.validate()
            .map_err(|(path, msg)| Error::field(origin, text, &path, msg))?;
        Ok(c)
    }

    /// API endpoints of all masters, `addr:port`.
    pub fn master_endpoints(&self) -> Vec<String> {
        self.masters
            .iter()
            .map(|m| format!("{m}:{}", self.api_port))
            .collect()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        check_label(&self.name).map_err(|m| ("name".to_string(), m))?;
        if ![1, 3, 5].contains(&self.masters.len()) {
            return Err((
                "masters".into(),
                format!(
                    "{} master(s) given, expected 1, 3 or 5 for an etcd quorum",
                    self.masters.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, m) in self.masters.iter().enumerate() {
            if !seen.insert(m) {
                return Err((
                    format!("masters[{i}]"),
                    format!("master {m} is listed twice"),
                ));
            }
        }
        if self.api_port == 0 {
            return Err((
                "api_port".into(),
                "port 0 is not allowed, expected 1 to 65535".into(),
            ));
        }
        let o = &self.overlay;
        if o.cidr.addr != o.cidr.network() {
            return Err((
                "overlay.cidr".into(),
                format!(
                    "{} has host bits set, expected the network address {}",
                    o.cidr,
                    o.cidr.trunc()
                ),
            ));
        }
        for (reserved, what) in RESERVED {
            let reserved: Ipv4Cidr = reserved.parse().expect("reserved ranges are valid CIDRs");
            if o.cidr.overlaps(reserved) {
                return Err((
                    "overlay.cidr".into(),
                    format!(
                        "{} overlaps {reserved} ({what}), expected a private range like 10.200.0.0/16",
                        o.cidr
                    ),
                ));
            }
        }
        if o.subnet_prefix <= o.cidr.prefix || o.subnet_prefix > 30 {
            return Err((
                "overlay.subnet_prefix".into(),
                format!(
                    "/{} does not fit in {}, expected a prefix from {} to 30",
                    o.subnet_prefix,
                    o.cidr,
                    o.cidr.prefix + 1
                ),
            ));
        }
        let needed = self.nodes.len().max(self.masters.len()) as u64;
        let available = o.cidr.subnet_count(o.subnet_prefix);
        if available < needed {
            return Err((
                "overlay.cidr".into(),
                format!(
                    "{} holds {available} subnet(s) of /{}, but the cluster has {needed} node(s)",
                    o.cidr, o.subnet_prefix
                ),
            ));
        }
        if o.vni == 0 || o.vni > 0x00FF_FFFF {
            return Err((
                "overlay.vni".into(),
                format!("VNI {} is out of range, expected 1 to 16777215", o.vni),
            ));
        }
        if o.port == 0 {
            return Err((
                "overlay.port".into(),
                "port 0 is not allowed, expected 1 to 65535".into(),
            ));
        }
        if let Some(mtu) = o.mtu
            && !(1280..=9000).contains(&mtu)
        {
            return Err((
                "overlay.mtu".into(),
                format!("MTU {mtu} is out of range, expected 1280 to 9000"),
            ));
        }
        for (i, m) in self.masters.iter().enumerate() {
            if o.cidr.contains(*m) {
                return Err((
                    "overlay.cidr".into(),
                    format!(
                        "{} overlaps the underlay: it holds master {m} (masters[{i}])",
                        o.cidr
                    ),
                ));
            }
        }
        let e = &self.edge;
        let [first, last] = e.tcp_ports;
        if first == 0 || first > last {
            return Err((
                "edge.tcp_ports".into(),
                format!(
                    "[{first}, {last}] is not a range of ports: expected [first, last] with 1 <= first <= last"
                ),
            ));
        }
        for (field, port) in [
            ("edge.http_port", e.http_port),
            ("edge.https_port", e.https_port),
        ] {
            if port == 0 {
                return Err((
                    field.into(),
                    "port 0 is not allowed, expected 1 to 65535".into(),
                ));
            }
            if e.tcp_allows(port) {
                return Err((
                    field.into(),
                    format!(
                        "port {port} is inside edge.tcp_ports [{first}, {last}], which apps expose over TCP"
                    ),
                ));
            }
        }
        if e.http_port == e.https_port {
            return Err((
                "edge.https_port".into(),
                format!("port {} is edge.http_port too", e.https_port),
            ));
        }
        for (port, what) in [
            (self.api_port, "the API's port (api_port)"),
            (2379, "etcd's client port"),
            (2380, "etcd's peer port"),
            (9464, "the metrics port"),
        ] {
            if e.tcp_allows(port) || e.http_port == port || e.https_port == port {
                return Err((
                    "edge".into(),
                    format!(
                        "the edge's ports (http_port {}, https_port {}, tcp_ports [{first}, {last}]) take port {port}, {what}",
                        e.http_port, e.https_port
                    ),
                ));
            }
        }
        let v = self.vips.cidr;
        if v.addr != v.network() || v.prefix > 30 || v.prefix < 8 {
            return Err((
                "vips.cidr".into(),
                format!(
                    "{v} is not a network of /8 to /30 (its address must be the network's, {})",
                    v.trunc()
                ),
            ));
        }
        let mut taken: Vec<(Ipv4Cidr, String)> = RESERVED
            .iter()
            .map(|(r, what)| {
                (
                    r.parse().expect("reserved ranges are valid CIDRs"),
                    what.to_string(),
                )
            })
            .collect();
        taken.push((o.cidr, "the overlay".into()));
        for (range, what) in taken {
            if v.overlaps(range) {
                return Err((
                    "vips.cidr".into(),
                    format!(
                        "{v} overlaps {range} ({what}), expected a range of its own like 198.18.0.0/16"
                    ),
                ));
            }
        }
        for (i, m) in self.masters.iter().enumerate() {
            if v.contains(*m) {
                return Err((
                    "vips.cidr".into(),
                    format!("{v} holds master {m} (masters[{i}]): VIPs need a range no node is in"),
                ));
            }
        }
        check_zone(&self.dns.zone).map_err(|m| ("dns.zone".to_string(), m))?;
        for (i, r) in self.dns.resolvers.iter().enumerate() {
            if o.cidr.contains(*r) {
                return Err((
                    format!("dns.resolvers[{i}]"),
                    format!(
                        "resolver {r} is inside the overlay network {}, expected an underlay or outside address",
                        o.cidr
                    ),
                ));
            }
        }
        if self.scheduler.reserve_cpu_millis > 64_000 {
            return Err((
                "scheduler.reserve_cpu_millis".into(),
                format!(
                    "{} is out of range, expected 0 to 64000 (64 cores)",
                    self.scheduler.reserve_cpu_millis
                ),
            ));
        }
        if self.heartbeat.interval_seconds == 0 {
            return Err((
                "heartbeat.interval_seconds".into(),
                "expected at least 1 second".into(),
            ));
        }
        if self.heartbeat.grace_seconds < 2 * self.heartbeat.interval_seconds {
            return Err((
                "heartbeat.grace_seconds".into(),
                format!(
                    "{}s is shorter than two heartbeat intervals ({}s), expected at least {}",
                    self.heartbeat.grace_seconds,
                    self.heartbeat.interval_seconds,
                    2 * self.heartbeat.interval_seconds
                ),
            ));
        }
        let lifetime = self.certificates.node_lifetime_seconds;
        if !(60..=10 * 365 * 24 * 3600).contains(&lifetime) {
            return Err((
                "certificates.node_lifetime_seconds".into(),
                format!("{lifetime}s is outside 60 seconds to 10 years"),
            ));
        }
        for (i, url) in self.etcd.external.iter().enumerate() {
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            let ok = rest
                .and_then(|r| r.trim_end_matches('/').rsplit_once(':'))
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err((
                    format!("etcd.external[{i}]"),
                    format!(
                        "`{url}` is not an etcd client URL, expected http://host:port or https://host:port"
                    ),
                ));
            }
        }
        if let Some(q) = self.etcd.quota_bytes
            && !(1 << 20..=8 << 30).contains(&q)
        {
            return Err((
                "etcd.quota_bytes".into(),
                format!(
                    "{q} bytes is outside 1 MiB to 8 GiB (etcd's suggested maximum), expected for example 2147483648 (2 GiB, the default)"
                ),
            ));
        }
        for (i, r) in self.registries.insecure.iter().enumerate() {
            check_registry(r).map_err(|m| (format!("registries.insecure[{i}]"), m))?;
        }
        let mut names = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            check_label(&n.name).map_err(|m| (format!("nodes[{i}].name"), m))?;
            if !names.insert(n.name.as_str()) {
                return Err((
                    format!("nodes[{i}].name"),
                    format!("node name `{}` is used twice", n.name),
                ));
            }
            if let Some(a) = n.address {
                if o.cidr.overlaps(a) {
                    return Err((
                        format!("nodes[{i}].address"),
                        format!("{a} overlaps the overlay network {}", o.cidr),
                    ));
                }
                if !addrs.insert(a.addr) {
                    return Err((
                        format!("nodes[{i}].address"),
                        format!("address {} is used twice", a.addr),
                    ));
                }
                if let Some(gw) = n.gateway
                    && !a.contains(gw)
                {
                    return Err((
                        format!("nodes[{i}].gateway"),
                        format!("gateway {gw} is not inside {}", a.trunc()),
                    ));
                }
            }
        }
        if !self.nodes.is_empty() {
            for (i, m) in self.masters.iter().enumerate() {
                let found = self
                    .nodes
                    .iter()
                    .any(|n| n.role == Role::Master && n.address.is_some_and(|a| a.addr == *m));
                if !found {
                    return Err((
                        format!("masters[{i}]"),
                        format!(
                            "no node with role master has address {m}, expected one [[nodes]] entry per master"
                        ),
                    ));
                }
            }
            for (i, n) in self.nodes.iter().enumerate() {
                if n.role == Role::Master
                    && !n.address.is_some_and(|a| self.masters.contains(&a.addr))
                {
                    return Err((
                        format!("nodes[{i}].role"),
                        format!(
                            "node `{}` is a master but its address is not in `masters`",
                            n.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Checks a DNS label: 1 to 63 of `a-z`, `0-9`, `-`, not starting or ending with `-`.
pub fn check_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a valid name, expected 1 to 63 of a-z, 0-9 and `-`, not starting or ending with `-`"
        ))
    }
}

fn check_zone(zone: &str) -> Result<(), String> {
    if zone.len() > 253 || zone.split('.').any(|l| check_label(l).is_err()) {
        return Err(format!(
            "`{zone}` is not a DNS zone, expected dot-separated labels like strata.internal"
        ));
    }
    Ok(())
}
