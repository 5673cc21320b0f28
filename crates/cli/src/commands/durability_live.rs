//! `bitmountain durability --cluster ADDR`: the model applied to the running cluster — its
//! disks in service with their sizes and fill, its default code, the repair rate its leader
//! measured (if the token may read it: `operate`), and the failed disks it has seen — under the
//! stated prior AFR (`--afr`, worth 100 disk-years). The leader exports the same figure as
//! `bitmountain_durability_loss_probability_per_year` and `status` shows it.

use std::io::Write as _;

use anyhow::Context as _;
use bitmountain_durability::units::format_sci;
use bitmountain_durability::{live_estimate, AfrPrior, DiskSample, LiveCluster, Scheme};
use bitmountain_meta::types::ClusterStatus;
use bitmountain_meta::DiskState;

use super::common::{self, ClusterArgs};
use super::credentials::AuthArgs;

/// Prints the live figures of the cluster at `addr`, with `afr` as the prior.
pub fn run(addr: &str, auth: &AuthArgs, afr: f64, json: bool) -> anyhow::Result<()> {
    let cluster = ClusterArgs {
        cluster: Some(addr.to_owned()),
        auth: auth.clone(),
    };
    let (status, rate) = cluster.ask_meta(|meta| async move {
        let status = meta
            .cluster_status()
            .await
            .context("asking for the cluster's status")?;
        // The measured rate needs `operate`; without it, the model's default is used.
        let rate = meta.repair_status().await.ok().map(|r| r.bytes_per_sec);
        Ok((status, rate))
    })?;
    let live = live_cluster(&status, rate)?;
    let prior = AfrPrior {
        afr,
        ..AfrPrior::default()
    };
    let e = live_estimate(&live, prior)?;
    if json {
        return common::print_json(&serde_json::json!({
            "inputs": live,
            "prior": prior,
            "estimate": e,
            "reported_by_member": status.durability_loss_probability_per_year,
        }));
    }
    let mut out = common::stdout();
    writeln!(
        out,
        "cluster {} (as member {} sees it)",
        status.cluster_id, status.member_id
    )?;
    writeln!(
        out,
        "  {} disks in service on {} nodes, {} failed; {:.1} % full; code {}",
        live.disk_capacity_bytes.len(),
        live.nodes,
        live.failed_disks,
        e.params.fill_fraction * 100.0,
        live.scheme.label()
    )?;
    writeln!(
        out,
        "  AFR {:.2} %/disk-year ({}); repair {:.1} MB/s per disk ({}); one disk rebuilt in {:.1} h",
        e.afr * 100.0,
        if e.afr_observed { "posterior" } else { "the prior: the cluster does not know its disks' exposure" },
        e.repair_bytes_per_sec_per_disk / 1e6,
        if e.repair_measured { "measured by the leader" } else { "assumed: nothing repaired lately, or no `operate` permission" },
        e.rebuild_secs / 3600.0
    )?;
    writeln!(
        out,
        "P(losing any bundle within a year) = {}  (mean time to data loss {} years)",
        format_sci(e.p_loss_per_year),
        format_sci(e.mttdl_years)
    )?;
    Ok(())
}

/// The model's inputs from a member's status.
fn live_cluster(status: &ClusterStatus, rate: Option<f64>) -> anyhow::Result<LiveCluster> {
    let code = status.default_code.context(
        "the member did not say its default code (an older binary?); upgrade the members",
    )?;
    let scheme = Scheme::rs(code.data_shards, code.parity_shards)?;
    let disks: Vec<DiskSample> = status
        .nodes
        .iter()
        .flat_map(|n| n.disks.iter().map(move |d| (n.node_id, d)))
        .map(|(node_id, d)| DiskSample {
            node_id,
            capacity_bytes: d.capacity_bytes,
            used_bytes: d.used_bytes.max(d.accounted_bytes),
            in_service: matches!(d.state, Some(DiskState::Ok | DiskState::Draining)),
            failed: d.state == Some(DiskState::Failed),
        })
        .collect();
    Ok(LiveCluster::from_disks(scheme, &disks, rate))
}
