//! Host tier: three nodes, each a network namespace on a veth-and-bridge
//! underlay, wired by the overlay module as the agent wires them; tasks on
//! different nodes talk over real VXLAN and find each other through the
//! node's DNS server. Needs root.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use agent::testing::lab::{self, Lab};
use qemu_tests::testenv::{Need, require};

fn tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "ov{}x{}",
        std::process::id() % 100_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Every node's netlink state on the overlay devices and its nftables
/// table, as text.
fn dumps(lab: &Lab) -> Vec<String> {
    lab.nodes
        .iter()
        .map(|n| {
            let d = agent::overlay::netlink::dump(Some(&n.netns)).expect("dump");
            let ns = n
                .netns
                .file_name()
                .and_then(|f| f.to_str())
                .expect("named netns");
            let nft = std::process::Command::new("ip")
                .args(["netns", "exec", ns, "nft", "list", "table", "ip", "strata"])
                .output()
                .expect("nft list");
            assert!(
                nft.status.success(),
                "nft list failed: {}",
                String::from_utf8_lossy(&nft.stderr)
            );
            format!(
                "{}\n{}",
                d.render(&["strata-vx", "strata-br"]),
                String::from_utf8_lossy(&nft.stdout)
            )
        })
        .collect()
}

#[test]
fn three_nodes_talk_over_the_overlay() {
    if !require(
        "three_nodes_talk_over_the_overlay",
        &[Need::Root, Need::File("/proc/sys/net/ipv4")],
    ) {
        return;
    }
    let mut lab = Lab::new(&tag(), 3, None, 1500).expect("lab");
    let all = [0, 1, 2];
    for i in all {
        let actions = lab.reconcile(i, &all).expect("first reconcile");
        assert!(!actions.is_empty(), "a fresh node needs actions");
    }
    let a = lab.add_task(0, "web").expect("task on node 0");
    let b = lab.add_task(1, "db").expect("task on node 1");
    let c = lab.add_task(2, "cache").expect("task on node 2");
    assert_eq!(
        (a.to_string(), b.to_string(), c.to_string()),
        (
            "10.200.0.2/24".into(),
            "10.200.1.2/24".into(),
            "10.200.2.2/24".into()
        )
    );

    // The bridge keeps its own MAC with task veths attached.
    let d0 = agent::overlay::netlink::dump(Some(&lab.nodes[0].netns)).expect("dump");
    let br = d0.link("strata-br").expect("bridge");
    assert_eq!(
        br.mac,
        Some(agent::overlay::plan::bridge_mac(lab.nodes[0].subnet))
    );

    // Task to task across nodes, by overlay address.
    let db: SocketAddr = (b.addr, 7000).into();
    let cache: SocketAddr = (c.addr, 7000).into();
    let srv_b = lab::echo_server(lab.task_ns("db").expect("ns"), db).expect("echo on db");
    let srv_c = lab::echo_server(lab.task_ns("cache").expect("ns"), cache).expect("echo on cache");
    let web = lab.task_ns("web").expect("ns");
    assert_eq!(
        lab::roundtrip(&web, db, "hello db").expect("web to db"),
        "hello db"
    );
    assert_eq!(
        lab::roundtrip(&web, cache, "hello cache").expect("web to cache"),
        "hello cache"
    );

    // By name, through the node's own DNS server (what the task's
    // resolv.conf points at), with records that follow tasks at once.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let records = agent::dns::Records::new();
    for (task, addr) in [("web", a), ("db", b), ("cache", c)] {
        records.upsert(
            task,
            agent::dns::TaskRecord {
                app: Some(format!("{task}-app")),
                addr: addr.addr,
                ports: vec![7000],
                named: Default::default(),
            },
        );
    }
    let servers: Vec<_> = {
        let _guard = rt.enter();
        (0..3)
            .map(|i| lab::start_dns(&lab, i, "strata.internal", records.clone(), &[]).expect("dns"))
            .collect()
    };
    let resolver = servers[0].addr;
    let conf = agent::dns::render_resolv_conf(
        agent::overlay::plan::gateway(lab.nodes[0].subnet),
        "strata.internal",
    );
    assert!(
        conf.contains(&format!("nameserver {}\n", resolver.ip())),
        "{conf}"
    );
    let found = lab::resolve(&web, resolver, "db-app.strata.internal.").expect("resolve db");
    assert_eq!(found, [b.addr]);
    assert_eq!(
        lab::roundtrip(&web, (found[0], 7000).into(), "by name").expect("web to db by name"),
        "by name"
    );
    records.remove("db");
    assert!(
        lab::resolve(&web, resolver, "db-app.strata.internal.")
            .expect("resolve")
            .is_empty(),
        "db stopped"
    );
    records.upsert(
        "db",
        agent::dns::TaskRecord {
            app: Some("db-app".into()),
            addr: b.addr,
            ports: vec![7000],
            named: Default::default(),
        },
    );
    assert_eq!(
        lab::resolve(&web, resolver, "db.strata.internal.").expect("resolve db"),
        [b.addr]
    );
    // Each node's resolver answers on its own gateway.
    let db_ns = lab.task_ns("db").expect("ns");
    assert_eq!(
        lab::resolve(&db_ns, servers[1].addr, "web.strata.internal.").expect("resolve web"),
        [a.addr]
    );
    rt.block_on(async {
        for s in servers {
            s.stop().await.expect("stop dns");
        }
    });

    // Leaving the overlay, a task's traffic is masqueraded: a server on
    // node 1's underlay address sees node 0's underlay address.
    let outside: SocketAddr = (lab.nodes[1].underlay_ip, 7100).into();
    let srv_u =
        lab::echo_server(lab.nodes[1].netns.clone(), outside).expect("echo on node 1 underlay");
    assert_eq!(
        lab::roundtrip(&web, outside, "whoami").expect("web to underlay"),
        lab.nodes[0].underlay_ip.to_string()
    );
    assert_eq!(
        lab::roundtrip(&web, db, "whoami").expect("web to db"),
        a.addr.to_string(),
        "inside the overlay no NAT"
    );
    lab::stop_echo(&web, outside).expect("stop");
    srv_u.join().expect("join").expect("underlay echo");

    // An agent restart: planning again changes nothing, the dumps stay
    // identical and a connection open across it keeps working.
    let before = dumps(&lab);
    let conn = lab::Conversation::open(&web, db).expect("long connection");
    for i in all {
        let actions = lab.reconcile(i, &all).expect("second reconcile");
        assert!(
            actions.is_empty(),
            "restart of node {i} planned {actions:?}"
        );
        conn.say("still there").expect("traffic across the restart");
    }
    assert_eq!(dumps(&lab), before);
    conn.close();

    // Node 2 leaves: its route, neighbour and FDB entry vanish from the others.
    let subnet2 = lab.nodes[2].subnet;
    for i in [0, 1] {
        let actions = lab.reconcile(i, &[0, 1]).expect("reconcile after leave");
        assert_eq!(actions.len(), 3, "{actions:?}");
        let d = agent::overlay::netlink::dump(Some(&lab.nodes[i].netns)).expect("dump");
        let text = d.render(&["strata-vx"]);
        assert!(
            !text.contains(&subnet2.addr.to_string()),
            "node {i} still has {subnet2}:\n{text}"
        );
        assert!(
            !text.contains(&lab.nodes[2].underlay_ip.to_string()),
            "node {i} still has node 2's FDB entry:\n{text}"
        );
    }
    assert!(
        lab::roundtrip(&web, cache, "gone?").is_err(),
        "node 2 is unreachable after leaving"
    );
    assert_eq!(
        lab::roundtrip(&web, db, "hello again").expect("web to db"),
        "hello again"
    );

    // Task stop and agent restart on the IPAM side: a stopped task's veth
    // goes and its address is freed; a reopened book keeps the running ones.
    let extra = lab.add_task(0, "extra").expect("second task on node 0");
    assert_eq!(extra.to_string(), "10.200.0.3/24");
    lab.remove_task("extra").expect("stop task");
    let node0 = agent::overlay::netlink::dump(Some(&lab.nodes[0].netns)).expect("dump");
    let veth = agent::overlay::ipam::veth_name(&lab.task_key("extra"));
    assert!(node0.link(&veth).is_none(), "{veth} left behind");
    let reopened = agent::overlay::NodeNetwork::open(
        &lab.state_dir(0),
        Some(lab.nodes[0].netns.clone()),
        lab.nodes[0].net.node.clone(),
        lab.nodes[0].subnet,
        lab.cluster,
        || panic!("the book is sound: nothing to rebuild"),
    )
    .expect("reopen after restart");
    assert_eq!(reopened.address_of(&lab.task_key("web")), Some(a.addr));
    assert_eq!(reopened.address_of(&lab.task_key("extra")), None);

    lab::stop_echo(&web, db).expect("stop db echo");
    srv_b.join().expect("join").expect("db echo");
    drop(srv_c); // unreachable now; the thread ends with the process
}

/// Raw Ethernet frames for the bridge's anti-spoofing test, sent and
/// captured through AF_PACKET sockets on a task's `eth0`.
mod frames {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use anyhow::Context as _;

    pub const BROADCAST: [u8; 6] = [0xff; 6];
    /// The MAC of IPv6's all-nodes group (ff02::1).
    pub const ALL_NODES: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const IPV6: u16 = 0x86dd;

    pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        [&dst[..], &src[..], &ethertype.to_be_bytes()[..], payload].concat()
    }

    /// A UDP datagram from port 4000 to 4001, without checksum.
    fn udp(payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(8 + payload.len()).expect("a small datagram");
        [
            &4000u16.to_be_bytes()[..],
            &4001u16.to_be_bytes()[..],
            &len.to_be_bytes()[..],
            &[0, 0][..],
            payload,
        ]
        .concat()
    }

    pub fn ipv4_udp(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let udp = udp(payload);
        let total = u16::try_from(20 + udp.len()).expect("a small packet");
        let mut header = [
            &[0x45, 0][..],
            &total.to_be_bytes()[..],
            &[0, 1, 0, 0, 64, 17, 0, 0][..],
        ]
        .concat();
        header.extend_from_slice(&src.octets());
        header.extend_from_slice(&dst.octets());
        let mut sum: u32 = header
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let check = !u16::try_from(sum).expect("folded");
        header[10..12].copy_from_slice(&check.to_be_bytes());
        [header, udp].concat()
    }

    /// An ARP request (Ethernet, IPv4) for `target` from `sender_mac` /
    /// `sender`, with `marker` after it (in the frame's padding).
    pub fn arp_request(
        sender_mac: [u8; 6],
        sender: Ipv4Addr,
        target: Ipv4Addr,
        marker: &[u8],
    ) -> Vec<u8> {
        [
            &[0, 1, 0x08, 0x00, 6, 4, 0, 1][..],
            &sender_mac[..],
            &sender.octets()[..],
            &[0; 6][..],
            &target.octets()[..],
            marker,
        ]
        .concat()
    }

    /// A UDP datagram from fe80::53:1 to ff02::1.
    pub fn ipv6_udp(payload: &[u8]) -> Vec<u8> {
        let udp = udp(payload);
        let len = u16::try_from(udp.len()).expect("a small datagram");
        let src: Ipv6Addr = "fe80::53:1".parse().expect("an address");
        let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        [
            &[0x60, 0, 0, 0][..],
            &len.to_be_bytes()[..],
            &[17, 64][..],
            &src.octets()[..],
            &dst.octets()[..],
            &udp[..],
        ]
        .concat()
    }

    fn os_error(what: &str) -> anyhow::Error {
        anyhow::anyhow!("{what}: {}", std::io::Error::last_os_error())
    }

    /// An AF_PACKET socket bound to `eth0` of the calling thread's network
    /// namespace, for every protocol.
    fn packet_socket() -> anyhow::Result<OwnedFd> {
        let name = std::ffi::CString::new("eth0").context("interface name")?;
        // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(os_error("no eth0"));
        }
        let protocol = u16::try_from(libc::ETH_P_ALL).context("ETH_P_ALL")?.to_be();
        // SAFETY: socket takes no pointers and returns a new descriptor or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(protocol),
            )
        };
        if fd < 0 {
            return Err(os_error("socket(AF_PACKET)"));
        }
        // SAFETY: the kernel just returned fd, and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data, for which all zero is a value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = u16::try_from(libc::AF_PACKET).context("AF_PACKET")?;
        addr.sll_protocol = protocol;
        addr.sll_ifindex = i32::try_from(index).context("interface index")?;
        // SAFETY: addr is a sockaddr_ll of the size given, alive during the call.
        let bound = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                u32::try_from(std::mem::size_of::<libc::sockaddr_ll>()).context("size")?,
            )
        };
        if bound != 0 {
            return Err(os_error("bind to eth0"));
        }
        Ok(fd)
    }

    /// Sends `frames` out of `eth0` in `netns`.
    pub fn send(netns: &Path, frames: &[Vec<u8>]) -> anyhow::Result<()> {
        agent::overlay::netns::run_in(Some(netns), || {
            let fd = packet_socket()?;
            for frame in frames {
                // SAFETY: frame is a live buffer of the length given.
                let sent =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if usize::try_from(sent).ok() != Some(frame.len()) {
                    return Err(os_error("send"));
                }
            }
            Ok(())
        })
    }

    /// Captures what arrives on `eth0` in `netns` for `window` and returns
    /// which of `markers` the frames held. Returns once the socket is bound.
    pub fn capture(
        netns: PathBuf,
        window: Duration,
        markers: &'static [&'static str],
    ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<anyhow::Result<Vec<&'static str>>>>>
    {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle =
            agent::overlay::netns::spawn_in(netns, move || -> anyhow::Result<Vec<&'static str>> {
                let fd = match packet_socket() {
                    Ok(fd) => {
                        let _ = ready_tx.send(Ok(()));
                        fd
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("{e:#}")));
                        return Err(e);
                    }
                };
                let timeout = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                // SAFETY: timeout is a timeval of the size given, alive during the call.
                let set = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_RCVTIMEO,
                        (&raw const timeout).cast(),
                        u32::try_from(std::mem::size_of::<libc::timeval>()).context("size")?,
                    )
                };
                if set != 0 {
                    return Err(os_error("SO_RCVTIMEO"));
                }
                let mut seen = Vec::new();
                let mut buf = vec![0u8; 2048];
                let deadline = Instant::now() + window;
                while Instant::now() < deadline {
                    // SAFETY: buf is a live, writable buffer of the length given.
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    let Ok(n) = usize::try_from(n) else {
                        continue; // the timeout
                    };
                    let frame = &buf[..n];
                    for &m in markers {
                        if frame.windows(m.len()).any(|w| w == m.as_bytes()) && !seen.contains(&m) {
                            seen.push(m);
                        }
                    }
                }
                seen.sort_unstable();
                Ok(seen)
            });
        ready_rx
            .recv()
            .context("the capture thread died")?
            .map_err(anyhow::Error::msg)?;
        Ok(handle)
    }
}

/// A task's frames go on only from its own MAC and address: a forged
/// source address or MAC, ARP claiming another's address and IPv6 stop at
/// the bridge, while what it may send passes; and a metadata address routed
/// to the node (169.254.169.254 on its loopback, an echo server behind it)
/// is out of a task's reach while the node's resolver still answers.
#[test]
fn the_bridge_drops_what_a_task_forges_and_metadata_traffic() {
    if !require(
        "the_bridge_drops_what_a_task_forges_and_metadata_traffic",
        &[
            Need::Root,
            Need::File("/proc/sys/net/ipv4"),
            Need::Program("nft"),
            Need::Program("ip"),
        ],
    ) {
        return;
    }
    use agent::overlay::plan::{gateway, task_mac};

    let mut lab = Lab::new(&tag(), 1, None, 1500).expect("lab");
    lab.reconcile(0, &[0]).expect("reconcile");
    let a = lab.add_task(0, "a").expect("task a");
    let b = lab.add_task(0, "b").expect("task b");
    let (ns_a, ns_b) = (lab.task_ns("a").expect("ns"), lab.task_ns("b").expect("ns"));
    // Each task's end carries the MAC derived from its address.
    let mac_a = task_mac(a.addr);
    let eth0 = agent::overlay::netlink::dump(Some(&ns_a)).expect("dump");
    assert_eq!(eth0.link("eth0").and_then(|l| l.mac), Some(mac_a));

    const MARKERS: &[&str] = &[
        "strata-legit-ipv4",
        "strata-forged-ip",
        "strata-forged-mac",
        "strata-legit-arp",
        "strata-arp-spoof",
        "strata-ipv6",
    ];
    let capture = frames::capture(ns_b, Duration::from_secs(1), MARKERS).expect("capture on b");
    let broadcast = Ipv4Addr::from(u32::from(lab.nodes[0].subnet.network()) | 0xff);
    let forged_mac = task_mac(Ipv4Addr::new(10, 200, 0, 99)).0;
    let udp = |mac: [u8; 6], src: Ipv4Addr, marker: &str| {
        frames::ethernet(
            frames::BROADCAST,
            mac,
            frames::IPV4,
            &frames::ipv4_udp(src, broadcast, marker.as_bytes()),
        )
    };
    let arp = |sender: Ipv4Addr, marker: &str| {
        frames::ethernet(
            frames::BROADCAST,
            mac_a.0,
            frames::ARP,
            &frames::arp_request(mac_a.0, sender, b.addr, marker.as_bytes()),
        )
    };
    frames::send(
        &ns_a,
        &[
            udp(mac_a.0, a.addr, "strata-legit-ipv4"),
            udp(mac_a.0, Ipv4Addr::new(10, 200, 0, 77), "strata-forged-ip"),
            udp(forged_mac, a.addr, "strata-forged-mac"),
            arp(a.addr, "strata-legit-arp"),
            arp(gateway(lab.nodes[0].subnet), "strata-arp-spoof"),
            frames::ethernet(
                frames::ALL_NODES,
                mac_a.0,
                frames::IPV6,
                &frames::ipv6_udp(b"strata-ipv6"),
            ),
        ],
    )
    .expect("send from a");
    let seen = capture
        .join()
        .expect("capture thread")
        .expect("in b's namespace")
        .expect("capture");
    assert_eq!(
        seen,
        ["strata-legit-arp", "strata-legit-ipv4"],
        "what reached task b from task a"
    );

    // The metadata address, on the node's loopback as a cloud's would be
    // routed: refused, while the resolver on the gateway answers.
    let node_ns = lab.nodes[0]
        .netns
        .file_name()
        .and_then(|f| f.to_str())
        .expect("named netns")
        .to_string();
    let metadata = Ipv4Addr::new(169, 254, 169, 254);
    let added = std::process::Command::new("ip")
        .args([
            "-n",
            &node_ns,
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "lo",
        ])
        .output()
        .expect("ip addr add");
    assert!(
        added.status.success(),
        "ip addr add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let meta: SocketAddr = (metadata, 80).into();
    let srv = lab::echo_server(lab.nodes[0].netns.clone(), meta).expect("metadata echo");
    assert_eq!(
        lab::roundtrip(&lab.nodes[0].netns, meta, "from the node").expect("the node reaches it"),
        "from the node"
    );
    let reached = lab::roundtrip(&ns_a, meta, "from a task");
    assert!(
        reached.is_err(),
        "a task reached the metadata address: {reached:?}"
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let records = agent::dns::Records::new();
    records.upsert(
        "b",
        agent::dns::TaskRecord {
            app: None,
            addr: b.addr,
            ports: vec![],
            named: Default::default(),
        },
    );
    let server = {
        let _guard = rt.enter();
        lab::start_dns(&lab, 0, "strata.internal", records, &[]).expect("dns")
    };
    assert_eq!(
        lab::resolve(&ns_a, server.addr, "b.strata.internal.").expect("resolve b"),
        [b.addr]
    );
    rt.block_on(async { server.stop().await.expect("stop dns") });
    lab::stop_echo(&lab.nodes[0].netns, meta).expect("stop the metadata echo");
    srv.join().expect("join").expect("metadata echo");
}

/// The node's firewall with its overlay (as a master's would be: the
/// API's port open to anywhere): a task on the bridge reaches its node's
/// resolver and nothing else of the node, while another node reaches the
/// API; the node reaches its own task (overlay traffic to and from the
/// node is tracked, so the reply is not taken for a new connection); a
/// task on another node reaches the task over VXLAN only while that node
/// is in the firewall's node set.
#[test]
fn a_task_reaches_only_its_nodes_resolver_through_the_firewall() {
    if !require(
        "a_task_reaches_only_its_nodes_resolver_through_the_firewall",
        &[
            Need::Root,
            Need::File("/proc/sys/net/ipv4"),
            Need::Program("nft"),
            Need::Program("ip"),
        ],
    ) {
        return;
    }
    use agent::firewall::NodeFirewall;
    use control::firewall::{FirewallInput, OverlayInput};

    let mut lab = Lab::new(&tag(), 2, None, 1500).expect("lab");
    let all = [0, 1];
    for i in all {
        lab.reconcile(i, &all).expect("reconcile");
    }
    let a = lab.add_task(0, "a").expect("task a on node 0");
    let b = lab.add_task(1, "b").expect("task b on node 1");
    let (ns_a, ns_b) = (lab.task_ns("a").expect("ns"), lab.task_ns("b").expect("ns"));
    let node0 = &lab.nodes[0];
    let part = |nodes: &[Ipv4Addr]| OverlayInput {
        vxlan_port: node0.net.node.port,
        nodes: nodes.to_vec(),
        bridge: node0.net.node.bridge_name.clone(),
        vxlan: node0.net.node.vxlan_name.clone(),
        gateway: node0.net.resolver(),
    };
    let both: Vec<Ipv4Addr> = lab.nodes.iter().map(|n| n.underlay_ip).collect();
    let fw = NodeFirewall::new(
        Some(node0.netns.clone()),
        FirewallInput {
            role: configs::role::Firewall {
                tcp: vec![9464],
                udp: vec![],
                from: configs::role::Reach::Nodes,
            },
            api_port: Some(6443),
            overlay: Some(part(&both)),
            ..FirewallInput::default()
        },
        None,
    );
    assert!(fw.apply().expect("apply"), "a new firewall is applied");
    assert!(
        !fw.apply().expect("apply again"),
        "the same firewall is not applied twice"
    );

    // The API's port on node 0: node 1 reaches it, task a does not, by
    // the node's underlay address or by its gateway.
    let api: SocketAddr = (Ipv4Addr::UNSPECIFIED, 6443).into();
    let on_underlay: SocketAddr = (node0.underlay_ip, 6443).into();
    let srv_api = lab::echo_server(node0.netns.clone(), api).expect("API stand-in on node 0");
    assert_eq!(
        lab::roundtrip(&lab.nodes[1].netns, on_underlay, "from node 1").expect("node 1 to the API"),
        "from node 1"
    );
    for target in [on_underlay, (node0.net.resolver(), 6443).into()] {
        let reached = lab::roundtrip(&ns_a, target, "from a task");
        assert!(
            reached.is_err(),
            "task a reached {target} through the bridge: {reached:?}"
        );
    }
    lab::stop_echo(&node0.netns, on_underlay).expect("stop the API stand-in");
    srv_api.join().expect("join").expect("API stand-in");

    // Its resolver answers task a.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let records = agent::dns::Records::new();
    records.upsert(
        "b",
        agent::dns::TaskRecord {
            app: None,
            addr: b.addr,
            ports: vec![],
            named: Default::default(),
        },
    );
    let server = {
        let _guard = rt.enter();
        lab::start_dns(&lab, 0, "strata.internal", records, &[]).expect("dns")
    };
    assert_eq!(
        lab::resolve(&ns_a, server.addr, "b.strata.internal.").expect("task a resolves b"),
        [b.addr]
    );
    rt.block_on(async { server.stop().await.expect("stop dns") });

    // Node 0 reaches its own task, and task b (node 1) reaches it over
    // VXLAN; with node 1 out of the node set, VXLAN from it is dropped.
    let at_a: SocketAddr = (a.addr, 7000).into();
    let srv_a = lab::echo_server(ns_a.clone(), at_a).expect("echo on task a");
    assert_eq!(
        lab::roundtrip(&node0.netns, at_a, "from the node").expect("node 0 to its task"),
        "from the node"
    );
    assert_eq!(
        lab::roundtrip(&ns_b, at_a, "from b").expect("task b to task a"),
        "from b"
    );
    assert!(
        fw.set_overlay(Some(part(&both[..1]))).expect("node 1 out"),
        "a smaller node set is applied"
    );
    let reached = lab::roundtrip(&ns_b, at_a, "from b, not a node");
    assert!(
        reached.is_err(),
        "VXLAN from a node out of the set got through: {reached:?}"
    );
    fw.set_overlay(Some(part(&both))).expect("node 1 back");
    assert_eq!(
        lab::roundtrip(&ns_b, at_a, "from b again").expect("task b to task a again"),
        "from b again"
    );
    lab::stop_echo(&ns_a, at_a).expect("stop the echo on a");
    srv_a.join().expect("join").expect("echo on a");
}

/// A throwaway etcd on loopback, killed on drop.
struct Etcd {
    child: std::process::Child,
    dir: std::path::PathBuf,
    endpoint: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_etcd() -> Etcd {
    let dir = std::env::temp_dir().join(format!("strata-overlay-etcd-{}", tag()));
    let (client, peer) = (free_port(), free_port());
    let child = std::process::Command::new("etcd")
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args([
            "--initial-cluster",
            &format!("default=http://127.0.0.1:{peer}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start etcd");
    let etcd = Etcd {
        child,
        dir,
        endpoint: format!("127.0.0.1:{client}"),
    };
    for _ in 0..100 {
        if std::net::TcpStream::connect(&etcd.endpoint).is_ok() {
            return etcd;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("etcd did not come up on {}", etcd.endpoint);
}

fn etcdctl(endpoint: &str, args: &[&str], stdin: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("etcdctl")
        .args(["--endpoints", endpoint])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("etcdctl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("etcdctl output");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One registration as the master runs it: read, allocate, compare-and-swap,
/// retry on conflict. Returns the subnet and the number of attempts.
fn register(
    endpoint: &str,
    cidr: configs::net::Ipv4Cidr,
    node: &str,
) -> Result<(configs::net::Ipv4Cidr, u32), String> {
    use control::lease::{self, LeaseKeys};
    for attempt in 1..=100 {
        let listing = etcdctl(
            endpoint,
            &["get", "--prefix", &format!("{}nodes/", LeaseKeys::PREFIX)],
            "",
        );
        let lines: Vec<&str> = listing.lines().collect();
        let leases =
            lease::leases_from_kvs(lines.chunks(2).filter_map(|kv| Some((kv[0], *kv.get(1)?))))?;
        let subnet = lease::allocate(cidr, 24, &leases, node).map_err(|e| e.to_string())?;
        if leases.get(node) == Some(&subnet) {
            return Ok((subnet, attempt));
        }
        let keys = LeaseKeys::new(node, subnet);
        let txn = format!(
            "version(\"{s}\") = \"0\"\nversion(\"{n}\") = \"0\"\n\nput {s} {node}\nput {n} {subnet}\n\n\n",
            s = keys.by_subnet,
            n = keys.by_node
        );
        if etcdctl(endpoint, &["txn"], &txn).starts_with("SUCCESS") {
            return Ok((subnet, attempt));
        }
    }
    Err(format!("{node}: no lease after 100 attempts"))
}

#[test]
fn concurrent_registrations_never_share_a_subnet() {
    let needs = [Need::Program("etcd"), Need::Program("etcdctl")];
    if !require("concurrent_registrations_never_share_a_subnet", &needs) {
        return;
    }
    let etcd = start_etcd();
    let cidr: configs::net::Ipv4Cidr = "10.200.0.0/21".parse().expect("cidr");
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let endpoint = etcd.endpoint.clone();
                s.spawn(move || (format!("n{i}"), register(&endpoint, cidr, &format!("n{i}"))))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut subnets = std::collections::BTreeSet::new();
    for (node, r) in &results {
        let (subnet, _) = r.as_ref().unwrap_or_else(|e| panic!("{node}: {e}"));
        assert!(
            subnets.insert(*subnet),
            "{subnet} handed out twice: {results:?}"
        );
    }
    assert_eq!(subnets.len(), 8);
    let retried = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_ok_and(|(_, a)| *a > 1))
        .count();
    eprintln!("8 concurrent registrations, {retried} retried after a conflict");
    // Sticky: registering again returns the same subnet without a write.
    let (again, _) = register(&etcd.endpoint, cidr, "n3").expect("re-register");
    assert_eq!(
        Some(&again),
        results
            .iter()
            .find(|(n, _)| n == "n3")
            .and_then(|(_, r)| r.as_ref().ok().map(|(s, _)| s))
    );
    // Full: a ninth node gets a clear error.
    assert_eq!(
        register(&etcd.endpoint, cidr, "n8"),
        Err(
            "overlay 10.200.0.0/21 has no free /24 subnet left for node `n8`: all 8 are leased"
                .to_string()
        )
    );
}
