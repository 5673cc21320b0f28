//! The streaming bundle writer. It never holds a file or the bundle in memory: file bytes pass
//! straight to the output while their SHA-256 is computed; only the index entries (one per file,
//! bounded by [`MAX_FILES_PER_BUNDLE`]) are kept until the index part is written.

use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::error::{BundleError, Result};
use crate::index::{Index, IndexEntry};
use crate::limits::{MAX_BUNDLE_BYTES, MAX_FILES_PER_BUNDLE};
use crate::mime;
use crate::path::PathSet;
use crate::trailer::Trailer;

/// Size of the buffer [`BundleWriter::add_file`] copies through.
const COPY_BUFFER_BYTES: usize = 256 * 1024;

/// Options for a new bundle.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The MIME boundary; a fresh random one when `None`.
    pub boundary: Option<String>,
    /// Most files this bundle may hold (at most [`MAX_FILES_PER_BUNDLE`]).
    pub max_files: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            boundary: None,
            max_files: MAX_FILES_PER_BUNDLE,
        }
    }
}

/// What a finished bundle looks like; the metadata record keeps these figures.
#[derive(Debug)]
pub struct BundleSummary<W> {
    pub bundle_bytes: u64,
    /// Offset of the index content inside the bundle.
    pub index_offset: u64,
    pub index_length: u64,
    pub file_count: u64,
    pub content_bytes: u64,
    /// The output, handed back so the caller can flush and fsync it.
    pub output: W,
}

/// Writes a bundle to `W` as files are added.
#[derive(Debug)]
pub struct BundleWriter<W: Write> {
    out: W,
    position_bytes: u64,
    boundary: String,
    paths: PathSet,
    entries: Vec<IndexEntry>,
    max_files: u64,
    /// Set while a file is open and cleared when it finishes cleanly; a file abandoned midway
    /// leaves the bundle unusable, and every later call says so.
    poisoned: bool,
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle: writes the MIME message header.
    pub fn new(out: W, options: WriterOptions) -> Result<Self> {
        let boundary = match options.boundary {
            Some(b) => {
                mime::validate_boundary(&b)?;
                b
            }
            None => mime::random_boundary(),
        };
        let mut writer = BundleWriter {
            out,
            position_bytes: 0,
            boundary,
            paths: PathSet::new(),
            entries: Vec::new(),
            max_files: options.max_files.min(MAX_FILES_PER_BUNDLE),
            poisoned: false,
        };
        let header = mime::message_header(&writer.boundary);
        writer.emit(header.as_bytes())?;
        Ok(writer)
    }

    pub fn boundary(&self) -> &str {
        &self.boundary
    }

    /// Bytes written so far.
    pub fn position_bytes(&self) -> u64 {
        self.position_bytes
    }

    pub fn file_count(&self) -> usize {
        self.entries.len()
    }

    /// Access to the output, e.g. to drain a `Vec<u8>` buffer between calls.
    pub fn output_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn emit(&mut self, bytes: &[u8]) -> Result<()> {
        let end = self.position_bytes + bytes.len() as u64;
        if end > MAX_BUNDLE_BYTES {
            return Err(BundleError::BundleTooLarge {
                bytes: end,
                limit_bytes: MAX_BUNDLE_BYTES,
            });
        }
        self.out
            .write_all(bytes)
            .map_err(|e| BundleError::io("writing the bundle", e))?;
        self.position_bytes = end;
        Ok(())
    }

    /// The delimiter before the next part. The CRLF before a boundary belongs to the boundary
    /// (RFC 2046 §5.1.1); the first part follows the message header directly. No part has been
    /// written yet exactly when no file has finished, since an unfinished file poisons the writer.
    fn delimiter(&self) -> String {
        if self.entries.is_empty() {
            format!("--{}\r\n", self.boundary)
        } else {
            format!("\r\n--{}\r\n", self.boundary)
        }
    }

    /// Starts a file of `length_bytes` bytes. `sha256`, when the sender knows it in advance, is
    /// written into the part header and checked when the file finishes.
    pub fn start_file(
        &mut self,
        path: &str,
        content_type: &str,
        length_bytes: u64,
        sha256: Option<[u8; 32]>,
    ) -> Result<FileWriter<'_, W>> {
        if self.poisoned {
            return Err(BundleError::Misuse {
                reason: "a previous file was not finished; this bundle cannot be completed",
            });
        }
        if self.entries.len() as u64 >= self.max_files {
            return Err(BundleError::TooManyFiles {
                limit: self.max_files,
            });
        }
        mime::validate_content_type(path, content_type)?;
        self.paths.insert(path)?;
        let mut head = self.delimiter();
        head.push_str(&mime::file_part_header(
            path,
            content_type,
            length_bytes,
            sha256.as_ref(),
        ));
        self.poisoned = true;
        self.emit(head.as_bytes())?;
        Ok(FileWriter {
            offset: self.position_bytes,
            bundle: self,
            path: path.to_owned(),
            content_type: content_type.to_owned(),
            declared_bytes: length_bytes,
            written_bytes: 0,
            expected_sha256: sha256,
            hasher: Sha256::new(),
        })
    }

    /// Adds a whole file from a reader, which must yield exactly `length_bytes` bytes.
    pub fn add_file(
        &mut self,
        path: &str,
        content_type: &str,
        length_bytes: u64,
        mut reader: impl Read,
    ) -> Result<IndexEntry> {
        let mut file = self.start_file(path, content_type, length_bytes, None)?;
        let mut buf = vec![0u8; COPY_BUFFER_BYTES];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| BundleError::io(format!("reading {path:?}"), e))?;
            if n == 0 {
                break;
            }
            file.write_chunk(&buf[..n])?;
        }
        file.finish()
    }

    /// Writes the index part, the closing boundary and the trailer.
    pub fn finish(mut self) -> Result<BundleSummary<W>> {
        if self.poisoned {
            return Err(BundleError::Misuse {
                reason: "a file was not finished; this bundle cannot be completed",
            });
        }
        let mut head = self.delimiter();
        let index = Index::from_entries(std::mem::take(&mut self.entries));
        let content_bytes = index.content_bytes();
        let file_count = index.len() as u64;
        let encoded = index.encode();
        head.push_str(&mime::index_part_header(encoded.len() as u64));
        self.emit(head.as_bytes())?;
        let index_offset = self.position_bytes;
        self.emit(&encoded)?;
        let close = format!("\r\n--{}--\r\n", self.boundary);
        self.emit(close.as_bytes())?;
        let trailer = Trailer {
            index_offset,
            index_length: encoded.len() as u64,
            file_count: u32::try_from(file_count).unwrap_or(u32::MAX),
        };
        self.emit(&trailer.encode())?;
        self.out
            .flush()
            .map_err(|e| BundleError::io("flushing the bundle", e))?;
        Ok(BundleSummary {
            bundle_bytes: self.position_bytes,
            index_offset,
            index_length: encoded.len() as u64,
            file_count,
            content_bytes,
            output: self.out,
        })
    }
}

/// One file being written; bytes go straight through to the bundle.
#[derive(Debug)]
pub struct FileWriter<'a, W: Write> {
    bundle: &'a mut BundleWriter<W>,
    path: String,
    content_type: String,
    offset: u64,
    declared_bytes: u64,
    written_bytes: u64,
    expected_sha256: Option<[u8; 32]>,
    hasher: Sha256,
}

impl<W: Write> FileWriter<'_, W> {
    /// Appends content. More bytes than declared is an error, and the bundle cannot be finished.
    pub fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        let total = self.written_bytes + bytes.len() as u64;
        if total > self.declared_bytes {
            return Err(BundleError::LengthMismatch {
                path: self.path.clone(),
                declared_bytes: self.declared_bytes,
                actual_bytes: total,
            });
        }
        self.hasher.update(bytes);
        self.bundle.emit(bytes)?;
        self.written_bytes = total;
        Ok(())
    }

    /// Ends the file: checks its length (and SHA-256, when given in advance) and records it.
    pub fn finish(self) -> Result<IndexEntry> {
        if self.written_bytes != self.declared_bytes {
            return Err(BundleError::LengthMismatch {
                path: self.path,
                declared_bytes: self.declared_bytes,
                actual_bytes: self.written_bytes,
            });
        }
        let sha256: [u8; 32] = self.hasher.finalize().into();
        if let Some(expected) = self.expected_sha256 {
            if expected != sha256 {
                return Err(BundleError::Sha256Mismatch {
                    path: self.path,
                    expected: hex::encode(expected),
                    actual: hex::encode(sha256),
                });
            }
        }
        let entry = IndexEntry {
            path: self.path,
            content_type: self.content_type,
            offset: self.offset,
            length: self.declared_bytes,
            sha256,
        };
        self.bundle.entries.push(entry.clone());
        self.bundle.poisoned = false;
        Ok(entry)
    }
}

impl<W: Write> Write for FileWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_chunk(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
