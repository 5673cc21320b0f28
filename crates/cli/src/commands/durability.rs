//! `bitmountain durability`: the probability of losing data for an erasure code or replication,
//! by the analytic Markov model and by a seeded Monte Carlo simulation, for one scheme or for the
//! five-scheme comparison (`--compare`), as a table, `--json`, or an SVG plot (`--svg`).

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use bitmountain_durability::sim::PlacementMode;
use bitmountain_durability::units::{format_sci, nines};
use bitmountain_durability::{
    analyze, compare, simulate, svg_plot, Analytic, ClusterParams, Estimate, RepairModel, Scheme,
    SimConfig, SimResult,
};

use super::common;
use super::units::{decimal_bytes, duration_secs, parse_size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SimRepairArg {
    /// Exponential rebuild times, independent: the Markov chain's assumptions.
    Markov,
    /// Every rebuild takes exactly the nominal rebuild time.
    Fixed,
    /// Detection delay, then concurrent rebuilds share the cluster's repair bandwidth.
    Shared,
}

#[derive(Debug, clap::Args)]
pub struct DurabilityArgs {
    /// Reed-Solomon code as K+M (K data, M parity shards); the default is 10+4.
    #[arg(long, value_name = "K+M", conflicts_with = "copies", value_parser = parse_code)]
    code: Option<Scheme>,
    /// Replication with N copies instead of an erasure code.
    #[arg(long, value_name = "N")]
    copies: Option<u32>,
    /// Compare RS(10,4), RS(6,3), RS(4,2), 3 copies and 2 copies on the same disks.
    #[arg(long, conflicts_with_all = ["code", "copies"])]
    compare: bool,
    /// Number of disks.
    #[arg(long, default_value_t = 1000)]
    disks: u32,
    /// Capacity of one disk (16TB = 16e12 bytes, 16TiB = 16 x 2^40).
    #[arg(long, value_name = "SIZE", default_value = "16TB", value_parser = parse_size)]
    disk_size: u64,
    /// Share of each disk holding data, in (0, 1].
    #[arg(long, value_name = "FRACTION", default_value_t = 0.8)]
    fill: f64,
    /// Annual failure rate per disk: failures per disk-year, as 0.02 or 2%.
    #[arg(long, value_name = "RATE", default_value = "2%", value_parser = parse_rate)]
    afr: f64,
    /// Repair traffic each disk sustains during a rebuild (reads + writes), e.g. 20MB/s.
    #[arg(long, value_name = "BYTES/S", default_value = "20MB/s", value_parser = parse_size)]
    repair_bytes_per_sec: u64,
    /// Model the running cluster at ADDR instead (a node or member): its disks, fill, default
    /// code, measured repair rate and failed disks, with --afr as the prior.
    #[arg(long, value_name = "ADDR")]
    cluster: Option<String>,
    #[command(flatten)]
    auth: super::credentials::AuthArgs,
    /// Disks that share one disk's rebuild; default: every disk holding a peer shard
    /// (declustered placement, nearly all disks).
    #[arg(long, value_name = "N")]
    rebuild_disks: Option<u32>,
    /// Seconds from a disk failing to its rebuild starting (detection, grace period).
    #[arg(long, value_name = "SECS", default_value_t = 1800.0)]
    detect_secs: f64,
    /// Size of one bundle: all its shards share one placement.
    #[arg(long, value_name = "SIZE", default_value = "1GB", value_parser = parse_size)]
    bundle_size: u64,
    /// Disks per node; a bundle never puts two shards on one node.
    #[arg(long, value_name = "N", default_value_t = 1)]
    disks_per_node: u32,
    /// Nodes per rack (for --rack-afr).
    #[arg(long, value_name = "N", default_value_t = 1)]
    nodes_per_rack: u32,
    /// Whole-node losses per node-year (correlated: all its disks at once; simulation only).
    #[arg(long, value_name = "RATE", default_value = "0", value_parser = parse_rate)]
    node_afr: f64,
    /// Whole-rack losses per rack-year (simulation only).
    #[arg(long, value_name = "RATE", default_value = "0", value_parser = parse_rate)]
    rack_afr: f64,
    /// The long horizon, in years (the short one is always 1 year).
    #[arg(long, default_value_t = 10.0)]
    years: f64,
    /// Monte Carlo trials, each simulating the whole cluster for --years; 0 skips the simulation.
    #[arg(long, default_value_t = 10_000)]
    trials: u32,
    /// Seed of the simulation: the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Repair model of the simulation.
    #[arg(long, value_enum, default_value_t = SimRepairArg::Shared)]
    sim_repair: SimRepairArg,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write an SVG plot of P(loss within --years) against repair speed for the five
    /// comparison schemes.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

// Values are parsed by clap (not kept as strings) so the arguments stay small: main.rs holds
// every command's arguments in one enum.

/// `0.02` or `2%`: failures per year.
fn parse_rate(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let (number, scale) = match trimmed.strip_suffix('%') {
        Some(n) => (n, 0.01),
        None => (trimmed, 1.0),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: expected a number such as 0.02 or 2%"))?;
    Ok(value * scale)
}

fn parse_code(text: &str) -> Result<Scheme, String> {
    Scheme::parse_code(text).map_err(|e| e.to_string())
}

impl DurabilityArgs {
    fn scheme(&self) -> anyhow::Result<Scheme> {
        Ok(match (self.code, self.copies) {
            (Some(code), _) => code,
            (None, Some(n)) => Scheme::copies(n)?,
            (None, None) => Scheme::Rs { k: 10, m: 4 },
        })
    }

    fn params(&self) -> anyhow::Result<ClusterParams> {
        let mut p = ClusterParams::new(self.scheme()?);
        p.disks = self.disks;
        p.disks_per_node = self.disks_per_node;
        p.nodes_per_rack = self.nodes_per_rack;
        p.disk_bytes = self.disk_size;
        p.fill_fraction = self.fill;
        p.disk_afr = self.afr;
        p.node_afr = self.node_afr;
        p.rack_afr = self.rack_afr;
        p.repair_bytes_per_sec = self.repair_bytes_per_sec as f64;
        p.rebuild_disks = self.rebuild_disks;
        p.detect_secs = self.detect_secs;
        p.bundle_bytes = self.bundle_size;
        p.validate()?;
        Ok(p)
    }

    fn sim_config(&self) -> Option<SimConfig> {
        (self.trials > 0).then(|| {
            let mut config = SimConfig::new(self.trials, self.years, self.seed);
            config.repair = match self.sim_repair {
                SimRepairArg::Markov => RepairModel::Markov,
                SimRepairArg::Fixed => RepairModel::Fixed,
                SimRepairArg::Shared => RepairModel::Shared,
            };
            config
        })
    }
}

pub fn run(args: DurabilityArgs) -> anyhow::Result<()> {
    if let Some(addr) = &args.cluster {
        return super::durability_live::run(addr, &args.auth, args.afr, args.json);
    }
    if !(args.years > 0.0 && args.years <= 1000.0) {
        anyhow::bail!("--years {}: must be in (0, 1000]", args.years);
    }
    let params = args.params()?;
    let sim_config = args.sim_config();
    if let Some(path) = &args.svg {
        let svg = svg_plot(&params, args.years)?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.compare {
        let rows = compare(&params, args.years, sim_config.as_ref())?;
        if args.json {
            return common::print_json(
                &serde_json::json!({ "params": params, "simulation": sim_config, "rows": rows }),
            );
        }
        let out = &mut common::stdout();
        print_header(&params, &args, out)?;
        print_comparison(&rows, args.years, out)?;
        print_sim_note(sim_config.as_ref(), out)?;
        return Ok(());
    }
    let analytic = analyze(&params, args.years);
    let simulation = sim_config
        .as_ref()
        .map(|config| simulate(&params, config))
        .transpose()?;
    if args.json {
        return common::print_json(&serde_json::json!({
            "params": params,
            "simulation_config": sim_config,
            "analytic": analytic,
            "simulation": simulation,
        }));
    }
    let out = &mut common::stdout();
    print_header(&params, &args, out)?;
    print_single(&params, &analytic, simulation.as_ref(), out)?;
    print_sim_note(sim_config.as_ref(), out)?;
    Ok(())
}

fn print_header(
    params: &ClusterParams,
    args: &DurabilityArgs,
    out: &mut impl Write,
) -> io::Result<()> {
    writeln!(out,
        "{} disks x {} ({:.0}% full), AFR {}%, repair traffic {}/s per disk, {} detection, {} bundles",
        params.disks,
        decimal_bytes(params.disk_bytes as f64),
        params.fill_fraction * 100.0,
        format_sci(params.disk_afr * 100.0),
        decimal_bytes(params.repair_bytes_per_sec),
        duration_secs(params.detect_secs),
        decimal_bytes(params.bundle_bytes as f64),
    )?;
    if params.disks_per_node > 1 || params.node_afr > 0.0 || params.rack_afr > 0.0 {
        writeln!(
            out,
            "{} nodes of {} disks ({} racks of {} nodes); node losses {}/node-year, rack losses \
             {}/rack-year (simulation only)",
            params.nodes(),
            params.disks_per_node,
            params.racks(),
            params.nodes_per_rack,
            format_sci(params.node_afr),
            format_sci(params.rack_afr),
        )?;
    }
    if let Some(svg) = &args.svg {
        writeln!(out, "plot written to {}", svg.display())?;
    }
    writeln!(out)
}

fn prob(p: f64) -> String {
    if p == 0.0 {
        "0".to_string()
    } else {
        format!("{p:.2e}")
    }
}

fn estimate(e: &Estimate) -> String {
    format!("{} [{}, {}]", prob(e.value), prob(e.low), prob(e.high))
}

fn mttdl_estimate(e: &Estimate) -> String {
    if e.value.is_infinite() {
        format!("> {} years", format_sci(e.low))
    } else {
        format!(
            "{} [{}, {}] years",
            format_sci(e.value),
            format_sci(e.low),
            format_sci(e.high)
        )
    }
}

fn print_single(
    params: &ClusterParams,
    a: &Analytic,
    sim: Option<&SimResult>,
    out: &mut impl Write,
) -> io::Result<()> {
    let scheme = params.scheme;
    let set = scheme.tolerated() + 1;
    writeln!(
        out,
        "{scheme}: survives any {} lost shards",
        scheme.tolerated()
    )?;
    writeln!(
        out,
        "  storage overhead        {:.2}x raw/usable ({} usable in {} of raw disk in use)",
        a.overhead,
        decimal_bytes(a.usable_bytes),
        decimal_bytes(params.raw_bytes() * params.fill_fraction)
    )?;
    writeln!(
        out,
        "  rebuild of one disk     {} ({} detection + {} x {} of traffic over {:.0} disks)",
        duration_secs(a.rebuild_secs),
        duration_secs(params.detect_secs),
        scheme.repair_traffic_factor(),
        decimal_bytes(params.bytes_per_disk()),
        a.rebuild_disks
    )?;
    writeln!(
        out,
        "  placement               {} bundles on random sets of {} disks; {} of {} possible \
         {set}-disk sets share a bundle",
        format_sci(a.bundles),
        scheme.width(),
        format_sci(a.coverage.covered_sets),
        format_sci(a.coverage.candidate_sets)
    )?;
    writeln!(
        out,
        "  independent groups      {} (covered {set}-disk sets / C({}, {set})); MTTDL of one \
         group {} years",
        format_sci(a.coverage.independent_groups),
        scheme.width(),
        format_sci(a.group_mttdl_years)
    )?;
    writeln!(out)?;
    let header_sim = sim
        .map(|s| {
            format!(
                "simulation ({} trials x {} years, seed {})",
                s.trials, s.years, s.seed
            )
        })
        .unwrap_or_else(|| "simulation (skipped: --trials 0)".to_string());
    writeln!(out, "  {:<24}{:<24}{}", "", "analytic (Markov)", header_sim)?;
    let rows: [(String, String, String); 4] = [
        (
            "P(loss) in 1 year".to_string(),
            format!("{} ({} nines)", prob(a.p_loss_1y), nines(a.p_loss_1y)),
            sim.map(|s| estimate(&s.p_loss_1y)).unwrap_or_default(),
        ),
        (
            format!("P(loss) in {} years", a.horizon_years),
            prob(a.p_loss_horizon),
            sim.map(|s| estimate(&s.p_loss_horizon)).unwrap_or_default(),
        ),
        (
            "MTTDL".to_string(),
            format!("{} years", format_sci(a.mttdl_years)),
            sim.map(|s| mttdl_estimate(&s.mttdl_years))
                .unwrap_or_default(),
        ),
        (
            "bytes lost per year".to_string(),
            decimal_bytes(a.bytes_lost_per_year),
            sim.map(|s| decimal_bytes(s.bytes_lost_per_year))
                .unwrap_or_default(),
        ),
    ];
    for (label, analytic, simulated) in rows {
        writeln!(out, "  {label:<24}{analytic:<24}{simulated}")?;
    }
    if let Some(s) = sim {
        writeln!(
            out,
            "  (simulation: {} loss events; {} disk, {} node, {} rack failures; at most {} disks \
             down at once; placement {})",
            s.loss_events,
            s.disk_failures,
            s.node_failures,
            s.rack_failures,
            s.max_concurrent_failed,
            match s.placement {
                PlacementMode::Explicit { bundles } => format!("explicit, {bundles} bundles"),
                PlacementMode::Sampled { .. } => "sampled".to_string(),
            }
        )?;
    }
    Ok(())
}

fn print_comparison(
    rows: &[bitmountain_durability::ComparisonRow],
    years: f64,
    out: &mut impl Write,
) -> io::Result<()> {
    let with_sim = rows.iter().any(|r| r.simulation.is_some());
    let mut header = format!(
        "| {:<9} | {:>8} | {:>10} | {:>10} | {:>9} | {:>11} | {:>9} | {:>9} | {:>10} |",
        "scheme",
        "overhead",
        "usable",
        "rebuild",
        "groups",
        "MTTDL (yr)",
        "P(1 yr)",
        format!("P({years} yr)"),
        "lost/yr"
    );
    if with_sim {
        header.push_str(&format!(
            " {:>32} |",
            format!("simulated P({years} yr) [95% CI]")
        ));
    }
    writeln!(out, "{header}")?;
    let separator: String = header
        .chars()
        .map(|c| if c == '|' { '|' } else { '-' })
        .collect();
    writeln!(out, "{separator}")?;
    for row in rows {
        let a = &row.analytic;
        let mut line = format!(
            "| {:<9} | {:>7.2}x | {:>10} | {:>10} | {:>9} | {:>11} | {:>9} | {:>9} | {:>10} |",
            a.scheme,
            a.overhead,
            decimal_bytes(a.usable_bytes),
            duration_secs(a.rebuild_secs),
            format!("{:.2e}", a.coverage.independent_groups),
            format!("{:.2e}", a.mttdl_years),
            prob(a.p_loss_1y),
            prob(a.p_loss_horizon),
            decimal_bytes(a.bytes_lost_per_year),
        );
        if let Some(s) = &row.simulation {
            line.push_str(&format!(" {:>32} |", estimate(&s.p_loss_horizon)));
        }
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn print_sim_note(config: Option<&SimConfig>, out: &mut impl Write) -> io::Result<()> {
    if let Some(c) = config {
        writeln!(out)?;
        writeln!(out,
            "Simulation repair model: {}. A simulated probability of 0 means no loss in {} trials: \
             the interval's upper end is what the simulation can vouch for.",
            c.repair.describe(),
            c.trials
        )?;
    }
    Ok(())
}
