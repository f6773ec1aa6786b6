//! Image versions: what `cargo xtask image --version` stamps into an image
//! (`IMAGE_VERSION` in os-release and `version` in its manifest) and how two
//! of them order, so that a node can refuse a bundle older than what it
//! runs.
//!
//! A version is a semantic version (`0.2.0`, `1.0.0-rc.1`); build metadata
//! after `+` (the commit, `0.1.0+g1a2b3c4d5e6f`) names the build but does not
//! order it: two builds of one version are the same version, and installing
//! one over the other is not a downgrade.

use std::cmp::Ordering;
use std::fmt;

/// A parsed image version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageVersion(semver::Version);

/// Why a text is not an image version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{text}` is not an image version: {why} (expected MAJOR.MINOR.PATCH, e.g. 0.2.0 or 1.0.0-rc.1, with an optional +BUILD)"
)]
pub struct VersionError {
    pub text: String,
    pub why: String,
}

impl ImageVersion {
    pub fn parse(text: &str) -> Result<ImageVersion, VersionError> {
        semver::Version::parse(text.trim())
            .map(ImageVersion)
            .map_err(|e| VersionError {
                text: text.to_string(),
                why: e.to_string(),
            })
    }

    /// The version without its build metadata.
    pub fn release(&self) -> String {
        let mut v = self.0.clone();
        v.build = semver::BuildMetadata::EMPTY;
        v.to_string()
    }

    /// Whether it carries build metadata (`+g<commit>`).
    pub fn has_build(&self) -> bool {
        !self.0.build.is_empty()
    }

    /// The order of releases: build metadata is ignored.
    pub fn cmp_release(&self, other: &ImageVersion) -> Ordering {
        self.0.cmp_precedence(&other.0)
    }

    /// Whether installing `self` on a node running `running` goes back.
    pub fn is_older_than(&self, running: &ImageVersion) -> bool {
        self.cmp_release(running) == Ordering::Less
    }
}

impl fmt::Display for ImageVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for ImageVersion {
    type Err = VersionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageVersion::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use expect_test::{Expect, expect};

    use super::*;

    /// How `a` orders against `b` as releases, or why one does not parse.
    fn check(a: &str, b: &str, expected: Expect) {
        let actual = match (ImageVersion::parse(a), ImageVersion::parse(b)) {
            (Ok(a), Ok(b)) => format!(
                "{:?}{}",
                a.cmp_release(&b),
                if a.is_older_than(&b) {
                    " (a downgrade)"
                } else {
                    ""
                }
            ),
            (Err(e), _) | (_, Err(e)) => e.to_string(),
        };
        expected.assert_eq(&actual);
    }

    #[test]
    fn versions_order_as_releases() {
        check("0.2.0", "0.1.0", expect!["Greater"]);
        check("0.1.0", "0.2.0", expect!["Less (a downgrade)"]);
        check(
            "0.1.0+g1a2b3c4d5e6f",
            "0.1.0+gffffffffffff",
            expect!["Equal"],
        );
        check("0.10.0", "0.9.9", expect!["Greater"]);
        check("1.0.0-rc.1", "1.0.0", expect!["Less (a downgrade)"]);
        check("1.0.0-rc.10", "1.0.0-rc.9", expect!["Greater"]);
        check(
            "v2",
            "0.1.0",
            expect![
                "`v2` is not an image version: unexpected character 'v' while parsing major version number (expected MAJOR.MINOR.PATCH, e.g. 0.2.0 or 1.0.0-rc.1, with an optional +BUILD)"
            ],
        );
        check(
            "0.1",
            "0.1.0",
            expect![
                "`0.1` is not an image version: unexpected end of input while parsing minor version number (expected MAJOR.MINOR.PATCH, e.g. 0.2.0 or 1.0.0-rc.1, with an optional +BUILD)"
            ],
        );
    }

    #[test]
    fn release_drops_the_build() {
        let v = ImageVersion::parse("0.2.0+g1a2b").expect("parses");
        assert_eq!(v.release(), "0.2.0");
        assert!(v.has_build());
        assert_eq!(v.to_string(), "0.2.0+g1a2b");
    }
}
