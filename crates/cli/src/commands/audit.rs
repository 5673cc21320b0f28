//! `bitmountain audit`: the metadata group's audit trail — who did what to which bundle, disk,
//! node or token, and what was refused — paged from the leader; `audit verify` walks the whole
//! chain (each event carries the SHA-256 of the one before; the group keeps the last one's)
//! and names the first event that does not follow, online or on a stopped member's data.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use bitmountain_meta::audit_client::{AuditFilter, MAX_AUDIT_PAGE};
use bitmountain_meta::client::MetaClient;
use bitmountain_meta::types::audit::{AuditEvent, AuditHead, ChainReport, ChainVerifier};
use bitmountain_meta::types::AuditAction;

use super::common::{self, ClusterArgs};
use super::units;

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: Option<AuditCommand>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Walk the whole chain and name the first event that was changed, removed or added.
    Verify(VerifyArgs),
}

/// Which events to show.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Events at or after this time: a date (2026-12-01), an RFC 3339 time, or a duration ago
    /// (7d, 12h).
    #[arg(long, value_name = "T")]
    since: Option<String>,
    /// Events at or before this time (same forms).
    #[arg(long, value_name = "T")]
    until: Option<String>,
    /// Events about this bundle.
    #[arg(long, value_name = "ID")]
    bundle: Option<String>,
    /// Events of this agent: a token's name or id, `node:NAME`, `system:repair`, ...
    #[arg(long, value_name = "NAME")]
    agent: Option<String>,
    /// Events of this action: ingestion, deletion, dissemination, "policy assignment",
    /// "fixity check", replication, transfer, recovery, "disk state change", "node state
    /// change", "node registration", "token creation", "token revocation", "member change",
    /// "settings change", request.
    #[arg(long, value_name = "A", value_parser = parse_action)]
    action: Option<AuditAction>,
    /// At most this many events (default: all that match).
    #[arg(long)]
    limit: Option<u64>,
    /// One JSON object per line (the events as stored).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Verify a stopped member's data directory instead of asking the running group.
    #[arg(long, value_name = "DIR", conflicts_with = "cluster")]
    data: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn parse_action(text: &str) -> Result<AuditAction, String> {
    text.parse()
}

/// Unix ms of a `--since`/`--until`: a date, an RFC 3339 time, or a duration before now.
fn parse_time(text: &str) -> anyhow::Result<u64> {
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = u64::try_from(ago.as_millis()).context("a duration too long")?;
        return Ok(units::now_unix_ms().saturating_sub(ago));
    }
    super::preserve::parse_date(text)
        .with_context(|| format!("{text:?}: give a date, an RFC 3339 time or a duration (7d)"))
}

pub fn run(args: AuditArgs) -> anyhow::Result<()> {
    match args.command {
        Some(AuditCommand::Verify(v)) => verify(v),
        None => list(args.list),
    }
}

fn list(args: ListArgs) -> anyhow::Result<()> {
    let filter = AuditFilter {
        since_unix_ms: args
            .since
            .as_deref()
            .map(parse_time)
            .transpose()?
            .unwrap_or(0),
        until_unix_ms: args
            .until
            .as_deref()
            .map(parse_time)
            .transpose()?
            .unwrap_or(0),
        bundle: args
            .bundle
            .as_deref()
            .map(|b| b.parse().map_err(|e| anyhow::anyhow!("--bundle {b}: {e}")))
            .transpose()?,
        agent: args.agent.clone(),
        action: args.action,
    };
    let limit = args.limit.unwrap_or(u64::MAX);
    let json = args.json;
    args.cluster.ask_meta(|client| async move {
        let mut out = common::stdout();
        let (mut after, mut shown) = (0u64, 0u64);
        while shown < limit {
            let page = client.list_audit(&filter, after, MAX_AUDIT_PAGE).await?;
            for (seq, value) in &page.events {
                if shown >= limit {
                    break;
                }
                print_event(&mut out, *seq, value, json)?;
                shown += 1;
            }
            if page.next_after_seq == 0 || common::stdout_closed() {
                break;
            }
            after = page.next_after_seq;
        }
        if !json && shown == 0 {
            writeln!(out, "no events match")?;
        }
        anyhow::Ok(())
    })
}

fn print_event(
    out: &mut impl std::io::Write,
    seq: u64,
    value: &[u8],
    json: bool,
) -> anyhow::Result<()> {
    let event = match AuditEvent::decode(value) {
        Ok(e) => e,
        Err(e) => {
            writeln!(
                out,
                "#{seq}: does not decode ({e}); run `bitmountain audit verify`"
            )?;
            return Ok(());
        }
    };
    if json {
        writeln!(out, "{}", serde_json::to_string(&event)?)?;
        return Ok(());
    }
    let detail = if event.detail.is_empty() {
        String::new()
    } else {
        format!(" — {}", event.detail)
    };
    let source = if event.source.is_empty() {
        String::new()
    } else {
        format!(" [reported by {}]", event.source)
    };
    writeln!(
        out,
        "#{} {} {} {} {}: {}{detail}{source}",
        event.seq,
        units::time(event.time_unix_ms),
        event.agent,
        event.action,
        event.object,
        event.outcome,
    )?;
    Ok(())
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let report = match &args.data {
        Some(dir) => verify_stopped(dir)?,
        None => args
            .cluster
            .ask_meta(|client| async move { verify_online(&client).await })?,
    };
    if args.json {
        common::print_json(&report)?;
    } else {
        let mut out = common::stdout();
        match &report.first_break {
            None => writeln!(
                out,
                "audit trail intact: {} events, head #{} {}",
                report.events, report.head_seq, report.head_sha256
            )?,
            Some(b) => writeln!(
                out,
                "audit trail BROKEN at event #{}: {} ({} events checked; head #{} {})",
                b.seq, b.problem, report.events, report.head_seq, report.head_sha256
            )?,
        }
    }
    if let Some(b) = &report.first_break {
        bail!("the audit trail breaks at event #{}", b.seq);
    }
    Ok(())
}

/// Pages through the leader's trail up to the head the first page names (events appended
/// meanwhile are left for the next check).
async fn verify_online(client: &MetaClient) -> anyhow::Result<ChainReport> {
    let all = AuditFilter::default();
    let mut v = ChainVerifier::new();
    let mut after = 0;
    let mut head: Option<AuditHead> = None;
    loop {
        let page = client.list_audit(&all, after, MAX_AUDIT_PAGE).await?;
        let h = *head.get_or_insert(page.head);
        for (seq, value) in page.events.iter().filter(|(seq, _)| *seq <= h.seq) {
            if !v.push(*seq, value) {
                return Ok(v.finish(h));
            }
        }
        if page.next_after_seq == 0 || page.next_after_seq >= h.seq {
            return Ok(v.finish(h));
        }
        after = page.next_after_seq;
    }
}

fn verify_stopped(dir: &std::path::Path) -> anyhow::Result<ChainReport> {
    let (_engine, store) = bitmountain_meta::state::check::open_stopped_member(dir)
        .with_context(|| format!("opening {} (the member must be stopped)", dir.display()))?;
    Ok(store.verify_audit()?)
}
