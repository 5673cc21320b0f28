//! The machine-readable error kinds every layer sends in `x-bitmountain-error`, and the metadata
//! keys that carry them. Hand-written, not generated: the kinds are part of the wire contract
//! (tests, the Python client and operators' scripts compare the names), so they live here, in the
//! one crate every sender and receiver depends on, once.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// gRPC metadata key carrying the machine-readable error kind ([`ErrorKind::as_str`]).
pub const ERROR_KIND_KEY: &str = "x-bitmountain-error";
/// gRPC metadata key carrying the leader's address on `not_leader`.
pub const LEADER_KEY: &str = "x-bitmountain-leader";
/// gRPC metadata key carrying a metadata error's typed details as JSON, so the Rust client gets
/// the variant (with its ids) back.
pub const DETAIL_KEY: &str = "x-bitmountain-error-detail";

/// Declares [`ErrorKind`] from one table, so the variants, their wire names, default codes,
/// retryability and [`ErrorKind::ALL`] cannot disagree.
macro_rules! error_kinds {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $code:ident, $retry:literal; )*) => {
        /// A stable, machine-readable error kind. Its name ([`ErrorKind::as_str`]) travels in
        /// [`ERROR_KIND_KEY`]; callers act on it without parsing messages.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorKind {
            $( $(#[$doc])* $variant, )*
            /// A status without a kind header, named after its gRPC code (`grpc_unavailable`):
            /// a transport failure or a server that is not ours. Not sent by our servers
            /// themselves, but a node relays it when the metadata group's client met one.
            Grpc(Code),
        }

        impl ErrorKind {
            /// Every kind: the named ones, then one [`ErrorKind::Grpc`] per gRPC code.
            pub const ALL: &'static [ErrorKind] = &[
                $( ErrorKind::$variant, )*
                ErrorKind::Grpc(Code::Ok),
                ErrorKind::Grpc(Code::Cancelled),
                ErrorKind::Grpc(Code::Unknown),
                ErrorKind::Grpc(Code::InvalidArgument),
                ErrorKind::Grpc(Code::DeadlineExceeded),
                ErrorKind::Grpc(Code::NotFound),
                ErrorKind::Grpc(Code::AlreadyExists),
                ErrorKind::Grpc(Code::PermissionDenied),
                ErrorKind::Grpc(Code::ResourceExhausted),
                ErrorKind::Grpc(Code::FailedPrecondition),
                ErrorKind::Grpc(Code::Aborted),
                ErrorKind::Grpc(Code::OutOfRange),
                ErrorKind::Grpc(Code::Unimplemented),
                ErrorKind::Grpc(Code::Internal),
                ErrorKind::Grpc(Code::Unavailable),
                ErrorKind::Grpc(Code::DataLoss),
                ErrorKind::Grpc(Code::Unauthenticated),
            ];

            /// The stable wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorKind::$variant => $name, )*
                    ErrorKind::Grpc(code) => grpc_name(code),
                }
            }

            /// The gRPC code a status of this kind carries unless its sender overrides it (see
            /// the node's conversion, where one kind is sent with two codes).
            pub fn code(self) -> Code {
                match self {
                    $( ErrorKind::$variant => Code::$code, )*
                    ErrorKind::Grpc(code) => code,
                }
            }

            /// Whether the same request may succeed if retried later or on another member
            /// (the metadata client retries these until its deadline).
            pub fn is_retryable(self) -> bool {
                match self {
                    $( ErrorKind::$variant => $retry, )*
                    ErrorKind::Grpc(_) => false,
                }
            }
        }
    };
}

error_kinds! {
    // The metadata group's own errors (`MetaError`).
    /// No bundle with this id.
    UnknownBundle = "unknown_bundle", NotFound, false;
    /// No node with this id.
    UnknownNode = "unknown_node", NotFound, false;
    /// No disk with this id (the metadata group's map, or a node that does not serve it).
    UnknownDisk = "unknown_disk", NotFound, false;
    /// The disk belongs to another node.
    DiskOwnedByOtherNode = "disk_owned_by_other_node", FailedPrecondition, false;
    /// Compare-and-set on the placement generation failed.
    WrongGeneration = "wrong_generation", FailedPrecondition, false;
    /// A placement that does not fit the bundle or the cluster map.
    MalformedPlacement = "malformed_placement", InvalidArgument, false;
    /// The cluster cannot place this code.
    Unplaceable = "unplaceable", ResourceExhausted, false;
    /// The code is invalid.
    InvalidCode = "invalid_code", InvalidArgument, false;
    /// A request field is invalid.
    InvalidArgument = "invalid_argument", InvalidArgument, false;
    /// The bundle is not in the state the operation needs.
    WrongState = "wrong_state", FailedPrecondition, false;
    /// The allocation expired before the commit.
    AllocationExpired = "allocation_expired", FailedPrecondition, false;
    /// A disk chosen for placement changed state before the allocation applied.
    PlacementStale = "placement_stale", Aborted, true;
    /// Too few shards are durable to commit.
    TooManyMissingShards = "too_many_missing_shards", FailedPrecondition, false;
    /// A node or disk to be removed still holds shards.
    StillHoldsShards = "still_holds_shards", FailedPrecondition, false;
    /// The group cannot switch to the value format asked for.
    ValueFormatRefused = "value_format_refused", FailedPrecondition, false;
    /// A delete of a bundle whose retention has not ended.
    Retained = "retained", FailedPrecondition, false;
    /// A delete of a bundle under a legal hold.
    LegalHold = "legal_hold", FailedPrecondition, false;
    /// No access token with this id.
    UnknownToken = "unknown_token", NotFound, false;
    /// A token change the table refuses (an id taken, the first admin token already made,
    /// the table full).
    TokenRefused = "token_refused", FailedPrecondition, false;
    /// Stored bytes did not decode.
    Corrupt = "corrupt", DataLoss, false;
    /// No metadata member answered in time (client side).
    NoMember = "no_member", Unavailable, false;

    // The replica's errors (`RaftStoreError`) and the metadata service's waits on it.
    /// This member is not the leader; the leader's address may be in [`LEADER_KEY`].
    NotLeader = "not_leader", Unavailable, true;
    /// A proposal was lost to a leadership change.
    ProposalDropped = "proposal_dropped", Unavailable, true;
    /// A bounded queue is full (a member's or a node's).
    Overloaded = "overloaded", ResourceExhausted, true;
    /// The Raft driver has stopped.
    Stopped = "stopped", Unavailable, true;
    /// An operation did not finish in time.
    Timeout = "timeout", DeadlineExceeded, true;
    /// The member is installing a snapshot and cannot serve stale reads; another member can.
    InstallingSnapshot = "installing_snapshot", Unavailable, true;
    /// A membership operation named a member that is not in the group.
    UnknownMember = "unknown_member", NotFound, false;
    /// A membership change was invalid (or another one is in progress).
    BadMembership = "bad_membership", FailedPrecondition, false;
    /// Test fault injection is off on this member.
    FaultInjectionDisabled = "fault_injection_disabled", PermissionDenied, false;
    /// Anything else that went wrong on the server (a member's or a node's).
    Internal = "internal", Internal, false;

    // The storage node's errors (`NodeError`).
    /// A malformed internal request.
    BadRequest = "bad_request", InvalidArgument, false;
    /// A shard stream ended without its finish message.
    StreamCut = "stream_cut", Aborted, false;
    /// A shard stream went idle.
    IdleTimeout = "idle_timeout", DeadlineExceeded, false;
    /// A shard stream does not match its finish message.
    StreamMismatch = "stream_mismatch", InvalidArgument, false;
    /// A peer node could not be reached.
    Unreachable = "unreachable", Unavailable, false;
    /// A peer node answered with an error; sent with the peer's own code, not this default.
    Remote = "remote", Unknown, false;
    /// No such shard on the disk.
    ShardNotFound = "shard_not_found", NotFound, false;
    /// A range past a shard's end.
    RangeOutOfBounds = "range_out_of_bounds", OutOfRange, false;
    /// The disk is not usable (a read too large for it is sent as `InvalidArgument`).
    Disk = "disk", Unavailable, false;
    /// The bundle has no file at this path.
    UnknownPath = "unknown_path", NotFound, false;
    /// An upload's file path is refused.
    BadPath = "bad_path", InvalidArgument, false;
    /// An upload has more files than one bundle may hold.
    TooManyFiles = "too_many_files", InvalidArgument, false;
    /// An upload is refused for another reason.
    BadUpload = "bad_upload", InvalidArgument, false;
    /// A file's bytes differ from the SHA-256 its sender gave in advance (fixity at ingest).
    DigestMismatch = "digest_mismatch", InvalidArgument, false;
    /// A message was over the size limit.
    MessageTooLarge = "message_too_large", ResourceExhausted, false;
    /// An upload stream ended early.
    UploadIncomplete = "upload_incomplete", Aborted, false;
    /// An upload stream went idle.
    UploadIdle = "upload_idle", DeadlineExceeded, false;
    /// Too few shards became durable, or the cluster cannot place the code (that one is sent
    /// as `FailedPrecondition`: only more nodes help, not a retry).
    NotEnoughNodes = "not_enough_nodes", Unavailable, false;
    /// More shards are unavailable than the code tolerates.
    Unrecoverable = "unrecoverable", DataLoss, false;
    /// The bundle's structure is damaged.
    Damaged = "damaged", DataLoss, false;
    /// A read range outside the file.
    BadRange = "bad_range", OutOfRange, false;
    /// The node cannot reach the metadata group.
    MetaUnavailable = "meta_unavailable", Unavailable, false;

    // Access control (`AuthError` in `crates/auth/src/error.rs`).
    /// No usable credentials: the token is missing, malformed, unknown, expired or revoked
    /// (the message says which), or a certificate-only method got neither.
    Unauthenticated = "unauthenticated", Unauthenticated, false;
    /// The caller is known but may not do this: the message names the permission, the
    /// certificate role or the scope label that was missing.
    PermissionDenied = "permission_denied", PermissionDenied, false;
    /// Client side: the server speaks TLS and this client spoke plaintext (no `--ca`).
    TlsRequired = "tls_required", Unavailable, false;
}

impl ErrorKind {
    /// The kind named `name`, if this binary knows it.
    pub fn parse(name: &str) -> Option<Self> {
        ErrorKind::ALL.iter().copied().find(|k| k.as_str() == name)
    }

    /// The kind of a status: its header's, or [`ErrorKind::Grpc`] of its code when it has none.
    /// `None` when the header names a kind this binary does not know (a newer peer's).
    pub fn of_status(status: &Status) -> Option<Self> {
        match kind_header(status) {
            Some(name) => ErrorKind::parse(name),
            None => Some(ErrorKind::Grpc(status.code())),
        }
    }

    /// Sets `status`'s kind header to this kind.
    pub fn set_header(self, status: &mut Status) {
        status
            .metadata_mut()
            .insert(ERROR_KIND_KEY, MetadataValue::from_static(self.as_str()));
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets callers and tests compare a kind with its wire name (`kind == "not_leader"`).
impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// `grpc_` and the code's name in lower case without separators, as `format!("{code:?}")`
/// spells it (the names clients have always seen).
fn grpc_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "grpc_ok",
        Code::Cancelled => "grpc_cancelled",
        Code::Unknown => "grpc_unknown",
        Code::InvalidArgument => "grpc_invalidargument",
        Code::DeadlineExceeded => "grpc_deadlineexceeded",
        Code::NotFound => "grpc_notfound",
        Code::AlreadyExists => "grpc_alreadyexists",
        Code::PermissionDenied => "grpc_permissiondenied",
        Code::ResourceExhausted => "grpc_resourceexhausted",
        Code::FailedPrecondition => "grpc_failedprecondition",
        Code::Aborted => "grpc_aborted",
        Code::OutOfRange => "grpc_outofrange",
        Code::Unimplemented => "grpc_unimplemented",
        Code::Internal => "grpc_internal",
        Code::Unavailable => "grpc_unavailable",
        Code::DataLoss => "grpc_dataloss",
        Code::Unauthenticated => "grpc_unauthenticated",
    }
}

/// The kind header's text, if `status` has one (it came from one of our servers). It may name a
/// kind this binary does not know.
pub fn kind_header(status: &Status) -> Option<&str> {
    header(status, ERROR_KIND_KEY)
}

/// Sets `status`'s kind header to `name`, which may be a kind this binary does not know (one
/// relayed from a newer peer); a name that is not a valid header value is left out.
pub fn set_kind_header(status: &mut Status, name: &str) {
    set_header(status, ERROR_KIND_KEY, name);
}

/// The leader's address a `not_leader` status names.
pub fn leader_header(status: &Status) -> Option<&str> {
    header(status, LEADER_KEY)
}

/// Names the leader's address on a `not_leader` status (left out if not a valid header value).
pub fn set_leader_header(status: &mut Status, address: &str) {
    set_header(status, LEADER_KEY, address);
}

fn header<'a>(status: &'a Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).and_then(|v| v.to_str().ok())
}

fn set_header(status: &mut Status, key: &'static str, value: &str) {
    if let Ok(v) = value.parse() {
        status.metadata_mut().insert(key, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_a_status() {
        let mut names = std::collections::HashSet::new();
        for &kind in ErrorKind::ALL {
            assert!(names.insert(kind.as_str()), "{kind:?}: duplicate name");
            assert_eq!(ErrorKind::parse(kind.as_str()), Some(kind));
            let mut status = Status::new(kind.code(), "message");
            kind.set_header(&mut status);
            assert_eq!(kind_header(&status), Some(kind.as_str()));
            assert_eq!(ErrorKind::of_status(&status), Some(kind));
            assert_eq!(status.code(), kind.code());
        }
        assert_eq!(ErrorKind::parse("no_such_kind"), None);
    }

    #[test]
    fn grpc_kinds_cover_every_code_and_keep_their_old_names() {
        for i in 0..=16 {
            let code = Code::from_i32(i);
            let kind = ErrorKind::Grpc(code);
            assert!(ErrorKind::ALL.contains(&kind), "{code:?}");
            assert_eq!(kind.as_str(), format!("grpc_{code:?}").to_lowercase());
            // A status without a header is named after its code.
            assert_eq!(ErrorKind::of_status(&Status::new(code, "m")), Some(kind));
        }
    }

    #[test]
    fn unknown_names_survive_as_text() {
        let mut status = Status::unavailable("m");
        set_kind_header(&mut status, "kind_of_a_newer_peer");
        assert_eq!(kind_header(&status), Some("kind_of_a_newer_peer"));
        assert_eq!(ErrorKind::of_status(&status), None);
        set_leader_header(&mut status, "127.0.0.1:7001");
        assert_eq!(leader_header(&status), Some("127.0.0.1:7001"));
        // Not a valid header value: left out rather than failing the status.
        set_leader_header(&mut status, "bad\naddress");
        assert_eq!(leader_header(&status), Some("127.0.0.1:7001"));
    }
}
