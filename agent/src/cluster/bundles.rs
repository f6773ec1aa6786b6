//! Bundle replication between masters: every master with a bundle store
//! copies each bundle the cluster records (`/strata/bundles/`) and it
//! does not hold yet from the masters that do, with its node certificate
//! (the same download, resumed with `Range`, that nodes use), verifies it
//! with the images' update key as a push is verified, keeps it under its
//! digest and adds itself to the record's holders. So any master can
//! serve any bundle, and a bundle outlives the master it was pushed to.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use control::upgrade::BundleRecord;

use crate::api::client::{ApiClient, Auth};
use crate::cluster::identity::IdentityDir;
use crate::etcd::Store;
use crate::upgrade::store::BundleStore;

/// How often a master looks for bundles it does not hold.
const EVERY: Duration = Duration::from_secs(5);

/// What replication needs.
pub struct Replicator {
    pub store: Store,
    pub bundles: Arc<BundleStore>,
    /// This master's node name.
    pub name: String,
    /// Where its node identity is (its certificate for the downloads).
    pub state_dir: PathBuf,
}

impl Replicator {
    /// Copies missing bundles, for as long as the master runs.
    pub async fn run(self) {
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!("bundles: {e:#}");
            }
            tokio::time::sleep(EVERY).await;
        }
    }

    /// Copies every bundle this master does not hold yet.
    async fn round(&self) -> anyhow::Result<()> {
        let missing: Vec<BundleRecord> = self
            .store
            .bundles()
            .await?
            .into_iter()
            .filter(|b| !b.holders.contains(&self.name))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        // The master's node joins through its own API after it starts:
        // until it has, there is no certificate to download with.
        let Some(id) = IdentityDir::new(&self.state_dir).load()? else {
            return Ok(());
        };
        let tls = crate::api::tls::client_config(&id.ca_pem, Some((&id.cert_pem, &id.key_pem)))
            .context("the node certificate does not make a TLS client")?;
        let client = ApiClient::new(id.settings.masters.clone(), tls, Auth::Tls);
        // One bundle that cannot be copied (its holders gone, say) does
        // not hold up the others; it is tried again next round.
        for b in &missing {
            match self.copy(&client, b).await {
                Ok(()) => {
                    self.store.add_bundle(b, &self.name).await?;
                    tracing::info!(
                        "bundles: {} holds bundle {} ({} {}) too",
                        self.name,
                        b.sha256,
                        b.role,
                        b.version
                    );
                }
                Err(e) => tracing::warn!(
                    "bundles: cannot copy bundle {} ({}): {e:#}",
                    b.sha256,
                    b.version
                ),
            }
        }
        Ok(())
    }

    /// Downloads bundle `b` (resuming an earlier attempt), verifies it and
    /// keeps it under its digest.
    async fn copy(&self, client: &ApiClient, b: &BundleRecord) -> anyhow::Result<()> {
        let dest = self.bundles.path(&b.sha256)?;
        let part = self.bundles.replica_path(&b.sha256)?;
        let bundles = self.bundles.clone();
        // Kept already (the master stopped before it recorded it): checked,
        // never removed, since a node may be downloading it.
        let check = if dest.exists() {
            let _ = std::fs::remove_file(&part);
            tokio::task::spawn_blocking(move || bundles.verify(&dest)).await
        } else {
            let path = control::api::FETCH_BUNDLE.fill(&[&b.sha256]);
            client.download(&path, &part, |_, _| {}).await?;
            tokio::task::spawn_blocking(move || bundles.accept(&part)).await
        };
        let (sha, _, _) = check.context("the verification stopped")??;
        anyhow::ensure!(
            sha == b.sha256,
            "what the masters served has digest {sha}, the record says {}",
            b.sha256
        );
        Ok(())
    }
}
