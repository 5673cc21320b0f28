//! Value format 2: bundle records, allocation request values and the allocate and commit
//! commands as protobuf (`proto/state.proto`) behind the version byte [`keys::VALUE_V2`].
//!
//! These are the values written for every bundle, on every member, and the commands every
//! allocation and commit puts in the Raft log. In version 1 (JSON) a bundle record is about
//! three times as large and costs several times the CPU to encode and decode, on three members.
//!
//! Which version a member writes is replicated state (`ClusterRecord::value_format`), never a
//! member's own choice: every member then writes the same bytes for the same command, and a
//! group never carries values some of its members cannot read. Readers accept both versions.

use std::collections::BTreeMap;

use bitmountain_proto::state::v1 as st;
use prost::Message as _;

use super::corrupt;
use crate::command::{Allocate, Command, Commit};
use crate::error::Result;
use crate::keys;
use crate::types::Preservation;
use crate::types::{Agent, AgentKind, BundleId, BundleRecord, BundleState, Code};

fn id_from(b: &[u8], what: &str) -> Result<BundleId> {
    let arr: [u8; 16] = b
        .try_into()
        .map_err(|_| corrupt(what, format!("bundle id of {} bytes, not 16", b.len())))?;
    Ok(BundleId(u128::from_be_bytes(arr)))
}

fn labels_to(labels: &BTreeMap<String, String>) -> Vec<st::StoredLabel> {
    labels
        .iter()
        .map(|(k, v)| st::StoredLabel {
            key: k.clone(),
            value: v.clone(),
        })
        .collect()
}

fn labels_from(labels: Vec<st::StoredLabel>, what: &str) -> Result<BTreeMap<String, String>> {
    let count = labels.len();
    let map: BTreeMap<String, String> = labels.into_iter().map(|l| (l.key, l.value)).collect();
    if map.len() != count {
        return Err(corrupt(what, "a label key appears twice"));
    }
    Ok(map)
}

fn state_from(tag: u32, what: &str) -> Result<BundleState> {
    [
        BundleState::Pending,
        BundleState::Sealed,
        BundleState::Deleting,
    ]
    .into_iter()
    .find(|s| u32::from(s.tag()) == tag)
    .ok_or_else(|| corrupt(what, format!("unknown bundle state {tag}")))
}

fn with_version(message: &impl prost::Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + message.encoded_len());
    out.push(keys::VALUE_V2);
    // A Vec grows as needed, so encoding into one cannot run out of room.
    if let Err(e) = message.encode(&mut out) {
        panic!("protobuf encoding into a Vec failed: {e}");
    }
    out
}

/// A bundle record as stored by a group writing `value_format`.
pub(crate) fn encode_bundle(b: &BundleRecord, value_format: u8) -> Vec<u8> {
    if value_format < keys::VALUE_V2 {
        return super::json::encode_value(b);
    }
    let (legal_hold_reason, legal_hold_since_unix_ms) = b.preservation.hold_parts();
    with_version(&st::StoredBundle {
        id: b.id.to_bytes().to_vec(),
        state: u32::from(b.state.tag()),
        data_shards: b.code.data_shards,
        parity_shards: b.code.parity_shards,
        cell_bytes: b.code.cell_bytes,
        length: b.length,
        index_offset: b.index_offset,
        index_length: b.index_length,
        sha256: b.sha256.clone(),
        file_count: b.file_count,
        labels: labels_to(&b.labels),
        created_unix_ms: b.created_unix_ms,
        expires_unix_ms: b.expires_unix_ms,
        placement: b.placement.clone(),
        placement_generation: b.placement_generation,
        request_id: b.request_id.clone(),
        accounted_shard_bytes: b.accounted_shard_bytes,
        retain_until_unix_ms: b.preservation.retain_until_unix_ms,
        legal_hold_reason,
        legal_hold_since_unix_ms,
    })
}

/// A stored bundle record of either version.
pub(crate) fn decode_bundle(v: &[u8]) -> Result<BundleRecord> {
    const WHAT: &str = "bundle record";
    let Some((&keys::VALUE_V2, body)) = v.split_first() else {
        return super::json::decode_value(v, WHAT);
    };
    let s = st::StoredBundle::decode(body).map_err(|e| corrupt(WHAT, e))?;
    Ok(BundleRecord {
        id: id_from(&s.id, WHAT)?,
        state: state_from(s.state, WHAT)?,
        code: Code {
            data_shards: s.data_shards,
            parity_shards: s.parity_shards,
            cell_bytes: s.cell_bytes,
        },
        length: s.length,
        index_offset: s.index_offset,
        index_length: s.index_length,
        sha256: s.sha256,
        file_count: s.file_count,
        labels: labels_from(s.labels, WHAT)?,
        created_unix_ms: s.created_unix_ms,
        expires_unix_ms: s.expires_unix_ms,
        placement: s.placement,
        placement_generation: s.placement_generation,
        request_id: s.request_id,
        accounted_shard_bytes: s.accounted_shard_bytes,
        preservation: Preservation::from_parts(
            s.retain_until_unix_ms,
            s.legal_hold_reason,
            s.legal_hold_since_unix_ms,
        ),
    })
}

/// The value of an allocation's request key: the bundle id it created.
pub(crate) fn encode_request_bundle(id: BundleId, value_format: u8) -> Vec<u8> {
    if value_format < keys::VALUE_V2 {
        return super::json::encode_value(&id);
    }
    let mut out = Vec::with_capacity(17);
    out.push(keys::VALUE_V2);
    out.extend_from_slice(&id.to_bytes());
    out
}

/// The bundle id under an allocation's request key, of either version.
pub(crate) fn decode_request_bundle(v: &[u8]) -> Result<BundleId> {
    const WHAT: &str = "request record";
    match v.split_first() {
        Some((&keys::VALUE_V2, id)) => id_from(id, WHAT),
        _ => super::json::decode_value(v, WHAT),
    }
}

/// `cmd` in version 2 if it is one of the commands that version covers (allocate, commit).
pub(crate) fn encode_command(cmd: &Command) -> Option<Vec<u8>> {
    let command = match cmd {
        Command::Allocate(a) => st::stored_command::Command::Allocate(st::StoredAllocate {
            request_id: a.request_id.clone(),
            id: a.id.to_bytes().to_vec(),
            data_shards: a.code.data_shards,
            parity_shards: a.code.parity_shards,
            cell_bytes: a.code.cell_bytes,
            labels: labels_to(&a.labels),
            expected_length: a.expected_length,
            placement: a.placement.clone(),
            now_ms: a.now_ms,
            expires_ms: a.expires_ms,
            retain_until_unix_ms: a.retain_until_unix_ms,
        }),
        Command::Commit(c) => st::stored_command::Command::Commit(st::StoredCommit {
            id: c.id.to_bytes().to_vec(),
            length: c.length,
            index_offset: c.index_offset,
            index_length: c.index_length,
            sha256: c.sha256.clone(),
            file_count: c.file_count,
            missing_shards: c.missing_shards.clone(),
            now_ms: c.now_ms,
            agent_kind: c.agent.kind.as_str().to_owned(),
            agent_id: c.agent.id.clone(),
            agent_name: c.agent.name.clone(),
        }),
        _ => return None,
    };
    Some(with_version(&st::StoredCommand {
        command: Some(command),
    }))
}

/// A version-2 command (`body` is what follows the version byte).
pub(crate) fn decode_command(body: &[u8]) -> Result<Command> {
    const WHAT: &str = "command";
    let s = st::StoredCommand::decode(body).map_err(|e| corrupt(WHAT, e))?;
    match s.command {
        Some(st::stored_command::Command::Allocate(a)) => Ok(Command::Allocate(Allocate {
            request_id: a.request_id,
            id: id_from(&a.id, WHAT)?,
            code: Code {
                data_shards: a.data_shards,
                parity_shards: a.parity_shards,
                cell_bytes: a.cell_bytes,
            },
            labels: labels_from(a.labels, WHAT)?,
            expected_length: a.expected_length,
            placement: a.placement,
            now_ms: a.now_ms,
            expires_ms: a.expires_ms,
            retain_until_unix_ms: a.retain_until_unix_ms,
        })),
        Some(st::stored_command::Command::Commit(c)) => Ok(Command::Commit(Commit {
            id: id_from(&c.id, WHAT)?,
            length: c.length,
            index_offset: c.index_offset,
            index_length: c.index_length,
            sha256: c.sha256,
            file_count: c.file_count,
            missing_shards: c.missing_shards,
            now_ms: c.now_ms,
            agent: Agent {
                kind: AgentKind::parse(&c.agent_kind),
                id: c.agent_id,
                name: c.agent_name,
            },
        })),
        // A command a newer member wrote in a variant this binary does not know.
        None => Err(corrupt(
            WHAT,
            "no command this version knows (written by a newer bitmountain? upgrade this member)",
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::types::LegalHold;

    fn record() -> BundleRecord {
        BundleRecord {
            id: BundleId::generate(1_790_000_000_000),
            state: BundleState::Sealed,
            code: Code::DEFAULT,
            length: 123_456_789,
            index_offset: 123_000_000,
            index_length: 456_789,
            sha256: (0..32).collect(),
            file_count: 1_000,
            labels: [("collection".to_string(), "maps-1890".to_string())]
                .into_iter()
                .collect(),
            created_unix_ms: 1_790_000_000_000,
            expires_unix_ms: 0,
            placement: (100..114).collect(),
            placement_generation: 3,
            request_id: "req-7".into(),
            accounted_shard_bytes: 12_400_000,
            preservation: Default::default(),
        }
    }

    #[test]
    fn bundle_records_round_trip_in_both_versions_and_version_2_is_smaller() {
        let b = record();
        let v1 = encode_bundle(&b, keys::VALUE_V1);
        let v2 = encode_bundle(&b, keys::VALUE_V2);
        assert_eq!(v1[0], keys::VALUE_V1);
        assert_eq!(v2[0], keys::VALUE_V2);
        assert_eq!(decode_bundle(&v1).unwrap(), b);
        assert_eq!(decode_bundle(&v2).unwrap(), b);
        assert!(v2.len() * 2 < v1.len(), "v2 {} v1 {}", v2.len(), v1.len());
        // Retention and a legal hold survive both versions too.
        let kept = BundleRecord {
            preservation: Preservation {
                retain_until_unix_ms: 2_100_000_000_000,
                legal_hold: Some(LegalHold {
                    reason: "litigation 2026-17".into(),
                    since_unix_ms: 1_800_000_000_000,
                }),
            },
            ..b
        };
        for format in [keys::VALUE_V1, keys::VALUE_V2] {
            assert_eq!(decode_bundle(&encode_bundle(&kept, format)).unwrap(), kept);
        }
    }

    #[test]
    fn request_values_round_trip_in_both_versions() {
        let id = BundleId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        for format in [keys::VALUE_V1, keys::VALUE_V2] {
            assert_eq!(
                decode_request_bundle(&encode_request_bundle(id, format)).unwrap(),
                id
            );
        }
        assert!(decode_request_bundle(&[keys::VALUE_V2, 1, 2, 3]).is_err());
    }

    #[test]
    fn allocate_and_commit_round_trip_and_other_commands_stay_json() {
        let b = record();
        let allocate = Command::Allocate(Allocate {
            request_id: "req-9".into(),
            id: b.id,
            code: b.code,
            labels: b.labels.clone(),
            expected_length: 99,
            placement: b.placement.clone(),
            now_ms: 5,
            expires_ms: 6,
            retain_until_unix_ms: 7,
        });
        let commit = Command::Commit(Commit {
            id: b.id,
            length: 1,
            index_offset: 2,
            index_length: 3,
            sha256: b.sha256.clone(),
            file_count: 4,
            missing_shards: vec![2, 9],
            now_ms: 7,
            agent: crate::types::Agent {
                kind: crate::types::AgentKind::Token,
                id: "0123456789abcdef".into(),
                name: "ci".into(),
            },
        });
        for cmd in [allocate, commit] {
            let v = encode_command(&cmd).unwrap();
            assert_eq!(v[0], keys::VALUE_V2);
            let back = decode_command(&v[1..]).unwrap();
            assert_eq!(format!("{back:?}"), format!("{cmd:?}"));
        }
        assert!(encode_command(&Command::Purge { id: b.id }).is_none());
    }

    #[test]
    fn damaged_version_2_values_are_errors_not_panics() {
        let v2 = encode_bundle(&record(), keys::VALUE_V2);
        // Every truncation and every single flipped byte either decodes or is an error.
        for cut in 0..v2.len() {
            let _ = decode_bundle(&v2[..cut]);
        }
        for i in 1..v2.len() {
            let mut bad = v2.clone();
            bad[i] ^= 0xff;
            let _ = decode_bundle(&bad);
        }
        assert!(decode_bundle(&[keys::VALUE_V2, 0x0a, 0x03, 1, 2, 3]).is_err());
        assert!(decode_command(&[]).is_err());
        assert!(decode_bundle(&[9, 1, 2]).is_err());
    }
}
