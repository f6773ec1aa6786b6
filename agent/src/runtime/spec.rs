//! Building the OCI runtime spec (`config.json`) of a task: pure.

use std::path::Path;

use libcontainer::oci_spec::OciSpecError;
use libcontainer::oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroup,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMappingBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, RootBuilder, Spec, UserBuilder,
};

use super::RunParams;

/// The capabilities every task gets: Docker's default set without
/// CAP_MKNOD (a task that makes device nodes asks for it, `cap_add`; the
/// devices cgroup still lets it open only [`ALLOWED_DEVICES`]).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::AuditWrite,
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::NetBindService,
    Capability::NetRaw,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

/// The capability a task's `cap_add` names (one of
/// `control::task::spec::ADDABLE_CAPABILITIES`, checked when the spec was
/// validated), by an explicit match: a name added to that list without a
/// line here is refused, not mapped to whatever parses.
fn added_capability(name: &str) -> Result<Capability, String> {
    match name {
        "CAP_MKNOD" => Ok(Capability::Mknod),
        other => Err(format!("capability {other:?} cannot be added to a task")),
    }
}

/// CFS period used for CPU limits, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Paths of `/proc` and `/sys` hidden from every task (an empty read-only
/// tmpfs over a directory, /dev/null over a file; paths the kernel does
/// not have are skipped): runc's and Docker's list. They give away the
/// host's hardware, kernel memory and key rings, timers of other
/// processes, and interrupt counts (`/proc/interrupts`, with the per-CPU
/// `thermal_throttle` directories the shim adds, [`build`]'s
/// `host_masked`: a thermal side channel, GHSA-6fw5-f8r9-fgfm).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths of `/proc` every task sees read-only (runc's and Docker's list):
/// the kernel's settings, interrupt routing, the magic SysRq key.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The character devices (major, minor; `None`: every minor) a task may
/// read, write and make, after a rule that denies every device: /dev/null,
/// zero, full, random, urandom, tty, ptmx and the pseudo-terminals.
///
/// libcontainer appends rules of its own after these (libcgroups'
/// `default_devices` and `default_allow_devices`, on cgroup v1 and, with
/// the `cgroupsv2_devices` feature, v2): the same six devices again, `m`
/// (mknod only, no read or write) on every character and block device,
/// /dev/console (5:1) and /dev/net/tun (10:200). A task needs CAP_MKNOD
/// to use the first (`cap_add`) and CAP_NET_ADMIN, which it never has, to
/// attach to the second.
pub const ALLOWED_DEVICES: &[(i64, Option<i64>)] = &[
    (1, Some(3)),
    (1, Some(5)),
    (1, Some(7)),
    (1, Some(8)),
    (1, Some(9)),
    (5, Some(0)),
    (5, Some(2)),
    (136, None),
];

/// The device rules of every task: deny everything, then
/// [`ALLOWED_DEVICES`] with `rwm`.
fn devices() -> Result<Vec<LinuxDeviceCgroup>, OciSpecError> {
    let mut rules = vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .typ(LinuxDeviceType::A)
            .access("rwm")
            .build()?,
    ];
    for &(major, minor) in ALLOWED_DEVICES {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access("rwm");
        if let Some(minor) = minor {
            rule = rule.minor(minor);
        }
        rules.push(rule.build()?);
    }
    Ok(rules)
}

/// The kernel filesystems of every task, written out rather than taken
/// from oci-spec's defaults: /proc without set-uid, exec or devices, /dev
/// a small tmpfs (it must hold device nodes), /sys and the cgroup tree
/// read-only.
fn mounts() -> Result<Vec<Mount>, OciSpecError> {
    let mount = |destination: &str, typ: &str, source: &str, options: &[&str]| {
        MountBuilder::default()
            .destination(destination)
            .typ(typ)
            .source(source)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()
    };
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ])
}

/// Builds the spec for `params`, with the process user already resolved;
/// `host_masked` holds paths of this host masked beside [`MASKED_PATHS`]
/// (the shim lists them: they depend on the host's CPUs). `sysfs` is the
/// sysfs the shim mounted for a task in a user namespace whose network
/// namespace the node made (the task's `/sys`).
pub fn build(
    params: &RunParams,
    rootfs: &Path,
    uid: u32,
    gid: u32,
    host_masked: &[String],
    sysfs: Option<&Path>,
) -> Result<Spec, String> {
    let err = |e: OciSpecError| e.to_string();
    let mut spec = Spec::default();
    spec.set_hostname(Some(params.hostname.clone()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(params.read_only)
            .build()
            .map_err(err)?,
    ));

    let mut caps: std::collections::HashSet<Capability> =
        DEFAULT_CAPABILITIES.iter().copied().collect();
    for name in &params.cap_add {
        caps.insert(added_capability(name)?);
    }
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(err)?;
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_args(Some(params.args.clone()));
    process.set_env(Some(params.env.clone()));
    process.set_cwd(params.cwd.clone().into());
    process.set_user(
        UserBuilder::default()
            .uid(uid)
            .gid(gid)
            .build()
            .map_err(err)?,
    );
    process.set_capabilities(Some(capabilities));
    process.set_no_new_privileges(Some(true));
    process.set_terminal(Some(false));
    spec.set_process(Some(process));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut resources = LinuxResourcesBuilder::default().devices(devices().map_err(err)?);
    if let Some(bytes) = params.memory_bytes {
        let bytes = i64::try_from(bytes).map_err(|_| "memory limit too large".to_string())?;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .build()
                .map_err(err)?,
        );
    }
    if let Some(millis) = params.cpu_millis {
        let quota = i64::try_from(u64::from(millis) * CPU_PERIOD_US / 1000)
            .map_err(|_| "cpu limit too large".to_string())?;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(err)?,
        );
    }
    if let Some(pids) = params.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(pids)
                .build()
                .map_err(err)?,
        );
    }
    linux.set_resources(Some(resources.build().map_err(err)?));
    linux.set_cgroups_path(Some(
        super::names::cgroup_path(&params.cgroup_parent, &params.container_id).into(),
    ));
    linux.set_seccomp(Some(super::seccomp::filter().map_err(err)?));
    linux.set_masked_paths(Some(
        MASKED_PATHS
            .iter()
            .map(|p| p.to_string())
            .chain(host_masked.iter().cloned())
            .collect(),
    ));
    linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|p| p.to_string()).collect()));
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    match (&params.user_ns, &params.netns) {
        (None, Some(netns)) => {
            for ns in &mut namespaces {
                if ns.typ() == LinuxNamespaceType::Network {
                    *ns = LinuxNamespace::default();
                    ns.set_typ(LinuxNamespaceType::Network);
                    ns.set_path(Some(netns.clone()));
                }
            }
        }
        // The shim joined it: the container inherits it.
        (Some(_), Some(_)) => namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network),
        (_, None) => {}
    }
    if let Some(range) = &params.user_ns {
        let mut user = LinuxNamespace::default();
        user.set_typ(LinuxNamespaceType::User);
        namespaces.push(user);
        // One mapping each: libcontainer writes it itself (more would need
        // newuidmap, which the image lacks).
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(range.host_base)
            .size(range.size)
            .build()
            .map_err(err)?;
        linux.set_uid_mappings(Some(vec![map]));
        linux.set_gid_mappings(Some(vec![map]));
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    let mut mounts = mounts().map_err(err)?;
    if let Some(sysfs) = sysfs {
        for m in &mut mounts {
            if m.destination() == Path::new("/sys") {
                *m = MountBuilder::default()
                    .destination("/sys")
                    .typ("bind")
                    .source(sysfs)
                    .options(
                        ["bind", "ro", "nosuid", "nodev", "noexec"]
                            .map(String::from)
                            .to_vec(),
                    )
                    .build()
                    .map_err(err)?;
            }
        }
    }
    if let Some(resolv) = &params.resolv_conf {
        mounts.push(
            MountBuilder::default()
                .destination("/etc/resolv.conf")
                .typ("bind")
                .source(resolv)
                .options(
                    ["rbind", "ro", "nosuid", "nodev", "noexec"]
                        .map(String::from)
                        .to_vec(),
                )
                .build()
                .map_err(err)?,
        );
    }
    spec.set_mounts(Some(mounts));
    Ok(spec)
}

/// Resolves `user` (`uid[:gid]`, or a name in the image's `/etc/passwd`)
/// against the mounted root filesystem. The image's account files are
/// read as [`read_in_root`] reads them: a link in the image cannot point
/// the lookup at the host's files or at a device.
pub fn resolve_user(user: Option<&str>, rootfs: &Path) -> Result<(u32, u32), String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd").unwrap_or_default();
    // name:password:uid:gid:...
    let account = |matches: &dyn Fn(&[&str]) -> bool| -> Option<(u32, u32)> {
        passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 4 && matches(&f)).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let (uid, primary) = match name.parse::<u32>() {
        Ok(uid) => (
            uid,
            account(&|f| f[2].parse::<u32>().ok() == Some(uid)).map_or(uid, |(_, gid)| gid),
        ),
        Err(_) => account(&|f| f[0] == name)
            .ok_or_else(|| format!("user {name:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            // name:password:gid:members
            Err(_) => read_in_root(rootfs, "etc/group")
                .unwrap_or_default()
                .lines()
                .find_map(|line| {
                    let f: Vec<&str> = line.split(':').collect();
                    (f.len() >= 3 && f[0] == g).then(|| f[2].parse::<u32>().ok())?
                })
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// The largest account file (`/etc/passwd`, `/etc/group`) read from an
/// image.
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// The text of `rel` inside the image's root `rootfs`, opened by
/// [`crate::inroot::open_regular`] (inside the image, without blocking);
/// `None` unless it is a regular file, and at most
/// [`MAX_ACCOUNT_FILE`] bytes are read (a link to `/dev/zero` or a huge
/// file cannot exhaust memory).
fn read_in_root(rootfs: &Path, rel: &str) -> Option<String> {
    use std::io::Read as _;

    let root = std::fs::File::open(rootfs).ok()?;
    let file = crate::inroot::open_regular(&root, rel).ok()?;
    let mut text = String::new();
    file.take(MAX_ACCOUNT_FILE).read_to_string(&mut text).ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RunParams {
        RunParams {
            task_id: "web".into(),
            generation: 3,
            container_id: "web.3".into(),
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into(), "A=b".into()],
            cwd: "/srv".into(),
            user: Some("1000:1000".into()),
            read_only: true,
            cpu_millis: Some(500),
            memory_bytes: Some(64 << 20),
            pids: Some(32),
            layers: vec![],
            netns: Some("/var/run/netns/t1".into()),
            resolv_conf: Some("/var/lib/strata/tasks/web/resolv.conf".into()),
            address: Some(std::net::Ipv4Addr::new(10, 200, 1, 2)),
            hostname: "web".into(),
            log_max_bytes: 1 << 20,
            log_keep: 2,
            cgroup_parent: "strata".into(),
            cap_add: vec![],
            user_ns: None,
        }
    }

    /// One line per rule of a seccomp section: its calls (a count for a
    /// long list), action, errno and argument conditions (index, operator,
    /// value, valueTwo).
    fn seccomp_rules(seccomp: &serde_json::Value) -> Vec<String> {
        let rules = seccomp["syscalls"].as_array().cloned().unwrap_or_default();
        rules
            .iter()
            .map(|r| {
                let names: Vec<&str> = r["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str())
                    .collect();
                let names = if names.len() > 3 {
                    format!("{} calls", names.len())
                } else {
                    names.join(",")
                };
                let errno = r
                    .get("errnoRet")
                    .map(|e| format!(" {e}"))
                    .unwrap_or_default();
                let args: Vec<String> = r["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let two = a
                            .get("valueTwo")
                            .and_then(|v| v.as_u64())
                            .map(|v| format!(" {v:#x}"))
                            .unwrap_or_default();
                        format!(
                            " if arg{} {} {:#x}{two}",
                            a["index"],
                            a["op"].as_str().unwrap_or("?"),
                            a["value"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect();
                format!(
                    "{names}: {}{errno}{}",
                    r["action"].as_str().unwrap_or("?"),
                    args.concat()
                )
            })
            .collect()
    }

    /// One line per device rule: allow or deny, type, major:minor, access.
    fn device_rules(devices: &serde_json::Value) -> Vec<String> {
        let number = |n: Option<&serde_json::Value>| n.map_or("*".to_string(), |n| n.to_string());
        devices
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{} {} {}:{} {}",
                    if d["allow"] == true { "allow" } else { "deny" },
                    d["type"].as_str().unwrap_or("?"),
                    number(d.get("major")),
                    number(d.get("minor")),
                    d["access"].as_str().unwrap_or("?")
                )
            })
            .collect()
    }

    /// One line per mount: destination, type, source, options.
    fn mount_lines(mounts: &serde_json::Value) -> Vec<String> {
        mounts
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let options: Vec<&str> = m["options"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o.as_str())
                    .collect();
                format!(
                    "{} {} {} {}",
                    m["destination"].as_str().unwrap_or("?"),
                    m["type"].as_str().unwrap_or("?"),
                    m["source"].as_str().unwrap_or("?"),
                    options.join(",")
                )
            })
            .collect()
    }

    #[test]
    fn spec_carries_limits_caps_and_process() {
        let host_masked = ["/sys/devices/system/cpu/cpu0/thermal_throttle".to_string()];
        let spec = build(
            &params(),
            Path::new("/x/rootfs"),
            1000,
            1000,
            &host_masked,
            None,
        )
        .expect("spec builds");
        let json = serde_json::to_value(&spec).expect("serializes");
        let mut resources = json["linux"]["resources"].clone();
        let devices = resources
            .as_object_mut()
            .and_then(|r| r.remove("devices"))
            .unwrap_or_default();
        let pick = serde_json::json!({
            "root": json["root"],
            "hostname": json["hostname"],
            "process": {
                "args": json["process"]["args"], "env": json["process"]["env"], "cwd": json["process"]["cwd"],
                "user": json["process"]["user"], "noNewPrivileges": json["process"]["noNewPrivileges"],
                "bounding": json["process"]["capabilities"]["bounding"].as_array().map(|a| {
                    let mut v: Vec<String> = a.iter().filter_map(|c| c.as_str().map(String::from)).collect();
                    v.sort();
                    v
                }),
            },
            "resources": resources,
            "devices": device_rules(&devices),
            "cgroupsPath": json["linux"]["cgroupsPath"],
            "namespaces": json["linux"]["namespaces"],
            "maskedPaths": json["linux"]["maskedPaths"],
            "readonlyPaths": json["linux"]["readonlyPaths"],
            "seccomp": {
                "defaultAction": json["linux"]["seccomp"]["defaultAction"],
                "defaultErrnoRet": json["linux"]["seccomp"]["defaultErrnoRet"],
                "architectures": json["linux"]["seccomp"]["architectures"],
                "rules": seccomp_rules(&json["linux"]["seccomp"]),
            },
            "mounts": mount_lines(&json["mounts"]),
        });
        expect_test::expect![[r#"
            {
              "cgroupsPath": "/strata/web.3",
              "devices": [
                "deny a *:* rwm",
                "allow c 1:3 rwm",
                "allow c 1:5 rwm",
                "allow c 1:7 rwm",
                "allow c 1:8 rwm",
                "allow c 1:9 rwm",
                "allow c 5:0 rwm",
                "allow c 5:2 rwm",
                "allow c 136:* rwm"
              ],
              "hostname": "web",
              "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/interrupts",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/sched_debug",
                "/proc/scsi",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/sys/devices/virtual/powercap",
                "/sys/firmware",
                "/sys/devices/system/cpu/cpu0/thermal_throttle"
              ],
              "mounts": [
                "/proc proc proc nosuid,noexec,nodev",
                "/dev tmpfs tmpfs nosuid,strictatime,mode=755,size=65536k",
                "/dev/pts devpts devpts nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5",
                "/dev/shm tmpfs shm nosuid,noexec,nodev,mode=1777,size=65536k",
                "/dev/mqueue mqueue mqueue nosuid,noexec,nodev",
                "/sys sysfs sysfs nosuid,noexec,nodev,ro",
                "/sys/fs/cgroup cgroup cgroup nosuid,noexec,nodev,relatime,ro",
                "/etc/resolv.conf bind /var/lib/strata/tasks/web/resolv.conf rbind,ro,nosuid,nodev,noexec"
              ],
              "namespaces": [
                {
                  "type": "pid"
                },
                {
                  "path": "/var/run/netns/t1",
                  "type": "network"
                },
                {
                  "type": "ipc"
                },
                {
                  "type": "uts"
                },
                {
                  "type": "mount"
                },
                {
                  "type": "cgroup"
                }
              ],
              "process": {
                "args": [
                  "/bin/sh",
                  "-c",
                  "echo hi"
                ],
                "bounding": [
                  "CAP_AUDIT_WRITE",
                  "CAP_CHOWN",
                  "CAP_DAC_OVERRIDE",
                  "CAP_FOWNER",
                  "CAP_FSETID",
                  "CAP_KILL",
                  "CAP_NET_BIND_SERVICE",
                  "CAP_NET_RAW",
                  "CAP_SETFCAP",
                  "CAP_SETGID",
                  "CAP_SETPCAP",
                  "CAP_SETUID",
                  "CAP_SYS_CHROOT"
                ],
                "cwd": "/srv",
                "env": [
                  "PATH=/bin",
                  "A=b"
                ],
                "noNewPrivileges": true,
                "user": {
                  "gid": 1000,
                  "uid": 1000
                }
              },
              "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
              ],
              "resources": {
                "cpu": {
                  "period": 100000,
                  "quota": 50000
                },
                "memory": {
                  "limit": 67108864
                },
                "pids": {
                  "limit": 32
                }
              },
              "root": {
                "path": "/x/rootfs",
                "readonly": true
              },
              "seccomp": {
                "architectures": [
                  "SCMP_ARCH_X86_64",
                  "SCMP_ARCH_X86",
                  "SCMP_ARCH_X32"
                ],
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 1,
                "rules": [
                  "350 calls: SCMP_ACT_ALLOW",
                  "socket: SCMP_ACT_ALLOW if arg0 SCMP_CMP_LT 0x26",
                  "socket: SCMP_ACT_ALLOW if arg0 SCMP_CMP_EQ 0x27",
                  "socket: SCMP_ACT_ALLOW if arg0 SCMP_CMP_EQ 0x29",
                  "socket: SCMP_ACT_ALLOW if arg0 SCMP_CMP_MASKED_EQ 0x2a 0xfffffffffffffffe",
                  "socket: SCMP_ACT_ALLOW if arg0 SCMP_CMP_MASKED_EQ 0x2c 0xfffffffffffffffc",
                  "socket: SCMP_ACT_ALLOW if arg0 SCMP_CMP_MASKED_EQ 0x30 0xfffffffffffffff0",
                  "personality: SCMP_ACT_ALLOW if arg0 SCMP_CMP_EQ 0x0",
                  "personality: SCMP_ACT_ALLOW if arg0 SCMP_CMP_EQ 0x8",
                  "personality: SCMP_ACT_ALLOW if arg0 SCMP_CMP_EQ 0x20000",
                  "personality: SCMP_ACT_ALLOW if arg0 SCMP_CMP_EQ 0x20008",
                  "personality: SCMP_ACT_ALLOW if arg0 SCMP_CMP_EQ 0xffffffff",
                  "clone: SCMP_ACT_ALLOW if arg0 SCMP_CMP_MASKED_EQ 0x0 0x7e020000",
                  "clone3: SCMP_ACT_ERRNO 38"
                ]
              }
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&pick).expect("json"));
    }

    /// A task asks for CAP_MKNOD by name; every name a spec may add maps to
    /// a capability, and no other does.
    #[test]
    fn added_capabilities() {
        let mut p = params();
        p.cap_add = vec!["CAP_MKNOD".into()];
        let spec = build(&p, Path::new("/x/rootfs"), 0, 0, &[], None).expect("spec builds");
        let caps = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone())
            .expect("capabilities");
        for set in [caps.bounding(), caps.effective(), caps.permitted()] {
            assert!(
                set.as_ref().is_some_and(|s| s.contains(&Capability::Mknod)),
                "{set:?}"
            );
        }
        for name in control::task::spec::ADDABLE_CAPABILITIES {
            assert!(added_capability(name).is_ok(), "{name} does not map");
        }
        p.cap_add = vec!["CAP_SYS_ADMIN".into()];
        assert_eq!(
            build(&p, Path::new("/x/rootfs"), 0, 0, &[], None).expect_err("refused"),
            "capability \"CAP_SYS_ADMIN\" cannot be added to a task"
        );
    }

    /// A task in a user namespace: a user namespace with one mapping of
    /// its range, and, with a network namespace the node made, none in the
    /// spec (the shim joined it) and the shim's sysfs as `/sys`.
    #[test]
    fn a_user_namespace_maps_the_range_and_inherits_the_network() {
        let mut p = params();
        p.user_ns = Some(super::super::idmap::IdRange {
            host_base: 1 << 20,
            size: 65536,
        });
        let spec = build(
            &p,
            Path::new("/x/rootfs"),
            0,
            0,
            &[],
            Some(Path::new("/x/sysfs")),
        )
        .expect("spec builds");
        let linux = spec.linux().as_ref().expect("linux");
        let pick = serde_json::json!({
            "namespaces": linux.namespaces(),
            "uidMappings": linux.uid_mappings(),
            "gidMappings": linux.gid_mappings(),
            "sys": spec.mounts().as_ref().and_then(|m| m.iter().find(|m| m.destination() == Path::new("/sys"))),
        });
        expect_test::expect![[r#"
            {
              "gidMappings": [
                {
                  "containerID": 0,
                  "hostID": 1048576,
                  "size": 65536
                }
              ],
              "namespaces": [
                {
                  "type": "pid"
                },
                {
                  "type": "ipc"
                },
                {
                  "type": "uts"
                },
                {
                  "type": "mount"
                },
                {
                  "type": "cgroup"
                },
                {
                  "type": "user"
                }
              ],
              "sys": {
                "destination": "/sys",
                "options": [
                  "bind",
                  "ro",
                  "nosuid",
                  "nodev",
                  "noexec"
                ],
                "source": "/x/sysfs",
                "type": "bind"
              },
              "uidMappings": [
                {
                  "containerID": 0,
                  "hostID": 1048576,
                  "size": 65536
                }
              ]
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&pick).expect("json"));
        // Without a network namespace of the node's, the container makes
        // its own inside the user namespace, and mounts its own sysfs.
        p.netns = None;
        let spec = build(&p, Path::new("/x/rootfs"), 0, 0, &[], None).expect("spec builds");
        let types: Vec<String> = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .map(|n| format!("{:?}", n.typ()))
            .collect();
        expect_test::expect!["Pid Network Ipc Uts Mount Cgroup User"].assert_eq(&types.join(" "));
    }

    #[test]
    fn users_resolve_from_the_image() {
        let dir = std::env::temp_dir().join(format!("strata-user-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).expect("mkdir");
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n",
        )
        .expect("passwd");
        std::fs::write(dir.join("etc/group"), "root:x:0:\nstaff:x:50:\n").expect("group");
        let got: Vec<String> = [
            None,
            Some("www"),
            Some("33"),
            Some("www:staff"),
            Some("7:8"),
            Some("nobody"),
            Some("www:nogroup"),
        ]
        .into_iter()
        .map(|u| format!("{u:?} -> {:?}", resolve_user(u, &dir)))
        .collect();
        let _ = std::fs::remove_dir_all(&dir);
        expect_test::expect![[r#"
            [
                "None -> Ok((0, 0))",
                "Some(\"www\") -> Ok((33, 34))",
                "Some(\"33\") -> Ok((33, 34))",
                "Some(\"www:staff\") -> Ok((33, 50))",
                "Some(\"7:8\") -> Ok((7, 8))",
                "Some(\"nobody\") -> Err(\"user \\\"nobody\\\" is not in the image's /etc/passwd\")",
                "Some(\"www:nogroup\") -> Err(\"group \\\"nogroup\\\" is not in the image's /etc/group\")",
            ]
        "#]]
        .assert_debug_eq(&got);
    }

    /// A link in the image resolves inside the image: an absolute or a
    /// climbing link to a host file, or one to a device, finds nothing
    /// (before, the shim read the host's file, or `/dev/zero` forever).
    #[test]
    fn account_files_are_read_inside_the_image_only() {
        use std::os::unix::fs::symlink;
        let base = tempfile::tempdir().expect("tempdir");
        let outside = base.path().join("outside");
        std::fs::write(&outside, "evil:x:4242:4242::/:/bin/sh\nwheel:x:4243:\n").expect("outside");
        let root = base.path().join("root");
        std::fs::create_dir_all(root.join("etc")).expect("etc");
        let passwd = root.join("etc/passwd");
        let group = root.join("etc/group");
        symlink(&outside, &passwd).expect("absolute link");
        symlink("/dev/zero", &group).expect("device link");
        let check = |user: &str| format!("{:?}", resolve_user(Some(user), &root));
        assert_eq!(
            check("evil"),
            r#"Err("user \"evil\" is not in the image's /etc/passwd")"#
        );
        assert_eq!(
            check("0:wheel"),
            r#"Err("group \"wheel\" is not in the image's /etc/group")"#
        );
        std::fs::remove_file(&passwd).expect("rm");
        symlink("../../outside", &passwd).expect("climbing link");
        assert_eq!(
            check("evil"),
            r#"Err("user \"evil\" is not in the image's /etc/passwd")"#
        );
        std::fs::write(root.join("accounts"), "app:x:7:8::/:/bin/sh\n").expect("accounts");
        std::fs::remove_file(&passwd).expect("rm");
        symlink("/accounts", &passwd).expect("link inside the image");
        assert_eq!(check("app"), "Ok((7, 8))");
    }
}
