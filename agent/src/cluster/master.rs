//! The control plane on a master: issue this master's API certificate from
//! the cluster CA and its etcd certificates from the etcd CA (derived from
//! the cluster CA's key, so only masters hold it), render etcd's
//! configuration and start `etcd.service` through systemd (or use the
//! external etcd that `cluster.toml` names), wait for quorum, serve the API,
//! and take part as a node like any agent.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use configs::cluster::ClusterConfig;
use configs::user_data::UserData;

use crate::api::server::{ApiState, Limits, serve};
use crate::api::tls;
use crate::cluster::identity::write_private;
use crate::cluster::node::{AgentOptions, run_agent_with};
use crate::etcd::render::{self, EtcdPaths};
use crate::etcd::{EtcdConnect, EtcdTls, Store};
use crate::firewall::NodeFirewall;
use crate::pki::{self, Ca, CertInfo, EtcdCert, Issued, JoinToken};
use crate::systemd::Systemd;
use control::model::{MasterCert, NodeSettings};

/// What [`run_master`] needs.
#[derive(Debug, Clone)]
pub struct MasterOptions {
    /// `/var/lib/strata` on an image.
    pub state_dir: PathBuf,
    pub user_data: UserData,
    /// Where etcd's rendered files go ([`EtcdPaths::standard`] on an image).
    pub etcd_paths: EtcdPaths,
    /// Address the API listens on; `0.0.0.0:<api_port>` when absent.
    pub listen: Option<SocketAddr>,
    /// The key update bundles must be signed with
    /// ([`crate::upgrade::UPDATE_KEY`] on an image): the master keeps
    /// pushed bundles only when it can read it.
    pub update_key: PathBuf,
}

/// Everything a master derives from its user-data before it starts.
pub struct Plan {
    pub cluster: ClusterConfig,
    pub ca: Ca,
    pub me: render::Member,
    pub token: JoinToken,
    /// The API's certificate, of the cluster CA.
    pub cert: Issued,
    pub etcd: EtcdPki,
    /// The names the API's and etcd's certificates carry.
    pub names: Vec<String>,
}

/// A master's etcd certificates, all of the etcd CA.
pub struct EtcdPki {
    /// The etcd CA ([`Ca::etcd_ca`]): etcd trusts only it, and the
    /// master's etcd client trusts only it.
    pub ca: Ca,
    /// etcd's client port.
    pub server: Issued,
    /// etcd's peer port.
    pub peer: Issued,
    /// The master's own etcd client.
    pub client: Issued,
}

impl EtcdPki {
    /// Derives the etcd CA from the cluster CA `ca` and issues member
    /// `me`'s certificates: the server's and the peer's for `names` (the
    /// member's address among them: etcd checks that a peer connects from
    /// an address its certificate names, and a member dials its peers from
    /// its underlay address, or from 127.0.0.1 on loopback), the client's
    /// for no name.
    pub fn issue(ca: &Ca, me: &render::Member, names: &[String]) -> Result<EtcdPki, pki::Error> {
        let etcd_ca = ca.etcd_ca()?;
        let issue = |kind| etcd_ca.issue_etcd(kind, &me.name, names, pki::CERT_LIFETIME);
        let server = issue(EtcdCert::Server)?;
        let peer = issue(EtcdCert::Peer)?;
        // (The client certificate carries no name whatever it is given.)
        let client =
            etcd_ca.issue_etcd(EtcdCert::Client, &me.name, names, pki::ETCD_CLIENT_LIFETIME)?;
        Ok(EtcdPki {
            ca: etcd_ca,
            server,
            peer,
            client,
        })
    }

    /// The files etcd reads under `paths`, each with its content: what
    /// [`render::render`]'s environment names.
    pub fn files<'a>(&'a self, paths: &EtcdPaths) -> [(PathBuf, &'a str); 5] {
        [
            (paths.server_cert(), self.server.cert_pem.as_str()),
            (paths.server_key(), self.server.key_pem.as_str()),
            (paths.peer_cert(), self.peer.cert_pem.as_str()),
            (paths.peer_key(), self.peer.key_pem.as_str()),
            (paths.ca(), self.ca.cert_pem.as_str()),
        ]
    }
}

/// Reads the master's secrets and issues its certificates: the API's of the
/// cluster CA, etcd's of the etcd CA (pure apart from key generation).
pub fn plan(ud: &UserData) -> anyhow::Result<Plan> {
    let secrets = ud
        .master
        .as_ref()
        .context("user-data has no [master] section, so this node cannot be a master")?;
    let cluster = ClusterConfig::parse(
        "user-data field `master.cluster_toml`",
        &secrets.cluster_toml,
    )?;
    let ca = Ca {
        cert_pem: secrets.ca_cert.clone(),
        key_pem: secrets.ca_key.clone(),
    };
    let token = JoinToken::parse(&ud.join_token).context("user-data field `join_token`")?;
    let ca_sha256 = ca.fingerprint()?;
    if token.ca_sha256 != ca_sha256 {
        anyhow::bail!(
            "user-data: the join token pins CA {} but [master].ca_cert is CA {ca_sha256}; the two come from different `strata cluster init` runs",
            token.ca_sha256
        );
    }
    let me = render::find_me(&cluster, &ud.name, ud.network.address.map(|a| a.addr))?;
    let mut names = vec![
        me.address.to_string(),
        Ipv4Addr::LOCALHOST.to_string(),
        "localhost".to_string(),
        ud.name.clone(),
    ];
    names.dedup();
    let cert = ca.issue_master(&ud.name, &names, pki::CERT_LIFETIME)?;
    let etcd = EtcdPki::issue(&ca, &me, &names)?;
    Ok(Plan {
        cluster,
        ca,
        me,
        token,
        cert,
        etcd,
        names,
    })
}

/// Runs the control plane and this master's node membership until the
/// process ends, without a firewall (`strata cluster run-node`).
pub async fn run_master(opts: MasterOptions) -> anyhow::Result<()> {
    run_master_with(opts, None).await
}

/// [`run_master`] on a node whose `firewall` the daemon applied (the API's
/// and etcd's ports are in it from boot): its membership adds the overlay
/// to it ([`run_agent_with`]).
pub async fn run_master_with(
    opts: MasterOptions,
    firewall: Option<Arc<NodeFirewall>>,
) -> anyhow::Result<()> {
    tls::install_default_provider();
    let ud = &opts.user_data;
    let plan = plan(ud)?;
    let secrets = ud.master.as_ref().context("checked by plan")?;
    let pki_dir = opts.state_dir.join("master");
    write_private(&pki_dir.join("master.crt"), &plan.cert.cert_pem)?;
    write_private(&pki_dir.join("master.key"), &plan.cert.key_pem)?;
    // The master's etcd client: a certificate of the etcd CA, trusting
    // only it, for its own etcd and an external one alike.
    let etcd_tls = EtcdTls {
        ca_pem: plan.etcd.ca.cert_pem.clone(),
        cert_pem: plan.etcd.client.cert_pem.clone(),
        key_pem: plan.etcd.client.key_pem.clone(),
    };
    let connect = if plan.cluster.etcd.external.is_empty() {
        start_etcd(&plan, &opts.etcd_paths).await?;
        // Its own member first: the store uses one member at a time and
        // moves on when it fails, so masters spread over their own.
        let own = format!("https://{}:{}", plan.me.address, render::CLIENT_PORT);
        let mut endpoints = render::client_urls(&plan.cluster);
        endpoints.sort_by_key(|u| *u != own);
        EtcdConnect {
            endpoints,
            tls: Some(etcd_tls),
        }
    } else {
        tracing::info!(
            "using the external etcd at {}",
            plan.cluster.etcd.external.join(", ")
        );
        let tls = plan
            .cluster
            .etcd
            .external
            .iter()
            .any(|u| u.starts_with("https://"))
            .then_some(etcd_tls);
        EtcdConnect {
            endpoints: plan.cluster.etcd.external.clone(),
            tls,
        }
    };
    let store = Store::connect(&connect).await?;
    let builtin_etcd = plan.cluster.etcd.external.is_empty();
    wait_quorum(&store).await;
    seed_access(&store, &plan.token, &secrets.cli_token_sha256).await;
    // The shared watch loads the revoked certificates and user tokens
    // every request is checked against.
    store.start_watch().await;

    let settings = NodeSettings {
        format: Default::default(),
        cluster: plan.cluster.name.clone(),
        heartbeat_interval_seconds: plan.cluster.heartbeat.interval_seconds,
        grace_seconds: plan.cluster.heartbeat.grace_seconds,
        masters: plan.cluster.master_endpoints(),
        network: Some(control::model::NetworkSettings {
            overlay: (&plan.cluster.overlay).into(),
            dns: (&plan.cluster.dns).into(),
        }),
        insecure_registries: plan.cluster.registries.insecure.clone(),
        edge: (&plan.cluster.edge).into(),
    };
    let mut state = ApiState::new(
        store.clone(),
        plan.ca.clone(),
        settings,
        ud.name.clone(),
        Duration::from_secs(plan.cluster.certificates.node_lifetime_seconds),
    )?;
    state.reserve = (&plan.cluster.scheduler).into();
    state.edge = plan.cluster.edge.clone();
    state.vips = plan.cluster.vips.clone();
    state.bundles = match crate::upgrade::update_key(&opts.update_key) {
        Ok(key) => Some(Arc::new(crate::upgrade::store::BundleStore::new(
            opts.state_dir.join("bundles"),
            key,
        ))),
        Err(e) => {
            tracing::warn!("this master keeps no update bundles: {e:#}");
            None
        }
    };
    if let Some(bundles) = &state.bundles {
        tokio::spawn(
            super::bundles::Replicator {
                store: store.clone(),
                bundles: bundles.clone(),
                name: ud.name.clone(),
                state_dir: opts.state_dir.clone(),
            }
            .run(),
        );
    }
    let server_cert =
        tls::ServerCert::new(&plan.ca.cert_pem, &plan.cert.cert_pem, &plan.cert.key_pem)?;
    let server_tls = tls::server_config_with(&plan.ca.cert_pem, server_cert.clone())?;
    tokio::spawn(
        super::scheduler::Scheduler {
            store: store.clone(),
            name: ud.name.clone(),
            reserve: (&plan.cluster.scheduler).into(),
        }
        .run(),
    );
    tokio::spawn(keep_certs(
        CertKeeper {
            store,
            ca: plan.ca.clone(),
            name: ud.name.clone(),
            me: plan.me.clone(),
            names: plan.names.clone(),
            server: server_cert,
            pki_dir: pki_dir.clone(),
            etcd: builtin_etcd.then(|| opts.etcd_paths.clone()),
        },
        CertInfo::parse(&plan.cert.cert_pem, "the master's API certificate")?,
    ));
    let listen = opts
        .listen
        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, plan.cluster.api_port)));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} for the API"))?;
    tracing::info!(
        "API of cluster `{}` listening on https://{listen}",
        plan.cluster.name
    );
    let api = tokio::spawn(serve(
        listener,
        server_tls,
        Arc::new(state),
        Limits::default(),
    ));

    // A master is a node too: it joins through its own API.
    let own = format!("{}:{}", Ipv4Addr::LOCALHOST, listen.port());
    let node = run_agent_with(
        AgentOptions {
            state_dir: opts.state_dir.clone(),
            user_data: ud.clone(),
            endpoints: Some(vec![own]),
            underlay: Some(plan.me.address),
        },
        firewall,
    );
    tokio::select! {
        r = node => r,
        r = api => r.context("the API server stopped"),
    }
}

/// How often a master checks whether its certificates are due: two thirds
/// into their life, or a rotation asked for (`strata cluster
/// rotate-certs`).
pub const CERT_CHECK: Duration = Duration::from_secs(10);

/// What a master needs to replace its own certificates while it runs.
struct CertKeeper {
    store: Store,
    ca: Ca,
    name: String,
    me: render::Member,
    names: Vec<String>,
    /// What the API server presents.
    server: Arc<tls::ServerCert>,
    pki_dir: PathBuf,
    /// Where its own etcd reads its certificates (none: external etcd).
    etcd: Option<EtcdPaths>,
}

impl CertKeeper {
    /// Issues the API's certificate and the etcd member's again and puts
    /// them in place: the API presents the new one from the next
    /// handshake, and etcd reads its files at each handshake.
    fn renew(&self) -> anyhow::Result<CertInfo> {
        let cert = self
            .ca
            .issue_master(&self.name, &self.names, pki::CERT_LIFETIME)?;
        if let Some(paths) = &self.etcd {
            let etcd = EtcdPki::issue(&self.ca, &self.me, &self.names)?;
            let owner = user_ids("etcd");
            // Every file written before any is put in place: a failure
            // leaves etcd the old pairs, never a certificate with another
            // key.
            let files = etcd.files(paths);
            let fresh = files
                .iter()
                .map(|(path, content)| write_owned(path, content, owner))
                .collect::<anyhow::Result<Vec<_>>>()?;
            for ((path, _), fresh) in files.iter().zip(fresh) {
                std::fs::rename(&fresh, path)
                    .with_context(|| format!("cannot put {} in place", path.display()))?;
            }
        }
        write_private(&self.pki_dir.join("master.crt"), &cert.cert_pem)?;
        write_private(&self.pki_dir.join("master.key"), &cert.key_pem)?;
        self.server
            .set(&self.ca.cert_pem, &cert.cert_pem, &cert.key_pem)?;
        Ok(CertInfo::parse(
            &cert.cert_pem,
            "the master's API certificate",
        )?)
    }

    /// Records `info` for `cluster status`; a failure is logged.
    async fn record(&self, info: &CertInfo) {
        let cert = MasterCert {
            format: Default::default(),
            serial: info.serial.clone(),
            issued_at: info.signed_at_unix(),
            not_after: info.not_after_unix(),
        };
        if let Err(e) = self.store.put_master_cert(&self.name, &cert).await {
            tracing::warn!("cannot record this master's certificate in etcd: {e}");
        }
    }
}

/// Replaces the master's certificates when they are due (every
/// [`CERT_CHECK`]), without a restart: nodes and operators keep their
/// connections, and new ones see the new certificate.
async fn keep_certs(keeper: CertKeeper, mut current: CertInfo) {
    keeper.record(&current).await;
    loop {
        tokio::time::sleep(CERT_CHECK).await;
        // While etcd cannot say, the certificates' own age still counts.
        let rotation = match keeper.store.cert_rotation().await {
            Ok(r) => r.map(|r| r.at),
            Err(e) => {
                tracing::debug!("cannot read the certificate rotation: {e}");
                None
            }
        };
        if !current.due(std::time::SystemTime::now(), rotation) {
            continue;
        }
        match keeper.renew() {
            Ok(info) => {
                tracing::info!(
                    serial = %info.serial,
                    "master certificates replaced: the API's serial {} (valid until unix time {}) and etcd's",
                    info.serial,
                    info.not_after_unix()
                );
                keeper.record(&info).await;
                current = info;
            }
            Err(e) => tracing::warn!("cannot replace this master's certificates: {e:#}"),
        }
    }
}

/// Writes `content` beside `path` (`<name>.new`), owned by `owner`
/// (etcd's user), for the caller to rename into place; its path.
fn write_owned(path: &Path, content: &str, owner: Option<(u32, u32)>) -> anyhow::Result<PathBuf> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let fresh = path.with_file_name(name);
    write_private(&fresh, content)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&fresh, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {} to etcd", fresh.display()))?;
    }
    Ok(fresh)
}

async fn wait_quorum(store: &Store) {
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut last = String::new();
    loop {
        match store.check_quorum().await {
            Ok(()) => {
                tracing::info!("etcd has quorum");
                return;
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last {
                    tracing::info!("waiting for etcd quorum: {msg}");
                    last = msg;
                }
                crate::retry::wait(&mut backoff).await;
            }
        }
    }
}

/// Makes the records of the user-data's secrets where they are absent
/// (`Store::seed_access`): the join token, unlimited, and the CLI tokens,
/// an admin's each. Earlier releases kept only their hashes in the
/// user-data; contexts and user-data made then keep working, and `token
/// revoke` revokes them like any other. Retries until etcd takes it.
async fn seed_access(store: &Store, token: &JoinToken, cli_token_sha256: &[String]) {
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut last = String::new();
    loop {
        match store
            .seed_access(
                &token.secret_sha256(),
                cli_token_sha256,
                crate::clock::unix_secs(),
            )
            .await
        {
            Ok(made) => {
                if made > 0 {
                    tracing::info!(
                        "made {made} access record(s) for the join token and CLI tokens of the user-data"
                    );
                }
                return;
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last {
                    tracing::warn!("cannot record the user-data's tokens in etcd, retrying: {msg}");
                    last = msg;
                }
                crate::retry::wait(&mut backoff).await;
            }
        }
    }
}

/// Writes etcd's certificates, environment file and drop-in, then starts
/// `etcd.service` through systemd.
///
/// A master of an earlier release ran etcd with the cluster CA on both
/// ports: members and masters of the two releases refuse each other's
/// certificates, so while masters are upgraded one at a time only the side
/// that holds a majority of the members has a quorum, and the masters of
/// the other side wait for quorum until they are upgraded too.
async fn start_etcd(plan: &Plan, paths: &EtcdPaths) -> anyhow::Result<()> {
    let rendered = render::render(&plan.cluster, &plan.me, paths);
    let files = plan.etcd.files(paths);
    for (path, content) in &files {
        write_private(path, content)?;
    }
    for old in paths.legacy() {
        match std::fs::remove_file(&old) {
            Ok(()) => tracing::info!(
                path = %old.display(),
                "removed {}, etcd's file of an earlier release",
                old.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", old.display()));
            }
        }
    }
    write_private(&paths.env_file, &rendered.env)?;
    write_private(&paths.dropin, &rendered.dropin)?;
    std::fs::set_permissions(
        &paths.dropin,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("cannot chmod {}", paths.dropin.display()))?;
    // etcd runs as its own user: it must own its data and key. On an image
    // /var is the state partition, so /var/lib/etcd may not exist yet.
    let data_parent = paths
        .data_dir
        .parent()
        .unwrap_or(&paths.data_dir)
        .to_path_buf();
    std::fs::create_dir_all(&data_parent)
        .with_context(|| format!("cannot create {}", data_parent.display()))?;
    if let Some((uid, gid)) = user_ids("etcd") {
        let owned = [&data_parent, &paths.pki_dir]
            .into_iter()
            .chain(files.iter().map(|(path, _)| path));
        for p in owned {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {} to etcd", p.display()))?;
        }
    }
    let systemd = Systemd::system().await?;
    systemd.reload().await?;
    let job = systemd.start_unit("etcd.service").await?;
    tracing::info!(
        "started etcd.service as member `{}` (job {})",
        plan.me.name,
        job.as_str()
    );
    Ok(())
}

/// The uid and gid of `user` from `/etc/passwd`.
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string(Path::new("/etc/passwd")).ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user) && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}
