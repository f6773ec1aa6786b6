//! The node side of cluster membership, on every node (masters too): join
//! with the token unless the state directory already holds an identity,
//! register the node's resources, then heartbeat through the API. Every
//! failure is retried with backoff and said in the log and in the health
//! file (`<state>/health/cluster.json`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use configs::user_data::UserData;
use serde::Serialize;

use crate::api::client::{ApiClient, Auth, ClientError};
use crate::api::tls;
use crate::cluster::identity::{Identity, IdentityDir, write_private};
use crate::cluster::model::{HeartbeatResponse, JoinRequest, JoinResponse, NodeInfo, NodeSettings};
use crate::cluster::{log, sysinfo, unix_now};
use crate::pki::JoinToken;

/// What [`run_agent`] needs.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// Where the identity and health are kept (`/var/lib/strata`).
    pub state_dir: PathBuf,
    pub user_data: UserData,
    /// API endpoints to use instead of the user-data's `masters` (a master
    /// talks to its own API on loopback).
    pub endpoints: Option<Vec<String>>,
}

/// The phase of membership, as the health file shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Joining,
    Registering,
    Ready,
    Retrying,
}

#[derive(Serialize)]
struct Health<'a> {
    phase: Phase,
    message: &'a str,
    at: u64,
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
        log(message);
        self.last = Some((phase, message.to_string()));
        let text = serde_json::to_string(&Health {
            phase,
            message,
            at: unix_now(),
        })
        .expect("health always serializes");
        if let Err(e) = write_private(&self.path, &text) {
            log(&format!("cannot write the health file: {e:#}"));
        }
    }
}

struct Backoff(Duration);

impl Backoff {
    const MAX: Duration = Duration::from_secs(30);
    fn new() -> Backoff {
        Backoff(Duration::from_millis(500))
    }
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(Backoff::MAX);
    }
}

/// Whether an error means the master no longer accepts this node's
/// certificate or record, so the node must join again.
fn needs_rejoin(e: &ClientError) -> bool {
    match e {
        ClientError::Api { status, .. } => *status == 404 || *status == 403,
        ClientError::Unreachable(m) => m.contains("this node's certificate"),
        ClientError::Decode { .. } => false,
    }
}

/// Joins (if needed), registers and heartbeats until the process ends.
/// Returns only for errors no retry can fix (a malformed join token, an
/// unwritable state directory).
pub async fn run_agent(opts: AgentOptions) -> anyhow::Result<()> {
    tls::install_default_provider();
    let ud = &opts.user_data;
    let token = JoinToken::parse(&ud.join_token).context("user-data field `join_token`")?;
    let dir = IdentityDir::new(&opts.state_dir);
    let mut health = Reporter {
        path: opts.state_dir.join("health").join("cluster.json"),
        last: None,
    };
    let key = dir.key_or_create()?;
    let endpoints = opts.endpoints.clone().unwrap_or_else(|| ud.masters.clone());
    loop {
        let kept = match dir.load() {
            Ok(Some(id)) => match id.check(&ud.name, &token.ca_sha256, SystemTime::now()) {
                Ok(_) => Some(id),
                Err(stale) => {
                    log(&format!("{stale}: joining again with the same key"));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                log(&format!("{e:#}: joining again"));
                None
            }
        };
        let identity = match kept {
            Some(id) => {
                log(&format!(
                    "node `{}` keeps its identity from {}",
                    ud.name,
                    dir.dir.display()
                ));
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
        // Heartbeats must get through within the grace period even when a
        // master vanished: give up on one master well before that.
        let grace = Duration::from_secs(u64::from(identity.settings.grace_seconds.max(2)));
        let client =
            ApiClient::new(endpoints.clone(), client_tls, Auth::Tls).with_timeout(grace / 3);
        let Some(settings) = register(ud, &opts, &client, &mut health).await else {
            continue;
        };
        heartbeat(ud, &client, settings, &mut health).await;
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
        token: ud.join_token.clone(),
        name: ud.name.clone(),
        role: ud.role,
        csr_pem,
    };
    let mut backoff = Backoff::new();
    health.report(
        Phase::Joining,
        &format!(
            "node `{}` joining through {}",
            ud.name,
            endpoints.join(", ")
        ),
    );
    loop {
        match client.post::<_, JoinResponse>("/v1/join", &req).await {
            Ok(resp) => {
                log(&format!(
                    "node `{}` joined cluster `{}`",
                    ud.name, resp.settings.cluster
                ));
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
                    &format!("join failed, retrying in {:?}: {e}", backoff.0),
                );
                backoff.wait().await;
            }
        }
    }
}

fn node_info(ud: &UserData, opts: &AgentOptions, client: &ApiClient) -> NodeInfo {
    let mut addresses = Vec::new();
    if let Some(local) = client.local_addr() {
        addresses.push(local.ip().to_string());
    }
    if let Some(a) = ud.network.address {
        let a = a.addr.to_string();
        if !addresses.contains(&a) {
            addresses.push(a);
        }
    }
    NodeInfo {
        name: ud.name.clone(),
        role: ud.role,
        addresses,
        cpus: sysinfo::cpus(),
        memory_bytes: sysinfo::memory_bytes(),
        disk_bytes: sysinfo::disk_bytes(&opts.state_dir),
        attributes: sysinfo::attributes(),
    }
}

/// Registers; `None` when the node must join again.
async fn register(
    ud: &UserData,
    opts: &AgentOptions,
    client: &ApiClient,
    health: &mut Reporter,
) -> Option<NodeSettings> {
    let mut backoff = Backoff::new();
    health.report(
        Phase::Registering,
        &format!("node `{}` registering", ud.name),
    );
    loop {
        // The first call connects, so the address the masters see is known
        // once a call went through: register twice when it was unknown.
        let fresh = client.local_addr().is_none();
        let info = node_info(ud, opts, client);
        match client
            .post::<_, NodeSettings>(&format!("/v1/nodes/{}", ud.name), &info)
            .await
        {
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
                    &format!("registration failed, retrying in {:?}: {e}", backoff.0),
                );
                backoff.wait().await;
            }
        }
    }
}

/// Heartbeats until the master says the node must join again.
async fn heartbeat(
    ud: &UserData,
    client: &ApiClient,
    mut settings: NodeSettings,
    health: &mut Reporter,
) {
    let path = format!("/v1/nodes/{}/heartbeat", ud.name);
    loop {
        match client.post::<_, HeartbeatResponse>(&path, &()).await {
            Ok(resp) => {
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
