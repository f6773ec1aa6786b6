//! The only module of the agent that talks rtnetlink: it dumps a network
//! namespace into a [`NetlinkState`], applies planned [`Action`]s, and wires
//! a task's veth into its network namespace.
//!
//! Every entry point takes the namespace to work in (`None`: the caller's)
//! and runs on a thread of its own with a single-threaded runtime, because
//! a netlink socket belongs to the namespace of the thread that opened it.
//! Call them from async code through `tokio::task::spawn_blocking`.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};
use configs::net::Ipv4Cidr;
use futures::TryStreamExt as _;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use super::netns;
use super::plan::{
    self, Action, Address, Fdb, Link, LinkKind, Mac, Neighbour, NetlinkState, Route,
};

/// Runs `f` with a netlink handle opened inside `netns` (the caller's
/// namespace when `None`), on a thread of its own.
pub fn with_handle<T, F, Fut>(netns: Option<&Path>, f: F) -> anyhow::Result<T>
where
    T: Send,
    F: FnOnce(Handle) -> Fut + Send,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    netns::run_in(netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a netlink runtime")?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().context("cannot open a netlink socket")?;
            let task = tokio::spawn(conn);
            let out = f(handle).await;
            task.abort();
            out
        })
    })
}

/// Dumps links, IPv4 addresses, main-table IPv4 routes, IPv4 neighbours,
/// FDB entries and `net.ipv4.ip_forward` of the handle's namespace.
pub async fn observe(handle: &Handle) -> anyhow::Result<NetlinkState> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .context("cannot dump links")?;
    let links: Vec<Link> = links.iter().filter_map(link_from).collect();
    let name = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone())
    };

    let addrs: Vec<AddressMessage> = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .context("cannot dump addresses")?;
    let mut addresses = Vec::new();
    for a in &addrs {
        let ip = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let ip = ip.or_else(|| {
            a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })
        });
        if let (Some(ip), Some(dev)) = (ip, name(a.header.index)) {
            addresses.push(Address {
                dev,
                addr: Ipv4Cidr {
                    addr: ip,
                    prefix: a.header.prefix_len,
                },
            });
        }
    }

    let routes: Vec<RouteMessage> = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute()
        .try_collect()
        .await
        .context("cannot dump routes")?;
    let mut out_routes = Vec::new();
    for r in &routes {
        let table = r
            .attributes
            .iter()
            .find_map(|x| match x {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(r.header.table));
        if table != u32::from(RouteHeader::RT_TABLE_MAIN) || r.header.kind != RouteType::Unicast {
            continue;
        }
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut gateway = None;
        let mut oif = None;
        for x in &r.attributes {
            match x {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        if let Some(dev) = oif.and_then(name) {
            out_routes.push(Route {
                dst: Ipv4Cidr {
                    addr: dst,
                    prefix: r.header.destination_prefix_length,
                },
                gateway,
                dev,
                onlink: r.header.flags.contains(RouteFlags::Onlink),
            });
        }
    }

    let neigh: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Inet)
        .execute()
        .try_collect()
        .await
        .context("cannot dump neighbours")?;
    let mut neighbours = Vec::new();
    for n in &neigh {
        let ip = n.attributes.iter().find_map(|x| match x {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        if let (Some(ip), Some(dev)) = (ip, name(n.header.ifindex)) {
            neighbours.push(Neighbour {
                dev,
                ip,
                mac: lladdr(&n.attributes),
                permanent: n.header.state == NeighbourState::Permanent,
            });
        }
    }

    let fdb_msgs: Vec<NeighbourMessage> = handle
        .neighbours()
        .get()
        .set_address_family(AddressFamily::Bridge)
        .execute()
        .try_collect()
        .await
        .context("cannot dump the FDB")?;
    let mut fdb = Vec::new();
    for e in &fdb_msgs {
        // In bridge-family messages the destination comes as raw bytes.
        let dst = e.attributes.iter().find_map(|x| match x {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
            }
            _ => None,
        });
        if let (Some(mac), Some(dev)) = (lladdr(&e.attributes), name(e.header.ifindex)) {
            fdb.push(Fdb {
                dev,
                mac,
                dst,
                permanent: e.header.state == NeighbourState::Permanent,
            });
        }
    }

    let forwarding = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .context("cannot read /proc/sys/net/ipv4/ip_forward")?
        .trim()
        == "1";
    Ok(NetlinkState {
        links,
        addresses,
        routes: out_routes,
        neighbours,
        fdb,
        forwarding,
    })
}

fn lladdr(attrs: &[NeighbourAttribute]) -> Option<Mac> {
    attrs.iter().find_map(|x| match x {
        NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac),
        _ => None,
    })
}

fn link_from(m: &LinkMessage) -> Option<Link> {
    let mut name = None;
    let mut mtu = 0;
    let mut mac = None;
    let mut controller = None;
    let mut kind = LinkKind::Other(String::new());
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Mtu(v) => mtu = *v,
            LinkAttribute::Address(b) => mac = <[u8; 6]>::try_from(b.as_slice()).ok().map(Mac),
            LinkAttribute::Controller(c) => controller = Some(*c),
            LinkAttribute::LinkInfo(infos) => kind = kind_from(infos),
            _ => {}
        }
    }
    Some(Link {
        index: m.header.index,
        name: name?,
        kind,
        mtu,
        mac,
        up: m.header.flags.contains(LinkFlags::Up),
        controller,
    })
}

fn kind_from(infos: &[LinkInfo]) -> LinkKind {
    let mut kind = LinkKind::Other(String::new());
    for i in infos {
        match i {
            LinkInfo::Kind(InfoKind::Bridge) => kind = LinkKind::Bridge,
            LinkInfo::Kind(InfoKind::Veth) => kind = LinkKind::Veth,
            LinkInfo::Kind(InfoKind::Vxlan) if !matches!(kind, LinkKind::Vxlan { .. }) => {
                kind = LinkKind::Vxlan {
                    vni: 0,
                    port: 0,
                    local: None,
                    underlay: None,
                    learning: true,
                };
            }
            LinkInfo::Kind(InfoKind::Vxlan) => {}
            LinkInfo::Kind(other) => kind = LinkKind::Other(other.to_string()),
            LinkInfo::Data(InfoData::Vxlan(data)) => {
                let (mut vni, mut port, mut local, mut underlay, mut learning) =
                    (0, 0, None, None, true);
                for d in data {
                    match d {
                        InfoVxlan::Id(v) => vni = *v,
                        InfoVxlan::Port(p) => port = *p,
                        InfoVxlan::Local(ip) => local = Some(*ip),
                        InfoVxlan::Link(i) => underlay = Some(*i),
                        InfoVxlan::Learning(l) => learning = *l,
                        _ => {}
                    }
                }
                kind = LinkKind::Vxlan {
                    vni,
                    port,
                    local,
                    underlay,
                    learning,
                };
            }
            _ => {}
        }
    }
    kind
}

async fn index_of(handle: &Handle, name: &str) -> anyhow::Result<u32> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    let link = links
        .try_next()
        .await
        .with_context(|| format!("cannot find link {name}"))?
        .ok_or_else(|| anyhow!("no link named {name}"))?;
    Ok(link.header.index)
}

fn route_message(r: &Route, index: u32) -> anyhow::Result<RouteMessage> {
    let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(r.dst.addr, r.dst.prefix)
        .output_interface(index);
    if let Some(g) = r.gateway {
        b = b.gateway(g);
    }
    if r.onlink {
        b = b.onlink();
    }
    Ok(b.build())
}

fn fdb_message(index: u32, mac: Mac, dst: Option<Ipv4Addr>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    if let Some(d) = dst {
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(d)));
    }
    m
}

/// Applies `actions` in order through `handle`.
pub async fn apply(handle: &Handle, actions: &[Action]) -> anyhow::Result<()> {
    for a in actions {
        apply_one(handle, a)
            .await
            .with_context(|| format!("cannot {a}"))?;
    }
    Ok(())
}

async fn apply_one(handle: &Handle, action: &Action) -> anyhow::Result<()> {
    match action {
        Action::EnableForwarding => std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .context("cannot write /proc/sys/net/ipv4/ip_forward")?,
        Action::DeleteLink { name } => {
            let i = index_of(handle, name).await?;
            handle.link().del(i).execute().await?;
        }
        Action::CreateVxlan { vxlan, mac } => {
            let dev = index_of(handle, &vxlan.underlay).await?;
            let msg = LinkVxlan::new(&vxlan.name, vxlan.vni)
                .dev(dev)
                .port(vxlan.port)
                .local(vxlan.local)
                .learning(false)
                .mtu(vxlan.mtu)
                .address(mac.0.to_vec())
                .build();
            handle.link().add(msg).execute().await?;
        }
        Action::CreateBridge { name, mtu, mac } => {
            handle
                .link()
                .add(
                    LinkBridge::new(name)
                        .mtu(*mtu)
                        .address(mac.0.to_vec())
                        .build(),
                )
                .execute()
                .await?;
        }
        Action::SetMtu { name, mtu } => {
            let i = index_of(handle, name).await?;
            handle
                .link()
                .set(LinkUnspec::new_with_index(i).mtu(*mtu).build())
                .execute()
                .await?;
        }
        Action::SetMac { name, mac } => {
            let i = index_of(handle, name).await?;
            handle
                .link()
                .set(
                    LinkUnspec::new_with_index(i)
                        .address(mac.0.to_vec())
                        .build(),
                )
                .execute()
                .await?;
        }
        Action::SetUp { name } => {
            let i = index_of(handle, name).await?;
            handle
                .link()
                .set(LinkUnspec::new_with_index(i).up().build())
                .execute()
                .await?;
        }
        Action::AddAddress { dev, addr } => {
            let i = index_of(handle, dev).await?;
            handle
                .address()
                .add(i, IpAddr::V4(addr.addr), addr.prefix)
                .replace()
                .execute()
                .await?;
        }
        Action::DeleteAddress { dev, addr } => {
            let i = index_of(handle, dev).await?;
            let msg = AddressMessageBuilder::<Ipv4Addr>::new()
                .index(i)
                .address(addr.addr, addr.prefix)
                .build();
            handle.address().del(msg).execute().await?;
        }
        Action::DeleteRoute { route } => {
            let i = index_of(handle, &route.dev).await?;
            handle
                .route()
                .del(route_message(route, i)?)
                .execute()
                .await?;
        }
        Action::AddRoute { route } => {
            let i = index_of(handle, &route.dev).await?;
            handle
                .route()
                .add(route_message(route, i)?)
                .replace()
                .execute()
                .await?;
        }
        Action::DeleteNeighbour { dev, ip } => {
            let i = index_of(handle, dev).await?;
            let mut m = NeighbourMessage::default();
            m.header.family = AddressFamily::Inet;
            m.header.ifindex = i;
            m.attributes
                .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(*ip)));
            handle.neighbours().del(m).execute().await?;
        }
        Action::SetNeighbour { dev, ip, mac } => {
            let i = index_of(handle, dev).await?;
            handle
                .neighbours()
                .add(i, IpAddr::V4(*ip))
                .link_layer_address(&mac.0)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await?;
        }
        Action::AddFdb { dev, mac, dst } => {
            let i = index_of(handle, dev).await?;
            handle
                .neighbours()
                .add_bridge(i, &mac.0)
                .flags(NeighbourFlags::Own)
                .destination(IpAddr::V4(*dst))
                .execute()
                .await?;
        }
        Action::DeleteFdb { dev, mac, dst } => {
            let i = index_of(handle, dev).await?;
            handle
                .neighbours()
                .del(fdb_message(i, *mac, *dst))
                .execute()
                .await?;
        }
    }
    Ok(())
}

/// How the node's overlay is configured (from the cluster config and the
/// node's own underlay address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeOverlay {
    /// The node's underlay address; the link holding it carries the tunnel.
    pub underlay_ip: Ipv4Addr,
    pub vni: u32,
    pub port: u16,
    /// `None`: the underlay link's MTU minus 50.
    pub mtu: Option<u32>,
    pub vxlan_name: String,
    pub bridge_name: String,
}

impl NodeOverlay {
    /// Defaults for the device names (`strata-vx`, `strata-br`).
    pub fn new(underlay_ip: Ipv4Addr, overlay: &configs::cluster::Overlay) -> NodeOverlay {
        NodeOverlay {
            underlay_ip,
            vni: overlay.vni,
            port: overlay.port,
            mtu: overlay.mtu,
            vxlan_name: "strata-vx".into(),
            bridge_name: "strata-br".into(),
        }
    }

    /// The desired state of this node, given the dump (for the underlay
    /// link's name and MTU). Pure.
    pub fn desired(
        &self,
        subnet: Ipv4Cidr,
        peers: Vec<plan::Peer>,
        observed: &NetlinkState,
    ) -> anyhow::Result<plan::OverlayState> {
        let dev = observed
            .addresses
            .iter()
            .find(|a| a.addr.addr == self.underlay_ip)
            .map(|a| a.dev.clone())
            .ok_or_else(|| anyhow!("no link holds the underlay address {}", self.underlay_ip))?;
        let underlay_mtu = observed.link(&dev).map(|l| l.mtu).unwrap_or(1500);
        Ok(plan::OverlayState {
            vxlan: plan::Vxlan {
                name: self.vxlan_name.clone(),
                vni: self.vni,
                port: self.port,
                local: self.underlay_ip,
                underlay: dev,
                mtu: plan::overlay_mtu(self.mtu, underlay_mtu),
            },
            bridge: self.bridge_name.clone(),
            subnet,
            peers,
        })
    }
}

/// One reconciliation pass in `netns`: dump, plan, apply. Returns the
/// actions it applied (empty when everything was already right).
pub fn reconcile(
    netns: Option<&Path>,
    node: &NodeOverlay,
    subnet: Ipv4Cidr,
    peers: Vec<plan::Peer>,
) -> anyhow::Result<Vec<Action>> {
    with_handle(netns, |handle| async move {
        let observed = observe(&handle).await?;
        let desired = node.desired(subnet, peers, &observed)?;
        let actions = plan::plan(&desired, &observed);
        apply(&handle, &actions).await?;
        Ok(actions)
    })
}

/// Dumps the namespace `netns`.
pub fn dump(netns: Option<&Path>) -> anyhow::Result<NetlinkState> {
    with_handle(netns, |handle| async move { observe(&handle).await })
}

/// A task's network attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNet {
    /// The task's network namespace (`/var/run/netns/NAME`).
    pub netns: PathBuf,
    /// Host-side veth name (see [`super::ipam::veth_name`]).
    pub host_if: String,
    /// The task's address with the subnet's prefix (from [`super::ipam::Ipam`]).
    pub addr: Ipv4Cidr,
    /// The MAC of the task's end ([`plan::task_mac`]), which the bridge's
    /// anti-spoofing rules expect.
    pub mac: Mac,
    /// The node's bridge.
    pub bridge: String,
    pub mtu: u32,
}

/// Creates the task's veth pair: the host end in the node namespace
/// `node_netns`, enslaved to the bridge, and the task's end made directly
/// inside the task's namespace as `eth0`, with its MAC and MTU, then given
/// the address and a default route via the subnet's gateway. An existing
/// host end of the same name is replaced.
///
/// The task's end never exists in the node's namespace. Made there with a
/// random MAC and given its own one after, it raced systemd-udevd on a
/// booted node: udev's default `MACAddressPolicy=persistent` read the
/// random one and, a moment later, replaced whatever the agent had set
/// with a MAC derived from the name, so the task sent every frame from a
/// MAC the bridge's anti-spoofing rules drop, and nothing could reach it
/// (its neighbour entry on the bridge `FAILED`) while its own health
/// checks, inside its namespace, passed. A MAC given at creation is one the
/// kernel marks as set, which udev leaves alone; and udev on the node never
/// hears of a link made in another namespace.
pub fn attach_task(node_netns: Option<&Path>, task: &TaskNet) -> anyhow::Result<()> {
    let ns_file = std::fs::File::open(&task.netns)
        .with_context(|| format!("cannot open task namespace {}", task.netns.display()))?;
    with_handle(node_netns, |handle| async move {
        if let Ok(i) = index_of(&handle, &task.host_if).await {
            handle
                .link()
                .del(i)
                .execute()
                .await
                .with_context(|| format!("cannot delete old {}", task.host_if))?;
        }
        let peer = LinkUnspec::new_with_name(TASK_IF)
            .address(task.mac.0.to_vec())
            .mtu(task.mtu)
            .setns_by_fd(ns_file.as_raw_fd())
            .build();
        handle
            .link()
            .add(
                LinkVeth::new(&task.host_if, TASK_IF)
                    .mtu(task.mtu)
                    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                    .build(),
            )
            .execute()
            .await
            .with_context(|| {
                format!(
                    "cannot create veth {} with its other end in {}",
                    task.host_if,
                    task.netns.display()
                )
            })?;
        let host = index_of(&handle, &task.host_if).await?;
        let bridge = index_of(&handle, &task.bridge).await?;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(host)
                    .controller(bridge)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("cannot attach {} to {}", task.host_if, task.bridge))?;
        Ok(())
    })?;
    let gw = plan::gateway(task.addr);
    with_handle(Some(&task.netns), |handle| async move {
        let lo = index_of(&handle, "lo").await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .context("cannot set lo up")?;
        let i = index_of(&handle, TASK_IF).await?;
        handle
            .address()
            .add(i, IpAddr::V4(task.addr.addr), task.addr.prefix)
            .execute()
            .await
            .with_context(|| format!("cannot add {} to {TASK_IF}", task.addr))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(i).up().build())
            .execute()
            .await
            .with_context(|| format!("cannot set {TASK_IF} up"))?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .output_interface(i)
            .build();
        handle
            .route()
            .add(default)
            .execute()
            .await
            .with_context(|| format!("cannot add default route via {gw}"))?;
        Ok(())
    })
}

/// The task's end of its veth, inside its namespace.
pub const TASK_IF: &str = "eth0";

/// Removes the task's veth (both ends go). Missing is not an error.
pub fn detach_task(node_netns: Option<&Path>, host_if: &str) -> anyhow::Result<()> {
    with_handle(node_netns, |handle| async move {
        if let Ok(i) = index_of(&handle, host_if).await {
            handle
                .link()
                .del(i)
                .execute()
                .await
                .with_context(|| format!("cannot delete {host_if}"))?;
        }
        Ok(())
    })
}

#[cfg(feature = "testing")]
/// Sets the loopback link of `netns` up (a fresh namespace has it down).
pub fn loopback_up(netns: Option<&Path>) -> anyhow::Result<()> {
    with_handle(netns, |handle| async move {
        let lo = index_of(&handle, "lo").await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .context("cannot set lo up")
    })
}

#[cfg(feature = "testing")]
/// A veth pair for test and benchmark plumbing (an underlay).
#[derive(Debug, Clone, Default)]
pub struct VethPair<'a> {
    /// Name of the end that stays in the first namespace.
    pub a: &'a str,
    pub a_addr: Option<Ipv4Cidr>,
    /// Enslave `a` to this bridge.
    pub bridge: Option<&'a str>,
    /// Name of the end moved into the second namespace.
    pub b: &'a str,
    pub b_addr: Option<Ipv4Cidr>,
    /// MTU of both ends (the kernel's default when `None`).
    pub mtu: Option<u32>,
}

#[cfg(feature = "testing")]
/// Creates the pair `v` between `netns_a` and `netns_b`, both ends up, with
/// their addresses, and loopback of `netns_b` up.
pub fn veth_between(
    netns_a: Option<&Path>,
    netns_b: &Path,
    v: &VethPair<'_>,
) -> anyhow::Result<()> {
    let VethPair {
        a,
        a_addr,
        bridge,
        b,
        b_addr,
        mtu,
    } = v.clone();
    let ns_file = std::fs::File::open(netns_b)
        .with_context(|| format!("cannot open namespace {}", netns_b.display()))?;
    with_handle(netns_a, |handle| async move {
        handle
            .link()
            .add(match mtu {
                Some(m) => LinkVeth::new(a, b).mtu(m).build(),
                None => LinkVeth::new(a, b).build(),
            })
            .execute()
            .await
            .with_context(|| format!("cannot create veth {a}"))?;
        let ia = index_of(&handle, a).await?;
        let ib = index_of(&handle, b).await?;
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(ib)
                    .setns_by_fd(ns_file.as_raw_fd())
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("cannot move {b}"))?;
        let mut set = LinkUnspec::new_with_index(ia).up();
        if let Some(br) = bridge {
            set = set.controller(index_of(&handle, br).await?);
        }
        handle
            .link()
            .set(set.build())
            .execute()
            .await
            .with_context(|| format!("cannot set {a} up"))?;
        if let Some(addr) = a_addr {
            handle
                .address()
                .add(ia, IpAddr::V4(addr.addr), addr.prefix)
                .execute()
                .await?;
        }
        Ok(())
    })?;
    with_handle(Some(netns_b), |handle| async move {
        let ib = index_of(&handle, b).await?;
        let lo = index_of(&handle, "lo").await?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await?;
        let mut up = LinkUnspec::new_with_index(ib).up();
        if let Some(m) = mtu {
            up = up.mtu(m);
        }
        handle.link().set(up.build()).execute().await?;
        if let Some(addr) = b_addr {
            handle
                .address()
                .add(ib, IpAddr::V4(addr.addr), addr.prefix)
                .execute()
                .await?;
        }
        Ok(())
    })
}

#[cfg(feature = "testing")]
/// Creates a bridge `name`, up, in `netns` (the test underlay switch).
pub fn bridge(netns: Option<&Path>, name: &str) -> anyhow::Result<()> {
    with_handle(netns, |handle| async move {
        handle
            .link()
            .add(LinkBridge::new(name).up().build())
            .execute()
            .await
            .with_context(|| format!("cannot create bridge {name}"))?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn desired_state_from_the_dump() {
        let node = NodeOverlay::new(
            Ipv4Addr::new(10, 9, 0, 5),
            &configs::cluster::Overlay::default(),
        );
        let mut observed = NetlinkState {
            links: vec![Link {
                index: 2,
                name: "ens3".into(),
                kind: LinkKind::Other("".into()),
                mtu: 9000,
                mac: None,
                up: true,
                controller: None,
            }],
            addresses: vec![Address {
                dev: "ens3".into(),
                addr: "10.9.0.5/24".parse().expect("cidr"),
            }],
            ..Default::default()
        };
        let subnet: Ipv4Cidr = "10.200.7.0/24".parse().expect("cidr");
        let d = node.desired(subnet, vec![], &observed).expect("desired");
        expect![[r#"Vxlan { name: "strata-vx", vni: 4242, port: 4789, local: 10.9.0.5, underlay: "ens3", mtu: 8950 }"#]]
            .assert_eq(&format!("{:?}", d.vxlan));
        observed.addresses.clear();
        let err = node
            .desired(subnet, vec![], &observed)
            .expect_err("no underlay");
        assert_eq!(
            err.to_string(),
            "no link holds the underlay address 10.9.0.5"
        );
    }
}
