//! `strata edge cert set|list|remove`: the certificates the public
//! agents' edge serves host names with over HTTPS. Thin: the checks are
//! the API's (`agent::pki::edge`), the table is [`output::edge_certs`].

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;

use super::output;
use super::target::{Target, runtime};

#[derive(Debug, Subcommand)]
pub enum EdgeCommand {
    /// The certificates the edge serves over HTTPS, by host name.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Serve HOST over HTTPS with the certificate in FILE: one PEM file
    /// with the chain (leaf first) and the leaf's private key, as
    /// certbot's `fullchain.pem` and `privkey.pem` put together. Replaces
    /// the host's certificate, if any; public agents reload within seconds.
    Set {
        host: String,
        file: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every host with a certificate: its names, expiry and fingerprint
    /// (never the key).
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve HOST over plain HTTP only.
    Remove {
        host: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(command: EdgeCommand) -> anyhow::Result<()> {
    let EdgeCommand::Cert { command } = command;
    match command {
        CertCommand::Set {
            host,
            file,
            target,
            json,
        } => {
            let pem = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the certificate file {}", file.display()))?;
            let client = target.client()?;
            let req = control::edge::EdgeCertRequest { pem };
            let view = runtime()?.block_on(client.set_edge_cert(&host, &req))?;
            let now = crate::clock::unix_secs();
            output::emit(json, &view, |v| {
                format!(
                    "{host}: certificate set ({}), valid for {}; public agents serve it over HTTPS\n",
                    v.names.join(", "),
                    output::age(v.not_after.saturating_sub(now))
                )
            })
        }
        CertCommand::List { target, json } => {
            let client = target.client()?;
            let certs = runtime()?.block_on(client.list_edge_certs())?;
            let now = crate::clock::unix_secs();
            output::emit(json, &certs, |c| output::edge_certs(c, now))
        }
        CertCommand::Remove { host, target } => {
            let client = target.client()?;
            runtime()?.block_on(client.remove_edge_cert(&host))?;
            println!("{host}: certificate removed; public agents serve it over plain HTTP only");
            Ok(())
        }
    }
}
