//! Nodes: registering (`POST /v1/nodes/{name}`), heartbeats, renewing a
//! node's certificate, the node list and one node, the firewall each
//! reports in force, and removing a node.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use configs::net::Ipv4Cidr;
use control::model::{
    CertRenewal, Cordon, DEFAULT_DRAIN_DEADLINE_SECONDS, DrainRequest, HeartbeatResponse,
    MAX_DRAIN_DEADLINE_SECONDS, NodeInfo, NodeRecord, NodeStatus, Registered, RenewedCert,
    node_statuses,
};

use crate::api::server::ApiState;
use crate::api::server::audit::AuditNote;
use crate::api::server::auth::{DrainNodes, Operator, ReadState, RemoveNodes, ThisNode};
use crate::api::server::error::ApiError;
use crate::pki::CertInfo;

/// How often a registration reads and writes the node's record again when
/// another write came between.
const REGISTER_ATTEMPTS: u32 = 8;

/// Checks that the node exists and that its certificate holds its key.
pub async fn check_registered(state: &ApiState, cert: &CertInfo) -> Result<NodeRecord, ApiError> {
    let record = state
        .store
        .get_node(&cert.common_name)
        .await?
        .ok_or_else(|| ApiError::NotJoined(cert.common_name.clone()))?;
    if record.key_sha256 != cert.key_sha256 {
        return Err(ApiError::WrongKey(cert.common_name.clone()));
    }
    Ok(record)
}

pub async fn register(
    State(state): State<Arc<ApiState>>,
    ThisNode { name, cert }: ThisNode,
    Json(info): Json<NodeInfo>,
) -> Result<Json<Registered>, ApiError> {
    if info.name != name {
        return Err(ApiError::MisaddressedRegistration {
            sent: info.name,
            path: name,
        });
    }
    // Written only over the record read (a node removed meanwhile is not
    // written back), with the certificate the node presented recorded so
    // that removing it revokes that certificate too.
    let mut subnet = None;
    let mut tries = 0;
    let record = loop {
        tries += 1;
        let (old, revision) = state
            .store
            .get_node_at(&name)
            .await?
            .ok_or_else(|| ApiError::NotJoined(name.clone()))?;
        if old.key_sha256 != cert.key_sha256 {
            return Err(ApiError::WrongKey(name));
        }
        // The role is the join's (its token may limit it, and public
        // agents get the edge's keys): a registration never changes it.
        if old.info.role != info.role {
            return Err(ApiError::RoleChanged {
                node: name,
                joined: old.info.role,
                sent: info.role,
            });
        }
        if tries == 1 {
            subnet = lease_for(&state, &name).await?;
        }
        let record = old.registered(info.clone(), cert.issued(), crate::clock::unix_secs());
        if state.store.put_node_if(&record, revision).await? {
            break record;
        }
        if tries == REGISTER_ATTEMPTS {
            return Err(ApiError::Store(crate::etcd::Error::Conflict {
                what: format!("the registration of node `{name}`"),
                attempts: REGISTER_ATTEMPTS,
            }));
        }
    };
    state
        .registered
        .lock()
        .expect("registered lock poisoned")
        .insert(name.clone(), cert.key_sha256.clone());
    tracing::info!(
        node = %name,
        "api: node `{name}` ({}) registered: {} CPU(s), {} MiB memory, addresses {}",
        record.info.role,
        record.info.cpus,
        record.info.memory_bytes >> 20,
        record.info.addresses.join(", ")
    );
    if let Some(subnet) = subnet {
        tracing::info!(node = %name, %subnet, "api: node `{name}` holds overlay subnet {subnet}");
    }
    Ok(Json(Registered {
        settings: state.settings.clone(),
        subnet,
    }))
}

/// The node's overlay subnet: its lease, or a new one (none when the
/// cluster has no overlay settings or every subnet is leased).
async fn lease_for(state: &ApiState, name: &str) -> Result<Option<Ipv4Cidr>, ApiError> {
    let Some(net) = &state.settings.network else {
        return Ok(None);
    };
    match state
        .store
        .lease_subnet(net.overlay.cidr, net.overlay.subnet_prefix, name)
        .await
    {
        Ok(subnet) => Ok(Some(subnet)),
        // A full overlay leaves the node without one, not out of the
        // cluster: it still registers and heartbeats, and says so.
        Err(crate::etcd::Error::Lease(e @ control::lease::LeaseError::Full { .. })) => {
            tracing::info!(node = %name, "api: {e}: node `{name}` registers without an overlay subnet");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes a node: its record, liveness and overlay lease, in one etcd
/// transaction that also revokes its certificates and records the removal
/// (it joins again only with a join token made after it). Only an
/// operator whose role may manage nodes may.
pub async fn remove_node(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<RemoveNodes>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(removal) = state
        .store
        .remove_node(&name, crate::clock::unix_secs())
        .await?
    else {
        return Err(ApiError::NoSuchNode(name));
    };
    state
        .registered
        .lock()
        .expect("registered lock poisoned")
        .remove(&name);
    tracing::info!(
        node = %name,
        by = %user.id,
        revoked = removal.revoked.len(),
        "api: node `{name}` removed by {}: its overlay lease released, {} certificate(s) revoked",
        user.label(),
        removal.revoked.len()
    );
    Ok(Json(serde_json::json!({
        "removed": name,
        "revoked": removal.revoked.iter().map(|c| c.serial.as_str()).collect::<Vec<_>>(),
    })))
}

/// Drains a node: the scheduler places nothing new there and moves its app
/// instances away; its pinned tasks stop until it is uncordoned. Draining
/// a drained node again sets a new deadline. Answers the node as it is now.
pub async fn drain_node(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<DrainNodes>,
    Path(name): Path<String>,
    Json(req): Json<DrainRequest>,
) -> Result<(Extension<AuditNote>, Json<NodeStatus>), ApiError> {
    let deadline = req
        .deadline_seconds
        .unwrap_or(DEFAULT_DRAIN_DEADLINE_SECONDS);
    if deadline > MAX_DRAIN_DEADLINE_SECONDS {
        return Err(ApiError::BadDrain(format!(
            "a deadline of {deadline}s is longer than the {MAX_DRAIN_DEADLINE_SECONDS}s a drain may wait"
        )));
    }
    let now = crate::clock::unix_secs();
    let cordon = Cordon {
        format: Default::default(),
        since: now,
        deadline: now + deadline,
        by: user.label(),
    };
    if !state.store.put_cordon(&name, &cordon).await? {
        return Err(ApiError::NoSuchNode(name));
    }
    tracing::info!(
        node = %name,
        by = %user.id,
        "api: node `{name}` drained by {} (deadline {deadline}s)",
        user.label()
    );
    let note = AuditNote {
        who: None,
        detail: format!("drain {name}, deadline {deadline}s"),
    };
    Ok((Extension(note), Json(one_status(&state, &name).await?)))
}

/// Uncordons a node: it takes work again and its pinned tasks start.
pub async fn uncordon_node(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<DrainNodes>,
    Path(name): Path<String>,
) -> Result<(Extension<AuditNote>, Json<NodeStatus>), ApiError> {
    let status = one_status(&state, &name).await?;
    if status.cordon.is_some() {
        state.store.delete_cordon(&name).await?;
        tracing::info!(node = %name, by = %user.id, "api: node `{name}` uncordoned by {}", user.label());
    }
    let note = AuditNote {
        who: None,
        detail: format!("uncordon {name}"),
    };
    Ok((Extension(note), Json(one_status(&state, &name).await?)))
}

async fn one_status(state: &ApiState, name: &str) -> Result<NodeStatus, ApiError> {
    statuses(state)
        .await?
        .into_iter()
        .find(|n| n.record.info.name == name)
        .ok_or_else(|| ApiError::NoSuchNode(name.to_string()))
}

pub async fn heartbeat(
    State(state): State<Arc<ApiState>>,
    ThisNode { name, cert }: ThisNode,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let known = state
        .registered
        .lock()
        .expect("registered lock poisoned")
        .get(&name)
        == Some(&cert.key_sha256);
    if !known {
        check_registered(&state, &cert).await?;
        state
            .registered
            .lock()
            .expect("registered lock poisoned")
            .insert(name.clone(), cert.key_sha256.clone());
    }
    let ttl = state
        .store
        .heartbeat(
            &name,
            state.settings.grace_seconds,
            crate::clock::unix_secs(),
        )
        .await?;
    Ok(Json(HeartbeatResponse {
        format: Default::default(),
        ttl_seconds: ttl,
        settings: state.settings.clone(),
        renew_signed_before: state.cert_rotation().await.map(|r| r.at),
    }))
}

/// Every node with its state and its overlay subnet.
pub async fn statuses(state: &ApiState) -> Result<Vec<NodeStatus>, ApiError> {
    let records = state.store.list_nodes().await?;
    let alive = state.store.alive().await?;
    let leases = state.store.leases().await?;
    let mut cordons = state.store.cordons().await?;
    let mut upgrades = state.store.upgrades().await?;
    let mut out = node_statuses(records, &alive);
    for n in &mut out {
        n.subnet = leases.get(&n.record.info.name).copied();
        n.cordon = cordons.remove(&n.record.info.name);
        n.upgrade = upgrades.remove(&n.record.info.name);
    }
    Ok(out)
}

pub async fn list_nodes(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<Vec<NodeStatus>>, ApiError> {
    Ok(Json(statuses(&state).await?))
}

pub async fn show_node(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
    Path(name): Path<String>,
) -> Result<Json<NodeStatus>, ApiError> {
    statuses(&state)
        .await?
        .into_iter()
        .find(|n| n.record.info.name == name)
        .map(Json)
        .ok_or(ApiError::NoSuchNode(name))
}

/// A node reports the firewall in force on it, with what each rule
/// matched; kept while the node exists.
pub async fn report_firewall(
    State(state): State<Arc<ApiState>>,
    ThisNode { name, .. }: ThisNode,
    Json(report): Json<control::firewall::FirewallReport>,
) -> Result<Json<bool>, ApiError> {
    Ok(Json(state.store.put_firewall_report(&name, &report).await?))
}

/// The firewall in force on a node, as the node last reported it.
pub async fn show_firewall(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
    Path(name): Path<String>,
) -> Result<Json<control::firewall::FirewallReport>, ApiError> {
    if let Some(report) = state.store.firewall_report(&name).await? {
        return Ok(Json(report));
    }
    match state.store.get_node(&name).await? {
        Some(_) => Err(ApiError::NoFirewallReport(name)),
        None => Err(ApiError::NoSuchNode(name)),
    }
}

/// A node renews its certificate with its current one (not revoked, not
/// expired: [`ThisNode`]): a new certificate for the key it joined with,
/// valid for the cluster's node certificate lifetime, recorded on the
/// node's record (so that removing the node revokes it too) before it is
/// answered. The old certificate stays valid until it expires.
pub async fn renew_cert(
    State(state): State<Arc<ApiState>>,
    ThisNode { name, cert }: ThisNode,
    Json(req): Json<CertRenewal>,
) -> Result<(Extension<AuditNote>, Json<RenewedCert>), ApiError> {
    let signed = state
        .ca
        .sign_node_csr(&name, &req.csr_pem, state.node_cert_lifetime)
        .map_err(|e| ApiError::BadCsr(e.to_string()))?;
    if signed.key_sha256 != cert.key_sha256 {
        return Err(ApiError::RenewalKey(name));
    }
    let mut tries = 0;
    loop {
        tries += 1;
        let (old, revision) = state
            .store
            .get_node_at(&name)
            .await?
            .ok_or_else(|| ApiError::NotJoined(name.clone()))?;
        if old.key_sha256 != cert.key_sha256 {
            return Err(ApiError::WrongKey(name));
        }
        let record = old.with_cert(signed.cert.clone(), crate::clock::unix_secs());
        if state.store.put_node_if(&record, revision).await? {
            break;
        }
        if tries == REGISTER_ATTEMPTS {
            return Err(ApiError::Store(crate::etcd::Error::Conflict {
                what: format!("the certificate renewal of node `{name}`"),
                attempts: REGISTER_ATTEMPTS,
            }));
        }
    }
    tracing::info!(
        node = %name,
        serial = %signed.cert.serial,
        "api: node `{name}` renewed its certificate (serial {} for {}, valid until unix time {})",
        signed.cert.serial,
        cert.serial,
        signed.cert.not_after
    );
    let note = AuditNote {
        who: None,
        detail: format!(
            "certificate serial {} replaces {}, valid until unix time {}",
            signed.cert.serial, cert.serial, signed.cert.not_after
        ),
    };
    Ok((
        Extension(note),
        Json(RenewedCert {
            format: Default::default(),
            cert_pem: signed.cert_pem,
            ca_pem: state.ca.cert_pem.clone(),
        }),
    ))
}
