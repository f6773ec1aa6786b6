//! Cluster formation from our images: nodes booted under QEMU with their
//! user-data on fw_cfg or on a `STRATA-CFG` config disk (vfat, iso9660) join
//! by themselves, and the cluster is checked from outside through the API
//! forwarded from the first master.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use qemu_tests::cluster::{Layout, NodeSpec, Prepared, UserDataVia};
use qemu_tests::disk::ConfigFs;
use qemu_tests::env::{generic_images_dir, images_dir, project_root, require, upgrade_images_dir};
use qemu_tests::observe::{Hold, Seen, wait_until_holding};
use qemu_tests::registry::{self, Registry};
use qemu_tests::{OVMF_CODE, QEMU, Vm, marker_fields, unique};

/// Boots under TCG take 25-90 s each when several VMs share two cores.
const BOOT: Duration = Duration::from_secs(420);

fn strata() -> PathBuf {
    std::env::var_os("STRATA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target/release/strata"))
}

fn ready(test: &str, roles: &[&str]) -> bool {
    let images = images_dir();
    let mut files: Vec<PathBuf> = roles
        .iter()
        .map(|r| images.join(format!("strata-{r}.qcow2")))
        .collect();
    files.push(strata());
    files.push(OVMF_CODE.into());
    let refs: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
    require(test, &refs, &[QEMU, "qemu-img"])
}

/// What the registry fixture needs besides QEMU.
fn registry_ready(test: &str) -> bool {
    require(
        test,
        &[std::path::Path::new("/bin/busybox")],
        &["docker-registry", "umoci", "skopeo"],
    )
}

/// Every node gets its user-data on fw_cfg.
fn fw_cfg(_: &NodeSpec) -> UserDataVia {
    UserDataVia::FwCfg
}

fn boot(
    layout: Layout,
    tag: &str,
    extra_toml: &str,
    disk_images: &[(&str, PathBuf)],
    via: impl Fn(&NodeSpec) -> UserDataVia,
) -> (Prepared, Vec<Vm>) {
    let dir = project_root().join(format!("target/qemu-tests/{tag}-{}", unique()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut prepared = Prepared::with_extra(&dir, layout, &strata(), &images_dir(), extra_toml)
        .expect("strata cluster init makes the cluster's files");
    for (node, image) in disk_images {
        prepared.disk_images.insert(node.to_string(), image.clone());
    }
    let vms = prepared
        .nodes
        .iter()
        .map(|n| {
            let config = prepared
                .vm_config_via(n, via(n))
                .expect("the node's disk overlay and config disk are made");
            Vm::spawn(config).expect("qemu starts")
        })
        .collect();
    (prepared, vms)
}

/// Waits for every VM's ready marker (printed once the node is Ready in
/// the cluster) and the boot times line after it, and prints the times.
/// Cluster nodes tell systemd `READY=1` before they join, so
/// multi-user.target is normally reached before they are Ready; when it is
/// still pending at the marker, the boot line comes later and the checks of
/// [`qemu_tests::boot_times::BootTimes::parse`] still hold.
fn wait_markers(vms: &mut [Vm], via: impl Fn(&str) -> UserDataVia) {
    for vm in vms.iter_mut() {
        // The agent says where its user-data came from before it joins.
        let name = vm.config.name.clone();
        let expected = match via(&name) {
            UserDataVia::FwCfg => "user-data: fw_cfg:".to_string(),
            UserDataVia::Disk(fs) => format!("user-data: label:STRATA-CFG ({} on /dev/", fs.name()),
        };
        let line = vm
            .wait_for("strata: user-data: ", BOOT)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(
            line.contains(&expected),
            "{name}: expected `{expected}`, the agent said `{line}`"
        );
        let t = vm.boot_times(BOOT).unwrap_or_else(|e| panic!("{e:#}"));
        let f = marker_fields(&t.ready_line);
        println!(
            "{}: Ready after {:.1}s, {} kernel start(s) (guest: multi-user.target at {} ms, Ready at {} ms): {}",
            vm.config.name,
            t.host_ready_ms as f64 / 1000.0,
            t.kernel_starts,
            t.multi_user_ms,
            t.ready_ms,
            t.ready_line
        );
        assert_eq!(f.get("healthy").map(String::as_str), Some("yes"), "{t:?}");
        assert_eq!(f.get("verity").map(String::as_str), Some("yes"), "{t:?}");
        assert_eq!(f.get("root").map(String::as_str), Some("ro"), "{t:?}");
        let kind = match via(&name) {
            UserDataVia::FwCfg => "fw_cfg",
            UserDataVia::Disk(_) => "label",
        };
        assert_eq!(f.get("user-data").map(String::as_str), Some(kind), "{t:?}");
        assert!(t.multi_user_ms > 0 && t.ready_ms > 0, "{t:?}");
        assert!(t.kernel_ms > 0 && t.userspace_ms > 0, "{t:?}");
    }
}

fn wait_state(p: &Prepared, name: &str, state: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let states = p.node_states().unwrap_or_default();
        if states.iter().any(|(n, s)| n == name && s == state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} not {state} after {timeout:?}: {states:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether node `name` is in state `state` now (no answer: not yet).
fn in_state(p: &Prepared, name: &str, state: &str) -> Option<()> {
    p.node_states()
        .ok()?
        .iter()
        .any(|(n, s)| n == name && s == state)
        .then_some(())
}

/// A look at node `name`, which must stay Ready: it is Ready, and since the
/// same time as at the first look (`since`): a new `ready_since` means its
/// lease expired, a gap in its heartbeats. An API error is a blind look.
fn stays_ready(p: &Prepared, name: &str, since: &mut Option<u64>) -> Seen {
    let rows = match p.node_rows() {
        Ok(rows) => rows,
        Err(e) => return Seen::Blind(format!("{e:#}")),
    };
    let seen = format!("{rows:?}");
    let Some(now) = rows
        .iter()
        .find(|r| r.name == name && r.state == "ready")
        .and_then(|r| r.ready_since)
    else {
        return Seen::Broken(format!("{name} is not Ready: {seen}"));
    };
    let first = *since.get_or_insert(now);
    if now == first {
        Seen::Holds(seen)
    } else {
        Seen::Broken(format!(
            "{name} Ready since {now}, but since {first} at the first look: its lease expired; {seen}"
        ))
    }
}

/// How the nodes of the join test get their user-data: the master on
/// fw_cfg, the agents on a config disk each, one vfat and one iso9660.
fn join_via(name: &str) -> UserDataVia {
    match name {
        "private-1" => UserDataVia::Disk(ConfigFs::Vfat),
        "public-1" => UserDataVia::Disk(ConfigFs::Iso9660),
        _ => UserDataVia::FwCfg,
    }
}

#[test]
fn master_private_and_public_join_at_boot() {
    let generic = generic_images_dir();
    let generic_manifest = generic.join("strata-public.manifest.json");
    if !ready(
        "master_private_and_public_join_at_boot",
        &["master", "private", "public"],
    ) || !registry_ready("master_private_and_public_join_at_boot")
        || !require(
            "master_private_and_public_join_at_boot",
            &[&generic.join("strata-public.qcow2"), &generic_manifest],
            &["mkfs.vfat", "mcopy", "genisoimage"],
        )
    {
        return;
    }
    let bytes = std::fs::read(&generic_manifest).expect("the generic manifest is readable");
    let m = image::manifest::Manifest::parse(&generic_manifest.display().to_string(), &bytes)
        .expect("the generic manifest parses");
    assert!(
        m.kernel.contains("linux-image-amd64") && !m.kernel.contains("cloud"),
        "{}",
        m.kernel
    );
    // A registry on the host side of the VMs' user-mode network, which
    // the agents reach over plain HTTP.
    let registry =
        Registry::start(&project_root().join(format!("target/qemu-tests/registry-{}", unique())))
            .expect("the host-side registry starts and holds bb:1");
    let (p, mut vms) = boot(
        Layout {
            masters: 1,
            private: 1,
            public: 1,
        },
        "join",
        &format!(
            "[registries]\ninsecure = [\"{}\"]\n",
            registry.guest_registry()
        ),
        &[("public-1", generic.join("strata-public.qcow2"))],
        |n| join_via(&n.name),
    );
    wait_markers(&mut vms, join_via);
    // public-1 runs the image built with Debian's generic kernel (`--kernel
    // generic`, for bare metal), and joins and serves tasks like the others.
    let log = vms
        .iter()
        .find(|v| v.config.name == "public-1")
        .expect("public-1's VM")
        .config
        .log();
    let console = std::fs::read_to_string(&log).expect("public-1's console log");
    let version = console
        .lines()
        .find(|l| l.contains("Linux version"))
        .unwrap_or_else(|| panic!("no kernel start in {}", log.display()));
    assert!(
        version.contains("-amd64") && !version.contains("cloud"),
        "public-1 does not run the generic kernel: {version}"
    );
    let states = p
        .wait_ready(
            &["master-1", "private-1", "public-1"],
            Duration::from_secs(60),
        )
        .unwrap();
    assert_eq!(states.len(), 3, "{states:?}");
    println!("{}", p.strata(&["node", "list"]).unwrap());

    // Break-glass on a booted node, which has no SSH and no login: the
    // command runs in the host's PID namespace (its PID 1 is systemd).
    let comm = p
        .strata(&["node", "exec", "private-1", "--", "cat", "/proc/1/comm"])
        .expect("strata node exec on private-1");
    assert_eq!(comm, "systemd\n");

    tasks_across_booted_agents(&p, &registry.guest_image());
    app_across_booted_agents(&p, &registry.guest_image());
    edge_through_public_agent(&p, &registry.guest_image());
    job_on_booted_agent(&p, &registry.guest_image());
    upgrade_booted_agent(&p, &mut vms, &registry.guest_image());

    // A node that vanishes is shown unreachable after the grace period.
    let lost = vms.remove(1);
    assert_eq!(lost.config.name, "private-1");
    drop(lost);
    let gone = Instant::now();
    let mut since = None;
    wait_until_holding(
        "private-1 unreachable while public-1 stays Ready",
        Duration::from_secs(60),
        Duration::from_secs(1),
        || in_state(&p, "private-1", "unreachable"),
        || stays_ready(&p, "public-1", &mut since),
    );
    println!(
        "private-1 unreachable {:.1}s after its VM was killed",
        gone.elapsed().as_secs_f64()
    );
}

#[test]
fn three_masters_survive_losing_one() {
    if !ready("three_masters_survive_losing_one", &["master", "private"]) {
        return;
    }
    let (p, mut vms) = boot(
        Layout {
            masters: 3,
            private: 1,
            public: 0,
        },
        "quorum",
        "",
        &[],
        fw_cfg,
    );
    wait_markers(&mut vms, |_| UserDataVia::FwCfg);
    p.wait_ready(
        &["master-1", "master-2", "master-3", "private-1"],
        Duration::from_secs(60),
    )
    .unwrap();

    // Every certificate replaced while the cluster runs: each master's
    // API and etcd member (whose peers then talk over new handshakes when
    // master-3 goes below), and every node's.
    let rotated: serde_json::Value = serde_json::from_str(
        &p.strata(&["cluster", "rotate-certs", "--timeout", "120s", "--json"])
            .expect("strata cluster rotate-certs"),
    )
    .expect("rotate-certs prints JSON");
    assert_eq!(
        (&rotated["masters_renewed"], &rotated["nodes_renewed"]),
        (&serde_json::json!(3), &serde_json::json!(4)),
        "{rotated:#}"
    );

    // Every node Ready on its new certificate before one master goes.
    p.wait_ready(
        &["master-1", "master-2", "master-3", "private-1"],
        Duration::from_secs(60),
    )
    .unwrap();
    let lost = vms.remove(2);
    assert_eq!(lost.config.name, "master-3");
    drop(lost);
    // private-1's heartbeats move to the masters that are left, on the
    // same lease. The API may still route a call to the lost master: blind.
    let mut since = None;
    wait_until_holding(
        "master-3 unreachable while private-1 stays Ready",
        Duration::from_secs(90),
        Duration::from_secs(1),
        || in_state(&p, "master-3", "unreachable"),
        || stays_ready(&p, "private-1", &mut since),
    );
    // The API's etcd connections drop the lost member within seconds
    // (HTTP/2 keep-alive); until then a call may still go to it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status: serde_json::Value = loop {
        match p.strata(&["cluster", "status", "--json"]) {
            Ok(text) => break serde_json::from_str(&text).unwrap(),
            Err(e) if Instant::now() < deadline => {
                println!("cluster status not yet answered: {e:#}");
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(e) => panic!("cluster status failed for 60s after losing master-3: {e:#}"),
        }
    };
    println!("{status:#}");
    // And it keeps answering: calls the master's etcd client routes to the
    // lost member are sent again to the others (`etcd::Store::call`).
    for i in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        if let Err(e) = p.strata(&["cluster", "status", "--json"]) {
            panic!("cluster status failed {i} s after it first answered without master-3: {e:#}");
        }
    }
    assert_eq!(status["etcd_quorum"], serde_json::json!(true), "{status:#}");
    assert!(status["etcd_leader"].is_string(), "{status:#}");
    let healthy = status["masters"].as_array().map_or(0, |m| {
        m.iter()
            .filter(|m| m["healthy"] == serde_json::json!(true))
            .count()
    });
    assert_eq!(healthy, 2, "two of three masters healthy: {status:#}");
    wait_state(&p, "private-1", "ready", Duration::from_secs(5));
    // Still Ready, since the same time, well past a grace period (10 s):
    // its heartbeats go to the masters that are left.
    Hold::new(
        "private-1 stays Ready after losing master-3",
        Duration::from_secs(14),
    )
    .every(Duration::from_secs(1))
    .blind_for(Duration::from_secs(4))
    .check(|| stays_ready(&p, "private-1", &mut since));
}

/// An app deployed with the CLI from a Marathon JSON file (issue 15):
/// the scheduler places its instance on the private agent, and a task on
/// the public agent reaches it through its DNS name (`web-shop.<zone>`,
/// Mesos-DNS's name for `/shop/web`). Removed, its instance stops.
fn app_across_booted_agents(p: &Prepared, image: &str) {
    let file = project_root().join(format!("target/qemu-tests/web-{}.json", unique()));
    let json = format!(
        r#"{{"id": "/shop/web", "instances": 1, "cpus": 0.1, "mem": 32,
            "cmd": "exec nc -ll -p 8080 -e echo pong",
            "container": {{"type": "DOCKER", "docker": {{"image": "{image}", "network": "BRIDGE",
              "portMappings": [{{"containerPort": 8080, "hostPort": 0, "name": "http"}}]}}}},
            "acceptedResourceRoles": ["*"],
            "healthChecks": [{{"protocol": "TCP", "portIndex": 0, "gracePeriodSeconds": 60,
              "intervalSeconds": 2, "timeoutSeconds": 2, "maxConsecutiveFailures": 3}}],
            "labels": {{"team": "shop"}}, "version": "2021-07-27T00:00:00Z"}}"#
    );
    std::fs::write(&file, json).expect("write the app file");
    let path = file.display().to_string();
    validate_offline(p, "app", &path);
    let started = Instant::now();
    let out = p
        .strata(&["app", "deploy", &path, "--wait", "--timeout", "400"])
        .unwrap_or_else(|e| panic!("app deploy: {e:#}"));
    println!(
        "{} ({:.1}s, pull from the host's registry included)",
        out.trim(),
        started.elapsed().as_secs_f64()
    );
    let shown: serde_json::Value = serde_json::from_str(
        &p.strata(&["app", "show", "/shop/web", "--json"])
            .expect("app show"),
    )
    .expect("app show JSON");
    let instance = &shown["instances"][0];
    assert_eq!(instance["node"], "private-1", "{shown}");
    assert_eq!(instance["health"], "healthy", "{shown}");
    // The client resolves the app's names (the zone's and the short one
    // through the search list) and its named port's SRV record, and is
    // answered through the address it got; it prints that address, which
    // must be the address of an instance of the app.
    let script = "resolve() { nslookup \"$1\" 2>/dev/null | awk '/^Name:/{n=1} n&&/^Address/{print $2; exit}'; }; \
         try() { a=$(resolve web-shop.strata.internal) && [ -n \"$a\" ] && b=$(resolve web-shop) && [ \"$a\" = \"$b\" ] && \
         [ \"$(echo | nc -w 5 $a 8080)\" = pong ] && \
         nslookup -type=srv _http._web-shop._tcp.strata.internal 2>/dev/null | grep -qF ' 8080 '; }; \
         i=0; while [ $i -lt 30 ]; do try && { echo \"resolved $a\"; exit 0; }; i=$((i+1)); echo \"attempt $i: $a $b\"; sleep 1; done; \
         nslookup web-shop.strata.internal; nslookup -type=srv _http._web-shop._tcp.strata.internal; exit 1";
    let run = p
        .strata(&registry::task_run_args(
            "public-1",
            image,
            "app-client",
            script,
        ))
        .unwrap_or_else(|e| panic!("task run app-client: {e:#}"));
    println!("{}", run.trim());
    let client = wait_task(p, "app-client", "exited", Duration::from_secs(300), |t| {
        t["exit_code"].is_number()
    });
    // What the client saw, and the app as the masters see it now.
    let said = |args: &[&str]| p.strata(args).unwrap_or_else(|e| format!("{e:#}"));
    let log = said(&[
        "node",
        "exec",
        "public-1",
        "--",
        "/usr/bin/strata",
        "task",
        "logs",
        "app-client",
    ]);
    let now = said(&["app", "show", "/shop/web", "--json"]);
    if client["exit_code"] != serde_json::json!(0) {
        // The instances only (the spec is long), the tasks, and what both
        // ends of the overlay know: links, routes, neighbours, forwarding
        // entries, the rules that admit a task's frames, the agent's log.
        let instances = serde_json::from_str::<serde_json::Value>(&now)
            .map(|v| v["instances"].to_string())
            .unwrap_or(now.clone());
        let net = |node: &str| {
            said(&[
                "node",
                "exec",
                node,
                "--",
                "sh",
                "-c",
                "ip -br link; ip -br addr; ip route; ip neigh; bridge fdb show | grep -v 33:33; \
                 nft list table bridge strata; journalctl -u strata-agent -n 60 --no-pager",
            ])
        };
        panic!(
            "public-1 did not reach the app /shop/web by its DNS name web-shop: {client}\n\
             client's log:\n{log}\ninstances: {instances}\ntask list:\n{}\n\
             private-1's network:\n{}\npublic-1's network:\n{}",
            said(&["task", "list"]),
            net("private-1"),
            net("public-1"),
        );
    }
    let resolved = log
        .lines()
        .find_map(|l| l.strip_prefix("resolved "))
        .unwrap_or_else(|| panic!("the client did not say what it resolved: {log}"));
    let now: serde_json::Value = serde_json::from_str(&now).expect("app show JSON");
    assert!(
        now["instances"]
            .as_array()
            .is_some_and(|v| v.iter().any(|i| i["address"] == resolved)),
        "web-shop resolved to {resolved}, the address of no instance: {now}"
    );
    println!("public-1 reached /shop/web as web-shop at {resolved}, and its port http by SRV");
    p.strata(&["task", "stop", "app-client"])
        .expect("stop app-client");
    p.strata(&["app", "remove", "/shop/web"])
        .expect("app remove");
    wait_listed_none(p, "app", Duration::from_secs(120));
    let _ = std::fs::remove_file(&file);
}

/// One `GET /` for `host` on a new connection to the host's `port`.
fn http_get(port: u16, host: &str) -> std::io::Result<(u16, String)> {
    qemu_tests::http::get(([127, 0, 0, 1], port).into(), host, "/")
}

/// The edge from outside: an app on private-1 exposed for `edge.test` by
/// Marathon-LB's labels answers the host through public-1's forwarded
/// HTTP port (HAProxy in the public image, run by the agent), and a client
/// sending requests all through a rolling deployment of the app sees none
/// fail.
fn edge_through_public_agent(p: &Prepared, image: &str) {
    let file = project_root().join(format!("target/qemu-tests/edge-{}.json", unique()));
    let app = |version: &str| {
        format!(
            r#"{{"id": "/shop/edge", "instances": 2, "cpus": 0.1, "mem": 32,
                "cmd": "busybox mkdir -p /www && echo ok {version} $STRATA_INSTANCE_ID > /www/index.html && exec busybox httpd -f -p 8080 -h /www",
                "labels": {{"HAPROXY_GROUP": "external", "HAPROXY_0_VHOST": "edge.test"}},
                "container": {{"type": "DOCKER", "docker": {{"image": "{image}", "network": "BRIDGE",
                  "portMappings": [{{"containerPort": 8080, "name": "http"}}]}}}},
                "healthChecks": [{{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
                  "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 2,
                  "maxConsecutiveFailures": 3}}],
                "upgradeStrategy": {{"minimumHealthCapacity": 1, "maximumOverCapacity": 1}},
                "version": "2021-07-27T00:00:00Z"}}"#
        )
    };
    std::fs::write(&file, app("v1")).expect("write the app file");
    let path = file.display().to_string();
    p.strata(&["app", "deploy", &path, "--wait", "--timeout", "300"])
        .unwrap_or_else(|e| panic!("app deploy /shop/edge: {e:#}"));
    let started = Instant::now();
    let first = loop {
        match http_get(p.edge_port, "edge.test") {
            Ok((200, body)) if body.starts_with("ok v1") => break body,
            other if started.elapsed() > Duration::from_secs(60) => panic!(
                "public-1's edge did not answer for edge.test within 60 s: {other:?}\npublic-1's firewall:\n{}",
                p.strata(&["node", "firewall", "public-1"])
                    .unwrap_or_else(|e| format!("{e:#}"))
            ),
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    };
    println!(
        "the host reached /shop/edge through public-1's edge in {:.1}s: {first}",
        started.elapsed().as_secs_f64()
    );
    let (code, body) = http_get(p.edge_port, "nobody.test").expect("the edge answers");
    assert_eq!(code, 404, "a host no app exposes: {body}");

    // A rolling deployment while a client sends requests all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = p.edge_port;
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut sent, mut failed, mut seen) =
                (0usize, Vec::new(), std::collections::BTreeSet::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                sent += 1;
                match http_get(port, "edge.test") {
                    Ok((200, body)) => {
                        seen.insert(body.split_whitespace().nth(1).unwrap_or("").to_string());
                    }
                    other => failed.push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (sent, failed, seen)
        })
    };
    std::fs::write(&file, app("v2")).expect("write the app file");
    let rolled = Instant::now();
    p.strata(&["app", "deploy", &path, "--wait", "--timeout", "300"])
        .unwrap_or_else(|e| panic!("app deploy /shop/edge v2: {e:#}"));
    // The last old instance drains: a little more traffic after the end.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed, seen) = client.join().expect("the client");
    println!(
        "rolling deployment of /shop/edge through public-1's edge: {sent} requests in {:.1}s, {} failed, versions seen {seen:?}",
        rolled.elapsed().as_secs_f64(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "failed requests during the rollout: {failed:?}"
    );
    assert!(seen.contains("v2"), "the client never reached v2: {seen:?}");
    p.strata(&["app", "remove", "/shop/edge"])
        .expect("app remove");
    wait_listed_none(p, "app", Duration::from_secs(120));
    let _ = std::fs::remove_file(&file);
}

/// A Metronome job run through the CLI on a booted agent: `job run --wait`
/// exits with the run's exit code, the history records it, and `job logs`
/// reads the run's output back from its node through the master.
fn job_on_booted_agent(p: &Prepared, image: &str) {
    let file = project_root().join(format!("target/qemu-tests/job-{}.json", unique()));
    let json = format!(
        r#"{{"id": "reports.nightly", "description": "a report that fails",
            "labels": {{"team": "reports"}},
            "run": {{"cmd": "echo hello-from-job; echo to-stderr >&2; exit 7",
              "cpus": 0.1, "mem": 32, "disk": 0, "docker": {{"image": "{image}"}},
              "restart": {{"policy": "NEVER"}}}}}}"#
    );
    std::fs::write(&file, json).expect("write the job file");
    let path = file.display().to_string();
    validate_offline(p, "job", &path);
    p.strata(&["job", "add", &path])
        .unwrap_or_else(|e| panic!("job add: {e:#}"));
    let started = Instant::now();
    let (code, out, err) = p
        .strata_status(&[
            "job",
            "run",
            "reports.nightly",
            "--wait",
            "--timeout",
            "300",
        ])
        .expect("strata job run runs");
    println!(
        "{}{} ({:.1}s)",
        out.trim(),
        err.trim(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        code, 7,
        "job run --wait exits with the run's code: {out}{err}"
    );
    assert!(out.contains("exit code 7"), "{out}");
    let history: serde_json::Value = serde_json::from_str(
        &p.strata(&["job", "history", "reports.nightly", "--json"])
            .expect("job history"),
    )
    .expect("job history JSON");
    let runs = history.as_array().expect("job history is a list");
    assert_eq!(runs.len(), 1, "{history}");
    let run = &runs[0];
    assert_eq!(run["state"], "failed", "{history}");
    assert_eq!(run["exit_code"], 7, "{history}");
    let node = run["attempts"][0]["node"].as_str().unwrap_or_default();
    assert!(
        ["private-1", "public-1"].contains(&node),
        "the run's node: {history}"
    );
    println!(
        "{}",
        p.strata(&["job", "history", "reports.nightly"])
            .expect("job history")
    );
    // Its output, each stream on the CLI's own.
    let (code, out, err) = p
        .strata_status(&["job", "logs", "reports.nightly"])
        .expect("strata job logs runs");
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (0, "hello-from-job\n", "to-stderr\n"),
        "the run's output from {node}"
    );
    p.strata(&["job", "remove", "reports.nightly"])
        .expect("job remove");
    wait_listed_none(p, "job", Duration::from_secs(60));
    let _ = std::fs::remove_file(&file);
}

/// `strata KIND validate PATH` offline (no context, no endpoint): it must
/// pass; prints what it says.
fn validate_offline(p: &Prepared, kind: &str, path: &str) {
    let valid = std::process::Command::new(&p.strata)
        .args([kind, "validate", path])
        .output()
        .unwrap_or_else(|e| panic!("strata {kind} validate runs: {e}"));
    assert!(
        valid.status.success(),
        "{kind} validate: {}",
        String::from_utf8_lossy(&valid.stderr)
    );
    println!("{}", String::from_utf8_lossy(&valid.stdout).trim());
}

/// Waits until `strata KIND list --json` lists none (an app or a job
/// removed, with what it ran).
fn wait_listed_none(p: &Prepared, kind: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !p
        .strata(&[kind, "list", "--json"])
        .is_ok_and(|l| l.trim() == "[]")
    {
        assert!(
            Instant::now() < deadline,
            "the {kind} was not removed within {}s",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The cluster's tasks, as `strata task list --json` gives them.
fn tasks(p: &Prepared) -> Vec<serde_json::Value> {
    p.strata(&["task", "list", "--json"])
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
        .unwrap_or_default()
}

/// Waits until task `id` satisfies `ok`; returns it.
fn wait_task(
    p: &Prepared,
    id: &str,
    what: &str,
    timeout: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let all = tasks(p);
        if let Some(t) = all.iter().find(|t| t["id"] == id && ok(t)) {
            return t.clone();
        }
        assert!(
            Instant::now() < deadline,
            "task {id} not {what} after {timeout:?}: {all:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Tasks on booted agents (issues 5 and 6): a server task pinned to
/// private-1, its image pulled from the registry on the host side, gets an
/// overlay address; a client task on public-1 finds it by DNS name (short
/// and `<task>.<zone>`) and talks to it over the VXLAN overlay between the
/// two VMs. After the server stops, its name no longer resolves.
fn tasks_across_booted_agents(p: &Prepared, image: &str) {
    let run = |node: &str, id: &str, script: &str| {
        let out = p
            .strata(&registry::task_run_args(node, image, id, script))
            .unwrap_or_else(|e| panic!("task run {id}: {e:#}"));
        println!("{}", out.trim());
    };
    let started = Instant::now();
    let mut web_args = registry::task_run_args(
        "private-1",
        image,
        "web",
        "exec nc -ll -p 8080 -e echo pong",
    )
    .to_vec();
    web_args.splice(2..2, ["--app", "shop", "--port", "8080"]);
    let out = p
        .strata(&web_args)
        .unwrap_or_else(|e| panic!("task run web: {e:#}"));
    println!("{}", out.trim());
    let web = wait_task(p, "web", "running", Duration::from_secs(300), |t| {
        t["state"] == "running" && t["address"].is_string()
    });
    let addr = web["address"].as_str().expect("address").to_string();
    println!(
        "web running on private-1 at {addr} {:.1}s after `task run` (pull from the host's registry included)",
        started.elapsed().as_secs_f64()
    );
    assert!(addr.starts_with("10.200."), "{web}");
    let script = registry::reach_by_name_script("web", "strata.internal", &addr, 8080, "pong", 30);
    let asked = Instant::now();
    run("public-1", "client", &script);
    let client = wait_task(p, "client", "exited", Duration::from_secs(300), |t| {
        t["exit_code"].is_number()
    });
    println!(
        "client on public-1 exited {} {:.1}s after `task run`",
        client["exit_code"],
        asked.elapsed().as_secs_f64()
    );
    assert_eq!(
        client["exit_code"],
        serde_json::json!(0),
        "the client on public-1 did not reach web on private-1 by name over the overlay: {client}"
    );
    assert!(
        client["address"].as_str().is_some_and(|a| a != addr),
        "{client}"
    );

    p.strata(&["task", "stop", "client"]).expect("stop client");

    // public-1's resolver answers web's app name and its port (SRV).
    run(
        "public-1",
        "srv",
        &registry::app_srv_script("shop", "strata.internal", "web", &addr, 8080, 30),
    );
    let srv = wait_task(p, "srv", "exited", Duration::from_secs(120), |t| {
        t["exit_code"].is_number()
    });
    assert_eq!(
        srv["exit_code"],
        serde_json::json!(0),
        "public-1's resolver did not answer shop.strata.internal (A) and _shop._tcp (SRV): {srv}"
    );
    p.strata(&["task", "stop", "srv"]).expect("stop srv");
    p.strata(&["task", "stop", "web"]).expect("stop web");
    run(
        "public-1",
        "probe",
        &registry::gone_script("web", "public-1", 30),
    );
    let probe = wait_task(p, "probe", "exited", Duration::from_secs(120), |t| {
        t["exit_code"].is_number()
    });
    assert_eq!(
        probe["exit_code"],
        serde_json::json!(0),
        "web still resolves after its stop (2: the resolver does not answer): {probe}"
    );
    p.strata(&["task", "stop", "probe"]).expect("stop probe");

    // A task in a user namespace on the image's kernel (idmapped layers
    // under the overlay): root inside and not outside, the image's files
    // its root's, what it writes too, its own network's /sys, and a low
    // port bound. Its exit code says whether all held.
    let mut mapped = registry::task_run_args(
        "private-1",
        image,
        "mapped",
        "set -e; set -- $(head -1 /proc/self/uid_map); [ \"$1\" = 0 ]; [ \"$2\" != 0 ]; \
         [ \"$(stat -c %u /bin)\" = 0 ]; touch /made; [ \"$(stat -c %u /made)\" = 0 ]; \
         [ \"$(ls /sys/class/net | tr '\\n' ' ')\" = 'eth0 lo ' ]; \
         nc -l -p 80 & sleep 1; kill $!",
    )
    .to_vec();
    mapped.splice(2..2, ["--user-ns"]);
    p.strata(&mapped)
        .unwrap_or_else(|e| panic!("task run mapped: {e:#}"));
    let done = wait_task(p, "mapped", "exited", Duration::from_secs(120), |t| {
        t["exit_code"].is_number()
    });
    assert_eq!(
        done["exit_code"],
        serde_json::json!(0),
        "the task in a user namespace on private-1 saw something else: {done}"
    );
    p.strata(&["task", "stop", "mapped"]).expect("stop mapped");
}

/// `strata node show NAME --json`.
fn show(p: &Prepared, name: &str) -> serde_json::Value {
    let out = p
        .strata(&["node", "show", name, "--json"])
        .unwrap_or_else(|e| panic!("node show {name}: {e:#}"));
    serde_json::from_str(&out).expect("node show --json is JSON")
}

/// `node show NAME --json` once its image satisfies `pred` (within two
/// minutes; the last one either way).
fn wait_image(
    p: &Prepared,
    name: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let node = show(p, name);
        if pred(&node["image"]) || Instant::now() >= deadline {
            return node;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Asks the API for the cluster's status every two seconds while
/// `watching` holds; returns the spans in which it did not answer, each
/// with its length and the last error.
fn api_answers(p: &Prepared, watching: &std::sync::atomic::AtomicBool) -> Vec<(Duration, String)> {
    let mut gaps = Vec::new();
    let mut failing: Option<(Instant, String)> = None;
    while watching.load(std::sync::atomic::Ordering::Relaxed) {
        match p.strata(&["cluster", "status", "--json"]) {
            Ok(_) => {
                if let Some((since, e)) = failing.take() {
                    println!(
                        "the API answers again after {:.0}s",
                        since.elapsed().as_secs_f64()
                    );
                    gaps.push((since.elapsed(), e));
                }
            }
            Err(e) => {
                let e = format!("{e:#}");
                match &mut failing {
                    Some((_, last)) => *last = e,
                    None => {
                        println!("the API does not answer: {e}");
                        failing = Some((Instant::now(), e));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    if let Some((since, e)) = failing {
        gaps.push((
            since.elapsed(),
            format!("still not answering at the end: {e}"),
        ));
    }
    gaps
}

/// The SHA-256 of the first 64 MiB of a partition of private-1, by label.
fn partition_digest(p: &Prepared, label: &str) -> String {
    let script = format!("head -c 67108864 /dev/disk/by-partlabel/{label} | sha256sum");
    p.strata(&["node", "exec", "private-1", "--", "sh", "-c", &script])
        .unwrap_or_else(|e| panic!("hash {label} on private-1: {e:#}"))
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_string()
}

/// Upgrades of a booted agent by image swap (issue 16), in the order an
/// operator meets them:
/// - a tampered and a truncated bundle are refused by the master, and
///   slot B's bytes stay as they were;
/// - the VM killed while it writes slot B boots slot A as before and
///   reports the upgrade cut short;
/// - newer images rolled over the whole cluster with `cluster upgrade`
///   (the master, then each agent, a pinned task on each): every node
///   writes slot B, reboots into it, comes back Ready with the slot
///   blessed, is uncordoned and runs its task again, and the API answers
///   throughout but while the one master reboots;
/// - an older bundle is refused by the node without --allow-downgrade,
///   and slot A's bytes stay as they were;
/// - a rollback boots slot A again;
/// - an image that never gets healthy is written, fails its three boots,
///   and the node falls back to slot A by itself and reports the upgrade
///   failed.
fn upgrade_booted_agent(p: &Prepared, vms: &mut Vec<Vm>, image: &str) {
    let v2 = upgrade_images_dir().join("strata-private.update");
    let key = project_root().join("target/strata-dev-signing.pem");
    let others =
        ["master", "public"].map(|r| upgrade_images_dir().join(format!("strata-{r}.update")));
    if !require(
        "upgrade_booted_agent",
        &[v2.as_path(), key.as_path(), &others[0], &others[1]],
        &[],
    ) {
        return;
    }
    let before = show(p, "private-1");
    println!("private-1 before the upgrade: {}", before["image"]);
    let v1_version = before["image"]["version"]
        .as_str()
        .expect("private-1 reports its image version")
        .to_string();
    assert_eq!(before["image"]["booted"], "a", "{before}");
    assert_eq!(before["image"]["other"]["state"], "empty", "{before}");

    let mut args =
        registry::task_run_args("private-1", image, "steady", "exec sleep 100000").to_vec();
    args.splice(2..2, ["--restart", "always"]);
    p.strata(&args)
        .unwrap_or_else(|e| panic!("task run steady: {e:#}"));
    wait_task(p, "steady", "running", Duration::from_secs(300), |t| {
        t["state"] == "running"
    });

    // Bad bundles never get past the masters, and nothing changes on the
    // node's other slot.
    let slot_b = partition_digest(p, "root-b");
    let dir = p.dir.join("bundles");
    std::fs::create_dir_all(&dir).expect("a directory for bad bundles");
    // Small bundles signed with the images' key, so that the master
    // refuses them for what they are, not for their size.
    let bytes = resign(&v2, |_, parts| {
        for (name, part) in parts.iter_mut() {
            part.truncate(if name == image::bundle::PART_ROOT {
                4 << 20
            } else {
                64 << 10
            });
        }
    });
    let mut tampered = bytes.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x5a;
    let truncated = &bytes[..bytes.len() * 2 / 3];
    for (name, content, expected) in [
        ("tampered.update", &tampered[..], "is corrupted"),
        ("truncated.update", truncated, "truncated"),
    ] {
        let file = dir.join(name);
        std::fs::write(&file, content).expect("write a bad bundle");
        let e = p
            .strata(&["bundle", "push", file.to_str().expect("utf-8 path")])
            .expect_err("a bad bundle is refused");
        assert!(
            format!("{e:#}").contains(expected),
            "{name}: expected `{expected}` in: {e:#}"
        );
        println!("{name} refused: {e:#}");
    }
    assert_eq!(partition_digest(p, "root-b"), slot_b, "slot B changed");

    let pushed = p
        .strata(&["bundle", "push", v2.to_str().expect("utf-8 path")])
        .unwrap_or_else(|e| panic!("bundle push v2: {e:#}"));
    println!("{pushed}");

    // The VM killed while it writes slot B: it boots slot A as before and
    // reports the upgrade cut short; slot B is not booted half-written.
    p.strata(&[
        "node",
        "upgrade",
        "private-1",
        "--version",
        qemu_tests::env::UPGRADE_VERSION,
    ])
    .unwrap_or_else(|e| panic!("node upgrade private-1: {e:#}"));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let phase = show(p, "private-1")["upgrade"]["progress"]["phase"].clone();
        if phase == "writing" {
            break;
        }
        assert!(
            Instant::now() < deadline
                && ["ordered", "downloading", "verifying"]
                    .contains(&phase.as_str().unwrap_or_default()),
            "private-1 did not get to write slot B: {phase}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let at = vms
        .iter()
        .position(|v| v.config.name == "private-1")
        .expect("private-1's VM");
    let config = vms[at].config.clone();
    drop(vms.remove(at));
    println!("private-1's VM killed while it wrote slot B");
    vms.insert(at, Vm::spawn(config).expect("private-1's VM starts again"));
    // Until it notices, the master may still show the old boot Ready: the
    // outcome its new boot reports is what counts.
    let deadline = Instant::now() + Duration::from_secs(600);
    let cut = loop {
        let node = show(p, "private-1");
        if node["upgrade"]["progress"]["phase"] == "failed" {
            break node;
        }
        assert!(Instant::now() < deadline, "no outcome reported: {node}");
        std::thread::sleep(Duration::from_secs(1));
    };
    println!("after the kill: {}", cut["upgrade"]["progress"]);
    assert!(
        cut["upgrade"]["progress"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("went down while slot b was written")),
        "{cut}"
    );
    assert_eq!(cut["image"]["booted"], "a", "{cut}");
    assert_eq!(cut["image"]["version"], v1_version.as_str(), "{cut}");

    // The whole cluster, through the CLI as an operator runs it: the
    // master first (the one master: it drives the rollout, orders itself,
    // reboots into the new image and goes on from the progress kept in
    // etcd), then each agent drained (its pinned task stops), upgraded
    // and uncordoned once it is Ready on the new version. A task runs on
    // each agent, and the API is asked every two seconds throughout.
    let mut args =
        registry::task_run_args("public-1", image, "edge-steady", "exec sleep 100000").to_vec();
    args.splice(2..2, ["--restart", "always"]);
    p.strata(&args)
        .unwrap_or_else(|e| panic!("task run edge-steady: {e:#}"));
    wait_task(p, "edge-steady", "running", Duration::from_secs(300), |t| {
        t["state"] == "running"
    });
    for role in ["master", "public"] {
        let bundle = upgrade_images_dir().join(format!("strata-{role}.update"));
        let pushed = p
            .strata(&["bundle", "push", bundle.to_str().expect("utf-8 path")])
            .unwrap_or_else(|e| panic!("bundle push {role} v2: {e:#}"));
        println!("{pushed}");
    }
    let asked = Instant::now();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (p, watching) = (p.clone(), watching.clone());
        std::thread::spawn(move || api_answers(&p, &watching))
    };
    let out = p.strata(&[
        "cluster",
        "upgrade",
        "--version",
        qemu_tests::env::UPGRADE_VERSION,
        "--timeout",
        "40m",
    ]);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let gaps = watcher.join().expect("the API watcher");
    let out = out.unwrap_or_else(|e| panic!("cluster upgrade: {e:#}"));
    println!(
        "the cluster upgraded by the rollout in {:.1}s:\n{out}",
        asked.elapsed().as_secs_f64()
    );
    assert!(out.contains("3 of 3 nodes done"), "{out}");
    // With one master the API cannot answer while that master reboots:
    // one gap, and none while the agents go.
    println!("the API did not answer for: {gaps:?}");
    assert!(
        gaps.len() <= 1,
        "the API stopped answering more than once: {gaps:?}"
    );
    for name in ["master-1", "private-1", "public-1"] {
        wait_state(p, name, "ready", Duration::from_secs(120));
        // The node registers its image again when it changes, a few
        // heartbeats after the blessing.
        let after = wait_image(p, name, |i| {
            i["last_upgrade"]["result"] == "succeeded" && i["other"]["state"] == "good"
        });
        let image_after = &after["image"];
        assert!(
            image_after["version"]
                .as_str()
                .is_some_and(|v| v.starts_with(qemu_tests::env::UPGRADE_VERSION)),
            "{name}: {after}"
        );
        assert_eq!(image_after["booted"], "b", "{name}: {after}");
        assert_eq!(image_after["other"]["slot"], "a", "{name}: {after}");
        assert_eq!(image_after["other"]["state"], "good", "{name}: {after}");
        assert_eq!(
            image_after["last_upgrade"]["result"], "succeeded",
            "{name}: {after}"
        );
        assert_eq!(
            after["upgrade"]["progress"]["phase"], "succeeded",
            "{name}: {after}"
        );
        assert!(
            after["cordon"].is_null(),
            "{name} uncordoned by the rollout: {after}"
        );
    }
    let private_after = show(p, "private-1");
    assert_eq!(
        private_after["image"]["other"]["version"],
        v1_version.as_str(),
        "{private_after}"
    );
    for (task, node) in [("steady", "private-1"), ("edge-steady", "public-1")] {
        wait_task(p, task, "running again", Duration::from_secs(300), |t| {
            t["state"] == "running" && t["node"] == node
        });
    }
    p.strata(&["task", "stop", "edge-steady"])
        .expect("stop edge-steady");
    let list = p.strata(&["node", "list"]).expect("node list");
    println!("{list}");
    assert_eq!(list.matches("b (a good)").count(), 3, "{list}");

    // The older image is refused by the node itself: nothing is written
    // to slot A, which it can still roll back to.
    let slot_a = partition_digest(p, "root-a");
    let older = dir.join("older.update");
    // Cut short like the bad ones: the node refuses it for its version
    // once it has it whole, and sending 180 MiB would only take time.
    std::fs::write(
        &older,
        resign(&v2, |m, parts| {
            m.version = "0.0.1".into();
            for (name, part) in parts.iter_mut() {
                match name.as_str() {
                    image::bundle::PART_ROOT => part.truncate(4 << 20),
                    image::bundle::PART_VERITY => part.truncate(64 << 10),
                    _ => {}
                }
            }
        }),
    )
    .expect("write the older bundle");
    let e = p
        .strata(&[
            "node",
            "upgrade",
            "private-1",
            "--bundle",
            older.to_str().expect("utf-8 path"),
            "--wait",
            "--timeout",
            "10m",
        ])
        .expect_err("a downgrade without --allow-downgrade fails");
    assert!(format!("{e:#}").contains("--allow-downgrade"), "{e:#}");
    assert_eq!(partition_digest(p, "root-a"), slot_a, "slot A changed");
    let bundles = p.strata(&["bundle", "list"]).expect("bundle list");
    println!("{bundles}");
    assert!(
        bundles.contains(qemu_tests::env::UPGRADE_VERSION),
        "{bundles}"
    );

    // And back to the image it ran before.
    let out = p
        .strata(&[
            "node",
            "rollback",
            "private-1",
            "--wait",
            "--timeout",
            "15m",
        ])
        .unwrap_or_else(|e| panic!("node rollback private-1: {e:#}"));
    println!("private-1 rolled back:\n{out}");
    wait_state(p, "private-1", "ready", Duration::from_secs(120));
    let back = wait_image(p, "private-1", |i| {
        i["booted"] == "a" && i["other"]["state"] == "good"
    });
    assert_eq!(back["image"]["booted"], "a", "{back}");
    assert_eq!(back["image"]["version"], v1_version.as_str(), "{back}");
    assert_eq!(back["image"]["other"]["state"], "good", "{back}");
    wait_task(
        p,
        "steady",
        "running after the rollback",
        Duration::from_secs(300),
        |t| t["state"] == "running" && t["node"] == "private-1",
    );
    p.strata(&["task", "stop", "steady"]).expect("stop steady");

    // A newer image that never gets healthy: its UKI's root hash matches
    // no partition. Signed with the images' key, it is written like a good
    // one; slot B fails its three boots, the node falls back to slot A by
    // itself, and its agent reports the upgrade failed.
    let bad = dir.join("never-healthy.update");
    std::fs::write(&bad, never_healthy(&v2)).expect("write the never-healthy bundle");
    let e = p
        .strata(&[
            "node",
            "upgrade",
            "private-1",
            "--bundle",
            bad.to_str().expect("utf-8 path"),
            "--wait",
            "--timeout",
            "20m",
        ])
        .expect_err("an image that never gets healthy fails the upgrade");
    println!("never-healthy upgrade: {e:#}");
    assert!(format!("{e:#}").contains("slot b"), "{e:#}");
    wait_state(p, "private-1", "ready", Duration::from_secs(300));
    let fell_back = wait_image(p, "private-1", |i| i["other"]["state"] == "failed");
    assert_eq!(fell_back["image"]["booted"], "a", "{fell_back}");
    assert_eq!(
        fell_back["image"]["version"],
        v1_version.as_str(),
        "{fell_back}"
    );
    assert_eq!(
        fell_back["image"]["other"]["state"], "failed",
        "{fell_back}"
    );
    assert_eq!(
        fell_back["upgrade"]["progress"]["phase"], "failed",
        "{fell_back}"
    );
}

/// The bundle at `good` with its UKI's root hash reversed (a slot that
/// can never boot, whatever its root holds: the root is cut to 4 MiB to
/// be sent and written sooner), and the initrd's wait for the root 5
/// seconds instead of 60, so that its three tries end sooner.
fn never_healthy(good: &std::path::Path) -> Vec<u8> {
    resign(good, |m, parts| {
        for (name, part) in parts.iter_mut() {
            match name.as_str() {
                image::bundle::PART_ROOT => part.truncate(4 << 20),
                image::bundle::PART_VERITY => part.truncate(64 << 10),
                _ => {}
            }
        }
        let uki = parts
            .get_mut(image::bundle::PART_UKI)
            .expect("the bundle has a UKI");
        let mut replace = |from: &str, to: &str| {
            assert_eq!(from.len(), to.len());
            let at = uki
                .windows(from.len())
                .position(|w| w == from.as_bytes())
                .unwrap_or_else(|| panic!("the UKI carries `{from}`"));
            uki[at..at + from.len()].copy_from_slice(to.as_bytes());
        };
        let wrong: String = m.root_hash.chars().rev().collect();
        replace(
            &format!("roothash={}", m.root_hash),
            &format!("roothash={wrong}"),
        );
        replace("rd.timeout=60", "rd.timeout=5 ");
    })
}

/// The bundle at `good` changed by `edit` (its manifest and its parts by
/// name), its digests made right and signed again with the images'
/// development key.
fn resign(
    good: &std::path::Path,
    edit: impl FnOnce(&mut image::manifest::Manifest, &mut std::collections::BTreeMap<String, Vec<u8>>),
) -> Vec<u8> {
    use image::bundle::{PART_ROOT, PART_UKI, PART_VERITY};
    let pem = std::fs::read_to_string(project_root().join("target/strata-dev-signing.pem"))
        .expect("the images' development key");
    let key =
        <ed25519_dalek::SigningKey as ed25519_dalek::pkcs8::DecodePrivateKey>::from_pkcs8_pem(&pem)
            .expect("the development key parses");
    let mut parts: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let mut m = image::bundle::read(
        std::fs::File::open(good).expect("the v2 bundle"),
        &key.verifying_key(),
        |part, bytes| {
            parts
                .entry(part.to_string())
                .or_default()
                .extend_from_slice(bytes);
            Ok(())
        },
    )
    .expect("the v2 bundle verifies");
    edit(&mut m, &mut parts);
    for d in &mut m.parts {
        let part = &parts[&d.name];
        d.size = part.len() as u64;
        d.sha256 = image::sha256_hex(part);
    }
    let mut out = Vec::new();
    let (root, verity, uki) = (&parts[PART_ROOT], &parts[PART_VERITY], &parts[PART_UKI]);
    image::bundle::write(
        &mut out,
        &m,
        &key,
        &mut [
            (PART_ROOT, &mut &root[..]),
            (PART_VERITY, &mut &verity[..]),
            (PART_UKI, &mut &uki[..]),
        ],
    )
    .expect("the bundle is written");
    out
}
