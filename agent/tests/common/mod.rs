//! Pieces shared by the host integration tests: running host commands and
//! network namespaces that are deleted with their links when the test ends.
//! Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::process::Command;

/// Runs `program` and returns its stdout; panics with its output on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Network namespaces, deleted (with their links) on drop, newest first.
#[derive(Default)]
pub struct Netns(pub Vec<String>);

impl Netns {
    /// Adds namespace `name` with its loopback up.
    pub fn add(&mut self, name: &str) {
        run("ip", &["netns", "add", name]);
        self.0.push(name.to_string());
        run("ip", &["-n", name, "link", "set", "lo", "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in self.0.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Every `*.log` file in `dir`, each under a header, for failure messages.
pub fn logs_in(dir: &std::path::Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "log"));
    files.sort();
    files
        .iter()
        .map(|f| {
            format!(
                "--- {}:\n{}",
                f.display(),
                std::fs::read_to_string(f).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Polls `check` every `every` until it returns `Some`, or panics with
/// `what` and the logs in `dir`. Prints how long it took.
pub fn wait_until<T>(
    dir: &std::path::Path,
    what: &str,
    timeout: std::time::Duration,
    every: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = check() {
            eprintln!("{what}: after {:.3}s", start.elapsed().as_secs_f64());
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}\n{}",
            logs_in(dir)
        );
        std::thread::sleep(every);
    }
}
