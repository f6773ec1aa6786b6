//! `GET /v1/audit`: the newest records of the audit log, for admins
//! ([`super::super::audit`] writes them).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use control::audit::{self, AuditRecord};

use crate::api::server::ApiState;
use crate::api::server::auth::{Operator, ReadAuditLog};
use crate::api::server::error::ApiError;

pub async fn list_audit(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadAuditLog>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    Ok(Json(state.store.list_audit(audit::PAGE).await?))
}
