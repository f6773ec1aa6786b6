//! The node's firewall for real: a master and two agents run as `strata
//! agent`, the daemon an image runs, with the repository's role files, each
//! in a network namespace of its own; each applies its `inet strata-fw`
//! table in its namespace at boot and adds the overlay once it has read the
//! node list. Checks that the cluster forms through the firewalls (the API,
//! VXLAN, the resolvers), that every node admits VXLAN from exactly the
//! nodes of the list, that the API answers another node while a port the
//! role does not open drops a connection, that etcd's client port drops a
//! node that is not a master, that the role's ports answer nodes only
//! (a machine of the same network that is no node gets no answer), that
//! from the overlay only a node's resolver answers, and that each node
//! reports its rules with what they counted (`strata node firewall`).
//! Then the edge: an app on the private agent, exposed by Marathon-LB's
//! labels for a host name, answers a machine outside the cluster through
//! the public agent's HAProxy, whose firewall opens the edge's HTTP port
//! and nothing more (a TCP port no app exposes drops; the private agent
//! drops the same request). With an operator's certificate (`strata edge
//! cert set`) the public agent serves the host over HTTPS and opens 443;
//! a certificate for another host is refused; removing it closes 443.
//! (That a task on the bridge reaches no other
//! service of its node is `host_overlay.rs`; the edge proxy's churn and
//! reloads against HAProxy, `host_edge.rs`.)

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use agent::overlay::netns::{path as ns_path, run_in};
use agent::overlay::plan;
use anyhow::Context as _;
use control::model::{NodeState, NodeStatus};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{ClusterSpec, Launch, NodeCommand, TestCluster};
use common::output;

const NODES: [&str; 3] = ["master-1", "agent-1", "agent-2"];
const ZONE: &str = "strata.internal";
/// How long a connection attempt may take before the port counts as
/// dropped: an open port answers within milliseconds here.
const DROPPED_AFTER: Duration = Duration::from_secs(2);
/// A port no role opens.
const CLOSED: u16 = 7070;

/// The app the edge exposes: busybox's httpd on port 8080 of one instance
/// (on the private agent, where apps go by default), for the host
/// `web.test`, with Marathon-LB's labels.
const WEB_JSON: &str = r#"{"id": "/web", "instances": 1, "cpus": 0.1, "mem": 32,
    "cmd": "mkdir -p /www && echo ok $STRATA_INSTANCE_ID > /www/index.html && exec busybox httpd -f -p 8080 -h /www",
    "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "web.test"},
    "container": {"type": "DOCKER", "docker": {"image": "example.org/bb:1", "network": "BRIDGE",
      "portMappings": [{"containerPort": 8080, "name": "http"}]}},
    "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
      "gracePeriodSeconds": 2, "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 2}]}"#;

/// `GET /` for `host` at `addr` from inside namespace `ns`: the status
/// code and the body.
fn http_get(ns: &str, addr: SocketAddr, host: &str) -> std::io::Result<(u16, String)> {
    run_in(Some(&ns_path(ns)), || {
        Ok(qemu_tests::http::get(addr, host, "/"))
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Listens on `addr` inside namespace `ns` (the socket stays there); the
/// kernel completes connections without an accept.
fn listen(ns: &str, addr: SocketAddr) -> TcpListener {
    run_in(Some(&ns_path(ns)), || {
        TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr} in {ns}"))
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Connects to `addr` from inside namespace `ns`, giving up after
/// [`DROPPED_AFTER`].
fn connect(ns: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    run_in(Some(&ns_path(ns)), || {
        Ok(TcpStream::connect_timeout(&addr, DROPPED_AFTER))
    })
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// `addr` answers a connection from `ns`.
fn answers(ns: &str, addr: SocketAddr) {
    if let Err(e) = connect(ns, addr) {
        panic!("{addr} does not answer {ns}: {e}");
    }
}

/// A connection from `ns` to `addr` gets no answer at all: the firewall
/// dropped it (a closed port without a firewall refuses at once).
fn dropped(ns: &str, addr: SocketAddr) {
    match connect(ns, addr) {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
        Err(e) => panic!("{addr} from {ns}: expected no answer, got `{e}`"),
        Ok(_) => panic!("{addr} answered {ns}"),
    }
}

/// `nft list table inet strata-fw` in namespace `ns`.
fn ruleset(ns: &str) -> Result<String, String> {
    output(
        std::path::Path::new("ip"),
        &[
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "table",
            "inet",
            "strata-fw",
        ],
    )
}

/// The elements of the set `nodes` in a listed table, sorted.
fn nodes_set(table: &str) -> Vec<Ipv4Addr> {
    let Some(set) = table.split("set nodes {").nth(1) else {
        return vec![];
    };
    let Some(elements) = set.split("elements = {").nth(1) else {
        return vec![];
    };
    let mut addrs: Vec<Ipv4Addr> = elements
        .split('}')
        .next()
        .unwrap_or_default()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter_map(|a| a.parse().ok())
        .collect();
    addrs.sort();
    addrs
}

fn node<'a>(nodes: &'a [NodeStatus], name: &str) -> &'a NodeStatus {
    nodes
        .iter()
        .find(|n| n.record.info.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

#[test]
fn every_node_admits_only_what_its_role_and_the_cluster_need() {
    if !require(
        "every_node_admits_only_what_its_role_and_the_cluster_need",
        &[
            Need::Root,
            Need::Program("etcd"),
            Need::Program("ip"),
            Need::Program("nft"),
            Need::Program("haproxy"),
            Need::Program("umoci"),
            Need::Program("nsenter"),
            Need::File("/bin/busybox"),
        ],
    ) {
        return;
    }
    let mut c = TestCluster::new(ClusterSpec {
        command: NodeCommand::Agent,
        launch: Launch::NetOnly,
        ..ClusterSpec::new("sf", "fw", "10.80.0")
    });
    // The app's image, in the private agent's store.
    let _tasks = c.import_busybox(&["agent-1"]);
    let (stranger, _) = c.add_stranger();
    let _master = c.spawn_node("master-1", "master.log");
    let _agent1 = c.spawn_node("agent-1", "agent-1.log");
    let _agent2 = c.spawn_node("agent-2", "agent-2.log");

    // The cluster forms through the firewalls: agents reach the API,
    // every node gets its lease.
    let nodes = c.wait_nodes(
        "every node Ready with a lease",
        Duration::from_secs(90),
        |nodes| {
            NODES.iter().all(|name| {
                nodes.iter().any(|n| {
                    n.record.info.name == *name && n.state == NodeState::Ready && n.subnet.is_some()
                })
            })
        },
    );
    let ip = |name: &str| -> Ipv4Addr { c.ip(name).parse().expect("underlay address") };
    let mut underlay: Vec<Ipv4Addr> = NODES.iter().map(|n| ip(n)).collect();
    underlay.sort();

    // Every node admits VXLAN from every node of the list, once it has
    // read it (the boot firewall has no overlay yet).
    for name in NODES {
        let ns = c.ns(name);
        let table = c.wait(
            &format!("{name}'s firewall admits VXLAN from every node"),
            Duration::from_secs(30),
            || {
                let table = ruleset(ns).ok()?;
                (nodes_set(&table) == underlay
                    && table.contains("ip saddr @nodes udp dport 4789 counter"))
                .then_some(table)
            },
        );
        assert!(table.contains("policy drop;"), "{name}:\n{table}");
        let master = name == "master-1";
        assert_eq!(
            table.contains("tcp dport 6443 counter"),
            master,
            "the API's port is open on masters only; {name}:\n{table}"
        );
        assert_eq!(
            table.contains("ip saddr @masters tcp dport { 2379, 2380 } counter"),
            master,
            "etcd's ports are open to the masters on masters only; {name}:\n{table}"
        );
    }

    // The API answers another node's namespace; a port the role does not
    // open drops it, while the same listener answers on the node itself.
    let api: SocketAddr = (ip("master-1"), 6443).into();
    answers(c.ns("agent-1"), api);
    let closed: SocketAddr = (Ipv4Addr::UNSPECIFIED, CLOSED).into();
    let _closed_on_master = listen(c.ns("master-1"), closed);
    answers(c.ns("master-1"), (ip("master-1"), CLOSED).into());
    dropped(c.ns("agent-1"), (ip("master-1"), CLOSED).into());
    let _closed_on_agent = listen(c.ns("agent-1"), closed);
    dropped(c.ns("master-1"), (ip("agent-1"), CLOSED).into());

    // The role's ports are the nodes' only: the metrics port answers a
    // node and drops a machine of the same network that is no node; a
    // public agent opens no HTTPS port of its own (the edge opens what
    // apps expose).
    let metrics: SocketAddr = (Ipv4Addr::UNSPECIFIED, 9464).into();
    let _metrics_on_agent = listen(c.ns("agent-1"), metrics);
    answers(c.ns("agent-2"), (ip("agent-1"), 9464).into());
    dropped(&stranger, (ip("agent-1"), 9464).into());
    dropped(&stranger, (ip("agent-1"), CLOSED).into());
    let https: SocketAddr = (Ipv4Addr::UNSPECIFIED, 443).into();
    let https_on_public = listen(c.ns("agent-2"), https);
    dropped(c.ns("agent-1"), (ip("agent-2"), 443).into());
    dropped(&stranger, (ip("agent-2"), 443).into());
    // The edge binds 443 once a host has a certificate (below).
    drop(https_on_public);
    // The API stays open to every source on the master.
    answers(&stranger, api);

    // etcd's client port, where an image's master listens for its peers
    // (this cluster's etcd is on the master's loopback): a node that is
    // not a master gets no answer.
    let _etcd_port = listen(c.ns("master-1"), (ip("master-1"), 2379).into());
    answers(c.ns("master-1"), (ip("master-1"), 2379).into());
    dropped(c.ns("agent-1"), (ip("master-1"), 2379).into());

    // From the overlay only a node's resolver answers: agent-1 asks
    // agent-2's resolver (on agent-2's gateway, through VXLAN both ways)
    // for a node's name; a port on that gateway drops it.
    let gateway_2 = plan::gateway(node(&nodes, "agent-2").subnet.expect("agent-2's lease"));
    let gateway_1 = plan::gateway(node(&nodes, "agent-1").subnet.expect("agent-1's lease"));
    let resolver: SocketAddr = (gateway_2, 53).into();
    let found = c.wait(
        "agent-2's resolver answers agent-1 over the overlay",
        Duration::from_secs(20),
        || {
            run_in(Some(&ns_path(c.ns("agent-1"))), || {
                agent::dns::client::lookup_a(resolver, &format!("agent-1.{ZONE}."))
            })
            .ok()
            .filter(|found| !found.is_empty())
        },
    );
    assert_eq!(
        found,
        [gateway_1],
        "agent-1.{ZONE} through agent-2's resolver"
    );
    let _closed_on_agent2 = listen(c.ns("agent-2"), closed);
    answers(c.ns("agent-2"), (gateway_2, CLOSED).into());
    dropped(c.ns("agent-1"), (gateway_2, CLOSED).into());

    // Each node reports the firewall in force with its counters: agent-1
    // counted what it dropped above, and shows its rules.
    let report = c.wait(
        "agent-1 reports its firewall with the drops counted",
        Duration::from_secs(60),
        || {
            let json = c.cli(&["node", "firewall", "agent-1", "--json"]).ok()?;
            let r: control::firewall::FirewallReport = serde_json::from_str(&json).ok()?;
            (r.dropped.packets >= 3).then_some(r)
        },
    );
    let rules: Vec<&str> = report.rules.iter().map(|r| r.rule.as_str()).collect();
    assert!(
        rules.contains(&"accept tcp 9464 from the nodes (the role's ports)")
            && rules.last() == Some(&"drop and count everything else")
            && !rules.iter().any(|r| r.contains("(the API)")),
        "agent-1's rules: {rules:#?}"
    );
    let text = c.cli_ok(&["node", "firewall", "master-1"]);
    assert!(
        text.contains("accept tcp 6443 from anywhere (the API)")
            && text.contains("accept tcp 2379, 2380 from the masters (etcd)"),
        "master-1's firewall:\n{text}"
    );
    let (code, err) = c.cli_status(&["node", "firewall", "no-such-node"]);
    assert!(
        code != 0 && err.contains("no node named `no-such-node`"),
        "exit {code}: {err}"
    );

    // The edge: an app on the private agent, exposed for web.test, answers
    // a machine outside the cluster through the public agent's edge.
    let file = c.dir().join("web.json");
    std::fs::write(&file, WEB_JSON).expect("write the app");
    c.cli_ok(&["app", "deploy", &file.display().to_string()]);
    let edge: SocketAddr = (ip("agent-2"), 80).into();
    let body = c.wait(
        "the app answers a stranger through agent-2's edge",
        Duration::from_secs(90),
        || match http_get(&stranger, edge, "web.test") {
            Ok((200, body)) if body.starts_with("ok ") => Some(body),
            _ => None,
        },
    );
    assert!(body.starts_with("ok web"), "{body}");
    let (code, body) = http_get(&stranger, edge, "other.test").expect("the edge answers");
    assert!(
        code == 404 && body == "no app is exposed at this host and path",
        "{code} {body}"
    );
    let text = c.cli_ok(&["node", "firewall", "agent-2"]);
    assert!(
        text.contains("accept tcp 80 from anywhere (the edge's exposed ports)"),
        "agent-2's firewall:\n{text}"
    );
    // Nothing else is open: a TCP port no app exposes drops at the public
    // agent, and the private agent drops the edge's port.
    dropped(&stranger, (ip("agent-2"), 10100).into());
    dropped(&stranger, (ip("agent-1"), 80).into());
    let shown = c.cli_ok(&["app", "show", "/web"]);
    assert!(
        shown.contains(&format!(
            "ports[0] http://web.test/ at agent-2 {}:80",
            ip("agent-2")
        )),
        "{shown}"
    );

    // TLS: an operator's certificate for web.test reaches the public
    // agent, which serves the app over HTTPS on 443 and opens it.
    let ca = agent::testing::tls::TestCa::new().expect("ca");
    let pem = c.dir().join("web.test.pem");
    std::fs::write(&pem, ca.issue(&["web.test"]).expect("cert")).expect("write the cert");
    let pem = pem.display().to_string();
    let (code, err) = c.cli_status(&["edge", "cert", "set", "other.test", &pem]);
    assert!(
        code != 0 && err.contains("the leaf certificate covers web.test, not other.test"),
        "exit {code}: {err}"
    );
    c.cli_ok(&["edge", "cert", "set", "web.test", &pem]);
    let tls: SocketAddr = (ip("agent-2"), 443).into();
    let got = c.wait(
        "the app answers a stranger over HTTPS through agent-2's edge",
        Duration::from_secs(60),
        || {
            run_in(Some(&ns_path(&stranger)), || {
                Ok(agent::testing::tls::https_get(tls, "web.test", "/", &ca.cert_pem).ok())
            })
            .ok()
            .flatten()
            .filter(|a| a.code == 200)
        },
    );
    assert!(got.body.starts_with("ok web"), "{got:?}");
    // The report of the new ruleset follows it.
    c.wait("agent-2 reports 443 open", Duration::from_secs(30), || {
        let text = c.cli_ok(&["node", "firewall", "agent-2"]);
        text.contains("accept tcp 80, 443 from anywhere (the edge's exposed ports)")
            .then_some(())
    });
    let shown = c.cli_ok(&["app", "show", "/web"]);
    assert!(
        shown.contains(&format!(
            "ports[0] https://web.test/ at agent-2 {}:443 (certificate valid until",
            ip("agent-2")
        )),
        "{shown}"
    );
    let listed = c.cli_ok(&["edge", "cert", "list"]);
    assert!(
        listed.contains("web.test") && !listed.contains("PRIVATE"),
        "{listed}"
    );
    c.cli_ok(&["edge", "cert", "remove", "web.test"]);
    c.wait(
        "agent-2 closes 443 once the certificate is gone",
        Duration::from_secs(60),
        || {
            let text = c.cli_ok(&["node", "firewall", "agent-2"]);
            text.contains("accept tcp 80 from anywhere (the edge's exposed ports)")
                .then_some(())
        },
    );
    let (code, err) = c.cli_status(&["edge", "cert", "remove", "web.test"]);
    assert!(
        code != 0 && err.contains("no edge certificate for web.test"),
        "{err}"
    );
}

/// The lock-out guard on a real table: a ruleset under which no call
/// reached the API is replaced by the last confirmed one, and the report
/// says why; a confirmed ruleset stays; with nothing confirmed yet (as at
/// boot) the rules stay as they are.
#[test]
fn an_unconfirmed_ruleset_is_rolled_back() {
    if !require(
        "an_unconfirmed_ruleset_is_rolled_back",
        &[Need::Root, Need::Program("nft"), Need::Program("ip")],
    ) {
        return;
    }
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = agent::overlay::netns::delete(&self.0);
        }
    }
    let name = format!("sfg{}", std::process::id() % 100_000);
    let path = agent::overlay::netns::create(&name).expect("a namespace");
    let _gone = Gone(name.clone());
    let fw = agent::firewall::NodeFirewall::new(
        Some(path),
        control::firewall::FirewallInput::default(),
        None,
    );
    fw.apply().expect("apply");
    fw.set_edge(vec![8079]).expect("open 8079");
    assert_eq!(
        fw.roll_back_unconfirmed(Duration::ZERO).expect("guard"),
        None,
        "nothing confirmed yet: nothing to go back to"
    );
    fw.confirm(fw.generation()).expect("confirm");
    fw.set_edge(vec![8080]).expect("open 8080");
    let why = fw
        .roll_back_unconfirmed(Duration::ZERO)
        .expect("guard")
        .expect("rolled back");
    assert!(why.contains("reached no master's API"), "{why}");
    let table = ruleset(&name).expect("nft list");
    assert!(
        table.contains("tcp dport 8079") && !table.contains("8080"),
        "{table}"
    );
    let report = fw.report().expect("report").expect("applied");
    assert_eq!(report.rolled_back.as_deref(), Some(why.as_str()));
    // A confirmed change stays.
    fw.set_edge(vec![8081]).expect("open 8081");
    fw.confirm(fw.generation()).expect("confirm");
    assert_eq!(
        fw.roll_back_unconfirmed(Duration::ZERO).expect("guard"),
        None
    );
    assert!(ruleset(&name).expect("nft list").contains("tcp dport 8081"));
}
