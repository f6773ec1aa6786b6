//! Extraction of a tar stream (gzip-compressed or not) into a fresh
//! directory that it never leaves: image layers, with OCI whiteouts turned
//! into overlayfs ones, and the archives `strata image import` reads.
//!
//! The `tar` crate only parses; nothing here calls its `unpack`. Every name
//! goes through [`entry_path`] (no absolute names, no `..`), and every
//! filesystem call is relative to a directory descriptor reached from the
//! extraction root one component at a time with `O_NOFOLLOW`: an entry whose
//! parent is a symbolic link (or a whiteout or opaque marker under one) is
//! refused instead of followed out of the layer. Hard links may only name a
//! regular file or a symbolic link already extracted; device nodes and
//! entry types this code does not know are refused.
//!
//! The uncompressed stream goes through a [`Metered`] reader that hashes it
//! (the diff id) and stops at the size limit, so a gzip bomb ends with
//! [`ImageError::TooLarge`] instead of a full disk; the raw stream is hashed
//! and limited too (the blob digest). Between two entries the tar parser
//! may read at most 1 MiB (headers, GNU long names, PAX records), which it
//! would otherwise hold in memory whatever their size.

use std::cell::Cell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use sha2::{Digest as _, Sha256};

use super::{Digest, ImageError, Limits};

/// Longest entry name (`PATH_MAX`) and name component (`NAME_MAX`).
const MAX_NAME: usize = 4096;
const MAX_COMPONENT: usize = 255;
/// What the tar parser may read between two entries.
const HEADER_BUDGET: u64 = 1 << 20;

/// Why one entry of a layer or archive was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryRefusal {
    #[error("the name is empty")]
    Empty,
    #[error("the name holds a NUL byte")]
    Nul,
    #[error("the name is too long")]
    TooLong,
    #[error("the name is absolute")]
    Absolute,
    #[error("the name climbs out with `..`")]
    ParentDir,
    #[error("a parent directory is a symbolic link or not a directory")]
    NotADirectory,
    #[error("a link has no target")]
    NoTarget,
    #[error(
        "a hard link must name a regular file or symbolic link extracted before it, inside the same layer"
    )]
    HardLink,
    #[error("device nodes are not allowed")]
    Device,
    #[error("a whiteout must name one entry other than `.` and `..`")]
    Whiteout,
    #[error("it would replace a directory of the same layer")]
    ReplacesDirectory,
    #[error("entry type {0:?} is not supported")]
    UnknownType(char),
}

/// Splits an entry name into the components to create under the root.
/// Pure: refuses empty names, NUL bytes, names longer than `PATH_MAX` or
/// with a component longer than `NAME_MAX`, absolute names and `..`; skips
/// `.` and empty components (`./a//b` is `a/b`). An empty result is the
/// root itself (`./`).
pub(crate) fn entry_path(raw: &[u8]) -> Result<Vec<&OsStr>, EntryRefusal> {
    if raw.is_empty() {
        return Err(EntryRefusal::Empty);
    }
    if raw.contains(&0) {
        return Err(EntryRefusal::Nul);
    }
    if raw.len() > MAX_NAME {
        return Err(EntryRefusal::TooLong);
    }
    if raw.starts_with(b"/") {
        return Err(EntryRefusal::Absolute);
    }
    let mut parts = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(EntryRefusal::ParentDir),
            p if p.len() > MAX_COMPONENT => return Err(EntryRefusal::TooLong),
            p => parts.push(OsStr::from_bytes(p)),
        }
    }
    Ok(parts)
}

/// What is being extracted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An image layer: whiteouts become overlayfs whiteouts, owners are
    /// kept when running as root.
    Layer,
    /// An archive to import: `.wh.` names are ordinary files, owners are
    /// not kept and every file and directory stays readable by its owner.
    Archive,
}

/// The limits and behaviour of one extraction.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    kind: Kind,
    /// Bytes of the raw (possibly compressed) stream.
    compressed: u64,
    /// Bytes of the uncompressed tar.
    uncompressed: u64,
    entries: u64,
    owners: bool,
}

impl Rules {
    pub(crate) fn layer(limits: &Limits) -> Self {
        Self {
            kind: Kind::Layer,
            compressed: limits.layer_compressed,
            uncompressed: limits.layer_uncompressed,
            entries: limits.layer_entries,
            owners: nix::unistd::geteuid().is_root(),
        }
    }

    pub(crate) fn archive(limits: &Limits) -> Self {
        Self {
            kind: Kind::Archive,
            compressed: limits.archive,
            uncompressed: limits.archive,
            entries: limits.archive_entries,
            owners: false,
        }
    }
}

/// The digests of an extracted stream.
#[derive(Debug)]
pub(crate) struct Extracted {
    /// Of the uncompressed tar (a layer's diff id).
    pub(crate) diff_id: Digest,
    /// Of the stream as read (a layer blob's digest).
    pub(crate) blob: Digest,
}

/// Which limit a [`Metered`] reader hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overrun {
    Compressed,
    Uncompressed,
    Headers,
}

/// State shared between the readers and the extraction loop.
#[derive(Debug, Default)]
struct Meter {
    /// Bytes the tar parser may still read before the next entry; `None`
    /// while an entry's data is read.
    between_entries: Cell<Option<u64>>,
    /// The limit a reader hit, if any: read errors are reported as this.
    overrun: Cell<Option<Overrun>>,
}

/// A reader that hashes and counts what goes through it and fails past
/// `limit` bytes (and past the header budget, when `budgeted`).
struct Metered<R> {
    inner: R,
    hasher: Sha256,
    total: u64,
    limit: u64,
    which: Overrun,
    budgeted: bool,
    meter: Rc<Meter>,
}

impl<R> Metered<R> {
    fn new(inner: R, limit: u64, which: Overrun, budgeted: bool, meter: Rc<Meter>) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            total: 0,
            limit,
            which,
            budgeted,
            meter,
        }
    }

    fn refuse(&self, which: Overrun) -> io::Error {
        self.meter.overrun.set(Some(which));
        io::Error::other(format!("{which:?} limit reached"))
    }
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let budget = if self.budgeted {
            self.meter.between_entries.get()
        } else {
            None
        };
        if budget == Some(0) && !buf.is_empty() {
            return Err(self.refuse(Overrun::Headers));
        }
        if self.total > self.limit {
            return Err(self.refuse(self.which));
        }
        // One byte past the limit is enough to know it was passed.
        let room = (self.limit - self.total).saturating_add(1);
        let mut want = u64::try_from(buf.len()).unwrap_or(u64::MAX).min(room);
        if let Some(left) = budget {
            want = want.min(left);
        }
        let want = usize::try_from(want).unwrap_or(buf.len());
        let n = self.inner.read(&mut buf[..want])?;
        let read = n as u64;
        self.total += read;
        if self.total > self.limit {
            return Err(self.refuse(self.which));
        }
        if let Some(left) = budget {
            self.meter.between_entries.set(Some(left - read));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The stream after decompression.
enum Decoded<R: Read> {
    Gzip(Box<flate2::read::MultiGzDecoder<BufReader<R>>>),
    Plain(BufReader<R>),
}

impl<R: Read> Read for Decoded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoded::Gzip(d) => d.read(buf),
            Decoded::Plain(r) => r.read(buf),
        }
    }
}

impl<R: Read> Decoded<R> {
    fn into_inner(self) -> R {
        match self {
            Decoded::Gzip(d) => (*d).into_inner().into_inner(),
            Decoded::Plain(r) => r.into_inner(),
        }
    }
}

/// Unpacks `reader` into `dest` (an empty directory) under `rules`, and
/// returns the digests of the uncompressed and raw streams. `label` names
/// the stream in errors (`layer sha256:...`, an archive's path). On error,
/// `dest` holds a partial extraction for the caller to remove.
pub(crate) fn extract(
    reader: impl Read,
    dest: &Path,
    rules: &Rules,
    label: &str,
) -> Result<Extracted, ImageError> {
    let meter = Rc::new(Meter::default());
    let raw = Metered::new(
        reader,
        rules.compressed,
        Overrun::Compressed,
        false,
        meter.clone(),
    );
    let mut buffered = BufReader::with_capacity(256 * 1024, raw);
    let head = match buffered.fill_buf() {
        Ok(head) => head,
        Err(e) => return Err(stream_error(&meter, rules, label, e)),
    };
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(ImageError::BadArchive {
            path: label.to_string(),
            reason: "zstd-compressed layers are not supported".into(),
        });
    }
    let decoded = if head.starts_with(&[0x1f, 0x8b]) {
        Decoded::Gzip(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else {
        Decoded::Plain(buffered)
    };
    let mut stream = Metered::new(
        decoded,
        rules.uncompressed,
        Overrun::Uncompressed,
        true,
        meter.clone(),
    );
    let root = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dest)
        .map_err(ImageError::io(format!("cannot open {}", dest.display())))?;
    let mut tree = Tree {
        root: OwnedFd::from(root),
        rules,
        label,
        meter: meter.clone(),
        dirs: Vec::new(),
    };
    tree.unpack(&mut stream)?;
    // The padding after the end-of-archive marker is part of the diff id.
    io::copy(&mut stream, &mut io::sink()).map_err(|e| stream_error(&meter, rules, label, e))?;
    tree.finish()?;
    let diff_id = Digest::from_hasher(stream.hasher);
    let mut raw = stream.inner.into_inner();
    io::copy(&mut raw, &mut io::sink()).map_err(|e| stream_error(&meter, rules, label, e))?;
    Ok(Extracted {
        diff_id,
        blob: Digest::from_hasher(raw.hasher),
    })
}

/// A read error: the limit a reader hit, or a malformed stream.
fn stream_error(meter: &Meter, rules: &Rules, label: &str, e: io::Error) -> ImageError {
    match meter.overrun.get() {
        Some(Overrun::Compressed) => ImageError::TooLarge {
            what: label.to_string(),
            limit: rules.compressed,
            declared: None,
        },
        Some(Overrun::Uncompressed) => ImageError::TooLarge {
            what: format!("{label} (uncompressed)"),
            limit: rules.uncompressed,
            declared: None,
        },
        Some(Overrun::Headers) => ImageError::TooLarge {
            what: format!("a tar header (long name or PAX record) of {label}"),
            limit: HEADER_BUDGET,
            declared: None,
        },
        None => ImageError::BadArchive {
            path: label.to_string(),
            reason: format!("bad tar stream: {e}"),
        },
    }
}

/// Takes ownership of a descriptor an `open` call just returned.
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful openat call;
    // nothing else holds or closes it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `trusted.overlay.opaque=y` on the directory `dir`.
fn set_opaque(dir: &OwnedFd) -> io::Result<()> {
    let name = c"trusted.overlay.opaque";
    // SAFETY: `dir` is an open descriptor, `name` is a NUL-terminated C
    // string, and the value pointer and length describe a live one-byte
    // buffer.
    let rc = unsafe { libc::fsetxattr(dir.as_raw_fd(), name.as_ptr(), b"y".as_ptr().cast(), 1, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn file_type(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

/// Owner, mode and time of one entry.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// A directory whose metadata is applied at the end (its entries would
/// change its time, and a read-only mode would stop them).
#[derive(Debug)]
struct DirMeta {
    path: Vec<OsString>,
    meta: Meta,
}

/// Why walking to a directory failed.
enum Walk {
    Refused(EntryRefusal),
    Failed(Errno),
}

/// One extraction in progress.
struct Tree<'a> {
    root: OwnedFd,
    rules: &'a Rules,
    label: &'a str,
    meter: Rc<Meter>,
    dirs: Vec<DirMeta>,
}

impl Tree<'_> {
    fn unpack(&mut self, stream: impl Read) -> Result<(), ImageError> {
        let mut archive = tar::Archive::new(stream);
        let mut entries = archive.entries().map_err(|e| self.read_error(e))?;
        let mut count = 0u64;
        loop {
            self.meter.between_entries.set(Some(HEADER_BUDGET));
            let next = entries.next();
            self.meter.between_entries.set(None);
            let Some(entry) = next else { break };
            let mut entry = entry.map_err(|e| self.read_error(e))?;
            count += 1;
            if count > self.rules.entries {
                return Err(ImageError::TooManyEntries {
                    what: self.label.to_string(),
                    limit: self.rules.entries,
                });
            }
            self.entry(&mut entry)?;
            // Read what the entry left, so that the parser reads only
            // headers within its budget.
            io::copy(&mut entry, &mut io::sink()).map_err(|e| self.read_error(e))?;
        }
        Ok(())
    }

    fn read_error(&self, e: io::Error) -> ImageError {
        stream_error(&self.meter, self.rules, self.label, e)
    }

    fn refuse(&self, raw: &[u8], reason: EntryRefusal) -> ImageError {
        ImageError::UnsafeEntry {
            layer: self.label.to_string(),
            entry: lossy(raw),
            reason,
        }
    }

    fn fs_error(&self, raw: &[u8], what: &str, e: impl Into<io::Error>) -> ImageError {
        ImageError::Io {
            context: format!("{}: cannot {what} {:?}", self.label, lossy(raw)),
            source: e.into(),
        }
    }

    fn walk_error(&self, raw: &[u8], e: Walk) -> ImageError {
        match e {
            Walk::Refused(reason) => self.refuse(raw, reason),
            Walk::Failed(errno) => self.fs_error(raw, "open a parent of", errno),
        }
    }

    /// The directory `parts` names, reached from the root one component at
    /// a time without following symbolic links; missing directories are
    /// created (0755) when `create`.
    fn walk(&self, parts: &[&OsStr], create: bool) -> Result<OwnedFd, Walk> {
        let mut dir = self
            .root
            .try_clone()
            .map_err(|e| Walk::Failed(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
        for part in parts {
            dir = step(&dir, part, create)?;
        }
        Ok(dir)
    }

    fn meta(&self, header: &tar::Header, raw: &[u8]) -> Result<Meta, ImageError> {
        let bad = |field: &str| ImageError::BadArchive {
            path: self.label.to_string(),
            reason: format!("entry {:?}: bad {field} field", lossy(raw)),
        };
        let mode = header.mode().map_err(|_| bad("mode"))? & 0o7777;
        let uid = header
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .ok_or_else(|| bad("uid"))?;
        let gid = header
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .ok_or_else(|| bad("gid"))?;
        let mtime = header
            .mtime()
            .ok()
            .and_then(|m| i64::try_from(m).ok())
            .ok_or_else(|| bad("mtime"))?;
        Ok(Meta {
            mode,
            uid,
            gid,
            mtime,
        })
    }

    /// The mode to give an entry: as listed in a layer; readable and
    /// writable by its owner, without set-id bits, in an archive.
    fn mode(&self, meta: &Meta, dir: bool) -> Mode {
        let bits = match (self.rules.kind, dir) {
            (Kind::Layer, _) => meta.mode,
            (Kind::Archive, false) => (meta.mode & 0o777) | 0o600,
            (Kind::Archive, true) => (meta.mode & 0o777) | 0o700,
        };
        Mode::from_bits_truncate(bits)
    }

    /// Owner, mode and time of an open file or directory.
    fn apply(&self, fd: &OwnedFd, meta: &Meta, dir: bool) -> Result<(), Errno> {
        // The owner first: chown clears set-id bits.
        if self.rules.owners {
            nix::unistd::fchown(
                fd.as_raw_fd(),
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )?;
        }
        nix::sys::stat::fchmod(fd.as_raw_fd(), self.mode(meta, dir))?;
        let time = TimeSpec::new(meta.mtime, 0);
        nix::sys::stat::futimens(fd.as_raw_fd(), &time, &time)
    }

    /// Owner and time of a symbolic link or FIFO, by name (never followed).
    fn apply_at(&self, parent: &OwnedFd, name: &OsStr, meta: &Meta) -> Result<(), Errno> {
        if self.rules.owners {
            nix::unistd::fchownat(
                Some(parent.as_raw_fd()),
                name,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )?;
        }
        let time = TimeSpec::new(meta.mtime, 0);
        nix::sys::stat::utimensat(
            Some(parent.as_raw_fd()),
            name,
            &time,
            &time,
            UtimensatFlags::NoFollowSymlink,
        )
    }

    /// Removes a non-directory at `parent/name` so that an entry can take
    /// its place (the last entry of a name wins, as in tar).
    fn make_room(&self, parent: &OwnedFd, name: &OsStr, raw: &[u8]) -> Result<(), ImageError> {
        match nix::sys::stat::fstatat(Some(parent.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Err(Errno::ENOENT) => Ok(()),
            Ok(st) if file_type(&st) == libc::S_IFDIR => {
                Err(self.refuse(raw, EntryRefusal::ReplacesDirectory))
            }
            Ok(_) => {
                nix::unistd::unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| self.fs_error(raw, "replace", e))
            }
            Err(e) => Err(self.fs_error(raw, "inspect", e)),
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ImageError> {
        let raw = entry.path_bytes().into_owned();
        let parts = entry_path(&raw).map_err(|r| self.refuse(&raw, r))?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let Some((name, parent_parts)) = parts.split_last() else {
            // `./`: the root's own metadata, for a layer.
            if kind.is_dir() {
                if self.rules.kind == Kind::Layer {
                    let meta = self.meta(entry.header(), &raw)?;
                    self.dirs.push(DirMeta {
                        path: Vec::new(),
                        meta,
                    });
                }
                return Ok(());
            }
            return Err(self.refuse(&raw, EntryRefusal::Empty));
        };
        let name: &OsStr = name;
        if self.rules.kind == Kind::Layer {
            let bytes = name.as_bytes();
            if bytes == b".wh..wh..opq" {
                let dir = self
                    .walk(parent_parts, true)
                    .map_err(|e| self.walk_error(&raw, e))?;
                return set_opaque(&dir).map_err(|e| self.fs_error(&raw, "mark opaque", e));
            }
            if bytes.starts_with(b".wh..wh.") {
                // aufs bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): nothing to do.
                return Ok(());
            }
            if let Some(hidden) = bytes.strip_prefix(b".wh.") {
                return self.whiteout(parent_parts, OsStr::from_bytes(hidden), &raw);
            }
        }
        if kind.is_character_special() || kind.is_block_special() {
            return Err(self.refuse(&raw, EntryRefusal::Device));
        }
        let supported = kind.is_file()
            || kind.is_contiguous()
            || kind.is_dir()
            || kind.is_symlink()
            || kind.is_hard_link()
            || kind.is_fifo();
        if !supported {
            return Err(self.refuse(&raw, EntryRefusal::UnknownType(char::from(kind.as_byte()))));
        }
        let parent = self
            .walk(parent_parts, true)
            .map_err(|e| self.walk_error(&raw, e))?;
        if kind.is_dir() {
            let meta = self.meta(entry.header(), &raw)?;
            self.directory(&parent, name, &raw)?;
            self.dirs.push(DirMeta {
                path: parts.iter().map(|p| p.to_os_string()).collect(),
                meta,
            });
            Ok(())
        } else if kind.is_symlink() {
            let meta = self.meta(entry.header(), &raw)?;
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .filter(|t| !t.is_empty())
                .ok_or_else(|| self.refuse(&raw, EntryRefusal::NoTarget))?;
            if target.contains(&0) {
                return Err(self.refuse(&raw, EntryRefusal::Nul));
            }
            self.make_room(&parent, name, &raw)?;
            // The target is stored as is: it is only ever resolved inside
            // the container's root, never by this code.
            nix::unistd::symlinkat(OsStr::from_bytes(&target), Some(parent.as_raw_fd()), name)
                .map_err(|e| self.fs_error(&raw, "create", e))?;
            self.apply_at(&parent, name, &meta)
                .map_err(|e| self.fs_error(&raw, "set the owner and time of", e))
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| t.into_owned())
                .ok_or_else(|| self.refuse(&raw, EntryRefusal::NoTarget))?;
            self.hard_link(&parent, name, &parts, &target, &raw)
        } else if kind.is_fifo() {
            let meta = self.meta(entry.header(), &raw)?;
            self.make_room(&parent, name, &raw)?;
            nix::unistd::mkfifoat(
                Some(parent.as_raw_fd()),
                name,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| self.fs_error(&raw, "create", e))?;
            self.apply_at(&parent, name, &meta)
                .map_err(|e| self.fs_error(&raw, "set the owner and time of", e))?;
            // The FIFO was just made here, in a directory only this
            // extraction writes, so following is moot; Linux has no
            // fchmodat that refuses symbolic links.
            nix::sys::stat::fchmodat(
                Some(parent.as_raw_fd()),
                name,
                self.mode(&meta, false),
                FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| self.fs_error(&raw, "set the mode of", e))
        } else {
            let meta = self.meta(entry.header(), &raw)?;
            self.file(&parent, name, entry, &meta, &raw)
        }
    }

    fn file<R: Read>(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        entry: &mut tar::Entry<'_, R>,
        meta: &Meta,
        raw: &[u8],
    ) -> Result<(), ImageError> {
        self.make_room(parent, name, raw)?;
        let fd = nix::fcntl::openat(
            Some(parent.as_raw_fd()),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| self.fs_error(raw, "create", e))?;
        let fd = owned(fd);
        let mut file = File::from(
            fd.try_clone()
                .map_err(|e| self.fs_error(raw, "create", e))?,
        );
        if let Err(e) = io::copy(entry, &mut file) {
            return Err(match self.meter.overrun.get() {
                Some(_) => self.read_error(e),
                None => self.fs_error(raw, "write", e),
            });
        }
        self.apply(&fd, meta, false)
            .map_err(|e| self.fs_error(raw, "set the owner, mode and time of", e))
    }

    /// Makes `parent/name` a directory: an existing one is kept, a whiteout
    /// of this layer is replaced by an opaque directory (the name was
    /// deleted, then made again), anything else is replaced.
    fn directory(&self, parent: &OwnedFd, name: &OsStr, raw: &[u8]) -> Result<(), ImageError> {
        let mut opaque = false;
        match nix::sys::stat::fstatat(Some(parent.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        {
            Ok(st) if file_type(&st) == libc::S_IFDIR => return Ok(()),
            Ok(st) => {
                opaque = self.rules.kind == Kind::Layer
                    && file_type(&st) == libc::S_IFCHR
                    && st.st_rdev == 0;
                nix::unistd::unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
                    .map_err(|e| self.fs_error(raw, "replace", e))?;
            }
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(self.fs_error(raw, "inspect", e)),
        }
        nix::sys::stat::mkdirat(
            Some(parent.as_raw_fd()),
            name,
            Mode::from_bits_truncate(0o700),
        )
        .map_err(|e| self.fs_error(raw, "create", e))?;
        if opaque {
            let dir = step(parent, name, false).map_err(|e| self.walk_error(raw, e))?;
            set_opaque(&dir).map_err(|e| self.fs_error(raw, "mark opaque", e))?;
        }
        Ok(())
    }

    /// `.wh.<hidden>`: hides `hidden` of the lower layers. Nothing to do
    /// when this layer has a file of that name (it hides the lower one by
    /// itself); a directory of this layer becomes opaque; otherwise an
    /// overlayfs whiteout (a 0/0 character device) is made.
    fn whiteout(
        &self,
        parent_parts: &[&OsStr],
        hidden: &OsStr,
        raw: &[u8],
    ) -> Result<(), ImageError> {
        if matches!(hidden.as_bytes(), b"" | b"." | b"..") {
            return Err(self.refuse(raw, EntryRefusal::Whiteout));
        }
        let parent = self
            .walk(parent_parts, true)
            .map_err(|e| self.walk_error(raw, e))?;
        match nix::sys::stat::fstatat(
            Some(parent.as_raw_fd()),
            hidden,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if file_type(&st) == libc::S_IFDIR => {
                let dir = step(&parent, hidden, false).map_err(|e| self.walk_error(raw, e))?;
                set_opaque(&dir).map_err(|e| self.fs_error(raw, "mark opaque", e))
            }
            Ok(_) => Ok(()),
            Err(Errno::ENOENT) => nix::sys::stat::mknodat(
                Some(parent.as_raw_fd()),
                hidden,
                SFlag::S_IFCHR,
                Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|e| self.fs_error(raw, "create the whiteout", e)),
            Err(e) => Err(self.fs_error(raw, "inspect", e)),
        }
    }

    /// A hard link to a regular file or symbolic link this extraction made.
    fn hard_link(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        parts: &[&OsStr],
        target: &[u8],
        raw: &[u8],
    ) -> Result<(), ImageError> {
        let refused = || self.refuse(raw, EntryRefusal::HardLink);
        let target_parts = entry_path(target).map_err(|_| refused())?;
        if target_parts.as_slice() == parts {
            // A link to itself: nothing to do.
            return Ok(());
        }
        let Some((target_name, target_parent)) = target_parts.split_last() else {
            return Err(refused());
        };
        let target_dir = self.walk(target_parent, false).map_err(|e| match e {
            Walk::Failed(Errno::ENOENT) => refused(),
            e => self.walk_error(raw, e),
        })?;
        match nix::sys::stat::fstatat(
            Some(target_dir.as_raw_fd()),
            *target_name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if matches!(file_type(&st), libc::S_IFREG | libc::S_IFLNK) => {}
            Ok(_) | Err(Errno::ENOENT) => return Err(refused()),
            Err(e) => return Err(self.fs_error(raw, "inspect the target of", e)),
        }
        self.make_room(parent, name, raw)?;
        // Without AT_SYMLINK_FOLLOW: a link to a symbolic link links the
        // symbolic link itself.
        nix::unistd::linkat(
            Some(target_dir.as_raw_fd()),
            *target_name,
            Some(parent.as_raw_fd()),
            name,
            AtFlags::empty(),
        )
        .map_err(|e| self.fs_error(raw, "create", e))
    }

    /// Applies directory metadata, deepest first.
    fn finish(&mut self) -> Result<(), ImageError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        // Stable: of two entries for one directory, the later wins.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path.len()));
        for d in &dirs {
            let parts: Vec<&OsStr> = d.path.iter().map(|p| p.as_os_str()).collect();
            let raw = parts
                .iter()
                .map(|p| p.as_bytes())
                .collect::<Vec<_>>()
                .join(&b'/');
            let dir = self
                .walk(&parts, false)
                .map_err(|e| self.walk_error(&raw, e))?;
            self.apply(&dir, &d.meta, true)
                .map_err(|e| self.fs_error(&raw, "set the owner, mode and time of", e))?;
        }
        Ok(())
    }
}

/// Opens `dir/part` as a directory, never following a symbolic link;
/// creates it (0755) when missing and `create`.
fn step(dir: &OwnedFd, part: &OsStr, create: bool) -> Result<OwnedFd, Walk> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let open = || nix::fcntl::openat(Some(dir.as_raw_fd()), part, flags, Mode::empty());
    match open() {
        Ok(fd) => Ok(owned(fd)),
        Err(Errno::ENOENT) if create => {
            match nix::sys::stat::mkdirat(
                Some(dir.as_raw_fd()),
                part,
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Walk::Failed(e)),
            }
            match open() {
                Ok(fd) => Ok(owned(fd)),
                Err(Errno::ENOTDIR | Errno::ELOOP) => {
                    Err(Walk::Refused(EntryRefusal::NotADirectory))
                }
                Err(e) => Err(Walk::Failed(e)),
            }
        }
        Err(Errno::ENOTDIR | Errno::ELOOP) => Err(Walk::Refused(EntryRefusal::NotADirectory)),
        Err(e) => Err(Walk::Failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_split_or_refused() {
        let long_component = "a".repeat(256);
        let long_name = "a/".repeat(2100);
        let cases: Vec<(&str, Result<Vec<&str>, EntryRefusal>)> = vec![
            ("a/b/c", Ok(vec!["a", "b", "c"])),
            ("./a//b/./c/", Ok(vec!["a", "b", "c"])),
            ("./", Ok(vec![])),
            (".", Ok(vec![])),
            (".wh.x", Ok(vec![".wh.x"])),
            ("..a/b..", Ok(vec!["..a", "b.."])),
            ("", Err(EntryRefusal::Empty)),
            ("a\0b", Err(EntryRefusal::Nul)),
            ("/etc/passwd", Err(EntryRefusal::Absolute)),
            ("/", Err(EntryRefusal::Absolute)),
            ("..", Err(EntryRefusal::ParentDir)),
            ("../x", Err(EntryRefusal::ParentDir)),
            ("a/../../x", Err(EntryRefusal::ParentDir)),
            ("a/..", Err(EntryRefusal::ParentDir)),
            (long_component.as_str(), Err(EntryRefusal::TooLong)),
            (long_name.as_str(), Err(EntryRefusal::TooLong)),
        ];
        for (raw, want) in cases {
            let got = entry_path(raw.as_bytes()).map(|parts| {
                parts
                    .iter()
                    .map(|p| p.to_str().expect("utf-8"))
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, want, "{raw:?}");
        }
    }

    /// One entry of a hand-made tar: name, type byte, data, link target.
    type Entry<'a> = (&'a str, u8, &'a str, &'a str);

    /// A tar built by hand: `tar::Builder` refuses `..` and absolute names.
    fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data, link) in entries {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            let mode: u64 = if *kind == b'5' { 0o755 } else { 0o644 };
            let fields: [(std::ops::Range<usize>, u64); 5] = [
                (100..108, mode),
                (108..116, 0),
                (116..124, 0),
                (124..136, data.len() as u64),
                (136..148, 1_600_000_000),
            ];
            for (range, value) in fields {
                let width = range.len() - 1;
                h[range].copy_from_slice(format!("{value:0width$o}\0").as_bytes());
            }
            h[148..156].fill(b' ');
            h[156] = *kind;
            h[157..157 + link.len()].copy_from_slice(link.as_bytes());
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
            h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            out.extend_from_slice(&h);
            out.extend_from_slice(data.as_bytes());
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).expect("gzip");
        gz.finish().expect("gzip")
    }

    fn extract_into(
        bytes: &[u8],
        rules: &Rules,
    ) -> (tempfile::TempDir, Result<Extracted, ImageError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let got = extract(bytes, dir.path(), rules, "layer t");
        (dir, got)
    }

    #[test]
    fn files_links_and_directories_are_extracted_and_the_diff_id_is_the_tar_digest() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let bytes = tar(&[
            ("./", b'5', "", ""),
            ("etc/", b'5', "", ""),
            ("etc/hostname", b'0', "box\n", ""),
            ("etc/alias", b'2', "", "/etc/hostname"),
            ("etc/again", b'1', "", "etc/hostname"),
            ("deep/er/file", b'0', "x", ""),
            ("fifo", b'6', "", ""),
        ]);
        let (dir, got) = extract_into(&bytes, &Rules::layer(&Limits::default()));
        let got = got.expect("extracted");
        assert_eq!(got.diff_id, Digest::of(&bytes));
        assert_eq!(got.blob, Digest::of(&bytes));
        let root = dir.path();
        assert_eq!(
            std::fs::read(root.join("etc/hostname")).expect("file"),
            b"box\n"
        );
        // The absolute target is kept as is, never followed here.
        assert_eq!(
            std::fs::read_link(root.join("etc/alias")).expect("link"),
            Path::new("/etc/hostname")
        );
        let a = std::fs::metadata(root.join("etc/hostname")).expect("stat");
        let b = std::fs::metadata(root.join("etc/again")).expect("stat");
        assert_eq!(a.ino(), b.ino(), "a hard link");
        assert_eq!(a.mode() & 0o7777, 0o644);
        assert_eq!(a.mtime(), 1_600_000_000);
        assert_eq!(
            std::fs::metadata(root.join("etc")).expect("dir").mode() & 0o7777,
            0o755
        );
        assert!(root.join("deep/er/file").is_file());
        assert!(
            std::fs::symlink_metadata(root.join("fifo"))
                .expect("fifo")
                .file_type()
                .is_fifo()
        );
    }

    #[test]
    fn gzip_is_read_and_the_blob_digest_is_of_the_compressed_stream() {
        let bytes = tar(&[("a", b'0', "hello", "")]);
        let gz = gzip(&bytes);
        let (_dir, got) = extract_into(&gz, &Rules::layer(&Limits::default()));
        let got = got.expect("extracted");
        assert_eq!(got.diff_id, Digest::of(&bytes));
        assert_eq!(got.blob, Digest::of(&gz));
    }

    fn refusal(rules: &Rules, entries: &[Entry<'_>]) -> EntryRefusal {
        match extract_into(&tar(entries), rules).1 {
            Err(ImageError::UnsafeEntry { reason, .. }) => reason,
            Err(other) => panic!("not an unsafe entry: {other}"),
            Ok(_) => panic!("extracted: {entries:?}"),
        }
    }

    #[test]
    fn escaping_entries_are_refused() {
        let archive = Rules::archive(&Limits::default());
        let cases: Vec<(Vec<Entry<'_>>, EntryRefusal)> = vec![
            (vec![("../x", b'0', "", "")], EntryRefusal::ParentDir),
            (vec![("/x", b'0', "", "")], EntryRefusal::Absolute),
            (
                vec![("l", b'2', "", "/tmp"), ("l/x", b'0', "", "")],
                EntryRefusal::NotADirectory,
            ),
            (
                vec![("f", b'0', "", ""), ("f/x", b'0', "", "")],
                EntryRefusal::NotADirectory,
            ),
            (vec![("h", b'1', "", "/etc/passwd")], EntryRefusal::HardLink),
            (
                vec![("h", b'1', "", "../../etc/passwd")],
                EntryRefusal::HardLink,
            ),
            (
                vec![("l", b'2', "", "/etc"), ("h", b'1', "", "l/passwd")],
                EntryRefusal::NotADirectory,
            ),
            (
                vec![("d", b'5', "", ""), ("h", b'1', "", "d")],
                EntryRefusal::HardLink,
            ),
            (vec![("null", b'3', "", "")], EntryRefusal::Device),
            (vec![("sda", b'4', "", "")], EntryRefusal::Device),
            (vec![("v", b'V', "", "")], EntryRefusal::UnknownType('V')),
            (
                vec![("d", b'5', "", ""), ("d", b'0', "", "")],
                EntryRefusal::ReplacesDirectory,
            ),
        ];
        for (entries, want) in cases {
            assert_eq!(refusal(&archive, &entries), want, "{entries:?}");
        }
    }

    #[test]
    fn a_layer_refuses_whiteouts_through_a_symlink_and_bad_whiteout_names() {
        let layer = Rules::layer(&Limits::default());
        let through = [("l", b'2', "", "/tmp"), ("l/.wh.x", b'0', "", "")];
        assert_eq!(refusal(&layer, &through), EntryRefusal::NotADirectory);
        let opaque = [("l", b'2', "", "/tmp"), ("l/.wh..wh..opq", b'0', "", "")];
        assert_eq!(refusal(&layer, &opaque), EntryRefusal::NotADirectory);
        assert_eq!(
            refusal(&layer, &[(".wh..", b'0', "", "")]),
            EntryRefusal::Whiteout
        );
    }

    #[test]
    fn size_and_entry_limits_stop_the_extraction() {
        let zeros = "\0".repeat(4 << 20);
        let gz = gzip(&tar(&[("big", b'0', zeros.as_str(), "")]));
        let small = Limits {
            layer_uncompressed: 1 << 20,
            ..Limits::default()
        };
        let err = extract_into(&gz, &Rules::layer(&small))
            .1
            .expect_err("too large");
        assert!(
            matches!(err, ImageError::TooLarge { limit, declared: None, .. } if limit == 1 << 20),
            "{err}"
        );
        let few = Limits {
            layer_entries: 2,
            ..Limits::default()
        };
        let bytes = tar(&[
            ("a", b'0', "", ""),
            ("b", b'0', "", ""),
            ("c", b'0', "", ""),
        ]);
        let err = extract_into(&bytes, &Rules::layer(&few))
            .1
            .expect_err("too many");
        assert!(matches!(err, ImageError::TooManyEntries { .. }), "{err}");
    }
}
