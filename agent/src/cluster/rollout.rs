//! The cluster upgrade's driver (`strata cluster upgrade`), run by the
//! scheduler's leader each round while a rollout is under way: read the
//! rollout and a snapshot of the nodes, plan with
//! `control::rollout::plan`, turn its actions into drains, upgrade orders
//! and uncordons, and commit them with the rollout in one transaction
//! fenced on the leadership and on the rollout read. A master that takes
//! over the leadership (the old leader rebooting into its new image among
//! them) goes on from what is stored.

use control::model::Cordon;
use control::rollout::{self, Action, Rollout};
use control::upgrade::{self, STALE_ORDER_SECONDS, UpgradeOrder, UpgradeRequest};

use crate::etcd::Store;
use crate::etcd::apps::Leadership;
use crate::etcd::upgrades::RolloutChanges;

/// Who the records say drained and ordered a node.
pub const BY: &str = control::rollout::DRAINED_BY;

/// One round of the rollout, if one is under way; returns whether it
/// wrote anything.
pub async fn step(store: &Store, lead: &Leadership, now: u64) -> anyhow::Result<bool> {
    let Some((stored, revision)) = store.rollout().await? else {
        return Ok(false);
    };
    if stored.halted.is_some() || rollout::is_complete(&stored) {
        return Ok(false);
    }
    let snap = store.scheduler_snapshot().await?;
    let orders = store.upgrades().await?;
    // An operator's drain is theirs: the rollout neither replaces nor
    // lifts it (the node is out of service either way).
    let drained_by_operator = |name: &str| {
        snap.nodes
            .iter()
            .find(|n| n.record.info.name == name)
            .and_then(|n| n.cordon.as_ref())
            .is_some_and(|c| c.by != BY)
    };
    let facts = rollout::facts(Some(&stored), &snap.nodes, &snap.tasks, &orders);
    let mut plan = rollout::plan(&stored, &facts, now);
    let mut changes = RolloutChanges::default();
    let mut bundles = None;
    for action in &plan.actions {
        match action {
            Action::Cordon(name) | Action::Uncordon(name) if drained_by_operator(name) => {}
            Action::Cordon(name) => changes.cordons.push((
                name.clone(),
                Cordon {
                    format: Default::default(),
                    since: now,
                    deadline: now + stored.drain_deadline_seconds,
                    by: BY.to_string(),
                },
            )),
            Action::Uncordon(name) => changes.uncordons.push(name.clone()),
            Action::Upgrade { node, version } => {
                if bundles.is_none() {
                    bundles = Some(store.bundles().await?);
                }
                let role = facts.iter().find(|f| &f.name == node).map(|f| f.role);
                // The node's last order as it is now, to fence the new one
                // on: an operator's order that comes in meanwhile is not
                // overwritten.
                let last = store.upgrade(node).await?;
                let made = match role {
                    Some(role) => order(
                        node,
                        role,
                        version,
                        bundles.as_deref().unwrap_or_default(),
                        last.as_ref().map(|(o, _)| o),
                        &plan.rollout,
                        now,
                    ),
                    None => Err(format!("node `{node}` left the cluster")),
                };
                match made {
                    Ok(o) => changes.orders.push((o, last.map(|(_, rev)| rev))),
                    Err(reason) => rollout::halt(&mut plan.rollout, node, reason, now),
                }
            }
        }
    }
    if plan.rollout == stored && changes.cordons.is_empty() && changes.uncordons.is_empty() {
        return Ok(false);
    }
    if !store
        .commit_rollout(lead, revision, &plan.rollout, &changes)
        .await?
    {
        tracing::debug!("rollout: round at revision {revision} refused: planning again");
        return Ok(false);
    }
    for a in &plan.actions {
        tracing::info!("rollout: {a}");
    }
    if let Some(h) = &plan.rollout.halted {
        tracing::warn!("rollout: halted at {}: {}", h.node, h.reason);
    }
    Ok(true)
}

/// The order that upgrades `node` to `version`, or why it cannot be made.
fn order(
    node: &str,
    role: configs::Role,
    version: &str,
    bundles: &[control::upgrade::BundleRecord],
    last: Option<&UpgradeOrder>,
    rollout: &Rollout,
    now: u64,
) -> Result<UpgradeOrder, String> {
    let req = UpgradeRequest {
        version: Some(version.to_string()),
        sha256: None,
        allow_downgrade: false,
    };
    let bundle = upgrade::pick_bundle(&req, node, role, bundles).map_err(|e| e.to_string())?;
    if let Some(last) = last
        && upgrade::busy(last, now, STALE_ORDER_SECONDS)
    {
        return Err(format!(
            "node `{node}` is still carrying out another order ({})",
            last.progress
        ));
    }
    let suffix = crate::pki::random_hex(4).map_err(|e| e.to_string())?;
    Ok(UpgradeOrder {
        format: Default::default(),
        id: format!("{now}-{suffix}"),
        node: node.to_string(),
        action: upgrade::Action::Install {
            sha256: bundle.sha256.clone(),
            version: bundle.version.clone(),
            size: bundle.size,
            allow_downgrade: false,
        },
        at: now,
        by: if rollout.by.is_empty() {
            BY.to_string()
        } else {
            format!("{BY} ({})", rollout.by)
        },
        progress: upgrade::Progress::Ordered,
        updated_at: now,
    })
}
