//! The records the masters keep in etcd and the bodies the API sends: what
//! a node registers, what the cluster keeps about nodes and tasks, and the
//! answers of every route. All of them read what a newer writer wrote:
//! unknown fields are ignored, a record carries its [`Format`], and a state
//! this release does not know reads as `Unknown`.

use std::collections::BTreeMap;

use configs::Role;
use configs::net::Ipv4Cidr;
use serde::{Deserialize, Serialize};

use crate::format::Format;
use crate::task::{TaskSpec, TaskState};

/// What a node tells the cluster about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub name: String,
    pub role: Role,
    /// Underlay addresses, the one the masters see first.
    pub addresses: Vec<String>,
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Size of the filesystem holding the node's state.
    pub disk_bytes: u64,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Its image: version, slots and last upgrade (absent from nodes that
    /// predate upgrades, and outside an image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<crate::upgrade::ImageStatus>,
}

/// What the cluster keeps about a node (`/strata/nodes/<name>` in etcd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    #[serde(flatten)]
    pub info: NodeInfo,
    /// Hex sha256 of the node's public key: its identity across restarts.
    pub key_sha256: String,
    /// Unix seconds of the first join.
    pub joined_at: u64,
    /// Unix seconds of the last registration (every agent start).
    pub registered_at: u64,
    /// The certificates issued to the node that have not expired, each
    /// recorded at join and at registration: removing the node revokes
    /// them. Absent from records of masters that predate revocation (the
    /// node's next registration records its certificate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certs: Vec<IssuedCert>,
}

/// A certificate the cluster issued to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Its serial number, lowercase hex of the DER integer's bytes.
    pub serial: String,
    /// Unix seconds at which it expires.
    pub not_after: u64,
    /// Unix seconds at which it was signed (its not-before, less the
    /// backdating); 0 from masters that predate it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub issued_at: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// An admin's request that every certificate of the cluster signed before
/// `at` be replaced (`strata cluster rotate-certs`), kept in etcd: each
/// master replaces its own (the API's and its etcd member's) and tells
/// the nodes in their heartbeats, and each node renews its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRotation {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// Unix seconds of the request: certificates signed before it go.
    pub at: u64,
    /// Who asked (the audit log's label of the token).
    pub requested_by: String,
}

/// A master's API certificate, as the master records it in etcd for
/// `cluster status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterCert {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub serial: String,
    /// Unix seconds at which it was signed.
    pub issued_at: u64,
    pub not_after: u64,
}

impl NodeRecord {
    /// The record with `cert` recorded (a renewal's), expired ones
    /// dropped.
    pub fn with_cert(mut self, cert: IssuedCert, now: u64) -> NodeRecord {
        if !self.certs.iter().any(|c| c.serial == cert.serial) {
            self.certs.push(cert);
        }
        self.certs.retain(|c| c.not_after > now);
        self
    }

    /// The record after a registration: the node's facts as it sent them,
    /// its key, first join and certificates kept, and `cert` (the one it
    /// presented) recorded when it was not (a node that joined before
    /// certificates were recorded); expired certificates are dropped.
    pub fn registered(self, info: NodeInfo, cert: IssuedCert, now: u64) -> NodeRecord {
        let mut certs = self.certs;
        if !certs.iter().any(|c| c.serial == cert.serial) {
            certs.push(cert);
        }
        certs.retain(|c| c.not_after > now);
        NodeRecord {
            info,
            key_sha256: self.key_sha256,
            joined_at: self.joined_at,
            registered_at: now,
            certs,
        }
    }
}

/// Liveness as the cluster sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Heartbeats arrive within the grace period.
    Ready,
    /// Registered but no heartbeat for the grace period.
    Unreachable,
    /// A state a newer master reported that this release does not know.
    #[serde(other)]
    Unknown,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeState::Ready => "Ready",
            NodeState::Unreachable => "Unreachable",
            NodeState::Unknown => "Unknown",
        })
    }
}

/// The value of `/strata/alive/<name>`, a key bound to the node's lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alive {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub lease: i64,
    /// Unix seconds since which heartbeats arrive without a gap.
    pub since: u64,
}

/// A node with its derived state, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    #[serde(flatten)]
    pub record: NodeRecord,
    pub state: NodeState,
    /// Unix seconds since which the node is Ready, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_since: Option<u64>,
    /// The node's overlay subnet lease, once it registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Cidr>,
    /// An operator drained it (`strata node drain`): it takes no new
    /// instances until `strata node uncordon`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cordon: Option<Cordon>,
    /// Its last upgrade or rollback order and how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<crate::upgrade::UpgradeOrder>,
}

/// `POST /v1/nodes/{name}/drain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    /// Seconds after which what still runs there is stopped anyway;
    /// [`DEFAULT_DRAIN_DEADLINE_SECONDS`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_seconds: Option<u64>,
}

/// The drain deadline when none is given.
pub const DEFAULT_DRAIN_DEADLINE_SECONDS: u64 = 300;
/// The longest drain deadline.
pub const MAX_DRAIN_DEADLINE_SECONDS: u64 = 7 * 86400;

/// A drained node (`/strata/cordons/<name>`): the scheduler places nothing
/// new there and moves its app instances away, each going once a
/// replacement is healthy or at the deadline; its pinned tasks stop until
/// it is uncordoned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cordon {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// Unix seconds of the drain.
    pub since: u64,
    /// Unix seconds after which the instances still there are stopped
    /// whether or not their replacements are healthy.
    pub deadline: u64,
    /// Who drained it.
    pub by: String,
}

impl NodeStatus {
    /// The node's underlay address: the first IPv4 address it registered
    /// that is not loopback.
    pub fn underlay_ip(&self) -> Option<std::net::Ipv4Addr> {
        self.record
            .info
            .addresses
            .iter()
            .filter_map(|a| a.parse::<std::net::Ipv4Addr>().ok())
            .find(|a| !a.is_loopback() && !a.is_unspecified())
    }
}

/// Derives the state of each node from the records and the live leases.
pub fn node_statuses(records: Vec<NodeRecord>, alive: &BTreeMap<String, Alive>) -> Vec<NodeStatus> {
    let mut out: Vec<NodeStatus> = records
        .into_iter()
        .map(|record| {
            let live = alive.get(&record.info.name);
            NodeStatus {
                state: if live.is_some() {
                    NodeState::Ready
                } else {
                    NodeState::Unreachable
                },
                ready_since: live.map(|a| a.since),
                subnet: None,
                cordon: None,
                upgrade: None,
                record,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (a.record.info.role, &a.record.info.name).cmp(&(b.record.info.role, &b.record.info.name))
    });
    out
}

/// The node list at an etcd revision: what `GET /v1/watch/nodes/<after>`
/// answers once the list changed after revision `after` (at once for 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeWatch {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub revision: i64,
    pub nodes: Vec<NodeStatus>,
    /// Running tasks with an overlay address, for service discovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<TaskEndpoint>,
    /// The apps' exposed ports and VIPs with their backends
    /// ([`crate::service::services`]); absent from older masters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<crate::service::Service>,
    /// The address of every named VIP ([`crate::vip`]); absent from older
    /// masters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vip_addresses: BTreeMap<String, std::net::Ipv4Addr>,
}

/// A running task's overlay address: `<id>.<zone>` in DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskEndpoint {
    pub id: String,
    pub node: String,
    pub address: std::net::Ipv4Addr,
    /// The task's application, from its spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The TCP ports it serves, from its spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Its named TCP ports, from its spec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_names: BTreeMap<String, u16>,
}

/// A node asks to join: it proves it holds the join token and sends a
/// certificate signing request for its own key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub token: String,
    pub name: String,
    pub role: Role,
    pub csr_pem: String,
}

/// What a joining node receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub cert_pem: String,
    pub ca_pem: String,
    pub settings: NodeSettings,
}

/// Cluster settings a node needs at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSettings {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub cluster: String,
    pub heartbeat_interval_seconds: u32,
    pub grace_seconds: u32,
    /// API endpoints of every master.
    pub masters: Vec<String>,
    /// The overlay and DNS settings of the cluster; absent from masters
    /// that predate the overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSettings>,
    /// Registries pulled from over plain HTTP (`registries.insecure` of
    /// cluster.toml).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure_registries: Vec<String>,
    /// Where the public agents' edge proxy serves (`cluster.toml`'s
    /// `[edge]`); the defaults from masters that predate it.
    #[serde(default)]
    pub edge: EdgeSettings,
}

/// The edge proxy's ports as public agents need them: `cluster.toml`'s
/// `[edge]` ([`configs::cluster::Edge`]), read tolerantly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeSettings {
    pub http_port: u16,
    pub https_port: u16,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        (&configs::cluster::Edge::default()).into()
    }
}

impl From<&configs::cluster::Edge> for EdgeSettings {
    fn from(e: &configs::cluster::Edge) -> Self {
        EdgeSettings {
            http_port: e.http_port,
            https_port: e.https_port,
        }
    }
}

/// What every node needs to build its share of the overlay and serve DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSettings {
    pub overlay: OverlaySettings,
    pub dns: DnsSettings,
}

/// The cluster's overlay as masters hand it to nodes: `cluster.toml`'s
/// `[overlay]` ([`configs::cluster::Overlay`], which an operator writes and
/// which refuses unknown keys), read tolerantly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlaySettings {
    pub cidr: Ipv4Cidr,
    pub subnet_prefix: u8,
    pub vni: u32,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// The cluster's DNS as masters hand it to nodes (`[dns]` of cluster.toml).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsSettings {
    pub zone: String,
    #[serde(default)]
    pub resolvers: Vec<std::net::Ipv4Addr>,
}

impl From<&configs::cluster::Overlay> for OverlaySettings {
    fn from(o: &configs::cluster::Overlay) -> Self {
        let configs::cluster::Overlay {
            cidr,
            subnet_prefix,
            vni,
            port,
            mtu,
        } = o.clone();
        OverlaySettings {
            cidr,
            subnet_prefix,
            vni,
            port,
            mtu,
        }
    }
}

impl From<&OverlaySettings> for configs::cluster::Overlay {
    fn from(o: &OverlaySettings) -> Self {
        configs::cluster::Overlay {
            cidr: o.cidr,
            subnet_prefix: o.subnet_prefix,
            vni: o.vni,
            port: o.port,
            mtu: o.mtu,
        }
    }
}

impl From<&configs::cluster::Dns> for DnsSettings {
    fn from(d: &configs::cluster::Dns) -> Self {
        let configs::cluster::Dns { zone, resolvers } = d.clone();
        DnsSettings { zone, resolvers }
    }
}

/// The answer to a registration: the cluster settings and the node's
/// overlay subnet lease (sticky across registrations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    #[serde(flatten)]
    pub settings: NodeSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Cidr>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// Seconds the node stays Ready without another heartbeat.
    pub ttl_seconds: i64,
    pub settings: NodeSettings,
    /// A certificate rotation is under way: the node renews its
    /// certificate if it was signed before this (unix seconds). Absent
    /// from masters that predate rotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_signed_before: Option<u64>,
}

/// One master as `cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterStatus {
    /// The etcd member name.
    pub name: String,
    /// The member's etcd client URL that was asked.
    pub endpoint: String,
    /// Whether the member answered a status request.
    pub healthy: bool,
    pub leader: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The whole cluster at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub cluster: String,
    /// The master that answered this request.
    pub answered_by: String,
    pub masters: Vec<MasterStatus>,
    /// Name of the etcd leader, when there is one.
    pub etcd_leader: Option<String>,
    /// Whether a majority of the etcd members is healthy.
    pub etcd_quorum: bool,
    pub nodes_ready: usize,
    pub nodes_total: usize,
    /// etcd's active alarms, each its kind and the member that raised it
    /// (`NOSPACE on m1`); absent when there are none. Readers show the
    /// text; a kind they do not know is shown as it comes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd_alarms: Vec<String>,
    /// The last certificate rotation asked for (absent: none ever was).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_rotation: Option<CertRotation>,
    /// Each master's API certificate as it last recorded it, by the
    /// master's node name (masters that predate the record are absent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub master_certs: BTreeMap<String, MasterCert>,
    /// The master that runs the scheduler (absent: none leads, or the
    /// master that answered predates the scheduler).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_leader: Option<crate::app::record::LeaderRecord>,
}

/// An error body of the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiErrorBody {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub error: String,
    /// What went wrong, for programs (`not-joined`, `cert-revoked`, ...;
    /// `control::api::code`): clients decide on it, never on the text.
    /// Absent from masters that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// The body of `POST /v1/nodes/{name}/certificate`: a node asks for a new
/// certificate for the key it joined with, before its current one expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertRenewal {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// A PKCS#10 signing request for the node's own key, PEM.
    pub csr_pem: String,
}

/// The answer to a renewal: the new certificate and the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewedCert {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub cert_pem: String,
    pub ca_pem: String,
}

/// A task pinned to a node, as the CLI sends it (`POST /v1/tasks`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// The node that runs the task.
    pub node: String,
    pub spec: TaskSpec,
}

/// What the cluster keeps about a task (`/strata/tasks/<id>` in etcd).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub node: String,
    pub spec: TaskSpec,
    /// Unix seconds of the submission.
    pub created_at: u64,
    /// The app it is an instance of (absent for a pinned task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_of: Option<crate::app::record::InstanceOf>,
    /// The node's ports the scheduler gave it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<u16>,
    /// The scheduler asked its node to stop it: it stays until the node
    /// reports it stopped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
    /// Unix seconds of the stop's planning: a node that has not reported
    /// the task stopped after its grace and
    /// [`crate::deploy::STOP_TIMEOUT_SECONDS`] (an agent too old to know
    /// `stopping`, a runtime that cannot stop it) no longer holds up the
    /// app: the record is deleted, which an agent of any version obeys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping_since: Option<u64>,
    /// The job run it is an attempt of (absent for a pinned task or an
    /// app's instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_of: Option<crate::job::record::RunOf>,
}

/// A task's state as its node reports it (`PUT /v1/tasks/<id>/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The task's address on the overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// What its health checks find (absent: it has none, or the node
    /// predates them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::task::Health>,
    /// Unix seconds of the report (set by the master).
    #[serde(default)]
    pub at: u64,
}

/// One task as `GET /v1/tasks` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskView {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub id: String,
    pub node: String,
    pub image: String,
    /// `pending` until the node reported.
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// The task's application and the ports it serves, from its spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// The tasks assigned to one node at an etcd revision: what
/// `GET /v1/watch/assignments/<after>` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignmentWatch {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub revision: i64,
    pub tasks: Vec<TaskSpec>,
    /// Tasks the scheduler is stopping: the node stops each and reports it
    /// stopped (absent from masters that predate apps; older nodes just
    /// remove them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopping: Vec<String>,
    /// Break-glass sessions waiting for this node to attach (absent from
    /// masters that predate them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec: Vec<crate::exec::ExecSession>,
    /// The node's last upgrade or rollback order, while it is not over
    /// (absent from masters that predate upgrades).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<crate::upgrade::UpgradeOrder>,
    /// On public agents: the edge's certificates, by host, even when
    /// there are none (`Some([])`). `None` for every other role and from
    /// masters that predate them: a public agent then keeps the ones it
    /// has (a rolling upgrade of the masters turns no HTTPS off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_certs: Option<Vec<crate::edge::EdgeCert>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records and bodies written by a newer release: a higher format, a
    /// field this release does not know, a state it does not know. Every
    /// reader of this release must still read them (a rolling upgrade runs
    /// both releases side by side).
    #[test]
    fn records_from_a_newer_writer_read() {
        let node: NodeStatus = serde_json::from_str(
            r#"{"format":2,"name":"n1","role":"private","addresses":["10.0.0.1"],"cpus":2,
                "memory_bytes":1,"disk_bytes":1,"key_sha256":"ab","joined_at":1,"registered_at":2,
                "state":"draining","zone":"eu-1","future":{"x":1}}"#,
        )
        .expect("a newer node status reads");
        assert_eq!(node.record.info.format, Format(2));
        assert_eq!(node.state, NodeState::Unknown);
        assert!(node.record.certs.is_empty());

        let record: NodeRecord = serde_json::from_str(
            r#"{"name":"n1","role":"private","addresses":[],"cpus":2,"memory_bytes":1,
                "disk_bytes":1,"key_sha256":"ab","joined_at":1,"registered_at":2,
                "certs":[{"serial":"4a01","not_after":99,"issuer":"m2"}],"taints":[]}"#,
        )
        .expect("a newer node record reads");
        assert_eq!(
            record.certs,
            [IssuedCert {
                serial: "4a01".into(),
                not_after: 99,
                issued_at: 0,
            }]
        );

        let error: ApiErrorBody =
            serde_json::from_str(r#"{"error":"no","code":"cert-revoked","retry_after":3}"#)
                .expect("a newer error body reads");
        assert_eq!(error.code.as_deref(), Some("cert-revoked"));

        let report: TaskReport =
            serde_json::from_str(r#"{"format":3,"state":"evicted","restarts":1,"health":"ok"}"#)
                .expect("a newer task report reads");
        assert_eq!(report.format, Format(3));
        assert_eq!(report.state, TaskState::Unknown);

        let record: TaskRecord = serde_json::from_str(
            r#"{"node":"n1","spec":{"id":"web","image":"bb:1","user_ns":true},"created_at":5,
                "app_version":"v2"}"#,
        )
        .expect("a newer task record reads");
        assert_eq!(record.spec.id, "web");
        assert_eq!(record.format, Format::V1);

        let settings: NodeSettings = serde_json::from_str(
            r#"{"cluster":"c","heartbeat_interval_seconds":2,"grace_seconds":10,"masters":[],
                "network":{"overlay":{"cidr":"10.200.0.0/16","subnet_prefix":24,"vni":1,"port":4789,
                "encryption":"wireguard"},"dns":{"zone":"z","resolvers":[],"search":["a"]}},
                "metrics_port":9464}"#,
        )
        .expect("newer settings read");
        assert_eq!(settings.network.map(|n| n.dns.zone), Some("z".to_string()));

        let watch: AssignmentWatch =
            serde_json::from_str(r#"{"revision":7,"tasks":[],"generation":2}"#)
                .expect("a newer assignment watch reads");
        assert_eq!(watch.revision, 7);
    }

    #[test]
    fn a_registration_records_the_presented_certificate() {
        let info = |cpus| NodeInfo {
            format: Format::V1,
            name: "n1".into(),
            role: Role::Private,
            addresses: vec![],
            cpus,
            memory_bytes: 1,
            disk_bytes: 1,
            attributes: BTreeMap::new(),
            image: None,
        };
        let cert = |serial: &str, not_after| IssuedCert {
            serial: serial.into(),
            not_after,
            issued_at: 0,
        };
        let old = NodeRecord {
            info: info(1),
            key_sha256: "ab".into(),
            joined_at: 5,
            registered_at: 6,
            certs: vec![cert("01", 50), cert("02", 500)],
        };
        let new = old.clone().registered(info(4), cert("03", 900), 100);
        assert_eq!(new.info.cpus, 4);
        assert_eq!((new.joined_at, new.registered_at), (5, 100));
        assert_eq!(new.certs, [cert("02", 500), cert("03", 900)]);
        // A certificate already recorded is not recorded twice.
        let again = new.clone().registered(info(4), cert("03", 900), 101);
        assert_eq!(again.certs, new.certs);
        // Without certificates the record is written as before.
        let bare = NodeRecord {
            certs: vec![],
            ..old
        };
        assert!(
            !serde_json::to_string(&bare)
                .expect("json")
                .contains("certs")
        );
    }

    #[test]
    fn format_1_is_not_written() {
        let report = TaskReport {
            format: Format::V1,
            state: TaskState::Running,
            pid: Some(4),
            restarts: 0,
            exit_code: None,
            address: None,
            health: None,
            at: 9,
        };
        expect_test::expect![[r#"{"state":"running","pid":4,"restarts":0,"at":9}"#]]
            .assert_eq(&serde_json::to_string(&report).expect("serializes"));
    }
}
