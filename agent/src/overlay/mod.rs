//! The node's half of the VXLAN overlay.
//!
//! - [`lease`]: which subnet of the cluster overlay a node owns (pure; the
//!   master runs it inside an etcd compare-and-swap, see
//!   [`lease::LeaseKeys`]).
//! - [`plan`]: desired state (own lease, peers) against a netlink dump, to a
//!   list of actions (pure).
//! - [`ipam`]: task addresses in the node's subnet, persisted on the node.
//! - [`netlink`]: the only module touching rtnetlink: dump, apply, per-task
//!   veth.
//! - [`nft`]: the only module touching nftables: masquerading, what tasks
//!   may send into the bridge (their own MAC and address, no cloud
//!   metadata service), and the node's input firewall, whose table
//!   [`crate::firewall`] applies through it.
//! - [`netns`]: named network namespaces (`/var/run/netns/NAME`) and running
//!   code inside one.
//! - [`node`]: [`NodeNetwork`], what the agent holds, and [`node::follow`],
//!   the loop that keeps it in line with the peer list.
//! - [`lab`]: namespaces standing in for nodes, for host tests and benchmarks.
//!
//! # Integration (what the agent calls)
//!
//! Wired: the master's side is [`crate::etcd::Store::lease_subnet`] (called
//! by the API at registration) and [`crate::etcd::Store::remove_node`]; the
//! agent's side is [`crate::cluster::network`]. Step 4 (tasks) is left to
//! the runtime.
//!
//! Master, on node registration (cluster module, etcd module):
//! 1. Read every key under [`lease::LeaseKeys::PREFIX`]`nodes/` and turn
//!    them into a map with [`lease::leases_from_kvs`].
//! 2. `lease::allocate(cluster.overlay.cidr, cluster.overlay.subnet_prefix,
//!    &leases, node_name)`: the node's existing subnet, or the lowest free.
//! 3. Commit with the transaction documented on [`lease::LeaseKeys`]:
//!    `version(by_subnet) == 0 && version(by_node) == 0` then put both; on
//!    a failed compare, go back to 1 (a node that already has its lease
//!    gets it back from step 2 and needs no write). The keys carry no etcd
//!    lease (TTL): the subnet survives reboots and is deleted, both keys in
//!    one transaction, only when the node is removed from the cluster.
//! 4. Return the subnet to the agent in its registration answer and publish
//!    it in the node list next to the node's underlay address.
//!
//! Agent, once joined (it knows its name, underlay IP and subnet):
//! 1. `NodeNetwork::open(state_dir, None, NodeOverlay::new(underlay_ip,
//!    &cluster.overlay), subnet, cluster.overlay.cidr, held)`; the IPAM
//!    book is kept at `<state_dir>/overlay/ipam.json` (rebuilt from
//!    `held()`, the tasks' recorded addresses, when it does not parse).
//! 2. Spawn `node::follow(Arc<NodeNetwork>, watch_rx, 30 s, report)` and send
//!    on `watch_tx` a `Vec<Peer>` (`name`, underlay `Ipv4Addr`, `subnet`;
//!    every other node, the node itself may be included and is skipped)
//!    each time the watch on the cluster's node list fires (join, leave,
//!    address change). Each change is applied at once (about 20 ms here);
//!    the periodic pass repairs drift. Reconciling an already-right state
//!    applies nothing, so restarting the agent does not disturb traffic.
//! 3. Run the DNS server ([`crate::dns::DnsServer::bind`] on
//!    `NodeNetwork::resolver():53`, after the first reconcile so the
//!    bridge holds that address) with a [`crate::dns::Records`] handle fed
//!    from the task list (`upsert` on start, `remove` on stop) and the
//!    cluster's `dns.resolvers` (port 53) as upstreams.
//! 4. For each task: create its namespace ([`netns::create`]), call
//!    `NodeNetwork::attach(task_id, ns_path)` (returns its address), point
//!    the OCI spec's network namespace `path` at `ns_path`, write
//!    [`crate::dns::render_resolv_conf`]`(net.resolver(), zone)` as its
//!    `/etc/resolv.conf`; on stop, `detach(task_id)` and [`netns::delete`].
//!
//! These calls block (netlink on a thread of its own, `nft` as a child):
//! from async code, go through `tokio::task::spawn_blocking`, as
//! [`node::follow`] does.

pub mod ipam;
pub use control::lease;
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
/// entries, then the nftables ruleset (masquerade, and the bridge's rules
/// for the task ports `ports`). Returns the netlink actions applied (empty
/// when nothing had to change).
pub fn reconcile_node(
    netns: Option<&Path>,
    node: &netlink::NodeOverlay,
    subnet: Ipv4Cidr,
    cluster: Ipv4Cidr,
    peers: Vec<Peer>,
    ports: &[nft::Port],
) -> anyhow::Result<Vec<Action>> {
    let actions = netlink::reconcile(netns, node, subnet, peers)?;
    let ruleset = nft::render(subnet, cluster, node.port, ports);
    netns::run_in(netns, || nft::apply(&ruleset))?;
    Ok(actions)
}
