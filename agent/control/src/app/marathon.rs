//! Marathon's app JSON, read as written for Marathon: the fields an app
//! definition has, in Marathon's names and shapes. What Marathon's API
//! returns about an app's state (`version`, `tasksRunning`, ...) is
//! ignored, so an exported app deploys as is. A field Strata lacks is
//! accepted while it holds its empty or default value and is otherwise a
//! problem that names it: nothing is dropped in silence.

use std::collections::BTreeMap;

use super::doc::{Fields, Node, Problems, Value};
use super::group::{Places, dependencies};
use super::native::{constraints, num, parent, string_map};
use super::{
    AgentRole, AppId, AppSpec, HealthCheck, HealthProtocol, KillSelection, PortSpec, Protocol,
    UnreachableStrategy,
};
use crate::schedule::Strategy;

/// The label that asks for instances spread over nodes rather than
/// packed.
pub const PLACEMENT_LABEL: &str = "strata.placement";

/// The fields of an app that Strata reads.
const APP_KEYS: &[&str] = &[
    "id",
    "cmd",
    "args",
    "user",
    "container",
    "instances",
    "cpus",
    "mem",
    "disk",
    "env",
    "labels",
    "portDefinitions",
    "ports",
    "requirePorts",
    "networks",
    "healthChecks",
    "constraints",
    "acceptedResourceRoles",
    "upgradeStrategy",
    "backoffSeconds",
    "backoffFactor",
    "maxLaunchDelaySeconds",
    "killSelection",
    "unreachableStrategy",
    "taskKillGracePeriodSeconds",
    "dependencies",
];

/// What Marathon's API returns about an app's state: never part of its
/// definition, ignored.
const READ_ONLY: &[&str] = &[
    "version",
    "versionInfo",
    "tasksRunning",
    "tasksStaged",
    "tasksHealthy",
    "tasksUnhealthy",
    "deployments",
    "tasks",
    "lastTaskFailure",
    "taskStats",
    "readinessCheckResults",
    "healthCheckResults",
    "overdue",
];

/// How the app's tasks are networked, from `container.docker.network` or
/// `networks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Ports are `portDefinitions` (or `ports`): the task listens on its
    /// assigned port numbers.
    Host,
    /// Ports are `portMappings`: container ports, forwarded from host
    /// ports where one is given.
    Mapped,
}

/// Reads one Marathon app under the group `base`.
pub fn read_app(node: &Node, base: &AppId, p: &mut Problems) -> Option<(AppSpec, Places)> {
    let mut f = p.object(node, "an app (an object)")?;
    let mut places = Places::new(&node.place);
    let id = match f.get("id") {
        Some(n) => {
            places.put("id", &n.place);
            p.str(n).and_then(|t| {
                AppId::resolve(base, &t)
                    .map_err(|why| p.at(&n.place, why))
                    .ok()
            })
        }
        None => {
            p.at(&node.place, "missing field `id`: every app needs one");
            None
        }
    };
    let mut spec = AppSpec::new(id.clone().unwrap_or_else(AppId::root), "");
    // Marathon's defaults where they differ from Strata's.
    spec.cpus = 1.0;
    spec.mem = 128.0;
    spec.backoff.max_launch_delay_seconds = 300.0;
    let mut mode = Mode::Host;
    let mut mappings: Option<&Node> = None;
    match f.get("container") {
        Some(c) => {
            places.put("image", &c.place);
            container(c, &mut spec, &mut mode, &mut mappings, &mut places, p);
        }
        None => p.at(
            &node.place,
            "no container image: Strata runs every app in a container image; set `container.docker.image` (a plain `cmd` runs in an image such as `busybox`)",
        ),
    }
    if let Some(n) = f.get("networks") {
        networks(n, &mut mode, p);
    }
    if let Some(v) = num(&mut f, "cpus", "cpus", &mut places, p) {
        spec.cpus = v;
    }
    if let Some(v) = num(&mut f, "mem", "mem", &mut places, p) {
        spec.mem = v;
    }
    if let Some(v) = num(&mut f, "disk", "disk", &mut places, p) {
        spec.disk = v;
    }
    if let Some(n) = f.get("cmd") {
        places.put("cmd", &n.place);
        spec.cmd = p.str(n).filter(|c| !c.is_empty());
    }
    if let Some(n) = f.get("args") {
        places.put("args", &n.place);
        spec.args = p.strings(n).unwrap_or_default();
    }
    if let Some(n) = f.get("user") {
        spec.user = p.str(n);
    }
    if let Some(n) = f.get("instances") {
        places.put("instances", &n.place);
        spec.instances = p.int(n, 0, i64::from(u32::MAX)).unwrap_or(0) as u32;
    }
    if let Some(n) = f.get("env") {
        spec.env = env(n, "env", &mut places, p);
    }
    if let Some(n) = f.get("labels") {
        spec.labels = string_map(n, "labels", &mut places, p);
        // Marathon has no field for it: a label says how to spread.
        match spec.labels.get(PLACEMENT_LABEL).map(String::as_str) {
            None | Some("bin-pack") => {}
            Some("spread") => spec.placement = Strategy::Spread,
            Some(other) => p.at(
                &places.at(&format!("labels.{PLACEMENT_LABEL}")),
                format!("unknown placement {other:?}: expected \"bin-pack\" or \"spread\""),
            ),
        }
    }
    if let Some(n) = f.get("requirePorts") {
        spec.require_ports = p.bool(n).unwrap_or_default();
    }
    let definitions = f.get("portDefinitions").filter(|n| !n.is_empty());
    let legacy = f.get("ports").filter(|n| !n.is_empty());
    let mut definitions = definitions;
    let mut legacy = legacy;
    if let Some(m) = mappings {
        // Marathon's API echoes a mapped app's service ports as `ports`
        // and `portDefinitions`: what it wrote itself is no conflict.
        let service = service_ports(m);
        if legacy.is_some_and(|l| numbers(l, None) == service) {
            legacy = None;
        }
        if definitions.is_some_and(|d| numbers(d, Some("port")) == service) {
            definitions = None;
        }
    }
    match (mode, mappings, definitions, legacy) {
        (Mode::Mapped, Some(m), None, None) => {
            spec.ports = port_mappings(m, &mut places, p);
        }
        (Mode::Mapped, None, Some(d), _) | (Mode::Mapped, None, None, Some(d)) => p.at(
            &d.place,
            "port definitions are for host networking; this app's container is networked by port mappings (`container.portMappings`)",
        ),
        (Mode::Host, Some(m), _, _) => p.at(
            &m.place,
            "port mappings need a BRIDGE or container network; this app uses host networking (`portDefinitions`)",
        ),
        (_, Some(_), Some(d), _) | (_, Some(_), None, Some(d)) => p.at(
            &d.place,
            "an app has port mappings or port definitions, not both",
        ),
        (Mode::Host, None, Some(d), _) => {
            spec.ports = port_definitions(d, spec.require_ports, &mut places, p);
        }
        (Mode::Host, None, None, Some(l)) => {
            spec.ports = legacy_ports(l, spec.require_ports, &mut places, p);
        }
        (_, None, None, None) => {}
    }
    super::expose::marathon_labels(&spec.labels, &mut spec.ports, &mut places, p);
    if let Some(n) = f.get("healthChecks") {
        places.put("health_checks", &n.place);
        for item in p.array(n).unwrap_or_default() {
            // Places are keyed by the index among the checks read.
            let i = spec.health_checks.len();
            if let Some(h) = health_check(item, i, &mut places, p) {
                spec.health_checks.push(h);
            }
        }
    }
    if let Some(n) = f.get("constraints") {
        spec.constraints = constraints(n, "constraints", &mut places, p);
    }
    if let Some(n) = f.get("acceptedResourceRoles") {
        places.put("accepted_roles", &n.place);
        for item in p.array(n).unwrap_or_default() {
            match p.str(item).as_deref() {
                Some("*") => spec.accepted_roles.push(AgentRole::Private),
                Some("slave_public") => spec.accepted_roles.push(AgentRole::Public),
                Some(other) => p.at(
                    &item.place,
                    format!(
                        "unknown role {other:?}: expected \"*\" (private agents) or \"slave_public\" (public agents)"
                    ),
                ),
                None => {}
            }
        }
    }
    if let Some(n) = f.get("upgradeStrategy")
        && let Some(mut u) = p.object(n, "an object")
    {
        places.put("upgrade_strategy", &n.place);
        if let Some(v) = num(
            &mut u,
            "minimumHealthCapacity",
            "upgrade_strategy.minimum_health_capacity",
            &mut places,
            p,
        ) {
            spec.upgrade_strategy.minimum_health_capacity = v;
        }
        if let Some(v) = num(
            &mut u,
            "maximumOverCapacity",
            "upgrade_strategy.maximum_over_capacity",
            &mut places,
            p,
        ) {
            spec.upgrade_strategy.maximum_over_capacity = v;
        }
        u.finish(p, &["minimumHealthCapacity", "maximumOverCapacity"]);
    }
    for (key, field) in [
        ("backoffSeconds", "seconds"),
        ("backoffFactor", "factor"),
        ("maxLaunchDelaySeconds", "max_launch_delay_seconds"),
    ] {
        if let Some(v) = num(&mut f, key, &format!("backoff.{field}"), &mut places, p) {
            match field {
                "seconds" => spec.backoff.seconds = v,
                "factor" => spec.backoff.factor = v,
                _ => spec.backoff.max_launch_delay_seconds = v,
            }
        }
    }
    if let Some(n) = f.get("killSelection") {
        match p.str(n).as_deref() {
            Some("YOUNGEST_FIRST") => spec.kill_selection = KillSelection::YoungestFirst,
            Some("OLDEST_FIRST") => spec.kill_selection = KillSelection::OldestFirst,
            Some(other) => p.at(
                &n.place,
                format!(
                    "unknown kill selection {other:?}: expected \"YOUNGEST_FIRST\" or \"OLDEST_FIRST\""
                ),
            ),
            None => {}
        }
    }
    if let Some(n) = f.get("unreachableStrategy") {
        places.put("unreachable_strategy", &n.place);
        unreachable(n, &mut spec, &mut places, p);
    }
    if let Some(n) = f.get("taskKillGracePeriodSeconds") {
        spec.kill_grace_seconds = p.int(n, 0, 3600).unwrap_or(10) as u64;
    }
    if let Some(n) = f.get("dependencies") {
        places.put("dependencies", &n.place);
        spec.dependencies = dependencies(n, &parent(&spec.id, base), p);
    }
    lacks(&mut f, p);
    f.ignore(READ_ONLY);
    f.finish(p, APP_KEYS);
    // Read on past mistakes, so that the checks of the whole app run too.
    Some((spec, places))
}

/// The service ports of port mappings, as Marathon echoes them.
fn service_ports(mappings: &Node) -> Option<Vec<i64>> {
    numbers(mappings, Some("servicePort"))
}

/// The integers of an array, or of one key of each of its objects.
fn numbers(node: &Node, key: Option<&str>) -> Option<Vec<i64>> {
    let Value::Arr(items) = &node.value else {
        return None;
    };
    items
        .iter()
        .map(|item| {
            let v = match (key, &item.value) {
                (None, v) => v,
                (Some(k), Value::Obj(entries)) => &entries.iter().find(|(e, _, _)| e == k)?.2.value,
                _ => return None,
            };
            match v {
                Value::Int(i) => Some(*i),
                _ => None,
            }
        })
        .collect()
}

/// Marathon's fields that Strata has no counterpart for: each is accepted
/// while empty or at its default.
fn lacks(f: &mut Fields<'_>, p: &mut Problems) {
    let none = [
        ("fetch", "Strata runs images and fetches no URIs"),
        ("uris", "Strata runs images and fetches no URIs"),
        ("storeUrls", "Strata runs images and fetches no URIs"),
        ("gpus", "Strata does not schedule GPUs"),
        ("executor", "Strata runs tasks with its own agent"),
        (
            "readinessChecks",
            "Strata gates deployments on health checks",
        ),
        ("secrets", "Strata has no secret store"),
        ("residency", "Strata has no persistent volumes yet"),
        ("check", "Strata runs `healthChecks`"),
        (
            "ipAddress",
            "every Strata task has an overlay address; use `networks`",
        ),
        ("tty", "Strata's tasks have no terminal"),
        (
            "resourceLimits",
            "Strata's limits are the resources asked for",
        ),
        ("maxUnavailable", "Strata rolls by `upgradeStrategy`"),
    ];
    for (key, why) in none {
        f.lacks(p, key, why);
    }
    if let Some(n) = f.get("role")
        && !matches!(&n.value, Value::Str(s) if s == "*")
    {
        p.at(
            &n.place,
            "`role` is not supported: Strata places by `acceptedResourceRoles`; remove it or set it to \"*\"",
        );
    }
}

fn container<'a>(
    node: &'a Node,
    spec: &mut AppSpec,
    mode: &mut Mode,
    mappings: &mut Option<&'a Node>,
    places: &mut Places,
    p: &mut Problems,
) {
    let Some(mut c) = p.object(node, "a container (an object)") else {
        return;
    };
    if let Some(n) = c.get("type")
        && let Some(t) = p.str(n)
        && t != "DOCKER"
        && t != "MESOS"
    {
        p.at(
            &n.place,
            format!("unknown container type {t:?}: expected \"DOCKER\" or \"MESOS\""),
        );
    }
    match c.get("docker") {
        Some(d) => docker(d, spec, mode, mappings, places, p),
        None => p.at(
            &node.place,
            "no image: Strata runs every app in a container image; set `container.docker.image` (a MESOS container takes one there too)",
        ),
    }
    if let Some(n) = c.get("portMappings")
        && !n.is_empty()
    {
        if mappings.is_some() {
            p.at(
                &n.place,
                "port mappings are given twice: here and in `container.docker.portMappings`",
            );
        }
        *mappings = Some(n);
    }
    c.lacks(p, "volumes", "Strata has no volumes yet");
    c.lacks(
        p,
        "linuxInfo",
        "Strata sets the container's isolation itself",
    );
    c.lacks(p, "appc", "Strata runs OCI and Docker images");
    c.finish(p, &["type", "docker", "portMappings", "volumes"]);
}

fn docker<'a>(
    node: &'a Node,
    spec: &mut AppSpec,
    mode: &mut Mode,
    mappings: &mut Option<&'a Node>,
    places: &mut Places,
    p: &mut Problems,
) {
    let Some(mut d) = p.object(node, "a docker container (an object)") else {
        return;
    };
    match d.get("image") {
        Some(n) => {
            places.put("image", &n.place);
            if let Some(image) = p.str(n) {
                spec.image = image;
            }
        }
        None => p.at(&node.place, "missing field `image`"),
    }
    // `forcePull` is the same switch in a MESOS (UCR) container.
    for key in ["forcePullImage", "forcePull"] {
        if let Some(n) = d.get(key) {
            spec.force_pull_image |= p.bool(n).unwrap_or_default();
        }
    }
    if let Some(n) = d.get("network")
        && let Some(net) = p.str(n)
    {
        match net.as_str() {
            "HOST" => *mode = Mode::Host,
            "BRIDGE" | "USER" => *mode = Mode::Mapped,
            other => p.at(
                &n.place,
                format!("unknown network {other:?}: expected \"HOST\", \"BRIDGE\" or \"USER\""),
            ),
        }
    }
    if let Some(n) = d.get("portMappings")
        && !n.is_empty()
    {
        *mappings = Some(n);
    }
    d.lacks(
        p,
        "privileged",
        "Strata's containers are never privileged (use `strata node exec` to debug a node)",
    );
    d.lacks(
        p,
        "parameters",
        "Strata passes no options to a container runtime",
    );
    d.lacks(
        p,
        "pullConfig",
        "Strata has no secret store for registry credentials",
    );
    d.lacks(
        p,
        "credential",
        "Strata has no secret store for registry credentials",
    );
    d.finish(
        p,
        &[
            "image",
            "forcePullImage",
            "forcePull",
            "network",
            "portMappings",
            "privileged",
            "parameters",
        ],
    );
}

fn networks(node: &Node, mode: &mut Mode, p: &mut Problems) {
    let Some(items) = p.array(node) else { return };
    if items.len() > 1 {
        p.at(
            &node.place,
            "Strata joins a task to one network: the overlay; give one network",
        );
    }
    for item in items {
        let Some(mut n) = p.object(item, "a network (an object)") else {
            continue;
        };
        match n.get("mode").map(|m| (m, p.str(m))) {
            Some((_, Some(m))) if m == "host" => *mode = Mode::Host,
            Some((_, Some(m))) if m == "container/bridge" || m == "container" => {
                *mode = Mode::Mapped
            }
            Some((m, Some(other))) => p.at(
                &m.place,
                format!(
                    "unknown network mode {other:?}: expected \"host\", \"container/bridge\" or \"container\""
                ),
            ),
            Some((_, None)) => {}
            None => *mode = Mode::Mapped,
        }
        // A named container network is the overlay: every task has one.
        if let Some(name) = n.get("name") {
            p.str(name);
        }
        n.lacks(p, "labels", "Strata's overlay takes no labels");
        n.finish(p, &["mode", "name"]);
    }
}

/// Marathon's env (and Metronome's): strings, or `{"secret": ...}`,
/// which Strata refuses; places recorded under `field`.
pub(crate) fn env(
    node: &Node,
    field: &str,
    places: &mut Places,
    p: &mut Problems,
) -> BTreeMap<String, String> {
    places.put(field, &node.place);
    let mut out = BTreeMap::new();
    let Value::Obj(entries) = &node.value else {
        p.at(
            &node.place,
            format!("expected an object of strings, found {}", node.kind()),
        );
        return out;
    };
    for (key, _, value) in entries {
        places.put(format!("{field}.{key}"), &value.place);
        match &value.value {
            Value::Str(s) => {
                out.insert(key.clone(), s.clone());
            }
            Value::Obj(o) if o.iter().any(|(k, _, _)| k == "secret") => p.at(
                &value.place,
                "a secret reference: Strata has no secret store yet; give the value, or remove the variable",
            ),
            _ => {
                p.str(value);
            }
        }
    }
    out
}

fn port_definitions(
    node: &Node,
    required: bool,
    places: &mut Places,
    p: &mut Problems,
) -> Vec<PortSpec> {
    places.put("ports", &node.place);
    let mut out = Vec::new();
    for item in p.array(node).unwrap_or_default() {
        let i = out.len();
        let Some(mut f) = p.object(item, "a port definition (an object)") else {
            continue;
        };
        places.put(format!("ports[{i}]"), &item.place);
        let number = match f.get("port") {
            Some(n) => {
                places.put(format!("ports[{i}].host_port"), &n.place);
                p.int(n, 0, 65535).map(|v| v as u16)
            }
            None => Some(0),
        };
        let mut port = PortSpec {
            name: None,
            container_port: None,
            // Without requirePorts Marathon's `port` is the service port
            // and the host port is assigned.
            host_port: Some(if required { number.unwrap_or(0) } else { 0 }),
            service_port: number.filter(|n| *n != 0),
            protocol: Protocol::Tcp,
            ..PortSpec::default()
        };
        common_port(&mut f, &mut port, i, places, p);
        f.finish(p, &["port", "name", "protocol", "labels"]);
        out.push(port);
    }
    out
}

fn legacy_ports(
    node: &Node,
    required: bool,
    places: &mut Places,
    p: &mut Problems,
) -> Vec<PortSpec> {
    places.put("ports", &node.place);
    let mut out = Vec::new();
    for (i, item) in p.array(node).unwrap_or_default().iter().enumerate() {
        places.put(format!("ports[{i}]"), &item.place);
        let number = p.int(item, 0, 65535).unwrap_or(0) as u16;
        out.push(PortSpec {
            name: None,
            container_port: None,
            host_port: Some(if required { number } else { 0 }),
            service_port: (number != 0).then_some(number),
            protocol: Protocol::Tcp,
            ..PortSpec::default()
        });
    }
    out
}

fn port_mappings(node: &Node, places: &mut Places, p: &mut Problems) -> Vec<PortSpec> {
    places.put("ports", &node.place);
    let mut out = Vec::new();
    for item in p.array(node).unwrap_or_default() {
        let i = out.len();
        let Some(mut f) = p.object(item, "a port mapping (an object)") else {
            continue;
        };
        places.put(format!("ports[{i}]"), &item.place);
        let mut port = PortSpec {
            name: None,
            container_port: None,
            host_port: None,
            service_port: None,
            protocol: Protocol::Tcp,
            ..PortSpec::default()
        };
        for (key, field) in [
            ("containerPort", "container_port"),
            ("hostPort", "host_port"),
            ("servicePort", "service_port"),
        ] {
            if let Some(n) = f.get(key) {
                places.put(format!("ports[{i}].{field}"), &n.place);
                let v = p.int(n, 0, 65535).map(|v| v as u16);
                match field {
                    "container_port" => port.container_port = v.filter(|v| *v != 0),
                    "host_port" => port.host_port = v,
                    _ => port.service_port = v.filter(|v| *v != 0),
                }
            }
        }
        if port.container_port.is_none() && port.host_port.is_none() {
            port.host_port = Some(0);
        }
        common_port(&mut f, &mut port, i, places, p);
        f.lacks(
            p,
            "networkNames",
            "a Strata task joins one network, the overlay",
        );
        f.finish(
            p,
            &[
                "containerPort",
                "hostPort",
                "servicePort",
                "name",
                "protocol",
                "labels",
            ],
        );
        out.push(port);
    }
    out
}

/// `name`, `protocol` and `labels`, which both kinds of port have.
fn common_port(
    f: &mut Fields<'_>,
    port: &mut PortSpec,
    i: usize,
    places: &mut Places,
    p: &mut Problems,
) {
    if let Some(n) = f.get("name") {
        places.put(format!("ports[{i}].name"), &n.place);
        port.name = p.str(n);
    }
    if let Some(n) = f.get("protocol") {
        places.put(format!("ports[{i}].protocol"), &n.place);
        if let Some(text) = p.str(n) {
            match Protocol::parse(&text) {
                Some(proto) => port.protocol = proto,
                None => p.at(
                    &n.place,
                    format!("unknown protocol {text:?}: expected \"tcp\", \"udp\" or \"udp,tcp\""),
                ),
            }
        }
    }
    if let Some(n) = f.get("labels") {
        port.labels = string_map(n, &format!("ports[{i}].labels"), places, p);
    }
}

fn health_check(
    node: &Node,
    i: usize,
    places: &mut Places,
    p: &mut Problems,
) -> Option<HealthCheck> {
    let mut f = p.object(node, "a health check (an object)")?;
    places.put(format!("health_checks[{i}]"), &node.place);
    let at = |key: &str| format!("health_checks[{i}].{key}");
    // Marathon's default protocol is HTTP.
    let mut protocol = HealthProtocol::Http;
    if let Some(n) = f.get("protocol") {
        places.put(at("protocol"), &n.place);
        let text = p.str(n)?;
        match HealthProtocol::parse(&text) {
            Some(proto) if text.chars().all(|c| c.is_ascii_uppercase() || c == '_') => {
                protocol = proto
            }
            _ => {
                p.at(
                    &n.place,
                    format!(
                        "unknown protocol {text:?}: expected HTTP, HTTPS, TCP, COMMAND or their MESOS_ variants"
                    ),
                );
                return None;
            }
        }
    }
    let mut h = HealthCheck::new(protocol);
    if let Some(n) = f.get("path") {
        places.put(at("path"), &n.place);
        h.path = p.str(n);
    }
    if let Some(n) = f.get("command") {
        places.put(at("command"), &n.place);
        if let Some(mut c) = p.object(n, "an object {\"value\": \"...\"}") {
            if let Some(v) = c.get("value") {
                h.command = p.str(v);
            }
            c.finish(p, &["value"]);
        }
    }
    if let Some(n) = f.get("portIndex") {
        places.put(at("port_index"), &n.place);
        h.port_index = p.int(n, 0, 1000).map(|v| v as u32);
    }
    if let Some(n) = f.get("port") {
        places.put(at("port"), &n.place);
        h.port = p.int(n, 1, 65535).map(|v| v as u16);
    }
    for (key, field) in [
        ("gracePeriodSeconds", "grace_period_seconds"),
        ("intervalSeconds", "interval_seconds"),
        ("timeoutSeconds", "timeout_seconds"),
        ("maxConsecutiveFailures", "max_consecutive_failures"),
    ] {
        if let Some(n) = f.get(key) {
            places.put(at(field), &n.place);
            if let Some(v) = p.int(n, 0, 86_400) {
                let v = v as u32;
                match field {
                    "grace_period_seconds" => h.grace_period_seconds = v,
                    "interval_seconds" => h.interval_seconds = v,
                    "timeout_seconds" => h.timeout_seconds = v,
                    _ => h.max_consecutive_failures = v,
                }
            }
        }
    }
    if let Some(n) = f.get("ignoreHttp1xx") {
        h.ignore_http1xx = p.bool(n).unwrap_or_default();
    }
    // MESOS_ checks wait `delaySeconds` (15 by default) before the first
    // run; Strata's wait is the grace period.
    if let Some(n) = f.get("delaySeconds")
        && !matches!(n.value, Value::Int(15))
    {
        p.at(
            &n.place,
            "`delaySeconds` is not supported: Strata starts checking at once and counts failures after `gracePeriodSeconds`; remove it or set it to 15",
        );
    }
    if let Some(n) = f.get("ipProtocol")
        && !matches!(&n.value, Value::Str(s) if s == "IPv4")
    {
        p.at(
            &n.place,
            "`ipProtocol` is not supported: Strata's overlay is IPv4; remove it or set it to \"IPv4\"",
        );
    }
    f.finish(
        p,
        &[
            "protocol",
            "path",
            "command",
            "portIndex",
            "port",
            "gracePeriodSeconds",
            "intervalSeconds",
            "timeoutSeconds",
            "maxConsecutiveFailures",
            "ignoreHttp1xx",
            "delaySeconds",
            "ipProtocol",
        ],
    );
    Some(h)
}

fn unreachable(node: &Node, spec: &mut AppSpec, places: &mut Places, p: &mut Problems) {
    if let Value::Str(s) = &node.value {
        if s == "disabled" {
            spec.unreachable_strategy = UnreachableStrategy::Disabled;
        } else {
            p.at(
                &node.place,
                format!("expected \"disabled\" or an object of seconds, found {s:?}"),
            );
        }
        return;
    }
    let Some(mut u) = p.object(node, "\"disabled\" or an object of seconds") else {
        return;
    };
    let mut secs = |key: &str, field: &str, p: &mut Problems| -> u64 {
        u.get(key)
            .and_then(|n| {
                places.put(format!("unreachable_strategy.{field}"), &n.place);
                p.int(n, 0, i64::MAX)
            })
            .unwrap_or(0) as u64
    };
    spec.unreachable_strategy = UnreachableStrategy::Enabled {
        inactive_after_seconds: secs("inactiveAfterSeconds", "inactive_after_seconds", p),
        expunge_after_seconds: secs("expungeAfterSeconds", "expunge_after_seconds", p),
    };
    u.finish(p, &["inactiveAfterSeconds", "expungeAfterSeconds"]);
}
