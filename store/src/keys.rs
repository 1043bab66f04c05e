//! Key ranges with etcd's conventions, and the order-preserving encodings of the
//! state machine's column families.

use serde::{Deserialize, Serialize};

/// A key range as etcd expresses it: `range_end` empty means the single key `key`;
/// `range_end == [0]` means every key `>= key`; otherwise `[key, range_end)`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub range_end: Vec<u8>,
}

impl KeyRange {
    pub fn single(key: impl Into<Vec<u8>>) -> Self {
        KeyRange { key: key.into(), range_end: Vec::new() }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> Self {
        let key = prefix.into();
        let range_end = prefix_end(&key);
        KeyRange { key, range_end }
    }

    pub fn is_single(&self) -> bool {
        self.range_end.is_empty()
    }

    /// The exclusive upper bound, or `None` for "no bound".
    pub fn upper(&self) -> Option<Vec<u8>> {
        if self.range_end.is_empty() {
            let mut k = self.key.clone();
            k.push(0);
            Some(k)
        } else if self.range_end == [0] {
            None
        } else {
            Some(self.range_end.clone())
        }
    }

    /// The inclusive lower bound (etcd treats key `[0]` with range_end `[0]` as "all keys").
    pub fn lower(&self) -> &[u8] {
        if self.key == [0] && self.range_end == [0] {
            &[]
        } else {
            &self.key
        }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        if self.is_single() {
            return k == self.key.as_slice();
        }
        k >= self.lower() && self.upper().is_none_or(|u| k < u.as_slice())
    }

    /// True when the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let (a_lo, a_hi) = (self.lower(), self.upper());
        let (b_lo, b_hi) = (other.lower(), other.upper());
        let a_before_b_ends = b_hi.as_ref().is_none_or(|h| a_lo < h.as_slice());
        let b_before_a_ends = a_hi.as_ref().is_none_or(|h| b_lo < h.as_slice());
        a_before_b_ends && b_before_a_ends
    }
}

/// etcd's `GetPrefixRangeEnd`: the smallest key greater than every key with this prefix;
/// `[0]` ("to the end") when the prefix is empty or all 0xff.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Encode a user key so that byte order of encodings equals byte order of keys and no
/// encoding is a prefix of another: 0x00 becomes 0x00 0xff, then a 0x00 0x00 terminator.
pub fn encode_key(key: &[u8], out: &mut Vec<u8>) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Inverse of [`encode_key`]; returns the key and the number of bytes consumed.
pub fn decode_key(enc: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut key = Vec::with_capacity(enc.len());
    let mut i = 0;
    while i < enc.len() {
        let b = enc[i];
        if b == 0 {
            match enc.get(i + 1)? {
                0 => return Some((key, i + 2)),
                0xff => {
                    key.push(0);
                    i += 2;
                }
                _ => return None,
            }
        } else {
            key.push(b);
            i += 1;
        }
    }
    None
}

/// History key: encoded user key, then the bitwise-inverted revision so that the newest
/// version of a key sorts first.
pub fn history_key(key: &[u8], rev: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    encode_key(key, &mut out);
    out.extend_from_slice(&(!(rev as u64)).to_be_bytes());
    out
}

/// Split a history key into user key and revision.
pub fn split_history_key(hk: &[u8]) -> Option<(Vec<u8>, i64)> {
    let (key, used) = decode_key(hk)?;
    let rest = hk.get(used..)?;
    let bytes: [u8; 8] = rest.try_into().ok()?;
    Some((key, !u64::from_be_bytes(bytes) as i64))
}

/// Lower bound in the history CF for user keys `>= key`.
pub fn history_lower(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 2);
    encode_key(key, &mut out);
    out
}

/// Big-endian u64, for log indexes and revisions as RocksDB keys.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

pub fn from_be(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// Key of a lease→key attachment: lease id then the raw key.
pub fn lease_key(lease: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.len());
    out.extend_from_slice(&(lease as u64).to_be_bytes());
    out.extend_from_slice(key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_matches_etcd() {
        assert_eq!(prefix_end(b"aa"), b"ab".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn encoding_preserves_order_and_is_prefix_free() {
        let keys: Vec<&[u8]> = vec![b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"a\x01", b"ab", b"b"];
        let mut encs = Vec::new();
        for k in &keys {
            for rev in [1i64, 7, 1 << 40] {
                encs.push((history_key(k, rev), k.to_vec(), rev));
            }
        }
        let mut sorted = encs.clone();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        // Sorted by key ascending, then revision descending.
        let mut expect = encs.clone();
        expect.sort_by(|a, b| a.1.cmp(&b.1).then(b.2.cmp(&a.2)));
        assert_eq!(sorted, expect);
        for (hk, k, rev) in &encs {
            assert_eq!(split_history_key(hk), Some((k.clone(), *rev)));
        }
    }

    #[test]
    fn ranges() {
        let r = KeyRange::prefix(b"/registry/pods/".to_vec());
        assert!(r.contains(b"/registry/pods/a"));
        assert!(!r.contains(b"/registry/pods0"));
        let all = KeyRange { key: vec![0], range_end: vec![0] };
        assert!(all.contains(b""));
        assert!(all.contains(b"zzz"));
        assert!(KeyRange::single(b"a".to_vec()).overlaps(&KeyRange::prefix(b"a".to_vec())));
        assert!(!KeyRange::single(b"b".to_vec()).overlaps(&KeyRange::single(b"a".to_vec())));
    }
}
