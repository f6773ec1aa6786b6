//! The audit log: one record per write to the cluster that an
//! authenticated caller made (or tried: a write its role forbids is
//! recorded too), kept in etcd under [`PREFIX`] and readable by admins
//! (`GET /v1/audit`, `strata audit list`).
//!
//! What is recorded is decided here ([`audited`]): every route but the
//! reads, and but the two that nodes call every few seconds about
//! themselves (their heartbeat and their tasks' status), which would bury
//! the operators' writes and fill etcd. A request that proves no identity
//! at all is not recorded in etcd (anyone who reaches the port could fill
//! the store); the master logs it instead. A join proves its token and is
//! recorded with the token's id.
//!
//! Keys are the record's time first ([`key`]), so etcd's key order is time
//! order, the newest page is one sorted read, and records older than the
//! retention go with one range delete ([`trim_end`]).

use serde::{Deserialize, Serialize};

use crate::api::{self, Method, Route};
use crate::format::Format;
use crate::rbac::Role;

/// Where the records live in etcd.
pub const PREFIX: &str = "/strata/audit/";

/// How long records are kept.
pub const RETENTION_SECS: u64 = 30 * 24 * 3600;

/// The most records one `GET /v1/audit` answers (the newest).
pub const PAGE: usize = 1000;

/// One audited request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// Unix milliseconds at which the master answered.
    pub at_ms: u64,
    /// Who: `user token <id> (<name>)`, `node <name>`, `join token <id>`.
    pub who: String,
    /// The operator's role, for a user token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// The caller's address as the master saw it.
    pub from: String,
    /// The route's operation (`create_task`, `remove_node`, ...).
    pub operation: String,
    /// The method and the path as requested.
    pub method: String,
    pub path: String,
    /// The answer's HTTP status: 2xx done, 4xx refused.
    pub status: u16,
    /// What was done, when the handler says more than the path
    /// (`task web (nginx:1) on node agent-1`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// The master that answered.
    pub master: String,
}

impl AuditRecord {
    /// Whether the request was carried out: 2xx, or 101 for a break-glass
    /// session that opened.
    pub fn done(&self) -> bool {
        (200..300).contains(&self.status) || self.status == 101
    }
}

/// Whether requests to `route` are recorded.
pub fn audited(route: &Route) -> bool {
    route.method != Method::Get
        && *route != api::HEARTBEAT
        && *route != api::REPORT_TASK
        && *route != api::REPORT_UPGRADE
        && *route != api::REPORT_FIREWALL
}

/// The etcd key of a record made at `at_ms` by master `master`, its `seq`th
/// since that master started: time first, so key order is time order (13
/// digits of milliseconds last until the year 2286).
pub fn key(at_ms: u64, master: &str, seq: u64) -> String {
    format!("{PREFIX}{at_ms:013}-{master}-{seq:08}")
}

/// The end (exclusive) of the key range whose records are older than the
/// retention at `now_ms`: deleting `[PREFIX, trim_end(now_ms))` trims the
/// log.
pub fn trim_end(now_ms: u64) -> String {
    format!(
        "{PREFIX}{:013}",
        now_ms.saturating_sub(RETENTION_SECS * 1000)
    )
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn writes_are_audited_but_reads_and_node_telemetry_are_not() {
        let audited: Vec<&str> = api::ROUTES
            .iter()
            .filter(|r| audited(r))
            .map(|r| r.operation)
            .collect();
        expect!["join register remove_node drain_node uncordon_node renew_cert rotate_certs create_task delete_task create_join_token revoke_join_token create_user_token revoke_user_token exec_node attach_exec deploy_apps scale_app restart_app remove_app rollback_deployment promote_deployment push_bundle upgrade_node rollback_node set_edge_cert remove_edge_cert start_rollout resume_rollout cancel_rollout put_job remove_job start_run kill_run enable_schedule task_logs"]
        .assert_eq(&audited.join(" "));
    }

    #[test]
    fn keys_sort_by_time_and_the_trim_takes_only_older_ones() {
        let older = key(999_999_999_999, "m-2", 7);
        let newer = key(1_000_000_000_000, "m-1", 1);
        assert!(older < newer, "{older} {newer}");
        assert_eq!(newer, "/strata/audit/1000000000000-m-1-00000001");
        let now = 1_800_000_000_000;
        let end = trim_end(now);
        let kept = key(now - RETENTION_SECS * 1000, "m-1", 0);
        let gone = key(now - RETENTION_SECS * 1000 - 1, "m-1", 0);
        assert!(gone.as_str() < end.as_str() && kept.as_str() >= end.as_str());
        assert!(trim_end(5).starts_with(PREFIX));
    }

    #[test]
    fn records_read_what_a_newer_writer_wrote() {
        let newer = r#"{"format":2,"at_ms":1,"who":"node a","from":"10.0.0.1","operation":"register",
            "method":"POST","path":"/v1/nodes/a","status":200,"master":"m","trace":"x","role":"auditor"}"#;
        let record: AuditRecord = serde_json::from_str(newer).expect("reads");
        assert_eq!(record.format, Format(2));
        assert_eq!(record.role, Some(Role::Unknown));
        assert!(record.done());
    }
}
