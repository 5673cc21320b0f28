//! The model applied to a running cluster: its disks in service and their sizes and fill, the
//! codes its bundles use (weighted by bytes), the repair rate it has measured, and the disk
//! failures it has seen over its disks' years of service, weighed against a stated prior AFR. What `bitmountain durability --cluster`, `status` and the metric
//! `bitmountain_durability_loss_probability_per_year` show.
//!
//! AFR: a gamma prior (Backblaze's fleet-wide rate, worth [`AfrPrior::disk_years`] of
//! observation) updated with the failures seen over the disk-years observed; with no exposure
//! known the prior stands alone, and the output says so.
//!
//! Codes: each code in use is modelled with its share of the stored bytes (its bundles are
//! the ones at risk) and the whole fill (a rebuild moves every code's bytes); the cluster loses
//! data if any code does, taken as independent: `1 - Π(1 - p)`, which is at least the true
//! figure (the codes share disks, so their losses come together) and at most their sum.

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

/// Bytes of sealed bundles stored with one code.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CodeBytes {
    pub scheme: Scheme,
    /// The bundles' own bytes (before coding).
    pub data_bytes: u64,
}

/// What a running cluster tells the model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveCluster {
    /// The code new bundles get (the cluster's default): the one modelled when no bytes by
    /// code are known.
    pub scheme: Scheme,
    /// The codes sealed bundles use and their bytes (empty: not known).
    pub codes_in_use: Vec<CodeBytes>,
    /// Capacity of each disk in service (ok or draining).
    pub disk_capacity_bytes: Vec<u64>,
    /// Bytes stored on those disks.
    pub used_bytes: u64,
    /// Storage nodes holding them (a bundle never puts two shards on one node).
    pub nodes: u32,
    /// Repair traffic the cluster measured recently, all disks together (bytes/s); `None`
    /// when nothing was repaired lately.
    pub measured_repair_bytes_per_sec: Option<f64>,
    /// Disk failures seen: over `disk_years_observed` when known, else the disks failed now.
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
    /// The parameters the model ran with (for the largest code in use).
    pub params: ClusterParams,
    /// Each code in use (just the default code when none is known).
    pub by_code: Vec<CodeEstimate>,
}

/// One code's part of the figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CodeEstimate {
    pub scheme: Scheme,
    pub data_bytes: u64,
    /// Its share of the stored (coded) bytes.
    pub stored_share: f64,
    pub p_loss_per_year: f64,
    pub mttdl_years: f64,
    pub rebuild_secs: f64,
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
            codes_in_use: Vec::new(),
            disk_capacity_bytes: serving.iter().map(|d| d.capacity_bytes).collect(),
            used_bytes: serving.iter().map(|d| d.used_bytes).sum(),
            nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
            measured_repair_bytes_per_sec: measured_repair_bytes_per_sec.filter(|r| *r > 0.0),
            failed_disks: u32::try_from(disks.iter().filter(|d| d.failed).count())
                .unwrap_or(u32::MAX),
            disk_years_observed: None,
        }
    }

    /// The same, with the bytes of sealed bundles by code (codes with no bytes left out).
    pub fn with_codes(mut self, codes: impl IntoIterator<Item = CodeBytes>) -> LiveCluster {
        self.codes_in_use = codes.into_iter().filter(|c| c.data_bytes > 0).collect();
        self
    }

    /// The same, with `failures` disk failures seen over `disk_years` of disks in service.
    pub fn with_exposure(mut self, failures: u64, disk_years: f64) -> LiveCluster {
        self.failed_disks = u32::try_from(failures).unwrap_or(u32::MAX);
        self.disk_years_observed = (disk_years > 0.0).then_some(disk_years);
        self
    }

    /// The codes to model and each one's share of the stored bytes.
    fn shares(&self) -> Vec<(Scheme, u64, f64)> {
        let stored: Vec<f64> = self
            .codes_in_use
            .iter()
            .map(|c| c.data_bytes as f64 * c.scheme.overhead())
            .collect();
        let total: f64 = stored.iter().sum();
        if total <= 0.0 {
            return vec![(self.scheme, 0, 1.0)];
        }
        self.codes_in_use
            .iter()
            .zip(stored)
            .map(|(c, s)| (c.scheme, c.data_bytes, s / total))
            .collect()
    }
}

/// Posterior mean AFR: prior failures plus observed, over prior plus observed disk-years.
pub fn posterior_afr(prior: AfrPrior, failures: u32, disk_years: f64) -> f64 {
    (prior.afr * prior.disk_years + f64::from(failures)) / (prior.disk_years + disk_years.max(0.0))
}

/// The model's figures for `live` under `prior`. An empty cluster (no disk in service, nothing
/// stored) cannot lose anything: probability 0. A code wider than the disks in service is
/// left out (the model needs a placement for every shard; such a cluster is in no state to
/// be modelled, and `status` shows its failed disks).
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
    let mut base = ClusterParams::new(live.scheme);
    base.disks = disks.max(1);
    base.disks_per_node = (disks / live.nodes.max(1)).max(1);
    base.disk_bytes = (capacity / u64::from(disks.max(1))).max(1);
    base.fill_fraction = if capacity == 0 {
        0.0
    } else {
        (live.used_bytes as f64 / capacity as f64).clamp(0.0, 1.0)
    };
    base.disk_afr = afr;
    base.repair_bytes_per_sec = per_disk;
    base.detect_secs = LIVE_DETECT_SECS;
    let mut out = LiveEstimate {
        p_loss_per_year: 0.0,
        mttdl_years: f64::INFINITY,
        afr,
        afr_observed,
        repair_bytes_per_sec_per_disk: per_disk,
        repair_measured,
        rebuild_secs: 0.0,
        params: base.clone(),
        by_code: Vec::new(),
    };
    if live.used_bytes == 0 || disks == 0 {
        return Ok(out);
    }
    let mut log_survive = 0.0;
    let mut loss_rate_per_year = 0.0;
    let mut largest = 0.0;
    for (scheme, data_bytes, share) in live.shares() {
        let mut params = base.clone();
        params.scheme = scheme;
        params.scheme_share = share;
        if disks < scheme.width() {
            continue;
        }
        params.validate()?;
        let a = analyze(&params, 1.0);
        log_survive += (-a.p_loss_1y).ln_1p();
        loss_rate_per_year += 1.0 / a.mttdl_years;
        out.rebuild_secs = out.rebuild_secs.max(a.rebuild_secs);
        if share > largest {
            largest = share;
            out.params = params;
        }
        out.by_code.push(CodeEstimate {
            scheme,
            data_bytes,
            stored_share: share,
            p_loss_per_year: a.p_loss_1y,
            mttdl_years: a.mttdl_years,
            rebuild_secs: a.rebuild_secs,
        });
    }
    // 1 - Π(1 - p), without cancellation when every p is tiny.
    out.p_loss_per_year = -f64::exp_m1(log_survive);
    out.mttdl_years = if loss_rate_per_year > 0.0 {
        1.0 / loss_rate_per_year
    } else {
        f64::INFINITY
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cluster(disks: usize, used_fraction: f64) -> LiveCluster {
        let cap = 16_000_000_000_000u64;
        LiveCluster {
            scheme: Scheme::rs(10, 4).unwrap(),
            codes_in_use: Vec::new(),
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

    #[test]
    fn codes_in_use_are_weighted_by_their_bytes() {
        let prior = AfrPrior::default();
        let base = cluster(100, 0.5);
        let (wide, narrow) = (Scheme::rs(10, 4).unwrap(), Scheme::rs(4, 2).unwrap());
        let only_wide = estimate(
            &base.clone().with_codes([CodeBytes {
                scheme: wide,
                data_bytes: 1 << 40,
            }]),
            prior,
        )
        .unwrap();
        assert_eq!(only_wide.by_code.len(), 1);
        assert_eq!(only_wide.by_code[0].stored_share, 1.0);
        // The same as the default code alone (no bytes by code known).
        let unknown = estimate(&base, prior).unwrap();
        assert!((only_wide.p_loss_per_year / unknown.p_loss_per_year - 1.0).abs() < 1e-9);
        // Half the stored bytes in RS(4,2), which tolerates two losses instead of four: riskier
        // than all RS(10,4).
        // 15 units coded at 1.4 and 14 at 1.5 store the same.
        let mixed = estimate(
            &base.clone().with_codes([
                CodeBytes {
                    scheme: wide,
                    data_bytes: 15 << 36,
                },
                CodeBytes {
                    scheme: narrow,
                    data_bytes: 14 << 36,
                },
            ]),
            prior,
        )
        .unwrap();
        let mut all_narrow = base.clone();
        all_narrow.scheme = narrow;
        let all_narrow = estimate(&all_narrow, prior).unwrap();
        assert_eq!(mixed.by_code.len(), 2);
        for c in &mixed.by_code {
            assert!((c.stored_share - 0.5).abs() < 1e-9, "{c:?}");
        }
        assert!(mixed.p_loss_per_year > only_wide.p_loss_per_year);
        // RS(4,2)'s part, with half the bundles, is at most what all of them would risk.
        let narrow_part = mixed.by_code.iter().find(|c| c.scheme == narrow).unwrap();
        assert!(narrow_part.p_loss_per_year <= all_narrow.p_loss_per_year * 1.000_001);
        let sum: f64 = mixed.by_code.iter().map(|c| c.p_loss_per_year).sum();
        let max = mixed
            .by_code
            .iter()
            .map(|c| c.p_loss_per_year)
            .fold(0.0, f64::max);
        let p = mixed.p_loss_per_year;
        assert!(
            p >= max * (1.0 - 1e-9) && p <= sum * (1.0 + 1e-9),
            "{max} <= {p} <= {sum}"
        );
        // Codes with no bytes are not modelled.
        let none = base.with_codes([CodeBytes {
            scheme: narrow,
            data_bytes: 0,
        }]);
        assert!(none.codes_in_use.is_empty());
    }

    #[test]
    fn exposure_lets_observed_failures_move_the_afr() {
        let prior = AfrPrior::default();
        let quiet = cluster(100, 0.5).with_exposure(0, 400.0);
        let e = estimate(&quiet, prior).unwrap();
        // No failures in 400 disk-years: (2 + 0) / 500 = 0.4 %.
        assert!(e.afr_observed && (e.afr - 0.004).abs() < 1e-12);
        let no_exposure = cluster(100, 0.5).with_exposure(3, 0.0);
        let e = estimate(&no_exposure, prior).unwrap();
        assert!(!e.afr_observed && e.afr == 0.02);
    }
}
