//! The Strata API over HTTPS: the server every master runs ([`server`]), the
//! typed client the CLI and the agents use ([`client`]), and their TLS
//! settings ([`tls`]).

pub mod client;
pub mod server;
pub mod tls;

#[cfg(test)]
mod tests;
