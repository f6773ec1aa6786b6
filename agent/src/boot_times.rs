//! How long the boot took, as the agent reports it with its ready marker:
//! the guest's CLOCK_MONOTONIC when the node became Ready (`ready_ms`), when
//! systemd reached `multi-user.target` (`multi_user_ms`), and the split
//! `systemd-analyze` prints (firmware, loader, kernel, initrd, userspace).
//! The kernel starts CLOCK_MONOTONIC at 0, so these are times since the
//! kernel started. The arithmetic is pure; [`read`] and
//! [`BootTimes::refresh`] ask systemd through [`crate::systemd`].

use serde::{Deserialize, Serialize};

use crate::systemd::{ManagerTimestamps, Systemd};

/// The target whose activation the benchmark compares the Ready with.
pub const MULTI_USER: &str = "multi-user.target";

/// Whether systemd has reached `multi-user.target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Milestone {
    /// Reached this many milliseconds after the kernel started.
    Reached(u64),
    /// Not yet (a node without user-data is Ready before it: the target
    /// waits for the agent's `READY=1`).
    Pending,
    /// systemd could not be asked (no systemd, no D-Bus).
    Unknown,
}

impl std::fmt::Display for Milestone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Milestone::Reached(ms) => write!(f, "{ms}"),
            Milestone::Pending => f.write_str("pending"),
            Milestone::Unknown => f.write_str("unknown"),
        }
    }
}

/// `systemd-analyze`'s split of the boot up to `multi-user.target`, in
/// milliseconds; 0 for a stage systemd has no timestamp of (the firmware
/// and loader figures come from the boot loader's EFI variables, the
/// initrd one only from a systemd initrd).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub firmware_ms: u64,
    pub loader_ms: u64,
    pub kernel_ms: u64,
    pub initrd_ms: u64,
    /// From systemd's start on the real root to `multi-user.target`.
    pub userspace_ms: u64,
}

impl Split {
    /// The split as `systemd-analyze time` computes it, with userspace
    /// ending at `multi_user_us` instead of the end of the startup jobs.
    pub fn new(t: &ManagerTimestamps, multi_user_us: u64) -> Split {
        let kernel_done = if t.initrd > 0 { t.initrd } else { t.userspace };
        Split {
            firmware_ms: t.firmware.saturating_sub(t.loader) / 1000,
            loader_ms: t.loader / 1000,
            kernel_ms: kernel_done / 1000,
            initrd_ms: if t.initrd > 0 {
                t.userspace.saturating_sub(t.initrd) / 1000
            } else {
                0
            },
            userspace_ms: multi_user_us.saturating_sub(t.userspace) / 1000,
        }
    }
}

/// The boot times of the node's first Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTimes {
    /// CLOCK_MONOTONIC when the node became Ready, in milliseconds.
    pub ready_ms: u64,
    pub multi_user: Milestone,
    /// Known once `multi-user.target` is reached.
    pub split: Option<Split>,
}

impl BootTimes {
    /// The fields added to the `STRATA-READY` marker.
    pub fn marker_fields(&self) -> String {
        format!(
            "ready_ms={} multi_user_ms={}",
            self.ready_ms, self.multi_user
        )
    }

    /// The `STRATA-BOOT` console line, once `multi-user.target` is reached.
    pub fn boot_line(&self) -> Option<String> {
        let (Milestone::Reached(mu), Some(s)) = (self.multi_user, self.split) else {
            return None;
        };
        Some(format!(
            "STRATA-BOOT ready_ms={} multi_user_ms={mu} firmware_ms={} loader_ms={} kernel_ms={} initrd_ms={} userspace_ms={}",
            self.ready_ms, s.firmware_ms, s.loader_ms, s.kernel_ms, s.initrd_ms, s.userspace_ms
        ))
    }

    /// Asks systemd again while `multi-user.target` is pending; true when
    /// it has just been reached.
    pub async fn refresh(&mut self) -> bool {
        if self.multi_user != Milestone::Pending {
            return false;
        }
        let (multi_user, split) = query().await;
        self.multi_user = multi_user;
        self.split = split;
        matches!(multi_user, Milestone::Reached(_))
    }
}

/// CLOCK_MONOTONIC in milliseconds.
pub fn monotonic_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
            + u64::try_from(t.tv_nsec()).unwrap_or(0) / 1_000_000
    })
}

/// The boot times now, as the node becomes Ready: systemd is asked first
/// and the clock read after, so a target reported reached was reached no
/// later than `ready_ms`.
pub async fn read() -> BootTimes {
    let (multi_user, split) = query().await;
    BootTimes {
        ready_ms: monotonic_ms(),
        multi_user,
        split,
    }
}

async fn query() -> (Milestone, Option<Split>) {
    let asked = async {
        let systemd = Systemd::system().await?;
        let Some(at) = systemd.active_enter_monotonic(MULTI_USER).await? else {
            return Ok((Milestone::Pending, None));
        };
        let t = systemd.manager_timestamps().await?;
        Ok::<_, crate::systemd::Error>((Milestone::Reached(at / 1000), Some(Split::new(&t, at))))
    };
    match asked.await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!("cannot read the boot times from systemd: {e}");
            (Milestone::Unknown, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(t: ManagerTimestamps, multi_user_us: u64, expected: expect_test::Expect) {
        let times = BootTimes {
            ready_ms: 31_250,
            multi_user: Milestone::Reached(multi_user_us / 1000),
            split: Some(Split::new(&t, multi_user_us)),
        };
        let text = format!(
            "{}\n{}",
            times.marker_fields(),
            times.boot_line().unwrap_or_default()
        );
        expected.assert_eq(&text);
    }

    #[test]
    fn the_split_is_systemd_analyzes() {
        // OVMF and systemd-boot set the loader's EFI variables; Debian's
        // initramfs-tools has no systemd, so no initrd timestamp.
        check(
            ManagerTimestamps {
                firmware: 6_400_000,
                loader: 900_000,
                initrd: 0,
                userspace: 4_100_000,
                finish: 0,
            },
            19_800_000,
            expect_test::expect![[r#"
                ready_ms=31250 multi_user_ms=19800
                STRATA-BOOT ready_ms=31250 multi_user_ms=19800 firmware_ms=5500 loader_ms=900 kernel_ms=4100 initrd_ms=0 userspace_ms=15700"#]],
        );
        // A systemd initrd: the kernel ends where the initrd's systemd began.
        check(
            ManagerTimestamps {
                firmware: 0,
                loader: 0,
                initrd: 1_500_000,
                userspace: 5_000_000,
                finish: 22_000_000,
            },
            20_000_000,
            expect_test::expect![[r#"
                ready_ms=31250 multi_user_ms=20000
                STRATA-BOOT ready_ms=31250 multi_user_ms=20000 firmware_ms=0 loader_ms=0 kernel_ms=1500 initrd_ms=3500 userspace_ms=15000"#]],
        );
    }

    #[test]
    fn pending_and_unknown_have_no_boot_line() {
        for (m, field) in [
            (Milestone::Pending, "pending"),
            (Milestone::Unknown, "unknown"),
        ] {
            let t = BootTimes {
                ready_ms: 12,
                multi_user: m,
                split: None,
            };
            assert_eq!(
                t.marker_fields(),
                format!("ready_ms=12 multi_user_ms={field}")
            );
            assert_eq!(t.boot_line(), None);
        }
    }

    #[test]
    fn the_monotonic_clock_runs() {
        let a = monotonic_ms();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(monotonic_ms() >= a + 20);
    }

    #[test]
    fn the_health_file_form_round_trips() {
        let t = BootTimes {
            ready_ms: 5,
            multi_user: Milestone::Reached(4),
            split: Some(Split::default()),
        };
        let text = serde_json::to_string(&t).expect("serializes");
        expect_test::expect![[r#"{"ready_ms":5,"multi_user":{"reached":4},"split":{"firmware_ms":0,"loader_ms":0,"kernel_ms":0,"initrd_ms":0,"userspace_ms":0}}"#]].assert_eq(&text);
        assert_eq!(serde_json::from_str::<BootTimes>(&text).expect("parses"), t);
    }
}
