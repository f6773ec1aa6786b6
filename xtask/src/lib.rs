//! `cargo xtask`: builds images, runs every test tier, boots VMs and prints
//! benchmarks. Only the xtask runs host tools; the crates stay pure.

pub mod bench_runtime;
pub mod deps;
