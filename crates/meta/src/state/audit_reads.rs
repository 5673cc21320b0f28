//! Reads of the audit trail: filtered pages (`ListAudit`) and the whole chain's check
//! (`bitmountain audit verify`, online on the leader's state and offline on a member's data).

use super::store::db_err;
use super::MetaStore;
use crate::error::{MetaError, Result};
use crate::keys;
use crate::types::audit::{AuditEvent, ChainReport, ChainVerifier};
use crate::types::{AuditAction, BundleId};

/// Most keys one page looks at: a filter that matches little answers with fewer events and
/// where to go on, rather than reading the whole trail in one call.
pub const MAX_AUDIT_SCAN_PER_PAGE: usize = 20_000;

/// Which events a page holds.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Inclusive time bounds (0: none).
    pub since_unix_ms: u64,
    pub until_unix_ms: u64,
    pub bundle: Option<BundleId>,
    pub agent: Option<String>,
    pub action: Option<AuditAction>,
}

impl AuditQuery {
    fn needs_decoding(&self) -> bool {
        self.since_unix_ms != 0
            || self.until_unix_ms != 0
            || self.agent.is_some()
            || self.action.is_some()
    }

    fn admits(&self, e: &AuditEvent) -> bool {
        (self.since_unix_ms == 0 || e.time_unix_ms >= self.since_unix_ms)
            && (self.until_unix_ms == 0 || e.time_unix_ms <= self.until_unix_ms)
            && self.agent.as_deref().is_none_or(|a| e.agent.matches(a))
            && self.action.is_none_or(|a| e.action == a)
    }
}

/// A page: (number, stored value) of the events that match, and the number to go on after
/// (0: no more).
pub type AuditRows = (Vec<(u64, Vec<u8>)>, u64);

impl MetaStore {
    /// Events after `after_seq` matching `q`, at most `limit`, looking at no more than
    /// [`MAX_AUDIT_SCAN_PER_PAGE`] keys.
    pub fn audit_page(&self, q: &AuditQuery, after_seq: u64, limit: usize) -> Result<AuditRows> {
        let (prefix, start) = match q.bundle {
            Some(id) => (
                keys::audit_by_bundle_prefix(id),
                keys::audit_by_bundle(id, after_seq.saturating_add(1)),
            ),
            None => (vec![keys::AUDIT], keys::audit(after_seq.saturating_add(1))),
        };
        let cf = self.cf()?;
        let mut it = self.db().raw_iterator_cf(cf);
        it.seek(&start);
        let (mut out, mut scanned, mut last) = (Vec::new(), 0, 0);
        while it.valid() {
            let Some(k) = it.key() else { break };
            if !k.starts_with(&prefix) {
                return Ok((out, 0));
            }
            if out.len() == limit || scanned == MAX_AUDIT_SCAN_PER_PAGE {
                return Ok((out, last));
            }
            scanned += 1;
            let seq = keys::trailing_seq(k).ok_or_else(|| corrupt_key(k))?;
            last = seq;
            let value = match q.bundle {
                Some(_) => self.get_audit(seq)?.ok_or_else(|| MetaError::Corrupt {
                    what: format!("audit index names event {seq}, which is not stored"),
                })?,
                None => it.value().map(<[u8]>::to_vec).unwrap_or_default(),
            };
            // An event that does not decode is shown, never hidden: `audit verify` names it.
            let keep =
                !q.needs_decoding() || AuditEvent::decode(&value).map_or(true, |e| q.admits(&e));
            if keep {
                out.push((seq, value));
            }
            it.next();
        }
        it.status().map_err(db_err)?;
        Ok((out, 0))
    }

    /// Event `seq` as stored.
    pub fn get_audit(&self, seq: u64) -> Result<Option<Vec<u8>>> {
        let cf = self.cf()?;
        self.db().get_cf(cf, keys::audit(seq)).map_err(db_err)
    }

    /// Walks the whole chain against the cluster record's head.
    pub fn verify_audit(&self) -> Result<ChainReport> {
        let head = self.map().cluster.audit;
        let cf = self.cf()?;
        let mut it = self.db().raw_iterator_cf(cf);
        it.seek([keys::AUDIT]);
        let mut v = ChainVerifier::new();
        while it.valid() {
            let (Some(k), Some(value)) = (it.key(), it.value()) else {
                break;
            };
            if k.first() != Some(&keys::AUDIT) {
                break;
            }
            let seq = keys::audit_seq(k).ok_or_else(|| corrupt_key(k))?;
            if !v.push(seq, value) {
                break;
            }
            it.next();
        }
        it.status().map_err(db_err)?;
        Ok(v.finish(head))
    }
}

fn corrupt_key(k: &[u8]) -> MetaError {
    MetaError::Corrupt {
        what: format!(
            "audit key {} is not a prefix and an event number",
            hex::encode(k)
        ),
    }
}
