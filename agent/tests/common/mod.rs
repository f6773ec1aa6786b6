//! Pieces shared by the host integration tests: running host commands,
//! network namespaces that are deleted with their links when the test ends,
//! and whole test clusters ([`cluster::TestCluster`]). Each test binary
//! compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod cluster;

/// Stops every task left in a state directory and unmounts its root
/// filesystem (declared before the node processes, so that it runs after
/// they were killed).
pub struct TaskCleanup(pub std::path::PathBuf);

impl Drop for TaskCleanup {
    fn drop(&mut self) {
        let names =
            agent::runtime::names::HostNames::from_env().expect("STRATA_HOST_PREFIX is valid");
        for t in agent::tasks::list(&self.0) {
            let _ = agent::tasks::stop(&self.0, &t.id, Some(std::time::Duration::from_millis(100)));
            let _ = agent::overlay::netns::delete(&names.netns(&t.id));
        }
        for entry in std::fs::read_dir(agent::tasks::tasks_root(&self.0))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = nix::mount::umount2(
                &entry.path().join("bundle/rootfs"),
                nix::mount::MntFlags::MNT_DETACH,
            );
        }
    }
}

use std::process::Command;

/// Runs `program` and returns its stdout; panics with its output on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs `program` and returns its stdout, or its stdout and stderr when it
/// fails; panics only when it cannot be started.
pub fn output(program: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Network namespaces, deleted (with their links) on drop, newest first.
#[derive(Default)]
pub struct Netns(pub Vec<String>);

impl Netns {
    /// Adds namespace `name` with its loopback up.
    pub fn add(&mut self, name: &str) {
        run("ip", &["netns", "add", name]);
        self.0.push(name.to_string());
        run("ip", &["-n", name, "link", "set", "lo", "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Every `*.log` file in `dir`, each under a header, for failure messages.
pub fn logs_in(dir: &std::path::Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    files
        .iter()
        .map(|f| {
            format!(
                "--- {}:\n{}",
                f.display(),
                std::fs::read_to_string(f).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `check` every `every` until it returns `Some`, or panics with
/// `what` and the logs in `dir`. Prints how long it took.
pub fn wait_until<T>(
    dir: &std::path::Path,
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    wait_seeing(dir, what, timeout, every, || {
        check().ok_or_else(String::new)
    })
}

/// [`wait_until`] with a `check` that says what it saw when it is not done
/// yet: the panic message shows the last of those (unless empty).
pub fn wait_seeing<T>(
    dir: &std::path::Path,
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        let seen = match check() {
            Ok(v) => {
                eprintln!("{what}: after {:.3}s", start.elapsed().as_secs_f64());
                return v;
            }
            Err(seen) => seen,
        };
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}{}\n{}",
            if seen.is_empty() {
                String::new()
            } else {
                format!("; last seen: {seen}")
            },
            logs_in(dir)
        );
        std::thread::sleep(every);
    }
}

/// A process started in a network namespace with its output in a log file;
/// killed on drop.
pub struct Proc {
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl Proc {
    /// Runs `program` under `ip netns exec` (with the namespace's own
    /// `/sys`, in a mount namespace of its own).
    pub fn spawn(
        netns: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        log: &std::path::Path,
    ) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns]).arg(program.as_ref());
        Self::start(cmd, args, log)
    }

    /// Runs `program` in the namespace's network only (nsenter): it keeps
    /// the host's sysfs (`ip netns exec` mounts one of its own, without the
    /// cgroup hierarchy an agent's containers need) and shares the test's
    /// mount namespace, so the task roots it mounts are the test's to clean up.
    pub fn spawn_net_only(
        netns: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        log: &std::path::Path,
    ) -> Proc {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{netns}"))
            .arg("--")
            .arg(program.as_ref());
        Self::start(cmd, args, log)
    }

    fn start(mut cmd: Command, args: &[&str], log: &std::path::Path) -> Proc {
        let file = std::fs::File::create(log).expect("log file");
        let child = cmd
            .args(args)
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Proc {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// What the process has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The underlay of a test cluster: namespace `bridge_ns` with a bridge
/// `br0` holding `bridge_addr` (`ip/prefix`), and for each `(namespace,
/// ip/prefix)` of `nodes` a namespace whose `eth0` is a veth on the bridge.
pub fn underlay(netns: &mut Netns, bridge_ns: &str, bridge_addr: &str, nodes: &[(&str, String)]) {
    netns.add(bridge_ns);
    let m = bridge_ns;
    run("ip", &["-n", m, "link", "add", "br0", "type", "bridge"]);
    run("ip", &["-n", m, "addr", "add", bridge_addr, "dev", "br0"]);
    run("ip", &["-n", m, "link", "set", "br0", "up"]);
    for (i, (ns, addr)) in nodes.iter().enumerate() {
        netns.add(ns);
        let host_end = format!("veth{}", i + 1);
        run(
            "ip",
            &[
                "-n", m, "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns",
                ns,
            ],
        );
        run(
            "ip",
            &["-n", m, "link", "set", &host_end, "master", "br0", "up"],
        );
        run("ip", &["-n", ns, "addr", "add", addr, "dev", "eth0"]);
        run("ip", &["-n", ns, "link", "set", "eth0", "up"]);
    }
}

/// Writes `cluster_toml` to `dir/cluster.toml`, runs `strata cluster init`
/// into `dir/out` and returns the cluster's CA.
pub fn cluster_init(
    strata: &std::path::Path,
    dir: &std::path::Path,
    cluster_toml: &str,
) -> agent::pki::Ca {
    std::fs::write(dir.join("cluster.toml"), cluster_toml).expect("cluster.toml");
    let out = dir.join("out");
    run(
        &strata.display().to_string(),
        &[
            "cluster",
            "init",
            "--config",
            &dir.join("cluster.toml").display().to_string(),
            "--out",
            &out.display().to_string(),
        ],
    );
    agent::pki::Ca {
        cert_pem: std::fs::read_to_string(out.join("ca.crt")).expect("ca.crt"),
        key_pem: std::fs::read_to_string(out.join("ca.key")).expect("ca.key"),
    }
}

/// A real etcd member `name` in `netns`: clients on `https://127.0.0.1:port`
/// with mutual TLS from the etcd CA of `ca` (as a master runs it: a node's
/// certificate of `ca` is refused), its peer on `port + 1`, data and log in
/// `dir`.
pub fn etcd(
    netns: &str,
    dir: &std::path::Path,
    ca: &agent::pki::Ca,
    name: &str,
    port: u16,
    also: Option<&str>,
) -> Proc {
    let etcd_ca = ca.etcd_ca().expect("etcd CA");
    let mut names = vec!["127.0.0.1".to_string()];
    names.extend(also.map(str::to_string));
    let etcd_cert = etcd_ca
        .issue_etcd(
            agent::pki::EtcdCert::Server,
            "etcd",
            &names,
            std::time::Duration::from_secs(3600),
        )
        .expect("etcd cert");
    let pki = dir.join("etcd-pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    std::fs::write(pki.join("ca.crt"), &etcd_ca.cert_pem).expect("write");
    std::fs::write(pki.join("etcd.crt"), &etcd_cert.cert_pem).expect("write");
    std::fs::write(pki.join("etcd.key"), &etcd_cert.key_pem).expect("write");
    let p = |f: &str| pki.join(f).display().to_string();
    // On the underlay address too (`also`) when other namespaces' masters
    // share it.
    let client_url = format!("https://127.0.0.1:{port}");
    let listen_urls = match also {
        Some(ip) => format!("{client_url},https://{ip}:{port}"),
        None => client_url.clone(),
    };
    let peer_url = format!("http://127.0.0.1:{}", port + 1);
    Proc::spawn(
        netns,
        "etcd",
        &[
            "--name",
            name,
            "--data-dir",
            &dir.join("etcd-data").display().to_string(),
            "--listen-client-urls",
            &listen_urls,
            "--advertise-client-urls",
            &client_url,
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
            "--initial-cluster",
            &format!("{name}={peer_url}"),
            "--cert-file",
            &p("etcd.crt"),
            "--key-file",
            &p("etcd.key"),
            "--trusted-ca-file",
            &p("ca.crt"),
            "--client-cert-auth",
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
        ],
        &dir.join("etcd.log"),
    )
}
