//! Fixity checks as the archive API and the audit trail see them: a coordinator's report
//! (`coordinator::fixity`) recorded as one fixity event per bundle, and put on the wire.

use bitmountain_meta_client::types::{now_unix_ms, Agent, AuditAction, NewEvent, Outcome};
use bitmountain_meta_client::MetaClient;
use bitmountain_proto::archive::v1 as pb;

use crate::coordinator::fixity::FixityReport;

/// Records `report` in the audit trail as `agent`'s fixity check; returns whether the group
/// recorded it (a group that keeps no trail yet, or cannot be reached, does not: the check
/// still answers, and says so).
pub async fn record(meta: &MetaClient, report: &FixityReport, agent: Agent) -> bool {
    let event = NewEvent::bundle(
        now_unix_ms(),
        agent,
        AuditAction::FixityCheck,
        report.bundle,
        if report.failed == 0 {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        report.summary(),
    );
    match meta.record_events(&[event], 0).await {
        Ok(n) => n > 0,
        Err(e) => {
            tracing::warn!(bundle = %report.bundle, error = %e, "fixity check not recorded in the audit trail");
            false
        }
    }
}

/// The report for the wire.
pub fn report_to_proto(r: &FixityReport, recorded: bool) -> pb::CheckFixityResponse {
    pb::CheckFixityResponse {
        bundle_id: r.bundle.to_string(),
        files: r.files,
        bytes: r.bytes,
        failed: r.failed,
        failures: r
            .failures
            .iter()
            .map(|f| pb::FileFixity {
                path: f.path.clone(),
                expected_sha256: hex::encode(f.expected_sha256),
                actual_sha256: f.actual_sha256.map(hex::encode).unwrap_or_default(),
                expected_bytes: f.expected_bytes,
                actual_bytes: f.actual_bytes,
                error: f.error.clone(),
            })
            .collect(),
        recorded,
        repaired: r
            .repaired
            .iter()
            .map(|(path, shard)| pb::RepairedFile {
                path: path.clone(),
                shard: u32::from(*shard),
            })
            .collect(),
    }
}
