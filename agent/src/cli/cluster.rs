//! `strata cluster init|status|token|run-node`: make a cluster's files
//! ([`crate::cluster::init`]), ask the masters how the cluster is, make,
//! list and revoke join tokens, run this node's membership in the
//! foreground.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use control::access::{JoinTokenRequest, parse_duration};

use super::output;
use super::target::{Target, runtime};
use crate::cluster;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Make a new cluster from cluster.toml: CA, join token, one user-data
    /// file per node, the CLI's token and context.
    Init {
        /// The operator's cluster.toml.
        #[arg(long)]
        config: PathBuf,
        /// Directory for the files.
        #[arg(long)]
        out: PathBuf,
        /// Replace the files of an existing cluster in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Masters, etcd health and leader, nodes Ready.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replace every certificate the cluster signed so far, without
    /// downtime (admins): each master replaces the API's and its etcd
    /// member's within seconds, and each node renews its own at its next
    /// heartbeat, keeping its key. Waits, showing progress, until every
    /// master and every Ready node has a new one.
    RotateCerts {
        /// Return once the rotation is asked for.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait (`90s`, `10m`).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: u64,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Upgrade every node to a version by image swap: masters one at a
    /// time while the others keep quorum, then agents drained, upgraded
    /// and uncordoned, at most --max-unavailable at once. It stops at the
    /// first node that fails and says why; the rollout is kept in etcd
    /// and driven by the scheduler's leader, so it goes on if a master
    /// restarts. Push each role's bundle first (`strata bundle push`).
    Upgrade {
        /// The version every node ends on.
        #[arg(long, required_unless_present_any = ["resume", "status", "cancel"])]
        version: Option<String>,
        /// The most agents out of service at once.
        #[arg(long, default_value_t = 1)]
        max_unavailable: u32,
        /// How long a drained agent's app instances have to move before
        /// it is upgraded anyway (`90s`, `10m`) [default: 5m].
        #[arg(long, value_parser = parse_duration)]
        drain_deadline: Option<u64>,
        /// Only the nodes of this role (repeat for more).
        #[arg(long, value_enum)]
        role: Vec<RoleArg>,
        /// Go on with a halted rollout, from the node it halted at.
        #[arg(
            long,
            conflicts_with_all = ["version", "status", "role", "max_unavailable", "drain_deadline"]
        )]
        resume: bool,
        /// Stop the rollout under way: no node starts after this (one
        /// upgrading finishes its own upgrade, a drained one stays
        /// drained); --resume goes on.
        #[arg(
            long,
            conflicts_with_all = ["version", "status", "resume", "role", "max_unavailable", "drain_deadline"]
        )]
        cancel: bool,
        /// Show the rollout and return.
        #[arg(long, conflicts_with = "version")]
        status: bool,
        /// Return once the rollout is started.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the whole rollout (`30m`, `2h`).
        #[arg(long, default_value = "2h", value_parser = parse_duration)]
        timeout: u64,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make, list and revoke join tokens (admins).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Run this node's cluster membership in the foreground from a given
    /// user-data file (masters: etcd, the API; every node: join and
    /// heartbeats). For hosts without the image's first-boot providers.
    RunNode {
        /// The node's user-data.
        #[arg(long)]
        user_data: PathBuf,
        /// Where the node keeps its identity.
        #[arg(long, default_value = crate::state::STATE_DIR)]
        state_dir: PathBuf,
        /// Masters: the address the API listens on [default: 0.0.0.0:<api_port>].
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Masters: the public key update bundles must be signed with (the
        /// master keeps pushed bundles only when it can read it).
        #[arg(long, default_value = crate::upgrade::UPDATE_KEY)]
        update_key: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a join token: a node joins with it (its user-data's
    /// `join_token`) while it is neither expired nor used up. Printed once.
    Create {
        /// How long it admits nodes (`30m`, `1h`, `7d`) [default: until revoked].
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<u64>,
        /// How many nodes it admits [default: any number].
        #[arg(long)]
        uses: Option<u32>,
        /// What it is for, for `token list`.
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON (with the token) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every join token with its state and uses (never a secret).
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a join token: no node joins with it any more (nodes that
    /// joined with it stay).
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init { config, out, force } => init(&config, &out, force),
        ClusterCommand::Status { target, json } => {
            let client = target.client()?;
            let status = runtime()?.block_on(client.cluster_status())?;
            let now = crate::clock::unix_secs();
            output::emit(json, &status, |s| output::cluster_status(s, now))
        }
        ClusterCommand::RotateCerts {
            no_wait,
            timeout,
            target,
            json,
        } => rotate_certs(no_wait, timeout, target, json),
        ClusterCommand::Upgrade {
            version,
            max_unavailable,
            drain_deadline,
            role,
            resume,
            cancel,
            status,
            no_wait,
            timeout,
            target,
            json,
        } => {
            let start = match (version, resume, status) {
                _ if cancel => Start::Cancel,
                (_, _, true) => Start::Show,
                (_, true, _) => Start::Resume,
                (Some(version), ..) => Start::New(control::rollout::RolloutRequest {
                    version,
                    max_unavailable,
                    drain_deadline_seconds: drain_deadline,
                    roles: role.into_iter().map(configs::Role::from).collect(),
                }),
                (None, ..) => anyhow::bail!("name the version with --version V, or --resume"),
            };
            upgrade(start, no_wait, timeout, target, json)
        }
        ClusterCommand::Token { command } => token(command),
        ClusterCommand::RunNode {
            user_data,
            state_dir,
            listen,
            update_key,
        } => run_node(&user_data, state_dir, listen, update_key),
    }
}

/// `strata cluster token ...`.
fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            ttl,
            uses,
            description,
            target,
            json,
        } => {
            let req = JoinTokenRequest {
                format: Default::default(),
                ttl_seconds: ttl,
                uses,
                description,
            };
            let client = target.client()?;
            let created = runtime()?.block_on(client.create_join_token(&req))?;
            output::emit(json, &created, |c| {
                output::join_token_created(c, crate::clock::unix_secs())
            })
        }
        TokenCommand::List { target, json } => {
            let client = target.client()?;
            let tokens = runtime()?.block_on(client.list_join_tokens())?;
            let now = crate::clock::unix_secs();
            output::emit(json, &tokens, |t| output::join_token_list(t, now))
        }
        TokenCommand::Revoke { id, target } => {
            let client = target.client()?;
            let record = runtime()?.block_on(client.revoke_join_token(&id))?;
            println!("join token {} revoked", record.id);
            Ok(())
        }
    }
}

/// Writes a new cluster's files under `out` and says what they are.
fn init(config: &Path, out: &Path, force: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let parsed = configs::cluster::ClusterConfig::parse(&config.display().to_string(), &text)?;
    let secrets = cluster::init::Secrets::generate(&parsed.name)?;
    let files = cluster::init::plan(&parsed, &text, &secrets)?;
    cluster::init::write(out, &files, force)?;
    println!(
        "cluster `{}`: {} file(s) written to {}",
        parsed.name,
        files.len(),
        out.display()
    );
    for f in &files {
        println!("  {}", out.join(&f.path).display());
    }
    println!("CA sha256: {}", secrets.ca.fingerprint()?);
    println!(
        "use the CLI with: export STRATA_CONTEXT={}",
        out.join("cli/context.toml").display()
    );
    Ok(())
}

/// Runs the node's side of the cluster from `user_data` until the process
/// ends, as the daemon would ([`cluster::run`]) but with `--listen`.
fn run_node(
    user_data: &Path,
    state_dir: PathBuf,
    listen: Option<std::net::SocketAddr>,
    update_key: PathBuf,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(user_data)
        .with_context(|| format!("cannot read {}", user_data.display()))?;
    let ud = configs::user_data::UserData::parse(&user_data.display().to_string(), &text)?;
    runtime()?.block_on(async {
        if ud.role == configs::Role::Master {
            cluster::run_master(cluster::MasterOptions {
                state_dir,
                user_data: ud,
                etcd_paths: crate::etcd::render::EtcdPaths::standard(),
                listen,
                update_key,
            })
            .await
        } else {
            cluster::run_agent(cluster::AgentOptions {
                state_dir,
                user_data: ud,
                endpoints: None,
                underlay: None,
            })
            .await
        }
    })
}

/// How far a certificate rotation got.
#[derive(Debug, serde::Serialize)]
struct RotationProgress {
    rotation: control::model::CertRotation,
    /// Masters whose API certificate was signed at or after the rotation,
    /// of the masters Ready when it started or now.
    masters_renewed: usize,
    masters: usize,
    /// Nodes whose certificate was, of the nodes Ready when it started or
    /// now.
    nodes_renewed: usize,
    nodes: usize,
    /// Who has not renewed yet.
    waiting_for: Vec<String>,
    /// Nodes that were not Ready when it started and are not now: they
    /// renew when they are back.
    not_ready: Vec<String>,
}

impl RotationProgress {
    fn done(&self) -> bool {
        self.masters_renewed == self.masters && self.nodes_renewed == self.nodes
    }

    fn line(&self) -> String {
        let mut line = format!(
            "masters {}/{}, nodes {}/{} with new certificates",
            self.masters_renewed, self.masters, self.nodes_renewed, self.nodes
        );
        if !self.waiting_for.is_empty() {
            line.push_str(&format!(" (waiting for {})", self.waiting_for.join(", ")));
        }
        line
    }
}

/// What the cluster says of `rotation` now. `expected` names the nodes
/// that were Ready when it was asked for: each of them must renew and be
/// Ready again, even one that misses heartbeats meanwhile (a master that
/// restarts its API on its new certificate can hold a heartbeat up), so
/// that a short gap neither ends the wait early nor outlasts it.
async fn rotation_progress(
    client: &crate::api::client::ApiClient,
    rotation: &control::model::CertRotation,
    expected: &std::collections::BTreeSet<String>,
) -> anyhow::Result<RotationProgress> {
    let status = client.cluster_status().await?;
    let nodes = client.list_nodes().await?;
    Ok(progress_of(&status, &nodes, rotation, expected))
}

/// The names of the Ready nodes.
fn ready_names(nodes: &[control::model::NodeStatus]) -> std::collections::BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| n.state == control::model::NodeState::Ready)
        .map(|n| n.record.info.name.clone())
        .collect()
}

/// [`rotation_progress`] over the answers read.
fn progress_of(
    status: &control::model::ClusterStatus,
    nodes: &[control::model::NodeStatus],
    rotation: &control::model::CertRotation,
    expected: &std::collections::BTreeSet<String>,
) -> RotationProgress {
    use control::model::NodeState;
    let mut waiting_for = Vec::new();
    let (counted, not_ready): (Vec<_>, Vec<_>) = nodes
        .iter()
        .partition(|n| n.state == NodeState::Ready || expected.contains(&n.record.info.name));
    let gone = |n: &control::model::NodeStatus| {
        if n.state == NodeState::Ready {
            String::new()
        } else {
            format!(" ({})", n.state)
        }
    };
    let mut masters = 0;
    let mut masters_renewed = 0;
    for n in counted
        .iter()
        .filter(|n| n.record.info.role == configs::Role::Master)
    {
        let m = &n.record.info.name;
        masters += 1;
        let cert = status.master_certs.get(m);
        // Renewed, and Ready again: a node may miss heartbeats while the
        // masters restart on their new certificates.
        if n.state == NodeState::Ready && cert.is_some_and(|c| c.issued_at >= rotation.at) {
            masters_renewed += 1;
        } else {
            waiting_for.push(format!("master {m}{}", gone(n)));
        }
    }
    let mut nodes_renewed = 0;
    for n in &counted {
        if n.state == NodeState::Ready && n.record.certs.iter().any(|c| c.issued_at >= rotation.at)
        {
            nodes_renewed += 1;
        } else {
            waiting_for.push(format!("node {}{}", n.record.info.name, gone(n)));
        }
    }
    RotationProgress {
        rotation: rotation.clone(),
        masters_renewed,
        masters,
        nodes_renewed,
        nodes: counted.len(),
        waiting_for,
        not_ready: not_ready
            .iter()
            .map(|n| n.record.info.name.clone())
            .collect(),
    }
}

/// `strata cluster rotate-certs`.
fn rotate_certs(no_wait: bool, timeout: u64, target: Target, json: bool) -> anyhow::Result<()> {
    let client = target.client()?;
    let rt = runtime()?;
    // The nodes that must renew: those Ready when the rotation starts.
    let expected = if no_wait {
        Default::default()
    } else {
        ready_names(&rt.block_on(client.list_nodes())?)
    };
    let rotation = rt.block_on(client.rotate_certs())?;
    if no_wait {
        return output::emit(json, &rotation, |r| {
            format!(
                "rotation asked for: every certificate signed before unix time {} is replaced; follow it with `strata cluster status`\n",
                r.at
            )
        });
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    let mut last = String::new();
    let progress = loop {
        // A master may be between certificates: ask again.
        let progress = match rt.block_on(rotation_progress(&client, &rotation, &expected)) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("rotate-certs: cannot read the cluster's state yet: {e:#}");
                None
            }
        };
        if let Some(p) = &progress {
            let line = p.line();
            if line != last {
                eprintln!("rotate-certs: {line}");
                last = line;
            }
            if p.done() {
                break progress.expect("just matched");
            }
        }
        if std::time::Instant::now() >= deadline {
            let waiting = progress.map_or_else(
                || "the cluster's state could not be read".to_string(),
                |p| p.waiting_for.join(", "),
            );
            anyhow::bail!(
                "the rotation is not done after {timeout}s, waiting for {waiting}: nodes renew at their next heartbeat and masters within {}s; see `strata node list` and `strata cluster status`, or wait longer with --timeout",
                crate::cluster::master::CERT_CHECK.as_secs()
            );
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    output::emit(json, &progress, |p| {
        let mut text = format!(
            "every certificate signed before unix time {} was replaced: {} master(s), {} node(s)\n",
            p.rotation.at, p.masters, p.nodes
        );
        if !p.not_ready.is_empty() {
            text.push_str(&format!(
                "not Ready, renewing when back: {}\n",
                p.not_ready.join(", ")
            ));
        }
        text
    })
}

/// A role on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Master,
    Private,
    Public,
}

impl From<RoleArg> for configs::Role {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Master => configs::Role::Master,
            RoleArg::Private => configs::Role::Private,
            RoleArg::Public => configs::Role::Public,
        }
    }
}

/// What `strata cluster upgrade` asks of the masters.
enum Start {
    New(control::rollout::RolloutRequest),
    Resume,
    Cancel,
    Show,
}

/// `strata cluster upgrade`: start or resume the rollout, then follow it
/// until every node is done, it halts, or `timeout` passes.
fn upgrade(
    start: Start,
    no_wait: bool,
    timeout: u64,
    target: Target,
    json: bool,
) -> anyhow::Result<()> {
    use control::rollout::is_complete;
    let client = target.client()?;
    let rt = runtime()?;
    let now = crate::clock::unix_secs;
    let rollout = match start {
        Start::New(req) => rt.block_on(client.start_rollout(&req))?,
        Start::Resume => rt.block_on(client.resume_rollout())?,
        Start::Show => {
            let r = rt.block_on(client.show_rollout())?;
            return output::emit(json, &r, |r| output::rollout(r, now()));
        }
        Start::Cancel => {
            let r = rt.block_on(client.cancel_rollout())?;
            return output::emit(json, &r, |r| output::rollout(r, now()));
        }
    };
    if no_wait {
        return output::emit(json, &rollout, |r| {
            format!(
                "{}follow it with `strata cluster upgrade --status`\n",
                output::rollout(r, now())
            )
        });
    }
    eprintln!(
        "cluster upgrade to {} over {} node(s) started",
        rollout.version,
        rollout.nodes.len()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout);
    let mut seen: std::collections::BTreeMap<String, String> = rollout
        .nodes
        .iter()
        .map(|p| (p.name.clone(), p.step.to_string()))
        .collect();
    let last = loop {
        std::thread::sleep(std::time::Duration::from_secs(2));
        // The master answering may be the one rebooting into its new
        // image: the client tries the others, and a miss is retried, as
        // is a master that answers while its etcd member is not back yet.
        let r = match rt.block_on(client.show_rollout()) {
            Ok(r) => r,
            Err(e)
                if matches!(e, crate::api::client::ClientError::Unreachable { .. })
                    || e.status().is_some_and(|s| matches!(s, 502..=504)) =>
            {
                eprintln!("cluster upgrade: cannot read the rollout yet: {e:#}");
                if std::time::Instant::now() >= deadline {
                    anyhow::bail!(
                        "the cluster upgrade could not be followed for {timeout}s: `strata cluster upgrade --status` shows it"
                    );
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for p in &r.nodes {
            let step = p.step.to_string();
            if seen.get(&p.name) != Some(&step) {
                eprintln!("cluster upgrade: {} {step}", p.name);
                seen.insert(p.name.clone(), step);
            }
        }
        if r.halted.is_some() || is_complete(&r) {
            break r;
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "the cluster upgrade to {} is not done after {timeout}s; it goes on without this command: `strata cluster upgrade --status` shows it",
                r.version
            );
        }
    };
    if let Some(h) = &last.halted {
        if json {
            output::emit(true, &last, |_| String::new())?;
        }
        if let Some(by) = &h.cancelled_by {
            anyhow::bail!(
                "the cluster upgrade to {} was cancelled by {by}; `strata cluster upgrade --resume` goes on",
                last.version
            );
        }
        anyhow::bail!(
            "the cluster upgrade to {} halted at node `{}`: {}; the node stays drained; fix it, then `strata cluster upgrade --resume` tries it again and goes on",
            last.version,
            h.node,
            h.reason
        );
    }
    output::emit(json, &last, |r| output::rollout(r, now()))
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    /// A node as `GET /v1/nodes` lists it: `name:role:state:issued_at`.
    fn node(spec: &str) -> control::model::NodeStatus {
        let [name, role, state, issued]: [&str; 4] = spec
            .split(':')
            .collect::<Vec<_>>()
            .try_into()
            .expect("name:role:state:issued_at");
        serde_json::from_value(serde_json::json!({
            "name": name, "role": role, "addresses": ["10.0.0.1"], "cpus": 1,
            "memory_bytes": 1, "disk_bytes": 1, "key_sha256": "k", "joined_at": 1,
            "registered_at": 1, "state": state,
            "certs": [{"serial": "01", "not_after": 9999, "issued_at": issued.parse::<u64>().expect("a number")}],
        }))
        .expect("a node status")
    }

    /// The progress of a rotation at unix time 100, from `nodes` (of which
    /// the masters' API certificates carry the same issue time) and the
    /// names Ready when it started.
    fn check(nodes: &[&str], ready_at_start: &[&str], expected: Expect) {
        let nodes: Vec<_> = nodes.iter().map(|n| node(n)).collect();
        let master_certs = nodes
            .iter()
            .filter(|n| n.record.info.role == configs::Role::Master)
            .map(|n| {
                let c = &n.record.certs[0];
                (
                    n.record.info.name.clone(),
                    control::model::MasterCert {
                        format: Default::default(),
                        serial: c.serial.clone(),
                        issued_at: c.issued_at,
                        not_after: c.not_after,
                    },
                )
            })
            .collect();
        let status: control::model::ClusterStatus = serde_json::from_value(serde_json::json!({
            "cluster": "c", "answered_by": "m1", "masters": [], "etcd_leader": null,
            "etcd_quorum": true, "nodes_ready": 0, "nodes_total": 0,
        }))
        .expect("a cluster status");
        let status = control::model::ClusterStatus {
            master_certs,
            ..status
        };
        let rotation = control::model::CertRotation {
            format: Default::default(),
            at: 100,
            requested_by: "op".to_string(),
        };
        let expected_names = ready_at_start.iter().map(|s| s.to_string()).collect();
        let p = progress_of(&status, &nodes, &rotation, &expected_names);
        expected.assert_eq(&format!(
            "done={} {}; not ready: {:?}",
            p.done(),
            p.line(),
            p.not_ready
        ));
    }

    #[test]
    fn a_rotation_waits_for_every_node_ready_when_it_started() {
        check(
            &["m1:master:ready:120", "a1:private:ready:130"],
            &["m1", "a1"],
            expect![[r#"done=true masters 1/1, nodes 2/2 with new certificates; not ready: []"#]],
        );
        // A heartbeat missed during the rotation does not end the wait.
        check(
            &[
                "m1:master:unreachable:50",
                "a1:private:unreachable:50",
                "m2:master:ready:120",
            ],
            &["m1", "a1", "m2"],
            expect![
                "done=false masters 1/2, nodes 1/3 with new certificates (waiting for master m1 (Unreachable), node m1 (Unreachable), node a1 (Unreachable)); not ready: []"
            ],
        );
        // Renewed, but not Ready again yet: the wait goes on.
        check(
            &["m1:master:ready:120", "a1:private:unreachable:130"],
            &["m1", "a1"],
            expect![
                "done=false masters 1/1, nodes 1/2 with new certificates (waiting for node a1 (Unreachable)); not ready: []"
            ],
        );
        // A node down before it started renews when it is back.
        check(
            &["m1:master:ready:120", "a1:private:unreachable:50"],
            &["m1"],
            expect![[
                r#"done=true masters 1/1, nodes 1/1 with new certificates; not ready: ["a1"]"#
            ]],
        );
        // One that came up since is counted.
        check(
            &["m1:master:ready:120", "a1:private:ready:50"],
            &["m1"],
            expect![
                "done=false masters 1/1, nodes 1/2 with new certificates (waiting for node a1); not ready: []"
            ],
        );
    }
}
