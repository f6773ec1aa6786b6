//! Renders etcd's configuration for one master (pure): a static initial
//! cluster from the master list, mutual TLS on the client and peer ports
//! from the etcd CA only (`pki::Ca::etcd_ca`, which only masters can
//! derive: a node's certificate of the cluster CA is refused), peers only
//! with the peer certificate's name, periodic compaction, a backend quota,
//! data under `/var/lib/etcd`. The output is an environment file for
//! Debian's `etcd.service` and a runtime drop-in that points the unit at it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use configs::Role;
use configs::cluster::ClusterConfig;

/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;
/// etcd's backend quota when `cluster.toml` sets none: past it etcd raises
/// the NOSPACE alarm and refuses writes (`strata cluster status` shows it)
/// instead of filling the state partition. etcd's own default is 2 GiB too,
/// but written here it is what an operator reads.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 << 30;
/// How much history etcd keeps before it compacts (periodic): the shared
/// watch resumes from its last revision after a short outage, and nothing
/// reads older revisions.
const COMPACTION_RETENTION: &str = "1h";

/// Where the rendered files and etcd's data go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdPaths {
    /// etcd's data directory.
    pub data_dir: PathBuf,
    /// Directory of etcd's certificates, keys and the etcd CA (readable by
    /// etcd).
    pub pki_dir: PathBuf,
    /// The environment file `etcd.service` reads.
    pub env_file: PathBuf,
    /// The runtime drop-in for `etcd.service`.
    pub dropin: PathBuf,
}

impl EtcdPaths {
    /// The paths on a Strata master.
    pub fn standard() -> EtcdPaths {
        EtcdPaths {
            data_dir: "/var/lib/etcd/strata".into(),
            pki_dir: "/var/lib/etcd/pki".into(),
            env_file: std::path::Path::new(crate::state::STATE_DIR).join("etcd/etcd.env"),
            dropin: "/run/systemd/system/etcd.service.d/50-strata.conf".into(),
        }
    }

    /// The client port's certificate and key (`pki::EtcdCert::Server`).
    pub fn server_cert(&self) -> PathBuf {
        self.pki_dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.pki_dir.join("server.key")
    }
    /// The peer port's certificate and key (`pki::EtcdCert::Peer`).
    pub fn peer_cert(&self) -> PathBuf {
        self.pki_dir.join("peer.crt")
    }
    pub fn peer_key(&self) -> PathBuf {
        self.pki_dir.join("peer.key")
    }
    /// The etcd CA, the only CA etcd trusts.
    pub fn ca(&self) -> PathBuf {
        self.pki_dir.join("etcd-ca.crt")
    }
    /// What releases before the etcd CA wrote (the master's certificate of
    /// the cluster CA and the cluster CA itself): removed at start, so that
    /// nothing reads them by mistake.
    pub fn legacy(&self) -> [PathBuf; 3] {
        ["etcd.crt", "etcd.key", "ca.crt"].map(|f| self.pki_dir.join(f))
    }
}

/// One member of the static initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub address: Ipv4Addr,
}

/// The rendered files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub env: String,
    pub dropin: String,
    /// This master's member.
    pub me: Member,
}

/// Why etcd's configuration cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(
        "master `{name}` ({address}) is not listed in the cluster's `masters` ({masters}); check its user-data"
    )]
    NotAMaster {
        name: String,
        address: String,
        masters: String,
    },
}

/// The etcd members, in the order of `masters`: named after the master node
/// with that address in `[[nodes]]`, or `master-<n>`.
pub fn members(cluster: &ClusterConfig) -> Vec<Member> {
    cluster
        .masters
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let name = cluster
                .nodes
                .iter()
                .find(|n| n.role == Role::Master && n.address.is_some_and(|a| a.addr == *addr))
                .map_or_else(|| format!("master-{}", i + 1), |n| n.name.clone());
            Member {
                name,
                address: *addr,
            }
        })
        .collect()
}

/// Finds the member this master is: by address, else by name.
pub fn find_me(
    cluster: &ClusterConfig,
    name: &str,
    address: Option<Ipv4Addr>,
) -> Result<Member, RenderError> {
    let all = members(cluster);
    address
        .and_then(|a| all.iter().find(|m| m.address == a))
        .or_else(|| all.iter().find(|m| m.name == name))
        .cloned()
        .ok_or_else(|| RenderError::NotAMaster {
            name: name.to_string(),
            address: address.map_or_else(|| "no static address".to_string(), |a| a.to_string()),
            masters: cluster
                .masters
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// The client URLs of every member, as the masters dial them.
pub fn client_urls(cluster: &ClusterConfig) -> Vec<String> {
    cluster
        .masters
        .iter()
        .map(|m| format!("https://{m}:{CLIENT_PORT}"))
        .collect()
}

/// Renders the configuration of member `me`.
pub fn render(cluster: &ClusterConfig, me: &Member, paths: &EtcdPaths) -> Rendered {
    let initial = members(cluster)
        .iter()
        .map(|m| format!("{}=https://{}:{PEER_PORT}", m.name, m.address))
        .collect::<Vec<_>>()
        .join(",");
    let p = |p: &Path| p.display().to_string();
    let lines = [
        ("ETCD_NAME", me.name.clone()),
        ("ETCD_DATA_DIR", p(&paths.data_dir)),
        (
            "ETCD_LISTEN_PEER_URLS",
            format!("https://{}:{PEER_PORT}", me.address),
        ),
        (
            "ETCD_LISTEN_CLIENT_URLS",
            format!(
                "https://{}:{CLIENT_PORT},https://127.0.0.1:{CLIENT_PORT}",
                me.address
            ),
        ),
        (
            "ETCD_ADVERTISE_CLIENT_URLS",
            format!("https://{}:{CLIENT_PORT}", me.address),
        ),
        (
            "ETCD_INITIAL_ADVERTISE_PEER_URLS",
            format!("https://{}:{PEER_PORT}", me.address),
        ),
        ("ETCD_INITIAL_CLUSTER", initial),
        ("ETCD_INITIAL_CLUSTER_STATE", "new".to_string()),
        (
            "ETCD_INITIAL_CLUSTER_TOKEN",
            format!("strata-{}", cluster.name),
        ),
        ("ETCD_CERT_FILE", p(&paths.server_cert())),
        ("ETCD_KEY_FILE", p(&paths.server_key())),
        ("ETCD_TRUSTED_CA_FILE", p(&paths.ca())),
        ("ETCD_CLIENT_CERT_AUTH", "true".to_string()),
        ("ETCD_PEER_CERT_FILE", p(&paths.peer_cert())),
        ("ETCD_PEER_KEY_FILE", p(&paths.peer_key())),
        ("ETCD_PEER_TRUSTED_CA_FILE", p(&paths.ca())),
        ("ETCD_PEER_CLIENT_CERT_AUTH", "true".to_string()),
        (
            "ETCD_PEER_CERT_ALLOWED_CN",
            crate::pki::ETCD_PEER_CN.to_string(),
        ),
        ("ETCD_AUTO_COMPACTION_MODE", "periodic".to_string()),
        (
            "ETCD_AUTO_COMPACTION_RETENTION",
            COMPACTION_RETENTION.to_string(),
        ),
        (
            "ETCD_QUOTA_BACKEND_BYTES",
            cluster
                .etcd
                .quota_bytes
                .unwrap_or(DEFAULT_QUOTA_BYTES)
                .to_string(),
        ),
        ("ETCD_ENABLE_V2", "false".to_string()),
    ];
    let mut env = String::from(
        "# Written by the Strata agent from cluster.toml; rewritten at every start.\n",
    );
    for (k, v) in lines {
        env.push_str(&format!("{k}={v}\n"));
    }
    let dropin = format!(
        "# Written by the Strata agent: etcd's settings come from the cluster configuration.\n[Service]\nEnvironmentFile={}\n",
        paths.env_file.display()
    );
    Rendered {
        env,
        dropin,
        me: me.clone(),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    const THREE: &str = "name = \"demo\"\nmasters = [\"10.9.0.10\", \"10.9.0.11\", \"10.9.0.12\"]\n\
                         [[nodes]]\nname = \"m1\"\nrole = \"master\"\naddress = \"10.9.0.10/24\"\n\
                         [[nodes]]\nname = \"m2\"\nrole = \"master\"\naddress = \"10.9.0.11/24\"\n\
                         [[nodes]]\nname = \"m3\"\nrole = \"master\"\naddress = \"10.9.0.12/24\"\n";

    /// Renders the config of the master named `name` at `address`.
    fn check(cluster: &str, name: &str, address: Option<Ipv4Addr>, expected: Expect) {
        let c = ClusterConfig::parse("cluster.toml", cluster).expect("valid cluster");
        let actual = match find_me(&c, name, address) {
            Ok(me) => {
                let r = render(&c, &me, &EtcdPaths::standard());
                format!("{}--- drop-in\n{}", r.env, r.dropin)
            }
            Err(e) => format!("error: {e}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn three_masters() {
        check(
            THREE,
            "m2",
            Some(Ipv4Addr::new(10, 9, 0, 11)),
            expect![[r#"
                # Written by the Strata agent from cluster.toml; rewritten at every start.
                ETCD_NAME=m2
                ETCD_DATA_DIR=/var/lib/etcd/strata
                ETCD_LISTEN_PEER_URLS=https://10.9.0.11:2380
                ETCD_LISTEN_CLIENT_URLS=https://10.9.0.11:2379,https://127.0.0.1:2379
                ETCD_ADVERTISE_CLIENT_URLS=https://10.9.0.11:2379
                ETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.9.0.11:2380
                ETCD_INITIAL_CLUSTER=m1=https://10.9.0.10:2380,m2=https://10.9.0.11:2380,m3=https://10.9.0.12:2380
                ETCD_INITIAL_CLUSTER_STATE=new
                ETCD_INITIAL_CLUSTER_TOKEN=strata-demo
                ETCD_CERT_FILE=/var/lib/etcd/pki/server.crt
                ETCD_KEY_FILE=/var/lib/etcd/pki/server.key
                ETCD_TRUSTED_CA_FILE=/var/lib/etcd/pki/etcd-ca.crt
                ETCD_CLIENT_CERT_AUTH=true
                ETCD_PEER_CERT_FILE=/var/lib/etcd/pki/peer.crt
                ETCD_PEER_KEY_FILE=/var/lib/etcd/pki/peer.key
                ETCD_PEER_TRUSTED_CA_FILE=/var/lib/etcd/pki/etcd-ca.crt
                ETCD_PEER_CLIENT_CERT_AUTH=true
                ETCD_PEER_CERT_ALLOWED_CN=strata-etcd-peer
                ETCD_AUTO_COMPACTION_MODE=periodic
                ETCD_AUTO_COMPACTION_RETENTION=1h
                ETCD_QUOTA_BACKEND_BYTES=2147483648
                ETCD_ENABLE_V2=false
                --- drop-in
                # Written by the Strata agent: etcd's settings come from the cluster configuration.
                [Service]
                EnvironmentFile=/var/lib/strata/etcd/etcd.env
            "#]],
        );
    }

    #[test]
    fn members_without_nodes_are_numbered_and_found_by_name() {
        let one = "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n";
        let c = ClusterConfig::parse("cluster.toml", one).expect("valid");
        expect![[r#"[Member { name: "master-1", address: 10.9.0.10 }]"#]]
            .assert_eq(&format!("{:?}", members(&c)));
        check(
            one,
            "master-1",
            None,
            expect![[r#"
            # Written by the Strata agent from cluster.toml; rewritten at every start.
            ETCD_NAME=master-1
            ETCD_DATA_DIR=/var/lib/etcd/strata
            ETCD_LISTEN_PEER_URLS=https://10.9.0.10:2380
            ETCD_LISTEN_CLIENT_URLS=https://10.9.0.10:2379,https://127.0.0.1:2379
            ETCD_ADVERTISE_CLIENT_URLS=https://10.9.0.10:2379
            ETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.9.0.10:2380
            ETCD_INITIAL_CLUSTER=master-1=https://10.9.0.10:2380
            ETCD_INITIAL_CLUSTER_STATE=new
            ETCD_INITIAL_CLUSTER_TOKEN=strata-demo
            ETCD_CERT_FILE=/var/lib/etcd/pki/server.crt
            ETCD_KEY_FILE=/var/lib/etcd/pki/server.key
            ETCD_TRUSTED_CA_FILE=/var/lib/etcd/pki/etcd-ca.crt
            ETCD_CLIENT_CERT_AUTH=true
            ETCD_PEER_CERT_FILE=/var/lib/etcd/pki/peer.crt
            ETCD_PEER_KEY_FILE=/var/lib/etcd/pki/peer.key
            ETCD_PEER_TRUSTED_CA_FILE=/var/lib/etcd/pki/etcd-ca.crt
            ETCD_PEER_CLIENT_CERT_AUTH=true
            ETCD_PEER_CERT_ALLOWED_CN=strata-etcd-peer
            ETCD_AUTO_COMPACTION_MODE=periodic
            ETCD_AUTO_COMPACTION_RETENTION=1h
            ETCD_QUOTA_BACKEND_BYTES=2147483648
            ETCD_ENABLE_V2=false
            --- drop-in
            # Written by the Strata agent: etcd's settings come from the cluster configuration.
            [Service]
            EnvironmentFile=/var/lib/strata/etcd/etcd.env
        "#]],
        );
    }

    #[test]
    fn the_quota_comes_from_cluster_toml() {
        let text = "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n[etcd]\nquota_bytes = 8589934592\n";
        let c = ClusterConfig::parse("cluster.toml", text).expect("valid cluster");
        let me = find_me(&c, "master-1", None).expect("a master");
        let env = render(&c, &me, &EtcdPaths::standard()).env;
        let quota: Vec<&str> = env
            .lines()
            .filter(|l| l.starts_with("ETCD_QUOTA_BACKEND_BYTES="))
            .collect();
        assert_eq!(quota, ["ETCD_QUOTA_BACKEND_BYTES=8589934592"]);
    }

    #[test]
    fn a_master_not_in_the_list_is_refused() {
        check(
            THREE,
            "m9",
            Some(Ipv4Addr::new(10, 9, 0, 99)),
            expect![
                "error: master `m9` (10.9.0.99) is not listed in the cluster's `masters` (10.9.0.10, 10.9.0.11, 10.9.0.12); check its user-data"
            ],
        );
        check(
            THREE,
            "m9",
            None,
            expect![
                "error: master `m9` (no static address) is not listed in the cluster's `masters` (10.9.0.10, 10.9.0.11, 10.9.0.12); check its user-data"
            ],
        );
    }
}
