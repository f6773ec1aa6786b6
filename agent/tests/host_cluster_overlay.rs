//! The overlay and DNS wired to cluster state, end to end: a real etcd, one
//! master and two agents as real `strata` processes, each in its own
//! network namespace on a veth-and-bridge underlay. The master leases every
//! node a subnet in etcd at registration; every node builds its VXLAN
//! device, bridge and peer entries from the node list it follows through
//! the API and serves DNS on its gateway. Tasks (namespaces attached with
//! `NodeNetwork::attach`, as the agent will for containers) on different
//! agents talk over the overlay; a node name resolves through the node's
//! resolver; restarting an agent leaves identical netlink dumps and keeps a
//! TCP conversation going; removing a node releases its lease and its
//! routes vanish from the peers; the removed node, started again, joins
//! again and gets a lease back. A second test races the master's lease
//! transaction on a real etcd.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent::etcd::{EtcdConnect, EtcdTls, Store};
use agent::overlay::netlink::{self, NodeOverlay};
use agent::overlay::netns::path as ns_path;
use agent::overlay::{NodeNetwork, Peer, plan};
use agent::testing::lab;
use configs::net::Ipv4Cidr;
use control::model::{NodeState, NodeStatus};
use qemu_tests::observe::{Hold, Seen, first_difference};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{ClusterSpec, TestCluster};
use common::{Proc, free_port, run};

const NODES: [&str; 3] = ["master-1", "agent-1", "agent-2"];
const ZONE: &str = "strata.internal";

/// The node's overlay is exactly what the peer list asks for: the plan
/// against a fresh dump of its namespace is empty.
fn converged(ns: &str, node: &NodeOverlay, subnet: Ipv4Cidr, peers: &[Peer]) -> bool {
    let Ok(observed) = netlink::dump(Some(&ns_path(ns))) else {
        return false;
    };
    let Ok(desired) = node.desired(subnet, peers.to_vec(), &observed) else {
        return false;
    };
    plan::plan(&desired, &observed).is_empty()
}

/// The overlay devices' netlink state of a namespace, as text.
fn dump(ns: &str) -> String {
    netlink::dump(Some(&ns_path(ns)))
        .expect("dump")
        .render(&["strata-vx", "strata-br"])
}

/// The overlay devices' netlink state and the masquerade ruleset of a
/// namespace, as text.
fn state_of(ns: &str) -> String {
    let nft = run(
        "ip",
        &["netns", "exec", ns, "nft", "list", "table", "ip", "strata"],
    );
    format!("{}\n{nft}", dump(ns))
}

fn subnet_of(nodes: &[NodeStatus], name: &str) -> Option<Ipv4Cidr> {
    nodes
        .iter()
        .find(|n| n.record.info.name == name)
        .and_then(|n| n.subnet)
}

/// Reads every key under the overlay lease prefix, from inside the
/// master's namespace (where etcd listens on loopback).
fn lease_keys(master_ns: &str, connect: &EtcdConnect) -> Vec<(String, String)> {
    let path = ns_path(master_ns);
    let connect = connect.clone();
    agent::overlay::netns::run_in(Some(&path), move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async {
                let store = Store::connect(&connect).await?;
                Ok(store.list_prefix(control::lease::LeaseKeys::PREFIX).await?)
            })
    })
    .expect("etcd lease keys")
}

#[test]
fn overlay_follows_the_cluster() {
    if !require(
        "host_cluster_overlay",
        &[
            Need::Root,
            Need::Program("etcd"),
            Need::Program("ip"),
            Need::Program("nft"),
        ],
    ) {
        return;
    }
    // cluster.toml with an explicit overlay; waits look every 20 ms.
    let mut c = TestCluster::new(ClusterSpec {
        extra_toml: "[overlay]\ncidr = \"10.201.0.0/16\"\nvni = 4242\nport = 4790\n".to_string(),
        poll: Duration::from_millis(20),
        ..ClusterSpec::new("so", "ovl", "10.78.0")
    });
    let config = configs::cluster::ClusterConfig::parse("test cluster.toml", &c.cluster_toml)
        .expect("cluster.toml");

    // An etcd client of the master's etcd, for the lease keys: etcd trusts
    // only the etcd CA.
    let etcd_ca = c.ca.etcd_ca().expect("etcd CA");
    let etcd_cert = etcd_ca
        .issue_etcd(
            agent::pki::EtcdCert::Client,
            "etcd-client",
            &[],
            Duration::from_secs(3600),
        )
        .expect("etcd client cert");
    let etcd = EtcdConnect {
        endpoints: vec![format!("https://127.0.0.1:{}", c.etcd_port)],
        tls: Some(EtcdTls {
            ca_pem: etcd_ca.cert_pem.clone(),
            cert_pem: etcd_cert.cert_pem.clone(),
            key_pem: etcd_cert.key_pem.clone(),
        }),
    };

    // The nodes: the real binary, each in its namespace.
    let _master = c.spawn_node("master-1", "master.log");
    let mut agent1 = c.spawn_node("agent-1", "agent-1.log");

    let overlay_of = |nodes: &[NodeStatus], name: &str| {
        let n = nodes
            .iter()
            .find(|n| n.record.info.name == name)
            .expect("node listed");
        (
            NodeOverlay::new(n.underlay_ip().expect("underlay"), &config.overlay),
            n.subnet.expect("subnet"),
        )
    };
    let peers_of = |nodes: &[NodeStatus], name: &str| agent::cluster::network::peers(name, nodes);

    // Two nodes first, so that the third one's join can be timed.
    let nodes = c.wait(
        "master-1 and agent-1 leased",
        Duration::from_secs(60),
        || {
            let nodes = c.try_nodes().ok()?;
            ["master-1", "agent-1"]
                .iter()
                .all(|n| subnet_of(&nodes, n).is_some())
                .then_some(nodes)
        },
    );
    c.wait(
        "master-1 and agent-1 converged",
        Duration::from_secs(30),
        || {
            ["master-1", "agent-1"]
                .iter()
                .all(|n| {
                    let (o, s) = overlay_of(&nodes, n);
                    converged(c.ns(n), &o, s, &peers_of(&nodes, n))
                        && dump(c.ns(n)).contains("route")
                })
                .then_some(())
        },
    );

    // Agent 2 joins: time from its process starting to its routes on
    // every peer (includes process start, join, TLS and registration).
    let spawned = Instant::now();
    let mut agent2 = c.spawn_node("agent-2", "agent-2.log");
    let nodes = c.wait("agent-2 leased", Duration::from_secs(60), || {
        let nodes = c.try_nodes().ok()?;
        subnet_of(&nodes, "agent-2").map(|_| nodes)
    });
    let leased = spawned.elapsed();
    c.wait("every node converged", Duration::from_secs(30), || {
        NODES
            .iter()
            .all(|n| {
                let (o, s) = overlay_of(&nodes, n);
                converged(c.ns(n), &o, s, &peers_of(&nodes, n))
            })
            .then_some(())
    });
    eprintln!(
        "figure: agent-2 started to leased {:.3}s, to its routes on every peer {:.3}s",
        leased.as_secs_f64(),
        spawned.elapsed().as_secs_f64()
    );

    // Leases: distinct /24s of the cluster CIDR, recorded in etcd both ways.
    let subnets: Vec<Ipv4Cidr> = NODES
        .iter()
        .map(|n| subnet_of(&nodes, n).expect("leased"))
        .collect();
    let distinct: BTreeSet<_> = subnets.iter().map(|s| s.network()).collect();
    assert_eq!(distinct.len(), 3, "{subnets:?}");
    for s in &subnets {
        assert_eq!(s.prefix, 24, "{s}");
        assert!(config.overlay.cidr.contains(s.addr), "{s}");
    }
    let mut expected: Vec<(String, String)> = NODES
        .iter()
        .zip(&subnets)
        .flat_map(|(n, s)| {
            [
                (format!("/strata/overlay/nodes/{n}"), s.to_string()),
                (
                    format!("/strata/overlay/subnets/{}-{}", s.network(), s.prefix),
                    n.to_string(),
                ),
            ]
        })
        .collect();
    expected.sort();
    assert_eq!(lease_keys(c.master_ns(), &etcd), expected);
    let all_ready = nodes.iter().all(|n| n.state == NodeState::Ready);
    eprintln!("nodes ready: {all_ready}; subnets: {subnets:?}");
    let shown = c.cli_ok(&["node", "show", "agent-2"]);
    assert!(
        shown.contains(&format!("subnet:      {}", subnets[2])),
        "{shown}"
    );

    // Every node has the VXLAN device, the bridge and, for every other
    // node, a route and a permanent neighbour for its subnet and an FDB
    // entry to its underlay address; nothing else goes through the tunnel.
    let underlays: Vec<String> = NODES
        .iter()
        .map(|n| {
            nodes
                .iter()
                .find(|s| s.record.info.name == *n)
                .and_then(NodeStatus::underlay_ip)
                .expect("underlay")
                .to_string()
        })
        .collect();
    assert_eq!(underlays, ["10.78.0.1", "10.78.0.11", "10.78.0.12"]);
    for (i, n) in NODES.iter().enumerate() {
        let d = dump(c.ns(n));
        assert!(
            d.contains("link strata-vx Vxlan { vni: 4242, port: 4790"),
            "{n}: {d}"
        );
        assert!(d.contains("learning: false"), "{n}: {d}");
        assert!(d.contains("link strata-br Bridge mtu 1450"), "{n}: {d}");
        let tunnel_fdb: Vec<&str> = d
            .lines()
            .filter(|l| l.starts_with("fdb") && l.contains("dev: \"strata-vx\""))
            .collect();
        assert_eq!(tunnel_fdb.len(), 2, "{n}: one FDB entry per peer: {d}");
        for (j, other) in subnets.iter().enumerate() {
            if i == j {
                continue;
            }
            let net = other.network();
            let route = format!(
                "route Route {{ dst: Ipv4Cidr {{ addr: {net}, prefix: 24 }}, gateway: Some({net}), dev: \"strata-vx\", onlink: true }}"
            );
            assert!(d.contains(&route), "{n} has no route to {other}: {d}");
            let neigh = format!(
                "neigh Neighbour {{ dev: \"strata-vx\", ip: {net}, mac: Some({}), permanent: true }}",
                plan::vtep_mac(*other)
            );
            assert!(d.contains(&neigh), "{n} has no neighbour for {other}: {d}");
            let fdb = format!("dst: Some({}), permanent: true", underlays[j]);
            assert!(
                tunnel_fdb.iter().any(|l| l.contains(&fdb)),
                "{n} has no FDB entry to {}: {d}",
                underlays[j]
            );
        }
    }
    eprintln!("agent-1 overlay:\n{}", dump(c.ns("agent-1")));

    // Tasks on agent 1 and agent 2, attached the way the agent attaches
    // containers; a TCP round trip over the overlay.
    let mut task = |i: usize, name: &str| {
        let node = NODES[i];
        let task_ns = c.ns_name(name);
        c.add_netns(&task_ns);
        let (o, s) = overlay_of(&nodes, node);
        let net = NodeNetwork::open(
            &c.state_dir(node),
            Some(ns_path(c.ns(node))),
            o,
            s,
            config.overlay.cidr,
            Vec::new,
        )
        .expect("open node network");
        let addr = net.attach(name, &ns_path(&task_ns)).expect("attach task");
        (task_ns, addr)
    };
    let (t1_ns, t1) = task(1, "t1");
    let (t2_ns, t2) = task(2, "t2");
    eprintln!("tasks: t1 {t1} on agent-1, t2 {t2} on agent-2");
    assert!(subnets[1].contains(t1.addr) && subnets[2].contains(t2.addr));
    let echo: SocketAddr = (t2.addr, 7000).into();
    let server = lab::echo_server(ns_path(&t2_ns), echo).expect("echo on t2");
    assert_eq!(
        lab::roundtrip(&ns_path(&t1_ns), echo, "over the overlay").expect("t1 to t2"),
        "over the overlay"
    );
    assert_eq!(
        lab::roundtrip(&ns_path(&t1_ns), echo, "whoami").expect("whoami"),
        t1.addr.to_string(),
        "no NAT between tasks"
    );

    // DNS: agent 1's resolver (its gateway, what a task's resolv.conf
    // names) answers agent 2's name from cluster state.
    let resolver: SocketAddr = (plan::gateway(subnets[1]), 53).into();
    let found = c.wait("agent-1 resolver answers", Duration::from_secs(10), || {
        lab::resolve(&ns_path(&t1_ns), resolver, &format!("agent-2.{ZONE}.")).ok()
    });
    assert_eq!(found, [plan::gateway(subnets[2])]);
    let dns_started = Instant::now();
    let mut lat = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        lab::resolve(&ns_path(&t1_ns), resolver, &format!("master-1.{ZONE}."))
            .expect("resolve master-1");
        lat.push(t.elapsed());
    }
    lat.sort();
    eprintln!(
        "figure: dns through agent-1 from a task, 50 queries in {:.3}s: p50 {:?} max {:?} (each includes a thread entering the task's netns)",
        dns_started.elapsed().as_secs_f64(),
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );

    // Restarting agent 1 changes nothing in any namespace and keeps an
    // open TCP conversation across the overlay going.
    let conv = lab::Conversation::open(&ns_path(&t1_ns), echo).expect("conversation");
    conv.say("before restart").expect("before restart");
    let before: Vec<String> = NODES.iter().map(|n| state_of(c.ns(n))).collect();
    agent1.kill();
    conv.say("agent-1 down")
        .expect("traffic while agent-1 is down");
    let agent1b = c.spawn_node("agent-1", "agent-1-restarted.log");
    c.wait("agent-1 follows again", Duration::from_secs(60), || {
        c.log("agent-1-restarted.log")
            .contains("overlay: node `agent-1` holds")
            .then_some(())
    });
    // The restarted agent logs `holds` after its first reconcile, which
    // planned against the whole node list (its re-registration, which the
    // other nodes' long-polls saw, came before). From then on nothing may
    // change in any namespace, and nothing may be logged as applied.
    for (i, n) in NODES.iter().enumerate() {
        assert!(before[i].contains("masquerade"), "{n}: {}", before[i]);
    }
    let agent1b_pid = agent1b.child.id();
    Hold::new(
        "netlink and nftables unchanged after agent-1's restart",
        Duration::from_secs(3),
    )
    .every(Duration::from_millis(250))
    .check(|| {
        if !qemu_tests::observe::alive(agent1b_pid) {
            return Seen::Broken(format!("the restarted agent-1 exited: {}", agent1b.log()));
        }
        for (i, n) in NODES.iter().enumerate() {
            if let Some(d) = first_difference(&before[i], &state_of(c.ns(n))) {
                return Seen::Broken(format!("{n}'s netlink or nftables state changed: {d}"));
            }
        }
        let restarted = agent1b.log();
        if let Some(l) = restarted.lines().find(|l| l.contains("change(s)")) {
            return Seen::Broken(format!(
                "the restarted agent changed something: {l}\n{restarted}"
            ));
        }
        Seen::Holds("every node as before, no change logged".to_string())
    });
    conv.say("after restart").expect("after restart");
    conv.close();

    lab::stop_echo(&ns_path(&t1_ns), echo).expect("stop echo");
    server.join().expect("echo thread").expect("echo server");

    // Removing agent 2 releases its lease and its routes vanish from peers.
    agent2.kill();
    let removed = Instant::now();
    c.cli_ok(&["node", "remove", "agent-2"]);
    let nodes = c.nodes();
    assert!(subnet_of(&nodes, "agent-2").is_none());
    assert_eq!(nodes.len(), 2, "{nodes:#?}");
    let gone = subnets[2].network().to_string();
    c.wait(
        "agent-2's routes gone from every peer",
        Duration::from_secs(30),
        || {
            ["master-1", "agent-1"]
                .iter()
                .all(|n| {
                    let (o, s) = overlay_of(&nodes, n);
                    converged(c.ns(n), &o, s, &peers_of(&nodes, n))
                        && !dump(c.ns(n)).contains(&gone)
                })
                .then_some(())
        },
    );
    eprintln!(
        "figure: node remove to its routes gone on every peer {:.3}s",
        removed.elapsed().as_secs_f64()
    );
    let keys = lease_keys(c.master_ns(), &etcd);
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(
        keys.iter()
            .all(|(k, v)| !k.contains("agent-2") && v != "agent-2"),
        "{keys:?}"
    );
    // The removed node comes back with a new join token (the one it holds
    // was created before its removal): it joins again, gets a lease (the
    // lowest free subnet, its old one) and every node converges again.
    let token = c.new_join_token();
    let user_data = c.user_data_with("agent-2", &token, "agent-2-back.toml");
    let _agent2b = c.spawn(
        c.ns("agent-2"),
        &user_data,
        &c.state_dir("agent-2"),
        "agent-2-back.log",
    );
    let nodes = c.wait("agent-2 back with a lease", Duration::from_secs(60), || {
        let nodes = c.try_nodes().ok()?;
        subnet_of(&nodes, "agent-2").map(|_| nodes)
    });
    assert_eq!(subnet_of(&nodes, "agent-2"), Some(subnets[2]));
    c.wait(
        "every node converged again",
        Duration::from_secs(30),
        || {
            NODES
                .iter()
                .all(|n| {
                    let (o, s) = overlay_of(&nodes, n);
                    converged(c.ns(n), &o, s, &peers_of(&nodes, n))
                })
                .then_some(())
        },
    );
}

/// A throwaway plain-HTTP etcd on loopback, killed (and its data removed)
/// on drop.
struct LoopbackEtcd {
    proc: Proc,
    dir: PathBuf,
    endpoint: String,
}

impl Drop for LoopbackEtcd {
    fn drop(&mut self) {
        self.proc.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn loopback_etcd() -> LoopbackEtcd {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let (client, peer) = (free_port(), free_port());
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--data-dir", &dir.join("data").display().to_string()])
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("default={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let etcd = LoopbackEtcd {
        proc: Proc {
            child,
            log: PathBuf::from("/dev/null"),
        },
        dir,
        endpoint: client_url,
    };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", client)).is_ok() {
            return etcd;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("etcd did not come up on {}", etcd.endpoint);
}

/// The master's lease transaction ([`Store::lease_subnet`]) on a real etcd:
/// sixteen registrations racing through their own connections get sixteen
/// distinct subnets, registering again is sticky, a full overlay is a clear
/// error, and [`Store::remove_node`] frees the node's subnet for the next.
#[test]
fn store_leases_race_stick_and_release() {
    if !require(
        "store_leases_race_stick_and_release",
        &[Need::Program("etcd")],
    ) {
        return;
    }
    let etcd = loopback_etcd();
    let connect = EtcdConnect {
        endpoints: vec![etcd.endpoint.clone()],
        tls: None,
    };
    let cidr: Ipv4Cidr = "10.202.0.0/20".parse().expect("cidr");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = Store::connect(&connect).await.expect("connect");
        let mut up = false;
        for _ in 0..100 {
            if store.check_quorum().await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "etcd at {} has no quorum", etcd.endpoint);
        let mut racers = tokio::task::JoinSet::new();
        for i in 0..16 {
            let connect = connect.clone();
            racers.spawn(async move {
                let store = Store::connect(&connect).await.expect("connect");
                let node = format!("n{i}");
                let subnet = store.lease_subnet(cidr, 24, &node).await;
                (node, subnet.map_err(|e| e.to_string()))
            });
        }
        let mut leases: Vec<(String, Ipv4Cidr)> = racers
            .join_all()
            .await
            .into_iter()
            .map(|(n, r)| {
                let s = r.unwrap_or_else(|e| panic!("{n}: {e}"));
                (n, s)
            })
            .collect();
        leases.sort();
        let distinct: BTreeSet<_> = leases.iter().map(|(_, s)| *s).collect();
        assert_eq!(distinct.len(), 16, "a subnet was shared: {leases:?}");
        assert_eq!(
            store.leases().await.expect("leases"),
            leases.iter().cloned().collect(),
            "etcd holds what was handed out"
        );
        let (n3, s3) = &leases[leases.iter().position(|(n, _)| n == "n3").expect("n3")];
        assert_eq!(
            store.lease_subnet(cidr, 24, n3).await.expect("sticky"),
            *s3,
            "registering again keeps the subnet"
        );
        assert_eq!(
            store
                .lease_subnet(cidr, 24, "n16")
                .await
                .map_err(|e| e.to_string()),
            Err(
                "overlay 10.202.0.0/20 has no free /24 subnet left for node `n16`: all 16 are leased"
                    .to_string()
            )
        );
        assert!(store.remove_node(n3, 0).await.is_ok());
        let keys = store
            .list_prefix(control::lease::LeaseKeys::PREFIX)
            .await
            .expect("keys");
        assert_eq!(keys.len(), 30, "both keys of n3 are gone: {keys:?}");
        assert!(keys.iter().all(|(k, v)| !k.ends_with("/n3") && v != "n3"));
        assert_eq!(
            store.lease_subnet(cidr, 24, "n16").await.expect("freed"),
            *s3,
            "the released subnet goes to the next node"
        );
    });
}
