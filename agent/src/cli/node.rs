//! `strata node list|show|remove|drain|uncordon|exec`: the cluster's
//! nodes, through the API.

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
