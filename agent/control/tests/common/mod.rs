//! What the fixture tests share: where the real files beside the
//! repository are.

use std::path::PathBuf;

/// `<repository>/../shared/fixtures/<kind>`, or `STRATA_FIXTURES`'s
/// `<kind>`; none (with the reason printed, and a failure under CI) when
/// it is missing.
pub fn fixtures(kind: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("STRATA_FIXTURES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    };
    let dir = dir.join(kind);
    if dir.is_dir() {
        return Some(dir);
    }
    let reason = format!(
        "{kind} fixtures: not run: needs {} (the shared fixtures beside the repository, or STRATA_FIXTURES)",
        dir.display()
    );
    let ci = std::env::var("CI").is_ok_and(|v| matches!(v.as_str(), "true" | "1" | "yes"));
    assert!(!ci, "{reason}");
    eprintln!("{reason}");
    None
}
