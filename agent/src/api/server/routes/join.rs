//! `POST /v1/join`: a node proves it holds the join token and gets a
//! certificate for its own key.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use control::model::{JoinRequest, JoinResponse, NodeInfo, NodeRecord};

use crate::api::server::error::ApiError;
use crate::api::server::{ApiState, Peer};
use crate::pki::{self, JoinToken};

pub async fn join(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>, ApiError> {
    let unauthorized = |m: String| {
        tracing::warn!(
            node = %req.name,
            peer = %peer.addr.ip(),
            "api: refused join of `{}` from {}: {m}",
            req.name,
            peer.addr.ip()
        );
        ApiError::JoinRefused(m)
    };
    let token = JoinToken::parse(&req.token).map_err(|e| unauthorized(e.to_string()))?;
    if token.ca_sha256 != state.ca_sha256 {
        return Err(unauthorized(format!(
            "the join token pins CA {} but this cluster's CA is {}: the token is for another cluster",
            token.ca_sha256, state.ca_sha256
        )));
    }
    if !pki::constant_time_eq(&token.secret_sha256(), &state.join_secret_sha256) {
        return Err(unauthorized(
            "the join token is wrong: its secret is not this cluster's".to_string(),
        ));
    }
    configs::cluster::check_label(&req.name).map_err(ApiError::BadNodeName)?;
    let signed = state
        .ca
        .sign_node_csr(&req.name, &req.csr_pem, state.node_cert_lifetime)
        .map_err(|e| ApiError::BadCsr(e.to_string()))?;
    let existing = state.store.get_node(&req.name).await?;
    let at = crate::clock::unix_secs();
    let record = match existing {
        Some(r) if r.key_sha256 != signed.key_sha256 => {
            return Err(ApiError::NameTaken {
                name: req.name.clone(),
                joined_at: r.joined_at,
            });
        }
        Some(r) => r,
        None => NodeRecord {
            info: NodeInfo {
                format: Default::default(),
                name: req.name.clone(),
                role: req.role,
                addresses: vec![peer.addr.ip().to_string()],
                cpus: 0,
                memory_bytes: 0,
                disk_bytes: 0,
                attributes: Default::default(),
            },
            key_sha256: signed.key_sha256.clone(),
            joined_at: at,
            registered_at: at,
        },
    };
    state.store.put_node(&record).await?;
    tracing::info!(
        node = %req.name,
        role = %req.role,
        peer = %peer.addr.ip(),
        "api: node `{}` ({}) joined from {}",
        req.name,
        req.role,
        peer.addr.ip()
    );
    Ok(Json(JoinResponse {
        format: Default::default(),
        cert_pem: signed.cert_pem,
        ca_pem: state.ca.cert_pem.clone(),
        settings: state.settings.clone(),
    }))
}
