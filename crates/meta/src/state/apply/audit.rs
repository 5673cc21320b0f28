//! The audit trail's writes: an event is numbered after the head, chained to it by the SHA-256
//! of its stored value, indexed by bundle, and the head (in the cluster record) moves — all in
//! the entry that made the change it records. What records what: `crate::audit`.

use super::Applier;
use crate::command::{Applied, ApplyResult, RecordEvents};
use crate::error::MetaError;
use crate::keys;
use crate::types::audit::{event_hash, AuditEvent, AuditHead, MAX_REPORTED_EVENTS};
use crate::types::{Agent, AuditAction, NewEvent, Outcome};

impl Applier<'_> {
    /// Whether this group keeps the trail (value format 3 on).
    fn audits(&self) -> bool {
        self.map.cluster.value_format() >= keys::VALUE_FORMAT_AUDIT
    }

    /// Appends `event` to the trail (`source`: the member or node that reported it, empty for
    /// the group's own).
    pub(crate) fn audit(&mut self, event: NewEvent, source: &str) {
        if !self.audits() {
            return;
        }
        let head = self.map.cluster.audit;
        let Some(seq) = head.seq.checked_add(1) else {
            panic!("audit event numbers past u64::MAX");
        };
        let bundle = event.bundle;
        let stored = AuditEvent::stored_value(seq, &head.sha256, event, source);
        if let Some(id) = bundle {
            self.put_raw(&keys::audit_by_bundle(id, seq), &[]);
        }
        self.put_raw(&keys::audit(seq), &stored);
        self.map.cluster.audit = AuditHead {
            seq,
            sha256: event_hash(&stored),
        };
    }

    /// Records the refusal of a command someone asked for, with the reason every member
    /// reached alike. A broken store is not a refusal: the member stops on it.
    pub(crate) fn audit_refusal(&mut self, mut event: NewEvent, error: &MetaError) {
        if matches!(error, MetaError::Corrupt { .. }) {
            return;
        }
        event.outcome = Outcome::Refused;
        event.detail = error.to_string();
        self.audit(event, "");
    }

    /// [`crate::command::Command::RecordEvents`].
    pub(crate) fn record_events(&mut self, r: RecordEvents) -> ApplyResult {
        // The leader checked the batch; an over-long one is refused alike everywhere.
        if r.events.len() > MAX_REPORTED_EVENTS {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::Events,
                reason: format!("at most {MAX_REPORTED_EVENTS} events per report"),
            });
        }
        for e in r.events {
            self.audit(e, &r.source);
        }
        if r.dropped > 0 {
            let detail = format!(
                "{} events were not recorded: the reporter's queue was full",
                r.dropped
            );
            let event = NewEvent {
                time_unix_ms: r.now_ms,
                agent: Agent::system("audit"),
                action: AuditAction::Request,
                object: "unrecorded events".into(),
                bundle: None,
                outcome: Outcome::Failure,
                detail,
            };
            self.audit(event, &r.source);
        }
        Ok(Applied::Done)
    }
}
