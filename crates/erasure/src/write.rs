//! Streaming shard writer: drives the [`StripeEncoder`] core into k+m [`ShardSink`]s, one
//! stripe at a time, and the file sink used by the offline tools (temp name, fsync, rename,
//! fsync of the directory, so a crash never leaves a complete-looking but partial shard).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::code::{BundleId, Code};
use crate::description::BundleDescription;
use crate::encode::StripeEncoder;
use crate::error::{ErasureError, Result};
use crate::format::{BundleInfo, IndexLocation};

/// Where one shard's bytes go, in order: header, framed stripes, tail with footer.
pub trait ShardSink {
    /// Appends bytes.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Called once after the footer: make the shard durable and visible.
    fn commit(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ShardSink for Vec<u8> {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl<S: ShardSink + ?Sized> ShardSink for &mut S {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).append(bytes)
    }
    fn commit(&mut self) -> io::Result<()> {
        (**self).commit()
    }
}

impl<S: ShardSink + ?Sized> ShardSink for Box<S> {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).append(bytes)
    }
    fn commit(&mut self) -> io::Result<()> {
        (**self).commit()
    }
}

/// Encodes a bundle streamed through [`Write`] into k+m sinks. Memory: one stripe.
#[derive(Debug)]
pub struct StreamingWriter<S: ShardSink> {
    encoder: StripeEncoder,
    sinks: Vec<S>,
}

fn sink_error(shard_index: usize, source: io::Error) -> ErasureError {
    ErasureError::io(Some(shard_index as u16), "writing shard", source)
}

impl<S: ShardSink> StreamingWriter<S> {
    /// Writes the k+m headers and returns a writer. `sinks[i]` receives shard `i`.
    pub fn new(code: Code, bundle_id: BundleId, mut sinks: Vec<S>) -> Result<Self> {
        if sinks.len() != code.total_shards() {
            return Err(ErasureError::Misuse {
                bundle_id,
                what: format!("{} sinks for {} shards", sinks.len(), code.total_shards()),
            });
        }
        let encoder = StripeEncoder::new(code, bundle_id)?;
        for (i, sink) in sinks.iter_mut().enumerate() {
            sink.append(&encoder.header(i))
                .map_err(|e| sink_error(i, e))?;
        }
        Ok(Self { encoder, sinks })
    }

    /// Pushes bundle bytes; full stripes are encoded and written at once.
    pub fn write_bundle_bytes(&mut self, mut data: &[u8]) -> Result<()> {
        let stripe_bytes = self.encoder.code().stripe_data_bytes() as usize;
        while !data.is_empty() {
            let stripe = if self.encoder.at_stripe_boundary() && data.len() >= stripe_bytes {
                // Whole stripes go from the caller's buffer to the sinks: no copy in, no
                // output buffers.
                let (whole, rest) = data.split_at(stripe_bytes);
                data = rest;
                let sinks = &mut self.sinks;
                let mut failed: Option<(usize, io::Error)> = None;
                self.encoder.push_stripe_with(whole, |shard, piece| {
                    if failed.is_none() {
                        if let Err(e) = sinks[shard].append(piece) {
                            failed = Some((shard, e));
                        }
                    }
                });
                if let Some((shard, e)) = failed {
                    return Err(sink_error(shard, e));
                }
                None
            } else {
                let taken = self.encoder.fill(data);
                data = &data[taken..];
                self.encoder.take_stripe()
            };
            if let Some(stripe) = stripe {
                for (i, (sink, bytes)) in self.sinks.iter_mut().zip(&stripe.shards).enumerate() {
                    sink.append(bytes).map_err(|e| sink_error(i, e))?;
                }
                self.encoder.recycle(stripe);
            }
        }
        Ok(())
    }

    /// Writes the last stripe, the description and the footers, commits every sink, returns the
    /// bundle's info and the sinks.
    pub fn finish(
        mut self,
        index: IndexLocation,
        description: &BundleDescription,
    ) -> Result<(BundleInfo, Vec<S>)> {
        let finished = self.encoder.finish(index, description)?;
        for (i, (sink, tail)) in self.sinks.iter_mut().zip(&finished.tails).enumerate() {
            sink.append(tail).map_err(|e| sink_error(i, e))?;
            sink.commit().map_err(|e| sink_error(i, e))?;
        }
        Ok((finished.info, self.sinks))
    }
}

impl<S: ShardSink> Write for StreamingWriter<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_bundle_bytes(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// File name of shard `shard_index` of a bundle: `<bundle-id-hex>.<index>.shard`.
pub fn shard_file_name(bundle_id: BundleId, shard_index: usize) -> String {
    format!("{bundle_id}.{shard_index}.shard")
}

/// Write buffer of a shard file sink.
const FILE_SINK_BUFFER_BYTES: usize = 1 << 20;

/// A shard file written under a temporary name and renamed into place on commit. Dropped
/// uncommitted, it removes its temporary file.
#[derive(Debug)]
pub struct FileShardSink {
    file: Option<io::BufWriter<File>>,
    temp_path: PathBuf,
    final_path: PathBuf,
}

impl FileShardSink {
    /// Creates `<final_path>.tmp` (truncating a stale one).
    pub fn create(final_path: PathBuf) -> io::Result<Self> {
        let mut temp_name = final_path.file_name().unwrap_or_default().to_os_string();
        temp_name.push(".tmp");
        let temp_path = final_path.with_file_name(temp_name);
        let file = File::create(&temp_path)?;
        Ok(Self {
            // Framed output arrives as chunk-sized pieces and 4-byte CRCs: batch the writes.
            file: Some(io::BufWriter::with_capacity(FILE_SINK_BUFFER_BYTES, file)),
            temp_path,
            final_path,
        })
    }

    /// Where the shard will be once committed.
    pub fn path(&self) -> &Path {
        &self.final_path
    }
}

impl ShardSink for FileShardSink {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.file {
            Some(file) => file.write_all(bytes),
            None => Err(io::Error::other("shard already committed")),
        }
    }

    fn commit(&mut self) -> io::Result<()> {
        let Some(file) = self.file.take() else {
            return Err(io::Error::other("shard already committed"));
        };
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp_path, &self.final_path)?;
        sync_parent_dir(&self.final_path)
    }
}

impl Drop for FileShardSink {
    fn drop(&mut self) {
        if self.file.is_some() {
            // Best effort: an unfinished temp file is garbage either way.
            let _ = fs::remove_file(&self.temp_path);
        }
    }
}

/// fsyncs the directory holding `path`, so a rename into it survives a crash.
pub fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Encodes everything `bundle` yields into k+m shard files in `dir`, named by
/// [`shard_file_name`]. Returns the bundle's info and the shard paths, by shard index.
pub fn write_shard_files(
    dir: &Path,
    code: Code,
    bundle_id: BundleId,
    bundle: &mut impl Read,
    index: IndexLocation,
    description: &BundleDescription,
) -> Result<(BundleInfo, Vec<PathBuf>)> {
    let mut sinks = Vec::with_capacity(code.total_shards());
    for i in 0..code.total_shards() {
        let path = dir.join(shard_file_name(bundle_id, i));
        let sink = FileShardSink::create(path.clone()).map_err(|e| {
            ErasureError::io(Some(i as u16), format!("creating {}", path.display()), e)
        })?;
        sinks.push(sink);
    }
    let mut writer = StreamingWriter::new(code, bundle_id, sinks)?;
    // One read buffer; the writer itself holds one stripe.
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = match bundle.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ErasureError::io(None, "reading bundle", e)),
        };
        writer.write_bundle_bytes(&buf[..n])?;
    }
    let (info, sinks) = writer.finish(index, description)?;
    Ok((info, sinks.iter().map(|s| s.path().to_path_buf()).collect()))
}
