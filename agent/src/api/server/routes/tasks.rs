//! Tasks: pinning one to a node, listing them, stopping one, and a node
//! reporting a task's state.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::{Extension, Json};
use control::model::{TaskRecord, TaskReport, TaskRequest, TaskView};
use control::task::TaskState;

use crate::api::server::ApiState;
use crate::api::server::audit::AuditNote;
use crate::api::server::auth::{NodeCert, Operator, ReadState, ReportTasks, RunTasks, StopTasks};
use crate::api::server::error::ApiError;

/// Pins a task to a node. The spec is checked as the node's runtime checks
/// it, and the node must be known.
pub async fn create_task(
    State(state): State<Arc<ApiState>>,
    _: Operator<RunTasks>,
    Json(req): Json<TaskRequest>,
) -> Result<(Extension<AuditNote>, Json<TaskView>), ApiError> {
    let id = req.spec.id.clone();
    req.spec
        .validate_assignment()
        .map_err(|reason| ApiError::BadTask {
            id: id.clone(),
            reason,
        })?;
    if state.store.get_node(&req.node).await?.is_none() {
        return Err(ApiError::TaskNodeUnknown { id, node: req.node });
    }
    let record = TaskRecord {
        format: Default::default(),
        node: req.node.clone(),
        spec: req.spec.clone(),
        created_at: crate::clock::unix_secs(),
        instance_of: None,
        host_ports: Vec::new(),
        stopping: false,
        stopping_since: None,
        run_of: None,
    };
    if !state.store.create_task(&id, &record).await? {
        return Err(ApiError::TaskExists(id));
    }
    tracing::info!(
        task = %id,
        node = %req.node,
        "api: task `{id}` ({}) pinned to node `{}`",
        req.spec.image,
        req.node
    );
    let note = AuditNote {
        who: None,
        detail: format!("task {id} ({}) on node {}", req.spec.image, req.node),
    };
    let view = TaskView {
        format: Default::default(),
        id,
        node: req.node,
        image: req.spec.image,
        state: TaskState::Pending,
        pid: None,
        restarts: 0,
        exit_code: None,
        address: None,
        app: req.spec.app,
        ports: req.spec.ports,
    };
    Ok((Extension(note), Json(view)))
}

pub async fn list_tasks(
    State(state): State<Arc<ApiState>>,
    _: Operator<ReadState>,
) -> Result<Json<Vec<TaskView>>, ApiError> {
    let tasks = state.store.list_tasks().await?;
    let mut reports = state.store.task_reports().await?;
    Ok(Json(
        tasks
            .into_iter()
            .map(|(id, t)| {
                let r = reports.remove(&id);
                TaskView {
                    format: Default::default(),
                    node: t.node,
                    image: t.spec.image,
                    app: t.spec.app,
                    ports: t.spec.ports,
                    state: r.as_ref().map_or(TaskState::Pending, |r| r.state),
                    pid: r.as_ref().and_then(|r| r.pid),
                    restarts: r.as_ref().map_or(0, |r| r.restarts),
                    exit_code: r.as_ref().and_then(|r| r.exit_code),
                    address: r.as_ref().and_then(|r| r.address),
                    id,
                }
            })
            .collect(),
    ))
}

/// Stops a task: it leaves the cluster state, and its node stops and
/// removes it.
pub async fn delete_task(
    State(state): State<Arc<ApiState>>,
    _: Operator<StopTasks>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if !state.store.delete_task(&id).await? {
        return Err(ApiError::NoSuchTask(id));
    }
    tracing::info!(task = %id, "api: task `{id}` stopped");
    Ok(Json(serde_json::json!({ "stopped": id })))
}

/// A node reports the state of one of its tasks.
pub async fn report_task(
    State(state): State<Arc<ApiState>>,
    node: NodeCert<ReportTasks>,
    Path(id): Path<String>,
    Json(mut report): Json<TaskReport>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cert = node.0;
    let task = state
        .store
        .get_task(&id)
        .await?
        .ok_or_else(|| ApiError::NoSuchTask(id.clone()))?;
    if task.node != cert.common_name {
        return Err(ApiError::NotYourTask {
            id,
            node: task.node,
            caller: cert.common_name,
        });
    }
    report.at = crate::clock::unix_secs();
    state.store.put_task_report(&id, &report).await?;
    Ok(Json(serde_json::json!({ "reported": id })))
}
