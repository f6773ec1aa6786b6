//! The API fuzzed from its own OpenAPI document (`docs/api.yaml`) with
//! schemathesis, against a real master (real etcd, TLS) and a joined agent
//! in network namespaces: every operation gets generated requests, valid
//! and invalid, once with the agent's node certificate and then with an
//! admin's bearer token. No answer may be a 5xx, and every answer must
//! have a documented status, content type and body shape; the master must
//! still be up, answering and unpanicked at the end.
//!
//! schemathesis comes from PyPI: `cargo xtask test` installs it in a
//! virtual environment (`target/schemathesis`) and puts its `st` on the
//! host tier's `PATH`.

use std::path::Path;
use std::time::Duration;

use control::model::{NodeState, NodeStatus};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{ClusterSpec, TestCluster};

const NODES: &[(&str, &str)] = &[("master-1", "master"), ("agent-1", "private")];

/// Generated requests per operation and credential.
const EXAMPLES: &str = "40";

fn agent1_ready(nodes: &[NodeStatus]) -> bool {
    nodes
        .iter()
        .any(|n| n.record.info.name == "agent-1" && n.state == NodeState::Ready)
}

/// The long-polls: a generated revision ahead of the cluster's waits out
/// the master's 20 s, so they get the coverage phase's requests only.
const LONG_POLLS: [&str; 2] = ["watch_nodes", "watch_assignments"];

/// Runs schemathesis in the master's namespace against `url` with `auth`
/// (its own arguments), twice: every operation but the long-polls in the
/// coverage and fuzzing phases, then the long-polls in the coverage phase.
/// Its output, or a panic with it.
fn schemathesis(c: &TestCluster, url: &str, ca: &Path, auth: &[&str], what: &str) -> String {
    let mut out = String::new();
    let mut others = Vec::new();
    let mut polls = Vec::new();
    for op in LONG_POLLS {
        others.extend(["--exclude-operation-id", op]);
        polls.extend(["--include-operation-id", op]);
    }
    others.extend(["--phases", "coverage,fuzzing"]);
    polls.extend(["--phases", "coverage"]);
    for filter in [others, polls] {
        let mut args = auth.to_vec();
        args.extend(filter);
        out.push_str(&schemathesis_run(c, url, ca, &args, what));
    }
    out
}

/// One run of schemathesis with `extra` arguments.
fn schemathesis_run(c: &TestCluster, url: &str, ca: &Path, extra: &[&str], what: &str) -> String {
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.yaml");
    let ca = ca.display().to_string();
    let mut args = vec![
        "netns",
        "exec",
        c.ns("master-1"),
        "st",
        "run",
        spec,
        "--url",
        url,
        "--tls-verify",
        &ca,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples",
        EXAMPLES,
        // One worker: Python 3.11's compiler is not safe for the threads
        // that more workers use (schemathesis then fails with "AST
        // constructor recursion depth mismatch").
        "--workers",
        "1",
        "--request-timeout",
        "30",
        "--suppress-health-check",
        "all",
        "--no-color",
    ];
    args.extend_from_slice(extra);
    // In the test's directory: schemathesis keeps a cache where it runs.
    let out = std::process::Command::new("ip")
        .current_dir(c.dir())
        .args(&args)
        .output()
        .expect("ip netns exec st");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("schemathesis, {what}:\n{text}");
    assert!(
        out.status.success(),
        "schemathesis found failures ({what}): see above"
    );
    text
}

#[test]
fn the_api_answers_generated_requests_as_documented() {
    if !require(
        "host_api_schema",
        &[
            Need::Root,
            Need::Program("etcd"),
            Need::Program("ip"),
            Need::Program("st"),
        ],
    ) {
        return;
    }
    let api_port = 6443;
    let c = TestCluster::new(ClusterSpec {
        nodes: NODES,
        extra_toml: format!("api_port = {api_port}\n"),
        ..ClusterSpec::new("sc", "schema", "10.84.0")
    });
    let _master = c.spawn_node("master-1", "master.log");
    let _agent = c.spawn_node("agent-1", "agent-1.log");
    c.wait_nodes("agent-1 Ready", Duration::from_secs(60), agent1_ready);

    let url = format!("https://{}:{api_port}", c.ip("master-1"));
    let ca = c.dir().join("ca.pem");
    std::fs::write(&ca, &c.ca.cert_pem).expect("ca.pem");
    // The admin's token, as the CLI context holds it.
    let context = std::fs::read_to_string(&c.context).expect("the context");
    let token_file = context
        .lines()
        .find_map(|l| l.strip_prefix("token_file = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .expect("the context names its token file");
    let token_path = c.context.with_file_name(token_file);
    let token = std::fs::read_to_string(&token_path).expect("the token");
    // As the node first: the admin's requests may remove it.
    let identity = c.state_dir("agent-1").join("identity");
    let cert = identity.join("node.crt").display().to_string();
    let key = identity.join("node.key").display().to_string();
    schemathesis(
        &c,
        &url,
        &ca,
        &["--request-cert", &cert, "--request-cert-key", &key],
        "agent-1's certificate",
    );

    let bearer = format!("Authorization: Bearer {}", token.trim());
    schemathesis(&c, &url, &ca, &["-H", &bearer], "an admin's token");

    // Still up and answering: with the cluster's admin context, which the
    // admin's generated requests may have revoked (as an admin may), so a
    // refusal from the master counts as an answer.
    let answered = match c.cli(&["cluster", "status", "--json"]) {
        Ok(status) => status.contains("master-1"),
        Err(refused) => refused.contains("refused the request (401)"),
    };
    assert!(answered, "the master does not answer after the run");
    let master_log = c.log("master.log");
    assert!(
        !master_log.contains("panicked"),
        "the master panicked: {master_log}"
    );
}
