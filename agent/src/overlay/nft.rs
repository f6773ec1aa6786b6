//! Masquerading of traffic that leaves the overlay, with nftables: the only
//! module that runs `nft`. The ruleset lives in its own table `ip strata`
//! and is replaced as a whole in one atomic transaction, so applying it
//! again is a no-op for traffic (connection tracking keeps its entries).

use std::io::Write;
use std::process::{Command, Stdio};

use configs::net::Ipv4Cidr;

/// The ruleset for a node leasing `subnet` in the overlay `cluster`, with
/// VXLAN on UDP `port`:
/// - packets from the node's tasks to anything outside the overlay leave
///   with the node's address (masquerade);
/// - VXLAN packets and traffic that stays inside the overlay skip
///   connection tracking (nothing is translated there, and tracking both
///   the inner and the outer packet costs throughput).
pub fn render(subnet: Ipv4Cidr, cluster: Ipv4Cidr, port: u16) -> String {
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

/// Removes the table (a node leaving the cluster).
pub fn render_delete() -> String {
    "table ip strata {}\ndelete table ip strata\n".to_string()
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
        "#]]
        .assert_eq(&s);
    }
}
