//! The node's error type, and its one conversion into `tonic::Status`.

use bitmountain_bundle::BundleError;
use bitmountain_disk::DiskError;
use bitmountain_erasure::ErasureError;
use bitmountain_meta_client::MetaError;
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

    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

/// Metadata key on every status a node sends, with a stable kind (`unknown_disk`, ...), so
/// callers can tell a node's answer from a transport failure without parsing messages.
pub const ERROR_KIND_HEADER: &str = "x-bitmountain-error";

impl NodeError {
    /// A stable, machine-readable name of the error.
    pub fn kind(&self) -> &str {
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
            NodeError::UnknownBundle { .. } => "unknown_bundle",
            NodeError::UnknownPath { .. } => "unknown_path",
            NodeError::BadPath { .. } => "bad_path",
            NodeError::TooManyFiles { .. } => "too_many_files",
            NodeError::BadUpload { .. } => "bad_upload",
            NodeError::MessageTooLarge { .. } => "message_too_large",
            NodeError::UploadIncomplete { .. } => "upload_incomplete",
            NodeError::UploadIdle { .. } => "upload_idle",
            NodeError::NotEnoughShards { .. } => "not_enough_nodes",
            NodeError::Unrecoverable { .. } => "unrecoverable",
            NodeError::Damaged { .. } => "damaged",
            NodeError::BadRange { .. } => "bad_range",
            NodeError::Overloaded { .. } => "overloaded",
            NodeError::Meta(MetaError::Unplaceable { .. }) => "not_enough_nodes",
            NodeError::Meta(MetaError::NoMember { .. }) => "meta_unavailable",
            NodeError::Meta(e) => e.kind(),
            NodeError::Internal(_) => "internal",
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
            NodeError::UnknownBundle { .. } | NodeError::UnknownPath { .. } => Code::NotFound,
            NodeError::BadPath { .. }
            | NodeError::TooManyFiles { .. }
            | NodeError::BadUpload { .. } => Code::InvalidArgument,
            NodeError::MessageTooLarge { .. } => Code::ResourceExhausted,
            NodeError::UploadIncomplete { .. } => Code::Aborted,
            NodeError::UploadIdle { .. } => Code::DeadlineExceeded,
            NodeError::NotEnoughShards { .. } => Code::Unavailable,
            NodeError::Unrecoverable { .. } | NodeError::Damaged { .. } => Code::DataLoss,
            NodeError::BadRange { .. } => Code::OutOfRange,
            NodeError::Overloaded { .. } => Code::ResourceExhausted,
            NodeError::Meta(MetaError::UnknownBundle { .. }) => Code::NotFound,
            NodeError::Meta(MetaError::Unplaceable { .. }) => Code::FailedPrecondition,
            NodeError::Meta(MetaError::InvalidCode { .. })
            | NodeError::Meta(MetaError::InvalidArgument { .. }) => Code::InvalidArgument,
            NodeError::Meta(e) => tonic::Status::from(e.clone()).code(),
            NodeError::Internal(_) => Code::Internal,
        };
        let mut status = Status::new(code, err.to_string());
        if let Ok(kind) = err.kind().parse() {
            status.metadata_mut().insert(ERROR_KIND_HEADER, kind);
        }
        status
    }
}
