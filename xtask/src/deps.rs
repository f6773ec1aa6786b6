//! Host packages each step of the build and the tests needs, and their
//! installation with apt on Debian bookworm.
//!
//! Every step names the files it runs or reads from the host ([`Tool`]) and
//! the package that provides each. A command runs several steps; what it
//! installs is the union of their packages ([`missing`] over its steps), so
//! `cargo xtask image` holds the agent build's packages because it builds the
//! agent, and the QEMU tier holds the image's because it builds images. The
//! unit tests below pin those inclusions. Before a command builds anything,
//! [`ensure`] checks each tool by its path (not by the package database), so
//! a missing tool stops the command with the package that provides it, never
//! with a build script's panic halfway through.
//!
//! Packages are installed with `--no-install-recommends`: a package that a
//! step needs only through another's recommendation (as `protoc` needs
//! `libprotobuf-dev` for the well-known `.proto` files) must be listed.
//!
//! QEMU comes from bookworm-backports: the machine's preinstalled
//! `qemu-utils` is the backports build and conflicts with bookworm's own
//! `qemu-system-x86`.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::sh;

/// Which suite a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Suite {
    /// The machine's own bookworm sources.
    Bookworm,
    /// bookworm-backports, added by [`ensure`] when needed.
    Backports,
}

/// A program on `PATH` (a bare name) or a file (an absolute path) that a step
/// needs, and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tool {
    pub path: &'static str,
    pub package: &'static str,
    pub suite: Suite,
}

const fn t(path: &'static str, package: &'static str) -> Tool {
    Tool {
        path,
        package,
        suite: Suite::Bookworm,
    }
}

const fn bp(path: &'static str, package: &'static str) -> Tool {
    Tool {
        path,
        package,
        suite: Suite::Backports,
    }
}

impl Tool {
    /// Whether the tool is on this machine.
    pub fn present(&self) -> bool {
        if self.path.starts_with('/') {
            Path::new(self.path).exists()
        } else {
            sh::have(self.path)
        }
    }
}

/// One step of a command, by what it runs on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Step {
    /// `cargo build` of the workspace with the agent: etcd-client's build
    /// script runs `protoc` on `.proto` files that import the well-known
    /// types; libcontainer's `libseccomp` links `libseccomp.so`; its
    /// `cgroupsv2_devices` builds libbpf (libbpf-sys, with `make`) against
    /// libelf's and zlib's headers and links `libelf.so` and `libz.so`;
    /// ring and other crates build C with `cc`.
    AgentBuild,
    /// `cargo xtask image`: mmdebstrap, erofs, dm-verity, the ESP, the GPT
    /// disk, the UKI stub and systemd-boot, qcow2.
    ImageBuild,
    /// Host integration tests: real etcd, network namespaces, nftables,
    /// iperf3, a private D-Bus, filesystem images.
    HostTests,
    /// Container tests and `bench runtime`: a busybox image built with umoci,
    /// served from a real registry over TLS (openssl, python3), copied with
    /// skopeo, crun to compare with, and the seccomp probe (a static C
    /// program: glibc's libc.a) run in a task and, as control, under
    /// setpriv.
    Runtime,
    /// Booting images: QEMU (backports) with OVMF.
    QemuBoot,
    /// The QEMU tier beside booting: a registry on the host side and config
    /// disks (`STRATA-CFG` as vfat and as iso9660).
    QemuFixtures,
    /// The fresh-machine tier: a bookworm tree made with mmdebstrap.
    FreshTree,
    /// `cargo xtask fuzz`: libfuzzer-sys compiles libFuzzer (C++).
    Fuzz,
    /// `cargo xtask bench edge`: wrk, the load generator.
    EdgeBench,
}

impl Step {
    /// The tools of the step.
    pub fn tools(self) -> &'static [Tool] {
        match self {
            Step::AgentBuild => AGENT_BUILD_TOOLS,
            Step::ImageBuild => IMAGE_BUILD_TOOLS,
            Step::HostTests => HOST_TESTS_TOOLS,
            Step::Runtime => RUNTIME_TOOLS,
            Step::QemuBoot => QEMU_BOOT_TOOLS,
            Step::QemuFixtures => QEMU_FIXTURES_TOOLS,
            Step::FreshTree => FRESH_TREE_TOOLS,
            Step::Fuzz => FUZZ_TOOLS,
            Step::EdgeBench => EDGE_BENCH_TOOLS,
        }
    }

    /// The packages of the step's tools.
    pub fn packages(self) -> BTreeSet<(&'static str, Suite)> {
        self.tools().iter().map(|t| (t.package, t.suite)).collect()
    }
}

const AGENT_BUILD_TOOLS: &[Tool] = &[
    t("protoc", "protobuf-compiler"),
    t(
        "/usr/include/google/protobuf/descriptor.proto",
        "libprotobuf-dev",
    ),
    t("/usr/include/seccomp.h", "libseccomp-dev"),
    t("/usr/lib/x86_64-linux-gnu/libseccomp.so", "libseccomp-dev"),
    t("/usr/include/gelf.h", "libelf-dev"),
    t("/usr/lib/x86_64-linux-gnu/libelf.so", "libelf-dev"),
    t("/usr/include/zlib.h", "zlib1g-dev"),
    t("/usr/lib/x86_64-linux-gnu/libz.so", "zlib1g-dev"),
    t("pkg-config", "pkg-config"),
    t("cc", "build-essential"),
    t("make", "build-essential"),
    // The slot writer's unit tests partition a disk image with it, as the
    // image build does.
    t("sfdisk", "fdisk"),
];

const IMAGE_BUILD_TOOLS: &[Tool] = &[
    t("mmdebstrap", "mmdebstrap"),
    t("mkfs.erofs", "erofs-utils"),
    t("veritysetup", "cryptsetup-bin"),
    t("mkfs.vfat", "dosfstools"),
    t("mmd", "mtools"),
    t("mcopy", "mtools"),
    t("sfdisk", "fdisk"),
    t("objcopy", "binutils"),
    bp("qemu-img", "qemu-utils"),
    t("mkfs.ext4", "e2fsprogs"),
    t("debugfs", "e2fsprogs"),
    t("sha256sum", "coreutils"),
    t("dpkg-query", "dpkg"),
    t(
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
        "systemd-boot-efi",
    ),
    t(
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        "systemd-boot-efi",
    ),
];

const HOST_TESTS_TOOLS: &[Tool] = &[
    t("etcd", "etcd-server"),
    t("etcdctl", "etcd-client"),
    t("ip", "iproute2"),
    t("nft", "nftables"),
    t("iperf3", "iperf3"),
    t("dbus-daemon", "dbus"),
    t("mkfs.vfat", "dosfstools"),
    t("mcopy", "mtools"),
    t("losetup", "mount"),
    t("unshare", "util-linux"),
    // The edge proxy of public agents (`host_edge`, `host_firewall`).
    t("haproxy", "haproxy"),
    // The API schema test: schemathesis from PyPI in a virtual environment.
    t("python3", "python3"),
    t("/usr/lib/python3.11/ensurepip/__init__.py", "python3-venv"),
];

const RUNTIME_TOOLS: &[Tool] = &[
    t("docker-registry", "docker-registry"),
    t("umoci", "umoci"),
    t("skopeo", "skopeo"),
    t("/bin/busybox", "busybox-static"),
    t("crun", "crun"),
    t("openssl", "openssl"),
    t("python3", "python3"),
    t("/usr/lib/x86_64-linux-gnu/libc.a", "libc6-dev"),
    t("setpriv", "util-linux"),
];

const QEMU_BOOT_TOOLS: &[Tool] = &[
    bp("qemu-system-x86_64", "qemu-system-x86"),
    bp("/usr/share/seabios/bios-256k.bin", "seabios"),
    t("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    t("/usr/share/OVMF/OVMF_VARS_4M.fd", "ovmf"),
];

const QEMU_FIXTURES_TOOLS: &[Tool] = &[
    t("docker-registry", "docker-registry"),
    t("umoci", "umoci"),
    t("skopeo", "skopeo"),
    t("/bin/busybox", "busybox-static"),
    t("mkfs.vfat", "dosfstools"),
    t("mcopy", "mtools"),
    t("genisoimage", "genisoimage"),
    t("sfdisk", "fdisk"),
    t("dump.erofs", "erofs-utils"),
];

const FRESH_TREE_TOOLS: &[Tool] = &[t("mmdebstrap", "mmdebstrap"), t("unshare", "util-linux")];

const FUZZ_TOOLS: &[Tool] = &[t("c++", "g++")];

const EDGE_BENCH_TOOLS: &[Tool] = &[t("wrk", "wrk")];

/// The steps of `cargo xtask image`.
pub const IMAGE: &[Step] = &[Step::AgentBuild, Step::ImageBuild];
/// The steps of `cargo xtask cluster up` and `bench image`/`bench boot`,
/// which build missing images first (`cargo xtask qemu` boots built
/// images only: [`Step::QemuBoot`]).
pub const BOOT: &[Step] = &[Step::AgentBuild, Step::ImageBuild, Step::QemuBoot];
/// The steps of `cargo xtask bench runtime`.
pub const BENCH_RUNTIME: &[Step] = &[Step::AgentBuild, Step::HostTests, Step::Runtime];
/// The steps of `cargo xtask fuzz`: the fuzz targets link the agent.
pub const FUZZ: &[Step] = &[Step::AgentBuild, Step::Fuzz];
/// The steps of `cargo xtask bench overlay` and `bench cluster`.
pub const BENCH_HOST: &[Step] = &[Step::AgentBuild, Step::HostTests];
/// The steps of `cargo xtask bench edge`: HAProxy comes with the host
/// tests' packages.
pub const BENCH_EDGE: &[Step] = &[Step::AgentBuild, Step::HostTests, Step::EdgeBench];

/// `cargo xtask deps`: what steps need from the host.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The steps (all of them by default).
    #[arg(value_enum)]
    steps: Vec<Step>,
    /// Install what is missing (as root), as the commands that run the
    /// steps would.
    #[arg(long)]
    install: bool,
}

/// Runs `cargo xtask deps`: a table of tool, package and whether it is
/// here, or the installation.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let steps: Vec<Step> = if args.steps.is_empty() {
        <Step as clap::ValueEnum>::value_variants().to_vec()
    } else {
        args.steps.clone()
    };
    if args.install {
        return ensure("cargo xtask deps", &steps);
    }
    println!("{:<14} {:<48} {:<30} HERE", "STEP", "TOOL", "PACKAGE");
    for step in steps {
        let name = <Step as clap::ValueEnum>::to_possible_value(&step)
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        for tool in step.tools() {
            let package = match tool.suite {
                Suite::Bookworm => tool.package.to_string(),
                Suite::Backports => format!("{} (backports)", tool.package),
            };
            let here = if tool.present() { "yes" } else { "no" };
            println!("{name:<14} {:<48} {package:<30} {here}", tool.path);
        }
    }
    Ok(())
}

/// The tools of `steps` missing on this machine.
pub fn missing(steps: &[Step]) -> Vec<Tool> {
    let tools: BTreeSet<Tool> = steps
        .iter()
        .flat_map(|s| s.tools().iter().copied())
        .collect();
    tools.into_iter().filter(|t| !t.present()).collect()
}

/// The packages that provide `tools`, bookworm's and backports' apart.
fn packages_of(tools: &[Tool]) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut main = BTreeSet::new();
    let mut backports = BTreeSet::new();
    for t in tools {
        match t.suite {
            Suite::Bookworm => main.insert(t.package),
            Suite::Backports => backports.insert(t.package),
        };
    }
    (main.into_iter().collect(), backports.into_iter().collect())
}

/// The apt commands that install `main` and `backports`, as one shell line.
pub fn install_line(main: &[&str], backports: &[&str]) -> String {
    let mut parts = vec!["apt-get update".to_string()];
    if !main.is_empty() {
        parts.push(format!(
            "apt-get install -y --no-install-recommends {}",
            main.join(" ")
        ));
    }
    if !backports.is_empty() {
        parts.push(format!(
            "apt-get install -y --no-install-recommends -t bookworm-backports {}",
            backports.join(" ")
        ));
    }
    parts.join(" && ")
}

/// Makes sure every tool of `steps` is on this machine: installs the
/// packages of the missing ones when running as root on Debian and says
/// what it installed, or fails naming each missing tool, its package and
/// the exact commands to run.
pub fn ensure(what: &str, steps: &[Step]) -> anyhow::Result<()> {
    let missing = missing(steps);
    if missing.is_empty() {
        return Ok(());
    }
    let (main, backports) = packages_of(&missing);
    let tools = missing
        .iter()
        .map(|t| format!("{} ({})", t.path, t.package))
        .collect::<Vec<_>>()
        .join(", ");
    let debian = Path::new("/etc/debian_version").exists() && sh::have("apt-get");
    if !sh::is_root() || !debian {
        let mut how = String::new();
        if !backports.is_empty() {
            how.push_str(&format!(
                "  echo '{}' > /etc/apt/sources.list.d/strata-backports.list\n",
                backports_list_line(&mirror())
            ));
        }
        how.push_str(&format!("  {}", install_line(&main, &backports)));
        bail!(
            "{what} needs host tools that are missing: {tools}\n\
             run it as root on Debian bookworm to have them installed, or run as root:\n{how}"
        );
    }
    let all: Vec<&str> = main.iter().chain(&backports).copied().collect();
    eprintln!(
        "xtask: {what}: missing {tools}; installing {}",
        all.join(" ")
    );
    if !backports.is_empty() {
        add_backports()?;
    }
    apt(&["update", "-q"])?;
    if !main.is_empty() {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(main.iter().copied());
        apt(&args)?;
    }
    if !backports.is_empty() {
        let mut args = vec![
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
        ];
        args.extend(backports.iter().copied());
        apt(&args)?;
    }
    let still = self::missing(steps);
    if !still.is_empty() {
        let names: Vec<String> = still
            .iter()
            .map(|t| format!("{} ({})", t.path, t.package))
            .collect();
        bail!(
            "{what}: still missing after installing their packages: {}",
            names.join(", ")
        );
    }
    eprintln!("xtask: {what}: installed {}", all.join(" "));
    Ok(())
}

fn apt(args: &[&str]) -> anyhow::Result<()> {
    sh::run(
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/strata-backports.sources";

fn mirror() -> String {
    debian_mirror().unwrap_or_else(|| "http://deb.debian.org/debian".to_string())
}

/// The one-line (`sources.list`) form of the backports source.
fn backports_list_line(mirror: &str) -> String {
    format!("deb {mirror} bookworm-backports main")
}

/// Adds bookworm-backports on the mirror the machine's apt sources use.
fn add_backports() -> anyhow::Result<()> {
    if Path::new(BACKPORTS_FILE).exists() {
        return Ok(());
    }
    let mirror = mirror();
    let text = format!(
        "Types: deb\nURIs: {mirror}\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    std::fs::write(BACKPORTS_FILE, text)
        .with_context(|| format!("cannot write {BACKPORTS_FILE}"))?;
    eprintln!("xtask: added {BACKPORTS_FILE} (bookworm-backports on {mirror})");
    Ok(())
}

/// The Debian archive mirror named by the machine's apt sources.
pub fn debian_mirror() -> Option<String> {
    let mut texts: Vec<String> = std::fs::read_to_string("/etc/apt/sources.list")
        .ok()
        .into_iter()
        .collect();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<_> = dir.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.to_string_lossy().contains("strata-backports") {
                continue;
            }
            if p.extension().is_some_and(|e| e == "sources" || e == "list") {
                texts.extend(std::fs::read_to_string(&p).ok());
            }
        }
    }
    texts.iter().find_map(|t| mirror_in(t))
}

/// Finds the main Debian archive URL in a sources.list or deb822 text.
fn mirror_in(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let url = if let Some(rest) = l.strip_prefix("URIs:") {
                rest.split_whitespace().next()?
            } else if l.starts_with("deb ") {
                l.split_whitespace().find(|w| w.starts_with("http"))?
            } else {
                return None;
            };
            (url.trim_end_matches('/').ends_with("/debian"))
                .then(|| url.trim_end_matches('/').to_string())
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::test::Tier;

    fn packages(steps: &[Step]) -> BTreeSet<(&'static str, Suite)> {
        steps.iter().flat_map(|s| s.packages()).collect()
    }

    /// `outer` (a command's steps) installs every package of `inner` (the
    /// steps of something it runs), or the test names what is missing.
    fn check_covers(outer_name: &str, outer: &[Step], inner_name: &str, inner: &[Step]) {
        let have = packages(outer);
        let lacking: Vec<_> = packages(inner)
            .into_iter()
            .filter(|p| !have.contains(p))
            .collect();
        assert!(
            lacking.is_empty(),
            "{outer_name} runs {inner_name} but does not install {lacking:?}"
        );
    }

    #[test]
    fn every_command_installs_what_the_steps_it_runs_need() {
        // `image` builds the agent before the roles.
        check_covers("image", IMAGE, "the agent build", &[Step::AgentBuild]);
        // `qemu` and `cluster up` build missing images, then boot them.
        check_covers("qemu/cluster up", BOOT, "image", IMAGE);
        // The QEMU tier runs `cargo xtask image` and boots the images.
        check_covers("test --tier qemu", &Tier::Qemu.steps(), "image", IMAGE);
        check_covers("test --tier qemu", &Tier::Qemu.steps(), "qemu", BOOT);
        // Every tier that compiles the workspace builds the agent.
        for tier in [Tier::Clippy, Tier::Unit, Tier::Host, Tier::Qemu] {
            check_covers(
                &format!("test --tier {}", tier.name()),
                &tier.steps(),
                "the agent build",
                &[Step::AgentBuild],
            );
        }
        // The fresh tier makes its tree with mmdebstrap; what goes into the
        // tree is the agent build's set, installed by the xtask in the tree.
        check_covers(
            "test --tier fresh",
            &Tier::Fresh.steps(),
            "mmdebstrap",
            &[Step::FreshTree],
        );
        // The host tier runs the runtime tests; the runtime bench runs them too.
        check_covers(
            "test --tier host",
            &Tier::Host.steps(),
            "bench runtime",
            BENCH_RUNTIME,
        );
        check_covers("bench runtime", BENCH_RUNTIME, "bench overlay", BENCH_HOST);
        check_covers("bench edge", BENCH_EDGE, "bench overlay", BENCH_HOST);
        check_covers("test --tier fuzz", &Tier::Fuzz.steps(), "fuzz", FUZZ);
    }

    #[test]
    fn the_agent_build_lists_what_protoc_only_recommends() {
        // protoc without libprotobuf-dev fails on etcd-client's protos with
        // `google/protobuf/descriptor.proto: File not found`.
        let p = Step::AgentBuild.packages();
        assert!(p.contains(&("protobuf-compiler", Suite::Bookworm)));
        assert!(p.contains(&("libprotobuf-dev", Suite::Bookworm)));
        assert!(p.contains(&("libseccomp-dev", Suite::Bookworm)));
        // libbpf-sys (libcontainer's cgroupsv2_devices) compiles libbpf
        // against gelf.h and zlib.h and links libelf.so and libz.so.
        assert!(p.contains(&("libelf-dev", Suite::Bookworm)));
        assert!(p.contains(&("zlib1g-dev", Suite::Bookworm)));
        for path in [
            "/usr/include/gelf.h",
            "/usr/lib/x86_64-linux-gnu/libelf.so",
            "/usr/include/zlib.h",
            "/usr/lib/x86_64-linux-gnu/libz.so",
        ] {
            assert!(
                Step::AgentBuild.tools().iter().any(|t| t.path == path),
                "the agent build does not check {path}"
            );
        }
    }

    #[test]
    fn a_package_comes_from_one_suite() {
        let all: BTreeSet<Tool> = [
            Step::AgentBuild,
            Step::ImageBuild,
            Step::HostTests,
            Step::Runtime,
            Step::QemuBoot,
            Step::QemuFixtures,
            Step::FreshTree,
            Step::Fuzz,
            Step::EdgeBench,
        ]
        .iter()
        .flat_map(|s| s.tools().iter().copied())
        .collect();
        for a in &all {
            for b in &all {
                assert!(
                    a.package != b.package || a.suite == b.suite,
                    "{} is listed from two suites",
                    a.package
                );
            }
        }
    }

    #[test]
    fn the_install_line_is_one_command() {
        expect_test::expect![[r#"apt-get update && apt-get install -y --no-install-recommends libprotobuf-dev protobuf-compiler && apt-get install -y --no-install-recommends -t bookworm-backports qemu-system-x86"#]]
            .assert_eq(&install_line(
                &["libprotobuf-dev", "protobuf-compiler"],
                &["qemu-system-x86"],
            ));
    }

    #[test]
    fn finds_the_mirror() {
        let deb822 = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\nURIs: http://deb.debian.org/debian-security\n";
        assert_eq!(
            mirror_in(deb822).as_deref(),
            Some("http://deb.debian.org/debian")
        );
        let list = "deb http://security.debian.org/debian-security bookworm-security main\ndeb [arch=amd64] http://ftp.de.debian.org/debian/ bookworm main\n";
        assert_eq!(
            mirror_in(list).as_deref(),
            Some("http://ftp.de.debian.org/debian")
        );
        assert_eq!(
            mirror_in("deb https://packages.cloud.google.com/apt cloud-sdk main\n"),
            None
        );
    }
}
