//! `bitmountain status`: the metadata group and the cluster map as the members see them. The
//! address may be a storage node (it names the metadata leader) or a metadata member.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::Context as _;
use bitmountain_meta::client::member_status;
use bitmountain_meta::types::NodeInfo;
use serde::Serialize;

use super::common::{self, ClusterArgs};
use super::units;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct MemberView {
    id: u64,
    address: String,
    role: String,
    reachable: bool,
    state: Option<String>,
    term: Option<u64>,
    commit_index: Option<u64>,
    applied_index: Option<u64>,
    /// The newest value format the member's binary reads.
    newest_value_format: Option<u32>,
    error: Option<String>,
    /// The member's background workers (failure detector, expiry scan).
    workers: Vec<WorkerView>,
}

/// A background worker of a member or node.
#[derive(Debug, Serialize)]
struct WorkerView {
    name: String,
    state: String,
    steps: u64,
    errors: u64,
    last_run_unix_ms: Option<u64>,
    last_duration_ms: u64,
    last_error: Option<String>,
    last_error_unix_ms: Option<u64>,
    note: String,
}

fn worker_view(w: &bitmountain_meta::types::WorkerReport) -> WorkerView {
    WorkerView {
        name: w.name.clone(),
        state: w.state.clone(),
        steps: w.steps,
        errors: w.errors,
        last_run_unix_ms: (w.last_run_unix_ms > 0).then_some(w.last_run_unix_ms),
        last_duration_ms: w.last_duration_ms,
        last_error: (!w.last_error.is_empty()).then(|| w.last_error.clone()),
        last_error_unix_ms: (w.last_error_unix_ms > 0).then_some(w.last_error_unix_ms),
        note: w.note.clone(),
    }
}

#[derive(Debug, Serialize)]
struct DiskView {
    id: u64,
    path: String,
    state: String,
    capacity_bytes: u64,
    used_bytes: u64,
    accounted_bytes: u64,
    /// When the disk was last fully read and verified by scrub (absent: not since its node
    /// started).
    last_scrub_unix_ms: Option<u64>,
    last_scrub_damaged_shards: u64,
}

#[derive(Debug, Serialize)]
struct NodeView {
    id: u64,
    address: String,
    zone: String,
    rack: String,
    host: String,
    state: String,
    last_heartbeat_age_ms: Option<u64>,
    disks: Vec<DiskView>,
    /// The node's background workers as of its last heartbeat to this leader.
    workers: Vec<WorkerView>,
}

#[derive(Debug, Serialize)]
struct StatusView {
    cluster_id: String,
    answered_by: u64,
    leader_id: u64,
    leader_address: String,
    term: u64,
    commit_index: u64,
    applied_index: u64,
    members: Vec<MemberView>,
    nodes: Vec<NodeView>,
    bundles_pending: u64,
    bundles_sealed: u64,
    bundles_deleting: u64,
    repairs_queued: u64,
    /// The value format the group writes (1 JSON, 2 protobuf).
    value_format: u32,
    /// Modelled probability of losing any bundle within a year (`bitmountain durability
    /// --cluster` shows its inputs); absent when a node answered instead of a member.
    #[serde(skip_serializing_if = "Option::is_none")]
    durability_loss_probability_per_year: Option<f64>,
    /// Set when the metadata members could not be reached from here and a node's view is
    /// shown instead (no member details).
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// A state's name as `--json` and the table show it (`unspecified` when the member sent none
/// this binary knows).
fn name<T: std::fmt::Debug>(v: Option<T>) -> String {
    v.map_or("unspecified".into(), |v| format!("{v:?}").to_lowercase())
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let view = common::client_runtime()?.block_on(async {
        match members_view(&args).await {
            Ok(view) => Ok(view),
            // The members may be out of reach from here (a compose cluster: only a node's
            // port is published); a node answers with the group's view.
            Err(e) => nodes_view(&args).await.map_err(|_| e),
        }
    })?;
    if args.json {
        return common::print_json(&view);
    }
    print_human(&view, &mut common::stdout())?;
    Ok(())
}

/// The cluster as a storage node relays it, when no member can be asked directly.
async fn nodes_view(args: &StatusArgs) -> anyhow::Result<StatusView> {
    let s = args.cluster.archive_client()?.status().await?;
    let nodes = s
        .nodes
        .iter()
        .map(|n| NodeView {
            id: n.node_id,
            address: n.address.clone(),
            zone: n.zone.clone(),
            rack: n.rack.clone(),
            host: n.host.clone(),
            state: n.state.clone(),
            last_heartbeat_age_ms: n.last_heartbeat_age_ms,
            disks: n
                .disks
                .iter()
                .map(|d| DiskView {
                    id: d.disk_id,
                    path: d.path.clone(),
                    state: d.state.clone(),
                    capacity_bytes: d.capacity_bytes,
                    used_bytes: d.used_bytes,
                    accounted_bytes: d.used_bytes,
                    last_scrub_unix_ms: None,
                    last_scrub_damaged_shards: 0,
                })
                .collect(),
            workers: Vec::new(),
        })
        .collect();
    Ok(StatusView {
        cluster_id: s.cluster_id,
        answered_by: 0,
        leader_id: s.meta_leader_id,
        leader_address: s.meta_leader_address.clone(),
        term: s.meta_term,
        commit_index: 0,
        applied_index: 0,
        members: Vec::new(),
        nodes,
        bundles_pending: s.bundles_pending,
        bundles_sealed: s.bundles_sealed,
        bundles_deleting: s.bundles_deleting,
        repairs_queued: s.repairs_queued,
        value_format: 0,
        durability_loss_probability_per_year: None,
        note: Some(format!(
            "the metadata members (leader {}) are not reachable from here; node {} answered",
            s.meta_leader_address, s.answered_by
        )),
    })
}

/// The cluster as the metadata members see it, each member asked for its own progress.
async fn members_view(args: &StatusArgs) -> anyhow::Result<StatusView> {
    {
        let meta_address = args.cluster.metadata_address().await?;
        let creds = args.cluster.credentials()?;
        let first = member_status(&meta_address, &creds, Duration::from_secs(5))
            .await
            .with_context(|| format!("asking metadata member {meta_address} for status"))?;
        // The leader's view has the members' progress; use it when reachable.
        let st = if first.leader_id != 0
            && first.leader_id != first.member_id
            && !first.leader_address.is_empty()
        {
            member_status(&first.leader_address, &creds, Duration::from_secs(2))
                .await
                .unwrap_or(first)
        } else {
            first
        };
        let mut members = Vec::new();
        for m in &st.members {
            let own = member_status(&m.address, &creds, Duration::from_millis(1500)).await;
            members.push(match own {
                Ok(o) => MemberView {
                    id: m.id,
                    address: m.address.clone(),
                    role: m.role.clone(),
                    reachable: true,
                    state: Some(o.role),
                    term: Some(o.term),
                    commit_index: Some(o.commit_index),
                    applied_index: Some(o.applied_index),
                    newest_value_format: Some(o.newest_value_format.max(1)),
                    error: None,
                    workers: o.workers.iter().map(worker_view).collect(),
                },
                Err(e) => MemberView {
                    id: m.id,
                    address: m.address.clone(),
                    role: m.role.clone(),
                    reachable: false,
                    state: None,
                    term: None,
                    commit_index: None,
                    applied_index: None,
                    newest_value_format: None,
                    error: Some(e.to_string()),
                    workers: Vec::new(),
                },
            });
        }
        let counts = st.bundles;
        anyhow::Ok(StatusView {
            cluster_id: st.cluster_id.clone(),
            answered_by: st.member_id,
            leader_id: st.leader_id,
            leader_address: st.leader_address.clone(),
            term: st.term,
            commit_index: st.commit_index,
            applied_index: st.applied_index,
            members,
            nodes: st.nodes.iter().map(node_view).collect(),
            bundles_pending: counts.pending,
            bundles_sealed: counts.sealed,
            bundles_deleting: counts.deleting,
            repairs_queued: st.repairs_queued,
            value_format: st.value_format.max(1),
            durability_loss_probability_per_year: Some(st.durability_loss_probability_per_year),
            note: None,
        })
    }
}

fn node_view(n: &NodeInfo) -> NodeView {
    NodeView {
        id: n.node_id,
        address: n.address.clone(),
        zone: n.zone.clone(),
        rack: n.rack.clone(),
        host: n.host.clone(),
        state: name(n.state),
        last_heartbeat_age_ms: n.last_heartbeat_age_ms,
        disks: n
            .disks
            .iter()
            .map(|x| DiskView {
                id: x.disk_id,
                path: x.path.clone(),
                state: name(x.state),
                capacity_bytes: x.capacity_bytes,
                used_bytes: x.used_bytes,
                accounted_bytes: x.accounted_bytes,
                last_scrub_unix_ms: (x.last_scrub_unix_ms > 0).then_some(x.last_scrub_unix_ms),
                last_scrub_damaged_shards: x.last_scrub_damaged_shards,
            })
            .collect(),
        workers: n.workers.iter().map(worker_view).collect(),
    }
}

fn print_human(v: &StatusView, out: &mut impl Write) -> io::Result<()> {
    let cid = if v.cluster_id.is_empty() {
        "(no node registered yet)"
    } else {
        &v.cluster_id
    };
    writeln!(out, "cluster   {cid}")?;
    if let Some(note) = &v.note {
        writeln!(out, "note      {note}")?;
    }
    if let Some(p) = v.durability_loss_probability_per_year {
        writeln!(
            out,
            "durability P(losing any bundle within a year) = {} (model; its inputs: bitmountain durability --cluster)",
            bitmountain_durability::units::format_sci(p)
        )?;
    }
    if v.leader_id == 0 {
        writeln!(
            out,
            "leader    none known (election in progress or no quorum)"
        )?;
    } else {
        writeln!(
            out,
            "leader    member {} at {}  term {}  commit {}  applied {}",
            v.leader_id, v.leader_address, v.term, v.commit_index, v.applied_index
        )?;
    }
    writeln!(out, "format    values in format {}", v.value_format)?;
    writeln!(out)?;
    print_members(&v.members, out)?;
    writeln!(out)?;
    print_nodes(&v.nodes, out)?;
    writeln!(out)?;
    writeln!(
        out,
        "bundles   pending {}  sealed {}  deleting {}    repairs queued {}",
        v.bundles_pending, v.bundles_sealed, v.bundles_deleting, v.repairs_queued
    )?;
    print_worker_errors(v, out)
}

/// Workers whose last step failed, by process (all workers are in `--json`).
fn print_worker_errors(v: &StatusView, out: &mut impl Write) -> io::Result<()> {
    let members = v
        .members
        .iter()
        .map(|m| (format!("member {}", m.id), &m.workers));
    let nodes = v
        .nodes
        .iter()
        .map(|n| (format!("node {}", n.id), &n.workers));
    let now_ms = bitmountain_meta::types::now_unix_ms();
    for (process, workers) in members.chain(nodes) {
        for w in workers {
            let (Some(error), Some(at)) = (&w.last_error, w.last_error_unix_ms) else {
                continue;
            };
            // Only errors no later step has succeeded past.
            if w.last_run_unix_ms.is_some_and(|run| run > at) {
                continue;
            }
            let ago = units::duration(Duration::from_millis(now_ms.saturating_sub(at)));
            writeln!(out, "worker    {process} {}: {error} ({ago} ago)", w.name)?;
        }
    }
    Ok(())
}

fn print_members(members: &[MemberView], out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>4}  {:<22} {:<8} {:<14} {:>6} {:>10} {:>10}",
        "ID", "ADDRESS", "ROLE", "STATE", "TERM", "COMMIT", "APPLIED"
    )?;
    let opt = |x: Option<u64>| x.map_or("-".to_string(), |v| v.to_string());
    for m in members {
        writeln!(
            out,
            "{:>4}  {:<22} {:<8} {:<14} {:>6} {:>10} {:>10}",
            m.id,
            m.address,
            m.role,
            m.state.as_deref().unwrap_or("unreachable"),
            opt(m.term),
            opt(m.commit_index),
            opt(m.applied_index)
        )?;
    }
    Ok(())
}

fn print_nodes(nodes: &[NodeView], out: &mut impl Write) -> io::Result<()> {
    let disks = nodes.iter().flat_map(|n| &n.disks);
    let capacity: u64 = disks.clone().map(|d| d.capacity_bytes).sum();
    let placed: u64 = disks.clone().map(|d| d.accounted_bytes).sum();
    writeln!(
        out,
        "nodes     {}    disks {}    capacity {}    shard bytes placed {}",
        nodes.len(),
        disks.count(),
        units::bytes(capacity),
        units::bytes(placed)
    )?;
    let now_ms = bitmountain_meta::types::now_unix_ms();
    let ago = |ms: u64| units::duration(Duration::from_millis(ms));
    for n in nodes {
        let hb = n
            .last_heartbeat_age_ms
            .map_or("no heartbeat seen by this leader".to_string(), |a| {
                format!("heartbeat {} ago", ago(a))
            });
        writeln!(
            out,
            "  node {:<4} {:<22} {:<8} {}/{}/{}  {hb}",
            n.id, n.address, n.state, n.zone, n.rack, n.host
        )?;
        for d in &n.disks {
            let scrub = match d.last_scrub_unix_ms {
                Some(at) => format!(
                    "verified {} ago ({} damaged)",
                    ago(now_ms.saturating_sub(at)),
                    d.last_scrub_damaged_shards
                ),
                None => "not scrubbed yet".into(),
            };
            writeln!(
                out,
                "    disk {:<4} {:<8} {:>10} capacity {:>10} used {:>10} placed  {}  {scrub}",
                d.id,
                d.state,
                units::bytes(d.capacity_bytes),
                units::bytes(d.used_bytes),
                units::bytes(d.accounted_bytes),
                d.path
            )?;
        }
    }
    Ok(())
}
