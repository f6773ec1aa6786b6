//! Host-wide resources of one run of VMs, reserved and checked rather than
//! derived from a pid: the multicast segment the cluster NICs share and the
//! loopback ports forwarded to guests or served to them.
//!
//! A segment belongs to a [`Slot`]: an exclusive `flock` on
//! `/run/lock/strata-qemu/slot-<n>` (on tmpfs, so it dies with its holders),
//! which gives the run its own multicast group and UDP port. Before a slot is
//! used, its UDP port is bound without `SO_REUSEADDR`: QEMU's multicast
//! sockets hold the port with `SO_REUSEADDR`, so the bind fails while any
//! segment (ours from an earlier run, or anyone's) still uses it, and the
//! next slot is tried. A detached cluster (`cargo xtask cluster up`) passes
//! the lock on to its QEMU processes ([`Slot::inherit_into`]), so the slot
//! stays taken until the cluster is down.
//!
//! Loopback TCP ports come from the kernel ([`free_tcp_port`]): bound to
//! port 0, so the port was free a moment ago, and outside the range that two
//! runs' pids used to map onto the same numbers.

use std::fs::File;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

/// Where the slot locks are.
const DIR: &str = "/run/lock/strata-qemu";
/// How many runs can have a segment at the same time.
const SLOTS: u8 = 64;
/// The first slot's UDP port; slot `n` uses `BASE_PORT + n` (below the
/// kernel's ephemeral range, which starts at 32768).
const BASE_PORT: u16 = 21_700;

/// One run's multicast segment, held for as long as the value (or a
/// process it was passed on to) lives.
#[derive(Debug)]
pub struct Slot {
    id: u8,
    lock: File,
}

impl Slot {
    /// Takes the first free slot whose UDP port nobody uses.
    pub fn take() -> anyhow::Result<Slot> {
        std::fs::create_dir_all(DIR).with_context(|| format!("cannot create {DIR}"))?;
        let mut busy = Vec::new();
        for id in 0..SLOTS {
            let path = Path::new(DIR).join(format!("slot-{id:02}"));
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: flock on a descriptor this function owns.
            let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if locked != 0 {
                continue;
            }
            let slot = Slot { id, lock };
            match slot.check_port_free() {
                Ok(()) => return Ok(slot),
                Err(e) => busy.push(format!("slot {id}: {e}")),
            }
        }
        bail!(
            "no free multicast segment: all {SLOTS} slots under {DIR} are taken or their ports are in use{}",
            if busy.is_empty() {
                String::new()
            } else {
                format!(" ({})", busy.join("; "))
            }
        )
    }

    /// The slot's number.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The multicast group of the slot's segment (organisation-local scope).
    pub fn group(&self) -> Ipv4Addr {
        Ipv4Addr::new(239, 255, 77, self.id)
    }

    /// The UDP port of the slot's segment.
    pub fn port(&self) -> u16 {
        BASE_PORT + u16::from(self.id)
    }

    /// QEMU's `-netdev socket` option for a NIC on the segment.
    pub fn netdev(&self, id: &str) -> String {
        format!(
            "socket,id={id},mcast={}:{},localaddr=127.0.0.1",
            self.group(),
            self.port()
        )
    }

    /// Fails when something holds the slot's UDP port.
    fn check_port_free(&self) -> anyhow::Result<()> {
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, self.port()))
            .map(drop)
            .with_context(|| format!("UDP port {} is in use", self.port()))
    }

    /// Passes the lock on to the process `cmd` starts (and to what that
    /// process forks), so the slot stays taken while it runs.
    pub fn inherit_into(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let fd = self.lock.as_raw_fd();
        // SAFETY: between fork and exec only fcntl, which is
        // async-signal-safe, on a descriptor the child inherited.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// A loopback TCP port that was free when the kernel picked it.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .context("cannot bind a loopback port")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_slots_at_once_are_apart() {
        let a = Slot::take().expect("a slot");
        let b = Slot::take().expect("another slot");
        assert_ne!(a.id(), b.id());
        assert_ne!(a.port(), b.port());
        assert_ne!(a.group(), b.group());
        assert!(a.netdev("cl").starts_with("socket,id=cl,mcast=239.255.77."));
        // A socket on the segment's port makes the slot unusable while it lives.
        let held = b.port();
        drop(b);
        let hold = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, held)).expect("bind the freed port");
        let c = Slot::take().expect("a third slot");
        assert_ne!(c.port(), held);
        drop(hold);
        assert!(free_tcp_port().expect("a port") > 0);
    }
}
