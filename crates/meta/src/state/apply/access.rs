//! Access tokens: the table clients' tokens are checked against (records hold the secret's
//! hash only). Every change bumps `ClusterRecord::tokens_version` and chains
//! `tokens_fingerprint`, which heartbeats carry, so nodes know when to fetch the table again.

use bitmountain_auth::TokenRecord;

use super::topology::topology_event;
use super::Applier;
use crate::codec;
use crate::command::{Applied, ApplyResult, CreateToken};
use crate::error::MetaError;
use crate::keys;
use crate::state::KeyReader;
use crate::types::{Agent, AuditAction};

/// The token table's fingerprint after a record stored as `value` is written.
fn next_fingerprint(previous: u64, value: &[u8]) -> u64 {
    let mut hashed = previous.to_le_bytes().to_vec();
    hashed.extend_from_slice(value);
    let digest = crate::types::audit::event_hash(&hashed);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// Most tokens the table holds (revoked ones included): every node keeps a copy in memory.
pub const MAX_TOKENS: u64 = 10_000;

impl Applier<'_> {
    pub(crate) fn create_token(&mut self, c: CreateToken) -> ApplyResult {
        let version = self.map.cluster.tokens_version;
        if let Some(expected) = c.if_version {
            if expected != version {
                return Err(MetaError::TokenRefused {
                    reason: format!(
                        "the token table is at version {version}, not {expected} (another \
                         member made the first admin token)"
                    ),
                });
            }
        }
        let id = c.record.id;
        if self.token(id)?.is_some() {
            return Err(MetaError::TokenRefused {
                reason: format!("token id {id} is taken; create the token again"),
            });
        }
        if self.map.cluster.tokens >= MAX_TOKENS {
            return Err(MetaError::TokenRefused {
                reason: format!(
                    "the table holds {MAX_TOKENS} tokens, the most it keeps; revoked tokens \
                     still count"
                ),
            });
        }
        if c.if_version == Some(0) && self.map.cluster == Default::default() {
            // The group's first command (its first admin token, made before any node
            // registers) sets the value format written from here on, as the first
            // registration does otherwise — so the trail starts with this token.
            self.map.cluster.value_format = crate::state::first_value_format(c.first_value_format)?;
        }
        self.put_token(&c.record);
        self.map.cluster.tokens += 1;
        let r = &c.record;
        let detail = format!(
            "name {:?}, role {}, scope {}, expires {}",
            r.name,
            r.role,
            r.scope,
            crate::types::unix_ms_text(r.expires_unix_ms)
        );
        let event = topology_event(
            c.now_ms,
            c.agent,
            AuditAction::TokenCreation,
            format!("token {id}"),
            detail,
        );
        self.audit(event, "");
        Ok(Applied::Token(c.record))
    }

    /// Writes a token record and moves the table's version and fingerprint.
    fn put_token(&mut self, record: &TokenRecord) {
        let value = codec::encode_value(record);
        let cluster = &mut self.map.cluster;
        cluster.tokens_version += 1;
        cluster.tokens_fingerprint = next_fingerprint(cluster.tokens_fingerprint, &value);
        self.put_raw(&keys::token(record.id), &value);
    }

    pub(crate) fn revoke_token(
        &mut self,
        id: bitmountain_auth::TokenId,
        now_ms: u64,
        agent: Agent,
    ) -> ApplyResult {
        let mut record = self
            .token(id)?
            .ok_or(MetaError::UnknownToken { id: id.to_string() })?;
        if record.revoked_unix_ms != 0 {
            // Revoked already: a retried revoke answers the same.
            return Ok(Applied::Token(record));
        }
        record.revoked_unix_ms = now_ms.max(1);
        self.put_token(&record);
        let detail = format!("name {:?}, role {}", record.name, record.role);
        let object = format!("token {id}");
        let event = topology_event(now_ms, agent, AuditAction::TokenRevocation, object, detail);
        self.audit(event, "");
        Ok(Applied::Token(record))
    }
}
