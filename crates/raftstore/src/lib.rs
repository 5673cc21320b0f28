//! A Raft replica on RocksDB: raft-rs (`raft` 0.7) for the algorithm, one RocksDB per member for
//! everything it persists, tonic gRPC between members.
//!
//! - [`engine`]: the DB (column families `raft`, `apply`, `sm` sharing one WAL), its key layout,
//!   and [`RaftStorage`], raft-rs's `Storage` on it.
//! - [`driver`]: the one thread that owns the `RawNode` and the [`StateMachine`]; the order of
//!   persist, send and apply is documented there and in `ARCHITECTURE.md ("The metadata group")`.
//!   `driver/mod.rs` is the round (drain the queue, tick, compact, publish status),
//!   `driver/requests.rs` what arrives on the queue and the proposers waiting for answers,
//!   `driver/ready.rs` the handling of one Ready, `driver/apply.rs` applying committed entries.
//! - [`entry_cache`]: the newest log entries in memory; `batch`: several proposals in one shared
//!   entry; `snapshot`: snapshot files (generate, verify, install); [`backup`]: the applied state
//!   written to a file for a backup, and a new group of one restored from one.
//! - [`transport`]: Raft messages over gRPC: `transport/outbound.rs` (envelopes on one stream per
//!   peer), `transport/inbound.rs` (the `RaftTransport` service), `transport/snapshot_stream.rs`
//!   (snapshots on their own RPC), test-only partitions in `transport/mod.rs`.
//! - [`RaftHandle`]: what the services hold: propose, linearizable read barrier (ReadIndex),
//!   membership changes (ConfChangeV2), leader transfer, status.
//!
//! The state machine is generic ([`StateMachine`]); the metadata group's lives in
//! `bitmountain-meta`.

pub mod backup;
mod batch;
pub mod driver;
pub mod engine;
pub mod entry_cache;
pub mod error;
mod snapshot;
pub mod transport;

use std::collections::BTreeMap;
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use raft::prelude::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use raft::RawNode;
use tokio::sync::oneshot;

pub use batch::{MAX_COMMANDS_PER_ENTRY, MAX_SHARED_ENTRY_BYTES};
pub use driver::{ApplyCtx, GroupStatus, StateMachine};
pub use engine::{Engine, Members, RaftStorage, CF_SM};
pub use error::{RaftStoreError, Result};
pub use raft::prelude::ConfState;
pub use rocksdb;
pub use transport::{RaftService, Transport};

use driver::{try_send, Driver, Msg, DRIVER_QUEUE_LIMIT};

/// Default tick interval. With [`DEFAULT_ELECTION_TICKS`] it sets how long followers wait for a
/// dead leader: 50 ms × 12–24 ticks = 0.6–1.2 s, so even an election that needs a second try
/// (two followers standing in the same tick split their votes) ends well inside the 3 s
/// failover budget (with 1–2 s timeouts a second try took it to 3.5 s, docs/benchmarks.md).
pub const DEFAULT_TICK_MS: u64 = 50;
/// Default election timeout in ticks (randomized in [n, 2n)).
pub const DEFAULT_ELECTION_TICKS: usize = 12;
/// Default heartbeat interval in ticks (100 ms: six heartbeats per shortest election timeout,
/// so one or two late ones never start an election).
pub const DEFAULT_HEARTBEAT_TICKS: usize = 2;
/// Default log compaction threshold (applied entries kept in the log).
pub const DEFAULT_COMPACT_LOG_ENTRIES: u64 = 20_000;

/// Tunables of a replica.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    /// Member id (non-zero).
    pub id: u64,
    /// Address other members reach this one at.
    pub address: String,
    /// Tick interval.
    pub tick_ms: u64,
    /// Election timeout in ticks (randomized in [n, 2n)).
    pub election_ticks: usize,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: usize,
    /// Compact the log when more than this many applied entries are in it.
    pub compact_log_entries: u64,
    /// Largest append message (bytes).
    pub max_size_per_msg: u64,
    /// In-flight append messages per follower.
    pub max_inflight_msgs: usize,
    /// Allow test-only partitions through the admin RPC.
    pub fault_injection: bool,
    /// How this member connects to the others (its certificate; plaintext with `--insecure`).
    pub credentials: bitmountain_proto::Credentials,
}

impl RaftConfig {
    /// Defaults: 50 ms ticks, 0.6–1.2 s election timeout, 100 ms heartbeats.
    pub fn new(id: u64, address: String) -> Self {
        Self {
            id,
            address,
            tick_ms: DEFAULT_TICK_MS,
            election_ticks: DEFAULT_ELECTION_TICKS,
            heartbeat_ticks: DEFAULT_HEARTBEAT_TICKS,
            compact_log_entries: DEFAULT_COMPACT_LOG_ENTRIES,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            fault_injection: false,
            credentials: bitmountain_proto::Credentials::insecure(),
        }
    }
}

/// What the services hold to talk to the driver. Cheap to clone.
#[derive(Debug)]
pub struct RaftHandle<R> {
    tx: SyncSender<Msg<R>>,
    status: Arc<RwLock<GroupStatus>>,
    transport: Arc<Transport>,
    id: u64,
}

impl<R> Clone for RaftHandle<R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            status: Arc::clone(&self.status),
            transport: Arc::clone(&self.transport),
            id: self.id,
        }
    }
}

impl<R> std::fmt::Debug for Msg<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl<R: Send + 'static> RaftHandle<R> {
    /// This member's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Latest status published by the driver.
    pub fn status(&self) -> GroupStatus {
        self.status.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// Whether this member led at the driver's last round: [`Self::status`] without copying
    /// it (every allocation and commit asks).
    pub fn is_leader(&self) -> bool {
        self.status.read().map(|g| g.is_leader()).unwrap_or(false)
    }

    /// The `NotLeader` error this member would answer with now.
    pub fn not_leader(&self) -> RaftStoreError {
        let st = self.status();
        RaftStoreError::NotLeader {
            member_id: self.id,
            leader_id: (st.leader_hint != 0).then_some(st.leader_hint),
            leader_address: st.members.get(&st.leader_hint).cloned(),
        }
    }

    /// Proposes a command in an entry of its own; resolves once it is applied on this member
    /// (the leader) with the state machine's response. For commands whose apply calls
    /// [`ApplyCtx::write_earlier`].
    pub async fn propose(&self, data: Vec<u8>) -> Result<R> {
        self.propose_inner(data, false).await
    }

    /// Proposes a command that may share one log entry with other such commands proposed in
    /// the same driver round (fewer entries to persist, send and decode under load); it is
    /// applied and answered on its own all the same. Its apply must not call
    /// [`ApplyCtx::write_earlier`] (asserted).
    pub async fn propose_shared(&self, data: Vec<u8>) -> Result<R> {
        self.propose_inner(data, true).await
    }

    async fn propose_inner(&self, data: Vec<u8>, shared: bool) -> Result<R> {
        let (cb, rx) = oneshot::channel();
        try_send(&self.tx, Msg::Propose { data, shared, cb })?;
        rx.await.map_err(|_| RaftStoreError::Stopped)?
    }

    /// Linearizable read barrier: once it resolves, this member's applied state includes every
    /// write acknowledged before the call. Leader only.
    pub async fn read_index(&self) -> Result<()> {
        let (cb, rx) = oneshot::channel();
        try_send(&self.tx, Msg::ReadIndex { cb })?;
        rx.await.map_err(|_| RaftStoreError::Stopped)?
    }

    /// Proposes a membership change; resolves once applied.
    pub async fn change_membership(&self, cc: ConfChangeV2) -> Result<ConfState> {
        let (cb, rx) = oneshot::channel();
        try_send(&self.tx, Msg::ConfChange { cc, cb })?;
        rx.await.map_err(|_| RaftStoreError::Stopped)?
    }

    /// Adds `id` at `address` as a learner.
    pub async fn add_learner(&self, id: u64, address: &str) -> Result<ConfState> {
        self.change_membership(single_change(
            ConfChangeType::AddLearnerNode,
            id,
            Some(address),
        ))
        .await
    }

    /// Makes `id` a voter (it must be known; its address is kept).
    pub async fn promote(&self, id: u64, address: &str) -> Result<ConfState> {
        self.change_membership(single_change(ConfChangeType::AddNode, id, Some(address)))
            .await
    }

    /// Removes `id` from the group.
    pub async fn remove(&self, id: u64) -> Result<ConfState> {
        self.change_membership(single_change(ConfChangeType::RemoveNode, id, None))
            .await
    }

    /// Asks the leader to hand leadership to `to` and waits until it has (or the timeout).
    pub async fn transfer_leader(&self, to: u64, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let st = self.status();
            if st.leader_id == to {
                return Ok(());
            }
            if st.is_leader() {
                try_send(&self.tx, Msg::TransferLeader { to })?;
            } else if st.leader_id != self.id {
                return Err(self.not_leader());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(RaftStoreError::Timeout {
                    what: format!("leader transfer to member {to}"),
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Test-only: drop Raft traffic to and from these members.
    pub fn set_partition(&self, ids: &[u64]) -> Result<()> {
        self.transport.set_partition(ids)
    }
}

fn single_change(kind: ConfChangeType, id: u64, address: Option<&str>) -> ConfChangeV2 {
    let mut ch = ConfChangeSingle::default();
    ch.set_change_type(kind);
    ch.set_node_id(id);
    let mut cc = ConfChangeV2::default();
    cc.set_changes(vec![ch].into());
    cc.set_transition(ConfChangeTransition::Auto);
    if let Some(a) = address {
        let mut m = BTreeMap::new();
        m.insert(id, a.to_string());
        cc.set_context(driver::encode_context(&m).into());
    }
    cc
}

/// Forwards raft-rs's slog records to `tracing`.
struct TracingDrain;

struct KvString(String);

impl slog::Serializer for KvString {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(
        &self,
        record: &slog::Record<'_>,
        values: &slog::OwnedKVList,
    ) -> std::result::Result<(), slog::Never> {
        use slog::KV as _;
        // raft-rs logs records per message at debug level; formatting their key-values (entries
        // printed as protobuf text) is wasted work when nobody listens, so check the level first.
        let level = match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::Level::ERROR,
            slog::Level::Warning => tracing::Level::WARN,
            slog::Level::Info => tracing::Level::INFO,
            _ => tracing::Level::DEBUG,
        };
        let enabled = match level {
            tracing::Level::ERROR => tracing::enabled!(target: "raft", tracing::Level::ERROR),
            tracing::Level::WARN => tracing::enabled!(target: "raft", tracing::Level::WARN),
            tracing::Level::INFO => tracing::enabled!(target: "raft", tracing::Level::INFO),
            _ => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        };
        if !enabled {
            return Ok(());
        }
        let mut kv = KvString(String::new());
        let _ = record.kv().serialize(record, &mut kv);
        let _ = values.serialize(record, &mut kv);
        match level {
            tracing::Level::ERROR => tracing::error!(target: "raft", "{}{}", record.msg(), kv.0),
            tracing::Level::WARN => tracing::warn!(target: "raft", "{}{}", record.msg(), kv.0),
            tracing::Level::INFO => tracing::info!(target: "raft", "{}{}", record.msg(), kv.0),
            _ => tracing::debug!(target: "raft", "{}{}", record.msg(), kv.0),
        }
        Ok(())
    }
}

/// Starts the replica on an opened, identified engine (see [`prepare`]): spawns the driver
/// thread and returns the handle and the gRPC service other members send Raft messages to.
pub fn start<S: StateMachine>(
    engine: Engine,
    cfg: RaftConfig,
    sm: S,
    rt: tokio::runtime::Handle,
) -> Result<(RaftHandle<S::Response>, RaftService)> {
    let storage = RaftStorage::load(engine.clone())?;
    let (applied, applied_term) = engine.apply_state()?;
    let members = engine.members()?;
    let raft_cfg = raft::Config {
        id: cfg.id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied,
        max_size_per_msg: cfg.max_size_per_msg,
        max_inflight_msgs: cfg.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        read_only_option: raft::ReadOnlyOption::Safe,
        max_uncommitted_size: 256 << 20,
        // Appends queued for one follower in one Ready travel as one message.
        batch_append: true,
        // Followers learn a new commit index from the next append or heartbeat instead of an
        // append of its own: one message, one driver round and one write fewer per entry on
        // every follower (members' CPU per alloc+commit pair 12 % lower, docs/benchmarks.md).
        // Only followers' stale reads see applies a little later; the leader answers proposers
        // as before.
        skip_bcast_commit: true,
        ..Default::default()
    };
    raft_cfg.validate()?;
    let logger = slog::Logger::root(slog::Fuse(TracingDrain), slog::o!("member" => cfg.id));
    let raw = RawNode::new(&raft_cfg, storage, &logger)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(DRIVER_QUEUE_LIMIT);
    let transport = Transport::new(
        cfg.id,
        cfg.address.clone(),
        members.clone(),
        cfg.fault_injection,
        cfg.credentials.clone(),
        rt,
        engine.snap_dir().to_path_buf(),
    );
    transport.set_inbox(Arc::new(tx.clone()));
    let status = Arc::new(RwLock::new(GroupStatus {
        id: cfg.id,
        role: "follower",
        applied,
        members: members.clone(),
        ..Default::default()
    }));
    let id = cfg.id;
    let driver = Driver::new(
        raw,
        sm,
        rx,
        Arc::clone(&transport),
        Arc::clone(&status),
        cfg,
        members,
        (applied, applied_term),
    );
    std::thread::Builder::new()
        .name(format!("raft-driver-{id}"))
        .spawn(move || {
            // A panic in the driver is an invariant violated (or a committed entry this
            // member cannot apply): the whole member stops, loudly, instead of serving on
            // without a Raft loop.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| driver.run())).is_err() {
                eprintln!("fatal: the raft driver of member {id} panicked; stopping the member");
                std::process::exit(70);
            }
        })
        .map_err(|source| RaftStoreError::Io {
            path: "raft driver thread".into(),
            source,
        })?;
    Ok((
        RaftHandle {
            tx,
            status,
            transport: Arc::clone(&transport),
            id,
        },
        RaftService { transport },
    ))
}

/// Opens the data directory and settles the member's identity: on first start records `id`
/// and, with `bootstrap`, writes the initial group; on restart checks `id` (if given) against
/// the stored one. Returns the engine and the member id.
pub fn prepare(
    data_dir: &std::path::Path,
    id: Option<u64>,
    bootstrap: Option<&Members>,
) -> Result<(Engine, u64)> {
    let engine = Engine::open(data_dir)?;
    let id = match (engine.member_id()?, id) {
        (Some(stored), Some(given)) if stored != given => {
            return Err(RaftStoreError::WrongMemberId { stored, given })
        }
        (Some(stored), _) => stored,
        (None, Some(given)) if given != 0 => {
            engine.set_member_id(given)?;
            given
        }
        (None, _) => {
            return Err(RaftStoreError::BadMembership {
                reason: format!(
                    "{} holds no member yet: pass --id (non-zero) on the first start",
                    data_dir.display()
                ),
            })
        }
    };
    if let Some(members) = bootstrap {
        if !engine.is_initialized()? {
            if !members.contains_key(&id) {
                return Err(RaftStoreError::BadMembership {
                    reason: format!("--bootstrap does not name this member ({id})"),
                });
            }
            engine.bootstrap(members)?;
        } else {
            tracing::info!(member = id, "already initialized; --bootstrap ignored");
        }
    }
    Ok((engine, id))
}
