//! The cluster being modelled: a redundancy scheme, disks grouped into nodes and racks, failure
//! rates, and the repair bandwidth; plus the quantities both methods derive from it (usable bytes,
//! number of bundles, time to rebuild one disk, how many disks share a rebuild).

use serde::Serialize;

use crate::error::{DurabilityError, Result};
use crate::units::SECS_PER_YEAR;

/// How each bundle is made redundant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scheme {
    /// Reed-Solomon with `k` data and `m` parity shards: any `m` shards may be lost.
    Rs { k: u32, m: u32 },
    /// `n` identical copies: any `n - 1` may be lost.
    Copies { n: u32 },
}

impl Scheme {
    /// Parses `10+4` (or `10,4`) as RS(10,4).
    pub fn parse_code(text: &str) -> Result<Scheme> {
        let bad = || DurabilityError::BadCode(text.to_string());
        let (k, m) = text
            .split_once(['+', ','])
            .ok_or_else(bad)
            .and_then(|(k, m)| {
                Ok((
                    k.trim().parse::<u32>().map_err(|_| bad())?,
                    m.trim().parse::<u32>().map_err(|_| bad())?,
                ))
            })?;
        Scheme::rs(k, m)
    }

    pub fn rs(k: u32, m: u32) -> Result<Scheme> {
        if k == 0 || k + m > 255 {
            return Err(DurabilityError::CodeOutOfRange { k, m });
        }
        Ok(Scheme::Rs { k, m })
    }

    pub fn copies(n: u32) -> Result<Scheme> {
        if !(1..=16).contains(&n) {
            return Err(DurabilityError::CopiesOutOfRange(n));
        }
        Ok(Scheme::Copies { n })
    }

    /// Shards needed to read the data (k; 1 for copies).
    pub fn data_shards(&self) -> u32 {
        match *self {
            Scheme::Rs { k, .. } => k,
            Scheme::Copies { .. } => 1,
        }
    }

    /// Shards that may be lost without losing data (m; n-1 for copies).
    pub fn tolerated(&self) -> u32 {
        match *self {
            Scheme::Rs { m, .. } => m,
            Scheme::Copies { n } => n - 1,
        }
    }

    /// Shards per bundle, each on its own failure domain.
    pub fn width(&self) -> u32 {
        self.data_shards() + self.tolerated()
    }

    /// Raw bytes stored per usable byte.
    pub fn overhead(&self) -> f64 {
        self.width() as f64 / self.data_shards() as f64
    }

    /// Bytes of disk traffic needed to rebuild one lost byte: read `k` surviving shards (one copy
    /// for replication) and write the rebuilt one. This is why RS repair is slower than copying,
    /// and the model charges it honestly.
    pub fn repair_traffic_factor(&self) -> f64 {
        self.data_shards() as f64 + 1.0
    }

    pub fn label(&self) -> String {
        match *self {
            Scheme::Rs { k, m } => format!("RS({k},{m})"),
            Scheme::Copies { n } => format!("{n} copies"),
        }
    }
}

impl std::fmt::Display for Scheme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

/// The five schemes the project compares, at equal raw capacity (the same disks).
pub fn comparison_schemes() -> Vec<Scheme> {
    vec![
        Scheme::Rs { k: 10, m: 4 },
        Scheme::Rs { k: 6, m: 3 },
        Scheme::Rs { k: 4, m: 2 },
        Scheme::Copies { n: 3 },
        Scheme::Copies { n: 2 },
    ]
}

/// Everything the model needs to know about a cluster. Build it with [`ClusterParams::new`] (sensible
/// defaults) and adjust fields, then call [`ClusterParams::validate`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterParams {
    pub scheme: Scheme,
    /// Total disks.
    pub disks: u32,
    /// Disks per node; a bundle never has two shards on one node (the failure domain). 1 means
    /// every disk is its own failure domain.
    pub disks_per_node: u32,
    /// Nodes per rack (racks only matter for correlated rack failures).
    pub nodes_per_rack: u32,
    /// Capacity of one disk.
    pub disk_bytes: u64,
    /// Share of each disk holding shard data.
    pub fill_fraction: f64,
    /// Share of that shard data belonging to bundles of `scheme` (1: all of it). A cluster
    /// with several codes in use is modelled one code at a time: every code's bundles are at
    /// risk only as many times as there are of them, while rebuilds move every code's bytes.
    pub scheme_share: f64,
    /// Independent disk failures per disk-year (0.02 = 2% AFR), as Backblaze defines AFR.
    pub disk_afr: f64,
    /// Whole-node losses per node-year: every disk on the node fails at once (simulation only).
    pub node_afr: f64,
    /// Whole-rack losses per rack-year (simulation only).
    pub rack_afr: f64,
    /// Repair traffic each participating disk sustains (reads and writes), bytes per second.
    pub repair_bytes_per_sec: f64,
    /// How many disks share one disk's rebuild; `None` = every surviving disk that holds a peer
    /// shard of the failed disk (declustered placement), computed from the placement.
    pub rebuild_disks: Option<u32>,
    /// Time from a failure to the start of its rebuild (heartbeat timeout, grace period).
    pub detect_secs: f64,
    /// Size of one bundle (its usable data); all shards of a bundle share one placement, so this
    /// sets how many distinct placements the cluster holds.
    pub bundle_bytes: u64,
}

impl ClusterParams {
    /// A 1,000-disk archive of 16 TB disks, 80% full, 2% AFR, 20 MB/s of repair traffic per disk,
    /// 30 minutes to declare a disk failed, 1 GB bundles.
    pub fn new(scheme: Scheme) -> ClusterParams {
        ClusterParams {
            scheme,
            disks: 1000,
            disks_per_node: 1,
            nodes_per_rack: 1,
            disk_bytes: 16_000_000_000_000,
            fill_fraction: 0.8,
            scheme_share: 1.0,
            disk_afr: 0.02,
            node_afr: 0.0,
            rack_afr: 0.0,
            repair_bytes_per_sec: 20e6,
            rebuild_disks: None,
            detect_secs: 1800.0,
            bundle_bytes: 1_000_000_000,
        }
    }

    /// Checks every input; errors name the value and what to change.
    pub fn validate(&self) -> Result<()> {
        let positive = |what: &'static str, value: f64| {
            if value.is_finite() && value > 0.0 {
                Ok(())
            } else {
                Err(DurabilityError::NotPositive {
                    what,
                    value: value.to_string(),
                })
            }
        };
        match self.scheme {
            Scheme::Rs { k, m } => {
                Scheme::rs(k, m)?;
            }
            Scheme::Copies { n } => {
                Scheme::copies(n)?;
            }
        }
        positive("--disks", self.disks as f64)?;
        positive("--disks-per-node", self.disks_per_node as f64)?;
        positive("--nodes-per-rack", self.nodes_per_rack as f64)?;
        positive("--disk-size", self.disk_bytes as f64)?;
        positive("--bundle-size", self.bundle_bytes as f64)?;
        positive("--repair-bytes-per-sec", self.repair_bytes_per_sec)?;
        if let Some(rebuild_disks) = self.rebuild_disks {
            positive("--rebuild-disks", rebuild_disks as f64)?;
        }
        if !(self.detect_secs.is_finite() && self.detect_secs >= 0.0) {
            return Err(DurabilityError::RateOutOfRange {
                what: "--detect-secs",
                value: self.detect_secs,
                max: f64::INFINITY,
            });
        }
        if !(self.fill_fraction > 0.0 && self.fill_fraction <= 1.0) {
            return Err(DurabilityError::FillOutOfRange(self.fill_fraction));
        }
        if !(self.scheme_share > 0.0 && self.scheme_share <= 1.0) {
            return Err(DurabilityError::ShareOutOfRange(self.scheme_share));
        }
        if !(self.disk_afr > 0.0 && self.disk_afr <= 10.0) {
            return Err(DurabilityError::AfrOutOfRange(self.disk_afr));
        }
        for (what, value) in [("--node-afr", self.node_afr), ("--rack-afr", self.rack_afr)] {
            if !(value.is_finite() && (0.0..=10.0).contains(&value)) {
                return Err(DurabilityError::RateOutOfRange {
                    what,
                    value,
                    max: 10.0,
                });
            }
        }
        if !self.disks.is_multiple_of(self.disks_per_node) {
            return Err(DurabilityError::UnevenNodes {
                disks: self.disks,
                disks_per_node: self.disks_per_node,
            });
        }
        let width = self.scheme.width();
        if self.nodes() < width {
            return Err(DurabilityError::TooFewDomains {
                scheme: self.scheme.label(),
                width,
                domains: self.nodes(),
                what: if self.disks_per_node == 1 {
                    "disks"
                } else {
                    "nodes"
                },
            });
        }
        Ok(())
    }

    pub fn nodes(&self) -> u32 {
        self.disks / self.disks_per_node.max(1)
    }

    pub fn racks(&self) -> u32 {
        self.nodes().div_ceil(self.nodes_per_rack.max(1))
    }

    /// Disk failure rate per second.
    pub fn disk_fail_per_sec(&self) -> f64 {
        self.disk_afr / SECS_PER_YEAR
    }

    pub fn raw_bytes(&self) -> f64 {
        self.disks as f64 * self.disk_bytes as f64
    }

    /// Shard bytes on one disk: what a rebuild must recreate.
    pub fn bytes_per_disk(&self) -> f64 {
        self.disk_bytes as f64 * self.fill_fraction
    }

    /// User data the cluster holds at this fill level in bundles of `scheme`.
    pub fn usable_bytes(&self) -> f64 {
        self.raw_bytes() * self.fill_fraction * self.scheme_share / self.scheme.overhead()
    }

    /// Bundles stored, each with its own random placement.
    pub fn bundles(&self) -> f64 {
        (self.usable_bytes() / self.bundle_bytes as f64).max(1.0)
    }

    /// Disks that share one disk's rebuild. Under declustered placement the failed disk's bundles
    /// have peers on (nearly) every other disk, so each of them reads a little and the rebuilt
    /// shards are written all over the cluster. With few bundles per disk only the disks that
    /// actually hold peers can help, so we count the expected number of distinct peer disks.
    pub fn rebuild_disks(&self) -> f64 {
        if let Some(n) = self.rebuild_disks {
            return (n as f64).min(self.disks as f64 - 1.0).max(1.0);
        }
        let others = self.disks as f64 - 1.0;
        let width = self.scheme.width() as f64;
        let bundles_per_disk = self.bundles() * width / self.disks as f64;
        // Each bundle on the failed disk has width-1 peers spread over the other disks; a given
        // other disk is among them with probability (width-1)/others.
        let p_peer = ((width - 1.0) / others).min(1.0);
        let distinct = others * -f64::exp_m1(bundles_per_disk * f64::ln_1p(-p_peer));
        distinct.clamp(1.0, others)
    }

    /// Time to rebuild one failed disk when it is the only one being rebuilt: detection delay,
    /// then `(k+1) x bytes_per_disk` of traffic spread over `rebuild_disks` disks, each moving
    /// `repair_bytes_per_sec`.
    pub fn rebuild_secs(&self) -> f64 {
        self.detect_secs + self.rebuild_transfer_secs()
    }

    /// The transfer part of [`ClusterParams::rebuild_secs`], without the detection delay.
    pub fn rebuild_transfer_secs(&self) -> f64 {
        self.scheme.repair_traffic_factor() * self.bytes_per_disk()
            / (self.repair_bytes_per_sec * self.rebuild_disks())
    }
}

/// `ln C(n, r)` for real-valued arguments, via a product (exact enough for n up to millions).
pub(crate) fn ln_choose(n: f64, r: f64) -> f64 {
    if r < 0.0 || r > n {
        return f64::NEG_INFINITY;
    }
    let r = r.min(n - r);
    let mut sum = 0.0;
    let mut i = 0.0;
    while i < r {
        sum += ((n - i) / (r - i)).ln();
        i += 1.0;
    }
    sum
}

pub(crate) fn choose(n: f64, r: f64) -> f64 {
    ln_choose(n, r).exp()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_codes() {
        assert_eq!(
            Scheme::parse_code("10+4").unwrap(),
            Scheme::Rs { k: 10, m: 4 }
        );
        assert_eq!(
            Scheme::parse_code("6,3").unwrap(),
            Scheme::Rs { k: 6, m: 3 }
        );
        assert!(Scheme::parse_code("10").is_err());
        assert!(Scheme::parse_code("0+4").is_err());
        assert!(Scheme::parse_code("200+100").is_err());
    }

    #[test]
    fn rejects_bad_inputs_with_named_values() {
        let mut p = ClusterParams::new(Scheme::Rs { k: 10, m: 4 });
        p.disks = 12;
        let err = p.validate().unwrap_err();
        assert!(err.to_string().contains("only 12"), "{err}");
        let mut p = ClusterParams::new(Scheme::Copies { n: 3 });
        p.disk_afr = 0.0;
        assert_eq!(p.validate(), Err(DurabilityError::AfrOutOfRange(0.0)));
        p.disk_afr = 0.02;
        p.fill_fraction = 1.5;
        assert_eq!(p.validate(), Err(DurabilityError::FillOutOfRange(1.5)));
        p.fill_fraction = 0.5;
        p.disks_per_node = 7;
        assert!(matches!(
            p.validate(),
            Err(DurabilityError::UnevenNodes { .. })
        ));
        p.disks_per_node = 500;
        assert!(matches!(
            p.validate(),
            Err(DurabilityError::TooFewDomains { domains: 2, .. })
        ));
    }

    #[test]
    fn derived_quantities() {
        let p = ClusterParams::new(Scheme::Rs { k: 10, m: 4 });
        p.validate().unwrap();
        assert!((p.usable_bytes() - 1000.0 * 16e12 * 0.8 / 1.4).abs() < 1.0);
        // Millions of bundles: every other disk shares the rebuild.
        assert!((p.rebuild_disks() - 999.0).abs() < 1e-6);
        let expected = 1800.0 + 11.0 * 12.8e12 / (20e6 * 999.0);
        assert!((p.rebuild_secs() - expected).abs() < 1e-6);
        assert!((choose(1000.0, 3.0) - 166_167_000.0).abs() < 1.0);
        assert!((choose(20.0, 4.0) - 4845.0).abs() < 1e-6);
    }
}
