//! Pieces shared by the host integration tests: running host commands and
//! network namespaces that are deleted with their links when the test ends.

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
