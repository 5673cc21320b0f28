//! Bad input to the public API of a real cluster: every case gets a typed error that says what
//! was wrong, nothing already stored is lost, and no node crashes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitmountain_client::{Code, PutOptions, UploadFile};
use bitmountain_proto::archive::v1 as pb;
use bitmountain_proto::archive::v1::archive_service_client::ArchiveServiceClient;
use bitmountain_tests::cluster::{pseudo_random_bytes, Cluster};
use bitmountain_tests::error_kind as kind;
use pb::put_bundle_request::Item;

fn msg(item: Item) -> pb::PutBundleRequest {
    pb::PutBundleRequest { item: Some(item) }
}

fn file(path: &str, size: u64) -> Item {
    Item::File(pb::FileStart {
        path: path.into(),
        content_type: String::new(),
        size_bytes: size,
        sha256: Vec::new(),
    })
}

fn start() -> Item {
    Item::Start(pb::BundleStart::default())
}

/// Sends `items` as one upload (ending the stream after them) and returns the outcome.
async fn upload(addr: &str, items: Vec<Item>) -> Result<pb::PutBundleResponse, tonic::Status> {
    let mut stub = ArchiveServiceClient::new(bitmountain_tests::pki::client_channel(addr))
        .max_encoding_message_size(64 << 20);
    let stream = tokio_stream::iter(items.into_iter().map(msg));
    stub.put_bundle(stream).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_typed_errors_and_lose_nothing() {
    let mut cluster =
        Cluster::start_with(6, 1, "4+2:65536", &[], &["--max-files-per-bundle", "10"]);
    let addr = cluster.addr(1);
    let client = cluster.client(1);
    let keep = pseudo_random_bytes(42, 300_000);
    let stored = client
        .put_files(
            vec![UploadFile::from_bytes("keep/me.bin", keep.clone())],
            &PutOptions::default(),
        )
        .await
        .unwrap();

    // Reads of things that do not exist.
    let err = client
        .read_file("0123456789abcdef0123456789abcdef", "x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("unknown_bundle"), "{err}");
    let err = client.read_file("not-an-id", "x").await.unwrap_err();
    assert_eq!(err.kind(), Some("bad_request"), "{err}");
    let err = client
        .read_file(&stored.bundle_id, "keep/not-me.bin")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("unknown_path"), "{err}");
    assert!(err.to_string().contains("bitmountain ls"), "{err}");
    let mut out = Vec::new();
    let err = client
        .get_file(&stored.bundle_id, "keep/me.bin", 300_001, None, &mut out)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("bad_range"), "{err}");

    // Bad paths, duplicates, lengths, sequences.
    for bad in ["../escape", "/absolute", "a//b", "a/./b", "nul\0byte", ""] {
        let status = upload(
            &addr,
            vec![
                start(),
                file(bad, 1),
                Item::Data(vec![1].into()),
                Item::End(pb::BundleEnd {}),
            ],
        )
        .await
        .unwrap_err();
        assert_eq!(kind(&status), "bad_path", "{bad:?}: {status:?}");
        assert!(
            status.message().contains("nothing was stored"),
            "{status:?}"
        );
    }
    let status = upload(
        &addr,
        vec![
            start(),
            file("a", 0),
            file("a", 0),
            Item::End(pb::BundleEnd {}),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(kind(&status), "bad_path", "{status:?}");
    let status = upload(
        &addr,
        vec![
            start(),
            file("short", 10),
            Item::Data(vec![0; 5].into()),
            file("next", 0),
            Item::End(pb::BundleEnd {}),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(kind(&status), "bad_upload", "{status:?}");
    assert!(status.message().contains("short"), "{status:?}");
    let status = upload(
        &addr,
        vec![start(), file("long", 2), Item::Data(vec![0; 5].into())],
    )
    .await
    .unwrap_err();
    assert_eq!(kind(&status), "bad_upload", "{status:?}");
    // An expected SHA-256 that is not 32 bytes.
    let status = upload(
        &addr,
        vec![
            start(),
            Item::File(pb::FileStart {
                path: "digest".into(),
                size_bytes: 1,
                sha256: vec![0; 31],
                ..Default::default()
            }),
            Item::Data(vec![0].into()),
            Item::End(pb::BundleEnd {}),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(kind(&status), "bad_upload", "{status:?}");
    assert!(status.message().contains("32 bytes"), "{status:?}");
    let status = upload(&addr, vec![start(), Item::Data(vec![0; 5].into())])
        .await
        .unwrap_err();
    assert_eq!(kind(&status), "bad_upload", "{status:?}");
    let status = upload(&addr, vec![file("x", 0), Item::End(pb::BundleEnd {})])
        .await
        .unwrap_err();
    assert_eq!(kind(&status), "bad_upload", "{status:?}");
    let status = upload(&addr, vec![start(), start()]).await.unwrap_err();
    assert_eq!(kind(&status), "bad_upload", "{status:?}");

    // Too many files for this node's limit (10).
    let many: Vec<UploadFile> = (0..11)
        .map(|i| UploadFile::from_bytes(format!("f{i}"), vec![i as u8]))
        .collect();
    let err = client
        .put_files(many, &PutOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("too_many_files"), "{err}");

    // An upload cut off midway: the stream ends without `end`.
    let status = upload(
        &addr,
        vec![start(), file("half", 1000), Item::Data(vec![7; 500].into())],
    )
    .await
    .unwrap_err();
    assert_eq!(kind(&status), "upload_incomplete", "{status:?}");

    // Messages over the limits: a data piece over 4 MiB, and a message over the gRPC limit.
    let status = upload(
        &addr,
        vec![
            start(),
            file("big", (4 << 20) + 1),
            Item::Data(vec![0; (4 << 20) + 1].into()),
            Item::End(pb::BundleEnd {}),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(kind(&status), "bad_upload", "{status:?}");
    let status = upload(
        &addr,
        vec![
            start(),
            file("huge", 6 << 20),
            Item::Data(vec![0; 6 << 20].into()),
            Item::End(pb::BundleEnd {}),
        ],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(kind(&status), "message_too_large", "{status:?}");

    // Codes: one the cluster cannot place (14 shards on 6 nodes), and an invalid one.
    let options = PutOptions {
        code: Some(Code::parse("10+4").unwrap()),
        ..PutOptions::default()
    };
    let err = client
        .put_files(vec![UploadFile::from_bytes("x", vec![1])], &options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("not_enough_nodes"), "{err}");
    let options = PutOptions {
        code: Some(Code::parse("0+2").unwrap()),
        ..PutOptions::default()
    };
    let err = client
        .put_files(vec![UploadFile::from_bytes("x", vec![1])], &options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), Some("invalid_code"), "{err}");

    // Nothing of the failed uploads is visible; what was stored before reads back; no node
    // crashed.
    let listed = client.list_all(None).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        client
            .read_file(&stored.bundle_id, "keep/me.bin")
            .await
            .unwrap(),
        keep
    );
    for node in &mut cluster.nodes {
        assert!(node.is_running(), "node {} crashed", node.index);
    }
}
