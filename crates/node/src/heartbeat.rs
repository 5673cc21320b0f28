//! Heartbeats: every interval the node tells the metadata leader its disks' capacity, use and
//! health, its scrub results, the disks that passed their return check (`heal::returning`) and
//! its workers' status (leader soft state there), and learns which of its disks the group
//! holds failed on its report, the repair throttles in force and whether the group is still its
//! cluster's. A group that answers it does not know the node (rebuilt from the disks) gets the
//! node's registration again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bitmountain_meta_client::types::{DiskReport, Heartbeat, Registration, WorkerReport};
use bitmountain_meta_client::{DiskState, MetaClient, MetaError};
use bitmountain_worker::{Next, StepError, Worker, Workers};

use crate::daemon::disk_info;
use crate::heal::Healer;
use crate::recovery::RecoveryControl;
use crate::shard_service::DiskSet;
use crate::tokens::TokenCache;

/// The heartbeat worker.
#[derive(Debug)]
pub struct Heartbeats {
    /// A client whose deadline is a few intervals: a heartbeat that cannot get through is
    /// dropped, the next one follows.
    pub meta: MetaClient,
    pub node_id: u64,
    pub cluster_id: String,
    pub disks: DiskSet,
    pub interval: Duration,
    /// Cleared while the metadata group answers for another cluster (garbage collection
    /// pauses).
    pub cluster_ok: Arc<AtomicBool>,
    pub healer: Arc<Healer>,
    /// The node's workers, whose status every heartbeat carries (weak: they own this one).
    pub workers: Weak<Workers>,
    /// The copy of the token table to keep current; `None` with `--insecure`.
    pub tokens: Option<Arc<TokenCache>>,
    /// Whether the group recovers, and how long unknown shards are kept.
    pub recovery: Arc<RecoveryControl>,
    /// Where the node is reached and its failure domain, to register again with a group that
    /// does not know it (one rebuilt from the disks).
    pub address: String,
    pub zone: String,
    pub rack: String,
    pub host: String,
}

impl Heartbeats {
    /// Registers again, with the node's own id and its disks' ids, after the group answered
    /// that it does not know this node: a group rebuilt from the disks (`meta recover`) takes
    /// them; any other group refuses, and the error is the step's.
    async fn register_again(&self, disks: Vec<DiskReport>) -> Result<(), String> {
        let ids: Vec<u64> = disks.iter().map(|d| d.disk_id).collect();
        let r = self
            .meta
            .register_node(&Registration {
                request_id: format!("again-{}-{:032x}", self.node_id, rand::random::<u128>()),
                node_id: self.node_id,
                address: self.address.clone(),
                zone: self.zone.clone(),
                rack: self.rack.clone(),
                host: self.host.clone(),
                disks,
                cluster_id: self.cluster_id.clone(),
            })
            .await
            .map_err(|e| {
                format!(
                    "the metadata group does not know this node, and registering again failed: {e}"
                )
            })?;
        if r.node_id != self.node_id || r.disk_ids != ids || r.cluster_id != self.cluster_id {
            // Never expected: the group registers a known id as given. Restarting the node
            // settles it through its normal start-up.
            return Err(format!(
                "registered again but the group answered node {} disks {:?} of cluster {}; \
                 restart this node",
                r.node_id, r.disk_ids, r.cluster_id
            ));
        }
        tracing::warn!(
            node = self.node_id,
            recovering = r.recovering,
            "the metadata group did not know this node (rebuilt?): registered again"
        );
        if r.recovering {
            self.recovery.observe(true, u64::MAX);
        }
        Ok(())
    }

    /// Each disk's capacity, use and health (read on a blocking thread: statfs and the
    /// identity check touch the disks) and its last scrub.
    async fn disk_infos(&self) -> Result<Vec<DiskReport>, String> {
        let stores: Vec<_> = self.disks.iter().cloned().collect();
        let scrubbed = self.healer.scrub_records();
        let returns = Arc::clone(&self.healer.returns);
        tokio::task::spawn_blocking(move || {
            stores
                .iter()
                .map(|s| {
                    let mut info = disk_info(s.root(), s.disk_id());
                    if let Err(e) = s.check_health() {
                        tracing::error!(disk = s.disk_id(), error = %e, "disk failed its health check");
                        info.state = DiskState::Failed;
                        returns.failed_health_check(s.disk_id());
                    }
                    if let Some(scrub) = scrubbed.get(&s.disk_id()) {
                        info.last_scrub_unix_ms = scrub.finished_unix_ms;
                        info.last_scrub_damaged_shards = scrub.damaged_shards;
                    }
                    info
                })
                .collect()
        })
        .await
        .map_err(|e| format!("checking the disks: {e}"))
    }
}

impl Worker for Heartbeats {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let every = Next::Every(self.interval);
        let disks = self
            .disk_infos()
            .await
            .map_err(|e| StepError::new(e, every))?;
        let workers = self
            .workers
            .upgrade()
            .map(|w| w.statuses().iter().map(WorkerReport::from).collect())
            .unwrap_or_default();
        let sent = self
            .meta
            .heartbeat(&Heartbeat {
                node_id: self.node_id,
                disks: disks.clone(),
                workers,
                checked_disk_ids: self.healer.returns.checked_listed(),
            })
            .await;
        let r = match sent {
            Ok(r) => r,
            Err(MetaError::UnknownNode { .. }) => {
                self.register_again(disks)
                    .await
                    .map_err(|e| StepError::new(e, every))?;
                return Ok(every);
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                return Err(StepError::new(format!("heartbeat failed: {e}"), every));
            }
        };
        let same = r.cluster_id == self.cluster_id;
        if !same {
            tracing::error!(ours = %self.cluster_id, theirs = %r.cluster_id, "the metadata group belongs to another cluster; garbage collection paused");
        }
        self.cluster_ok.store(same, Ordering::Relaxed);
        self.healer.returns.listed_by_group(&r.returning_disk_ids);
        self.recovery
            .observe(r.recovering, r.orphan_hold_until_unix_ms);
        if let Some(settings) = r.repair_settings {
            self.healer.apply_settings(settings);
        }
        if let Some(cache) = &self.tokens {
            if !cache.confirm(r.tokens_version, r.tokens_fingerprint) {
                let table = self.meta.list_tokens().await.map_err(|e| {
                    tracing::warn!(error = %e, "could not fetch the token table");
                    StepError::new(format!("fetching the token table: {e}"), every)
                })?;
                tracing::debug!(version = table.version, "token table refreshed");
                cache.replace(table);
            }
        }
        Ok(every)
    }
}
