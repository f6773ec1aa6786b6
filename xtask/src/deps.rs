//! Debian packages the test tiers and benchmarks need, per area; the lead's
//! `cargo xtask test` installs their union.

/// Container runtime (issue 5): libcontainer links libseccomp; the host
/// tests build an image from busybox-static with umoci, serve it from a real
/// registry (TLS certificates by openssl, htpasswd and registry tokens by
/// python3) and copy it with skopeo; the benchmark compares with crun.
pub const RUNTIME_PACKAGES: &[&str] = &[
    "libseccomp-dev",
    "docker-registry",
    "umoci",
    "skopeo",
    "busybox-static",
    "crun",
    "openssl",
    "python3",
];
