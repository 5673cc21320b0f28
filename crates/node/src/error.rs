//! The node's error type, and its one conversion into `tonic::Status`.

use bitmountain_disk::DiskError;
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

    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

/// Metadata key on every status a node sends, with a stable kind (`unknown_disk`, ...), so
/// callers can tell a node's answer from a transport failure without parsing messages.
pub const ERROR_KIND_HEADER: &str = "x-bitmountain-error";

impl NodeError {
    /// A stable, machine-readable name of the error.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeError::UnknownDisk { .. } => "unknown_disk",
            NodeError::BadRequest { .. } => "bad_request",
            NodeError::StreamCut { .. } => "stream_cut",
            NodeError::IdleTimeout { .. } => "idle_timeout",
            NodeError::StreamMismatch { .. } => "stream_mismatch",
            NodeError::Unreachable { .. } => "unreachable",
            NodeError::Remote { .. } => "remote",
            NodeError::Disk(DiskError::ShardNotFound { .. }) => "shard_not_found",
            NodeError::Disk(DiskError::RangeOutOfBounds { .. }) => "range_out_of_bounds",
            NodeError::Disk(_) => "disk",
            NodeError::Internal(_) => "internal",
        }
    }
}

impl From<NodeError> for Status {
    fn from(err: NodeError) -> Status {
        let code = match &err {
            NodeError::UnknownDisk { .. } => Code::NotFound,
            NodeError::BadRequest { .. } | NodeError::StreamMismatch { .. } => {
                Code::InvalidArgument
            }
            NodeError::StreamCut { .. } => Code::Aborted,
            NodeError::IdleTimeout { .. } => Code::DeadlineExceeded,
            NodeError::Unreachable { .. } => Code::Unavailable,
            NodeError::Remote { code, .. } => *code,
            NodeError::Disk(disk) => match disk {
                DiskError::ShardNotFound { .. } => Code::NotFound,
                DiskError::RangeOutOfBounds { .. } => Code::OutOfRange,
                DiskError::ReadTooLarge { .. } => Code::InvalidArgument,
                // The disk is not usable: callers treat the shard as unavailable and read others.
                DiskError::NoIdentity { .. }
                | DiskError::IdentityChanged { .. }
                | DiskError::WrongCluster { .. }
                | DiskError::BadIdentity { .. }
                | DiskError::NotEmpty { .. }
                | DiskError::Io { .. } => Code::Unavailable,
            },
            NodeError::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, err.to_string());
        status.metadata_mut().insert(
            ERROR_KIND_HEADER,
            tonic::metadata::MetadataValue::from_static(err.kind()),
        );
        status
    }
}
