//! Role defaults baked into each image (`configs/roles/<role>.toml`).

use serde::{Deserialize, Serialize};

use crate::{Error, Role};

/// What an image of one role ships and how its agent starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    pub role: Role,
    /// One line on what nodes of this role do.
    pub description: String,
    /// Debian packages added on top of the shared base for this role.
    #[serde(default)]
    pub packages: Vec<String>,
    pub agent: AgentDefaults,
    #[serde(default)]
    pub firewall: Firewall,
}

/// Agent defaults of a role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefaults {
    /// Port of the Strata API on masters, and the port agents dial.
    pub api_port: u16,
    /// Port of the node's Prometheus `/metrics` and `/health` endpoint.
    pub metrics_port: u16,
    /// Whether this role runs workloads.
    pub workloads: bool,
    /// Whether this role runs the edge proxy that exposes apps outside.
    #[serde(default)]
    pub edge: bool,
}

/// Ports the node's firewall opens to the sources `from` says, never to
/// the overlay (the agent's `inet strata-fw` table, planned by
/// `control::firewall`); everything else is dropped and counted. The
/// cluster's own ports are not listed here: the agent opens each to whom it
/// serves (the API on masters, etcd to the masters, VXLAN to the nodes, the
/// edge's exposed ports on public agents), and a port listed here that it
/// restricts stays restricted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    #[serde(default)]
    pub tcp: Vec<u16>,
    #[serde(default)]
    pub udp: Vec<u16>,
    #[serde(default)]
    pub from: Reach,
}

/// Whom the role's ports admit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reach {
    /// Every source.
    #[default]
    Anywhere,
    /// The cluster's nodes (the node list's underlay addresses), once the
    /// node has read the list; nobody before.
    Nodes,
}

impl RoleConfig {
    /// Parses and validates role defaults read from `origin`.
    pub fn parse(origin: &str, text: &str) -> Result<RoleConfig, Error> {
        let config: RoleConfig =
            toml::from_str(text).map_err(|e| Error::from_toml(origin, text, &e))?;
        config
            .validate()
            .map_err(|(path, msg)| Error::field(origin, text, &path, msg))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        for (i, p) in self.packages.iter().enumerate() {
            let ok = !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c))
                && p.starts_with(|c: char| c.is_ascii_alphanumeric());
            if !ok {
                return Err((
                    format!("packages[{i}]"),
                    format!("`{p}` is not a Debian package name"),
                ));
            }
        }
        for (proto, ports) in [("tcp", &self.firewall.tcp), ("udp", &self.firewall.udp)] {
            if let Some(i) = ports.iter().position(|p| *p == 0) {
                return Err((
                    format!("firewall.{proto}[{i}]"),
                    "port 0 is not allowed, expected 1 to 65535".into(),
                ));
            }
        }
        if self.agent.api_port == 0 {
            return Err((
                "agent.api_port".into(),
                "port 0 is not allowed, expected 1 to 65535".into(),
            ));
        }
        if self.agent.metrics_port == 0 || self.agent.metrics_port == self.agent.api_port {
            return Err((
                "agent.metrics_port".into(),
                "expected a port from 1 to 65535 other than agent.api_port".into(),
            ));
        }
        if self.agent.edge && !self.agent.workloads {
            return Err((
                "agent.edge".into(),
                "an edge node must also run workloads (agent.workloads = true)".into(),
            ));
        }
        if self.role == Role::Master && self.agent.workloads {
            return Err((
                "agent.workloads".into(),
                "masters do not run workloads, expected false".into(),
            ));
        }
        Ok(())
    }
}
