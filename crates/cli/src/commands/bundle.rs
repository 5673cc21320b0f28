//! `bitmountain bundle ...`: offline tools for standalone bundle files. They need nothing but
//! this binary, so a bundle exported from a cluster (or decoded from shard files) stays usable
//! when everything else is gone.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bitmountain_bundle::{
    content_type_for_path, BundleReader, BundleWriter, IndexEntry, WriterOptions,
};
use serde::Serialize;

use super::common;
use super::fsutil::{self, AtomicFile};

/// Output buffer for bundle and file writes.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Pack a directory tree into one bundle file.
    Pack {
        /// Directory whose files become the bundle (paths relative to it).
        dir: PathBuf,
        /// Bundle file to write (written under a temporary name, renamed when complete), or `-`
        /// to stream the bundle to stdout (e.g. into `shard encode -`).
        #[arg(short, long)]
        output: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the files of a bundle.
    Ls {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Write one file's bytes to stdout (checked against its SHA-256 unless a range is given).
    Cat {
        file: PathBuf,
        /// Path of the file inside the bundle.
        path: String,
        /// First byte of a range within the file.
        #[arg(long, requires = "length")]
        offset: Option<u64>,
        /// Number of bytes of the range.
        #[arg(long, requires = "offset")]
        length: Option<u64>,
    },
    /// Check a bundle's structure and every file's SHA-256.
    Verify {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Extract every file of a bundle into a new or empty directory.
    Unpack {
        file: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
}

pub fn run(command: BundleCommand) -> anyhow::Result<()> {
    match command {
        BundleCommand::Pack { dir, output, json } => {
            let to_stdout = output.as_os_str() == "-";
            let summary = if to_stdout {
                let files = fsutil::walk_files(&dir)?;
                write_bundle(&files, common::stdout())?
            } else {
                pack_dir(&dir, &output)?
            };
            if to_stdout {
                eprintln!(
                    "packed {} files ({} bytes of content) to stdout ({} bytes)",
                    summary.file_count, summary.content_bytes, summary.bundle_bytes
                );
            } else if json {
                common::print_json(&summary)?;
            } else {
                writeln!(
                    common::stdout(),
                    "packed {} files ({} bytes of content) into {} ({} bytes, index at {}+{})",
                    summary.file_count,
                    summary.content_bytes,
                    output.display(),
                    summary.bundle_bytes,
                    summary.index_offset,
                    summary.index_length
                )?;
            }
            Ok(())
        }
        BundleCommand::Ls { file, json } => {
            let reader = open_bundle(&file)?;
            print_listing(reader.index().entries(), json)
        }
        BundleCommand::Cat {
            file,
            path,
            offset,
            length,
        } => {
            let reader = open_bundle(&file)?;
            let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, common::stdout());
            match (offset, length) {
                (Some(offset), Some(length)) => {
                    reader.read_range(&path, offset, length, &mut out)?
                }
                _ => {
                    reader.copy_file(&path, &mut out)?;
                }
            }
            out.flush().context("writing to stdout")?;
            Ok(())
        }
        BundleCommand::Verify { file, json } => verify(&file, json),
        BundleCommand::Unpack { file, output } => {
            let reader = open_bundle(&file)?;
            let count = unpack(&reader, &output)?;
            writeln!(
                common::stdout(),
                "unpacked {count} files into {}",
                output.display()
            )?;
            Ok(())
        }
    }
}

fn open_bundle(path: &Path) -> anyhow::Result<BundleReader<File>> {
    let file = File::open(path).with_context(|| format!("opening bundle {}", path.display()))?;
    BundleReader::open(file).with_context(|| format!("reading bundle {}", path.display()))
}

/// What `pack` reports.
#[derive(Debug, Serialize)]
pub struct PackSummary {
    pub file_count: u64,
    pub content_bytes: u64,
    pub bundle_bytes: u64,
    pub index_offset: u64,
    pub index_length: u64,
}

/// Packs every regular file under `dir` into a bundle at `output`.
pub fn pack_dir(dir: &Path, output: &Path) -> anyhow::Result<PackSummary> {
    let files = fsutil::walk_files(dir)?;
    let mut atomic = AtomicFile::create(output)?;
    let packed = write_bundle(&files, atomic.file_mut())?;
    atomic.commit()?;
    Ok(packed)
}

fn write_bundle(files: &[fsutil::WalkedFile], out: impl Write) -> anyhow::Result<PackSummary> {
    let sink = BufWriter::with_capacity(WRITE_BUFFER_BYTES, out);
    let mut writer = BundleWriter::new(sink, WriterOptions::default())?;
    for file in files {
        let source = File::open(&file.absolute)
            .with_context(|| format!("opening {}", file.absolute.display()))?;
        writer
            .add_file(
                &file.relative,
                content_type_for_path(&file.relative),
                file.len_bytes,
                source,
            )
            .with_context(|| format!("packing {}", file.absolute.display()))?;
    }
    let summary = writer.finish()?;
    let mut sink = summary.output;
    sink.flush().context("flushing the bundle")?;
    Ok(PackSummary {
        file_count: summary.file_count,
        content_bytes: summary.content_bytes,
        bundle_bytes: summary.bundle_bytes,
        index_offset: summary.index_offset,
        index_length: summary.index_length,
    })
}

#[derive(Debug, Serialize)]
struct ListedFile<'a> {
    path: &'a str,
    content_type: &'a str,
    offset: u64,
    length: u64,
    sha256: String,
}

/// Prints an index as a table or as JSON (shared with `shard cat`/`ls`-style tools).
pub fn print_listing(entries: &[IndexEntry], json: bool) -> anyhow::Result<()> {
    if json {
        let listed: Vec<ListedFile<'_>> = entries
            .iter()
            .map(|e| ListedFile {
                path: &e.path,
                content_type: &e.content_type,
                offset: e.offset,
                length: e.length,
                sha256: hex::encode(e.sha256),
            })
            .collect();
        return common::print_json(&listed);
    }
    let mut out = BufWriter::new(common::stdout());
    for e in entries {
        writeln!(out, "{:>14}  {:<28}  {}", e.length, e.content_type, e.path)?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Debug, Serialize)]
struct VerifyOutput {
    ok: bool,
    files_checked: u64,
    bytes_checked: u64,
    problems: Vec<String>,
}

fn verify(path: &Path, json: bool) -> anyhow::Result<()> {
    let reader = open_bundle(path)?;
    let report = reader
        .verify()
        .with_context(|| format!("bundle {} is damaged", path.display()))?;
    let output = VerifyOutput {
        ok: report.corrupt_files.is_empty(),
        files_checked: report.files_checked,
        bytes_checked: report.bytes_checked,
        problems: report
            .corrupt_files
            .iter()
            .map(ToString::to_string)
            .collect(),
    };
    if json {
        common::print_json(&output)?;
    } else {
        let mut out = common::stdout();
        for problem in &output.problems {
            writeln!(out, "CORRUPT {problem}")?;
        }
        writeln!(
            out,
            "{}: {} files, {} bytes checked, {} corrupt",
            path.display(),
            output.files_checked,
            output.bytes_checked,
            output.problems.len()
        )?;
    }
    if !output.ok {
        bail!(
            "{} of {} files in {} are corrupt",
            output.problems.len(),
            output.files_checked,
            path.display()
        );
    }
    Ok(())
}

/// Extracts every file, each verified before it is renamed into place. Files that fail are
/// reported together at the end; the others are still extracted (disaster recovery wants every
/// good byte back).
pub fn unpack<R: bitmountain_bundle::ReadAt>(
    reader: &BundleReader<R>,
    output: &Path,
) -> anyhow::Result<usize> {
    fsutil::create_empty_dir(output)?;
    let mut failures = Vec::new();
    for entry in reader.index().entries() {
        let target = output.join(&entry.path);
        if let Err(err) = unpack_one(reader, entry, &target) {
            failures.push(format!("{}: {err:#}", entry.path));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} files could not be extracted:\n  {}",
            failures.len(),
            reader.index().len(),
            failures.join("\n  ")
        );
    }
    Ok(reader.index().len())
}

fn unpack_one<R: bitmountain_bundle::ReadAt>(
    reader: &BundleReader<R>,
    entry: &IndexEntry,
    target: &Path,
) -> anyhow::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut atomic = AtomicFile::create(target)?;
    {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, atomic.file_mut());
        reader.copy_entry(entry, &mut out)?;
        out.flush().context("writing")?;
    }
    atomic.commit()
}
