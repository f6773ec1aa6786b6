//! From a staged tree to the published artifacts of one role: erofs root,
//! dm-verity hash, UKI, ESP, state partition, GPT disk (raw and qcow2), the
//! signed update bundle and the manifest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;
use sha2::{Digest as _, Sha256};

use configs::Role;
use image::manifest::{Digest, Manifest};
use image::plan::{Budget, Plan, PlanInput};

use super::tree::Tree;
use super::{Built, Kernel, stage, tmp_name};
use crate::sh;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SYSTEMD_BOOT: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// mkfs.erofs compression. Measured on the master tree (see docs/image.md):
/// lz4hc at its default level 9 takes twice the CPU of level 4 for a root
/// 0.7 % smaller; plain lz4 is four times faster again but 11 % larger.
pub const EROFS_COMPRESSION: &str = "lz4hc,4";

/// The kernel command line after `roothash=`.
pub const CMDLINE_TAIL: &str = "root=/dev/mapper/root rootfstype=erofs ro rd.timeout=60 rd.shell=0 rd.emergency=reboot panic=10 console=ttyS0";

/// Everything one role's image is made from.
pub struct Input<'a> {
    pub role: Role,
    pub version: &'a str,
    pub epoch: u64,
    pub kernel: Kernel,
    pub tree: &'a Tree,
    pub agent: &'a Path,
    pub role_text: &'a str,
    pub key: &'a SigningKey,
    pub disk_size: u64,
    pub out: &'a Path,
    pub work: &'a Path,
}

/// Builds one role's artifacts into `input.out`.
pub fn role_image(i: &Input<'_>) -> anyhow::Result<Built> {
    let role = i.role.as_str();
    let mut steps = super::Steps::new(role);
    let work = i.work;
    if work.exists() {
        std::fs::remove_dir_all(work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
    }
    std::fs::create_dir_all(work).with_context(|| format!("cannot create {}", work.display()))?;
    let budget = Budget::DEFAULT;
    // Check the disk size before spending time on the root.
    image::plan::plan(&PlanInput {
        role: i.role,
        version: i.version,
        root_hash_a: &"0".repeat(64),
        disk_size: i.disk_size,
        budget,
    })?;

    // The root tree and its erofs image.
    let os_release = stage::os_release(&i.tree.dir, i.version)?;
    let public_key = image::key::public_key_hex(&i.key.verifying_key());
    let rootdir = work.join("root");
    stage::stage(
        &i.tree.dir,
        &rootdir,
        &stage::Additions {
            agent: i.agent,
            role_text: i.role_text,
            public_key: &public_key,
            os_release: &os_release,
        },
    )?;
    steps.done("stage");
    let erofs = work.join("root.erofs");
    let fs_uuid = image::derived_uuid(&["strata", role, i.version, "erofs"]);
    sh::run(
        Command::new("mkfs.erofs")
            .arg(format!("-z{EROFS_COMPRESSION}"))
            .arg(format!("-T{}", i.epoch))
            .arg(format!("-U{fs_uuid}"))
            .arg("--quiet")
            .arg(&erofs)
            .arg(&rootdir)
            .env("SOURCE_DATE_EPOCH", i.epoch.to_string()),
    )?;
    steps.done("erofs");
    let root_size = size(&erofs)?;
    if root_size > budget.root {
        bail!(
            "the {role} root is {} MiB, larger than its slot of {} MiB: trim configs/roles/{role}.toml or raise the budget in image::plan",
            root_size / image::plan::MIB,
            budget.root / image::plan::MIB
        );
    }

    // The state partition starts with the tree's /var.
    let state = work.join("state.ext4");

    // dm-verity.
    let verity = work.join("root.verity");
    let salt = image::sha256_hex(format!("strata:{role}:{}:verity-salt", i.version).as_bytes());
    let verity_uuid = image::derived_uuid(&["strata", role, i.version, "verity"]);
    let hash_file = work.join("roothash");
    sh::output(
        Command::new("veritysetup")
            .arg("format")
            .arg(format!("--salt={salt}"))
            .arg(format!("--uuid={verity_uuid}"))
            .arg(format!("--root-hash-file={}", hash_file.display()))
            .arg(&erofs)
            .arg(&verity),
    )?;
    let root_hash = std::fs::read_to_string(&hash_file)
        .with_context(|| format!("cannot read {}", hash_file.display()))?
        .trim()
        .to_string();
    let plan = image::plan::plan(&PlanInput {
        role: i.role,
        version: i.version,
        root_hash_a: &root_hash,
        disk_size: i.disk_size,
        budget,
    })?;
    if size(&verity)? > budget.verity {
        bail!(
            "the verity hash of {} bytes does not fit its partition of {} bytes",
            size(&verity)?,
            budget.verity
        );
    }
    steps.done("verity");
    let state_part = part(&plan, "state")?;
    make_state(
        &state,
        state_part.size,
        &state_part.uuid,
        &rootdir.join("var"),
        i.epoch,
        work,
    )?;
    steps.done("state");
    std::fs::remove_dir_all(&rootdir)
        .with_context(|| format!("cannot remove {}", rootdir.display()))?;
    steps.done("unstage");

    // The UKI.
    let cmdline = format!("roothash={root_hash} {CMDLINE_TAIL}");
    let uki = work.join("uki.efi");
    make_uki(
        i.tree,
        &os_release,
        &cmdline,
        &work.join("uki"),
        &uki,
        i.epoch,
    )?;

    steps.done("uki");
    // The ESP.
    let esp = work.join("esp.vfat");
    make_esp(
        &esp,
        part(&plan, "ESP")?.size,
        &plan.disk_uuid,
        &uki,
        i.epoch,
        work,
    )?;

    steps.done("esp");
    // The disk.
    let name = |ext: &str| i.out.join(format!("strata-{role}.{ext}"));
    let (raw, qcow2, update, manifest_path) = (
        name("raw"),
        name("qcow2"),
        name("update"),
        name("manifest.json"),
    );
    let raw_tmp = tmp_name(&raw);
    let result = (|| {
        write_disk(
            &raw_tmp,
            &plan,
            &[
                ("ESP", &esp),
                ("root-a", &erofs),
                ("verity-a", &verity),
                ("state", &state),
            ],
        )?;
        steps.done("disk");
        let mut manifest = Manifest {
            format: image::manifest::FORMAT,
            version: i.version.to_string(),
            role: i.role,
            kernel: format!("{} ({})", i.tree.kernel_package, i.kernel.package()),
            source_date_epoch: i.epoch,
            root_hash: root_hash.clone(),
            verity_salt: salt.clone(),
            cmdline: cmdline.clone(),
            packages: i.tree.packages.clone(),
            partitions: Manifest::partitions_of(&plan),
            parts: vec![],
            artifacts: vec![],
        };
        let qcow2_tmp = tmp_name(&qcow2);
        let update_tmp = tmp_name(&update);
        // Three independent jobs after the raw disk: the qcow2 (qemu-img and
        // its digest), the raw disk's digest, and the update bundle (the
        // parts' digests, then the bundle, hashed as it is written).
        let (qcow2_digest, raw_digest, update_digest) = std::thread::scope(|s| {
            let qcow2_job = s.spawn(|| {
                sh::output(
                    Command::new("qemu-img")
                        .args(["convert", "-f", "raw", "-O", "qcow2"])
                        .arg(&raw_tmp)
                        .arg(&qcow2_tmp),
                )?;
                digest(&file_name(&qcow2), &qcow2_tmp)
            });
            let raw_job = s.spawn(|| digest(&file_name(&raw), &raw_tmp));
            manifest.parts = vec![
                digest(image::bundle::PART_ROOT, &erofs)?,
                digest(image::bundle::PART_VERITY, &verity)?,
                digest(image::bundle::PART_UKI, &uki)?,
            ];
            let update_digest = write_bundle(
                &update_tmp,
                &file_name(&update),
                &manifest,
                i.key,
                [&erofs, &verity, &uki],
            )?;
            let join = |job: std::thread::ScopedJoinHandle<'_, anyhow::Result<Digest>>| {
                job.join()
                    .map_err(|_| anyhow::anyhow!("a digest job panicked"))?
            };
            Ok::<_, anyhow::Error>((join(qcow2_job)?, join(raw_job)?, update_digest))
        })?;
        steps.done("qcow2+bundle+digests");
        manifest.artifacts = vec![raw_digest, qcow2_digest, update_digest];
        let manifest_tmp = tmp_name(&manifest_path);
        std::fs::write(&manifest_tmp, manifest.to_json())
            .with_context(|| format!("cannot write {}", manifest_tmp.display()))?;
        for (tmp, path) in [
            (&raw_tmp, &raw),
            (&qcow2_tmp, &qcow2),
            (&update_tmp, &update),
            (&manifest_tmp, &manifest_path),
        ] {
            std::fs::rename(tmp, path).with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), path.display())
            })?;
        }
        Ok::<_, anyhow::Error>(())
    })();
    if result.is_err() {
        for p in [&raw, &qcow2, &update, &manifest_path] {
            let _ = std::fs::remove_file(tmp_name(p));
        }
    }
    result?;
    steps.done("manifest");
    eprintln!("xtask: {}", steps.summary());
    Ok(Built {
        role: i.role,
        raw,
        qcow2,
        update,
        manifest: manifest_path,
        root_size,
        root_hash,
        steps: steps.summary(),
    })
}

fn part<'a>(plan: &'a Plan, label: &str) -> anyhow::Result<&'a image::plan::Partition> {
    plan.partition(label)
        .with_context(|| format!("the plan has no `{label}` partition"))
}

fn size(path: &Path) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len())
}

fn open(path: &Path) -> anyhow::Result<File> {
    File::open(path).with_context(|| format!("cannot open {}", path.display()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes the signed update bundle of `parts` (root, verity, UKI, as listed
/// in the manifest) to `path` and returns its digest, hashed as it is written.
fn write_bundle(
    path: &Path,
    name: &str,
    manifest: &Manifest,
    key: &SigningKey,
    parts: [&Path; 3],
) -> anyhow::Result<Digest> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = HashingWriter {
        inner: std::io::BufWriter::with_capacity(1024 * 1024, file),
        hasher: Sha256::new(),
        size: 0,
    };
    let [r, v, u] = parts;
    let (mut r, mut v, mut u) = (open(r)?, open(v)?, open(u)?);
    image::bundle::write(
        &mut out,
        manifest,
        key,
        &mut [
            (image::bundle::PART_ROOT, &mut r),
            (image::bundle::PART_VERITY, &mut v),
            (image::bundle::PART_UKI, &mut u),
        ],
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    out.inner
        .flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Digest {
        name: name.to_string(),
        size: out.size,
        sha256: hex::encode(out.hasher.finalize()),
    })
}

/// A writer that hashes and counts what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Size and SHA-256 of a file. Holes are hashed as the zeros they read as,
/// without reading them: reading a hole makes the kernel clear a page for
/// every 4 KiB of it, which was most of an image build's time.
pub fn digest(name: &str, path: &Path) -> anyhow::Result<Digest> {
    let f = open(path)?;
    let len = size(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 4 * 1024 * 1024];
    let zeros = vec![0u8; buf.len()];
    let mut hashed = 0u64;
    let hash_zeros = |hasher: &mut Sha256, mut n: u64| {
        while n > 0 {
            let m = n.min(zeros.len() as u64);
            hasher.update(&zeros[..usize::try_from(m).expect("at most the buffer length")]);
            n -= m;
        }
    };
    read_data(&f, len, path, &mut buf, |at, chunk| {
        hash_zeros(&mut hasher, at - hashed);
        hasher.update(chunk);
        hashed = at + chunk.len() as u64;
        Ok(())
    })?;
    hash_zeros(&mut hasher, len - hashed);
    Ok(Digest {
        name: name.to_string(),
        size: len,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// Reads the data of `f` (`len` bytes long, at `path`), skipping its holes,
/// in chunks of at most `buf.len()` bytes, in order: `each(offset, chunk)`.
fn read_data(
    f: &File,
    len: u64,
    path: &Path,
    buf: &mut [u8],
    mut each: impl FnMut(u64, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for (start, extent) in data_extents(f, len, path)? {
        let mut at = start;
        while at < start + extent {
            let want = (start + extent - at).min(buf.len() as u64);
            let chunk = &mut buf[..usize::try_from(want).expect("at most the buffer length")];
            f.read_exact_at(chunk, at)
                .with_context(|| format!("cannot read {}", path.display()))?;
            each(at, chunk)?;
            at += want;
        }
    }
    Ok(())
}

/// The data extents (offset, length) of `f`, `len` bytes long, in order:
/// everything but its holes. A file system that does not report holes gives
/// one extent, the whole file.
fn data_extents(f: &File, len: u64, path: &Path) -> anyhow::Result<Vec<(u64, u64)>> {
    use nix::unistd::{Whence, lseek};
    let fd = f.as_raw_fd();
    let offset = |at: u64| i64::try_from(at).expect("file offsets fit in an off_t");
    let mut extents = vec![];
    let mut at = 0u64;
    while at < len {
        let start = match lseek(fd, offset(at), Whence::SeekData) {
            Ok(start) => start.unsigned_abs(),
            // No data after `at`.
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e).with_context(|| format!("cannot seek in {}", path.display())),
        };
        let end = lseek(fd, offset(start), Whence::SeekHole)
            .with_context(|| format!("cannot seek in {}", path.display()))?
            .unsigned_abs()
            .min(len);
        if end <= start {
            break;
        }
        extents.push((start, end - start));
        at = end;
    }
    Ok(extents)
}

/// Assembles a UKI from systemd's EFI stub with objcopy.
fn make_uki(
    tree: &Tree,
    os_release: &str,
    cmdline: &str,
    dir: &Path,
    out: &Path,
    epoch: u64,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let osrel = dir.join("osrel");
    let cmd = dir.join("cmdline");
    std::fs::write(&osrel, os_release)?;
    std::fs::write(&cmd, cmdline)?;
    let kernel = tree
        .dir
        .join(format!("boot/vmlinuz-{}", tree.kernel_release));
    let initrd = tree
        .dir
        .join(format!("boot/initrd.img-{}", tree.kernel_release));
    let section = |name: &str, path: &Path, vma: &str| -> Vec<String> {
        vec![
            "--add-section".into(),
            format!("{name}={}", path.display()),
            "--change-section-vma".into(),
            format!("{name}={vma}"),
        ]
    };
    let mut c = Command::new("objcopy");
    c.args(section(".osrel", &osrel, "0x20000"))
        .args(section(".cmdline", &cmd, "0x30000"))
        .args(section(".linux", &kernel, "0x2000000"))
        .args(section(".initrd", &initrd, "0x4000000"))
        .arg(STUB)
        .arg(out);
    sh::output(&mut c)?;
    // objcopy stamps the PE header with the current time: make it the
    // build's timestamp so that the UKI is reproducible.
    let mut pe = std::fs::read(out).with_context(|| format!("cannot read {}", out.display()))?;
    pe_set_timestamp(&mut pe, epoch)
        .with_context(|| format!("{}: not a PE image", out.display()))?;
    std::fs::write(out, pe).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Sets the COFF header's TimeDateStamp and recomputes the PE checksum.
fn pe_set_timestamp(pe: &mut [u8], epoch: u64) -> anyhow::Result<()> {
    let u32_at = |b: &[u8], at: usize| -> anyhow::Result<u32> {
        let bytes = b.get(at..at + 4).context("truncated header")?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("four bytes")))
    };
    let header = u32_at(pe, 0x3c)? as usize;
    if pe.get(header..header + 4) != Some(b"PE\0\0".as_slice()) {
        bail!("no PE signature at {header:#x}");
    }
    let stamp = u32::try_from(epoch).unwrap_or(u32::MAX).to_le_bytes();
    pe[header + 8..header + 12].copy_from_slice(&stamp);
    // The checksum field: optional header (after the 24-byte PE and COFF
    // headers) + 64.
    let field = header + 24 + 64;
    u32_at(pe, field)?;
    pe[field..field + 4].copy_from_slice(&[0; 4]);
    let mut sum: u64 = 0;
    for chunk in pe.chunks(2) {
        let word = u64::from(chunk[0]) | u64::from(*chunk.get(1).unwrap_or(&0)) << 8;
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = ((sum & 0xffff) + (sum >> 16)) as u32 + pe.len() as u32;
    pe[field..field + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// The ESP: FAT32 with systemd-boot as the default loader and slot A's UKI
/// with three boot tries.
fn make_esp(
    esp: &Path,
    size: u64,
    disk_uuid: &str,
    uki: &Path,
    epoch: u64,
    work: &Path,
) -> anyhow::Result<()> {
    File::create(esp)?.set_len(size)?;
    let volid = disk_uuid.replace('-', "")[..8].to_string();
    sh::output(
        Command::new("mkfs.vfat")
            .args(["-F", "32", "-n", "ESP", "-i", &volid, "--invariant"])
            .arg(esp),
    )?;
    let loader = work.join("loader.conf");
    std::fs::write(&loader, "timeout 0\neditor no\n")?;
    for dir in [
        "::/EFI",
        "::/EFI/BOOT",
        "::/EFI/systemd",
        "::/EFI/Linux",
        "::/loader",
    ] {
        mtools("mmd", esp, &[dir], epoch)?;
    }
    let copies: [(&Path, &str); 4] = [
        (Path::new(SYSTEMD_BOOT), "::/EFI/BOOT/BOOTX64.EFI"),
        (
            Path::new(SYSTEMD_BOOT),
            "::/EFI/systemd/systemd-bootx64.efi",
        ),
        (&loader, "::/loader/loader.conf"),
        (uki, "::/EFI/Linux/strata-a+3.efi"),
    ];
    for (src, dst) in copies {
        let src = src.to_string_lossy();
        mtools("mcopy", esp, &[&src, dst], epoch)?;
    }
    Ok(())
}

fn mtools(tool: &str, esp: &Path, args: &[&str], epoch: u64) -> anyhow::Result<()> {
    sh::output(
        Command::new(tool)
            .arg("-i")
            .arg(esp)
            .args(args)
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )?;
    Ok(())
}

/// The state partition: ext4 labelled `state`, holding the tree's `/var`.
/// mke2fs copies each file's access and change times from the source (the
/// change time is when the staging copy was made), so every inode's times
/// are then set to the build's timestamp with debugfs: the file system is
/// reproducible.
fn make_state(
    path: &Path,
    size: u64,
    uuid: &str,
    var: &Path,
    epoch: u64,
    work: &Path,
) -> anyhow::Result<()> {
    File::create(path)?.set_len(size)?;
    sh::output(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "state", "-U", uuid])
            .arg(format!("-Ehash_seed={uuid},lazy_itable_init=1"))
            .arg("-d")
            .arg(var)
            .arg(path)
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .env("SOURCE_DATE_EPOCH", epoch.to_string()),
    )?;
    let mut paths = vec![String::from("/")];
    walk(var, var, &mut paths)?;
    let mut script = String::new();
    for p in &paths {
        for field in ["atime", "ctime", "mtime", "crtime"] {
            script.push_str(&format!("set_inode_field \"{p}\" {field} @{epoch}\n"));
        }
    }
    let script_path = work.join("state-times.debugfs");
    std::fs::write(&script_path, script)
        .with_context(|| format!("cannot write {}", script_path.display()))?;
    sh::output(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script_path)
            .arg(path)
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string()),
    )?;
    // debugfs stamps the superblock's write time with the clock.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let mut sb = [0u8; 1024];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    ext4_set_write_time(&mut sb, epoch);
    f.seek(SeekFrom::Start(1024))?;
    f.write_all(&sb)?;
    f.sync_all()?;
    Ok(())
}

/// Sets an ext4 superblock's `s_wtime` and, with metadata checksums,
/// recomputes `s_checksum` (crc32c of the bytes before it).
fn ext4_set_write_time(sb: &mut [u8; 1024], epoch: u64) {
    let stamp = u32::try_from(epoch).unwrap_or(u32::MAX);
    sb[48..52].copy_from_slice(&stamp.to_le_bytes());
    let ro_compat = u32::from_le_bytes([sb[100], sb[101], sb[102], sb[103]]);
    if ro_compat & 0x400 != 0 {
        let mut crc = !0u32;
        for b in &sb[..1020] {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82f6_3b78
                } else {
                    crc >> 1
                };
            }
        }
        sb[1020..1024].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Every path under `dir`, relative to `base` with a leading `/`.
fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let rel = path
            .strip_prefix(base)
            .map(|r| format!("/{}", r.display()))
            .unwrap_or_default();
        if rel.contains(['"', '\\']) {
            continue;
        }
        out.push(rel);
        if e.file_type()?.is_dir() {
            walk(base, &path, out)?;
        }
    }
    Ok(())
}

/// Writes the GPT disk: the partition table from the plan, then each
/// partition's content at its offset, leaving zero blocks as holes.
fn write_disk(path: &Path, plan: &Plan, contents: &[(&str, &PathBuf)]) -> anyhow::Result<()> {
    File::create(path)
        .with_context(|| format!("cannot create {}", path.display()))?
        .set_len(plan.disk_size)
        .with_context(|| format!("cannot size {}", path.display()))?;
    let script = path.with_extension("sfdisk");
    std::fs::write(&script, plan.sfdisk_script())?;
    sh::output(
        Command::new("sh")
            .arg("-c")
            .arg("sfdisk --quiet --no-reread --no-tell-kernel --wipe never \"$0\" < \"$1\"")
            .arg(path)
            .arg(&script),
    )?;
    std::fs::remove_file(&script)?;
    let disk = std::fs::OpenOptions::new().write(true).open(path)?;
    let mut buf = vec![0u8; 1024 * 1024];
    let zeros = vec![0u8; buf.len()];
    for (label, src) in contents {
        let p = part(plan, label)?;
        let len = size(src)?;
        if len > p.size {
            bail!(
                "{} ({len} bytes) does not fit partition {label} ({} bytes)",
                src.display(),
                p.size
            );
        }
        read_data(&open(src)?, len, src, &mut buf, |at, chunk| {
            // A slice comparison is a memcmp, fast in the unoptimised xtask.
            if *chunk != zeros[..chunk.len()] {
                disk.write_all_at(chunk, p.offset + at)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            Ok(())
        })?;
    }
    disk.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparse_file_hashes_as_the_bytes_it_reads_as() {
        let dir = std::env::temp_dir().join(format!("xtask-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let check = |name: &str, len: u64, writes: &[(u64, &[u8])]| {
            let path = dir.join(name);
            let f = File::create(&path).unwrap();
            f.set_len(len).unwrap();
            for (at, bytes) in writes {
                f.write_all_at(bytes, *at).unwrap();
            }
            let bytes = std::fs::read(&path).unwrap();
            let d = digest(name, &path).unwrap();
            assert_eq!(d.size, len, "{name}");
            assert_eq!(d.sha256, hex::encode(Sha256::digest(&bytes)), "{name}");
        };
        let block = vec![7u8; 8192];
        check("empty", 0, &[]);
        check("all-hole", 9 * 1024 * 1024, &[]);
        check("dense", 8192, &[(0, &block)]);
        check(
            "data-in-the-middle",
            16 * 1024 * 1024,
            &[(5 * 1024 * 1024 + 3, &block)],
        );
        check(
            "data-at-both-ends",
            12 * 1024 * 1024 + 17,
            &[(0, b"head"), (12 * 1024 * 1024 + 13, b"tail")],
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_pe_timestamp_and_checksum_are_set() {
        // A minimal PE: e_lfanew at 0x3c, the signature at 0x80.
        let mut pe = vec![0u8; 0x200];
        pe[0x3c] = 0x80;
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x88..0x8c].copy_from_slice(&[1, 2, 3, 4]);
        pe_set_timestamp(&mut pe, 1_700_000_000).unwrap();
        let header = u32::from_le_bytes(pe[0x3c..0x40].try_into().unwrap()) as usize;
        assert_eq!(
            u32::from_le_bytes(pe[header + 8..header + 12].try_into().unwrap()),
            1_700_000_000
        );
        let mut again = pe.clone();
        pe_set_timestamp(&mut again, 1_700_000_000).unwrap();
        assert_eq!(pe, again);
        // Sum of 16-bit words (e_lfanew, the signature, the stamp) plus the length.
        let checksum = u32::from_le_bytes(pe[0x80 + 88..0x80 + 92].try_into().unwrap());
        let words = 0x80 + 0x4550 + (1_700_000_000u32 & 0xffff) + (1_700_000_000u32 >> 16);
        assert_eq!(checksum, (words & 0xffff) + (words >> 16) + 0x200);
        let e = pe_set_timestamp(&mut [0u8; 16], 0).unwrap_err();
        assert_eq!(e.to_string(), "truncated header");
    }
}
