//! The batch sender: allocations and commits of concurrent callers leave together. While
//! earlier batches are in flight (see [`MAX_BATCHES_IN_FLIGHT`]), new ones queue and go out
//! as one `Batch` call. A caller alone is sent at once, so batching adds no wait; it only
//! saves per-call work on both ends when many callers share one client. An item the batch
//! could not carry is sent on its own through the transport, which retries it to its
//! deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bitmountain_proto::v1 as pb;
use bitmountain_proto::v1::batch_item::Item;
use bitmountain_proto::v1::batch_result::Result as Answer;
use bitmountain_proto::v1::meta_service_client::MetaServiceClient;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::error::{Field, MetaError, Result};
use crate::transport::Transport;
use crate::wire::item_status;

/// Most items in one `Batch` call; the server refuses more.
pub const MAX_BATCH_ITEMS: usize = 512;
/// `Batch` calls one client keeps in flight. While all are, new allocations and commits queue
/// and leave together in the next one. Two measured best with 64 callers (docs/benchmarks.md):
/// fewer slots make bigger batches, which cost the members less CPU per item, and one slot
/// leaves the members idle while a batch travels.
pub const MAX_BATCHES_IN_FLIGHT: usize = 2;
/// Allocations and commits that may wait for a batch; a caller beyond it is sent on its own.
pub const MAX_QUEUED_ITEMS: usize = 4096;

/// What a client's batching has done so far ([`crate::MetaClient::batch_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Allocations and commits accepted into the batch queue.
    pub queued: u64,
    /// `Batch` calls sent (retries of one call not counted).
    pub calls: u64,
    /// Items those calls carried.
    pub sent: u64,
}

/// Running totals of a client's batching.
#[derive(Debug, Default)]
struct BatchCounters {
    queued: AtomicU64,
    calls: AtomicU64,
    sent: AtomicU64,
}

/// The allocations and commits of one client: batched when `batching` is on, else each on its
/// own.
#[derive(Debug)]
pub(crate) struct Batcher {
    transport: Arc<Transport>,
    batching: bool,
    counters: Arc<BatchCounters>,
    /// Started with the first batched item, on the caller's runtime.
    sender: OnceLock<mpsc::Sender<Queued>>,
}

/// An allocation or commit waiting for the batch sender.
struct Queued {
    item: Item,
    deadline: Instant,
    reply: oneshot::Sender<std::result::Result<Answer, BatchFailure>>,
}

/// Why a batched item got no answer.
enum BatchFailure {
    /// The member answered this item with an error.
    Item(MetaError),
    /// The `Batch` call as a whole failed (after its own retries until the batch's deadline).
    Call(MetaError),
}

impl Batcher {
    pub(crate) fn new(transport: Arc<Transport>, batching: bool) -> Self {
        Self {
            transport,
            batching,
            counters: Arc::default(),
            sender: OnceLock::new(),
        }
    }

    pub(crate) fn batching(&self) -> bool {
        self.batching
    }

    pub(crate) fn set_batching(&mut self, batching: bool) {
        self.batching = batching;
    }

    pub(crate) fn stats(&self) -> BatchStats {
        let c = &self.counters;
        BatchStats {
            queued: c.queued.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
        }
    }

    pub(crate) async fn allocate(
        &self,
        req: pb::AllocateBundleRequest,
    ) -> Result<pb::AllocateBundleResponse> {
        match self.submit(Item::Allocate(req)).await? {
            Answer::Allocate(resp) => Ok(resp),
            other => Err(mismatched_answer("allocation", &other)),
        }
    }

    pub(crate) async fn commit(
        &self,
        req: pb::CommitBundleRequest,
    ) -> Result<pb::CommitBundleResponse> {
        match self.submit(Item::Commit(req)).await? {
            Answer::Commit(resp) => Ok(resp),
            other => Err(mismatched_answer("commit", &other)),
        }
    }

    /// Sends an allocation or commit: in a batch with other callers' when batching is on, on
    /// its own otherwise, or when the batch could not carry it (queue full, the member lost
    /// leadership while handling the item, the call as a whole failed before this caller's
    /// deadline, e.g. a member without `Batch` or a batch that joined an earlier caller's
    /// shorter deadline).
    async fn submit(&self, item: Item) -> Result<Answer> {
        let deadline = self.transport.deadline();
        if self.batching {
            match self.batched(item.clone(), deadline).await {
                Some(Ok(answer)) => return Ok(answer),
                Some(Err(BatchFailure::Item(e))) if !e.is_retryable() => return Err(e),
                Some(Err(BatchFailure::Call(e))) if Instant::now() >= deadline => return Err(e),
                // The unary path retries and follows redirects until the deadline.
                Some(Err(_)) | None => {}
            }
        }
        self.unary(item, deadline).await
    }

    /// Queues the item for the batch sender and waits for its answer; `None` when the queue
    /// is full or the sender is gone (its runtime shut down).
    async fn batched(
        &self,
        item: Item,
        deadline: Instant,
    ) -> Option<std::result::Result<Answer, BatchFailure>> {
        let sender = self.sender.get_or_init(|| {
            let (tx, rx) = mpsc::channel(MAX_QUEUED_ITEMS);
            tokio::spawn(send_batches(
                self.transport.clone(),
                self.counters.clone(),
                rx,
            ));
            tx
        });
        let (reply, answer) = oneshot::channel();
        sender
            .try_send(Queued {
                item,
                deadline,
                reply,
            })
            .ok()?;
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        answer.await.ok()
    }

    async fn unary(&self, item: Item, deadline: Instant) -> Result<Answer> {
        match item {
            Item::Allocate(r) => self
                .transport
                .call_until(deadline, |c| {
                    let r = r.clone();
                    async move { MetaServiceClient::new(c).allocate_bundle(r).await }
                })
                .await
                .map(Answer::Allocate),
            Item::Commit(r) => self
                .transport
                .call_until(deadline, |c| {
                    let r = r.clone();
                    async move { MetaServiceClient::new(c).commit_bundle(r).await }
                })
                .await
                .map(Answer::Commit),
        }
    }
}

/// The batch sender of one client: takes what has queued whenever a slot of
/// [`MAX_BATCHES_IN_FLIGHT`] is free and sends it as one `Batch` call. Ends when the client is
/// dropped.
async fn send_batches(
    transport: Arc<Transport>,
    counters: Arc<BatchCounters>,
    mut queue: mpsc::Receiver<Queued>,
) {
    let slots = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        // The slot is taken before the batch is collected, so what queues while every slot
        // is busy leaves together.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_ITEMS {
            match queue.try_recv() {
                Ok(q) => batch.push(q),
                Err(_) => break,
            }
        }
        let transport = transport.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            send_batch(&transport, &counters, batch).await;
            drop(slot);
        });
    }
}

/// One `Batch` call; every item's caller gets its own answer or error.
async fn send_batch(transport: &Transport, counters: &BatchCounters, batch: Vec<Queued>) {
    // Callers that gave up need no answer. Each caller keeps its own copy of its item for a
    // retry on its own, so the items move into the request.
    let (items, waiting): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .filter(|q| !q.reply.is_closed())
        .map(|q| (pb::BatchItem { item: Some(q.item) }, (q.deadline, q.reply)))
        .unzip();
    let Some(deadline) = waiting.iter().map(|(d, _)| *d).min() else {
        return;
    };
    counters.calls.fetch_add(1, Ordering::Relaxed);
    counters
        .sent
        .fetch_add(items.len() as u64, Ordering::Relaxed);
    let request = pb::BatchRequest { items };
    let answered = transport
        .call_until(deadline, |c| {
            let r = request.clone();
            async move { MetaServiceClient::new(c).batch(r).await }
        })
        .await
        .and_then(|resp| {
            if resp.results.len() == waiting.len() {
                Ok(resp.results)
            } else {
                Err(MetaError::InvalidArgument {
                    field: Field::BatchResults,
                    reason: format!(
                        "the member answered {} results for {} items",
                        resp.results.len(),
                        waiting.len()
                    ),
                })
            }
        });
    let results = match answered {
        Ok(results) => results,
        Err(e) => {
            for (_, reply) in waiting {
                let _ = reply.send(Err(BatchFailure::Call(e.clone())));
            }
            return;
        }
    };
    let endpoint = transport.leader().unwrap_or_default();
    for ((_, reply), r) in waiting.into_iter().zip(results) {
        let answer = match r.result {
            Some(Answer::Error(e)) => Err(BatchFailure::Item(MetaError::from_status(
                &endpoint,
                &item_status(&e),
            ))),
            Some(a) => Ok(a),
            None => Err(BatchFailure::Item(MetaError::InvalidArgument {
                field: Field::BatchResult,
                reason: "empty in the member's answer".into(),
            })),
        };
        let _ = reply.send(answer);
    }
}

fn mismatched_answer(what: &str, answer: &Answer) -> MetaError {
    let got = match answer {
        Answer::Allocate(_) => "an allocation",
        Answer::Commit(_) => "a commit",
        Answer::Error(_) => "an error",
    };
    MetaError::InvalidArgument {
        field: Field::BatchResult,
        reason: format!("the member answered {got} to a {what}"),
    }
}
