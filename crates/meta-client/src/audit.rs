//! The audit trail from outside the group: pages of it (`bitmountain audit`), events a member
//! or node reports (`RecordEvents`), and [`RefusalReporter`], the worker that sends a server's
//! refused requests there.

use std::sync::Arc;
use std::time::Duration;

use bitmountain_auth::{Refusal, RefusalLog, RefusedCaller};
use bitmountain_proto::v1 as pb;
use bitmountain_worker::{Next, StepError, Worker};

use crate::client::MetaClient;
use crate::error::Result;
use crate::types::audit::{AuditHead, MAX_REPORTED_EVENTS};
use crate::types::{Agent, AgentKind, AuditAction, BundleId, NewEvent, Outcome};
use crate::wire;

/// How often a reporter sends what its server refused.
pub const REFUSAL_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Most events `list_audit` asks for per page.
pub const MAX_AUDIT_PAGE: u32 = 1000;

/// Which events a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Inclusive time bounds (0: none).
    pub since_unix_ms: u64,
    pub until_unix_ms: u64,
    pub bundle: Option<BundleId>,
    /// An agent's printed form, `kind:id`, id or name.
    pub agent: Option<String>,
    pub action: Option<AuditAction>,
}

/// A page of stored events (exactly as stored, for the chain check) and where to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    /// (number, stored value).
    pub events: Vec<(u64, Vec<u8>)>,
    /// Ask again after this number; 0 when no more events match.
    pub next_after_seq: u64,
    pub head: AuditHead,
}

impl MetaClient {
    /// Events after `after_seq` matching `filter`, at most `page_size` (≤ [`MAX_AUDIT_PAGE`]).
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        after_seq: u64,
        page_size: u32,
    ) -> Result<AuditPage> {
        let r = pb::ListAuditRequest {
            after_seq,
            since_unix_ms: filter.since_unix_ms,
            until_unix_ms: filter.until_unix_ms,
            bundle: filter.bundle.map(|b| b.to_proto()),
            agent: filter.agent.clone().unwrap_or_default(),
            action: filter
                .action
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default(),
            page_size: page_size.min(MAX_AUDIT_PAGE),
        };
        let resp = self
            .transport()
            .admin(|mut c| {
                let r = r.clone();
                async move { c.list_audit(r).await }
            })
            .await?;
        Ok(AuditPage {
            events: resp.events.into_iter().map(|e| (e.seq, e.value)).collect(),
            next_after_seq: resp.next_after_seq,
            head: wire::head_from_proto(resp.head_seq, &resp.head_sha256)?,
        })
    }

    /// Records events this member or node saw (at most [`MAX_REPORTED_EVENTS`]); `dropped`
    /// counts those it could not keep. Returns how many the group recorded.
    pub async fn record_events(&self, events: &[NewEvent], dropped: u64) -> Result<u64> {
        let r = pb::RecordEventsRequest {
            events: events.iter().map(wire::event_to_proto).collect(),
            dropped,
        };
        let resp = self
            .transport()
            .service(|mut c| {
                let r = r.clone();
                async move { c.record_events(r).await }
            })
            .await?;
        Ok(resp.recorded)
    }
}

/// The event a refused request becomes: the action the method attempts, outcome refused.
pub fn refusal_event(r: &Refusal) -> NewEvent {
    let agent = match &r.caller {
        RefusedCaller::Token { id, name } => Agent {
            kind: AgentKind::Token,
            id: id.to_string(),
            name: name.clone().unwrap_or_default(),
        },
        RefusedCaller::Peer(p) => Agent::of(&bitmountain_auth::Principal::Peer(p.clone())),
        RefusedCaller::Anonymous => Agent::default(),
    };
    let bundle = r
        .object
        .as_deref()
        .and_then(|o| o.strip_prefix("bundle "))
        .and_then(|id| id.parse().ok());
    NewEvent {
        time_unix_ms: r.time_unix_ms,
        agent,
        action: AuditAction::of_method(&r.method),
        object: r.object.clone().unwrap_or_else(|| r.method.clone()),
        bundle,
        outcome: Outcome::Refused,
        detail: r.message.clone(),
    }
    .bounded()
}

/// Where a reporter sends: a fixed client (a node's), or one made for each report (a
/// member's, from the group's current members).
pub type ClientSource = Box<dyn Fn() -> Result<Arc<MetaClient>> + Send>;

/// Sends the refusals a server's auth layer and handlers queued to the group, every
/// [`REFUSAL_REPORT_INTERVAL`], at most [`MAX_REPORTED_EVENTS`] at a time. What cannot be
/// sent goes back to the queue (which counts what no longer fits).
pub struct RefusalReporter {
    log: Arc<RefusalLog>,
    client: ClientSource,
    reported: u64,
}

impl std::fmt::Debug for RefusalReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalReporter")
            .field("reported", &self.reported)
            .finish_non_exhaustive()
    }
}

impl RefusalReporter {
    pub fn new(log: Arc<RefusalLog>, client: ClientSource) -> RefusalReporter {
        RefusalReporter {
            log,
            client,
            reported: 0,
        }
    }
}

impl Worker for RefusalReporter {
    fn name(&self) -> &'static str {
        "refusal-reporter"
    }

    async fn step(&mut self) -> std::result::Result<Next, StepError> {
        let next = Next::Every(REFUSAL_REPORT_INTERVAL);
        let (refusals, dropped) = self.log.take(MAX_REPORTED_EVENTS);
        if refusals.is_empty() && dropped == 0 {
            return Ok(next);
        }
        let events: Vec<NewEvent> = refusals.iter().map(refusal_event).collect();
        let sent = match (self.client)() {
            Ok(client) => client.record_events(&events, dropped).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(n) => {
                self.reported += n;
                Ok(next)
            }
            Err(e) => {
                self.log.put_back(refusals, dropped);
                Err(StepError::new(
                    format!("refused requests not recorded yet: {e}"),
                    next,
                ))
            }
        }
    }

    fn note(&self) -> String {
        format!("{} refused requests recorded", self.reported)
    }
}
