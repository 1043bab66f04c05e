//! Container logs as the kubelet serves them (`/containerLogs/...`): the CRI log file's
//! lines (`<RFC3339Nano> <stream> <P|F> <text>`) turned back into the container's output,
//! with `tailLines`, `sinceSeconds`/`sinceTime`, `timestamps` and `limitBytes`.

use jiff::Timestamp;

/// What the client asked for (the query of `GET /containerLogs/{ns}/{pod}/{container}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<usize>,
    pub since: Option<Timestamp>,
    pub limit_bytes: Option<usize>,
}

impl LogOptions {
    /// From a query string; bad values are an error naming the parameter.
    pub fn parse(query: &str, now: Timestamp) -> Result<LogOptions, String> {
        let mut o = LogOptions::default();
        for (k, v) in form_pairs(query) {
            let flag = || matches!(v.as_str(), "true" | "1" | "");
            match k.as_str() {
                "follow" => o.follow = flag(),
                "previous" => o.previous = flag(),
                "timestamps" => o.timestamps = flag(),
                "tailLines" => o.tail_lines = Some(v.parse().map_err(|_| format!("tailLines {v:?} is not a count"))?),
                "limitBytes" => {
                    o.limit_bytes = Some(v.parse().map_err(|_| format!("limitBytes {v:?} is not a count"))?)
                }
                "sinceSeconds" => {
                    let s: i64 = v.parse().map_err(|_| format!("sinceSeconds {v:?} is not a number"))?;
                    let back = jiff::SignedDuration::from_secs(s.clamp(0, 100 * 365 * 86_400));
                    o.since = Some(now.checked_sub(back).map_err(|_| format!("sinceSeconds {v:?} is too large"))?);
                }
                "sinceTime" => o.since = Some(v.parse().map_err(|_| format!("sinceTime {v:?} is not RFC 3339"))?),
                _ => {}
            }
        }
        Ok(o)
    }
}

fn form_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One parsed CRI log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    pub time: &'a str,
    pub partial: bool,
    pub text: &'a [u8],
}

pub fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    Some(Line { time, partial: tag == b"P", text })
}

/// The output for the lines of a log file (whole lines only), by the options (not
/// `follow`: the caller streams what comes later through [`render_line`]).
pub fn render(content: &[u8], o: &LogOptions) -> Vec<u8> {
    let lines: Vec<Line<'_>> = content
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .filter(|l| o.since.is_none_or(|s| l.time.parse::<Timestamp>().is_ok_and(|t| t >= s)))
        .collect();
    let skip = o.tail_lines.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = Vec::new();
    for l in &lines[skip..] {
        render_line(l, o, &mut out);
    }
    if let Some(limit) = o.limit_bytes {
        out.truncate(limit);
    }
    out
}

pub fn render_line(l: &Line<'_>, o: &LogOptions, out: &mut Vec<u8>) {
    if o.timestamps {
        out.extend_from_slice(l.time.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(l.text);
    if !l.partial {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &[u8] = b"2026-01-01T00:00:01.000000001Z stdout F one\n2026-01-01T00:00:02.5Z stderr F two words\n2026-01-01T00:00:03Z stdout P par\n2026-01-01T00:00:03Z stdout F tial\n";

    #[test]
    fn lines_come_back_as_written() {
        assert_eq!(render(LOG, &LogOptions::default()), b"one\ntwo words\npartial\n");
        let tail = LogOptions { tail_lines: Some(2), ..Default::default() };
        assert_eq!(render(LOG, &tail), b"partial\n");
        let ts = LogOptions { timestamps: true, tail_lines: Some(3), ..Default::default() };
        assert_eq!(
            render(LOG, &ts),
            b"2026-01-01T00:00:02.5Z two words\n2026-01-01T00:00:03Z par2026-01-01T00:00:03Z tial\n"
        );
        let since = LogOptions { since: Some("2026-01-01T00:00:02Z".parse().unwrap()), ..Default::default() };
        assert_eq!(render(LOG, &since), b"two words\npartial\n");
        let limit = LogOptions { limit_bytes: Some(5), ..Default::default() };
        assert_eq!(render(LOG, &limit), b"one\nt");
    }

    #[test]
    fn options_from_the_query() {
        let now: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let o =
            LogOptions::parse("follow=true&tailLines=10&timestamps=true&sinceSeconds=30&previous=false", now).unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!(o.tail_lines, Some(10));
        assert_eq!(o.since, Some("2026-01-01T00:00:30Z".parse().unwrap()));
        let o = LogOptions::parse("sinceTime=2026-01-01T00%3A00%3A05Z", now).unwrap();
        assert_eq!(o.since, Some("2026-01-01T00:00:05Z".parse().unwrap()));
        assert!(LogOptions::parse("tailLines=x", now).unwrap_err().contains("tailLines"));
        assert_eq!(decode("a%2Fb+c%zz"), "a/b c%zz");
    }
}
