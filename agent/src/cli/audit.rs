//! `strata audit list`: the newest records of the cluster's audit log
//! (admins): who wrote what, when, from where, and what the API answered.

use clap::Subcommand;

use super::output;
use super::target::{Target, runtime};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// The newest records, oldest first: every write an operator or a node
    /// made or tried, and every join (admins only).
    List {
        /// Show at most this many of the newest records.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only requests that were refused (status 4xx or 5xx).
        #[arg(long)]
        refused: bool,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::List {
        limit,
        refused,
        target,
        json,
    } = command;
    let client = target.client()?;
    let mut records = runtime()?.block_on(client.list_audit())?;
    if refused {
        records.retain(|r| !r.done());
    }
    let skip = records.len().saturating_sub(limit);
    let records = &records[skip..];
    output::emit(json, records, |r| {
        output::audit_list(r, crate::clock::unix_millis())
    })
}
