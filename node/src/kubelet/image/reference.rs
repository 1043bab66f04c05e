//! Image names: normalization the way Docker and the kubelet read them, and pull policy
//! defaulting.

use oci_client::Reference;

use super::ImageError;

/// When the kubelet pulls a container's image (`imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Resolve the tag against the registry on every start; layers already here are reused.
    Always,
    /// Pull only if the image is not on the node.
    IfNotPresent,
    /// Never pull; fail with `ErrImageNeverPull` if the image is not on the node.
    Never,
}

impl PullPolicy {
    /// The policy for a container: `policy` as written in the pod spec, defaulted the way
    /// the API server does when absent — `Always` for a `:latest` tag or an image with
    /// neither tag nor digest, `IfNotPresent` otherwise.
    ///
    /// An unknown value (the API server would have rejected it) gets the default too.
    #[must_use]
    pub fn from_spec(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            other => {
                if let Some(other) = other.filter(|p| !p.is_empty()) {
                    tracing::warn!(policy = other, image, "unknown imagePullPolicy; using the default");
                }
                // Like the API server's defaulting (which also ignores parse errors): a
                // reference without tag or digest parses with the tag "latest".
                match Reference::try_from(image) {
                    Ok(reference) if reference.tag() == Some("latest") => PullPolicy::Always,
                    _ => PullPolicy::IfNotPresent,
                }
            }
        }
    }
}

/// Parses an image name as Docker does: `busybox` is `docker.io/library/busybox:latest`,
/// `127.0.0.1:5000/busybox` is `127.0.0.1:5000/busybox:latest`.
pub(crate) fn parse(image: &str) -> Result<Reference, ImageError> {
    Reference::try_from(image)
        .map_err(|e| ImageError::InvalidReference { image: image.to_owned(), detail: e.to_string() })
}

/// The fully qualified form of an image name (see [`parse`]), as the kubelet reports it.
///
/// # Errors
/// [`ImageError::InvalidReference`] if `image` is not a valid image name.
pub fn normalize(image: &str) -> Result<String, ImageError> {
    parse(image).map(|r| r.whole())
}

/// A file name for a reference: bytes outside `[A-Za-z0-9._-]` percent-encoded, so
/// distinct references never collide; a hash if that would be too long for a file name.
pub(crate) fn escape(reference: &str) -> String {
    use std::fmt::Write as _;
    const MAX: usize = 200;
    let mut out = String::with_capacity(reference.len() * 3 / 2);
    for byte in reference.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    if out.len() > MAX || out.starts_with('.') {
        use sha2::Digest as _;
        return format!("sha256-{}", hex::encode(sha2::Sha256::digest(reference.as_bytes())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_like_the_api_server() {
        use PullPolicy::{Always, IfNotPresent, Never};
        let cases = [
            (None, "busybox", Always),
            (None, "busybox:latest", Always),
            (None, "127.0.0.1:5000/busybox", Always),
            (None, "127.0.0.1:5000/busybox:latest", Always),
            (None, "busybox:1.36", IfNotPresent),
            (None, "127.0.0.1:5000/busybox:1.36", IfNotPresent),
            (None, &format!("busybox@sha256:{}", "a".repeat(64)), IfNotPresent),
            (None, &format!("busybox:latest@sha256:{}", "a".repeat(64)), Always),
            (None, "Not A Valid Name", IfNotPresent),
            (Some(""), "busybox", Always),
            (Some("Bogus"), "busybox:1.36", IfNotPresent),
            (Some("Always"), "busybox:1.36", Always),
            (Some("IfNotPresent"), "busybox", IfNotPresent),
            (Some("Never"), "busybox:latest", Never),
        ];
        for (policy, image, want) in cases {
            assert_eq!(PullPolicy::from_spec(policy, image), want, "{policy:?} {image}");
        }
    }

    #[test]
    fn references_normalize_like_docker() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let cases = [
            ("busybox", "docker.io/library/busybox:latest".to_owned()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".to_owned()),
            ("library/busybox", "docker.io/library/busybox:latest".to_owned()),
            ("docker.io/busybox", "docker.io/library/busybox:latest".to_owned()),
            ("someone/app:v1", "docker.io/someone/app:v1".to_owned()),
            ("quay.io/org/app", "quay.io/org/app:latest".to_owned()),
            ("localhost/app", "localhost/app:latest".to_owned()),
            ("127.0.0.1:5000/busybox", "127.0.0.1:5000/busybox:latest".to_owned()),
            ("127.0.0.1:5000/a/b:tag", "127.0.0.1:5000/a/b:tag".to_owned()),
            (&format!("busybox@{digest}"), format!("docker.io/library/busybox@{digest}")),
            (&format!("r.io/x:t@{digest}"), format!("r.io/x:t@{digest}")),
        ];
        for (image, want) in cases {
            assert_eq!(normalize(image).expect(image), want, "{image}");
        }
        for bad in ["", "Busybox", "busybox:", "bad name", "busybox@sha256:abc", "a//b", ":tag"] {
            let err = normalize(bad).expect_err(bad);
            assert!(matches!(err, ImageError::InvalidReference { .. }), "{bad}: {err:?}");
            assert_eq!(err.reason(), "InvalidImageName");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn escaped_references_are_distinct_file_names() {
        let a = escape("127.0.0.1:5000/busybox:latest");
        assert_eq!(a, "127.0.0.1%3A5000%2Fbusybox%3Alatest");
        assert_ne!(escape("a/b:c"), escape("a:b/c"));
        let long = format!("r.io/{}:t", "x".repeat(250));
        let escaped = escape(&long);
        assert!(escaped.starts_with("sha256-") && escaped.len() < 100, "{escaped}");
        assert!(!escaped.contains('/'));
    }
}
