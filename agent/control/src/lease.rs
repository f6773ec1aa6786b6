//! Subnet leases: which node owns which slice of the cluster overlay CIDR.
//!
//! Pure. The master calls [`allocate`] with the leases it has just read
//! from etcd and writes the answer back with a compare-and-swap (see
//! [`LeaseKeys`] for the keys and the guarantees the transaction gives), so
//! two concurrent registrations can never end up sharing a subnet: the loser
//! of the race re-reads and allocates again.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use configs::net::Ipv4Cidr;

/// Why no subnet could be leased.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error(
        "overlay {cidr} has no free /{prefix} subnet left for node `{node}`: all {count} are leased"
    )]
    Full {
        cidr: Ipv4Cidr,
        prefix: u8,
        count: u64,
        node: String,
    },
    #[error("subnet prefix /{prefix} does not fit in overlay {cidr}, expected {} to 30", cidr.prefix + 1)]
    BadPrefix { cidr: Ipv4Cidr, prefix: u8 },
    #[error(
        "node `{node}` holds lease {subnet}, which is not a /{prefix} subnet of overlay {cidr}"
    )]
    Foreign {
        node: String,
        subnet: Ipv4Cidr,
        cidr: Ipv4Cidr,
        prefix: u8,
    },
    #[error("subnet {subnet} is leased to both `{first}` and `{second}`")]
    Shared {
        subnet: Ipv4Cidr,
        first: String,
        second: String,
    },
}

/// Returns the subnet of `node`: its existing lease when it has one (leases
/// are sticky across reboots), otherwise the lowest free `/prefix` subnet of
/// `cidr`. `leases` maps node names to their subnets, as read from etcd.
pub fn allocate(
    cidr: Ipv4Cidr,
    prefix: u8,
    leases: &BTreeMap<String, Ipv4Cidr>,
    node: &str,
) -> Result<Ipv4Cidr, LeaseError> {
    let cidr = cidr.trunc();
    if prefix <= cidr.prefix || prefix > 30 {
        return Err(LeaseError::BadPrefix { cidr, prefix });
    }
    let mut used: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    for (name, subnet) in leases {
        if subnet.prefix != prefix || !cidr.contains(subnet.addr) || subnet.addr != subnet.network()
        {
            return Err(LeaseError::Foreign {
                node: name.clone(),
                subnet: *subnet,
                cidr,
                prefix,
            });
        }
        if let Some(first) = used.insert(subnet.addr, name) {
            return Err(LeaseError::Shared {
                subnet: *subnet,
                first: first.to_string(),
                second: name.clone(),
            });
        }
    }
    if let Some(existing) = leases.get(node) {
        return Ok(*existing);
    }
    let count = cidr.subnet_count(prefix);
    (0..count)
        .filter_map(|i| cidr.subnet(prefix, i))
        .find(|s| !used.contains_key(&s.addr))
        .ok_or_else(|| LeaseError::Full {
            cidr,
            prefix,
            count,
            node: node.to_string(),
        })
}

/// The etcd keys of one lease. Both are written in one transaction:
///
/// ```text
/// txn(
///   compare: [ version(by_subnet) == 0, version(by_node) == 0 ],
///   success: [ put(by_subnet, node), put(by_node, subnet) ],
///   failure: [ get(by_node) ],
/// )
/// ```
///
/// `by_subnet` being absent guarantees the subnet is never shared (two
/// masters racing for the same subnet: exactly one transaction succeeds);
/// `by_node` being absent guarantees a node never holds two subnets. On
/// failure the master re-reads the prefix [`LeaseKeys::PREFIX`] and calls
/// [`allocate`] again (which returns the winner's lease if it was the same
/// node). Neither key is attached to an etcd lease (TTL): the subnet stays
/// with the node across reboots and is only deleted, both keys in one
/// transaction, when the node is removed from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKeys {
    pub by_subnet: String,
    pub by_node: String,
}

impl LeaseKeys {
    /// Prefix under which all lease keys live.
    pub const PREFIX: &'static str = "/strata/overlay/";

    pub fn new(node: &str, subnet: Ipv4Cidr) -> LeaseKeys {
        LeaseKeys {
            by_subnet: format!(
                "{}subnets/{}-{}",
                Self::PREFIX,
                subnet.network(),
                subnet.prefix
            ),
            by_node: format!("{}nodes/{node}", Self::PREFIX),
        }
    }
}

/// Parses the `by_node` entries read under `LeaseKeys::PREFIX` (`nodes/<name>`
/// to `a.b.c.d/p`) into the map [`allocate`] takes; other keys are skipped.
pub fn leases_from_kvs<'a>(
    kvs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeMap<String, Ipv4Cidr>, String> {
    let prefix = format!("{}nodes/", LeaseKeys::PREFIX);
    let mut out = BTreeMap::new();
    for (key, value) in kvs {
        let Some(node) = key.strip_prefix(&prefix) else {
            continue;
        };
        let subnet: Ipv4Cidr = value.parse().map_err(|e| format!("etcd key {key}: {e}"))?;
        out.insert(node.to_string(), subnet);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn check(cidr: &str, prefix: u8, leases: &[(&str, &str)], node: &str, expected: Expect) {
        let leases: BTreeMap<String, Ipv4Cidr> = leases
            .iter()
            .map(|(n, s)| (n.to_string(), s.parse().expect("test subnet")))
            .collect();
        let actual = match allocate(cidr.parse().expect("test cidr"), prefix, &leases, node) {
            Ok(s) => format!("{s} keys {:?}", LeaseKeys::new(node, s)),
            Err(e) => format!("error: {e}"),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn allocation() {
        check(
            "10.200.0.0/16",
            24,
            &[],
            "a",
            expect![[
                r#"10.200.0.0/24 keys LeaseKeys { by_subnet: "/strata/overlay/subnets/10.200.0.0-24", by_node: "/strata/overlay/nodes/a" }"#
            ]],
        );
        check(
            "10.200.0.0/16",
            24,
            &[("a", "10.200.0.0/24"), ("b", "10.200.1.0/24")],
            "c",
            expect![[
                r#"10.200.2.0/24 keys LeaseKeys { by_subnet: "/strata/overlay/subnets/10.200.2.0-24", by_node: "/strata/overlay/nodes/c" }"#
            ]],
        );
        // A released lease leaves a hole that the next node fills.
        check(
            "10.200.0.0/16",
            24,
            &[("a", "10.200.0.0/24"), ("c", "10.200.2.0/24")],
            "d",
            expect![[
                r#"10.200.1.0/24 keys LeaseKeys { by_subnet: "/strata/overlay/subnets/10.200.1.0-24", by_node: "/strata/overlay/nodes/d" }"#
            ]],
        );
        // Sticky: a node that registers again (reboot) keeps its subnet.
        check(
            "10.200.0.0/16",
            24,
            &[("a", "10.200.0.0/24"), ("b", "10.200.7.0/24")],
            "b",
            expect![[
                r#"10.200.7.0/24 keys LeaseKeys { by_subnet: "/strata/overlay/subnets/10.200.7.0-24", by_node: "/strata/overlay/nodes/b" }"#
            ]],
        );
        // Host bits of the cluster CIDR are ignored.
        check(
            "10.200.3.4/23",
            24,
            &[("a", "10.200.2.0/24")],
            "b",
            expect![[
                r#"10.200.3.0/24 keys LeaseKeys { by_subnet: "/strata/overlay/subnets/10.200.3.0-24", by_node: "/strata/overlay/nodes/b" }"#
            ]],
        );
    }

    #[test]
    fn errors() {
        check(
            "10.200.0.0/23",
            24,
            &[("a", "10.200.0.0/24"), ("b", "10.200.1.0/24")],
            "c",
            expect![
                "error: overlay 10.200.0.0/23 has no free /24 subnet left for node `c`: all 2 are leased"
            ],
        );
        check(
            "10.200.0.0/24",
            24,
            &[],
            "a",
            expect![
                "error: subnet prefix /24 does not fit in overlay 10.200.0.0/24, expected 25 to 30"
            ],
        );
        check(
            "10.200.0.0/16",
            24,
            &[("a", "10.201.0.0/24")],
            "b",
            expect![
                "error: node `a` holds lease 10.201.0.0/24, which is not a /24 subnet of overlay 10.200.0.0/16"
            ],
        );
        check(
            "10.200.0.0/16",
            24,
            &[("a", "10.200.0.0/25")],
            "b",
            expect![
                "error: node `a` holds lease 10.200.0.0/25, which is not a /24 subnet of overlay 10.200.0.0/16"
            ],
        );
        check(
            "10.200.0.0/16",
            24,
            &[("a", "10.200.1.0/24"), ("b", "10.200.1.0/24")],
            "c",
            expect!["error: subnet 10.200.1.0/24 is leased to both `a` and `b`"],
        );
    }

    #[test]
    fn concurrent_registrations_never_share() {
        // Simulates the CAS loop: each registration allocates from the state
        // it read; a transaction only commits when both its keys are absent.
        let cidr: Ipv4Cidr = "10.200.0.0/22".parse().expect("cidr");
        let mut committed: BTreeMap<String, Ipv4Cidr> = BTreeMap::new();
        let stale = committed.clone();
        let mut pending: Vec<String> = (0..4).map(|i| format!("n{i}")).collect();
        let mut rounds = 0;
        while !pending.is_empty() {
            rounds += 1;
            // Everyone read the same snapshot; the first commits, the rest conflict.
            let snapshot = if rounds == 1 {
                stale.clone()
            } else {
                committed.clone()
            };
            let mut retry = Vec::new();
            for node in pending {
                let subnet = allocate(cidr, 24, &snapshot, &node).expect("room");
                let taken =
                    committed.values().any(|s| *s == subnet) || committed.contains_key(&node);
                if taken {
                    retry.push(node)
                } else {
                    committed.insert(node, subnet);
                }
            }
            pending = retry;
        }
        let subnets: std::collections::BTreeSet<_> = committed.values().collect();
        assert_eq!(subnets.len(), 4, "{committed:?}");
        assert_eq!(
            allocate(cidr, 24, &committed, "n5").map_err(|e| e.to_string()),
            Err(
                "overlay 10.200.0.0/22 has no free /24 subnet left for node `n5`: all 4 are leased"
                    .to_string()
            )
        );
    }

    #[test]
    fn parses_etcd_entries() {
        let kvs = [
            ("/strata/overlay/nodes/a", "10.200.0.0/24"),
            ("/strata/overlay/subnets/10.200.0.0-24", "a"),
        ];
        assert_eq!(
            format!("{:?}", leases_from_kvs(kvs)),
            r#"Ok({"a": Ipv4Cidr { addr: 10.200.0.0, prefix: 24 }})"#
        );
        assert_eq!(leases_from_kvs([("/strata/overlay/nodes/b", "x")]), Err("etcd key /strata/overlay/nodes/b: `x` is not in CIDR notation, expected an address and a prefix length like 10.0.0.0/16".to_string()));
    }
}
