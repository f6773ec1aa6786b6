//! The node's overlay and DNS, driven by cluster state: once the node
//! registered and holds its subnet lease, [`spawn`] opens the node's
//! [`NodeNetwork`], follows the cluster's node list from the API (a long
//! poll, `GET /v1/watch/nodes/<revision>`, that a master answers as soon
//! as a node record or lease changes in etcd), feeds every other node to [`overlay::node::follow`] and
//! serves DNS on the node's bridge gateway: `<node>.<zone>` answers the
//! node's gateway address, other names go to the cluster's resolvers.
//!
//! The first reconcile waits for the first node list, so a restarted agent
//! plans against the full peer set and changes nothing (no flap). Before
//! it, the node's firewall (when the daemon runs one, [`NodeNet::firewall`])
//! gets the overlay: VXLAN from every node of the list, DNS from the
//! overlay to the node's resolver; it follows the list from then on.
//! Every node also balances the cluster's VIPs in its kernel (the `ip
//! strata-vip` table, `control::vip::plan` of the services and VIP
//! addresses the node watch carries), from the first node list on.
//! Everything runs in the process's own network namespace (an agent started
//! inside a namespace builds its overlay there).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use configs::net::Ipv4Cidr;

use crate::api::client::ApiClient;
use crate::dns::records::RecordSet;
use crate::dns::{DnsServer, Records, TaskRecord};
use crate::firewall::NodeFirewall;
use crate::overlay::netlink::NodeOverlay;
use crate::overlay::node::OverlayTasks;
use crate::overlay::{self, NodeNetwork, Peer};
use crate::tasks::TaskNetwork;
use control::firewall::OverlayInput;
use control::model::{NetworkSettings, NodeStatus, NodeWatch, TaskEndpoint};

/// Pause before asking again after a failed node-list watch.
pub const RETRY: Duration = Duration::from_millis(500);
/// How long one node-list watch may take: the master's wait and a margin.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the overlay is reconciled without a change, to repair drift.
pub const RESYNC: Duration = Duration::from_secs(30);

/// What this node brings to the overlay.
#[derive(Debug, Clone)]
pub struct NodeNet {
    pub name: String,
    pub state_dir: PathBuf,
    pub underlay_ip: Ipv4Addr,
    pub subnet: Ipv4Cidr,
    pub settings: NetworkSettings,
    /// The node's firewall, which the daemon applied at boot; `None` under
    /// `strata cluster run-node`.
    pub firewall: Option<Arc<NodeFirewall>>,
    /// On public agents: the edge proxy.
    pub edge: Option<EdgeNode>,
}

/// What a public agent's edge proxy needs beside the node watch.
#[derive(Debug, Clone)]
pub struct EdgeNode {
    /// Where it keeps its files.
    pub paths: crate::edge::EdgePaths,
    pub ports: control::model::EdgeSettings,
    /// The certificates, from the task follower's assignment watch.
    pub certs: tokio::sync::watch::Receiver<Vec<control::edge::EdgeCert>>,
}

/// Where the task follower hands the edge its certificates.
pub type EdgeCertSender = tokio::sync::watch::Sender<Vec<control::edge::EdgeCert>>;

/// The running overlay and DNS of the node; dropping it stops following
/// (the links stay, so traffic is not interrupted by a restart).
pub struct Running {
    /// The lease it was started with.
    pub subnet: Ipv4Cidr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where the overlay hands tasks their network once it is up.
pub type TaskNetSender = tokio::sync::watch::Sender<Option<Arc<dyn TaskNetwork>>>;

/// Starts the node's overlay and DNS in the background; failures are
/// logged and retried. Once the bridge is up, `tasks` gets the
/// [`OverlayTasks`] that gives tasks their namespaces.
pub fn spawn(node: NodeNet, clients: NetClients, tasks: TaskNetSender) -> Running {
    Running {
        subnet: node.subnet,
        task: tokio::spawn(run(node, clients, tasks)),
    }
}

/// The node network's connections to the API: one for the node list's
/// long poll, one for the firewall's reports, so that neither waits for
/// the other.
pub struct NetClients {
    pub follower: ApiClient,
    pub reporter: ApiClient,
}

/// Every other node that has a lease and an underlay address, as overlay
/// peers. Pure.
pub fn peers(me: &str, nodes: &[NodeStatus]) -> Vec<Peer> {
    let mut out: Vec<Peer> = nodes
        .iter()
        .filter(|n| n.record.info.name != me)
        .filter_map(|n| {
            Some(Peer {
                name: n.record.info.name.clone(),
                underlay: n.underlay_ip()?,
                subnet: n.subnet?,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The underlay address of every node of the list (this one too), sorted:
/// the sources the firewall admits VXLAN from. Pure.
pub fn node_addresses(nodes: &[NodeStatus]) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = nodes.iter().filter_map(NodeStatus::underlay_ip).collect();
    out.sort();
    out.dedup();
    out
}

/// The overlay part of the firewall of the node that holds `net`, with the
/// node list `nodes`. Pure.
pub fn firewall_part(net: &NodeNetwork, nodes: &[NodeStatus]) -> OverlayInput {
    OverlayInput {
        vxlan_port: net.node.port,
        nodes: node_addresses(nodes),
        bridge: net.node.bridge_name.clone(),
        vxlan: net.node.vxlan_name.clone(),
        gateway: net.resolver(),
    }
}

/// The DNS records derived from the node list and the running tasks:
/// `<node>` answers the gateway of the node's subnet (where its resolver
/// and bridge are), `<task>` the task's overlay address (a task named like
/// a node wins), `<app>` every running task of the app, and the SRV names
/// the tasks' ports. Pure.
pub fn records(nodes: &[NodeStatus], tasks: &[TaskEndpoint]) -> RecordSet {
    let mut set: BTreeMap<String, TaskRecord> = nodes
        .iter()
        .filter_map(|n| {
            let subnet = n.subnet?;
            Some((
                n.record.info.name.to_ascii_lowercase(),
                TaskRecord {
                    app: None,
                    addr: overlay::plan::gateway(subnet),
                    ports: vec![],
                    named: Default::default(),
                },
            ))
        })
        .collect();
    for t in tasks {
        set.insert(
            t.id.to_ascii_lowercase(),
            TaskRecord {
                app: t.app.clone(),
                addr: t.address,
                ports: t.ports.clone(),
                named: t.port_names.clone(),
            },
        );
    }
    RecordSet {
        tasks: set,
        vips: BTreeMap::new(),
    }
}

async fn run(node: NodeNet, clients: NetClients, tasks: TaskNetSender) {
    let NetClients {
        follower: client,
        reporter,
    } = clients;
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let net = loop {
        match open(&node) {
            Ok(n) => break Arc::new(n),
            Err(e) => {
                tracing::warn!("overlay: cannot open the node's network: {e:#}");
                crate::retry::wait(&mut backoff).await;
            }
        }
    };
    // The first node list before the first reconcile: planning against an
    // empty peer list would remove every peer's entries.
    let (revision, nodes, endpoints, first_vips, first_services, first_addresses) = loop {
        match client.watch_nodes(0).await {
            Ok(w) => {
                let vips = control::vip::plan(&w.services, &w.vip_addresses);
                break (
                    w.revision,
                    w.nodes,
                    w.tasks,
                    vips,
                    w.services,
                    w.vip_addresses,
                );
            }
            Err(e) => {
                tracing::warn!("overlay: cannot read the node list: {e}");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    // The firewall admits VXLAN from the listed nodes and DNS from the
    // overlay before the overlay carries anything, then follows the list.
    let firewall = match &node.firewall {
        Some(fw) => {
            let part = firewall_part(&net, &nodes);
            set_firewall(fw, part.clone()).await;
            let (fw_tx, fw_rx) = tokio::sync::watch::channel(part);
            let follower = tokio::spawn(follow_firewall(fw.clone(), fw_rx));
            let reporter = tokio::spawn(report_firewall(fw.clone(), reporter, node.name.clone()));
            Some((fw_tx, AbortOnDrop(follower), AbortOnDrop(reporter)))
        }
        None => None,
    };
    let first = peers(&node.name, &nodes);
    let dns_records = Records::new();
    let mut first_records = records(&nodes, &endpoints);
    first_records.vips = control::vip::names(&first_services, &first_addresses);
    dns_records.replace(first_records);
    let (tx, rx) = tokio::sync::watch::channel(first);
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(false);
    let name = node.name.clone();
    let follower = tokio::spawn(overlay::node::follow(
        net.clone(),
        rx,
        RESYNC,
        move |r| match r {
            Ok(actions) => {
                if !actions.is_empty() {
                    let list: Vec<String> = actions.iter().map(ToString::to_string).collect();
                    tracing::info!(
                        "overlay: node `{name}` applied {} change(s): {}",
                        actions.len(),
                        list.join("; ")
                    );
                }
                ready_tx.send_replace(true);
            }
            Err(e) => tracing::warn!("overlay: reconcile failed: {e:#}"),
        },
    ));
    // The bridge holds the resolver address once the first reconcile went
    // through.
    while !*ready_rx.borrow_and_update() {
        if ready_rx.changed().await.is_err() {
            return;
        }
    }
    let names = match crate::runtime::names::HostNames::from_env() {
        Ok(n) => n,
        Err(e) => {
            tracing::info!("overlay: {e}; tasks get no network");
            return;
        }
    };
    tasks.send_replace(Some(Arc::new(OverlayTasks {
        net: net.clone(),
        zone: node.settings.dns.zone.clone(),
        names,
    })));
    let _dns = serve_dns(&node, &net, dns_records.clone()).await;
    tracing::info!(
        "overlay: node `{}` holds {} on {}, resolver {}",
        node.name,
        node.subnet,
        node.underlay_ip,
        net.resolver()
    );
    let _follower = AbortOnDrop(follower);
    let (vip_tx, vip_rx) = tokio::sync::watch::channel(first_vips);
    let _vips = AbortOnDrop(tokio::spawn(follow_vips(vip_rx, node.subnet)));
    // The edge's thread ends, and HAProxy with it, when its sender goes.
    let edge = node.edge.clone().and_then(|edge| {
        let (tx, rx) = tokio::sync::watch::channel(first_services);
        let inputs = crate::edge::EdgeInputs {
            services: rx,
            certs: edge.certs,
        };
        match crate::edge::spawn(edge.paths, edge.ports, inputs, node.firewall.clone()) {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!("edge: cannot start the edge's thread: {e}");
                None
            }
        }
    });
    follow_nodes(&client, revision, |w| {
        if let Some(edge_tx) = &edge {
            edge_tx.send_if_modified(|p| {
                let changed = *p != w.services;
                if changed {
                    p.clone_from(&w.services);
                }
                changed
            });
        }
        let vips = control::vip::plan(&w.services, &w.vip_addresses);
        vip_tx.send_if_modified(|p| {
            let changed = *p != vips;
            if changed {
                *p = vips;
            }
            changed
        });
        let next = peers(&node.name, &w.nodes);
        tx.send_if_modified(|p| {
            let changed = *p != next;
            if changed {
                *p = next;
            }
            changed
        });
        let mut set = records(&w.nodes, &w.tasks);
        set.vips = control::vip::names(&w.services, &w.vip_addresses);
        if dns_records.snapshot() != set {
            dns_records.replace(set);
        }
        if let Some((fw_tx, _, _)) = &firewall {
            let part = firewall_part(&net, &w.nodes);
            fw_tx.send_if_modified(|p| {
                let changed = *p != part;
                if changed {
                    *p = part;
                }
                changed
            });
        }
    })
    .await
}

/// Keeps the node's VIP table (`ip strata-vip`) in line with the plan
/// `rx` holds: applies each change as one transaction, and after a
/// failure tries again (with backoff) until one goes through. Ends when
/// the sender is dropped.
async fn follow_vips(
    mut rx: tokio::sync::watch::Receiver<control::vip::VipPlan>,
    subnet: Ipv4Cidr,
) {
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let plan = rx.borrow_and_update().clone();
        let ruleset = crate::overlay::nft::render_vips(&plan, subnet);
        match tokio::task::spawn_blocking(move || crate::overlay::nft::apply(&ruleset)).await {
            Ok(Ok(())) => {
                tracing::info!(
                    "vips: {} VIP(s), {} with a ready backend",
                    plan.vips.len(),
                    plan.vips.iter().filter(|v| !v.backends.is_empty()).count()
                );
                backoff.reset();
                if rx.changed().await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("vips: cannot apply the VIP table: {e:#}");
                crate::retry::wait(&mut backoff).await;
            }
            Err(e) => {
                tracing::warn!("vips: the update failed: {e}");
                crate::retry::wait(&mut backoff).await;
            }
        }
    }
}

/// Applies `part` to the node's firewall (on a blocking thread: `nft` is a
/// child process); logs what happened and returns whether it holds now.
async fn set_firewall(fw: &Arc<NodeFirewall>, part: OverlayInput) -> bool {
    let fw = fw.clone();
    let nodes = part.nodes.len();
    match tokio::task::spawn_blocking(move || fw.set_overlay(Some(part))).await {
        Ok(Ok(applied)) => {
            if applied {
                tracing::info!(
                    "firewall: VXLAN from {nodes} node(s), DNS from the overlay to the resolver"
                );
            }
            true
        }
        Ok(Err(e)) => {
            tracing::warn!("firewall: {e:#}");
            false
        }
        Err(e) => {
            tracing::warn!("firewall: the update failed: {e}");
            false
        }
    }
}

/// Keeps the firewall in line with the overlay part `rx` holds: applies
/// each change, and after a failure tries again (with backoff) until one
/// goes through. Ends when the sender is dropped.
async fn follow_firewall(
    fw: Arc<NodeFirewall>,
    mut rx: tokio::sync::watch::Receiver<OverlayInput>,
) {
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let part = rx.borrow_and_update().clone();
        if set_firewall(&fw, part).await {
            backoff.reset();
            if rx.changed().await.is_err() {
                return;
            }
        } else {
            crate::retry::wait(&mut backoff).await;
        }
    }
}

/// How often the reporter looks whether the firewall's rules changed.
const FIREWALL_LOOK: Duration = Duration::from_secs(2);
/// How often the reporter reads the counters when the rules stay the same;
/// it reports them when they moved.
const FIREWALL_COUNTERS: Duration = Duration::from_secs(30);

/// Reports the firewall in force to the masters (`strata node firewall`):
/// at once after each ruleset applied, and the counters every
/// [`FIREWALL_COUNTERS`] when they moved. A failed report is tried again
/// at the next look. A report that went through confirms the ruleset it
/// was made under; one that none confirmed within
/// [`crate::firewall::CONFIRM`] is rolled back (the lock-out guard).
/// Never returns.
async fn report_firewall(fw: Arc<NodeFirewall>, client: ApiClient, name: String) {
    let mut sent: Option<(u64, control::firewall::FirewallReport)> = None;
    let mut read_at = tokio::time::Instant::now();
    loop {
        let generation = fw.generation();
        let changed = sent.as_ref().is_none_or(|(g, _)| *g != generation);
        if changed || read_at.elapsed() >= FIREWALL_COUNTERS {
            read_at = tokio::time::Instant::now();
            let reader = fw.clone();
            let report = match tokio::task::spawn_blocking(move || reader.report()).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!("firewall: {e:#}");
                    None
                }
                Err(e) => {
                    tracing::warn!("firewall: reading the counters failed: {e}");
                    None
                }
            };
            let moved = |r: &control::firewall::FirewallReport| {
                sent.as_ref()
                    .is_none_or(|(_, s)| s.rules != r.rules || s.sets != r.sets)
            };
            if let Some(report) = report.filter(|r| changed || moved(r)) {
                let result = client.report_firewall(&name, &report).await;
                // Any answer of a master (even a refusal, as from a master
                // that predates the route) says the node reaches the API
                // under these rules.
                let reached = match &result {
                    Ok(_) => true,
                    Err(e) => !matches!(e, crate::api::client::ClientError::Unreachable { .. }),
                };
                if reached {
                    let confirmer = fw.clone();
                    match tokio::task::spawn_blocking(move || confirmer.confirm(generation)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!("firewall: {e:#}"),
                        Err(e) => tracing::warn!("firewall: the confirmation failed: {e}"),
                    }
                }
                match result {
                    Ok(_) => sent = Some((generation, report)),
                    Err(e) => tracing::warn!("firewall: cannot report it to the masters: {e}"),
                }
            }
        }
        let guard = fw.clone();
        match tokio::task::spawn_blocking(move || {
            guard.roll_back_unconfirmed(crate::firewall::CONFIRM)
        })
        .await
        {
            Ok(Ok(Some(why))) => tracing::error!("firewall: {why}"),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!("firewall: {e:#}"),
            Err(e) => tracing::warn!("firewall: the lock-out guard failed: {e}"),
        }
        tokio::time::sleep(FIREWALL_LOOK).await;
    }
}

/// Long-polls the node list from `revision` on and hands every answer to
/// `on` (see [`crate::api::follow`]). Never returns.
pub(crate) async fn follow_nodes(client: &ApiClient, revision: i64, on: impl FnMut(NodeWatch)) {
    crate::api::follow::follow(client, revision, RETRY, on).await
}

/// Aborts a spawned task when dropped, so that a follower ends with its
/// owner.
pub(crate) struct AbortOnDrop<T>(pub(crate) tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn open(node: &NodeNet) -> anyhow::Result<NodeNetwork> {
    NodeNetwork::open(
        &node.state_dir,
        None,
        NodeOverlay::new(node.underlay_ip, &(&node.settings.overlay).into()),
        node.subnet,
        node.settings.overlay.cidr,
        || {
            crate::tasks::list(&node.state_dir)
                .into_iter()
                .filter_map(|t| Some((t.id, t.address?)))
                .collect()
        },
    )
}

/// Binds the node's resolver on its gateway address, retrying until it
/// can.
async fn serve_dns(node: &NodeNet, net: &NodeNetwork, records: Records) -> DnsServer {
    let upstreams: Vec<SocketAddr> = node
        .settings
        .dns
        .resolvers
        .iter()
        .map(|r| SocketAddr::from((*r, 53)))
        .collect();
    let addr = SocketAddr::from((net.resolver(), 53));
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let bound =
            crate::dns::server::Handler::new(&node.settings.dns.zone, records.clone(), &upstreams)
                .and_then(|h| DnsServer::bind(h, addr));
        match bound {
            Ok(s) => return s,
            Err(e) => {
                tracing::warn!("dns: cannot serve on {addr}: {e:#}");
                crate::retry::wait(&mut backoff).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;
    use control::model::{NodeInfo, NodeRecord, NodeState};

    fn status(name: &str, addresses: &[&str], subnet: Option<&str>) -> NodeStatus {
        NodeStatus {
            cordon: None,
            upgrade: None,
            record: NodeRecord {
                info: NodeInfo {
                    format: Default::default(),
                    name: name.into(),
                    role: configs::Role::Private,
                    addresses: addresses.iter().map(|a| a.to_string()).collect(),
                    cpus: 1,
                    memory_bytes: 1,
                    disk_bytes: 1,
                    attributes: Default::default(),
                    image: None,
                },
                key_sha256: String::new(),
                joined_at: 0,
                registered_at: 0,
                certs: Vec::new(),
            },
            state: NodeState::Ready,
            ready_since: None,
            subnet: subnet.map(|s| s.parse().expect("subnet")),
        }
    }

    #[test]
    fn peers_and_records_from_the_node_list() {
        let nodes = [
            status(
                "master-1",
                &["127.0.0.1", "10.77.0.1"],
                Some("10.200.0.0/24"),
            ),
            status("agent-1", &["10.77.0.11"], Some("10.200.1.0/24")),
            // Registered before the overlay existed: no lease yet.
            status("agent-2", &["10.77.0.12"], None),
            // No usable underlay address.
            status("agent-3", &["::1"], Some("10.200.3.0/24")),
        ];
        let tasks = [
            TaskEndpoint {
                id: "Web".into(),
                node: "agent-1".into(),
                address: "10.200.1.2".parse().expect("address"),
                app: Some("shop".into()),
                ports: vec![8080],
                port_names: [("http".to_string(), 8080)].into(),
            },
            // A task named like a node answers for the name.
            TaskEndpoint {
                id: "agent-3".into(),
                node: "agent-1".into(),
                address: "10.200.1.3".parse().expect("address"),
                app: None,
                ports: vec![],
                port_names: Default::default(),
            },
        ];
        let actual = format!(
            "{:#?}\n{:#?}",
            peers("agent-1", &nodes),
            records(&nodes, &tasks)
        );
        expect![[r#"
            [
                Peer {
                    name: "master-1",
                    underlay: 10.77.0.1,
                    subnet: Ipv4Cidr {
                        addr: 10.200.0.0,
                        prefix: 24,
                    },
                },
            ]
            RecordSet {
                tasks: {
                    "agent-1": TaskRecord {
                        app: None,
                        addr: 10.200.1.1,
                        ports: [],
                        named: {},
                    },
                    "agent-3": TaskRecord {
                        app: None,
                        addr: 10.200.1.3,
                        ports: [],
                        named: {},
                    },
                    "master-1": TaskRecord {
                        app: None,
                        addr: 10.200.0.1,
                        ports: [],
                        named: {},
                    },
                    "web": TaskRecord {
                        app: Some(
                            "shop",
                        ),
                        addr: 10.200.1.2,
                        ports: [
                            8080,
                        ],
                        named: {
                            "http": 8080,
                        },
                    },
                },
                vips: {},
            }"#]]
        .assert_eq(&actual);
    }

    /// The firewall admits VXLAN from every node with an underlay
    /// address, leased or not yet, each once.
    #[test]
    fn vxlan_sources_are_the_nodes_underlay_addresses() {
        let nodes = [
            status(
                "master-1",
                &["127.0.0.1", "10.77.0.1"],
                Some("10.200.0.0/24"),
            ),
            status("agent-2", &["10.77.0.12"], None),
            status("agent-1", &["10.77.0.11"], Some("10.200.1.0/24")),
            status("agent-3", &["::1"], Some("10.200.3.0/24")),
            status("agent-1-again", &["10.77.0.11"], None),
        ];
        let want: Vec<Ipv4Addr> = ["10.77.0.1", "10.77.0.11", "10.77.0.12"]
            .iter()
            .map(|a| a.parse().expect("ip"))
            .collect();
        assert_eq!(node_addresses(&nodes), want);
    }

    #[test]
    fn registration_answer_carries_settings_and_lease() {
        use control::model::{NodeSettings, Registered};
        let settings = NodeSettings {
            format: Default::default(),
            cluster: "c".into(),
            heartbeat_interval_seconds: 2,
            grace_seconds: 10,
            masters: vec!["10.9.0.10:6443".into()],
            network: Some(NetworkSettings {
                overlay: (&configs::cluster::Overlay::default()).into(),
                dns: (&configs::cluster::Dns::default()).into(),
            }),
            insecure_registries: vec!["10.0.2.2:5000".into()],
            edge: Default::default(),
        };
        let answer = Registered {
            settings: settings.clone(),
            subnet: Some("10.200.4.0/24".parse().expect("subnet")),
        };
        let json = serde_json::to_string(&answer).expect("json");
        expect![[r#"{"cluster":"c","heartbeat_interval_seconds":2,"grace_seconds":10,"masters":["10.9.0.10:6443"],"network":{"overlay":{"cidr":"10.200.0.0/16","subnet_prefix":24,"vni":4242,"port":4789},"dns":{"zone":"strata.internal","resolvers":[]}},"insecure_registries":["10.0.2.2:5000"],"edge":{"http_port":80,"https_port":443},"subnet":"10.200.4.0/24"}"#]]
            .assert_eq(&json);
        // Whoever reads the answer as plain settings (older agents, the
        // cluster benchmark) still can.
        let plain: NodeSettings = serde_json::from_str(&json).expect("settings");
        assert_eq!(plain, settings);
        let back: Registered = serde_json::from_str(&json).expect("registered");
        assert_eq!(back, answer);
    }
}
