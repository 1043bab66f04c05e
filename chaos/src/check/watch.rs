//! Watch guarantees, for every watcher: its stream is the canonical log of its prefix.
//!
//! Each log is walked with a cursor, the highest revision the watcher has been promised
//! everything up to:
//! - `Start { from }` sets it; `from` must be where the previous window left the cursor
//!   (resume from the last delivered or bookmarked revision), or the revision of a
//!   `Relisted` just before, and is free only for the first `Start`. A relist (a
//!   consistent list) is not below what the watcher already received.
//! - Every event is above the cursor (ordered, no duplicates; one revision may carry
//!   several keys only within one delivery), is in the canonical log with the same key
//!   and value (no phantom), and every canonical event of the prefix between the cursor
//!   and it was delivered before it (no gap). All of one revision's events of the prefix
//!   arrive in one delivery (atomic).
//! - A `Bookmark` promises everything up to its revision was delivered, and nothing at or
//!   below it may follow.
//!
//! Only revisions above `canonical_from` can be compared with the log; events at or below
//! it are checked for order only. Events above the log's last revision but not above the
//! final revision cannot be verified (the log may end before them); above both they are
//! phantoms.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{secs, show, Verdict, Violations};
use crate::history::{Delivery, Event, History, WatchLog};

const NAME: &str = "watch";

pub fn check(history: &History) -> Verdict {
    let mut canonical: Vec<&Event> = history.canonical.iter().collect();
    canonical.sort();
    let last = canonical.last().map_or(history.canonical_from, |e| e.revision).max(history.canonical_from);
    let mut violations = Violations::new();
    let mut counts = Counts::default();
    for log in &history.watches {
        let mut canon: BTreeMap<i64, BTreeMap<&str, Option<&str>>> = BTreeMap::new();
        for e in &canonical {
            if e.revision > history.canonical_from && e.key.starts_with(&log.prefix) {
                canon.entry(e.revision).or_default().insert(e.key.as_str(), e.value.as_deref());
            }
        }
        let mut walk = Walk::new(log, history, canon, last);
        walk.run(&mut violations, &mut counts);
    }
    let summary = format!(
        "{} watchers: {} events match the canonical log ({} beyond it unverified, {} at or below revision {} checked for order only)",
        history.watches.len(),
        counts.verified,
        counts.unverified,
        counts.old,
        history.canonical_from
    );
    violations.verdict(NAME, counts.verified, summary)
}

#[derive(Default)]
struct Counts {
    verified: usize,
    unverified: usize,
    old: usize,
}

/// What set the cursor last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum By {
    Start,
    /// An event of this delivery.
    Event(usize),
    Bookmark(i64),
}

struct Walk<'a> {
    log: &'a WatchLog,
    /// The prefix's canonical events above `from`, by revision, then key.
    canon: BTreeMap<i64, BTreeMap<&'a str, Option<&'a str>>>,
    /// `canonical_from`.
    from: i64,
    /// The canonical log's last revision.
    last: i64,
    final_revision: i64,
    /// Where each (revision, key) was delivered: (delivery, position).
    positions: HashMap<(i64, &'a str), Vec<(usize, usize)>>,
    cursor: Option<i64>,
    by: By,
    open: bool,
    relist: Option<i64>,
    /// Since the last relist.
    delivered: HashSet<(i64, &'a str)>,
    /// Events already reported as delivered out of place (not reported again when they come).
    reported: HashSet<(i64, &'a str)>,
}

impl<'a> Walk<'a> {
    fn new(
        log: &'a WatchLog,
        history: &History,
        canon: BTreeMap<i64, BTreeMap<&'a str, Option<&'a str>>>,
        last: i64,
    ) -> Walk<'a> {
        let mut positions: HashMap<(i64, &str), Vec<(usize, usize)>> = HashMap::new();
        for (d, delivery) in log.deliveries.iter().enumerate() {
            if let Delivery::Events { events, .. } = delivery {
                for (j, e) in events.iter().enumerate() {
                    positions.entry((e.revision, e.key.as_str())).or_default().push((d, j));
                }
            }
        }
        Walk {
            log,
            canon,
            from: history.canonical_from,
            last,
            final_revision: history.final_revision,
            positions,
            cursor: None,
            by: By::Start,
            open: false,
            relist: None,
            delivered: HashSet::new(),
            reported: HashSet::new(),
        }
    }

    fn delivered_later(&self, revision: i64, key: &str, after: (usize, usize)) -> Option<usize> {
        self.positions.get(&(revision, key))?.iter().find(|&&p| p > after).map(|&(d, _)| d)
    }

    /// Canonical events of the prefix in `(lo, hi)` (or `(lo, hi]`) not delivered yet.
    fn undelivered(&self, lo: i64, hi: i64, inclusive: bool) -> Vec<(i64, &'a str)> {
        let lo = lo.max(self.from);
        let hi = if inclusive { hi } else { hi - 1 };
        if hi <= lo {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (&r, keys) in self.canon.range(lo + 1..=hi) {
            for &k in keys.keys() {
                if !self.delivered.contains(&(r, k)) {
                    out.push((r, k));
                }
            }
        }
        out
    }

    fn run(&mut self, v: &mut Violations, counts: &mut Counts) {
        let id = self.log.watcher;
        for (d, delivery) in self.log.deliveries.iter().enumerate() {
            match delivery {
                Delivery::Start { at, from_revision, .. } => {
                    let f = *from_revision;
                    let when = format!("delivery {d} at {}", secs(at.mono));
                    if let Some(r) = self.relist.take() {
                        if f != r {
                            v.push(format!(
                                "watcher {id}: watch started from revision {f} after relisting at revision {r} ({when})"
                            ));
                        }
                    } else if let Some(c) = self.cursor {
                        if f > c {
                            let skipped = self.undelivered(c, f, true);
                            let what = match skipped.first() {
                                Some((r, k)) => format!(", skipping {} events, the first {k} at {r}", skipped.len()),
                                None => String::new(),
                            };
                            v.push(format!(
                                "watcher {id}: resumed from revision {f} but had received only up to revision {c}{what} ({when})"
                            ));
                        } else if f < c {
                            v.push(format!(
                                "watcher {id}: resumed from revision {f}, before revision {c} it had already received ({when})"
                            ));
                        }
                    }
                    self.cursor = Some(f);
                    self.by = By::Start;
                    self.open = true;
                }
                Delivery::Events { at, events } => self.events(d, at.mono, events, v, counts),
                Delivery::Bookmark { at, revision } => {
                    let b = *revision;
                    let when = format!("delivery {d} at {}", secs(at.mono));
                    if !self.open {
                        v.push(format!("watcher {id}: bookmark at revision {b} outside a watch window ({when})"));
                    }
                    if let Some(c) = self.cursor {
                        let missing = self.undelivered(c, b, true);
                        if let Some((r, k)) = missing.first() {
                            let more = if missing.len() > 1 {
                                format!(", and {} more", missing.len() - 1)
                            } else {
                                String::new()
                            };
                            v.push(format!(
                                "watcher {id}: bookmark at revision {b} ahead of delivered events (missing {k} at {r}{more}) ({when})"
                            ));
                        }
                    }
                    if self.cursor.is_none_or(|c| b >= c) {
                        self.cursor = Some(b);
                        self.by = By::Bookmark(b);
                    }
                }
                Delivery::Ended { .. } => self.open = false,
                Delivery::Relisted { at, revision } => {
                    if let Some(c) = self.cursor.filter(|c| revision < c) {
                        v.push(format!(
                            "watcher {id}: relisted at revision {revision}, below revision {c} it had already received (delivery {d} at {})",
                            secs(at.mono)
                        ));
                    }
                    self.relist = Some(*revision);
                    self.open = false;
                    self.delivered.clear();
                }
            }
        }
    }

    fn events(&mut self, d: usize, at: u64, events: &'a [Event], v: &mut Violations, counts: &mut Counts) {
        let id = self.log.watcher;
        let prefix = self.log.prefix.as_str();
        let when = format!("delivery {d} at {}", secs(at));
        if !self.open {
            v.push(format!(
                "watcher {id}: events outside a watch window (after an end or a relist, before a start; {when})"
            ));
        }
        // Keys of this delivery, by revision.
        let mut here: BTreeMap<i64, HashSet<&str>> = BTreeMap::new();
        for (j, e) in events.iter().enumerate() {
            let (rev, key) = (e.revision, e.key.as_str());
            if !key.starts_with(prefix) {
                v.push(format!(
                    "watcher {id}: event for {key} at revision {rev} is outside the prefix {prefix} ({when})"
                ));
                continue;
            }
            let in_order = match self.cursor {
                None => true,
                Some(c) => {
                    rev > c
                        || (rev == c
                            && self.by == By::Event(d)
                            && !here.get(&rev).is_some_and(|keys| keys.contains(key)))
                }
            };
            if !in_order {
                let c = self.cursor.unwrap_or_default();
                if self.reported.remove(&(rev, key)) {
                    // Already reported where it should have been.
                } else if let Some(b) = self.by.bookmark_at_or_above(rev) {
                    let again = if self.delivered.contains(&(rev, key)) { ", delivered again" } else { "" };
                    v.push(format!(
                        "watcher {id}: event {key} at revision {rev} at or below the bookmark at revision {b} before it{again} ({when})"
                    ));
                } else if self.delivered.contains(&(rev, key)) {
                    v.push(format!("watcher {id}: duplicate event {key} at revision {rev} ({when})"));
                } else if rev == c {
                    v.push(format!(
                        "watcher {id}: revision {rev} not atomic: {key} came in a later delivery than the rest of it ({when})"
                    ));
                } else {
                    v.push(format!("watcher {id}: out of order: {key} at revision {rev} after revision {c} ({when})"));
                }
            } else if let Some(c) = self.cursor {
                let missing = self.undelivered(c, rev, false);
                let mut gaps = Vec::new();
                for (r, k) in missing {
                    if let Some(later) = self.delivered_later(r, k, (d, j)) {
                        self.reported.insert((r, k));
                        v.push(format!(
                            "watcher {id}: reordered: {k} at revision {r} delivered after {key} at revision {rev} ({when}; it came in delivery {later})"
                        ));
                    } else {
                        gaps.push((r, k));
                    }
                }
                if let Some((r, k)) = gaps.first() {
                    let more = if gaps.len() > 1 { format!(", and {} more", gaps.len() - 1) } else { String::new() };
                    v.push(format!("watcher {id}: gap before revision {rev} (missing {k} at {r}{more}) ({when})"));
                }
            }
            // Against the canonical log.
            if rev <= self.from {
                counts.old += 1;
            } else if rev <= self.last {
                match self.canon.get(&rev).and_then(|keys| keys.get(key)) {
                    None => v.push(format!(
                        "watcher {id}: phantom event {key} = {} at revision {rev}: not in the canonical log ({when})",
                        show(e.value.as_deref())
                    )),
                    Some(value) if *value != e.value.as_deref() => v.push(format!(
                        "watcher {id}: event {key} at revision {rev} is {}, the canonical log has {} ({when})",
                        show(e.value.as_deref()),
                        show(*value)
                    )),
                    Some(_) => counts.verified += 1,
                }
            } else if rev <= self.final_revision {
                counts.unverified += 1;
            } else {
                v.push(format!(
                    "watcher {id}: phantom event {key} = {} at revision {rev}, beyond the last revision {} ({when})",
                    show(e.value.as_deref()),
                    self.last.max(self.final_revision)
                ));
            }
            if in_order {
                self.cursor = Some(self.cursor.map_or(rev, |c| c.max(rev)));
                self.by = By::Event(d);
            }
            self.delivered.insert((rev, key));
            here.entry(rev).or_default().insert(key);
        }
        // Atomic: every canonical event of a revision this delivery carries is in it.
        let last_position = (d, events.len());
        for (rev, keys) in &here {
            let Some(all) = self.canon.get(rev) else { continue };
            for &k in all.keys() {
                if keys.contains(k) || self.delivered.contains(&(*rev, k)) {
                    // Here, or in an earlier delivery (reported when this one came).
                    continue;
                }
                if let Some(later) = self.delivered_later(*rev, k, last_position) {
                    self.reported.insert((*rev, k));
                    v.push(format!(
                        "watcher {id}: revision {rev} not atomic: split over deliveries {d} and {later} ({k} came later; {when})"
                    ));
                } else {
                    v.push(format!(
                        "watcher {id}: revision {rev} incomplete: {k} at {rev} missing from the delivery that carried the rest of it ({when})"
                    ));
                }
            }
        }
    }
}

impl By {
    /// The bookmark's revision when the cursor was set by a bookmark at or above `revision`.
    fn bookmark_at_or_above(self, revision: i64) -> Option<i64> {
        match self {
            By::Bookmark(b) if revision <= b => Some(b),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Stamp;

    const P: &str = "/registry/configmaps/ns/";

    fn key(name: &str) -> String {
        format!("{P}{name}")
    }

    fn ev(revision: i64, name: &str, value: Option<&str>) -> Event {
        Event { revision, key: key(name), value: value.map(str::to_string) }
    }

    fn at(t: u64) -> Stamp {
        Stamp { mono: t, wall_ms: 0 }
    }

    fn start(from: i64) -> Delivery {
        Delivery::Start { at: at(1), from_revision: from, master: None }
    }

    fn events(evs: &[(i64, &str, Option<&str>)]) -> Delivery {
        Delivery::Events { at: at(2), events: evs.iter().map(|&(r, k, v)| ev(r, k, v)).collect() }
    }

    fn one(r: i64, k: &str, v: Option<&str>) -> Delivery {
        events(&[(r, k, v)])
    }

    fn bookmark(revision: i64) -> Delivery {
        Delivery::Bookmark { at: at(3), revision }
    }

    fn ended() -> Delivery {
        Delivery::Ended { at: at(4), error: "eof".into() }
    }

    fn relisted(revision: i64) -> Delivery {
        Delivery::Relisted { at: at(5), revision }
    }

    /// 11 a=1, 12 b=2, 13 a=3, 14 b deleted, 15 a=4, 17 c=5 and d=6 (one transaction);
    /// 16 is a key outside the prefix.
    fn history(deliveries: Vec<Delivery>) -> History {
        History {
            canonical: vec![
                ev(11, "a", Some("1")),
                ev(12, "b", Some("2")),
                ev(13, "a", Some("3")),
                ev(14, "b", None),
                ev(15, "a", Some("4")),
                Event { revision: 16, key: "/reg/k0".into(), value: Some("x".into()) },
                ev(17, "c", Some("5")),
                ev(17, "d", Some("6")),
            ],
            watches: vec![WatchLog { watcher: 1, prefix: P.into(), deliveries }],
            final_revision: 17,
            canonical_from: 10,
            ..Default::default()
        }
    }

    fn run(deliveries: Vec<Delivery>) -> Verdict {
        check(&history(deliveries))
    }

    fn assert_fails(v: &Verdict, needle: &str) {
        assert!(!v.ok, "{v:?}");
        assert!(v.violations.iter().any(|m| m.contains(needle)), "no violation with {needle:?}: {v:?}");
    }

    #[test]
    fn passes_a_resumed_watch() {
        let v = run(vec![
            start(10),
            one(11, "a", Some("1")),
            one(12, "b", Some("2")),
            bookmark(12),
            ended(),
            start(12),
            one(13, "a", Some("3")),
            ended(),
            start(13),
            one(14, "b", None),
            one(15, "a", Some("4")),
            bookmark(16),
            ended(),
            start(16),
            events(&[(17, "c", Some("5")), (17, "d", Some("6"))]),
            bookmark(17),
        ]);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.checked, 7);
        assert!(v.summary.starts_with("1 watchers: 7 events match the canonical log"), "{}", v.summary);
    }

    #[test]
    fn passes_complete_windows() {
        let v = run(vec![
            start(10),
            one(11, "a", Some("1")),
            one(12, "b", Some("2")),
            bookmark(12),
            ended(),
            start(12),
            one(13, "a", Some("3")),
            one(14, "b", None),
            ended(),
            start(14),
            one(15, "a", Some("4")),
            bookmark(16),
            events(&[(17, "c", Some("5")), (17, "d", Some("6"))]),
        ]);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.checked, 7);
    }

    #[test]
    fn passes_a_relisted_watch() {
        let v = run(vec![
            relisted(10),
            start(10),
            one(11, "a", Some("1")),
            ended(),
            // 410 Gone: the watcher lists again at 13 and watches from there.
            start(11),
            ended(),
            relisted(13),
            start(13),
            one(14, "b", None),
            one(15, "a", Some("4")),
        ]);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.checked, 3);
    }

    #[test]
    fn fails_a_gap() {
        let v = run(vec![start(10), one(11, "a", Some("1")), one(13, "a", Some("3"))]);
        assert_fails(&v, "gap before revision 13");
        assert_eq!(
            v.summary,
            format!("watcher 1: gap before revision 13 (missing {} at 12) (delivery 2 at 0.000000002s)", key("b"))
        );
    }

    #[test]
    fn fails_a_gap_at_the_start() {
        let v = run(vec![start(10), one(12, "b", Some("2"))]);
        assert_fails(&v, "gap before revision 12");
    }

    #[test]
    fn fails_a_duplicate() {
        let v = run(vec![start(10), one(11, "a", Some("1")), one(11, "a", Some("1"))]);
        assert_fails(&v, "duplicate event");
        // Also within one delivery.
        let v = run(vec![start(10), events(&[(11, "a", Some("1")), (11, "a", Some("1"))])]);
        assert_fails(&v, "duplicate event");
    }

    #[test]
    fn fails_a_reordered_pair() {
        let v = run(vec![start(10), one(12, "b", Some("2")), one(11, "a", Some("1")), one(13, "a", Some("3"))]);
        assert_fails(&v, "reordered");
        assert_eq!(v.violations.len(), 1, "{v:?}");
        // Within one delivery too.
        let v = run(vec![start(10), events(&[(12, "b", Some("2")), (11, "a", Some("1"))])]);
        assert_fails(&v, "reordered");
    }

    #[test]
    fn fails_a_phantom_event() {
        let v = run(vec![start(10), one(11, "a", Some("1")), one(12, "x", Some("2"))]);
        assert_fails(&v, "phantom event");
        // A wrong value.
        let v = run(vec![start(10), one(11, "a", Some("zzz"))]);
        assert_fails(&v, "the canonical log has \"1\"");
        // Beyond the end of everything.
        let v = run(vec![start(17), one(99, "a", Some("9"))]);
        assert_fails(&v, "beyond the last revision 17");
    }

    #[test]
    fn fails_a_revision_split_over_two_deliveries() {
        let v = run(vec![start(15), one(17, "c", Some("5")), one(17, "d", Some("6"))]);
        assert_fails(&v, "revision 17 not atomic");
        assert_eq!(v.violations.len(), 1, "{v:?}");
        // And one half of it never delivered.
        let v = run(vec![start(15), one(17, "c", Some("5")), bookmark(17)]);
        assert_fails(&v, "revision 17 incomplete");
    }

    #[test]
    fn fails_a_bookmark_ahead_of_delivered_events() {
        let v = run(vec![start(10), one(11, "a", Some("1")), bookmark(13)]);
        assert_fails(&v, "bookmark at revision 13 ahead of delivered events");
        assert!(v.summary.contains(&format!("missing {} at 12, and 1 more", key("b"))), "{}", v.summary);
    }

    #[test]
    fn fails_an_event_at_or_below_a_bookmark() {
        let v = run(vec![
            start(10),
            one(11, "a", Some("1")),
            one(12, "b", Some("2")),
            bookmark(12),
            one(12, "b", Some("2")),
        ]);
        assert_fails(&v, "at or below the bookmark at revision 12");
        // After a bookmark that was ahead, the late event is a second violation.
        let v = run(vec![start(10), one(11, "a", Some("1")), bookmark(12), one(12, "b", Some("2"))]);
        assert_fails(&v, "bookmark at revision 12 ahead");
        assert_fails(&v, "at or below the bookmark at revision 12");
    }

    #[test]
    fn fails_a_resume_past_what_was_delivered() {
        let v = run(vec![start(10), one(11, "a", Some("1")), ended(), start(12), one(13, "a", Some("3"))]);
        assert_fails(&v, "resumed from revision 12 but had received only up to revision 11");
        assert!(v.summary.contains(&format!("the first {} at 12", key("b"))), "{}", v.summary);
        // From before it is wrong too (it would deliver events again).
        let v = run(vec![start(10), one(11, "a", Some("1")), one(12, "b", Some("2")), ended(), start(11)]);
        assert_fails(&v, "resumed from revision 11, before revision 12");
        // After a relist, from the list's revision only.
        let v = run(vec![start(10), ended(), relisted(12), start(11)]);
        assert_fails(&v, "started from revision 11 after relisting at revision 12");
        // A (consistent) list does not go back either.
        let v =
            run(vec![start(10), one(11, "a", Some("1")), one(12, "b", Some("2")), ended(), relisted(11), start(11)]);
        assert_fails(&v, "relisted at revision 11, below revision 12");
    }

    #[test]
    fn fails_events_outside_a_window() {
        let v = run(vec![one(11, "a", Some("1"))]);
        assert_fails(&v, "outside a watch window");
        let v = run(vec![start(10), one(11, "a", Some("1")), ended(), one(12, "b", Some("2"))]);
        assert_fails(&v, "outside a watch window");
        let v = run(vec![
            start(10),
            one(11, "a", Some("1")),
            Delivery::Events {
                at: at(2),
                events: vec![Event { revision: 16, key: "/reg/k0".into(), value: Some("x".into()) }],
            },
        ]);
        assert_fails(&v, "outside the prefix");
    }

    #[test]
    fn events_before_the_canonical_log_are_checked_for_order_only() {
        let v = run(vec![start(5), one(7, "zz", Some("?")), one(9, "a", Some("0")), one(11, "a", Some("1"))]);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.checked, 1);
        let v = run(vec![start(5), one(9, "a", Some("0")), one(7, "zz", Some("?"))]);
        assert_fails(&v, "out of order");
    }
}
