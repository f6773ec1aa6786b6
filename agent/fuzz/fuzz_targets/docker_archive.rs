//! A `docker save` archive as `strata image import` reads it: the archive's
//! own extraction, its `manifest.json`, and the config and layers it
//! names, never reaching outside the store, never panicking.
#![no_main]

#[path = "common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sandbox = common::Sandbox::new();
    let archive = sandbox.input.join("image.tar");
    std::fs::write(&archive, data).expect("archive");
    sandbox.import(&archive);
});
