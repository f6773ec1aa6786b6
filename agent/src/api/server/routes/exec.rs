//! Break-glass sessions (`strata node exec`) and log sessions (a task's
//! output from its node, `strata job logs`). An admin's request upgrades
//! its connection and waits here while the session goes into etcd
//! (`Store::put_exec`); the node sees it in its assignment watch and
//! attaches with an upgraded connection of its own, to this master (the
//! others answer `exec-elsewhere`). The master then copies bytes between
//! the two connections until both ends close; it never reads the frames
//! (`control::exec`). Nodes expose no port for this: they dial out, as
//! they do for everything else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use control::exec::{
    ATTACH_WAIT_SECONDS, ExecRequest, ExecSession, LogsRequest, PROTOCOL, TaskLogs,
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::api::server::ApiState;
use crate::api::server::audit::AuditNote;
use crate::api::server::auth::{AttachExec, ExecOnNodes, NodeCert, Operator, ReadLogs};
use crate::api::server::error::ApiError;

/// The sessions this master holds, waiting for their node, by id.
#[derive(Default)]
pub struct Pending(Mutex<HashMap<String, Waiting>>);

struct Waiting {
    node: String,
    /// Hands the node's connection to the admin's request.
    attach: tokio::sync::oneshot::Sender<OnUpgrade>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Waiting>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Takes a session out of [`Pending`] when the admin's request ends, by
/// answer or by disconnecting.
struct Withdraw<'a> {
    pending: &'a Pending,
    id: String,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.pending.lock().remove(&self.id);
    }
}

/// A request that asked to upgrade to [`PROTOCOL`], with hyper's handle on
/// the connection once the answer (101) is out.
pub struct Upgrade(OnUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let has = |name: header::HeaderName, token: &str| {
            parts.headers.get_all(name).iter().any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            })
        };
        if !has(header::CONNECTION, "upgrade") || !has(header::UPGRADE, PROTOCOL) {
            return Err(ApiError::UpgradeRequired);
        }
        parts
            .extensions
            .remove::<OnUpgrade>()
            .map(Upgrade)
            .ok_or(ApiError::UpgradeRequired)
    }
}

/// The answer that hands the connection over.
fn switching() -> Response {
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "upgrade"), (header::UPGRADE, PROTOCOL)],
    )
        .into_response()
}

/// Runs a command on node `name`: offers the session to the node, waits
/// for it to attach (at most [`ATTACH_WAIT_SECONDS`]), then joins the two
/// connections.
pub async fn exec_node(
    State(state): State<Arc<ApiState>>,
    operator: Operator<ExecOnNodes>,
    Path(name): Path<String>,
    upgrade: Upgrade,
    Json(request): Json<ExecRequest>,
) -> Result<(Extension<AuditNote>, Response), ApiError> {
    request.validate().map_err(ApiError::BadExec)?;
    if state.store.get_node(&name).await?.is_none() {
        return Err(ApiError::NoSuchNode(name));
    }
    let id = crate::pki::random_hex(16).map_err(|e| ApiError::Secret(e.to_string()))?;
    let session = ExecSession {
        format: Default::default(),
        id: id.clone(),
        node: name.clone(),
        request,
        master: state.answered_by.clone(),
        requested_by: operator.0.label(),
        logs: None,
    };
    let command = shell_words(&session.request.command);
    let response = open(&state, &session, upgrade, &command).await?;
    let note = AuditNote {
        who: None,
        detail: format!("session {} on node {name}: {command}", session.id),
    };
    Ok((Extension(note), response))
}

/// Streams a task's output from its node: a log session, which the node
/// serves from the task's directory instead of running a command.
pub async fn task_logs(
    State(state): State<Arc<ApiState>>,
    operator: Operator<ReadLogs>,
    Path(task): Path<String>,
    upgrade: Upgrade,
    Json(request): Json<LogsRequest>,
) -> Result<(Extension<AuditNote>, Response), ApiError> {
    if !control::task::spec::valid_id(&task) {
        return Err(ApiError::NoSuchTask(task));
    }
    let record = state
        .store
        .get_task(&task)
        .await?
        .ok_or_else(|| ApiError::NoSuchTask(task.clone()))?;
    let id = crate::pki::random_hex(16).map_err(|e| ApiError::Secret(e.to_string()))?;
    let session = ExecSession {
        format: Default::default(),
        id,
        node: record.node.clone(),
        request: ExecRequest {
            command: Vec::new(),
            tty: false,
            stdin: false,
            rows: 0,
            cols: 0,
        },
        master: state.answered_by.clone(),
        requested_by: operator.0.label(),
        logs: Some(TaskLogs {
            task: task.clone(),
            follow: request.follow,
        }),
    };
    let what = format!(
        "logs of task {task}{}",
        if request.follow { " (follow)" } else { "" }
    );
    let response = open(&state, &session, upgrade, &what).await?;
    let note = AuditNote {
        who: None,
        detail: format!("session {} on node {}: {what}", session.id, record.node),
    };
    Ok((Extension(note), response))
}

/// Offers `session` to its node, waits for the node to attach (at most
/// [`ATTACH_WAIT_SECONDS`]), then joins the caller's connection to the
/// node's; the answer that hands the caller's connection over.
async fn open(
    state: &ApiState,
    session: &ExecSession,
    upgrade: Upgrade,
    what: &str,
) -> Result<Response, ApiError> {
    let (id, name) = (session.id.clone(), session.node.clone());
    let (attach, attached) = tokio::sync::oneshot::channel();
    state.exec.lock().insert(
        id.clone(),
        Waiting {
            node: name.clone(),
            attach,
        },
    );
    let _withdraw = Withdraw {
        pending: &state.exec,
        id: id.clone(),
    };
    // The key outlives the wait a little, and goes with its lease if this
    // master dies meanwhile.
    state
        .store
        .put_exec(session, ATTACH_WAIT_SECONDS + 5)
        .await?;
    tracing::info!(
        node = %name,
        session = %id,
        "api: exec session {id} on node `{name}` for {}: {what}",
        session.requested_by
    );
    let wait = Duration::from_secs(ATTACH_WAIT_SECONDS);
    let node_side = tokio::time::timeout(wait, attached).await;
    if let Err(e) = state.store.delete_exec(&name, &id).await {
        // The lease removes it shortly; the node ignores a session it ran.
        tracing::warn!("api: cannot withdraw exec session {id}: {e}");
    }
    let Ok(Ok(node_side)) = node_side else {
        return Err(ApiError::ExecNotAttached {
            node: name,
            seconds: ATTACH_WAIT_SECONDS,
        });
    };
    let admin_side = upgrade.0;
    tokio::spawn(async move {
        let (admin, node) = tokio::join!(admin_side, node_side);
        let (mut admin, mut node) = match (admin, node) {
            (Ok(a), Ok(n)) => (TokioIo::new(a), TokioIo::new(n)),
            (a, n) => {
                tracing::warn!(
                    session = %id,
                    "api: exec session {id}: a connection failed to upgrade (admin: {:?}, node: {:?})",
                    a.err(),
                    n.err()
                );
                return;
            }
        };
        match tokio::io::copy_bidirectional(&mut admin, &mut node).await {
            Ok((up, down)) => tracing::info!(
                session = %id,
                "api: exec session {id} ended ({up} bytes to the node, {down} back)"
            ),
            Err(e) => tracing::info!(session = %id, "api: exec session {id} ended: {e}"),
        }
    });
    Ok(switching())
}

/// The node a session is for attaches to it.
pub async fn attach_exec(
    State(state): State<Arc<ApiState>>,
    node: NodeCert<AttachExec>,
    Path(id): Path<String>,
    upgrade: Upgrade,
) -> Result<Response, ApiError> {
    let caller = node.0.common_name;
    let waiting = {
        let mut pending = state.exec.lock();
        match pending.get(&id) {
            None => return Err(ApiError::ExecElsewhere(id)),
            Some(w) if w.node != caller => {
                return Err(ApiError::ExecOtherNode {
                    id,
                    node: w.node.clone(),
                    caller,
                });
            }
            Some(_) => pending.remove(&id).expect("the session was just found"),
        }
    };
    // The admin's request gave up in the meantime.
    waiting
        .attach
        .send(upgrade.0)
        .map_err(|_| ApiError::ExecElsewhere(id))?;
    Ok(switching())
}

/// `command` as a shell would need it typed, for logs and the audit log.
fn shell_words(command: &[String]) -> String {
    command
        .iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_quoted_for_the_log() {
        fn check(command: &[&str], expected: &str) {
            let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
            assert_eq!(shell_words(&command), expected);
        }
        check(&["uptime"], "uptime");
        check(&["sh", "-c", "echo hi; exit 3"], "sh -c 'echo hi; exit 3'");
        check(&["echo", "it's", ""], r"echo 'it'\''s' ''");
    }
}
