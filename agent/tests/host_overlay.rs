//! Host tier: three nodes, each a network namespace on a veth-and-bridge
//! underlay, wired by the overlay module as the agent wires them; tasks on
//! different nodes talk over real VXLAN and find each other through the
//! node's DNS server. Needs root.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};

use agent::overlay::lab::{self, Lab};
use agent::testenv::{Need, require};

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
