//! What `bitmountain repair status` shows: the queue by healthy shards, the repairs running
//! (leases), the rate over the last minute (while repairs ran) and the time left at that rate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bitmountain_proto::v1 as pb;

use super::{lock, Finished, RATE_WINDOW_MS, STATUS_SCAN_TASKS};
use crate::error::Result;
use crate::server::MetaServer;
use crate::state::KeyReader as _;

/// The repair status and, for the metrics, the queue by spare shards (healthy beyond k).
#[derive(Debug)]
pub(crate) struct RepairSnapshot {
    pub response: pb::RepairStatusResponse,
    /// Queued bundles by healthy shards minus their code's k (a bundle gone since it was
    /// queued is not counted).
    pub by_spare: BTreeMap<u32, u64>,
}

impl MetaServer {
    /// Bytes per second of the repairs that finished over the last window, while repairs
    /// ran: the cluster's repair speed, not how much there was to repair (a lone small repair
    /// is not a slow cluster).
    pub(crate) fn repair_rate(&self) -> f64 {
        let mut finished = lock(&self.inner.healing.finished);
        let window = Duration::from_millis(RATE_WINDOW_MS);
        while finished.front().is_some_and(|f| f.ended.elapsed() > window) {
            finished.pop_front();
        }
        busy_rate(finished.iter().copied())
    }

    /// What `bitmountain repair status` shows.
    pub(crate) fn repair_status_now(&self) -> Result<pb::RepairStatusResponse> {
        Ok(self.repair_snapshot(false)?.response)
    }

    /// The repair status; with `spare`, the queue by spare shards too (a bundle lookup per
    /// queued task, for the metrics).
    pub(crate) fn repair_snapshot(&self, spare: bool) -> Result<RepairSnapshot> {
        let cluster = self.inner.store.map().cluster.clone();
        let mut levels: BTreeMap<u32, u64> = BTreeMap::new();
        let mut by_spare: BTreeMap<u32, u64> = BTreeMap::new();
        let mut queued_bytes = 0u64;
        let mut token = Vec::new();
        let mut scanned = 0;
        let truncated = loop {
            let (tasks, next) = self.inner.store.list_repairs(&token, 1000)?;
            scanned += tasks.len();
            for t in &tasks {
                *levels.entry(t.healthy_shards).or_default() += 1;
                if spare {
                    if let Some(b) = self.inner.store.bundle(t.bundle_id)? {
                        let extra = t.healthy_shards.saturating_sub(b.code.data_shards);
                        *by_spare.entry(extra).or_default() += 1;
                    }
                }
                queued_bytes = queued_bytes
                    .saturating_add(t.shard_bytes.saturating_mul(t.missing_shards.len() as u64));
            }
            if next.is_empty() {
                break false;
            }
            if scanned >= STATUS_SCAN_TASKS {
                break true;
            }
            token = next;
        };
        let now = Instant::now();
        let running_repairs: Vec<pb::RunningRepair> = lock(&self.inner.healing.leases)
            .iter()
            .filter(|(_, l)| l.until > now)
            .map(|((id, s), l)| pb::RunningRepair {
                bundle_id: Some(id.to_proto()),
                shard_index: *s,
                node_id: l.node_id,
                running_ms: l.since.elapsed().as_millis() as u64,
            })
            .collect();
        let rate = self.repair_rate();
        let eta_ms = if queued_bytes > 0 && rate > 0.0 {
            (queued_bytes as f64 / rate * 1000.0) as u64
        } else {
            0
        };
        let response = pb::RepairStatusResponse {
            queued: cluster.repairs,
            running: running_repairs.len() as u64,
            shards_repaired: cluster.shards_repaired,
            bytes_repaired: cluster.bytes_repaired,
            bytes_per_sec: rate,
            queued_bytes,
            eta_ms,
            levels: levels
                .into_iter()
                .map(|(healthy_shards, bundles)| pb::RedundancyLevel {
                    healthy_shards,
                    bundles,
                })
                .collect(),
            settings: Some(cluster.repair_settings.to_proto()),
            running_repairs,
            sealed_bundles: cluster.sealed,
            truncated,
        };
        Ok(RepairSnapshot { response, by_spare })
    }
}

/// Bytes over the time at least one of these repairs was running (the union of their
/// intervals, at least a millisecond); 0 with none.
fn busy_rate(finished: impl IntoIterator<Item = Finished>) -> f64 {
    let mut spans: Vec<Finished> = finished.into_iter().collect();
    if spans.is_empty() {
        return 0.0;
    }
    spans.sort_by_key(|f| f.started);
    let bytes: u64 = spans.iter().map(|f| f.bytes).sum();
    let mut busy = Duration::ZERO;
    let (mut from, mut to) = (spans[0].started, spans[0].ended);
    for f in &spans[1..] {
        if f.started > to {
            busy += to - from;
            (from, to) = (f.started, f.ended);
        } else {
            to = to.max(f.ended);
        }
    }
    busy += to - from;
    bytes as f64 / busy.max(Duration::from_millis(1)).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_only_time_when_repairs_ran() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let f = |s: u64, e: u64, bytes: u64| Finished {
            started: at(s),
            ended: at(e),
            bytes,
        };
        assert_eq!(busy_rate([]), 0.0);
        // Two overlapping repairs (0-1 s, 0.5-2 s) and one alone 50 s later (50-51 s):
        // 3 MB over 3 busy seconds, not over the 51 s they span.
        let r = busy_rate([
            f(500, 2000, 1_000_000),
            f(0, 1000, 1_000_000),
            f(50_000, 51_000, 1_000_000),
        ]);
        assert!((r - 1e6).abs() < 1.0, "{r}");
        // A repair that took no measurable time counts a millisecond.
        assert!((busy_rate([f(10, 10, 1_000)]) - 1e6).abs() < 1.0);
    }
}
