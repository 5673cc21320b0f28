//! Access tokens on the leader: create (the secret is made here, answered once, never stored or
//! logged), list, revoke; and the group's first admin token, made once by whichever member
//! leads first and written to its data directory. Their apply is `crate::state::apply::access`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use bitmountain_auth::{LookupError, Principal, Role, Scope, Token, TokenId, TokenRecord};
use bitmountain_proto::v1 as pb;
use bitmountain_worker::{Next, StepError, Worker};

use super::{unexpected, MetaServer};
use crate::command::{Applied, Command, CreateToken};
use crate::error::{Field, MetaError, Result};
use crate::state::apply::access::MAX_TOKENS;
use crate::types::now_unix_ms;
use crate::wire::{role_from_str, scope_from_proto, token_id_from_str, token_to_proto};

/// Where the first admin token is written, in the data directory of the member that made it.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// How often a member checks whether the group still needs its first admin token.
const FIRST_ADMIN_POLL: Duration = Duration::from_millis(500);

/// Most bundles a scoped token's status counts look at; a scope holding more shows counts of
/// the first ones.
pub const MAX_SCOPED_COUNT_BUNDLES: usize = 1_000_000;
/// Bundles read per page while counting.
const COUNT_PAGE: usize = 1_000;

impl MetaServer {
    /// The bundle counts a scoped token may see, through its scope's first label's index;
    /// `None` for every other caller (they see the group's counts).
    pub(crate) fn scoped_counts(
        &self,
        principal: Option<&Principal>,
    ) -> Result<Option<pb::BundleCounts>> {
        let Some(p @ Principal::Token(t)) = principal else {
            return Ok(None);
        };
        let Some((k, v)) = t.scope.labels().iter().next() else {
            return Ok(None);
        };
        let filter = crate::state::ListFilter {
            label: Some((k.clone(), v.clone())),
            state: None,
        };
        let mut counts = pb::BundleCounts::default();
        let (mut token, mut seen) = (Vec::new(), 0);
        loop {
            let (page, next) = self.inner.store.list_bundles(&filter, &token, COUNT_PAGE)?;
            seen += page.len();
            for b in page.iter().filter(|b| p.sees(&b.labels)) {
                match b.state {
                    crate::types::BundleState::Pending => counts.pending += 1,
                    crate::types::BundleState::Sealed => counts.sealed += 1,
                    crate::types::BundleState::Deleting => counts.deleting += 1,
                }
            }
            if next.is_empty() || seen >= MAX_SCOPED_COUNT_BUNDLES {
                return Ok(Some(counts));
            }
            token = next;
        }
    }

    /// Makes a token and proposes its record; returns it with the token (its only copy).
    pub(crate) async fn create_token(
        &self,
        r: pb::CreateTokenRequest,
        agent: crate::types::Agent,
    ) -> Result<pb::CreateTokenResponse> {
        let role = role_from_str(&r.role)?;
        let scope = scope_from_proto(&r.scope)?;
        scope
            .check_for(role)
            .map_err(|e| MetaError::InvalidArgument {
                field: Field::Label,
                reason: e.to_string(),
            })?;
        let now = now_unix_ms();
        if r.expires_unix_ms != 0 && r.expires_unix_ms <= now {
            return Err(MetaError::InvalidArgument {
                field: Field::Expiry,
                reason: format!(
                    "{} ms is in the past (now {now}); give a future time or none",
                    r.expires_unix_ms
                ),
            });
        }
        self.require_leader()?;
        let (record, token) = self
            .propose_token(&r.name, role, scope, r.expires_unix_ms, None, agent)
            .await?;
        tracing::info!(token = %record.id, name = %record.name, role = record.role.as_str(), "access token created");
        Ok(pb::CreateTokenResponse {
            token: Some(token_to_proto(&record)),
            secret: token.expose_secret(),
        })
    }

    async fn propose_token(
        &self,
        name: &str,
        role: Role,
        scope: Scope,
        expires_unix_ms: u64,
        if_version: Option<u64>,
        agent: crate::types::Agent,
    ) -> Result<(TokenRecord, Token)> {
        let token = Token::generate().map_err(|e| MetaError::TokenRefused {
            reason: format!("no random bytes for a secret: {e}"),
        })?;
        let now_ms = now_unix_ms();
        let record = TokenRecord::new(&token, name, role, scope, now_ms, expires_unix_ms);
        match self
            .propose(Command::CreateToken(CreateToken {
                record,
                if_version,
                agent,
                now_ms,
                first_value_format: self.inner.cfg.initial_value_format,
            }))
            .await?
        {
            Applied::Token(record) => Ok((record, token)),
            other => Err(unexpected(other)),
        }
    }

    /// Every token (hashes only) and the table's version.
    pub(crate) async fn list_tokens(&self) -> Result<pb::ListTokensResponse> {
        self.read_barrier(false).await?;
        let store = &self.inner.store;
        // The version first: a token created meanwhile makes the reader fetch again.
        let (version, fingerprint) = {
            let map = store.map();
            (map.cluster.tokens_version, map.cluster.tokens_fingerprint)
        };
        let tokens = store.list_tokens(MAX_TOKENS as usize)?;
        Ok(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_to_proto).collect(),
            tokens_version: version,
            tokens_fingerprint: fingerprint,
        })
    }

    /// Revokes a token (nodes refuse it once their copy of the table has the change).
    pub(crate) async fn revoke_token(
        &self,
        r: pb::RevokeTokenRequest,
        agent: crate::types::Agent,
    ) -> Result<pb::RevokeTokenResponse> {
        let id: TokenId = token_id_from_str(&r.id)?;
        self.require_leader()?;
        match self
            .propose(Command::RevokeToken {
                id,
                now_ms: now_unix_ms(),
                agent,
            })
            .await?
        {
            Applied::Token(record) => {
                tracing::info!(token = %record.id, name = %record.name, "access token revoked");
                Ok(pb::RevokeTokenResponse {
                    token: Some(token_to_proto(&record)),
                })
            }
            other => Err(unexpected(other)),
        }
    }
}

/// Makes the group's first admin token once: on the member that leads first, while the token
/// table has never held a token (a compare-and-set on its version, so exactly one member
/// succeeds), written to `DATA/admin.token` (0600) there.
#[derive(Debug)]
pub struct FirstAdminToken {
    server: MetaServer,
    data_dir: PathBuf,
}

impl FirstAdminToken {
    /// The worker of a member whose data directory is `data_dir`.
    pub fn new(server: MetaServer, data_dir: PathBuf) -> Self {
        Self { server, data_dir }
    }

    async fn make(&self) -> Result<PathBuf> {
        let (record, token) = self
            .server
            .propose_token(
                "admin (first)",
                Role::Admin,
                Scope::default(),
                0,
                Some(0),
                crate::types::Agent::system("bootstrap"),
            )
            .await?;
        let path = self.data_dir.join(ADMIN_TOKEN_FILE);
        write_secret_file(&path, &token.expose_secret()).map_err(|e| MetaError::TokenRefused {
            reason: format!(
                "first admin token {} made but {} could not be written ({e}); revoke it and \
                 create another with a token you have",
                record.id,
                path.display()
            ),
        })?;
        tracing::warn!(token = %record.id, path = %path.display(), "the group's first admin token is in this file: keep it safe");
        Ok(path)
    }
}

impl Worker for FirstAdminToken {
    fn name(&self) -> &'static str {
        "first-admin-token"
    }

    async fn step(&mut self) -> std::result::Result<Next, StepError> {
        let poll = Next::After(FIRST_ADMIN_POLL);
        if self.server.inner.store.map().cluster.tokens_version > 0 {
            return Ok(Next::Stop);
        }
        if !self.server.inner.raft.is_leader() {
            return Ok(poll);
        }
        match self.make().await {
            Ok(_) => Ok(Next::Stop),
            // Another member won the race: nothing left to do.
            Err(MetaError::TokenRefused { .. })
                if self.server.inner.store.map().cluster.tokens_version > 0 =>
            {
                Ok(Next::Stop)
            }
            Err(e) => Err(StepError::new(e, poll)),
        }
    }
}

/// Writes `secret` to a new file readable by its owner only (never over an existing one).
fn write_secret_file(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

/// The token table as this member's store holds it: what its auth layer checks tokens against.
/// An in-memory copy keyed by the table's version (which every create and revoke bumps, in the
/// cluster record this member keeps in memory), so a request costs a map lookup rather than a
/// RocksDB read; a new version reloads the copy before the next check.
#[derive(Debug)]
pub(crate) struct StoreTokens {
    store: std::sync::Arc<crate::state::MetaStore>,
    copy: std::sync::RwLock<Option<(u64, std::collections::HashMap<TokenId, TokenRecord>)>>,
}

impl StoreTokens {
    pub(crate) fn new(store: std::sync::Arc<crate::state::MetaStore>) -> StoreTokens {
        StoreTokens {
            store,
            copy: std::sync::RwLock::new(None),
        }
    }
}

impl bitmountain_auth::TokenVerifier for StoreTokens {
    fn lookup(&self, id: TokenId) -> std::result::Result<Option<TokenRecord>, LookupError> {
        // The version before the table: a change applied in between makes the copy look
        // older than it is, and the next lookup reloads it; it never looks newer.
        let version = self.store.map().cluster.tokens_version;
        {
            let copy = self.copy.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, table)) = copy.as_ref().filter(|(v, _)| *v == version) {
                return Ok(table.get(&id).cloned());
            }
        }
        let tokens = self
            .store
            .list_tokens(MAX_TOKENS as usize)
            .map_err(|e| LookupError(format!("this member cannot read its token table: {e}")))?;
        let table: std::collections::HashMap<TokenId, TokenRecord> =
            tokens.into_iter().map(|r| (r.id, r)).collect();
        let found = table.get(&id).cloned();
        *self.copy.write().unwrap_or_else(|p| p.into_inner()) = Some((version, table));
        Ok(found)
    }
}
