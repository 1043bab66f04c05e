//! A pod's node constraints, parsed: `spec.nodeSelector` plus
//! `affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution` (the required
//! node affinity, as component-helpers' `GetRequiredNodeAffinity`), and the preferred terms.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, PodSpec};

use crate::labels::{Op, Requirement};

/// One node selector term: label expressions and `metadata.name` field expressions, ANDed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    expressions: Vec<Requirement>,
    fields: Vec<Requirement>,
    /// A term that failed to parse, or has no requirements, matches no node.
    valid: bool,
}

impl Term {
    pub fn parse(term: &NodeSelectorTerm) -> Term {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        let parse = |r: &NodeSelectorRequirement| {
            Requirement::new(&r.key, &r.operator, r.values.as_deref().unwrap_or_default())
        };
        let expressions: Option<Vec<_>> = exprs.iter().map(parse).collect();
        // Only `metadata.name` with In/NotIn is a valid field selector.
        let fields: Option<Vec<_>> = fields
            .iter()
            .map(|r| parse(r).filter(|p| p.key == "metadata.name" && matches!(p.op, Op::In | Op::NotIn)))
            .collect();
        match (expressions, fields) {
            (Some(expressions), Some(fields)) => {
                let valid = !expressions.is_empty() || !fields.is_empty();
                Term { expressions, fields, valid }
            }
            _ => Term { expressions: vec![], fields: vec![], valid: false },
        }
    }

    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.valid
            && self.expressions.iter().all(|r| r.matches(labels))
            && self.fields.iter().all(|r| r.matches_value(Some(node_name)))
    }

    /// The node names this term can match if it pins them with `metadata.name In (...)`.
    fn pinned_names(&self) -> Option<Vec<&str>> {
        let mut names: Option<Vec<&str>> = None;
        for f in self.fields.iter().filter(|f| f.op == Op::In) {
            let these: Vec<&str> = f.values.iter().map(String::as_str).collect();
            names = Some(match names {
                None => these,
                Some(prev) => prev.into_iter().filter(|n| these.contains(n)).collect(),
            });
        }
        names
    }
}

/// `spec.nodeSelector` and the required node affinity of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredNodeAffinity {
    node_selector: BTreeMap<String, String>,
    /// `None`: no required node affinity. `Some(terms)`: at least one term must match.
    terms: Option<Vec<Term>>,
}

impl RequiredNodeAffinity {
    pub fn from_spec(spec: &PodSpec) -> RequiredNodeAffinity {
        let terms = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref())
            .map(|sel| sel.node_selector_terms.iter().map(Term::parse).collect());
        RequiredNodeAffinity { node_selector: spec.node_selector.clone().unwrap_or_default(), terms }
    }

    /// Whether there is anything to check.
    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.terms.is_none()
    }

    pub fn matches(&self, node_name: &str, labels: &BTreeMap<String, String>) -> bool {
        let selector_ok = self.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        selector_ok && self.terms.as_ref().is_none_or(|terms| terms.iter().any(|t| t.matches(node_name, labels)))
    }

    /// The only nodes that can match, when every required term pins node names with
    /// `matchFields: metadata.name In (...)` (DaemonSet pods): NodeAffinity's PreFilter result.
    pub fn pinned_node_names(&self) -> Option<Vec<String>> {
        let terms = self.terms.as_ref()?;
        let mut all: Vec<String> = Vec::new();
        for t in terms {
            for n in t.pinned_names()? {
                if !all.iter().any(|x| x == n) {
                    all.push(n.to_string());
                }
            }
        }
        Some(all)
    }
}

/// A preferred node affinity term and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredTerm {
    pub weight: i64,
    pub term: Term,
}

/// `preferredDuringSchedulingIgnoredDuringExecution` (zero-weight terms dropped).
pub fn preferred_terms(spec: &PodSpec) -> Vec<PreferredTerm> {
    spec.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| p.weight != 0)
        .map(|p| PreferredTerm { weight: i64::from(p.weight), term: Term::parse(&p.preference) })
        .collect()
}
