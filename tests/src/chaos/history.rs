//! The history of a chaos run: every operation a client began, with when it began and ended
//! (milliseconds since the run's start) and what came back. The checker judges only this and
//! the state read after healing.

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
    /// A listing: every bundle of the run with its upload's tag.
    Listed { bundles: Vec<(String, String)> },
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

/// The shared history the clients append to.
#[derive(Debug)]
pub struct History {
    started: Instant,
    entries: Mutex<Vec<Entry>>,
}

impl History {
    pub fn new(started: Instant) -> History {
        History {
            started,
            entries: Mutex::default(),
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

    /// Every entry so far, in the order they ended.
    pub fn entries(&self) -> Vec<Entry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
