//! Method 2: a seeded, reproducible, event-driven Monte Carlo simulation.
//!
//! Each trial runs the whole cluster for `years`: every disk fails at exponential times (rate
//! AFR), whole nodes and racks fail at their own rates (correlated failures: every disk on them
//! fails at once), and each failed disk is rebuilt. Data is lost when a failure leaves some bundle
//! with more than `m` of its shards on failed disks. Trials continue past a loss (losses are
//! counted, and the bytes of every newly lost bundle added) so the loss rate and bytes lost per
//! year are estimated over the whole simulated time.
//!
//! Repair comes in three models ([`RepairModel`]):
//! * `Markov`: each failed disk's rebuild takes an exponential time with mean `rebuild_secs`,
//!   independently: exactly the analytic chain's assumptions, so the two must agree;
//! * `Fixed`: each rebuild takes exactly `rebuild_secs`, independently;
//! * `Shared` (realistic, the default): a detection delay, then the disk's repair traffic
//!   (`(k+1) x bytes_per_disk`) is moved by the disks sharing the rebuild; concurrent rebuilds
//!   split that bandwidth equally, and failed disks no longer contribute. After a node loss the
//!   many rebuilds crawl; the analytic model cannot express this.
//!
//! Placement: bundles sit on `n` distinct nodes chosen uniformly at random, one random disk per
//! node. When the cluster holds few enough bundles (`max_placement_shards`), every bundle is placed
//! explicitly and checked shard by shard. Otherwise the placement is sampled: when a disk fails
//! while others are down, the number of bundles that this failure newly loses is drawn from its
//! exact distribution under random placement (Poisson with the expected count, computed by a small
//! dynamic programme over the nodes holding failed disks).

use serde::Serialize;

use crate::error::{DurabilityError, Result};
use crate::model::{choose, ClusterParams};
use crate::rng::Rng;
use crate::units::SECS_PER_YEAR;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairModel {
    Markov,
    Fixed,
    Shared,
}

impl RepairModel {
    pub fn describe(&self) -> &'static str {
        match self {
            RepairModel::Markov => {
                "exponential rebuild times, independent (the chain's assumptions)"
            }
            RepairModel::Fixed => "fixed rebuild time per disk, independent",
            RepairModel::Shared => {
                "detection delay, then concurrent rebuilds share the cluster's repair bandwidth"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimConfig {
    pub trials: u32,
    pub years: f64,
    pub seed: u64,
    pub repair: RepairModel,
    /// Above this many shards (bundles x width) placement is sampled instead of explicit.
    pub max_placement_shards: u64,
}

impl SimConfig {
    pub fn new(trials: u32, years: f64, seed: u64) -> SimConfig {
        SimConfig {
            trials,
            years,
            seed,
            repair: RepairModel::Shared,
            max_placement_shards: 4_000_000,
        }
    }
}

/// A point estimate with a 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// Normal quantile for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_985;

/// Wilson score interval for `hits` successes in `n` Bernoulli trials.
pub fn binomial_interval(hits: u64, n: u64, z: f64) -> Estimate {
    let n_f = n as f64;
    let p = hits as f64 / n_f;
    let z2 = z * z;
    let denom = 1.0 + z2 / n_f;
    let center = (p + z2 / (2.0 * n_f)) / denom;
    let half = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt() / denom;
    Estimate {
        value: p,
        low: (center - half).max(0.0),
        high: (center + half).min(1.0),
    }
}

/// Confidence interval for the mean of a Poisson count `k` (Wilson–Hilferty approximation to the
/// exact chi-square limits; within 1% of them for every k).
pub fn poisson_interval(k: u64, z: f64) -> Estimate {
    let kf = k as f64;
    let low = if k == 0 {
        0.0
    } else {
        kf * (1.0 - 1.0 / (9.0 * kf) - z / (3.0 * kf.sqrt())).powi(3)
    };
    let k1 = kf + 1.0;
    let high = k1 * (1.0 - 1.0 / (9.0 * k1) + z / (3.0 * k1.sqrt())).powi(3);
    Estimate {
        value: kf,
        low: low.max(0.0),
        high,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PlacementMode {
    Explicit { bundles: u64 },
    Sampled { bundles: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimResult {
    pub scheme: String,
    pub trials: u32,
    pub years: f64,
    pub seed: u64,
    pub repair: RepairModel,
    pub placement: PlacementMode,
    pub simulated_years: f64,
    pub loss_events: u64,
    pub trials_with_loss_1y: u64,
    pub trials_with_loss_horizon: u64,
    pub p_loss_1y: Estimate,
    pub p_loss_horizon: Estimate,
    pub loss_events_per_year: Estimate,
    pub mttdl_years: Estimate,
    pub bytes_lost_per_year: f64,
    pub disk_failures: u64,
    pub node_failures: u64,
    pub rack_failures: u64,
    pub max_concurrent_failed: u32,
}

/// Explicit placement: `shards[b*width..][..width]` are bundle b's disks; `by_disk` lists the
/// bundles on each disk (CSR layout).
#[derive(Debug)]
struct Explicit {
    width: usize,
    shards: Vec<u32>,
    offsets: Vec<usize>,
    by_disk: Vec<u32>,
    lost_epoch: Vec<u32>,
}

impl Explicit {
    fn build(params: &ClusterParams, bundles: u64, rng: &mut Rng) -> Explicit {
        let width = params.scheme.width() as usize;
        let per_node = params.disks_per_node as u64;
        let mut nodes: Vec<u32> = (0..params.nodes()).collect();
        let mut shards = Vec::with_capacity(bundles as usize * width);
        for _ in 0..bundles {
            // Partial Fisher–Yates: the first `width` entries become a uniform random subset.
            // The permutation need not be reset between bundles; it stays uniformly shuffled.
            for i in 0..width {
                let j = i + rng.below((nodes.len() - i) as u64) as usize;
                nodes.swap(i, j);
                let disk = nodes[i] as u64 * per_node + rng.below(per_node);
                shards.push(disk as u32);
            }
        }
        let disks = params.disks as usize;
        let mut offsets = vec![0usize; disks + 1];
        for &d in &shards {
            offsets[d as usize + 1] += 1;
        }
        for i in 0..disks {
            offsets[i + 1] += offsets[i];
        }
        let mut fill = offsets.clone();
        let mut by_disk = vec![0u32; shards.len()];
        for (i, &d) in shards.iter().enumerate() {
            by_disk[fill[d as usize]] = (i / width) as u32;
            fill[d as usize] += 1;
        }
        Explicit {
            width,
            shards,
            offsets,
            by_disk,
            lost_epoch: vec![0; bundles as usize],
        }
    }
}

#[derive(Debug)]
struct Sim<'a> {
    params: &'a ClusterParams,
    config: &'a SimConfig,
    explicit: Option<Explicit>,
    bundles: f64,
    tolerated: usize,
    disk_rate: f64,
    node_rate: f64,
    rack_rate: f64,
    rebuild_secs: f64,
    repair_traffic_bytes: f64,
    rebuild_disks: f64,
    failed: Vec<bool>,
    failed_list: Vec<u32>,
    node_failed: Vec<u32>,
    done_at: Vec<f64>,
    detect_at: Vec<f64>,
    work_left: Vec<f64>,
    node_stamp: Vec<u32>,
    stamp: u32,
    epoch: u32,
    share: f64,
    // Tallies.
    loss_events: u64,
    bytes_lost: f64,
    first_loss: Option<f64>,
    disk_failures: u64,
    node_failures: u64,
    rack_failures: u64,
    max_concurrent: u32,
}

enum Next {
    Failure,
    /// A failed disk (index into `failed_list`) whose detection delay ended.
    Detected,
    /// A failed disk (index into `failed_list`) whose rebuild finished.
    Repaired(usize),
}

impl<'a> Sim<'a> {
    fn new(params: &'a ClusterParams, config: &'a SimConfig, explicit: Option<Explicit>) -> Self {
        let disks = params.disks as usize;
        Sim {
            params,
            config,
            explicit,
            bundles: params.bundles(),
            tolerated: params.scheme.tolerated() as usize,
            disk_rate: params.disk_afr / SECS_PER_YEAR,
            node_rate: params.node_afr / SECS_PER_YEAR,
            rack_rate: params.rack_afr / SECS_PER_YEAR,
            rebuild_secs: params.rebuild_secs(),
            repair_traffic_bytes: params.scheme.repair_traffic_factor() * params.bytes_per_disk(),
            rebuild_disks: params.rebuild_disks(),
            failed: vec![false; disks],
            failed_list: Vec::new(),
            node_failed: vec![0; params.nodes() as usize],
            done_at: vec![0.0; disks],
            detect_at: vec![0.0; disks],
            work_left: vec![0.0; disks],
            node_stamp: vec![0; params.nodes() as usize],
            stamp: 0,
            epoch: 0,
            share: 0.0,
            loss_events: 0,
            bytes_lost: 0.0,
            first_loss: None,
            disk_failures: 0,
            node_failures: 0,
            rack_failures: 0,
            max_concurrent: 0,
        }
    }

    fn run_trial(&mut self, trial: u32) -> Option<f64> {
        let mut rng = Rng::new(self.config.seed, trial as u64);
        for &d in &self.failed_list {
            self.failed[d as usize] = false;
        }
        self.failed_list.clear();
        self.node_failed.iter_mut().for_each(|c| *c = 0);
        self.first_loss = None;
        self.epoch += 1;
        let disks = self.params.disks as u64;
        let nodes = self.params.nodes() as f64;
        let racks = self.params.racks() as f64;
        let horizon = self.config.years * SECS_PER_YEAR;
        let mut t = 0.0;
        loop {
            let healthy = disks - self.failed_list.len() as u64;
            let disk_total = healthy as f64 * self.disk_rate;
            let node_total = nodes * self.node_rate;
            let rack_total = racks * self.rack_rate;
            let fail_total = disk_total + node_total + rack_total;
            // Failures are memoryless, so drawing the next one afresh at every event is exact.
            let t_fail = if fail_total > 0.0 {
                t + rng.exponential(fail_total)
            } else {
                f64::INFINITY
            };
            let (t_repair, repair) = self.next_repair(t);
            let (t_next, next) = if t_fail <= t_repair {
                (t_fail, Next::Failure)
            } else {
                (t_repair, repair)
            };
            if t_next > horizon {
                break;
            }
            if self.config.repair == RepairModel::Shared {
                self.advance_work(t, t_next);
            }
            t = t_next;
            match next {
                Next::Failure => {
                    let pick = rng.uniform() * fail_total;
                    if pick < disk_total && healthy > 0 {
                        // Few disks are down at once, so rejection sampling is quick.
                        let disk = loop {
                            let d = rng.below(disks) as usize;
                            if !self.failed[d] {
                                break d;
                            }
                        };
                        self.disk_failures += 1;
                        self.fail_disk(disk, t, &mut rng);
                    } else if pick < disk_total + node_total {
                        self.node_failures += 1;
                        let node = rng.below(self.params.nodes() as u64) as u32;
                        self.fail_node(node, t, &mut rng);
                    } else {
                        self.rack_failures += 1;
                        let rack = rng.below(self.params.racks() as u64) as u32;
                        let first = rack * self.params.nodes_per_rack;
                        let last = (first + self.params.nodes_per_rack).min(self.params.nodes());
                        for node in first..last {
                            self.fail_node(node, t, &mut rng);
                        }
                    }
                }
                Next::Detected => {}
                Next::Repaired(index) => {
                    let disk = self.failed_list.swap_remove(index) as usize;
                    self.failed[disk] = false;
                    self.node_failed[disk / self.params.disks_per_node as usize] -= 1;
                }
            }
        }
        self.first_loss
    }

    fn fail_node(&mut self, node: u32, t: f64, rng: &mut Rng) {
        let per_node = self.params.disks_per_node;
        for disk in node * per_node..(node + 1) * per_node {
            if !self.failed[disk as usize] {
                self.fail_disk(disk as usize, t, rng);
            }
        }
    }

    fn fail_disk(&mut self, disk: usize, t: f64, rng: &mut Rng) {
        self.failed[disk] = true;
        self.failed_list.push(disk as u32);
        self.node_failed[disk / self.params.disks_per_node as usize] += 1;
        self.max_concurrent = self.max_concurrent.max(self.failed_list.len() as u32);
        self.done_at[disk] = match self.config.repair {
            RepairModel::Markov => t + rng.exponential(1.0 / self.rebuild_secs),
            RepairModel::Fixed | RepairModel::Shared => t + self.rebuild_secs,
        };
        self.detect_at[disk] = t + self.params.detect_secs;
        self.work_left[disk] = self.repair_traffic_bytes;
        if self.failed_list.len() > self.tolerated {
            let lost = match self.explicit {
                Some(_) => self.explicit_new_losses(disk),
                None => {
                    let mean = self.sampled_expected_losses(disk);
                    rng.poisson(mean)
                }
            };
            if lost > 0 {
                self.loss_events += 1;
                self.bytes_lost += lost as f64 * self.params.bundle_bytes as f64;
                self.first_loss.get_or_insert(t);
            }
        }
    }

    /// Bundles on `disk` that now have more than `m` failed shards and were not lost before.
    fn explicit_new_losses(&mut self, disk: usize) -> u64 {
        let Some(placement) = self.explicit.as_mut() else {
            return 0;
        };
        let mut lost = 0;
        for &bundle in &placement.by_disk[placement.offsets[disk]..placement.offsets[disk + 1]] {
            let b = bundle as usize;
            if placement.lost_epoch[b] == self.epoch {
                continue;
            }
            let shards = &placement.shards[b * placement.width..(b + 1) * placement.width];
            let down = shards.iter().filter(|&&d| self.failed[d as usize]).count();
            if down > self.tolerated {
                placement.lost_epoch[b] = self.epoch;
                lost += 1;
            }
        }
        lost
    }

    /// Expected number of bundles that contain `disk` and exactly `m` other failed disks (those
    /// with more were lost earlier), under uniform random placement on distinct nodes.
    fn sampled_expected_losses(&mut self, disk: usize) -> f64 {
        let per_node = self.params.disks_per_node as usize;
        let nodes = self.params.nodes() as f64;
        let width = self.params.scheme.width() as usize;
        let m = self.tolerated;
        let home = disk / per_node;
        // Failed-disk fraction on every other node that has failures.
        self.stamp += 1;
        let mut hit: Vec<f64> = Vec::new();
        for &d in &self.failed_list {
            let node = d as usize / per_node;
            if node == home || self.node_stamp[node] == self.stamp {
                continue;
            }
            self.node_stamp[node] = self.stamp;
            hit.push(self.node_failed[node] as f64 / per_node as f64);
        }
        let h = hit.len();
        let max_a = h.min(width - 1);
        // coef[a][b]: over subsets of `a` hit nodes, the summed probability that exactly `b` of
        // the shards they hold are on failed disks. Counts above m are dropped: we need b = m.
        let mut coef = vec![vec![0.0f64; m + 1]; max_a + 1];
        coef[0][0] = 1.0;
        for &p in &hit {
            for a in (0..max_a).rev() {
                for b in (0..=m).rev() {
                    let c = coef[a][b];
                    if c == 0.0 {
                        continue;
                    }
                    coef[a + 1][b] += c * (1.0 - p);
                    if b < m {
                        coef[a + 1][b + 1] += c * p;
                    }
                }
            }
        }
        let others = nodes - 1.0;
        let pick = (width - 1) as f64;
        let total = choose(others, pick);
        let p_exactly_m: f64 = (0..=max_a)
            .map(|a| coef[a][m] * choose(others - h as f64, pick - a as f64) / total)
            .sum();
        let p_contains_disk = width as f64 / nodes / per_node as f64;
        self.bundles * p_contains_disk * p_exactly_m
    }

    /// The next repair-side event after `t`.
    fn next_repair(&mut self, t: f64) -> (f64, Next) {
        let mut best = (f64::INFINITY, Next::Detected);
        match self.config.repair {
            RepairModel::Markov | RepairModel::Fixed => {
                for (i, &d) in self.failed_list.iter().enumerate() {
                    if self.done_at[d as usize] < best.0 {
                        best = (self.done_at[d as usize], Next::Repaired(i));
                    }
                }
            }
            RepairModel::Shared => {
                let active = self
                    .failed_list
                    .iter()
                    .filter(|&&d| self.detect_at[d as usize] <= t)
                    .count();
                let healthy = (self.params.disks as usize - self.failed_list.len()) as f64;
                let bandwidth = self.params.repair_bytes_per_sec * self.rebuild_disks.min(healthy);
                self.share = if active > 0 {
                    bandwidth / active as f64
                } else {
                    0.0
                };
                for (i, &d) in self.failed_list.iter().enumerate() {
                    let d = d as usize;
                    if self.detect_at[d] > t {
                        if self.detect_at[d] < best.0 {
                            best = (self.detect_at[d], Next::Detected);
                        }
                    } else if self.share > 0.0 {
                        let done = t + self.work_left[d] / self.share;
                        if done < best.0 {
                            best = (done, Next::Repaired(i));
                        }
                    }
                }
            }
        }
        best
    }

    fn advance_work(&mut self, from: f64, to: f64) {
        let moved = self.share * (to - from);
        for &d in &self.failed_list {
            let d = d as usize;
            if self.detect_at[d] <= from {
                self.work_left[d] = (self.work_left[d] - moved).max(0.0);
            }
        }
    }
}

/// Runs the simulation. Same inputs and seed, same result, on every machine.
pub fn simulate(params: &ClusterParams, config: &SimConfig) -> Result<SimResult> {
    params.validate()?;
    if config.trials == 0 {
        return Err(DurabilityError::NotPositive {
            what: "--trials",
            value: "0".to_string(),
        });
    }
    if !(config.years > 0.0 && config.years <= 1000.0) {
        return Err(DurabilityError::YearsOutOfRange {
            what: "--years",
            value: config.years,
        });
    }
    let failures_per_year = params.disks as f64 * params.disk_afr
        + params.nodes() as f64 * params.node_afr
        + params.racks() as f64 * params.rack_afr * params.disks_per_node as f64;
    let events = 2.0 * failures_per_year * config.trials as f64 * config.years;
    const EVENT_LIMIT: f64 = 3e8;
    if events > EVENT_LIMIT {
        return Err(DurabilityError::SimulationTooLarge {
            events,
            limit: EVENT_LIMIT,
        });
    }
    let bundles = params.bundles();
    let width = params.scheme.width() as u64;
    let explicit = if bundles * width as f64 <= config.max_placement_shards as f64 {
        let mut rng = Rng::new(config.seed, u64::MAX);
        Some(Explicit::build(params, bundles.round() as u64, &mut rng))
    } else {
        None
    };
    let placement = match &explicit {
        Some(e) => PlacementMode::Explicit {
            bundles: e.lost_epoch.len() as u64,
        },
        None => PlacementMode::Sampled { bundles },
    };
    let mut sim = Sim::new(params, config, explicit);
    let mut lost_1y = 0u64;
    let mut lost_horizon = 0u64;
    for trial in 0..config.trials {
        if let Some(t) = sim.run_trial(trial) {
            lost_horizon += 1;
            if t <= SECS_PER_YEAR {
                lost_1y += 1;
            }
        }
    }
    let trials = config.trials as u64;
    let simulated_years = config.trials as f64 * config.years;
    let events = poisson_interval(sim.loss_events, Z95);
    let rate = Estimate {
        value: events.value / simulated_years,
        low: events.low / simulated_years,
        high: events.high / simulated_years,
    };
    let inverse = |x: f64| if x > 0.0 { 1.0 / x } else { f64::INFINITY };
    Ok(SimResult {
        scheme: params.scheme.label(),
        trials: config.trials,
        years: config.years,
        seed: config.seed,
        repair: config.repair,
        placement,
        simulated_years,
        loss_events: sim.loss_events,
        trials_with_loss_1y: lost_1y,
        trials_with_loss_horizon: lost_horizon,
        // Trials shorter than a year cannot say anything about one year; report the horizon.
        p_loss_1y: if config.years >= 1.0 {
            binomial_interval(lost_1y, trials, Z95)
        } else {
            binomial_interval(lost_horizon, trials, Z95)
        },
        p_loss_horizon: binomial_interval(lost_horizon, trials, Z95),
        mttdl_years: Estimate {
            value: inverse(rate.value),
            low: inverse(rate.high),
            high: inverse(rate.low),
        },
        loss_events_per_year: rate,
        bytes_lost_per_year: sim.bytes_lost / simulated_years,
        disk_failures: sim.disk_failures,
        node_failures: sim.node_failures,
        rack_failures: sim.rack_failures,
        max_concurrent_failed: sim.max_concurrent,
    })
}
