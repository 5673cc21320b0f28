//! Value format 1: a version byte and JSON.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::corrupt;
use crate::error::Result;
use crate::keys;

/// `v` as a version-1 value.
pub(crate) fn encode_value<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![keys::VALUE_V1];
    // Our own records always serialize (string map keys, no floats that JSON refuses); a
    // failure is a broken invariant, and writing an empty value instead would hide it.
    if let Err(e) = serde_json::to_writer(&mut out, v) {
        panic!("JSON encoding of a state-machine value failed: {e}");
    }
    out
}

/// A version-1 value.
pub(crate) fn decode_value<T: DeserializeOwned>(b: &[u8], what: &str) -> Result<T> {
    match b.split_first() {
        Some((&keys::VALUE_V1, rest)) => serde_json::from_slice(rest).map_err(|e| corrupt(what, e)),
        _ => Err(corrupt(what, "unknown value version")),
    }
}
