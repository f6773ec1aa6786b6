//! `strata node list|show|firewall|remove|drain|uncordon|upgrade|rollback|exec`:
//! the cluster's nodes, through the API.

use std::path::PathBuf;

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
    /// The firewall in force on a node, as it last reported it: its rules
    /// in order, each with what it matched, and what it dropped.
    Firewall {
        name: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of a table.
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
    /// Drain a node: it takes no new work, its app instances move to other
    /// nodes (each once its replacement is healthy, or at the deadline),
    /// and its pinned tasks stop until `strata node uncordon`.
    Drain {
        name: String,
        /// How long instances may take to move before what still runs
        /// there is stopped anyway (90s, 10m, 1h).
        #[arg(long, value_parser = parse_deadline)]
        deadline: Option<u64>,
        /// Wait until nothing the scheduler placed runs there any more,
        /// printing what is left.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put a drained node back into service: it takes new work, and its
    /// pinned tasks start again.
    Uncordon {
        name: String,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Upgrade a node: it downloads the bundle from a master, writes it into
    /// its other slot and reboots into it; a new slot that does not get
    /// healthy within its tries boots back into the old one by itself.
    #[command(
        after_help = "Examples:\n  strata node upgrade agent-1 --version 0.2.0 --wait\n  strata node upgrade agent-1 --bundle target/images/strata-private.update --wait"
    )]
    Upgrade {
        name: String,
        /// The version to install (a bundle of the node's role the masters
        /// keep: `strata bundle list`).
        #[arg(long, conflicts_with = "bundle", required_unless_present = "bundle")]
        version: Option<String>,
        /// A bundle file: pushed to the masters first, then installed.
        #[arg(long)]
        bundle: Option<PathBuf>,
        /// Install a version older than the one the node runs.
        #[arg(long)]
        allow_downgrade: bool,
        /// Wait until the node runs the new slot blessed, or the upgrade
        /// failed, printing its progress; fails when the upgrade did.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 20m).
        #[arg(long, value_parser = parse_deadline, default_value = "30m")]
        timeout: u64,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Boot a node's other slot, which booted healthy before (the image it
    /// ran before its last upgrade).
    Rollback {
        name: String,
        /// Wait until the node runs the other slot, printing its progress.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 20m).
        #[arg(long, value_parser = parse_deadline, default_value = "30m")]
        timeout: u64,
        #[command(flatten)]
        target: Target,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a command on a node, as root in the host's namespaces (admins
    /// only; each session is in the audit log). The node has no SSH: this
    /// is the way in when something is wrong. Exits with the command's
    /// code.
    #[command(
        after_help = "Examples:\n  strata node exec agent-1 -- journalctl -u strata-agent -n 50\n  strata node exec -it agent-1 -- sh"
    )]
    Exec {
        name: String,
        /// Forward this terminal's input to the command.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Run the command on a terminal (with -i: an interactive shell).
        #[arg(short = 't', long)]
        tty: bool,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
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
        NodeCommand::Firewall { name, target, json } => {
            let client = target.client()?;
            let report = runtime()?.block_on(client.show_firewall(&name))?;
            let now = crate::clock::unix_secs();
            output::emit(json, &report, |r| output::node_firewall(&name, r, now))
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
        NodeCommand::Drain {
            name,
            deadline,
            wait,
            target,
            json,
        } => {
            let client = target.client()?;
            let rt = runtime()?;
            let req = control::model::DrainRequest {
                deadline_seconds: deadline,
            };
            let node = rt.block_on(client.drain_node(&name, &req))?;
            let now = crate::clock::unix_secs();
            output::emit(json, &node, |n| {
                let deadline = n
                    .cordon
                    .as_ref()
                    .map_or(0, |c| c.deadline.saturating_sub(now));
                format!(
                    "node `{name}` drained: nothing new goes there, its app instances move within {deadline}s, its pinned tasks stop; `strata node uncordon {name}` puts it back\n"
                )
            })?;
            if wait {
                rt.block_on(wait_drained(&client, &name, json))?;
            }
            Ok(())
        }
        NodeCommand::Uncordon { name, target, json } => {
            let client = target.client()?;
            let node = runtime()?.block_on(client.uncordon_node(&name))?;
            output::emit(json, &node, |_| {
                format!("node `{name}` takes work again; its pinned tasks start\n")
            })
        }
        NodeCommand::Upgrade {
            name,
            version,
            bundle,
            allow_downgrade,
            wait,
            timeout,
            target,
            json,
        } => {
            let client = target.client()?;
            let rt = runtime()?;
            let order = rt.block_on(async {
                let sha256 = match &bundle {
                    Some(file) => Some(super::bundle::push(&client, file, !json).await?.sha256),
                    None => None,
                };
                let req = control::upgrade::UpgradeRequest {
                    version,
                    sha256,
                    allow_downgrade,
                };
                client
                    .upgrade_node(&name, &req)
                    .await
                    .with_context(|| format!("cannot upgrade node `{name}`"))
            })?;
            finish_order(&rt, &client, order, wait, timeout, json)
        }
        NodeCommand::Rollback {
            name,
            wait,
            timeout,
            target,
            json,
        } => {
            let client = target.client()?;
            let rt = runtime()?;
            let order = rt
                .block_on(client.rollback_node(&name))
                .with_context(|| format!("cannot roll back node `{name}`"))?;
            finish_order(&rt, &client, order, wait, timeout, json)
        }
        NodeCommand::Exec {
            name,
            interactive,
            tty,
            command,
            target,
        } => {
            let code = exec(&name, interactive, tty, command, target)?;
            std::process::exit(code)
        }
    }
}

/// Prints an order, and with `wait` follows it to its end: fails when it
/// failed or did not end within `timeout` seconds.
fn finish_order(
    rt: &tokio::runtime::Runtime,
    client: &crate::api::client::ApiClient,
    order: control::upgrade::UpgradeOrder,
    wait: bool,
    timeout: u64,
    json: bool,
) -> anyhow::Result<()> {
    let name = order.node.clone();
    if !wait {
        return output::emit(json, &order, |o| {
            format!(
                "node `{name}`: {} ordered (order {}); `strata node show {name}` follows it\n",
                match &o.action {
                    control::upgrade::Action::Install { version, .. } =>
                        format!("upgrade to {version}"),
                    _ => "rollback".to_string(),
                },
                o.id
            )
        });
    }
    let ended = rt.block_on(wait_order(client, &order, timeout, json))?;
    output::emit(json, &ended, |n| {
        output::node_show(n, crate::clock::unix_secs())
    })?;
    match ended.upgrade.as_ref().map(|o| &o.progress) {
        Some(control::upgrade::Progress::Succeeded) => Ok(()),
        Some(control::upgrade::Progress::Failed { reason }) => {
            anyhow::bail!("node `{name}`: the order failed: {reason}")
        }
        _ => anyhow::bail!(
            "node `{name}`: the order did not end within {timeout}s; `strata node show {name}` follows it"
        ),
    }
}

/// Follows order `order` until it ends or `timeout` seconds pass,
/// printing each change of its progress (and the node's state) on
/// standard error. A master that cannot be reached meanwhile (the node
/// being upgraded may be one) is waited out.
async fn wait_order(
    client: &crate::api::client::ApiClient,
    order: &control::upgrade::UpgradeOrder,
    timeout: u64,
    json: bool,
) -> anyhow::Result<control::model::NodeStatus> {
    let started = std::time::Instant::now();
    let mut last = String::new();
    let mut seen = None;
    loop {
        match client.show_node(&order.node).await {
            Ok(n) => {
                let line = match &n.upgrade {
                    Some(o) if o.id == order.id => format!("{}, node {}", o.progress, n.state),
                    _ => "the order was replaced".to_string(),
                };
                if line != last && !json {
                    eprintln!("{}: {line}", order.node);
                    last = line;
                }
                let ended = n
                    .upgrade
                    .as_ref()
                    .is_none_or(|o| o.id != order.id || o.progress.is_final());
                if ended {
                    return Ok(n);
                }
                seen = Some(n);
            }
            Err(e) if !json => eprintln!("{}: waiting for the masters: {e}", order.node),
            Err(_) => {}
        }
        if started.elapsed().as_secs() >= timeout {
            return seen.with_context(|| format!("no master answered within {timeout}s"));
        }
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    }
}

fn parse_deadline(text: &str) -> Result<u64, String> {
    control::access::parse_duration(text)
}

/// Waits until no app instance is left on drained node `name`, printing
/// how many are left as that changes.
async fn wait_drained(
    client: &crate::api::client::ApiClient,
    name: &str,
    json: bool,
) -> anyhow::Result<()> {
    let mut last = None;
    loop {
        let apps = client.list_apps().await?;
        let left: Vec<&str> = apps
            .iter()
            .flat_map(|a| &a.instances)
            .filter(|i| i.node == name)
            .map(|i| i.id.as_str())
            .collect();
        if last != Some(left.len()) && !json {
            eprintln!(
                "{name}: {} app instance(s) left{}",
                left.len(),
                if left.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", left.join(", "))
                }
            );
        }
        if left.is_empty() {
            return Ok(());
        }
        last = Some(left.len());
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Runs `strata node exec`; the command's exit code.
fn exec(
    name: &str,
    interactive: bool,
    tty: bool,
    command: Vec<String>,
    target: Target,
) -> anyhow::Result<i32> {
    use std::io::IsTerminal;
    let client = target.client()?;
    let (rows, cols) = terminal_size().unwrap_or((0, 0));
    let request = control::exec::ExecRequest {
        command,
        tty,
        stdin: interactive,
        rows,
        cols,
    };
    request.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let rt = runtime()?;
    let code = rt.block_on(async {
        let stream = client
            .exec_node(name, &request)
            .await
            .with_context(|| format!("cannot open a session on node `{name}`"))?;
        // A local terminal passes every key through (^C reaches the
        // command) while the session runs.
        let _raw = (tty && interactive && std::io::stdin().is_terminal())
            .then(RawMode::enter)
            .transpose()?;
        let sizes = tty.then(watch_size);
        crate::exec::drive(stream, interactive, sizes).await
    });
    // Standard input is read on a thread that a pending read holds: the
    // runtime must not wait for it (the command ended; no key will come).
    rt.shutdown_background();
    code
}

use anyhow::Context;

/// The local terminal's rows and columns.
fn terminal_size() -> Option<(u16, u16)> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which
    // is valid and exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (rc == 0 && size.ws_row > 0).then_some((size.ws_row, size.ws_col))
}

/// The terminal's size each time it changes (SIGWINCH).
fn watch_size() -> tokio::sync::mpsc::Receiver<(u16, u16)> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut changes) = signal(SignalKind::window_change()) else {
            return;
        };
        while changes.recv().await.is_some() {
            if let Some(size) = terminal_size()
                && tx.send(size).await.is_err()
            {
                return;
            }
        }
    });
    rx
}

/// The local terminal in raw mode, restored when dropped.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).context("cannot put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}
