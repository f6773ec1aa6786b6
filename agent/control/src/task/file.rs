//! The task file an operator writes (`*.toml` in a static task directory,
//! or given to `strata task run --file`): the fields of a [`TaskSpec`],
//! and nothing else. A misspelt or unknown key is an error that names it,
//! with its line and column, where the spec the API stores ignores what it
//! does not know.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::spec::{RestartPolicy, Size, TaskSpec, default_grace};

/// A task as an operator writes it: [`TaskSpec`]'s fields, refusing any
/// other. (The conversion names every field on both sides, so a field
/// added to one and not the other does not compile.)
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    pub id: String,
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub mem: Option<Size>,
    #[serde(default)]
    pub pids: Option<i64>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default = "default_grace")]
    pub stop_grace_secs: u64,
    #[serde(default)]
    pub netns: Option<PathBuf>,
    #[serde(default)]
    pub app: Option<String>,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub user_ns: bool,
}

impl From<TaskFile> for TaskSpec {
    fn from(f: TaskFile) -> TaskSpec {
        let TaskFile {
            id,
            image,
            command,
            env,
            cwd,
            user,
            cpus,
            mem,
            pids,
            read_only,
            restart,
            stop_grace_secs,
            netns,
            app,
            ports,
            cap_add,
            user_ns,
        } = f;
        TaskSpec {
            id,
            image,
            command,
            env,
            cwd,
            user,
            cpus,
            mem,
            pids,
            read_only,
            restart,
            stop_grace_secs,
            netns,
            app,
            ports,
            cap_add,
            user_ns,
            args: Vec::new(),
            force_pull: false,
            health_checks: Vec::new(),
            port_names: BTreeMap::new(),
        }
    }
}

/// A task file that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {reason}")]
pub struct SpecError {
    pub source_name: String,
    pub reason: String,
}

/// Parses and validates one task file.
pub fn parse(source_name: &str, text: &str) -> Result<TaskSpec, SpecError> {
    let err = |reason: String| SpecError {
        source_name: source_name.to_string(),
        reason,
    };
    let file: TaskFile =
        toml::from_str(text).map_err(|e| err(e.to_string().trim_end().replace('\n', " ")))?;
    let spec = TaskSpec::from(file);
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
                if !spec.cap_add.is_empty() {
                    got += &format!(" cap_add={:?}", spec.cap_add);
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
            "id = \"a\"\nimage = \"bb\"\nprivileged = true",
            expect![
                "t.toml: TOML parse error at line 3, column 1   | 3 | privileged = true   | ^^^^^^^^^^ unknown field `privileged`, expected one of `id`, `image`, `command`, `env`, `cwd`, `user`, `cpus`, `mem`, `pids`, `read_only`, `restart`, `stop_grace_secs`, `netns`, `app`, `ports`, `cap_add`, `user_ns`"
            ],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\nuser_ns = true\ncap_add = [\"CAP_MKNOD\"]",
            expect![
                "t.toml: capability CAP_MKNOD does nothing with user_ns: a user namespace cannot make device nodes"
            ],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\ncap_add = [\"CAP_MKNOD\"]",
            expect![[r#"ok a [] mem=None cpu=None restart=Never cap_add=["CAP_MKNOD"]"#]],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\ncap_add = [\"CAP_NET_ADMIN\"]",
            expect![[
                r#"t.toml: capability "CAP_NET_ADMIN" cannot be added: a task may add only CAP_MKNOD"#
            ]],
        );
        check(
            "id = \"a\"\nimage = \"bb\"\nports = [70000]",
            expect![[
                r#"t.toml: TOML parse error at line 3, column 10   | 3 | ports = [70000]   |          ^^^^^ invalid value: integer `70000`, expected u16"#
            ]],
        );
    }
}
