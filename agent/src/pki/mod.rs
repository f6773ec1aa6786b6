//! The cluster's public-key infrastructure: the cluster CA (P-256, made by
//! `strata cluster init`), certificates the masters issue from it (their own
//! API and etcd certificates, node certificates from a join), the join token
//! that pins the CA's hash, and the CLI's bearer token. Pure apart from the
//! system random number generator.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use ring::rand::SecureRandom;
use x509_parser::prelude::FromDer;

/// Prefix and version of join tokens.
pub const JOIN_TOKEN_PREFIX: &str = "strata-join.v1.";
/// Prefix and version of CLI bearer tokens.
pub const CLI_TOKEN_PREFIX: &str = "strata-cli.v1.";
/// The CA is valid for ten years.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates a master issues are valid for one year.
pub const CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// What can go wrong with keys, certificates and tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot make a certificate or key: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{what} is not a PEM certificate: {reason}")]
    BadCert { what: String, reason: String },
    #[error(
        "join token is malformed, expected `{JOIN_TOKEN_PREFIX}<64 hex digits of the CA's sha256>.<secret>` as printed by `strata cluster init`"
    )]
    BadToken,
    #[error("the system random number generator failed")]
    Random,
}

/// Hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::Random)?;
    Ok(hex::encode(buf))
}

/// The cluster CA: certificate and key, both PEM.
#[derive(Debug, Clone)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate and its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

fn not_before_after(lifetime: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    // Back-date by an hour so that small clock differences between nodes do
    // not make a fresh certificate "not yet valid".
    let now = time::OffsetDateTime::now_utc();
    (now - time::Duration::hours(1), now + lifetime)
}

impl Ca {
    /// Makes a new self-signed CA for cluster `cluster`.
    pub fn generate(cluster: &str) -> Result<Ca, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("strata cluster CA {cluster}"));
        dn.push(DnType::OrganizationName, "strata");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = not_before_after(CA_LIFETIME);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The hex sha256 of the CA certificate's DER: what join tokens pin.
    pub fn fingerprint(&self) -> Result<String, Error> {
        cert_fingerprint(&self.cert_pem, "the cluster CA")
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, Error> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }

    /// Issues a server and client certificate (with a fresh key) for a
    /// master: the API, etcd's client and peer ports and the master's own
    /// etcd client all use it. `names` are DNS names or IP addresses.
    pub fn issue_master(
        &self,
        node: &str,
        names: &[String],
        lifetime: Duration,
    ) -> Result<Issued, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let params = leaf_params(node, names, true, lifetime)?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a node's certificate signing request. Only the request's public
    /// key is used; the name and usages are the master's choice.
    pub fn sign_node_csr(
        &self,
        node: &str,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<SignedNode, Error> {
        let (not_before, not_after) = not_before_after(lifetime);
        self.sign_node_csr_between(node, csr_pem, not_before.into(), not_after.into())
    }

    /// [`Ca::sign_node_csr`] with an explicit validity period.
    pub fn sign_node_csr_between(
        &self,
        node: &str,
        csr_pem: &str,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<SignedNode, Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = leaf_params(node, &[node.to_string()], false, CERT_LIFETIME)?;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&csr.public_key, &self.issuer()?)?;
        let cert_pem = cert.pem();
        let info = CertInfo::parse(&cert_pem, "the new node certificate")?;
        Ok(SignedNode {
            cert_pem,
            key_sha256: info.key_sha256,
        })
    }
}

/// A node certificate the CA signed.
#[derive(Debug, Clone)]
pub struct SignedNode {
    pub cert_pem: String,
    /// Hex sha256 of the node's public key: its identity.
    pub key_sha256: String,
}

fn leaf_params(
    node: &str,
    names: &[String],
    server: bool,
    lifetime: Duration,
) -> Result<CertificateParams, Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node);
    dn.push(DnType::OrganizationName, "strata");
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    if server {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = not_before_after(lifetime);
    Ok(params)
}

/// A node's own key and its certificate signing request.
#[derive(Debug, Clone)]
pub struct NodeKey {
    pub key_pem: String,
}

impl NodeKey {
    pub fn generate() -> Result<NodeKey, Error> {
        Ok(NodeKey {
            key_pem: KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?.serialize_pem(),
        })
    }

    /// A certificate signing request for `node`, signed with this key.
    pub fn csr(&self, node: &str) -> Result<String, Error> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node);
        params.distinguished_name = dn;
        Ok(params.serialize_request(&key)?.pem()?)
    }

    /// Hex sha256 of the public key, as [`CertInfo::key_sha256`] computes it.
    pub fn public_sha256(&self) -> Result<String, Error> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(sha256_hex(key.public_key_raw()))
    }
}

/// What Strata reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name: the node name.
    pub common_name: String,
    pub not_after: SystemTime,
    /// Hex sha256 of the subject's public key (the raw key bits).
    pub key_sha256: String,
}

impl CertInfo {
    /// Parses the first certificate of `pem`; `what` names it in errors.
    pub fn parse(pem: &str, what: &str) -> Result<CertInfo, Error> {
        let der = first_der(pem, what)?;
        CertInfo::from_der(&der, what)
    }

    pub fn from_der(der: &[u8], what: &str) -> Result<CertInfo, Error> {
        let bad = |reason: String| Error::BadCert {
            what: what.to_string(),
            reason,
        };
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|e| bad(e.to_string()))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .ok_or_else(|| bad("it has no common name".to_string()))?
            .to_string();
        let secs = cert.validity().not_after.timestamp();
        let not_after =
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        let key_sha256 = sha256_hex(&cert.public_key().subject_public_key.data);
        Ok(CertInfo {
            common_name,
            not_after,
            key_sha256,
        })
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// The DER bytes of the first certificate in `pem`.
pub fn first_der(pem: &str, what: &str) -> Result<Vec<u8>, Error> {
    all_ders(pem, what)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::BadCert {
            what: what.to_string(),
            reason: "no CERTIFICATE block found".to_string(),
        })
}

/// The DER bytes of every certificate in `pem`.
pub fn all_ders(pem: &str, what: &str) -> Result<Vec<Vec<u8>>, Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadCert {
            what: what.to_string(),
            reason: e.to_string(),
        })
}

/// Hex sha256 of the DER of the first certificate in `pem`.
pub fn cert_fingerprint(pem: &str, what: &str) -> Result<String, Error> {
    Ok(sha256_hex(&first_der(pem, what)?))
}

/// A parsed join token: the pinned CA hash and the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Hex sha256 of the CA certificate's DER.
    pub ca_sha256: String,
    pub secret: String,
}

impl JoinToken {
    /// A new token for the CA with fingerprint `ca_sha256`.
    pub fn generate(ca_sha256: &str) -> Result<JoinToken, Error> {
        Ok(JoinToken {
            ca_sha256: ca_sha256.to_string(),
            secret: random_hex(24)?,
        })
    }

    pub fn parse(text: &str) -> Result<JoinToken, Error> {
        let rest = text
            .trim()
            .strip_prefix(JOIN_TOKEN_PREFIX)
            .ok_or(Error::BadToken)?;
        let (ca, secret) = rest.split_once('.').ok_or(Error::BadToken)?;
        let hex_ok = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        };
        if ca.len() != 64 || !hex_ok(ca) || secret.len() < 16 || !hex_ok(secret) {
            return Err(Error::BadToken);
        }
        Ok(JoinToken {
            ca_sha256: ca.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The hash of the secret: the only form a master keeps.
    pub fn secret_sha256(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{JOIN_TOKEN_PREFIX}{}.{}", self.ca_sha256, self.secret)
    }
}

/// A new CLI bearer token.
pub fn generate_cli_token() -> Result<String, Error> {
    Ok(format!("{CLI_TOKEN_PREFIX}{}", random_hex(32)?))
}

#[cfg(test)]
mod tests;
