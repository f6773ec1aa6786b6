//! A layer (tar, or gzip of a tar) inside an image archive, extracted into
//! the store: whiteouts, opaque directories, links and names never leave
//! the layer's directory, and nothing panics.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

const MANIFEST: &str = r#"[{"Config":"config.json","Layers":["layer.tar"]}]"#;
const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:0000000000000000000000000000000000000000000000000000000000000000"]}}"#;

fuzz_target!(|data: &[u8]| {
    let sandbox = common::Sandbox::new();
    std::fs::write(sandbox.input.join("manifest.json"), MANIFEST).expect("manifest");
    std::fs::write(sandbox.input.join("config.json"), CONFIG).expect("config");
    std::fs::write(sandbox.input.join("layer.tar"), data).expect("layer");
    sandbox.import(&sandbox.input);
});
