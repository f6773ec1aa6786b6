//! Tasks pinned to a node through the master API, end to end: a real etcd,
//! one master and one agent as real `strata` processes, each in its own
//! network namespace on a veth-and-bridge underlay. The busybox-static
//! image (built here with umoci) is imported into the agent's image store
//! with `strata image import` before the agent starts (the agent's
//! namespace has no route to a registry on the host's loopback). `strata
//! task run --node agent-1` pins a task; the agent receives it through its
//! assignment watch, runs it, and reports it running in `strata task
//! list`; its log holds its output; `strata task stop` removes it from the
//! node. Bad specs (unknown node, memory below the minimum) are refused
//! with clear errors. Root only.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::runtime::names::HostNames;
use configs::net::Ipv4Cidr;
use control::model::NodeState;
use control::task::TaskState;
use hickory_proto::rr::RecordType;
use qemu_tests::observe::{Hold, Seen};
use qemu_tests::testenv::{Need, require};

mod common;
use common::cluster::{Binary, ClusterSpec, Launch, TestCluster};
use common::output;

/// The host-wide names of this run's agents (`cargo xtask test` gives each
/// run its own prefix in `STRATA_HOST_PREFIX`).
fn names() -> HostNames {
    HostNames::from_env().expect("STRATA_HOST_PREFIX is valid")
}

/// The handle of task `task`'s network namespace.
fn netns_handle(task: &str) -> PathBuf {
    Path::new(agent::overlay::netns::NETNS_DIR).join(names().netns(task))
}

#[test]
fn tasks_pinned_through_the_api() {
    if !require(
        "host_cluster_tasks",
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
    // A copy of the binary (several worktrees may share one target dir;
    // STRATA_TEST_BIN picks another binary); the nodes keep the host's
    // sysfs (their containers need its cgroups); waits look every 50 ms.
    let c = TestCluster::new(ClusterSpec {
        extra_toml: "[overlay]\ncidr = \"10.202.0.0/16\"\nvni = 4343\nport = 4791\n".to_string(),
        etcd_port_base: 40_000,
        binary: Binary::Copy,
        launch: Launch::NetOnly,
        poll: Duration::from_millis(50),
        ..ClusterSpec::new("st", "tasks", "10.79.0")
    });

    // The image, imported into the agents' stores before they start.
    let agent_state = c.state_dir("agent-1");
    let agent2_state = c.state_dir("agent-2");
    let _cleanups = c.import_busybox(&["agent-1", "agent-2"]);

    let _master = c.spawn_node("master-1", "master-1.log");
    let agent = c.spawn_node("agent-1", "agent-1.log");
    let _agent2 = c.spawn_node("agent-2", "agent-2.log");
    let nodes = c.wait("agents Ready", Duration::from_secs(60), || {
        let nodes = c.try_nodes().ok()?;
        ["agent-1", "agent-2"]
            .iter()
            .all(|a| {
                nodes
                    .iter()
                    .any(|n| n.record.info.name == *a && n.state == NodeState::Ready)
            })
            .then_some(nodes)
    });
    let subnet_of = |name: &str| {
        nodes
            .iter()
            .find(|n| n.record.info.name == name)
            .and_then(|n| n.subnet)
            .unwrap_or_else(|| panic!("{name} holds no overlay subnet: {nodes:?}"))
    };

    // Bad specs are refused with clear errors, and nothing is stored.
    let refused = c
        .cli(&[
            "task",
            "run",
            "--node",
            "nowhere",
            "--image",
            "example.org/bb:1",
            "--id",
            "lost",
            "--",
            "true",
        ])
        .expect_err("unknown node refused");
    assert!(
        refused.contains("task `lost`: no node named `nowhere` in the cluster"),
        "{refused}"
    );
    let refused = c
        .cli(&[
            "task",
            "run",
            "--node",
            "agent-1",
            "--image",
            "example.org/bb:1",
            "--id",
            "tiny",
            "--mem",
            "1MiB",
            "--",
            "true",
        ])
        .expect_err("tiny memory refused");
    assert!(
        refused.contains(
            "task `tiny`: memory limit 1048576 bytes is below the minimum of 4194304 bytes (4 MiB)"
        ),
        "{refused}"
    );
    let refused = c
        .cli(&[
            "task",
            "run",
            "--node",
            "agent-1",
            "--image",
            "Not A Ref",
            "--",
            "true",
        ])
        .expect_err("malformed reference refused");
    assert!(refused.contains("malformed image reference"), "{refused}");
    assert_eq!(c.tasks(), Vec::new());

    // A task pinned to agent-1 runs there.
    let submitted = Instant::now();
    let ran = c
        .cli(&[
            "task",
            "run",
            "--node",
            "agent-1",
            "--image",
            "example.org/bb:1",
            "--id",
            "hello",
            "--mem",
            "64MiB",
            "--cpus",
            "0.5",
            "--stop-grace",
            "1",
            "--",
            "sh",
            "-c",
            "echo hello; sleep 1000",
        ])
        .expect("task run");
    assert!(ran.contains("task hello pinned to node agent-1"), "{ran}");
    let duplicate = c
        .cli(&[
            "task",
            "run",
            "--node",
            "agent-1",
            "--image",
            "example.org/bb:1",
            "--id",
            "hello",
            "--",
            "true",
        ])
        .expect_err("duplicate id refused");
    assert!(
        duplicate.contains("a task with id `hello` exists already"),
        "{duplicate}"
    );
    let running = c.wait("task hello running", Duration::from_secs(30), || {
        c.try_tasks()
            .ok()?
            .into_iter()
            .find(|t| t.id == "hello" && t.state == TaskState::Running)
    });
    eprintln!(
        "figure: task run to running in task list {:.3}s",
        submitted.elapsed().as_secs_f64()
    );
    assert_eq!(running.node, "agent-1");
    assert!(running.pid.is_some(), "{running:?}");
    // On the overlay: an address from agent-1's subnet, in a namespace of
    // its own.
    let hello_addr = running.address.expect("hello has an overlay address");
    assert!(
        subnet_of("agent-1").contains(hello_addr),
        "{hello_addr} outside agent-1's subnet"
    );
    assert!(netns_handle("hello").exists());
    let local = agent::tasks::list(&agent_state);
    assert_eq!(local.len(), 1, "{local:?}");
    assert_eq!(local[0].state, TaskState::Running);
    let table = c.cli(&["task", "list"]).expect("task list");
    assert!(
        table.contains("hello") && table.contains("agent-1"),
        "{table}"
    );
    let state = agent_state.display().to_string();
    c.wait("hello in the task's log", Duration::from_secs(10), || {
        output(&c.strata, &["task", "logs", "hello", "--state-dir", &state])
            .ok()
            .filter(|l| l.contains("hello"))
    });

    // The agent restarts: the task keeps running and is adopted (same
    // process, no restart, no second task), and is still reported. While
    // it is down its IPAM book is emptied, as a power cut on a file system
    // without the durable write would leave it: the agent rebuilds the book
    // from the task's own record instead of failing at every start.
    drop(agent);
    let ipam_path = agent_state.join("overlay/ipam.json");
    std::fs::write(&ipam_path, "").expect("empty the IPAM book");
    let agent = c.spawn_node("agent-1", "agent-1.log");
    c.wait("agent-1 registered again", Duration::from_secs(30), || {
        c.log("agent-1.log").contains("is Ready").then_some(())
    });
    // Its task follower logs this just before its first reconcile.
    c.wait(
        "agent-1's task follower running",
        Duration::from_secs(30),
        || {
            agent
                .log()
                .contains("tasks: the overlay is up, tasks get their network from it")
                .then_some(())
        },
    );
    let agent_pid = agent.child.id();
    Hold::new("hello adopted, not restarted", Duration::from_secs(4))
        .every(Duration::from_millis(250))
        .blind_for(Duration::from_secs(1))
        .check(|| {
            if !qemu_tests::observe::alive(agent_pid) {
                return Seen::Broken(format!("agent-1 exited: {}", agent.log()));
            }
            let local = agent::tasks::list(&agent_state);
            let adopted = local.len() == 1
                && local[0].state == TaskState::Running
                && local[0].pid == running.pid
                && local[0].restarts == 0;
            if !adopted {
                return Seen::Broken(format!(
                    "on the node: {local:?}, expected hello running as pid {:?}",
                    running.pid
                ));
            }
            let Ok(listed) = c.try_tasks() else {
                return Seen::Blind("no task list from the API".to_string());
            };
            let seen = format!("on the node and listed: {listed:?}");
            if listed.len() == 1
                && listed[0].pid == running.pid
                && listed[0].state == TaskState::Running
                && listed[0].address == Some(hello_addr)
            {
                Seen::Holds(seen)
            } else {
                Seen::Broken(seen)
            }
        });

    assert!(
        agent
            .log()
            .contains("overlay: the IPAM book could not be parsed"),
        "the damaged book is not reported: {}",
        agent.log()
    );
    let book = agent::overlay::ipam::Ipam::load(&ipam_path, subnet_of("agent-1"))
        .expect("the rebuilt book reads");
    assert_eq!(
        book.assigned().get("hello"),
        Some(&hello_addr),
        "the rebuilt book keeps hello's address"
    );
    assert_eq!(
        std::fs::read_to_string(agent_state.join("overlay/ipam.json.damaged")).expect("kept"),
        ""
    );

    tasks_reach_each_other(&c, subnet_of("agent-1"), subnet_of("agent-2"));

    // Stopped through the API: gone from the cluster and from the node.
    let stopped = Instant::now();
    let out = c.cli(&["task", "stop", "hello"]).expect("task stop");
    assert!(out.contains("task hello stopped"), "{out}");
    c.wait(
        "task hello removed from agent-1",
        Duration::from_secs(30),
        || agent::tasks::list(&agent_state).is_empty().then_some(()),
    );
    eprintln!(
        "figure: task stop to removed on the node {:.3}s",
        stopped.elapsed().as_secs_f64()
    );
    assert_eq!(c.tasks(), Vec::new());
    assert!(
        !netns_handle("hello").exists(),
        "the task's namespace is left behind"
    );
    let missing = c
        .cli(&["task", "stop", "hello"])
        .expect_err("already stopped");
    assert!(missing.contains("no task with id `hello`"), "{missing}");

    // A task in a user namespace on the overlay: root inside and a range
    // of agent-2's ids outside; the network namespace agent-2 made for it
    // is the one its /sys shows (its eth0, none of the node's links), and
    // it binds a low port, which takes no capability of the node's.
    c.cli_ok(&[
        "task",
        "run",
        "--node",
        "agent-2",
        "--image",
        "example.org/bb:1",
        "--id",
        "mapped",
        "--user-ns",
        "--stop-grace",
        "0",
        "--",
        "sh",
        "-c",
        "head -1 /proc/self/uid_map; ls /sys/class/net | tr '\\n' ' '; echo; \
         nc -l -p 80 & sleep 1; kill $! 2>/dev/null && echo bound; echo done; sleep 1000",
    ]);
    let state2 = agent2_state.display().to_string();
    let log = c.wait("the mapped task's report", Duration::from_secs(30), || {
        output(
            &c.strata,
            &["task", "logs", "mapped", "--state-dir", &state2],
        )
        .ok()
        .filter(|l| l.contains("done"))
    });
    let lines: Vec<&str> = log.lines().map(str::trim).collect();
    let first: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(first[0], "0", "{log}");
    assert_ne!(first[1], "0", "root inside is root outside: {log}");
    assert_eq!(lines[1], "eth0 lo", "{log}");
    assert_eq!(&lines[2..], ["bound", "done"], "{log}");
    let mapped = c
        .tasks()
        .into_iter()
        .find(|t| t.id == "mapped")
        .expect("mapped listed");
    assert!(
        mapped
            .address
            .is_some_and(|a| subnet_of("agent-2").contains(a)),
        "{mapped:?}"
    );
    c.cli_ok(&["task", "stop", "mapped"]);
    c.wait(
        "task mapped removed from agent-2",
        Duration::from_secs(30),
        || agent::tasks::list(&agent2_state).is_empty().then_some(()),
    );
}

/// A server task on agent-1 and a client task on agent-2: the client
/// reaches the server over the overlay by short name (the resolv.conf's
/// search domain), by `<task>.<zone>` and by address; agent-2's resolver
/// answers the server's app name (A) and its port (SRV). Stopping the server
/// removes its DNS records and its namespace.
fn tasks_reach_each_other(c: &TestCluster, subnet: Ipv4Cidr, agent2_subnet: Ipv4Cidr) {
    let run_task = |node: &str, id: &str, script: &str| {
        c.cli(&qemu_tests::registry::task_run_args(
            node,
            "example.org/bb:1",
            id,
            script,
        ))
        .unwrap_or_else(|e| panic!("task run {id}: {e}"))
    };
    let started = Instant::now();
    let mut web_args = qemu_tests::registry::task_run_args(
        "agent-1",
        "example.org/bb:1",
        "web",
        "exec nc -ll -p 8080 -e echo pong",
    )
    .to_vec();
    web_args.splice(2..2, ["--app", "shop", "--port", "8080"]);
    c.cli(&web_args)
        .unwrap_or_else(|e| panic!("task run web: {e}"));
    let web = c.wait("task web running", Duration::from_secs(30), || {
        c.try_tasks()
            .ok()?
            .into_iter()
            .find(|t| t.id == "web" && t.state == TaskState::Running && t.address.is_some())
    });
    let addr = web.address.expect("web has an address");
    assert_eq!(
        (web.app.as_deref(), web.ports.as_slice()),
        (Some("shop"), &[8080][..])
    );
    let table = c.cli(&["task", "list"]).expect("task list");
    assert!(table.contains("shop:8080"), "{table}");
    assert!(subnet.contains(addr), "{addr} outside {subnet}");
    let script = qemu_tests::registry::reach_by_name_script(
        "web",
        "strata.internal",
        &addr.to_string(),
        8080,
        "pong",
        10,
    );
    // The client may start before its node learnt the record: it retries.
    run_task("agent-2", "client", &script);
    let client = c.wait("task client exited", Duration::from_secs(60), || {
        c.try_tasks()
            .ok()?
            .into_iter()
            .find(|t| t.id == "client" && t.exit_code.is_some())
    });
    let state = c.state_dir("agent-2").display().to_string();
    let logs = output(
        &c.strata,
        &["task", "logs", "client", "--state-dir", &state],
    )
    .unwrap_or_default();
    // Exit 0: both names resolved to web's address and web answered
    // `pong` at each (the script checks).
    assert_eq!(client.exit_code, Some(0), "client failed: {logs}");
    eprintln!(
        "figure: web task run to a client on another node served by name {:.3}s",
        started.elapsed().as_secs_f64()
    );
    c.cli(&["task", "stop", "client"]).expect("stop client");

    // The app name and the SRV record, from a task on agent-2 (busybox's
    // nslookup, as the QEMU tier asks them)...
    run_task(
        "agent-2",
        "srv",
        &qemu_tests::registry::app_srv_script(
            "shop",
            "strata.internal",
            "web",
            &addr.to_string(),
            8080,
            10,
        ),
    );
    let srv = c.wait("task srv exited", Duration::from_secs(60), || {
        c.try_tasks()
            .ok()?
            .into_iter()
            .find(|t| t.id == "srv" && t.exit_code.is_some())
    });
    let logs =
        output(&c.strata, &["task", "logs", "srv", "--state-dir", &state]).unwrap_or_default();
    assert_eq!(srv.exit_code, Some(0), "app and SRV records: {logs}");
    c.cli(&["task", "stop", "srv"]).expect("stop srv");
    // ... and from the test, at agent-2's resolver (in its
    // namespace, at its bridge's address).
    let resolver = std::net::SocketAddr::from((agent::overlay::plan::gateway(agent2_subnet), 53));
    let netns = agent::overlay::netns::path(c.ns("agent-2"));
    let ask = |name: &str, rtype: RecordType| {
        agent::overlay::netns::run_in(Some(&netns), || {
            agent::dns::client::query(resolver, name, rtype, Duration::from_secs(2))
        })
        .map(|m| {
            m.answers
                .iter()
                .map(|r| r.data.to_string())
                .collect::<Vec<_>>()
        })
        .unwrap_or_else(|e| panic!("{name} {rtype}: {e:#}"))
    };
    assert_eq!(
        ask("shop.strata.internal.", RecordType::A),
        [addr.to_string()]
    );
    assert_eq!(
        ask("_shop._tcp.strata.internal.", RecordType::SRV),
        ["0 0 8080 web.strata.internal."]
    );

    // The server stops: its name no longer resolves anywhere.
    c.cli(&["task", "stop", "web"]).expect("stop web");
    c.wait("task web removed", Duration::from_secs(30), || {
        c.try_tasks()
            .ok()?
            .iter()
            .all(|t| t.id != "web")
            .then_some(())
    });
    run_task(
        "agent-2",
        "probe",
        // A node's name still resolves (the resolver answers); the
        // stopped task's does not.
        &qemu_tests::registry::gone_script("web", "agent-1", 10),
    );
    let probe = c.wait("task probe exited", Duration::from_secs(60), || {
        c.try_tasks()
            .ok()?
            .into_iter()
            .find(|t| t.id == "probe" && t.exit_code.is_some())
    });
    assert_eq!(
        probe.exit_code,
        Some(0),
        "web still resolves after its stop"
    );
    c.cli(&["task", "stop", "probe"]).expect("stop probe");
    assert!(!netns_handle("web").exists());
    assert_eq!(
        ask("_shop._tcp.strata.internal.", RecordType::SRV),
        Vec::<String>::new(),
        "the SRV record outlived the task"
    );
}
