//! User namespaces for tasks (`user_ns = true`): each such task gets a
//! range of the node's uids and gids that no other task holds
//! ([`free_range`]), its root maps to the first of them, and its root
//! filesystem shows the image's files as owned by the task's root: the
//! shim mounts each image layer again through an idmapped mount
//! ([`clone_idmapped`], Linux 5.19 and later under an overlay) before it
//! builds the overlay on them. The upper directory is not idmapped (the
//! overlay writes its own work files there as the node's root); its root
//! is given to the range's first id, and what the task writes lands on
//! disk as the range's ids.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// A task's ids: its 0 to `size - 1` are the node's `host_base` to
/// `host_base + size - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    pub host_base: u32,
    pub size: u32,
}

/// Where the ranges start: above the ids of the node's own users, systemd's
/// dynamic users (61184 to 65519) and `nobody`.
pub const FIRST_BASE: u32 = 1 << 20;
/// How many ranges a node hands out: up to 2^28 + 2^20, below the ids
/// some tools take as negative.
pub const RANGES: u32 = 4096;

/// The first range of `size` ids that none of `used` (the bases of the
/// ranges the node's tasks hold) starts at; none when all are taken.
pub fn free_range(used: impl IntoIterator<Item = u32>, size: u32) -> Option<IdRange> {
    let used: std::collections::BTreeSet<u32> = used.into_iter().collect();
    (0..RANGES)
        .map(|slot| FIRST_BASE + slot * size)
        .find(|base| !used.contains(base))
        .map(|host_base| IdRange { host_base, size })
}

/// A user namespace whose ids map as `range` says, held by its file
/// descriptor: what an idmapped mount takes. A child process makes it and
/// exits once the descriptor is open.
pub fn userns(range: IdRange) -> anyhow::Result<OwnedFd> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .context("cannot make a pipe to the user namespace helper")
    };
    let (ready_r, ready_w) = pipe()?;
    let (hold_r, hold_w) = pipe()?;
    // SAFETY: the shim that calls this is single-threaded (a process of its
    // own, before libcontainer starts anything), and the child only calls
    // unshare, write, read and _exit before it exits.
    match unsafe { nix::unistd::fork() }.context("cannot fork the user namespace helper")? {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            drop(hold_w);
            // SAFETY: unshare takes no pointers.
            let ok = unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0;
            let mut ready = File::from(ready_w);
            let _ = ready.write_all(if ok { b"1" } else { b"0" });
            let mut hold = File::from(hold_r);
            let _ = hold.read(&mut [0u8; 1]);
            // SAFETY: _exit ends the child without running the parent's
            // destructors or atexit handlers twice.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(hold_r);
            let made = (|| {
                let mut byte = [0u8; 1];
                File::from(ready_r)
                    .read_exact(&mut byte)
                    .context("the user namespace helper died")?;
                if byte != *b"1" {
                    bail!("cannot make a user namespace (unshare(CLONE_NEWUSER) failed)");
                }
                let map = format!("0 {} {}\n", range.host_base, range.size);
                for kind in ["uid_map", "gid_map"] {
                    std::fs::write(format!("/proc/{child}/{kind}"), &map).with_context(|| {
                        format!(
                            "cannot map ids {} to {} in the helper's {kind}",
                            range.host_base,
                            u64::from(range.host_base) + u64::from(range.size) - 1
                        )
                    })?;
                }
                let ns = File::open(format!("/proc/{child}/ns/user"))
                    .context("cannot open the helper's user namespace")?;
                Ok(OwnedFd::from(ns))
            })();
            drop(hold_w);
            let _ = nix::sys::wait::waitpid(child, None);
            made
        }
    }
}

/// Mounts `src` again, read-only, at `dst` with its ids mapped through the
/// user namespace `userns`: a file owned by 0 in `src` is owned by that
/// namespace's 0 (the node's `host_base`) at `dst`.
pub fn clone_idmapped(src: &Path, userns: &OwnedFd, dst: &Path) -> anyhow::Result<()> {
    let c_path = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .with_context(|| format!("{} holds a NUL byte", p.display()))
    };
    let (src_c, dst_c) = (c_path(src)?, c_path(dst)?);
    // SAFETY: the path is NUL-terminated and outlives the call; the kernel
    // returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src_c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot clone the mount of {}", src.display()));
    }
    let fd = i32::try_from(fd).context("a descriptor out of range")?;
    // SAFETY: the kernel just returned this descriptor, and nothing else
    // owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: u64::try_from(userns.as_raw_fd()).context("a descriptor out of range")?,
    };
    // SAFETY: `attr` is a valid mount_attr of the size passed, the empty
    // path is NUL-terminated, and both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &raw const attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "cannot idmap the mount of {} (its filesystem must allow idmapped mounts)",
                src.display()
            )
        });
    }
    // SAFETY: both paths are NUL-terminated and outlive the call; the
    // descriptor is open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst_c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot mount the idmapped layer at {}", dst.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_handed_out_lowest_first_and_never_twice() {
        let size = control::task::spec::USER_NS_SIZE;
        let base = |slot: u32| FIRST_BASE + slot * size;
        assert_eq!(free_range([], size).map(|r| r.host_base), Some(base(0)));
        assert_eq!(
            free_range([base(0), base(2)], size).map(|r| r.host_base),
            Some(base(1))
        );
        let all: Vec<u32> = (0..RANGES).map(base).collect();
        assert_eq!(free_range(all, size), None);
        // The last range ends below 2^31.
        assert!(u64::from(base(RANGES - 1)) + u64::from(size) <= 1 << 31);
    }
}
