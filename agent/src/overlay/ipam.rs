//! Task addresses inside the node's subnet, kept on the node and persisted
//! under the state directory so that an agent restart keeps every running
//! task's address. Allocation is next-fit: a released address is only
//! handed out again after the rest of the subnet has been used, and never
//! while a task holds it.
//!
//! A book that cannot be parsed (empty or half-written after a power cut on
//! a file system without the durable write, or damaged by hand) is never a
//! crash loop: [`Ipam::open`] keeps it beside the book as
//! `ipam.json.damaged` and rebuilds the book from the addresses the tasks
//! recorded themselves (their `run.json`), which the caller supplies.

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

/// What [`Ipam::open`] did with a book it could not parse.
#[derive(Debug)]
pub struct Rebuilt {
    /// Where the damaged book was kept.
    pub kept: PathBuf,
    /// Why it could not be parsed.
    pub reason: serde_json::Error,
    /// How many tasks' addresses the rebuilt book holds.
    pub tasks: usize,
}

impl std::fmt::Display for Rebuilt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the IPAM book could not be parsed ({}); kept it as {} and rebuilt it from the \
             addresses {} task(s) recorded",
            self.reason,
            self.kept.display(),
            self.tasks
        )
    }
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
        let base = u32::from(self.subnet.network());
        let used: std::collections::BTreeSet<Ipv4Addr> = self.assigned.values().copied().collect();
        let (first, last) = self.hosts();
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

    /// The first and last host numbers a task may be given (after the
    /// gateway, before the broadcast address).
    fn hosts(&self) -> (u32, u32) {
        let size = 1u32 << (32 - u32::from(self.subnet.prefix));
        let first = u32::from(gateway(self.subnet)) - u32::from(self.subnet.network()) + 1;
        (first, size - 2)
    }

    /// A book of `lease` holding the addresses in `held` (task id and the
    /// address the task recorded). An address outside the subnet's task
    /// range, or one an earlier task already holds, is left out: that task
    /// gets a new address when it is attached again.
    pub fn rebuilt(lease: Ipv4Cidr, held: impl IntoIterator<Item = (String, Ipv4Addr)>) -> Ipam {
        let mut ipam = Ipam::new(lease);
        let (first, last) = ipam.hosts();
        let base = u32::from(ipam.subnet.network());
        for (task, addr) in held {
            let host = u32::from(addr).wrapping_sub(base);
            let free = !ipam.assigned.values().any(|a| *a == addr);
            if ipam.subnet.contains(addr) && (first..=last).contains(&host) && free {
                ipam.assigned.insert(task, addr);
                ipam.next = ipam.next.max(host + 1);
            }
        }
        ipam
    }

    /// [`Ipam::load`], except that a book that does not parse is moved to
    /// `<path>.damaged` and replaced by [`Ipam::rebuilt`] from `held()`
    /// (written at once); the second value then says what happened.
    pub fn open(
        path: &Path,
        lease: Ipv4Cidr,
        held: impl FnOnce() -> Vec<(String, Ipv4Addr)>,
    ) -> Result<(Ipam, Option<Rebuilt>), IpamError> {
        match Ipam::load(path, lease) {
            Err(IpamError::Parse { source, .. }) => {
                let mut kept = path.as_os_str().to_owned();
                kept.push(".damaged");
                let kept = PathBuf::from(kept);
                std::fs::rename(path, &kept).map_err(|source| IpamError::Write {
                    path: kept.clone(),
                    source,
                })?;
                let ipam = Ipam::rebuilt(lease, held());
                ipam.save(path)?;
                let rebuilt = Rebuilt {
                    kept,
                    reason: source,
                    tasks: ipam.assigned.len(),
                };
                Ok((ipam, Some(rebuilt)))
            }
            other => other.map(|ipam| (ipam, None)),
        }
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

    /// `Ipam::open` of a book holding `contents`, with the tasks recording
    /// `held`: the book it gives and what it says, then the next allocation.
    fn check_open(contents: &str, held: &[(&str, &str)], expected: Expect) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ipam.json");
        std::fs::write(&path, contents).expect("write");
        let lease: Ipv4Cidr = "10.200.1.0/29".parse().expect("cidr");
        let held: Vec<(String, Ipv4Addr)> = held
            .iter()
            .map(|(t, a)| (t.to_string(), a.parse().expect("address")))
            .collect();
        let (mut ipam, rebuilt) = Ipam::open(&path, lease, || held).expect("open");
        let mut out = String::new();
        match rebuilt {
            Some(r) => {
                let said = r
                    .to_string()
                    .replace(&dir.path().display().to_string(), "DIR");
                out.push_str(&format!("{said}\n"));
                let kept = std::fs::read_to_string(&r.kept).expect("damaged book kept");
                assert_eq!(kept, contents);
            }
            None => out.push_str("read as it was\n"),
        }
        for (task, addr) in ipam.assigned() {
            out.push_str(&format!("{task} {addr}\n"));
        }
        let next = ipam.allocate("new").map(|a| a.to_string());
        out.push_str(&format!("new {}\n", next.unwrap_or_else(|e| e.to_string())));
        let reread = Ipam::load(&path, lease).expect("the rebuilt book is written");
        assert_eq!(reread.assigned().len() + 1, ipam.assigned().len());
        expected.assert_eq(&out);
    }

    #[test]
    fn a_damaged_book_is_rebuilt_from_the_tasks_records() {
        check_open(
            "",
            &[("a", "10.200.1.3"), ("b", "10.200.1.2")],
            expect![[r#"
                the IPAM book could not be parsed (EOF while parsing a value at line 1 column 0); kept it as DIR/ipam.json.damaged and rebuilt it from the addresses 2 task(s) recorded
                a 10.200.1.3
                b 10.200.1.2
                new 10.200.1.4/29
            "#]],
        );
        // Half a file; addresses outside the task range, the gateway, and
        // one taken twice are left out.
        check_open(
            r#"{"subnet":"10.200.1.0/29","next":4,"assi"#,
            &[
                ("gw", "10.200.1.1"),
                ("a", "10.200.1.5"),
                ("twin", "10.200.1.5"),
                ("away", "10.200.9.2"),
                ("bcast", "10.200.1.7"),
            ],
            expect![[r#"
                the IPAM book could not be parsed (EOF while parsing a string at line 1 column 40); kept it as DIR/ipam.json.damaged and rebuilt it from the addresses 1 task(s) recorded
                a 10.200.1.5
                new 10.200.1.6/29
            "#]],
        );
        check_open(
            r#"{"subnet":"10.200.1.0/29","next":3,"assigned":{"a":"10.200.1.2"}}"#,
            &[("other", "10.200.1.4")],
            expect![[r#"
                read as it was
                a 10.200.1.2
                new 10.200.1.3/29
            "#]],
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
