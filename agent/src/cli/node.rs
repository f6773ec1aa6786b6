//! `strata node list|show|remove`: the cluster's nodes, through the API.

use clap::Subcommand;

use super::output;
use super::target::{Target, runtime};

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
    /// lease, which peers drop from their routes; its certificates are
    /// revoked. It joins again only with a join token made after this
    /// (`strata cluster token create`).
    Remove {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(command: NodeCommand) -> anyhow::Result<()> {
    match command {
        NodeCommand::List { target, json } => {
            let client = target.client()?;
            let nodes = runtime()?.block_on(client.list_nodes())?;
            let now = crate::clock::unix_secs();
            output::emit(json, &nodes, |n| output::node_list(n, now))
        }
        NodeCommand::Show { name, target, json } => {
            let client = target.client()?;
            let node = runtime()?.block_on(client.show_node(&name))?;
            let now = crate::clock::unix_secs();
            output::emit(json, &node, |n| output::node_show(n, now))
        }
        NodeCommand::Remove { name, target } => {
            let client = target.client()?;
            let answer = runtime()?.block_on(client.remove_node(&name))?;
            let revoked = answer
                .get("revoked")
                .and_then(|r| r.as_array())
                .map_or(0, Vec::len);
            println!(
                "node `{name}` removed, {revoked} certificate(s) revoked; it joins again only with a join token made from now on"
            );
            Ok(())
        }
    }
}
