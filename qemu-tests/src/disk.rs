//! Disk images seen from outside the node: raw copies, partitions by the
//! manifest's labels, the erofs root of slot A and where a file's bytes lie
//! in it (`dump.erofs -e`), the ESP's boot entries and their counters, and
//! `STRATA-CFG` config disks (vfat or iso9660) that hand a node its
//! user-data without fw_cfg.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};
use image::manifest::{Manifest, PartitionEntry};

use crate::run;

/// The erofs superblock magic, little-endian at byte 1024 of the filesystem.
pub const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
/// The filesystem label the agent's bootstrap looks for.
pub const CONFIG_LABEL: &str = "STRATA-CFG";
/// The file it reads from that filesystem.
pub const CONFIG_FILE: &str = "user-data.toml";

/// Reads a role's manifest.
pub fn manifest(path: &Path) -> anyhow::Result<Manifest> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Manifest::parse(&path.display().to_string(), &bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Writes a raw copy of `image` (qcow2 or raw) at `raw`.
pub fn raw_copy(image: &Path, raw: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(raw);
    run(Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(image)
        .arg(raw))
}

/// The partition labelled `label`.
pub fn partition<'a>(m: &'a Manifest, label: &str) -> anyhow::Result<&'a PartitionEntry> {
    m.partitions
        .iter()
        .find(|p| p.label == label)
        .with_context(|| format!("the manifest of {} has no partition `{label}`", m.role))
}

/// Slot A's root: its offset on the disk and the length of its erofs (the
/// rest of the partition is unused, and verity covers only the erofs).
pub fn root_a(m: &Manifest) -> anyhow::Result<(u64, u64)> {
    let part = partition(m, "root-a")?;
    let len = m
        .parts
        .iter()
        .find(|p| p.name == image::bundle::PART_ROOT)
        .context("the manifest has no root part")?
        .size;
    if len > part.size {
        bail!(
            "the root ({len} bytes) is larger than its partition ({})",
            part.size
        );
    }
    Ok((part.offset, len))
}

/// Copies `len` bytes at `offset` of `disk` into `out`.
pub fn extract(disk: &Path, offset: u64, len: u64, out: &Path) -> anyhow::Result<()> {
    let src =
        std::fs::File::open(disk).with_context(|| format!("cannot open {}", disk.display()))?;
    let dst =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        src.read_exact_at(&mut buf[..n], offset + done)
            .with_context(|| format!("cannot read {} at {}", disk.display(), offset + done))?;
        dst.write_all_at(&buf[..n], done)?;
        done += n as u64;
    }
    Ok(())
}

/// The little-endian u32 at `at` of `file`.
pub fn read_u32(file: &Path, at: u64) -> anyhow::Result<u32> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, at)?;
    Ok(u32::from_le_bytes(b))
}

/// One extent of a file in an erofs image, as `dump.erofs -e` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub logical_len: u64,
    pub physical: u64,
    pub physical_len: u64,
}

/// Where the file at `path` lies in the erofs image `image`.
pub fn erofs_extents(image: &Path, path: &str) -> anyhow::Result<Vec<Extent>> {
    let out = Command::new("dump.erofs")
        .arg(format!("--path={path}"))
        .arg("-e")
        .arg(image)
        .output()
        .context("cannot run dump.erofs (package erofs-utils)")?;
    if !out.status.success() {
        bail!(
            "dump.erofs --path={path} -e {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_extents(&String::from_utf8_lossy(&out.stdout))
}

/// The extents in `dump.erofs -e` output: lines `N: lstart.. lend | llen :
/// pstart.. pend | plen` (erofs-utils 1.5).
pub fn parse_extents(text: &str) -> anyhow::Result<Vec<Extent>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((index, rest)) = line.split_once(':') else {
            continue;
        };
        if index.trim().parse::<u64>().is_err() {
            continue;
        }
        let numbers: Vec<u64> = rest
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("not an extent line: {line}"))?;
        let [lstart, _lend, llen, pstart, _pend, plen] = numbers[..] else {
            bail!("not an extent line (expected six numbers): {line}");
        };
        out.push(Extent {
            logical: lstart,
            logical_len: llen,
            physical: pstart,
            physical_len: plen,
        });
    }
    if out.is_empty() {
        bail!("no extents in dump.erofs output:\n{text}");
    }
    Ok(out)
}

/// Inverts `len` bytes of `file` at `at` and syncs it.
pub fn flip(file: &Path, at: u64, len: usize) -> anyhow::Result<()> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .with_context(|| format!("cannot open {}", file.display()))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, at)?;
    for b in &mut buf {
        *b ^= 0xff;
    }
    f.write_all_at(&buf, at)?;
    f.sync_all()?;
    Ok(())
}

/// The names of the UKIs in the ESP's `EFI/Linux` of a raw disk.
pub fn esp_entries(disk: &Path, esp: &PartitionEntry) -> anyhow::Result<Vec<String>> {
    let out = Command::new("mdir")
        .args(["-b", "-i"])
        .arg(format!("{}@@{}", disk.display(), esp.offset))
        .arg("::/EFI/Linux")
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .context("cannot run mdir (package mtools)")?;
    if !out.status.success() {
        bail!("mdir: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().rsplit('/').next())
        .filter(|n| n.ends_with(".efi"))
        .map(String::from)
        .collect())
}

/// The boot counter of a UKI's file name: `strata-a+1-2.efi` is 1 try left
/// and 2 done, `strata-a+3.efi` 3 left and none done; a blessed entry
/// (`strata-a.efi`) has none.
pub fn boot_counter(name: &str) -> Option<(u32, u32)> {
    let stem = name.strip_suffix(".efi")?;
    let (_, counter) = stem.rsplit_once('+')?;
    match counter.split_once('-') {
        Some((left, done)) => Some((left.parse().ok()?, done.parse().ok()?)),
        None => Some((counter.parse().ok()?, 0)),
    }
}

/// The filesystem of a config disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFs {
    Vfat,
    Iso9660,
}

impl ConfigFs {
    /// The name the agent's marker and the kernel use.
    pub fn name(self) -> &'static str {
        match self {
            ConfigFs::Vfat => "vfat",
            ConfigFs::Iso9660 => "iso9660",
        }
    }
}

/// Writes a `STRATA-CFG` filesystem image holding `user_data` as
/// `user-data.toml`, at `out`.
pub fn config_disk(fs: ConfigFs, user_data: &Path, out: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(out);
    match fs {
        ConfigFs::Vfat => {
            // mkfs.vfat -C makes the file (in KiB blocks).
            run(Command::new("mkfs.vfat")
                .args(["-n", CONFIG_LABEL, "-C"])
                .arg(out)
                .arg("2048"))?;
            run(Command::new("mcopy")
                .arg("-i")
                .arg(out)
                .arg(user_data)
                .arg(format!("::/{CONFIG_FILE}"))
                .env("MTOOLS_SKIP_CHECK", "1"))
        }
        ConfigFs::Iso9660 => {
            let stage = out.with_extension("d");
            let _ = std::fs::remove_dir_all(&stage);
            std::fs::create_dir_all(&stage)?;
            std::fs::copy(user_data, stage.join(CONFIG_FILE))
                .with_context(|| format!("cannot copy {}", user_data.display()))?;
            // Rock Ridge and Joliet keep the name as it is (plain ISO 9660
            // would show `user_dat.tom`).
            let result = run(Command::new("genisoimage")
                .args(["-quiet", "-V", CONFIG_LABEL, "-J", "-r", "-o"])
                .arg(out)
                .arg(&stage));
            let _ = std::fs::remove_dir_all(&stage);
            result
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extents_are_read_from_dump_erofs() {
        let text = "File : /usr/bin/strata\nSize: 10541  On-disk size: 8192  Compression ratio: 77.71%\n\
NID: 39   Links: 1   Layout: 3   Compression ratio: 77.71%\n\
 Ext:   logical offset   |  length :     physical offset    |  length\n\
   0:        0..    4704 |    4704 :      90112..     94208 |    4096\n\
   1:     4704..   10541 |    5837 :      94208..     98304 |    4096\n\
/usr/bin/strata: 2 extents found\n";
        assert_eq!(
            parse_extents(text).expect("parses"),
            vec![
                Extent {
                    logical: 0,
                    logical_len: 4704,
                    physical: 90112,
                    physical_len: 4096
                },
                Extent {
                    logical: 4704,
                    logical_len: 5837,
                    physical: 94208,
                    physical_len: 4096
                },
            ]
        );
        assert!(parse_extents("File : /x\n").is_err());
    }

    #[test]
    fn boot_counters() {
        assert_eq!(boot_counter("strata-a+1-2.efi"), Some((1, 2)));
        assert_eq!(boot_counter("strata-a+3.efi"), Some((3, 0)));
        assert_eq!(boot_counter("strata-b+0-3.efi"), Some((0, 3)));
        assert_eq!(boot_counter("strata-a.efi"), None);
    }
}
