//! The node side of cluster membership, on every node (masters too): join
//! with the token unless the state directory already holds an identity,
//! register the node's resources (receiving its overlay subnet lease), start
//! the node's overlay and DNS ([`super::network`]), then heartbeat through
//! the API, renewing the node's certificate once two thirds of its life
//! have passed (every client of the node shares its [`Credentials`], so
//! the followers present the renewed certificate too). Every
//! failure is retried with backoff and said in the log and in the health
//! file (`<state>/health/cluster.json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use configs::user_data::UserData;
use serde::Serialize;

use crate::api::client::{ApiClient, Auth, ClientError, Credentials};
use crate::api::tls;
use crate::cluster::assignments::TaskNetReceiver;
use crate::cluster::identity::{Identity, IdentityDir, write_private};
use crate::cluster::network;
use crate::cluster::sysinfo;
use crate::firewall::NodeFirewall;
use crate::images::PullOptions;
use crate::pki::{CertInfo, JoinToken, NodeKey};
use crate::retry::Backoff;
use control::model::{CertRenewal, JoinRequest, NodeInfo, NodeSettings, Registered};

/// What [`run_agent`] needs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Where the identity and health are kept (`/var/lib/strata`).
    pub state_dir: PathBuf,
    pub user_data: UserData,
    /// API endpoints to use instead of the user-data's `masters` (a master
    /// talks to its own API on loopback).
    pub endpoints: Option<Vec<String>>,
    /// The node's underlay address when the connection to the API does not
    /// show it (a master talks to its own API on loopback).
    pub underlay: Option<std::net::Ipv4Addr>,
}

/// The phase of membership, as the health file shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Joining,
    Registering,
    Ready,
    Retrying,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Joining => "joining",
            Phase::Registering => "registering",
            Phase::Ready => "ready",
            Phase::Retrying => "retrying",
        })
    }
}

#[derive(Serialize, serde::Deserialize)]
struct Health {
    phase: Phase,
    message: String,
    at: u64,
}

/// The membership health file under `state_dir`.
fn health_path(state_dir: &Path) -> PathBuf {
    state_dir.join("health").join("cluster.json")
}

/// The membership phase last recorded under `state_dir` and its message;
/// joining while nothing readable is recorded yet.
pub fn read_phase(state_dir: &Path) -> (Phase, String) {
    std::fs::read_to_string(health_path(state_dir))
        .ok()
        .and_then(|text| serde_json::from_str::<Health>(&text).ok())
        .map_or_else(
            || (Phase::Joining, "no membership reported yet".to_string()),
            |h| (h.phase, h.message),
        )
}

struct Reporter {
    path: PathBuf,
    last: Option<(Phase, String)>,
}

impl Reporter {
    /// Logs and records a phase change; repeated identical reports are
    /// written once.
    fn report(&mut self, phase: Phase, message: &str) {
        if self
            .last
            .as_ref()
            .is_some_and(|(p, m)| *p == phase && m == message)
        {
            return;
        }
        tracing::info!("{}", message);
        self.last = Some((phase, message.to_string()));
        let text = serde_json::to_string(&Health {
            phase,
            message: message.to_string(),
            at: crate::clock::unix_secs(),
        })
        .expect("health always serializes");
        if let Err(e) = write_private(&self.path, &text) {
            tracing::warn!("cannot write the health file: {e:#}");
        }
    }
}

/// Joining and registering retry from 0.5 s, doubling up to 30 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
}

/// Whether an error means the master no longer accepts this node's
/// certificate or record, so the node must join again: decided by the
/// error's code (`control::api::code::REJOIN`), never by its status or
/// text, so that no other refusal (a role, a store that is down, a master
/// that has not loaded its access lists) makes a node drop a certificate
/// that works.
fn needs_rejoin(e: &ClientError) -> bool {
    match e {
        ClientError::Api {
            code: Some(code), ..
        } => control::api::code::REJOIN.contains(&code.as_str()),
        // A master of an earlier release sends no code: there a 404 or 403
        // of a node's own route meant exactly that.
        ClientError::Api {
            status, code: None, ..
        } => *status == 404 || *status == 403,
        ClientError::Unreachable {
            identity_refused, ..
        } => *identity_refused,
        ClientError::Decode { .. } => false,
    }
}

/// Joins (if needed), registers and heartbeats until the process ends,
/// without a firewall (`strata cluster run-node`). Returns only for errors
/// no retry can fix (a malformed join token, an unwritable state
/// directory).
pub async fn run_agent(opts: AgentOptions) -> anyhow::Result<()> {
    run_agent_with(opts, None).await
}

/// [`run_agent`] on a node whose `firewall` the daemon applied at boot: the
/// node's network ([`network`]) adds the overlay to it once the node holds
/// a lease, and follows the node list.
pub async fn run_agent_with(
    opts: AgentOptions,
    firewall: Option<Arc<NodeFirewall>>,
) -> anyhow::Result<()> {
    tls::install_default_provider();
    let ud = &opts.user_data;
    let token = JoinToken::parse(&ud.join_token).context("user-data field `join_token`")?;
    let dir = IdentityDir::new(&opts.state_dir);
    let mut health = Reporter {
        path: health_path(&opts.state_dir),
        last: None,
    };
    let key = dir.key_or_create()?;
    let endpoints = opts.endpoints.clone().unwrap_or_else(|| ud.masters.clone());
    // Started after the first registration; kept across rejoins that keep
    // the lease.
    let mut net: Option<network::Running> = None;
    // Set when the masters refused this node's identity (its record was
    // removed): the kept identity must not be used again.
    let mut rejoin = false;
    // The task follower starts once, after the first registration.
    let mut tasks_started = false;
    // The overlay hands tasks their network through this once it is up.
    let (tasks_net, _) = tokio::sync::watch::channel(None);
    // The task follower hands the edge its certificates through this
    // (public agents).
    let (edge_certs, _) = tokio::sync::watch::channel(Vec::new());
    // The node's certificate as every client of this agent presents it.
    let mut creds: Option<Credentials> = None;
    loop {
        let loaded = if std::mem::take(&mut rejoin) {
            Ok(None)
        } else {
            dir.load()
        };
        let kept = match loaded {
            Ok(Some(id)) => match id.check(&ud.name, &token.ca_sha256, SystemTime::now()) {
                Ok(_) => Some(id),
                Err(stale) => {
                    tracing::info!("{stale}: joining again with the same key");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::info!("{e:#}: joining again");
                None
            }
        };
        let identity = match kept {
            Some(id) => {
                tracing::info!(
                    "node `{}` keeps its identity from {}",
                    ud.name,
                    dir.dir.display()
                );
                id
            }
            None => {
                let id = join(ud, &token, &key.key_pem, &endpoints, &mut health).await?;
                dir.save(&id)?;
                id
            }
        };
        let client_tls = tls::client_config(
            &identity.ca_pem,
            Some((&identity.cert_pem, &identity.key_pem)),
        )?;
        // The followers started with an earlier identity present this one
        // from their next request on.
        let creds = match &creds {
            Some(c) => {
                c.set(client_tls);
                c.clone()
            }
            None => creds.insert(Credentials::new(client_tls)).clone(),
        };
        // Heartbeats must get through within the grace period even when a
        // master vanished: give up on one master well before that.
        let grace = Duration::from_secs(u64::from(identity.settings.grace_seconds.max(2)));
        let client = ApiClient::with_credentials(endpoints.clone(), creds.clone(), Auth::Tls)
            .with_timeout(grace / 3);
        let Some(registered) = register(ud, &opts, &client, &mut health).await else {
            rejoin = true;
            continue;
        };
        // A node removed and joined again may hold another subnet now.
        if net.as_ref().map(|n| n.subnet) != registered.subnet {
            drop(net.take());
            net = start_network(
                ud,
                &opts,
                &client,
                &creds,
                &endpoints,
                &registered,
                &tasks_net,
                &edge_certs,
                firewall.as_ref(),
            )?;
        }
        if !tasks_started {
            let pull = PullOptions {
                insecure_registries: registered.settings.insecure_registries.clone(),
                ..PullOptions::default()
            };
            // Tasks wait for the overlay when the node has one, so none
            // starts outside it.
            let network = net.is_some().then(|| tasks_net.subscribe());
            start_tasks(&opts, &creds, &endpoints, pull, network, edge_certs.clone())?;
            tasks_started = true;
        }
        let settings = registered.settings;
        let mut renewer = Renewer::new(&dir, &key, &creds, identity)?;
        heartbeat(ud, &opts, &client, settings, &mut health, &mut renewer).await;
        rejoin = true;
    }
}

async fn join(
    ud: &UserData,
    token: &JoinToken,
    key_pem: &str,
    endpoints: &[String],
    health: &mut Reporter,
) -> anyhow::Result<Identity> {
    let key = crate::pki::NodeKey {
        key_pem: key_pem.to_string(),
    };
    let csr_pem = key.csr(&ud.name)?;
    let client = ApiClient::new(
        endpoints.to_vec(),
        tls::pinned_client_config(&token.ca_sha256)?,
        Auth::Tls,
    );
    let req = JoinRequest {
        format: Default::default(),
        token: ud.join_token.clone(),
        name: ud.name.clone(),
        role: ud.role,
        csr_pem,
    };
    let mut backoff = backoff();
    health.report(
        Phase::Joining,
        &format!(
            "node `{}` joining through {}",
            ud.name,
            endpoints.join(", ")
        ),
    );
    loop {
        match client.join(&req).await {
            Ok(resp) => {
                tracing::info!(
                    "node `{}` joined cluster `{}`",
                    ud.name,
                    resp.settings.cluster
                );
                return Ok(Identity {
                    key_pem: key_pem.to_string(),
                    cert_pem: resp.cert_pem,
                    ca_pem: resp.ca_pem,
                    settings: resp.settings,
                });
            }
            Err(e) => {
                health.report(
                    Phase::Retrying,
                    &format!("join failed, retrying in {:?}: {e}", backoff.delay()),
                );
                crate::retry::wait(&mut backoff).await;
            }
        }
    }
}

/// Starts the overlay and DNS when the cluster has an overlay and the
/// node holds a lease; `None` (logged) otherwise, and the node keeps its
/// boot firewall.
#[allow(clippy::too_many_arguments)]
fn start_network(
    ud: &UserData,
    opts: &AgentOptions,
    client: &ApiClient,
    creds: &Credentials,
    endpoints: &[String],
    registered: &Registered,
    tasks_net: &network::TaskNetSender,
    edge_certs: &network::EdgeCertSender,
    firewall: Option<&Arc<NodeFirewall>>,
) -> anyhow::Result<Option<network::Running>> {
    let (Some(settings), Some(subnet)) = (&registered.settings.network, registered.subnet) else {
        tracing::info!(
            "the masters hand out no overlay settings or lease: no overlay on this node"
        );
        return Ok(None);
    };
    let Some(underlay_ip) = underlay_ip(ud, opts, client) else {
        tracing::info!("no underlay address known for this node: no overlay");
        return Ok(None);
    };
    // A loopback underlay (a whole cluster on one host's loopback, as the
    // cluster benchmark runs it) cannot carry a tunnel; building one would
    // put the overlay's devices into the host's own namespace.
    if underlay_ip.is_loopback() {
        tracing::info!("the underlay address {underlay_ip} is loopback: no overlay on this node");
        return Ok(None);
    }
    // Its own connection, so that following the node list (a long poll)
    // never holds up a heartbeat.
    let follower = ApiClient::with_credentials(endpoints.to_vec(), creds.clone(), Auth::Tls)
        .with_timeout(network::WATCH_TIMEOUT);
    let reporter = ApiClient::with_credentials(endpoints.to_vec(), creds.clone(), Auth::Tls)
        .with_timeout(Duration::from_secs(10));
    Ok(Some(network::spawn(
        network::NodeNet {
            name: ud.name.clone(),
            state_dir: opts.state_dir.clone(),
            underlay_ip,
            subnet,
            settings: settings.clone(),
            firewall: firewall.cloned(),
            edge: (ud.role == configs::Role::Public).then(|| network::EdgeNode {
                paths: crate::edge::EdgePaths::new(opts.state_dir.join("edge")),
                ports: registered.settings.edge,
                certs: edge_certs.subscribe(),
            }),
        },
        network::NetClients { follower, reporter },
        tasks_net.clone(),
    )))
}

/// Starts following this node's task assignments
/// ([`crate::cluster::assignments`]), with connections of its own.
fn start_tasks(
    opts: &AgentOptions,
    creds: &Credentials,
    endpoints: &[String],
    pull: PullOptions,
    network: Option<TaskNetReceiver>,
    edge_certs: network::EdgeCertSender,
) -> anyhow::Result<()> {
    let client = |timeout: Duration| {
        ApiClient::with_credentials(endpoints.to_vec(), creds.clone(), Auth::Tls)
            .with_timeout(timeout)
    };
    let upgrader = crate::cluster::upgrade::Upgrader::new(
        client(Duration::from_secs(10)),
        opts.user_data.name.clone(),
        opts.state_dir.clone(),
        opts.user_data.role,
    );
    crate::cluster::assignments::spawn(
        opts.state_dir.clone(),
        client(network::WATCH_TIMEOUT),
        client(Duration::from_secs(10)),
        pull,
        network,
        Some(upgrader),
        Some(edge_certs),
    )
}

/// The node's underlay address: given by the caller (masters), else the
/// address its connection to the API comes from, else the user-data's.
fn underlay_ip(
    ud: &UserData,
    opts: &AgentOptions,
    client: &ApiClient,
) -> Option<std::net::Ipv4Addr> {
    opts.underlay
        .or_else(|| match client.local_addr().map(|a| a.ip()) {
            Some(std::net::IpAddr::V4(a)) if !a.is_loopback() => Some(a),
            _ => None,
        })
        .or_else(|| ud.network.address.map(|a| a.addr))
}

fn node_info(ud: &UserData, opts: &AgentOptions, client: &ApiClient) -> NodeInfo {
    let mut addresses = Vec::new();
    if let Some(u) = opts.underlay {
        addresses.push(u.to_string());
    }
    if let Some(local) = client.local_addr() {
        let local = local.ip().to_string();
        if !addresses.contains(&local) {
            addresses.push(local);
        }
    }
    if let Some(a) = ud.network.address {
        let a = a.addr.to_string();
        if !addresses.contains(&a) {
            addresses.push(a);
        }
    }
    NodeInfo {
        format: Default::default(),
        name: ud.name.clone(),
        role: ud.role,
        addresses,
        cpus: sysinfo::cpus(),
        memory_bytes: sysinfo::memory_bytes(),
        disk_bytes: sysinfo::disk_bytes(&opts.state_dir),
        attributes: sysinfo::attributes(),
        image: crate::upgrade::image_status(&opts.state_dir, ud.role),
    }
}

/// Registers; `None` when the node must join again.
async fn register(
    ud: &UserData,
    opts: &AgentOptions,
    client: &ApiClient,
    health: &mut Reporter,
) -> Option<Registered> {
    let mut backoff = backoff();
    health.report(
        Phase::Registering,
        &format!("node `{}` registering", ud.name),
    );
    loop {
        // The first call connects, so the address the masters see is known
        // once a call went through: register twice when it was unknown.
        let fresh = client.local_addr().is_none();
        let info = node_info(ud, opts, client);
        match client.register(&info).await {
            Ok(_) if fresh => continue,
            Ok(settings) => return Some(settings),
            Err(e) if needs_rejoin(&e) => {
                health.report(
                    Phase::Joining,
                    &format!("registration refused, joining again: {e}"),
                );
                return None;
            }
            Err(e) => {
                health.report(
                    Phase::Retrying,
                    &format!(
                        "registration failed, retrying in {:?}: {e}",
                        backoff.delay()
                    ),
                );
                crate::retry::wait(&mut backoff).await;
            }
        }
    }
}

/// Renews the node's certificate when it is due: a signing request for
/// the node's own key, sent with the current certificate; the answer is
/// kept in the identity directory and handed to every client through the
/// shared [`Credentials`].
struct Renewer<'a> {
    dir: &'a IdentityDir,
    key: &'a NodeKey,
    creds: &'a Credentials,
    identity: Identity,
    /// The current certificate.
    info: CertInfo,
    /// The certificate rotation the last heartbeat named: certificates
    /// signed before it are replaced.
    rotation: Option<u64>,
    /// After a failed renewal, when to try again.
    retry_at: Option<Instant>,
}

/// How long a node waits after a failed renewal before it tries again.
const RENEW_RETRY: Duration = Duration::from_secs(30);

impl<'a> Renewer<'a> {
    fn new(
        dir: &'a IdentityDir,
        key: &'a NodeKey,
        creds: &'a Credentials,
        identity: Identity,
    ) -> anyhow::Result<Renewer<'a>> {
        let info = CertInfo::parse(&identity.cert_pem, "the node certificate")?;
        Ok(Renewer {
            dir,
            key,
            creds,
            identity,
            info,
            rotation: None,
            retry_at: None,
        })
    }

    /// Renews the certificate if it is due, at two thirds of its life or
    /// by a rotation (and no failed attempt is being waited out).
    async fn renew_if_due(&mut self, name: &str, client: &ApiClient) {
        if !self.info.due(SystemTime::now(), self.rotation)
            || self.retry_at.is_some_and(|t| Instant::now() < t)
        {
            return;
        }
        match self.renew(name, client).await {
            Ok(info) => {
                self.retry_at = None;
                self.info = info.clone();
                tracing::info!(
                    serial = %info.serial,
                    "node certificate renewed: serial {}, valid until unix time {}",
                    info.serial,
                    info.not_after_unix()
                );
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + RENEW_RETRY);
                tracing::warn!(
                    "cannot renew the node certificate, trying again in {}s: {e:#}",
                    RENEW_RETRY.as_secs()
                );
            }
        }
    }

    async fn renew(&mut self, name: &str, client: &ApiClient) -> anyhow::Result<CertInfo> {
        let req = CertRenewal {
            format: Default::default(),
            csr_pem: self.key.csr(name)?,
        };
        let renewed = client.renew_cert(name, &req).await?;
        let identity = Identity {
            cert_pem: renewed.cert_pem,
            ..self.identity.clone()
        };
        let info = CertInfo::parse(&identity.cert_pem, "the renewed certificate")?;
        let ours = self.key.public_sha256()?;
        if info.common_name != name || info.key_sha256 != ours {
            anyhow::bail!(
                "the renewed certificate is for `{}` with key {}, not for this node's key",
                info.common_name,
                info.key_sha256
            );
        }
        let tls = tls::client_config(
            &identity.ca_pem,
            Some((&identity.cert_pem, &identity.key_pem)),
        )?;
        self.dir.save(&identity)?;
        self.creds.set(tls);
        self.identity = identity;
        Ok(info)
    }
}

/// Heartbeats (renewing the certificate when it is due) until the master
/// says the node must join again.
/// Every how many heartbeats the node looks whether its image state
/// changed.
const IMAGE_CHECK_BEATS: u64 = 5;

async fn heartbeat(
    ud: &UserData,
    opts: &AgentOptions,
    client: &ApiClient,
    mut settings: NodeSettings,
    health: &mut Reporter,
    renewer: &mut Renewer<'_>,
) {
    // What the node said of its image when it registered: a change (its
    // new slot blessed, an upgrade judged) is registered again, so that
    // the masters show it.
    let mut image = crate::upgrade::image_status(&opts.state_dir, ud.role);
    let mut beats = 0u64;
    loop {
        beats += 1;
        if beats % IMAGE_CHECK_BEATS == 0 {
            let now = crate::upgrade::image_status(&opts.state_dir, ud.role);
            if now != image {
                let info = node_info(ud, opts, client);
                match client.register(&info).await {
                    Ok(_) => image = now,
                    Err(e) => tracing::warn!("cannot register the node's new image state: {e}"),
                }
            }
        }
        renewer.renew_if_due(&ud.name, client).await;
        match client.heartbeat(&ud.name).await {
            Ok(resp) => {
                if resp.renew_signed_before != renewer.rotation {
                    renewer.rotation = resp.renew_signed_before;
                    // A rotation: renewed now, not at the next beat.
                    renewer.renew_if_due(&ud.name, client).await;
                }
                health.report(
                    Phase::Ready,
                    &format!(
                        "node `{}` is Ready in cluster `{}` (heartbeat every {}s)",
                        ud.name, resp.settings.cluster, resp.settings.heartbeat_interval_seconds
                    ),
                );
                settings = resp.settings;
            }
            Err(e) if needs_rejoin(&e) => {
                health.report(
                    Phase::Joining,
                    &format!("heartbeat refused, joining again: {e}"),
                );
                return;
            }
            Err(e) => health.report(Phase::Retrying, &format!("heartbeat failed, retrying: {e}")),
        }
        tokio::time::sleep(Duration::from_secs(u64::from(
            settings.heartbeat_interval_seconds.max(1),
        )))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::needs_rejoin;
    use crate::api::client::ClientError;

    fn api(status: u16, code: Option<&str>) -> ClientError {
        ClientError::Api {
            endpoint: "m1:6443".into(),
            status,
            message: "refused".into(),
            code: code.map(str::to_string),
        }
    }

    #[test]
    fn a_node_joins_again_only_when_its_identity_is_refused() {
        for code in [
            "not-joined",
            "wrong-key",
            "other-node",
            "cert-revoked",
            "cert-expired",
        ] {
            assert!(needs_rejoin(&api(403, Some(code))), "{code}");
        }
        for (status, code) in [
            (403, "role-forbids"),
            (401, "join-token-expired"),
            (403, "node-removed"),
            (503, "access-not-loaded"),
            (503, "store-unavailable"),
            (404, "no-such-task"),
        ] {
            assert!(!needs_rejoin(&api(status, Some(code))), "{code}");
        }
        // Masters that predate codes.
        assert!(needs_rejoin(&api(404, None)));
        assert!(needs_rejoin(&api(403, None)));
        assert!(!needs_rejoin(&api(503, None)));
        assert!(!needs_rejoin(&ClientError::Unreachable {
            failures: String::new(),
            identity_refused: false,
        }));
    }
}
