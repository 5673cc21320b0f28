//! The metadata group's error type, its ONE conversion to a gRPC status, and the client's
//! decoding of statuses back into kinds.

use serde::{Deserialize, Serialize};

/// gRPC metadata key carrying the machine-readable error kind.
pub const ERROR_KIND_KEY: &str = "x-bitmountain-error";
/// gRPC metadata key carrying the leader's address on `not_leader`.
pub const LEADER_KEY: &str = "x-bitmountain-leader";

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
        #[serde(skip_deserializing, default)]
        field: &'static str,
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
    #[error("{message}")]
    Raft {
        /// Kind (as on the wire).
        kind: String,
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
        /// Error kind from `x-bitmountain-error`, or the gRPC code.
        kind: String,
        /// Message.
        message: String,
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

/// Field names that travel in `InvalidArgument` (kept static so the variant stays cheap).
const FIELDS: &[&str] = &[
    "bundle id",
    "request_id",
    "label",
    "ttl_ms",
    "sha256",
    "index_offset",
    "missing_shards",
    "address",
    "state",
    "member",
    "code",
    "bundle",
    "bundle state",
    "metadata address",
    "metadata addresses",
    "failure domain level",
    "items",
    "item",
    "batch result",
    "batch results",
];

fn static_field(s: &str) -> &'static str {
    FIELDS.iter().find(|f| **f == s).copied().unwrap_or("field")
}

impl MetaError {
    /// From a status produced by another layer (e.g. the Raft replica), keeping its kind and
    /// leader hint.
    pub fn from_raft_status(status: &tonic::Status) -> Self {
        let kind = status
            .metadata()
            .get(ERROR_KIND_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("internal")
            .to_string();
        let leader = status
            .metadata()
            .get(LEADER_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        MetaError::Raft {
            kind,
            leader,
            message: status.message().to_string(),
        }
    }
}

impl MetaError {
    /// The stable machine-readable kind carried in `x-bitmountain-error`.
    pub fn kind(&self) -> &str {
        match self {
            MetaError::UnknownBundle { .. } => "unknown_bundle",
            MetaError::UnknownNode { .. } => "unknown_node",
            MetaError::UnknownDisk { .. } => "unknown_disk",
            MetaError::DiskOwnedByOtherNode { .. } => "disk_owned_by_other_node",
            MetaError::WrongGeneration { .. } => "wrong_generation",
            MetaError::MalformedPlacement { .. } => "malformed_placement",
            MetaError::Unplaceable { .. } => "unplaceable",
            MetaError::InvalidCode { .. } => "invalid_code",
            MetaError::InvalidArgument { .. } => "invalid_argument",
            MetaError::WrongState { .. } => "wrong_state",
            MetaError::AllocationExpired { .. } => "allocation_expired",
            MetaError::PlacementStale { .. } => "placement_stale",
            MetaError::TooManyMissingShards { .. } => "too_many_missing_shards",
            MetaError::StillHoldsShards { .. } => "still_holds_shards",
            MetaError::ValueFormatRefused { .. } => "value_format_refused",
            MetaError::Raft { kind, .. } => kind,
            MetaError::Corrupt { .. } => "corrupt",
            MetaError::Rpc { kind, .. } => kind,
            MetaError::NoMember { .. } => "no_member",
        }
    }

    /// Whether the request may succeed if retried (on the leader, later).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind(),
            "not_leader"
                | "proposal_dropped"
                | "overloaded"
                | "stopped"
                | "timeout"
                | "placement_stale"
        )
    }

    fn code(&self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            MetaError::UnknownBundle { .. }
            | MetaError::UnknownNode { .. }
            | MetaError::UnknownDisk { .. } => C::NotFound,
            MetaError::WrongGeneration { .. }
            | MetaError::WrongState { .. }
            | MetaError::DiskOwnedByOtherNode { .. }
            | MetaError::AllocationExpired { .. }
            | MetaError::TooManyMissingShards { .. }
            | MetaError::StillHoldsShards { .. }
            | MetaError::ValueFormatRefused { .. } => C::FailedPrecondition,
            MetaError::MalformedPlacement { .. }
            | MetaError::InvalidCode { .. }
            | MetaError::InvalidArgument { .. } => C::InvalidArgument,
            MetaError::Unplaceable { .. } => C::ResourceExhausted,
            MetaError::PlacementStale { .. } => C::Aborted,
            MetaError::Raft { kind, .. } => match kind.as_str() {
                "not_leader" | "proposal_dropped" | "stopped" | "installing_snapshot" => {
                    C::Unavailable
                }
                "overloaded" => C::ResourceExhausted,
                "timeout" => C::DeadlineExceeded,
                "unknown_member" => C::NotFound,
                "bad_membership" => C::FailedPrecondition,
                "fault_injection_disabled" => C::PermissionDenied,
                _ => C::Internal,
            },
            MetaError::Corrupt { .. } => C::DataLoss,
            MetaError::Rpc { .. } | MetaError::NoMember { .. } => C::Unavailable,
        }
    }

    /// Decodes a status a member answered with (client side).
    pub fn from_status(endpoint: &str, status: &tonic::Status) -> Self {
        let kind = status
            .metadata()
            .get(ERROR_KIND_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| format!("grpc_{:?}", status.code()).to_lowercase());
        let leader = status
            .metadata()
            .get(LEADER_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(json) = status
            .metadata()
            .get(DETAIL_KEY)
            .and_then(|v| v.to_str().ok())
        {
            if let Ok(mut e) = serde_json::from_str::<MetaError>(json) {
                if let MetaError::InvalidArgument { field, .. } = &mut e {
                    let name = serde_json::from_str::<serde_json::Value>(json)
                        .ok()
                        .and_then(|v| v["InvalidArgument"]["field"].as_str().map(static_field));
                    *field = name.unwrap_or("field");
                }
                return e;
            }
        }
        match kind.as_str() {
            "not_leader"
            | "proposal_dropped"
            | "overloaded"
            | "stopped"
            | "timeout"
            | "unknown_member"
            | "bad_membership"
            | "fault_injection_disabled" => MetaError::Raft {
                kind,
                leader,
                message: status.message().to_string(),
            },
            _ => MetaError::Rpc {
                endpoint: endpoint.to_string(),
                kind,
                message: status.message().to_string(),
            },
        }
    }
}

/// gRPC metadata key carrying the typed error as JSON, so the Rust client gets the variant
/// (with its ids) back.
pub const DETAIL_KEY: &str = "x-bitmountain-error-detail";

impl From<MetaError> for tonic::Status {
    fn from(e: MetaError) -> Self {
        let mut status = tonic::Status::new(e.code(), e.to_string());
        if let Ok(v) = e.kind().parse() {
            status.metadata_mut().insert(ERROR_KIND_KEY, v);
        }
        if let MetaError::Raft {
            leader: Some(addr), ..
        } = &e
        {
            if let Ok(v) = addr.parse() {
                status.metadata_mut().insert(LEADER_KEY, v);
            }
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

/// The metadata keys an item of a batch carries over from the status its error maps to.
const ITEM_ERROR_KEYS: [&str; 3] = [ERROR_KIND_KEY, LEADER_KEY, DETAIL_KEY];

/// One batch item's error, carrying what the unary call's status would have carried (code,
/// message, error metadata), so the client decodes it the same way ([`item_status`]).
pub fn item_error(e: MetaError) -> bitmountain_proto::v1::ItemError {
    let status = tonic::Status::from(e);
    let metadata = ITEM_ERROR_KEYS
        .iter()
        .filter_map(|key| {
            let value = status.metadata().get(*key)?.to_str().ok()?;
            Some((key.to_string(), value.to_string()))
        })
        .collect();
    bitmountain_proto::v1::ItemError {
        code: status.code() as i32,
        message: status.message().to_string(),
        metadata,
    }
}

/// The status a batch item's error stands for: the inverse of [`item_error`]. Metadata keys
/// other than the error keys are ignored.
pub fn item_status(e: &bitmountain_proto::v1::ItemError) -> tonic::Status {
    let mut status = tonic::Status::new(tonic::Code::from_i32(e.code), e.message.clone());
    for key in ITEM_ERROR_KEYS {
        if let Some(value) = e.metadata.get(key).and_then(|v| v.parse().ok()) {
            status.metadata_mut().insert(key, value);
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch item's error decodes to what the unary call's status decodes to.
    #[test]
    fn item_errors_decode_like_unary_statuses() {
        let cases = [
            MetaError::UnknownBundle {
                id: BundleId(0xabc),
            },
            MetaError::InvalidArgument {
                field: "sha256",
                reason: "must be 32 bytes, got 3".into(),
            },
            MetaError::Raft {
                kind: "not_leader".into(),
                leader: Some("127.0.0.1:7001".into()),
                message: "member 2 is not the leader".into(),
            },
        ];
        for e in cases {
            let unary = MetaError::from_status("m", &tonic::Status::from(e.clone()));
            let item = MetaError::from_status("m", &item_status(&item_error(e.clone())));
            assert_eq!(format!("{unary:?}"), format!("{item:?}"));
            assert_eq!(format!("{item:?}"), format!("{e:?}"));
        }
        // Keys other than the error keys are not carried back into a status.
        let mut odd = item_error(MetaError::UnknownBundle { id: BundleId(1) });
        odd.metadata.insert("x-other".into(), "1".into());
        assert!(item_status(&odd).metadata().get("x-other").is_none());
    }
}
