//! Host tier for the container runtime: a real registry (Debian's
//! `docker-registry` on loopback) serving an image built here from
//! busybox-static with umoci and pushed with skopeo; real containers through
//! libcontainer shims. Root only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent::images::{ImageError, ImageStore, PullAuth, PullOptions};
use agent::tasks::{self, Supervisor, TaskSpec};
use qemu_tests::observe::{self, Hold, Seen};
use qemu_tests::testenv::{Need, require};

/// How often the agents of these tests reconcile (`--interval-ms`).
const AGENT_INTERVAL: Duration = Duration::from_millis(200);

const NEEDS: &[Need] = &[
    Need::Root,
    Need::Program("docker-registry"),
    Need::Program("umoci"),
    Need::Program("skopeo"),
    Need::File("/bin/busybox"),
];

/// A temp dir, a registry holding `bb:1` (cmd `sh`) and `bb:nocmd`, and a
/// copy of the strata binary. Drop stops every task, kills the registry and
/// removes the dir.
struct Fixture {
    dir: PathBuf,
    registry: Child,
    port: u16,
    strata: PathBuf,
    agents: Vec<Child>,
    others: Vec<Child>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pids of the live processes.
fn pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("strata-rt-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/bin")).expect("mkdir");
        std::fs::create_dir_all(dir.join("root/etc")).expect("mkdir");
        std::fs::copy("/bin/busybox", dir.join("root/bin/busybox")).expect("copy busybox");
        for applet in [
            "sh", "sleep", "echo", "cat", "id", "ps", "true", "false", "hostname", "grep", "ls",
            "unshare", "mknod", "mkdir", "head",
        ] {
            std::os::unix::fs::symlink("busybox", dir.join("root/bin").join(applet))
                .expect("symlink");
        }
        std::fs::write(
            dir.join("root/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(dir.join("root/etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("group");
        let layout = dir.join("layout");
        let l = |tag: &str| format!("{}:{tag}", layout.display());
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout));
        run(Command::new("umoci").args(["new", "--image", &l("nocmd")]));
        run(Command::new("umoci")
            .args(["unpack", "--image", &l("nocmd")])
            .arg(dir.join("bundle")));
        run(Command::new("cp")
            .arg("-a")
            .arg(dir.join("root/."))
            .arg(dir.join("bundle/rootfs/")));
        run(Command::new("umoci")
            .args(["repack", "--image", &l("nocmd")])
            .arg(dir.join("bundle")));
        run(Command::new("umoci").args([
            "config",
            "--image",
            &l("nocmd"),
            "--tag",
            "1",
            "--config.cmd",
            "sh",
            "--config.env",
            "PATH=/bin",
        ]));
        let port = free_port();
        std::fs::write(
            dir.join("registry.yml"),
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("registry").display()
            ),
        )
        .expect("registry config");
        let registry = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("registry.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let strata = dir.join("strata");
        // STRATA_TEST_BIN: a binary to test instead of the one cargo built
        // (useful when several worktrees share one target dir).
        let bin = std::env::var_os("STRATA_TEST_BIN")
            .map_or(PathBuf::from(env!("CARGO_BIN_EXE_strata")), PathBuf::from);
        std::fs::copy(&bin, &strata).expect("copy strata");
        let mut fx = Fixture {
            dir,
            registry,
            port,
            strata,
            agents: Vec::new(),
            others: Vec::new(),
        };
        wait_for("registry", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        for tag in ["1", "nocmd"] {
            run(Command::new("skopeo").args([
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{}", l(tag)),
                &format!("docker://127.0.0.1:{port}/bb:{tag}"),
            ]));
        }
        fx.agents.clear();
        fx
    }

    /// A second registry over the same storage, with TLS (a self-signed
    /// certificate for 127.0.0.1) and htpasswd basic auth for alice.
    /// Returns its port and the CA file.
    fn start_tls_registry(&mut self) -> (u16, PathBuf) {
        let tls = self.dir.join("tls");
        std::fs::create_dir_all(&tls).expect("mkdir");
        // A CA and a leaf for 127.0.0.1 signed by it (rustls refuses a CA
        // certificate as the server's own).
        let openssl = |args: &[&str]| run(Command::new("openssl").current_dir(&tls).args(args));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=strata-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "leaf.csr",
        ]);
        std::fs::write(
            tls.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ]);
        let hash = run(Command::new("python3").args([
            "-W",
            "ignore",
            "-c",
            "import crypt; print(crypt.crypt('s3cret', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
        ]));
        std::fs::write(tls.join("htpasswd"), format!("alice:{}\n", hash.trim())).expect("htpasswd");
        let port = free_port();
        std::fs::write(
            tls.join("registry.yml"),
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: strata\n    path: {}\n",
                self.dir.join("registry").display(),
                tls.join("cert.pem").display(),
                tls.join("key.pem").display(),
                tls.join("htpasswd").display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(tls.join("registry.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        self.others.push(child);
        wait_for("tls registry", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        (port, tls.join("ca.pem"))
    }

    fn image(&self, tag: &str) -> String {
        format!("127.0.0.1:{}/bb:{tag}", self.port)
    }

    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn strata(&self) -> Command {
        Command::new(&self.strata)
    }

    fn supervisor(&self) -> Supervisor {
        Supervisor::new(&self.state(), self.strata.clone(), PullOptions::default())
            .expect("supervisor")
    }

    fn spec(&self, id: &str, command: &[&str]) -> TaskSpec {
        let toml = format!(
            "id = {id:?}\nimage = {:?}\nstop_grace_secs = 1\n",
            self.image("1")
        );
        let mut spec = control::task::file::parse("test", &toml).expect("spec");
        spec.command = command.iter().map(|s| s.to_string()).collect();
        spec
    }

    fn write_task(&self, tasks_dir: &Path, body: &str) {
        std::fs::create_dir_all(tasks_dir).expect("mkdir");
        let id = body
            .lines()
            .find_map(|l| l.strip_prefix("id = "))
            .expect("id")
            .trim_matches('"');
        std::fs::write(tasks_dir.join(format!("{id}.toml")), body).expect("write task");
    }

    fn start_agent(&mut self, tasks_dir: &Path) {
        let child = self
            .strata()
            .args(["task", "agent", "--interval-ms"])
            .arg(AGENT_INTERVAL.as_millis().to_string())
            .arg("--tasks-dir")
            .arg(tasks_dir)
            .arg("--state-dir")
            .arg(self.state())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join(format!("agent-{}.log", self.agents.len())))
                    .expect("log"),
            )
            .spawn()
            .expect("start agent");
        self.agents.push(child);
    }

    fn kill_agents(&mut self) {
        for mut a in self.agents.drain(..) {
            let _ = a.kill();
            let _ = a.wait();
        }
    }

    fn list(&self) -> Vec<serde_json::Value> {
        let out = run(self
            .strata()
            .args(["task", "list", "--json", "--state-dir"])
            .arg(self.state()));
        serde_json::from_str(&out).expect("list json")
    }

    fn task<'a>(list: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
        list.iter().find(|t| t["id"] == id)
    }

    /// Shim processes of this fixture.
    fn shims(&self) -> Vec<i32> {
        let root = tasks::tasks_root(&self.state());
        pids()
            .filter(|pid| {
                agent::runtime::launcher::shim_task_dir(*pid).is_some_and(|d| d.starts_with(&root))
                    && agent::runtime::process_start(*pid).is_some()
            })
            .collect()
    }

    /// Shim processes of task `id`.
    fn shims_of(&self, id: &str) -> Vec<i32> {
        let dir = tasks::task_dir(&self.state(), id).0;
        self.shims()
            .into_iter()
            .filter(|pid| agent::runtime::launcher::shim_task_dir(*pid).is_some_and(|d| d == dir))
            .collect()
    }

    /// Shim launchers running this fixture's binary (`strata
    /// shim-launcher`, and the helper each forks, which has its command
    /// line), shims aside.
    fn launchers(&self) -> Vec<i32> {
        let exe = std::fs::canonicalize(&self.strata).expect("the strata copy exists");
        pids()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == exe)
                    && std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(&b"shim-launcher"[..]))
                    && agent::runtime::launcher::shim_task_dir(*pid).is_none()
            })
            .collect()
    }

    /// The pid of the agent started last.
    fn agent_pid(&self) -> u32 {
        self.agents.last().expect("an agent was started").id()
    }

    /// What the agent started last has logged so far.
    fn agent_log(&self) -> String {
        let n = self.agents.len().saturating_sub(1);
        std::fs::read_to_string(self.dir.join(format!("agent-{n}.log"))).unwrap_or_default()
    }
}

/// A look at an agent: `Broken` once its process is gone (or a zombie).
fn agent_gone(pid: u32) -> Option<Seen> {
    (!observe::alive(pid)).then(|| Seen::Broken(format!("the agent (pid {pid}) is gone")))
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.kill_agents();
        for t in agent::tasks::list(&self.state()) {
            let _ = tasks::stop(&self.state(), &t.id, Some(Duration::from_millis(100)));
        }
        for pid in self.shims() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for entry in std::fs::read_dir(tasks::tasks_root(&self.state()))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = nix::mount::umount2(
                &entry.path().join("bundle/rootfs"),
                nix::mount::MntFlags::MNT_DETACH,
            );
        }
        for mut c in self
            .others
            .drain(..)
            .chain(std::iter::once(std::mem::replace(
                &mut self.registry,
                Command::new("true").spawn().expect("spawn true"),
            )))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cgroup_file(controller: &str, container: &str, file: &str) -> Option<String> {
    std::fs::read_to_string(format!(
        "/sys/fs/cgroup/{controller}/{}/{container}/{file}",
        cgroup_parent()
    ))
    .ok()
    .map(|s| s.trim().to_string())
}

fn no_leftovers(fx: &Fixture, id: &str) {
    let container = format!("{id}-1");
    assert!(
        !tasks::task_dir(&fx.state(), id).0.exists(),
        "task dir of {id} left behind"
    );
    for ctrl in ["memory", "pids", "cpu", "freezer", "devices"] {
        let p = format!("/sys/fs/cgroup/{ctrl}/{}/{container}", cgroup_parent());
        assert!(!Path::new(&p).exists(), "cgroup {p} left behind");
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&*fx.dir.to_string_lossy()),
        "mount left behind: {mounts}"
    );
    assert!(
        !fx.state().join("runtime").join(&container).exists(),
        "libcontainer state left behind"
    );
}

#[test]
fn pull_run_exit_logs_limits_exec_stop() {
    if !require("pull_run_exit_logs_limits_exec_stop", NEEDS) {
        return;
    }
    let mut fx = Fixture::new("run");
    let out = run(fx
        .strata()
        .args(["image", "pull", &fx.image("1"), "--state-dir"])
        .arg(fx.state()));
    assert!(out.contains("(1 layers)"), "{out}");
    let tasks_dir = fx.dir.join("tasks");
    fx.write_task(
        &tasks_dir,
        &format!("id = \"exits\"\nimage = {:?}\ncommand = [\"sh\", \"-c\", \"echo out-line; echo err-line >&2; exit 3\"]\n", fx.image("1")),
    );
    fx.write_task(
        &tasks_dir,
        &format!(
            "id = \"limited\"\nimage = {:?}\ncommand = [\"sleep\", \"1000\"]\nmem = \"48MiB\"\ncpus = 0.25\npids = 40\nread_only = true\nuser = \"nobody\"\nenv = {{ GREETING = \"hi\" }}\ncwd = \"/etc\"\nstop_grace_secs = 1\n",
            fx.image("1")
        ),
    );
    fx.start_agent(&tasks_dir);
    wait_for("both tasks", Duration::from_secs(20), || {
        let l = fx.list();
        Fixture::task(&l, "exits").is_some_and(|t| t["state"] == "exited")
            && Fixture::task(&l, "limited").is_some_and(|t| t["state"] == "running")
    });
    let list = fx.list();
    assert_eq!(
        Fixture::task(&list, "exits").expect("exits")["exit_code"],
        3
    );
    // Never restarted: restart policy defaults to never. Watched for twice
    // the first restart delay and five reconcile rounds of the agent that
    // would restart it.
    let agent = fx.agent_pid();
    Hold::new(
        "exits is never restarted",
        2 * Duration::from_millis(tasks::plan::BACKOFF_BASE_MS) + 5 * AGENT_INTERVAL,
    )
    .every(AGENT_INTERVAL)
    .check(|| {
        if let Some(gone) = agent_gone(agent) {
            return gone;
        }
        let list = fx.list();
        let t = Fixture::task(&list, "exits").expect("exits");
        let seen = format!("exits {} restarts {}", t["state"], t["restarts"]);
        if t["restarts"] == 0 {
            Seen::Holds(seen)
        } else {
            Seen::Broken(seen)
        }
    });

    let logs = run(fx
        .strata()
        .args(["task", "logs", "exits", "--state-dir"])
        .arg(fx.state()));
    assert_eq!(logs, "out-line\nerr-line\n");

    // `logs -f` follows a running task until it exits.
    fx.write_task(
        &tasks_dir,
        &format!(
            "id = \"ticker\"\nimage = {:?}\ncommand = [\"sh\", \"-c\", \"for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.2; done\"]\n",
            fx.image("1")
        ),
    );
    wait_for("ticker running", Duration::from_secs(20), || {
        Fixture::task(&fx.list(), "ticker").is_some_and(|t| t["state"] == "running")
    });
    let followed = run(fx
        .strata()
        .args(["task", "logs", "ticker", "-f", "--state-dir"])
        .arg(fx.state()));
    assert_eq!(followed, "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\ntick 6\n");
    assert_eq!(
        Fixture::task(&fx.list(), "ticker").expect("ticker")["state"],
        "exited"
    );

    assert_eq!(
        cgroup_file("memory", "limited-1", "memory.limit_in_bytes").as_deref(),
        Some("50331648")
    );
    assert_eq!(
        cgroup_file("pids", "limited-1", "pids.max").as_deref(),
        Some("40")
    );
    assert_eq!(
        cgroup_file("cpu", "limited-1", "cpu.cfs_quota_us").as_deref(),
        Some("25000")
    );
    assert_eq!(
        cgroup_file("cpu", "limited-1", "cpu.cfs_period_us").as_deref(),
        Some("100000")
    );

    let exec = run(fx.strata().args(["task", "exec", "limited", "--state-dir"]).arg(fx.state()).args([
        "--",
        "sh",
        "-c",
        "id; pwd; echo $GREETING; grep -E 'NoNewPrivs|CapBnd|Seccomp:|SigIgn' /proc/self/status; touch /x 2>&1 || echo read-only; \
         unshare -U true 2>/dev/null && echo user-namespace-made || echo user-namespace-refused",
    ]));
    assert!(
        exec.contains("uid=65534(nobody) gid=65534(nogroup)"),
        "{exec}"
    );
    assert!(exec.contains("/etc\nhi\n"), "{exec}");
    assert!(exec.contains("NoNewPrivs:\t1"), "{exec}");
    // (The exact capability sets of a nobody task and of what is exec'd
    // into it: live_tasks_have_exactly_the_spec_capabilities_and_every_denied_call_is_refused.)
    assert!(exec.contains("read-only"), "{exec}");
    // Processes exec'd into the task run under its seccomp filter (mode 2),
    // which refuses new namespaces: an unprivileged user could otherwise
    // make a user namespace.
    assert!(exec.contains("Seccomp:\t2"), "{exec}");
    assert!(exec.contains("user-namespace-refused"), "{exec}");
    // So does the task's init.
    let pid = tasks::list(&fx.state())
        .into_iter()
        .find(|t| t.id == "limited")
        .and_then(|t| t.pid)
        .expect("limited runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    // Tasks start with every signal at its default: the shim, a Rust
    // program, ignores SIGPIPE, whatever started the agent may ignore
    // others, and ignored signals survive exec.
    assert!(status.contains("SigIgn:\t0000000000000000"), "{status}");
    assert!(exec.contains("SigIgn:\t0000000000000000"), "{exec}");

    let stop = run(fx
        .strata()
        .args(["task", "stop", "limited", "--grace", "1", "--state-dir"])
        .arg(fx.state()));
    assert!(stop.contains("exit code 137"), "{stop}");
    assert!(
        cgroup_file("memory", "limited-1", "memory.limit_in_bytes").is_none(),
        "cgroup removed after stop"
    );
    // Stopped by hand: the agent does not start it again. Its shim
    // exits just after it records the exit.
    wait_for("the shim of limited gone", Duration::from_secs(10), || {
        fx.shims_of("limited").is_empty()
    });
    let agent = fx.agent_pid();
    Hold::new("limited stays stopped", Duration::from_secs(2)).check(|| {
        if let Some(gone) = agent_gone(agent) {
            return gone;
        }
        let list = fx.list();
        let state = &Fixture::task(&list, "limited").expect("limited")["state"];
        let shims = fx.shims_of("limited");
        let seen = format!("limited {state}, shims {shims:?}");
        if state == "stopped" && shims.is_empty() {
            Seen::Holds(seen)
        } else {
            Seen::Broken(seen)
        }
    });
    // Removing the task file deletes the tasks.
    std::fs::remove_dir_all(&tasks_dir).expect("rm tasks");
    std::fs::create_dir_all(&tasks_dir).expect("mkdir");
    wait_for("tasks removed", Duration::from_secs(10), || {
        fx.list().is_empty()
    });
    no_leftovers(&fx, "limited");
    fx.kill_agents();
}

#[test]
fn restart_policies_with_backoff() {
    if !require("restart_policies_with_backoff", NEEDS) {
        return;
    }
    let mut fx = Fixture::new("restart");
    let tasks_dir = fx.dir.join("tasks");
    for (id, policy, code) in [
        ("never", "never", 1),
        ("onfail", "on-failure", 1),
        ("onok", "on-failure", 0),
        ("always", "always", 0),
    ] {
        fx.write_task(
            &tasks_dir,
            &format!(
                "id = {id:?}\nimage = {:?}\ncommand = [\"sh\", \"-c\", \"echo run; exit {code}\"]\nrestart = {policy:?}\n",
                fx.image("1")
            ),
        );
    }
    fx.start_agent(&tasks_dir);
    // Backoff 0.5 s, 1 s, 2 s: two restarts within about 4 s.
    wait_for("restarts", Duration::from_secs(20), || {
        let l = fx.list();
        ["onfail", "always"]
            .iter()
            .all(|id| Fixture::task(&l, id).is_some_and(|t| t["restarts"].as_u64() >= Some(2)))
    });
    let l = fx.list();
    assert_eq!(Fixture::task(&l, "never").expect("never")["restarts"], 0);
    assert_eq!(Fixture::task(&l, "onok").expect("onok")["restarts"], 0);
    assert_eq!(Fixture::task(&l, "onok").expect("onok")["exit_code"], 0);
    // Each run wrote to the same log.
    wait_for("three runs in the log", Duration::from_secs(10), || {
        let logs = run(fx
            .strata()
            .args(["task", "logs", "onfail", "--state-dir"])
            .arg(fx.state()));
        logs.matches("run\n").count() >= 3
    });
    fx.kill_agents();
}

#[test]
fn agent_restart_adopts_twenty_tasks() {
    if !require("agent_restart_adopts_twenty_tasks", NEEDS) {
        return;
    }
    let mut fx = Fixture::new("adopt");
    let tasks_dir = fx.dir.join("tasks");
    for i in 0..20 {
        fx.write_task(
            &tasks_dir,
            &format!("id = \"t{i:02}\"\nimage = {:?}\ncommand = [\"sleep\", \"1000\"]\nrestart = \"always\"\nstop_grace_secs = 1\n", fx.image("1")),
        );
    }
    // Other tasks' network namespace handles, as a node with networked
    // tasks has them: no shim keeps them in its mount table.
    struct Handles(Vec<String>);
    impl Drop for Handles {
        fn drop(&mut self) {
            for h in &self.0 {
                let _ = agent::overlay::netns::delete(h);
            }
        }
    }
    let handles = Handles(
        (0..2)
            .map(|i| format!("strata-test-{}-{i}", std::process::id()))
            .collect(),
    );
    for h in &handles.0 {
        agent::overlay::netns::create(h).expect("netns handle");
    }
    fx.start_agent(&tasks_dir);
    let running = |fx: &Fixture| -> BTreeSet<(String, i64)> {
        fx.list()
            .iter()
            .filter(|t| t["state"] == "running")
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or_default().to_string(),
                    t["pid"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    };
    wait_for("20 running tasks", Duration::from_secs(60), || {
        running(&fx).len() == 20
    });
    let before = running(&fx);
    let shims = fx.shims();
    assert_eq!(shims.len(), 20);
    // Each root is mounted in its shim's own mount namespace: the node's
    // mount table does not grow with its tasks.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(&*fx.dir.to_string_lossy()),
        "task roots in the node's mount table: {mounts}"
    );
    let shim_mounts =
        std::fs::read_to_string(format!("/proc/{}/mountinfo", shims[0])).expect("shim mountinfo");
    assert!(
        shim_mounts.contains("bundle/rootfs"),
        "no task root in the shim's mount table: {shim_mounts}"
    );
    for h in &handles.0 {
        assert!(mounts.contains(h.as_str()), "{h} not mounted: {mounts}");
        assert!(
            !shim_mounts.contains(h.as_str()),
            "another task's namespace handle {h} in a shim's mount table: {shim_mounts}"
        );
    }
    drop(handles);
    // A second agent on the same state directory refuses to run.
    let mut second = fx
        .strata()
        .args(["task", "agent", "--tasks-dir"])
        .arg(&tasks_dir)
        .arg("--state-dir")
        .arg(fx.state())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("second agent");
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.try_wait().expect("wait").is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = second.kill();
    let out = second.wait_with_output().expect("second agent output");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another agent already supervises"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fx.kill_agents();
    // The launcher exits when its agent goes (its stdin closes).
    wait_for(
        "the old agent's shim launcher gone",
        Duration::from_secs(10),
        || fx.launchers().is_empty(),
    );
    let adopted = |fx: &Fixture, agent: Option<u32>| -> Seen {
        if let Some(gone) = agent.and_then(agent_gone) {
            return gone;
        }
        let now = running(fx);
        let shims = fx.shims().len();
        let containers = std::fs::read_dir(fx.state().join("runtime"))
            .map(|d| d.count())
            .unwrap_or(0);
        let seen = format!(
            "{} running, {shims} shims, {containers} runtime dirs",
            now.len()
        );
        if now == before && shims == 20 && containers == 20 {
            Seen::Holds(seen)
        } else {
            let lost: Vec<_> = before.difference(&now).collect();
            let new: Vec<_> = now.difference(&before).collect();
            Seen::Broken(format!("{seen}; gone or restarted {lost:?}, new {new:?}"))
        }
    };
    Hold::new(
        "tasks keep running without the agent",
        Duration::from_millis(1500),
    )
    .check(|| adopted(&fx, None));
    fx.start_agent(&tasks_dir);
    // The agent says so once it holds the state lock, just before its first
    // round. (Probing the lock from here could make it refuse to start.)
    wait_for(
        "the restarted agent holding the state lock",
        Duration::from_secs(10),
        || fx.agent_log().contains("strata: reconciling tasks from"),
    );
    let agent = fx.agent_pid();
    Hold::new(
        "the restarted agent adopted every task, none restarted or doubled",
        10 * AGENT_INTERVAL,
    )
    .check(|| adopted(&fx, Some(agent)));
    fx.kill_agents();
}

#[test]
fn corrupted_blob_is_refused_and_nothing_is_stored() {
    if !require("corrupted_blob_is_refused_and_nothing_is_stored", NEEDS) {
        return;
    }
    let fx = Fixture::new("corrupt");
    // Flip bytes in the layer blob (the largest blob) in the registry's storage.
    let blobs = fx.dir.join("registry/docker/registry/v2/blobs/sha256");
    let mut largest: Option<(u64, PathBuf)> = None;
    for prefix in std::fs::read_dir(&blobs).expect("blobs").flatten() {
        for blob in std::fs::read_dir(prefix.path())
            .expect("blob dir")
            .flatten()
        {
            let data = blob.path().join("data");
            let len = std::fs::metadata(&data).expect("data").len();
            if largest.as_ref().is_none_or(|(l, _)| len > *l) {
                largest = Some((len, data));
            }
        }
    }
    let (_, data) = largest.expect("a blob");
    let mut bytes = std::fs::read(&data).expect("read blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).expect("corrupt blob");

    let store = ImageStore::open(fx.state().join("images")).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let err = rt
        .block_on(store.pull(&fx.image("1"), &PullOptions::default()))
        .expect_err("corrupt blob refused");
    assert!(matches!(err, ImageError::Digest { .. }), "{err}");
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert_eq!(
        std::fs::read_dir(store.root().join("layers"))
            .expect("layers")
            .count(),
        0
    );
    assert!(store.list().expect("list").is_empty());
    assert_eq!(
        std::fs::read_dir(store.root().join("tmp"))
            .expect("tmp")
            .count(),
        0
    );
    // Through the CLI, the error names the digest.
    let out = fx
        .strata()
        .args(["image", "pull", &fx.image("1"), "--state-dir"])
        .arg(fx.state())
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("digest mismatch"));
}

#[test]
fn docker_save_and_oci_layout_import_and_gc() {
    if !require("docker_save_and_oci_layout_import_and_gc", NEEDS) {
        return;
    }
    let fx = Fixture::new("import");
    let archive = fx.dir.join("bb.tar");
    run(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:1", fx.dir.join("layout").display()),
        &format!("docker-archive:{}:example.org/bb:saved", archive.display()),
    ]));
    let store = ImageStore::open(fx.state().join("images")).expect("store");
    let saved = store.import(&archive, None).expect("import docker save");
    assert_eq!(saved.name, "example.org/bb:saved");
    assert_eq!(saved.config.cmd, vec!["sh".to_string()]);
    let layout = store
        .import(&fx.dir.join("layout"), Some("example.org/bb:layout"))
        .expect("import layout");
    // The same layer is stored once.
    assert_eq!(saved.layers, layout.layers);
    assert_eq!(
        std::fs::read_dir(store.root().join("layers"))
            .expect("layers")
            .count(),
        1
    );
    assert!(
        store
            .layer_dir(&saved.layers[0])
            .join("bin/busybox")
            .is_file()
    );
    // A tarball of the OCI layout, through the CLI.
    let layout_tar = fx.dir.join("layout.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(fx.dir.join("layout"))
        .arg("-cf")
        .arg(&layout_tar)
        .arg("."));
    let out = run(fx
        .strata()
        .args(["image", "import"])
        .arg(&layout_tar)
        .args(["--name", "example.org/bb:tar", "--state-dir"])
        .arg(fx.state()));
    assert!(out.starts_with("example.org/bb:tar "), "{out}");
    // A task runs from the imported image.
    let mut sup = fx.supervisor();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut spec = fx.spec("fromsave", &["echo", "imported"]);
    spec.image = "example.org/bb:saved".into();
    rt.block_on(sup.start(&spec))
        .expect("start from imported image");
    wait_for("exit", Duration::from_secs(10), || {
        matches!(
            agent::runtime::status(&tasks::task_dir(&fx.state(), "fromsave")),
            agent::runtime::Status::Exited(_)
        )
    });
    // gc keeps layers that images or tasks use, then drops them.
    for name in [
        "example.org/bb:saved",
        "example.org/bb:layout",
        "example.org/bb:tar",
    ] {
        assert!(store.remove(name).expect("remove"));
    }
    assert!(
        store
            .gc(&tasks::layers_in_use(&fx.state()))
            .expect("gc")
            .is_empty(),
        "the task still uses the layer"
    );
    rt.block_on(sup.remove("fromsave")).expect("remove task");
    assert_eq!(
        store.gc(&tasks::layers_in_use(&fx.state())).expect("gc"),
        saved.layers
    );
}

#[test]
fn bad_input_is_refused_and_a_failed_create_leaves_nothing() {
    if !require(
        "bad_input_is_refused_and_a_failed_create_leaves_nothing",
        NEEDS,
    ) {
        return;
    }
    let fx = Fixture::new("bad");
    let mut sup = fx.supervisor();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut start = |spec: TaskSpec| -> String {
        let id = spec.id.clone();
        let err = rt.block_on(sup.start(&spec)).expect_err("start must fail");
        no_leftovers(&fx, &id);
        format!("{err:#}")
    };
    let mut unknown = fx.spec("unknown", &["true"]);
    unknown.image = format!("127.0.0.1:{}/nothere:1", fx.port);
    assert!(start(unknown).contains("unknown image"));
    let mut unreachable = fx.spec("unreachable", &["true"]);
    unreachable.image = format!("127.0.0.1:{}/bb:1", free_port());
    assert!(start(unreachable).contains("is unreachable"));
    let nocmd = TaskSpec {
        image: fx.image("nocmd"),
        ..fx.spec("nocmd", &[])
    };
    assert!(start(nocmd).contains("missing command"));
    let missing_binary = fx.spec("nobinary", &["/bin/does-not-exist"]);
    let err = start(missing_binary);
    assert!(err.contains("cannot create container nobinary-1"), "{err}");
    // Spec-level errors never reach the runtime.
    let bad = |text: &str| {
        control::task::file::parse("t.toml", text)
            .expect_err("invalid")
            .to_string()
    };
    assert!(bad("id = \"x\"\nimage = \"Bad Ref\"").contains("malformed image reference"));
    assert!(
        bad(&format!(
            "id = \"x\"\nimage = {:?}\nmem = \"1MiB\"",
            fx.image("1")
        ))
        .contains("below the minimum")
    );
    let out = fx
        .strata()
        .args(["image", "pull", "Bad Ref", "--state-dir"])
        .arg(fx.state())
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed image reference \"Bad Ref\""));
}

#[test]
fn https_registry_with_basic_auth() {
    if !require(
        "https_registry_with_basic_auth",
        &[NEEDS, &[Need::Program("openssl"), Need::Program("python3")]].concat(),
    ) {
        return;
    }
    let mut fx = Fixture::new("tls");
    let (port, ca) = fx.start_tls_registry();
    let image = format!("127.0.0.1:{port}/bb:1");
    let store = ImageStore::open(fx.state().join("images")).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let basic = |password: &str| PullOptions {
        auth: PullAuth::Basic {
            username: "alice".into(),
            password: password.into(),
        },
        ca_file: Some(ca.clone()),
        ..PullOptions::default()
    };
    let anonymous = PullOptions {
        ca_file: Some(ca.clone()),
        ..PullOptions::default()
    };
    let err = rt
        .block_on(store.pull(&image, &anonymous))
        .expect_err("anonymous refused");
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let err = rt
        .block_on(store.pull(&image, &basic("wrong")))
        .expect_err("wrong password refused");
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let rec = rt
        .block_on(store.pull(&image, &basic("s3cret")))
        .expect("pull over https with basic auth");
    assert_eq!(rec.layers.len(), 1);
    // The CLI takes the same options.
    let out = run(fx
        .strata()
        .args([
            "image",
            "pull",
            &image,
            "--username",
            "alice",
            "--password",
            "s3cret",
            "--ca-file",
        ])
        .arg(&ca)
        .arg("--state-dir")
        .arg(fx.dir.join("state2")));
    assert!(out.contains("(1 layers)"), "{out}");
}

#[test]
fn lost_shim_is_cleaned_up_and_the_task_restarted() {
    if !require("lost_shim_is_cleaned_up_and_the_task_restarted", NEEDS) {
        return;
    }
    let mut fx = Fixture::new("lost");
    let tasks_dir = fx.dir.join("tasks");
    fx.write_task(
        &tasks_dir,
        &format!(
            "id = \"keep\"\nimage = {:?}\ncommand = [\"sleep\", \"1000\"]\nrestart = \"always\"\nmem = \"32MiB\"\n",
            fx.image("1")
        ),
    );
    fx.start_agent(&tasks_dir);
    wait_for("running", Duration::from_secs(20), || {
        Fixture::task(&fx.list(), "keep").is_some_and(|t| t["state"] == "running")
    });
    let old_pid = Fixture::task(&fx.list(), "keep").expect("keep")["pid"]
        .as_i64()
        .expect("pid") as i32;
    let shims = fx.shims();
    assert_eq!(shims.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill shim");
    wait_for(
        "restarted after the lost shim",
        Duration::from_secs(20),
        || {
            Fixture::task(&fx.list(), "keep").is_some_and(|t| {
                t["state"] == "running"
                    && t["restarts"] == 1
                    && t["pid"].as_i64() != Some(i64::from(old_pid))
            })
        },
    );
    assert!(
        agent::runtime::process_start(old_pid).is_none(),
        "the orphaned init was killed"
    );
    assert!(
        cgroup_file("memory", "keep-1", "memory.limit_in_bytes").is_none(),
        "old cgroup removed"
    );
    assert_eq!(
        cgroup_file("memory", "keep-2", "memory.limit_in_bytes").as_deref(),
        Some("33554432")
    );
    fx.kill_agents();
}

#[test]
fn a_dead_shim_launcher_is_started_again() {
    if !require("a_dead_shim_launcher_is_started_again", NEEDS) {
        return;
    }
    let mut fx = Fixture::new("launcher");
    let tasks_dir = fx.dir.join("tasks");
    let image = fx.image("1");
    let task = |id: &str| {
        format!(
            "id = \"{id}\"\nimage = {image:?}\ncommand = [\"sleep\", \"1000\"]\nstop_grace_secs = 0\n"
        )
    };
    let first = task("first");
    fx.write_task(&tasks_dir, &first);
    fx.start_agent(&tasks_dir);
    let running = |fx: &Fixture, id: &str| {
        Fixture::task(&fx.list(), id)
            .filter(|t| t["state"] == "running")
            .and_then(|t| t["pid"].as_i64())
    };
    wait_for("first running", Duration::from_secs(20), || {
        running(&fx, "first").is_some()
    });
    let pid = running(&fx, "first");
    // The agent's launcher: its child running `strata shim-launcher`.
    let agent = fx.agents.last().expect("agent").id().to_string();
    let launchers: Vec<i32> = pids()
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string));
            ppid.as_deref() == Some(agent.as_str())
                && std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.ends_with(b"shim-launcher\0"))
        })
        .collect();
    assert_eq!(launchers.len(), 1, "one launcher per agent");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(launchers[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill launcher");
    let second = task("second");
    fx.write_task(&tasks_dir, &second);
    wait_for("second running", Duration::from_secs(20), || {
        running(&fx, "second").is_some()
    });
    assert_eq!(running(&fx, "first"), pid, "the first task kept running");
    assert_eq!(fx.shims().len(), 2);
    fx.kill_agents();
}

/// Mints a registry token (RS256 JWT with the signing certificate in `x5c`)
/// the way a token server would: `mint.py CERT KEY REPOSITORY`.
const MINT_TOKEN_PY: &str = r#"
import base64, json, subprocess, sys, time
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
der = subprocess.run(["openssl", "x509", "-in", sys.argv[1], "-outform", "DER"], check=True, capture_output=True).stdout
header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
now = int(time.time())
claims = {"iss": "strata-test-issuer", "sub": "alice", "aud": "strata-test", "exp": now + 3600, "nbf": now - 60,
          "iat": now - 60, "jti": "t1", "access": [{"type": "repository", "name": sys.argv[3], "actions": ["pull"]}]}
signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", sys.argv[2]], input=signing_input.encode(),
                     check=True, capture_output=True).stdout
print(signing_input + "." + b64(sig))
"#;

#[test]
fn bearer_token_registry() {
    if !require(
        "bearer_token_registry",
        &[NEEDS, &[Need::Program("openssl"), Need::Program("python3")]].concat(),
    ) {
        return;
    }
    let mut fx = Fixture::new("bearer");
    let tok = fx.dir.join("token");
    std::fs::create_dir_all(&tok).expect("mkdir");
    run(Command::new("openssl")
        .current_dir(&tok)
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=strata-token-signer",
            "-keyout",
            "sign.key",
            "-out",
            "sign.pem",
        ]));
    std::fs::write(tok.join("mint.py"), MINT_TOKEN_PY).expect("mint.py");
    let token = run(Command::new("python3")
        .current_dir(&tok)
        .args(["mint.py", "sign.pem", "sign.key", "bb"]));
    let port = free_port();
    std::fs::write(
        tok.join("registry.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  token:\n    realm: http://127.0.0.1:9/token\n    service: strata-test\n    issuer: strata-test-issuer\n    rootcertbundle: {}\n",
            fx.dir.join("registry").display(),
            tok.join("sign.pem").display()
        ),
    )
    .expect("registry config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(tok.join("registry.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    fx.others.push(child);
    wait_for("token registry", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let image = format!("127.0.0.1:{port}/bb:1");
    let store = ImageStore::open(fx.state().join("images")).expect("store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let bearer = |token: &str| PullOptions {
        auth: PullAuth::Bearer {
            token: token.into(),
        },
        ..PullOptions::default()
    };
    let err = rt
        .block_on(store.pull(&image, &bearer("not-a-token")))
        .expect_err("bad token refused");
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
    let rec = rt
        .block_on(store.pull(&image, &bearer(token.trim())))
        .expect("pull with a bearer token");
    assert_eq!(rec.layers.len(), 1);
}

/// Capability numbers of linux/capability.h by name, written out here
/// rather than taken from libcontainer, so that a wrong mapping of names to
/// bits there cannot hide behind the same one here.
const CAPABILITY_BITS: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_SETFCAP", 31),
    ("CAP_MAC_OVERRIDE", 32),
    ("CAP_MAC_ADMIN", 33),
    ("CAP_SYSLOG", 34),
    ("CAP_WAKE_ALARM", 35),
    ("CAP_BLOCK_SUSPEND", 36),
    ("CAP_AUDIT_READ", 37),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

/// Docker's default capability set (its `DefaultCapabilities`), as kernel bits.
const DOCKER_DEFAULT_CAPS: u64 = 0xa804_25fb;
/// A task's default set: Docker's without CAP_MKNOD (bit 27), 0xa004_25fb.
const TASK_DEFAULT_CAPS: u64 = DOCKER_DEFAULT_CAPS & !(1 << 27);

/// The value of `field` in a /proc/<pid>/status text.
fn status_field<'a>(status: &'a str, field: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
}

/// The five capability sets, NoNewPrivs and the seccomp mode of a
/// /proc/<pid>/status text, on one line.
fn security_of(status: &str) -> String {
    let caps: Vec<String> = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .iter()
        .map(|f| {
            let hex = status_field(status, f);
            let v = u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{f} {hex:?}: {e}"));
            format!("{f} {v:#x}")
        })
        .collect();
    format!(
        "{} NoNewPrivs {} Seccomp {}",
        caps.join(" "),
        status_field(status, "NoNewPrivs"),
        status_field(status, "Seccomp")
    )
}

/// [`security_of`] a process with permitted and effective sets `prm_eff`,
/// bounding set `bnd`, no inheritable or ambient capabilities,
/// no_new_privs, and seccomp mode `seccomp`.
fn expected_security(prm_eff: u64, bnd: u64, seccomp: u32) -> String {
    format!(
        "CapInh 0x0 CapPrm {prm_eff:#x} CapEff {prm_eff:#x} CapBnd {bnd:#x} CapAmb 0x0 NoNewPrivs 1 Seccomp {seccomp}"
    )
}

/// One line of the seccomp probe's output (`tests/probe/syscalls.c`).
#[derive(Debug)]
struct ProbeResult {
    class: String,
    name: String,
    /// `ok`, an errno name, or `signal`.
    result: String,
}

fn probe_results(out: &str) -> Vec<ProbeResult> {
    let results: Vec<ProbeResult> = out
        .lines()
        .map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [class, name, result] => ProbeResult {
                    class: class.to_string(),
                    name: name.to_string(),
                    result: result.to_string(),
                },
                _ => panic!("not a probe line: {line:?} in:\n{out}"),
            },
        )
        .collect();
    assert!(!results.is_empty(), "the probe printed nothing");
    results
}

/// Compiles the seccomp probe (`tests/probe/syscalls.c`, static, so that
/// it runs in the busybox image) into the fixture's staging root and pushes
/// `bb:probe`: `bb:1` with the probe at /bin/probe. Returns the probe's
/// path on the host.
fn push_probe_image(fx: &Fixture) -> PathBuf {
    let probe = fx.dir.join("root/bin/probe");
    run(Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&probe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probe/syscalls.c")));
    let layout = fx.dir.join("layout");
    let l = |tag: &str| format!("{}:{tag}", layout.display());
    let bundle = fx.dir.join("bundle-probe");
    run(Command::new("umoci")
        .args(["unpack", "--image", &l("1")])
        .arg(&bundle));
    std::fs::copy(&probe, bundle.join("rootfs/bin/probe")).expect("copy the probe");
    run(Command::new("umoci")
        .args(["repack", "--image", &l("probe")])
        .arg(&bundle));
    run(Command::new("skopeo").args([
        "copy",
        "--dest-tls-verify=false",
        &format!("oci:{}", l("probe")),
        &format!("docker://127.0.0.1:{}/bb:probe", fx.port),
    ]));
    probe
}

#[test]
fn live_tasks_have_exactly_the_spec_capabilities_and_every_denied_call_is_refused() {
    if !require(
        "live_tasks_have_exactly_the_spec_capabilities_and_every_denied_call_is_refused",
        &[
            NEEDS,
            &[
                Need::Program("cc"),
                Need::File("/usr/lib/x86_64-linux-gnu/libc.a"),
                Need::Program("setpriv"),
            ],
        ]
        .concat(),
    ) {
        return;
    }
    // The spec's capabilities as kernel bits, through this file's table.
    let default_caps: Vec<String> = agent::runtime::spec::DEFAULT_CAPABILITIES
        .iter()
        .map(|c| {
            serde_json::to_value(c)
                .expect("a capability serializes")
                .as_str()
                .expect("as its name")
                .to_string()
        })
        .collect();
    let bit = |name: &str| -> u32 {
        CAPABILITY_BITS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, b)| *b)
            .unwrap_or_else(|| panic!("{name} is not in linux/capability.h"))
    };
    let m = default_caps.iter().fold(0u64, |m, c| m | (1u64 << bit(c)));
    assert_eq!(
        m, TASK_DEFAULT_CAPS,
        "DEFAULT_CAPABILITIES is not Docker's default set without CAP_MKNOD: {default_caps:?}"
    );

    let mut fx = Fixture::new("caps");
    let probe = push_probe_image(&fx);
    let image = fx.image("probe");
    let tasks_dir = fx.dir.join("tasks");
    for (id, user) in [("caps-root", ""), ("caps-nobody", "user = \"nobody\"\n")] {
        fx.write_task(
            &tasks_dir,
            &format!(
                "id = \"{id}\"\nimage = {image:?}\ncommand = [\"sleep\", \"1000\"]\n{user}stop_grace_secs = 0\n"
            ),
        );
    }
    // The probe as a task's init too: its filter comes from the spec
    // through libcontainer, an exec'd process's through the shim's executor.
    fx.write_task(
        &tasks_dir,
        &format!("id = \"caps-probe\"\nimage = {image:?}\ncommand = [\"/bin/probe\"]\n"),
    );
    fx.start_agent(&tasks_dir);
    let pid_of = |fx: &Fixture, id: &str| {
        Fixture::task(&fx.list(), id)
            .filter(|t| t["state"] == "running")
            .and_then(|t| t["pid"].as_i64())
    };
    wait_for("both tasks running", Duration::from_secs(20), || {
        pid_of(&fx, "caps-root").is_some() && pid_of(&fx, "caps-nobody").is_some()
    });
    let exec = |id: &str, args: &[&str]| {
        run(fx
            .strata()
            .args(["task", "exec", id, "--state-dir"])
            .arg(fx.state())
            .arg("--")
            .args(args))
    };

    // Each task's init and a process exec'd into it: exactly the spec's
    // sets. Root keeps them across its exec; nobody keeps only the bounding
    // set (no ambient capabilities, and no_new_privs ignores file ones).
    for (id, prm_eff) in [("caps-root", m), ("caps-nobody", 0)] {
        let want = expected_security(prm_eff, m, 2);
        let pid = pid_of(&fx, id).expect("the task runs");
        let init = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("the status of the task's init");
        assert_eq!(security_of(&init), want, "the init of {id} (pid {pid})");
        let exec_status = exec(id, &["cat", "/proc/self/status"]);
        assert_eq!(
            security_of(&exec_status),
            want,
            "a process exec'd into {id}"
        );
    }

    // The control: the probe on the host with the root task's capability
    // sets and no_new_privs, but no seccomp filter (none is inherited:
    // this process has none either).
    let me = std::fs::read_to_string("/proc/self/status").expect("own status");
    assert_eq!(
        status_field(&me, "Seccomp"),
        "0",
        "the test runs under a seccomp filter: the control would too"
    );
    let bounding = format!(
        "--bounding-set=-all{}",
        default_caps
            .iter()
            .map(|c| format!(",+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect::<String>()
    );
    let setpriv = |program: &std::ffi::OsStr, args: &[&str]| {
        run(Command::new("setpriv")
            .args([
                "--inh-caps=-all",
                "--ambient-caps=-all",
                &bounding,
                "--no-new-privs",
                "--",
            ])
            .arg(program)
            .args(args))
    };
    assert_eq!(
        security_of(&setpriv(
            std::ffi::OsStr::new("cat"),
            &["/proc/self/status"]
        )),
        expected_security(m, m, 0),
        "the control's process"
    );
    let inside = probe_results(&exec("caps-root", &["/bin/probe"]));
    wait_for("the probe task exited", Duration::from_secs(20), || {
        Fixture::task(&fx.list(), "caps-probe").is_some_and(|t| t["state"] == "exited")
    });
    let as_init = probe_results(&run(fx
        .strata()
        .args(["task", "logs", "caps-probe", "--state-dir"])
        .arg(fx.state())));
    let control = probe_results(&setpriv(probe.as_os_str(), &[]));
    let names = |r: &[ProbeResult]| -> Vec<String> {
        r.iter()
            .map(|p| format!("{} {}", p.class, p.name))
            .collect()
    };
    assert_eq!(names(&inside), names(&control), "the same probes ran twice");
    assert_eq!(names(&as_init), names(&control), "the probe ran as an init");
    // What the filter answers: EPERM, and ENOSYS for clone3, so that glibc
    // falls back to clone.
    let refusal = |name: &str| if name == "clone3" { "ENOSYS" } else { "EPERM" };
    let through: Vec<&ProbeResult> = inside
        .iter()
        .chain(&as_init)
        .filter(|p| p.result != refusal(&p.name))
        .collect();
    assert!(
        through.is_empty(),
        "calls the task's filter does not refuse: {through:?}"
    );
    // A probe the kernel refuses the same way without the filter (EPERM from
    // a capability check before anything else) shows nothing about it.
    let conclusive = |p: &ProbeResult| p.result != refusal(&p.name);
    for p in control.iter().filter(|&p| !conclusive(p)) {
        eprintln!(
            "probe {} {}: inconclusive on this kernel: {} without the filter too",
            p.class, p.name, p.result
        );
    }
    let classes: BTreeSet<&str> = control.iter().map(|p| p.class.as_str()).collect();
    let unproven: Vec<&str> = classes
        .into_iter()
        .filter(|class| !control.iter().any(|p| p.class == *class && conclusive(p)))
        .collect();
    assert!(
        unproven.is_empty(),
        "classes with no probe the kernel answers differently without the filter: {unproven:?}\n{control:?}"
    );
    // Every denied call has its probe (a call added to the list needs one).
    let probed: BTreeSet<&str> = inside.iter().map(|p| p.name.as_str()).collect();
    let unprobed: Vec<&str> = agent::runtime::seccomp::DENIED_SYSCALLS
        .iter()
        .copied()
        .chain(["clone", "clone3"])
        .filter(|name| !probed.contains(name))
        .collect();
    assert!(
        unprobed.is_empty(),
        "denied calls without a probe in tests/probe/syscalls.c: {unprobed:?}"
    );

    // What the allow-list must keep: each call of `probe allowed` works in
    // the task and in the control (a call missing from ALLOWED_SYSCALLS
    // shows here as EPERM), and so do ordinary tools, as root and nobody.
    let allowed_inside = probe_results(&exec("caps-root", &["/bin/probe", "allowed"]));
    let allowed_control = probe_results(&setpriv(probe.as_os_str(), &["allowed"]));
    assert_eq!(
        names(&allowed_inside),
        names(&allowed_control),
        "the same calls ran twice"
    );
    let failed: Vec<&ProbeResult> = allowed_inside
        .iter()
        .chain(&allowed_control)
        .filter(|p| p.class != "allowed" || p.result != "ok")
        .collect();
    assert!(
        failed.is_empty(),
        "calls a task must keep that failed: {failed:?}"
    );
    for (id, uid) in [("caps-root", 0), ("caps-nobody", 65534)] {
        let out = exec(
            id,
            &[
                "sh",
                "-c",
                "ls / >/dev/null && cat /etc/passwd >/dev/null && ps >/dev/null && hostname && id -u && sleep 0.1 && echo fine",
            ],
        );
        assert_eq!(
            out,
            format!("{id}\n{uid}\nfine\n"),
            "ordinary tools in {id}"
        );
    }
    fx.kill_agents();
}

/// The first block device of this host, as `major:minor` (from /sys/dev/block).
fn a_block_device() -> (u32, u32) {
    let mut devices: Vec<(u32, u32)> = std::fs::read_dir("/sys/dev/block")
        .expect("/sys/dev/block")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (major, minor) = name.split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect();
    devices.sort();
    *devices
        .first()
        .expect("this host has a block device to test the devices cgroup with")
}

/// Starts the tasks `(id, extra task file lines)` running `sleep` from
/// `bb:1` with an agent, and waits until all run.
fn start_sleepers(fx: &mut Fixture, tasks: &[(&str, &str)]) {
    let tasks_dir = fx.dir.join("tasks");
    let image = fx.image("1");
    for (id, extra) in tasks {
        fx.write_task(
            &tasks_dir,
            &format!(
                "id = \"{id}\"\nimage = {image:?}\ncommand = [\"sleep\", \"1000\"]\nstop_grace_secs = 0\n{extra}"
            ),
        );
    }
    fx.start_agent(&tasks_dir);
    wait_for("the tasks running", Duration::from_secs(20), || {
        let list = fx.list();
        tasks
            .iter()
            .all(|(id, _)| Fixture::task(&list, id).is_some_and(|t| t["state"] == "running"))
    });
}

/// `strata task exec <id> -- sh -c <script>`: its stdout (the script
/// must end with status 0).
fn exec_sh(fx: &Fixture, id: &str, script: &str) -> String {
    run(fx
        .strata()
        .args(["task", "exec", id, "--state-dir"])
        .arg(fx.state())
        .args(["--", "sh", "-c", script]))
}

#[test]
fn devices_are_the_oci_defaults_and_mknod_must_be_asked_for() {
    if !require(
        "devices_are_the_oci_defaults_and_mknod_must_be_asked_for",
        &[NEEDS, &[Need::File("/sys/dev/block")]].concat(),
    ) {
        return;
    }
    let mut fx = Fixture::new("dev");
    start_sleepers(
        &mut fx,
        &[
            ("dev-default", ""),
            ("dev-mknod", "cap_add = [\"CAP_MKNOD\"]\n"),
        ],
    );

    // The devices cgroup (v1: its rules are readable): the spec's rules
    // (runtime::spec::ALLOWED_DEVICES after a deny-all) and libcontainer's
    // own: mknod of any device, /dev/console, /dev/net/tun.
    if Path::new("/sys/fs/cgroup/devices").is_dir() {
        for id in ["dev-default", "dev-mknod"] {
            let list = cgroup_file("devices", &format!("{id}-1"), "devices.list")
                .unwrap_or_else(|| panic!("{id} has no devices cgroup"));
            let got: BTreeSet<&str> = list.lines().collect();
            let want: BTreeSet<&str> = [
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 10:200 rwm",
                "c 136:* rwm",
                "c *:* m",
                "b *:* m",
            ]
            .into();
            assert_eq!(got, want, "devices.list of {id}");
        }
    } else {
        eprintln!(
            "devices_are_the_oci_defaults_and_mknod_must_be_asked_for: cgroup v2, the device rules are a BPF program: checked by their effect only"
        );
    }

    let (major, minor) = a_block_device();
    // Without CAP_MKNOD (the default), no device node can be made.
    let out = exec_sh(
        &fx,
        "dev-default",
        &format!("mknod /dev/blk b {major} {minor} 2>&1; echo status $?"),
    );
    assert!(
        out.contains("Operation not permitted") && out.ends_with("status 1\n"),
        "mknod in a default task: {out}"
    );
    // With it, the node is made, but the devices cgroup refuses to open a
    // block device, and a node on the root filesystem (nodev) does not
    // open even when the cgroup allows its device (1:3 is /dev/null).
    let out = exec_sh(
        &fx,
        "dev-mknod",
        &format!(
            "mknod /dev/blk b {major} {minor} && echo made-blk; \
             head -c1 /dev/blk 2>&1 >/dev/null || echo refused-blk; \
             mkdir -p /tmp && mknod /tmp/null c 1 3 && echo made-null; \
             cat /tmp/null 2>&1 || echo refused-tmp-null; \
             cat /dev/null && echo opened-dev-null"
        ),
    );
    let tokens: Vec<&str> = out.lines().filter(|l| !l.contains(':')).collect();
    assert_eq!(
        tokens,
        [
            "made-blk",
            "refused-blk",
            "made-null",
            "refused-tmp-null",
            "opened-dev-null"
        ],
        "{out}"
    );
    assert!(
        out.contains("/dev/blk") && out.contains("Operation not permitted"),
        "the devices cgroup's refusal: {out}"
    );
    assert!(
        out.contains("/tmp/null") && out.contains("Permission denied"),
        "nodev's refusal: {out}"
    );
    fx.kill_agents();
}

#[test]
fn task_mounts_are_locked_down() {
    if !require("task_mounts_are_locked_down", NEEDS) {
        return;
    }
    let mut fx = Fixture::new("mounts");
    start_sleepers(&mut fx, &[("locked", "")]);

    // The root (the task's overlay) without device nodes or set-uid, /proc
    // without those nor exec: each option of the mount point's top mount.
    let mountinfo = exec_sh(&fx, "locked", "cat /proc/self/mountinfo");
    let options = |point: &str| -> BTreeSet<String> {
        mountinfo
            .lines()
            .rev()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f.len() > 5 && f[4] == point)
            .unwrap_or_else(|| panic!("no mount on {point}:\n{mountinfo}"))[5]
            .split(',')
            .map(String::from)
            .collect()
    };
    for (point, wanted) in [
        ("/", &["nodev", "nosuid"][..]),
        ("/proc", &["nodev", "nosuid", "noexec"][..]),
    ] {
        let have = options(point);
        for option in wanted {
            assert!(
                have.contains(*option),
                "{point} is mounted without {option}: {have:?}"
            );
        }
    }
    // A masked file reads empty (the host's does not), and /proc/sys is
    // read-only.
    let host = std::fs::read_to_string("/proc/interrupts").expect("the host's /proc/interrupts");
    assert!(
        !host.is_empty(),
        "the host's /proc/interrupts is empty: nothing to mask"
    );
    assert_eq!(exec_sh(&fx, "locked", "cat /proc/interrupts"), "");
    let out = exec_sh(
        &fx,
        "locked",
        "(echo strata > /proc/sys/kernel/domainname) 2>&1 || echo refused",
    );
    assert!(
        out.contains("Read-only file system") && out.ends_with("refused\n"),
        "writing /proc/sys: {out}"
    );
    // A task that sets no pids limit gets the default.
    assert_eq!(
        cgroup_file("pids", "locked-1", "pids.max"),
        Some(control::task::spec::DEFAULT_PIDS_LIMIT.to_string())
    );
    fx.kill_agents();
}

/// The parent cgroup of this run's tasks (`cargo xtask test` gives each run
/// its own prefix in `STRATA_HOST_PREFIX`).
fn cgroup_parent() -> String {
    agent::runtime::names::HostNames::from_env()
        .expect("STRATA_HOST_PREFIX is valid")
        .prefix()
        .to_string()
}

#[test]
fn a_task_in_a_user_namespace_is_root_inside_and_no_one_outside() {
    if !require(
        "a_task_in_a_user_namespace_is_root_inside_and_no_one_outside",
        NEEDS,
    ) {
        return;
    }
    let mut fx = Fixture::new("userns");
    // The task reports what it sees, then sleeps.
    let script = "cat /proc/self/uid_map; id -u; stat -c %u:%g /bin /etc/passwd; \
                  echo extra >> /etc/passwd && touch /made && stat -c %u /made; \
                  (mknod /dev/x b 7 0) 2>/dev/null || echo mknod-refused; echo done; sleep 1000";
    let tasks_dir = fx.dir.join("tasks");
    let image = fx.image("1");
    for id in ["mapped", "mapped2"] {
        fx.write_task(
            &tasks_dir,
            &format!(
                "id = \"{id}\"\nimage = {image:?}\ncommand = [\"sh\", \"-c\", {script:?}]\nstop_grace_secs = 0\nuser_ns = true\n"
            ),
        );
    }
    fx.start_agent(&tasks_dir);
    let log = |id: &str| {
        std::fs::read_to_string(fx.state().join(format!("tasks/{id}/logs/stdout.log")))
            .unwrap_or_default()
    };
    wait_for("both tasks reporting", Duration::from_secs(30), || {
        log("mapped").contains("done") && log("mapped2").contains("done")
    });
    let range = |id: &str| {
        let run: agent::runtime::RunParams = serde_json::from_str(
            &std::fs::read_to_string(fx.state().join(format!("tasks/{id}/run.json")))
                .expect("run.json"),
        )
        .expect("run.json parses");
        run.user_ns.expect("a user namespace range")
    };
    let (one, two) = (range("mapped"), range("mapped2"));
    assert_ne!(one.host_base, two.host_base, "two tasks share a range");
    assert_eq!(one.size, control::task::spec::USER_NS_SIZE);

    // Inside: root, the image's files its own, and it writes to them; no
    // device nodes.
    let inside = log("mapped");
    let words: Vec<&str> = inside.split_whitespace().collect();
    assert_eq!(
        words,
        [
            "0",
            &one.host_base.to_string(),
            "65536",
            "0",
            "0:0",
            "0:0",
            "0",
            "mknod-refused",
            "done"
        ],
        "{inside}"
    );
    // Outside: its processes and what it wrote belong to the range.
    let upper = fx.state().join("tasks/mapped/upper");
    let owner =
        |p: &Path| std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(p).expect("stat"));
    assert_eq!(owner(&upper.join("made")), one.host_base);
    assert_eq!(owner(&upper.join("etc/passwd")), one.host_base);
    let task = Fixture::task(&fx.list(), "mapped")
        .cloned()
        .expect("listed");
    let pid = task["pid"].as_i64().expect("a pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert_eq!(
        status_field(&status, "Uid").split_whitespace().next(),
        Some(one.host_base.to_string().as_str()),
        "{status}"
    );
    // exec cannot join a user namespace (libcontainer 0.7): it refuses
    // rather than run the command as the node's root.
    let out = fx
        .strata()
        .args(["task", "exec", "mapped", "--state-dir"])
        .arg(fx.state())
        .args(["--", "id", "-u"])
        .output()
        .expect("strata task exec");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("runs in a user namespace, which exec cannot join yet"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fx.kill_agents();
}
