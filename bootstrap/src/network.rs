//! The underlay network from user-data, as a systemd-networkd `.network`
//! file. Pure: the agent writes [`NetworkPlan::contents`] to
//! [`NetworkPlan::path`] and reloads networkd.
//!
//! Where and under which name:
//!
//! - `/run/systemd/network`: the root filesystem is read-only and the file is
//!   rendered again at every boot from the kept user-data, so the runtime
//!   directory is the right home; networkd reads it beside `/etc` and
//!   `/lib/systemd/network`.
//! - `10-strata.network`: networkd sorts the `.network` files of all three
//!   directories together by file name, and the first whose `[Match]` fits
//!   a link configures it; later matches are ignored. Ours must come before
//!   the files that would otherwise claim the interface: the `90-<ifname>`
//!   file that `systemd-network-generator` writes from an `ip=` kernel
//!   parameter, the image's DHCP fallback (which sorts after `90-`), and
//!   systemd's shipped `80-*.network` (containers, VMs, wifi; bookworm's
//!   systemd 252 ships nothing below `80-`). Nothing in the image sorts
//!   before `10-`, so no other file can win over it; a file an operator
//!   drops in `/etc/systemd/network` with a lower number still would, on
//!   purpose.

use std::fmt::Write;
use std::path::PathBuf;

use configs::user_data::Network;

/// The directory the agent writes the file into.
pub const NETWORK_DIR: &str = "/run/systemd/network";
/// The file name; see the module documentation for why it sorts first.
pub const NETWORK_FILE: &str = "10-strata.network";

/// A rendered networkd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    pub path: PathBuf,
    pub contents: String,
}

/// Renders the `.network` file for `network`: the named interface, or every
/// ethernet link (`en*`, `eth*`) when none is named; a static address,
/// gateway and DNS servers, or DHCP when no address is given. The cluster's
/// underlay is IPv4, so IPv6 link-local addressing and router advertisements
/// are off (nothing waits for them at boot). With several ethernet links and
/// a static address, name the interface in user-data: networkd has no "first
/// link" match.
pub fn apply_network(network: &Network) -> NetworkPlan {
    let mut s =
        String::from("# Written by strata from the node's user-data at every boot.\n[Match]\n");
    match &network.interface {
        Some(name) => writeln!(s, "Name={name}"),
        None => writeln!(s, "Name=en* eth*\nType=ether"),
    }
    .expect("writing to a String cannot fail");
    s.push_str("\n[Network]\n");
    match network.address {
        Some(address) => writeln!(s, "Address={address}"),
        None => writeln!(s, "DHCP=ipv4"),
    }
    .expect("writing to a String cannot fail");
    if let Some(gateway) = network.gateway {
        writeln!(s, "Gateway={gateway}").expect("writing to a String cannot fail");
    }
    for dns in &network.dns {
        writeln!(s, "DNS={dns}").expect("writing to a String cannot fail");
    }
    s.push_str("LinkLocalAddressing=no\nIPv6AcceptRA=no\n");
    NetworkPlan {
        path: PathBuf::from(NETWORK_DIR).join(NETWORK_FILE),
        contents: s,
    }
}
