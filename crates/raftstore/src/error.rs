//! The raftstore's error type and its one conversion to a gRPC status.

use std::path::PathBuf;

/// Result with [`RaftStoreError`].
pub type Result<T, E = RaftStoreError> = std::result::Result<T, E>;

/// Everything that can go wrong in the replica.
#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    /// RocksDB failed; the member cannot continue safely on this disk.
    #[error("RocksDB at {path}: {source} (check the disk and free space; the member stops rather than lose writes)")]
    Db {
        /// DB directory.
        path: PathBuf,
        /// The RocksDB error.
        source: rocksdb::Error,
    },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Persisted bytes did not decode.
    #[error("corrupt metadata store: {what} (restore this member from a fresh copy: remove it with `bitmountain member remove` and add it back with an empty --data)")]
    Corrupt {
        /// What failed to decode.
        what: String,
    },
    /// raft-rs refused an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// This member is not the leader.
    #[error("member {member_id} is not the leader; {}", match (leader_id, leader_address) {
        (Some(id), Some(a)) => format!("the leader is member {id} at {a}"),
        (Some(id), None) => format!("the leader is member {id} (address unknown)"),
        _ => "no leader is known yet (election in progress or no quorum); retry shortly".to_string(),
    })]
    NotLeader {
        /// The member that answered.
        member_id: u64,
        /// The leader it knows of.
        leader_id: Option<u64>,
        /// The leader's address.
        leader_address: Option<String>,
    },
    /// A proposal was overwritten by another leader's entry or its leader stepped down before it
    /// was applied. It may or may not have been applied; retry (requests are idempotent).
    #[error("proposal at index {index} (term {term}) was not confirmed: leadership changed; retry the request")]
    ProposalDropped {
        /// Log index it was proposed at.
        index: u64,
        /// Term it was proposed in.
        term: u64,
    },
    /// A bounded queue is full.
    #[error("member is overloaded: queue {queue} is full ({limit} entries); retry with backoff")]
    Overloaded {
        /// Queue name.
        queue: &'static str,
        /// Its limit.
        limit: usize,
    },
    /// The driver has stopped (process shutting down).
    #[error("the Raft driver has stopped")]
    Stopped,
    /// An operation did not finish in time.
    #[error("{what} did not finish within {timeout_ms} ms")]
    Timeout {
        /// The operation.
        what: String,
        /// The deadline.
        timeout_ms: u64,
    },
    /// A membership operation named a member that is not in the group.
    #[error("member {id} is not in the group")]
    UnknownMember {
        /// Member id.
        id: u64,
    },
    /// A membership operation was invalid.
    #[error("invalid membership change: {reason}")]
    BadMembership {
        /// Why.
        reason: String,
    },
    /// The data directory belongs to another member id.
    #[error("data directory belongs to member {stored}, not {given}: pass --id {stored} or use another --data")]
    WrongMemberId {
        /// Id stored in the data directory.
        stored: u64,
        /// Id given on the command line.
        given: u64,
    },
    /// Test fault injection is off on this member.
    #[error("fault injection is disabled on this member (start it with --enable-fault-injection)")]
    FaultInjectionDisabled,
}

impl From<RaftStoreError> for tonic::Status {
    fn from(e: RaftStoreError) -> Self {
        let (code, kind) = match &e {
            RaftStoreError::NotLeader { .. } => (tonic::Code::Unavailable, "not_leader"),
            RaftStoreError::ProposalDropped { .. } => {
                (tonic::Code::Unavailable, "proposal_dropped")
            }
            RaftStoreError::Overloaded { .. } => (tonic::Code::ResourceExhausted, "overloaded"),
            RaftStoreError::Stopped => (tonic::Code::Unavailable, "stopped"),
            RaftStoreError::Timeout { .. } => (tonic::Code::DeadlineExceeded, "timeout"),
            RaftStoreError::UnknownMember { .. } => (tonic::Code::NotFound, "unknown_member"),
            RaftStoreError::BadMembership { .. } => {
                (tonic::Code::FailedPrecondition, "bad_membership")
            }
            RaftStoreError::FaultInjectionDisabled => {
                (tonic::Code::PermissionDenied, "fault_injection_disabled")
            }
            RaftStoreError::Raft(raft::Error::ProposalDropped) => {
                (tonic::Code::Unavailable, "proposal_dropped")
            }
            _ => (tonic::Code::Internal, "internal"),
        };
        let mut status = tonic::Status::new(code, e.to_string());
        status.metadata_mut().insert(
            ERROR_KIND_KEY,
            tonic::metadata::MetadataValue::from_static(kind),
        );
        if let RaftStoreError::NotLeader {
            leader_address: Some(addr),
            ..
        } = &e
        {
            if let Ok(v) = addr.parse() {
                status.metadata_mut().insert(LEADER_KEY, v);
            }
        }
        status
    }
}

/// gRPC metadata key carrying the machine-readable error kind.
pub const ERROR_KIND_KEY: &str = "x-bitmountain-error";
/// gRPC metadata key carrying the leader's address on `not_leader`.
pub const LEADER_KEY: &str = "x-bitmountain-leader";
