//! Node certificates renewed before they expire, for real: a master (real
//! etcd) and an agent in network namespaces, in a cluster whose node
//! certificates live 60 seconds. The agent renews its certificate at two
//! thirds of its life through the API with its key; the node stays Ready
//! past the old certificate's expiry, its record holds the new serial, the
//! audit log has the renewal, and the agent's followers (its task
//! assignments and task reports, on connections of their own) work with
//! the new certificate after the old one expired.

use std::time::{Duration, SystemTime};

use agent::pki::CertInfo;
use control::audit::AuditRecord;
use control::model::{NodeState, NodeStatus};
use control::task::TaskState;
use qemu_tests::observe::{Hold, Seen};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{ClusterSpec, TestCluster};

const NODES: &[(&str, &str)] = &[("master-1", "master"), ("agent-1", "private")];

/// How long node certificates live in this cluster.
const LIFETIME: u64 = 60;

fn json<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// agent-1's certificate as kept in its identity directory.
fn kept_cert(c: &TestCluster) -> CertInfo {
    let pem = std::fs::read_to_string(c.state_dir("agent-1").join("identity/node.crt"))
        .expect("agent-1's node.crt");
    CertInfo::parse(&pem, "agent-1's certificate").expect("parses")
}

fn agent1(nodes: &[NodeStatus]) -> Option<&NodeStatus> {
    nodes.iter().find(|n| n.record.info.name == "agent-1")
}

#[test]
fn node_certificates_are_renewed_before_they_expire() {
    if !require(
        "host_cert_renewal",
        &[Need::Root, Need::Program("etcd"), Need::Program("ip")],
    ) {
        return;
    }
    let c = TestCluster::new(ClusterSpec {
        nodes: NODES,
        extra_toml: format!("[certificates]\nnode_lifetime_seconds = {LIFETIME}\n"),
        ..ClusterSpec::new("cr", "renewal", "10.83.0")
    });
    let _master = c.spawn_node("master-1", "master.log");
    let agent = c.spawn_node("agent-1", "agent-1.log");
    c.wait_nodes("agent-1 Ready", Duration::from_secs(60), |n| {
        agent1(n).is_some_and(|a| a.state == NodeState::Ready)
    });
    let first = kept_cert(&c);
    let life = first
        .not_after
        .duration_since(SystemTime::now())
        .expect("a fresh certificate");
    assert!(
        life <= Duration::from_secs(LIFETIME),
        "the certificate lives {life:?}, not the cluster's {LIFETIME}s"
    );

    // Renewed at two thirds of its life: a new serial on disk, for the
    // same key, recorded on the node's record.
    let renewed = c.wait(
        "agent-1's certificate renewed",
        Duration::from_secs(LIFETIME),
        || {
            let now = kept_cert(&c);
            (now.serial != first.serial).then_some(now)
        },
    );
    assert!(
        SystemTime::now() >= first.renew_at() - Duration::from_secs(2),
        "renewed before two thirds of its life"
    );
    assert_eq!(
        renewed.key_sha256, first.key_sha256,
        "a renewal keeps the key"
    );
    assert!(renewed.not_after > first.not_after);
    assert!(
        agent.log().contains("node certificate renewed: serial"),
        "{}",
        agent.log()
    );
    let nodes: Vec<NodeStatus> = json(&c.admin_ok(&["node", "list", "--json"]));
    let record = &agent1(&nodes).expect("agent-1 listed").record;
    assert!(
        record
            .certs
            .iter()
            .any(|cert| cert.serial == renewed.serial),
        "the renewal is not recorded: {record:#?}"
    );

    // Past the old certificate's expiry the node stays Ready throughout.
    let expired_at = first.not_after + Duration::from_secs(2);
    let wait = expired_at
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        + Duration::from_secs(4);
    Hold::new("agent-1 Ready past its old certificate's expiry", wait)
        .every(Duration::from_millis(500))
        .check(|| {
            let Ok(text) = c.cli(&["node", "list", "--json"]) else {
                return Seen::Blind("no node list".to_string());
            };
            let nodes: Vec<NodeStatus> = json(&text);
            match agent1(&nodes) {
                Some(a) if a.state == NodeState::Ready => Seen::Holds("Ready".to_string()),
                other => Seen::Broken(format!("{other:#?}")),
            }
        });
    assert!(first.expired(SystemTime::now()));

    // Its followers present the new certificate: a task assigned now
    // reaches the node (the assignments long-poll) and the node reports
    // it (the task reports' client). Its image does not exist, so the
    // report says the node is pulling it or gave up.
    c.admin_ok(&[
        "task",
        "run",
        "--node",
        "agent-1",
        "--image",
        "registry.invalid/none:1",
        "--id",
        "after-expiry",
    ]);
    c.wait(
        "the task reported by agent-1",
        Duration::from_secs(30),
        || {
            c.try_tasks()
                .ok()?
                .into_iter()
                .find(|t| t.id == "after-expiry" && t.state != TaskState::Pending)
        },
    );
    assert!(
        !agent.log().contains("has expired"),
        "a client of the agent presented the expired certificate: {}",
        agent.log()
    );

    // The audit log has the renewal, by the node.
    let log: Vec<AuditRecord> = json(&c.admin_ok(&["audit", "list", "--json"]));
    let renewal = log
        .iter()
        .find(|r| r.operation == "renew_cert" && r.who == "node agent-1")
        .unwrap_or_else(|| panic!("no renewal in the audit log: {log:#?}"));
    assert_eq!(renewal.status, 200);
    assert!(
        renewal.detail.contains(&renewed.serial),
        "{}",
        renewal.detail
    );
}
