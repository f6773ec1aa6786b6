//! `GET /v1/cluster/status`: the masters, etcd's leader, quorum and
//! alarms, and how many nodes are Ready.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use control::model::{ClusterStatus, NodeState};

use super::nodes::statuses;
use crate::api::server::ApiState;
use crate::api::server::auth::{Operator, ReadState};
use crate::api::server::error::ApiError;

pub async fn cluster_status(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<ClusterStatus>, ApiError> {
    let masters = state.store.members().await?;
    let nodes = statuses(&state).await?;
    let etcd_alarms = state.store.alarms().await?;
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
    }))
}
