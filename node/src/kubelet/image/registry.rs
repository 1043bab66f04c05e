//! Talking to registries: resolving a reference to an image manifest (choosing this
//! node's platform from an index) and downloading blobs, all through `oci-client`, which
//! verifies every digest.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use oci_client::client::{current_platform_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::DigestError;
use oci_client::manifest::{
    OciDescriptor, OciImageManifest, OciManifest, Versioned, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWriteExt as _;

use super::error::chain;
use super::ImageError;

const MANIFEST_MEDIA_TYPES: &[&str] =
    &[OCI_IMAGE_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE];

/// A reference resolved to one platform's image manifest.
pub(crate) struct Resolved {
    /// Digest of what the reference points at (index or manifest).
    pub top_digest: String,
    /// Digest of the image manifest.
    pub manifest_digest: String,
    pub manifest: OciImageManifest,
    /// Every manifest fetched (index, then image manifest), digest-verified, to keep.
    pub raw: Vec<(String, Bytes)>,
}

/// An anonymous registry client.
pub(crate) struct Registry {
    client: Client,
}

impl Registry {
    /// `insecure`: `host:port` registries spoken to in plain HTTP.
    pub fn new(insecure: Vec<String>) -> Result<Registry, ImageError> {
        // oci-client is built without a TLS provider of its own; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let protocol = if insecure.is_empty() { ClientProtocol::Https } else { ClientProtocol::HttpsExcept(insecure) };
        let config = ClientConfig {
            protocol,
            platform_resolver: Some(Box::new(current_platform_resolver)),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| ImageError::Client { detail: chain(&e) })?;
        Ok(Registry { client })
    }

    /// Fetches the manifest `reference` names; for an index, the entry for this node's
    /// platform.
    pub async fn resolve(&self, reference: &Reference) -> Result<Resolved, ImageError> {
        let image = reference.whole();
        let (top_bytes, top_digest) = self.fetch_manifest(reference).await?;
        let mut raw = vec![(top_digest.clone(), top_bytes.clone())];
        let index = match parse_manifest(&image, &top_bytes)? {
            OciManifest::Image(manifest) => {
                return Ok(Resolved { manifest_digest: top_digest.clone(), top_digest, manifest, raw })
            }
            OciManifest::ImageIndex(index) => index,
        };
        let Some(digest) = current_platform_resolver(&index.manifests) else {
            return Err(ImageError::NoMatchingPlatform {
                image,
                platform: format!("{}/{}", oci_spec::image::Os::default(), oci_spec::image::Arch::default()),
                available: index
                    .manifests
                    .iter()
                    .map(|m| {
                        m.platform
                            .as_ref()
                            .map_or_else(|| "unknown".to_owned(), |p| format!("{}/{}", p.os, p.architecture))
                    })
                    .collect(),
            });
        };
        tracing::debug!(image = %image, %digest, "chose this platform's manifest from the index");
        let (bytes, manifest_digest) = self.fetch_manifest(&reference.clone_with_digest(digest)).await?;
        raw.push((manifest_digest.clone(), bytes.clone()));
        match parse_manifest(&image, &bytes)? {
            OciManifest::Image(manifest) => Ok(Resolved { top_digest, manifest_digest, manifest, raw }),
            OciManifest::ImageIndex(_) => {
                Err(ImageError::Unsupported { image, detail: "an image index whose entry is another index".to_owned() })
            }
        }
    }

    async fn fetch_manifest(&self, reference: &Reference) -> Result<(Bytes, String), ImageError> {
        self.client
            .pull_manifest_raw(reference, &RegistryAuth::Anonymous, MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| ImageError::from_registry(&reference.whole(), reference.resolve_registry(), e))
    }

    /// Downloads the blob `desc` describes to `out` (a new file). The file is complete
    /// and matches the descriptor's digest and size when this returns `Ok`.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        what: &str,
        desc: &OciDescriptor,
        out: &Path,
    ) -> Result<(), ImageError> {
        let image = reference.whole();
        let registry = reference.resolve_registry();
        let expected_size = u64::try_from(desc.size).map_err(|_| ImageError::Registry {
            image: image.clone(),
            detail: format!("{what} {} has a negative size", desc.digest),
        })?;
        let mut stream = self
            .client
            .pull_blob_stream(reference, desc)
            .await
            .map_err(|e| ImageError::from_registry(&image, registry, e))?;
        let mut file = tokio::fs::File::create(out)
            .await
            .map_err(ImageError::io(format!("creating {what} for {image:?} at"), out))?;
        let mut size: u64 = 0;
        // The stream verifies the digest when it ends, and fails instead of ending if the
        // content does not match.
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| stream_error(&image, registry, what, &e))?;
            size += chunk.len() as u64;
            if size > expected_size {
                return Err(ImageError::DigestMismatch {
                    image,
                    what: format!("the size of {what} {}", desc.digest),
                    expected: format!("{expected_size} bytes"),
                    actual: format!("more than {expected_size} bytes"),
                });
            }
            file.write_all(&chunk).await.map_err(ImageError::io(format!("writing {what} for {image:?} to"), out))?;
        }
        if size != expected_size {
            return Err(ImageError::DigestMismatch {
                image,
                what: format!("the size of {what} {}", desc.digest),
                expected: format!("{expected_size} bytes"),
                actual: format!("{size} bytes"),
            });
        }
        file.sync_all().await.map_err(ImageError::io(format!("syncing {what} for {image:?} at"), out))?;
        Ok(())
    }
}

fn stream_error(image: &str, registry: &str, what: &str, err: &std::io::Error) -> ImageError {
    if let Some(DigestError::VerificationError { expected, actual }) =
        err.get_ref().and_then(|inner| inner.downcast_ref::<DigestError>())
    {
        return ImageError::DigestMismatch {
            image: image.to_owned(),
            what: what.to_owned(),
            expected: expected.clone(),
            actual: actual.clone(),
        };
    }
    ImageError::Registry {
        image: image.to_owned(),
        detail: format!("downloading {what} from {registry}: {}", chain(err)),
    }
}

fn parse_manifest(image: &str, bytes: &[u8]) -> Result<OciManifest, ImageError> {
    let unsupported = |detail: String| ImageError::Unsupported { image: image.to_owned(), detail };
    let versioned: Versioned =
        serde_json::from_slice(bytes).map_err(|e| unsupported(format!("unreadable manifest: {e}")))?;
    if versioned.schema_version != 2 {
        return Err(unsupported(format!(
            "manifest schema version {} (only version 2 is supported)",
            versioned.schema_version
        )));
    }
    if let Some(media_type) = versioned.media_type.as_deref() {
        if !MANIFEST_MEDIA_TYPES.contains(&media_type) {
            return Err(unsupported(format!("manifest media type {media_type}")));
        }
    }
    serde_json::from_slice(bytes).map_err(|e| unsupported(format!("unreadable manifest: {e}")))
}
