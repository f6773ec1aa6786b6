//! The cluster's public-key infrastructure: the cluster CA (P-256, made by
//! `strata cluster init`), certificates the masters issue from it (their own
//! API certificates, node certificates from a join), the etcd CA that every
//! master derives from the cluster CA's key ([`Ca::etcd_ca`]) and the etcd
//! certificates it issues, the join token that pins the CA's hash, and the
//! CLI's bearer token. Pure apart from the system random number generator.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use x509_parser::prelude::FromDer;

pub mod edge;

/// Prefix and version of join tokens.
pub const JOIN_TOKEN_PREFIX: &str = "strata-join.v1.";
/// Prefix and version of CLI bearer tokens.
pub const CLI_TOKEN_PREFIX: &str = "strata-cli.v1.";
/// The CA is valid for ten years.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Certificates a master issues are valid for one year.
pub const CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Lifetime of a master's own etcd client certificate: the CA's. It never
/// leaves the master's memory (no file holds it), a new one is made at
/// every start, and the running client cannot take another, so it must
/// outlive any uptime; the certificates etcd presents and reads from files
/// are rotated instead (`strata cluster rotate-certs`).
pub const ETCD_CLIENT_LIFETIME: Duration = CA_LIFETIME;

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
    #[error("cannot derive the etcd CA from the cluster CA: {0}")]
    EtcdCa(String),
}

/// The common name of etcd's peer certificates: etcd's members accept a
/// peer only with this name (`ETCD_PEER_CERT_ALLOWED_CN`), so a master's
/// etcd client or server certificate cannot speak raft.
pub const ETCD_PEER_CN: &str = "strata-etcd-peer";

/// What the etcd CA derivation feeds HKDF as its info: a new derivation
/// (another key type, other fields) takes a new version.
const ETCD_CA_LABEL: &[u8] = b"strata etcd ca v1";

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
    Ok(hex::encode(random_bytes(n)?))
}

fn random_bytes(n: usize) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::Random)?;
    Ok(buf)
}

/// A random serial number of 16 bytes, positive. rcgen's default serial is
/// a hash of the subject's public key, so every certificate of one key
/// (a node that joins again, a renewal) would carry the same serial.
fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = random_bytes(16)?;
    // Positive, and no leading zero byte to strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
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

/// How far a new certificate's validity starts before its signing, so that
/// small clock differences between nodes do not make a fresh certificate
/// "not yet valid".
pub const BACKDATE: Duration = Duration::from_secs(3600);

fn not_before_after(lifetime: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    (now - BACKDATE, now + lifetime)
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
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The etcd CA of this cluster CA: the only CA etcd trusts, on its
    /// client and peer ports. It is derived from the cluster CA's private
    /// key, so every master (each holds that key) derives the same one, and
    /// nothing that holds only a certificate of the cluster CA (a node) can
    /// get a certificate etcd accepts.
    ///
    /// Its key is an Ed25519 key whose seed is HKDF-SHA256 of the cluster
    /// CA key's PKCS#8 DER (info `strata etcd ca v1`); its certificate has
    /// fixed fields, a serial from the same HKDF output and the cluster
    /// CA's validity, and Ed25519 signatures are deterministic: every master
    /// derives byte-identical PEM.
    pub fn etcd_ca(&self) -> Result<Ca, Error> {
        let bad = Error::EtcdCa;
        let cluster_key = KeyPair::from_pem(&self.key_pem)?;
        // 32 bytes of Ed25519 seed, then 16 of serial number.
        let mut okm = [0u8; 48];
        ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &[])
            .extract(cluster_key.serialized_der())
            .expand(&[ETCD_CA_LABEL], OkmLen(okm.len()))
            .and_then(|o| o.fill(&mut okm))
            .map_err(|_| bad("HKDF failed".to_string()))?;
        let (seed, serial) = okm.split_at(32);
        // PKCS#8 v1 (RFC 8410) of an Ed25519 key: a fixed prefix, then
        // the seed.
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(seed);
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8),
            &PKCS_ED25519,
        )?;
        let der = first_der(&self.cert_pem, "the cluster CA")?;
        let (_, cluster) = x509_parser::certificate::X509Certificate::from_der(&der)
            .map_err(|e| bad(format!("the cluster CA certificate: {e}")))?;
        let at = |t: &x509_parser::time::ASN1Time| {
            time::OffsetDateTime::from_unix_timestamp(t.timestamp())
                .map_err(|e| bad(format!("the cluster CA's validity: {e}")))
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        let fingerprint = self.fingerprint()?;
        dn.push(
            DnType::CommonName,
            format!("strata etcd CA {}", &fingerprint[..16]),
        );
        dn.push(DnType::OrganizationName, "strata");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = at(&cluster.validity().not_before)?;
        params.not_after = at(&cluster.validity().not_after)?;
        let mut serial = serial.to_vec();
        serial[0] = (serial[0] & 0x7f) | 0x40;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues an etcd certificate (with a fresh P-256 key); call it on the
    /// etcd CA ([`Ca::etcd_ca`]). `member` is the etcd member (the master's
    /// node name) and `names` the DNS names or IP addresses the certificate
    /// is for; see [`EtcdCert`] for what each kind carries.
    pub fn issue_etcd(
        &self,
        kind: EtcdCert,
        member: &str,
        names: &[String],
        lifetime: Duration,
    ) -> Result<Issued, Error> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let params = match kind {
            EtcdCert::Server => leaf_params(member, names, true, lifetime)?,
            EtcdCert::Peer => leaf_params(ETCD_PEER_CN, names, true, lifetime)?,
            EtcdCert::Client => leaf_params(member, &[], false, lifetime)?,
        };
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(Issued {
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
    /// master's API (etcd uses certificates of the etcd CA instead,
    /// [`Ca::issue_etcd`]). `names` are DNS names or IP addresses.
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
            key_sha256: info.key_sha256.clone(),
            cert: info.issued(),
        })
    }
}

/// The length of an HKDF output, for ring.
struct OkmLen(usize);

impl ring::hkdf::KeyType for OkmLen {
    fn len(&self) -> usize {
        self.0
    }
}

/// The kinds of certificate the etcd CA issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdCert {
    /// etcd's client port: server and client use (etcd's gRPC gateway
    /// dials its own port with it), named for the member's addresses.
    Server,
    /// etcd's peer port, both ends: common name [`ETCD_PEER_CN`], named
    /// for the member's addresses (etcd checks that a peer connects from an
    /// address its certificate names).
    Peer,
    /// A master's etcd client: client use only and no names at all (etcd
    /// checks the address of a client whose certificate names any, and a
    /// master dials from its underlay address or loopback).
    Client,
}

/// A node certificate the CA signed.
#[derive(Debug, Clone)]
pub struct SignedNode {
    pub cert_pem: String,
    /// Hex sha256 of the node's public key: its identity.
    pub key_sha256: String,
    /// Its serial and expiry, as the node's record keeps them.
    pub cert: control::model::IssuedCert,
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
    params.serial_number = Some(random_serial()?);
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
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// Hex sha256 of the subject's public key (the raw key bits).
    pub key_sha256: String,
    /// The serial number: lowercase hex of the DER integer's bytes (what
    /// the revocation list names).
    pub serial: String,
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
        let at = |secs: i64| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        };
        let not_before = at(cert.validity().not_before.timestamp());
        let not_after = at(cert.validity().not_after.timestamp());
        let key_sha256 = sha256_hex(&cert.public_key().subject_public_key.data);
        Ok(CertInfo {
            common_name,
            not_before,
            not_after,
            key_sha256,
            serial: hex::encode(cert.raw_serial()),
        })
    }

    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// When its holder should renew it: once two thirds of its life have
    /// passed, its life counted from its signing (its start less
    /// [`BACKDATE`], when it was back-dated by that much).
    pub fn renew_at(&self) -> SystemTime {
        let signed = self.signed_at();
        let life = self.not_after.duration_since(signed).unwrap_or_default();
        signed + life * 2 / 3
    }

    /// When it was signed: its start less [`BACKDATE`], when it was
    /// back-dated by that much.
    pub fn signed_at(&self) -> SystemTime {
        if self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
            > BACKDATE
        {
            self.not_before + BACKDATE
        } else {
            self.not_before
        }
    }

    /// Unix seconds at which it was signed ([`CertInfo::signed_at`]).
    pub fn signed_at_unix(&self) -> u64 {
        self.signed_at()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Whether its holder should replace it now: two thirds of its life
    /// have passed, or a rotation asks for every certificate signed
    /// before `rotation` (unix seconds) to go.
    pub fn due(&self, now: SystemTime, rotation: Option<u64>) -> bool {
        now >= self.renew_at() || rotation.is_some_and(|at| self.signed_at_unix() < at)
    }

    /// Unix seconds at which it expires.
    pub fn not_after_unix(&self) -> u64 {
        self.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Its serial and expiry, as a node's record keeps them.
    pub fn issued(&self) -> control::model::IssuedCert {
        control::model::IssuedCert {
            serial: self.serial.clone(),
            not_after: self.not_after_unix(),
            issued_at: self.signed_at_unix(),
        }
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
