//! The Prometheus text exposition format, as far as a kubelet's `/metrics/resource` needs:
//! `name{label="value",…} value [timestamp_ms]` lines; `#` lines and blank lines are
//! skipped. Malformed lines are counted and skipped, never fatal (a scrape keeps what it
//! can read, as metrics-server's decoder does).

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the Unix epoch, when the line has one.
    pub timestamp_ms: Option<i64>,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Every sample of `text` whose metric name `want` accepts, and how many lines were
/// malformed.
pub fn parse(text: &str, want: impl Fn(&str) -> bool) -> (Vec<Sample>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
        let name = &line[..name_end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            bad += 1;
            continue;
        }
        if !want(name) {
            continue;
        }
        match sample(name, &line[name_end..]) {
            Some(s) => out.push(s),
            None => bad += 1,
        }
    }
    (out, bad)
}

fn sample(name: &str, rest: &str) -> Option<Sample> {
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(r) => labels(r)?,
        None => (Vec::new(), rest),
    };
    let mut fields = rest.split_ascii_whitespace();
    let value = number(fields.next()?)?;
    let timestamp_ms = match fields.next() {
        Some(t) => Some(t.parse::<i64>().ok()?),
        None => None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some(Sample { name: name.to_string(), labels, value, timestamp_ms })
}

fn number(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// `a="x",b="y"}` → the labels and what follows the `}`.
fn labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((out, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        let body = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut chars = body.char_indices();
        let mut value = String::new();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        };
        out.push((key.to_string(), value));
        s = body[end + 1..].trim_start();
        s = s.strip_prefix(',').unwrap_or(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_resource_metrics_are_read() {
        let text = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="ns",pod="p-1"} 3.25 1764201600000
container_memory_working_set_bytes{container="app",namespace="ns",pod="p-1"} 1.34217728e+08 1764201600000
node_cpu_usage_seconds_total 12.5 1764201600123
node_memory_working_set_bytes{node="sim-0"} 1e9
scrape_error 0
"#;
        let (s, bad) = parse(text, |n| n != "scrape_error");
        assert_eq!(bad, 0);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].label("pod"), Some("p-1"));
        assert_eq!(s[0].value, 3.25);
        assert_eq!(s[0].timestamp_ms, Some(1764201600000));
        assert_eq!(s[1].value, 134217728.0);
        assert!(s[2].labels.is_empty());
        assert_eq!(s[3].label("node"), Some("sim-0"));
        assert_eq!(s[3].timestamp_ms, None);
    }

    #[test]
    fn escapes_and_odd_spacing() {
        let (s, bad) = parse("m{a=\"x\\\"y\\\\z\\n\", b = \"}\" ,} 1 2\n", |_| true);
        assert_eq!(bad, 0);
        assert_eq!(s[0].labels, vec![("a".into(), "x\"y\\z\n".into()), ("b".into(), "}".into())]);
        assert_eq!(s[0].timestamp_ms, Some(2));
    }

    #[test]
    fn malformed_lines_are_counted_not_fatal() {
        let text = "m{a=\"x} 1\nm 1 2 3\nm{=\"x\"} 1\nm notanumber\n9m 1\nm{a=\"é\"} +Inf\nok 1\n";
        let (s, bad) = parse(text, |_| true);
        assert_eq!(bad, 5);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].value, f64::INFINITY);
        assert_eq!(s[0].label("a"), Some("é"));
    }
}
