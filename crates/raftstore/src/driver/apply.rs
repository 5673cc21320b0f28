//! Applying committed entries: the [`StateMachine`] trait, the [`ApplyCtx`] each command is
//! applied with, a run of entries into one batch with the applied index, membership changes
//! and the conf change context that carries new members' addresses.

use std::collections::BTreeMap;

use protobuf::Message as _;
use raft::prelude::{ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};
use rocksdb::WriteBatch;

use super::requests::Answer;
use super::Driver;
use crate::batch::SHARED_ENTRY_CONTEXT_V1;
use crate::engine::{
    encode_index_term, encode_members, Engine, CF_APPLY, KEY_APPLY_STATE, KEY_MEMBERS,
};
use crate::error::{RaftStoreError, Result};

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

    pub(super) fn at_position(mut self, position_in_entry: usize) -> Self {
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

impl<S: StateMachine> Driver<S> {
    /// Applies a run of committed entries as one round: their writes and the applied index go
    /// into `batch`, which the caller writes once. The caller answers the proposers (the
    /// returned answers) only after that write, so whatever they do next sees the state their
    /// answer describes.
    pub(super) fn apply_entries(
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
