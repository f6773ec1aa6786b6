//! The audit log's writer: a layer on each route that
//! `control::audit::audited` names. It runs the handler, then writes one
//! record to etcd (who, what, when, from where, the answer's status, and
//! what the handler noted) before the answer goes back, so a write that
//! was answered is a write that was recorded, or the master logged why not.
//!
//! Who called is what the route's auth extractor decided ([`CallerSlot`],
//! filled by [`super::auth`]): the caller is recorded even when its role
//! forbade the write. A request that proved no identity is logged by the
//! master and not written to etcd (anyone who reaches the port could fill
//! the store), except a join, which proves its token: its handler names
//! the token ([`AuditNote`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use control::api::Route;
use control::audit::{self, AuditRecord};
use control::rbac::Role;

use super::auth::Caller;
use super::{ApiState, Peer};

/// How often a master trims records older than the retention.
const TRIM_EVERY: Duration = Duration::from_secs(3600);

/// Who the route's extractor authenticated, for the record: the layer puts
/// an empty slot in the request, the extractor fills it.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<Caller>>);

impl CallerSlot {
    /// Keeps `caller` (the first one only).
    pub fn fill(&self, caller: &Caller) {
        let _ = self.0.set(caller.clone());
    }
}

/// What a handler adds to its answer for the record: who, when the request
/// carried no certificate or bearer token (a join's token), and what was
/// done beyond what the path says.
#[derive(Debug, Clone, Default)]
pub struct AuditNote {
    pub who: Option<String>,
    pub detail: String,
}

/// A master's audit writer: its record counter and when it last trimmed.
#[derive(Default)]
pub struct AuditLog {
    seq: AtomicU64,
    trimmed: Mutex<Option<Instant>>,
}

impl AuditLog {
    /// Writes `record`; a failure is logged (the write it records has been
    /// done). Starts a trim of old records at most once per [`TRIM_EVERY`].
    async fn append(&self, state: &Arc<ApiState>, record: AuditRecord) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let key = audit::key(record.at_ms, &record.master, seq);
        if let Err(e) = state.store.append_audit(&key, &record).await {
            tracing::error!(
                who = %record.who,
                operation = %record.operation,
                path = %record.path,
                status = record.status,
                "api: cannot write the audit record of {} {} by {}: {e}",
                record.method,
                record.path,
                record.who
            );
        }
        let due = {
            let mut trimmed = self.trimmed.lock().unwrap_or_else(|p| p.into_inner());
            let due = trimmed.is_none_or(|t| t.elapsed() >= TRIM_EVERY);
            if due {
                *trimmed = Some(Instant::now());
            }
            due
        };
        if due {
            let store = state.store.clone();
            tokio::spawn(async move {
                let end = audit::trim_end(crate::clock::unix_millis());
                match store.trim_audit(&end).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("api: trimmed {n} audit record(s) past the retention"),
                    Err(e) => tracing::warn!("api: cannot trim the audit log: {e}"),
                }
            });
        }
    }
}

/// The layer's function for `route`: runs the request, then records it.
pub async fn record(
    State(state): State<Arc<ApiState>>,
    route: Route,
    mut req: Request,
    next: Next,
) -> Response {
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let from = req
        .extensions()
        .get::<Peer>()
        .map(|p| p.addr.ip().to_string())
        .unwrap_or_default();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let note = response
        .extensions()
        .get::<AuditNote>()
        .cloned()
        .unwrap_or_default();
    let (who, role): (String, Option<Role>) = match (slot.0.get(), note.who) {
        (Some(Caller::User(user)), _) => (user.label(), Some(user.role)),
        (Some(Caller::Node(cert)), _) => (format!("node {}", cert.common_name), None),
        (None, Some(who)) => (who, None),
        (None, None) => {
            tracing::info!(
                operation = route.operation,
                status = response.status().as_u16(),
                "api: {method} {path} from {from} proved no identity: answered {}, not audited",
                response.status()
            );
            return response;
        }
    };
    let record = AuditRecord {
        format: Default::default(),
        at_ms: crate::clock::unix_millis(),
        who,
        role,
        from,
        operation: route.operation.to_string(),
        method,
        path,
        status: response.status().as_u16(),
        detail: note.detail,
        master: state.answered_by.clone(),
    };
    state.audit.append(&state, record).await;
    response
}
