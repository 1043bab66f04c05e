//! JSON numbers as Kubernetes decodes them (int64 when they fit, float64
//! otherwise), and integer checks on float64 values.

#[derive(Clone, Copy, Debug)]
pub(super) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(super) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Kubernetes decodes JSON integers that fit into int64 as int64, all other
/// numbers as float64.
pub(super) fn num_of(n: &serde_json::Number) -> Num {
    match n.as_i64() {
        Some(i) => Num::Int(i),
        None => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
    }
}

/// swag.IsFloat64AJSONInteger.
pub(super) fn is_json_integer(f: f64) -> bool {
    const MAX_JSON_FLOAT: f64 = 9_007_199_254_740_991.0; // 2^53 - 1
    if !f.is_finite() || !(-MAX_JSON_FLOAT..=MAX_JSON_FLOAT).contains(&f) {
        return false;
    }
    if f.fract() == 0.0 {
        return true;
    }
    let g = f.trunc();
    let diff = (f - g).abs();
    if g == 0.0 {
        return diff < 1e-9 * f64::MIN_POSITIVE;
    }
    diff / (f.abs() + g.abs()) < 1e-9
}

/// An integral float that fits into int64, as an int64.
pub(super) fn int_bound(f: f64) -> Option<i64> {
    if f.is_finite() && f.fract() == 0.0 && (-9.223_372_036_854_775e18..9.223_372_036_854_775e18).contains(&f) {
        Some(f as i64)
    } else {
        None
    }
}
