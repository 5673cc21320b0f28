//! The audit trail's types: who acted ([`Agent`]), what was done ([`AuditAction`], PREMIS event
//! types where one fits), how it ended ([`Outcome`]), the stored event ([`AuditEvent`]) and the
//! chain check ([`ChainVerifier`]) that `bitmountain audit verify` runs, online and offline.
//!
//! An event's stored value is the version byte [`AUDIT_EVENT_VERSION`] followed by a protobuf
//! `StoredAuditEvent` (`proto/state.proto`; version 1, JSON, is still read); the event carries
//! the SHA-256 of the previous event's stored value, and the group's cluster record the SHA-256
//! of the last one (`docs/formats.md`, "Audit trail"). Editing, removing or reordering an event
//! therefore breaks the chain at that event.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use bitmountain_auth::Principal;
use bitmountain_proto::state::v1 as st;
use prost::Message as _;

use super::BundleId;

/// Version byte of a stored audit event (followed by a protobuf `StoredAuditEvent`). Every
/// upload writes one on every member, so it is compact: JSON (version 1, still read) cost the
/// allocate+commit benchmark twice as much.
pub const AUDIT_EVENT_VERSION: u8 = 2;
/// Version byte of events stored as JSON (groups of the first binary with the trail).
pub const AUDIT_EVENT_VERSION_JSON: u8 = 1;
/// Longest detail an event keeps (longer ones are cut at a character boundary, marked `…`).
pub const MAX_AUDIT_DETAIL_BYTES: usize = 1024;
/// Longest agent id, agent name, object or source an event keeps.
pub const MAX_AUDIT_FIELD_BYTES: usize = 256;
/// Most events one `RecordEvents` call or command carries.
pub const MAX_REPORTED_EVENTS: usize = 256;
/// The previous-event hash of the first event of a chain.
pub const CHAIN_START: [u8; 32] = [0; 32];

/// What kind of agent acted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentKind {
    /// A client, by its access token.
    Token,
    /// A storage node, by its certificate.
    Node,
    /// A metadata member, by its certificate.
    Member,
    /// A component acting on its own (`repair`, `failure-detector`, `fixity`, ...).
    System,
    /// A caller without credentials (an insecure dev cluster, or a refused request).
    #[default]
    Anonymous,
}

impl AgentKind {
    /// An agent kind from its name; an unknown one (from a newer binary) reads as anonymous,
    /// the agent's id and name still saying who it was.
    pub fn parse(text: &str) -> AgentKind {
        match text {
            "token" => AgentKind::Token,
            "node" => AgentKind::Node,
            "member" => AgentKind::Member,
            "system" => AgentKind::System,
            _ => AgentKind::Anonymous,
        }
    }

    /// The name events and the wire carry.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Token => "token",
            AgentKind::Node => "node",
            AgentKind::Member => "member",
            AgentKind::System => "system",
            AgentKind::Anonymous => "anonymous",
        }
    }
}

/// Who acted: a token (its id and name), a node or member (its certificate's name), or a
/// component of the system. Printed `token:0123456789abcdef (ci)`, `node:n1`, `system:repair`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Agent {
    pub kind: AgentKind,
    /// Token id (hex), certificate name or component.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// A token's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

impl Agent {
    /// A component of the system (`repair`, `failure-detector`, `expiry`, ...).
    pub fn system(component: &str) -> Agent {
        Agent {
            kind: AgentKind::System,
            id: component.to_owned(),
            name: String::new(),
        }
    }

    /// The agent a request's principal is.
    pub fn of(principal: &Principal) -> Agent {
        match principal {
            Principal::Anonymous => Agent::default(),
            Principal::Token(t) => Agent {
                kind: AgentKind::Token,
                id: t.id.to_string(),
                name: t.name.clone(),
            },
            Principal::Peer(p) => Agent {
                kind: match p.role {
                    bitmountain_auth::PeerRole::Meta => AgentKind::Member,
                    bitmountain_auth::PeerRole::Node => AgentKind::Node,
                },
                id: p.name.clone(),
                name: String::new(),
            },
        }
    }

    /// The agent with its fields cut to [`MAX_AUDIT_FIELD_BYTES`].
    pub fn bounded(mut self) -> Agent {
        self.id = bounded(&self.id, MAX_AUDIT_FIELD_BYTES);
        self.name = bounded(&self.name, MAX_AUDIT_FIELD_BYTES);
        self
    }

    /// Whether `filter` names this agent: its printed form, `kind:id`, its id or its name.
    pub fn matches(&self, filter: &str) -> bool {
        filter == self.to_string()
            || filter == format!("{}:{}", self.kind.as_str(), self.id)
            || (!self.id.is_empty() && filter == self.id)
            || (!self.name.is_empty() && filter == self.name)
    }
}

impl fmt::Display for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == AgentKind::Anonymous && self.id.is_empty() {
            return f.write_str("anonymous");
        }
        write!(f, "{}:{}", self.kind.as_str(), self.id)?;
        if !self.name.is_empty() {
            write!(f, " ({})", self.name)?;
        }
        Ok(())
    }
}

/// What was done: PREMIS event types (id.loc.gov/vocabulary/preservation/eventType) where one
/// fits, our own names for what PREMIS does not cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuditAction {
    /// A bundle committed (PREMIS "ingestion").
    #[serde(rename = "ingestion")]
    Ingestion,
    /// A bundle deleted, or a read refused (PREMIS "deletion", "dissemination").
    #[serde(rename = "deletion")]
    Deletion,
    #[serde(rename = "dissemination")]
    Dissemination,
    /// Retention or a legal hold set or changed (PREMIS "policy assignment").
    #[serde(rename = "policy assignment")]
    PolicyAssignment,
    /// A bundle's files hashed against their ingest digests (PREMIS "fixity check").
    #[serde(rename = "fixity check")]
    FixityCheck,
    /// A lost or damaged shard rebuilt (PREMIS "replication").
    #[serde(rename = "replication")]
    Replication,
    /// A shard moved to another disk by a rebalance (PREMIS "transfer").
    #[serde(rename = "transfer")]
    Transfer,
    /// The group rebuilt from the disks (PREMIS "recovery").
    #[serde(rename = "recovery")]
    Recovery,
    /// A disk's state changed.
    #[serde(rename = "disk state change")]
    DiskStateChange,
    /// A node's state changed.
    #[serde(rename = "node state change")]
    NodeStateChange,
    /// A node registered (first time or again).
    #[serde(rename = "node registration")]
    NodeRegistration,
    /// An access token made.
    #[serde(rename = "token creation")]
    TokenCreation,
    /// An access token revoked.
    #[serde(rename = "token revocation")]
    TokenRevocation,
    /// A metadata member added or removed, or leadership moved.
    #[serde(rename = "member change")]
    MemberChange,
    /// Cluster settings changed (repair throttles, value format).
    #[serde(rename = "settings change")]
    SettingsChange,
    /// Any other request (refused ones are recorded with the method).
    #[serde(rename = "request")]
    Request,
}

impl AuditAction {
    /// Every action.
    pub const ALL: [AuditAction; 16] = [
        AuditAction::Ingestion,
        AuditAction::Deletion,
        AuditAction::Dissemination,
        AuditAction::PolicyAssignment,
        AuditAction::FixityCheck,
        AuditAction::Replication,
        AuditAction::Transfer,
        AuditAction::Recovery,
        AuditAction::DiskStateChange,
        AuditAction::NodeStateChange,
        AuditAction::NodeRegistration,
        AuditAction::TokenCreation,
        AuditAction::TokenRevocation,
        AuditAction::MemberChange,
        AuditAction::SettingsChange,
        AuditAction::Request,
    ];

    /// The name events carry and `--action` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Ingestion => "ingestion",
            AuditAction::Deletion => "deletion",
            AuditAction::Dissemination => "dissemination",
            AuditAction::PolicyAssignment => "policy assignment",
            AuditAction::FixityCheck => "fixity check",
            AuditAction::Replication => "replication",
            AuditAction::Transfer => "transfer",
            AuditAction::Recovery => "recovery",
            AuditAction::DiskStateChange => "disk state change",
            AuditAction::NodeStateChange => "node state change",
            AuditAction::NodeRegistration => "node registration",
            AuditAction::TokenCreation => "token creation",
            AuditAction::TokenRevocation => "token revocation",
            AuditAction::MemberChange => "member change",
            AuditAction::SettingsChange => "settings change",
            AuditAction::Request => "request",
        }
    }

    /// The action a refused call of gRPC method `path` was attempting.
    pub fn of_method(path: &str) -> AuditAction {
        let method = path.rsplit('/').next().unwrap_or(path);
        match method {
            "PutBundle" | "AllocateBundle" | "CommitBundle" | "Batch" => AuditAction::Ingestion,
            "GetFile" | "GetIndex" | "ExportBundle" | "ReadShard" => AuditAction::Dissemination,
            "DeleteBundle" | "PurgeBundle" | "DeleteShard" => AuditAction::Deletion,
            "SetRetention" | "SetLegalHold" => AuditAction::PolicyAssignment,
            "CheckFixity" => AuditAction::FixityCheck,
            "SetDiskState" => AuditAction::DiskStateChange,
            "SetNodeState" => AuditAction::NodeStateChange,
            "RegisterNode" => AuditAction::NodeRegistration,
            "CreateToken" => AuditAction::TokenCreation,
            "RevokeToken" => AuditAction::TokenRevocation,
            "AddMember" | "RemoveMember" | "TransferLeader" => AuditAction::MemberChange,
            "SetRepairSettings" | "SetValueFormat" => AuditAction::SettingsChange,
            "Recovery" => AuditAction::Recovery,
            _ => AuditAction::Request,
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `fixity check`, `fixity-check` and `fixity_check` all name the fixity check.
impl FromStr for AuditAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().replace(['-', '_'], " ").to_lowercase();
        AuditAction::ALL
            .into_iter()
            .find(|a| a.as_str() == wanted)
            .ok_or_else(|| {
                let names: Vec<_> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
                format!("unknown action {s:?}; one of: {}", names.join(", "))
            })
    }
}

/// How an action ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done.
    Success,
    /// Tried and failed (a fixity check that found wrong bytes).
    Failure,
    /// Not allowed (permission, scope, retention, a hold), or invalid.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Refused => "refused",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(Outcome::Success),
            "failure" => Ok(Outcome::Failure),
            "refused" => Ok(Outcome::Refused),
            _ => Err(format!(
                "unknown outcome {s:?}; one of: success, failure, refused"
            )),
        }
    }
}

/// An event before the group numbers and chains it: what a command records, or what a member
/// or node reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    pub time_unix_ms: u64,
    pub agent: Agent,
    pub action: AuditAction,
    /// What it was done to: `bundle <id>`, `disk 7`, `node 3`, `token <id>`, a method.
    pub object: String,
    /// The bundle, when the object is one (indexed for `audit --bundle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<BundleId>,
    pub outcome: Outcome,
    #[serde(default)]
    pub detail: String,
}

impl NewEvent {
    /// An event about bundle `id`.
    pub fn bundle(
        time_unix_ms: u64,
        agent: Agent,
        action: AuditAction,
        id: BundleId,
        outcome: Outcome,
        detail: String,
    ) -> NewEvent {
        NewEvent {
            time_unix_ms,
            agent,
            action,
            object: format!("bundle {id}"),
            bundle: Some(id),
            outcome,
            detail,
        }
    }

    /// The event with every field within its limit.
    pub fn bounded(mut self) -> NewEvent {
        self.agent = self.agent.bounded();
        self.object = bounded(&self.object, MAX_AUDIT_FIELD_BYTES);
        self.detail = bounded(&self.detail, MAX_AUDIT_DETAIL_BYTES);
        self
    }
}

/// An event as the group stores it: numbered, chained to the one before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    pub time_unix_ms: u64,
    pub agent: Agent,
    pub action: AuditAction,
    pub object: String,
    /// The bundle as 32 hex digits, when the object is one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub bundle: String,
    pub outcome: Outcome,
    #[serde(default)]
    pub detail: String,
    /// The member or node that reported it (empty: decided by the group itself, in the
    /// command that made the change).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// SHA-256 of the previous event's stored value, hex (64 zeros for the first).
    pub prev_sha256: String,
}

impl AuditEvent {
    /// Numbers and chains `e` after the event whose stored value hashed to `prev`.
    pub fn chained(seq: u64, prev: &[u8; 32], e: NewEvent, source: &str) -> AuditEvent {
        let e = e.bounded();
        AuditEvent {
            seq,
            time_unix_ms: e.time_unix_ms,
            agent: e.agent,
            action: e.action,
            object: e.object,
            bundle: e.bundle.map(|b| b.to_string()).unwrap_or_default(),
            outcome: e.outcome,
            detail: e.detail,
            source: bounded(source, MAX_AUDIT_FIELD_BYTES),
            prev_sha256: hex::encode(prev),
        }
    }

    /// The stored value of `e` numbered `seq` after the event that hashed to `prev`: what
    /// `AuditEvent::chained(..).encode()` gives, built without the readable form (the apply
    /// path writes one per upload on every member).
    pub fn stored_value(seq: u64, prev: &[u8; 32], mut e: NewEvent, source: &str) -> Vec<u8> {
        bound_in_place(&mut e.agent.id, MAX_AUDIT_FIELD_BYTES);
        bound_in_place(&mut e.agent.name, MAX_AUDIT_FIELD_BYTES);
        bound_in_place(&mut e.object, MAX_AUDIT_FIELD_BYTES);
        bound_in_place(&mut e.detail, MAX_AUDIT_DETAIL_BYTES);
        let source = bounded(source, MAX_AUDIT_FIELD_BYTES);
        stored(seq, prev.to_vec(), e, source)
    }

    /// The stored value: version byte, then the protobuf message. A bundle's event keeps the
    /// bundle id alone (its object, `bundle <id>`, is implied).
    pub fn encode(&self) -> Vec<u8> {
        let e = NewEvent {
            time_unix_ms: self.time_unix_ms,
            agent: self.agent.clone(),
            action: self.action,
            object: self.object.clone(),
            bundle: self.bundle_id(),
            outcome: self.outcome,
            detail: self.detail.clone(),
        };
        let prev = hex::decode(&self.prev_sha256).unwrap_or_default();
        stored(self.seq, prev, e, self.source.clone())
    }

    /// A stored value back (either version); the reason when it is not one.
    pub fn decode(v: &[u8]) -> Result<AuditEvent, String> {
        match v.split_first() {
            Some((&AUDIT_EVENT_VERSION, body)) => Self::from_stored(
                st::StoredAuditEvent::decode(body)
                    .map_err(|e| format!("not an audit event: {e}"))?,
            ),
            Some((&AUDIT_EVENT_VERSION_JSON, body)) => {
                serde_json::from_slice(body).map_err(|e| format!("not an audit event: {e}"))
            }
            Some((other, _)) => Err(format!("unknown audit event version {other}")),
            None => Err("empty value".into()),
        }
    }

    fn from_stored(s: st::StoredAuditEvent) -> Result<AuditEvent, String> {
        let bundle = match s.bundle.len() {
            0 => None,
            16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(&s.bundle);
                Some(BundleId(u128::from_be_bytes(b)))
            }
            n => return Err(format!("a {n}-byte bundle id")),
        };
        if s.prev_sha256.len() != 32 {
            return Err(format!(
                "a {}-byte previous-event hash",
                s.prev_sha256.len()
            ));
        }
        Ok(AuditEvent {
            seq: s.seq,
            time_unix_ms: s.time_unix_ms,
            agent: Agent {
                kind: AgentKind::parse(&s.agent_kind),
                id: s.agent_id,
                name: s.agent_name,
            },
            action: s.action.parse()?,
            object: match (s.object.is_empty(), bundle) {
                (true, Some(b)) => format!("bundle {b}"),
                _ => s.object,
            },
            bundle: bundle.map(|b| b.to_string()).unwrap_or_default(),
            outcome: s.outcome.parse()?,
            detail: s.detail,
            source: s.source,
            prev_sha256: hex::encode(s.prev_sha256),
        })
    }

    /// The bundle the event is about, if any.
    pub fn bundle_id(&self) -> Option<BundleId> {
        self.bundle.parse().ok()
    }
}

/// Event `e` numbered `seq` as stored (fields taken as they are): the one place the stored
/// message is built, for the apply path and for re-encoding a readable event.
fn stored(seq: u64, prev_sha256: Vec<u8>, e: NewEvent, source: String) -> Vec<u8> {
    let implied_object = e.bundle.is_some_and(|b| is_bundle_object(&e.object, b));
    let stored = st::StoredAuditEvent {
        seq,
        time_unix_ms: e.time_unix_ms,
        agent_kind: match e.agent.kind {
            AgentKind::Anonymous => String::new(),
            k => k.as_str().to_owned(),
        },
        agent_id: e.agent.id,
        agent_name: e.agent.name,
        action: e.action.as_str().to_owned(),
        object: if implied_object {
            String::new()
        } else {
            e.object
        },
        bundle: e.bundle.map(|b| b.to_bytes().to_vec()).unwrap_or_default(),
        outcome: e.outcome.as_str().to_owned(),
        detail: e.detail,
        source,
        prev_sha256,
    };
    with_version(&stored)
}

/// The version byte and the message.
fn with_version(stored: &st::StoredAuditEvent) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + stored.encoded_len());
    v.push(AUDIT_EVENT_VERSION);
    #[allow(clippy::expect_used)]
    stored
        .encode(&mut v)
        .expect("a Vec grows to hold any message");
    v
}

/// Whether `object` is `bundle <id>` for `id` (then it is implied by the bundle field).
fn is_bundle_object(object: &str, id: BundleId) -> bool {
    object
        .strip_prefix("bundle ")
        .is_some_and(|rest| rest.parse::<BundleId>().ok() == Some(id))
}

fn bound_in_place(s: &mut String, max: usize) {
    if s.len() > max {
        *s = bounded(s, max);
    }
}

/// SHA-256 of a stored event value (what the next event and the head carry).
pub fn event_hash(stored: &[u8]) -> [u8; 32] {
    Sha256::digest(stored).into()
}

/// The end of the chain as the cluster record holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// The last event's number (0: no event yet).
    pub seq: u64,
    /// SHA-256 of its stored value.
    #[serde(with = "hex32")]
    pub sha256: [u8; 32],
}

/// Where a chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The first event that does not follow from the ones before (or the head).
    pub seq: u64,
    pub problem: String,
}

/// What walking a chain found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Events checked.
    pub events: u64,
    /// The head the walk was checked against.
    pub head_seq: u64,
    pub head_sha256: String,
    /// `None`: every event follows from the one before and the last is the head.
    pub first_break: Option<ChainBreak>,
}

/// Walks stored events in key order and names the first that does not follow from the chain.
#[derive(Debug)]
pub struct ChainVerifier {
    last_seq: u64,
    prev: [u8; 32],
    events: u64,
    first_break: Option<ChainBreak>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        ChainVerifier {
            last_seq: 0,
            prev: CHAIN_START,
            events: 0,
            first_break: None,
        }
    }
}

impl ChainVerifier {
    /// A walk from the first event.
    pub fn new() -> ChainVerifier {
        ChainVerifier::default()
    }

    /// Checks the event stored under `key_seq` as `stored`. Returns false once the chain has
    /// broken (the walk may stop).
    pub fn push(&mut self, key_seq: u64, stored: &[u8]) -> bool {
        if self.first_break.is_some() {
            return false;
        }
        self.events += 1;
        let problem = match AuditEvent::decode(stored) {
            Err(e) => Some(e),
            Ok(e) if e.seq != key_seq => Some(format!(
                "event stored under number {key_seq} says it is number {}",
                e.seq
            )),
            Ok(_) if key_seq != self.last_seq + 1 => Some(format!(
                "events {}..={} are missing (the one before is number {})",
                self.last_seq + 1,
                key_seq.saturating_sub(1),
                self.last_seq
            )),
            Ok(e) if e.prev_sha256 != hex::encode(self.prev) => Some(format!(
                "its previous-event hash {} is not the SHA-256 of event {} ({}): event {} \
                 was changed, or this one was",
                e.prev_sha256,
                self.last_seq,
                hex::encode(self.prev),
                self.last_seq
            )),
            Ok(_) => None,
        };
        if let Some(problem) = problem {
            // The break is named at the event whose link fails; for a hash mismatch the edited
            // event may be the one before, which the problem says.
            self.first_break = Some(ChainBreak {
                seq: key_seq,
                problem,
            });
            return false;
        }
        self.last_seq = key_seq;
        self.prev = event_hash(stored);
        true
    }

    /// The report, checking the last event against the group's `head`.
    pub fn finish(mut self, head: AuditHead) -> ChainReport {
        if self.first_break.is_none() {
            if self.last_seq != head.seq {
                self.first_break = Some(ChainBreak {
                    seq: self.last_seq.min(head.seq) + 1,
                    problem: format!(
                        "the chain ends at event {} but the group's head is event {}: events \
                         were removed or added behind the group's back",
                        self.last_seq, head.seq
                    ),
                });
            } else if self.prev != head.sha256 {
                self.first_break = Some(ChainBreak {
                    seq: self.last_seq,
                    problem: format!(
                        "the last event's SHA-256 {} is not the group's head {}: the last \
                         event was changed",
                        hex::encode(self.prev),
                        hex::encode(head.sha256)
                    ),
                });
            }
        }
        ChainReport {
            events: self.events,
            head_seq: head.seq,
            head_sha256: hex::encode(head.sha256),
            first_break: self.first_break,
        }
    }
}

/// `s` cut to at most `max` bytes at a character boundary, `…` marking a cut.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn chain(n: u64) -> (Vec<(u64, Vec<u8>)>, AuditHead) {
        let mut prev = CHAIN_START;
        let mut out = Vec::new();
        for seq in 1..=n {
            let e = NewEvent::bundle(
                1000 + seq,
                Agent::system("test"),
                AuditAction::Ingestion,
                BundleId(u128::from(seq)),
                Outcome::Success,
                format!("event {seq}"),
            );
            let v = AuditEvent::chained(seq, &prev, e, "").encode();
            prev = event_hash(&v);
            out.push((seq, v));
        }
        (
            out,
            AuditHead {
                seq: n,
                sha256: prev,
            },
        )
    }

    fn verify(events: &[(u64, Vec<u8>)], head: AuditHead) -> ChainReport {
        let mut v = ChainVerifier::new();
        for (seq, value) in events {
            if !v.push(*seq, value) {
                break;
            }
        }
        v.finish(head)
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (events, head) = chain(5);
        let r = verify(&events, head);
        assert_eq!(r.first_break, None);
        assert_eq!(r.events, 5);
        assert_eq!(verify(&[], AuditHead::default()).first_break, None);
    }

    #[test]
    fn an_edited_event_breaks_the_chain_at_the_next() {
        let (mut events, head) = chain(5);
        let mut e = AuditEvent::decode(&events[1].1).unwrap();
        e.detail = "something else".into();
        events[1].1 = e.encode();
        let r = verify(&events, head);
        let b = r.first_break.unwrap();
        assert_eq!(b.seq, 3);
        assert!(b.problem.contains("event 2 was changed"), "{}", b.problem);
    }

    #[test]
    fn the_last_event_edited_or_removed_is_caught_by_the_head() {
        let (mut events, head) = chain(4);
        let mut e = AuditEvent::decode(&events[3].1).unwrap();
        e.outcome = Outcome::Failure;
        events[3].1 = e.encode();
        assert_eq!(verify(&events, head).first_break.unwrap().seq, 4);
        events.pop();
        let b = verify(&events, head).first_break.unwrap();
        assert_eq!(b.seq, 4);
        assert!(b.problem.contains("removed"), "{}", b.problem);
    }

    #[test]
    fn a_removed_or_renumbered_event_is_named() {
        let (events, head) = chain(5);
        let mut gap = events.clone();
        gap.remove(2);
        let b = verify(&gap, head).first_break.unwrap();
        assert_eq!(b.seq, 4);
        assert!(b.problem.contains("3..=3 are missing"), "{}", b.problem);
        let mut moved = events.clone();
        moved[2].0 = 9;
        assert_eq!(verify(&moved, head).first_break.unwrap().seq, 9);
        let mut garbage = events;
        garbage[0].1 = vec![AUDIT_EVENT_VERSION, 0xff, 0xff];
        assert_eq!(verify(&garbage, head).first_break.unwrap().seq, 1);
    }

    #[test]
    fn the_apply_path_stores_what_the_readable_form_encodes() {
        let e = NewEvent::bundle(
            5,
            Agent::system("x".repeat(MAX_AUDIT_FIELD_BYTES + 9).as_str()),
            AuditAction::Deletion,
            BundleId(77),
            Outcome::Success,
            "y".repeat(MAX_AUDIT_DETAIL_BYTES * 2),
        );
        let prev = [7u8; 32];
        assert_eq!(
            AuditEvent::stored_value(3, &prev, e.clone(), "node:n1"),
            AuditEvent::chained(3, &prev, e, "node:n1").encode()
        );
    }

    #[test]
    fn events_round_trip_compactly_and_json_ones_still_read() {
        let (events, _) = chain(1);
        let e = AuditEvent::decode(&events[0].1).unwrap();
        assert_eq!(e.object, format!("bundle {}", BundleId(1)));
        assert_eq!(AuditEvent::decode(&e.encode()).unwrap(), e);
        let mut json = vec![AUDIT_EVENT_VERSION_JSON];
        json.extend(serde_json::to_vec(&e).unwrap());
        assert_eq!(AuditEvent::decode(&json).unwrap(), e);
        assert!(
            e.encode().len() * 2 < json.len(),
            "{} vs {}",
            e.encode().len(),
            json.len()
        );
    }

    #[test]
    fn actions_parse_in_every_spelling() {
        for a in AuditAction::ALL {
            assert_eq!(a.as_str().parse::<AuditAction>().unwrap(), a);
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
        }
        assert_eq!(
            "fixity_check".parse::<AuditAction>().unwrap(),
            AuditAction::FixityCheck
        );
        assert!("frobnicate".parse::<AuditAction>().is_err());
        assert_eq!(
            AuditAction::of_method("/bitmountain.archive.v1.ArchiveService/GetFile"),
            AuditAction::Dissemination
        );
    }

    #[test]
    fn agents_print_and_match() {
        let t = Agent {
            kind: AgentKind::Token,
            id: "0123456789abcdef".into(),
            name: "ci".into(),
        };
        assert_eq!(t.to_string(), "token:0123456789abcdef (ci)");
        assert!(t.matches("ci") && t.matches("0123456789abcdef"));
        assert!(t.matches("token:0123456789abcdef"));
        assert!(!t.matches("cd"));
        assert_eq!(Agent::system("repair").to_string(), "system:repair");
        assert_eq!(Agent::default().to_string(), "anonymous");
    }

    #[test]
    fn long_fields_are_cut_at_a_character_boundary() {
        let s = "é".repeat(MAX_AUDIT_DETAIL_BYTES);
        let b = bounded(&s, MAX_AUDIT_DETAIL_BYTES);
        assert!(b.len() <= MAX_AUDIT_DETAIL_BYTES);
        assert!(b.ends_with('…'));
        assert_eq!(bounded("short", 10), "short");
    }
}
