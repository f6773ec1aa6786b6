//! Cluster formation for real: one master with a real etcd (Debian's
//! `etcd`, started here with mutual TLS from the etcd CA) and two agents,
//! each `strata` process in its own network namespace, the agents' joined
//! to the master's by veth pairs on a bridge. Checks join, heartbeats, loss
//! after an agent is killed, rejoin with the same identity, and that a wrong
//! token, an unauthenticated call, a foreign and an expired certificate are
//! refused.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use agent::api::client::{ApiClient, Auth, ClientError};
use agent::api::tls;
use agent::pki::{Ca, NodeKey};
use control::model::{NodeState, NodeStatus};
use qemu_tests::observe::{Hold, Seen, wait_until_holding};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{ClusterSpec, TestCluster};

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn state(nodes: &[NodeStatus], name: &str) -> Option<NodeState> {
    nodes
        .iter()
        .find(|n| n.record.info.name == name)
        .map(|n| n.state)
}

/// Each node's name, state and ready_since, for messages.
fn summary(nodes: &[NodeStatus]) -> Vec<(&str, NodeState, Option<u64>)> {
    nodes
        .iter()
        .map(|n| (n.record.info.name.as_str(), n.state, n.ready_since))
        .collect()
}

fn node<'a>(nodes: &'a [NodeStatus], name: &str) -> &'a NodeStatus {
    nodes
        .iter()
        .find(|n| n.record.info.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

#[test]
fn master_and_two_agents_join_heartbeat_and_survive_loss() {
    if !require(
        "host_cluster",
        &[Need::Root, Need::Program("etcd"), Need::Program("ip")],
    ) {
        return;
    }
    let api_port = 6443;
    let c = TestCluster::new(ClusterSpec {
        extra_toml: format!("api_port = {api_port}\n"),
        ..ClusterSpec::new("sc", "host", "10.77.0")
    });
    let master_ip = c.ip("master-1");

    // The nodes: the real binary, each in its namespace.
    let master = c.spawn_node("master-1", "master.log");
    let mut agent1 = c.spawn_node("agent-1", "agent-1.log");
    let _agent2 = c.spawn_node("agent-2", "agent-2.log");

    // Join and heartbeats: everyone Ready, masters listed as nodes too.
    let ready = |nodes: &[NodeStatus]| {
        ["master-1", "agent-1", "agent-2"]
            .iter()
            .all(|n| state(nodes, n) == Some(NodeState::Ready))
    };
    let nodes = c.wait_nodes("all nodes Ready", Duration::from_secs(60), ready);
    assert_eq!(nodes.len(), 3, "{nodes:#?}");
    let a1 = node(&nodes, "agent-1").clone();
    assert_eq!(a1.record.info.role, configs::Role::Private);
    assert_eq!(
        node(&nodes, "agent-2").record.info.role,
        configs::Role::Public
    );
    assert_eq!(
        node(&nodes, "master-1").record.info.role,
        configs::Role::Master
    );
    assert_eq!(
        a1.record.info.addresses.first().map(String::as_str),
        Some("10.77.0.11")
    );
    assert!(
        a1.record.info.cpus >= 1
            && a1.record.info.memory_bytes > 0
            && a1.record.info.disk_bytes > 0
    );

    let table = c.cli_ok(&["node", "list"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("agent-2") && l.contains("public") && l.contains("Ready")),
        "{table}"
    );
    let status = c.cli_ok(&["cluster", "status"]);
    assert!(
        status.contains("etcd healthy, leader etcd-host, 3/3 node(s) Ready"),
        "{status}"
    );
    let show = c.cli_ok(&["node", "show", "agent-1"]);
    assert!(
        show.contains(&format!("key sha256:  {}", a1.record.key_sha256)),
        "{show}"
    );

    // A master that cannot be reached is named with the reason.
    let unreachable = c.cli(&["node", "list", "--endpoint", &format!("{master_ip}:1")]);
    let stderr = unreachable.expect_err("no master answers on port 1");
    assert!(
        stderr.contains(&format!(
            "no master answered: {master_ip}:1: cannot connect: Connection refused"
        )),
        "{stderr}"
    );

    // Heartbeats keep the nodes Ready well past the grace period, each
    // since the same time (a new ready_since means its lease expired).
    let grace = Duration::from_secs(3); // grace_seconds in the harness's cluster.toml
    let mut since: Option<Vec<(String, Option<u64>)>> = None;
    Hold::new(
        "every node stays Ready while heartbeating",
        2 * grace + Duration::from_secs(1),
    )
    .every(Duration::from_millis(250))
    .blind_for(Duration::from_secs(1))
    .check(|| {
        let nodes = match c.try_nodes() {
            Ok(n) => n,
            Err(e) => return Seen::Blind(e),
        };
        let now: Vec<(String, Option<u64>)> = nodes
            .iter()
            .map(|n| (n.record.info.name.clone(), n.ready_since))
            .collect();
        let seen = format!("{:?}", summary(&nodes));
        let first = since.get_or_insert_with(|| now.clone());
        if !ready(&nodes) {
            Seen::Broken(format!(
                "a node went unreachable while heartbeating: {seen}"
            ))
        } else if *first != now {
            Seen::Broken(format!(
                "a node's ready_since moved: first {first:?}, now {now:?}"
            ))
        } else {
            Seen::Holds(seen)
        }
    });

    // Node loss: kill agent-1; it turns Unreachable, agent-2 stays Ready.
    agent1.kill();
    let others_ready = || match c.try_nodes() {
        Err(e) => Seen::Blind(e),
        Ok(n) => {
            let seen = format!("{:?}", summary(&n));
            if state(&n, "agent-2") == Some(NodeState::Ready)
                && state(&n, "master-1") == Some(NodeState::Ready)
            {
                Seen::Holds(seen)
            } else {
                Seen::Broken(seen)
            }
        }
    };
    wait_until_holding(
        "agent-1 Unreachable while agent-2 and master-1 stay Ready",
        Duration::from_secs(15),
        Duration::from_millis(250),
        || {
            c.try_nodes()
                .ok()
                .filter(|n| state(n, "agent-1") == Some(NodeState::Unreachable))
        },
        others_ready,
    );

    // Rejoin with the same identity: same key, same first join.
    let agent1 = c.spawn_node("agent-1", "agent-1-again.log");
    let nodes = c.wait_nodes("agent-1 Ready again", Duration::from_secs(30), |n| {
        state(n, "agent-1") == Some(NodeState::Ready)
    });
    let again = node(&nodes, "agent-1");
    assert_eq!(again.record.key_sha256, a1.record.key_sha256);
    assert_eq!(again.record.joined_at, a1.record.joined_at);
    assert!(
        agent1.log().contains("keeps its identity"),
        "{}",
        agent1.log()
    );

    // A wrong token: refused, and the agent says why in its log and health.
    let good = std::fs::read_to_string(c.user_data("agent-2")).expect("user-data");
    let token_line = good
        .lines()
        .find(|l| l.starts_with("join_token"))
        .expect("join_token line");
    let (head, _) = token_line.rsplit_once('.').expect("token secret");
    let bad = good
        .replace(token_line, &format!("{head}.{}\"", "0".repeat(48)))
        .replace("name = \"agent-2\"", "name = \"intruder\"");
    let intruder_ud = c.dir().join("intruder.toml");
    std::fs::write(&intruder_ud, bad).expect("write");
    let intruder = c.spawn(
        c.ns("agent-2"),
        &intruder_ud,
        &c.state_dir("intruder"),
        "intruder.log",
    );
    let health = c.state_dir("intruder").join("health/cluster.json");
    let h = c.wait(
        "the intruder's health saying it retries",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(&health)
                .ok()
                .filter(|h| h.contains("retrying"))
        },
    );
    assert!(
        h.contains("the join token is wrong: its secret is not this cluster's"),
        "{h}"
    );
    assert!(
        intruder.log().contains("join failed, retrying"),
        "{}",
        intruder.log()
    );
    // It keeps retrying: the node list never shows it, over a window that
    // ends only after two more tries were refused (the join backoff doubles
    // from 0.5 s, so a fixed short window could cover no try at all).
    let intruder_pid = intruder.child.id();
    let tries = |log: &str| log.matches("join failed, retrying").count();
    let tried = tries(&intruder.log());
    Hold::new("the intruder is never registered", Duration::from_secs(2))
        .every(Duration::from_millis(250))
        .blind_for(Duration::from_secs(1))
        .check(|| {
            if !qemu_tests::observe::alive(intruder_pid) {
                return Seen::Broken(format!("the intruder exited: {}", intruder.log()));
            }
            match c.try_nodes() {
                Err(e) => Seen::Blind(e),
                Ok(n) if state(&n, "intruder").is_some() => {
                    Seen::Broken(format!("the intruder was registered: {:?}", summary(&n)))
                }
                Ok(n) => Seen::Holds(format!("{:?}", summary(&n))),
            }
        });
    wait_until_holding(
        "two more join tries refused",
        Duration::from_secs(30),
        Duration::from_millis(250),
        || (tries(&intruder.log()) >= tried + 2).then_some(()),
        || match c.try_nodes() {
            Err(e) => Seen::Blind(e),
            Ok(n) if state(&n, "intruder").is_some() => {
                Seen::Broken(format!("the intruder was registered: {:?}", summary(&n)))
            }
            Ok(n) => Seen::Holds(format!("{:?}", summary(&n))),
        },
    );

    // Calls without credentials, with a foreign certificate and with an
    // expired one, made from an agent's namespace.
    let ca_pem = c.ca.cert_pem.clone();
    let endpoint = format!("{master_ip}:{api_port}");
    let ca2 = c.ca.clone();
    let agent1_ns = agent::overlay::netns::path(c.ns("agent-1"));
    let errors = agent::overlay::netns::run_in(Some(&agent1_ns), move || {
        Ok(block_on(async move {
            let call = |tls: rustls::ClientConfig, auth: Auth| {
                let client = ApiClient::new(vec![endpoint.clone()], tls, auth);
                async move { client.list_nodes().await.map(|_| ()) }
            };
            let anonymous = call(tls::client_config(&ca_pem, None).expect("tls"), Auth::Tls).await;
            let bad_bearer = call(
                tls::client_config(&ca_pem, None).expect("tls"),
                Auth::Bearer("strata-cli.v1.nope".into()),
            )
            .await;
            let foreign_ca = Ca::generate("other").expect("ca");
            let key = NodeKey::generate().expect("key");
            let foreign = foreign_ca
                .sign_node_csr(
                    "agent-2",
                    &key.csr("agent-2").expect("csr"),
                    Duration::from_secs(3600),
                )
                .expect("sign");
            let foreign = call(
                tls::client_config(&ca_pem, Some((&foreign.cert_pem, &key.key_pem))).expect("tls"),
                Auth::Tls,
            )
            .await;
            let day = Duration::from_secs(86_400);
            let expired = ca2
                .sign_node_csr_between(
                    "agent-2",
                    &key.csr("agent-2").expect("csr"),
                    SystemTime::now() - 2 * day,
                    SystemTime::now() - day,
                )
                .expect("sign");
            let expired = call(
                tls::client_config(&ca_pem, Some((&expired.cert_pem, &key.key_pem))).expect("tls"),
                Auth::Tls,
            )
            .await;
            [anonymous, bad_bearer, foreign, expired]
        }))
    })
    .expect("netns thread");
    let [anonymous, bad_bearer, foreign, expired] = errors;
    let msg = |r: Result<(), ClientError>| r.expect_err("the call must be refused").to_string();
    let anonymous = msg(anonymous);
    assert!(
        anonymous.contains(
            "(401): authentication required: present a node certificate or a bearer token"
        ),
        "{anonymous}"
    );
    let bad_bearer = msg(bad_bearer);
    assert!(
        bad_bearer.contains("(401): the bearer token is not valid for this cluster"),
        "{bad_bearer}"
    );
    let foreign = msg(foreign);
    assert!(
        foreign.contains("the master does not trust this node's certificate"),
        "{foreign}"
    );
    let expired = msg(expired);
    assert!(
        expired.contains("the master says this node's certificate has expired"),
        "{expired}"
    );
    let master_log = master.log();
    assert!(master_log.contains("TLS handshake with"), "{master_log}");
}

/// The systemd client against a private `dbus-daemon`: a peer on that bus
/// owns systemd's name and records the calls, so the method names and
/// arguments that would start etcd in an image are checked on a real bus.
#[test]
fn systemd_client_starts_a_unit_over_dbus() {
    use futures::StreamExt;

    if !require("host_cluster systemd", &[Need::Program("dbus-daemon")]) {
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let socket = tmp.path().join("bus");
    let mut daemon = Command::new("dbus-daemon")
        .args([
            "--session",
            "--nofork",
            "--print-address=1",
            &format!("--address=unix:path={}", socket.display()),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-daemon");
    let address = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(daemon.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("address");
        line.trim().to_string()
    };
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _daemon = Kill(daemon);

    let calls = block_on(async move {
        let systemd = zbus::conn::Builder::address(address.as_str())
            .name("org.freedesktop.systemd1")
            .build()
            .await
            .expect("peer connection");
        let mut stream = zbus::MessageStream::from(&systemd);
        let peer = tokio::spawn(async move {
            let mut calls = Vec::new();
            while let Some(Ok(msg)) = stream.next().await {
                let h = msg.header();
                if h.interface().map(|i| i.as_str()) != Some("org.freedesktop.systemd1.Manager") {
                    continue;
                }
                let member = h.member().map(|m| m.to_string()).unwrap_or_default();
                match member.as_str() {
                    "Reload" => {
                        calls.push("Reload".to_string());
                        systemd.reply(&h, &()).await.expect("reply");
                    }
                    "StartUnit" => {
                        let (unit, mode): (String, String) =
                            msg.body().deserialize().expect("(ss)");
                        calls.push(format!("StartUnit {unit} {mode}"));
                        let job = zbus::ObjectPath::try_from("/org/freedesktop/systemd1/job/7")
                            .expect("path");
                        systemd.reply(&h, &job).await.expect("reply");
                        return calls;
                    }
                    other => calls.push(format!("unexpected {other}")),
                }
            }
            calls
        });
        let calls = async {
            let client = agent::systemd::Systemd::at(&address).await.expect("client");
            client.reload().await.expect("reload");
            let job = client.start_unit("etcd.service").await.expect("start");
            assert_eq!(job.as_str(), "/org/freedesktop/systemd1/job/7");
            peer.await.expect("peer")
        };
        tokio::time::timeout(Duration::from_secs(20), calls)
            .await
            .expect("systemd calls answered within 20s")
    });
    assert_eq!(calls, ["Reload", "StartUnit etcd.service replace"]);
}
