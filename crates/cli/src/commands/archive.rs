//! Client commands for people: `put`, `get`, `cat`, `ls`, `export`, `rm`. They talk to any
//! storage node through the client library (`bitmountain-client`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bitmountain_client::{Code, PutOptions};
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{self, ClusterArgs};
use super::fsutil::AtomicFile;
use super::units;

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// Directory whose files become one bundle (paths relative to it).
    #[arg(required_unless_present = "bagit", conflicts_with = "bagit")]
    dir: Option<PathBuf>,
    /// A BagIt bag (RFC 8493) to upload as one bundle, keeping its paths: checked complete and
    /// valid before a byte is sent, its manifests' digests checked again by the cluster.
    #[arg(long, value_name = "BAG", conflicts_with = "manifest")]
    bagit: Option<PathBuf>,
    /// With --bagit: this bag-info.txt field becomes a label FIELD=value (repeatable).
    #[arg(long, value_name = "FIELD", requires = "bagit")]
    label_from_bag_info: Vec<String>,
    /// A label to find the bundle by (repeatable): KEY=VALUE.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Erasure code K+M (e.g. 10+4), or K+M:CELL_BYTES; default: the cluster's.
    #[arg(long)]
    code: Option<String>,
    /// Refuse deletes of the bundle before this date (`2036-01-31` or RFC 3339), in UTC;
    /// retention can later be extended, never shortened.
    #[arg(long, value_name = "DATE", conflicts_with = "retain")]
    retain_until: Option<String>,
    /// Refuse deletes of the bundle for this long from now (`10y`, `90days`).
    #[arg(long, value_name = "DURATION")]
    retain: Option<String>,
    /// The files' SHA-256 digests (`sha256sum` format, paths relative to DIR): every file must
    /// be listed, and the cluster refuses the upload (`digest_mismatch`) if a file's bytes
    /// differ from its digest when they arrive.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// BUNDLE_ID/PATH of the file.
    file: String,
    /// Output file (default: the file's name in the current directory; `-` for stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// First byte to read.
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Bytes to read (default: to the end).
    #[arg(long)]
    length: Option<u64>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, clap::Args)]
pub struct CatArgs {
    /// BUNDLE_ID/PATH of the file.
    file: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// A bundle id: list its files. Without: list bundles.
    bundle: Option<String>,
    /// Only bundles with this label: KEY=VALUE.
    #[arg(long)]
    label: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Bundle id.
    bundle: String,
    /// Output file (default: stdout); with --bagit, the bag's directory (must not exist).
    #[arg(short, long, required_if_eq("bagit", "true"))]
    output: Option<PathBuf>,
    /// Write a BagIt bag (RFC 8493): a bundle uploaded from a bag comes back as that bag, byte
    /// for byte; any other becomes `data/` with manifests and bag-info.
    #[arg(long)]
    bagit: bool,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Bundle id.
    bundle: String,
    /// Why the bundle goes (required; logged by the node and the metadata group).
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Print the deleted bundle's record as JSON.
    #[arg(long)]
    json: bool,
}

/// Splits `BUNDLE_ID/PATH`.
fn split_file(text: &str) -> anyhow::Result<(&str, &str)> {
    match text.split_once('/') {
        Some((id, path)) if !id.is_empty() && !path.is_empty() => Ok((id, path)),
        _ => bail!("{text:?}: expected BUNDLE_ID/PATH (e.g. 0192f3.../pages/0001.tif)"),
    }
}

/// How often the progress bar reads the upload's byte counter.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Shows the upload's progress on stderr until `stop` is set, when stderr is a terminal (a
/// script's log gets the summary line alone).
fn progress_bar(
    total: u64,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let style = ProgressStyle::with_template(
            "{bytes} / {total_bytes}  {binary_bytes_per_sec}  ETA {eta}  {wide_bar}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::new(total).with_style(style);
        while !stop.load(Ordering::Relaxed) {
            bar.set_position(sent.load(Ordering::Relaxed));
            std::thread::sleep(PROGRESS_INTERVAL);
        }
        bar.finish_and_clear();
    })
}

pub fn put(args: PutArgs) -> anyhow::Result<()> {
    let mut labels = common::parse_labels(&args.labels)?;
    let code = match &args.code {
        Some(text) => Some(Code::parse(text).with_context(|| {
            format!("--code {text:?}: expected K+M (e.g. 10+4) or K+M:CELL_BYTES")
        })?),
        None => None,
    };
    let (root, expected_sha256) = match (&args.dir, &args.bagit) {
        (_, Some(bag)) => {
            let valid = super::bagit::validate(bag).with_context(|| {
                format!("{} is not a valid bag; nothing was uploaded", bag.display())
            })?;
            for name in &valid.unverified {
                eprintln!("warning: {name} was not checked (its algorithm is not computed here); the bag's SHA-256/512 manifests were");
            }
            for field in &args.label_from_bag_info {
                let value = valid
                    .info
                    .iter()
                    .find(|(k, _)| k == field)
                    .map(|(_, v)| v.clone())
                    .with_context(|| {
                        format!("--label-from-bag-info {field}: bag-info.txt has no such field")
                    })?;
                labels.insert(field.clone(), value);
            }
            (bag.clone(), valid.sha256)
        }
        (Some(dir), None) => (dir.clone(), dir_digests(dir, args.manifest.as_deref())?),
        (None, None) => bail!("say what to upload: a directory, or --bagit BAG"),
    };
    let files = bitmountain_client::walk::walk_files(&root)?;
    let total: u64 = files.iter().map(|f| f.len_bytes).sum();
    let sent = Arc::new(AtomicU64::new(0));
    let options = PutOptions {
        labels,
        code,
        progress: Some(Arc::clone(&sent)),
        expected_sha256,
        retain_until_unix_ms: super::preserve::retention(
            args.retain_until.as_deref(),
            args.retain.as_deref(),
        )?,
    };
    let client = args.cluster.archive_client()?;
    let stop = Arc::new(AtomicBool::new(false));
    let bar = progress_bar(total, sent, Arc::clone(&stop));
    let started = Instant::now();
    let result = common::client_runtime()?.block_on(client.put_dir(&root, &options));
    stop.store(true, Ordering::Relaxed);
    let _ = bar.join();
    let result = result.with_context(|| format!("uploading {}", root.display()))?;
    if args.json {
        return common::print_json(&result);
    }
    let elapsed = started.elapsed();
    eprintln!(
        "stored {} files, {} ({} as a bundle) as {} in {} ({}){}",
        result.file_count,
        units::bytes(total),
        units::bytes(result.length_bytes),
        result
            .code
            .map_or("the default code".to_string(), |c| c.to_string()),
        units::duration(elapsed),
        units::bytes_per_sec(total as f64 / elapsed.as_secs_f64().max(0.001)),
        if result.missing_shards.is_empty() {
            String::new()
        } else {
            format!(
                "; shards {:?} were not written and are queued for repair",
                result.missing_shards
            )
        }
    );
    writeln!(common::stdout(), "{}", result.bundle_id)?;
    Ok(())
}

/// The expected digests of a directory's upload: a `--manifest`'s, which must list every file.
fn dir_digests(
    dir: &Path,
    manifest: Option<&Path>,
) -> anyhow::Result<std::collections::BTreeMap<String, [u8; 32]>> {
    let Some(path) = manifest else {
        return Ok(Default::default());
    };
    let digests = super::manifest::read(path)?;
    let files = bitmountain_client::walk::walk_files(dir)?;
    if let Some(f) = files.iter().find(|f| !digests.contains_key(&f.relative)) {
        bail!(
            "{} is not in the manifest {}: with --manifest every file needs its digest",
            f.relative,
            path.display()
        );
    }
    Ok(digests)
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let (id, path) = split_file(&args.file)?;
    let client = args.cluster.archive_client()?;
    let rt = common::client_runtime()?;
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    if to_stdout {
        let mut out = common::stdout();
        rt.block_on(client.get_file(id, path, args.offset, args.length, &mut out))?;
        return out.flush().context("writing to stdout");
    }
    let target = match &args.output {
        Some(p) => p.clone(),
        None => PathBuf::from(path.rsplit('/').next().unwrap_or(path)),
    };
    let mut file = AtomicFile::create(&target)?;
    rt.block_on(client.get_file(id, path, args.offset, args.length, file.file_mut()))
        .with_context(|| format!("reading {id}/{path}"))?;
    file.commit()?;
    eprintln!("wrote {}", target.display());
    Ok(())
}

pub fn cat(args: CatArgs) -> anyhow::Result<()> {
    let (id, path) = split_file(&args.file)?;
    let client = args.cluster.archive_client()?;
    let mut out = common::stdout();
    common::client_runtime()?
        .block_on(client.get_file(id, path, 0, None, &mut out))
        .with_context(|| format!("reading {id}/{path}"))?;
    out.flush().context("writing to stdout")
}

pub fn ls(args: LsArgs) -> anyhow::Result<()> {
    let client = args.cluster.archive_client()?;
    let rt = common::client_runtime()?;
    if let Some(id) = &args.bundle {
        let files = rt.block_on(client.index(id))?;
        if args.json {
            return common::print_json(&*files);
        }
        let mut out = common::stdout();
        for f in files.iter() {
            writeln!(
                out,
                "{:>10}  {:<28} {}",
                units::bytes(f.size_bytes),
                f.content_type,
                f.path
            )?;
        }
        return Ok(());
    }
    let label = args.label.as_deref().map(common::parse_label).transpose()?;
    let bundles =
        rt.block_on(client.list_all(label.as_ref().map(|(k, v)| (k.as_str(), v.as_str()))))?;
    if args.json {
        return common::print_json(&bundles);
    }
    let mut out = common::stdout();
    for b in &bundles {
        let labels: Vec<String> = b.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "{}  {:>8} files  {:>10}  {:<9} {}",
            b.bundle_id,
            b.file_count,
            units::bytes(b.length_bytes),
            b.code.map_or(String::new(), |c| c.to_string()),
            labels.join(",")
        )?;
    }
    Ok(())
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.cluster.archive_client()?;
    let rt = common::client_runtime()?;
    if args.bagit {
        let dir = args.output.as_deref().context("--bagit needs -o DIR")?;
        let bag = rt.block_on(super::bagit_export::export(&client, &args.bundle, dir))?;
        eprintln!(
            "wrote bag {} ({} payload files, {}){}",
            dir.display(),
            bag.payload_files,
            units::bytes(bag.payload_bytes),
            if bag.unchanged { ", as uploaded" } else { "" }
        );
        return Ok(());
    }
    match &args.output {
        None => {
            let mut out = common::stdout();
            rt.block_on(client.export(&args.bundle, &mut out))?;
            out.flush().context("writing to stdout")
        }
        Some(target) => {
            let mut file = AtomicFile::create(target)?;
            let bytes = rt
                .block_on(client.export(&args.bundle, file.file_mut()))
                .with_context(|| format!("exporting {}", args.bundle))?;
            file.commit()?;
            eprintln!("wrote {} ({})", target.display(), units::bytes(bytes));
            Ok(())
        }
    }
}

pub fn rm(args: RmArgs) -> anyhow::Result<()> {
    let client = args.cluster.archive_client()?;
    let bundle = common::client_runtime()?.block_on(client.delete(&args.bundle, &args.reason))?;
    if args.json {
        common::print_json(&bundle)?;
    } else {
        eprintln!("deleted {} ({} files)", bundle.bundle_id, bundle.file_count);
    }
    Ok(())
}
