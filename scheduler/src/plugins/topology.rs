//! Counts per topology domain (`topologyKey` → label value → count), shared by the
//! inter-pod affinity and topology spread plugins.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopologyCounts(HashMap<String, HashMap<String, i64>>);

impl TopologyCounts {
    /// Add `n` to a domain; a domain dropping to zero disappears (use [`touch`](Self::touch)
    /// to keep empty domains).
    pub fn add(&mut self, key: &str, value: &str, n: i64) {
        if n == 0 {
            return;
        }
        let values = self.0.entry(key.to_string()).or_default();
        let c = values.entry(value.to_string()).or_insert(0);
        *c += n;
        if *c == 0 {
            values.remove(value);
            if values.is_empty() {
                self.0.remove(key);
            }
        }
    }

    /// Make sure the domain exists (with count 0 if new).
    pub fn touch(&mut self, key: &str, value: &str) {
        self.0.entry(key.to_string()).or_default().entry(value.to_string()).or_insert(0);
    }

    /// Add `n` to the node's domain for `key`, if the node has that label.
    pub fn add_for_node(&mut self, key: &str, node_labels: &BTreeMap<String, String>, n: i64) {
        if let Some(v) = node_labels.get(key) {
            self.add(key, v, n);
        }
    }

    pub fn get(&self, key: &str, value: &str) -> i64 {
        self.0.get(key).and_then(|m| m.get(value)).copied().unwrap_or(0)
    }

    /// The count of the node's domain for `key` (0 if the node lacks the label).
    pub fn for_node(&self, key: &str, node_labels: &BTreeMap<String, String>) -> i64 {
        node_labels.get(key).map(|v| self.get(key, v)).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The domains of `key` and their counts.
    pub fn domains(&self, key: &str) -> Option<&HashMap<String, i64>> {
        self.0.get(key)
    }

    /// The topology keys present.
    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_drop_to_nothing() {
        let mut c = TopologyCounts::default();
        c.add("zone", "a", 2);
        assert_eq!(c.get("zone", "a"), 2);
        c.add("zone", "a", -2);
        assert!(c.is_empty());
        c.touch("zone", "b");
        assert_eq!(c.domains("zone").map(|d| d.len()), Some(1));
        let labels: BTreeMap<String, String> = [("zone".to_string(), "b".to_string())].into();
        c.add_for_node("zone", &labels, 3);
        c.add_for_node("rack", &labels, 3);
        assert_eq!(c.for_node("zone", &labels), 3);
        assert_eq!(c.for_node("rack", &labels), 0);
    }
}
