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
    pub node: String,
    pub reason: String,
}

/// What the planner needs to know of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub role: Role,
    pub ready: bool,
    /// The image version it runs, as it last reported it.
    pub version: String,
    pub cordoned: bool,
    /// App instances still on it (a drain waits for none).
    pub instances: u32,
    /// Its last upgrade ended with its new slot rolled back, and why.
    pub rolled_back: Option<String>,
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
        let on_target = n.ready && same_release(&n.version, &target);
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
                if let Some(why) = &n.rolled_back {
                    fail(
                        &mut r,
                        i,
                        format!("its new slot was rolled back: {why}"),
                        now,
                    );
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
    // Start the next nodes.
    for i in 0..r.nodes.len() {
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
            r.nodes[i].step = Step::Skipped;
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
        // Agents out of service: the rollout's, and those not Ready.
        let out = nodes
            .iter()
            .filter(|m| m.role != Role::Master)
            .filter(|m| {
                !m.ready
                    || r.nodes
                        .iter()
                        .any(|p| p.name == m.name && p.step.in_flight())
            })
            .count() as u32;
        // This node counts once, whether it is Ready or not.
        let out = out - u32::from(!n.ready);
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

fn fail(r: &mut Rollout, i: usize, reason: String, now: u64) {
    r.halted = Some(Halt {
        node: r.nodes[i].name.clone(),
        reason: reason.clone(),
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

/// Whether every node is done or skipped.
pub fn is_complete(rollout: &Rollout) -> bool {
    rollout.nodes.iter().all(|p| p.step.finished())
}

#[cfg(test)]
mod tests;
