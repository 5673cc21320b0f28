//! `bitmountain demo`: the offline walk-through a new user runs first (via `scripts/dev`) until
//! the local cluster exists. It packs a sample tree of "book pages" into a bundle, erasure-codes
//! it into shard files, destroys as many shards as the code tolerates (one deleted, one with
//! flipped bytes), reads every file back out of the surviving shards and compares it with the
//! original, then shows the clear error when one shard too many is lost.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use bitmountain_bundle::BundleReader;
use bitmountain_erasure::{
    shard_file_name, write_shard_files, BundleDescription, BundleId, Code, IndexLocation,
};

use super::bundle::pack_dir;
use super::common;
use super::sharded_bundle::ShardedBundle;
use super::units;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Working directory for the sample tree, bundle and shards (default: a temporary directory,
    /// removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Number of page files in the sample book.
    #[arg(long, default_value_t = 120)]
    files: usize,
    /// Data shards (k).
    #[arg(long, default_value_t = 4)]
    data: usize,
    /// Parity shards (m); the demo destroys exactly m shards.
    #[arg(long, default_value_t = 2)]
    parity: usize,
    /// Cell size in bytes (small, so the sample spans many stripes).
    #[arg(long, default_value_t = 256 * 1024)]
    cell_bytes: u32,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    ensure!(
        args.parity >= 2,
        "the demo destroys two shards: use --parity 2 or more"
    );
    let temp;
    let work = match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.clone()
        }
        None => {
            temp = TempDir::new()?;
            temp.path.clone()
        }
    };
    let tree = work.join("book");
    let bundle_path = work.join("book.bundle");
    let shards = work.join("shards");
    clear_earlier_run(&tree, &bundle_path, &shards)?;

    let mut out = common::stdout();
    writeln!(
        out,
        "1. writing a sample book of {} pages to {}",
        args.files,
        tree.display()
    )?;
    let originals = write_sample_tree(&tree, args.files)?;
    let total_bytes: u64 = originals.iter().map(|(_, len)| len).sum();

    let packed = pack_dir(&tree, &bundle_path)?;
    writeln!(out,
        "2. packed {} files ({total_bytes} bytes) into one bundle: {} ({} bytes, a MIME multipart/mixed message)",
        packed.file_count,
        bundle_path.display(),
        packed.bundle_bytes
    )?;

    let code = Code::with_sizes(args.data, args.parity, args.cell_bytes, 64 * 1024)?;
    let bundle_id = BundleId(rand_id());
    std::fs::create_dir_all(&shards)?;
    let mut bundle_file = File::open(&bundle_path)?;
    let (_info, paths) = write_shard_files(
        &shards,
        code,
        bundle_id,
        &mut bundle_file,
        IndexLocation {
            offset: packed.index_offset,
            len: packed.index_length,
        },
        &BundleDescription {
            created_unix_ms: units::now_unix_ms(),
            file_count: packed.file_count,
            labels: [("demo".to_owned(), "sample-book".to_owned())].into(),
        },
    )?;
    let shard_bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    writeln!(out,
        "3. erasure-coded it RS({},{}) into {} shard files in {} ({shard_bytes} bytes, {:.2}× the bundle)",
        args.data,
        args.parity,
        paths.len(),
        shards.display(),
        shard_bytes as f64 / packed.bundle_bytes.max(1) as f64
    )?;

    let deleted = shards.join(shard_file_name(bundle_id, 1));
    std::fs::remove_file(&deleted)?;
    let corrupted = shards.join(shard_file_name(bundle_id, 2));
    flip_bytes(&corrupted)?;
    writeln!(
        out,
        "4. destroyed two shards: deleted {}, flipped bytes in {}",
        file_name(&deleted),
        file_name(&corrupted)
    )?;

    let reader = ShardedBundle::open_dir(&shards)?;
    let identical = read_back(&reader, &tree, &originals)?;
    writeln!(out,
        "5. read all {identical} files back out of the surviving shards: every byte identical (SHA-256 checked)"
    )?;
    for line in reader.source().damage_report() {
        writeln!(out, "   found and worked around: {line}")?;
    }

    // Now go past what the code tolerates: with shards 0 and 3 deleted too, m + 1 whole
    // shards are gone and no stripe has k healthy cells left.
    for index in [0, 3] {
        std::fs::remove_file(shards.join(shard_file_name(bundle_id, index)))?;
    }
    let beyond_repair = ShardedBundle::open_dir(&shards).and_then(|r| {
        for (path, _) in &originals {
            r.copy_file(path, &mut std::io::sink())?;
        }
        Ok(())
    });
    match beyond_repair {
        Ok(()) => bail!(
            "every file read back with {} of {} shards gone: that cannot be right",
            args.parity + 1,
            paths.len()
        ),
        Err(err) => writeln!(out,
            "6. with {} of {} shards deleted the bundle is beyond repair, and the error says so:\n   {err:#}",
            args.parity + 1,
            paths.len()
        )?,
    }
    writeln!(out,
        "\nNext: `bitmountain bundle ls {}` lists the bundle; `bitmountain shard verify {}` shows each shard's health.",
        bundle_path.display(),
        shards.display()
    )?;
    if args.dir.is_none() {
        writeln!(out, "(the demo's files were in a temporary directory and are removed now; pass --dir to keep them)")?;
    }
    Ok(())
}

/// Removes what an earlier run left behind (a `--dir` may be used again).
fn clear_earlier_run(tree: &Path, bundle_path: &Path, shards: &Path) -> anyhow::Result<()> {
    for stale in [tree, shards] {
        if stale.exists() {
            std::fs::remove_dir_all(stale)
                .with_context(|| format!("clearing {}", stale.display()))?;
        }
    }
    if bundle_path.exists() {
        std::fs::remove_file(bundle_path)?;
    }
    Ok(())
}

/// Reads every file back out of the shards and checks it against the original in `tree`;
/// returns how many came back identical (all of them, or an error).
fn read_back(
    reader: &BundleReader<ShardedBundle>,
    tree: &Path,
    originals: &[(String, u64)],
) -> anyhow::Result<usize> {
    for (path, len) in originals {
        let mut bytes = Vec::with_capacity(*len as usize);
        reader
            .copy_file(path, &mut bytes)
            .with_context(|| format!("reading {path} back from the shards"))?;
        let original = std::fs::read(tree.join(path))?;
        ensure!(
            bytes == original,
            "{path} came back different from the original"
        );
    }
    Ok(originals.len())
}

/// Writes `files` pages of varied sizes, some empty, some spanning several cells, with nested
/// and non-ASCII paths. Returns (path, length) of each.
fn write_sample_tree(root: &Path, files: usize) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut write = |rel: String, len: usize| -> anyhow::Result<()> {
        let path = root.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            data.extend_from_slice(&seed.to_le_bytes());
        }
        data.truncate(len);
        std::fs::write(&path, &data).with_context(|| format!("writing {}", path.display()))?;
        out.push((rel, len as u64));
        Ok(())
    };
    const SIZES: [usize; 6] = [0, 1, 4096, 65_536, 300_000, 1_100_000];
    for i in 0..files {
        write(format!("pages/{:04}.tif", i + 1), SIZES[i % SIZES.len()])?;
    }
    write("METS/mets.xml".into(), 12_345)?;
    write("Übersicht/目次.txt".into(), 777)?;
    out.sort();
    Ok(out)
}

/// Flips a run of bytes in the middle of a shard file's data.
fn flip_bytes(path: &Path) -> anyhow::Result<()> {
    let len = std::fs::metadata(path)?.len();
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)?;
    let at = len / 2;
    let mut buf = [0u8; 16];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut buf, at)?;
    for b in &mut buf {
        *b ^= 0x5a;
    }
    file.seek(SeekFrom::Start(at))?;
    file.write_all(&buf)?;
    file.sync_all()?;
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A random 128-bit id from the standard library's OS-seeded hasher keys (the binary has no
/// random-number dependency, and the demo needs no cryptographic quality).
fn rand_id() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut id = [0u8; 16];
    for half in id.chunks_exact_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    id
}

/// A temporary directory removed on drop (the binary does not depend on `tempfile`).
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("bitmountain-demo-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
