//! The agent side of pinned tasks: follow this node's assignment watch
//! (`GET /v1/watch/assignments/<revision>`, the path the scheduler will
//! use too), bring the node's tasks to it through
//! [`Supervisor::reconcile`], and report each task's state back
//! (`PUT /v1/tasks/<id>/status`). The break-glass sessions the watch
//! offers go to [`crate::exec::Sessions`], its upgrade or rollback order
//! to [`crate::cluster::upgrade::Upgrader`], the edge's certificates (on
//! public agents) to the edge proxy ([`crate::edge`]).
//!
//! Everything runs on a thread of its own with a single-threaded async
//! runtime: the supervisor only spawns per-task shims (separate
//! processes), never containers from a multi-threaded runtime. Tasks
//! outlive the agent; a restarted agent's supervisor adopts them from the
//! state directory, and nothing is reconciled before the first answer of
//! the watch, so an agent restart never stops a task.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::client::ApiClient;
use crate::images::PullOptions;
use crate::tasks::{self, Supervisor, TaskNetwork, TaskSpec};
use control::model::TaskReport;

/// How often the supervisor reconciles when nothing changed (restart
/// policies, status reports).
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the assignment follower on its own thread. `watch` is used for
/// the long poll only, `report` for status reports, so one never waits for
/// the other.
pub fn spawn(
    state_dir: PathBuf,
    watch: ApiClient,
    report: ApiClient,
    pull: PullOptions,
    network: Option<TaskNetReceiver>,
    upgrader: Option<crate::cluster::upgrade::Upgrader>,
    edge_certs: Option<crate::cluster::network::EdgeCertSender>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("strata-tasks".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!("tasks: cannot start the async runtime: {e}");
                    return;
                }
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(run(
                    state_dir, watch, report, pull, network, upgrader, edge_certs,
                ));
            }));
            // A dead task follower would leave the node's tasks unmanaged
            // while the node looks healthy: exit, so systemd restarts the
            // agent, which adopts the running tasks.
            if ran.is_err() {
                tracing::info!("tasks: the task follower panicked: exiting so the agent restarts");
                std::process::exit(70);
            }
        })
        .context("cannot start the task thread")?;
    Ok(())
}

/// Hands the assignment follower the node's task network once the
/// overlay is up.
pub type TaskNetReceiver = tokio::sync::watch::Receiver<Option<Arc<dyn TaskNetwork>>>;

async fn run(
    state_dir: PathBuf,
    watch: ApiClient,
    report: ApiClient,
    pull: PullOptions,
    mut network: Option<TaskNetReceiver>,
    upgrader: Option<crate::cluster::upgrade::Upgrader>,
    edge_certs: Option<crate::cluster::network::EdgeCertSender>,
) {
    // The watch first: break-glass sessions reach a node whose task
    // supervisor or overlay is not up (which is when they are needed), and
    // the watch keeps only its latest answer until the supervisor reads it.
    let (tx, mut rx) = tokio::sync::watch::channel::<Option<Assigned>>(None);
    let watch = Arc::new(watch);
    let exec = crate::exec::Sessions::new(watch.clone(), Some(state_dir.clone()));
    tokio::spawn(follow(watch, tx, Some(exec), upgrader, edge_certs));
    let mut supervisor = loop {
        let opened = std::env::current_exe()
            .context("cannot find the strata binary")
            .and_then(|exe| Supervisor::new(&state_dir, exe, pull.clone()));
        match opened {
            Ok(s) => break s,
            Err(e) => {
                tracing::info!("tasks: {e:#}: trying again in 5s");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    // On a node with an overlay no task starts before its network can be
    // given (running tasks are adopted either way: they keep theirs).
    if let Some(net) = network.as_mut() {
        match net.wait_for(Option::is_some).await {
            Ok(n) => {
                supervisor.set_network(n.clone());
                tracing::info!("tasks: the overlay is up, tasks get their network from it");
            }
            Err(_) => tracing::info!("tasks: the overlay went away before it came up"),
        }
    }
    let mut reported: HashMap<String, TaskReport> = HashMap::new();
    let mut prober = match std::env::current_exe() {
        Ok(exe) => Some(tasks::probe::Prober::new(&state_dir, exe)),
        Err(e) => {
            tracing::warn!("tasks: no health checks: cannot find the strata binary: {e}");
            None
        }
    };
    loop {
        let desired = rx.borrow_and_update().clone();
        if let Some(net) = network.as_mut()
            && net.has_changed().unwrap_or(false)
        {
            supervisor.set_network(net.borrow_and_update().clone());
        }
        if let Some(Assigned { tasks, stopping }) = desired {
            let desired = admissible(tasks);
            // What the scheduler stops is not desired: the supervisor
            // stops and removes it like a task no longer assigned.
            for event in supervisor.reconcile(desired.clone()).await {
                tracing::info!("tasks: {event}");
            }
            let found = match prober.as_mut() {
                Some(p) => p.tick(&desired, &tasks::list(&state_dir)),
                None => Default::default(),
            };
            for id in &found.kill {
                kill_unhealthy(&state_dir, &desired, id).await;
            }
            report_states(&state_dir, &desired, &found.health, &report, &mut reported).await;
            report_stopped(&state_dir, &stopping, &report, &mut reported).await;
        }
        let _ = tokio::time::timeout(RECONCILE_INTERVAL, rx.changed()).await;
    }
}

/// The assignments this node runs: each checked as the API checked it
/// when it was created ([`TaskSpec::validate_assignment`]), since what
/// reaches a node must not be trusted more than what reaches the API; the
/// others are logged and left out.
fn admissible(desired: Vec<TaskSpec>) -> Vec<TaskSpec> {
    desired
        .into_iter()
        .filter(|spec| match spec.validate_assignment() {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(task = %spec.id, "tasks: assignment `{}` refused: {reason}", spec.id);
                false
            }
        })
        .collect()
}

/// Long-polls the assignment watch and hands every answer that changed
/// the assignments over; the break-glass sessions it offers go to
/// `exec` (none: they are ignored, as by the cluster bench's agents).
/// What the assignment watch last said: the tasks to run, and those the
/// scheduler is stopping (to report once they are gone).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assigned {
    pub tasks: Vec<TaskSpec>,
    pub stopping: Vec<String>,
}

pub(crate) async fn follow(
    client: Arc<ApiClient>,
    tx: tokio::sync::watch::Sender<Option<Assigned>>,
    exec: Option<crate::exec::Sessions>,
    upgrader: Option<crate::cluster::upgrade::Upgrader>,
    edge_certs: Option<crate::cluster::network::EdgeCertSender>,
) {
    crate::api::follow::follow(
        &client,
        0,
        Duration::from_secs(2),
        |w: control::model::AssignmentWatch| {
            if let Some(exec) = &exec {
                exec.offer(&w.exec);
            }
            if let Some(upgrader) = &upgrader {
                upgrader.offer(w.upgrade.as_ref());
            }
            // An answer without certificates (an older master) keeps
            // the ones the edge has.
            if let (Some(tx), Some(certs)) = (&edge_certs, w.edge_certs) {
                tx.send_if_modified(|old| {
                    let changed = *old != certs;
                    if changed {
                        *old = certs;
                    }
                    changed
                });
            }
            tx.send_if_modified(|old| {
                let new = Some(Assigned {
                    tasks: w.tasks,
                    stopping: w.stopping,
                });
                let changed = *old != new;
                *old = new;
                changed
            });
        },
    )
    .await
}

/// Kills a task whose health checks failed too often in a row: it ends,
/// and the scheduler replaces it.
async fn kill_unhealthy(state_dir: &std::path::Path, desired: &[TaskSpec], id: &str) {
    let grace = desired
        .iter()
        .find(|s| s.id == id)
        .map_or(10, |s| s.stop_grace_secs);
    tracing::info!(task = %id, "tasks: {id} failed its health checks too often in a row: killing it");
    let (dir, id) = (state_dir.to_path_buf(), id.to_string());
    let stopped = tokio::task::spawn_blocking(move || {
        tasks::stop(&dir, &id, Some(Duration::from_secs(grace)))
    })
    .await;
    if let Ok(Err(e)) = stopped {
        tracing::warn!("tasks: cannot kill an unhealthy task: {e:#}");
    }
}

/// Reports the state of every assigned task that changed since the last
/// report, with its health where it has checks.
async fn report_states(
    state_dir: &std::path::Path,
    desired: &[TaskSpec],
    health: &HashMap<String, control::task::Health>,
    client: &ApiClient,
    reported: &mut HashMap<String, TaskReport>,
) {
    let local = tasks::list(state_dir);
    reported.retain(|id, r| {
        desired.iter().any(|s| &s.id == id) || r.state == control::task::TaskState::Stopped
    });
    for spec in desired {
        let now = match local.iter().find(|t| t.id == spec.id) {
            Some(t) => TaskReport {
                format: Default::default(),
                state: t.state,
                pid: t.pid,
                restarts: t.restarts,
                exit_code: t.exit_code,
                address: t.address,
                health: health.get(&spec.id).copied(),
                at: 0,
            },
            None => TaskReport {
                format: Default::default(),
                state: control::task::TaskState::Starting,
                pid: None,
                restarts: 0,
                exit_code: None,
                address: None,
                health: None,
                at: 0,
            },
        };
        if reported.get(&spec.id) == Some(&now) {
            continue;
        }
        match client.report_task(&spec.id, &now).await {
            Ok(_) => {
                reported.insert(spec.id.clone(), now);
            }
            Err(e) => tracing::warn!("tasks: cannot report task {}: {e}", spec.id),
        }
    }
}

/// Reports each task the scheduler is stopping as stopped once the node
/// no longer has it (the supervisor removed it), once.
async fn report_stopped(
    state_dir: &std::path::Path,
    stopping: &[String],
    client: &ApiClient,
    reported: &mut HashMap<String, TaskReport>,
) {
    let local = tasks::list(state_dir);
    for id in stopping {
        if local.iter().any(|t| &t.id == id) {
            continue;
        }
        let now = TaskReport {
            format: Default::default(),
            state: control::task::TaskState::Stopped,
            pid: None,
            restarts: 0,
            exit_code: None,
            address: None,
            health: None,
            at: 0,
        };
        if reported.get(id) == Some(&now) {
            continue;
        }
        match client.report_task(id, &now).await {
            Ok(_) => {
                reported.insert(id.clone(), now);
            }
            Err(e) => tracing::warn!("tasks: cannot report task {id} stopped: {e}"),
        }
    }
    reported.retain(|id, r| r.state != control::task::TaskState::Stopped || stopping.contains(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_naming_a_network_namespace_are_left_out() {
        let spec = |json: &str| serde_json::from_str::<TaskSpec>(json).expect("a spec");
        let kept = admissible(vec![
            spec(r#"{"id":"web","image":"bb:1"}"#),
            spec(r#"{"id":"escape","image":"bb:1","netns":"/proc/1/ns/net"}"#),
            spec(r#"{"id":"Bad Id","image":"bb:1"}"#),
        ]);
        let ids: Vec<&str> = kept.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["web"]);
    }
}
