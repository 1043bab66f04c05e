//! What can go wrong getting an image, in terms a pod's owner can act on.

use std::path::PathBuf;

use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};

use super::unpack::UnpackError;

/// Why an image could not be made available on the node.
///
/// Every message names the image; [`ImageError::reason`] gives the container's waiting
/// reason the kubelet reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image name does not parse (`InvalidImageName`).
    #[error("invalid image name {image:?}: {detail}")]
    InvalidReference {
        /// The name as given.
        image: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The registry answered but has no such repository, tag or digest.
    #[error("image {image:?} not found: {detail}")]
    NotFound {
        /// The normalized reference.
        image: String,
        /// The registry's answer.
        detail: String,
    },
    /// The registry could not be reached (refused, timed out, TLS failed).
    #[error(
        "cannot reach registry {registry} to pull {image:?}: {detail} (is the registry up? \
         a registry serving plain HTTP must be listed as insecure)"
    )]
    Unreachable {
        /// The normalized reference.
        image: String,
        /// `host[:port]` of the registry.
        registry: String,
        /// The connection error.
        detail: String,
    },
    /// The registry wants credentials; only anonymous pulls are supported.
    #[error(
        "registry {registry} refused an anonymous pull of {image:?}: {detail} \
         (pulling private images is not supported yet)"
    )]
    Unauthorized {
        /// The normalized reference.
        image: String,
        /// `host[:port]` of the registry.
        registry: String,
        /// The registry's answer.
        detail: String,
    },
    /// Any other failure talking to the registry.
    #[error("pulling {image:?} failed: {detail}")]
    Registry {
        /// The normalized reference.
        image: String,
        /// What failed.
        detail: String,
    },
    /// The image is not on the node and the pull policy is `Never` (`ErrImageNeverPull`).
    #[error(
        "image {image:?} is not present on the node and the container's imagePullPolicy is \
         Never"
    )]
    NotPresent {
        /// The normalized reference.
        image: String,
    },
    /// A multi-platform image has no variant for this node.
    #[error("image {image:?} has no variant for {platform} (it has: {})", available.join(", "))]
    NoMatchingPlatform {
        /// The normalized reference.
        image: String,
        /// This node's `os/arch`.
        platform: String,
        /// The `os/arch` of every variant the index lists.
        available: Vec<String>,
    },
    /// The image uses a format this node does not handle (e.g. zstd layers).
    #[error("image {image:?} is not supported: {detail}")]
    Unsupported {
        /// The normalized reference.
        image: String,
        /// What is unsupported.
        detail: String,
    },
    /// Content did not match its digest (or size).
    #[error("image {image:?}: {what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The normalized reference.
        image: String,
        /// Which content.
        what: String,
        /// The digest (or size) the manifest or config promised.
        expected: String,
        /// What the content hashed to.
        actual: String,
    },
    /// A layer could not be applied to the root filesystem.
    #[error("image {image:?}: cannot unpack layer {layer}: {source}")]
    Unpack {
        /// The normalized reference.
        image: String,
        /// The layer's digest.
        layer: String,
        /// What went wrong.
        #[source]
        source: UnpackError,
    },
    /// The node's image store could not be read or written.
    #[error("image store: {what} {}: {source}", path.display())]
    Io {
        /// What was being done (names the image when there is one).
        what: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The registry client could not be set up.
    #[error("cannot set up the registry client: {detail}")]
    Client {
        /// What failed.
        detail: String,
    },
}

impl ImageError {
    /// The container waiting reason the kubelet reports for this error.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::InvalidReference { .. } => "InvalidImageName",
            ImageError::NotPresent { .. } => "ErrImageNeverPull",
            _ => "ErrImagePull",
        }
    }

    pub(crate) fn io(what: impl Into<String>, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ImageError {
        let (what, path) = (what.into(), path.into());
        move |source| ImageError::Io { what, path, source }
    }

    /// Classifies an error from the registry client.
    pub(crate) fn from_registry(image: &str, registry: &str, err: OciDistributionError) -> ImageError {
        let image = image.to_owned();
        let registry = registry.to_owned();
        match err {
            OciDistributionError::RegistryError { envelope, .. } => {
                let detail = envelope
                    .errors
                    .iter()
                    .map(|e| if e.message.is_empty() { format!("{:?}", e.code) } else { e.message.clone() })
                    .collect::<Vec<_>>()
                    .join("; ");
                let code = |wanted: &[OciErrorCode]| envelope.errors.iter().any(|e| wanted.contains(&e.code));
                if code(&[
                    OciErrorCode::ManifestUnknown,
                    OciErrorCode::NameUnknown,
                    OciErrorCode::NotFound,
                    OciErrorCode::BlobUnknown,
                ]) {
                    ImageError::NotFound { image, detail: format!("registry {registry} says: {detail}") }
                } else if code(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]) {
                    ImageError::Unauthorized { image, registry, detail }
                } else {
                    ImageError::Registry { image, detail: format!("registry {registry} says: {detail}") }
                }
            }
            OciDistributionError::ServerError { code: 404, message, .. } => ImageError::NotFound {
                image,
                detail: format!("registry {registry} answered 404 Not Found: {}", message.trim()),
            },
            OciDistributionError::ServerError { code: code @ (401 | 403), message, .. } => {
                ImageError::Unauthorized { image, registry, detail: format!("HTTP {code}: {}", message.trim()) }
            }
            OciDistributionError::UnauthorizedError { .. } | OciDistributionError::AuthenticationFailure(_) => {
                ImageError::Unauthorized { image, registry, detail: err.to_string() }
            }
            OciDistributionError::RequestError(ref e) if e.is_connect() || e.is_timeout() => {
                ImageError::Unreachable { image, registry, detail: chain(&err) }
            }
            OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
                ImageError::DigestMismatch { image, what: "content from the registry".to_owned(), expected, actual }
            }
            OciDistributionError::UnsupportedMediaTypeError(media_type)
            | OciDistributionError::IncompatibleLayerMediaTypeError(media_type) => {
                ImageError::Unsupported { image, detail: format!("media type {media_type}") }
            }
            OciDistributionError::UnsupportedSchemaVersionError(version) => ImageError::Unsupported {
                image,
                detail: format!("manifest schema version {version} (only version 2 is supported)"),
            },
            other => ImageError::Registry { image, detail: chain(&other) },
        }
    }
}

/// An error and its sources, `: `-separated, skipping sources already in the message.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError};

    fn envelope(code: OciErrorCode, message: &str) -> OciDistributionError {
        OciDistributionError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![OciError { code, message: message.to_owned(), detail: serde_json::Value::Null }],
            },
            url: "http://127.0.0.1:5000/v2/x/manifests/latest".to_owned(),
        }
    }

    #[test]
    fn reasons_match_the_kubelet() {
        let image = "127.0.0.1:5000/x:latest".to_owned();
        let cases = [
            (
                ImageError::InvalidReference {
                    image: "Bad".to_owned(),
                    detail: "repository name must be lowercase".to_owned(),
                },
                "InvalidImageName",
            ),
            (ImageError::NotPresent { image: image.clone() }, "ErrImageNeverPull"),
            (ImageError::NotFound { image: image.clone(), detail: "manifest unknown".to_owned() }, "ErrImagePull"),
            (
                ImageError::Unreachable {
                    image: image.clone(),
                    registry: "127.0.0.1:5000".to_owned(),
                    detail: "connection refused".to_owned(),
                },
                "ErrImagePull",
            ),
            (ImageError::Unsupported { image: image.clone(), detail: "zstd".to_owned() }, "ErrImagePull"),
        ];
        for (err, reason) in cases {
            assert_eq!(err.reason(), reason, "{err}");
            let named = match &err {
                ImageError::InvalidReference { image, .. }
                | ImageError::NotPresent { image }
                | ImageError::NotFound { image, .. }
                | ImageError::Unreachable { image, .. }
                | ImageError::Unsupported { image, .. } => image,
                other => panic!("unexpected case {other:?}"),
            };
            assert!(err.to_string().contains(&format!("{named:?}")), "{err}");
        }
    }

    #[test]
    fn registry_errors_are_classified() {
        let image = "127.0.0.1:5000/x:latest";
        let reg = "127.0.0.1:5000";
        let not_found =
            ImageError::from_registry(image, reg, envelope(OciErrorCode::ManifestUnknown, "manifest unknown"));
        assert!(matches!(not_found, ImageError::NotFound { .. }), "{not_found:?}");
        assert!(not_found.to_string().contains("manifest unknown"), "{not_found}");
        assert!(not_found.to_string().contains(image), "{not_found}");
        let repo_unknown = ImageError::from_registry(image, reg, envelope(OciErrorCode::NameUnknown, ""));
        assert!(matches!(repo_unknown, ImageError::NotFound { .. }), "{repo_unknown:?}");
        let denied = ImageError::from_registry(image, reg, envelope(OciErrorCode::Denied, "denied"));
        assert!(matches!(denied, ImageError::Unauthorized { .. }), "{denied:?}");
        let plain_404 = ImageError::from_registry(
            image,
            reg,
            OciDistributionError::ServerError {
                code: 404,
                url: String::new(),
                message: "404 page not found\n".to_owned(),
            },
        );
        assert!(matches!(plain_404, ImageError::NotFound { .. }), "{plain_404:?}");
        let digest = ImageError::from_registry(
            image,
            reg,
            OciDistributionError::DigestError(DigestError::VerificationError {
                expected: "sha256:aa".to_owned(),
                actual: "sha256:bb".to_owned(),
            }),
        );
        assert!(matches!(digest, ImageError::DigestMismatch { .. }), "{digest:?}");
        let server = ImageError::from_registry(
            image,
            reg,
            OciDistributionError::ServerError { code: 500, url: String::new(), message: "boom".to_owned() },
        );
        assert!(matches!(server, ImageError::Registry { .. }), "{server:?}");
        assert_eq!(server.reason(), "ErrImagePull");
    }
}
