//! String formats: the set the apiserver validates for CRDs and their checks.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use base64::Engine as _;
use regex::Regex;

/// Formats validated by the apiserver for CRDs (normalized: dashes removed).
/// Every other format (e.g. int32, int64, float, double) is stripped before
/// validation and therefore ignored.
const SUPPORTED_FORMATS: [&str; 24] = [
    "bsonobjectid",
    "uri",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "uuid",
    "uuid3",
    "uuid4",
    "uuid5",
    "isbn",
    "isbn10",
    "isbn13",
    "creditcard",
    "ssn",
    "hexcolor",
    "rgbcolor",
    "byte",
    "password",
    "date",
    "duration",
    "datetime",
];

/// The format the apiserver validates: unsupported formats are stripped.
pub(super) fn effective_format(format: &str) -> &str {
    let normalized = format.replace('-', "");
    if SUPPORTED_FORMATS.contains(&normalized.as_str()) {
        format
    } else {
        ""
    }
}

fn static_regex(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
    cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
}

fn matches_static(cell: &'static OnceLock<Option<Regex>>, pattern: &str, s: &str) -> bool {
    // A pattern that failed to compile (impossible for the constants used)
    // accepts everything rather than rejecting valid data.
    static_regex(cell, pattern).is_none_or(|r| r.is_match(s))
}

/// Validates a string against a (normalized) supported format. Formats not
/// implemented here (uri, email, isbn*, creditcard, rgbcolor, duration) are
/// accepted.
pub(super) fn format_valid(normalized: &str, s: &str) -> bool {
    static UUID: OnceLock<Option<Regex>> = OnceLock::new();
    static UUID3: OnceLock<Option<Regex>> = OnceLock::new();
    static UUID4: OnceLock<Option<Regex>> = OnceLock::new();
    static UUID5: OnceLock<Option<Regex>> = OnceLock::new();
    static HOSTNAME: OnceLock<Option<Regex>> = OnceLock::new();
    static HEXCOLOR: OnceLock<Option<Regex>> = OnceLock::new();
    static SSN: OnceLock<Option<Regex>> = OnceLock::new();
    match normalized {
        "byte" => is_base64(s),
        "date" => is_date(s),
        "datetime" => is_date_time(s),
        "uuid" => matches_static(&UUID, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", s),
        "uuid3" => {
            matches_static(&UUID3, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?3[0-9a-f]{3}-?[0-9a-f]{4}-?[0-9a-f]{12}$", s)
        }
        "uuid4" => {
            matches_static(&UUID4, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?4[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$", s)
        }
        "uuid5" => {
            matches_static(&UUID5, r"(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?5[0-9a-f]{3}-?[89ab][0-9a-f]{3}-?[0-9a-f]{12}$", s)
        }
        "hostname" => {
            matches_static(
                &HOSTNAME,
                r"^([a-zA-Z0-9\p{S}\p{L}]((-?[a-zA-Z0-9\p{S}\p{L}]{0,62})?)|([a-zA-Z0-9\p{S}\p{L}](([a-zA-Z0-9-\p{S}\p{L}]{0,61}[a-zA-Z0-9\p{S}\p{L}])?)(\.)){1,}([a-zA-Z\p{L}]){2,63})$",
                s,
            ) && s.len() <= 255
                && s.split('.').all(|l| l.len() <= 63)
        }
        "ipv4" => s.contains('.') && parse_ip_sloppy(s),
        "ipv6" => s.contains(':') && parse_ip_sloppy(s),
        "cidr" => is_cidr(s),
        "mac" => is_mac(s),
        "hexcolor" => matches_static(&HEXCOLOR, r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$", s),
        "ssn" => matches_static(&SSN, r"^\d{3}[- ]?\d{2}[- ]?\d{4}$", s),
        "bsonobjectid" => s.len() == 24 && s.bytes().all(|b| b.is_ascii_hexdigit()),
        _ => true,
    }
}

fn is_base64(s: &str) -> bool {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let engine = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    !s.is_empty() && engine.decode(s).is_ok()
}

fn two_digits(b: &[u8]) -> Option<u32> {
    match b {
        [a, c] if a.is_ascii_digit() && c.is_ascii_digit() => Some(u32::from(a - b'0') * 10 + u32::from(c - b'0')),
        _ => None,
    }
}

/// RFC 3339 full-date ("2006-01-02") with calendar checks, as Go's time.Parse.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return false;
    }
    let year = match b.get(0..4) {
        Some(y) if y.iter().all(u8::is_ascii_digit) => y.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')),
        _ => return false,
    };
    let (Some(month), Some(day)) = (b.get(5..7).and_then(two_digits), b.get(8..10).and_then(two_digits)) else {
        return false;
    };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// strfmt.IsDateTime.
fn is_date_time(s: &str) -> bool {
    static TIME: OnceLock<Option<Regex>> = OnceLock::new();
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let mut parts = lower.split('t');
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return false;
    };
    if !is_date(date) {
        return false;
    }
    let Some(re) = static_regex(&TIME, r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
    else {
        return true;
    };
    match re.captures(time) {
        Some(c) => {
            let get = |i: usize| c.get(i).map_or("", |m| m.as_str());
            get(1) <= "23" && get(2) <= "59" && get(3) <= "59"
        }
        None => false,
    }
}

/// IPv4 that tolerates leading zeros (netutils.ParseIPSloppy).
fn parse_ipv4_sloppy(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 3
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n <= 255)
        })
}

fn parse_ip_sloppy(s: &str) -> bool {
    parse_ipv4_sloppy(s) || s.parse::<Ipv4Addr>().is_ok() || s.parse::<Ipv6Addr>().is_ok()
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    if bits.is_empty() || bits.len() > 3 || !bits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(n) = bits.parse::<u32>() else {
        return false;
    };
    if parse_ipv4_sloppy(ip) {
        n <= 32
    } else {
        ip.parse::<Ipv6Addr>().is_ok() && n <= 128
    }
}

/// net.ParseMAC: 6, 8 or 20 octets separated by ':' or '-', or dotted
/// groups of four hex digits.
fn is_mac(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit());
    for sep in [':', '-'] {
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() > 1 {
            return matches!(parts.len(), 6 | 8 | 20) && parts.iter().all(|p| hex(p, 2));
        }
    }
    let parts: Vec<&str> = s.split('.').collect();
    matches!(parts.len(), 3 | 4 | 10) && parts.iter().all(|p| hex(p, 4))
}
