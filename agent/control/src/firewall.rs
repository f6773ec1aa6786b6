//! The node's input firewall as a pure plan: [`plan`] turns what a node
//! knows of itself and of its cluster ([`FirewallInput`]) into a
//! [`FirewallPlan`], the address sets and the ordered rules of an input
//! chain whose policy drops whatever no rule accepts. The agent renders the
//! plan for nftables (the `inet strata-fw` table of `agent::overlay::nft`)
//! and replaces the table as a whole when the rendering changes, so equal
//! inputs give equal plans: addresses and ports sorted and without
//! duplicates, interfaces too, and the rules in a fixed order.
//!
//! Who reaches what, in the order the rules go:
//! - replies to the node's own connections and the ICMP errors about them,
//!   loopback, the ICMP and ICMPv6 that IP needs (errors, echo, neighbour
//!   discovery): always; packets conntrack finds invalid: never;
//! - from the overlay (the node's bridge, where its tasks are, and its VXLAN
//!   device, where other nodes' tasks come from): DNS to the node's
//!   resolver on its gateway, and nothing else, so a task reaches none of
//!   the node's other services;
//! - DHCP and DHCPv6 replies (the underlay may be configured by DHCP);
//! - on masters, the API's port: from anywhere (the API checks every
//!   caller); etcd's client and peer ports: from the masters only (etcd
//!   admits only the etcd CA's certificates, and the firewall keeps the
//!   rest of the network from even its handshake);
//! - the overlay's VXLAN port: from the cluster's nodes only, since a VXLAN
//!   packet from anywhere else would put frames on the overlay past the
//!   bridge's anti-spoofing rules;
//! - the role file's ports (`configs/roles/<role>.toml`, `[firewall]`):
//!   from the sources its `from` says (the cluster's nodes, once the node
//!   has read the node list, or anywhere), except a port that a rule above
//!   opens to fewer sources, which stays restricted;
//! - on public agents, the TCP ports the edge proxy serves apps' exposures
//!   on ([`FirewallInput::edge`]): from anywhere, except a port a rule
//!   above already opens (which keeps its sources);
//! - everything else: dropped and counted ([`Rule::Drop`], the last rule;
//!   the chain's policy drops too, should the rule ever be missing).
//!
//! Every rule counts what it matched, so that `strata node firewall`
//! shows which rule took what.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// The port of the node's resolver, on its gateway.
pub const DNS_PORT: u16 = 53;

/// Everything the firewall of one node is planned from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallInput {
    /// The role file's `[firewall]` ports, open to every source.
    pub role: configs::role::Firewall,
    /// On masters: the API's port (`cluster.toml`'s `api_port`).
    pub api_port: Option<u16>,
    /// On masters: etcd's client and peer ports, open to
    /// [`FirewallInput::masters`] only. Empty elsewhere.
    pub etcd_ports: Vec<u16>,
    /// The masters' underlay addresses (`cluster.toml`'s `masters`).
    pub masters: Vec<Ipv4Addr>,
    /// The overlay, once the node holds a lease and knows the node list;
    /// `None` on a node without one (no VXLAN, no tasks' DNS).
    pub overlay: Option<OverlayInput>,
    /// On public agents: the TCP ports the edge proxy listens on now (its
    /// HTTP port while any route is exposed, each exposed TCP port).
    pub edge: Vec<u16>,
}

/// What the firewall needs of the node's overlay. The agent keeps the last
/// one it applied under its run directory, so that the next agent of the
/// same boot applies the same firewall at once instead of dropping VXLAN
/// until it has read the node list again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayInput {
    /// The cluster's VXLAN port.
    pub vxlan_port: u16,
    /// The underlay address of every node of the cluster (the node list):
    /// the only sources VXLAN is accepted from.
    pub nodes: Vec<Ipv4Addr>,
    /// The node's bridge, where its tasks' veths are.
    pub bridge: String,
    /// The node's VXLAN device, where other nodes' tasks come in.
    pub vxlan: String,
    /// The bridge's address, where the node's resolver listens.
    pub gateway: Ipv4Addr,
}

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// Whom an open port admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sources {
    /// Every source.
    Any,
    /// The addresses of [`FirewallPlan::masters`].
    Masters,
    /// The addresses of [`FirewallPlan::nodes`].
    Nodes,
}

/// What listens behind an open port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// The Strata API (masters).
    Api,
    /// etcd's client and peer ports (masters).
    Etcd,
    /// The overlay's tunnel.
    Vxlan,
    /// What the role file opens.
    Role,
    /// The edge proxy's exposed ports (public agents).
    Edge,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Api => "the API",
            Service::Etcd => "etcd",
            Service::Vxlan => "VXLAN",
            Service::Role => "the role's ports",
            Service::Edge => "the edge's exposed ports",
        })
    }
}

/// One rule of the input chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// Accept replies to the node's own connections, and ICMP errors
    /// about them.
    Established,
    /// Drop what conntrack finds invalid.
    Invalid,
    /// Accept what the node sends itself.
    Loopback,
    /// Accept the ICMP and ICMPv6 that IP needs: errors, echo requests,
    /// neighbour discovery.
    Icmp,
    /// Accept DNS over `proto` from `interfaces` to the resolver on
    /// `gateway`.
    Resolver {
        interfaces: Vec<String>,
        gateway: Ipv4Addr,
        proto: Proto,
    },
    /// Drop everything else that comes in on `interfaces` (the overlay).
    FromOverlay { interfaces: Vec<String> },
    /// Accept DHCP and DHCPv6 replies.
    Dhcp,
    /// Accept `ports` over `proto` from `from`, for `service`.
    Open {
        proto: Proto,
        ports: Vec<u16>,
        from: Sources,
        service: Service,
    },
    /// Drop, and count, everything no rule above accepted.
    Drop,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Established => f.write_str("accept established and related"),
            Rule::Invalid => f.write_str("drop invalid"),
            Rule::Loopback => f.write_str("accept loopback"),
            Rule::Icmp => {
                f.write_str("accept icmp and icmpv6 errors, echo requests, neighbour discovery")
            }
            Rule::Resolver {
                interfaces,
                gateway,
                proto,
            } => write!(
                f,
                "accept {proto} {DNS_PORT} to {gateway} from {} (the node's resolver)",
                interfaces.join(", ")
            ),
            Rule::FromOverlay { interfaces } => {
                write!(f, "drop everything else from {}", interfaces.join(", "))
            }
            Rule::Dhcp => f.write_str("accept dhcp and dhcpv6 replies"),
            Rule::Open {
                proto,
                ports,
                from,
                service,
            } => {
                let ports: Vec<String> = ports.iter().map(ToString::to_string).collect();
                let from = match from {
                    Sources::Any => "anywhere",
                    Sources::Masters => "the masters",
                    Sources::Nodes => "the nodes",
                };
                write!(
                    f,
                    "accept {proto} {} from {from} ({service})",
                    ports.join(", ")
                )
            }
            Rule::Drop => f.write_str("drop and count everything else"),
        }
    }
}

/// The firewall of one node: the address sets its rules refer to and the
/// rules of its input chain, in order; what no rule accepts is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirewallPlan {
    /// The masters' addresses, when a rule admits [`Sources::Masters`].
    pub masters: Option<Vec<Ipv4Addr>>,
    /// The nodes' addresses, when a rule admits [`Sources::Nodes`].
    pub nodes: Option<Vec<Ipv4Addr>>,
    pub rules: Vec<Rule>,
}

impl FirewallPlan {
    /// The address sets, a line each (`set nodes: 10.9.0.10, 10.9.0.21`).
    pub fn set_lines(&self) -> Vec<String> {
        let addrs = |a: &[Ipv4Addr]| -> String {
            let a: Vec<String> = a.iter().map(ToString::to_string).collect();
            a.join(", ")
        };
        let mut out = Vec::new();
        if let Some(m) = &self.masters {
            out.push(format!("set masters: {}", addrs(m)));
        }
        if let Some(n) = &self.nodes {
            out.push(format!("set nodes: {}", addrs(n)));
        }
        out
    }

    /// What the node reports of this plan in force: each rule with what
    /// it matched, from `counters` (the packets and bytes of each rule by
    /// its index in [`FirewallPlan::rules`]; a rule without one counted
    /// nothing yet).
    pub fn report(
        &self,
        counters: &BTreeMap<usize, Counter>,
        applied_at: u64,
        read_at: u64,
    ) -> FirewallReport {
        let rules: Vec<RuleCount> = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let c = counters.get(&i).copied().unwrap_or_default();
                RuleCount {
                    rule: r.to_string(),
                    packets: c.packets,
                    bytes: c.bytes,
                }
            })
            .collect();
        let dropped = self
            .rules
            .iter()
            .position(|r| *r == Rule::Drop)
            .and_then(|i| counters.get(&i).copied())
            .unwrap_or_default();
        FirewallReport {
            applied_at,
            read_at,
            sets: self.set_lines(),
            rules,
            dropped,
            rolled_back: None,
        }
    }
}

impl fmt::Display for FirewallPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = self.set_lines();
        lines.extend(self.rules.iter().map(ToString::to_string));
        f.write_str(&lines.join("\n"))
    }
}

/// What one rule matched since the ruleset was applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    #[serde(default)]
    pub packets: u64,
    #[serde(default)]
    pub bytes: u64,
}

/// The firewall in force on a node, as the node reports it
/// (`PUT /v1/nodes/{name}/firewall`) and `strata node firewall` shows it.
/// Tolerant: a field a newer node adds is ignored, one it drops is empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallReport {
    /// When the ruleset was applied (unix seconds).
    pub applied_at: u64,
    /// When its counters were read.
    pub read_at: u64,
    /// The address sets its rules refer to, a line each.
    #[serde(default)]
    pub sets: Vec<String>,
    /// Its rules in order, each with what it matched.
    #[serde(default)]
    pub rules: Vec<RuleCount>,
    /// What the last rule dropped: everything no rule accepted.
    #[serde(default)]
    pub dropped: Counter,
    /// Why the node went back to an earlier ruleset (the lock-out guard),
    /// if it did since its agent started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
}

/// One rule of a [`FirewallReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleCount {
    /// The rule as [`Rule`]'s `Display` says it.
    pub rule: String,
    #[serde(default)]
    pub packets: u64,
    #[serde(default)]
    pub bytes: u64,
}

impl FirewallReport {
    /// The report's largest sizes a node may send: the node list of a
    /// large cluster fits (a set line of 10,000 addresses is 160 KiB).
    pub const BODY_LIMIT: u32 = 256 << 10;
}

/// Sorted, without duplicates.
fn sorted<T: Ord + Clone>(items: &[T]) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort();
    v.dedup();
    v
}

/// The firewall of the node that `input` describes.
pub fn plan(input: &FirewallInput) -> FirewallPlan {
    let mut rules = vec![Rule::Established, Rule::Invalid, Rule::Loopback, Rule::Icmp];
    if let Some(o) = &input.overlay {
        let interfaces = sorted(&[o.bridge.clone(), o.vxlan.clone()]);
        for proto in [Proto::Udp, Proto::Tcp] {
            rules.push(Rule::Resolver {
                interfaces: interfaces.clone(),
                gateway: o.gateway,
                proto,
            });
        }
        rules.push(Rule::FromOverlay { interfaces });
    }
    rules.push(Rule::Dhcp);

    // Ports a rule below opens to fewer sources, or already opens: the
    // role's list does not open them again.
    let mut taken_tcp: Vec<u16> = input.etcd_ports.clone();
    let mut taken_udp: Vec<u16> = Vec::new();
    if let Some(port) = input.api_port {
        rules.push(Rule::Open {
            proto: Proto::Tcp,
            ports: vec![port],
            from: Sources::Any,
            service: Service::Api,
        });
        taken_tcp.push(port);
    }
    let mut masters = None;
    let etcd = sorted(&input.etcd_ports);
    if !etcd.is_empty() {
        rules.push(Rule::Open {
            proto: Proto::Tcp,
            ports: etcd,
            from: Sources::Masters,
            service: Service::Etcd,
        });
        masters = Some(sorted(&input.masters));
    }
    let mut nodes = None;
    if let Some(o) = &input.overlay {
        rules.push(Rule::Open {
            proto: Proto::Udp,
            ports: vec![o.vxlan_port],
            from: Sources::Nodes,
            service: Service::Vxlan,
        });
        taken_udp.push(o.vxlan_port);
        nodes = Some(sorted(&o.nodes));
    }
    // The role's ports, to the nodes only once the node knows them.
    let role_from = match input.role.from {
        configs::role::Reach::Anywhere => Some(Sources::Any),
        configs::role::Reach::Nodes => nodes.as_ref().map(|_| Sources::Nodes),
    };
    for (proto, ports, taken) in [
        (Proto::Tcp, &input.role.tcp, &taken_tcp),
        (Proto::Udp, &input.role.udp, &taken_udp),
    ] {
        let open: Vec<u16> = sorted(ports)
            .into_iter()
            .filter(|p| !taken.contains(p))
            .collect();
        if let Some(from) = role_from
            && !open.is_empty()
        {
            rules.push(Rule::Open {
                proto,
                ports: open,
                from,
                service: Service::Role,
            });
        }
    }
    // The edge's ports come last: a port the cluster's rules or the role's
    // list name keeps their sources (none, before the node list is known),
    // so an exposure never widens who reaches it.
    let edge: Vec<u16> = sorted(&input.edge)
        .into_iter()
        .filter(|p| !taken_tcp.contains(p) && !input.role.tcp.contains(p))
        .collect();
    if !edge.is_empty() {
        rules.push(Rule::Open {
            proto: Proto::Tcp,
            ports: edge,
            from: Sources::Any,
            service: Service::Edge,
        });
    }
    rules.push(Rule::Drop);
    FirewallPlan {
        masters,
        nodes,
        rules,
    }
}

#[cfg(test)]
mod tests;
