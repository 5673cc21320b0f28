//! Placement: choose k+m disks on k+m distinct failure domains, weighted by free space.
//!
//! A pure, deterministic function of the candidate disks and a seed (the leader derives the
//! seed from the bundle id): the same map and seed always give the same placement.
//!
//! Algorithm: group usable disks by failure domain; a domain's weight is the sum of its disks'
//! free bytes. Draw k+m domains by weighted sampling without replacement (Efraimidis–Spirakis:
//! key = ln(u)/w, keep the largest keys), with u a hash of (seed, domain); inside each chosen
//! domain draw one disk with probability proportional to its free bytes. Shard i goes to the
//! i-th drawn domain. Failed, draining and removed disks, and disks of nodes that are not up,
//! are never candidates (the caller filters them).

use std::collections::BTreeMap;

use crate::error::MetaError;
use crate::types::DomainLevel;

/// A usable disk as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Disk id.
    pub disk_id: u64,
    /// Failure domain key at the configured level.
    pub domain: String,
    /// Free bytes (capacity minus the larger of accounted and reported use).
    pub free_bytes: u64,
}

#[derive(Debug, Clone)]
struct Domain {
    hash: u64,
    disks: Vec<(u64, u64)>,
    free: u64,
}

/// Candidates grouped by domain; [`PlacementMap::place`] draws from it.
#[derive(Debug, Clone)]
pub struct PlacementMap {
    domains: Vec<Domain>,
    disk_pos: BTreeMap<u64, (usize, usize)>,
    level: DomainLevel,
}

/// splitmix64: a small, fixed, well-mixed hash (placement must not change with a library).
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A uniform draw in (0, 1) from a hash.
fn unit(h: u64) -> f64 {
    ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

impl PlacementMap {
    /// Groups candidates (disks with no free space are skipped).
    pub fn new(candidates: &[Candidate], level: DomainLevel) -> Self {
        let mut by_domain: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
        for c in candidates {
            by_domain
                .entry(c.domain.as_str())
                .or_default()
                .push((c.disk_id, c.free_bytes));
        }
        let mut domains = Vec::with_capacity(by_domain.len());
        let mut disk_pos = BTreeMap::new();
        for (name, mut disks) in by_domain {
            disks.sort_unstable();
            let di = domains.len();
            for (j, (id, _)) in disks.iter().enumerate() {
                disk_pos.insert(*id, (di, j));
            }
            let free = disks.iter().map(|d| d.1).sum();
            domains.push(Domain {
                hash: fnv(name),
                disks,
                free,
            });
        }
        Self {
            domains,
            disk_pos,
            level,
        }
    }

    /// Domains with at least one disk with free space.
    pub fn usable_domains(&self) -> usize {
        self.domains.iter().filter(|d| d.free > 0).count()
    }

    /// Charges `bytes` to a disk (simulation and batch allocation).
    pub fn charge(&mut self, disk_id: u64, bytes: u64) {
        if let Some(&(di, j)) = self.disk_pos.get(&disk_id) {
            let d = &mut self.domains[di];
            let take = bytes.min(d.disks[j].1);
            d.disks[j].1 -= take;
            d.free -= take;
        }
    }

    /// Chooses `n` disks on `n` distinct domains; deterministic in (map, n, seed).
    pub fn place(&self, n: usize, seed: u64) -> Result<Vec<u64>, MetaError> {
        let usable = self.usable_domains();
        if n == 0 || usable < n {
            return Err(MetaError::Unplaceable {
                shards: n,
                available: usable,
                level: self.level.to_string(),
            });
        }
        // Keep the n largest keys ln(u)/w; a small sorted vec beats a heap for n <= 64.
        let mut top: Vec<(f64, usize)> = Vec::with_capacity(n + 1);
        let s = mix(seed);
        for (i, d) in self.domains.iter().enumerate() {
            if d.free == 0 {
                continue;
            }
            let key = unit(mix(s ^ d.hash)).ln() / d.free as f64;
            if top.len() == n && key <= top[n - 1].0 {
                continue;
            }
            let pos = top.partition_point(|(k, _)| *k > key);
            top.insert(pos, (key, i));
            top.truncate(n);
        }
        let mut out = Vec::with_capacity(n);
        for (shard, (_, di)) in top.iter().enumerate() {
            let d = &self.domains[*di];
            let r = mix(s ^ d.hash ^ mix(shard as u64 + 1));
            let mut target = (unit(r) * d.free as f64) as u64;
            let mut chosen = d.disks[d.disks.len() - 1].0;
            for (id, free) in &d.disks {
                if *free == 0 {
                    continue;
                }
                if target < *free {
                    chosen = *id;
                    break;
                }
                target -= free;
            }
            out.push(chosen);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// Places `bundles` RS(10,4) bundles on `nodes` × `disks` disks; returns shard counts per
    /// disk and checks domain distinctness of every placement.
    pub(super) fn simulate(
        nodes: u64,
        disks: u64,
        bundles: u64,
        capacity: impl Fn(u64) -> u64,
    ) -> BTreeMap<u64, u64> {
        let mut cands = Vec::new();
        for n in 0..nodes {
            for d in 0..disks {
                let id = n * disks + d + 1;
                cands.push(Candidate {
                    disk_id: id,
                    domain: format!("host-{n}"),
                    free_bytes: capacity(id),
                });
            }
        }
        let mut map = PlacementMap::new(&cands, DomainLevel::Host);
        let shard_bytes = 100 << 20;
        let mut counts: BTreeMap<u64, u64> = cands.iter().map(|c| (c.disk_id, 0)).collect();
        for b in 0..bundles {
            let p = map.place(14, b).unwrap();
            let mut hosts: Vec<u64> = p.iter().map(|d| (d - 1) / disks).collect();
            hosts.sort_unstable();
            hosts.dedup();
            assert_eq!(hosts.len(), 14, "two shards of bundle {b} on one host");
            for d in p {
                *counts.get_mut(&d).unwrap() += 1;
                map.charge(d, shard_bytes);
            }
        }
        counts
    }

    fn max_over_mean(counts: &BTreeMap<u64, u64>, weight: impl Fn(u64) -> f64) -> f64 {
        let norm: Vec<f64> = counts.iter().map(|(d, c)| *c as f64 / weight(*d)).collect();
        let mean = norm.iter().sum::<f64>() / norm.len() as f64;
        norm.iter().cloned().fold(0.0, f64::max) / mean
    }

    #[test]
    fn deterministic_and_distinct() {
        let cands: Vec<Candidate> = (1..=20)
            .map(|i| Candidate {
                disk_id: i,
                domain: format!("h{}", i % 7),
                free_bytes: 1000 + i,
            })
            .collect();
        let m = PlacementMap::new(&cands, DomainLevel::Host);
        let a = m.place(6, 42).unwrap();
        assert_eq!(a, m.place(6, 42).unwrap());
        assert_ne!(a, m.place(6, 43).unwrap());
        let err = m.place(8, 1).unwrap_err();
        assert!(matches!(
            err,
            MetaError::Unplaceable {
                shards: 8,
                available: 7,
                ..
            }
        ));
    }

    #[test]
    fn never_full_disks() {
        let cands = vec![
            Candidate {
                disk_id: 1,
                domain: "a".into(),
                free_bytes: 0,
            },
            Candidate {
                disk_id: 2,
                domain: "a".into(),
                free_bytes: 10,
            },
            Candidate {
                disk_id: 3,
                domain: "b".into(),
                free_bytes: 10,
            },
        ];
        let m = PlacementMap::new(&cands, DomainLevel::Host);
        for s in 0..100 {
            let p = m.place(2, s).unwrap();
            assert!(!p.contains(&1));
        }
    }

    #[test]
    fn small_simulation_equal_disks() {
        // 60 nodes x 8 disks, 20,000 RS(10,4) bundles: 583 shards per disk on average.
        let counts = simulate(60, 8, 20_000, |_| 16 << 40);
        let r = max_over_mean(&counts, |_| 1.0);
        assert!(r <= 1.2, "max/mean {r}");
    }

    #[test]
    fn small_simulation_mixed_disks() {
        let cap = |id: u64| {
            if id.is_multiple_of(2) {
                16u64 << 40
            } else {
                4u64 << 40
            }
        };
        let counts = simulate(60, 8, 20_000, cap);
        let r = max_over_mean(&counts, |d| cap(d) as f64);
        assert!(r <= 1.25, "max/mean of fill fraction {r}");
    }

    /// The full-size simulation: 500 nodes × 8 disks, 1,000,000 RS(10,4) bundles.
    /// Run with `cargo test --release -p bitmountain-meta -- --ignored full_size`.
    #[test]
    #[ignore = "full-size simulation: run in release"]
    fn full_size_simulation() {
        let started = std::time::Instant::now();
        let counts = simulate(500, 8, 1_000_000, |_| 16 << 40);
        let r = max_over_mean(&counts, |_| 1.0);
        println!("equal disks: max/mean = {r:.4} ({:?})", started.elapsed());
        assert!(r <= 1.1, "max/mean {r}");
        let cap = |id: u64| {
            if id.is_multiple_of(2) {
                16u64 << 40
            } else {
                4u64 << 40
            }
        };
        let counts = simulate(500, 8, 1_000_000, cap);
        let r = max_over_mean(&counts, |d| cap(d) as f64);
        println!(
            "mixed disks: max/mean fill = {r:.4} ({:?})",
            started.elapsed()
        );
        assert!(r <= 1.1, "max/mean {r}");
    }

    /// What the leader's placement-map cache saves per allocation in a 500 × 8 cluster:
    /// building the map from the candidates (as every allocation did) against drawing from a
    /// built one. Run with
    /// `cargo test --release -p bitmountain-meta -- --ignored --nocapture placement_map_cost`.
    #[test]
    #[ignore = "benchmark: run in release"]
    fn placement_map_cost() {
        let cands: Vec<Candidate> = (0..500u64 * 8)
            .map(|i| Candidate {
                disk_id: i + 1,
                domain: format!("host-{}", i / 8),
                free_bytes: 16 << 40,
            })
            .collect();
        let rounds = 2_000u64;
        let started = std::time::Instant::now();
        let mut placed = 0;
        for seed in 0..rounds {
            let candidates = cands.clone();
            placed += PlacementMap::new(&candidates, DomainLevel::Host)
                .place(14, seed)
                .unwrap()
                .len();
        }
        let rebuild = started.elapsed() / rounds as u32;
        let map = PlacementMap::new(&cands, DomainLevel::Host);
        let started = std::time::Instant::now();
        for seed in 0..rounds {
            placed += map.place(14, seed).unwrap().len();
        }
        let shared = started.elapsed() / rounds as u32;
        assert_eq!(placed, 2 * rounds as usize * 14);
        println!(
            "BENCH placement, 500 nodes x 8 disks, RS(10,4): build map + place {rebuild:?}, place from a built map {shared:?}, ratio {:.0}x",
            rebuild.as_secs_f64() / shared.as_secs_f64()
        );
    }
}
