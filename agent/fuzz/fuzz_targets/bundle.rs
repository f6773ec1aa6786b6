//! Update bundles (from an operator or a download): reading never panics
//! and never hands a part to its sink unless the signature holds. The
//! input is taken twice: as a whole bundle (refused at the signature
//! unless the fuzzer forges one), and as a manifest and parts that this
//! target signs, so the manifest parser and the part reader are reached.
#![no_main]

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]);
    let verifying = key.verifying_key();
    let mut seen = 0usize;
    let whole = image::bundle::read(data, &verifying, |_, bytes| {
        seen += bytes.len();
        Ok(())
    });
    assert!(whole.is_err() || data.len() >= 80, "a bundle shorter than its header read");

    // [len: u16][manifest: len bytes][parts...], signed here.
    if data.len() < 2 {
        return;
    }
    let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
    let (manifest, parts) = data[2..].split_at(len);
    let mut bundle = Vec::with_capacity(data.len() + 80);
    bundle.extend_from_slice(image::bundle::MAGIC);
    bundle.extend_from_slice(&image::bundle::FORMAT.to_le_bytes());
    bundle.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
    bundle.extend_from_slice(manifest);
    bundle.extend_from_slice(&key.sign(manifest).to_bytes());
    bundle.extend_from_slice(parts);
    let mut streamed = 0u64;
    if let Ok(m) = image::bundle::read(bundle.as_slice(), &verifying, |_, bytes| {
        streamed += bytes.len() as u64;
        Ok(())
    }) {
        let declared: u64 = m.parts.iter().map(|p| p.size).sum();
        assert_eq!(streamed, declared);
        assert_eq!(declared, parts.len() as u64, "trailing data was accepted");
    }
});
