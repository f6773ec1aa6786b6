//! Content digests: `sha256:` and 64 lowercase hex digits, checked before a
//! digest names anything. Layer directories, config blobs and verification
//! markers are named by [`Digest::hex`], so a digest that came from a
//! manifest, a config or an archive must go through [`Digest::parse`] (or
//! deserialize, which calls it) before it can become part of a path.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

const PREFIX: &str = "sha256:";
/// How much of a refused value an error repeats.
const SHOWN: usize = 80;

/// A `sha256:<64 lowercase hex digits>` digest, valid by construction.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

/// A string that is not a `sha256:<64 lowercase hex digits>` digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a sha256 digest (`sha256:` and 64 lowercase hex digits)")]
pub struct BadDigest {
    /// The refused value, cut to its first 80 characters.
    value: String,
}

impl BadDigest {
    fn new(value: &str) -> Self {
        Self {
            value: value.chars().take(SHOWN).collect(),
        }
    }
}

impl Digest {
    /// Parses `sha256:<hex>`; anything else (another algorithm, upper-case
    /// hex, a path) is refused.
    pub fn parse(s: &str) -> Result<Self, BadDigest> {
        match s.strip_prefix(PREFIX) {
            Some(hex) if is_hex64(hex) => Ok(Self(s.to_string())),
            _ => Err(BadDigest::new(s)),
        }
    }

    /// The digest whose hex part is `hex` (a layer directory's or a blob's
    /// file name).
    pub fn from_hex(hex: &str) -> Result<Self, BadDigest> {
        if is_hex64(hex) {
            Ok(Self(format!("{PREFIX}{hex}")))
        } else {
            Err(BadDigest::new(hex))
        }
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest of what `hasher` has seen.
    pub(crate) fn from_hasher(hasher: Sha256) -> Self {
        Self(format!("{PREFIX}{}", hex::encode(hasher.finalize())))
    }

    /// The 64 hex digits: safe as a file name.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for Digest {
    type Error = BadDigest;

    fn try_from(s: String) -> Result<Self, BadDigest> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl std::str::FromStr for Digest {
    type Err = BadDigest;

    fn from_str(s: &str) -> Result<Self, BadDigest> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn only_sha256_and_64_lowercase_hex_digits_parse() {
        let good = format!("sha256:{HEX}");
        let cases: Vec<(String, bool)> = vec![
            (good.clone(), true),
            (format!("sha256:{}", HEX.to_uppercase()), false),
            (format!("sha512:{HEX}"), false),
            (format!("sha256:{}", &HEX[1..]), false),
            (format!("sha256:{HEX}0"), false),
            (format!("sha256:{}/..", &HEX[3..]), false),
            ("sha256:../../../../etc".into(), false),
            ("sha256:".into(), false),
            (HEX.into(), false),
            (String::new(), false),
            (format!(" sha256:{HEX}"), false),
            (format!("sha256:{}g", &HEX[1..]), false),
        ];
        for (s, ok) in cases {
            assert_eq!(Digest::parse(&s).is_ok(), ok, "{s:?}");
        }
        let d = Digest::parse(&good).expect("valid");
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.as_str(), good);
        assert_eq!(d.to_string(), good);
        assert_eq!(Digest::from_hex(HEX).expect("hex"), d);
        assert!(Digest::from_hex("../etc").is_err());
        assert_eq!(Digest::of(b""), d, "the digest of nothing");
    }

    #[test]
    fn serde_refuses_a_bad_digest_and_round_trips_a_good_one() {
        let good = format!("\"sha256:{HEX}\"");
        let d: Digest = serde_json::from_str(&good).expect("valid");
        assert_eq!(serde_json::to_string(&d).expect("serialize"), good);
        let err = serde_json::from_str::<Digest>("\"sha256:../../x\"").expect_err("path");
        // serde_json adds the position after the message.
        assert!(
            err.to_string().starts_with(
                r#""sha256:../../x" is not a sha256 digest (`sha256:` and 64 lowercase hex digits)"#
            ),
            "{err}"
        );
    }

    #[test]
    fn a_long_refused_value_is_cut() {
        let err = Digest::parse(&"x".repeat(10_000)).expect_err("long");
        assert!(err.to_string().len() < 200, "{err}");
    }
}
