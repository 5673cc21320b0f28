//! [`MetaClient`]: what storage nodes, the CLI and tests use to talk to the metadata group.
//!
//! Give it any members' addresses. It sends each request to the member it believes leads,
//! follows `not_leader` redirects (the `x-bitmountain-leader` address), rotates through the
//! members on connection failures, and retries retryable errors with backoff until the
//! request's deadline. Writes are idempotent (allocation by request id, commit, abort, delete,
//! placement CAS), so a retry after a lost answer is safe.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bitmountain_proto::v1 as pb;
use bitmountain_proto::v1::batch_item::Item;
use bitmountain_proto::v1::batch_result::Result as Answer;
use bitmountain_proto::v1::meta_admin_client::MetaAdminClient;
use bitmountain_proto::v1::meta_service_client::MetaServiceClient;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::error::{item_status, ErrorKind, Field, MetaError, Result};
use crate::types::{
    labels_from_proto, labels_to_proto, BundleId, BundleRecord, BundleState, Code, DiskState,
};

/// Default deadline of one client call, retries included.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Connect timeout per member.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// First retry pause (doubles up to [`MAX_BACKOFF`]).
pub const MIN_BACKOFF: Duration = Duration::from_millis(20);
/// Longest retry pause. It bounds how long a caller keeps waiting after a new leader is up:
/// with 500 ms, failover times came in steps of 500 ms (1.15, 1.65, 2.15, 3.15 s), a retry
/// just missing the election cost half a second (docs/benchmarks.md).
pub const MAX_BACKOFF: Duration = Duration::from_millis(150);
/// Most items in one `Batch` call; the server refuses more.
pub const MAX_BATCH_ITEMS: usize = 512;
/// `Batch` calls one client keeps in flight. While all are, new allocations and commits queue
/// and leave together in the next one. Two measured best with 64 callers (docs/benchmarks.md):
/// fewer slots make bigger batches, which cost the members less CPU per item, and one slot
/// leaves the members idle while a batch travels.
pub const MAX_BATCHES_IN_FLIGHT: usize = 2;
/// Allocations and commits that may wait for a batch; a caller beyond it is sent on its own.
pub const MAX_QUEUED_ITEMS: usize = 4096;

/// Where one shard of a bundle lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLocation {
    /// Shard index (0..k data, k..k+m parity).
    pub shard_index: u32,
    /// Disk.
    pub disk_id: u64,
    /// Node serving the disk.
    pub node_id: u64,
    /// The node's address.
    pub node_address: String,
}

/// A bundle record with its shards' node addresses, as the client receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The record (request id and accounting are not sent over the wire).
    pub record: BundleRecord,
    /// Shard locations by shard index.
    pub locations: Vec<ShardLocation>,
}

impl Bundle {
    /// From the wire.
    pub fn from_proto(b: pb::BundleRecord) -> Result<Self> {
        let id = BundleId::from_proto(b.id.as_ref())?;
        let state = BundleState::from_proto(b.state()).ok_or(MetaError::InvalidArgument {
            field: Field::BundleState,
            reason: "unspecified".into(),
        })?;
        let code = b
            .code
            .as_ref()
            .map(Code::from_proto)
            .ok_or(MetaError::InvalidArgument {
                field: Field::Code,
                reason: "missing".into(),
            })?;
        let mut locations: Vec<ShardLocation> = b
            .placement
            .iter()
            .map(|l| ShardLocation {
                shard_index: l.shard_index,
                disk_id: l.disk_id,
                node_id: l.node_id,
                node_address: l.node_address.clone(),
            })
            .collect();
        locations.sort_by_key(|l| l.shard_index);
        Ok(Self {
            record: BundleRecord {
                id,
                state,
                code,
                length: b.length,
                index_offset: b.index_offset,
                index_length: b.index_length,
                sha256: b.sha256,
                file_count: b.file_count,
                labels: labels_from_proto(&b.labels)?,
                created_unix_ms: b.created_unix_ms,
                expires_unix_ms: b.expires_unix_ms,
                placement: locations.iter().map(|l| l.disk_id).collect(),
                placement_generation: b.placement_generation,
                request_id: String::new(),
                accounted_shard_bytes: 0,
            },
            locations,
        })
    }
}

/// What an allocation asks for.
#[derive(Debug, Clone, Default)]
pub struct AllocateRequest {
    /// Idempotency key, unique per upload (required).
    pub request_id: String,
    /// Code; `None` for the cluster default.
    pub code: Option<Code>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Length estimate (0 if unknown).
    pub expected_length: u64,
    /// Allocation lifetime (0: default).
    pub ttl_ms: u64,
}

/// What a commit reports.
#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    /// Bundle length.
    pub length: u64,
    /// Index offset.
    pub index_offset: u64,
    /// Index length.
    pub index_length: u64,
    /// SHA-256 of the bundle.
    pub sha256: Vec<u8>,
    /// Files in the bundle.
    pub file_count: u64,
    /// Shards that are not durable.
    pub missing_shards: Vec<u32>,
}

impl AllocateRequest {
    /// To the wire.
    pub fn to_proto(&self) -> pb::AllocateBundleRequest {
        pb::AllocateBundleRequest {
            request_id: self.request_id.clone(),
            code: self.code.map(|c| c.to_proto()),
            labels: labels_to_proto(&self.labels),
            expected_length: self.expected_length,
            ttl_ms: self.ttl_ms,
        }
    }
}

impl CommitRequest {
    /// To the wire, as the commit of bundle `id`.
    pub fn to_proto(&self, id: BundleId) -> pb::CommitBundleRequest {
        pb::CommitBundleRequest {
            id: Some(id.to_proto()),
            length: self.length,
            index_offset: self.index_offset,
            index_length: self.index_length,
            sha256: self.sha256.clone(),
            file_count: self.file_count,
            missing_shards: self.missing_shards.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    leader: Option<String>,
    next: usize,
    channels: HashMap<String, Channel>,
}

/// Where calls go: the members, the believed leader, one channel per member. Shared by the
/// client and its batch sender.
#[derive(Debug)]
struct Transport {
    endpoints: Vec<String>,
    state: Mutex<State>,
    timeout: Duration,
    batch_counters: BatchCounters,
}

/// Running totals of a client's batching.
#[derive(Debug, Default)]
struct BatchCounters {
    queued: AtomicU64,
    calls: AtomicU64,
    sent: AtomicU64,
}

/// What a client's batching has done so far ([`MetaClient::batch_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Allocations and commits accepted into the batch queue.
    pub queued: u64,
    /// `Batch` calls sent (retries of one call not counted).
    pub calls: u64,
    /// Items those calls carried.
    pub sent: u64,
}

/// A client of the metadata group. Cheap to share (`Arc`); safe for concurrent use.
///
/// Allocations and commits of concurrent callers leave together: while earlier batches are in
/// flight, new ones queue and go out as one `Batch` call (see [`MAX_BATCHES_IN_FLIGHT`]). A
/// caller alone is sent at once, so batching adds no wait; it only saves per-call work on both
/// ends when many callers share one client.
#[derive(Debug)]
pub struct MetaClient {
    transport: Arc<Transport>,
    batching: bool,
    batcher: OnceLock<mpsc::Sender<Queued>>,
}

fn strip(addr: &str) -> String {
    addr.trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

impl MetaClient {
    /// A client for these members (`host:port`, comma lists accepted). Connects lazily.
    pub fn new<I, S>(endpoints: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .flat_map(|s| s.as_ref().split(',').map(strip).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(MetaError::InvalidArgument {
                field: Field::MetadataAddresses,
                reason: "give at least one member address (host:port)".into(),
            });
        }
        Ok(Self {
            transport: Transport::new(endpoints, DEFAULT_CALL_TIMEOUT),
            batching: true,
            batcher: OnceLock::new(),
        })
    }

    /// Sets the deadline of each call (retries included).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self {
            transport: Transport::new(self.transport.endpoints.clone(), timeout),
            batching: self.batching,
            batcher: OnceLock::new(),
        }
    }

    /// Whether concurrent allocations and commits share `Batch` calls (on by default; off
    /// sends each as its own call, which the throughput benchmark compares against).
    pub fn with_batching(mut self, batching: bool) -> Self {
        self.batching = batching;
        self
    }

    /// The member this client currently sends to first.
    pub fn current_leader(&self) -> Option<String> {
        self.transport.lock().leader.clone()
    }

    /// What batching has done so far.
    pub fn batch_stats(&self) -> BatchStats {
        let c = &self.transport.batch_counters;
        BatchStats {
            queued: c.queued.load(Ordering::Relaxed),
            calls: c.calls.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
        }
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.transport.timeout;
        self.transport.call_until(deadline, f).await
    }

    async fn svc<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(MetaServiceClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(|c| f(MetaServiceClient::new(c))).await
    }

    async fn admin<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(MetaAdminClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(|c| f(MetaAdminClient::new(c))).await
    }

    fn bundle(b: Option<pb::BundleRecord>) -> Result<Bundle> {
        Bundle::from_proto(b.ok_or(MetaError::InvalidArgument {
            field: Field::Bundle,
            reason: "missing in response".into(),
        })?)
    }

    /// Registers (or re-registers) a node and its disks.
    pub async fn register_node(
        &self,
        req: pb::RegisterNodeRequest,
    ) -> Result<pb::RegisterNodeResponse> {
        self.svc(|mut c| {
            let r = req.clone();
            async move { c.register_node(r).await }
        })
        .await
    }

    /// Reports liveness and disk usage to the leader (soft state, no Raft write).
    pub async fn heartbeat(&self, req: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse> {
        self.svc(|mut c| {
            let r = req.clone();
            async move { c.heartbeat(r).await }
        })
        .await
    }

    /// Allocates a pending bundle and its placement.
    pub async fn allocate_bundle(&self, req: &AllocateRequest) -> Result<Bundle> {
        match self.submit(Item::Allocate(req.to_proto())).await? {
            Answer::Allocate(resp) => Self::bundle(resp.bundle),
            other => Err(mismatched_answer("allocation", &other)),
        }
    }

    /// Seals a pending bundle.
    pub async fn commit_bundle(&self, id: BundleId, req: &CommitRequest) -> Result<Bundle> {
        match self.submit(Item::Commit(req.to_proto(id))).await? {
            Answer::Commit(resp) => Self::bundle(resp.bundle),
            other => Err(mismatched_answer("commit", &other)),
        }
    }

    /// Sends an allocation or commit: in a batch with other callers' when batching is on, on
    /// its own otherwise, or when the batch could not carry it (queue full, the member lost
    /// leadership while handling the item, the call as a whole failed before this caller's
    /// deadline, e.g. a member without `Batch` or a batch that joined an earlier caller's
    /// shorter deadline).
    async fn submit(&self, item: Item) -> Result<Answer> {
        let deadline = Instant::now() + self.transport.timeout;
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
        let sender = self.batcher.get_or_init(|| {
            let (tx, rx) = mpsc::channel(MAX_QUEUED_ITEMS);
            tokio::spawn(send_batches(self.transport.clone(), rx));
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
        self.transport
            .batch_counters
            .queued
            .fetch_add(1, Ordering::Relaxed);
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

    /// Drops a pending bundle (unknown ids are fine: it expired or was already aborted).
    pub async fn abort_bundle(&self, id: BundleId) -> Result<()> {
        let r = pb::AbortBundleRequest {
            id: Some(id.to_proto()),
        };
        self.svc(|mut c| {
            let r = r.clone();
            async move { c.abort_bundle(r).await }
        })
        .await?;
        Ok(())
    }

    /// Reports shards of a sealed bundle found missing or corrupt; returns whether a repair was
    /// queued (false when the bundle is not sealed or the repair already covers them).
    pub async fn report_damage(&self, id: BundleId, shards: &[u32], reason: &str) -> Result<bool> {
        let r = pb::ReportDamageRequest {
            id: Some(id.to_proto()),
            shard_indexes: shards.to_vec(),
            reason: reason.to_owned(),
        };
        let resp = self
            .svc(|mut c| {
                let r = r.clone();
                async move { c.report_damage(r).await }
            })
            .await?;
        Ok(resp.queued)
    }

    /// Reads a bundle record; linearizable unless `stale_ok`.
    pub async fn get_bundle(&self, id: BundleId, stale_ok: bool) -> Result<Bundle> {
        let r = pb::GetBundleRequest {
            id: Some(id.to_proto()),
            stale_ok,
        };
        let resp = self
            .svc(|mut c| {
                let r = r.clone();
                async move { c.get_bundle(r).await }
            })
            .await?;
        Self::bundle(resp.bundle)
    }

    /// One page of bundles; returns the next page token (empty at the end).
    pub async fn list_bundles(
        &self,
        label: Option<(&str, &str)>,
        state: Option<BundleState>,
        page_token: &[u8],
        page_size: u32,
    ) -> Result<(Vec<Bundle>, Vec<u8>)> {
        let r = pb::ListBundlesRequest {
            label: label.map(|(k, v)| pb::Label {
                key: k.into(),
                value: v.into(),
            }),
            state: state.map_or(0, |s| s.to_proto() as i32),
            page_token: page_token.to_vec(),
            page_size,
            stale_ok: false,
        };
        let resp = self
            .svc(|mut c| {
                let r = r.clone();
                async move { c.list_bundles(r).await }
            })
            .await?;
        let bundles = resp
            .bundles
            .into_iter()
            .map(Bundle::from_proto)
            .collect::<Result<Vec<_>>>()?;
        Ok((bundles, resp.next_page_token))
    }

    /// Every bundle matching the filter (all pages).
    pub async fn list_all_bundles(
        &self,
        label: Option<(&str, &str)>,
        state: Option<BundleState>,
    ) -> Result<Vec<Bundle>> {
        let mut out = Vec::new();
        let mut token = Vec::new();
        loop {
            let (page, next) = self.list_bundles(label, state, &token, 1000).await?;
            out.extend(page);
            if next.is_empty() {
                return Ok(out);
            }
            token = next;
        }
    }

    /// Marks a sealed bundle deleting.
    pub async fn delete_bundle(&self, id: BundleId) -> Result<Bundle> {
        let r = pb::DeleteBundleRequest {
            id: Some(id.to_proto()),
        };
        let resp = self
            .svc(|mut c| {
                let r = r.clone();
                async move { c.delete_bundle(r).await }
            })
            .await?;
        Self::bundle(resp.bundle)
    }

    /// Removes a deleted bundle's record; call once every shard of it is gone. Purging a bundle
    /// already purged succeeds.
    pub async fn purge_bundle(&self, id: BundleId) -> Result<()> {
        let r = pb::PurgeBundleRequest {
            id: Some(id.to_proto()),
        };
        self.svc(|mut c| {
            let r = r.clone();
            async move { c.purge_bundle(r).await }
        })
        .await?;
        Ok(())
    }

    /// Compare-and-set of a bundle's placement (disk per shard index).
    pub async fn update_placement(
        &self,
        id: BundleId,
        expected_generation: u64,
        disks: &[u64],
    ) -> Result<Bundle> {
        self.update_placement_repaired(id, expected_generation, disks, &[])
            .await
    }

    /// Compare-and-set of a bundle's placement after a repair: `disks` is the full new
    /// placement, `rewritten` the shards rebuilt in place on the disk they were on.
    pub async fn update_placement_repaired(
        &self,
        id: BundleId,
        expected_generation: u64,
        disks: &[u64],
        rewritten: &[u32],
    ) -> Result<Bundle> {
        let r = pb::UpdatePlacementRequest {
            id: Some(id.to_proto()),
            expected_generation,
            placement: disks
                .iter()
                .enumerate()
                .map(|(i, d)| pb::ShardLocation {
                    shard_index: i as u32,
                    disk_id: *d,
                    ..Default::default()
                })
                .collect(),
            rewritten_shards: rewritten.to_vec(),
        };
        let resp = self
            .svc(|mut c| {
                let r = r.clone();
                async move { c.update_placement(r).await }
            })
            .await?;
        Self::bundle(resp.bundle)
    }

    /// Takes repair work for a node's worker (renewing the leases of `running`).
    pub async fn claim_repairs(
        &self,
        node_id: u64,
        max: u32,
        running: &[BundleId],
    ) -> Result<pb::ClaimRepairsResponse> {
        let r = pb::ClaimRepairsRequest {
            node_id,
            max,
            running: running.iter().map(|id| id.to_proto()).collect(),
        };
        self.svc(|mut c| {
            let r = r.clone();
            async move { c.claim_repairs(r).await }
        })
        .await
    }

    /// Reports a repair done (or failed) so its leases go.
    pub async fn finish_repair(&self, r: pb::FinishRepairRequest) -> Result<()> {
        self.svc(|mut c| {
            let r = r.clone();
            async move { c.finish_repair(r).await }
        })
        .await?;
        Ok(())
    }

    /// Changes the repair throttles.
    pub async fn set_repair_settings(
        &self,
        settings: crate::types::RepairSettings,
    ) -> Result<crate::types::RepairSettings> {
        let r = pb::SetRepairSettingsRequest {
            settings: Some(settings.to_proto()),
        };
        let resp = self
            .svc(|mut c| async move { c.set_repair_settings(r).await })
            .await?;
        Ok(crate::types::RepairSettings::from_proto(
            resp.settings.as_ref(),
        ))
    }

    /// Repair progress as the leader sees it.
    pub async fn repair_status(&self) -> Result<pb::RepairStatusResponse> {
        self.svc(|mut c| async move { c.repair_status(pb::RepairStatusRequest {}).await })
            .await
    }

    /// Plans (and unless `dry_run`, queues) moves onto emptier disks.
    pub async fn rebalance(&self, max_bytes: u64, dry_run: bool) -> Result<pb::RebalanceResponse> {
        let r = pb::RebalanceRequest { max_bytes, dry_run };
        self.svc(|mut c| async move { c.rebalance(r).await }).await
    }

    /// One page of the shards on a disk: (bundle, shard index).
    pub async fn list_disk_bundles(
        &self,
        disk_id: u64,
        page_token: &[u8],
        page_size: u32,
    ) -> Result<(Vec<(BundleId, u32)>, Vec<u8>)> {
        let r = pb::ListDiskBundlesRequest {
            disk_id,
            page_token: page_token.to_vec(),
            page_size,
        };
        let resp = self
            .svc(|mut c| {
                let r = r.clone();
                async move { c.list_disk_bundles(r).await }
            })
            .await?;
        let shards = resp
            .shards
            .into_iter()
            .map(|s| Ok((BundleId::from_proto(s.bundle_id.as_ref())?, s.shard_index)))
            .collect::<Result<Vec<_>>>()?;
        Ok((shards, resp.next_page_token))
    }

    /// One page of the repair queue.
    pub async fn list_repairs(
        &self,
        page_token: &[u8],
        page_size: u32,
    ) -> Result<pb::ListRepairsResponse> {
        let r = pb::ListRepairsRequest {
            page_token: page_token.to_vec(),
            page_size,
        };
        self.svc(|mut c| {
            let r = r.clone();
            async move { c.list_repairs(r).await }
        })
        .await
    }

    /// Records a decision about a disk (failed disks queue their bundles for repair).
    pub async fn set_disk_state(
        &self,
        disk_id: u64,
        state: DiskState,
    ) -> Result<pb::SetDiskStateResponse> {
        let r = pb::SetDiskStateRequest {
            disk_id,
            state: state.to_proto() as i32,
        };
        self.svc(|mut c| async move { c.set_disk_state(r).await })
            .await
    }

    /// Records a decision about a node.
    pub async fn set_node_state(
        &self,
        node_id: u64,
        state: crate::types::NodeState,
    ) -> Result<pb::SetNodeStateResponse> {
        let r = pb::SetNodeStateRequest {
            node_id,
            state: state.to_proto() as i32,
        };
        self.svc(|mut c| async move { c.set_node_state(r).await })
            .await
    }

    /// Status as one member sees it: the first member that answers (no redirect).
    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse> {
        self.svc(|mut c| async move { c.cluster_status(pb::ClusterStatusRequest {}).await })
            .await
    }

    /// Adds a member (learner, then voter once caught up).
    pub async fn add_member(
        &self,
        id: u64,
        address: &str,
        learner_only: bool,
    ) -> Result<pb::AddMemberResponse> {
        let r = pb::AddMemberRequest {
            id,
            address: address.to_string(),
            learner_only,
            catch_up_timeout_ms: 0,
        };
        self.admin(|mut c| {
            let r = r.clone();
            async move { c.add_member(r).await }
        })
        .await
    }

    /// Removes a member.
    pub async fn remove_member(&self, id: u64) -> Result<pb::RemoveMemberResponse> {
        self.admin(|mut c| async move { c.remove_member(pb::RemoveMemberRequest { id }).await })
            .await
    }

    /// Switches the group to `value_format` once every member reads it.
    pub async fn set_value_format(&self, value_format: u32) -> Result<u32> {
        self.admin(|mut c| async move {
            c.set_value_format(pb::SetValueFormatRequest { value_format })
                .await
        })
        .await
        .map(|r| r.value_format)
    }

    /// Hands leadership to `to`.
    pub async fn transfer_leader(&self, to: u64) -> Result<pb::TransferLeaderResponse> {
        self.admin(|mut c| async move {
            c.transfer_leader(pb::TransferLeaderRequest {
                to_id: to,
                timeout_ms: 0,
            })
            .await
        })
        .await
    }
}

impl Transport {
    fn new(endpoints: Vec<String>, timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            endpoints,
            state: Mutex::new(State::default()),
            timeout,
            batch_counters: BatchCounters::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn channel(&self, addr: &str) -> Result<Channel> {
        let mut st = self.lock();
        if let Some(c) = st.channels.get(addr) {
            return Ok(c.clone());
        }
        let ep = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| {
            MetaError::InvalidArgument {
                field: Field::MetadataAddress,
                reason: format!("{addr:?}: {e}"),
            }
        })?;
        let c = ep
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .connect_lazy();
        st.channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    fn pick(&self) -> String {
        let mut st = self.lock();
        if let Some(l) = &st.leader {
            return l.clone();
        }
        let i = st.next % self.endpoints.len();
        st.next = st.next.wrapping_add(1);
        self.endpoints[i].clone()
    }

    fn set_leader(&self, addr: Option<String>) {
        self.lock().leader = addr;
    }

    async fn call_until<T, F, Fut>(&self, deadline: Instant, f: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut backoff = MIN_BACKOFF;
        let mut last;
        let mut tried: Vec<String> = Vec::new();
        loop {
            let addr = self.pick();
            if !tried.contains(&addr) {
                tried.push(addr.clone());
            }
            let channel = self.channel(&addr)?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let res = tokio::time::timeout(remaining, f(channel)).await;
            let (err, redirect) = match res {
                Ok(Ok(r)) => {
                    self.set_leader(Some(addr));
                    return Ok(r.into_inner());
                }
                Ok(Err(status)) => {
                    let e = MetaError::from_status(&addr, &status);
                    let transport_failure = matches!(e, MetaError::Rpc { .. })
                        && matches!(
                            status.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                        );
                    match &e {
                        MetaError::Raft {
                            kind: ErrorKind::NotLeader,
                            leader,
                            ..
                        } => {
                            let l = leader.as_deref().map(strip);
                            let fresh = l.as_ref().is_some_and(|l| *l != addr);
                            self.set_leader(l);
                            (e, fresh)
                        }
                        // This member cannot serve reads until its snapshot is in; move on to
                        // another one (as for a transport failure).
                        MetaError::Raft {
                            kind: ErrorKind::InstallingSnapshot,
                            ..
                        } => {
                            self.set_leader(None);
                            (e, false)
                        }
                        _ if e.is_retryable() => (e, false),
                        _ if transport_failure => {
                            self.set_leader(None);
                            (e, false)
                        }
                        _ => return Err(e),
                    }
                }
                Err(_) => (
                    MetaError::Rpc {
                        endpoint: addr.clone(),
                        kind: ErrorKind::Timeout.as_str().into(),
                        message: "no answer".into(),
                    },
                    false,
                ),
            };
            last = err.to_string();
            if Instant::now() >= deadline {
                return Err(MetaError::NoMember {
                    endpoints: tried.join(","),
                    timeout_ms: self.timeout.as_millis() as u64,
                    last,
                });
            }
            if !redirect {
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())))
                    .await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
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

/// The batch sender of one client: takes what has queued whenever a slot of
/// [`MAX_BATCHES_IN_FLIGHT`] is free and sends it as one `Batch` call. Ends when the client is
/// dropped.
async fn send_batches(transport: Arc<Transport>, mut queue: mpsc::Receiver<Queued>) {
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
        tokio::spawn(async move {
            send_batch(&transport, batch).await;
            drop(slot);
        });
    }
}

/// One `Batch` call; every item's caller gets its own answer or error.
async fn send_batch(transport: &Transport, batch: Vec<Queued>) {
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
    let counters = &transport.batch_counters;
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
    let endpoint = transport.lock().leader.clone().unwrap_or_default();
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

/// Test-only: tells the member at `addr` (started with fault injection) to drop Raft traffic
/// to and from `blocked` (empty heals).
pub async fn set_partition(addr: &str, blocked: &[u64]) -> Result<()> {
    let addr = strip(addr);
    let ch = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| MetaError::InvalidArgument {
            field: Field::Address,
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .connect_lazy();
    MetaAdminClient::new(ch)
        .set_partition(pb::SetPartitionRequest {
            blocked_member_ids: blocked.to_vec(),
        })
        .await
        .map_err(|s| MetaError::from_status(&addr, &s))?;
    Ok(())
}

/// Status of exactly the member at `addr` (no redirect, no retry beyond `timeout`).
pub async fn member_status(addr: &str, timeout: Duration) -> Result<pb::ClusterStatusResponse> {
    MetaClient::new([addr])?
        .with_timeout(timeout)
        .cluster_status()
        .await
}
