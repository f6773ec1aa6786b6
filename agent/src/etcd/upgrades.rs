//! The records of node upgrades: the bundles the masters hold
//! (`/strata/bundles/<sha256>`, [`BundleRecord`]) and each node's last
//! upgrade or rollback order with its progress (`/strata/upgrades/<node>`,
//! [`UpgradeOrder`]). Every change is a transaction fenced on what was
//! read, so two masters adding themselves as holders, or a node reporting
//! while an operator orders again, never lose a write.

use std::collections::BTreeMap;

use control::upgrade::{BundleRecord, ProgressReport, UpgradeOrder};
use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::{Error, NODES, Store, decode, record_json};

pub(super) const BUNDLES: &str = "/strata/bundles/";
pub(super) const UPGRADES: &str = "/strata/upgrades/";

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
}
