//! What keeps a bundle: `retention set ID --until DATE` (extend only) and `hold set|clear ID
//! --reason TEXT`; and the parsing of `put --retain-until DATE` / `--retain DURATION`.

use std::io::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bitmountain_client::BundleInfo;

use super::common::{self, ClusterArgs};
use super::units;

#[derive(Debug, clap::Subcommand)]
pub enum RetentionCommand {
    /// Extend a bundle's retention (deletes are refused before the date); a date earlier than
    /// the current one is refused, except in governance mode.
    Set {
        /// Bundle id.
        bundle: String,
        /// The new date (`2036-01-31` or RFC 3339), UTC; with `--governance`, `none` removes
        /// the retention.
        #[arg(long, value_name = "DATE")]
        until: String,
        /// Governance mode: shorten or remove the retention (a token with `admin`; the reason
        /// is audited).
        #[arg(long, requires = "reason")]
        governance: bool,
        /// Why (required with `--governance`; audited).
        #[arg(long, requires = "governance")]
        reason: Option<String>,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum HoldCommand {
    /// Put a bundle under a legal hold: deletes are refused until it is cleared.
    Set(HoldArgs),
    /// Clear a bundle's legal hold.
    Clear(HoldArgs),
}

#[derive(Debug, clap::Args)]
pub struct HoldArgs {
    /// Bundle id.
    bundle: String,
    /// Why (required; logged).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Milliseconds since the epoch of a date (`YYYY-MM-DD`, midnight UTC) or an RFC 3339 time.
pub fn parse_date(text: &str) -> anyhow::Result<u64> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_owned()
    };
    let at = humantime::parse_rfc3339(&full).with_context(|| {
        format!("{text:?} is not a date: write 2036-01-31 or 2036-01-31T12:00:00Z (UTC)")
    })?;
    let ms = at
        .duration_since(UNIX_EPOCH)
        .context("a date before 1970")?
        .as_millis();
    u64::try_from(ms).context("a date too far ahead")
}

/// The retention `put` asks for: a date, a duration from now, or none (0).
pub fn retention(until: Option<&str>, duration: Option<&str>) -> anyhow::Result<u64> {
    match (until, duration) {
        (Some(date), _) => {
            let ms = parse_date(date)?;
            if ms <= units::now_unix_ms() {
                bail!("--retain-until {date}: the date has passed");
            }
            Ok(ms)
        }
        (None, Some(text)) => {
            let d: Duration = humantime::parse_duration(text).with_context(|| {
                format!("--retain {text:?}: expected a duration such as 10y or 90days")
            })?;
            let ms = u64::try_from(d.as_millis()).context("--retain: too long")?;
            Ok(units::now_unix_ms().saturating_add(ms))
        }
        (None, None) => Ok(0),
    }
}

fn print(b: &BundleInfo) -> anyhow::Result<()> {
    let retention = match b.retain_until_unix_ms {
        0 => "no retention".to_owned(),
        t => format!("retained until {}", units::time(t)),
    };
    let hold = match &b.legal_hold {
        Some(h) => format!(
            "legal hold since {}: {}",
            units::time(h.since_unix_ms),
            h.reason
        ),
        None => "no legal hold".to_owned(),
    };
    writeln!(common::stdout(), "{}: {retention}; {hold}", b.bundle_id)?;
    Ok(())
}

pub fn retention_command(cmd: RetentionCommand) -> anyhow::Result<()> {
    match cmd {
        RetentionCommand::Set {
            bundle,
            until,
            governance,
            reason,
            cluster,
        } => {
            let ms = match until.as_str() {
                "none" if governance => 0,
                _ => parse_date(&until)?,
            };
            let client = cluster.archive_client()?;
            let rt = common::client_runtime()?;
            let b = match reason.filter(|_| governance) {
                Some(reason) => rt.block_on(client.shorten_retention(&bundle, ms, &reason))?,
                None => rt.block_on(client.set_retention(&bundle, ms))?,
            };
            print(&b)
        }
    }
}

pub fn hold_command(cmd: HoldCommand) -> anyhow::Result<()> {
    let (args, hold) = match cmd {
        HoldCommand::Set(a) => (a, true),
        HoldCommand::Clear(a) => (a, false),
    };
    let client = args.cluster.archive_client()?;
    let b = common::client_runtime()?.block_on(client.set_legal_hold(
        &args.bundle,
        hold,
        &args.reason,
    ))?;
    print(&b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn dates_and_durations() {
        assert_eq!(parse_date("2036-01-31").unwrap(), 2_085_350_400_000);
        assert_eq!(
            parse_date("2036-01-31T00:00:01Z").unwrap(),
            2_085_350_401_000
        );
        assert!(parse_date("31/01/2036").is_err());
        assert!(retention(Some("2001-01-01"), None).is_err());
        let ten_years = retention(None, Some("10y")).unwrap();
        assert!(ten_years > units::now_unix_ms() + 9 * 365 * 86_400_000);
        assert_eq!(retention(None, None).unwrap(), 0);
        assert!(retention(None, Some("soon")).is_err());
    }
}
