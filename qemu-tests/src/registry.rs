//! A real OCI registry on the host side of the VMs' user-mode network:
//! Debian's `docker-registry` on the host's loopback, which a guest reaches
//! as `10.0.2.2:<port>` (QEMU's user-mode network maps the gateway address
//! to the host's loopback). It holds `bb:1`, an image built here from
//! busybox-static with umoci (command `sh`) and copied in with skopeo.
//! The registry is killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::reserve::free_tcp_port;

/// The address a guest reaches the host's loopback at.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// busybox applets linked into the image.
pub const APPLETS: &[&str] = &[
    "sh", "sleep", "echo", "cat", "nc", "nslookup", "awk", "ip", "hostname", "seq",
];

/// A running registry holding `bb:1`.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Registry {
    /// Builds the image under `dir`, starts the registry on loopback and
    /// pushes the image to it.
    pub fn start(dir: &Path) -> anyhow::Result<Registry> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let layout = busybox_layout(dir)?;
        let port = free_tcp_port()?;
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.join("storage").display()
            ),
        )
        .with_context(|| format!("cannot write {}", config.display()))?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start docker-registry")?;
        let registry = Registry {
            child,
            port,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("docker-registry does not listen on 127.0.0.1:{port}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        run(Command::new("skopeo").args([
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{}:1", layout.display()),
            &format!("docker://127.0.0.1:{port}/bb:1"),
        ]))?;
        Ok(registry)
    }

    /// The registry as guests name it (for `registries.insecure`).
    pub fn guest_registry(&self) -> String {
        format!("{HOST_FROM_GUEST}:{}", self.port)
    }

    /// The image reference guests pull.
    pub fn guest_image(&self) -> String {
        format!("{}/bb:1", self.guest_registry())
    }
}

/// An OCI layout under `dir` holding busybox-static as `bb:1` (command
/// `sh`, `PATH=/bin`, the [`APPLETS`] linked).
pub fn busybox_layout(dir: &Path) -> anyhow::Result<PathBuf> {
    let root = dir.join("root");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("cannot create {}", bin.display()))?;
    std::fs::create_dir_all(root.join("etc")).context("cannot create etc")?;
    std::fs::copy("/bin/busybox", bin.join("busybox")).context("cannot copy /bin/busybox")?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .with_context(|| format!("cannot link {applet}"))?;
    }
    let layout = dir.join("layout");
    let image = format!("{}:1", layout.display());
    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .arg("init")
        .arg("--layout")
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle))?;
    run(Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", root.display()))
        .arg(bundle.join("rootfs")))?;
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--config.cmd",
        "sh",
        "--config.env",
        "PATH=/bin",
    ]))?;
    Ok(layout)
}

/// The CLI arguments that pin a `sh -c script` task `id` of `image` to
/// `node`, stopped with a one-second grace period.
pub fn task_run_args<'a>(
    node: &'a str,
    image: &'a str,
    id: &'a str,
    script: &'a str,
) -> [&'a str; 14] {
    [
        "task",
        "run",
        "--node",
        node,
        "--image",
        image,
        "--id",
        id,
        "--stop-grace",
        "1",
        "--",
        "sh",
        "-c",
        script,
    ]
}

/// A task script (for the `bb:1` image) that finds task `name` through its
/// node's resolver, both as `name` (the resolv.conf's search domain) and as
/// `name.zone`, checks that both answer `addr`, and reads `expect` from
/// `port` at each (busybox-static's wget crashes under static glibc:
/// nslookup resolves, nc connects). Retries for `tries` seconds, since the
/// record may reach the client's node after the client started; exits 0 on
/// success.
pub fn reach_by_name_script(
    name: &str,
    zone: &str,
    addr: &str,
    port: u16,
    expect: &str,
    tries: u32,
) -> String {
    format!(
        "resolve() {{ nslookup \"$1\" 2>/dev/null | awk '/^Name:/{{n=1}} n&&/^Address/{{print $2; exit}}'; }}; \
         try() {{ a=$(resolve {name}.{zone}) && [ \"$a\" = {addr} ] && \
         b=$(resolve {name}) && [ \"$b\" = {addr} ] && \
         [ \"$(echo | nc -w 5 $a {port})\" = {expect} ] && [ \"$(echo | nc -w 5 $b {port})\" = {expect} ]; }}; \
         i=0; while [ $i -lt {tries} ]; do try && exit 0; i=$((i+1)); echo \"attempt $i: {name}.{zone}=$a {name}=$b\"; sleep 1; done; exit 1"
    )
}

/// A task script that exits 0 once its node's resolver answers `addr` for
/// `app.zone` (A) and names port `port` of `target.zone` for
/// `_app._tcp.zone` (SRV); retries for `tries` seconds, then prints what the
/// resolver answers and exits 1.
pub fn app_srv_script(
    app: &str,
    zone: &str,
    target: &str,
    addr: &str,
    port: u16,
    tries: u32,
) -> String {
    format!(
        "try() {{ nslookup {app}.{zone} 2>/dev/null | awk '/^Name:/{{n=1}} n&&/^Address/{{print $2; exit}}' | grep -qxF {addr} && \
         nslookup -type=srv _{app}._tcp.{zone} 2>/dev/null | grep -qF ' {port} {target}.{zone}'; }}; \
         i=0; while [ $i -lt {tries} ]; do try && exit 0; i=$((i+1)); sleep 1; done; \
         nslookup {app}.{zone}; nslookup -type=srv _{app}._tcp.{zone}; exit 1"
    )
}

/// A task script that exits 0 once `gone` no longer resolves (within
/// `tries` seconds), 1 if it still does, and 2 if `known` does not resolve
/// either in 5 tries a second apart (the resolver does not answer at all;
/// one query lost by a node loaded by emulation is not that).
pub fn gone_script(gone: &str, known: &str, tries: u32) -> String {
    format!(
        "i=0; until nslookup {known} >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 5 ] && exit 2; sleep 1; done; i=0; while [ $i -lt {tries} ]; do nslookup {gone} >/dev/null 2>&1 || exit 0; i=$((i+1)); sleep 1; done; exit 1"
    )
}
