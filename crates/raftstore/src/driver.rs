//! The driver: one OS thread that owns the `RawNode`, its storage and the state machine.
//!
//! Every change to Raft state happens on this thread, in this order per loop iteration:
//!
//! 1. receive: drain up to [`MAX_MSGS_PER_ROUND`] inbound messages (raft traffic, proposals,
//!    reads, membership changes) — proposals that arrive together land in one Ready, and those
//!    that may share an entry are proposed as one entry (`batch`);
//! 2. tick when the tick interval has passed;
//! 3. handle the Ready: send the leader's `messages` (safe before persisting), install a
//!    snapshot (from its file, crash-safe, see `snapshot`), apply the committed entries into
//!    one batch with the applied index (the leader writes it unsynced and answers their
//!    proposers at once; a follower keeps it for the next write), persist new entries and hard
//!    state in ONE synced write, then send `persisted_messages` with the light ready's
//!    messages; advance; apply what the light ready commits with its commit index in one more
//!    (unsynced) write;
//! 4. answer ReadIndex waiters whose index is applied; compact the log when it is long.

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use rocksdb::WriteBatch;
use tokio::sync::oneshot;

use crate::batch::{SharedEntry, SHARED_ENTRY_CONTEXT_V1};
use crate::engine::{
    encode_index_term, encode_members, Engine, Members, CF_APPLY, KEY_APPLY_STATE, KEY_MEMBERS,
};
use crate::error::{RaftStoreError, Result};
use crate::transport::{Inbox, Report, Transport};
use crate::{RaftConfig, RaftStorage};

/// Most inbound messages handled before the next Ready.
pub const MAX_MSGS_PER_ROUND: usize = 4096;
/// Bound of the driver's inbound queue, in items: a proposal, a read, a report, or the messages
/// of one envelope from a peer (which raft-rs's flow control bounds: at most
/// `max_inflight_msgs` appends of `max_size_per_msg` unacknowledged per peer).
pub const DRIVER_QUEUE_LIMIT: usize = 16 * 1024;

/// What the state machine sees of one committed entry.
pub struct ApplyCtx<'a> {
    /// Log index of the entry.
    pub index: u64,
    /// Term of the entry.
    pub term: u64,
    /// Writes go here. It also holds the writes of the earlier entries of this round, which
    /// are not in the DB yet: the driver writes the batch once per round, with the applied
    /// index, after [`StateMachine::before_write`].
    pub batch: &'a mut WriteBatch,
    engine: &'a Engine,
    /// The entry before this one (what the stored applied index says once the batch so far
    /// is written).
    earlier: (u64, u64),
    /// Position of the command in a shared entry (0 for an entry of its own).
    position_in_entry: usize,
}

impl<'a> ApplyCtx<'a> {
    /// The context of entry (`index`, `term`) in a round whose writes so far are in `batch`;
    /// `earlier` is the entry before it. The driver builds these; state machines' tests do
    /// too, to apply entries in rounds of their choosing.
    pub fn new(
        index: u64,
        term: u64,
        batch: &'a mut WriteBatch,
        engine: &'a Engine,
        earlier: (u64, u64),
    ) -> Self {
        Self {
            index,
            term,
            batch,
            engine,
            earlier,
            position_in_entry: 0,
        }
    }

    fn at_position(mut self, position_in_entry: usize) -> Self {
        self.position_in_entry = position_in_entry;
        self
    }

    /// Writes the earlier entries' part of the batch to the DB so reads of the DB see them.
    /// Call before adding anything of this entry to the batch, and after adding the state
    /// machine's own deferred writes (as in [`StateMachine::before_write`]).
    ///
    /// Only a command proposed on its own ([`crate::RaftHandle::propose`]) may call this: the
    /// commands before it in a shared entry have no applied index of their own to store.
    pub fn write_earlier(&mut self) -> Result<()> {
        assert!(
            self.position_in_entry == 0,
            "entry {}: a command that writes earlier entries was proposed in a shared entry",
            self.index
        );
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(self.batch);
        batch.put_cf(
            self.engine.cf(CF_APPLY)?,
            KEY_APPLY_STATE,
            encode_index_term(self.earlier.0, self.earlier.1),
        );
        self.engine.write(batch, false)
    }
}

impl std::fmt::Debug for ApplyCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApplyCtx")
            .field("index", &self.index)
            .field("term", &self.term)
            .finish()
    }
}

/// A deterministic state machine driven by committed log entries.
pub trait StateMachine: Send + 'static {
    /// What a proposer receives once its entry is applied.
    type Response: Send + 'static;
    /// Applies one committed command. Must be deterministic: every member applies the same
    /// commands in the same order and must reach the same state, however the entries happen
    /// to be grouped into rounds. Reads of the DB do NOT see the earlier entries of this round
    /// (they are still in `ctx.batch`): keep what they wrote in memory, or call
    /// [`ApplyCtx::write_earlier`] before reading.
    fn apply(&mut self, ctx: ApplyCtx<'_>, command: &[u8]) -> Self::Response;
    /// The driver is about to write the round's batch: add any deferred writes to it and
    /// forget what was kept in memory about unwritten entries.
    fn before_write(&mut self, batch: &mut WriteBatch) {
        let _ = batch;
    }
    /// The state machine column family was replaced by a snapshot; reload any caches.
    fn restored(&mut self);
}

pub(crate) enum Msg<R> {
    Raft(Box<Message>),
    /// The messages of one envelope, in order.
    RaftBatch(Vec<Message>),
    Propose {
        data: Vec<u8>,
        /// Whether the command may share an entry with others of the same round.
        shared: bool,
        cb: oneshot::Sender<Result<R>>,
    },
    ConfChange {
        cc: ConfChangeV2,
        cb: oneshot::Sender<Result<ConfState>>,
    },
    ReadIndex {
        cb: oneshot::Sender<Result<()>>,
    },
    TransferLeader {
        to: u64,
    },
    Report(Report),
}

impl<R: Send> Inbox for SyncSender<Msg<R>> {
    fn deliver(&self, m: Message) -> bool {
        self.try_send(Msg::Raft(Box::new(m))).is_ok()
    }
    fn deliver_all(&self, ms: Vec<Message>) -> bool {
        self.try_send(Msg::RaftBatch(ms)).is_ok()
    }
    fn report(&self, r: Report) {
        let _ = self.try_send(Msg::Report(r));
    }
}

/// A proposer to answer once its round is written: who, and the state machine's or the
/// membership change's result.
type Answer<R> = (Pending<R>, Vec<R>, Option<Result<ConfState>>);

enum Pending<R> {
    Normal(oneshot::Sender<Result<R>>),
    /// The proposers of a shared entry, in the order of its commands.
    Shared(Vec<oneshot::Sender<Result<R>>>),
    Conf(oneshot::Sender<Result<ConfState>>),
}

impl<R> Pending<R> {
    /// Answers every proposer with the error `e` makes (errors are not `Clone`: they may carry
    /// I/O errors).
    fn fail(self, e: impl Fn() -> RaftStoreError) {
        match self {
            Pending::Normal(cb) => {
                let _ = cb.send(Err(e()));
            }
            Pending::Shared(cbs) => {
                for cb in cbs {
                    let _ = cb.send(Err(e()));
                }
            }
            Pending::Conf(cb) => {
                let _ = cb.send(Err(e()));
            }
        }
    }
}

/// Role of a member as raft-rs sees it.
pub fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Leader => "leader",
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::PreCandidate => "pre-candidate",
    }
}

/// A point-in-time view of the member, refreshed by the driver every round.
#[derive(Debug, Clone, Default)]
pub struct GroupStatus {
    /// This member.
    pub id: u64,
    /// "leader", "follower", ...
    pub role: &'static str,
    /// Known leader (0: none).
    pub leader_id: u64,
    /// Where to send writes: the known leader, else the last one heard of (0: none).
    pub leader_hint: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// First index still in the log.
    pub first_index: u64,
    /// Last index in the log.
    pub last_index: u64,
    /// Voters of the applied configuration.
    pub voters: Vec<u64>,
    /// Learners of the applied configuration.
    pub learners: Vec<u64>,
    /// Member addresses.
    pub members: Members,
    /// Leader only: matched index per member.
    pub progress: BTreeMap<u64, u64>,
    /// A snapshot is being installed: the state machine is partly written, so stale reads
    /// must not be served from it.
    pub installing_snapshot: bool,
}

impl GroupStatus {
    /// Whether this member is the leader.
    pub fn is_leader(&self) -> bool {
        self.role == "leader"
    }
}

pub(crate) struct Driver<S: StateMachine> {
    pub raw: RawNode<RaftStorage>,
    pub sm: S,
    pub rx: Receiver<Msg<S::Response>>,
    pub transport: Arc<Transport>,
    pub status: Arc<RwLock<GroupStatus>>,
    pub cfg: RaftConfig,
    pub members: Members,
    pub applied: u64,
    /// Term of the entry at `applied`.
    applied_term: u64,
    pending: BTreeMap<u64, (u64, Pending<S::Response>)>,
    /// Proposals of this round that share one entry, and who to answer.
    shared: SharedEntry,
    shared_cbs: Vec<oneshot::Sender<Result<S::Response>>>,
    reads_pending: HashMap<u64, oneshot::Sender<Result<()>>>,
    reads_waiting: Vec<(u64, oneshot::Sender<Result<()>>)>,
    next_read_ctx: u64,
    was_leader: bool,
    /// The last leader this member heard of (kept through elections for redirect hints).
    last_leader: u64,
}

fn fatal(e: RaftStoreError) -> ! {
    tracing::error!(error = %e, "fatal storage error; stopping the member");
    eprintln!("fatal: {e}");
    std::process::exit(70)
}

impl<S: StateMachine> Driver<S> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        raw: RawNode<RaftStorage>,
        sm: S,
        rx: Receiver<Msg<S::Response>>,
        transport: Arc<Transport>,
        status: Arc<RwLock<GroupStatus>>,
        cfg: RaftConfig,
        members: Members,
        (applied, applied_term): (u64, u64),
    ) -> Self {
        Self {
            raw,
            sm,
            rx,
            transport,
            status,
            cfg,
            members,
            applied,
            applied_term,
            pending: BTreeMap::new(),
            shared: SharedEntry::default(),
            shared_cbs: Vec::new(),
            reads_pending: HashMap::new(),
            reads_waiting: Vec::new(),
            next_read_ctx: 1,
            was_leader: false,
            last_leader: 0,
        }
    }

    pub fn run(mut self) {
        let tick = Duration::from_millis(self.cfg.tick_ms.max(1));
        let mut next_tick = Instant::now() + tick;
        self.publish_status();
        loop {
            let timeout = next_tick.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(timeout) {
                Ok(msg) => {
                    self.handle(msg);
                    for _ in 0..MAX_MSGS_PER_ROUND {
                        match self.rx.try_recv() {
                            Ok(m) => self.handle(m),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.propose_shared();
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                next_tick = now + tick;
                if let Err(e) = self.maybe_compact() {
                    fatal(e);
                }
            }
            if let Err(e) = self.on_ready() {
                fatal(e);
            }
            self.publish_status();
        }
    }

    fn leader_hint(&self) -> u64 {
        let l = self.raw.raft.leader_id;
        let l = if l != 0 { l } else { self.last_leader };
        if l == self.cfg.id && self.raw.raft.state != StateRole::Leader {
            0
        } else {
            l
        }
    }

    fn not_leader(&self) -> RaftStoreError {
        let leader = self.leader_hint();
        RaftStoreError::NotLeader {
            member_id: self.cfg.id,
            leader_id: (leader != 0).then_some(leader),
            leader_address: self.members.get(&leader).cloned(),
        }
    }

    fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn step(&mut self, m: Message) {
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, "raft step refused a message");
        }
    }

    fn handle(&mut self, msg: Msg<S::Response>) {
        match msg {
            Msg::Raft(m) => self.step(*m),
            Msg::RaftBatch(ms) => {
                for m in ms {
                    self.step(m);
                }
            }
            Msg::Propose { data, shared, cb } => {
                if !self.is_leader() {
                    let _ = cb.send(Err(self.not_leader()));
                    return;
                }
                if shared {
                    if self.shared.is_full() {
                        self.propose_shared();
                    }
                    self.shared.push(&data);
                    self.shared_cbs.push(cb);
                    return;
                }
                // Commands keep their arrival order in the log.
                self.propose_shared();
                match self.raw.propose(vec![], data) {
                    Ok(()) => {
                        let idx = self.raw.raft.raft_log.last_index();
                        self.pending
                            .insert(idx, (self.raw.raft.term, Pending::Normal(cb)));
                    }
                    Err(e) => {
                        let _ = cb.send(Err(e.into()));
                    }
                }
            }
            Msg::ConfChange { cc, cb } => {
                if !self.is_leader() {
                    let _ = cb.send(Err(self.not_leader()));
                    return;
                }
                self.propose_shared();
                let before = self.raw.raft.raft_log.last_index();
                match self.raw.propose_conf_change(vec![], cc) {
                    Ok(()) => {
                        let idx = self.raw.raft.raft_log.last_index();
                        if idx == before {
                            let _ = cb.send(Err(RaftStoreError::BadMembership {
                                reason: "proposal was not appended".into(),
                            }));
                        } else {
                            self.pending
                                .insert(idx, (self.raw.raft.term, Pending::Conf(cb)));
                        }
                    }
                    Err(e) => {
                        let _ = cb.send(Err(RaftStoreError::BadMembership {
                            reason: e.to_string(),
                        }));
                    }
                }
            }
            Msg::ReadIndex { cb } => {
                if !self.is_leader() {
                    let _ = cb.send(Err(self.not_leader()));
                    return;
                }
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                self.raw.read_index(ctx.to_be_bytes().to_vec());
                self.reads_pending.insert(ctx, cb);
            }
            Msg::TransferLeader { to } => {
                if self.is_leader() {
                    self.raw.transfer_leader(to);
                }
            }
            Msg::Report(Report::Unreachable(id)) => self.raw.report_unreachable(id),
            Msg::Report(Report::Snapshot { to, ok }) => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(to, status);
            }
        }
    }

    /// Proposes the commands collected for a shared entry as one entry.
    fn propose_shared(&mut self) {
        if self.shared.is_empty() {
            return;
        }
        let data = self.shared.take();
        let cbs = std::mem::take(&mut self.shared_cbs);
        if !self.is_leader() {
            Pending::<S::Response>::Shared(cbs).fail(|| self.not_leader());
            return;
        }
        match self.raw.propose(SHARED_ENTRY_CONTEXT_V1.to_vec(), data) {
            Ok(()) => {
                let idx = self.raw.raft.raft_log.last_index();
                self.pending
                    .insert(idx, (self.raw.raft.term, Pending::Shared(cbs)));
            }
            Err(e) => {
                // raft-rs refuses a proposal only by dropping it (leader transfer under way,
                // too much uncommitted); the proposers retry.
                tracing::debug!(error = %e, commands = cbs.len(), "shared entry not proposed");
                Pending::<S::Response>::Shared(cbs)
                    .fail(|| RaftStoreError::Raft(raft::Error::ProposalDropped));
            }
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            if ss.leader_id != 0 {
                self.last_leader = ss.leader_id;
            }
            let leader = ss.raft_state == StateRole::Leader;
            if self.was_leader && !leader {
                self.step_down();
            }
            self.was_leader = leader;
            tracing::info!(
                member = self.cfg.id,
                leader = ss.leader_id,
                role = role_name(ss.raft_state),
                term = self.raw.raft.term,
                "raft role changed"
            );
        }
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        if *ready.snapshot() != Snapshot::default() {
            let snap = ready.snapshot().clone();
            if let Ok(mut g) = self.status.write() {
                g.installing_snapshot = true;
            }
            let members = self.raw.mut_store().apply_snapshot(&snap)?;
            self.applied = snap.get_metadata().index;
            self.applied_term = snap.get_metadata().term;
            self.set_members(members);
            self.sm.restored();
            tracing::info!(
                member = self.cfg.id,
                index = self.applied,
                "installed snapshot"
            );
        }
        for rs in ready.take_read_states() {
            let ctx = u64::from_be_bytes(rs.request_ctx.as_slice().try_into().unwrap_or_default());
            if let Some(cb) = self.reads_pending.remove(&ctx) {
                self.reads_waiting.push((rs.index, cb));
            }
        }
        // The committed entries' state-machine changes and applied index go in one batch. On
        // the leader it is written on its own (unsynced) and its proposers answered at once,
        // before the fsync of the new entries below. A follower has no one waiting, so the
        // same batch also takes the new entries and the hard state: one write and one fsync per
        // round (with `skip_bcast_commit` a follower's round typically has both).
        let mut batch = WriteBatch::default();
        let mut answers = self.apply_entries(ready.take_committed_entries(), &mut batch)?;
        if self.is_leader() && !batch.is_empty() {
            self.write(std::mem::take(&mut batch), false)?;
            self.answer(std::mem::take(&mut answers));
        }
        let mut must_sync = ready.must_sync();
        if !ready.entries().is_empty() {
            self.raw
                .store()
                .append_to_batch(ready.entries(), &mut batch)?;
            must_sync = true;
        }
        if let Some(hs) = ready.hs() {
            let hs = hs.clone();
            self.raw.mut_store().set_hard_state(&hs, &mut batch)?;
        }
        if !batch.is_empty() {
            self.write(batch, must_sync)?;
            let entries = ready.take_entries();
            self.raw.mut_store().appended(&entries);
        }
        self.answer(answers);
        // Persisted messages (votes, append responses) go out only now that the write is
        // durable, together with the light ready's (one envelope per peer instead of two).
        let mut out = ready.take_persisted_messages();
        let mut light = self.raw.advance(ready);
        out.extend(light.take_messages());
        self.transport.send(out);
        // The light ready: a new commit index (kept with the applied index it allows; a lower
        // stored commit index is safe, see `RaftStorage::load`) and what it commits.
        let mut batch = WriteBatch::default();
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit, &mut batch)?;
        }
        let answers = self.apply_entries(light.take_committed_entries(), &mut batch)?;
        if !batch.is_empty() {
            self.write(batch, false)?;
        }
        self.answer(answers);
        self.raw.advance_apply_to(self.applied);
        self.release_reads();
        Ok(())
    }

    /// Writes `batch` to the member's DB; `sync` fsyncs the WAL.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.raw.store().engine().write(batch, sync)
    }

    fn step_down(&mut self) {
        Pending::<S::Response>::Shared(std::mem::take(&mut self.shared_cbs))
            .fail(|| self.not_leader());
        self.shared.take();
        for (_, (_, p)) in std::mem::take(&mut self.pending) {
            p.fail(|| self.not_leader());
        }
        for (_, cb) in self.reads_pending.drain() {
            let _ = cb.send(Err(RaftStoreError::NotLeader {
                member_id: self.cfg.id,
                leader_id: None,
                leader_address: None,
            }));
        }
        for (_, cb) in self.reads_waiting.drain(..) {
            let _ = cb.send(Err(RaftStoreError::NotLeader {
                member_id: self.cfg.id,
                leader_id: None,
                leader_address: None,
            }));
        }
    }

    fn release_reads(&mut self) {
        if self.reads_waiting.is_empty() {
            return;
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_waiting)
            .into_iter()
            .partition(|(idx, _)| *idx <= applied);
        self.reads_waiting = waiting;
        for (_, cb) in ready {
            let _ = cb.send(Ok(()));
        }
    }

    fn set_members(&mut self, members: Members) {
        self.transport.set_members(&members);
        self.members = members;
    }

    /// Applies a run of committed entries as one round: their writes and the applied index go
    /// into `batch`, which the caller writes once. The caller answers the proposers (the
    /// returned answers) only after that write, so whatever they do next sees the state their
    /// answer describes.
    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        batch: &mut WriteBatch,
    ) -> Result<Vec<Answer<S::Response>>> {
        let mut answers: Vec<Answer<S::Response>> = Vec::new();
        if entries.is_empty() {
            return Ok(answers);
        }
        let engine = self.raw.store().engine().clone();
        let apply_cf = engine.cf(CF_APPLY)?;
        let mut last = None;
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            let mut responses = Vec::new();
            let mut conf = None;
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    let commands = if e.get_context() == SHARED_ENTRY_CONTEXT_V1 {
                        crate::batch::decode(e.index, e.get_data())?
                    } else if e.get_data().is_empty() {
                        Vec::new() // a new leader's empty entry
                    } else {
                        vec![e.get_data()]
                    };
                    for (position, command) in commands.into_iter().enumerate() {
                        let ctx = ApplyCtx::new(
                            e.index,
                            e.term,
                            batch,
                            &engine,
                            (self.applied, self.applied_term),
                        );
                        responses.push(self.sm.apply(ctx.at_position(position), command));
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    conf = Some(self.apply_conf_change(&e, batch)?);
                }
            }
            self.applied = e.index;
            self.applied_term = e.term;
            last = Some((e.index, e.term));
            // Anything pending below this index can no longer be answered by its own entry.
            while let Some((&idx, _)) = self.pending.first_key_value() {
                if idx >= e.index {
                    break;
                }
                if let Some((term, p)) = self.pending.remove(&idx) {
                    p.fail(|| RaftStoreError::ProposalDropped { index: idx, term });
                }
            }
            if let Some((term, p)) = self.pending.remove(&e.index) {
                if term != e.term {
                    p.fail(|| RaftStoreError::ProposalDropped {
                        index: e.index,
                        term,
                    });
                } else {
                    answers.push((p, responses, conf));
                }
            }
        }
        if let Some((index, term)) = last {
            self.sm.before_write(batch);
            batch.put_cf(apply_cf, KEY_APPLY_STATE, encode_index_term(index, term));
        }
        Ok(answers)
    }

    /// Answers the proposers of applied entries (after the write that holds them).
    fn answer(&mut self, answers: Vec<Answer<S::Response>>) {
        for answer in answers {
            match answer {
                (Pending::Normal(cb), mut responses, _) if responses.len() == 1 => {
                    if let Some(r) = responses.pop() {
                        let _ = cb.send(Ok(r));
                    }
                }
                (Pending::Shared(cbs), responses, _) => {
                    // Same index and term: this is the entry this leader proposed.
                    assert_eq!(cbs.len(), responses.len(), "shared entry answered in part");
                    for (cb, r) in cbs.into_iter().zip(responses) {
                        let _ = cb.send(Ok(r));
                    }
                }
                (Pending::Conf(cb), _, Some(r)) => {
                    let _ = cb.send(r);
                }
                (p, _, _) => p.fail(|| RaftStoreError::BadMembership {
                    reason: "another membership change is still in progress; retry when it has been applied".into(),
                }),
            }
        }
    }

    /// Applies a membership change entry; its conf state and addresses go into `batch`.
    fn apply_conf_change(
        &mut self,
        e: &Entry,
        batch: &mut WriteBatch,
    ) -> Result<Result<ConfState>> {
        let engine = self.raw.store().engine().clone();
        let apply_cf = engine.cf(CF_APPLY)?;
        let cc: ConfChangeV2 = if e.get_entry_type() == EntryType::EntryConfChange {
            let mut v1 = ConfChange::default();
            v1.merge_from_bytes(e.get_data())
                .map_err(|err| RaftStoreError::Corrupt {
                    what: format!("conf change at {}: {err}", e.index),
                })?;
            raft_proto::ConfChangeI::into_v2(v1)
        } else {
            let mut v2 = ConfChangeV2::default();
            v2.merge_from_bytes(e.get_data())
                .map_err(|err| RaftStoreError::Corrupt {
                    what: format!("conf change at {}: {err}", e.index),
                })?;
            v2
        };
        match self.raw.apply_conf_change(&cc) {
            Ok(cs) => {
                let mut members = self.members.clone();
                let addrs = parse_context(cc.get_context());
                for ch in cc.get_changes() {
                    match ch.get_change_type() {
                        ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                            if let Some(a) = addrs.get(&ch.node_id) {
                                members.insert(ch.node_id, a.clone());
                            }
                        }
                        ConfChangeType::RemoveNode => {
                            members.remove(&ch.node_id);
                        }
                    }
                }
                self.raw.mut_store().set_conf_state(cs.clone(), batch)?;
                batch.put_cf(apply_cf, KEY_MEMBERS, encode_members(&members));
                tracing::info!(member = self.cfg.id, index = e.index, voters = ?cs.voters, learners = ?cs.learners, "applied membership change");
                self.set_members(members);
                Ok(Ok(cs))
            }
            Err(err) => {
                tracing::warn!(index = e.index, error = %err, "membership change rejected at apply");
                Ok(Err(RaftStoreError::BadMembership {
                    reason: err.to_string(),
                }))
            }
        }
    }

    fn maybe_compact(&mut self) -> Result<()> {
        let threshold = self.cfg.compact_log_entries.max(1);
        let truncated = self.raw.store().truncated_index();
        if self.applied.saturating_sub(truncated) < threshold {
            return Ok(());
        }
        let mut to = self.applied.saturating_sub(threshold / 2);
        if self.is_leader() {
            // Keep what active followers still need, unless they are far behind.
            let me = self.cfg.id;
            let min_active = self
                .raw
                .raft
                .prs()
                .iter()
                .filter(|(id, pr)| **id != me && pr.recent_active)
                .map(|(_, pr)| pr.matched)
                .min()
                .unwrap_or(self.applied);
            to = to.min(min_active);
            if self.applied.saturating_sub(min_active) > threshold * 4 {
                to = self.applied.saturating_sub(threshold / 2);
            }
        }
        if to > truncated {
            self.raw.mut_store().compact(to)?;
            tracing::debug!(member = self.cfg.id, to, "compacted raft log");
        }
        Ok(())
    }

    fn publish_status(&self) {
        let r = &self.raw.raft;
        let conf = r.prs().conf();
        let mut voters: Vec<u64> = conf.voters().ids().iter().collect();
        voters.sort_unstable();
        let mut learners: Vec<u64> = conf.learners().iter().copied().collect();
        learners.sort_unstable();
        let progress = if r.state == StateRole::Leader {
            r.prs().iter().map(|(id, pr)| (*id, pr.matched)).collect()
        } else {
            BTreeMap::new()
        };
        let st = GroupStatus {
            id: self.cfg.id,
            role: role_name(r.state),
            leader_id: r.leader_id,
            leader_hint: self.leader_hint(),
            term: r.term,
            commit: r.raft_log.committed,
            applied: self.applied,
            first_index: self.raw.store().truncated_index() + 1,
            last_index: r.raft_log.last_index(),
            voters,
            learners,
            members: self.members.clone(),
            progress,
            installing_snapshot: false,
        };
        if let Ok(mut g) = self.status.write() {
            *g = st;
        }
    }
}

/// Conf change context: `id=address` pairs separated by `;`.
pub(crate) fn encode_context(addrs: &BTreeMap<u64, String>) -> Vec<u8> {
    addrs
        .iter()
        .map(|(id, a)| format!("{id}={a}"))
        .collect::<Vec<_>>()
        .join(";")
        .into_bytes()
}

fn parse_context(ctx: &[u8]) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    if let Ok(s) = std::str::from_utf8(ctx) {
        for part in s.split(';') {
            if let Some((id, addr)) = part.split_once('=') {
                if let Ok(id) = id.parse() {
                    out.insert(id, addr.to_string());
                }
            }
        }
    }
    out
}

/// Sends to the driver without blocking; maps a full queue to `Overloaded`.
pub(crate) fn try_send<R>(tx: &SyncSender<Msg<R>>, m: Msg<R>) -> Result<()> {
    match tx.try_send(m) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => Err(RaftStoreError::Overloaded {
            queue: "raft driver",
            limit: DRIVER_QUEUE_LIMIT,
        }),
        Err(TrySendError::Disconnected(_)) => Err(RaftStoreError::Stopped),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::engine::CF_SM;

    #[test]
    fn write_earlier_writes_the_round_so_far_with_the_entry_before() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        batch.put_cf(engine.cf(CF_SM).unwrap(), b"k", b"v");
        let mut ctx = ApplyCtx::new(5, 2, &mut batch, &engine, (4, 2));
        ctx.write_earlier().unwrap();
        assert!(batch.is_empty());
        assert_eq!(engine.apply_state().unwrap(), (4, 2));
    }

    #[test]
    #[should_panic(expected = "proposed in a shared entry")]
    fn write_earlier_inside_a_shared_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        batch.put_cf(engine.cf(CF_SM).unwrap(), b"k", b"v");
        let mut ctx = ApplyCtx::new(5, 2, &mut batch, &engine, (4, 2)).at_position(1);
        let _ = ctx.write_earlier();
    }
}
