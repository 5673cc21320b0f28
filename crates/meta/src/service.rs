//! The gRPC services of a member: `MetaService`, `MetaAdmin`, `Diagnostics`, and the assembly
//! of a member process ([`serve`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitmountain_proto::v1 as pb;
use bitmountain_proto::v1::meta_admin_server::{MetaAdmin, MetaAdminServer};
use bitmountain_proto::v1::meta_service_server::{MetaService, MetaServiceServer};
use bitmountain_raftstore::{GroupStatus, Members, RaftConfig, RaftHandle};
use tonic::{Request, Response, Status};

use crate::client::MAX_BATCH_ITEMS;
use crate::error::{item_error, MetaError, Result};
use crate::placement::{Candidate, PlacementMap};
use crate::state::{
    Applied, ApplyResult, Command, DiskSpec, KeyReader, ListFilter, MetaStateMachine, MetaStore,
};
use crate::types::{
    labels_from_proto, labels_to_proto, now_unix_ms, BundleId, BundleRecord, BundleState, Code,
    DiskRecord, DiskState, DomainLevel, NodeRecord, NodeState,
};

/// How long a proposal may take before the caller gets `timeout`.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a ReadIndex may take.
pub const READ_INDEX_TIMEOUT: Duration = Duration::from_secs(5);
/// Default allocation lifetime.
pub const DEFAULT_ALLOCATION_TTL_MS: u64 = 3_600_000;
/// Longest allocation lifetime a client may ask for.
pub const MAX_ALLOCATION_TTL_MS: u64 = 7 * 24 * 3_600_000;
/// Default and largest page sizes.
pub const DEFAULT_PAGE: usize = 100;
/// Largest page.
pub const MAX_PAGE: usize = 1000;
/// Longest request id.
pub const MAX_REQUEST_ID_BYTES: usize = 256;
/// How often the leader looks for expired allocations.
pub const EXPIRY_SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Most expired allocations dropped per proposal.
pub const EXPIRY_BATCH: usize = 1000;
/// How long a switch of value format waits for each other member to say which formats it
/// reads.
pub const MEMBER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time allocations draw from one placement map before it is rebuilt with the
/// latest free space (it is rebuilt at once when the topology changes).
pub const PLACEMENT_REFRESH: Duration = Duration::from_secs(1);

/// Settings of the metadata service.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// Code used when an allocation names none.
    pub default_code: Code,
    /// Failure-domain level placement spreads shards across.
    pub domain_level: DomainLevel,
    /// Allocation lifetime when the request names none.
    pub allocation_ttl_ms: u64,
    /// Interval nodes are told to heartbeat at.
    pub heartbeat_interval_ms: u64,
    /// A node silent this long is declared down (through Raft) and its shards are repaired.
    pub node_down_grace_ms: u64,
    /// A repair assignment not renewed by its worker for this long is offered again.
    pub repair_lease_ms: u64,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            default_code: Code::DEFAULT,
            domain_level: DomainLevel::Host,
            allocation_ttl_ms: DEFAULT_ALLOCATION_TTL_MS,
            heartbeat_interval_ms: 1000,
            node_down_grace_ms: crate::healing::DEFAULT_NODE_DOWN_GRACE_MS,
            repair_lease_ms: crate::healing::DEFAULT_REPAIR_LEASE_MS,
        }
    }
}

/// What the leader last heard from a node (soft state).
#[derive(Debug, Clone, Default)]
pub(crate) struct Heartbeat {
    pub(crate) at: Option<Instant>,
    pub(crate) used: HashMap<u64, u64>,
    /// Disks the node reports failed (I/O errors, identity file missing or changed).
    pub(crate) failed: Vec<u64>,
    /// Disk → (last full scrub, damaged shards it found).
    pub(crate) scrub: HashMap<u64, (u64, u64)>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) raft: RaftHandle<ApplyResult>,
    pub(crate) store: Arc<MetaStore>,
    pub(crate) cfg: MetaConfig,
    pub(crate) heartbeats: Mutex<HashMap<u64, Heartbeat>>,
    pub(crate) healing: crate::healing::Healing,
    /// The placement map allocations draw from; see [`MetaServer::placement_map`].
    placement: Mutex<Option<CachedPlacement>>,
}

/// A placement map and what it was built from.
#[derive(Debug)]
struct CachedPlacement {
    topology_epoch: u64,
    built: Instant,
    map: Arc<PlacementMap>,
}

/// Implements `MetaService` and `MetaAdmin` on one member.
#[derive(Debug, Clone)]
pub struct MetaServer {
    pub(crate) inner: Arc<Inner>,
}

fn page_size(n: u32) -> usize {
    match n {
        0 => DEFAULT_PAGE,
        n => (n as usize).min(MAX_PAGE),
    }
}

impl MetaServer {
    /// A server over a started replica.
    pub fn new(raft: RaftHandle<ApplyResult>, store: Arc<MetaStore>, cfg: MetaConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                raft,
                store,
                cfg,
                heartbeats: Mutex::new(HashMap::new()),
                healing: crate::healing::Healing::default(),
                placement: Mutex::new(None),
            }),
        }
    }

    pub(crate) fn heartbeats(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Heartbeat>> {
        match self.inner.heartbeats.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub(crate) async fn propose(&self, cmd: Command) -> Result<Applied> {
        let data = cmd.encode(self.inner.store.value_format());
        // Commands that scan ranges while applied write the earlier entries first, which a
        // command inside a shared entry cannot do; the rest may share an entry.
        let shared = cmd.may_share_entry();
        let raft = &self.inner.raft;
        let proposal = async move {
            if shared {
                raft.propose_shared(data).await
            } else {
                raft.propose(data).await
            }
        };
        match tokio::time::timeout(PROPOSE_TIMEOUT, proposal).await {
            Ok(r) => r.map_err(crate::raft_error)?,
            Err(_) => Err(MetaError::Raft {
                kind: crate::error::ErrorKind::Timeout,
                leader: None,
                message: format!(
                    "proposal not applied within {} ms (is a quorum of members up?)",
                    PROPOSE_TIMEOUT.as_millis()
                ),
            }),
        }
    }

    /// Linearizable read barrier unless the caller accepts stale reads.
    pub(crate) async fn read_barrier(&self, stale_ok: bool) -> Result<()> {
        if stale_ok {
            if self.inner.raft.status().installing_snapshot {
                return Err(MetaError::Raft {
                    kind: crate::error::ErrorKind::InstallingSnapshot,
                    leader: None,
                    message: "this member is installing a snapshot and its state is incomplete; read from another member or without stale reads".into(),
                });
            }
            return Ok(());
        }
        match tokio::time::timeout(READ_INDEX_TIMEOUT, self.inner.raft.read_index()).await {
            Ok(r) => r.map_err(crate::raft_error),
            Err(_) => Err(MetaError::Raft {
                kind: crate::error::ErrorKind::Timeout,
                leader: None,
                message: format!(
                    "read index not confirmed within {} ms (this member may be partitioned from the quorum)",
                    READ_INDEX_TIMEOUT.as_millis()
                ),
            }),
        }
    }

    pub(crate) fn require_leader(&self) -> Result<()> {
        if self.inner.raft.is_leader() {
            Ok(())
        } else {
            Err(crate::raft_error(self.inner.raft.not_leader()))
        }
    }

    fn to_proto(&self, b: &BundleRecord) -> pb::BundleRecord {
        let map = self.inner.store.map();
        pb::BundleRecord {
            id: Some(b.id.to_proto()),
            state: b.state.to_proto() as i32,
            code: Some(b.code.to_proto()),
            length: b.length,
            index_offset: b.index_offset,
            index_length: b.index_length,
            sha256: b.sha256.clone(),
            file_count: b.file_count,
            labels: labels_to_proto(&b.labels),
            created_unix_ms: b.created_unix_ms,
            expires_unix_ms: b.expires_unix_ms,
            placement: b
                .placement
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let node = map.disks.get(d).map(|x| x.node_id).unwrap_or(0);
                    pb::ShardLocation {
                        shard_index: i as u32,
                        disk_id: *d,
                        node_id: node,
                        node_address: map
                            .nodes
                            .get(&node)
                            .map(|n| n.address.clone())
                            .unwrap_or_default(),
                    }
                })
                .collect(),
            placement_generation: b.placement_generation,
        }
    }

    fn disk_proto(&self, d: &DiskRecord) -> pb::DiskInfo {
        let (used, scrub) = self
            .heartbeats()
            .get(&d.node_id)
            .map(|h| {
                (
                    h.used.get(&d.id).copied().unwrap_or(0),
                    h.scrub.get(&d.id).copied().unwrap_or((0, 0)),
                )
            })
            .unwrap_or((0, (0, 0)));
        pb::DiskInfo {
            disk_id: d.id,
            path: d.path.clone(),
            capacity_bytes: d.capacity_bytes,
            used_bytes: used,
            state: d.state.to_proto() as i32,
            accounted_bytes: d.accounted_bytes,
            node_id: d.node_id,
            last_scrub_unix_ms: scrub.0,
            last_scrub_damaged_shards: scrub.1,
        }
    }

    fn node_proto(&self, n: &NodeRecord, disks: Vec<pb::DiskInfo>) -> pb::NodeInfo {
        let age = self
            .heartbeats()
            .get(&n.id)
            .and_then(|h| h.at)
            .map(|at| at.elapsed().as_millis() as u64);
        pb::NodeInfo {
            node_id: n.id,
            address: n.address.clone(),
            domain: Some(pb::FailureDomain {
                zone: n.zone.clone(),
                rack: n.rack.clone(),
                host: n.host.clone(),
            }),
            state: n.state.to_proto() as i32,
            disks,
            last_heartbeat_age_ms: age,
        }
    }

    /// Chooses disks for a new bundle from the applied cluster map and heartbeat usage.
    fn place(&self, code: &Code, id: BundleId) -> Result<Vec<u64>> {
        let seed = (id.0 as u64) ^ ((id.0 >> 64) as u64);
        self.placement_map().place(code.total(), seed)
    }

    fn placement_slot(&self) -> std::sync::MutexGuard<'_, Option<CachedPlacement>> {
        match self.inner.placement.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The placement map for the current topology. Building one walks every disk (thousands
    /// in a large cluster), so allocations share it: it is rebuilt when the topology changes
    /// (registration, disk or node state) and otherwise at most every [`PLACEMENT_REFRESH`],
    /// to follow free space. The state machine still refuses any disk that is not ok.
    fn placement_map(&self) -> Arc<PlacementMap> {
        let epoch = self.inner.store.topology_epoch();
        if let Some(c) = self.placement_slot().as_ref() {
            if c.topology_epoch == epoch && c.built.elapsed() < PLACEMENT_REFRESH {
                return Arc::clone(&c.map);
            }
        }
        let map = Arc::new(self.build_placement_map());
        *self.placement_slot() = Some(CachedPlacement {
            topology_epoch: epoch,
            built: Instant::now(),
            map: Arc::clone(&map),
        });
        map
    }

    /// Forgets the shared placement map (an allocation drew a disk that is no longer ok).
    fn forget_placement_map(&self) {
        *self.placement_slot() = None;
    }

    fn build_placement_map(&self) -> PlacementMap {
        let map = self.inner.store.map();
        let hb = self.heartbeats();
        let level = self.inner.cfg.domain_level;
        let mut cands = Vec::new();
        for d in map.disks.values() {
            if d.state != DiskState::Ok {
                continue;
            }
            let Some(n) = map.nodes.get(&d.node_id) else {
                continue;
            };
            if n.state != NodeState::Up {
                continue;
            }
            let reported = hb
                .get(&n.id)
                .and_then(|h| h.used.get(&d.id).copied())
                .unwrap_or(0);
            cands.push(Candidate {
                disk_id: d.id,
                domain: n.domain(level),
                free_bytes: d
                    .capacity_bytes
                    .saturating_sub(reported.max(d.accounted_bytes)),
            });
        }
        PlacementMap::new(&cands, level)
    }

    async fn allocate(&self, req: pb::AllocateBundleRequest) -> Result<BundleRecord> {
        if req.request_id.is_empty() || req.request_id.len() > MAX_REQUEST_ID_BYTES {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::RequestId,
                reason: format!("required, 1..={MAX_REQUEST_ID_BYTES} bytes (a UUID per upload)"),
            });
        }
        let code = req
            .code
            .as_ref()
            .map(Code::from_proto)
            .unwrap_or(self.inner.cfg.default_code);
        code.validate()?;
        let labels = labels_from_proto(&req.labels)?;
        if req.ttl_ms > MAX_ALLOCATION_TTL_MS {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::TtlMs,
                reason: format!("at most {MAX_ALLOCATION_TTL_MS} ms"),
            });
        }
        let ttl = if req.ttl_ms == 0 {
            self.inner.cfg.allocation_ttl_ms
        } else {
            req.ttl_ms
        };
        self.require_leader()?;
        if let Some(id) = self.inner.store.request_bundle(&req.request_id)? {
            if let Some(b) = self.inner.store.bundle(id)? {
                return Ok(b);
            }
        }
        let mut attempt = 0;
        loop {
            let now = now_unix_ms();
            let id = BundleId::generate(now);
            let placement = self.place(&code, id)?;
            let cmd = Command::Allocate {
                request_id: req.request_id.clone(),
                id,
                code,
                labels: labels.clone(),
                expected_length: req.expected_length,
                placement,
                now_ms: now,
                expires_ms: now + ttl,
            };
            match self.propose(cmd).await {
                Err(MetaError::PlacementStale { .. }) if attempt < 3 => {
                    self.forget_placement_map();
                    attempt += 1;
                }
                Ok(Applied::Bundle(b)) => return Ok(b),
                Ok(other) => return Err(unexpected(other)),
                Err(e) => return Err(e),
            }
        }
    }

    async fn bundle_cmd(&self, cmd: Command) -> Result<BundleRecord> {
        match self.propose(cmd).await? {
            Applied::Bundle(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    async fn commit(&self, r: pb::CommitBundleRequest) -> Result<BundleRecord> {
        let id = BundleId::from_proto(r.id.as_ref())?;
        if r.sha256.len() != 32 {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::Sha256,
                reason: format!("must be 32 bytes, got {}", r.sha256.len()),
            });
        }
        if r.index_offset
            .checked_add(r.index_length)
            .is_none_or(|end| end > r.length)
        {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::IndexOffset,
                reason: format!(
                    "index [{}, +{}) lies outside the bundle's {} bytes",
                    r.index_offset, r.index_length, r.length
                ),
            });
        }
        self.require_leader()?;
        self.bundle_cmd(Command::Commit {
            id,
            length: r.length,
            index_offset: r.index_offset,
            index_length: r.index_length,
            sha256: r.sha256,
            file_count: r.file_count,
            missing_shards: r.missing_shards,
            now_ms: now_unix_ms(),
        })
        .await
    }

    /// One item of a batch, handled as its unary call would be.
    async fn batch_item(&self, item: pb::BatchItem) -> pb::BatchResult {
        use pb::batch_item::Item;
        use pb::batch_result::Result as Answer;
        let answer = match item.item {
            Some(Item::Allocate(r)) => self.allocate(r).await.map(|b| {
                Answer::Allocate(pb::AllocateBundleResponse {
                    bundle: Some(self.to_proto(&b)),
                })
            }),
            Some(Item::Commit(r)) => self.commit(r).await.map(|b| {
                Answer::Commit(pb::CommitBundleResponse {
                    bundle: Some(self.to_proto(&b)),
                })
            }),
            None => Err(MetaError::InvalidArgument {
                field: crate::error::Field::Item,
                reason: "a batch item must hold an allocation or a commit".into(),
            }),
        };
        pb::BatchResult {
            result: Some(answer.unwrap_or_else(|e| Answer::Error(item_error(e)))),
        }
    }

    /// Proposes expiry of allocations past their deadline (leader only).
    async fn expire_once(&self) -> Result<usize> {
        if !self.inner.raft.is_leader() {
            return Ok(0);
        }
        let now = now_unix_ms();
        let ids = self.inner.store.expired(now, EXPIRY_BATCH)?;
        let n = ids.len();
        if n > 0 {
            self.propose(Command::Expire { ids, now_ms: now }).await?;
            tracing::info!(count = n, "expired pending allocations");
        }
        Ok(n)
    }

    fn members_proto(st: &GroupStatus) -> Vec<pb::MemberInfo> {
        let mut out = Vec::new();
        for (ids, role) in [(&st.voters, "voter"), (&st.learners, "learner")] {
            for id in ids {
                out.push(pb::MemberInfo {
                    id: *id,
                    address: st.members.get(id).cloned().unwrap_or_default(),
                    role: role.into(),
                    matched_index: st.progress.get(id).copied().unwrap_or(0),
                });
            }
        }
        out
    }

    /// Members of a conf state just applied (the published status may lag by one round).
    fn members_of(
        cs: &bitmountain_raftstore::ConfState,
        st: &GroupStatus,
        extra: Option<(u64, &str)>,
    ) -> Vec<pb::MemberInfo> {
        let addr = |id: u64| {
            st.members.get(&id).cloned().unwrap_or_else(|| {
                extra
                    .filter(|(e, _)| *e == id)
                    .map(|(_, a)| a.to_string())
                    .unwrap_or_default()
            })
        };
        let mut out = Vec::new();
        for (ids, role) in [(&cs.voters, "voter"), (&cs.learners, "learner")] {
            for id in ids.iter() {
                out.push(pb::MemberInfo {
                    id: *id,
                    address: addr(*id),
                    role: role.into(),
                    matched_index: st.progress.get(id).copied().unwrap_or(0),
                });
            }
        }
        out
    }

    fn status_proto(&self) -> pb::ClusterStatusResponse {
        let st = self.inner.raft.status();
        let map = self.inner.store.map().clone();
        let mut nodes = Vec::new();
        for n in map.nodes.values() {
            let disks = map
                .disks
                .values()
                .filter(|d| d.node_id == n.id)
                .map(|d| self.disk_proto(d))
                .collect();
            nodes.push(self.node_proto(n, disks));
        }
        pb::ClusterStatusResponse {
            cluster_id: map.cluster.cluster_id.clone(),
            member_id: st.id,
            leader_id: st.leader_id,
            leader_address: st.members.get(&st.leader_id).cloned().unwrap_or_default(),
            term: st.term,
            commit_index: st.commit,
            applied_index: st.applied,
            first_log_index: st.first_index,
            last_log_index: st.last_index,
            members: Self::members_proto(&st),
            nodes,
            bundles: Some(pb::BundleCounts {
                pending: map.cluster.pending,
                sealed: map.cluster.sealed,
                deleting: map.cluster.deleting,
            }),
            repairs_queued: map.cluster.repairs,
            role: st.role.to_string(),
            value_format: u32::from(map.cluster.value_format()),
            newest_value_format: u32::from(crate::keys::VALUE_FORMAT_NEWEST),
        }
    }

    /// Switches the group to `requested` once every other member confirms its binary reads
    /// it; asking for the current format re-checks the members and changes nothing.
    async fn switch_value_format(&self, requested: u32) -> Result<u32> {
        self.require_leader()?;
        let current = self.inner.store.value_format();
        let value_format = crate::state::value_format_switch(current, requested)?;
        // A member that cannot read a committed command stops, so every member must confirm
        // before any of them writes the new format.
        let st = self.inner.raft.status();
        let mut behind = Vec::new();
        for (id, address) in st.members.iter().filter(|(id, _)| **id != st.id) {
            match crate::client::member_status(address, MEMBER_CHECK_TIMEOUT).await {
                // Binaries from before value formats answer 0: they read JSON only.
                Ok(s) if s.newest_value_format.max(1) >= requested => {}
                Ok(s) => behind.push(format!(
                    "member {id} at {address} reads formats up to {} (upgrade its binary first)",
                    s.newest_value_format.max(1)
                )),
                Err(e) => behind.push(format!(
                    "member {id} at {address} did not answer ({e}); start it, or remove it from \
                     the group"
                )),
            }
        }
        if !behind.is_empty() {
            return Err(MetaError::ValueFormatRefused {
                requested,
                reason: behind.join("; "),
            });
        }
        if value_format > current {
            self.propose(Command::SetValueFormat { value_format })
                .await?;
        }
        Ok(u32::from(self.inner.store.value_format()))
    }
}

fn unexpected(a: Applied) -> MetaError {
    MetaError::Corrupt {
        what: format!("unexpected apply result {a:?}"),
    }
}

type Rpc<T> = std::result::Result<Response<T>, Status>;

fn ok<T>(v: T) -> Rpc<T> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl MetaService for MetaServer {
    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Rpc<pb::RegisterNodeResponse> {
        let r = req.into_inner();
        if r.address.is_empty() {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::Address,
                reason: "a node must say where it can be reached".into(),
            }
            .into());
        }
        if r.request_id.len() > MAX_REQUEST_ID_BYTES {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::RequestId,
                reason: format!("at most {MAX_REQUEST_ID_BYTES} bytes"),
            }
            .into());
        }
        self.require_leader()?;
        let domain = r.domain.unwrap_or_default();
        let cmd = Command::RegisterNode {
            request_id: r.request_id,
            node_id: r.node_id,
            address: r.address,
            zone: domain.zone,
            rack: domain.rack,
            host: domain.host,
            disks: r
                .disks
                .iter()
                .map(|d| DiskSpec {
                    disk_id: d.disk_id,
                    path: d.path.clone(),
                    capacity_bytes: d.capacity_bytes,
                })
                .collect(),
            cluster_id_candidate: format!("{:032x}", rand::random::<u128>()),
        };
        match self.propose(cmd).await? {
            Applied::Node {
                node,
                disks,
                cluster_id,
            } => {
                {
                    let mut hb = self.heartbeats();
                    let used = r
                        .disks
                        .iter()
                        .zip(&disks)
                        .map(|(a, b)| (b.id, a.used_bytes))
                        .collect();
                    let entry = hb.entry(node.id).or_default();
                    entry.at = Some(Instant::now());
                    entry.used = used;
                }
                ok(pb::RegisterNodeResponse {
                    node_id: node.id,
                    disks: disks.iter().map(|d| self.disk_proto(d)).collect(),
                    cluster_id,
                })
            }
            other => Err(unexpected(other).into()),
        }
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Rpc<pb::HeartbeatResponse> {
        let r = req.into_inner();
        self.require_leader()?;
        let cluster_id = {
            let map = self.inner.store.map();
            if !map.nodes.contains_key(&r.node_id) {
                return Err(MetaError::UnknownNode { id: r.node_id }.into());
            }
            map.cluster.cluster_id.clone()
        };
        let heard = Heartbeat {
            at: Some(Instant::now()),
            used: r.disks.iter().map(|d| (d.disk_id, d.used_bytes)).collect(),
            failed: r
                .disks
                .iter()
                .filter(|d| d.state() == pb::DiskState::Failed)
                .map(|d| d.disk_id)
                .collect(),
            scrub: r
                .disks
                .iter()
                .filter(|d| d.last_scrub_unix_ms > 0)
                .map(|d| {
                    (
                        d.disk_id,
                        (d.last_scrub_unix_ms, d.last_scrub_damaged_shards),
                    )
                })
                .collect(),
        };
        self.heartbeats().insert(r.node_id, heard);
        let settings = self.inner.store.map().cluster.repair_settings;
        ok(pb::HeartbeatResponse {
            cluster_id,
            heartbeat_interval_ms: self.inner.cfg.heartbeat_interval_ms,
            repair: Some(settings.to_proto()),
        })
    }

    async fn set_disk_state(
        &self,
        req: Request<pb::SetDiskStateRequest>,
    ) -> Rpc<pb::SetDiskStateResponse> {
        let r = req.into_inner();
        let state = DiskState::from_proto(r.state()).ok_or(MetaError::InvalidArgument {
            field: crate::error::Field::State,
            reason: "required".into(),
        })?;
        self.require_leader()?;
        match self
            .propose(Command::SetDiskState {
                disk_id: r.disk_id,
                state,
                now_ms: now_unix_ms(),
            })
            .await?
        {
            Applied::Disk {
                disk,
                repairs_queued,
            } => ok(pb::SetDiskStateResponse {
                disk: Some(self.disk_proto(&disk)),
                repairs_queued,
            }),
            other => Err(unexpected(other).into()),
        }
    }

    async fn set_node_state(
        &self,
        req: Request<pb::SetNodeStateRequest>,
    ) -> Rpc<pb::SetNodeStateResponse> {
        let r = req.into_inner();
        let state = NodeState::from_proto(r.state()).ok_or(MetaError::InvalidArgument {
            field: crate::error::Field::State,
            reason: "required".into(),
        })?;
        self.require_leader()?;
        match self
            .propose(Command::SetNodeState {
                node_id: r.node_id,
                state,
                now_ms: now_unix_ms(),
            })
            .await?
        {
            Applied::NodeUpdated(n) => ok(pb::SetNodeStateResponse {
                node: Some(self.node_proto(&n, vec![])),
            }),
            other => Err(unexpected(other).into()),
        }
    }

    async fn allocate_bundle(
        &self,
        req: Request<pb::AllocateBundleRequest>,
    ) -> Rpc<pb::AllocateBundleResponse> {
        let b = self.allocate(req.into_inner()).await?;
        ok(pb::AllocateBundleResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn commit_bundle(
        &self,
        req: Request<pb::CommitBundleRequest>,
    ) -> Rpc<pb::CommitBundleResponse> {
        let b = self.commit(req.into_inner()).await?;
        ok(pb::CommitBundleResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn batch(&self, req: Request<pb::BatchRequest>) -> Rpc<pb::BatchResponse> {
        let items = req.into_inner().items;
        if items.len() > MAX_BATCH_ITEMS {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::Items,
                reason: format!(
                    "{} items in one batch, at most {MAX_BATCH_ITEMS}: split the batch",
                    items.len()
                ),
            }
            .into());
        }
        // A member that does not lead redirects the whole batch, like a unary call; an item
        // that meets a lost leadership later gets `not_leader` on its own.
        self.require_leader()?;
        let results =
            futures::future::join_all(items.into_iter().map(|item| self.batch_item(item)));
        ok(pb::BatchResponse {
            results: results.await,
        })
    }

    async fn abort_bundle(
        &self,
        req: Request<pb::AbortBundleRequest>,
    ) -> Rpc<pb::AbortBundleResponse> {
        let id = BundleId::from_proto(req.get_ref().id.as_ref())?;
        self.require_leader()?;
        self.propose(Command::Abort { id }).await?;
        ok(pb::AbortBundleResponse {})
    }

    async fn get_bundle(&self, req: Request<pb::GetBundleRequest>) -> Rpc<pb::GetBundleResponse> {
        let r = req.into_inner();
        let id = BundleId::from_proto(r.id.as_ref())?;
        self.read_barrier(r.stale_ok).await?;
        let b = self
            .inner
            .store
            .bundle(id)?
            .ok_or(MetaError::UnknownBundle { id })?;
        ok(pb::GetBundleResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn list_bundles(
        &self,
        req: Request<pb::ListBundlesRequest>,
    ) -> Rpc<pb::ListBundlesResponse> {
        let r = req.into_inner();
        let filter = ListFilter {
            label: r.label.as_ref().map(|l| (l.key.clone(), l.value.clone())),
            state: BundleState::from_proto(r.state()),
        };
        self.read_barrier(r.stale_ok).await?;
        let (bundles, next) =
            self.inner
                .store
                .list_bundles(&filter, &r.page_token, page_size(r.page_size))?;
        ok(pb::ListBundlesResponse {
            bundles: bundles.iter().map(|b| self.to_proto(b)).collect(),
            next_page_token: next,
        })
    }

    async fn delete_bundle(
        &self,
        req: Request<pb::DeleteBundleRequest>,
    ) -> Rpc<pb::DeleteBundleResponse> {
        let id = BundleId::from_proto(req.get_ref().id.as_ref())?;
        self.require_leader()?;
        let b = self.bundle_cmd(Command::Delete { id }).await?;
        ok(pb::DeleteBundleResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn purge_bundle(
        &self,
        req: Request<pb::PurgeBundleRequest>,
    ) -> Rpc<pb::PurgeBundleResponse> {
        let id = BundleId::from_proto(req.get_ref().id.as_ref())?;
        self.require_leader()?;
        self.propose(Command::Purge { id }).await?;
        ok(pb::PurgeBundleResponse {})
    }

    async fn update_placement(
        &self,
        req: Request<pb::UpdatePlacementRequest>,
    ) -> Rpc<pb::UpdatePlacementResponse> {
        let r = req.into_inner();
        let id = BundleId::from_proto(r.id.as_ref())?;
        let mut placement = vec![u64::MAX; r.placement.len()];
        for loc in &r.placement {
            let i = loc.shard_index as usize;
            if i >= placement.len() || placement[i] != u64::MAX {
                return Err(MetaError::MalformedPlacement {
                    id,
                    reason: format!(
                        "shard indexes must be 0..{} each exactly once (bad or repeated index {i})",
                        placement.len()
                    ),
                }
                .into());
            }
            placement[i] = loc.disk_id;
        }
        {
            // Distinct failure domains among the live copies, checked against the applied map.
            // A shard on a failed disk or a down node is no copy (it is being rebuilt), so its
            // domain may already hold the rebuilt copy of another shard.
            let map = self.inner.store.map();
            let level = self.inner.cfg.domain_level;
            let mut seen = std::collections::HashMap::new();
            for (i, d) in placement.iter().enumerate() {
                if map.copy_is_gone(*d) {
                    continue;
                }
                let Some(disk) = map.disks.get(d) else {
                    continue;
                };
                if let Some(n) = map.nodes.get(&disk.node_id) {
                    if let Some(j) = seen.insert(n.domain(level), i) {
                        return Err(MetaError::MalformedPlacement {
                            id,
                            reason: format!(
                                "shards {j} and {i} would share failure domain {} ({level})",
                                n.domain(level)
                            ),
                        }
                        .into());
                    }
                }
            }
        }
        self.require_leader()?;
        let b = self
            .bundle_cmd(Command::UpdatePlacement {
                id,
                expected_generation: r.expected_generation,
                placement,
                now_ms: now_unix_ms(),
                rewritten_shards: r.rewritten_shards,
            })
            .await?;
        ok(pb::UpdatePlacementResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn list_disk_bundles(
        &self,
        req: Request<pb::ListDiskBundlesRequest>,
    ) -> Rpc<pb::ListDiskBundlesResponse> {
        let r = req.into_inner();
        self.read_barrier(false).await?;
        if !self.inner.store.map().disks.contains_key(&r.disk_id) {
            return Err(MetaError::UnknownDisk { id: r.disk_id }.into());
        }
        let (shards, next) =
            self.inner
                .store
                .list_disk_bundles(r.disk_id, &r.page_token, page_size(r.page_size))?;
        ok(pb::ListDiskBundlesResponse {
            shards: shards
                .into_iter()
                .map(|(id, i)| pb::DiskShard {
                    bundle_id: Some(id.to_proto()),
                    shard_index: i,
                })
                .collect(),
            next_page_token: next,
        })
    }

    async fn list_repairs(
        &self,
        req: Request<pb::ListRepairsRequest>,
    ) -> Rpc<pb::ListRepairsResponse> {
        let r = req.into_inner();
        self.read_barrier(false).await?;
        let (tasks, next) = self
            .inner
            .store
            .list_repairs(&r.page_token, page_size(r.page_size))?;
        ok(pb::ListRepairsResponse {
            repairs: tasks.iter().map(|t| t.to_proto()).collect(),
            next_page_token: next,
            total: self.inner.store.map().cluster.repairs,
        })
    }

    async fn report_damage(
        &self,
        req: Request<pb::ReportDamageRequest>,
    ) -> Rpc<pb::ReportDamageResponse> {
        let r = req.into_inner();
        let id = BundleId::from_proto(r.id.as_ref())?;
        self.require_leader()?;
        tracing::warn!(bundle = %id, shards = ?r.shard_indexes, reason = %r.reason, "damage reported");
        let queued = match self
            .propose(Command::ReportDamage {
                id,
                shards: r.shard_indexes,
                now_ms: now_unix_ms(),
            })
            .await?
        {
            Applied::Damage { queued } => queued,
            _ => false,
        };
        ok(pb::ReportDamageResponse { queued })
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Rpc<pb::ClusterStatusResponse> {
        ok(self.status_proto())
    }

    async fn claim_repairs(
        &self,
        req: Request<pb::ClaimRepairsRequest>,
    ) -> Rpc<pb::ClaimRepairsResponse> {
        ok(self.claim(req.into_inner())?)
    }

    async fn finish_repair(
        &self,
        req: Request<pb::FinishRepairRequest>,
    ) -> Rpc<pb::FinishRepairResponse> {
        self.finish(req.into_inner())?;
        ok(pb::FinishRepairResponse {})
    }

    async fn set_repair_settings(
        &self,
        req: Request<pb::SetRepairSettingsRequest>,
    ) -> Rpc<pb::SetRepairSettingsResponse> {
        let settings = crate::types::RepairSettings::from_proto(req.get_ref().settings.as_ref());
        self.require_leader()?;
        self.propose(Command::SetRepairSettings { settings })
            .await?;
        ok(pb::SetRepairSettingsResponse {
            settings: Some(self.inner.store.map().cluster.repair_settings.to_proto()),
        })
    }

    async fn repair_status(
        &self,
        _req: Request<pb::RepairStatusRequest>,
    ) -> Rpc<pb::RepairStatusResponse> {
        self.require_leader()?;
        ok(self.repair_status_now()?)
    }

    async fn rebalance(&self, req: Request<pb::RebalanceRequest>) -> Rpc<pb::RebalanceResponse> {
        ok(self.rebalance_now(req.into_inner()).await?)
    }
}

#[tonic::async_trait]
impl MetaAdmin for MetaServer {
    async fn add_member(&self, req: Request<pb::AddMemberRequest>) -> Rpc<pb::AddMemberResponse> {
        let r = req.into_inner();
        if r.id == 0 || r.address.is_empty() {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::Member,
                reason: "a non-zero id and an address are required".into(),
            }
            .into());
        }
        self.require_leader()?;
        let raft = &self.inner.raft;
        let st = raft.status();
        if st.voters.contains(&r.id) {
            return Err(MetaError::Raft {
                kind: crate::error::ErrorKind::BadMembership,
                leader: None,
                message: format!("member {} is already a voter", r.id),
            }
            .into());
        }
        if !st.learners.contains(&r.id) {
            raft.add_learner(r.id, &r.address)
                .await
                .map_err(crate::raft_error)?;
        }
        if !r.learner_only {
            let timeout = Duration::from_millis(if r.catch_up_timeout_ms == 0 {
                60_000
            } else {
                r.catch_up_timeout_ms
            });
            let deadline = Instant::now() + timeout;
            loop {
                let st = raft.status();
                if !st.is_leader() {
                    return Err(crate::raft_error(raft.not_leader()).into());
                }
                let matched = st.progress.get(&r.id).copied().unwrap_or(0);
                if matched >= st.commit.saturating_sub(10) && matched > 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(MetaError::Raft {
                        kind: crate::error::ErrorKind::Timeout,
                        leader: None,
                        message: format!(
                            "member {} (learner) did not catch up within {} ms (matched {matched} of {}): is it running at {}? it stays a learner; retry `member add` to promote it",
                            r.id, timeout.as_millis(), st.commit, r.address
                        ),
                    }
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let cs = raft
                .promote(r.id, &r.address)
                .await
                .map_err(crate::raft_error)?;
            return ok(pb::AddMemberResponse {
                members: Self::members_of(&cs, &raft.status(), Some((r.id, &r.address))),
            });
        }
        ok(pb::AddMemberResponse {
            members: Self::members_proto(&raft.status()),
        })
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Rpc<pb::RemoveMemberResponse> {
        let r = req.into_inner();
        self.require_leader()?;
        let raft = &self.inner.raft;
        let st = raft.status();
        if !st.voters.contains(&r.id) && !st.learners.contains(&r.id) {
            return Err(
                crate::raft_error(bitmountain_raftstore::RaftStoreError::UnknownMember {
                    id: r.id,
                })
                .into(),
            );
        }
        if st.voters.len() == 1 && st.voters.contains(&r.id) {
            return Err(MetaError::Raft {
                kind: crate::error::ErrorKind::BadMembership,
                leader: None,
                message: "cannot remove the last voter".into(),
            }
            .into());
        }
        let cs = raft.remove(r.id).await.map_err(crate::raft_error)?;
        ok(pb::RemoveMemberResponse {
            members: Self::members_of(&cs, &raft.status(), None),
        })
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Rpc<pb::TransferLeaderResponse> {
        let r = req.into_inner();
        let raft = &self.inner.raft;
        let st = raft.status();
        if !st.voters.contains(&r.to_id) {
            return Err(
                crate::raft_error(bitmountain_raftstore::RaftStoreError::UnknownMember {
                    id: r.to_id,
                })
                .into(),
            );
        }
        self.require_leader()?;
        let timeout = Duration::from_millis(if r.timeout_ms == 0 {
            10_000
        } else {
            r.timeout_ms
        });
        raft.transfer_leader(r.to_id, timeout)
            .await
            .map_err(crate::raft_error)?;
        ok(pb::TransferLeaderResponse {
            leader_id: raft.status().leader_id,
        })
    }

    async fn set_value_format(
        &self,
        req: Request<pb::SetValueFormatRequest>,
    ) -> Rpc<pb::SetValueFormatResponse> {
        let value_format = self
            .switch_value_format(req.into_inner().value_format)
            .await?;
        ok(pb::SetValueFormatResponse { value_format })
    }

    async fn set_partition(
        &self,
        req: Request<pb::SetPartitionRequest>,
    ) -> Rpc<pb::SetPartitionResponse> {
        self.inner
            .raft
            .set_partition(&req.get_ref().blocked_member_ids)
            .map_err(crate::raft_error)?;
        ok(pb::SetPartitionResponse {})
    }
}

#[derive(Debug, Clone, Copy)]
struct Diagnostics;

#[tonic::async_trait]
impl pb::diagnostics_server::Diagnostics for Diagnostics {
    async fn ping(&self, _req: Request<pb::PingRequest>) -> Rpc<pb::PingResponse> {
        ok(pb::PingResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}

/// How to run a member.
#[derive(Debug, Clone)]
pub struct MemberOptions {
    /// Member id (required on first start).
    pub id: Option<u64>,
    /// Data directory.
    pub data_dir: std::path::PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address other members and clients use (default: `listen`).
    pub advertise: Option<String>,
    /// Initial members of a new group.
    pub bootstrap: Option<Members>,
    /// Raft tunables (id and address are filled in).
    pub raft: RaftConfig,
    /// Service settings.
    pub meta: MetaConfig,
}

/// Runs a member until `shutdown` resolves or the server fails.
pub async fn serve(
    opts: MemberOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let advertise = opts
        .advertise
        .clone()
        .unwrap_or_else(|| opts.listen.to_string());
    let data_dir = opts.data_dir.clone();
    let bootstrap = opts.bootstrap.clone();
    let (engine, id) = tokio::task::spawn_blocking(move || {
        bitmountain_raftstore::prepare(&data_dir, opts.id, bootstrap.as_ref())
    })
    .await
    .map_err(|e| MetaError::Corrupt {
        what: format!("startup task: {e}"),
    })?
    .map_err(crate::raft_error)?;
    let started = Instant::now();
    let store = MetaStore::load(engine.db().clone())?;
    let mut rcfg = opts.raft.clone();
    rcfg.id = id;
    rcfg.address = advertise.clone();
    let (raft, raft_service) = bitmountain_raftstore::start(
        engine,
        rcfg,
        MetaStateMachine::new(Arc::clone(&store)),
        tokio::runtime::Handle::current(),
    )
    .map_err(crate::raft_error)?;
    let server = MetaServer::new(raft, store, opts.meta.clone());
    tracing::info!(member = id, listen = %opts.listen, advertise = %advertise, load_ms = started.elapsed().as_millis() as u64, "metadata member starting");
    tokio::spawn(crate::healing::failure_detector(server.clone()));
    let expiry = server.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EXPIRY_SCAN_INTERVAL);
        loop {
            tick.tick().await;
            if let Err(e) = expiry.expire_once().await {
                tracing::debug!(error = %e, "expiry scan");
            }
        }
    });
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(
            bitmountain_raftstore::transport::H2_STREAM_WINDOW_BYTES,
        ))
        .initial_connection_window_size(Some(
            bitmountain_raftstore::transport::H2_CONNECTION_WINDOW_BYTES,
        ))
        .add_service(MetaServiceServer::new(server.clone()))
        .add_service(MetaAdminServer::new(server))
        .add_service(raft_service.into_server())
        .add_service(pb::diagnostics_server::DiagnosticsServer::new(Diagnostics))
        .serve_with_shutdown(opts.listen, shutdown)
        .await
        .map_err(|e| MetaError::Raft {
            kind: crate::error::ErrorKind::Internal,
            leader: None,
            message: format!(
                "gRPC server on {}: {e} (is the address in use?)",
                opts.listen
            ),
        })
}
