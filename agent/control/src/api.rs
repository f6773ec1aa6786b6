//! The API's routes, in one table: the method, the path, who may call it
//! (and, for operators, the permission their role needs), the operation's
//! name and the largest body it reads. The server mounts exactly these
//! (`agent::api::server` checks it in a test), the typed client has one
//! call per route, and `docs/api.yaml` describes each (the tidy test
//! compares it with [`ROUTES`]).

/// An HTTP method the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    /// The lowercase name (as OpenAPI spells it).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Delete => "delete",
        }
    }
}

use crate::rbac::Permission;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Auth {
    /// Anyone holding the cluster's join token (in the body).
    JoinToken,
    /// A node certificate, or an operator token whose role grants the
    /// route's permission.
    Any,
    /// An operator token whose role grants the route's permission.
    Operator,
    /// The certificate of the node the path names (`{name}`).
    NodeSelf,
    /// Any node's certificate.
    Node,
    /// The certificate of the node the task (`{id}`) is assigned to.
    TaskNode,
}

impl Auth {
    /// The name `docs/api.yaml` gives it (`x-strata-auth`).
    pub fn as_str(self) -> &'static str {
        match self {
            Auth::JoinToken => "join-token",
            Auth::Any => "any",
            Auth::Operator => "operator",
            Auth::NodeSelf => "node-self",
            Auth::Node => "node",
            Auth::TaskNode => "task-node",
        }
    }
}

/// One route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    /// With `{parameter}` segments, as the server mounts it.
    pub path: &'static str,
    pub auth: Auth,
    /// The operation's name (`operationId` in `docs/api.yaml`).
    pub operation: &'static str,
    /// What an operator's role must grant to call it (`x-strata-permission`
    /// in `docs/api.yaml`): set on every route an operator may call
    /// ([`Auth::Operator`], [`Auth::Any`]), on no other.
    pub permission: Option<Permission>,
    /// The largest request body the route reads, in bytes: a larger one is
    /// refused with 413 before it is parsed (`x-strata-body-limit` in
    /// `docs/api.yaml`). [`SMALL_BODY`] unless the route takes more.
    pub body_limit: u32,
}

/// The body limit of a route that takes no body or a small one.
pub const SMALL_BODY: u32 = 16 << 10;

impl Route {
    /// The route with a body limit of `bytes`.
    const fn with_body_limit(self, bytes: u32) -> Route {
        Route {
            body_limit: bytes,
            ..self
        }
    }

    /// The route for operators whose role grants `permission`.
    const fn needs(self, permission: Permission) -> Route {
        Route {
            permission: Some(permission),
            ..self
        }
    }

    /// The path with its `{parameter}` segments replaced by `args`, in
    /// order.
    pub fn fill(&self, args: &[&str]) -> String {
        let mut out = String::new();
        let mut args = args.iter();
        for segment in self.path.split('/').skip(1) {
            out.push('/');
            if segment.starts_with('{') && segment.ends_with('}') {
                out.push_str(args.next().copied().unwrap_or(segment));
            } else {
                out.push_str(segment);
            }
        }
        out
    }
}

const fn route(method: Method, path: &'static str, auth: Auth, operation: &'static str) -> Route {
    Route {
        method,
        path,
        auth,
        operation,
        permission: None,
        body_limit: SMALL_BODY,
    }
}

/// `POST /v1/join`: a node joins with the join token and gets its
/// certificate. The body holds a CSR (about 400 bytes); this is the one
/// route anyone may send a body to.
pub const JOIN: Route =
    route(Method::Post, "/v1/join", Auth::JoinToken, "join").with_body_limit(64 << 10);
/// `GET /v1/nodes`: every node with its state.
pub const LIST_NODES: Route =
    route(Method::Get, "/v1/nodes", Auth::Operator, "list_nodes").needs(Permission::Read);
/// `GET /v1/nodes/{name}`: one node.
pub const SHOW_NODE: Route =
    route(Method::Get, "/v1/nodes/{name}", Auth::Operator, "show_node").needs(Permission::Read);
/// `POST /v1/nodes/{name}`: a node registers itself (its facts and
/// attributes).
pub const REGISTER: Route =
    route(Method::Post, "/v1/nodes/{name}", Auth::NodeSelf, "register").with_body_limit(64 << 10);
/// `DELETE /v1/nodes/{name}`: an operator removes a node (and revokes its
/// certificates).
pub const REMOVE_NODE: Route = route(
    Method::Delete,
    "/v1/nodes/{name}",
    Auth::Operator,
    "remove_node",
)
.needs(Permission::ManageNodes);
/// `POST /v1/nodes/{name}/drain`: an operator drains a node: it takes no
/// new instances, its app instances move away, its pinned tasks stop.
pub const DRAIN_NODE: Route = route(
    Method::Post,
    "/v1/nodes/{name}/drain",
    Auth::Operator,
    "drain_node",
)
.needs(Permission::ManageNodes);
/// `POST /v1/nodes/{name}/uncordon`: a drained node takes work again.
pub const UNCORDON_NODE: Route = route(
    Method::Post,
    "/v1/nodes/{name}/uncordon",
    Auth::Operator,
    "uncordon_node",
)
.needs(Permission::ManageNodes);
/// `POST /v1/nodes/{name}/heartbeat`: a node says it is alive.
pub const HEARTBEAT: Route = route(
    Method::Post,
    "/v1/nodes/{name}/heartbeat",
    Auth::NodeSelf,
    "heartbeat",
);
/// `POST /v1/nodes/{name}/certificate`: a node renews its certificate
/// (for the key it joined with) with its current one.
pub const RENEW_CERT: Route = route(
    Method::Post,
    "/v1/nodes/{name}/certificate",
    Auth::NodeSelf,
    "renew_cert",
)
.with_body_limit(64 << 10);
/// `PUT /v1/nodes/{name}/firewall`: a node reports the firewall in force
/// and what each rule matched.
pub const REPORT_FIREWALL: Route = route(
    Method::Put,
    "/v1/nodes/{name}/firewall",
    Auth::NodeSelf,
    "report_firewall",
)
.with_body_limit(crate::firewall::FirewallReport::BODY_LIMIT);
/// `GET /v1/nodes/{name}/firewall`: the firewall in force on a node, as it
/// last reported it (`strata node firewall`).
pub const SHOW_FIREWALL: Route = route(
    Method::Get,
    "/v1/nodes/{name}/firewall",
    Auth::Operator,
    "show_firewall",
)
.needs(Permission::Read);
/// `GET /v1/edge/certs`: the edge's certificates, without their keys.
pub const LIST_EDGE_CERTS: Route = route(
    Method::Get,
    "/v1/edge/certs",
    Auth::Operator,
    "list_edge_certs",
)
.needs(Permission::Read);
/// `PUT /v1/edge/certs/{host}`: an operator sets the certificate the edge
/// serves a host with (chain and key, PEM).
pub const SET_EDGE_CERT: Route = route(
    Method::Put,
    "/v1/edge/certs/{host}",
    Auth::Operator,
    "set_edge_cert",
)
.needs(Permission::Deploy)
.with_body_limit(64 << 10);
/// `DELETE /v1/edge/certs/{host}`: the host is served over HTTP only.
pub const REMOVE_EDGE_CERT: Route = route(
    Method::Delete,
    "/v1/edge/certs/{host}",
    Auth::Operator,
    "remove_edge_cert",
)
.needs(Permission::Deploy);
/// `GET /v1/watch/nodes/{after}`: the node list once it changed after a
/// revision (a long poll). Every node follows it for the overlay and DNS.
pub const WATCH_NODES: Route = route(
    Method::Get,
    "/v1/watch/nodes/{after}",
    Auth::Any,
    "watch_nodes",
)
.needs(Permission::Read);
/// `GET /v1/cluster/status`: the masters, etcd and the node count.
pub const CLUSTER_STATUS: Route = route(
    Method::Get,
    "/v1/cluster/status",
    Auth::Operator,
    "cluster_status",
)
.needs(Permission::Read);
/// `POST /v1/cluster/rotate-certs`: an admin asks every master and node
/// to replace its certificate (those signed before now).
pub const ROTATE_CERTS: Route = route(
    Method::Post,
    "/v1/cluster/rotate-certs",
    Auth::Operator,
    "rotate_certs",
)
.needs(Permission::ManageAccess);
/// `GET /v1/tasks`: every task with its state.
pub const LIST_TASKS: Route =
    route(Method::Get, "/v1/tasks", Auth::Operator, "list_tasks").needs(Permission::Read);
/// `POST /v1/tasks`: an operator pins a task to a node (the whole task
/// spec: command, environment, mounts).
pub const CREATE_TASK: Route = route(Method::Post, "/v1/tasks", Auth::Operator, "create_task")
    .needs(Permission::Deploy)
    .with_body_limit(256 << 10);
/// `DELETE /v1/tasks/{id}`: an operator stops a task.
pub const DELETE_TASK: Route = route(
    Method::Delete,
    "/v1/tasks/{id}",
    Auth::Operator,
    "delete_task",
)
.needs(Permission::Deploy);
/// `PUT /v1/tasks/{id}/status`: a node reports a task's state.
pub const REPORT_TASK: Route = route(
    Method::Put,
    "/v1/tasks/{id}/status",
    Auth::TaskNode,
    "report_task",
);
/// `GET /v1/watch/assignments/{after}`: a node's tasks once they changed
/// after a revision (a long poll).
pub const WATCH_ASSIGNMENTS: Route = route(
    Method::Get,
    "/v1/watch/assignments/{after}",
    Auth::Node,
    "watch_assignments",
);
/// `POST /v1/join-tokens`: an admin makes a join token (an expiry, a use
/// count); the answer holds the token, the only time it is shown.
pub const CREATE_JOIN_TOKEN: Route = route(
    Method::Post,
    "/v1/join-tokens",
    Auth::Operator,
    "create_join_token",
)
.needs(Permission::ManageAccess);
/// `GET /v1/join-tokens`: every join token's record (never a secret).
pub const LIST_JOIN_TOKENS: Route = route(
    Method::Get,
    "/v1/join-tokens",
    Auth::Operator,
    "list_join_tokens",
)
.needs(Permission::ManageAccess);
/// `DELETE /v1/join-tokens/{id}`: an admin revokes a join token (its record
/// stays, marked revoked).
pub const REVOKE_JOIN_TOKEN: Route = route(
    Method::Delete,
    "/v1/join-tokens/{id}",
    Auth::Operator,
    "revoke_join_token",
)
.needs(Permission::ManageAccess);
/// `POST /v1/user-tokens`: an admin makes an operator's token with a role;
/// the answer holds the token, the only time it is shown.
pub const CREATE_USER_TOKEN: Route = route(
    Method::Post,
    "/v1/user-tokens",
    Auth::Operator,
    "create_user_token",
)
.needs(Permission::ManageAccess);
/// `GET /v1/user-tokens`: every user token's record (never a secret).
pub const LIST_USER_TOKENS: Route = route(
    Method::Get,
    "/v1/user-tokens",
    Auth::Operator,
    "list_user_tokens",
)
.needs(Permission::ManageAccess);
/// `DELETE /v1/user-tokens/{id}`: an admin revokes a user token (its record
/// stays, marked revoked).
pub const REVOKE_USER_TOKEN: Route = route(
    Method::Delete,
    "/v1/user-tokens/{id}",
    Auth::Operator,
    "revoke_user_token",
)
.needs(Permission::ManageAccess);
/// `GET /v1/audit`: the newest records of the audit log
/// ([`crate::audit::PAGE`] at most), oldest first.
pub const LIST_AUDIT: Route =
    route(Method::Get, "/v1/audit", Auth::Operator, "list_audit").needs(Permission::ReadAudit);

/// `POST /v1/nodes/{name}/exec`: an admin runs a break-glass command on a
/// node. The request upgrades the connection (`Upgrade:
/// strata-exec.v1`); once the node attached, the master joins the two
/// connections and the frames of `crate::exec` flow.
pub const EXEC_NODE: Route = route(
    Method::Post,
    "/v1/nodes/{name}/exec",
    Auth::Operator,
    "exec_node",
)
.needs(Permission::Exec)
.with_body_limit(64 << 10);
/// `POST /v1/exec/{id}/attach`: the node a session is for attaches to it
/// (an upgraded connection, as `EXEC_NODE`'s) on the master that holds
/// it; any other master answers `code::EXEC_ELSEWHERE`.
pub const ATTACH_EXEC: Route = route(
    Method::Post,
    "/v1/exec/{id}/attach",
    Auth::Node,
    "attach_exec",
);
/// `GET /v1/apps`: every app with its instances.
pub const LIST_APPS: Route =
    route(Method::Get, "/v1/apps", Auth::Operator, "list_apps").needs(Permission::Read);
/// `POST /v1/apps`: deploy the apps of one file (`app::record::DeployRequest`),
/// each change a versioned deployment; with `dry_run`, only the steps.
pub const DEPLOY_APPS: Route = route(Method::Post, "/v1/apps", Auth::Operator, "deploy_apps")
    .needs(Permission::Deploy)
    .with_body_limit(4 << 20);
/// `GET /v1/apps/{app}`: one app (its id as `AppId::key`, `shop.web`), its
/// deployments and instances.
pub const SHOW_APP: Route =
    route(Method::Get, "/v1/apps/{app}", Auth::Operator, "show_app").needs(Permission::Read);
/// `GET /v1/apps/{app}/versions`: every version an app kept.
pub const APP_VERSIONS: Route = route(
    Method::Get,
    "/v1/apps/{app}/versions",
    Auth::Operator,
    "app_versions",
)
.needs(Permission::Read);
/// `POST /v1/apps/{app}/scale`: a new instance count, as a deployment.
pub const SCALE_APP: Route = route(
    Method::Post,
    "/v1/apps/{app}/scale",
    Auth::Operator,
    "scale_app",
)
.needs(Permission::Deploy);
/// `POST /v1/apps/{app}/restart`: every instance replaced, as a deployment.
pub const RESTART_APP: Route = route(
    Method::Post,
    "/v1/apps/{app}/restart",
    Auth::Operator,
    "restart_app",
)
.needs(Permission::Deploy);
/// `DELETE /v1/apps/{app}`: every instance stops, then the app goes.
pub const REMOVE_APP: Route = route(
    Method::Delete,
    "/v1/apps/{app}",
    Auth::Operator,
    "remove_app",
)
.needs(Permission::Deploy);
/// `GET /v1/deployments`: the deployments of every app, newest last.
pub const LIST_DEPLOYMENTS: Route = route(
    Method::Get,
    "/v1/deployments",
    Auth::Operator,
    "list_deployments",
)
.needs(Permission::Read);
/// `GET /v1/deployments/{id}`: one deployment.
pub const SHOW_DEPLOYMENT: Route = route(
    Method::Get,
    "/v1/deployments/{id}",
    Auth::Operator,
    "show_deployment",
)
.needs(Permission::Read);
/// `POST /v1/deployments/{id}/rollback`: back to the definition before the
/// deployment, as a new deployment.
pub const ROLLBACK_DEPLOYMENT: Route = route(
    Method::Post,
    "/v1/deployments/{id}/rollback",
    Auth::Operator,
    "rollback_deployment",
)
.needs(Permission::Deploy);
/// `POST /v1/deployments/{id}/promote`: a deployment whose canaries run
/// rolls on.
pub const PROMOTE_DEPLOYMENT: Route = route(
    Method::Post,
    "/v1/deployments/{id}/promote",
    Auth::Operator,
    "promote_deployment",
)
.needs(Permission::Deploy);
/// `POST /v1/tasks/{id}/logs`: a task's output, from its node (a log
/// session: the request upgrades its connection as `EXEC_NODE`'s does,
/// and the node streams the task's stdout and stderr as frames of
/// `crate::exec`; with `follow`, until the task ends).
pub const TASK_LOGS: Route = route(
    Method::Post,
    "/v1/tasks/{id}/logs",
    Auth::Operator,
    "task_logs",
)
.needs(Permission::Deploy);
/// `GET /v1/jobs`: every job, with its schedules' next times, its runs
/// going and its last one.
pub const LIST_JOBS: Route =
    route(Method::Get, "/v1/jobs", Auth::Operator, "list_jobs").needs(Permission::Read);
/// `POST /v1/jobs`: add a job, or change one (its `JobSpec`), checked as
/// `strata job validate` checks it; nothing is stored on a problem.
pub const PUT_JOB: Route = route(Method::Post, "/v1/jobs", Auth::Operator, "put_job")
    .needs(Permission::Deploy)
    .with_body_limit(256 << 10);
/// `GET /v1/jobs/{job}`: one job with every run it keeps.
pub const SHOW_JOB: Route =
    route(Method::Get, "/v1/jobs/{job}", Auth::Operator, "show_job").needs(Permission::Read);
/// `DELETE /v1/jobs/{job}`: its runs are stopped, then the job goes.
pub const REMOVE_JOB: Route = route(
    Method::Delete,
    "/v1/jobs/{job}",
    Auth::Operator,
    "remove_job",
)
.needs(Permission::Deploy);
/// `POST /v1/jobs/{job}/runs`: start a run now (the new `RunRecord`).
pub const START_RUN: Route = route(
    Method::Post,
    "/v1/jobs/{job}/runs",
    Auth::Operator,
    "start_run",
)
.needs(Permission::Deploy);
/// `GET /v1/jobs/{job}/runs`: the job's history, oldest first.
pub const LIST_RUNS: Route = route(
    Method::Get,
    "/v1/jobs/{job}/runs",
    Auth::Operator,
    "list_runs",
)
.needs(Permission::Read);
/// `GET /v1/jobs/{job}/runs/{run}`: one run with its attempts.
pub const SHOW_RUN: Route = route(
    Method::Get,
    "/v1/jobs/{job}/runs/{run}",
    Auth::Operator,
    "show_run",
)
.needs(Permission::Read);
/// `POST /v1/jobs/{job}/runs/{run}/kill`: stop a run going.
pub const KILL_RUN: Route = route(
    Method::Post,
    "/v1/jobs/{job}/runs/{run}/kill",
    Auth::Operator,
    "kill_run",
)
.needs(Permission::Deploy);
/// `PUT /v1/jobs/{job}/schedules/{schedule}/enabled`: enable or disable
/// one schedule (`job::view::EnableRequest`).
pub const ENABLE_SCHEDULE: Route = route(
    Method::Put,
    "/v1/jobs/{job}/schedules/{schedule}/enabled",
    Auth::Operator,
    "enable_schedule",
)
.needs(Permission::Deploy);
/// `PUT /v1/bundles`: an operator pushes an update bundle (streamed to
/// the master's disk and verified there, never held in memory).
pub const PUSH_BUNDLE: Route = route(Method::Put, "/v1/bundles", Auth::Operator, "push_bundle")
    .needs(Permission::ManageNodes)
    .with_body_limit(BUNDLE_BODY);
/// `GET /v1/bundles`: the bundles the masters hold.
pub const LIST_BUNDLES: Route =
    route(Method::Get, "/v1/bundles", Auth::Operator, "list_bundles").needs(Permission::Read);
/// `GET /v1/bundles/{sha256}`: a node (or a master copying it) downloads
/// a bundle; a `Range` header resumes an interrupted download.
pub const FETCH_BUNDLE: Route = route(
    Method::Get,
    "/v1/bundles/{sha256}",
    Auth::Node,
    "fetch_bundle",
);
/// `POST /v1/nodes/{name}/upgrade`: an operator orders a node to install
/// a bundle into its other slot and reboot into it.
pub const UPGRADE_NODE: Route = route(
    Method::Post,
    "/v1/nodes/{name}/upgrade",
    Auth::Operator,
    "upgrade_node",
)
.needs(Permission::ManageNodes);
/// `POST /v1/nodes/{name}/rollback`: an operator orders a node to boot
/// its other slot, which booted healthy before.
pub const ROLLBACK_NODE: Route = route(
    Method::Post,
    "/v1/nodes/{name}/rollback",
    Auth::Operator,
    "rollback_node",
)
.needs(Permission::ManageNodes);
/// `PUT /v1/nodes/{name}/upgrade/progress`: a node reports how far its
/// order got.
pub const REPORT_UPGRADE: Route = route(
    Method::Put,
    "/v1/nodes/{name}/upgrade/progress",
    Auth::NodeSelf,
    "report_upgrade",
);
/// `POST /v1/rollout`: an operator starts a cluster upgrade
/// (`strata cluster upgrade --version V`).
pub const START_ROLLOUT: Route =
    route(Method::Post, "/v1/rollout", Auth::Operator, "start_rollout")
        .needs(Permission::ManageNodes);
/// `POST /v1/rollout/resume`: an operator resumes a halted cluster
/// upgrade from the node it halted at.
pub const RESUME_ROLLOUT: Route = route(
    Method::Post,
    "/v1/rollout/resume",
    Auth::Operator,
    "resume_rollout",
)
.needs(Permission::ManageNodes);
/// `POST /v1/rollout/cancel`: an operator halts the cluster upgrade under
/// way (`strata cluster upgrade --cancel`); `--resume` goes on.
pub const CANCEL_ROLLOUT: Route = route(
    Method::Post,
    "/v1/rollout/cancel",
    Auth::Operator,
    "cancel_rollout",
)
.needs(Permission::ManageNodes);
/// `GET /v1/rollout`: the cluster upgrade and each node's step.
pub const SHOW_ROLLOUT: Route =
    route(Method::Get, "/v1/rollout", Auth::Operator, "show_rollout").needs(Permission::Read);
/// The largest update bundle a master takes: 1 GiB (an image's bundle is
/// about 250 MB).
pub const BUNDLE_BODY: u32 = 1 << 30;
/// Every route.
pub const ROUTES: &[Route] = &[
    JOIN,
    LIST_NODES,
    SHOW_NODE,
    REGISTER,
    REMOVE_NODE,
    DRAIN_NODE,
    UNCORDON_NODE,
    HEARTBEAT,
    RENEW_CERT,
    WATCH_NODES,
    CLUSTER_STATUS,
    ROTATE_CERTS,
    LIST_TASKS,
    CREATE_TASK,
    DELETE_TASK,
    REPORT_TASK,
    WATCH_ASSIGNMENTS,
    CREATE_JOIN_TOKEN,
    LIST_JOIN_TOKENS,
    REVOKE_JOIN_TOKEN,
    CREATE_USER_TOKEN,
    LIST_USER_TOKENS,
    REVOKE_USER_TOKEN,
    LIST_AUDIT,
    EXEC_NODE,
    ATTACH_EXEC,
    LIST_APPS,
    DEPLOY_APPS,
    SHOW_APP,
    APP_VERSIONS,
    SCALE_APP,
    RESTART_APP,
    REMOVE_APP,
    LIST_DEPLOYMENTS,
    SHOW_DEPLOYMENT,
    ROLLBACK_DEPLOYMENT,
    PROMOTE_DEPLOYMENT,
    PUSH_BUNDLE,
    LIST_BUNDLES,
    FETCH_BUNDLE,
    UPGRADE_NODE,
    ROLLBACK_NODE,
    REPORT_UPGRADE,
    REPORT_FIREWALL,
    SHOW_FIREWALL,
    LIST_EDGE_CERTS,
    SET_EDGE_CERT,
    REMOVE_EDGE_CERT,
    START_ROLLOUT,
    RESUME_ROLLOUT,
    CANCEL_ROLLOUT,
    SHOW_ROLLOUT,
    LIST_JOBS,
    PUT_JOB,
    SHOW_JOB,
    REMOVE_JOB,
    START_RUN,
    LIST_RUNS,
    SHOW_RUN,
    KILL_RUN,
    ENABLE_SCHEDULE,
    TASK_LOGS,
];

/// The `code` of an error body (`model::ApiErrorBody`) that clients act
/// on: the server answers with these, and the agents decide by them, never
/// by a status or a text.
pub mod code {
    /// The node's record is gone (removed, or never joined).
    pub const NOT_JOINED: &str = "not-joined";
    /// The certificate's key is not the key the node joined with.
    pub const WRONG_KEY: &str = "wrong-key";
    /// The certificate is another node's.
    pub const OTHER_NODE: &str = "other-node";
    /// The certificate was revoked (its node was removed).
    pub const CERT_REVOKED: &str = "cert-revoked";
    /// The certificate has expired.
    pub const CERT_EXPIRED: &str = "cert-expired";
    /// The node was removed and the join token predates the removal.
    pub const NODE_REMOVED: &str = "node-removed";
    /// This master holds no such break-glass session: the node tries the
    /// next master.
    pub const EXEC_ELSEWHERE: &str = "exec-elsewhere";

    /// The codes after which a node's identity is of no use and it must
    /// join again. A refusal of its join token is not among them: a node
    /// never drops a certificate that still works because of its token.
    pub const REJOIN: &[&str] = &[
        NOT_JOINED,
        WRONG_KEY,
        OTHER_NODE,
        CERT_REVOKED,
        CERT_EXPIRED,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_filled_in_order() {
        assert_eq!(HEARTBEAT.fill(&["n1"]), "/v1/nodes/n1/heartbeat");
        assert_eq!(WATCH_NODES.fill(&["42"]), "/v1/watch/nodes/42");
        assert_eq!(LIST_NODES.fill(&[]), "/v1/nodes");
    }

    #[test]
    fn bodies_are_limited() {
        for r in ROUTES
            .iter()
            .filter(|r| **r != DEPLOY_APPS && **r != PUSH_BUNDLE)
        {
            assert!(
                (SMALL_BODY..=256 << 10).contains(&r.body_limit),
                "{r:?}: the API reads no body above 256 KiB"
            );
        }
        // A group of a thousand apps (Marathon's real exports reach that).
        assert_eq!(DEPLOY_APPS.body_limit, 4 << 20);
        assert_eq!(CREATE_TASK.body_limit, 256 << 10);
        assert_eq!(HEARTBEAT.body_limit, SMALL_BODY);
        // Streamed to disk, never read into memory.
        assert_eq!(PUSH_BUNDLE.body_limit, 1 << 30);
    }

    /// Every route an operator may call names the permission it needs;
    /// routes for nodes and for joining name none. Only the node list's
    /// long-poll is open to nodes and operators both: node certificates
    /// reach only what nodes need.
    #[test]
    fn operator_routes_name_a_permission_and_node_routes_none() {
        for r in ROUTES {
            match r.auth {
                Auth::Operator | Auth::Any => {
                    assert!(r.permission.is_some(), "{r:?} names no permission")
                }
                Auth::JoinToken | Auth::NodeSelf | Auth::Node | Auth::TaskNode => {
                    assert!(r.permission.is_none(), "{r:?} is not for operators")
                }
            }
        }
        let shared: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.auth == Auth::Any)
            .map(|r| r.operation)
            .collect();
        assert_eq!(shared, ["watch_nodes"]);
        assert_eq!(CREATE_TASK.permission, Some(Permission::Deploy));
        assert_eq!(LIST_NODES.permission, Some(Permission::Read));
    }

    #[test]
    fn routes_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{r:?} twice");
        }
        let ops: std::collections::BTreeSet<_> = ROUTES.iter().map(|r| r.operation).collect();
        assert_eq!(ops.len(), ROUTES.len());
    }
}
