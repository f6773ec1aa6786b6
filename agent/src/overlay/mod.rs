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
//! How the agent drives it is described in [`Overlay`].

pub mod ipam;
pub mod lease;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod plan;

pub use plan::{Action, NetlinkState, OverlayState, Peer, Vxlan};
