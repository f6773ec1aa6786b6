use expect_test::{Expect, expect};

use super::*;

/// Reads `text` as the file `name` and shows the apps read (their fields
/// that differ from the defaults) or every problem.
fn check(name: &str, text: &str, expected: Expect) {
    let got = match read(name, text) {
        Ok(file) => {
            let mut out = String::new();
            for app in &file.apps {
                let defaults = AppSpec::new(app.id.clone(), &app.image);
                let mine = serde_json::to_value(app).expect("json");
                let base = serde_json::to_value(&defaults).expect("json");
                let mut fields = Vec::new();
                for (k, v) in mine.as_object().expect("object") {
                    if base.get(k) != Some(v) || k == "image" {
                        fields.push(format!("{k}={v}"));
                    }
                }
                out += &format!("{} {}\n", app.id, fields.join(" "));
            }
            out
        }
        Err(e) => format!("{e}\n"),
    };
    expected.assert_eq(&got);
}

#[test]
fn a_native_app_reads() {
    check(
        "web.toml",
        r#"
id = "/shop/web"
image = "registry.local/nginx:1.25"
instances = 3
cpus = 0.25
mem = 64
constraints = [["hostname", "UNIQUE"], ["rack", "GROUP_BY", "2"]]
accepted_roles = ["public"]
kill_selection = "oldest-first"
placement = "spread"
unreachable_strategy = { inactive_after_seconds = 30, expunge_after_seconds = 600 }

[env]
MODE = "prod"

[[ports]]
name = "http"
container_port = 80
host_port = 0

[[health_checks]]
protocol = "http"
path = "/healthz"
port_index = 0
max_consecutive_failures = 2

[upgrade_strategy]
minimum_health_capacity = 0.5
maximum_over_capacity = 0.2
"#,
        expect![[r#"
            /shop/web accepted_roles=["public"] constraints=[{"field":"hostname","operator":"UNIQUE"},{"field":"rack","operator":"GROUP_BY","value":"2"}] cpus=0.25 env={"MODE":"prod"} health_checks=[{"grace_period_seconds":300,"interval_seconds":60,"max_consecutive_failures":2,"path":"/healthz","port_index":0,"protocol":"http","timeout_seconds":20}] image="registry.local/nginx:1.25" instances=3 kill_selection="oldest-first" mem=64.0 placement="spread" ports=[{"container_port":80,"host_port":0,"name":"http","protocol":"tcp"}] unreachable_strategy={"enabled":{"expunge_after_seconds":600,"inactive_after_seconds":30}} upgrade_strategy={"maximum_over_capacity":0.2,"minimum_health_capacity":0.5}
        "#]],
    );
}

#[test]
fn every_mistake_of_a_toml_file_is_named_at_its_line() {
    check(
        "web.toml",
        r#"id = "/shop/Web"
image = "nginx:1"
cpus = "two"
mem = 99999999999
instnaces = 3
colour = "blue"

[[health_checks]]
protocol = "grpc"
"#,
        expect![[r#"
            web.toml: 6 problems
              web.toml:1:6: field `id`: id "/shop/Web": part "Web" is not a DNS label: use 1-63 lowercase letters, digits or '-', not starting or ending with '-'
              web.toml:3:8: field `cpus`: expected a number, found the string "two"
              web.toml:9:12: field `health_checks[0].protocol`: unknown protocol "grpc": expected "http", "https", "tcp" or "command"
              web.toml:6:1: field `colour`: unknown field `colour`; expected one of: id, image, force_pull_image, cmd, args, user, instances, cpus, mem, disk, env, labels, ports, require_ports, health_checks, constraints, accepted_roles, placement, upgrade_strategy, backoff, kill_selection, unreachable_strategy, kill_grace_seconds, dependencies
              web.toml:5:1: field `instnaces`: unknown field `instnaces`; did you mean `instances`?
              web.toml:4:7: field `mem`: mem 99999999999 MiB is out of range: expected 4 to 16777216 MiB (16 TiB, more than any node has)
        "#]],
    );
}

#[test]
fn checks_run_once_the_fields_read() {
    check(
        "big.toml",
        r#"id = "big"
image = "nginx:1"
cpus = 2000
mem = 99999999999
disk = -1
cmd = "nginx"
args = ["-g", "daemon off;"]
instances = 20000
"#,
        expect![[r#"
            big.toml: 5 problems
              big.toml:7:8: field `args`: an app has `cmd` or `args`, not both: `cmd` runs in a shell, `args` replaces the image's command
              big.toml:8:13: field `instances`: 20000 instances is more than the 10000 an app may have
              big.toml:3:8: field `cpus`: cpus 2000 is out of range: expected more than 0 and at most 1024 (no node has more)
              big.toml:4:7: field `mem`: mem 99999999999 MiB is out of range: expected 4 to 16777216 MiB (16 TiB, more than any node has)
              big.toml:5:8: field `disk`: disk -1 MiB is out of range: expected 0 to 1073741824 MiB (1 PiB)
        "#]],
    );
}

#[test]
fn malformed_files_say_where() {
    check(
        "a.toml",
        "id = \"x\"\nimage = \n",
        expect![[r#"
            a.toml: 1 problem
              a.toml:2:9: malformed TOML: string values must be quoted, expected literal string
        "#]],
    );
    check(
        "a.json",
        "{\"id\": \"x\",\n \"cpus\": 1,,}",
        expect![[r#"
            a.json: 1 problem
              a.json:2:12: malformed JSON: key must be a string
        "#]],
    );
}

#[test]
fn impossible_constraints_are_refused() {
    check(
        "c.json",
        r#"{"id": "c", "container": {"docker": {"image": "busybox:1"}},
            "constraints": [
                ["rack", "CLUSTER", "r1"],
                ["rack", "IS", "r2"],
                ["rack", "LIKE", "r[3-9]"],
                ["hostname", "MAX_PER", "0"],
                ["hostname", "UNIQUE", "x"],
                ["zone", "LIKE", "("],
                ["zone", "NEAR", "a"],
                ["zone", "GROUP_BY", "none"],
                ["zone"]
            ]}"#,
        expect![[r#"
            c.json: 8 problems
              c.json: $.constraints[6]: unknown operator "NEAR": expected UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS
              c.json: $.constraints[8]: a constraint is [field, operator] or [field, operator, value], found 1 part(s)
              c.json: $.constraints[1]: rack must be "r2" here and "r1" by constraints[0]: no node is both
              c.json: $.constraints[3]: MAX_PER 0 allows no instance anywhere: expected at least 1
              c.json: $.constraints[4]: UNIQUE takes no value, found "x"
              c.json: $.constraints[5]: "(" is not a regular expression: unclosed group
              c.json: $.constraints[7]: GROUP_BY takes a count of values (at least 1), found "none"
              c.json: $.constraints[2]: rack LIKE "r[3-9]" refuses "r1", the only value constraints[0] allows
        "#]],
    );
}

#[test]
fn port_clashes_and_checks_without_ports_are_refused() {
    check(
        "p.json",
        r#"{"id": "p", "container": {"type": "DOCKER", "docker": {"image": "busybox:1", "network": "BRIDGE",
              "portMappings": [
                {"containerPort": 80, "hostPort": 8080, "name": "http"},
                {"containerPort": 80, "hostPort": 8080, "name": "http"},
                {"containerPort": 53, "hostPort": 8080, "protocol": "udp"},
                {"containerPort": 81, "protocol": "sctp", "name": "Bad_Name"}
              ]}},
            "healthChecks": [
                {"protocol": "MESOS_HTTP", "portIndex": 4},
                {"protocol": "COMMAND"},
                {"protocol": "TCP", "intervalSeconds": 0}
            ]}"#,
        expect![[r#"
            p.json: 8 problems
              p.json: $.container.docker.portMappings[3].protocol: unknown protocol "sctp": expected "tcp", "udp" or "udp,tcp"
              p.json: $.container.docker.portMappings[1].name: port name "http" is used twice
              p.json: $.container.docker.portMappings[1].hostPort: host port 8080 is also ports[0]'s: a node has one of each
              p.json: $.container.docker.portMappings[1].containerPort: container port 80 is also ports[0]'s
              p.json: $.container.docker.portMappings[3].name: port name "Bad_Name" is not a DNS label: use 1-63 lowercase letters, digits or '-', not starting or ending with '-'
              p.json: $.healthChecks[0].portIndex: port index 4 is past the app's 4 port(s)
              p.json: $.healthChecks[1]: a COMMAND check needs a command to run
              p.json: $.healthChecks[2].intervalSeconds: interval and timeout must be at least 1 second
        "#]],
    );
}

#[test]
fn fields_strata_lacks_are_accepted_only_empty() {
    check(
        "l.json",
        r#"{"id": "/l", "container": {"type": "DOCKER", "volumes": [],
              "docker": {"image": "busybox:1", "privileged": false, "parameters": []}},
            "fetch": [], "gpus": 0, "secrets": {}, "executor": "", "tty": false,
            "version": "2017-01-01T00:00:00Z", "tasksRunning": 3, "deployments": [{"id": "x"}],
            "env": {"A": "1"}}"#,
        expect![[r#"
            /l env={"A":"1"} image="busybox:1"
        "#]],
    );
    check(
        "l.json",
        r#"{"id": "/l", "container": {"docker": {"image": "busybox:1"}, "volumes": [{"hostPath": "/"}]},
            "gpus": 1, "env": {"P": {"secret": "pw"}}}"#,
        expect![[r#"
            l.json: 3 problems
              l.json: $.container.volumes: `volumes` is not supported: Strata has no volumes yet; remove it or leave it empty
              l.json: $.env.P: a secret reference: Strata has no secret store yet; give the value, or remove the variable
              l.json: $.gpus: `gpus` is not supported: Strata does not schedule GPUs; remove it or leave it empty
        "#]],
    );
}

#[test]
fn a_group_deploys_in_dependency_order_and_a_cycle_is_refused() {
    check(
        "g.json",
        r#"{"id": "/shop", "dependencies": ["/infra"],
            "apps": [
              {"id": "web", "container": {"docker": {"image": "nginx:1"}}, "dependencies": ["api"]},
              {"id": "api", "container": {"docker": {"image": "api:1"}}, "dependencies": ["db"]}
            ],
            "groups": [{"id": "db", "apps": [{"id": "pg", "container": {"docker": {"image": "pg:16"}}}]}]}"#,
        expect![[r#"
            /shop/db/pg dependencies=["/infra"] image="pg:16"
            /shop/api dependencies=["/shop/db","/infra"] image="api:1"
            /shop/web dependencies=["/shop/api","/infra"] image="nginx:1"
        "#]],
    );
    check(
        "cycle.toml",
        r#"
[[apps]]
id = "/a"
image = "busybox:1"
dependencies = ["/b"]

[[apps]]
id = "/b"
image = "busybox:1"
dependencies = ["/a"]
"#,
        expect![[r#"
            cycle.toml: 1 problem
              cycle.toml:5:16: field `apps[0].dependencies`: dependency cycle: /a -> /b -> /a; no app of it could ever start
        "#]],
    );
}

#[test]
fn an_app_defined_twice_is_refused() {
    check(
        "twice.json",
        r#"[{"id": "/a", "container": {"docker": {"image": "busybox:1"}}},
            {"id": "a", "container": {"docker": {"image": "busybox:2"}}}]"#,
        expect![[r#"
            twice.json: 1 problem
              twice.json: $[1].id: app /a is defined twice (first at $[0].id)
        "#]],
    );
}

#[test]
fn an_upgrade_strategy_that_cannot_roll_is_refused() {
    check(
        "u.json",
        r#"{"id": "u", "container": {"docker": {"image": "busybox:1"}},
            "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0},
            "backoffFactor": 0.5, "acceptedResourceRoles": ["*", "slave_public", "gpu"]}"#,
        expect![[r#"
            u.json: 3 problems
              u.json: $.acceptedResourceRoles[2]: unknown role "gpu": expected "*" (private agents) or "slave_public" (public agents)
              u.json: $.upgradeStrategy: a roll that keeps every instance (minimum health capacity 1) and starts none beyond them (maximum over capacity 0) can never replace one: raise maximum over capacity or lower minimum health capacity
              u.json: $.backoffFactor: 0.5 is below 1: the delay would shrink
        "#]],
    );
}

#[test]
fn marathon_host_ports_and_mapped_ports_read() {
    check(
        "h.json",
        r#"{"id": "h", "container": {"docker": {"image": "busybox:1"}}, "requirePorts": true,
            "labels": {"strata.placement": "spread"},
            "portDefinitions": [{"port": 8080, "name": "http"}, {"port": 9090, "protocol": "udp,tcp"}]}"#,
        expect![[r#"
            /h image="busybox:1" labels={"strata.placement":"spread"} placement="spread" ports=[{"host_port":8080,"name":"http","protocol":"tcp","service_port":8080},{"host_port":9090,"protocol":"tcp-udp","service_port":9090}] require_ports=true
        "#]],
    );
    check(
        "m.json",
        r#"{"id": "m", "container": {"type": "MESOS", "docker": {"image": "nginx:1"},
              "portMappings": [{"containerPort": 80, "hostPort": 0, "servicePort": 10001}, {"containerPort": 443}]},
            "networks": [{"mode": "container/bridge"}]}"#,
        expect![[r#"
            /m image="nginx:1" ports=[{"container_port":80,"host_port":0,"protocol":"tcp","service_port":10001},{"container_port":443,"protocol":"tcp"}]
        "#]],
    );
}

#[test]
fn a_stored_app_from_a_newer_writer_reads() {
    let json = r#"{"id": "/a", "image": "busybox:1", "instances": 2, "cpus": 0.5, "mem": 32,
        "ports": [{"container_port": 80, "protocol": "sctp", "future": 1}],
        "health_checks": [{"protocol": "grpc", "future": true}],
        "constraints": [{"field": "rack", "operator": "NEAR", "value": "x"}],
        "accepted_roles": ["edge"], "kill_selection": "random-first", "future": {"x": 1}}"#;
    let app: AppSpec = serde_json::from_str(json).expect("unknown fields and variants read");
    assert_eq!(app.ports[0].protocol, Protocol::Unknown);
    assert_eq!(app.health_checks[0].protocol, HealthProtocol::Unknown);
    assert_eq!(app.constraints[0].operator, Operator::Unknown);
    assert_eq!(app.accepted_roles, [AgentRole::Unknown]);
    assert_eq!(app.kill_selection, KillSelection::Unknown);
}

#[test]
fn ids_resolve_against_their_group() {
    let shop = AppId::resolve(&AppId::root(), "/shop").expect("id");
    let check = |text: &str, expected: Expect| {
        let got = match AppId::resolve(&shop, text) {
            Ok(id) => format!("{id} dns={}", id.dns_label()),
            Err(e) => e,
        };
        expected.assert_eq(&got);
    };
    check("web", expect!["/shop/web dns=web-shop"]);
    check("/a/b/c", expect!["/a/b/c dns=c-b-a"]);
    check("../db", expect!["/db dns=db"]);
    check(
        "../../x",
        expect![[r#"id "../../x" climbs above the root group"#]],
    );
    check("/", expect![[r#"id "/" names the root group, not an app"#]]);
    check(
        "web.v2",
        expect![[
            r#"id "web.v2": part "web.v2" is not a DNS label: use 1-63 lowercase letters, digits or '-', not starting or ending with '-'"#
        ]],
    );
}
