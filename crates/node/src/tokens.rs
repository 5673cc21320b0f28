//! The node's copy of the access-token table, which its auth layer checks client tokens
//! against. The heartbeat keeps it current: every answer carries the table's version and
//! fingerprint, and a new one is fetched at once, so a revoked or expired token is refused here
//! within a heartbeat or two. A copy not confirmed for [`max_table_age`] is not trusted: the node then
//! refuses tokens (fails closed) until it hears from the metadata group again, rather than
//! honour a token that may have been revoked meanwhile.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use bitmountain_auth::{LookupError, TokenId, TokenRecord, TokenVerifier};
use bitmountain_meta_client::types::TokenTable;

/// The longest a copy stays trusted without confirmation, with the default one-second
/// heartbeat: the bound on how long a revoked token may still be honoured.
pub const MAX_TOKEN_TABLE_AGE: Duration = Duration::from_secs(5);

/// How long a copy stays trusted with heartbeats every `heartbeat_interval`: five seconds, or
/// three heartbeats when they are slower than that.
pub fn max_table_age(heartbeat_interval: Duration) -> Duration {
    MAX_TOKEN_TABLE_AGE.max(heartbeat_interval.saturating_mul(3))
}

#[derive(Debug, Default)]
struct Copy {
    tokens: HashMap<TokenId, TokenRecord>,
    version: u64,
    fingerprint: u64,
    /// When the metadata group last confirmed this copy; `None` before the first fetch.
    confirmed: Option<Instant>,
}

/// The cached token table.
#[derive(Debug)]
pub struct TokenCache {
    copy: RwLock<Copy>,
    max_age: Duration,
}

impl TokenCache {
    /// An empty cache (every token refused until the first fetch) trusting a copy for
    /// `max_age` after its last confirmation.
    pub fn new(max_age: Duration) -> TokenCache {
        TokenCache {
            copy: RwLock::new(Copy::default()),
            max_age,
        }
    }

    /// Replaces the copy with `table`, as fetched just now.
    pub fn replace(&self, table: TokenTable) {
        let tokens = table.tokens.into_iter().map(|r| (r.id, r)).collect();
        let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
        *copy = Copy {
            tokens,
            version: table.version,
            fingerprint: table.fingerprint,
            confirmed: Some(Instant::now()),
        };
    }

    /// The group says its table is at `version` with `fingerprint`: true (and the copy
    /// confirmed) if that is the copy's; false if the copy must be fetched again. Both count:
    /// a recovered or restored group reaches the copy's version with other tokens.
    pub fn confirm(&self, version: u64, fingerprint: u64) -> bool {
        let mut copy = self.copy.write().unwrap_or_else(|p| p.into_inner());
        if copy.confirmed.is_some() && copy.version == version && copy.fingerprint == fingerprint {
            copy.confirmed = Some(Instant::now());
            true
        } else {
            false
        }
    }
}

impl TokenVerifier for TokenCache {
    fn lookup(&self, id: TokenId) -> Result<Option<TokenRecord>, LookupError> {
        let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
        match copy.confirmed {
            None => Err(LookupError(
                "this node has not yet loaded the token table from the metadata group; try \
                 again in a moment"
                    .into(),
            )),
            Some(at) if at.elapsed() > self.max_age => Err(LookupError(format!(
                "this node has not heard from the metadata group for {} s, so it cannot tell \
                 whether the token was revoked; try another node or again later",
                at.elapsed().as_secs()
            ))),
            Some(_) => Ok(copy.tokens.get(&id).cloned()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bitmountain_auth::{Role, Scope, Token};

    use super::*;

    fn table(version: u64) -> (Token, TokenTable) {
        let token = Token::generate().unwrap();
        let record = TokenRecord::new(&token, "t", Role::Reader, Scope::default(), 1, 0);
        (
            token,
            TokenTable {
                tokens: vec![record],
                version,
                fingerprint: 7,
            },
        )
    }

    #[test]
    fn nothing_is_trusted_before_the_first_fetch_or_after_the_copy_ages() {
        let cache = TokenCache::new(Duration::from_millis(50));
        let (token, t) = table(3);
        assert!(cache.lookup(token.id()).is_err());
        assert!(!cache.confirm(3, 7), "nothing to confirm yet");
        cache.replace(t);
        assert!(cache.lookup(token.id()).unwrap().is_some());
        assert!(cache
            .lookup(Token::generate().unwrap().id())
            .unwrap()
            .is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            cache.lookup(token.id()).is_err(),
            "a stale copy fails closed"
        );
        assert!(cache.confirm(3, 7));
        assert!(cache.lookup(token.id()).unwrap().is_some());
        assert!(!cache.confirm(4, 7), "a new version must be fetched");
        assert!(
            !cache.confirm(3, 8),
            "another table of the same version (a recovered group's) must be fetched"
        );
    }

    #[test]
    fn slow_heartbeats_stretch_the_age() {
        assert_eq!(max_table_age(Duration::from_secs(1)), MAX_TOKEN_TABLE_AGE);
        assert_eq!(
            max_table_age(Duration::from_secs(4)),
            Duration::from_secs(12)
        );
    }
}
