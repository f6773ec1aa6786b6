//! `strata cluster init`: from a validated `cluster.toml`, the cluster CA,
//! the join token, one user-data file per node, and the CLI's token and
//! context. [`plan`] is pure given the secrets; [`write`] puts the files
//! down.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use configs::Role;
use configs::cluster::ClusterConfig;
use configs::user_data::{MasterSecrets, Network, UserData};
use serde::Serialize;

use crate::etcd::render;
use crate::pki::{self, Ca, JoinToken};

/// The secrets of a new cluster.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub ca: Ca,
    pub token: JoinToken,
    pub cli_token: String,
}

impl Secrets {
    pub fn generate(cluster: &str) -> anyhow::Result<Secrets> {
        let ca = Ca::generate(cluster)?;
        let token = JoinToken::generate(&ca.fingerprint()?)?;
        Ok(Secrets {
            ca,
            token,
            cli_token: pki::generate_cli_token()?,
        })
    }
}

/// The CLI's context file as `cluster init` writes it: the CLI reads it
/// with `cli::context::Context`, which refuses unknown keys. Its fields are
/// copied here rather than imported, so that nothing below the CLI depends
/// on it; `init_writes_a_context_the_cli_reads_and_keeps_only_hashes_on_masters`
/// in `cluster/tests.rs` keeps the two in step.
#[derive(Debug, Serialize)]
struct CliContext {
    cluster: String,
    /// API endpoints (`host:port`), tried in turn.
    endpoints: Vec<String>,
    /// The file holding the CLI's bearer token, relative to this file.
    token_file: String,
    /// The cluster CA, PEM.
    ca_cert: String,
}

/// One file to write, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFile {
    pub path: PathBuf,
    pub content: String,
    pub mode: u32,
}

/// The nodes to make user-data for: `[[nodes]]`, or one per master when the
/// file lists none.
fn nodes(cluster: &ClusterConfig) -> Vec<configs::cluster::Node> {
    if !cluster.nodes.is_empty() {
        return cluster.nodes.clone();
    }
    render::members(cluster)
        .into_iter()
        .map(|m| configs::cluster::Node {
            name: m.name,
            role: Role::Master,
            address: configs::net::Ipv4Cidr::new(m.address, 32),
            gateway: None,
            interface: None,
        })
        .collect()
}

/// The files of a new cluster. `cluster_text` is the validated file's text,
/// handed to masters as it is.
pub fn plan(
    cluster: &ClusterConfig,
    cluster_text: &str,
    secrets: &Secrets,
) -> anyhow::Result<Vec<OutFile>> {
    let mut files = vec![
        OutFile {
            path: "ca.crt".into(),
            content: secrets.ca.cert_pem.clone(),
            mode: 0o644,
        },
        OutFile {
            path: "ca.key".into(),
            content: secrets.ca.key_pem.clone(),
            mode: 0o600,
        },
        OutFile {
            path: "join-token".into(),
            content: format!("{}\n", secrets.token),
            mode: 0o600,
        },
    ];
    for node in nodes(cluster) {
        let master = (node.role == Role::Master).then(|| MasterSecrets {
            ca_cert: secrets.ca.cert_pem.clone(),
            ca_key: secrets.ca.key_pem.clone(),
            cluster_toml: cluster_text.to_string(),
            cli_token_sha256: vec![pki::sha256_hex(secrets.cli_token.as_bytes())],
        });
        let ud = UserData {
            cluster: cluster.name.clone(),
            name: node.name.clone(),
            role: node.role,
            masters: cluster.master_endpoints(),
            join_token: secrets.token.to_string(),
            network: Network {
                interface: node.interface.clone(),
                address: node.address,
                gateway: node.gateway,
                dns: cluster.dns.resolvers.clone(),
            },
            master,
        };
        let text = format!(
            "# user-data of node `{}` ({}) of cluster `{}`, made by `strata cluster init`.\n# It holds the join token{}: keep it secret.\n{}",
            node.name,
            node.role,
            cluster.name,
            if node.role == Role::Master {
                " and the cluster CA key"
            } else {
                ""
            },
            toml::to_string(&ud).context("user-data always serializes")?
        );
        let path = PathBuf::from("user-data").join(format!("{}.toml", node.name));
        // What we hand out must pass the same checks the node applies.
        UserData::parse(&path.display().to_string(), &text)?;
        files.push(OutFile {
            path,
            content: text,
            mode: 0o600,
        });
    }
    let context = CliContext {
        cluster: cluster.name.clone(),
        endpoints: cluster.master_endpoints(),
        token_file: "token".to_string(),
        ca_cert: secrets.ca.cert_pem.clone(),
    };
    files.push(OutFile {
        path: "cli/token".into(),
        content: format!("{}\n", secrets.cli_token),
        mode: 0o600,
    });
    files.push(OutFile {
        path: "cli/context.toml".into(),
        content: format!(
            "# CLI context of cluster `{}`: use with --context or STRATA_CONTEXT.\n{}",
            cluster.name,
            toml::to_string(&context).context("context always serializes")?
        ),
        mode: 0o600,
    });
    Ok(files)
}

/// Writes `files` under `out`. Refuses to replace an existing cluster's
/// files unless `force`.
pub fn write(out: &Path, files: &[OutFile], force: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !force && out.join("ca.key").exists() {
        anyhow::bail!(
            "{} already holds a cluster (ca.key): refusing to replace its CA; pass --force to replace it",
            out.display()
        );
    }
    for f in files {
        let path = out.join(&f.path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(f.content.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
