//! The node's nftables rules: the only module that runs `nft`. Three
//! tables, each replaced as a whole in one atomic transaction, so applying
//! one again is a no-op for traffic (connection tracking keeps its
//! entries):
//! - `ip strata`: masquerading of traffic that leaves the overlay;
//! - `bridge strata`: what a task may send into the node's bridge (its own
//!   MAC and address only, no cloud metadata service);
//! - `inet strata-fw`: the node's input firewall, planned by
//!   [`control::firewall`] and applied by [`crate::firewall`] (the daemon
//!   at boot, then [`crate::cluster::network`] as the node list changes).

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use configs::net::Ipv4Cidr;
use control::firewall::{Counter, DNS_PORT, FirewallPlan, Rule, Sources};

use super::plan::Mac;

/// One task's port on the node's bridge: the host end of its veth
/// ([`super::ipam::veth_name`]), its MAC ([`super::plan::task_mac`]) and
/// its address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Port {
    pub ifname: String,
    pub mac: Mac,
    pub addr: Ipv4Addr,
}

/// Destinations no task may reach: the cloud metadata services, which
/// hand out the node's credentials and user-data (the join token). The
/// link-local range (AWS, GCE, Azure, OpenStack, ... at 169.254.169.254),
/// Alibaba's 100.100.100.200 and Azure's wireserver 168.63.129.16.
pub const METADATA_DESTINATIONS: &[&str] = &["169.254.0.0/16", "100.100.100.200", "168.63.129.16"];

/// The ruleset for a node leasing `subnet` in the overlay `cluster`, with
/// VXLAN on UDP `port` and the task ports `ports`, both tables in one
/// transaction:
/// - packets from the node's tasks to anything outside the overlay leave
///   with the node's address (masquerade);
/// - VXLAN packets, and traffic that only passes through the node inside
///   the overlay (task to task), skip connection tracking (nothing is
///   translated there, and tracking both the inner and the outer packet
///   costs throughput); overlay traffic to or from the node itself (its
///   resolver, its own connections to tasks) is tracked, so that the
///   firewall ([`render_firewall`]) tells a reply from a new connection;
/// - the bridge's anti-spoofing rules ([`render_bridge`]).
pub fn render(subnet: Ipv4Cidr, cluster: Ipv4Cidr, port: u16, ports: &[Port]) -> String {
    render_ip(subnet, cluster, port) + &render_bridge(ports)
}

/// The `ip strata` table: masquerade and notrack.
fn render_ip(subnet: Ipv4Cidr, cluster: Ipv4Cidr, port: u16) -> String {
    let subnet = subnet.trunc();
    let cluster = cluster.trunc();
    format!(
        "table ip strata {{}}\n\
         flush table ip strata\n\
         table ip strata {{\n\
         \tchain raw-prerouting {{\n\
         \t\ttype filter hook prerouting priority raw; policy accept;\n\
         \t\tudp dport {port} notrack\n\
         \t\tip saddr {cluster} ip daddr {cluster} fib daddr type != local meta mark & {VIP_REPLY_MARK:#010x} == 0 notrack\n\
         \t}}\n\
         \tchain raw-output {{\n\
         \t\ttype filter hook output priority raw; policy accept;\n\
         \t\tudp dport {port} notrack\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} ip daddr != {cluster} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// The `bridge strata` table: a frame a task sends into the bridge (on a
/// port named [`super::ipam::VETH_PREFIX`]`*`) goes on only when it is
/// IPv4 from the port's own MAC and address (set `ip4`) or ARP that says
/// so (set `arp4`: the frame's source, and the sender MAC and address in
/// the ARP body), and not to a metadata service
/// ([`METADATA_DESTINATIONS`]). Everything else a task sends is dropped:
/// a forged address or MAC, ARP for another's address, IPv6 (the overlay
/// has none: link-local IPv6 would reach the node and its other tasks
/// unchecked), other ethertypes, VLAN tags. Frames of other ports (none
/// today) pass.
///
/// The hook is the bridge's prerouting, so it sees what a task sends to
/// the node itself (the resolver on the gateway, a metadata address routed
/// to the node) as well as to other tasks. The table is deleted and made
/// again, not flushed: `flush table` keeps the elements of sets, and a
/// task gone would keep its entry.
pub fn render_bridge(ports: &[Port]) -> String {
    let mut ports = ports.to_vec();
    ports.sort();
    let elements = |f: &dyn Fn(&Port) -> String| -> String {
        if ports.is_empty() {
            return String::new();
        }
        let items: Vec<String> = ports.iter().map(f).collect();
        format!("\t\telements = {{ {} }}\n", items.join(",\n\t\t\t     "))
    };
    let ip4 = elements(&|p: &Port| format!("\"{}\" . {} . {}", p.ifname, p.mac, p.addr));
    let arp4 =
        elements(&|p: &Port| format!("\"{}\" . {} . {} . {}", p.ifname, p.mac, p.mac, p.addr));
    let prefix = super::ipam::VETH_PREFIX;
    let metadata = METADATA_DESTINATIONS.join(", ");
    format!(
        "table bridge strata {{}}\n\
         delete table bridge strata\n\
         table bridge strata {{\n\
         \tset ip4 {{\n\
         \t\ttype ifname . ether_addr . ipv4_addr\n\
         {ip4}\
         \t}}\n\
         \tset arp4 {{\n\
         \t\ttype ifname . ether_addr . ether_addr . ipv4_addr\n\
         {arp4}\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority filter; policy accept;\n\
         \t\tiifname != \"{prefix}*\" accept\n\
         \t\tip daddr {{ {metadata} }} drop\n\
         \t\tiifname . ether saddr . ip saddr @ip4 accept\n\
         \t\tiifname . ether saddr . arp saddr ether . arp saddr ip @arp4 accept\n\
         \t\tdrop\n\
         \t}}\n\
         }}\n"
    )
}

/// ICMP types a node accepts from anywhere: the errors IP needs (path MTU
/// discovery among them) and echo requests.
const ICMP_TYPES: &str = "destination-unreachable, time-exceeded, parameter-problem, echo-request";
/// ICMPv6 types a node accepts from anywhere: the errors, echo requests and
/// neighbour discovery (without which IPv6 does not work on a link at all).
const ICMPV6_TYPES: &str = "destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert";

/// The `inet strata-fw` table: the node's input firewall as `plan` says,
/// one input chain whose policy drops what no rule accepts, with the
/// address sets `masters` and `nodes` its rules refer to. Forwarded
/// traffic (tasks to tasks, tasks to the outside) does not pass an input
/// hook and is left to the other two tables.
///
/// The table is deleted and made again in one transaction, like `bridge
/// strata`: the sets lose a node that left, and connection tracking keeps
/// its entries, so established connections go on through a change.
pub fn render_firewall(plan: &FirewallPlan) -> String {
    let set = |name: &str, addrs: &[Ipv4Addr]| -> String {
        let elements = if addrs.is_empty() {
            String::new()
        } else {
            let a: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            format!("\t\telements = {{ {} }}\n", a.join(", "))
        };
        format!("\tset {name} {{\n\t\ttype ipv4_addr\n{elements}\t}}\n")
    };
    let mut out = String::from(
        "table inet strata-fw {}\n\
         delete table inet strata-fw\n\
         table inet strata-fw {\n",
    );
    if let Some(m) = &plan.masters {
        out.push_str(&set("masters", m));
    }
    if let Some(n) = &plan.nodes {
        out.push_str(&set("nodes", n));
    }
    out.push_str(
        "\tchain input {\n\
         \t\ttype filter hook input priority filter; policy drop;\n",
    );
    for (i, rule) in plan.rules.iter().enumerate() {
        for (matches, verdict) in rule_lines(rule) {
            out.push_str(&format!(
                "\t\t{matches}counter {verdict} comment \"{RULE_PREFIX}{i}\"\n"
            ));
        }
    }
    out.push_str("\t}\n}\n");
    out
}

/// What each firewall rule's comment starts with, before the rule's index
/// in the plan: the counters read back ([`firewall_counters`]) are the
/// plan's rules by it.
pub const RULE_PREFIX: &str = "r";

/// The nft statements of one firewall rule: each its matches (ending in a
/// space, or empty) and its verdict, between which the counter goes.
fn rule_lines(rule: &Rule) -> Vec<(String, &'static str)> {
    let ifnames = |names: &[String]| -> String {
        let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
        match quoted.as_slice() {
            [one] => one.clone(),
            many => format!("{{ {} }}", many.join(", ")),
        }
    };
    match rule {
        Rule::Established => vec![("ct state established,related ".into(), "accept")],
        Rule::Invalid => vec![("ct state invalid ".into(), "drop")],
        Rule::Loopback => vec![("iif \"lo\" ".into(), "accept")],
        Rule::Icmp => vec![
            (format!("icmp type {{ {ICMP_TYPES} }} "), "accept"),
            (format!("icmpv6 type {{ {ICMPV6_TYPES} }} "), "accept"),
        ],
        Rule::Resolver {
            interfaces,
            gateway,
            proto,
        } => vec![(
            format!(
                "iifname {} ip daddr {gateway} {proto} dport {DNS_PORT} ",
                ifnames(interfaces)
            ),
            "accept",
        )],
        Rule::FromOverlay { interfaces } => {
            vec![(format!("iifname {} ", ifnames(interfaces)), "drop")]
        }
        Rule::Dhcp => vec![
            ("udp sport 67 udp dport 68 ".into(), "accept"),
            (
                "ip6 saddr fe80::/10 udp sport 547 udp dport 546 ".into(),
                "accept",
            ),
        ],
        Rule::Open {
            proto, ports, from, ..
        } => {
            let ports = match ports.as_slice() {
                [one] => one.to_string(),
                many => {
                    let p: Vec<String> = many.iter().map(ToString::to_string).collect();
                    format!("{{ {} }}", p.join(", "))
                }
            };
            let from = match from {
                Sources::Any => "",
                Sources::Masters => "ip saddr @masters ",
                Sources::Nodes => "ip saddr @nodes ",
            };
            vec![(format!("{from}{proto} dport {ports} "), "accept")]
        }
        Rule::Drop => vec![(String::new(), "drop")],
    }
}

/// The mark a packet from a VIP's backend gets before connection tracking
/// decides, so that the notrack of traffic between tasks
/// ([`render`]) leaves it tracked and its translation is undone on its way
/// back to the client.
pub const VIP_REPLY_MARK: u32 = 0x0010_0000;

/// The `ip strata-vip` table: every VIP of `plan` balanced in the kernel.
/// A connection to a VIP's address and port from a task (prerouting) or
/// from the node itself (output) is sent to one of its ready backends at
/// random (`numgen`), each chosen alike; conntrack keeps an established
/// connection on its backend through any change. A VIP with no ready
/// backend, or a port of a VIP address that no VIP has, is refused at once
/// (a TCP reset, else ICMP). Replies from backends are marked
/// ([`VIP_REPLY_MARK`]) so that they are tracked. Deleted and made again in
/// one transaction, like the other tables.
///
/// A task that reaches an instance on its own node through a VIP would
/// get the instance's reply straight over the bridge, untranslated: such
/// connections (from and to the node's `subnet`) leave with the gateway's
/// address (masquerade), so the reply comes back through the node. (A
/// task reaching itself through a VIP gets no answer yet: see
/// `docs/design/edge.md`.)
pub fn render_vips(plan: &control::vip::VipPlan, subnet: Ipv4Cidr) -> String {
    let subnet = subnet.trunc();
    let list = |items: Vec<String>| -> String {
        if items.is_empty() {
            String::new()
        } else {
            format!("\t\telements = {{ {} }}\n", items.join(", "))
        }
    };
    let addrs = list(plan.addresses().iter().map(ToString::to_string).collect());
    let backends = list(
        plan.backends()
            .iter()
            .map(|(b, proto)| format!("{} . {proto} . {}", b.ip(), b.port()))
            .collect(),
    );
    let services = list(
        plan.vips
            .iter()
            .filter(|v| !v.backends.is_empty())
            .map(|v| {
                format!(
                    "{} . {} . {} : goto {}",
                    v.address,
                    v.proto,
                    v.port,
                    v.chain()
                )
            })
            .collect(),
    );
    // What is left for a VIP address (no ready backend, or no VIP on that
    // port), forwarded for a task or sent by the node: refused at once.
    let refuse = "\t\tip daddr @addrs meta l4proto tcp reject with tcp reset\n\
                  \t\tip daddr @addrs reject\n";
    let mut chains = String::new();
    for v in plan.vips.iter().filter(|v| !v.backends.is_empty()) {
        let targets: Vec<String> = v
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("{i} : {} . {}", b.ip(), b.port()))
            .collect();
        chains += &format!(
            "\tchain {} {{\n\t\tmeta l4proto {} dnat to numgen random mod {} map {{ {} }}\n\t}}\n",
            v.chain(),
            v.proto,
            v.backends.len(),
            targets.join(", ")
        );
    }
    format!(
        "table ip strata-vip {{}}\n\
         delete table ip strata-vip\n\
         table ip strata-vip {{\n\
         \tset addrs {{\n\t\ttype ipv4_addr\n{addrs}\t}}\n\
         \tset backends {{\n\t\ttype ipv4_addr . inet_proto . inet_service\n{backends}\t}}\n\
         \tmap services {{\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n{services}\t}}\n\
         \tchain reply_mark {{\n\
         \t\ttype filter hook prerouting priority raw - 1; policy accept;\n\
         \t\tip saddr . meta l4proto . th sport @backends meta mark set meta mark | {VIP_REPLY_MARK:#010x}\n\
         \t}}\n\
         \tchain vip_pre {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tip daddr . meta l4proto . th dport vmap @services\n\
         \t}}\n\
         \tchain vip_out {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tip daddr . meta l4proto . th dport vmap @services\n\
         \t}}\n\
         {chains}\
         \tchain vip_post {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} ip daddr {subnet} ct status dnat masquerade\n\
         \t}}\n\
         \tchain vip_forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         {refuse}\
         \t}}\n\
         \tchain vip_local {{\n\
         \t\ttype filter hook output priority filter; policy accept;\n\
         {refuse}\
         \t}}\n\
         }}\n"
    )
}

/// Removes the overlay's tables and the VIPs' (a node leaving the
/// cluster); the firewall stays.
pub fn render_delete() -> String {
    "table ip strata {}\n\
     delete table ip strata\n\
     table bridge strata {}\n\
     delete table bridge strata\n\
     table ip strata-vip {}\n\
     delete table ip strata-vip\n"
        .to_string()
}

/// What each rule of the `inet strata-fw` table in the current network
/// namespace matched, by the rule's index in its plan
/// ([`parse_firewall_counters`] of `nft -j list table inet strata-fw`).
pub fn firewall_counters() -> anyhow::Result<BTreeMap<usize, Counter>> {
    use anyhow::Context as _;
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", "strata-fw"])
        .output()
        .context("cannot run nft")?;
    if !out.status.success() {
        anyhow::bail!(
            "nft -j list table inet strata-fw failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_firewall_counters(&String::from_utf8_lossy(&out.stdout))
}

/// Reads the counters out of nft's JSON listing of `inet strata-fw`: each
/// rule's comment (`r<index>`, [`RULE_PREFIX`]) names the plan's rule, and
/// the lines of one plan rule (ICMP and ICMPv6) add up. Rules without such
/// a comment (none of Strata's) are skipped.
pub fn parse_firewall_counters(json: &str) -> anyhow::Result<BTreeMap<usize, Counter>> {
    use anyhow::Context as _;
    let v: serde_json::Value =
        serde_json::from_str(json).context("nft's JSON listing does not parse")?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .context("nft's JSON listing has no `nftables` array")?;
    let mut out: BTreeMap<usize, Counter> = BTreeMap::new();
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let Some(index) = rule
            .get("comment")
            .and_then(|c| c.as_str())
            .and_then(|c| c.strip_prefix(RULE_PREFIX))
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        let exprs = rule.get("expr").and_then(|e| e.as_array());
        for c in exprs.into_iter().flatten().filter_map(|e| e.get("counter")) {
            let n = |k: &str| c.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
            let slot = out.entry(index).or_default();
            slot.packets += n("packets");
            slot.bytes += n("bytes");
        }
    }
    Ok(out)
}

/// Feeds `ruleset` to `nft -f -` in the current network namespace.
pub fn apply(ruleset: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .context("nft has no stdin")?
        .write_all(ruleset.as_bytes())
        .context("cannot write the ruleset to nft")?;
    let out = child.wait_with_output().context("cannot wait for nft")?;
    if !out.status.success() {
        anyhow::bail!(
            "nft -f - failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn ruleset() {
        let s = render(
            "10.200.1.7/24".parse().expect("cidr"),
            "10.200.0.0/16".parse().expect("cidr"),
            4789,
            &[],
        );
        expect![[r#"
            table ip strata {}
            flush table ip strata
            table ip strata {
            	chain raw-prerouting {
            		type filter hook prerouting priority raw; policy accept;
            		udp dport 4789 notrack
            		ip saddr 10.200.0.0/16 ip daddr 10.200.0.0/16 fib daddr type != local meta mark & 0x00100000 == 0 notrack
            	}
            	chain raw-output {
            		type filter hook output priority raw; policy accept;
            		udp dport 4789 notrack
            	}
            	chain postrouting {
            		type nat hook postrouting priority srcnat; policy accept;
            		ip saddr 10.200.1.0/24 ip daddr != 10.200.0.0/16 masquerade
            	}
            }
            table bridge strata {}
            delete table bridge strata
            table bridge strata {
            	set ip4 {
            		type ifname . ether_addr . ipv4_addr
            	}
            	set arp4 {
            		type ifname . ether_addr . ether_addr . ipv4_addr
            	}
            	chain prerouting {
            		type filter hook prerouting priority filter; policy accept;
            		iifname != "stv*" accept
            		ip daddr { 169.254.0.0/16, 100.100.100.200, 168.63.129.16 } drop
            		iifname . ether saddr . ip saddr @ip4 accept
            		iifname . ether saddr . arp saddr ether . arp saddr ip @arp4 accept
            		drop
            	}
            }
        "#]]
        .assert_eq(&s);
    }

    /// The anti-spoofing sets with two ports, in port order whatever the
    /// order given.
    #[test]
    fn bridge_ruleset_with_two_ports() {
        let port = |task: &str, addr: [u8; 4]| {
            let addr = Ipv4Addr::from(addr);
            Port {
                ifname: super::super::ipam::veth_name(task),
                mac: super::super::plan::task_mac(addr),
                addr,
            }
        };
        let s = render_bridge(&[port("web", [10, 200, 1, 2]), port("db", [10, 200, 1, 3])]);
        expect![[r#"
            table bridge strata {}
            delete table bridge strata
            table bridge strata {
            	set ip4 {
            		type ifname . ether_addr . ipv4_addr
            		elements = { "stv0fd9bc91" . 02:53:0a:c8:01:02 . 10.200.1.2,
            			     "stv571cc6c3" . 02:53:0a:c8:01:03 . 10.200.1.3 }
            	}
            	set arp4 {
            		type ifname . ether_addr . ether_addr . ipv4_addr
            		elements = { "stv0fd9bc91" . 02:53:0a:c8:01:02 . 02:53:0a:c8:01:02 . 10.200.1.2,
            			     "stv571cc6c3" . 02:53:0a:c8:01:03 . 02:53:0a:c8:01:03 . 10.200.1.3 }
            	}
            	chain prerouting {
            		type filter hook prerouting priority filter; policy accept;
            		iifname != "stv*" accept
            		ip daddr { 169.254.0.0/16, 100.100.100.200, 168.63.129.16 } drop
            		iifname . ether saddr . ip saddr @ip4 accept
            		iifname . ether saddr . arp saddr ether . arp saddr ip @arp4 accept
            		drop
            	}
            }
        "#]]
        .assert_eq(&s);
    }

    /// The counters of nft's JSON listing (as `nft -j list table inet
    /// strata-fw` of nftables 1.0.6 prints it, trimmed to three rules), by
    /// the plan's rule: the two lines of one rule add up.
    #[test]
    fn firewall_counters_read_by_rule() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "strata-fw", "handle": 2}}, {"set": {"family": "inet", "name": "nodes", "table": "strata-fw", "type": "ipv4_addr", "handle": 2, "elem": ["10.9.0.10", "10.9.0.21"]}}, {"chain": {"family": "inet", "table": "strata-fw", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}, {"rule": {"family": "inet", "table": "strata-fw", "chain": "input", "handle": 3, "comment": "r0", "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"counter": {"packets": 120, "bytes": 9000}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "strata-fw", "chain": "input", "handle": 6, "comment": "r3", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "icmp", "field": "type"}}, "right": {"set": ["destination-unreachable", "echo-request"]}}}, {"counter": {"packets": 2, "bytes": 168}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "strata-fw", "chain": "input", "handle": 7, "comment": "r3", "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}}, "right": {"set": ["nd-neighbor-solicit"]}}}, {"counter": {"packets": 1, "bytes": 72}}, {"accept": null}]}}, {"rule": {"family": "inet", "table": "strata-fw", "chain": "input", "handle": 16, "comment": "r10", "expr": [{"counter": {"packets": 4, "bytes": 240}}, {"drop": null}]}}]}"#;
        expect![[r#"
            {
                0: Counter {
                    packets: 120,
                    bytes: 9000,
                },
                3: Counter {
                    packets: 3,
                    bytes: 240,
                },
                10: Counter {
                    packets: 4,
                    bytes: 240,
                },
            }
        "#]]
        .assert_debug_eq(&parse_firewall_counters(json).expect("parses"));
        let err = parse_firewall_counters("{}").expect_err("no array");
        expect!["nft's JSON listing has no `nftables` array"].assert_eq(&format!("{err:#}"));
    }

    /// The VIP table of two VIPs, one with two ready backends and one with
    /// none (refused), which nftables 1.0.6 accepts (checked by hand with
    /// `nft -f` in a scratch namespace; the host tier applies it).
    #[test]
    fn vip_ruleset() {
        use control::vip::{Vip, VipPlan, VipProto};
        let plan = VipPlan {
            vips: vec![
                Vip {
                    address: "198.18.0.1".parse().expect("ip"),
                    proto: VipProto::Tcp,
                    port: 80,
                    backends: vec![
                        "10.200.1.2:8080".parse().expect("addr"),
                        "10.200.2.2:8080".parse().expect("addr"),
                    ],
                },
                Vip {
                    address: "198.18.0.2".parse().expect("ip"),
                    proto: VipProto::Udp,
                    port: 53,
                    backends: vec![],
                },
            ],
        };
        expect![[r#"
            table ip strata-vip {}
            delete table ip strata-vip
            table ip strata-vip {
            	set addrs {
            		type ipv4_addr
            		elements = { 198.18.0.1, 198.18.0.2 }
            	}
            	set backends {
            		type ipv4_addr . inet_proto . inet_service
            		elements = { 10.200.1.2 . tcp . 8080, 10.200.2.2 . tcp . 8080 }
            	}
            	map services {
            		type ipv4_addr . inet_proto . inet_service : verdict
            		elements = { 198.18.0.1 . tcp . 80 : goto vip-c6120001-tcp-80 }
            	}
            	chain reply_mark {
            		type filter hook prerouting priority raw - 1; policy accept;
            		ip saddr . meta l4proto . th sport @backends meta mark set meta mark | 0x00100000
            	}
            	chain vip_pre {
            		type nat hook prerouting priority dstnat; policy accept;
            		ip daddr . meta l4proto . th dport vmap @services
            	}
            	chain vip_out {
            		type nat hook output priority -100; policy accept;
            		ip daddr . meta l4proto . th dport vmap @services
            	}
            	chain vip-c6120001-tcp-80 {
            		meta l4proto tcp dnat to numgen random mod 2 map { 0 : 10.200.1.2 . 8080, 1 : 10.200.2.2 . 8080 }
            	}
            	chain vip_post {
            		type nat hook postrouting priority srcnat; policy accept;
            		ip saddr 10.200.1.0/24 ip daddr 10.200.1.0/24 ct status dnat masquerade
            	}
            	chain vip_forward {
            		type filter hook forward priority filter; policy accept;
            		ip daddr @addrs meta l4proto tcp reject with tcp reset
            		ip daddr @addrs reject
            	}
            	chain vip_local {
            		type filter hook output priority filter; policy accept;
            		ip daddr @addrs meta l4proto tcp reject with tcp reset
            		ip daddr @addrs reject
            	}
            }
        "#]].assert_eq(&render_vips(&plan, "10.200.1.7/24".parse().expect("cidr")));
    }

    /// The firewall of a master of three (etcd from the masters, the API
    /// from anywhere) and of a private agent, both on the overlay with
    /// their node lists; `nft -c -f` accepts both.
    #[test]
    fn firewall_rulesets() {
        use control::firewall::{FirewallInput, OverlayInput, plan};
        let ip = |s: &str| -> Ipv4Addr { s.parse().expect("ip") };
        let overlay = |gateway: &str, nodes: &[&str]| OverlayInput {
            vxlan_port: 4789,
            nodes: nodes.iter().map(|n| ip(n)).collect(),
            bridge: "strata-br".into(),
            vxlan: "strata-vx".into(),
            gateway: ip(gateway),
        };
        let role = configs::role::Firewall {
            tcp: vec![9464],
            udp: vec![],
            from: configs::role::Reach::Nodes,
        };
        let master = FirewallInput {
            role: role.clone(),
            api_port: Some(6443),
            etcd_ports: vec![2379, 2380],
            masters: vec![ip("10.9.0.10"), ip("10.9.0.11"), ip("10.9.0.12")],
            overlay: Some(overlay(
                "10.200.0.1",
                &["10.9.0.10", "10.9.0.11", "10.9.0.12", "10.9.0.21"],
            )),
            edge: vec![],
        };
        expect![[r#"
            table inet strata-fw {}
            delete table inet strata-fw
            table inet strata-fw {
            	set masters {
            		type ipv4_addr
            		elements = { 10.9.0.10, 10.9.0.11, 10.9.0.12 }
            	}
            	set nodes {
            		type ipv4_addr
            		elements = { 10.9.0.10, 10.9.0.11, 10.9.0.12, 10.9.0.21 }
            	}
            	chain input {
            		type filter hook input priority filter; policy drop;
            		ct state established,related counter accept comment "r0"
            		ct state invalid counter drop comment "r1"
            		iif "lo" counter accept comment "r2"
            		icmp type { destination-unreachable, time-exceeded, parameter-problem, echo-request } counter accept comment "r3"
            		icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment "r3"
            		iifname { "strata-br", "strata-vx" } ip daddr 10.200.0.1 udp dport 53 counter accept comment "r4"
            		iifname { "strata-br", "strata-vx" } ip daddr 10.200.0.1 tcp dport 53 counter accept comment "r5"
            		iifname { "strata-br", "strata-vx" } counter drop comment "r6"
            		udp sport 67 udp dport 68 counter accept comment "r7"
            		ip6 saddr fe80::/10 udp sport 547 udp dport 546 counter accept comment "r7"
            		tcp dport 6443 counter accept comment "r8"
            		ip saddr @masters tcp dport { 2379, 2380 } counter accept comment "r9"
            		ip saddr @nodes udp dport 4789 counter accept comment "r10"
            		ip saddr @nodes tcp dport 9464 counter accept comment "r11"
            		counter drop comment "r12"
            	}
            }
        "#]]
        .assert_eq(&render_firewall(&plan(&master)));
        let private = FirewallInput {
            role,
            overlay: Some(overlay("10.200.1.1", &["10.9.0.21", "10.9.0.10"])),
            ..FirewallInput::default()
        };
        expect![[r#"
            table inet strata-fw {}
            delete table inet strata-fw
            table inet strata-fw {
            	set nodes {
            		type ipv4_addr
            		elements = { 10.9.0.10, 10.9.0.21 }
            	}
            	chain input {
            		type filter hook input priority filter; policy drop;
            		ct state established,related counter accept comment "r0"
            		ct state invalid counter drop comment "r1"
            		iif "lo" counter accept comment "r2"
            		icmp type { destination-unreachable, time-exceeded, parameter-problem, echo-request } counter accept comment "r3"
            		icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } counter accept comment "r3"
            		iifname { "strata-br", "strata-vx" } ip daddr 10.200.1.1 udp dport 53 counter accept comment "r4"
            		iifname { "strata-br", "strata-vx" } ip daddr 10.200.1.1 tcp dport 53 counter accept comment "r5"
            		iifname { "strata-br", "strata-vx" } counter drop comment "r6"
            		udp sport 67 udp dport 68 counter accept comment "r7"
            		ip6 saddr fe80::/10 udp sport 547 udp dport 546 counter accept comment "r7"
            		ip saddr @nodes udp dport 4789 counter accept comment "r8"
            		ip saddr @nodes tcp dport 9464 counter accept comment "r9"
            		counter drop comment "r10"
            	}
            }
        "#]]
        .assert_eq(&render_firewall(&plan(&private)));
    }
}
