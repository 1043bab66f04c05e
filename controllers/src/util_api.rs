//! Small helpers for talking to the API server: classifying its errors, timestamps.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The HTTP status of an API error (`None` for transport and decoding errors).
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// 404: the object (or the namespace, or the resource) is not there.
pub fn is_not_found(err: &kube::Error) -> bool {
    status_code(err) == Some(404)
}

/// 409: a precondition (resourceVersion) failed, or the name is taken.
pub fn is_conflict(err: &kube::Error) -> bool {
    status_code(err) == Some(409)
}

/// 405: the resource does not support the verb.
pub fn is_method_not_supported(err: &kube::Error) -> bool {
    status_code(err) == Some(405)
}

/// Whether the error carries a `details.causes[].reason` of `reason` (e.g. `NamespaceTerminating`).
pub fn has_cause(err: &kube::Error, reason: &str) -> bool {
    match err {
        kube::Error::Api(status) => {
            status.details.as_ref().is_some_and(|d| d.causes.iter().any(|c| c.reason == reason))
        }
        _ => false,
    }
}

/// A create refused because the namespace is being deleted (`NamespaceLifecycle` admission):
/// 403 with cause `NamespaceTerminating`, or with that message if the server sent no causes.
pub fn is_namespace_terminating(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => {
            status.code == 403
                && (has_cause(err, "NamespaceTerminating") || status.message.contains("being terminated"))
        }
        _ => false,
    }
}

/// Now, as a `meta/v1` time.
pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// A retry delay of `base` plus up to 50% jitter, so retries of many objects spread out.
pub fn jittered(base: std::time::Duration) -> std::time::Duration {
    use rand::Rng;
    let extra = rand::thread_rng().gen_range(0..=base.as_millis().max(1) as u64 / 2);
    base + std::time::Duration::from_millis(extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::{Status, StatusCause, StatusDetails};

    fn api_err(code: u16, message: &str, causes: &[&str]) -> kube::Error {
        let mut s = Status::failure(message, "Forbidden").with_code(code);
        if !causes.is_empty() {
            s = s.with_details(StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: causes
                    .iter()
                    .map(|r| StatusCause { reason: r.to_string(), message: String::new(), field: String::new() })
                    .collect(),
                retry_after_seconds: 0,
            });
        }
        kube::Error::Api(s.boxed())
    }

    #[test]
    fn classifies_status_codes() {
        assert!(is_not_found(&api_err(404, "", &[])));
        assert!(is_conflict(&api_err(409, "", &[])));
        assert!(is_method_not_supported(&api_err(405, "", &[])));
        assert!(!is_not_found(&api_err(409, "", &[])));
    }

    #[test]
    fn namespace_terminating_by_cause_or_message() {
        assert!(is_namespace_terminating(&api_err(403, "x", &["NamespaceTerminating"])));
        assert!(is_namespace_terminating(&api_err(
            403,
            "unable to create new content in namespace a because it is being terminated",
            &[]
        )));
        assert!(!is_namespace_terminating(&api_err(403, "forbidden", &[])));
        assert!(!is_namespace_terminating(&api_err(409, "being terminated", &[])));
    }

    #[test]
    fn jitter_stays_within_half() {
        let base = std::time::Duration::from_millis(1000);
        for _ in 0..50 {
            let d = jittered(base);
            assert!(d >= base && d <= base * 3 / 2);
        }
    }
}
