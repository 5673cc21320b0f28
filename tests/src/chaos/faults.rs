//! The faults of a chaos run: a schedule drawn from the seed (pure, so a seed names a run), and
//! the means to inject and heal each one on the hosts.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::disks::SMALL_DISK;
use super::hosts::{Hosts, MEMBERS, NODES};

/// Which member a fault hits: the leader when it is injected, or a follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    Leader,
    Follower,
}

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of nodes (at most the code's parity count, 2 for 4+2, survives), restarted at
    /// the end of the hold.
    KillNodes(Vec<&'static str>),
    /// kill -9 of members, restarted at the end of the hold (two: the group loses its quorum
    /// and must refuse cleanly).
    KillMembers(Vec<Member>),
    /// SIGSTOP of a member for the hold (longer than the election timeout).
    PauseMember(Member),
    /// SIGSTOP of a node for the hold (longer than the node-down grace when the hold is).
    PauseNode(&'static str),
    /// The member cut from the other members (both ways, or only what it receives).
    IsolateMember { member: Member, inbound_only: bool },
    /// A node cut from the metadata group but not from clients or other nodes.
    CutNodeFromMembers {
        node: &'static str,
        inbound_only: bool,
    },
    /// A zone's two nodes cut from every other member and node (clients still reach them).
    CutZone(usize),
    /// A rate limit and loss on everything a zone's nodes send.
    SlowZone(usize),
    /// The small disk ([`super::disks::SMALL_DISK`]) filled up during uploads.
    FillDisk,
    /// A node disk's contents gone for the hold, then back (1 or 2; never the small disk).
    VanishDisk { node: &'static str, disk: usize },
    /// Two of the faults above at once, injected one after the other and healed together (a
    /// disk vanishing while a member is cut, say): real failures overlap.
    Together(Vec<Fault>),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Fault {
    /// A short name, for the summary's counts.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillNodes(n) if n.len() > 2 => "kill more nodes than the code survives",
            Fault::KillNodes(_) => "kill -9 nodes",
            Fault::KillMembers(m) if m.len() > 1 => "kill a majority of members",
            Fault::KillMembers(_) => "kill -9 a member",
            Fault::PauseMember(_) => "pause a member",
            Fault::PauseNode(_) => "pause a node",
            Fault::IsolateMember {
                inbound_only: true, ..
            } => "cut a member (one way)",
            Fault::IsolateMember { .. } => "cut a member",
            Fault::CutNodeFromMembers {
                inbound_only: true, ..
            } => "cut a node from the group (one way)",
            Fault::CutNodeFromMembers { .. } => "cut a node from the group",
            Fault::CutZone(_) => "cut a zone",
            Fault::SlowZone(_) => "slow, lossy zone",
            Fault::FillDisk => "fill a disk",
            Fault::VanishDisk { .. } => "a disk vanishes and returns",
            Fault::Together(_) => "two faults at once",
        }
    }
}

/// A fault at an offset from the run's start, held for a while, then healed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub at: Duration,
    pub hold: Duration,
    pub fault: Fault,
}

/// The zone's nodes (zones 0..3, two nodes each).
fn zone(z: usize) -> [&'static str; 2] {
    [NODES[2 * z], NODES[2 * z + 1]]
}

fn member(rng: &mut StdRng) -> Member {
    if rng.random_bool(0.5) {
        Member::Leader
    } else {
        Member::Follower
    }
}

/// The faults of a run of `length`, with quiet gaps between them, drawn from `seed`; about one
/// in fifteen is two faults at once. `node_down_grace` decides how long a node pause must be to
/// count as down.
pub fn schedule(seed: u64, length: Duration, node_down_grace: Duration) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut at = Duration::from_secs(rng.random_range(3..8));
    let mut out = Vec::new();
    loop {
        let (fault, hold_s) = if rng.random_ratio(1, 15) {
            let (a, hold_a) = one_fault(&mut rng, node_down_grace);
            let (b, hold_b) = one_fault(&mut rng, node_down_grace);
            (Fault::Together(vec![a, b]), hold_a.max(hold_b))
        } else {
            one_fault(&mut rng, node_down_grace)
        };
        let hold = Duration::from_secs(hold_s);
        if at + hold > length {
            return out;
        }
        out.push(Planned { at, hold, fault });
        at += hold + Duration::from_secs(rng.random_range(2..6));
    }
}

/// One fault (never [`Fault::Together`]) and its hold in seconds.
fn one_fault(rng: &mut StdRng, node_down_grace: Duration) -> (Fault, u64) {
    let node = NODES[rng.random_range(0..NODES.len())];
    let other = loop {
        let n = NODES[rng.random_range(0..NODES.len())];
        if n != node {
            break n;
        }
    };
    match rng.random_range(0..14) {
        0 => (Fault::KillNodes(vec![node]), rng.random_range(3..15)),
        1 => (Fault::KillNodes(vec![node, other]), rng.random_range(3..12)),
        2 => (
            Fault::KillMembers(vec![member(rng)]),
            rng.random_range(2..10),
        ),
        3 => (
            Fault::KillMembers(vec![Member::Leader, Member::Follower]),
            rng.random_range(3..8),
        ),
        4 => (Fault::PauseMember(member(rng)), rng.random_range(3..10)),
        5 => {
            let hold = if rng.random_bool(0.3) {
                node_down_grace.as_secs() + 5
            } else {
                rng.random_range(2..8)
            };
            (Fault::PauseNode(node), hold)
        }
        6 | 7 => {
            let f = Fault::IsolateMember {
                member: Member::Leader,
                inbound_only: rng.random_bool(0.4),
            };
            (f, rng.random_range(3..10))
        }
        8 => {
            let f = Fault::CutNodeFromMembers {
                node,
                inbound_only: rng.random_bool(0.4),
            };
            (f, rng.random_range(3..12))
        }
        9 => (
            Fault::CutZone(rng.random_range(0..3)),
            rng.random_range(3..10),
        ),
        10 => (
            Fault::SlowZone(rng.random_range(0..3)),
            rng.random_range(5..12),
        ),
        12 => (Fault::FillDisk, rng.random_range(5..15)),
        13 => {
            let disk = if node == SMALL_DISK.0 {
                1
            } else {
                rng.random_range(1..=2)
            };
            (Fault::VanishDisk { node, disk }, rng.random_range(5..15))
        }
        _ => (
            Fault::KillNodes(NODES[..3].to_vec()),
            rng.random_range(2..6),
        ),
    }
}

/// What a fault did, so it can be healed: the services it touched.
#[derive(Debug)]
pub struct Injected {
    pub services: Vec<&'static str>,
}

/// The service of the member a fault names, as the cluster sees it now.
async fn resolve(hosts: &Hosts, m: Member) -> &'static str {
    let leader = hosts
        .client()
        .status()
        .await
        .ok()
        .map(|s| s.meta_leader_id)
        .filter(|id| (1..=3).contains(id))
        .unwrap_or(1) as usize;
    match m {
        Member::Leader => MEMBERS[leader - 1],
        Member::Follower => MEMBERS[leader % 3],
    }
}

/// Injects `fault`.
pub async fn inject(hosts: &Hosts, fault: &Fault) -> Injected {
    let services: Vec<&'static str> = match fault {
        Fault::Together(faults) => {
            let mut all = Vec::new();
            for f in faults {
                for s in Box::pin(inject(hosts, f)).await.services {
                    if !all.contains(&s) {
                        all.push(s);
                    }
                }
            }
            all
        }
        Fault::KillNodes(nodes) => {
            for n in nodes {
                hosts.kill(n);
            }
            nodes.clone()
        }
        Fault::KillMembers(members) => {
            let mut hit = Vec::new();
            for m in members {
                let s = resolve(hosts, *m).await;
                let s = if hit.contains(&s) {
                    MEMBERS
                        .iter()
                        .copied()
                        .find(|x| !hit.contains(x))
                        .unwrap_or(s)
                } else {
                    s
                };
                hosts.kill(s);
                hit.push(s);
            }
            hit
        }
        Fault::PauseMember(m) => {
            let s = resolve(hosts, *m).await;
            hosts.signal_stop(s, true);
            vec![s]
        }
        Fault::PauseNode(n) => {
            hosts.signal_stop(n, true);
            vec![n]
        }
        Fault::IsolateMember {
            member,
            inbound_only,
        } => {
            let s = resolve(hosts, *member).await;
            let others: Vec<&str> = MEMBERS.iter().copied().filter(|m| *m != s).collect();
            hosts.cut(s, &others, *inbound_only);
            vec![s]
        }
        Fault::CutNodeFromMembers { node, inbound_only } => {
            hosts.cut(node, &MEMBERS, *inbound_only);
            vec![node]
        }
        Fault::CutZone(z) => {
            let inside = zone(*z);
            let outside: Vec<&str> = MEMBERS
                .iter()
                .chain(NODES.iter())
                .copied()
                .filter(|s| !inside.contains(s))
                .collect();
            for n in inside {
                hosts.cut(n, &outside, false);
            }
            inside.to_vec()
        }
        Fault::SlowZone(z) => {
            for n in zone(*z) {
                hosts.slow(n, 8, 5);
            }
            zone(*z).to_vec()
        }
        Fault::FillDisk => {
            hosts.fill_small_disk();
            vec![SMALL_DISK.0]
        }
        Fault::VanishDisk { node, disk } => {
            hosts.vanish_disk(node, *disk);
            vec![node]
        }
    };
    Injected { services }
}

/// Heals what `injected` touched.
pub fn heal(hosts: &Hosts, injected: &Injected) {
    for s in &injected.services {
        hosts.heal(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_names_one_schedule_of_faults_that_do_not_overlap() {
        let grace = Duration::from_secs(30);
        let length = Duration::from_secs(600);
        let a = schedule(7, length, grace);
        assert_eq!(a, schedule(7, length, grace));
        assert_ne!(a, schedule(8, length, grace));
        assert!(a.len() > 20, "{}", a.len());
        for pair in a.windows(2) {
            assert!(pair[0].at + pair[0].hold < pair[1].at, "{pair:?}");
        }
        let last = a.last().unwrap();
        assert!(last.at + last.hold <= length);
        // Over a long run every kind comes up, overlapping ones as two plain faults.
        let hour = schedule(1, Duration::from_secs(3600), grace);
        for p in &hour {
            if let Fault::Together(two) = &p.fault {
                assert_eq!(two.len(), 2, "{p:?}");
                assert!(
                    !two.iter().any(|f| matches!(f, Fault::Together(_))),
                    "{p:?}"
                );
            }
        }
        let kinds: std::collections::BTreeSet<&str> = hour.iter().map(|p| p.fault.kind()).collect();
        assert_eq!(kinds.len(), 15, "{kinds:?}");
    }
}
