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
    /// Validate Strata configuration files (cluster.toml, role defaults, user-data).
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    // ---- container runtime (issue 5): tasks, images, shim ----
    /// Run and inspect the tasks on this node.
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
        // ---- end container runtime ----
    }
}
