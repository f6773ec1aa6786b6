//! `strata user token create|list|revoke`: operators' tokens, each with a
//! role (`admin`, `operator`, `viewer`, `metrics`), through the API. A new
//! token is printed once; `--write-context FILE` writes a CLI context that
//! uses it (a copy of the current one with the new token).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use control::access::{UserTokenRequest, parse_duration};
use control::rbac::Role;

use super::context::{self, Context};
use super::output;
use super::target::{Target, runtime};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Operators' tokens: make, list and revoke them (admins).
    Token {
        #[command(subcommand)]
        command: UserTokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserTokenCommand {
    /// Make a token with a role: admin (everything), operator (runs and
    /// stops tasks, reads), viewer (reads), metrics (metrics only).
    /// Printed once.
    Create {
        /// admin, operator, viewer or metrics.
        #[arg(long)]
        role: Role,
        /// Whose it is, for `token list`.
        #[arg(long, default_value = "")]
        name: String,
        /// How long it is valid (`30m`, `12h`, `30d`) [default: until revoked].
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<u64>,
        /// Also write a CLI context using the new token to FILE (and the
        /// token next to it, FILE.token); neither may exist yet.
        #[arg(long, value_name = "FILE")]
        write_context: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
        /// Print JSON (with the token) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every user token with its role and state (never a secret).
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a user token: every request with it is refused from now on.
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(command: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Token { command } = command;
    match command {
        UserTokenCommand::Create {
            role,
            name,
            ttl,
            write_context,
            target,
            json,
        } => {
            let loaded = Context::load(&context::resolve(target.context.as_deref()))?;
            let client = loaded.client(target.endpoint.clone())?;
            let req = UserTokenRequest {
                format: Default::default(),
                role,
                name,
                ttl_seconds: ttl,
            };
            let created = runtime()?.block_on(client.create_user_token(&req))?;
            if let Some(file) = &write_context {
                write_new_context(&loaded.context, file, &created.token)?;
            }
            output::emit(json, &created, |c| {
                output::user_token_created(c, write_context.as_deref(), crate::clock::unix_secs())
            })
        }
        UserTokenCommand::List { target, json } => {
            let client = target.client()?;
            let tokens = runtime()?.block_on(client.list_user_tokens())?;
            let now = crate::clock::unix_secs();
            output::emit(json, &tokens, |t| output::user_token_list(t, now))
        }
        UserTokenCommand::Revoke { id, target } => {
            let client = target.client()?;
            let record = runtime()?.block_on(client.revoke_user_token(&id))?;
            println!("user token {} ({}) revoked", record.id, record.role);
            Ok(())
        }
    }
}

/// Writes `file`, a copy of `current` whose token is `token`, kept in
/// `<file>.token` next to it (both mode 0600, neither replacing a file).
fn write_new_context(current: &Context, file: &Path, token: &str) -> anyhow::Result<()> {
    let name = file
        .file_name()
        .with_context(|| format!("{} names no file", file.display()))?;
    let token_name = format!("{}.token", name.to_string_lossy());
    let context = Context {
        token_file: token_name.clone(),
        ..current.clone()
    };
    let text = format!(
        "# CLI context of cluster `{}`: use with --context or STRATA_CONTEXT.\n{}",
        context.cluster,
        toml::to_string(&context).context("a context always serializes")?
    );
    let token_path = file.with_file_name(&token_name);
    for path in [file, token_path.as_path()] {
        if path.symlink_metadata().is_ok() {
            anyhow::bail!("{} exists already: not replacing it", path.display());
        }
    }
    create_private(&token_path, &format!("{token}\n"))?;
    create_private(file, &text)
}

/// Creates `path` with `content`, mode 0600; refuses to replace a file.
fn create_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(content.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_context_loads_with_the_new_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let current = Context {
            cluster: "demo".into(),
            endpoints: vec!["10.9.0.10:6443".into()],
            token_file: "token".into(),
            ca_cert: "PEM".into(),
        };
        let file = dir.path().join("viewer.toml");
        write_new_context(&current, &file, "strata-cli.v1.new").expect("written");
        let loaded = Context::load(&file).expect("loads");
        assert_eq!(loaded.token, "strata-cli.v1.new");
        assert_eq!(loaded.context.endpoints, current.endpoints);
        assert_eq!(loaded.context.token_file, "viewer.toml.token");
        let err =
            write_new_context(&current, &file, "strata-cli.v1.other").expect_err("never replaced");
        assert!(
            format!("{err:#}").contains("exists already: not replacing it"),
            "{err:#}"
        );
        assert_eq!(
            Context::load(&file).expect("loads").token,
            "strata-cli.v1.new"
        );
    }
}
