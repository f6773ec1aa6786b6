//! `cargo xtask fuzz`: builds the fuzz targets of `agent/fuzz` (one per
//! parser that takes outside input) with libFuzzer's coverage
//! instrumentation on the stable toolchain, and runs each for a number of
//! inputs (a million by default; the fuzz test tier runs a few thousand).
//! Each target's corpus is kept under `target/fuzz/corpus/<target>`, so
//! later runs start where earlier ones stopped; an input that fails a
//! target is written to `target/fuzz/artifacts/<target>/` and fails the
//! run with the command that replays it. It prints, per target, the inputs
//! run, the time, executions per second, coverage and peak memory.
//!
//! `agent/fuzz` is in cargo-fuzz's layout too: `cargo fuzz run NAME` works
//! there with cargo-fuzz and a nightly toolchain (with AddressSanitizer).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::{deps, project_root, sh};

/// The targets, each with the directories of seed inputs it reads (beside
/// its corpus; relative to the workspace root) and the largest input.
const TARGETS: &[(&str, &[&str], usize)] = &[
    ("user_data", &["configs", "configs/roles"], 8 << 10),
    ("task_file", &[], 8 << 10),
    ("job_file", &[], 8 << 10),
    ("join_token", &[], 512),
    ("image_config", &[], 16 << 10),
    ("layer", &[], 64 << 10),
    ("docker_archive", &[], 64 << 10),
    ("oci_index", &[], 8 << 10),
    ("bundle", &[], 16 << 10),
    ("bootstrap_http", &[], 8 << 10),
];

/// The host triple the targets are built for: naming it keeps
/// `RUSTFLAGS` (the instrumentation) off build scripts and proc macros.
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// What cargo-fuzz passes for libFuzzer's coverage, without a sanitizer
/// (which needs nightly): the targets look for panics, wrong answers,
/// hangs and memory blow-ups.
const RUSTFLAGS: &str = "--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks";

/// Arguments of `cargo xtask fuzz`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Inputs to run per target.
    #[arg(long, default_value_t = 1_000_000)]
    pub runs: u64,
    /// Run only these targets (repeatable); all of them by default.
    #[arg(long = "target")]
    pub targets: Vec<String>,
}

/// One target's run, from libFuzzer's final statistics.
#[derive(Debug, Default)]
struct Stats {
    runs: u64,
    execs_per_sec: u64,
    peak_rss_mb: u64,
    coverage: u64,
    corpus: u64,
    secs: f64,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    deps::ensure("cargo xtask fuzz", deps::FUZZ)?;
    for name in &args.targets {
        if !TARGETS.iter().any(|(t, _, _)| t == name) {
            let names: Vec<&str> = TARGETS.iter().map(|(t, _, _)| *t).collect();
            bail!(
                "no fuzz target `{name}`: the targets are {}",
                names.join(", ")
            );
        }
    }
    let root = project_root();
    let target_dir = root.join("target/fuzz");
    let build = Instant::now();
    sh::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root.join("agent/fuzz"))
            .env("RUSTFLAGS", RUSTFLAGS)
            .args([
                "build",
                "--release",
                "--locked",
                "--bins",
                "--target",
                TRIPLE,
            ])
            .arg("--target-dir")
            .arg(&target_dir),
    )?;
    eprintln!(
        "xtask: fuzz targets built in {:.1}s",
        build.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    for (name, seeds, max_len) in TARGETS {
        if !args.targets.is_empty() && !args.targets.iter().any(|t| t == name) {
            continue;
        }
        let exe = target_dir.join(TRIPLE).join("release").join(name);
        let made = target_dir.join("seeds").join(name);
        write_seeds(name, &made)?;
        let mut seeds: Vec<PathBuf> = seeds.iter().map(|s| root.join(s)).collect();
        seeds.push(made);
        let stats = run_target(&root, &target_dir, &exe, name, &seeds, *max_len, args.runs)?;
        rows.push((*name, stats));
    }
    println!(
        "\nfuzz (libFuzzer, coverage-guided, no sanitizer; {} inputs per target):",
        args.runs
    );
    println!(
        "{:<16} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8}",
        "TARGET", "INPUTS", "SECONDS", "EXEC/S", "COVER", "CORPUS", "RSS MB"
    );
    for (name, s) in &rows {
        // libFuzzer's own rate is 0 for runs under a second.
        let rate = if s.execs_per_sec > 0 {
            s.execs_per_sec
        } else {
            (s.runs as f64 / s.secs.max(0.001)) as u64
        };
        println!(
            "{name:<16} {:>10} {:>8.1} {:>10} {:>8} {:>8} {:>8}",
            s.runs, s.secs, rate, s.coverage, s.corpus, s.peak_rss_mb
        );
    }
    println!(
        "\nCOVER: coverage points (edges) reached; CORPUS: inputs kept in target/fuzz/corpus/<target>."
    );
    Ok(())
}

/// Runs one target for `runs` inputs and reads its statistics.
fn run_target(
    root: &Path,
    target_dir: &Path,
    exe: &Path,
    name: &str,
    seeds: &[PathBuf],
    max_len: usize,
    runs: u64,
) -> anyhow::Result<Stats> {
    let corpus = target_dir.join("corpus").join(name);
    let artifacts = target_dir.join("artifacts").join(name);
    for dir in [&corpus, &artifacts] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut cmd = Command::new(exe);
    cmd.current_dir(root)
        .arg(format!("-runs={runs}"))
        .arg(format!("-max_len={max_len}"))
        .arg("-rss_limit_mb=2048")
        .arg("-timeout=20")
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&corpus);
    cmd.args(seeds);
    eprintln!("$ {}", sh::display(&cmd));
    let start = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    let secs = start.elapsed().as_secs_f64();
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target `{name}` failed ({}) after {secs:.1}s; the input is in {} \
             (replay: {} <file>):\n{}",
            out.status,
            artifacts.display(),
            exe.display(),
            tail.join("\n")
        );
    }
    let mut stats = parse_stats(&log);
    stats.secs = secs;
    if stats.runs < runs {
        bail!(
            "fuzz target `{name}` ran {} inputs, not {runs}:\n{log}",
            stats.runs
        );
    }
    Ok(stats)
}

/// Writes the seed inputs of target `name` into `dir` (made afresh): a few
/// valid inputs of its format, so that the fuzzer starts inside it (a tar
/// or a JSON document is hard to find from random bytes). The tar seeds
/// are made with `tar` from a tree holding what layers hold: files, a
/// directory, a symbolic link, a hard link, a whiteout and an opaque
/// directory marker.
fn write_seeds(name: &str, dir: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let write = |file: &str, bytes: &[u8]| {
        std::fs::write(dir.join(file), bytes)
            .with_context(|| format!("cannot write {}", dir.join(file).display()))
    };
    const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"User":"1000:1000","WorkingDir":"/srv"},"rootfs":{"type":"layers","diff_ids":["sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"]}}"#;
    match name {
        "layer" => {
            let tree = dir.join("tree");
            layer_tree(&tree)?;
            tar(&tree, &dir.join("layer.tar"), false)?;
            tar(&tree, &dir.join("layer.tar.gz"), true)?;
            std::fs::remove_dir_all(&tree)?;
        }
        "docker_archive" => {
            let tree = dir.join("tree");
            let image = dir.join("image");
            layer_tree(&tree)?;
            std::fs::create_dir_all(&image)?;
            tar(&tree, &image.join("layer.tar"), false)?;
            std::fs::write(image.join("config.json"), CONFIG)?;
            std::fs::write(
                image.join("manifest.json"),
                r#"[{"Config":"config.json","RepoTags":["seed:1"],"Layers":["layer.tar"]}]"#,
            )?;
            tar(&image, &dir.join("image.tar"), false)?;
            std::fs::remove_dir_all(&tree)?;
            std::fs::remove_dir_all(&image)?;
        }
        "image_config" => write("config.json", CONFIG.as_bytes())?,
        "oci_index" => write(
            "index.json",
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","size":400,"annotations":{"org.opencontainers.image.ref.name":"seed:1"},"platform":{"architecture":"amd64","os":"linux"}}]}"#,
        )?,
        "task_file" => {
            write(
                "web.toml",
                b"id = \"web\"\nimage = \"registry.example/nginx:1.27\"\ncommand = [\"nginx\", \"-g\", \"daemon off;\"]\ncpus = 0.5\nmem = \"128MiB\"\npids = 64\nread_only = true\nrestart = \"on-failure\"\n[env]\nMODE = \"prod\"\n",
            )?;
            write(
                "request.json",
                br#"{"node":"agent-1","spec":{"id":"web","image":"registry.example/nginx:1.27","command":["nginx"],"env":{"A":"b"},"cpus":0.5,"mem":"128MiB","restart":"always","ports":[80]}}"#,
            )?;
        }
        "job_file" => {
            write(
                "nightly.toml",
                b"id = \"backup.nightly\"\n[run]\nimage = \"busybox:1.36\"\ncmd = \"echo dump\"\nmem = 64\nrestart = { policy = \"on-failure\", active_deadline_seconds = 600 }\n[[schedules]]\nid = \"nightly\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Paris\"\nconcurrency_policy = \"replace\"\n",
            )?;
            write(
                "metronome.json",
                br#"{"id":"prod.sleep","run":{"cmd":"sleep 10","cpus":0.5,"mem":32,"disk":0,"docker":{"image":"busybox"},"restart":{"policy":"ON_FAILURE","activeDeadlineSeconds":60},"placement":{"constraints":[{"attribute":"hostname","operator":"EQ","value":"a"}]}},"schedules":[{"id":"five","cron":"*/5 * * * * 2030","timezone":"America/Chicago","concurrencyPolicy":"ALLOW"}]}"#,
            )?;
        }
        "join_token" => write(
            "token",
            format!("strata-join.v1.{}.{}", "ab".repeat(32), "cd".repeat(12)).as_bytes(),
        )?,
        "user_data" => write(
            "user-data.toml",
            b"cluster = \"demo\"\nname = \"private-1\"\nrole = \"private\"\nmasters = [\"10.9.0.10:6443\"]\njoin_token = \"t\"\n[network]\ninterface = \"enp0s16\"\naddress = \"10.9.0.21/24\"\ngateway = \"10.9.0.1\"\ndns = [\"10.9.0.1\"]\n",
        )?,
        "bootstrap_http" => {
            write("plain", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")?;
            write(
                "chunked",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            )?;
        }
        _ => {}
    }
    Ok(())
}

/// A layer's tree: a file, a directory with a file, a relative symbolic
/// link, a hard link, a whiteout and an opaque directory marker.
fn layer_tree(tree: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(tree.join("etc/app"))?;
    std::fs::write(tree.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n")?;
    std::fs::write(tree.join("etc/app/conf"), "a = 1\n")?;
    std::os::unix::fs::symlink("../passwd", tree.join("etc/app/link"))?;
    std::fs::hard_link(tree.join("etc/app/conf"), tree.join("etc/hard"))?;
    std::fs::write(tree.join("etc/.wh.gone"), "")?;
    std::fs::write(tree.join("etc/app/.wh..wh..opq"), "")?;
    Ok(())
}

/// `tar` of the contents of `tree` into `out` (gzip when `gzip`).
fn tar(tree: &Path, out: &Path, gzip: bool) -> anyhow::Result<()> {
    sh::run(
        Command::new("tar")
            .arg(if gzip { "-czf" } else { "-cf" })
            .arg(out)
            .arg("-C")
            .arg(tree)
            .arg("."),
    )
}

/// libFuzzer's `-print_final_stats` lines (`stat::number_of_executed_units:
/// 1000`), and the last coverage and corpus figures of its status lines
/// (`#1000 DONE cov: 812 ft: 2040 corp: 95/3120b ...`).
fn parse_stats(log: &str) -> Stats {
    let mut s = Stats::default();
    for line in log.lines() {
        let stat = |key: &str| {
            line.strip_prefix(key)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let Some(v) = stat("stat::number_of_executed_units:") {
            s.runs = v;
        } else if let Some(v) = stat("stat::average_exec_per_sec:") {
            s.execs_per_sec = v;
        } else if let Some(v) = stat("stat::peak_rss_mb:") {
            s.peak_rss_mb = v;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.windows(2) {
            match pair[0] {
                "cov:" => s.coverage = pair[1].parse().unwrap_or(s.coverage),
                "corp:" => {
                    s.corpus = pair[1]
                        .split('/')
                        .next()
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(s.corpus)
                }
                _ => {}
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libfuzzer_statistics_are_read() {
        let log = "INFO: Seed: 1\n#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #1000\tDONE   cov: 812 ft: 2040 corp: 95/3120b lim: 4 exec/s: 500 rss: 41Mb\n\
                   Done 1000 runs in 2 second(s)\n\
                   stat::number_of_executed_units: 1000\n\
                   stat::average_exec_per_sec:     500\n\
                   stat::new_units_added:          94\n\
                   stat::slowest_unit_time_sec:    0\n\
                   stat::peak_rss_mb:              41\n";
        let s = parse_stats(log);
        assert_eq!(
            (s.runs, s.execs_per_sec, s.peak_rss_mb, s.coverage, s.corpus),
            (1000, 500, 41, 812, 95)
        );
    }

    #[test]
    fn every_target_is_built_and_every_built_target_is_run() {
        let manifest = std::fs::read_to_string(project_root().join("agent/fuzz/Cargo.toml"))
            .expect("agent/fuzz/Cargo.toml");
        let mut built: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.strip_prefix("name = \""))
            .filter_map(|l| l.strip_suffix('"'))
            .filter(|n| *n != "strata-fuzz")
            .collect();
        built.sort();
        let mut listed: Vec<&str> = TARGETS.iter().map(|(t, _, _)| *t).collect();
        listed.sort();
        assert_eq!(built, listed);
    }
}
