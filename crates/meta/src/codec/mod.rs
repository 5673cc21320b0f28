//! The value formats of the state machine, one file each. Every value starts with a version
//! byte (`keys::VALUE_V1`, `keys::VALUE_V2`); `docs/formats.md` describes them byte for byte.
//!
//! - [`json`]: version 1, JSON (cluster, node, disk and repair records, commands other than
//!   allocate and commit, and everything of a group created before version 2).
//! - [`proto`]: version 2, protobuf (`proto/state.proto`): bundle records, allocation request
//!   values, the allocate and commit commands.
//! - [`binary`]: fixed-width values (a disk's shard index, a repair entry's healthy count, the
//!   disks' placed bytes).
//!
//! Decoding never panics: a value that does not decode is `MetaError::Corrupt`. Encoding our
//! own types cannot fail; if it does, an invariant is broken and the member stops.

pub(crate) mod binary;
pub(crate) mod json;
pub(crate) mod proto;

pub(crate) use json::{decode_value, encode_value};
pub(crate) use proto::{
    decode_bundle, decode_request_bundle, encode_bundle, encode_request_bundle,
};

use crate::error::MetaError;

/// A value that did not decode.
pub(crate) fn corrupt(what: &str, why: impl std::fmt::Display) -> MetaError {
    MetaError::Corrupt {
        what: format!("{what}: {why}"),
    }
}
