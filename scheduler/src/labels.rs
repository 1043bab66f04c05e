//! Label selectors, parsed once and matched many times: `metav1.LabelSelector` (pod
//! selectors in affinity terms and spread constraints) and node selector requirements
//! (which add `Gt` and `Lt`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// How a requirement compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One requirement on one label. `Gt`/`Lt` carry their bound in `bound`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
    pub bound: i64,
}

impl Requirement {
    /// A requirement, validated like apimachinery's `labels.NewRequirement`; `None` if invalid.
    pub fn new(key: &str, operator: &str, values: &[String]) -> Option<Requirement> {
        let op = match operator {
            "In" | "=" | "==" => Op::In,
            "NotIn" | "!=" => Op::NotIn,
            "Exists" => Op::Exists,
            "DoesNotExist" => Op::DoesNotExist,
            "Gt" => Op::Gt,
            "Lt" => Op::Lt,
            _ => return None,
        };
        let mut bound = 0;
        match op {
            Op::In | Op::NotIn if values.is_empty() => return None,
            Op::Exists | Op::DoesNotExist if !values.is_empty() => return None,
            Op::Gt | Op::Lt => {
                let [v] = values else { return None };
                bound = v.parse().ok()?;
            }
            _ => {}
        }
        Some(Requirement { key: key.to_string(), op, values: values.to_vec(), bound })
    }

    /// Whether a label value (`None` = no such label) satisfies this requirement.
    pub fn matches_value(&self, value: Option<&str>) -> bool {
        match (self.op, value) {
            (Op::In, Some(v)) => self.values.iter().any(|x| x == v),
            (Op::In, None) => false,
            (Op::NotIn, Some(v)) => !self.values.iter().any(|x| x == v),
            (Op::NotIn, None) => true,
            (Op::Exists, v) => v.is_some(),
            (Op::DoesNotExist, v) => v.is_none(),
            (Op::Gt, Some(v)) => v.parse::<i64>().is_ok_and(|n| n > self.bound),
            (Op::Lt, Some(v)) => v.parse::<i64>().is_ok_and(|n| n < self.bound),
            (Op::Gt | Op::Lt, None) => false,
        }
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_value(labels.get(&self.key).map(String::as_str))
    }
}

/// A parsed label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Matches nothing: an absent selector, or one that failed to parse.
    Nothing,
    /// Matches labels satisfying every requirement (none: everything).
    All(Vec<Requirement>),
}

impl Selector {
    /// `metav1.LabelSelectorAsSelector`: `None` selects nothing, an empty selector everything.
    pub fn from_label_selector(sel: Option<&LabelSelector>) -> Selector {
        let Some(sel) = sel else { return Selector::Nothing };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(Requirement { key: k.clone(), op: Op::In, values: vec![v.clone()], bound: 0 });
        }
        for e in sel.match_expressions.iter().flatten() {
            // Gt/Lt are not label selector operators.
            if matches!(e.operator.as_str(), "Gt" | "Lt") {
                return Selector::Nothing;
            }
            match Requirement::new(&e.key, &e.operator, e.values.as_deref().unwrap_or_default()) {
                Some(r) => reqs.push(r),
                None => return Selector::Nothing,
            }
        }
        Selector::All(reqs)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Nothing => false,
            Selector::All(reqs) => reqs.iter().all(|r| r.matches(labels)),
        }
    }

    /// Whether this selects everything (`labels.Everything()`: no requirements).
    pub fn is_empty(&self) -> bool {
        matches!(self, Selector::All(r) if r.is_empty())
    }

    /// Add `key In (value)` (spread constraints' `matchLabelKeys`).
    pub fn and_equals(&mut self, key: &str, value: &str) {
        if let Selector::All(reqs) = self {
            reqs.push(Requirement { key: key.to_string(), op: Op::In, values: vec![value.to_string()], bound: 0 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn nil_selects_nothing_and_empty_everything() {
        let l = labels(&[("app", "web")]);
        assert!(!Selector::from_label_selector(None).matches(&l));
        let empty = Selector::from_label_selector(Some(&LabelSelector::default()));
        assert!(empty.matches(&l) && empty.is_empty());
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![expr("tier", "NotIn", &["db"]), expr("env", "Exists", &[])]),
        };
        let s = Selector::from_label_selector(Some(&sel));
        assert!(s.matches(&labels(&[("app", "web"), ("env", "x")])));
        assert!(s.matches(&labels(&[("app", "web"), ("env", "x"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "x"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[("app", "web")])));
    }

    #[test]
    fn invalid_selectors_select_nothing() {
        for e in
            [expr("a", "In", &[]), expr("a", "Exists", &["x"]), expr("a", "Bogus", &["x"]), expr("a", "Gt", &["1"])]
        {
            let sel = LabelSelector { match_expressions: Some(vec![e]), ..Default::default() };
            assert_eq!(Selector::from_label_selector(Some(&sel)), Selector::Nothing);
        }
    }

    #[test]
    fn gt_lt_compare_integers() {
        let gt = Requirement::new("cores", "Gt", &["4".into()]).unwrap();
        assert!(gt.matches(&labels(&[("cores", "8")])));
        assert!(!gt.matches(&labels(&[("cores", "4")])));
        assert!(!gt.matches(&labels(&[("cores", "many")])));
        assert!(!gt.matches(&labels(&[])));
        let lt = Requirement::new("cores", "Lt", &["4".into()]).unwrap();
        assert!(lt.matches(&labels(&[("cores", "2")])));
        assert!(Requirement::new("cores", "Lt", &["x".into()]).is_none());
        assert!(Requirement::new("cores", "Lt", &["1".into(), "2".into()]).is_none());
    }
}
