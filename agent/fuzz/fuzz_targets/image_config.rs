//! Image configurations, digests and references (from a registry or an
//! archive): parsing never panics, every diff id it accepts is a
//! `sha256:` digest of 64 lowercase hex digits (safe as a path), and a
//! digest that parses prints as itself.
#![no_main]

use agent::images::{Digest, parse_config, parse_reference};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, diff_ids)) = parse_config(data, "fuzz") {
        for d in diff_ids {
            let hex = d.hex();
            assert!(
                hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{d}"
            );
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(d) = Digest::parse(text) {
            assert_eq!(d.to_string(), text);
            assert!(!d.hex().contains('/') && !d.hex().contains('.'));
        }
        let _ = parse_reference(text);
    }
});
