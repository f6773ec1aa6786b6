//! Apps kept running by the scheduler, end to end on the host: a real
//! etcd, three masters and three private agents as real `strata`
//! processes, each in a network namespace of its own on a veth-and-bridge
//! underlay, the busybox-static image imported into each agent's store.
//! One test, one cluster, many checks (a cluster costs a minute to form):
//!
//! - `strata cluster status` names the scheduler's leader;
//! - an app deployed from a Marathon JSON file runs its instances on
//!   three agents (`hostname UNIQUE`), each a container;
//! - scaling past what the constraint allows places what fits and says
//!   why the rest waits; scaling down stops the surplus;
//! - a rolling update whose new version fails its HTTP health check
//!   stops and rolls back by itself, the old instances never all gone;
//! - a killed agent's instance is replaced on another agent after the
//!   app's grace, and its stale copy is stopped when it comes back (never
//!   more instances than asked);
//! - the leader master killed, another takes over and the scheduler
//!   resumes (a scale is carried out);
//! - a drained node's instance moves to another agent and its pinned task
//!   stops, and starts again once the node is uncordoned.
//!
//! Root only.

use std::collections::BTreeMap;
use std::time::Duration;

use control::app::record::AppView;
use control::deploy::DeploymentState;
use control::model::{ClusterStatus, NodeState};
use control::task::{Health, TaskState};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{Binary, ClusterSpec, Launch, TestCluster};
use common::output;

const NODES: &[(&str, &str)] = &[
    ("master-1", "master"),
    ("master-2", "master"),
    ("master-3", "master"),
    ("agent-1", "private"),
    ("agent-2", "private"),
    ("agent-3", "private"),
];
const AGENTS: [&str; 3] = ["agent-1", "agent-2", "agent-3"];

/// The Marathon app the test deploys: busybox's httpd on port 8080 of
/// each instance, one instance per agent.
fn web_json(instances: u32, cmd: &str, checked: bool) -> String {
    let check = if checked {
        r#", "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
              "gracePeriodSeconds": 2, "intervalSeconds": 1, "timeoutSeconds": 1,
              "maxConsecutiveFailures": 2}]"#
    } else {
        ""
    };
    format!(
        r#"{{"id": "/shop/web", "instances": {instances}, "cpus": 0.1, "mem": 32,
            "cmd": "{cmd}",
            "container": {{"type": "DOCKER", "docker": {{"image": "example.org/bb:1",
              "network": "BRIDGE", "portMappings": [{{"containerPort": 8080, "name": "http",
                "labels": {{"VIP_0": "/web:80"}}}}]}}}},
            "constraints": [["hostname", "UNIQUE"]],
            "upgradeStrategy": {{"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.5}},
            "unreachableStrategy": {{"inactiveAfterSeconds": 5, "expungeAfterSeconds": 3600}},
            "version": "2017-08-17T00:00:00.000Z", "tasksRunning": 0{check}}}"#
    )
}

/// Each instance answers `ok` and its instance id.
const SERVE: &str = "mkdir -p /www && echo ok $STRATA_INSTANCE_ID > /www/index.html && exec busybox httpd -f -p 8080 -h /www";

/// One `GET /` on a new connection to `vip`: the answer's last line (an
/// instance's page is `ok <instance id>`), `None` without an answer.
fn ask_vip(vip: std::net::SocketAddr) -> Option<String> {
    let mut s = std::net::TcpStream::connect_timeout(&vip, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    std::io::Write::write_all(&mut s, b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    std::io::Read::read_to_string(&mut s, &mut body).ok()?;
    body.lines().last().map(|l| l.trim().to_string())
}

fn app(c: &TestCluster) -> Option<AppView> {
    let out = c.cli(&["app", "show", "/shop/web", "--json"]).ok()?;
    serde_json::from_str(&out).ok()
}

/// Running instances (stopping ones aside) by node.
fn running(a: &AppView) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for i in &a.instances {
        if !i.stopping && i.state == TaskState::Running {
            *by.entry(i.node.clone()).or_default() += 1;
        }
    }
    by
}

#[test]
fn apps_are_kept_running_by_the_scheduler() {
    if !require(
        "host_apps",
        &[
            Need::Root,
            Need::Program("etcd"),
            Need::Program("ip"),
            Need::Program("nft"),
            Need::Program("umoci"),
            Need::Program("nsenter"),
            Need::File("/bin/busybox"),
        ],
    ) {
        return;
    }
    let c = TestCluster::new(ClusterSpec {
        nodes: NODES,
        extra_toml: "[overlay]\ncidr = \"10.203.0.0/16\"\nvni = 4344\nport = 4792\n".to_string(),
        etcd_port_base: 42_000,
        binary: Binary::Copy,
        launch: Launch::NetOnly,
        poll: Duration::from_millis(100),
        ..ClusterSpec::new("sa", "apps", "10.81.0")
    });
    let _cleanups = c.import_busybox(&AGENTS);
    let mut masters: BTreeMap<&str, common::Proc> = BTreeMap::new();
    for m in ["master-1", "master-2", "master-3"] {
        masters.insert(m, c.spawn_node(m, &format!("{m}.log")));
    }
    let mut agents: BTreeMap<&str, common::Proc> = BTreeMap::new();
    for a in AGENTS {
        agents.insert(a, c.spawn_node(a, &format!("{a}.log")));
    }
    c.wait("three agents Ready", Duration::from_secs(90), || {
        let nodes = c.try_nodes().ok()?;
        AGENTS
            .iter()
            .all(|a| {
                nodes
                    .iter()
                    .any(|n| n.record.info.name == *a && n.state == NodeState::Ready)
            })
            .then_some(())
    });

    // The scheduler's leader is named.
    let status = |c: &TestCluster| -> Option<ClusterStatus> {
        serde_json::from_str(&c.cli(&["cluster", "status", "--json"]).ok()?).ok()
    };
    let leader = c.wait("a scheduler leader", Duration::from_secs(30), || {
        status(&c)?.scheduler_leader.map(|l| l.name)
    });
    let text = c.cli_ok(&["cluster", "status"]);
    assert!(
        text.contains(&format!("scheduler: led by {leader}")),
        "{text}"
    );

    // A bad file is refused before anything is stored.
    let file = c.dir().join("web.json");
    std::fs::write(
        &file,
        web_json(3, SERVE, false).replace("\"cpus\"", "\"cpu\""),
    )
    .expect("write");
    let refused = c
        .cli(&["app", "deploy", &file.display().to_string()])
        .expect_err("a misspelt field is refused");
    assert!(
        refused.contains("$.cpu: unknown field `cpu`; did you mean `cpus`?"),
        "{refused}"
    );
    assert!(c.cli_ok(&["app", "list", "--json"]).trim() == "[]");

    // Two apps cannot expose the same host and path, or the same public
    // TCP port: the second is refused naming the first, and nothing of it
    // is stored; once the first is removed, the second deploys.
    let edge = |name: &str, host: &str, tcp: u16| -> String {
        let file = c.dir().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!("id = \"/edge/{name}\"\nimage = \"busybox:1.36\"\ninstances = 0\n[[ports]]\ncontainer_port = 80\nexpose = [{{ host = \"{host}\" }}, {{ tcp = {tcp} }}]\n"),
        )
        .expect("write");
        file.display().to_string()
    };
    let (first, second) = (edge("a", "web.test", 10100), edge("b", "WEB.test", 10100));
    let (code, refused) = c.cli_status(&["app", "deploy", &edge("c", "c.test", 9000)]);
    assert!(
        code != 0
            && refused.contains("/edge/c: ports[0] asks for public TCP port 9000, outside the edge's ports 10000-20000 (cluster.toml [edge] tcp_ports)"),
        "exit {code}: {refused}"
    );
    c.cli_ok(&["app", "deploy", &first]);
    let (code, refused) = c.cli_status(&["app", "deploy", &second]);
    assert!(
        code != 0
            && refused.contains(
                "/edge/b: ports[0] asks for http://web.test/, which /edge/a (ports[0]) already serves"
            )
            && refused.contains("public TCP port 10100, which /edge/a (ports[0]) already has"),
        "exit {code}: {refused}"
    );
    let ids = |c: &TestCluster| -> Vec<String> {
        let apps: Vec<AppView> =
            serde_json::from_str(&c.cli_ok(&["app", "list", "--json"])).expect("app list");
        apps.iter().map(|a| a.record.spec.id.to_string()).collect()
    };
    assert_eq!(ids(&c), ["/edge/a"]);
    c.cli_ok(&["app", "remove", "/edge/a"]);
    c.wait("/edge/a removed", Duration::from_secs(30), || {
        ids(&c).is_empty().then_some(())
    });
    c.cli_ok(&["app", "deploy", &second]);
    // Named VIPs get the lowest free addresses of the VIP range, each for
    // good; a fixed one outside the range is refused.
    let vips = |name: &str, list: &str| -> String {
        let file = c.dir().join(format!("{name}.toml"));
        std::fs::write(
            &file,
            format!("id = \"/edge/{name}\"\nimage = \"busybox:1.36\"\ninstances = 0\n[[ports]]\ncontainer_port = 80\nvips = [{list}]\n"),
        )
        .expect("write");
        file.display().to_string()
    };
    c.cli_ok(&["app", "deploy", &vips("v", "\"db:5432\", \"cache:6379\"")]);
    let shown = c.cli_ok(&["app", "show", "/edge/v"]);
    assert!(
        shown.contains("VIP cache is 198.18.0.1") && shown.contains("VIP db is 198.18.0.2"),
        "{shown}"
    );
    let (code, refused) = c.cli_status(&[
        "app",
        "deploy",
        &vips("w", "\"10.1.2.3:80\", \"198.18.0.2:80\""),
    ]);
    assert!(
        code != 0
            && refused.contains("/edge/w: ports[0] asks for VIP 10.1.2.3:80, outside the VIP range 198.18.0.0/16 (cluster.toml [vips] cidr)")
            && refused.contains("/edge/w: ports[0] asks for VIP 198.18.0.2:80, which is the address of VIP db"),
        "exit {code}: {refused}"
    );
    c.cli_ok(&["app", "remove", "/edge/v"]);
    c.cli_ok(&["app", "remove", "/edge/b"]);
    c.wait("/edge/b removed", Duration::from_secs(30), || {
        ids(&c).is_empty().then_some(())
    });

    // Deploy: three instances, one per agent.
    std::fs::write(&file, web_json(3, SERVE, false)).expect("write");
    let out = c.cli_ok(&[
        "app",
        "deploy",
        &file.display().to_string(),
        "--wait",
        "--timeout",
        "120",
    ]);
    assert!(
        out.contains("/shop/web: deploying version 1 by deployment shop.web-1"),
        "{out}"
    );
    let a = c.wait("three instances running", Duration::from_secs(60), || {
        let a = app(&c)?;
        (running(&a).len() == 3).then_some(a)
    });
    assert!(running(&a).values().all(|n| *n == 1), "{a:#?}");
    let show = c.cli_ok(&["app", "show", "/shop/web"]);
    assert!(show.contains("3 healthy, 3 running, 3 asked"), "{show}");

    // Its VIP (DC/OS's VIP_0 label): every node balances it in the kernel
    // over the three instances. From master-1, which runs none of them
    // (its own connections take the output hook; the route to the VIP
    // range is the test's, where an image has its default route), 1000
    // connections spread within 20 % of even.
    assert!(show.contains("VIP web is 198.18.0.3"), "{show}");
    output(
        std::path::Path::new("ip"),
        &[
            "-n",
            c.ns("master-1"),
            "route",
            "add",
            "198.18.0.0/16",
            "dev",
            "strata-br",
        ],
    )
    .expect("a route to the VIP range");
    let client = agent::overlay::netns::path(c.ns("master-1"));
    let vip: std::net::SocketAddr = ([198, 18, 0, 3], 80).into();
    let ask = || ask_vip(vip);
    c.wait("the VIP answers", Duration::from_secs(30), || {
        agent::overlay::netns::run_in(Some(&client), || Ok(ask()))
            .ok()
            .flatten()
    });
    let counts = agent::overlay::netns::run_in(Some(&client), || {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..1000 {
            *counts
                .entry(ask().unwrap_or_else(|| "no answer".into()))
                .or_default() += 1;
        }
        Ok(counts)
    })
    .expect("in master-1's namespace");
    let ids: Vec<String> = a.instances.iter().map(|i| format!("ok {}", i.id)).collect();
    assert!(
        counts.len() == 3
            && ids
                .iter()
                .all(|id| counts.get(id).is_some_and(|n| (267..=400).contains(n))),
        "1000 connections to the VIP: {counts:?}"
    );
    // DNS names the VIP, by its name and by its app, at master-1's
    // resolver.
    let subnet = c
        .nodes()
        .into_iter()
        .find(|n| n.record.info.name == "master-1")
        .and_then(|n| n.subnet)
        .expect("master-1's lease");
    let resolver: std::net::SocketAddr = (agent::overlay::plan::gateway(subnet), 53).into();
    for name in ["web.l4lb", "web-shop.vip"] {
        let found = c.wait(&format!("{name} resolves"), Duration::from_secs(10), || {
            agent::overlay::netns::run_in(Some(&client), || {
                agent::dns::client::lookup_a(resolver, &format!("{name}.strata.internal."))
            })
            .ok()
            .filter(|found| !found.is_empty())
        });
        assert_eq!(found, [std::net::Ipv4Addr::new(198, 18, 0, 3)], "{name}");
    }

    // Scale past UNIQUE: the fourth cannot be placed, and says why.
    c.cli_ok(&["app", "scale", "/shop/web", "4"]);
    let waiting = c.wait(
        "the fourth instance waiting",
        Duration::from_secs(30),
        || app(&c)?.record.waiting,
    );
    assert!(
        waiting.contains("refused by constraint hostname UNIQUE (3 nodes)"),
        "{waiting}"
    );
    // Scale down: one is stopped, two keep running.
    c.cli_ok(&[
        "app",
        "scale",
        "/shop/web",
        "2",
        "--wait",
        "--timeout",
        "60",
    ]);
    c.wait("two instances", Duration::from_secs(60), || {
        let a = app(&c)?;
        (a.instances.len() == 2 && running(&a).len() == 2).then_some(())
    });

    // A dry run prints the steps and stores nothing.
    let v2 = SERVE.replace("echo ok", "echo v2");
    std::fs::write(&file, web_json(2, &v2, false)).expect("write");
    let before = app(&c).expect("app").record.version;
    let dry = c.cli_ok(&["app", "deploy", &file.display().to_string(), "--dry-run"]);
    assert!(dry.contains("would deploy version"), "{dry}");
    assert!(
        dry.contains("step 1: ") && dry.contains("start web-shop."),
        "{dry}"
    );
    assert!(dry.contains("nothing was stored"), "{dry}");
    assert_eq!(app(&c).expect("app").record.version, before);

    // A canary starts beside the old instances and waits for a promotion.
    let out = c.cli_ok(&[
        "app",
        "deploy",
        &file.display().to_string(),
        "--canary",
        "1",
        "--wait",
        "--timeout",
        "60",
    ]);
    let canary = app(&c)
        .expect("app")
        .record
        .deployment()
        .expect("a deployment")
        .clone();
    assert_eq!(canary.state, DeploymentState::WaitingPromotion, "{out}");
    let a = app(&c).expect("app");
    assert_eq!(
        running(&a).values().sum::<usize>(),
        3,
        "two old and the canary: {a:#?}"
    );
    c.cli_ok(&["deployment", "promote", &canary.id]);
    c.wait(
        "the promoted deployment done",
        Duration::from_secs(60),
        || {
            let a = app(&c)?;
            let d = a.record.deployment()?;
            (d.id == canary.id && d.state == DeploymentState::Succeeded && a.instances.len() == 2)
                .then_some(())
        },
    );
    // Rolled back by hand: the definition before it, as a new version.
    let out = c.cli_ok(&[
        "deployment",
        "rollback",
        &canary.id,
        "--wait",
        "--timeout",
        "60",
    ]);
    assert!(out.contains("deploying version"), "{out}");
    let a = app(&c).expect("app");
    assert_eq!(a.record.spec.cmd.as_deref(), Some(SERVE), "{a:#?}");
    let versions = c.cli_ok(&["app", "versions", "/shop/web"]);
    assert!(versions.contains("rollback"), "{versions}");

    // A rolling update whose new version never answers its health check
    // fails and rolls back; old instances keep serving throughout.
    std::fs::write(&file, web_json(2, SERVE, true)).expect("write");
    c.cli_ok(&[
        "app",
        "deploy",
        &file.display().to_string(),
        "--wait",
        "--timeout",
        "120",
    ]);
    let good = c.wait(
        "two healthy checked instances",
        Duration::from_secs(60),
        || {
            let a = app(&c)?;
            (a.instances
                .iter()
                .filter(|i| i.health == Health::Healthy && !i.stopping)
                .count()
                == 2)
                .then_some(a)
        },
    );
    let good_version = good.record.config_version;
    std::fs::write(&file, web_json(2, "exec sleep 1000", true)).expect("write");
    let out = c.cli(&[
        "app",
        "deploy",
        &file.display().to_string(),
        "--wait",
        "--timeout",
        "180",
    ]);
    let failed = out.expect_err("a version that never gets healthy fails");
    assert!(failed.contains("failed"), "{failed}");
    let back = c.wait("rolled back", Duration::from_secs(120), || {
        let a = app(&c)?;
        let rolled = a.record.config_version == good_version
            && a.record.deployment().is_some_and(|d| d.state.is_done());
        let healthy = a
            .instances
            .iter()
            .filter(|i| i.version == good_version && i.health == Health::Healthy && !i.stopping)
            .count();
        (rolled && healthy == 2 && a.instances.len() == 2).then_some(a)
    });
    let deployments = c.cli_ok(&["deployment", "list"]);
    assert!(deployments.contains("failed"), "{deployments}");
    assert_eq!(back.record.spec.cmd.as_deref(), Some(SERVE));

    // A killed agent's instance is replaced elsewhere; back, its stale copy
    // stops.
    let a = app(&c).expect("app");
    let victim = a.instances[0].node.clone();
    let spare = AGENTS
        .iter()
        .find(|n| !running(&a).contains_key(**n))
        .expect("a spare agent")
        .to_string();
    agents.get_mut(victim.as_str()).expect("agent proc").kill();
    c.wait(
        "a replacement on the spare agent",
        Duration::from_secs(60),
        || {
            let a = app(&c)?;
            running(&a).contains_key(&spare).then_some(())
        },
    );
    let name = victim.clone();
    let victim_ref: &str = AGENTS.iter().find(|n| **n == name).expect("agent");
    agents.insert(
        victim_ref,
        c.spawn_node(victim_ref, &format!("{victim}-again.log")),
    );
    c.wait("the stale copy stopped", Duration::from_secs(90), || {
        let a = app(&c)?;
        let stale_gone = agent::tasks::list(&c.state_dir(&victim))
            .iter()
            .all(|t| t.state != TaskState::Running);
        (stale_gone && a.instances.len() == 2 && running(&a).len() == 2).then_some(())
    });

    // The leader master dies: another takes over, and the scheduler resumes.
    let leader = status(&c)
        .and_then(|s| s.scheduler_leader)
        .expect("a leader")
        .name;
    masters
        .get_mut(leader.as_str())
        .expect("master proc")
        .kill();
    let next = c.wait("another scheduler leader", Duration::from_secs(60), || {
        status(&c)?
            .scheduler_leader
            .map(|l| l.name)
            .filter(|n| *n != leader)
    });
    eprintln!("leader {leader} killed, {next} leads");
    c.cli_ok(&[
        "app",
        "scale",
        "/shop/web",
        "3",
        "--wait",
        "--timeout",
        "120",
    ]);
    let a = c.wait("three instances again", Duration::from_secs(60), || {
        let a = app(&c)?;
        (running(&a).len() == 3).then_some(a)
    });
    assert_eq!(a.instances.len(), 3, "no placement doubled: {a:#?}");

    // Drained: the node's instance moves to the agent that has none, its
    // pinned task stops (reported stopped, its record kept); uncordoned,
    // the pinned task runs again.
    c.cli_ok(&[
        "app",
        "scale",
        "/shop/web",
        "2",
        "--wait",
        "--timeout",
        "60",
    ]);
    let a = c.wait("two instances", Duration::from_secs(60), || {
        let a = app(&c)?;
        (a.instances.len() == 2 && running(&a).len() == 2).then_some(a)
    });
    let victim = a.instances[0].node.clone();
    let spare = AGENTS
        .iter()
        .find(|n| !running(&a).contains_key(**n))
        .expect("a spare agent")
        .to_string();
    c.cli_ok(&[
        "task",
        "run",
        "--node",
        &victim,
        "--image",
        "example.org/bb:1",
        "--id",
        "pinned-1",
        "--stop-grace",
        "1",
        "--",
        "sleep",
        "1000",
    ]);
    let pinned = |c: &TestCluster| -> Option<String> {
        let list: serde_json::Value =
            serde_json::from_str(&c.cli(&["task", "list", "--json"]).ok()?).ok()?;
        list.as_array()?
            .iter()
            .find(|t| t["id"] == "pinned-1")
            .and_then(|t| t["state"].as_str().map(String::from))
    };
    c.wait("the pinned task running", Duration::from_secs(60), || {
        (pinned(&c)? == "running").then_some(())
    });
    let out = c.cli_ok(&["node", "drain", &victim, "--deadline", "60s", "--wait"]);
    assert!(out.contains(&format!("node `{victim}` drained")), "{out}");
    c.wait(
        "the instance replaced on the spare agent",
        Duration::from_secs(60),
        || {
            let a = app(&c)?;
            let by = running(&a);
            (by.get(&spare) == Some(&1) && by.len() == 2 && !by.contains_key(&victim)).then_some(())
        },
    );
    let list = c.cli_ok(&["node", "list"]);
    assert!(
        list.lines()
            .any(|l| l.starts_with(&victim) && l.contains("Ready,Drained")),
        "{list}"
    );
    c.wait("the pinned task stopped", Duration::from_secs(60), || {
        (pinned(&c)? == "stopped").then_some(())
    });
    assert!(
        agent::tasks::list(&c.state_dir(&victim))
            .iter()
            .all(|t| t.id != "pinned-1"),
        "the drained node still holds the pinned task"
    );
    c.cli_ok(&["node", "uncordon", &victim]);
    c.wait(
        "the pinned task running again",
        Duration::from_secs(60),
        || (pinned(&c)? == "running").then_some(()),
    );
    assert!(!c.cli_ok(&["node", "list"]).contains("Drained"));
    c.cli_ok(&["task", "stop", "pinned-1"]);

    unhealthy_leaves_the_vip(&c, &victim);

    // Removed: every instance stops, then the app goes.
    c.cli_ok(&["app", "remove", "/shop/web"]);
    c.wait("the app gone", Duration::from_secs(60), || {
        (c.cli_ok(&["app", "list", "--json"]).trim() == "[]").then_some(())
    });
}

/// An instance that fails its health check leaves the VIP: its page goes
/// (busybox's httpd then answers 404), its node's next check finds it
/// unhealthy, and every node stops sending it new connections. A thread
/// watches the API for the unhealthy report while `client_ns` (a node's
/// namespace: its own connections take the VIP's output hook) connects to
/// the VIP every 10 ms; the figures are printed. The app's instances have
/// HTTP checks (1 s apart) when this runs.
fn unhealthy_leaves_the_vip(c: &TestCluster, client_ns: &str) {
    let a = app(c).expect("app");
    assert!(a.instances.len() >= 2, "{a:#?}");
    output(
        std::path::Path::new("ip"),
        &[
            "-n",
            c.ns(client_ns),
            "route",
            "replace",
            "198.18.0.0/16",
            "dev",
            "strata-br",
        ],
    )
    .expect("a route to the VIP range");
    let client = agent::overlay::netns::path(c.ns(client_ns));
    let vip: std::net::SocketAddr = ([198, 18, 0, 3], 80).into();
    let ask = || ask_vip(vip);
    c.wait(
        "the VIP answers every instance",
        Duration::from_secs(30),
        || {
            agent::overlay::netns::run_in(Some(&client), || {
                let seen: std::collections::BTreeSet<String> =
                    (0..40).filter_map(|_| ask()).collect();
                Ok(a.instances
                    .iter()
                    .all(|i| seen.contains(&format!("ok {}", i.id))))
            })
            .ok()
            .filter(|all| *all)
        },
    );
    let victim = a.instances[0].clone();
    let started = std::time::Instant::now();
    let out = std::process::Command::new(&c.strata)
        .args(["task", "exec", &victim.id, "--state-dir"])
        .arg(c.state_dir(&victim.node))
        .args(["--", "busybox", "rm", "/www/index.html"])
        .output()
        .expect("strata task exec runs");
    assert!(out.status.success(), "{out:?}");
    let seen_unhealthy = std::thread::scope(|scope| {
        let watcher = scope.spawn(|| {
            while started.elapsed() < Duration::from_secs(20) {
                let unhealthy = app(c).is_some_and(|a| {
                    a.instances
                        .iter()
                        .any(|i| i.id == victim.id && i.health == Health::Unhealthy)
                });
                if unhealthy {
                    return Some(started.elapsed());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            None
        });
        // The last connection the VIP gave the failing instance: an answer
        // that is not an instance's page (its 404), or no answer at all.
        let last_sent = agent::overlay::netns::run_in(Some(&client), || {
            let (mut last, mut failed) = (None, 0);
            let mut clean_since = std::time::Instant::now();
            while started.elapsed() < Duration::from_secs(20) {
                match ask() {
                    Some(body) if body.starts_with("ok ") => {}
                    other => {
                        failed += usize::from(other.is_none());
                        last = Some(started.elapsed());
                        clean_since = std::time::Instant::now();
                    }
                }
                if last.is_some() && clean_since.elapsed() > Duration::from_secs(3) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(last.map(|l| (l, failed)))
        })
        .expect("in the client's namespace");
        let unhealthy = watcher.join().expect("the watcher");
        (unhealthy, last_sent)
    });
    let (Some(unhealthy), Some((last_sent, unanswered))) = seen_unhealthy else {
        panic!(
            "the failing instance {} was never reported unhealthy or never reached: {seen_unhealthy:?}",
            victim.id
        );
    };
    println!(
        "figure: instance {} failed at 0 s; reported unhealthy (seen in the API, polled every 50 ms) at {:.3} s; the VIP last sent it a connection at {:.3} s ({:+.3} s after the report was seen); {unanswered} connection(s) got no answer",
        victim.id,
        unhealthy.as_secs_f64(),
        last_sent.as_secs_f64(),
        last_sent.as_secs_f64() - unhealthy.as_secs_f64()
    );
    // The node kills it after two failed checks; it runs again (its
    // page back) before the test goes on.
    let n = a.instances.len();
    c.wait(
        "every instance healthy again",
        Duration::from_secs(60),
        || {
            let a = app(c)?;
            (a.instances.len() == n
                && a.instances
                    .iter()
                    .all(|i| i.health == Health::Healthy && !i.stopping))
            .then_some(())
        },
    );
}
