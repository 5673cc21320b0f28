//! The gRPC services of a member and their shared core.
//!
//! - this file: [`MetaServer`] (the raft handle, the store, the leader's soft state) with
//!   proposing, read barriers and the leader check every handler uses;
//! - [`meta_service`]: `MetaService`, the API of nodes and clients (thin handlers);
//! - [`admin`]: `MetaAdmin` (membership, value format, fault injection) and `Diagnostics`;
//! - [`audit`]: who a request acts as, events members and nodes report, pages of the trail;
//! - [`backup`]: `MetaAdmin.Backup`, the state streamed for `bitmountain meta backup`;
//! - [`recovery`]: the leader's side of `bitmountain meta recover` (scan reports, planning the
//!   records, the driver that enters and finishes a recovery);
//! - [`bundles`] and [`topology`]: what the leader validates and decides before proposing a
//!   command of that family (the "propose" side; apply is in `crate::state::apply`);
//! - [`placement`]: the placement map allocations draw from;
//! - [`wire`]: domain records → protobuf;
//! - [`serve`]: what `bitmountain meta` runs.
//!
//! Errors become `tonic::Status` only through `MetaError`'s one conversion.

mod access;
mod admin;
mod audit;
mod backup;
mod bundles;
mod durability;
mod meta_service;
mod metrics;
mod placement;
mod recovery;
mod serve;
mod topology;
mod wire;

pub use access::{FirstAdminToken, ADMIN_TOKEN_FILE};
pub use recovery::{RecoveryRequest, DEFAULT_RECOVERY_SETTLE_MS, RECOVERY_REQUEST_FILE};
pub use serve::{serve, MemberOptions};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitmountain_raftstore::RaftHandle;
use tonic::{Response, Status};

use crate::command::{Applied, ApplyResult, Command};
use crate::error::{MetaError, Result};
use crate::state::MetaStore;
use crate::types::{Code, DomainLevel};

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
/// Most worker statuses the leader keeps per node (heartbeats carry a node's workers).
pub const MAX_REPORTED_WORKERS: usize = 32;
/// Longest text of a reported worker status.
pub const MAX_WORKER_TEXT_BYTES: usize = 512;
/// How long a shutting-down member lets a background step under way finish.
pub const WORKER_SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
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
    /// How this member calls the others outside Raft (its certificate; plaintext when it
    /// runs with `--insecure`).
    pub credentials: bitmountain_proto::Credentials,
    /// A recovery ends this long after the last disk registered or reported, once every
    /// registered disk has reported (nodes starting a little apart all get in).
    pub recovery_settle_ms: u64,
    /// The value format a new group writes (its first command carries it): the newest, or
    /// an older one (2 leaves the audit trail out; `member set-value-format` raises it later).
    pub initial_value_format: u8,
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
            credentials: bitmountain_proto::Credentials::insecure(),
            recovery_settle_ms: recovery::DEFAULT_RECOVERY_SETTLE_MS,
            initial_value_format: crate::keys::VALUE_FORMAT_NEWEST,
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
    /// Disks that passed the node's return check since they last failed (may come back).
    pub(crate) checked: Vec<u64>,
    /// Disk → (last full scrub, damaged shards it found).
    pub(crate) scrub: HashMap<u64, (u64, u64)>,
    /// The node's background workers.
    pub(crate) workers: Vec<bitmountain_proto::v1::WorkerStatus>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) raft: RaftHandle<ApplyResult>,
    pub(crate) store: Arc<MetaStore>,
    pub(crate) cfg: MetaConfig,
    pub(crate) heartbeats: Mutex<HashMap<u64, Heartbeat>>,
    pub(crate) healing: crate::healing::Healing,
    /// The member's background workers (failure detector, expiry scan).
    pub(crate) workers: bitmountain_worker::Workers,
    /// The placement map allocations draw from; see [`MetaServer::placement_map`].
    placement: Mutex<Option<placement::CachedPlacement>>,
    /// Backups being written ([`backup::MAX_CONCURRENT_BACKUPS`]).
    pub(crate) backup_slots: Arc<tokio::sync::Semaphore>,
    /// One recovery finish at a time (the driver's and `meta recover finish`).
    pub(crate) recovery_lock: tokio::sync::Mutex<()>,
    /// The `meta recover` request read from the data directory at start, until entered.
    pub(crate) pending_recovery: Mutex<Option<recovery::RecoveryRequest>>,
}

/// A placement map and what it was built from.
#[derive(Debug, Clone)]
pub struct MetaServer {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) fn page_size(n: u32) -> usize {
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
                workers: bitmountain_worker::Workers::new(),
                placement: Mutex::new(None),
                backup_slots: Arc::new(tokio::sync::Semaphore::new(backup::MAX_CONCURRENT_BACKUPS)),
                recovery_lock: tokio::sync::Mutex::new(()),
                pending_recovery: Mutex::new(None),
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
}

pub(crate) fn unexpected(a: Applied) -> MetaError {
    MetaError::Corrupt {
        what: format!("unexpected apply result {a:?}"),
    }
}

pub(crate) type Rpc<T> = std::result::Result<Response<T>, Status>;

pub(crate) fn ok<T>(v: T) -> Rpc<T> {
    Ok(Response::new(v))
}
