//! `bitmountain meta backup` and `meta restore`: a consistent copy of the metadata group's state
//! in one checksummed file, and a new one-member group made from it.
//!
//! Backup file, version 1 (`docs/formats.md`, "Metadata backup"):
//!
//! ```text
//! "BMBACKUP" | version u32 = 1 | header length u32 | header (JSON) | state file | SHA-256
//! ```
//!
//! Integers big-endian. The state file is the members' snapshot file format (its own CRC32C);
//! the SHA-256 covers every byte before it.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::common::{self, ClusterArgs};
use super::fsutil::AtomicFile;
use super::units;

const MAGIC: &[u8; 8] = b"BMBACKUP";
const VERSION: u32 = 1;
/// Largest header a reader accepts.
const MAX_HEADER_BYTES: u32 = 64 << 10;
const BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// Back up a stopped member's data directory instead of asking the running group (a
    /// survivor of a lost quorum).
    #[arg(long, value_name = "DIR", conflicts_with = "cluster")]
    data: Option<PathBuf>,
    /// The backup file to write (must not exist; written whole or not at all).
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    out: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup file (`meta backup -o FILE`).
    file: PathBuf,
    /// Data directory of the new member (new or empty).
    #[arg(long)]
    data: PathBuf,
    /// Member id of the new member (non-zero).
    #[arg(long)]
    id: u64,
    /// Address the new member will serve on (as `meta --listen`, or its `--advertise`).
    #[arg(long)]
    listen: String,
}

/// What a backup file says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    pub cluster_id: String,
    pub applied_index: u64,
    pub applied_term: u64,
    pub created_unix_ms: u64,
    pub member_id: u64,
    pub state_bytes: u64,
    pub state_crc32c: u32,
    pub records: u64,
}

/// Writes a backup file: header, then the state file's bytes as they come, then the SHA-256.
struct BackupWriter<W: Write> {
    inner: W,
    sha: Sha256,
    state_bytes: u64,
    expected_bytes: u64,
}

impl<W: Write> BackupWriter<W> {
    fn new(mut inner: W, header: &BackupHeader) -> anyhow::Result<Self> {
        let json = serde_json::to_vec(header)?;
        let mut sha = Sha256::new();
        let mut put = |b: &[u8]| -> anyhow::Result<()> {
            sha.update(b);
            inner.write_all(b).context("writing the backup file")
        };
        put(MAGIC)?;
        put(&VERSION.to_be_bytes())?;
        put(&(json.len() as u32).to_be_bytes())?;
        put(&json)?;
        Ok(Self {
            inner,
            sha,
            state_bytes: 0,
            expected_bytes: header.state_bytes,
        })
    }

    fn state(&mut self, piece: &[u8]) -> anyhow::Result<()> {
        self.sha.update(piece);
        self.state_bytes += piece.len() as u64;
        self.inner
            .write_all(piece)
            .context("writing the backup file")
    }

    fn finish(mut self) -> anyhow::Result<(W, [u8; 32])> {
        ensure!(
            self.state_bytes == self.expected_bytes,
            "the backup holds {} state bytes, its header announced {}",
            self.state_bytes,
            self.expected_bytes
        );
        let digest: [u8; 32] = self.sha.finalize().into();
        self.inner
            .write_all(&digest)
            .context("writing the backup file")?;
        Ok((self.inner, digest))
    }
}

/// Reads a backup file: checks magic, version and SHA-256, copies the state file to `state_out`.
fn read_backup(path: &Path, state_out: &Path) -> anyhow::Result<BackupHeader> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let file_bytes = file.metadata()?.len();
    let mut r = BufReader::with_capacity(BUFFER_BYTES, file);
    let mut sha = Sha256::new();
    let mut take = |r: &mut BufReader<File>, n: usize| -> anyhow::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        r.read_exact(&mut b)
            .with_context(|| format!("{} is truncated: not a whole backup", path.display()))?;
        sha.update(&b);
        Ok(b)
    };
    ensure!(
        take(&mut r, 8)? == MAGIC,
        "{} is not a Bit Mountain metadata backup (no BMBACKUP magic)",
        path.display()
    );
    let version = u32::from_be_bytes(take(&mut r, 4)?.try_into().unwrap_or_default());
    ensure!(
        version == VERSION,
        "{} is a backup of format version {version}; this build reads version {VERSION}: use a \
         newer bitmountain",
        path.display()
    );
    let header_len = u32::from_be_bytes(take(&mut r, 4)?.try_into().unwrap_or_default());
    ensure!(
        header_len <= MAX_HEADER_BYTES,
        "{}: a header of {header_len} bytes (the limit is {MAX_HEADER_BYTES}); the file is damaged",
        path.display()
    );
    let header: BackupHeader = serde_json::from_slice(&take(&mut r, header_len as usize)?)
        .with_context(|| format!("{}: the header is not valid", path.display()))?;
    let expected = 16 + u64::from(header_len) + header.state_bytes + 32;
    ensure!(
        file_bytes == expected,
        "{} is {file_bytes} bytes; its header implies {expected}: the file is truncated or damaged",
        path.display()
    );
    let mut out = BufWriter::with_capacity(
        BUFFER_BYTES,
        File::create(state_out).with_context(|| format!("creating {}", state_out.display()))?,
    );
    let mut left = header.state_bytes;
    let mut buf = vec![0u8; BUFFER_BYTES];
    while left > 0 {
        let n = (left as usize).min(buf.len());
        r.read_exact(&mut buf[..n])
            .with_context(|| format!("reading {}", path.display()))?;
        sha.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("writing {}", state_out.display()))?;
        left -= n as u64;
    }
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("writing {}", state_out.display()))?;
    let mut stored = [0u8; 32];
    r.read_exact(&mut stored)
        .with_context(|| format!("reading {}", path.display()))?;
    let computed: [u8; 32] = sha.finalize().into();
    ensure!(
        stored == computed,
        "{}: SHA-256 mismatch (stored {}, computed {}): the backup is damaged; use another copy",
        path.display(),
        hex::encode(stored),
        hex::encode(computed)
    );
    Ok(header)
}

pub fn backup(args: BackupArgs) -> anyhow::Result<()> {
    let mut out = AtomicFile::create(&args.out)?;
    let (header, digest) = match &args.data {
        Some(data) => backup_stopped(data, out.file_mut())?,
        None => backup_running(&args.cluster, out.file_mut())?,
    };
    out.commit()?;
    if args.json {
        let mut doc = serde_json::to_value(&header)?;
        doc["file"] = args.out.display().to_string().into();
        doc["sha256"] = hex::encode(digest).into();
        common::print_json(&doc)?;
    } else {
        writeln!(
            common::stdout(),
            "backup of cluster {} at applied index {} ({} records, {}) from member {}, taken {}, \
             written to {} (sha256 {})",
            header.cluster_id,
            header.applied_index,
            header.records,
            units::bytes(header.state_bytes),
            header.member_id,
            units::time(header.created_unix_ms),
            args.out.display(),
            hex::encode(digest)
        )?;
    }
    Ok(())
}

/// The running group's state, streamed from its leader into `file`.
fn backup_running(
    cluster: &ClusterArgs,
    file: &mut File,
) -> anyhow::Result<(BackupHeader, [u8; 32])> {
    common::client_runtime()?.block_on(async {
        let client = cluster.meta_client().await?;
        let (h, mut pieces) = client.backup().await.context("asking for a backup")?;
        let header = BackupHeader {
            format: VERSION,
            cluster_id: h.cluster_id,
            applied_index: h.applied_index,
            applied_term: h.applied_term,
            created_unix_ms: h.created_unix_ms,
            member_id: h.member_id,
            state_bytes: h.state_bytes,
            state_crc32c: h.state_crc32c,
            records: h.records,
        };
        let mut w = BackupWriter::new(BufWriter::with_capacity(BUFFER_BYTES, file), &header)?;
        while let Some(piece) = pieces.next_piece().await? {
            w.state(&piece)?;
        }
        let (buffered, digest) = w.finish()?;
        buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .context("writing the backup file")?;
        anyhow::Ok((header, digest))
    })
}

/// A stopped member's state, read from its data directory into `file`.
fn backup_stopped(data: &Path, file: &mut File) -> anyhow::Result<(BackupHeader, [u8; 32])> {
    let (engine, store) = bitmountain_meta::state::check::open_stopped_member(data)
        .with_context(|| format!("opening {} (the member must be stopped)", data.display()))?;
    let cluster_id = store.map().cluster.cluster_id.clone();
    let scratch = bitmountain_raftstore::backup::scratch_path(engine.db(), "backup");
    let state = bitmountain_raftstore::backup::write_state(engine.db(), &scratch)
        .with_context(|| format!("reading the state of {}", data.display()))?;
    let header = BackupHeader {
        format: VERSION,
        cluster_id,
        applied_index: state.index,
        applied_term: state.term,
        created_unix_ms: units::now_unix_ms(),
        member_id: engine.member_id()?.unwrap_or(0),
        state_bytes: state.file_bytes,
        state_crc32c: state.crc,
        records: state.records,
    };
    let copied = (|| {
        let mut w = BackupWriter::new(BufWriter::with_capacity(BUFFER_BYTES, file), &header)?;
        let mut src = BufReader::with_capacity(BUFFER_BYTES, File::open(&scratch)?);
        let mut buf = vec![0u8; BUFFER_BYTES];
        loop {
            let n = src.read(&mut buf)?;
            if n == 0 {
                break;
            }
            w.state(&buf[..n])?;
        }
        let (buffered, digest) = w.finish()?;
        buffered.into_inner().map_err(|e| e.into_error())?;
        anyhow::Ok(digest)
    })();
    let _ = std::fs::remove_file(&scratch);
    Ok((header, copied?))
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let (header, records) = restore_into(&args.file, &args.data, args.id, &args.listen)?;
    writeln!(
        common::stdout(),
        "restored cluster {} at applied index {} ({records} records, backup taken {}) into {} as \
         the only member, {} at {}.\nStart it: bitmountain meta --data {} --listen {} (with its \
         --tls-dir); then add members with `bitmountain member add`.",
        header.cluster_id,
        header.applied_index,
        units::time(header.created_unix_ms),
        args.data.display(),
        args.id,
        args.listen,
        args.data.display(),
        args.listen
    )?;
    Ok(())
}

/// Checks the backup `file` and installs it into `data` as a group of one, member `id` at
/// `address`. Returns the backup's header and the records restored.
pub fn restore_into(
    file: &Path,
    data: &Path,
    id: u64,
    address: &str,
) -> anyhow::Result<(BackupHeader, u64)> {
    ensure!(id != 0, "--id must be non-zero");
    ensure!(
        address.contains(':'),
        "--listen {address:?}: expected HOST:PORT"
    );
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let state = data.join(".restore-state.tmp");
    let restored = read_backup(file, &state).and_then(|header| {
        let source = bitmountain_raftstore::backup::RestoreSource {
            state_file: &state,
            file_bytes: header.state_bytes,
            crc: header.state_crc32c,
            index: header.applied_index,
            term: header.applied_term,
        };
        let records = bitmountain_raftstore::backup::restore(data, source, id, address)
            .with_context(|| format!("restoring into {}", data.display()))?;
        anyhow::Ok((header, records))
    });
    let _ = std::fs::remove_file(&state);
    restored
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(state_bytes: u64) -> BackupHeader {
        BackupHeader {
            format: VERSION,
            cluster_id: "c".into(),
            applied_index: 5,
            applied_term: 2,
            created_unix_ms: 1,
            member_id: 1,
            state_bytes,
            state_crc32c: 0,
            records: 0,
        }
    }

    #[test]
    fn round_trips_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let state: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut w = BackupWriter::new(Vec::new(), &header(state.len() as u64)).unwrap();
        for piece in state.chunks(700_000) {
            w.state(piece).unwrap();
        }
        let (bytes, _) = w.finish().unwrap();
        let file = dir.path().join("b");
        let out = dir.path().join("s");
        std::fs::write(&file, &bytes).unwrap();
        assert_eq!(
            read_backup(&file, &out).unwrap(),
            header(state.len() as u64)
        );
        assert_eq!(std::fs::read(&out).unwrap(), state);

        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        std::fs::write(&file, &flipped).unwrap();
        let err = read_backup(&file, &out).unwrap_err().to_string();
        assert!(err.contains("SHA-256"), "{err}");
        std::fs::write(&file, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read_backup(&file, &out).is_err());
        std::fs::write(&file, b"BMSNAP01 not a backup").unwrap();
        assert!(read_backup(&file, &out).is_err());

        // A short stream is refused before the digest is written.
        let mut w = BackupWriter::new(Vec::new(), &header(10)).unwrap();
        w.state(&[1; 9]).unwrap();
        assert!(w.finish().is_err());
    }
}
