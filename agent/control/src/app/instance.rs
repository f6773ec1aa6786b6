//! The task an app's instance runs: the app's definition made into a
//! [`TaskSpec`] for one node, with its ports resolved.

use super::{AppSpec, HealthCheck};
use crate::task::spec::Size;
use crate::task::{RestartPolicy, TaskSpec};

/// The spec of instance `id` of `app`, with the host ports the scheduler
/// gave it (`host_ports[i]` for the app's port `i`).
///
/// The task sees Marathon's variables: `PORT0`..., `PORTS`, `PORT_<NAME>`
/// (each the port it listens on: the container port where one is mapped,
/// else the host port it was given), `MARATHON_APP_ID`,
/// `MARATHON_APP_VERSION` and `MARATHON_APP_RESOURCE_CPUS`/`_MEM`, with
/// `STRATA_APP_ID` and `STRATA_INSTANCE_ID`; its health checks get the same
/// ports.
pub fn task_spec(app: &AppSpec, id: &str, version: u64, host_ports: &[Option<u16>]) -> TaskSpec {
    let listen: Vec<Option<u16>> = app
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            p.container_port
                .or_else(|| host_ports.get(i).copied().flatten())
        })
        .collect();
    let mut env = app.env.clone();
    let mut all = Vec::new();
    for (i, (port, spec)) in listen.iter().zip(&app.ports).enumerate() {
        let Some(port) = port else { continue };
        env.insert(format!("PORT{i}"), port.to_string());
        if let Some(name) = &spec.name {
            env.insert(
                format!("PORT_{}", name.to_ascii_uppercase().replace('-', "_")),
                port.to_string(),
            );
        }
        all.push(port.to_string());
    }
    if let Some(first) = listen.first().copied().flatten() {
        env.insert("PORT".into(), first.to_string());
    }
    if !all.is_empty() {
        env.insert("PORTS".into(), all.join(","));
    }
    env.insert("MARATHON_APP_ID".into(), app.id.to_string());
    env.insert("MARATHON_APP_VERSION".into(), version.to_string());
    env.insert("MARATHON_APP_RESOURCE_CPUS".into(), app.cpus.to_string());
    env.insert("MARATHON_APP_RESOURCE_MEM".into(), app.mem.to_string());
    env.insert("STRATA_APP_ID".into(), app.id.to_string());
    env.insert("STRATA_INSTANCE_ID".into(), id.to_string());
    let health_checks = app
        .health_checks
        .iter()
        .map(|h| HealthCheck {
            port: h.port.or_else(|| {
                h.port_index
                    .map(|i| i as usize)
                    .or((h.protocol != super::HealthProtocol::Command).then_some(0))
                    .and_then(|i| listen.get(i).copied().flatten())
            }),
            port_index: None,
            ..h.clone()
        })
        .collect();
    let tcp = |p: &super::PortSpec| p.protocol != super::Protocol::Udp;
    TaskSpec {
        id: id.to_string(),
        image: app.image.clone(),
        command: app
            .cmd
            .as_ref()
            .map(|c| vec!["/bin/sh".to_string(), "-c".to_string(), c.clone()])
            .unwrap_or_default(),
        env,
        cwd: None,
        user: app.user.clone(),
        cpus: Some(app.cpus),
        mem: Some(Size((app.mem * 1024.0 * 1024.0).ceil() as u64)),
        pids: None,
        read_only: false,
        restart: RestartPolicy::Never,
        stop_grace_secs: app.kill_grace_seconds,
        netns: None,
        app: Some(app.id.dns_label()),
        ports: listen
            .iter()
            .zip(&app.ports)
            .filter(|(_, p)| tcp(p))
            .filter_map(|(l, _)| *l)
            .collect(),
        cap_add: Vec::new(),
        user_ns: false,
        args: app.args.clone(),
        force_pull: app.force_pull_image,
        health_checks,
        port_names: listen
            .iter()
            .zip(&app.ports)
            .filter(|(_, p)| tcp(p))
            .filter_map(|(l, p)| Some((p.name.clone()?, (*l)?)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    #[test]
    fn an_instance_sees_its_ports_and_checks_them() {
        let text = r#"{"id": "/shop/web", "instances": 2, "cpus": 0.5, "mem": 64,
            "cmd": "exec httpd -f -p $PORT0",
            "container": {"docker": {"image": "busybox:1.36", "network": "BRIDGE",
              "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"},
                               {"containerPort": 53, "protocol": "udp", "name": "dns"}]}},
            "portDefinitions": [],
            "env": {"MODE": "prod"},
            "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0},
                             {"protocol": "COMMAND", "command": {"value": "true"}}]}"#;
        let app = &crate::app::read("web.json", text).expect("reads").apps[0];
        let spec = super::task_spec(app, "web-shop.3.7", 3, &[Some(10004), None]);
        assert_eq!(spec.validate_assignment(), Ok(()));
        expect![[r#"
            {
              "id": "web-shop.3.7",
              "image": "busybox:1.36",
              "command": [
                "/bin/sh",
                "-c",
                "exec httpd -f -p $PORT0"
              ],
              "env": {
                "MARATHON_APP_ID": "/shop/web",
                "MARATHON_APP_RESOURCE_CPUS": "0.5",
                "MARATHON_APP_RESOURCE_MEM": "64",
                "MARATHON_APP_VERSION": "3",
                "MODE": "prod",
                "PORT": "8080",
                "PORT0": "8080",
                "PORT1": "53",
                "PORTS": "8080,53",
                "PORT_DNS": "53",
                "PORT_HTTP": "8080",
                "STRATA_APP_ID": "/shop/web",
                "STRATA_INSTANCE_ID": "web-shop.3.7"
              },
              "cwd": null,
              "user": null,
              "cpus": 0.5,
              "mem": 67108864,
              "pids": null,
              "read_only": false,
              "restart": "never",
              "stop_grace_secs": 10,
              "netns": null,
              "app": "web-shop",
              "ports": [
                8080
              ],
              "health_checks": [
                {
                  "protocol": "http",
                  "path": "/",
                  "port": 8080,
                  "grace_period_seconds": 300,
                  "interval_seconds": 60,
                  "timeout_seconds": 20,
                  "max_consecutive_failures": 3
                },
                {
                  "protocol": "command",
                  "command": "true",
                  "grace_period_seconds": 300,
                  "interval_seconds": 60,
                  "timeout_seconds": 20,
                  "max_consecutive_failures": 3
                }
              ],
              "port_names": {
                "http": 8080
              }
            }"#]]
        .assert_eq(&serde_json::to_string_pretty(&spec).expect("json"));
    }

    #[test]
    fn host_networked_instances_listen_on_their_host_ports() {
        let text = r#"{"id": "/api", "container": {"docker": {"image": "busybox:1.36"}},
            "portDefinitions": [{"port": 0, "name": "api"}]}"#;
        let app = &crate::app::read("api.json", text).expect("reads").apps[0];
        let spec = super::task_spec(app, "api.1.0", 1, &[Some(10000)]);
        assert_eq!(spec.env["PORT0"], "10000");
        assert_eq!(spec.env["PORT_API"], "10000");
        assert_eq!(spec.ports, [10000]);
    }
}
