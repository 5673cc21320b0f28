//! The audit trail's requests on a member: who a request acts as ([`agent_of`]), events
//! members and nodes report (`RecordEvents`), pages of the trail (`ListAudit`), and the
//! member's own refusal reporter. What records what: `crate::audit`.

use bitmountain_auth::{PeerRole, Principal};
use bitmountain_proto::v1 as pb;

use super::MetaServer;
use crate::command::{Command, RecordEvents};
use crate::error::{Field, MetaError, Result};
use crate::keys;
use crate::state::AuditQuery;
use crate::types::audit::MAX_REPORTED_EVENTS;
use crate::types::{now_unix_ms, Agent, AuditAction, BundleId, NewEvent, Outcome};
use crate::wire::{agent_from_proto, event_from_proto};

/// Events a page holds when the request does not say.
const DEFAULT_AUDIT_PAGE: usize = 100;
/// Most events a page holds.
const MAX_AUDIT_PAGE: usize = 1000;

/// Who a request acts as. A storage node acts for the client whose request it carries and
/// names it (`on_behalf_of`): nodes are trusted with that, as they are with the client's
/// data. Anyone else is who their credentials say; without access control (`--insecure`)
/// the named agent is taken as given.
pub(crate) fn agent_of(principal: Option<&Principal>, on_behalf_of: Option<&pb::Agent>) -> Agent {
    let vouched = match principal {
        Some(Principal::Peer(p)) => p.role == PeerRole::Node,
        None | Some(Principal::Anonymous) => true,
        Some(Principal::Token(_)) => false,
    };
    match (on_behalf_of, principal) {
        (Some(a), _) if vouched && !a.kind.is_empty() => agent_from_proto(a),
        (_, Some(p)) => Agent::of(p),
        (_, None) => Agent::default(),
    }
}

impl MetaServer {
    /// Records events a member or node reports (refused requests, fixity checks). A group
    /// that does not keep the trail yet (value format before 3) answers 0.
    pub(super) async fn record_events(
        &self,
        principal: Option<&Principal>,
        r: pb::RecordEventsRequest,
    ) -> Result<u64> {
        if r.events.len() > MAX_REPORTED_EVENTS {
            return Err(MetaError::InvalidArgument {
                field: Field::Events,
                reason: format!(
                    "{} events; at most {MAX_REPORTED_EVENTS} per call",
                    r.events.len()
                ),
            });
        }
        let events = r
            .events
            .iter()
            .map(event_from_proto)
            .collect::<Result<Vec<_>>>()?;
        self.require_leader()?;
        if self.inner.store.value_format() < keys::VALUE_FORMAT_AUDIT
            || (events.is_empty() && r.dropped == 0)
        {
            return Ok(0);
        }
        let n = events.len() as u64 + u64::from(r.dropped > 0);
        let source = principal.map(Agent::of).unwrap_or_default().to_string();
        self.propose(Command::RecordEvents(RecordEvents {
            events,
            source,
            dropped: r.dropped,
            now_ms: now_unix_ms(),
        }))
        .await?;
        Ok(n)
    }

    /// A page of the trail, linearizable. The head is read before the events, so every event
    /// up to it is in this page or a later one.
    pub(super) async fn list_audit(
        &self,
        r: pb::ListAuditRequest,
    ) -> Result<pb::ListAuditResponse> {
        let limit = match r.page_size as usize {
            0 => DEFAULT_AUDIT_PAGE,
            n if n <= MAX_AUDIT_PAGE => n,
            n => {
                return Err(MetaError::InvalidArgument {
                    field: Field::Items,
                    reason: format!("page size {n}; at most {MAX_AUDIT_PAGE}"),
                })
            }
        };
        let query = AuditQuery {
            since_unix_ms: r.since_unix_ms,
            until_unix_ms: r.until_unix_ms,
            bundle: match &r.bundle {
                Some(b) => Some(BundleId::from_proto(Some(b))?),
                None => None,
            },
            agent: Some(r.agent).filter(|a| !a.is_empty()),
            action: match r.action.as_str() {
                "" => None,
                a => Some(a.parse().map_err(|reason| MetaError::InvalidArgument {
                    field: Field::Action,
                    reason,
                })?),
            },
        };
        self.read_barrier(false).await?;
        let head = self.inner.store.map().cluster.audit;
        let (events, next) = self.inner.store.audit_page(&query, r.after_seq, limit)?;
        Ok(pb::ListAuditResponse {
            events: events
                .into_iter()
                .map(|(seq, value)| pb::StoredAuditEvent { seq, value })
                .collect(),
            next_after_seq: next,
            head_seq: head.seq,
            head_sha256: if head.seq == 0 {
                Vec::new()
            } else {
                head.sha256.to_vec()
            },
        })
    }

    /// Records a member change (a Raft configuration change, not a command) in an entry of its
    /// own: after the change, or before it when the change would take this member's power to
    /// propose (a leader removing itself, a leadership transfer). A failure to record is
    /// logged; the change stands.
    pub(super) async fn record_member_change(
        &self,
        agent: Agent,
        member: u64,
        outcome: Outcome,
        detail: String,
    ) {
        if self.inner.store.value_format() < keys::VALUE_FORMAT_AUDIT {
            return;
        }
        let event = NewEvent {
            time_unix_ms: now_unix_ms(),
            agent,
            action: AuditAction::MemberChange,
            object: format!("member {member}"),
            bundle: None,
            outcome,
            detail,
        };
        let cmd = Command::RecordEvents(RecordEvents {
            events: vec![event],
            source: String::new(),
            dropped: 0,
            now_ms: now_unix_ms(),
        });
        if let Err(e) = self.propose(cmd).await {
            tracing::warn!(member, error = %e, "member change not recorded in the audit trail");
        }
    }

    /// A client of the group's members as this member sees them, with its own certificate:
    /// where its refusal reporter sends (the leader answers, wherever it is).
    pub(super) fn members_client(&self) -> Result<std::sync::Arc<crate::MetaClient>> {
        let st = self.inner.raft.status();
        let addresses: Vec<String> = st.members.values().cloned().collect();
        let client =
            crate::MetaClient::new(addresses)?.with_credentials(self.inner.cfg.credentials.clone());
        Ok(std::sync::Arc::new(client))
    }
}
