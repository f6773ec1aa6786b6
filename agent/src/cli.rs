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
        /// Report once and exit instead of staying up.
        #[arg(long)]
        once: bool,
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
        Command::Agent {
            role_file,
            state_dir,
            run_dir,
            user_data,
            console,
            once,
        } => crate::daemon::run(&crate::daemon::Options {
            role_file,
            state_dir,
            run_dir,
            user_data,
            console,
            once,
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
              agent   Run the node daemon (started by systemd as strata-agent.service)
              health  Print the node's health; fails unless the node is healthy
              config  Validate Strata configuration files (cluster.toml, role defaults, user-data)
              help    Print this message or the help of the given subcommand(s)

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
