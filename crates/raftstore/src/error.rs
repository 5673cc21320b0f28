//! The raftstore's error type and its one mapping to wire error kinds.

use std::path::PathBuf;

use bitmountain_proto::ErrorKind;

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

impl RaftStoreError {
    /// The kind this error travels as: the one mapping of replica errors to kinds, used by the
    /// metadata service without a `tonic::Status` in between.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RaftStoreError::NotLeader { .. } => ErrorKind::NotLeader,
            RaftStoreError::ProposalDropped { .. }
            | RaftStoreError::Raft(raft::Error::ProposalDropped) => ErrorKind::ProposalDropped,
            RaftStoreError::Overloaded { .. } => ErrorKind::Overloaded,
            RaftStoreError::Stopped => ErrorKind::Stopped,
            RaftStoreError::Timeout { .. } => ErrorKind::Timeout,
            RaftStoreError::UnknownMember { .. } => ErrorKind::UnknownMember,
            RaftStoreError::BadMembership { .. } => ErrorKind::BadMembership,
            RaftStoreError::FaultInjectionDisabled => ErrorKind::FaultInjectionDisabled,
            RaftStoreError::Db { .. }
            | RaftStoreError::Io { .. }
            | RaftStoreError::Corrupt { .. }
            | RaftStoreError::Raft(_)
            | RaftStoreError::WrongMemberId { .. } => ErrorKind::Internal,
        }
    }

    /// The leader's address a `NotLeader` names, for the caller to redirect to.
    pub fn leader_address(&self) -> Option<&str> {
        match self {
            RaftStoreError::NotLeader { leader_address, .. } => leader_address.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_leader_hints() {
        let not_leader = RaftStoreError::NotLeader {
            member_id: 2,
            leader_id: Some(1),
            leader_address: Some("127.0.0.1:7001".into()),
        };
        assert_eq!(not_leader.kind(), ErrorKind::NotLeader);
        assert_eq!(not_leader.leader_address(), Some("127.0.0.1:7001"));
        let dropped = RaftStoreError::Raft(raft::Error::ProposalDropped);
        assert_eq!(dropped.kind(), ErrorKind::ProposalDropped);
        assert_eq!(dropped.leader_address(), None);
        let corrupt = RaftStoreError::Corrupt { what: "x".into() };
        assert_eq!(corrupt.kind(), ErrorKind::Internal);
        assert_eq!(
            RaftStoreError::Overloaded {
                queue: "proposals",
                limit: 1
            }
            .kind()
            .code(),
            tonic::Code::ResourceExhausted
        );
    }
}
