//! What reaches the driver through its queue, and the proposers waiting for an answer:
//! Raft messages are stepped, proposals appended (those that may share an entry collected and
//! proposed as one), ReadIndex requests registered and released once applied, transport
//! reports passed to raft-rs. A step-down fails everyone still waiting.

use std::sync::mpsc::{SyncSender, TrySendError};

use raft::prelude::{ConfChangeV2, ConfState, Message};
use raft::SnapshotStatus;
use tokio::sync::oneshot;

use super::{Driver, StateMachine, DRIVER_QUEUE_LIMIT};
use crate::batch::SHARED_ENTRY_CONTEXT_V1;
use crate::error::{RaftStoreError, Result};
use crate::transport::{Inbox, Report};

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
pub(super) type Answer<R> = (Pending<R>, Vec<R>, Option<Result<ConfState>>);

pub(super) enum Pending<R> {
    Normal(oneshot::Sender<Result<R>>),
    /// The proposers of a shared entry, in the order of its commands.
    Shared(Vec<oneshot::Sender<Result<R>>>),
    Conf(oneshot::Sender<Result<ConfState>>),
}

impl<R> Pending<R> {
    /// Answers every proposer with the error `e` makes (errors are not `Clone`: they may carry
    /// I/O errors).
    pub(super) fn fail(self, e: impl Fn() -> RaftStoreError) {
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

impl<S: StateMachine> Driver<S> {
    fn step(&mut self, m: Message) {
        if let Err(e) = self.raw.step(m) {
            tracing::debug!(error = %e, "raft step refused a message");
        }
    }

    pub(super) fn handle(&mut self, msg: Msg<S::Response>) {
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
    pub(super) fn propose_shared(&mut self) {
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

    pub(super) fn step_down(&mut self) {
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

    pub(super) fn release_reads(&mut self) {
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

    /// Answers the proposers of applied entries (after the write that holds them).
    pub(super) fn answer(&mut self, answers: Vec<Answer<S::Response>>) {
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
