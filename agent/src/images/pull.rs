//! Pulling from an OCI registry with `oci-client`: HTTP for registries
//! marked insecure and for loopback ones (unless a CA file is given), HTTPS
//! otherwise; anonymous, basic or bearer.

use std::path::PathBuf;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::{ImageError, ImageRecord, ImageStore, parse_config, verify};

/// Credentials for a registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PullAuth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    Bearer {
        token: String,
    },
}

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub auth: PullAuth,
    /// Use plain HTTP even though the registry is not on loopback.
    pub insecure: bool,
    /// Registries (`host[:port]`) reached over plain HTTP; the others use
    /// HTTPS unless on loopback.
    pub insecure_registries: Vec<String>,
    /// Extra PEM CA certificate to trust for HTTPS (also selects HTTPS for
    /// a loopback registry).
    pub ca_file: Option<PathBuf>,
}

/// Parses an image reference, with a clear error when it is malformed.
pub fn parse_reference(reference: &str) -> Result<Reference, ImageError> {
    reference
        .parse::<Reference>()
        .map_err(|e| ImageError::MalformedReference {
            reference: reference.to_string(),
            reason: e.to_string(),
        })
}

fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl ImageStore {
    /// Pulls `reference` unless an image of that name is already stored.
    pub async fn ensure(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> Result<ImageRecord, ImageError> {
        let parsed = parse_reference(reference)?;
        if let Some(rec) = self.get(&parsed.whole())? {
            return Ok(rec);
        }
        self.pull(reference, opts).await
    }

    /// Pulls `reference` from its registry, verifying every blob.
    pub async fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> Result<ImageRecord, ImageError> {
        let image = parse_reference(reference)?;
        let registry = image.resolve_registry().to_string();
        // Plain HTTP when asked, or on loopback unless a CA says TLS is wanted.
        let listed = opts.insecure_registries.contains(&registry);
        let protocol =
            if opts.insecure || listed || (is_loopback(&registry) && opts.ca_file.is_none()) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            };
        let mut config = ClientConfig {
            protocol,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            ..ClientConfig::default()
        };
        if let Some(ca) = &opts.ca_file {
            let data = std::fs::read(ca)
                .map_err(ImageError::io(format!("cannot read {}", ca.display())))?;
            config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            });
        }
        // reqwest is built without a crypto provider of its own (no
        // aws-lc-rs beside ring): HTTPS uses the process default, ring.
        crate::api::tls::install_default_provider();
        // `Client::new` panics when the TLS set-up fails (no CA certificates
        // on the system, a bad extra CA): an error instead.
        let client = Client::try_from(config).map_err(|e| ImageError::Registry {
            reference: reference.to_string(),
            reason: format!("cannot set up the registry client: {e}"),
        })?;
        let auth = match &opts.auth {
            PullAuth::Anonymous => RegistryAuth::Anonymous,
            PullAuth::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            PullAuth::Bearer { token } => RegistryAuth::Bearer(token.clone()),
        };
        let classify = |e: OciDistributionError| classify(e, &registry, reference);
        let (manifest, _digest) = client
            .pull_image_manifest(&image, &auth)
            .await
            .map_err(classify)?;

        let mut config_blob = Vec::new();
        client
            .pull_blob(&image, &manifest.config, &mut config_blob)
            .await
            .map_err(classify)?;
        verify(
            &format!("config of {reference}"),
            &config_blob,
            &manifest.config.digest,
        )?;
        let (_, diff_ids) = parse_config(&config_blob).map_err(|reason| ImageError::Registry {
            reference: reference.to_string(),
            reason,
        })?;
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Registry {
                reference: reference.to_string(),
                reason: format!(
                    "manifest has {} layers but the config lists {} diff ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            });
        }
        for (layer, diff_id) in manifest.layers.iter().zip(&diff_ids) {
            if self.layer_dir(diff_id).is_dir() {
                continue;
            }
            let tmp = self.temp_dir("blob")?;
            let blob_path = tmp.0.join("blob");
            let file = tokio::fs::File::create(&blob_path)
                .await
                .map_err(ImageError::io(format!(
                    "cannot create {}",
                    blob_path.display()
                )))?;
            // oci-client checks the blob digest as it streams.
            client
                .pull_blob(&image, layer, file)
                .await
                .map_err(classify)?;
            let store = self.clone();
            let (digest, diff_id) = (layer.digest.clone(), diff_id.clone());
            tokio::task::spawn_blocking(move || {
                let _keep = tmp;
                let file = std::fs::File::open(&blob_path).map_err(ImageError::io(format!(
                    "cannot open {}",
                    blob_path.display()
                )))?;
                // Checked again from disk, then extracted and checked against the diff id.
                let actual = super::source::hash_file(&blob_path)?;
                if actual != digest {
                    return Err(ImageError::Digest {
                        what: format!("layer blob {digest}"),
                        expected: digest,
                        actual,
                    });
                }
                store.store_layer(file, &diff_id)
            })
            .await
            .map_err(|e| ImageError::Registry {
                reference: reference.to_string(),
                reason: e.to_string(),
            })??;
        }
        self.commit_image(&image.whole(), &config_blob, diff_ids)
    }
}

fn classify(err: OciDistributionError, registry: &str, reference: &str) -> ImageError {
    match err {
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => ImageError::Digest {
            what: format!("blob of {reference}"),
            expected,
            actual,
        },
        OciDistributionError::ImageManifestNotFoundError(_) => ImageError::UnknownImage {
            reference: reference.to_string(),
        },
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => ImageError::Unauthorized {
            registry: registry.to_string(),
            reference: reference.to_string(),
        },
        OciDistributionError::RequestError(e) if e.is_connect() || e.is_timeout() => {
            ImageError::Unreachable {
                registry: registry.to_string(),
                reason: error_chain(&e),
            }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                )
            }) =>
        {
            ImageError::UnknownImage {
                reference: reference.to_string(),
            }
        }
        OciDistributionError::ServerError { code: 404, .. } => ImageError::UnknownImage {
            reference: reference.to_string(),
        },
        other => ImageError::Registry {
            reference: reference.to_string(),
            reason: other.to_string(),
        },
    }
}

/// An error and its sources, joined: reqwest hides the cause (refused, TLS) in the chain.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_use_http() {
        let got: Vec<(&str, bool)> = [
            "127.0.0.1:5000",
            "localhost:80",
            "[::1]:5000",
            "registry.example.org",
            "10.0.0.1:5000",
        ]
        .into_iter()
        .map(|r| (r, is_loopback(r)))
        .collect();
        assert_eq!(
            got,
            vec![
                ("127.0.0.1:5000", true),
                ("localhost:80", true),
                ("[::1]:5000", true),
                ("registry.example.org", false),
                ("10.0.0.1:5000", false)
            ]
        );
    }

    #[test]
    fn malformed_reference_is_named() {
        let err = parse_reference("Bad Ref!!").expect_err("malformed");
        expect_test::expect![[
            r#"malformed image reference "Bad Ref!!": invalid reference format"#
        ]]
        .assert_eq(&err.to_string());
    }
}
