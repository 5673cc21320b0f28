//! The replicated commands: what a log entry carries ([`Command`]), what applying one answers
//! ([`Applied`]), and the dispatch of each command to the file that applies it
//! (`state/apply/`, one file per family).
//!
//! Every field an apply needs (time, generated ids, the chosen placement) is decided by the
//! leader before proposing, so apply is deterministic and every member reaches the same state.
//! Adding a command: ARCHITECTURE.md, "Where code goes".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::keys;
use crate::state::apply::Applier;
use crate::types::{
    Agent, BundleId, BundleRecord, Code, DiskRecord, DiskState, FoundShard, FoundTombstone,
    NewEvent, NodeRecord, NodeState, RepairSettings,
};

pub use crate::recovery::RecoveryReport;

/// A disk in a registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// 0 for a new disk.
    pub disk_id: u64,
    /// Directory.
    pub path: String,
    /// Capacity.
    pub capacity_bytes: u64,
}

/// A replicated command (what a log entry carries). Every field an apply needs — time,
/// generated ids, the chosen placement — is decided by the leader before proposing, so apply
/// is deterministic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Add or update a node and its disks.
    RegisterNode(RegisterNode),
    /// Operator or failure-detector decision on a disk.
    SetDiskState {
        /// Disk.
        disk_id: u64,
        /// New state.
        state: DiskState,
        /// Leader's clock.
        now_ms: u64,
        /// Who decided (an operator's token, or `system:failure-detector`).
        #[serde(default)]
        agent: Agent,
    },
    /// Decision on a node (operator, or the leader's failure detector).
    SetNodeState {
        /// Node.
        node_id: u64,
        /// New state.
        state: NodeState,
        /// Leader's clock.
        #[serde(default)]
        now_ms: u64,
        /// Who decided.
        #[serde(default)]
        agent: Agent,
    },
    /// New repair throttles.
    SetRepairSettings {
        /// Settings (a zero `max_repairs_per_node` keeps the current value).
        settings: RepairSettings,
        /// Leader's clock.
        #[serde(default)]
        now_ms: u64,
        /// Who changed them.
        #[serde(default)]
        agent: Agent,
    },
    /// Moves planned by a rebalance: each applies only if the bundle's placement generation is
    /// still the one it was planned against.
    QueueMoves {
        /// (bundle, shard, target disk, generation).
        moves: Vec<(BundleId, u32, u64, u64)>,
        /// Leader's clock.
        now_ms: u64,
    },
    /// Create a pending bundle.
    Allocate(Allocate),
    /// Seal a pending bundle.
    Commit(Commit),
    /// Drop a pending bundle.
    Abort {
        /// Bundle.
        id: BundleId,
    },
    /// Drop pending bundles whose allocation expired.
    Expire {
        /// Bundles.
        ids: Vec<BundleId>,
        /// Leader's clock.
        now_ms: u64,
    },
    /// Mark a sealed bundle deleting (refused while it is retained or held).
    Delete {
        /// Bundle.
        id: BundleId,
        /// Leader's clock. 0: no retention or hold check (commands from before retention
        /// existed). Nor is there one for agent `system:recovery` (a recovery deleting again a
        /// bundle a tombstone says was deleted).
        #[serde(default)]
        now_ms: u64,
        /// Why (audited).
        #[serde(default)]
        reason: String,
        /// Who asked.
        #[serde(default)]
        agent: Agent,
    },
    /// Extend a sealed bundle's retention.
    SetRetention {
        /// Bundle.
        id: BundleId,
        /// New date; never earlier than the current one, unless `governance_reason` says why.
        retain_until_unix_ms: u64,
        /// Non-empty: governance mode (an admin shortening the retention, with this reason).
        #[serde(default)]
        governance_reason: String,
        /// Leader's clock.
        #[serde(default)]
        now_ms: u64,
        /// Who asked.
        #[serde(default)]
        agent: Agent,
    },
    /// Set (`Some`) or clear a legal hold.
    SetLegalHold {
        /// Bundle.
        id: BundleId,
        /// The hold, or `None` to clear it.
        hold: Option<crate::types::LegalHold>,
        /// Why it is set or cleared (audited).
        #[serde(default)]
        reason: String,
        /// Leader's clock.
        #[serde(default)]
        now_ms: u64,
        /// Who asked.
        #[serde(default)]
        agent: Agent,
    },
    /// Remove a deleted bundle's record once its shards are gone.
    Purge {
        /// Bundle.
        id: BundleId,
    },
    /// Shards of a sealed bundle found missing or corrupt by a reader or scrubber: queue (or
    /// widen) its repair.
    ReportDamage {
        /// Bundle.
        id: BundleId,
        /// Damaged shard indexes.
        shards: Vec<u32>,
        /// Leader's clock.
        now_ms: u64,
    },
    /// Write bundle records and allocate/commit commands in `value_format` from this entry on
    /// (the leader proposes it only once every member confirmed it reads that format).
    SetValueFormat {
        /// `keys::VALUE_V1` to `keys::VALUE_FORMAT_NEWEST`; never older than the current one.
        value_format: u8,
        /// Leader's clock.
        #[serde(default)]
        now_ms: u64,
        /// Who asked.
        #[serde(default)]
        agent: Agent,
    },
    /// Add an access token (its record holds the secret's hash, never the secret).
    CreateToken(CreateToken),
    /// Revoke an access token (it stays in the table, refused from then on).
    RevokeToken {
        /// The token.
        id: bitmountain_auth::TokenId,
        /// Leader's clock.
        now_ms: u64,
        /// Who revoked it.
        #[serde(default)]
        agent: Agent,
    },
    /// Compare-and-set a bundle's placement.
    UpdatePlacement {
        /// Bundle.
        id: BundleId,
        /// Expected generation.
        expected_generation: u64,
        /// New placement.
        placement: Vec<u64>,
        /// Leader's clock.
        now_ms: u64,
        /// Shards rewritten in place (their disk stays).
        #[serde(default)]
        rewritten_shards: Vec<u32>,
        /// The node whose worker rebuilt or moved the shards.
        #[serde(default)]
        agent: Agent,
    },
    /// Start rebuilding the group from the disks (the first command of `meta recover`).
    EnterRecovery {
        /// Leader's clock.
        now_ms: u64,
        /// When the backup the group started from was taken (0: none).
        backup_unix_ms: u64,
        /// The `meta recover` run asking (a request already carried out changes nothing).
        request_id: String,
    },
    /// A batch of one disk's scan during a recovery.
    RecordScan(RecordScan),
    /// Records the leader rebuilt from the scans; found keys of the bundles settled.
    RecoverBundles(RecoverBundles),
    /// The end of a recovery.
    FinishRecovery {
        /// What it found and did.
        report: crate::recovery::RecoveryReport,
        /// Nodes keep shards of bundles the group does not know until then.
        orphan_hold_until_unix_ms: u64,
    },
    /// Events a member or node reported (refused requests, fixity checks), recorded as they are.
    RecordEvents(RecordEvents),
}

/// [`Command::RecordEvents`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordEvents {
    /// At most `MAX_REPORTED_EVENTS`.
    pub events: Vec<NewEvent>,
    /// The member or node that reported them.
    pub source: String,
    /// Events the reporter dropped (recorded as one event).
    pub dropped: u64,
    /// Leader's clock.
    pub now_ms: u64,
}

/// [`Command::RecordScan`]: part of one disk's scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordScan {
    /// The reporting node, which must own the disk.
    pub node_id: u64,
    /// The disk scanned.
    pub disk_id: u64,
    /// Shard files found (their `disk_id` is the disk's).
    pub shards: Vec<FoundShard>,
    /// Tombstones found.
    pub tombstones: Vec<FoundTombstone>,
    /// The disk's scan is complete.
    pub last: bool,
}

/// [`Command::RecoverBundles`]: a batch of rebuilt records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoverBundles {
    /// Sealed records with every disk chosen (missing shards placed where repair rebuilds
    /// them), and the shards to rebuild.
    pub bundles: Vec<RecoveredRecord>,
    /// Bundles settled without a record (lost, deleted, never committed): their found keys go.
    pub settled: Vec<BundleId>,
    /// Leader's clock.
    pub now_ms: u64,
}

/// One rebuilt record and the shards repair must rebuild.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveredRecord {
    pub record: BundleRecord,
    pub damaged: Vec<u32>,
}

/// [`Command::RegisterNode`]: a node and its disks, new or again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterNode {
    /// Idempotency key.
    pub request_id: String,
    /// 0 for a new node.
    pub node_id: u64,
    /// Address.
    pub address: String,
    /// Zone.
    pub zone: String,
    /// Rack.
    pub rack: String,
    /// Host ("" → `node-<id>`).
    pub host: String,
    /// Disks.
    pub disks: Vec<DiskSpec>,
    /// Cluster id to adopt if none is set yet.
    pub cluster_id_candidate: String,
    /// The cluster id the node's disks carry ("" for new disks only): adopted by a recovering
    /// group without one, refused when it differs from the group's.
    #[serde(default)]
    pub cluster_id: String,
    /// Leader's clock (0 in commands from before the field existed).
    #[serde(default)]
    pub now_ms: u64,
    /// The node registering, by its certificate.
    #[serde(default)]
    pub agent: Agent,
    /// The value format the group writes if this is its first command (0, in entries from
    /// before the field: the newest). See [`CreateToken::first_value_format`].
    #[serde(default)]
    pub first_value_format: u8,
}

/// [`Command::Allocate`]: a new pending bundle on disks the leader chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocate {
    /// Idempotency key.
    pub request_id: String,
    /// New id.
    pub id: BundleId,
    /// Code.
    pub code: Code,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Estimate for accounting.
    pub expected_length: u64,
    /// Disks by shard index.
    pub placement: Vec<u64>,
    /// Leader's clock.
    pub now_ms: u64,
    /// Expiry.
    pub expires_ms: u64,
    /// Retention of the sealed bundle (0: none).
    #[serde(default)]
    pub retain_until_unix_ms: u64,
}

/// [`Command::Commit`]: a pending bundle sealed with what the upload wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Bundle.
    pub id: BundleId,
    /// Length.
    pub length: u64,
    /// Index offset.
    pub index_offset: u64,
    /// Index length.
    pub index_length: u64,
    /// SHA-256.
    pub sha256: Vec<u8>,
    /// Files.
    pub file_count: u64,
    /// Shards not durable (queued for repair).
    pub missing_shards: Vec<u32>,
    /// Leader's clock.
    pub now_ms: u64,
    /// Who uploaded (the ingestion event's agent).
    #[serde(default)]
    pub agent: Agent,
}

/// [`Command::CreateToken`]: a new token's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateToken {
    /// The record (id, role, scope, expiry, the secret's hash).
    pub record: bitmountain_auth::TokenRecord,
    /// Applies only while the table is at this version (`Some(0)`: the group's first admin
    /// token, made once by whichever member leads first); `None`: whatever the version.
    pub if_version: Option<u64>,
    /// Who made it (`system:bootstrap` for the group's first admin token).
    #[serde(default)]
    pub agent: Agent,
    /// Leader's clock.
    #[serde(default)]
    pub now_ms: u64,
    /// The value format the group writes if this is its first command (0, in entries from
    /// before the field: the newest): the proposer's `MetaConfig::initial_value_format`, which
    /// every initial member is given alike.
    #[serde(default)]
    pub first_value_format: u8,
}

/// What an applied command returns to the proposer.
#[derive(Debug, Clone)]
pub enum Applied {
    /// Registration result.
    Node {
        /// Node.
        node: NodeRecord,
        /// Its disks, in request order.
        disks: Vec<DiskRecord>,
        /// Cluster id.
        cluster_id: String,
    },
    /// A bundle after the command.
    Bundle(BundleRecord),
    /// A disk after the command.
    Disk {
        /// Disk.
        disk: DiskRecord,
        /// Repairs queued.
        repairs_queued: u64,
    },
    /// A node after the command.
    NodeUpdated(NodeRecord),
    /// Moves queued by a rebalance.
    MovesQueued(u64),
    /// Whether a damage report queued a repair.
    Damage {
        /// Queued (false: nothing new to repair).
        queued: bool,
    },
    /// A token after the command.
    Token(bitmountain_auth::TokenRecord),
    /// Nothing to return.
    Done,
}

/// Response type of the state machine.
pub type ApplyResult = Result<Applied>;

impl Command {
    /// Version byte and the command in the group's `value_format`: protobuf for allocate and
    /// commit in version 2, JSON otherwise.
    pub fn encode(&self, value_format: u8) -> Vec<u8> {
        if value_format >= keys::VALUE_V2 {
            if let Some(v) = crate::codec::proto::encode_command(self) {
                return v;
            }
        }
        crate::codec::encode_value(self)
    }

    /// A command of either version.
    pub(crate) fn decode(b: &[u8]) -> Result<Self> {
        match b.split_first() {
            Some((&keys::VALUE_V2, body)) => crate::codec::proto::decode_command(body),
            _ => crate::codec::decode_value(b, "command"),
        }
    }

    /// Whether this command may share a log entry with others
    /// ([`bitmountain_raftstore::RaftHandle::propose_shared`]): those that scan key ranges
    /// while applied write out the earlier entries first, which needs an entry of their own.
    pub fn may_share_entry(&self) -> bool {
        self.reads_only_single_keys()
    }

    /// Whether applying this command reads only single keys (which a round's unwritten writes
    /// can answer) and never scans a key range of the DB. The others are also the commands
    /// that change the topology.
    pub(crate) fn reads_only_single_keys(&self) -> bool {
        !matches!(
            self,
            Command::RegisterNode { .. }
                | Command::SetDiskState { .. }
                | Command::SetNodeState { .. }
                | Command::RecordScan { .. }
                | Command::RecoverBundles { .. }
        )
    }

    /// Applies the command through the family file that owns it (`state/apply/`). A refusal
    /// of a command someone asked for is recorded in the audit trail (`crate::audit`).
    pub(crate) fn apply(self, a: &mut Applier<'_>) -> ApplyResult {
        let refusal = crate::audit::refusal_of(&self);
        let result = self.apply_inner(a);
        if let (Err(e), Some(event)) = (&result, refusal) {
            a.audit_refusal(event, e);
        }
        result
    }

    fn apply_inner(self, a: &mut Applier<'_>) -> ApplyResult {
        match self {
            Command::RegisterNode(r) => a.register(r),
            Command::SetDiskState {
                disk_id,
                state,
                now_ms,
                agent,
            } => a.set_disk_state(disk_id, state, now_ms, agent),
            Command::SetNodeState {
                node_id,
                state,
                now_ms,
                agent,
            } => a.set_node_state(node_id, state, now_ms, agent),
            Command::SetValueFormat {
                value_format,
                now_ms,
                agent,
            } => a.set_value_format(value_format, now_ms, agent),
            Command::SetRepairSettings {
                settings,
                now_ms,
                agent,
            } => a.set_repair_settings(settings, now_ms, agent),
            Command::QueueMoves { moves, now_ms } => a.queue_moves(moves, now_ms),
            Command::Allocate(c) => a.allocate(c),
            Command::Commit(c) => a.commit(c),
            Command::Abort { id } => a.abort(id),
            Command::Expire { ids, now_ms } => a.expire(ids, now_ms),
            Command::Delete {
                id,
                now_ms,
                reason,
                agent,
            } => a.delete(id, now_ms, &reason, agent),
            Command::SetRetention {
                id,
                retain_until_unix_ms,
                governance_reason,
                now_ms,
                agent,
            } => a.set_retention(id, retain_until_unix_ms, &governance_reason, now_ms, agent),
            Command::SetLegalHold {
                id,
                hold,
                reason,
                now_ms,
                agent,
            } => a.set_legal_hold(id, hold, &reason, now_ms, agent),
            Command::Purge { id } => a.purge(id),
            Command::ReportDamage { id, shards, now_ms } => a.report_damage(id, shards, now_ms),
            Command::CreateToken(c) => a.create_token(c),
            Command::RevokeToken { id, now_ms, agent } => a.revoke_token(id, now_ms, agent),
            Command::UpdatePlacement {
                id,
                expected_generation,
                placement,
                now_ms,
                rewritten_shards,
                agent,
            } => a.update_placement(
                id,
                expected_generation,
                placement,
                now_ms,
                rewritten_shards,
                agent,
            ),
            Command::EnterRecovery {
                now_ms,
                backup_unix_ms,
                request_id,
            } => a.enter_recovery(now_ms, backup_unix_ms, request_id),
            Command::RecordScan(r) => a.record_scan(r),
            Command::RecoverBundles(r) => a.recover_bundles(r),
            Command::FinishRecovery {
                report,
                orphan_hold_until_unix_ms,
            } => a.finish_recovery(report, orphan_hold_until_unix_ms),
            Command::RecordEvents(r) => a.record_events(r),
        }
    }
}
