//! Building the OCI runtime spec (`config.json`) of a task: pure.

use std::path::Path;

use libcontainer::oci_spec::runtime::{
    Arch, Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder,
    LinuxNamespace, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccomp,
    LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscall, LinuxSyscallBuilder, MountBuilder, RootBuilder, Spec, UserBuilder,
};

use super::RunParams;

/// The capabilities every task gets (Docker's default set, with CAP_NET_RAW).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::AuditWrite,
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Mknod,
    Capability::NetBindService,
    Capability::NetRaw,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

/// CFS period used for CPU limits, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

/// System calls every task is refused (EPERM) by its seccomp filter, by
/// class (the classes of the host tier's probe, `agent/tests/probe/syscalls.c`,
/// which calls each of them): namespaces (`clone` and `clone3` are refused
/// only with namespace flags, by rules of their own), mounts, kernel
/// code (modules and kexec), administration (reboot, swap, process
/// accounting, quotas), clocks, key rings, BPF and perf, other processes
/// (tracing, their memory), userfaultfd, io_uring, file handles, and
/// obsolete calls (i386-only ones included: the filter covers the 32-bit
/// ABIs). Everything else is allowed: a deny list over the capability set,
/// so workloads that run under Docker's default profile run here (names the
/// kernel does not know are skipped by libcontainer).
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// The namespace flags of `clone` (linux/sched.h). CLONE_NEWTIME is not
/// among them: `clone` has no room for it (0x80 is in its exit-signal
/// byte), only `unshare` and `clone3` take it.
pub const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

/// The errno of refused calls.
const EPERM: u32 = libc::EPERM as u32;
/// The errno of `clone3`: "no such call", so that callers fall back to `clone`.
const ENOSYS: u32 = libc::ENOSYS as u32;

/// The seccomp filter of every task: allow by default, refuse
/// [`DENIED_SYSCALLS`], and `clone` with any of [`CLONE_NAMESPACE_FLAGS`],
/// with EPERM, and `clone3` with ENOSYS, on the native and the 32-bit x86
/// ABIs.
///
/// Refusing `unshare` and `setns` alone would leave a new namespace one
/// `clone(CLONE_NEWUSER)` away, and an unprivileged user of a task would
/// get every capability inside it. `clone` takes its flags by value
/// (argument 0 on every x86 ABI), so one rule per flag refuses it when that
/// flag is set (rules of one call are ORed), and fork and threads, which
/// use none of them, go through. `clone3` takes its flags in a struct,
/// which seccomp cannot read, so it is refused whole, as Docker does; with
/// ENOSYS, not EPERM: glibc (2.34 and later) creates threads with `clone3`
/// and falls back to `clone` only on ENOSYS, so EPERM would break
/// `pthread_create`.
fn seccomp() -> Result<LinuxSeccomp, libcontainer::oci_spec::OciSpecError> {
    let mut syscalls: Vec<LinuxSyscall> = vec![
        LinuxSyscallBuilder::default()
            .names(
                DENIED_SYSCALLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(EPERM)
            .build()?,
    ];
    for &flag in CLONE_NAMESPACE_FLAGS {
        // `flags & FLAG == FLAG`. value and valueTwo are both the flag:
        // runc reads SCMP_CMP_MASKED_EQ as (arg & value) == valueTwo and
        // libcontainer as (arg & valueTwo) == value, and with equal values
        // both read the same.
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()?;
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(EPERM)
                .args(vec![arg])
                .build()?,
        );
    }
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build()?,
    );
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
}

/// Builds the spec for `params`, with the process user already resolved.
pub fn build(params: &RunParams, rootfs: &Path, uid: u32, gid: u32) -> Result<Spec, String> {
    let err = |e: libcontainer::oci_spec::OciSpecError| e.to_string();
    let mut spec = Spec::default();
    spec.set_hostname(Some(params.hostname.clone()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs)
            .readonly(params.read_only)
            .build()
            .map_err(err)?,
    ));

    let caps: std::collections::HashSet<Capability> =
        DEFAULT_CAPABILITIES.iter().copied().collect();
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
    let mut resources = LinuxResourcesBuilder::default();
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
    linux.set_seccomp(Some(seccomp().map_err(err)?));
    if let Some(netns) = &params.netns {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        for ns in &mut namespaces {
            if ns.typ() == LinuxNamespaceType::Network {
                *ns = LinuxNamespace::default();
                ns.set_typ(LinuxNamespaceType::Network);
                ns.set_path(Some(netns.clone()));
            }
        }
        linux.set_namespaces(Some(namespaces));
    }
    spec.set_linux(Some(linux));
    if let Some(resolv) = &params.resolv_conf {
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.push(
            MountBuilder::default()
                .destination("/etc/resolv.conf")
                .typ("bind")
                .source(resolv)
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .map_err(err)?,
        );
        spec.set_mounts(Some(mounts));
    }
    Ok(spec)
}

/// Resolves `user` (`uid[:gid]`, or a name in the image's `/etc/passwd`)
/// against the mounted root filesystem.
pub fn resolve_user(user: Option<&str>, rootfs: &Path) -> Result<(u32, u32), String> {
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return Ok((0, 0));
    };
    let (name, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let lookup = |file: &str, key: &str| -> Option<(u32, u32)> {
        let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() >= 4 && f[0] == key).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let (uid, primary) = match name.parse::<u32>() {
        Ok(uid) => (uid, lookup_uid(rootfs, uid).unwrap_or(uid)),
        Err(_) => lookup("etc/passwd", name)
            .ok_or_else(|| format!("user {name:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => lookup("etc/group", g)
                .map(|(gid, _)| gid)
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

fn lookup_uid(rootfs: &Path, uid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[3].parse().ok())?
    })
}

#[cfg(test)]
mod tests {

    /// A misspelt name would be skipped by libcontainer without a word:
    /// every denied call must be a system call of x86-64 or of its 32-bit
    /// ABI, as libseccomp knows them.
    #[test]
    fn every_denied_call_is_a_system_call() {
        use libseccomp::{ScmpArch, ScmpSyscall};
        let unknown: Vec<&str> = DENIED_SYSCALLS
            .iter()
            .copied()
            .chain(["clone", "clone3"])
            .filter(|name| {
                ScmpSyscall::from_name_by_arch(name, ScmpArch::X8664).is_err()
                    && ScmpSyscall::from_name_by_arch(name, ScmpArch::X86).is_err()
            })
            .collect();
        assert!(unknown.is_empty(), "not system calls: {unknown:?}");
    }
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
                let args: Vec<String> = r["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        format!(
                            " if arg{} {} {:#x} {:#x}",
                            a["index"],
                            a["op"].as_str().unwrap_or("?"),
                            a["value"].as_u64().unwrap_or(0),
                            a["valueTwo"].as_u64().unwrap_or(0)
                        )
                    })
                    .collect();
                format!(
                    "{names}: {} {}{}",
                    r["action"].as_str().unwrap_or("?"),
                    r["errnoRet"],
                    args.concat()
                )
            })
            .collect()
    }

    #[test]
    fn spec_carries_limits_caps_and_process() {
        let spec = build(&params(), Path::new("/x/rootfs"), 1000, 1000).expect("spec builds");
        let json = serde_json::to_value(&spec).expect("serializes");
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
            "resources": json["linux"]["resources"],
            "cgroupsPath": json["linux"]["cgroupsPath"],
            "namespaces": json["linux"]["namespaces"],
            "seccomp": {
                "defaultAction": json["linux"]["seccomp"]["defaultAction"],
                "architectures": json["linux"]["seccomp"]["architectures"],
                "rules": seccomp_rules(&json["linux"]["seccomp"]),
            },
            "resolv": json["mounts"].as_array().and_then(|m| m.iter().find(|m| m["destination"] == "/etc/resolv.conf")),
        });
        expect_test::expect![[r#"
            {
              "cgroupsPath": "/strata/web.3",
              "hostname": "web",
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
                  "CAP_MKNOD",
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
              "resolv": {
                "destination": "/etc/resolv.conf",
                "options": [
                  "rbind",
                  "ro"
                ],
                "source": "/var/lib/strata/tasks/web/resolv.conf",
                "type": "bind"
              },
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
                "defaultAction": "SCMP_ACT_ALLOW",
                "rules": [
                  "54 calls: SCMP_ACT_ERRNO 1",
                  "clone: SCMP_ACT_ERRNO 1 if arg0 SCMP_CMP_MASKED_EQ 0x20000 0x20000",
                  "clone: SCMP_ACT_ERRNO 1 if arg0 SCMP_CMP_MASKED_EQ 0x2000000 0x2000000",
                  "clone: SCMP_ACT_ERRNO 1 if arg0 SCMP_CMP_MASKED_EQ 0x4000000 0x4000000",
                  "clone: SCMP_ACT_ERRNO 1 if arg0 SCMP_CMP_MASKED_EQ 0x8000000 0x8000000",
                  "clone: SCMP_ACT_ERRNO 1 if arg0 SCMP_CMP_MASKED_EQ 0x10000000 0x10000000",
                  "clone: SCMP_ACT_ERRNO 1 if arg0 SCMP_CMP_MASKED_EQ 0x20000000 0x20000000",
                  "clone: SCMP_ACT_ERRNO 1 if arg0 SCMP_CMP_MASKED_EQ 0x40000000 0x40000000",
                  "clone3: SCMP_ACT_ERRNO 38"
                ]
              }
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&pick).expect("json"));
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
                "Some(\"www:staff\") -> Err(\"group \\\"staff\\\" is not in the image's /etc/group\")",
                "Some(\"7:8\") -> Ok((7, 8))",
                "Some(\"nobody\") -> Err(\"user \\\"nobody\\\" is not in the image's /etc/passwd\")",
                "Some(\"www:nogroup\") -> Err(\"group \\\"nogroup\\\" is not in the image's /etc/group\")",
            ]
        "#]]
        .assert_debug_eq(&got);
    }
}
