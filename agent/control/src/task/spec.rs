//! The task model: the spec a task runs from, as the API sends it, etcd
//! stores it and a node keeps it, and its validation. It reads what a newer
//! writer wrote (unknown fields are ignored); the file an operator writes
//! is [`super::file::TaskFile`], which refuses them.
//!
//! A spec carries no format version of its own: its fingerprint is a hash
//! of its JSON, so a new field would restart every task. It is versioned by
//! the record that holds it, and may gain a field only in a release after
//! every node reads specs tolerantly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The smallest memory limit a task may ask for.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

/// The pids limit of a task whose spec sets none ([`TaskSpec::pids_limit`]):
/// a fork bomb stops there instead of at the node's limit. The spec keeps
/// `pids` unset (its JSON, and so its fingerprint, does not change); the
/// node applies the default when it starts the task.
pub const DEFAULT_PIDS_LIMIT: i64 = 2048;

/// The capabilities a task may add to the default set (`cap_add`).
/// CAP_MKNOD: making device nodes, which the devices cgroup still lets a
/// task open only among the few it allows, and never on its root
/// filesystem (mounted nodev).
pub const ADDABLE_CAPABILITIES: &[&str] = &["CAP_MKNOD"];

/// When a task that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
    Always,
}

/// One task, as sent by the API, stored and kept on its node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Unique on the node: lowercase letters, digits, `-`, `_` and `.`.
    pub id: String,
    /// Image reference (`registry/repo:tag`).
    pub image: String,
    /// Replaces the image's entrypoint and command when not empty.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    /// `uid[:gid]` or a user name from the image.
    #[serde(default)]
    pub user: Option<String>,
    /// CPU limit in cores (0.5 = half a core).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Memory limit: bytes, or a size such as `64MiB`, `1G`.
    #[serde(default)]
    pub mem: Option<Size>,
    /// Process limit; [`DEFAULT_PIDS_LIMIT`] when unset.
    #[serde(default)]
    pub pids: Option<i64>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Seconds between SIGTERM and SIGKILL when stopping.
    #[serde(default = "default_grace")]
    pub stop_grace_secs: u64,
    /// A network namespace to join (e.g. `/var/run/netns/NAME`).
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The application the task belongs to: `<app>.<zone>` answers every
    /// running task of it (A) and `_<app>._tcp.<zone>` its ports (SRV).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// TCP ports the task serves, published as SRV records.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Capabilities added to the default set, among
    /// [`ADDABLE_CAPABILITIES`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Runs the task in a user namespace of its own: root and every uid
    /// and gid below [`USER_NS_SIZE`] in the task map to a range of the
    /// node's that no one else uses, so root in the task is no one on the
    /// node.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_ns: bool,
    /// Replaces the image's command, keeping its entrypoint (when
    /// `command` is empty): Marathon's `args`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Pull the image again before starting, even if the node has it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_pull: bool,
    /// Checks the node runs against the task, each with its port resolved
    /// (`port`, never `port_index`), reported in the task's status; a task
    /// that fails one `max_consecutive_failures` times in a row is killed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<crate::app::HealthCheck>,
    /// Named TCP ports the task serves: each answers as the SRV record
    /// `_<name>._<app>._tcp.<zone>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_names: BTreeMap<String, u16>,
}

/// How many uids (and gids) a task with `user_ns` has: 0 to 65535.
pub const USER_NS_SIZE: u32 = 65536;

pub(crate) fn default_grace() -> u64 {
    10
}

/// A size in bytes, written as a number or with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr", into = "u64")]
pub struct Size(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Int(u64),
    Text(String),
}

impl From<Size> for u64 {
    fn from(s: Size) -> u64 {
        s.0
    }
}

impl TryFrom<SizeRepr> for Size {
    type Error = String;
    fn try_from(r: SizeRepr) -> Result<Self, String> {
        match r {
            SizeRepr::Int(n) => Ok(Size(n)),
            SizeRepr::Text(t) => parse_size(&t).map(Size),
        }
    }
}

/// Parses `64MiB`, `64M`, `1g`, `512k`, `1000` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("bad size {text:?}: expected a number with an optional unit (K, M, G)")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("bad size {text:?}: unknown unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("bad size {text:?}: too large"))
}

/// Whether `id` is a task id: 1-63 lowercase letters, digits, `-`, `_` or
/// `.`, not starting with a dot (a node makes it a directory's name).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
        && !id.starts_with('.')
}

impl TaskSpec {
    /// Checks everything that can be checked without the image.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_id(&self.id) {
            return Err(format!(
                "task id {:?} is invalid: use 1-63 lowercase letters, digits, '-', '_' or '.'",
                self.id
            ));
        }
        check_reference(&self.image)?;
        if let Some(Size(bytes)) = self.mem {
            if bytes < MIN_MEMORY_BYTES {
                return Err(format!(
                    "memory limit {bytes} bytes is below the minimum of {} bytes (4 MiB)",
                    MIN_MEMORY_BYTES
                ));
            }
        }
        if let Some(cpus) = self.cpus {
            if !(cpus.is_finite() && (0.01..=1024.0).contains(&cpus)) {
                return Err(format!("cpus {cpus} is out of range (0.01 to 1024)"));
            }
        }
        if let Some(pids) = self.pids {
            if pids < 1 {
                return Err(format!("pids limit {pids} must be at least 1"));
            }
        }
        if self.command.first().is_some_and(|c| c.is_empty()) {
            return Err("command starts with an empty string".into());
        }
        if let Some(app) = &self.app {
            let ok = !app.is_empty()
                && app.len() <= 63
                && app
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !app.starts_with('-')
                && !app.ends_with('-');
            if !ok {
                return Err(format!(
                    "app name {app:?} is invalid: use 1-63 lowercase letters, digits or '-' (a DNS label, not starting or ending with '-')"
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for port in &self.ports {
            if *port == 0 {
                return Err("port 0 is not a port a task can serve".into());
            }
            if !seen.insert(port) {
                return Err(format!("port {port} is listed twice"));
            }
        }
        let mut added = BTreeSet::new();
        for cap in &self.cap_add {
            if !ADDABLE_CAPABILITIES.contains(&cap.as_str()) {
                return Err(format!(
                    "capability {cap:?} cannot be added: a task may add only {}",
                    ADDABLE_CAPABILITIES.join(", ")
                ));
            }
            if !added.insert(cap) {
                return Err(format!("capability {cap} is listed twice"));
            }
            if self.user_ns && cap == "CAP_MKNOD" {
                return Err(
                    "capability CAP_MKNOD does nothing with user_ns: a user namespace cannot make device nodes"
                        .into(),
                );
            }
        }
        Ok(())
    }

    /// The task's pids limit: its own, or [`DEFAULT_PIDS_LIMIT`].
    pub fn pids_limit(&self) -> i64 {
        self.pids.unwrap_or(DEFAULT_PIDS_LIMIT)
    }

    /// Checks a spec the cluster assigns to a node: [`TaskSpec::validate`],
    /// and nothing the node decides for itself (its network namespaces: a
    /// task given a path would join any namespace of the node, the host's
    /// own included). The API checks a task with it when it is created, and
    /// the node checks every assignment it receives with it again.
    pub fn validate_assignment(&self) -> Result<(), String> {
        self.validate()?;
        if self.netns.is_some() {
            return Err("netns is chosen by the node, not the API".into());
        }
        Ok(())
    }

    /// CPU limit in thousandths of a core.
    pub fn cpu_millis(&self) -> Option<u32> {
        self.cpus.map(|c| (c * 1000.0).round() as u32)
    }

    /// A stable fingerprint: a changed spec replaces the running task.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let json = serde_json::to_vec(self).expect("a task spec always serializes");
        hex::encode(sha2::Sha256::digest(&json))
    }
}

/// Checks an image reference (`registry/repo:tag`, `repo@sha256:...`) as a
/// registry client will read it.
pub fn check_reference(reference: &str) -> Result<(), String> {
    reference
        .parse::<oci_spec::distribution::Reference>()
        .map(drop)
        .map_err(|e| format!("malformed image reference {reference:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_from_a_newer_writer_reads() {
        let json = r#"{"id":"web","image":"bb:1","command":[],"env":{},"cwd":null,"user":null,
            "cpus":null,"mem":67108864,"pids":null,"read_only":false,"restart":"always",
            "stop_grace_secs":10,"netns":null,"user_ns":true,"future":{"x":1}}"#;
        let spec: TaskSpec = serde_json::from_str(json).expect("unknown fields are ignored");
        assert_eq!(spec.id, "web");
        assert_eq!(spec.mem, Some(Size(64 << 20)));
        assert_eq!(spec.restart, RestartPolicy::Always);
    }

    #[test]
    fn an_assignment_may_not_name_a_network_namespace() {
        let mut spec: TaskSpec =
            serde_json::from_str(r#"{"id":"web","image":"bb:1"}"#).expect("a spec");
        assert_eq!(spec.validate_assignment(), Ok(()));
        spec.netns = Some("/proc/1/ns/net".into());
        assert_eq!(spec.validate(), Ok(()), "a task file may name one");
        assert_eq!(
            spec.validate_assignment(),
            Err("netns is chosen by the node, not the API".to_string())
        );
    }

    #[test]
    fn the_fingerprint_is_stable() {
        // A changed fingerprint restarts every task of every node: this
        // value may only change on purpose.
        let spec: TaskSpec = serde_json::from_str(r#"{"id":"web","image":"bb:1"}"#)
            .expect("the defaults fill the rest");
        expect_test::expect!["baa2cb8f87b8edea63b39e0a374e7ba0ab722a0b89c63c2872e3d79c59cffdc2"]
            .assert_eq(&spec.fingerprint());
        // The default pids limit is the node's, not the spec's.
        assert_eq!(spec.pids, None);
        assert_eq!(spec.pids_limit(), DEFAULT_PIDS_LIMIT);
    }

    #[test]
    fn added_capabilities_are_checked() {
        let spec = |caps: &str| -> Result<TaskSpec, String> {
            let spec: TaskSpec = serde_json::from_str(&format!(
                r#"{{"id":"web","image":"bb:1","cap_add":{caps}}}"#
            ))
            .map_err(|e| e.to_string())?;
            spec.validate().map(|()| spec)
        };
        let mknod = spec(r#"["CAP_MKNOD"]"#).expect("CAP_MKNOD may be added");
        assert_eq!(mknod.cap_add, ["CAP_MKNOD"]);
        assert!(
            serde_json::to_string(&mknod)
                .expect("serializes")
                .ends_with(r#","cap_add":["CAP_MKNOD"]}"#)
        );
        expect_test::expect![[r#"
            [
                Err(
                    "capability \"CAP_SYS_ADMIN\" cannot be added: a task may add only CAP_MKNOD",
                ),
                Err(
                    "capability \"mknod\" cannot be added: a task may add only CAP_MKNOD",
                ),
                Err(
                    "capability CAP_MKNOD is listed twice",
                ),
            ]
        "#]]
        .assert_debug_eq(
            &[
                r#"["CAP_SYS_ADMIN"]"#,
                r#"["mknod"]"#,
                r#"["CAP_MKNOD","CAP_MKNOD"]"#,
            ]
            .map(|caps| spec(caps).map(|s| s.cap_add)),
        );
    }
}
