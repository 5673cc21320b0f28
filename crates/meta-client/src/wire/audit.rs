//! The audit trail on the wire: agents, reported events, pages of stored events.

use bitmountain_proto::v1 as pb;

use crate::error::{Field, MetaError, Result};
use crate::types::audit::AuditHead;
use crate::types::{Agent, AgentKind, AuditAction, BundleId, NewEvent, Outcome};

/// An agent for the wire.
pub fn agent_to_proto(a: &Agent) -> pb::Agent {
    pb::Agent {
        kind: a.kind.as_str().to_owned(),
        id: a.id.clone(),
        name: a.name.clone(),
    }
}

/// An agent from the wire, its fields within their limits.
pub fn agent_from_proto(a: &pb::Agent) -> Agent {
    Agent {
        kind: AgentKind::parse(&a.kind),
        id: a.id.clone(),
        name: a.name.clone(),
    }
    .bounded()
}

/// A reported event for the wire.
pub fn event_to_proto(e: &NewEvent) -> pb::ReportedEvent {
    pb::ReportedEvent {
        time_unix_ms: e.time_unix_ms,
        agent: Some(agent_to_proto(&e.agent)),
        action: e.action.as_str().to_owned(),
        object: e.object.clone(),
        bundle: e.bundle.map(|b| b.to_proto()),
        outcome: e.outcome.as_str().to_owned(),
        detail: e.detail.clone(),
    }
}

/// A reported event from the wire; an unknown action or outcome is refused, long fields cut.
pub fn event_from_proto(e: &pb::ReportedEvent) -> Result<NewEvent> {
    let action: AuditAction = e
        .action
        .parse()
        .map_err(|reason| MetaError::InvalidArgument {
            field: Field::Action,
            reason,
        })?;
    let outcome: Outcome = e
        .outcome
        .parse()
        .map_err(|reason| MetaError::InvalidArgument {
            field: Field::Outcome,
            reason,
        })?;
    let bundle = match &e.bundle {
        Some(b) => Some(BundleId::from_proto(Some(b))?),
        None => None,
    };
    Ok(NewEvent {
        time_unix_ms: e.time_unix_ms,
        agent: e.agent.as_ref().map(agent_from_proto).unwrap_or_default(),
        action,
        object: e.object.clone(),
        bundle,
        outcome,
        detail: e.detail.clone(),
    }
    .bounded())
}

/// The head a page of the trail names.
pub fn head_from_proto(seq: u64, sha256: &[u8]) -> Result<AuditHead> {
    let sha256: [u8; 32] = match (seq, sha256.len()) {
        (0, 0) => [0; 32],
        _ => sha256.try_into().map_err(|_| MetaError::InvalidArgument {
            field: Field::Events,
            reason: format!("an audit head hash of {} bytes (32 expected)", sha256.len()),
        })?,
    };
    Ok(AuditHead { seq, sha256 })
}
