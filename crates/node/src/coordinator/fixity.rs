//! Fixity: every file of a sealed bundle read back — through degraded reads around lost or
//! CRC-damaged shards — and hashed against the SHA-256 its index recorded at ingest. The node
//! does it, so no byte crosses to the client; the archive API records the outcome as a fixity
//! event in the audit trail. A file whose bytes pass their CRCs but not its SHA-256 is decoded
//! around each shard in turn (`verify.rs`): if one shard explains it, the right bytes are
//! confirmed, the shard is queued for rewrite, and the file counts as repaired, not failed.

use std::sync::Arc;

use bitmountain_meta_client::BundleId;
use sha2::{Digest, Sha256};

use super::Coordinator;
use crate::error::Result;
use crate::throttle::Throttle;

/// Most failing files a report names (all are counted).
pub const MAX_FIXITY_FAILURES_LISTED: usize = 1000;

/// A file that did not match, or could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFailure {
    pub path: String,
    pub expected_sha256: [u8; 32],
    pub expected_bytes: u64,
    /// What the bytes hashed to (`None`: they could not be read).
    pub actual_sha256: Option<[u8; 32]>,
    pub actual_bytes: u64,
    /// Why the file could not be read (empty when it was).
    pub error: String,
}

/// One bundle's check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixityReport {
    pub bundle: BundleId,
    pub files: u64,
    pub bytes: u64,
    /// Files that failed, counted.
    pub failed: u64,
    /// The first [`MAX_FIXITY_FAILURES_LISTED`] of them.
    pub failures: Vec<FileFailure>,
    /// Files whose stored bytes were wrong in one shard (with valid CRCs), confirmed right by
    /// decoding around it: (path, shard), the shard queued for rewrite.
    pub repaired: Vec<(String, u16)>,
}

impl FixityReport {
    /// The audit event's detail: what was checked, and the failures by path.
    pub fn summary(&self) -> String {
        let repaired = if self.repaired.is_empty() {
            String::new()
        } else {
            let named: Vec<String> = self
                .repaired
                .iter()
                .map(|(p, s)| format!("{p} (shard {s})"))
                .collect();
            format!(
                "; wrong bytes with valid CRCs in {}, decoded from the other shards and queued \
                 for rewrite",
                named.join(", ")
            )
        };
        if self.failed == 0 {
            return format!(
                "{} files, {} bytes: every SHA-256 matches its ingest digest{repaired}",
                self.files, self.bytes
            );
        }
        let named: Vec<String> = self
            .failures
            .iter()
            .map(|f| match f.actual_sha256 {
                Some(got) => format!("{} (sha256 {})", f.path, hex::encode(got)),
                None => format!("{} ({})", f.path, f.error),
            })
            .collect();
        format!(
            "{} of {} files fail: {}{repaired}",
            self.failed,
            self.files,
            named.join(", ")
        )
    }
}

impl Coordinator {
    /// Reads every file of sealed bundle `id` and compares its SHA-256 with the index's. An
    /// unknown bundle, or an index that cannot be read, is an error; a file that cannot be read
    /// or does not match is a failure in the report. With `pace`, every window read waits for
    /// its bytes to fit that rate (the background pass; an operator's check runs at full speed).
    pub async fn check_fixity(
        self: &Arc<Self>,
        id: BundleId,
        pace: Option<&Throttle>,
    ) -> Result<FixityReport> {
        // Fresh placement: a check must not read through a placement a repair has replaced.
        let b = self.sealed_bundle(id, true).await?;
        let index = self.index(&b).await?;
        let mut report = FixityReport {
            bundle: id,
            files: 0,
            bytes: 0,
            failed: 0,
            failures: Vec::new(),
            repaired: Vec::new(),
        };
        for e in index.entries() {
            report.files += 1;
            let mut windows = self.stream_range(Arc::clone(&b), e.offset, e.length, None);
            let (mut h, mut read, mut error) = (Sha256::new(), 0u64, None);
            while let Some(window) = windows.recv().await {
                match window {
                    Ok(bytes) => {
                        h.update(&bytes);
                        read += bytes.len() as u64;
                        if let Some(pace) = pace {
                            pace.take(bytes.len() as u64).await;
                        }
                    }
                    Err(err) => {
                        error = Some(err.to_string());
                        break;
                    }
                }
            }
            report.bytes += read;
            let got: [u8; 32] = h.finalize().into();
            let failed = |actual_sha256, error| FileFailure {
                path: e.path.clone(),
                expected_sha256: e.sha256,
                expected_bytes: e.length,
                actual_sha256,
                actual_bytes: read,
                error,
            };
            let failure = match error {
                Some(error) => Some(failed(None, error)),
                None if got == e.sha256 && read == e.length => None,
                // Every chunk passed its CRC: a shard or two may have returned other bytes.
                None if read == e.length => {
                    let bad = self.find_bad_shards(&b, e.offset, e.length, e.sha256).await;
                    if bad.is_empty() {
                        Some(failed(Some(got), String::new()))
                    } else {
                        report
                            .repaired
                            .extend(bad.into_iter().map(|s| (e.path.clone(), s)));
                        None
                    }
                }
                None => Some(failed(Some(got), String::new())),
            };
            if let Some(f) = failure {
                report.failed += 1;
                if report.failures.len() < MAX_FIXITY_FAILURES_LISTED {
                    report.failures.push(f);
                }
            }
        }
        Ok(report)
    }
}
