//! The CLI's context file: which cluster, the masters' API endpoints, the
//! CA that signs them, and where the bearer token is. An operator's file, so
//! it refuses unknown keys. `cluster init` writes it
//! (`cluster::init::plan`, through a copy of these fields kept there so that
//! nothing below the CLI imports it; a test in `cluster/tests.rs` reads what
//! `plan` writes with [`Context::load`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::api::client::{ApiClient, Auth};
use crate::api::tls;

/// `context.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub cluster: String,
    /// API endpoints (`host:port`), tried in turn.
    pub endpoints: Vec<String>,
    /// The file holding the CLI's bearer token, relative to this file.
    pub token_file: String,
    /// The cluster CA, PEM.
    pub ca_cert: String,
}

/// A loaded context with its token.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub context: Context,
    pub token: String,
    pub path: PathBuf,
}

/// The context file to use: `--context`, else `$STRATA_CONTEXT`, else
/// `~/.config/strata/context.toml`.
pub fn resolve(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("STRATA_CONTEXT").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".config/strata/context.toml")
}

impl Context {
    pub fn load(path: &Path) -> anyhow::Result<Loaded> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read the CLI context {} (make one with `strata cluster init`, then pass --context or set STRATA_CONTEXT)", path.display())
        })?;
        let context: Context = toml::from_str(&text)
            .with_context(|| format!("{} is not a Strata CLI context", path.display()))?;
        if context.endpoints.is_empty() {
            anyhow::bail!(
                "{}: field `endpoints` is empty, expected the masters' host:port",
                path.display()
            );
        }
        let token_path = path
            .parent()
            .unwrap_or(Path::new("."))
            .join(&context.token_file);
        let token = std::fs::read_to_string(&token_path)
            .with_context(|| {
                format!(
                    "cannot read the CLI token {} named by {}",
                    token_path.display(),
                    path.display()
                )
            })?
            .trim()
            .to_string();
        Ok(Loaded {
            context,
            token,
            path: path.to_path_buf(),
        })
    }
}

impl Loaded {
    /// A client of the context's API (of `endpoint` instead of the
    /// context's endpoints when given), trusting the context's CA and
    /// carrying its token.
    pub fn client(&self, endpoint: Option<String>) -> anyhow::Result<ApiClient> {
        let endpoints = endpoint.map_or_else(|| self.context.endpoints.clone(), |e| vec![e]);
        let config = tls::client_config(&self.context.ca_cert, None)
            .with_context(|| format!("the CA in {}", self.path.display()))?;
        Ok(ApiClient::new(
            endpoints,
            config,
            Auth::Bearer(self.token.clone()),
        ))
    }
}
