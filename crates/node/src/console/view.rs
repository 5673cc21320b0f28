//! What the web console shows, built from the metadata group's answers. Pure: the page's JSON
//! (`GET /api/console`, format in `docs/formats.md`) is decided here and unit-tested; fetching
//! is `super`'s.

use std::collections::BTreeMap;

use bitmountain_meta_client::types::{
    AuditEvent, BundleCounts, ClusterStatus, DiskInfo, DiskState, NodeInfo, NodeState, RepairStatus,
};
use serde::Serialize;

/// Version of the console's JSON.
pub const CONSOLE_FORMAT: u32 = 1;

/// The whole page's data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsoleView {
    pub format: u32,
    pub cluster_id: String,
    /// The node that answered (its address).
    pub answered_by: String,
    pub generated_unix_ms: u64,
    pub leader_id: u64,
    pub leader_address: String,
    pub term: u64,
    /// The code allocations get when they name none (`k+m`).
    pub default_code: Option<String>,
    /// The live durability model's probability of losing any bundle within a year.
    pub durability_loss_probability_per_year: f64,
    pub bundles: Counts,
    /// Whether the token is limited to labels (then `bundles` counts only what it sees).
    pub scoped: bool,
    /// Nodes and disks by zone (zones by name, nodes by id).
    pub zones: Vec<ZoneView>,
    pub repair: RepairPanel,
    pub audit: AuditPanel,
}

/// Bundles by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pending: u64,
    pub sealed: u64,
    pub deleting: u64,
}

/// One zone's nodes and its totals over disks that hold data (not removed, not failed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ZoneView {
    pub zone: String,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    pub nodes: Vec<NodeView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeView {
    pub id: u64,
    pub address: String,
    pub state: &'static str,
    pub rack: String,
    pub host: String,
    pub last_heartbeat_age_ms: Option<u64>,
    pub disks: Vec<DiskView>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiskView {
    pub id: u64,
    pub path: String,
    pub state: &'static str,
    pub capacity_bytes: u64,
    /// The larger of what the disk reports and what its shards account for.
    pub used_bytes: u64,
    /// `used_bytes / capacity_bytes`, 0 for a disk of no capacity.
    pub fill: f64,
    /// When scrub last finished reading the whole disk (absent: not since its node started).
    pub last_scrub_unix_ms: Option<u64>,
    pub last_scrub_damaged_shards: u64,
}

/// Repair progress, or why it is not shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "shown", rename_all = "snake_case")]
pub enum RepairPanel {
    #[serde(rename = "true")]
    Shown(RepairView),
    #[serde(rename = "false")]
    Hidden { reason: String },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepairView {
    pub queued_bundles: u64,
    pub running_shards: u64,
    pub bytes_per_sec: f64,
    pub queued_bytes: u64,
    /// Time left at the current rate (absent: nothing queued, or nothing finished lately).
    pub eta_ms: Option<u64>,
    pub paused: bool,
    /// Sealed bundles by healthy shards, fewest first; `full` counts those at k+m.
    pub levels: Vec<Level>,
    pub full_redundancy_bundles: u64,
    /// The queue scan stopped at its limit: counts are lower bounds.
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Level {
    pub healthy_shards: u32,
    pub bundles: u64,
}

/// The audit trail's most recent events, newest first, or why they are not shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditPanel {
    pub available: bool,
    /// What the panel shows, or why not.
    pub note: String,
    /// The number of the newest event (0: none, or not shown).
    pub head_seq: u64,
    pub events: Vec<AuditRow>,
}

/// One event as the console shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRow {
    pub seq: u64,
    pub time_unix_ms: u64,
    /// `token:<id> (<name>)`, `system:<component>`, ...
    pub agent: String,
    pub action: String,
    pub object: String,
    pub outcome: String,
    pub detail: String,
}

/// The recent events as the group gave them: (number, stored value), and the head's number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentEvents {
    pub head_seq: u64,
    pub events: Vec<(u64, Vec<u8>)>,
}

/// A node state's name, as `status` prints it.
pub fn node_state_name(state: Option<NodeState>) -> &'static str {
    match state {
        Some(NodeState::Up) => "up",
        Some(NodeState::Down) => "down",
        Some(NodeState::Draining) => "draining",
        Some(NodeState::Removed) => "removed",
        None => "unknown",
    }
}

/// A disk state's name, as `status` prints it.
pub fn disk_state_name(state: Option<DiskState>) -> &'static str {
    match state {
        Some(DiskState::Ok) => "ok",
        Some(DiskState::Failed) => "failed",
        Some(DiskState::Draining) => "draining",
        Some(DiskState::Removed) => "removed",
        None => "unknown",
    }
}

/// What the node knows, for [`build`].
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub status: &'a ClusterStatus,
    /// The caller's counts when its token is scoped (`None`: the cluster's).
    pub scoped_counts: Option<BundleCounts>,
    pub repair: Result<RepairStatus, String>,
    pub audit: Result<RecentEvents, String>,
    pub answered_by: &'a str,
    pub now_unix_ms: u64,
}

/// The console's data from the group's status and repair status.
pub fn build(inputs: Inputs<'_>) -> ConsoleView {
    let s = inputs.status;
    let counts = inputs.scoped_counts.unwrap_or(s.bundles);
    let mut zones: BTreeMap<&str, ZoneView> = BTreeMap::new();
    let mut nodes: Vec<&NodeInfo> = s.nodes.iter().collect();
    nodes.sort_by_key(|n| n.node_id);
    for n in nodes {
        let node = node_view(n);
        let zone = zones.entry(n.zone.as_str()).or_insert_with(|| ZoneView {
            zone: n.zone.clone(),
            capacity_bytes: 0,
            used_bytes: 0,
            nodes: Vec::new(),
        });
        for d in node
            .disks
            .iter()
            .filter(|d| matches!(d.state, "ok" | "draining"))
        {
            zone.capacity_bytes = zone.capacity_bytes.saturating_add(d.capacity_bytes);
            zone.used_bytes = zone.used_bytes.saturating_add(d.used_bytes);
        }
        zone.nodes.push(node);
    }
    ConsoleView {
        format: CONSOLE_FORMAT,
        cluster_id: s.cluster_id.clone(),
        answered_by: inputs.answered_by.to_owned(),
        generated_unix_ms: inputs.now_unix_ms,
        leader_id: s.leader_id,
        leader_address: s.leader_address.clone(),
        term: s.term,
        default_code: s.default_code.map(|c| c.to_string()),
        durability_loss_probability_per_year: s.durability_loss_probability_per_year,
        bundles: Counts {
            pending: counts.pending,
            sealed: counts.sealed,
            deleting: counts.deleting,
        },
        scoped: inputs.scoped_counts.is_some(),
        zones: zones.into_values().collect(),
        repair: match inputs.repair {
            Ok(r) => RepairPanel::Shown(repair_view(&r)),
            Err(reason) => RepairPanel::Hidden { reason },
        },
        audit: audit_panel(inputs.audit),
    }
}

fn audit_panel(recent: Result<RecentEvents, String>) -> AuditPanel {
    let recent = match recent {
        Ok(r) => r,
        Err(note) => {
            return AuditPanel {
                available: false,
                note,
                head_seq: 0,
                events: Vec::new(),
            }
        }
    };
    let mut events: Vec<AuditRow> = recent.events.iter().map(audit_row).collect();
    events.sort_by_key(|e| std::cmp::Reverse(e.seq));
    AuditPanel {
        available: true,
        note: format!(
            "the newest {} of {} events; `bitmountain audit verify` checks the whole chain",
            events.len(),
            recent.head_seq
        ),
        head_seq: recent.head_seq,
        events,
    }
}

/// An event's row; a stored value that does not decode is shown as such (`audit verify`
/// names it too), never skipped.
fn audit_row((seq, value): &(u64, Vec<u8>)) -> AuditRow {
    match AuditEvent::decode(value) {
        Ok(e) => AuditRow {
            seq: e.seq,
            time_unix_ms: e.time_unix_ms,
            agent: e.agent.to_string(),
            action: e.action.as_str().to_owned(),
            object: e.object,
            outcome: e.outcome.as_str().to_owned(),
            detail: e.detail,
        },
        Err(why) => AuditRow {
            seq: *seq,
            time_unix_ms: 0,
            agent: String::new(),
            action: String::new(),
            object: String::new(),
            outcome: "unreadable".into(),
            detail: why,
        },
    }
}

fn node_view(n: &NodeInfo) -> NodeView {
    let mut disks: Vec<DiskView> = n.disks.iter().map(disk_view).collect();
    disks.sort_by_key(|d| d.id);
    NodeView {
        id: n.node_id,
        address: n.address.clone(),
        state: node_state_name(n.state),
        rack: n.rack.clone(),
        host: n.host.clone(),
        last_heartbeat_age_ms: n.last_heartbeat_age_ms,
        disks,
    }
}

fn disk_view(d: &DiskInfo) -> DiskView {
    let used = d.stored_bytes();
    DiskView {
        id: d.disk_id,
        path: d.path.clone(),
        state: disk_state_name(d.state),
        capacity_bytes: d.capacity_bytes,
        used_bytes: used,
        fill: if d.capacity_bytes == 0 {
            0.0
        } else {
            used as f64 / d.capacity_bytes as f64
        },
        last_scrub_unix_ms: (d.last_scrub_unix_ms > 0).then_some(d.last_scrub_unix_ms),
        last_scrub_damaged_shards: d.last_scrub_damaged_shards,
    }
}

fn repair_view(r: &RepairStatus) -> RepairView {
    let degraded: u64 = r.levels.iter().map(|l| l.bundles).sum();
    RepairView {
        queued_bundles: r.queued_bundles,
        running_shards: r.running_shards,
        bytes_per_sec: r.bytes_per_sec,
        queued_bytes: r.queued_bytes,
        eta_ms: (r.eta_ms > 0).then_some(r.eta_ms),
        paused: r.settings.paused,
        levels: r
            .levels
            .iter()
            .map(|l| Level {
                healthy_shards: l.healthy_shards,
                bundles: l.bundles,
            })
            .collect(),
        // Queued bundles include moves of healthy ones; the rest of the sealed are whole.
        full_redundancy_bundles: r.sealed_bundles.saturating_sub(degraded),
        truncated: r.truncated,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use bitmountain_meta_client::types::{RedundancyLevel, RepairSettings};

    fn disk(id: u64, state: DiskState, cap: u64, used: u64, accounted: u64) -> DiskInfo {
        DiskInfo {
            disk_id: id,
            capacity_bytes: cap,
            used_bytes: used,
            accounted_bytes: accounted,
            state: Some(state),
            ..DiskInfo::default()
        }
    }

    fn status() -> ClusterStatus {
        ClusterStatus {
            cluster_id: "c1".into(),
            bundles: BundleCounts {
                pending: 1,
                sealed: 10,
                deleting: 0,
            },
            nodes: vec![
                NodeInfo {
                    node_id: 3,
                    zone: "z2".into(),
                    state: Some(NodeState::Down),
                    disks: vec![disk(7, DiskState::Failed, 100, 90, 0)],
                    ..NodeInfo::default()
                },
                NodeInfo {
                    node_id: 1,
                    zone: "z1".into(),
                    state: Some(NodeState::Up),
                    disks: vec![
                        disk(2, DiskState::Ok, 100, 10, 40),
                        disk(1, DiskState::Ok, 0, 0, 0),
                    ],
                    ..NodeInfo::default()
                },
            ],
            ..ClusterStatus::default()
        }
    }

    fn inputs(s: &ClusterStatus, repair: Result<RepairStatus, String>) -> Inputs<'_> {
        Inputs {
            status: s,
            scoped_counts: None,
            repair,
            audit: Err("no audit".into()),
            answered_by: "n1:7000",
            now_unix_ms: 5,
        }
    }

    #[test]
    fn groups_nodes_by_zone_and_sums_only_disks_that_hold_data() {
        let s = status();
        let v = build(inputs(&s, Err("no".into())));
        let zones: Vec<&str> = v.zones.iter().map(|z| z.zone.as_str()).collect();
        assert_eq!(zones, ["z1", "z2"]);
        let z1 = &v.zones[0];
        assert_eq!((z1.capacity_bytes, z1.used_bytes), (100, 40));
        assert_eq!(
            z1.nodes[0].disks.iter().map(|d| d.id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(z1.nodes[0].disks[1].fill, 0.4);
        assert_eq!(z1.nodes[0].disks[0].fill, 0.0, "no capacity, no division");
        // A failed disk's bytes are not capacity the zone has.
        assert_eq!((v.zones[1].capacity_bytes, v.zones[1].used_bytes), (0, 0));
        assert_eq!(v.zones[1].nodes[0].state, "down");
        assert_eq!(v.zones[1].nodes[0].disks[0].state, "failed");
        assert_eq!(
            v.repair,
            RepairPanel::Hidden {
                reason: "no".into()
            }
        );
    }

    #[test]
    fn a_scoped_token_sees_its_own_counts() {
        let s = status();
        let mut i = inputs(&s, Err(String::new()));
        i.scoped_counts = Some(BundleCounts {
            pending: 0,
            sealed: 2,
            deleting: 0,
        });
        let v = build(i);
        assert!(v.scoped);
        assert_eq!(v.bundles.sealed, 2);
        assert!(!build(inputs(&s, Err(String::new()))).scoped);
    }

    #[test]
    fn repair_levels_and_whole_bundles() {
        let s = status();
        let r = RepairStatus {
            queued_bundles: 3,
            eta_ms: 0,
            levels: vec![
                RedundancyLevel {
                    healthy_shards: 4,
                    bundles: 1,
                },
                RedundancyLevel {
                    healthy_shards: 5,
                    bundles: 2,
                },
            ],
            settings: RepairSettings {
                paused: true,
                ..RepairSettings::default()
            },
            sealed_bundles: 10,
            ..RepairStatus::default()
        };
        let RepairPanel::Shown(v) = build(inputs(&s, Ok(r))).repair else {
            panic!("shown");
        };
        assert_eq!(v.full_redundancy_bundles, 7);
        assert_eq!(v.eta_ms, None, "no rate, no ETA");
        assert!(v.paused);
        let json = serde_json::to_value(build(inputs(&s, Err("x".into())))).unwrap();
        assert_eq!(json["repair"]["shown"], "false");
        assert_eq!(json["format"], CONSOLE_FORMAT);
    }

    #[test]
    fn recent_events_newest_first_and_an_unreadable_one_is_shown() {
        use bitmountain_meta_client::types::{Agent, AuditAction, NewEvent, Outcome};
        let event = |seq: u64, action| {
            let e = NewEvent {
                time_unix_ms: 1_000 + seq,
                agent: Agent::system("repair"),
                action,
                object: format!("disk {seq}"),
                bundle: None,
                outcome: Outcome::Success,
                detail: "ok".into(),
            };
            (seq, AuditEvent::chained(seq, &[0; 32], e, "").encode())
        };
        let s = status();
        let mut i = inputs(&s, Err("no".into()));
        i.audit = Ok(RecentEvents {
            head_seq: 9,
            events: vec![
                event(7, AuditAction::DiskStateChange),
                (8, b"\x09garbage".to_vec()),
                event(9, AuditAction::Replication),
            ],
        });
        let panel = build(i).audit;
        assert!(panel.available);
        assert_eq!(panel.head_seq, 9);
        let seqs: Vec<u64> = panel.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [9, 8, 7]);
        assert_eq!(panel.events[0].agent, Agent::system("repair").to_string());
        assert_eq!(panel.events[0].action, AuditAction::Replication.as_str());
        assert_eq!(panel.events[2].object, "disk 7");
        assert_eq!(panel.events[1].outcome, "unreadable");
        assert!(panel.note.contains("3 of 9"), "{}", panel.note);

        let hidden = build(inputs(&s, Err("x".into()))).audit;
        assert!(!hidden.available && hidden.events.is_empty());
        assert_eq!(hidden.note, "no audit");
    }
}
