//! Kubernetes CustomResourceDefinition structural-schema handling for custom
//! resource objects: structural checks of a CRD schema, defaulting, pruning and
//! validation of objects.
//!
//! The semantics follow k8s.io/apiextensions-apiserver (`pkg/apiserver/schema`
//! with its `pruning`, `defaulting` and `listtype` packages, and
//! `pkg/apis/apiextensions/validation`) and the kube-openapi `validate` package
//! as the apiserver wires it up (formats stripped to the supported set, errors
//! converted to field errors). Error wording follows those packages, including
//! `apimachinery/pkg/util/validation/field` value rendering (Go `%q`, `%v`,
//! `%#v`).
//!
//! All traversals are bounded: schemas and objects nested deeper than
//! [`MAX_DEPTH`] levels are refused (or left untouched where no error can be
//! returned), and values that are removed are dropped iteratively.

mod defaults;
mod formats;
mod list_type;
mod number;
mod prune;
mod render;
mod sch;
mod structural;
mod validate;
mod values;

pub use defaults::apply_defaults;
pub use prune::prune;
pub use structural::check_structural;
pub use validate::validate;

use render::go_quote;

/// Maximum nesting depth of schemas and objects that is processed.
pub const MAX_DEPTH: usize = 64;

const PRESERVE: &str = "x-kubernetes-preserve-unknown-fields";
const EMBEDDED: &str = "x-kubernetes-embedded-resource";
const INT_OR_STRING: &str = "x-kubernetes-int-or-string";
const LIST_TYPE: &str = "x-kubernetes-list-type";
const LIST_MAP_KEYS: &str = "x-kubernetes-list-map-keys";
const MAP_TYPE: &str = "x-kubernetes-map-type";
const VALIDATIONS: &str = "x-kubernetes-validations";

/// A validation failure, reported as Kubernetes reports field errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The metav1.CauseType, e.g. "FieldValueRequired", "FieldValueInvalid",
    /// "FieldValueNotSupported", "FieldValueTypeInvalid", "FieldValueTooLong",
    /// "FieldValueTooMany", "FieldValueDuplicate", "FieldValueForbidden".
    pub reason: &'static str,
    /// The field path, e.g. "spec.replicas" or "spec.ports[0].name"
    /// ("<nil>" for errors Kubernetes reports without a path).
    pub field: String,
    /// The error body as Kubernetes prints it after "<field>: ".
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

// ---------------------------------------------------------------------------
// Field errors
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrType {
    Required,
    Invalid,
    TypeInvalid,
    NotSupported,
    Forbidden,
    TooLong,
    TooMany,
    Duplicate,
}

impl ErrType {
    fn reason(self) -> &'static str {
        match self {
            ErrType::Required => "FieldValueRequired",
            ErrType::Invalid => "FieldValueInvalid",
            ErrType::TypeInvalid => "FieldValueTypeInvalid",
            ErrType::NotSupported => "FieldValueNotSupported",
            ErrType::Forbidden => "FieldValueForbidden",
            ErrType::TooLong => "FieldValueTooLong",
            ErrType::TooMany => "FieldValueTooMany",
            ErrType::Duplicate => "FieldValueDuplicate",
        }
    }

    fn text(self) -> &'static str {
        match self {
            ErrType::Required => "Required value",
            ErrType::Invalid | ErrType::TypeInvalid => "Invalid value",
            ErrType::NotSupported => "Unsupported value",
            ErrType::Forbidden => "Forbidden",
            ErrType::TooLong => "Too long",
            ErrType::TooMany => "Too many",
            ErrType::Duplicate => "Duplicate value",
        }
    }

    /// Whether the bad value is printed (field.Error.ErrorBody).
    fn shows_value(self) -> bool {
        !matches!(self, ErrType::Required | ErrType::Forbidden | ErrType::TooLong)
    }
}

/// Builds a field error; `bad` is the already rendered bad value.
fn mk(t: ErrType, field: &str, bad: &str, detail: &str) -> FieldError {
    let mut message = t.text().to_string();
    if t.shows_value() {
        message.push_str(": ");
        message.push_str(bad);
    }
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(detail);
    }
    FieldError { reason: t.reason(), field: field.to_string(), message }
}

fn e_required(field: &str, detail: &str) -> FieldError {
    mk(ErrType::Required, field, "", detail)
}

fn e_forbidden(field: &str, detail: &str) -> FieldError {
    mk(ErrType::Forbidden, field, "", detail)
}

fn e_invalid(field: &str, bad: &str, detail: &str) -> FieldError {
    mk(ErrType::Invalid, field, bad, detail)
}

fn e_not_supported<S: AsRef<str>>(field: &str, bad: &str, valid: &[S]) -> FieldError {
    let detail = if valid.is_empty() {
        String::new()
    } else {
        let quoted: Vec<String> = valid.iter().map(|v| go_quote(v.as_ref())).collect();
        format!("supported values: {}", quoted.join(", "))
    };
    mk(ErrType::NotSupported, field, bad, &detail)
}

// ---------------------------------------------------------------------------
// Field paths
// ---------------------------------------------------------------------------

fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn is_meta_field(k: &str) -> bool {
    matches!(k, "apiVersion" | "kind" | "metadata")
}

#[cfg(test)]
mod tests;
