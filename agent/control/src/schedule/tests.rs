use expect_test::{Expect, expect};

use super::*;

/// A cluster, one line per node or placed task:
/// `node NAME private|public [down] [cordoned] cpus=N mem=MiB [disk=MiB] [attr=value...]`
/// `task NODE [app=/id] cpus=N mem=MiB [ports=P,P]`.
fn cluster(text: &str) -> Snapshot {
    let mut s = Snapshot::default();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut res = Resources::default();
        let mut attributes = BTreeMap::new();
        let mut ports = Vec::new();
        let mut app = None;
        for w in &words[2..] {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            match k {
                "cpus" => res.cpu_milli = (v.parse::<f64>().expect("cpus") * 1000.0) as u64,
                "mem" => res.mem_mib = v.parse().expect("mem"),
                "disk" => res.disk_mib = v.parse().expect("disk"),
                "ports" => ports = v.split(',').map(|p| p.parse().expect("port")).collect(),
                "app" => app = Some(AppId::resolve(&AppId::root(), v).expect("id")),
                _ => {
                    attributes.insert(k.to_string(), v.to_string());
                }
            }
        }
        match words[0] {
            "node" => s.nodes.push(NodeView {
                name: words[1].to_string(),
                role: match words[2] {
                    "public" => AgentRole::Public,
                    "master" => AgentRole::Unknown,
                    _ => AgentRole::Private,
                },
                ready: !words.contains(&"down"),
                cordoned: words.contains(&"cordoned"),
                attributes,
                allocatable: Resources {
                    disk_mib: if res.disk_mib == 0 {
                        100_000
                    } else {
                        res.disk_mib
                    },
                    ..res
                },
            }),
            "task" => s.allocs.push(Alloc {
                node: words[1].to_string(),
                app,
                resources: res,
                host_ports: ports,
            }),
            other => panic!("unknown line kind {other}"),
        }
    }
    s
}

const FOUR: &str = "
    node a1 private cpus=4 mem=4096 rack=r1
    node a2 private cpus=4 mem=4096 rack=r1
    node a3 private cpus=4 mem=4096 rack=r2
    node a4 private cpus=4 mem=4096 rack=r3
";

/// Places `count` instances of the app (TOML) on the cluster, one after
/// the other, and shows where each went or why the next could not.
fn check(nodes: &str, app: &str, count: usize, strategy: Strategy, expected: Expect) {
    let text = format!("id = \"/web\"\nimage = \"nginx:1\"\n{app}");
    let file = crate::app::read("app.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    let app = &file.apps[0];
    let mut placer = Placer::new(&cluster(nodes));
    let mut out = Vec::new();
    for _ in 0..count {
        match placer.place(app, strategy) {
            Ok(p) => {
                let ports: Vec<String> = p
                    .host_ports
                    .iter()
                    .map(|h| h.map_or("-".into(), |h| h.to_string()))
                    .collect();
                out.push(if ports.is_empty() {
                    p.node
                } else {
                    format!("{}:{}", p.node, ports.join(","))
                });
            }
            Err(e) => {
                out.push(format!("\n{e}"));
                break;
            }
        }
    }
    expected.assert_eq(&out.join(" "));
}

const BIN: Strategy = Strategy::BinPack;
const SPREAD: Strategy = Strategy::Spread;

#[test]
fn bin_packing_fills_a_node_before_the_next() {
    check(
        FOUR,
        "cpus = 1\nmem = 512",
        6,
        BIN,
        expect!["a1 a2 a1 a2 a1 a2"],
    );
}

#[test]
fn bin_packing_prefers_the_fuller_node() {
    check(
        "node a1 private cpus=4 mem=4096
         node a2 private cpus=4 mem=4096
         task a2 cpus=2 mem=2048",
        "cpus = 1\nmem = 512",
        3,
        BIN,
        expect!["a2 a2 a1"],
    );
}

#[test]
fn spreading_takes_turns() {
    check(
        FOUR,
        "cpus = 1\nmem = 512",
        6,
        SPREAD,
        expect!["a1 a2 a3 a4 a1 a2"],
    );
}

#[test]
fn spreading_prefers_the_emptier_node_among_equals() {
    check(
        "node a1 private cpus=4 mem=4096
         node a2 private cpus=4 mem=4096
         task a1 cpus=3 mem=512",
        "cpus = 0.5\nmem = 64",
        3,
        SPREAD,
        expect!["a2 a1 a2"],
    );
}

#[test]
fn a_node_is_never_oversubscribed() {
    check(
        "node a1 private cpus=2 mem=1024
         task a1 cpus=1 mem=256",
        "cpus = 0.5\nmem = 256",
        4,
        BIN,
        expect![[r#"
            a1 a1 
            no node can take an instance of /web: too few free cpus for 0.5 (1 node)"#]],
    );
    check(
        "node a1 private cpus=8 mem=1024",
        "cpus = 1\nmem = 400",
        3,
        BIN,
        expect![[r#"
            a1 a1 
            no node can take an instance of /web: too little free memory for 400 MiB (1 node)"#]],
    );
    check(
        "node a1 private cpus=8 mem=8192 disk=1000",
        "cpus = 1\nmem = 64\ndisk = 600",
        2,
        BIN,
        expect![[r#"
            a1 
            no node can take an instance of /web: too little free disk for 600 MiB (1 node)"#]],
    );
}

#[test]
fn fractions_round_up() {
    check(
        "node a1 private cpus=1 mem=100",
        "cpus = 0.3333\nmem = 33.3",
        4,
        BIN,
        expect![[r#"
            a1 a1 
            no node can take an instance of /web: too few free cpus for 0.334 (1 node)"#]],
    );
}

#[test]
fn unready_nodes_take_nothing() {
    check(
        "node a1 private down cpus=4 mem=4096
         node a2 private cpus=4 mem=4096",
        "cpus = 2\nmem = 512",
        3,
        BIN,
        expect![[r#"
            a2 a2 
            no node can take an instance of /web: not ready (1 node); too few free cpus for 2 (1 node)"#]],
    );
}

#[test]
fn drained_nodes_take_nothing() {
    check(
        "node a1 private cordoned cpus=4 mem=4096
         node a2 private cpus=4 mem=4096",
        "cpus = 2\nmem = 512",
        3,
        BIN,
        expect![[r#"
            a2 a2 
            no node can take an instance of /web: drained (`strata node uncordon` puts it back) (1 node); too few free cpus for 2 (1 node)"#]],
    );
}

#[test]
fn masters_are_never_candidates() {
    check(
        "node m1 master cpus=64 mem=65536",
        "cpus = 1\nmem = 64",
        1,
        BIN,
        expect![[r#"

            no node can take an instance of /web: the cluster has no agent"#]],
    );
}

#[test]
fn apps_run_on_private_agents_unless_they_accept_public_ones() {
    let nodes = "node p1 public cpus=4 mem=4096
                 node a1 private cpus=1 mem=4096";
    check(
        nodes,
        "cpus = 1\nmem = 64",
        2,
        BIN,
        expect![[r#"
            a1 
            no node can take an instance of /web: not a private agent (1 node); too few free cpus for 1 (1 node)"#]],
    );
    check(
        nodes,
        "cpus = 1\nmem = 64\naccepted_roles = [\"public\"]",
        2,
        BIN,
        expect!["p1 p1"],
    );
    check(
        nodes,
        "cpus = 1\nmem = 64\naccepted_roles = [\"private\", \"public\"]",
        3,
        SPREAD,
        expect!["p1 a1 p1"],
    );
}

#[test]
fn unique_puts_one_instance_per_value() {
    check(
        FOUR,
        "cpus = 0.1\nmem = 64\nconstraints = [[\"hostname\", \"UNIQUE\"]]",
        5,
        BIN,
        expect![[r#"
            a1 a2 a3 a4 
            no node can take an instance of /web: refused by constraint hostname UNIQUE (4 nodes)"#]],
    );
    check(
        FOUR,
        "cpus = 0.1\nmem = 64\nconstraints = [[\"rack\", \"UNIQUE\"]]",
        4,
        BIN,
        expect![[r#"
            a1 a3 a4 
            no node can take an instance of /web: refused by constraint rack UNIQUE (4 nodes)"#]],
    );
}

#[test]
fn unique_counts_instances_already_running() {
    check(
        "node a1 private cpus=4 mem=4096
         node a2 private cpus=4 mem=4096
         task a1 app=/web cpus=0.1 mem=64",
        "cpus = 0.1\nmem = 64\nconstraints = [[\"hostname\", \"UNIQUE\"]]",
        2,
        BIN,
        expect![[r#"
            a2 
            no node can take an instance of /web: refused by constraint hostname UNIQUE (2 nodes)"#]],
    );
}

#[test]
fn cluster_with_a_value_pins_to_it() {
    check(
        FOUR,
        "cpus = 1\nmem = 64\nconstraints = [[\"rack\", \"CLUSTER\", \"r1\"]]",
        9,
        SPREAD,
        expect![[r#"
            a1 a2 a1 a2 a1 a2 a1 a2 
            no node can take an instance of /web: refused by constraint rack CLUSTER r1 (2 nodes); too few free cpus for 1 (2 nodes)"#]],
    );
}

#[test]
fn cluster_without_a_value_follows_the_first_instance() {
    check(
        FOUR,
        "cpus = 1\nmem = 64\nconstraints = [[\"rack\", \"CLUSTER\"]]",
        3,
        SPREAD,
        expect!["a1 a2 a1"],
    );
    check(
        "node a1 private cpus=4 mem=4096 rack=r1
         node a2 private cpus=4 mem=4096 rack=r2
         task a2 app=/web cpus=1 mem=64",
        "cpus = 1\nmem = 64\nconstraints = [[\"rack\", \"CLUSTER\"]]",
        2,
        SPREAD,
        expect!["a2 a2"],
    );
}

#[test]
fn group_by_spreads_evenly_over_values() {
    check(
        FOUR,
        "cpus = 0.5\nmem = 64\nconstraints = [[\"rack\", \"GROUP_BY\"]]",
        6,
        BIN,
        expect!["a1 a3 a4 a1 a3 a4"],
    );
}

#[test]
fn group_by_with_a_count_waits_for_that_many_values() {
    check(
        FOUR,
        "cpus = 0.5\nmem = 64\nconstraints = [[\"rack\", \"GROUP_BY\", \"4\"]]",
        4,
        BIN,
        expect![[r#"
            a1 a3 a4 
            no node can take an instance of /web: refused by constraint rack GROUP_BY 4 (4 nodes)"#]],
    );
}

#[test]
fn like_and_unlike_match_the_whole_value() {
    check(
        FOUR,
        "cpus = 1\nmem = 64\nconstraints = [[\"rack\", \"LIKE\", \"r[23]\"]]",
        3,
        SPREAD,
        expect!["a3 a4 a3"],
    );
    check(
        FOUR,
        "cpus = 1\nmem = 64\nconstraints = [[\"rack\", \"LIKE\", \"r\"]]",
        1,
        SPREAD,
        expect![[r#"

            no node can take an instance of /web: refused by constraint rack LIKE r (4 nodes)"#]],
    );
    check(
        FOUR,
        "cpus = 1\nmem = 64\nconstraints = [[\"rack\", \"UNLIKE\", \"r1|r2\"]]",
        2,
        SPREAD,
        expect!["a4 a4"],
    );
}

#[test]
fn a_node_without_the_attribute_meets_only_unlike() {
    let nodes = "node a1 private cpus=4 mem=4096
                 node a2 private cpus=4 mem=4096 gpu=none";
    check(
        nodes,
        "cpus = 1\nmem = 64\nconstraints = [[\"gpu\", \"UNLIKE\", \"none\"]]",
        1,
        BIN,
        expect!["a1"],
    );
    check(
        nodes,
        "cpus = 1\nmem = 64\nconstraints = [[\"gpu\", \"IS\", \"none\"]]",
        2,
        BIN,
        expect!["a2 a2"],
    );
    check(
        nodes,
        "cpus = 1\nmem = 64\nconstraints = [[\"gpu\", \"UNIQUE\"]]",
        2,
        BIN,
        expect![[r#"
            a2 
            no node can take an instance of /web: refused by constraint gpu UNIQUE (2 nodes)"#]],
    );
}

#[test]
fn max_per_caps_instances_per_value() {
    check(
        FOUR,
        "cpus = 0.1\nmem = 64\nconstraints = [[\"rack\", \"MAX_PER\", \"2\"]]",
        7,
        BIN,
        expect![[r#"
            a1 a2 a3 a3 a4 a4 
            no node can take an instance of /web: refused by constraint rack MAX_PER 2 (4 nodes)"#]],
    );
    check(
        FOUR,
        "cpus = 0.1\nmem = 64\nconstraints = [[\"hostname\", \"MAX_PER\", \"1\"], [\"rack\", \"IS\", \"r1\"]]",
        3,
        BIN,
        expect![[r#"
            a1 a2 
            no node can take an instance of /web: refused by constraint hostname MAX_PER 1 (2 nodes); refused by constraint rack IS r1 (2 nodes)"#]],
    );
}

#[test]
fn attribute_fields_may_be_written_with_an_at_sign() {
    check(
        FOUR,
        "cpus = 1\nmem = 64\nconstraints = [[\"@rack\", \"IS\", \"r3\"], [\"@hostname\", \"UNIQUE\"]]",
        2,
        BIN,
        expect![[r#"
            a4 
            no node can take an instance of /web: refused by constraint @rack IS r3 (3 nodes); refused by constraint @hostname UNIQUE (1 node)"#]],
    );
}

#[test]
fn assigned_host_ports_are_the_lowest_free_ones() {
    check(
        "node a1 private cpus=4 mem=4096
         task a1 cpus=0.1 mem=64 ports=10000,10002",
        "cpus = 0.1\nmem = 64\n[[ports]]\ncontainer_port = 80\nhost_port = 0\n[[ports]]\ncontainer_port = 81\n[[ports]]\ncontainer_port = 82\nhost_port = 0",
        2,
        BIN,
        expect!["a1:10001,-,10003 a1:10004,-,10005"],
    );
}

#[test]
fn a_fixed_host_port_takes_one_instance_per_node() {
    check(
        "node a1 private cpus=4 mem=4096
         node a2 private cpus=4 mem=4096
         task a2 cpus=0.1 mem=64 ports=8080",
        "cpus = 0.1\nmem = 64\n[[ports]]\ncontainer_port = 80\nhost_port = 8080",
        3,
        BIN,
        expect![[r#"
            a1:8080 
            no node can take an instance of /web: host port 8080 taken (2 nodes)"#]],
    );
}

#[test]
fn host_mode_ports_are_assigned_too() {
    check(
        "node a1 private cpus=4 mem=4096",
        "cpus = 0.1\nmem = 64\nrequire_ports = true\n[[ports]]\nhost_port = 9000\n[[ports]]\nhost_port = 9001",
        2,
        BIN,
        expect![[r#"
            a1:9000,9001 
            no node can take an instance of /web: host port 9000 taken (1 node)"#]],
    );
}

#[test]
fn constraints_are_reported_before_resources() {
    check(
        "node a1 private cpus=0.5 mem=4096 rack=r1
         node a2 private cpus=8 mem=4096 rack=r2
         node p1 public cpus=8 mem=4096 rack=r1",
        "cpus = 1\nmem = 64\nconstraints = [[\"rack\", \"IS\", \"r1\"]]",
        1,
        BIN,
        expect![[r#"

            no node can take an instance of /web: not a private agent (1 node); refused by constraint rack IS r1 (1 node); too few free cpus for 1 (1 node)"#]],
    );
}

#[test]
fn removing_an_instance_gives_its_node_back() {
    let text = "id = \"/web\"\nimage = \"nginx:1\"\ncpus = 4\nmem = 64\n[[ports]]\ncontainer_port = 80\nhost_port = 7000";
    let app = &crate::app::read("app.toml", text).expect("app").apps[0];
    let mut placer = Placer::new(&cluster("node a1 private cpus=4 mem=4096"));
    let first = placer.place(app, BIN).expect("room for one");
    assert!(placer.place(app, BIN).is_err(), "full");
    placer.remove(&Alloc {
        node: first.node,
        app: Some(app.id.clone()),
        resources: Resources::of(app),
        host_ports: vec![7000],
    });
    assert_eq!(placer.count("a1", &app.id), 0);
    assert_eq!(placer.place(app, BIN).expect("room again").node, "a1");
}

#[test]
fn bin_packing_looks_at_a_few_nodes_of_a_large_cluster() {
    // 1000 equal nodes: each placement visits about log2(1000) = 10
    // feasible nodes from a moving start, not all of them, and still never
    // oversubscribes one.
    let mut text = String::new();
    for i in 0..1000 {
        text += &format!("node n{i:04} private cpus=2 mem=2048\n");
    }
    let app_text = "id = \"/web\"\nimage = \"nginx:1\"\ncpus = 1\nmem = 64";
    let app = &crate::app::read("app.toml", app_text).expect("app").apps[0];
    let mut placer = Placer::new(&cluster(&text));
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..2000 {
        let p = placer.place(app, BIN).expect("room for 2000");
        *per_node.entry(p.node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 1000);
    assert!(per_node.values().all(|n| *n == 2));
    assert!(placer.place(app, BIN).is_err(), "the 2001st has no room");
}
