//! One node's overlay as the agent holds it: configuration, lease, IPAM
//! book under the state directory, and the three calls the agent makes
//! (reconcile on every node-list change, attach on task start, detach on
//! task stop). Each of them applies the nftables ruleset with the bridge's
//! sets filled from the IPAM book, under the book's lock, so that no pass
//! applies a set that misses a task attached meanwhile.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use configs::net::Ipv4Cidr;

use super::ipam::{Ipam, veth_name};
use super::netlink::{self, NodeOverlay, TaskNet};
use super::nft;
use super::plan::{self, Action, Peer};
use crate::runtime::names::HostNames;

/// The overlay of this node.
#[derive(Debug)]
pub struct NodeNetwork {
    /// Network namespace the node's links live in: `None` for the agent
    /// (its own namespace), a path in tests.
    pub netns: Option<PathBuf>,
    pub node: NodeOverlay,
    /// This node's lease.
    pub subnet: Ipv4Cidr,
    /// The cluster's overlay CIDR.
    pub cluster: Ipv4Cidr,
    ipam_path: PathBuf,
    ipam: Mutex<Ipam>,
}

impl NodeNetwork {
    /// Opens the node's overlay state; the IPAM book lives at
    /// `<state_dir>/overlay/ipam.json`. A book that does not parse is
    /// rebuilt from `held()` (task id and the address the task recorded)
    /// and the damage logged ([`Ipam::open`]).
    pub fn open(
        state_dir: &Path,
        netns: Option<PathBuf>,
        node: NodeOverlay,
        subnet: Ipv4Cidr,
        cluster: Ipv4Cidr,
        held: impl FnOnce() -> Vec<(String, Ipv4Addr)>,
    ) -> anyhow::Result<NodeNetwork> {
        let ipam_path = state_dir.join("overlay").join("ipam.json");
        let (ipam, rebuilt) = Ipam::open(&ipam_path, subnet, held)?;
        if let Some(rebuilt) = rebuilt {
            tracing::warn!("overlay: {rebuilt}");
        }
        Ok(NodeNetwork {
            netns,
            node,
            subnet,
            cluster,
            ipam_path,
            ipam: Mutex::new(ipam),
        })
    }

    /// Brings links, addresses, peer routes, neighbours, FDB entries and
    /// the nftables ruleset in line with `peers` (every other node: name,
    /// underlay address, subnet) and the IPAM book. Idempotent: returns no
    /// action when nothing changed.
    pub fn reconcile(&self, peers: Vec<Peer>) -> anyhow::Result<Vec<Action>> {
        let ipam = self.lock()?;
        super::reconcile_node(
            self.netns.as_deref(),
            &self.node,
            self.subnet,
            self.cluster,
            peers,
            &ports(&ipam),
        )
    }

    /// Applies the nftables ruleset with the bridge's sets of `ipam` (the
    /// locked book).
    fn apply_rules(&self, ipam: &Ipam) -> anyhow::Result<()> {
        let ruleset = nft::render(self.subnet, self.cluster, self.node.port, &ports(ipam));
        super::netns::run_in(self.netns.as_deref(), || nft::apply(&ruleset))
    }

    /// The address the node's DNS server listens on and tasks resolve
    /// through: the subnet's gateway, on the bridge.
    pub fn resolver(&self) -> Ipv4Addr {
        plan::gateway(self.subnet)
    }

    /// Gives task `task` an address (kept across agent restarts) and wires
    /// a veth from the bridge into its namespace `task_netns`
    /// (`/var/run/netns/NAME`, the OCI spec's network namespace path). The
    /// bridge's rules know the port before it exists.
    pub fn attach(&self, task: &str, task_netns: &Path) -> anyhow::Result<Ipv4Cidr> {
        let mtu = netlink::dump(self.netns.as_deref())?
            .link(&self.node.bridge_name)
            .map(|l| l.mtu)
            .with_context(|| {
                format!(
                    "bridge {} is missing: reconcile first",
                    self.node.bridge_name
                )
            })?;
        let addr = {
            let mut ipam = self.lock()?;
            let addr = ipam.allocate(task)?;
            ipam.save(&self.ipam_path)?;
            self.apply_rules(&ipam)
                .with_context(|| format!("admitting task {task} on the bridge"))?;
            addr
        };
        let net = TaskNet {
            netns: task_netns.to_path_buf(),
            host_if: veth_name(task),
            addr,
            mac: plan::task_mac(addr.addr),
            bridge: self.node.bridge_name.clone(),
            mtu,
        };
        netlink::attach_task(self.netns.as_deref(), &net)
            .with_context(|| format!("attaching task {task}"))?;
        Ok(addr)
    }

    /// Removes task `task`'s veth, frees its address and takes its port
    /// out of the bridge's rules.
    pub fn detach(&self, task: &str) -> anyhow::Result<()> {
        netlink::detach_task(self.netns.as_deref(), &veth_name(task))?;
        let mut ipam = self.lock()?;
        ipam.release(task);
        ipam.save(&self.ipam_path)?;
        self.apply_rules(&ipam)
            .with_context(|| format!("removing task {task} from the bridge"))
    }

    /// The address of task `task`, if it has one.
    pub fn address_of(&self, task: &str) -> Option<Ipv4Addr> {
        self.lock()
            .ok()
            .and_then(|i| i.assigned().get(task).copied())
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Ipam>> {
        self.ipam
            .lock()
            .map_err(|_| anyhow::anyhow!("the IPAM book lock is poisoned"))
    }
}

/// The bridge ports of the tasks in `ipam`: each task's veth, MAC and
/// address.
fn ports(ipam: &Ipam) -> Vec<nft::Port> {
    ipam.assigned()
        .iter()
        .map(|(task, addr)| nft::Port {
            ifname: veth_name(task),
            mac: plan::task_mac(*addr),
            addr: *addr,
        })
        .collect()
}

/// Tasks on the node's overlay: each in a named namespace
/// `strata-<task>` (the agent's [`HostNames`] prefix) with a veth from the
/// bridge, an address from the node's IPAM and the node's resolver in its
/// resolv.conf.
#[derive(Debug)]
pub struct OverlayTasks {
    pub net: std::sync::Arc<NodeNetwork>,
    /// The cluster's DNS zone, searched by tasks.
    pub zone: String,
    /// Names the tasks' network namespaces.
    pub names: HostNames,
}

impl OverlayTasks {
    /// The name of task `task`'s network namespace.
    pub fn netns_name(&self, task: &str) -> String {
        self.names.netns(task)
    }
}

impl crate::tasks::TaskNetwork for OverlayTasks {
    fn attach(&self, task: &str) -> anyhow::Result<crate::tasks::TaskAddress> {
        let name = self.netns_name(task);
        // A namespace left by an earlier generation of the task goes first.
        super::netns::delete(&name)?;
        let path = super::netns::create(&name)?;
        match self.net.attach(task, &path) {
            Ok(addr) => Ok(crate::tasks::TaskAddress {
                netns: path,
                address: addr.addr,
                resolv_conf: format!(
                    "nameserver {}\nsearch {}\noptions ndots:1\n",
                    self.net.resolver(),
                    self.zone
                ),
            }),
            Err(e) => {
                let _ = self.net.detach(task);
                let _ = super::netns::delete(&name);
                Err(e)
            }
        }
    }

    fn detach(&self, task: &str) -> anyhow::Result<()> {
        self.net.detach(task)?;
        super::netns::delete(&self.netns_name(task))
    }
}

/// Keeps the node's overlay in line with the peer list: reconciles at once
/// whenever `peers` changes (the agent feeds it from its watch on the
/// cluster's node list) and every `resync` otherwise, to repair drift.
/// Returns when the sender is dropped. Failed passes are reported through
/// `report` and retried at the next change or resync.
pub async fn follow(
    net: std::sync::Arc<NodeNetwork>,
    mut peers: tokio::sync::watch::Receiver<Vec<Peer>>,
    resync: std::time::Duration,
    report: impl Fn(anyhow::Result<Vec<Action>>) + Send,
) {
    loop {
        let current = peers.borrow_and_update().clone();
        let n = net.clone();
        let result = match tokio::task::spawn_blocking(move || n.reconcile(current)).await {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("reconcile task failed: {e}")),
        };
        report(result);
        tokio::select! {
            changed = peers.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tokio::time::sleep(resync) => {}
        }
    }
}
