//! The background fixity pass: every sealed bundle whose shard 0 lies on one of this node's
//! disks is checked once per `--fixity-interval` (default 90 days) — every file read through
//! the degraded-read path and hashed against its ingest digest (`coordinator::fixity`) — and
//! each check is a fixity event in the audit trail (agent `system:fixity`, reported by this
//! node). Shard 0's disk gives every bundle exactly one checking node, so the work spreads as the
//! shards do. A pass takes half the interval (one bundle every half-interval ÷ bundles) and a
//! new one starts every half interval: a bundle that arrives just after a pass listed its bundles
//! is in the next, so no bundle waits longer than one interval. Throttled to
//! `--fixity-bytes-per-sec`. Its position and its last pass's figures survive
//! restarts in `<data>/fixity-pass.json`; the worker's status (in `status --json`) names the
//! oldest check this node vouches for and the failures.
//!
//! A bundle whose shard 0 moves to another node during a pass may be checked twice or wait for
//! the next pass; a node that is down checks nothing until it is back (its status is absent).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bitmountain_meta_client::types::{now_unix_ms, unix_ms_text, Agent};
use bitmountain_meta_client::BundleId;
use bitmountain_worker::{Next, StepError, Worker};
use serde::{Deserialize, Serialize};

use super::Healer;
use crate::limits::SCRUB_META_PAGE;

/// The pass's state file under the node's data directory.
pub const FIXITY_STATE_FILE: &str = "fixity-pass.json";
/// Longest pause between two bundles, so a pass over few bundles still notices new ones.
const MAX_PACE: Duration = Duration::from_secs(3600);

/// Where the pass is (the state file, format 1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PassState {
    format: u32,
    /// When the pass under way started (0: none yet).
    started_unix_ms: u64,
    /// Bundles up to this one (in id order) are done in this pass.
    after: Option<BundleId>,
    checked: u64,
    failed: u64,
    /// The last complete pass: when it started (its oldest check) and what it found.
    previous_started_unix_ms: u64,
    previous_checked: u64,
    previous_failed: u64,
}

/// The background fixity pass of one node.
#[derive(Debug)]
pub struct FixityPass {
    healer: Arc<Healer>,
    path: PathBuf,
    state: PassState,
    /// This pass's bundles still to check, in id order (listed when the pass starts or the node
    /// restarts).
    todo: Option<Vec<BundleId>>,
}

impl FixityPass {
    /// The pass of `healer`'s node, its state kept in `data_dir`.
    pub fn new(healer: Arc<Healer>, data_dir: PathBuf) -> Self {
        let path = data_dir.join(FIXITY_STATE_FILE);
        let state = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        FixityPass {
            healer,
            path,
            state,
            todo: None,
        }
    }

    fn save(&self) {
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec(&self.state)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "fixity pass position not saved");
        }
    }

    /// The sealed bundles whose shard 0 is on this node's disks, in id order, after `after`.
    async fn list(&self) -> Result<Vec<BundleId>, String> {
        let co = &self.healer.coordinator;
        let mut out = Vec::new();
        for disk in co.io.disks().iter() {
            let mut token = Vec::new();
            loop {
                let (page, next) = co
                    .meta
                    .list_disk_bundles(disk.disk_id(), &token, SCRUB_META_PAGE)
                    .await
                    .map_err(|e| format!("listing disk {}: {e}", disk.disk_id()))?;
                out.extend(page.into_iter().filter(|(_, s)| *s == 0).map(|(id, _)| id));
                if next.is_empty() {
                    break;
                }
                token = next;
            }
        }
        out.sort_unstable();
        out.dedup();
        out.retain(|id| self.state.after.is_none_or(|a| *id > a));
        Ok(out)
    }

    /// Checks one bundle and records the event; false when it failed.
    async fn check(&self, id: BundleId) -> bool {
        let co = &self.healer.coordinator;
        // Paced window by window: a large bundle's check must not take a core and the disks
        // for as long as it runs (paced after the check, as it was, it read at full speed).
        match co
            .check_fixity(id, Some(&self.healer.fixity_throttle))
            .await
        {
            Ok(report) => {
                crate::fixity::record(&co.meta, &report, Agent::system("fixity")).await;
                report.failed == 0
            }
            // Deleted since it was listed: nothing to vouch for.
            Err(crate::error::NodeError::UnknownBundle { .. }) => true,
            Err(e) => {
                tracing::warn!(bundle = %id, error = %e, "background fixity check could not run");
                false
            }
        }
    }
}

impl Worker for FixityPass {
    fn name(&self) -> &'static str {
        "fixity"
    }

    fn first_pause(&self) -> Duration {
        // Let the node register and its token table load before the first check.
        Duration::from_secs(5).min(self.healer.config.fixity_interval)
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        // Half the interval per pass: a bundle listed by neither of two passes in a row cannot
        // exist, so each is checked within one interval.
        let interval = self.healer.config.fixity_interval / 2;
        let now = now_unix_ms();
        if self.state.started_unix_ms == 0 {
            self.state = PassState {
                format: 1,
                started_unix_ms: now,
                ..self.state.clone()
            };
        }
        if self.todo.is_none() {
            let todo = self
                .list()
                .await
                .map_err(|e| StepError::new(e, Next::After(Duration::from_secs(10))))?;
            self.todo = Some(todo);
        }
        let todo = self.todo.get_or_insert_with(Vec::new);
        let Some(id) = todo.first().copied() else {
            // The pass is done: the next starts half an interval after this one did.
            let next_start = self.state.started_unix_ms + interval.as_millis() as u64;
            if now < next_start {
                return Ok(Next::After(
                    Duration::from_millis(next_start - now).min(MAX_PACE),
                ));
            }
            self.state = PassState {
                format: 1,
                started_unix_ms: now,
                after: None,
                checked: 0,
                failed: 0,
                previous_started_unix_ms: self.state.started_unix_ms,
                previous_checked: self.state.checked,
                previous_failed: self.state.failed,
            };
            self.todo = None;
            self.save();
            return Ok(Next::After(Duration::ZERO));
        };
        let remaining = todo.len() as u32;
        todo.remove(0);
        let ok = self.check(id).await;
        self.state.after = Some(id);
        self.state.checked += 1;
        if !ok {
            self.state.failed += 1;
        }
        self.save();
        // Spread what is left over what is left of the pass.
        let end = self.state.started_unix_ms + interval.as_millis() as u64;
        let left = Duration::from_millis(end.saturating_sub(now_unix_ms()));
        Ok(Next::After((left / remaining.max(1)).min(MAX_PACE)))
    }

    fn note(&self) -> String {
        let s = &self.state;
        let oldest = if s.previous_started_unix_ms == 0 {
            "no complete pass yet (bundles not checked since ingest may remain)".to_owned()
        } else {
            format!(
                "oldest check {} (last pass: {} bundles, {} failed)",
                unix_ms_text(s.previous_started_unix_ms),
                s.previous_checked,
                s.previous_failed
            )
        };
        format!(
            "pass since {}: {} bundles checked, {} failed; {oldest}",
            unix_ms_text(s.started_unix_ms),
            s.checked,
            s.failed
        )
    }
}
