//! The newest log entries, kept in memory after they are written.
//!
//! raft-rs reads persisted entries back through `Storage::entries` (every committed entry, to
//! apply it, and entries for appends to a follower that are no longer unstable) and asks
//! `Storage::term` for the term of recent indexes (commit checks, append probes). Without a
//! cache each of those is a RocksDB seek or point read plus a protobuf decode of the whole
//! entry, on the driver thread, on every member, every round. The cache holds what was last
//! appended (entry data are reference-counted `Bytes`, so a copy out of it is cheap) and is
//! bounded by [`ENTRY_CACHE_BYTES`]; anything older is read from RocksDB as before.
//!
//! Invariant: every cached entry is exactly the entry stored at its index. The storage keeps it
//! by calling [`EntryCache::append`] after each appended batch is written, [`EntryCache::compact_to`]
//! after compaction and [`EntryCache::clear`] when a snapshot replaces the log.

use std::collections::VecDeque;

use protobuf::Message as _;
use raft::prelude::Entry;

/// Most bytes of entry data (plus a fixed per-entry overhead) the cache holds; older entries
/// are dropped from the front. Large enough for the entries of many rounds under load (a
/// shared entry of a busy round is tens of KiB), small beside a member's memory budget.
pub const ENTRY_CACHE_BYTES: u64 = 16 << 20;

/// Bytes counted per entry beyond its data and context (index, term, type, the deque slot).
const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// Consecutive log entries `[first, last]`, newest last.
#[derive(Debug, Default)]
pub struct EntryCache {
    entries: VecDeque<Entry>,
    bytes: u64,
}

/// Adds `e` to `out` unless that takes the encoded entries past `max_bytes` (`size` is their
/// running total); the first entry is always added. raft-rs's rule for size-limited reads of
/// the log, shared by the cache and the RocksDB read so both cut a range alike. Returns
/// whether `e` was added.
pub(crate) fn push_within(
    out: &mut Vec<Entry>,
    size: &mut u64,
    e: Entry,
    max_bytes: Option<u64>,
) -> bool {
    *size += u64::from(e.compute_size());
    if !out.is_empty() && max_bytes.is_some_and(|m| *size > m) {
        return false;
    }
    out.push(e);
    true
}

fn cost(e: &Entry) -> u64 {
    (e.data.len() + e.context.len()) as u64 + ENTRY_OVERHEAD_BYTES
}

impl EntryCache {
    /// Records entries just written to the log. Entries at or after the first new index are
    /// replaced (a leader overwrote a conflicting suffix); a gap before them empties the cache,
    /// so it always holds one run of consecutive indexes.
    pub fn append(&mut self, new: &[Entry]) {
        let Some(first) = new.first() else {
            return;
        };
        while self.entries.back().is_some_and(|e| e.index >= first.index) {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= cost(&e);
            }
        }
        if self
            .entries
            .back()
            .is_some_and(|e| e.index + 1 != first.index)
        {
            self.clear();
        }
        for e in new {
            assert!(
                self.entries.back().is_none_or(|b| b.index + 1 == e.index),
                "entries appended to the log are consecutive"
            );
            self.bytes += cost(e);
            self.entries.push_back(e.clone());
        }
        while self.bytes > ENTRY_CACHE_BYTES {
            match self.entries.pop_front() {
                Some(e) => self.bytes -= cost(&e),
                None => break,
            }
        }
    }

    /// Drops entries up to and including `index` (compacted away).
    pub fn compact_to(&mut self, index: u64) {
        while self.entries.front().is_some_and(|e| e.index <= index) {
            if let Some(e) = self.entries.pop_front() {
                self.bytes -= cost(&e);
            }
        }
    }

    /// Forgets everything (the log was replaced by a snapshot).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    fn position(&self, index: u64) -> Option<usize> {
        let first = self.entries.front()?.index;
        let at = usize::try_from(index.checked_sub(first)?).ok()?;
        (at < self.entries.len()).then_some(at)
    }

    /// The term of the entry at `index`, if cached.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.position(index).map(|at| self.entries[at].term)
    }

    /// Entries `[low, high)` if all are cached, cut like a read from the log: at least one
    /// entry, then no more than `max_bytes` of encoded entries.
    pub fn slice(&self, low: u64, high: u64, max_bytes: Option<u64>) -> Option<Vec<Entry>> {
        if low >= high {
            return Some(Vec::new());
        }
        let start = self.position(low)?;
        let end = self.position(high - 1)?;
        let mut out = Vec::with_capacity(end - start + 1);
        let mut size = 0u64;
        for e in self.entries.range(start..=end) {
            if !push_within(&mut out, &mut size, e.clone(), max_bytes) {
                break;
            }
        }
        Some(out)
    }

    /// Bytes held (as counted against [`ENTRY_CACHE_BYTES`]).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn entry(index: u64, term: u64, len: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8; len].into(),
            ..Default::default()
        }
    }

    fn indexes(v: &[Entry]) -> Vec<(u64, u64)> {
        v.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn serves_what_was_appended_and_replaces_a_conflicting_suffix() {
        let mut c = EntryCache::default();
        c.append(&(1..=5).map(|i| entry(i, 1, 10)).collect::<Vec<_>>());
        assert_eq!(c.term(3), Some(1));
        assert_eq!(c.term(6), None);
        assert_eq!(c.term(0), None);
        // A new leader overwrites 4..=5 with entries of term 2 and adds 6.
        c.append(&(4..=6).map(|i| entry(i, 2, 10)).collect::<Vec<_>>());
        assert_eq!(
            indexes(&c.slice(2, 7, None).unwrap()),
            vec![(2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
        );
        // Shorter than what was there: the old tail beyond it goes too.
        c.append(&[entry(3, 3, 10)]);
        assert_eq!(c.term(4), None);
        assert_eq!(
            indexes(&c.slice(1, 4, None).unwrap()),
            vec![(1, 1), (2, 1), (3, 3)]
        );
        assert_eq!(c.bytes(), 3 * (10 + ENTRY_OVERHEAD_BYTES));
    }

    #[test]
    fn a_range_not_wholly_cached_is_not_served() {
        let mut c = EntryCache::default();
        c.append(&(10..=12).map(|i| entry(i, 1, 1)).collect::<Vec<_>>());
        assert!(c.slice(9, 12, None).is_none());
        assert!(c.slice(11, 14, None).is_none());
        assert_eq!(c.slice(12, 12, None).map(|v| v.len()), Some(0));
        // A gap (entries after a snapshot) starts the cache over.
        c.append(&[entry(20, 2, 1)]);
        assert_eq!(c.term(12), None);
        assert_eq!(c.term(20), Some(2));
        c.compact_to(20);
        assert_eq!(c.term(20), None);
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn size_limit_cuts_like_a_log_read_and_memory_stays_bounded() {
        let mut c = EntryCache::default();
        c.append(&(1..=4).map(|i| entry(i, 1, 100)).collect::<Vec<_>>());
        let one = u64::from(entry(1, 1, 100).compute_size());
        // At least one entry even when it alone is over the limit.
        assert_eq!(c.slice(1, 5, Some(0)).unwrap().len(), 1);
        assert_eq!(c.slice(1, 5, Some(2 * one)).unwrap().len(), 2);
        assert_eq!(c.slice(1, 5, Some(2 * one + 1)).unwrap().len(), 2);
        let big = (ENTRY_CACHE_BYTES / 4) as usize;
        c.append(&(5..=12).map(|i| entry(i, 1, big)).collect::<Vec<_>>());
        assert!(c.bytes() <= ENTRY_CACHE_BYTES);
        assert_eq!(c.term(12), Some(1), "the newest entries stay");
        assert_eq!(c.term(4), None, "the oldest went first");
    }
}
