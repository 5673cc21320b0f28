//! Deleting bundles: the metadata group marks the bundle deleting (it disappears for readers at
//! once), then every shard the placement names is deleted, then the record is purged. A shard
//! on a node that is down keeps the record in state deleting; garbage collection finishes it.

use bitmountain_meta_client::types::Agent;
use bitmountain_meta_client::{Bundle, BundleId, MetaError};

use super::upload::erasure_id;
use super::Coordinator;
use crate::error::{NodeError, Result};
use crate::shard_io::DeleteWhy;

impl Coordinator {
    /// Deletes a sealed bundle (refused while retained or held); returns its record as it was
    /// marked deleting. `reason` is logged here and by the metadata group.
    pub async fn delete_bundle(&self, id: BundleId, reason: &str, agent: &Agent) -> Result<Bundle> {
        let bundle = match self.meta.delete_bundle(id, reason, agent).await {
            Ok(b) => b,
            Err(MetaError::UnknownBundle { .. }) => {
                return Err(NodeError::UnknownBundle {
                    bundle: id.to_string(),
                    detail: String::new(),
                })
            }
            Err(MetaError::WrongState { .. }) => {
                return Err(NodeError::UnknownBundle {
                    bundle: id.to_string(),
                    detail: " (it is not committed: an upload of it is in progress or failed)"
                        .into(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(bundle = %id, %reason, "bundle deleted");
        self.forget_bundle(id);
        self.finish_delete(&bundle).await;
        Ok(bundle)
    }

    /// Deletes every shard of a deleting bundle and purges its record; returns whether it is
    /// gone. Idempotent: shards already gone count as deleted.
    pub async fn finish_delete(&self, bundle: &Bundle) -> bool {
        let id = bundle.record.id;
        let eid = erasure_id(id);
        let results = futures::future::join_all(
            bundle
                .locations
                .iter()
                .map(|loc| self.io.delete(loc, eid, DeleteWhy::BundleDeleted)),
        )
        .await;
        let mut all_gone = true;
        for (loc, result) in bundle.locations.iter().zip(results) {
            if let Err(e) = result {
                all_gone = false;
                tracing::info!(bundle = %id, shard = loc.shard_index, node = %loc.node_address, error = %e, "shard of a deleted bundle not deleted yet; garbage collection retries");
            }
        }
        if !all_gone {
            return false;
        }
        match self.meta.purge_bundle(id).await {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(bundle = %id, error = %e, "deleted bundle not purged yet; garbage collection retries");
                false
            }
        }
    }
}
