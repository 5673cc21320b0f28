//! Method 1, analytic: a birth–death Markov chain for one placement group, mapped to the cluster.
//!
//! **The group.** A bundle's `n = k + m` shards sit on `n` disks in different failure domains.
//! State `i` is the number of those disks that have failed and are not yet rebuilt. From state `i`
//! the next failure comes at rate `(n - i)·λ`; a rebuild finishes at rate `i·μ` (each failed disk
//! has its own declustered rebuild, [`Discipline::Parallel`], our default) or `μ` (one rebuild at a
//! time, [`Discipline::Serial`], the assumption behind the classic RAID formulas). State `m + 1`
//! is data loss. `λ` is the AFR per second, `μ = 1 / rebuild_secs`. The mean time to absorption
//! from state 0 is the group's MTTDL; for a birth–death chain it is the sum of the expected
//! first-passage times `T_i` from `i` to `i + 1`: `T_0 = 1/b_0`, `T_i = (1 + d_i·T_{i-1}) / b_i`.
//!
//! **From a group to the cluster.** Bundles are placed at random, so the groups overlap: disks are
//! shared by many bundles. What matters is which sets of `m + 1` disks hold a common bundle
//! ("covered" sets, the copysets of Cidon et al., USENIX ATC 2013): data is lost exactly when all
//! disks of a covered set are down at once. One group contains `C(n, m+1)` such sets, and for rare
//! failures its loss rate is `C(n, m+1)` times the rate at which one given set goes down, so the
//! cluster behaves like `G_eff = covered_sets / C(n, m+1)` **independent groups**:
//!
//! * candidate sets = `C(nodes, m+1) · disks_per_node^(m+1)` (m+1 disks on distinct nodes);
//! * each of the `G` bundles covers `C(n, m+1)` of them, `q = C(n, m+1) / candidates`;
//! * covered sets = `candidates · (1 - (1 - q)^G)`;
//! * cluster MTTDL = group MTTDL / `G_eff`, and `P(loss within t) = 1 - exp(-t / MTTDL)`.
//!
//! With few bundles `G_eff ≈ G` (every bundle is its own group). With many, every candidate set is
//! covered and `G_eff` saturates at `candidates / C(n, m+1)`: any `m + 1` concurrent failures then
//! lose data. Expected bytes lost per year does not depend on the mapping: by linearity over
//! bundles it is `usable_bytes / group MTTDL`.

use serde::Serialize;

use crate::model::{choose, ln_choose, ClusterParams};
use crate::units::SECS_PER_YEAR;

/// How rebuilds of concurrently failed disks proceed in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discipline {
    /// Every failed disk is rebuilt at full speed at the same time: repair rate `i·μ`.
    Parallel,
    /// One rebuild at a time: repair rate `μ` whatever the number failed.
    Serial,
}

/// Mean time to data loss, in the unit of `1 / fail_rate`, of one group of `width` shards that
/// survives `tolerated` concurrent failures, starting with every shard healthy.
pub fn group_mttdl(
    width: u32,
    tolerated: u32,
    fail_rate: f64,
    repair_rate: f64,
    discipline: Discipline,
) -> f64 {
    let n = width as f64;
    let mut total = 0.0;
    let mut previous = 0.0;
    for i in 0..=tolerated {
        let up = (n - i as f64) * fail_rate;
        let down = match discipline {
            _ if i == 0 => 0.0,
            Discipline::Parallel => i as f64 * repair_rate,
            Discipline::Serial => repair_rate,
        };
        // Expected time to first reach i+1 from i: leave i after 1/(up+down); with probability
        // down/(up+down) we drop to i-1 and must climb back (previous) and try again.
        let passage = (1.0 + down * previous) / up;
        total += passage;
        previous = passage;
    }
    total
}

/// How the declustered placement maps onto independent groups (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Coverage {
    /// Sets of `m + 1` disks on distinct nodes: the sets whose joint failure could lose data.
    pub candidate_sets: f64,
    /// Those sets that share at least one bundle (expected, over random placements).
    pub covered_sets: f64,
    /// `covered_sets / C(n, m+1)`: the number of independent `n`-disk groups the cluster is
    /// equivalent to.
    pub independent_groups: f64,
    /// Mean number of bundles lost when a covered set goes down.
    pub bundles_per_loss: f64,
}

pub fn coverage(params: &ClusterParams) -> Coverage {
    let width = params.scheme.width() as f64;
    let set = params.scheme.tolerated() as f64 + 1.0;
    let nodes = params.nodes() as f64;
    let per_node = params.disks_per_node as f64;
    let ln_candidates = ln_choose(nodes, set) + set * per_node.ln();
    let sets_per_group = choose(width, set);
    let q = (sets_per_group.ln() - ln_candidates).exp().min(1.0);
    let bundles = params.bundles();
    // 1 - (1 - q)^G without cancellation when q is tiny.
    let covered_fraction = -f64::exp_m1(bundles * f64::ln_1p(-q.min(1.0 - 1e-16)));
    let candidate_sets = ln_candidates.exp();
    let covered_sets = candidate_sets * covered_fraction;
    Coverage {
        candidate_sets,
        covered_sets,
        independent_groups: covered_sets / sets_per_group,
        bundles_per_loss: bundles * q / covered_fraction,
    }
}

/// Analytic results for one scheme on one cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analytic {
    pub scheme: String,
    pub overhead: f64,
    pub usable_bytes: f64,
    pub bundles: f64,
    pub rebuild_disks: f64,
    pub rebuild_secs: f64,
    pub discipline: Discipline,
    pub group_mttdl_years: f64,
    pub coverage: Coverage,
    pub mttdl_years: f64,
    pub p_loss_1y: f64,
    pub horizon_years: f64,
    pub p_loss_horizon: f64,
    pub bytes_lost_per_year: f64,
}

/// Runs the analytic model with the default [`Discipline::Parallel`].
pub fn analyze(params: &ClusterParams, horizon_years: f64) -> Analytic {
    analyze_with(params, horizon_years, Discipline::Parallel)
}

pub fn analyze_with(
    params: &ClusterParams,
    horizon_years: f64,
    discipline: Discipline,
) -> Analytic {
    let rebuild_secs = params.rebuild_secs();
    let group_mttdl_secs = group_mttdl(
        params.scheme.width(),
        params.scheme.tolerated(),
        params.disk_fail_per_sec(),
        1.0 / rebuild_secs,
        discipline,
    );
    let group_mttdl_years = group_mttdl_secs / SECS_PER_YEAR;
    let coverage = coverage(params);
    let mttdl_years = group_mttdl_years / coverage.independent_groups;
    let p_within = |years: f64| -f64::exp_m1(-years / mttdl_years);
    Analytic {
        scheme: params.scheme.label(),
        overhead: params.scheme.overhead(),
        usable_bytes: params.usable_bytes(),
        bundles: params.bundles(),
        rebuild_disks: params.rebuild_disks(),
        rebuild_secs,
        discipline,
        group_mttdl_years,
        mttdl_years,
        p_loss_1y: p_within(1.0),
        horizon_years,
        p_loss_horizon: p_within(horizon_years),
        bytes_lost_per_year: params.usable_bytes() / group_mttdl_years,
        coverage,
    }
}

/// Patterson, Gibson & Katz, "A Case for Redundant Arrays of Inexpensive Disks (RAID)", SIGMOD
/// 1988, MTTF of a group of `width` disks with one disk's worth of redundancy (mirroring when
/// `width = 2`): `MTTF_disk² / (width · (width - 1) · MTTR)`. First-order in MTTR/MTTF.
pub fn classic_single_fault_mttdl(width: u32, mttf: f64, mttr: f64) -> f64 {
    let n = width as f64;
    mttf * mttf / (n * (n - 1.0) * mttr)
}

/// Chen, Lee, Gibson, Katz & Patterson, "RAID: High-Performance, Reliable Secondary Storage",
/// ACM Computing Surveys 26(2), 1994, MTTDL of a group surviving two failures (P+Q redundancy;
/// three-way mirroring when `width = 3`): `MTTF³ / (width · (width-1) · (width-2) · MTTR²)`.
/// It assumes one repair at a time, i.e. [`Discipline::Serial`].
pub fn classic_double_fault_mttdl(width: u32, mttf: f64, mttr: f64) -> f64 {
    let n = width as f64;
    mttf.powi(3) / (n * (n - 1.0) * (n - 2.0) * mttr * mttr)
}

/// The exact MTTDL of a two-way mirror under exponential failure (rate λ per disk) and repair
/// (rate μ): `(3λ + μ) / (2λ²)` (e.g. Trivedi, *Probability and Statistics with Reliability,
/// Queuing and Computer Science Applications*, the two-component repairable system).
pub fn exact_mirror_mttdl(fail_rate: f64, repair_rate: f64) -> f64 {
    (3.0 * fail_rate + repair_rate) / (2.0 * fail_rate * fail_rate)
}

/// Backblaze's published method ("Backblaze Durability is 99.999999999% — And Why It Doesn't
/// Matter", 2018; code and notebook in github.com/Backblaze/erasure-coding-durability): cut the
/// year into periods of `replacement_days`; a shard fails within a period with probability
/// `P = 1 - exp(-AFR · days / 365)` (Poisson); data is lost in a period if more than `parity`
/// of the `total_shards` fail in it (binomial); the annual loss probability is
/// `1 - (1 - p_period)^(365 / days)`. Returns that annual loss probability.
pub fn backblaze_annual_loss(
    total_shards: u32,
    parity: u32,
    annual_shard_failure_rate: f64,
    replacement_days: f64,
) -> f64 {
    let shards = total_shards as f64;
    let rate_per_period = annual_shard_failure_rate * replacement_days / 365.0;
    let p_shard = -f64::exp_m1(-rate_per_period);
    let p_period: f64 = (parity + 1..=total_shards)
        .map(|failed| {
            let f = failed as f64;
            choose(shards, f) * p_shard.powf(f) * (1.0 - p_shard).powf(shards - f)
        })
        .sum();
    let periods = 365.0 / replacement_days;
    -f64::exp_m1(periods * f64::ln_1p(-p_period))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::model::Scheme;

    fn rel(a: f64, b: f64) -> f64 {
        (a - b).abs() / b.abs()
    }

    /// The chain reproduces the exact two-state mirror result, and the Patterson/Gibson/Katz
    /// closed form MTTF²/(2·MTTR) to first order.
    #[test]
    fn two_way_mirror_matches_exact_and_classic() {
        let mttf = 1.0e6; // hours
        let mttr = 24.0;
        for discipline in [Discipline::Parallel, Discipline::Serial] {
            let chain = group_mttdl(2, 1, 1.0 / mttf, 1.0 / mttr, discipline);
            let exact = exact_mirror_mttdl(1.0 / mttf, 1.0 / mttr);
            assert!(rel(chain, exact) < 1e-12, "{chain} vs {exact}");
            let classic = classic_single_fault_mttdl(2, mttf, mttr);
            // 2.08e10 hours; the exact value exceeds it by (3λ+μ)/μ - 1 = 3·MTTR/MTTF.
            assert!(rel(chain, classic) < 1e-4, "{chain} vs {classic}");
        }
    }

    /// Three-way mirroring: the serial chain matches Chen et al.'s MTTF³/(n(n-1)(n-2)·MTTR²) =
    /// MTTF³/(6·MTTR²); parallel rebuilds are exactly m! = 2 times better to first order.
    #[test]
    fn three_way_mirror_matches_classic() {
        let mttf = 1.0e6;
        let mttr = 24.0;
        let classic = classic_double_fault_mttdl(3, mttf, mttr);
        let serial = group_mttdl(3, 2, 1.0 / mttf, 1.0 / mttr, Discipline::Serial);
        assert!(rel(serial, classic) < 1e-3, "{serial} vs {classic}");
        let parallel = group_mttdl(3, 2, 1.0 / mttf, 1.0 / mttr, Discipline::Parallel);
        assert!(
            rel(parallel, 2.0 * classic) < 1e-3,
            "{parallel} vs {classic}"
        );
    }

    /// RAID-5-like RS(13,1) against Patterson's MTTF²/(n(n-1)·MTTR) with n = 14.
    #[test]
    fn single_parity_group_matches_patterson() {
        let mttf = 500_000.0;
        let mttr = 10.0;
        let chain = group_mttdl(14, 1, 1.0 / mttf, 1.0 / mttr, Discipline::Parallel);
        let classic = classic_single_fault_mttdl(14, mttf, mttr);
        assert!(rel(chain, classic) < 1e-3, "{chain} vs {classic}");
    }

    /// Backblaze's README example for 17+3, AFR 0.405%, 6.5-day replacement: annual loss
    /// 7.354e-12, durability 0.999999999992646, "11 nines".
    #[test]
    fn reproduces_backblaze_17_plus_3() {
        let annual = backblaze_annual_loss(20, 3, 0.00405, 6.5);
        assert!(rel(annual, 7.354e-12) < 2e-4, "{annual:e}");
        assert!(((1.0 - annual) - 0.999_999_999_992_646).abs() < 1e-15);
        assert_eq!(crate::units::nines(annual), 11);
        // The blog's rounded 0.41% gives 7.7e-12: still 11 nines.
        let rounded = backblaze_annual_loss(20, 3, 0.0041, 6.5);
        assert!(rel(rounded, 7.724e-12) < 1e-3, "{rounded:e}");
        assert_eq!(crate::units::nines(rounded), 11);
    }

    /// Our chain on the same single 20-shard group: Backblaze's fixed, non-overlapping periods
    /// miss failures that straddle two periods; the chain counts them and comes out (m+1) = 4
    /// times higher to first order — 2.9e-11 a year, 10 nines.
    #[test]
    fn chain_on_backblaze_inputs_is_m_plus_1_times_their_figure() {
        let backblaze = backblaze_annual_loss(20, 3, 0.00405, 6.5);
        let mttdl_years = group_mttdl(20, 3, 0.00405, 365.0 / 6.5, Discipline::Parallel);
        let annual = -f64::exp_m1(-1.0 / mttdl_years);
        let ratio = annual / backblaze;
        assert!((ratio - 4.0).abs() < 0.02, "ratio {ratio}");
        assert_eq!(crate::units::nines(annual), 10);
    }

    #[test]
    fn coverage_limits() {
        // Few bundles: every bundle is its own group.
        let mut p = ClusterParams::new(Scheme::Rs { k: 10, m: 4 });
        p.bundle_bytes = 1_000_000_000_000_000;
        let c = coverage(&p);
        assert!(rel(c.independent_groups, p.bundles()) < 1e-6);
        assert!(rel(c.bundles_per_loss, 1.0) < 1e-6);
        // Two copies on 1,000 disks with millions of bundles: every pair of disks shares data.
        let p = ClusterParams::new(Scheme::Copies { n: 2 });
        let c = coverage(&p);
        assert!(rel(c.covered_sets, 999.0 * 500.0) < 1e-4);
        assert!(rel(c.independent_groups, 999.0 * 500.0) < 1e-4);
    }

    #[test]
    fn erasure_coding_beats_replication_on_the_default_archive() {
        let analyses: Vec<Analytic> = crate::model::comparison_schemes()
            .into_iter()
            .map(|scheme| analyze(&ClusterParams::new(scheme), 10.0))
            .collect();
        let p = |label: &str| {
            analyses
                .iter()
                .find(|a| a.scheme == label)
                .map(|a| a.p_loss_horizon)
                .unwrap()
        };
        // RS(10,4) at 1.4x overhead is far safer than 3 copies at 3x.
        assert!(p("RS(10,4)") < p("3 copies") / 1000.0);
        assert!(p("RS(6,3)") < p("3 copies"));
        assert!(p("3 copies") < p("2 copies"));
    }
}
