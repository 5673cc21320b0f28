//! Step 3 of a driver round: handling one Ready, in the order that keeps a member's promises
//! (see the module overview and `ARCHITECTURE.md`, "Order of operations in one driver round").

use raft::prelude::Snapshot;
use raft::StateRole;
use rocksdb::WriteBatch;

use super::{role_name, Driver, StateMachine};
use crate::error::Result;

impl<S: StateMachine> Driver<S> {
    pub(super) fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            if ss.leader_id != 0 {
                if ss.leader_id != self.last_leader {
                    self.leader_changes += 1;
                }
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
}
