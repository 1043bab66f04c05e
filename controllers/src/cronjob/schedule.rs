//! Cron schedules as the CronJob controller reads them (upstream uses `robfig/cron/v3`'s
//! `ParseStandard`): five fields `minute hour day-of-month month day-of-week`, each a
//! comma-separated list of `*`/`?`, `N`, `A-B`, with an optional `/step` (`N/step` means
//! `N-max/step`), month and weekday names (`JAN`…`DEC`, `SUN`…`SAT`, any case); the
//! descriptors `@yearly`/`@annually`, `@monthly`, `@weekly`, `@daily`/`@midnight`,
//! `@hourly` and `@every <Go duration>`; and an optional `TZ=<zone> `/`CRON_TZ=<zone> `
//! prefix. Day-of-month and day-of-week follow cron's rule: when both are restricted
//! (neither is `*`/`?`), a day matching either one matches; otherwise both must.
//!
//! [`Schedule::next`] is robfig's `Next`: the first whole minute strictly after a time
//! whose wall-clock time in the schedule's zone matches (`None` for a schedule that never
//! matches within five years, such as `0 0 30 2 *`).

use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, ToSpan, Zoned};

/// Set in a field's bits when it was `*` or `?` (robfig's `starBit`).
const STAR: u64 = 1 << 63;

#[derive(Debug, Clone, Copy)]
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)],
};

/// The five fields as bit sets (bit N = value N allowed), with [`STAR`] kept for the
/// day-of-month/day-of-week rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

/// What fires when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Cron(Fields),
    /// `@every`: a fixed delay in whole seconds (at least one).
    Every(i64),
}

/// A parsed schedule and its zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub kind: Kind,
    pub tz: TimeZone,
}

/// Load a zone by IANA name (`UTC`/empty = UTC). Uses the system tz database; without one,
/// `UTC`, `Etc/UTC`, `Etc/GMT`, `Etc/GMT±N` and `Etc/Zulu`-style fixed zones still work.
pub fn load_tz(name: &str) -> Result<TimeZone, String> {
    let name = name.trim();
    if name.is_empty() || name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    if name == "Local" {
        return Ok(TimeZone::system());
    }
    if let Ok(tz) = TimeZone::get(name) {
        return Ok(tz);
    }
    fixed_zone(name).ok_or_else(|| format!("unknown time zone {name}"))
}

/// The fixed-offset zones of the tz database, for hosts without one.
fn fixed_zone(name: &str) -> Option<TimeZone> {
    let rest = name.strip_prefix("Etc/").unwrap_or(name);
    match rest {
        "UTC" | "UCT" | "Universal" | "Zulu" | "GMT" | "GMT0" | "GMT+0" | "GMT-0" | "Greenwich" => {
            return Some(TimeZone::UTC)
        }
        _ => {}
    }
    if !name.starts_with("Etc/") {
        return None;
    }
    // POSIX-style: Etc/GMT+5 is five hours *behind* UTC.
    let (sign, digits) = if let Some(d) = rest.strip_prefix("GMT+") {
        (-1, d)
    } else if let Some(d) = rest.strip_prefix("GMT-") {
        (1, d)
    } else {
        return None;
    };
    if digits.is_empty() || digits.len() > 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i8 = digits.parse().ok()?;
    if hours > 14 {
        return None;
    }
    Some(TimeZone::fixed(Offset::from_hours(sign * hours).ok()?))
}

impl Schedule {
    /// Parse `spec`; `default_tz` applies unless the spec carries its own `TZ=` prefix.
    pub fn parse(spec: &str, default_tz: &TimeZone) -> Result<Schedule, String> {
        let mut spec = spec.trim();
        if spec.is_empty() {
            return Err("empty spec string".into());
        }
        let mut tz = default_tz.clone();
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let eq = spec.find('=').unwrap_or(0);
            let end = spec.find(char::is_whitespace).ok_or_else(|| format!("missing schedule after {spec:?}"))?;
            tz = load_tz(&spec[eq + 1..end])
                .map_err(|e| format!("provided bad location {}: {e}", &spec[eq + 1..end]))?;
            spec = spec[end..].trim();
        }
        if let Some(d) = spec.strip_prefix('@') {
            return Ok(Schedule { kind: descriptor(d)?, tz });
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!("expected exactly 5 fields, found {}: {spec:?}", fields.len()));
        }
        let f = Fields {
            minute: field(fields[0], MINUTES)?,
            hour: field(fields[1], HOURS)?,
            dom: field(fields[2], DOM)?,
            month: field(fields[3], MONTHS)?,
            dow: field(fields[4], DOW)?,
        };
        Ok(Schedule { kind: Kind::Cron(f), tz })
    }

    /// The first firing time strictly after `after`.
    pub fn next(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(secs) => Timestamp::from_second(floor_second(after).checked_add(*secs)?).ok(),
            Kind::Cron(f) => {
                let mut from = after;
                // A wall-clock search can land at or before `after` around a DST fold; go on.
                for _ in 0..4 {
                    let t = next_cron(f, from, &self.tz)?;
                    if t > after {
                        return Some(t);
                    }
                    from = t;
                }
                None
            }
        }
    }
}

fn descriptor(d: &str) -> Result<Kind, String> {
    let std = |s: &str| Schedule::parse(s, &TimeZone::UTC).map(|s| s.kind);
    match d {
        "yearly" | "annually" => std("0 0 1 1 *"),
        "monthly" => std("0 0 1 * *"),
        "weekly" => std("0 0 * * 0"),
        "daily" | "midnight" => std("0 0 * * *"),
        "hourly" => std("0 * * * *"),
        _ => match d.strip_prefix("every ") {
            Some(dur) => {
                let nanos = parse_go_duration(dur.trim()).map_err(|e| format!("failed to parse duration @{d}: {e}"))?;
                let secs = (nanos / 1_000_000_000).max(1) as i64;
                Ok(Kind::Every(secs))
            }
            None => Err(format!("unrecognized descriptor: @{d}")),
        },
    }
}

/// A Go `time.ParseDuration` string (`1h30m`, `1.5h`, `90s`, `300ms`) in nanoseconds.
pub fn parse_go_duration(s: &str) -> Result<u128, String> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(format!("invalid duration {s:?}"));
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let num = &rest[..num_end];
        if num.is_empty() || num == "." {
            return Err(format!("invalid duration {s:?}"));
        }
        let value: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let scale: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("missing unit in duration {s:?}")),
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += value * scale;
    }
    if neg || !total.is_finite() || total > 9.3e18 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(total.round() as u128)
}

/// One field: a comma-separated list of ranges, OR-ed.
fn field(expr: &str, b: Bounds) -> Result<u64, String> {
    let mut bits = 0;
    for part in expr.split(',') {
        bits |= range(part, b)?;
    }
    Ok(bits)
}

/// `*`, `?`, `N`, `A-B`, each with an optional `/step`.
fn range(expr: &str, b: Bounds) -> Result<u64, String> {
    let mut rs = expr.split('/');
    let range_part = rs.next().unwrap_or("");
    let step_part = rs.next();
    if rs.next().is_some() {
        return Err(format!("too many slashes: {expr}"));
    }
    let low_high: Vec<&str> = range_part.split('-').collect();
    let single = low_high.len() == 1;
    let mut extra = 0;
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        if !single {
            return Err(format!("too many hyphens: {expr}"));
        }
        extra = STAR;
        (b.min, b.max)
    } else {
        let start = int_or_name(low_high[0], b)?;
        let end = match low_high.len() {
            1 => start,
            2 => int_or_name(low_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match step_part {
        None => 1,
        Some(s) => {
            let step = int(s)?;
            // `N/step` means `N-max/step`.
            if single {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
    };
    if start < b.min {
        return Err(format!("beginning of range ({start}) below minimum ({}): {expr}", b.min));
    }
    if end > b.max {
        return Err(format!("end of range ({end}) above maximum ({}): {expr}", b.max));
    }
    if start > end {
        return Err(format!("beginning of range ({start}) beyond end of range ({end}): {expr}"));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v += step;
    }
    Ok(bits | extra)
}

fn int_or_name(s: &str, b: Bounds) -> Result<u32, String> {
    let lower = s.to_ascii_lowercase();
    if let Some((_, v)) = b.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    int(s)
}

fn int(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        if let Some(d) = s.strip_prefix('-') {
            if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) {
                return Err(format!("negative number ({s}) not allowed"));
            }
        }
        return Err(format!("failed to parse int from {s:?}"));
    }
    s.parse().map_err(|_| format!("failed to parse int from {s:?}"))
}

fn has(bits: u64, v: i8) -> bool {
    v >= 0 && bits & (1 << v as u32) != 0
}

fn day_matches(f: &Fields, z: &Zoned) -> bool {
    let dom = has(f.dom, z.day());
    let dow = has(f.dow, z.weekday().to_sunday_zero_offset());
    if f.dom & STAR != 0 || f.dow & STAR != 0 {
        dom && dow
    } else {
        dom || dow
    }
}

fn floor_second(t: Timestamp) -> i64 {
    let s = t.as_second();
    if t.subsec_nanosecond() < 0 {
        s - 1
    } else {
        s
    }
}

fn midnight(d: Date, tz: &TimeZone) -> Option<Zoned> {
    d.at(0, 0, 0, 0).to_zoned(tz.clone()).ok()
}

fn plus_secs(z: &Zoned, secs: i64) -> Option<Zoned> {
    let ts = Timestamp::from_second(z.timestamp().as_second().checked_add(secs)?).ok()?;
    Some(ts.to_zoned(z.time_zone().clone()))
}

/// robfig's `SpecSchedule.Next` on wall-clock time in `tz` (whole minutes only: the
/// standard parser's seconds field is always 0).
fn next_cron(f: &Fields, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let start = Timestamp::from_second(floor_second(after).checked_add(1)?).ok()?;
    let mut t = start.to_zoned(tz.clone());
    let mut added = false;
    let year_limit = t.year() + 5;
    'wrap: loop {
        if t.year() > year_limit {
            return None;
        }
        while !has(f.month, t.month()) {
            added = true;
            let first = t.date().first_of_month().checked_add(1.month()).ok()?;
            t = midnight(first, tz)?;
            if t.month() == 1 {
                continue 'wrap;
            }
        }
        while !day_matches(f, &t) {
            added = true;
            t = midnight(t.date().tomorrow().ok()?, tz)?;
            if t.day() == 1 {
                continue 'wrap;
            }
        }
        while !has(f.hour, t.hour()) {
            if !added {
                added = true;
                // Truncate to the hour in the current offset (not by wall clock, which
                // could step back across a DST fold).
                let into = i64::from(t.minute()) * 60 + i64::from(t.second());
                t = plus_secs(&t, -into)?;
            }
            t = plus_secs(&t, 3600)?;
            if t.hour() == 0 {
                continue 'wrap;
            }
        }
        while !has(f.minute, t.minute()) {
            if !added {
                added = true;
                t = plus_secs(&t, -i64::from(t.second()))?;
            }
            t = plus_secs(&t, 60)?;
            if t.minute() == 0 {
                continue 'wrap;
            }
        }
        if t.second() != 0 {
            // Only second 0 fires: on to the next whole minute and check again.
            added = true;
            t = plus_secs(&t, 60 - i64::from(t.second()))?;
            continue 'wrap;
        }
        return Some(t.timestamp());
    }
}

#[cfg(test)]
mod tests;
