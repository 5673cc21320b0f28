//! `bitmountain recover scan DISK...`: what a set of disks holds, with no service running
//! (forensics, and the first step of a disaster recovery): every bundle the shards describe,
//! whether it can be read (k shards), which are lost, which are deleted (tombstones), which
//! shard sets are uploads that never committed. Decided by the same plan the recovering
//! metadata group uses (`bitmountain_meta::recovery`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use bitmountain_disk::DiskStore;
use bitmountain_meta::recovery::{plan, PlanParams, RecoveryPlan};

use super::common;
use super::shard::format_labels;
use super::units;

#[derive(Debug, clap::Subcommand)]
pub enum RecoverCommand {
    /// Scan disk directories (shard headers, footers, descriptions, tombstones) and report every
    /// bundle they hold. Reads only; needs no running service. Exits non-zero when a bundle is
    /// lost.
    Scan(ScanArgs),
}

#[derive(Debug, clap::Args)]
pub struct ScanArgs {
    /// Disk directories (each with its `bitmountain-disk.id`), all of one cluster.
    #[arg(required = true, value_name = "DISK")]
    disks: Vec<PathBuf>,
    /// Bundles with too few shards whose id is younger than this are counted as uploads that
    /// never committed rather than lost (the nodes' orphan grace).
    #[arg(long, default_value_t = bitmountain_node::limits::ORPHAN_GRACE_MS)]
    orphan_grace_ms: u64,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(command: RecoverCommand) -> anyhow::Result<()> {
    match command {
        RecoverCommand::Scan(args) => scan(args),
    }
}

fn scan(args: ScanArgs) -> anyhow::Result<()> {
    let mut shards = Vec::new();
    let mut tombstones = Vec::new();
    let mut disks = Vec::new();
    let mut clusters = std::collections::BTreeSet::new();
    for dir in &args.disks {
        let store = DiskStore::open(dir, None)
            .with_context(|| format!("opening disk {}", dir.display()))?;
        let started = std::time::Instant::now();
        let scan = store
            .scan()
            .with_context(|| format!("scanning disk {}", dir.display()))?;
        let scan_ms = started.elapsed().as_secs_f64() * 1000.0;
        clusters.insert(scan.identity.cluster_id.to_string());
        let (s, t) = bitmountain_node::recovery::found(&scan);
        disks.push(serde_json::json!({
            "path": dir.display().to_string(),
            "disk_id": scan.identity.disk_id,
            "cluster_id": scan.identity.cluster_id.to_string(),
            "shards": s.len(),
            "tombstones": t.len(),
            "damaged_tombstone_records": scan.tombstones.damaged_records,
            "scan_ms": scan_ms,
        }));
        shards.extend(s);
        tombstones.extend(t);
    }
    if clusters.len() > 1 {
        bail!(
            "the disks belong to {} clusters ({}); scan each cluster's disks on their own",
            clusters.len(),
            clusters.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    let params = PlanParams {
        now_unix_ms: units::now_unix_ms(),
        orphan_grace_ms: args.orphan_grace_ms,
        chunk_bytes: bitmountain_erasure::code::DEFAULT_CHUNK_BYTES,
    };
    let plan = plan(&shards, &tombstones, params);
    if args.json {
        common::print_json(&plan_json(&plan, disks))?;
    } else {
        print_plan(&plan, disks.len(), shards.len())?;
    }
    if !plan.lost.is_empty() {
        bail!(
            "{} bundles have fewer usable shards than their code needs: {}",
            plan.lost.len(),
            plan.lost
                .iter()
                .map(|b| b.id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn plan_json(plan: &RecoveryPlan, disks: Vec<serde_json::Value>) -> serde_json::Value {
    let unreadable = |b: &bitmountain_meta::recovery::UnreadableBundle| {
        serde_json::json!({
            "id": b.id.to_string(),
            "code": b.code.map(|c| c.to_string()),
            "shards_found": b.found.iter().map(|(s, d)| serde_json::json!({"shard": s, "disk_id": d})).collect::<Vec<_>>(),
            "labels": b.labels,
            "why": b.why,
        })
    };
    serde_json::json!({
        "format": 1,
        "disks": disks,
        "bundles": plan.recovered.iter().map(|b| {
            let r = &b.record;
            serde_json::json!({
                "id": r.id.to_string(),
                "state": if b.missing.is_empty() && b.damaged.is_empty() { "complete" } else { "degraded" },
                "data_shards": r.code.data_shards,
                "parity_shards": r.code.parity_shards,
                "cell_bytes": r.code.cell_bytes,
                "length": r.length,
                "sha256": hex::encode(&r.sha256),
                "index_offset": r.index_offset,
                "index_length": r.index_length,
                "file_count": r.file_count,
                "labels": r.labels,
                "created_unix_ms": r.created_unix_ms,
                "described": !b.without_description,
                "placement": r.placement.iter().enumerate().map(|(i, d)| {
                    if b.missing.contains(&(i as u32)) { serde_json::Value::Null } else { serde_json::json!(d) }
                }).collect::<Vec<_>>(),
                "missing_shards": b.missing,
                "damaged_shards": b.damaged,
                "extra_copies": b.extra.iter().map(|(s, d, why)| serde_json::json!({"shard": s, "disk_id": d, "why": why})).collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
        "lost": plan.lost.iter().map(unreadable).collect::<Vec<_>>(),
        "incomplete_uploads": plan.incomplete.iter().map(unreadable).collect::<Vec<_>>(),
        "deleted": plan.deleted.iter().map(|d| serde_json::json!({
            "id": d.id.to_string(),
            "deleted_unix_ms": d.deleted_unix_ms,
            "shards_found": d.shards_found.len(),
        })).collect::<Vec<_>>(),
        "unreadable_shards": plan.unreadable_shards.iter().map(|(disk, id, why)| serde_json::json!({
            "disk_id": disk, "bundle": id.to_string(), "problem": why,
        })).collect::<Vec<_>>(),
    })
}

fn print_plan(plan: &RecoveryPlan, disks: usize, shards: usize) -> anyhow::Result<()> {
    let mut out = common::stdout();
    writeln!(out, "{disks} disks, {shards} shard files")?;
    for b in &plan.recovered {
        let r = &b.record;
        let health = if b.missing.is_empty() && b.damaged.is_empty() {
            "complete".to_string()
        } else {
            format!(
                "degraded (missing {:?}, damaged {:?})",
                b.missing, b.damaged
            )
        };
        writeln!(
            out,
            "bundle {} {} {} B {} files created {} labels {} {health}{}",
            r.id,
            r.code,
            r.length,
            r.file_count,
            units::time(r.created_unix_ms),
            format_labels(&r.labels),
            if b.without_description {
                " (version-1 shards: no description)"
            } else {
                ""
            }
        )?;
    }
    for b in &plan.lost {
        writeln!(
            out,
            "LOST bundle {} labels {}: {}",
            b.id,
            format_labels(&b.labels),
            b.why
        )?;
    }
    for b in &plan.incomplete {
        writeln!(out, "incomplete upload {}: {}", b.id, b.why)?;
    }
    for d in &plan.deleted {
        writeln!(
            out,
            "deleted bundle {} at {} ({} shards still on disk)",
            d.id,
            units::time(d.deleted_unix_ms),
            d.shards_found.len()
        )?;
    }
    for (disk, id, why) in &plan.unreadable_shards {
        writeln!(out, "unreadable shard of {id} on disk {disk}: {why}")?;
    }
    writeln!(
        out,
        "{} bundles readable, {} lost, {} incomplete uploads, {} deleted",
        plan.recovered.len(),
        plan.lost.len(),
        plan.incomplete.len(),
        plan.deleted.len()
    )?;
    Ok(())
}
