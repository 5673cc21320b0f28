//! `bitmountain node`: run a storage node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bitmountain_node::NodeConfig;

/// `bitmountain node ...`: run a storage node, or (with a subcommand) change a node's state.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct NodeCli {
    #[command(subcommand)]
    pub action: Option<super::heal::NodeAction>,
    #[command(flatten)]
    pub run: NodeArgs,
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
    /// Shard files the placement does not name here are deleted this long after their last
    /// write.
    #[arg(long, default_value_t = bitmountain_node::limits::STALE_COPY_GRACE_MS)]
    stale_copy_grace_ms: u64,
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
        cfg.stale_copy_grace = Duration::from_millis(self.stale_copy_grace_ms);
        Ok(cfg)
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending::<()>().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

pub fn run(cli: NodeCli) -> anyhow::Result<()> {
    if let Some(action) = cli.action {
        return super::heal::node(action);
    }
    let cfg = cli.run.config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("node")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(bitmountain_node::run(cfg, shutdown_signal()))?;
    Ok(())
}
