//! `bitmountain fixity check (--bundle ID | --label k=v | --all) [--json]`: a node reads every
//! file of the bundles named (through degraded reads where shards are lost or corrupt), hashes
//! the bytes with SHA-256 and compares them with the digest the index recorded at ingest; each
//! bundle's check is a fixity event in the audit trail. Prints a report, per file on failure;
//! exits non-zero if any file fails.

use std::io::Write;

use anyhow::bail;
use bitmountain_client::Fixity;

use super::common::{self, ClusterArgs};
use super::units;

#[derive(Debug, clap::Subcommand)]
pub enum FixityCommand {
    /// Read every file and check its SHA-256 against the digest recorded at ingest.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// One bundle.
    #[arg(long, conflicts_with_all = ["label", "all"])]
    bundle: Option<String>,
    /// Every bundle with this label: KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE", conflicts_with = "all")]
    label: Option<String>,
    /// Every bundle.
    #[arg(long)]
    all: bool,
    /// One JSON object per bundle and line, then a summary object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(cmd: FixityCommand) -> anyhow::Result<()> {
    let FixityCommand::Check(args) = cmd;
    if args.bundle.is_none() && args.label.is_none() && !args.all {
        bail!("say what to check: --bundle ID, --label KEY=VALUE or --all");
    }
    let label = args.label.as_deref().map(common::parse_label).transpose()?;
    let client = args.cluster.archive_client()?;
    let started = std::time::Instant::now();
    let (mut bundles, mut files, mut bytes, mut failed) = (0u64, 0u64, 0u64, 0u64);
    let mut unrecorded = 0u64;
    common::client_runtime()?.block_on(async {
        let targets = match &args.bundle {
            Some(id) => vec![client.stat(id).await?],
            None => {
                client
                    .list_all(label.as_ref().map(|(k, v)| (k.as_str(), v.as_str())))
                    .await?
            }
        };
        let mut stdout = common::stdout();
        for b in &targets {
            let r = match client.check_fixity(&b.bundle_id).await {
                Ok(r) => r,
                // A bundle that cannot be checked at all (its index unreadable) fails whole.
                Err(e) => Fixity {
                    bundle_id: b.bundle_id.clone(),
                    files: 0,
                    bytes: 0,
                    failed: 1,
                    failures: vec![bitmountain_client::FileFixity {
                        path: String::new(),
                        expected_sha256: String::new(),
                        actual_sha256: String::new(),
                        expected_bytes: 0,
                        actual_bytes: 0,
                        error: e.to_string(),
                    }],
                    recorded: false,
                    repaired: Vec::new(),
                },
            };
            bundles += 1;
            files += r.files;
            bytes += r.bytes;
            failed += r.failed;
            if args.json {
                writeln!(stdout, "{}", serde_json::to_string(&r)?)?;
            } else if r.failed == 0 {
                writeln!(stdout, "ok      {}  {} files", r.bundle_id, r.files)?;
                for (path, shard) in &r.repaired {
                    writeln!(stdout, "        {path}: shard {shard} held wrong bytes with valid CRCs; decoded from the others, queued for rewrite")?;
                }
            } else {
                writeln!(
                    stdout,
                    "FAILED  {}  {} of {} files",
                    r.bundle_id, r.failed, r.files
                )?;
                for f in &r.failures {
                    writeln!(stdout, "        {}", serde_json::to_string(f)?)?;
                }
            }
            if !r.recorded {
                unrecorded += 1;
            }
        }
        anyhow::Ok(())
    })?;
    let elapsed = started.elapsed();
    if args.json {
        let summary = serde_json::json!({"summary": {
            "bundles": bundles, "files": files, "bytes": bytes, "failed_files": failed,
            "elapsed_ms": elapsed.as_millis() as u64,
        }});
        writeln!(common::stdout(), "{summary}")?;
    } else {
        eprintln!(
            "{bundles} bundles, {files} files, {} checked in {} ({}); {failed} failed",
            units::bytes(bytes),
            units::duration(elapsed),
            units::bytes_per_sec(bytes as f64 / elapsed.as_secs_f64().max(0.001))
        );
    }
    if unrecorded > 0 {
        eprintln!("warning: {unrecorded} checks are not in the audit trail (the metadata group could not record them)");
    }
    if failed > 0 {
        bail!("{failed} files failed their fixity check");
    }
    Ok(())
}
