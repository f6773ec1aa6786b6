//! The Strata API over HTTPS: the server every master runs ([`server`]), the
//! client the CLI and the agents use ([`client`], with one typed call per
//! route in [`calls`]), and their TLS settings ([`tls`]). The routes
//! themselves are a table in `control::api`.

pub mod calls;
pub mod client;
pub mod follow;
pub mod server;
pub mod tls;

#[cfg(test)]
mod tests;
