//! The node's side of an upgrade or rollback order: the assignment watch
//! offers the node its last order ([`Upgrader::offer`]); a new one is
//! carried out once (the node records the order's id before it acts, so
//! that a reboot or an agent restart never acts on it twice), and an order
//! acted on is judged after the reboot from the slots
//! ([`image::slot::upgrade_result`]) and reported.
//!
//! An install: download the bundle from a master into the state partition
//! (resumed where a broken download stopped), check its digest, hand it to
//! the slot writer ([`crate::upgrade::Layout::install`], which verifies it
//! again with the image's key before the first write), report
//! `rebooting` and reboot through systemd.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use control::upgrade::{Action, Progress, ProgressReport, UpgradeOrder};
use image::slot::{Slot, SlotState, UpgradeResult};
use serde::{Deserialize, Serialize};

use crate::api::client::ApiClient;
use crate::upgrade::Layout;

/// How often a node waits to see its new slot blessed before it reports.
const BLESS_POLL: Duration = Duration::from_secs(5);
/// How long it waits at most (the health gate's own timeout is shorter:
/// an unhealthy node reboots long before).
const BLESS_WAIT: Duration = Duration::from_secs(900);

/// The order this node acted on last (`<state>/slots/order.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Handled {
    id: String,
    /// The slot the node ran when it acted.
    from: Slot,
}

/// Carries out the orders the assignment watch offers.
#[derive(Clone)]
pub struct Upgrader {
    client: Arc<ApiClient>,
    name: String,
    state_dir: PathBuf,
    role: configs::Role,
    /// The order being worked on, if any.
    busy: Arc<Mutex<Option<String>>>,
}

impl Upgrader {
    /// `client` carries the node's certificate and is the upgrader's own
    /// (reports must not wait behind a long poll).
    pub fn new(
        client: ApiClient,
        name: String,
        state_dir: PathBuf,
        role: configs::Role,
    ) -> Upgrader {
        Upgrader {
            client: Arc::new(client),
            name,
            state_dir,
            role,
            busy: Arc::default(),
        }
    }

    fn handled_path(&self) -> PathBuf {
        self.state_dir.join("slots/order.json")
    }

    /// Looks at the node's last order (from each watch answer).
    pub fn offer(&self, order: Option<&UpgradeOrder>) {
        let Some(order) = order else { return };
        if order.progress.is_final() {
            return;
        }
        {
            let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
            if busy.as_deref() == Some(order.id.as_str()) {
                return;
            }
            *busy = Some(order.id.clone());
        }
        let this = self.clone();
        let order = order.clone();
        tokio::spawn(async move {
            // Once the reboot is asked for, the order stays taken for the
            // rest of this boot: the agent runs on for a moment while the
            // node shuts down, and the watch offers the order again (now
            // `rebooting`); judged then, from the slot still booted, it
            // would be reported failed before the reboot happened.
            if !this.work(&order).await {
                *this.busy.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        });
    }

    async fn report(&self, id: &str, progress: Progress) {
        let report = ProgressReport {
            id: id.to_string(),
            progress: progress.clone(),
        };
        match self.client.report_upgrade(&self.name, &report).await {
            Ok(_) => tracing::info!("upgrade: order {id}: {progress}"),
            Err(e) => tracing::warn!("upgrade: cannot report order {id} ({progress}): {e}"),
        }
    }

    /// Acts on `order` or judges how it ended; true when it asked for the
    /// reboot.
    async fn work(&self, order: &UpgradeOrder) -> bool {
        let Some(booted) = crate::upgrade::booted_slot() else {
            self.report(
                &order.id,
                Progress::Failed {
                    reason: "the node did not boot from a slot: it runs outside an image".into(),
                },
            )
            .await;
            return false;
        };
        let handled: Option<Handled> = crate::state::read_json(&self.handled_path());
        match handled {
            // Acted on before a reboot or an agent restart: judged from
            // the slots, unless it had not got to writing (a download
            // goes on where it stopped).
            Some(h)
                if h.id == order.id
                    && !matches!(
                        order.progress,
                        Progress::Ordered | Progress::Downloading { .. }
                    ) =>
            {
                self.judge(order, &h, booted).await;
                false
            }
            Some(h) if h.id == order.id => self.act_or_report(order).await,
            _ => {
                let h = Handled {
                    id: order.id.clone(),
                    from: booted,
                };
                if let Err(e) = crate::state::write_json(&self.handled_path(), &h, None) {
                    self.report(
                        &order.id,
                        Progress::Failed {
                            reason: format!("cannot record the order: {e}"),
                        },
                    )
                    .await;
                    return false;
                }
                self.act_or_report(order).await
            }
        }
    }

    /// Carries out an order, reporting it failed when it does not get to
    /// the reboot; true when it asked for the reboot.
    async fn act_or_report(&self, order: &UpgradeOrder) -> bool {
        match self.act(order).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("upgrade: order {} failed: {e:#}", order.id);
                let reason = format!("{e:#}");
                self.report(&order.id, Progress::Failed { reason }).await;
                false
            }
        }
    }

    /// Carries out a new order, up to the reboot.
    async fn act(&self, order: &UpgradeOrder) -> anyhow::Result<()> {
        use anyhow::Context;
        let version = crate::upgrade::running_version(Path::new("/usr/lib/os-release"))
            .context("the image has no IMAGE_VERSION in /usr/lib/os-release")?;
        let booted = crate::upgrade::booted_slot().context("the node did not boot from a slot")?;
        let layout = Layout::discover(&self.state_dir)?;
        match &order.action {
            Action::Install {
                sha256,
                size,
                allow_downgrade,
                version: target,
            } => {
                // Refused before the download when the order says enough;
                // the slot writer checks the signed manifest again.
                image::slot::check_version(&version, target, *allow_downgrade)
                    .map_err(|e| anyhow::anyhow!("bundle {sha256} is refused: {e}"))?;
                let bundle = self.download(order, sha256, *size).await?;
                self.report(&order.id, Progress::Verifying).await;
                let (role, allow) = (self.role, *allow_downgrade);
                let key = crate::upgrade::update_key(Path::new(crate::upgrade::UPDATE_KEY))?;
                let file = bundle.clone();
                let id = order.id.clone();
                // `writing` once the slot writer's checks passed and its
                // records say the slot is being written, before the
                // partitions change: reported from its thread.
                let (this, rt) = (self.clone(), tokio::runtime::Handle::current());
                let plan = tokio::task::spawn_blocking(move || {
                    let host = layout.facts(role, &version, booted)?;
                    layout.install(
                        &host,
                        &file,
                        &key,
                        crate::upgrade::Install {
                            allow_downgrade: allow,
                            now: crate::clock::unix_secs(),
                            order: Some(&id),
                            writing: &mut || rt.block_on(this.report(&id, Progress::Writing)),
                        },
                    )
                })
                .await
                .context("the slot writer stopped")?;
                let _ = std::fs::remove_file(&bundle);
                let plan = plan?;
                tracing::info!(
                    "upgrade: slot {} holds {}: rebooting into it",
                    plan.slot,
                    plan.version
                );
            }
            Action::Rollback => {
                let role = self.role;
                let slot = tokio::task::spawn_blocking(move || {
                    let host = layout.facts(role, &version, booted)?;
                    layout.rollback(&host)
                })
                .await
                .context("the slot writer stopped")??;
                tracing::info!("upgrade: rolling back to slot {slot}: rebooting into it");
            }
            Action::Unknown => anyhow::bail!("the order's action is unknown to this agent"),
        }
        self.report(&order.id, Progress::Rebooting).await;
        crate::systemd::Systemd::system()
            .await?
            .reboot()
            .await
            .context("cannot reboot")?;
        Ok(())
    }

    /// Downloads the bundle into the state partition and checks its digest.
    async fn download(
        &self,
        order: &UpgradeOrder,
        sha256: &str,
        size: u64,
    ) -> anyhow::Result<PathBuf> {
        use anyhow::Context;
        let dir = self.state_dir.join("upgrade");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Bundles of earlier orders go: the state partition is small.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if !e.file_name().to_string_lossy().starts_with(sha256) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let part = dir.join(format!("{sha256}.part"));
        let started = Instant::now();
        let mut last = Instant::now() - Duration::from_secs(10);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
        let path = control::api::FETCH_BUNDLE.fill(&[sha256]);
        let got = {
            let fetch = self.client.download(&path, &part, move |bytes, total| {
                let _ = tx.send((bytes, total));
            });
            tokio::pin!(fetch);
            loop {
                tokio::select! {
                    r = &mut fetch => break r?,
                    Some((bytes, total)) = rx.recv() => {
                        if last.elapsed() >= Duration::from_secs(2) {
                            last = Instant::now();
                            let progress = Progress::Downloading { bytes, total: total.max(size) };
                            self.report(&order.id, progress).await;
                        }
                    }
                }
            }
        };
        let digest = {
            let file = part.clone();
            tokio::task::spawn_blocking(move || crate::upgrade::hash_range(&file, 0, u64::MAX))
                .await
                .context("the digest check stopped")?
                .with_context(|| format!("cannot read {}", part.display()))?
        };
        if digest != sha256 {
            let _ = std::fs::remove_file(&part);
            anyhow::bail!(
                "the downloaded bundle has sha256 {digest}, not the {sha256} ordered: it was removed and the next order downloads it again"
            );
        }
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            "upgrade: downloaded {got} bytes in {secs:.1}s ({:.1} MiB/s)",
            got as f64 / (1 << 20) as f64 / secs.max(0.001)
        );
        Ok(part)
    }

    /// Reports how an order acted on before (and a reboot) ended.
    async fn judge(&self, order: &UpgradeOrder, handled: &Handled, booted: Slot) {
        let started = Instant::now();
        loop {
            let progress = match self.outcome(order, handled, booted) {
                Ok(Some(p)) => p,
                Ok(None) if started.elapsed() < BLESS_WAIT => {
                    tokio::time::sleep(BLESS_POLL).await;
                    continue;
                }
                Ok(None) => Progress::Failed {
                    reason: format!(
                        "slot {booted} was not blessed within {}s",
                        BLESS_WAIT.as_secs()
                    ),
                },
                Err(e) => Progress::Failed {
                    reason: format!("{e:#}"),
                },
            };
            self.report(&order.id, progress).await;
            return;
        }
    }

    /// How the order ended; `None` while the booted slot still waits for
    /// its blessing.
    fn outcome(
        &self,
        order: &UpgradeOrder,
        handled: &Handled,
        booted: Slot,
    ) -> anyhow::Result<Option<Progress>> {
        use anyhow::Context;
        let version = crate::upgrade::running_version(Path::new("/usr/lib/os-release"))
            .context("the image has no IMAGE_VERSION")?;
        let layout = Layout::discover(&self.state_dir)?;
        let host = layout.facts(self.role, &version, booted)?;
        Ok(match &order.action {
            Action::Install { .. }
                if layout.last_upgrade().and_then(|l| l.order).as_deref()
                    != Some(order.id.as_str()) =>
            {
                Some(Progress::Failed {
                    reason: "the agent stopped before it wrote the other slot: nothing changed, order the upgrade again".into(),
                })
            }
            Action::Install { .. } => match layout.last_result(&host) {
                Some(UpgradeResult::Succeeded { .. }) => Some(Progress::Succeeded),
                Some(UpgradeResult::Trying { .. }) => None,
                Some(UpgradeResult::RolledBack { reason, .. }) => Some(Progress::Failed { reason }),
                Some(UpgradeResult::Interrupted { slot, .. }) => Some(Progress::Failed {
                    reason: format!(
                        "the node went down while slot {slot} was written: it booted slot {} as before",
                        slot.other()
                    ),
                }),
                Some(UpgradeResult::Pending { slot, .. }) => Some(Progress::Failed {
                    reason: format!(
                        "slot {slot} was written but the node did not reboot into it"
                    ),
                }),
                Some(UpgradeResult::Unknown) | None => Some(Progress::Failed {
                    reason: "the node has no record of the upgrade".into(),
                }),
            },
            Action::Rollback => {
                if booted == handled.from {
                    Some(Progress::Failed {
                        reason: format!("the node booted slot {booted} again, not the other one"),
                    })
                } else if image::slot::state(host.slot(booted)) == SlotState::Good {
                    Some(Progress::Succeeded)
                } else {
                    None
                }
            }
            Action::Unknown => Some(Progress::Failed {
                reason: "the order's action is unknown to this agent".into(),
            }),
        })
    }
}
