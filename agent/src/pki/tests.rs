use std::time::{Duration, SystemTime};

use expect_test::{Expect, expect};

use super::*;

fn check(token: &str, expected: Expect) {
    let actual = match JoinToken::parse(token) {
        Ok(t) => format!("ca={} secret={}", &t.ca_sha256[..8], t.secret),
        Err(e) => format!("error: {e}"),
    };
    expected.assert_eq(&actual);
}

#[test]
fn join_tokens() {
    let ca = "ab".repeat(32);
    check(
        &format!("strata-join.v1.{ca}.0123456789abcdef"),
        expect!["ca=abababab secret=0123456789abcdef"],
    );
    check(
        &format!("  strata-join.v1.{ca}.0123456789abcdef\n"),
        expect!["ca=abababab secret=0123456789abcdef"],
    );
    check(
        &format!("strata-join.v2.{ca}.0123456789abcdef"),
        expect![
            "error: join token is malformed, expected `strata-join.v1.<64 hex digits of the CA's sha256>.<secret>` as printed by `strata cluster init`"
        ],
    );
    check(
        &format!("strata-join.v1.{ca}"),
        expect![
            "error: join token is malformed, expected `strata-join.v1.<64 hex digits of the CA's sha256>.<secret>` as printed by `strata cluster init`"
        ],
    );
    check(
        "strata-join.v1.abcd.0123456789abcdef",
        expect![
            "error: join token is malformed, expected `strata-join.v1.<64 hex digits of the CA's sha256>.<secret>` as printed by `strata cluster init`"
        ],
    );
    check(
        &format!("strata-join.v1.{ca}.short"),
        expect![
            "error: join token is malformed, expected `strata-join.v1.<64 hex digits of the CA's sha256>.<secret>` as printed by `strata cluster init`"
        ],
    );
    let t = JoinToken::generate(&ca).unwrap();
    assert_eq!(JoinToken::parse(&t.to_string()).unwrap(), t);
    assert_ne!(t.secret_sha256(), t.secret);
}

#[test]
fn node_certificates_carry_the_node_identity() {
    let ca = Ca::generate("t").unwrap();
    let key = NodeKey::generate().unwrap();
    let signed = ca
        .sign_node_csr("agent-1", &key.csr("agent-1").unwrap(), CERT_LIFETIME)
        .unwrap();
    let info = CertInfo::parse(&signed.cert_pem, "cert").unwrap();
    assert_eq!(info.common_name, "agent-1");
    // The identity a master records at join is the one it later reads
    // from the client certificate.
    assert_eq!(info.key_sha256, key.public_sha256().unwrap());
    assert_eq!(signed.key_sha256, info.key_sha256);
    assert!(!info.expired(SystemTime::now()));
    assert!(info.expired(SystemTime::now() + CERT_LIFETIME + Duration::from_secs(1)));
    // The master picks the name, not the request.
    let other = ca
        .sign_node_csr("agent-2", &key.csr("agent-1").unwrap(), CERT_LIFETIME)
        .unwrap();
    assert_eq!(
        CertInfo::parse(&other.cert_pem, "cert")
            .unwrap()
            .common_name,
        "agent-2"
    );
}

#[test]
fn bad_input_is_named() {
    let ca = Ca::generate("t").unwrap();
    let err = ca
        .sign_node_csr("a", "not a csr", CERT_LIFETIME)
        .unwrap_err();
    expect!["cannot make a certificate or key: Could not parse certificate signing request"]
        .assert_eq(&err.to_string());
    let err = CertInfo::parse("garbage", "the kept CA").unwrap_err();
    expect!["the kept CA is not a PEM certificate: no CERTIFICATE block found"]
        .assert_eq(&err.to_string());
    assert_eq!(ca.fingerprint().unwrap().len(), 64);
    assert!(constant_time_eq("abc", "abc"));
    assert!(!constant_time_eq("abc", "abd"));
    assert!(!constant_time_eq("abc", "ab"));
}

/// Whether `cert_pem` verifies as a client certificate against `ca_pem`
/// alone (rustls's verifier, as etcd's clients and the API use it).
fn verifies_against(ca_pem: &str, cert_pem: &str) -> Result<(), String> {
    use rustls::pki_types::{CertificateDer, UnixTime};
    use rustls::server::WebPkiClientVerifier;
    let mut roots = rustls::RootCertStore::empty();
    for der in all_ders(ca_pem, "ca").unwrap() {
        roots.add(CertificateDer::from(der)).unwrap();
    }
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.into(), crate::api::tls::provider())
            .build()
            .unwrap();
    let leaf = CertificateDer::from(first_der(cert_pem, "leaf").unwrap());
    verifier
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn serial(cert_pem: &str) -> Vec<u8> {
    let der = first_der(cert_pem, "cert").unwrap();
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
    cert.raw_serial().to_vec()
}

#[test]
fn every_master_derives_the_same_etcd_ca() {
    let ca = Ca::generate("t").unwrap();
    let a = ca.etcd_ca().unwrap();
    // Another master holds the same PEM (from its user-data).
    let b = Ca {
        cert_pem: ca.cert_pem.clone(),
        key_pem: ca.key_pem.clone(),
    }
    .etcd_ca()
    .unwrap();
    assert_eq!(a.cert_pem, b.cert_pem);
    assert_eq!(a.key_pem, b.key_pem);
    assert_ne!(a.cert_pem, ca.cert_pem);
    let info = CertInfo::parse(&a.cert_pem, "the etcd CA").unwrap();
    assert!(
        info.common_name.starts_with("strata etcd CA "),
        "{}",
        info.common_name
    );
    // Valid as long as the cluster CA.
    assert_eq!(
        info.not_after,
        CertInfo::parse(&ca.cert_pem, "the cluster CA")
            .unwrap()
            .not_after
    );

    let other = Ca::generate("t").unwrap().etcd_ca().unwrap();
    assert_ne!(other.cert_pem, a.cert_pem);
    assert_ne!(other.key_pem, a.key_pem);
}

#[test]
fn etcd_trusts_only_certificates_of_the_etcd_ca() {
    let ca = Ca::generate("t").unwrap();
    let etcd = ca.etcd_ca().unwrap();
    let client = etcd
        .issue_etcd(EtcdCert::Client, "m1", &[], CERT_LIFETIME)
        .unwrap();
    verifies_against(&etcd.cert_pem, &client.cert_pem).expect("an etcd client certificate");
    // What every node holds: a certificate of the cluster CA.
    let key = NodeKey::generate().unwrap();
    let node = ca
        .sign_node_csr("agent-1", &key.csr("agent-1").unwrap(), CERT_LIFETIME)
        .unwrap();
    verifies_against(&ca.cert_pem, &node.cert_pem).expect("a node certificate of the cluster");
    let err = verifies_against(&etcd.cert_pem, &node.cert_pem).expect_err("a node certificate");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Nor a master's own API certificate, which etcd trusted before.
    let master = ca
        .issue_master("m1", &["10.9.0.10".to_string()], CERT_LIFETIME)
        .unwrap();
    verifies_against(&etcd.cert_pem, &master.cert_pem).expect_err("a master's API certificate");
    // And the etcd CA's certificates are not the cluster's.
    verifies_against(&ca.cert_pem, &client.cert_pem).expect_err("an etcd client certificate");
}

#[test]
fn etcd_certificates_carry_their_kind() {
    let etcd = Ca::generate("t").unwrap().etcd_ca().unwrap();
    let names = ["10.9.0.10".to_string(), "localhost".to_string()];
    let peer = etcd
        .issue_etcd(EtcdCert::Peer, "m1", &names[..1], CERT_LIFETIME)
        .unwrap();
    let server = etcd
        .issue_etcd(EtcdCert::Server, "m1", &names, CERT_LIFETIME)
        .unwrap();
    let client = etcd
        .issue_etcd(EtcdCert::Client, "m1", &names, CERT_LIFETIME)
        .unwrap();
    let parsed = |pem: &str| {
        let der = first_der(pem, "cert").unwrap();
        let (_, c) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap()
            .to_string();
        let sans = c
            .subject_alternative_name()
            .unwrap()
            .map_or(0, |s| s.value.general_names.len());
        let eku = c.extended_key_usage().unwrap().unwrap().value;
        (cn, sans, eku.server_auth, eku.client_auth)
    };
    assert_eq!(
        parsed(&peer.cert_pem),
        (ETCD_PEER_CN.to_string(), 1, true, true)
    );
    assert_eq!(parsed(&server.cert_pem), ("m1".to_string(), 2, true, true));
    // No names: etcd checks the address of a client whose certificate
    // names any.
    assert_eq!(parsed(&client.cert_pem), ("m1".to_string(), 0, false, true));
}

#[test]
fn certificates_of_one_key_get_distinct_serials() {
    let ca = Ca::generate("t").unwrap();
    let key = NodeKey::generate().unwrap();
    let csr = key.csr("agent-1").unwrap();
    let one = ca.sign_node_csr("agent-1", &csr, CERT_LIFETIME).unwrap();
    let two = ca.sign_node_csr("agent-1", &csr, CERT_LIFETIME).unwrap();
    assert_eq!(one.key_sha256, two.key_sha256);
    assert_ne!(serial(&one.cert_pem), serial(&two.cert_pem));
    assert_eq!(serial(&one.cert_pem).len(), 16);
    // The serial a master records at join is the one it reads from the
    // client certificate (what the revocation list names).
    let info = CertInfo::parse(&one.cert_pem, "cert").unwrap();
    assert_eq!(info.serial, hex::encode(serial(&one.cert_pem)));
    assert_eq!(one.cert.serial, info.serial);
    assert_eq!(one.cert.not_after, info.not_after_unix());
}

#[test]
fn a_node_renews_at_two_thirds_of_the_life_it_was_signed_for() {
    let ca = Ca::generate("t").unwrap();
    let key = NodeKey::generate().unwrap();
    let csr = key.csr("agent-1").unwrap();
    for lifetime in [Duration::from_secs(90), CERT_LIFETIME] {
        let before = SystemTime::now();
        let signed = ca.sign_node_csr("agent-1", &csr, lifetime).unwrap();
        let info = CertInfo::parse(&signed.cert_pem, "cert").unwrap();
        let expected = before + lifetime * 2 / 3;
        let renew = info.renew_at();
        let off = renew
            .duration_since(expected)
            .unwrap_or_else(|e| e.duration());
        // Certificates carry whole seconds.
        assert!(
            off <= Duration::from_secs(2),
            "{lifetime:?}: off by {off:?}"
        );
        assert!(!info.expired(renew));
    }
}

#[test]
fn a_rotation_makes_every_certificate_signed_before_it_due() {
    let ca = Ca::generate("t").unwrap();
    let key = NodeKey::generate().unwrap();
    let csr = key.csr("agent-1").unwrap();
    let signed = ca.sign_node_csr("agent-1", &csr, CERT_LIFETIME).unwrap();
    let info = CertInfo::parse(&signed.cert_pem, "cert").unwrap();
    let now = SystemTime::now();
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    // Signed now, not back-dated an hour: the record says so.
    assert!(unix(now).abs_diff(info.signed_at_unix()) <= 2);
    assert_eq!(info.issued().issued_at, info.signed_at_unix());
    let check = |rotation: Option<u64>, expected: bool| {
        assert_eq!(info.due(now, rotation), expected, "rotation {rotation:?}");
    };
    check(None, false);
    check(Some(unix(now) - 3600), false);
    check(Some(unix(now) + 5), true);
    // Two thirds into its life it is due whatever a rotation says.
    assert!(info.due(now + CERT_LIFETIME * 2 / 3 + Duration::from_secs(5), None));
}
