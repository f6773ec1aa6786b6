//! Discovery against fake system paths (real files in a temporary
//! directory), a real HTTP server on loopback for the URL and cloud
//! providers, and snapshots of the rendered networkd files.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use configs::user_data::{Network, UserData};
use expect_test::{Expect, expect};

use crate::{Bootstrap, apply_network, http};

const FW_CFG_RAW: &str = "sys/firmware/qemu_fw_cfg/by_name/opt/strata/user-data/raw";
const CMDLINE: &str = "proc/cmdline";

fn user_data(name: &str) -> String {
    format!(
        "cluster = \"demo\"\nname = \"{name}\"\nrole = \"private\"\nmasters = [\"10.9.0.10:6443\"]\njoin_token = \"t\"\n\
         [network]\naddress = \"10.9.0.21/24\"\ngateway = \"10.9.0.1\"\n"
    )
}

/// A bootstrap whose every path is in a temporary directory and whose cloud
/// endpoints are a closed loopback port, unless a test says otherwise.
struct Env {
    tmp: tempfile::TempDir,
    boot: Bootstrap,
    /// Text replaced in the output so snapshots are stable.
    redact: Vec<(String, &'static str)>,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let closed = SocketAddr::from(([127, 0, 0, 1], 1));
        let boot = Bootstrap {
            state_dir: tmp.path().join("var/lib/strata"),
            fw_cfg_root: tmp.path().join("sys/firmware/qemu_fw_cfg"),
            load_fw_cfg_module: false,
            by_label_dir: tmp.path().join("dev/disk/by-label"),
            cmdline_path: tmp.path().join(CMDLINE),
            ec2_endpoint: closed,
            gce_endpoint: closed,
            cloud_connect_timeout: Duration::from_secs(1),
            cloud_io_timeout: Duration::from_secs(2),
            url_timeout: Duration::from_secs(2),
        };
        let redact = vec![(tmp.path().display().to_string(), "$TMP")];
        Env { tmp, boot, redact }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create parent");
        std::fs::write(path, text).expect("write fake file");
    }

    fn ec2(&mut self, server: &Server) {
        self.boot.ec2_endpoint = server.addr;
        self.redact.push((server.addr.to_string(), "$EC2"));
    }

    fn gce(&mut self, server: &Server) {
        self.boot.gce_endpoint = server.addr;
        self.redact.push((server.addr.to_string(), "$GCE"));
    }

    fn redacted(&self, text: &str) -> String {
        self.redact
            .iter()
            .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
    }
}

/// Runs `setup` on a fresh [`Env`], discovers, and compares the outcome (the
/// source and node, or the error) and the state directory's files and modes
/// with `expected`. What was kept must parse to what was discovered.
fn check(setup: impl FnOnce(&mut Env), expected: Expect) {
    let mut env = Env::new();
    setup(&mut env);
    let mut actual = match env.boot.discover() {
        Ok(d) => {
            let kept = std::fs::read_to_string(env.boot.state_file()).expect("user-data kept");
            let kept = UserData::parse("kept", &kept).expect("kept user-data parses");
            assert_eq!(kept, d.user_data, "kept what was discovered");
            format!(
                "source: {}\nnode: {} ({})\n",
                d.source, d.user_data.name, d.user_data.role
            )
        }
        Err(e) => format!("error: {e}\n"),
    };
    let mut state: Vec<String> = std::fs::read_dir(&env.boot.state_dir)
        .map(|dir| {
            dir.map(|e| {
                let e = e.expect("state dir entry");
                let mode = e.metadata().expect("metadata").permissions().mode() & 0o777;
                format!("{} {mode:o}", e.file_name().to_string_lossy())
            })
            .collect()
        })
        .unwrap_or_default();
    state.sort();
    if state.is_empty() {
        state.push("empty".into());
    }
    actual.push_str(&format!("state: {}\n", state.join(", ")));
    expected.assert_eq(&env.redacted(&actual));
}

#[test]
fn fw_cfg_is_found_and_kept() {
    check(
        |env| env.write(FW_CFG_RAW, &user_data("from-fw-cfg")),
        expect![[r#"
            source: fw_cfg:opt/strata/user-data
            node: from-fw-cfg (private)
            state: user-data.toml 600
        "#]],
    );
}

#[test]
fn kept_state_is_preferred() {
    check(
        |env| {
            env.write(FW_CFG_RAW, &user_data("from-fw-cfg"));
            env.write("var/lib/strata/user-data.toml", &user_data("kept"));
        },
        expect![[r#"
            source: state:$TMP/var/lib/strata/user-data.toml
            node: kept (private)
            state: user-data.toml 644
        "#]],
    );
}

#[test]
fn later_boots_need_no_provider() {
    check(
        |env| {
            env.write(FW_CFG_RAW, &user_data("first-boot"));
            let first = env.boot.discover().expect("first boot finds fw_cfg");
            assert_eq!(first.source, "fw_cfg:opt/strata/user-data");
            std::fs::remove_dir_all(env.path("sys")).expect("remove fake fw_cfg");
        },
        expect![[r#"
            source: state:$TMP/var/lib/strata/user-data.toml
            node: first-boot (private)
            state: user-data.toml 600
        "#]],
    );
}

#[test]
fn keeping_replaces_a_leftover_temporary_file() {
    check(
        |env| {
            env.write(FW_CFG_RAW, &user_data("from-fw-cfg"));
            env.write("var/lib/strata/user-data.toml.tmp", "half written");
            let tmp = env.path("var/lib/strata/user-data.toml.tmp");
            std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        },
        expect![[r#"
            source: fw_cfg:opt/strata/user-data
            node: from-fw-cfg (private)
            state: user-data.toml 600
        "#]],
    );
}

#[test]
fn empty_user_data_goes_to_the_next_provider() {
    check(
        |env| {
            env.write(FW_CFG_RAW, "\n");
            env.write("boot/ud.toml", &user_data("from-file"));
            let line = format!(
                "strata.user_data=file://{}\n",
                env.path("boot/ud.toml").display()
            );
            env.write(CMDLINE, &line);
        },
        expect![[r#"
            source: url:file://$TMP/boot/ud.toml
            node: from-file (private)
            state: user-data.toml 600
        "#]],
    );
}

#[test]
fn cmdline_file_url() {
    check(
        |env| {
            env.write("boot/ud.toml", &user_data("from-file"));
            let line = format!(
                "console=ttyS0 strata.user_data=file://{} quiet\n",
                env.path("boot/ud.toml").display()
            );
            env.write(CMDLINE, &line);
        },
        expect![[r#"
            source: url:file://$TMP/boot/ud.toml
            node: from-file (private)
            state: user-data.toml 600
        "#]],
    );
}

#[test]
fn cmdline_http_url() {
    let server = Server::start(|req| match req.path.as_str() {
        "/nodes/a.toml" => reply(200, &[], &user_data("from-http")),
        _ => reply(404, &[], ""),
    });
    check(
        |env| {
            env.redact.push((server.addr.to_string(), "$HTTP"));
            env.write(
                CMDLINE,
                &format!("ro strata.user_data=http://{}/nodes/a.toml\n", server.addr),
            );
        },
        expect![[r#"
            source: url:http://$HTTP/nodes/a.toml
            node: from-http (private)
            state: user-data.toml 600
        "#]],
    );
    check(
        |env| {
            env.redact.push((server.addr.to_string(), "$HTTP"));
            env.write(
                CMDLINE,
                &format!(
                    "ro strata.user_data=http://{}/nodes/missing.toml\n",
                    server.addr
                ),
            );
        },
        expect![[r#"
            error: url:http://$HTTP/nodes/missing.toml: HTTP status 404
            state: empty
        "#]],
    );
    check(
        |env| env.write(CMDLINE, "strata.user_data=https://example.com/a.toml\n"),
        expect![[r#"
            error: url:https://example.com/a.toml: unsupported URL, expected http:// or file://
            state: empty
        "#]],
    );
}

#[test]
fn invalid_user_data_names_its_source() {
    // The command line has valid data, but fw_cfg comes first and is wrong:
    // discovery stops there instead of using another configuration.
    check(
        |env| {
            env.write(FW_CFG_RAW, &user_data("Bad_Name"));
            env.write("boot/ud.toml", &user_data("good"));
            env.write(
                CMDLINE,
                &format!(
                    "strata.user_data=file://{}\n",
                    env.path("boot/ud.toml").display()
                ),
            );
        },
        expect![[r#"
            error: invalid user-data: fw_cfg:opt/strata/user-data:2:8: field `name`: `Bad_Name` is not a valid name, expected 1 to 63 of a-z, 0-9 and `-`, not starting or ending with `-`
            state: empty
        "#]],
    );
    check(
        |env| {
            env.write(
                "var/lib/strata/user-data.toml",
                "cluster = \"demo\"\nname = \n",
            )
        },
        expect![[r#"
            error: invalid user-data: state:$TMP/var/lib/strata/user-data.toml:2:8: field `name`: string values must be quoted, expected literal string
            state: user-data.toml 644
        "#]],
    );
}

#[test]
fn nothing_found_lists_every_provider() {
    check(
        |env| {
            std::fs::create_dir_all(env.path("sys/firmware/qemu_fw_cfg/by_name"))
                .expect("fake fw_cfg root");
            std::fs::create_dir_all(env.path("dev/disk/by-label")).expect("fake by-label dir");
            env.write(CMDLINE, "console=ttyS0 ro\n");
        },
        expect![[r#"
            error: no user-data found, tried:
              fw_cfg:opt/strata/user-data: no $TMP/sys/firmware/qemu_fw_cfg/by_name/opt/strata/user-data/raw
              label:STRATA-CFG: no $TMP/dev/disk/by-label/STRATA-CFG
              cmdline: no strata.user_data=URL in $TMP/proc/cmdline
              ec2-imds: no answer from 127.0.0.1:1: Connection refused (os error 111)
              gce-metadata: no answer from 127.0.0.1:1: Connection refused (os error 111)
            state: empty
        "#]],
    );
}

#[test]
fn label_that_cannot_be_resolved_is_an_error() {
    check(
        |env| {
            std::fs::create_dir_all(env.path("dev/disk/by-label")).expect("fake by-label dir");
            std::os::unix::fs::symlink("../../loop-gone", env.path("dev/disk/by-label/STRATA-CFG"))
                .expect("symlink");
        },
        expect![[r#"
            error: label:STRATA-CFG: cannot resolve $TMP/dev/disk/by-label/STRATA-CFG: No such file or directory (os error 2)
            state: empty
        "#]],
    );
}

const TOKEN: &str = "AQAEAFTokenFromTheTest==";

/// EC2 IMDSv2 as documented: a token from `PUT /latest/api/token` (which
/// needs the TTL header), required on every GET.
fn imds(req: &Req, user_data: Option<&str>) -> String {
    match (req.method.as_str(), req.path.as_str()) {
        ("PUT", "/latest/api/token") => match req.header("X-aws-ec2-metadata-token-ttl-seconds") {
            Some(ttl) if ttl.parse::<u32>().is_ok_and(|t| (1..=21600).contains(&t)) => {
                reply(200, &[], TOKEN)
            }
            _ => reply(400, &[], ""),
        },
        ("GET", _) if req.header("X-aws-ec2-metadata-token") != Some(TOKEN) => reply(401, &[], ""),
        ("GET", "/latest/user-data") => match user_data {
            Some(text) => reply(200, &[], text),
            None => reply(404, &[], ""),
        },
        _ => reply(404, &[], ""),
    }
}

/// The GCE metadata server: `Metadata-Flavor: Google` both ways, and a
/// chunked body as a real HTTP/1.1 server may send.
fn gce_metadata(req: &Req, user_data: Option<&str>) -> String {
    let flavor = &[("Metadata-Flavor", "Google")];
    if req.header("Metadata-Flavor") != Some("Google") {
        return reply(403, flavor, "");
    }
    match (req.path.as_str(), user_data) {
        ("/computeMetadata/v1/instance/attributes/user-data", Some(text)) => {
            let (a, b) = text.split_at(text.len() / 2);
            format!(
                "HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
                a.len(),
                b.len()
            )
        }
        _ => reply(404, flavor, ""),
    }
}

#[test]
fn ec2_imdsv2() {
    let ec2 = Server::start(|req| imds(req, Some(&user_data("from-ec2"))));
    check(
        |env| env.ec2(&ec2),
        expect![[r#"
            source: ec2-imds
            node: from-ec2 (private)
            state: user-data.toml 600
        "#]],
    );
    // The client sent the TTL header and then the token: the server refuses
    // anything else.
    expect![[r#"
        PUT /latest/api/token
        Host: 127.0.0.1
        Connection: close
        Content-Length: 0
        X-aws-ec2-metadata-token-ttl-seconds: 300

        GET /latest/user-data
        Host: 127.0.0.1
        Connection: close
        X-aws-ec2-metadata-token: AQAEAFTokenFromTheTest==
    "#]]
    .assert_eq(&ec2.log());
}

#[test]
fn gce_metadata_after_ec2_without_user_data() {
    let ec2 = Server::start(|req| imds(req, None));
    let gce = Server::start(|req| gce_metadata(req, Some(&user_data("from-gce"))));
    check(
        |env| {
            env.ec2(&ec2);
            env.gce(&gce);
        },
        expect![[r#"
            source: gce-metadata
            node: from-gce (private)
            state: user-data.toml 600
        "#]],
    );
    expect![[r#"
        GET /computeMetadata/v1/instance/attributes/user-data
        Host: metadata.google.internal
        Connection: close
        Metadata-Flavor: Google
    "#]]
    .assert_eq(&gce.log());
}

#[test]
fn cloud_without_user_data() {
    // EC2 without user-data; at the GCE address an IMDSv2 server, which
    // answers 401 and is no GCE metadata server.
    let ec2 = Server::start(|req| imds(req, None));
    check(
        |env| {
            env.ec2(&ec2);
            env.gce(&ec2);
        },
        expect![[r#"
            error: no user-data found, tried:
              fw_cfg:opt/strata/user-data: no $TMP/sys/firmware/qemu_fw_cfg
              label:STRATA-CFG: no $TMP/dev/disk/by-label/STRATA-CFG
              cmdline: no $TMP/proc/cmdline
              ec2-imds: the instance has no user-data
              gce-metadata: $EC2 is not a GCE metadata server (HTTP status 401)
            state: empty
        "#]],
    );
    // At the EC2 address a GCE metadata server, which refuses the token
    // request; the same server has no user-data for GCE.
    let gce = Server::start(|req| gce_metadata(req, None));
    check(
        |env| {
            env.ec2(&gce);
            env.gce(&gce);
        },
        expect![[r#"
            error: no user-data found, tried:
              fw_cfg:opt/strata/user-data: no $TMP/sys/firmware/qemu_fw_cfg
              label:STRATA-CFG: no $TMP/dev/disk/by-label/STRATA-CFG
              cmdline: no $TMP/proc/cmdline
              ec2-imds: $EC2 refused an IMDSv2 token: HTTP status 403
              gce-metadata: the instance has no user-data attribute
            state: empty
        "#]],
    );
}

#[test]
fn fake_servers_refuse_requests_without_their_headers() {
    let ec2 = Server::start(|req| imds(req, Some("x")));
    let gce = Server::start(|req| gce_metadata(req, Some("x")));
    let get = |addr, path| {
        let req = http::Request {
            method: "GET",
            host: "test",
            path,
            headers: &[],
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
        };
        http::send(addr, &req).expect("fake server answers").status
    };
    assert_eq!(get(ec2.addr, "/latest/user-data"), 401);
    assert_eq!(
        get(
            gce.addr,
            "/computeMetadata/v1/instance/attributes/user-data"
        ),
        403
    );
}

fn check_network(network: Network, expected: Expect) {
    let plan = apply_network(&network);
    expected.assert_eq(&format!("{}\n{}", plan.path.display(), plan.contents));
}

#[test]
fn network_files() {
    check_network(
        Network::default(),
        expect![[r#"
            /run/systemd/network/10-strata.network
            # Written by strata from the node's user-data at every boot.
            [Match]
            Name=en* eth*
            Type=ether

            [Network]
            DHCP=ipv4
            LinkLocalAddressing=no
            IPv6AcceptRA=no
        "#]],
    );
    check_network(
        Network {
            interface: Some("ens4".into()),
            address: Some("10.9.0.21/24".parse().expect("cidr")),
            gateway: Some([10, 9, 0, 1].into()),
            dns: vec![[10, 9, 0, 1].into(), [1, 1, 1, 1].into()],
        },
        expect![[r#"
            /run/systemd/network/10-strata.network
            # Written by strata from the node's user-data at every boot.
            [Match]
            Name=ens4

            [Network]
            Address=10.9.0.21/24
            Gateway=10.9.0.1
            DNS=10.9.0.1
            DNS=1.1.1.1
            LinkLocalAddressing=no
            IPv6AcceptRA=no
        "#]],
    );
    check_network(
        Network {
            interface: None,
            address: Some("10.9.0.22/24".parse().expect("cidr")),
            gateway: None,
            dns: vec![],
        },
        expect![[r#"
            /run/systemd/network/10-strata.network
            # Written by strata from the node's user-data at every boot.
            [Match]
            Name=en* eth*
            Type=ether

            [Network]
            Address=10.9.0.22/24
            LinkLocalAddressing=no
            IPv6AcceptRA=no
        "#]],
    );
}

#[test]
fn http_bodies() {
    let parse = |raw: &str| match http::parse(raw.as_bytes()) {
        Ok(r) => format!("{} {:?}", r.status, String::from_utf8_lossy(&r.body)),
        Err(e) => format!("error: {e}"),
    };
    expect![[r#"200 "abc""#]]
        .assert_eq(&parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef"));
    expect![[r#"200 "hello world""#]].assert_eq(&parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"));
    expect![[r#"404 """#]].assert_eq(&parse("HTTP/1.0 404 Not Found\r\n\r\n"));
    expect!["error: response body shorter than its content-length"]
        .assert_eq(&parse("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"));
    expect!["error: bad status line `SSH-2.0-OpenSSH`"]
        .assert_eq(&parse("SSH-2.0-OpenSSH\r\n\r\n"));
    expect!["error: truncated chunk"].assert_eq(&parse(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nshort",
    ));
}

/// A request as the test server saw it.
struct Req {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> String {
    let mut r = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    format!("{r}\r\n{body}")
}

/// A real HTTP server on 127.0.0.1, one thread, one request per connection;
/// it keeps the head of every request it served.
struct Server {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(handler: impl Fn(&Req) -> String + Send + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).trim_end().to_string();
                let mut lines = head.lines();
                let mut first = lines.next().unwrap_or_default().split(' ');
                let req = Req {
                    method: first.next().unwrap_or_default().to_string(),
                    path: first.next().unwrap_or_default().to_string(),
                    headers: lines
                        .filter_map(|l| l.split_once(':'))
                        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                        .collect(),
                };
                log2.lock()
                    .expect("log lock")
                    .push(head.replace(" HTTP/1.1", "").replace("\r\n", "\n"));
                let _ = stream.write_all(handler(&req).as_bytes());
            }
        });
        Server {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// Every request head served so far, blank-line separated.
    fn log(&self) -> String {
        self.log.lock().expect("log lock").join("\n\n") + "\n"
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
