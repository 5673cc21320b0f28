//! What TLS and token checks cost, against `--insecure` in the same run (ignored by default;
//! figures in docs/benchmarks.md, "TLS and tokens"). The dev topology — one metadata member and
//! six storage nodes × two disks, RS(4,2) — as separate processes, started alternately secured
//! and insecure so drift of the machine's speed hits both alike. Measured per cluster: a large
//! upload's throughput, the p50 of warm 64 KiB reads, and metadata allocate+commit pairs/s.
//!
//! `scripts/bench-tls`; `TLS_BENCH_UPLOAD_MIB` (default 512), `TLS_BENCH_ROUNDS` (default 2),
//! `TLS_BENCH_READS` (default 1000).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitmountain_client::{PutOptions, UploadFile};
use bitmountain_tests::cluster::{pseudo_random_bytes, Cluster};
use bitmountain_tests::cpu_ticks;
use bitmountain_tests::env_u64;
use bitmountain_tests::meta_cluster::alloc_commit_pair;

const MIB: f64 = 1024.0 * 1024.0;
const READ_FILES: usize = 40;
const PAIR_WORKERS: usize = 64;
const PAIRS: u64 = 4_000;

#[derive(Debug, Default, Clone, Copy)]
struct Figures {
    upload_mib_s: f64,
    /// CPU seconds of the cluster's processes and of the client per GiB uploaded.
    upload_cpu_s_per_gib: (f64, f64),
    read_p50_ms: f64,
    /// CPU microseconds of the cluster's processes and of the client per warm read.
    read_cpu_us: (f64, f64),
    pairs_per_s: f64,
}

async fn measure(insecure: bool, upload_mib: u64) -> Figures {
    let cluster = Cluster::start_secured(1, 6, 2, "4+2", &[], &[], insecure);
    let client = cluster.client(1);
    // Large upload: 8 MiB files from memory (no local disk reads in the way).
    let files: Vec<UploadFile> = (0..upload_mib.div_ceil(8))
        .map(|i| {
            UploadFile::from_bytes(format!("scan-{i:04}.tif"), pseudo_random_bytes(i, 8 << 20))
        })
        .collect();
    let pids: Vec<u32> = cluster
        .nodes
        .iter()
        .filter_map(|n| n.pid())
        .chain(cluster.meta.members.values().filter_map(|m| m.pid()))
        .collect();
    let cpu = || {
        let cluster: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        (cluster, cpu_ticks(std::process::id()))
    };
    let before = cpu();
    let start = Instant::now();
    let put = client
        .put_files(files, &PutOptions::default())
        .await
        .unwrap();
    let upload_mib_s = put.length_bytes as f64 / MIB / start.elapsed().as_secs_f64();
    let after = cpu();
    let gib = put.length_bytes as f64 / (MIB * 1024.0);
    let upload_cpu_s_per_gib = (
        (after.0 - before.0) as f64 / 100.0 / gib,
        (after.1 - before.1) as f64 / 100.0 / gib,
    );

    // Warm 64 KiB reads: the bundle's record and index cached in the client (`prepare`), so
    // each read goes straight to the node holding its bytes as in the archive benchmark (without
    // it, most reads went through node 1 and a second TLS hop); every file read once, then timed.
    let small: Vec<UploadFile> = (0..READ_FILES)
        .map(|i| {
            UploadFile::from_bytes(
                format!("p/{i:03}.jpg"),
                pseudo_random_bytes(1000 + i as u64, 64 << 10),
            )
        })
        .collect();
    let put = client
        .put_files(small, &PutOptions::default())
        .await
        .unwrap();
    client.prepare(&put.bundle_id).await.unwrap();
    for i in 0..READ_FILES {
        client
            .read_file(&put.bundle_id, &format!("p/{i:03}.jpg"))
            .await
            .unwrap();
    }
    let reads = env_u64("TLS_BENCH_READS", 1000) as usize;
    let mut lat = Vec::with_capacity(reads);
    // What the cluster spends meanwhile (heartbeats, the background fixity pass, paced): the
    // CPU per read below includes it.
    let idle = cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    println!(
        "BENCH tls before reads, nobody reading: cluster {:.0} ms of CPU per second",
        ms_per_second(cpu().0 - idle.0, 2)
    );
    let before = cpu();
    for r in 0..reads {
        let path = format!("p/{:03}.jpg", r % READ_FILES);
        let t = Instant::now();
        let bytes = client.read_file(&put.bundle_id, &path).await.unwrap();
        lat.push(t.elapsed());
        assert_eq!(bytes.len(), 64 << 10);
    }
    let after = cpu();
    let read_cpu_us = (
        us_per(after.0 - before.0, reads),
        us_per(after.1 - before.1, reads),
    );
    lat.sort();
    let read_p50_ms = lat[lat.len() / 2].as_secs_f64() * 1e3;

    // Metadata allocate+commit pairs through the node certificate (as nodes make them).
    let meta = Arc::new(cluster.meta.client());
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..PAIR_WORKERS {
        let (meta, next) = (meta.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= PAIRS {
                    return;
                }
                assert!(
                    alloc_commit_pair(&meta, format!("bench-{i}")).await,
                    "pair {i} failed"
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let pairs_per_s = PAIRS as f64 / start.elapsed().as_secs_f64();
    Figures {
        upload_mib_s,
        upload_cpu_s_per_gib,
        read_p50_ms,
        read_cpu_us,
        pairs_per_s,
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-tls"]
async fn tls_and_tokens_against_insecure() {
    let upload_mib = env_u64("TLS_BENCH_UPLOAD_MIB", 512);
    let rounds = env_u64("TLS_BENCH_ROUNDS", 2);
    // The first clusters of a run are slower (a cold machine: page cache, binary, allocator),
    // whichever mode they run: one of each first, measured and discarded. They upload as much
    // as the measured ones: with smaller warm-up uploads the first measured cluster (always a
    // secured one, round 0 starting with TLS) still uploaded 20-30 % slower than the rest.
    for insecure in [false, true] {
        let f = measure(insecure, upload_mib).await;
        println!(
            "BENCH tls warm-up {} (discarded): upload {:.0} MiB/s, read p50 {:.2} ms",
            if insecure { "insecure" } else { "tls+tokens" },
            f.upload_mib_s,
            f.read_p50_ms
        );
    }
    let (mut secure, mut plain) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // The order alternates too, so neither mode always follows the other.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for insecure in order {
            let f = measure(insecure, upload_mib).await;
            println!(
                "BENCH tls round {round} {}: upload {:.0} MiB/s (CPU s per GiB: cluster {:.2}, client {:.2}), warm 64 KiB read p50 {:.2} ms (CPU µs per read: cluster {:.0}, client {:.0}), alloc+commit {:.0} pairs/s",
                if insecure { "insecure" } else { "tls+tokens" },
                f.upload_mib_s,
                f.upload_cpu_s_per_gib.0,
                f.upload_cpu_s_per_gib.1,
                f.read_p50_ms,
                f.read_cpu_us.0,
                f.read_cpu_us.1,
                f.pairs_per_s
            );
            if insecure { &mut plain } else { &mut secure }.push(f);
        }
    }
    let mean =
        |v: &[Figures], f: fn(&Figures) -> f64| v.iter().map(f).sum::<f64>() / v.len() as f64;
    let (su, pu) = (
        mean(&secure, |f| f.upload_mib_s),
        mean(&plain, |f| f.upload_mib_s),
    );
    let (sr, pr) = (
        mean(&secure, |f| f.read_p50_ms),
        mean(&plain, |f| f.read_p50_ms),
    );
    let (sp, pp) = (
        mean(&secure, |f| f.pairs_per_s),
        mean(&plain, |f| f.pairs_per_s),
    );
    println!(
        "BENCH tls upload: {su:.0} MiB/s with TLS and tokens against {pu:.0} MiB/s insecure: ratio {:.3} (target >= 0.85)",
        su / pu
    );
    // Each round's two clusters ran back to back: their ratio, round by round (the spread
    // between rounds is larger than the difference measured).
    let mut by_round: Vec<f64> = secure
        .iter()
        .zip(&plain)
        .map(|(s, p)| s.read_p50_ms / p.read_p50_ms)
        .collect();
    by_round.sort_by(f64::total_cmp);
    println!(
        "BENCH tls read: warm 64 KiB p50 {sr:.2} ms against {pr:.2} ms insecure: {:+.1} % (target <= +10 %); round by round {}, median {:+.1} %",
        (sr / pr - 1.0) * 100.0,
        by_round
            .iter()
            .map(|r| format!("{:+.0} %", (r - 1.0) * 100.0))
            .collect::<Vec<_>>()
            .join(", "),
        (by_round[by_round.len() / 2] - 1.0) * 100.0
    );
    println!(
        "BENCH tls meta: {sp:.0} alloc+commit pairs/s against {pp:.0} insecure: ratio {:.3} (target >= 0.85)",
        sp / pp
    );
}

/// CPU clock ticks ([`cpu_ticks`], 1/100 s) as microseconds for each of `count` operations.
fn us_per(ticks: u64, count: usize) -> f64 {
    ticks as f64 * 10_000.0 / count as f64
}

/// CPU clock ticks used over `secs` seconds as milliseconds of CPU per second.
fn ms_per_second(ticks: u64, secs: u64) -> f64 {
    ticks as f64 * 10.0 / secs as f64
}

/// p50 of `n` calls of `call`, after 100 to warm up.
async fn p50_us<F, Fut>(n: usize, mut call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..100 {
        call().await;
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        call().await;
        lat.push(t.elapsed());
    }
    lat.sort();
    lat[n / 2].as_secs_f64() * 1e6
}

/// Where a secured read's extra time goes: one unary RPC with no access check (a member's
/// open `Diagnostics/Ping`), the same with the auth layer and a token (a node's
/// `ArchiveService/ClusterStatus` answered from its metadata client, which adds a member
/// call), each with TLS and without, on one connection.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-tls rpc_round_trips"]
async fn rpc_round_trips() {
    use bitmountain_proto::v1::diagnostics_client::DiagnosticsClient;
    use bitmountain_proto::v1::PingRequest;
    let n = env_u64("TLS_BENCH_RPCS", 3000) as usize;
    for insecure in [false, true, false, true] {
        let cluster = Cluster::start_secured(1, 3, 1, "2+1", &[], &[], insecure);
        let mode = if insecure { "insecure" } else { "tls+tokens" };
        let creds = cluster.token_credentials();
        let channel = bitmountain_tests::pki::connect(&cluster.meta.addr(1), &creds).await;
        let ping = DiagnosticsClient::new(channel);
        let ping_us = p50_us(n, || {
            let mut c = ping.clone();
            async move {
                c.ping(PingRequest {}).await.unwrap();
            }
        })
        .await;
        // The same member call by certificate (a node's) and by token: what each check costs.
        let by_cert = if insecure {
            creds.clone()
        } else {
            cluster.meta.pki.node()
        };
        let mut member_us = Vec::new();
        for c in [&by_cert, &creds] {
            let ch = bitmountain_tests::pki::connect(&cluster.meta.addr(1), c).await;
            let stub = bitmountain_proto::v1::meta_service_client::MetaServiceClient::new(ch);
            member_us.push(
                p50_us(n, || {
                    let mut s = stub.clone();
                    async move {
                        s.cluster_status(bitmountain_proto::v1::ClusterStatusRequest {})
                            .await
                            .unwrap();
                    }
                })
                .await,
            );
        }
        println!(
            "BENCH rpc {}: member ClusterStatus p50 {:.0} µs with a node certificate, {:.0} µs with a token",
            if insecure { "insecure" } else { "tls+tokens" },
            member_us[0],
            member_us[1]
        );
        let client = cluster.client(1);
        let status_us = p50_us(n / 3, || {
            let client = &client;
            async move {
                client.status().await.unwrap();
            }
        })
        .await;
        println!(
            "BENCH rpc {mode}: Ping p50 {ping_us:.0} µs (open, one hop); node ClusterStatus p50 {status_us:.0} µs (token checked, node→member hop)"
        );
    }
}

/// Warm read p50 by file size, secured and insecure: whether a secured read's extra time
/// grows with the payload (cipher and TLS copies) or is per call.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-tls read_latency_by_size"]
async fn read_latency_by_size() {
    const SIZES: [usize; 4] = [4 << 10, 64 << 10, 256 << 10, 1 << 20];
    for insecure in [false, true, false, true] {
        let cluster = Cluster::start_secured(1, 6, 2, "4+2", &[], &[], insecure);
        let client = cluster.client(1);
        let files: Vec<UploadFile> = SIZES
            .iter()
            .map(|s| UploadFile::from_bytes(format!("f{s}"), pseudo_random_bytes(*s as u64, *s)))
            .collect();
        let put = client
            .put_files(files, &PutOptions::default())
            .await
            .unwrap();
        let mut line = String::new();
        for s in SIZES {
            let path = format!("f{s}");
            let us = p50_us(300, || {
                let (client, id, path) = (&client, &put.bundle_id, &path);
                async move {
                    assert_eq!(client.read_file(id, path).await.unwrap().len(), s);
                }
            })
            .await;
            line.push_str(&format!(" {} KiB {us:.0} µs;", s >> 10));
        }
        println!(
            "BENCH read-by-size {}:{line}",
            if insecure { "insecure" } else { "tls+tokens" }
        );
    }
}

/// A steady loop of warm 64 KiB reads from one node (code 1+2: the bytes live on one node, the
/// client goes straight to it), secured or insecure by `TLS_BENCH_MODE` (`tls`, `insecure`),
/// for `TLS_BENCH_SECS` seconds: the workload to profile (`perf record -a`) while it runs.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run with scripts/bench-tls read_loop_to_profile"]
async fn read_loop_to_profile() {
    let insecure = std::env::var("TLS_BENCH_MODE").as_deref() == Ok("insecure");
    let secs = env_u64("TLS_BENCH_SECS", 10);
    let nodes = env_u64("TLS_BENCH_NODES", 3) as usize;
    let code = std::env::var("TLS_BENCH_CODE").unwrap_or_else(|_| "1+2".into());
    let cluster = Cluster::start_secured(1, nodes, 1, &code, &[], &[], insecure);
    let client = cluster.client_all();
    let put = client
        .put_files(
            [UploadFile::from_bytes(
                "f",
                pseudo_random_bytes(7, 64 << 10),
            )],
            &PutOptions::default(),
        )
        .await
        .unwrap();
    // The record and index cached, so every read goes straight to the node with the bytes
    // (without it the client picks a node, and two of three reads crossed a second hop).
    client.prepare(&put.bundle_id).await.unwrap();
    for _ in 0..100 {
        client.read_file(&put.bundle_id, "f").await.unwrap();
    }
    println!("BENCH read-loop: reading for {secs} s");
    let pids: Vec<u32> = cluster.nodes.iter().filter_map(|n| n.pid()).collect();
    let ticks = || {
        let nodes: u64 = pids.iter().map(|p| cpu_ticks(*p)).sum();
        (nodes, cpu_ticks(std::process::id()))
    };
    // What the nodes spend with nobody reading (heartbeats, background workers): the read
    // figures below include it.
    let idle = ticks();
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "BENCH read-loop idle: nodes {:.0} ms of CPU per second",
        ms_per_second(ticks().0 - idle.0, 3)
    );
    let before = ticks();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut lat = Vec::new();
    while Instant::now() < end {
        let t = Instant::now();
        let bytes = client.read_file(&put.bundle_id, "f").await.unwrap();
        lat.push(t.elapsed());
        assert_eq!(bytes.len(), 64 << 10);
    }
    let after = ticks();
    lat.sort();
    println!(
        "BENCH read-loop {}: {} reads, p50 {:.0} µs, p90 {:.0} µs; CPU per read: nodes {:.0} µs, client {:.0} µs",
        if insecure { "insecure" } else { "tls+tokens" },
        lat.len(),
        lat[lat.len() / 2].as_secs_f64() * 1e6,
        lat[lat.len() * 9 / 10].as_secs_f64() * 1e6,
        us_per(after.0 - before.0, lat.len()),
        us_per(after.1 - before.1, lat.len())
    );
}
