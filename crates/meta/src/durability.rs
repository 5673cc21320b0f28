//! The live durability model's inputs from a cluster status — one mapping for the leader's
//! metric and `status` (`server/durability.rs`) and for `bitmountain durability --cluster`,
//! which runs the model itself under a prior the operator may change.

use bitmountain_durability::{CodeBytes, DiskSample, LiveCluster, Scheme};

use crate::types::{ClusterStatus, DiskState};

const SECS_PER_YEAR: f64 = 365.25 * 24.0 * 3600.0;

/// The model's inputs: the disks in service with their sizes and fill, the codes in use by
/// bytes (the default code when none are counted yet), the repair rate the leader measured
/// (`rate`), and the disk failures seen over the disk-years observed. `None` when the member
/// did not say its default code (an older binary) or the code is outside the model's range.
pub fn live_cluster(status: &ClusterStatus, rate: Option<f64>) -> Option<LiveCluster> {
    let code = status.default_code?;
    let scheme = Scheme::rs(code.data_shards, code.parity_shards).ok()?;
    let disks: Vec<DiskSample> = status
        .nodes
        .iter()
        .flat_map(|n| n.disks.iter().map(move |d| (n.node_id, d)))
        .map(|(node_id, d)| DiskSample {
            node_id,
            capacity_bytes: d.capacity_bytes,
            used_bytes: d.stored_bytes(),
            in_service: matches!(d.state, Some(DiskState::Ok | DiskState::Draining)),
            failed: d.state == Some(DiskState::Failed),
        })
        .collect();
    let codes = status.sealed_bytes_by_code.iter().filter_map(|(c, bytes)| {
        Some(CodeBytes {
            scheme: Scheme::rs(c.data_shards, c.parity_shards).ok()?,
            data_bytes: *bytes,
        })
    });
    let live = LiveCluster::from_disks(scheme, &disks, rate).with_codes(codes);
    Some(if status.disk_years_observed > 0.0 {
        live.with_exposure(status.disk_failures_seen, status.disk_years_observed)
    } else {
        live
    })
}

/// Disk-years of service at `now_unix_ms` of disks added at these times (0: unknown, left
/// out).
pub fn disk_years(added_unix_ms: impl IntoIterator<Item = u64>, now_unix_ms: u64) -> f64 {
    added_unix_ms
        .into_iter()
        .filter(|a| *a > 0)
        .map(|a| now_unix_ms.saturating_sub(a) as f64 / 1000.0 / SECS_PER_YEAR)
        .sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::types::{Code, DiskInfo, NodeInfo};

    fn code(k: u32, m: u32) -> Code {
        Code {
            data_shards: k,
            parity_shards: m,
            cell_bytes: 1 << 20,
        }
    }

    #[test]
    fn inputs_from_a_status() {
        let disk = |id, state| DiskInfo {
            disk_id: id,
            capacity_bytes: 1 << 40,
            used_bytes: 1 << 38,
            state: Some(state),
            ..DiskInfo::default()
        };
        let status = ClusterStatus {
            default_code: Some(code(4, 2)),
            nodes: (1..=6)
                .map(|n| NodeInfo {
                    node_id: n,
                    disks: vec![disk(
                        n,
                        if n == 6 {
                            DiskState::Failed
                        } else {
                            DiskState::Ok
                        },
                    )],
                    ..NodeInfo::default()
                })
                .collect(),
            sealed_bytes_by_code: vec![(code(3, 2), 1 << 30)],
            disk_failures_seen: 2,
            disk_years_observed: 10.0,
            ..ClusterStatus::default()
        };
        let live = live_cluster(&status, Some(5e6)).unwrap();
        assert_eq!(
            live.disk_capacity_bytes.len(),
            5,
            "the failed disk is not in service"
        );
        assert_eq!(live.codes_in_use.len(), 1);
        assert_eq!(live.codes_in_use[0].scheme, Scheme::rs(3, 2).unwrap());
        assert_eq!(
            (live.failed_disks, live.disk_years_observed),
            (2, Some(10.0))
        );
        let no_code = ClusterStatus {
            default_code: None,
            ..status
        };
        assert!(live_cluster(&no_code, None).is_none());
    }

    #[test]
    fn disk_years_leave_out_unknown_times() {
        let year_ms = (SECS_PER_YEAR * 1000.0) as u64;
        let y = disk_years([0, year_ms, 2 * year_ms], 3 * year_ms);
        assert!((y - 3.0).abs() < 1e-9, "{y}");
    }
}
