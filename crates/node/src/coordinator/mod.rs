//! The coordinator: what a node does for a client of the public API. It turns an upload into a
//! bundle (allocate, build the MIME stream, encode stripe by stripe, stream cells to the k+m
//! targets, commit) and a read into range reads of the right shards (decoding around missing
//! or corrupt chunks). The gRPC layer (`archive_service`) only converts messages; the logic is
//! here, on domain types.

mod cache;
mod delete;
pub mod fixity;
pub mod read;
pub mod upload;
mod verify;

use std::sync::Arc;
use std::time::Duration;

use bitmountain_meta_client::{Bundle, BundleId as MetaBundleId, BundleState, MetaClient};
use tokio::sync::Semaphore;

use crate::error::{NodeError, Result};
use crate::limits::{
    CLIENT_IDLE_TIMEOUT_MS, MAX_CONCURRENT_UPLOADS, MAX_FILES_PER_UPLOAD, RECORD_CACHE_WEIGHT_BYTES,
};
use crate::shard_io::ShardIo;

pub use cache::BoundedCache;
pub use read::{CachedBundle, DamageReporter};

/// Tunables of the coordinator (defaults in `limits`).
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// An upload whose client sends nothing for this long is abandoned.
    pub client_idle_timeout: Duration,
    /// Most files in one uploaded bundle.
    pub max_files_per_upload: u64,
    /// Uploads coordinated at once.
    pub max_concurrent_uploads: usize,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            client_idle_timeout: Duration::from_millis(CLIENT_IDLE_TIMEOUT_MS),
            max_files_per_upload: MAX_FILES_PER_UPLOAD,
            max_concurrent_uploads: MAX_CONCURRENT_UPLOADS,
        }
    }
}

/// Everything the coordinator needs, shared by every request a node serves.
#[derive(Debug)]
pub struct Coordinator {
    pub node_id: u64,
    pub address: String,
    pub meta: Arc<MetaClient>,
    pub io: Arc<ShardIo>,
    pub config: CoordinatorConfig,
    upload_slots: Arc<Semaphore>,
    bundles: BoundedCache<MetaBundleId, Arc<CachedBundle>>,
    damage: DamageReporter,
}

impl Coordinator {
    pub fn new(
        node_id: u64,
        address: String,
        meta: Arc<MetaClient>,
        io: Arc<ShardIo>,
        config: CoordinatorConfig,
    ) -> Self {
        Coordinator {
            node_id,
            address,
            upload_slots: Arc::new(Semaphore::new(config.max_concurrent_uploads)),
            damage: DamageReporter::new(Arc::clone(&meta)),
            meta,
            io,
            config,
            bundles: BoundedCache::new(crate::limits::BUNDLE_CACHE_BYTES),
        }
    }

    /// A sealed bundle's record (cached; refetched when `refresh`), or the error a client
    /// should see for a bundle that is not readable.
    pub async fn sealed_bundle(
        &self,
        id: MetaBundleId,
        refresh: bool,
    ) -> Result<Arc<CachedBundle>> {
        if !refresh {
            if let Some(b) = self.bundles.get(&id) {
                return Ok(b);
            }
        }
        let bundle = match self.meta.get_bundle(id, false).await {
            Ok(b) => b,
            Err(bitmountain_meta_client::MetaError::UnknownBundle { .. }) => {
                self.bundles.remove(&id);
                return Err(NodeError::UnknownBundle {
                    bundle: id.to_string(),
                    detail: String::new(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        check_readable(&bundle)?;
        let cached = Arc::new(CachedBundle::new(bundle)?);
        self.bundles
            .insert(id, Arc::clone(&cached), RECORD_CACHE_WEIGHT_BYTES);
        Ok(cached)
    }

    /// Re-weighs a cached bundle once its index is loaded.
    fn weigh_bundle(&self, b: &Arc<CachedBundle>, index_bytes: usize) {
        let weight = RECORD_CACHE_WEIGHT_BYTES
            .saturating_add(index_bytes.saturating_mul(crate::limits::INDEX_MEMORY_FACTOR));
        self.bundles.insert(b.id(), Arc::clone(b), weight);
    }

    /// Forgets a cached bundle record (its placement may have changed).
    pub fn forget_bundle(&self, id: MetaBundleId) {
        self.bundles.remove(&id);
    }
}

/// Only sealed bundles are visible to readers.
fn check_readable(bundle: &Bundle) -> Result<()> {
    let id = bundle.record.id.to_string();
    match bundle.record.state {
        BundleState::Sealed => Ok(()),
        BundleState::Pending => Err(NodeError::UnknownBundle {
            bundle: id,
            detail: " (an upload of it is in progress or failed; it is not committed)".into(),
        }),
        BundleState::Deleting => Err(NodeError::UnknownBundle {
            bundle: id,
            detail: " (it was deleted)".into(),
        }),
    }
}

/// Parses a bundle id from the API (32 hex digits).
pub fn parse_bundle_id(text: &str) -> Result<MetaBundleId> {
    text.trim().parse().map_err(|_| NodeError::BadRequest {
        reason: format!("{text:?} is not a bundle id (32 hex digits)"),
    })
}

/// The erasure code of a bundle record. Every bundle the cluster writes uses the default chunk
/// size (64 KiB): the shard header records it, the metadata record does not need to.
pub fn erasure_code(code: &bitmountain_meta_client::Code) -> Result<bitmountain_erasure::Code> {
    let cell_bytes = u32::try_from(code.cell_bytes).map_err(|_| NodeError::BadRequest {
        reason: format!("cell size {} is too large", code.cell_bytes),
    })?;
    bitmountain_erasure::Code::with_sizes(
        code.data_shards as usize,
        code.parity_shards as usize,
        cell_bytes,
        bitmountain_erasure::code::DEFAULT_CHUNK_BYTES,
    )
    .map_err(|e| NodeError::BadRequest {
        reason: format!("code {code} cannot be used: {e}"),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_convert_or_say_why_not() {
        let code = bitmountain_meta_client::Code {
            data_shards: 4,
            parity_shards: 2,
            cell_bytes: 1 << 20,
        };
        let e = erasure_code(&code).unwrap();
        assert_eq!(
            (e.data_shards(), e.parity_shards(), e.cell_bytes()),
            (4, 2, 1 << 20)
        );
        let no_parity = bitmountain_meta_client::Code {
            parity_shards: 0,
            ..code
        };
        let err = erasure_code(&no_parity).unwrap_err().to_string();
        assert!(err.contains("parity"), "{err}");
        let huge_cell = bitmountain_meta_client::Code {
            cell_bytes: 1 << 40,
            ..code
        };
        assert!(erasure_code(&huge_cell).is_err());
    }

    #[test]
    fn bundle_ids_parse_or_name_the_bad_text() {
        let id = parse_bundle_id("0123456789abcdef0123456789abcdef").unwrap();
        assert_eq!(id.to_string(), "0123456789abcdef0123456789abcdef");
        let err = parse_bundle_id("xyz").unwrap_err();
        assert_eq!(err.kind(), "bad_request");
        assert!(err.to_string().contains("\"xyz\""), "{err}");
    }
}
