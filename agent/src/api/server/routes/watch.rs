//! The two long-polls: the node list (`GET /v1/watch/nodes/{after}`),
//! which every node follows for the overlay, DNS and the services its
//! edge and VIPs route to (`control::service`), and a node's
//! assignments (`GET /v1/watch/assignments/{after}`), with the break-glass
//! sessions waiting for it (and, on public agents, the edge's
//! certificates with their keys). Both wait on the
//! master's one shared etcd watch and answer from a read shared by every
//! poll the same change woke (`SharedRead`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use control::model::{AssignmentWatch, NodeWatch, TaskEndpoint, TaskRecord, TaskReport};
use control::task::TaskState;

use super::nodes::{check_registered, statuses};
use crate::api::server::auth::{FollowAssignments, NodeCert, NodeOrReader};
use crate::api::server::error::ApiError;
use crate::api::server::{ApiState, WATCH_WAIT, json_bytes};

/// The node list once it changed after etcd revision `after` (a long
/// poll of at most [`WATCH_WAIT`]; `0` answers at once), with the revision
/// to pass next time.
pub async fn watch_nodes(
    State(state): State<Arc<ApiState>>,
    _: NodeOrReader,
    Path(after): Path<i64>,
) -> Result<Response, ApiError> {
    if after > 0 {
        state.store.wait_node_change(after, WATCH_WAIT).await;
    }
    // Never older than what the caller has (`after`): another master's
    // read may lag behind the one it asked before.
    let seen = state.store.seen_node_change().await.max(after);
    let (_, json) = state
        .node_watch
        .get(seen, || async {
            // The revision before the read: a change racing the read shows
            // up in the next watch.
            let revision = state.store.revision().await?;
            let nodes = statuses(&state).await?;
            let tasks = state.store.list_tasks().await?;
            let reports = state.store.task_reports().await?;
            let apps = state.store.list_apps().await?;
            let watch = NodeWatch {
                format: Default::default(),
                revision,
                services: control::service::services(&apps, &tasks, &reports, &nodes),
                vip_addresses: state.store.vip_leases().await?,
                tasks: tasks_endpoints(&tasks, &reports),
                nodes,
            };
            let json =
                serde_json::to_vec(&watch).map_err(|e| ApiError::Serialize(e.to_string()))?;
            Ok((revision, axum::body::Bytes::from(json)))
        })
        .await?;
    Ok(json_bytes(json))
}

/// The endpoints of `tasks` from their nodes' `reports`: running ones
/// with an address. Pure.
pub fn tasks_endpoints(
    tasks: &BTreeMap<String, TaskRecord>,
    reports: &BTreeMap<String, TaskReport>,
) -> Vec<TaskEndpoint> {
    tasks
        .iter()
        .filter_map(|(id, t)| {
            let r = reports.get(id)?;
            (r.state == TaskState::Running).then_some(TaskEndpoint {
                id: id.clone(),
                node: t.node.clone(),
                address: r.address?,
                app: t.spec.app.clone(),
                ports: t.spec.ports.clone(),
                port_names: t.spec.port_names.clone(),
            })
        })
        .collect()
}

/// The tasks assigned to the calling node (known by its certificate) once
/// the task set changed after etcd revision `after` (a long poll of at
/// most [`WATCH_WAIT`]; `0` answers at once).
pub async fn watch_assignments(
    State(state): State<Arc<ApiState>>,
    node: NodeCert<FollowAssignments>,
    Path(after): Path<i64>,
) -> Result<Json<AssignmentWatch>, ApiError> {
    let cert = node.0;
    let record = check_registered(&state, &cert).await?;
    if after > 0 {
        state.store.wait_task_change(after, WATCH_WAIT).await;
    }
    let seen = state.store.seen_task_change().await.max(after);
    let (revision, all) = state
        .task_list
        .get(seen, || async {
            let revision = state.store.revision().await?;
            let tasks = state.store.list_tasks().await?;
            let exec = state.store.list_exec().await?;
            let cordons = state.store.cordons().await?;
            let upgrades = state.store.upgrades().await?;
            let certs = state.store.edge_certs().await?.into_values().collect();
            Ok((revision, Arc::new((tasks, exec, cordons, upgrades, certs))))
        })
        .await?;
    let (all, exec, cordons, upgrades, certs) = &*all;
    // A drained node stops its pinned tasks (and reports them stopped) as
    // it stops what the scheduler stops; they start again when it is
    // uncordoned, their records never gone. Its app instances run until
    // the scheduler stops them.
    let drained = cordons.contains_key(&cert.common_name);
    let mine = all.values().filter(|t| t.node == cert.common_name);
    let (stopping, running): (Vec<_>, Vec<_>) =
        mine.partition(|t| t.stopping || (drained && t.instance_of.is_none()));
    let tasks = running.into_iter().map(|t| t.spec.clone()).collect();
    let stopping = stopping.into_iter().map(|t| t.spec.id.clone()).collect();
    let exec = exec
        .iter()
        .filter(|s| s.node == cert.common_name)
        .cloned()
        .collect();
    Ok(Json(AssignmentWatch {
        format: Default::default(),
        revision,
        tasks,
        stopping,
        exec,
        upgrade: upgrades.get(&cert.common_name).cloned(),
        // Keys go to the nodes that serve them, and to no other.
        edge_certs: (record.info.role == configs::Role::Public).then(|| certs.clone()),
    }))
}
