//! NodeService over real gRPC on loopback, backed by real disk directories.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bitmountain_disk::{ClusterId, DiskStore};
use bitmountain_erasure::BundleId;
use bitmountain_node::shard_io::DeleteWhy;
use bitmountain_node::shard_service::ShardAddress;
use bitmountain_node::{DiskSet, NodeError, NodeShardService, ShardClient};
use bitmountain_proto::v1::node_service_server::NodeServiceServer;
use tokio_stream::wrappers::TcpListenerStream;

struct Node {
    client: ShardClient,
    _dirs: Vec<tempfile::TempDir>,
    roots: Vec<std::path::PathBuf>,
}

async fn start_node(idle_timeout: Duration) -> Node {
    let mut dirs = Vec::new();
    let mut stores = Vec::new();
    let mut roots = Vec::new();
    for disk_id in [11, 12] {
        let dir = tempfile::tempdir().unwrap();
        stores.push(DiskStore::init(dir.path(), ClusterId([5; 16]), disk_id, 0).unwrap());
        roots.push(dir.path().to_path_buf());
        dirs.push(dir);
    }
    let service = NodeShardService::with_idle_timeout(DiskSet::new(stores), idle_timeout);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(
                NodeServiceServer::new(service)
                    .max_decoding_message_size(bitmountain_node::limits::MAX_MESSAGE_BYTES),
            )
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    Node {
        client: ShardClient::new(&address, &bitmountain_proto::Credentials::insecure()).unwrap(),
        _dirs: dirs,
        roots,
    }
}

fn shard(disk_id: u64, index: u16) -> ShardAddress {
    ShardAddress {
        bundle: BundleId([0x42; 16]),
        shard: index,
        disk_id,
    }
}

fn temp_files(root: &std::path::Path) -> usize {
    std::fs::read_dir(root.join("tmp")).unwrap().count()
}

#[tokio::test]
async fn write_read_list_delete_round_trip() {
    let node = start_node(Duration::from_secs(30)).await;
    let data: Vec<u8> = (0..3_500_000u32)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    let mut upload = node.client.upload(shard(11, 3), 10_000);
    for piece in data.chunks(700_000) {
        upload.send(piece).await.unwrap();
    }
    assert_eq!(upload.finish().await.unwrap(), data.len() as u64);

    let back = node
        .client
        .read_range(shard(11, 3), 0, data.len() as u64)
        .await
        .unwrap();
    assert_eq!(back, data);
    let middle = node
        .client
        .read_range(shard(11, 3), 1_234_567, 2_000_000)
        .await
        .unwrap();
    assert_eq!(middle, data[1_234_567..3_234_567]);
    assert_eq!(
        node.client.list(11).await.unwrap(),
        vec![(BundleId([0x42; 16]), 3, data.len() as u64)]
    );
    assert!(node.client.list(12).await.unwrap().is_empty());
    // A stale copy goes without a trace; a deleted bundle's shard leaves a tombstone first.
    let tombstones = |root: &std::path::Path| {
        DiskStore::open(root, None)
            .unwrap()
            .tombstones()
            .unwrap()
            .tombstones
    };
    assert!(node
        .client
        .delete(shard(11, 3), DeleteWhy::NotPlacedHere)
        .await
        .unwrap());
    assert!(tombstones(&node.roots[0]).is_empty());
    let mut upload = node.client.upload(shard(11, 3), 10_000);
    upload.send(&data[..1000]).await.unwrap();
    upload.finish().await.unwrap();
    assert!(node
        .client
        .delete(shard(11, 3), DeleteWhy::BundleDeleted)
        .await
        .unwrap());
    // A retried delete finds the file gone and the tombstone there: no second one.
    assert!(!node
        .client
        .delete(shard(11, 3), DeleteWhy::BundleDeleted)
        .await
        .unwrap());
    let recorded = tombstones(&node.roots[0]);
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].bundle, BundleId([0x42; 16]));
    assert!(recorded[0].deleted_unix_ms > 0);
    assert!(tombstones(&node.roots[1]).is_empty());
}

#[tokio::test]
async fn an_upload_dropped_before_finish_stores_nothing() {
    let node = start_node(Duration::from_secs(30)).await;
    let mut upload = node.client.upload(shard(12, 0), 10_000);
    upload.send(&[1u8; 100_000]).await.unwrap();
    drop(upload);
    // The server notices the cut stream and removes the temporary file; poll with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while temp_files(&node.roots[1]) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "temporary file left behind"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(node.client.list(12).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_idle_upload_times_out_and_stores_nothing() {
    let node = start_node(Duration::from_millis(200)).await;
    let mut upload = node.client.upload(shard(12, 1), 10_000);
    upload.send(b"some bytes").await.unwrap();
    // Hold the stream open without sending: the node gives up after its idle timeout.
    let err = upload.finish_after_idle().await;
    assert!(
        matches!(
            err,
            NodeError::Remote {
                code: tonic::Code::DeadlineExceeded,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(node.client.list(12).await.unwrap().is_empty());
    assert_eq!(temp_files(&node.roots[1]), 0);
}

#[tokio::test]
async fn bad_requests_get_typed_errors() {
    let node = start_node(Duration::from_secs(30)).await;
    let missing = node
        .client
        .read_range(shard(11, 9), 0, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(
            missing,
            NodeError::Remote {
                code: tonic::Code::NotFound,
                ..
            }
        ),
        "{missing:?}"
    );
    let unknown_disk = node
        .client
        .read_range(shard(99, 0), 0, 10)
        .await
        .unwrap_err();
    match unknown_disk {
        NodeError::Remote { code, message, .. } => {
            assert_eq!(code, tonic::Code::NotFound);
            assert!(message.contains("disk 99"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let mut upload = node.client.upload(shard(11, 0), 10_000);
    upload.send(b"0123456789").await.unwrap();
    upload.finish().await.unwrap();
    let out_of_range = node
        .client
        .read_range(shard(11, 0), 5, 6)
        .await
        .unwrap_err();
    assert!(
        matches!(
            out_of_range,
            NodeError::Remote {
                code: tonic::Code::OutOfRange,
                ..
            }
        ),
        "{out_of_range:?}"
    );
    let too_large = node
        .client
        .read_range(shard(11, 0), 0, 1 << 40)
        .await
        .unwrap_err();
    assert!(
        matches!(
            too_large,
            NodeError::Remote {
                code: tonic::Code::InvalidArgument,
                ..
            }
        ),
        "{too_large:?}"
    );
    assert!(matches!(
        node.client.list(7).await.unwrap_err(),
        NodeError::Remote {
            code: tonic::Code::NotFound,
            ..
        }
    ));
}

#[tokio::test]
async fn an_unreachable_node_is_reported_as_such() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = ShardClient::new(
        &format!("127.0.0.1:{port}"),
        &bitmountain_proto::Credentials::insecure(),
    )
    .unwrap();
    let err = client.read_range(shard(1, 0), 0, 1).await.unwrap_err();
    assert!(matches!(err, NodeError::Unreachable { .. }), "{err:?}");
}
