//! Keeping apps running: what the scheduler does next, planned from one
//! [`World`] (the apps with the version each should run and its
//! deployment, their instances as their nodes report them, the nodes) at
//! one moment. Pure: [`plan`] returns the [`Plan`], which the leader
//! commits in one transaction fenced on its leadership and the snapshot's
//! revision.
//!
//! Every change to an app is a [`Deployment`] to a version. It rolls by
//! the app's upgrade strategy: at most `instances × (1 +
//! maximum_over_capacity)` instances alive, at least `instances ×
//! minimum_health_capacity` healthy, old instances stopped only as new
//! ones turn healthy (or as the strategy allows). A deployment that is not
//! done by its deadline, or whose new instances keep failing, fails and
//! rolls back to the version before by itself. Canaries start beside the
//! old instances and wait for a promotion.
//!
//! Outside deployments, the plan replaces instances that ended (after the
//! app's launch backoff), that a lost node holds, and scales to
//! `instances`, stopping the surplus by the app's kill selection.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::app::{AppId, AppSpec, KillSelection, UnreachableStrategy};
use crate::schedule::{Alloc, NodeView, Placer, Resources, Snapshot};
pub use crate::task::Health;
use crate::task::TaskState;

/// How long a deployment may take before it fails and rolls back, unless
/// the app says otherwise.
pub const DEFAULT_DEADLINE_SECONDS: u64 = 600;

/// How long past its app's kill grace an instance may stay stopping before
/// its record is deleted (see [`crate::model::TaskRecord::stopping_since`]).
pub const STOP_TIMEOUT_SECONDS: u64 = 120;

/// How a deployment came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentKind {
    /// A new or changed app definition.
    Deploy,
    /// Only `instances` changed.
    Scale,
    /// The same definition, every instance replaced.
    Restart,
    /// Back to the version before, by hand or after a failure.
    Rollback,
    #[serde(other)]
    Unknown,
}

/// Where a deployment is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeploymentState {
    Running,
    /// Its canaries are healthy: it waits for `strata deployment promote`.
    WaitingPromotion,
    Succeeded,
    /// It did not get healthy; a rollback replaces it (when there is a
    /// version to go back to).
    Failed,
    /// Replaced by a rollback (or a newer deployment) before it finished.
    Superseded,
    #[serde(other)]
    Unknown,
}

impl DeploymentState {
    pub fn is_done(self) -> bool {
        !matches!(
            self,
            DeploymentState::Running | DeploymentState::WaitingPromotion
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DeploymentState::Running => "running",
            DeploymentState::WaitingPromotion => "waiting-promotion",
            DeploymentState::Succeeded => "succeeded",
            DeploymentState::Failed => "failed",
            DeploymentState::Superseded => "superseded",
            DeploymentState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for DeploymentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One change of an app rolling out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub kind: DeploymentKind,
    /// The app's version it makes.
    pub version: u64,
    /// The definition it rolls out: the version where the app's definition
    /// (all but `instances`) last changed.
    pub config: u64,
    /// The definition it replaces (none for a new app): where a failure
    /// rolls back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u64>,
    pub state: DeploymentState,
    pub started_at: u64,
    pub deadline_at: u64,
    /// New instances to start beside the old ones before a promotion (0:
    /// none, roll at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub canary: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub promoted: bool,
    /// Instances of the new version that ended before they were stopped.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failures: u32,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Deployment {
    /// A deployment of `version` that starts now.
    pub fn new(
        id: String,
        kind: DeploymentKind,
        (version, config): (u64, u64),
        previous: Option<u64>,
        now: u64,
        deadline_seconds: u64,
    ) -> Deployment {
        Deployment {
            id,
            kind,
            version,
            config,
            previous,
            state: DeploymentState::Running,
            started_at: now,
            deadline_at: now + deadline_seconds,
            canary: 0,
            promoted: false,
            failures: 0,
            reason: None,
        }
    }
}

/// An app's launch backoff: failures in a row and when the last was.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launches {
    pub failures: u32,
    pub last_failure_at: u64,
}

impl Launches {
    /// When the app may start an instance again.
    pub fn next_at(&self, spec: &AppSpec) -> u64 {
        if self.failures == 0 {
            return 0;
        }
        let b = spec.backoff;
        let delay = (b.seconds * b.factor.powi(self.failures as i32 - 1))
            .min(b.max_launch_delay_seconds)
            .max(0.0);
        self.last_failure_at + delay.ceil() as u64
    }
}

/// An app as the scheduler reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct AppState {
    /// The version it should run.
    pub spec: AppSpec,
    pub version: u64,
    /// The version whose definition it runs: scaling makes a version
    /// without changing the definition, and keeps the instances; a
    /// rollback makes a version that runs an older definition.
    pub config_version: u64,
    /// Its latest deployment (done or not).
    pub deployment: Option<Deployment>,
    pub launches: Launches,
    /// The next instance number: instance ids are never reused.
    pub next_instance: u64,
    /// `strata app remove`: every instance stops, then the app goes.
    pub removing: bool,
}

/// One instance of an app: a task the scheduler placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    pub app: AppId,
    /// The definition it runs (its app's `config_version` at its start).
    pub version: u64,
    pub node: String,
    pub state: TaskState,
    pub health: Health,
    /// Whether its version has health checks (without, running is
    /// healthy).
    pub checked: bool,
    pub created_at: u64,
    pub resources: Resources,
    pub host_ports: Vec<u16>,
    /// A stop was planned: its node is stopping it.
    pub stopping: bool,
    /// When the stop was planned (none from a writer that did not say).
    pub stopping_since: Option<u64>,
}

impl Instance {
    fn ended(&self) -> bool {
        matches!(
            self.state,
            TaskState::Exited | TaskState::Stopped | TaskState::Lost
        )
    }

    fn healthy(&self) -> bool {
        self.state == TaskState::Running
            && match self.health {
                Health::Healthy => true,
                Health::Unknown => !self.checked,
                Health::Unhealthy => false,
            }
    }

    fn alloc(&self) -> Alloc {
        Alloc {
            node: self.node.clone(),
            app: Some(self.app.clone()),
            resources: self.resources,
            host_ports: self.host_ports.clone(),
        }
    }
}

/// A node and, when its heartbeats stopped, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub view: NodeView,
    pub unreachable_since: Option<u64>,
    /// Drained: its instances move away, and by this time (unix seconds)
    /// the ones left are stopped.
    pub drain_deadline: Option<u64>,
}

/// Everything the scheduler plans from, at one etcd revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct World {
    pub nodes: Vec<NodeState>,
    pub apps: Vec<AppState>,
    pub instances: Vec<Instance>,
    /// Tasks pinned by operators: they hold resources and ports.
    pub pinned: Vec<Alloc>,
}

/// Why an instance is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// More instances than `instances`.
    ScaledDown,
    /// A newer version replaced it.
    Replaced,
    /// Its node stopped answering past the app's grace.
    NodeLost,
    /// Its app is being removed.
    AppRemoved,
    /// Its app no longer exists.
    Orphaned,
    /// Its node is drained, and a replacement is healthy or the drain's
    /// deadline passed.
    Drained,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// A new instance on a node, of the app's definition `version`.
    Start {
        app: AppId,
        version: u64,
        instance: String,
        node: String,
        host_ports: Vec<Option<u16>>,
    },
    /// Tell an instance's node to stop it.
    Stop {
        instance: String,
        reason: StopReason,
    },
    /// An instance that ended, or that a lost node held: its record goes.
    Forget { instance: String },
    /// An app's record changes: its launch backoff, its instance counter,
    /// its deployment.
    UpdateApp {
        app: AppId,
        launches: Launches,
        next_instance: u64,
        deployment: Option<Deployment>,
    },
    /// A failed deployment rolls back: the app runs the definition of
    /// `config` again, as its version `version`, by the deployment the
    /// app's update that follows carries; `failed` is kept in the app's
    /// history.
    Rollback {
        app: AppId,
        version: u64,
        config: u64,
        failed: Deployment,
    },
    /// A removed app whose instances are all gone.
    DeleteApp { app: AppId },
    /// Why an app is short of instances (`strata app show`), or `None`
    /// once it is not.
    Waiting { app: AppId, reason: Option<String> },
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Start {
                instance,
                node,
                host_ports,
                ..
            } => {
                write!(f, "start {instance} on {node}")?;
                let ports: Vec<String> = host_ports.iter().flatten().map(u16::to_string).collect();
                if !ports.is_empty() {
                    write!(f, " ports {}", ports.join(","))?;
                }
                Ok(())
            }
            Action::Stop { instance, reason } => write!(f, "stop {instance} ({reason:?})"),
            Action::Forget { instance } => write!(f, "forget {instance}"),
            Action::UpdateApp {
                app,
                launches,
                deployment,
                ..
            } => {
                write!(f, "update {app}")?;
                if launches.failures > 0 {
                    write!(
                        f,
                        " backoff {} since {}",
                        launches.failures, launches.last_failure_at
                    )?;
                }
                if let Some(d) = deployment {
                    write!(f, " deployment {} {}", d.id, d.state)?;
                    if let Some(r) = &d.reason {
                        write!(f, " ({r})")?;
                    }
                }
                Ok(())
            }
            Action::Rollback {
                app,
                version,
                config,
                failed,
            } => write!(
                f,
                "roll {app} back to the definition of version {config} as version {version}: {} {}{}",
                failed.id,
                failed.state,
                failed
                    .reason
                    .as_ref()
                    .map_or(String::new(), |r| format!(" ({r})"))
            ),
            Action::DeleteApp { app } => write!(f, "delete {app}"),
            Action::Waiting { app, reason } => match reason {
                Some(r) => write!(f, "{app} waits: {r}"),
                None => write!(f, "{app} waits no more"),
            },
        }
    }
}

/// What the scheduler does next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub actions: Vec<Action>,
}

/// The id of the deployment that makes `version` of `app`
/// (`shop.web-3`).
pub fn deployment_id(app: &AppId, version: u64) -> String {
    format!("{}-{version}", app.key())
}

/// The id of an app's `n`th instance of `version`: the app's DNS label,
/// the version and the number (`web-shop.3.17`).
pub fn instance_id(app: &AppId, version: u64, n: u64) -> String {
    format!("{}.{version}.{n}", app.dns_label())
}

/// What the placer counts of `world`: its nodes, and what the pinned
/// tasks and the instances that have not ended hold.
pub fn snapshot(world: &World) -> Snapshot {
    Snapshot {
        nodes: world.nodes.iter().map(|n| n.view.clone()).collect(),
        allocs: world
            .pinned
            .iter()
            .cloned()
            .chain(
                world
                    .instances
                    .iter()
                    .filter(|i| !i.ended())
                    .map(Instance::alloc),
            )
            .collect(),
    }
}

/// What the scheduler does next, given the world at `now` (unix seconds)
/// and why apps wait (`waiting`, as the last plan left it, so that an
/// unchanged reason is not written again).
pub fn plan(world: &World, now: u64, waiting: &BTreeMap<AppId, String>) -> Plan {
    let mut out = Plan::default();
    let mut placer = Placer::new(&snapshot(world));
    let unreachable: BTreeMap<&str, u64> = world
        .nodes
        .iter()
        .filter_map(|n| n.unreachable_since.map(|s| (n.view.name.as_str(), s)))
        .collect();
    let draining: BTreeMap<&str, u64> = world
        .nodes
        .iter()
        .filter_map(|n| n.drain_deadline.map(|d| (n.view.name.as_str(), d)))
        .collect();
    let known: BTreeSet<&AppId> = world.apps.iter().map(|a| &a.spec.id).collect();
    let healthy_apps: BTreeSet<&AppId> = world
        .apps
        .iter()
        .filter(|a| settled(a, &world.instances))
        .map(|a| &a.spec.id)
        .collect();

    // Stops that no node carried out in time are given up: the record
    // goes, and the node stops what it no longer finds assigned.
    for i in &world.instances {
        let grace = world
            .apps
            .iter()
            .find(|a| a.spec.id == i.app)
            .map_or(0, |a| a.spec.kill_grace_seconds);
        if i.stopping
            && !i.ended()
            && i.stopping_since
                .is_some_and(|s| now >= s + grace + STOP_TIMEOUT_SECONDS)
        {
            out.actions.push(Action::Forget {
                instance: i.id.clone(),
            });
        }
    }
    // Instances of apps that are gone.
    for i in &world.instances {
        if !known.contains(&i.app) {
            if i.ended() {
                out.actions.push(Action::Forget {
                    instance: i.id.clone(),
                });
            } else if !i.stopping {
                out.actions.push(Action::Stop {
                    instance: i.id.clone(),
                    reason: StopReason::Orphaned,
                });
            }
        }
    }
    for app in &world.apps {
        let mine: Vec<&Instance> = world
            .instances
            .iter()
            .filter(|i| i.app == app.spec.id)
            .collect();
        let ready = app.spec.dependencies.iter().all(|d| {
            !known.contains(d)
                || healthy_apps.contains(d)
                || is_group_ready(d, &world.apps, &healthy_apps)
        });
        let mut one = AppPlan {
            app,
            now,
            unreachable: &unreachable,
            draining: &draining,
            placer: &mut placer,
            actions: Vec::new(),
            launches: app.launches,
            next_instance: app.next_instance,
            deployment: app.deployment.clone(),
            waiting: None,
            dependencies_ready: ready,
        };
        one.run(&mine);
        let changed_app = one.launches != app.launches
            || one.next_instance != app.next_instance
            || one.deployment != app.deployment;
        let waiting_now = one.waiting.clone();
        let mut actions = std::mem::take(&mut one.actions);
        if changed_app && !app.removing {
            actions.push(Action::UpdateApp {
                app: app.spec.id.clone(),
                launches: one.launches,
                next_instance: one.next_instance,
                deployment: one.deployment.clone(),
            });
        }
        if waiting.get(&app.spec.id) != waiting_now.as_ref() {
            actions.push(Action::Waiting {
                app: app.spec.id.clone(),
                reason: waiting_now,
            });
        }
        out.actions.extend(actions);
    }
    out
}

/// A dependency on a group: every app under it is settled.
fn is_group_ready(group: &AppId, apps: &[AppState], healthy: &BTreeSet<&AppId>) -> bool {
    let under: Vec<&AppId> = apps
        .iter()
        .map(|a| &a.spec.id)
        .filter(|id| id.is_under(group))
        .collect();
    !under.is_empty() && under.iter().all(|id| healthy.contains(id))
}

/// Whether an app is at its instances, all healthy, with no deployment
/// under way: what apps that depend on it wait for.
fn settled(app: &AppState, instances: &[Instance]) -> bool {
    let rolling = app.deployment.as_ref().is_some_and(|d| !d.state.is_done());
    let healthy = instances
        .iter()
        .filter(|i| {
            i.app == app.spec.id && i.version == app.config_version && !i.stopping && i.healthy()
        })
        .count();
    !rolling && healthy >= app.spec.instances as usize
}

struct AppPlan<'a> {
    app: &'a AppState,
    now: u64,
    unreachable: &'a BTreeMap<&'a str, u64>,
    /// Drained nodes and their drains' deadlines.
    draining: &'a BTreeMap<&'a str, u64>,
    placer: &'a mut Placer,
    actions: Vec<Action>,
    launches: Launches,
    next_instance: u64,
    deployment: Option<Deployment>,
    waiting: Option<String>,
    dependencies_ready: bool,
}

impl AppPlan<'_> {
    fn run(&mut self, mine: &[&Instance]) {
        let spec = &self.app.spec;
        let n = spec.instances as usize;
        // Instances that ended, and those a lost node holds, go; what
        // ended by itself counts as a launch failure.
        let mut alive: Vec<&Instance> = Vec::new();
        for &i in mine {
            if i.ended() {
                self.actions.push(Action::Forget {
                    instance: i.id.clone(),
                });
                if !i.stopping {
                    self.failed(i);
                }
                continue;
            }
            if self.lost(i) {
                if !i.stopping {
                    self.actions.push(Action::Stop {
                        instance: i.id.clone(),
                        reason: StopReason::NodeLost,
                    });
                }
                if self.expunged(i) {
                    self.actions.push(Action::Forget {
                        instance: i.id.clone(),
                    });
                }
                // Not counted: a replacement starts elsewhere.
                self.placer.remove(&i.alloc());
                continue;
            }
            alive.push(i);
        }
        if self.app.removing {
            for i in &alive {
                if !i.stopping {
                    self.actions.push(Action::Stop {
                        instance: i.id.clone(),
                        reason: StopReason::AppRemoved,
                    });
                }
            }
            if alive.is_empty() && mine.iter().all(|i| i.ended() || self.expunged(i)) {
                self.actions.push(Action::DeleteApp {
                    app: spec.id.clone(),
                });
            }
            return;
        }
        // Instances still running count against the cap until they are
        // gone, stopping or not.
        let total_alive = alive.len();
        let active: Vec<&Instance> = alive.iter().copied().filter(|i| !i.stopping).collect();
        let (new, mut old): (Vec<&Instance>, Vec<&Instance>) = active
            .iter()
            .partition(|i| i.version == self.app.config_version);
        // Instances of the version on drained nodes are replaced as old
        // ones are.
        let (leaving, new): (Vec<&Instance>, Vec<&Instance>) = new
            .into_iter()
            .partition(|i| self.draining.contains_key(i.node.as_str()));
        let over = (n as f64 * spec.upgrade_strategy.maximum_over_capacity).floor() as usize;
        let min_healthy =
            (n as f64 * spec.upgrade_strategy.minimum_health_capacity).ceil() as usize;
        let rolling = self.deployment.as_ref().is_some_and(|d| !d.state.is_done());
        if !rolling {
            self.steady(n, over, min_healthy, &new, &old, &leaving, total_alive);
            return;
        }
        old.extend(leaving);
        self.roll(n, over, min_healthy, &new, &old, total_alive);
    }

    /// No deployment under way: keep `n` instances of the version, within
    /// the cap (what is stopping still counts until it is gone). Those on
    /// drained nodes (`leaving`) are replaced, and each goes once the
    /// health floor holds without it, or at its drain's deadline.
    #[allow(clippy::too_many_arguments)]
    fn steady(
        &mut self,
        n: usize,
        over: usize,
        min_healthy: usize,
        new: &[&Instance],
        old: &[&Instance],
        leaving: &[&Instance],
        total_alive: usize,
    ) {
        // Leftovers of other versions (a deployment that ended early).
        for i in old {
            self.stop(i, StopReason::Replaced);
        }
        let floor = min_healthy.min(n);
        let mut healthy = new.iter().chain(leaving).filter(|i| i.healthy()).count();
        for &i in &self.kill_order(leaving) {
            let due = self
                .draining
                .get(i.node.as_str())
                .is_some_and(|&deadline| self.now >= deadline);
            if i.healthy() && !due && healthy <= floor {
                // Needed until a replacement is healthy.
                continue;
            }
            if i.healthy() {
                healthy -= 1;
            }
            self.stop(i, StopReason::Drained);
        }
        if new.len() > n {
            for i in self.kill_order(new).into_iter().take(new.len() - n) {
                self.stop(i, StopReason::ScaledDown);
            }
        }
        let room = (n + over).saturating_sub(total_alive);
        self.start(n.saturating_sub(new.len()).min(room));
        if new.len() >= n && new.iter().all(|i| i.healthy()) && self.launches.failures > 0 {
            self.launches = Launches::default();
        }
    }

    /// A deployment under way: start new instances within the cap, stop
    /// old ones as the health floor allows, and finish, or fail and roll
    /// back.
    fn roll(
        &mut self,
        n: usize,
        over: usize,
        min_healthy: usize,
        new: &[&Instance],
        old: &[&Instance],
        total_alive: usize,
    ) {
        let Some(mut d) = self.deployment.clone() else {
            return;
        };
        let canaries_only = d.canary > 0 && !d.promoted;
        let cap = if canaries_only {
            n.max(old.len()) + d.canary as usize
        } else {
            n + over
        };
        let want_new = if canaries_only {
            (d.canary as usize).min(n)
        } else {
            n
        };
        // Surplus new instances (a scale down within a deployment).
        let mut new: Vec<&Instance> = new.to_vec();
        if new.len() > want_new {
            let surplus = new.len() - want_new;
            for i in self.kill_order(&new).into_iter().take(surplus) {
                self.stop(i, StopReason::ScaledDown);
            }
            let stopped: BTreeSet<&str> = self
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Stop { instance, .. } => Some(instance.as_str()),
                    _ => None,
                })
                .collect();
            new.retain(|i| !stopped.contains(i.id.as_str()));
        }
        let healthy_new = new.iter().filter(|i| i.healthy()).count();
        let healthy_old = old.iter().filter(|i| i.healthy()).count();
        // Done?
        if !canaries_only && healthy_new >= n && old.is_empty() && total_alive <= n {
            d.state = DeploymentState::Succeeded;
            self.deployment = Some(d);
            self.launches = Launches::default();
            return;
        }
        if canaries_only && healthy_new >= want_new {
            if d.state != DeploymentState::WaitingPromotion {
                d.state = DeploymentState::WaitingPromotion;
                self.deployment = Some(d);
            }
            return;
        }
        // Failed?
        let threshold = (n as u32).max(1) + 2;
        let why = if self.now >= d.deadline_at {
            Some(format!(
                "not healthy by its deadline: {healthy_new} of {want_new} new instances healthy"
            ))
        } else if d.failures >= threshold {
            Some(format!(
                "{} new instances ended before they were healthy",
                d.failures
            ))
        } else {
            None
        };
        if let Some(why) = why {
            d.state = DeploymentState::Failed;
            d.reason = Some(why);
            match d.previous {
                Some(previous) => {
                    // The rollback is a deployment of its own, to a new
                    // version holding the previous definition; if it fails
                    // too, it stops there (it has no previous).
                    let version = self.app.version + 1;
                    let rb = Deployment::new(
                        deployment_id(&self.app.spec.id, version),
                        DeploymentKind::Rollback,
                        (version, previous),
                        None,
                        self.now,
                        d.deadline_at.saturating_sub(d.started_at).max(60),
                    );
                    self.actions.push(Action::Rollback {
                        app: self.app.spec.id.clone(),
                        version,
                        config: previous,
                        failed: d,
                    });
                    self.deployment = Some(rb);
                    // The failures were the failed version's.
                    self.launches = Launches::default();
                }
                None => self.deployment = Some(d),
            }
            return;
        }
        // Stop old instances: those that are not healthy at once, healthy
        // ones while the floor holds.
        if !canaries_only {
            let mut healthy_now = healthy_new + healthy_old;
            for i in self.kill_order(old) {
                if !i.healthy() {
                    self.stop(i, StopReason::Replaced);
                } else if healthy_now > min_healthy {
                    self.stop(i, StopReason::Replaced);
                    healthy_now -= 1;
                }
            }
        }
        // Start new ones within the cap (what is stopping still counts).
        let room = cap.saturating_sub(total_alive);
        let missing = want_new.saturating_sub(new.len()).min(room);
        self.start(missing);
        if self.deployment.as_ref() != Some(&d) {
            self.deployment = Some(d);
        }
    }

    /// Starts up to `count` instances of the app's version, as the launch
    /// backoff, the dependencies and the cluster allow.
    fn start(&mut self, count: usize) {
        if count == 0 {
            self.waiting = None;
            return;
        }
        let spec = &self.app.spec;
        if !self.dependencies_ready {
            self.waiting = Some("its dependencies are not healthy yet".into());
            return;
        }
        let next_at = self.launches.next_at(spec);
        if self.now < next_at {
            self.waiting = Some(format!(
                "launch backoff after {} failure{}: next start at {next_at}",
                self.launches.failures,
                if self.launches.failures == 1 { "" } else { "s" }
            ));
            return;
        }
        let strategy = spec.placement;
        for k in 0..count {
            match self.placer.place(spec, strategy) {
                Ok(p) => {
                    let config = self.app.config_version;
                    let id = instance_id(&spec.id, config, self.next_instance);
                    self.next_instance += 1;
                    self.actions.push(Action::Start {
                        app: spec.id.clone(),
                        version: config,
                        instance: id,
                        node: p.node,
                        host_ports: p.host_ports,
                    });
                }
                Err(e) => {
                    self.waiting = Some(format!("{} of {count} instances placed: {e}", k));
                    return;
                }
            }
        }
        self.waiting = None;
    }

    fn stop(&mut self, i: &Instance, reason: StopReason) {
        self.actions.push(Action::Stop {
            instance: i.id.clone(),
            reason,
        });
        self.placer.remove(&i.alloc());
    }

    /// An instance that ended before it was stopped.
    fn failed(&mut self, i: &Instance) {
        self.launches.failures += 1;
        self.launches.last_failure_at = self.now;
        if let Some(d) = &mut self.deployment
            && !d.state.is_done()
            && i.version == d.config
        {
            d.failures += 1;
        }
    }

    /// Whether the instance's node has been unreachable past the app's
    /// grace.
    fn lost(&self, i: &Instance) -> bool {
        let Some(&since) = self.unreachable.get(i.node.as_str()) else {
            return false;
        };
        match self.app.spec.unreachable_strategy {
            UnreachableStrategy::Disabled => false,
            UnreachableStrategy::Enabled {
                inactive_after_seconds,
                ..
            } => self.now >= since + inactive_after_seconds,
        }
    }

    /// Whether a lost instance's record may go.
    fn expunged(&self, i: &Instance) -> bool {
        let Some(&since) = self.unreachable.get(i.node.as_str()) else {
            return false;
        };
        match self.app.spec.unreachable_strategy {
            UnreachableStrategy::Disabled => false,
            UnreachableStrategy::Enabled {
                inactive_after_seconds,
                expunge_after_seconds,
            } => self.now >= since + inactive_after_seconds.max(expunge_after_seconds),
        }
    }

    /// Which instances go first: those not running or not healthy, then by
    /// the app's kill selection (ties by id).
    fn kill_order<'i>(&self, list: &[&'i Instance]) -> Vec<&'i Instance> {
        let mut v = list.to_vec();
        let youngest = self.app.spec.kill_selection != KillSelection::OldestFirst;
        v.sort_by(|a, b| {
            let rank = |i: &Instance| (i.state == TaskState::Running, i.healthy());
            rank(a)
                .cmp(&rank(b))
                .then_with(|| {
                    if youngest {
                        b.created_at.cmp(&a.created_at)
                    } else {
                        a.created_at.cmp(&b.created_at)
                    }
                })
                .then_with(|| a.id.cmp(&b.id))
        });
        v
    }
}

pub mod apply;
pub mod simulate;

#[cfg(test)]
mod tests;
