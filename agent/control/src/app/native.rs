//! Strata's own app file, TOML: [`AppSpec`]'s fields under their own names,
//! and nothing else.
//!
//! ```toml
//! id = "/shop/web"
//! image = "registry.local/nginx:1.25"
//! instances = 3
//! cpus = 0.25
//! mem = 64
//! constraints = [["hostname", "UNIQUE"]]
//!
//! [[ports]]
//! name = "http"
//! container_port = 80
//! vips = ["shop-web:80"]
//!
//! [[ports.expose]]
//! host = "shop.example.com"
//! path = "/"
//!
//! [[health_checks]]
//! protocol = "http"
//! path = "/"
//! port_index = 0
//! ```

use std::collections::BTreeMap;

use super::doc::{Fields, Node, Problems, Value};
use super::group::{Places, dependencies};
use super::{
    AgentRole, AppId, AppSpec, Constraint, Exposure, HealthCheck, HealthProtocol, KillSelection,
    Operator, PortSpec, Protocol, UnreachableStrategy, VipSpec,
};
use crate::schedule::Strategy;

const APP_KEYS: &[&str] = &[
    "id",
    "image",
    "force_pull_image",
    "cmd",
    "args",
    "user",
    "instances",
    "cpus",
    "mem",
    "disk",
    "env",
    "labels",
    "ports",
    "require_ports",
    "health_checks",
    "constraints",
    "accepted_roles",
    "placement",
    "upgrade_strategy",
    "backoff",
    "kill_selection",
    "unreachable_strategy",
    "kill_grace_seconds",
    "dependencies",
];

/// Reads one app of a TOML file under the group `base`.
pub fn read_app(node: &Node, base: &AppId, p: &mut Problems) -> Option<(AppSpec, Places)> {
    let mut f = p.object(node, "an app (a table)")?;
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
    let image = match f.get("image") {
        Some(n) => {
            places.put("image", &n.place);
            p.str(n)
        }
        None => {
            p.at(
                &node.place,
                "missing field `image`: Strata runs every app in a container",
            );
            None
        }
    };
    let mut spec = AppSpec::new(id.clone().unwrap_or_else(AppId::root), "");
    spec.image = image.unwrap_or_default();
    if let Some(v) = num(&mut f, "cpus", "cpus", &mut places, p) {
        spec.cpus = v;
    }
    if let Some(v) = num(&mut f, "mem", "mem", &mut places, p) {
        spec.mem = v;
    }
    if let Some(v) = num(&mut f, "disk", "disk", &mut places, p) {
        spec.disk = v;
    }
    if let Some(n) = f.get("force_pull_image") {
        spec.force_pull_image = p.bool(n).unwrap_or_default();
    }
    if let Some(n) = f.get("cmd") {
        places.put("cmd", &n.place);
        spec.cmd = p.str(n);
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
        spec.env = string_map(n, "env", &mut places, p);
    }
    if let Some(n) = f.get("labels") {
        spec.labels = string_map(n, "labels", &mut places, p);
    }
    if let Some(n) = f.get("ports") {
        places.put("ports", &n.place);
        for item in p.array(n).unwrap_or_default() {
            let i = spec.ports.len();
            if let Some(port) = port(item, i, &mut places, p) {
                spec.ports.push(port);
            }
        }
    }
    if let Some(n) = f.get("require_ports") {
        spec.require_ports = p.bool(n).unwrap_or_default();
    }
    if let Some(n) = f.get("health_checks") {
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
    if let Some(n) = f.get("accepted_roles") {
        places.put("accepted_roles", &n.place);
        for item in p.array(n).unwrap_or_default() {
            match p.str(item).as_deref() {
                Some("private") => spec.accepted_roles.push(AgentRole::Private),
                Some("public") => spec.accepted_roles.push(AgentRole::Public),
                Some(other) => p.at(
                    &item.place,
                    format!("unknown role {other:?}: expected \"private\" or \"public\""),
                ),
                None => {}
            }
        }
    }
    if let Some(n) = f.get("upgrade_strategy")
        && let Some(mut u) = p.object(n, "a table")
    {
        places.put("upgrade_strategy", &n.place);
        if let Some(v) = num(
            &mut u,
            "minimum_health_capacity",
            "upgrade_strategy.minimum_health_capacity",
            &mut places,
            p,
        ) {
            spec.upgrade_strategy.minimum_health_capacity = v;
        }
        if let Some(v) = num(
            &mut u,
            "maximum_over_capacity",
            "upgrade_strategy.maximum_over_capacity",
            &mut places,
            p,
        ) {
            spec.upgrade_strategy.maximum_over_capacity = v;
        }
        u.finish(p, &["minimum_health_capacity", "maximum_over_capacity"]);
    }
    if let Some(n) = f.get("backoff")
        && let Some(mut b) = p.object(n, "a table")
    {
        places.put("backoff", &n.place);
        if let Some(v) = num(&mut b, "seconds", "backoff.seconds", &mut places, p) {
            spec.backoff.seconds = v;
        }
        if let Some(v) = num(&mut b, "factor", "backoff.factor", &mut places, p) {
            spec.backoff.factor = v;
        }
        if let Some(v) = num(
            &mut b,
            "max_launch_delay_seconds",
            "backoff.max_launch_delay_seconds",
            &mut places,
            p,
        ) {
            spec.backoff.max_launch_delay_seconds = v;
        }
        b.finish(p, &["seconds", "factor", "max_launch_delay_seconds"]);
    }
    if let Some(n) = f.get("placement") {
        places.put("placement", &n.place);
        match p.str(n).as_deref() {
            Some("bin-pack") => spec.placement = Strategy::BinPack,
            Some("spread") => spec.placement = Strategy::Spread,
            Some(other) => p.at(
                &n.place,
                format!("unknown placement {other:?}: expected \"bin-pack\" or \"spread\""),
            ),
            None => {}
        }
    }
    if let Some(n) = f.get("kill_selection") {
        match p.str(n).as_deref() {
            Some("youngest-first") => spec.kill_selection = KillSelection::YoungestFirst,
            Some("oldest-first") => spec.kill_selection = KillSelection::OldestFirst,
            Some(other) => p.at(
                &n.place,
                format!("unknown kill selection {other:?}: expected \"youngest-first\" or \"oldest-first\""),
            ),
            None => {}
        }
    }
    if let Some(n) = f.get("unreachable_strategy") {
        places.put("unreachable_strategy", &n.place);
        if let Value::Str(s) = &n.value {
            if s == "disabled" {
                spec.unreachable_strategy = UnreachableStrategy::Disabled;
            } else {
                p.at(
                    &n.place,
                    format!("expected \"disabled\" or a table of seconds, found {s:?}"),
                );
            }
        } else if let Some(mut u) = p.object(n, "\"disabled\" or a table of seconds") {
            let mut secs = |key: &str, p: &mut Problems| {
                u.get(key)
                    .and_then(|n| {
                        places.put(format!("unreachable_strategy.{key}"), &n.place);
                        p.int(n, 0, i64::MAX)
                    })
                    .unwrap_or(0) as u64
            };
            spec.unreachable_strategy = UnreachableStrategy::Enabled {
                inactive_after_seconds: secs("inactive_after_seconds", p),
                expunge_after_seconds: secs("expunge_after_seconds", p),
            };
            u.finish(p, &["inactive_after_seconds", "expunge_after_seconds"]);
        }
    }
    if let Some(n) = f.get("kill_grace_seconds") {
        spec.kill_grace_seconds = p.int(n, 0, 3600).unwrap_or(10) as u64;
    }
    if let Some(n) = f.get("dependencies") {
        places.put("dependencies", &n.place);
        spec.dependencies = dependencies(n, &parent(&spec.id, base), p);
    }
    f.finish(p, APP_KEYS);
    // Read on past mistakes, so that the checks of the whole app run too.
    Some((spec, places))
}

/// The group an app's relative dependencies are resolved against: its
/// own parent.
pub(super) fn parent(id: &AppId, base: &AppId) -> AppId {
    let parts: Vec<&str> = id.parts().collect();
    if parts.len() <= 1 {
        return if id.as_str() == "/" {
            base.clone()
        } else {
            AppId::root()
        };
    }
    AppId::resolve(&AppId::root(), &parts[..parts.len() - 1].join("/"))
        .unwrap_or_else(|_| base.clone())
}

/// A number field, its place recorded under Strata's name `field`.
pub(super) fn num(
    f: &mut Fields<'_>,
    key: &str,
    field: &str,
    places: &mut Places,
    p: &mut Problems,
) -> Option<f64> {
    let n = f.get(key)?;
    places.put(field, &n.place);
    p.f64(n)
}

fn port(node: &Node, i: usize, places: &mut Places, p: &mut Problems) -> Option<PortSpec> {
    let mut f = p.object(node, "a port (a table)")?;
    places.put(format!("ports[{i}]"), &node.place);
    let mut port = PortSpec {
        name: None,
        container_port: None,
        host_port: None,
        service_port: None,
        protocol: Protocol::Tcp,
        ..PortSpec::default()
    };
    if let Some(n) = f.get("name") {
        places.put(format!("ports[{i}].name"), &n.place);
        port.name = p.str(n);
    }
    for (key, slot) in [
        ("container_port", &mut port.container_port),
        ("host_port", &mut port.host_port),
        ("service_port", &mut port.service_port),
    ] {
        if let Some(n) = f.get(key) {
            places.put(format!("ports[{i}].{key}"), &n.place);
            *slot = p.int(n, 0, 65535).map(|v| v as u16);
        }
    }
    if let Some(n) = f.get("protocol") {
        places.put(format!("ports[{i}].protocol"), &n.place);
        if let Some(text) = p.str(n) {
            match Protocol::parse(&text) {
                Some(proto) => port.protocol = proto,
                None => p.at(
                    &n.place,
                    format!("unknown protocol {text:?}: expected tcp, udp or udp,tcp"),
                ),
            }
        }
    }
    if let Some(n) = f.get("labels") {
        port.labels = string_map(n, &format!("ports[{i}].labels"), places, p);
    }
    if let Some(n) = f.get("expose") {
        places.put(format!("ports[{i}].expose"), &n.place);
        for item in p.array(n).unwrap_or_default() {
            if let Some(e) = exposure(item, p) {
                places.put(
                    format!("ports[{i}].expose[{}]", port.expose.len()),
                    &item.place,
                );
                port.expose.push(e);
            }
        }
    }
    if let Some(n) = f.get("vips") {
        places.put(format!("ports[{i}].vips"), &n.place);
        for item in p.array(n).unwrap_or_default() {
            let Some(text) = p.str(item) else { continue };
            match VipSpec::parse(&text) {
                Ok(v) => {
                    places.put(format!("ports[{i}].vips[{}]", port.vips.len()), &item.place);
                    port.vips.push(v);
                }
                Err(why) => p.at(&item.place, why),
            }
        }
    }
    f.finish(
        p,
        &[
            "name",
            "container_port",
            "host_port",
            "service_port",
            "protocol",
            "labels",
            "expose",
            "vips",
        ],
    );
    if port.container_port.is_none() && port.host_port.is_none() {
        p.at(
            &node.place,
            "a port needs a container_port, a host_port or both",
        );
    }
    Some(port)
}

/// One `[[ports.expose]]`: `host` (with `path`, `redirect_https`) for
/// HTTP, or `tcp` for a public TCP port.
fn exposure(node: &Node, p: &mut Problems) -> Option<Exposure> {
    let mut f = p.object(node, "an exposure (a table with host or tcp)")?;
    let host = f.get("host").and_then(|n| p.str(n));
    let path = f.get("path").and_then(|n| p.str(n));
    let redirect = f.get("redirect_https").and_then(|n| p.bool(n));
    let had_tcp = f.has("tcp");
    let tcp = f
        .get("tcp")
        .and_then(|n| p.int(n, 1, 65535))
        .map(|v| v as u16);
    f.finish(p, &["host", "path", "redirect_https", "tcp"]);
    match (host, had_tcp) {
        (Some(host), false) => Some(Exposure::http(
            &host,
            path.as_deref().unwrap_or("/"),
            redirect.unwrap_or(false),
        )),
        (None, true) if path.is_none() && redirect.is_none() => {
            tcp.map(|port| Exposure::Tcp { port })
        }
        (None, true) => {
            p.at(
                &node.place,
                "a tcp exposure has no path or redirect_https: those route HTTP by host",
            );
            None
        }
        (Some(_), true) => {
            p.at(
                &node.place,
                "an exposure is HTTP (host, path) or TCP (tcp), not both: write two",
            );
            None
        }
        (None, false) => {
            p.at(
                &node.place,
                "an exposure needs host (HTTP by host name) or tcp (a public TCP port)",
            );
            None
        }
    }
}

fn health_check(
    node: &Node,
    i: usize,
    places: &mut Places,
    p: &mut Problems,
) -> Option<HealthCheck> {
    let mut f = p.object(node, "a health check (a table)")?;
    places.put(format!("health_checks[{i}]"), &node.place);
    let protocol = match f.get("protocol") {
        Some(n) => {
            places.put(format!("health_checks[{i}].protocol"), &n.place);
            let text = p.str(n)?;
            match HealthProtocol::parse(&text) {
                Some(proto) if text.chars().all(|c| c.is_ascii_lowercase()) => proto,
                _ => {
                    p.at(
                        &n.place,
                        format!("unknown protocol {text:?}: expected \"http\", \"https\", \"tcp\" or \"command\""),
                    );
                    return None;
                }
            }
        }
        None => {
            p.at(
                &node.place,
                "missing field `protocol`: expected \"http\", \"https\", \"tcp\" or \"command\"",
            );
            return None;
        }
    };
    let mut h = HealthCheck::new(protocol);
    for (key, slot) in [("path", &mut h.path), ("command", &mut h.command)] {
        if let Some(n) = f.get(key) {
            places.put(format!("health_checks[{i}].{key}"), &n.place);
            *slot = p.str(n);
        }
    }
    if let Some(n) = f.get("port_index") {
        places.put(format!("health_checks[{i}].port_index"), &n.place);
        h.port_index = p.int(n, 0, 1000).map(|v| v as u32);
    }
    if let Some(n) = f.get("port") {
        places.put(format!("health_checks[{i}].port"), &n.place);
        h.port = p.int(n, 1, 65535).map(|v| v as u16);
    }
    for (key, slot) in [
        ("grace_period_seconds", &mut h.grace_period_seconds),
        ("interval_seconds", &mut h.interval_seconds),
        ("timeout_seconds", &mut h.timeout_seconds),
        ("max_consecutive_failures", &mut h.max_consecutive_failures),
    ] {
        if let Some(n) = f.get(key) {
            places.put(format!("health_checks[{i}].{key}"), &n.place);
            if let Some(v) = p.int(n, 0, 86_400) {
                *slot = v as u32;
            }
        }
    }
    if let Some(n) = f.get("ignore_http1xx") {
        h.ignore_http1xx = p.bool(n).unwrap_or_default();
    }
    f.finish(
        p,
        &[
            "protocol",
            "path",
            "port_index",
            "port",
            "command",
            "grace_period_seconds",
            "interval_seconds",
            "timeout_seconds",
            "max_consecutive_failures",
            "ignore_http1xx",
        ],
    );
    Some(h)
}

/// A table (object) of strings, its entries placed as `<field>.<key>`.
pub(crate) fn string_map(
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
            format!("expected a table of strings, found {}", node.kind()),
        );
        return out;
    };
    for (key, _, value) in entries {
        places.put(format!("{field}.{key}"), &value.place);
        if let Some(v) = p.str(value) {
            out.insert(key.clone(), v);
        }
    }
    out
}

/// Constraints as Marathon writes them: `[field, operator]` or
/// `[field, operator, value]` (or the old `"field:operator:value"`), their
/// places recorded under `field` (`constraints`, `run.constraints`).
pub(crate) fn constraints(
    node: &Node,
    field: &str,
    places: &mut Places,
    p: &mut Problems,
) -> Vec<Constraint> {
    places.put(field, &node.place);
    let mut out = Vec::new();
    for item in p.array(node).unwrap_or_default() {
        // Places are keyed by the index among the constraints read.
        places.put(format!("{field}[{}]", out.len()), &item.place);
        let parts: Vec<String> = match &item.value {
            Value::Str(s) => s.splitn(3, ':').map(str::to_string).collect(),
            Value::Arr(_) => match p.strings(item) {
                Some(parts) => parts,
                None => continue,
            },
            _ => {
                p.at(
                    &item.place,
                    format!(
                        "expected a constraint [field, operator, value], found {}",
                        item.kind()
                    ),
                );
                continue;
            }
        };
        if !(2..=3).contains(&parts.len()) {
            p.at(
                &item.place,
                format!(
                    "a constraint is [field, operator] or [field, operator, value], found {} part(s)",
                    parts.len()
                ),
            );
            continue;
        }
        let Some(operator) = Operator::parse(&parts[1]) else {
            p.at(
                &item.place,
                format!(
                    "unknown operator {:?}: expected UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE, MAX_PER or IS",
                    parts[1]
                ),
            );
            continue;
        };
        out.push(Constraint {
            field: parts[0].clone(),
            operator,
            value: parts.get(2).cloned(),
        });
    }
    out
}
