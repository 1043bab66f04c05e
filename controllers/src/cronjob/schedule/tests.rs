use jiff::civil;

use super::*;

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn sched(s: &str) -> Schedule {
    Schedule::parse(s, &TimeZone::UTC).unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The next `n` firing times after `from`, as RFC 3339 UTC strings.
fn nexts(s: &str, from: &str, n: usize) -> Vec<String> {
    let sc = sched(s);
    let mut t = utc(from);
    let mut out = Vec::new();
    for _ in 0..n {
        t = sc.next(t).unwrap_or_else(|| panic!("{s}: no next after {t}"));
        out.push(t.to_string());
    }
    out
}

fn next1(s: &str, from: &str) -> String {
    nexts(s, from, 1).remove(0)
}

#[test]
fn every_minute_is_strictly_after() {
    assert_eq!(
        nexts("* * * * *", "2024-01-01T10:00:00Z", 3),
        ["2024-01-01T10:01:00Z", "2024-01-01T10:02:00Z", "2024-01-01T10:03:00Z"]
    );
    // Mid-minute (and sub-second) starts go to the next whole minute.
    assert_eq!(next1("* * * * *", "2024-01-01T10:00:30.5Z"), "2024-01-01T10:01:00Z");
    assert_eq!(next1("* * * * *", "2024-01-01T10:00:59.999Z"), "2024-01-01T10:01:00Z");
}

#[test]
fn fixed_minute_and_hour() {
    assert_eq!(next1("30 2 * * *", "2024-01-01T00:00:00Z"), "2024-01-01T02:30:00Z");
    assert_eq!(next1("30 2 * * *", "2024-01-01T02:30:00Z"), "2024-01-02T02:30:00Z");
    assert_eq!(next1("0 0 * * *", "2024-12-31T23:59:00Z"), "2025-01-01T00:00:00Z");
}

#[test]
fn ranges_steps_and_lists() {
    assert_eq!(
        nexts("*/15 * * * *", "2024-01-01T10:01:00Z", 4),
        ["2024-01-01T10:15:00Z", "2024-01-01T10:30:00Z", "2024-01-01T10:45:00Z", "2024-01-01T11:00:00Z"]
    );
    assert_eq!(
        nexts("5-7 * * * *", "2024-01-01T10:06:00Z", 3),
        ["2024-01-01T10:07:00Z", "2024-01-01T11:05:00Z", "2024-01-01T11:06:00Z"]
    );
    assert_eq!(
        nexts("10-40/15 * * * *", "2024-01-01T10:00:00Z", 4),
        ["2024-01-01T10:10:00Z", "2024-01-01T10:25:00Z", "2024-01-01T10:40:00Z", "2024-01-01T11:10:00Z"]
    );
    // `N/step` is `N-max/step`.
    assert_eq!(
        nexts("50/5 * * * *", "2024-01-01T10:00:00Z", 3),
        ["2024-01-01T10:50:00Z", "2024-01-01T10:55:00Z", "2024-01-01T11:50:00Z"]
    );
    assert_eq!(
        nexts("0,20,45 9,17 * * *", "2024-01-01T09:30:00Z", 4),
        ["2024-01-01T09:45:00Z", "2024-01-01T17:00:00Z", "2024-01-01T17:20:00Z", "2024-01-01T17:45:00Z"]
    );
    assert_eq!(
        nexts("0 0-23/6 * * *", "2024-01-01T01:00:00Z", 4),
        ["2024-01-01T06:00:00Z", "2024-01-01T12:00:00Z", "2024-01-01T18:00:00Z", "2024-01-02T00:00:00Z"]
    );
}

#[test]
fn month_and_weekday_names_any_case() {
    // 2024-01-01 is a Monday.
    assert_eq!(nexts("0 9 * * MON-FRI", "2024-01-05T10:00:00Z", 2), ["2024-01-08T09:00:00Z", "2024-01-09T09:00:00Z"]);
    assert_eq!(next1("0 9 * * sat,Sun", "2024-01-01T00:00:00Z"), "2024-01-06T09:00:00Z");
    assert_eq!(next1("0 0 1 JUN *", "2024-01-01T00:00:00Z"), "2024-06-01T00:00:00Z");
    assert_eq!(next1("0 0 1 jan-mar/2 *", "2024-02-01T00:00:00Z"), "2024-03-01T00:00:00Z");
    assert_eq!(next1("0 0 * * 0", "2024-01-01T00:00:00Z"), "2024-01-07T00:00:00Z");
    assert_eq!(next1("0 0 * * 6", "2024-01-01T00:00:00Z"), "2024-01-06T00:00:00Z");
}

#[test]
fn dom_and_dow_are_or_when_both_restricted() {
    // The 15th, or any Friday: 2024-01-05 (Fri), 2024-01-12 (Fri), 2024-01-15 (Mon), 2024-01-19 (Fri).
    assert_eq!(
        nexts("0 0 15 * FRI", "2024-01-01T00:00:00Z", 4),
        ["2024-01-05T00:00:00Z", "2024-01-12T00:00:00Z", "2024-01-15T00:00:00Z", "2024-01-19T00:00:00Z"]
    );
    // With a star in either field, both must match (i.e. only the restricted one counts).
    assert_eq!(next1("0 0 15 * *", "2024-01-01T00:00:00Z"), "2024-01-15T00:00:00Z");
    assert_eq!(next1("0 0 * * FRI", "2024-01-01T00:00:00Z"), "2024-01-05T00:00:00Z");
    assert_eq!(next1("0 0 ? * FRI", "2024-01-01T00:00:00Z"), "2024-01-05T00:00:00Z");
    // `*/2` is not a star (it restricts): OR applies — odd days or Sundays.
    assert_eq!(
        nexts("0 0 */2 * SUN", "2024-01-01T00:00:00Z", 4),
        ["2024-01-03T00:00:00Z", "2024-01-05T00:00:00Z", "2024-01-07T00:00:00Z", "2024-01-09T00:00:00Z"]
    );
    // `*/1` keeps the star: both must match → every Sunday.
    assert_eq!(next1("0 0 */1 * SUN", "2024-01-01T00:00:00Z"), "2024-01-07T00:00:00Z");
    // A star inside a list keeps it too.
    assert_eq!(next1("0 0 *,1 * SUN", "2024-01-01T00:00:00Z"), "2024-01-07T00:00:00Z");
}

#[test]
fn month_ends_and_leap_days() {
    assert_eq!(
        nexts("0 0 31 * *", "2024-01-31T00:00:00Z", 3),
        ["2024-03-31T00:00:00Z", "2024-05-31T00:00:00Z", "2024-07-31T00:00:00Z"]
    );
    assert_eq!(next1("0 12 29 2 *", "2024-03-01T00:00:00Z"), "2028-02-29T12:00:00Z");
    // Never: February 30th.
    assert_eq!(sched("0 0 30 2 *").next(utc("2024-01-01T00:00:00Z")), None);
}

#[test]
fn descriptors() {
    assert_eq!(next1("@hourly", "2024-01-01T10:30:00Z"), "2024-01-01T11:00:00Z");
    assert_eq!(next1("@daily", "2024-01-01T10:30:00Z"), "2024-01-02T00:00:00Z");
    assert_eq!(next1("@midnight", "2024-01-01T10:30:00Z"), "2024-01-02T00:00:00Z");
    assert_eq!(next1("@weekly", "2024-01-01T10:30:00Z"), "2024-01-07T00:00:00Z");
    assert_eq!(next1("@monthly", "2024-01-01T10:30:00Z"), "2024-02-01T00:00:00Z");
    assert_eq!(next1("@yearly", "2024-01-01T10:30:00Z"), "2025-01-01T00:00:00Z");
    assert_eq!(next1("@annually", "2024-01-01T10:30:00Z"), "2025-01-01T00:00:00Z");
    assert_eq!(sched("@daily").kind, sched("0 0 * * *").kind);
}

#[test]
fn every_is_a_fixed_delay_in_whole_seconds() {
    assert_eq!(nexts("@every 90s", "2024-01-01T10:00:00.7Z", 2), ["2024-01-01T10:01:30Z", "2024-01-01T10:03:00Z"]);
    assert_eq!(next1("@every 1h30m", "2024-01-01T10:00:00Z"), "2024-01-01T11:30:00Z");
    assert_eq!(next1("@every 1.5m", "2024-01-01T10:00:00Z"), "2024-01-01T10:01:30Z");
    // Below a second: one second.
    assert_eq!(next1("@every 300ms", "2024-01-01T10:00:00Z"), "2024-01-01T10:00:01Z");
    assert_eq!(sched("@every 2500ms").kind, Kind::Every(2));
}

#[test]
fn go_durations() {
    assert_eq!(parse_go_duration("1h"), Ok(3_600_000_000_000));
    assert_eq!(parse_go_duration("2m3s"), Ok(123_000_000_000));
    assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
    assert_eq!(parse_go_duration("10us"), Ok(10_000));
    assert_eq!(parse_go_duration("0"), Ok(0));
    assert!(parse_go_duration("").is_err());
    assert!(parse_go_duration("5").is_err());
    assert!(parse_go_duration("5d").is_err());
    assert!(parse_go_duration("-5s").is_err());
}

#[test]
fn bad_schedules_are_errors() {
    for bad in [
        "",
        "* * * *",
        "* * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * 32 * *",
        "* * * 13 *",
        "* * * * 7",
        "5-1 * * * *",
        "*/0 * * * *",
        "1-2-3 * * * *",
        "1/2/3 * * * *",
        "-1 * * * *",
        "a * * * *",
        "* * * FOO *",
        "@fortnightly",
        "@every",
        "@every 5x",
        "TZ=Nowhere/City * * * * *",
    ] {
        assert!(Schedule::parse(bad, &TimeZone::UTC).is_err(), "{bad:?} should not parse");
    }
}

#[test]
fn fixed_zones_and_tz_prefix() {
    // Etc/GMT-2 is two hours ahead of UTC: 09:00 there is 07:00Z.
    let tz = load_tz("Etc/GMT-2").unwrap();
    let s = Schedule::parse("0 9 * * *", &tz).unwrap();
    assert_eq!(s.next(utc("2024-01-01T00:00:00Z")).unwrap().to_string(), "2024-01-01T07:00:00Z");
    let s = Schedule::parse("TZ=Etc/GMT+5 0 9 * * *", &TimeZone::UTC).unwrap();
    assert_eq!(s.next(utc("2024-01-01T00:00:00Z")).unwrap().to_string(), "2024-01-01T14:00:00Z");
    let s = Schedule::parse("CRON_TZ=UTC 0 9 * * *", &tz).unwrap();
    assert_eq!(s.next(utc("2024-01-01T00:00:00Z")).unwrap().to_string(), "2024-01-01T09:00:00Z");
    assert!(load_tz("UTC").is_ok() && load_tz("").is_ok() && load_tz("Etc/UTC").is_ok());
    assert!(load_tz("Etc/GMT+15").is_err());
    assert!(load_tz("Not/AZone").is_err());
    // The fallback agrees with the database.
    assert_eq!(fixed_zone("Etc/GMT+5").unwrap().to_offset(Timestamp::UNIX_EPOCH), Offset::from_hours(-5).unwrap());
}

#[test]
fn named_zones_follow_dst_when_the_database_is_there() {
    let Ok(ny) = load_tz("America/New_York") else {
        eprintln!("no tz database here; skipping");
        return;
    };
    let s = Schedule::parse("0 9 * * *", &ny).unwrap();
    // EST (UTC-5) in January, EDT (UTC-4) in July.
    assert_eq!(s.next(utc("2024-01-10T00:00:00Z")).unwrap().to_string(), "2024-01-10T14:00:00Z");
    assert_eq!(s.next(utc("2024-07-10T00:00:00Z")).unwrap().to_string(), "2024-07-10T13:00:00Z");
    // Spring forward (2024-03-10, 02:00 → 03:00): a 02:30 job has no slot that day.
    let s = Schedule::parse("30 2 * * *", &ny).unwrap();
    let got = s.next(utc("2024-03-10T05:00:00Z")).unwrap();
    assert_eq!(got.to_zoned(ny.clone()).date(), civil::date(2024, 3, 11));
    // Fall back (2024-11-03, 02:00 → 01:00): like robfig/cron (and so Kubernetes), a
    // 01:30 job runs at both 01:30s, then the next day.
    let s = Schedule::parse("30 1 * * *", &ny).unwrap();
    let first = s.next(utc("2024-11-03T04:00:00Z")).unwrap();
    assert_eq!(first.to_string(), "2024-11-03T05:30:00Z");
    let second = s.next(first).unwrap();
    assert_eq!(second.to_string(), "2024-11-03T06:30:00Z");
    let third = s.next(second).unwrap();
    assert_eq!(third.to_zoned(ny.clone()).date(), civil::date(2024, 11, 4));
    // Hourly keeps firing every real hour through the fold.
    let s = Schedule::parse("0 * * * *", &ny).unwrap();
    let a = s.next(utc("2024-11-03T04:30:00Z")).unwrap();
    let b = s.next(a).unwrap();
    let c = s.next(b).unwrap();
    assert_eq!(
        (a.to_string(), b.to_string(), c.to_string()),
        ("2024-11-03T05:00:00Z".into(), "2024-11-03T06:00:00Z".into(), "2024-11-03T07:00:00Z".into())
    );
}

#[test]
fn next_is_monotonic_over_a_year() {
    for spec in ["*/7 3-5 * * MON", "0 0 1,15 * *", "59 23 * * *", "0 12 * FEB,AUG WED"] {
        let s = sched(spec);
        let mut t = utc("2023-12-31T23:59:00Z");
        for _ in 0..50 {
            let n = s.next(t).unwrap();
            assert!(n > t, "{spec}: {n} after {t}");
            assert_eq!(n.as_second() % 60, 0);
            t = n;
        }
    }
}
