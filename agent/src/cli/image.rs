//! `strata image ...`: pull, import, list, remove and garbage-collect the
//! OCI images in this node's store ([`crate::images`]). The registry flags
//! ([`RegistryArgs`]) are shared with `strata task agent`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::output;
use super::target::StateDir;
use crate::images::{ImageStore, PullAuth, PullOptions};
use crate::tasks;

// How to reach a registry (a `//` comment, to leave clap's about texts
// alone).
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Basic auth user name (with --password).
    #[arg(long, requires = "password")]
    pub username: Option<String>,
    #[arg(long, requires = "username")]
    pub password: Option<String>,
    /// Bearer token.
    #[arg(long, conflicts_with = "username")]
    pub token: Option<String>,
    /// Plain HTTP even for a registry that is not on loopback.
    #[arg(long)]
    pub insecure: bool,
    /// Extra CA certificate (PEM) to trust.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

impl RegistryArgs {
    pub fn options(&self) -> PullOptions {
        let auth = match (&self.username, &self.password, &self.token) {
            (Some(u), Some(p), _) => PullAuth::Basic {
                username: u.clone(),
                password: p.clone(),
            },
            (_, _, Some(t)) => PullAuth::Bearer { token: t.clone() },
            _ => PullAuth::Anonymous,
        };
        PullOptions {
            auth,
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            ..PullOptions::default()
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry, verifying every blob.
    Pull {
        reference: String,
        #[command(flatten)]
        state: StateDir,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Import an OCI layout directory, a tarball of one, or a `docker save` archive.
    Import {
        path: PathBuf,
        /// Name to store it under (default: the name in the archive).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        state: StateDir,
    },
    /// List stored images.
    List {
        #[command(flatten)]
        state: StateDir,
    },
    /// Forget an image (its layers go at the next gc).
    Remove {
        name: String,
        #[command(flatten)]
        state: StateDir,
    },
    /// Delete layers no image and no task references.
    Gc {
        #[command(flatten)]
        state: StateDir,
    },
}

fn store(state: &StateDir) -> anyhow::Result<ImageStore> {
    Ok(ImageStore::open(state.state_dir.join("images"))?)
}

pub fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::Pull {
            reference,
            state,
            registry,
        } => {
            let store = store(&state)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let rec = rt.block_on(store.pull(&reference, &registry.options()))?;
            println!("{}", output::image_line(&rec));
            Ok(())
        }
        ImageCommand::Import { path, name, state } => {
            let rec = store(&state)?.import(&path, name.as_deref())?;
            println!("{}", output::image_line(&rec));
            Ok(())
        }
        ImageCommand::List { state } => {
            for rec in store(&state)?.list()? {
                println!("{}", output::image_line(&rec));
            }
            Ok(())
        }
        ImageCommand::Remove { name, state } => {
            if !store(&state)?.remove(&name)? {
                anyhow::bail!("no image {name:?} in the store");
            }
            Ok(())
        }
        ImageCommand::Gc { state } => {
            let in_use = tasks::layers_in_use(&state.state_dir);
            for layer in store(&state)?.gc(&in_use)? {
                println!("removed {layer}");
            }
            Ok(())
        }
    }
}
