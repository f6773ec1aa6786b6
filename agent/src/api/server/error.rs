//! The API's errors: one variant per way a request fails, each mapped to
//! its HTTP status in one place ([`ApiError::status`]) and answered as an
//! [`ApiErrorBody`] naming what went wrong and what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use control::lease::LeaseError;
use control::model::ApiErrorBody;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required: present a node certificate or a bearer token")]
    NoCredentials,
    #[error("the bearer token is not valid for this cluster")]
    BadToken,
    /// A route for operators, called with a node certificate.
    #[error("only the cluster's CLI token can {0}")]
    OperatorOnly(&'static str),
    /// A route for nodes, called with an operator token.
    #[error("{0}")]
    NodesOnly(&'static str),
    #[error("the certificate of node `{cert}` cannot act for node `{name}`")]
    OtherNode { cert: String, name: String },
    #[error("only node `{0}` itself can do this")]
    NodeOnly(String),
    #[error("{0}")]
    JoinRefused(String),
    #[error("node name: {0}")]
    BadNodeName(String),
    #[error("certificate signing request: {0}")]
    BadCsr(String),
    #[error(
        "node name `{name}` is taken by another node (another key, joined at unix time {joined_at}); pick another name"
    )]
    NameTaken { name: String, joined_at: u64 },
    #[error("node `{0}` is not known to the cluster: join first")]
    NotJoined(String),
    #[error("the certificate's key is not the key node `{0}` joined with")]
    WrongKey(String),
    #[error("registration for `{sent}` sent to node `{path}`")]
    MisaddressedRegistration { sent: String, path: String },
    #[error("no node named `{0}`")]
    NoSuchNode(String),
    #[error("task `{id}`: {reason}")]
    BadTask { id: String, reason: String },
    #[error("task `{id}`: no node named `{node}` in the cluster")]
    TaskNodeUnknown { id: String, node: String },
    #[error("a task with id `{0}` exists already: stop it first")]
    TaskExists(String),
    #[error("no task with id `{0}`")]
    NoSuchTask(String),
    #[error("task `{id}` runs on node `{node}`, not on `{caller}`")]
    NotYourTask {
        id: String,
        node: String,
        caller: String,
    },
    #[error("{0}")]
    BadPath(String),
    #[error("overlay lease: {0}")]
    Lease(#[source] LeaseError),
    #[error("cluster store unavailable: {0}")]
    Store(#[source] crate::etcd::Error),
    #[error("cannot serialize the answer: {0}")]
    Serialize(String),
    #[error("no such API endpoint")]
    NoRoute,
    /// The failure another request met a moment ago, shared with this one
    /// (`SharedRead`).
    #[error("{message}")]
    Shared { status: StatusCode, message: String },
}

impl ApiError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            NoCredentials | BadToken | JoinRefused(_) => StatusCode::UNAUTHORIZED,
            OperatorOnly(_)
            | NodesOnly(_)
            | OtherNode { .. }
            | NodeOnly(_)
            | WrongKey(_)
            | NotYourTask { .. } => StatusCode::FORBIDDEN,
            BadNodeName(_)
            | BadCsr(_)
            | MisaddressedRegistration { .. }
            | BadTask { .. }
            | BadPath(_) => StatusCode::BAD_REQUEST,
            NameTaken { .. } | TaskExists(_) | Lease(_) => StatusCode::CONFLICT,
            NotJoined(_) | NoSuchNode(_) | TaskNodeUnknown { .. } | NoSuchTask(_) | NoRoute => {
                StatusCode::NOT_FOUND
            }
            Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Serialize(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Shared { status, .. } => *status,
        }
    }
}

impl From<crate::etcd::Error> for ApiError {
    fn from(e: crate::etcd::Error) -> ApiError {
        match e {
            crate::etcd::Error::Lease(lease) => ApiError::Lease(lease),
            other => ApiError::Store(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status(),
            Json(ApiErrorBody {
                format: Default::default(),
                error: self.to_string(),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status and text of every error the API answers with.
    #[test]
    fn statuses_and_messages() {
        let errors = [
            ApiError::NoCredentials,
            ApiError::BadToken,
            ApiError::OperatorOnly("remove nodes"),
            ApiError::NodesOnly("assignments are for nodes: present the node's certificate"),
            ApiError::OtherNode {
                cert: "a".into(),
                name: "b".into(),
            },
            ApiError::NodeOnly("b".into()),
            ApiError::NameTaken {
                name: "b".into(),
                joined_at: 7,
            },
            ApiError::NotJoined("b".into()),
            ApiError::BadTask {
                id: "t".into(),
                reason: "netns is chosen by the node, not the API".into(),
            },
            ApiError::NotYourTask {
                id: "t".into(),
                node: "a".into(),
                caller: "b".into(),
            },
            ApiError::NoRoute,
        ];
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{} {e}", e.status().as_u16()))
            .collect();
        expect_test::expect![[r#"
            401 authentication required: present a node certificate or a bearer token
            401 the bearer token is not valid for this cluster
            403 only the cluster's CLI token can remove nodes
            403 assignments are for nodes: present the node's certificate
            403 the certificate of node `a` cannot act for node `b`
            403 only node `b` itself can do this
            409 node name `b` is taken by another node (another key, joined at unix time 7); pick another name
            404 node `b` is not known to the cluster: join first
            400 task `t`: netns is chosen by the node, not the API
            403 task `t` runs on node `a`, not on `b`
            404 no such API endpoint"#]]
        .assert_eq(&text.join("\n"));
    }
}
