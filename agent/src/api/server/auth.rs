//! Who calls: axum extractors that authenticate a request before its
//! handler runs, one per kind of caller a route admits
//! (`control::api::Auth`). Nodes present their client certificate (mutual
//! TLS), checked against the revocation list and its expiry on every
//! request; operators a bearer token, whose record gives its role, and the
//! route's permission (a type parameter, [`Needs`]) must be among what the
//! role grants; a joining node the join token in its body (checked by the
//! join handler itself). The revocation list and the user tokens come from
//! the master's cache ([`crate::etcd::AccessCache`]): until it is loaded
//! every request that needs it is refused (503).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use control::access::check_user_token;
use control::rbac::{Permission, Role, roles_granting};

use super::audit::CallerSlot;
use super::error::ApiError;
use super::{ApiState, Peer};
use crate::pki::{self, CertInfo};

/// How long a request waits for this master to load its access lists
/// before it is refused.
const ACCESS_WAIT: Duration = Duration::from_secs(2);

/// An operator, by a user token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The token's id.
    pub id: String,
    /// Whose it is.
    pub name: String,
    pub role: Role,
}

impl User {
    /// How the records an operator makes name who made them.
    pub fn label(&self) -> String {
        if self.name.is_empty() {
            format!("user token {}", self.id)
        } else {
            format!("user token {} ({})", self.id, self.name)
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An operator, by a user token.
    User(User),
    /// A node, by its certificate.
    Node(CertInfo),
}

/// The caller of a request: its node certificate (not revoked, not
/// expired), else a valid bearer token.
pub async fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Caller, ApiError> {
    if let Some(node) = &peer.node {
        check_certificate(state, node).await?;
        return Ok(Caller::Node(node.clone()));
    }
    let Some(value) = headers.get(hyper::header::AUTHORIZATION) else {
        return Err(ApiError::NoCredentials);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    let hash = pki::sha256_hex(token.as_bytes());
    let access = state.store.access();
    if !access.wait_loaded(ACCESS_WAIT).await {
        return Err(ApiError::AccessNotLoaded);
    }
    // A token another master made a moment ago may not have reached this
    // master's cache yet: one read of etcd, for what can be a token at all.
    let record = match access.user_token(&hash) {
        Some(r) => r,
        None if token.starts_with(pki::CLI_TOKEN_PREFIX) => state
            .store
            .user_token(&hash)
            .await?
            .ok_or(ApiError::BadToken)?,
        None => return Err(ApiError::BadToken),
    };
    let role =
        check_user_token(&record, crate::clock::unix_secs()).map_err(ApiError::TokenRefused)?;
    Ok(Caller::User(User {
        id: record.id,
        name: record.name,
        role,
    }))
}

/// A node certificate the TLS handshake accepted is refused once it
/// expired (a kept-alive connection outlives the handshake) or was revoked
/// (its node was removed).
async fn check_certificate(state: &ApiState, cert: &CertInfo) -> Result<(), ApiError> {
    if crate::clock::unix_secs() >= cert.not_after_unix() {
        return Err(ApiError::CertExpired(cert.common_name.clone()));
    }
    let access = state.store.access();
    if !access.wait_loaded(ACCESS_WAIT).await {
        return Err(ApiError::AccessNotLoaded);
    }
    if access.is_revoked(&cert.serial) {
        return Err(ApiError::CertRevoked {
            node: cert.common_name.clone(),
            serial: cert.serial.clone(),
        });
    }
    Ok(())
}

/// The connection's peer, which the transport adds to every request.
fn peer(parts: &Parts) -> Result<&Peer, ApiError> {
    parts
        .extensions
        .get::<Peer>()
        .ok_or(ApiError::NoCredentials)
}

/// [`authenticate`] for an extractor: the caller also goes into the audit
/// layer's slot, when the route is audited, before its role is checked.
async fn identify(state: &ApiState, parts: &Parts) -> Result<Caller, ApiError> {
    let caller = authenticate(state, &parts.headers, peer(parts)?).await?;
    if let Some(slot) = parts.extensions.get::<CallerSlot>() {
        slot.fill(&caller);
    }
    Ok(caller)
}

/// What an operator's route needs: the permission its route names in
/// `control::api::ROUTES` (a test checks each against its route), and what
/// it does, for the refusal's text.
pub trait Needs {
    const PERMISSION: Permission;
    /// "remove nodes", "run tasks", ...
    const WHAT: &'static str;
}

/// The reads: the node list, one node, the cluster's status, the tasks.
pub struct ReadState;
impl Needs for ReadState {
    const PERMISSION: Permission = Permission::Read;
    const WHAT: &'static str = "read the cluster's state";
}

/// `DELETE /v1/nodes/{name}`.
pub struct RemoveNodes;
impl Needs for RemoveNodes {
    const PERMISSION: Permission = Permission::ManageNodes;
    const WHAT: &'static str = "remove nodes";
}

/// `POST /v1/nodes/{name}/drain` and `/uncordon`.
pub struct DrainNodes;
impl Needs for DrainNodes {
    const PERMISSION: Permission = Permission::ManageNodes;
    const WHAT: &'static str = "drain and uncordon nodes";
}

/// `POST /v1/tasks`.
pub struct RunTasks;
impl Needs for RunTasks {
    const PERMISSION: Permission = Permission::Deploy;
    const WHAT: &'static str = "run tasks";
}

/// The app and deployment routes that change something.
pub struct DeployApps;
impl Needs for DeployApps {
    const PERMISSION: Permission = Permission::Deploy;
    const WHAT: &'static str = "deploy apps";
}

/// `POST /v1/tasks/{id}/logs`: a task's output may hold what its
/// environment gave it, so reading it takes what running it takes.
pub struct ReadLogs;
impl Needs for ReadLogs {
    const PERMISSION: Permission = Permission::Deploy;
    const WHAT: &'static str = "read tasks' logs";
}

/// The job routes that change something.
pub struct DeployJobs;
impl Needs for DeployJobs {
    const PERMISSION: Permission = Permission::Deploy;
    const WHAT: &'static str = "add, run and remove jobs";
}

/// `DELETE /v1/tasks/{id}`.
pub struct StopTasks;
impl Needs for StopTasks {
    const PERMISSION: Permission = Permission::Deploy;
    const WHAT: &'static str = "stop tasks";
}

/// The join token routes.
pub struct ManageJoinTokens;
impl Needs for ManageJoinTokens {
    const PERMISSION: Permission = Permission::ManageAccess;
    const WHAT: &'static str = "manage join tokens";
}

/// The user token routes.
pub struct ManageUserTokens;
impl Needs for ManageUserTokens {
    const PERMISSION: Permission = Permission::ManageAccess;
    const WHAT: &'static str = "manage user tokens";
}

/// `GET /v1/audit`.
pub struct ReadAuditLog;
impl Needs for ReadAuditLog {
    const PERMISSION: Permission = Permission::ReadAudit;
    const WHAT: &'static str = "read the audit log";
}

/// `POST /v1/cluster/rotate-certs`.
pub struct RotateCerts;
impl Needs for RotateCerts {
    const PERMISSION: Permission = Permission::ManageAccess;
    const WHAT: &'static str = "rotate the cluster's certificates";
}

/// `POST /v1/nodes/{name}/exec`.
pub struct ExecOnNodes;
impl Needs for ExecOnNodes {
    const PERMISSION: Permission = Permission::Exec;
    const WHAT: &'static str = "run commands on nodes";
}

/// `PUT /v1/bundles`, `POST /v1/nodes/{name}/upgrade` and `rollback`,
/// `POST /v1/rollout` and `/v1/rollout/resume`.
pub struct UpgradeNodes;
impl Needs for UpgradeNodes {
    const PERMISSION: Permission = Permission::ManageNodes;
    const WHAT: &'static str = "push bundles and upgrade nodes";
}

/// `PUT` and `DELETE /v1/edge/certs/{host}`.
pub struct SetEdgeCerts;
impl Needs for SetEdgeCerts {
    const PERMISSION: Permission = Permission::Deploy;
    const WHAT: &'static str = "set the edge's certificates";
}

/// `user` when its role grants what `N` needs.
fn permit<N: Needs>(user: User) -> Result<User, ApiError> {
    if user.role.grants(N::PERMISSION) {
        return Ok(user);
    }
    let allowed: Vec<&str> = roles_granting(N::PERMISSION)
        .into_iter()
        .map(Role::as_str)
        .collect();
    Err(ApiError::RoleForbids {
        role: user.role,
        what: N::WHAT,
        allowed: allowed.join(", "),
    })
}

/// An operator whose role grants what `N` needs (`Auth::Operator`).
pub struct Operator<N>(pub User, pub PhantomData<N>);

impl<N: Needs> FromRequestParts<Arc<ApiState>> for Operator<N> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        match identify(state, parts).await? {
            Caller::User(user) => Ok(Operator(permit::<N>(user)?, PhantomData)),
            Caller::Node(_) => Err(ApiError::OperatorOnly(N::WHAT)),
        }
    }
}

/// Any node, or an operator whose role may read (`Auth::Any`).
pub struct NodeOrReader(pub Caller);

impl FromRequestParts<Arc<ApiState>> for NodeOrReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        match identify(state, parts).await? {
            Caller::Node(cert) => Ok(NodeOrReader(Caller::Node(cert))),
            Caller::User(user) => Ok(NodeOrReader(Caller::User(permit::<ReadState>(user)?))),
        }
    }
}

/// What a node-only route says to an operator, for the refusal's text.
pub trait NodeAction {
    const REFUSAL: &'static str;
}

/// `PUT /v1/tasks/{id}/status`.
pub struct ReportTasks;
impl NodeAction for ReportTasks {
    const REFUSAL: &'static str = "only the node running a task reports its status";
}

/// `GET /v1/watch/assignments/{after}`.
pub struct FollowAssignments;
impl NodeAction for FollowAssignments {
    const REFUSAL: &'static str = "assignments are for nodes: present the node's certificate";
}

/// `GET /v1/bundles/{sha256}`.
pub struct FetchBundles;
impl NodeAction for FetchBundles {
    const REFUSAL: &'static str = "bundles are downloaded by nodes: present the node's certificate";
}

/// `POST /v1/exec/{id}/attach`.
pub struct AttachExec;
impl NodeAction for AttachExec {
    const REFUSAL: &'static str = "only the node an exec session is for attaches to it";
}

/// Any node, by its certificate (`Auth::Node`; `Auth::TaskNode` checks the
/// task's node in its handler).
pub struct NodeCert<A>(pub CertInfo, PhantomData<A>);

impl<A: NodeAction> FromRequestParts<Arc<ApiState>> for NodeCert<A> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        match identify(state, parts).await? {
            Caller::Node(cert) => Ok(NodeCert(cert, PhantomData)),
            Caller::User(_) => Err(ApiError::NodesOnly(A::REFUSAL)),
        }
    }
}

/// The node the path names (`{name}`), by its own certificate
/// (`Auth::NodeSelf`).
pub struct ThisNode {
    pub name: String,
    pub cert: CertInfo,
}

impl FromRequestParts<Arc<ApiState>> for ThisNode {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = identify(state, parts).await?;
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadPath(e.body_text()))?;
        match caller {
            Caller::Node(cert) if cert.common_name == name => Ok(ThisNode { name, cert }),
            Caller::Node(cert) => Err(ApiError::OtherNode {
                cert: cert.common_name,
                name,
            }),
            Caller::User(_) => Err(ApiError::NodeOnly(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use control::api::{self, Route};

    use super::*;

    /// Each marker needs what its route names.
    #[test]
    fn markers_need_what_their_routes_name() {
        fn check<N: Needs>(route: Route) {
            assert_eq!(route.permission, Some(N::PERMISSION), "{route:?}");
        }
        check::<ReadState>(api::LIST_NODES);
        check::<ReadState>(api::SHOW_NODE);
        check::<ReadState>(api::CLUSTER_STATUS);
        check::<ReadState>(api::LIST_TASKS);
        check::<ReadState>(api::WATCH_NODES);
        check::<RemoveNodes>(api::REMOVE_NODE);
        check::<DrainNodes>(api::DRAIN_NODE);
        check::<DrainNodes>(api::UNCORDON_NODE);
        check::<UpgradeNodes>(api::PUSH_BUNDLE);
        check::<UpgradeNodes>(api::UPGRADE_NODE);
        check::<UpgradeNodes>(api::ROLLBACK_NODE);
        check::<UpgradeNodes>(api::START_ROLLOUT);
        check::<UpgradeNodes>(api::RESUME_ROLLOUT);
        check::<UpgradeNodes>(api::CANCEL_ROLLOUT);
        check::<ReadState>(api::SHOW_ROLLOUT);
        check::<ReadState>(api::LIST_BUNDLES);
        check::<RunTasks>(api::CREATE_TASK);
        check::<StopTasks>(api::DELETE_TASK);
        check::<ManageJoinTokens>(api::CREATE_JOIN_TOKEN);
        check::<ManageJoinTokens>(api::LIST_JOIN_TOKENS);
        check::<ManageJoinTokens>(api::REVOKE_JOIN_TOKEN);
        check::<ManageUserTokens>(api::CREATE_USER_TOKEN);
        check::<ManageUserTokens>(api::LIST_USER_TOKENS);
        check::<ManageUserTokens>(api::REVOKE_USER_TOKEN);
        check::<ReadAuditLog>(api::LIST_AUDIT);
        check::<ExecOnNodes>(api::EXEC_NODE);
        check::<RotateCerts>(api::ROTATE_CERTS);
        check::<SetEdgeCerts>(api::SET_EDGE_CERT);
        check::<SetEdgeCerts>(api::REMOVE_EDGE_CERT);
        check::<ReadState>(api::LIST_EDGE_CERTS);
        for route in [
            api::LIST_APPS,
            api::SHOW_APP,
            api::APP_VERSIONS,
            api::LIST_DEPLOYMENTS,
            api::SHOW_DEPLOYMENT,
            api::LIST_JOBS,
            api::SHOW_JOB,
            api::LIST_RUNS,
            api::SHOW_RUN,
        ] {
            check::<ReadState>(route);
        }
        for route in [
            api::PUT_JOB,
            api::REMOVE_JOB,
            api::START_RUN,
            api::KILL_RUN,
            api::ENABLE_SCHEDULE,
        ] {
            check::<DeployJobs>(route);
        }
        check::<ReadLogs>(api::TASK_LOGS);
        for route in [
            api::DEPLOY_APPS,
            api::SCALE_APP,
            api::RESTART_APP,
            api::REMOVE_APP,
            api::ROLLBACK_DEPLOYMENT,
            api::PROMOTE_DEPLOYMENT,
        ] {
            check::<DeployApps>(route);
        }
        assert_eq!(ReadState::PERMISSION, Permission::Read);
    }

    #[test]
    fn a_role_that_lacks_the_permission_is_refused_with_what_may() {
        let viewer = User {
            id: "0123456789ab".into(),
            name: "ci".into(),
            role: Role::Viewer,
        };
        assert_eq!(
            permit::<ReadState>(viewer.clone()).ok(),
            Some(viewer.clone())
        );
        let refused = permit::<RunTasks>(viewer.clone()).expect_err("a viewer cannot deploy");
        assert_eq!(
            refused.to_string(),
            "this token's role `viewer` may not run tasks (roles that may: admin, operator)"
        );
        assert_eq!(viewer.label(), "user token 0123456789ab (ci)");
    }
}
