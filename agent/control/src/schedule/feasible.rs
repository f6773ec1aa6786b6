//! Whether a node may take one more instance of an app, and if not, why:
//! checked in the order an operator would look (the node's state, its
//! role, the app's constraints, then what is free on it), the first
//! failure being the reason.

use std::collections::{BTreeMap, BTreeSet};

use super::{NodeView, PORT_RANGE, Resources};
use crate::app::{AgentRole, AppSpec, Operator, full_match};

/// Why a node cannot take an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    NotReady,
    Cordoned,
    Role,
    /// The app's constraint at this index.
    Constraint(usize),
    Cpus,
    Mem,
    Disk,
    /// This fixed host port is taken.
    Port(u16),
    /// The node's range has no free port left to assign.
    NoFreePort,
}

impl Refusal {
    /// The reason, for "<reason> (N nodes)".
    pub fn describe(self, app: &AppSpec, want: Resources) -> String {
        match self {
            Refusal::NotReady => "not ready".into(),
            Refusal::Cordoned => "drained (`strata node uncordon` puts it back)".into(),
            Refusal::Role => {
                let roles: Vec<&str> = app
                    .roles()
                    .iter()
                    .map(|r| match r {
                        AgentRole::Public => "public",
                        _ => "private",
                    })
                    .collect();
                format!("not a {} agent", roles.join(" or "))
            }
            Refusal::Constraint(i) => match app.constraints.get(i) {
                Some(c) => format!("refused by constraint {c}"),
                None => "refused by a constraint".into(),
            },
            Refusal::Cpus => format!("too few free cpus for {}", want.cpu_milli as f64 / 1000.0),
            Refusal::Mem => format!("too little free memory for {} MiB", want.mem_mib),
            Refusal::Disk => format!("too little free disk for {} MiB", want.disk_mib),
            Refusal::Port(p) => format!("host port {p} taken"),
            Refusal::NoFreePort => format!(
                "no free host port left in {}-{}",
                PORT_RANGE.0, PORT_RANGE.1
            ),
        }
    }
}

/// Whether the app's placement compares every node (its constraints
/// spread instances over values).
pub fn spreads(app: &AppSpec) -> bool {
    app.constraints
        .iter()
        .any(|c| matches!(c.operator, Operator::GroupBy))
}

/// For each of the app's constraints, its instances per value of the
/// constraint's field, and the values the cluster's nodes have.
#[derive(Default)]
pub struct ValueCounts {
    per: Vec<(BTreeMap<String, usize>, BTreeSet<String>)>,
    /// CLUSTER without a value: the value of the first instance's node.
    first: Vec<Option<String>>,
    regex: Vec<Option<regex::Regex>>,
}

impl ValueCounts {
    /// `counts[i]` is the app's instances on `nodes[i]`.
    pub fn new(app: &AppSpec, nodes: &[NodeView], counts: &[usize]) -> ValueCounts {
        let mut per = Vec::new();
        let mut first = Vec::new();
        let mut regex = Vec::new();
        for c in &app.constraints {
            let mut by_value: BTreeMap<String, usize> = BTreeMap::new();
            let mut known = BTreeSet::new();
            for (node, &count) in nodes.iter().zip(counts) {
                if let Some(v) = node.value(&c.field) {
                    let eligible = node.ready && app.roles().contains(&node.role);
                    if eligible {
                        known.insert(v.to_string());
                    }
                    if count > 0 {
                        *by_value.entry(v.to_string()).or_default() += count;
                    }
                }
            }
            first.push(by_value.keys().next().cloned());
            per.push((by_value, known));
            regex.push(match c.operator {
                Operator::Like | Operator::Unlike => {
                    c.value.as_deref().and_then(|v| full_match(v).ok())
                }
                _ => None,
            });
        }
        ValueCounts { per, first, regex }
    }
}

/// Whether `node` may take one more instance, with the host ports it
/// would get (in the app's port order), or the first reason it may not.
pub fn check(
    app: &AppSpec,
    want: Resources,
    node: &NodeView,
    used: &Resources,
    ports: &BTreeSet<u16>,
    values: &ValueCounts,
) -> Result<Vec<Option<u16>>, Refusal> {
    if !node.ready {
        return Err(Refusal::NotReady);
    }
    if node.cordoned {
        return Err(Refusal::Cordoned);
    }
    if !app.roles().contains(&node.role) {
        return Err(Refusal::Role);
    }
    for i in 0..app.constraints.len() {
        if !meets(app, i, node, values) {
            return Err(Refusal::Constraint(i));
        }
    }
    let free = |total: u64, used: u64| total.saturating_sub(used);
    let a = node.allocatable;
    if want.cpu_milli > free(a.cpu_milli, used.cpu_milli) {
        return Err(Refusal::Cpus);
    }
    if want.mem_mib > free(a.mem_mib, used.mem_mib) {
        return Err(Refusal::Mem);
    }
    if want.disk_mib > free(a.disk_mib, used.disk_mib) {
        return Err(Refusal::Disk);
    }
    host_ports(app, ports)
}

fn meets(app: &AppSpec, i: usize, node: &NodeView, values: &ValueCounts) -> bool {
    let c = &app.constraints[i];
    let (by_value, known) = &values.per[i];
    let Some(v) = node.value(&c.field) else {
        // A node without the attribute meets only UNLIKE.
        return c.operator == Operator::Unlike;
    };
    let here = by_value.get(v).copied().unwrap_or(0);
    match c.operator {
        Operator::Unique => here == 0,
        Operator::Cluster => match (&c.value, &values.first[i]) {
            (Some(want), _) => v == want,
            (None, Some(first)) => v == first,
            (None, None) => true,
        },
        Operator::Is => c.value.as_deref() == Some(v),
        Operator::Like => values.regex[i].as_ref().is_some_and(|re| re.is_match(v)),
        Operator::Unlike => values.regex[i].as_ref().is_some_and(|re| !re.is_match(v)),
        Operator::MaxPer => c
            .value
            .as_deref()
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|max| here < max),
        Operator::GroupBy => {
            // Even: only values that hold the fewest instances take the
            // next one. Values the cluster does not show yet (fewer known
            // than the count asked) hold none, so the others wait.
            let wanted = c
                .value
                .as_deref()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0);
            let fewest = if known.len() < wanted {
                0
            } else {
                known
                    .iter()
                    .map(|k| by_value.get(k).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(0)
            };
            here == fewest
        }
        Operator::Unknown => false,
    }
}

/// The node's ports for the app's ports: fixed ones must be free, the
/// others (0) are the lowest free ones of [`PORT_RANGE`].
fn host_ports(app: &AppSpec, taken: &BTreeSet<u16>) -> Result<Vec<Option<u16>>, Refusal> {
    let mut out = Vec::with_capacity(app.ports.len());
    let mut mine: BTreeSet<u16> = BTreeSet::new();
    for p in &app.ports {
        match p.host_port {
            Some(0) => out.push(Some(0)),
            Some(fixed) => {
                if taken.contains(&fixed) || !mine.insert(fixed) {
                    return Err(Refusal::Port(fixed));
                }
                out.push(Some(fixed));
            }
            None => out.push(None),
        }
    }
    let mut next = PORT_RANGE.0;
    for slot in out.iter_mut() {
        if *slot != Some(0) {
            continue;
        }
        while taken.contains(&next) || mine.contains(&next) {
            if next == PORT_RANGE.1 {
                return Err(Refusal::NoFreePort);
            }
            next += 1;
        }
        mine.insert(next);
        *slot = Some(next);
    }
    Ok(out)
}
