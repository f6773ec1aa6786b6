/*
 * The seccomp probe of the host tier (agent/tests/host_runtime.rs).
 *
 * `probe` calls every system call a task's filter refuses, each in a child
 * of its own, and prints one line per call:
 *
 *     <class> <name> <result>
 *
 * where <result> is `ok`, the errno's name (EPERM, ENOSYS, ...) or `signal`
 * when the child was killed. The classes but the last are those of
 * DENIED_SYSCALLS (agent/src/runtime/seccomp.rs), plus clone with a
 * namespace flag and clone3, and the names are those of DENIED_SYSCALLS;
 * the last, `allowlist`, holds harmless calls that are in no list at all
 * (refused because the filter is an allow-list, ALLOWED_SYSCALLS) and the
 * argument rules of `socket` and `personality`.
 *
 * `probe allowed` calls what a task must keep (fork, threads, sockets,
 * a FIFO, the descriptors of event loops, newer calls such as statx,
 * openat2 and close_range, ...), each in a child of its own, and prints
 * `allowed <name> <result>` lines: each must be `ok`, in a task and
 * outside.
 *
 * Every refused call's arguments make an unfiltered kernel answer without
 * doing anything, even for root with every capability: paths that do not
 * exist, invalid flags, NULL pointers, bad magic numbers, pids and file
 * descriptors that cannot exist. The only calls that succeed unfiltered
 * are the namespace ones, which make a user namespace in a throwaway
 * child, and personality and get_mempolicy, which change or read only the
 * throwaway child. Never give a call here an argument the kernel could act
 * on: reboot's magic numbers, kexec_load with no segments (an unload),
 * acct(NULL) (stops accounting), swapoff of a real device, a valid time, a
 * socket family the kernel would load a module for (the socket probes ask
 * for type 15, which the kernel refuses before it looks the family up).
 *
 * Built static (`cc -static -O1 -o probe syscalls.c`, glibc >= 2.32 for
 * strerrorname_np) so that it runs in a busybox image. The i386-only calls
 * go through `int $0x80`, which needs a non-PIE binary (string constants
 * below 4 GiB): a static build without -static-pie is one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Paths, pids and descriptors that do not exist. */
#define NOPATH "/nonexistent-strata-probe"
#define NOPID 0x7ffffff0L
#define NOFD (-1L)
/* A flag bit no call here knows. */
#define BADFLAG 0x40000000UL

/* Numbers of the i386 ABI, reached through int $0x80. */
#define I386_UMOUNT 22
#define I386_VM86OLD 113
#define I386_VM86 166

/* From linux/uapi headers, spelled out to keep the includes small. */
#define PROBE_CLONE_NEWUSER 0x10000000UL
#define PROBE_UFFD_USER_MODE_ONLY 1UL
#define PROBE_Q_GETINFO 0x800005UL
#define PROBE_PTRACE_PEEKDATA 2L
#define PROBE_QCMD(cmd, type) (((cmd) << 8) | ((type) & 0xff))
#define PROBE_AF_ALG 38L
#define PROBE_AF_VSOCK 40L
/* A socket type the kernel refuses (EINVAL) before it looks the family up. */
#define PROBE_BAD_SOCKTYPE 15L
/* PER_BSD: a personality the filter does not allow. */
#define PROBE_PER_BSD 0x0006L
/* PER_QUERY: reads the personality. */
#define PROBE_PER_QUERY 0xffffffffL

/* A 32-bit system call: its pointer arguments must be below 4 GiB. */
static long i386_call(long nr, long a, long b)
{
    long r;
    __asm__ volatile("int $0x80"
                     : "=a"(r)
                     : "a"(nr), "b"(a), "c"(b)
                     : "memory", "r8", "r9", "r10", "r11");
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/* Waits for the child of a namespace probe, which exits at once. */
static long reap(long pid)
{
    if (pid < 0)
        return -1;
    if (pid == 0)
        _exit(0);
    int status;
    waitpid((pid_t)pid, &status, 0);
    return 0;
}

/* clone with CLONE_NEWUSER, as fork (no new stack: the child gets a copy). */
static long probe_clone(void)
{
    return reap(syscall(SYS_clone, PROBE_CLONE_NEWUSER | SIGCHLD, 0L, 0L, 0L, 0L));
}

/* clone3 with CLONE_NEWUSER, as fork. */
static long probe_clone3(void)
{
    struct {
        uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
    } args;
    memset(&args, 0, sizeof args);
    args.flags = PROBE_CLONE_NEWUSER;
    args.exit_signal = SIGCHLD;
    return reap(syscall(SYS_clone3, &args, sizeof args));
}

/* settimeofday with tv_usec out of range: EINVAL before the time is set
 * (glibc's wrapper would refuse it itself, so the call is raw). */
static long probe_settimeofday(void)
{
    static struct { long sec, usec; } bad = { 0, 2000000 };
    return syscall(SYS_settimeofday, &bad, NULL);
}

/*
 * X(class, name, call). The classes are those of DENIED_SYSCALLS' doc
 * comment; the names are the system calls' names there (the host test
 * checks that each of DENIED_SYSCALLS has its probe). The comment before
 * each call says what an unfiltered kernel does with it.
 */
#define PROBES(X) \
    /* A user namespace, in a child that exits at once. */ \
    X(namespace, unshare, syscall(SYS_unshare, PROBE_CLONE_NEWUSER)) \
    /* EBADF. */ \
    X(namespace, setns, syscall(SYS_setns, NOFD, 0L)) \
    X(namespace, clone, probe_clone()) \
    X(namespace, clone3, probe_clone3()) \
    /* ENOENT: the target does not exist (looked up before anything else). */ \
    X(mount, mount, syscall(SYS_mount, "none", NOPATH, "tmpfs", 0UL, NULL)) \
    X(mount, umount, i386_call(I386_UMOUNT, (long)NOPATH, 0)) \
    /* EINVAL for the flags; pivot_root: ENOENT. pivot_root, fsopen, fsmount, \
       fspick and move_mount check CAP_SYS_ADMIN first (EPERM without it). */ \
    X(mount, umount2, syscall(SYS_umount2, NOPATH, BADFLAG)) \
    X(mount, pivot_root, syscall(SYS_pivot_root, NOPATH, NOPATH)) \
    X(mount, fsopen, syscall(SYS_fsopen, "strata-probe", BADFLAG)) \
    X(mount, fsconfig, syscall(SYS_fsconfig, NOFD, 0x7fffL, NULL, NULL, 0L)) \
    X(mount, fsmount, syscall(SYS_fsmount, NOFD, BADFLAG, 0UL)) \
    X(mount, fspick, syscall(SYS_fspick, AT_FDCWD, NOPATH, BADFLAG)) \
    X(mount, move_mount, syscall(SYS_move_mount, AT_FDCWD, NOPATH, AT_FDCWD, NOPATH, BADFLAG)) \
    X(mount, open_tree, syscall(SYS_open_tree, AT_FDCWD, NOPATH, BADFLAG)) \
    /* EINVAL: attribute size 0. */ \
    X(mount, mount_setattr, syscall(SYS_mount_setattr, AT_FDCWD, NOPATH, 0UL, NULL, 0UL)) \
    /* A NULL image (ENOEXEC), a bad descriptor, a module that is not there; \
       create_module, get_kernel_syms and query_module are gone (ENOSYS). */ \
    X(kernel, init_module, syscall(SYS_init_module, NULL, 0UL, "")) \
    X(kernel, finit_module, syscall(SYS_finit_module, NOFD, "", BADFLAG)) \
    X(kernel, delete_module, syscall(SYS_delete_module, "strata_probe_none", (long)O_NONBLOCK)) \
    X(kernel, create_module, syscall(SYS_create_module, NULL, 0UL)) \
    X(kernel, get_kernel_syms, syscall(SYS_get_kernel_syms, NULL)) \
    X(kernel, query_module, syscall(SYS_query_module, NULL, 0L, NULL, 0UL, NULL)) \
    /* EINVAL: too many segments and unknown flags (0 segments would unload). */ \
    X(kernel, kexec_load, syscall(SYS_kexec_load, 0UL, 1000UL, NULL, 0x8000UL)) \
    X(kernel, kexec_file_load, syscall(SYS_kexec_file_load, NOFD, NOFD, 0UL, NULL, BADFLAG)) \
    /* reboot: EPERM without CAP_SYS_BOOT, else EINVAL for magic1 = 0 (and \
       the command is none of LINUX_REBOOT_CMD_*). */ \
    X(admin, reboot, syscall(SYS_reboot, 0L, 0L, 0x5afe5afeL, NULL)) \
    /* EINVAL for the flags, checked before the capability. */ \
    X(admin, swapon, syscall(SYS_swapon, NOPATH, BADFLAG)) \
    /* EPERM without CAP_SYS_ADMIN / CAP_SYS_PACCT, else ENOENT (acct(NULL) \
       would stop accounting). */ \
    X(admin, swapoff, syscall(SYS_swapoff, NOPATH)) \
    X(admin, acct, syscall(SYS_acct, NOPATH)) \
    /* ENODEV: Q_GETINFO (a read) of no device. */ \
    X(admin, quotactl, syscall(SYS_quotactl, PROBE_QCMD(PROBE_Q_GETINFO, 0UL), NULL, 0L, NULL)) \
    /* EINVAL for tv_usec, EFAULT for the NULL time, before any capability. */ \
    X(clock, settimeofday, probe_settimeofday()) \
    X(clock, clock_settime, syscall(SYS_clock_settime, (long)CLOCK_REALTIME, NULL)) \
    X(clock, clock_adjtime, syscall(SYS_clock_adjtime, (long)CLOCK_REALTIME, NULL)) \
    /* EINVAL for keyring 0, EOPNOTSUPP, ENOKEY for a type that is not there. */ \
    X(keyring, add_key, syscall(SYS_add_key, "user", "strata-probe", NULL, 0UL, 0L)) \
    X(keyring, keyctl, syscall(SYS_keyctl, 0x7fffL, 0L, 0L, 0L, 0L)) \
    X(keyring, request_key, syscall(SYS_request_key, "strata-probe-none", "strata-probe", NULL, 0L)) \
    /* EINVAL for the command, EFAULT for the NULL attributes. */ \
    X(bpf, bpf, syscall(SYS_bpf, 0x7fffL, NULL, 0UL)) \
    X(bpf, perf_event_open, syscall(SYS_perf_event_open, NULL, 0L, -1L, -1L, 0UL)) \
    /* ESRCH, or EINVAL for the flags. */ \
    X(process, ptrace, syscall(SYS_ptrace, PROBE_PTRACE_PEEKDATA, NOPID, 0L, 0L)) \
    X(process, process_vm_readv, syscall(SYS_process_vm_readv, NOPID, NULL, 0UL, NULL, 0UL, BADFLAG)) \
    X(process, process_vm_writev, syscall(SYS_process_vm_writev, NOPID, NULL, 0UL, NULL, 0UL, BADFLAG)) \
    X(process, kcmp, syscall(SYS_kcmp, NOPID, NOPID, 0L, 0UL, 0UL)) \
    /* EINVAL: O_RDWR is no userfaultfd flag (user-mode-only needs no \
       capability on 5.11 and later). */ \
    X(uffd, userfaultfd, syscall(SYS_userfaultfd, PROBE_UFFD_USER_MODE_ONLY | (long)O_RDWR)) \
    /* EFAULT for the NULL parameters, EBADF, EINVAL. */ \
    X(io_uring, io_uring_setup, syscall(SYS_io_uring_setup, 0UL, NULL)) \
    X(io_uring, io_uring_enter, syscall(SYS_io_uring_enter, NOFD, 0UL, 0UL, 0UL, NULL, 0UL)) \
    X(io_uring, io_uring_register, syscall(SYS_io_uring_register, NOFD, 0UL, NULL, 0UL)) \
    /* ENOENT, and EFAULT (or EBADF, or EPERM without CAP_DAC_READ_SEARCH). */ \
    X(handle, name_to_handle_at, syscall(SYS_name_to_handle_at, AT_FDCWD, NOPATH, NULL, NULL, 0L)) \
    X(handle, open_by_handle_at, syscall(SYS_open_by_handle_at, NOFD, NULL, 0L)) \
    /* EINVAL (no ports, level 4, unknown option, no such device) or ENOSYS \
       where the kernel has no such call (vm86 and vm86old on 64-bit ones). */ \
    X(legacy, ioperm, syscall(SYS_ioperm, 0UL, 0UL, 0L)) \
    X(legacy, iopl, syscall(SYS_iopl, 4L)) \
    X(legacy, lookup_dcookie, syscall(SYS_lookup_dcookie, 0UL, NULL, 0UL)) \
    X(legacy, nfsservctl, syscall(SYS_nfsservctl, 0L, NULL, NULL)) \
    X(legacy, sysfs, syscall(SYS_sysfs, 99L, 0UL, 0UL)) \
    X(legacy, _sysctl, syscall(SYS__sysctl, NULL)) \
    X(legacy, uselib, syscall(SYS_uselib, NOPATH)) \
    X(legacy, ustat, syscall(SYS_ustat, 0UL, NULL)) \
    X(legacy, vm86old, i386_call(I386_VM86OLD, 0, 0)) \
    X(legacy, vm86, i386_call(I386_VM86, 0x5afeL, 0)) \
    /* In no list: refused by the allow-list's default. get_mempolicy reads \
       the child's policy (0); pidfd_getfd and process_madvise: EBADF; \
       personality(PER_BSD) changes the child's personality. */ \
    X(allowlist, get_mempolicy, syscall(SYS_get_mempolicy, NULL, NULL, 0UL, NULL, 0UL)) \
    X(allowlist, pidfd_getfd, syscall(SYS_pidfd_getfd, NOFD, NOFD, 0UL)) \
    X(allowlist, process_madvise, syscall(SYS_process_madvise, NOFD, NULL, 0UL, 0L, 0UL)) \
    X(allowlist, personality, syscall(SYS_personality, PROBE_PER_BSD)) \
    /* EINVAL for the type: AF_ALG and AF_VSOCK are the families `socket` \
       refuses; the third is AF_ALG with bit 32 set, which the kernel drops \
       (the family is an int) and a 64-bit comparison would not. */ \
    X(allowlist, socket_af_alg, syscall(SYS_socket, PROBE_AF_ALG, PROBE_BAD_SOCKTYPE, 0L)) \
    X(allowlist, socket_af_vsock, syscall(SYS_socket, PROBE_AF_VSOCK, PROBE_BAD_SOCKTYPE, 0L)) \
    X(allowlist, socket_af_alg_high, syscall(SYS_socket, (1L << 32) | PROBE_AF_ALG, PROBE_BAD_SOCKTYPE, 0L))

struct probe {
    const char *class, *name;
};

#define ENTRY(class, name, call) { #class, #name },
static const struct probe probes[] = { PROBES(ENTRY) };

/* Runs probe `i` in the calling (child) process: 0, or the errno. */
static int run(int i)
{
    long r = -1;
    errno = 0;
    int n = 0;
#define CASE(class, name, call) \
    if (n++ == i)               \
        r = (call);
    PROBES(CASE)
#undef CASE
    return r < 0 ? errno : 0;
}

/* A fork, reaped. */
static long probe_fork(void)
{
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    return reap(pid);
}

static void *thread_main(void *arg)
{
    return arg;
}

/* A thread, joined (glibc tries clone3, then clone on ENOSYS). */
static long probe_thread(void)
{
    pthread_t t;
    int err = pthread_create(&t, NULL, thread_main, NULL);
    if (err != 0) {
        errno = err;
        return -1;
    }
    return pthread_join(t, NULL) == 0 ? 0 : -1;
}

/* A FIFO in /tmp (made if missing), removed again. */
static long probe_fifo(void)
{
    char path[64];
    if (mkdir("/tmp", 01777) < 0 && errno != EEXIST)
        return -1;
    snprintf(path, sizeof path, "/tmp/strata-probe-fifo-%ld", (long)getpid());
    long r = syscall(SYS_mknodat, AT_FDCWD, path, (long)(S_IFIFO | 0600), 0L);
    if (r == 0)
        unlink(path);
    return r;
}

/* openat2 of / with struct open_how { flags, mode, resolve }. */
static long probe_openat2(void)
{
    struct { uint64_t flags, mode, resolve; } how = { O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, 0 };
    return syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof how);
}

static long probe_statx(void)
{
    static char buf[256]; /* struct statx */
    return syscall(SYS_statx, AT_FDCWD, "/", 0L, 0x7ffL /* STATX_BASIC_STATS */, buf);
}

static long probe_getrandom(void)
{
    char buf[16];
    return syscall(SYS_getrandom, buf, sizeof buf, 0L);
}

static long probe_affinity(void)
{
    static unsigned long mask[16];
    return syscall(SYS_sched_getaffinity, 0L, sizeof mask, mask);
}

static long probe_prlimit(void)
{
    struct rlimit rl;
    return syscall(SYS_prlimit64, 0L, (long)RLIMIT_NOFILE, NULL, &rl);
}

static long probe_socketpair(void)
{
    int sv[2];
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
}

/* What a task must keep. Descriptors are left to the child's exit. */
#define ALLOWED(X) \
    X(allowed, fork, probe_fork()) \
    X(allowed, pthread_create, probe_thread()) \
    X(allowed, socket_inet_dgram, socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) \
    X(allowed, socket_unix, socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) \
    X(allowed, socketpair, probe_socketpair()) \
    X(allowed, personality_query, syscall(SYS_personality, PROBE_PER_QUERY)) \
    X(allowed, mknodat_fifo, probe_fifo()) \
    X(allowed, memfd_create, syscall(SYS_memfd_create, "strata-probe", 1L /* MFD_CLOEXEC */)) \
    X(allowed, eventfd2, syscall(SYS_eventfd2, 0L, (long)O_CLOEXEC)) \
    X(allowed, timerfd_create, syscall(SYS_timerfd_create, (long)CLOCK_MONOTONIC, (long)O_CLOEXEC)) \
    X(allowed, epoll_create1, syscall(SYS_epoll_create1, (long)O_CLOEXEC)) \
    X(allowed, inotify_init1, syscall(SYS_inotify_init1, (long)O_CLOEXEC)) \
    X(allowed, statx, probe_statx()) \
    X(allowed, openat2, probe_openat2()) \
    X(allowed, close_range, syscall(SYS_close_range, 1000L, 1000L, 0L)) \
    X(allowed, getrandom, probe_getrandom()) \
    X(allowed, faccessat2, syscall(SYS_faccessat2, AT_FDCWD, "/", (long)F_OK, 0L)) \
    X(allowed, sched_getaffinity, probe_affinity()) \
    X(allowed, prlimit64, probe_prlimit()) \
    X(allowed, chroot, syscall(SYS_chroot, "/"))

static const struct probe allowed[] = { ALLOWED(ENTRY) };

/* Runs allowed probe `i` in the calling (child) process: 0, or the errno. */
static int run_allowed(int i)
{
    long r = -1;
    errno = 0;
    int n = 0;
#define CASE(class, name, call) \
    if (n++ == i)               \
        r = (call);
    ALLOWED(CASE)
#undef CASE
    return r < 0 ? errno : 0;
}

/* Runs each of the `count` probes of `list` in a child and prints its line. */
static int run_all(const struct probe *list, int count, int (*runner)(int))
{
    for (int i = 0; i < count; i++) {
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0)
            _exit(runner(i));
        int status;
        if (waitpid(pid, &status, 0) < 0) {
            perror("waitpid");
            return 2;
        }
        const char *result = "signal";
        if (WIFEXITED(status)) {
            int err = WEXITSTATUS(status);
            result = err == 0 ? "ok" : strerrorname_np(err);
            if (result == NULL)
                result = "unknown";
        }
        printf("%s %s %s\n", list[i].class, list[i].name, result);
    }
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "allowed") == 0)
        return run_all(allowed, (int)(sizeof allowed / sizeof allowed[0]), run_allowed);
    return run_all(probes, (int)(sizeof probes / sizeof probes[0]), run);
}
