//! The task model: what a task spec file (`*.toml`) holds, and its validation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The smallest memory limit a task may ask for.
pub const MIN_MEMORY_BYTES: u64 = 4 << 20;

/// When a task that exited is started again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Never,
    OnFailure,
    Always,
}

/// One task, as written in a task file or sent by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
}

fn default_grace() -> u64 {
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

/// A task spec that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {reason}")]
pub struct SpecError {
    pub source_name: String,
    pub reason: String,
}

impl TaskSpec {
    /// Checks everything that can be checked without the image.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 63
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            && !self.id.starts_with('.');
        if !id_ok {
            return Err(format!(
                "task id {:?} is invalid: use 1-63 lowercase letters, digits, '-', '_' or '.'",
                self.id
            ));
        }
        if let Err(e) = crate::images::parse_reference(&self.image) {
            return Err(e.to_string());
        }
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
        Ok(())
    }

    /// CPU limit in thousandths of a core.
    pub fn cpu_millis(&self) -> Option<u32> {
        self.cpus.map(|c| (c * 1000.0).round() as u32)
    }

    /// A stable fingerprint: a changed spec replaces the running task.
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).expect("a task spec always serializes");
        crate::images::sha256_hex(&json)
    }
}

/// Parses and validates one task file.
pub fn parse(source_name: &str, text: &str) -> Result<TaskSpec, SpecError> {
    let err = |reason: String| SpecError {
        source_name: source_name.to_string(),
        reason,
    };
    let spec: TaskSpec =
        toml::from_str(text).map_err(|e| err(e.to_string().trim_end().replace('\n', " ")))?;
    spec.validate().map_err(err)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn check(text: &str, expected: Expect) {
        let got = match parse("t.toml", text) {
            Ok(spec) => {
                let mut got = format!(
                    "ok {} {:?} mem={:?} cpu={:?} restart={:?}",
                    spec.id,
                    spec.command,
                    spec.mem.map(|m| m.0),
                    spec.cpu_millis(),
                    spec.restart
                );
                if spec.app.is_some() || !spec.ports.is_empty() {
                    got += &format!(" app={:?} ports={:?}", spec.app, spec.ports);
                }
                got
            }
            Err(e) => e.to_string(),
        };
        expected.assert_eq(&got);
    }

    #[test]
    fn task_files() {
        check(
            r#"id = "web"
image = "127.0.0.1:5000/bb:1"
command = ["sleep", "100"]
mem = "64MiB"
cpus = 0.5
restart = "on-failure""#,
            expect![[
                r#"ok web ["sleep", "100"] mem=Some(67108864) cpu=Some(500) restart=OnFailure"#
            ]],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\nmem = 1048576",
            expect![
                "t.toml: memory limit 1048576 bytes is below the minimum of 4194304 bytes (4 MiB)"
            ],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\nmem = \"12 parsecs\"",
            expect![[
                r#"t.toml: TOML parse error at line 3, column 7   | 3 | mem = "12 parsecs"   |       ^^^^^^^^^^^^ bad size "12 parsecs": unknown unit "parsecs""#
            ]],
        );
        check(
            "id = \"A b\"\nimage = \"bb\"",
            expect![[
                r#"t.toml: task id "A b" is invalid: use 1-63 lowercase letters, digits, '-', '_' or '.'"#
            ]],
        );
        check(
            "id = \"a\"\nimage = \"Not A Ref\"",
            expect![[r#"t.toml: malformed image reference "Not A Ref": invalid reference format"#]],
        );
        check(
            "id = \"a\"",
            expect![[
                r#"t.toml: TOML parse error at line 1, column 1   | 1 | id = "a"   | ^ missing field `image`"#
            ]],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\nrestart = \"sometimes\"",
            expect![[
                r#"t.toml: TOML parse error at line 3, column 11   | 3 | restart = "sometimes"   |           ^^^^^^^^^^^ unknown variant `sometimes`, expected one of `never`, `on-failure`, `always`"#
            ]],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\ncpus = 0",
            expect!["t.toml: cpus 0 is out of range (0.01 to 1024)"],
        );
        check(
            "id = \"web-1\"\nimage = \"bb\"\napp = \"web\"\nports = [8080, 9090]",
            expect![[
                r#"ok web-1 [] mem=None cpu=None restart=Never app=Some("web") ports=[8080, 9090]"#
            ]],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\napp = \"Web_App\"",
            expect![[
                r#"t.toml: app name "Web_App" is invalid: use 1-63 lowercase letters, digits or '-' (a DNS label, not starting or ending with '-')"#
            ]],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\nports = [80, 80]",
            expect!["t.toml: port 80 is listed twice"],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\nports = [0]",
            expect!["t.toml: port 0 is not a port a task can serve"],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\nports = [70000]",
            expect![[
                r#"t.toml: TOML parse error at line 3, column 10   | 3 | ports = [70000]   |          ^^^^^ invalid value: integer `70000`, expected u16"#
            ]],
        );
    }
}
