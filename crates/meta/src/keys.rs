//! Every key prefix of the state machine (column family `sm`), in one place.
//!
//! Integers are big-endian so keys sort numerically; bundle ids are 16 big-endian bytes so
//! bundles sort by creation time. Values are a version byte followed by JSON (`VALUE_V1`) or, for
//! bundle records, request values and hot commands in newer groups, protobuf (`VALUE_V2`).

use crate::types::BundleId;

/// Version byte of JSON values (all values but the ones below in groups of value format 2).
pub const VALUE_V1: u8 = 1;
/// Version byte of protobuf values (`proto/state.proto`): bundle records, allocation request
/// values and the allocate and commit commands in the Raft log, in groups whose
/// `ClusterRecord::value_format` is 2 (`crate::codec`).
pub const VALUE_V2: u8 = 2;
/// Group value format 3: the encodings of version 2, and the audit trail (`AUDIT`) kept from
/// then on. Not a version byte: no value starts with it.
pub const VALUE_FORMAT_AUDIT: u8 = 3;
/// The value format a new group writes.
pub const VALUE_FORMAT_NEWEST: u8 = VALUE_FORMAT_AUDIT;

/// `0x01` → cluster record (id, id counters, bundle counts by state, repair count).
pub const CLUSTER: &[u8] = &[0x01];
/// `0x10 | node id` → node record.
pub const NODE: u8 = 0x10;
/// `0x11 | disk id` → disk record.
pub const DISK: u8 = 0x11;
/// `0x12 | chunk u64` → bytes placed on the disks with ids `chunk × DISK_USAGE_CHUNK ..
/// (chunk + 1) × DISK_USAGE_CHUNK`: `VALUE_V1`, then per disk `disk id u64 | bytes u64`.
/// Overrides `accounted_bytes` of those disk records, which are rewritten only when the disk
/// itself changes (a round of allocations then writes one small binary value per chunk it
/// touched instead of a JSON record per disk).
pub const DISK_USAGE: u8 = 0x12;
/// Disk ids per `DISK_USAGE` value.
pub const DISK_USAGE_CHUNK: u64 = 64;
/// `0x20 | bundle id` → bundle record.
pub const BUNDLE: u8 = 0x20;
/// `0x21 | disk id | bundle id` → shard index (`u32`): the disk → bundles reverse map.
pub const DISK_BUNDLE: u8 = 0x21;
/// `0x22 | u16 key len | key | u16 value len | value | bundle id` → empty: label → bundles.
pub const LABEL: u8 = 0x22;
/// `0x23 | state tag | bundle id` → empty: state → bundles.
pub const STATE: u8 = 0x23;
/// `0x24 | request id` → bundle id or node id: idempotent retries.
pub const REQUEST: u8 = 0x24;
/// `0x25 | expires ms | bundle id` → empty: pending allocations by expiry.
pub const EXPIRY: u8 = 0x25;
/// `0x30 | healthy shards u32 | bundle id` → repair task: the repair queue, most endangered
/// first.
pub const REPAIR: u8 = 0x30;
/// `0x31 | bundle id` → healthy shards `u32`: finds a bundle's queue entry.
pub const REPAIR_BY_BUNDLE: u8 = 0x31;
/// `0x40 | token id (8 bytes)` → access token record (`VALUE_V1` JSON, the secret's hash only).
pub const TOKEN: u8 = 0x40;
/// `0x50 | bundle id | shard u32 | disk u64` → a shard file a disk's scan reported during a
/// recovery (`VALUE_V1` JSON `FoundShard`); removed when the recovery settles its bundle.
pub const FOUND_SHARD: u8 = 0x50;
/// `0x51 | bundle id | disk u64` → a tombstone a disk's scan reported during a recovery
/// (`VALUE_V1` JSON: deleted_unix_ms); removed with the bundle's found shards.
pub const FOUND_TOMBSTONE: u8 = 0x51;
/// `0x52` → the last finished recovery's report (`VALUE_V1` JSON, `RecoveryReport`).
pub const RECOVERY_REPORT: &[u8] = &[0x52];
/// `0x60 | seq u64` → an audit event (`AUDIT_EVENT_VERSION` JSON, chained by SHA-256; the head
/// is in the cluster record). Never rewritten or removed.
pub const AUDIT: u8 = 0x60;
/// `0x61 | bundle id | seq u64` → empty: a bundle's audit events.
pub const AUDIT_BY_BUNDLE: u8 = 0x61;

fn with(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
    k.push(prefix);
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// Node key.
pub fn node(id: u64) -> Vec<u8> {
    with(NODE, &[&id.to_be_bytes()])
}
/// Disk key.
pub fn disk(id: u64) -> Vec<u8> {
    with(DISK, &[&id.to_be_bytes()])
}
/// The `DISK_USAGE` chunk holding `disk_id`.
pub fn disk_usage_chunk(disk_id: u64) -> u64 {
    disk_id / DISK_USAGE_CHUNK
}
/// Disk usage key of a chunk.
pub fn disk_usage(chunk: u64) -> Vec<u8> {
    with(DISK_USAGE, &[&chunk.to_be_bytes()])
}
/// Bundle key.
pub fn bundle(id: BundleId) -> Vec<u8> {
    with(BUNDLE, &[&id.to_bytes()])
}
/// Reverse-map key.
pub fn disk_bundle(disk: u64, id: BundleId) -> Vec<u8> {
    with(DISK_BUNDLE, &[&disk.to_be_bytes(), &id.to_bytes()])
}
/// Reverse-map prefix of one disk.
pub fn disk_bundle_prefix(disk: u64) -> Vec<u8> {
    with(DISK_BUNDLE, &[&disk.to_be_bytes()])
}
/// Label prefix (key and value).
pub fn label_prefix(key: &str, value: &str) -> Vec<u8> {
    with(
        LABEL,
        &[
            &(key.len() as u16).to_be_bytes(),
            key.as_bytes(),
            &(value.len() as u16).to_be_bytes(),
            value.as_bytes(),
        ],
    )
}
/// Label key.
pub fn label(key: &str, value: &str, id: BundleId) -> Vec<u8> {
    let mut k = label_prefix(key, value);
    k.extend_from_slice(&id.to_bytes());
    k
}
/// State prefix.
pub fn state_prefix(tag: u8) -> Vec<u8> {
    vec![STATE, tag]
}
/// State key.
pub fn state(tag: u8, id: BundleId) -> Vec<u8> {
    with(STATE, &[&[tag], &id.to_bytes()])
}
/// Request key.
pub fn request(id: &str) -> Vec<u8> {
    with(REQUEST, &[id.as_bytes()])
}
/// Expiry key.
pub fn expiry(expires_ms: u64, id: BundleId) -> Vec<u8> {
    with(EXPIRY, &[&expires_ms.to_be_bytes(), &id.to_bytes()])
}
/// Repair key.
pub fn repair(healthy: u32, id: BundleId) -> Vec<u8> {
    with(REPAIR, &[&healthy.to_be_bytes(), &id.to_bytes()])
}
/// Repair-by-bundle key.
pub fn repair_by_bundle(id: BundleId) -> Vec<u8> {
    with(REPAIR_BY_BUNDLE, &[&id.to_bytes()])
}

/// Found-shard key.
pub fn found_shard(id: BundleId, shard: u32, disk: u64) -> Vec<u8> {
    with(
        FOUND_SHARD,
        &[&id.to_bytes(), &shard.to_be_bytes(), &disk.to_be_bytes()],
    )
}
/// Found-shard prefix of one bundle.
pub fn found_shard_prefix(id: BundleId) -> Vec<u8> {
    with(FOUND_SHARD, &[&id.to_bytes()])
}
/// Found-tombstone key.
pub fn found_tombstone(id: BundleId, disk: u64) -> Vec<u8> {
    with(FOUND_TOMBSTONE, &[&id.to_bytes(), &disk.to_be_bytes()])
}
/// Found-tombstone prefix of one bundle.
pub fn found_tombstone_prefix(id: BundleId) -> Vec<u8> {
    with(FOUND_TOMBSTONE, &[&id.to_bytes()])
}
/// The bundle id right after a one-byte prefix (found-shard and found-tombstone keys).
pub fn leading_bundle_id(key: &[u8]) -> Option<BundleId> {
    let b: [u8; 16] = key.get(1..17)?.try_into().ok()?;
    Some(BundleId(u128::from_be_bytes(b)))
}

/// Audit event key.
pub fn audit(seq: u64) -> Vec<u8> {
    with(AUDIT, &[&seq.to_be_bytes()])
}
/// The event number of an audit key.
pub fn audit_seq(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(1..9)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}
/// A bundle's audit index key.
pub fn audit_by_bundle(id: BundleId, seq: u64) -> Vec<u8> {
    with(AUDIT_BY_BUNDLE, &[&id.to_bytes(), &seq.to_be_bytes()])
}
/// A bundle's audit index prefix.
pub fn audit_by_bundle_prefix(id: BundleId) -> Vec<u8> {
    with(AUDIT_BY_BUNDLE, &[&id.to_bytes()])
}
/// The event number at the end of an audit index key.
pub fn trailing_seq(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Access token key.
pub fn token(id: bitmountain_auth::TokenId) -> Vec<u8> {
    with(TOKEN, &[&id.to_bytes()])
}

/// The bundle id in the last 16 bytes of an index key.
pub fn trailing_bundle_id(key: &[u8]) -> Option<BundleId> {
    if key.len() < 16 {
        return None;
    }
    let b: [u8; 16] = key[key.len() - 16..].try_into().ok()?;
    Some(BundleId(u128::from_be_bytes(b)))
}

/// Smallest key greater than every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; 17]
}
