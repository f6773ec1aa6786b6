//! Host tier: three nodes, each a network namespace on a veth-and-bridge
//! underlay, wired by the overlay module as the agent wires them; tasks on
//! different nodes talk over real VXLAN and find each other through the
//! node's DNS server. Needs root.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use agent::testing::lab::{self, Lab};
use qemu_tests::testenv::{Need, require};

fn tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "ov{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every node's netlink state on the overlay devices and its nftables
/// table, as text.
fn dumps(lab: &Lab) -> Vec<String> {
    lab.nodes
        .iter()
        .map(|n| {
            let d = agent::overlay::netlink::dump(Some(&n.netns)).expect("dump");
            let ns = n
                .netns
                .file_name()
                .and_then(|f| f.to_str())
                .expect("named netns");
            let nft = std::process::Command::new("ip")
                .args(["netns", "exec", ns, "nft", "list", "table", "ip", "strata"])
                .output()
                .expect("nft list");
            assert!(
                nft.status.success(),
                "nft list failed: {}",
                String::from_utf8_lossy(&nft.stderr)
            );
            format!(
                "{}\n{}",
                d.render(&["strata-vx", "strata-br"]),
                String::from_utf8_lossy(&nft.stdout)
            )
        })
        .collect()
}

#[test]
fn three_nodes_talk_over_the_overlay() {
    if !require(
        "three_nodes_talk_over_the_overlay",
        &[Need::Root, Need::File("/proc/sys/net/ipv4")],
    ) {
        return;
    }
    let mut lab = Lab::new(&tag(), 3, None, 1500).expect("lab");
    let all = [0, 1, 2];
    for i in all {
        let actions = lab.reconcile(i, &all).expect("first reconcile");
        assert!(!actions.is_empty(), "a fresh node needs actions");
    }
    let a = lab.add_task(0, "web").expect("task on node 0");
    let b = lab.add_task(1, "db").expect("task on node 1");
    let c = lab.add_task(2, "cache").expect("task on node 2");
    assert_eq!(
        (a.to_string(), b.to_string(), c.to_string()),
        (
            "10.200.0.2/24".into(),
            "10.200.1.2/24".into(),
            "10.200.2.2/24".into()
        )
    );

    // The bridge keeps its own MAC with task veths attached.
    let d0 = agent::overlay::netlink::dump(Some(&lab.nodes[0].netns)).expect("dump");
    let br = d0.link("strata-br").expect("bridge");
    assert_eq!(
        br.mac,
        Some(agent::overlay::plan::bridge_mac(lab.nodes[0].subnet))
    );

    // Task to task across nodes, by overlay address.
    let db: SocketAddr = (b.addr, 7000).into();
    let cache: SocketAddr = (c.addr, 7000).into();
    let srv_b = lab::echo_server(lab.task_ns("db").expect("ns"), db).expect("echo on db");
    let srv_c = lab::echo_server(lab.task_ns("cache").expect("ns"), cache).expect("echo on cache");
    let web = lab.task_ns("web").expect("ns");
    assert_eq!(
        lab::roundtrip(&web, db, "hello db").expect("web to db"),
        "hello db"
    );
    assert_eq!(
        lab::roundtrip(&web, cache, "hello cache").expect("web to cache"),
        "hello cache"
    );

    // By name, through the node's own DNS server (what the task's
    // resolv.conf points at), with records that follow tasks at once.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let records = agent::dns::Records::new();
    for (task, addr) in [("web", a), ("db", b), ("cache", c)] {
        records.upsert(
            task,
            agent::dns::TaskRecord {
                app: Some(format!("{task}-app")),
                addr: addr.addr,
                ports: vec![7000],
            },
        );
    }
    let servers: Vec<_> = {
        let _guard = rt.enter();
        (0..3)
            .map(|i| lab::start_dns(&lab, i, "strata.internal", records.clone(), &[]).expect("dns"))
            .collect()
    };
    let resolver = servers[0].addr;
    let conf = agent::dns::render_resolv_conf(
        agent::overlay::plan::gateway(lab.nodes[0].subnet),
        "strata.internal",
    );
    assert!(
        conf.contains(&format!("nameserver {}\n", resolver.ip())),
        "{conf}"
    );
    let found = lab::resolve(&web, resolver, "db-app.strata.internal.").expect("resolve db");
    assert_eq!(found, [b.addr]);
    assert_eq!(
        lab::roundtrip(&web, (found[0], 7000).into(), "by name").expect("web to db by name"),
        "by name"
    );
    records.remove("db");
    assert!(
        lab::resolve(&web, resolver, "db-app.strata.internal.")
            .expect("resolve")
            .is_empty(),
        "db stopped"
    );
    records.upsert(
        "db",
        agent::dns::TaskRecord {
            app: Some("db-app".into()),
            addr: b.addr,
            ports: vec![7000],
        },
    );
    assert_eq!(
        lab::resolve(&web, resolver, "db.strata.internal.").expect("resolve db"),
        [b.addr]
    );
    // Each node's resolver answers on its own gateway.
    let db_ns = lab.task_ns("db").expect("ns");
    assert_eq!(
        lab::resolve(&db_ns, servers[1].addr, "web.strata.internal.").expect("resolve web"),
        [a.addr]
    );
    rt.block_on(async {
        for s in servers {
            s.stop().await.expect("stop dns");
        }
    });

    // Leaving the overlay, a task's traffic is masqueraded: a server on
    // node 1's underlay address sees node 0's underlay address.
    let outside: SocketAddr = (lab.nodes[1].underlay_ip, 7100).into();
    let srv_u =
        lab::echo_server(lab.nodes[1].netns.clone(), outside).expect("echo on node 1 underlay");
    assert_eq!(
        lab::roundtrip(&web, outside, "whoami").expect("web to underlay"),
        lab.nodes[0].underlay_ip.to_string()
    );
    assert_eq!(
        lab::roundtrip(&web, db, "whoami").expect("web to db"),
        a.addr.to_string(),
        "inside the overlay no NAT"
    );
    lab::stop_echo(&web, outside).expect("stop");
    srv_u.join().expect("join").expect("underlay echo");

    // An agent restart: planning again changes nothing, the dumps stay
    // identical and a connection open across it keeps working.
    let before = dumps(&lab);
    let conn = lab::Conversation::open(&web, db).expect("long connection");
    for i in all {
        let actions = lab.reconcile(i, &all).expect("second reconcile");
        assert!(
            actions.is_empty(),
            "restart of node {i} planned {actions:?}"
        );
        conn.say("still there").expect("traffic across the restart");
    }
    assert_eq!(dumps(&lab), before);
    conn.close();

    // Node 2 leaves: its route, neighbour and FDB entry vanish from the others.
    let subnet2 = lab.nodes[2].subnet;
    for i in [0, 1] {
        let actions = lab.reconcile(i, &[0, 1]).expect("reconcile after leave");
        assert_eq!(actions.len(), 3, "{actions:?}");
        let d = agent::overlay::netlink::dump(Some(&lab.nodes[i].netns)).expect("dump");
        let text = d.render(&["strata-vx"]);
        assert!(
            !text.contains(&subnet2.addr.to_string()),
            "node {i} still has {subnet2}:\n{text}"
        );
        assert!(
            !text.contains(&lab.nodes[2].underlay_ip.to_string()),
            "node {i} still has node 2's FDB entry:\n{text}"
        );
    }
    assert!(
        lab::roundtrip(&web, cache, "gone?").is_err(),
        "node 2 is unreachable after leaving"
    );
    assert_eq!(
        lab::roundtrip(&web, db, "hello again").expect("web to db"),
        "hello again"
    );

    // Task stop and agent restart on the IPAM side: a stopped task's veth
    // goes and its address is freed; a reopened book keeps the running ones.
    let extra = lab.add_task(0, "extra").expect("second task on node 0");
    assert_eq!(extra.to_string(), "10.200.0.3/24");
    lab.remove_task("extra").expect("stop task");
    let node0 = agent::overlay::netlink::dump(Some(&lab.nodes[0].netns)).expect("dump");
    let veth = agent::overlay::ipam::veth_name(&lab.task_key("extra"));
    assert!(node0.link(&veth).is_none(), "{veth} left behind");
    let reopened = agent::overlay::NodeNetwork::open(
        &lab.state_dir(0),
        Some(lab.nodes[0].netns.clone()),
        lab.nodes[0].net.node.clone(),
        lab.nodes[0].subnet,
        lab.cluster,
    )
    .expect("reopen after restart");
    assert_eq!(reopened.address_of(&lab.task_key("web")), Some(a.addr));
    assert_eq!(reopened.address_of(&lab.task_key("extra")), None);

    lab::stop_echo(&web, db).expect("stop db echo");
    srv_b.join().expect("join").expect("db echo");
    drop(srv_c); // unreachable now; the thread ends with the process
}

/// A throwaway etcd on loopback, killed on drop.
struct Etcd {
    child: std::process::Child,
    dir: std::path::PathBuf,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_etcd() -> Etcd {
    let dir = std::env::temp_dir().join(format!("strata-overlay-etcd-{}", tag()));
    let (client, peer) = (free_port(), free_port());
    let child = std::process::Command::new("etcd")
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start etcd");
    let etcd = Etcd {
        child,
        dir,
        endpoint: format!("127.0.0.1:{client}"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(&etcd.endpoint).is_ok() {
            return etcd;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("etcd did not come up on {}", etcd.endpoint);
}

fn etcdctl(endpoint: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("etcdctl")
        .args(["--endpoints", endpoint])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("etcdctl output");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One registration as the master runs it: read, allocate, compare-and-swap,
/// retry on conflict. Returns the subnet and the number of attempts.
fn register(
    endpoint: &str,
    cidr: configs::net::Ipv4Cidr,
    node: &str,
) -> Result<(configs::net::Ipv4Cidr, u32), String> {
    use control::lease::{self, LeaseKeys};
    for attempt in 1..=100 {
        let listing = etcdctl(
            endpoint,
            &["get", "--prefix", &format!("{}nodes/", LeaseKeys::PREFIX)],
            "",
        );
        let lines: Vec<&str> = listing.lines().collect();
        let leases =
            lease::leases_from_kvs(lines.chunks(2).filter_map(|kv| Some((kv[0], *kv.get(1)?))))?;
        let subnet = lease::allocate(cidr, 24, &leases, node).map_err(|e| e.to_string())?;
        if leases.get(node) == Some(&subnet) {
            return Ok((subnet, attempt));
        }
        let keys = LeaseKeys::new(node, subnet);
        let txn = format!(
            "version(\"{s}\") = \"0\"\nversion(\"{n}\") = \"0\"\n\nput {s} {node}\nput {n} {subnet}\n\n\n",
            s = keys.by_subnet,
            n = keys.by_node
        );
        if etcdctl(endpoint, &["txn"], &txn).starts_with("SUCCESS") {
            return Ok((subnet, attempt));
        }
    }
    Err(format!("{node}: no lease after 100 attempts"))
}

#[test]
fn concurrent_registrations_never_share_a_subnet() {
    let needs = [Need::Program("etcd"), Need::Program("etcdctl")];
    if !require("concurrent_registrations_never_share_a_subnet", &needs) {
        return;
    }
    let etcd = start_etcd();
    let cidr: configs::net::Ipv4Cidr = "10.200.0.0/21".parse().expect("cidr");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let endpoint = etcd.endpoint.clone();
                s.spawn(move || (format!("n{i}"), register(&endpoint, cidr, &format!("n{i}"))))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut subnets = std::collections::BTreeSet::new();
    for (node, r) in &results {
        let (subnet, _) = r.as_ref().unwrap_or_else(|e| panic!("{node}: {e}"));
        assert!(
            subnets.insert(*subnet),
            "{subnet} handed out twice: {results:?}"
        );
    }
    assert_eq!(subnets.len(), 8);
    let retried = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|(_, a)| *a > 1))
        .count();
    eprintln!("8 concurrent registrations, {retried} retried after a conflict");
    // Sticky: registering again returns the same subnet without a write.
    let (again, _) = register(&etcd.endpoint, cidr, "n3").expect("re-register");
    assert_eq!(
        Some(&again),
        results
            .iter()
            .find(|(n, _)| n == "n3")
            .and_then(|(_, r)| r.as_ref().ok().map(|(s, _)| s))
    );
    // Full: a ninth node gets a clear error.
    assert_eq!(
        register(&etcd.endpoint, cidr, "n8"),
        Err(
            "overlay 10.200.0.0/21 has no free /24 subnet left for node `n8`: all 8 are leased"
                .to_string()
        )
    );
}
