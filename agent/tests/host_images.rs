//! Host tier for the image store's defences against crafted images:
//! path-like digests, layers and archives whose entries try to leave their
//! directory, oversized manifests, configs and layers, and the layers an
//! older agent stored without verification. Every image is an OCI layout
//! written here byte by byte, with raw ustar headers so that `..` and
//! absolute names get through (`tar::Builder` refuses them). Root only:
//! layers keep their owners, and whiteouts are device nodes.
//!
//! Each test says why the store before these checks failed it: it took
//! digests as path names (`layers/<what follows sha256:>`), extracted with
//! `tar`'s `unpack_in` and made whiteouts by joining names to paths (which
//! follows a symbolic link the same layer planted), read archive members
//! through `std::fs` (following links out of the archive), and had no
//! limits at all (`Limits` and `ImageStore::with_limits` did not exist).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use agent::images::{
    Digest, EntryRefusal, ImageError, ImageStore, Limits, PullOptions, sha256_hex,
};
use qemu_tests::testenv::{Need, require};
use serde_json::json;
use sha2::{Digest as _, Sha256};

const NEEDS: &[Need] = &[Need::Root];

/// A directory with the store and a `victim/` directory (one file, `keep`)
/// that crafted images aim at; removed on drop.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("strata-img-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("victim")).expect("mkdir");
        std::fs::write(dir.join("victim/keep"), b"precious").expect("victim file");
        Self { dir }
    }

    fn store(&self) -> ImageStore {
        ImageStore::open(self.dir.join("store")).expect("store")
    }

    fn victim(&self) -> PathBuf {
        self.dir.join("victim")
    }

    /// The victim holds exactly its one regular file, unchanged.
    fn assert_victim_intact(&self) {
        let keep = self.victim().join("keep");
        let md = std::fs::symlink_metadata(&keep).expect("victim file");
        assert!(md.file_type().is_file(), "{} was replaced", keep.display());
        assert_eq!(std::fs::read(&keep).expect("read"), b"precious");
        assert_eq!(names(&self.victim()), ["keep"]);
        assert!(!opaque(&self.victim()), "the victim was marked opaque");
    }

    /// Writes `image` as an OCI layout under `name` and imports it.
    fn import(
        &self,
        store: &ImageStore,
        name: &str,
        image: &Image,
    ) -> Result<agent::images::ImageRecord, ImageError> {
        let layout = self.dir.join(name);
        image.write(&layout);
        store.import(&layout, None)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Whether `dir` carries overlayfs' opaque mark.
fn opaque(dir: &Path) -> bool {
    let path = CString::new(dir.as_os_str().as_bytes()).expect("path");
    let mut value = [0u8; 4];
    // SAFETY: `path` and the attribute name are NUL-terminated C strings,
    // and `value` is a live buffer of the length passed.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

/// Nothing of a refused image is left in the store.
fn assert_nothing_stored(store: &ImageStore) {
    assert!(store.list().expect("list").is_empty(), "an image record");
    for sub in ["layers", "verified", "tmp", "images"] {
        assert_eq!(
            names(&store.root().join(sub)),
            Vec::<String>::new(),
            "{sub}/ of the store"
        );
    }
}

/// One entry of a hand-made tar: name, type byte, data, link target.
type Entry<'a> = (&'a str, u8, &'a str, &'a str);

const FILE: u8 = b'0';
const HARD_LINK: u8 = b'1';
const SYMLINK: u8 = b'2';
const DIR: u8 = b'5';

/// A ustar header block for `name` (any bytes up to 100, `..` and `/x`
/// included), written by hand.
fn header(name: &str, kind: u8, size: u64, link: &str) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mode: u64 = if kind == DIR { 0o755 } else { 0o644 };
    let fields: [(std::ops::Range<usize>, u64); 5] = [
        (100..108, mode),
        (108..116, 0),
        (116..124, 0),
        (124..136, size),
        (136..148, 1_600_000_000),
    ];
    for (range, value) in fields {
        let width = range.len() - 1;
        h[range].copy_from_slice(format!("{value:0width$o}\0").as_bytes());
    }
    h[148..156].fill(b' ');
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// An uncompressed tar of `entries`.
fn tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        out.extend_from_slice(&header(name, *kind, data.len() as u64, link));
        out.extend_from_slice(data.as_bytes());
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// An image to write as an OCI layout: layer blobs as stored, the diff ids
/// its config lists, and padding to blow up the config, the manifest or
/// `index.json`.
#[derive(Default)]
struct Image {
    blobs: Vec<Vec<u8>>,
    diff_ids: Vec<String>,
    config_padding: usize,
    manifest_padding: usize,
    index_padding: usize,
}

impl Image {
    /// Uncompressed layers, each with its true diff id: the store before
    /// these checks extracted them all the way.
    fn of(layers: Vec<Vec<u8>>) -> Self {
        Self {
            diff_ids: layers.iter().map(|l| Digest::of(l).to_string()).collect(),
            blobs: layers,
            ..Self::default()
        }
    }

    fn write(&self, dir: &Path) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        let put = |bytes: &[u8]| {
            let digest = Digest::of(bytes);
            std::fs::write(blobs.join(digest.hex()), bytes).expect("blob");
            (digest.to_string(), bytes.len())
        };
        let layers: Vec<serde_json::Value> = self
            .blobs
            .iter()
            .map(|blob| {
                let (digest, size) = put(blob);
                json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest,
                    "size": size,
                })
            })
            .collect();
        let config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Cmd": ["sh"] },
            "rootfs": { "type": "layers", "diff_ids": self.diff_ids },
            "padding": "x".repeat(self.config_padding),
        });
        let (config_digest, config_size) = put(&serde_json::to_vec(&config).expect("json"));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layers,
            "annotations": { "padding": "x".repeat(self.manifest_padding) },
        });
        let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).expect("json"));
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {
                    "org.opencontainers.image.ref.name": "example.org/crafted:1",
                    "padding": "x".repeat(self.index_padding),
                },
            }],
        });
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&index).expect("json"),
        )
        .expect("index.json");
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
    }
}

fn one_file_layer() -> Vec<u8> {
    tar(&[("hello", FILE, "hi\n", "")])
}

/// (a) A config whose diff id is a path. The store before this check named
/// layer directories `layers/<what follows sha256:>`: `layers/../../..`
/// was the victim directory, which `is_dir()`, so the layer counted as
/// already stored and the import succeeded with a record that mounts the
/// victim as a task's root file system.
#[test]
fn a_path_like_diff_id_is_refused_before_it_names_a_path() {
    if !require(
        "a_path_like_diff_id_is_refused_before_it_names_a_path",
        NEEDS,
    ) {
        return;
    }
    let fx = Fixture::new("pathid");
    let store = fx.store();
    let victim = fx.victim();
    let path_like = format!(
        "sha256:{}{}",
        "../".repeat(32),
        victim.strip_prefix("/").expect("absolute").display()
    );
    let image = Image {
        diff_ids: vec![path_like],
        ..Image::of(vec![one_file_layer()])
    };
    let err = fx
        .import(&store, "layout", &image)
        .expect_err("a path-like diff id");
    assert!(matches!(err, ImageError::BadDigest { .. }), "{err}");
    assert!(err.to_string().contains("is not a sha256 digest"), "{err}");
    assert_nothing_stored(&store);
    fx.assert_victim_intact();
}

/// (b) A symbolic link to the victim, then a whiteout and an opaque marker
/// under it. The store before this check made whiteouts by joining names:
/// `create_dir_all(layer/escape)` followed the link, and the whiteout
/// `layer/escape/keep` removed the victim's file and made a device node in
/// its place; the opaque marker set an xattr on the victim.
#[test]
fn a_symlink_then_whiteout_cannot_touch_anything_outside_the_layer() {
    if !require(
        "a_symlink_then_whiteout_cannot_touch_anything_outside_the_layer",
        NEEDS,
    ) {
        return;
    }
    let fx = Fixture::new("whiteout");
    let store = fx.store();
    let victim = fx.victim().display().to_string();
    for (i, marker) in ["escape/.wh.keep", "escape/.wh..wh..opq"]
        .into_iter()
        .enumerate()
    {
        let layer = tar(&[
            ("escape", SYMLINK, "", victim.as_str()),
            (marker, FILE, "", ""),
        ]);
        let err = fx
            .import(&store, &format!("layout{i}"), &Image::of(vec![layer]))
            .expect_err("a whiteout through a symlink");
        assert!(
            matches!(
                err,
                ImageError::UnsafeEntry {
                    reason: EntryRefusal::NotADirectory,
                    ..
                }
            ),
            "{err}"
        );
        assert_nothing_stored(&store);
        fx.assert_victim_intact();
    }
}

/// (c) `..`, absolute names, and links out of the layer; then the same in
/// the archive being imported. The store before this check refused `..`
/// in a layer as a plain `BadArchive`, extracted `/abs` silently as `abs`,
/// left links to `tar`'s canonicalising checks, and skipped `..` members
/// of an archive without a word; and it read archive members through
/// symbolic links, so an archive of links imported files of the host.
#[test]
fn dot_dot_absolute_names_and_links_out_are_refused() {
    if !require("dot_dot_absolute_names_and_links_out_are_refused", NEEDS) {
        return;
    }
    let fx = Fixture::new("names");
    let store = fx.store();
    let victim = fx.victim().display().to_string();
    let victim_file = format!("{victim}/keep");
    let cases: Vec<(Vec<Entry<'_>>, EntryRefusal)> = vec![
        (vec![("../escaped", FILE, "x", "")], EntryRefusal::ParentDir),
        (
            vec![("a/../../escaped", FILE, "x", "")],
            EntryRefusal::ParentDir,
        ),
        (vec![("/abs", FILE, "x", "")], EntryRefusal::Absolute),
        (
            vec![("h", HARD_LINK, "", "../../../../../../etc/passwd")],
            EntryRefusal::HardLink,
        ),
        (
            vec![("h", HARD_LINK, "", victim_file.as_str())],
            EntryRefusal::HardLink,
        ),
        (
            vec![
                ("l", SYMLINK, "", victim.as_str()),
                ("l/new", FILE, "x", ""),
            ],
            EntryRefusal::NotADirectory,
        ),
        (
            vec![
                ("l", SYMLINK, "", victim.as_str()),
                ("h", HARD_LINK, "", "l/keep"),
            ],
            EntryRefusal::NotADirectory,
        ),
    ];
    for (i, (entries, want)) in cases.into_iter().enumerate() {
        let err = fx
            .import(
                &store,
                &format!("layout{i}"),
                &Image::of(vec![tar(&entries)]),
            )
            .expect_err("refused");
        match &err {
            ImageError::UnsafeEntry { reason, .. } => assert_eq!(*reason, want, "{entries:?}"),
            other => panic!("{entries:?}: not an unsafe entry: {other}"),
        }
        assert_nothing_stored(&store);
        fx.assert_victim_intact();
    }
    assert!(!fx.dir.join("escaped").exists());
    assert!(!store.root().join("escaped").exists());

    // The archive itself: a `..` member.
    let archive = fx.dir.join("dotdot.tar");
    std::fs::write(
        &archive,
        tar(&[
            ("oci-layout", FILE, r#"{"imageLayoutVersion":"1.0.0"}"#, ""),
            ("../outside", FILE, "x", ""),
        ]),
    )
    .expect("archive");
    let err = store.import(&archive, None).expect_err("a .. member");
    assert!(
        matches!(
            err,
            ImageError::UnsafeEntry {
                reason: EntryRefusal::ParentDir,
                ..
            }
        ),
        "{err}"
    );
    assert!(!store.root().join("tmp/outside").exists());
    assert!(!store.root().join("outside").exists());
    assert_nothing_stored(&store);

    // An archive whose members are links to a layout on the host: they
    // resolve inside the archive, where nothing is.
    let host_layout = fx.dir.join("host-layout");
    Image::of(vec![one_file_layer()]).write(&host_layout);
    let target = |name: &str| host_layout.join(name).display().to_string();
    let (oci_layout, index, blobs) = (target("oci-layout"), target("index.json"), target("blobs"));
    let archive = fx.dir.join("links.tar");
    std::fs::write(
        &archive,
        tar(&[
            ("oci-layout", SYMLINK, "", oci_layout.as_str()),
            ("index.json", SYMLINK, "", index.as_str()),
            ("blobs", SYMLINK, "", blobs.as_str()),
        ]),
    )
    .expect("archive");
    let err = store
        .import(&archive, None)
        .expect_err("links out of the archive");
    assert!(matches!(err, ImageError::BadArchive { .. }), "{err}");
    assert_nothing_stored(&store);
}

/// (d) Oversized `index.json`, manifest and config. The store before this
/// check read each whole into memory, whatever its size, and imported the
/// image.
#[test]
fn oversized_index_manifest_and_config_are_refused() {
    if !require("oversized_index_manifest_and_config_are_refused", NEEDS) {
        return;
    }
    let fx = Fixture::new("oversized");
    let store = fx.store();
    let limits = Limits::default();
    let over = |limit: u64| usize::try_from(limit).expect("usize") + 1024;
    let cases = [
        (
            "index",
            Image {
                index_padding: over(limits.manifest),
                ..Image::of(vec![one_file_layer()])
            },
            limits.manifest,
        ),
        (
            "manifest",
            Image {
                manifest_padding: over(limits.manifest),
                ..Image::of(vec![one_file_layer()])
            },
            limits.manifest,
        ),
        (
            "config",
            Image {
                config_padding: over(limits.config),
                ..Image::of(vec![one_file_layer()])
            },
            limits.config,
        ),
    ];
    for (what, image, limit) in cases {
        let err = fx.import(&store, what, &image).expect_err("too large");
        match &err {
            ImageError::TooLarge {
                limit: l,
                declared: Some(size),
                ..
            } => {
                assert_eq!(*l, limit, "{what}: {err}");
                assert!(*size > limit, "{what}: {err}");
            }
            other => panic!("{what}: not too large: {other}"),
        }
        assert!(err.to_string().contains("use a smaller image"), "{err}");
        assert_nothing_stored(&store);
    }
}

/// (d) A gzip bomb: 64 MiB of zeros in well under a megabyte, under a
/// 4 MiB layer limit (the default, 16 GiB, takes too long to reach in a
/// test; the code path is the same); also too many entries and too many
/// layers. The store before this check had no limit and wrote the whole
/// layer out.
#[test]
fn a_gzip_bomb_and_too_many_entries_or_layers_are_stopped() {
    if !require(
        "a_gzip_bomb_and_too_many_entries_or_layers_are_stopped",
        NEEDS,
    ) {
        return;
    }
    use std::io::Write;
    let fx = Fixture::new("bomb");
    let limits = Limits {
        layer_uncompressed: 4 << 20,
        layer_entries: 100,
        max_layers: 2,
        ..Limits::default()
    };
    let store = fx.store().with_limits(limits);

    // The bomb, with its true diff id, streamed.
    const SIZE: u64 = 64 << 20;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut diff = Sha256::new();
    let mut put = |bytes: &[u8]| {
        diff.update(bytes);
        gz.write_all(bytes).expect("gzip");
    };
    put(&header("zeros", FILE, SIZE, "")[..]);
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..(SIZE >> 20) {
        put(&chunk[..]);
    }
    put(&[0u8; 1024][..]);
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let image = Image {
        diff_ids: vec![format!("sha256:{}", hex::encode(diff.finalize()))],
        blobs: vec![bomb],
        ..Image::default()
    };
    let err = fx.import(&store, "bomb", &image).expect_err("a gzip bomb");
    assert!(
        matches!(err, ImageError::TooLarge { limit, declared: None, .. } if limit == 4 << 20),
        "{err}"
    );
    assert_nothing_stored(&store);

    let names: Vec<String> = (0..101).map(|i| format!("f{i}")).collect();
    let entries: Vec<Entry<'_>> = names.iter().map(|n| (n.as_str(), FILE, "", "")).collect();
    let err = fx
        .import(&store, "entries", &Image::of(vec![tar(&entries)]))
        .expect_err("too many entries");
    assert!(
        matches!(err, ImageError::TooManyEntries { limit: 100, .. }),
        "{err}"
    );
    assert_nothing_stored(&store);

    let three = (0..3)
        .map(|i| {
            let name = format!("f{i}");
            tar(&[(name.as_str(), FILE, "x", "")])
        })
        .collect();
    let err = fx
        .import(&store, "layers", &Image::of(three))
        .expect_err("too many layers");
    assert!(
        matches!(
            err,
            ImageError::TooManyLayers {
                count: 3,
                limit: 2,
                ..
            }
        ),
        "{err}"
    );
    assert_nothing_stored(&store);
}

/// Whiteouts, opaque directories and links that stay inside the layer
/// become what overlayfs reads, and only a verified layer gets a marker.
#[test]
fn whiteouts_opaque_directories_and_links_inside_the_layer_are_kept() {
    if !require(
        "whiteouts_opaque_directories_and_links_inside_the_layer_are_kept",
        NEEDS,
    ) {
        return;
    }
    let fx = Fixture::new("overlay");
    let store = fx.store();
    let layer = tar(&[
        ("etc/", DIR, "", ""),
        ("etc/hostname", FILE, "box\n", ""),
        ("etc/.wh.motd", FILE, "", ""),
        ("etc/again", HARD_LINK, "", "etc/hostname"),
        ("etc/alias", SYMLINK, "", "/etc/hostname"),
        ("var/", DIR, "", ""),
        ("var/.wh..wh..opq", FILE, "", ""),
        ("var/.wh..wh.plnk", FILE, "", ""),
        // A whiteout of a name this layer has: the layer's own file stays.
        ("etc/.wh.hostname", FILE, "", ""),
        // Deleted and made again: an opaque directory.
        (".wh.opt", FILE, "", ""),
        ("opt/", DIR, "", ""),
    ]);
    let diff_id = Digest::of(&layer);
    let rec = fx
        .import(&store, "layout", &Image::of(vec![layer]))
        .expect("imported");
    assert_eq!(rec.layers, vec![diff_id.clone()]);
    assert!(store.has_layer(&diff_id));
    let dir = store
        .verified_layer_dir(&rec.name, &diff_id)
        .expect("verified");
    assert_eq!(
        std::fs::read(dir.join("etc/hostname")).expect("file"),
        b"box\n"
    );
    let motd = std::fs::symlink_metadata(dir.join("etc/motd")).expect("whiteout");
    assert!(motd.file_type().is_char_device() && motd.rdev() == 0);
    assert_eq!(
        std::fs::metadata(dir.join("etc/again"))
            .expect("link")
            .ino(),
        std::fs::metadata(dir.join("etc/hostname"))
            .expect("file")
            .ino()
    );
    assert_eq!(
        std::fs::read_link(dir.join("etc/alias")).expect("symlink"),
        Path::new("/etc/hostname")
    );
    assert!(opaque(&dir.join("var")));
    assert!(!dir.join("var/.wh..wh.plnk").exists());
    assert!(opaque(&dir.join("opt")));
    assert!(!opaque(&dir.join("etc")));
    assert_eq!(
        names(&store.root().join("verified")),
        [format!("{}.json", diff_id.hex())]
    );
    fx.assert_victim_intact();
}

/// A store an older agent wrote: an image record and a layer directory
/// without a verification marker. The store before this check trusted any
/// `layers/<hex>` directory: `ensure` returned the record and tasks
/// mounted whatever the directory held.
#[test]
fn an_older_agents_layers_are_never_trusted() {
    if !require("an_older_agents_layers_are_never_trusted", NEEDS) {
        return;
    }
    let fx = Fixture::new("older");
    let store = fx.store();
    let layer = one_file_layer();
    let diff_id = Digest::of(&layer);
    // A registry that is not there: the image cannot be pulled again.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let name = format!("127.0.0.1:{port}/old:1");
    let planted = store.layer_dir(&diff_id);
    std::fs::create_dir_all(&planted).expect("mkdir");
    std::fs::write(planted.join("planted"), b"not the layer").expect("write");
    let record = json!({
        "name": name,
        "config_digest": Digest::of(b"{}").to_string(),
        "layers": [diff_id.to_string()],
        "config": { "cmd": ["sh"] },
    });
    std::fs::write(
        store
            .root()
            .join("images")
            .join(format!("{}.json", sha256_hex(name.as_bytes()))),
        serde_json::to_vec(&record).expect("json"),
    )
    .expect("record");

    assert!(!store.has_layer(&diff_id));
    let err = store
        .verified_layer_dir(&name, &diff_id)
        .expect_err("unverified");
    assert!(matches!(err, ImageError::Unverified { .. }), "{err}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let err = rt
        .block_on(store.ensure(&name, &PullOptions::default()))
        .expect_err("not pulled again, not trusted");
    assert!(matches!(err, ImageError::Unverified { .. }), "{err}");
    assert!(err.to_string().contains("import the image again"), "{err}");

    // Imported again: the old directory is quarantined, the layer extracted.
    let layout = fx.dir.join("layout");
    Image::of(vec![layer]).write(&layout);
    let rec = store.import(&layout, Some(&name)).expect("imported again");
    assert!(store.has_layer(&diff_id));
    assert!(!planted.join("planted").exists());
    assert_eq!(
        std::fs::read(planted.join("hello")).expect("layer file"),
        b"hi\n"
    );
    assert_eq!(names(&store.root().join("quarantine")).len(), 1);
    let again = rt
        .block_on(store.ensure(&name, &PullOptions::default()))
        .expect("verified now, no pull");
    assert_eq!(again, rec);
    // gc drops the quarantined copy, which no task uses.
    store
        .gc(&agent::tasks::layers_in_use(&fx.dir.join("state")))
        .expect("gc");
    assert!(names(&store.root().join("quarantine")).is_empty());
}
