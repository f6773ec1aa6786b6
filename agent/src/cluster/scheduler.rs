//! The scheduler's leader loop, on every master: campaign for the
//! leadership (a lease-bound key in etcd); while leading, read one
//! snapshot, plan with `control::deploy::plan`, commit the plan fenced on
//! the leadership and the snapshot's revision, and wait for the next
//! change. A standby master campaigns again as soon as the key is gone
//! (the leader's lease expires [`LEASE_TTL`] seconds after it died).
//!
//! Once the apps' plan of a snapshot writes nothing, the leader plans the
//! jobs' round on it (`control::job::apply::round`): their schedules fire
//! and their runs are placed with the same count of what each node has
//! free, and the round is committed fenced the same way.
//!
//! The leader also drives a cluster upgrade under way
//! ([`crate::cluster::rollout`]), a round per tick.
//!
//! When a node stopped answering is the leader's own memory: a new leader
//! counts a node's unreachable time from when it first saw it, so after a
//! failover the replacement of a lost node's instances waits up to the
//! app's grace again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use control::app::AppId;
use control::deploy::apply::{self, Reserve};
use control::job;
use control::model::NodeState;
use control::schedule::Placer;

use crate::etcd::Store;
use crate::etcd::apps::Leadership;

/// Seconds the leader's lease lives without renewal: how long a dead
/// leader keeps the others waiting.
pub const LEASE_TTL: i64 = 5;
/// How often a standby master tries for the leadership.
const CAMPAIGN_EVERY: Duration = Duration::from_secs(1);
/// How often the leader plans when nothing changes (launch backoffs,
/// deadlines and grace periods run out without a change in etcd).
const TICK: Duration = Duration::from_secs(1);
/// How often the leader renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// What the leader loop needs.
#[derive(Clone)]
pub struct Scheduler {
    pub store: Store,
    /// This master's node name.
    pub name: String,
    pub reserve: Reserve,
}

impl Scheduler {
    /// Campaigns and leads, for as long as the master runs.
    pub async fn run(self) {
        loop {
            match self
                .store
                .campaign(&self.name, LEASE_TTL, crate::clock::unix_secs())
                .await
            {
                Ok(Some(lead)) => {
                    tracing::info!("scheduler: {} leads the scheduler", self.name);
                    let why = self.lead(lead).await;
                    tracing::info!("scheduler: {} stopped leading: {why}", self.name);
                }
                Ok(None) => {}
                Err(e) => tracing::debug!("scheduler: cannot campaign: {e}"),
            }
            tokio::time::sleep(CAMPAIGN_EVERY).await;
        }
    }

    /// Leads until the leadership is lost; returns why.
    async fn lead(&self, mut lead: Leadership) -> String {
        let mut unreachable: BTreeMap<String, u64> = BTreeMap::new();
        let mut renewed = tokio::time::Instant::now();
        let mut rolled = tokio::time::Instant::now();
        loop {
            if renewed.elapsed() >= RENEW_EVERY {
                match self.store.keep_leading(&mut lead).await {
                    Ok(true) => renewed = tokio::time::Instant::now(),
                    Ok(false) => return "its lease expired".into(),
                    Err(e) => return format!("cannot renew its lease: {e}"),
                }
            }
            // A cluster upgrade under way goes on a round per tick.
            if rolled.elapsed() >= TICK {
                rolled = tokio::time::Instant::now();
                let now = crate::clock::unix_secs();
                if let Err(e) = crate::cluster::rollout::step(&self.store, &lead, now).await {
                    tracing::warn!("rollout: {e:#}");
                }
            }
            match self.step(&lead, &mut unreachable).await {
                // A short pause: a plan that keeps changing things must not
                // hammer etcd.
                Ok(Step::Again) => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(Step::Wait(revision, wake_at)) => {
                    let wait = until(wake_at, crate::clock::unix_millis());
                    self.store.wait_scheduler_input(revision, wait).await;
                }
                Err(e) => {
                    tracing::warn!("scheduler: {e:#}");
                    tokio::time::sleep(TICK).await;
                }
            }
        }
    }

    /// One round: snapshot, plan, commit.
    async fn step(
        &self,
        lead: &Leadership,
        unreachable: &mut BTreeMap<String, u64>,
    ) -> anyhow::Result<Step> {
        let now = crate::clock::unix_secs();
        let snap = self.store.scheduler_snapshot().await?;
        // Remember since when each node is unreachable.
        unreachable.retain(|name, _| {
            snap.nodes
                .iter()
                .any(|n| &n.record.info.name == name && n.state != NodeState::Ready)
        });
        for n in &snap.nodes {
            if n.state != NodeState::Ready {
                unreachable.entry(n.record.info.name.clone()).or_insert(now);
            }
        }
        // What the records say apps wait for: the plan writes only what
        // changed.
        let waiting: BTreeMap<AppId, String> = snap
            .apps
            .iter()
            .filter_map(|a| a.waiting.clone().map(|w| (a.spec.id.clone(), w)))
            .collect();
        let world = apply::world(
            &snap.nodes,
            unreachable,
            &snap.apps,
            &snap.tasks,
            &snap.reports,
            self.reserve,
        );
        let plan = control::deploy::plan(&world, now, &waiting);
        if !plan.actions.is_empty() {
            let mut definitions = BTreeMap::new();
            for (app, config) in apply::rollback_targets(&plan) {
                if let Some(v) = self.store.app_version(&app, config).await? {
                    definitions.insert((app, config), v.spec);
                }
            }
            let changes = apply::changes(&plan, &snap.apps, &snap.tasks, &definitions, now);
            if !changes.is_empty() {
                if self
                    .store
                    .commit_plan(lead, snap.revision, &changes)
                    .await?
                {
                    for a in &plan.actions {
                        tracing::info!("scheduler: {a}");
                    }
                } else {
                    // Someone changed the state since the snapshot (or
                    // the leadership is gone): plan again from a new one.
                    tracing::debug!(
                        "scheduler: plan at revision {} refused: planning again",
                        snap.revision
                    );
                }
                return Ok(Step::Again);
            }
        }
        // The apps are settled at this revision: the jobs' round places
        // runs on what the apps' instances and the tasks leave free.
        let mut placer = Placer::new(&control::deploy::snapshot(&world));
        let ready: BTreeSet<String> = snap
            .nodes
            .iter()
            .filter(|n| n.state == NodeState::Ready)
            .map(|n| n.record.info.name.clone())
            .collect();
        let round = job::apply::round(
            &job::apply::Input {
                jobs: &snap.jobs.jobs,
                states: &snap.jobs.states,
                runs: &snap.jobs.runs,
                tasks: &snap.tasks,
                reports: &snap.reports,
                ready: &ready,
                history: job::apply::DEFAULT_HISTORY,
            },
            now,
            &mut placer,
        );
        if round.changes.is_empty() {
            // A second the round has seen is not one to wake at.
            let wake_at = round.wake_at.filter(|&at| at > now);
            return Ok(Step::Wait(snap.revision, wake_at));
        }
        if self
            .store
            .commit_jobs(lead, snap.revision, &round.changes)
            .await?
        {
            for line in &round.lines {
                tracing::info!("jobs: {line}");
            }
        } else {
            tracing::debug!(
                "jobs: round at revision {} refused: planning again",
                snap.revision
            );
        }
        Ok(Step::Again)
    }
}

enum Step {
    /// Plan again at once.
    Again,
    /// Nothing to do: wait for a change after this revision, a tick, or
    /// the second the jobs' round asked to be woken at (unix seconds),
    /// whichever comes first.
    Wait(i64, Option<u64>),
}

/// How long the leader waits for a change when the jobs' round asked to
/// be woken at `wake_at` (unix seconds, later than the round's own second)
/// and it is `now_ms` (unix milliseconds): until that second begins, at
/// most a tick; not at all once it has begun.
pub(crate) fn until(wake_at: Option<u64>, now_ms: u64) -> Duration {
    match wake_at {
        Some(at) => Duration::from_millis(at.saturating_mul(1000).saturating_sub(now_ms)).min(TICK),
        None => TICK,
    }
}
