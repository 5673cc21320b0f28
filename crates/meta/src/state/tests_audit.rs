//! The audit trail in the state machine: events chained and indexed in the entry that makes
//! the change, with the command's agent; refusals recorded; no trail before value format 3;
//! and the chain's walk naming an event edited, removed or truncated in RocksDB.
#![allow(clippy::unwrap_used)]

use super::tests::{history, register, OneByOne};
use crate::command::{Command, RecordEvents};
use crate::error::MetaError;
use crate::keys;
use crate::state::AuditQuery;
use crate::types::audit::AuditEvent;
use crate::types::{Agent, AgentKind, AuditAction, BundleState, NewEvent, Outcome};

/// A group at format 3 with six nodes and the short history applied.
fn audited() -> OneByOne {
    let mut one = OneByOne::new();
    for n in 1..=6 {
        one.apply(&register(n)).unwrap();
    }
    let disks: Vec<u64> = one.store.map().disks.keys().copied().collect();
    for c in history(&disks) {
        let _ = one.apply(&c);
    }
    one
}

fn events(one: &OneByOne, q: &AuditQuery) -> Vec<AuditEvent> {
    let (rows, next) = one.store.audit_page(q, 0, 1000).unwrap();
    assert_eq!(next, 0);
    rows.iter()
        .map(|(_, v)| AuditEvent::decode(v).unwrap())
        .collect()
}

#[test]
fn changes_are_events_with_their_agents_and_refusals_are_recorded() {
    let mut one = audited();
    let all = events(&one, &AuditQuery::default());
    let count = |a: AuditAction| {
        all.iter()
            .filter(|e| e.action == a && e.outcome == Outcome::Success)
            .count()
    };
    assert_eq!(count(AuditAction::NodeRegistration), 6);
    // One ingestion per bundle sealed (a repeated commit is recorded once), and the disk
    // failure in the middle.
    let sealed = one.store.map().cluster.sealed as usize;
    assert!(sealed >= 3);
    assert_eq!(count(AuditAction::Ingestion), sealed, "{all:#?}");
    assert_eq!(count(AuditAction::DiskStateChange), 1);
    // The commit of a bundle whose allocation failed is refused, and recorded so.
    let refused: Vec<_> = all
        .iter()
        .filter(|e| e.outcome == Outcome::Refused)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0].action, AuditAction::Ingestion);
    assert!(
        refused[0].detail.contains("unknown bundle"),
        "{:?}",
        refused[0]
    );
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }

    let filter = crate::state::ListFilter {
        label: None,
        state: Some(BundleState::Sealed),
    };
    let id = one.store.list_bundles(&filter, &[], 1).unwrap().0[0].id;
    let curator = Agent {
        kind: AgentKind::Token,
        id: "00000000000000aa".into(),
        name: "curator".into(),
    };
    let hold = crate::types::LegalHold {
        reason: "litigation".into(),
        since_unix_ms: 700,
    };
    let set = Command::SetLegalHold {
        id,
        hold: Some(hold),
        reason: "litigation".into(),
        now_ms: 700,
        agent: curator.clone(),
    };
    one.apply(&set).unwrap();
    let delete = Command::Delete {
        id,
        now_ms: 701,
        reason: "weeding".into(),
        agent: curator.clone(),
    };
    assert!(one.apply(&delete).is_err());
    let mine = events(
        &one,
        &AuditQuery {
            bundle: Some(id),
            ..AuditQuery::default()
        },
    );
    let last: Vec<_> = mine.iter().rev().take(2).collect();
    assert_eq!(last[0].action, AuditAction::Deletion);
    assert_eq!(last[0].outcome, Outcome::Refused);
    assert_eq!(last[0].agent, curator);
    assert!(last[0].detail.contains("legal hold"), "{}", last[0].detail);
    assert_eq!(last[1].action, AuditAction::PolicyAssignment);
    assert_eq!(last[1].detail, "legal hold set: litigation");
    assert!(mine.iter().all(|e| e.bundle == id.to_string()));
    let by_agent = events(
        &one,
        &AuditQuery {
            agent: Some("curator".into()),
            ..AuditQuery::default()
        },
    );
    assert_eq!(by_agent.len(), 2);

    // Reported events, and what a full reporter's queue lost, as one more.
    let reported = NewEvent {
        time_unix_ms: 800,
        agent: curator,
        action: AuditAction::Dissemination,
        object: format!("bundle {id}"),
        bundle: Some(id),
        outcome: Outcome::Refused,
        detail: "out of scope".into(),
    };
    one.apply(&Command::RecordEvents(RecordEvents {
        events: vec![reported],
        source: "node:n1".into(),
        dropped: 7,
        now_ms: 801,
    }))
    .unwrap();
    let all = events(&one, &AuditQuery::default());
    let tail: Vec<_> = all.iter().rev().take(2).collect();
    assert_eq!(tail[1].source, "node:n1");
    assert!(tail[0].detail.starts_with("7 events were not recorded"));
    assert_eq!(one.store.verify_audit().unwrap().first_break, None);
}

#[test]
fn a_new_group_writes_the_format_its_first_command_asks_for() {
    let with_format = |c: Command, f: u8| match c {
        Command::RegisterNode(mut r) => {
            r.first_value_format = f;
            Command::RegisterNode(r)
        }
        other => panic!("{other:?}"),
    };
    // The first registration asks for format 2: no trail, and a later registration asking
    // for another format changes nothing.
    let mut one = OneByOne::new();
    one.apply(&with_format(register(1), keys::VALUE_V2))
        .unwrap();
    one.apply(&with_format(register(2), keys::VALUE_FORMAT_AUDIT))
        .unwrap();
    assert_eq!(one.store.value_format(), keys::VALUE_V2);
    assert_eq!(one.store.map().cluster.audit.seq, 0);
    // The first admin token asks for format 2; the first registration after it keeps it.
    let mut one = OneByOne::new();
    let token = bitmountain_auth::Token::generate().unwrap();
    let record = bitmountain_auth::TokenRecord::new(
        &token,
        "admin (first)",
        bitmountain_auth::Role::Admin,
        Default::default(),
        1,
        0,
    );
    one.apply(&Command::CreateToken(crate::command::CreateToken {
        record,
        if_version: Some(0),
        agent: Agent::system("bootstrap"),
        now_ms: 1,
        first_value_format: keys::VALUE_V2,
    }))
    .unwrap();
    one.apply(&register(1)).unwrap();
    assert_eq!(one.store.value_format(), keys::VALUE_V2);
    assert_eq!(one.store.map().cluster.audit.seq, 0);
    // A format this binary does not write is refused, and the group is left unstarted.
    let mut one = OneByOne::new();
    let e = one
        .apply(&with_format(register(1), keys::VALUE_FORMAT_NEWEST + 1))
        .unwrap_err();
    assert!(matches!(e, MetaError::ValueFormatRefused { .. }), "{e}");
    assert!(one.store.map().cluster.cluster_id.is_empty());
    // 0 (entries from before the field) is the newest.
    one.apply(&with_format(register(1), 0)).unwrap();
    assert_eq!(one.store.value_format(), keys::VALUE_FORMAT_NEWEST);
}

#[test]
fn a_group_before_format_3_keeps_no_trail_until_it_switches() {
    let mut one = OneByOne::new();
    let switch = |v: u8| Command::SetValueFormat {
        value_format: v,
        now_ms: 5,
        agent: Agent::system("test"),
    };
    one.apply(&switch(keys::VALUE_V2)).unwrap();
    assert_eq!(one.store.map().cluster.audit.seq, 0);
    one.apply(&switch(keys::VALUE_FORMAT_AUDIT)).unwrap();
    let all = events(&one, &AuditQuery::default());
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].action, AuditAction::SettingsChange);
    assert_eq!(all[0].detail, "value format 2 → 3");
}

#[test]
fn audit_verify_names_the_first_edited_event() {
    let one = audited();
    let report = one.store.verify_audit().unwrap();
    assert_eq!(report.first_break, None, "{report:?}");
    let head = one.store.map().cluster.audit.seq;
    assert!(head >= 10, "{head}");
    let db = one.store.db();
    let cf = one.store.cf().unwrap();
    let original = one.store.get_audit(3).unwrap().unwrap();

    // Event 3 rewritten in RocksDB: the walk breaks at event 4, whose link no longer holds.
    let mut edited = AuditEvent::decode(&original).unwrap();
    edited.detail = "nothing happened".into();
    db.put_cf(cf, keys::audit(3), edited.encode()).unwrap();
    let b = one.store.verify_audit().unwrap().first_break.unwrap();
    assert_eq!(b.seq, 4, "{b:?}");
    assert!(b.problem.contains("event 3 was changed"), "{}", b.problem);

    // Event 3 removed: named as missing.
    db.delete_cf(cf, keys::audit(3)).unwrap();
    let b = one.store.verify_audit().unwrap().first_break.unwrap();
    assert_eq!(b.seq, 4, "{b:?}");
    assert!(b.problem.contains("missing"), "{}", b.problem);
    db.put_cf(cf, keys::audit(3), &original).unwrap();
    assert_eq!(one.store.verify_audit().unwrap().first_break, None);

    // The last event removed: the head names what is gone.
    let last = one.store.get_audit(head).unwrap().unwrap();
    db.delete_cf(cf, keys::audit(head)).unwrap();
    let b = one.store.verify_audit().unwrap().first_break.unwrap();
    assert_eq!(b.seq, head, "{b:?}");
    db.put_cf(cf, keys::audit(head), &last).unwrap();
    assert_eq!(one.store.verify_audit().unwrap().first_break, None);
}
