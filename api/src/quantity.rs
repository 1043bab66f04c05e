//! Kubernetes resource quantities (`100m`, `1.5`, `2Gi`, `1e3`) as exact milli-units, for
//! LimitRanger's comparisons.

/// A quantity in thousandths of its unit (`100m` cpu = 100, `1Ki` = 1_024_000).
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (num, mult_milli): (&str, i128) = [
        ("Ki", 1_024_000),
        ("Mi", 1_024i128.pow(2) * 1000),
        ("Gi", 1_024i128.pow(3) * 1000),
        ("Ti", 1_024i128.pow(4) * 1000),
        ("Pi", 1_024i128.pow(5) * 1000),
        ("Ei", 1_024i128.pow(6) * 1000),
        ("n", 0),
        ("u", 0),
        ("m", 1),
        ("k", 1_000_000),
        ("M", 1_000_000_000),
        ("G", 1_000_000_000_000),
        ("T", 1_000_000_000_000_000),
        ("P", 1_000_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000_000),
    ]
    .iter()
    .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    .unwrap_or((s, 1000));
    // Sub-milli suffixes round up to one milli-unit when non-zero (as Kubernetes rounds
    // cpu up to 1m).
    let sub_milli = mult_milli == 0;
    let (mantissa, exp) = match num.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (num, 0),
    };
    let neg = mantissa.starts_with('-');
    let mantissa = mantissa.trim_start_matches(['+', '-']);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits: i128 = format!("{int}{frac}").parse().ok()?;
    let scale = exp - frac.len() as i32;
    let mult = if sub_milli { 1 } else { mult_milli };
    let mut v = digits.checked_mul(mult)?;
    if scale >= 0 {
        v = v.checked_mul(10i128.checked_pow(scale as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-scale) as u32)?;
        v = (v + d - 1) / d;
    }
    if sub_milli {
        v = i128::from(v > 0);
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("1"), Some(1000));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("2Gi"), Some(2 * 1024i128.pow(3) * 1000));
        assert_eq!(parse_milli("128Mi"), Some(128 * 1024i128.pow(2) * 1000));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_milli("1k"), Some(1_000_000));
        assert_eq!(parse_milli("0.1"), Some(100));
        assert_eq!(parse_milli("1n"), Some(1));
        assert_eq!(parse_milli("abc"), None);
        assert_eq!(parse_milli(""), None);
        assert_eq!(parse_milli("1e999"), None);
    }
}
