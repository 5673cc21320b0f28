//! `MetaClient::backup`: the leader's applied state, streamed (`bitmountain meta backup`).

use std::time::Duration;

use bitmountain_proto::v1 as pb;
use pb::backup_chunk::Item;

use crate::client::MetaClient;
use crate::error::{Field, MetaError, Result};

/// Longest wait for the next piece of a backup once it streams.
pub const BACKUP_PIECE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a backup's first message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupHeader {
    pub applied_index: u64,
    pub applied_term: u64,
    pub created_unix_ms: u64,
    pub cluster_id: String,
    pub member_id: u64,
    pub state_bytes: u64,
    pub state_crc32c: u32,
    pub records: u64,
}

/// The state file's pieces, in order.
#[derive(Debug)]
pub struct BackupPieces {
    stream: tonic::Streaming<pb::BackupChunk>,
    endpoint: String,
    received_bytes: u64,
    expected_bytes: u64,
}

impl BackupPieces {
    /// The next piece; `None` once every byte the header announced has arrived (more, fewer,
    /// or a stalled stream is an error).
    pub async fn next_piece(&mut self) -> Result<Option<Vec<u8>>> {
        let next = tokio::time::timeout(BACKUP_PIECE_TIMEOUT, self.stream.message())
            .await
            .map_err(|_| MetaError::Rpc {
                endpoint: self.endpoint.clone(),
                kind: "timeout".into(),
                message: format!(
                    "the backup stalled: nothing for {} s after {} of {} bytes",
                    BACKUP_PIECE_TIMEOUT.as_secs(),
                    self.received_bytes,
                    self.expected_bytes
                ),
            })?
            .map_err(|s| MetaError::from_status(&self.endpoint, &s))?;
        match next {
            None if self.received_bytes == self.expected_bytes => Ok(None),
            None => Err(self.broken(format!(
                "the stream ended after {} of {} bytes",
                self.received_bytes, self.expected_bytes
            ))),
            Some(pb::BackupChunk {
                item: Some(Item::Data(bytes)),
            }) => {
                self.received_bytes += bytes.len() as u64;
                if self.received_bytes > self.expected_bytes {
                    return Err(self.broken(format!(
                        "more bytes than the {} announced",
                        self.expected_bytes
                    )));
                }
                Ok(Some(bytes))
            }
            Some(_) => Err(self.broken("a second header or an empty message".into())),
        }
    }

    fn broken(&self, reason: String) -> MetaError {
        MetaError::InvalidArgument {
            field: Field::Backup,
            reason: format!("backup from {}: {reason}", self.endpoint),
        }
    }
}

impl MetaClient {
    /// Asks the leader for a backup: its header, then the state file's pieces.
    pub async fn backup(&self) -> Result<(BackupHeader, BackupPieces)> {
        let mut stream = self
            .transport()
            .admin(|mut c| async move { c.backup(pb::BackupRequest {}).await })
            .await?;
        let endpoint = self.transport().leader().unwrap_or_default();
        let first = stream
            .message()
            .await
            .map_err(|s| MetaError::from_status(&endpoint, &s))?;
        let Some(pb::BackupChunk {
            item: Some(Item::Header(h)),
        }) = first
        else {
            return Err(MetaError::InvalidArgument {
                field: Field::Backup,
                reason: format!("backup from {endpoint}: the first message is not a header"),
            });
        };
        let header = BackupHeader {
            applied_index: h.applied_index,
            applied_term: h.applied_term,
            created_unix_ms: h.created_unix_ms,
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            state_bytes: h.state_bytes,
            state_crc32c: h.state_crc32c,
            records: h.records,
        };
        let pieces = BackupPieces {
            stream,
            endpoint,
            received_bytes: 0,
            expected_bytes: header.state_bytes,
        };
        Ok((header, pieces))
    }
}
