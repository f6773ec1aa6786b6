//! `cargo xtask image`: builds the bootable disk images of the roles.
//!
//! Steps per role: host tools (`crate::deps`), the Debian tree from mmdebstrap,
//! cached by its package list ([`tree`]), the agent and the Strata files
//! added on a hard-linked copy of it ([`stage`]), then the erofs root,
//! dm-verity, the UKI, the ESP, the state partition, the GPT disk, the
//! qcow2, the signed update bundle and the manifest ([`assemble`]). Every
//! output is written under a temporary name and renamed into place.

pub mod assemble;
pub mod stage;
pub mod tree;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use configs::Role;

use crate::{project_root, sh};

/// Which kernel the images boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// `linux-image-cloud-amd64`: virtio and cloud drivers only, small.
    Cloud,
    /// `linux-image-amd64`: every driver, for bare metal.
    Generic,
}

impl Kernel {
    pub fn package(self) -> &'static str {
        match self {
            Kernel::Cloud => "linux-image-cloud-amd64",
            Kernel::Generic => "linux-image-amd64",
        }
    }
}

/// A role, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleArg {
    One(Role),
    All,
}

impl std::str::FromStr for RoleArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "all" {
            return Ok(RoleArg::All);
        }
        s.parse::<Role>().map(RoleArg::One).map_err(|_| {
            format!("unknown role `{s}`, expected one of master, private, public, all")
        })
    }
}

impl RoleArg {
    pub fn roles(self) -> Vec<Role> {
        match self {
            RoleArg::One(r) => vec![r],
            RoleArg::All => Role::ALL.to_vec(),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// master, private, public or all.
    #[arg(long)]
    pub role: RoleArg,
    /// Where the images go (default `target/images/`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The kernel flavour.
    #[arg(long, value_enum, default_value = "cloud")]
    pub kernel: Kernel,
    /// ed25519 private key (PKCS#8 PEM) that signs the update bundles; a
    /// development key is made under `target/` when absent.
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
    /// Size of the disk image in MiB (the state partition takes the rest).
    #[arg(long, default_value_t = image::plan::DEFAULT_DISK_SIZE / image::plan::MIB)]
    pub disk_size_mib: u64,
    /// The image version (`IMAGE_VERSION`, the manifest's and the
    /// bundle's), a semantic version such as `0.2.0`; the commit is added
    /// as build metadata (`0.2.0+g1a2b3c4d5e6f`) unless it has its own.
    /// Default: the workspace's version.
    #[arg(long, value_parser = parse_version)]
    pub version: Option<image::version::ImageVersion>,
}

fn parse_version(text: &str) -> Result<image::version::ImageVersion, String> {
    text.parse()
        .map_err(|e: image::version::VersionError| e.to_string())
}

/// What a build produced for one role (for the bench and the tests).
#[derive(Debug, Clone)]
pub struct Built {
    pub role: Role,
    pub raw: PathBuf,
    pub qcow2: PathBuf,
    pub update: PathBuf,
    pub manifest: PathBuf,
    pub root_size: u64,
    pub root_hash: String,
    /// How long each step took, e.g. `master: stage 0.4 s, erofs 3.1 s, …`.
    pub steps: String,
}

/// Runs `cargo xtask image`.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let built = build(args)?;
    for b in &built {
        println!(
            "{}: {} (root {:.1} MB, roothash {})\n  {}\n  {}\n  {}",
            b.role,
            b.raw.display(),
            b.root_size as f64 / 1e6,
            b.root_hash,
            b.qcow2.display(),
            b.update.display(),
            b.manifest.display()
        );
    }
    Ok(())
}

/// Builds the images of the roles in `args` and returns what was written.
pub fn build(args: &Args) -> anyhow::Result<Vec<Built>> {
    build_timed(args).map(|(built, _)| built)
}

/// [`build`], also returning the time of the steps shared by the roles
/// (`all roles: agent 4.2 s, trees 0.0 s, roles 12.0 s`).
pub fn build_timed(args: &Args) -> anyhow::Result<(Vec<Built>, String)> {
    let start = Instant::now();
    crate::deps::ensure("cargo xtask image", crate::deps::IMAGE)?;
    let root = project_root();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("target/images"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let disk_size = args.disk_size_mib * image::plan::MIB;
    let version = version(&root, args.version.as_ref());
    let epoch = source_date_epoch(&root)?;
    let key = signing_key(&root, args.signing_key.as_deref())?;
    let mut steps = Steps::new("all roles");
    let agent = build_agent(&root)?;
    steps.done("agent");
    prepare_trees(&root, args)?;
    steps.done("trees");
    // What each role is made from (cheap), then the roles at the same time:
    // mkfs.erofs and the hashing are single-threaded, so one role at a time
    // leaves a core idle.
    let mut inputs = Vec::new();
    for role in args.role.roles() {
        let role_file = root.join(format!("configs/roles/{role}.toml"));
        let role_text = std::fs::read_to_string(&role_file)
            .with_context(|| format!("cannot read {}", role_file.display()))?;
        let role_config =
            configs::role::RoleConfig::parse(&role_file.display().to_string(), &role_text)?;
        if role_config.role != role {
            bail!(
                "{}: says role = {}, expected {role}",
                role_file.display(),
                role_config.role
            );
        }
        let tree = tree::ensure(&root, &tree::packages(args.kernel, &role_config.packages))?;
        inputs.push((
            role,
            role_text,
            tree,
            root.join("target/image-work").join(role.as_str()),
        ));
    }
    let in_use = inputs
        .iter()
        .filter_map(|(_, _, tree, _)| tree.dir.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .collect();
    for gone in tree::prune(&root, &in_use, tree::KEEP_UNUSED)? {
        eprintln!("xtask: removed the cached tree {gone}, unused for over two weeks");
    }
    let built = std::thread::scope(|s| {
        let jobs: Vec<_> = inputs
            .iter()
            .map(|(role, role_text, tree, work)| {
                let input = assemble::Input {
                    role: *role,
                    version: &version,
                    epoch,
                    kernel: args.kernel,
                    tree,
                    agent: &agent,
                    role_text,
                    key: &key,
                    disk_size,
                    out: &out,
                    work,
                };
                (*role, s.spawn(move || assemble::role_image(&input)))
            })
            .collect();
        // Wait for every role before reporting the first failure, so that
        // no build is left running behind the error.
        let results: Vec<_> = jobs
            .into_iter()
            .map(|(role, job)| {
                job.join()
                    .map_err(|_| anyhow::anyhow!("the {role} image build panicked"))
                    .and_then(|r| r.with_context(|| format!("cannot build the {role} image")))
            })
            .collect();
        results.into_iter().collect::<anyhow::Result<Vec<_>>>()
    })?;
    steps.done("roles");
    eprintln!("xtask: {}", steps.summary());
    eprintln!(
        "xtask: images built in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    Ok((built, steps.summary()))
}

/// Makes the trees the roles need, the missing ones at the same time
/// (mmdebstrap and dracut are mostly single-threaded).
fn prepare_trees(root: &Path, args: &Args) -> anyhow::Result<()> {
    let mut lists = Vec::new();
    for role in args.role.roles() {
        let file = root.join(format!("configs/roles/{role}.toml"));
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let config = configs::role::RoleConfig::parse(&file.display().to_string(), &text)?;
        let list = tree::packages(args.kernel, &config.packages);
        if !lists.contains(&list) {
            lists.push(list);
        }
    }
    std::thread::scope(|s| {
        let jobs: Vec<_> = lists
            .iter()
            .map(|list| s.spawn(move || tree::ensure(root, list)))
            .collect();
        for job in jobs {
            job.join()
                .map_err(|_| anyhow::anyhow!("a tree build panicked"))??;
        }
        Ok(())
    })
}

/// The image version: `asked` (or the workspace's version) and the commit
/// as build metadata, e.g. `0.1.0+g1a2b3c4d5e6f`; a version asked with its
/// own build metadata is kept as it is.
pub fn version(root: &Path, asked: Option<&image::version::ImageVersion>) -> String {
    if let Some(v) = asked.filter(|v| v.has_build()) {
        return v.to_string();
    }
    let base = asked.map_or_else(|| env!("CARGO_PKG_VERSION").to_string(), |v| v.to_string());
    let commit =
        sh::output(
            Command::new("git")
                .current_dir(root)
                .args(["rev-parse", "--short=12", "HEAD"]),
        )
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if commit.is_empty() {
        base
    } else {
        format!("{base}+g{commit}")
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, else the commit time of HEAD.
fn source_date_epoch(root: &Path) -> anyhow::Result<u64> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH") {
        return v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"));
    }
    let t = sh::output(
        Command::new("git")
            .current_dir(root)
            .args(["log", "-1", "--format=%ct"]),
    )
    .unwrap_or_default();
    Ok(t.trim().parse().unwrap_or(0))
}

/// The signing key: `--signing-key FILE`, or the development key under
/// `target/strata-dev-signing.pem`, made on first use.
fn signing_key(root: &Path, file: Option<&Path>) -> anyhow::Result<ed25519_dalek::SigningKey> {
    let path = match file {
        Some(p) => p.to_path_buf(),
        None => {
            let p = root.join("target/strata-dev-signing.pem");
            if !p.exists() {
                let mut seed = [0u8; 32];
                std::io::Read::read_exact(
                    &mut std::fs::File::open("/dev/urandom").context("cannot open /dev/urandom")?,
                    &mut seed,
                )
                .context("cannot read /dev/urandom")?;
                std::fs::create_dir_all(root.join("target"))?;
                write_atomic(&p, image::key::signing_key_pem(seed).as_bytes())?;
                eprintln!("xtask: made a development signing key: {}", p.display());
            }
            p
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    Ok(image::key::parse_signing_key(
        &path.display().to_string(),
        &text,
    )?)
}

/// Builds the agent in release mode and returns the binary's path.
fn build_agent(root: &Path) -> anyhow::Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = if target.is_relative() {
        root.join(target)
    } else {
        target
    };
    let bin = target.join("release/strata");
    // The binary is copied right after the build and the copy is checked: a
    // target directory shared with other checkouts can have its `strata`
    // replaced by another build at any time.
    let copy = root.join("target/image-work/strata");
    std::fs::create_dir_all(root.join("target/image-work"))?;
    for _ in 0..3 {
        sh::run(&mut agent_build(root))?;
        if !bin.is_file() {
            bail!("the agent build did not produce {}", bin.display());
        }
        std::fs::copy(&bin, &copy)
            .with_context(|| format!("cannot copy {} to {}", bin.display(), copy.display()))?;
        let ok = Command::new(&copy)
            .args(["agent", "--help"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Ok(copy);
        }
        eprintln!(
            "xtask: {} is not this checkout's agent (a shared target directory?), building again",
            bin.display()
        );
        // Make cargo relink it.
        let _ = std::fs::remove_file(&bin);
    }
    bail!(
        "{} keeps being replaced by another build: use a target directory of this checkout",
        bin.display()
    )
}

/// The release build of the agent that goes into the images
/// (`cargo build --release -p agent --bin strata` in `root`). The test
/// tiers start the same command early ([`crate::test`]), so that the image
/// build finds it done.
pub fn agent_build(root: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "-p", "agent", "--bin", "strata"]);
    // `cargo xtask` runs this process with the xtask's package variables
    // (CARGO_PKG_NAME=xtask, CARGO_MANIFEST_DIR, …). Build scripts that
    // watch them (ring's does) would then differ from a plain `cargo
    // build` and rebuild, with every crate above them, each time one
    // follows the other: give cargo the caller's environment.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_MANIFEST_LINKS",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "OUT_DIR",
            ]
            .contains(&key.as_ref())
        {
            cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

/// Wall-clock time of each step of a build, printed on one line such as
/// `master: stage 0.4 s, erofs 6.1 s, verity 0.5 s`.
#[derive(Debug)]
pub struct Steps {
    label: String,
    last: Instant,
    steps: Vec<(&'static str, f64)>,
}

impl Steps {
    pub fn new(label: &str) -> Steps {
        Steps {
            label: label.to_string(),
            last: Instant::now(),
            steps: Vec::new(),
        }
    }

    /// Records the time since the previous step (or the start) under `name`.
    pub fn done(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps
            .push((name, now.duration_since(self.last).as_secs_f64()));
        self.last = now;
    }

    /// `label: a 1.0 s, b 2.0 s (total 3.0 s)`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .steps
            .iter()
            .map(|(n, s)| format!("{n} {s:.1} s"))
            .collect();
        let total: f64 = self.steps.iter().map(|(_, s)| s).sum();
        format!("{}: {} (total {total:.1} s)", self.label, parts.join(", "))
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// failure never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = tmp_name(path);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// The temporary name a file is written under before its rename.
pub fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_with_a_clear_error() {
        assert_eq!("all".parse::<RoleArg>(), Ok(RoleArg::All));
        assert_eq!(
            "master".parse::<RoleArg>().map(RoleArg::roles),
            Ok(vec![Role::Master])
        );
        expect_test::expect!["unknown role `worker`, expected one of master, private, public, all"]
            .assert_eq(&"worker".parse::<RoleArg>().unwrap_err());
    }

    #[test]
    fn a_bad_signing_key_names_the_file() {
        let dir = std::env::temp_dir().join(format!("strata-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key.pem");
        std::fs::write(&file, "not a key").unwrap();
        let e = signing_key(&dir, Some(&file)).unwrap_err();
        assert!(
            format!("{e:#}")
                .starts_with(&format!("{}: not an ed25519 private key", file.display())),
            "{e:#}"
        );
        let e = signing_key(&dir, Some(&dir.join("missing.pem"))).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("cannot read the signing key"),
            "{e:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
