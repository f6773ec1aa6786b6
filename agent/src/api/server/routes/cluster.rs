//! `GET /v1/cluster/status`: the masters (with their certificates),
//! etcd's leader, quorum and alarms, the scheduler's leader, how many nodes
//! are Ready and the last certificate rotation; `POST /v1/cluster/rotate-certs`.

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};
use control::model::{CertRotation, ClusterStatus, NodeState};

use super::nodes::statuses;
use crate::api::server::ApiState;
use crate::api::server::audit::AuditNote;
use crate::api::server::auth::{Operator, ReadState, RotateCerts};
use crate::api::server::error::ApiError;

pub async fn cluster_status(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let masters = state.store.members().await?;
    let master_certs = state.store.master_certs().await?;
    let nodes = statuses(&state).await?;
    let etcd_alarms = state.store.alarms().await?;
    let cert_rotation = state.store.cert_rotation().await?;
    let scheduler_leader = state.store.scheduler_leader().await?;
    let healthy = masters.iter().filter(|m| m.healthy).count();
    Ok(Json(ClusterStatus {
        format: Default::default(),
        cluster: state.settings.cluster.clone(),
        answered_by: state.answered_by.clone(),
        etcd_leader: masters.iter().find(|m| m.leader).map(|m| m.name.clone()),
        etcd_quorum: healthy * 2 > masters.len(),
        masters,
        nodes_ready: nodes.iter().filter(|n| n.state == NodeState::Ready).count(),
        nodes_total: nodes.len(),
        etcd_alarms,
        cert_rotation,
        master_certs,
        scheduler_leader,
    }))
}

/// Asks every master and node to replace its certificate
/// (`strata cluster rotate-certs`): masters notice within
/// [`crate::cluster::master::CERT_CHECK`], nodes at their next heartbeat.
pub async fn rotate_certs(
    State(state): State<Arc<ApiState>>,
    operator: Operator<RotateCerts>,
) -> Result<(Extension<AuditNote>, Json<CertRotation>), ApiError> {
    let rotation = CertRotation {
        format: Default::default(),
        at: crate::clock::unix_secs(),
        requested_by: operator.0.label(),
    };
    state.store.put_cert_rotation(&rotation).await?;
    state.forget_cert_rotation().await;
    tracing::info!(
        "api: certificate rotation asked for by {}: every certificate signed before {} goes",
        rotation.requested_by,
        rotation.at
    );
    let note = AuditNote {
        who: None,
        detail: format!("certificates signed before unix time {}", rotation.at),
    };
    Ok((Extension(note), Json(rotation)))
}
