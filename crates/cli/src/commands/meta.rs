//! `bitmountain meta`: run a member of the metadata group, or check a stopped member's data
//! (`meta check --data DIR`).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use bitmountain_meta::{Code, DomainLevel, MemberOptions, MetaConfig};
use bitmountain_raftstore::{Members, RaftConfig};

use super::credentials::ServeTlsArgs;

/// `bitmountain meta ...`: run a member, or (with a subcommand) work on a stopped one's data.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct MetaCli {
    #[command(subcommand)]
    pub action: Option<MetaAction>,
    #[command(flatten)]
    pub run: MetaArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum MetaAction {
    /// Check that a stopped member's state holds together: bundle counts, the disk → bundles,
    /// label, state and expiry indexes, the repair queue against shard health, placed bytes.
    /// Names every violation and exits non-zero if there is one.
    Check(CheckArgs),
    /// Write a consistent copy of the group's state (one applied index, streamed from the
    /// leader, checksummed) to a file.
    Backup(super::meta_backup::BackupArgs),
    /// Make a new one-member group from a backup in an empty data directory (the cluster id is
    /// kept, so the nodes' disks are recognised); then start it and `member add` the others.
    Restore(super::meta_backup::RestoreArgs),
    /// Rebuild a lost metadata group from the shard files on the nodes' disks (optionally
    /// starting from a backup): runs a new one-member group in recovery mode; nodes that
    /// register report their disks, and the group leaves recovery once every registered disk
    /// has (or on `meta recover finish`). `meta recover status` shows the report.
    Recover(Box<super::meta_recover::RecoverCli>),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The member's data directory (the member must be stopped).
    #[arg(long)]
    data: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct MetaArgs {
    /// Member id (non-zero). Required on the first start; later read from --data.
    #[arg(long)]
    pub(super) id: Option<u64>,
    /// Take the member id from the host name: its last number plus one (`meta-0` is member 1),
    /// as Kubernetes StatefulSets number their pods from 0.
    #[arg(long, conflicts_with = "id")]
    id_from_hostname: bool,
    /// Data directory (RocksDB: Raft log, Raft state and the state machine).
    #[arg(long, required = true)]
    pub(super) data: Option<PathBuf>,
    /// Address to serve gRPC on (members, nodes and clients all use it).
    #[arg(long, required = true)]
    pub(super) listen: Option<SocketAddr>,
    /// Address others reach this member at, if not --listen (e.g. when listening on 0.0.0.0).
    #[arg(long)]
    pub(super) advertise: Option<String>,
    /// Create a new group with these initial members: ID=ADDR,ID=ADDR,... (every initial member
    /// gets the same list). Ignored once the data directory is initialized. A member added
    /// later with `bitmountain member add` starts without it.
    #[arg(long, value_delimiter = ',')]
    pub(super) bootstrap: Vec<String>,
    /// The value format a new group writes (give every initial member the same): the newest
    /// unless older binaries must still join it; 2 leaves the audit trail out. Ignored once
    /// the group has begun; `bitmountain member set-value-format` raises it later.
    #[arg(long, default_value_t = bitmountain_meta::keys::VALUE_FORMAT_NEWEST)]
    initial_value_format: u8,
    /// Code for allocations that name none: K+M or K+M:CELL_BYTES.
    #[arg(long, default_value = "10+4")]
    default_code: String,
    /// Failure-domain level for placement: host, rack or zone.
    #[arg(long, default_value = "host")]
    failure_domain: String,
    /// Lifetime of a pending allocation.
    #[arg(long, default_value_t = bitmountain_meta::server::DEFAULT_ALLOCATION_TTL_MS)]
    allocation_ttl_ms: u64,
    /// A storage node silent this long is declared down and its shards are rebuilt elsewhere.
    #[arg(long, default_value_t = bitmountain_meta::healing::DEFAULT_NODE_DOWN_GRACE_MS)]
    node_down_grace_ms: u64,
    /// A repair a worker stops renewing for this long is offered to another node.
    #[arg(long, default_value_t = bitmountain_meta::healing::DEFAULT_REPAIR_LEASE_MS)]
    repair_lease_ms: u64,
    /// Raft tick interval.
    #[arg(long, default_value_t = bitmountain_raftstore::DEFAULT_TICK_MS)]
    tick_ms: u64,
    /// Election timeout in ticks (randomized between N and 2N).
    #[arg(long, default_value_t = bitmountain_raftstore::DEFAULT_ELECTION_TICKS)]
    election_ticks: usize,
    /// Heartbeat interval in ticks.
    #[arg(long, default_value_t = bitmountain_raftstore::DEFAULT_HEARTBEAT_TICKS)]
    heartbeat_ticks: usize,
    /// Compact the Raft log when it holds more applied entries than this.
    #[arg(long, default_value_t = bitmountain_raftstore::DEFAULT_COMPACT_LOG_ENTRIES)]
    compact_log_entries: u64,
    /// In recovery (`meta recover`): leave it this long after the last disk registered or
    /// reported, once every registered disk has reported.
    #[arg(long, default_value_t = bitmountain_meta::server::DEFAULT_RECOVERY_SETTLE_MS)]
    recovery_settle_ms: u64,
    /// Test only: accept partition commands (MetaAdmin.SetPartition).
    #[arg(long, hide = true)]
    enable_fault_injection: bool,
    #[command(flatten)]
    tls: ServeTlsArgs,
    /// Serve Prometheus metrics (`/metrics`), `/healthz` and `/readyz` over HTTP here.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

/// This machine's (or pod's) host name.
fn hostname() -> anyhow::Result<String> {
    if let Some(h) = std::env::var_os("HOSTNAME").filter(|h| !h.is_empty()) {
        return Ok(h.to_string_lossy().into_owned());
    }
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name (/proc/sys/kernel/hostname) for --id-from-hostname")?;
    Ok(h.trim().to_owned())
}

/// The member id a host name gives: its trailing number plus one (`meta-2` → 3).
fn member_id_from_hostname(name: &str) -> anyhow::Result<u64> {
    let digits: String = name
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let ordinal: u64 = digits.parse().map_err(|_| {
        anyhow::anyhow!(
            "--id-from-hostname: the host name {name:?} does not end in a number (meta-0, meta-1, ...); give --id instead"
        )
    })?;
    ordinal
        .checked_add(1)
        .ok_or_else(|| anyhow::anyhow!("--id-from-hostname: {name:?} is out of range"))
}

fn parse_bootstrap(list: &[String]) -> anyhow::Result<Option<Members>> {
    if list.is_empty() {
        return Ok(None);
    }
    let mut members = Members::new();
    for item in list {
        let (id, addr) = item
            .split_once('=')
            .with_context(|| format!("--bootstrap entry {item:?}: expected ID=ADDR"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--bootstrap entry {item:?}: the id must be a number"))?;
        anyhow::ensure!(id != 0, "--bootstrap entry {item:?}: member ids start at 1");
        anyhow::ensure!(
            members.insert(id, addr.trim().to_string()).is_none(),
            "--bootstrap names member {id} twice"
        );
    }
    Ok(Some(members))
}

pub fn run(cli: MetaCli) -> anyhow::Result<()> {
    match cli.action {
        Some(MetaAction::Check(args)) => check(args),
        Some(MetaAction::Backup(args)) => super::meta_backup::backup(args),
        Some(MetaAction::Restore(args)) => super::meta_backup::restore(args),
        Some(MetaAction::Recover(cli)) => super::meta_recover::run(*cli),
        None => serve(cli.run),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<()> {
    let (report, applied) = bitmountain_meta::state::check::check_data_dir(&args.data)
        .with_context(|| {
            format!(
                "checking the member data in {} (the member must be stopped)",
                args.data.display()
            )
        })?;
    if args.json {
        super::common::print_json(&serde_json::json!({
            "data": args.data,
            "applied_index": applied,
            "bundles": report.bundles,
            "violation_count": report.violation_count,
            "violations": report.violations,
        }))?;
    } else {
        let mut out = super::common::stdout();
        writeln!(
            out,
            "{}: applied index {applied}, {} bundles checked, {} violations",
            args.data.display(),
            report.bundles,
            report.violation_count
        )?;
        for v in &report.violations {
            writeln!(out, "  {v}")?;
        }
        let unnamed = report.violation_count - report.violations.len() as u64;
        if unnamed > 0 {
            writeln!(out, "  ... and {unnamed} more")?;
        }
    }
    anyhow::ensure!(
        report.is_clean(),
        "{} invariant violations in {}",
        report.violation_count,
        args.data.display()
    );
    Ok(())
}

pub(super) fn serve(args: MetaArgs) -> anyhow::Result<()> {
    // clap requires both unless a subcommand is given.
    let (Some(data_dir), Some(listen)) = (args.data, args.listen) else {
        anyhow::bail!("--data and --listen are required to run a member");
    };
    let tls = args.tls.tls(bitmountain_auth::PeerRole::Meta)?;
    let id = match args.id_from_hostname {
        true => Some(member_id_from_hostname(&hostname()?)?),
        false => args.id,
    };
    let bootstrap = parse_bootstrap(&args.bootstrap)?;
    // The rule every member applies to the group's first command, checked before starting.
    bitmountain_meta::state::value_format_switch(
        bitmountain_meta::keys::VALUE_V1,
        u32::from(args.initial_value_format),
    )
    .context("--initial-value-format")?;
    let default_code: Code = args.default_code.parse()?;
    let domain_level: DomainLevel = args.failure_domain.parse()?;
    let mut raft = RaftConfig::new(0, String::new());
    raft.tick_ms = args.tick_ms;
    raft.election_ticks = args.election_ticks;
    raft.heartbeat_ticks = args.heartbeat_ticks;
    raft.compact_log_entries = args.compact_log_entries;
    raft.fault_injection = args.enable_fault_injection;
    let opts = MemberOptions {
        id,
        data_dir,
        listen,
        advertise: args.advertise,
        bootstrap,
        raft,
        meta: MetaConfig {
            default_code,
            domain_level,
            allocation_ttl_ms: args.allocation_ttl_ms,
            heartbeat_interval_ms: 1000,
            node_down_grace_ms: args.node_down_grace_ms,
            repair_lease_ms: args.repair_lease_ms,
            recovery_settle_ms: args.recovery_settle_ms,
            initial_value_format: args.initial_value_format,
            ..MetaConfig::default()
        },
        tls,
        metrics_listen: args.metrics_listen,
    };
    super::common::daemon_runtime("meta")?.block_on(bitmountain_meta::serve(
        opts,
        super::common::shutdown_signal(),
    ))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::member_id_from_hostname;

    #[test]
    fn statefulset_ordinals_become_member_ids() {
        assert_eq!(member_id_from_hostname("meta-0").unwrap(), 1);
        assert_eq!(member_id_from_hostname("bitmountain-meta-12").unwrap(), 13);
        assert!(member_id_from_hostname("meta").is_err());
        assert!(member_id_from_hostname("meta-99999999999999999999999").is_err());
    }
}
