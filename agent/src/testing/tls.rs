//! Certificates and an HTTPS client for the tests of the edge's TLS: a
//! throwaway CA that issues host certificates ([`TestCa`]), and one
//! `GET` over TLS that trusts only that CA ([`https_get`]).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

/// A CA made for one test.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> anyhow::Result<TestCa> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A certificate for `names` with its chain (the CA) and key, as
    /// `strata edge cert set` takes it.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<String> {
        let key = KeyPair::generate()?;
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(format!(
            "{}{}{}",
            cert.pem(),
            self.cert_pem,
            key.serialize_pem()
        ))
    }
}

/// What [`https_get`] got: the status code, the body (trimmed), the
/// `Location` header, and the DER of the certificate the server showed.
#[derive(Debug)]
pub struct HttpsAnswer {
    pub code: u16,
    pub body: String,
    pub location: Option<String>,
    pub peer: Vec<u8>,
}

/// One `GET path` for `host` (also the TLS server name) over TLS on a new
/// connection to `addr`, trusting only `ca_pem`.
pub fn https_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    ca_pem: &str,
) -> anyhow::Result<HttpsAnswer> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from(host.to_string())?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    // HAProxy may close without a TLS close_notify once it answered.
    if let Err(e) = tls.read_to_end(&mut raw)
        && e.kind() != std::io::ErrorKind::UnexpectedEof
    {
        return Err(e.into());
    }
    let peer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let (code, body, location) = parse_answer(&String::from_utf8_lossy(&raw));
    Ok(HttpsAnswer {
        code,
        body,
        location,
        peer,
    })
}

/// The status code, body and `Location` of an HTTP/1.1 answer.
pub fn parse_answer(answer: &str) -> (u16, String, Option<String>) {
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    let location = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    (code, body.trim().to_string(), location)
}

/// One plain `GET` (no redirect followed): status, body and `Location`.
pub fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<(u16, String, Option<String>)> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    tcp.read_to_string(&mut raw)?;
    Ok(parse_answer(&raw))
}
