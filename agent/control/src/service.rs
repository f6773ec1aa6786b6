//! Services: what the edge proxy and the VIPs route to, joined once by the
//! masters from apps, their instances, what nodes report of them and the
//! nodes' states ([`services`]), and served to every node in the node
//! watch. A node plans its edge and its VIPs from services alone: no app
//! logic on agents, and every node sees the same backends in the same
//! state.
//!
//! A backend is [`BackendState::Ready`] while its task runs, is not being
//! stopped, its node is Ready and (when the app has health checks) its
//! last check passed; a task being stopped is
//! [`BackendState::Draining`] (established connections finish, no new
//! ones); anything else running is [`BackendState::Down`].

use std::collections::BTreeMap;
use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

use crate::app::record::AppRecord;
use crate::app::{AppId, Exposure, Protocol, VipSpec};
use crate::model::{NodeState, NodeStatus, TaskRecord, TaskReport};
use crate::task::{Health, TaskState};

/// One port of one app that is exposed or has VIPs, with the instances
/// that serve it. Tolerant: a field a newer master adds is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub app: AppId,
    /// Which of the app's ports.
    pub port: usize,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<Exposure>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<VipSpec>,
    /// The app has health checks: a backend is ready once its check
    /// passed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checked: bool,
    /// Every running instance, by task id.
    #[serde(default)]
    pub backends: Vec<Backend>,
}

/// A running instance behind a service: its overlay address and the port
/// it listens on there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub task: String,
    pub node: String,
    pub addr: SocketAddrV4,
    pub state: BackendState,
}

/// Whether a backend takes new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendState {
    /// Takes new connections.
    Ready,
    /// Being stopped: finishes what it has, takes nothing new.
    Draining,
    /// Running but unhealthy, not yet checked, or on a node that is not
    /// Ready: takes nothing.
    Down,
    /// A state a newer master sent: taken as down.
    #[serde(other)]
    Unknown,
}

impl Service {
    /// The backends that take new connections.
    pub fn ready(&self) -> impl Iterator<Item = &Backend> {
        self.backends
            .iter()
            .filter(|b| b.state == BackendState::Ready)
    }
}

/// The port instance `task` of an app listens on for the app's port
/// `index`: the `PORT<index>` its spec carries (the container port where
/// one is mapped, else the host port it was given; each instance's own
/// version decides).
fn listen_port(task: &TaskRecord, index: usize) -> Option<u16> {
    task.spec.env.get(&format!("PORT{index}"))?.parse().ok()
}

/// The services of `apps`: each port that is exposed or has VIPs, with
/// every running instance that reported an address, in its state. Sorted
/// by app and port, backends by task id. Pure.
pub fn services(
    apps: &[AppRecord],
    tasks: &BTreeMap<String, TaskRecord>,
    reports: &BTreeMap<String, TaskReport>,
    nodes: &[NodeStatus],
) -> Vec<Service> {
    let node_ready = |name: &str| {
        nodes
            .iter()
            .any(|n| n.record.info.name == name && n.state == NodeState::Ready)
    };
    let mut by_app: BTreeMap<&AppId, Vec<(&String, &TaskRecord, &TaskReport)>> = BTreeMap::new();
    for (id, t) in tasks {
        let (Some(of), Some(r)) = (&t.instance_of, reports.get(id)) else {
            continue;
        };
        if r.state == TaskState::Running && r.address.is_some() {
            by_app.entry(&of.app).or_default().push((id, t, r));
        }
    }
    let mut out = Vec::new();
    for app in apps {
        let spec = &app.spec;
        let checked = !spec.health_checks.is_empty();
        for (i, port) in spec.ports.iter().enumerate() {
            if port.expose.is_empty() && port.vips.is_empty() {
                continue;
            }
            let mut backends: Vec<Backend> = by_app
                .get(&spec.id)
                .into_iter()
                .flatten()
                .filter_map(|(id, t, r)| {
                    let addr = SocketAddrV4::new(r.address?, listen_port(t, i)?);
                    let state = if t.stopping {
                        BackendState::Draining
                    } else if !node_ready(&t.node) || (checked && r.health != Some(Health::Healthy))
                    {
                        BackendState::Down
                    } else {
                        BackendState::Ready
                    };
                    Some(Backend {
                        task: (*id).clone(),
                        node: t.node.clone(),
                        addr,
                        state,
                    })
                })
                .collect();
            backends.sort_by(|a, b| a.task.cmp(&b.task));
            out.push(Service {
                app: spec.id.clone(),
                port: i,
                protocol: port.protocol,
                expose: port.expose.clone(),
                vips: port.vips.clone(),
                checked,
                backends,
            });
        }
    }
    out.sort_by(|a, b| (&a.app, a.port).cmp(&(&b.app, b.port)));
    out
}

#[cfg(test)]
mod tests;
