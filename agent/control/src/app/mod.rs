//! Apps: long-running workloads the cluster keeps at `instances` copies,
//! shaped like Marathon's. [`AppSpec`] is what the API stores and sends
//! (tolerant: it reads what a newer writer wrote); the files operators
//! write are read by [`read`], from Marathon's JSON ([`marathon`]) or from
//! Strata's TOML ([`native`]), and checked by [`AppSpec::check`], which
//! reports every mistake with its place instead of stopping at the first.

pub mod doc;
pub mod expose;
pub mod group;
pub mod instance;
pub mod marathon;
pub mod native;
pub mod record;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

pub use doc::{Place, Problem, Syntax};
pub use expose::{Exposure, VipSpec};
pub use group::{AppFile, FileError, read};

/// The most instances one app may ask for.
pub const MAX_INSTANCES: u32 = 10_000;
/// Resource bounds no node could exceed: refused before any cluster is
/// asked.
pub const MAX_CPUS: f64 = 1024.0;
pub const MAX_MEM_MIB: f64 = 16.0 * 1024.0 * 1024.0;
pub const MAX_DISK_MIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// The smallest memory an app may ask for (a task's floor, 4 MiB).
pub const MIN_MEM_MIB: f64 = 4.0;

/// An app's id: an absolute path of groups and the app's name,
/// `/shop/web`. Each part is a DNS label (lowercase letters, digits and
/// `-`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AppId(String);

impl AppId {
    /// Resolves `text` (absolute `/a/b`, or relative to `base`, with `..`
    /// for the parent) and checks each part.
    pub fn resolve(base: &AppId, text: &str) -> Result<AppId, String> {
        let mut parts: Vec<&str> = if text.starts_with('/') {
            Vec::new()
        } else {
            base.parts().collect()
        };
        for part in text.split('/').filter(|p| !p.is_empty() && *p != ".") {
            if part == ".." {
                if parts.pop().is_none() {
                    return Err(format!("id {text:?} climbs above the root group"));
                }
            } else {
                parts.push(part);
            }
        }
        if parts.is_empty() {
            return Err(format!("id {text:?} names the root group, not an app"));
        }
        for part in &parts {
            check_label(part).map_err(|why| format!("id {text:?}: part {part:?} {why}"))?;
        }
        Ok(AppId(format!("/{}", parts.join("/"))))
    }

    /// What the placer counts a job's runs under: a name no app can have
    /// (its first part starts with a dot), so that UNIQUE and MAX_PER count
    /// the job's own runs only.
    pub fn for_job(job: &crate::job::JobId) -> AppId {
        AppId(format!("/.job/{job}"))
    }

    /// The root group, `/`.
    pub fn root() -> AppId {
        AppId(String::from("/"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as one path segment and etcd key part: its parts joined by
    /// `.` (`/shop/web` is `shop.web`), which no part holds.
    pub fn key(&self) -> String {
        self.parts().collect::<Vec<_>>().join(".")
    }

    /// Reads [`AppId::key`] (or an id written with `/`).
    pub fn from_key(key: &str) -> Result<AppId, String> {
        AppId::resolve(&AppId::root(), &format!("/{}", key.replace('.', "/")))
    }

    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|p| !p.is_empty())
    }

    /// Whether this id is `group` or lies under it.
    pub fn is_under(&self, group: &AppId) -> bool {
        group.0 == "/"
            || self.0 == group.0
            || self
                .0
                .strip_prefix(&group.0)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The app's DNS label, its parts from the name up joined by `-`, as
    /// Mesos-DNS names them (`/shop/web` answers as `web-shop.<zone>`).
    pub fn dns_label(&self) -> String {
        let parts: Vec<&str> = self.parts().collect();
        parts.into_iter().rev().collect::<Vec<_>>().join("-")
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a DNS label: 1-63 lowercase letters, digits and `-`, not at
/// either end.
pub fn check_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err("is not a DNS label: use 1-63 lowercase letters, digits or '-', not starting or ending with '-'".into())
    }
}

/// One app, as the API stores and sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub id: AppId,
    /// The container image (`registry/repo:tag`).
    pub image: String,
    /// Pull the image again at every start, even if the node has it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force_pull_image: bool,
    /// A shell command (`/bin/sh -c`), or `args` replacing the image's
    /// command; at most one of the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub instances: u32,
    /// Cores (0.5 = half a core).
    pub cpus: f64,
    /// Memory in MiB, as Marathon counts it.
    pub mem: f64,
    /// Scratch disk in MiB.
    #[serde(default)]
    pub disk: f64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Host ports must be the ones written (no assignment).
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_ports: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheck>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<Constraint>,
    /// Which agents may run it; empty means private agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_roles: Vec<AgentRole>,
    /// How instances spread over the nodes that may take them
    /// (Marathon's JSON: the label `strata.placement`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub placement: crate::schedule::Strategy,
    #[serde(default)]
    pub upgrade_strategy: UpgradeStrategy,
    #[serde(default)]
    pub backoff: LaunchBackoff,
    #[serde(default)]
    pub kill_selection: KillSelection,
    #[serde(default)]
    pub unreachable_strategy: UnreachableStrategy,
    /// Seconds between SIGTERM and SIGKILL.
    #[serde(default = "default_kill_grace")]
    pub kill_grace_seconds: u64,
    /// Apps that must be deployed (and healthy) before this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<AppId>,
}

fn is_false(b: &bool) -> bool {
    !b
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn default_kill_grace() -> u64 {
    10
}

/// A port of the app's tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    /// Names the port's SRV record (`_<name>._<proto>.<app>.<zone>`) and its
    /// `PORT_<NAME>` variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port the task listens on; `None` when it listens on its host
    /// port (Marathon's host networking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u16>,
    /// The node's port forwarded to the task: `Some(0)` assigned by the
    /// scheduler, `None` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    /// The port the edge proxy serves the app on (Marathon's service port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_port: Option<u16>,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How the edge proxy on the public agents serves the port (an older
    /// writer sent none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<Exposure>,
    /// The service addresses every node balances over the port's healthy
    /// instances.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<VipSpec>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    /// Both, on the same number.
    TcpUdp,
    #[serde(other)]
    Unknown,
}

impl Protocol {
    /// Parses Marathon's `tcp`, `udp` or `udp,tcp`.
    pub fn parse(text: &str) -> Option<Protocol> {
        let mut parts: Vec<&str> = text.split(',').map(str::trim).collect();
        parts.sort_unstable();
        parts.dedup();
        match parts.as_slice() {
            ["tcp"] => Some(Protocol::Tcp),
            ["udp"] => Some(Protocol::Udp),
            ["tcp", "udp"] => Some(Protocol::TcpUdp),
            _ => None,
        }
    }

    fn overlaps(self, other: Protocol) -> bool {
        self == other || self == Protocol::TcpUdp || other == Protocol::TcpUdp
    }
}

/// How the agent checks that a task is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    pub protocol: HealthProtocol,
    /// HTTP(S): the path requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Which of the app's ports is checked ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_index: Option<u32>,
    /// ... or a fixed port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// COMMAND: run with `/bin/sh -c` inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default = "default_grace_period")]
    pub grace_period_seconds: u32,
    #[serde(default = "default_interval")]
    pub interval_seconds: u32,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// Failures in a row after which the task is killed; 0 never kills.
    #[serde(default = "default_failures")]
    pub max_consecutive_failures: u32,
    /// HTTP(S): a 1xx answer counts as neither healthy nor failed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_http1xx: bool,
}

fn default_grace_period() -> u32 {
    300
}
fn default_interval() -> u32 {
    60
}
fn default_timeout() -> u32 {
    20
}
fn default_failures() -> u32 {
    3
}

impl HealthCheck {
    /// A check of `protocol` with Marathon's defaults.
    pub fn new(protocol: HealthProtocol) -> HealthCheck {
        HealthCheck {
            protocol,
            path: None,
            port_index: None,
            port: None,
            command: None,
            grace_period_seconds: default_grace_period(),
            interval_seconds: default_interval(),
            timeout_seconds: default_timeout(),
            max_consecutive_failures: default_failures(),
            ignore_http1xx: false,
        }
    }
}

/// Every check runs on the task's node (Marathon's `MESOS_*` variants,
/// which Strata reads as the plain ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
    Command,
    #[serde(other)]
    Unknown,
}

impl HealthProtocol {
    /// Parses Marathon's names (`HTTP`, `MESOS_HTTP`, ...) and Strata's
    /// (`http`, ...).
    pub fn parse(text: &str) -> Option<HealthProtocol> {
        let t = text.to_ascii_uppercase();
        match t.strip_prefix("MESOS_").unwrap_or(&t) {
            "HTTP" => Some(HealthProtocol::Http),
            "HTTPS" => Some(HealthProtocol::Https),
            "TCP" => Some(HealthProtocol::Tcp),
            "COMMAND" => Some(HealthProtocol::Command),
            _ => None,
        }
    }

    fn needs_port(self) -> bool {
        !matches!(self, HealthProtocol::Command)
    }
}

/// A placement rule: `[field, operator, value]` as Marathon writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Constraint {
    /// `hostname` or a node attribute (`rack`, `zone`, ...).
    pub field: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    /// At most one instance per value of the field.
    Unique,
    /// Every instance on nodes whose field is the value (or, without one,
    /// the value of the first instance's node).
    Cluster,
    /// Spread evenly over the field's values (at least the value's count of
    /// them, when given).
    GroupBy,
    /// The field matches the regular expression.
    Like,
    /// The field does not match the regular expression.
    Unlike,
    /// At most the value's count of instances per value of the field.
    MaxPer,
    /// The field is exactly the value.
    Is,
    #[serde(other)]
    Unknown,
}

impl Operator {
    pub fn parse(text: &str) -> Option<Operator> {
        Some(match text.to_ascii_uppercase().as_str() {
            "UNIQUE" => Operator::Unique,
            "CLUSTER" => Operator::Cluster,
            "GROUP_BY" => Operator::GroupBy,
            "LIKE" => Operator::Like,
            "UNLIKE" => Operator::Unlike,
            "MAX_PER" => Operator::MaxPer,
            "IS" => Operator::Is,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Unique => "UNIQUE",
            Operator::Cluster => "CLUSTER",
            Operator::GroupBy => "GROUP_BY",
            Operator::Like => "LIKE",
            Operator::Unlike => "UNLIKE",
            Operator::MaxPer => "MAX_PER",
            Operator::Is => "IS",
            Operator::Unknown => "UNKNOWN",
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.operator.as_str())?;
        if let Some(v) = &self.value {
            write!(f, " {v}")?;
        }
        Ok(())
    }
}

/// The agents an app may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentRole {
    /// Private agents (Marathon's `*`).
    Private,
    /// Public agents (Marathon's `slave_public`).
    Public,
    #[serde(other)]
    Unknown,
}

/// How a new version replaces the old one (fractions of `instances`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpgradeStrategy {
    /// The share of instances that must stay healthy during the roll.
    pub minimum_health_capacity: f64,
    /// The share of instances that may run beyond `instances` during it.
    pub maximum_over_capacity: f64,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

/// Delays between launches of a task that keeps failing: `seconds`, then
/// times `factor` at each failure, up to `max_launch_delay_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LaunchBackoff {
    pub seconds: f64,
    pub factor: f64,
    pub max_launch_delay_seconds: f64,
}

impl Default for LaunchBackoff {
    fn default() -> Self {
        LaunchBackoff {
            seconds: 1.0,
            factor: 1.15,
            max_launch_delay_seconds: 300.0,
        }
    }
}

/// Which instances go first when an app scales down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KillSelection {
    #[default]
    YoungestFirst,
    OldestFirst,
    #[serde(other)]
    Unknown,
}

/// When the tasks of a node that stopped answering are replaced and
/// forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnreachableStrategy {
    /// Replaced `inactive_after_seconds` after the node went unreachable,
    /// and forgotten `expunge_after_seconds` after.
    Enabled {
        inactive_after_seconds: u64,
        expunge_after_seconds: u64,
    },
    /// Never replaced: the app waits for its node.
    Disabled,
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled {
            inactive_after_seconds: 0,
            expunge_after_seconds: 0,
        }
    }
}

impl AppSpec {
    /// An app with Marathon's defaults for everything but what is given.
    pub fn new(id: AppId, image: &str) -> AppSpec {
        AppSpec {
            id,
            image: image.to_string(),
            force_pull_image: false,
            cmd: None,
            args: Vec::new(),
            user: None,
            instances: 1,
            cpus: 1.0,
            mem: 128.0,
            disk: 0.0,
            env: BTreeMap::new(),
            labels: BTreeMap::new(),
            ports: Vec::new(),
            require_ports: false,
            health_checks: Vec::new(),
            constraints: Vec::new(),
            accepted_roles: Vec::new(),
            placement: crate::schedule::Strategy::default(),
            upgrade_strategy: UpgradeStrategy::default(),
            backoff: LaunchBackoff::default(),
            kill_selection: KillSelection::default(),
            unreachable_strategy: UnreachableStrategy::default(),
            kill_grace_seconds: default_kill_grace(),
            dependencies: Vec::new(),
        }
    }

    /// The agent roles the app may run on (private agents when none is
    /// named).
    pub fn roles(&self) -> BTreeSet<AgentRole> {
        if self.accepted_roles.is_empty() {
            BTreeSet::from([AgentRole::Private])
        } else {
            self.accepted_roles.iter().copied().collect()
        }
    }

    /// Checks what the readers cannot see field by field: ranges, ports
    /// against each other and the health checks, constraints that no
    /// cluster could meet. `at` places a problem on a field by its
    /// Strata name (`ports[1].host_port`); the readers map it back to the
    /// file.
    pub fn check(&self, at: &dyn Fn(&str) -> Place) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |field: &str, message: String| {
            out.push(Problem {
                place: at(field),
                message,
            })
        };
        if self.id.dns_label().len() > 63 {
            bad(
                "id",
                format!(
                    "id {} makes the DNS label {:?}, longer than 63 characters: shorten its parts",
                    self.id,
                    self.id.dns_label()
                ),
            );
        }
        // An empty image is reported by the reader, as a missing field.
        if !self.image.is_empty()
            && let Err(why) = crate::task::spec::check_reference(&self.image)
        {
            bad("image", why);
        }
        if self.cmd.is_some() && !self.args.is_empty() {
            bad(
                "args",
                "an app has `cmd` or `args`, not both: `cmd` runs in a shell, `args` replaces the image's command".into(),
            );
        }
        if self.instances > MAX_INSTANCES {
            bad(
                "instances",
                format!(
                    "{} instances is more than the {MAX_INSTANCES} an app may have",
                    self.instances
                ),
            );
        }
        if !(self.cpus > 0.0 && self.cpus <= MAX_CPUS) {
            bad(
                "cpus",
                format!(
                    "cpus {} is out of range: expected more than 0 and at most {MAX_CPUS} (no node has more)",
                    self.cpus
                ),
            );
        }
        if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&self.mem) {
            bad(
                "mem",
                format!(
                    "mem {} MiB is out of range: expected {MIN_MEM_MIB} to {MAX_MEM_MIB} MiB (16 TiB, more than any node has)",
                    self.mem
                ),
            );
        }
        if !(0.0..=MAX_DISK_MIB).contains(&self.disk) {
            bad(
                "disk",
                format!(
                    "disk {} MiB is out of range: expected 0 to {MAX_DISK_MIB} MiB (1 PiB)",
                    self.disk
                ),
            );
        }
        for key in self.env.keys() {
            let ok = !key.is_empty()
                && !key.contains('=')
                && !key.bytes().next().is_some_and(|b| b.is_ascii_digit());
            if !ok {
                bad(
                    &format!("env.{key}"),
                    format!("environment variable name {key:?} is invalid"),
                );
            }
        }
        self.check_ports(&mut bad);
        self.check_health(&mut bad);
        check_constraints(&self.constraints, &mut bad);
        let u = self.upgrade_strategy;
        for (name, v) in [
            ("minimum_health_capacity", u.minimum_health_capacity),
            ("maximum_over_capacity", u.maximum_over_capacity),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bad(
                    &format!("upgrade_strategy.{name}"),
                    format!("{v} is out of range: expected a share from 0 to 1"),
                );
            }
        }
        if u.minimum_health_capacity == 1.0 && u.maximum_over_capacity == 0.0 {
            bad(
                "upgrade_strategy",
                "a roll that keeps every instance (minimum health capacity 1) and starts none beyond them (maximum over capacity 0) can never replace one: raise maximum over capacity or lower minimum health capacity".into(),
            );
        }
        let b = self.backoff;
        if b.seconds < 0.0 {
            bad("backoff.seconds", format!("{} is negative", b.seconds));
        }
        if b.factor < 1.0 {
            bad(
                "backoff.factor",
                format!("{} is below 1: the delay would shrink", b.factor),
            );
        }
        if b.max_launch_delay_seconds < b.seconds {
            bad(
                "backoff.max_launch_delay_seconds",
                format!(
                    "{} is below the first delay ({} seconds)",
                    b.max_launch_delay_seconds, b.seconds
                ),
            );
        }
        if self.accepted_roles.contains(&AgentRole::Unknown) {
            bad(
                "accepted_roles",
                "an unknown role: expected private or public".into(),
            );
        }
        if let UnreachableStrategy::Enabled {
            inactive_after_seconds,
            expunge_after_seconds,
        } = self.unreachable_strategy
            && expunge_after_seconds != 0
            && expunge_after_seconds < inactive_after_seconds
        {
            bad(
                "unreachable_strategy.expunge_after_seconds",
                format!(
                    "{expunge_after_seconds} is before the tasks are replaced ({inactive_after_seconds} seconds): expected at least that"
                ),
            );
        }
        out
    }

    fn check_ports(&self, bad: &mut dyn FnMut(&str, String)) {
        let mut names = BTreeSet::new();
        for (i, p) in self.ports.iter().enumerate() {
            if let Some(name) = &p.name {
                if let Err(why) = check_label(name) {
                    bad(
                        &format!("ports[{i}].name"),
                        format!("port name {name:?} {why}"),
                    );
                } else if !names.insert(name.as_str()) {
                    bad(
                        &format!("ports[{i}].name"),
                        format!("port name {name:?} is used twice"),
                    );
                }
            }
            if p.protocol == Protocol::Unknown {
                bad(
                    &format!("ports[{i}].protocol"),
                    "unknown protocol: expected tcp, udp or udp,tcp".into(),
                );
            }
            if self.require_ports && p.host_port == Some(0) {
                bad(
                    &format!("ports[{i}].host_port"),
                    "required ports must be fixed: host port 0 asks for one to be assigned".into(),
                );
            }
            for (j, q) in self.ports.iter().enumerate().take(i) {
                if !p.protocol.overlaps(q.protocol) {
                    continue;
                }
                if let (Some(a), Some(b)) = (p.host_port, q.host_port)
                    && a != 0
                    && a == b
                {
                    bad(
                        &format!("ports[{i}].host_port"),
                        format!("host port {a} is also ports[{j}]'s: a node has one of each"),
                    );
                }
                if let (Some(a), Some(b)) = (p.container_port, q.container_port)
                    && a != 0
                    && a == b
                {
                    bad(
                        &format!("ports[{i}].container_port"),
                        format!("container port {a} is also ports[{j}]'s"),
                    );
                }
            }
            expose::check_port(i, p, &self.ports[..i], bad);
        }
    }

    fn check_health(&self, bad: &mut dyn FnMut(&str, String)) {
        for (i, h) in self.health_checks.iter().enumerate() {
            let at = |f: &str| format!("health_checks[{i}].{f}");
            match h.protocol {
                HealthProtocol::Unknown => bad(
                    &at("protocol"),
                    "unknown protocol: expected HTTP, HTTPS, TCP or COMMAND".into(),
                ),
                HealthProtocol::Command if h.command.is_none() => bad(
                    &at("command"),
                    "a COMMAND check needs a command to run".into(),
                ),
                p if p.needs_port() => {
                    if let Some(index) = h.port_index
                        && index as usize >= self.ports.len()
                    {
                        bad(
                            &at("port_index"),
                            format!(
                                "port index {index} is past the app's {} port(s)",
                                self.ports.len()
                            ),
                        );
                    }
                    if h.port_index.is_none() && h.port.is_none() && self.ports.is_empty() {
                        bad(
                            &at("port_index"),
                            "the check needs a port, and the app has none: add a port or set `port`".into(),
                        );
                    }
                }
                _ => {}
            }
            if let Some(path) = &h.path
                && !path.starts_with('/')
            {
                bad(&at("path"), format!("path {path:?} must start with '/'"));
            }
            if h.timeout_seconds == 0 || h.interval_seconds == 0 {
                bad(
                    &at("interval_seconds"),
                    "interval and timeout must be at least 1 second".into(),
                );
            }
        }
    }
}

pub(crate) fn check_constraints(constraints: &[Constraint], bad: &mut dyn FnMut(&str, String)) {
    // What each field must be, by CLUSTER and IS, to find contradictions.
    let mut pinned: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for (i, c) in constraints.iter().enumerate() {
        let at = format!("constraints[{i}]");
        let value = c.value.as_deref();
        if c.field.is_empty() {
            bad(&at, "the field to constrain is empty".into());
            continue;
        }
        match (c.operator, value) {
            (Operator::Unknown, _) => bad(
                &at,
                "unknown operator: expected UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS"
                    .into(),
            ),
            (Operator::Unique, Some(v)) => bad(&at, format!("UNIQUE takes no value, found {v:?}")),
            (Operator::Like | Operator::Unlike | Operator::Is | Operator::MaxPer, None) => {
                bad(&at, format!("{} needs a value", c.operator.as_str()))
            }
            (Operator::Like | Operator::Unlike, Some(v)) => {
                if let Err(e) = full_match(v) {
                    bad(&at, format!("{v:?} is not a regular expression: {e}"));
                }
            }
            (Operator::MaxPer, Some(v)) => match v.parse::<u32>() {
                Ok(0) => bad(
                    &at,
                    "MAX_PER 0 allows no instance anywhere: expected at least 1".into(),
                ),
                Ok(_) => {}
                Err(_) => bad(&at, format!("MAX_PER needs a count, found {v:?}")),
            },
            (Operator::GroupBy, Some(v)) if !v.parse::<u32>().is_ok_and(|n| n >= 1) => bad(
                &at,
                format!("GROUP_BY takes a count of values (at least 1), found {v:?}"),
            ),
            _ => {}
        }
        if matches!(c.operator, Operator::Cluster | Operator::Is)
            && let Some(v) = value
        {
            match pinned.get(c.field.as_str()) {
                Some((j, w)) if *w != v => bad(
                    &at,
                    format!(
                        "{} must be {v:?} here and {w:?} by constraints[{j}]: no node is both",
                        c.field
                    ),
                ),
                _ => {
                    pinned.insert(&c.field, (i, v));
                }
            }
        }
    }
    // A pinned value that a LIKE or UNLIKE on the same field refuses.
    for (i, c) in constraints.iter().enumerate() {
        let (Some(v), Some((j, pin))) = (c.value.as_deref(), pinned.get(c.field.as_str())) else {
            continue;
        };
        let Ok(re) = full_match(v) else { continue };
        let refused = match c.operator {
            Operator::Like => !re.is_match(pin),
            Operator::Unlike => re.is_match(pin),
            _ => false,
        };
        if refused {
            bad(
                &format!("constraints[{i}]"),
                format!(
                    "{} {} {v:?} refuses {pin:?}, the only value constraints[{j}] allows",
                    c.field,
                    c.operator.as_str()
                ),
            );
        }
    }
}

/// A LIKE or UNLIKE value as a regular expression that must match the
/// whole field, as Marathon's do.
pub fn full_match(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| match e {
        regex::Error::Syntax(s) => {
            let last = s.lines().last().unwrap_or_default().trim();
            last.strip_prefix("error: ").unwrap_or(last).to_string()
        }
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests;
