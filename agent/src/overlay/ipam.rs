//! Task addresses inside the node's subnet, kept on the node and persisted
//! under the state directory so that an agent restart keeps every running
//! task's address. Allocation is next-fit: a released address is only
//! handed out again after the rest of the subnet has been used, and never
//! while a task holds it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use configs::net::Ipv4Cidr;
use serde::{Deserialize, Serialize};

use super::plan::gateway;

/// IPAM failures.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("subnet {subnet} has no free address left for task `{task}`")]
    Full { subnet: Ipv4Cidr, task: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an IPAM state file: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} holds addresses of subnet {found}, but this node leases {lease}")]
    SubnetChanged {
        path: PathBuf,
        found: Ipv4Cidr,
        lease: Ipv4Cidr,
    },
}

/// The address book of one node subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ipam {
    pub subnet: Ipv4Cidr,
    /// Host number after the last one handed out.
    next: u32,
    /// Task id to address.
    assigned: BTreeMap<String, Ipv4Addr>,
}

impl Ipam {
    pub fn new(subnet: Ipv4Cidr) -> Ipam {
        Ipam {
            subnet: subnet.trunc(),
            next: 2,
            assigned: BTreeMap::new(),
        }
    }

    /// The address of `task`: the one it already has, or the next free one
    /// (the network address, the gateway and the broadcast are never given).
    pub fn allocate(&mut self, task: &str) -> Result<Ipv4Cidr, IpamError> {
        let prefix = self.subnet.prefix;
        if let Some(a) = self.assigned.get(task) {
            return Ok(Ipv4Cidr { addr: *a, prefix });
        }
        let size = 1u32 << (32 - u32::from(prefix));
        let base = u32::from(self.subnet.network());
        let used: std::collections::BTreeSet<Ipv4Addr> = self.assigned.values().copied().collect();
        let first = u32::from(gateway(self.subnet)) - base + 1;
        let last = size - 2;
        let span = last.saturating_sub(first) + 1;
        let start = self.next.clamp(first, last.max(first));
        for i in 0..span {
            let host = first + (start - first + i) % span;
            let addr = Ipv4Addr::from(base + host);
            if host <= last && !used.contains(&addr) {
                self.assigned.insert(task.to_string(), addr);
                self.next = host + 1;
                return Ok(Ipv4Cidr { addr, prefix });
            }
        }
        Err(IpamError::Full {
            subnet: self.subnet,
            task: task.to_string(),
        })
    }

    /// Frees the address of `task`; returns it if it had one.
    pub fn release(&mut self, task: &str) -> Option<Ipv4Addr> {
        self.assigned.remove(task)
    }

    /// Every task with its address.
    pub fn assigned(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.assigned
    }

    /// Loads the book of `lease` from `path`, or starts an empty one if the
    /// file does not exist.
    pub fn load(path: &Path, lease: Ipv4Cidr) -> Result<Ipam, IpamError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ipam::new(lease)),
            Err(source) => {
                return Err(IpamError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        let ipam: Ipam = serde_json::from_str(&text).map_err(|source| IpamError::Parse {
            path: path.into(),
            source,
        })?;
        if ipam.subnet != lease.trunc() {
            return Err(IpamError::SubnetChanged {
                path: path.into(),
                found: ipam.subnet,
                lease: lease.trunc(),
            });
        }
        Ok(ipam)
    }

    /// Writes the book to `path` atomically and durably
    /// ([`crate::state::write_json`]): a power cut never leaves it empty.
    pub fn save(&self, path: &Path) -> Result<(), IpamError> {
        crate::state::write_json(path, self, None).map_err(|source| IpamError::Write {
            path: path.into(),
            source,
        })
    }
}

/// The prefix of every task veth's host-side name: the bridge's
/// anti-spoofing rules ([`super::nft`]) check the ports so named.
pub const VETH_PREFIX: &str = "stv";

/// The host-side name of a task's veth: [`VETH_PREFIX`] and 8 hex digits of
/// a hash of the task id (interface names hold at most 15 bytes).
pub fn veth_name(task: &str) -> String {
    // FNV-1a: stable across releases, unlike std's hasher.
    let h = task.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{VETH_PREFIX}{h:08x}")
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    /// Runs `ops` (`+task` allocates, `-task` releases) and shows each result.
    fn check(subnet: &str, ops: &[&str], expected: Expect) {
        let mut ipam = Ipam::new(subnet.parse().expect("test subnet"));
        let mut out = Vec::new();
        for op in ops {
            let (sign, task) = op.split_at(1);
            out.push(match sign {
                "+" => match ipam.allocate(task) {
                    Ok(a) => format!("{op} {a}"),
                    Err(e) => format!("{op} error: {e}"),
                },
                _ => format!("{op} {:?}", ipam.release(task)),
            });
        }
        expected.assert_eq(&out.join("\n"));
    }

    #[test]
    fn allocation() {
        check(
            "10.200.1.0/24",
            &["+a", "+b", "+a", "-a", "+c", "-x"],
            expect![[r#"
                +a 10.200.1.2/24
                +b 10.200.1.3/24
                +a 10.200.1.2/24
                -a Some(10.200.1.2)
                +c 10.200.1.4/24
                -x None"#]],
        );
    }

    #[test]
    fn wraps_around_and_fills_up() {
        // A /29 has hosts .1 to .6; .1 is the gateway, so .2 to .6 are given.
        check(
            "10.200.1.0/29",
            &[
                "+a", "+b", "+c", "+d", "+e", "+f", "-b", "-d", "+f", "+g", "+h",
            ],
            expect![[r#"
                +a 10.200.1.2/29
                +b 10.200.1.3/29
                +c 10.200.1.4/29
                +d 10.200.1.5/29
                +e 10.200.1.6/29
                +f error: subnet 10.200.1.0/29 has no free address left for task `f`
                -b Some(10.200.1.3)
                -d Some(10.200.1.5)
                +f 10.200.1.3/29
                +g 10.200.1.5/29
                +h error: subnet 10.200.1.0/29 has no free address left for task `h`"#]],
        );
    }

    #[test]
    fn persists() {
        let dir = std::env::temp_dir().join(format!("strata-ipam-{}", std::process::id()));
        let path = dir.join("ipam.json");
        let lease: Ipv4Cidr = "10.200.1.0/24".parse().expect("cidr");
        let mut ipam = Ipam::load(&path, lease).expect("fresh");
        ipam.allocate("a").expect("room");
        ipam.save(&path).expect("save");
        let mut again = Ipam::load(&path, lease).expect("load");
        assert_eq!(
            again.allocate("b").expect("room").to_string(),
            "10.200.1.3/24"
        );
        let err =
            Ipam::load(&path, "10.200.2.0/24".parse().expect("cidr")).expect_err("other lease");
        assert_eq!(
            err.to_string(),
            format!(
                "{} holds addresses of subnet 10.200.1.0/24, but this node leases 10.200.2.0/24",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(veth_name("web.1"), veth_name("web.1"));
        assert_eq!(veth_name("web.1").len(), 11);
    }
}
