//! `bitmountain repair status|throttle`: the metadata group's repair queue and progress, and the
//! throttles every node's repair worker follows.

use std::io::{self, Write};
use std::time::Duration;

use bitmountain_meta::types::{RepairSettings, RepairStatus};
use serde::Serialize;

use super::common::{self, ClusterArgs};
use super::units;

#[derive(Debug, clap::Subcommand)]
pub enum RepairCommand {
    /// Queued, running and finished repairs, the repair rate, the ETA, and how many bundles are
    /// at each level of remaining redundancy.
    Status {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change the repair throttles (they apply at once on every node).
    Throttle {
        #[command(flatten)]
        cluster: ClusterArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Repairs one node runs at once.
        #[arg(long)]
        max_per_node: Option<u32>,
        /// Bytes per second one node writes repaired shards at, e.g. 50000000 or 50MB/s
        /// (0: unlimited).
        #[arg(long, value_parser = units::parse_size)]
        bytes_per_sec: Option<u64>,
        /// Hand out no new repairs (maintenance); running ones finish.
        #[arg(long, conflicts_with = "resume")]
        pause: bool,
        /// Hand out repairs again.
        #[arg(long)]
        resume: bool,
    },
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

fn repair_view(r: &RepairStatus) -> RepairStatusView {
    let settings = r.settings;
    RepairStatusView {
        queued_bundles: r.queued_bundles,
        running_shards: r.running_shards,
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

/// A per-node write limit, where 0 means none.
fn limit(bytes_per_sec: u64) -> String {
    if bytes_per_sec == 0 {
        "unlimited".to_string()
    } else {
        units::bytes_per_sec(bytes_per_sec as f64)
    }
}

fn print_repair_status(v: &RepairStatusView, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "repairs   queued {} bundles ({} of shards)   running {} shards",
        v.queued_bundles,
        units::bytes(v.queued_bytes),
        v.running_shards
    )?;
    writeln!(
        out,
        "done      {} shards, {} since the cluster was created",
        v.shards_repaired,
        units::bytes(v.bytes_repaired)
    )?;
    let eta = if v.eta_ms > 0 {
        units::duration(Duration::from_millis(v.eta_ms))
    } else if v.queued_bundles == 0 {
        "nothing to do".into()
    } else {
        "unknown (no repair finished in the last minute)".into()
    };
    writeln!(
        out,
        "rate      {} over the last minute   ETA {eta}",
        units::bytes_per_sec(v.bytes_per_sec)
    )?;
    writeln!(
        out,
        "throttle  {} repairs per node, {} per node{}",
        v.max_repairs_per_node,
        limit(v.repair_bytes_per_sec_limit),
        if v.paused {
            "   PAUSED: no new repairs start (`bitmountain repair throttle --resume`)"
        } else {
            ""
        }
    )?;
    writeln!(out, "redundancy")?;
    let queued: u64 = v.queued_by_healthy_shards.iter().map(|(_, n)| n).sum();
    for (healthy, bundles) in &v.queued_by_healthy_shards {
        writeln!(out, "  {bundles:>10} bundles with {healthy} healthy shards")?;
    }
    writeln!(
        out,
        "  {:>10} sealed bundles with every shard healthy{}",
        v.sealed_bundles.saturating_sub(queued),
        if v.counts_are_lower_bounds {
            " (queue scan stopped at its limit: figures are lower bounds)"
        } else {
            ""
        }
    )
}

pub fn run(cmd: RepairCommand) -> anyhow::Result<()> {
    match cmd {
        RepairCommand::Status { cluster, json } => {
            let r = cluster.ask_meta(|meta| async move { Ok(meta.repair_status().await?) })?;
            let view = repair_view(&r);
            if json {
                return common::print_json(&view);
            }
            print_repair_status(&view, &mut common::stdout())?;
            Ok(())
        }
        RepairCommand::Throttle {
            cluster,
            json,
            max_per_node,
            bytes_per_sec,
            pause,
            resume,
        } => {
            anyhow::ensure!(max_per_node != Some(0), "--max-per-node must be at least 1");
            let now = cluster.ask_meta(|meta| async move {
                let current = meta.repair_status().await?.settings;
                let wanted = RepairSettings {
                    max_repairs_per_node: max_per_node.unwrap_or(current.max_repairs_per_node),
                    bytes_per_sec: bytes_per_sec.unwrap_or(current.bytes_per_sec),
                    paused: (current.paused || pause) && !resume,
                };
                Ok(meta.set_repair_settings(wanted).await?)
            })?;
            if json {
                return common::print_json(&now);
            }
            writeln!(
                common::stdout(),
                "repair throttles: {} repairs per node, {} per node{}",
                now.max_repairs_per_node,
                limit(now.bytes_per_sec),
                if now.paused { "; PAUSED" } else { "" }
            )?;
            Ok(())
        }
    }
}
