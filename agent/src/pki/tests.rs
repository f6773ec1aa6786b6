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
