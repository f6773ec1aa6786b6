//! The edge's certificates: operators set, list and remove the
//! certificate a host name is served with over HTTPS on the public agents
//! (`/strata/edge/certs/<host>`). A certificate is checked before it is
//! stored ([`crate::pki::edge::check`]); listing never shows a key; public
//! agents get the PEMs in their assignment watch
//! ([`super::watch::watch_assignments`]).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use control::edge::{EdgeCert, EdgeCertRequest, EdgeCertView};

use crate::api::server::ApiState;
use crate::api::server::audit::AuditNote;
use crate::api::server::auth::{Operator, ReadState, SetEdgeCerts};
use crate::api::server::error::ApiError;

/// Every edge certificate, without its key, by host.
pub async fn list_edge_certs(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<Vec<EdgeCertView>>, ApiError> {
    let certs = state.store.edge_certs().await?;
    Ok(Json(certs.into_values().map(|c| c.view).collect()))
}

/// Sets the certificate of `host`, after checking it covers the host, is
/// valid now and holds the leaf's key.
pub async fn set_edge_cert(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<SetEdgeCerts>,
    Path(host): Path<String>,
    Json(req): Json<EdgeCertRequest>,
) -> Result<(Extension<AuditNote>, Json<EdgeCertView>), ApiError> {
    let refuse = |reason: String| ApiError::BadCert {
        host: host.clone(),
        reason,
    };
    control::app::expose::check_host(&host).map_err(refuse)?;
    if req.pem.len() > EdgeCert::MAX_PEM {
        return Err(refuse(format!(
            "its PEM is {} bytes, more than the {} a certificate may have",
            req.pem.len(),
            EdgeCert::MAX_PEM
        )));
    }
    let info = crate::pki::edge::check(&host, &req.pem, std::time::SystemTime::now())
        .map_err(|e| refuse(e.to_string()))?;
    let cert = EdgeCert {
        format: Default::default(),
        pem: req.pem,
        view: EdgeCertView {
            host: host.clone(),
            sha256: info.sha256,
            names: info.names,
            not_after: info.not_after,
            set_by: user.label(),
            set_at: crate::clock::unix_secs(),
        },
    };
    state.store.put_edge_cert(&cert).await?;
    tracing::info!(host = %host, by = %user.id, "api: edge certificate of {host} set by {} (sha256 {})", user.label(), cert.view.sha256);
    let note = AuditNote {
        who: None,
        detail: format!("edge cert {host} sha256 {}", cert.view.sha256),
    };
    Ok((Extension(note), Json(cert.view)))
}

/// Removes the certificate of `host`: the edge serves it over HTTP only.
pub async fn remove_edge_cert(
    State(state): State<Arc<ApiState>>,
    Operator(user, _): Operator<SetEdgeCerts>,
    Path(host): Path<String>,
) -> Result<(Extension<AuditNote>, Json<bool>), ApiError> {
    control::app::expose::check_host(&host).map_err(|reason| ApiError::BadCert {
        host: host.clone(),
        reason,
    })?;
    if !state.store.delete_edge_cert(&host).await? {
        return Err(ApiError::NoSuchCert(host));
    }
    tracing::info!(host = %host, by = %user.id, "api: edge certificate of {host} removed by {}", user.label());
    let note = AuditNote {
        who: None,
        detail: format!("remove edge cert {host}"),
    };
    Ok((Extension(note), Json(true)))
}
