//! What the cluster keeps about apps in etcd, and the bodies of the app
//! routes. Stored and wire types: they read what a newer writer wrote.

use serde::{Deserialize, Serialize};

use super::{AppId, AppSpec};
use crate::deploy::{AppState, Deployment, DeploymentKind, Launches};
use crate::format::Format;

/// How many deployments an app record keeps (newest last).
pub const DEPLOYMENTS_KEPT: usize = 10;

/// An app (`/strata/apps/<key>`, the key being [`AppId::key`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// The definition it runs now.
    pub spec: AppSpec,
    /// Every change makes a version.
    pub version: u64,
    /// The version whose definition (all but `instances`) it runs.
    pub config_version: u64,
    /// Its latest deployments, newest last.
    #[serde(default)]
    pub deployments: Vec<Deployment>,
    #[serde(default)]
    pub launches: Launches,
    #[serde(default)]
    pub next_instance: u64,
    /// `strata app remove` asked: its instances stop, then it goes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
    /// Why it is short of instances, as the scheduler last found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
}

impl AppRecord {
    /// Its latest deployment.
    pub fn deployment(&self) -> Option<&Deployment> {
        self.deployments.last()
    }

    /// What the scheduler plans from.
    pub fn state(&self) -> AppState {
        AppState {
            spec: self.spec.clone(),
            version: self.version,
            config_version: self.config_version,
            deployment: self.deployment().cloned(),
            launches: self.launches,
            next_instance: self.next_instance,
            removing: self.removing,
        }
    }

    /// Records `d` as the latest deployment: it replaces the entry with
    /// its id, or is appended (the oldest done ones dropped past
    /// [`DEPLOYMENTS_KEPT`]).
    pub fn set_deployment(&mut self, d: Deployment) {
        match self.deployments.iter_mut().find(|x| x.id == d.id) {
            Some(x) => *x = d,
            None => {
                self.deployments.push(d);
                while self.deployments.len() > DEPLOYMENTS_KEPT {
                    self.deployments.remove(0);
                }
            }
        }
    }
}

/// One version of an app (`/strata/app-versions/<key>/<version>`, the
/// version zero-padded to 20 digits so that keys sort).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersion {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub version: u64,
    pub config_version: u64,
    pub kind: DeploymentKind,
    pub spec: AppSpec,
    pub at: u64,
}

/// What a task that is an app's instance records about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceOf {
    pub app: AppId,
    /// The definition it runs.
    pub version: u64,
    /// The scratch disk it was placed with, in MiB (the task's spec has
    /// no disk of its own).
    #[serde(default, skip_serializing_if = "is_zero64")]
    pub disk_mib: u64,
}

fn is_zero64(n: &u64) -> bool {
    *n == 0
}

/// The master that runs the scheduler (`/strata/scheduler/leader`, bound
/// to its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    /// The master's node name.
    pub name: String,
    /// Unix seconds since it leads.
    pub since: u64,
}

/// `POST /v1/apps`: deploy the apps of one file (in dependency order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub apps: Vec<AppSpec>,
    /// Start this many new instances beside the old ones and wait for a
    /// promotion.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub canary: u32,
    /// Plan and answer; store nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What a deploy (or a scale, restart, rollback) made, per app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployOutcome {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub app: AppId,
    pub version: u64,
    /// The deployment started (none when nothing changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<Deployment>,
    /// With `dry_run`: the steps the deployment would take, assuming every
    /// new instance turns healthy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<String>,
}

/// `POST /v1/apps/{key}/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleRequest {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    pub instances: u32,
}

/// One instance as `app show` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub id: String,
    pub node: String,
    pub version: u64,
    pub state: crate::task::TaskState,
    #[serde(default)]
    pub health: crate::task::Health,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopping: bool,
}

/// An app as `GET /v1/apps` and `GET /v1/apps/{key}` return it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    /// The record's format ([`Format`]; absent means 1).
    #[serde(default, skip_serializing_if = "Format::is_v1")]
    pub format: Format,
    #[serde(flatten)]
    pub record: AppRecord,
    #[serde(default)]
    pub instances: Vec<InstanceView>,
    /// The address of each named VIP its ports ask for, once leased
    /// (`strata app show`); absent from older masters.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub vip_addresses: std::collections::BTreeMap<String, std::net::Ipv4Addr>,
    /// Where outside clients reach its exposed ports (`strata app show`);
    /// absent from older masters and from the app list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exposed: Vec<crate::edge::ExposedView>,
}

impl AppView {
    /// Instances running and healthy (or running, without checks).
    pub fn healthy(&self) -> usize {
        let checked = !self.record.spec.health_checks.is_empty();
        self.instances
            .iter()
            .filter(|i| {
                !i.stopping
                    && i.state == crate::task::TaskState::Running
                    && (!checked || i.health == crate::task::Health::Healthy)
            })
            .count()
    }

    /// Instances running (stopping ones aside).
    pub fn running(&self) -> usize {
        self.instances
            .iter()
            .filter(|i| !i.stopping && i.state == crate::task::TaskState::Running)
            .count()
    }
}
