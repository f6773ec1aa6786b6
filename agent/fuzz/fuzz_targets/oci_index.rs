//! An OCI image layout's `index.json` as `strata image import` reads it
//! (before any digest can vouch for it): never a panic, never a path
//! outside the store.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sandbox = common::Sandbox::new();
    std::fs::write(
        sandbox.input.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    std::fs::create_dir_all(sandbox.input.join("blobs/sha256")).expect("blobs");
    std::fs::write(sandbox.input.join("index.json"), data).expect("index");
    sandbox.import(&sandbox.input);
});
