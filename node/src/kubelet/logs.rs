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

/// A query string's `key=value` pairs, percent-decoded (`+` is a space), in order: a key
/// given twice is there twice (exec's `command=sh&command=-c`).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_pairs(query)
}

/// A log file read as it grows, a whole line at a time (the shim writes each record with
/// one write, but a reader may still see half of one).
#[derive(Debug, Clone)]
pub struct Tail {
    path: std::path::PathBuf,
    offset: u64,
}

impl Tail {
    /// From `offset` (the end of a whole line already read).
    pub fn at(path: &std::path::Path, offset: u64) -> Tail {
        Tail { path: path.to_path_buf(), offset }
    }

    /// From the end of the last whole line the file has now: only what comes later.
    pub fn from_end(path: &std::path::Path) -> Tail {
        use std::io::{Read, Seek, SeekFrom};
        let offset = (|| {
            let mut f = std::fs::File::open(path).ok()?;
            let len = f.metadata().ok()?.len();
            // A record is at most 16 KiB plus its prefix: the last newline is in here.
            let start = len.saturating_sub(64 * 1024);
            f.seek(SeekFrom::Start(start)).ok()?;
            let mut end = Vec::new();
            f.read_to_end(&mut end).ok()?;
            Some(end.iter().rposition(|b| *b == b'\n').map_or(start, |i| start + i as u64 + 1))
        })();
        Tail::at(path, offset.unwrap_or(0))
    }

    /// The whole lines written since the last call (newlines included); empty if none.
    pub fn next_lines(&mut self) -> Vec<u8> {
        use std::io::{Read, Seek, SeekFrom};
        let mut new = Vec::new();
        let read = std::fs::File::open(&self.path)
            .and_then(|mut f| f.seek(SeekFrom::Start(self.offset)).and_then(|_| f.read_to_end(&mut new)));
        if read.is_err() {
            return Vec::new();
        }
        let whole = new.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        new.truncate(whole);
        self.offset += whole as u64;
        new
    }
}

/// How often a followed log is looked at.
pub const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Follow a container instance's log: `each` gets the whole lines written from `tail` on
/// as they come, until the instance has ended (its exit file, beside the log's lines it
/// wrote before), `each` says no more (false), or `until` is ready.
pub async fn follow<F, Fut>(
    mut tail: Tail,
    exit_file: &std::path::Path,
    until: impl std::future::Future<Output = ()>,
    mut each: F,
) where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut until = std::pin::pin!(until);
    loop {
        // Whether it has ended is known before the last read: nothing written is missed.
        let ended = crate::kubelet::runtime::shim::read_exit(exit_file).is_some();
        let new = tail.next_lines();
        if (!new.is_empty() && !each(new).await) || ended {
            return;
        }
        tokio::select! {
            () = &mut until => return,
            () = tokio::time::sleep(FOLLOW_POLL) => {}
        }
    }
}

/// The stream (`stdout`, `stderr`) of a CRI log line.
pub fn stream_of(line: &[u8]) -> Option<&[u8]> {
    line.split(|b| *b == b' ').nth(1)
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
    fn a_tail_reads_whole_lines_as_they_come() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("0.log");
        std::fs::write(&path, "2026-01-01T00:00:01Z stdout F old\n2026-01-01T00:00:01Z stdout F ha").unwrap();
        let mut tail = Tail::from_end(&path);
        assert_eq!(tail.next_lines(), b"");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"lf\n2026-01-01T00:00:02Z stderr F new\n2026-01-01T00:00:03Z stdout F par").unwrap();
        let lines = tail.next_lines();
        assert_eq!(lines, b"2026-01-01T00:00:01Z stdout F half\n2026-01-01T00:00:02Z stderr F new\n");
        let streams: Vec<&[u8]> = lines.split(|b| *b == b'\n').filter_map(stream_of).collect();
        assert_eq!(streams, [&b"stdout"[..], b"stderr"]);
        f.write_all(b"t\n").unwrap();
        assert_eq!(tail.next_lines(), b"2026-01-01T00:00:03Z stdout F part\n");
        assert_eq!(Tail::from_end(&d.path().join("missing")).next_lines(), b"");
        assert_eq!(
            query_pairs("command=sh&command=-c&command=echo+a%3Db"),
            [
                ("command".to_string(), "sh".to_string()),
                ("command".to_string(), "-c".to_string()),
                ("command".to_string(), "echo a=b".to_string())
            ]
        );
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
