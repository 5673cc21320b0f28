//! What a node keeps for the audit trail: refusals its handlers decide (a bundle outside a
//! token's scope; the auth layer queues its own) for the group's trail, and the **read access
//! log** — who read which file — kept on the node itself, since reads are not Raft writes.
//!
//! The read log is JSON lines in `<data dir>/access-log/reads.jsonl`, written in batches by a
//! thread of its own behind a bounded queue (a read never waits for it; a full queue is counted
//! and the count logged), rotated at [`READ_LOG_ROTATE_BYTES`] keeping [`READ_LOG_KEEP_FILES`]
//! older files (`reads.jsonl.1` the newest of them). Format: `docs/formats.md`, "Read access
//! log".

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use bitmountain_auth::{AuthError, Principal, Refusal, RefusalLog, RefusedCaller};
use bitmountain_meta_client::types::{now_unix_ms, Agent};
use bitmountain_meta_client::BundleId;
use serde::Serialize;

/// Reads queued for the log's writer before more are only counted.
pub const MAX_QUEUED_READ_RECORDS: usize = 8192;
/// A log file is rotated once it reaches this size.
pub const READ_LOG_ROTATE_BYTES: u64 = 64 << 20;
/// Rotated files kept (older ones are deleted).
pub const READ_LOG_KEEP_FILES: u32 = 8;
/// The writer sleeps this long after writing what it found queued: a busy node's reads then
/// wake it a few times a second instead of once each (a wake-up costs more than the line).
pub const READ_LOG_BATCH_INTERVAL_MS: u64 = 50;
/// The log's directory under the node's data directory.
pub const READ_LOG_DIR: &str = "access-log";
/// The current log file's name.
pub const READ_LOG_FILE: &str = "reads.jsonl";

/// One read, as a line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReadRecord {
    pub time_unix_ms: u64,
    /// `token:<id> (<name>)`, `node:<name>` or `anonymous`.
    pub agent: String,
    pub bundle: String,
    /// The file's path in the bundle (empty: the whole bundle, an export).
    pub path: String,
    pub offset: u64,
    pub length: u64,
}

/// A node's audit side: its refusal queue (drained by the refusal reporter) and read log.
#[derive(Debug)]
pub struct NodeAudit {
    refusals: Option<Arc<RefusalLog>>,
    reads: Option<SyncSender<ReadRecord>>,
    reads_dropped: Arc<AtomicU64>,
}

impl NodeAudit {
    /// Refusals go to `refusals` (the auth layer's queue; `None` without access control, where
    /// nothing is refused); reads to a log under `data_dir` (`None`: no read log).
    pub fn new(
        refusals: Option<Arc<RefusalLog>>,
        data_dir: Option<&Path>,
    ) -> std::io::Result<Self> {
        let reads_dropped = Arc::new(AtomicU64::new(0));
        let reads = match data_dir {
            Some(dir) => Some(ReadLogWriter::start(
                dir.join(READ_LOG_DIR),
                Arc::clone(&reads_dropped),
            )?),
            None => None,
        };
        Ok(NodeAudit {
            refusals,
            reads,
            reads_dropped,
        })
    }

    /// Notes a refusal a handler decided (`method`: the gRPC method, `object`: what it named).
    pub fn refused(
        &self,
        method: &str,
        principal: Option<&Principal>,
        object: String,
        e: &AuthError,
    ) {
        let (Some(log), Some(p)) = (&self.refusals, principal) else {
            return;
        };
        log.push(Refusal {
            time_unix_ms: now_unix_ms(),
            method: method.to_owned(),
            caller: RefusedCaller::from(p),
            object: Some(object),
            message: e.to_string(),
        });
    }

    /// Logs a read of `length` bytes at `offset` of file `path` of `bundle` (never waits).
    pub fn read(
        &self,
        principal: Option<&Principal>,
        bundle: BundleId,
        path: &str,
        offset: u64,
        length: u64,
    ) {
        let Some(tx) = &self.reads else { return };
        let record = ReadRecord {
            time_unix_ms: now_unix_ms(),
            agent: principal.map(Agent::of).unwrap_or_default().to_string(),
            bundle: bundle.to_string(),
            path: path.to_owned(),
            offset,
            length,
        };
        match tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.reads_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The thread that writes the read log.
struct ReadLogWriter {
    dir: PathBuf,
    out: BufWriter<File>,
    written_bytes: u64,
    rotate_bytes: u64,
    dropped: Arc<AtomicU64>,
}

impl ReadLogWriter {
    fn start(dir: PathBuf, dropped: Arc<AtomicU64>) -> std::io::Result<SyncSender<ReadRecord>> {
        fs::create_dir_all(&dir)?;
        let (out, written_bytes) = open_current(&dir)?;
        let (tx, rx) = sync_channel(MAX_QUEUED_READ_RECORDS);
        let mut writer = ReadLogWriter {
            dir,
            out,
            written_bytes,
            rotate_bytes: READ_LOG_ROTATE_BYTES,
            dropped,
        };
        std::thread::Builder::new()
            .name("read-log".into())
            .spawn(move || writer.run(rx))?;
        Ok(tx)
    }

    /// Writes what arrives, flushing once the queue is empty, then rests for
    /// [`READ_LOG_BATCH_INTERVAL_MS`]; ends when the node drops the sender.
    fn run(&mut self, rx: Receiver<ReadRecord>) {
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            while let Some(record) = next {
                if let Err(e) = self.write(&record) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "read access log not written");
                }
                next = rx.try_recv().ok();
            }
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "read access log: reads not logged (its queue was full)"
                );
                let _ = writeln!(
                    self.out,
                    "{{\"dropped\":{dropped},\"time_unix_ms\":{}}}",
                    now_unix_ms()
                );
            }
            if let Err(e) = self.out.flush() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "read access log not flushed");
            }
            std::thread::sleep(std::time::Duration::from_millis(READ_LOG_BATCH_INTERVAL_MS));
        }
        let _ = self.out.flush();
    }

    fn write(&mut self, record: &ReadRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.written_bytes + line.len() as u64 > self.rotate_bytes && self.written_bytes > 0 {
            self.rotate()?;
        }
        self.out.write_all(&line)?;
        self.written_bytes += line.len() as u64;
        Ok(())
    }

    /// `reads.jsonl` becomes `reads.jsonl.1`, `.1` becomes `.2`, ...; the oldest goes.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let name = |n: u32| self.dir.join(format!("{READ_LOG_FILE}.{n}"));
        let _ = fs::remove_file(name(READ_LOG_KEEP_FILES));
        for n in (1..READ_LOG_KEEP_FILES).rev() {
            if name(n).exists() {
                fs::rename(name(n), name(n + 1))?;
            }
        }
        fs::rename(self.dir.join(READ_LOG_FILE), name(1))?;
        let (out, written_bytes) = open_current(&self.dir)?;
        self.out = out;
        self.written_bytes = written_bytes;
        Ok(())
    }
}

fn open_current(dir: &Path) -> std::io::Result<(BufWriter<File>, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(READ_LOG_FILE))?;
    let len = file.metadata()?.len();
    Ok((BufWriter::new(file), len))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn wait_for(path: &Path, lines: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let text = fs::read_to_string(path).unwrap_or_default();
            let got: Vec<String> = text.lines().map(str::to_owned).collect();
            if got.len() >= lines || std::time::Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn reads_are_logged_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let audit = NodeAudit::new(None, Some(dir.path())).unwrap();
        audit.read(None, BundleId(7), "pages/0001.tif", 0, 10);
        audit.read(None, BundleId(7), "pages/0002.tif", 5, 20);
        let lines = wait_for(&dir.path().join(READ_LOG_DIR).join(READ_LOG_FILE), 2);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(v["path"], "pages/0002.tif");
        assert_eq!(v["agent"], "anonymous");
        assert_eq!(v["bundle"], BundleId(7).to_string());
        assert_eq!(v["offset"], 5);
        assert_eq!(v["length"], 20);
    }

    #[test]
    fn the_log_rotates_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        fs::create_dir_all(&log_dir).unwrap();
        let (out, written_bytes) = open_current(&log_dir).unwrap();
        let mut w = ReadLogWriter {
            dir: log_dir.clone(),
            out,
            written_bytes,
            rotate_bytes: 1000,
            dropped: Arc::default(),
        };
        let record = ReadRecord {
            time_unix_ms: 1,
            agent: "anonymous".into(),
            bundle: "b".into(),
            path: "p".repeat(100),
            offset: 0,
            length: 1,
        };
        // About 7 records fit in a file: enough for more rotations than the files kept.
        for _ in 0..(7 * (READ_LOG_KEEP_FILES as usize + 3)) {
            w.write(&record).unwrap();
        }
        w.out.flush().unwrap();
        let mut names: Vec<String> = fs::read_dir(&log_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), READ_LOG_KEEP_FILES as usize + 1, "{names:?}");
        for n in 1..=READ_LOG_KEEP_FILES {
            assert!(names.contains(&format!("{READ_LOG_FILE}.{n}")), "{names:?}");
        }
        for name in &names {
            let len = fs::metadata(log_dir.join(name)).unwrap().len();
            assert!(len <= 1000, "{name}: {len}");
        }
    }
}
