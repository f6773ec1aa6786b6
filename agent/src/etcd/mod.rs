//! The only module that talks to etcd (`etcd-client`). It keeps the cluster
//! state: node records under `/strata/nodes/`, and one lease-bound key per
//! live node under `/strata/alive/`, kept alive by the node's heartbeats
//! through the API. Each node's overlay subnet lease lives under
//! [`LeaseKeys::PREFIX`] ([`Store::lease_subnet`], [`Store::remove_node`]).
//! Join tokens, user tokens, revoked certificates, removed nodes and key
//! claims, with the cache of them each master's shared watch keeps, are in
//! [`access`]. The audit log is under `control::audit::PREFIX`
//! ([`Store::append_audit`]). The configuration a master renders for its
//! own etcd is in [`render`].

pub mod access;
pub mod apps;
pub mod jobs;
pub mod render;
pub mod upgrades;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use configs::net::Ipv4Cidr;
use etcd_client::{
    AlarmAction, AlarmResponse, AlarmType, Certificate, Client, Compare, CompareOp, ConnectOptions,
    DeleteOptions, DeleteResponse, GetOptions, GetResponse, Identity, LeaseGrantResponse,
    LeaseKeepAliveStream, LeaseKeeper, MemberListResponse, PutOptions, PutResponse, SortOrder,
    SortTarget, TlsOptions, Txn, TxnOp, TxnResponse, WatchOptions,
};

use control::access::{JoinRefusal, Removal, plan_removal};
use control::audit::{self, AuditRecord};
use control::exec::ExecSession;
use control::lease::{self, LeaseError, LeaseKeys};
use control::model::{
    Alive, CertRotation, Cordon, MasterCert, MasterStatus, NodeRecord, TaskRecord, TaskReport,
};

pub use access::AccessCache;
use access::{NODE_KEYS, REMOVED, REVOKED};

const NODES: &str = "/strata/nodes/";
const ALIVE: &str = "/strata/alive/";
const PROBE: &str = "/strata/probe";
const TASKS: &str = "/strata/tasks/";
const TASK_STATUS: &str = "/strata/task-status/";
/// Break-glass sessions waiting for their node: `<node>/<id>`.
const EXEC: &str = "/strata/exec/";
/// Drained nodes (`control::model::Cordon`).
const CORDONS: &str = "/strata/cordons/";
/// Each node's firewall in force, as it reported it
/// (`control::firewall::FirewallReport`).
const FIREWALLS: &str = "/strata/firewalls/";
/// The edge's certificates, by host (`control::edge::EdgeCert`): public
/// agents get them in their assignment watch.
const EDGE_CERTS: &str = "/strata/edge/certs/";
/// The last certificate rotation an admin asked for.
const CERT_ROTATION: &str = "/strata/cert-rotation";
/// Each master's API certificate: `<name>`.
const MASTER_CERTS: &str = "/strata/master-certs/";

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdConnect {
    /// Client URLs (`https://10.9.0.10:2379` or `http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Mutual TLS for `https` endpoints: the etcd CA and this master's
    /// client certificate and key of it, all PEM.
    pub tls: Option<EtcdTls>,
}

#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// What can go wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("etcd at {endpoints}: {source}")]
    Etcd {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    #[error("etcd at {endpoints} did not answer within {seconds}s")]
    Timeout { endpoints: String, seconds: u64 },
    #[error("etcd key {key} holds bad data: {reason}")]
    Corrupt { key: String, reason: String },
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error("no overlay lease for node `{node}` after {attempts} conflicting attempts")]
    Contended { node: String, attempts: u32 },
    /// A join refused (`control::access::plan_join`).
    #[error(transparent)]
    Join(#[from] JoinRefusal),
    #[error("{what}: another write came between each of {attempts} attempts")]
    Conflict { what: String, attempts: u32 },
}

/// A node's lease, its keep-alive stream, and the member (index of
/// `Clients`) the stream runs on.
type KeepAlive = Arc<tokio::sync::Mutex<Option<(i64, usize, LeaseKeeper, LeaseKeepAliveStream)>>>;

/// A connection to the cluster's etcd.
#[derive(Clone)]
pub struct Store {
    clients: Clients,
    endpoints: String,
    connect: EtcdConnect,
    /// Open keep-alive streams of nodes whose heartbeats this master serves.
    keepalives: Arc<Mutex<HashMap<String, KeepAlive>>>,
    /// The one etcd watch every long-poll of this master shares, started
    /// with the first (or by [`Store::start_watch`]).
    feed: Arc<tokio::sync::OnceCell<Feed>>,
    /// Revoked certificates and user tokens, which the shared watch loads
    /// and keeps current.
    access: Arc<AccessCache>,
}

/// One etcd client per endpoint, each with connections of its own, and the
/// one in use. etcd-client's own balancing over several endpoints keeps a
/// member it cannot reach among those it picks from, and the calls it
/// routes there fail before they are sent: a powered-off master once made
/// most reads through a live one fail for a minute
/// (`three_masters_survive_losing_one`). Here a call that never reached
/// the member in use moves every call to the next ([`Clients::failed`]).
#[derive(Clone)]
struct Clients {
    all: Arc<[Client]>,
    current: Arc<std::sync::atomic::AtomicUsize>,
}

impl Clients {
    /// The client in use, and its index.
    fn get(&self) -> (usize, Client) {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.all.len();
        (i, self.all[i].clone())
    }

    /// The client at `i` failed a call before sending it: the next one is
    /// used from now on (unless another call moved on already).
    fn failed(&self, i: usize) {
        let next = (i + 1) % self.all.len();
        let _ = self.current.compare_exchange(
            i,
            next,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// How often a call is sent while it never reaches etcd: once to each
    /// member, and once more.
    fn attempts(&self) -> usize {
        self.all.len() + 1
    }
}

/// What the shared watch saw last: the revision of the latest change to the
/// node list's inputs (node records, overlay leases, tasks, their reported
/// states) and to tasks. Each also starts at the watch's first revision
/// when it (re)starts, so a waiter whose revision is older than the watch
/// returns at once and reads everything again: nothing that happened
/// before the watch began is missed.
#[derive(Clone)]
struct Feed {
    nodes: tokio::sync::watch::Receiver<i64>,
    tasks: tokio::sync::watch::Receiver<i64>,
    /// What the scheduler plans from: apps, tasks, their reports, nodes
    /// and their liveness.
    sched: tokio::sync::watch::Receiver<i64>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether a member answered that it cannot serve (no leader, shutting
/// down, a broken connection): the next calls go to another.
fn unavailable(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable)
}

/// Whether a call failed before it was sent: its member could not be
/// connected to (a master powered off). Never sent, so a write is as safe
/// to send again, to another member, as a read ([`Clients`]).
pub(crate) fn unsent(e: &etcd_client::Error) -> bool {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return false;
    };
    std::iter::successors(Some(status as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(|e| e.is::<tonic::ConnectError>())
}

fn options(c: &EtcdConnect) -> ConnectOptions {
    // HTTP/2 keep-alives drop the connection to a member that vanished
    // (a powered-off master answers nothing, not even a reset) within a few
    // seconds. The member stays among those the balanced channel picks
    // from, and calls routed to it fail before they are sent: `Store::call`
    // sends those again.
    let mut o = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(CALL_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &c.tls {
        o = o.with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&tls.ca_pem))
                .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)),
        );
    }
    o
}

impl Store {
    /// Connects (lazily: a down etcd shows up on the first call).
    pub async fn connect(c: &EtcdConnect) -> Result<Store, Error> {
        let endpoints = c.endpoints.join(",");
        let mut all = Vec::new();
        for endpoint in &c.endpoints {
            let client = Client::connect([endpoint], Some(options(c)))
                .await
                .map_err(|source| Error::Etcd {
                    endpoints: endpoint.clone(),
                    source,
                })?;
            all.push(client);
        }
        if all.is_empty() {
            return Err(Error::Timeout {
                endpoints: "(no endpoint)".into(),
                seconds: 0,
            });
        }
        Ok(Store {
            clients: Clients {
                all: all.into(),
                current: Arc::default(),
            },
            endpoints,
            connect: c.clone(),
            keepalives: Arc::default(),
            feed: Arc::default(),
            access: Arc::default(),
        })
    }

    fn err(&self, source: etcd_client::Error) -> Error {
        Error::Etcd {
            endpoints: self.endpoints.clone(),
            source,
        }
    }

    async fn timed<T>(
        &self,
        f: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(CALL_TIMEOUT, f).await {
            Ok(r) => r.map_err(|e| self.err(e)),
            Err(_) => Err(Error::Timeout {
                endpoints: self.endpoints.clone(),
                seconds: CALL_TIMEOUT.as_secs(),
            }),
        }
    }

    /// The client in use.
    fn client(&self) -> Client {
        self.clients.get().1
    }

    /// Sends the call `send` makes with the client in use, and with the
    /// next member's while it failed before it reached etcd ([`unsent`]),
    /// all within [`CALL_TIMEOUT`].
    async fn call<T, Fut>(&self, mut send: impl FnMut(Client) -> Fut) -> Result<T, Error>
    where
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        let mut attempt = 1;
        loop {
            let (i, client) = self.clients.get();
            match tokio::time::timeout_at(deadline, send(client)).await {
                Ok(Err(e)) if attempt < self.clients.attempts() && unsent(&e) => {
                    self.clients.failed(i);
                    attempt += 1;
                }
                Ok(Err(e)) => {
                    // Sent, perhaps carried out: not sent again, but the
                    // next calls go to another member when this one is
                    // unavailable.
                    if unavailable(&e) {
                        self.clients.failed(i);
                    }
                    return Err(self.err(e));
                }
                Ok(r) => return r.map_err(|e| self.err(e)),
                Err(_) => {
                    self.clients.failed(i);
                    return Err(Error::Timeout {
                        endpoints: self.endpoints.clone(),
                        seconds: CALL_TIMEOUT.as_secs(),
                    });
                }
            }
        }
    }

    /// A range read ([`Store::call`]).
    async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<GetResponse, Error> {
        let key = key.into();
        self.call(|c| {
            let (mut kv, key, options) = (c.kv_client(), key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    /// A write ([`Store::call`]).
    async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Result<PutResponse, Error> {
        let (key, value) = (key.into(), value.into());
        self.call(|c| {
            let mut kv = c.kv_client();
            let (key, value, options) = (key.clone(), value.clone(), options.clone());
            async move { kv.put(key, value, options).await }
        })
        .await
    }

    /// A range delete ([`Store::call`]).
    async fn delete(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<DeleteOptions>,
    ) -> Result<DeleteResponse, Error> {
        let key = key.into();
        self.call(|c| {
            let (mut kv, key, options) = (c.kv_client(), key.clone(), options.clone());
            async move { kv.delete(key, options).await }
        })
        .await
    }

    /// A transaction ([`Store::call`]).
    async fn txn(&self, txn: Txn) -> Result<TxnResponse, Error> {
        self.call(|c| {
            let (mut kv, txn) = (c.kv_client(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// A new lease of `ttl` seconds ([`Store::call`]).
    async fn grant(&self, ttl: i64) -> Result<LeaseGrantResponse, Error> {
        self.call(|c| {
            let mut lease = c.lease_client();
            async move { lease.grant(ttl, None).await }
        })
        .await
    }

    /// The cluster's members ([`Store::call`]).
    async fn member_list(&self) -> Result<MemberListResponse, Error> {
        self.call(|c| {
            let mut cluster = c.cluster_client();
            async move { cluster.member_list().await }
        })
        .await
    }

    /// The active alarms ([`Store::call`]).
    async fn alarm_list(&self) -> Result<AlarmResponse, Error> {
        self.call(|c| {
            let mut maintenance = c.maintenance_client();
            async move {
                maintenance
                    .alarm(AlarmAction::Get, AlarmType::None, None)
                    .await
            }
        })
        .await
    }

    /// One linearizable read: it succeeds only when a quorum of members is up.
    pub async fn check_quorum(&self) -> Result<(), Error> {
        self.get(PROBE, None).await.map(|_| ())
    }

    /// Writes `record` only while its key was last modified at `revision`
    /// (as [`Store::get_node_at`] read it): a node removed or joined again
    /// meanwhile is not written back. Returns whether it was written.
    pub async fn put_node_if(&self, record: &NodeRecord, revision: i64) -> Result<bool, Error> {
        let key = format!("{NODES}{}", record.info.name);
        let value = serde_json::to_vec(record).expect("a node record always serializes");
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(key, value, None)]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// The record of node `name` with the revision it was last modified at.
    pub async fn get_node_at(&self, name: &str) -> Result<Option<(NodeRecord, i64)>, Error> {
        let key = format!("{NODES}{name}");
        let resp = self.get(key.clone(), None).await?;
        resp.kvs()
            .first()
            .map(|kv| Ok((decode(&key, kv.value())?, kv.mod_revision())))
            .transpose()
    }

    pub async fn get_node(&self, name: &str) -> Result<Option<NodeRecord>, Error> {
        let key = format!("{NODES}{name}");
        let resp = self.get(key.clone(), None).await?;
        resp.kvs()
            .first()
            .map(|kv| decode(&key, kv.value()))
            .transpose()
    }

    pub async fn list_nodes(&self) -> Result<Vec<NodeRecord>, Error> {
        let resp = self
            .get(NODES, Some(GetOptions::new().with_prefix()))
            .await?;
        resp.kvs()
            .iter()
            .map(|kv| decode(&String::from_utf8_lossy(kv.key()), kv.value()))
            .collect()
    }

    /// The store's current revision (a linearizable read).
    pub async fn revision(&self) -> Result<i64, Error> {
        let resp = self.get(PROBE, None).await?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Waits until a node record, an overlay lease, a task or a task's
    /// reported state changes after revision `after` (at once when it
    /// already did, or when that is older than the master's shared watch),
    /// or until `wait` passes. The caller reads the node list afterwards
    /// either way.
    pub async fn wait_node_change(&self, after: i64, wait: Duration) {
        let rx = self.feed().await.nodes;
        wait_past(rx, after, wait).await;
    }

    /// Stores a new task; `false` when a task with its id exists already.
    pub async fn create_task(&self, id: &str, record: &TaskRecord) -> Result<bool, Error> {
        let key = format!("{TASKS}{id}");
        let value = serde_json::to_vec(record).expect("a task record always serializes");
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key, value, None),
                TxnOp::delete(format!("{TASK_STATUS}{id}"), None),
                apps::bump_epoch(),
            ]);
        Ok(self.txn(txn).await?.succeeded())
    }

    pub async fn get_task(&self, id: &str) -> Result<Option<TaskRecord>, Error> {
        let key = format!("{TASKS}{id}");
        let resp = self.get(key.clone(), None).await?;
        resp.kvs()
            .first()
            .map(|kv| decode(&key, kv.value()))
            .transpose()
    }

    /// Every task: id to record.
    pub async fn list_tasks(&self) -> Result<BTreeMap<String, TaskRecord>, Error> {
        self.decode_prefix(TASKS).await
    }

    /// Every task status report: id to report.
    pub async fn task_reports(&self) -> Result<BTreeMap<String, TaskReport>, Error> {
        self.decode_prefix(TASK_STATUS).await
    }

    /// The record at `key` with the revision it was last written at.
    async fn get_record_at<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, i64)>, Error> {
        let resp = self.get(key, None).await?;
        resp.kvs()
            .first()
            .map(|kv| Ok((decode(key, kv.value())?, kv.mod_revision())))
            .transpose()
    }

    /// Writes `record` at `key` while it was last written at `revision`
    /// (0: it did not exist), bumping the scheduler's epoch. Returns
    /// whether it was written.
    async fn put_record_if<T: serde::Serialize>(
        &self,
        key: String,
        record: &T,
        revision: i64,
    ) -> Result<bool, Error> {
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([
                TxnOp::put(key, record_json(record), None),
                apps::bump_epoch(),
            ]);
        Ok(self.txn(txn).await?.succeeded())
    }

    async fn decode_prefix<T: serde::de::DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, T>, Error> {
        let resp = self
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let id = key.trim_start_matches(prefix).to_string();
            out.insert(id, decode(&key, kv.value())?);
        }
        Ok(out)
    }

    /// Removes a task and its status; returns whether it existed.
    pub async fn delete_task(&self, id: &str) -> Result<bool, Error> {
        let txn = Txn::new().and_then([
            TxnOp::delete(format!("{TASKS}{id}"), None),
            TxnOp::delete(format!("{TASK_STATUS}{id}"), None),
            apps::bump_epoch(),
        ]);
        Ok(deleted_any(&self.txn(txn).await?))
    }

    /// Drains node `name` (replacing an earlier drain's record), only
    /// while the node exists: false when it does not.
    pub async fn put_cordon(&self, name: &str, cordon: &Cordon) -> Result<bool, Error> {
        let value = serde_json::to_vec(cordon).expect("a cordon always serializes");
        let txn = Txn::new()
            .when([Compare::version(
                format!("{NODES}{name}"),
                CompareOp::Greater,
                0,
            )])
            .and_then([
                TxnOp::put(format!("{CORDONS}{name}"), value, None),
                apps::bump_epoch(),
            ]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Uncordons node `name`; returns whether it was drained.
    pub async fn delete_cordon(&self, name: &str) -> Result<bool, Error> {
        let txn = Txn::new().and_then([
            TxnOp::delete(format!("{CORDONS}{name}"), None),
            apps::bump_epoch(),
        ]);
        Ok(deleted_any(&self.txn(txn).await?))
    }

    /// Every drained node: name to its drain.
    pub async fn cordons(&self) -> Result<BTreeMap<String, Cordon>, Error> {
        self.decode_prefix(CORDONS).await
    }

    /// Records the firewall node `name` reports in force, only while the
    /// node exists (a report racing its removal is dropped). Returns
    /// whether it was recorded.
    pub async fn put_firewall_report(
        &self,
        name: &str,
        report: &control::firewall::FirewallReport,
    ) -> Result<bool, Error> {
        let txn = Txn::new()
            .when([Compare::version(
                format!("{NODES}{name}"),
                CompareOp::Greater,
                0,
            )])
            .and_then([TxnOp::put(
                format!("{FIREWALLS}{name}"),
                record_json(report),
                None,
            )]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Stores the edge's certificate of `cert.view.host`, replacing any.
    pub async fn put_edge_cert(&self, cert: &control::edge::EdgeCert) -> Result<(), Error> {
        self.put(
            format!("{EDGE_CERTS}{}", cert.view.host),
            record_json(cert),
            None,
        )
        .await
        .map(|_| ())
    }

    /// Every edge certificate: host to its record.
    pub async fn edge_certs(&self) -> Result<BTreeMap<String, control::edge::EdgeCert>, Error> {
        self.decode_prefix(EDGE_CERTS).await
    }

    /// Removes the edge's certificate of `host`; returns whether there was
    /// one.
    pub async fn delete_edge_cert(&self, host: &str) -> Result<bool, Error> {
        let resp = self.delete(format!("{EDGE_CERTS}{host}"), None).await?;
        Ok(resp.deleted() > 0)
    }

    /// The firewall node `name` last reported, if any.
    pub async fn firewall_report(
        &self,
        name: &str,
    ) -> Result<Option<control::firewall::FirewallReport>, Error> {
        let key = format!("{FIREWALLS}{name}");
        let resp = self.get(key.clone(), None).await?;
        resp.kvs()
            .first()
            .map(|kv| decode(&key, kv.value()))
            .transpose()
    }

    /// Records a task's status as its node reports it, only while the task
    /// exists (a report racing a delete is dropped).
    pub async fn put_task_report(&self, id: &str, report: &TaskReport) -> Result<bool, Error> {
        let value = serde_json::to_vec(report).expect("a task report always serializes");
        let txn = Txn::new()
            .when([Compare::version(
                format!("{TASKS}{id}"),
                CompareOp::Greater,
                0,
            )])
            .and_then([TxnOp::put(format!("{TASK_STATUS}{id}"), value, None)]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Waits until a task is created, changed or removed after revision
    /// `after`, or until `wait` passes (as [`Store::wait_node_change`]).
    pub async fn wait_task_change(&self, after: i64, wait: Duration) {
        let rx = self.feed().await.tasks;
        wait_past(rx, after, wait).await;
    }

    /// The revision of the latest change to the node list's inputs that
    /// the shared watch has seen.
    pub async fn seen_node_change(&self) -> i64 {
        *self.feed().await.nodes.borrow()
    }

    /// The revision of the latest change to tasks that the shared watch
    /// has seen.
    pub async fn seen_task_change(&self) -> i64 {
        *self.feed().await.tasks.borrow()
    }

    /// The shared watch, started on first use. Every long-poll used to
    /// open an etcd watch of its own: with a few hundred agents, each
    /// holding two long-polls, the master's one gRPC connection to etcd ran
    /// out of streams and every call failed (`cargo xtask bench cluster`).
    async fn feed(&self) -> Feed {
        self.feed
            .get_or_init(|| async {
                let (nodes_tx, nodes) = tokio::sync::watch::channel(0);
                let (tasks_tx, tasks) = tokio::sync::watch::channel(0);
                let (sched_tx, sched) = tokio::sync::watch::channel(0);
                // The task holds the client, not the store: it ends once
                // the store (and with it every receiver) is gone.
                tokio::spawn(follow_changes(
                    self.clients.clone(),
                    self.endpoints.clone(),
                    nodes_tx,
                    tasks_tx,
                    sched_tx,
                    self.access.clone(),
                ));
                Feed {
                    nodes,
                    tasks,
                    sched,
                }
            })
            .await
            .clone()
    }

    /// Offers `session` to its node, for `ttl_seconds` at most (the key
    /// is bound to a lease, so a session whose master died goes too).
    pub async fn put_exec(&self, session: &ExecSession, ttl_seconds: u64) -> Result<(), Error> {
        let ttl = i64::try_from(ttl_seconds).unwrap_or(i64::MAX);
        let granted = self.grant(ttl).await?;
        let value = serde_json::to_vec(session).expect("an exec session always serializes");
        let key = format!("{EXEC}{}/{}", session.node, session.id);
        let options = PutOptions::new().with_lease(granted.id());
        self.put(key, value, Some(options)).await.map(|_| ())
    }

    /// Withdraws a session (its node attached, or never will).
    pub async fn delete_exec(&self, node: &str, id: &str) -> Result<(), Error> {
        self.delete(format!("{EXEC}{node}/{id}"), None)
            .await
            .map(|_| ())
    }

    /// Every session waiting for its node. One that does not parse is left
    /// out and logged.
    pub async fn list_exec(&self) -> Result<Vec<ExecSession>, Error> {
        let mut out = Vec::new();
        for (key, value) in self.list_prefix(EXEC).await? {
            match decode::<ExecSession>(&key, value.as_bytes()) {
                Ok(session) => out.push(session),
                Err(e) => tracing::warn!("etcd: exec session left out: {e}"),
            }
        }
        Ok(out)
    }

    /// Records a certificate rotation.
    pub async fn put_cert_rotation(&self, rotation: &CertRotation) -> Result<(), Error> {
        let value = serde_json::to_vec(rotation).expect("a rotation always serializes");
        self.put(CERT_ROTATION, value, None).await.map(|_| ())
    }

    /// The last certificate rotation asked for, if any.
    pub async fn cert_rotation(&self) -> Result<Option<CertRotation>, Error> {
        let resp = self.get(CERT_ROTATION, None).await?;
        resp.kvs()
            .first()
            .map(|kv| decode(CERT_ROTATION, kv.value()))
            .transpose()
    }

    /// Records master `name`'s API certificate.
    pub async fn put_master_cert(&self, name: &str, cert: &MasterCert) -> Result<(), Error> {
        let value = serde_json::to_vec(cert).expect("a master certificate always serializes");
        self.put(format!("{MASTER_CERTS}{name}"), value, None)
            .await
            .map(|_| ())
    }

    /// Every master's API certificate as it last recorded it, by name. One
    /// that does not parse is left out and logged.
    pub async fn master_certs(&self) -> Result<BTreeMap<String, MasterCert>, Error> {
        let mut out = BTreeMap::new();
        for (key, value) in self.list_prefix(MASTER_CERTS).await? {
            match decode::<MasterCert>(&key, value.as_bytes()) {
                Ok(cert) => {
                    out.insert(key.trim_start_matches(MASTER_CERTS).to_string(), cert);
                }
                Err(e) => tracing::warn!("etcd: master certificate left out: {e}"),
            }
        }
        Ok(out)
    }

    /// Appends `record` to the audit log under `key`
    /// (`control::audit::key`).
    pub async fn append_audit(&self, key: &str, record: &AuditRecord) -> Result<(), Error> {
        let value = serde_json::to_vec(record).expect("an audit record always serializes");
        self.put(key, value, None).await.map(|_| ())
    }

    /// The newest `limit` records of the audit log, oldest first. A record
    /// that does not parse is left out and logged, so that one damaged key
    /// does not hide the rest.
    pub async fn list_audit(&self, limit: usize) -> Result<Vec<AuditRecord>, Error> {
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(i64::try_from(limit).unwrap_or(i64::MAX));
        let resp = self.get(audit::PREFIX, Some(options)).await?;
        let mut out = Vec::new();
        for kv in resp.kvs().iter().rev() {
            let key = String::from_utf8_lossy(kv.key());
            match decode::<AuditRecord>(&key, kv.value()) {
                Ok(record) => out.push(record),
                Err(e) => tracing::warn!("etcd: audit record left out: {e}"),
            }
        }
        Ok(out)
    }

    /// Deletes the audit records keyed before `end`
    /// (`control::audit::trim_end`); returns how many went.
    pub async fn trim_audit(&self, end: &str) -> Result<i64, Error> {
        let options = DeleteOptions::new().with_range(end);
        let resp = self.delete(audit::PREFIX, Some(options)).await?;
        Ok(resp.deleted())
    }

    /// Every key under `prefix` with its value (lossy UTF-8), in key order.
    pub async fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>, Error> {
        let resp = self
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).to_string(),
                    String::from_utf8_lossy(kv.value()).to_string(),
                )
            })
            .collect())
    }

    /// Every node's overlay subnet: node name to subnet.
    pub async fn leases(&self) -> Result<BTreeMap<String, Ipv4Cidr>, Error> {
        let kvs = self.list_prefix(LeaseKeys::PREFIX).await?;
        lease::leases_from_kvs(kvs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(
            |reason| Error::Corrupt {
                key: LeaseKeys::PREFIX.to_string(),
                reason,
            },
        )
    }

    /// Leases `node` a `/prefix` subnet of `cidr`, or returns the one it
    /// already holds. Compare-and-swap: the subnet key and the node key must
    /// both be absent (version 0) for the write to commit; a lost race reads
    /// again and allocates again, so a subnet is never shared and a node
    /// never holds two.
    pub async fn lease_subnet(
        &self,
        cidr: Ipv4Cidr,
        prefix: u8,
        node: &str,
    ) -> Result<Ipv4Cidr, Error> {
        const ATTEMPTS: u32 = 64;
        for _ in 0..ATTEMPTS {
            let leases = self.leases().await?;
            let subnet = lease::allocate(cidr, prefix, &leases, node)?;
            if leases.get(node) == Some(&subnet) {
                return Ok(subnet);
            }
            let keys = LeaseKeys::new(node, subnet);
            let txn = Txn::new()
                .when([
                    Compare::version(keys.by_subnet.clone(), CompareOp::Equal, 0),
                    Compare::version(keys.by_node.clone(), CompareOp::Equal, 0),
                ])
                .and_then([
                    TxnOp::put(keys.by_subnet.clone(), node, None),
                    TxnOp::put(keys.by_node.clone(), subnet.to_string(), None),
                ]);
            if self.txn(txn).await?.succeeded() {
                return Ok(subnet);
            }
        }
        Err(Error::Contended {
            node: node.to_string(),
            attempts: ATTEMPTS,
        })
    }

    /// Removes node `name` from the cluster in one transaction: its record,
    /// its alive key and both keys of its overlay lease (the subnet is free
    /// again); and, when it had a record, revokes its certificates that
    /// have not expired, records its removal (it joins again only with a
    /// join token made after it) and marks its key's claim removed
    /// (`control::access::plan_removal`). Returns what the removal wrote,
    /// `None` when the node had no record.
    pub async fn remove_node(&self, name: &str, now: u64) -> Result<Option<Removal>, Error> {
        let node_key = format!("{NODES}{name}");
        let lease_key = format!("{}nodes/{name}", LeaseKeys::PREFIX);
        loop {
            let read = Txn::new().and_then([
                TxnOp::get(node_key.clone(), None),
                TxnOp::get(lease_key.clone(), None),
            ]);
            let resp = self.txn(read).await?;
            let mut found = resp.op_responses().into_iter().map(|r| match r {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                _ => None,
            });
            let (node, held) = (found.next().flatten(), found.next().flatten());
            let mut ops = vec![
                TxnOp::delete(node_key.clone(), None),
                TxnOp::delete(format!("{ALIVE}{name}"), None),
                TxnOp::delete(format!("{CORDONS}{name}"), None),
                TxnOp::delete(format!("{FIREWALLS}{name}"), None),
                TxnOp::delete(format!("{}{name}", upgrades::UPGRADES), None),
            ];
            let mut compares = Vec::new();
            match &held {
                Some(kv) => {
                    let value = String::from_utf8_lossy(kv.value()).to_string();
                    let subnet: Ipv4Cidr =
                        value.parse().map_err(|reason: String| Error::Corrupt {
                            key: lease_key.clone(),
                            reason,
                        })?;
                    let keys = LeaseKeys::new(name, subnet);
                    ops.push(TxnOp::delete(keys.by_subnet, None));
                    ops.push(TxnOp::delete(keys.by_node, None));
                    compares.push(Compare::mod_revision(
                        lease_key.clone(),
                        CompareOp::Equal,
                        kv.mod_revision(),
                    ));
                }
                None => compares.push(Compare::version(lease_key.clone(), CompareOp::Equal, 0)),
            }
            let removal = match &node {
                Some(kv) => {
                    let record: NodeRecord = decode(&node_key, kv.value())?;
                    compares.push(Compare::mod_revision(
                        node_key.clone(),
                        CompareOp::Equal,
                        kv.mod_revision(),
                    ));
                    let removal = plan_removal(&record, now);
                    ops.push(TxnOp::put(
                        format!("{REMOVED}{name}"),
                        record_json(&removal.removed),
                        None,
                    ));
                    for cert in &removal.revoked {
                        ops.push(TxnOp::put(
                            format!("{REVOKED}{}", cert.serial),
                            record_json(cert),
                            None,
                        ));
                    }
                    ops.push(TxnOp::put(
                        format!("{NODE_KEYS}{}", record.key_sha256),
                        record_json(&removal.claim),
                        None,
                    ));
                    Some(removal)
                }
                None => {
                    compares.push(Compare::version(node_key.clone(), CompareOp::Equal, 0));
                    None
                }
            };
            let txn = Txn::new().when(compares).and_then(ops);
            if self.txn(txn).await?.succeeded() {
                self.keepalives
                    .lock()
                    .expect("keepalive map lock poisoned")
                    .remove(name);
                return Ok(removal);
            }
        }
    }

    /// The live nodes: name to the value of its lease-bound key.
    pub async fn alive(&self) -> Result<BTreeMap<String, Alive>, Error> {
        let resp = self
            .get(ALIVE, Some(GetOptions::new().with_prefix()))
            .await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let name = key.trim_start_matches(ALIVE).to_string();
            out.insert(name, decode(&key, kv.value())?);
        }
        Ok(out)
    }

    /// Records one heartbeat of `name`: renews its lease, or grants a new
    /// one of `grace_seconds` and binds its alive key to it when the old one
    /// expired. Returns the lease's remaining seconds.
    pub async fn heartbeat(&self, name: &str, grace_seconds: u32, now: u64) -> Result<i64, Error> {
        let slot = {
            let mut map = self.keepalives.lock().expect("keepalive map lock poisoned");
            map.entry(name.to_string()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some((_, member, keeper, stream)) = slot.as_mut() {
            let member = *member;
            let renewed = async {
                keeper.keep_alive().await?;
                stream.message().await
            };
            match self.timed(renewed).await {
                Ok(Some(resp)) if resp.ttl() > 0 => return Ok(resp.ttl()),
                // Expired, or the stream ended: start again below.
                Ok(_) => *slot = None,
                // Its member does not answer (it is down, or its
                // connection is not yet known dead): the calls below, and
                // the stream they open, go to the next member at once, so
                // that the node's lease is renewed within its grace.
                Err(_) => {
                    self.clients.failed(member);
                    *slot = None;
                }
            }
        }
        // A lease this master does not know yet may still be alive (the
        // node heartbeated through another master before).
        let key = format!("{ALIVE}{name}");
        let existing = self.get(key.clone(), None).await?;
        let (member, client) = self.clients.get();
        let mut lease = client.lease_client();
        if let Some(alive) = existing
            .kvs()
            .first()
            .map(|kv| decode::<Alive>(&key, kv.value()))
            .transpose()?
        {
            let opened = async {
                let (mut keeper, mut stream) = lease.keep_alive(alive.lease).await?;
                keeper.keep_alive().await?;
                let resp = stream.message().await?;
                Ok((keeper, stream, resp))
            };
            let (keeper, stream, resp) = self.timed(opened).await.inspect_err(|_| {
                self.clients.failed(member);
            })?;
            if let Some(resp) = resp
                && resp.ttl() > 0
            {
                *slot = Some((alive.lease, member, keeper, stream));
                return Ok(resp.ttl());
            }
        }
        let granted = self.grant(i64::from(grace_seconds)).await?;
        let value = serde_json::to_vec(&Alive {
            format: Default::default(),
            lease: granted.id(),
            since: now,
        })
        .expect("alive always serializes");
        self.put(key, value, Some(PutOptions::new().with_lease(granted.id())))
            .await?;
        let (keeper, stream) = self
            .timed(lease.keep_alive(granted.id()))
            .await
            .inspect_err(|_| self.clients.failed(member))?;
        *slot = Some((granted.id(), member, keeper, stream));
        Ok(granted.ttl())
    }

    /// etcd's active alarms, each as its kind and the member that raised
    /// it (`NOSPACE on m1`): NOSPACE (the backend quota is used up; etcd
    /// refuses writes until space is freed and the alarm disarmed) or
    /// CORRUPT.
    pub async fn alarms(&self) -> Result<Vec<String>, Error> {
        let resp = self.alarm_list().await?;
        if resp.alarms().is_empty() {
            return Ok(Vec::new());
        }
        let list = self.member_list().await?;
        Ok(resp
            .alarms()
            .iter()
            .map(|a| {
                let member = list
                    .members()
                    .iter()
                    .find(|m| m.id() == a.member_id())
                    .map_or_else(|| format!("{:x}", a.member_id()), |m| m.name().to_string());
                format!("{} on {member}", a.alarm().as_str_name())
            })
            .collect())
    }

    /// Every member with its health and whether it leads; each member is
    /// asked on its own client URL.
    pub async fn members(&self) -> Result<Vec<MasterStatus>, Error> {
        let list = self.member_list().await?;
        let mut asks = tokio::task::JoinSet::new();
        for (i, m) in list.members().iter().enumerate() {
            let endpoint = m.client_urls().first().cloned().unwrap_or_default();
            let mut status = MasterStatus {
                name: m.name().to_string(),
                endpoint: endpoint.clone(),
                healthy: false,
                leader: false,
                version: None,
                error: None,
            };
            let one = EtcdConnect {
                endpoints: vec![endpoint.clone()],
                tls: self.connect.tls.clone(),
            };
            let id = m.id();
            // Every member is asked at once, so a dead one costs the
            // timeout once, not once per member.
            asks.spawn(async move {
                let asked = async {
                    let mut c = Client::connect([endpoint.as_str()], Some(options(&one))).await?;
                    c.status().await
                };
                match tokio::time::timeout(Duration::from_secs(3), asked).await {
                    Ok(Ok(s)) => {
                        status.healthy = true;
                        status.leader = s.leader() == id;
                        status.version = Some(s.version().to_string());
                    }
                    Ok(Err(e)) => status.error = Some(e.to_string()),
                    Err(_) => status.error = Some("no answer within 3s".to_string()),
                }
                (i, status)
            });
        }
        let mut out: Vec<(usize, MasterStatus)> = asks.join_all().await;
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }
}

/// A record's JSON, as every key of the cluster holds it.
fn record_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records always serialize")
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(value).map_err(|e| Error::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}
/// Waits until `rx` holds a revision past `after`, or `wait` passes. When
/// the feed is gone (it never ends while its store lives, so only a panic
/// does that) it still waits out `wait`: answering at once would have every
/// agent poll in a tight loop.
async fn wait_past(mut rx: tokio::sync::watch::Receiver<i64>, after: i64, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    // (The answer holds a borrow of the channel, which must not live
    // across the sleep.)
    let gone = matches!(
        tokio::time::timeout_at(deadline, rx.wait_for(|rev| *rev > after)).await,
        Ok(Err(_))
    );
    if gone {
        tracing::warn!("etcd: the shared watch is gone; long-polls wait their whole time");
        tokio::time::sleep_until(deadline).await;
    }
}

/// Whether a delete of the transaction removed a key.
fn deleted_any(resp: &TxnResponse) -> bool {
    resp.op_responses()
        .iter()
        .any(|r| matches!(r, etcd_client::TxnOpResponse::Delete(d) if d.deleted() > 0))
}

/// Keys whose changes the node list shows.
fn node_list_input(key: &[u8]) -> bool {
    let key = String::from_utf8_lossy(key);
    key.starts_with(NODES)
        || key.starts_with(LeaseKeys::PREFIX)
        || key.starts_with(TASK_STATUS)
        || key.starts_with(TASKS)
        || key.starts_with(CORDONS)
        || key.starts_with(upgrades::UPGRADES)
        || key.starts_with(apps::APPS)
        || key.starts_with(apps::VIPS)
}

/// Raises `tx` to `rev` when that is later than what it holds.
fn raise(tx: &tokio::sync::watch::Sender<i64>, rev: i64) {
    tx.send_if_modified(|r| {
        let later = rev > *r;
        if later {
            *r = rev;
        }
        later
    });
}

/// The master's one watch on `/strata/`, feeding the revisions of changes
/// to `nodes` and `tasks`, and keeping `access` (revoked certificates, user
/// tokens) current. Each (re)start loads `access` afresh and watches from
/// the revision after that read, so no change to it is missed; and sets
/// `nodes` and `tasks` to the revision the new watch starts at
/// (authoritative even when etcd's history went backwards, a wiped and
/// rebuilt cluster behind the same endpoints), which wakes every waiter to
/// read the state afresh. While the watch is down `access` is marked stale
/// (requests that need it are refused). Ends when every receiver is gone.
async fn follow_changes(
    clients: Clients,
    endpoints: String,
    nodes: tokio::sync::watch::Sender<i64>,
    tasks: tokio::sync::watch::Sender<i64>,
    sched: tokio::sync::watch::Sender<i64>,
    access: Arc<AccessCache>,
) {
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut last_error = String::new();
    loop {
        let mut started = false;
        let run = async {
            let loaded_at = access::load_cache(&clients, &access).await?;
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(loaded_at + 1);
            // Opened with the next member while it never reached etcd
            // (`unsent`).
            let mut attempt = 1;
            // The watch client lives as long as its stream.
            let (_watch, mut stream) = loop {
                let (i, client) = clients.get();
                let mut watch = client.watch_client();
                match watch.watch("/strata/", Some(options.clone())).await {
                    Err(e) if attempt < clients.attempts() && unsent(&e) => {
                        clients.failed(i);
                        attempt += 1;
                    }
                    opened => break (watch, opened.map_err(|e| e.to_string())?),
                }
            };
            while let Some(resp) = stream.message().await.map_err(|e| e.to_string())? {
                if resp.canceled() {
                    return Err(format!(
                        "etcd cancelled the watch: {}",
                        resp.cancel_reason()
                    ));
                }
                let rev = resp.header().map_or(0, |h| h.revision());
                if resp.created() {
                    started = true;
                    nodes.send_replace(rev);
                    tasks.send_replace(rev);
                    sched.send_replace(rev);
                    continue;
                }
                for e in resp.events() {
                    let Some(kv) = e.kv() else { continue };
                    let put = e.event_type() == etcd_client::EventType::Put;
                    access.apply(&String::from_utf8_lossy(kv.key()), put.then(|| kv.value()));
                    let at = kv.mod_revision().max(rev);
                    if node_list_input(kv.key()) {
                        raise(&nodes, at);
                    }
                    // Exec sessions reach nodes in their assignment watch.
                    let key = String::from_utf8_lossy(kv.key());
                    // So do drains, which stop a node's pinned tasks.
                    // And upgrade orders, and the edge's certificates.
                    if key.starts_with(TASKS)
                        || key.starts_with(EDGE_CERTS)
                        || key.starts_with(EXEC)
                        || key.starts_with(CORDONS)
                        || key.starts_with(upgrades::UPGRADES)
                    {
                        raise(&tasks, at);
                    }
                    if apps::scheduler_input(&key) {
                        raise(&sched, at);
                    }
                }
            }
            Err("etcd closed the watch".to_string())
        };
        let ended: Result<(), String> = tokio::select! {
            r = run => r,
            () = async { tokio::join!(nodes.closed(), tasks.closed(), sched.closed()); } => return,
        };
        access.mark_stale();
        if started {
            backoff.reset();
        }
        if let Err(e) = ended {
            if e != last_error {
                tracing::warn!(
                    "etcd at {endpoints}: the shared watch failed, starting it again: {e}"
                );
                last_error = e;
            }
        }
        crate::retry::wait(&mut backoff).await;
    }
}
