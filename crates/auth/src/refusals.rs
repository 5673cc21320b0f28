//! Requests refused, kept for the audit trail: a bounded queue each server's reporter drains
//! into the metadata group (`RecordEvents`). The layer adds what it refuses; handlers add what
//! they refuse on grounds the layer cannot see (a bundle outside a token's scope).
//!
//! Bounded because anyone who can reach a port can be refused: past [`MAX_QUEUED_REFUSALS`]
//! refusals are only counted, and the count is recorded as one event.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cert::PeerIdentity;
use crate::permission::Principal;
use crate::token::TokenId;

/// Refusals a server keeps before it only counts them.
pub const MAX_QUEUED_REFUSALS: usize = 1024;

/// Who a refused request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefusedCaller {
    /// A token the request carried: its id, and its name when the token was valid.
    Token { id: TokenId, name: Option<String> },
    /// A member's or node's certificate.
    Peer(PeerIdentity),
    /// No credentials (or a malformed token, whose id cannot be trusted).
    Anonymous,
}

impl From<&Principal> for RefusedCaller {
    fn from(p: &Principal) -> Self {
        match p {
            Principal::Anonymous => RefusedCaller::Anonymous,
            Principal::Peer(id) => RefusedCaller::Peer(id.clone()),
            Principal::Token(t) => RefusedCaller::Token {
                id: t.id,
                name: Some(t.name.clone()),
            },
        }
    }
}

/// One refused request. Never holds a secret: a token appears by its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub time_unix_ms: u64,
    /// The gRPC method (`/package.Service/Method`).
    pub method: String,
    pub caller: RefusedCaller,
    /// What the request was about (`bundle <id>`), when the refuser knows.
    pub object: Option<String>,
    /// Why, as the caller was told.
    pub message: String,
}

/// The queue.
#[derive(Debug, Default)]
pub struct RefusalLog {
    queue: Mutex<VecDeque<Refusal>>,
    dropped: AtomicU64,
}

impl RefusalLog {
    /// Keeps `r`, or counts it when [`MAX_QUEUED_REFUSALS`] are waiting.
    pub fn push(&self, r: Refusal) {
        let mut q = match self.queue.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        if q.len() >= MAX_QUEUED_REFUSALS {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            q.push_back(r);
        }
    }

    /// Up to `max` refusals, oldest first, and how many were dropped since the last take.
    pub fn take(&self, max: usize) -> (Vec<Refusal>, u64) {
        let mut q = match self.queue.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        let n = q.len().min(max);
        let taken = q.drain(..n).collect();
        (taken, self.dropped.swap(0, Ordering::Relaxed))
    }

    /// Puts back refusals that could not be delivered (in front, oldest first), counting the
    /// ones that no longer fit.
    pub fn put_back(&self, refusals: Vec<Refusal>, dropped: u64) {
        let mut q = match self.queue.lock() {
            Ok(q) => q,
            Err(poisoned) => poisoned.into_inner(),
        };
        let room = MAX_QUEUED_REFUSALS.saturating_sub(q.len());
        let lost = refusals.len().saturating_sub(room) as u64;
        for r in refusals.into_iter().take(room).rev() {
            q.push_front(r);
        }
        self.dropped.fetch_add(dropped + lost, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(n: u64) -> Refusal {
        Refusal {
            time_unix_ms: n,
            method: "/m".into(),
            caller: RefusedCaller::Anonymous,
            object: None,
            message: String::new(),
        }
    }

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_drops() {
        let log = RefusalLog::default();
        for n in 0..(MAX_QUEUED_REFUSALS as u64 + 5) {
            log.push(refusal(n));
        }
        let (taken, dropped) = log.take(10);
        assert_eq!(dropped, 5);
        assert_eq!(taken[0].time_unix_ms, 0);
        log.put_back(taken, 0);
        let (again, dropped) = log.take(usize::MAX);
        assert_eq!(dropped, 0);
        assert_eq!(again.len(), MAX_QUEUED_REFUSALS);
        assert_eq!(again[0].time_unix_ms, 0);
        log.put_back(vec![refusal(1); MAX_QUEUED_REFUSALS + 3], 2);
        assert_eq!(log.take(0).1, 5);
    }
}
