//! `MetaAdmin.Backup`: the leader writes its applied state (one RocksDB snapshot, so one
//! applied index) to a scratch file next to its snapshots and streams it: a header first, then
//! the file in pieces. The client (`bitmountain meta backup`) wraps it in the backup file format
//! (`docs/formats.md`, "Metadata backup").

use std::io::Read;

use bitmountain_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::MetaServer;
use crate::error::{MetaError, Result};

/// Bytes per streamed piece.
pub const BACKUP_PIECE_BYTES: usize = 1 << 20;
/// Pieces buffered ahead of a slow client.
const BACKUP_QUEUE_PIECES: usize = 4;
/// Backups one member writes at once (each holds a RocksDB snapshot and a file of the whole
/// state).
pub const MAX_CONCURRENT_BACKUPS: usize = 1;

pub(crate) type BackupStream = ReceiverStream<std::result::Result<pb::BackupChunk, Status>>;

impl MetaServer {
    /// Writes the state and starts streaming it.
    pub(crate) async fn backup(&self) -> Result<BackupStream> {
        self.require_leader()?;
        // Everything committed before the request is applied before the state is read.
        self.read_barrier(false).await?;
        let permit = self
            .inner
            .backup_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| MetaError::Raft {
                kind: crate::error::ErrorKind::Overloaded,
                leader: None,
                message: format!(
                    "{MAX_CONCURRENT_BACKUPS} backup is already being written by this member; \
                     try again when it is done"
                ),
            })?;
        let db = self.inner.store.db_handle();
        let path = bitmountain_raftstore::backup::scratch_path(&db, "backup");
        let state = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                bitmountain_raftstore::backup::write_state(&db, &path)
            })
            .await
            .map_err(|e| MetaError::Corrupt {
                what: format!("backup writer failed: {e}"),
            })?
            .map_err(crate::raft_error)?
        };
        let header = pb::BackupHeader {
            applied_index: state.index,
            applied_term: state.term,
            created_unix_ms: crate::types::now_unix_ms(),
            cluster_id: self.inner.store.map().cluster.cluster_id.clone(),
            member_id: self.inner.raft.id(),
            state_bytes: state.file_bytes,
            state_crc32c: state.crc,
            records: state.records,
        };
        tracing::info!(
            index = state.index,
            records = state.records,
            bytes = state.file_bytes,
            "backup written; streaming it"
        );
        let (tx, rx) = mpsc::channel(BACKUP_QUEUE_PIECES);
        std::thread::Builder::new()
            .name("backup-send".into())
            .spawn(move || {
                let _permit = permit;
                send_file(&tx, header, &path);
                let _ = std::fs::remove_file(&path);
            })
            .map_err(|e| MetaError::Corrupt {
                what: format!("cannot start the backup sender: {e}"),
            })?;
        Ok(ReceiverStream::new(rx))
    }
}

/// Sends the header and the file; on a read error the client gets the error, not a short file.
fn send_file(
    tx: &mpsc::Sender<std::result::Result<pb::BackupChunk, Status>>,
    header: pb::BackupHeader,
    path: &std::path::Path,
) {
    use pb::backup_chunk::Item;
    let chunk = |item| Ok(pb::BackupChunk { item: Some(item) });
    if tx.blocking_send(chunk(Item::Header(header))).is_err() {
        return;
    }
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.blocking_send(Err(Status::internal(format!(
                "reading the backup file {}: {e}",
                path.display()
            ))));
            return;
        }
    };
    let mut buf = vec![0u8; BACKUP_PIECE_BYTES];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(Status::internal(format!(
                    "reading the backup file {}: {e}",
                    path.display()
                ))));
                return;
            }
        };
        if tx
            .blocking_send(chunk(Item::Data(buf[..n].to_vec())))
            .is_err()
        {
            return;
        }
    }
}
