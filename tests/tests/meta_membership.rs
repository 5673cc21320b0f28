//! Add a member (learner, then voter) and remove one while writes continue; transfer leadership.
//! Each change is in the audit trail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitmountain_meta_client::audit::AuditFilter;
use bitmountain_meta_client::types::{AgentKind, AuditAction, AuditEvent, Outcome};
use bitmountain_meta_client::{AllocateRequest, BundleState, MetaClient};
use bitmountain_tests::meta_cluster::{register_fake_nodes, MetaCluster, RS_4_2};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn add_and_remove_members_while_writing() {
    let mut cluster = MetaCluster::start(3, &["--compact-log-entries", "200"]);
    cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = Arc::new(cluster.client());
    register_fake_nodes(&client, 6, 1).await;
    let code = RS_4_2;

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, bitmountain_meta_client::BundleId>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, stop, acked) = (client.clone(), stop.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let req = format!("w{w}-{i}");
                if let Ok(b) = client
                    .allocate_bundle(&AllocateRequest {
                        request_id: req.clone(),
                        code: Some(code),
                        ..Default::default()
                    })
                    .await
                {
                    acked.lock().unwrap().insert(req, b.record.id);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Add member 4: it starts empty and catches up as a learner, then votes.
    let addr4 = cluster.spawn_new(4);
    let members = client.add_member(4, &addr4, false).await.unwrap();
    assert!(
        members.iter().any(|m| m.id == 4 && m.role == "voter"),
        "{members:?}"
    );

    // Remove member 1 while writes continue, as the leader: the harder case (it must record
    // its own removal before the change takes its power to propose).
    if client.cluster_status().await.unwrap().leader_id != 1 {
        assert_eq!(client.transfer_leader(1).await.unwrap(), 1);
    }
    let members = client.remove_member(1).await.unwrap();
    assert!(!members.iter().any(|m| m.id == 1), "{members:?}");
    cluster.kill(1);
    let leader = cluster
        .wait_leader(&[2, 3, 4], Duration::from_secs(20))
        .await;

    // Hand leadership to member 4.
    let transferred = leader != 4;
    if transferred {
        let leader_id = client.transfer_leader(4).await.unwrap();
        assert_eq!(leader_id, 4);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes went through: {}",
        acked.len()
    );
    let pending = client
        .list_all_bundles(None, Some(BundleState::Pending))
        .await
        .unwrap();
    let ids: std::collections::BTreeSet<_> = pending.iter().map(|b| b.record.id).collect();
    for (req, id) in &acked {
        assert!(ids.contains(id), "acknowledged allocation {req} missing");
    }
    // Member 4 has all of it in its own state machine.
    let st = client.cluster_status().await.unwrap();
    cluster
        .wait_applied(4, st.commit_index, Duration::from_secs(20))
        .await;
    let own = cluster.client_of(&[4]);
    for id in acked.values().take(50) {
        own.get_bundle(*id, true).await.unwrap();
    }
    let s4 = cluster.status_of(4, Duration::from_secs(2)).await.unwrap();
    let mut voters: Vec<u64> = s4
        .members
        .iter()
        .filter(|m| m.role == "voter")
        .map(|m| m.id)
        .collect();
    voters.sort_unstable();
    assert_eq!(voters, vec![2, 3, 4]);

    // Each change is in the audit trail, as the operator's (the admin token's) success.
    let mut wanted = vec![
        ("member 4", "added as a voter"),
        ("member 1", "(the leader) is being removed"),
    ];
    if transferred {
        wanted.push(("member 4", "leadership asked to move to member 4"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = member_changes(&client).await;
        let found = |(object, detail): &(&str, &str)| {
            events.iter().any(|e| {
                e.object == *object
                    && e.detail.contains(detail)
                    && e.outcome == Outcome::Success
                    && e.agent.kind == AgentKind::Token
            })
        };
        if wanted.iter().all(found) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member changes {wanted:?} not all audited: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The member-change events of the audit trail.
async fn member_changes(client: &MetaClient) -> Vec<AuditEvent> {
    let filter = AuditFilter {
        action: Some(AuditAction::MemberChange),
        ..Default::default()
    };
    let page = client.list_audit(&filter, 0, 100).await.unwrap();
    page.events
        .iter()
        .map(|(_, v)| AuditEvent::decode(v).unwrap())
        .collect()
}
