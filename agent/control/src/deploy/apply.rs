//! From etcd's records to the planner's [`World`], and from a [`Plan`]
//! back to records: the two pure halves of the leader's loop (the
//! effectful middle reads and writes etcd).

use std::collections::BTreeMap;

use super::{Action, AppState, Instance, NodeState, Plan, World};
use crate::app::record::{AppRecord, AppVersion, InstanceOf};
use crate::app::{AgentRole, AppId, AppSpec};
use crate::deploy::{Deployment, DeploymentKind, DeploymentState, deployment_id};
use crate::model::{NodeState as Liveness, NodeStatus, TaskRecord, TaskReport};
use crate::schedule::{Alloc, NodeView, Resources};
use crate::task::{Health, TaskSpec, TaskState};

/// What the scheduler keeps back on every agent (cluster.toml's
/// `[scheduler]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserve(pub Resources);

impl From<&configs::cluster::Scheduler> for Reserve {
    fn from(s: &configs::cluster::Scheduler) -> Reserve {
        Reserve(Resources {
            cpu_milli: u64::from(s.reserve_cpu_millis),
            mem_mib: s.reserve_mem_mib,
            disk_mib: s.reserve_disk_mib,
        })
    }
}

/// A node as the scheduler sees it: what it registered less the reserve;
/// `None` for masters, which run no apps.
pub fn node_view(n: &NodeStatus, reserve: Reserve) -> Option<NodeView> {
    let info = &n.record.info;
    let role = match info.role {
        configs::Role::Private => AgentRole::Private,
        configs::Role::Public => AgentRole::Public,
        configs::Role::Master => return None,
    };
    let r = reserve.0;
    Some(NodeView {
        name: info.name.clone(),
        role,
        ready: n.state == Liveness::Ready,
        cordoned: n.cordon.is_some(),
        attributes: info.attributes.clone(),
        allocatable: Resources {
            cpu_milli: (u64::from(info.cpus) * 1000).saturating_sub(r.cpu_milli),
            mem_mib: (info.memory_bytes >> 20).saturating_sub(r.mem_mib),
            disk_mib: (info.disk_bytes >> 20).saturating_sub(r.disk_mib),
        },
    })
}

/// What a task holds on its node.
pub fn task_resources(spec: &TaskSpec, disk_mib: u64) -> Resources {
    Resources {
        cpu_milli: u64::from(spec.cpu_millis().unwrap_or(0)),
        mem_mib: spec.mem.map_or(0, |m| m.0.div_ceil(1 << 20)),
        disk_mib,
    }
}

/// The world the planner reads, from the records at one revision.
/// `unreachable_since` is when the leader first saw each node that is not
/// ready stop answering.
pub fn world(
    nodes: &[NodeStatus],
    unreachable_since: &BTreeMap<String, u64>,
    apps: &[AppRecord],
    tasks: &BTreeMap<String, TaskRecord>,
    reports: &BTreeMap<String, TaskReport>,
    reserve: Reserve,
) -> World {
    let nodes = nodes
        .iter()
        .filter_map(|n| {
            let view = node_view(n, reserve)?;
            let since = (!view.ready)
                .then(|| unreachable_since.get(&view.name).copied())
                .flatten();
            Some(NodeState {
                view,
                unreachable_since: since,
                drain_deadline: n.cordon.as_ref().map(|c| c.deadline),
            })
        })
        .collect();
    let mut instances = Vec::new();
    let mut pinned = Vec::new();
    for (id, t) in tasks {
        let report = reports.get(id);
        match &t.instance_of {
            Some(of) => instances.push(Instance {
                id: id.clone(),
                app: of.app.clone(),
                version: of.version,
                node: t.node.clone(),
                state: report.map_or(TaskState::Pending, |r| r.state),
                health: report.and_then(|r| r.health).unwrap_or(Health::Unknown),
                checked: !t.spec.health_checks.is_empty(),
                created_at: t.created_at,
                resources: task_resources(&t.spec, of.disk_mib),
                host_ports: t.host_ports.clone(),
                stopping: t.stopping,
                stopping_since: t.stopping_since,
            }),
            // A job's attempt holds its node's resources only until it
            // ends (its record stays, for its logs, until the run is
            // trimmed).
            None if t.run_of.is_some()
                && report.is_some_and(|r| {
                    matches!(
                        r.state,
                        TaskState::Exited | TaskState::Stopped | TaskState::Lost
                    )
                }) => {}
            None => pinned.push(Alloc {
                node: t.node.clone(),
                app: None,
                resources: task_resources(&t.spec, t.run_of.as_ref().map_or(0, |r| r.disk_mib)),
                host_ports: Vec::new(),
            }),
        }
    }
    World {
        nodes,
        apps: apps.iter().map(AppRecord::state).collect::<Vec<AppState>>(),
        instances,
        pinned,
    }
}

/// The writes that carry out a plan.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub put_apps: Vec<AppRecord>,
    pub delete_apps: Vec<AppId>,
    pub put_versions: Vec<(AppId, AppVersion)>,
    pub put_tasks: Vec<(String, TaskRecord)>,
    pub delete_tasks: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// The definitions of the versions a plan rolls back to: what the leader
/// must read before [`changes`].
pub fn rollback_targets(plan: &Plan) -> Vec<(AppId, u64)> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Rollback { app, config, .. } => Some((app.clone(), *config)),
            _ => None,
        })
        .collect()
}

/// The records a plan writes, given the records it was planned from and
/// the definitions of [`rollback_targets`]. An action about a record that
/// is gone is skipped.
pub fn changes(
    plan: &Plan,
    apps: &[AppRecord],
    tasks: &BTreeMap<String, TaskRecord>,
    definitions: &BTreeMap<(AppId, u64), AppSpec>,
    now: u64,
) -> Changes {
    let mut records: BTreeMap<AppId, AppRecord> = apps
        .iter()
        .map(|a| (a.spec.id.clone(), a.clone()))
        .collect();
    let mut touched: Vec<AppId> = Vec::new();
    let mut out = Changes::default();
    let touch = |id: &AppId, touched: &mut Vec<AppId>| {
        if !touched.contains(id) {
            touched.push(id.clone());
        }
    };
    for action in &plan.actions {
        match action {
            Action::Start {
                app,
                version,
                instance,
                node,
                host_ports,
            } => {
                let Some(r) = records.get(app) else { continue };
                let spec = crate::app::instance::task_spec(&r.spec, instance, *version, host_ports);
                out.put_tasks.push((
                    instance.clone(),
                    TaskRecord {
                        format: Default::default(),
                        node: node.clone(),
                        spec,
                        created_at: now,
                        instance_of: Some(InstanceOf {
                            app: app.clone(),
                            version: *version,
                            disk_mib: Resources::of(&r.spec).disk_mib,
                        }),
                        host_ports: host_ports.iter().flatten().copied().collect(),
                        stopping: false,
                        stopping_since: None,
                        run_of: None,
                    },
                ));
            }
            Action::Stop { instance, .. } => {
                if let Some(t) = tasks.get(instance) {
                    let mut t = t.clone();
                    t.stopping = true;
                    t.stopping_since = Some(now);
                    out.put_tasks.push((instance.clone(), t));
                }
            }
            Action::Forget { instance } => out.delete_tasks.push(instance.clone()),
            Action::UpdateApp {
                app,
                launches,
                next_instance,
                deployment,
            } => {
                let Some(r) = records.get_mut(app) else {
                    continue;
                };
                r.launches = *launches;
                r.next_instance = *next_instance;
                if let Some(d) = deployment {
                    r.set_deployment(d.clone());
                }
                touch(app, &mut touched);
            }
            Action::Rollback {
                app,
                version,
                config,
                failed,
            } => {
                let (Some(r), Some(spec)) = (
                    records.get_mut(app),
                    definitions.get(&(app.clone(), *config)),
                ) else {
                    continue;
                };
                r.set_deployment(failed.clone());
                r.spec = spec.clone();
                r.version = *version;
                r.config_version = *config;
                out.put_versions.push((
                    app.clone(),
                    AppVersion {
                        format: Default::default(),
                        version: *version,
                        config_version: *config,
                        kind: DeploymentKind::Rollback,
                        spec: spec.clone(),
                        at: now,
                    },
                ));
                touch(app, &mut touched);
            }
            Action::DeleteApp { app } => {
                records.remove(app);
                touched.retain(|a| a != app);
                out.delete_apps.push(app.clone());
            }
            Action::Waiting { app, reason } => {
                let Some(r) = records.get_mut(app) else {
                    continue;
                };
                r.waiting = reason.clone();
                touch(app, &mut touched);
            }
        }
    }
    for id in touched {
        if let Some(r) = records.remove(&id) {
            let mut r = r;
            r.updated_at = now;
            out.put_apps.push(r);
        }
    }
    out
}

/// What an operator's change makes of an app: the record to store, the
/// version to keep and the deployment that rolls it out; `None` when the
/// definition is the one the app runs already.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub record: AppRecord,
    pub version: AppVersion,
    pub deployment: Deployment,
}

/// How an operator changes an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// `app deploy`: a new definition (a scale when only `instances`
    /// differs).
    Deploy { canary: u32 },
    /// `app restart`: every instance replaced, the definition unchanged.
    Restart,
    /// `deployment rollback`: the definition of `config` again.
    Rollback { config: u64 },
}

/// Admits a change of an app (new when `existing` is `None`): the next
/// version, and a deployment that supersedes the one under way.
pub fn admit(
    existing: Option<&AppRecord>,
    spec: AppSpec,
    change: Change,
    now: u64,
) -> Option<Admitted> {
    let (version, previous) = match existing {
        Some(r) => (r.version + 1, Some(r.config_version)),
        None => (1, None),
    };
    let (kind, config) = match (existing, change) {
        (None, _) => (DeploymentKind::Deploy, version),
        (Some(r), Change::Deploy { .. }) => {
            if r.spec == spec && !r.removing {
                return None;
            }
            let mut same = spec.clone();
            same.instances = r.spec.instances;
            if same == r.spec && !r.removing {
                (DeploymentKind::Scale, r.config_version)
            } else {
                (DeploymentKind::Deploy, version)
            }
        }
        (Some(_), Change::Restart) => (DeploymentKind::Restart, version),
        (Some(_), Change::Rollback { config }) => (DeploymentKind::Rollback, config),
    };
    let mut deployment = Deployment::new(
        deployment_id(&spec.id, version),
        kind,
        (version, config),
        previous,
        now,
        super::DEFAULT_DEADLINE_SECONDS,
    );
    if let Change::Deploy { canary } = change
        && kind == DeploymentKind::Deploy
        && existing.is_some()
    {
        deployment.canary = canary;
    }
    let mut record = match existing {
        Some(r) => {
            let mut r = r.clone();
            if let Some(d) = r.deployments.last_mut()
                && !d.state.is_done()
            {
                d.state = DeploymentState::Superseded;
            }
            r
        }
        None => AppRecord {
            format: Default::default(),
            spec: spec.clone(),
            version,
            config_version: config,
            deployments: Vec::new(),
            launches: Default::default(),
            next_instance: 0,
            removing: false,
            waiting: None,
            created_at: now,
            updated_at: now,
        },
    };
    record.spec = spec.clone();
    record.version = version;
    record.config_version = config;
    record.removing = false;
    record.launches = Default::default();
    record.updated_at = now;
    record.set_deployment(deployment.clone());
    Some(Admitted {
        record,
        version: AppVersion {
            format: Default::default(),
            version,
            config_version: config,
            kind,
            spec,
            at: now,
        },
        deployment,
    })
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    fn spec(text: &str) -> AppSpec {
        let text = format!("id = \"/shop/web\"\nimage = \"nginx:1\"\ncpus = 0.5\nmem = 64\n{text}");
        crate::app::read("web.toml", &text)
            .expect("reads")
            .apps
            .remove(0)
    }

    fn show(a: &Option<Admitted>) -> String {
        match a {
            None => "unchanged".into(),
            Some(a) => format!(
                "version {} config {} {:?} deployment {} ({:?}, previous {:?}, canary {}) history {:?}",
                a.record.version,
                a.record.config_version,
                a.version.kind,
                a.deployment.id,
                a.deployment.kind,
                a.deployment.previous,
                a.deployment.canary,
                a.record
                    .deployments
                    .iter()
                    .map(|d| format!("{} {}", d.id, d.state))
                    .collect::<Vec<_>>()
            ),
        }
    }

    #[test]
    fn changes_are_admitted_as_versions_and_deployments() {
        let first = admit(
            None,
            spec("instances = 2"),
            Change::Deploy { canary: 1 },
            100,
        );
        expect![[r#"version 1 config 1 Deploy deployment shop.web-1 (Deploy, previous None, canary 0) history ["shop.web-1 running"]"#]]
            .assert_eq(&show(&first));
        let r1 = first.expect("admitted").record;
        expect!["unchanged"].assert_eq(&show(&admit(
            Some(&r1),
            spec("instances = 2"),
            Change::Deploy { canary: 0 },
            110,
        )));
        let scaled = admit(
            Some(&r1),
            spec("instances = 5"),
            Change::Deploy { canary: 0 },
            120,
        );
        expect![[r#"version 2 config 1 Scale deployment shop.web-2 (Scale, previous Some(1), canary 0) history ["shop.web-1 superseded", "shop.web-2 running"]"#]]
            .assert_eq(&show(&scaled));
        let r2 = scaled.expect("admitted").record;
        let changed = admit(
            Some(&r2),
            spec("instances = 5\ncmd = \"v2\""),
            Change::Deploy { canary: 2 },
            130,
        );
        expect![[r#"version 3 config 3 Deploy deployment shop.web-3 (Deploy, previous Some(1), canary 2) history ["shop.web-1 superseded", "shop.web-2 superseded", "shop.web-3 running"]"#]]
            .assert_eq(&show(&changed));
        let r3 = changed.expect("admitted").record;
        expect![[r#"version 4 config 4 Restart deployment shop.web-4 (Restart, previous Some(3), canary 0) history ["shop.web-1 superseded", "shop.web-2 superseded", "shop.web-3 superseded", "shop.web-4 running"]"#]]
            .assert_eq(&show(&admit(Some(&r3), r3.spec.clone(), Change::Restart, 140)));
        expect![[r#"version 4 config 1 Rollback deployment shop.web-4 (Rollback, previous Some(3), canary 0) history ["shop.web-1 superseded", "shop.web-2 superseded", "shop.web-3 superseded", "shop.web-4 running"]"#]]
            .assert_eq(&show(&admit(Some(&r3), r2.spec.clone(), Change::Rollback { config: 1 }, 150)));
    }

    #[test]
    fn a_plan_becomes_records() {
        let admitted = admit(
            None,
            spec("instances = 1\n[[ports]]\ncontainer_port = 80\nhost_port = 0"),
            Change::Deploy { canary: 0 },
            100,
        )
        .expect("admitted");
        let node = NodeState {
            view: NodeView {
                name: "a1".into(),
                role: AgentRole::Private,
                ready: true,
                cordoned: false,
                attributes: Default::default(),
                allocatable: Resources {
                    cpu_milli: 4000,
                    mem_mib: 4096,
                    disk_mib: 10_000,
                },
            },
            unreachable_since: None,
            drain_deadline: None,
        };
        let apps = vec![admitted.record];
        let world = World {
            nodes: vec![node],
            apps: apps.iter().map(AppRecord::state).collect(),
            ..World::default()
        };
        let planned = crate::deploy::plan(&world, 100, &BTreeMap::new());
        let c = changes(&planned, &apps, &BTreeMap::new(), &BTreeMap::new(), 105);
        let (id, task) = &c.put_tasks[0];
        assert_eq!(id, "web-shop.1.0");
        assert_eq!(task.node, "a1");
        assert_eq!(task.host_ports, [10000]);
        assert_eq!(task.spec.env["PORT0"], "80");
        assert_eq!(task.instance_of.as_ref().map(|i| i.version), Some(1));
        assert_eq!(c.put_apps[0].next_instance, 1);
        assert_eq!(c.put_apps[0].updated_at, 105);
        // The task, once stored, is stopped by a plan that scales to 0.
        let tasks: BTreeMap<String, TaskRecord> = c.put_tasks.into_iter().collect();
        let mut apps = c.put_apps;
        apps[0].spec.instances = 0;
        let world = World {
            nodes: world.nodes,
            apps: apps.iter().map(AppRecord::state).collect(),
            instances: Vec::new(),
            pinned: Vec::new(),
        };
        let w = super::world(
            &[],
            &BTreeMap::new(),
            &apps,
            &tasks,
            &BTreeMap::new(),
            Reserve::default(),
        );
        let world = World {
            instances: w.instances,
            ..world
        };
        let planned = crate::deploy::plan(&world, 110, &BTreeMap::new());
        let c = changes(&planned, &apps, &tasks, &BTreeMap::new(), 110);
        assert!(c.put_tasks.iter().all(|(_, t)| t.stopping), "{c:?}");
        assert_eq!(c.put_tasks.len(), 1);
    }
}
