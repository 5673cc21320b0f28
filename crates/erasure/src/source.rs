//! The I/O seam of the sync reader: a shard is anything that can be read at an offset. Tests
//! wrap it to fail, count or corrupt reads; the file implementation serves the offline tools.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::description::BundleDescription;
use crate::error::{ErasureError, Result};
use crate::format::{ShardFooter, ShardHeader, FOOTER_BYTES, HEADER_BYTES};
use crate::layout::BundleLayout;

/// Positional reads from one shard.
pub trait ShardSource {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read, fewer than asked
    /// only at end of file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Current length of the shard in bytes.
    fn len_bytes(&self) -> io::Result<u64>;
    /// The shard's bytes `[offset, offset + len)` without copying them, for a shard already in
    /// memory (fewer bytes only at the end of the shard). `None` (the default) when the source
    /// cannot lend: the reader then uses [`ShardSource::read_at`] into its own buffer. Lent bytes
    /// are checked like read ones (every chunk against its CRC32C).
    fn lend(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let _ = (offset, len);
        None
    }
}

impl<S: ShardSource + ?Sized> ShardSource for &S {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        (**self).len_bytes()
    }
    fn lend(&self, offset: u64, len: u64) -> Option<&[u8]> {
        (**self).lend(offset, len)
    }
}

impl<S: ShardSource + ?Sized> ShardSource for Box<S> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        (**self).len_bytes()
    }
    fn lend(&self, offset: u64, len: u64) -> Option<&[u8]> {
        (**self).lend(offset, len)
    }
}

/// An in-memory shard (tests, benchmarks, shards received whole).
impl ShardSource for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn lend(&self, offset: u64, len: u64) -> Option<&[u8]> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let end = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(self.len() - start);
        Some(&self[start..start + end])
    }
}

/// A shard file.
#[derive(Debug)]
pub struct FileShardSource {
    file: File,
    path: PathBuf,
}

impl FileShardSource {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Self {
            file: File::open(path)?,
            path: path.to_path_buf(),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ShardSource for FileShardSource {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// Reads exactly `len` bytes at `offset`, or fewer at end of file.
pub(crate) fn read_up_to<S: ShardSource + ?Sized>(
    src: &S,
    offset: u64,
    len: u64,
) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    let mut buf = vec![0u8; len];
    let n = src.read_at(offset, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// A shard's header, and its footer (with the description) or why the footer is unusable.
#[derive(Debug)]
pub struct ShardMeta {
    pub header: ShardHeader,
    pub footer: Result<ShardFooter>,
    /// The bundle description: `None` in a version-1 shard or when the footer is unusable.
    pub description: Option<Result<BundleDescription>>,
    pub file_bytes: u64,
}

/// Bytes read from a shard's end at once: the footer and, nearly always, the whole description.
const TAIL_READ_BYTES: u64 = 4096;

/// Reads a shard's header only (one 64-byte read).
pub fn read_shard_header<S: ShardSource + ?Sized>(src: &S) -> Result<ShardHeader> {
    let bytes = read_up_to(src, 0, HEADER_BYTES as u64)
        .map_err(|e| ErasureError::io(None, "reading header", e))?;
    ShardHeader::decode(&bytes)
}

/// Reads a shard's header, footer and description (two small reads, three for a description
/// over 4 KiB) and checks that the file length matches what the footer implies. Fails only when
/// the header is unusable.
pub fn read_shard_meta<S: ShardSource + ?Sized>(src: &S) -> Result<ShardMeta> {
    let header = read_shard_header(src)?;
    let shard_index = header.shard_index;
    let file_bytes = src
        .len_bytes()
        .map_err(|e| ErasureError::io(Some(shard_index), "reading length", e))?;
    let (footer, description) = match read_tail(src, &header, file_bytes) {
        Ok((footer, description)) => (Ok(footer), description),
        Err(e) => (Err(e), None),
    };
    Ok(ShardMeta {
        header,
        footer,
        description,
        file_bytes,
    })
}

fn read_tail<S: ShardSource + ?Sized>(
    src: &S,
    header: &ShardHeader,
    file_bytes: u64,
) -> Result<(ShardFooter, Option<Result<BundleDescription>>)> {
    let bad = |reason: String| ErasureError::BadFooter {
        shard_index: header.shard_index,
        reason,
    };
    let min_bytes = (HEADER_BYTES + FOOTER_BYTES) as u64;
    if file_bytes < min_bytes {
        return Err(bad(format!(
            "file is {file_bytes} bytes, less than header and footer"
        )));
    }
    let tail_bytes = TAIL_READ_BYTES.min(file_bytes - HEADER_BYTES as u64);
    let io = |e| ErasureError::io(Some(header.shard_index), "reading the shard's end", e);
    let mut tail = read_up_to(src, file_bytes - tail_bytes, tail_bytes).map_err(io)?;
    if tail.len() as u64 != tail_bytes {
        return Err(bad(format!(
            "file shrank while read: {} of {tail_bytes} tail bytes",
            tail.len()
        )));
    }
    let footer = ShardFooter::decode(&tail[tail.len() - FOOTER_BYTES..], header)?;
    let layout = BundleLayout::new(header.code, footer.bundle_len)?;
    let expected = layout.shard_file_bytes() + footer.description_bytes();
    if expected != file_bytes {
        return Err(bad(format!(
            "file is {file_bytes} bytes, the footer implies {expected}"
        )));
    }
    let Some(d) = footer.description else {
        return Ok((footer, None));
    };
    let want = u64::from(d.bytes) + FOOTER_BYTES as u64;
    if want > tail_bytes {
        tail = read_up_to(src, file_bytes - want, want).map_err(io)?;
    }
    let start = tail.len().saturating_sub(want as usize);
    let bytes = tail
        .get(start..tail.len() - FOOTER_BYTES)
        .filter(|b| b.len() == d.bytes as usize);
    let description = match bytes {
        None => Err(ErasureError::BadDescription {
            reason: "file shrank while read".into(),
        }),
        Some(b) if crate::crc::crc32c(b) != d.crc32c => Err(ErasureError::BadDescription {
            reason: format!(
                "shard {}: checksum {:08x} in the footer, computed {:08x}",
                header.shard_index,
                d.crc32c,
                crate::crc::crc32c(b)
            ),
        }),
        Some(b) => BundleDescription::decode(b),
    };
    Ok((footer, Some(description)))
}

/// Reads every chunk of a shard and returns the numbers of those that are missing (file too
/// short) or fail their CRC32C. Reads `read_bytes` at a time.
pub fn scan_shard<S: ShardSource + ?Sized>(
    src: &S,
    layout: &BundleLayout,
    shard_index: u16,
) -> Result<Vec<u64>> {
    let chunks_per_read = (4u64 << 20)
        .div_ceil(u64::from(layout.code().chunk_bytes()))
        .max(1);
    let mut bad = Vec::new();
    let mut first = 0;
    while first < layout.chunk_count() {
        let end = (first + chunks_per_read).min(layout.chunk_count());
        let range = layout.chunk_physical_range(first..end);
        let bytes = read_up_to(src, range.offset, range.len).map_err(|e| {
            ErasureError::io(
                Some(shard_index),
                format!("reading chunks {first}..{end}"),
                e,
            )
        })?;
        let stride = layout.code().chunk_bytes() as usize + crate::format::CHUNK_CRC_BYTES;
        for chunk in first..end {
            let offset = (chunk - first) as usize * stride;
            let len = layout.chunk_data_bytes(chunk) as usize;
            let ok = bytes.get(offset..offset + len + 4).is_some_and(|framed| {
                let (data, crc) = framed.split_at(len);
                crate::crc::crc32c(data).to_le_bytes() == crc
            });
            if !ok {
                bad.push(chunk);
            }
        }
        first = end;
    }
    Ok(bad)
}
