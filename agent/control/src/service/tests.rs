use expect_test::{Expect, expect};

use super::*;
use crate::app::record::InstanceOf;
use crate::model::TaskRecord;

/// An app from Strata's TOML, stored at version 1.
fn app(toml: &str) -> AppRecord {
    let spec = crate::app::read("a.toml", toml)
        .expect("a valid app")
        .apps
        .remove(0);
    serde_json::from_value(serde_json::json!({
        "spec": spec, "version": 1, "config_version": 1, "created_at": 0, "updated_at": 0,
    }))
    .expect("an app record")
}

fn node(name: &str, state: &str) -> NodeStatus {
    serde_json::from_value(serde_json::json!({
        "name": name, "role": "private", "addresses": ["10.9.0.21"], "cpus": 2,
        "memory_bytes": 1u64 << 31, "disk_bytes": 1u64 << 34, "key_sha256": "k",
        "joined_at": 0, "registered_at": 0, "state": state,
    }))
    .expect("a node status")
}

/// One instance of `app` on `node` at `addr` (host port 10000 where one
/// is asked for), reported as `state` with `health`.
struct Instance<'a> {
    id: &'a str,
    node: &'a str,
    addr: &'a str,
    state: &'a str,
    health: Option<&'a str>,
    stopping: bool,
}

fn world(
    app: &AppRecord,
    instances: &[Instance<'_>],
) -> (BTreeMap<String, TaskRecord>, BTreeMap<String, TaskReport>) {
    let mut tasks = BTreeMap::new();
    let mut reports = BTreeMap::new();
    for i in instances {
        let ports: Vec<Option<u16>> = app.spec.ports.iter().map(|_| Some(10000)).collect();
        let spec = crate::app::instance::task_spec(&app.spec, i.id, 1, &ports);
        tasks.insert(
            i.id.to_string(),
            TaskRecord {
                format: Default::default(),
                node: i.node.into(),
                spec,
                created_at: 0,
                instance_of: Some(InstanceOf {
                    app: app.spec.id.clone(),
                    version: 1,
                    disk_mib: 0,
                }),
                host_ports: vec![10000],
                stopping: i.stopping,
                stopping_since: None,
                run_of: None,
            },
        );
        reports.insert(
            i.id.to_string(),
            serde_json::from_value(serde_json::json!({
                "state": i.state, "address": i.addr, "health": i.health, "at": 0,
            }))
            .expect("a report"),
        );
    }
    (tasks, reports)
}

fn check(apps: &[AppRecord], instances: &[Instance<'_>], nodes: &[NodeStatus], expected: Expect) {
    let (tasks, reports) = world(&apps[0], instances);
    let mut out = String::new();
    for s in services(apps, &tasks, &reports, nodes) {
        let expose: Vec<String> = s.expose.iter().map(ToString::to_string).collect();
        let vips: Vec<String> = s.vips.iter().map(ToString::to_string).collect();
        out += &format!(
            "{} ports[{}] {:?} expose [{}] vips [{}]{}\n",
            s.app,
            s.port,
            s.protocol,
            expose.join(", "),
            vips.join(", "),
            if s.checked { " checked" } else { "" }
        );
        for b in &s.backends {
            out += &format!("  {} on {} at {} {:?}\n", b.task, b.node, b.addr, b.state);
        }
    }
    expected.assert_eq(&out);
}

const CHECKED_WEB: &str = "id = \"/shop/web\"\nimage = \"nginx:1\"\n\
    [[ports]]\ncontainer_port = 8080\nvips = [\"web:80\"]\nexpose = [{ host = \"shop.test\" }]\n\
    [[ports]]\ncontainer_port = 9000\n\
    [[health_checks]]\nprotocol = \"http\"\nport_index = 0\n";

#[test]
fn ready_is_running_not_stopping_healthy_on_a_ready_node() {
    let web = app(CHECKED_WEB);
    let at = |id, node, addr, health, stopping| Instance {
        id,
        node,
        addr,
        state: "running",
        health,
        stopping,
    };
    check(
        &[web],
        &[
            at("web.1", "agent-1", "10.200.1.2", Some("healthy"), false),
            at("web.2", "agent-1", "10.200.1.3", Some("unhealthy"), false),
            at("web.3", "agent-2", "10.200.2.2", Some("healthy"), false),
            at("web.4", "agent-1", "10.200.1.4", None, false),
            at("web.5", "agent-1", "10.200.1.5", Some("healthy"), true),
            Instance {
                state: "starting",
                ..at("web.6", "agent-1", "10.200.1.6", None, false)
            },
        ],
        &[node("agent-1", "ready"), node("agent-2", "unreachable")],
        expect![[r#"
            /shop/web ports[0] Tcp expose [http://shop.test/] vips [web:80] checked
              web.1 on agent-1 at 10.200.1.2:8080 Ready
              web.2 on agent-1 at 10.200.1.3:8080 Down
              web.3 on agent-2 at 10.200.2.2:8080 Down
              web.4 on agent-1 at 10.200.1.4:8080 Down
              web.5 on agent-1 at 10.200.1.5:8080 Draining
        "#]],
    );
}

#[test]
fn host_networked_ports_resolve_per_instance() {
    // No container port: each instance listens on the host port it was
    // given; an unchecked app's running instances are ready.
    let api = app(
        "id = \"/api\"\nimage = \"nginx:1\"\n[[ports]]\nhost_port = 0\nexpose = [{ tcp = 10100 }]\n",
    );
    check(
        &[api],
        &[Instance {
            id: "api.1",
            node: "agent-1",
            addr: "10.200.1.2",
            state: "running",
            health: None,
            stopping: false,
        }],
        &[node("agent-1", "ready")],
        expect![[r#"
            /api ports[0] Tcp expose [tcp :10100] vips []
              api.1 on agent-1 at 10.200.1.2:10000 Ready
        "#]],
    );
}

#[test]
fn services_from_a_newer_master_read() {
    let json = r#"{"app": "/a", "port": 0, "protocol": "sctp", "expose": [{"kind": "quic"}],
        "vips": ["a:80"], "backends": [{"task": "a.1", "node": "n", "addr": "10.200.1.2:80",
        "state": "warming", "weight": 3}], "future": true}"#;
    let s: Service = serde_json::from_str(json).expect("reads");
    assert_eq!(s.backends[0].state, BackendState::Unknown);
    assert_eq!(s.ready().count(), 0);
}
