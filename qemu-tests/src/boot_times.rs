//! A node's boot times read from its console: the host's wall time from
//! QEMU start to the agent's `STRATA-READY` marker, and the guest's own
//! figures from that marker and the `STRATA-BOOT` line that follows it once
//! systemd reached `multi-user.target` (all in milliseconds; the guest's
//! are CLOCK_MONOTONIC, which starts with the kernel). [`Vm::boot_times`]
//! waits for both lines; [`BootTimes::parse`] checks they agree.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::{Vm, marker_fields};

/// One boot, measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootTimes {
    /// Host: QEMU start to the `STRATA-READY` line.
    pub host_ready_ms: u64,
    /// Guest: the kernel's start to Ready.
    pub ready_ms: u64,
    /// Guest: the kernel's start to `multi-user.target`.
    pub multi_user_ms: u64,
    /// `multi-user.target` was already reached when the node became Ready.
    pub multi_user_before_ready: bool,
    /// systemd-analyze's split (firmware, loader, kernel, initrd, userspace).
    pub firmware_ms: u64,
    pub loader_ms: u64,
    pub kernel_ms: u64,
    pub initrd_ms: u64,
    pub userspace_ms: u64,
    /// Kernels started on the console up to the marker: more than 1 when
    /// the guest rebooted on the way (an initrd that timed out waiting
    /// for its root under a loaded host does), and the guest's figures
    /// are then of the last boot only.
    pub kernel_starts: usize,
    /// The `STRATA-READY` line.
    pub ready_line: String,
}

impl BootTimes {
    /// Time after `multi-user.target` until the node was Ready (negative
    /// when the node was Ready first).
    pub fn ready_after_multi_user_ms(&self) -> i64 {
        self.ready_ms as i64 - self.multi_user_ms as i64
    }

    /// Host time from QEMU start to the kernel's start (firmware, boot
    /// loader and QEMU's own start-up), as far as the host can tell:
    /// the host's figure to Ready minus the guest's.
    pub fn before_kernel_ms(&self) -> i64 {
        self.host_ready_ms as i64 - self.ready_ms as i64
    }

    /// Reads the figures of the two lines and checks them: every figure
    /// present, the guest's clock behind the host's (it starts later),
    /// `multi-user.target` before Ready when the marker says it was
    /// reached, and both lines giving the same `ready_ms`.
    pub fn parse(
        ready_line: &str,
        ready_at: Duration,
        boot_line: &str,
        boot_at: Duration,
    ) -> anyhow::Result<BootTimes> {
        let ready = marker_fields(ready_line);
        let boot = marker_fields(boot_line);
        let num = |fields: &std::collections::BTreeMap<String, String>, line: &str, key: &str| {
            let v = fields
                .get(key)
                .with_context(|| format!("no {key}= in `{line}`"))?;
            v.parse::<u64>()
                .with_context(|| format!("{key}={v} is not a number in `{line}`"))
        };
        let ready_ms = num(&ready, ready_line, "ready_ms")?;
        let marker_multi_user = ready
            .get("multi_user_ms")
            .with_context(|| format!("no multi_user_ms= in `{ready_line}`"))?;
        let multi_user_ms = num(&boot, boot_line, "multi_user_ms")?;
        let host_ready_ms = ready_at.as_millis() as u64;
        let multi_user_before_ready = marker_multi_user != "pending";
        if multi_user_before_ready && marker_multi_user != &multi_user_ms.to_string() {
            bail!(
                "the ready marker says multi_user_ms={marker_multi_user}, the boot line {multi_user_ms}"
            );
        }
        if num(&boot, boot_line, "ready_ms")? != ready_ms {
            bail!("the boot line's ready_ms differs from the marker's: `{boot_line}`");
        }
        if ready_ms == 0 || multi_user_ms == 0 {
            bail!("a zero boot time: ready_ms={ready_ms} multi_user_ms={multi_user_ms}");
        }
        if ready_ms > host_ready_ms {
            bail!(
                "the guest says Ready at {ready_ms} ms, later than the host saw it ({host_ready_ms} ms after QEMU started)"
            );
        }
        if multi_user_ms as u128 > boot_at.as_millis() {
            bail!(
                "the guest says multi-user.target at {multi_user_ms} ms, later than the host saw it ({} ms after QEMU started)",
                boot_at.as_millis()
            );
        }
        if multi_user_before_ready && multi_user_ms > ready_ms {
            bail!(
                "multi-user.target was reached before Ready, yet multi_user_ms={multi_user_ms} > ready_ms={ready_ms}"
            );
        }
        Ok(BootTimes {
            host_ready_ms,
            ready_ms,
            multi_user_ms,
            multi_user_before_ready,
            firmware_ms: num(&boot, boot_line, "firmware_ms")?,
            loader_ms: num(&boot, boot_line, "loader_ms")?,
            kernel_ms: num(&boot, boot_line, "kernel_ms")?,
            initrd_ms: num(&boot, boot_line, "initrd_ms")?,
            userspace_ms: num(&boot, boot_line, "userspace_ms")?,
            kernel_starts: 1,
            ready_line: ready_line.to_string(),
        })
    }
}

impl Vm {
    /// Waits for the agent's `STRATA-READY` marker and the `STRATA-BOOT`
    /// line after it, and returns the boot's figures.
    pub fn boot_times(&mut self, timeout: Duration) -> anyhow::Result<BootTimes> {
        let (ready, ready_at) = self.wait_for_at("STRATA-READY", &[], timeout)?;
        let left = timeout
            .saturating_sub(ready_at)
            .max(Duration::from_secs(120));
        let (boot, boot_at) = self.wait_for_at("STRATA-BOOT", &[], left)?;
        let mut times = BootTimes::parse(&ready, ready_at, &boot, boot_at)
            .with_context(|| format!("{}: inconsistent boot times", self.config.name))?;
        let log = std::fs::read(self.config.log())
            .with_context(|| format!("cannot read {}", self.config.log().display()))?;
        times.kernel_starts = kernel_starts(&String::from_utf8_lossy(&log));
        Ok(times)
    }
}

/// How many kernels started on a console before the first ready marker.
pub fn kernel_starts(console: &str) -> usize {
    console
        .lines()
        .take_while(|l| !l.contains("STRATA-READY"))
        .filter(|l| l.contains("] Linux version "))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "STRATA-BOOT ready_ms=31250 multi_user_ms=19800 firmware_ms=5500 loader_ms=900 kernel_ms=4100 initrd_ms=0 userspace_ms=15700";

    fn check(ready: &str, ready_at: u64, boot: &str, boot_at: u64, expected: expect_test::Expect) {
        let got = BootTimes::parse(
            ready,
            Duration::from_millis(ready_at),
            boot,
            Duration::from_millis(boot_at),
        );
        let text = match got {
            Ok(t) => format!(
                "host {} ready {} multi-user {} before {} after-mu {} pre-kernel {} split {}/{}/{}/{}/{}",
                t.host_ready_ms,
                t.ready_ms,
                t.multi_user_ms,
                t.multi_user_before_ready,
                t.ready_after_multi_user_ms(),
                t.before_kernel_ms(),
                t.firmware_ms,
                t.loader_ms,
                t.kernel_ms,
                t.initrd_ms,
                t.userspace_ms
            ),
            Err(e) => format!("error: {e:#}"),
        };
        expected.assert_eq(&text);
    }

    #[test]
    fn a_cluster_node_ready_after_multi_user() {
        check(
            "STRATA-READY role=private healthy=yes ready_ms=31250 multi_user_ms=19800",
            40_000,
            BOOT,
            40_010,
            expect_test::expect![
                "host 40000 ready 31250 multi-user 19800 before true after-mu 11450 pre-kernel 8750 split 5500/900/4100/0/15700"
            ],
        );
    }

    #[test]
    fn a_node_without_user_data_ready_first() {
        check(
            "STRATA-READY role=master user-data=none healthy=yes ready_ms=18000 multi_user_ms=pending",
            26_000,
            "STRATA-BOOT ready_ms=18000 multi_user_ms=18100 firmware_ms=0 loader_ms=0 kernel_ms=3000 initrd_ms=0 userspace_ms=15100",
            26_500,
            expect_test::expect![
                "host 26000 ready 18000 multi-user 18100 before false after-mu -100 pre-kernel 8000 split 0/0/3000/0/15100"
            ],
        );
    }

    #[test]
    fn kernel_starts_are_counted_up_to_the_marker() {
        let console = "[    0.000000] Linux version 6.1.0-56-cloud-amd64 (gcc)\n\
            [   56.138634] reboot: Restarting system\n\
            [    0.000000] Linux version 6.1.0-56-cloud-amd64 (gcc)\n\
            \rSTRATA-READY role=master\n\
            [    0.000000] Linux version 6.1.0-56-cloud-amd64 (gcc)\n";
        assert_eq!(kernel_starts(console), 2);
        assert_eq!(kernel_starts(""), 0);
    }

    #[test]
    fn inconsistent_figures_are_refused() {
        check(
            "STRATA-READY role=private healthy=yes",
            40_000,
            BOOT,
            40_010,
            expect_test::expect!["error: no ready_ms= in `STRATA-READY role=private healthy=yes`"],
        );
        check(
            "STRATA-READY ready_ms=31250 multi_user_ms=19800",
            30_000,
            BOOT,
            40_010,
            expect_test::expect![
                "error: the guest says Ready at 31250 ms, later than the host saw it (30000 ms after QEMU started)"
            ],
        );
        check(
            "STRATA-READY ready_ms=31250 multi_user_ms=19000",
            40_000,
            BOOT,
            40_010,
            expect_test::expect![
                "error: the ready marker says multi_user_ms=19000, the boot line 19800"
            ],
        );
        check(
            "STRATA-READY ready_ms=31250 multi_user_ms=unknown",
            40_000,
            "STRATA-BOOT ready_ms=31250 multi_user_ms=x",
            40_010,
            expect_test::expect![
                "error: multi_user_ms=x is not a number in `STRATA-BOOT ready_ms=31250 multi_user_ms=x`: invalid digit found in string"
            ],
        );
        check(
            "STRATA-READY ready_ms=19000 multi_user_ms=19800",
            40_000,
            "STRATA-BOOT ready_ms=19000 multi_user_ms=19800 firmware_ms=0 loader_ms=0 kernel_ms=1 initrd_ms=0 userspace_ms=1",
            40_010,
            expect_test::expect![
                "error: multi-user.target was reached before Ready, yet multi_user_ms=19800 > ready_ms=19000"
            ],
        );
    }
}
