//! Update bundles and upgrade orders on the host: a real etcd, three
//! masters and two agents as real `strata cluster run-node` processes in
//! network namespaces, the master's update key the harness's own.
//!
//! - `strata bundle push` keeps a bundle signed with the update key, under
//!   its digest, and `bundle list` shows it; the other masters copy it
//!   and are recorded among its holders; a tampered, a truncated and a
//!   wrongly signed bundle are refused with the reason, and nothing is
//!   kept;
//! - a node downloads a bundle with its certificate, and a download cut
//!   short goes on from where it stopped (`Range`); an unknown digest is
//!   answered 404, a path that is not a digest 400;
//! - `node upgrade` refuses a version no bundle of the node's role has,
//!   and a bundle of another role;
//! - an order reaches the node through its assignment watch and the node
//!   reports back: these agents run outside an image, so the order fails
//!   with that reason, which `node upgrade --wait` prints and exits on;
//!   `node show` keeps the order with its outcome;
//! - `cluster upgrade` is refused without a bundle for every role it
//!   upgrades; over the private agents it drains agent-1 and orders it,
//!   halts there when its upgrade fails, keeps that in etcd
//!   (`--status`), and `--resume` tries the node again.
//!
//! Root only.

use std::collections::BTreeMap;
use std::time::Duration;

use agent::api::client::{ApiClient, Auth, ClientError, TransferError};
use agent::api::tls;
use control::model::NodeState;
use control::upgrade::BundleRecord;
use image::bundle::{PART_ROOT, PART_UKI, PART_VERITY};
use image::manifest::{Digest, Manifest};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{ClusterSpec, TestCluster};

/// A bundle of `version` for `role`, signed with `key`.
fn bundle(role: configs::Role, version: &str, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    let root: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let verity = vec![7u8; 64 << 10];
    let uki = b"MZ not a real UKI".to_vec();
    let digest = |name: &str, b: &[u8]| Digest {
        name: name.into(),
        size: b.len() as u64,
        sha256: image::sha256_hex(b),
    };
    let hash = "ab".repeat(32);
    let m = Manifest {
        format: image::manifest::FORMAT,
        version: version.into(),
        role,
        kernel: "linux 6.1".into(),
        source_date_epoch: 1,
        root_hash: hash.clone(),
        verity_salt: "00".repeat(32),
        cmdline: format!("roothash={hash}"),
        packages: BTreeMap::new(),
        partitions: vec![],
        parts: vec![
            digest(PART_ROOT, &root),
            digest(PART_VERITY, &verity),
            digest(PART_UKI, &uki),
        ],
        artifacts: vec![],
    };
    let mut out = Vec::new();
    image::bundle::write(
        &mut out,
        &m,
        key,
        &mut [
            (PART_ROOT, &mut &root[..]),
            (PART_VERITY, &mut &verity[..]),
            (PART_UKI, &mut &uki[..]),
        ],
    )
    .expect("a bundle");
    out
}

/// Three masters (an etcd quorum), so that a bundle pushed to one is
/// copied to the others.
const NODES: &[(&str, &str)] = &[
    ("master-1", "master"),
    ("master-2", "master"),
    ("master-3", "master"),
    ("agent-1", "private"),
    ("agent-2", "public"),
];

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn bundles_are_kept_served_and_ordered() {
    if !require(
        "host_upgrades",
        &[Need::Root, Need::Program("etcd"), Need::Program("ip")],
    ) {
        return;
    }
    let api_port = 6443;
    let c = TestCluster::new(ClusterSpec {
        extra_toml: format!("api_port = {api_port}\n"),
        nodes: NODES,
        ..ClusterSpec::new("up", "upgrades", "10.78.0")
    });
    let _master = c.spawn_node("master-1", "master.log");
    let _master2 = c.spawn_node("master-2", "master-2.log");
    let _master3 = c.spawn_node("master-3", "master-3.log");
    let agent1 = c.spawn_node("agent-1", "agent-1.log");
    let _agent2 = c.spawn_node("agent-2", "agent-2.log");
    c.wait_nodes("all nodes Ready", Duration::from_secs(90), |nodes| {
        NODES.iter().all(|(n, _)| {
            nodes
                .iter()
                .any(|s| s.record.info.name == *n && s.state == NodeState::Ready)
        })
    });

    // Pushed, verified, kept under its digest.
    let good = bundle(configs::Role::Private, "0.2.0", &c.update_key);
    let file = c.dir().join("good.update");
    std::fs::write(&file, &good).expect("write the bundle");
    let pushed: BundleRecord = serde_json::from_str(&c.admin_ok(&[
        "bundle",
        "push",
        file.to_str().expect("utf-8"),
        "--json",
    ]))
    .expect("push answers JSON");
    assert_eq!(pushed.sha256, image::sha256_hex(&good));
    assert_eq!(pushed.version, "0.2.0");
    assert_eq!(pushed.size, good.len() as u64);
    let first = pushed.holders[0].clone();
    let kept = |master: &str| {
        c.state_dir(master)
            .join("bundles")
            .join(format!("{}.bundle", pushed.sha256))
    };
    assert_eq!(
        std::fs::read(kept(&first)).expect("the master keeps it"),
        good
    );
    // The other masters copy it, verify it and say so in the record.
    let holders = c.wait(
        "every master holds the bundle",
        Duration::from_secs(60),
        || {
            let list: Vec<BundleRecord> =
                serde_json::from_str(&c.cli(&["bundle", "list", "--json"]).ok()?).ok()?;
            let b = list.into_iter().find(|b| b.sha256 == pushed.sha256)?;
            (b.holders.len() == 3).then_some(b.holders)
        },
    );
    assert_eq!(holders, ["master-1", "master-2", "master-3"]);
    for m in ["master-1", "master-2", "master-3"] {
        assert_eq!(
            std::fs::read(kept(m)).expect("each master keeps it"),
            good,
            "{m}"
        );
    }
    let list = c.admin_ok(&["bundle", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("0.2.0") && l.contains("private") && l.contains(&pushed.sha256)),
        "{list}"
    );

    // Bad bundles: refused with the reason, nothing kept.
    let mut tampered = good.clone();
    let n = tampered.len();
    tampered[n / 2] ^= 0x55;
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[0xee; 32]);
    for (name, bytes, expected) in [
        (
            "tampered",
            tampered,
            "bundle part `root.erofs` is corrupted",
        ),
        ("truncated", good[..n / 3].to_vec(), "truncated"),
        (
            "foreign",
            bundle(configs::Role::Private, "0.3.0", &other_key),
            "not signed with this key",
        ),
    ] {
        let file = c.dir().join(format!("{name}.update"));
        std::fs::write(&file, bytes).expect("write a bad bundle");
        let e = c
            .cli_as(
                &c.context,
                &["bundle", "push", file.to_str().expect("utf-8")],
            )
            .expect_err("a bad bundle is refused");
        assert!(
            e.contains("bundle refused") && e.contains(expected),
            "{name}: {e}"
        );
    }
    let kept: Vec<String> = std::fs::read_dir(c.state_dir(&first).join("bundles"))
        .expect("the bundle directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(kept, [format!("{}.bundle", pushed.sha256)], "{kept:?}");

    // A node downloads it with its certificate, and a cut-short download
    // goes on from where it stopped.
    let identity = c.state_dir("agent-1").join("identity");
    let cert = std::fs::read_to_string(identity.join("node.crt")).expect("node.crt");
    let key = std::fs::read_to_string(identity.join("node.key")).expect("node.key");
    let ca_pem = c.ca.cert_pem.clone();
    let endpoint = format!("{}:{api_port}", c.ip("master-1"));
    let dest = c.dir().join("download.part");
    std::fs::write(&dest, &good[..1000]).expect("a partial download");
    let (sha, dest2) = (pushed.sha256.clone(), dest.clone());
    let ns = agent::overlay::netns::path(c.ns("agent-1"));
    let (resumed, missing, bad) = agent::overlay::netns::run_in(Some(&ns), move || {
        Ok(block_on(async move {
            let tls = tls::client_config(&ca_pem, Some((&cert, &key))).expect("tls");
            let client = ApiClient::new(vec![endpoint], tls, Auth::Tls);
            let path = control::api::FETCH_BUNDLE.fill(&[&sha]);
            let resumed = client.download(&path, &dest2, |_, _| {}).await;
            let missing = client
                .download(
                    &control::api::FETCH_BUNDLE.fill(&[&"0".repeat(64)]),
                    &dest2.with_extension("missing"),
                    |_, _| {},
                )
                .await;
            let bad = client
                .download(
                    &control::api::FETCH_BUNDLE.fill(&["..%2Fetc"]),
                    &dest2.with_extension("bad"),
                    |_, _| {},
                )
                .await;
            (resumed, missing, bad)
        }))
    })
    .expect("netns thread");
    assert_eq!(resumed.expect("the download resumes"), good.len() as u64);
    assert_eq!(std::fs::read(&dest).expect("downloaded"), good);
    assert!(
        matches!(&missing, Err(TransferError::Client(ClientError::Unreachable { failures, .. })) if failures.contains("no-such-bundle") || failures.contains("no bundle")),
        "{missing:?}"
    );
    assert!(
        matches!(
            &bad,
            Err(TransferError::Client(ClientError::Api { status: 400, .. }))
        ),
        "{bad:?}"
    );

    // Orders the masters refuse.
    let e = c
        .cli_as(
            &c.context,
            &["node", "upgrade", "agent-1", "--version", "9.9.9"],
        )
        .expect_err("no such version");
    assert!(
        e.contains("no bundle of version 9.9.9 for private nodes"),
        "{e}"
    );
    let e = c
        .cli_as(
            &c.context,
            &["node", "upgrade", "agent-2", "--version", "0.2.0"],
        )
        .expect_err("agent-2 is public");
    assert!(
        e.contains("no bundle of version 0.2.0 for public nodes"),
        "{e}"
    );

    // An order reaches the node and its outcome comes back.
    let e = c
        .cli_as(
            &c.context,
            &[
                "node",
                "upgrade",
                "agent-1",
                "--version",
                "0.2.0",
                "--wait",
                "--timeout",
                "60s",
            ],
        )
        .expect_err("a node outside an image cannot upgrade");
    assert!(
        e.contains("the order failed: the node did not boot from a slot"),
        "{e}"
    );
    let show = c.admin_ok(&["node", "show", "agent-1"]);
    assert!(
        show.contains("order:") && show.contains("upgrade to 0.2.0") && show.contains("failed"),
        "{show}"
    );
    let list = c.admin_ok(&["node", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with("agent-1") && l.contains("0.2.0 failed")),
        "{list}"
    );
    // A cluster upgrade needs a bundle for every role it upgrades: refused
    // with the nodes named, nothing stored.
    let e = c
        .cli_as(&c.context, &["cluster", "upgrade", "--version", "0.2.0"])
        .expect_err("no master bundle");
    assert!(
        e.contains(
            "nodes `master-1`, `master-2`, `master-3` cannot upgrade: no bundle of version 0.2.0 for master nodes"
        ),
        "{e}"
    );
    let e = c
        .cli_as(&c.context, &["cluster", "upgrade", "--status"])
        .expect_err("nothing was stored");
    assert!(e.contains("no cluster upgrade was started"), "{e}");
    let e = c
        .cli_as(&c.context, &["cluster", "upgrade", "--resume"])
        .expect_err("nothing to resume");
    assert!(e.contains("no cluster upgrade was started"), "{e}");
    let e = c
        .cli_as(&c.context, &["cluster", "upgrade", "--cancel"])
        .expect_err("nothing to cancel");
    assert!(
        e.contains("no cluster upgrade was started: nothing to cancel"),
        "{e}"
    );

    // The private agents' rollout: agent-1 is drained and ordered by the
    // scheduler's leader, fails (no slots outside an image), and the
    // rollout halts there with the node and the reason, kept in etcd.
    let e = c
        .cli_as(
            &c.context,
            &[
                "cluster",
                "upgrade",
                "--version",
                "0.2.0",
                "--role",
                "private",
                "--timeout",
                "120s",
            ],
        )
        .expect_err("the rollout halts at agent-1");
    assert!(
        e.contains("halted at node `agent-1`")
            && e.contains("its upgrade failed")
            && e.contains("did not boot from a slot"),
        "{e}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&c.admin_ok(&["cluster", "upgrade", "--status", "--json"]))
            .expect("--status --json is JSON");
    assert_eq!(status["halted"]["node"], "agent-1", "{status}");
    assert_eq!(status["nodes"][0]["name"], "agent-1", "{status}");
    assert_eq!(status["nodes"][0]["step"], "failed", "{status}");
    assert_eq!(
        status["nodes"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    let text = c.admin_ok(&["cluster", "upgrade", "--status"]);
    assert!(text.contains("HALTED at agent-1"), "{text}");
    let node: serde_json::Value =
        serde_json::from_str(&c.admin_ok(&["node", "show", "agent-1", "--json"]))
            .expect("node show --json");
    assert_eq!(node["cordon"]["by"], "cluster upgrade", "{node}");
    assert!(
        node["upgrade"]["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("cluster upgrade")),
        "{node}"
    );
    // --resume tries agent-1 again, which fails again.
    let e = c
        .cli_as(
            &c.context,
            &["cluster", "upgrade", "--resume", "--timeout", "120s"],
        )
        .expect_err("agent-1 fails again");
    assert!(e.contains("halted at node `agent-1`"), "{e}");
    c.admin_ok(&["node", "uncordon", "agent-1"]);

    // An order that ended does not block the next.
    c.admin_ok(&["node", "rollback", "agent-1"]);

    // --cancel: a halted rollout is not under way.
    let e = c
        .cli_as(&c.context, &["cluster", "upgrade", "--cancel"])
        .expect_err("the rollout halted already");
    assert!(e.contains("is not under way"), "{e}");
    // A rollout under way: agent-2's turn waits while agent-1, down,
    // counts as the one agent out of service; cancelled there, it halts
    // with no node failed, and --resume starts it again.
    drop(agent1);
    c.wait("agent-1 not Ready", Duration::from_secs(60), || {
        c.nodes()
            .iter()
            .any(|n| n.record.info.name == "agent-1" && n.state != NodeState::Ready)
            .then_some(())
    });
    let public = bundle(configs::Role::Public, "0.2.0", &c.update_key);
    let file = c.dir().join("public.update");
    std::fs::write(&file, &public).expect("write the public bundle");
    c.admin_ok(&["bundle", "push", file.to_str().expect("utf-8")]);
    c.admin_ok(&[
        "cluster",
        "upgrade",
        "--version",
        "0.2.0",
        "--role",
        "public",
        "--no-wait",
    ]);
    // Rounds go by (one a second) with agent-2 waiting.
    std::thread::sleep(Duration::from_secs(3));
    let cancelled: serde_json::Value =
        serde_json::from_str(&c.admin_ok(&["cluster", "upgrade", "--cancel", "--json"]))
            .expect("--cancel --json is JSON");
    assert_eq!(cancelled["nodes"][0]["name"], "agent-2", "{cancelled}");
    assert_eq!(cancelled["nodes"][0]["step"], "waiting", "{cancelled}");
    assert_eq!(cancelled["halted"]["node"], "", "{cancelled}");
    assert!(
        cancelled["halted"]["cancelled_by"]
            .as_str()
            .is_some_and(|b| !b.is_empty()),
        "{cancelled}"
    );
    let text = c.admin_ok(&["cluster", "upgrade", "--status"]);
    assert!(text.contains("HALTED: cancelled by"), "{text}");
    // Nothing moves while it is cancelled, agent-1 down or not.
    std::thread::sleep(Duration::from_secs(3));
    let still: serde_json::Value =
        serde_json::from_str(&c.admin_ok(&["cluster", "upgrade", "--status", "--json"]))
            .expect("--status --json is JSON");
    assert_eq!(still["nodes"][0]["step"], "waiting", "{still}");
    let e = c
        .cli_as(&c.context, &["cluster", "upgrade", "--cancel"])
        .expect_err("cancelled already");
    assert!(e.contains("is not under way"), "{e}");
    let resumed: serde_json::Value = serde_json::from_str(&c.admin_ok(&[
        "cluster",
        "upgrade",
        "--resume",
        "--no-wait",
        "--json",
    ]))
    .expect("--resume --json is JSON");
    assert_eq!(resumed["halted"], serde_json::Value::Null, "{resumed}");
}
