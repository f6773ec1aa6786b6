//! The seccomp filter of every task: pure, built into the spec by
//! [`super::spec::build`] and loaded by libcontainer (a task's init) or by
//! the shim's executor (processes of `strata task exec`).
//!
//! An allow-list, as Docker's default profile is: a call the filter does
//! not name is refused with EPERM, so a system call the kernel gains later
//! is refused until it is listed here. What it allows is
//! [`ALLOWED_SYSCALLS`] and, by rules on their arguments, `socket` (not
//! AF_ALG, AF_VSOCK), `personality` (the values of [`PERSONALITIES`]) and
//! `clone` (no namespace flag, [`CLONE_NAMESPACE_MASK`]); `clone3` gets
//! ENOSYS. [`DENIED_SYSCALLS`] is the part of the refused rest that the
//! host tier's probe (`agent/tests/probe/syscalls.c`) calls to show it is
//! refused.

use libcontainer::oci_spec::OciSpecError;
use libcontainer::oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// The system calls every task may make without conditions, after
/// Docker's default profile: none of [`DENIED_SYSCALLS`], none that Docker
/// allows only with a capability a task lacks (`get_mempolicy`,
/// `pidfd_getfd`, ...), and not `clone`, `clone3`, `socket` and
/// `personality`, which have rules of their own ([`filter`]). Names of
/// every x86 ABI (the i386-only ones, `_llseek`, `mmap2`, `socketcall`,
/// ..., included: the filter covers the 32-bit ABIs); a name the native
/// ABI lacks is resolved for the others by libseccomp. Sorted, so that a
/// diff shows what changed. `adjtimex` is here (without CAP_SYS_TIME it
/// only reads the clock's state); `clock_adjtime` is not (it is denied).
pub const ALLOWED_SYSCALLS: &[&str] = &[
    "_llseek",
    "_newselect",
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "arch_prctl",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "chroot",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "get_robust_list",
    "get_thread_area",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_setup",
    "io_submit",
    "ioctl",
    "ioprio_get",
    "ioprio_set",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "modify_ldt",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "set_robust_list",
    "set_thread_area",
    "set_tid_address",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "setsid",
    "setsockopt",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// System calls every task is refused (EPERM) that the host tier's probe
/// (`agent/tests/probe/syscalls.c`) calls, by class: namespaces (`clone`
/// and `clone3` are refused only with namespace flags, by rules of their
/// own), mounts, kernel code (modules and kexec), administration (reboot,
/// swap, process accounting, quotas), clocks, key rings, BPF and perf,
/// other processes (tracing, their memory), userfaultfd, io_uring, file
/// handles, and obsolete calls (i386-only ones included). None of them is
/// in [`ALLOWED_SYSCALLS`] (a unit test), so the filter's default refuses
/// them: no rule names them (a rule whose action is the default one would
/// be skipped by libcontainer anyway).
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

/// The namespace flags of `clone` (linux/sched.h): CLONE_NEWNS
/// (0x0002_0000), CLONE_NEWCGROUP (0x0200_0000), CLONE_NEWUTS, CLONE_NEWIPC,
/// CLONE_NEWUSER, CLONE_NEWPID and CLONE_NEWNET (0x0400_0000 to
/// 0x4000_0000). CLONE_NEWTIME is not among them: `clone` has no room for
/// it (0x80 is in its exit-signal byte), only `unshare` and `clone3` take
/// it. Docker's profile uses the same mask.
pub const CLONE_NAMESPACE_MASK: u64 = 0x7E02_0000;

/// The values `personality` may be called with (Docker's): PER_LINUX,
/// PER_LINUX32, UNAME26, PER_LINUX32 | UNAME26, and 0xffffffff, which only
/// reads the current one.
pub const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The families `socket` may create, as rules on its first argument
/// (operator, value, mask): every family but AF_ALG (38, the kernel's
/// crypto API) and AF_VSOCK (40, sockets to the hypervisor). Below 38 and
/// 39 (AF_NFC) by value; above 40 as 41 to 63 (AF_KCM, AF_QIPCRTR, AF_SMC,
/// AF_XDP, AF_MCTP; the kernel has none above 45 yet), by masks, not as
/// "greater than 40": the family is an `int`, the kernel drops the upper
/// half of the register, and a 64-bit comparison would let
/// `(1 << 32) | 38`, AF_ALG, through (the probe's `socket_af_alg_high`).
/// A family of 64 or more, or a negative one, is refused (EPERM) instead
/// of the kernel's EAFNOSUPPORT.
const SOCKET_FAMILIES: &[(LinuxSeccompOperator, u64, Option<u64>)] = &[
    (LinuxSeccompOperator::ScmpCmpLt, 38, None),
    (LinuxSeccompOperator::ScmpCmpEq, 39, None),
    (LinuxSeccompOperator::ScmpCmpEq, 41, None),
    (LinuxSeccompOperator::ScmpCmpMaskedEq, 42, Some(!0x1)),
    (LinuxSeccompOperator::ScmpCmpMaskedEq, 44, Some(!0x3)),
    (LinuxSeccompOperator::ScmpCmpMaskedEq, 48, Some(!0xf)),
];

/// The errno of refused calls.
const EPERM: u32 = libc::EPERM as u32;
/// The errno of `clone3`: "no such call", so that callers fall back to `clone`.
const ENOSYS: u32 = libc::ENOSYS as u32;

/// A rule allowing `name` when its first argument satisfies `op` with
/// `value` (and, for SCMP_CMP_MASKED_EQ, the mask `mask`).
///
/// libcontainer reads SCMP_CMP_MASKED_EQ as `(arg & valueTwo) == value`
/// (it hands valueTwo to libseccomp as the mask and value as the datum),
/// runc the other way round (`(arg & value) == valueTwo`), so this spec
/// is for libcontainer: the mask goes in valueTwo.
fn allow_if(
    name: &str,
    op: LinuxSeccompOperator,
    value: u64,
    mask: Option<u64>,
) -> Result<LinuxSyscall, OciSpecError> {
    let mut arg = LinuxSeccompArgBuilder::default()
        .index(0usize)
        .value(value)
        .op(op);
    if let Some(mask) = mask {
        arg = arg.value_two(mask);
    }
    LinuxSyscallBuilder::default()
        .names(vec![name.to_string()])
        .action(LinuxSeccompAction::ScmpActAllow)
        .args(vec![arg.build()?])
        .build()
}

/// The seccomp filter of every task, on the native and the 32-bit x86
/// ABIs: refuse with EPERM by default; allow [`ALLOWED_SYSCALLS`];
/// `socket` for the families of [`SOCKET_FAMILIES`]; `personality` for
/// [`PERSONALITIES`]; `clone` without any flag of [`CLONE_NAMESPACE_MASK`];
/// and refuse `clone3` with ENOSYS.
///
/// Refusing `unshare` and `setns` alone would leave a new namespace one
/// `clone(CLONE_NEWUSER)` away, and an unprivileged user of a task would
/// get every capability inside it. `clone` takes its flags by value
/// (argument 0 on every x86 ABI), so one masked comparison allows it only
/// without namespace flags, and fork and threads, which use none of them,
/// go through. `clone3` takes its flags in a struct, which seccomp cannot
/// read, so it is refused whole, as Docker does; with ENOSYS, not EPERM:
/// glibc (2.34 and later) creates threads with `clone3` and falls back to
/// `clone` only on ENOSYS, so EPERM would break `pthread_create`.
///
/// The 32-bit ABI reaches sockets through `socketcall`, whose arguments
/// are in memory that seccomp cannot read: it is allowed whole, as in
/// Docker's profile, so the family rule holds for 64-bit programs only.
pub fn filter() -> Result<LinuxSeccomp, OciSpecError> {
    let mut syscalls: Vec<LinuxSyscall> = vec![
        LinuxSyscallBuilder::default()
            .names(
                ALLOWED_SYSCALLS
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            )
            .action(LinuxSeccompAction::ScmpActAllow)
            .build()?,
    ];
    for &(op, value, mask) in SOCKET_FAMILIES {
        syscalls.push(allow_if("socket", op, value, mask)?);
    }
    for &persona in PERSONALITIES {
        syscalls.push(allow_if(
            "personality",
            LinuxSeccompOperator::ScmpCmpEq,
            persona,
            None,
        )?);
    }
    // `(flags & CLONE_NAMESPACE_MASK) == 0`.
    syscalls.push(allow_if(
        "clone",
        LinuxSeccompOperator::ScmpCmpMaskedEq,
        0,
        Some(CLONE_NAMESPACE_MASK),
    )?);
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build()?,
    );
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use libseccomp::{ScmpArch, ScmpSyscall};

    use super::*;

    /// A misspelt name would be skipped by libcontainer without a word (and
    /// the call refused): every allowed name must be a system call
    /// libseccomp resolves, as libcontainer resolves it (by name, for the
    /// native ABI; a call of the 32-bit ABIs only resolves to a pseudo
    /// number that libseccomp maps for each ABI of the filter).
    #[test]
    fn every_allowed_call_is_a_system_call() {
        let unknown: Vec<&str> = ALLOWED_SYSCALLS
            .iter()
            .copied()
            .chain(["clone", "clone3", "socket", "personality"])
            .filter(|name| ScmpSyscall::from_name(name).is_err())
            .collect();
        assert!(unknown.is_empty(), "not system calls: {unknown:?}");
    }

    /// The probe shows each denied call refused: each must be a system
    /// call of x86-64 or of its 32-bit ABI, as libseccomp knows them.
    #[test]
    fn every_denied_call_is_a_system_call() {
        let unknown: Vec<&str> = DENIED_SYSCALLS
            .iter()
            .copied()
            .filter(|name| {
                ScmpSyscall::from_name_by_arch(name, ScmpArch::X8664).is_err()
                    && ScmpSyscall::from_name_by_arch(name, ScmpArch::X86).is_err()
            })
            .collect();
        assert!(unknown.is_empty(), "not system calls: {unknown:?}");
    }

    #[test]
    fn the_lists_are_sorted_unique_and_apart() {
        assert!(
            ALLOWED_SYSCALLS.windows(2).all(|w| w[0] < w[1]),
            "ALLOWED_SYSCALLS is not sorted or has a name twice"
        );
        let allowed: BTreeSet<&str> = ALLOWED_SYSCALLS.iter().copied().collect();
        let both: Vec<&str> = DENIED_SYSCALLS
            .iter()
            .copied()
            .filter(|n| allowed.contains(n))
            .collect();
        assert!(both.is_empty(), "allowed and denied: {both:?}");
        let ruled: Vec<&str> = ["clone", "clone3", "socket", "personality"]
            .into_iter()
            .filter(|n| allowed.contains(n))
            .collect();
        assert!(
            ruled.is_empty(),
            "calls with argument rules allowed without them: {ruled:?}"
        );
    }

    /// The families the rules of `socket` let through, among 0 to 127 and
    /// with bit 32 set: everything below 64 but AF_ALG and AF_VSOCK, and
    /// nothing with the upper half set.
    #[test]
    fn socket_families() {
        let passes = |family: u64| {
            SOCKET_FAMILIES.iter().any(|&(op, value, mask)| match op {
                LinuxSeccompOperator::ScmpCmpLt => family < value,
                LinuxSeccompOperator::ScmpCmpEq => family == value,
                LinuxSeccompOperator::ScmpCmpMaskedEq => (family & mask.expect("a mask")) == value,
                _ => panic!("unexpected operator {op:?}"),
            })
        };
        let refused: Vec<u64> = (0..64).filter(|f| !passes(*f)).collect();
        assert_eq!(refused, [38, 40]);
        assert!((64..128).all(|f| !passes(f)));
        assert!((0..64).all(|f| !passes((1 << 32) | f)));
    }
}
