//! The bundle reader. It opens a bundle by its index (found through the trailer, or given by the
//! metadata record), reads one file by path or byte range, iterates, and verifies. It reads only
//! the bytes it needs, through the [`ReadAt`] seam, and never holds a whole file in memory.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::error::{BundleError, Result};
use crate::index::{Index, IndexEntry};
use crate::limits::{MAX_INDEX_BYTES, MAX_PART_HEADER_BYTES};
use crate::mime::{self, INDEX_CONTENT_TYPE};
use crate::trailer::{Trailer, TRAILER_BYTES};

/// Buffer size for streaming copies and verification.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Positional reads: the I/O seam of the reader. Files, memory, and (in the CLI) a set of shard
/// files decoded on the fly all implement it; tests use it to count or fail reads.
pub trait ReadAt {
    /// Fills `buf` from `offset`; fewer bytes available is an `UnexpectedEof` error.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Total length in bytes.
    fn len_bytes(&self) -> io::Result<u64>;
}

impl ReadAt for std::fs::File {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let end = start
            .checked_add(buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let src = self.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_exact_at(offset, buf)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_exact_at(offset, buf)
    }

    fn len_bytes(&self) -> io::Result<u64> {
        (**self).len_bytes()
    }
}

/// Reads the trailer at the end of a standalone bundle.
pub fn read_trailer<R: ReadAt + ?Sized>(src: &R) -> Result<Trailer> {
    let len = src
        .len_bytes()
        .map_err(|e| BundleError::io("reading the bundle length", e))?;
    if len < TRAILER_BYTES as u64 {
        return Err(BundleError::BadTrailer {
            reason: format!("the file is only {len} bytes, shorter than a trailer"),
        });
    }
    let mut buf = [0u8; TRAILER_BYTES];
    read_at(src, len - TRAILER_BYTES as u64, &mut buf, len)?;
    Trailer::decode(&buf)
}

fn read_at<R: ReadAt + ?Sized>(src: &R, offset: u64, buf: &mut [u8], len_bytes: u64) -> Result<()> {
    let end = offset + buf.len() as u64;
    if end > len_bytes {
        return Err(BundleError::Truncated {
            offset,
            end,
            len_bytes,
        });
    }
    src.read_exact_at(offset, buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            BundleError::Truncated {
                offset,
                end,
                len_bytes,
            }
        } else {
            BundleError::io(format!("reading bundle bytes {offset}..{end}"), e)
        }
    })
}

/// An open bundle: a byte source and its parsed index.
#[derive(Debug)]
pub struct BundleReader<R> {
    src: R,
    len_bytes: u64,
    index: Index,
    index_offset: u64,
    index_length: u64,
}

/// The outcome of [`BundleReader::verify`]: structural problems stop verification with an error;
/// content problems (a file whose SHA-256 does not match) are collected here.
#[derive(Debug, Default)]
pub struct VerifyReport {
    pub files_checked: u64,
    pub bytes_checked: u64,
    pub corrupt_files: Vec<BundleError>,
}

impl<R: ReadAt> BundleReader<R> {
    /// Opens a standalone bundle through its trailer.
    pub fn open(src: R) -> Result<Self> {
        let trailer = read_trailer(&src)?;
        let reader = Self::open_with_index_at(src, trailer.index_offset, trailer.index_length)?;
        if reader.index.len() as u64 != u64::from(trailer.file_count) {
            return Err(BundleError::BadTrailer {
                reason: format!(
                    "trailer says {} files but the index lists {}",
                    trailer.file_count,
                    reader.index.len()
                ),
            });
        }
        Ok(reader)
    }

    /// Opens a bundle whose index location is known (from the metadata record).
    pub fn open_with_index_at(src: R, index_offset: u64, index_length: u64) -> Result<Self> {
        let len_bytes = src
            .len_bytes()
            .map_err(|e| BundleError::io("reading the bundle length", e))?;
        if index_length > MAX_INDEX_BYTES {
            return Err(BundleError::BadIndex {
                reason: format!(
                    "index of {index_length} bytes exceeds the limit of {MAX_INDEX_BYTES}"
                ),
            });
        }
        let end = index_offset
            .checked_add(index_length)
            .filter(|&e| e <= len_bytes);
        if end.is_none() {
            return Err(BundleError::Truncated {
                offset: index_offset,
                end: index_offset.saturating_add(index_length),
                len_bytes,
            });
        }
        let mut buf = vec![0u8; index_length as usize];
        read_at(&src, index_offset, &mut buf, len_bytes)?;
        let index = Index::decode(&buf, index_offset)?;
        Ok(BundleReader {
            src,
            len_bytes,
            index,
            index_offset,
            index_length,
        })
    }

    /// Wraps a source whose index was already parsed (e.g. cached by a client).
    pub fn with_index(src: R, index: Index, index_offset: u64, index_length: u64) -> Result<Self> {
        let len_bytes = src
            .len_bytes()
            .map_err(|e| BundleError::io("reading the bundle length", e))?;
        Ok(BundleReader {
            src,
            len_bytes,
            index,
            index_offset,
            index_length,
        })
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn index_location(&self) -> (u64, u64) {
        (self.index_offset, self.index_length)
    }

    pub fn len_bytes(&self) -> u64 {
        self.len_bytes
    }

    pub fn source(&self) -> &R {
        &self.src
    }

    /// Copies `len_bytes` bytes of `path` from `offset` within the file to `out`.
    pub fn read_range(
        &self,
        path: &str,
        offset: u64,
        len_bytes: u64,
        out: &mut impl Write,
    ) -> Result<()> {
        let entry = self.index.find(path)?;
        let end = offset.checked_add(len_bytes).filter(|&e| e <= entry.length);
        if end.is_none() {
            return Err(BundleError::RangeOutOfBounds {
                path: path.to_owned(),
                offset,
                len_bytes,
                file_bytes: entry.length,
            });
        }
        self.copy_bytes(entry.offset + offset, len_bytes, out, |_| {})
    }

    /// Copies a whole file to `out`, checking its SHA-256 as it streams. On a mismatch the bytes
    /// already written are wrong: callers writing to a file write to a temporary name and rename
    /// only on success.
    pub fn copy_file(&self, path: &str, out: &mut impl Write) -> Result<u64> {
        let entry = self.index.find(path)?.clone();
        self.copy_entry(&entry, out)?;
        Ok(entry.length)
    }

    /// Copies one index entry's content to `out`, verifying its SHA-256.
    pub fn copy_entry(&self, entry: &IndexEntry, out: &mut impl Write) -> Result<()> {
        let mut hasher = Sha256::new();
        self.copy_bytes(entry.offset, entry.length, out, |chunk| {
            hasher.update(chunk)
        })?;
        check_sha(entry, hasher)
    }

    /// A `Read` over one file's content (not verified; see [`Self::copy_entry`]).
    pub fn open_file(&self, path: &str) -> Result<FileReader<'_, R>> {
        let entry = self.index.find(path)?;
        Ok(FileReader {
            bundle: self,
            next_offset: entry.offset,
            end_offset: entry.end(),
        })
    }

    fn copy_bytes(
        &self,
        offset: u64,
        len_bytes: u64,
        out: &mut impl Write,
        mut observe: impl FnMut(&[u8]),
    ) -> Result<()> {
        let mut buf = vec![0u8; READ_BUFFER_BYTES.min(len_bytes as usize)];
        let mut pos = offset;
        let end = offset + len_bytes;
        while pos < end {
            let n = (end - pos).min(buf.len() as u64) as usize;
            read_at(&self.src, pos, &mut buf[..n], self.len_bytes)?;
            observe(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| BundleError::io("writing file content", e))?;
            pos += n as u64;
        }
        Ok(())
    }

    /// Walks the whole bundle: the message header, every part header against the index (path,
    /// length, position), the index part, the closing boundary and the trailer's position, and
    /// every file's SHA-256.
    pub fn verify(&self) -> Result<VerifyReport> {
        let (header_block, mut pos) = self.header_block_at(0, "the message header")?;
        let boundary = mime::parse_message_header(&header_block)?;
        let mut report = VerifyReport::default();
        let delimiter_first = format!("--{boundary}\r\n");
        let delimiter = format!("\r\n--{boundary}\r\n");
        for (number, entry) in self.index.entries().iter().enumerate() {
            let expected = if number == 0 {
                &delimiter_first
            } else {
                &delimiter
            };
            pos = self.expect_bytes(
                pos,
                expected.as_bytes(),
                &format!("the boundary before {:?}", entry.path),
            )?;
            let (block, content_start) = self.header_block_at(pos, &entry.path)?;
            let headers = mime::parse_part_headers(&block, &format!("{:?}", entry.path))?;
            let part_problem = |reason: String| BundleError::BadPartHeader {
                part: format!("{:?}", entry.path),
                reason,
            };
            if headers.filename.as_deref() != Some(entry.path.as_str()) {
                return Err(part_problem(format!(
                    "filename is {:?}, the index says {:?}",
                    headers.filename, entry.path
                )));
            }
            if headers.content_length != Some(entry.length) {
                return Err(part_problem(format!(
                    "Content-Length is {:?}, the index says {}",
                    headers.content_length, entry.length
                )));
            }
            if content_start != entry.offset {
                return Err(part_problem(format!(
                    "content starts at byte {content_start}, the index says {}",
                    entry.offset
                )));
            }
            let mut hasher = Sha256::new();
            self.copy_bytes(entry.offset, entry.length, &mut io::sink(), |c| {
                hasher.update(c)
            })?;
            if let Some(sha) = headers.sha256 {
                if sha != entry.sha256 {
                    return Err(part_problem(
                        "X-Bitmountain-Sha256 differs from the index".into(),
                    ));
                }
            }
            if let Err(e) = check_sha(entry, hasher) {
                report.corrupt_files.push(e);
            }
            report.files_checked += 1;
            report.bytes_checked += entry.length;
            pos = entry.end();
        }
        let expected = if self.index.is_empty() {
            &delimiter_first
        } else {
            &delimiter
        };
        pos = self.expect_bytes(pos, expected.as_bytes(), "the boundary before the index")?;
        let (block, content_start) = self.header_block_at(pos, "the index part")?;
        let headers = mime::parse_part_headers(&block, "the index part")?;
        if headers.content_type.as_deref() != Some(INDEX_CONTENT_TYPE)
            || headers.content_length != Some(self.index_length)
            || content_start != self.index_offset
        {
            return Err(BundleError::BadStructure {
                offset: pos,
                reason: "the last part is not the index the trailer points to".into(),
            });
        }
        let close = format!("\r\n--{boundary}--\r\n");
        pos = self.expect_bytes(
            self.index_offset + self.index_length,
            close.as_bytes(),
            "the closing boundary",
        )?;
        if pos + TRAILER_BYTES as u64 != self.len_bytes {
            return Err(BundleError::BadStructure {
                offset: pos,
                reason: format!(
                    "{} bytes between the closing boundary and the end, expected a {TRAILER_BYTES}-byte trailer",
                    self.len_bytes.saturating_sub(pos)
                ),
            });
        }
        Ok(report)
    }

    /// Reads a header block starting at `offset`; returns it (without the blank line) and the
    /// offset just after the blank line.
    fn header_block_at(&self, offset: u64, what: &str) -> Result<(Vec<u8>, u64)> {
        let available = self.len_bytes.saturating_sub(offset);
        let want = (MAX_PART_HEADER_BYTES as u64 + 4).min(available) as usize;
        let mut buf = vec![0u8; want];
        read_at(&self.src, offset, &mut buf, self.len_bytes)?;
        match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => {
                buf.truncate(end);
                Ok((buf, offset + end as u64 + 4))
            }
            None => Err(BundleError::BadStructure {
                offset,
                reason: format!(
                    "no end of the header block of {what} within {MAX_PART_HEADER_BYTES} bytes"
                ),
            }),
        }
    }

    fn expect_bytes(&self, offset: u64, expected: &[u8], what: &str) -> Result<u64> {
        let mut buf = vec![0u8; expected.len()];
        read_at(&self.src, offset, &mut buf, self.len_bytes)?;
        if buf != expected {
            return Err(BundleError::BadStructure {
                offset,
                reason: format!("expected {what}"),
            });
        }
        Ok(offset + expected.len() as u64)
    }
}

fn check_sha(entry: &IndexEntry, hasher: Sha256) -> Result<()> {
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != entry.sha256 {
        return Err(BundleError::Sha256Mismatch {
            path: entry.path.clone(),
            expected: hex::encode(entry.sha256),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

/// A `Read` over one file inside a bundle.
#[derive(Debug)]
pub struct FileReader<'a, R> {
    bundle: &'a BundleReader<R>,
    next_offset: u64,
    end_offset: u64,
}

impl<R: ReadAt> Read for FileReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.end_offset - self.next_offset).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.bundle
            .src
            .read_exact_at(self.next_offset, &mut buf[..n])?;
        self.next_offset += n as u64;
        Ok(n)
    }
}
