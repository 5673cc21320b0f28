//! Self-healing on a storage node: the repair worker ([`repair`]) that claims repairs from the
//! metadata leader, rebuilds or copies shards onto this node's disks, verifies them and commits
//! the placement change; and the scrubber ([`scrub`]) that reads every shard on a schedule and
//! turns what fails its checks into repairs; and the background fixity pass ([`fixity`]) that
//! reads every bundle it owns back against its ingest digests once per interval; and the
//! return check ([`returning`]) of a disk that is healthy again after failing.
//!
//! Both write or read at a bounded rate ([`Throttle`]); the repair rate and the number of
//! repairs in flight come from the metadata group (changed at runtime with
//! `bitmountain repair throttle`), the scrub rate from the node's configuration.

pub mod fixity;
pub mod repair;
pub mod returning;
pub mod scrub;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitmountain_meta_client::types::RepairSettings;
use bitmountain_meta_client::BundleId;
use tokio::sync::Notify;

use crate::coordinator::Coordinator;
use crate::limits::{
    FIXITY_BYTES_PER_SEC, FIXITY_INTERVAL_MS, REPAIR_POLL_INTERVAL_MS, SCRUB_BYTES_PER_SEC,
    SCRUB_INTERVAL_MS,
};
use crate::throttle::Throttle;

/// How a node heals.
#[derive(Debug, Clone)]
pub struct HealConfig {
    /// Pause between claims when there was nothing to do.
    pub repair_poll_interval: Duration,
    /// Time between the starts of two scrub passes.
    pub scrub_interval: Duration,
    /// Shard bytes per second a scrub pass reads; 0: unlimited.
    pub scrub_bytes_per_sec: u64,
    /// Time within which the fixity pass checks every bundle this node owns.
    pub fixity_interval: Duration,
    /// Bundle bytes per second the fixity pass reads; 0: unlimited.
    pub fixity_bytes_per_sec: u64,
}

impl Default for HealConfig {
    fn default() -> Self {
        HealConfig {
            repair_poll_interval: Duration::from_millis(REPAIR_POLL_INTERVAL_MS),
            scrub_interval: Duration::from_millis(SCRUB_INTERVAL_MS),
            scrub_bytes_per_sec: SCRUB_BYTES_PER_SEC,
            fixity_interval: Duration::from_millis(FIXITY_INTERVAL_MS),
            fixity_bytes_per_sec: FIXITY_BYTES_PER_SEC,
        }
    }
}

/// Scrub results of one disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubRecord {
    /// When the last full pass over the disk ended.
    pub finished_unix_ms: u64,
    /// Damaged shards it found.
    pub damaged_shards: u64,
}

/// Starting scrub passes on demand (the `StartScrub` RPC) and knowing whether one runs.
#[derive(Debug, Default)]
pub struct ScrubControl {
    trigger: Notify,
    running: AtomicBool,
}

impl ScrubControl {
    /// Asks for a pass now; false when one is already running.
    pub fn start(&self) -> bool {
        if self.running.load(Ordering::Relaxed) {
            return false;
        }
        self.trigger.notify_one();
        true
    }
}

/// Shared state of the repair worker and the scrubber.
#[derive(Debug)]
pub struct Healer {
    pub coordinator: Arc<Coordinator>,
    pub config: HealConfig,
    settings: Mutex<RepairSettings>,
    repair_throttle: Throttle,
    scrub_throttle: Throttle,
    fixity_throttle: Throttle,
    running: Mutex<HashSet<BundleId>>,
    scrubbed: Mutex<HashMap<u64, ScrubRecord>>,
    pub scrub_control: Arc<ScrubControl>,
    /// Disks coming back after failing their health check.
    pub returns: Arc<returning::DiskReturns>,
}

impl Healer {
    pub fn new(coordinator: Arc<Coordinator>, config: HealConfig) -> Arc<Self> {
        let settings = RepairSettings::default();
        Arc::new(Healer {
            coordinator,
            repair_throttle: Throttle::new(settings.bytes_per_sec),
            scrub_throttle: Throttle::new(config.scrub_bytes_per_sec),
            fixity_throttle: Throttle::new(config.fixity_bytes_per_sec),
            settings: Mutex::new(settings),
            config,
            running: Mutex::default(),
            scrubbed: Mutex::default(),
            scrub_control: Arc::new(ScrubControl::default()),
            returns: Arc::default(),
        })
    }

    /// Applies throttles learned from the metadata group.
    pub fn apply_settings(&self, settings: RepairSettings) {
        let mut current = self.settings.lock().unwrap_or_else(|p| p.into_inner());
        if *current != settings {
            tracing::info!(?settings, "repair throttles changed");
            *current = settings;
            self.repair_throttle.set_rate(settings.bytes_per_sec);
        }
    }

    fn settings(&self) -> RepairSettings {
        *self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashSet<BundleId>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node's worker is repairing the bundle now.
    pub fn is_repairing(&self, id: BundleId) -> bool {
        self.running().contains(&id)
    }

    /// Scrub results by disk, for heartbeats.
    pub fn scrub_records(&self) -> HashMap<u64, ScrubRecord> {
        self.scrubbed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record_scrub(&self, disk_id: u64, record: ScrubRecord) {
        self.scrubbed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(disk_id, record);
    }
}
