//! The edge proxy against a real HAProxy (Debian's), without a cluster:
//! `agent::edge::Edge` starts it from a plan of services whose backends are
//! three small HTTP servers on the host's loopback, and follows the
//! services as a public agent does. Checks that requests reach ready
//! backends only (HTTP by host name and path, and a TCP port), that a host
//! no app exposes gets a 404, that instance churn goes over the runtime API
//! (no reload: the worker stays the same) while a reload follows a new
//! route, and that a client sending requests all along sees none fail,
//! through churn and reload alike; a new instance lands in a free slot.
//! With a certificate, a host is served over HTTPS (SNI, the CA's chain)
//! and redirected from plain HTTP; a renewed certificate is served after
//! the reload; a removed one closes the HTTPS port and its file goes.
//! (Reaching an app through a public agent's firewall in a cluster is
//! `host_firewall.rs`.)

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
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

/// The edge's ports: `http_port` and the one after it for HTTPS.
fn ports(http_port: u16) -> control::model::EdgeSettings {
    control::model::EdgeSettings {
        http_port,
        https_port: free_port(),
    }
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
        control::edge::plan(
            &[service(expose.to_vec(), backends)],
            ports(http_port),
            &Default::default(),
            previous,
        )
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

/// A host with a certificate answers over HTTPS with it, plain HTTP to a
/// route that asks for it is redirected, a renewed certificate is served
/// after the reload, and removing it closes the HTTPS port and removes
/// its file.
#[test]
fn https_with_a_certificate_its_renewal_and_removal() {
    if !require(
        "https_with_a_certificate_its_renewal_and_removal",
        &[Need::Program("haproxy")],
    ) {
        return;
    }
    use agent::testing::tls::{TestCa, http_get, https_get};
    use control::edge::{EdgeCert, EdgeCertView};

    let dir = tempfile::tempdir().expect("tempdir");
    let a = backend_server("a");
    let ports = ports(free_port());
    let (http, https) = (
        SocketAddr::from((Ipv4Addr::LOCALHOST, ports.http_port)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, ports.https_port)),
    );
    let services = [service(
        vec![
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
        ],
        &[("web.a", a, BackendState::Ready)],
    )];
    let ca = TestCa::new().expect("ca");
    let cert = |pem: String| EdgeCert {
        format: Default::default(),
        view: EdgeCertView {
            host: "shop.test".into(),
            sha256: String::new(),
            names: vec![],
            not_after: 0,
            set_by: String::new(),
            set_at: 0,
        },
        pem,
    };
    let first = cert(ca.issue(&["shop.test"]).expect("cert"));
    let mut edge = Edge::new(EdgePaths::new(dir.path().join("edge")));
    let apply = |edge: &mut Edge, certs: &[EdgeCert]| {
        edge.set_certs(certs);
        let next = control::edge::plan(
            &services,
            ports,
            &control::edge::tls_hosts(certs),
            edge.applied(),
        );
        edge.apply(&next).expect("apply")
    };
    assert_eq!(
        apply(&mut edge, std::slice::from_ref(&first)),
        Applied::Started
    );

    let got = https_get(https, "shop.test", "/", &ca.cert_pem).expect("https");
    assert_eq!((got.code, got.body.as_str()), (200, "a"), "{got:?}");
    let served = got.peer.clone();
    let (code, _, location) = http_get(http, "shop.test:8080", "/x?y=1").expect("http");
    assert_eq!(
        (code, location.as_deref()),
        (
            301,
            Some(format!("https://shop.test:{}/x?y=1", ports.https_port).as_str())
        )
    );
    // A host without a certificate stays plain HTTP, not redirected.
    let (code, body, _) = http_get(http, "plain.test", "/").expect("http");
    assert_eq!((code, body.as_str()), (200, "a"));
    let files = |edge_dir: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(edge_dir.join("certs"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let edge_dir = dir.path().join("edge");
    assert_eq!(files(&edge_dir).len(), 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(edge_dir.join("certs").join(&files(&edge_dir)[0]))
            .expect("cert file")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key is the agent's only");

    // Renewed: served after the reload, the old file gone.
    let renewed = cert(ca.issue(&["shop.test", "www.shop.test"]).expect("cert"));
    assert_eq!(
        apply(&mut edge, std::slice::from_ref(&renewed)),
        Applied::Reloaded
    );
    let got = https_get(https, "shop.test", "/", &ca.cert_pem).expect("https");
    assert_eq!(got.code, 200, "{got:?}");
    assert_ne!(got.peer, served, "the renewed certificate is served");
    assert_eq!(files(&edge_dir).len(), 1, "{:?}", files(&edge_dir));

    // Removed: HTTPS closes, plain HTTP serves the host again.
    assert_eq!(apply(&mut edge, &[]), Applied::Reloaded);
    let (code, body, _) = http_get(http, "shop.test", "/").expect("http");
    assert_eq!((code, body.as_str()), (200, "a"));
    let closed = (0..50).find_map(|_| {
        let refused = std::net::TcpStream::connect(https).is_err();
        if !refused {
            std::thread::sleep(Duration::from_millis(100));
        }
        refused.then_some(())
    });
    assert!(closed.is_some(), "the HTTPS port still listens");
    assert!(files(&edge_dir).is_empty(), "{:?}", files(&edge_dir));
}
