//! The history of a chaos run: every operation a client began, with when it began and ended
//! (milliseconds since the run's start) and what came back. The checker judges only this and
//! the state read after healing.
//!
//! A listing names every bundle of the run, so an hour's listings named whole would hold
//! hundreds of millions of ids (the second 60-minute soak reached 22 GB). Each distinct
//! (bundle, tag) a listing names is stored once ([`History::listed_items`]); a listing is a bit
//! set over them, about 2 KB for 15,000 bundles.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// One file of an upload: its bytes are `pseudo_random_bytes(seed, len)`, so the history names
/// them without holding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub path: String,
    pub seed: u64,
    pub len: usize,
}

/// What a client asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// An upload labelled `chaos-op=<tag>` (unique per upload: a listing names the upload a
    /// bundle came from even when its client never learned the id).
    Put {
        tag: String,
        files: Vec<FileSpec>,
    },
    Delete {
        bundle: String,
    },
    /// Read one file of a bundle.
    Read {
        bundle: String,
        path: String,
    },
    Stat {
        bundle: String,
    },
    List,
}

/// What came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An upload acknowledged with its bundle id.
    Put { bundle: String },
    /// A delete acknowledged.
    Deleted,
    /// A read answered: whether its bytes were the uploaded ones.
    Read { same_bytes: bool },
    /// A stat answered that the bundle exists (`true`) or `unknown_bundle` (`false`).
    Exists(bool),
    /// A listing: every bundle of the run with its upload's tag, as items of
    /// [`Recorded::items`].
    Listed(ItemSet),
    /// Refused or unreachable with nothing changed (reads, stats, listings).
    Failed { error: String },
    /// The client cannot know whether it took effect (an upload or delete that errored).
    Indeterminate { error: String },
}

/// One operation, begun and ended.
#[derive(Debug, Clone)]
pub struct Entry {
    pub client: usize,
    pub op: Op,
    pub start_ms: u64,
    pub end_ms: u64,
    pub outcome: Outcome,
}

/// A (bundle id, upload tag) pair some listing named.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListedItem {
    pub bundle: String,
    pub tag: String,
}

/// A set of item numbers (indices into [`Recorded::items`]).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ItemSet {
    words: Vec<u64>,
}

impl std::fmt::Debug for ItemSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bundles", self.len())
    }
}

impl ItemSet {
    pub fn insert(&mut self, item: usize) {
        let word = item / 64;
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << (item % 64);
    }

    pub fn contains(&self, item: usize) -> bool {
        self.words
            .get(item / 64)
            .is_some_and(|w| w & (1 << (item % 64)) != 0)
    }

    /// The item numbers, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i * 64 + b)
        })
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The finished history: every entry in the order they ended, and the items its listings name.
#[derive(Debug, Default)]
pub struct Recorded {
    pub entries: Vec<Entry>,
    pub items: Vec<ListedItem>,
}

/// Interns listing items: each distinct (bundle, tag) gets the next number.
#[derive(Debug, Default)]
pub struct Items {
    numbers: HashMap<ListedItem, usize>,
    items: Vec<ListedItem>,
}

impl Items {
    /// The set of these items, numbering the new ones.
    pub fn set(&mut self, listed: impl IntoIterator<Item = ListedItem>) -> ItemSet {
        let mut set = ItemSet::default();
        for item in listed {
            let next = self.items.len();
            let n = *self.numbers.entry(item.clone()).or_insert(next);
            if n == next {
                self.items.push(item);
            }
            set.insert(n);
        }
        set
    }

    pub fn items(&self) -> &[ListedItem] {
        &self.items
    }

    pub fn into_items(self) -> Vec<ListedItem> {
        self.items
    }
}

/// The shared history the clients append to.
#[derive(Debug)]
pub struct History {
    started: Instant,
    entries: Mutex<Vec<Entry>>,
    items: Mutex<Items>,
}

impl History {
    pub fn new(started: Instant) -> History {
        History {
            started,
            entries: Mutex::default(),
            items: Mutex::default(),
        }
    }

    /// Milliseconds since the run began.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn record(&self, client: usize, op: Op, start_ms: u64, outcome: Outcome) {
        let end_ms = self.now_ms();
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Entry {
                client,
                op,
                start_ms,
                end_ms,
                outcome,
            });
    }

    /// The set of a listing's (bundle, tag) pairs, for [`Outcome::Listed`].
    pub fn listed_items(&self, listed: impl IntoIterator<Item = ListedItem>) -> ItemSet {
        self.items
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set(listed)
    }

    /// Takes everything recorded so far (once the clients have stopped), without copying it.
    pub fn take(&self) -> Recorded {
        let entries = std::mem::take(&mut *self.entries.lock().unwrap_or_else(|p| p.into_inner()));
        let items = std::mem::take(&mut *self.items.lock().unwrap_or_else(|p| p.into_inner()));
        Recorded {
            entries,
            items: items.into_items(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(bundle: &str, tag: &str) -> ListedItem {
        ListedItem {
            bundle: bundle.into(),
            tag: tag.into(),
        }
    }

    #[test]
    fn listings_share_their_items_and_keep_what_they_named() {
        let mut items = Items::default();
        let first = items.set([item("b1", "t1"), item("b2", "t2")]);
        let second = items.set((0..200).map(|i| item(&format!("b{i}"), &format!("t{i}"))));
        let items = items.into_items();
        assert_eq!(items.len(), 200, "b1 and b2 are numbered once");
        let named = |set: &ItemSet| -> Vec<String> {
            set.iter().map(|i| items[i].bundle.clone()).collect()
        };
        assert_eq!(named(&first), ["b1", "b2"]);
        assert_eq!(second.len(), 200);
        assert!(second.contains(199) && !first.contains(199) && !first.contains(10_000));
        assert_eq!(named(&second)[150], "b150");
        assert!(ItemSet::default().is_empty());
    }
}
