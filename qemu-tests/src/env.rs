//! The QEMU tier's own environment check (it does not depend on `agent`):
//! a test asks for what it needs; when something is missing the reason is
//! printed and the test returns (and recorded for `cargo xtask test`'s
//! summary), and under CI the test fails instead.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn project_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(PathBuf::from).unwrap_or(dir)
}

/// Where `cargo xtask image` writes the images.
pub fn images_dir() -> PathBuf {
    std::env::var_os("STRATA_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target/images"))
}

/// The version the QEMU tier's upgrade images carry: newer than any
/// workspace version the default images take.
pub const UPGRADE_VERSION: &str = "99.0.0";

/// Where the QEMU tier's images of a newer version go, whose bundles the
/// upgrade tests install (`cargo xtask image --role all --version
/// 99.0.0 --out DIR`).
pub fn upgrade_images_dir() -> PathBuf {
    std::env::var_os("STRATA_UPGRADE_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target/images-upgrade"))
}

/// Where the QEMU tier's images with Debian's generic kernel go
/// (`cargo xtask image --role public --kernel generic --out DIR`; the
/// join test boots its public agent from it).
pub fn generic_images_dir() -> PathBuf {
    std::env::var_os("STRATA_GENERIC_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target/images-generic"))
}

/// True when every path in `files` exists and every program is on `PATH`;
/// otherwise prints why `test` does not run and returns false, or panics
/// under `CI=true`.
pub fn require(test: &str, files: &[&Path], programs: &[&str]) -> bool {
    let mut missing: Vec<String> = files
        .iter()
        .filter(|f| !f.exists())
        .map(|f| format!("needs {}", f.display()))
        .collect();
    missing.extend(
        programs
            .iter()
            .filter(|p| !crate::testenv::on_path(p))
            .map(|p| format!("needs `{p}` on PATH")),
    );
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{test}: not run: {}", missing.join("; "));
    if under_ci() {
        panic!(
            "{reason} (under CI: run `cargo xtask image --role all` first; `cargo xtask test` does)"
        );
    }
    eprintln!("{reason} (build the images with `cargo xtask image --role all`)");
    record_skip(&reason);
    false
}

/// Whether the tests run under CI: `CI` set to `true`, `1` or `yes` (any
/// case), as CI services set it.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| ci_value(&v))
}

/// Whether a value of `CI` means "under CI".
pub fn ci_value(v: &str) -> bool {
    ["true", "1", "yes"].contains(&v.trim().to_ascii_lowercase().as_str())
}

/// Appends why a test did not run to the file `cargo xtask test` names in
/// `STRATA_TEST_SKIPS`, so that its summary counts the test as not run
/// (libtest reports it as passed).
pub fn record_skip(reason: &str) {
    use std::io::Write;
    if let Some(path) = std::env::var_os("STRATA_TEST_SKIPS")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{}", reason.replace('\n', " "));
    }
}
