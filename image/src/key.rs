//! ed25519 keys as files: the signing key is PKCS#8 PEM (what
//! `openssl genpkey -algorithm ed25519` writes), the verifying key is one
//! line of 64 hex digits (baked into images as `/usr/share/strata/update.pub`).

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

/// A key file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct KeyError {
    pub origin: String,
    pub reason: String,
}

/// Parses a PKCS#8 PEM ed25519 private key read from `origin`.
pub fn parse_signing_key(origin: &str, text: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(text.trim()).map_err(|e| KeyError {
        origin: origin.to_string(),
        reason: format!(
            "not an ed25519 private key in PKCS#8 PEM ({e}); make one with \
             `openssl genpkey -algorithm ed25519 -out FILE`"
        ),
    })
}

/// A signing key from 32 random bytes, as PKCS#8 PEM.
pub fn signing_key_pem(seed: [u8; 32]) -> String {
    let key = SigningKey::from_bytes(&seed);
    key.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
        .expect("an ed25519 key always encodes")
        .to_string()
}

/// The verifying key as one line of hex.
pub fn public_key_hex(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.to_bytes()))
}

/// Parses a verifying key written by [`public_key_hex`].
pub fn parse_public_key(origin: &str, text: &str) -> Result<VerifyingKey, KeyError> {
    let err = |reason: String| KeyError {
        origin: origin.to_string(),
        reason,
    };
    let bytes =
        hex::decode(text.trim()).map_err(|e| err(format!("not a hex ed25519 public key: {e}")))?;
    let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
        err(format!(
            "expected 32 bytes of public key, found {}",
            b.len()
        ))
    })?;
    VerifyingKey::from_bytes(&arr).map_err(|e| err(format!("not a valid ed25519 public key: {e}")))
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    use super::*;

    #[test]
    fn pem_round_trip() {
        let pem = signing_key_pem([7; 32]);
        let key = parse_signing_key("dev.pem", &pem).unwrap();
        let public = public_key_hex(&key.verifying_key());
        assert_eq!(
            parse_public_key("dev.pub", &public).unwrap(),
            key.verifying_key()
        );
    }

    #[test]
    fn bad_key_files_are_refused() {
        let e = parse_signing_key("/etc/key.pem", "hello").unwrap_err();
        expect!["/etc/key.pem: not an ed25519 private key in PKCS#8 PEM (PKCS#8 ASN.1 error: PEM error: PEM preamble contains invalid data (NUL byte)); make one with `openssl genpkey -algorithm ed25519 -out FILE`"].assert_eq(&e.to_string());
        let e = parse_public_key("update.pub", "abcd").unwrap_err();
        expect!["update.pub: expected 32 bytes of public key, found 2"].assert_eq(&e.to_string());
    }
}
