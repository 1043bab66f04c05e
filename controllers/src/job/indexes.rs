//! Completion indexes of Indexed Jobs (upstream `indexed_job_utils.go`): the
//! `batch.kubernetes.io/job-completion-index` of a pod and the compressed interval lists
//! (`1,3-5,7`) of `status.completedIndexes`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

/// `batch.kubernetes.io/job-completion-index` (annotation, and label).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// A pod's completion index (`None`: missing or not a non-negative integer).
pub fn of(pod: &Pod) -> Option<i32> {
    let v = pod.metadata.annotations.as_ref()?.get(COMPLETION_INDEX)?;
    v.parse::<i32>().ok().filter(|ix| *ix >= 0)
}

/// A pod's completion index if it is valid for `completions`.
pub fn valid(pod: &Pod, completions: i32) -> Option<i32> {
    of(pod).filter(|ix| *ix < completions)
}

/// `parseIndexesFromString`: the indexes below `completions` an interval list names
/// (malformed items are skipped; parsing stops at the first one at or past `completions`).
pub fn parse(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    if s.trim().is_empty() {
        return out;
    }
    for item in s.split(',') {
        let mut lims = item.splitn(2, '-');
        let Ok(first) = lims.next().unwrap_or("").trim().parse::<i32>() else { continue };
        if first < 0 {
            continue;
        }
        if first >= completions {
            break;
        }
        let last = match lims.next() {
            Some(l) => match l.trim().parse::<i32>() {
                Ok(l) => l.min(completions - 1),
                Err(_) => continue,
            },
            None => first,
        };
        out.extend(first..=last);
    }
    out
}

/// The interval list of `indexes` (`0-2,5,7-8`).
pub fn format(indexes: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut run: Option<(i32, i32)> = None;
    for &ix in indexes {
        run = match run {
            Some((a, b)) if ix == b + 1 => Some((a, ix)),
            Some((a, b)) => {
                parts.push(interval(a, b));
                Some((ix, ix))
            }
            None => Some((ix, ix)),
        };
    }
    if let Some((a, b)) = run {
        parts.push(interval(a, b));
    }
    parts.join(",")
}

fn interval(a: i32, b: i32) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

/// `firstPendingIndexes`: the lowest `count` indexes below `completions` not in `taken`.
pub fn first_pending(taken: &BTreeSet<i32>, count: usize, completions: i32) -> Vec<i32> {
    (0..completions.max(0)).filter(|ix| !taken.contains(ix)).take(count).collect()
}

/// `podGenerateNameWithIndex`: `<job>-<index>-`, the job name cut so the whole stays
/// within 58 characters (room for the random suffix).
pub fn generate_name(job: &str, index: i32) -> String {
    let suffix = format!("-{index}-");
    let whole = format!("{job}{suffix}");
    if whole.len() <= 58 {
        return whole;
    }
    let mut keep = 58usize.saturating_sub(suffix.len());
    while !job.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{suffix}", &job[..keep])
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn set(v: &[i32]) -> BTreeSet<i32> {
        v.iter().copied().collect()
    }

    #[test]
    fn intervals_round_trip() {
        assert_eq!(format(&set(&[])), "");
        assert_eq!(format(&set(&[3])), "3");
        assert_eq!(format(&set(&[0, 1, 2, 5, 7, 8])), "0-2,5,7-8");
        assert_eq!(parse("0-2,5,7-8", 10), set(&[0, 1, 2, 5, 7, 8]));
        assert_eq!(parse("", 10), set(&[]));
    }

    #[test]
    fn parsing_respects_completions_and_skips_junk() {
        assert_eq!(parse("1,3-9", 5), set(&[1, 3, 4]));
        assert_eq!(parse("1,6,2", 5), set(&[1]));
        assert_eq!(parse("x,2,3-y,4", 10), set(&[2, 4]));
    }

    #[test]
    fn pending_indexes_fill_the_gaps() {
        assert_eq!(first_pending(&set(&[0, 2, 3]), 3, 6), vec![1, 4, 5]);
        assert_eq!(first_pending(&set(&[0, 1]), 5, 3), vec![2]);
        assert!(first_pending(&set(&[]), 0, 3).is_empty());
    }

    #[test]
    fn pod_index_and_generate_name() {
        let pod = |v: &str| Pod {
            metadata: ObjectMeta {
                annotations: Some(BTreeMap::from([(COMPLETION_INDEX.to_string(), v.to_string())])),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(of(&pod("3")), Some(3));
        assert_eq!(of(&pod("-1")), None);
        assert_eq!(of(&pod("03")), Some(3));
        assert_eq!(of(&pod(" 3")), None);
        assert_eq!(of(&pod("x")), None);
        assert_eq!(valid(&pod("3"), 3), None);
        assert_eq!(of(&Pod::default()), None);
        assert_eq!(generate_name("job", 4), "job-4-");
        let long = generate_name(&"j".repeat(70), 12);
        assert_eq!(long.len(), 58);
        assert!(long.ends_with("-12-"));
    }
}
