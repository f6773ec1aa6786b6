//! The edge's certificates: what an operator hands the cluster for a host
//! name (`strata edge cert set HOST FILE`) is checked here before it is
//! stored, so that a public agent's HAProxy never gets a file it refuses
//! (or serves a name the certificate does not cover): one PEM with the
//! chain (leaf first) and exactly one private key, which is the leaf's,
//! a leaf that covers the host (a DNS name, or a wildcard one label deep)
//! and is valid now. Pure apart from the clock the caller passes.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

/// Why a certificate is refused. Each names what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeCertError {
    #[error("it holds no certificate: give the chain, leaf first, and its key in one PEM file")]
    NoCertificate,
    #[error("it holds no private key: append the leaf's key (PEM) to the file")]
    NoKey,
    #[error("it holds {0} private keys: keep only the leaf's")]
    ManyKeys(usize),
    #[error("its PEM does not read ({0}): give PEM text as certbot or openssl writes it")]
    BadPem(String),
    #[error(
        "it holds a `{0}` section, which the edge cannot use: give certificates and one unencrypted private key only (openssl pkey -in KEY decrypts one)"
    )]
    UnknownSection(String),
    #[error("its RSA key has {0} bits: the edge takes 2048 bits or more")]
    WeakKey(usize),
    #[error("certificate {index} of the chain does not parse: {reason}")]
    BadCertificate { index: usize, reason: String },
    #[error(
        "its private key is of a kind the edge cannot use ({0}): use an RSA, ECDSA or Ed25519 key"
    )]
    UnsupportedKey(String),
    #[error("its private key is not the leaf certificate's (the first certificate of the file)")]
    KeyMismatch,
    #[error("the leaf certificate covers {names}, not {host}")]
    HostNotCovered { host: String, names: String },
    #[error("the leaf certificate expired at {}: renew it", control::job::tz::utc(*.0))]
    Expired(u64),
    #[error(
        "the leaf certificate is not valid before {}: set it then, or check this machine's clock",
        control::job::tz::utc(*.0)
    )]
    NotYetValid(u64),
}

/// What the check learnt of a good certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCertInfo {
    /// Hex sha256 of the leaf (DER).
    pub sha256: String,
    /// The leaf's DNS names (its subject alternative names).
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_after: u64,
}

/// The PEM sections a certificate file may hold.
const KNOWN_SECTIONS: [&str; 4] = [
    "CERTIFICATE",
    "PRIVATE KEY",
    "RSA PRIVATE KEY",
    "EC PRIVATE KEY",
];

/// The fewest bits of an RSA key the edge takes (OpenSSL's default
/// security level refuses fewer).
const MIN_RSA_BITS: usize = 2048;

/// Checks `pem` as the certificate of `host` (a lowercase DNS name) at
/// `now`.
pub fn check(host: &str, pem: &str, now: SystemTime) -> Result<EdgeCertInfo, EdgeCertError> {
    // The PEM reader skips sections it does not know (an encrypted key
    // among them): refused here rather than left for HAProxy.
    for label in pem
        .lines()
        .filter_map(|l| l.trim().strip_prefix("-----BEGIN "))
        .filter_map(|l| l.strip_suffix("-----"))
    {
        if !KNOWN_SECTIONS.contains(&label) {
            return Err(EdgeCertError::UnknownSection(label.to_string()));
        }
    }
    let chain: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| EdgeCertError::BadPem(e.to_string()))?;
    let keys: Vec<PrivateKeyDer<'_>> = PrivateKeyDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| EdgeCertError::BadPem(e.to_string()))?;
    let leaf_der = chain.first().ok_or(EdgeCertError::NoCertificate)?;
    let key = match keys.as_slice() {
        [] => return Err(EdgeCertError::NoKey),
        [key] => key,
        many => return Err(EdgeCertError::ManyKeys(many.len())),
    };
    let mut parsed = Vec::with_capacity(chain.len());
    for (index, der) in chain.iter().enumerate() {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| EdgeCertError::BadCertificate {
                index,
                reason: e.to_string(),
            })?;
        parsed.push(cert);
    }
    let leaf = &parsed[0];
    let signer = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| EdgeCertError::UnsupportedKey(e.to_string()))?;
    let spki = signer
        .public_key()
        .ok_or_else(|| EdgeCertError::UnsupportedKey("its public key is unknown".into()))?;
    if spki.as_ref() != leaf.public_key().raw {
        return Err(EdgeCertError::KeyMismatch);
    }
    if let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = leaf.public_key().parsed()
        && rsa.key_size() < MIN_RSA_BITS
    {
        return Err(EdgeCertError::WeakKey(rsa.key_size()));
    }
    let names = dns_names(leaf);
    if !names.iter().any(|n| covers(n, host)) {
        let names = if names.is_empty() {
            "no DNS name".to_string()
        } else {
            names.join(", ")
        };
        return Err(EdgeCertError::HostNotCovered {
            host: host.to_string(),
            names,
        });
    }
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    let not_before = secs(leaf.validity().not_before.timestamp());
    let not_after = secs(leaf.validity().not_after.timestamp());
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if now > not_after {
        return Err(EdgeCertError::Expired(not_after));
    }
    if now < not_before {
        return Err(EdgeCertError::NotYetValid(not_before));
    }
    Ok(EdgeCertInfo {
        sha256: super::sha256_hex(leaf_der),
        names,
        not_after,
    })
}

/// The DNS names of `cert`'s subject alternative names, lowercase.
fn dns_names(cert: &X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// Whether the certificate name `name` covers `host`: equal, or a
/// wildcard `*.rest` for a host of one more label (`*.a.b` covers `x.a.b`,
/// not `a.b` or `y.x.a.b`).
fn covers(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => name == host,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use expect_test::{Expect, expect};
    use rcgen::{CertificateParams, KeyPair};

    use super::*;

    /// A self-signed leaf for `names`, valid from `from` for `days`, with
    /// its key: (certificate PEM, key PEM).
    fn leaf(names: &[&str], from: SystemTime, days: u64) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.not_before = from.into();
        params.not_after = (from + Duration::from_secs(days * 86_400)).into();
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn check_one(host: &str, pem: &str, expected: Expect) {
        let got = match check(host, pem, SystemTime::now()) {
            Ok(info) => format!("ok {:?} {}", info.names, info.sha256.len()),
            Err(e) => e.to_string(),
        };
        expected.assert_eq(&got);
    }

    #[test]
    fn good_and_bad_certificates() {
        let now = SystemTime::now();
        let (cert, key) = leaf(&["shop.test", "*.apps.test"], now, 30);
        let good = format!("{cert}{key}");
        check_one(
            "shop.test",
            &good,
            expect![[r#"ok ["shop.test", "*.apps.test"] 64"#]],
        );
        check_one(
            "web.apps.test",
            &good,
            expect![[r#"ok ["shop.test", "*.apps.test"] 64"#]],
        );
        check_one(
            "a.web.apps.test",
            &good,
            expect!["the leaf certificate covers shop.test, *.apps.test, not a.web.apps.test"],
        );
        check_one(
            "apps.test",
            &good,
            expect!["the leaf certificate covers shop.test, *.apps.test, not apps.test"],
        );
        check_one(
            "shop.test",
            &cert,
            expect!["it holds no private key: append the leaf's key (PEM) to the file"],
        );
        check_one(
            "shop.test",
            &key,
            expect![
                "it holds no certificate: give the chain, leaf first, and its key in one PEM file"
            ],
        );
        check_one(
            "shop.test",
            &format!("{cert}{key}{key}"),
            expect!["it holds 2 private keys: keep only the leaf's"],
        );
        let (_, other_key) = leaf(&["shop.test"], now, 30);
        check_one(
            "shop.test",
            &format!("{cert}{other_key}"),
            expect![
                "its private key is not the leaf certificate's (the first certificate of the file)"
            ],
        );
        check_one(
            "shop.test",
            "not a certificate",
            expect![
                "it holds no certificate: give the chain, leaf first, and its key in one PEM file"
            ],
        );
        let encrypted = format!(
            "{cert}-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        );
        check_one(
            "shop.test",
            &encrypted,
            expect![
                "it holds a `ENCRYPTED PRIVATE KEY` section, which the edge cannot use: give certificates and one unencrypted private key only (openssl pkey -in KEY decrypts one)"
            ],
        );
        let broken = format!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n{key}");
        check_one(
            "shop.test",
            &broken,
            expect![
                "certificate 0 of the chain does not parse: Parsing Error: Der(UnexpectedTag { expected: Some(Tag(16)), actual: Tag(0) })"
            ],
        );
    }

    #[test]
    fn expired_and_future_certificates_are_refused() {
        let long_ago = UNIX_EPOCH + Duration::from_secs(1_600_000_000);
        let (cert, key) = leaf(&["shop.test"], long_ago, 10);
        let got = check("shop.test", &format!("{cert}{key}"), SystemTime::now());
        assert_eq!(got, Err(EdgeCertError::Expired(1_600_864_000)));
        expect![["the leaf certificate expired at 2020-09-23T12:26:40Z: renew it"]]
            .assert_eq(&EdgeCertError::Expired(1_600_864_000).to_string());
        let later = SystemTime::now() + Duration::from_secs(86_400);
        let (cert, key) = leaf(&["shop.test"], later, 10);
        let got = check("shop.test", &format!("{cert}{key}"), SystemTime::now());
        assert!(matches!(got, Err(EdgeCertError::NotYetValid(_))), "{got:?}");
    }

    #[test]
    fn wildcards_cover_one_label() {
        for (name, host, expected) in [
            ("shop.test", "shop.test", true),
            ("*.test", "shop.test", true),
            ("*.test", "test", false),
            ("*.test", "a.shop.test", false),
            ("*.shop.test", ".shop.test", false),
            ("shop.test", "www.shop.test", false),
        ] {
            assert_eq!(covers(name, host), expected, "{name} {host}");
        }
    }
}
