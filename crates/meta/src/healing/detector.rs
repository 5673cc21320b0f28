//! The leader's failure detector: heartbeats turned into decisions. A node silent past its
//! grace goes down, a down node heard again comes back, a disk its node reports failed is
//! failed, and such a disk its node reports healthy again (having checked its files) comes
//! back unless it flaps (`rules::disk_return`); each decision is a Raft command (whose apply
//! requeues the shards concerned).

use std::time::{Duration, Instant};

use bitmountain_worker::{Next, StepError, Worker};

use super::{lock, DETECTOR_INTERVAL_MS};
use crate::command::Command;
use crate::error::Result;
use crate::rules;
use crate::server::MetaServer;
use crate::types::{now_unix_ms, DiskState, NodeState};

/// The failure detector as a background worker: one look at the heartbeats every
/// [`DETECTOR_INTERVAL_MS`], acting only while this member leads.
#[derive(Debug)]
pub struct FailureDetector {
    server: MetaServer,
}

impl FailureDetector {
    /// The detector of `server`.
    pub fn new(server: MetaServer) -> Self {
        Self { server }
    }
}

impl Worker for FailureDetector {
    fn name(&self) -> &'static str {
        "failure-detector"
    }

    async fn step(&mut self) -> std::result::Result<Next, StepError> {
        let every = Next::Every(Duration::from_millis(DETECTOR_INTERVAL_MS));
        match self.server.detect_once().await {
            Ok(()) => Ok(every),
            Err(e) => Err(StepError::new(e, every)),
        }
    }

    fn note(&self) -> String {
        leader_note(&self.server)
    }
}

/// What a leader-only worker is doing on this member.
pub(crate) fn leader_note(server: &MetaServer) -> String {
    if server.inner.raft.is_leader() {
        "acting (this member leads)".into()
    } else {
        "idle (acts only on the leader)".into()
    }
}

impl MetaServer {
    /// One look at the heartbeats: nodes silent past their grace go down, nodes heard again
    /// come back, disks their node reports failed are failed. Each decision is a Raft command.
    async fn detect_once(&self) -> Result<()> {
        let healing = &self.inner.healing;
        if !self.inner.raft.is_leader() {
            *lock(&healing.leader_since) = None;
            lock(&healing.leases).clear();
            return Ok(());
        }
        let since = *lock(&healing.leader_since).get_or_insert_with(Instant::now);
        let grace = Duration::from_millis(self.inner.cfg.node_down_grace_ms);
        let mut node_decisions = Vec::new();
        let mut disk_decisions = Vec::new();
        {
            let map = self.inner.store.map();
            let hb = self.heartbeats();
            for n in map.nodes.values() {
                let heard = hb.get(&n.id).and_then(|h| h.at);
                let heard_lately = heard.is_some_and(|at| at.elapsed() < grace);
                // A new leader has heard nobody yet: silence counts from its election.
                let silent_for = heard.unwrap_or(since).max(since).elapsed();
                match n.state {
                    // A draining node that dies is down too: its shards cannot be copied any
                    // more and are rebuilt instead (the drain is restarted by the operator
                    // once it is back).
                    NodeState::Up | NodeState::Draining if silent_for > grace => {
                        node_decisions.push((n.id, NodeState::Down, silent_for))
                    }
                    NodeState::Down if heard_lately => {
                        node_decisions.push((n.id, NodeState::Up, silent_for))
                    }
                    _ => {}
                }
                if let Some(h) = hb.get(&n.id) {
                    for disk in &h.failed {
                        let state = map.disks.get(disk).map(|d| d.state);
                        if matches!(state, Some(DiskState::Ok | DiskState::Draining)) {
                            disk_decisions.push((*disk, DiskState::Failed));
                        }
                    }
                    // A disk comes back once its node, heard lately, reports it healthy and
                    // checked (its placed files looked for; see the node's `heal::returning`).
                    if heard_lately && n.state == NodeState::Up {
                        let back = h.checked.iter().filter(|d| !h.failed.contains(d));
                        for d in back.filter_map(|d| map.disks.get(d)) {
                            if let Some(to) = rules::disk_return(d).filter(|_| d.node_id == n.id) {
                                disk_decisions.push((d.id, to));
                            }
                        }
                    }
                }
            }
        }
        for (node_id, state, silent_for) in node_decisions {
            tracing::warn!(
                node = node_id,
                ?state,
                silent_ms = silent_for.as_millis() as u64,
                "failure detector: node state changes"
            );
            self.propose(Command::SetNodeState {
                node_id,
                state,
                now_ms: now_unix_ms(),
                agent: crate::types::Agent::system("failure-detector"),
            })
            .await?;
        }
        for (disk_id, state) in disk_decisions {
            if state == DiskState::Failed {
                tracing::warn!(
                    disk = disk_id,
                    "failure detector: its node reports the disk failed"
                );
            } else {
                tracing::warn!(
                    disk = disk_id,
                    ?state,
                    "failure detector: its node reports the disk healthy and checked: it returns"
                );
            }
            self.propose(Command::SetDiskState {
                disk_id,
                state,
                now_ms: now_unix_ms(),
                agent: crate::types::Agent::system("failure-detector"),
            })
            .await?;
        }
        Ok(())
    }
}
