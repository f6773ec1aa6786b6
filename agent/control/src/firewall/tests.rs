use expect_test::{Expect, expect};

use super::*;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("test ip")
}

fn role(tcp: &[u16], udp: &[u16]) -> configs::role::Firewall {
    configs::role::Firewall {
        tcp: tcp.to_vec(),
        udp: udp.to_vec(),
        from: configs::role::Reach::Anywhere,
    }
}

fn overlay(nodes: &[&str]) -> OverlayInput {
    OverlayInput {
        vxlan_port: 4789,
        nodes: nodes.iter().map(|n| ip(n)).collect(),
        bridge: "strata-br".into(),
        vxlan: "strata-vx".into(),
        gateway: ip("10.200.1.1"),
    }
}

/// A master of three, as the daemon knows it at boot.
fn master_at_boot() -> FirewallInput {
    FirewallInput {
        role: role(&[9464], &[]),
        api_port: Some(6443),
        etcd_ports: vec![2379, 2380],
        masters: vec![ip("10.9.0.10"), ip("10.9.0.11"), ip("10.9.0.12")],
        overlay: None,
        edge: vec![],
    }
}

fn check(input: &FirewallInput, expected: Expect) {
    expected.assert_eq(&plan(input).to_string());
}

#[test]
fn a_private_agent_at_boot_opens_only_its_role_ports() {
    check(
        &FirewallInput {
            role: role(&[9464], &[]),
            ..FirewallInput::default()
        },
        expect![[r#"
            accept established and related
            drop invalid
            accept loopback
            accept icmp and icmpv6 errors, echo requests, neighbour discovery
            accept dhcp and dhcpv6 replies
            accept tcp 9464 from anywhere (the role's ports)
            drop and count everything else"#]],
    );
}

#[test]
fn a_master_opens_the_api_to_all_and_etcd_to_the_masters() {
    check(
        &master_at_boot(),
        expect![[r#"
            set masters: 10.9.0.10, 10.9.0.11, 10.9.0.12
            accept established and related
            drop invalid
            accept loopback
            accept icmp and icmpv6 errors, echo requests, neighbour discovery
            accept dhcp and dhcpv6 replies
            accept tcp 6443 from anywhere (the API)
            accept tcp 2379, 2380 from the masters (etcd)
            accept tcp 9464 from anywhere (the role's ports)
            drop and count everything else"#]],
    );
    // Without etcd ports (an agent that knows the masters), no set.
    let no_etcd = FirewallInput {
        etcd_ports: vec![],
        ..master_at_boot()
    };
    assert!(plan(&no_etcd).masters.is_none());
    assert!(!plan(&no_etcd).to_string().contains("etcd"));
}

#[test]
fn the_overlay_admits_vxlan_from_the_nodes_and_only_dns_from_tasks() {
    check(
        &FirewallInput {
            role: role(&[80, 443, 9464], &[]),
            overlay: Some(overlay(&["10.9.0.21", "10.9.0.10", "10.9.0.22"])),
            ..FirewallInput::default()
        },
        expect![[r#"
            set nodes: 10.9.0.10, 10.9.0.21, 10.9.0.22
            accept established and related
            drop invalid
            accept loopback
            accept icmp and icmpv6 errors, echo requests, neighbour discovery
            accept udp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)
            accept tcp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)
            drop everything else from strata-br, strata-vx
            accept dhcp and dhcpv6 replies
            accept udp 4789 from the nodes (VXLAN)
            accept tcp 80, 443, 9464 from anywhere (the role's ports)
            drop and count everything else"#]],
    );
}

/// A role file that lists a port the plan restricts (etcd's, VXLAN's) or
/// already opens (the API's) does not open it to everyone: the role
/// files of earlier releases listed them all.
#[test]
fn the_role_never_widens_a_restricted_port() {
    let input = FirewallInput {
        role: role(&[6443, 2379, 2380, 9464, 9464], &[53, 4789]),
        overlay: Some(overlay(&["10.9.0.10"])),
        ..master_at_boot()
    };
    check(
        &input,
        expect![[r#"
            set masters: 10.9.0.10, 10.9.0.11, 10.9.0.12
            set nodes: 10.9.0.10
            accept established and related
            drop invalid
            accept loopback
            accept icmp and icmpv6 errors, echo requests, neighbour discovery
            accept udp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)
            accept tcp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)
            drop everything else from strata-br, strata-vx
            accept dhcp and dhcpv6 replies
            accept tcp 6443 from anywhere (the API)
            accept tcp 2379, 2380 from the masters (etcd)
            accept udp 4789 from the nodes (VXLAN)
            accept tcp 9464 from anywhere (the role's ports)
            accept udp 53 from anywhere (the role's ports)
            drop and count everything else"#]],
    );
}

/// The agent replaces the table whenever the plan changes: the same
/// cluster, listed in another order or with duplicates, plans the same, and
/// planning twice gives the same.
#[test]
fn equal_inputs_plan_the_same() {
    let mut a = master_at_boot();
    a.overlay = Some(overlay(&["10.9.0.10", "10.9.0.21", "10.9.0.22"]));
    let mut b = a.clone();
    b.masters.reverse();
    b.masters.push(ip("10.9.0.11"));
    b.etcd_ports = vec![2380, 2379, 2380];
    b.role.tcp = vec![9464, 9464];
    if let Some(o) = b.overlay.as_mut() {
        o.nodes = vec![
            ip("10.9.0.22"),
            ip("10.9.0.10"),
            ip("10.9.0.21"),
            ip("10.9.0.22"),
        ];
    }
    assert_eq!(plan(&a), plan(&a));
    assert_eq!(plan(&a), plan(&b));
    // A node joining changes only the nodes' set.
    let mut c = a.clone();
    if let Some(o) = c.overlay.as_mut() {
        o.nodes.push(ip("10.9.0.23"));
    }
    let (pa, pc) = (plan(&a), plan(&c));
    assert_eq!(pa.rules, pc.rules);
    assert_eq!(pa.masters, pc.masters);
    assert_ne!(pa.nodes, pc.nodes);
}

/// The overlay part is kept in the agent's run directory as JSON; a file
/// of an older agent of the same boot reads back (unknown fields are
/// ignored).
#[test]
fn the_overlay_part_reads_back() {
    let o = overlay(&["10.9.0.10", "10.9.0.21"]);
    let json = serde_json::to_string(&o).expect("json");
    expect![[r#"{"vxlan_port":4789,"nodes":["10.9.0.10","10.9.0.21"],"bridge":"strata-br","vxlan":"strata-vx","gateway":"10.200.1.1"}"#]]
        .assert_eq(&json);
    let newer = json.replace("}", ",\"later\":1}");
    let back: OverlayInput = serde_json::from_str(&newer).expect("reads a newer file");
    assert_eq!(back, o);
}

/// The shipped roles open their ports to the nodes only: before the node
/// list is known nobody is admitted, after it the nodes' set.
#[test]
fn role_ports_from_the_nodes_wait_for_the_node_list() {
    let nodes_only = configs::role::Firewall {
        from: configs::role::Reach::Nodes,
        ..role(&[9464], &[])
    };
    check(
        &FirewallInput {
            role: nodes_only.clone(),
            ..FirewallInput::default()
        },
        expect![[r#"
            accept established and related
            drop invalid
            accept loopback
            accept icmp and icmpv6 errors, echo requests, neighbour discovery
            accept dhcp and dhcpv6 replies
            drop and count everything else"#]],
    );
    check(
        &FirewallInput {
            role: nodes_only,
            overlay: Some(overlay(&["10.9.0.21", "10.9.0.10"])),
            ..FirewallInput::default()
        },
        expect![[r#"
            set nodes: 10.9.0.10, 10.9.0.21
            accept established and related
            drop invalid
            accept loopback
            accept icmp and icmpv6 errors, echo requests, neighbour discovery
            accept udp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)
            accept tcp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)
            drop everything else from strata-br, strata-vx
            accept dhcp and dhcpv6 replies
            accept udp 4789 from the nodes (VXLAN)
            accept tcp 9464 from the nodes (the role's ports)
            drop and count everything else"#]],
    );
}

/// A public agent opens the edge's ports to everyone, after every cluster
/// rule: a port the role opens to the nodes only stays so, and the rules
/// before the edge's are the same with and without exposures.
#[test]
fn the_edge_opens_its_ports_last_and_never_widens_a_cluster_port() {
    let base = FirewallInput {
        role: configs::role::Firewall {
            from: configs::role::Reach::Nodes,
            ..role(&[9464], &[])
        },
        overlay: Some(overlay(&["10.9.0.10"])),
        ..FirewallInput::default()
    };
    let exposed = FirewallInput {
        edge: vec![10100, 80, 9464],
        ..base.clone()
    };
    check(
        &exposed,
        expect![[r#"
            set nodes: 10.9.0.10
            accept established and related
            drop invalid
            accept loopback
            accept icmp and icmpv6 errors, echo requests, neighbour discovery
            accept udp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)
            accept tcp 53 to 10.200.1.1 from strata-br, strata-vx (the node's resolver)
            drop everything else from strata-br, strata-vx
            accept dhcp and dhcpv6 replies
            accept udp 4789 from the nodes (VXLAN)
            accept tcp 9464 from the nodes (the role's ports)
            accept tcp 80, 10100 from anywhere (the edge's exposed ports)
            drop and count everything else"#]],
    );
    let without = plan(&base).rules;
    let with = plan(&exposed).rules;
    assert_eq!(without[..without.len() - 1], with[..without.len() - 1]);
}
