//! Access control on a real cluster (TLS, certificates, tokens): every role against every kind
//! of RPC, scoped tokens across two labels, expiry and revocation on every node, certificates
//! of another CA or of the wrong role, malformed tokens; and `--insecure` clusters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bitmountain_auth::{Role, Scope};
use bitmountain_proto::archive::v1 as apb;
use bitmountain_proto::archive::v1::archive_service_client::ArchiveServiceClient;
use bitmountain_proto::v1 as pb;
use bitmountain_proto::v1::meta_admin_client::MetaAdminClient;
use bitmountain_proto::v1::meta_service_client::MetaServiceClient;
use bitmountain_proto::v1::node_service_client::NodeServiceClient;
use bitmountain_proto::{AuthChannel, Credentials};
use bitmountain_tests::cluster::Cluster;
use bitmountain_tests::error_kind;
use bitmountain_tests::pki::{channel, TestPki};
use tonic::Code;

/// What one RPC needs from a token (`None`: no token may call it).
#[derive(Debug, Clone, Copy)]
enum Needs {
    Read,
    Write,
    Delete,
    Operate,
    Admin,
    PeerOnly,
}

fn role_has(role: Role, needs: Needs) -> bool {
    use bitmountain_auth::Permission as P;
    let p = match needs {
        Needs::Read => P::Read,
        Needs::Write => P::Write,
        Needs::Delete => P::Delete,
        Needs::Operate => P::Operate,
        Needs::Admin => P::Admin,
        Needs::PeerOnly => return false,
    };
    role.has(p)
}

const UNKNOWN_BUNDLE: &str = "000000000000000000000000000000ff";

/// Calls the RPC named `rpc` with `creds`; `Ok` or the status it failed with.
async fn call(
    rpc: &str,
    node: &str,
    member: &str,
    bundle: &str,
    creds: &Credentials,
) -> Result<(), tonic::Status> {
    let meta = || MetaServiceClient::new(channel(member, creds));
    let admin = || MetaAdminClient::new(channel(member, creds));
    let shards = || NodeServiceClient::new(channel(node, creds));
    if rpc.starts_with("ArchiveService/") {
        let archive = ArchiveServiceClient::new(channel(node, creds));
        return archive_call(rpc, archive, bundle).await;
    }
    match rpc {
        "MetaService/ClusterStatus" => meta()
            .cluster_status(pb::ClusterStatusRequest {})
            .await
            .map(drop),
        "MetaService/RepairStatus" => meta()
            .repair_status(pb::RepairStatusRequest {})
            .await
            .map(drop),
        "MetaService/ListRepairs" => meta()
            .list_repairs(pb::ListRepairsRequest::default())
            .await
            .map(drop),
        "MetaService/Rebalance" => meta()
            .rebalance(pb::RebalanceRequest {
                max_bytes: 0,
                dry_run: true,
            })
            .await
            .map(drop),
        "MetaService/Heartbeat" => meta()
            .heartbeat(pb::HeartbeatRequest::default())
            .await
            .map(drop),
        "MetaAdmin/ListAudit" => admin()
            .list_audit(pb::ListAuditRequest::default())
            .await
            .map(drop),
        "MetaService/RecordEvents" => meta()
            .record_events(pb::RecordEventsRequest::default())
            .await
            .map(drop),
        "MetaAdmin/ListTokens" => admin()
            .list_tokens(pb::ListTokensRequest {})
            .await
            .map(drop),
        "MetaAdmin/CreateToken" => admin()
            .create_token(pb::CreateTokenRequest {
                name: "made-in-test".into(),
                role: "reader".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        "NodeService/StartScrub" => shards()
            .start_scrub(pb::StartScrubRequest {})
            .await
            .map(drop),
        "NodeService/ListShards" => shards()
            .list_shards(pb::ListShardsRequest { disk_id: 1 })
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

/// Calls an ArchiveService RPC.
async fn archive_call(
    rpc: &str,
    mut archive: ArchiveServiceClient<AuthChannel>,
    bundle: &str,
) -> Result<(), tonic::Status> {
    async fn drain<T>(
        r: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
    ) -> Result<(), tonic::Status> {
        let mut s = r?.into_inner();
        while s.message().await?.is_some() {}
        Ok(())
    }
    match rpc {
        "ArchiveService/PutBundle" => {
            let items = vec![
                apb::put_bundle_request::Item::Start(apb::BundleStart::default()),
                apb::put_bundle_request::Item::File(apb::FileStart {
                    path: "p.txt".into(),
                    size_bytes: 2,
                    ..Default::default()
                }),
                apb::put_bundle_request::Item::Data(b"hi".to_vec().into()),
                apb::put_bundle_request::Item::End(apb::BundleEnd::default()),
            ];
            let stream = tokio_stream::iter(
                items
                    .into_iter()
                    .map(|item| apb::PutBundleRequest { item: Some(item) }),
            );
            archive.put_bundle(stream).await.map(drop)
        }
        "ArchiveService/GetFile" => {
            drain(
                archive
                    .get_file(apb::GetFileRequest {
                        bundle_id: bundle.into(),
                        path: "a.txt".into(),
                        ..Default::default()
                    })
                    .await,
            )
            .await
        }
        "ArchiveService/GetIndex" => {
            drain(
                archive
                    .get_index(apb::GetIndexRequest {
                        bundle_id: bundle.into(),
                    })
                    .await,
            )
            .await
        }
        "ArchiveService/StatBundle" => archive
            .stat_bundle(apb::StatBundleRequest {
                bundle_id: bundle.into(),
            })
            .await
            .map(drop),
        "ArchiveService/ListBundles" => archive
            .list_bundles(apb::ListBundlesRequest::default())
            .await
            .map(drop),
        "ArchiveService/ExportBundle" => {
            drain(
                archive
                    .export_bundle(apb::ExportBundleRequest {
                        bundle_id: bundle.into(),
                    })
                    .await,
            )
            .await
        }
        // An unknown bundle: an allowed caller gets `unknown_bundle`, and nothing is deleted.
        "ArchiveService/DeleteBundle" => archive
            .delete_bundle(apb::DeleteBundleRequest {
                bundle_id: UNKNOWN_BUNDLE.into(),
                reason: "access test".into(),
            })
            .await
            .map(drop),
        "ArchiveService/SetRetention" => archive
            .set_retention(apb::SetRetentionRequest {
                bundle_id: UNKNOWN_BUNDLE.into(),
                retain_until_unix_ms: 1,
                governance_reason: String::new(),
            })
            .await
            .map(drop),
        "ArchiveService/SetLegalHold" => archive
            .set_legal_hold(apb::SetLegalHoldRequest {
                bundle_id: UNKNOWN_BUNDLE.into(),
                hold: true,
                reason: "access test".into(),
            })
            .await
            .map(drop),
        "ArchiveService/ClusterStatus" => archive
            .cluster_status(apb::ClusterStatusRequest {})
            .await
            .map(drop),
        "ArchiveService/CheckFixity" => archive
            .check_fixity(apb::CheckFixityRequest {
                bundle_id: bundle.into(),
            })
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

/// Every RPC the table covers and what a token needs for it.
const RPCS: &[(&str, Needs)] = &[
    ("ArchiveService/PutBundle", Needs::Write),
    ("ArchiveService/GetFile", Needs::Read),
    ("ArchiveService/GetIndex", Needs::Read),
    ("ArchiveService/StatBundle", Needs::Read),
    ("ArchiveService/ListBundles", Needs::Read),
    ("ArchiveService/ExportBundle", Needs::Read),
    ("ArchiveService/DeleteBundle", Needs::Delete),
    ("ArchiveService/SetRetention", Needs::Delete),
    ("ArchiveService/SetLegalHold", Needs::Delete),
    ("ArchiveService/ClusterStatus", Needs::Read),
    ("ArchiveService/CheckFixity", Needs::Read),
    ("MetaService/ClusterStatus", Needs::Read),
    ("MetaService/RecordEvents", Needs::PeerOnly),
    ("MetaAdmin/ListAudit", Needs::Operate),
    ("MetaService/RepairStatus", Needs::Operate),
    ("MetaService/ListRepairs", Needs::Operate),
    ("MetaService/Rebalance", Needs::Operate),
    ("MetaService/Heartbeat", Needs::PeerOnly),
    ("MetaAdmin/ListTokens", Needs::Admin),
    ("MetaAdmin/CreateToken", Needs::Admin),
    ("NodeService/StartScrub", Needs::Operate),
    ("NodeService/ListShards", Needs::PeerOnly),
];

fn is_refusal(s: &tonic::Status) -> bool {
    matches!(s.code(), Code::PermissionDenied | Code::Unauthenticated)
}

async fn upload(
    cluster: &Cluster,
    creds: Credentials,
    labels: &[(&str, &str)],
) -> Result<String, String> {
    let client = bitmountain_client::ArchiveClient::new([cluster.addr(1)])
        .unwrap()
        .with_credentials(creds);
    let options = bitmountain_client::PutOptions {
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    client
        .put_files(
            [bitmountain_client::UploadFile::from_bytes(
                "a.txt",
                b"abc".to_vec(),
            )],
            &options,
        )
        .await
        .map(|r| r.bundle_id)
        .map_err(|e| format!("{}: {e}", e.kind().unwrap_or("")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_rpc() {
    let cluster = Cluster::start(3, 1, "2+1");
    let admin = cluster.meta.client();
    let bundle = upload(&cluster, cluster.token_credentials(), &[])
        .await
        .unwrap();
    let (node, member) = (cluster.addr(1), cluster.meta.addr(1));
    let roles = [
        Role::Reader,
        Role::Writer,
        Role::Curator,
        Role::Operator,
        Role::Admin,
    ];
    let mut tokens = Vec::new();
    for role in roles {
        let (_, t) = admin
            .create_token(role.as_str(), role, &Scope::default(), 0)
            .await
            .unwrap();
        tokens.push((role, t.expose_secret()));
    }
    cluster
        .wait_token_everywhere(&tokens.last().unwrap().1)
        .await;
    let mut failures = Vec::new();
    for (role, secret) in &tokens {
        let creds = cluster.meta.pki.with_token(secret);
        for (rpc, needs) in RPCS {
            let allowed = role_has(*role, *needs);
            let got = call(rpc, &node, &member, &bundle, &creds).await;
            let ok = match (&got, allowed) {
                (Ok(()), true) => true,
                (Err(s), true) => !is_refusal(s),
                (Ok(()), false) => false,
                (Err(s), false) => {
                    s.code() == Code::PermissionDenied && error_kind(s) == "permission_denied"
                }
            };
            if !ok {
                failures.push(format!("{role} {rpc} (allowed: {allowed}): {got:?}"));
            }
        }
    }
    // No token at all: every RPC but the open ones is `unauthenticated`.
    let anonymous = cluster.meta.pki.anonymous();
    for (rpc, _) in RPCS {
        let got = call(rpc, &node, &member, &bundle, &anonymous).await;
        match &got {
            Err(s) if s.code() == Code::Unauthenticated && error_kind(s) == "unauthenticated" => {}
            _ => failures.push(format!("no token {rpc}: {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Health stays open, for probes.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel(&node, &anonymous));
    let h = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(h.into_inner().status, 1, "SERVING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_tokens_across_two_labels() {
    let cluster = Cluster::start(3, 1, "2+1");
    let admin = cluster.meta.client();
    let mut secrets = Vec::new();
    for (name, role, label) in [
        ("maps-writer", Role::Writer, "collection=maps"),
        ("books-curator", Role::Curator, "collection=books"),
    ] {
        let scope = Scope::parse([label]).unwrap();
        let (_, t) = admin.create_token(name, role, &scope, 0).await.unwrap();
        secrets.push(t.expose_secret());
    }
    cluster.wait_token_everywhere(&secrets[1]).await;
    let maps = cluster.meta.pki.with_token(&secrets[0]);
    let books = cluster.meta.pki.with_token(&secrets[1]);

    // A scoped writer's upload gets its label; a conflicting one is refused.
    let m1 = upload(&cluster, maps.clone(), &[]).await.unwrap();
    let m2 = upload(
        &cluster,
        maps.clone(),
        &[("collection", "maps"), ("year", "1890")],
    )
    .await
    .unwrap();
    let refused = upload(&cluster, maps.clone(), &[("collection", "books")])
        .await
        .unwrap_err();
    assert!(refused.starts_with("permission_denied"), "{refused}");
    let b1 = upload(&cluster, books.clone(), &[]).await.unwrap();

    let client = |c: &Credentials| {
        bitmountain_client::ArchiveClient::new([cluster.addr(2)])
            .unwrap()
            .with_credentials(c.clone())
    };
    let ids = |list: Vec<bitmountain_client::BundleInfo>| {
        let mut v: Vec<String> = list.into_iter().map(|b| b.bundle_id).collect();
        v.sort();
        v
    };
    let mut want = vec![m1.clone(), m2.clone()];
    want.sort();
    assert_eq!(ids(client(&maps).list_all(None).await.unwrap()), want);
    assert_eq!(
        ids(client(&books).list_all(None).await.unwrap()),
        vec![b1.clone()]
    );
    let info = client(&maps).stat(&m1).await.unwrap();
    assert_eq!(
        info.labels.get("collection").map(String::as_str),
        Some("maps")
    );
    // Each reads its own, never the other's.
    assert_eq!(client(&maps).read_file(&m1, "a.txt").await.unwrap(), b"abc");
    let e = client(&maps).read_file(&b1, "a.txt").await.unwrap_err();
    assert_eq!(e.kind(), Some("permission_denied"), "{e}");
    assert!(e.to_string().contains("collection=maps"), "{e}");
    // Status counts only what the token sees.
    let st = client(&books).status().await.unwrap();
    assert_eq!(st.bundles_sealed, 1);
    let st = client(&maps).status().await.unwrap();
    assert_eq!(st.bundles_sealed, 2);
    // The curator deletes in its scope only; the writer deletes nothing.
    let e = client(&books).delete(&m1, "test").await.unwrap_err();
    assert_eq!(e.kind(), Some("permission_denied"), "{e}");
    let e = client(&maps).delete(&m1, "test").await.unwrap_err();
    assert_eq!(e.kind(), Some("permission_denied"), "{e}");
    client(&books).delete(&b1, "test").await.unwrap();
    // And nothing of the other collection was lost.
    let all = cluster.client(1);
    assert_eq!(all.read_file(&m1, "a.txt").await.unwrap(), b"abc");
    assert_eq!(all.read_file(&m2, "a.txt").await.unwrap(), b"abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_expired_tokens_are_refused_by_every_node_within_5_s() {
    let cluster = Cluster::start(3, 1, "2+1");
    let admin = cluster.meta.client();
    let (record, token) = admin
        .create_token("short", Role::Reader, &Scope::default(), 0)
        .await
        .unwrap();
    let secret = token.expose_secret();
    cluster.wait_token_everywhere(&secret).await;
    let member = || {
        MetaServiceClient::new(channel(
            &cluster.meta.addr(1),
            &cluster.meta.pki.with_token(&secret),
        ))
    };
    member()
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap();
    admin.revoke_token(record.id).await.unwrap();
    let revoked_at = Instant::now();
    // The member that applied the revocation refuses the token at once (its copy of the table
    // follows the table's version).
    let s = member()
        .cluster_status(pb::ClusterStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    cluster
        .wait_refused_everywhere(&secret, revoked_at + Duration::from_secs(5))
        .await;

    let expires = bitmountain_meta_client::types::now_unix_ms() + 3_000;
    let (_, token) = admin
        .create_token("expiring", Role::Reader, &Scope::default(), expires)
        .await
        .unwrap();
    let secret = token.expose_secret();
    cluster.wait_token_everywhere(&secret).await;
    let expired_at = Instant::now()
        + Duration::from_millis(
            expires.saturating_sub(bitmountain_meta_client::types::now_unix_ms()),
        );
    cluster
        .wait_refused_everywhere(&secret, expired_at + Duration::from_secs(5))
        .await;
    let e = bitmountain_client::ArchiveClient::new([cluster.addr(1)])
        .unwrap()
        .with_credentials(cluster.meta.pki.with_token(&secret))
        .status()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_of_another_ca_or_role_and_bad_tokens_are_refused() {
    let cluster = Cluster::start(3, 1, "2+1");
    let (node, member) = (cluster.addr(1), cluster.meta.addr(1));
    let bundle = UNKNOWN_BUNDLE;
    // The cluster's own node certificate reaches a node's calls (they answer, if only that
    // the request itself is wrong: a fake heartbeat, a disk of another node)...
    let own = cluster.meta.pki.node();
    let other = tempfile::tempdir().unwrap();
    let foreign = TestPki::create(other.path()).node();
    for (rpc, at) in [
        ("NodeService/ListShards", "node"),
        ("MetaService/Heartbeat", "member"),
    ] {
        if let Err(s) = call(rpc, &node, &member, bundle, &own).await {
            assert!(
                !is_refusal(&s) && !error_kind(&s).is_empty(),
                "{rpc}: {s:?}"
            );
        }
        // ...one from another CA fails the TLS handshake: no server code answers.
        let s = call(rpc, &node, &member, bundle, &foreign)
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::Unavailable, "{rpc} at a {at}: {s:?}");
        assert_eq!(error_kind(&s), "", "{rpc} at a {at} answered: {s:?}");
    }
    // A member's certificate (trusted, wrong role) is refused by NodeService.
    let meta_dir = &cluster.meta.pki.meta_dir;
    let read = |f: &str| std::fs::read(meta_dir.join(f)).unwrap();
    let member_cert = Credentials::tls(
        &std::fs::read(cluster.meta.pki.ca_file()).unwrap(),
        Some((&read("cert.pem"), &read("key.pem"))),
    );
    let got = call(
        "NodeService/ListShards",
        &node,
        &member,
        bundle,
        &member_cert,
    )
    .await;
    let s = got.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("node"), "{s:?}");

    // Tokens in the wrong header format, and 10,000 bytes of garbage: `unauthenticated`, and
    // the node keeps serving.
    let token = cluster.meta.admin_token();
    let garbage: String = (0..10_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    for value in [
        format!("Token {token}"),
        format!("bearer{token}"),
        token.clone(),
        "Bearer ".to_owned(),
        format!("Bearer {garbage}"),
        garbage.clone(),
    ] {
        let mut req = tonic::Request::new(apb::ClusterStatusRequest {});
        req.metadata_mut()
            .insert("authorization", value.parse().unwrap());
        let plain: AuthChannel = channel(&node, &cluster.meta.pki.anonymous());
        let s = ArchiveServiceClient::new(plain)
            .cluster_status(req)
            .await
            .unwrap_err();
        assert_eq!(
            s.code(),
            Code::Unauthenticated,
            "{}: {s:?}",
            &value[..20.min(value.len())]
        );
        assert_eq!(error_kind(&s), "unauthenticated");
        assert!(
            !s.message().contains(&token),
            "a refusal never echoes the token"
        );
    }
    cluster.client(1).status().await.unwrap();

    // A plaintext client at a TLS port is told to pass the CA.
    let e = bitmountain_client::ArchiveClient::new([node.as_str()])
        .unwrap()
        .status()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), Some("tls_required"), "{e}");
    assert!(e.to_string().contains("--ca"), "{e}");
}

/// `--insecure` (the baseline of the TLS benchmark, and what an operator gets who asks for
/// it): plaintext clients upload and read back, and every process says at start that it runs
/// without TLS and access control. Every server once panicked on the first connection it
/// accepted in this mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_cluster_serves_plaintext_clients_and_warns() {
    let cluster = Cluster::start_secured(1, 3, 1, "2+1", &[], &[], true);
    let client = cluster.client(1);
    let put = client
        .put_files(
            [bitmountain_client::UploadFile::from_bytes(
                "page-1.tif",
                b"scanned page".to_vec(),
            )],
            &bitmountain_client::PutOptions::default(),
        )
        .await
        .unwrap();
    // From another node: the read crosses node to node as well.
    let other = cluster.client(2);
    let bytes = other.read_file(&put.bundle_id, "page-1.tif").await.unwrap();
    assert_eq!(&bytes[..], b"scanned page");
    let warning = "running with --insecure";
    assert!(
        cluster.meta.log_tail(1, 10_000).contains(warning),
        "member 1 did not warn:\n{}",
        cluster.meta.log_tail(1, 30)
    );
    for n in 1..=3 {
        assert!(
            cluster.node_log_tail(n, 10_000).contains(warning),
            "node {n} did not warn:\n{}",
            cluster.node_log_tail(n, 30)
        );
    }
}
