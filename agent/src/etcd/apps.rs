//! Apps in etcd: their records (`/strata/apps/<key>`), their versions
//! (`/strata/app-versions/<key>/<version>`), their claims of the edge
//! (`/strata/claims/<claim>`), the scheduler's leadership
//! (`/strata/scheduler/leader`, bound to the leader's lease), the snapshot
//! the scheduler plans from (paged reads, all at one revision),
//! and the commit of a plan, fenced on the leadership and on that
//! revision: a deposed leader, or a plan made from a state someone else
//! changed since, writes nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, GetOptions, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp,
};

use control::app::AppId;
use control::app::expose::{Claim, ClaimWrites};
use control::app::record::{AppRecord, AppVersion, LeaderRecord};
use control::deploy::apply::Changes;
use control::model::{Alive, Cordon, NodeRecord, NodeStatus, TaskRecord, TaskReport};

use super::{ALIVE, Error, NODES, Store, TASK_STATUS, TASKS, decode, record_json};

pub const APPS: &str = "/strata/apps/";
/// Named VIPs' addresses: `name/<name>` holds the address
/// (`control::vip::VipLease`), `addr/<a.b.c.d>` the name; both written
/// together, only while both are absent, and never removed.
pub const VIPS: &str = "/strata/vips/";
/// What apps hold of the edge, one key per host and path or public TCP
/// port (`control::app::expose::claim_key`): written in the deploy's
/// transaction, so that two deploys racing for the same one cannot both
/// win.
pub const CLAIMS: &str = "/strata/claims/";
pub const APP_VERSIONS: &str = "/strata/app-versions/";
pub const LEADER: &str = "/strata/scheduler/leader";
/// Written by every transaction that changes apps or tasks: the leader's
/// commit is fenced on it not having changed since its snapshot, one key
/// for etcd to compare where a compare over the tasks' prefix costs a read
/// of every task (it made placing 100 000 tasks 8 times slower per task
/// than placing 10 000).
pub const EPOCH: &str = "/strata/scheduler/epoch";

/// The write of [`EPOCH`] every transaction that changes apps or tasks
/// carries.
pub(super) fn bump_epoch() -> TxnOp {
    TxnOp::put(EPOCH, Vec::new(), None)
}

/// Keys per page of a snapshot's reads: etcd-client takes answers of up
/// to 4 MiB, and a task's record is about 1.5 KiB.
const PAGE: i64 = 1000;

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The most operations one transaction of a plan holds: etcd refuses
/// transactions of more than 128 (its `--max-txn-ops`).
const OPS_PER_TXN: usize = 100;

/// Whether a change to `key` may change what the scheduler plans.
pub(super) fn scheduler_input(key: &str) -> bool {
    [
        APPS,
        TASKS,
        TASK_STATUS,
        NODES,
        ALIVE,
        super::CORDONS,
        super::upgrades::ROLLOUT,
        super::jobs::JOBS,
        super::jobs::JOB_RUNS,
        super::jobs::JOB_SCHEDULES,
    ]
    .iter()
    .any(|p| key.starts_with(p))
}

fn app_key(id: &AppId) -> String {
    format!("{APPS}{}", id.key())
}

fn version_key(id: &AppId, version: u64) -> String {
    format!("{APP_VERSIONS}{}/{version:020}", id.key())
}

/// What the scheduler plans from, as etcd held it at `revision`.
#[derive(Debug, Clone)]
pub struct SchedulerSnapshot {
    pub revision: i64,
    pub apps: Vec<AppRecord>,
    pub tasks: BTreeMap<String, TaskRecord>,
    pub reports: BTreeMap<String, TaskReport>,
    pub nodes: Vec<NodeStatus>,
    pub jobs: super::jobs::JobsSnapshot,
}

/// This master leads the scheduler: its lease, kept alive, holds the
/// leader key, created at `created`.
pub struct Leadership {
    pub lease: i64,
    pub created: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl Store {
    /// An app's record, with the revision it was last written at.
    pub async fn get_app(&self, id: &AppId) -> Result<Option<(AppRecord, i64)>, Error> {
        self.get_record_at(&app_key(id)).await
    }

    /// Every app, by id.
    pub async fn list_apps(&self) -> Result<Vec<AppRecord>, Error> {
        Ok(self.decode_prefix(APPS).await?.into_values().collect())
    }

    /// An app's versions, oldest first.
    pub async fn app_versions(&self, id: &AppId) -> Result<Vec<AppVersion>, Error> {
        let prefix = format!("{APP_VERSIONS}{}/", id.key());
        Ok(self.decode_prefix(&prefix).await?.into_values().collect())
    }

    /// One version of an app.
    pub async fn app_version(&self, id: &AppId, version: u64) -> Result<Option<AppVersion>, Error> {
        let key = version_key(id, version);
        let resp = self.get(key.clone(), None).await?;
        resp.kvs()
            .first()
            .map(|kv| decode(&key, kv.value()))
            .transpose()
    }

    /// Every named VIP's address, by name.
    pub async fn vip_leases(&self) -> Result<BTreeMap<String, std::net::Ipv4Addr>, Error> {
        let leases: BTreeMap<String, control::vip::VipLease> =
            self.decode_prefix(&format!("{VIPS}name/")).await?;
        Ok(leases.into_iter().map(|(n, l)| (n, l.address)).collect())
    }

    /// Every claim of the edge, by key, with the revision it was written
    /// at.
    pub async fn claims(&self) -> Result<BTreeMap<String, (Claim, i64)>, Error> {
        let resp = self
            .get(CLAIMS, Some(GetOptions::new().with_prefix()))
            .await?;
        let mut out = BTreeMap::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).to_string();
            let claim = decode(&key, kv.value())?;
            out.insert(
                key.trim_start_matches(CLAIMS).to_string(),
                (claim, kv.mod_revision()),
            );
        }
        Ok(out)
    }

    /// Stores operators' changes of apps at once: each record only while
    /// it was last written at the revision given (0: it did not exist), and
    /// each version beside it, with the claims of the edge they take, keep
    /// and free, each only while as read. Returns whether it was stored.
    pub async fn put_apps_if(
        &self,
        items: &[(AppRecord, AppVersion, i64)],
        claims: &ClaimWrites,
    ) -> Result<bool, Error> {
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        let claim_key = |k: &str| format!("{CLAIMS}{k}");
        for (key, claim) in &claims.take {
            compares.push(Compare::version(claim_key(key), CompareOp::Equal, 0));
            ops.push(TxnOp::put(claim_key(key), record_json(claim), None));
        }
        for (key, claim, rev) in &claims.stale {
            compares.push(Compare::mod_revision(
                claim_key(key),
                CompareOp::Equal,
                *rev,
            ));
            ops.push(TxnOp::put(claim_key(key), record_json(claim), None));
        }
        for (key, rev) in &claims.keep {
            compares.push(Compare::mod_revision(
                claim_key(key),
                CompareOp::Equal,
                *rev,
            ));
        }
        for (key, rev) in &claims.free {
            compares.push(Compare::mod_revision(
                claim_key(key),
                CompareOp::Equal,
                *rev,
            ));
            ops.push(TxnOp::delete(claim_key(key), None));
        }
        for (name, address) in &claims.leases {
            let (by_name, by_addr) = (
                format!("{VIPS}name/{name}"),
                format!("{VIPS}addr/{address}"),
            );
            compares.push(Compare::version(by_name.clone(), CompareOp::Equal, 0));
            compares.push(Compare::version(by_addr.clone(), CompareOp::Equal, 0));
            ops.push(TxnOp::put(
                by_name,
                record_json(&control::vip::VipLease { address: *address }),
                None,
            ));
            ops.push(TxnOp::put(by_addr, name.as_bytes().to_vec(), None));
        }
        for (record, version, revision) in items {
            let key = app_key(&record.spec.id);
            compares.push(Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                *revision,
            ));
            ops.push(TxnOp::put(key, record_json(record), None));
            ops.push(TxnOp::put(
                version_key(&record.spec.id, version.version),
                record_json(version),
                None,
            ));
        }
        ops.push(bump_epoch());
        let txn = Txn::new().when(compares).and_then(ops);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Writes one app's record while it was last written at `revision`.
    pub async fn put_app_if(&self, record: &AppRecord, revision: i64) -> Result<bool, Error> {
        self.put_record_if(app_key(&record.spec.id), record, revision)
            .await
    }

    /// Who leads the scheduler, if anyone does.
    pub async fn scheduler_leader(&self) -> Result<Option<LeaderRecord>, Error> {
        let resp = self.get(LEADER, None).await?;
        resp.kvs()
            .first()
            .map(|kv| decode(LEADER, kv.value()))
            .transpose()
    }

    /// Tries once to lead the scheduler: the leader key is created bound to
    /// a new lease of `ttl` seconds, unless another master holds it.
    pub async fn campaign(
        &self,
        name: &str,
        ttl: i64,
        now: u64,
    ) -> Result<Option<Leadership>, Error> {
        let granted = self.grant(ttl).await?;
        let record = LeaderRecord {
            format: Default::default(),
            name: name.to_string(),
            since: now,
        };
        let txn = Txn::new()
            .when([Compare::version(LEADER, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                LEADER,
                record_json(&record),
                Some(PutOptions::new().with_lease(granted.id())),
            )])
            .or_else([TxnOp::get(LEADER, None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            let mut lease = self.client().lease_client();
            let _ = self.timed(lease.revoke(granted.id())).await;
            return Ok(None);
        }
        let created = resp.header().map_or(0, |h| h.revision());
        let mut lease = self.client().lease_client();
        let (keeper, stream) = self.timed(lease.keep_alive(granted.id())).await?;
        Ok(Some(Leadership {
            lease: granted.id(),
            created,
            keeper,
            stream,
        }))
    }

    /// Renews the leadership's lease; `false` once it is lost (expired, or
    /// the key is no longer this lease's).
    pub async fn keep_leading(&self, lead: &mut Leadership) -> Result<bool, Error> {
        let renewed = async {
            lead.keeper.keep_alive().await?;
            lead.stream.message().await
        };
        match self.timed(renewed).await? {
            Some(r) if r.ttl() > 0 => {}
            _ => return Ok(false),
        }
        let resp = self.get(LEADER, None).await?;
        Ok(resp
            .kvs()
            .first()
            .is_some_and(|kv| kv.lease() == lead.lease && kv.create_revision() == lead.created))
    }

    /// Gives the leadership up at once (the next master need not wait for
    /// the lease to expire).
    pub async fn resign(&self, lead: Leadership) {
        let mut lease = self.client().lease_client();
        let _ = self.timed(lease.revoke(lead.lease)).await;
    }

    /// Everything the scheduler plans from, at one revision of etcd: each
    /// prefix read in pages (etcd's answers are bounded in size, and a
    /// large cluster holds more than one answer carries), every page at the
    /// revision of the first.
    pub async fn scheduler_snapshot(&self) -> Result<SchedulerSnapshot, Error> {
        let (revision, app_kvs) = self.range_at(APPS, None).await?;
        let at = Some(revision);
        let mut apps = Vec::new();
        for (k, v) in app_kvs {
            apps.push(decode::<AppRecord>(&format!("{APPS}{k}"), &v)?);
        }
        let mut tasks = BTreeMap::new();
        for (k, v) in self.range_at(TASKS, at).await?.1 {
            let record = decode::<TaskRecord>(&format!("{TASKS}{k}"), &v)?;
            tasks.insert(k, record);
        }
        let mut reports = BTreeMap::new();
        for (k, v) in self.range_at(TASK_STATUS, at).await?.1 {
            let report = decode::<TaskReport>(&format!("{TASK_STATUS}{k}"), &v)?;
            reports.insert(k, report);
        }
        let mut records = Vec::new();
        for (k, v) in self.range_at(NODES, at).await?.1 {
            records.push(decode::<NodeRecord>(&format!("{NODES}{k}"), &v)?);
        }
        let mut alive = BTreeMap::new();
        for (k, v) in self.range_at(ALIVE, at).await?.1 {
            alive.insert(k.clone(), decode::<Alive>(&format!("{ALIVE}{k}"), &v)?);
        }
        let mut nodes = control::model::node_statuses(records, &alive);
        let cordons = super::CORDONS;
        let mut drained = BTreeMap::new();
        for (k, v) in self.range_at(cordons, at).await?.1 {
            drained.insert(k.clone(), decode::<Cordon>(&format!("{cordons}{k}"), &v)?);
        }
        for n in &mut nodes {
            n.cordon = drained.remove(&n.record.info.name);
        }
        let jobs = self.jobs_at(revision).await?;
        Ok(SchedulerSnapshot {
            revision,
            apps,
            tasks,
            reports,
            nodes,
            jobs,
        })
    }

    /// Every key under `prefix` (its name after the prefix) with its value,
    /// at `revision` (none: the current one, returned), in pages of
    /// [`PAGE`] keys.
    pub(super) async fn range_at(
        &self,
        prefix: &str,
        revision: Option<i64>,
    ) -> Result<(i64, Vec<(String, Vec<u8>)>), Error> {
        let end = prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        let mut rev = revision.unwrap_or(0);
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if rev > 0 {
                options = options.with_revision(rev);
            }
            let resp = self.get(start.clone(), Some(options)).await?;
            if rev == 0 {
                rev = resp.header().map_or(0, |h| h.revision());
            }
            for kv in resp.kvs() {
                let key = String::from_utf8_lossy(kv.key());
                out.push((
                    key.trim_start_matches(prefix).to_string(),
                    kv.value().to_vec(),
                ));
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok((rev, out))
    }

    /// Commits a plan's writes, fenced on `lead` and on nothing under the
    /// apps and tasks having changed after `revision` ([`EPOCH`]). Writes of more than
    /// one transaction go in several, each fenced on the revision the one
    /// before committed at. Returns whether every part was written (`false`
    /// at the first part refused: the caller plans again from a new
    /// snapshot).
    pub async fn commit_plan(
        &self,
        lead: &Leadership,
        revision: i64,
        changes: &Changes,
    ) -> Result<bool, Error> {
        let mut ops = Vec::new();
        for r in &changes.put_apps {
            ops.push(TxnOp::put(app_key(&r.spec.id), record_json(r), None));
        }
        for (id, v) in &changes.put_versions {
            ops.push(TxnOp::put(version_key(id, v.version), record_json(v), None));
        }
        for id in &changes.delete_apps {
            ops.push(TxnOp::delete(app_key(id), None));
            ops.push(TxnOp::delete(
                format!("{APP_VERSIONS}{}/", id.key()),
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            ));
        }
        for (id, t) in &changes.put_tasks {
            ops.push(TxnOp::put(format!("{TASKS}{id}"), record_json(t), None));
        }
        for id in &changes.delete_tasks {
            ops.push(TxnOp::delete(format!("{TASKS}{id}"), None));
            ops.push(TxnOp::delete(format!("{TASK_STATUS}{id}"), None));
        }
        let mut at = revision;
        for part in ops.chunks(OPS_PER_TXN) {
            let mut part = part.to_vec();
            part.push(bump_epoch());
            let txn = Txn::new()
                .when([
                    Compare::create_revision(LEADER, CompareOp::Equal, lead.created),
                    Compare::lease(LEADER, CompareOp::Equal, lead.lease),
                    Compare::mod_revision(EPOCH, CompareOp::Less, at + 1),
                ])
                .and_then(part);
            let resp = self.txn(txn).await?;
            if !resp.succeeded() {
                return Ok(false);
            }
            at = resp.header().map_or(at, |h| h.revision());
        }
        Ok(true)
    }

    /// Waits until something the scheduler plans from changes after
    /// `after`, or `wait` passes.
    pub async fn wait_scheduler_input(&self, after: i64, wait: Duration) {
        let rx = self.feed().await.sched;
        super::wait_past(rx, after, wait).await;
    }
}

#[cfg(feature = "testing")]
impl Store {
    /// Registers simulated nodes for the scheduler's bench: their records,
    /// and alive keys bound to one lease of `ttl` seconds (kept by nobody:
    /// `ttl` must outlast the bench).
    pub async fn register_simulated_nodes(
        &self,
        records: &[NodeRecord],
        ttl: i64,
        now: u64,
    ) -> Result<(), Error> {
        let lease = self.grant(ttl).await?.id();
        let alive = record_json(&Alive {
            format: Default::default(),
            lease,
            since: now,
        });
        let ops: Vec<TxnOp> = records
            .iter()
            .flat_map(|r| {
                [
                    TxnOp::put(format!("{NODES}{}", r.info.name), record_json(r), None),
                    TxnOp::put(
                        format!("{ALIVE}{}", r.info.name),
                        alive.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                ]
            })
            .collect();
        for part in ops.chunks(OPS_PER_TXN) {
            self.txn(Txn::new().and_then(part.to_vec())).await?;
        }
        Ok(())
    }

    /// How many keys start with `prefix`.
    pub async fn count_prefix(&self, prefix: &str) -> Result<i64, Error> {
        let resp = self
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await?;
        Ok(resp.count())
    }
}
