//! The update bundles written by `cargo xtask image` verify with the
//! public key of the key that signed them, carry the root hash of the
//! published manifest, and are refused with another key or when cut short.

use std::fs::File;
use std::io::Read;

use ed25519_dalek::pkcs8::DecodePrivateKey;
use qemu_tests::env;

#[test]
fn built_bundles_verify_and_tampering_is_refused() {
    let key_file = env::project_root().join("target/strata-dev-signing.pem");
    let bundles: Vec<_> = ["master", "private", "public"]
        .iter()
        .map(|r| (r, env::images_dir().join(format!("strata-{r}.update"))))
        .collect();
    let mut needs: Vec<&std::path::Path> = vec![&key_file];
    needs.extend(bundles.iter().map(|(_, p)| p.as_path()));
    if !env::require("built_bundles_verify_and_tampering_is_refused", &needs, &[]) {
        return;
    }
    let pem = std::fs::read_to_string(&key_file).expect("the dev key is readable");
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("the dev key parses");
    for (role, path) in &bundles {
        let published = env::images_dir().join(format!("strata-{role}.manifest.json"));
        let published = image::manifest::Manifest::parse(
            "published",
            &std::fs::read(&published).expect("manifest"),
        )
        .expect("manifest parses");
        let m = image::bundle::verify(File::open(path).expect("bundle"), &key.verifying_key())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(m.root_hash, published.root_hash);
        assert_eq!(m.parts, published.parts);
        assert_eq!(m.role.as_str(), **role);
    }
    // Another key, and a bundle cut inside its last part.
    let (_, path) = &bundles[1];
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let e = image::bundle::verify(File::open(path).expect("bundle"), &other.verifying_key())
        .unwrap_err();
    assert!(matches!(e, image::bundle::BundleError::BadSignature), "{e}");
    let len = std::fs::metadata(path).expect("bundle").len();
    let cut = File::open(path).expect("bundle").take(len - 1);
    let e = image::bundle::verify(cut, &key.verifying_key()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "bundle is truncated: it ends inside part `uki.efi`"
    );
}
