//! Checks on client requests before they are proposed: bad input is refused with a
//! clear error and never reaches the log.

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::keys::KeyRange;
use crate::types::{Op, Txn};

/// Approximate encoded size of a transaction.
pub fn txn_size(txn: &Txn) -> usize {
    let ops: usize = txn
        .success
        .iter()
        .chain(txn.failure.iter())
        .map(|op| match op {
            Op::Put(p) => p.key.len() + p.value.len() + 8,
            Op::Delete(d) => d.range.key.len() + d.range.range_end.len() + 4,
            Op::Range(r) => r.range.key.len() + r.range.range_end.len() + 16,
        })
        .sum();
    let cmps: usize = txn
        .compares
        .iter()
        .map(|c| {
            c.range.key.len()
                + c.range.range_end.len()
                + match &c.target {
                    crate::types::CompareTarget::Value(v) => v.len(),
                    _ => 8,
                }
        })
        .sum();
    ops + cmps
}

pub fn check_txn(txn: &Txn, cfg: &StoreConfig) -> Result<()> {
    let size = txn_size(txn);
    if size > cfg.max_request_bytes {
        return Err(StoreError::RequestTooLarge { size, limit: cfg.max_request_bytes });
    }
    for n in [txn.compares.len(), txn.success.len(), txn.failure.len()] {
        if n > cfg.max_txn_ops {
            return Err(StoreError::TooManyOps { count: n, limit: cfg.max_txn_ops });
        }
    }
    for c in &txn.compares {
        if c.range.key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
    }
    for branch in [&txn.success, &txn.failure] {
        check_branch(branch)?;
    }
    Ok(())
}

/// etcd's `checkIntervals`: within a branch no key is put twice, and no put falls in a
/// deleted range.
fn check_branch(ops: &[Op]) -> Result<()> {
    let mut puts: Vec<&[u8]> = Vec::new();
    let mut dels: Vec<&KeyRange> = Vec::new();
    for op in ops {
        match op {
            Op::Put(p) => {
                if p.key.is_empty() {
                    return Err(StoreError::EmptyKey);
                }
                puts.push(&p.key);
            }
            Op::Delete(d) => {
                if d.range.key.is_empty() {
                    return Err(StoreError::EmptyKey);
                }
                dels.push(&d.range);
            }
            Op::Range(r) => {
                if r.range.key.is_empty() {
                    return Err(StoreError::EmptyKey);
                }
            }
        }
    }
    let mut sorted = puts.clone();
    sorted.sort();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return Err(StoreError::DuplicateKey);
    }
    if puts.iter().any(|k| dels.iter().any(|r| r.contains(k))) {
        return Err(StoreError::DuplicateKey);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{DeleteRequest, PutRequest};

    fn put(k: &str) -> Op {
        Op::Put(PutRequest { key: k.as_bytes().to_vec(), value: b"v".to_vec(), ..Default::default() })
    }

    #[test]
    fn refuses_bad_transactions() {
        let cfg = StoreConfig::default();
        let ok = Txn { success: vec![put("a"), put("b")], ..Default::default() };
        check_txn(&ok, &cfg).unwrap();
        let dup = Txn { success: vec![put("a"), put("a")], ..Default::default() };
        assert_eq!(check_txn(&dup, &cfg), Err(StoreError::DuplicateKey));
        let in_del = Txn {
            success: vec![put("ab"), Op::Delete(DeleteRequest { range: KeyRange::prefix("a"), prev_kv: false })],
            ..Default::default()
        };
        assert_eq!(check_txn(&in_del, &cfg), Err(StoreError::DuplicateKey));
        let empty = Txn { success: vec![put("")], ..Default::default() };
        assert_eq!(check_txn(&empty, &cfg), Err(StoreError::EmptyKey));
        let big = Txn::put("k", vec![0u8; cfg.max_request_bytes + 1]);
        assert!(matches!(check_txn(&big, &cfg), Err(StoreError::RequestTooLarge { .. })));
        let many = Txn { success: (0..200).map(|i| put(&i.to_string())).collect(), ..Default::default() };
        assert!(matches!(check_txn(&many, &cfg), Err(StoreError::TooManyOps { .. })));
    }
}
