//! The node's error type, and its one conversion into `tonic::Status`.

use bitmountain_bundle::BundleError;
use bitmountain_disk::DiskError;
use bitmountain_erasure::ErasureError;
use bitmountain_meta_client::MetaError;
use bitmountain_proto::error_kind::{set_kind_header, ErrorKind};
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("disk {disk_id} is not served by this node; ask the node that holds it (see `bitmountain status`)")]
    UnknownDisk { disk_id: u64 },

    #[error("bad request: {reason}")]
    BadRequest { reason: String },

    #[error("shard stream for bundle {bundle} shard {shard} ended after {received_bytes} bytes without a finish message; nothing was stored")]
    StreamCut {
        bundle: String,
        shard: u32,
        received_bytes: u64,
    },

    #[error("shard stream for bundle {bundle} shard {shard} was idle for {idle_ms} ms; nothing was stored")]
    IdleTimeout {
        bundle: String,
        shard: u32,
        idle_ms: u64,
    },

    #[error("shard stream for bundle {bundle} shard {shard} does not match its finish message ({reason}); nothing was stored")]
    StreamMismatch {
        bundle: String,
        shard: u32,
        reason: String,
    },

    #[error("node {address} is unreachable: {reason}")]
    Unreachable { address: String, reason: String },

    #[error("node {address} answered {code:?}: {message}")]
    Remote {
        address: String,
        code: Code,
        message: String,
    },

    #[error(transparent)]
    Disk(#[from] DiskError),

    // ---- Public archive API ----
    #[error("bundle {bundle} does not exist{detail}; list bundles with `bitmountain ls`")]
    UnknownBundle { bundle: String, detail: String },

    #[error("bundle {bundle} has no file {path:?}; list its files with `bitmountain ls {bundle}`")]
    UnknownPath { bundle: String, path: String },

    #[error("upload rejected, file {path:?}: {problem}; nothing was stored")]
    BadPath { path: String, problem: String },

    #[error("upload rejected: more than {limit} files in one bundle; split it into several bundles. Nothing was stored")]
    TooManyFiles { limit: u64 },

    #[error("upload rejected: {reason}; nothing was stored")]
    BadUpload { reason: String },

    #[error(
        "upload rejected: file {path:?} has SHA-256 {actual}, but its sender expected {expected}: \
         the file changed or was damaged before it arrived; nothing was stored, check the file \
         and upload the bundle again"
    )]
    DigestMismatch {
        path: String,
        expected: String,
        actual: String,
    },

    #[error("a message was over the size limit ({detail}); send file data in pieces of at most 4 MiB. Nothing was stored")]
    MessageTooLarge { detail: String },

    #[error("upload incomplete: {reason}; nothing was stored, upload the bundle again")]
    UploadIncomplete { reason: String },

    #[error("upload idle for {idle_ms} ms (no message from the client); nothing was stored, upload the bundle again")]
    UploadIdle { idle_ms: u64 },

    #[error("bundle {bundle}: only {durable} of {total} shards became durable and {needed} are needed to survive one more failure ({failures}); nothing was stored. Check the named nodes (`bitmountain status`) and upload again")]
    NotEnoughShards {
        bundle: String,
        durable: usize,
        total: usize,
        needed: usize,
        failures: String,
    },

    #[error("bundle {bundle}: bytes {offset}..{end} cannot be read: {reason}. More shards are unavailable than the code tolerates; bring the nodes named in `bitmountain status` back")]
    Unrecoverable {
        bundle: String,
        offset: u64,
        end: u64,
        reason: String,
    },

    #[error("bundle {bundle} is damaged: {reason}")]
    Damaged { bundle: String, reason: String },

    #[error("range out of bounds: {reason}")]
    BadRange { reason: String },

    #[error("{what}: the limit of {limit} is reached; retry later")]
    Overloaded { what: &'static str, limit: usize },

    #[error("metadata group: {0}")]
    Meta(#[from] MetaError),

    /// The caller's token does not allow this (its permission or its scope).
    #[error("{0}")]
    Access(#[from] bitmountain_auth::AuthError),

    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

impl NodeError {
    /// A stable, machine-readable name of the error, sent in `x-bitmountain-error` on every
    /// status a node sends, so callers can tell a node's answer from a transport failure without
    /// parsing messages.
    pub fn kind(&self) -> ErrorKind {
        match self {
            NodeError::UnknownDisk { .. } => ErrorKind::UnknownDisk,
            NodeError::BadRequest { .. } => ErrorKind::BadRequest,
            NodeError::StreamCut { .. } => ErrorKind::StreamCut,
            NodeError::IdleTimeout { .. } => ErrorKind::IdleTimeout,
            NodeError::StreamMismatch { .. } => ErrorKind::StreamMismatch,
            NodeError::Unreachable { .. } => ErrorKind::Unreachable,
            NodeError::Remote { .. } => ErrorKind::Remote,
            NodeError::Disk(DiskError::ShardNotFound { .. }) => ErrorKind::ShardNotFound,
            NodeError::Disk(DiskError::RangeOutOfBounds { .. }) => ErrorKind::RangeOutOfBounds,
            NodeError::Disk(_) => ErrorKind::Disk,
            NodeError::UnknownBundle { .. } => ErrorKind::UnknownBundle,
            NodeError::Access(e) => e.kind(),
            NodeError::UnknownPath { .. } => ErrorKind::UnknownPath,
            NodeError::BadPath { .. } => ErrorKind::BadPath,
            NodeError::TooManyFiles { .. } => ErrorKind::TooManyFiles,
            NodeError::BadUpload { .. } => ErrorKind::BadUpload,
            NodeError::DigestMismatch { .. } => ErrorKind::DigestMismatch,
            NodeError::MessageTooLarge { .. } => ErrorKind::MessageTooLarge,
            NodeError::UploadIncomplete { .. } => ErrorKind::UploadIncomplete,
            NodeError::UploadIdle { .. } => ErrorKind::UploadIdle,
            NodeError::NotEnoughShards { .. } => ErrorKind::NotEnoughNodes,
            NodeError::Unrecoverable { .. } => ErrorKind::Unrecoverable,
            NodeError::Damaged { .. } => ErrorKind::Damaged,
            NodeError::BadRange { .. } => ErrorKind::BadRange,
            NodeError::Overloaded { .. } => ErrorKind::Overloaded,
            NodeError::Meta(MetaError::Unplaceable { .. }) => ErrorKind::NotEnoughNodes,
            NodeError::Meta(MetaError::NoMember { .. }) => ErrorKind::MetaUnavailable,
            NodeError::Meta(e) => e.kind(),
            NodeError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The error for an upload the bundle writer refused.
    pub fn from_upload(err: BundleError) -> Self {
        match err {
            BundleError::InvalidPath { path, problem } => NodeError::BadPath {
                path,
                problem: problem.to_string(),
            },
            e @ (BundleError::NonUtf8Path { .. }
            | BundleError::DuplicatePath { .. }
            | BundleError::PathConflict { .. }) => NodeError::BadPath {
                path: match &e {
                    BundleError::NonUtf8Path { path }
                    | BundleError::DuplicatePath { path }
                    | BundleError::PathConflict { path, .. } => path.clone(),
                    _ => String::new(),
                },
                problem: e.to_string(),
            },
            BundleError::TooManyFiles { limit } => NodeError::TooManyFiles { limit },
            BundleError::Sha256Mismatch {
                path,
                expected,
                actual,
            } => NodeError::DigestMismatch {
                path,
                expected,
                actual,
            },
            other => NodeError::BadUpload {
                reason: other.to_string(),
            },
        }
    }

    /// Whether a peer node's answer means the shard is not there (missing, truncated, or its
    /// disk is gone), as opposed to the node being unreachable.
    pub fn is_shard_damage(&self) -> bool {
        match self {
            NodeError::Disk(
                DiskError::ShardNotFound { .. }
                | DiskError::RangeOutOfBounds { .. }
                | DiskError::Io { .. }
                | DiskError::IdentityChanged { .. }
                | DiskError::NoIdentity { .. },
            ) => true,
            NodeError::Remote { code, .. } => {
                matches!(code, Code::NotFound | Code::OutOfRange | Code::DataLoss)
            }
            _ => false,
        }
    }
}

impl From<ErasureError> for NodeError {
    fn from(err: ErasureError) -> Self {
        NodeError::Internal(format!("erasure coding: {err}"))
    }
}

impl From<NodeError> for Status {
    fn from(err: NodeError) -> Status {
        let code = match &err {
            // A peer's answer passes on with the peer's code.
            NodeError::Remote { code, .. } => *code,
            // The caller asked for more than one read may return; the disk itself is fine.
            NodeError::Disk(DiskError::ReadTooLarge { .. }) => Code::InvalidArgument,
            // Placement found too few failure domains: only more nodes help, not a retry (the
            // same kind for shards that did not become durable is `Unavailable`).
            NodeError::Meta(MetaError::Unplaceable { .. }) => Code::FailedPrecondition,
            // The metadata group's own code, which differs from its kind's for a status its
            // client could not map (`Rpc`).
            NodeError::Meta(e) => e.code(),
            e => e.kind().code(),
        };
        let mut status = Status::new(code, err.to_string());
        match &err {
            // A status the metadata client could not map goes on with the kind text it came
            // with, which may name a kind of a newer member.
            NodeError::Meta(e @ MetaError::Rpc { .. }) => {
                set_kind_header(&mut status, e.kind_name())
            }
            e => e.kind().set_header(&mut status),
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitmountain_proto::error_kind::kind_header;

    fn sent(err: NodeError) -> (Code, String) {
        let status = Status::from(err);
        let kind = kind_header(&status).unwrap_or_default().to_owned();
        (status.code(), kind)
    }

    /// The kinds whose code is not their kind's default keep the codes they were sent with.
    #[test]
    fn codes_that_differ_from_the_kind_default() {
        let not_durable = NodeError::NotEnoughShards {
            bundle: "b".into(),
            durable: 3,
            total: 6,
            needed: 5,
            failures: "x".into(),
        };
        assert_eq!(
            sent(not_durable),
            (Code::Unavailable, "not_enough_nodes".into())
        );
        let unplaceable = NodeError::Meta(MetaError::Unplaceable {
            shards: 6,
            available: 3,
            level: "host".into(),
        });
        assert_eq!(
            sent(unplaceable),
            (Code::FailedPrecondition, "not_enough_nodes".into())
        );
        let remote = NodeError::Remote {
            address: "a".into(),
            code: Code::DataLoss,
            message: "m".into(),
        };
        assert_eq!(sent(remote), (Code::DataLoss, "remote".into()));
        let too_large = NodeError::Disk(DiskError::ReadTooLarge {
            len_bytes: 2,
            limit_bytes: 1,
        });
        assert_eq!(sent(too_large), (Code::InvalidArgument, "disk".into()));
        let no_member = NodeError::Meta(MetaError::NoMember {
            endpoints: "a".into(),
            timeout_ms: 1,
            last: "l".into(),
        });
        assert_eq!(
            sent(no_member),
            (Code::Unavailable, "meta_unavailable".into())
        );
        // A status the metadata client could not map goes on with its text.
        let unmapped = NodeError::Meta(MetaError::Rpc {
            endpoint: "m".into(),
            kind: "grpc_invalidargument".into(),
            message: "m".into(),
        });
        assert_eq!(
            sent(unmapped),
            (Code::Unavailable, "grpc_invalidargument".into())
        );
        let invalid = NodeError::Meta(MetaError::InvalidArgument {
            field: bitmountain_meta_client::error::Field::Label,
            reason: "r".into(),
        });
        assert_eq!(
            sent(invalid),
            (Code::InvalidArgument, "invalid_argument".into())
        );
    }
}
