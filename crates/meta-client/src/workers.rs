//! Background workers' status on the wire (heartbeats, cluster status).

use bitmountain_proto::v1 as pb;
use bitmountain_worker::WorkerStatus;

/// A worker's status as heartbeats and the cluster status carry it.
pub fn worker_to_proto(s: &WorkerStatus) -> pb::WorkerStatus {
    pb::WorkerStatus {
        name: s.name.to_string(),
        state: s.state.as_str().to_string(),
        steps: s.steps,
        errors: s.errors,
        last_run_unix_ms: s.last_run_unix_ms,
        last_duration_ms: s.last_duration_ms,
        last_error: s.last_error.clone(),
        last_error_unix_ms: s.last_error_unix_ms,
        note: s.note.clone(),
    }
}
