//! Who may join and call, for real: one master with a real etcd and three
//! agents (each `strata` process in its own network namespace). A viewer's
//! token reads and cannot deploy or make tokens, and is refused once
//! revoked; a join token with one use admits one node and refuses the
//! next; an expired join token is refused; a removed node (its agent still
//! running, holding the bootstrap token) cannot join again, its old
//! certificate is refused, and it joins with a token made after the
//! removal. An admin runs break-glass commands on a node (`strata node
//! exec`: output, errors, exit code, input, a terminal) and a viewer may
//! not. `strata cluster rotate-certs` replaces the master's and every
//! node's certificate while the API keeps answering. The audit log holds
//! every write with who made it, and only admins read it.

use std::time::Duration;

use agent::api::client::{ApiClient, Auth, ClientError};
use agent::api::tls;
use control::access::{JoinTokenCreated, JoinTokenRecord, TokenState, UserTokenCreated};
use control::audit::AuditRecord;
use control::model::{NodeState, NodeStatus};
use control::rbac::Role;
use qemu_tests::observe::{Hold, Seen};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{ClusterSpec, TestCluster};

const NODES: &[(&str, &str)] = &[
    ("master-1", "master"),
    ("agent-1", "private"),
    ("agent-2", "private"),
    ("agent-3", "private"),
];

fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// The serial of the certificate master-1's API presents to a new
/// connection (from agent-2's namespace).
fn presented_serial(c: &TestCluster, api_port: u16) -> String {
    let ca_pem = c.ca.cert_pem.clone();
    let ip = c.ip("master-1").to_string();
    let ns = agent::overlay::netns::path(c.ns("agent-2"));
    agent::overlay::netns::run_in(Some(&ns), move || {
        Ok(block_on(async move {
            let tls = tls::client_config(&ca_pem, None).expect("tls");
            let tcp = tokio::net::TcpStream::connect((ip.as_str(), api_port))
                .await
                .expect("connect to master-1's API");
            let name = rustls::pki_types::ServerName::try_from(ip.clone()).expect("a name");
            let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
                .connect(name, tcp)
                .await
                .expect("a TLS session with master-1's API");
            let der = stream
                .get_ref()
                .1
                .peer_certificates()
                .expect("certificates")[0]
                .to_vec();
            agent::pki::CertInfo::from_der(&der, "the API's certificate")
                .expect("parses")
                .serial
        }))
    })
    .expect("netns thread")
}

/// Node `name`'s certificate as kept in its identity directory.
fn kept_cert(c: &TestCluster, name: &str) -> agent::pki::CertInfo {
    let pem =
        std::fs::read_to_string(c.state_dir(name).join("identity/node.crt")).expect("node.crt");
    agent::pki::CertInfo::parse(&pem, "the node's certificate").expect("parses")
}

fn json<T: serde::de::DeserializeOwned>(text: &str) -> T {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn state(nodes: &[NodeStatus], name: &str) -> Option<NodeState> {
    nodes
        .iter()
        .find(|n| n.record.info.name == name)
        .map(|n| n.state)
}

fn node<'a>(nodes: &'a [NodeStatus], name: &str) -> &'a NodeStatus {
    nodes
        .iter()
        .find(|n| n.record.info.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

/// Node `name`'s membership health file, as it is now.
fn health(c: &TestCluster, name: &str) -> String {
    std::fs::read_to_string(c.state_dir(name).join("health/cluster.json")).unwrap_or_default()
}

/// Waits until node `name`'s health says it retries with `refusal`.
fn wait_refused(c: &TestCluster, name: &str, refusal: &str) -> String {
    c.wait(
        &format!("{name} refused: {refusal}"),
        Duration::from_secs(30),
        || {
            let h = health(c, name);
            (h.contains("retrying") && h.contains(refusal)).then_some(h)
        },
    )
}

/// `name` is never listed over two seconds.
fn never_listed(c: &TestCluster, name: &str) {
    Hold::new(format!("{name} is never listed"), Duration::from_secs(2))
        .every(Duration::from_millis(250))
        .blind_for(Duration::from_secs(1))
        .check(|| match c.try_nodes() {
            Err(e) => Seen::Blind(e),
            Ok(n) if state(&n, name).is_some() => Seen::Broken(format!("{name} listed: {n:#?}")),
            Ok(n) => Seen::Holds(format!("{} node(s)", n.len())),
        });
}

#[test]
fn join_tokens_roles_and_removal_are_enforced() {
    if !require(
        "host_access",
        &[Need::Root, Need::Program("etcd"), Need::Program("ip")],
    ) {
        return;
    }
    let api_port = 6443;
    let c = TestCluster::new(ClusterSpec {
        nodes: NODES,
        extra_toml: format!("api_port = {api_port}\n"),
        ..ClusterSpec::new("sa", "access", "10.81.0")
    });
    let _master = c.spawn_node("master-1", "master.log");
    // agent-1 joins with the bootstrap token of its user-data.
    let mut agent1 = c.spawn_node("agent-1", "agent-1.log");
    let nodes = c.wait_nodes("master-1 and agent-1 Ready", Duration::from_secs(60), |n| {
        state(n, "master-1") == Some(NodeState::Ready)
            && state(n, "agent-1") == Some(NodeState::Ready)
    });
    let agent1_key = node(&nodes, "agent-1").record.key_sha256.clone();
    assert_eq!(
        node(&nodes, "agent-1").record.certs.len(),
        1,
        "the join recorded the certificate: {nodes:#?}"
    );

    // The bootstrap records: the CLI token is an admin's, the join token
    // is unlimited.
    let users: Vec<control::access::UserTokenRecord> =
        json(&c.admin_ok(&["user", "token", "list", "--json"]));
    assert!(
        users.iter().any(|u| u.bootstrap && u.role == Role::Admin),
        "{users:#?}"
    );
    let joins: Vec<JoinTokenRecord> = json(&c.admin_ok(&["cluster", "token", "list", "--json"]));
    assert!(
        joins.iter().any(|t| t.bootstrap && t.uses_left.is_none()),
        "{joins:#?}"
    );

    // A viewer reads, and cannot deploy or make tokens.
    let viewer_ctx = c.dir().join("viewer.toml");
    let created: UserTokenCreated = json(&c.admin_ok(&[
        "user",
        "token",
        "create",
        "--role",
        "viewer",
        "--name",
        "ci",
        "--write-context",
        &viewer_ctx.display().to_string(),
        "--json",
    ]));
    assert_eq!(created.record.role, Role::Viewer);
    let listed = c
        .cli_as(&viewer_ctx, &["node", "list", "--json"])
        .expect("a viewer lists nodes");
    let listed: Vec<NodeStatus> = json(&listed);
    assert_eq!(state(&listed, "agent-1"), Some(NodeState::Ready));
    let refused = c
        .cli_as(
            &viewer_ctx,
            &[
                "task",
                "run",
                "--node",
                "agent-1",
                "--image",
                "registry.invalid/busybox:1",
            ],
        )
        .expect_err("a viewer cannot run tasks");
    assert!(
        refused.contains(
            "(403): this token's role `viewer` may not run tasks (roles that may: admin, operator)"
        ),
        "{refused}"
    );
    let refused = c
        .cli_as(&viewer_ctx, &["audit", "list"])
        .expect_err("a viewer cannot read the audit log");
    assert!(
        refused.contains(
            "(403): this token's role `viewer` may not read the audit log (roles that may: admin)"
        ),
        "{refused}"
    );
    let refused = c
        .cli_as(&viewer_ctx, &["cluster", "token", "create"])
        .expect_err("a viewer cannot make join tokens");
    assert!(
        refused.contains("(403): this token's role `viewer` may not manage join tokens"),
        "{refused}"
    );
    let refused = c
        .cli_as(&viewer_ctx, &["node", "exec", "agent-1", "--", "true"])
        .expect_err("a viewer cannot run commands on nodes");
    assert!(
        refused.contains(
            "(403): this token's role `viewer` may not run commands on nodes (roles that may: admin)"
        ),
        "{refused}"
    );
    assert!(c.try_tasks().expect("tasks").is_empty(), "no task was made");

    // Break-glass: an admin runs a command on agent-1, in its namespaces
    // (its address shows), and gets its output, its errors and its code.
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let ran = c.admin_run(
        &[
            "node",
            "exec",
            "agent-1",
            "--",
            "sh",
            "-c",
            "ip -4 -o addr show; echo to-stderr >&2; exit 7",
        ],
        None,
    );
    let (out, err) = (text(&ran.stdout), text(&ran.stderr));
    assert_eq!(ran.status.code(), Some(7), "{out}{err}");
    assert!(out.contains(&format!(" {}/", c.ip("agent-1"))), "{out}");
    assert_eq!(err, "to-stderr\n");
    // Input with -i; a terminal with -t.
    let ran = c.admin_run(
        &["node", "exec", "-i", "agent-1", "--", "cat"],
        Some(b"ping\n"),
    );
    assert_eq!(
        (ran.status.code(), text(&ran.stdout).as_str()),
        (Some(0), "ping\n"),
        "{}",
        text(&ran.stderr)
    );
    let ran = c.admin_run(&["node", "exec", "-t", "agent-1", "--", "tty"], None);
    assert!(
        ran.status.success() && text(&ran.stdout).starts_with("/dev/pts/"),
        "{}{}",
        text(&ran.stdout),
        text(&ran.stderr)
    );
    // A program the node lacks, and a node the cluster lacks, are named.
    let ran = c.admin_run(&["node", "exec", "agent-1", "--", "/no/such/tool"], None);
    assert!(
        !ran.status.success()
            && text(&ran.stderr).contains("cannot run `/no/such/tool`: No such file or directory"),
        "{}",
        text(&ran.stderr)
    );
    let ran = c.admin_run(&["node", "exec", "nowhere", "--", "true"], None);
    assert!(
        !ran.status.success() && text(&ran.stderr).contains("(404): no node named `nowhere`"),
        "{}",
        text(&ran.stderr)
    );

    // Revoked, the viewer's token is refused by every route.
    c.admin_ok(&["user", "token", "revoke", &created.record.id]);
    let refused = c.wait(
        "the revoked viewer refused",
        Duration::from_secs(10),
        || c.cli_as(&viewer_ctx, &["node", "list"]).err(),
    );
    assert!(
        refused.contains("(401): the bearer token") && refused.contains("was revoked"),
        "{refused}"
    );

    // A join token with one use admits agent-2 and refuses agent-3.
    let once: JoinTokenCreated = json(&c.admin_ok(&[
        "cluster",
        "token",
        "create",
        "--uses",
        "1",
        "--description",
        "one node",
        "--json",
    ]));
    let ud = c.user_data_with("agent-2", &once.token, "agent-2-once.toml");
    let _agent2 = c.spawn(c.ns("agent-2"), &ud, &c.state_dir("agent-2"), "agent-2.log");
    c.wait_nodes("agent-2 Ready", Duration::from_secs(60), |n| {
        state(n, "agent-2") == Some(NodeState::Ready)
    });
    let ud = c.user_data_with("agent-3", &once.token, "agent-3-once.toml");
    let mut agent3 = c.spawn(c.ns("agent-3"), &ud, &c.state_dir("agent-3"), "agent-3.log");
    let h = wait_refused(&c, "agent-3", "is used up");
    assert!(
        h.contains(&format!("join token {} is used up", once.record.id)),
        "{h}"
    );
    never_listed(&c, "agent-3");
    let joins: Vec<JoinTokenRecord> = json(&c.admin_ok(&["cluster", "token", "list", "--json"]));
    let used = joins
        .iter()
        .find(|t| t.id == once.record.id)
        .expect("the token is listed");
    assert_eq!((used.used, used.uses_left), (1, Some(0)), "{used:?}");
    let table = c.admin_ok(&["cluster", "token", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&once.record.id) && l.contains("used up") && l.contains("1/1")),
        "{table}"
    );

    // An expired join token is refused.
    let short: JoinTokenCreated =
        json(&c.admin_ok(&["cluster", "token", "create", "--ttl", "1s", "--json"]));
    std::thread::sleep(Duration::from_millis(2500));
    agent3.kill();
    let _ = std::fs::remove_file(c.state_dir("agent-3").join("health/cluster.json"));
    let ud = c.user_data_with("agent-3", &short.token, "agent-3-short.toml");
    let _agent3 = c.spawn(
        c.ns("agent-3"),
        &ud,
        &c.state_dir("agent-3"),
        "agent-3-short.log",
    );
    let h = wait_refused(&c, "agent-3", "expired at unix time");
    assert!(
        h.contains(&format!("join token {} expired", short.record.id)),
        "{h}"
    );
    never_listed(&c, "agent-3");

    // agent-1 removed: its certificate is revoked, and its agent, still
    // running with the bootstrap token, cannot join again.
    let identity = c.state_dir("agent-1").join("identity");
    let old_cert = std::fs::read_to_string(identity.join("node.crt")).expect("node.crt");
    let old_key = std::fs::read_to_string(identity.join("node.key")).expect("node.key");
    c.admin_ok(&["node", "remove", "agent-1"]);
    let h = wait_refused(&c, "agent-1", "was removed from the cluster");
    assert!(
        h.contains("node `agent-1` was removed from the cluster at unix time"),
        "{h}"
    );
    never_listed(&c, "agent-1");
    // Its old certificate is refused on every route, even the one every
    // node may call.
    let ca_pem = c.ca.cert_pem.clone();
    let endpoint = format!("{}:{api_port}", c.ip("master-1"));
    let ns = agent::overlay::netns::path(c.ns("agent-1"));
    let refused = agent::overlay::netns::run_in(Some(&ns), move || {
        Ok(block_on(async move {
            let tls = tls::client_config(&ca_pem, Some((&old_cert, &old_key))).expect("tls");
            let client = ApiClient::new(vec![endpoint], tls, Auth::Tls);
            client.watch_nodes(0).await.map(|_| ())
        }))
    })
    .expect("netns thread")
    .expect_err("a revoked certificate is refused");
    assert!(
        matches!(&refused, ClientError::Api { status: 403, code: Some(code), .. } if code == "cert-revoked"),
        "{refused}"
    );

    // With a token made after the removal it joins again, with its key.
    let fresh: JoinTokenCreated = json(&c.admin_ok(&["cluster", "token", "create", "--json"]));
    agent1.kill();
    let ud = c.user_data_with("agent-1", &fresh.token, "agent-1-fresh.toml");
    let _agent1 = c.spawn(
        c.ns("agent-1"),
        &ud,
        &c.state_dir("agent-1"),
        "agent-1-again.log",
    );
    let nodes = c.wait_nodes("agent-1 Ready again", Duration::from_secs(60), |n| {
        state(n, "agent-1") == Some(NodeState::Ready)
    });
    assert_eq!(node(&nodes, "agent-1").record.key_sha256, agent1_key);

    // A node keeps the role it joined with: agent-1 registering as a
    // public agent (which would hand it the edge's keys) is refused.
    let mut info = node(&nodes, "agent-1").record.info.clone();
    assert_eq!(info.role, configs::Role::Private);
    info.role = configs::Role::Public;
    let cert = std::fs::read_to_string(identity.join("node.crt")).expect("node.crt");
    let key = std::fs::read_to_string(identity.join("node.key")).expect("node.key");
    let (ca_pem, endpoint) = (
        c.ca.cert_pem.clone(),
        format!("{}:{api_port}", c.ip("master-1")),
    );
    let refused = agent::overlay::netns::run_in(Some(&ns), move || {
        Ok(block_on(async move {
            let tls = tls::client_config(&ca_pem, Some((&cert, &key))).expect("tls");
            let client = ApiClient::new(vec![endpoint], tls, Auth::Tls);
            client.register(&info).await.map(|_| ())
        }))
    })
    .expect("netns thread")
    .expect_err("a registration with another role is refused");
    assert!(
        matches!(&refused, ClientError::Api { status: 409, code: Some(code), .. } if code == "role-changed")
            && refused
                .to_string()
                .contains("node `agent-1` joined as private and registers as public"),
        "{refused}"
    );

    // Revoked, a join token shows so.
    c.admin_ok(&["cluster", "token", "revoke", &fresh.record.id]);
    let joins: Vec<JoinTokenRecord> = json(&c.admin_ok(&["cluster", "token", "list", "--json"]));
    let revoked = joins
        .iter()
        .find(|t| t.id == fresh.record.id)
        .expect("listed");
    assert_eq!(revoked.state(u64::MAX), TokenState::Revoked);

    // `strata cluster rotate-certs`: the master replaces the certificate
    // its API presents without a restart, every node renews at once (its
    // certificate lives a year, far from two thirds), keeping its key, and
    // the API answers throughout.
    let api_before = presented_serial(&c, api_port);
    let node_before = kept_cert(&c, "agent-2");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (progress, failures) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut failures = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Err(e) = c.cli(&["node", "list"]) {
                    failures.push(e);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            failures
        });
        let rotated = c.cli_as(
            &c.context,
            &["cluster", "rotate-certs", "--timeout", "60s", "--json"],
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let failures = watcher.join().expect("the watcher does not panic");
        let rotated = rotated.unwrap_or_else(|e| panic!("strata cluster rotate-certs: {e}"));
        (json::<serde_json::Value>(&rotated), failures)
    });
    assert!(
        failures.is_empty(),
        "the API failed during the rotation: {failures:#?}"
    );
    assert_eq!(
        (&progress["masters_renewed"], &progress["nodes_renewed"]),
        (&serde_json::json!(1), &serde_json::json!(3)),
        "{progress:#}"
    );
    let at = progress["rotation"]["at"]
        .as_u64()
        .expect("the rotation's time");
    assert_ne!(
        presented_serial(&c, api_port),
        api_before,
        "the API presents its old certificate"
    );
    let node_after = kept_cert(&c, "agent-2");
    assert_ne!(node_after.serial, node_before.serial);
    assert_eq!(
        node_after.key_sha256, node_before.key_sha256,
        "a renewal keeps the key"
    );
    assert!(node_after.signed_at_unix() >= at);
    let status: control::model::ClusterStatus = json(&c.admin_ok(&["cluster", "status", "--json"]));
    assert_eq!(status.cert_rotation.as_ref().map(|r| r.at), Some(at));
    assert!(
        status
            .master_certs
            .get("master-1")
            .is_some_and(|m| m.issued_at >= at),
        "{status:#?}"
    );
    let nodes: Vec<NodeStatus> = json(&c.admin_ok(&["node", "list", "--json"]));
    assert_eq!(state(&nodes, "agent-2"), Some(NodeState::Ready));

    // The audit log holds every write above with who made it, refused
    // ones too, and no reads or node telemetry.
    let log: Vec<AuditRecord> = json(&c.admin_ok(&["audit", "list", "--limit", "1000", "--json"]));
    let find = |what: &str, pred: &dyn Fn(&AuditRecord) -> bool| -> AuditRecord {
        log.iter()
            .find(|r| pred(r))
            .unwrap_or_else(|| panic!("no audit record of {what}: {log:#?}"))
            .clone()
    };
    let viewer_try = find("the viewer's task run", &|r| r.operation == "create_task");
    assert_eq!(
        (viewer_try.who.as_str(), viewer_try.role, viewer_try.status),
        (
            format!("user token {} (ci)", created.record.id).as_str(),
            Some(Role::Viewer),
            403
        ),
        "{viewer_try:#?}"
    );
    let viewer_token = find("the viewer's token", &|r| {
        r.operation == "create_user_token" && r.status == 200
    });
    assert_eq!(viewer_token.role, Some(Role::Admin), "{viewer_token:#?}");
    assert!(
        viewer_token.who.starts_with("user token "),
        "{viewer_token:#?}"
    );
    let join2 = find("agent-2's join", &|r| {
        r.operation == "join" && r.detail.starts_with("node agent-2 ")
    });
    assert_eq!(join2.who, format!("join token {}", once.record.id));
    assert_eq!((join2.status, join2.from.as_str()), (200, c.ip("agent-2")));
    let removal = find("agent-1's removal", &|r| r.operation == "remove_node");
    assert_eq!(
        (removal.path.as_str(), removal.status, removal.role),
        (
            control::api::REMOVE_NODE.fill(&["agent-1"]).as_str(),
            200,
            Some(Role::Admin)
        )
    );
    let exec = find("the admin's exec on agent-1", &|r| {
        r.operation == "exec_node" && r.status == 101 && r.detail.contains(": sh -c ")
    });
    assert_eq!(exec.role, Some(Role::Admin), "{exec:#?}");
    assert!(
        exec.detail
            .contains("on node agent-1: sh -c 'ip -4 -o addr show; echo to-stderr >&2; exit 7'"),
        "{exec:#?}"
    );
    let rotation = find("the rotation", &|r| r.operation == "rotate_certs");
    assert_eq!((rotation.status, rotation.role), (200, Some(Role::Admin)));
    let viewer_exec = find("the viewer's exec", &|r| {
        r.operation == "exec_node" && r.status == 403
    });
    assert_eq!(viewer_exec.role, Some(Role::Viewer), "{viewer_exec:#?}");
    find("agent-1's registration", &|r| {
        r.operation == "register" && r.who == "node agent-1"
    });
    find("agent-1's refused change of role", &|r| {
        r.operation == "register" && r.who == "node agent-1" && r.status == 409
    });
    find("the revocation of the fresh token", &|r| {
        r.operation == "revoke_join_token" && r.path.ends_with(&fresh.record.id)
    });
    assert!(
        log.iter().all(|r| r.method != "GET"
            && r.operation != "heartbeat"
            && r.operation != "report_task"
            && r.master == "master-1"),
        "{log:#?}"
    );
    assert!(
        log.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        "oldest first"
    );
    let refused_only = c.admin_ok(&["audit", "list", "--refused"]);
    let rows: Vec<&str> = refused_only.lines().skip(1).collect();
    assert!(
        !rows.is_empty()
            && rows
                .iter()
                .all(|l| l.contains(" 403 ") || l.contains(" 404 ") || l.contains(" 409 ")),
        "{refused_only}"
    );
    assert!(refused_only.contains("POST /v1/tasks"), "{refused_only}");
}
