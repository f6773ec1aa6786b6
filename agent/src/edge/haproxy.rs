//! HAProxy's configuration for an [`EdgePlan`]: pure, snapshot-tested.
//!
//! The configuration holds everything a fresh worker needs to start right
//! (each slot's current server and state), so that a reload never sends a
//! request to an instance the cluster took out. Servers are `disabled` in
//! the file unless ready: a draining instance keeps its connections on the
//! old worker, which finishes them, and takes none on the new one.
//!
//! A request is retried on another server only when its connection could
//! not be made (HAProxy's default `retry-on conn-failure`, `retries 3`,
//! `option redispatch 1`): a request a server may have seen is never
//! replayed, whatever its method.

use std::fmt::Write as _;

use control::edge::{EdgePlan, Mode, ServerState, server_name};

use super::EdgePaths;

/// The backend that answers requests no route takes.
pub const NO_ROUTE: &str = "strata.no-route";
/// The backend that redirects plain HTTP to HTTPS.
pub const REDIRECT_HTTPS: &str = "strata.redirect-https";

/// The configuration of `plan`, with its admin socket under `paths`.
pub fn render(plan: &EdgePlan, paths: &EdgePaths) -> String {
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line("# Written by the Strata agent from the cluster's services: do not edit.");
    line("global");
    line("    master-worker");
    line(&format!(
        "    stats socket {} mode 600 level admin expose-fd listeners",
        paths.admin().display()
    ));
    line("    hard-stop-after 15m");
    if plan.https.is_some() {
        line("    ssl-default-bind-options ssl-min-ver TLSv1.2");
    }
    line("");
    line("defaults");
    line("    timeout connect 5s");
    line("    timeout client 60s");
    line("    timeout server 60s");
    line("    timeout http-request 10s");
    line("    timeout queue 10s");
    line("    timeout tunnel 1h");
    line("    retries 3");
    line("    option redispatch 1");
    if let Some(port) = plan.http_port {
        line("");
        line("frontend http");
        line("    mode http");
        line(&format!("    bind :{port}"));
        line("    option http-keep-alive");
        // What a client says of its own protocol is never passed on.
        line("    http-request set-header X-Forwarded-Proto http");
        routes(&mut line, plan, false);
        line("");
        line(&format!("backend {NO_ROUTE}"));
        line("    mode http");
        line(
            "    http-request return status 404 content-type text/plain string \"no app is exposed at this host and path\"",
        );
        if let Some(https) = &plan.https
            && plan.routes.iter().any(|r| r.redirect_https)
        {
            // To the same host (without the port the client used) on the
            // HTTPS port, the path and query kept.
            let port = if https.port == 443 {
                String::new()
            } else {
                format!(":{}", https.port)
            };
            line("");
            line(&format!("backend {REDIRECT_HTTPS}"));
            line("    mode http");
            line(&format!(
                "    http-request redirect prefix https://%[req.hdr(host),field(1,:)]{port} code 301"
            ));
        }
    }
    if let Some(https) = &plan.https {
        line("");
        line("frontend https");
        line("    mode http");
        // Hosts that share a certificate (a wildcard) name its file once.
        let digests: std::collections::BTreeSet<&String> = https.hosts.values().collect();
        let crts: String = digests
            .into_iter()
            .map(|digest| format!(" crt {}", paths.cert(digest).display()))
            .collect();
        line(&format!(
            "    bind :{} ssl{crts} alpn h2,http/1.1",
            https.port
        ));
        line("    option http-keep-alive");
        line("    http-request set-header X-Forwarded-Proto https");
        routes(&mut line, plan, true);
    }
    for t in &plan.tcp {
        line("");
        line(&format!("frontend tcp-{}", t.port));
        line("    mode tcp");
        line(&format!("    bind :{}", t.port));
        line(&format!("    default_backend {}", t.backend));
    }
    for b in &plan.backends {
        line("");
        line(&format!("backend {}", b.name));
        line(&format!("    mode {}", b.mode));
        line("    balance roundrobin");
        if b.mode == Mode::Http {
            line("    option forwardfor");
            line("    http-reuse safe");
        }
        for (i, s) in b.slots.iter().enumerate() {
            let mut text = format!("    server {}", server_name(i));
            match s {
                Some(s) => {
                    let _ = write!(text, " {}", s.addr);
                    if s.state != ServerState::Ready {
                        text.push_str(" disabled");
                    }
                }
                None => text.push_str(" 0.0.0.0:0 disabled"),
            }
            line(&text);
        }
    }
    out
}

/// The routing lines of the HTTP frontend (`tls`: the HTTPS one, which
/// takes the routes of hosts with a certificate): an ACL per route, then
/// each route's backend, [`REDIRECT_HTTPS`] for the routes that ask for
/// it on plain HTTP.
fn routes(line: &mut impl FnMut(&str), plan: &EdgePlan, tls: bool) {
    let taken = |r: &&control::edge::Route| !tls || r.tls;
    for (i, r) in plan.routes.iter().enumerate().filter(|(_, r)| taken(r)) {
        line(&format!(
            "    acl host{i} req.hdr(host),field(1,:),lower -m str {}",
            r.host
        ));
        if r.path != "/" {
            line(&format!("    acl path{i} path -m str {}", r.path));
            line(&format!("    acl under{i} path_beg {}/", r.path));
        }
    }
    let cond = |i: usize, r: &control::edge::Route| {
        if r.path == "/" {
            format!("host{i}")
        } else {
            format!("host{i} path{i} or host{i} under{i}")
        }
    };
    // A redirect is a route's backend, so that the first route that
    // matches decides (a longer path that does not redirect keeps its
    // requests).
    for (i, r) in plan.routes.iter().enumerate().filter(|(_, r)| taken(r)) {
        let backend = if !tls && r.redirect_https {
            REDIRECT_HTTPS
        } else {
            r.backend.as_str()
        };
        line(&format!("    use_backend {backend} if {}", cond(i, r)));
    }
    line(&format!("    default_backend {NO_ROUTE}"));
}

#[cfg(test)]
mod tests {
    /// A redirect to an HTTPS port other than 443 names the port.
    #[test]
    fn a_redirect_to_another_port_names_it() {
        let services = [control::service::Service {
            app: control::app::AppId::resolve(&control::app::AppId::root(), "/web").expect("id"),
            port: 0,
            protocol: control::app::Protocol::Tcp,
            expose: vec![control::app::Exposure::Http {
                host: "web.test".into(),
                path: "/".into(),
                redirect_https: true,
            }],
            vips: vec![],
            checked: true,
            backends: vec![],
        }];
        let plan = control::edge::plan(
            &services,
            control::model::EdgeSettings {
                http_port: 8080,
                https_port: 8443,
            },
            &[("web.test".to_string(), "d1".to_string())].into(),
            None,
        );
        let text = super::render(&plan, &super::EdgePaths::new("/e".into()));
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("redirect") || l.contains("bind") || l.contains("use_backend"))
            .collect();
        expect_test::expect![[r#"
            [
                "    ssl-default-bind-options ssl-min-ver TLSv1.2",
                "    bind :8080",
                "    use_backend strata.redirect-https if host0",
                "backend strata.redirect-https",
                "    http-request redirect prefix https://%[req.hdr(host),field(1,:)]:8443 code 301",
                "    bind :8443 ssl crt /e/certs/d1.pem alpn h2,http/1.1",
                "    use_backend web.p0.http if host0",
            ]
        "#]]
        .assert_debug_eq(&lines);
    }

    use std::path::PathBuf;

    use control::app::{AppId, Exposure, Protocol};
    use control::service::{Backend, BackendState, Service};
    use expect_test::expect;

    use super::*;

    #[test]
    fn routes_tcp_ports_and_slots_render() {
        let backend = |task: &str, addr: &str, state| Backend {
            task: task.into(),
            node: "agent-1".into(),
            addr: addr.parse().expect("addr"),
            state,
        };
        let services = [Service {
            app: AppId::resolve(&AppId::root(), "/shop/web").expect("id"),
            port: 0,
            protocol: Protocol::Tcp,
            expose: vec![
                Exposure::Http {
                    host: "shop.test".into(),
                    path: "/".into(),
                    redirect_https: false,
                },
                Exposure::Http {
                    host: "shop.test".into(),
                    path: "/api".into(),
                    redirect_https: true,
                },
                Exposure::Tcp { port: 10100 },
            ],
            vips: vec![],
            checked: true,
            backends: vec![
                backend("web.1", "10.200.1.2:8080", BackendState::Ready),
                backend("web.2", "10.200.2.2:8080", BackendState::Draining),
            ],
        }];
        let plan = control::edge::plan(
            &services,
            control::model::EdgeSettings {
                http_port: 80,
                https_port: 443,
            },
            &[("shop.test".to_string(), "d1".to_string())].into(),
            None,
        );
        let paths = EdgePaths::new(PathBuf::from("/run/strata/edge"));
        expect![[r##"
            # Written by the Strata agent from the cluster's services: do not edit.
            global
                master-worker
                stats socket /run/strata/edge/admin.sock mode 600 level admin expose-fd listeners
                hard-stop-after 15m
                ssl-default-bind-options ssl-min-ver TLSv1.2

            defaults
                timeout connect 5s
                timeout client 60s
                timeout server 60s
                timeout http-request 10s
                timeout queue 10s
                timeout tunnel 1h
                retries 3
                option redispatch 1

            frontend http
                mode http
                bind :80
                option http-keep-alive
                http-request set-header X-Forwarded-Proto http
                acl host0 req.hdr(host),field(1,:),lower -m str shop.test
                acl path0 path -m str /api
                acl under0 path_beg /api/
                acl host1 req.hdr(host),field(1,:),lower -m str shop.test
                use_backend strata.redirect-https if host0 path0 or host0 under0
                use_backend shop.web.p0.http if host1
                default_backend strata.no-route

            backend strata.no-route
                mode http
                http-request return status 404 content-type text/plain string "no app is exposed at this host and path"

            backend strata.redirect-https
                mode http
                http-request redirect prefix https://%[req.hdr(host),field(1,:)] code 301

            frontend https
                mode http
                bind :443 ssl crt /run/strata/edge/certs/d1.pem alpn h2,http/1.1
                option http-keep-alive
                http-request set-header X-Forwarded-Proto https
                acl host0 req.hdr(host),field(1,:),lower -m str shop.test
                acl path0 path -m str /api
                acl under0 path_beg /api/
                acl host1 req.hdr(host),field(1,:),lower -m str shop.test
                use_backend shop.web.p0.http if host0 path0 or host0 under0
                use_backend shop.web.p0.http if host1
                default_backend strata.no-route

            frontend tcp-10100
                mode tcp
                bind :10100
                default_backend shop.web.p0.tcp

            backend shop.web.p0.http
                mode http
                balance roundrobin
                option forwardfor
                http-reuse safe
                server s0 10.200.1.2:8080
                server s1 10.200.2.2:8080 disabled
                server s2 0.0.0.0:0 disabled
                server s3 0.0.0.0:0 disabled
                server s4 0.0.0.0:0 disabled
                server s5 0.0.0.0:0 disabled
                server s6 0.0.0.0:0 disabled
                server s7 0.0.0.0:0 disabled

            backend shop.web.p0.tcp
                mode tcp
                balance roundrobin
                server s0 10.200.1.2:8080
                server s1 10.200.2.2:8080 disabled
                server s2 0.0.0.0:0 disabled
                server s3 0.0.0.0:0 disabled
                server s4 0.0.0.0:0 disabled
                server s5 0.0.0.0:0 disabled
                server s6 0.0.0.0:0 disabled
                server s7 0.0.0.0:0 disabled
        "##]]
        .assert_eq(&render(&plan, &paths));
    }
}
