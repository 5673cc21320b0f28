//! `bitmountain scrub [--node ID]`: start a scrub pass now on every node that is up (or one).
//! The metadata group names the nodes; each node is then asked directly.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use bitmountain_meta::types::NodeInfo;
use bitmountain_meta::NodeState;
use bitmountain_proto::v1 as pb;
use bitmountain_proto::Credentials;

use super::common::{self, ClusterArgs};

#[derive(Debug, clap::Args)]
pub struct ScrubArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Only this node (default: every node that is up).
    #[arg(long)]
    node: Option<u64>,
}

pub fn run(args: ScrubArgs) -> anyhow::Result<()> {
    common::client_runtime()?.block_on(scrub(args))
}

async fn scrub(args: ScrubArgs) -> anyhow::Result<()> {
    let status = args.cluster.meta_client().await?.cluster_status().await?;
    let credentials = args.cluster.credentials()?;
    let nodes: Vec<&NodeInfo> = status
        .nodes
        .iter()
        .filter(|n| args.node.is_none_or(|id| id == n.node_id))
        .filter(|n| args.node.is_some() || n.state == Some(NodeState::Up))
        .collect();
    if let Some(id) = args.node {
        anyhow::ensure!(
            !nodes.is_empty(),
            "node {id} is not in the cluster map (see `bitmountain status`)"
        );
    }
    let mut out = common::stdout();
    let mut results = Vec::new();
    for n in nodes {
        let outcome = start_scrub(&n.address, &credentials).await;
        if !args.json {
            match &outcome {
                Ok(true) => writeln!(
                    out,
                    "node {} ({}): scrub pass started",
                    n.node_id, n.address
                )?,
                Ok(false) => writeln!(
                    out,
                    "node {} ({}): a scrub pass is already running",
                    n.node_id, n.address
                )?,
                Err(e) => writeln!(out, "node {} ({}): {e:#}", n.node_id, n.address)?,
            }
        }
        results.push(serde_json::json!({
            "node_id": n.node_id,
            "started": outcome.as_ref().ok().copied(),
            "error": outcome.err().map(|e| format!("{e:#}")),
        }));
    }
    if args.json {
        return common::print_json(&results);
    }
    writeln!(
        out,
        "`bitmountain status` shows when each disk was last fully verified"
    )?;
    Ok(())
}

async fn start_scrub(address: &str, credentials: &Credentials) -> anyhow::Result<bool> {
    let endpoint = credentials
        .endpoint(address)
        .context("node address")?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10));
    let channel = credentials
        .connect(endpoint)
        .await
        .with_context(|| format!("connecting to node {address} (is it running?)"))?;
    let r = pb::node_service_client::NodeServiceClient::new(credentials.wrap(channel))
        .start_scrub(pb::StartScrubRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    Ok(r.into_inner().started)
}
