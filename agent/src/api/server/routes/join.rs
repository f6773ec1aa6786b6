//! `POST /v1/join`: a node proves it holds a join token of this cluster
//! and gets a certificate for its own key. The token's expiry and use
//! count, the name's and the key's claims and the node's removal are
//! decided by `control::access::plan_join`, committed by
//! [`crate::etcd::Store::join`] in one transaction.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use control::access::{JoinAttempt, JoinRefusal};
use control::model::{JoinRequest, JoinResponse};

use crate::api::server::audit::AuditNote;
use crate::api::server::error::ApiError;
use crate::api::server::{ApiState, Peer};
use crate::pki::JoinToken;

pub async fn join(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<JoinRequest>,
) -> Result<(Extension<AuditNote>, Json<JoinResponse>), ApiError> {
    let refused = |e: ApiError| {
        tracing::warn!(
            node = %req.name,
            peer = %peer.addr.ip(),
            code = e.code(),
            "api: refused join of `{}` from {}: {e}",
            req.name,
            peer.addr.ip()
        );
        e
    };
    let token =
        JoinToken::parse(&req.token).map_err(|e| refused(ApiError::JoinRefused(e.to_string())))?;
    if token.ca_sha256 != state.ca_sha256 {
        return Err(refused(ApiError::JoinRefused(format!(
            "the join token pins CA {} but this cluster's CA is {}: the token is for another cluster",
            token.ca_sha256, state.ca_sha256
        ))));
    }
    let secret_sha256 = token.secret_sha256();
    // An unknown secret is refused before anything is signed for it; the
    // join itself checks the token again with everything else.
    if state.store.join_token(&secret_sha256).await?.is_none() {
        return Err(refused(ApiError::Join(JoinRefusal::UnknownToken)));
    }
    configs::cluster::check_label(&req.name).map_err(ApiError::BadNodeName)?;
    let signed = state
        .ca
        .sign_node_csr(&req.name, &req.csr_pem, state.node_cert_lifetime)
        .map_err(|e| ApiError::BadCsr(e.to_string()))?;
    let attempt = JoinAttempt {
        name: req.name.clone(),
        role: req.role,
        key_sha256: signed.key_sha256.clone(),
        address: peer.addr.ip().to_string(),
        cert: signed.cert.clone(),
    };
    let plan = match state
        .store
        .join(&secret_sha256, &attempt, crate::clock::unix_secs())
        .await
    {
        Ok(plan) => plan,
        Err(e) => {
            return Err(match ApiError::from(e) {
                e @ ApiError::Join(_) => refused(e),
                e => e,
            });
        }
    };
    let joined = if plan.admitted {
        "joined"
    } else {
        "joined again with its own key"
    };
    tracing::info!(
        node = %req.name,
        role = %req.role,
        peer = %peer.addr.ip(),
        token = %plan.token_id,
        serial = %signed.cert.serial,
        "api: node `{}` ({}) {joined} from {} with join token {}",
        req.name,
        req.role,
        peer.addr.ip(),
        plan.token_id
    );
    let note = AuditNote {
        who: Some(format!("join token {}", plan.token_id)),
        detail: format!(
            "node {} ({}) {joined}, certificate serial {}",
            req.name, req.role, signed.cert.serial
        ),
    };
    let answer = JoinResponse {
        format: Default::default(),
        cert_pem: signed.cert_pem,
        ca_pem: state.ca.cert_pem.clone(),
        settings: state.settings.clone(),
    };
    Ok((Extension(note), Json(answer)))
}
