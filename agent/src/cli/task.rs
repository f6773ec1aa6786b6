//! `strata task ...`: run, list and stop tasks on the cluster (through the
//! API) or on this node (its state directory), where [`Scope::of`] says;
//! check task files; print logs and exec into tasks on this node; and
//! `task agent`, which reconciles a static task directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;

use super::image::RegistryArgs;
use super::output;
use super::target::{Scope, StateDir, Target, runtime};
use crate::tasks;
use control::model::TaskRequest;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Reconcile the tasks of a static task directory (`*.toml` task files)
    /// until killed; running tasks survive this process and are adopted by
    /// the next one.
    Agent {
        #[arg(long)]
        tasks_dir: PathBuf,
        #[command(flatten)]
        state: StateDir,
        /// Milliseconds between reconciliations.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Check a task file and print what it holds.
    Check { file: PathBuf },
    /// Pin a task to a node through the masters' API.
    Run {
        /// The node that runs the task.
        #[arg(long)]
        node: String,
        /// Image reference (`registry/repo:tag`).
        #[arg(long)]
        image: String,
        /// Task id [default: the image name and a unique suffix].
        #[arg(long)]
        id: Option<String>,
        /// CPU limit in cores (0.5 = half a core).
        #[arg(long)]
        cpus: Option<f64>,
        /// Memory limit (`64MiB`, `1G`, bytes).
        #[arg(long, value_parser = tasks::spec::parse_size)]
        mem: Option<u64>,
        /// Restart policy: never, on-failure or always.
        #[arg(long, default_value = "never", value_parser = parse_restart)]
        restart: tasks::RestartPolicy,
        /// Environment variable `KEY=VALUE` (repeatable).
        #[arg(long = "env", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// Seconds between SIGTERM and SIGKILL when the task is stopped.
        #[arg(long, default_value_t = 10)]
        stop_grace: u64,
        /// The application the task belongs to (`<app>.<zone>` in DNS).
        #[arg(long)]
        app: Option<String>,
        /// A TCP port the task serves, published as an SRV record (repeatable).
        #[arg(long = "port")]
        ports: Vec<u16>,
        /// A capability to add to the default set (repeatable; only
        /// CAP_MKNOD).
        #[arg(long = "cap-add")]
        cap_add: Vec<String>,
        /// Run the task in a user namespace of its own: its root is an
        /// unprivileged user on the node.
        #[arg(long)]
        user_ns: bool,
        #[command(flatten)]
        target: Target,
        /// The command and its arguments [default: the image's].
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List tasks: cluster-wide through the API when a context or endpoint
    /// is given (`--context`, `--endpoint`, `$STRATA_CONTEXT`), else (or
    /// with `--local` or another `--state-dir`) the tasks in this node's
    /// state directory.
    List {
        #[command(flatten)]
        state: StateDir,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// This node's state directory, even when a context is given.
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Stop a task: through the API (it is removed from its node) when a
    /// context or endpoint is given, else (or with `--local` or another
    /// `--state-dir`) on this node (SIGTERM, then
    /// SIGKILL after the grace period; not restarted until its spec
    /// changes).
    Stop {
        id: String,
        #[command(flatten)]
        state: StateDir,
        /// Grace period in seconds (default: the task's; local only).
        #[arg(long)]
        grace: Option<u64>,
        /// This node's state directory, even when a context is given.
        #[arg(long)]
        local: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print a task's stdout and stderr logs.
    Logs {
        id: String,
        #[command(flatten)]
        state: StateDir,
        /// Keep printing new output until the task exits.
        #[arg(short, long)]
        follow: bool,
    },
    /// Run a command inside a running task's namespaces.
    Exec {
        id: String,
        #[command(flatten)]
        state: StateDir,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

pub fn run(command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::Agent {
            tasks_dir,
            state,
            interval_ms,
            registry,
        } => tasks::run_static_dir(tasks::StaticDirOptions {
            tasks_dir,
            state_dir: state.state_dir,
            interval: Duration::from_millis(interval_ms),
            pull: registry.options(),
        }),
        TaskCommand::Check { file } => check(&file),
        TaskCommand::Run {
            node,
            image,
            id,
            cpus,
            mem,
            restart,
            env,
            stop_grace,
            app,
            ports,
            cap_add,
            user_ns,
            target,
            command,
        } => {
            let id = id.unwrap_or_else(|| default_task_id(&image, crate::clock::unix_millis()));
            let spec = tasks::TaskSpec {
                id,
                image,
                command,
                env: env.into_iter().collect(),
                cwd: None,
                user: None,
                cpus,
                mem: mem.map(tasks::spec::Size),
                pids: None,
                read_only: false,
                restart,
                stop_grace_secs: stop_grace,
                netns: None,
                app,
                ports,
                cap_add,
                user_ns,
                args: Vec::new(),
                force_pull: false,
                health_checks: Vec::new(),
                port_names: Default::default(),
            };
            pin(&target, node, spec)
        }
        TaskCommand::List {
            state,
            json,
            local,
            target,
        } => match Scope::of(target, state, local) {
            Scope::Cluster(target) => {
                let client = target.client()?;
                let views = runtime()?.block_on(client.list_tasks())?;
                output::emit(json, &views, |v| output::task_list(v))
            }
            Scope::Node(dir) => {
                output::emit(json, &tasks::list(&dir), |t| output::local_task_list(t))
            }
        },
        TaskCommand::Stop {
            id,
            state,
            grace,
            local,
            target,
        } => match Scope::of(target, state, local) {
            Scope::Cluster(target) => {
                let client = target.client()?;
                runtime()?.block_on(client.delete_task(&id))?;
                println!("task {id} stopped");
                Ok(())
            }
            Scope::Node(dir) => {
                match tasks::stop(&dir, &id, grace.map(Duration::from_secs))? {
                    Some(e) => println!("task {id} stopped (exit code {})", e.code),
                    None => println!("task {id} stopped"),
                }
                Ok(())
            }
        },
        TaskCommand::Logs { id, state, follow } => logs(&state.state_dir, &id, follow),
        TaskCommand::Exec { id, state, command } => {
            let dir = tasks::task_dir(&state.state_dir, &id);
            let code = crate::runtime::exec(&dir, command)?;
            std::process::exit(code)
        }
    }
}

/// `strata task check FILE`: the task file's spec as JSON.
fn check(file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let spec = control::task::file::parse(&file.display().to_string(), &text)?;
    println!("{}", serde_json::to_string_pretty(&spec)?);
    Ok(())
}

/// `strata task run`: pins a task to a node through the API.
fn pin(target: &Target, node: String, spec: tasks::TaskSpec) -> anyhow::Result<()> {
    let client = target.client()?;
    let id = spec.id.clone();
    let request = TaskRequest {
        format: Default::default(),
        node,
        spec,
    };
    let view = runtime()?.block_on(client.create_task(&request))?;
    println!("task {id} pinned to node {}", view.node);
    Ok(())
}

/// `strata task logs`: the task's stdout, then its stderr, then (with
/// `follow`) both as they grow until the task is no longer running.
fn logs(state_dir: &Path, id: &str, follow: bool) -> anyhow::Result<()> {
    let dir = tasks::task_dir(state_dir, id);
    if !dir.0.join("spec.json").exists() {
        anyhow::bail!("no task {id:?} in {}", state_dir.display());
    }
    let mut out = std::io::stdout().lock();
    crate::runtime::logs::print(&dir.stdout_log(), &mut out)?;
    crate::runtime::logs::print(&dir.stderr_log(), &mut out)?;
    if follow {
        let d = dir.clone();
        crate::runtime::logs::follow(&[dir.stdout_log(), dir.stderr_log()], &mut out, move || {
            !matches!(
                crate::runtime::status(&d),
                crate::runtime::Status::Running(_)
            )
        })?;
    }
    Ok(())
}

fn parse_restart(text: &str) -> Result<tasks::RestartPolicy, String> {
    match text {
        "never" => Ok(tasks::RestartPolicy::Never),
        "on-failure" => Ok(tasks::RestartPolicy::OnFailure),
        "always" => Ok(tasks::RestartPolicy::Always),
        other => Err(format!(
            "unknown restart policy `{other}`, expected never, on-failure or always"
        )),
    }
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "bad environment variable `{text}`: expected KEY=VALUE"
        )),
    }
}

/// A task id from the image's name and a unique suffix: `busybox-1a2b3c`.
pub fn default_task_id(image: &str, now_ms: u64) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split(['@', ':']).next().unwrap_or(name);
    let mut base: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_')
        .take(40)
        .collect();
    if base.is_empty() {
        base.push_str("task");
    }
    format!("{base}-{:x}", now_ms & 0xff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    fn check(input: &str, expected: Expect) {
        let got = format!(
            "id={} restart={:?} env={:?}",
            super::default_task_id(input, 0x1234_5678_9abc),
            super::parse_restart(input),
            super::parse_env(input)
        );
        expected.assert_eq(&got);
    }

    #[test]
    fn run_arguments() {
        check(
            "127.0.0.1:5000/library/Busy.Box:1.36",
            expect![[
                r#"id=busybox-3456789abc restart=Err("unknown restart policy `127.0.0.1:5000/library/Busy.Box:1.36`, expected never, on-failure or always") env=Err("bad environment variable `127.0.0.1:5000/library/Busy.Box:1.36`: expected KEY=VALUE")"#
            ]],
        );
        check(
            "on-failure",
            expect![[
                r#"id=on-failure-3456789abc restart=Ok(OnFailure) env=Err("bad environment variable `on-failure`: expected KEY=VALUE")"#
            ]],
        );
        check(
            "A=b=c",
            expect![[
                r#"id=abc-3456789abc restart=Err("unknown restart policy `A=b=c`, expected never, on-failure or always") env=Ok(("A", "b=c"))"#
            ]],
        );
        check(
            "@sha256:00",
            expect![[
                r#"id=task-3456789abc restart=Err("unknown restart policy `@sha256:00`, expected never, on-failure or always") env=Err("bad environment variable `@sha256:00`: expected KEY=VALUE")"#
            ]],
        );
    }
}
