//! The API's errors: one variant per way a request fails, each mapped to
//! its HTTP status and its code in one place ([`ApiError::status`],
//! [`ApiError::code`]) and answered as an [`ApiErrorBody`] naming what went
//! wrong and what to do.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use control::access::{JoinRefusal, TokenRefusal};
use control::api::code;
use control::lease::LeaseError;
use control::model::ApiErrorBody;
use control::rbac::Role;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("authentication required: present a node certificate or a bearer token")]
    NoCredentials,
    #[error("the bearer token is not valid for this cluster")]
    BadToken,
    /// A user token that was revoked or expired.
    #[error("{0}")]
    TokenRefused(TokenRefusal),
    /// A route for operators, called with a node certificate.
    #[error("only an operator's bearer token can {0}, not a node certificate")]
    OperatorOnly(&'static str),
    /// An operator whose role does not grant the route's permission.
    #[error("this token's role `{role}` may not {what} (roles that may: {allowed})")]
    RoleForbids {
        role: Role,
        what: &'static str,
        allowed: String,
    },
    /// A route for nodes, called with an operator token.
    #[error("{0}")]
    NodesOnly(&'static str),
    #[error("the certificate of node `{cert}` cannot act for node `{name}`")]
    OtherNode { cert: String, name: String },
    #[error("only node `{0}` itself can do this")]
    NodeOnly(String),
    #[error(
        "the certificate of node `{node}` (serial {serial}) was revoked: the node was removed from the cluster"
    )]
    CertRevoked { node: String, serial: String },
    #[error("the certificate of node `{0}` has expired: the node must join again")]
    CertExpired(String),
    #[error(
        "this master has not loaded the cluster's revoked certificates and user tokens yet: try again shortly"
    )]
    AccessNotLoaded,
    /// A join token that does not parse or pins another cluster's CA.
    #[error("{0}")]
    JoinRefused(String),
    /// A join the cluster's records refuse (`control::access::plan_join`).
    #[error("{0}")]
    Join(JoinRefusal),
    #[error("node name: {0}")]
    BadNodeName(String),
    #[error("certificate signing request: {0}")]
    BadCsr(String),
    #[error("node `{0}` is not known to the cluster: join first")]
    NotJoined(String),
    #[error("the certificate's key is not the key node `{0}` joined with")]
    WrongKey(String),
    #[error(
        "a renewal keeps the node's key: the signing request is not for the key node `{0}` joined with"
    )]
    RenewalKey(String),
    #[error("registration for `{sent}` sent to node `{path}`")]
    MisaddressedRegistration { sent: String, path: String },
    #[error(
        "node `{node}` joined as {joined} and registers as {sent}: a node keeps the role it joined with; to change it, remove the node (strata node remove {node}) and join it again"
    )]
    RoleChanged {
        node: String,
        joined: configs::Role,
        sent: configs::Role,
    },
    #[error("no node named `{0}`")]
    NoSuchNode(String),
    #[error(
        "node `{0}` has not reported its firewall yet: a node reports it once its overlay is up (see `strata node show {0}`)"
    )]
    NoFirewallReport(String),
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
    #[error("token request: {0}")]
    BadTokenRequest(String),
    #[error("no token with id `{0}`")]
    NoSuchToken(String),
    #[error(
        "token {0} is the last admin token that is not revoked or expired: make another admin token first"
    )]
    LastAdmin(String),
    #[error("cannot make a token: {0}")]
    Secret(String),
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
    #[error("exec: {0}")]
    BadExec(control::exec::ExecRequestError),
    #[error(
        "exec needs an upgraded connection (`Connection: upgrade`, `Upgrade: {}`): use `strata node exec`",
        control::exec::PROTOCOL
    )]
    UpgradeRequired,
    #[error("this master holds no exec session `{0}`")]
    ExecElsewhere(String),
    #[error("exec session `{id}` is for node `{node}`, not for `{caller}`")]
    ExecOtherNode {
        id: String,
        node: String,
        caller: String,
    },
    #[error(
        "node `{node}` did not attach to the exec session within {seconds}s: is it Ready (`strata node list`), and is its agent recent enough to know exec?"
    )]
    ExecNotAttached { node: String, seconds: u64 },
    /// An app file (or a change of an app) the API refuses: every problem,
    /// one per line.
    #[error("{0}")]
    BadApp(String),
    #[error("drain: {0}")]
    BadDrain(String),
    /// A certificate for the edge the API refuses.
    #[error("the certificate for {host} is refused: {reason}")]
    BadCert { host: String, reason: String },
    #[error("no edge certificate for {0}: `strata edge cert list` shows the hosts that have one")]
    NoSuchCert(String),
    /// An update bundle the master refuses (it does not verify with the
    /// images' key, is too large, or ends early).
    #[error("bundle refused: {0}")]
    BadBundle(String),
    #[error("no bundle {0} on this master: `strata bundle list` shows the cluster's bundles")]
    NoSuchBundle(String),
    #[error("this master keeps no bundles (it runs outside an image, without an update key)")]
    NoBundleStore,
    #[error("{0}")]
    OrderRefused(control::upgrade::OrderRefused),
    #[error("the master cannot keep the bundle: {0}")]
    BundleStorage(String),
    #[error("{0}")]
    RolloutRefused(control::rollout::RolloutRefused),
    #[error("no cluster upgrade was started: `strata cluster upgrade --version V` starts one")]
    NoRollout,
    #[error("the cluster upgrade changed while this request was handled: try again")]
    RolloutChanged,
    #[error("no app `{0}`: `strata app list` shows the cluster's apps")]
    NoSuchApp(String),
    /// A job the API refuses: every problem, one per line.
    #[error("{0}")]
    BadJob(String),
    #[error("no job `{0}`: `strata job list` shows the cluster's jobs")]
    NoSuchJob(String),
    #[error("job `{job}` has no run `{run}`: `strata job history {job}` shows its runs")]
    NoSuchRun { job: String, run: String },
    #[error(
        "job `{job}` has no schedule `{schedule}`: `strata job show {job}` shows its schedules"
    )]
    NoSuchSchedule { job: String, schedule: String },
    #[error("job `{0}` changed while this request was handled: try again")]
    JobChanged(String),
    #[error("job `{0}` is being removed")]
    JobRemoving(String),
    #[error("run `{run}` of job `{job}` has ended ({state}): nothing to kill")]
    RunEnded {
        job: String,
        run: String,
        state: String,
    },
    #[error("no deployment `{0}`: `strata deployment list` shows them")]
    NoSuchDeployment(String),
    #[error("app `{0}` changed while this request was handled: try again")]
    AppChanged(String),
    #[error("{0}")]
    ExposureTaken(String),
    #[error("deployment `{id}` is {state}: {what}")]
    DeploymentState {
        id: String,
        state: String,
        what: &'static str,
    },
    /// The failure another request met a moment ago, shared with this one
    /// (`SharedRead`).
    #[error("{message}")]
    Shared {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
}

impl ApiError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        use ApiError::*;
        match self {
            NoCredentials | BadToken | TokenRefused(_) | JoinRefused(_) | CertExpired(_) => {
                StatusCode::UNAUTHORIZED
            }
            Join(r) => match r {
                JoinRefusal::UnknownToken
                | JoinRefusal::Revoked { .. }
                | JoinRefusal::Expired { .. }
                | JoinRefusal::UsedUp { .. } => StatusCode::UNAUTHORIZED,
                JoinRefusal::Removed { .. } => StatusCode::FORBIDDEN,
                JoinRefusal::NameTaken { .. } | JoinRefusal::KeyHoldsName { .. } => {
                    StatusCode::CONFLICT
                }
            },
            OperatorOnly(_)
            | RoleForbids { .. }
            | NodesOnly(_)
            | OtherNode { .. }
            | NodeOnly(_)
            | CertRevoked { .. }
            | WrongKey(_)
            | NotYourTask { .. }
            | ExecOtherNode { .. } => StatusCode::FORBIDDEN,
            BadNodeName(_)
            | BadCsr(_)
            | RenewalKey(_)
            | MisaddressedRegistration { .. }
            | BadTask { .. }
            | BadTokenRequest(_)
            | BadExec(_)
            | BadApp(_)
            | BadJob(_)
            | BadDrain(_)
            | BadCert { .. }
            | BadBundle(_)
            | BadPath(_) => StatusCode::BAD_REQUEST,
            OrderRefused(control::upgrade::OrderRefused::Busy { .. }) => StatusCode::CONFLICT,
            OrderRefused(control::upgrade::OrderRefused::NoVersion { .. })
            | OrderRefused(control::upgrade::OrderRefused::NoDigest(_))
            | NoSuchBundle(_) => StatusCode::NOT_FOUND,
            OrderRefused(_) => StatusCode::BAD_REQUEST,
            RolloutRefused(
                control::rollout::RolloutRefused::UnderWay { .. }
                | control::rollout::RolloutRefused::NotHalted(_)
                | control::rollout::RolloutRefused::NotUnderWay(_),
            )
            | RolloutChanged => StatusCode::CONFLICT,
            RolloutRefused(
                control::rollout::RolloutRefused::NothingToResume
                | control::rollout::RolloutRefused::NothingToCancel,
            )
            | NoRollout => StatusCode::NOT_FOUND,
            RolloutRefused(_) => StatusCode::BAD_REQUEST,
            NoBundleStore => StatusCode::SERVICE_UNAVAILABLE,
            BundleStorage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            ExecNotAttached { .. } => StatusCode::GATEWAY_TIMEOUT,
            TaskExists(_)
            | RoleChanged { .. }
            | Lease(_)
            | LastAdmin(_)
            | AppChanged(_)
            | ExposureTaken(_)
            | DeploymentState { .. }
            | JobChanged(_)
            | JobRemoving(_)
            | RunEnded { .. } => StatusCode::CONFLICT,
            NotJoined(_)
            | NoSuchNode(_)
            | NoSuchCert(_)
            | NoFirewallReport(_)
            | TaskNodeUnknown { .. }
            | NoSuchTask(_)
            | NoSuchToken(_)
            | ExecElsewhere(_)
            | NoSuchApp(_)
            | NoSuchDeployment(_)
            | NoSuchJob(_)
            | NoSuchRun { .. }
            | NoSuchSchedule { .. }
            | NoRoute => StatusCode::NOT_FOUND,
            AccessNotLoaded | Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            Serialize(_) | Secret(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Shared { status, .. } => *status,
        }
    }

    /// The answer's code, for programs (`ApiErrorBody::code`): clients
    /// decide on it, never on the status or the text.
    pub fn code(&self) -> &'static str {
        use ApiError::*;
        match self {
            NoCredentials => "no-credentials",
            BadToken => "bad-token",
            TokenRefused(r) => r.code(),
            OperatorOnly(_) => "operator-only",
            RoleForbids { .. } => "role-forbids",
            NodesOnly(_) => "nodes-only",
            OtherNode { .. } => code::OTHER_NODE,
            NodeOnly(_) => "node-only",
            CertRevoked { .. } => code::CERT_REVOKED,
            CertExpired(_) => code::CERT_EXPIRED,
            AccessNotLoaded => "access-not-loaded",
            JoinRefused(_) => "join-refused",
            Join(r) => r.code(),
            BadNodeName(_) => "bad-node-name",
            BadCsr(_) => "bad-csr",
            NotJoined(_) => code::NOT_JOINED,
            WrongKey(_) => code::WRONG_KEY,
            RenewalKey(_) => "renewal-key",
            MisaddressedRegistration { .. } => "misaddressed-registration",
            RoleChanged { .. } => "role-changed",
            NoSuchNode(_) => "no-such-node",
            NoFirewallReport(_) => "no-firewall-report",
            BadTask { .. } => "bad-task",
            TaskNodeUnknown { .. } => "task-node-unknown",
            TaskExists(_) => "task-exists",
            NoSuchTask(_) => "no-such-task",
            NotYourTask { .. } => "not-your-task",
            BadTokenRequest(_) => "bad-token-request",
            NoSuchToken(_) => "no-such-token",
            LastAdmin(_) => "last-admin",
            Secret(_) => "secret",
            BadPath(_) => "bad-path",
            Lease(_) => "lease",
            Store(_) => "store-unavailable",
            Serialize(_) => "serialize",
            NoRoute => "no-route",
            BadExec(_) => "bad-exec",
            UpgradeRequired => "upgrade-required",
            ExecElsewhere(_) => code::EXEC_ELSEWHERE,
            ExecOtherNode { .. } => "exec-other-node",
            ExecNotAttached { .. } => "exec-not-attached",
            BadApp(_) => "bad-app",
            BadDrain(_) => "bad-drain",
            BadCert { .. } => "bad-cert",
            NoSuchCert(_) => "no-such-cert",
            BadBundle(_) => "bad-bundle",
            NoSuchBundle(_) => "no-such-bundle",
            NoBundleStore => "no-bundle-store",
            OrderRefused(control::upgrade::OrderRefused::Busy { .. }) => "upgrade-busy",
            OrderRefused(_) => "bad-upgrade",
            BundleStorage(_) => "bundle-storage",
            RolloutRefused(control::rollout::RolloutRefused::UnderWay { .. }) => {
                "rollout-under-way"
            }
            RolloutRefused(control::rollout::RolloutRefused::NotHalted(_)) => "rollout-not-halted",
            RolloutRefused(control::rollout::RolloutRefused::NotUnderWay(_)) => {
                "rollout-not-under-way"
            }
            RolloutRefused(
                control::rollout::RolloutRefused::NothingToResume
                | control::rollout::RolloutRefused::NothingToCancel,
            ) => "no-rollout",
            RolloutRefused(_) => "bad-rollout",
            NoRollout => "no-rollout",
            RolloutChanged => "rollout-changed",
            NoSuchApp(_) => "no-such-app",
            NoSuchDeployment(_) => "no-such-deployment",
            AppChanged(_) => "app-changed",
            ExposureTaken(_) => "exposure-taken",
            DeploymentState { .. } => "deployment-state",
            BadJob(_) => "bad-job",
            NoSuchJob(_) => "no-such-job",
            NoSuchRun { .. } => "no-such-run",
            NoSuchSchedule { .. } => "no-such-schedule",
            JobChanged(_) => "job-changed",
            JobRemoving(_) => "job-removing",
            RunEnded { .. } => "run-ended",
            Shared { code: c, .. } => c,
        }
    }
}

impl From<crate::etcd::Error> for ApiError {
    fn from(e: crate::etcd::Error) -> ApiError {
        match e {
            crate::etcd::Error::Lease(lease) => ApiError::Lease(lease),
            crate::etcd::Error::Join(refusal) => ApiError::Join(refusal),
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
                code: Some(self.code().to_string()),
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status, code and text of every error the API answers with.
    #[test]
    fn statuses_and_messages() {
        let errors = [
            ApiError::NoCredentials,
            ApiError::BadToken,
            ApiError::TokenRefused(TokenRefusal::Expired {
                id: "0123456789ab".into(),
                at: 9,
            }),
            ApiError::OperatorOnly("remove nodes"),
            ApiError::RoleForbids {
                role: Role::Viewer,
                what: "run tasks",
                allowed: "admin, operator".into(),
            },
            ApiError::NodesOnly("assignments are for nodes: present the node's certificate"),
            ApiError::OtherNode {
                cert: "a".into(),
                name: "b".into(),
            },
            ApiError::NodeOnly("b".into()),
            ApiError::CertRevoked {
                node: "b".into(),
                serial: "4a01".into(),
            },
            ApiError::CertExpired("b".into()),
            ApiError::AccessNotLoaded,
            ApiError::Join(JoinRefusal::NameTaken {
                name: "b".into(),
                joined_at: 7,
            }),
            ApiError::Join(JoinRefusal::Removed {
                name: "b".into(),
                at: 8,
            }),
            ApiError::Join(JoinRefusal::UsedUp {
                id: "0123456789ab".into(),
                used: 1,
            }),
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
            ApiError::NoSuchToken("0123".into()),
            ApiError::NoRoute,
            ApiError::BadExec(control::exec::ExecRequestError::Empty),
            ApiError::UpgradeRequired,
            ApiError::ExecElsewhere("00ff".into()),
            ApiError::ExecOtherNode {
                id: "00ff".into(),
                node: "a".into(),
                caller: "b".into(),
            },
            ApiError::ExecNotAttached {
                node: "a".into(),
                seconds: 30,
            },
        ];
        let text: Vec<String> = errors
            .iter()
            .map(|e| format!("{} {} {e}", e.status().as_u16(), e.code()))
            .collect();
        expect_test::expect![[r#"
            401 no-credentials authentication required: present a node certificate or a bearer token
            401 bad-token the bearer token is not valid for this cluster
            401 token-expired the bearer token 0123456789ab expired at unix time 9: ask an admin for a new one (`strata user token create`)
            403 operator-only only an operator's bearer token can remove nodes, not a node certificate
            403 role-forbids this token's role `viewer` may not run tasks (roles that may: admin, operator)
            403 nodes-only assignments are for nodes: present the node's certificate
            403 other-node the certificate of node `a` cannot act for node `b`
            403 node-only only node `b` itself can do this
            403 cert-revoked the certificate of node `b` (serial 4a01) was revoked: the node was removed from the cluster
            401 cert-expired the certificate of node `b` has expired: the node must join again
            503 access-not-loaded this master has not loaded the cluster's revoked certificates and user tokens yet: try again shortly
            409 name-taken node name `b` is taken by another node (another key, joined at unix time 7); pick another name
            403 node-removed node `b` was removed from the cluster at unix time 8: it joins again only with a join token created after that (`strata cluster token create`)
            401 join-token-used-up join token 0123456789ab is used up: it admitted 1 node(s), as many as it may; ask an operator for a new one (`strata cluster token create`)
            404 not-joined node `b` is not known to the cluster: join first
            400 bad-task task `t`: netns is chosen by the node, not the API
            403 not-your-task task `t` runs on node `a`, not on `b`
            404 no-such-token no token with id `0123`
            404 no-route no such API endpoint
            400 bad-exec exec: the command is empty: name a program to run, as in `strata node exec NODE -- uptime`
            426 upgrade-required exec needs an upgraded connection (`Connection: upgrade`, `Upgrade: strata-exec.v1`): use `strata node exec`
            404 exec-elsewhere this master holds no exec session `00ff`
            403 exec-other-node exec session `00ff` is for node `a`, not for `b`
            504 exec-not-attached node `a` did not attach to the exec session within 30s: is it Ready (`strata node list`), and is its agent recent enough to know exec?"#]]
        .assert_eq(&text.join("\n"));
    }

    /// The codes agents act on are the ones `control::api::code` names.
    #[test]
    fn rejoin_codes_are_answered() {
        let answered = [
            ApiError::NotJoined("b".into()).code(),
            ApiError::WrongKey("b".into()).code(),
            ApiError::OtherNode {
                cert: "a".into(),
                name: "b".into(),
            }
            .code(),
            ApiError::CertRevoked {
                node: "b".into(),
                serial: "1".into(),
            }
            .code(),
            ApiError::CertExpired("b".into()).code(),
        ];
        assert_eq!(answered, code::REJOIN);
        assert!(
            !code::REJOIN.contains(
                &ApiError::Join(JoinRefusal::Expired {
                    id: "x".into(),
                    at: 1
                })
                .code()
            )
        );
    }
}
