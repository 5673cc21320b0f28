//! Bitrot that passes every CRC: a chunk of a shard file rewritten with other bytes and a
//! recomputed CRC32C (what a misdirected or phantom write leaves) is caught only by the file's
//! SHA-256. A read still returns the right bytes, decoded around the shard; `fixity check`
//! confirms the file, names the shard and records it; the shard is queued and rewritten. Two
//! such shards in one file are found and rewritten alike.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{pseudo_random_bytes, Cluster};
use bitmountain_tests::run_ok;

/// Rewrites bytes `from..to` of chunk 0's data in a shard file and recomputes the chunk's
/// CRC32C, as a disk returning other bytes with a valid checksum would leave it.
fn rot_chunk_zero(path: &std::path::Path, from: usize, to: usize) {
    let mut b = std::fs::read(path).unwrap();
    let chunk_bytes = u32::from_le_bytes(b[24..28].try_into().unwrap()) as usize;
    const HEADER: usize = 64;
    const FOOTER: usize = 96;
    // The chunks are what lies between the header and the description (version-2 footer).
    let footer = b.len() - FOOTER;
    let description = u32::from_le_bytes(b[footer + 8..footer + 12].try_into().unwrap()) as usize;
    let chunks = b.len() - HEADER - description - FOOTER;
    // Chunk 0 is full unless the shard's data is shorter than a chunk.
    let data_len = if chunks >= chunk_bytes + 4 {
        chunk_bytes
    } else {
        chunks - 4
    };
    assert!(to <= data_len, "chunk 0 holds {data_len} bytes");
    for x in &mut b[HEADER + from..HEADER + to] {
        *x ^= 0xa5;
    }
    let crc = bitmountain_erasure::crc::crc32c(&b[HEADER..HEADER + data_len]);
    b[HEADER + data_len..HEADER + data_len + 4].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(path, b).unwrap();
}

/// `a.bin` of bundle `id` read through node 2 is `a`.
async fn assert_reads_back(cluster: &Cluster, id: &str, a: &[u8]) {
    let mut got = Vec::new();
    cluster
        .client(2)
        .get_file(id, "a.bin", 0, None, &mut got)
        .await
        .unwrap();
    assert!(got == a, "a.bin read back wrong");
}

/// `fixity check` of bundle `id` on node 3: its first JSON line.
fn fixity_check(cluster: &Cluster, id: &str) -> serde_json::Value {
    let node = cluster.addr(3);
    let args = [
        "fixity",
        "check",
        "--bundle",
        id,
        "--json",
        "--cluster",
        &node,
    ];
    let out = run_ok(&args);
    serde_json::from_str(String::from_utf8_lossy(&out).lines().next().unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_bytes_with_valid_crcs_are_caught_decoded_around_and_rewritten() {
    let cluster = Cluster::start(3, 1, "2+1:65536");
    let client = cluster.client(1);
    let a = pseudo_random_bytes(7, 150_000);
    let b = pseudo_random_bytes(8, 50_000);
    let files = vec![
        UploadFile::from_bytes("a.bin".to_owned(), a.clone()),
        UploadFile::from_bytes("b.bin".to_owned(), b.clone()),
    ];
    let id = client
        .put_files(files.into_iter(), &PutOptions::default())
        .await
        .unwrap()
        .bundle_id;
    let shard0 = cluster
        .bundle_shards(&id)
        .into_iter()
        .find(|(_, shard, _)| *shard == 0)
        .unwrap()
        .2;
    let original = std::fs::read(&shard0).unwrap();
    // Shard 0 holds the bundle's first 64 KiB: a.bin starts a few hundred bytes in.
    rot_chunk_zero(&shard0, 2048, 4096);
    // A read through another node returns the right bytes.
    assert_reads_back(&cluster, &id, &a).await;

    // A fixity check on a third node confirms the file and names the shard.
    let first = fixity_check(&cluster, &id);
    assert_eq!(first["failed"], 0, "{first}");
    assert_eq!(
        first["repaired"],
        serde_json::json!([["a.bin", 0]]),
        "{first}"
    );
    let audit = run_ok(&[
        "audit",
        "--json",
        "--bundle",
        &id,
        "--action",
        "fixity check",
        "--cluster",
        &cluster.meta.addr(1),
    ]);
    let audit = String::from_utf8_lossy(&audit);
    assert!(
        audit.contains("wrong bytes with valid CRCs in a.bin (shard 0)"),
        "{audit}"
    );

    // The shard is rewritten from the others: byte for byte what the upload wrote.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read(&shard0).unwrap_or_default() != original {
        assert!(Instant::now() < deadline, "shard 0 was not rewritten");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut again = Vec::new();
    cluster
        .client(3)
        .get_file(&id, "b.bin", 0, None, &mut again)
        .await
        .unwrap();
    assert!(again == b);
}

/// Two shards of one file return wrong bytes with valid CRCs (RS(4,2) has the parity to leave
/// both out): a read still returns the right bytes, `fixity check` names both, and both are
/// rewritten.
#[tokio::test(flavor = "multi_thread")]
async fn two_shards_with_wrong_bytes_in_one_file_are_both_found_and_rewritten() {
    let cluster = Cluster::start(6, 1, "4+2:65536");
    let client = cluster.client(1);
    // 150 KB from a few hundred bytes in: the file spans the cells of shards 0, 1 and 2.
    let a = pseudo_random_bytes(9, 150_000);
    let files = vec![UploadFile::from_bytes("a.bin".to_owned(), a.clone())];
    let id = client
        .put_files(files.into_iter(), &PutOptions::default())
        .await
        .unwrap()
        .bundle_id;
    let shard = |n: u32| {
        cluster
            .bundle_shards(&id)
            .into_iter()
            .find(|(_, shard, _)| *shard == n)
            .unwrap()
            .2
    };
    let (shard0, shard1) = (shard(0), shard(1));
    let originals = (
        std::fs::read(&shard0).unwrap(),
        std::fs::read(&shard1).unwrap(),
    );
    rot_chunk_zero(&shard0, 2048, 4096);
    rot_chunk_zero(&shard1, 100, 200);

    assert_reads_back(&cluster, &id, &a).await;
    let first = fixity_check(&cluster, &id);
    assert_eq!(first["failed"], 0, "{first}");
    assert_eq!(
        first["repaired"],
        serde_json::json!([["a.bin", 0], ["a.bin", 1]]),
        "{first}"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    while (
        std::fs::read(&shard0).unwrap_or_default(),
        std::fs::read(&shard1).unwrap_or_default(),
    ) != originals
    {
        assert!(
            Instant::now() < deadline,
            "shards 0 and 1 were not rewritten"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
