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
//!
//! Where each part lives: the round itself (this file: the loop, ticks, compaction, status),
//! `requests` (what arrives on the queue — Raft messages, proposals, reads, membership changes,
//! transport reports — and the proposers waiting for their answer), `ready` (step 3, the
//! order of persist, send and apply), `apply` (committed entries into the round's batch, the
//! [`StateMachine`] and its [`ApplyCtx`]).

mod apply;
mod ready;
mod requests;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use raft::{RawNode, StateRole};
use rocksdb::WriteBatch;
use tokio::sync::oneshot;

use crate::batch::SharedEntry;
use crate::engine::Members;
use crate::error::{RaftStoreError, Result};
use crate::transport::Transport;
use crate::{RaftConfig, RaftStorage};

pub(crate) use apply::encode_context;
pub use apply::{ApplyCtx, StateMachine};
use requests::Pending;
pub(crate) use requests::{try_send, Msg};

/// Most inbound messages handled before the next Ready.
pub const MAX_MSGS_PER_ROUND: usize = 4096;
/// Bound of the driver's inbound queue, in items: a proposal, a read, a report, or the messages
/// of one envelope from a peer (which raft-rs's flow control bounds: at most
/// `max_inflight_msgs` appends of `max_size_per_msg` unacknowledged per peer).
pub const DRIVER_QUEUE_LIMIT: usize = 16 * 1024;

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
    /// Times this member saw the group's leader change (metrics).
    pub leader_changes: u64,
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
    /// Times `last_leader` changed.
    leader_changes: u64,
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
            leader_changes: 0,
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

    fn set_members(&mut self, members: Members) {
        self.transport.set_members(&members);
        self.members = members;
    }

    /// Writes `batch` to the member's DB; `sync` fsyncs the WAL.
    fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        self.raw.store().engine().write(batch, sync)
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
            leader_changes: self.leader_changes,
        };
        if let Ok(mut g) = self.status.write() {
            *g = st;
        }
    }
}
