//! The node's nftables rules: the only module that runs `nft`. Two tables,
//! replaced as a whole in one atomic transaction, so applying them again is
//! a no-op for traffic (connection tracking keeps its entries):
//! - `ip strata`: masquerading of traffic that leaves the overlay;
//! - `bridge strata`: what a task may send into the node's bridge (its own
//!   MAC and address only, no cloud metadata service).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use configs::net::Ipv4Cidr;

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
/// - VXLAN packets and traffic that stays inside the overlay skip
///   connection tracking (nothing is translated there, and tracking both
///   the inner and the outer packet costs throughput);
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
         \t\tip saddr {cluster} ip daddr {cluster} notrack\n\
         \t}}\n\
         \tchain raw-output {{\n\
         \t\ttype filter hook output priority raw; policy accept;\n\
         \t\tudp dport {port} notrack\n\
         \t\tip saddr {cluster} ip daddr {cluster} notrack\n\
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

/// Removes both tables (a node leaving the cluster).
pub fn render_delete() -> String {
    "table ip strata {}\n\
     delete table ip strata\n\
     table bridge strata {}\n\
     delete table bridge strata\n"
        .to_string()
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
            		ip saddr 10.200.0.0/16 ip daddr 10.200.0.0/16 notrack
            	}
            	chain raw-output {
            		type filter hook output priority raw; policy accept;
            		udp dport 4789 notrack
            		ip saddr 10.200.0.0/16 ip daddr 10.200.0.0/16 notrack
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
}
