//! `bitmountain meta recover`: rebuild a lost metadata group from the nodes' disks, optionally
//! starting from a backup (`--from`); `meta recover finish` ends the recovery with the disks
//! reported so far; `meta recover status` shows where it stands and its report.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use bitmountain_meta::recovery::RecoveryReport;
use bitmountain_meta::server::{RecoveryRequest, RECOVERY_REQUEST_FILE};

use super::common::{self, ClusterArgs};
use super::meta::MetaArgs;
use super::units;

/// `bitmountain meta recover ...`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RecoverCli {
    #[command(subcommand)]
    pub action: Option<RecoverAction>,
    #[command(flatten)]
    pub run: RecoverArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum RecoverAction {
    /// End the recovery now, with the disks reported so far (the others' bundles stay unknown).
    Finish(StatusArgs),
    /// Where the recovery stands, and the last recovery's report.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RecoverArgs {
    /// Start from this backup (`meta backup`): bundles newer than it are added from the disks,
    /// bundles whose shards are all gone are reported.
    #[arg(long, value_name = "BACKUP")]
    from: Option<PathBuf>,
    #[command(flatten)]
    meta: MetaArgs,
}

pub fn run(cli: RecoverCli) -> anyhow::Result<()> {
    match cli.action {
        Some(RecoverAction::Finish(args)) => status(args, true),
        Some(RecoverAction::Status(args)) => status(args, false),
        None => start(cli.run),
    }
}

fn start(args: RecoverArgs) -> anyhow::Result<()> {
    let meta = args.meta;
    let (Some(data), Some(listen)) = (meta.data.clone(), meta.listen) else {
        bail!("--data and --listen are required");
    };
    let address = meta.advertise.clone().unwrap_or_else(|| listen.to_string());
    if !meta.bootstrap.is_empty() {
        bail!("meta recover makes a group of one member; add others later with `member add`");
    }
    let exists = bitmountain_raftstore::Engine::exists(&data);
    if exists && !data.join(RECOVERY_REQUEST_FILE).exists() {
        bail!(
            "{} already holds a member: a recovery starts from an empty data directory (a \
             member that was recovering resumes with `bitmountain meta --data {}`)",
            data.display(),
            data.display()
        );
    }
    if !exists {
        let Some(id) = meta.id else {
            bail!("--id is required for a new member");
        };
        let backup_unix_ms = match &args.from {
            Some(file) => {
                let (header, records) =
                    super::meta_backup::restore_into(file, &data, id, &address)?;
                eprintln!(
                    "restored the backup of cluster {} taken {} ({records} records)",
                    header.cluster_id,
                    units::time(header.created_unix_ms)
                );
                header.created_unix_ms.max(1)
            }
            None => {
                let mut members = bitmountain_raftstore::Members::new();
                members.insert(id, address.clone());
                bitmountain_raftstore::prepare(&data, Some(id), Some(&members))
                    .with_context(|| format!("creating a new group in {}", data.display()))?;
                0
            }
        };
        RecoveryRequest {
            id: super::shard::random_bundle_id().to_hex(),
            backup_unix_ms,
        }
        .write(&data)
        .with_context(|| format!("writing the recovery request into {}", data.display()))?;
    }
    eprintln!(
        "recovery mode: start the storage nodes with --meta {address}; the group leaves recovery \
         once every registered disk has reported (`bitmountain meta recover status`)"
    );
    super::meta::serve(meta)
}

fn status(args: StatusArgs, finish: bool) -> anyhow::Result<()> {
    let s = args
        .cluster
        .ask_meta(|client| async move { Ok(client.recovery(finish).await?) })?;
    let report: Option<RecoveryReport> = if s.report_json.is_empty() {
        None
    } else {
        Some(serde_json::from_str(&s.report_json).context("the member's recovery report")?)
    };
    if args.json {
        return common::print_json(&serde_json::json!({
            "active": s.active,
            "started_unix_ms": s.started_unix_ms,
            "disks_registered": s.disks_registered,
            "disks_reported": s.disks_reported,
            "shards_found": s.shards_found,
            "tombstones_found": s.tombstones_found,
            "report": report,
        }));
    }
    let mut out = common::stdout();
    if s.active {
        writeln!(
            out,
            "recovering since {}: {} of {} disks reported, {} shards and {} tombstones found",
            units::time(s.started_unix_ms),
            s.disks_reported.len(),
            s.disks_registered.len(),
            s.shards_found,
            s.tombstones_found
        )?;
    } else {
        writeln!(out, "not recovering")?;
    }
    if let Some(r) = report {
        writeln!(
            out,
            "last recovery ({} to {}{}): {} bundles recovered ({} not in the backup, {} queued \
             for repair), {} lost, {} deleted, {} incomplete uploads ignored, {} unreadable \
             shard files; {} backup bundles without any shard",
            units::time(r.started_unix_ms),
            units::time(r.finished_unix_ms),
            if r.forced { ", finished by hand" } else { "" },
            r.recovered,
            r.added,
            r.queued_for_repair,
            r.lost_count,
            r.deleted,
            r.incomplete_uploads,
            r.unreadable_shards,
            r.without_shards_count
        )?;
        for l in &r.lost {
            writeln!(
                out,
                "LOST {} ({}): {}",
                l.id,
                super::shard::format_labels(&l.labels),
                l.why
            )?;
        }
    }
    Ok(())
}
