//! The Strata API every master serves: axum over rustls. Every route of
//! `control::api::ROUTES` is mounted here with its handler ([`routes`]);
//! who may call it is an extractor of [`auth`] in the handler's arguments
//! (nodes by their client certificate, operators by their bearer token, a
//! joining node by the join token in its request), and every failure is an
//! [`error::ApiError`], answered in one place.

pub mod auth;
pub mod error;
pub mod routes;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter};
use control::api::{self as api_routes, Method, Route};
use control::model::{NodeSettings, TaskRecord};
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tower::ServiceExt;

use crate::etcd::Store;
use crate::pki::{self, Ca, CertInfo};
use error::ApiError;
use routes::{cluster, join, nodes, tasks, watch};

/// What the handlers share.
pub struct ApiState {
    pub store: Store,
    pub ca: Ca,
    /// Hex sha256 of the CA certificate (what join tokens pin).
    pub ca_sha256: String,
    /// Hex sha256 of the join token's secret.
    pub join_secret_sha256: String,
    /// Hex sha256 of each accepted CLI bearer token.
    pub cli_token_sha256: Vec<String>,
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
    task_list: SharedRead<Arc<BTreeMap<String, TaskRecord>>>,
}

impl ApiState {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        ca: Ca,
        join_secret_sha256: String,
        cli_token_sha256: Vec<String>,
        settings: NodeSettings,
        answered_by: String,
        node_cert_lifetime: Duration,
    ) -> Result<ApiState, pki::Error> {
        Ok(ApiState {
            ca_sha256: ca.fingerprint()?,
            store,
            ca,
            join_secret_sha256,
            cli_token_sha256,
            settings,
            answered_by,
            node_cert_lifetime,
            registered: Mutex::default(),
            node_watch: SharedRead::default(),
            task_list: SharedRead::default(),
        })
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

/// What a shared read gave: its revision and value, or its failure.
type Kept<V> = Result<(i64, V), (StatusCode, String)>;

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
                Err((status, message)) => {
                    return Err(ApiError::Shared {
                        status: *status,
                        message: message.clone(),
                    });
                }
                Ok(_) => {}
            }
        }
        let answer = read().await;
        let kept = match &answer {
            Ok((revision, value)) => Ok((*revision, value.clone())),
            Err(e) => Err((e.status(), e.to_string())),
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
        mount(api_routes::HEARTBEAT, nodes::heartbeat),
        mount(api_routes::WATCH_NODES, watch::watch_nodes),
        mount(api_routes::CLUSTER_STATUS, cluster::cluster_status),
        mount(api_routes::LIST_TASKS, tasks::list_tasks),
        mount(api_routes::CREATE_TASK, tasks::create_task),
        mount(api_routes::DELETE_TASK, tasks::delete_task),
        mount(api_routes::REPORT_TASK, tasks::report_task),
        mount(api_routes::WATCH_ASSIGNMENTS, watch::watch_assignments),
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
    (route, axum::routing::on(filter, handler))
}

/// Serves the API on `listener` until the task is dropped. TLS handshake
/// failures (a foreign or expired client certificate) are logged.
pub async fn serve(listener: tokio::net::TcpListener, tls: ServerConfig, state: Arc<ApiState>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let app = router(state);
    loop {
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
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
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
            let peer = Peer { addr, node };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(peer.clone());
                    app.clone().oneshot(req)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
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
