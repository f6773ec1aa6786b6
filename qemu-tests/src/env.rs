//! The QEMU tier's own environment check (it does not depend on `agent`):
//! a test asks for what it needs; when something is missing the reason is
//! printed and the test returns, and under `CI=true` the test fails instead.

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

/// Where the QEMU tier's images with Debian's generic kernel go
/// (`cargo xtask image --role private --kernel generic --out DIR`).
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
            .filter(|p| !on_path(p))
            .map(|p| format!("needs `{p}` on PATH")),
    );
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{test}: not run: {}", missing.join("; "));
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{reason} (CI=true: run `cargo xtask image --role all` first; `cargo xtask test` does)"
        );
    }
    eprintln!("{reason} (build the images with `cargo xtask image --role all`)");
    false
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}
