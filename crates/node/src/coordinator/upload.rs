//! The upload pipeline. One upload runs as four cooperating parts joined by bounded queues, so
//! memory stays bounded whatever the bundle size and the slowest party sets the pace:
//!
//! ```text
//! client stream ──pump──▶ [input queue] ──encoder thread──▶ [stripe queue] ──distributor──▶
//!     [one queue per target] ──target task × (k+m)──▶ shard files (local disk or NodeService)
//! ```
//!
//! - the **pump** (the request's own task) checks the message sequence and forwards files and
//!   data;
//! - the **encoder** (a blocking thread) writes the MIME bundle (paths checked, per-file SHA-256)
//!   straight into the stripe encoder (bundle SHA-256, Reed-Solomon, CRC32C framing);
//! - the **distributor** hands each stripe's k+m framed cells to the target queues; a target that
//!   fails or stalls is dropped, and once more than m−1 are gone the upload is abandoned;
//! - each **target task** streams its shard and, after the last bytes, waits for the fsync.
//!
//! The bundle commits when at least k+1 shards are durable (it survives one more failure); the
//! others are named missing in the commit, which queues their repair. Anything short of that
//! aborts the allocation: nothing becomes visible.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bitmountain_bundle::{BundleWriter, WriterOptions};
use bitmountain_erasure::{
    BundleDescription, BundleId as ErasureBundleId, BundleInfo, Code, EncodedStripe, IndexLocation,
    StripeEncoder,
};
use bitmountain_meta_client::{
    types::Agent, AllocateRequest, Bundle, BundleId, Code as MetaCode, CommitRequest, ShardLocation,
};
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::{Stream, StreamExt};

use super::{erasure_code, Coordinator};
use crate::error::{NodeError, Result};
use crate::limits::{
    MAX_LABELS, MAX_LABEL_BYTES, MAX_RESPONSE_DIGEST_BYTES, MAX_UPLOAD_PIECE_BYTES,
    TARGET_FINISH_TIMEOUT_MS, TARGET_QUEUE_BYTES, TARGET_STALL_TIMEOUT_MS,
    UPLOAD_INPUT_QUEUE_MESSAGES, UPLOAD_STRIPE_QUEUE,
};
use crate::shard_io::{DeleteWhy, ShardIo};

/// What a client sends, message by message (converted from the wire by the service).
#[derive(Debug)]
pub enum UploadItem {
    Start(UploadStart),
    File(FileHeader),
    Data(Bytes),
    End,
}

/// The first message of an upload.
#[derive(Debug, Default)]
pub struct UploadStart {
    pub labels: BTreeMap<String, String>,
    pub code: Option<MetaCode>,
    pub expected_content_bytes: u64,
    /// Deletes are refused before this time (0: no retention).
    pub retain_until_unix_ms: u64,
    /// Who uploads (the ingestion event's agent).
    pub agent: Agent,
}

/// One file's header; its bytes follow in `Data` items.
#[derive(Debug, Clone)]
pub struct FileHeader {
    pub path: String,
    /// Empty: guessed from the path's extension.
    pub content_type: String,
    pub size_bytes: u64,
    /// The SHA-256 the sender expects; the upload is refused if the bytes differ.
    pub expected_sha256: Option<[u8; 32]>,
}

/// One file as stored.
#[derive(Debug, Clone)]
pub struct FileDigest {
    pub path: String,
    pub size_bytes: u64,
    pub sha256: [u8; 32],
}

/// A committed upload.
#[derive(Debug)]
pub struct UploadOutcome {
    pub bundle: Bundle,
    pub file_count: u64,
    /// Per file in upload order; empty when the list would exceed
    /// [`MAX_RESPONSE_DIGEST_BYTES`].
    pub files: Vec<FileDigest>,
    pub missing_shards: Vec<u32>,
}

impl Coordinator {
    /// Runs one upload from its first message to the commit.
    pub async fn put_bundle<S>(&self, mut items: S) -> Result<UploadOutcome>
    where
        S: Stream<Item = Result<UploadItem>> + Unpin + Send,
    {
        let _slot = Arc::clone(&self.upload_slots)
            .try_acquire_owned()
            .map_err(|_| NodeError::Overloaded {
                what: "uploads coordinated by this node at once",
                limit: self.config.max_concurrent_uploads,
            })?;
        let idle = self.config.client_idle_timeout;
        let start = match next_item(&mut items, idle).await? {
            Some(UploadItem::Start(start)) => start,
            Some(_) => {
                return Err(NodeError::BadUpload {
                    reason: "the first message of a PutBundle stream must be `start`".into(),
                })
            }
            None => {
                return Err(NodeError::UploadIncomplete {
                    reason: "the stream ended before its `start` message".into(),
                })
            }
        };
        validate_labels(&start.labels)?;
        if let Some(code) = &start.code {
            code.validate()?;
            erasure_code(code)?;
        }
        let agent = start.agent;
        let request = AllocateRequest {
            request_id: format!("put-{}-{:032x}", self.node_id, rand::random::<u128>()),
            code: start.code,
            labels: start.labels,
            // The MIME framing and the index add a little to the content.
            expected_length: start.expected_content_bytes,
            ttl_ms: 0,
            retain_until_unix_ms: start.retain_until_unix_ms,
        };
        let bundle = self.meta.allocate_bundle(&request).await?;
        let id = bundle.record.id;
        tracing::debug!(bundle = %id, code = %bundle.record.code, "upload allocated");
        match self.upload_allocated(&bundle, &mut items, agent).await {
            Ok(outcome) => Ok(outcome),
            Err(err) => {
                tracing::info!(bundle = %id, error = %err, "upload failed; aborting its allocation");
                let meta = Arc::clone(&self.meta);
                // Best effort: an allocation that is not aborted expires by itself.
                tokio::spawn(async move {
                    if let Err(e) = meta.abort_bundle(id).await {
                        tracing::warn!(bundle = %id, error = %e, "could not abort allocation; it will expire");
                    }
                });
                Err(err)
            }
        }
    }

    async fn upload_allocated<S>(
        &self,
        bundle: &Bundle,
        items: &mut S,
        agent: Agent,
    ) -> Result<UploadOutcome>
    where
        S: Stream<Item = Result<UploadItem>> + Unpin + Send,
    {
        let id = bundle.record.id;
        let meta_code = bundle.record.code;
        let code = erasure_code(&meta_code)?;
        let total = code.total_shards();
        if bundle.locations.len() != total {
            return Err(NodeError::Internal(format!(
                "bundle {id}: the metadata group placed {} shards for a code of {total}",
                bundle.locations.len()
            )));
        }
        let erasure_id = ErasureBundleId(id.to_bytes());
        let encoder = StripeEncoder::new(code, erasure_id)?;
        let stall = Duration::from_millis(TARGET_STALL_TIMEOUT_MS);

        // One task per target shard, fed through a queue of a few cells.
        let target_queue = (TARGET_QUEUE_BYTES / code.cell_bytes() as usize).max(2);
        let (target_txs, target_tasks) =
            self.spawn_targets(bundle, &encoder, erasure_id, target_queue, stall);

        let (input_tx, input_rx) = mpsc::channel(UPLOAD_INPUT_QUEUE_MESSAGES);
        let (stripe_tx, stripe_rx) = mpsc::channel(UPLOAD_STRIPE_QUEUE);
        let max_files = self.config.max_files_per_upload;
        // Every shard describes the bundle as the metadata group records it.
        let description = BundleDescription {
            created_unix_ms: bundle.record.created_unix_ms,
            file_count: 0,
            labels: bundle.record.labels.clone(),
        };
        let encode_task = tokio::task::spawn_blocking(move || {
            encode_bundle(encoder, description, max_files, input_rx, stripe_tx)
        });
        let tolerated = meta_code.parity_shards.saturating_sub(1) as usize;
        let distribute_task = tokio::spawn(distribute(stripe_rx, target_txs, tolerated, stall));

        let pumped = pump(items, input_tx, self.config.client_idle_timeout).await;
        let encoded = encode_task
            .await
            .map_err(|e| NodeError::Internal(format!("encoder thread failed: {e}")))?;
        let distributed = distribute_task
            .await
            .map_err(|e| NodeError::Internal(format!("distributor failed: {e}")))?;

        // The first cause wins: bad content the encoder refused (it came before whatever the
        // stream did next), else a client error, else the targets'.
        if let (Err(_), Err(EncodeFailure::Node(_))) = (&pumped, &encoded) {
            if let Err(EncodeFailure::Node(e)) = encoded {
                return Err(e);
            }
        }
        pumped?;
        let summary = match encoded {
            Ok(summary) => summary,
            Err(EncodeFailure::TargetsGone) => {
                return Err(distributed.err().unwrap_or_else(|| {
                    NodeError::Internal("the distributor stopped without an error".into())
                }))
            }
            Err(EncodeFailure::ClientGone) => {
                return Err(NodeError::UploadIncomplete {
                    reason: "the client stream ended early".into(),
                })
            }
            Err(EncodeFailure::Node(e)) => return Err(e),
        };
        distributed?;
        self.commit_durable(bundle, code, summary, target_tasks, agent)
            .await
    }

    /// Starts one task per target shard, fed through a queue of `target_queue` cells; returns
    /// the queues (in shard order) and the tasks.
    fn spawn_targets(
        &self,
        bundle: &Bundle,
        encoder: &StripeEncoder,
        erasure_id: ErasureBundleId,
        target_queue: usize,
        stall: Duration,
    ) -> (TargetQueues, Vec<JoinHandle<Result<u64>>>) {
        let total = bundle.locations.len();
        let mut target_txs = Vec::with_capacity(total);
        let mut target_tasks = Vec::with_capacity(total);
        for (i, loc) in bundle.locations.iter().enumerate() {
            assert_eq!(
                loc.shard_index as usize, i,
                "locations sorted by shard index"
            );
            let (tx, rx) = mpsc::channel(target_queue);
            let header = Bytes::copy_from_slice(&encoder.header(i));
            target_tasks.push(tokio::spawn(run_target(
                Arc::clone(&self.io),
                loc.clone(),
                erasure_id,
                header,
                rx,
                stall,
            )));
            target_txs.push(Some(tx));
        }
        (target_txs, target_tasks)
    }

    /// Once the bundle is encoded and handed out: waits for every target, then commits with
    /// the shards that are not durable named missing if at least k+1 are, else deletes the
    /// durable ones and fails.
    async fn commit_durable(
        &self,
        bundle: &Bundle,
        code: Code,
        summary: EncodeSummary,
        target_tasks: Vec<JoinHandle<Result<u64>>>,
        agent: Agent,
    ) -> Result<UploadOutcome> {
        let id = bundle.record.id;
        let total = code.total_shards();
        let mut durable = Vec::new();
        let mut failures = Vec::new();
        for (i, task) in target_tasks.into_iter().enumerate() {
            let loc = &bundle.locations[i];
            match task.await {
                Ok(Ok(_bytes)) => durable.push(i),
                Ok(Err(e)) => failures.push(format!(
                    "shard {i} on node {} disk {}: {e}",
                    loc.node_address, loc.disk_id
                )),
                Err(e) => failures.push(format!("shard {i}: target task failed: {e}")),
            }
        }
        let needed = (code.data_shards() + 1).min(total);
        if durable.len() < needed {
            self.delete_shards_later(bundle, &durable);
            return Err(NodeError::NotEnoughShards {
                bundle: id.to_string(),
                durable: durable.len(),
                total,
                needed,
                failures: failures.join("; "),
            });
        }
        let missing_shards: Vec<u32> = (0..total as u32)
            .filter(|i| !durable.contains(&(*i as usize)))
            .collect();
        if !missing_shards.is_empty() {
            tracing::warn!(bundle = %id, missing = ?missing_shards, failures = %failures.join("; "), "committing with missing shards; they are queued for repair");
        }
        let info = summary.info;
        let committed = self
            .meta
            .commit_bundle(
                id,
                &CommitRequest {
                    length: info.bundle_len,
                    index_offset: info.index.offset,
                    index_length: info.index.len,
                    sha256: info.sha256.to_vec(),
                    file_count: summary.file_count,
                    missing_shards: missing_shards.clone(),
                    agent,
                },
            )
            .await?;
        tracing::info!(bundle = %id, bytes = info.bundle_len, files = summary.file_count, "bundle committed");
        Ok(UploadOutcome {
            bundle: committed,
            file_count: summary.file_count,
            files: summary.files,
            missing_shards,
        })
    }

    /// Deletes shards an abandoned upload made durable (best effort: garbage collection
    /// removes whatever this misses once the allocation is gone).
    fn delete_shards_later(&self, bundle: &Bundle, shard_indexes: &[usize]) {
        let io = Arc::clone(&self.io);
        let id = bundle.record.id;
        let locations: Vec<ShardLocation> = shard_indexes
            .iter()
            .map(|&i| bundle.locations[i].clone())
            .collect();
        tokio::spawn(async move {
            for loc in locations {
                if let Err(e) = io
                    .delete(
                        &loc,
                        ErasureBundleId(id.to_bytes()),
                        DeleteWhy::NotPlacedHere,
                    )
                    .await
                {
                    tracing::debug!(bundle = %id, shard = loc.shard_index, error = %e, "orphan shard left for garbage collection");
                }
            }
        });
    }
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    if labels.len() > MAX_LABELS {
        return Err(NodeError::BadUpload {
            reason: format!("{} labels; at most {MAX_LABELS} per bundle", labels.len()),
        });
    }
    for (k, v) in labels {
        if k.is_empty() || k.len() > MAX_LABEL_BYTES || v.len() > MAX_LABEL_BYTES {
            return Err(NodeError::BadUpload {
                reason: format!(
                    "label {k:?}={v:?}: keys must be 1 to {MAX_LABEL_BYTES} bytes, values at most {MAX_LABEL_BYTES}"
                ),
            });
        }
        if k.contains('\0') || v.contains('\0') {
            return Err(NodeError::BadUpload {
                reason: format!("label {k:?}: NUL is not allowed in labels"),
            });
        }
    }
    Ok(())
}

/// The next client item, or an error when the client is silent too long or the stream broke.
async fn next_item<S>(items: &mut S, idle: Duration) -> Result<Option<UploadItem>>
where
    S: Stream<Item = Result<UploadItem>> + Unpin,
{
    match tokio::time::timeout(idle, items.next()).await {
        Err(_) => Err(NodeError::UploadIdle {
            idle_ms: idle.as_millis() as u64,
        }),
        Ok(None) => Ok(None),
        Ok(Some(item)) => item.map(Some),
    }
}

/// Forwards the client's files and data to the encoder until `end`. Returns early without an
/// error when the encoder stopped (its own error is the one to report).
async fn pump<S>(items: &mut S, tx: mpsc::Sender<EncoderInput>, idle: Duration) -> Result<()>
where
    S: Stream<Item = Result<UploadItem>> + Unpin,
{
    loop {
        let input = match next_item(items, idle).await? {
            None => {
                return Err(NodeError::UploadIncomplete {
                    reason: "the stream ended without its `end` message".into(),
                })
            }
            Some(UploadItem::Start(_)) => {
                return Err(NodeError::BadUpload {
                    reason: "a second `start` message in one upload".into(),
                })
            }
            Some(UploadItem::File(header)) => EncoderInput::File(header),
            Some(UploadItem::Data(bytes)) => {
                if bytes.len() > MAX_UPLOAD_PIECE_BYTES {
                    return Err(NodeError::BadUpload {
                        reason: format!(
                            "a data message of {} bytes; at most {MAX_UPLOAD_PIECE_BYTES} per message",
                            bytes.len()
                        ),
                    });
                }
                bitmountain_metrics::global()
                    .upload_bytes
                    .inc_by(bytes.len() as u64);
                EncoderInput::Data(bytes)
            }
            Some(UploadItem::End) => EncoderInput::End,
        };
        let end = matches!(input, EncoderInput::End);
        if tx.send(input).await.is_err() || end {
            return Ok(());
        }
    }
}

#[derive(Debug)]
enum EncoderInput {
    File(FileHeader),
    Data(Bytes),
    End,
}

#[derive(Debug)]
enum EncoderOutput {
    Stripe(EncodedStripe),
    /// The last bytes of every shard (partial stripe, last CRC, footer).
    Tails(Vec<Vec<u8>>),
}

#[derive(Debug)]
struct EncodeSummary {
    info: BundleInfo,
    file_count: u64,
    files: Vec<FileDigest>,
}

#[derive(Debug)]
enum EncodeFailure {
    /// The distributor stopped taking stripes (too many targets failed).
    TargetsGone,
    /// The client's input ended before `end`.
    ClientGone,
    Node(NodeError),
}

impl From<NodeError> for EncodeFailure {
    fn from(e: NodeError) -> Self {
        EncodeFailure::Node(e)
    }
}

/// The bundle writer's output: bytes go straight into the stripe encoder, and each full stripe
/// to the distributor.
struct EncodeSink {
    encoder: StripeEncoder,
    tx: mpsc::Sender<EncoderOutput>,
    targets_gone: bool,
}

impl std::io::Write for EncodeSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let taken = self.encoder.fill(rest);
            rest = &rest[taken..];
            if let Some(stripe) = self.encoder.take_stripe() {
                if self
                    .tx
                    .blocking_send(EncoderOutput::Stripe(stripe))
                    .is_err()
                {
                    self.targets_gone = true;
                    return Err(std::io::Error::other("the upload's targets are gone"));
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Step {
    /// The client's input ended in the middle of a file.
    ClientGone,
    Bundle(bitmountain_bundle::BundleError),
}

/// The encoder thread: MIME bundle → stripes → distributor.
fn encode_bundle(
    encoder: StripeEncoder,
    mut description: BundleDescription,
    max_files: u64,
    mut rx: mpsc::Receiver<EncoderInput>,
    tx: mpsc::Sender<EncoderOutput>,
) -> std::result::Result<EncodeSummary, EncodeFailure> {
    let sink = EncodeSink {
        encoder,
        tx,
        targets_gone: false,
    };
    let options = WriterOptions {
        boundary: None,
        max_files,
    };
    let mut writer = BundleWriter::new(sink, options).map_err(NodeError::from_upload)?;
    let mut files = Vec::new();
    let mut digest_bytes = 0usize;
    let mut keep_digests = true;
    let mut next = rx.blocking_recv();
    loop {
        let header = match next.take() {
            None => return Err(EncodeFailure::ClientGone),
            Some(EncoderInput::End) => break,
            Some(EncoderInput::Data(_)) => {
                return Err(NodeError::BadUpload {
                    reason: "file data before any `file` message".into(),
                }
                .into())
            }
            Some(EncoderInput::File(header)) => header,
        };
        let content_type = if header.content_type.is_empty() {
            bitmountain_bundle::content_type_for_path(&header.path).to_owned()
        } else {
            header.content_type.clone()
        };
        let step = write_file(&mut writer, &header, &content_type, &mut rx);
        let entry = match step {
            Ok((entry, after)) => {
                next = after;
                entry
            }
            Err(Step::Bundle(e)) => {
                if writer.output_mut().targets_gone {
                    return Err(EncodeFailure::TargetsGone);
                }
                return Err(NodeError::from_upload(e).into());
            }
            Err(Step::ClientGone) => return Err(EncodeFailure::ClientGone),
        };
        if keep_digests {
            digest_bytes += entry.path.len() + 64 + 16;
            if digest_bytes > MAX_RESPONSE_DIGEST_BYTES {
                keep_digests = false;
                files = Vec::new();
            } else {
                files.push(FileDigest {
                    path: entry.path,
                    size_bytes: entry.length,
                    sha256: entry.sha256,
                });
            }
        }
    }
    let summary = match writer.finish() {
        Ok(summary) => summary,
        Err(e) => {
            // `finish` consumed the writer; a failed send is the only I/O error it can meet.
            if matches!(e, bitmountain_bundle::BundleError::Io { .. }) {
                return Err(EncodeFailure::TargetsGone);
            }
            return Err(NodeError::from_upload(e).into());
        }
    };
    let sink = summary.output;
    description.file_count = summary.file_count;
    let finished = sink
        .encoder
        .finish(
            IndexLocation {
                offset: summary.index_offset,
                len: summary.index_length,
            },
            &description,
        )
        .map_err(NodeError::from)?;
    if sink
        .tx
        .blocking_send(EncoderOutput::Tails(finished.tails))
        .is_err()
    {
        return Err(EncodeFailure::TargetsGone);
    }
    Ok(EncodeSummary {
        info: finished.info,
        file_count: summary.file_count,
        files,
    })
}

/// Writes one file's bytes as they arrive; returns its index entry and the input after it.
fn write_file(
    writer: &mut BundleWriter<EncodeSink>,
    header: &FileHeader,
    content_type: &str,
    rx: &mut mpsc::Receiver<EncoderInput>,
) -> std::result::Result<(bitmountain_bundle::IndexEntry, Option<EncoderInput>), Step> {
    let mut file = writer
        .start_file(
            &header.path,
            content_type,
            header.size_bytes,
            header.expected_sha256,
        )
        .map_err(Step::Bundle)?;
    loop {
        match rx.blocking_recv() {
            Some(EncoderInput::Data(bytes)) => file.write_chunk(&bytes).map_err(Step::Bundle)?,
            None => return Err(Step::ClientGone),
            other => {
                let entry = file.finish().map_err(Step::Bundle)?;
                return Ok((entry, other));
            }
        }
    }
}

#[derive(Debug)]
enum TargetMsg {
    Data(Bytes),
    /// Everything was sent: make the shard durable.
    Finish,
}

/// The target tasks' queues in shard order; `None` once a target is dropped.
type TargetQueues = Vec<Option<mpsc::Sender<TargetMsg>>>;

/// Sends `msg` to a target's queue; a target that is gone or stalled is dropped.
async fn send_to_target(
    slot: &mut Option<mpsc::Sender<TargetMsg>>,
    msg: TargetMsg,
    stall: Duration,
) -> bool {
    let Some(tx) = slot else {
        return false;
    };
    match tokio::time::timeout(stall, tx.send(msg)).await {
        Ok(Ok(())) => true,
        _ => {
            *slot = None;
            false
        }
    }
}

/// Hands every stripe's cells to the target queues, then the tails and the finish signal.
async fn distribute(
    mut rx: mpsc::Receiver<EncoderOutput>,
    mut targets: Vec<Option<mpsc::Sender<TargetMsg>>>,
    tolerated: usize,
    stall: Duration,
) -> Result<()> {
    let too_many_gone = |targets: &[Option<mpsc::Sender<TargetMsg>>]| {
        let gone = targets.iter().filter(|t| t.is_none()).count();
        (gone > tolerated).then(|| NodeError::NotEnoughShards {
            bundle: "being uploaded".into(),
            durable: targets.len() - gone,
            total: targets.len(),
            needed: targets.len() - tolerated,
            failures: format!("{gone} target nodes failed or stalled during the upload"),
        })
    };
    while let Some(output) = rx.recv().await {
        match output {
            EncoderOutput::Stripe(stripe) => {
                for (slot, cell) in targets.iter_mut().zip(stripe.shards) {
                    send_to_target(slot, TargetMsg::Data(Bytes::from(cell)), stall).await;
                }
                if let Some(err) = too_many_gone(&targets) {
                    return Err(err);
                }
            }
            EncoderOutput::Tails(tails) => {
                for (slot, tail) in targets.iter_mut().zip(tails) {
                    if send_to_target(slot, TargetMsg::Data(Bytes::from(tail)), stall).await {
                        send_to_target(slot, TargetMsg::Finish, stall).await;
                    }
                }
                // Whether enough shards became durable is decided once every target answered.
                return Ok(());
            }
        }
    }
    // The encoder stopped without tails: the upload failed before its end. Dropping the target
    // queues without `Finish` abandons every shard.
    Ok(())
}

/// Streams one shard to its target and makes it durable; stops at the first stall or error.
async fn run_target(
    io: Arc<ShardIo>,
    loc: ShardLocation,
    bundle: ErasureBundleId,
    header: Bytes,
    mut rx: mpsc::Receiver<TargetMsg>,
    stall: Duration,
) -> Result<u64> {
    let stalled = |what: &str| NodeError::Unreachable {
        address: loc.node_address.clone(),
        reason: format!("{what} took longer than {} ms", stall.as_millis()),
    };
    let mut writer = tokio::time::timeout(stall, io.writer(&loc, bundle))
        .await
        .map_err(|_| stalled("opening the shard stream"))??;
    tokio::time::timeout(stall, writer.send(header))
        .await
        .map_err(|_| stalled("sending the shard header"))??;
    loop {
        match rx.recv().await {
            Some(TargetMsg::Data(bytes)) => tokio::time::timeout(stall, writer.send(bytes))
                .await
                .map_err(|_| stalled("sending shard bytes"))??,
            Some(TargetMsg::Finish) => {
                let finish = Duration::from_millis(TARGET_FINISH_TIMEOUT_MS);
                return tokio::time::timeout(finish, writer.finish())
                    .await
                    .map_err(|_| stalled("making the shard durable"))?;
            }
            None => {
                return Err(NodeError::UploadIncomplete {
                    reason: "the upload was abandoned".into(),
                })
            }
        }
    }
}

/// Bundle id helper for callers holding a metadata id.
pub fn erasure_id(id: BundleId) -> ErasureBundleId {
    ErasureBundleId(id.to_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn labels_have_limits() {
        let mut labels = BTreeMap::new();
        labels.insert("collection".to_string(), "books".to_string());
        validate_labels(&labels).unwrap();
        labels.insert(String::new(), "x".into());
        assert_eq!(validate_labels(&labels).unwrap_err().kind(), "bad_upload");
        let too_many: BTreeMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert_eq!(validate_labels(&too_many).unwrap_err().kind(), "bad_upload");
        let mut long = BTreeMap::new();
        long.insert("k".to_string(), "v".repeat(MAX_LABEL_BYTES + 1));
        assert_eq!(validate_labels(&long).unwrap_err().kind(), "bad_upload");
    }
}
