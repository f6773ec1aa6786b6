//! Placement: which node runs the next instance of an app. Pure, over one
//! [`Snapshot`] of the cluster (the nodes with what they can give, and
//! what is already placed on them), in the manner of Nomad's scheduler:
//! [`feasible`] says whether a node may take an instance (its state and
//! role, the app's constraints, free resources and host ports) and why
//! not; [`rank`] orders the nodes that may (bin-packing by default,
//! spreading on request); a [`Placer`] places instance after instance,
//! counting each placement against the nodes so that a plan never
//! oversubscribes one.

pub mod feasible;
pub mod rank;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::app::{AgentRole, AppId, AppSpec};
use feasible::Refusal;

/// The host ports the scheduler assigns from, as Marathon's agents offer
/// them.
pub const PORT_RANGE: (u16, u16) = (10000, 20000);

/// What a task uses or a node can give: thousandths of a core, MiB of
/// memory and of disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_milli: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

impl Resources {
    /// What one instance of `app` asks for (fractions rounded up).
    pub fn of(app: &AppSpec) -> Resources {
        Resources {
            cpu_milli: (app.cpus * 1000.0).ceil() as u64,
            mem_mib: app.mem.ceil() as u64,
            disk_mib: app.disk.ceil() as u64,
        }
    }

    fn add(&mut self, r: Resources) {
        self.cpu_milli += r.cpu_milli;
        self.mem_mib += r.mem_mib;
        self.disk_mib += r.disk_mib;
    }

    fn sub(&mut self, r: Resources) {
        self.cpu_milli = self.cpu_milli.saturating_sub(r.cpu_milli);
        self.mem_mib = self.mem_mib.saturating_sub(r.mem_mib);
        self.disk_mib = self.disk_mib.saturating_sub(r.disk_mib);
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub name: String,
    pub role: AgentRole,
    /// Heartbeats arrive: only ready nodes take new instances.
    pub ready: bool,
    /// What the node registered (`rack = "r1"`, ...); `hostname` is its
    /// name.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// What tasks may use: the node's resources less the system's reserve.
    pub allocatable: Resources,
    /// Drained by an operator: it takes no new instances.
    #[serde(default)]
    pub cordoned: bool,
}

impl NodeView {
    /// The node's value of a constraint's field: `hostname` (or
    /// `@hostname`) is its name, anything else an attribute.
    pub fn value(&self, field: &str) -> Option<&str> {
        match field {
            "hostname" | "@hostname" => Some(&self.name),
            f => self
                .attributes
                .get(f.strip_prefix('@').unwrap_or(f))
                .map(String::as_str),
        }
    }
}

/// Something placed on a node: a task, or an instance planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alloc {
    pub node: String,
    /// The app it is an instance of (none for a pinned task).
    #[serde(default)]
    pub app: Option<AppId>,
    pub resources: Resources,
    #[serde(default)]
    pub host_ports: Vec<u16>,
}

/// The cluster as one revision of etcd shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub nodes: Vec<NodeView>,
    pub allocs: Vec<Alloc>,
}

/// How instances are spread over the nodes that may take them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Fill the fullest node first, leaving whole nodes free for large
    /// tasks.
    #[default]
    BinPack,
    /// The node with the fewest instances of the app first, then the
    /// emptiest.
    Spread,
}

/// Where one instance goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub node: String,
    /// The node's ports for the app's ports that have one, in the app's
    /// order (`None` for a port without a host port).
    pub host_ports: Vec<Option<u16>>,
}

/// Why no node could take an instance: each reason with how many nodes
/// gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaceable {
    pub app: AppId,
    /// (reason, nodes), most nodes first.
    pub reasons: Vec<(String, usize)>,
}

impl Unplaceable {
    /// Why, after "no node can take …": each reason with its count of
    /// nodes, or that the cluster has no agent.
    pub fn why(&self) -> String {
        if self.reasons.is_empty() {
            return "the cluster has no agent".into();
        }
        let parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(why, n)| format!("{why} ({n} node{})", if *n == 1 { "" } else { "s" }))
            .collect();
        parts.join("; ")
    }
}

impl fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no node can take an instance of {}: {}",
            self.app,
            self.why()
        )
    }
}

/// What a node holds, as placements go on.
#[derive(Debug, Clone, Default)]
struct Usage {
    used: Resources,
    ports: BTreeSet<u16>,
    /// Instances per app.
    apps: BTreeMap<AppId, usize>,
}

/// Places instances one at a time on a snapshot, counting each against
/// its node.
#[derive(Debug, Clone)]
pub struct Placer {
    nodes: Vec<NodeView>,
    usage: Vec<Usage>,
    index: BTreeMap<String, usize>,
    /// Where the next bin-packing scan starts, so that equal nodes take
    /// turns.
    cursor: usize,
}

impl Placer {
    pub fn new(snapshot: &Snapshot) -> Placer {
        let mut nodes: Vec<NodeView> = snapshot
            .nodes
            .iter()
            .filter(|n| matches!(n.role, AgentRole::Private | AgentRole::Public))
            .cloned()
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let index: BTreeMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut usage = vec![Usage::default(); nodes.len()];
        for alloc in &snapshot.allocs {
            if let Some(&i) = index.get(&alloc.node) {
                usage[i].record(alloc);
            }
        }
        Placer {
            nodes,
            usage,
            index,
            cursor: 0,
        }
    }

    /// The nodes, by name.
    pub fn nodes(&self) -> &[NodeView] {
        &self.nodes
    }

    /// How many instances of `app` a node holds now.
    pub fn count(&self, node: &str, app: &AppId) -> usize {
        self.index
            .get(node)
            .and_then(|&i| self.usage[i].apps.get(app).copied())
            .unwrap_or(0)
    }

    /// Counts an instance (or a pinned task) against its node.
    pub fn add(&mut self, alloc: &Alloc) {
        if let Some(&i) = self.index.get(&alloc.node) {
            self.usage[i].record(alloc);
        }
    }

    /// Gives back what an instance held (one that is stopped in the plan).
    pub fn remove(&mut self, alloc: &Alloc) {
        if let Some(&i) = self.index.get(&alloc.node) {
            let u = &mut self.usage[i];
            u.used.sub(alloc.resources);
            for p in &alloc.host_ports {
                u.ports.remove(p);
            }
            if let Some(app) = &alloc.app
                && let Some(n) = u.apps.get_mut(app)
            {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Places one instance of `app` and counts it, or says why no node
    /// may take it.
    pub fn place(&mut self, app: &AppSpec, strategy: Strategy) -> Result<Placement, Unplaceable> {
        let want = Resources::of(app);
        // Only constraints need the app's instances per node (a scan of
        // every node, which placements without constraints skip).
        let values = if app.constraints.is_empty() {
            feasible::ValueCounts::default()
        } else {
            feasible::ValueCounts::new(app, &self.nodes, &self.usage_apps(&app.id))
        };
        let n = self.nodes.len();
        // Bin-packing looks at a few feasible nodes from a moving start
        // (Nomad's limit: at least 2, log2 of the nodes), which keeps a
        // placement's cost flat as the cluster grows; spreading, and
        // spreading constraints, compare every node.
        let limit = match strategy {
            Strategy::BinPack if !feasible::spreads(app) => {
                (usize::BITS - n.leading_zeros()).max(2) as usize
            }
            _ => usize::MAX,
        };
        let mut refusals: BTreeMap<Refusal, usize> = BTreeMap::new();
        let mut best: Option<(rank::Score, usize, Vec<Option<u16>>)> = None;
        let mut feasible_seen = 0;
        for k in 0..n {
            let i = (self.cursor + k) % n;
            let node = &self.nodes[i];
            let usage = &self.usage[i];
            let ports = match feasible::check(app, want, node, &usage.used, &usage.ports, &values) {
                Ok(ports) => ports,
                Err(refusal) => {
                    *refusals.entry(refusal).or_default() += 1;
                    continue;
                }
            };
            let score = rank::score(strategy, node, &usage.used, want, usage.apps.get(&app.id));
            if best.as_ref().is_none_or(|(s, j, _)| {
                score > *s || (score == *s && node.name < self.nodes[*j].name)
            }) {
                best = Some((score, i, ports));
            }
            feasible_seen += 1;
            if feasible_seen >= limit {
                break;
            }
        }
        let Some((_, i, host_ports)) = best else {
            let mut reasons: Vec<(String, usize)> = refusals
                .into_iter()
                .map(|(r, count)| (r.describe(app, want), count))
                .collect();
            reasons.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            return Err(Unplaceable {
                app: app.id.clone(),
                reasons,
            });
        };
        self.cursor = (i + 1) % n.max(1);
        let alloc = Alloc {
            node: self.nodes[i].name.clone(),
            app: Some(app.id.clone()),
            resources: want,
            host_ports: host_ports.iter().flatten().copied().collect(),
        };
        self.usage[i].record(&alloc);
        Ok(Placement {
            node: alloc.node,
            host_ports,
        })
    }

    /// Instances of `app` per node, in node order.
    fn usage_apps(&self, app: &AppId) -> Vec<usize> {
        self.usage
            .iter()
            .map(|u| u.apps.get(app).copied().unwrap_or(0))
            .collect()
    }
}

impl Usage {
    fn record(&mut self, alloc: &Alloc) {
        self.used.add(alloc.resources);
        self.ports.extend(alloc.host_ports.iter().copied());
        if let Some(app) = &alloc.app {
            *self.apps.entry(app.clone()).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests;
