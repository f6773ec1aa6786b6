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
//!
//! Every node balances every VIP in its kernel ([`plan`]: each VIP with
//! its ready backends, from the services of the node watch; rendered by
//! `agent::overlay::nft::render_vips`).

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

/// One VIP as every node serves it: its address, protocol and port, and
/// the ready backends connections to it are spread over.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Vip {
    pub address: Ipv4Addr,
    pub proto: VipProto,
    pub port: u16,
    /// Sorted, without duplicates: the backends of every service that asks
    /// for this VIP (a name shared by apps merges theirs).
    pub backends: Vec<std::net::SocketAddrV4>,
}

/// The protocol a VIP balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum VipProto {
    Tcp,
    Udp,
}

impl std::fmt::Display for VipProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VipProto::Tcp => "tcp",
            VipProto::Udp => "udp",
        })
    }
}

impl Vip {
    /// The name of the VIP's nftables chain: `vip-<address in hex>-<proto>-<port>`.
    pub fn chain(&self) -> String {
        format!(
            "vip-{:08x}-{}-{}",
            u32::from(self.address),
            self.proto,
            self.port
        )
    }
}

/// What every node's VIP table holds: each VIP with its ready backends
/// (one with none is refused at once rather than left to time out), and
/// every backend of any VIP (whose replies the node must track, to undo
/// the translation on their way back). Equal inputs give equal plans.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VipPlan {
    pub vips: Vec<Vip>,
}

impl VipPlan {
    /// Every VIP address.
    pub fn addresses(&self) -> BTreeSet<Ipv4Addr> {
        self.vips.iter().map(|v| v.address).collect()
    }

    /// Every backend of any VIP, with its protocol.
    pub fn backends(&self) -> BTreeSet<(std::net::SocketAddrV4, VipProto)> {
        self.vips
            .iter()
            .flat_map(|v| v.backends.iter().map(move |b| (*b, v.proto)))
            .collect()
    }
}

/// The VIPs of `services`, their named addresses from `leases` (a name
/// without a lease yet is left out, as is a VIP of a kind this version
/// does not know). Pure.
pub fn plan(services: &[crate::service::Service], leases: &BTreeMap<String, Ipv4Addr>) -> VipPlan {
    use crate::app::Protocol;
    let mut by_key: BTreeMap<(Ipv4Addr, VipProto, u16), BTreeSet<std::net::SocketAddrV4>> =
        BTreeMap::new();
    for s in services {
        let protos: &[VipProto] = match s.protocol {
            Protocol::Tcp => &[VipProto::Tcp],
            Protocol::Udp => &[VipProto::Udp],
            Protocol::TcpUdp => &[VipProto::Tcp, VipProto::Udp],
            Protocol::Unknown => &[],
        };
        for v in &s.vips {
            let (address, port) = match v {
                VipSpec::Named { name, port } => match leases.get(name) {
                    Some(a) => (*a, *port),
                    None => continue,
                },
                VipSpec::Fixed { address, port } => (*address, *port),
                VipSpec::Unknown(_) => continue,
            };
            for proto in protos {
                let ready = s.ready().map(|b| b.addr);
                by_key
                    .entry((address, *proto, port))
                    .or_default()
                    .extend(ready);
            }
        }
    }
    VipPlan {
        vips: by_key
            .into_iter()
            .map(|((address, proto, port), backends)| Vip {
                address,
                proto,
                port,
                backends: backends.into_iter().collect(),
            })
            .collect(),
    }
}

/// The DNS names of the VIPs of `services`, each with its addresses,
/// sorted: `<name>.l4lb` for a named VIP (its lease's address), and
/// `<app's DNS label>.vip` for every VIP of an app (named ones with a
/// lease, fixed ones). The node's resolver answers them under the zone.
/// Pure.
pub fn names(
    services: &[crate::service::Service],
    leases: &BTreeMap<String, Ipv4Addr>,
) -> BTreeMap<String, Vec<Ipv4Addr>> {
    let mut out: BTreeMap<String, BTreeSet<Ipv4Addr>> = BTreeMap::new();
    for s in services {
        for v in &s.vips {
            let address = match v {
                VipSpec::Named { name, .. } => match leases.get(name) {
                    Some(a) => {
                        out.entry(format!("{name}.l4lb")).or_default().insert(*a);
                        *a
                    }
                    None => continue,
                },
                VipSpec::Fixed { address, .. } => *address,
                VipSpec::Unknown(_) => continue,
            };
            out.entry(format!("{}.vip", s.app.dns_label()))
                .or_default()
                .insert(address);
        }
    }
    out.into_iter()
        .map(|(n, a)| (n, a.into_iter().collect()))
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
    fn vips_plan_ready_backends_merged_by_name() {
        use crate::service::{Backend, BackendState, Service};
        let backend = |task: &str, addr: &str, state| Backend {
            task: task.into(),
            node: "agent-1".into(),
            addr: addr.parse().expect("addr"),
            state,
        };
        let service = |app: &str, vips: &[&str], protocol, backends| Service {
            app: crate::app::AppId::resolve(&crate::app::AppId::root(), app).expect("id"),
            port: 0,
            protocol,
            expose: vec![],
            vips: vips
                .iter()
                .map(|v| VipSpec::parse(v).expect("vip"))
                .collect(),
            checked: true,
            backends,
        };
        let services = [
            service(
                "/shop/web",
                &["web:80", "198.18.9.9:8080", "nolease:80"],
                crate::app::Protocol::Tcp,
                vec![
                    backend("web.1", "10.200.1.2:8080", BackendState::Ready),
                    backend("web.2", "10.200.1.3:8080", BackendState::Down),
                    backend("web.3", "10.200.2.2:8080", BackendState::Draining),
                ],
            ),
            service(
                "/shop/web-v2",
                &["web:80"],
                crate::app::Protocol::Tcp,
                vec![backend("web-v2.1", "10.200.2.3:8080", BackendState::Ready)],
            ),
            service(
                "/dns",
                &["dns:53"],
                crate::app::Protocol::TcpUdp,
                vec![backend("dns.1", "10.200.1.9:53", BackendState::Down)],
            ),
        ];
        let leases: BTreeMap<String, Ipv4Addr> = [("web", "198.18.0.2"), ("dns", "198.18.0.1")]
            .iter()
            .map(|(n, a)| (n.to_string(), a.parse().expect("ip")))
            .collect();
        expect![[r#"
            {
                "dns.l4lb": [
                    198.18.0.1,
                ],
                "dns.vip": [
                    198.18.0.1,
                ],
                "web-shop.vip": [
                    198.18.0.2,
                    198.18.9.9,
                ],
                "web-v2-shop.vip": [
                    198.18.0.2,
                ],
                "web.l4lb": [
                    198.18.0.2,
                ],
            }
        "#]]
        .assert_debug_eq(&names(&services, &leases));
        let plan = plan(&services, &leases);
        let shown: Vec<String> = plan
            .vips
            .iter()
            .map(|v| {
                format!(
                    "{} {}:{} {} -> {:?}",
                    v.chain(),
                    v.address,
                    v.port,
                    v.proto,
                    v.backends
                )
            })
            .collect();
        expect![[r#"
            [
                "vip-c6120001-tcp-53 198.18.0.1:53 tcp -> []",
                "vip-c6120001-udp-53 198.18.0.1:53 udp -> []",
                "vip-c6120002-tcp-80 198.18.0.2:80 tcp -> [10.200.1.2:8080, 10.200.2.3:8080]",
                "vip-c6120909-tcp-8080 198.18.9.9:8080 tcp -> [10.200.1.2:8080]",
            ]
        "#]]
        .assert_debug_eq(&shown);
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
