//! A whole cluster of VMs booted from the built images, on a private
//! network of their own (a QEMU multicast socket segment, 10.9.0.0/24), with
//! the first master's API forwarded to the host's loopback. Shared by
//! `cargo xtask cluster up` and the cluster tests.
//!
//! The segment is the run's own ([`crate::reserve::Slot`]), checked unused
//! before the first VM starts; the API's port was free when it was picked.
//!
//! Every VM has two NICs: the user-mode one QEMU always adds (DHCP, the API
//! port forward on the first master) and the cluster NIC at PCI slot 0x10,
//! which the guest names `enp0s16` and configures from its user-data.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::disk::{ConfigFs, config_disk};
use crate::reserve::{Slot, free_tcp_port};
use crate::{VmConfig, overlay, unique_mac};

/// How a node gets its user-data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserDataVia {
    /// QEMU's fw_cfg (`opt/strata/user-data`).
    FwCfg,
    /// A `STRATA-CFG` filesystem on a second disk.
    Disk(ConfigFs),
}

/// The cluster NIC's name inside the guest (virtio-net at PCI slot 0x10).
pub const INTERFACE: &str = "enp0s16";

/// One node of the node list, as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    /// `ready` or `unreachable`.
    pub state: String,
    /// Unix seconds since which the node is Ready (its heartbeats arrive
    /// without a gap), when it is.
    pub ready_since: Option<u64>,
}

/// The Strata API port on masters.
pub const API_PORT: u16 = 6443;

/// How many nodes of each role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub masters: usize,
    pub private: usize,
    pub public: usize,
}

/// One node of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    pub role: &'static str,
    pub address: Ipv4Addr,
}

impl Layout {
    /// The nodes: masters at 10.9.0.10.., private agents at 10.9.0.21..,
    /// public agents at 10.9.0.31...
    pub fn nodes(&self) -> Vec<NodeSpec> {
        let group = |role: &'static str, n: usize, base: u8| {
            (0..n).map(move |i| NodeSpec {
                name: format!("{role}-{}", i + 1),
                role,
                address: Ipv4Addr::new(10, 9, 0, base + i as u8),
            })
        };
        group("master", self.masters, 10)
            .chain(group("private", self.private, 21))
            .chain(group("public", self.public, 31))
            .collect()
    }

    /// The operator's cluster.toml for this layout.
    pub fn cluster_toml(&self, name: &str) -> String {
        let nodes = self.nodes();
        let masters: Vec<String> = nodes
            .iter()
            .filter(|n| n.role == "master")
            .map(|n| format!("\"{}\"", n.address))
            .collect();
        let mut s = format!(
            "# Made by the QEMU cluster harness (qemu-tests/src/cluster.rs).\nname = \"{name}\"\nmasters = [{}]\napi_port = {API_PORT}\n\n[overlay]\ncidr = \"10.200.0.0/16\"\nsubnet_prefix = 24\n\n[heartbeat]\ninterval_seconds = 2\ngrace_seconds = 10\n",
            masters.join(", ")
        );
        for n in &nodes {
            s.push_str(&format!(
                "\n[[nodes]]\nname = \"{}\"\nrole = \"{}\"\naddress = \"{}/24\"\ninterface = \"{INTERFACE}\"\n",
                n.name, n.role, n.address
            ));
        }
        s
    }
}

/// The edge's HTTP port on public agents (`cluster.toml`'s default).
pub const EDGE_HTTP_PORT: u16 = 80;

/// A cluster made by `strata cluster init`, ready to boot.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub dir: PathBuf,
    pub strata: PathBuf,
    pub images: PathBuf,
    /// Nodes booted from another disk image than their role's in
    /// `images` (by node name: the image's `.qcow2`).
    pub disk_images: std::collections::BTreeMap<String, PathBuf>,
    pub nodes: Vec<NodeSpec>,
    /// Host port forwarded to the first master's API (free when picked).
    pub api_port: u16,
    /// Host port forwarded to the first public agent's edge (its HTTP
    /// port, 80; free when picked).
    pub edge_port: u16,
    /// The run's multicast segment, held while any clone of this value (or
    /// a detached VM it was passed on to) lives.
    pub slot: std::sync::Arc<Slot>,
}

impl Prepared {
    /// Writes cluster.toml for `layout` into `dir` and runs `strata cluster
    /// init` there.
    pub fn new(
        dir: &Path,
        layout: Layout,
        strata: &Path,
        images: &Path,
    ) -> anyhow::Result<Prepared> {
        Prepared::with_extra(dir, layout, strata, images, "")
    }

    /// Like [`Prepared::new`], with `extra` TOML (whole tables, such as
    /// `[registries]`) added to cluster.toml.
    pub fn with_extra(
        dir: &Path,
        layout: Layout,
        strata: &Path,
        images: &Path,
        extra: &str,
    ) -> anyhow::Result<Prepared> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let toml = dir.join("cluster.toml");
        let mut text = layout.cluster_toml("qemu");
        if !extra.is_empty() {
            text.push('\n');
            text.push_str(extra);
        }
        std::fs::write(&toml, text).with_context(|| format!("cannot write {}", toml.display()))?;
        let out = Command::new(strata)
            .arg("cluster")
            .arg("init")
            .arg("--config")
            .arg(&toml)
            .arg("--out")
            .arg(dir.join("state"))
            .arg("--force")
            .output()
            .with_context(|| format!("cannot run {}", strata.display()))?;
        if !out.status.success() {
            bail!(
                "strata cluster init failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Prepared {
            dir: dir.to_path_buf(),
            strata: strata.to_path_buf(),
            images: images.to_path_buf(),
            disk_images: Default::default(),
            nodes: layout.nodes(),
            api_port: free_tcp_port()?,
            edge_port: free_tcp_port()?,
            slot: std::sync::Arc::new(Slot::take()?),
        })
    }

    /// The VM of `node`: a qcow2 overlay on its role's image, its
    /// user-data on fw_cfg, the cluster NIC on the multicast segment.
    pub fn vm_config(&self, node: &NodeSpec) -> anyhow::Result<VmConfig> {
        self.vm_config_via(node, UserDataVia::FwCfg)
    }

    /// Like [`Prepared::vm_config`], handing the node its user-data `via`
    /// fw_cfg or a `STRATA-CFG` config disk (then without fw_cfg, which the
    /// bootstrap would try first).
    pub fn vm_config_via(&self, node: &NodeSpec, via: UserDataVia) -> anyhow::Result<VmConfig> {
        let base = self
            .disk_images
            .get(&node.name)
            .cloned()
            .unwrap_or_else(|| self.images.join(format!("strata-{}.qcow2", node.role)));
        let disk = self.dir.join(format!("{}.qcow2", node.name));
        // 1 GiB more for the state partition (grown at the first boot):
        // room for the update bundles masters keep and nodes download.
        overlay(&base, &disk, 1024)?;
        let mut config = VmConfig::new(&node.name, &disk, &self.dir);
        let user_data = self
            .dir
            .join("state/user-data")
            .join(format!("{}.toml", node.name));
        match via {
            UserDataVia::FwCfg => config.user_data = Some(user_data),
            UserDataVia::Disk(fs) => {
                let image = self.dir.join(format!("{}-cfg.{}", node.name, fs.name()));
                config_disk(fs, &user_data, &image)?;
                config.config_disk = Some(image);
            }
        }
        config.extra = vec![
            "-netdev".into(),
            self.slot.netdev("cl"),
            "-device".into(),
            format!("virtio-net-pci,netdev=cl,mac={},addr=0x10", unique_mac()),
        ];
        if node.name == "master-1" {
            config.hostfwd = vec![(self.api_port, API_PORT)];
        }
        if node.name == "public-1" {
            config.hostfwd = vec![(self.edge_port, EDGE_HTTP_PORT)];
        }
        Ok(config)
    }

    /// Runs the `strata` CLI against the forwarded API: `args` start with
    /// the two subcommand words (`task run`), after which the context and
    /// endpoint go (before any `--` and the task's command).
    pub fn strata(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.strata_output(args)?;
        if !out.status.success() {
            bail!(
                "strata {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the CLI as [`Prepared::strata`] does, whatever its exit
    /// status: (exit code, stdout, stderr). A command killed by a signal
    /// is an error.
    pub fn strata_status(&self, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
        let out = self.strata_output(args)?;
        let code = out
            .status
            .code()
            .with_context(|| format!("strata {} was killed: {}", args.join(" "), out.status))?;
        Ok((
            code,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    fn strata_output(&self, args: &[&str]) -> anyhow::Result<std::process::Output> {
        let split = args.len().min(2);
        Command::new(&self.strata)
            .args(&args[..split])
            .arg("--context")
            .arg(self.context())
            .arg("--endpoint")
            .arg(format!("127.0.0.1:{}", self.api_port))
            .args(&args[split..])
            .output()
            .with_context(|| format!("cannot run {}", self.strata.display()))
    }

    /// The CLI context made by `strata cluster init`.
    pub fn context(&self) -> PathBuf {
        self.dir.join("state/cli/context.toml")
    }

    /// The node list as (name, state) pairs.
    pub fn node_states(&self) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self
            .node_rows()?
            .into_iter()
            .map(|r| (r.name, r.state))
            .collect())
    }

    /// The node list with each node's name, state and `ready_since`.
    pub fn node_rows(&self) -> anyhow::Result<Vec<NodeRow>> {
        let text = self.strata(&["node", "list", "--json"])?;
        let nodes: serde_json::Value =
            serde_json::from_str(&text).context("node list is not JSON")?;
        Ok(nodes
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| NodeRow {
                        name: n["name"].as_str().unwrap_or_default().to_string(),
                        state: n["state"].as_str().unwrap_or_default().to_string(),
                        ready_since: n["ready_since"].as_u64(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Waits until every node in `names` is Ready; returns the list.
    pub fn wait_ready(
        &self,
        names: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no answer from the API yet");
        while Instant::now() < deadline {
            match self.node_states() {
                Ok(states) => {
                    let ready = names
                        .iter()
                        .all(|n| states.iter().any(|(m, s)| m == n && s == "ready"));
                    if ready {
                        return Ok(states);
                    }
                    last = format!("{states:?}");
                }
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        bail!(
            "nodes {names:?} not all Ready after {:.0}s; last: {last}",
            timeout.as_secs_f64()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_cluster_toml() {
        let l = Layout {
            masters: 1,
            private: 1,
            public: 1,
        };
        let names: Vec<String> = l
            .nodes()
            .iter()
            .map(|n| format!("{} {}", n.name, n.address))
            .collect();
        assert_eq!(
            names,
            [
                "master-1 10.9.0.10",
                "private-1 10.9.0.21",
                "public-1 10.9.0.31"
            ]
        );
        let toml = l.cluster_toml("qemu");
        assert!(toml.contains("masters = [\"10.9.0.10\"]"), "{toml}");
        assert!(toml.contains("interface = \"enp0s16\""), "{toml}");
    }
}
