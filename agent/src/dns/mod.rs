//! Service discovery: every node runs a DNS server (hickory-server) that
//! answers A and SRV records for `<task-or-app>.<zone>` from an in-memory
//! record set the agent keeps up to date, and forwards every other name to
//! the cluster's upstream resolvers.
//!
//! - [`records`]: the record set and the pure answer to one question.
//! - [`server`]: the hickory request handler and the UDP/TCP server.
//! - [`client`]: a small blocking query, for tests, benchmarks and health.
//! - [`render_resolv_conf`]: a task's `/etc/resolv.conf`.

#[cfg(any(test, feature = "testing"))]
pub mod client;
pub mod records;
pub mod server;

use std::net::Ipv4Addr;

pub use records::{Records, TaskRecord};
pub use server::DnsServer;

/// A task's `/etc/resolv.conf`: its node's resolver (the gateway address of
/// the node's subnet, where the agent's DNS server listens) and the zone as
/// search domain, so `web` resolves as `web.<zone>`.
pub fn render_resolv_conf(resolver: Ipv4Addr, zone: &str) -> String {
    format!(
        "# written by strata\nnameserver {resolver}\nsearch {zone}\noptions ndots:1 timeout:1 attempts:2\n"
    )
}

#[cfg(test)]
mod tests {
    use expect_test::expect;

    #[test]
    fn resolv_conf() {
        expect![[r#"
            # written by strata
            nameserver 10.200.3.1
            search strata.internal
            options ndots:1 timeout:1 attempts:2
        "#]]
        .assert_eq(&super::render_resolv_conf(
            "10.200.3.1".parse().expect("ip"),
            "strata.internal",
        ));
    }
}
