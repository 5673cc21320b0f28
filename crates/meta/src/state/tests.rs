//! State-machine tests: histories applied in rounds of any size reach the same state, the
//! value format is replicated state, undecodable entries stop the member; the invariant
//! checker runs after every round.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;

use bitmountain_raftstore::rocksdb::{self, WriteBatch};
use bitmountain_raftstore::{ApplyCtx, StateMachine};

use super::*;
use crate::codec;
use crate::command::{Allocate, Applied, ApplyResult, Command, Commit, DiskSpec, RegisterNode};
use crate::error::MetaError;
use crate::keys;
use crate::types::{BundleId, BundleState, Code, DiskState};

/// The registration of node `n` with one new 1 TiB disk.
pub(super) fn register(n: u64) -> Command {
    Command::RegisterNode(RegisterNode {
        request_id: format!("n{n}"),
        node_id: 0,
        address: format!("127.0.0.1:{n}"),
        zone: String::new(),
        rack: String::new(),
        host: format!("host-{n}"),
        disks: vec![DiskSpec {
            disk_id: 0,
            path: "/d".into(),
            capacity_bytes: 1 << 40,
        }],
        cluster_id_candidate: "c".into(),
        cluster_id: String::new(),
        now_ms: 1_000,
        agent: Default::default(),
        first_value_format: 0,
    })
}

/// Applies the invariant checker to the store; every violation fails the test.
fn assert_invariants(store: &MetaStore) {
    let report = check(store).unwrap();
    assert!(
        report.is_clean(),
        "invariants broken: {:#?}",
        report.violations
    );
}

#[test]
fn prefix_end_is_the_first_key_after_the_prefix() {
    assert_eq!(keys::prefix_end(&[0x23, 0x01]), vec![0x23, 0x02]);
    assert_eq!(keys::prefix_end(&[0x21, 0x00, 0xff]), vec![0x21, 0x01]);
    // No state-machine key starts with 0xff, so this bound is above all of them.
    assert_eq!(keys::prefix_end(&[0xff, 0xff]), vec![0xff; 17]);
}

/// The commands of a short history: registrations, allocations (one retried), commits (one
/// with a missing shard, one repeated), an abort, and a disk failure in the middle.
pub(super) fn history(disks: &[u64]) -> Vec<Command> {
    let code = Code {
        data_shards: 2,
        parity_shards: 2,
        ..Code::DEFAULT
    };
    let alloc = |i: u64, request: &str| {
        Command::Allocate(Allocate {
            request_id: request.into(),
            id: BundleId(1_000 + i as u128),
            code,
            labels: BTreeMap::from([("book".to_string(), format!("b{}", i % 3))]),
            expected_length: 4 << 20,
            placement: (0..4).map(|k| disks[((i + k) % 6) as usize]).collect(),
            now_ms: 10 + i,
            expires_ms: 1_000_000,
            retain_until_unix_ms: 0,
        })
    };
    let commit = |i: u64, missing: Vec<u32>| {
        Command::Commit(Commit {
            id: BundleId(1_000 + i as u128),
            length: 3 << 20,
            index_offset: 100,
            index_length: 100,
            sha256: vec![i as u8; 32],
            file_count: 10,
            missing_shards: missing,
            now_ms: 500,
            agent: Default::default(),
        })
    };
    let mut h = Vec::new();
    for i in 0..8 {
        h.push(alloc(i, &format!("a{i}")));
    }
    // A retried allocation: answered with the first one's bundle, whatever id it carries.
    h.push(alloc(20, "a3"));
    h.push(commit(0, vec![]));
    h.push(commit(1, vec![1]));
    h.push(commit(2, vec![]));
    h.push(Command::SetDiskState {
        disk_id: disks[5],
        state: DiskState::Failed,
        now_ms: 600,
        agent: Default::default(),
    });
    h.push(commit(3, vec![]));
    h.push(commit(3, vec![]));
    h.push(Command::Abort {
        id: BundleId(1_006),
    });
    h.push(alloc(9, "a9"));
    h.push(commit(9, vec![]));
    h
}

/// Every key-value of a column family, in key order.
type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// Applies `cmds` in rounds of `round` entries, as the driver does; returns every answer
/// and every key-value of the state machine.
fn run_in_rounds(round: usize) -> (Vec<String>, KeyValues) {
    let dir = tempfile::tempdir().unwrap();
    let engine = bitmountain_raftstore::Engine::open(dir.path()).unwrap();
    let store = MetaStore::load(engine.db().clone()).unwrap();
    let mut sm = MetaStateMachine::new(store.clone());
    let mut index = 10;
    let mut answers = Vec::new();
    let mut apply = |sm: &mut MetaStateMachine, cmds: Vec<Command>, answers: &mut Vec<String>| {
        for chunk in cmds.chunks(round) {
            let mut batch = WriteBatch::default();
            for c in chunk {
                index += 1;
                let ctx = ApplyCtx::new(index, 1, &mut batch, &engine, (index - 1, 1));
                answers.push(format!(
                    "{:?}",
                    sm.apply(ctx, &c.encode(keys::VALUE_FORMAT_NEWEST))
                ));
            }
            sm.before_write(&mut batch);
            engine.write(batch, false).unwrap();
            assert_invariants(&store);
        }
    };
    let register: Vec<Command> = (1..=6).map(register).collect();
    apply(&mut sm, register, &mut answers);
    let disks: Vec<u64> = store.map().disks.keys().copied().collect();
    assert_eq!(disks.len(), 6);
    apply(&mut sm, history(&disks), &mut answers);
    // What a restart reads back: the disks' placed bytes come from the usage keys, which
    // rounds of allocations write instead of the disk records.
    let reloaded = MetaStore::load(engine.db().clone()).unwrap();
    assert_eq!(reloaded.map().disks, store.map().disks);
    assert!(store.map().disks.values().any(|d| d.accounted_bytes > 0));
    let cf = store.cf().unwrap();
    let kvs = engine
        .db()
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|kv| {
            let (k, v) = kv.unwrap();
            (k.to_vec(), v.to_vec())
        })
        .collect();
    (answers, kvs)
}

/// A state machine on a fresh store that applies one entry per round, as the leader
/// encodes it (in the store's current value format).
pub(super) struct OneByOne {
    _dir: tempfile::TempDir,
    engine: bitmountain_raftstore::Engine,
    pub(super) store: Arc<MetaStore>,
    sm: MetaStateMachine,
    index: u64,
}

impl OneByOne {
    pub(super) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let engine = bitmountain_raftstore::Engine::open(dir.path()).unwrap();
        let store = MetaStore::load(engine.db().clone()).unwrap();
        let sm = MetaStateMachine::new(store.clone());
        Self {
            _dir: dir,
            engine,
            store,
            sm,
            index: 10,
        }
    }

    fn apply_bytes(&mut self, command: &[u8]) -> ApplyResult {
        let mut batch = WriteBatch::default();
        self.index += 1;
        let earlier = (self.index - 1, 1);
        let ctx = ApplyCtx::new(self.index, 1, &mut batch, &self.engine, earlier);
        let r = self.sm.apply(ctx, command);
        self.sm.before_write(&mut batch);
        self.engine.write(batch, false).unwrap();
        assert_invariants(&self.store);
        r
    }

    pub(super) fn apply(&mut self, c: &Command) -> ApplyResult {
        let bytes = c.encode(self.store.value_format());
        self.apply_bytes(&bytes)
    }
}

#[test]
#[should_panic(expected = "upgrade bitmountain on this member")]
fn a_committed_command_this_member_cannot_read_stops_it() {
    // Version 3 does not exist (yet): what a newer binary might write.
    let _ = OneByOne::new().apply_bytes(&[3, 0x0a, 0x00]);
}

#[test]
fn groups_write_the_value_format_their_cluster_record_names() {
    let mut one = OneByOne::new();
    let store = one.store.clone();
    // No cluster record before the first registration: version 1 (as in a record
    // written before the field existed).
    assert_eq!(store.value_format(), keys::VALUE_V1);
    let disks: Vec<u64> = (1..=4)
        .map(|n| {
            let cmd = register(n);
            match one.apply(&cmd).unwrap() {
                Applied::Node { disks, .. } => disks[0].id,
                other => panic!("{other:?}"),
            }
        })
        .collect();
    // The first registration switched the group to the newest format.
    assert_eq!(store.value_format(), keys::VALUE_FORMAT_NEWEST);
    let code = Code {
        data_shards: 2,
        parity_shards: 2,
        ..Code::DEFAULT
    };
    let id = BundleId(77);
    one.apply(&Command::Allocate(Allocate {
        request_id: "r".into(),
        id,
        code,
        labels: BTreeMap::new(),
        expected_length: 10,
        placement: disks.clone(),
        now_ms: 1,
        expires_ms: 1_000,
        retain_until_unix_ms: 0,
    }))
    .unwrap();
    let raw = store.get_raw(&keys::bundle(id)).unwrap().unwrap();
    assert_eq!(raw[0], keys::VALUE_V2);
    let raw = store.get_raw(&keys::request("r")).unwrap().unwrap();
    assert_eq!(raw[0], keys::VALUE_V2);
    assert_eq!(store.request_bundle("r").unwrap(), Some(id));
    // A record still in version 1 (written before the switch) reads back as well.
    let mut old = store.bundle(id).unwrap().unwrap();
    old.file_count = 5;
    let cf = store.cf().unwrap();
    store
        .db()
        .put_cf(cf, keys::bundle(id), codec::encode_value(&old))
        .unwrap();
    assert_eq!(store.bundle(id).unwrap().unwrap(), old);
}

#[test]
fn a_group_switches_to_a_newer_value_format_and_never_back() {
    let mut one = OneByOne::new();
    let store = one.store.clone();
    let mut apply = |value_format: u8| {
        one.apply(&Command::SetValueFormat {
            value_format,
            now_ms: 0,
            agent: Default::default(),
        })
    };
    assert_eq!(store.value_format(), keys::VALUE_V1);
    assert!(apply(keys::VALUE_V1).is_ok());
    assert!(apply(keys::VALUE_V2).is_ok());
    assert_eq!(store.value_format(), keys::VALUE_V2);
    for refused in [keys::VALUE_V1, keys::VALUE_FORMAT_NEWEST + 1] {
        let e = apply(refused).unwrap_err();
        assert!(
            matches!(e, MetaError::ValueFormatRefused { requested, .. } if requested == u32::from(refused)),
            "{e}"
        );
    }
    assert_eq!(store.value_format(), keys::VALUE_V2);
    // The switch is in the stored cluster record, not only in memory.
    store.reload().unwrap();
    assert_eq!(store.value_format(), keys::VALUE_V2);
}

#[test]
fn rounds_of_any_size_reach_the_same_state() {
    let (answers, state) = run_in_rounds(1);
    // The history did what it says: the retry got bundle 3, the abort removed bundle 6.
    assert!(answers[6 + 8].contains("1003"), "{}", answers[6 + 8]);
    assert!(state
        .iter()
        .any(|(k, _)| k.as_slice() == keys::bundle(BundleId(1_000)).as_slice()));
    assert!(!state
        .iter()
        .any(|(k, _)| k.as_slice() == keys::bundle(BundleId(1_006)).as_slice()));
    assert!(!state
        .iter()
        .any(|(k, _)| k.as_slice() == keys::bundle(BundleId(1_020)).as_slice()));
    // A commit moved bundle 3 from the pending index to the sealed one (a delete and a put
    // of the round's sorted writes).
    let has = |key: Vec<u8>| state.iter().any(|(k, _)| *k == key);
    assert!(!has(keys::state(
        BundleState::Pending.tag(),
        BundleId(1_003)
    )));
    assert!(has(keys::state(BundleState::Sealed.tag(), BundleId(1_003))));
    for round in [2, 3, 7, 100] {
        let (a, s) = run_in_rounds(round);
        assert_eq!(a, answers, "answers differ with rounds of {round}");
        assert!(s == state, "state differs with rounds of {round}");
    }
}

/// The checker is not a formality: each kind of damage to a good state is named.
#[test]
fn the_checker_names_each_broken_invariant() {
    let dir = tempfile::tempdir().unwrap();
    let engine = bitmountain_raftstore::Engine::open(dir.path()).unwrap();
    let store = MetaStore::load(engine.db().clone()).unwrap();
    let mut sm = MetaStateMachine::new(store.clone());
    let mut index = 10;
    let mut apply = |cmd: Command| {
        let mut batch = WriteBatch::default();
        index += 1;
        let ctx = ApplyCtx::new(index, 1, &mut batch, &engine, (index - 1, 1));
        let r = sm.apply(ctx, &cmd.encode(store.value_format()));
        sm.before_write(&mut batch);
        engine.write(batch, false).unwrap();
        r.unwrap()
    };
    for n in 1..=4 {
        apply(register(n));
    }
    let disks: Vec<u64> = store.map().disks.keys().copied().collect();
    let id = BundleId(1);
    apply(Command::Allocate(Allocate {
        request_id: "r".into(),
        id,
        code: Code {
            data_shards: 2,
            parity_shards: 2,
            ..Code::DEFAULT
        },
        labels: BTreeMap::from([("k".to_string(), "v".to_string())]),
        expected_length: 1 << 20,
        placement: disks.clone(),
        now_ms: 1,
        expires_ms: 1_000_000,
        retain_until_unix_ms: 0,
    }));
    // A disk that fails while the bundle is pending: its commit queues the repair.
    apply(Command::SetDiskState {
        disk_id: disks[3],
        state: DiskState::Failed,
        now_ms: 2,
        agent: Default::default(),
    });
    apply(Command::Commit(Commit {
        id,
        length: 1 << 20,
        index_offset: 0,
        index_length: 10,
        sha256: vec![1; 32],
        file_count: 1,
        missing_shards: vec![],
        now_ms: 3,
        agent: Default::default(),
    }));
    assert!(store.repair_task(id).unwrap().is_some());
    assert_invariants(&store);

    let cf = store.cf().unwrap();
    let db = store.db();
    let expect = |needle: &str| {
        let report = check(&store).unwrap();
        assert!(
            report.violations.iter().any(|v| v.contains(needle)),
            "no violation naming {needle:?}: {:#?}",
            report.violations
        );
    };
    // An index key gone.
    db.delete_cf(cf, keys::label("k", "v", id)).unwrap();
    expect("missing");
    db.put_cf(cf, keys::label("k", "v", id), []).unwrap();
    // An index key no record implies.
    db.put_cf(cf, keys::label("k", "other", id), []).unwrap();
    expect("does not imply it");
    db.delete_cf(cf, keys::label("k", "other", id)).unwrap();
    // The repair entry gone.
    db.delete_cf(cf, keys::repair_by_bundle(id)).unwrap();
    expect("no repair entry");
    assert_eq!(
        check(&store).unwrap().violation_count,
        2,
        "the queue count too"
    );
    let task = store.list_repairs(&[], 10).unwrap().0.remove(0);
    db.put_cf(
        cf,
        keys::repair_by_bundle(id),
        task.healthy_shards.to_be_bytes(),
    )
    .unwrap();
    assert_invariants(&store);
    // A counter off by one, and placed bytes that do not add up.
    {
        let mut map = store.write_map();
        map.cluster.sealed += 1;
        map.disks.get_mut(&disks[0]).unwrap().accounted_bytes += 1;
    }
    expect("Sealed bundles");
    expect("placed bytes recorded");
}

/// Tokens: created once per id, the first admin token once per group, revoked for good (a
/// retried revoke answers the same), an unknown id refused; the checker holds after each.
#[test]
fn the_token_table_takes_each_token_once_and_revokes_for_good() {
    use bitmountain_auth::{Role, Scope, Token, TokenRecord};
    let mut one = OneByOne::new();
    let record = |role| {
        let token = Token::generate().unwrap();
        TokenRecord::new(&token, "t", role, Scope::default(), 1, 0)
    };
    let create = |record: &TokenRecord, if_version| {
        Command::CreateToken(crate::command::CreateToken {
            record: record.clone(),
            if_version,
            agent: Default::default(),
            now_ms: 0,
            first_value_format: 0,
        })
    };
    let admin = record(Role::Admin);
    assert!(matches!(
        one.apply(&create(&admin, Some(0))).unwrap(),
        Applied::Token(_)
    ));
    // A second first admin token (another member's) is refused, and so is a taken id.
    let late = one
        .apply(&create(&record(Role::Admin), Some(0)))
        .unwrap_err();
    assert!(matches!(late, MetaError::TokenRefused { .. }), "{late}");
    let twice = one.apply(&create(&admin, None)).unwrap_err();
    assert!(twice.to_string().contains("taken"), "{twice}");
    let reader = record(Role::Reader);
    one.apply(&create(&reader, None)).unwrap();
    let revoke = Command::RevokeToken {
        id: reader.id,
        now_ms: 50,
        agent: Default::default(),
    };
    let Applied::Token(revoked) = one.apply(&revoke).unwrap() else {
        panic!("a revoke answers the token")
    };
    assert_eq!(revoked.revoked_unix_ms, 50);
    // A retry answers the same and changes nothing.
    let again = Command::RevokeToken {
        id: reader.id,
        now_ms: 99,
        agent: Default::default(),
    };
    let Applied::Token(same) = one.apply(&again).unwrap() else {
        panic!("a revoke answers the token")
    };
    assert_eq!(same.revoked_unix_ms, 50);
    let unknown = Command::RevokeToken {
        id: record(Role::Reader).id,
        now_ms: 1,
        agent: Default::default(),
    };
    assert!(matches!(
        one.apply(&unknown).unwrap_err(),
        MetaError::UnknownToken { .. }
    ));
    let map = one.store.map().cluster.clone();
    assert_eq!((map.tokens, map.tokens_version), (2, 3));
    assert_eq!(one.store.list_tokens(10).unwrap().len(), 2);

    // Another group (a recovered one) reaches version 1 with its own admin token: the same
    // version, another fingerprint, so nodes holding the first group's table fetch the new one.
    // The same records give the same fingerprint on every member.
    let fingerprint = |g: &OneByOne| {
        let c = g.store.map().cluster.clone();
        (c.tokens_version, c.tokens_fingerprint)
    };
    let mut replica = OneByOne::new();
    replica.apply(&create(&admin, Some(0))).unwrap();
    let mut other = OneByOne::new();
    other.apply(&create(&record(Role::Admin), Some(0))).unwrap();
    assert_eq!(fingerprint(&replica).0, fingerprint(&other).0);
    assert_ne!(fingerprint(&replica), fingerprint(&other));
    replica.apply(&create(&reader, None)).unwrap();
    replica.apply(&revoke).unwrap();
    assert_eq!(fingerprint(&replica), fingerprint(&one));
    replica.apply(&again).unwrap();
    assert_eq!(
        fingerprint(&replica),
        fingerprint(&one),
        "a retried revoke changes nothing"
    );
}

/// A node of a recovering group, with the ids and cluster id its disks carry.
fn recovering_node(node: u64, disk: u64, cluster: &str) -> Command {
    Command::RegisterNode(RegisterNode {
        request_id: format!("r{node}"),
        node_id: node,
        address: format!("127.0.0.1:{node}"),
        zone: String::new(),
        rack: String::new(),
        host: format!("host-{node}"),
        disks: vec![DiskSpec {
            disk_id: disk,
            path: "/d".into(),
            capacity_bytes: 1 << 40,
        }],
        cluster_id_candidate: "fresh".into(),
        cluster_id: cluster.into(),
        now_ms: 1_000,
        agent: Default::default(),
        first_value_format: 0,
    })
}

#[test]
fn a_recovery_takes_the_nodes_ids_rebuilds_records_and_ends() {
    use crate::command::{RecordScan, RecoverBundles, RecoveredRecord, RecoveryReport};
    use crate::types::{BundleRecord, FoundShard};

    let mut m = OneByOne::new();
    let enter = Command::EnterRecovery {
        now_ms: 5,
        backup_unix_ms: 0,
        request_id: "req-1".into(),
    };
    m.apply(&enter).unwrap();
    for n in 1..=3u64 {
        match m.apply(&recovering_node(10 + n, 100 + n, "abc")).unwrap() {
            Applied::Node { node, disks, .. } => {
                assert_eq!(node.id, 10 + n);
                assert_eq!(disks[0].id, 100 + n);
            }
            other => panic!("{other:?}"),
        }
    }
    {
        let map = m.store.map();
        assert_eq!(map.cluster.cluster_id, "abc");
        assert!(map.cluster.next_node_id > 13 && map.cluster.next_disk_id > 103);
    }
    let e = m.apply(&recovering_node(20, 200, "zzz")).unwrap_err();
    assert!(e.to_string().contains("belong to cluster zzz"), "{e}");

    let id = BundleId((1u128 << 80) | 7);
    let code = Code {
        data_shards: 2,
        parity_shards: 1,
        cell_bytes: 1 << 20,
    };
    let found = FoundShard {
        bundle: id,
        shard_index: 0,
        disk_id: 101,
        code: Some(code),
        chunk_bytes: 65536,
        footer: None,
        description: None,
        problem: None,
    };
    let scan = |node: u64, last: bool| {
        Command::RecordScan(RecordScan {
            node_id: node,
            disk_id: 101,
            shards: vec![found.clone()],
            tombstones: vec![],
            last,
        })
    };
    assert!(matches!(
        m.apply(&scan(12, true)),
        Err(MetaError::DiskOwnedByOtherNode { .. })
    ));
    m.apply(&scan(11, true)).unwrap();
    assert!(m
        .store
        .get_raw(&keys::found_shard(id, 0, 101))
        .unwrap()
        .is_some());

    let record = BundleRecord {
        id,
        state: BundleState::Sealed,
        code,
        length: 5_000,
        index_offset: 10,
        index_length: 20,
        sha256: vec![1; 32],
        file_count: 3,
        labels: BTreeMap::from([("shelf".to_string(), "A1".to_string())]),
        created_unix_ms: 4,
        expires_unix_ms: 0,
        placement: vec![101, 102, 103],
        placement_generation: 1,
        request_id: String::new(),
        accounted_shard_bytes: code.shard_bytes(5_000),
        preservation: Default::default(),
    };
    let twice = RecoveredRecord {
        record: BundleRecord {
            placement: vec![101, 101, 103],
            ..record.clone()
        },
        damaged: vec![],
    };
    let recover = |b: RecoveredRecord| {
        Command::RecoverBundles(RecoverBundles {
            bundles: vec![b],
            settled: vec![],
            now_ms: 6,
        })
    };
    assert!(matches!(
        m.apply(&recover(twice)),
        Err(MetaError::MalformedPlacement { .. })
    ));
    m.apply(&recover(RecoveredRecord {
        record: record.clone(),
        damaged: vec![2],
    }))
    .unwrap();
    assert_eq!(m.store.bundle(id).unwrap().unwrap(), record);
    assert!(m
        .store
        .get_raw(&keys::found_shard(id, 0, 101))
        .unwrap()
        .is_none());
    assert_eq!(m.store.map().cluster.repairs, 1);
    assert_eq!(m.store.map().cluster.sealed, 1);

    m.apply(&Command::FinishRecovery {
        report: RecoveryReport {
            format: 1,
            recovered: 1,
            ..RecoveryReport::default()
        },
        orphan_hold_until_unix_ms: 99,
    })
    .unwrap();
    {
        let map = m.store.map();
        assert!(map.cluster.recovery.is_none());
        assert_eq!(map.cluster.orphan_hold_until_unix_ms, 99);
    }
    assert!(m.store.get_raw(keys::RECOVERY_REPORT).unwrap().is_some());
    // The same request again changes nothing; a scan outside a recovery is refused.
    m.apply(&enter).unwrap();
    assert!(m.store.map().cluster.recovery.is_none());
    assert!(m.apply(&scan(11, false)).is_err());
}
