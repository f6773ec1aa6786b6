//! Scaffolding for the host tests and the benchmarks, compiled only with
//! the `testing` feature (which the crate's own tests and benches turn on):
//! never in the `strata` binary that goes into the images.
//!
//! [`lab`] builds throwaway overlay nodes in network namespaces; [`bench`]
//! runs many simulated agents against a real master; [`tls`] makes
//! certificates and speaks HTTPS for the edge's tests.

pub mod bench;
pub mod lab;
pub mod tls;
