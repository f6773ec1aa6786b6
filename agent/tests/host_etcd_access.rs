//! etcd is reachable only by the masters: a real etcd (Debian's), run on
//! loopback with the environment a master renders for it
//! (`etcd::render::render`) and the files a master writes
//! (`cluster::master::EtcdPki`), trusts only the etcd CA that masters derive
//! from the cluster CA's key. A node's certificate of the cluster CA, and a
//! master's API certificate (which etcd trusted before), are refused; the
//! master's etcd client certificate works and reads etcd's alarms (NOSPACE
//! here, past a small quota); the peer port serves only the peer
//! certificate. A member that is gone does not fail the calls the client
//! routes to it: they are sent again to the live one.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent::api::tls;
use agent::cluster::master::EtcdPki;
use agent::etcd::render::{self, EtcdPaths};
use agent::etcd::{EtcdConnect, EtcdTls, Store};
use agent::pki::{CERT_LIFETIME, Ca, Issued, NodeKey};
use configs::cluster::ClusterConfig;
use qemu_tests::testenv::{Need, require};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

/// The member's address: loopback, but not 127.0.0.1, on which etcd listens
/// for clients too.
const MEMBER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// etcd's backend quota here: the smallest `cluster.toml` admits.
const QUOTA: u64 = 1 << 20;

/// `GET /version` on etcd's peer port with `cert`, from the member's
/// address (etcd checks that a peer connects from an address its
/// certificate names): the answer, or why there was none.
async fn peer_version(ca_pem: &str, cert: &Issued, port: u16) -> Result<String, String> {
    let config = tls::client_config(ca_pem, Some((&cert.cert_pem, &cert.key_pem)))
        .map_err(|e| e.to_string())?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket
        .bind(SocketAddr::new(IpAddr::V4(MEMBER), 0))
        .map_err(|e| e.to_string())?;
    let tcp = socket
        .connect(SocketAddr::new(IpAddr::V4(MEMBER), port))
        .await
        .map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::try_from(MEMBER.to_string()).map_err(|e| e.to_string())?;
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /version HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    // TLS 1.3: a refused client certificate shows as an alert on the
    // first read, not in the handshake.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) if !answer.is_empty() => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(String::from_utf8_lossy(&answer).to_string())
}

#[test]
fn etcd_admits_only_the_masters() {
    if !require("etcd_admits_only_the_masters", &[Need::Program("etcd")]) {
        return;
    }
    tls::install_default_provider();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (client_port, peer_port) = (common::free_port(), common::free_port());

    // What a master writes: its etcd certificates of the etcd CA, and the
    // environment it renders (on this test's ports).
    let cluster = ClusterConfig::parse(
        "cluster.toml",
        &format!("name = \"acc\"\nmasters = [\"{MEMBER}\"]\n[etcd]\nquota_bytes = {QUOTA}\n"),
    )
    .expect("cluster.toml");
    let me = render::find_me(&cluster, "m1", Some(MEMBER)).expect("a master");
    let paths = EtcdPaths {
        data_dir: dir.join("data"),
        pki_dir: dir.join("pki"),
        env_file: dir.join("etcd.env"),
        dropin: dir.join("50-strata.conf"),
    };
    let ca = Ca::generate("acc").expect("cluster CA");
    let names = [
        MEMBER.to_string(),
        Ipv4Addr::LOCALHOST.to_string(),
        "localhost".to_string(),
    ];
    let pki = EtcdPki::issue(&ca, &me, &names).expect("etcd certificates");
    std::fs::create_dir_all(&paths.pki_dir).expect("pki dir");
    for (path, content) in pki.files(&paths) {
        std::fs::write(&path, content).expect("write");
    }
    let env = render::render(&cluster, &me, &paths)
        .env
        .replace(
            &format!(":{}", render::CLIENT_PORT),
            &format!(":{client_port}"),
        )
        .replace(&format!(":{}", render::PEER_PORT), &format!(":{peer_port}"));
    let vars: Vec<(&str, &str)> = env
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let log = dir.join("etcd.log");
    let file = std::fs::File::create(&log).expect("log file");
    let child = std::process::Command::new("etcd")
        .envs(vars.iter().copied())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start etcd");
    // Killed before the directory goes.
    let etcd = common::Proc { child, log };

    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let endpoint = format!("https://127.0.0.1:{client_port}");
            let connect = |cert: &Issued| EtcdConnect {
                endpoints: vec![endpoint.clone()],
                tls: Some(EtcdTls {
                    ca_pem: pki.ca.cert_pem.clone(),
                    cert_pem: cert.cert_pem.clone(),
                    key_pem: cert.key_pem.clone(),
                }),
            };

            // The master's etcd client: a certificate of the etcd CA.
            let master = Store::connect(&connect(&pki.client))
                .await
                .expect("connect");
            let start = Instant::now();
            loop {
                match master.check_quorum().await {
                    Ok(()) => break,
                    Err(_) if start.elapsed() < Duration::from_secs(30) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!(
                        "etcd did not answer the master's client within 30s: {e}\n{}",
                        etcd.log()
                    ),
                }
            }
            eprintln!(
                "etcd answered the master's client after {:.1}s",
                start.elapsed().as_secs_f64()
            );
            assert!(master.alarms().await.expect("alarms").is_empty());

            // A member that is gone (a master powered off), first in the
            // list: the call sent to it fails before it is sent, is sent
            // again to the live one, and every later call goes there.
            // With etcd-client's own balancing over both, about half of
            // these failed.
            let gone = format!("https://127.0.0.1:{}", common::free_port());
            let both = Store::connect(&EtcdConnect {
                endpoints: vec![gone, endpoint.clone()],
                ..connect(&pki.client)
            })
            .await
            .expect("connect");
            for i in 0..50 {
                both.check_quorum()
                    .await
                    .unwrap_or_else(|e| panic!("call {i} with one member gone: {e}"));
                both.list_prefix("/strata/")
                    .await
                    .unwrap_or_else(|e| panic!("read {i} with one member gone: {e}"));
            }

            // What every node holds: a certificate of the cluster CA. And a
            // master's API certificate, of the same CA, which etcd trusted
            // before the etcd CA.
            let key = NodeKey::generate().expect("node key");
            let node = ca
                .sign_node_csr("agent-1", &key.csr("agent-1").expect("csr"), CERT_LIFETIME)
                .expect("node certificate");
            let node = Issued {
                cert_pem: node.cert_pem,
                key_pem: key.key_pem,
            };
            let api = ca
                .issue_master("m1", &names, CERT_LIFETIME)
                .expect("API certificate");
            for (who, cert) in [
                ("a node's certificate", &node),
                ("a master's API certificate", &api),
            ] {
                let store = Store::connect(&connect(cert)).await.expect("connect");
                match store.check_quorum().await {
                    Ok(()) => panic!("etcd admitted {who} of the cluster CA"),
                    Err(e) => eprintln!("{who} refused: {e}"),
                }
            }
            assert!(
                etcd.log()
                    .contains("certificate signed by unknown authority"),
                "etcd's log does not say why it refused:\n{}",
                etcd.log()
            );

            // The peer port: only the peer certificate speaks raft.
            let answer = peer_version(&pki.ca.cert_pem, &pki.peer, peer_port)
                .await
                .expect("the peer certificate on the peer port");
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            for (who, cert) in [
                ("the master's etcd client certificate", &pki.client),
                ("etcd's server certificate", &pki.server),
            ] {
                let answer = peer_version(&pki.ca.cert_pem, cert, peer_port).await;
                assert!(
                    !answer.as_ref().is_ok_and(|a| a.starts_with("HTTP/1.1 200")),
                    "the peer port served {who}: {answer:?}"
                );
            }

            // Past its quota etcd refuses writes and raises NOSPACE, which
            // the master reads (and `strata cluster status` shows).
            let mut raw = etcd_client::Client::connect(
                [endpoint.as_str()],
                Some(
                    etcd_client::ConnectOptions::new().with_tls(
                        etcd_client::TlsOptions::new()
                            .ca_certificate(etcd_client::Certificate::from_pem(&pki.ca.cert_pem))
                            .identity(etcd_client::Identity::from_pem(
                                &pki.client.cert_pem,
                                &pki.client.key_pem,
                            )),
                    ),
                ),
            )
            .await
            .expect("connect");
            let value = vec![b'x'; 100 << 10];
            let mut refused = None;
            // etcd checks the quota against its database file, which grows
            // when a batch commits (every 100 ms): keep writing until it
            // refuses, or for 30 s.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            let mut i = 0;
            while std::time::Instant::now() < deadline {
                if let Err(e) = raw.put(format!("/fill/{i}"), value.clone(), None).await {
                    refused = Some(e);
                    break;
                }
                i += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            let refused = refused.expect("etcd took every write for 30 s past its quota");
            assert!(
                refused.to_string().contains("database space exceeded"),
                "{refused}"
            );
            assert_eq!(
                master.alarms().await.expect("alarms"),
                [format!("NOSPACE on {}", me.name)]
            );
        });
    drop(etcd);
}
