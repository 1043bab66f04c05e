//! From cumulative CPU counters to usage rates, as metrics-server does: a point is the
//! counter's growth between the last two scrapes over their time apart (the window), with
//! the latest memory working set. A counter that went backwards, a container that
//! restarted (new start time) or a repeated timestamp gives no rate until the next scrape.
//! Everything an endpoint no longer reports is dropped when that endpoint is scraped.

use std::collections::{BTreeMap, HashMap};

use super::parse::Sample;

/// A usage point ready to serve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub nanocores: u64,
    pub memory_bytes: u64,
    /// The later scrape's sample time (ms since the epoch).
    pub timestamp_ms: i64,
    pub window_ms: i64,
}

/// One raw reading of a counter and a gauge.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    memory_bytes: f64,
    timestamp_ms: i64,
    /// A container's start time (seconds), to notice restarts.
    start: Option<f64>,
}

#[derive(Debug, Clone)]
struct Series {
    endpoint: String,
    last: Reading,
    usage: Option<Usage>,
}

/// A container of a pod: (namespace, pod, container).
pub type ContainerKey = (String, String, String);

/// The latest usage of every node and container seen.
#[derive(Debug, Default)]
pub struct Rates {
    nodes: HashMap<String, Series>,
    /// (namespace, pod) → container → series.
    pods: HashMap<(String, String), BTreeMap<String, Series>>,
}

/// What one scrape of one endpoint read, keyed for [`Rates::update`].
#[derive(Debug, Default)]
pub struct Scrape {
    nodes: HashMap<String, Reading>,
    containers: HashMap<ContainerKey, Reading>,
}

impl Scrape {
    /// Group samples by node and container. Node series without a `node` label belong to
    /// `default_node` (a real kubelet serves only its own node); pod-level series are not
    /// needed (pods are the sum of their containers). A sample without a timestamp takes
    /// `now_ms`.
    pub fn from_samples(samples: &[Sample], default_node: Option<&str>, now_ms: i64) -> Scrape {
        let mut s = Scrape::default();
        for x in samples {
            let ts = x.timestamp_ms.unwrap_or(now_ms);
            if !x.value.is_finite() || x.value < 0.0 {
                continue;
            }
            let reading = |r: &mut Reading| {
                r.timestamp_ms = r.timestamp_ms.max(ts);
            };
            match x.name.as_str() {
                "node_cpu_usage_seconds_total" | "node_memory_working_set_bytes" => {
                    let Some(node) = x.label("node").or(default_node) else { continue };
                    let r = s.nodes.entry(node.to_string()).or_insert_with(Reading::empty);
                    reading(r);
                    if x.name.starts_with("node_cpu") {
                        r.cpu_seconds = x.value;
                    } else {
                        r.memory_bytes = x.value;
                    }
                }
                "container_cpu_usage_seconds_total"
                | "container_memory_working_set_bytes"
                | "container_start_time_seconds" => {
                    let (Some(ns), Some(pod), Some(c)) = (x.label("namespace"), x.label("pod"), x.label("container"))
                    else {
                        continue;
                    };
                    let r = s.containers.entry((ns.into(), pod.into(), c.into())).or_insert_with(Reading::empty);
                    match x.name.as_str() {
                        "container_cpu_usage_seconds_total" => {
                            reading(r);
                            r.cpu_seconds = x.value;
                        }
                        "container_memory_working_set_bytes" => {
                            reading(r);
                            r.memory_bytes = x.value;
                        }
                        _ => r.start = Some(x.value),
                    }
                }
                _ => {}
            }
        }
        // A container needs its CPU counter (a timestamp); memory alone is not a point.
        s.containers.retain(|_, r| r.timestamp_ms > i64::MIN && !r.cpu_seconds.is_nan());
        s.nodes.retain(|_, r| r.timestamp_ms > i64::MIN && !r.cpu_seconds.is_nan());
        s
    }
}

impl Reading {
    fn empty() -> Reading {
        Reading { cpu_seconds: f64::NAN, memory_bytes: 0.0, timestamp_ms: i64::MIN, start: None }
    }
}

fn advance(old: Option<&Series>, endpoint: &str, new: Reading) -> Series {
    let usage = match old {
        Some(o) if o.last.timestamp_ms == new.timestamp_ms => o.usage,
        Some(o)
            if o.last.timestamp_ms < new.timestamp_ms
                && o.last.cpu_seconds <= new.cpu_seconds
                && o.last.start == new.start =>
        {
            let window_ms = new.timestamp_ms - o.last.timestamp_ms;
            let nanos = (new.cpu_seconds - o.last.cpu_seconds) * 1e9 / (window_ms as f64 / 1000.0);
            Some(Usage {
                nanocores: nanos.round() as u64,
                memory_bytes: new.memory_bytes.round() as u64,
                timestamp_ms: new.timestamp_ms,
                window_ms,
            })
        }
        _ => None,
    };
    let last = match old {
        Some(o) if o.last.timestamp_ms == new.timestamp_ms => o.last,
        _ => new,
    };
    Series { endpoint: endpoint.to_string(), last, usage }
}

impl Rates {
    /// Take in one endpoint's scrape: new readings advance their series; series this
    /// endpoint reported before and no longer does are dropped.
    pub fn update(&mut self, endpoint: &str, scrape: Scrape) {
        self.nodes.retain(|k, s| s.endpoint != endpoint || scrape.nodes.contains_key(k));
        for ((ns, pod), containers) in self.pods.iter_mut() {
            containers.retain(|c, s| {
                s.endpoint != endpoint || scrape.containers.contains_key(&(ns.clone(), pod.clone(), c.clone()))
            });
        }
        self.pods.retain(|_, c| !c.is_empty());
        for (k, r) in scrape.nodes {
            let s = advance(self.nodes.get(&k), endpoint, r);
            self.nodes.insert(k, s);
        }
        for ((ns, pod, c), r) in scrape.containers {
            let containers = self.pods.entry((ns, pod)).or_default();
            let s = advance(containers.get(&c), endpoint, r);
            containers.insert(c, s);
        }
    }

    /// Forget endpoints no node has any more, and usage older than `oldest_ms`.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool, oldest_ms: i64) {
        let keep = |s: &mut Series| live(&s.endpoint) && s.last.timestamp_ms >= oldest_ms;
        self.nodes.retain(|_, s| keep(s));
        for c in self.pods.values_mut() {
            c.retain(|_, s| keep(s));
        }
        self.pods.retain(|_, c| !c.is_empty());
    }

    pub fn node(&self, name: &str) -> Option<Usage> {
        self.nodes.get(name)?.usage
    }

    /// A pod's containers and their usage, sorted by name; `None` unless every container
    /// reported has a usage point.
    pub fn pod(&self, namespace: &str, pod: &str) -> Option<Vec<(String, Usage)>> {
        let containers = self.pods.get(&(namespace.to_string(), pod.to_string()))?;
        let out = containers.iter().map(|(c, s)| Some((c.clone(), s.usage?))).collect::<Option<Vec<_>>>()?;
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::parse;
    use super::*;

    fn scrape(text: &str, node: Option<&str>) -> Scrape {
        Scrape::from_samples(&parse(text, |_| true).0, node, 0)
    }

    #[test]
    fn two_scrapes_give_a_rate_and_a_window() {
        let mut r = Rates::default();
        r.update("e", scrape("node_cpu_usage_seconds_total 10 1000\nnode_memory_working_set_bytes 5 1000\ncontainer_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\",container=\"c\"} 1 1000\n", Some("n1")));
        assert_eq!(r.node("n1"), None, "one reading is not a rate");
        assert_eq!(r.pod("n", "p"), None);
        r.update("e", scrape("node_cpu_usage_seconds_total 12 3000\nnode_memory_working_set_bytes 7 3000\ncontainer_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\",container=\"c\"} 1.5 3000\ncontainer_memory_working_set_bytes{namespace=\"n\",pod=\"p\",container=\"c\"} 1024 3000\n", Some("n1")));
        assert_eq!(
            r.node("n1"),
            Some(Usage { nanocores: 1_000_000_000, memory_bytes: 7, timestamp_ms: 3000, window_ms: 2000 })
        );
        let p = r.pod("n", "p").unwrap();
        assert_eq!(p[0].0, "c");
        assert_eq!(p[0].1.nanocores, 250_000_000);
        assert_eq!(p[0].1.memory_bytes, 1024);
        // The same timestamp again keeps the point; an older/equal one is no new reading.
        r.update("e", scrape("node_cpu_usage_seconds_total 12 3000\ncontainer_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\",container=\"c\"} 1.5 3000\n", Some("n1")));
        assert_eq!(r.node("n1").unwrap().window_ms, 2000);
    }

    #[test]
    fn resets_and_restarts_give_no_rate_and_gone_series_are_dropped() {
        let mut r = Rates::default();
        let c = |v: f64, ts: i64, start: f64| {
            format!("container_cpu_usage_seconds_total{{namespace=\"n\",pod=\"p\",container=\"c\"}} {v} {ts}\ncontainer_start_time_seconds{{namespace=\"n\",pod=\"p\",container=\"c\"}} {start} {ts}\n")
        };
        r.update("e", scrape(&c(5.0, 1000, 1.0), None));
        r.update("e", scrape(&c(1.0, 2000, 1.0), None));
        assert_eq!(r.pod("n", "p"), None, "a counter going backwards is a reset");
        r.update("e", scrape(&c(2.0, 3000, 9.0), None));
        assert_eq!(r.pod("n", "p"), None, "a new start time is a restart");
        r.update("e", scrape(&c(3.0, 4000, 9.0), None));
        assert_eq!(r.pod("n", "p").unwrap()[0].1.nanocores, 1_000_000_000);
        // Another endpoint's scrape does not drop it; its own empty scrape does.
        r.update("other", scrape("", None));
        assert!(r.pod("n", "p").is_some());
        r.update("e", scrape("", None));
        assert_eq!(r.pod("n", "p"), None);
    }

    #[test]
    fn node_labels_name_simulated_nodes_and_stale_endpoints_go() {
        let mut r = Rates::default();
        let t = |ts: i64, v: f64| {
            format!("node_cpu_usage_seconds_total{{node=\"a\"}} {v} {ts}\nnode_cpu_usage_seconds_total{{node=\"b\"}} {} {ts}\n", v * 2.0)
        };
        r.update("e", scrape(&t(1000, 1.0), Some("ignored")));
        r.update("e", scrape(&t(2000, 2.0), Some("ignored")));
        assert_eq!(r.node("a").unwrap().nanocores, 1_000_000_000);
        assert_eq!(r.node("b").unwrap().nanocores, 2_000_000_000);
        assert_eq!(r.node("ignored"), None);
        r.retain(|e| e == "e", 2001);
        assert_eq!(r.node("a"), None, "too old");
        r.update("e", scrape(&t(3000, 3.0), None));
        r.retain(|e| e != "e", 0);
        assert_eq!(r.node("b"), None, "endpoint gone");
    }
}
