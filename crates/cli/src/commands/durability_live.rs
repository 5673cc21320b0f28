//! `bitmountain durability --cluster ADDR`: the model applied to the running cluster — its
//! disks in service with their sizes and fill, the codes its bundles use (weighted by bytes),
//! the repair rate its leader measured (if the token may read it: `operate`), and the disk
//! failures it has seen over its disks' years of service — under the stated prior AFR
//! (`--afr`, worth 100 disk-years). The leader exports the same figure (with the default
//! prior) as `bitmountain_durability_loss_probability_per_year` and `status` shows it.

use std::io::Write as _;

use anyhow::Context as _;
use bitmountain_durability::units::format_sci;
use bitmountain_durability::{live_estimate, AfrPrior};
use bitmountain_meta::durability::live_cluster;

use super::common::{self, ClusterArgs};
use super::credentials::AuthArgs;
use super::units;

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
    let live = live_cluster(&status, rate).context(
        "the member did not say its default code (an older binary?); upgrade the members",
    )?;
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
        "  {} disks in service on {} nodes; {:.1} % full; default code {}",
        live.disk_capacity_bytes.len(),
        live.nodes,
        e.params.fill_fraction * 100.0,
        live.scheme.label()
    )?;
    if live.codes_in_use.is_empty() {
        writeln!(
            out,
            "  codes in use: not counted yet (modelled as the default code)"
        )?;
    }
    for c in &e.by_code {
        writeln!(
            out,
            "  code {}: {} of bundles, {:.1} % of the stored bytes; P(loss within a year) {}",
            c.scheme.label(),
            units::bytes(c.data_bytes),
            c.stored_share * 100.0,
            format_sci(c.p_loss_per_year)
        )?;
    }
    writeln!(
        out,
        "  disk failures seen: {} over {}",
        live.failed_disks,
        live.disk_years_observed.map_or(
            "an unknown time (disks registered before it was recorded)".into(),
            |y| format!("{y:.2} disk-years")
        )
    )?;
    writeln!(
        out,
        "  AFR {:.2} %/disk-year ({}); repair {:.1} MB/s per disk ({}); one disk rebuilt in {:.1} h",
        e.afr * 100.0,
        if e.afr_observed { "posterior: the prior and the failures seen" } else { "the prior: the cluster does not know its disks' exposure" },
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
