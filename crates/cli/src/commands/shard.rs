//! `bitmountain shard ...`: offline tools for erasure-coded shard files. Disaster recovery needs
//! them: with nothing but the binary and a directory of shard files, an operator can check which
//! shards are healthy and get the bundle back.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bitmountain_erasure::{
    read_shard_header, scan_shard, write_shard_files, BundleDescription, BundleId, BundleInfo,
    BundleReader, Candidate, Code, ErasureError, FileShardSource, IndexLocation,
};

use super::common;
use super::fsutil::AtomicFile;
use super::units;

#[derive(Debug, clap::Subcommand)]
pub enum ShardCommand {
    /// Erasure-code a bundle file into K+M shard files `<bundle-id>.<index>.shard` in DIR.
    Encode(EncodeArgs),
    /// Rebuild the bundle from whatever healthy shards DIR holds; checks its SHA-256.
    Decode(DecodeArgs),
    /// Check every shard in DIR (header, footer, every chunk's CRC) and say whether the bundle
    /// is recoverable. Exits non-zero when it is not.
    Verify(VerifyArgs),
    /// Write one file of the bundle to stdout, read straight from the shards in DIR (lost or
    /// corrupt chunks are reconstructed; the file's SHA-256 is checked).
    Cat(CatArgs),
}

#[derive(Debug, clap::Args)]
pub struct CatArgs {
    /// Directory holding the shard files.
    dir: PathBuf,
    /// Path of the file inside the bundle.
    path: String,
}

#[derive(Debug, clap::Args)]
pub struct EncodeArgs {
    /// The bundle file, or `-` to read the bundle from stdin as it streams (e.g. from
    /// `bundle pack DIR -o -`); its trailer is then read from the end of the stream.
    file: PathBuf,
    /// Number of data shards (k).
    #[arg(long = "data", value_name = "K")]
    data_shards: usize,
    /// Number of parity shards (m): any m shards may be lost.
    #[arg(long = "parity", value_name = "M")]
    parity_shards: usize,
    /// Cell size in bytes (a multiple of 64).
    #[arg(long, value_name = "N", default_value_t = bitmountain_erasure::code::DEFAULT_CELL_BYTES)]
    cell_bytes: u32,
    /// CRC32C chunk size in bytes.
    #[arg(long, value_name = "N", default_value_t = bitmountain_erasure::code::DEFAULT_CHUNK_BYTES)]
    chunk_bytes: u32,
    /// Output directory (created if missing).
    #[arg(short = 'o', long = "out", value_name = "DIR")]
    out_dir: PathBuf,
    /// Bundle id as 32 hex digits; random when absent.
    #[arg(long, value_name = "HEX")]
    bundle_id: Option<String>,
    /// Offset of the bundle's index; by default read from the bundle file's trailer.
    #[arg(long, requires = "index_length")]
    index_offset: Option<u64>,
    /// Length of the bundle's index; by default read from the bundle file's trailer.
    #[arg(long, requires = "index_offset")]
    index_length: Option<u64>,
    /// A label every shard's description carries (repeatable): KEY=VALUE.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
}

/// Where the bundle's index is (the flags, else the trailer; `no_trailer` says what is missing
/// when neither) and the description the shards carry: the labels given, now, the trailer's
/// file count.
fn index_and_description(
    args: &EncodeArgs,
    trailer: Option<bitmountain_bundle::Trailer>,
    no_trailer: impl FnOnce() -> String,
) -> anyhow::Result<(IndexLocation, BundleDescription)> {
    let index = match (args.index_offset, args.index_length, &trailer) {
        (Some(offset), Some(len), _) => IndexLocation { offset, len },
        (_, _, Some(t)) => IndexLocation {
            offset: t.index_offset,
            len: t.index_length,
        },
        _ => bail!(no_trailer()),
    };
    let description = BundleDescription {
        created_unix_ms: units::now_unix_ms(),
        file_count: trailer.map_or(0, |t| u64::from(t.file_count)),
        labels: common::parse_labels(&args.labels)?,
    };
    Ok((index, description))
}

#[derive(Debug, clap::Args)]
pub struct DecodeArgs {
    /// Directory holding the shard files.
    dir: PathBuf,
    /// Output bundle file (must not exist; written only if the whole bundle decodes and its
    /// SHA-256 matches).
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: PathBuf,
    /// Which bundle, when DIR holds shards of several.
    #[arg(long, value_name = "HEX")]
    bundle_id: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Directory holding the shard files.
    dir: PathBuf,
    /// Which bundle, when DIR holds shards of several.
    #[arg(long, value_name = "HEX")]
    bundle_id: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(command: ShardCommand) -> anyhow::Result<()> {
    match command {
        ShardCommand::Encode(args) => encode(args),
        ShardCommand::Decode(args) => decode(args),
        ShardCommand::Verify(args) => verify(args),
        ShardCommand::Cat(args) => cat(args),
    }
}

fn cat(args: CatArgs) -> anyhow::Result<()> {
    let reader = super::sharded_bundle::ShardedBundle::open_dir(&args.dir)?;
    let mut out = BufWriter::with_capacity(1 << 20, common::stdout());
    reader.copy_file(&args.path, &mut out).with_context(|| {
        format!(
            "reading {:?} from the shards in {}",
            args.path,
            args.dir.display()
        )
    })?;
    out.flush().context("writing to stdout")?;
    for line in reader.source().damage_report() {
        eprintln!("note: {line} (reconstructed from the other shards)");
    }
    Ok(())
}

fn parse_bundle_id(hex: &str) -> anyhow::Result<BundleId> {
    BundleId::from_hex(hex).with_context(|| format!("bundle id {hex:?} is not 32 hex digits"))
}

/// A random 128-bit id (also `meta recover`'s request id). `RandomState` is seeded from the
/// OS's randomness; two of them give two independent 64-bit halves (not for cryptography: an
/// id only needs to be unique).
pub(super) fn random_bundle_id() -> BundleId {
    let mut id = [0u8; 16];
    for half in id.chunks_exact_mut(8) {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        hasher.write_u32(std::process::id());
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    BundleId(id)
}

/// Encodes a bundle streamed on stdin: every byte goes straight into the stripe encoder (memory
/// is one stripe), while the last bytes are kept so the trailer can be read when the stream ends.
fn encode_stdin(args: &EncodeArgs, code: Code, bundle_id: BundleId) -> anyhow::Result<()> {
    use bitmountain_bundle::{Trailer, TRAILER_BYTES};
    use bitmountain_erasure::{shard_file_name, FileShardSink, StreamingWriter};
    use std::io::Read;

    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut sinks = Vec::with_capacity(code.total_shards());
    for i in 0..code.total_shards() {
        let path = args.out_dir.join(shard_file_name(bundle_id, i));
        sinks.push(
            FileShardSink::create(path.clone())
                .with_context(|| format!("creating {}", path.display()))?,
        );
    }
    let mut writer = StreamingWriter::new(code, bundle_id, sinks)?;
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut tail: Vec<u8> = Vec::with_capacity(2 * TRAILER_BYTES);
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the bundle from stdin"),
        };
        writer.write_bundle_bytes(&buf[..n])?;
        tail.extend_from_slice(&buf[n.saturating_sub(TRAILER_BYTES)..n]);
        let excess = tail.len().saturating_sub(TRAILER_BYTES);
        tail.drain(..excess);
    }
    let (index, description) = index_and_description(args, Trailer::decode(&tail).ok(), || {
        "the stream on stdin did not end with a bundle trailer; pass --index-offset and \
         --index-length"
            .into()
    })?;
    let (info, _sinks) = writer
        .finish(index, &description)
        .context("finishing the shard files")?;
    let mut out = common::stdout();
    writeln!(out, "bundle {}", info.bundle_id)?;
    writeln!(
        out,
        "length {} B, sha256 {}",
        info.bundle_len,
        hex::encode(info.sha256)
    )?;
    writeln!(out, "index {}+{}", info.index.offset, info.index.len)?;
    Ok(())
}

fn encode(args: EncodeArgs) -> anyhow::Result<()> {
    let code = Code::with_sizes(
        args.data_shards,
        args.parity_shards,
        args.cell_bytes,
        args.chunk_bytes,
    )?;
    let bundle_id = match &args.bundle_id {
        Some(hex) => parse_bundle_id(hex)?,
        None => random_bundle_id(),
    };
    if args.file.as_os_str() == "-" {
        return encode_stdin(&args, code, bundle_id);
    }
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let trailer = bitmountain_bundle::read_trailer(&file).ok();
    let (index, description) = index_and_description(&args, trailer, || {
        format!(
            "{} has no readable bundle trailer to locate its index; pass --index-offset and \
             --index-length (0 and 0 for a file that is not a bundle)",
            args.file.display()
        )
    })?;
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let (info, paths) = write_shard_files(
        &args.out_dir,
        code,
        bundle_id,
        &mut reader,
        index,
        &description,
    )
    .with_context(|| {
        format!(
            "encoding {} into {}",
            args.file.display(),
            args.out_dir.display()
        )
    })?;
    let mut out = common::stdout();
    writeln!(out, "bundle {}", info.bundle_id)?;
    writeln!(
        out,
        "code RS({},{}) cell {} B chunk {} B",
        code.data_shards(),
        code.parity_shards(),
        code.cell_bytes(),
        code.chunk_bytes()
    )?;
    writeln!(
        out,
        "length {} B, sha256 {}",
        info.bundle_len,
        hex::encode(info.sha256)
    )?;
    writeln!(out, "index {}+{}", info.index.offset, info.index.len)?;
    for path in paths {
        writeln!(out, "{}", path.display())?;
    }
    Ok(())
}

/// Shard files in `dir` (`*.shard`), sorted by name; restricted to one bundle when asked.
fn shard_files(dir: &Path, bundle_id: Option<BundleId>) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("reading directory {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("reading directory {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|e| e == "shard") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if let Some(id) = bundle_id {
        let prefix = format!("{id}.");
        files.retain(|p| {
            // A file whose header is unreadable still counts if its name says it is ours.
            let named = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix));
            let header = FileShardSource::open(p)
                .ok()
                .and_then(|s| read_shard_header(&s).ok());
            header.map_or(named, |h| h.bundle_id == id)
        });
    }
    if files.is_empty() {
        bail!("no shard files (*.shard) in {}", dir.display());
    }
    Ok(files)
}

/// The shard index a file name claims (`<id>.<index>.shard`), for files whose header is gone.
fn index_from_name(path: &Path) -> Option<u16> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".shard")?;
    stem.rsplit_once('.')?.1.parse().ok()
}

/// Health of one shard slot.
#[derive(Debug)]
struct SlotHealth {
    index: u16,
    status: &'static str,
    file: Option<PathBuf>,
    corrupt_chunks: Vec<u64>,
    detail: Option<String>,
}

/// What a directory of shard files holds: the opened bundle plus the health of every slot.
struct DirReport {
    info: BundleInfo,
    slots: Vec<SlotHealth>,
    rejected: Vec<(PathBuf, String)>,
}

impl DirReport {
    /// Shards that cannot be used in full: missing, bad header, corrupt.
    fn damaged(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter(|s| s.status != "ok")
            .map(|s| match (s.status, s.corrupt_chunks.len()) {
                ("corrupt", n) => format!("shard {} ({n} corrupt chunks)", s.index),
                (status, _) => format!("shard {} ({status})", s.index),
            })
            .collect()
    }

    /// Whether every chunk column still has k healthy shards.
    fn recoverable(&self) -> bool {
        let layout = match self.info.layout() {
            Ok(layout) => layout,
            Err(_) => return false,
        };
        let k = self.info.code.data_shards();
        let usable: Vec<&SlotHealth> = self
            .slots
            .iter()
            .filter(|s| matches!(s.status, "ok" | "corrupt" | "bad footer"))
            .collect();
        if usable.len() < k && layout.chunk_count() > 0 {
            return false;
        }
        // Only chunks someone lost can fall short; check those columns.
        let mut columns: Vec<u64> = usable
            .iter()
            .flat_map(|s| s.corrupt_chunks.iter().copied())
            .collect();
        columns.sort_unstable();
        columns.dedup();
        columns.iter().all(|c| {
            usable
                .iter()
                .filter(|s| !s.corrupt_chunks.contains(c))
                .count()
                >= k
        })
    }
}

/// Opens the shard files of `dir` and, when `scan`, checks every chunk of every shard.
fn examine(
    dir: &Path,
    bundle_id: Option<BundleId>,
    scan: bool,
) -> anyhow::Result<(DirReport, BundleReader<FileShardSource>)> {
    let files = shard_files(dir, bundle_id)?;
    let mut sources = Vec::new();
    let mut rejected = Vec::new();
    let mut opened_files = Vec::new();
    for path in &files {
        match FileShardSource::open(path) {
            Ok(src) => {
                sources.push(src);
                opened_files.push(path.clone());
            }
            Err(e) => rejected.push((path.clone(), format!("cannot open: {e}"))),
        }
    }
    let (reader, outcome) = BundleReader::open(sources).map_err(|e| match e {
        ErasureError::NoShards { .. } | ErasureError::NoBundleInfo { .. } => anyhow::anyhow!(
            "{e}; files: {}",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.into(),
    })?;
    let info = *reader.info();
    let layout = info.layout()?;
    let total = info.code.total_shards();
    let mut slots: Vec<SlotHealth> = (0..total as u16)
        .map(|index| SlotHealth {
            index,
            status: "missing",
            file: None,
            corrupt_chunks: Vec::new(),
            detail: None,
        })
        .collect();
    for (path, candidate) in opened_files.iter().zip(outcome) {
        match candidate {
            Candidate::Placed {
                shard_index,
                footer_error,
            } => {
                let slot = &mut slots[usize::from(shard_index)];
                slot.file = Some(path.clone());
                slot.status = if footer_error.is_some() {
                    "bad footer"
                } else {
                    "ok"
                };
                slot.detail = footer_error;
                if scan {
                    let src = FileShardSource::open(path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    slot.corrupt_chunks = scan_shard(&src, &layout, shard_index)?;
                    if !slot.corrupt_chunks.is_empty() && slot.status == "ok" {
                        slot.status = "corrupt";
                    }
                }
            }
            Candidate::Rejected {
                shard_index,
                reason,
            } => {
                let index = shard_index.or_else(|| index_from_name(path));
                // Attribute a file with a bad header to its slot by name, if that slot is empty.
                let fill = index
                    .and_then(|i| slots.get_mut(usize::from(i)))
                    .filter(|slot| slot.file.is_none());
                match fill {
                    Some(slot) => {
                        slot.status = "bad header";
                        slot.file = Some(path.clone());
                        slot.detail = Some(reason);
                    }
                    None => rejected.push((path.clone(), reason)),
                }
            }
        }
    }
    Ok((
        DirReport {
            info,
            slots,
            rejected,
        },
        reader,
    ))
}

fn decode(args: DecodeArgs) -> anyhow::Result<()> {
    let bundle_id = args.bundle_id.as_deref().map(parse_bundle_id).transpose()?;
    let (report, mut reader) = examine(&args.dir, bundle_id, false)?;
    let info = report.info;
    let mut out = AtomicFile::create(&args.out)?;
    let result = {
        let mut writer = BufWriter::with_capacity(1 << 20, out.file_mut());
        reader.read_bundle(&mut writer).and_then(|()| {
            writer.flush().map_err(|e| ErasureError::Io {
                shard_index: None,
                context: "writing the bundle".into(),
                source: e,
            })
        })
    };
    if let Err(e) = result {
        // `out` is dropped here: the temporary file goes, no partial output is left.
        let mut damaged = report.damaged();
        for lost in reader.lost_chunks() {
            let label = format!(
                "shard {} chunk {} ({:?})",
                lost.shard, lost.chunk, lost.kind
            );
            damaged.push(label);
        }
        for (path, reason) in &report.rejected {
            damaged.push(format!("{}: {reason}", path.display()));
        }
        bail!(
            "bundle {} ({}, {} of {} shards needed) cannot be decoded from {}: {e}; damaged: {}",
            info.bundle_id,
            info.code,
            info.code.data_shards(),
            info.code.total_shards(),
            args.dir.display(),
            if damaged.is_empty() {
                "none found".to_string()
            } else {
                damaged.join(", ")
            }
        );
    }
    out.commit()?;
    let lost = reader.lost_chunks();
    let damaged = report.damaged();
    if !damaged.is_empty() || !lost.is_empty() {
        eprintln!(
            "warning: bundle {} decoded around damage: {}{} lost chunks reconstructed",
            info.bundle_id,
            if damaged.is_empty() {
                String::new()
            } else {
                format!("{}; ", damaged.join(", "))
            },
            lost.len()
        );
    }
    writeln!(
        common::stdout(),
        "bundle {}: {} bytes, sha256 {} verified, written to {}",
        info.bundle_id,
        info.bundle_len,
        hex::encode(info.sha256),
        args.out.display()
    )?;
    Ok(())
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let bundle_id = args.bundle_id.as_deref().map(parse_bundle_id).transpose()?;
    let (report, reader) = examine(&args.dir, bundle_id, true)?;
    let info = report.info;
    let recoverable = report.recoverable();
    let healthy = report.slots.iter().filter(|s| s.status == "ok").count();
    let state = if healthy == info.code.total_shards() {
        "healthy"
    } else if recoverable {
        "degraded"
    } else {
        "unrecoverable"
    };
    if args.json {
        let shards: Vec<serde_json::Value> = report
            .slots
            .iter()
            .map(|s| {
                serde_json::json!({
                    "index": s.index,
                    "status": s.status,
                    "file": s.file.as_ref().map(|f| f.display().to_string()),
                    "corrupt_chunks": s.corrupt_chunks,
                    "detail": s.detail,
                })
            })
            .collect();
        let rejected: Vec<serde_json::Value> = report
            .rejected
            .iter()
            .map(|(f, r)| serde_json::json!({"file": f.display().to_string(), "reason": r}))
            .collect();
        let doc = serde_json::json!({
            "bundle_id": info.bundle_id.to_hex(),
            "data_shards": info.code.data_shards(),
            "parity_shards": info.code.parity_shards(),
            "cell_bytes": info.code.cell_bytes(),
            "chunk_bytes": info.code.chunk_bytes(),
            "bundle_len": info.bundle_len,
            "sha256": hex::encode(info.sha256),
            "index_offset": info.index.offset,
            "index_len": info.index.len,
            "description": reader.description().map(description_json),
            "healthy_shards": healthy,
            "state": state,
            "recoverable": recoverable,
            "shards": shards,
            "rejected_files": rejected,
        });
        common::print_json(&doc)?;
    } else {
        let mut out = common::stdout();
        writeln!(
            out,
            "bundle {} {} length {} B",
            info.bundle_id, info.code, info.bundle_len
        )?;
        match reader.description() {
            Some(d) => writeln!(
                out,
                "created {} ({} ms), {} files, labels {}",
                units::time(d.created_unix_ms),
                d.created_unix_ms,
                d.file_count,
                format_labels(&d.labels)
            )?,
            None => writeln!(out, "no description (shard format version 1)")?,
        }
        for s in &report.slots {
            let file = s
                .file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default();
            let mut line = format!("shard {:>3}  {:<10}  {file}", s.index, s.status);
            if !s.corrupt_chunks.is_empty() {
                line.push_str(&format!("  corrupt chunks {:?}", s.corrupt_chunks));
            }
            if let Some(detail) = &s.detail {
                line.push_str(&format!("  ({detail})"));
            }
            writeln!(out, "{line}")?;
        }
        for (path, reason) in &report.rejected {
            writeln!(out, "ignored {}: {reason}", path.display())?;
        }
        writeln!(
            out,
            "{state}: {healthy} of {} shards healthy, {} needed",
            info.code.total_shards(),
            info.code.data_shards()
        )?;
    }
    if !recoverable {
        bail!(
            "bundle {} is not recoverable: {}",
            info.bundle_id,
            report.damaged().join(", ")
        );
    }
    Ok(())
}

/// A description as JSON (shared by `shard verify` and `recover scan`).
pub fn description_json(d: &BundleDescription) -> serde_json::Value {
    serde_json::json!({
        "created_unix_ms": d.created_unix_ms,
        "file_count": d.file_count,
        "labels": d.labels,
    })
}

/// Labels as `k=v,k=v` (`-` for none).
pub fn format_labels(labels: &std::collections::BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
