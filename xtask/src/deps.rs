//! Debian packages the test tiers and benchmarks need on the host; the
//! lead's `cargo xtask test` installs the union.

/// The overlay host tests and `cargo xtask bench overlay`: `nft` for the
/// masquerade ruleset, `ip` for `ip netns exec`, iperf3 for throughput.
pub const OVERLAY_PACKAGES: &[&str] = &["nftables", "iproute2", "iperf3"];
