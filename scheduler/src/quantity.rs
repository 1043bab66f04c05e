//! Kubernetes resource quantities (`100m`, `1.5`, `2Gi`, `1e3`) as the integers the
//! scheduler compares: `Value()` (whole units, rounded up) and `MilliValue()` (thousandths,
//! rounded up), like apimachinery's `resource.Quantity`. Malformed input gives `None`;
//! values too large for an `i64` saturate.

/// The quantity in whole units, rounded up (`Quantity.Value()`).
pub fn value(s: &str) -> Option<i64> {
    scaled(s, 0)
}

/// The quantity in thousandths, rounded up (`Quantity.MilliValue()`).
pub fn milli_value(s: &str) -> Option<i64> {
    scaled(s, 3)
}

/// `s × 10^extra_exp`, rounded up.
fn scaled(s: &str, extra_exp: i32) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (dec_exp, bin_exp) = suffix_exponents(suffix)?;
    let (negative, unsigned) = match number.as_bytes().first() {
        Some(b'-') => (true, &number[1..]),
        Some(b'+') => (false, &number[1..]),
        _ => (false, number),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let frac_len = i32::try_from(frac.len()).ok()?;
    let exp = dec_exp.checked_add(extra_exp)?.checked_sub(frac_len)?;
    let magnitude = if digits.is_empty() { 0 } else { magnitude(digits, exp, bin_exp) };
    let signed = if negative { -magnitude } else { magnitude };
    Some(signed.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

/// `digits × 2^bin_exp × 10^exp`, rounded up, saturating at a value beyond `i64::MAX`.
fn magnitude(digits: &str, exp: i32, bin_exp: u32) -> i128 {
    const SATURATED: i128 = i64::MAX as i128 + 1;
    // More than 38 significant digits overflows i128; such a value is huge unless scaled down.
    let Ok(mut v) = digits.parse::<i128>() else {
        return if exp >= 0 { SATURATED } else { approximate(digits, exp, bin_exp) };
    };
    v = match v.checked_mul(1i128 << bin_exp) {
        Some(v) => v,
        None => return SATURATED,
    };
    if exp >= 0 {
        match 10i128.checked_pow(exp as u32).and_then(|p| v.checked_mul(p)) {
            Some(v) => v.min(SATURATED),
            None => SATURATED,
        }
    } else {
        match 10i128.checked_pow(exp.unsigned_abs()) {
            Some(d) => v / d + i128::from(v % d != 0),
            None => i128::from(v != 0),
        }
    }
}

/// Very long mantissas with a negative exponent: drop digits until it fits, rounding up.
fn approximate(digits: &str, exp: i32, bin_exp: u32) -> i128 {
    let keep = digits.len().min(30);
    let dropped = i32::try_from(digits.len() - keep).unwrap_or(i32::MAX);
    let head = &digits[..keep];
    let rest_nonzero = digits[keep..].bytes().any(|b| b != b'0');
    let v = magnitude(head, exp.saturating_add(dropped), bin_exp);
    v + i128::from(rest_nonzero && exp.saturating_add(dropped) >= 0)
}

/// The decimal and binary exponents a suffix stands for.
fn suffix_exponents(suffix: &str) -> Option<(i32, u32)> {
    let dec = |e| Some((e, 0));
    match suffix {
        "" => dec(0),
        "n" => dec(-9),
        "u" => dec(-6),
        "m" => dec(-3),
        "k" => dec(3),
        "M" => dec(6),
        "G" => dec(9),
        "T" => dec(12),
        "P" => dec(15),
        "E" => dec(18),
        "Ki" => Some((0, 10)),
        "Mi" => Some((0, 20)),
        "Gi" => Some((0, 30)),
        "Ti" => Some((0, 40)),
        "Pi" => Some((0, 50)),
        "Ei" => Some((0, 60)),
        _ => {
            let rest = suffix.strip_prefix(['e', 'E'])?;
            let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            // Exponents beyond this saturate or vanish anyway.
            let e: i32 = rest.parse::<i64>().ok()?.clamp(-1000, 1000) as i32;
            dec(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millis() {
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("1"), Some(1000));
        assert_eq!(milli_value("1.5"), Some(1500));
        assert_eq!(milli_value("0.1"), Some(100));
        assert_eq!(milli_value("250u"), Some(1), "sub-milli rounds up");
        assert_eq!(milli_value("2k"), Some(2_000_000));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(value("128Mi"), Some(128 * 1024 * 1024));
        assert_eq!(value("1Gi"), Some(1 << 30));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("1.5Ki"), Some(1536));
        assert_eq!(value("100m"), Some(1), "fractions round up");
        assert_eq!(value("0"), Some(0));
        assert_eq!(value("110"), Some(110));
    }

    #[test]
    fn malformed_and_huge() {
        for bad in ["", "abc", "1x", "Mi", "1.2.3", "e3", "1e", "--1"] {
            assert_eq!(value(bad), None, "{bad}");
        }
        assert_eq!(value("9999999999999999999999999999999999999999999Ei"), Some(i64::MAX));
        assert_eq!(value("1e999"), Some(i64::MAX));
        assert_eq!(value("1e-999"), Some(1));
        assert_eq!(value("-1"), Some(-1));
    }
}
