use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::tls;
use crate::pki::{Ca, NodeKey};

/// A TLS handshake over an in-memory pipe: the master's server config
/// against `client`. Returns the client's error, if any.
async fn handshake(ca: &Ca, client: rustls::ClientConfig) -> Result<(), String> {
    let master = ca
        .issue_master(
            "master-1",
            &["10.9.0.10".to_string()],
            Duration::from_secs(3600),
        )
        .expect("master cert");
    let server =
        tls::server_config(&ca.cert_pem, &master.cert_pem, &master.key_pem).expect("server config");
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server = tokio::spawn(async move {
        let mut s = acceptor.accept(a).await.map_err(|e| e.to_string())?;
        tokio::io::AsyncWriteExt::write_all(&mut s, b"ok")
            .await
            .map_err(|e| e.to_string())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from("10.9.0.10").expect("name");
    let result = async {
        let mut s = connector
            .connect(name, b)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 2];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    let _ = server.await;
    result
}

fn check(ca: &Ca, client: rustls::ClientConfig) -> Result<(), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(handshake(ca, client))
}

#[test]
fn joining_trusts_only_the_pinned_ca() {
    let ca = Ca::generate("t").expect("ca");
    let pin = ca.fingerprint().expect("pin");
    check(&ca, tls::pinned_client_config(&pin).expect("config")).expect("the pinned CA is trusted");
    let other = Ca::generate("other")
        .expect("ca")
        .fingerprint()
        .expect("pin");
    let err =
        check(&ca, tls::pinned_client_config(&other).expect("config")).expect_err("another pin");
    assert!(
        err.contains("does not hold the CA pinned by the join token"),
        "{err}"
    );
}

#[test]
fn nodes_trust_the_cluster_ca_and_the_master_checks_theirs() {
    let ca = Ca::generate("t").expect("ca");
    check(&ca, tls::client_config(&ca.cert_pem, None).expect("config"))
        .expect("CLI without a client cert");
    let key = NodeKey::generate().expect("key");
    let node = ca
        .sign_node_csr(
            "agent-1",
            &key.csr("agent-1").expect("csr"),
            Duration::from_secs(60),
        )
        .expect("sign");
    let with_cert =
        tls::client_config(&ca.cert_pem, Some((&node.cert_pem, &key.key_pem))).expect("config");
    check(&ca, with_cert).expect("a node certificate of this cluster");
    let foreign = Ca::generate("other").expect("ca");
    let err = check(
        &ca,
        tls::client_config(&foreign.cert_pem, None).expect("config"),
    )
    .expect_err("other CA");
    assert!(err.contains("UnknownIssuer"), "{err}");
}
