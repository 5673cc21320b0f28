//! The metadata group's error type, its ONE conversion to a gRPC status, and the client's
//! decoding of statuses back into kinds (a batch item's error travels as a status too:
//! `wire::item_error`).

use serde::{Deserialize, Serialize};

use bitmountain_proto::error_kind::{
    kind_header, leader_header, set_kind_header, set_leader_header,
};
pub use bitmountain_proto::error_kind::{ErrorKind, DETAIL_KEY, ERROR_KIND_KEY, LEADER_KEY};

use crate::types::{BundleId, BundleState, DiskState};

/// Result with [`MetaError`].
pub type Result<T, E = MetaError> = std::result::Result<T, E>;

/// Errors of the metadata group, typed so callers can act on them.
#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize)]
pub enum MetaError {
    /// No bundle with this id (never allocated, aborted, or its allocation expired).
    #[error("unknown bundle {id}: it was never allocated, was aborted, or its allocation expired (allocate a new bundle)")]
    UnknownBundle {
        /// The id.
        id: BundleId,
    },
    /// No node with this id.
    #[error("unknown node {id}: register the node again without an id (it gets a new one)")]
    UnknownNode {
        /// The id.
        id: u64,
    },
    /// No disk with this id.
    #[error("unknown disk {id}: the disk's identity file names a disk this cluster does not know; register it as a new disk")]
    UnknownDisk {
        /// The id.
        id: u64,
    },
    /// The disk belongs to another node.
    #[error("disk {disk_id} belongs to node {owner}, not node {node_id}: was the disk moved? remove it from node {owner} first")]
    DiskOwnedByOtherNode {
        /// Disk.
        disk_id: u64,
        /// Registered owner.
        owner: u64,
        /// Node that claimed it.
        node_id: u64,
    },
    /// Compare-and-set on the placement generation failed.
    #[error("bundle {id}: placement generation is {actual}, not {expected}; re-read the bundle and retry against the current placement")]
    WrongGeneration {
        /// Bundle.
        id: BundleId,
        /// Generation the caller expected.
        expected: u64,
        /// Current generation.
        actual: u64,
    },
    /// A placement that does not fit the bundle or the cluster map.
    #[error("malformed placement for bundle {id}: {reason}")]
    MalformedPlacement {
        /// Bundle.
        id: BundleId,
        /// What is wrong.
        reason: String,
    },
    /// The cluster cannot place this code.
    #[error("cannot place {shards} shards on distinct {level} failure domains: only {available} {level}s have a usable disk (add nodes, use a smaller code, or lower the failure-domain level)")]
    Unplaceable {
        /// k+m.
        shards: usize,
        /// Domains with a usable disk.
        available: usize,
        /// Failure-domain level.
        level: String,
    },
    /// The code is invalid.
    #[error("invalid code: {reason}")]
    InvalidCode {
        /// Why.
        reason: String,
    },
    /// A request field is invalid.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// Field.
        field: Field,
        /// Why.
        reason: String,
    },
    /// The bundle is not in the state the operation needs.
    #[error("bundle {id} is {state:?}: {hint}")]
    WrongState {
        /// Bundle.
        id: BundleId,
        /// Its state.
        state: BundleState,
        /// What to do.
        hint: String,
    },
    /// The allocation expired before the commit.
    #[error("allocation of bundle {id} expired at {expires_unix_ms} ms; upload again under a new allocation")]
    AllocationExpired {
        /// Bundle.
        id: BundleId,
        /// When it expired.
        expires_unix_ms: u64,
    },
    /// A disk chosen for placement changed state before the allocation applied.
    #[error(
        "disk {disk_id} became {state:?} while bundle {id} was being placed; retry the allocation"
    )]
    PlacementStale {
        /// Bundle.
        id: BundleId,
        /// Disk.
        disk_id: u64,
        /// Its state.
        state: DiskState,
    },
    /// Too few shards are durable to commit.
    #[error("bundle {id}: {missing} shards missing but only {tolerated} may be (the bundle must survive one more failure); rewrite the missing shards or abort")]
    TooManyMissingShards {
        /// Bundle.
        id: BundleId,
        /// Missing shards.
        missing: usize,
        /// Allowed.
        tolerated: usize,
    },
    /// The replica failed (not leader, overloaded, storage).
    #[error("{what} still holds {shards} shards: drain it first (`bitmountain {command} drain {id}`) and wait until `bitmountain status` shows it empty")]
    StillHoldsShards {
        what: String,
        command: String,
        id: u64,
        shards: u64,
    },
    /// The group cannot switch to the value format asked for.
    #[error("cannot switch the metadata group to value format {requested}: {reason}")]
    ValueFormatRefused {
        /// Format asked for.
        requested: u32,
        /// Why, naming the members in the way.
        reason: String,
    },
    /// A delete of a bundle under retention.
    #[error(
        "bundle {id} is retained until {until_unix_ms} (Unix ms) and cannot be deleted before \
         then; retention is extended, never shortened"
    )]
    Retained {
        /// The bundle.
        id: BundleId,
        /// Its retention date.
        until_unix_ms: u64,
    },
    /// A delete of a bundle under a legal hold.
    #[error(
        "bundle {id} is under a legal hold ({reason:?}, since {since_unix_ms} Unix ms) and cannot \
         be deleted; clear the hold first (`bitmountain hold clear`)"
    )]
    LegalHold {
        /// The bundle.
        id: BundleId,
        /// The hold's reason.
        reason: String,
        /// When it was set.
        since_unix_ms: u64,
    },
    /// No access token with this id.
    #[error("unknown token {id}: list tokens with `bitmountain token list`")]
    UnknownToken {
        /// The token id (16 hex digits).
        id: String,
    },
    /// The token table refuses the change.
    #[error("token refused: {reason}")]
    TokenRefused {
        /// Why.
        reason: String,
    },
    /// An error that carries a kind, a message and maybe a leader but no typed details: the
    /// replica's (not leader, overloaded, timeout, installing a snapshot, ...). A client also
    /// decodes a known kind whose status came without typed details into it. Never sent as JSON
    /// detail: the kind header, leader header and message are all it has.
    #[error("{message}")]
    #[serde(skip)]
    Raft {
        /// Kind.
        kind: ErrorKind,
        /// Leader's address on `not_leader`.
        leader: Option<String>,
        /// Message.
        message: String,
    },
    /// Stored bytes did not decode.
    #[error("corrupt metadata: {what} (the member's store is damaged; replace the member)")]
    Corrupt {
        /// What.
        what: String,
    },
    /// Client side: an RPC failed with a status this client does not map to a variant.
    #[error("{endpoint}: {kind}: {message}")]
    Rpc {
        /// Member address.
        endpoint: String,
        /// The text of `x-bitmountain-error` (a kind this binary does not know, from a newer
        /// member), or `grpc_<code>` when the status had none ([`ErrorKind::Grpc`]).
        kind: String,
        /// Message.
        message: String,
    },
    /// Client side: the member speaks TLS and this client was given no CA.
    #[error("{}", bitmountain_proto::connect::needs_ca_message(endpoint))]
    TlsRequired {
        /// Member address.
        endpoint: String,
    },
    /// Client side: no member answered in time.
    #[error("no metadata member answered within {timeout_ms} ms (tried {endpoints}); last error: {last}")]
    NoMember {
        /// Members tried.
        endpoints: String,
        /// Deadline.
        timeout_ms: u64,
        /// Last error seen.
        last: String,
    },
}

/// Declares [`Field`] from one table, so the variants, their names and [`Field::ALL`] cannot
/// disagree.
macro_rules! fields {
    ($( $variant:ident = $name:literal, )*) => {
        /// The request field an `InvalidArgument` names. Travels as its name (in the message and
        /// the JSON detail), so a client decodes the same field back.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Field {
            $( #[doc = concat!("`", $name, "`")] $variant, )*
        }

        impl Field {
            /// Every field.
            pub const ALL: &'static [Field] = &[$( Field::$variant, )*];

            /// The name, as in messages and on the wire.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Field::$variant => $name, )*
                }
            }
        }
    };
}

fields! {
    BundleId = "bundle id",
    RequestId = "request_id",
    Label = "label",
    TtlMs = "ttl_ms",
    Sha256 = "sha256",
    IndexOffset = "index_offset",
    MissingShards = "missing_shards",
    ShardIndexes = "shard_indexes",
    RewrittenShards = "rewritten_shards",
    Address = "address",
    State = "state",
    Member = "member",
    Code = "code",
    Bundle = "bundle",
    BundleState = "bundle state",
    MetadataAddress = "metadata address",
    MetadataAddresses = "metadata addresses",
    FailureDomainLevel = "failure domain level",
    Items = "items",
    Item = "item",
    BatchResult = "batch result",
    BatchResults = "batch results",
    Backup = "backup",
    ClusterId = "cluster id",
    Retention = "retention",
    Reason = "reason",
    DataDir = "data",
    Token = "token",
    Role = "role",
    Expiry = "expires",
    Events = "events",
    Agent = "agent",
    Action = "action",
    Outcome = "outcome",
    // A name this binary does not know (from a newer member), shown as the word it stands for.
    Unknown = "field",
}

impl Field {
    /// The field named `name`, if this binary knows it.
    pub fn parse(name: &str) -> Option<Self> {
        Field::ALL.iter().copied().find(|f| f.as_str() == name)
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets callers and tests compare a field with its name (`field == "request_id"`).
impl PartialEq<&str> for Field {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for Field {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Field {
    /// A name this binary does not know decodes as [`Field::Unknown`] rather than losing the
    /// whole error's details.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = std::borrow::Cow::<str>::deserialize(d)?;
        Ok(Field::parse(&name).unwrap_or(Field::Unknown))
    }
}

impl MetaError {
    /// The stable machine-readable kind carried in `x-bitmountain-error`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            MetaError::UnknownBundle { .. } => ErrorKind::UnknownBundle,
            MetaError::UnknownNode { .. } => ErrorKind::UnknownNode,
            MetaError::UnknownDisk { .. } => ErrorKind::UnknownDisk,
            MetaError::DiskOwnedByOtherNode { .. } => ErrorKind::DiskOwnedByOtherNode,
            MetaError::WrongGeneration { .. } => ErrorKind::WrongGeneration,
            MetaError::MalformedPlacement { .. } => ErrorKind::MalformedPlacement,
            MetaError::Unplaceable { .. } => ErrorKind::Unplaceable,
            MetaError::InvalidCode { .. } => ErrorKind::InvalidCode,
            MetaError::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            MetaError::WrongState { .. } => ErrorKind::WrongState,
            MetaError::AllocationExpired { .. } => ErrorKind::AllocationExpired,
            MetaError::PlacementStale { .. } => ErrorKind::PlacementStale,
            MetaError::TooManyMissingShards { .. } => ErrorKind::TooManyMissingShards,
            MetaError::StillHoldsShards { .. } => ErrorKind::StillHoldsShards,
            MetaError::ValueFormatRefused { .. } => ErrorKind::ValueFormatRefused,
            MetaError::UnknownToken { .. } => ErrorKind::UnknownToken,
            MetaError::Retained { .. } => ErrorKind::Retained,
            MetaError::LegalHold { .. } => ErrorKind::LegalHold,
            MetaError::TokenRefused { .. } => ErrorKind::TokenRefused,
            MetaError::Raft { kind, .. } => *kind,
            MetaError::Corrupt { .. } => ErrorKind::Corrupt,
            // A kind this binary does not know is, to it, an unknown gRPC error.
            MetaError::Rpc { kind, .. } => {
                ErrorKind::parse(kind).unwrap_or(ErrorKind::Grpc(tonic::Code::Unknown))
            }
            MetaError::NoMember { .. } => ErrorKind::NoMember,
            MetaError::TlsRequired { .. } => ErrorKind::TlsRequired,
        }
    }

    /// The kind's name as sent in `x-bitmountain-error`: for `Rpc`, the text it came with, so a
    /// node relaying it sends on what it received.
    pub fn kind_name(&self) -> &str {
        match self {
            MetaError::Rpc { kind, .. } => kind,
            e => e.kind().as_str(),
        }
    }

    /// Whether the request may succeed if retried (on the leader, later).
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The gRPC code of this error's status.
    pub fn code(&self) -> tonic::Code {
        match self {
            // Whatever the member said, this client got no usable answer from it.
            MetaError::Rpc { .. } => tonic::Code::Unavailable,
            e => e.kind().code(),
        }
    }

    /// Decodes a status a member answered with (client side).
    pub fn from_status(endpoint: &str, status: &tonic::Status) -> Self {
        if let Some(json) = status
            .metadata()
            .get(DETAIL_KEY)
            .and_then(|v| v.to_str().ok())
        {
            if let Ok(e) = serde_json::from_str::<MetaError>(json) {
                return e;
            }
        }
        let message = status.message().to_string();
        match ErrorKind::of_status(status) {
            Some(ErrorKind::Grpc(_)) | None => MetaError::Rpc {
                endpoint: endpoint.to_string(),
                kind: kind_header(status)
                    .unwrap_or(ErrorKind::Grpc(status.code()).as_str())
                    .to_string(),
                message,
            },
            Some(kind) => MetaError::Raft {
                kind,
                leader: leader_header(status).map(str::to_string),
                message,
            },
        }
    }
}

impl From<MetaError> for tonic::Status {
    fn from(e: MetaError) -> Self {
        let mut status = tonic::Status::new(e.code(), e.to_string());
        set_kind_header(&mut status, e.kind_name());
        if let MetaError::Raft {
            leader: Some(addr), ..
        } = &e
        {
            set_leader_header(&mut status, addr);
        }
        if !matches!(e, MetaError::Raft { .. } | MetaError::Rpc { .. }) {
            if let Ok(json) = serde_json::to_string(&e) {
                if let Ok(v) = json.parse() {
                    status.metadata_mut().insert(DETAIL_KEY, v);
                }
            }
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field decodes back to itself, from the JSON detail, with the same message.
    #[test]
    fn every_field_round_trips_through_a_status() {
        for &field in Field::ALL {
            let e = MetaError::InvalidArgument {
                field,
                reason: "why".into(),
            };
            let status = tonic::Status::from(e.clone());
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert_eq!(status.message(), format!("invalid {}: why", field.as_str()));
            match MetaError::from_status("m", &status) {
                MetaError::InvalidArgument {
                    field: back,
                    reason,
                } => {
                    assert_eq!(back, field);
                    assert_eq!(reason, "why");
                }
                other => panic!("{field:?} decoded as {other:?}"),
            }
            assert_eq!(Field::parse(field.as_str()), Some(field));
        }
    }

    /// The JSON detail is what it was when the field was a string, and a field this binary
    /// does not know keeps the rest of the error.
    #[test]
    fn field_detail_json_is_the_name() {
        let e = MetaError::InvalidArgument {
            field: Field::RequestId,
            reason: "r".into(),
        };
        let json = serde_json::to_string(&e).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"InvalidArgument":{"field":"request_id","reason":"r"}}"#
        );
        let newer = r#"{"InvalidArgument":{"field":"some_new_field","reason":"r"}}"#;
        assert!(matches!(
            serde_json::from_str::<MetaError>(newer),
            Ok(MetaError::InvalidArgument {
                field: Field::Unknown,
                ..
            })
        ));
    }

    /// Every kind without typed details decodes to `Raft` with that kind, its code and (on
    /// `not_leader`) the leader; `installing_snapshot` among them.
    #[test]
    fn every_named_kind_decodes_typed() {
        for &kind in ErrorKind::ALL {
            if matches!(kind, ErrorKind::Grpc(_)) {
                continue;
            }
            let e = MetaError::Raft {
                kind,
                leader: Some("127.0.0.1:7001".into()),
                message: "m".into(),
            };
            let status = tonic::Status::from(e.clone());
            assert_eq!(status.code(), kind.code(), "{kind:?}");
            let back = MetaError::from_status("m", &status);
            assert_eq!(format!("{back:?}"), format!("{e:?}"));
            assert_eq!(back.kind(), kind);
            assert_eq!(back.is_retryable(), kind.is_retryable());
        }
        // As the member sends it.
        let mut status = tonic::Status::unavailable("installing a snapshot");
        ErrorKind::InstallingSnapshot.set_header(&mut status);
        assert!(matches!(
            MetaError::from_status("m", &status),
            MetaError::Raft {
                kind: ErrorKind::InstallingSnapshot,
                leader: None,
                ..
            }
        ));
    }

    /// A status without a kind, or with one this binary does not know, stays `Rpc` with the
    /// text, which goes on unchanged when relayed.
    #[test]
    fn unmapped_statuses_keep_their_text() {
        let e = MetaError::from_status("m", &tonic::Status::unimplemented("no"));
        assert!(
            matches!(&e, MetaError::Rpc { kind, .. } if kind == "grpc_unimplemented"),
            "{e:?}"
        );
        assert_eq!(e.kind(), ErrorKind::Grpc(tonic::Code::Unimplemented));
        let mut status = tonic::Status::failed_precondition("newer");
        set_kind_header(&mut status, "kind_of_a_newer_member");
        let e = MetaError::from_status("m", &status);
        assert_eq!(e.kind_name(), "kind_of_a_newer_member");
        assert!(!e.is_retryable());
        let relayed = tonic::Status::from(e);
        assert_eq!(relayed.code(), tonic::Code::Unavailable);
        assert_eq!(kind_header(&relayed), Some("kind_of_a_newer_member"));
    }
}
