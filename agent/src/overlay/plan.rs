//! Overlay reconciliation as a pure plan: [`plan`] compares what the node
//! should have ([`OverlayState`], from its own lease and the peer list) with
//! what the kernel has ([`NetlinkState`], a dump) and returns the
//! [`Action`]s that turn one into the other. Planning against a state that is
//! already right returns nothing, so an agent restart converges without
//! touching (or flapping) a single entry.
//!
//! Addressing, per node with subnet `S` (for example `10.200.1.0/24`):
//! - the VXLAN device carries `S.network/32` (the node's VTEP address) and
//!   the MAC [`vtep_mac`]`(S)`;
//! - the bridge carries the gateway `S.host(1)/S.prefix`;
//! - every peer with subnet `P` gets a route `P via P.network dev vxlan
//!   onlink`, a permanent neighbour `P.network lladdr vtep_mac(P)` and an
//!   FDB entry `vtep_mac(P) dst <peer underlay IP>`. Learning is off and
//!   there is no all-zero FDB entry, so nothing is flooded.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

use configs::net::Ipv4Cidr;

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The VTEP MAC of the node that leases `subnet`: locally administered,
/// unicast, `0e:53:` followed by the subnet's network address. Every node
/// derives every peer's MAC the same way, so nothing needs to be exchanged.
pub fn vtep_mac(subnet: Ipv4Cidr) -> Mac {
    let o = subnet.network().octets();
    Mac([0x0e, 0x53, o[0], o[1], o[2], o[3]])
}

/// The MAC of the node's bridge, `0e:54:` and the subnet's network address.
/// Fixed, so that the bridge keeps it while task veths come and go (a
/// bridge otherwise takes the lowest MAC of its ports, and every task's ARP
/// entry for the gateway would go stale).
pub fn bridge_mac(subnet: Ipv4Cidr) -> Mac {
    let o = subnet.network().octets();
    Mac([0x0e, 0x54, o[0], o[1], o[2], o[3]])
}

/// The MAC of the task that holds `addr`, set on its veth's end before that
/// end moves into the task's namespace: locally administered, unicast,
/// `02:53:` followed by the address. Derived like the others, so that the
/// bridge's anti-spoofing sets ([`super::nft`]) follow from the IPAM book
/// alone.
pub fn task_mac(addr: Ipv4Addr) -> Mac {
    let o = addr.octets();
    Mac([0x02, 0x53, o[0], o[1], o[2], o[3]])
}

/// The VTEP (overlay) address of the node that leases `subnet`.
pub fn vtep_addr(subnet: Ipv4Cidr) -> Ipv4Addr {
    subnet.network()
}

/// The gateway address of `subnet`, held by the node's bridge: the first host.
pub fn gateway(subnet: Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// What the VXLAN device must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vxlan {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// The node's own underlay address (the tunnel source).
    pub local: Ipv4Addr,
    /// The underlay link the tunnel runs over.
    pub underlay: String,
    pub mtu: u32,
}

/// Another node of the cluster, as the agent learns it from the node list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub name: String,
    pub underlay: Ipv4Addr,
    pub subnet: Ipv4Cidr,
}

/// Desired overlay state of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayState {
    pub vxlan: Vxlan,
    pub bridge: String,
    /// This node's lease.
    pub subnet: Ipv4Cidr,
    /// Every other node (this node is skipped if listed).
    pub peers: Vec<Peer>,
}

/// What kind a link is, with the attributes the plan compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkKind {
    Vxlan {
        vni: u32,
        port: u16,
        local: Option<Ipv4Addr>,
        underlay: Option<u32>,
        learning: bool,
    },
    Bridge,
    Veth,
    Other(String),
}

/// One link from a dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    pub mtu: u32,
    pub mac: Option<Mac>,
    pub up: bool,
    pub controller: Option<u32>,
}

/// One IPv4 address from a dump.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    pub dev: String,
    pub addr: Ipv4Cidr,
}

/// One IPv4 route of the main table from a dump.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    pub dst: Ipv4Cidr,
    pub gateway: Option<Ipv4Addr>,
    pub dev: String,
    pub onlink: bool,
}

/// One IPv4 neighbour entry from a dump.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Neighbour {
    pub dev: String,
    pub ip: Ipv4Addr,
    pub mac: Option<Mac>,
    pub permanent: bool,
}

/// One bridge-family FDB entry from a dump.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fdb {
    pub dev: String,
    pub mac: Mac,
    pub dst: Option<Ipv4Addr>,
    pub permanent: bool,
}

/// A dump of the kernel's state in one network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetlinkState {
    pub links: Vec<Link>,
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<Fdb>,
    /// `net.ipv4.ip_forward`.
    pub forwarding: bool,
}

impl NetlinkState {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// A stable text rendering of everything on the given devices, for
    /// comparing two dumps (the kernel's own ARP cache,
    /// which comes and goes with traffic, left out).
    pub fn render(&self, devs: &[&str]) -> String {
        let mut out = Vec::new();
        let on = |d: &str| devs.contains(&d);
        for l in self.links.iter().filter(|l| on(&l.name)) {
            let ctrl = l
                .controller
                .and_then(|c| self.links.iter().find(|x| x.index == c))
                .map(|x| x.name.as_str());
            out.push(format!(
                "link {} {:?} mtu {} mac {:?} up {} controller {:?}",
                l.name, l.kind, l.mtu, l.mac, l.up, ctrl
            ));
        }
        let mut rest: Vec<String> = Vec::new();
        rest.extend(
            self.addresses
                .iter()
                .filter(|a| on(&a.dev))
                .map(|a| format!("addr {} dev {}", a.addr, a.dev)),
        );
        rest.extend(
            self.routes
                .iter()
                .filter(|r| on(&r.dev))
                .map(|r| format!("route {r:?}")),
        );
        rest.extend(
            self.neighbours
                .iter()
                .filter(|n| on(&n.dev) && n.permanent)
                .map(|n| format!("neigh {n:?}")),
        );
        rest.extend(
            self.fdb
                .iter()
                .filter(|f| on(&f.dev))
                .map(|f| format!("fdb {f:?}")),
        );
        rest.sort();
        out.extend(rest);
        out.push(format!("forwarding {}", self.forwarding));
        out.join("\n")
    }
}

/// One change to the kernel's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    EnableForwarding,
    DeleteLink {
        name: String,
    },
    CreateVxlan {
        vxlan: Vxlan,
        mac: Mac,
    },
    CreateBridge {
        name: String,
        mtu: u32,
        mac: Mac,
    },
    SetMtu {
        name: String,
        mtu: u32,
    },
    SetMac {
        name: String,
        mac: Mac,
    },
    SetUp {
        name: String,
    },
    AddAddress {
        dev: String,
        addr: Ipv4Cidr,
    },
    DeleteAddress {
        dev: String,
        addr: Ipv4Cidr,
    },
    DeleteRoute {
        route: Route,
    },
    DeleteNeighbour {
        dev: String,
        ip: Ipv4Addr,
    },
    DeleteFdb {
        dev: String,
        mac: Mac,
        dst: Option<Ipv4Addr>,
    },
    AddFdb {
        dev: String,
        mac: Mac,
        dst: Ipv4Addr,
    },
    /// Add or replace a permanent neighbour entry.
    SetNeighbour {
        dev: String,
        ip: Ipv4Addr,
        mac: Mac,
    },
    AddRoute {
        route: Route,
    },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::EnableForwarding => write!(f, "sysctl net.ipv4.ip_forward=1"),
            Action::DeleteLink { name } => write!(f, "link del {name}"),
            Action::CreateVxlan { vxlan: v, mac } => write!(
                f,
                "link add {} type vxlan id {} dstport {} local {} dev {} nolearning mtu {} address {mac}",
                v.name, v.vni, v.port, v.local, v.underlay, v.mtu
            ),
            Action::CreateBridge { name, mtu, mac } => {
                write!(f, "link add {name} type bridge mtu {mtu} address {mac}")
            }
            Action::SetMtu { name, mtu } => write!(f, "link set {name} mtu {mtu}"),
            Action::SetMac { name, mac } => write!(f, "link set {name} address {mac}"),
            Action::SetUp { name } => write!(f, "link set {name} up"),
            Action::AddAddress { dev, addr } => write!(f, "addr add {addr} dev {dev}"),
            Action::DeleteAddress { dev, addr } => write!(f, "addr del {addr} dev {dev}"),
            Action::DeleteRoute { route } => write!(f, "route del {}", route_text(route)),
            Action::DeleteNeighbour { dev, ip } => write!(f, "neigh del {ip} dev {dev}"),
            Action::DeleteFdb { dev, mac, dst } => match dst {
                Some(d) => write!(f, "fdb del {mac} dev {dev} dst {d}"),
                None => write!(f, "fdb del {mac} dev {dev}"),
            },
            Action::AddFdb { dev, mac, dst } => {
                write!(f, "fdb add {mac} dev {dev} dst {dst} self permanent")
            }
            Action::SetNeighbour { dev, ip, mac } => {
                write!(f, "neigh replace {ip} lladdr {mac} dev {dev} nud permanent")
            }
            Action::AddRoute { route } => write!(f, "route add {}", route_text(route)),
        }
    }
}

fn route_text(r: &Route) -> String {
    let mut s = format!("{}", r.dst);
    if let Some(g) = r.gateway {
        s += &format!(" via {g}");
    }
    s += &format!(" dev {}", r.dev);
    if r.onlink {
        s += " onlink";
    }
    s
}

/// The actions that turn `observed` into `desired`, in the order to apply
/// them. Only the node's own VXLAN device and bridge and the entries on
/// them are touched; anything else in the namespace is left alone.
pub fn plan(desired: &OverlayState, observed: &NetlinkState) -> Vec<Action> {
    let mut actions = Vec::new();
    if !observed.forwarding {
        actions.push(Action::EnableForwarding);
    }
    let vx = &desired.vxlan;
    let own_mac = vtep_mac(desired.subnet);

    // The VXLAN device: its identity (VNI, port, source, underlay,
    // learning) can only be set at creation, so a mismatch recreates it.
    let underlay_index = observed.link(&vx.underlay).map(|l| l.index);
    let vx_fresh = match observed.link(&vx.name) {
        Some(l) => {
            let same = l.kind
                == LinkKind::Vxlan {
                    vni: vx.vni,
                    port: vx.port,
                    local: Some(vx.local),
                    underlay: underlay_index,
                    learning: false,
                };
            if !same {
                actions.push(Action::DeleteLink {
                    name: vx.name.clone(),
                });
            }
            !same
        }
        None => true,
    };
    if vx_fresh {
        actions.push(Action::CreateVxlan {
            vxlan: vx.clone(),
            mac: own_mac,
        });
    } else if let Some(l) = observed.link(&vx.name) {
        if l.mtu != vx.mtu {
            actions.push(Action::SetMtu {
                name: vx.name.clone(),
                mtu: vx.mtu,
            });
        }
        if l.mac != Some(own_mac) {
            actions.push(Action::SetMac {
                name: vx.name.clone(),
                mac: own_mac,
            });
        }
    }
    if vx_fresh || observed.link(&vx.name).is_some_and(|l| !l.up) {
        actions.push(Action::SetUp {
            name: vx.name.clone(),
        });
    }

    // The bridge.
    let br_fresh = match observed.link(&desired.bridge) {
        Some(l) if l.kind == LinkKind::Bridge => false,
        Some(_) => {
            actions.push(Action::DeleteLink {
                name: desired.bridge.clone(),
            });
            true
        }
        None => true,
    };
    let br_mac = bridge_mac(desired.subnet);
    if br_fresh {
        actions.push(Action::CreateBridge {
            name: desired.bridge.clone(),
            mtu: vx.mtu,
            mac: br_mac,
        });
    } else if let Some(l) = observed.link(&desired.bridge) {
        if l.mtu != vx.mtu {
            actions.push(Action::SetMtu {
                name: desired.bridge.clone(),
                mtu: vx.mtu,
            });
        }
        if l.mac != Some(br_mac) {
            actions.push(Action::SetMac {
                name: desired.bridge.clone(),
                mac: br_mac,
            });
        }
    }
    if br_fresh || observed.link(&desired.bridge).is_some_and(|l| !l.up) {
        actions.push(Action::SetUp {
            name: desired.bridge.clone(),
        });
    }

    // Addresses.
    let want_addrs = [
        Address {
            dev: vx.name.clone(),
            addr: Ipv4Cidr {
                addr: vtep_addr(desired.subnet),
                prefix: 32,
            },
        },
        Address {
            dev: desired.bridge.clone(),
            addr: Ipv4Cidr {
                addr: gateway(desired.subnet),
                prefix: desired.subnet.prefix,
            },
        },
    ];
    let fresh = |dev: &str| (dev == vx.name && vx_fresh) || (dev == desired.bridge && br_fresh);
    let have_addrs: BTreeSet<&Address> = observed
        .addresses
        .iter()
        .filter(|a| !fresh(&a.dev))
        .collect();
    for a in &have_addrs {
        if (a.dev == vx.name || a.dev == desired.bridge) && !want_addrs.contains(a) {
            actions.push(Action::DeleteAddress {
                dev: a.dev.clone(),
                addr: a.addr,
            });
        }
    }
    for a in &want_addrs {
        if !have_addrs.contains(a) {
            actions.push(Action::AddAddress {
                dev: a.dev.clone(),
                addr: a.addr,
            });
        }
    }

    // Per-peer entries, keyed so that duplicates collapse.
    let peers: BTreeMap<Ipv4Addr, &Peer> = desired
        .peers
        .iter()
        .filter(|p| p.subnet.trunc() != desired.subnet.trunc())
        .map(|p| (p.subnet.network(), p))
        .collect();
    let want_routes: BTreeSet<Route> = peers
        .values()
        .map(|p| Route {
            dst: p.subnet.trunc(),
            gateway: Some(vtep_addr(p.subnet)),
            dev: vx.name.clone(),
            onlink: true,
        })
        .collect();
    let want_neigh: BTreeMap<Ipv4Addr, Mac> = peers
        .values()
        .map(|p| (vtep_addr(p.subnet), vtep_mac(p.subnet)))
        .collect();
    let want_fdb: BTreeMap<Mac, Ipv4Addr> = peers
        .values()
        .map(|p| (vtep_mac(p.subnet), p.underlay))
        .collect();

    // Entries on a device about to be (re)created are gone with it.
    let on_vx = |dev: &String| *dev == vx.name && !vx_fresh;
    let (routes, neighbours, fdb) = (&observed.routes, &observed.neighbours, &observed.fdb);
    let have_routes: BTreeSet<&Route> = routes.iter().filter(|r| on_vx(&r.dev)).collect();
    for r in &have_routes {
        if !want_routes.contains(*r) {
            actions.push(Action::DeleteRoute {
                route: (*r).clone(),
            });
        }
    }
    let mut neigh_ok = BTreeSet::new();
    for n in neighbours.iter().filter(|n| on_vx(&n.dev)) {
        match want_neigh.get(&n.ip) {
            Some(mac) if n.mac == Some(*mac) && n.permanent => {
                neigh_ok.insert(n.ip);
            }
            Some(_) => {}
            None => actions.push(Action::DeleteNeighbour {
                dev: n.dev.clone(),
                ip: n.ip,
            }),
        }
    }
    let mut fdb_ok = BTreeSet::new();
    for e in fdb.iter().filter(|e| on_vx(&e.dev)) {
        match (want_fdb.get(&e.mac), e.dst) {
            (Some(dst), Some(d)) if *dst == d && e.permanent && !fdb_ok.contains(&e.mac) => {
                fdb_ok.insert(e.mac);
            }
            _ => actions.push(Action::DeleteFdb {
                dev: e.dev.clone(),
                mac: e.mac,
                dst: e.dst,
            }),
        }
    }
    for (mac, dst) in &want_fdb {
        if !fdb_ok.contains(mac) {
            actions.push(Action::AddFdb {
                dev: vx.name.clone(),
                mac: *mac,
                dst: *dst,
            });
        }
    }
    for (ip, mac) in &want_neigh {
        if !neigh_ok.contains(ip) {
            actions.push(Action::SetNeighbour {
                dev: vx.name.clone(),
                ip: *ip,
                mac: *mac,
            });
        }
    }
    for r in &want_routes {
        if !have_routes.contains(r) {
            actions.push(Action::AddRoute { route: r.clone() });
        }
    }
    actions
}

/// The MTU of the overlay: the configured one, or the underlay's minus the
/// 50 bytes of VXLAN encapsulation.
pub fn overlay_mtu(configured: Option<u32>, underlay_mtu: u32) -> u32 {
    configured.unwrap_or(underlay_mtu.saturating_sub(50))
}

#[cfg(test)]
mod tests;
