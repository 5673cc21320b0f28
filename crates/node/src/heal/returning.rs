//! Disks coming back. A disk that fails its health check (it dropped off its bus, was
//! unmounted, its identity file is gone) is reported failed and the group rebuilds its shards
//! elsewhere. When it passes the check again, its files may not be what the placement says:
//! shards written while it was gone went to the bare mount point and are hidden again, files
//! may have been lost with it. So before the group takes it back, this node looks for the file
//! of every shard the placement still puts there and reports the missing ones as damage (which
//! queues their repair); only then does it name the disk in its heartbeat's checked disks, and
//! the group's failure detector returns it to the state it had (`rules::disk_return` in the
//! meta crate, which also keeps a flapping disk failed). The check reads the file listing and
//! the metadata, not the shards' bytes: the scrubber and every read check those.
//!
//! [`DiskReturns`] is the bookkeeping (pure, shared with the heartbeat worker);
//! [`ReturnChecker`] the background worker that runs the checks.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitmountain_worker::{Next, StepError, Worker};

use super::scrub::report_missing_placed;
use super::Healer;
use crate::limits::DISK_RETURN_CHECK_INTERVAL_MS;
use crate::shard_service::blocking;

/// Which disks need a return check and which passed one.
#[derive(Debug, Default)]
pub struct DiskReturns {
    state: Mutex<ReturnState>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ReturnState {
    /// Failed the health check in this process and not checked since.
    suspect: BTreeSet<u64>,
    /// The group holds these failed on this node's report (from the last heartbeat answer).
    listed: BTreeSet<u64>,
    /// Passed a return check since they last failed the health check.
    checked: BTreeSet<u64>,
}

impl DiskReturns {
    fn state(&self) -> std::sync::MutexGuard<'_, ReturnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The disk failed its health check: whatever was checked before no longer holds.
    pub fn failed_health_check(&self, disk_id: u64) {
        let mut s = self.state();
        s.suspect.insert(disk_id);
        s.checked.remove(&disk_id);
    }

    /// The disks the group holds failed on this node's report (each heartbeat answer says).
    pub fn listed_by_group(&self, disk_ids: &[u64]) {
        self.state().listed = disk_ids.iter().copied().collect();
    }

    /// Disks that need a return check: those that failed here, and those the group holds
    /// failed that were not checked since (after a restart this node knows only the group's
    /// list).
    pub fn pending(&self) -> Vec<u64> {
        let s = self.state();
        let unchecked = s.listed.difference(&s.checked);
        s.suspect
            .iter()
            .chain(unchecked)
            .copied()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The disk passed a return check.
    pub fn passed(&self, disk_id: u64) {
        let mut s = self.state();
        s.suspect.remove(&disk_id);
        s.checked.insert(disk_id);
    }

    /// Disks to name as checked in the heartbeat: those the group lists that passed.
    pub fn checked_listed(&self) -> Vec<u64> {
        let s = self.state();
        s.listed.intersection(&s.checked).copied().collect()
    }
}

/// The worker that checks returning disks.
#[derive(Debug)]
pub struct ReturnChecker {
    healer: Arc<Healer>,
    last: String,
}

impl ReturnChecker {
    pub fn new(healer: Arc<Healer>) -> Self {
        ReturnChecker {
            healer,
            last: "no disk has come back".into(),
        }
    }

    /// Checks one disk if it is healthy again; returns the missing shards it reported, or
    /// `None` when the disk still fails its health check or this node does not serve it.
    async fn check(&self, disk_id: u64) -> crate::error::Result<Option<u64>> {
        // A disk the group lists that this node does not serve (started without it) waits.
        let Ok(disk) = self.healer.coordinator.io.disks().get(disk_id) else {
            return Ok(None);
        };
        let listed = {
            let disk = Arc::clone(&disk);
            blocking(move || {
                if disk.check_health().is_err() {
                    return Ok(None);
                }
                Ok(Some(disk.list_shards()?))
            })
            .await?
        };
        let Some(listed) = listed else {
            return Ok(None);
        };
        let present: HashSet<_> = listed.iter().map(|s| (s.bundle, s.shard)).collect();
        let reason = "the shard file is missing after the disk came back";
        let missing = report_missing_placed(&self.healer, &disk, &present, reason).await?;
        Ok(Some(missing))
    }
}

impl Worker for ReturnChecker {
    fn name(&self) -> &'static str {
        "disk-return"
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        let every = Next::Every(Duration::from_millis(DISK_RETURN_CHECK_INTERVAL_MS));
        let returns = Arc::clone(&self.healer.returns);
        let mut failed = None;
        for disk_id in returns.pending() {
            match self.check(disk_id).await {
                Ok(Some(missing)) => {
                    tracing::warn!(
                        disk = disk_id,
                        missing,
                        "the disk is healthy again and its placed files were looked for; \
                         missing ones reported for repair"
                    );
                    self.last =
                        format!("disk {disk_id} came back, {missing} placed shards missing");
                    returns.passed(disk_id);
                }
                Ok(None) => {}
                // The others are still checked; the step reports the first failure.
                Err(e) => {
                    tracing::warn!(disk = disk_id, error = %e, "return check of the disk failed");
                    failed.get_or_insert(format!("checking disk {disk_id}, which came back: {e}"));
                }
            }
        }
        match failed {
            Some(e) => Err(StepError::new(e, every)),
            None => Ok(every),
        }
    }

    fn note(&self) -> String {
        self.last.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_is_checked_after_each_failure_and_named_only_while_the_group_lists_it() {
        let r = DiskReturns::default();
        assert!(r.pending().is_empty());
        r.failed_health_check(7);
        assert_eq!(r.pending(), vec![7], "a disk that failed here is checked");
        assert!(r.checked_listed().is_empty());
        r.passed(7);
        assert!(r.pending().is_empty());
        assert!(
            r.checked_listed().is_empty(),
            "the group does not hold it failed"
        );
        r.listed_by_group(&[7]);
        assert_eq!(r.checked_listed(), vec![7]);
        r.failed_health_check(7);
        assert!(
            r.checked_listed().is_empty(),
            "a new failure voids the check"
        );
        assert_eq!(r.pending(), vec![7]);
    }

    #[test]
    fn after_a_restart_the_groups_list_is_what_needs_checking() {
        let r = DiskReturns::default();
        r.listed_by_group(&[3, 9]);
        assert_eq!(r.pending(), vec![3, 9]);
        r.passed(9);
        assert_eq!(r.pending(), vec![3]);
        assert_eq!(r.checked_listed(), vec![9]);
        r.listed_by_group(&[3]);
        assert!(r.checked_listed().is_empty(), "9 is back: nothing to name");
    }
}
