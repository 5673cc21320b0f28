//! Benchmarks of the metadata group (ignored by default; figures in docs/benchmarks.md ("Metadata group")).
//!
//! Run with `scripts/bench-meta` (the dev profile, which optimises every crate and shares the
//! suite's RocksDB build; `--release` builds RocksDB's C++ again). `META_BENCH_RECORDS` sets the size
//! of the record-count run, `META_BENCH_FAILOVER_ROUNDS` the number of leader kills (3),
//! `META_BENCH_AUDIT_ROUNDS` and `META_BENCH_AUDIT_PAIRS` the audit-cost rounds (4) and pairs per
//! group and round (30,000); `META_BENCH_ONLY=bench_audit_cost scripts/bench-meta` runs one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitmountain_tests::{cpu_ticks, env_u64};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitmountain_meta_client::audit::AuditFilter;
use bitmountain_meta_client::MetaClient;
use bitmountain_tests::meta_cluster::{alloc_commit_pair, register_fake_nodes, MetaCluster};

/// The throughput target for 3 members and 64 clients.
const TARGET_PAIRS_PER_SEC: u64 = 5_000;

/// Runs `clients` concurrent alloc+commit loops until `total` pairs are done; returns
/// (elapsed, sorted latencies).
async fn load(
    client: Arc<MetaClient>,
    clients: usize,
    total: u64,
    prefix: &str,
) -> (Duration, Vec<Duration>) {
    let done = Arc::new(AtomicU64::new(0));
    let lat = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..clients {
        let (client, done, lat, prefix) = (
            client.clone(),
            done.clone(),
            lat.clone(),
            prefix.to_string(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while done.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                if alloc_commit_pair(&client, format!("{prefix}-{w}-{i}")).await {
                    lat.lock().unwrap().push(t.elapsed());
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let mut l = lat.lock().unwrap().clone();
    l.sort_unstable();
    (elapsed, l)
}

fn pct(l: &[Duration], p: f64) -> Duration {
    l[((l.len() as f64 * p) as usize).min(l.len() - 1)]
}

/// A `/proc/PID/status` figure in KiB (`VmRSS:` now, `VmHWM:` the peak since start).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// CPU ticks of every running member and of this (load generator) process.
fn cluster_cpu_ticks(cluster: &MetaCluster) -> (u64, u64) {
    let members = cluster
        .members
        .values()
        .filter_map(|m| m.pid())
        .map(cpu_ticks)
        .sum();
    (members, cpu_ticks(std::process::id()))
}

fn du(path: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(path) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            total += if m.is_dir() { du(&e.path()) } else { m.len() };
        }
    }
    total
}

/// `pairs` pairs from `clients` concurrent callers sharing `client`; prints pairs/s, latency
/// and CPU per pair, returns pairs/s.
async fn measure(
    cluster: &MetaCluster,
    client: Arc<MetaClient>,
    clients: usize,
    pairs: u64,
    label: &str,
) -> f64 {
    let commit_before = client.cluster_status().await.unwrap().commit_index;
    let batches_before = client.batch_stats();
    let cpu_before = cluster_cpu_ticks(cluster);
    let (el, l) = load(client.clone(), clients, pairs, label).await;
    let cpu_after = cluster_cpu_ticks(cluster);
    let commit_after = client.cluster_status().await.unwrap().commit_index;
    let batches_after = client.batch_stats();
    // How the work was grouped: Raft log entries (a shared entry holds a round's proposals)
    // and batch calls per pair.
    println!(
        "BENCH {label}: {:.3} log entries per pair, {:.3} batch calls per pair ({:.1} items per call)",
        (commit_after - commit_before) as f64 / l.len() as f64,
        (batches_after.calls - batches_before.calls) as f64 / l.len() as f64,
        (batches_after.sent - batches_before.sent) as f64
            / (batches_after.calls - batches_before.calls).max(1) as f64,
    );
    let rate = l.len() as f64 / el.as_secs_f64();
    // CPU per pair is steadier than pairs/s on a shared VM: it does not depend on what else
    // got the cores.
    let tick_us = 1e6 / 100.0;
    println!(
        "BENCH {label}: {clients} clients, {} alloc+commit pairs in {:.2}s = {:.0} pairs/s; p50 {:.2} ms, p99 {:.2} ms; CPU per pair: members {:.0} us, load generator {:.0} us",
        l.len(),
        el.as_secs_f64(),
        rate,
        pct(&l, 0.5).as_secs_f64() * 1e3,
        pct(&l, 0.99).as_secs_f64() * 1e3,
        (cpu_after.0 - cpu_before.0) as f64 * tick_us / l.len() as f64,
        (cpu_after.1 - cpu_before.1) as f64 * tick_us / l.len() as f64,
    );
    rate
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn bench_throughput_and_failover() {
    let mut cluster = MetaCluster::start(3, &[]);
    cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = Arc::new(cluster.client());
    register_fake_nodes(&client, 12, 4).await;
    // The baseline in the same run: one client without batching sends every allocation and
    // commit as its own call. Runs alternate so drift of the VM's speed hits both alike.
    let unbatched = Arc::new(cluster.client().with_batching(false));
    load(client.clone(), 64, 2_000, "warm").await;
    // Latency without queueing: one caller at a time.
    measure(&cluster, client.clone(), 1, 1_000, "one-client").await;
    let mut rates = (Vec::new(), Vec::new());
    for run in 0..2 {
        rates.0.push(
            measure(
                &cluster,
                unbatched.clone(),
                64,
                30_000,
                &format!("unbatched-{run}"),
            )
            .await,
        );
        rates.1.push(
            measure(
                &cluster,
                client.clone(),
                64,
                30_000,
                &format!("batched-{run}"),
            )
            .await,
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "BENCH batched {:.0} pairs/s against unbatched {:.0} pairs/s (same run): ratio {:.2}; target {TARGET_PAIRS_PER_SEC} pairs/s, ratio {:.2}",
        mean(&rates.1),
        mean(&rates.0),
        mean(&rates.1) / mean(&rates.0),
        mean(&rates.1) / TARGET_PAIRS_PER_SEC as f64
    );

    // Failover: kill -9 the leader while one client commits; time to the first ack after.
    let rounds = env_u64("META_BENCH_FAILOVER_ROUNDS", 3);
    for round in 0..rounds {
        let leader = cluster
            .wait_leader(&[1, 2, 3], Duration::from_secs(20))
            .await;
        let stop = Arc::new(AtomicBool::new(false));
        let first_after: Arc<Mutex<Option<Instant>>> = Arc::default();
        let killed_at: Arc<Mutex<Option<Instant>>> = Arc::default();
        let w = {
            let (client, stop, first_after, killed_at) = (
                client.clone(),
                stop.clone(),
                first_after.clone(),
                killed_at.clone(),
            );
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let ok = alloc_commit_pair(&client, format!("fo{round}-{i}")).await;
                    let k = *killed_at.lock().unwrap();
                    // Only a pair started after the kill shows the new leader at work (one in
                    // flight may have been acknowledged by the old leader just before it died).
                    if ok
                        && k.is_some_and(|k| started >= k)
                        && first_after.lock().unwrap().is_none()
                    {
                        *first_after.lock().unwrap() = Some(Instant::now());
                        return;
                    }
                    i += 1;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        *killed_at.lock().unwrap() = Some(Instant::now());
        cluster.kill(leader);
        let t0 = killed_at.lock().unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .unwrap()
            .unwrap();
        stop.store(true, Ordering::Relaxed);
        let t1 = first_after.lock().unwrap().unwrap();
        println!("BENCH failover round {round}: kill -9 of leader {leader} -> first acknowledged commit after {:.0} ms", (t1 - t0).as_secs_f64() * 1e3);
        cluster.restart(leader);
    }
}

/// The audit trail's cost (issue 20: at most 10 % of allocate+commit throughput): two groups
/// of three members from this binary, one started at value format 2 (no trail) and one at the
/// newest (every commit writes its ingestion event), measured in turn, the order alternating
/// from round to round so the VM's drift hits both alike. `META_BENCH_AUDIT_ROUNDS` rounds (4)
/// of `META_BENCH_AUDIT_PAIRS` pairs (30,000) per group.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn bench_audit_cost() {
    let rounds = env_u64("META_BENCH_AUDIT_ROUNDS", 4);
    let pairs = env_u64("META_BENCH_AUDIT_PAIRS", 30_000);
    let mut groups = Vec::new();
    for (label, args) in [
        ("untrailed", &["--initial-value-format", "2"][..]),
        ("trailed", &[][..]),
    ] {
        let cluster = MetaCluster::start(3, args);
        cluster
            .wait_leader(&[1, 2, 3], Duration::from_secs(20))
            .await;
        let client = Arc::new(cluster.client());
        register_fake_nodes(&client, 12, 4).await;
        load(client.clone(), 64, 2_000, &format!("{label}-warm")).await;
        groups.push((label, cluster, client));
    }
    // Each group writes the format it was started at: no events in the one, one per commit in
    // the other.
    for (label, _, client) in &groups {
        let st = client.cluster_status().await.unwrap();
        let events = client
            .list_audit(&AuditFilter::default(), 0, 1)
            .await
            .unwrap()
            .head
            .seq;
        println!(
            "BENCH {label}: value format {}, {events} audit events after the warm-up",
            st.value_format
        );
        match *label {
            "untrailed" => assert!(st.value_format == 2 && events == 0),
            _ => assert!(st.value_format >= 3 && events >= 2_000),
        }
    }
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut got = [0.0; 2];
        for g in order {
            let (label, cluster, client) = &groups[g];
            got[g] = measure(
                cluster,
                client.clone(),
                64,
                pairs,
                &format!("{label}-{round}"),
            )
            .await;
            rates[g].push(got[g]);
        }
        println!(
            "BENCH audit cost round {round}: trailed/untrailed {:.3}",
            got[1] / got[0]
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!(
        "BENCH audit cost: trailed {:.0} pairs/s against untrailed {:.0} pairs/s (same run, {rounds} rounds): ratio {:.3}; target >= 0.90",
        mean(&rates[1]),
        mean(&rates[0]),
        mean(&rates[1]) / mean(&rates[0])
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark"]
async fn bench_many_records() {
    let records = env_u64("META_BENCH_RECORDS", 200_000);
    let mut cluster = MetaCluster::start(3, &[]);
    cluster
        .wait_leader(&[1, 2, 3], Duration::from_secs(20))
        .await;
    let client = Arc::new(cluster.client());
    register_fake_nodes(&client, 12, 4).await;
    let (el, l) = load(client.clone(), 64, records, "rec").await;
    println!(
        "BENCH load: {} sealed records in {:.1}s ({:.0} pairs/s)",
        l.len(),
        el.as_secs_f64(),
        l.len() as f64 / el.as_secs_f64()
    );
    let st = client.cluster_status().await.unwrap();
    println!("BENCH counts: {:?}", st.bundles);
    for id in [1, 2, 3] {
        let m = &cluster.members[&id];
        println!(
            "BENCH member {id}: RocksDB {:.1} MiB on disk, RSS {:.1} MiB",
            du(&m.data) as f64 / (1 << 20) as f64,
            rss_kib(m.pid().unwrap()) as f64 / 1024.0
        );
    }
    // Cold restart of every member to the first linearizable read.
    let probe = client.list_bundles(None, None, &[], 1).await.unwrap().0[0]
        .record
        .id;
    for id in [1, 2, 3] {
        cluster.kill(id);
    }
    let t = Instant::now();
    for id in [1, 2, 3] {
        cluster.restart(id);
    }
    let c2 = cluster.client();
    loop {
        if c2.get_bundle(probe, false).await.is_ok() {
            break;
        }
    }
    println!(
        "BENCH cold restart of all 3 members to first linearizable read: {:.2}s",
        t.elapsed().as_secs_f64()
    );
    // Snapshot transfer to a new member.
    let addr4 = cluster.spawn_new(4);
    let t = Instant::now();
    client.add_member(4, &addr4, true).await.unwrap();
    let st = c2.cluster_status().await.unwrap();
    cluster
        .wait_applied(4, st.commit_index, Duration::from_secs(600))
        .await;
    let pid4 = cluster.members[&4].pid().unwrap();
    println!("BENCH new member caught up (snapshot of {} records) in {:.2}s; its RocksDB {:.1} MiB, RSS {:.1} MiB, peak RSS {:.1} MiB",
        l.len(), t.elapsed().as_secs_f64(),
        du(&cluster.members[&4].data) as f64 / (1 << 20) as f64,
        rss_kib(pid4) as f64 / 1024.0,
        peak_rss_kib(pid4) as f64 / 1024.0);
    // The senders were restarted before the transfer, so their peak covers restart, snapshot
    // generation and sending.
    for id in [1, 2, 3] {
        let pid = cluster.members[&id].pid().unwrap();
        println!(
            "BENCH member {id} after the transfer: RSS {:.1} MiB, peak RSS since restart {:.1} MiB",
            rss_kib(pid) as f64 / 1024.0,
            peak_rss_kib(pid) as f64 / 1024.0
        );
    }
}
