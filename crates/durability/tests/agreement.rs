//! The two methods against each other, and the simulation's extra effects (correlated failures,
//! shared rebuild bandwidth) against the baseline.
//!
//! Parameters are stressed on purpose (AFR 100%, one-day rebuilds, a few dozen disks) so that
//! data loss happens hundreds of times in a few thousand simulated years: enough for a
//! confidence interval of about ±10%, in well under a second in a debug build. Seeds are fixed,
//! so every run is identical.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bitmountain_durability::sim::{binomial_interval, poisson_interval};
use bitmountain_durability::{
    analyze, simulate, ClusterParams, Estimate, RepairModel, Scheme, SimConfig, SimResult,
};

/// Two-sided 99% normal quantile: the agreement tests use 99% intervals so that, across the
/// handful of comparisons here, a correct model would fail by chance less than 5% of the time
/// for some seed. (With fixed seeds the outcome is deterministic either way.)
const Z99: f64 = 2.575_829;

/// A small, failure-heavy cluster: `disks` disks of 1 TB, half full, AFR 100%, rebuilds of
/// `rebuild_hours` (no detection delay, one disk's bandwidth), 1 GB bundles.
///
/// The chain's P(loss) = 1 - exp(-t/MTTDL) treats loss events as a Poisson process. In a
/// stressed cluster a loss is sometimes followed by an "aftershock" (another failure while the
/// first ones are still down), which adds loss events without adding a first loss; that bias is
/// about `disks x AFR x rebuild time`. Rebuilds of 8-12 hours keep it near 2%, well inside the
/// simulation's interval, while losses stay frequent enough to count hundreds.
fn stressed(scheme: Scheme, disks: u32, rebuild_hours: f64) -> ClusterParams {
    let mut p = ClusterParams::new(scheme);
    p.disks = disks;
    p.disk_bytes = 1_000_000_000_000;
    p.fill_fraction = 0.5;
    p.disk_afr = 1.0;
    p.detect_secs = 0.0;
    p.rebuild_disks = Some(1);
    // (k+1) x 0.5 TB of traffic moved in rebuild_hours.
    p.repair_bytes_per_sec = scheme.repair_traffic_factor() * 0.5e12 / (rebuild_hours * 3600.0);
    p.bundle_bytes = 1_000_000_000;
    p.validate().unwrap();
    p
}

fn run(params: &ClusterParams, trials: u32, years: f64, repair: RepairModel) -> SimResult {
    let mut config = SimConfig::new(trials, years, 20_261_125);
    config.repair = repair;
    simulate(params, &config).unwrap()
}

fn rate_interval(sim: &SimResult, z: f64) -> Estimate {
    let k = poisson_interval(sim.loss_events, z);
    Estimate {
        value: k.value / sim.simulated_years,
        low: k.low / sim.simulated_years,
        high: k.high / sim.simulated_years,
    }
}

fn assert_agree(params: &ClusterParams, sim: &SimResult) {
    let analytic = analyze(params, sim.years);
    let rate = rate_interval(sim, Z99);
    let analytic_rate = 1.0 / analytic.mttdl_years;
    assert!(
        sim.loss_events >= 300,
        "too few losses ({}) for a meaningful comparison",
        sim.loss_events
    );
    assert!(
        rate.contains(analytic_rate),
        "{}: analytic loss rate {analytic_rate:.5}/yr outside the simulation's 99% interval \
         [{:.5}, {:.5}] ({} events in {} years)",
        params.scheme,
        rate.low,
        rate.high,
        sim.loss_events,
        sim.simulated_years
    );
    let p1 = binomial_interval(sim.trials_with_loss_1y, sim.trials as u64, Z99);
    assert!(
        p1.contains(analytic.p_loss_1y),
        "{}: analytic P(loss in 1y) {:.5} outside [{:.5}, {:.5}]",
        params.scheme,
        analytic.p_loss_1y,
        p1.low,
        p1.high
    );
    let ph = binomial_interval(sim.trials_with_loss_horizon, sim.trials as u64, Z99);
    assert!(
        ph.contains(analytic.p_loss_horizon),
        "{}: analytic P(loss in {}y) {:.5} outside [{:.5}, {:.5}]",
        params.scheme,
        sim.years,
        analytic.p_loss_horizon,
        ph.low,
        ph.high
    );
    // Bytes lost per year: the analytic value is usable_bytes / group MTTDL.
    let bytes_rel = (sim.bytes_lost_per_year - analytic.bytes_lost_per_year).abs()
        / analytic.bytes_lost_per_year;
    assert!(
        bytes_rel < 0.25,
        "{}: bytes lost/yr {} vs analytic {}",
        params.scheme,
        sim.bytes_lost_per_year,
        analytic.bytes_lost_per_year
    );
}

/// Three copies on 20 disks, explicit placement of 3,333 bundles (95% of all disk triples hold a
/// bundle): the simulated loss rate, P(loss in 1 and 5 years) and bytes lost match the chain.
#[test]
fn markov_simulation_agrees_with_chain_three_copies() {
    let params = stressed(Scheme::Copies { n: 3 }, 20, 12.0);
    let sim = run(&params, 20_000, 5.0, RepairModel::Markov);
    assert!(matches!(
        sim.placement,
        bitmountain_durability::sim::PlacementMode::Explicit { .. }
    ));
    assert_agree(&params, &sim);
}

/// RS(4,2) on 30 disks: here the mapping from one 6-disk group to the cluster (independent
/// groups = covered triples / C(6,3)) is exercised, not just one chain.
#[test]
fn markov_simulation_agrees_with_chain_rs_4_2() {
    let params = stressed(Scheme::Rs { k: 4, m: 2 }, 30, 8.0);
    let sim = run(&params, 20_000, 4.0, RepairModel::Markov);
    assert_agree(&params, &sim);
}

/// The sampled placement (used when a real cluster has too many bundles to place one by one)
/// agrees with the chain just as the explicit placement does.
#[test]
fn sampled_placement_agrees_with_chain() {
    let params = stressed(Scheme::Rs { k: 4, m: 2 }, 30, 8.0);
    let mut config = SimConfig::new(20_000, 4.0, 7);
    config.repair = RepairModel::Markov;
    config.max_placement_shards = 0;
    let sim = simulate(&params, &config).unwrap();
    assert!(matches!(
        sim.placement,
        bitmountain_durability::sim::PlacementMode::Sampled { .. }
    ));
    assert_agree(&params, &sim);
}

/// Unsaturated coverage: with 10 GB bundles only ~1/3 of disk triples hold data, and the chain's
/// independent-group count must follow.
#[test]
fn agreement_when_few_disk_sets_hold_data() {
    let mut params = stressed(Scheme::Copies { n: 3 }, 20, 24.0);
    params.bundle_bytes = 10_000_000_000;
    let analytic = analyze(&params, 5.0);
    assert!(analytic.coverage.covered_sets < 0.3 * analytic.coverage.candidate_sets);
    let sim = run(&params, 12_000, 5.0, RepairModel::Markov);
    assert_agree(&params, &sim);
}

/// Fixed (deterministic) rebuild times give the same loss rate as the chain's exponential ones
/// when rebuilds run in parallel: to first order only the mean matters. This is why the chain,
/// not Backblaze's fixed-period count, is the right reference for a sliding window of failures.
#[test]
fn fixed_rebuild_time_matches_chain_to_first_order() {
    let params = stressed(Scheme::Copies { n: 3 }, 20, 12.0);
    let sim = run(&params, 20_000, 5.0, RepairModel::Fixed);
    let analytic = analyze(&params, 5.0);
    let rate = rate_interval(&sim, Z99);
    // Higher-order terms differ (exponential repairs have a long tail), so allow 15% on top of
    // the interval.
    let analytic_rate = 1.0 / analytic.mttdl_years;
    assert!(
        rate.low / 1.15 <= analytic_rate && analytic_rate <= rate.high * 1.15,
        "{analytic_rate} vs {rate:?}"
    );
}

/// Correlated failures: whole-node losses (4 disks at once, rebuilt sharing one disk's worth of
/// bandwidth) raise the loss rate well beyond independent disk failures alone.
#[test]
fn node_losses_raise_the_loss_rate() {
    let mut params = stressed(Scheme::Rs { k: 4, m: 2 }, 40, 24.0);
    params.disks_per_node = 4;
    params.disk_afr = 0.5;
    let base = run(&params, 600, 4.0, RepairModel::Shared);
    params.node_afr = 0.5;
    let correlated = run(&params, 600, 4.0, RepairModel::Shared);
    assert!(correlated.node_failures > 0);
    let (b, c) = (rate_interval(&base, Z99), rate_interval(&correlated, Z99));
    assert!(c.low > b.high, "node losses: {c:?} vs none: {b:?}");
}

/// Rack losses with rack-unaware placement: a rack holds several nodes, so one rack loss can take
/// several shards of a bundle at once.
#[test]
fn rack_losses_hurt_when_placement_ignores_racks() {
    let mut params = stressed(Scheme::Rs { k: 4, m: 2 }, 40, 24.0);
    params.disks_per_node = 2;
    params.nodes_per_rack = 4;
    params.disk_afr = 0.2;
    let base = run(&params, 800, 4.0, RepairModel::Shared);
    params.rack_afr = 0.2;
    let racks = run(&params, 800, 4.0, RepairModel::Shared);
    assert!(racks.rack_failures > 0);
    let (b, r) = (rate_interval(&base, Z99), rate_interval(&racks, Z99));
    assert!(r.low > b.high, "rack losses: {r:?} vs none: {b:?}");
}

/// Rebuild time depends on how many disks share it: with shared bandwidth, concurrent rebuilds
/// slow each other down, and fewer helping disks slow every rebuild.
#[test]
fn rebuild_sharing_matters() {
    let mut params = stressed(Scheme::Copies { n: 3 }, 20, 24.0);
    params.disks_per_node = 4;
    params.disk_afr = 0.5;
    params.node_afr = 0.3;
    // Fixed: every failed disk rebuilt in one day, whatever else is failing.
    let fixed = run(&params, 1500, 4.0, RepairModel::Fixed);
    // Shared: after a node loss, 4 rebuilds split one disk's bandwidth and take 4 days.
    let shared = run(&params, 1500, 4.0, RepairModel::Shared);
    let (f, s) = (rate_interval(&fixed, Z99), rate_interval(&shared, Z99));
    assert!(s.low > f.high, "shared {s:?} vs fixed {f:?}");
    // Declustering: 10 disks sharing each rebuild instead of 1 cuts losses sharply, and the
    // analytic model agrees on the direction.
    let mut wide = params.clone();
    wide.rebuild_disks = Some(10);
    let declustered = run(&wide, 1500, 4.0, RepairModel::Shared);
    assert!(rate_interval(&declustered, Z99).high < s.low);
    assert!(analyze(&wide, 4.0).mttdl_years > 10.0 * analyze(&params, 4.0).mttdl_years);
}

#[test]
fn same_seed_same_result() {
    let params = stressed(Scheme::Rs { k: 4, m: 2 }, 30, 24.0);
    let a = run(&params, 200, 2.0, RepairModel::Shared);
    let b = run(&params, 200, 2.0, RepairModel::Shared);
    assert_eq!(a, b);
    let mut config = SimConfig::new(200, 2.0, 99);
    config.repair = RepairModel::Shared;
    let c = simulate(&params, &config).unwrap();
    assert_ne!(a.loss_events, c.loss_events);
}

/// Failure domains: 40 disks in 10 nodes of 4; a bundle takes one disk from each of 6 nodes. The
/// analytic coverage counts only disk sets on distinct nodes; the simulation must agree.
#[test]
fn markov_simulation_agrees_with_chain_on_node_domains() {
    let mut params = stressed(Scheme::Rs { k: 4, m: 2 }, 40, 8.0);
    params.disks_per_node = 4;
    params.validate().unwrap();
    let sim = run(&params, 20_000, 4.0, RepairModel::Markov);
    assert_agree(&params, &sim);
}

/// The sampled placement (what a real archive uses) against explicit placement when whole nodes
/// fail and several disks of one node are down at once: the loss rates agree within their
/// combined 99% interval.
#[test]
fn sampled_and_explicit_placement_agree_under_node_losses() {
    let mut params = stressed(Scheme::Rs { k: 4, m: 2 }, 40, 8.0);
    params.disks_per_node = 4;
    params.node_afr = 0.5;
    let explicit = run(&params, 2000, 4.0, RepairModel::Shared);
    let mut config = SimConfig::new(2000, 4.0, 20_261_125);
    config.max_placement_shards = 0;
    let sampled = simulate(&params, &config).unwrap();
    assert!(explicit.loss_events >= 300 && sampled.loss_events >= 300);
    let (a, b) = (explicit.loss_events as f64, sampled.loss_events as f64);
    // Two Poisson counts over the same simulated time: |a - b| within z·sqrt(a + b).
    assert!(
        (a - b).abs() <= Z99 * (a + b).sqrt(),
        "explicit {a} vs sampled {b} loss events"
    );
}
