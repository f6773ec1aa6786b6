//! `strata config check`: validates a Strata configuration file (cluster.toml,
//! role defaults, user-data) with the [`configs`] crate and prints what it
//! holds.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

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

pub fn run(command: ConfigCommand) -> anyhow::Result<()> {
    match command {
        ConfigCommand::Check { file, kind } => check(&file, kind),
    }
}

/// Prints the summary of a valid file; errors name file, line, column and
/// field.
fn check(file: &std::path::Path, kind: Option<configs::Kind>) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let summary = configs::check(&file.display().to_string(), &text, kind)?;
    println!("{summary}");
    Ok(())
}
