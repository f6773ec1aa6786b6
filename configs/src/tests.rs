use expect_test::{Expect, expect};

use crate::Kind;

/// Checks `text` as `kind` and compares the summary or the error with `expected`.
fn check(kind: Kind, text: &str, expected: Expect) {
    let actual = match crate::check("test.toml", text, Some(kind)) {
        Ok(summary) => summary,
        Err(e) => format!("error: {e}"),
    };
    expected.assert_eq(&actual);
}

#[test]
fn shipped_role_defaults_are_valid() {
    check(
        Kind::Role,
        include_str!("../roles/master.toml"),
        expect!["test.toml: role defaults for `master` (2 extra packages, API port 6443)"],
    );
    check(
        Kind::Role,
        include_str!("../roles/private.toml"),
        expect!["test.toml: role defaults for `private` (0 extra packages, API port 6443)"],
    );
    check(
        Kind::Role,
        include_str!("../roles/public.toml"),
        expect!["test.toml: role defaults for `public` (1 extra packages, API port 6443)"],
    );
}

#[test]
fn example_cluster_is_valid() {
    check(
        Kind::Cluster,
        include_str!("../cluster.example.toml"),
        expect![
            "test.toml: cluster `demo` with 1 master(s), 3 node(s), overlay 10.200.0.0/16 (/24 per node, VNI 4242)"
        ],
    );
}

const CLUSTER: &str = r#"
name = "demo"
masters = ["10.9.0.10"]
[overlay]
cidr = "10.200.0.0/16"
"#;

#[test]
fn malformed_cluster() {
    check(
        Kind::Cluster,
        "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n[certificates]\nnode_lifetime_seconds = 30\n",
        expect![
            "error: test.toml:4:25: field `certificates.node_lifetime_seconds`: 30s is outside 60 seconds to 10 years"
        ],
    );
    check(
        Kind::Cluster,
        "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n[registries]\ninsecure = [\"10.0.2.2:5000\", \"http://r.example:5000\"]\n",
        expect![
            "error: test.toml:4:30: field `registries.insecure[1]`: `http://r.example:5000` is not a registry: no scheme is wanted, expected host or host:port like 10.0.2.2:5000"
        ],
    );
    check(
        Kind::Cluster,
        "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n[registries]\ninsecure = [\"r.example:0\"]\n",
        expect![
            "error: test.toml:4:13: field `registries.insecure[0]`: `r.example:0` is not a registry: the port is not 1 to 65535, expected host or host:port like 10.0.2.2:5000"
        ],
    );
    check(
        Kind::Cluster,
        "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n[registries]\ninsecure = [\"reg.example/team\"]\n",
        expect![
            "error: test.toml:4:13: field `registries.insecure[0]`: `reg.example/team` is not a registry: no path is wanted, expected host or host:port like 10.0.2.2:5000"
        ],
    );
    check(
        Kind::Cluster,
        "name = \"demo\"\nmasters = [\"10.9.0.10\"\n",
        expect!["error: test.toml:2:23: field `masters`: unclosed array, expected `]`"],
    );
    check(
        Kind::Cluster,
        "name = \"Demo_1\"\nmasters = [\"10.9.0.10\"]\n",
        expect![
            "error: test.toml:1:8: field `name`: `Demo_1` is not a valid name, expected 1 to 63 of a-z, 0-9 and `-`, not starting or ending with `-`"
        ],
    );
    check(
        Kind::Cluster,
        "name = \"demo\"\nmasters = [\"10.9.0.10\", \"10.9.0.11\"]\n",
        expect![
            "error: test.toml:2:11: field `masters`: 2 master(s) given, expected 1, 3 or 5 for an etcd quorum"
        ],
    );
    check(
        Kind::Cluster,
        "name = \"demo\"\nmasters = [\"10.9.0.300\"]\n",
        expect!["error: test.toml:2:12: field `masters[0]`: invalid IPv4 address syntax"],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}vni = 16777216\n"),
        expect![
            "error: test.toml:6:7: field `overlay.vni`: VNI 16777216 is out of range, expected 1 to 16777215"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}subnet_prefix = 12\n"),
        expect![
            "error: test.toml:6:17: field `overlay.subnet_prefix`: /12 does not fit in 10.200.0.0/16, expected a prefix from 17 to 30"
        ],
    );
    check(
        Kind::Cluster,
        "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n[overlay]\ncidr = \"10.9.0.0/16\"\n",
        expect![
            "error: test.toml:4:8: field `overlay.cidr`: 10.9.0.0/16 overlaps the underlay: it holds master 10.9.0.10 (masters[0])"
        ],
    );
    check(
        Kind::Cluster,
        "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n[overlay]\ncidr = \"10.200.0.0/23\"\n[[nodes]]\nname = \"m\"\nrole = \"master\"\naddress = \"10.9.0.10/24\"\n[[nodes]]\nname = \"a\"\nrole = \"private\"\n[[nodes]]\nname = \"b\"\nrole = \"private\"\n",
        expect![
            "error: test.toml:4:8: field `overlay.cidr`: 10.200.0.0/23 holds 2 subnet(s) of /24, but the cluster has 3 node(s)"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}colour = \"blue\"\n"),
        expect![
            "error: test.toml:6:1: field `overlay.colour`: unknown field `colour`, expected one of `cidr`, `subnet_prefix`, `vni`, `port`, `mtu`"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}port = \"4789\"\n"),
        expect![[
            r#"error: test.toml:6:8: field `overlay.port`: invalid type: string "4789", expected u16"#
        ]],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}[dns]\nzone = \"bad..zone\"\n"),
        expect![
            "error: test.toml:7:8: field `dns.zone`: `bad..zone` is not a DNS zone, expected dot-separated labels like strata.internal"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}[heartbeat]\ninterval_seconds = 5\ngrace_seconds = 6\n"),
        expect![
            "error: test.toml:8:17: field `heartbeat.grace_seconds`: 6s is shorter than two heartbeat intervals (5s), expected at least 10"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}[[nodes]]\nname = \"w\"\nrole = \"worker\"\n"),
        expect![
            "error: test.toml:8:8: field `nodes[0].role`: unknown variant `worker`, expected one of `master`, `private`, `public`"
        ],
    );
    check(
        Kind::Cluster,
        &format!(
            "{CLUSTER}[[nodes]]\nname = \"m\"\nrole = \"master\"\naddress = \"10.9.0.10/24\"\n[[nodes]]\nname = \"m\"\nrole = \"private\"\n"
        ),
        expect!["error: test.toml:11:8: field `nodes[1].name`: node name `m` is used twice"],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}[[nodes]]\nname = \"m\"\nrole = \"master\"\naddress = \"10.9.0.10\"\n"),
        expect![
            "error: test.toml:9:11: field `nodes[0].address`: `10.9.0.10` is not in CIDR notation, expected an address and a prefix length like 10.0.0.0/16"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}[[nodes]]\nname = \"a\"\n"),
        expect!["error: test.toml:6:1: field `nodes[0].role`: missing field `role`"],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}[etcd]\nexternal = [\"127.0.0.1:2379\"]\n"),
        expect![
            "error: test.toml:7:13: field `etcd.external[0]`: `127.0.0.1:2379` is not an etcd client URL, expected http://host:port or https://host:port"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{CLUSTER}[etcd]\nquota_bytes = 1000\n"),
        expect![
            "error: test.toml:7:15: field `etcd.quota_bytes`: 1000 bytes is outside 1 MiB to 8 GiB (etcd's suggested maximum), expected for example 2147483648 (2 GiB, the default)"
        ],
    );
    check(
        Kind::Cluster,
        "masters = [\"10.9.0.10\"]\n",
        expect!["error: test.toml:1:1: field `name`: missing field `name`"],
    );
}

#[test]
fn overlay_validation() {
    let base = "name = \"demo\"\nmasters = [\"10.9.0.10\", \"10.9.0.11\", \"10.9.0.12\"]\n";
    // Too small for the masters alone: a /24 split into /25s holds 2 subnets.
    check(
        Kind::Cluster,
        &format!("{base}[overlay]\ncidr = \"10.200.0.0/24\"\nsubnet_prefix = 25\n"),
        expect![
            "error: test.toml:4:8: field `overlay.cidr`: 10.200.0.0/24 holds 2 subnet(s) of /25, but the cluster has 3 node(s)"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{base}[overlay]\ncidr = \"10.200.1.0/16\"\n"),
        expect![
            "error: test.toml:4:8: field `overlay.cidr`: 10.200.1.0/16 has host bits set, expected the network address 10.200.0.0/16"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{base}[overlay]\ncidr = \"127.0.0.0/16\"\n"),
        expect![
            "error: test.toml:4:8: field `overlay.cidr`: 127.0.0.0/16 overlaps 127.0.0.0/8 (loopback), expected a private range like 10.200.0.0/16"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{base}[overlay]\ncidr = \"169.254.0.0/16\"\n"),
        expect![
            "error: test.toml:4:8: field `overlay.cidr`: 169.254.0.0/16 overlaps 169.254.0.0/16 (link-local), expected a private range like 10.200.0.0/16"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{base}[overlay]\ncidr = \"10.0.0.0/8\"\n"),
        expect![
            "error: test.toml:4:8: field `overlay.cidr`: 10.0.0.0/8 overlaps the underlay: it holds master 10.9.0.10 (masters[0])"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{base}[overlay]\ncidr = \"10.200.0.0/16\"\nvni = 0\n"),
        expect![
            "error: test.toml:5:7: field `overlay.vni`: VNI 0 is out of range, expected 1 to 16777215"
        ],
    );
    check(
        Kind::Cluster,
        &format!(
            "{base}[overlay]\ncidr = \"10.200.0.0/16\"\n[dns]\nresolvers = [\"10.200.4.4\"]\n"
        ),
        expect![
            "error: test.toml:6:14: field `dns.resolvers[0]`: resolver 10.200.4.4 is inside the overlay network 10.200.0.0/16, expected an underlay or outside address"
        ],
    );
    check(
        Kind::Cluster,
        &format!("{base}[overlay]\ncidr = \"10.200.0.0/16\"\nmtu = 9500\n"),
        expect![
            "error: test.toml:5:7: field `overlay.mtu`: MTU 9500 is out of range, expected 1280 to 9000"
        ],
    );
    check(
        Kind::Cluster,
        &format!(
            "{base}[overlay]\ncidr = \"10.200.0.0/24\"\nsubnet_prefix = 26\n[dns]\nresolvers = [\"10.9.0.1\"]\n"
        ),
        expect![
            "test.toml: cluster `demo` with 3 master(s), 0 node(s), overlay 10.200.0.0/24 (/26 per node, VNI 4242)"
        ],
    );
}

#[test]
fn edge_ports_validation() {
    let base = "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n";
    for (edge, expected) in [
        (
            "tcp_ports = [20000, 10000]\n",
            expect![
                "error: test.toml:4:13: field `edge.tcp_ports`: [20000, 10000] is not a range of ports: expected [first, last] with 1 <= first <= last"
            ],
        ),
        (
            "http_port = 10080\n",
            expect![
                "error: test.toml:4:13: field `edge.http_port`: port 10080 is inside edge.tcp_ports [10000, 20000], which apps expose over TCP"
            ],
        ),
        (
            "https_port = 80\n",
            expect![
                "error: test.toml:4:14: field `edge.https_port`: port 80 is edge.http_port too"
            ],
        ),
        (
            "tcp_ports = [6000, 7000]\n",
            expect![
                "error: test.toml:3:1: field `edge`: the edge's ports (http_port 80, https_port 443, tcp_ports [6000, 7000]) take port 6443, the API's port (api_port)"
            ],
        ),
        (
            "http_port = 9464\n",
            expect![
                "error: test.toml:3:1: field `edge`: the edge's ports (http_port 9464, https_port 443, tcp_ports [10000, 20000]) take port 9464, the metrics port"
            ],
        ),
        (
            "http_port = 8080\nhttps_port = 8443\ntcp_ports = [30000, 30999]\n",
            expect![
                "test.toml: cluster `demo` with 1 master(s), 0 node(s), overlay 10.200.0.0/16 (/24 per node, VNI 4242)"
            ],
        ),
    ] {
        check(Kind::Cluster, &format!("{base}[edge]\n{edge}"), expected);
    }
}

#[test]
fn vip_range_validation() {
    let base = "name = \"demo\"\nmasters = [\"10.9.0.10\"]\n";
    for (vips, expected) in [
        (
            "cidr = \"198.18.0.1/16\"\n",
            expect![
                "error: test.toml:4:8: field `vips.cidr`: 198.18.0.1/16 is not a network of /8 to /30 (its address must be the network's, 198.18.0.0/16)"
            ],
        ),
        (
            "cidr = \"10.200.0.0/24\"\n",
            expect![
                "error: test.toml:4:8: field `vips.cidr`: 10.200.0.0/24 overlaps 10.200.0.0/16 (the overlay), expected a range of its own like 198.18.0.0/16"
            ],
        ),
        (
            "cidr = \"10.9.0.0/24\"\n",
            expect![
                "error: test.toml:4:8: field `vips.cidr`: 10.9.0.0/24 holds master 10.9.0.10 (masters[0]): VIPs need a range no node is in"
            ],
        ),
        (
            "cidr = \"127.1.0.0/16\"\n",
            expect![
                "error: test.toml:4:8: field `vips.cidr`: 127.1.0.0/16 overlaps 127.0.0.0/8 (loopback), expected a range of its own like 198.18.0.0/16"
            ],
        ),
        (
            "cidr = \"172.30.0.0/20\"\n",
            expect![
                "test.toml: cluster `demo` with 1 master(s), 0 node(s), overlay 10.200.0.0/16 (/24 per node, VNI 4242)"
            ],
        ),
    ] {
        check(Kind::Cluster, &format!("{base}[vips]\n{vips}"), expected);
    }
}

#[test]
fn malformed_role() {
    check(
        Kind::Role,
        "role = \"edge\"\n",
        expect![
            "error: test.toml:1:8: field `role`: unknown variant `edge`, expected one of `master`, `private`, `public`"
        ],
    );
    check(
        Kind::Role,
        "role = \"master\"\ndescription = \"m\"\npackages = [\"Etcd Server\"]\n[agent]\napi_port = 6443\nmetrics_port = 9464\nworkloads = false\n",
        expect![
            "error: test.toml:3:13: field `packages[0]`: `Etcd Server` is not a Debian package name"
        ],
    );
    check(
        Kind::Role,
        "role = \"master\"\ndescription = \"m\"\n[agent]\napi_port = 6443\nmetrics_port = 9464\nworkloads = true\n",
        expect![
            "error: test.toml:6:13: field `agent.workloads`: masters do not run workloads, expected false"
        ],
    );
    check(
        Kind::Role,
        "role = \"public\"\ndescription = \"p\"\n[agent]\napi_port = 70000\nmetrics_port = 9464\nworkloads = true\n",
        expect![
            "error: test.toml:4:12: field `agent.api_port`: invalid value: integer `70000`, expected u16"
        ],
    );
    check(
        Kind::Role,
        "role = \"private\"\ndescription = \"p\"\n[agent]\napi_port = 6443\nmetrics_port = 9464\nworkloads = true\n[firewall]\ntcp = [9464, 0]\n",
        expect![
            "error: test.toml:8:14: field `firewall.tcp[1]`: port 0 is not allowed, expected 1 to 65535"
        ],
    );
}

#[test]
fn malformed_user_data() {
    let base = "cluster = \"demo\"\nname = \"private-1\"\nrole = \"private\"\njoin_token = \"t\"\n";
    check(
        Kind::UserData,
        &format!("{base}masters = [\"10.9.0.10\"]\n"),
        expect![
            "error: test.toml:5:12: field `masters[0]`: `10.9.0.10` is not an endpoint, expected host:port"
        ],
    );
    check(
        Kind::UserData,
        &format!(
            "{base}masters = [\"10.9.0.10:6443\"]\n[network]\naddress = \"10.9.0.21/24\"\ngateway = \"10.8.0.1\"\n"
        ),
        expect![
            "error: test.toml:8:11: field `network.gateway`: gateway 10.8.0.1 is not inside 10.9.0.0/24"
        ],
    );
    // An interface name that would add lines to the rendered .network file.
    check(
        Kind::UserData,
        &format!(
            "{base}masters = [\"10.9.0.10:6443\"]\n[network]\ninterface = \"eth0\\n[Network]\\nDNS=6.6.6.6\"\n"
        ),
        expect![[
            r#"error: test.toml:7:13: field `network.interface`: `eth0\n[Network]\nDNS=6.6.6.6` is not an interface name: `\n` is not allowed (letters, digits, `-_.:` and the globs `*?`)"#
        ]],
    );
    check(
        Kind::UserData,
        &format!(
            "{base}masters = [\"10.9.0.10:6443\"]\n[network]\ninterface = \"enp0s1_too_long1\"\n"
        ),
        expect![
            "error: test.toml:7:13: field `network.interface`: `enp0s1_too_long1` is not an interface name: expected 1 to 15 characters"
        ],
    );
    check(
        Kind::UserData,
        &format!("{base}masters = [\"10.9.0.10:6443\"]\n[network]\ninterface = \"en*\"\n"),
        expect!["test.toml: user-data for node `private-1` (private) of cluster `demo`"],
    );
    check(
        Kind::UserData,
        "cluster = \"demo\"\nname = \"m\"\nrole = \"master\"\njoin_token = \"t\"\nmasters = [\"10.9.0.10:6443\"]\n",
        expect![
            "error: test.toml: field `master`: a master needs the [master] section with the cluster CA"
        ],
    );
    check(
        Kind::UserData,
        "cluster = \"demo\"\nname = \"m\"\nrole = \"master\"\njoin_token = \"t\"\nmasters = [\"10.9.0.10:6443\"]\n[master]\nca_cert = \"c\"\nca_key = \"k\"\ncluster_toml = \"\"\ncli_token_sha256 = [\"abc\"]\n",
        expect![
            "error: test.toml:10:21: field `master.cli_token_sha256[0]`: expected 64 hex digits (the sha256 of a CLI token)"
        ],
    );
    check(
        Kind::UserData,
        &format!("{base}masters = [\"10.9.0.10:6443\"]\n"),
        expect!["test.toml: user-data for node `private-1` (private) of cluster `demo`"],
    );
}
