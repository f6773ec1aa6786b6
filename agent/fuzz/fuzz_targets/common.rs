//! What the image store targets share: a sandbox holding a store, the
//! input and a canary, on tmpfs where there is one, and the check that an
//! import left nothing outside the store and its input.

use std::path::{Path, PathBuf};

use agent::images::{ImageStore, Limits};

/// A store and an input directory side by side, beside a canary file.
pub struct Sandbox {
    dir: tempfile::TempDir,
    pub store: ImageStore,
    pub input: PathBuf,
}

const CANARY: &[u8] = b"untouched";

impl Sandbox {
    pub fn new() -> Sandbox {
        let base = Path::new("/dev/shm");
        let dir = if base.is_dir() {
            tempfile::tempdir_in(base)
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        std::fs::write(dir.path().join("canary"), CANARY).expect("the canary");
        let input = dir.path().join("input");
        std::fs::create_dir(&input).expect("the input directory");
        // Small limits: the fuzzer looks for wrong answers, not big ones.
        let limits = Limits {
            manifest: 64 << 10,
            config: 64 << 10,
            layer_compressed: 1 << 20,
            layer_uncompressed: 4 << 20,
            layer_entries: 512,
            max_layers: 8,
            archive: 4 << 20,
            archive_entries: 512,
        };
        let store = ImageStore::open(dir.path().join("store"))
            .expect("the store opens")
            .with_limits(limits);
        Sandbox { dir, store, input }
    }

    /// Imports `path` (the input directory or a file in it), then checks
    /// that the sandbox holds only the canary, unchanged, the input and
    /// the store.
    pub fn import(&self, path: &Path) {
        let _ = self.store.import(path, Some("fuzz:1"));
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .expect("the sandbox reads")
            .map(|e| e.expect("an entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["canary", "input", "store"], "an import wrote outside the store");
        assert_eq!(
            std::fs::read(self.dir.path().join("canary")).expect("the canary reads"),
            CANARY
        );
    }
}
