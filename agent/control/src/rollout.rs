//! Cluster upgrades (`strata cluster upgrade`): which node to drain,
//! upgrade and uncordon next, planned from a snapshot of the nodes and the
//! rollout's progress, which is kept in etcd so that a rollout survives the
//! restart of the master that drives it.
//!
//! The rules:
//! - masters first, one at a time, and only while every other master is
//!   Ready: the one upgrading is the only etcd member missing, so quorum
//!   holds;
//! - then agents (private, then public, each by name): each is cordoned
//!   and drained (its app instances moved by the scheduler, within the
//!   drain's deadline, [`crate::model::DEFAULT_DRAIN_DEADLINE_SECONDS`]
//!   unless the rollout says otherwise) before its
//!   upgrade and uncordoned once it is Ready on the new version; at most
//!   `max_unavailable` agents are out at once, agents that are not Ready
//!   for other reasons counted among them;
//! - the first node that fails (its new slot rolled back, or it is not
//!   Ready on the new version by the deadline) halts the rollout with the
//!   node and the reason; `--resume` tries that node again and goes on.
//!
//! Nodes already on the version are skipped; nodes that join during the
//! rollout are not part of it.

use std::collections::BTreeMap;
use std::fmt;

use configs::Role;
use serde::{Deserialize, Serialize};

use crate::format::Format;
use crate::model::{NodeState, NodeStatus, TaskRecord};
use crate::upgrade::{BundleRecord, OrderRefused, Progress, UpgradeOrder, UpgradeRequest};

/// Who a rollout's drains and orders say made them.
pub const DRAINED_BY: &str = "cluster upgrade";

/// How long a node has to come back Ready on the new version once told to
/// upgrade (writing a slot and rebooting, a fallback included).
pub const UPGRADE_DEADLINE_SECONDS: u64 = 900;

/// A rollout as stored (`/strata/rollout`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// The version every node ends on.
    pub version: String,
    pub max_unavailable: u32,
    pub drain_deadline_seconds: u64,
    /// Unix seconds of the start.
    pub started_at: u64,
    /// Who started it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub by: String,
    /// The nodes in the order they go, with their progress.
    pub nodes: Vec<NodeProgress>,
    /// Why the rollout stopped, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeProgress {
    pub name: String,
    pub role: Role,
    #[serde(flatten)]
    pub step: Step,
    /// Unix seconds the node entered its step.
    pub since: u64,
}

/// Where one node is in the rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "kebab-case")]
pub enum Step {
    Waiting,
    Draining,
    Upgrading,
    Uncordoning,
    Done,
    /// It was already on the version.
    Skipped,
    Failed {
        reason: String,
    },
    /// A step a newer master wrote.
    #[serde(other)]
    Unknown,
}

impl Step {
    /// Out of service because of the rollout.
    fn in_flight(&self) -> bool {
        matches!(self, Step::Draining | Step::Upgrading | Step::Uncordoning)
    }

    fn finished(&self) -> bool {
        matches!(self, Step::Done | Step::Skipped)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Waiting => f.write_str("waiting"),
            Step::Draining => f.write_str("draining"),
            Step::Upgrading => f.write_str("upgrading"),
            Step::Uncordoning => f.write_str("uncordoning"),
            Step::Done => f.write_str("done"),
            Step::Skipped => f.write_str("skipped (already on the version)"),
            Step::Failed { reason } => write!(f, "failed: {reason}"),
            Step::Unknown => f.write_str("unknown"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    /// The node it halted at: the one that failed, or for a cancel the
    /// first in flight (empty when none was).
    pub node: String,
    pub reason: String,
    /// Who cancelled it (`strata cluster upgrade --cancel`); `None` when a
    /// node failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_by: Option<String>,
}

/// What the planner needs to know of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub role: Role,
    pub ready: bool,
    /// The image version it runs, as it last reported it.
    pub version: String,
    /// Drained by a rollout (a drain an operator made is the operator's
    /// to lift, and the rollout neither replaces nor lifts it).
    pub cordoned: bool,
    /// App instances still on it (a drain waits for none).
    pub instances: u32,
    /// The upgrade the rollout ordered for it failed (refused, or its
    /// new slot rolled back), and why.
    pub upgrade_failed: Option<String>,
    /// The upgrade the rollout ordered for it succeeded: the node came
    /// back on the new slot and blessed it (Ready comes before the
    /// blessing, and a node can still fall back after it).
    pub upgrade_succeeded: bool,
}

/// Whether `running` is the release `target` (build metadata aside).
pub fn same_release(running: &str, target: &str) -> bool {
    let release = |v: &str| v.split('+').next().unwrap_or_default().trim().to_string();
    release(running) == release(target)
}

/// A new rollout of `version` over `nodes`: masters, private agents, then
/// public agents, each by name.
pub fn start(
    nodes: &[NodeFacts],
    version: &str,
    max_unavailable: u32,
    drain_deadline_seconds: u64,
    now: u64,
) -> Rollout {
    let rank = |r: Role| match r {
        Role::Master => 0,
        Role::Private => 1,
        Role::Public => 2,
    };
    let mut order: Vec<&NodeFacts> = nodes.iter().collect();
    order.sort_by(|a, b| (rank(a.role), &a.name).cmp(&(rank(b.role), &b.name)));
    Rollout {
        format: Format::default(),
        version: version.to_string(),
        max_unavailable: max_unavailable.max(1),
        drain_deadline_seconds,
        started_at: now,
        by: String::new(),
        nodes: order
            .into_iter()
            .map(|n| NodeProgress {
                name: n.name.clone(),
                role: n.role,
                step: Step::Waiting,
                since: now,
            })
            .collect(),
        halted: None,
    }
}

/// One thing to do to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Cordon(String),
    /// Tell the node to install `version` and reboot into it.
    Upgrade {
        node: String,
        version: String,
    },
    Uncordon(String),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Cordon(n) => write!(f, "cordon {n}"),
            Action::Upgrade { node, version } => write!(f, "upgrade {node} to {version}"),
            Action::Uncordon(n) => write!(f, "uncordon {n}"),
        }
    }
}

/// The next round: the actions to carry out and the rollout to store with
/// them (in one transaction over the revision it was read at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub rollout: Rollout,
}

/// Plans the next round of `rollout` over `nodes` at `now`.
pub fn plan(rollout: &Rollout, nodes: &[NodeFacts], now: u64) -> Plan {
    let mut r = rollout.clone();
    let mut actions = Vec::new();
    if r.halted.is_some() {
        return Plan {
            actions,
            rollout: r,
        };
    }
    let facts: BTreeMap<&str, &NodeFacts> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let target = r.version.clone();
    // Move the nodes under way along.
    for i in 0..r.nodes.len() {
        let p = &r.nodes[i];
        let Some(n) = facts.get(p.name.as_str()) else {
            if p.step.in_flight() {
                let reason = format!("the node {} left the cluster during its upgrade", p.name);
                fail(&mut r, i, reason, now);
                return Plan {
                    actions,
                    rollout: r,
                };
            }
            continue;
        };
        let on_target = n.ready && same_release(&n.version, &target) && n.upgrade_succeeded;
        let next = match &p.step {
            Step::Draining if n.instances == 0 || now >= p.since + r.drain_deadline_seconds => {
                actions.push(Action::Upgrade {
                    node: n.name.clone(),
                    version: target.clone(),
                });
                Some(Step::Upgrading)
            }
            Step::Upgrading if on_target => {
                if n.role == Role::Master {
                    Some(Step::Done)
                } else {
                    actions.push(Action::Uncordon(n.name.clone()));
                    Some(Step::Uncordoning)
                }
            }
            Step::Upgrading => {
                if let Some(why) = &n.upgrade_failed {
                    fail(&mut r, i, format!("its upgrade failed: {why}"), now);
                    return Plan {
                        actions,
                        rollout: r,
                    };
                }
                if now >= p.since + UPGRADE_DEADLINE_SECONDS {
                    let reason = format!(
                        "not Ready on {target} {UPGRADE_DEADLINE_SECONDS}s after its upgrade began (it runs {}, {})",
                        n.version,
                        if n.ready { "Ready" } else { "not Ready" }
                    );
                    fail(&mut r, i, reason, now);
                    return Plan {
                        actions,
                        rollout: r,
                    };
                }
                None
            }
            Step::Uncordoning if !n.cordoned => Some(Step::Done),
            Step::Uncordoning => {
                // The uncordon may not have landed: ask again.
                actions.push(Action::Uncordon(n.name.clone()));
                None
            }
            _ => None,
        };
        if let Some(step) = next {
            r.nodes[i].step = step;
            r.nodes[i].since = now;
        }
    }
    // Start the next nodes: masters first, then the agents an earlier
    // rollout left drained (already out of service: a rollout that
    // replaced a cancelled one finishes them before it drains more), then
    // the others, each group in the rollout's order.
    let mut order: Vec<usize> = (0..r.nodes.len()).collect();
    order.sort_by_key(|&i| {
        let p = &r.nodes[i];
        let drained = facts.get(p.name.as_str()).is_some_and(|n| n.cordoned);
        (p.role != Role::Master, !drained)
    });
    for i in order {
        if r.nodes[i].step != Step::Waiting {
            continue;
        }
        let name = r.nodes[i].name.clone();
        let Some(n) = facts.get(name.as_str()) else {
            // Gone before its turn: nothing to upgrade.
            r.nodes[i].step = Step::Skipped;
            r.nodes[i].since = now;
            continue;
        };
        if n.ready && same_release(&n.version, &target) {
            // Still drained by an earlier round (a halted rollout resumed
            // or replaced): put back into service first.
            if n.cordoned {
                actions.push(Action::Uncordon(name.clone()));
                r.nodes[i].step = Step::Uncordoning;
            } else {
                r.nodes[i].step = Step::Skipped;
            }
            r.nodes[i].since = now;
            continue;
        }
        let masters_left = r
            .nodes
            .iter()
            .any(|p| p.role == Role::Master && !p.step.finished());
        if n.role == Role::Master {
            // One master at a time, while every other one is Ready.
            let busy = r
                .nodes
                .iter()
                .any(|p| p.role == Role::Master && p.step.in_flight());
            let others_ready = nodes
                .iter()
                .filter(|m| m.role == Role::Master && m.name != name)
                .all(|m| m.ready);
            if busy || !others_ready {
                break;
            }
            actions.push(Action::Upgrade {
                node: name.clone(),
                version: target.clone(),
            });
            r.nodes[i].step = Step::Upgrading;
            r.nodes[i].since = now;
            break;
        }
        if masters_left {
            break;
        }
        // Agents out of service: the rollout's, those not Ready, and
        // those an earlier rollout drained.
        let out = nodes
            .iter()
            .filter(|m| m.role != Role::Master)
            .filter(|m| {
                !m.ready
                    || m.cordoned
                    || r.nodes
                        .iter()
                        .any(|p| p.name == m.name && p.step.in_flight())
            })
            .count() as u32;
        // This node counts once, whether it is out already or not.
        let out = out - u32::from(!n.ready || n.cordoned);
        if out >= r.max_unavailable {
            break;
        }
        actions.push(Action::Cordon(name.clone()));
        r.nodes[i].step = Step::Draining;
        r.nodes[i].since = now;
    }
    Plan {
        actions,
        rollout: r,
    }
}

/// Halts `rollout` at node `node` (a node the planner told to upgrade,
/// whose order could not be made) with `reason`.
pub fn halt(rollout: &mut Rollout, node: &str, reason: String, now: u64) {
    if let Some(i) = rollout.nodes.iter().position(|p| p.name == node) {
        fail(rollout, i, reason, now);
    }
}

fn fail(r: &mut Rollout, i: usize, reason: String, now: u64) {
    r.halted = Some(Halt {
        node: r.nodes[i].name.clone(),
        reason: reason.clone(),
        cancelled_by: None,
    });
    r.nodes[i].step = Step::Failed { reason };
    r.nodes[i].since = now;
}

/// `--resume`: the halted node waits for its turn again, and the rollout
/// goes on.
pub fn resume(rollout: &Rollout, now: u64) -> Rollout {
    let mut r = rollout.clone();
    r.halted = None;
    for p in &mut r.nodes {
        if matches!(p.step, Step::Failed { .. }) {
            p.step = Step::Waiting;
            p.since = now;
        }
    }
    r
}

/// `--cancel` over what is stored: the rollout under way halted by `by`,
/// or why not (none was started, or it already halted or finished). No
/// node is failed: a node upgrading finishes its own upgrade, a drained
/// one stays drained, and `--resume` goes on from where it stopped. Pure.
pub fn cancel_stored(current: Option<&Rollout>, by: &str) -> Result<Rollout, RolloutRefused> {
    let Some(r) = current else {
        return Err(RolloutRefused::NothingToCancel);
    };
    if r.halted.is_some() || is_complete(r) {
        return Err(RolloutRefused::NotUnderWay(r.version.clone()));
    }
    let mut r = r.clone();
    let node = r
        .nodes
        .iter()
        .find(|p| p.step.in_flight())
        .map(|p| p.name.clone())
        .unwrap_or_default();
    r.halted = Some(Halt {
        node,
        reason: format!("cancelled by {by}"),
        cancelled_by: Some(by.to_string()),
    });
    Ok(r)
}

/// `POST /v1/rollout`: start a cluster upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRequest {
    /// The version every node ends on (`0.2.0` names `0.2.0+g1a2b3c`).
    pub version: String,
    /// The most agents out of service at once.
    #[serde(default = "one")]
    pub max_unavailable: u32,
    /// Seconds a drained agent's app instances have to move before it is
    /// upgraded anyway; [`crate::model::DEFAULT_DRAIN_DEADLINE_SECONDS`]
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline_seconds: Option<u64>,
    /// Only the nodes of these roles (every node when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}

fn one() -> u32 {
    1
}

/// Why a cluster upgrade cannot start or resume.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutRefused {
    #[error(
        "a cluster upgrade to {version} is under way ({done} of {total} nodes done): wait for it to end; `strata cluster upgrade --status` shows it"
    )]
    UnderWay {
        version: String,
        done: usize,
        total: usize,
    },
    #[error("--max-unavailable must be at least 1")]
    NoneUnavailable,
    #[error("name the version to upgrade to")]
    NoVersion,
    #[error(
        "a drain deadline of {0}s is longer than the {max}s a drain may wait",
        max = crate::model::MAX_DRAIN_DEADLINE_SECONDS
    )]
    DrainTooLong(u64),
    #[error("no node{} to upgrade", roles_text(.0))]
    NoNodes(Vec<Role>),
    #[error("{nodes} cannot upgrade: {reason}")]
    NoBundle { nodes: String, reason: OrderRefused },
    #[error("no cluster upgrade was started: `strata cluster upgrade --version V` starts one")]
    NothingToResume,
    #[error(
        "the cluster upgrade to {0} has not halted: nothing to resume; `strata cluster upgrade --status` shows it"
    )]
    NotHalted(String),
    #[error("no cluster upgrade was started: nothing to cancel")]
    NothingToCancel,
    #[error(
        "the cluster upgrade to {0} is not under way (it halted or finished): nothing to cancel; `strata cluster upgrade --status` shows it"
    )]
    NotUnderWay(String),
}

fn roles_text(roles: &[Role]) -> String {
    if roles.is_empty() {
        return String::new();
    }
    let names: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
    format!(" of role {}", names.join(" or "))
}

/// A new rollout for `req` over `nodes` by `by`, or why not: another one
/// is under way (a halted or finished one is replaced), no node is of the
/// roles asked, or the masters hold no bundle of the version for a role
/// that has nodes to upgrade. Pure.
pub fn begin(
    req: &RolloutRequest,
    current: Option<&Rollout>,
    nodes: &[NodeFacts],
    bundles: &[BundleRecord],
    by: &str,
    now: u64,
) -> Result<Rollout, RolloutRefused> {
    if let Some(c) = current
        && c.halted.is_none()
        && !is_complete(c)
    {
        return Err(RolloutRefused::UnderWay {
            version: c.version.clone(),
            done: c.nodes.iter().filter(|p| p.step.finished()).count(),
            total: c.nodes.len(),
        });
    }
    if req.version.trim().is_empty() {
        return Err(RolloutRefused::NoVersion);
    }
    if req.max_unavailable == 0 {
        return Err(RolloutRefused::NoneUnavailable);
    }
    if let Some(d) = req.drain_deadline_seconds
        && d > crate::model::MAX_DRAIN_DEADLINE_SECONDS
    {
        return Err(RolloutRefused::DrainTooLong(d));
    }
    let chosen: Vec<NodeFacts> = nodes
        .iter()
        .filter(|n| req.roles.is_empty() || req.roles.contains(&n.role))
        .cloned()
        .collect();
    if chosen.is_empty() {
        return Err(RolloutRefused::NoNodes(req.roles.clone()));
    }
    // Every role with a node to upgrade needs a bundle of the version.
    let order = UpgradeRequest {
        version: Some(req.version.clone()),
        sha256: None,
        allow_downgrade: false,
    };
    let mut missing: BTreeMap<Role, (Vec<&str>, OrderRefused)> = BTreeMap::new();
    for n in &chosen {
        if n.ready && same_release(&n.version, &req.version) {
            continue;
        }
        if let Err(e) = crate::upgrade::pick_bundle(&order, &n.name, n.role, bundles) {
            missing
                .entry(n.role)
                .or_insert((Vec::new(), e))
                .0
                .push(&n.name);
        }
    }
    if let Some((_, (names, reason))) = missing.into_iter().next() {
        let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
        return Err(RolloutRefused::NoBundle {
            nodes: format!(
                "{} {}",
                if names.len() == 1 { "node" } else { "nodes" },
                quoted.join(", ")
            ),
            reason,
        });
    }
    let mut r = start(
        &chosen,
        &req.version,
        req.max_unavailable,
        req.drain_deadline_seconds
            .unwrap_or(crate::model::DEFAULT_DRAIN_DEADLINE_SECONDS),
        now,
    );
    r.by = by.to_string();
    Ok(r)
}

/// `--resume` over what is stored: the halted rollout going on, or why
/// not.
pub fn resume_stored(current: Option<&Rollout>, now: u64) -> Result<Rollout, RolloutRefused> {
    match current {
        None => Err(RolloutRefused::NothingToResume),
        Some(r) if r.halted.is_none() => Err(RolloutRefused::NotHalted(r.version.clone())),
        Some(r) => Ok(resume(r, now)),
    }
}

/// What the planner knows of each node, from the records: whether it is
/// Ready, the version it reports, whether it is drained, the app
/// instances still placed on it, and whether the upgrade that `rollout`
/// ordered for it failed (an order made before the node's current step
/// is not the rollout's, and does not count). Pure.
pub fn facts(
    rollout: Option<&Rollout>,
    nodes: &[NodeStatus],
    tasks: &BTreeMap<String, TaskRecord>,
    orders: &BTreeMap<String, UpgradeOrder>,
) -> Vec<NodeFacts> {
    nodes
        .iter()
        .map(|n| {
            let name = &n.record.info.name;
            let since = rollout
                .iter()
                .flat_map(|r| &r.nodes)
                .find(|p| &p.name == name && p.step == Step::Upgrading)
                .map(|p| p.since);
            let own = match (since, orders.get(name)) {
                (Some(since), Some(o)) if o.at >= since => Some(&o.progress),
                _ => None,
            };
            let upgrade_failed = match own {
                Some(Progress::Failed { reason }) => Some(reason.clone()),
                _ => None,
            };
            NodeFacts {
                name: name.clone(),
                role: n.record.info.role,
                ready: n.state == NodeState::Ready,
                version: n
                    .record
                    .info
                    .image
                    .as_ref()
                    .map(|i| i.version.clone())
                    .unwrap_or_default(),
                cordoned: n.cordon.as_ref().is_some_and(|c| c.by == DRAINED_BY),
                instances: tasks
                    .values()
                    .filter(|t| &t.node == name && t.instance_of.is_some())
                    .count() as u32,
                upgrade_failed,
                upgrade_succeeded: own == Some(&Progress::Succeeded),
            }
        })
        .collect()
}

/// Whether every node is done or skipped.
pub fn is_complete(rollout: &Rollout) -> bool {
    rollout.nodes.iter().all(|p| p.step.finished())
}

#[cfg(test)]
mod tests;
