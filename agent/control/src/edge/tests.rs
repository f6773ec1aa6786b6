use expect_test::{Expect, expect};

use super::*;
use crate::app::{AppId, Protocol};
use crate::service::Backend;

fn backend(task: &str, addr: &str, state: BackendState) -> Backend {
    Backend {
        task: task.into(),
        node: "agent-1".into(),
        addr: addr.parse().expect("addr"),
        state,
    }
}

fn http(host: &str, path: &str) -> Exposure {
    Exposure::Http {
        host: host.into(),
        path: path.into(),
        redirect_https: false,
    }
}

fn service(app: &str, port: usize, expose: Vec<Exposure>, backends: Vec<Backend>) -> Service {
    Service {
        app: AppId::resolve(&AppId::root(), app).expect("id"),
        port,
        protocol: Protocol::Tcp,
        expose,
        vips: vec![],
        checked: true,
        backends,
    }
}

const PORTS: EdgeSettings = EdgeSettings {
    http_port: 80,
    https_port: 443,
};

fn show(plan: &EdgePlan) -> String {
    let mut out = String::new();
    if let Some(p) = plan.http_port {
        out += &format!("http :{p}\n");
    }
    if let Some(h) = &plan.https {
        let hosts: Vec<String> = h.hosts.iter().map(|(h, d)| format!("{h} ({d})")).collect();
        out += &format!("https :{} {}\n", h.port, hosts.join(", "));
    }
    for r in &plan.routes {
        let redirect = if r.redirect_https { " (to https)" } else { "" };
        let tls = if r.tls { " +tls" } else { "" };
        out += &format!("  {}{} -> {}{tls}{redirect}\n", r.host, r.path, r.backend);
    }
    for t in &plan.tcp {
        out += &format!("tcp :{} -> {}\n", t.port, t.backend);
    }
    for b in &plan.backends {
        out += &format!("backend {} {} ({} slots)\n", b.name, b.mode, b.slots.len());
        for (i, s) in b.slots.iter().enumerate() {
            if let Some(s) = s {
                out += &format!("  s{i} {} {} {}\n", s.task, s.addr, s.state);
            }
        }
    }
    out
}

fn check(services: &[Service], previous: Option<&EdgePlan>, expected: Expect) -> EdgePlan {
    let plan = plan(services, PORTS, &TlsHosts::new(), previous);
    expected.assert_eq(&show(&plan));
    plan
}

fn check_changes(applied: &EdgePlan, next: &EdgePlan, expected: Expect) {
    let got = match changes(applied, next) {
        EdgeChange::None => "none\n".to_string(),
        EdgeChange::Reload => "reload\n".to_string(),
        EdgeChange::Runtime(cmds) => cmds.iter().map(|c| format!("{c}\n")).collect(),
    };
    expected.assert_eq(&got);
}

fn shop(backends: Vec<Backend>) -> Vec<Service> {
    vec![
        service(
            "/shop/web",
            0,
            vec![
                http("shop.test", "/"),
                http("shop.test", "/api"),
                Exposure::Tcp { port: 10100 },
            ],
            backends,
        ),
        service(
            "/blog",
            1,
            vec![Exposure::Http {
                host: "blog.test".into(),
                path: "/".into(),
                redirect_https: true,
            }],
            vec![backend("blog.1", "10.200.2.2:8080", BackendState::Ready)],
        ),
        // A VIP alone: nothing on the edge.
        Service {
            vips: vec![crate::app::VipSpec::parse("db:5432").expect("vip")],
            ..service("/db", 0, vec![], vec![])
        },
    ]
}

#[test]
fn routes_longest_path_first_and_a_backend_per_mode() {
    check(
        &shop(vec![
            backend("web.1", "10.200.1.2:8080", BackendState::Ready),
            backend("web.2", "10.200.1.3:8080", BackendState::Down),
            backend("web.3", "10.200.2.3:8080", BackendState::Draining),
        ]),
        None,
        expect![[r#"
            http :80
              blog.test/ -> blog.p1.http
              shop.test/api -> shop.web.p0.http
              shop.test/ -> shop.web.p0.http
            tcp :10100 -> shop.web.p0.tcp
            backend blog.p1.http http (8 slots)
              s0 blog.1 10.200.2.2:8080 ready
            backend shop.web.p0.http http (8 slots)
              s0 web.1 10.200.1.2:8080 ready
              s1 web.2 10.200.1.3:8080 maint
              s2 web.3 10.200.2.3:8080 drain
            backend shop.web.p0.tcp tcp (8 slots)
              s0 web.1 10.200.1.2:8080 ready
              s1 web.2 10.200.1.3:8080 maint
              s2 web.3 10.200.2.3:8080 drain
        "#]],
    );
}

#[test]
fn nothing_exposed_is_an_empty_plan() {
    let plan = check(&[], None, expect![""]);
    assert!(ports(&plan).is_empty());
}

/// A rolling deployment: a new instance takes a free slot, the old one
/// drains and leaves its slot; everything goes over the runtime API.
#[test]
fn instances_keep_their_slots_and_churn_needs_no_reload() {
    let first = check(
        &shop(vec![
            backend("web.1", "10.200.1.2:8080", BackendState::Ready),
            backend("web.2", "10.200.1.3:8080", BackendState::Ready),
        ]),
        None,
        expect![[r#"
            http :80
              blog.test/ -> blog.p1.http
              shop.test/api -> shop.web.p0.http
              shop.test/ -> shop.web.p0.http
            tcp :10100 -> shop.web.p0.tcp
            backend blog.p1.http http (8 slots)
              s0 blog.1 10.200.2.2:8080 ready
            backend shop.web.p0.http http (8 slots)
              s0 web.1 10.200.1.2:8080 ready
              s1 web.2 10.200.1.3:8080 ready
            backend shop.web.p0.tcp tcp (8 slots)
              s0 web.1 10.200.1.2:8080 ready
              s1 web.2 10.200.1.3:8080 ready
        "#]],
    );
    assert_eq!(ports(&first), vec![80, 10100]);
    let second = check(
        &shop(vec![
            backend("web.2", "10.200.1.3:8080", BackendState::Draining),
            backend("web.3", "10.200.2.4:8080", BackendState::Ready),
        ]),
        Some(&first),
        expect![[r#"
            http :80
              blog.test/ -> blog.p1.http
              shop.test/api -> shop.web.p0.http
              shop.test/ -> shop.web.p0.http
            tcp :10100 -> shop.web.p0.tcp
            backend blog.p1.http http (8 slots)
              s0 blog.1 10.200.2.2:8080 ready
            backend shop.web.p0.http http (8 slots)
              s0 web.3 10.200.2.4:8080 ready
              s1 web.2 10.200.1.3:8080 drain
            backend shop.web.p0.tcp tcp (8 slots)
              s0 web.3 10.200.2.4:8080 ready
              s1 web.2 10.200.1.3:8080 drain
        "#]],
    );
    check_changes(
        &first,
        &second,
        expect![[r#"
            set server shop.web.p0.http/s0 addr 10.200.2.4 port 8080
            set server shop.web.p0.tcp/s0 addr 10.200.2.4 port 8080
            set server shop.web.p0.http/s1 state drain
            set server shop.web.p0.tcp/s1 state drain
        "#]],
    );
    let third = plan(
        &shop(vec![backend(
            "web.3",
            "10.200.2.4:8080",
            BackendState::Ready,
        )]),
        PORTS,
        &TlsHosts::new(),
        Some(&second),
    );
    check_changes(
        &second,
        &third,
        expect![[r#"
            set server shop.web.p0.http/s1 state maint
            set server shop.web.p0.tcp/s1 state maint
        "#]],
    );
    check_changes(&third, &third.clone(), expect!["none\n"]);
}

#[test]
fn a_new_route_or_more_instances_than_slots_reload() {
    let one = plan(
        &shop(vec![backend(
            "web.1",
            "10.200.1.2:8080",
            BackendState::Ready,
        )]),
        PORTS,
        &TlsHosts::new(),
        None,
    );
    let mut routes = shop(vec![backend(
        "web.1",
        "10.200.1.2:8080",
        BackendState::Ready,
    )]);
    routes[0].expose.push(http("www.shop.test", "/"));
    check_changes(
        &one,
        &plan(&routes, PORTS, &TlsHosts::new(), Some(&one)),
        expect!["reload\n"],
    );

    // Up to 8 instances fit the 8 slots of the first plan; a ninth grows
    // them.
    let eight: Vec<Backend> = (1..=8)
        .map(|i| {
            backend(
                &format!("web.{i}"),
                &format!("10.200.1.{}:8080", i + 1),
                BackendState::Ready,
            )
        })
        .collect();
    let surge = plan(&shop(eight), PORTS, &TlsHosts::new(), Some(&one));
    assert_eq!(surge.backends[1].slots.len(), 8, "{}", show(&surge));
    assert!(matches!(changes(&one, &surge), EdgeChange::Runtime(_)));
    let many: Vec<Backend> = (1..=9)
        .map(|i| {
            backend(
                &format!("web.{i}"),
                &format!("10.200.1.{}:8080", i + 1),
                BackendState::Ready,
            )
        })
        .collect();
    let grown = plan(&shop(many), PORTS, &TlsHosts::new(), Some(&one));
    assert_eq!(grown.backends[1].slots.len(), 32, "{}", show(&grown));
    assert_eq!(
        grown.backends[1].slots[0].as_ref().map(|s| s.task.as_str()),
        Some("web.1"),
        "web.1 keeps its slot as the backend grows"
    );
    check_changes(&one, &grown, expect!["reload\n"]);
    // The slots never shrink while the backend lives.
    let back = plan(
        &shop(vec![backend(
            "web.1",
            "10.200.1.2:8080",
            BackendState::Ready,
        )]),
        PORTS,
        &TlsHosts::new(),
        Some(&grown),
    );
    assert_eq!(back.backends[1].slots.len(), 32);
}

/// A host with a certificate is served over HTTPS too, and only its
/// routes that ask for it redirect plain HTTP; a host without one stays
/// plain. A new certificate reloads; its port is opened.
#[test]
fn https_only_for_hosts_with_a_certificate() {
    let ready = vec![backend("web.1", "10.200.1.2:8080", BackendState::Ready)];
    let mut services = shop(ready);
    services[0].expose = vec![
        Exposure::Http {
            host: "shop.test".into(),
            path: "/".into(),
            redirect_https: true,
        },
        Exposure::Http {
            host: "plain.test".into(),
            path: "/".into(),
            redirect_https: true,
        },
    ];
    let certs: TlsHosts = [
        ("shop.test".to_string(), "d1".to_string()),
        ("unrouted.test".to_string(), "d2".to_string()),
    ]
    .into();
    let first = plan(&services, PORTS, &certs, None);
    expect![[r#"
        http :80
        https :443 shop.test (d1)
          blog.test/ -> blog.p1.http
          plain.test/ -> shop.web.p0.http
          shop.test/ -> shop.web.p0.http +tls (to https)
        backend blog.p1.http http (8 slots)
          s0 blog.1 10.200.2.2:8080 ready
        backend shop.web.p0.http http (8 slots)
          s0 web.1 10.200.1.2:8080 ready
    "#]]
    .assert_eq(&show(&first));
    assert_eq!(ports(&first), vec![80, 443]);
    let renewed: TlsHosts = [("shop.test".to_string(), "d3".to_string())].into();
    check_changes(
        &first,
        &plan(&services, PORTS, &renewed, Some(&first)),
        expect!["reload\n"],
    );
    let none = plan(&services, PORTS, &TlsHosts::new(), Some(&first));
    assert_eq!(none.https, None);
    assert!(none.routes.iter().all(|r| !r.tls && !r.redirect_https));
    assert_eq!(ports(&none), vec![80]);
}

/// A certificate record from a newer writer reads; the view never holds
/// the PEM.
#[test]
fn cert_records_read_and_views_hold_no_key() {
    let json = r#"{"format":9,"host":"shop.test","pem":"-----BEGIN CERTIFICATE-----","sha256":"ab","names":["shop.test"],"not_after":2000000000,"set_by":"ops","set_at":1,"source":{"kind":"secret"}}"#;
    let cert: EdgeCert = serde_json::from_str(json).expect("a newer record reads");
    assert_eq!(cert.view.host, "shop.test");
    let view = serde_json::to_string(&cert.view).expect("view");
    assert!(!view.contains("BEGIN"), "{view}");
}

/// Where an app's exposed ports are reached: each Ready public agent on
/// the edge's ports, HTTPS only with a certificate, a redirect noted.
#[test]
fn exposed_ports_are_shown_at_the_public_agents() {
    use crate::app::PortSpec;
    let port: PortSpec = serde_json::from_value(serde_json::json!({
        "container_port": 80,
        "expose": [
            {"kind": "http", "host": "shop.test", "path": "/", "redirect_https": true},
            {"kind": "http", "host": "plain.test", "path": "/api", "redirect_https": true},
            {"kind": "tcp", "port": 10100}
        ]
    }))
    .expect("a port");
    let cert = EdgeCertView {
        host: "shop.test".into(),
        sha256: "ab".into(),
        names: vec!["shop.test".into()],
        not_after: 1_900_000_000,
        set_by: "ops".into(),
        set_at: 1,
    };
    let public = [("public-1".to_string(), "203.0.113.7".to_string())];
    let show = |views: Vec<ExposedView>| -> String {
        views
            .iter()
            .map(|v| format!("{} {} at {:?} {:?}\n", v.port_index, v.url, v.at, v.note))
            .collect()
    };
    expect![[r#"
        0 http://shop.test/ at ["public-1 203.0.113.7:80"] Some("redirected to https")
        0 https://shop.test/ at ["public-1 203.0.113.7:443"] Some("certificate valid until 2030-03-17T17:46:40Z")
        0 http://plain.test/api at ["public-1 203.0.113.7:80"] Some("asks for https, but the host has no certificate (strata edge cert set)")
        0 tcp://:10100 at ["public-1 203.0.113.7:10100"] None
    "#]]
    .assert_eq(&show(exposed(std::slice::from_ref(&port), &public, PORTS, std::slice::from_ref(&cert))));
    expect![[r#"
        0 http://shop.test/ at [] Some("no public agent is Ready")
        0 https://shop.test/ at [] Some("no public agent is Ready")
        0 http://plain.test/api at [] Some("no public agent is Ready")
        0 tcp://:10100 at [] Some("no public agent is Ready")
    "#]]
    .assert_eq(&show(exposed(&[port], &[], PORTS, &[cert])));
}
