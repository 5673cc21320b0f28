//! Generated protobuf and gRPC types for Bit Mountain's wire protocol (`proto/*.proto`).
//!
//! These types stay at the edges: servers and clients convert them into the domain types of the
//! lower crates at the boundary and never pass them further in. Two hand-written modules:
//! [`error_kind`] holds the error kinds every layer sends and the metadata keys carrying them;
//! [`connect`] how every client connects (TLS, the bearer token), and [`buffered`] the TCP
//! streams TLS runs over.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_debug_implementations
)]

pub mod buffered;
pub mod connect;
pub mod error_kind;
pub use connect::{AuthChannel, Credentials};
pub use error_kind::{ErrorKind, DETAIL_KEY, ERROR_KIND_KEY, LEADER_KEY};

/// Version 1 of the wire protocol.
pub mod v1 {
    tonic::include_proto!("bitmountain.v1");
}

/// The public archive API (`proto/archive.proto`), self-contained so clients in any language
/// generate stubs from that one file.
pub mod archive {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("bitmountain.archive.v1");
    }
}

/// Values the metadata group stores and replicates in format version 2 (`proto/state.proto`).
/// Not an API: only `bitmountain-meta`'s codec uses them.
pub mod state {
    /// Version 1 of the package (value format version 2, see `docs/formats.md`).
    pub mod v1 {
        tonic::include_proto!("bitmountain.state.v1");
    }
}

/// The encoded `FileDescriptorSet` of every proto file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/bitmountain_descriptor.bin"));
