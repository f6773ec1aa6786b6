//! Environment checks for the host tier's tests and the benchmarks, which
//! need root, network namespaces or host tools (the QEMU tier's own check
//! is [`crate::env::require`]; both say "not run" the same way). A test asks for what it needs; when something is missing the
//! reason is printed (and recorded for `cargo xtask test`'s summary), and
//! under CI (`CI` set to `true`, `1` or `yes`) the test fails instead of
//! skipping, so CI can never pass by skipping.

use std::path::Path;

use crate::env::{record_skip, under_ci};

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
