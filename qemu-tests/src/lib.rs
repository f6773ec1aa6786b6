//! The QEMU test tier: boots images built by `cargo xtask image` under QEMU
//! (q35, OVMF, TCG) and checks them from outside, through the serial console
//! and the API.
//!
//! [`Vm`] launches one machine: a qcow2 overlay on a built image (so every
//! test starts from the same bytes and keeps its own `/var`), its own copy of
//! the OVMF variables, a unique MAC and SMBIOS UUID, user-data through
//! fw_cfg, and the serial console either on the terminal (`cargo xtask
//! qemu`) or captured line by line for [`Vm::wait_for`]. A `Vm` is killed
//! when dropped, so a failing test never leaves QEMU behind.

pub mod boot_times;
pub mod cluster;
pub mod disk;
pub mod env;
pub mod http;
pub mod observe;
pub mod registry;
pub mod reserve;
pub mod testenv;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// OVMF firmware code (package `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// OVMF variable store template, copied per VM.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// The fw_cfg name the agent's bootstrap reads user-data from.
pub const FW_CFG_USER_DATA: &str = "opt/strata/user-data";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number unique among live processes and to this call: for MACs, UUIDs
/// and directory names (the whole pid, then a per-process counter).
pub fn unique() -> u64 {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    (u64::from(std::process::id()) << 16) | u64::from(n & 0xffff)
}

/// A locally administered MAC address unique within one run's segment.
pub fn unique_mac() -> String {
    let u = unique();
    format!(
        "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
        (u >> 24) & 0xff,
        (u >> 16) & 0xff,
        (u >> 8) & 0xff,
        u & 0xff
    )
}

/// Where the serial console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// On this terminal, with the QEMU monitor on Ctrl-A C.
    Terminal,
    /// Captured for [`Vm::wait_for`] and copied to the VM's log file.
    Capture,
    /// Written to the VM's log file by QEMU itself, which runs detached
    /// ([`spawn_detached`], `cargo xtask cluster up`).
    File,
}

/// How to launch one VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Short name, used for files and messages.
    pub name: String,
    /// The disk: an image or an overlay made with [`overlay`].
    pub disk: PathBuf,
    /// Where the VM's own files go (OVMF variables, QMP socket, serial log).
    pub dir: PathBuf,
    pub user_data: Option<PathBuf>,
    /// A filesystem image attached read-only as a second virtio disk (a
    /// `STRATA-CFG` config disk, [`disk::config_disk`]).
    pub config_disk: Option<PathBuf>,
    pub memory_mib: u32,
    pub mac: String,
    /// SMBIOS system UUID (systemd takes it as the machine-id under QEMU).
    pub uuid: String,
    pub console: Console,
    /// Extra QEMU arguments (networks of a multi-node test).
    pub extra: Vec<String>,
    /// TCP ports forwarded from the host's loopback to the guest's
    /// user-mode network: (host port, guest port).
    pub hostfwd: Vec<(u16, u16)>,
}

impl VmConfig {
    /// A VM booting `disk`, with its files under `dir`.
    pub fn new(name: &str, disk: &Path, dir: &Path) -> VmConfig {
        let u = unique();
        VmConfig {
            name: name.to_string(),
            disk: disk.to_path_buf(),
            dir: dir.to_path_buf(),
            user_data: None,
            config_disk: None,
            memory_mib: 1024,
            mac: unique_mac(),
            uuid: format!("5c0a7a00-0000-4000-8000-{:012x}", u),
            console: Console::Capture,
            extra: Vec::new(),
            hostfwd: Vec::new(),
        }
    }

    /// The QEMU command line.
    pub fn command(&self) -> Command {
        let mut c = Command::new(QEMU);
        c.args([
            "-machine",
            "q35",
            "-accel",
            "tcg,tb-size=64",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
        ])
        .args(["-display", "none", "-m", &self.memory_mib.to_string()])
        .args(["-uuid", &self.uuid])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            self.vars().display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=none,id=disk0,format={},file={}",
            disk_format(&self.disk),
            self.disk.display()
        ))
        .args(["-device", "virtio-blk-pci,drive=disk0,bootindex=0"])
        .arg("-netdev")
        .arg(self.user_netdev())
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=net0,mac={}", self.mac))
        .args(["-device", "virtio-rng-pci"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", self.qmp().display()));
        match self.console {
            Console::Terminal => c.args(["-serial", "mon:stdio"]),
            Console::Capture => c.args(["-serial", "stdio"]),
            Console::File => c
                .arg("-serial")
                .arg(format!("file:{}", self.log().display()))
                .arg("-daemonize")
                .arg("-pidfile")
                .arg(self.pidfile()),
        };
        if let Some(u) = &self.user_data {
            c.arg("-fw_cfg")
                .arg(format!("name={FW_CFG_USER_DATA},file={}", u.display()));
        }
        if let Some(d) = &self.config_disk {
            c.arg("-drive")
                .arg(format!(
                    "if=none,id=cfg,format=raw,readonly=on,file={}",
                    d.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=cfg,addr=0x11"]);
        }
        c.args(&self.extra);
        c
    }

    fn user_netdev(&self) -> String {
        let mut netdev = "user,id=net0".to_string();
        for (host, guest) in &self.hostfwd {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        netdev
    }

    /// Where a detached QEMU writes its pid.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.join(format!("{}.pid", self.name))
    }

    fn vars(&self) -> PathBuf {
        self.dir.join(format!("{}-OVMF_VARS.fd", self.name))
    }

    fn qmp(&self) -> PathBuf {
        self.dir.join(format!("{}.qmp", self.name))
    }

    /// The file the serial console is copied to.
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("{}-serial.log", self.name))
    }
}

fn disk_format(disk: &Path) -> &'static str {
    if disk.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}

/// Makes a qcow2 overlay at `overlay` on `base` (absolute paths), `grow_mib`
/// larger than the base when non-zero.
pub fn overlay(base: &Path, overlay: &Path, grow_mib: u64) -> anyhow::Result<()> {
    let base = std::fs::canonicalize(base)
        .with_context(|| format!("cannot find the image {}", base.display()))?;
    let _ = std::fs::remove_file(overlay);
    let mut c = Command::new("qemu-img");
    c.args([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        disk_format(&base),
        "-b",
    ])
    .arg(&base)
    .arg(overlay);
    if grow_mib > 0 {
        let size = std::fs::metadata(&base)?.len();
        let virt = if disk_format(&base) == "qcow2" {
            qcow2_virtual_size(&base)?
        } else {
            size
        };
        c.arg(format!("{}", virt + grow_mib * 1024 * 1024));
    }
    run(&mut c)
}

fn qcow2_virtual_size(path: &Path) -> anyhow::Result<u64> {
    let out = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path)
        .output()?;
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("qemu-img info {}: not JSON", path.display()))?;
    info["virtual-size"]
        .as_u64()
        .with_context(|| format!("qemu-img info {}: no virtual-size", path.display()))
}

pub(crate) fn run(c: &mut Command) -> anyhow::Result<()> {
    let out = c
        .output()
        .with_context(|| format!("cannot run {:?}", c.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            c,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A running VM; killed when dropped.
pub struct Vm {
    pub config: VmConfig,
    child: Child,
    /// Console lines with the time each was read.
    lines: Option<Receiver<(Instant, String)>>,
    started: Instant,
}

impl Vm {
    /// Starts the VM.
    pub fn spawn(config: VmConfig) -> anyhow::Result<Vm> {
        std::fs::create_dir_all(&config.dir)
            .with_context(|| format!("cannot create {}", config.dir.display()))?;
        std::fs::copy(OVMF_VARS, config.vars())
            .with_context(|| format!("cannot copy {OVMF_VARS}"))?;
        let _ = std::fs::remove_file(config.qmp());
        let mut cmd = config.command();
        let started = Instant::now();
        let (child, lines) = match config.console {
            Console::Terminal => (
                cmd.spawn().context("cannot start qemu-system-x86_64")?,
                None,
            ),
            Console::File => bail!(
                "{}: a VM with its console in a file runs detached: use spawn_detached",
                config.name
            ),
            Console::Capture => {
                let mut child = cmd
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .context("cannot start qemu-system-x86_64")?;
                let stdout = child.stdout.take().context("qemu has no stdout")?;
                let mut log = std::fs::File::create(config.log())
                    .with_context(|| format!("cannot create {}", config.log().display()))?;
                let (tx, rx) = channel();
                std::thread::spawn(move || {
                    // The log gets the bytes as they come, so that a prompt
                    // without a newline (a login prompt) is in it at once;
                    // the channel gets whole lines.
                    let mut reader = BufReader::new(stdout);
                    let mut line = Vec::new();
                    loop {
                        let chunk = match reader.fill_buf() {
                            Ok(chunk) if !chunk.is_empty() => chunk.to_vec(),
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            _ => break,
                        };
                        reader.consume(chunk.len());
                        let _ = log.write_all(&chunk);
                        for part in chunk.split_inclusive(|b| *b == b'\n') {
                            line.extend_from_slice(part);
                            if !line.ends_with(b"\n") {
                                continue;
                            }
                            let text = String::from_utf8_lossy(&line).trim_end().to_string();
                            line.clear();
                            if tx.send((Instant::now(), text)).is_err() {
                                return;
                            }
                        }
                    }
                    if !line.is_empty() {
                        let text = String::from_utf8_lossy(&line).trim_end().to_string();
                        let _ = tx.send((Instant::now(), text));
                    }
                });
                (child, Some(rx))
            }
        };
        Ok(Vm {
            config,
            child,
            lines: Some(lines).flatten(),
            started,
        })
    }

    /// Time since QEMU started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for a console line containing `needle` and returns it. Fails on
    /// timeout or when QEMU exits, naming the last lines seen.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<String> {
        self.wait_for_all(needle, &[], timeout)
    }

    /// Like [`Vm::wait_for`], for a line that also contains every one of
    /// `also` (e.g. `Finished` as well as a unit's description).
    pub fn wait_for_all(
        &mut self,
        needle: &str,
        also: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<String> {
        Ok(self.wait_for_at(needle, also, timeout)?.0)
    }

    /// Like [`Vm::wait_for_all`], and also returns when the line appeared,
    /// as time since QEMU started (exact even when the caller comes to
    /// read this VM's console late).
    pub fn wait_for_at(
        &mut self,
        needle: &str,
        also: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<(String, Duration)> {
        self.wait_for_unless(needle, also, |_| false, timeout)
    }

    /// Like [`Vm::wait_for_at`], and fails as soon as a line for which
    /// `forbidden` is true appears first (a marker that must never show).
    pub fn wait_for_unless(
        &mut self,
        needle: &str,
        also: &[&str],
        forbidden: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<(String, Duration)> {
        let rx = self
            .lines
            .as_ref()
            .context("the console of this VM is not captured")?;
        let deadline = Instant::now() + timeout;
        let mut tail: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((read, line)) => {
                    if forbidden(&line) {
                        bail!(
                            "{}: `{line}` appeared while waiting for `{needle}`; last lines:\n{}\n(full log: {})",
                            self.config.name,
                            tail.join("\n"),
                            self.config.log().display()
                        );
                    }
                    if let Some(at) = line.find(needle)
                        && also.iter().all(|a| line.contains(a))
                    {
                        return Ok((
                            line[at..].to_string(),
                            read.saturating_duration_since(self.started),
                        ));
                    }
                    tail.push(line);
                    if tail.len() > 30 {
                        tail.remove(0);
                    }
                }
                Err(RecvTimeoutError::Timeout) => bail!(
                    "{}: no `{needle}` on the console after {:.0}s; last lines:\n{}\n(full log: {})",
                    self.config.name,
                    timeout.as_secs_f64(),
                    tail.join("\n"),
                    self.config.log().display()
                ),
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "{}: QEMU exited before `{needle}` appeared; last lines:\n{}\n(full log: {})",
                    self.config.name,
                    tail.join("\n"),
                    self.config.log().display()
                ),
            }
        }
    }

    /// Sends a QMP command (after the capabilities handshake).
    pub fn qmp(&self, command: &str) -> anyhow::Result<()> {
        let path = self.config.qmp();
        let mut s = UnixStream::connect(&path)
            .with_context(|| format!("cannot connect to {}", path.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut greeting = [0u8; 4096];
        let _ = s.read(&mut greeting)?;
        s.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        let _ = s.read(&mut greeting)?;
        s.write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())?;
        let _ = s.read(&mut greeting)?;
        Ok(())
    }

    /// Asks the guest to power off (ACPI power button, pressed again every
    /// 10 s: a press before logind watches the button is lost) and waits for
    /// QEMU to exit; fails after `timeout` (and the VM is killed on drop).
    pub fn shutdown(mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut next_press = Instant::now();
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= next_press {
                // QEMU may exit between the check and the press.
                let _ = self.qmp("system_powerdown");
                next_press = Instant::now() + Duration::from_secs(10);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "{}: did not power off within {:.0}s",
            self.config.name,
            timeout.as_secs_f64()
        )
    }

    /// Waits for QEMU to exit by itself (the terminal console of `cargo xtask qemu`).
    pub fn wait(mut self) -> anyhow::Result<std::process::ExitStatus> {
        Ok(self.child.wait()?)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Starts a VM that outlives this process (`-daemonize`, console in
/// [`VmConfig::log`]) and returns its pid. The VM holds `slot` (its
/// multicast segment) for as long as it runs.
pub fn spawn_detached(mut config: VmConfig, slot: Option<&reserve::Slot>) -> anyhow::Result<u32> {
    config.console = Console::File;
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("cannot create {}", config.dir.display()))?;
    std::fs::copy(OVMF_VARS, config.vars()).with_context(|| format!("cannot copy {OVMF_VARS}"))?;
    let _ = std::fs::remove_file(config.qmp());
    let mut cmd = config.command();
    if let Some(slot) = slot {
        slot.inherit_into(&mut cmd);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("cannot start qemu-system-x86_64")?;
    if !out.status.success() {
        bail!(
            "{}: qemu-system-x86_64 failed ({}): {}",
            config.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let pidfile = config.pidfile();
    let text = std::fs::read_to_string(&pidfile)
        .with_context(|| format!("cannot read {}", pidfile.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a pid", pidfile.display()))
}

/// The fields of one of the agent's console markers: the ready marker
/// (`STRATA-READY role=master slot=a root=ro verity=yes boots=2 healthy=yes
/// ready_ms=31250 multi_user_ms=19800`) or the boot times line
/// (`STRATA-BOOT ready_ms=... multi_user_ms=... firmware_ms=...`).
pub fn marker_fields(line: &str) -> std::collections::BTreeMap<String, String> {
    line.split_whitespace()
        .skip_while(|w| !w.starts_with("STRATA-"))
        .skip(1)
        .filter_map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_fields_are_parsed_after_console_noise() {
        let f = marker_fields(
            "[  OK  ] Started x.\rSTRATA-READY role=public slot=a root=ro verity=yes boots=1",
        );
        assert_eq!(f["role"], "public");
        assert_eq!(f["boots"], "1");
        assert_eq!(f.len(), 5);
        let f = marker_fields(
            "\rSTRATA-READY role=master slot=a root=ro verity=yes boots=1 user-data=none healthy=yes ready_ms=24310 multi_user_ms=pending",
        );
        assert_eq!(f["ready_ms"], "24310");
        assert_eq!(f["multi_user_ms"], "pending");
        let f = marker_fields(
            "STRATA-BOOT ready_ms=31250 multi_user_ms=19800 firmware_ms=5500 loader_ms=900 kernel_ms=4100 initrd_ms=0 userspace_ms=15700",
        );
        assert_eq!(f["multi_user_ms"], "19800");
        assert_eq!(f["userspace_ms"], "15700");
        assert_eq!(f.len(), 7);
        assert!(marker_fields("[  OK  ] Reached target multi-user.target").is_empty());
    }

    #[test]
    fn macs_are_unique_and_local() {
        let a = unique_mac();
        assert_ne!(a, unique_mac());
        assert!(a.starts_with("52:54:"));
    }

    /// QEMU's arguments for `c`, as one line.
    fn command_line(c: &VmConfig) -> String {
        c.command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn the_command_line_boots_ovmf_with_user_data() {
        let mut c = VmConfig::new("n1", Path::new("/x/disk.qcow2"), Path::new("/tmp/q"));
        c.user_data = Some("/x/ud.toml".into());
        let line = command_line(&c);
        assert!(line.contains("-nodefaults"));
        assert!(line.contains("-fw_cfg name=opt/strata/user-data,file=/x/ud.toml"));
        assert!(line.contains("format=qcow2,file=/x/disk.qcow2"));
        assert!(line.contains("if=pflash,format=raw,unit=1,file=/tmp/q/n1-OVMF_VARS.fd"));
        assert!(!line.contains("id=cfg"));
    }

    #[test]
    fn a_config_disk_is_a_read_only_second_disk() {
        let mut c = VmConfig::new("n1", Path::new("/x/disk.qcow2"), Path::new("/tmp/q"));
        c.config_disk = Some("/x/cfg.iso".into());
        let line = command_line(&c);
        assert!(line.contains("if=none,id=cfg,format=raw,readonly=on,file=/x/cfg.iso"));
        assert!(line.contains("virtio-blk-pci,drive=cfg,addr=0x11"));
        assert!(line.contains("virtio-blk-pci,drive=disk0,bootindex=0"));
        assert!(!line.contains("-fw_cfg"));
    }
}
