//! The placement map allocations draw from, shared between them and rebuilt when the
//! topology changes or free space may have moved.

use std::sync::Arc;
use std::time::Instant;

use super::{MetaServer, PLACEMENT_REFRESH};
use crate::error::Result;
use crate::placement::{Candidate, PlacementMap};
use crate::rules;
use crate::types::{BundleId, Code};

/// A placement map and what it was built from.
#[derive(Debug)]
pub(super) struct CachedPlacement {
    topology_epoch: u64,
    built: Instant,
    map: Arc<PlacementMap>,
}

impl MetaServer {
    /// Chooses disks for a new bundle from the applied cluster map and heartbeat usage.
    pub(super) fn place(&self, code: &Code, id: BundleId) -> Result<Vec<u64>> {
        let seed = (id.0 as u64) ^ ((id.0 >> 64) as u64);
        self.placement_map().place(code.total(), seed)
    }

    fn placement_slot(&self) -> std::sync::MutexGuard<'_, Option<CachedPlacement>> {
        match self.inner.placement.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The placement map for the current topology. Building one walks every disk (thousands
    /// in a large cluster), so allocations share it: it is rebuilt when the topology changes
    /// (registration, disk or node state) and otherwise at most every [`PLACEMENT_REFRESH`],
    /// to follow free space. The state machine still refuses any disk that is not ok.
    fn placement_map(&self) -> Arc<PlacementMap> {
        let epoch = self.inner.store.topology_epoch();
        if let Some(c) = self.placement_slot().as_ref() {
            if c.topology_epoch == epoch && c.built.elapsed() < PLACEMENT_REFRESH {
                return Arc::clone(&c.map);
            }
        }
        let map = Arc::new(self.build_placement_map());
        *self.placement_slot() = Some(CachedPlacement {
            topology_epoch: epoch,
            built: Instant::now(),
            map: Arc::clone(&map),
        });
        map
    }

    /// Failure domains with a disk that takes new shards (for the metrics).
    pub(super) fn usable_domains(&self) -> usize {
        self.placement_map().usable_domains()
    }

    /// Forgets the shared placement map (an allocation drew a disk that is no longer ok).
    pub(super) fn forget_placement_map(&self) {
        *self.placement_slot() = None;
    }

    fn build_placement_map(&self) -> PlacementMap {
        let map = self.inner.store.map();
        let hb = self.heartbeats();
        let level = self.inner.cfg.domain_level;
        let mut cands = Vec::new();
        for id in map.disks.keys() {
            let Some(d) = rules::usable_disk(&map, *id) else {
                continue;
            };
            let Some(domain) = rules::domain_of_disk(&map, d.id, level) else {
                continue;
            };
            // A node that has not reported a disk's use yet is taken at its accounted bytes.
            let reported = hb
                .get(&d.node_id)
                .and_then(|h| h.used.get(&d.id).copied())
                .unwrap_or(0);
            cands.push(Candidate {
                disk_id: d.id,
                domain,
                free_bytes: d
                    .capacity_bytes
                    .saturating_sub(reported.max(d.accounted_bytes)),
            });
        }
        PlacementMap::new(&cands, level)
    }
}
