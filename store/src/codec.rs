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
