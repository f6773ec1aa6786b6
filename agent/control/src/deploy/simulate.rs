//! What a deployment would do, step by step, if every new instance turned
//! healthy at once and every stopped one went at once: the steps `strata
//! app deploy --dry-run` prints. Pure, like the planner it runs.

use std::collections::BTreeMap;

use super::{Action, Instance, World, plan};
use crate::app::AppId;
use crate::task::{Health, TaskState};

/// The most rounds a simulation runs.
const MAX_ROUNDS: usize = 50;

/// The steps of `app`'s deployment from `world`, one line per round that
/// does something (its placements, stops and state changes).
pub fn steps(mut world: World, app: &AppId, now: u64) -> Vec<String> {
    let mut out = Vec::new();
    let mut waiting = BTreeMap::new();
    for round in 1..=MAX_ROUNDS {
        let planned = plan(&world, now, &waiting);
        let mine: Vec<&Action> = planned
            .actions
            .iter()
            .filter(|a| concerns(a, app, &world))
            .collect();
        if mine.is_empty() {
            break;
        }
        let shown: Vec<String> = mine
            .iter()
            .filter(|a| !matches!(a, Action::Forget { .. }))
            .map(|a| a.to_string())
            .collect();
        if !shown.is_empty() {
            out.push(format!("step {round}: {}", shown.join("; ")));
        }
        let mut done = false;
        for a in &planned.actions {
            match a {
                Action::Start {
                    app,
                    version,
                    instance,
                    node,
                    host_ports,
                } => {
                    let Some(state) = world.apps.iter().find(|s| &s.spec.id == app) else {
                        continue;
                    };
                    world.instances.push(Instance {
                        id: instance.clone(),
                        app: app.clone(),
                        version: *version,
                        node: node.clone(),
                        state: TaskState::Running,
                        health: Health::Healthy,
                        checked: !state.spec.health_checks.is_empty(),
                        created_at: now,
                        resources: crate::schedule::Resources::of(&state.spec),
                        host_ports: host_ports.iter().flatten().copied().collect(),
                        stopping: false,
                        stopping_since: None,
                    });
                }
                Action::Stop { instance, .. } | Action::Forget { instance } => {
                    world.instances.retain(|i| &i.id != instance)
                }
                Action::UpdateApp {
                    app: id,
                    launches,
                    next_instance,
                    deployment,
                } => {
                    if let Some(s) = world.apps.iter_mut().find(|s| &s.spec.id == id) {
                        s.launches = *launches;
                        s.next_instance = *next_instance;
                        if let Some(d) = deployment {
                            if id == app && d.state.is_done() {
                                done = true;
                            }
                            s.deployment = Some(d.clone());
                        }
                    }
                }
                Action::Waiting { app: id, reason } => match reason {
                    Some(r) => {
                        waiting.insert(id.clone(), r.clone());
                    }
                    None => {
                        waiting.remove(id);
                    }
                },
                Action::Rollback { .. } | Action::DeleteApp { .. } => done = true,
            }
        }
        if done {
            break;
        }
    }
    out
}

fn concerns(a: &Action, app: &AppId, world: &World) -> bool {
    match a {
        Action::Start { app: id, .. }
        | Action::UpdateApp { app: id, .. }
        | Action::Rollback { app: id, .. }
        | Action::DeleteApp { app: id }
        | Action::Waiting { app: id, .. } => id == app,
        Action::Stop { instance, .. } | Action::Forget { instance } => world
            .instances
            .iter()
            .any(|i| &i.id == instance && &i.app == app),
    }
}
