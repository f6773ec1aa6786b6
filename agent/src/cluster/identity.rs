//! A node's identity under its state directory: its private key (made once,
//! kept across restarts and re-joins), the certificate the cluster signed,
//! the cluster CA and the settings it received at join.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

use crate::pki::{self, CertInfo, NodeKey};
use control::model::NodeSettings;

/// The files of an identity.
#[derive(Debug, Clone)]
pub struct IdentityDir {
    pub dir: PathBuf,
}

impl IdentityDir {
    pub fn new(state_dir: &Path) -> IdentityDir {
        IdentityDir {
            dir: state_dir.join("identity"),
        }
    }
    fn key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
    fn cert(&self) -> PathBuf {
        self.dir.join("node.crt")
    }
    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    fn settings(&self) -> PathBuf {
        self.dir.join("settings.json")
    }

    /// The node's key, made and saved on first use.
    pub fn key_or_create(&self) -> anyhow::Result<NodeKey> {
        let path = self.key();
        match std::fs::read_to_string(&path) {
            Ok(key_pem) => Ok(NodeKey { key_pem }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = NodeKey::generate()?;
                write_private(&path, &key.key_pem)?;
                Ok(key)
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The joined identity, if there is one.
    pub fn load(&self) -> anyhow::Result<Option<Identity>> {
        if !self.cert().exists() {
            return Ok(None);
        }
        let read = |p: PathBuf| {
            std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))
        };
        let settings_path = self.settings();
        let settings: NodeSettings = serde_json::from_str(&read(settings_path.clone())?)
            .with_context(|| format!("{} is damaged", settings_path.display()))?;
        Ok(Some(Identity {
            key_pem: read(self.key())?,
            cert_pem: read(self.cert())?,
            ca_pem: read(self.ca())?,
            settings,
        }))
    }

    pub fn save(&self, id: &Identity) -> anyhow::Result<()> {
        write_private(&self.key(), &id.key_pem)?;
        write_private(&self.cert(), &id.cert_pem)?;
        write_private(&self.ca(), &id.ca_pem)?;
        let settings =
            serde_json::to_string_pretty(&id.settings).expect("settings always serialize");
        write_private(&self.settings(), &settings)
    }
}

/// Writes `content` to `path` (mode 0600, durably: [`crate::state::write_atomic`]),
/// so a crash never leaves half a file and others never read it.
pub fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    crate::state::write_atomic(path, content.as_bytes(), Some(0o600))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A joined node's credentials.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub settings: NodeSettings,
}

/// Why a kept identity cannot be used as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// The certificate has expired: join again with the same key.
    Expired,
    /// The CA is not the one the join token pins (the node was moved to
    /// another cluster): join again.
    OtherCluster,
    /// The certificate is for another name.
    OtherName(String),
    /// The files do not parse.
    Damaged(String),
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stale::Expired => write!(f, "the node certificate has expired"),
            Stale::OtherCluster => write!(
                f,
                "the kept CA is not the one the join token pins (another cluster)"
            ),
            Stale::OtherName(n) => write!(f, "the node certificate is for `{n}`"),
            Stale::Damaged(m) => write!(f, "the kept identity is damaged: {m}"),
        }
    }
}

impl Identity {
    /// Checks the identity against the node's name and token pin.
    pub fn check(
        &self,
        name: &str,
        pinned_ca_sha256: &str,
        now: SystemTime,
    ) -> Result<CertInfo, Stale> {
        let ca = pki::cert_fingerprint(&self.ca_pem, "the kept CA")
            .map_err(|e| Stale::Damaged(e.to_string()))?;
        if ca != pinned_ca_sha256 {
            return Err(Stale::OtherCluster);
        }
        let info = CertInfo::parse(&self.cert_pem, "the node certificate")
            .map_err(|e| Stale::Damaged(e.to_string()))?;
        if info.common_name != name {
            return Err(Stale::OtherName(info.common_name));
        }
        if info.expired(now) {
            return Err(Stale::Expired);
        }
        Ok(info)
    }
}
