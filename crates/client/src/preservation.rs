//! What keeps a bundle, and its deliberate deletion: `delete` (with its reason), retention and
//! legal holds; and fixity checks, run by a node.

use bitmountain_proto::archive::v1 as pb;

use crate::client::{with_timeout, ArchiveClient, CALL_TIMEOUT_MS};
use crate::error::Result;
use crate::types::BundleInfo;

/// Deadline of one bundle's fixity check: the node reads the whole bundle.
pub const FIXITY_CALL_TIMEOUT_MS: u64 = 3_600_000;

/// A file that failed its fixity check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileFixity {
    pub path: String,
    pub expected_sha256: String,
    /// Empty when the file could not be read (`error` says why).
    pub actual_sha256: String,
    pub expected_bytes: u64,
    pub actual_bytes: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// One bundle's fixity check, as the node that ran it reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fixity {
    pub bundle_id: String,
    pub files: u64,
    pub bytes: u64,
    /// Files that failed (all counted; the first 1000 listed in `failures`).
    pub failed: u64,
    pub failures: Vec<FileFixity>,
    /// Whether the audit trail holds the check's event.
    pub recorded: bool,
    /// Files whose bytes were wrong in one shard with valid CRCs, confirmed right by decoding
    /// around it: (path, shard), the shard queued for rewrite.
    pub repaired: Vec<(String, u32)>,
}

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
        self.retention(bundle_id, retain_until_unix_ms, "").await
    }

    /// Shortens (or with 0 removes) a bundle's retention in governance mode: the token needs
    /// the `admin` permission, and the reason goes to the audit trail.
    pub async fn shorten_retention(
        &self,
        bundle_id: &str,
        retain_until_unix_ms: u64,
        reason: &str,
    ) -> Result<BundleInfo> {
        self.retention(bundle_id, retain_until_unix_ms, reason)
            .await
    }

    async fn retention(
        &self,
        bundle_id: &str,
        retain_until_unix_ms: u64,
        governance_reason: &str,
    ) -> Result<BundleInfo> {
        let request = pb::SetRetentionRequest {
            bundle_id: bundle_id.to_owned(),
            retain_until_unix_ms,
            governance_reason: governance_reason.to_owned(),
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

    /// Has a node read every file of a bundle and check it against its ingest digest; the
    /// check is recorded in the audit trail with this client's token as its agent.
    pub async fn check_fixity(&self, bundle_id: &str) -> Result<Fixity> {
        let request = pb::CheckFixityRequest {
            bundle_id: bundle_id.to_owned(),
        };
        let r = self
            .failover(|mut stub, _| {
                let request = with_timeout(request.clone(), FIXITY_CALL_TIMEOUT_MS);
                async move { Ok(stub.check_fixity(request).await?.into_inner()) }
            })
            .await?;
        Ok(Fixity {
            bundle_id: r.bundle_id,
            files: r.files,
            bytes: r.bytes,
            failed: r.failed,
            failures: r
                .failures
                .into_iter()
                .map(|f| FileFixity {
                    path: f.path,
                    expected_sha256: f.expected_sha256,
                    actual_sha256: f.actual_sha256,
                    expected_bytes: f.expected_bytes,
                    actual_bytes: f.actual_bytes,
                    error: f.error,
                })
                .collect(),
            recorded: r.recorded,
            repaired: r.repaired.into_iter().map(|f| (f.path, f.shard)).collect(),
        })
    }
}
