//! Environment checks for tests that need root, network namespaces or host
//! tools. A test asks for what it needs; when something is missing the
//! reason is printed (and recorded for `cargo xtask test`'s summary), and
//! under CI (`CI` set to `true`, `1` or `yes`) the test fails instead of
//! skipping, so CI can never pass by skipping.

use std::path::Path;

/// What a test needs from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Effective uid 0.
    Root,
    /// A program on `PATH` (or an absolute path).
    Program(&'static str),
    /// A file or directory.
    File(&'static str),
}

/// Returns true when every need is met. Otherwise prints why the test does
/// not run and returns false, or panics under CI.
pub fn require(test: &str, needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(|n| missing(*n)).collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("{test}: not run: {}", missing.join("; "));
    if under_ci() {
        panic!("{reason} (under CI prerequisites must be installed: run `cargo xtask test`)");
    }
    eprintln!("{reason} (run `cargo xtask test` as root to install and run everything)");
    record_skip(&reason);
    false
}

/// Whether the tests run under CI: `CI` set to `true`, `1` or `yes` (any
/// case), as CI services set it.
pub fn under_ci() -> bool {
    std::env::var("CI")
        .is_ok_and(|v| ["true", "1", "yes"].contains(&v.trim().to_ascii_lowercase().as_str()))
}

/// Appends why a test did not run to the file `cargo xtask test` names in
/// `STRATA_TEST_SKIPS`, so that its summary counts the test as not run
/// (libtest reports it as passed).
fn record_skip(reason: &str) {
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

fn missing(need: Need) -> Option<String> {
    match need {
        Need::Root => (!is_root()).then(|| "needs root".to_string()),
        Need::Program(p) => (!on_path(p)).then(|| format!("needs `{p}` on PATH")),
        Need::File(f) => (!Path::new(f).exists()).then(|| format!("needs {f}")),
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Whether `program` is an existing path or found on `PATH`.
pub fn on_path(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).exists();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}
