//! The records of node upgrades: the bundles the masters hold
//! (`/strata/bundles/<sha256>`, [`BundleRecord`]), each node's last
//! upgrade or rollback order with its progress (`/strata/upgrades/<node>`,
//! [`UpgradeOrder`]) and the cluster upgrade (`/strata/rollout`,
//! [`Rollout`]). Every change is a transaction fenced on what was
//! read, so two masters adding themselves as holders, or a node reporting
//! while an operator orders again, never lose a write; the scheduler's
//! leader commits a round of the cluster upgrade with its drains, orders
//! and uncordons in one transaction, fenced on its leadership too.

use std::collections::BTreeMap;

use control::model::Cordon;
use control::rollout::Rollout;
use control::upgrade::{BundleRecord, ProgressReport, UpgradeOrder};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::apps::{LEADER, Leadership, bump_epoch};
use super::{CORDONS, Error, NODES, Store, decode, record_json};

pub(super) const BUNDLES: &str = "/strata/bundles/";
pub(super) const UPGRADES: &str = "/strata/upgrades/";
pub(super) const ROLLOUT: &str = "/strata/rollout";

/// What one round of a cluster upgrade writes beside the rollout.
#[derive(Debug, Default)]
pub struct RolloutChanges {
    /// Nodes to drain.
    pub cordons: Vec<(String, Cordon)>,
    /// Nodes to put back into service.
    pub uncordons: Vec<String>,
    /// Upgrade orders, each replacing its node's last, which was read at
    /// the revision beside it (`None`: it had none).
    pub orders: Vec<(UpgradeOrder, Option<i64>)>,
}

/// How many times a fenced read-modify-write is tried before giving up.
const TRIES: usize = 10;

impl Store {
    /// Records that master `holder` holds the bundle `record` describes
    /// (creating the record, or adding the holder to it).
    pub async fn add_bundle(&self, record: &BundleRecord, holder: &str) -> Result<(), Error> {
        let key = format!("{BUNDLES}{}", record.sha256);
        for _ in 0..TRIES {
            let resp = self.get(key.clone(), None).await?;
            let read = resp.kvs().first();
            let mut new = match read {
                Some(kv) => decode::<BundleRecord>(&key, kv.value())?,
                None => record.clone(),
            };
            if new.holders.iter().any(|h| h == holder) {
                return Ok(());
            }
            new.holders.push(holder.to_string());
            new.holders.sort();
            let fence = match read {
                Some(kv) => Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision()),
                None => Compare::version(key.clone(), CompareOp::Equal, 0),
            };
            let txn = Txn::new().when([fence]).and_then([TxnOp::put(
                key.clone(),
                record_json(&new),
                None,
            )]);
            if self.txn(txn).await?.succeeded() {
                return Ok(());
            }
        }
        Err(Error::Conflict {
            what: format!("recording bundle {}", record.sha256),
            attempts: TRIES as u32,
        })
    }

    /// Every bundle the masters hold, by digest. One that does not parse
    /// is left out and logged.
    pub async fn bundles(&self) -> Result<Vec<BundleRecord>, Error> {
        let mut out = Vec::new();
        for (key, value) in self.list_prefix(BUNDLES).await? {
            match decode::<BundleRecord>(&key, value.as_bytes()) {
                Ok(b) => out.push(b),
                Err(e) => tracing::warn!("etcd: bundle record left out: {e}"),
            }
        }
        Ok(out)
    }

    /// Orders node `order.node` to upgrade or roll back, replacing its
    /// last order, only while the node exists and its last order is still
    /// the one read at `last` (`None`: it had none). Returns whether it
    /// was written.
    pub async fn put_upgrade(
        &self,
        order: &UpgradeOrder,
        last: Option<i64>,
    ) -> Result<bool, Error> {
        let key = format!("{UPGRADES}{}", order.node);
        let fence = match last {
            Some(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, rev),
            None => Compare::version(key.clone(), CompareOp::Equal, 0),
        };
        let txn = Txn::new()
            .when([
                Compare::version(format!("{NODES}{}", order.node), CompareOp::Greater, 0),
                fence,
            ])
            .and_then([TxnOp::put(key, record_json(order), None)]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Node `node`'s last order with the revision it was written at.
    pub async fn upgrade(&self, node: &str) -> Result<Option<(UpgradeOrder, i64)>, Error> {
        let key = format!("{UPGRADES}{node}");
        let resp = self.get(key.clone(), None).await?;
        resp.kvs()
            .first()
            .map(|kv| Ok((decode(&key, kv.value())?, kv.mod_revision())))
            .transpose()
    }

    /// Every node's last order.
    pub async fn upgrades(&self) -> Result<BTreeMap<String, UpgradeOrder>, Error> {
        self.decode_prefix(UPGRADES).await
    }

    /// Records a node's report on its order, only while that order is
    /// still its last (a report on an order replaced since is dropped).
    /// Returns whether it was recorded.
    pub async fn report_upgrade(
        &self,
        node: &str,
        report: &ProgressReport,
        now: u64,
    ) -> Result<bool, Error> {
        for _ in 0..TRIES {
            let Some((mut order, rev)) = self.upgrade(node).await? else {
                return Ok(false);
            };
            if order.id != report.id {
                return Ok(false);
            }
            order.progress = report.progress.clone();
            order.updated_at = now;
            let key = format!("{UPGRADES}{node}");
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                .and_then([TxnOp::put(key, record_json(&order), None)]);
            if self.txn(txn).await?.succeeded() {
                return Ok(true);
            }
        }
        Err(Error::Conflict {
            what: format!("recording the upgrade progress of node `{node}`"),
            attempts: TRIES as u32,
        })
    }

    /// The cluster upgrade, with the revision it was written at.
    pub async fn rollout(&self) -> Result<Option<(Rollout, i64)>, Error> {
        let resp = self.get(ROLLOUT, None).await?;
        resp.kvs()
            .first()
            .map(|kv| Ok((decode(ROLLOUT, kv.value())?, kv.mod_revision())))
            .transpose()
    }

    /// Stores an operator's start or resume of a cluster upgrade, only
    /// while the stored one is still the one read at `last` (`None`: there
    /// was none). Returns whether it was written.
    pub async fn put_rollout(&self, rollout: &Rollout, last: Option<i64>) -> Result<bool, Error> {
        let fence = match last {
            Some(rev) => Compare::mod_revision(ROLLOUT, CompareOp::Equal, rev),
            None => Compare::version(ROLLOUT, CompareOp::Equal, 0),
        };
        let txn =
            Txn::new()
                .when([fence])
                .and_then([TxnOp::put(ROLLOUT, record_json(rollout), None)]);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Commits one round of the cluster upgrade: `rollout` as planned,
    /// with its drains, orders and uncordons, fenced on `lead`, on the
    /// rollout being the one read at `revision`, and on each ordered node
    /// still existing with the last order read. Returns whether it was
    /// written (`false`: an operator changed the rollout or ordered a
    /// node meanwhile, a node left, or the leadership is gone; the next
    /// round plans again).
    pub async fn commit_rollout(
        &self,
        lead: &Leadership,
        revision: i64,
        rollout: &Rollout,
        changes: &RolloutChanges,
    ) -> Result<bool, Error> {
        let mut ops = vec![TxnOp::put(ROLLOUT, record_json(rollout), None)];
        for (name, cordon) in &changes.cordons {
            ops.push(TxnOp::put(
                format!("{CORDONS}{name}"),
                record_json(cordon),
                None,
            ));
        }
        for name in &changes.uncordons {
            ops.push(TxnOp::delete(format!("{CORDONS}{name}"), None));
        }
        let mut fences = vec![
            Compare::create_revision(LEADER, CompareOp::Equal, lead.created),
            Compare::lease(LEADER, CompareOp::Equal, lead.lease),
            Compare::mod_revision(ROLLOUT, CompareOp::Equal, revision),
        ];
        for (order, last) in &changes.orders {
            let key = format!("{UPGRADES}{}", order.node);
            fences.push(match last {
                Some(rev) => Compare::mod_revision(key.clone(), CompareOp::Equal, *rev),
                None => Compare::version(key.clone(), CompareOp::Equal, 0),
            });
            fences.push(Compare::version(
                format!("{NODES}{}", order.node),
                CompareOp::Greater,
                0,
            ));
            ops.push(TxnOp::put(key, record_json(order), None));
        }
        if !changes.cordons.is_empty() || !changes.uncordons.is_empty() {
            ops.push(bump_epoch());
        }
        let txn = Txn::new().when(fences).and_then(ops);
        Ok(self.txn(txn).await?.succeeded())
    }
}
