//! The audit trail: what the group records, and where.
//!
//! - Every command that changes content or the cluster on someone's behalf records its event
//!   in the same entry as the change, with the agent the leader put in the command (the token
//!   a node acts for, an operator's token, `system:<component>`): its family's apply file
//!   calls `Applier::audit` once the change is made (a retry that changes nothing records
//!   nothing). The writes and the chain are `state/apply/audit.rs`.
//! - A refusal of such a command at apply (retained, held, wrong state) is recorded by the
//!   dispatch ([`refusal_of`] gives its event).
//! - What members and nodes see outside commands — requests their auth layer or handlers
//!   refuse, fixity checks — they report with `RecordEvents` (`server/audit.rs`).
//! - Reads are not Raft writes: nodes log them locally (`bitmountain-node`'s access log).
//!
//! Events are kept only in groups at value format 3 or newer (`keys::VALUE_FORMAT_AUDIT`), so a
//! member whose binary does not know the trail never applies an entry that writes one.

use crate::command::Command;
use crate::types::{AgentKind, AuditAction, NewEvent, Outcome};

/// The event to record if `cmd` is refused at apply: commands someone asked for. Repairs and
/// moves losing a race, expiries and the recovery's own commands are not requests; their
/// refusals are not audited.
pub(crate) fn refusal_of(cmd: &Command) -> Option<NewEvent> {
    let (time_unix_ms, agent, action, object, bundle) = match cmd {
        Command::Commit(c) => (c.now_ms, &c.agent, AuditAction::Ingestion, None, Some(c.id)),
        Command::Delete {
            id, now_ms, agent, ..
        } => (*now_ms, agent, AuditAction::Deletion, None, Some(*id)),
        Command::SetRetention {
            id, now_ms, agent, ..
        }
        | Command::SetLegalHold {
            id, now_ms, agent, ..
        } => (
            *now_ms,
            agent,
            AuditAction::PolicyAssignment,
            None,
            Some(*id),
        ),
        Command::CreateToken(c) => (
            c.now_ms,
            &c.agent,
            AuditAction::TokenCreation,
            Some(format!("token {}", c.record.id)),
            None,
        ),
        Command::RevokeToken { id, now_ms, agent } => (
            *now_ms,
            agent,
            AuditAction::TokenRevocation,
            Some(format!("token {id}")),
            None,
        ),
        Command::SetDiskState {
            disk_id,
            now_ms,
            agent,
            ..
        } if agent.kind == AgentKind::Token => (
            *now_ms,
            agent,
            AuditAction::DiskStateChange,
            Some(format!("disk {disk_id}")),
            None,
        ),
        Command::SetNodeState {
            node_id,
            now_ms,
            agent,
            ..
        } if agent.kind == AgentKind::Token => (
            *now_ms,
            agent,
            AuditAction::NodeStateChange,
            Some(format!("node {node_id}")),
            None,
        ),
        _ => return None,
    };
    Some(NewEvent {
        time_unix_ms,
        agent: agent.clone(),
        action,
        object: match (object, bundle) {
            (Some(o), _) => o,
            (None, Some(id)) => format!("bundle {id}"),
            (None, None) => String::new(),
        },
        bundle,
        outcome: Outcome::Refused,
        detail: String::new(),
    })
}
