//! Pulling from an OCI registry with `oci-client`: HTTP for registries
//! marked insecure and for loopback ones (unless a CA file is given), HTTPS
//! otherwise; anonymous, basic or bearer.
//!
//! Sizes are bounded by the store's [`Limits`](super::Limits): the manifest
//! is fetched here with reqwest (the client oci-client is built on, with the
//! same TLS set-up and the token oci-client negotiates), reading at most
//! `Limits::manifest` bytes, because oci-client reads a manifest whole; a
//! config or layer whose declared size passes its limit is refused before
//! it is downloaded, and what is written is capped at the declared size
//! ([`Capped`]), so a registry cannot fill memory or disk by sending more.

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest, OciManifest,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use tokio::io::AsyncWrite;

use super::{Digest, ImageError, ImageRecord, ImageStore, parse_config, verify};

/// The manifest media types a pull accepts.
const MANIFEST_TYPES: [&str; 4] = [
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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

/// An `AsyncWrite` that takes at most `cap` bytes: past it, a write fails
/// and `exceeded` is set.
struct Capped<W> {
    inner: W,
    left: u64,
    exceeded: bool,
}

impl<W> Capped<W> {
    fn new(inner: W, cap: u64) -> Self {
        Self {
            inner,
            left: cap,
            exceeded: false,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Capped<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if buf.len() as u64 > this.left {
            this.exceeded = true;
            return Poll::Ready(Err(std::io::Error::other(
                "the blob is larger than its declared size",
            )));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.left -= n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// One pull's view of its registry.
struct Registry<'a> {
    client: Client,
    /// For the manifest, read with a bound.
    http: reqwest::Client,
    scheme: &'static str,
    /// The bearer token oci-client negotiated, if any.
    token: Option<String>,
    auth: &'a PullAuth,
    /// `host[:port]`, for errors.
    name: String,
    /// The reference as given, for errors.
    reference: &'a str,
}

impl Registry<'_> {
    fn classify(&self, err: OciDistributionError) -> ImageError {
        classify(err, &self.name, self.reference)
    }

    fn request_error(&self, err: &reqwest::Error) -> ImageError {
        if err.is_connect() || err.is_timeout() {
            ImageError::Unreachable {
                registry: self.name.clone(),
                reason: error_chain(err),
            }
        } else {
            ImageError::Registry {
                reference: self.reference.to_string(),
                reason: error_chain(err),
            }
        }
    }
}

/// The size `desc` declares, refused when negative or above `limit`.
fn declared_size(desc: &OciDescriptor, limit: u64, what: &str) -> Result<u64, ImageError> {
    let size = u64::try_from(desc.size).map_err(|_| ImageError::BadArchive {
        path: what.to_string(),
        reason: format!("negative size {}", desc.size),
    })?;
    if size > limit {
        return Err(ImageError::TooLarge {
            what: what.to_string(),
            limit,
            declared: Some(size),
        });
    }
    Ok(size)
}

impl ImageStore {
    /// Pulls `reference` unless an image of that name is already stored
    /// with every layer verified. An image whose layers are not all verified
    /// (stored by an older agent) is pulled again; when that fails (an
    /// imported image has no registry), the error is
    /// [`ImageError::Unverified`]: import the image again.
    pub async fn ensure(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> Result<ImageRecord, ImageError> {
        let parsed = parse_reference(reference)?;
        let Some(rec) = self.get(&parsed.whole())? else {
            return self.pull(reference, opts).await;
        };
        let Some(digest) = self.unverified_layer(&rec) else {
            return Ok(rec);
        };
        match self.pull(reference, opts).await {
            Ok(rec) => Ok(rec),
            Err(e) => {
                tracing::warn!(
                    image = %rec.name,
                    layer = %digest,
                    error = %e,
                    "an image stored without verification could not be pulled again"
                );
                Err(ImageError::Unverified {
                    image: rec.name,
                    digest,
                })
            }
        }
    }

    /// Pulls `reference` from its registry, verifying every blob.
    pub async fn pull(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> Result<ImageRecord, ImageError> {
        let image = parse_reference(reference)?;
        let registry = self.registry(&image, reference, opts).await?;
        let manifest = self.fetch_manifest(&registry, &image).await?;
        self.check_layer_count(reference, manifest.layers.len())?;
        let bad_digest = |what: &str| ImageError::bad_digest(format!("{what} of {reference}"));
        let config_digest = Digest::parse(&manifest.config.digest)
            .map_err(bad_digest("the config digest in the manifest"))?;
        let layer_digests = manifest
            .layers
            .iter()
            .map(|l| Digest::parse(&l.digest).map_err(bad_digest("a layer digest in the manifest")))
            .collect::<Result<Vec<_>, _>>()?;

        let what = format!("config of {reference}");
        let size = declared_size(&manifest.config, self.limits().config, &what)?;
        let mut config_blob = Capped::new(Vec::new(), size);
        registry
            .client
            .pull_blob(&image, &manifest.config, &mut config_blob)
            .await
            .map_err(|e| {
                over_cap(config_blob.exceeded, &what, size).unwrap_or_else(|| registry.classify(e))
            })?;
        let config_blob = config_blob.inner;
        verify(&what, &config_blob, &config_digest)?;
        let (_, diff_ids) = parse_config(&config_blob, reference)?;
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
        for ((layer, blob), diff_id) in manifest.layers.iter().zip(layer_digests).zip(&diff_ids) {
            if self.has_layer(diff_id) {
                continue;
            }
            let what = format!("layer {blob} of {reference}");
            let size = declared_size(layer, self.limits().layer_compressed, &what)?;
            let tmp = self.temp_dir("blob")?;
            let blob_path = tmp.0.join("blob");
            let file = tokio::fs::File::create(&blob_path)
                .await
                .map_err(ImageError::io(format!(
                    "cannot create {}",
                    blob_path.display()
                )))?;
            let mut file = Capped::new(file, size);
            // oci-client checks the blob digest as it streams.
            registry
                .client
                .pull_blob(&image, layer, &mut file)
                .await
                .map_err(|e| {
                    over_cap(file.exceeded, &what, size).unwrap_or_else(|| registry.classify(e))
                })?;
            drop(file);
            let store = self.clone();
            let diff_id = diff_id.clone();
            tokio::task::spawn_blocking(move || {
                let _keep = tmp;
                let file = std::fs::File::open(&blob_path).map_err(ImageError::io(format!(
                    "cannot open {}",
                    blob_path.display()
                )))?;
                // Checked again from disk as it is extracted, then against
                // the diff id.
                store.store_layer(file, &diff_id, Some(&blob))
            })
            .await
            .map_err(|e| ImageError::Registry {
                reference: reference.to_string(),
                reason: e.to_string(),
            })??;
        }
        self.commit_image(&image.whole(), &config_blob, diff_ids)
    }

    /// The clients and credentials for `image`'s registry.
    async fn registry<'a>(
        &self,
        image: &Reference,
        reference: &'a str,
        opts: &'a PullOptions,
    ) -> Result<Registry<'a>, ImageError> {
        let registry = image.resolve_registry().to_string();
        // Plain HTTP when asked, or on loopback unless a CA says TLS is wanted.
        let listed = opts.insecure_registries.contains(&registry);
        let http = opts.insecure || listed || (is_loopback(&registry) && opts.ca_file.is_none());
        let ca = match &opts.ca_file {
            Some(ca) => Some(
                std::fs::read(ca)
                    .map_err(ImageError::io(format!("cannot read {}", ca.display())))?,
            ),
            None => None,
        };
        let mut config = ClientConfig {
            protocol: if http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(CONNECT_TIMEOUT),
            ..ClientConfig::default()
        };
        if let Some(data) = &ca {
            config.extra_root_certificates.push(Certificate {
                encoding: CertificateEncoding::Pem,
                data: data.clone(),
            });
        }
        // reqwest is built without a crypto provider of its own (no
        // aws-lc-rs beside ring): HTTPS uses the process default, ring.
        crate::api::tls::install_default_provider();
        let setup = |reason: String| ImageError::Registry {
            reference: reference.to_string(),
            reason: format!("cannot set up the registry client: {reason}"),
        };
        // `Client::new` panics when the TLS set-up fails (no CA certificates
        // on the system, a bad extra CA): an error instead.
        let client = Client::try_from(config).map_err(|e| setup(e.to_string()))?;
        // The same TLS set-up as oci-client's (`tls_certs_merge` of the
        // extra CA over the platform verifier).
        let mut builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        if let Some(data) = &ca {
            let cert = reqwest::Certificate::from_pem(data).map_err(|e| setup(error_chain(&e)))?;
            builder = builder.tls_certs_merge([cert]);
        }
        let http_client = builder.build().map_err(|e| setup(error_chain(&e)))?;
        let auth = match &opts.auth {
            PullAuth::Anonymous => RegistryAuth::Anonymous,
            PullAuth::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            PullAuth::Bearer { token } => RegistryAuth::Bearer(token.clone()),
        };
        // Negotiates (and caches, for the blob pulls) a bearer token when
        // the registry asks for one; `None` for basic or no authentication.
        let token = client
            .auth(image, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| classify(e, &registry, reference))?;
        Ok(Registry {
            client,
            http: http_client,
            scheme: if http { "http" } else { "https" },
            token,
            auth: &opts.auth,
            name: registry,
            reference,
        })
    }

    /// The image manifest of `image`; an image index is resolved to this
    /// platform's manifest.
    async fn fetch_manifest(
        &self,
        registry: &Registry<'_>,
        image: &Reference,
    ) -> Result<OciImageManifest, ImageError> {
        match self.fetch_one_manifest(registry, image).await? {
            OciManifest::Image(manifest) => Ok(manifest),
            OciManifest::ImageIndex(index) => {
                let digest = oci_client::client::current_platform_resolver(&index.manifests)
                    .ok_or_else(|| ImageError::Registry {
                        reference: registry.reference.to_string(),
                        reason: "the image index has no manifest for this platform".into(),
                    })?;
                let digest = Digest::parse(&digest).map_err(ImageError::bad_digest(format!(
                    "a manifest digest in the image index of {}",
                    registry.reference
                )))?;
                match self
                    .fetch_one_manifest(registry, &image.clone_with_digest(digest.to_string()))
                    .await?
                {
                    OciManifest::Image(manifest) => Ok(manifest),
                    OciManifest::ImageIndex(_) => Err(ImageError::Registry {
                        reference: registry.reference.to_string(),
                        reason: "the image index points at another index".into(),
                    }),
                }
            }
        }
    }

    /// One manifest or index, read up to `Limits::manifest` bytes and
    /// checked against the reference's digest (or the registry's
    /// `Docker-Content-Digest`).
    async fn fetch_one_manifest(
        &self,
        registry: &Registry<'_>,
        image: &Reference,
    ) -> Result<OciManifest, ImageError> {
        let limit = self.limits().manifest;
        let what = format!("manifest of {}", registry.reference);
        let target = image.digest().or(image.tag()).unwrap_or("latest");
        let url = format!(
            "{}://{}/v2/{}/manifests/{target}",
            registry.scheme,
            image.resolve_registry(),
            image.repository()
        );
        let mut request = registry
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "));
        request = match (&registry.token, registry.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, PullAuth::Basic { username, password }) => {
                request.basic_auth(username, Some(password))
            }
            (None, _) => request,
        };
        let mut response = request
            .send()
            .await
            .map_err(|e| registry.request_error(&e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(ImageError::UnknownImage {
                reference: registry.reference.to_string(),
            });
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(ImageError::Unauthorized {
                registry: registry.name.clone(),
                reference: registry.reference.to_string(),
            });
        }
        if !status.is_success() {
            return Err(ImageError::Registry {
                reference: registry.reference.to_string(),
                reason: format!("the registry answered {status} for {url}"),
            });
        }
        if let Some(length) = response.content_length()
            && length > limit
        {
            return Err(ImageError::TooLarge {
                what,
                limit,
                declared: Some(length),
            });
        }
        let header_digest = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| Digest::parse(v).ok());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| registry.request_error(&e))?
        {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(ImageError::TooLarge {
                    what,
                    limit,
                    declared: None,
                });
            }
            body.extend_from_slice(&chunk);
        }
        let expected = match image.digest() {
            Some(d) => Some(Digest::parse(d).map_err(ImageError::bad_digest(format!(
                "the digest of {}",
                registry.reference
            )))?),
            None => header_digest,
        };
        if let Some(expected) = expected {
            verify(&what, &body, &expected)?;
        }
        let manifest: OciManifest =
            serde_json::from_slice(&body).map_err(|e| ImageError::Registry {
                reference: registry.reference.to_string(),
                reason: format!("bad manifest: {e}"),
            })?;
        let version = match &manifest {
            OciManifest::Image(m) => m.schema_version,
            OciManifest::ImageIndex(i) => i.schema_version,
        };
        if version != 2 {
            return Err(ImageError::Registry {
                reference: registry.reference.to_string(),
                reason: format!("unsupported manifest schema version {version}"),
            });
        }
        Ok(manifest)
    }
}

/// [`ImageError::TooLarge`] when a [`Capped`] writer refused the blob.
fn over_cap(exceeded: bool, what: &str, size: u64) -> Option<ImageError> {
    exceeded.then(|| ImageError::TooLarge {
        what: format!("{what} (more than its declared size)"),
        limit: size,
        declared: Some(size),
    })
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
