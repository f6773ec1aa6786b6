//! The Strata API every master serves: axum over rustls. Every request is
//! authenticated: nodes by their client certificate (mutual TLS), the CLI by
//! its bearer token, and a joining node by the join token in its request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use configs::net::Ipv4Cidr;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use tower::ServiceExt;

use crate::cluster::log;
use crate::cluster::model::{
    ApiErrorBody, AssignmentWatch, ClusterStatus, HeartbeatResponse, JoinRequest, JoinResponse,
    NodeInfo, NodeRecord, NodeSettings, NodeState, NodeStatus, NodeWatch, Registered, TaskEndpoint,
    TaskRecord, TaskReport, TaskRequest, TaskView, node_statuses,
};
use crate::etcd::Store;
use crate::pki::{self, Ca, CertInfo, JoinToken};

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
    /// The node list and the task list as last read for the long-polls.
    node_watch: SharedRead<NodeWatch>,
    task_list: SharedRead<std::collections::BTreeMap<String, TaskRecord>>,
}

/// How long one read of cluster state may answer other long-polls: those a
/// change woke together share it. Changes the shared watch does not follow
/// (a node's liveness key expiring) show within this time.
const SHARED_READ_FRESH: Duration = Duration::from_secs(1);

/// One read of cluster state shared by the long-polls that a change woke
/// together: with N agents each holding a watch, every change used to cost
/// N identical reads of the whole list (`cargo xtask bench cluster`).
struct SharedRead<T> {
    last: tokio::sync::Mutex<Option<(i64, std::time::Instant, Arc<T>)>>,
}

impl<T> Default for SharedRead<T> {
    fn default() -> Self {
        SharedRead {
            last: tokio::sync::Mutex::new(None),
        }
    }
}

impl<T> SharedRead<T> {
    /// The last read when it is at least at revision `seen` and fresh,
    /// otherwise a new one (`read` gives its revision and value). Callers
    /// queue on the lock, so one read answers all of them.
    async fn get<F, Fut>(&self, seen: i64, read: F) -> Result<(i64, Arc<T>)>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(i64, T)>>,
    {
        let mut last = self.last.lock().await;
        if let Some((revision, at, value)) = last.as_ref()
            && *revision >= seen
            && at.elapsed() < SHARED_READ_FRESH
        {
            return Ok((*revision, value.clone()));
        }
        let (revision, value) = read().await?;
        let value = Arc::new(value);
        *last = Some((revision, std::time::Instant::now(), value.clone()));
        Ok((revision, value))
    }
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
    ) -> std::result::Result<ApiState, pki::Error> {
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

enum Caller {
    Admin,
    Node(CertInfo),
}

/// An error answer: a status and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl From<crate::etcd::Error> for ApiError {
    fn from(e: crate::etcd::Error) -> ApiError {
        if let crate::etcd::Error::Lease(lease) = &e {
            return ApiError::new(StatusCode::CONFLICT, format!("overlay lease: {lease}"));
        }
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cluster store unavailable: {e}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ApiErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

type Result<T> = std::result::Result<T, ApiError>;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn authenticate(state: &ApiState, headers: &HeaderMap, peer: &Peer) -> Result<Caller> {
    if let Some(node) = &peer.node {
        return Ok(Caller::Node(node.clone()));
    }
    let Some(value) = headers.get(hyper::header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication required: present a node certificate or a bearer token",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    let hash = pki::sha256_hex(token.as_bytes());
    if state
        .cli_token_sha256
        .iter()
        .any(|h| pki::constant_time_eq(h, &hash))
    {
        Ok(Caller::Admin)
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the bearer token is not valid for this cluster",
        ))
    }
}

/// The node itself, authenticated by its certificate.
fn as_node(caller: Caller, name: &str) -> Result<CertInfo> {
    match caller {
        Caller::Node(cert) if cert.common_name == name => Ok(cert),
        Caller::Node(cert) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the certificate of node `{}` cannot act for node `{name}`",
                cert.common_name
            ),
        )),
        Caller::Admin => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("only node `{name}` itself can do this"),
        )),
    }
}

/// The router, without the transport.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/join", post(join))
        .route("/v1/nodes", get(list_nodes))
        .route(
            "/v1/nodes/{name}",
            get(show_node).post(register).delete(remove_node),
        )
        .route("/v1/nodes/{name}/heartbeat", post(heartbeat))
        .route("/v1/watch/nodes/{after}", get(watch_nodes))
        .route("/v1/cluster/status", get(cluster_status))
        .route("/v1/tasks", get(list_tasks).post(create_task))
        .route("/v1/tasks/{id}", axum::routing::delete(delete_task))
        .route("/v1/tasks/{id}/status", put(report_task))
        .route("/v1/watch/assignments/{after}", get(watch_assignments))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API endpoint") })
        .with_state(state)
}

async fn join(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<JoinRequest>,
) -> Result<Json<JoinResponse>> {
    let unauthorized = |m: String| {
        log(&format!(
            "api: refused join of `{}` from {}: {m}",
            req.name,
            peer.addr.ip()
        ));
        ApiError::new(StatusCode::UNAUTHORIZED, m)
    };
    let token = JoinToken::parse(&req.token).map_err(|e| unauthorized(e.to_string()))?;
    if token.ca_sha256 != state.ca_sha256 {
        return Err(unauthorized(format!(
            "the join token pins CA {} but this cluster's CA is {}: the token is for another cluster",
            token.ca_sha256, state.ca_sha256
        )));
    }
    if !pki::constant_time_eq(&token.secret_sha256(), &state.join_secret_sha256) {
        return Err(unauthorized(
            "the join token is wrong: its secret is not this cluster's".to_string(),
        ));
    }
    configs::cluster::check_label(&req.name)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, format!("node name: {m}")))?;
    let signed = state
        .ca
        .sign_node_csr(&req.name, &req.csr_pem, state.node_cert_lifetime)
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("certificate signing request: {e}"),
            )
        })?;
    let existing = state.store.get_node(&req.name).await?;
    let at = now();
    let record = match existing {
        Some(r) if r.key_sha256 != signed.key_sha256 => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "node name `{}` is taken by another node (another key, joined at unix time {}); pick another name",
                    req.name, r.joined_at
                ),
            ));
        }
        Some(r) => r,
        None => NodeRecord {
            info: NodeInfo {
                name: req.name.clone(),
                role: req.role,
                addresses: vec![peer.addr.ip().to_string()],
                cpus: 0,
                memory_bytes: 0,
                disk_bytes: 0,
                attributes: Default::default(),
            },
            key_sha256: signed.key_sha256.clone(),
            joined_at: at,
            registered_at: at,
        },
    };
    state.store.put_node(&record).await?;
    log(&format!(
        "api: node `{}` ({}) joined from {}",
        req.name,
        req.role,
        peer.addr.ip()
    ));
    Ok(Json(JoinResponse {
        cert_pem: signed.cert_pem,
        ca_pem: state.ca.cert_pem.clone(),
        settings: state.settings.clone(),
    }))
}

/// Checks that the node exists and that its certificate holds its key.
async fn check_registered(state: &ApiState, cert: &CertInfo) -> Result<NodeRecord> {
    let record = state
        .store
        .get_node(&cert.common_name)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "node `{}` is not known to the cluster: join first",
                    cert.common_name
                ),
            )
        })?;
    if record.key_sha256 != cert.key_sha256 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the certificate's key is not the key node `{}` joined with",
                cert.common_name
            ),
        ));
    }
    Ok(record)
}

async fn register(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(info): Json<NodeInfo>,
) -> Result<Json<Registered>> {
    let cert = as_node(authenticate(&state, &headers, &peer)?, &name)?;
    if info.name != name {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("registration for `{}` sent to node `{name}`", info.name),
        ));
    }
    let old = check_registered(&state, &cert).await?;
    let record = NodeRecord {
        info,
        key_sha256: old.key_sha256,
        joined_at: old.joined_at,
        registered_at: now(),
    };
    let subnet = lease_for(&state, &name).await?;
    state.store.put_node(&record).await?;
    state
        .registered
        .lock()
        .expect("registered lock poisoned")
        .insert(name.clone(), cert.key_sha256.clone());
    log(&format!(
        "api: node `{name}` ({}) registered: {} CPU(s), {} MiB memory, addresses {}",
        record.info.role,
        record.info.cpus,
        record.info.memory_bytes >> 20,
        record.info.addresses.join(", ")
    ));
    if let Some(subnet) = subnet {
        log(&format!("api: node `{name}` holds overlay subnet {subnet}"));
    }
    Ok(Json(Registered {
        settings: state.settings.clone(),
        subnet,
    }))
}

/// The node's overlay subnet: its lease, or a new one (none when the
/// cluster has no overlay settings or every subnet is leased).
async fn lease_for(state: &ApiState, name: &str) -> Result<Option<Ipv4Cidr>> {
    let Some(net) = &state.settings.network else {
        return Ok(None);
    };
    match state
        .store
        .lease_subnet(net.overlay.cidr, net.overlay.subnet_prefix, name)
        .await
    {
        Ok(subnet) => Ok(Some(subnet)),
        // A full overlay leaves the node without one, not out of the
        // cluster: it still registers and heartbeats, and says so.
        Err(crate::etcd::Error::Lease(e @ crate::overlay::lease::LeaseError::Full { .. })) => {
            log(&format!(
                "api: {e}: node `{name}` registers without an overlay subnet"
            ));
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Removes a node: its record, liveness and overlay lease, in one etcd
/// transaction. Only the CLI (bearer token) may.
async fn remove_node(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>> {
    if !matches!(authenticate(&state, &headers, &peer)?, Caller::Admin) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only the cluster's CLI token can remove nodes",
        ));
    }
    if !state.store.remove_node(&name).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no node named `{name}`"),
        ));
    }
    state
        .registered
        .lock()
        .expect("registered lock poisoned")
        .remove(&name);
    log(&format!(
        "api: node `{name}` removed, its overlay lease released"
    ));
    Ok(Json(serde_json::json!({ "removed": name })))
}

async fn heartbeat(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<HeartbeatResponse>> {
    let cert = as_node(authenticate(&state, &headers, &peer)?, &name)?;
    let known = state
        .registered
        .lock()
        .expect("registered lock poisoned")
        .get(&name)
        == Some(&cert.key_sha256);
    if !known {
        check_registered(&state, &cert).await?;
        state
            .registered
            .lock()
            .expect("registered lock poisoned")
            .insert(name.clone(), cert.key_sha256.clone());
    }
    let ttl = state
        .store
        .heartbeat(&name, state.settings.grace_seconds, now())
        .await?;
    Ok(Json(HeartbeatResponse {
        ttl_seconds: ttl,
        settings: state.settings.clone(),
    }))
}

async fn statuses(state: &ApiState) -> Result<Vec<NodeStatus>> {
    let records = state.store.list_nodes().await?;
    let alive = state.store.alive().await?;
    let leases = state.store.leases().await?;
    let mut out = node_statuses(records, &alive);
    for n in &mut out {
        n.subnet = leases.get(&n.record.info.name).copied();
    }
    Ok(out)
}

async fn list_nodes(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Json<Vec<NodeStatus>>> {
    authenticate(&state, &headers, &peer)?;
    Ok(Json(statuses(&state).await?))
}

/// How long a node-list watch waits for a change before answering the
/// unchanged list.
pub const WATCH_WAIT: Duration = Duration::from_secs(20);

/// The node list once it changed after etcd revision `after` (a long
/// poll of at most [`WATCH_WAIT`]; `0` answers at once), with the revision
/// to pass next time.
async fn watch_nodes(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(after): Path<i64>,
) -> Result<Json<NodeWatch>> {
    authenticate(&state, &headers, &peer)?;
    if after > 0 {
        state.store.wait_node_change(after, WATCH_WAIT).await?;
    }
    let seen = state.store.seen_node_change().await;
    let (_, answer) = state
        .node_watch
        .get(seen, || async {
            // The revision before the read: a change racing the read shows
            // up in the next watch.
            let revision = state.store.revision().await?;
            let nodes = statuses(&state).await?;
            let tasks = endpoints(&state).await?;
            Ok((
                revision,
                NodeWatch {
                    revision,
                    nodes,
                    tasks,
                },
            ))
        })
        .await?;
    Ok(Json(NodeWatch::clone(&answer)))
}

/// Every running task that reported an overlay address.
async fn endpoints(state: &ApiState) -> Result<Vec<TaskEndpoint>> {
    let tasks = state.store.list_tasks().await?;
    let reports = state.store.task_reports().await?;
    Ok(tasks_endpoints(&tasks, &reports))
}

/// The endpoints of `tasks` from their nodes' `reports`: running ones
/// with an address. Pure.
pub fn tasks_endpoints(
    tasks: &std::collections::BTreeMap<String, TaskRecord>,
    reports: &std::collections::BTreeMap<String, TaskReport>,
) -> Vec<TaskEndpoint> {
    tasks
        .iter()
        .filter_map(|(id, t)| {
            let r = reports.get(id)?;
            (r.state == "running").then_some(TaskEndpoint {
                id: id.clone(),
                node: t.node.clone(),
                address: r.address?,
                app: t.spec.app.clone(),
                ports: t.spec.ports.clone(),
            })
        })
        .collect()
}

async fn show_node(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<NodeStatus>> {
    authenticate(&state, &headers, &peer)?;
    statuses(&state)
        .await?
        .into_iter()
        .find(|n| n.record.info.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no node named `{name}`")))
}

async fn cluster_status(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Json<ClusterStatus>> {
    authenticate(&state, &headers, &peer)?;
    let masters = state.store.members().await?;
    let nodes = statuses(&state).await?;
    let healthy = masters.iter().filter(|m| m.healthy).count();
    Ok(Json(ClusterStatus {
        cluster: state.settings.cluster.clone(),
        answered_by: state.answered_by.clone(),
        etcd_leader: masters.iter().find(|m| m.leader).map(|m| m.name.clone()),
        etcd_quorum: healthy * 2 > masters.len(),
        masters,
        nodes_ready: nodes.iter().filter(|n| n.state == NodeState::Ready).count(),
        nodes_total: nodes.len(),
    }))
}

fn require_admin(state: &ApiState, headers: &HeaderMap, peer: &Peer, what: &str) -> Result<()> {
    match authenticate(state, headers, peer)? {
        Caller::Admin => Ok(()),
        Caller::Node(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("only the cluster's CLI token can {what}"),
        )),
    }
}

/// Pins a task to a node. The spec is checked as the node's runtime checks
/// it, and the node must be known.
async fn create_task(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Json(req): Json<TaskRequest>,
) -> Result<Json<TaskView>> {
    require_admin(&state, &headers, &peer, "run tasks")?;
    req.spec.validate().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("task `{}`: {e}", req.spec.id),
        )
    })?;
    if req.spec.netns.is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "task `{}`: netns is chosen by the node, not the API",
                req.spec.id
            ),
        ));
    }
    if state.store.get_node(&req.node).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "task `{}`: no node named `{}` in the cluster",
                req.spec.id, req.node
            ),
        ));
    }
    let record = TaskRecord {
        node: req.node.clone(),
        spec: req.spec.clone(),
        created_at: now(),
    };
    if !state.store.create_task(&req.spec.id, &record).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "a task with id `{}` exists already: stop it first",
                req.spec.id
            ),
        ));
    }
    log(&format!(
        "api: task `{}` ({}) pinned to node `{}`",
        req.spec.id, req.spec.image, req.node
    ));
    Ok(Json(TaskView {
        id: req.spec.id,
        node: req.node,
        image: req.spec.image,
        state: "pending".to_string(),
        pid: None,
        restarts: 0,
        exit_code: None,
        address: None,
        app: req.spec.app,
        ports: req.spec.ports,
    }))
}

async fn list_tasks(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
) -> Result<Json<Vec<TaskView>>> {
    authenticate(&state, &headers, &peer)?;
    let tasks = state.store.list_tasks().await?;
    let mut reports = state.store.task_reports().await?;
    Ok(Json(
        tasks
            .into_iter()
            .map(|(id, t)| {
                let r = reports.remove(&id);
                TaskView {
                    node: t.node,
                    image: t.spec.image,
                    app: t.spec.app,
                    ports: t.spec.ports,
                    state: r
                        .as_ref()
                        .map_or_else(|| "pending".to_string(), |r| r.state.clone()),
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
async fn delete_task(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    require_admin(&state, &headers, &peer, "stop tasks")?;
    if !state.store.delete_task(&id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no task with id `{id}`"),
        ));
    }
    log(&format!("api: task `{id}` stopped"));
    Ok(Json(serde_json::json!({ "stopped": id })))
}

/// A node reports the state of one of its tasks.
async fn report_task(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(mut report): Json<TaskReport>,
) -> Result<Json<serde_json::Value>> {
    let Caller::Node(cert) = authenticate(&state, &headers, &peer)? else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "only the node running a task reports its status",
        ));
    };
    let task =
        state.store.get_task(&id).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, format!("no task with id `{id}`"))
        })?;
    if task.node != cert.common_name {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "task `{id}` runs on node `{}`, not on `{}`",
                task.node, cert.common_name
            ),
        ));
    }
    report.at = now();
    state.store.put_task_report(&id, &report).await?;
    Ok(Json(serde_json::json!({ "reported": id })))
}

/// The tasks assigned to the calling node (known by its certificate) once
/// the task set changed after etcd revision `after` (a long poll of at
/// most [`WATCH_WAIT`]; `0` answers at once).
async fn watch_assignments(
    State(state): State<Arc<ApiState>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    Path(after): Path<i64>,
) -> Result<Json<AssignmentWatch>> {
    let Caller::Node(cert) = authenticate(&state, &headers, &peer)? else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "assignments are for nodes: present the node's certificate",
        ));
    };
    check_registered(&state, &cert).await?;
    if after > 0 {
        state.store.wait_task_change(after, WATCH_WAIT).await?;
    }
    let seen = state.store.seen_task_change().await;
    let (revision, all) = state
        .task_list
        .get(seen, || async {
            let revision = state.store.revision().await?;
            Ok((revision, state.store.list_tasks().await?))
        })
        .await?;
    let tasks = all
        .values()
        .filter(|t| t.node == cert.common_name)
        .map(|t| t.spec.clone())
        .collect();
    Ok(Json(AssignmentWatch { revision, tasks }))
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
                log(&format!("api: accept failed: {e}"));
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
                        log(&format!("api: TLS handshake with {addr} failed: {e}"));
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
