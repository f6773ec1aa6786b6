//! `strata app`: apps the cluster keeps running. `validate` reads an app
//! file (Marathon's JSON or Strata's TOML) offline and reports every
//! mistake with its place.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;

use control::app::{AppSpec, Problem};

use super::output;

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Check an app file without a cluster: every mistake with its line and
    /// column (TOML) or JSON path, and what was expected.
    Validate {
        /// The app or group file: `.json` (Marathon) or `.toml` (Strata).
        file: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Validate { file, json } => validate(&file, json),
    }
}

/// What `validate --json` prints: the apps in deploy order, or the
/// problems.
#[derive(Serialize)]
struct Validation<'a> {
    file: String,
    valid: bool,
    #[serde(skip_serializing_if = "<[AppSpec]>::is_empty")]
    apps: &'a [AppSpec],
    #[serde(skip_serializing_if = "<[Problem]>::is_empty")]
    problems: &'a [Problem],
}

fn validate(file: &Path, json: bool) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let origin = file.display().to_string();
    match control::app::read(&origin, &text) {
        Ok(read) => {
            let v = Validation {
                file: origin,
                valid: true,
                apps: &read.apps,
                problems: &[],
            };
            output::emit(json, &v, |v| output::app_validated(&v.file, v.apps))
        }
        Err(e) if json => {
            let v = Validation {
                file: origin,
                valid: false,
                apps: &[],
                problems: &e.problems,
            };
            output::emit(true, &v, |_| String::new())?;
            anyhow::bail!("{}: {} problem(s)", e.origin, e.problems.len())
        }
        Err(e) => Err(e.into()),
    }
}
