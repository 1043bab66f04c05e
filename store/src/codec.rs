//! bincode (2.x, serde mode) for everything the store persists or sends between masters.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::StoreError;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encode a value; encoding our own types cannot fail except on a bug, which we report
/// as a storage error rather than panic.
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    bincode::serde::encode_to_vec(v, config()).map_err(|e| StoreError::Storage(format!("encode: {e}")))
}

/// Decode a value, rejecting trailing garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let (v, read) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| StoreError::Storage(format!("decode: {e}")))?;
    if read != bytes.len() {
        return Err(StoreError::Storage(format!("decode: {} trailing bytes", bytes.len() - read)));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Plain(Vec<u8>, i64);

    #[derive(Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Bytes(#[serde(with = "serde_bytes")] Vec<u8>, i64);

    /// Byte fields are marked `serde_bytes` (one copy instead of a per-byte visitor); the
    /// encoding must stay exactly that of a plain `Vec<u8>` so existing data still reads.
    #[test]
    fn serde_bytes_fields_encode_like_plain_vectors() {
        for len in [0usize, 1, 250, 251, 300, 70_000] {
            let v: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let plain = encode(&Plain(v.clone(), -3)).unwrap();
            let bytes = encode(&Bytes(v.clone(), -3)).unwrap();
            assert_eq!(plain, bytes, "length {len}");
            assert_eq!(decode::<Bytes>(&plain).unwrap(), Bytes(v, -3));
        }
    }
}
