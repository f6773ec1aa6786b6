//! `strata bundle push|list`: the update bundles the masters keep, which
//! `strata node upgrade` installs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use clap::Subcommand;
use control::upgrade::BundleRecord;

use super::output;
use super::target::{Target, runtime};
use crate::api::client::ApiClient;

#[derive(Debug, Subcommand)]
pub enum BundleCommand {
    /// Push an update bundle (`strata-<role>.update`, from `cargo xtask
    /// image`) to the masters. A master verifies it with the images'
    /// update key before it keeps it; it is named by its SHA-256.
    Push {
        file: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The bundles the masters keep: version, role, size and digest.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: BundleCommand) -> anyhow::Result<()> {
    match command {
        BundleCommand::Push { file, target, json } => {
            let client = target.client()?;
            let record = runtime()?.block_on(push(&client, &file, !json))?;
            output::emit(json, &record, |b| {
                format!(
                    "bundle {} pushed: {} {} ({}), kept by {}\n",
                    b.sha256,
                    b.role,
                    b.version,
                    output::bytes(b.size),
                    b.holders.join(", ")
                )
            })
        }
        BundleCommand::List { target, json } => {
            let client = target.client()?;
            let bundles = runtime()?.block_on(client.list_bundles())?;
            let now = crate::clock::unix_secs();
            output::emit(json, &bundles, |b| output::bundle_list(b, now))
        }
    }
}

/// Pushes the bundle at `file`, printing its progress on standard error
/// (every tenth) when `progress`.
pub async fn push(client: &ApiClient, file: &Path, progress: bool) -> anyhow::Result<BundleRecord> {
    let shown = Arc::new(AtomicU64::new(0));
    let name = file.display().to_string();
    let record = client
        .upload(
            &control::api::PUSH_BUNDLE.fill(&[]),
            file,
            move |sent, total| {
                if !progress || total == 0 {
                    return;
                }
                let tenth = sent * 10 / total;
                if shown.fetch_max(tenth, Ordering::Relaxed) < tenth {
                    eprintln!(
                        "{name}: {} of {} sent",
                        output::bytes(sent),
                        output::bytes(total)
                    );
                }
            },
        )
        .await
        .with_context(|| format!("cannot push {}", file.display()))?;
    Ok(record)
}
