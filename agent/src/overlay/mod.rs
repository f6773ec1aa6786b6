//! The node's half of the VXLAN overlay.
//!
//! - [`lease`]: which subnet of the cluster overlay a node owns (pure; the
//!   master runs it inside an etcd compare-and-swap).
//! - [`plan`]: desired state (own lease, peers) against a netlink dump, to a
//!   list of actions (pure).
//! - [`ipam`]: task addresses in the node's subnet, persisted on the node.
//! - [`netlink`]: the only module touching rtnetlink: dump, apply, per-task
//!   veth.
//! - [`nft`]: the only module touching nftables: masquerading.
//! - [`netns`]: named network namespaces (`/var/run/netns/NAME`) and running
//!   code inside one.
//!
//! - [`lab`]: namespaces standing in for nodes, for host tests and benchmarks.
//!
//! How the agent drives it: see `INTEGRATION` below.

pub mod ipam;
pub mod lab;
pub mod lease;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod node;
pub mod plan;

pub use node::NodeNetwork;
pub use plan::{Action, NetlinkState, OverlayState, Peer, Vxlan};

use std::path::Path;

use configs::net::Ipv4Cidr;

/// One full reconciliation pass of a node, in `netns` (`None`: the agent's
/// own namespace): the netlink plan for the VXLAN device, bridge and peer
/// entries, then the masquerade ruleset. Returns the netlink actions
/// applied (empty when nothing had to change).
pub fn reconcile_node(
    netns: Option<&Path>,
    node: &netlink::NodeOverlay,
    subnet: Ipv4Cidr,
    cluster: Ipv4Cidr,
    peers: Vec<Peer>,
) -> anyhow::Result<Vec<Action>> {
    let actions = netlink::reconcile(netns, node, subnet, peers)?;
    let ruleset = nft::render(subnet, cluster, node.port);
    netns::run_in(netns, || nft::apply(&ruleset))?;
    Ok(actions)
}
