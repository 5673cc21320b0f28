//! What keeps a bundle, and its deliberate deletion: `delete` (with its reason), retention and
//! legal holds.

use bitmountain_proto::archive::v1 as pb;

use crate::client::{with_timeout, ArchiveClient, CALL_TIMEOUT_MS};
use crate::error::Result;
use crate::types::BundleInfo;

impl ArchiveClient {
    /// Deletes a bundle, saying why; returns its record as it was marked deleted. Refused
    /// (`retained`, `legal_hold`) while a retention or a legal hold keeps it.
    pub async fn delete(&self, bundle_id: &str, reason: &str) -> Result<BundleInfo> {
        let request = pb::DeleteBundleRequest {
            bundle_id: bundle_id.to_owned(),
            reason: reason.to_owned(),
        };
        let response = self
            .failover(|mut stub, _| {
                let request = with_timeout(request.clone(), CALL_TIMEOUT_MS);
                async move { Ok(stub.delete_bundle(request).await?.into_inner()) }
            })
            .await?;
        self.forget(bundle_id);
        BundleInfo::from_answer(response.bundle)
    }

    /// Extends a bundle's retention to `retain_until_unix_ms` (an earlier date is refused).
    pub async fn set_retention(
        &self,
        bundle_id: &str,
        retain_until_unix_ms: u64,
    ) -> Result<BundleInfo> {
        let request = pb::SetRetentionRequest {
            bundle_id: bundle_id.to_owned(),
            retain_until_unix_ms,
        };
        let response = self
            .failover(|mut stub, _| {
                let request = with_timeout(request.clone(), CALL_TIMEOUT_MS);
                async move { Ok(stub.set_retention(request).await?.into_inner()) }
            })
            .await?;
        self.forget(bundle_id);
        BundleInfo::from_answer(response.bundle)
    }

    /// Sets (`hold`) or clears a legal hold on a bundle; the reason is required either way.
    pub async fn set_legal_hold(
        &self,
        bundle_id: &str,
        hold: bool,
        reason: &str,
    ) -> Result<BundleInfo> {
        let request = pb::SetLegalHoldRequest {
            bundle_id: bundle_id.to_owned(),
            hold,
            reason: reason.to_owned(),
        };
        let response = self
            .failover(|mut stub, _| {
                let request = with_timeout(request.clone(), CALL_TIMEOUT_MS);
                async move { Ok(stub.set_legal_hold(request).await?.into_inner()) }
            })
            .await?;
        self.forget(bundle_id);
        BundleInfo::from_answer(response.bundle)
    }
}
