//! `bitmountain node`: run a storage node (`node --data DIR ...`), or change a node's state
//! (`node drain|remove|up ID`) through the metadata group.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bitmountain_meta::types::NodeState;
use bitmountain_node::NodeConfig;

use super::common::{self, TargetArgs};
use super::credentials::ServeTlsArgs;

/// `bitmountain node ...`: run a storage node, or (with a subcommand) change a node's state.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct NodeCli {
    #[command(subcommand)]
    pub action: Option<NodeAction>,
    #[command(flatten)]
    pub run: NodeArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeAction {
    /// Move every shard off the node's disks; then `node remove` succeeds.
    Drain(TargetArgs),
    /// Remove an empty node from the cluster (refused while it holds shards).
    Remove(TargetArgs),
    /// Mark a node up (stops a drain).
    Up(TargetArgs),
}

#[derive(Debug, clap::Args)]
pub struct NodeArgs {
    /// The node's own state directory (node id, the disks it serves).
    #[arg(long, required = true)]
    data: Option<PathBuf>,
    /// A disk directory (repeatable). An empty directory becomes a new disk of the cluster; a
    /// directory without this cluster's identity file is refused.
    #[arg(long = "disk", required = true)]
    disks: Vec<PathBuf>,
    /// Address to serve on (the public API and the node-to-node API share it).
    #[arg(long, required = true)]
    listen: Option<SocketAddr>,
    /// Address others reach this node at, if not --listen.
    #[arg(long)]
    advertise: Option<String>,
    /// Metadata group members: ADDR[,ADDR...].
    #[arg(long, value_delimiter = ',', required = true)]
    meta: Vec<String>,
    /// Failure-domain zone.
    #[arg(long, default_value = "")]
    zone: String,
    /// Failure-domain rack.
    #[arg(long, default_value = "")]
    rack: String,
    /// Failure-domain host (default: one per node).
    #[arg(long, default_value = "")]
    host: String,
    /// Interval between heartbeats to the metadata group.
    #[arg(long, default_value_t = bitmountain_node::limits::HEARTBEAT_INTERVAL_MS)]
    heartbeat_interval_ms: u64,
    /// Interval between garbage-collection passes.
    #[arg(long, default_value_t = bitmountain_node::limits::GC_INTERVAL_MS)]
    gc_interval_ms: u64,
    /// Shards of bundles the metadata group does not know are deleted this long after the
    /// bundle's allocation time.
    #[arg(long, default_value_t = bitmountain_node::limits::ORPHAN_GRACE_MS)]
    orphan_grace_ms: u64,
    /// An upload whose client sends nothing for this long is abandoned.
    #[arg(long, default_value_t = bitmountain_node::limits::CLIENT_IDLE_TIMEOUT_MS)]
    upload_idle_timeout_ms: u64,
    /// Most files in one uploaded bundle.
    #[arg(long, default_value_t = bitmountain_node::limits::MAX_FILES_PER_UPLOAD)]
    max_files_per_bundle: u64,
    /// Time between the starts of two scrub passes over the node's disks.
    #[arg(long, default_value_t = bitmountain_node::limits::SCRUB_INTERVAL_MS)]
    scrub_interval_ms: u64,
    /// Shard bytes per second a scrub pass reads (0: unlimited).
    #[arg(long, default_value_t = bitmountain_node::limits::SCRUB_BYTES_PER_SEC)]
    scrub_bytes_per_sec: u64,
    /// Every bundle whose shard 0 is on this node is read back against its ingest digests once
    /// within this time (`90d`, `12h`), paced over it; each check is audited.
    #[arg(long, default_value = "90d", value_parser = humantime::parse_duration)]
    fixity_interval: Duration,
    /// Bundle bytes per second the fixity pass reads (0: unlimited).
    #[arg(long, default_value_t = bitmountain_node::limits::FIXITY_BYTES_PER_SEC)]
    fixity_bytes_per_sec: u64,
    /// Shard files the placement does not name here are deleted this long after their last
    /// write.
    #[arg(long, default_value_t = bitmountain_node::limits::STALE_COPY_GRACE_MS)]
    stale_copy_grace_ms: u64,
    #[command(flatten)]
    tls: ServeTlsArgs,
    /// Serve Prometheus metrics (`/metrics`), `/healthz` and `/readyz` over HTTP here.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

impl NodeArgs {
    pub fn config(self) -> anyhow::Result<NodeConfig> {
        let (Some(data), Some(listen)) = (self.data, self.listen) else {
            anyhow::bail!("a node needs --data DIR and --listen ADDR");
        };
        anyhow::ensure!(
            !self.disks.is_empty(),
            "a node needs at least one --disk DIR"
        );
        anyhow::ensure!(!self.meta.is_empty(), "a node needs --meta ADDR[,ADDR...]");
        let tls = self.tls.tls(bitmountain_auth::PeerRole::Node)?;
        let mut cfg = NodeConfig::new(data, self.disks, listen, self.meta);
        cfg.advertise = self.advertise;
        cfg.zone = self.zone;
        cfg.rack = self.rack;
        cfg.host = self.host;
        cfg.heartbeat_interval = Duration::from_millis(self.heartbeat_interval_ms.max(1));
        cfg.gc_interval = Duration::from_millis(self.gc_interval_ms.max(1));
        cfg.orphan_grace = Duration::from_millis(self.orphan_grace_ms);
        cfg.coordinator.client_idle_timeout =
            Duration::from_millis(self.upload_idle_timeout_ms.max(1));
        cfg.coordinator.max_files_per_upload = self.max_files_per_bundle;
        cfg.heal.scrub_interval = Duration::from_millis(self.scrub_interval_ms.max(1));
        cfg.heal.scrub_bytes_per_sec = self.scrub_bytes_per_sec;
        anyhow::ensure!(
            !self.fixity_interval.is_zero(),
            "--fixity-interval must be longer than 0"
        );
        cfg.heal.fixity_interval = self.fixity_interval;
        cfg.heal.fixity_bytes_per_sec = self.fixity_bytes_per_sec;
        cfg.stale_copy_grace = Duration::from_millis(self.stale_copy_grace_ms);
        cfg.tls = tls;
        cfg.metrics_listen = self.metrics_listen;
        Ok(cfg)
    }
}

pub fn run(cli: NodeCli) -> anyhow::Result<()> {
    if let Some(action) = cli.action {
        return set_state(action);
    }
    let cfg = cli.run.config()?;
    common::daemon_runtime("node")?
        .block_on(bitmountain_node::run(cfg, common::shutdown_signal()))?;
    Ok(())
}

fn set_state(action: NodeAction) -> anyhow::Result<()> {
    let (target, state) = match action {
        NodeAction::Drain(target) => (target, NodeState::Draining),
        NodeAction::Remove(target) => (target, NodeState::Removed),
        NodeAction::Up(target) => (target, NodeState::Up),
    };
    let id = target.id;
    target.cluster.ask_meta(|meta| async move {
        meta.set_node_state(id, state)
            .await
            .with_context(|| format!("setting node {id} {state:?}"))
    })?;
    let name = format!("{state:?}").to_lowercase();
    if target.json {
        return common::print_json(&serde_json::json!({ "node_id": id, "state": name }));
    }
    let mut out = common::stdout();
    writeln!(out, "node {id} is now {name}")?;
    if state == NodeState::Draining {
        writeln!(out, "watch `bitmountain repair status`; once `bitmountain status` shows its disks empty, run `bitmountain node remove {id}`")?;
    }
    Ok(())
}
