//! `cargo xtask bench <area>`: benchmarks that print figures. No benchmark
//! asserts a time; they report.

pub mod overlay;
