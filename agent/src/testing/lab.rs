//! A cluster of network namespaces on one host, for the host tests and the
//! overlay benchmark: an underlay namespace with a bridge (the switch), one
//! namespace per node joined to it by a veth, and task namespaces wired by
//! the overlay module exactly as the agent wires them. Everything it creates
//! is deleted when the [`Lab`] is dropped.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use configs::net::Ipv4Cidr;

use crate::overlay::netlink::{self, NodeOverlay};
use crate::overlay::netns;
use crate::overlay::node::NodeNetwork;
use crate::overlay::plan::{Action, Peer};
use control::lease;

/// One node of the lab.
#[derive(Debug)]
pub struct LabNode {
    pub name: String,
    pub netns: PathBuf,
    pub underlay_ip: Ipv4Addr,
    pub subnet: Ipv4Cidr,
    /// What the agent of this node holds.
    pub net: std::sync::Arc<NodeNetwork>,
}

/// The whole lab; dropping it deletes every namespace it made.
#[derive(Debug)]
pub struct Lab {
    pub tag: String,
    pub underlay: PathBuf,
    pub nodes: Vec<LabNode>,
    pub cluster: Ipv4Cidr,
    /// Task name to (namespace path, address, node index).
    pub tasks: BTreeMap<String, (PathBuf, Ipv4Cidr, usize)>,
    namespaces: Vec<String>,
    /// State directories of the nodes (IPAM books).
    state: PathBuf,
}

impl Lab {
    /// The overlay CIDR of every lab.
    pub const CLUSTER: &'static str = "10.200.0.0/16";

    /// Builds the underlay and `n` node namespaces named after `tag` (keep
    /// it short and unique per run). Nodes get underlay addresses
    /// `10.77.0.(i+1)/24` and subnet leases from [`Lab::CLUSTER`]; `mtu` is
    /// the overlay MTU (`None`: the underlay's minus 50), `underlay_mtu` that
    /// of the node links.
    pub fn new(tag: &str, n: usize, mtu: Option<u32>, underlay_mtu: u32) -> anyhow::Result<Lab> {
        let cluster: Ipv4Cidr = Self::CLUSTER.parse().map_err(anyhow::Error::msg)?;
        let mut lab = Lab {
            tag: tag.to_string(),
            underlay: PathBuf::new(),
            nodes: Vec::new(),
            cluster,
            tasks: BTreeMap::new(),
            namespaces: Vec::new(),
            state: std::env::temp_dir().join(format!("strata-lab-{tag}")),
        };
        let u = format!("{tag}-u");
        lab.underlay = netns::create(&u)?;
        lab.namespaces.push(u);
        netlink::bridge(Some(&lab.underlay), "br0")?;
        netlink::loopback_up(Some(&lab.underlay))?;
        let mut leases = BTreeMap::new();
        for i in 0..n {
            let name = format!("{tag}-n{i}");
            let path = netns::create(&name)?;
            lab.namespaces.push(name.clone());
            let ip = Ipv4Addr::new(10, 77, 0, i as u8 + 1);
            netlink::veth_between(
                Some(&lab.underlay),
                &path,
                &netlink::VethPair {
                    a: &format!("u{i}"),
                    bridge: Some("br0"),
                    b: "eth0",
                    b_addr: Some(Ipv4Cidr {
                        addr: ip,
                        prefix: 24,
                    }),
                    mtu: Some(underlay_mtu),
                    ..Default::default()
                },
            )?;
            let subnet = lease::allocate(cluster, 24, &leases, &name)?;
            leases.insert(name.clone(), subnet);
            let cfg = configs::cluster::Overlay {
                mtu,
                ..Default::default()
            };
            let net = NodeNetwork::open(
                &lab.state.join(&name),
                Some(path.clone()),
                NodeOverlay::new(ip, &cfg),
                subnet,
                cluster,
                Vec::new,
            )?;
            lab.nodes.push(LabNode {
                name,
                netns: path,
                underlay_ip: ip,
                subnet,
                net: std::sync::Arc::new(net),
            });
        }
        Ok(lab)
    }

    /// The peer list node `i` sees when `members` are in the cluster.
    pub fn peers(&self, i: usize, members: &[usize]) -> Vec<Peer> {
        members
            .iter()
            .filter(|m| **m != i)
            .map(|m| {
                let n = &self.nodes[*m];
                Peer {
                    name: n.name.clone(),
                    underlay: n.underlay_ip,
                    subnet: n.subnet,
                }
            })
            .collect()
    }

    /// One reconciliation pass of node `i`, as its agent would run it.
    pub fn reconcile(&self, i: usize, members: &[usize]) -> anyhow::Result<Vec<Action>> {
        let n = &self.nodes[i];
        n.net
            .reconcile(self.peers(i, members))
            .with_context(|| format!("reconciling {}", n.name))
    }

    /// Starts a task `task` on node `i`: a namespace, an address from the
    /// node's IPAM, a veth into the node's bridge.
    pub fn add_task(&mut self, i: usize, task: &str) -> anyhow::Result<Ipv4Cidr> {
        let ns_name = format!("{}-t-{task}", self.tag);
        let path = netns::create(&ns_name)?;
        self.namespaces.push(ns_name);
        let addr = self.nodes[i]
            .net
            .attach(&format!("{}-{task}", self.tag), &path)?;
        self.tasks.insert(task.to_string(), (path, addr, i));
        Ok(addr)
    }

    /// Stops task `task`: its veth goes and its address is freed (the
    /// namespace itself is deleted with the lab).
    pub fn remove_task(&mut self, task: &str) -> anyhow::Result<()> {
        let (_, _, i) = self
            .tasks
            .remove(task)
            .with_context(|| format!("no task {task}"))?;
        self.nodes[i].net.detach(&self.task_key(task))
    }

    /// The task id the lab hands to the node (unique per lab).
    pub fn task_key(&self, task: &str) -> String {
        format!("{}-{task}", self.tag)
    }

    /// The state directory of node `i` (its IPAM book lives below it).
    pub fn state_dir(&self, i: usize) -> PathBuf {
        self.state.join(&self.nodes[i].name)
    }

    /// The namespace of task `task`.
    pub fn task_ns(&self, task: &str) -> anyhow::Result<PathBuf> {
        self.tasks
            .get(task)
            .map(|t| t.0.clone())
            .with_context(|| format!("no task {task}"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
        for name in self.namespaces.iter().rev() {
            if let Err(e) = netns::delete(name) {
                eprintln!("lab cleanup: {e:#}");
            }
        }
    }
}

/// A line-echo TCP server on `addr` inside `netns`, serving until a client
/// sends `quit`; `whoami` is answered with the client's address as the
/// server sees it. Returns once it listens.
pub fn echo_server(
    netns: PathBuf,
    addr: SocketAddr,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<()>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || -> anyhow::Result<()> {
        let listener = netns::enter(&netns).and_then(|()| {
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))
        });
        let listener = match listener {
            Ok(l) => {
                let _ = tx.send(Ok(()));
                l
            }
            Err(e) => {
                let _ = tx.send(Err(format!("{e:#}")));
                return Err(e);
            }
        };
        for conn in listener.incoming() {
            let conn = conn.context("accept")?;
            let mut writer = conn.try_clone().context("clone")?;
            let mut quit = false;
            let peer = conn.peer_addr().context("peer address")?;
            for line in BufReader::new(conn).lines() {
                let line = line.context("read")?;
                if line == "whoami" {
                    writeln!(writer, "{}", peer.ip()).context("write")?;
                    continue;
                }
                if line == "quit" {
                    quit = true;
                    break;
                }
                writeln!(writer, "{line}").context("write")?;
            }
            if quit {
                return Ok(());
            }
        }
        Ok(())
    });
    rx.recv()
        .context("echo server thread died")?
        .map_err(anyhow::Error::msg)?;
    Ok(handle)
}

/// Sends `line` to `addr` from inside `netns` and returns the echoed line.
pub fn roundtrip(netns: &std::path::Path, addr: SocketAddr, line: &str) -> anyhow::Result<String> {
    netns::run_in(Some(netns), || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
            .with_context(|| format!("cannot connect to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        writeln!(s, "{line}")?;
        let mut reply = String::new();
        BufReader::new(s)
            .read_line(&mut reply)
            .with_context(|| format!("no reply from {addr}"))?;
        Ok(reply.trim_end().to_string())
    })
}

/// Stops an [`echo_server`] at `addr` (reached from `netns`).
pub fn stop_echo(netns: &std::path::Path, addr: SocketAddr) -> anyhow::Result<()> {
    netns::run_in(Some(netns), || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        writeln!(s, "quit")?;
        Ok(())
    })
}

/// A TCP connection kept open across a change, sending a line at a time.
pub struct Conversation {
    stream: std::sync::Mutex<(TcpStream, BufReader<TcpStream>)>,
}

impl Conversation {
    /// Connects to `addr` from inside `netns`.
    pub fn open(netns: &std::path::Path, addr: SocketAddr) -> anyhow::Result<Conversation> {
        let s = netns::run_in(Some(netns), || {
            TcpStream::connect_timeout(&addr, Duration::from_secs(3))
                .with_context(|| format!("cannot connect to {addr}"))
        })?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let r = BufReader::new(s.try_clone()?);
        Ok(Conversation {
            stream: std::sync::Mutex::new((s, r)),
        })
    }

    /// Sends `line` and checks it comes back.
    pub fn say(&self, line: &str) -> anyhow::Result<()> {
        let mut g = self
            .stream
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        writeln!(g.0, "{line}")?;
        let mut reply = String::new();
        g.1.read_line(&mut reply)?;
        anyhow::ensure!(
            reply.trim_end() == line,
            "echo returned {reply:?} for {line:?}"
        );
        Ok(())
    }

    pub fn close(self) {}
}

/// Starts node `i`'s DNS server on its gateway address, port 53, inside the
/// node's namespace, answering from `records`. Call inside a tokio runtime.
pub fn start_dns(
    lab: &Lab,
    i: usize,
    zone: &str,
    records: crate::dns::Records,
    upstreams: &[SocketAddr],
) -> anyhow::Result<crate::dns::DnsServer> {
    let n = &lab.nodes[i];
    let addr: SocketAddr = (crate::overlay::plan::gateway(n.subnet), 53).into();
    let (udp, tcp) = netns::run_in(Some(&n.netns), || {
        let udp =
            std::net::UdpSocket::bind(addr).with_context(|| format!("cannot bind UDP {addr}"))?;
        let tcp = TcpListener::bind(addr).with_context(|| format!("cannot bind TCP {addr}"))?;
        Ok((udp, tcp))
    })?;
    let handler = crate::dns::server::Handler::new(zone, records, upstreams)?;
    crate::dns::DnsServer::start(handler, udp, Some(tcp))
}

/// Resolves `name` (A) through `server` from inside `netns`.
pub fn resolve(
    netns: &std::path::Path,
    server: SocketAddr,
    name: &str,
) -> anyhow::Result<Vec<Ipv4Addr>> {
    netns::run_in(Some(netns), || crate::dns::client::lookup_a(server, name))
}
