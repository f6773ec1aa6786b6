//! What one node is handed at first boot (through fw_cfg, a config
//! partition, a URL or a cloud metadata service).

use serde::{Deserialize, Serialize};

use crate::net::Ipv4Cidr;
use crate::{Error, Role};

/// A node's first-boot configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserData {
    /// Cluster name.
    pub cluster: String,
    /// Node name, unique in the cluster, a DNS label.
    pub name: String,
    pub role: Role,
    /// API endpoints of the masters (`host:port`), tried in turn.
    pub masters: Vec<String>,
    /// The join token: it pins the cluster CA's hash and carries the secret.
    pub join_token: String,
    #[serde(default)]
    pub network: Network,
    /// Cluster secrets a master needs; absent on agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<MasterSecrets>,
}

/// Underlay network settings applied before joining.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Interface to configure; the first non-loopback one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Static address with prefix length; DHCP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<std::net::Ipv4Addr>,
}

/// What only masters receive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSecrets {
    /// The cluster CA certificate, PEM.
    pub ca_cert: String,
    /// The cluster CA private key, PEM.
    pub ca_key: String,
    /// The whole `cluster.toml`, so masters know the cluster's settings.
    pub cluster_toml: String,
    /// Hex sha256 of each CLI bearer token the API accepts (never the
    /// tokens themselves).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cli_token_sha256: Vec<String>,
}

/// Checks an interface name as networkd's `Name=` takes it: at most 15
/// bytes (the kernel's limit), of letters, digits and `-_.:`, and the
/// glob characters `*?` (`en*`). Anything else (a space, a newline, `=`)
/// would change the rendered `.network` file's meaning.
pub fn check_interface(name: &str) -> Result<(), String> {
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:*?".contains(*c)))
    {
        return Err(format!(
            "`{}` is not an interface name: `{}` is not allowed (letters, digits, `-_.:` and the globs `*?`)",
            name.escape_debug(),
            c.escape_debug()
        ));
    }
    if name.is_empty() || name.len() > 15 {
        return Err(format!(
            "`{}` is not an interface name: expected 1 to 15 characters",
            name.escape_debug()
        ));
    }
    Ok(())
}

impl UserData {
    pub fn parse(origin: &str, text: &str) -> Result<UserData, Error> {
        let u: UserData = toml::from_str(text).map_err(|e| Error::from_toml(origin, text, &e))?;
        u.validate()
            .map_err(|(path, msg)| Error::field(origin, text, &path, msg))?;
        Ok(u)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        crate::cluster::check_label(&self.cluster).map_err(|m| ("cluster".to_string(), m))?;
        crate::cluster::check_label(&self.name).map_err(|m| ("name".to_string(), m))?;
        if self.masters.is_empty() {
            return Err((
                "masters".into(),
                "expected at least one master endpoint".into(),
            ));
        }
        for (i, m) in self.masters.iter().enumerate() {
            let ok = m
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err((
                    format!("masters[{i}]"),
                    format!("`{m}` is not an endpoint, expected host:port"),
                ));
            }
        }
        if self.join_token.is_empty() {
            return Err((
                "join_token".into(),
                "expected the join token printed by `strata cluster init`".into(),
            ));
        }
        match (&self.master, self.role) {
            (None, Role::Master) => {
                return Err((
                    "master".into(),
                    "a master needs the [master] section with the cluster CA".into(),
                ));
            }
            (Some(_), Role::Private | Role::Public) => {
                return Err((
                    "master".into(),
                    "only masters receive the [master] section".into(),
                ));
            }
            _ => {}
        }
        if let Some(m) = &self.master {
            for (i, h) in m.cli_token_sha256.iter().enumerate() {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err((
                        format!("master.cli_token_sha256[{i}]"),
                        "expected 64 hex digits (the sha256 of a CLI token)".into(),
                    ));
                }
            }
        }
        if let Some(name) = &self.network.interface {
            check_interface(name).map_err(|m| ("network.interface".to_string(), m))?;
        }
        if let (Some(gw), Some(addr)) = (self.network.gateway, self.network.address)
            && !addr.contains(gw)
        {
            return Err((
                "network.gateway".into(),
                format!("gateway {gw} is not inside {}", addr.trunc()),
            ));
        }
        Ok(())
    }
}
