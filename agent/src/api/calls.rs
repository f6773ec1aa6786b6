//! One typed call per route of [`control::api`]: the CLI, the agents, the
//! benches and the tests reach the API through these, never by spelling a
//! path.

use control::access::{
    JoinTokenCreated, JoinTokenRecord, JoinTokenRequest, UserTokenCreated, UserTokenRecord,
    UserTokenRequest,
};
use control::api as routes;
use control::app::AppId;
use control::app::record::{AppVersion, AppView, DeployOutcome, DeployRequest, ScaleRequest};
use control::audit::AuditRecord;
use control::deploy::Deployment;
use control::exec::{self, ExecRequest};
use control::job::record::{JobRecord, RunRecord};
use control::job::view::{EnableRequest, JobView};
use control::job::{JobId, JobSpec};
use control::model::{
    AssignmentWatch, CertRenewal, CertRotation, ClusterStatus, DrainRequest, HeartbeatResponse,
    JoinRequest, JoinResponse, NodeInfo, NodeStatus, NodeWatch, Registered, RenewedCert,
    TaskReport, TaskRequest, TaskView,
};

use control::rollout::{Rollout, RolloutRequest};
use control::upgrade::{BundleRecord, ProgressReport, UpgradeOrder, UpgradeRequest};

use super::client::{ApiClient, ClientError, Upgraded};

type Result<T> = std::result::Result<T, ClientError>;

impl ApiClient {
    /// `GET /v1/bundles`.
    pub async fn list_bundles(&self) -> Result<Vec<BundleRecord>> {
        self.get(&routes::LIST_BUNDLES.fill(&[])).await
    }

    /// `POST /v1/nodes/{name}/upgrade`.
    pub async fn upgrade_node(&self, name: &str, req: &UpgradeRequest) -> Result<UpgradeOrder> {
        self.post(&routes::UPGRADE_NODE.fill(&[name]), req).await
    }

    /// `POST /v1/nodes/{name}/rollback`.
    pub async fn rollback_node(&self, name: &str) -> Result<UpgradeOrder> {
        self.post(&routes::ROLLBACK_NODE.fill(&[name]), &()).await
    }

    /// `POST /v1/rollout`.
    pub async fn start_rollout(&self, req: &RolloutRequest) -> Result<Rollout> {
        self.post(&routes::START_ROLLOUT.fill(&[]), req).await
    }

    /// `POST /v1/rollout/resume`.
    pub async fn resume_rollout(&self) -> Result<Rollout> {
        self.post(&routes::RESUME_ROLLOUT.fill(&[]), &()).await
    }

    /// `strata cluster upgrade --cancel`.
    pub async fn cancel_rollout(&self) -> Result<Rollout> {
        self.post(&routes::CANCEL_ROLLOUT.fill(&[]), &()).await
    }

    /// `GET /v1/rollout`.
    pub async fn show_rollout(&self) -> Result<Rollout> {
        self.get(&routes::SHOW_ROLLOUT.fill(&[])).await
    }

    /// `PUT /v1/nodes/{name}/upgrade/progress`.
    pub async fn report_upgrade(&self, name: &str, report: &ProgressReport) -> Result<bool> {
        self.put(&routes::REPORT_UPGRADE.fill(&[name]), report)
            .await
    }

    /// `PUT /v1/nodes/{name}/firewall`.
    pub async fn report_firewall(
        &self,
        name: &str,
        report: &control::firewall::FirewallReport,
    ) -> Result<bool> {
        self.put(&routes::REPORT_FIREWALL.fill(&[name]), report)
            .await
    }

    /// `GET /v1/nodes/{name}/firewall`.
    pub async fn show_firewall(&self, name: &str) -> Result<control::firewall::FirewallReport> {
        self.get(&routes::SHOW_FIREWALL.fill(&[name])).await
    }

    /// `GET /v1/edge/certs`.
    pub async fn list_edge_certs(&self) -> Result<Vec<control::edge::EdgeCertView>> {
        self.get(&routes::LIST_EDGE_CERTS.fill(&[])).await
    }

    /// `PUT /v1/edge/certs/{host}`.
    pub async fn set_edge_cert(
        &self,
        host: &str,
        req: &control::edge::EdgeCertRequest,
    ) -> Result<control::edge::EdgeCertView> {
        self.put(&routes::SET_EDGE_CERT.fill(&[host]), req).await
    }

    /// `DELETE /v1/edge/certs/{host}`.
    pub async fn remove_edge_cert(&self, host: &str) -> Result<bool> {
        self.delete(&routes::REMOVE_EDGE_CERT.fill(&[host])).await
    }

    /// `POST /v1/join`.
    pub async fn join(&self, req: &JoinRequest) -> Result<JoinResponse> {
        self.post(&routes::JOIN.fill(&[]), req).await
    }

    /// `GET /v1/nodes`.
    pub async fn list_nodes(&self) -> Result<Vec<NodeStatus>> {
        self.get(&routes::LIST_NODES.fill(&[])).await
    }

    /// `GET /v1/nodes/{name}`.
    pub async fn show_node(&self, name: &str) -> Result<NodeStatus> {
        self.get(&routes::SHOW_NODE.fill(&[name])).await
    }

    /// `POST /v1/nodes/{name}`.
    pub async fn register(&self, info: &NodeInfo) -> Result<Registered> {
        self.post(&routes::REGISTER.fill(&[&info.name]), info).await
    }

    /// `DELETE /v1/nodes/{name}`.
    pub async fn remove_node(&self, name: &str) -> Result<serde_json::Value> {
        self.delete(&routes::REMOVE_NODE.fill(&[name])).await
    }

    /// `POST /v1/nodes/{name}/drain`.
    pub async fn drain_node(&self, name: &str, req: &DrainRequest) -> Result<NodeStatus> {
        self.post(&routes::DRAIN_NODE.fill(&[name]), req).await
    }

    /// `POST /v1/nodes/{name}/uncordon`.
    pub async fn uncordon_node(&self, name: &str) -> Result<NodeStatus> {
        self.post(&routes::UNCORDON_NODE.fill(&[name]), &()).await
    }

    /// `POST /v1/nodes/{name}/heartbeat`.
    pub async fn heartbeat(&self, name: &str) -> Result<HeartbeatResponse> {
        self.post(&routes::HEARTBEAT.fill(&[name]), &()).await
    }

    /// `POST /v1/nodes/{name}/certificate`.
    pub async fn renew_cert(&self, name: &str, req: &CertRenewal) -> Result<RenewedCert> {
        self.post(&routes::RENEW_CERT.fill(&[name]), req).await
    }

    /// `GET /v1/watch/nodes/{after}`.
    pub async fn watch_nodes(&self, after: i64) -> Result<NodeWatch> {
        self.get(&routes::WATCH_NODES.fill(&[&after.to_string()]))
            .await
    }

    /// `GET /v1/cluster/status`.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        self.get(&routes::CLUSTER_STATUS.fill(&[])).await
    }

    /// `POST /v1/cluster/rotate-certs`.
    pub async fn rotate_certs(&self) -> Result<CertRotation> {
        self.post(&routes::ROTATE_CERTS.fill(&[]), &()).await
    }

    /// `GET /v1/tasks`.
    pub async fn list_tasks(&self) -> Result<Vec<TaskView>> {
        self.get(&routes::LIST_TASKS.fill(&[])).await
    }

    /// `POST /v1/tasks`.
    pub async fn create_task(&self, req: &TaskRequest) -> Result<TaskView> {
        self.post(&routes::CREATE_TASK.fill(&[]), req).await
    }

    /// `DELETE /v1/tasks/{id}`.
    pub async fn delete_task(&self, id: &str) -> Result<serde_json::Value> {
        self.delete(&routes::DELETE_TASK.fill(&[id])).await
    }

    /// `PUT /v1/tasks/{id}/status`.
    pub async fn report_task(&self, id: &str, report: &TaskReport) -> Result<serde_json::Value> {
        self.put(&routes::REPORT_TASK.fill(&[id]), report).await
    }

    /// `GET /v1/watch/assignments/{after}`.
    pub async fn watch_assignments(&self, after: i64) -> Result<AssignmentWatch> {
        self.get(&routes::WATCH_ASSIGNMENTS.fill(&[&after.to_string()]))
            .await
    }

    /// `POST /v1/join-tokens`.
    pub async fn create_join_token(&self, req: &JoinTokenRequest) -> Result<JoinTokenCreated> {
        self.post(&routes::CREATE_JOIN_TOKEN.fill(&[]), req).await
    }

    /// `GET /v1/join-tokens`.
    pub async fn list_join_tokens(&self) -> Result<Vec<JoinTokenRecord>> {
        self.get(&routes::LIST_JOIN_TOKENS.fill(&[])).await
    }

    /// `DELETE /v1/join-tokens/{id}`.
    pub async fn revoke_join_token(&self, id: &str) -> Result<JoinTokenRecord> {
        self.delete(&routes::REVOKE_JOIN_TOKEN.fill(&[id])).await
    }

    /// `POST /v1/user-tokens`.
    pub async fn create_user_token(&self, req: &UserTokenRequest) -> Result<UserTokenCreated> {
        self.post(&routes::CREATE_USER_TOKEN.fill(&[]), req).await
    }

    /// `GET /v1/user-tokens`.
    pub async fn list_user_tokens(&self) -> Result<Vec<UserTokenRecord>> {
        self.get(&routes::LIST_USER_TOKENS.fill(&[])).await
    }

    /// `DELETE /v1/user-tokens/{id}`.
    pub async fn revoke_user_token(&self, id: &str) -> Result<UserTokenRecord> {
        self.delete(&routes::REVOKE_USER_TOKEN.fill(&[id])).await
    }

    /// `GET /v1/audit`.
    pub async fn list_audit(&self) -> Result<Vec<AuditRecord>> {
        self.get(&routes::LIST_AUDIT.fill(&[])).await
    }

    /// `GET /v1/apps`.
    pub async fn list_apps(&self) -> Result<Vec<AppView>> {
        self.get(&routes::LIST_APPS.fill(&[])).await
    }

    /// `POST /v1/apps`.
    pub async fn deploy_apps(&self, req: &DeployRequest) -> Result<Vec<DeployOutcome>> {
        self.post(&routes::DEPLOY_APPS.fill(&[]), req).await
    }

    /// `GET /v1/apps/{app}`.
    pub async fn show_app(&self, app: &AppId) -> Result<AppView> {
        self.get(&routes::SHOW_APP.fill(&[&app.key()])).await
    }

    /// `GET /v1/apps/{app}/versions`.
    pub async fn app_versions(&self, app: &AppId) -> Result<Vec<AppVersion>> {
        self.get(&routes::APP_VERSIONS.fill(&[&app.key()])).await
    }

    /// `POST /v1/apps/{app}/scale`.
    pub async fn scale_app(&self, app: &AppId, instances: u32) -> Result<DeployOutcome> {
        let req = ScaleRequest {
            format: Default::default(),
            instances,
        };
        self.post(&routes::SCALE_APP.fill(&[&app.key()]), &req)
            .await
    }

    /// `POST /v1/apps/{app}/restart`.
    pub async fn restart_app(&self, app: &AppId) -> Result<DeployOutcome> {
        self.post(
            &routes::RESTART_APP.fill(&[&app.key()]),
            &serde_json::json!({}),
        )
        .await
    }

    /// `DELETE /v1/apps/{app}`.
    pub async fn remove_app(&self, app: &AppId) -> Result<serde_json::Value> {
        self.delete(&routes::REMOVE_APP.fill(&[&app.key()])).await
    }

    /// `GET /v1/deployments`.
    pub async fn list_deployments(&self) -> Result<Vec<Deployment>> {
        self.get(&routes::LIST_DEPLOYMENTS.fill(&[])).await
    }

    /// `GET /v1/deployments/{id}`.
    pub async fn show_deployment(&self, id: &str) -> Result<Deployment> {
        self.get(&routes::SHOW_DEPLOYMENT.fill(&[id])).await
    }

    /// `POST /v1/deployments/{id}/rollback`.
    pub async fn rollback_deployment(&self, id: &str) -> Result<DeployOutcome> {
        self.post(
            &routes::ROLLBACK_DEPLOYMENT.fill(&[id]),
            &serde_json::json!({}),
        )
        .await
    }

    /// `POST /v1/deployments/{id}/promote`.
    pub async fn promote_deployment(&self, id: &str) -> Result<Deployment> {
        self.post(
            &routes::PROMOTE_DEPLOYMENT.fill(&[id]),
            &serde_json::json!({}),
        )
        .await
    }

    /// `GET /v1/jobs`.
    pub async fn list_jobs(&self) -> Result<Vec<JobView>> {
        self.get(&routes::LIST_JOBS.fill(&[])).await
    }

    /// `POST /v1/jobs`.
    pub async fn put_job(&self, spec: &JobSpec) -> Result<JobRecord> {
        self.post(&routes::PUT_JOB.fill(&[]), spec).await
    }

    /// `GET /v1/jobs/{job}`.
    pub async fn show_job(&self, job: &JobId) -> Result<JobView> {
        self.get(&routes::SHOW_JOB.fill(&[job.as_str()])).await
    }

    /// `DELETE /v1/jobs/{job}`.
    pub async fn remove_job(&self, job: &JobId) -> Result<JobRecord> {
        self.delete(&routes::REMOVE_JOB.fill(&[job.as_str()])).await
    }

    /// `POST /v1/jobs/{job}/runs`.
    pub async fn start_run(&self, job: &JobId) -> Result<RunRecord> {
        self.post(
            &routes::START_RUN.fill(&[job.as_str()]),
            &serde_json::json!({}),
        )
        .await
    }

    /// `GET /v1/jobs/{job}/runs`.
    pub async fn list_runs(&self, job: &JobId) -> Result<Vec<RunRecord>> {
        self.get(&routes::LIST_RUNS.fill(&[job.as_str()])).await
    }

    /// `GET /v1/jobs/{job}/runs/{run}`.
    pub async fn show_run(&self, job: &JobId, run: &str) -> Result<RunRecord> {
        self.get(&routes::SHOW_RUN.fill(&[job.as_str(), run])).await
    }

    /// `POST /v1/jobs/{job}/runs/{run}/kill`.
    pub async fn kill_run(&self, job: &JobId, run: &str) -> Result<RunRecord> {
        self.post(
            &routes::KILL_RUN.fill(&[job.as_str(), run]),
            &serde_json::json!({}),
        )
        .await
    }

    /// `PUT /v1/jobs/{job}/schedules/{schedule}/enabled`.
    pub async fn enable_schedule(
        &self,
        job: &JobId,
        schedule: &str,
        enabled: bool,
    ) -> Result<JobView> {
        let req = EnableRequest {
            format: Default::default(),
            enabled,
        };
        self.put(
            &routes::ENABLE_SCHEDULE.fill(&[job.as_str(), schedule]),
            &req,
        )
        .await
    }

    /// `POST /v1/nodes/{name}/exec`: the connection, once the node has
    /// attached, carrying the frames of `control::exec`.
    pub async fn exec_node(&self, name: &str, req: &ExecRequest) -> Result<Upgraded> {
        // The master waits for the node to attach before it answers.
        let wait = std::time::Duration::from_secs(exec::ATTACH_WAIT_SECONDS + 15);
        self.upgrade(
            &routes::EXEC_NODE.fill(&[name]),
            req,
            exec::PROTOCOL,
            &[],
            wait,
        )
        .await
    }

    /// `POST /v1/tasks/{id}/logs`: the connection, once the task's node
    /// has attached, carrying its output as frames of `control::exec`.
    pub async fn task_logs(&self, task: &str, follow: bool) -> Result<Upgraded> {
        let wait = std::time::Duration::from_secs(exec::ATTACH_WAIT_SECONDS + 15);
        let req = exec::LogsRequest {
            format: Default::default(),
            follow,
        };
        self.upgrade(
            &routes::TASK_LOGS.fill(&[task]),
            &req,
            exec::PROTOCOL,
            &[],
            wait,
        )
        .await
    }

    /// `POST /v1/exec/{id}/attach`, on whichever master holds the session.
    pub async fn attach_exec(&self, id: &str) -> Result<Upgraded> {
        let wait = std::time::Duration::from_secs(15);
        self.upgrade(
            &routes::ATTACH_EXEC.fill(&[id]),
            &(),
            exec::PROTOCOL,
            // Another master may hold it; one without etcd, or older than
            // exec, cannot say.
            &[
                routes::code::EXEC_ELSEWHERE,
                "store-unavailable",
                "access-not-loaded",
                "no-route",
            ],
            wait,
        )
        .await
    }
}
