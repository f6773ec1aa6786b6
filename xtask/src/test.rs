//! `cargo xtask test`: every test tier, from fast to real, with what each
//! needs installed first. Each tier prints what it ran and how many tests it
//! ran; under CI (`CI` set to `true`, `1` or `yes`) a tier or a test whose
//! prerequisites are missing fails the run instead of being skipped.
//!
//! Gated tests that do not run say so in the file named by
//! `STRATA_TEST_SKIPS` (one line per test, written by `agent::testenv` and
//! `qemu_tests::env`), so the summary counts them even though libtest
//! reports such a test as passed.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::deps::{self, Step};
use crate::{fresh, project_root, residue, sh, under_ci};

/// The test tiers, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Tier {
    /// `cargo fmt --check`.
    Fmt,
    /// `cargo clippy --all-targets -D warnings`.
    Clippy,
    /// Pure unit tests and the tidy checks.
    Unit,
    /// Every fuzz target for a short run (`cargo xtask fuzz --runs`).
    Fuzz,
    /// The agent and the xtask built in a fresh bookworm tree holding only
    /// what a new machine has plus what `deps` declares for the agent build.
    Fresh,
    /// Integration tests as root on this host: real etcd, containers, VXLAN.
    Host,
    /// Images built by the xtask, booted under QEMU.
    Qemu,
}

impl Tier {
    const ALL: [Tier; 7] = [
        Tier::Fmt,
        Tier::Clippy,
        Tier::Unit,
        Tier::Fuzz,
        Tier::Fresh,
        Tier::Host,
        Tier::Qemu,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Fmt => "fmt",
            Tier::Clippy => "clippy",
            Tier::Unit => "unit",
            Tier::Fuzz => "fuzz",
            Tier::Fresh => "fresh",
            Tier::Host => "host",
            Tier::Qemu => "qemu",
        }
    }

    /// Whether the tier runs tests (the others check or build).
    fn runs_tests(self) -> bool {
        matches!(self, Tier::Unit | Tier::Host | Tier::Qemu)
    }

    /// What the tier runs on the host, for [`deps::ensure`].
    pub fn steps(self) -> Vec<Step> {
        match self {
            Tier::Fmt => vec![],
            Tier::Clippy | Tier::Unit => vec![Step::AgentBuild],
            Tier::Fuzz => deps::FUZZ.to_vec(),
            // The tier builds the xtask and the agent inside its tree, which
            // installs their packages itself; the host needs mmdebstrap.
            Tier::Fresh => vec![Step::FreshTree],
            Tier::Host => vec![Step::AgentBuild, Step::HostTests, Step::Runtime],
            Tier::Qemu => {
                let mut steps = deps::BOOT.to_vec();
                steps.push(Step::QemuFixtures);
                steps
            }
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run only these tiers (repeatable); all tiers by default.
    #[arg(long = "tier", value_enum)]
    tiers: Vec<Tier>,
    /// Do not install missing host packages (fail or skip instead).
    #[arg(long)]
    no_install: bool,
}

/// The schemathesis release the API schema test runs (from PyPI).
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// The directory of schemathesis's `st`, installed (once, in a virtual
/// environment under `target/schemathesis`) when missing or of another
/// release.
fn schemathesis(root: &Path) -> anyhow::Result<std::path::PathBuf> {
    let venv = root.join("target/schemathesis");
    let bin = venv.join("bin");
    let stamp = venv.join("installed");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == SCHEMATHESIS) && bin.join("st").exists() {
        return Ok(bin);
    }
    let _ = std::fs::remove_dir_all(&venv);
    sh::run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    sh::run(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(SCHEMATHESIS),
    )?;
    std::fs::write(&stamp, SCHEMATHESIS)
        .with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(bin)
}

/// Inputs per fuzz target in the fuzz tier.
const CI_FUZZ_RUNS: u64 = 20_000;

/// What a tier did.
#[derive(Debug, Default)]
struct Report {
    /// Tests run, by libtest's summaries (`test result: ok. N passed`).
    passed: usize,
    /// Gated tests that printed why they did not run.
    not_run: Vec<String>,
    /// Ignored tests (the project has none; counted so that one shows).
    ignored: usize,
}

enum Outcome {
    Ran(Report),
    Skipped(String),
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let tiers: Vec<Tier> = if args.tiers.is_empty() {
        Tier::ALL.to_vec()
    } else {
        // In the tiers' own order, each once.
        let mut t = args.tiers.clone();
        t.sort();
        t.dedup();
        t
    };
    let root = project_root();
    // Before any tier can build the xtask again.
    xtask_exe()?;
    if !args.no_install {
        install(&tiers)?;
    }
    let skips = root.join("target/test-skips.txt");
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    let mut prebuild = None;
    let qemu_follows = tiers.contains(&Tier::Qemu) && root_required().is_none();
    // The fuzz tier runs beside the QEMU tier, whose booted VMs leave the
    // CPU idle for much of the time they wait (reboots, heartbeats).
    let fuzz_beside_qemu = qemu_follows && tiers.contains(&Tier::Fuzz);
    let mut fuzz = None;
    // The fresh tier (a build in a tree of its own, in a mount namespace of
    // its own) runs beside the host tier, whose tests mostly wait (on
    // minutes, heartbeats, grace periods).
    let fresh_beside_host =
        root_required().is_none() && tiers.contains(&Tier::Fresh) && tiers.contains(&Tier::Host);
    let mut fresh = None;
    for tier in tiers {
        let start = Instant::now();
        if tier == Tier::Fuzz && fuzz_beside_qemu {
            eprintln!("\n=== tier fuzz: runs beside the QEMU tier");
            continue;
        }
        // The fresh tier waits on apt and mmdebstrap, the host tier on its
        // tests: the build starts with whichever of them comes first.
        if matches!(tier, Tier::Fresh | Tier::Host) && qemu_follows && prebuild.is_none() {
            prebuild = Beside::start(
                &root,
                "the images' agent build",
                "prebuild-agent",
                crate::image::agent_build(&root),
            );
        }
        if tier == Tier::Fresh && fresh_beside_host {
            eprintln!("\n=== tier fresh: runs beside the host tier");
            let mut cmd = Command::new(xtask_exe()?);
            cmd.arg("fresh-tier");
            fresh = Beside::start(&root, "the fresh tier", "fresh", cmd);
            continue;
        }
        eprintln!("\n=== tier {}", tier.name());
        if tier == Tier::Qemu {
            if let Some(p) = prebuild.take() {
                match p.finish() {
                    Ok(secs) => eprintln!(
                        "xtask: the images' agent build, started early, ended after {secs:.0}s"
                    ),
                    Err(e) => {
                        eprintln!("xtask: {e:#}\nxtask: the image build tries again")
                    }
                }
            }
            if fuzz_beside_qemu {
                let mut cmd = Command::new(xtask_exe()?);
                cmd.args(["fuzz", "--runs"]).arg(CI_FUZZ_RUNS.to_string());
                fuzz = Beside::start(&root, "the fuzz tier", "fuzz", cmd);
            }
        }
        let _ = std::fs::remove_file(&skips);
        let before = residue::Snapshot::take();
        let result = run_tier(tier, &root, &skips);
        let mut after = residue::Snapshot::take();
        if tier == Tier::Host && fresh_beside_host {
            // The fresh tier's tree, mounted while mmdebstrap makes it.
            after = after.without_mounts_under(&root.join("target/fresh"));
        }
        let left = after.left_behind_since(&before);
        let secs = start.elapsed().as_secs_f64();
        let result = match (result, left) {
            (Ok(_), Some(left)) => Err(anyhow::anyhow!("the tier left things behind:\n{left}")),
            (Err(e), Some(left)) => Err(e.context(format!(
                "the tier failed, and left things behind:\n{left}\n"
            ))),
            (result, None) => result,
        };
        let line = match result {
            Ok(Outcome::Ran(report)) => {
                let mut line = format!("{}: passed in {secs:.0}s", tier.name());
                if tier.runs_tests() {
                    line.push_str(&format!(
                        ", {} tests ran",
                        report.passed - report.not_run.len().min(report.passed)
                    ));
                }
                if !report.not_run.is_empty() {
                    line.push_str(&format!(", {} NOT RUN", report.not_run.len()));
                    for why in &report.not_run {
                        eprintln!("    not run: {why}");
                    }
                    if under_ci() {
                        failed.push(tier.name());
                    }
                }
                if report.ignored > 0 {
                    line.push_str(&format!(", {} ignored", report.ignored));
                    failed.push(tier.name());
                }
                line
            }
            Ok(Outcome::Skipped(why)) => {
                if under_ci() {
                    failed.push(tier.name());
                }
                format!("{}: NOT RUN: {why}", tier.name())
            }
            Err(err) => {
                failed.push(tier.name());
                format!("{}: FAILED in {secs:.0}s: {err:#}", tier.name())
            }
        };
        eprintln!("=== tier {line}");
        lines.push(line);
        if tier == Tier::Host && fresh_beside_host {
            let line = match fresh.take() {
                Some(f) => match f.finish() {
                    Ok(secs) => format!("fresh: passed in {secs:.0}s, beside the host tier"),
                    Err(e) => {
                        failed.push(Tier::Fresh.name());
                        format!("fresh: FAILED beside the host tier: {e:#}")
                    }
                },
                None => {
                    failed.push(Tier::Fresh.name());
                    "fresh: FAILED: it could not start beside the host tier".to_string()
                }
            };
            eprintln!("=== tier {line}");
            lines.push(line);
        }
        if tier == Tier::Qemu && fuzz_beside_qemu {
            let line = match fuzz.take() {
                Some(f) => match f.finish() {
                    Ok(secs) => {
                        let log = std::fs::read_to_string(f_log(&root)).unwrap_or_default();
                        // The targets' table, as `cargo xtask fuzz` printed it.
                        if let Some(at) = log.find("\nfuzz (libFuzzer") {
                            eprintln!("{}", &log[at..]);
                        }
                        format!("fuzz: passed in {secs:.0}s, beside the QEMU tier")
                    }
                    Err(e) => {
                        failed.push(Tier::Fuzz.name());
                        format!("fuzz: FAILED beside the QEMU tier: {e:#}")
                    }
                },
                None => {
                    failed.push(Tier::Fuzz.name());
                    "fuzz: FAILED: it could not start beside the QEMU tier".to_string()
                }
            };
            eprintln!("=== tier {line}");
            lines.push(line);
        }
    }
    println!("\nsummary:");
    for line in &lines {
        println!("  {line}");
    }
    if !failed.is_empty() {
        failed.dedup();
        bail!(
            "tier(s) failed{}: {}",
            if under_ci() {
                " (under CI a tier or test that does not run fails)"
            } else {
                ""
            },
            failed.join(", ")
        );
    }
    Ok(())
}

/// Installs what the chosen tiers need, or explains why it cannot.
fn install(tiers: &[Tier]) -> anyhow::Result<()> {
    let steps: Vec<Step> = tiers.iter().flat_map(|t| t.steps()).collect();
    match deps::ensure("cargo xtask test", &steps) {
        Ok(()) => Ok(()),
        // Outside CI a developer without root still gets the tiers that can run.
        Err(err) if !under_ci() && !sh::is_root() => {
            eprintln!("xtask: warning: {err:#}");
            Ok(())
        }
        Err(err) => Err(err),
    }
}

fn cargo(root: &Path, skips: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()));
    cmd.current_dir(root).env("STRATA_TEST_SKIPS", skips);
    cmd
}

/// Runs a `cargo test` command, echoing its output, and adds up its
/// libtest summaries and the skips the tests wrote.
fn cargo_test(cmd: &mut Command, skips: &Path, report: &mut Report) -> anyhow::Result<()> {
    let out = sh::run_tee(cmd)?;
    for line in out.lines() {
        if let Some(counts) = parse_summary(line) {
            report.passed += counts.0;
            report.ignored += counts.1;
        }
    }
    if let Ok(text) = std::fs::read_to_string(skips) {
        report
            .not_run
            .extend(text.lines().filter(|l| !l.is_empty()).map(String::from));
    }
    let _ = std::fs::remove_file(skips);
    Ok(())
}

/// `(passed, ignored)` from a libtest line `test result: ok. 3 passed; 0
/// failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
fn parse_summary(line: &str) -> Option<(usize, usize)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';').find_map(|part| {
            let part = part
                .trim()
                .trim_start_matches("ok.")
                .trim_start_matches("FAILED.");
            part.trim()
                .strip_suffix(word)
                .and_then(|n| n.trim().parse::<usize>().ok())
        })
    };
    Some((count("passed")?, count("ignored").unwrap_or(0)))
}

fn run_tier(tier: Tier, root: &Path, skips: &Path) -> anyhow::Result<Outcome> {
    let mut report = Report::default();
    match tier {
        Tier::Fmt => sh::run(cargo(root, skips).args(["fmt", "--all", "--check"]))?,
        Tier::Clippy => {
            sh::run(cargo(root, skips).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))?;
            // The tests turn on the agent's `testing` feature; the binary in
            // the images is built without it, and is linted as it is built.
            sh::run(cargo(root, skips).args([
                "clippy", "-p", "agent", "--lib", "--bins", "--", "-D", "warnings",
            ]))?;
        }
        Tier::Unit => {
            cargo_test(
                cargo(root, skips).args([
                    "test",
                    "--workspace",
                    "--exclude",
                    "qemu-tests",
                    "--lib",
                    "--bins",
                ]),
                skips,
                &mut report,
            )?;
            cargo_test(
                cargo(root, skips).args(["test", "-p", "xtask", "--test", "tidy"]),
                skips,
                &mut report,
            )?;
            // The real Marathon and Metronome files beside the
            // repository (`../shared/fixtures/`), read in place.
            cargo_test(
                cargo(root, skips).args([
                    "test",
                    "-p",
                    "control",
                    "--test",
                    "marathon_fixtures",
                    "--test",
                    "metronome_fixtures",
                ]),
                skips,
                &mut report,
            )?;
        }
        Tier::Fuzz => {
            // Each target for a short run: enough to show that every one
            // builds, starts and survives its first inputs; the long runs
            // are `cargo xtask fuzz` (a million inputs each by default).
            crate::fuzz::run(&crate::fuzz::Args {
                runs: CI_FUZZ_RUNS,
                targets: Vec::new(),
            })?;
        }
        Tier::Fresh => {
            if let Some(why) = root_required() {
                return Ok(Outcome::Skipped(why));
            }
            fresh::run(root)?;
        }
        Tier::Host => {
            if let Some(why) = root_required() {
                return Ok(Outcome::Skipped(why));
            }
            let tests = test_files(&root.join("agent/tests"), "host_")?;
            if tests.is_empty() {
                bail!("no host tests found under agent/tests/host_*.rs");
            }
            let st = schemathesis(root)?;
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![st];
            paths.extend(std::env::split_paths(&path));
            let mut cmd = cargo(root, skips);
            cmd.env("PATH", std::env::join_paths(paths)?);
            cmd.args(["test", "-p", "agent"]);
            for t in &tests {
                cmd.args(["--test", t]);
            }
            cmd.args(["--", "--test-threads=1"]);
            let result = cargo_test(&mut cmd, skips, &mut report);
            residue::remove_parent_cgroups(&residue::host_prefix());
            result?;
        }
        Tier::Qemu => {
            if let Some(why) = root_required() {
                return Ok(Outcome::Skipped(why));
            }
            let exe = xtask_exe()?;
            sh::run(
                Command::new(&exe)
                    .current_dir(root)
                    .args(["image", "--role", "all"]),
            )?;
            // The bare-metal kernel: the join test boots its public agent
            // from this image.
            sh::run(
                Command::new(&exe)
                    .current_dir(root)
                    .args(["image", "--role", "public", "--kernel", "generic", "--out"])
                    .arg(qemu_tests::env::generic_images_dir()),
            )?;
            // A newer version of every image, whose bundles the upgrade
            // test installs on a booted agent and rolls over the cluster.
            sh::run(
                Command::new(&exe)
                    .current_dir(root)
                    .args(["image", "--role", "all", "--version"])
                    .arg(qemu_tests::env::UPGRADE_VERSION)
                    .arg("--out")
                    .arg(qemu_tests::env::upgrade_images_dir()),
            )?;
            cargo_test(
                cargo(root, skips).args([
                    "test",
                    "-p",
                    "qemu-tests",
                    "--tests",
                    "--",
                    "--test-threads=1",
                ]),
                skips,
                &mut report,
            )?;
        }
    }
    Ok(Outcome::Ran(report))
}

/// The log of a command run [`Beside`] the tiers, by its short name.
fn beside_log(root: &Path, short: &str) -> std::path::PathBuf {
    root.join("target").join(format!("{short}.log"))
}

/// The fuzz tier's log when it runs beside the QEMU tier.
fn f_log(root: &Path) -> std::path::PathBuf {
    beside_log(root, "fuzz")
}

/// A command run beside the tiers under `nice -n 19`, so that a tier that
/// needs the CPU gets it first, with its output in `target/<short>.log`
/// and its own residue mark (so that the residue check does not count it
/// as left by a tier):
///
/// - the images' agent build ([`crate::image::agent_build`]), started with
///   the fresh tier (or the host tier) when the QEMU tier follows. The
///   fresh tier spends much of its time on apt and mmdebstrap, the host
///   tier's tests most of theirs waiting (on etcd, heartbeats,
///   containers), and the release build, the longest part of the QEMU
///   tier's image builds, fills that time. Cargo locks the release
///   directory apart from the debug one the tests build in. The QEMU tier
///   waits for it, and its image build then finds the agent built (or,
///   after a failure here, builds it again and shows the error);
/// - the fuzz tier (`cargo xtask fuzz`, in `target/fuzz`), beside the QEMU
///   tier, whose VMs wait for much of its time;
/// - the fresh tier (`cargo xtask fresh-tier`, a build in a tree and a
///   mount namespace of its own), beside the host tier, whose tests wait
///   for much of theirs. It has no residue check of its own (the host
///   tier's names would be counted as its); what it starts carries its
///   own mark, so the host tier's check does not count it either.
struct Beside {
    child: std::process::Child,
    what: &'static str,
    log: std::path::PathBuf,
    started: Instant,
}

impl Drop for Beside {
    /// A run that ends before it was waited for (a panic) leaves nothing
    /// running; after [`Beside::finish`] the child has been waited for,
    /// and neither call does anything.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Beside {
    fn start(root: &Path, what: &'static str, short: &str, command: Command) -> Option<Beside> {
        let log = beside_log(root, short);
        let started = Instant::now();
        let spawned = (|| -> anyhow::Result<std::process::Child> {
            std::fs::create_dir_all(root.join("target"))?;
            let out = std::fs::File::create(&log)?;
            let mut cmd = Command::new("nice");
            cmd.args(["-n", "19"])
                .arg(command.get_program())
                .args(command.get_args())
                .current_dir(command.get_current_dir().unwrap_or(root));
            for (key, value) in command.get_envs() {
                match value {
                    Some(v) => cmd.env(key, v),
                    None => cmd.env_remove(key),
                };
            }
            cmd.env(residue::MARK, format!("{}-{short}", residue::mark_value()))
                .stdin(std::process::Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out);
            Ok(cmd.spawn()?)
        })();
        match spawned {
            Ok(child) => {
                eprintln!(
                    "xtask: {what} runs beside the tiers (log: {})",
                    log.display()
                );
                Some(Beside {
                    child,
                    what,
                    log,
                    started,
                })
            }
            Err(e) => {
                eprintln!("xtask: {what} could not start beside the tiers: {e:#}");
                None
            }
        }
    }

    /// Waits for the command: the seconds since it started, or how it
    /// failed with the last lines of its log.
    fn finish(mut self) -> anyhow::Result<f64> {
        let status = self.child.wait();
        let secs = self.started.elapsed().as_secs_f64();
        match status {
            Ok(s) if s.success() => Ok(secs),
            other => {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                bail!(
                    "{} failed after {secs:.0}s ({other:?}); the end of {}:\n{}",
                    self.what,
                    self.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            }
        }
    }
}

/// The path of this xtask's executable, as it was when the run started.
/// An earlier tier may build the xtask again (`cargo test -p xtask` links
/// its binary for the tests, with its dev-dependencies' features), which
/// replaces the file: `/proc/self/exe` then names it `... (deleted)`, and
/// the path itself holds the new build, which is the one to run.
fn xtask_exe() -> anyhow::Result<std::path::PathBuf> {
    static EXE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    EXE.get_or_init(|| std::env::current_exe().ok())
        .clone()
        .context("cannot find the xtask executable")
}

/// Why a tier that needs root cannot run here, or None. Under CI a missing
/// prerequisite is an error, never a skip.
fn root_required() -> Option<String> {
    if sh::is_root() {
        return None;
    }
    if under_ci() {
        // Run anyway: the tests' own environment checks fail loudly under CI.
        return None;
    }
    Some("needs root (network namespaces, loop devices, cgroups)".to_string())
}

/// Names of the test targets `dir/<prefix>*.rs`.
fn test_files(dir: &Path, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".rs")
            && stem.starts_with(prefix)
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::parse_summary;

    #[test]
    fn reads_libtest_summaries() {
        assert_eq!(
            parse_summary(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.31s"
            ),
            Some((12, 1))
        );
        assert_eq!(
            parse_summary(
                "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out"
            ),
            Some((3, 0))
        );
        assert_eq!(parse_summary("running 3 tests"), None);
        assert_eq!(parse_summary("test foo ... ok"), None);
    }
}
