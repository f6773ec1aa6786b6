use configs::cluster::ClusterConfig;
use configs::user_data::UserData;
use expect_test::{Expect, expect};

use super::init::{Secrets, plan, write};
// The CLI reads the context `cluster init` writes: the one use of
// `crate::cli` below it, in a test, to keep the two in step.
use crate::cli::context;
use crate::pki::JoinToken;

const CLUSTER: &str = include_str!("../../../configs/cluster.example.toml");

/// Plans `cluster init` for `text` and describes the files, or the error.
fn check_init(text: &str, expected: Expect) {
    let actual = match ClusterConfig::parse("cluster.toml", text) {
        Err(e) => format!("error: {e}"),
        Ok(c) => {
            let secrets = Secrets::generate(&c.name).expect("secrets");
            let files = plan(&c, text, &secrets).expect("plan");
            files
                .iter()
                .map(|f| {
                    let what = if f.path.starts_with("user-data") {
                        let ud = UserData::parse("ud", &f.content).expect("valid user-data");
                        assert_eq!(
                            JoinToken::parse(&ud.join_token).expect("token"),
                            secrets.token
                        );
                        format!(
                            "{} {} masters={:?} address={:?} master-section={}",
                            ud.name,
                            ud.role,
                            ud.masters,
                            ud.network.address.map(|a| a.to_string()),
                            ud.master.is_some()
                        )
                    } else {
                        String::new()
                    };
                    format!("{:o} {} {what}", f.mode, f.path.display())
                        .trim_end()
                        .to_string()
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    expected.assert_eq(&actual);
}

#[test]
fn init_makes_one_user_data_per_node() {
    check_init(
        CLUSTER,
        expect![[r#"
            644 ca.crt
            600 ca.key
            600 join-token
            600 user-data/master-1.toml master-1 master masters=["10.9.0.10:6443"] address=Some("10.9.0.10/24") master-section=true
            600 user-data/private-1.toml private-1 private masters=["10.9.0.10:6443"] address=Some("10.9.0.21/24") master-section=false
            600 user-data/public-1.toml public-1 public masters=["10.9.0.10:6443"] address=Some("10.9.0.31/24") master-section=false
            600 cli/token
            600 cli/context.toml"#]],
    );
    check_init(
        "name = \"bare\"\nmasters = [\"10.1.0.1\", \"10.1.0.2\", \"10.1.0.3\"]\n",
        expect![[r#"
            644 ca.crt
            600 ca.key
            600 join-token
            600 user-data/master-1.toml master-1 master masters=["10.1.0.1:6443", "10.1.0.2:6443", "10.1.0.3:6443"] address=Some("10.1.0.1/32") master-section=true
            600 user-data/master-2.toml master-2 master masters=["10.1.0.1:6443", "10.1.0.2:6443", "10.1.0.3:6443"] address=Some("10.1.0.2/32") master-section=true
            600 user-data/master-3.toml master-3 master masters=["10.1.0.1:6443", "10.1.0.2:6443", "10.1.0.3:6443"] address=Some("10.1.0.3/32") master-section=true
            600 cli/token
            600 cli/context.toml"#]],
    );
    check_init(
        "name = \"bad\"\nmasters = []\n",
        expect![
            "error: cluster.toml:2:11: field `masters`: 0 master(s) given, expected 1, 3 or 5 for an etcd quorum"
        ],
    );
}

#[test]
fn init_writes_a_context_the_cli_reads_and_keeps_only_hashes_on_masters() {
    let c = ClusterConfig::parse("cluster.toml", CLUSTER).expect("valid");
    let secrets = Secrets::generate(&c.name).expect("secrets");
    let files = plan(&c, CLUSTER, &secrets).expect("plan");
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), &files, false).expect("write");
    let err = write(dir.path(), &files, false).expect_err("must not overwrite");
    assert!(
        err.to_string().contains("already holds a cluster (ca.key)"),
        "{err}"
    );
    write(dir.path(), &files, true).expect("forced");

    let loaded = context::Context::load(&dir.path().join("cli/context.toml")).expect("context");
    assert_eq!(loaded.token, secrets.cli_token);
    assert_eq!(loaded.context.endpoints, ["10.9.0.10:6443"]);
    assert_eq!(loaded.context.ca_cert, secrets.ca.cert_pem);

    let master =
        std::fs::read_to_string(dir.path().join("user-data/master-1.toml")).expect("master ud");
    assert!(
        !master.contains(&secrets.cli_token),
        "a master must not hold the CLI token itself"
    );
    let ud = UserData::parse("m", &master).expect("valid");
    let m = ud.master.expect("master section");
    assert_eq!(
        m.cli_token_sha256,
        [crate::pki::sha256_hex(secrets.cli_token.as_bytes())]
    );
    assert_eq!(m.cluster_toml, CLUSTER);
    let err = context::Context::load(&dir.path().join("nope.toml")).expect_err("missing");
    assert!(
        format!("{err:#}").contains("make one with `strata cluster init`"),
        "{err:#}"
    );
}

#[test]
fn meminfo() {
    assert_eq!(
        super::sysinfo::parse_meminfo_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
        16384 * 1024
    );
    assert_eq!(super::sysinfo::parse_meminfo_total("garbage"), 0);
}

#[test]
fn a_kept_identity_is_checked_before_use() {
    use super::identity::{Identity, IdentityDir, Stale};
    use crate::pki::{CERT_LIFETIME, Ca};
    use control::model::NodeSettings;
    use std::time::{Duration, SystemTime};

    let ca = Ca::generate("t").expect("ca");
    let pin = ca.fingerprint().expect("fingerprint");
    let dir = tempfile::tempdir().expect("tempdir");
    let ids = IdentityDir::new(dir.path());
    assert!(ids.load().expect("load").is_none());
    let key = ids.key_or_create().expect("key");
    assert_eq!(
        ids.key_or_create().expect("same key").key_pem,
        key.key_pem,
        "the key is made once"
    );
    let csr = key.csr("agent-1").expect("csr");
    let settings = NodeSettings {
        format: Default::default(),
        cluster: "t".into(),
        heartbeat_interval_seconds: 2,
        grace_seconds: 10,
        masters: vec!["10.9.0.10:6443".into()],
        network: None,
        insecure_registries: Vec::new(),
        edge: Default::default(),
    };
    let id = |cert_pem: String| Identity {
        key_pem: key.key_pem.clone(),
        cert_pem,
        ca_pem: ca.cert_pem.clone(),
        settings: settings.clone(),
    };
    let good = id(ca
        .sign_node_csr("agent-1", &csr, CERT_LIFETIME)
        .expect("sign")
        .cert_pem);
    ids.save(&good).expect("save");
    let loaded = ids.load().expect("load").expect("kept");
    assert_eq!(loaded.cert_pem, good.cert_pem);
    assert_eq!(loaded.settings, settings);
    let now = SystemTime::now();
    assert!(loaded.check("agent-1", &pin, now).is_ok());
    assert_eq!(
        loaded.check("agent-2", &pin, now).unwrap_err(),
        Stale::OtherName("agent-1".into())
    );
    assert_eq!(
        loaded.check("agent-1", &"00".repeat(32), now).unwrap_err(),
        Stale::OtherCluster
    );
    let day = Duration::from_secs(86_400);
    let expired = id(ca
        .sign_node_csr_between("agent-1", &csr, now - 2 * day, now - day)
        .expect("sign")
        .cert_pem);
    assert_eq!(
        expired.check("agent-1", &pin, now).unwrap_err(),
        Stale::Expired
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("identity/node.key"))
            .expect("key file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// The leader's wait between rounds when the jobs' round asked to be woken
/// at a second: until that second begins, never past a tick.
#[test]
fn the_leader_wakes_at_the_second_a_job_is_due() {
    fn check(wake_at: Option<u64>, now_ms: u64, expected_ms: u64) {
        assert_eq!(
            super::scheduler::until(wake_at, now_ms),
            std::time::Duration::from_millis(expected_ms),
            "wake at {wake_at:?}, now {now_ms} ms"
        );
    }
    check(None, 59_400, 1000);
    check(Some(60), 59_400, 600);
    check(Some(60), 59_999, 1);
    check(Some(61), 59_400, 1000);
    check(Some(60), 60_000, 0);
    check(Some(60), 60_250, 0);
}
