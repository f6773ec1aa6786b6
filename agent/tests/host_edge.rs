//! The edge proxy against a real HAProxy (Debian's), without a cluster:
//! `agent::edge::Edge` starts it from a plan of services whose backends are
//! three small HTTP servers on the host's loopback, and follows the
//! services as a public agent does. Checks that requests reach ready
//! backends only (HTTP by host name and path, and a TCP port), that a host
//! no app exposes gets a 404, that instance churn goes over the runtime API
//! (no reload: the worker stays the same) while a reload follows a new
//! route, and that a client sending requests all along sees none fail,
//! through churn and reload alike; a new instance lands in a free slot. (Reaching an app through a public
//! agent's firewall in a cluster is `host_firewall.rs`.)

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use agent::edge::{Applied, Edge, EdgePaths};
use control::app::{AppId, Exposure, Protocol};
use control::service::{Backend, BackendState, Service};
use qemu_tests::testenv::{Need, require};

/// An HTTP server on the loopback that answers every request with `name`.
fn backend_server(name: &'static str) -> SocketAddrV4 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let addr = match listener.local_addr().expect("addr") {
        std::net::SocketAddr::V4(a) => a,
        other => panic!("{other}"),
    };
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || qemu_tests::http::serve(conn, name));
        }
    });
    addr
}

/// One request on a new connection to the host's `port`.
fn get(port: u16, host: &str, path: &str) -> std::io::Result<(u16, String)> {
    qemu_tests::http::get((Ipv4Addr::LOCALHOST, port).into(), host, path)
}

/// Which backends answer `n` requests. (While another client sends
/// requests too, round robin may hand it every other backend: then only
/// a subset answers this one.)
fn answering(port: u16, host: &str, path: &str, n: usize) -> Vec<String> {
    let mut seen: Vec<String> = (0..n)
        .map(|_| {
            let (code, body) = get(port, host, path).expect("request");
            assert_eq!(code, 200, "{host}{path}: {body}");
            body
        })
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn service(expose: Vec<Exposure>, backends: &[(&str, SocketAddrV4, BackendState)]) -> Service {
    Service {
        app: AppId::resolve(&AppId::root(), "/shop/web").expect("id"),
        port: 0,
        protocol: Protocol::Tcp,
        expose,
        vips: vec![],
        checked: true,
        backends: backends
            .iter()
            .map(|(task, addr, state)| Backend {
                task: task.to_string(),
                node: "agent-1".into(),
                addr: *addr,
                state: *state,
            })
            .collect(),
    }
}

#[test]
fn the_edge_follows_its_services_without_failing_a_request() {
    if !require(
        "the_edge_follows_its_services_without_failing_a_request",
        &[Need::Program("haproxy")],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b, c) = (
        backend_server("a"),
        backend_server("b"),
        backend_server("c"),
    );
    let (http_port, tcp_port) = (free_port(), free_port());
    let mut expose = vec![
        Exposure::Http {
            host: "shop.test".into(),
            path: "/".into(),
            redirect_https: false,
        },
        Exposure::Tcp { port: tcp_port },
    ];
    let plan = |expose: &[Exposure],
                backends: &[(&str, SocketAddrV4, BackendState)],
                previous: Option<&control::edge::EdgePlan>| {
        control::edge::plan(&[service(expose.to_vec(), backends)], http_port, previous)
    };
    let mut edge = Edge::new(EdgePaths::new(dir.path().join("edge")));
    let first = plan(
        &expose,
        &[
            ("web.a", a, BackendState::Ready),
            ("web.b", b, BackendState::Ready),
            ("web.c", c, BackendState::Down),
        ],
        None,
    );
    assert_eq!(edge.apply(&first).expect("start"), Applied::Started);
    assert_eq!(answering(http_port, "shop.test", "/", 12), ["a", "b"]);
    assert_eq!(
        answering(http_port, "SHOP.test:80", "/any/path", 12),
        ["a", "b"],
        "host names match without case or port"
    );
    let (code, body) = get(http_port, "other.test", "/").expect("request");
    assert_eq!(
        (code, body.as_str()),
        (404, "no app is exposed at this host and path")
    );
    assert_eq!(answering(tcp_port, "anything", "/", 12), ["a", "b"]);
    let worker =
        agent::edge::runtime::worker_pid(&dir.path().join("edge/admin.sock")).expect("worker pid");

    // A client sends requests all along from here on.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                sent.fetch_add(1, Ordering::Relaxed);
                match get(http_port, "shop.test", "/") {
                    Ok((200, _)) => {}
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{other:?}"));
                    }
                }
            }
            errors
        })
    };

    // Churn: c turns healthy, a drains; over the runtime API, same worker.
    let second = plan(
        &expose,
        &[
            ("web.a", a, BackendState::Draining),
            ("web.b", b, BackendState::Ready),
            ("web.c", c, BackendState::Ready),
        ],
        edge.applied().cloned().as_ref(),
    );
    assert!(
        matches!(edge.apply(&second).expect("churn"), Applied::Runtime(n) if n > 0),
        "instance churn goes over the runtime API"
    );
    let only = |seen: Vec<String>, ready: &[&str]| {
        assert!(
            !seen.is_empty() && seen.iter().all(|s| ready.contains(&s.as_str())),
            "{seen:?} answered; only {ready:?} are ready"
        );
    };
    only(answering(http_port, "shop.test", "/", 12), &["b", "c"]);
    only(answering(tcp_port, "x", "/", 12), &["b", "c"]);
    assert!(!edge.drifted(), "HAProxy's servers match the plan");
    assert_eq!(
        agent::edge::runtime::worker_pid(&dir.path().join("edge/admin.sock")).expect("pid"),
        worker,
        "no reload for churn"
    );

    // A new route reloads; a path route goes first; a leaves.
    expose.push(Exposure::Http {
        host: "shop.test".into(),
        path: "/api".into(),
        redirect_https: false,
    });
    let third = plan(
        &expose,
        &[
            ("web.b", b, BackendState::Ready),
            ("web.c", c, BackendState::Ready),
        ],
        edge.applied().cloned().as_ref(),
    );
    assert_eq!(edge.apply(&third).expect("reload"), Applied::Reloaded);
    only(answering(http_port, "shop.test", "/api/x", 12), &["b", "c"]);
    assert!(
        !edge.drifted(),
        "the new worker starts with the plan's servers"
    );
    assert_eq!(edge.apply(&third).expect("again"), Applied::Nothing);

    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let errors = client.join().expect("client");
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!("edge: {sent} requests through churn and a reload, {failed} failed");
    assert!(sent > 20, "the client sent {sent} requests");
    assert_eq!(failed, 0, "failed requests: {errors:?}");
    // Alone again, this client sees every ready backend.
    assert_eq!(answering(http_port, "shop.test", "/api", 12), ["b", "c"]);
    assert_eq!(answering(tcp_port, "x", "/", 12), ["b", "c"]);

    // A new instance lands in a free slot (never given an address) over
    // the runtime API.
    let d = backend_server("d");
    let fourth = plan(
        &expose,
        &[
            ("web.b", b, BackendState::Ready),
            ("web.c", c, BackendState::Ready),
            ("web.d", d, BackendState::Ready),
        ],
        edge.applied().cloned().as_ref(),
    );
    assert!(
        matches!(edge.apply(&fourth).expect("a new instance"), Applied::Runtime(n) if n > 0),
        "a new instance goes over the runtime API"
    );
    assert_eq!(answering(http_port, "shop.test", "/", 12), ["b", "c", "d"]);
    assert_eq!(answering(tcp_port, "x", "/", 12), ["b", "c", "d"]);
    assert!(!edge.drifted(), "HAProxy's servers match the plan");
}
