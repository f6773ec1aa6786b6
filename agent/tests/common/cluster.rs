//! One test cluster for the host tests: a master and its agents as real
//! `strata cluster run-node` processes (or `strata agent`, the daemon, with
//! its firewall: [`NodeCommand`]), each in a network namespace of its
//! own joined by veth to a bridge in the master's (the underlay), a real
//! etcd in the master's namespace with mutual TLS from the etcd CA, and
//! the operator's side (`cluster.toml`, `strata cluster init`, the CLI with
//! the context it wrote). What a test needs beyond that (registries, other
//! etcds, a D-Bus peer) it builds itself on top.

use std::path::{Path, PathBuf};
use std::time::Duration;

use control::model::{NodeStatus, TaskView};

use super::{Netns, Proc};

/// The node list the cluster tests use: a master, a private and a public
/// agent.
pub const MASTER_AND_TWO_AGENTS: &[(&str, &str)] = &[
    ("master-1", "master"),
    ("agent-1", "private"),
    ("agent-2", "public"),
];

/// Which `strata` binary the nodes and the CLI run.
#[derive(Clone, Copy, Debug)]
pub enum Binary {
    /// Cargo's, in place.
    Cargo,
    /// `$STRATA_TEST_BIN`, else cargo's, copied into the cluster's
    /// directory first (several worktrees may share one target dir).
    Copy,
}

/// How a node's process enters its namespace.
#[derive(Clone, Copy, Debug)]
pub enum Launch {
    /// `ip netns exec`: the namespace's own `/sys`, a mount namespace of
    /// its own ([`Proc::spawn`]).
    NetnsExec,
    /// `nsenter --net`: the host's sysfs and the test's mount namespace, as
    /// an agent that runs containers needs ([`Proc::spawn_net_only`]).
    NetOnly,
}

/// Which command runs a node.
#[derive(Clone, Copy, Debug)]
pub enum NodeCommand {
    /// `strata cluster run-node`: the node's membership, no firewall.
    RunNode,
    /// `strata agent --no-network` with the repository's role file of the
    /// node's role, as an image runs it: the node's firewall too, applied
    /// in the node's namespace; the run directory is `<state dir>-run`.
    Agent,
}

/// What a [`TestCluster`] is made of.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// Starts every namespace's name: `{tag}{pid}-m` for the master,
    /// `{tag}{pid}-a1`, `-a2`, ... for the other nodes.
    pub tag: &'static str,
    /// The cluster's `name` in `cluster.toml`; etcd's member is
    /// `etcd-{name}`.
    pub name: &'static str,
    /// The underlay's /24 as its first three octets (`"10.77.0"`): the
    /// first node at `.1`, node `i` after it at `.(10 + i)`.
    pub subnet: &'static str,
    /// `(name, role)` of every node; the first one is a master and holds
    /// the underlay's bridge (and etcd, which every master shares).
    pub nodes: &'static [(&'static str, &'static str)],
    /// Lines of `cluster.toml` between `masters` and `[heartbeat]`:
    /// top-level keys first, then tables (`[overlay]`).
    pub extra_toml: String,
    /// etcd's client port is this plus the pid modulo 20 000 (its peer
    /// port the next one).
    pub etcd_port_base: u16,
    pub binary: Binary,
    pub launch: Launch,
    pub command: NodeCommand,
    /// How often [`TestCluster::wait`] looks.
    pub poll: Duration,
}

impl ClusterSpec {
    /// A cluster of [`MASTER_AND_TWO_AGENTS`] with nothing extra in
    /// `cluster.toml`, etcd above port 20 000, cargo's binary under `ip
    /// netns exec` as `strata cluster run-node`, waits looking every 250 ms.
    pub fn new(tag: &'static str, name: &'static str, subnet: &'static str) -> ClusterSpec {
        ClusterSpec {
            tag,
            name,
            subnet,
            nodes: MASTER_AND_TWO_AGENTS,
            extra_toml: String::new(),
            etcd_port_base: 20_000,
            binary: Binary::Cargo,
            launch: Launch::NetnsExec,
            command: NodeCommand::RunNode,
            poll: Duration::from_millis(250),
        }
    }
}

/// One node of the cluster: its name, namespace and underlay address.
#[derive(Clone, Debug)]
struct Node {
    name: String,
    ns: String,
    ip: String,
}

/// A running test cluster: its namespaces, etcd and directory go away on
/// drop (etcd first, the directory last). The nodes' processes are the
/// test's ([`TestCluster::spawn_node`]); declared after the cluster, they
/// are killed before it.
pub struct TestCluster {
    /// The `strata` binary the nodes and the CLI run.
    pub strata: PathBuf,
    /// The cluster's CA, as `strata cluster init` made it.
    pub ca: agent::pki::Ca,
    /// The `cluster.toml` given to `strata cluster init`.
    pub cluster_toml: String,
    /// etcd's client port (on the master's loopback).
    pub etcd_port: u16,
    /// The CLI context `strata cluster init` wrote.
    pub context: PathBuf,
    /// The key the cluster's update bundles are signed with: masters run
    /// with its public half as their update key (`--update-key`).
    pub update_key: ed25519_dalek::SigningKey,
    id: u32,
    tag: &'static str,
    nodes: Vec<Node>,
    launch: Launch,
    command: NodeCommand,
    poll: Duration,
    // Dropped in this order: etcd, the namespaces, the directory.
    _etcd: Proc,
    netns: Netns,
    tmp: tempfile::TempDir,
}

impl TestCluster {
    /// Lays out the underlay, writes `cluster.toml`, runs `strata cluster
    /// init` and starts etcd. No node runs yet.
    pub fn new(spec: ClusterSpec) -> TestCluster {
        assert!(
            spec.nodes
                .first()
                .is_some_and(|(_, role)| *role == "master"),
            "the first node of {:?} must be the master",
            spec.nodes
        );
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let cargo = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
        let strata = match spec.binary {
            Binary::Cargo => cargo,
            Binary::Copy => {
                let bin = std::env::var_os("STRATA_TEST_BIN").map_or(cargo, PathBuf::from);
                let copy = dir.join("strata");
                std::fs::copy(&bin, &copy).expect("copy strata");
                copy
            }
        };
        let id = std::process::id() % 100_000;
        let nodes: Vec<Node> = spec
            .nodes
            .iter()
            .enumerate()
            .map(|(i, (name, _))| Node {
                name: name.to_string(),
                ns: if i == 0 {
                    format!("{}{id}-m", spec.tag)
                } else {
                    format!("{}{id}-a{i}", spec.tag)
                },
                ip: if i == 0 {
                    format!("{}.1", spec.subnet)
                } else {
                    format!("{}.{}", spec.subnet, 10 + i)
                },
            })
            .collect();

        // The underlay: a bridge in the master's namespace, one veth per
        // other node.
        let mut netns = Netns(Vec::new());
        let master = &nodes[0];
        let others: Vec<(&str, String)> = nodes[1..]
            .iter()
            .map(|n| (n.ns.as_str(), format!("{}/24", n.ip)))
            .collect();
        super::underlay(
            &mut netns,
            &master.ns,
            &format!("{}/24", master.ip),
            &others,
        );

        // The operator's side: cluster.toml and `strata cluster init`.
        let etcd_port = spec.etcd_port_base + (id % 20_000) as u16;
        // Several masters share the one etcd on the first's underlay
        // address; one master reaches it on its loopback.
        let masters: Vec<&Node> = nodes
            .iter()
            .zip(spec.nodes)
            .filter(|(_, (_, role))| *role == "master")
            .map(|(n, _)| n)
            .collect();
        let etcd_host = if masters.len() > 1 {
            master.ip.clone()
        } else {
            "127.0.0.1".to_string()
        };
        let master_ips: Vec<String> = masters.iter().map(|m| format!("\"{}\"", m.ip)).collect();
        let mut cluster_toml = format!(
            "name = \"{}\"\nmasters = [{}]\n{}\
             [heartbeat]\ninterval_seconds = 1\ngrace_seconds = 3\n\
             [etcd]\nexternal = [\"https://{etcd_host}:{etcd_port}\"]\n",
            spec.name,
            master_ips.join(", "),
            spec.extra_toml
        );
        for (n, (name, role)) in nodes.iter().zip(spec.nodes) {
            cluster_toml.push_str(&format!(
                "[[nodes]]\nname = \"{name}\"\nrole = \"{role}\"\naddress = \"{}/24\"\n",
                n.ip
            ));
        }
        let ca = super::cluster_init(&strata, &dir, &cluster_toml);

        // A real etcd in the master's namespace, mutual TLS from the etcd
        // CA (which the master derives from the cluster CA).
        let etcd = super::etcd(
            &master.ns,
            &dir,
            &ca,
            &format!("etcd-{}", spec.name),
            etcd_port,
            (masters.len() > 1).then_some(master.ip.as_str()),
        );
        let update_key = ed25519_dalek::SigningKey::from_bytes(&[id as u8; 32]);
        std::fs::write(
            dir.join("update.pub"),
            image::key::public_key_hex(&update_key.verifying_key()),
        )
        .expect("write the update key");
        TestCluster {
            strata,
            ca,
            cluster_toml,
            etcd_port,
            context: dir.join("out/cli/context.toml"),
            update_key,
            id,
            tag: spec.tag,
            nodes,
            launch: spec.launch,
            command: spec.command,
            poll: spec.poll,
            _etcd: etcd,
            netns,
            tmp,
        }
    }

    /// The cluster's directory: `cluster.toml`, `out/` of `cluster init`,
    /// `state/<node>/`, and every process's `*.log`.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name} in this cluster"))
    }

    /// The network namespace of node `name`.
    pub fn ns(&self, name: &str) -> &str {
        &self.node(name).ns
    }

    /// The master's network namespace (where the CLI runs and etcd listens).
    pub fn master_ns(&self) -> &str {
        &self.nodes[0].ns
    }

    /// Node `name`'s underlay address, without prefix.
    pub fn ip(&self, name: &str) -> &str {
        &self.node(name).ip
    }

    /// A name for a namespace of the test's own, `{tag}{pid}-{suffix}`.
    pub fn ns_name(&self, suffix: &str) -> String {
        format!("{}{}-{suffix}", self.tag, self.id)
    }

    /// Adds namespace `name`, deleted with the cluster's.
    pub fn add_netns(&mut self, name: &str) {
        self.netns.add(name);
    }

    /// Adds a namespace on the underlay that is no node of the cluster (a
    /// machine of the same network): `{tag}{pid}-x`, at the underlay's
    /// `.250`. Returns the namespace and its address.
    pub fn add_stranger(&mut self) -> (String, String) {
        let ns = self.ns_name("x");
        let master = self.nodes[0].ns.clone();
        let ip = match self.nodes[0].ip.rsplit_once('.') {
            Some((net, _)) => format!("{net}.250"),
            None => panic!("underlay address {}", self.nodes[0].ip),
        };
        self.netns.add(&ns);
        super::run(
            "ip",
            &[
                "-n", &master, "link", "add", "vethx", "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ],
        );
        super::run(
            "ip",
            &["-n", &master, "link", "set", "vethx", "master", "br0", "up"],
        );
        super::run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        super::run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        (ns, ip)
    }

    /// The user-data `strata cluster init` wrote for node `name`.
    pub fn user_data(&self, name: &str) -> PathBuf {
        self.dir()
            .join("out/user-data")
            .join(format!("{name}.toml"))
    }

    /// A copy of node `name`'s user-data with another join token, at
    /// `file` in [`Self::dir`].
    pub fn user_data_with(&self, name: &str, token: &str, file: &str) -> PathBuf {
        let text = std::fs::read_to_string(self.user_data(name)).expect("user-data");
        let line = text
            .lines()
            .find(|l| l.starts_with("join_token"))
            .expect("join_token line");
        let text = text.replace(line, &format!("join_token = \"{token}\""));
        let path = self.dir().join(file);
        std::fs::write(&path, text).expect("write user-data");
        path
    }

    /// A new join token (`strata cluster token create`, as the admin).
    pub fn new_join_token(&self) -> String {
        let out = self.admin_ok(&["cluster", "token", "create", "--json"]);
        serde_json::from_str::<control::access::JoinTokenCreated>(&out)
            .expect("the created token as JSON")
            .token
    }

    /// Node `name`'s state directory.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.dir().join("state").join(name)
    }

    /// Imports the busybox-static image as `example.org/bb:1` into the
    /// store of each of `nodes` (before they start); the cleanups stop
    /// their tasks when dropped.
    pub fn import_busybox(&self, nodes: &[&str]) -> Vec<super::TaskCleanup> {
        let layout = qemu_tests::registry::busybox_layout(self.dir()).expect("busybox image");
        nodes
            .iter()
            .map(|name| {
                let state = self.state_dir(name);
                super::output(
                    &self.strata,
                    &[
                        "image",
                        "import",
                        &layout.display().to_string(),
                        "--name",
                        "example.org/bb:1",
                        "--state-dir",
                        &state.display().to_string(),
                    ],
                )
                .expect("image import");
                super::TaskCleanup(state)
            })
            .collect()
    }

    /// Starts node `name` in its namespace with its own user-data and state
    /// directory, its output in `log` (a file name in [`Self::dir`]).
    pub fn spawn_node(&self, name: &str, log: &str) -> Proc {
        self.spawn(
            self.ns(name),
            &self.user_data(name),
            &self.state_dir(name),
            log,
        )
    }

    /// Starts the node command of the cluster ([`ClusterSpec::command`])
    /// in namespace `ns` with any user-data and state directory, its output
    /// in `log` (a file name in [`Self::dir`]).
    pub fn spawn(&self, ns: &str, user_data: &Path, state_dir: &Path, log: &str) -> Proc {
        let (user_data, state_dir) = (
            user_data.display().to_string(),
            state_dir.display().to_string(),
        );
        let update_key = self.dir().join("update.pub").display().to_string();
        let (role_file, run_dir) = match self.command {
            NodeCommand::RunNode => (String::new(), String::new()),
            NodeCommand::Agent => {
                let text = std::fs::read_to_string(&user_data).expect("user-data");
                let role = configs::user_data::UserData::parse(&user_data, &text)
                    .expect("user-data parses")
                    .role;
                let role_file = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../configs/roles")
                    .join(format!("{role}.toml"));
                (role_file.display().to_string(), format!("{state_dir}-run"))
            }
        };
        let args: Vec<&str> = match self.command {
            NodeCommand::RunNode => vec![
                "cluster",
                "run-node",
                "--user-data",
                &user_data,
                "--state-dir",
                &state_dir,
                "--update-key",
                &update_key,
            ],
            NodeCommand::Agent => vec![
                "agent",
                "--role-file",
                &role_file,
                "--user-data",
                &user_data,
                "--state-dir",
                &state_dir,
                "--run-dir",
                &run_dir,
                "--no-network",
            ],
        };
        let log = self.dir().join(log);
        match self.launch {
            Launch::NetnsExec => Proc::spawn(ns, &self.strata, &args, &log),
            Launch::NetOnly => Proc::spawn_net_only(ns, &self.strata, &args, &log),
        }
    }

    /// What the log file `log` in [`Self::dir`] holds so far.
    pub fn log(&self, log: &str) -> String {
        std::fs::read_to_string(self.dir().join(log)).unwrap_or_default()
    }

    /// The CLI in the master's namespace with the cluster's context, given
    /// after the first two words of `args` (`node list`, `task run`, ...:
    /// so before any `--`). Its stdout, or its stdout and stderr on failure.
    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let full = self.cli_args(args);
        let full: Vec<&str> = full.iter().map(String::as_str).collect();
        super::output(Path::new("ip"), &full)
    }

    /// [`Self::cli`]'s command line, for `ip`.
    fn cli_args(&self, args: &[&str]) -> Vec<String> {
        assert!(args.len() >= 2, "a noun and a verb first: {args:?}");
        let mut full: Vec<String> = ["netns", "exec", self.master_ns()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        full.push(self.strata.display().to_string());
        // `--context` follows the command's words: two, or three for the
        // nouns with nouns (`edge cert set`).
        let words = if args[0] == "edge" { 3 } else { 2 };
        full.extend(args[..words].iter().map(|s| s.to_string()));
        full.push("--context".into());
        full.push(self.context.display().to_string());
        full.extend(args[words..].iter().map(|s| s.to_string()));
        full
    }

    /// [`Self::cli`] with its exit status: the code, and its stdout then
    /// its stderr.
    pub fn cli_status(&self, args: &[&str]) -> (i32, String) {
        let out = std::process::Command::new("ip")
            .args(self.cli_args(args))
            .output()
            .expect("ip netns exec runs");
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// [`Self::cli`] started, its outputs piped: for a command that runs
    /// on (`job logs -f`).
    pub fn cli_spawn(&self, args: &[&str]) -> std::process::Child {
        std::process::Command::new("ip")
            .args(self.cli_args(args))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ip netns exec starts")
    }

    /// [`Self::cli`], which must succeed.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        self.cli(args)
            .unwrap_or_else(|e| panic!("strata {args:?}: {e}"))
    }

    /// The CLI in the master's namespace with the context file `context`
    /// (another operator's), given before the first argument that is a
    /// flag (or at the end): `cluster token create --uses 1`, `node show
    /// agent-1`. Its stdout, or its stdout and stderr on failure.
    pub fn cli_as(&self, context: &Path, args: &[&str]) -> Result<String, String> {
        let ctx = context.display().to_string();
        let strata = self.strata.display().to_string();
        let words = args
            .iter()
            .position(|a| a.starts_with('-'))
            .unwrap_or(args.len());
        let mut full = vec!["netns", "exec", self.master_ns(), &strata];
        full.extend_from_slice(&args[..words]);
        full.extend_from_slice(&["--context", &ctx]);
        full.extend_from_slice(&args[words..]);
        super::output(Path::new("ip"), &full)
    }

    /// [`Self::cli_as`] with the cluster's own context (an admin's) and
    /// `input` on the CLI's standard input: the whole outcome (exit status,
    /// stdout, stderr), for commands whose exit code says something
    /// (`strata node exec`).
    pub fn admin_run(&self, args: &[&str], input: Option<&[u8]>) -> std::process::Output {
        use std::io::Write;
        let ctx = self.context.display().to_string();
        let words = args
            .iter()
            .position(|a| a.starts_with('-'))
            .unwrap_or(args.len());
        let mut child = std::process::Command::new("ip")
            .args(["netns", "exec", self.master_ns()])
            .arg(&self.strata)
            .args(&args[..words])
            .args(["--context", &ctx])
            .args(&args[words..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run strata {args:?}: {e}"));
        let mut stdin = child.stdin.take().expect("piped");
        if let Some(input) = input {
            stdin.write_all(input).expect("the CLI takes input");
        }
        drop(stdin);
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("strata {args:?}: {e}"))
    }

    /// [`Self::cli_as`] with the cluster's own context (an admin's), which
    /// must succeed.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        self.cli_as(&self.context, args)
            .unwrap_or_else(|e| panic!("strata {args:?}: {e}"))
    }

    /// `strata node list --json`.
    pub fn try_nodes(&self) -> Result<Vec<NodeStatus>, String> {
        let out = self.cli(&["node", "list", "--json"])?;
        serde_json::from_str(&out).map_err(|e| format!("node list JSON: {e}"))
    }

    /// [`Self::try_nodes`], which must succeed.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.try_nodes()
            .unwrap_or_else(|e| panic!("node list: {e}"))
    }

    /// `strata task list --json`.
    pub fn try_tasks(&self) -> Result<Vec<TaskView>, String> {
        let out = self.cli(&["task", "list", "--json"])?;
        serde_json::from_str(&out).map_err(|e| format!("task list JSON: {e}"))
    }

    /// [`Self::try_tasks`], which must succeed.
    pub fn tasks(&self) -> Vec<TaskView> {
        self.try_tasks()
            .unwrap_or_else(|e| panic!("task list: {e}"))
    }

    /// Polls `check` (every [`ClusterSpec::poll`]) until it returns
    /// `Some`, or panics with `what` and every log of the cluster. Prints
    /// how long it took.
    pub fn wait<T>(&self, what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
        super::wait_until(self.dir(), what, timeout, self.poll, check)
    }

    /// Waits until `pred` holds for the node list and returns that list;
    /// the panic on timeout also shows the last list (or why there was
    /// none).
    pub fn wait_nodes(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[NodeStatus]) -> bool,
    ) -> Vec<NodeStatus> {
        super::wait_seeing(self.dir(), what, timeout, self.poll, || {
            match self.try_nodes() {
                Ok(nodes) if pred(&nodes) => Ok(nodes),
                Ok(nodes) => Err(format!("nodes: {nodes:#?}")),
                Err(e) => Err(format!("no node list: {e}")),
            }
        })
    }
}
