//! The model applied to a running cluster: its disks in service and their sizes and fill, its
//! code, the repair rate it has measured, and the disk failures it has seen, weighed against a
//! stated prior AFR. What `bitmountain durability --cluster`, `status` and the metric
//! `bitmountain_durability_loss_probability_per_year` show.
//!
//! AFR: a gamma prior (Backblaze's fleet-wide rate, worth [`AfrPrior::disk_years`] of
//! observation) updated with the failures seen over the disk-years observed; with no exposure
//! known the prior stands alone, and the output says so.

use serde::Serialize;

use crate::error::Result;
use crate::markov::analyze;
use crate::model::{ClusterParams, Scheme};

/// Repair traffic per disk assumed when the cluster has not measured its own (the model's
/// default: 20 MB/s).
pub const DEFAULT_REPAIR_BYTES_PER_SEC: f64 = 20e6;
/// Seconds from a failure to its rebuild starting: the metadata group's default node-down
/// grace (30 s) plus a heartbeat and a claim.
pub const LIVE_DETECT_SECS: f64 = 60.0;

/// The prior belief about disk failures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AfrPrior {
    /// Failures per disk-year (Backblaze's drive stats put fleets at 1–2 %).
    pub afr: f64,
    /// How many disk-years of observation the prior is worth.
    pub disk_years: f64,
}

impl Default for AfrPrior {
    fn default() -> AfrPrior {
        AfrPrior {
            afr: 0.02,
            disk_years: 100.0,
        }
    }
}

/// What a running cluster tells the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveCluster {
    /// The code new bundles get (the cluster's default).
    pub scheme: Scheme,
    /// Capacity of each disk in service (ok or draining).
    pub disk_capacity_bytes: Vec<u64>,
    /// Bytes stored on those disks.
    pub used_bytes: u64,
    /// Storage nodes holding them (a bundle never puts two shards on one node).
    pub nodes: u32,
    /// Repair traffic the cluster measured recently, all disks together (bytes/s); `None`
    /// when nothing was repaired lately.
    pub measured_repair_bytes_per_sec: Option<f64>,
    /// Disk failures seen (disks failed now).
    pub failed_disks: u32,
    /// Disk-years those failures were seen over; `None` when the cluster cannot tell.
    pub disk_years_observed: Option<f64>,
}

/// The figures, and the inputs they came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveEstimate {
    /// Probability of losing any bundle within a year.
    pub p_loss_per_year: f64,
    /// Mean time to the first loss.
    pub mttdl_years: f64,
    /// The AFR used (posterior, or the prior alone).
    pub afr: f64,
    /// Whether observed failures moved the AFR (false: the prior alone).
    pub afr_observed: bool,
    /// Repair traffic per disk used.
    pub repair_bytes_per_sec_per_disk: f64,
    /// Whether that came from the cluster's own repairs.
    pub repair_measured: bool,
    /// Time to rebuild one disk's worth of shards.
    pub rebuild_secs: f64,
    /// The parameters the model ran with.
    pub params: ClusterParams,
}

/// One disk as a cluster's status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSample {
    pub node_id: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    /// Holds shards the cluster counts on (ok or draining).
    pub in_service: bool,
    /// Failed (a failure seen).
    pub failed: bool,
}

impl LiveCluster {
    /// A cluster of these disks with code `scheme`; `measured_repair_bytes_per_sec` as the
    /// leader measured it (`None` or 0: not measured). No exposure is known: the prior AFR
    /// stands.
    pub fn from_disks(
        scheme: Scheme,
        disks: &[DiskSample],
        measured_repair_bytes_per_sec: Option<f64>,
    ) -> LiveCluster {
        let serving: Vec<&DiskSample> = disks.iter().filter(|d| d.in_service).collect();
        let mut nodes: Vec<u64> = serving.iter().map(|d| d.node_id).collect();
        nodes.sort_unstable();
        nodes.dedup();
        LiveCluster {
            scheme,
            disk_capacity_bytes: serving.iter().map(|d| d.capacity_bytes).collect(),
            used_bytes: serving.iter().map(|d| d.used_bytes).sum(),
            nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            measured_repair_bytes_per_sec: measured_repair_bytes_per_sec.filter(|r| *r > 0.0),
            failed_disks: u32::try_from(disks.iter().filter(|d| d.failed).count())
                .unwrap_or(u32::MAX),
            disk_years_observed: None,
        }
    }
}

/// Posterior mean AFR: prior failures plus observed, over prior plus observed disk-years.
pub fn posterior_afr(prior: AfrPrior, failures: u32, disk_years: f64) -> f64 {
    (prior.afr * prior.disk_years + f64::from(failures)) / (prior.disk_years + disk_years.max(0.0))
}

/// The model's figures for `live` under `prior`. An empty cluster (no disk in service, nothing
/// stored) cannot lose anything: probability 0.
pub fn estimate(live: &LiveCluster, prior: AfrPrior) -> Result<LiveEstimate> {
    let disks = live.disk_capacity_bytes.len() as u32;
    let capacity: u64 = live.disk_capacity_bytes.iter().sum();
    let (afr, afr_observed) = match live.disk_years_observed {
        Some(years) if years > 0.0 => (posterior_afr(prior, live.failed_disks, years), true),
        _ => (prior.afr, false),
    };
    let (per_disk, repair_measured) = match live.measured_repair_bytes_per_sec {
        Some(r) if r > 0.0 && disks > 0 => (r / f64::from(disks), true),
        _ => (DEFAULT_REPAIR_BYTES_PER_SEC, false),
    };
    let mut params = ClusterParams::new(live.scheme);
    params.disks = disks.max(1);
    params.disks_per_node = (disks / live.nodes.max(1)).max(1);
    params.disk_bytes = (capacity / u64::from(disks.max(1))).max(1);
    params.fill_fraction = if capacity == 0 {
        0.0
    } else {
        (live.used_bytes as f64 / capacity as f64).clamp(0.0, 1.0)
    };
    params.disk_afr = afr;
    params.repair_bytes_per_sec = per_disk;
    params.detect_secs = LIVE_DETECT_SECS;
    let empty = disks < live.scheme.width() || live.used_bytes == 0;
    if empty {
        return Ok(LiveEstimate {
            p_loss_per_year: 0.0,
            mttdl_years: f64::INFINITY,
            afr,
            afr_observed,
            repair_bytes_per_sec_per_disk: per_disk,
            repair_measured,
            rebuild_secs: 0.0,
            params,
        });
    }
    params.validate()?;
    let a = analyze(&params, 1.0);
    Ok(LiveEstimate {
        p_loss_per_year: a.p_loss_1y,
        mttdl_years: a.mttdl_years,
        afr,
        afr_observed,
        repair_bytes_per_sec_per_disk: per_disk,
        repair_measured,
        rebuild_secs: a.rebuild_secs,
        params,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cluster(disks: usize, used_fraction: f64) -> LiveCluster {
        let cap = 16_000_000_000_000u64;
        LiveCluster {
            scheme: Scheme::rs(10, 4).unwrap(),
            disk_capacity_bytes: vec![cap; disks],
            used_bytes: (cap as f64 * disks as f64 * used_fraction) as u64,
            nodes: disks as u32,
            measured_repair_bytes_per_sec: None,
            failed_disks: 0,
            disk_years_observed: None,
        }
    }

    #[test]
    fn the_prior_stands_alone_without_exposure_and_moves_with_it() {
        let prior = AfrPrior::default();
        let e = estimate(&cluster(100, 0.5), prior).unwrap();
        assert_eq!(e.afr, 0.02);
        assert!(!e.afr_observed && !e.repair_measured);
        assert!(
            e.p_loss_per_year > 0.0 && e.p_loss_per_year < 1e-6,
            "{}",
            e.p_loss_per_year
        );
        // 10 failures in 100 disk-years: (2 + 10) / 200 = 6 %.
        assert!((posterior_afr(prior, 10, 100.0) - 0.06).abs() < 1e-12);
        let mut seen = cluster(100, 0.5);
        seen.failed_disks = 10;
        seen.disk_years_observed = Some(100.0);
        let worse = estimate(&seen, prior).unwrap();
        assert!(worse.afr_observed && worse.p_loss_per_year > e.p_loss_per_year);
    }

    #[test]
    fn slower_measured_repairs_mean_more_risk_and_an_empty_cluster_none() {
        let prior = AfrPrior::default();
        let mut slow = cluster(100, 0.8);
        slow.measured_repair_bytes_per_sec = Some(100.0 * 1e6);
        let mut fast = slow.clone();
        fast.measured_repair_bytes_per_sec = Some(100.0 * 100e6);
        let (s, f) = (
            estimate(&slow, prior).unwrap(),
            estimate(&fast, prior).unwrap(),
        );
        assert!(s.repair_measured && s.p_loss_per_year > f.p_loss_per_year);
        assert_eq!(
            estimate(&cluster(100, 0.0), prior).unwrap().p_loss_per_year,
            0.0
        );
        assert_eq!(
            estimate(&cluster(3, 0.5), prior).unwrap().p_loss_per_year,
            0.0
        );
    }
}
