//! May they: the authorization seam. `system:masters` may do anything; kubelets
//! (`system:nodes`) what [`crate::authz_node`] allows. Everyone else is refused until RBAC
//! is evaluated (a later issue; the RBAC objects are stored already), except that anyone
//! authenticated may ask who they are and what they may do.

use crate::authn::UserInfo;
use crate::status::ApiError;

/// One request's attributes, as an authorizer sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// Whether `user` may do `attrs`.
pub fn allowed(user: &UserInfo, attrs: &Attributes<'_>) -> bool {
    if user.in_group("system:masters") {
        return true;
    }
    // Self-review APIs answer about the caller only.
    matches!(
        (attrs.group, attrs.resource),
        ("authentication.k8s.io", "selfsubjectreviews")
            | ("authorization.k8s.io", "selfsubjectaccessreviews")
            | ("authorization.k8s.io", "selfsubjectrulesreviews")
    )
}

/// The 403 Kubernetes returns, worded the same way.
pub fn forbidden(user: &UserInfo, attrs: &Attributes<'_>) -> ApiError {
    let resource = match attrs.subresource {
        Some(s) => format!("{}/{s}", attrs.resource),
        None => attrs.resource.to_string(),
    };
    let what = match attrs.name {
        Some(n) => format!("{} \"{n}\"", crate::status::qualified(attrs.resource, attrs.group)),
        None => crate::status::qualified(attrs.resource, attrs.group),
    };
    let scope = match attrs.namespace {
        Some(ns) => format!(" in the namespace \"{ns}\""),
        None => " at the cluster scope".to_string(),
    };
    let mut e = ApiError::forbidden(format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\"{scope}",
        user.username, attrs.verb, attrs.group
    ));
    e.details = Some(Box::new(crate::status::Details {
        name: attrs.name.map(str::to_string),
        group: Some(attrs.group.to_string()).filter(|g| !g.is_empty()),
        kind: Some(attrs.resource.to_string()),
        ..Default::default()
    }));
    e
}
