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

#[test]
fn marathon_lb_labels_expose_ports() {
    // Host names route HTTP; the service port (or HAPROXY_n_PORT) is the
    // public TCP port; zdd.py's bookkeeping labels stay labels.
    check(
        "lb.json",
        r#"{"id": "lb", "container": {"docker": {"image": "nginx:1"},
              "portMappings": [{"containerPort": 80, "servicePort": 10001},
                               {"containerPort": 81, "servicePort": 10002},
                               {"containerPort": 82}]},
            "networks": [{"mode": "container/bridge"}],
            "labels": {"HAPROXY_GROUP": "external", "HAPROXY_DEPLOYMENT_GROUP": "lb", "HAPROXY_APP_ID": "lb",
                       "HAPROXY_0_VHOST": "Shop.Example.com, www.example.com", "HAPROXY_0_PATH": "/api/",
                       "HAPROXY_0_REDIRECT_TO_HTTPS": "true", "HAPROXY_0_MODE": "http",
                       "HAPROXY_1_PORT": "10100", "HAPROXY_2_ENABLED": "false"}}"#,
        expect![[r#"
            /lb image="nginx:1" labels={"HAPROXY_0_MODE":"http","HAPROXY_0_PATH":"/api/","HAPROXY_0_REDIRECT_TO_HTTPS":"true","HAPROXY_0_VHOST":"Shop.Example.com, www.example.com","HAPROXY_1_PORT":"10100","HAPROXY_2_ENABLED":"false","HAPROXY_APP_ID":"lb","HAPROXY_DEPLOYMENT_GROUP":"lb","HAPROXY_GROUP":"external"} ports=[{"container_port":80,"expose":[{"host":"shop.example.com","kind":"http","path":"/api","redirect_https":true},{"host":"www.example.com","kind":"http","path":"/api","redirect_https":true},{"kind":"tcp","port":10001}],"protocol":"tcp","service_port":10001},{"container_port":81,"expose":[{"kind":"tcp","port":10100}],"protocol":"tcp","service_port":10002},{"container_port":82,"protocol":"tcp"}]
        "#]],
    );
}

#[test]
fn marathon_lb_labels_that_cannot_mean_anything_here_are_refused_by_name() {
    check(
        "lb.json",
        r#"{"id": "lb", "container": {"docker": {"image": "nginx:1"},
              "portMappings": [{"containerPort": 80}, {"containerPort": 81, "protocol": "udp", "servicePort": 53}]},
            "networks": [{"mode": "container/bridge"}],
            "labels": {"HAPROXY_GROUP": "external", "HAPROXY_0_SSL_CERT": "/etc/ssl/cert.pem",
                       "HAPROXY_0_BACKEND_HEAD": "x", "HAPROXY_3_VHOST": "c.test", "HAPROXY_0_ENABLED": "yes",
                       "HAPROXY_0_PORT": "0"}}"#,
        expect![[r#"
            lb.json: 6 problems
              lb.json: $.labels.HAPROXY_0_BACKEND_HEAD: label HAPROXY_0_BACKEND_HEAD: Strata renders the edge's HAProxy configuration itself and reads only HAPROXY_GROUP and HAPROXY_n_{GROUP,VHOST,PATH,PORT,ENABLED,MODE,REDIRECT_TO_HTTPS}; a certificate is given with `strata edge cert set HOST FILE`
              lb.json: $.labels.HAPROXY_0_SSL_CERT: label HAPROXY_0_SSL_CERT: Strata renders the edge's HAProxy configuration itself and reads only HAPROXY_GROUP and HAPROXY_n_{GROUP,VHOST,PATH,PORT,ENABLED,MODE,REDIRECT_TO_HTTPS}; a certificate is given with `strata edge cert set HOST FILE`
              lb.json: $.labels.HAPROXY_3_VHOST: label HAPROXY_3_VHOST is for ports[3], and the app has 2 port(s)
              lb.json: $.labels.HAPROXY_0_ENABLED: label HAPROXY_0_ENABLED is "yes": expected "true" or "false"
              lb.json: $.labels.HAPROXY_0_PORT: label HAPROXY_0_PORT is "0": expected a port from 1 to 65535
              lb.json: $.container.portMappings[1]: ports[1] is udp, and the edge proxies tcp: expose a tcp port, or use a VIP for udp
        "#]],
    );
    check(
        "internal.json",
        r#"{"id": "internal", "container": {"docker": {"image": "nginx:1"},
              "portMappings": [{"containerPort": 80, "servicePort": 10001}, {"containerPort": 81}]},
            "networks": [{"mode": "container/bridge"}],
            "labels": {"HAPROXY_0_GROUP": "internal", "HAPROXY_1_VHOST": "a.test", "HAPROXY_1_PATH": "/x"}}"#,
        expect![[r#"
            internal.json: 3 problems
              internal.json: $.labels.HAPROXY_0_GROUP: label HAPROXY_0_GROUP is "internal": Strata has no internal edge; give ports[0] a VIP (`VIP_0` on the port's labels) to reach it inside the cluster
              internal.json: $.labels.HAPROXY_1_VHOST: label HAPROXY_1_VHOST needs HAPROXY_GROUP=external (or HAPROXY_1_GROUP) for ports[1] to be exposed
              internal.json: $.labels.HAPROXY_1_PATH: label HAPROXY_1_PATH needs HAPROXY_GROUP=external (or HAPROXY_1_GROUP) for ports[1] to be exposed
        "#]],
    );
    check(
        "noport.json",
        r#"{"id": "noport", "container": {"docker": {"image": "nginx:1"}, "portMappings": [{"containerPort": 80}]},
            "networks": [{"mode": "container/bridge"}], "labels": {"HAPROXY_GROUP": "external"}}"#,
        expect![[r#"
            noport.json: 1 problem
              noport.json: $.labels.HAPROXY_GROUP: ports[0] is exposed (HAPROXY_GROUP=external) but has no service port to serve it on: set its servicePort, or the label HAPROXY_0_PORT, or HAPROXY_0_VHOST
        "#]],
    );
}

#[test]
fn dcos_vip_labels_read() {
    // As in the Universe's redis package: `VIP_0` on a port mapping.
    check(
        "redis.json",
        r#"{"id": "/db/redis", "container": {"docker": {"image": "redis:7"},
              "portMappings": [{"containerPort": 6379, "labels": {"VIP_0": "/redis:6379", "VIP_1": "198.18.4.2:6379", "VIPX": "kept"}}]},
            "networks": [{"mode": "container/bridge"}]}"#,
        expect![[r#"
            /db/redis image="redis:7" ports=[{"container_port":6379,"labels":{"VIPX":"kept","VIP_0":"/redis:6379","VIP_1":"198.18.4.2:6379"},"protocol":"tcp","vips":["redis:6379","198.18.4.2:6379"]}]
        "#]],
    );
    check(
        "bad.json",
        r#"{"id": "bad", "container": {"docker": {"image": "redis:7"},
              "portMappings": [{"containerPort": 6379, "labels": {"VIP_0": "redis", "VIP_1": ":80", "VIP_2": "x:0", "VIP_3": "/Redis:1"}}]},
            "networks": [{"mode": "container/bridge"}]}"#,
        expect![[r#"
            bad.json: 4 problems
              bad.json: $.container.portMappings[0].labels.VIP_0: label VIP_0: VIP "redis" has no port: write name:port (shop-web:80) or address:port
              bad.json: $.container.portMappings[0].labels.VIP_1: label VIP_1: VIP ":80" has no name: write name:port (shop-web:80) or address:port
              bad.json: $.container.portMappings[0].labels.VIP_2: label VIP_2: VIP "x:0": port "0" is not a port number from 1 to 65535
              bad.json: $.container.portMappings[0].labels.VIP_3: label VIP_3: VIP "/Redis:1": name "Redis" is not a DNS label: use 1-63 lowercase letters, digits or '-', not starting or ending with '-'
        "#]],
    );
}

#[test]
fn native_exposures_and_vips_read() {
    check(
        "web.toml",
        r#"
id = "/shop/web"
image = "nginx:1"

[[ports]]
container_port = 80
vips = ["shop-web:80", "198.18.0.10:80"]

[[ports.expose]]
host = "shop.example.com"
path = "/api/"
redirect_https = true

[[ports.expose]]
tcp = 10100
"#,
        expect![[r#"
            /shop/web image="nginx:1" ports=[{"container_port":80,"expose":[{"host":"shop.example.com","kind":"http","path":"/api","redirect_https":true},{"kind":"tcp","port":10100}],"protocol":"tcp","vips":["shop-web:80","198.18.0.10:80"]}]
        "#]],
    );
}

#[test]
fn bad_exposures_are_refused_with_their_place() {
    check(
        "web.toml",
        r#"
id = "/shop/web"
image = "nginx:1"

[[ports]]
container_port = 53
protocol = "udp"
expose = [{ tcp = 53 }]

[[ports]]
container_port = 80
vips = ["web", "a:1", "a:1"]
expose = [{ host = "*.example.com" }, { host = "a.test", path = "/x?y" }, { host = "a.test", tcp = 1 },
          { tcp = 10100, path = "/" }, {}, { host = "b.test", path = "x" }]

[[ports]]
container_port = 81
vips = ["a:1"]
expose = [{ host = "b.test" }, { host = "b.test", path = "/" }]
"#,
        expect![[r#"
            web.toml: 11 problems
              web.toml:13:75: field `ports[1].expose[2]`: an exposure is HTTP (host, path) or TCP (tcp), not both: write two
              web.toml:14:11: field `ports[1].expose[3]`: a tcp exposure has no path or redirect_https: those route HTTP by host
              web.toml:14:40: field `ports[1].expose[4]`: an exposure needs host (HTTP by host name) or tcp (a public TCP port)
              web.toml:12:9: field `ports[1].vips[0]`: VIP "web" has no port: write name:port (shop-web:80) or address:port
              web.toml:8:11: field `ports[0].expose[0]`: ports[0] is udp, and the edge proxies tcp: expose a tcp port, or use a VIP for udp
              web.toml:13:11: field `ports[1].expose[0]`: host "*.example.com": the edge routes whole host names, not wildcards
              web.toml:13:39: field `ports[1].expose[1]`: path "/x?y" holds '?': a route is a plain path prefix
              web.toml:14:44: field `ports[1].expose[5]`: path "x" must start with '/'
              web.toml:12:23: field `ports[1].vips[2]`: VIP a:1 is asked for twice
              web.toml:19:32: field `ports[2].expose[1]`: http://b.test/ is also ports[2].expose[0]
              web.toml:18:9: field `ports[2].vips[0]`: VIP a:1 is also ports[1]'s
        "#]],
    );
}

#[test]
fn exposures_from_a_newer_writer_read_and_are_refused_by_check() {
    let json = r#"{"id": "/a", "image": "busybox:1", "instances": 1, "cpus": 0.5, "mem": 32,
        "ports": [{"container_port": 80, "expose": [{"kind": "quic", "port": 443}, {"kind": "tcp", "port": 10100}],
                   "vips": ["a:80", "[::1]:80"]}]}"#;
    let app: AppSpec = serde_json::from_str(json).expect("unknown kinds read");
    assert_eq!(app.ports[0].expose[0], Exposure::Unknown);
    assert_eq!(app.ports[0].vips[1], VipSpec::Unknown("[::1]:80".into()));
    let problems: Vec<String> = app
        .check(&|f| Place {
            path: f.to_string(),
            line: 0,
            column: 0,
        })
        .iter()
        .map(|p| format!("{}: {}", p.place.path, p.message))
        .collect();
    expect![[r#"
        [
            "ports[0].expose[0]: an exposure of a kind this version does not know: expected http (host, path) or tcp (port)",
            "ports[0].vips[1]: VIP \"[::1]:80\" is not name:port (shop-web:80) or address:port (198.18.0.10:80)",
        ]
    "#]].assert_debug_eq(&problems);
    let again: AppSpec =
        serde_json::from_str(&serde_json::to_string(&app).expect("json")).expect("reads");
    assert_eq!(again.ports[0].vips, app.ports[0].vips);
}

/// Claims of the edge: one app per host and path and per public TCP port;
/// a redeploy keeps its own, frees what it dropped; a claim of an app that
/// is gone is free.
#[test]
fn edge_claims_name_the_app_that_holds_them() {
    use super::expose::{Claim, check_claims, claims_of};
    let app = |text: &str| -> AppSpec {
        let file = read("a.toml", text).expect("a valid app");
        file.apps.into_iter().next().expect("one app")
    };
    let web = app(
        "id = \"/shop/web\"\nimage = \"nginx:1\"\n[[ports]]\ncontainer_port = 80\nexpose = [{ host = \"shop.example.com\", path = \"/\" }, { tcp = 10100 }]\n",
    );
    let held: BTreeMap<String, (Claim, i64)> = claims_of(&web)
        .into_iter()
        .enumerate()
        .map(|(i, (k, c))| (k, (c, 10 + i as i64)))
        .collect();
    let all = |_: &AppId| true;
    let show = |r: Result<super::expose::ClaimWrites, Vec<String>>| match r {
        Ok(w) => format!(
            "take {:?}\nkeep {:?}\nfree {:?}\nstale {:?}\n",
            w.take.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            w.keep,
            w.free,
            w.stale.iter().map(|(k, _, r)| (k, r)).collect::<Vec<_>>()
        ),
        Err(p) => p.join("\n") + "\n",
    };
    // Another app on the same host and path (written with a trailing
    // slash) and the same TCP port: both named.
    let api = app(
        "id = \"/shop/api\"\nimage = \"nginx:1\"\n[[ports]]\ncontainer_port = 80\n[[ports]]\ncontainer_port = 81\nexpose = [{ host = \"Shop.Example.com\", path = \"//\" }, { tcp = 10100 }, { host = \"shop.example.com\", path = \"/api\" }]\n",
    );
    expect![[r#"
        /shop/api: ports[1] asks for http://shop.example.com/, which /shop/web (ports[0]) already serves: choose another, or remove it from /shop/web first
        /shop/api: ports[1] asks for public TCP port 10100, which /shop/web (ports[0]) already has: choose another, or remove it from /shop/web first
    "#]].assert_eq(&show(check_claims(&[&api], &held, &all)));
    // The same app again, without its TCP port: keeps the host, frees the
    // port, takes nothing.
    let mut again = web.clone();
    again.ports[0].expose.pop();
    expect![[r#"
        take []
        keep [("http/shop.example.com/2f", 10)]
        free [("tcp/10100", 11)]
        stale []
    "#]]
    .assert_eq(&show(check_claims(&[&again], &held, &all)));
    // The holder is gone: its claims are free to take.
    let gone = |id: &AppId| id.as_str() != "/shop/web";
    let mut other = web.clone();
    other.id = AppId::resolve(&AppId::root(), "/blog").expect("id");
    expect![[r#"
        take []
        keep []
        free []
        stale [("http/shop.example.com/2f", 10), ("tcp/10100", 11)]
    "#]]
    .assert_eq(&show(check_claims(&[&other], &held, &gone)));
    // Two apps of one request asking for the same port.
    expect![[r#"
        /shop/api: ports[1] asks for http://shop.example.com/, which /blog (ports[0]) of the same request asks for too: one app serves it
        /shop/api: ports[1] asks for public TCP port 10100, which /blog (ports[0]) of the same request asks for too: one app serves it
    "#]].assert_eq(&show(check_claims(
        &[&other, &api],
        &BTreeMap::new(),
        &all
    )));
}
