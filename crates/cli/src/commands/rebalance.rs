//! `bitmountain rebalance [--max-bytes SIZE] [--dry-run]`: ask the metadata group to plan (and
//! queue) shard moves onto new or emptier disks.

use std::io::Write as _;

use super::common::{self, ClusterArgs};
use super::units;

/// Moves listed one by one; the rest are counted.
const MOVES_SHOWN: usize = 50;

#[derive(Debug, clap::Args)]
pub struct RebalanceArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Most shard bytes to move (e.g. 500G; K, M, G, T are powers of 1024); default: as many
    /// as balance needs.
    #[arg(long, value_parser = units::parse_binary_size)]
    max_bytes: Option<u64>,
    /// Show the moves, queue nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: RebalanceArgs) -> anyhow::Result<()> {
    let (max_bytes, dry_run) = (args.max_bytes.unwrap_or(0), args.dry_run);
    let r = args
        .cluster
        .ask_meta(|meta| async move { Ok(meta.rebalance(max_bytes, dry_run).await?) })?;
    if args.json {
        let moves: Vec<_> = r
            .moves
            .iter()
            .map(|m| {
                serde_json::json!({
                    "bundle_id": m.bundle_id.to_string(),
                    "shard_index": m.shard_index,
                    "from_disk_id": m.from_disk_id,
                    "to_disk_id": m.to_disk_id,
                    "bytes": m.bytes,
                })
            })
            .collect();
        return common::print_json(&serde_json::json!({
            "moves": moves,
            "bytes": r.bytes,
            "queued": r.queued,
        }));
    }
    let mut out = common::stdout();
    for m in r.moves.iter().take(MOVES_SHOWN) {
        writeln!(
            out,
            "  {} shard {:>2}: disk {} → disk {}  ({})",
            m.bundle_id,
            m.shard_index,
            m.from_disk_id,
            m.to_disk_id,
            units::bytes(m.bytes)
        )?;
    }
    if r.moves.len() > MOVES_SHOWN {
        writeln!(out, "  … and {} more", r.moves.len() - MOVES_SHOWN)?;
    }
    let verb = if r.queued {
        "queued"
    } else {
        "planned (dry run)"
    };
    writeln!(
        out,
        "{} moves, {}, {verb}",
        r.moves.len(),
        units::bytes(r.bytes)
    )?;
    if r.queued && !r.moves.is_empty() {
        writeln!(out, "watch them with `bitmountain repair status`")?;
    }
    Ok(())
}
