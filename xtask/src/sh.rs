//! Running host commands: echo them, run them, name them in errors.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// Runs `cmd`, echoing it first, and fails with the command line and exit
/// status when it does not succeed.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let line = display(cmd);
    eprintln!("$ {line}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !status.success() {
        bail!(
            "`{line}` failed ({status}) after {:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Runs `cmd` and returns its standard output as text.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let line = display(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("cannot start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("`{line}` printed something that is not UTF-8"))
}

/// The command line as a shell would show it.
pub fn display(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains([' ', '\'', '"', '*']) {
            format!("'{a}'")
        } else {
            a.into_owned()
        }
    }));
    parts.join(" ")
}

/// Whether `program` is found on `PATH`.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        || Path::new(program).is_file()
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the effective uid of the process reading it.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Runs `cmd` like [`run`], passing its standard output through to ours
/// line by line, and returns that output too (standard error passes through
/// untouched).
pub fn run_tee(cmd: &mut Command) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    let line = display(cmd);
    eprintln!("$ {line}");
    let start = Instant::now();
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{line}`"))?;
    let mut text = String::new();
    if let Some(out) = child.stdout.take() {
        let mut reader = std::io::BufReader::new(out);
        let mut stdout = std::io::stdout().lock();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) => break,
                Ok(_) => {
                    let _ = stdout.write_all(&buf);
                    text.push_str(&String::from_utf8_lossy(&buf));
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e).with_context(|| format!("cannot read the output of `{line}`"));
                }
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("cannot wait for `{line}`"))?;
    if !status.success() {
        bail!(
            "`{line}` failed ({status}) after {:.1}s",
            start.elapsed().as_secs_f64()
        );
    }
    Ok(text)
}
