//! Operator commands of self-healing: `repair status|throttle`, `disk fail|drain|remove|ok`,
//! `node drain|remove|up`, `scrub`, `rebalance`. Each takes `--cluster` (a storage node or a
//! metadata member) and talks to the metadata leader; `scrub` also asks the nodes themselves.

use std::time::Duration;

use anyhow::Context as _;
use bitmountain_meta::types::{DiskState, NodeState, RepairSettings};
use bitmountain_meta::{BundleId, MetaClient};
use bitmountain_proto::v1 as pb;
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Any storage node or metadata member (host:port).
    #[arg(long, env = "BITMOUNTAIN_CLUSTER", default_value = super::archive::DEFAULT_CLUSTER)]
    cluster: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum RepairCommand {
    /// Queued, running and finished repairs, the repair rate, the ETA, and how many bundles are
    /// at each level of remaining redundancy.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Change the repair throttles (they apply at once on every node).
    Throttle {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Repairs one node runs at once.
        #[arg(long)]
        max_per_node: Option<u32>,
        /// Bytes per second one node writes repaired shards at (0: unlimited).
        #[arg(long)]
        bytes_per_sec: Option<u64>,
        /// Hand out no new repairs (maintenance); running ones finish.
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        /// Hand out repairs again.
        #[arg(long)]
        resume: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum DiskCommand {
    /// Mark a disk failed: its shards are rebuilt elsewhere.
    Fail {
        #[command(flatten)]
        cluster: ClusterArgs,
        id: u64,
    },
    /// Move every shard off the disk (copy, verify, commit, delete); it takes no new shards.
    Drain {
        #[command(flatten)]
        cluster: ClusterArgs,
        id: u64,
    },
    /// Remove an empty disk from the cluster (refused while it holds shards).
    Remove {
        #[command(flatten)]
        cluster: ClusterArgs,
        id: u64,
    },
    /// Mark a disk healthy again (after a false alarm, or to stop a drain).
    Ok {
        #[command(flatten)]
        cluster: ClusterArgs,
        id: u64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeAction {
    /// Move every shard off the node's disks; then `node remove` succeeds.
    Drain {
        #[command(flatten)]
        cluster: ClusterArgs,
        id: u64,
    },
    /// Remove an empty node from the cluster (refused while it holds shards).
    Remove {
        #[command(flatten)]
        cluster: ClusterArgs,
        id: u64,
    },
    /// Mark a node up (stops a drain).
    Up {
        #[command(flatten)]
        cluster: ClusterArgs,
        id: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Only this node (default: every node that is up).
    #[arg(long)]
    node: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct RebalanceArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Most shard bytes to move (e.g. 500G); default: as many as balance needs.
    #[arg(long, value_parser = parse_bytes)]
    max_bytes: Option<u64>,
    /// Show the moves, queue nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `123`, `4K`, `5M`, `6G`, `7T` (powers of 1024).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes such as 500G"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        other => return Err(format!("{other:?}: unit must be K, M, G or T")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} does not fit in 64 bits"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn meta(cluster: &ClusterArgs) -> anyhow::Result<MetaClient> {
    let address = super::status::metadata_address(&cluster.cluster).await?;
    Ok(MetaClient::new([address])?.with_timeout(Duration::from_secs(30)))
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[derive(Debug, Serialize)]
struct RepairStatusView {
    queued_bundles: u64,
    running_shards: u64,
    shards_repaired: u64,
    bytes_repaired: u64,
    bytes_per_sec: f64,
    queued_bytes: u64,
    eta_ms: u64,
    sealed_bundles: u64,
    /// Healthy shards → bundles in the queue.
    queued_by_healthy_shards: Vec<(u32, u64)>,
    max_repairs_per_node: u32,
    repair_bytes_per_sec_limit: u64,
    paused: bool,
    counts_are_lower_bounds: bool,
}

fn repair_view(r: &pb::RepairStatusResponse) -> RepairStatusView {
    let settings = RepairSettings::from_proto(r.settings.as_ref());
    RepairStatusView {
        queued_bundles: r.queued,
        running_shards: r.running,
        shards_repaired: r.shards_repaired,
        bytes_repaired: r.bytes_repaired,
        bytes_per_sec: r.bytes_per_sec,
        queued_bytes: r.queued_bytes,
        eta_ms: r.eta_ms,
        sealed_bundles: r.sealed_bundles,
        queued_by_healthy_shards: r
            .levels
            .iter()
            .map(|l| (l.healthy_shards, l.bundles))
            .collect(),
        max_repairs_per_node: settings.max_repairs_per_node,
        repair_bytes_per_sec_limit: settings.bytes_per_sec,
        paused: settings.paused,
        counts_are_lower_bounds: r.truncated,
    }
}

fn print_repair_status(v: &RepairStatusView) {
    println!(
        "repairs   queued {} bundles ({} B of shards)   running {} shards",
        v.queued_bundles, v.queued_bytes, v.running_shards
    );
    println!(
        "done      {} shards, {} B since the cluster was created",
        v.shards_repaired, v.bytes_repaired
    );
    let eta = if v.eta_ms > 0 {
        format!("{:.0} s", v.eta_ms as f64 / 1000.0)
    } else if v.queued_bundles == 0 {
        "nothing to do".into()
    } else {
        "unknown (no repair finished in the last minute)".into()
    };
    println!(
        "rate      {:.1} MiB/s over the last minute   ETA {eta}",
        v.bytes_per_sec / (1 << 20) as f64
    );
    let limit = if v.repair_bytes_per_sec_limit == 0 {
        "unlimited".to_string()
    } else {
        format!("{} B/s", v.repair_bytes_per_sec_limit)
    };
    println!(
        "throttle  {} repairs per node, {limit} per node{}",
        v.max_repairs_per_node,
        if v.paused {
            "   PAUSED: no new repairs start (`bitmountain repair throttle --resume`)"
        } else {
            ""
        }
    );
    println!("redundancy");
    let queued: u64 = v.queued_by_healthy_shards.iter().map(|(_, n)| n).sum();
    for (healthy, bundles) in &v.queued_by_healthy_shards {
        println!("  {bundles:>10} bundles with {healthy} healthy shards");
    }
    println!(
        "  {:>10} sealed bundles with every shard healthy{}",
        v.sealed_bundles.saturating_sub(queued),
        if v.counts_are_lower_bounds {
            " (queue scan stopped at its limit: figures are lower bounds)"
        } else {
            ""
        }
    );
}

pub fn repair(cmd: RepairCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match cmd {
            RepairCommand::Status { cluster } => {
                let r = meta(&cluster).await?.repair_status().await?;
                let view = repair_view(&r);
                if cluster.json {
                    return print_json(&view);
                }
                print_repair_status(&view);
                Ok(())
            }
            RepairCommand::Throttle {
                cluster,
                max_per_node,
                bytes_per_sec,
                pause,
                resume,
            } => {
                anyhow::ensure!(max_per_node != Some(0), "--max-per-node must be at least 1");
                let client = meta(&cluster).await?;
                let current =
                    RepairSettings::from_proto(client.repair_status().await?.settings.as_ref());
                let wanted = RepairSettings {
                    max_repairs_per_node: max_per_node.unwrap_or(current.max_repairs_per_node),
                    bytes_per_sec: bytes_per_sec.unwrap_or(current.bytes_per_sec),
                    paused: (current.paused || pause) && !resume,
                };
                let now = client.set_repair_settings(wanted).await?;
                if cluster.json {
                    return print_json(&now);
                }
                println!(
                    "repair throttles: {} repairs per node, {} B/s per node (0: unlimited){}",
                    now.max_repairs_per_node,
                    now.bytes_per_sec,
                    if now.paused { "; PAUSED" } else { "" }
                );
                Ok(())
            }
        }
    })
}

pub fn disk(cmd: DiskCommand) -> anyhow::Result<()> {
    let (cluster, id, state) = match cmd {
        DiskCommand::Fail { cluster, id } => (cluster, id, DiskState::Failed),
        DiskCommand::Drain { cluster, id } => (cluster, id, DiskState::Draining),
        DiskCommand::Remove { cluster, id } => (cluster, id, DiskState::Removed),
        DiskCommand::Ok { cluster, id } => (cluster, id, DiskState::Ok),
    };
    runtime()?.block_on(async {
        let r = meta(&cluster)
            .await?
            .set_disk_state(id, state)
            .await
            .with_context(|| format!("setting disk {id} {state:?}"))?;
        if cluster.json {
            return print_json(&serde_json::json!({
                "disk_id": id,
                "state": format!("{state:?}").to_lowercase(),
                "repairs_queued": r.repairs_queued,
            }));
        }
        println!(
            "disk {id} is now {}; {} bundles queued for repair or moves",
            format!("{state:?}").to_lowercase(),
            r.repairs_queued
        );
        Ok(())
    })
}

pub fn node(cmd: NodeAction) -> anyhow::Result<()> {
    let (cluster, id, state) = match cmd {
        NodeAction::Drain { cluster, id } => (cluster, id, NodeState::Draining),
        NodeAction::Remove { cluster, id } => (cluster, id, NodeState::Removed),
        NodeAction::Up { cluster, id } => (cluster, id, NodeState::Up),
    };
    runtime()?.block_on(async {
        meta(&cluster)
            .await?
            .set_node_state(id, state)
            .await
            .with_context(|| format!("setting node {id} {state:?}"))?;
        let name = format!("{state:?}").to_lowercase();
        if cluster.json {
            return print_json(&serde_json::json!({ "node_id": id, "state": name }));
        }
        println!("node {id} is now {name}");
        if state == NodeState::Draining {
            println!("watch `bitmountain repair status`; once `bitmountain status` shows its disks empty, run `bitmountain node remove {id}`");
        }
        Ok(())
    })
}

pub fn scrub(args: ScrubArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let status = meta(&args.cluster).await?.cluster_status().await?;
        let nodes: Vec<&pb::NodeInfo> = status
            .nodes
            .iter()
            .filter(|n| args.node.is_none_or(|id| id == n.node_id))
            .filter(|n| args.node.is_some() || n.state() == pb::NodeState::Up)
            .collect();
        if let Some(id) = args.node {
            anyhow::ensure!(
                !nodes.is_empty(),
                "node {id} is not in the cluster map (see `bitmountain status`)"
            );
        }
        let mut results = Vec::new();
        for n in nodes {
            let outcome = start_scrub(&n.address).await;
            if !args.cluster.json {
                match &outcome {
                    Ok(true) => println!("node {} ({}): scrub pass started", n.node_id, n.address),
                    Ok(false) => println!(
                        "node {} ({}): a scrub pass is already running",
                        n.node_id, n.address
                    ),
                    Err(e) => println!("node {} ({}): {e:#}", n.node_id, n.address),
                }
            }
            results.push(serde_json::json!({
                "node_id": n.node_id,
                "started": outcome.as_ref().ok().copied(),
                "error": outcome.err().map(|e| format!("{e:#}")),
            }));
        }
        if args.cluster.json {
            return print_json(&results);
        }
        println!("`bitmountain status` shows when each disk was last fully verified");
        Ok(())
    })
}

async fn start_scrub(address: &str) -> anyhow::Result<bool> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .context("node address")?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("connecting to node {address} (is it running?)"))?;
    let r = pb::node_service_client::NodeServiceClient::new(channel)
        .start_scrub(pb::StartScrubRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    Ok(r.into_inner().started)
}

pub fn rebalance(args: RebalanceArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let r = meta(&args.cluster)
            .await?
            .rebalance(args.max_bytes.unwrap_or(0), args.dry_run)
            .await?;
        if args.cluster.json {
            let moves: Vec<_> = r
                .moves
                .iter()
                .map(|m| {
                    serde_json::json!({
                        "bundle_id": BundleId::from_proto(m.bundle_id.as_ref()).map(|b| b.to_string()).unwrap_or_default(),
                        "shard_index": m.shard_index,
                        "from_disk_id": m.from_disk_id,
                        "to_disk_id": m.to_disk_id,
                        "bytes": m.bytes,
                    })
                })
                .collect();
            return print_json(&serde_json::json!({
                "moves": moves,
                "bytes": r.bytes,
                "queued": r.queued,
            }));
        }
        for m in r.moves.iter().take(50) {
            let id = BundleId::from_proto(m.bundle_id.as_ref())
                .map(|b| b.to_string())
                .unwrap_or_default();
            println!(
                "  {id} shard {:>2}: disk {} → disk {}  ({} B)",
                m.shard_index, m.from_disk_id, m.to_disk_id, m.bytes
            );
        }
        if r.moves.len() > 50 {
            println!("  … and {} more", r.moves.len() - 50);
        }
        let verb = if r.queued { "queued" } else { "planned (dry run)" };
        println!("{} moves, {} B, {verb}", r.moves.len(), r.bytes);
        if r.queued && !r.moves.is_empty() {
            println!("watch them with `bitmountain repair status`");
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_bytes("123"), Ok(123));
        assert_eq!(parse_bytes("4K"), Ok(4096));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1t"), Ok(1 << 40));
        assert!(parse_bytes("x").is_err());
        assert!(parse_bytes("5Q").is_err());
        assert!(parse_bytes("99999999999T").is_err());
    }
}
