//! Pieces the benches over a real etcd share: etcd on loopback, simulated
//! nodes, and reading a process's memory. Each bench compiles this module
//! and uses only part of it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::etcd::{EtcdConnect, Store};
use anyhow::{Context as _, bail};
use control::model::{NodeInfo, NodeRecord};

/// etcd, killed, and its directory removed, on drop.
pub struct Etcd {
    pub child: Child,
    pub dir: PathBuf,
    /// Its client URL.
    pub endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Etcd {
    /// Starts a one-member etcd on loopback, its data under a directory
    /// named after `bench`, with room for large benches.
    pub fn start(bench: &str) -> anyhow::Result<Etcd> {
        if !qemu_tests::testenv::on_path("etcd") {
            bail!("`etcd` is missing: install etcd-server (see xtask/src/deps.rs)");
        }
        let dir = std::env::temp_dir().join(format!("strata-bench-{bench}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (port, peer) = (free_port()?, free_port()?);
        let endpoint = format!("http://127.0.0.1:{port}");
        let peer = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.join("etcd.log"))?;
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.join("data"))
            .args([
                "--listen-client-urls",
                &endpoint,
                "--advertise-client-urls",
                &endpoint,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("bench={peer}"),
                "--quota-backend-bytes",
                "8589934592",
                "--auto-compaction-mode",
                "revision",
                "--auto-compaction-retention",
                "10000",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start etcd")?;
        Ok(Etcd {
            child,
            dir,
            endpoint,
        })
    }

    /// A store of it, once it answers (with the shared watch started).
    pub async fn store(&self) -> anyhow::Result<Store> {
        let store = Store::connect(&EtcdConnect {
            endpoints: vec![self.endpoint.clone()],
            tls: None,
        })
        .await?;
        let start = Instant::now();
        while store.check_quorum().await.is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "etcd did not start: {}",
                    std::fs::read_to_string(self.dir.join("etcd.log"))?
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        store.start_watch().await;
        Ok(store)
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A process's resident memory, in MiB.
pub fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib as f64 / 1024.0)
}

/// The number in environment variable `name`, or `default`.
pub fn env_num(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

/// `n` private agents of 16 cores and 64 GiB, `sim-00000` on, as they
/// register.
pub fn simulated_nodes(n: u64, now: u64) -> Vec<NodeRecord> {
    (0..n)
        .map(|i| NodeRecord {
            info: NodeInfo {
                format: Default::default(),
                name: format!("sim-{i:05}"),
                role: configs::Role::Private,
                addresses: vec![format!(
                    "10.{}.{}.{}",
                    100 + i / 65536,
                    (i / 256) % 256,
                    i % 256
                )],
                cpus: 16,
                memory_bytes: 64 << 30,
                disk_bytes: 500 << 30,
                attributes: Default::default(),
                image: None,
            },
            key_sha256: format!("{i:064x}"),
            joined_at: now,
            registered_at: now,
            certs: Vec::new(),
        })
        .collect()
}
