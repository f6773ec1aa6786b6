//! `strata deployment`: the deployments that roll apps out, and promoting
//! or rolling one back.

use clap::Subcommand;

use super::app::{Wait, changed};
use super::output;
use super::target::{Target, runtime};

#[derive(Debug, Subcommand)]
pub enum DeploymentCommand {
    /// Every app's deployments, newest last.
    List {
        /// Only those under way (running or waiting for a promotion).
        #[arg(long)]
        running: bool,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One deployment.
    Show {
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Go back to the definition before a deployment (the app's latest),
    /// as a new deployment.
    Rollback {
        id: String,
        #[command(flatten)]
        wait: Wait,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Roll on past a deployment's healthy canaries.
    Promote {
        id: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: DeploymentCommand) -> anyhow::Result<()> {
    match command {
        DeploymentCommand::List {
            running,
            target,
            json,
        } => {
            let mut all = runtime()?.block_on(target.client()?.list_deployments())?;
            if running {
                all.retain(|d| !d.state.is_done());
            }
            output::emit(json, &all, |d| {
                output::deployment_list(d, crate::clock::unix_secs())
            })
        }
        DeploymentCommand::Show { id, target, json } => {
            let d = runtime()?.block_on(target.client()?.show_deployment(&id))?;
            output::emit(json, &d, |d| {
                output::deployment_list(std::slice::from_ref(d), crate::clock::unix_secs())
            })
        }
        DeploymentCommand::Rollback {
            id,
            wait,
            target,
            json,
        } => {
            let client = target.client()?;
            let rt = runtime()?;
            let outcome = rt.block_on(client.rollback_deployment(&id))?;
            changed(&rt, &client, outcome, &wait, json)
        }
        DeploymentCommand::Promote { id, target, json } => {
            let d = runtime()?.block_on(target.client()?.promote_deployment(&id))?;
            output::emit(json, &d, |d| format!("promoted {}: it rolls on\n", d.id))
        }
    }
}
