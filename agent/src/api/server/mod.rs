//! The Strata API every master serves: axum over rustls. Every route of
//! `control::api::ROUTES` is mounted here with its handler ([`routes`]);
//! who may call it is an extractor of [`auth`] in the handler's arguments
//! (nodes by their client certificate, unless it was revoked; operators by
//! their bearer token, whose role must grant the route's permission; a
//! joining node by the join token in its request), and every failure is an
//! [`error::ApiError`], answered in one place. What one client may cost the
//! master is bounded by [`Limits`] and each route's body limit.

pub mod audit;
pub mod auth;
pub mod error;
pub mod routes;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use control::api::{self as api_routes, Method, Route};
use control::model::{CertRotation, NodeSettings, TaskRecord};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tower::ServiceExt;

use crate::etcd::Store;
use crate::pki::{self, Ca, CertInfo};
use error::ApiError;
use routes::{
    apps, audit_log, bundles, cluster, edge, exec, jobs, join, nodes, tasks, tokens, watch,
};

/// Every task and every break-glass session waiting for its node, the
/// drains, upgrade orders and the edge's certificates, as the assignment
/// long-polls last read them.
type Assignments = (
    BTreeMap<String, TaskRecord>,
    Vec<control::exec::ExecSession>,
    BTreeMap<String, control::model::Cordon>,
    BTreeMap<String, control::upgrade::UpgradeOrder>,
    Vec<control::edge::EdgeCert>,
);

/// What the handlers share.
pub struct ApiState {
    pub store: Store,
    pub ca: Ca,
    /// Hex sha256 of the CA certificate (what join tokens pin).
    pub ca_sha256: String,
    pub settings: NodeSettings,
    /// This master's node name.
    pub answered_by: String,
    /// Lifetime of node certificates issued at join.
    pub node_cert_lifetime: Duration,
    /// Nodes whose registration this master has checked: name to key hash.
    registered: Mutex<HashMap<String, String>>,
    /// The node list (as JSON) and the task list as last read for the
    /// long-polls.
    node_watch: SharedRead<axum::body::Bytes>,
    task_list: SharedRead<Arc<Assignments>>,
    /// The break-glass sessions this master holds, waiting for their node.
    exec: routes::exec::Pending,
    /// The last certificate rotation as read for heartbeats, and when.
    rotation: tokio::sync::Mutex<Option<(std::time::Instant, Option<CertRotation>)>>,
    /// This master's audit writer.
    audit: audit::AuditLog,
    /// What the scheduler keeps back on every agent (cluster.toml's
    /// `[scheduler]`): the deploy routes refuse an app no agent could fit.
    pub reserve: control::deploy::apply::Reserve,
    /// The edge's ports (cluster.toml's `[edge]`): the deploy routes refuse
    /// a TCP exposure outside its range.
    pub edge: configs::cluster::Edge,
    /// The VIP range (cluster.toml's `[vips]`) named VIPs get addresses of.
    pub vips: configs::cluster::Vips,
    /// The update bundles this master keeps (none outside an image, where
    /// there is no update key).
    pub bundles: Option<Arc<crate::upgrade::store::BundleStore>>,
}

impl ApiState {
    /// The state of a master's API. Join tokens and user tokens are
    /// records in `store` (`Store::seed_access` makes those of `strata
    /// cluster init`'s secrets).
    pub fn new(
        store: Store,
        ca: Ca,
        settings: NodeSettings,
        answered_by: String,
        node_cert_lifetime: Duration,
    ) -> Result<ApiState, pki::Error> {
        Ok(ApiState {
            ca_sha256: ca.fingerprint()?,
            store,
            ca,
            settings,
            answered_by,
            node_cert_lifetime,
            registered: Mutex::default(),
            node_watch: SharedRead::default(),
            task_list: SharedRead::default(),
            exec: routes::exec::Pending::default(),
            rotation: tokio::sync::Mutex::default(),
            audit: audit::AuditLog::default(),
            reserve: Default::default(),
            edge: Default::default(),
            vips: Default::default(),
            bundles: None,
        })
    }
}

/// How long the last certificate rotation read answers heartbeats.
const ROTATION_FRESH: Duration = Duration::from_secs(5);

impl ApiState {
    /// The last certificate rotation, read at most every
    /// [`ROTATION_FRESH`] for the heartbeats; none while etcd cannot say.
    pub async fn cert_rotation(&self) -> Option<CertRotation> {
        let mut slot = self.rotation.lock().await;
        if let Some((at, rotation)) = slot.as_ref()
            && at.elapsed() < ROTATION_FRESH
        {
            return rotation.clone();
        }
        match self.store.cert_rotation().await {
            Ok(rotation) => {
                *slot = Some((std::time::Instant::now(), rotation.clone()));
                rotation
            }
            Err(e) => {
                // Kept (and not read again) as long as a good read would
                // be, so that heartbeats do not queue on a failing etcd.
                tracing::warn!("api: cannot read the certificate rotation: {e}");
                let kept = slot.as_ref().and_then(|(_, r)| r.clone());
                *slot = Some((std::time::Instant::now(), kept.clone()));
                kept
            }
        }
    }

    /// Reads the rotation afresh at the next heartbeat.
    pub async fn forget_cert_rotation(&self) {
        *self.rotation.lock().await = None;
    }
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The verified client certificate, if the client presented one.
    pub node: Option<CertInfo>,
}

/// How long a long-poll waits for a change before answering the unchanged
/// state.
pub const WATCH_WAIT: Duration = Duration::from_secs(20);

/// How long one read of cluster state may answer other long-polls: those a
/// change woke together share it. Changes the shared watch does not follow
/// (a node's liveness key expiring) show within this time.
const SHARED_READ_FRESH: Duration = Duration::from_secs(1);

/// One read of cluster state shared by the long-polls that a change woke
/// together: with N agents each holding a watch, every change used to cost
/// N identical reads of the whole list, and N serialisations of it
/// (`cargo xtask bench cluster`). It keeps what the read gave (the node
/// list's JSON, the task list) and a failed read too, so that while etcd
/// fails the waiters do not each retry it in turn.
struct SharedRead<V> {
    /// When, and what: the revision and value, or the failure's status and
    /// text (an [`ApiError`] holds an etcd error, which is not `Sync`).
    last: tokio::sync::Mutex<Option<(std::time::Instant, Kept<V>)>>,
}

/// What a shared read gave: its revision and value, or its failure's
/// status, code and text.
type Kept<V> = Result<(i64, V), (StatusCode, &'static str, String)>;

impl<V> Default for SharedRead<V> {
    fn default() -> Self {
        SharedRead {
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<V: Clone> SharedRead<V> {
    /// The last read when it is at least at revision `seen` and fresh (or
    /// failed within that time), otherwise a new one. Callers queue on the
    /// lock, so one read answers all of them.
    async fn get<F, Fut>(&self, seen: i64, read: F) -> Result<(i64, V), ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(i64, V), ApiError>>,
    {
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < SHARED_READ_FRESH
        {
            match answer {
                Ok((revision, value)) if *revision >= seen => {
                    return Ok((*revision, value.clone()));
                }
                Err((status, code, message)) => {
                    return Err(ApiError::Shared {
                        status: *status,
                        code,
                        message: message.clone(),
                    });
                }
                Ok(_) => {}
            }
        }
        let answer = read().await;
        let kept = match &answer {
            Ok((revision, value)) => Ok((*revision, value.clone())),
            Err(e) => Err((e.status(), e.code(), e.to_string())),
        };
        *last = Some((std::time::Instant::now(), kept));
        answer
    }
}

/// A JSON answer already serialized (by [`SharedRead`]).
fn json_bytes(json: axum::body::Bytes) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json,
    )
        .into_response()
}

/// The router, without the transport.
pub fn router(state: Arc<ApiState>) -> Router {
    let mut paths: BTreeMap<&str, MethodRouter<Arc<ApiState>>> = BTreeMap::new();
    for (route, handler) in handlers() {
        // The audit layer goes outside the route's own layers: it sees the
        // answer the client gets, refusals included.
        let handler = if control::audit::audited(&route) {
            handler.layer(axum::middleware::from_fn_with_state(
                state.clone(),
                move |state, req, next| audit::record(state, route, req, next),
            ))
        } else {
            handler
        };
        let merged = match paths.remove(route.path) {
            Some(other) => other.merge(handler),
            None => handler,
        };
        paths.insert(route.path, merged);
    }
    paths
        .into_iter()
        .fold(Router::new(), |r, (path, handler)| r.route(path, handler))
        .fallback(|| async { ApiError::NoRoute })
        .with_state(state)
}

/// Each route of [`control::api::ROUTES`] with its handler, mounted with
/// the route's own method.
fn handlers() -> Vec<(Route, MethodRouter<Arc<ApiState>>)> {
    vec![
        mount(api_routes::JOIN, join::join),
        mount(api_routes::LIST_NODES, nodes::list_nodes),
        mount(api_routes::SHOW_NODE, nodes::show_node),
        mount(api_routes::REGISTER, nodes::register),
        mount(api_routes::REMOVE_NODE, nodes::remove_node),
        mount(api_routes::DRAIN_NODE, nodes::drain_node),
        mount(api_routes::UNCORDON_NODE, nodes::uncordon_node),
        mount(api_routes::HEARTBEAT, nodes::heartbeat),
        mount(api_routes::RENEW_CERT, nodes::renew_cert),
        mount(api_routes::WATCH_NODES, watch::watch_nodes),
        mount(api_routes::CLUSTER_STATUS, cluster::cluster_status),
        mount(api_routes::ROTATE_CERTS, cluster::rotate_certs),
        mount(api_routes::LIST_TASKS, tasks::list_tasks),
        mount(api_routes::CREATE_TASK, tasks::create_task),
        mount(api_routes::DELETE_TASK, tasks::delete_task),
        mount(api_routes::REPORT_TASK, tasks::report_task),
        mount(api_routes::WATCH_ASSIGNMENTS, watch::watch_assignments),
        mount(api_routes::CREATE_JOIN_TOKEN, tokens::create_join_token),
        mount(api_routes::LIST_JOIN_TOKENS, tokens::list_join_tokens),
        mount(api_routes::REVOKE_JOIN_TOKEN, tokens::revoke_join_token),
        mount(api_routes::CREATE_USER_TOKEN, tokens::create_user_token),
        mount(api_routes::LIST_USER_TOKENS, tokens::list_user_tokens),
        mount(api_routes::REVOKE_USER_TOKEN, tokens::revoke_user_token),
        mount(api_routes::LIST_AUDIT, audit_log::list_audit),
        mount(api_routes::EXEC_NODE, exec::exec_node),
        mount(api_routes::ATTACH_EXEC, exec::attach_exec),
        mount(api_routes::LIST_APPS, apps::list_apps),
        mount(api_routes::DEPLOY_APPS, apps::deploy_apps),
        mount(api_routes::SHOW_APP, apps::show_app),
        mount(api_routes::APP_VERSIONS, apps::app_versions),
        mount(api_routes::SCALE_APP, apps::scale_app),
        mount(api_routes::RESTART_APP, apps::restart_app),
        mount(api_routes::REMOVE_APP, apps::remove_app),
        mount(api_routes::LIST_DEPLOYMENTS, apps::list_deployments),
        mount(api_routes::SHOW_DEPLOYMENT, apps::show_deployment),
        mount(api_routes::ROLLBACK_DEPLOYMENT, apps::rollback_deployment),
        mount(api_routes::PROMOTE_DEPLOYMENT, apps::promote_deployment),
        mount(api_routes::PUSH_BUNDLE, bundles::push_bundle),
        mount(api_routes::LIST_BUNDLES, bundles::list_bundles),
        mount(api_routes::FETCH_BUNDLE, bundles::fetch_bundle),
        mount(api_routes::UPGRADE_NODE, bundles::upgrade_node),
        mount(api_routes::ROLLBACK_NODE, bundles::rollback_node),
        mount(api_routes::REPORT_UPGRADE, bundles::report_upgrade),
        mount(api_routes::REPORT_FIREWALL, nodes::report_firewall),
        mount(api_routes::SHOW_FIREWALL, nodes::show_firewall),
        mount(api_routes::LIST_EDGE_CERTS, edge::list_edge_certs),
        mount(api_routes::SET_EDGE_CERT, edge::set_edge_cert),
        mount(api_routes::REMOVE_EDGE_CERT, edge::remove_edge_cert),
        mount(api_routes::START_ROLLOUT, bundles::start_rollout),
        mount(api_routes::RESUME_ROLLOUT, bundles::resume_rollout),
        mount(api_routes::CANCEL_ROLLOUT, bundles::cancel_rollout),
        mount(api_routes::SHOW_ROLLOUT, bundles::show_rollout),
        mount(api_routes::LIST_JOBS, jobs::list_jobs),
        mount(api_routes::PUT_JOB, jobs::put_job),
        mount(api_routes::SHOW_JOB, jobs::show_job),
        mount(api_routes::REMOVE_JOB, jobs::remove_job),
        mount(api_routes::START_RUN, jobs::start_run),
        mount(api_routes::LIST_RUNS, jobs::list_runs),
        mount(api_routes::SHOW_RUN, jobs::show_run),
        mount(api_routes::KILL_RUN, jobs::kill_run),
        mount(api_routes::ENABLE_SCHEDULE, jobs::enable_schedule),
        mount(api_routes::TASK_LOGS, exec::task_logs),
    ]
}

fn mount<H, T>(route: Route, handler: H) -> (Route, MethodRouter<Arc<ApiState>>)
where
    H: axum::handler::Handler<T, Arc<ApiState>>,
    T: 'static,
{
    let filter = match route.method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Put => MethodFilter::PUT,
        Method::Delete => MethodFilter::DELETE,
    };
    // The route's own limit, which the body extractors (`Json`) apply: a
    // larger body is refused with 413 once that much has arrived, before
    // it is parsed.
    let limit = DefaultBodyLimit::max(route.body_limit as usize);
    let router = axum::routing::on(filter, handler).layer(limit);
    // Bodies of a small route are read before the handler runs, so that a
    // refusal (403 before the body is looked at, 413) is not followed by a
    // close with unread bytes, which the kernel turns into a reset that the
    // client sees instead of the answer. Bundles stream.
    if route.body_limit > BUFFERED_BODY {
        return (route, router);
    }
    let limit = route.body_limit as usize;
    (
        route,
        router.layer(axum::middleware::from_fn(move |req, next| {
            read_body_first(limit, req, next)
        })),
    )
}

/// The largest route body limit whose bodies are read before the handler
/// ([`read_body_first`]).
const BUFFERED_BODY: u32 = 1 << 20;
/// How much of a body beyond its route's limit is read (and dropped)
/// before the 413, so that the client reads the answer.
const DRAINED_BEYOND_LIMIT: usize = 4 << 20;

/// Reads the request's body (at most `limit` bytes) before `next` runs;
/// a larger one is read on to [`DRAINED_BEYOND_LIMIT`] more, dropped, and
/// answered 413.
async fn read_body_first(
    limit: usize,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use http_body_util::BodyExt as _;
    let (parts, mut body) = req.into_parts();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return (StatusCode::BAD_REQUEST, "the request body ended early").into_response();
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            kept.extend_from_slice(&data);
        } else if seen > limit + DRAINED_BEYOND_LIMIT {
            break;
        }
    }
    if seen > limit {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than this route's limit of {limit} bytes"),
        )
            .into_response();
    }
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(kept));
    next.run(req).await
}

/// What one master serves at most, and how long it waits for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a request's head (request line and headers) may take to
    /// arrive, from the connection's start or the previous answer: hyper
    /// closes the connection otherwise, which also ends a kept-alive
    /// connection idle that long (clients connect again).
    pub header_read: Duration,
    /// Connections served at once. At the cap the master stops accepting:
    /// new connections wait in the kernel's backlog, not each in a task
    /// with its TLS session and buffers.
    pub max_connections: usize,
    /// How long a TLS handshake may take.
    pub tls_handshake: Duration,
    /// How long a request body may pause between two reads before the
    /// request fails.
    pub body_idle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(15),
            max_connections: 8192,
            tls_handshake: Duration::from_secs(10),
            body_idle: Duration::from_secs(15),
        }
    }
}

/// Headers one request may carry (431 beyond).
const MAX_HEADERS: usize = 64;
/// hyper's read buffer, which bounds a request's head (431 beyond).
const MAX_BUF: usize = 64 << 10;

/// Serves the API on `listener` until the task is dropped, within
/// `limits`. TLS handshake failures (a foreign or expired client
/// certificate) are logged.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: ServerConfig,
    state: Arc<ApiState>,
    limits: Limits,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let app = router(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let limits = Arc::new(limits);
    let mut full = false;
    loop {
        // A slot before the connection: its task holds it until the
        // connection ends.
        if slots.available_permits() == 0 && !full {
            tracing::warn!(
                max_connections = limits.max_connections,
                "api: {} connections open, the most this master serves; new ones wait",
                limits.max_connections
            );
        }
        full = slots.available_permits() == 0;
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // never closed
        };
        let (tcp, addr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!("api: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tcp.set_nodelay(true);
            let stream =
                match tokio::time::timeout(limits.tls_handshake, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!("api: TLS handshake with {addr} failed: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let node = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| CertInfo::from_der(c, "the client certificate").ok());
            serve_connection(stream, Peer { addr, node }, app, &limits).await;
        });
    }
}

/// Serves HTTP/1.1 on one connection (after its TLS handshake) until the
/// client closes it or a limit of `limits` ends it. `peer` goes into every
/// request's extensions.
async fn serve_connection<I>(io: I, peer: Peer, app: Router, limits: &Limits)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let body_idle = limits.body_idle;
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(|body| axum::body::Body::new(IdleBody::new(body, body_idle)));
        req.extensions_mut().insert(peer.clone());
        app.clone().oneshot(req)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        // Without a timer hyper applies no header read timeout at all.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_BUF)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        // `strata node exec` upgrades its connection, and so does the node
        // that attaches to the session.
        .with_upgrades()
        .await;
}

/// A request body that fails once it waits longer than `idle` for its next
/// frame: hyper has no timeout of its own for bodies, so a client could
/// hold a handler (and its connection slot) by sending a byte now and then
/// or nothing at all.
struct IdleBody<B> {
    inner: Pin<Box<B>>,
    idle: Duration,
    /// Runs while the body waits for a frame.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleBody<B> {
    fn new(inner: B, idle: Duration) -> Self {
        IdleBody {
            inner: Box::pin(inner),
            idle,
            waiting: None,
        }
    }
}

/// Why an [`IdleBody`] failed.
#[derive(Debug, thiserror::Error)]
#[error("the request body paused for more than {}s", .0.as_secs_f64())]
struct BodyIdle(Duration);

impl<B> HttpBody for IdleBody<B>
where
    B: HttpBody,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let waiting = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyIdle(idle).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod route_tests {
    /// The server mounts every route of the table, each once, and nothing
    /// else (the methods come from the table itself).
    #[test]
    fn every_route_is_served() {
        let served: Vec<_> = super::handlers().into_iter().map(|(r, _)| r).collect();
        assert_eq!(served, control::api::ROUTES);
    }
}

#[cfg(test)]
mod limit_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use control::model::NodeSettings;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::ServiceExt;

    use control::access::UserTokenRecord;
    use control::rbac::Role;

    use super::{ApiState, Limits, Peer, router, serve_connection};
    use crate::etcd::{EtcdConnect, Store};
    use crate::pki::{self, Ca};

    pub(super) fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    pub(super) fn peer() -> Peer {
        Peer {
            addr: ([127, 0, 0, 1], 40000).into(),
            node: None,
        }
    }

    /// Serves `app` on one end of an in-memory pipe with `limits`, writes
    /// `request` on the other and returns what came back until the server
    /// closed the connection, or `None` when it stayed open for 10 s (far
    /// beyond every limit the tests set).
    async fn exchange(app: Router, limits: Limits, request: &[u8]) -> Option<String> {
        let (client, server) = tokio::io::duplex(64 << 10);
        let served = tokio::spawn(async move {
            serve_connection(server, peer(), app, &limits).await;
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(request).await.expect("write");
        let mut answer = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut answer)).await;
        // The writing half stays open: the server, not the client, ended it.
        drop(wr);
        served.abort();
        closed
            .ok()
            .map(|_| String::from_utf8_lossy(&answer).to_string())
    }

    fn echo() -> Router {
        Router::new().route(
            "/",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
    }

    #[test]
    fn a_client_slow_to_send_its_head_is_cut_off() {
        let limits = Limits {
            header_read: Duration::from_millis(200),
            ..Limits::default()
        };
        // The request line and one header, and never the blank line.
        let answer = block_on(exchange(
            echo(),
            limits.clone(),
            b"POST / HTTP/1.1\r\nHost: m\r\n",
        ));
        assert!(answer.is_some(), "the connection stayed open");
        // A whole request is answered under the same limits.
        let answer = block_on(exchange(
            echo(),
            limits,
            b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        ))
        .expect("closed after the answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("\r\n\r\n2"), "{answer}");
    }

    #[test]
    fn a_body_that_stalls_fails_its_request() {
        let limits = Limits {
            body_idle: Duration::from_millis(200),
            ..Limits::default()
        };
        // 100 bytes promised, 1 sent.
        let answer = block_on(exchange(
            echo(),
            limits,
            b"POST / HTTP/1.1\r\nHost: m\r\nContent-Length: 100\r\n\r\n{",
        ))
        .expect("the connection stayed open");
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }

    #[test]
    fn too_many_headers_are_refused() {
        let mut request = b"POST / HTTP/1.1\r\nHost: m\r\n".to_vec();
        for i in 0..100 {
            request.extend_from_slice(format!("X-Filler-{i}: x\r\n").as_bytes());
        }
        request.extend_from_slice(b"Content-Length: 0\r\n\r\n");
        let answer = block_on(exchange(echo(), Limits::default(), &request))
            .expect("the connection stayed open");
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }

    /// The API's router over a store that is never reached (etcd-client
    /// connects lazily; these requests are answered before any handler
    /// reads the store), its access cache loaded with the user tokens
    /// `tokens` (each with its role) and the revoked serials `revoked`.
    pub(super) async fn api_with(tokens: &[(&str, Role)], revoked: &[&str]) -> Router {
        let store = Store::connect(&EtcdConnect {
            endpoints: vec!["http://127.0.0.1:9".to_string()],
            tls: None,
        })
        .await
        .expect("store");
        store.access().load(
            revoked.iter().map(|s| s.to_string()),
            tokens.iter().map(|(token, role)| {
                let sha256 = pki::sha256_hex(token.as_bytes());
                let record = UserTokenRecord {
                    role: *role,
                    ..UserTokenRecord::bootstrap(&sha256, 0)
                };
                (sha256, record)
            }),
        );
        let state = ApiState::new(
            store,
            Ca::generate("t").expect("ca"),
            NodeSettings {
                format: Default::default(),
                cluster: "t".to_string(),
                heartbeat_interval_seconds: 1,
                grace_seconds: 3,
                masters: Vec::new(),
                network: None,
                insecure_registries: Vec::new(),
                edge: Default::default(),
            },
            "m1".to_string(),
            pki::CERT_LIFETIME,
        )
        .expect("state");
        router(Arc::new(state))
    }

    /// [`api_with`] with one admin token.
    pub(super) async fn api(cli_token: &str) -> Router {
        api_with(&[(cli_token, Role::Admin)], &[]).await
    }

    /// The status of `POST path` with `size` bytes of body (not JSON).
    async fn post(app: &Router, path: &str, token: Option<&str>, size: usize) -> StatusCode {
        let mut req = Request::post(path).header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::from(vec![b'x'; size])).expect("request");
        req.extensions_mut().insert(peer());
        app.clone().oneshot(req).await.expect("infallible").status()
    }

    #[test]
    fn each_route_reads_at_most_its_body_limit() {
        block_on(async {
            let token = "strata-cli.v1.test";
            let app = api(token).await;
            let (join, create) = (control::api::JOIN, control::api::CREATE_TASK);
            let (join_limit, create_limit) = (join.body_limit as usize, create.body_limit as usize);
            // Within the limit the body is read (and is not JSON).
            assert_eq!(
                post(&app, join.path, None, join_limit).await,
                StatusCode::BAD_REQUEST
            );
            assert_eq!(
                post(&app, join.path, None, join_limit + 1).await,
                StatusCode::PAYLOAD_TOO_LARGE
            );
            // Creating a task takes more than joining.
            assert!(create_limit > join_limit);
            assert_eq!(
                post(&app, create.path, Some(token), create_limit).await,
                StatusCode::BAD_REQUEST
            );
            assert_eq!(
                post(&app, create.path, Some(token), create_limit + 1).await,
                StatusCode::PAYLOAD_TOO_LARGE
            );
        });
    }
}

#[cfg(test)]
mod body_tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use futures::StreamExt as _;
    use tower::ServiceExt as _;

    use super::limit_tests::{api, block_on, peer};

    /// A request refused before its handler looks at the body (no token
    /// here) has its body read to the end first: the connection then
    /// closes with nothing unread, and the client reads the answer instead
    /// of a reset.
    #[test]
    fn a_refused_request_has_its_body_read_first() {
        block_on(async {
            let app = api("strata-cli.v1.test").await;
            let ended = Arc::new(AtomicBool::new(false));
            let flag = ended.clone();
            let chunks =
                futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 1024])))
                    .chain(futures::stream::once(async move {
                        flag.store(true, Ordering::SeqCst);
                        Ok(Vec::new())
                    }));
            let mut req = Request::put(control::api::SET_EDGE_CERT.fill(&["shop.test"]))
                .header("content-type", "application/json")
                .body(Body::from_stream(chunks))
                .expect("request");
            req.extensions_mut().insert(peer());
            let status = app.oneshot(req).await.expect("infallible").status();
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert!(ended.load(Ordering::SeqCst), "the body was read to its end");
        });
    }
}

/// Who may call what, through the router: the extractors refuse these
/// requests before a handler reads the store.
#[cfg(test)]
mod access_tests {
    use std::time::{Duration, SystemTime};

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use control::model::ApiErrorBody;
    use control::rbac::Role;
    use tower::ServiceExt;

    use super::Peer;
    use super::limit_tests::{api_with, block_on, peer};
    use crate::pki::CertInfo;

    const ADMIN: &str = "strata-cli.v1.admin";
    const VIEWER: &str = "strata-cli.v1.viewer";
    const METRICS: &str = "strata-cli.v1.metrics";
    const REVOKED_SERIAL: &str = "4a01";

    fn cert(serial: &str, not_after: SystemTime) -> CertInfo {
        CertInfo {
            common_name: "n1".into(),
            not_before: SystemTime::UNIX_EPOCH,
            not_after,
            key_sha256: "ab".repeat(32),
            serial: serial.into(),
        }
    }

    /// The status and the error body's code and text of `method path`,
    /// called with `token` or as the node of `node`, with a body that is
    /// not JSON.
    async fn call(
        app: &Router,
        method: Method,
        path: &str,
        token: Option<&str>,
        node: Option<CertInfo>,
    ) -> (StatusCode, String, String) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut req = req.body(Body::from("x")).expect("request");
        req.extensions_mut().insert(Peer { node, ..peer() });
        let resp = app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let body: ApiErrorBody = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not an error body: {}", String::from_utf8_lossy(&bytes)));
        (status, body.code.unwrap_or_default(), body.error)
    }

    async fn app() -> Router {
        api_with(
            &[
                (ADMIN, Role::Admin),
                (VIEWER, Role::Viewer),
                (METRICS, Role::Metrics),
            ],
            &[REVOKED_SERIAL],
        )
        .await
    }

    #[test]
    fn a_viewer_cannot_deploy_and_the_refusal_names_its_role() {
        block_on(async {
            let app = app().await;
            let create = control::api::CREATE_TASK;
            let (status, code, text) =
                call(&app, Method::POST, create.path, Some(VIEWER), None).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::FORBIDDEN, "role-forbids")
            );
            assert_eq!(
                text,
                "this token's role `viewer` may not run tasks (roles that may: admin, operator)"
            );
            // Nor make tokens.
            let tokens = control::api::CREATE_JOIN_TOKEN;
            let (status, _, text) = call(&app, Method::POST, tokens.path, Some(VIEWER), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(text.contains("may not manage join tokens"), "{text}");
            // A metrics token cannot read the cluster's state.
            let nodes = control::api::LIST_NODES;
            let (status, _, text) = call(&app, Method::GET, nodes.path, Some(METRICS), None).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert!(
                text.contains("role `metrics` may not read the cluster's state"),
                "{text}"
            );
            // What cannot be a token is refused without a read of etcd.
            let (status, code, _) = call(&app, Method::GET, nodes.path, Some("nope"), None).await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::UNAUTHORIZED, "bad-token")
            );
            // An admin gets past the extractor: the body is read (and is
            // not JSON).
            let status = app
                .clone()
                .oneshot({
                    let mut req = Request::post(create.path)
                        .header("content-type", "application/json")
                        .header("authorization", format!("Bearer {ADMIN}"))
                        .body(Body::from("x"))
                        .expect("request");
                    req.extensions_mut().insert(peer());
                    req
                })
                .await
                .expect("infallible")
                .status();
            assert_eq!(status, StatusCode::BAD_REQUEST);
        });
    }

    #[test]
    fn node_certificates_reach_only_node_routes_and_never_once_revoked() {
        block_on(async {
            let app = app().await;
            let valid = cert("4a02", SystemTime::now() + Duration::from_secs(3600));
            // Operator routes, reads among them, refuse a node.
            for (method, path) in [
                (Method::GET, control::api::LIST_NODES.path),
                (Method::GET, control::api::LIST_TASKS.path),
                (Method::GET, control::api::CLUSTER_STATUS.path),
                (Method::POST, control::api::CREATE_TASK.path),
                (Method::POST, control::api::CREATE_JOIN_TOKEN.path),
            ] {
                let (status, code, _) = call(&app, method, path, None, Some(valid.clone())).await;
                assert_eq!(
                    (status, code.as_str()),
                    (StatusCode::FORBIDDEN, "operator-only"),
                    "{path}"
                );
            }
            // Another node's heartbeat.
            let (status, code, _) = call(
                &app,
                Method::POST,
                &control::api::HEARTBEAT.fill(&["n2"]),
                None,
                Some(valid),
            )
            .await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::FORBIDDEN, "other-node")
            );
            // A revoked certificate, on its own heartbeat.
            let revoked = cert(
                REVOKED_SERIAL,
                SystemTime::now() + Duration::from_secs(3600),
            );
            let (status, code, text) = call(
                &app,
                Method::POST,
                &control::api::HEARTBEAT.fill(&["n1"]),
                None,
                Some(revoked),
            )
            .await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::FORBIDDEN, "cert-revoked")
            );
            assert!(text.contains("was revoked"), "{text}");
            // An expired one (a kept-alive connection outlives its
            // handshake).
            let expired = cert("4a03", SystemTime::UNIX_EPOCH + Duration::from_secs(60));
            let (status, code, _) = call(
                &app,
                Method::GET,
                &control::api::WATCH_NODES.fill(&["0"]),
                None,
                Some(expired),
            )
            .await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::UNAUTHORIZED, "cert-expired")
            );
        });
    }

    #[test]
    fn nothing_is_admitted_before_the_access_lists_are_loaded() {
        block_on(async {
            let store = crate::etcd::Store::connect(&crate::etcd::EtcdConnect {
                endpoints: vec!["http://127.0.0.1:9".to_string()],
                tls: None,
            })
            .await
            .expect("store");
            let state = super::ApiState::new(
                store,
                crate::pki::Ca::generate("t").expect("ca"),
                control::model::NodeSettings {
                    format: Default::default(),
                    cluster: "t".to_string(),
                    heartbeat_interval_seconds: 1,
                    grace_seconds: 3,
                    masters: Vec::new(),
                    network: None,
                    insecure_registries: Vec::new(),
                    edge: Default::default(),
                },
                "m1".to_string(),
                crate::pki::CERT_LIFETIME,
            )
            .expect("state");
            let app = super::router(std::sync::Arc::new(state));
            let valid = cert("4a02", SystemTime::now() + Duration::from_secs(3600));
            let (status, code, _) = call(
                &app,
                Method::POST,
                &control::api::HEARTBEAT.fill(&["n1"]),
                None,
                Some(valid),
            )
            .await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, "access-not-loaded")
            );
            let (status, code, _) = call(
                &app,
                Method::GET,
                control::api::LIST_NODES.path,
                Some(ADMIN),
                None,
            )
            .await;
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::SERVICE_UNAVAILABLE, "access-not-loaded")
            );
        });
    }
}
