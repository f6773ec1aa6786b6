//! Two builds of the same inputs give byte-identical root images: this
//! rebuilds the private image (from the cached tree, so it takes seconds)
//! into a directory of its own and compares its manifest with the one in
//! `target/images/` built from the same commit.

use std::process::Command;

use image::manifest::Manifest;
use qemu_tests::env;

fn manifest(path: &std::path::Path) -> Manifest {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    Manifest::parse(&path.display().to_string(), &bytes).expect("the manifest parses")
}

#[test]
fn a_rebuild_gives_the_same_root_and_digests() {
    let first = env::images_dir().join("strata-private.manifest.json");
    if !env::require(
        "a_rebuild_gives_the_same_root_and_digests",
        &[&first],
        &["mmdebstrap", "mkfs.erofs"],
    ) {
        return;
    }
    let out = env::project_root().join(format!("target/qemu-tests/repro-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .current_dir(env::project_root())
        .args(["xtask", "image", "--role", "private", "--out"])
        .arg(&out)
        .status()
        .expect("cargo xtask image runs");
    assert!(status.success(), "the rebuild failed");
    let (a, b) = (
        manifest(&first),
        manifest(&out.join("strata-private.manifest.json")),
    );
    assert_eq!(
        a.version, b.version,
        "the images in target/images are from another commit: rebuild them"
    );
    assert_eq!(a.root_hash, b.root_hash, "the root images differ");
    assert_eq!(a.parts, b.parts, "root, verity or UKI differ");
    assert_eq!(a.partitions, b.partitions);
    assert_eq!(a.packages, b.packages);
    for (x, y) in a.artifacts.iter().zip(&b.artifacts) {
        assert_eq!(x, y, "artifact {} differs", x.name);
    }
    std::fs::remove_dir_all(&out).expect("clean up");
}
