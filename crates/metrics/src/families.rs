//! The metric families. Names and labels are a contract: dashboards and alerts use them.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Most distinct `rpc` label values: a client sending made-up method paths must not grow the
/// series without bound; later ones are counted as `other`.
pub const MAX_RPC_LABELS: usize = 256;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthyLabel {
    pub healthy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpareLabel {
    pub spare: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiskLabels {
    pub node: String,
    pub disk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DiskStateLabels {
    pub node: String,
    pub disk: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabel {
    pub rpc: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcCodeLabels {
    pub rpc: String,
    pub code: String,
}

type DurationFamily = Family<RpcLabel, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every family, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    // The cluster, as a metadata member sees it.
    pub bundles: Family<StateLabel, Gauge>,
    pub bundles_by_healthy_shards: Family<HealthyLabel, Gauge>,
    /// The same bundles by healthy shards beyond the k needed to read (0: one more loss
    /// loses data; the alert on "k+1 or fewer" is `spare <= 1`, whatever the code).
    pub bundles_by_spare_shards: Family<SpareLabel, Gauge>,
    pub repair_queue_bundles: Gauge,
    pub repair_running_shards: Gauge,
    pub repair_bytes: Counter,
    pub disk_capacity_bytes: Family<DiskLabels, Gauge>,
    pub disk_used_bytes: Family<DiskLabels, Gauge>,
    pub disk_state: Family<DiskStateLabels, Gauge>,
    pub node_up: Family<NodeLabel, Gauge>,
    pub scrub_last_pass_timestamp_seconds: Family<DiskLabels, Gauge>,
    pub durability_loss_probability_per_year: Gauge<f64, AtomicU64>,
    /// On the leader: failure domains (at its level) with a disk that takes new shards, and
    /// the shards of a stripe of the default code. Fewer domains than shards: no upload of
    /// that code can be placed.
    pub placement_domains: Gauge,
    pub placement_stripe_shards: Gauge,
    // Raft, per member.
    pub raft_term: Gauge,
    pub raft_is_leader: Gauge,
    pub raft_commit_index: Gauge,
    pub raft_applied_index: Gauge,
    pub raft_leader_changes: Counter,
    // Work done, where it is done.
    pub scrub_errors: Counter,
    pub upload_bytes: Counter,
    pub read_bytes: Counter,
    pub degraded_reads: Counter,
    pub requests: Family<RpcCodeLabels, Counter>,
    pub request_duration_seconds: DurationFamily,
    rpc_labels: Mutex<std::collections::HashSet<String>>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            bundles: Family::default(),
            bundles_by_healthy_shards: Family::default(),
            bundles_by_spare_shards: Family::default(),
            repair_queue_bundles: Gauge::default(),
            repair_running_shards: Gauge::default(),
            repair_bytes: Counter::default(),
            disk_capacity_bytes: Family::default(),
            disk_used_bytes: Family::default(),
            disk_state: Family::default(),
            node_up: Family::default(),
            scrub_last_pass_timestamp_seconds: Family::default(),
            durability_loss_probability_per_year: Gauge::default(),
            placement_domains: Gauge::default(),
            placement_stripe_shards: Gauge::default(),
            raft_term: Gauge::default(),
            raft_is_leader: Gauge::default(),
            raft_commit_index: Gauge::default(),
            raft_applied_index: Gauge::default(),
            raft_leader_changes: Counter::default(),
            scrub_errors: Counter::default(),
            upload_bytes: Counter::default(),
            read_bytes: Counter::default(),
            degraded_reads: Counter::default(),
            requests: Family::default(),
            request_duration_seconds: Family::new_with_constructor(duration_histogram),
            rpc_labels: Mutex::default(),
        };
        m.register();
        m
    }

    fn register(&mut self) {
        let r = &mut self.registry;
        // prometheus-client adds `_total` to counters' names.
        r.register(
            "bitmountain_bundles",
            "Bundles by state",
            self.bundles.clone(),
        );
        r.register(
            "bitmountain_bundles_by_healthy_shards",
            "Bundles in the repair queue by their healthy shard count",
            self.bundles_by_healthy_shards.clone(),
        );
        r.register(
            "bitmountain_bundles_by_spare_shards",
            "Bundles in the repair queue by healthy shards beyond the k needed to read",
            self.bundles_by_spare_shards.clone(),
        );
        r.register(
            "bitmountain_repair_queue_bundles",
            "Bundles waiting for repair",
            self.repair_queue_bundles.clone(),
        );
        r.register(
            "bitmountain_repair_running_shards",
            "Shard rebuilds in progress",
            self.repair_running_shards.clone(),
        );
        r.register(
            "bitmountain_repair_bytes",
            "Shard bytes rebuilt",
            self.repair_bytes.clone(),
        );
        r.register(
            "bitmountain_disk_capacity_bytes",
            "Disk capacity",
            self.disk_capacity_bytes.clone(),
        );
        r.register(
            "bitmountain_disk_used_bytes",
            "Disk bytes used",
            self.disk_used_bytes.clone(),
        );
        r.register(
            "bitmountain_disk_state",
            "1 for the state a disk is in",
            self.disk_state.clone(),
        );
        r.register(
            "bitmountain_node_up",
            "1 if the storage node is up",
            self.node_up.clone(),
        );
        r.register(
            "bitmountain_scrub_last_pass_timestamp_seconds",
            "When a disk's last full scrub pass ended",
            self.scrub_last_pass_timestamp_seconds.clone(),
        );
        r.register(
            "bitmountain_durability_loss_probability_per_year",
            "Modelled probability of losing any bundle within a year, with the cluster as it is",
            self.durability_loss_probability_per_year.clone(),
        );
        r.register(
            "bitmountain_placement_domains",
            "Failure domains with a disk that takes new shards (the leader's view)",
            self.placement_domains.clone(),
        );
        r.register(
            "bitmountain_placement_stripe_shards",
            "Shards of one stripe of the default code, each needing a domain of its own",
            self.placement_stripe_shards.clone(),
        );
        r.register(
            "bitmountain_raft_term",
            "This member's Raft term",
            self.raft_term.clone(),
        );
        r.register(
            "bitmountain_raft_is_leader",
            "1 if this member leads",
            self.raft_is_leader.clone(),
        );
        r.register(
            "bitmountain_raft_commit_index",
            "This member's commit index",
            self.raft_commit_index.clone(),
        );
        r.register(
            "bitmountain_raft_applied_index",
            "This member's applied index",
            self.raft_applied_index.clone(),
        );
        r.register(
            "bitmountain_raft_leader_changes",
            "Leader changes this member saw",
            self.raft_leader_changes.clone(),
        );
        r.register(
            "bitmountain_scrub_errors",
            "Damaged shards scrubs found",
            self.scrub_errors.clone(),
        );
        r.register(
            "bitmountain_upload_bytes",
            "File bytes uploaded through this node",
            self.upload_bytes.clone(),
        );
        r.register(
            "bitmountain_read_bytes",
            "File bytes read through this node",
            self.read_bytes.clone(),
        );
        r.register(
            "bitmountain_degraded_reads",
            "Reads that decoded around missing or damaged shards",
            self.degraded_reads.clone(),
        );
        r.register(
            "bitmountain_requests",
            "gRPC requests by method and status code",
            self.requests.clone(),
        );
        r.register(
            "bitmountain_request_duration_seconds",
            "gRPC request time, to the end of the response",
            self.request_duration_seconds.clone(),
        );
    }

    /// The text exposition of every family.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The `rpc` label for a method path, `other` once [`MAX_RPC_LABELS`] are in use.
    pub fn rpc_label(&self, path: &str) -> String {
        let name = path.trim_start_matches('/');
        let name = match name.split_once('/') {
            Some((service, method)) => {
                let service = service.rsplit('.').next().unwrap_or(service);
                format!("{service}/{method}")
            }
            None => name.to_owned(),
        };
        let mut seen = self.rpc_labels.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&name) {
            return name;
        }
        if seen.len() >= MAX_RPC_LABELS {
            return "other".to_owned();
        }
        seen.insert(name.clone());
        name
    }

    /// Counts one finished request.
    pub fn observe_request(&self, rpc: &str, code: &str, seconds: f64) {
        self.requests
            .get_or_create(&RpcCodeLabels {
                rpc: rpc.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        self.request_duration_seconds
            .get_or_create(&RpcLabel {
                rpc: rpc.to_owned(),
            })
            .observe(seconds);
    }
}

/// The process's metrics (a process runs one member or node; `bitmountain dev` runs several,
/// which then share them).
pub fn global() -> Arc<Metrics> {
    static METRICS: OnceLock<Arc<Metrics>> = OnceLock::new();
    Arc::clone(METRICS.get_or_init(|| Arc::new(Metrics::new())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_names_are_exposed() {
        let m = Metrics::new();
        m.bundles
            .get_or_create(&StateLabel {
                state: "sealed".into(),
            })
            .set(3);
        m.upload_bytes.inc_by(10);
        m.observe_request(
            &m.rpc_label("/bitmountain.archive.v1.ArchiveService/GetFile"),
            "OK",
            0.001,
        );
        let text = m.encode();
        for name in [
            "bitmountain_bundles{state=\"sealed\"} 3",
            "bitmountain_upload_bytes_total 10",
            "bitmountain_requests_total{rpc=\"ArchiveService/GetFile\",code=\"OK\"} 1",
            "bitmountain_request_duration_seconds_bucket{le=",
            "bitmountain_raft_leader_changes_total",
            "bitmountain_repair_bytes_total",
            "bitmountain_durability_loss_probability_per_year",
            "bitmountain_placement_domains",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }

    #[test]
    fn made_up_methods_do_not_grow_the_series_without_bound() {
        let m = Metrics::new();
        for i in 0..MAX_RPC_LABELS + 10 {
            m.rpc_label(&format!("/x.Y/M{i}"));
        }
        assert_eq!(m.rpc_label("/x.Y/Another"), "other");
        assert_eq!(m.rpc_label("/x.Y/M1"), "Y/M1");
    }
}
