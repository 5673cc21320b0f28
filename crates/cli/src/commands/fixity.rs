//! `bitmountain fixity check (--bundle ID | --label k=v | --all) [--json]`: reads every file of
//! the bundles named (through degraded reads where shards are lost or corrupt), hashes the bytes
//! here with SHA-256 and compares them with the digest the index recorded at ingest. Prints a
//! report, per file on failure; exits non-zero if any file fails.

use std::io::Write;

use anyhow::bail;
use bitmountain_client::{ArchiveClient, BundleInfo};
use sha2::{Digest, Sha256};

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

/// A writer that only hashes and counts.
struct Hasher(Sha256, u64);

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        self.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The outcome of one bundle.
#[derive(Debug, Default, serde::Serialize)]
struct BundleFixity {
    bundle_id: String,
    files: u64,
    bytes: u64,
    failures: Vec<serde_json::Value>,
}

async fn check_bundle(client: &ArchiveClient, b: &BundleInfo) -> BundleFixity {
    let mut out = BundleFixity {
        bundle_id: b.bundle_id.clone(),
        ..BundleFixity::default()
    };
    let index = match client.index(&b.bundle_id).await {
        Ok(i) => i,
        Err(e) => {
            out.failures
                .push(serde_json::json!({"path": null, "error": e.to_string()}));
            return out;
        }
    };
    for f in index.iter() {
        out.files += 1;
        let mut h = Hasher(Sha256::new(), 0);
        match client
            .get_file(&b.bundle_id, &f.path, 0, None, &mut h)
            .await
        {
            Ok(_) => {
                out.bytes += h.1;
                let got = hex::encode(h.0.finalize());
                if got != f.sha256 || h.1 != f.size_bytes {
                    out.failures.push(serde_json::json!({
                        "path": f.path, "expected_sha256": f.sha256, "actual_sha256": got,
                        "expected_bytes": f.size_bytes, "actual_bytes": h.1,
                    }));
                }
            }
            Err(e) => out.failures.push(serde_json::json!({
                "path": f.path, "expected_sha256": f.sha256, "error": e.to_string(),
            })),
        }
    }
    out
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
            let r = check_bundle(&client, b).await;
            bundles += 1;
            files += r.files;
            bytes += r.bytes;
            failed += r.failures.len() as u64;
            if args.json {
                writeln!(stdout, "{}", serde_json::to_string(&r)?)?;
            } else if r.failures.is_empty() {
                writeln!(stdout, "ok      {}  {} files", r.bundle_id, r.files)?;
            } else {
                writeln!(
                    stdout,
                    "FAILED  {}  {} of {} files",
                    r.bundle_id,
                    r.failures.len(),
                    r.files
                )?;
                for f in &r.failures {
                    writeln!(stdout, "        {f}")?;
                }
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
    if failed > 0 {
        bail!("{failed} files failed their fixity check");
    }
    Ok(())
}
