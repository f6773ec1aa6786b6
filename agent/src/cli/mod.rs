//! Command-line parsing and dispatch. Only subcommands that work are listed.
//!
//! One module per noun, each command a few lines that parse, call the
//! library and add context: [`agent`], [`health`], [`config`], [`cluster`],
//! [`node`], [`task`], [`app`], [`deployment`], [`edge`], [`image`](self::image), [`user`], [`audit`], and the hidden
//! [`shim`] commands. What they print goes through [`output`] (a table or `--json`);
//! how they reach a cluster or this node is [`target`], with the CLI's
//! [`context`] file. Nothing else in the library depends on this module (one
//! test of `cluster init` reads what it writes with [`context`]).

pub mod agent;
pub mod app;
pub mod audit;
pub mod bundle;
pub mod cluster;
pub mod config;
pub mod context;
pub mod deployment;
pub mod edge;
pub mod health;
pub mod image;
pub mod job;
pub mod node;
pub mod output;
pub mod shim;
pub mod target;
pub mod task;
pub mod user;

use std::path::PathBuf;
use std::process::ExitCode;

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
    Agent(self::agent::AgentArgs),
    /// Print the node's health; fails unless the node is healthy.
    Health(self::health::HealthArgs),
    /// Validate Strata configuration files (cluster.toml, role defaults, user-data).
    Config {
        #[command(subcommand)]
        command: self::config::ConfigCommand,
    },
    /// Create a cluster, look at it, make join tokens.
    Cluster {
        #[command(subcommand)]
        command: self::cluster::ClusterCommand,
    },
    /// Look at the cluster's nodes.
    Node {
        #[command(subcommand)]
        command: self::node::NodeCommand,
    },
    /// Run, list and stop tasks: on the cluster or on this node.
    Task {
        #[command(subcommand)]
        command: self::task::TaskCommand,
    },
    /// Deploy, scale, restart and remove apps the cluster keeps running.
    App {
        #[command(subcommand)]
        command: self::app::AppCommand,
    },
    /// Batch work, once or on a schedule (Metronome's jobs).
    Job {
        #[command(subcommand)]
        command: self::job::JobCommand,
    },
    /// Follow, promote and roll back apps' deployments.
    Deployment {
        #[command(subcommand)]
        command: self::deployment::DeploymentCommand,
    },
    /// The public agents' edge proxy: its certificates.
    Edge {
        #[command(subcommand)]
        command: self::edge::EdgeCommand,
    },
    /// Push and list the update bundles nodes upgrade from.
    Bundle {
        #[command(subcommand)]
        command: self::bundle::BundleCommand,
    },
    /// Pull, import, list and garbage-collect OCI images.
    Image {
        #[command(subcommand)]
        command: self::image::ImageCommand,
    },
    /// Make, list and revoke operators' tokens, each with a role.
    User {
        #[command(subcommand)]
        command: self::user::UserCommand,
    },
    /// Read the cluster's audit log: who changed what, and when (admins).
    Audit {
        #[command(subcommand)]
        command: self::audit::AuditCommand,
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
}

/// Runs the CLI and maps errors to an exit code.
pub fn main() -> ExitCode {
    crate::obs::init();
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
        Command::Agent(args) => self::agent::run(args),
        Command::Health(args) => self::health::run(args),
        Command::Config { command } => self::config::run(command),
        Command::Cluster { command } => self::cluster::run(command),
        Command::Node { command } => self::node::run(command),
        Command::Task { command } => self::task::run(command),
        Command::App { command } => self::app::run(command),
        Command::Job { command } => self::job::run(command),
        Command::Deployment { command } => self::deployment::run(command),
        Command::Edge { command } => self::edge::run(command),
        Command::Bundle { command } => self::bundle::run(command),
        Command::Image { command } => self::image::run(command),
        Command::User { command } => self::user::run(command),
        Command::Audit { command } => self::audit::run(command),
        Command::Shim { task_dir } => self::shim::shim(&task_dir),
        Command::ShimLauncher => self::shim::launcher(),
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
              agent       Run the node daemon (started by systemd as strata-agent.service)
              health      Print the node's health; fails unless the node is healthy
              config      Validate Strata configuration files (cluster.toml, role defaults, user-data)
              cluster     Create a cluster, look at it, make join tokens
              node        Look at the cluster's nodes
              task        Run, list and stop tasks: on the cluster or on this node
              app         Deploy, scale, restart and remove apps the cluster keeps running
              job         Batch work, once or on a schedule (Metronome's jobs)
              deployment  Follow, promote and roll back apps' deployments
              edge        The public agents' edge proxy: its certificates
              bundle      Push and list the update bundles nodes upgrade from
              image       Pull, import, list and garbage-collect OCI images
              user        Make, list and revoke operators' tokens, each with a role
              audit       Read the cluster's audit log: who changed what, and when (admins)
              help        Print this message or the help of the given subcommand(s)

            Options:
              -h, --help     Print help
              -V, --version  Print version
        "#]]
        .assert_eq(&help);
    }

    #[test]
    fn app_validate() {
        let dir = std::env::temp_dir().join(format!("strata-app-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("web.toml");
        std::fs::write(
            &good,
            "id = \"/shop/web\"\nimage = \"nginx:1\"\ninstances = 2\n",
        )
        .expect("write");
        check(
            &["strata", "app", "validate", good.to_str().expect("utf-8")],
            expect!["ok"],
        );
        let bad = dir.join("web.json");
        std::fs::write(&bad, r#"{"id": "/shop/web", "cpus": "1", "contaner": {}}"#).expect("write");
        let shown = format!("{}", bad.display());
        let actual = match run(Cli::parse_from(["strata", "app", "validate", &shown])) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e:#}").replace(&shown, "web.json"),
        };
        expect![[r#"
            error: web.json: 3 problems
              web.json: $: no container image: Strata runs every app in a container image; set `container.docker.image` (a plain `cmd` runs in an image such as `busybox`)
              web.json: $.cpus: expected a number, found the string "1"
              web.json: $.contaner: unknown field `contaner`; did you mean `container`?"#]]
        .assert_eq(&actual);
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn job_validate() {
        let dir = std::env::temp_dir().join(format!("strata-job-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("nightly.toml");
        std::fs::write(
            &good,
            "id = \"backup.nightly\"\n[run]\nimage = \"busybox\"\ncmd = \"echo dump\"\n[[schedules]]\nid = \"nightly\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"\n",
        )
        .expect("write");
        check(
            &["strata", "job", "validate", good.to_str().expect("utf-8")],
            expect!["ok"],
        );
        let bad = dir.join("job.json");
        std::fs::write(
            &bad,
            r#"{"id": "j", "run": {"cpus": 1, "mem": 32, "disk": 0, "docker": {"image": "busybox"}}, "schedules": [{"id": "s", "cron": "0 0 30 2 *", "timezone": "Europe/Pariss"}]}"#,
        )
        .expect("write");
        let shown = format!("{}", bad.display());
        let actual = match run(Cli::parse_from(["strata", "job", "validate", &shown])) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e:#}").replace(&shown, "job.json"),
        };
        let gone = dir.join("gone.json");
        std::fs::write(
            &gone,
            r#"{"id": "j", "run": {"cpus": 1, "mem": 32, "disk": 0, "docker": {"image": "busybox"}}, "schedules": [{"id": "y2k", "cron": "0 0 1 1 * 2001"}]}"#,
        )
        .expect("write");
        let shown_gone = format!("{}", gone.display());
        let refused = match run(Cli::parse_from(["strata", "job", "validate", &shown_gone])) {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("error: {e:#}").replace(&shown_gone, "gone.json"),
        };
        assert!(
            refused.contains("`0 0 1 1 * 2001` has no time left after"),
            "{refused}"
        );
        expect![[r#"
            error: job.json: 2 problems
              job.json: $.schedules[0].cron: `0 0 30 2 *` never fires (no date from 2000 on matches it)
              job.json: $.schedules[0].timezone: `Europe/Pariss` is not a known time zone; did you mean `Europe/Paris`?"#]].assert_eq(&actual);
        std::fs::remove_dir_all(&dir).expect("clean up");
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
