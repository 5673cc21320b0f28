//! `bitmountain disk fail|drain|remove|ok ID`: change a disk's state through the metadata
//! group, which queues the repairs or moves that follow.

use std::io::Write as _;

use anyhow::Context as _;
use bitmountain_meta::types::DiskState;

use super::common::{self, TargetArgs};

#[derive(Debug, clap::Subcommand)]
pub enum DiskCommand {
    /// Mark a disk failed: its shards are rebuilt elsewhere.
    Fail(TargetArgs),
    /// Move every shard off the disk (copy, verify, commit, delete); it takes no new shards.
    Drain(TargetArgs),
    /// Remove an empty disk from the cluster (refused while it holds shards).
    Remove(TargetArgs),
    /// Mark a disk healthy again (after a false alarm, or to stop a drain).
    Ok(TargetArgs),
}

pub fn run(cmd: DiskCommand) -> anyhow::Result<()> {
    let (target, state) = match cmd {
        DiskCommand::Fail(target) => (target, DiskState::Failed),
        DiskCommand::Drain(target) => (target, DiskState::Draining),
        DiskCommand::Remove(target) => (target, DiskState::Removed),
        DiskCommand::Ok(target) => (target, DiskState::Ok),
    };
    let id = target.id;
    let repairs_queued = target.cluster.ask_meta(|meta| async move {
        meta.set_disk_state(id, state)
            .await
            .with_context(|| format!("setting disk {id} {state:?}"))
    })?;
    let name = format!("{state:?}").to_lowercase();
    if target.json {
        return common::print_json(&serde_json::json!({
            "disk_id": id,
            "state": name,
            "repairs_queued": repairs_queued,
        }));
    }
    writeln!(
        common::stdout(),
        "disk {id} is now {name}; {repairs_queued} bundles queued for repair or moves"
    )?;
    Ok(())
}
