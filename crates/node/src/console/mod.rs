//! The web console: a read-only page every storage node serves on its metrics listener at `/`
//! (nodes and disks by zone, repair progress, bundles by healthy shards, last scrub per disk,
//! the live durability figure, the newest audit events). The page is static ([`assets`]); it asks for a token once,
//! keeps it in the browser tab's session storage and sends it with each `GET /api/console`,
//! which this module answers with [`view::ConsoleView`] as JSON.
//!
//! The token is judged by the node's own authorizer exactly as the archive API's
//! `ClusterStatus` is (permission `read`, scoped counts for a scoped token); repair progress
//! and the newest audit events are asked of the metadata group with the caller's token, so they
//! show only to tokens the group allows `RepairStatus` and `ListAudit` (`operate`). With
//! `--insecure` nothing is asked.

mod assets;
pub mod view;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bitmountain_auth::{AuthError, Authorizer, Permission, Principal};
use bitmountain_meta_client::audit::AuditFilter;
use bitmountain_meta_client::MetaClient;
use bitmountain_metrics::{Page, Pages};
use bitmountain_proto::ErrorKind;
use futures::future::BoxFuture;
use http::{header, HeaderMap, StatusCode};
use tokio::sync::Semaphore;

use crate::access;

/// Console API requests answered at once; more get 503 (each asks the metadata group).
pub const MAX_CONSOLE_REQUESTS: usize = 4;
/// Audit events the console shows (the newest).
pub const CONSOLE_AUDIT_EVENTS: u64 = 50;
/// Deadline of one console answer, metadata calls included.
pub const CONSOLE_DEADLINE: Duration = Duration::from_secs(10);
/// The gRPC method whose permission the console needs.
const AS_METHOD: &str = "/bitmountain.archive.v1.ArchiveService/ClusterStatus";
const JSON: &str = "application/json";

/// The console of one node. Answers 503 until [`Console::start`] gives it the node's client
/// of the metadata group (the metrics listener serves before the node has registered).
pub struct Console {
    ready: OnceLock<Ready>,
    busy: Semaphore,
}

struct Ready {
    meta: Arc<MetaClient>,
    address: String,
    /// The node's authorizer (`None` with `--insecure`).
    authorizer: Option<Arc<Authorizer>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("ready", &self.ready.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Console {
    pub fn new() -> Arc<Console> {
        Arc::new(Console {
            ready: OnceLock::new(),
            busy: Semaphore::new(MAX_CONSOLE_REQUESTS),
        })
    }

    /// From now on the console answers, as node `address`.
    pub fn start(
        &self,
        meta: Arc<MetaClient>,
        address: String,
        authorizer: Option<Arc<Authorizer>>,
    ) {
        let started = self.ready.set(Ready {
            meta,
            address,
            authorizer,
        });
        assert!(started.is_ok(), "the console is started once");
    }
}

/// The pages, by path; the [`Console`] behind an `Arc` so an answer can outlive the call.
#[derive(Debug, Clone)]
pub struct ConsolePages(pub Arc<Console>);

impl Pages for ConsolePages {
    fn get(&self, path: &str, headers: &HeaderMap) -> Option<BoxFuture<'static, Page>> {
        if let Some(page) = assets::page(path) {
            return Some(Box::pin(std::future::ready(page)));
        }
        if path != "/api/console" {
            return None;
        }
        let console = Arc::clone(&self.0);
        let headers = headers.clone();
        Some(Box::pin(async move {
            let page = match tokio::time::timeout(CONSOLE_DEADLINE, console.answer(&headers)).await
            {
                Ok(Ok(json)) => Page::ok(JSON, json),
                Ok(Err(page)) => page,
                Err(_) => error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "unavailable",
                    "the metadata group did not answer in time; try again",
                ),
            };
            page.with_header(header::CACHE_CONTROL, "no-store")
        }))
    }
}

impl Console {
    async fn answer(&self, headers: &HeaderMap) -> Result<String, Page> {
        let Some(ready) = self.ready.get() else {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the node is starting; try again in a moment",
            ));
        };
        let Ok(_slot) = self.busy.try_acquire() else {
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the console is answering other requests; try again",
            ));
        };
        let principal = match &ready.authorizer {
            Some(a) => Some(a.check_as(AS_METHOD, headers).map_err(|e| refused(&e))?),
            None => None,
        };
        let unavailable = |e: &dyn std::fmt::Display| {
            error(StatusCode::BAD_GATEWAY, "unavailable", &e.to_string())
        };
        let status = ready
            .meta
            .cluster_status()
            .await
            .map_err(|e| unavailable(&e))?;
        let scoped_counts = access::scoped_counts(&ready.meta, principal.as_ref())
            .await
            .map_err(|e| unavailable(&e))?;
        let operator = as_operator(ready, principal.as_ref(), headers);
        let repair = match &operator {
            Ok(meta) => meta.repair_status().await.map_err(|e| e.to_string()),
            Err(why) => Err(format!("repair progress {why}")),
        };
        let audit = match &operator {
            Ok(meta) => recent_events(meta).await,
            Err(why) => Err(format!("the audit trail {why}")),
        };
        let view = view::build(view::Inputs {
            status: &status,
            scoped_counts,
            repair,
            audit,
            answered_by: &ready.address,
            now_unix_ms: bitmountain_meta_client::types::now_unix_ms(),
        });
        serde_json::to_string(&view).map_err(|e| unavailable(&e))
    }
}

/// A client of the metadata group that asks as the caller, for what operators may see (repair
/// progress, the audit trail): the group decides with the caller's own token. The reason
/// (completing "repair progress ...") when the caller is no operator.
fn as_operator(
    ready: &Ready,
    principal: Option<&Principal>,
    headers: &HeaderMap,
) -> Result<Arc<MetaClient>, String> {
    Ok(match principal {
        None => Arc::clone(&ready.meta),
        Some(Principal::Token(t)) if t.role.has(Permission::Operate) => {
            let token = bearer(headers).ok_or("no token")?;
            let credentials = ready
                .meta
                .credentials()
                .clone()
                .with_token(token)
                .map_err(|_| "the token cannot be sent on".to_string())?;
            Arc::new(ready.meta.as_caller(credentials))
        }
        Some(_) => {
            return Err("needs a token with the operate permission (an operator's)".into());
        }
    })
}

/// The newest [`CONSOLE_AUDIT_EVENTS`] events: the head's number first, then the page after it.
async fn recent_events(meta: &MetaClient) -> Result<view::RecentEvents, String> {
    let all = AuditFilter::default();
    let head = meta
        .list_audit(&all, 0, 1)
        .await
        .map_err(|e| e.to_string())?
        .head;
    let after = head.seq.saturating_sub(CONSOLE_AUDIT_EVENTS);
    let page = meta
        .list_audit(&all, after, CONSOLE_AUDIT_EVENTS as u32)
        .await
        .map_err(|e| e.to_string())?;
    Ok(view::RecentEvents {
        head_seq: page.head.seq.max(head.seq),
        events: page.events,
    })
}

/// The token of an `Authorization: Bearer ...` header (already judged well-formed).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

fn refused(e: &AuthError) -> Page {
    let status = match e.kind() {
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e.kind().as_str(), &e.to_string())
}

/// A JSON error the page shows: `{"kind": ..., "error": ...}`.
fn error(status: StatusCode, kind: &str, message: &str) -> Page {
    let body = serde_json::json!({ "kind": kind, "error": message }).to_string();
    Page {
        status,
        content_type: JSON,
        body: body.into(),
        headers: Vec::new(),
    }
}
