//! Client commands for people: `put`, `get`, `cat`, `ls`, `export`, `rm`. They talk to any
//! storage node through the client library (`bitmountain-client`).

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bitmountain_client::{ArchiveClient, Code, PutOptions};

use super::fsutil::AtomicFile;

/// Default node address: where `bitmountain dev` serves the public API.
pub const DEFAULT_CLUSTER: &str = "127.0.0.1:7700";

/// How to reach the cluster.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArg {
    /// Any storage node (host:port; a comma-separated list to fail over).
    #[arg(long, env = "BITMOUNTAIN_CLUSTER", default_value = DEFAULT_CLUSTER)]
    pub cluster: String,
}

impl ClusterArg {
    fn client(&self) -> anyhow::Result<ArchiveClient> {
        Ok(ArchiveClient::new([self.cluster.as_str()])?)
    }
}

#[derive(Debug, clap::Args)]
pub struct PutArgs {
    /// Directory whose files become one bundle (paths relative to it).
    dir: PathBuf,
    /// A label to find the bundle by (repeatable): KEY=VALUE.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Erasure code K+M (e.g. 10+4), or K+M:CELL_BYTES; default: the cluster's.
    #[arg(long)]
    code: Option<String>,
    #[command(flatten)]
    cluster: ClusterArg,
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
    cluster: ClusterArg,
}

#[derive(Debug, clap::Args)]
pub struct CatArgs {
    /// BUNDLE_ID/PATH of the file.
    file: String,
    #[command(flatten)]
    cluster: ClusterArg,
}

#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// A bundle id: list its files. Without: list bundles.
    bundle: Option<String>,
    /// Only bundles with this label: KEY=VALUE.
    #[arg(long)]
    label: Option<String>,
    #[command(flatten)]
    cluster: ClusterArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Bundle id.
    bundle: String,
    /// Output file (default: stdout).
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArg,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Bundle id.
    bundle: String,
    #[command(flatten)]
    cluster: ClusterArg,
    /// Print the deleted bundle's record as JSON.
    #[arg(long)]
    json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn parse_label(text: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = text
        .split_once('=')
        .with_context(|| format!("label {text:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        bail!("label {text:?}: the key is empty");
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Splits `BUNDLE_ID/PATH`.
fn split_file(text: &str) -> anyhow::Result<(&str, &str)> {
    match text.split_once('/') {
        Some((id, path)) if !id.is_empty() && !path.is_empty() => Ok((id, path)),
        _ => bail!("{text:?}: expected BUNDLE_ID/PATH (e.g. 0192f3.../pages/0001.tif)"),
    }
}

fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Prints a progress line to stderr while `done` runs (only on a terminal).
fn progress_bar(
    total: u64,
    sent: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let start = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            let done = sent.load(Ordering::Relaxed);
            let secs = start.elapsed().as_secs_f64().max(0.001);
            let rate = done as f64 / secs;
            let eta = if rate > 0.0 && total > done {
                format!("{:.0} s", (total - done) as f64 / rate)
            } else {
                "-".into()
            };
            eprint!(
                "\r{} / {}  {}/s  ETA {eta}        ",
                human_bytes(done as f64),
                human_bytes(total as f64),
                human_bytes(rate)
            );
        }
        eprintln!();
    })
}

pub fn put(args: PutArgs) -> anyhow::Result<()> {
    let mut labels = BTreeMap::new();
    for l in &args.labels {
        let (k, v) = parse_label(l)?;
        if labels.insert(k.clone(), v).is_some() {
            bail!("label {k:?} is given twice");
        }
    }
    let code = match &args.code {
        Some(text) => Some(Code::parse(text).with_context(|| {
            format!("--code {text:?}: expected K+M (e.g. 10+4) or K+M:CELL_BYTES")
        })?),
        None => None,
    };
    let files = bitmountain_client::walk::walk_files(&args.dir)?;
    let total: u64 = files.iter().map(|f| f.len_bytes).sum();
    let sent = Arc::new(AtomicU64::new(0));
    let options = PutOptions {
        labels,
        code,
        progress: Some(Arc::clone(&sent)),
    };
    let client = args.cluster.client()?;
    let stop = Arc::new(AtomicBool::new(false));
    let bar = progress_bar(total, sent, Arc::clone(&stop));
    let started = Instant::now();
    let result = runtime()?.block_on(client.put_dir(&args.dir, &options));
    stop.store(true, Ordering::Relaxed);
    let _ = bar.join();
    let result = result.with_context(|| format!("uploading {}", args.dir.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "stored {} files, {} ({} bundle bytes) as {} in {secs:.1} s ({}/s){}",
        result.file_count,
        human_bytes(total as f64),
        result.length_bytes,
        result
            .code
            .map_or("the default code".to_string(), |c| c.to_string()),
        human_bytes(total as f64 / secs.max(0.001)),
        if result.missing_shards.is_empty() {
            String::new()
        } else {
            format!(
                "; shards {:?} were not written and are queued for repair",
                result.missing_shards
            )
        }
    );
    println!("{}", result.bundle_id);
    Ok(())
}

pub fn get(args: GetArgs) -> anyhow::Result<()> {
    let (id, path) = split_file(&args.file)?;
    let client = args.cluster.client()?;
    let rt = runtime()?;
    let to_stdout = args.output.as_deref() == Some(Path::new("-"));
    if to_stdout {
        let mut out = std::io::stdout();
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
    let client = args.cluster.client()?;
    let mut out = std::io::stdout();
    runtime()?
        .block_on(client.get_file(id, path, 0, None, &mut out))
        .with_context(|| format!("reading {id}/{path}"))?;
    out.flush().context("writing to stdout")
}

pub fn ls(args: LsArgs) -> anyhow::Result<()> {
    let client = args.cluster.client()?;
    let rt = runtime()?;
    if let Some(id) = &args.bundle {
        let files = rt.block_on(client.index(id))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&*files)?);
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        for f in files.iter() {
            writeln!(
                out,
                "{:>14}  {:<28} {}",
                f.size_bytes, f.content_type, f.path
            )?;
        }
        return Ok(());
    }
    let label = args.label.as_deref().map(parse_label).transpose()?;
    let bundles =
        rt.block_on(client.list_all(label.as_ref().map(|(k, v)| (k.as_str(), v.as_str()))))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&bundles)?);
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    for b in &bundles {
        let labels: Vec<String> = b.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "{}  {:>8} files  {:>14} B  {:<9} {}",
            b.bundle_id,
            b.file_count,
            b.length_bytes,
            b.code.map_or(String::new(), |c| c.to_string()),
            labels.join(",")
        )?;
    }
    Ok(())
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let client = args.cluster.client()?;
    let rt = runtime()?;
    match &args.output {
        None => {
            let mut out = std::io::stdout();
            rt.block_on(client.export(&args.bundle, &mut out))?;
            out.flush().context("writing to stdout")
        }
        Some(target) => {
            let mut file = AtomicFile::create(target)?;
            let bytes = rt
                .block_on(client.export(&args.bundle, file.file_mut()))
                .with_context(|| format!("exporting {}", args.bundle))?;
            file.commit()?;
            eprintln!("wrote {} ({bytes} bytes)", target.display());
            Ok(())
        }
    }
}

pub fn rm(args: RmArgs) -> anyhow::Result<()> {
    let client = args.cluster.client()?;
    let bundle = runtime()?.block_on(client.delete(&args.bundle))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&bundle)?);
    } else {
        eprintln!("deleted {} ({} files)", bundle.bundle_id, bundle.file_count);
    }
    Ok(())
}
