use expect_test::{Expect, expect};

use super::*;

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().expect("test cidr")
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test ip")
}

fn peer(name: &str, underlay: &str, subnet: &str) -> Peer {
    Peer {
        name: name.into(),
        underlay: ip(underlay),
        subnet: cidr(subnet),
    }
}

/// Node `a` (10.200.1.0/24 on 10.9.0.1) with peers `b` and `c`.
fn desired(peers: Vec<Peer>) -> OverlayState {
    OverlayState {
        vxlan: Vxlan {
            name: "strata-vx".into(),
            vni: 4242,
            port: 4789,
            local: ip("10.9.0.1"),
            underlay: "eth0".into(),
            mtu: 1450,
        },
        bridge: "strata-br".into(),
        subnet: cidr("10.200.1.0/24"),
        peers,
    }
}

fn two_peers() -> Vec<Peer> {
    vec![
        peer("b", "10.9.0.2", "10.200.2.0/24"),
        peer("c", "10.9.0.3", "10.200.3.0/24"),
    ]
}

fn link(index: u32, name: &str, kind: LinkKind, mtu: u32, mac: Option<Mac>) -> Link {
    Link {
        index,
        name: name.into(),
        kind,
        mtu,
        mac,
        up: true,
        controller: None,
    }
}

/// A namespace with only loopback and the underlay link.
fn bare() -> NetlinkState {
    NetlinkState {
        links: vec![
            link(1, "lo", LinkKind::Other("loopback".into()), 65536, None),
            link(
                2,
                "eth0",
                LinkKind::Veth,
                1500,
                Some(Mac([2, 0, 0, 0, 0, 1])),
            ),
        ],
        addresses: vec![Address {
            dev: "eth0".into(),
            addr: cidr("10.9.0.1/24"),
        }],
        routes: vec![Route {
            dst: cidr("10.9.0.0/24"),
            gateway: None,
            dev: "eth0".into(),
            onlink: false,
        }],
        neighbours: vec![Neighbour {
            dev: "eth0".into(),
            ip: ip("10.9.0.2"),
            mac: Some(Mac([2, 0, 0, 0, 0, 2])),
            permanent: false,
        }],
        fdb: vec![],
        forwarding: false,
    }
}

/// What the kernel shows once the plan for `peers` has been applied,
/// written out by hand (plus what the kernel adds by itself).
fn converged(peers: &[Peer]) -> NetlinkState {
    let mut s = bare();
    s.forwarding = true;
    s.links.push(link(
        3,
        "strata-vx",
        LinkKind::Vxlan {
            vni: 4242,
            port: 4789,
            local: Some(ip("10.9.0.1")),
            underlay: Some(2),
            learning: false,
        },
        1450,
        Some(Mac([0x0e, 0x53, 10, 200, 1, 0])),
    ));
    s.links.push(link(
        4,
        "strata-br",
        LinkKind::Bridge,
        1450,
        Some(Mac([0x0e, 0x54, 10, 200, 1, 0])),
    ));
    s.addresses.push(Address {
        dev: "strata-vx".into(),
        addr: cidr("10.200.1.0/32"),
    });
    s.addresses.push(Address {
        dev: "strata-br".into(),
        addr: cidr("10.200.1.1/24"),
    });
    s.routes.push(Route {
        dst: cidr("10.200.1.0/24"),
        gateway: None,
        dev: "strata-br".into(),
        onlink: false,
    });
    for p in peers {
        s.routes.push(Route {
            dst: p.subnet,
            gateway: Some(p.subnet.addr),
            dev: "strata-vx".into(),
            onlink: true,
        });
        s.neighbours.push(Neighbour {
            dev: "strata-vx".into(),
            ip: p.subnet.addr,
            mac: Some(vtep_mac(p.subnet)),
            permanent: true,
        });
        s.fdb.push(Fdb {
            dev: "strata-vx".into(),
            mac: vtep_mac(p.subnet),
            dst: Some(p.underlay),
            permanent: true,
        });
    }
    s
}

fn check(desired: &OverlayState, observed: &NetlinkState, expected: Expect) {
    let actions = plan(desired, observed);
    let text: Vec<String> = actions.iter().map(ToString::to_string).collect();
    expected.assert_eq(&text.join("\n"));
}

#[test]
fn from_scratch() {
    check(
        &desired(two_peers()),
        &bare(),
        expect![[r#"
            sysctl net.ipv4.ip_forward=1
            link add strata-vx type vxlan id 4242 dstport 4789 local 10.9.0.1 dev eth0 nolearning mtu 1450 address 0e:53:0a:c8:01:00
            link set strata-vx up
            link add strata-br type bridge mtu 1450 address 0e:54:0a:c8:01:00
            link set strata-br up
            addr add 10.200.1.0/32 dev strata-vx
            addr add 10.200.1.1/24 dev strata-br
            fdb add 0e:53:0a:c8:02:00 dev strata-vx dst 10.9.0.2 self permanent
            fdb add 0e:53:0a:c8:03:00 dev strata-vx dst 10.9.0.3 self permanent
            neigh replace 10.200.2.0 lladdr 0e:53:0a:c8:02:00 dev strata-vx nud permanent
            neigh replace 10.200.3.0 lladdr 0e:53:0a:c8:03:00 dev strata-vx nud permanent
            route add 10.200.2.0/24 via 10.200.2.0 dev strata-vx onlink
            route add 10.200.3.0/24 via 10.200.3.0 dev strata-vx onlink"#]],
    );
}

#[test]
fn converged_state_needs_nothing() {
    // An agent restart plans against what it built before: no action, so no flap.
    check(&desired(two_peers()), &converged(&two_peers()), expect![""]);
    // The node itself in the peer list, and duplicates, change nothing.
    let mut peers = two_peers();
    peers.push(peer("a", "10.9.0.1", "10.200.1.0/24"));
    peers.push(peer("b", "10.9.0.2", "10.200.2.0/24"));
    check(&desired(peers), &converged(&two_peers()), expect![""]);
}

#[test]
fn peer_joins_and_leaves() {
    let mut three = two_peers();
    three.push(peer("d", "10.9.0.4", "10.200.4.0/24"));
    check(
        &desired(three),
        &converged(&two_peers()),
        expect![[r#"
            fdb add 0e:53:0a:c8:04:00 dev strata-vx dst 10.9.0.4 self permanent
            neigh replace 10.200.4.0 lladdr 0e:53:0a:c8:04:00 dev strata-vx nud permanent
            route add 10.200.4.0/24 via 10.200.4.0 dev strata-vx onlink"#]],
    );
    check(
        &desired(vec![peer("b", "10.9.0.2", "10.200.2.0/24")]),
        &converged(&two_peers()),
        expect![[r#"
            route del 10.200.3.0/24 via 10.200.3.0 dev strata-vx onlink
            neigh del 10.200.3.0 dev strata-vx
            fdb del 0e:53:0a:c8:03:00 dev strata-vx dst 10.9.0.3"#]],
    );
}

#[test]
fn drifted_entries_are_repaired() {
    // Peer c moved to another underlay address; a neighbour went stale; an
    // extra address and a foreign route sit on our devices.
    let mut observed = converged(&two_peers());
    observed.neighbours[2].permanent = false;
    observed.addresses.push(Address {
        dev: "strata-br".into(),
        addr: cidr("10.200.9.1/24"),
    });
    observed.routes.push(Route {
        dst: cidr("10.201.0.0/16"),
        gateway: None,
        dev: "strata-vx".into(),
        onlink: false,
    });
    observed.links[3].mtu = 1400;
    observed.links[3].up = false;
    let peers = vec![
        peer("b", "10.9.0.2", "10.200.2.0/24"),
        peer("c", "10.9.0.33", "10.200.3.0/24"),
    ];
    check(
        &desired(peers),
        &observed,
        expect![[r#"
            link set strata-br mtu 1450
            link set strata-br up
            addr del 10.200.9.1/24 dev strata-br
            route del 10.201.0.0/16 dev strata-vx
            fdb del 0e:53:0a:c8:03:00 dev strata-vx dst 10.9.0.3
            fdb add 0e:53:0a:c8:03:00 dev strata-vx dst 10.9.0.33 self permanent
            neigh replace 10.200.3.0 lladdr 0e:53:0a:c8:03:00 dev strata-vx nud permanent"#]],
    );
}

#[test]
fn changed_vni_recreates_the_device() {
    let mut d = desired(two_peers());
    d.vxlan.vni = 7;
    check(
        &d,
        &converged(&two_peers()),
        expect![[r#"
            link del strata-vx
            link add strata-vx type vxlan id 7 dstport 4789 local 10.9.0.1 dev eth0 nolearning mtu 1450 address 0e:53:0a:c8:01:00
            link set strata-vx up
            addr add 10.200.1.0/32 dev strata-vx
            fdb add 0e:53:0a:c8:02:00 dev strata-vx dst 10.9.0.2 self permanent
            fdb add 0e:53:0a:c8:03:00 dev strata-vx dst 10.9.0.3 self permanent
            neigh replace 10.200.2.0 lladdr 0e:53:0a:c8:02:00 dev strata-vx nud permanent
            neigh replace 10.200.3.0 lladdr 0e:53:0a:c8:03:00 dev strata-vx nud permanent
            route add 10.200.2.0/24 via 10.200.2.0 dev strata-vx onlink
            route add 10.200.3.0/24 via 10.200.3.0 dev strata-vx onlink"#]],
    );
}

#[test]
fn mtu_defaults_to_underlay_minus_50() {
    assert_eq!(
        (
            overlay_mtu(None, 1500),
            overlay_mtu(None, 9000),
            overlay_mtu(Some(1400), 1500)
        ),
        (1450, 8950, 1400)
    );
    assert_eq!(
        vtep_mac(cidr("10.200.3.7/24")).to_string(),
        "0e:53:0a:c8:03:00"
    );
}
