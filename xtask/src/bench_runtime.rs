//! `cargo xtask bench runtime`: figures for the container runtime.
//!
//! - start latency from create to the process running (from the request to
//!   the agent's `strata shim-launcher` until the forked shim answers
//!   `ok <pid>`), p50/p99 over N tasks with a cached image, side by side with
//!   `crun run -d` of the same bundle in the same run; again after 300 ms
//!   of idle before each start, and again beside 100 running tasks;
//! - the agent's RSS with 100 running tasks (and the shims' and the
//!   launcher's PSS);
//! - pull throughput of a 100 MB image from a loopback registry.
//!
//! crun refuses this host's hybrid cgroup layout, so its runs happen in a
//! private mount namespace (this binary re-executed under `unshare -m`) with
//! an empty file bind-mounted over `/sys/fs/cgroup/unified/cgroup.controllers`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills what the benchmark started and removes its directory.
struct Cleanup {
    work: PathBuf,
    strata: PathBuf,
    children: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for state in ["state", "state100"] {
            let state_dir = self.work.join(state);
            if let Ok(out) = Command::new(&self.strata)
                .args(["task", "list", "--json", "--state-dir"])
                .arg(&state_dir)
                .output()
            {
                let list: Vec<serde_json::Value> =
                    serde_json::from_slice(&out.stdout).unwrap_or_default();
                for t in list {
                    if let Some(id) = t["id"].as_str() {
                        let _ = Command::new(&self.strata)
                            .args(["task", "stop", id, "--grace", "0", "--state-dir"])
                            .arg(&state_dir)
                            .output();
                    }
                }
            }
        }
        // What the stops above did not end: every process still in this
        // run's cgroups (tasks the CLI could not find, such as the b-series
        // started straight through the launcher), and the shims working in
        // this run's directory. Each is named: a leftover is a finding.
        let prefix = crate::residue::host_prefix();
        for pid in pids() {
            let in_run_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.lines().any(|l| l.contains(&format!("/{prefix}/"))));
            let our_shim = std::fs::read_link(format!("/proc/{pid}/cwd"))
                .is_ok_and(|cwd| cwd.starts_with(&self.work));
            if in_run_cgroup || our_shim {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                eprintln!("bench runtime: killing leftover {pid} {}", comm.trim());
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.work.join("crun/rootfs"))
            .status();
        // crun's parent cgroup (empty once its containers are deleted), and
        // this run's tasks' cgroups and their parent.
        for entry in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(entry.path().join("strata-crun"));
            let parent = entry.path().join(&prefix);
            for task in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if task.path().is_dir() {
                    let _ = std::fs::remove_dir(task.path());
                }
            }
        }
        crate::residue::remove_parent_cgroups(&prefix);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// The pids of the live processes.
fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
}

/// Live processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let parent = parent.to_string();
    pids()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .is_some_and(|ppid| ppid == parent)
            })
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn build_layout(work: &Path, name: &str, files: &Path, cmd: &str) -> anyhow::Result<PathBuf> {
    let layout = work.join(format!("layout-{name}"));
    let img = format!("{}:1", layout.display());
    sh(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    sh(Command::new("umoci").args(["new", "--image", &img]))?;
    let bundle = work.join(format!("bundle-{name}"));
    sh(Command::new("umoci")
        .args(["unpack", "--image", &img])
        .arg(&bundle))?;
    sh(Command::new("cp")
        .arg("-a")
        .arg(files.join("."))
        .arg(bundle.join("rootfs/")))?;
    sh(Command::new("umoci")
        .args(["repack", "--image", &img])
        .arg(&bundle))?;
    sh(Command::new("umoci").args([
        "config",
        "--image",
        &img,
        "--config.cmd",
        cmd,
        "--config.env",
        "PATH=/bin",
    ]))?;
    let _ = std::fs::remove_dir_all(&bundle);
    Ok(layout)
}

/// Runs the whole benchmark and prints the figures.
pub fn run(count: usize) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    crate::deps::ensure("cargo xtask bench runtime", crate::deps::BENCH_RUNTIME)?;
    eprintln!("building strata (release)...");
    sh(Command::new("cargo").current_dir(&root).args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "agent",
        "--bin",
        "strata",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or(root.join("target"), PathBuf::from);
    let work = std::env::temp_dir().join(format!("strata-bench-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    // A private copy: the shared target dir may be rebuilt meanwhile.
    let strata = work.join("strata");
    std::fs::copy(target.join("release/strata"), &strata).context("copy strata")?;
    let mut guard = Cleanup {
        work: work.clone(),
        strata: strata.clone(),
        children: Vec::new(),
    };

    // Images: busybox, and one with a 100 MB incompressible layer.
    let files = work.join("files");
    std::fs::create_dir_all(files.join("bin"))?;
    std::fs::copy("/bin/busybox", files.join("bin/busybox"))?;
    for a in ["sh", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", files.join("bin").join(a))?;
    }
    let small = build_layout(&work, "small", &files, "sh")?;
    let big_files = work.join("bigfiles");
    std::fs::create_dir_all(&big_files)?;
    sh(Command::new("cp")
        .arg("-a")
        .arg(files.join("."))
        .arg(&big_files))?;
    sh(Command::new("dd")
        .args(["if=/dev/urandom", "bs=1M", "count=100", "status=none"])
        .arg(format!("of={}", big_files.join("data").display())))?;
    let big = build_layout(&work, "big", &big_files, "sh")?;
    let big_bytes: u64 = std::fs::read_dir(big.join("blobs/sha256"))?
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(
        work.join("registry.yml"),
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            work.join("registry").display()
        ),
    )?;
    guard.children.push(
        Command::new("docker-registry")
            .arg("serve")
            .arg(work.join("registry.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start docker-registry")?,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        ensure!(Instant::now() < deadline, "registry did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (layout, name) in [(&small, "bb"), (&big, "big")] {
        sh(Command::new("skopeo").args([
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:1", layout.display()),
            &format!("docker://127.0.0.1:{port}/{name}:1"),
        ]))?;
    }

    // Pull throughput.
    let t = Instant::now();
    sh(Command::new(&strata)
        .args([
            "image",
            "pull",
            &format!("127.0.0.1:{port}/big:1"),
            "--state-dir",
        ])
        .arg(work.join("pullstate")))?;
    let pull_secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(work.join("pullstate"));

    // Start latency: strata (one shim per task, from spawn to its `ok <pid>`)
    // and crun (`crun run -d` of the same bundle) alternate, so both see
    // the same machine load.
    let state = work.join("state");
    let image = format!("127.0.0.1:{port}/bb:1");
    sh(Command::new(&strata)
        .args(["image", "pull", &image, "--state-dir"])
        .arg(&state))?;
    let layer = std::fs::read_dir(state.join("images/layers"))?
        .flatten()
        .next()
        .context("no layer")?
        .path();
    // Shims are forked by one launcher, as the agent does; it is started
    // before the timed runs, as an agent's is by its first task.
    let mut launcher = Command::new(&strata)
        .arg("shim-launcher")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("start the shim launcher")?;
    let mut to_launcher = launcher.stdin.take().context("launcher stdin")?;
    let mut from_launcher =
        std::io::BufReader::new(launcher.stdout.take().context("launcher stdout")?);
    guard.children.push(launcher);
    let mut strata_start = |i: usize| -> anyhow::Result<(f64, serde_json::Value)> {
        let dir = state.join(format!("tasks/b{i}"));
        std::fs::create_dir_all(dir.join("logs"))?;
        let run = serde_json::json!({
            "task_id": format!("b{i}"), "generation": 1, "container_id": format!("b{i}-1"),
            "args": ["sleep", "1000"], "env": ["PATH=/bin"], "cwd": "/", "user": null, "read_only": false,
            "cpu_millis": 500, "memory_bytes": 67108864u64, "pids": 64, "layers": [layer], "netns": null,
            "hostname": format!("b{i}"), "log_max_bytes": 1048576, "log_keep": 1,
            "cgroup_parent": crate::residue::host_prefix(),
        });
        std::fs::write(dir.join("run.json"), serde_json::to_vec(&run)?)?;
        let key = dir.display().to_string();
        let t = Instant::now();
        writeln!(to_launcher, "{key}")?;
        to_launcher.flush()?;
        // `<dir>\tshim <pid>` once forked, then the shim's own answer.
        let answer = loop {
            let mut line = String::new();
            ensure!(
                from_launcher.read_line(&mut line)? > 0,
                "the shim launcher exited"
            );
            let Some((k, msg)) = line.trim_end().split_once('\t') else {
                bail!("bad launcher line {line:?}")
            };
            ensure!(k == key, "answer for {k}, expected {key}");
            if !msg.starts_with("shim ") {
                break msg.to_string();
            }
        };
        let elapsed = t.elapsed().as_secs_f64() * 1000.0;
        let Some(pid) = answer.strip_prefix("ok ") else {
            bail!("shim failed: {answer}")
        };
        let config = serde_json::from_slice(&std::fs::read(dir.join("bundle/config.json"))?)?;
        sh(Command::new("kill").args(["-KILL", pid]))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("exit.json").exists() {
            ensure!(Instant::now() < deadline, "task b{i} did not exit");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::fs::remove_dir_all(&dir)?;
        Ok((elapsed, config))
    };
    // Warm-up run; its config.json is the crun bundle's, with its own root and cgroup.
    let (_, mut config) = strata_start(count)?;
    let crun_dir = work.join("crun");
    for sub in ["rootfs", "upper", "work"] {
        std::fs::create_dir_all(crun_dir.join(sub))?;
    }
    sh(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            layer.display(),
            crun_dir.join("upper").display(),
            crun_dir.join("work").display()
        ))
        .arg(crun_dir.join("rootfs")))?;
    config["root"]["path"] = serde_json::json!(crun_dir.join("rootfs"));
    config["linux"]["cgroupsPath"] = serde_json::json!("/strata-crun/bench");
    std::fs::write(
        crun_dir.join("config.json"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    std::fs::write(work.join("empty"), b"")?;
    // A private copy of this program (/proc/self/exe works even when the
    // shared target dir has replaced the file meanwhile).
    let xtask = work.join("xtask");
    std::fs::copy("/proc/self/exe", &xtask).context("copy xtask")?;
    let mut inner = Command::new("unshare")
        .arg("-m")
        .arg(&xtask)
        .args(["bench", "runtime-crun-inner", "--bundle"])
        .arg(&crun_dir)
        .arg("--empty")
        .arg(work.join("empty"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the crun helper")?;
    let mut to_inner = inner.stdin.take().context("helper stdin")?;
    let mut from_inner = std::io::BufReader::new(inner.stdout.take().context("helper stdout")?);
    let mut crun_start = || -> anyhow::Result<f64> {
        writeln!(to_inner, "run")?;
        to_inner.flush()?;
        let mut line = String::new();
        from_inner.read_line(&mut line)?;
        line.trim()
            .parse()
            .with_context(|| format!("crun helper: {line:?}"))
    };
    crun_start()?;
    let mut ours = Vec::with_capacity(count);
    let mut theirs = Vec::with_capacity(count);
    for i in 0..count {
        ours.push(strata_start(i)?.0);
        theirs.push(crun_start()?);
    }
    // The same after the machine has been idle: what a node that gets a
    // task now and then sees. Both runtimes move the new process into its
    // cgroups, and the first move after a quiet spell waits for an RCU grace
    // period (the kernel's cgroup_threadgroup_rwsem), which back-to-back
    // starts mostly find already paid.
    let idle_count = (count / 10).max(10);
    let mut ours_idle = Vec::with_capacity(idle_count);
    let mut theirs_idle = Vec::with_capacity(idle_count);
    for i in 0..idle_count {
        std::thread::sleep(IDLE_BEFORE_START);
        ours_idle.push(strata_start(count + i)?.0);
        std::thread::sleep(IDLE_BEFORE_START);
        theirs_idle.push(crun_start()?);
    }

    // Agent RSS with 100 running tasks.
    let tasks_dir = work.join("tasks100");
    std::fs::create_dir_all(&tasks_dir)?;
    for i in 0..100 {
        std::fs::write(
            tasks_dir.join(format!("r{i}.toml")),
            format!(
                "id = \"r{i}\"\nimage = {image:?}\ncommand = [\"sleep\", \"1000\"]\nmem = \"32MiB\"\nstop_grace_secs = 0\n"
            ),
        )?;
    }
    let state100 = work.join("state100");
    std::fs::create_dir_all(&state100)?;
    sh(Command::new(&strata)
        .args(["image", "pull", &image, "--state-dir"])
        .arg(&state100))?;
    let agent = Command::new(&strata)
        .args(["task", "agent", "--interval-ms", "500", "--tasks-dir"])
        .arg(&tasks_dir)
        .arg("--state-dir")
        .arg(&state100)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let agent_pid = agent.id();
    guard.children.push(agent);
    let deadline = Instant::now() + Duration::from_secs(180);
    let (agent_rss, shims_rss, launcher_pss) = loop {
        let list: Vec<serde_json::Value> = serde_json::from_str(&sh(Command::new(&strata)
            .args(["task", "list", "--json", "--state-dir"])
            .arg(&state100))?)?;
        let running = list.iter().filter(|t| t["state"] == "running").count();
        if running == 100 {
            std::thread::sleep(Duration::from_secs(2));
            let agent_rss = rss_kib(agent_pid).context("agent rss")?;
            // Forked shims are named `strata-shim` and work in their task dir.
            let tasks100 = state100.join("tasks");
            let shims: u64 = pids()
                .filter(|pid| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .is_ok_and(|c| c.trim_end() == "strata-shim")
                        && std::fs::read_link(format!("/proc/{pid}/cwd"))
                            .is_ok_and(|d| d.starts_with(&tasks100))
                })
                .filter_map(pss_kib)
                .sum();
            // The agent's launcher and its warm-up helper count as the agent's.
            let helpers: u64 = children_of(agent_pid)
                .into_iter()
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.ends_with(b"shim-launcher\0"))
                })
                .flat_map(|launcher| {
                    let mut own = vec![launcher];
                    own.extend(children_of(launcher).into_iter().filter(|p| {
                        std::fs::read_to_string(format!("/proc/{p}/comm"))
                            .is_ok_and(|c| c.trim_end() != "strata-shim")
                    }));
                    own
                })
                .filter_map(pss_kib)
                .sum();
            break (agent_rss, shims, helpers);
        }
        ensure!(
            Instant::now() < deadline,
            "only {running} of 100 tasks running after 180 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Start latency again, beside those 100 tasks: a start must not slow
    // down as a node fills (libcontainer reads the mount table a dozen
    // times per start, and each task's root is mounted where no other
    // start reads it).
    let mut ours_busy = Vec::with_capacity(idle_count);
    let mut theirs_busy = Vec::with_capacity(idle_count);
    for i in 0..idle_count {
        ours_busy.push(strata_start(count + idle_count + i)?.0);
        theirs_busy.push(crun_start()?);
    }
    drop(to_inner);
    ensure!(inner.wait()?.success(), "the crun helper failed");

    println!(
        "runtime benchmark ({count} starts each, cached busybox image, sleep 1000, 64 MiB/0.5 CPU/64 pids limits)"
    );
    print_latency("start latency, create -> running", &mut ours, &mut theirs);
    print_latency(
        &format!(
            "the same after {} ms idle ({idle_count} each)",
            IDLE_BEFORE_START.as_millis()
        ),
        &mut ours_idle,
        &mut theirs_idle,
    );
    print_latency(
        &format!("the same beside 100 running tasks ({idle_count} each)"),
        &mut ours_busy,
        &mut theirs_busy,
    );
    println!(
        "  agent RSS with 100 running tasks   {:.1} MiB, its shim launcher {:.1} MiB PSS (shims, PSS: {:.1} MiB total, {:.2} MiB each)",
        agent_rss as f64 / 1024.0,
        launcher_pss as f64 / 1024.0,
        shims_rss as f64 / 1024.0,
        shims_rss as f64 / 1024.0 / 100.0
    );
    println!(
        "  pull of a {:.0} MB image (loopback registry): {:.2} s, {:.1} MB/s",
        big_bytes as f64 / 1e6,
        pull_secs,
        big_bytes as f64 / 1e6 / pull_secs
    );
    Ok(())
}

/// Proportional set size: shared pages (the one strata binary all shims
/// map) divided among the processes that share them.
fn pss_kib(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The quiet spell before each start of the idle series.
const IDLE_BEFORE_START: Duration = Duration::from_millis(300);

/// Prints p50 and p99 of both runtimes' start latencies and their ratios.
fn print_latency(title: &str, ours: &mut [f64], theirs: &mut [f64]) {
    ours.sort_by(f64::total_cmp);
    theirs.sort_by(f64::total_cmp);
    let (o50, o99, c50, c99) = (
        percentile(ours, 0.5),
        percentile(ours, 0.99),
        percentile(theirs, 0.5),
        percentile(theirs, 0.99),
    );
    println!("  {title}");
    println!("    {:33}{:>7}    {:>7}", "", "p50", "p99");
    println!("    strata (shim + libcontainer)     {o50:7.2} ms {o99:7.2} ms");
    println!("    crun run -d (same bundle)        {c50:7.2} ms {c99:7.2} ms");
    println!(
        "    ratio strata/crun                {:7.2}    {:7.2}",
        o50 / c50,
        o99 / c99
    );
}

/// Inside `unshare -m`: hides the v2 controllers from crun, then for each
/// line on stdin starts (and deletes) one container and prints how long
/// `crun run -d` took, in milliseconds.
pub fn crun_inner(bundle: &Path, empty: &Path) -> anyhow::Result<()> {
    sh(Command::new("mount").args(["--make-rprivate", "/"]))?;
    sh(Command::new("mount")
        .arg("--bind")
        .arg(empty)
        .arg("/sys/fs/cgroup/unified/cgroup.controllers"))?;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for (i, line) in stdin.lock().lines().enumerate() {
        line?;
        let id = format!("strata-bench-crun-{}-{i}", std::process::id());
        // The detached container inherits crun's stdio: no pipes, or
        // waiting for EOF would wait for the container.
        let err_file = bundle.join("crun.err");
        let t = Instant::now();
        let status = Command::new("crun")
            .args(["--cgroup-manager=cgroupfs", "run", "-d", "--bundle"])
            .arg(bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err_file)?)
            .status()?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            status.success(),
            "crun run failed: {}",
            std::fs::read_to_string(&err_file).unwrap_or_default()
        );
        sh(Command::new("crun").args(["delete", "-f", &id]))?;
        writeln!(out, "{ms:.3}")?;
        out.flush()?;
    }
    Ok(())
}
