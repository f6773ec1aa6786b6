//! `cargo xtask qemu --role ROLE`: boots a built image under QEMU (q35,
//! OVMF, TCG) with the serial console on this terminal; user-data goes in
//! through fw_cfg. The VM runs on a qcow2 overlay under `target/qemu/`, kept
//! between runs (so `/var` persists) unless `--fresh` or the image changed.

use std::path::PathBuf;

use anyhow::{Context, bail};

use configs::Role;
use qemu_tests::{Console, Vm, VmConfig};

use crate::{deps, project_root};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// master, private or public.
    #[arg(long)]
    pub role: Role,
    /// User-data file handed to the node through fw_cfg.
    #[arg(long)]
    pub user_data: Option<PathBuf>,
    /// Where the images are (default `target/images/`).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Start from the image again (drop the overlay and its `/var`).
    #[arg(long)]
    pub fresh: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    deps::ensure("cargo xtask qemu", &[deps::Step::QemuBoot])?;
    let root = project_root();
    let images = args
        .images
        .clone()
        .unwrap_or_else(|| root.join("target/images"));
    let role = args.role;
    let image = images.join(format!("strata-{role}.qcow2"));
    if !image.exists() {
        bail!(
            "{} does not exist: build it with `cargo xtask image --role {role}`",
            image.display()
        );
    }
    if let Some(u) = &args.user_data {
        let text = std::fs::read_to_string(u)
            .with_context(|| format!("cannot read the user-data {}", u.display()))?;
        let data = configs::user_data::UserData::parse(&u.display().to_string(), &text)?;
        if data.role != role {
            bail!(
                "{}: is for a {} node, but the image is {role}",
                u.display(),
                data.role
            );
        }
    }
    let dir = root.join("target/qemu").join(role.as_str());
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let disk = dir.join("disk.qcow2");
    let stale = match (std::fs::metadata(&disk), std::fs::metadata(&image)) {
        (Ok(d), Ok(i)) => i.modified()? > d.modified()?,
        _ => true,
    };
    if args.fresh || stale {
        qemu_tests::overlay(&image, &disk, 0)?;
        eprintln!(
            "xtask: new overlay {} on {}",
            disk.display(),
            image.display()
        );
    }
    let mut config = VmConfig::new(role.as_str(), &disk, &dir);
    config.console = Console::Terminal;
    config.user_data = args.user_data.clone();
    eprintln!(
        "xtask: booting {} (serial console below; Ctrl-A X quits)",
        image.display()
    );
    let status = Vm::spawn(config)?.wait()?;
    if !status.success() {
        bail!("qemu exited with {status}");
    }
    Ok(())
}
