//! `strata app`: apps the cluster keeps running. `validate` reads an app
//! file (Marathon's JSON or Strata's TOML) offline and reports every
//! mistake with its place; the others go through the API, and those that
//! start a deployment can wait for it (`--wait`), showing its progress.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;

use control::app::record::{DeployOutcome, DeployRequest};
use control::app::{AppId, AppSpec, Problem};

use super::output;
use super::target::{Target, runtime};
use crate::api::client::ApiClient;

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
    /// Deploy the apps of a file (in dependency order): each change is a
    /// versioned deployment that rolls by the app's upgrade strategy.
    Deploy {
        /// The app or group file: `.json` (Marathon) or `.toml` (Strata).
        file: PathBuf,
        /// Print the placements and steps the deployment would take; store
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// Start this many new instances beside the old ones and wait for
        /// `strata deployment promote`.
        #[arg(long, default_value_t = 0)]
        canary: u32,
        #[command(flatten)]
        wait: Wait,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every app: instances healthy of those asked, its deployment.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One app: its definition, deployments, instances, and why it waits.
    Show {
        /// The app's id (`/shop/web`).
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The versions an app kept.
    Versions {
        /// The app's id (`/shop/web`).
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run N instances of an app (a deployment).
    Scale {
        /// The app's id (`/shop/web`).
        id: String,
        instances: u32,
        #[command(flatten)]
        wait: Wait,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replace every instance of an app (a deployment).
    Restart {
        /// The app's id (`/shop/web`).
        id: String,
        #[command(flatten)]
        wait: Wait,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop every instance of an app and remove it.
    Remove {
        /// The app's id (`/shop/web`).
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

// How long to wait for a deployment (a `//` comment, as on every
// flattened argument struct here but `Target`).
#[derive(Debug, Clone, clap::Args)]
pub struct Wait {
    /// Wait until the deployment succeeds (or fails), showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
}

pub fn run(command: AppCommand) -> anyhow::Result<()> {
    match command {
        AppCommand::Validate { file, json } => validate(&file, json),
        AppCommand::Deploy {
            file,
            dry_run,
            canary,
            wait,
            target,
            json,
        } => {
            let apps = read(&file)?;
            let req = DeployRequest {
                format: Default::default(),
                apps,
                canary,
                dry_run,
            };
            let client = target.client()?;
            let rt = runtime()?;
            let outcomes = rt.block_on(client.deploy_apps(&req))?;
            output::emit(json, &outcomes, |o| output::deploy_outcomes(o, dry_run))?;
            if wait.wait && !dry_run {
                rt.block_on(wait_for(&client, &outcomes, &wait, json))?;
            }
            Ok(())
        }
        AppCommand::List { target, json } => {
            let apps = runtime()?.block_on(target.client()?.list_apps())?;
            output::emit(json, &apps, |a| output::app_list(a))
        }
        AppCommand::Show { id, target, json } => {
            let id = parse_id(&id)?;
            let app = runtime()?.block_on(target.client()?.show_app(&id))?;
            output::emit(json, &app, |a| {
                output::app_show(a, crate::clock::unix_secs())
            })
        }
        AppCommand::Versions { id, target, json } => {
            let id = parse_id(&id)?;
            let versions = runtime()?.block_on(target.client()?.app_versions(&id))?;
            output::emit(json, &versions, |v| output::app_versions(v))
        }
        AppCommand::Scale {
            id,
            instances,
            wait,
            target,
            json,
        } => {
            let id = parse_id(&id)?;
            let client = target.client()?;
            let rt = runtime()?;
            let outcome = rt.block_on(client.scale_app(&id, instances))?;
            changed(&rt, &client, outcome, &wait, json)
        }
        AppCommand::Restart {
            id,
            wait,
            target,
            json,
        } => {
            let id = parse_id(&id)?;
            let client = target.client()?;
            let rt = runtime()?;
            let outcome = rt.block_on(client.restart_app(&id))?;
            changed(&rt, &client, outcome, &wait, json)
        }
        AppCommand::Remove { id, target, json } => {
            let id = parse_id(&id)?;
            let answer = runtime()?.block_on(target.client()?.remove_app(&id))?;
            output::emit(json, &answer, |_| {
                format!("removing {id}: its instances stop, then it goes\n")
            })
        }
    }
}

/// Prints what a change started and, with `--wait`, waits for it.
pub(super) fn changed(
    rt: &tokio::runtime::Runtime,
    client: &ApiClient,
    outcome: DeployOutcome,
    wait: &Wait,
    json: bool,
) -> anyhow::Result<()> {
    let outcomes = vec![outcome];
    output::emit(json, &outcomes, |o| output::deploy_outcomes(o, false))?;
    if wait.wait {
        rt.block_on(wait_for(client, &outcomes, wait, json))?;
    }
    Ok(())
}

fn parse_id(text: &str) -> anyhow::Result<AppId> {
    AppId::resolve(&AppId::root(), text)
        .map_err(|why| anyhow::anyhow!("{why} (an app id is `/group/name`)"))
}

/// Reads and checks an app file as `validate` does.
fn read(file: &Path) -> anyhow::Result<Vec<AppSpec>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let origin = file.display().to_string();
    Ok(control::app::read(&origin, &text)?.apps)
}

/// Waits for each deployment started to be done, printing its progress
/// (instances healthy of those asked) as it changes.
async fn wait_for(
    client: &ApiClient,
    outcomes: &[DeployOutcome],
    wait: &Wait,
    json: bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait.timeout);
    let mut failed = Vec::new();
    for o in outcomes {
        let Some(d) = &o.deployment else { continue };
        let mut last = String::new();
        loop {
            let app = client.show_app(&o.app).await?;
            let now = app
                .record
                .deployments
                .iter()
                .find(|x| x.id == d.id)
                .cloned()
                .unwrap_or_else(|| d.clone());
            let line = format!(
                "{}: deployment {} {}: {} of {} instances healthy{}",
                o.app,
                now.id,
                now.state,
                app.healthy(),
                app.record.spec.instances,
                app.record
                    .waiting
                    .as_ref()
                    .map_or(String::new(), |w| format!(" (waiting: {w})"))
            );
            if line != last && !json {
                eprintln!("{line}");
                last = line;
            }
            if now.state.is_done() {
                if now.state != control::deploy::DeploymentState::Succeeded {
                    failed.push(format!(
                        "deployment {} of {} {}{}",
                        now.id,
                        o.app,
                        now.state,
                        now.reason.map_or(String::new(), |r| format!(": {r}"))
                    ));
                }
                break;
            }
            if now.state == control::deploy::DeploymentState::WaitingPromotion {
                if !json {
                    eprintln!(
                        "{}: canaries healthy: `strata deployment promote {}` rolls on, `strata deployment rollback {}` goes back",
                        o.app, now.id, now.id
                    );
                }
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "deployment {} of {} is still {} after {}s: `strata deployment show {}` follows it",
                    now.id,
                    o.app,
                    now.state,
                    wait.timeout,
                    now.id
                );
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("{}", failed.join("; "))
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
