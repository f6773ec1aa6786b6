//! VIP addresses: a named VIP (`shop-web:80`) gets an address of the
//! cluster's VIP range (`cluster.toml [vips] cidr`) the first time an app
//! asks for the name, and keeps it for good (sticky, like subnet leases),
//! so that every node and every client sees one address per name; every
//! app that names it on a port shares it (DC/OS's semantics: their
//! instances are balanced together). A fixed VIP (`198.18.4.2:80`) must lie
//! in the range and not be a name's address.
//!
//! Pure. The master reads the leases, calls [`allocate`] and writes the new
//! ones in the deploy's transaction, each only while its name and its
//! address are still free, so two deploys racing for one address cannot
//! both win: the loser reads again.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use configs::net::Ipv4Cidr;

use crate::app::{AppSpec, VipSpec};

/// The record of a named VIP's address (`/strata/vips/name/<name>`).
/// Tolerant: a field a newer writer adds is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipLease {
    pub address: Ipv4Addr,
}

/// The named VIPs that `request` asks for and that hold no address yet,
/// each with the lowest free address of `cidr` (neither a name's, nor a
/// fixed VIP's of `fixed` or of the request, nor the range's network or
/// broadcast address); or every problem: a fixed VIP outside the range or
/// at a name's address, a range with no address left. Pure.
pub fn allocate(
    cidr: Ipv4Cidr,
    held: &BTreeMap<String, Ipv4Addr>,
    fixed: &BTreeSet<Ipv4Addr>,
    request: &[&AppSpec],
) -> Result<Vec<(String, Ipv4Addr)>, Vec<String>> {
    let cidr = cidr.trunc();
    let owner: BTreeMap<Ipv4Addr, &str> = held.iter().map(|(n, a)| (*a, n.as_str())).collect();
    let mut problems = Vec::new();
    let mut used: BTreeSet<Ipv4Addr> = held
        .values()
        .copied()
        .chain(fixed.iter().copied())
        .collect();
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    for app in request {
        for (i, port) in app.ports.iter().enumerate() {
            for v in &port.vips {
                match v {
                    VipSpec::Fixed { address, port: p } => {
                        if !cidr.contains(*address) {
                            problems.push(format!(
                                "{}: ports[{i}] asks for VIP {address}:{p}, outside the VIP range {cidr} (cluster.toml [vips] cidr)",
                                app.id
                            ));
                        } else if let Some(name) = owner.get(address) {
                            problems.push(format!(
                                "{}: ports[{i}] asks for VIP {address}:{p}, which is the address of VIP {name}: choose another address, or name it {name}",
                                app.id
                            ));
                        }
                        used.insert(*address);
                    }
                    VipSpec::Named { name, .. } if !held.contains_key(name) => {
                        wanted.insert(name);
                    }
                    _ => {}
                }
            }
        }
    }
    let first = u32::from(cidr.network()) + 1;
    let last = u32::from(cidr.broadcast()).saturating_sub(1);
    let mut next = first;
    let mut out = Vec::new();
    for name in wanted {
        while next <= last && used.contains(&Ipv4Addr::from(next)) {
            next += 1;
        }
        if next > last {
            problems.push(format!(
                "VIP {name}: the VIP range {cidr} has no address left: widen cluster.toml [vips] cidr"
            ));
            break;
        }
        let address = Ipv4Addr::from(next);
        used.insert(address);
        out.push((name.to_string(), address));
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The fixed VIP addresses `apps` ask for.
pub fn fixed_addresses<'a>(apps: impl IntoIterator<Item = &'a AppSpec>) -> BTreeSet<Ipv4Addr> {
    apps.into_iter()
        .flat_map(|a| a.ports.iter().flat_map(|p| p.vips.iter()))
        .filter_map(|v| match v {
            VipSpec::Fixed { address, .. } => Some(*address),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    fn app(id: &str, vips: &[&str]) -> AppSpec {
        let list: Vec<String> = vips.iter().map(|v| format!("\"{v}\"")).collect();
        crate::app::read(
            "a.toml",
            &format!(
                "id = \"{id}\"\nimage = \"nginx:1\"\n[[ports]]\ncontainer_port = 80\nvips = [{}]\n",
                list.join(", ")
            ),
        )
        .expect("a valid app")
        .apps
        .remove(0)
    }

    fn check(
        cidr: &str,
        held: &[(&str, &str)],
        fixed: &[&str],
        request: &[AppSpec],
        expected: Expect,
    ) {
        let held: BTreeMap<String, Ipv4Addr> = held
            .iter()
            .map(|(n, a)| (n.to_string(), a.parse().expect("ip")))
            .collect();
        let fixed: BTreeSet<Ipv4Addr> = fixed.iter().map(|a| a.parse().expect("ip")).collect();
        let request: Vec<&AppSpec> = request.iter().collect();
        let got = match allocate(cidr.parse().expect("cidr"), &held, &fixed, &request) {
            Ok(new) => new
                .iter()
                .map(|(n, a)| format!("{n} = {a}\n"))
                .collect::<String>(),
            Err(p) => p.join("\n") + "\n",
        };
        expected.assert_eq(&got);
    }

    #[test]
    fn new_names_get_the_lowest_free_addresses_and_keep_theirs() {
        check(
            "198.18.0.0/16",
            &[("db", "198.18.0.1")],
            &["198.18.0.2"],
            &[
                app("/shop/web", &["web:80", "db:5432", "web:443"]),
                app("/blog", &["blog:80", "198.18.0.4:80"]),
            ],
            expect![[r#"
                blog = 198.18.0.3
                web = 198.18.0.5
            "#]],
        );
    }

    #[test]
    fn fixed_vips_outside_the_range_or_on_a_name_are_refused() {
        check(
            "198.18.0.0/16",
            &[("db", "198.18.0.1")],
            &[],
            &[app("/a", &["10.1.2.3:80", "198.18.0.1:80"])],
            expect![[r#"
                /a: ports[0] asks for VIP 10.1.2.3:80, outside the VIP range 198.18.0.0/16 (cluster.toml [vips] cidr)
                /a: ports[0] asks for VIP 198.18.0.1:80, which is the address of VIP db: choose another address, or name it db
            "#]],
        );
    }

    #[test]
    fn a_full_range_says_so() {
        check(
            "198.18.0.0/30",
            &[("a", "198.18.0.1"), ("b", "198.18.0.2")],
            &[],
            &[app("/c", &["c:80"])],
            expect![[r#"
                VIP c: the VIP range 198.18.0.0/30 has no address left: widen cluster.toml [vips] cidr
            "#]],
        );
    }
}
