//! Who calls: axum extractors that authenticate a request before its
//! handler runs, one per kind of caller a route admits
//! (`control::api::Auth`). Nodes present their client certificate (mutual
//! TLS); operators a bearer token; a joining node the join token in its
//! body (checked by the join handler itself).

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use super::error::ApiError;
use super::{ApiState, Peer};
use crate::pki::{self, CertInfo};

/// Who is calling.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The cluster's CLI token.
    Operator,
    /// A node, by its certificate.
    Node(CertInfo),
}

/// The caller of a connection: its node certificate, else a valid bearer
/// token.
pub fn authenticate(
    state: &ApiState,
    headers: &HeaderMap,
    peer: &Peer,
) -> Result<Caller, ApiError> {
    if let Some(node) = &peer.node {
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
    if state
        .cli_token_sha256
        .iter()
        .any(|h| pki::constant_time_eq(h, &hash))
    {
        Ok(Caller::Operator)
    } else {
        Err(ApiError::BadToken)
    }
}

/// The connection's peer, which the transport adds to every request.
fn peer(parts: &Parts) -> Result<&Peer, ApiError> {
    parts
        .extensions
        .get::<Peer>()
        .ok_or(ApiError::NoCredentials)
}

/// Any authenticated caller (`Auth::Any`).
pub struct AnyCaller(pub Caller);

impl FromRequestParts<Arc<ApiState>> for AnyCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers, peer(parts)?).map(AnyCaller)
    }
}

/// What an operator-only route does, for the refusal's text.
pub trait OperatorAction {
    /// "remove nodes", "run tasks", ...
    const WHAT: &'static str;
}

/// `DELETE /v1/nodes/{name}`.
pub struct RemoveNodes;
impl OperatorAction for RemoveNodes {
    const WHAT: &'static str = "remove nodes";
}

/// `POST /v1/tasks`.
pub struct RunTasks;
impl OperatorAction for RunTasks {
    const WHAT: &'static str = "run tasks";
}

/// `DELETE /v1/tasks/{id}`.
pub struct StopTasks;
impl OperatorAction for StopTasks {
    const WHAT: &'static str = "stop tasks";
}

/// An operator (`Auth::Operator`), for action `A`.
pub struct Operator<A>(PhantomData<A>);

impl<A: OperatorAction> FromRequestParts<Arc<ApiState>> for Operator<A> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, &parts.headers, peer(parts)?)? {
            Caller::Operator => Ok(Operator(PhantomData)),
            Caller::Node(_) => Err(ApiError::OperatorOnly(A::WHAT)),
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

/// Any node, by its certificate (`Auth::Node`; `Auth::TaskNode` checks the
/// task's node in its handler).
pub struct NodeCert<A>(pub CertInfo, PhantomData<A>);

impl<A: NodeAction> FromRequestParts<Arc<ApiState>> for NodeCert<A> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, &parts.headers, peer(parts)?)? {
            Caller::Node(cert) => Ok(NodeCert(cert, PhantomData)),
            Caller::Operator => Err(ApiError::NodesOnly(A::REFUSAL)),
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
        let caller = authenticate(state, &parts.headers, peer(parts)?)?;
        let Path(name) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadPath(e.body_text()))?;
        match caller {
            Caller::Node(cert) if cert.common_name == name => Ok(ThisNode { name, cert }),
            Caller::Node(cert) => Err(ApiError::OtherNode {
                cert: cert.common_name,
                name,
            }),
            Caller::Operator => Err(ApiError::NodeOnly(name)),
        }
    }
}
