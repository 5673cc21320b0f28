//! A bundle read straight out of its shard files: the erasure reader decodes bundle byte ranges
//! (reconstructing lost or corrupt chunks), and the bundle reader on top finds files through the
//! index. Used by `shard cat` and the demo.

use std::cell::RefCell;
use std::io;
use std::path::Path;

use anyhow::Context;
use bitmountain_bundle::ReadAt;
use bitmountain_erasure::{BundleReader as ShardReader, FileShardSource};

/// Bundle bytes served by decoding shards. `RefCell` because the erasure reader keeps buffers and
/// a record of lost chunks between reads, while `ReadAt` reads through `&self`.
#[derive(Debug)]
pub struct ShardedBundle {
    reader: RefCell<ShardReader<FileShardSource>>,
    len_bytes: u64,
}

impl ShardedBundle {
    pub fn new(reader: ShardReader<FileShardSource>) -> Self {
        let len_bytes = reader.info().bundle_len;
        ShardedBundle {
            reader: RefCell::new(reader),
            len_bytes,
        }
    }

    /// Opens the bundle of the shard files in `dir`, then its index through the location the
    /// shard footers record.
    pub fn open_dir(dir: &Path) -> anyhow::Result<bitmountain_bundle::BundleReader<ShardedBundle>> {
        let mut sources = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry
                .with_context(|| format!("reading {}", dir.display()))?
                .path();
            if path.extension().is_some_and(|e| e == "shard") {
                match FileShardSource::open(&path) {
                    Ok(source) => sources.push(source),
                    Err(e) => eprintln!("warning: cannot open {}: {e}", path.display()),
                }
            }
        }
        let (reader, _candidates) = ShardReader::open(sources)
            .with_context(|| format!("opening the shards in {}", dir.display()))?;
        let info = *reader.info();
        let bundle = ShardedBundle::new(reader);
        bitmountain_bundle::BundleReader::open_with_index_at(
            bundle,
            info.index.offset,
            info.index.len,
        )
        .with_context(|| {
            format!(
                "reading the index of bundle {} from its shards",
                info.bundle_id
            )
        })
    }

    /// Shards found unusable or chunks found corrupt so far, as readable lines.
    pub fn damage_report(&self) -> Vec<String> {
        let reader = self.reader.borrow();
        let mut lines: Vec<String> = reader
            .unavailable_shards()
            .iter()
            .map(|s| format!("shard {s}: unavailable"))
            .collect();
        for chunk in reader.lost_chunks() {
            let line = format!(
                "shard {}: chunk {} {:?}",
                chunk.shard, chunk.chunk, chunk.kind
            );
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        lines
    }
}

impl ReadAt for ShardedBundle {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len_bytes)
        {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.reader
            .borrow_mut()
            .read_range_into(offset, buf)
            .map_err(io::Error::other)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.len_bytes)
    }
}
