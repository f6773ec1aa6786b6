//! The `strata task ...` and `strata image ...` subcommands: thin wrappers
//! over [`crate::tasks`], [`crate::images`] and [`crate::runtime`] that work
//! on the local state directory. No async runtime here except to pull.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::images::{ImageStore, PullAuth, PullOptions};
use crate::tasks;

#[derive(Debug, Clone, Args)]
pub struct StateDir {
    /// State directory (tasks in `tasks/`, images in `images/`).
    #[arg(long, default_value = tasks::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Basic auth user name (with --password).
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    #[arg(long, requires = "username")]
    pub password: Option<String>,
    /// Bearer token.
    #[arg(long, conflicts_with = "username")]
    pub token: Option<String>,
    /// Plain HTTP even for a registry that is not on loopback.
    #[arg(long)]
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    pub fn options(&self) -> PullOptions {
        let auth = match (&self.username, &self.password, &self.token) {
            (Some(u), Some(p), _) => PullAuth::Basic {
                username: u.clone(),
                password: p.clone(),
            },
            (_, _, Some(t)) => PullAuth::Bearer { token: t.clone() },
            _ => PullAuth::Anonymous,
        };
        PullOptions {
            auth,
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            ..PullOptions::default()
        }
    }
}

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
        #[command(flatten)]
        target: crate::cli::Target,
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
        target: crate::cli::Target,
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
        target: crate::cli::Target,
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

/// Whether `task list` / `task stop` go to the cluster: a context or an
/// endpoint is given and no state directory other than the default.
fn remote(target: &crate::cli::Target, state: &StateDir) -> bool {
    target.is_given() && state.state_dir == std::path::Path::new(tasks::DEFAULT_STATE_DIR)
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

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry, verifying every blob.
    Pull {
        reference: String,
        #[command(flatten)]
        state: StateDir,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Import an OCI layout directory, a tarball of one, or a `docker save` archive.
    Import {
        path: PathBuf,
        /// Name to store it under (default: the name in the archive).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        state: StateDir,
    },
    /// List stored images.
    List {
        #[command(flatten)]
        state: StateDir,
    },
    /// Forget an image (its layers go at the next gc).
    Remove {
        name: String,
        #[command(flatten)]
        state: StateDir,
    },
    /// Delete layers no image and no task references.
    Gc {
        #[command(flatten)]
        state: StateDir,
    },
}

fn store(state: &StateDir) -> anyhow::Result<ImageStore> {
    Ok(ImageStore::open(state.state_dir.join("images"))?)
}

pub fn task(cmd: TaskCommand) -> anyhow::Result<()> {
    match cmd {
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
        TaskCommand::Check { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let spec = tasks::spec::parse(&file.display().to_string(), &text)?;
            println!("{}", serde_json::to_string_pretty(&spec)?);
            Ok(())
        }
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
            target,
            command,
        } => {
            let id = id.unwrap_or_else(|| default_task_id(&image, crate::runtime::now_ms()));
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
            };
            crate::cli::remote_task_run(&target, node, spec)
        }
        TaskCommand::List {
            json,
            local: false,
            target,
            state,
        } if remote(&target, &state) => crate::cli::remote_task_list(&target, json),
        TaskCommand::Stop {
            id,
            local: false,
            target,
            state,
            ..
        } if remote(&target, &state) => crate::cli::remote_task_stop(&target, &id),
        TaskCommand::List { state, json, .. } => {
            let list = tasks::list(&state.state_dir);
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<10} {:>8} {:>8} {:>5}  IMAGE",
                "ID", "STATE", "PID", "RESTARTS", "EXIT"
            );
            for t in list {
                let pid = t.pid.map_or("-".into(), |p| p.to_string());
                let exit = t.exit_code.map_or("-".into(), |c| c.to_string());
                println!(
                    "{:<24} {:<10} {:>8} {:>8} {:>5}  {}",
                    t.id, t.state, pid, t.restarts, exit, t.image
                );
            }
            Ok(())
        }
        TaskCommand::Stop {
            id, state, grace, ..
        } => {
            let exit = tasks::stop(&state.state_dir, &id, grace.map(Duration::from_secs))?;
            match exit {
                Some(e) => println!("task {id} stopped (exit code {})", e.code),
                None => println!("task {id} stopped"),
            }
            Ok(())
        }
        TaskCommand::Logs { id, state, follow } => {
            let dir = tasks::task_dir(&state.state_dir, &id);
            if !dir.0.join("spec.json").exists() {
                anyhow::bail!("no task {id:?} in {}", state.state_dir.display());
            }
            let mut out = std::io::stdout().lock();
            crate::runtime::logs::print(&dir.stdout_log(), &mut out)?;
            crate::runtime::logs::print(&dir.stderr_log(), &mut out)?;
            if follow {
                let d = dir.clone();
                crate::runtime::logs::follow(
                    &[dir.stdout_log(), dir.stderr_log()],
                    &mut out,
                    move || {
                        !matches!(
                            crate::runtime::status(&d),
                            crate::runtime::Status::Running(_)
                        )
                    },
                )?;
            }
            Ok(())
        }
        TaskCommand::Exec { id, state, command } => {
            let dir = tasks::task_dir(&state.state_dir, &id);
            let code = crate::runtime::exec(&dir, command)?;
            std::process::exit(code)
        }
    }
}

pub fn image(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Pull {
            reference,
            state,
            registry,
        } => {
            let store = store(&state)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let rec = rt.block_on(store.pull(&reference, &registry.options()))?;
            println!(
                "{} {} ({} layers)",
                rec.name,
                rec.config_digest,
                rec.layers.len()
            );
            Ok(())
        }
        ImageCommand::Import { path, name, state } => {
            let rec = store(&state)?.import(&path, name.as_deref())?;
            println!(
                "{} {} ({} layers)",
                rec.name,
                rec.config_digest,
                rec.layers.len()
            );
            Ok(())
        }
        ImageCommand::List { state } => {
            for rec in store(&state)?.list()? {
                println!(
                    "{} {} ({} layers)",
                    rec.name,
                    rec.config_digest,
                    rec.layers.len()
                );
            }
            Ok(())
        }
        ImageCommand::Remove { name, state } => {
            if !store(&state)?.remove(&name)? {
                anyhow::bail!("no image {name:?} in the store");
            }
            Ok(())
        }
        ImageCommand::Gc { state } => {
            let in_use = tasks::layers_in_use(&state.state_dir);
            for layer in store(&state)?.gc(&in_use)? {
                println!("removed {layer}");
            }
            Ok(())
        }
    }
}
