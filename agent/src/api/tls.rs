//! TLS settings of the API (rustls with ring): the masters' server config
//! (mutual TLS optional, so the CLI's bearer token and the join call work
//! without a client certificate), and the clients' configs: one that trusts
//! the cluster CA, and one for joining that trusts only a CA whose hash the
//! join token pins.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::pki;

/// TLS setup errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The crypto provider everything here uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide default provider (for etcd-client's TLS).
pub fn install_default_provider() {
    // An error means a provider is installed already, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Pem {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what: what.to_string(),
            reason: "no CERTIFICATE block".to_string(),
        });
    }
    Ok(certs)
}

fn key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Pem {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, Error> {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem, "the cluster CA")? {
        roots.add(c)?;
    }
    Ok(Arc::new(roots))
}

/// The masters' server config: presents `cert_pem` followed by the CA (so
/// joining nodes can find the CA the token pins), and verifies client
/// certificates against the CA when a client presents one.
pub fn server_config(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<ServerConfig, Error> {
    server_config_with(ca_pem, ServerCert::new(ca_pem, cert_pem, key_pem)?)
}

/// [`server_config`] presenting what `cert` holds at each handshake: a
/// master replaces its certificate there without restarting its server.
pub fn server_config_with(ca_pem: &str, cert: Arc<ServerCert>) -> Result<ServerConfig, Error> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A master's API certificate (with the CA after it), replaceable while
/// the server runs: new handshakes present the new one, connections open
/// keep theirs.
#[derive(Debug)]
pub struct ServerCert(std::sync::RwLock<Arc<CertifiedKey>>);

impl ServerCert {
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<ServerCert>, Error> {
        Ok(Arc::new(ServerCert(std::sync::RwLock::new(certified(
            ca_pem, cert_pem, key_pem,
        )?))))
    }

    /// Presents `cert_pem` from the next handshake on.
    pub fn set(&self, ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<(), Error> {
        let new = certified(ca_pem, cert_pem, key_pem)?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = new;
        Ok(())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn certified(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, Error> {
    let mut chain = certs(cert_pem, "the master's API certificate")?;
    chain.extend(certs(ca_pem, "the cluster CA")?);
    let key = provider()
        .key_provider
        .load_private_key(key(key_pem, "the master's API key")?)?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| Error::Pem {
        what: "the master's API key".to_string(),
        reason: e.to_string(),
    })?;
    Ok(Arc::new(certified))
}

/// A client that trusts the cluster CA, optionally with a client
/// certificate (nodes) or without (the CLI, which sends a bearer token).
pub fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<ClientConfig, Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?);
    Ok(match identity {
        Some((cert, k)) => builder.with_client_auth_cert(
            certs(cert, "the node certificate")?,
            key(k, "the node key")?,
        )?,
        None => builder.with_no_client_auth(),
    })
}

/// A client for joining: it has no CA yet, only the CA's hash from the
/// token. The server must send the pinned CA in its chain and its
/// certificate must verify against that CA.
pub fn pinned_client_config(ca_sha256: &str) -> Result<ClientConfig, Error> {
    let verifier = Verifier {
        accept: Accept::PinnedCa(ca_sha256.to_string()),
        provider: provider(),
    };
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The TLS of HTTPS health checks: as Mesos' HTTPS checks, any server
/// certificate is accepted (a task's certificate names what its clients
/// ask for, never the address the node checks), but the handshake's
/// signatures are verified against it.
pub fn health_check_client_config() -> Result<ClientConfig, Error> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier {
            accept: Accept::Any,
            provider: provider(),
        }))
        .with_no_client_auth())
}

/// A server certificate verifier whose handshake signatures are always
/// checked, and whose certificate is accepted as `accept` says.
#[derive(Debug)]
struct Verifier {
    accept: Accept,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum Accept {
    /// A certificate that verifies against the CA of this sha256, which
    /// the server's chain must hold (joining with a token).
    PinnedCa(String),
    /// Any certificate (HTTPS health checks).
    Any,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca_sha256 = match &self.accept {
            Accept::Any => return Ok(ServerCertVerified::assertion()),
            Accept::PinnedCa(sha) => sha,
        };
        let ca = intermediates.iter().find(|c| pki::sha256_hex(c) == *ca_sha256).ok_or_else(|| {
            rustls::Error::General(format!(
                "the master's certificate chain does not hold the CA pinned by the join token (sha256 {ca_sha256}): wrong cluster or wrong token"
            ))
        })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
