//! Command-line parsing and dispatch. Only subcommands that work are listed.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Strata: an immutable cluster OS. Node agent and CLI.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon (started by systemd as strata-agent.service).
    Agent {
        /// The role defaults baked into the image.
        #[arg(long, default_value = "/etc/strata/role.toml")]
        role_file: PathBuf,
        /// Where the node keeps its state (on the state partition).
        #[arg(long, default_value = "/var/lib/strata")]
        state_dir: PathBuf,
        /// Where the health file goes.
        #[arg(long, default_value = "/run/strata")]
        run_dir: PathBuf,
        /// Read user-data from this file instead of the providers.
        #[arg(long)]
        user_data: Option<PathBuf>,
        /// Also print the ready marker on this console device.
        #[arg(long)]
        console: Option<PathBuf>,
        /// Report once and exit instead of staying up (once Ready when the
        /// node has user-data).
        #[arg(long)]
        once: bool,
        /// Do not write the user-data's network settings for
        /// systemd-networkd (outside an image).
        #[arg(long)]
        no_network: bool,
    },
    /// Print the node's health; fails unless the node is healthy.
    Health {
        /// Wait for the agent to report (gates boot-complete.target).
        #[arg(long)]
        wait: bool,
        /// How long to wait, seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Where the agent writes the health file.
        #[arg(long, default_value = "/run/strata")]
        run_dir: PathBuf,
    },
    /// Validate Strata configuration files (cluster.toml, role defaults, user-data).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    // --- cluster formation (issue 4) ---
    /// Create a cluster and look at it.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Look at the cluster's nodes.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    // --- end of cluster formation ---
    // ---- container runtime (issue 5): tasks, images, shim ----
    /// Run, list and stop tasks: on the cluster or on this node.
    Task {
        #[command(subcommand)]
        command: crate::runtime_cli::TaskCommand,
    },
    /// Pull, import, list and garbage-collect OCI images.
    Image {
        #[command(subcommand)]
        command: crate::runtime_cli::ImageCommand,
    },
    /// Per-task container shim (started by the agent).
    #[command(hide = true)]
    Shim {
        #[arg(long)]
        task_dir: PathBuf,
    },
    /// Forks shims on request (started by the agent; see `runtime::launcher`).
    #[command(hide = true)]
    ShimLauncher,
    // ---- end container runtime ----
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file and print what it holds; the kind is
    /// detected from the content unless `--kind` is given.
    Check {
        /// The file to check.
        file: PathBuf,
        /// What the file is.
        #[arg(long)]
        kind: Option<configs::Kind>,
    },
}

/// Runs the CLI and maps errors to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("strata: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Cluster { command } => cluster_cli::cluster(command),
        Command::Node { command } => cluster_cli::node(command),
        Command::Agent {
            role_file,
            state_dir,
            run_dir,
            user_data,
            console,
            once,
            no_network,
        } => crate::daemon::run(&crate::daemon::Options {
            role_file,
            state_dir,
            run_dir,
            user_data,
            console,
            once,
            apply_network: !no_network,
        }),
        Command::Health {
            wait,
            timeout,
            run_dir,
        } => {
            let h = crate::health::check(&run_dir, wait, std::time::Duration::from_secs(timeout))?;
            println!("{}", h.marker());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { file, kind },
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let name = file.display().to_string();
            let summary = configs::check(&name, &text, kind)?;
            println!("{summary}");
            Ok(())
        }
        // ---- container runtime (issue 5) ----
        Command::Task { command } => crate::runtime_cli::task(command),
        Command::Image { command } => crate::runtime_cli::image(command),
        Command::Shim { task_dir } => std::process::exit(crate::runtime::shim_main(&task_dir)),
        Command::ShimLauncher => std::process::exit(crate::runtime::launcher::launcher_main()),
        // ---- end container runtime ----
    }
}

// ---------------------------------------------------------------------------
// Cluster formation (issue 4): `strata cluster ...` and `strata node ...`.
// ---------------------------------------------------------------------------

/// Where the CLI finds the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct Target {
    /// The CLI context file [default: $STRATA_CONTEXT, else ~/.config/strata/context.toml].
    #[arg(long, global = true)]
    pub context: Option<PathBuf>,
    /// Use this API endpoint (host:port) instead of the context's.
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
}

impl Target {
    /// Whether the CLI is pointed at a cluster: a context or an endpoint
    /// given, or `$STRATA_CONTEXT` set.
    pub fn is_given(&self) -> bool {
        self.context.is_some()
            || self.endpoint.is_some()
            || std::env::var_os("STRATA_CONTEXT").is_some_and(|v| !v.is_empty())
    }
}

pub use cluster_cli::{remote_task_list, remote_task_run, remote_task_stop};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make a new cluster from cluster.toml: CA, join token, one user-data
    /// file per node, the CLI's token and context.
    Init {
        /// The operator's cluster.toml.
        #[arg(long)]
        config: PathBuf,
        /// Directory for the files.
        #[arg(long)]
        out: PathBuf,
        /// Replace the files of an existing cluster in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Masters, etcd health and leader, nodes Ready.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run this node's cluster membership in the foreground from a given
    /// user-data file (masters: etcd, the API; every node: join and
    /// heartbeats). For hosts without the image's first-boot providers.
    RunNode {
        /// The node's user-data.
        #[arg(long)]
        user_data: PathBuf,
        /// Where the node keeps its identity.
        #[arg(long, default_value = "/var/lib/strata")]
        state_dir: PathBuf,
        /// Masters: the address the API listens on [default: 0.0.0.0:<api_port>].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Every node with its state.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One node in detail.
    Show {
        name: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Remove a node from the cluster: its record, and its overlay subnet
    /// lease, which peers drop from their routes. A node still running
    /// joins again.
    Remove {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

mod cluster_cli {
    //! The cluster and node subcommands.

    use anyhow::Context as _;

    use super::{ClusterCommand, NodeCommand, Target};
    use crate::api::client::{ApiClient, Auth};
    use crate::api::tls;
    use crate::cluster::model::{ClusterStatus, NodeStatus, TaskRequest, TaskView};
    use crate::cluster::{self, context, show, unix_now};

    fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    }

    fn client(target: &Target) -> anyhow::Result<ApiClient> {
        let path = context::resolve(target.context.as_deref());
        let loaded = context::Context::load(&path)?;
        let endpoints = target
            .endpoint
            .clone()
            .map_or(loaded.context.endpoints.clone(), |e| vec![e]);
        let config = tls::client_config(&loaded.context.ca_cert, None)
            .with_context(|| format!("the CA in {}", path.display()))?;
        Ok(ApiClient::new(
            endpoints,
            config,
            Auth::Bearer(loaded.token),
        ))
    }

    pub fn cluster(command: ClusterCommand) -> anyhow::Result<()> {
        match command {
            ClusterCommand::Init { config, out, force } => {
                let text = std::fs::read_to_string(&config)
                    .with_context(|| format!("cannot read {}", config.display()))?;
                let parsed =
                    configs::cluster::ClusterConfig::parse(&config.display().to_string(), &text)?;
                let secrets = cluster::init::Secrets::generate(&parsed.name)?;
                let files = cluster::init::plan(&parsed, &text, &secrets)?;
                cluster::init::write(&out, &files, force)?;
                println!(
                    "cluster `{}`: {} file(s) written to {}",
                    parsed.name,
                    files.len(),
                    out.display()
                );
                for f in &files {
                    println!("  {}", out.join(&f.path).display());
                }
                println!("CA sha256: {}", secrets.ca.fingerprint()?);
                println!(
                    "use the CLI with: export STRATA_CONTEXT={}",
                    out.join("cli/context.toml").display()
                );
                Ok(())
            }
            ClusterCommand::Status { target, json } => {
                let client = client(&target)?;
                let status: ClusterStatus =
                    runtime()?.block_on(client.get("/v1/cluster/status"))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&status)?);
                } else {
                    print!("{}", show::cluster_status(&status));
                }
                Ok(())
            }
            ClusterCommand::RunNode {
                user_data,
                state_dir,
                listen,
            } => {
                let text = std::fs::read_to_string(&user_data)
                    .with_context(|| format!("cannot read {}", user_data.display()))?;
                let ud =
                    configs::user_data::UserData::parse(&user_data.display().to_string(), &text)?;
                runtime()?.block_on(async {
                    if ud.role == configs::Role::Master {
                        cluster::run_master(cluster::MasterOptions {
                            state_dir,
                            user_data: ud,
                            etcd_paths: crate::etcd::render::EtcdPaths::standard(),
                            listen,
                        })
                        .await
                    } else {
                        cluster::run_agent(cluster::AgentOptions {
                            state_dir,
                            user_data: ud,
                            endpoints: None,
                            underlay: None,
                        })
                        .await
                    }
                })
            }
        }
    }

    /// `strata task run`: pins a task to a node.
    pub fn remote_task_run(
        target: &Target,
        node: String,
        spec: crate::tasks::TaskSpec,
    ) -> anyhow::Result<()> {
        let client = client(target)?;
        let id = spec.id.clone();
        let view: TaskView =
            runtime()?.block_on(client.post("/v1/tasks", &TaskRequest { node, spec }))?;
        println!("task {id} pinned to node {}", view.node);
        Ok(())
    }

    /// `strata task list` against the cluster.
    pub fn remote_task_list(target: &Target, json: bool) -> anyhow::Result<()> {
        let client = client(target)?;
        let tasks: Vec<TaskView> = runtime()?.block_on(client.get("/v1/tasks"))?;
        if json {
            println!("{}", serde_json::to_string_pretty(&tasks)?);
            return Ok(());
        }
        print!("{}", show::task_list(&tasks));
        Ok(())
    }

    /// `strata task stop` against the cluster.
    pub fn remote_task_stop(target: &Target, id: &str) -> anyhow::Result<()> {
        let client = client(target)?;
        let _: serde_json::Value =
            runtime()?.block_on(client.delete(&format!("/v1/tasks/{id}")))?;
        println!("task {id} stopped");
        Ok(())
    }

    pub fn node(command: NodeCommand) -> anyhow::Result<()> {
        match command {
            NodeCommand::List { target, json } => {
                let client = client(&target)?;
                let nodes: Vec<NodeStatus> = runtime()?.block_on(client.get("/v1/nodes"))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&nodes)?);
                } else {
                    print!("{}", show::node_list(&nodes, unix_now()));
                }
                Ok(())
            }
            NodeCommand::Show { name, target, json } => {
                let client = client(&target)?;
                let node: NodeStatus =
                    runtime()?.block_on(client.get(&format!("/v1/nodes/{name}")))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&node)?);
                } else {
                    print!("{}", show::node_show(&node, unix_now()));
                }
                Ok(())
            }
            NodeCommand::Remove { name, target } => {
                let client = client(&target)?;
                let _: serde_json::Value =
                    runtime()?.block_on(client.delete(&format!("/v1/nodes/{name}")))?;
                println!("node `{name}` removed");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use expect_test::{Expect, expect};

    use super::{Cli, run};

    /// Runs the CLI with `args` and compares its error (or "ok") with `expected`.
    fn check(args: &[&str], expected: Expect) {
        let actual = match Cli::try_parse_from(args) {
            Ok(cli) => match run(cli) {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error: {e:#}"),
            },
            Err(e) => e.to_string(),
        };
        expected.assert_eq(actual.trim_end());
    }

    #[test]
    fn help_lists_only_working_subcommands() {
        let help = Cli::command().render_help().to_string();
        expect![[r#"
            Strata: an immutable cluster OS. Node agent and CLI

            Usage: strata <COMMAND>

            Commands:
              agent    Run the node daemon (started by systemd as strata-agent.service)
              health   Print the node's health; fails unless the node is healthy
              config   Validate Strata configuration files (cluster.toml, role defaults, user-data)
              cluster  Create a cluster and look at it
              node     Look at the cluster's nodes
              task     Run, list and stop tasks: on the cluster or on this node
              image    Pull, import, list and garbage-collect OCI images
              help     Print this message or the help of the given subcommand(s)

            Options:
              -h, --help     Print help
              -V, --version  Print version
        "#]]
        .assert_eq(&help);
    }

    #[test]
    fn config_check() {
        let example = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/cluster.example.toml"
        );
        check(&["strata", "config", "check", example], expect!["ok"]);
        check(
            &["strata", "config", "check", "/nonexistent/cluster.toml"],
            expect![
                "error: cannot read /nonexistent/cluster.toml: No such file or directory (os error 2)"
            ],
        );
        check(
            &["strata", "config", "check", "--kind", "bogus", example],
            expect![[r#"
                error: invalid value 'bogus' for '--kind <KIND>': unknown kind `bogus`, expected one of role, cluster, user-data

                For more information, try '--help'."#]],
        );
    }
}
