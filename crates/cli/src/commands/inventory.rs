//! `bitmountain inventory`: every sealed bundle with its files (path, size, type, SHA-256),
//! labels and storage locations, one JSON object per line (`--jsonl`), streamed page by page:
//! the inventory an archive keeps apart from its content (NDSA, "Information Security" and
//! "Metadata"). Format in `docs/formats.md`, "Inventory".

use std::io::Write as _;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};

use super::common::{self, ClusterArgs};
use super::units;

/// Bundles listed per page.
const PAGE_BUNDLES: u32 = 1000;
/// Indexes fetched at once.
const INDEXES_IN_FLIGHT: usize = 8;

#[derive(Debug, clap::Args)]
pub struct InventoryArgs {
    /// Only bundles with this label: KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE")]
    label: Option<String>,
    /// One JSON object per bundle and line (with every file); without it, one summary line per
    /// bundle.
    #[arg(long)]
    jsonl: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

pub fn run(args: InventoryArgs) -> anyhow::Result<()> {
    let label = args.label.as_deref().map(common::parse_label).transpose()?;
    let client = args.cluster.archive_client()?;
    common::client_runtime()?.block_on(async {
        let mut out = common::stdout();
        let mut token = String::new();
        let mut bundles = 0u64;
        loop {
            let (page, next) = client
                .list(
                    label.as_ref().map(|(k, v)| (k.as_str(), v.as_str())),
                    &token,
                    PAGE_BUNDLES,
                )
                .await
                .context("listing bundles")?;
            // Each page's indexes, a few at a time, written in listing order.
            let mut with_files = futures::stream::iter(page.into_iter().map(|b| {
                let client = &client;
                async move {
                    let files = client
                        .index(&b.bundle_id)
                        .await
                        .with_context(|| format!("reading the index of {}", b.bundle_id))?;
                    anyhow::Ok((b, files))
                }
            }))
            .buffered(INDEXES_IN_FLIGHT);
            while let Some((b, files)) = with_files.try_next().await? {
                bundles += 1;
                if args.jsonl {
                    let line = serde_json::json!({
                        "format": 1,
                        "bundle": &b,
                        "files": &*files,
                    });
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "{}  {:>8} files  {:>10}  {} shards on {} disks  {}",
                        b.bundle_id,
                        b.file_count,
                        units::bytes(b.length_bytes),
                        b.shards.len(),
                        b.shards
                            .iter()
                            .map(|s| s.disk_id)
                            .collect::<std::collections::BTreeSet<_>>()
                            .len(),
                        super::shard::format_labels(&b.labels)
                    )?;
                }
            }
            if next.is_empty() {
                break;
            }
            token = next;
        }
        out.flush()?;
        if !args.jsonl {
            eprintln!("{bundles} bundles");
        }
        anyhow::Ok(())
    })
}
