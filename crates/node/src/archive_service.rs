//! ArchiveService: the public API over gRPC. This module only converts between wire messages
//! and the coordinator's domain types; every decision is made in `coordinator`, and the
//! caller's scope is applied through `access`. What the audit trail needs — the client each
//! change is made for, refusals of scope, reads — goes through `audit`.

use std::pin::Pin;
use std::sync::Arc;

use bitmountain_auth::{BundleAction, Principal};
use bitmountain_bundle::IndexEntry;
use bitmountain_meta_client::types::Agent;
use bitmountain_meta_client::{Bundle, BundleState, Code as MetaCode};
use bitmountain_proto::archive::v1 as pb;
use bitmountain_proto::archive::v1::archive_service_server::ArchiveService;
use sha2::Digest as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::access;
use crate::audit::NodeAudit;
use crate::console::view::{disk_state_name, node_state_name};
use crate::coordinator::upload::{FileHeader, UploadItem, UploadStart};
use crate::coordinator::{parse_bundle_id, Coordinator};
use crate::error::{NodeError, Result};
use crate::limits::{INDEX_PAGE_ENTRIES, READ_PIECE_BYTES, READ_WINDOW_BYTES};

/// The ArchiveService implementation.
#[derive(Debug, Clone)]
pub struct ArchiveApi {
    coordinator: Arc<Coordinator>,
    audit: Arc<NodeAudit>,
}

impl ArchiveApi {
    pub fn new(coordinator: Arc<Coordinator>, audit: Arc<NodeAudit>) -> Self {
        ArchiveApi { coordinator, audit }
    }
}

/// The archive methods whose refusals a handler decides, named as the audit trail names them.
mod method {
    pub const PUT_BUNDLE: &str = "/bitmountain.archive.v1.ArchiveService/PutBundle";
    pub const GET_FILE: &str = "/bitmountain.archive.v1.ArchiveService/GetFile";
    pub const GET_INDEX: &str = "/bitmountain.archive.v1.ArchiveService/GetIndex";
    pub const STAT_BUNDLE: &str = "/bitmountain.archive.v1.ArchiveService/StatBundle";
    pub const EXPORT_BUNDLE: &str = "/bitmountain.archive.v1.ArchiveService/ExportBundle";
    pub const DELETE_BUNDLE: &str = "/bitmountain.archive.v1.ArchiveService/DeleteBundle";
    pub const SET_RETENTION: &str = "/bitmountain.archive.v1.ArchiveService/SetRetention";
    pub const SET_LEGAL_HOLD: &str = "/bitmountain.archive.v1.ArchiveService/SetLegalHold";
    pub const CHECK_FIXITY: &str = "/bitmountain.archive.v1.ArchiveService/CheckFixity";
}

/// The agent a request acts as, for the changes the node makes for it.
fn agent(principal: Option<&Principal>) -> Agent {
    principal.map(Agent::of).unwrap_or_default()
}

type RpcStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

fn upload_item(msg: std::result::Result<pb::PutBundleRequest, Status>) -> Result<UploadItem> {
    let msg = msg.map_err(|status| {
        // tonic refuses a message over the decoding limit before it reaches us.
        if status.code() == tonic::Code::ResourceExhausted
            || status.message().contains("message length too large")
        {
            NodeError::MessageTooLarge {
                detail: status.message().to_owned(),
            }
        } else {
            NodeError::UploadIncomplete {
                reason: format!("the client stream broke: {}", status.message()),
            }
        }
    })?;
    match msg.item {
        None => Err(NodeError::BadUpload {
            reason: "an empty PutBundle message (no start, file, data or end)".into(),
        }),
        Some(pb::put_bundle_request::Item::Start(start)) => {
            let mut labels = std::collections::BTreeMap::new();
            for l in start.labels {
                if labels.insert(l.key.clone(), l.value).is_some() {
                    return Err(NodeError::BadUpload {
                        reason: format!("label {:?} is given twice", l.key),
                    });
                }
            }
            let code = start.code.map(|c| MetaCode {
                data_shards: c.data_shards,
                parity_shards: c.parity_shards,
                cell_bytes: if c.cell_bytes == 0 {
                    u64::from(bitmountain_erasure::code::DEFAULT_CELL_BYTES)
                } else {
                    c.cell_bytes
                },
            });
            Ok(UploadItem::Start(UploadStart {
                labels,
                code,
                expected_content_bytes: start.expected_content_bytes,
                retain_until_unix_ms: start.retain_until_unix_ms,
                // Set by the handler from the caller's credentials, never from the message.
                agent: Agent::default(),
            }))
        }
        Some(pb::put_bundle_request::Item::File(f)) => {
            let expected_sha256 = match f.sha256.len() {
                0 => None,
                32 => {
                    let mut d = [0u8; 32];
                    d.copy_from_slice(&f.sha256);
                    Some(d)
                }
                n => {
                    return Err(NodeError::BadUpload {
                        reason: format!(
                            "file {:?}: an expected SHA-256 is 32 bytes, not {n}",
                            f.path
                        ),
                    })
                }
            };
            Ok(UploadItem::File(FileHeader {
                path: f.path,
                content_type: f.content_type,
                size_bytes: f.size_bytes,
                expected_sha256,
            }))
        }
        Some(pb::put_bundle_request::Item::Data(bytes)) => Ok(UploadItem::Data(bytes)),
        Some(pb::put_bundle_request::Item::End(_)) => Ok(UploadItem::End),
    }
}

/// A reason a delete or a legal hold change must give.
fn check_reason(what: &str, reason: &str) -> Result<()> {
    if !bitmountain_meta_client::types::reason_is_acceptable(reason) {
        return Err(NodeError::BadRequest {
            reason: format!(
                "{what} needs a reason (`--reason`): say why, in at most {} bytes",
                bitmountain_meta_client::types::MAX_REASON_BYTES
            ),
        });
    }
    Ok(())
}

pub(crate) fn code_to_proto(code: &MetaCode) -> pb::Code {
    pb::Code {
        data_shards: code.data_shards,
        parity_shards: code.parity_shards,
        cell_bytes: code.cell_bytes,
    }
}

fn state_name(state: BundleState) -> &'static str {
    match state {
        BundleState::Pending => "pending",
        BundleState::Sealed => "sealed",
        BundleState::Deleting => "deleting",
    }
}

pub(crate) fn bundle_to_proto(b: &Bundle) -> pb::BundleInfo {
    let r = &b.record;
    let (legal_hold_reason, legal_hold_since_unix_ms) = r.preservation.hold_parts();
    pb::BundleInfo {
        bundle_id: r.id.to_string(),
        state: state_name(r.state).into(),
        code: Some(code_to_proto(&r.code)),
        length_bytes: r.length,
        file_count: r.file_count,
        sha256: hex::encode(&r.sha256),
        labels: r
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        created_unix_ms: r.created_unix_ms,
        index_offset: r.index_offset,
        index_length: r.index_length,
        shards: b
            .locations
            .iter()
            .map(|l| pb::ShardInfo {
                shard_index: l.shard_index,
                disk_id: l.disk_id,
                node_id: l.node_id,
                node_address: l.node_address.clone(),
            })
            .collect(),
        placement_generation: r.placement_generation,
        retain_until_unix_ms: r.preservation.retain_until_unix_ms,
        legal_hold_reason,
        legal_hold_since_unix_ms,
    }
}

fn file_info(e: &IndexEntry) -> pb::FileInfo {
    pb::FileInfo {
        path: e.path.clone(),
        content_type: e.content_type.clone(),
        size_bytes: e.length,
        sha256: hex::encode(e.sha256),
        bundle_offset: e.offset,
    }
}

/// Forwards windows of verified bytes to a gRPC stream in pieces of at most
/// [`READ_PIECE_BYTES`]; `first` is prepended to the first message.
fn pieces_stream<T: Send + 'static>(
    mut windows: mpsc::Receiver<Result<Vec<u8>>>,
    mut make: impl FnMut(bytes::Bytes, bool) -> T + Send + 'static,
    empty_first: bool,
) -> RpcStream<T> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut first = true;
        while let Some(window) = windows.recv().await {
            match window {
                Ok(bytes) => {
                    let bytes = bytes::Bytes::from(bytes);
                    let mut at = 0;
                    while at < bytes.len() {
                        let end = (at + READ_PIECE_BYTES).min(bytes.len());
                        if tx
                            .send(Ok(make(bytes.slice(at..end), first)))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        first = false;
                        at = end;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
            }
        }
        if first && empty_first {
            let _ = tx.send(Ok(make(bytes::Bytes::new(), true))).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

impl ArchiveApi {
    /// Refuses a read of bundle `id` outside the caller's scope (its labels come from the
    /// coordinator's cache, which the read itself then uses).
    async fn may_read(
        &self,
        principal: Option<&Principal>,
        id: bitmountain_meta_client::BundleId,
    ) -> Result<()> {
        if !access::is_scoped(principal) {
            return self.check(
                method::GET_FILE,
                principal,
                BundleAction::Read,
                id,
                &Default::default(),
            );
        }
        let bundle = self.coordinator.sealed_bundle(id, false).await?;
        let labels = &bundle.bundle.record.labels;
        self.check(method::GET_FILE, principal, BundleAction::Read, id, labels)
    }

    /// Governance mode (shortening a retention) is for tokens with the `admin` permission; a
    /// refusal is noted for the audit trail.
    fn may_govern(
        &self,
        principal: Option<&Principal>,
        id: bitmountain_meta_client::BundleId,
    ) -> Result<()> {
        let Some(p @ Principal::Token(t)) = principal else {
            return Ok(()); // a peer, or no access control
        };
        if t.role.has(bitmountain_auth::Permission::Admin) {
            return Ok(());
        }
        let e = bitmountain_auth::AuthError::MissingPermission {
            who: p.to_string(),
            permission: bitmountain_auth::Permission::Admin,
            what: "shortening a retention (governance mode)".into(),
        };
        self.audit
            .refused(method::SET_RETENTION, Some(p), format!("bundle {id}"), &e);
        Err(NodeError::from(e))
    }

    /// `access::check`, a refusal noted for the audit trail.
    fn check(
        &self,
        method: &str,
        principal: Option<&Principal>,
        action: BundleAction,
        id: bitmountain_meta_client::BundleId,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let Some(p) = principal else { return Ok(()) };
        p.may_access(action, labels).map_err(|e| {
            self.audit
                .refused(method, Some(p), format!("bundle {id}"), &e);
            NodeError::from(e)
        })
    }

    /// Refuses a delete, retention or hold change of bundle `id` outside the caller's scope; a
    /// bundle the group does not know is reported by the change itself.
    async fn check_scope<T>(
        &self,
        method: &str,
        request: &Request<T>,
        id: bitmountain_meta_client::BundleId,
    ) -> Result<()> {
        let principal = access::principal(request);
        if !access::is_scoped(principal.as_ref()) {
            return Ok(());
        }
        match self.coordinator.meta.get_bundle(id, false).await {
            Ok(b) => self.check(
                method,
                principal.as_ref(),
                BundleAction::Delete,
                id,
                &b.record.labels,
            ),
            Err(bitmountain_meta_client::MetaError::UnknownBundle { .. }) => Ok(()),
            Err(e) => Err(NodeError::from(e)),
        }
    }
}

#[tonic::async_trait]
impl ArchiveService for ArchiveApi {
    async fn put_bundle(
        &self,
        request: Request<Streaming<pb::PutBundleRequest>>,
    ) -> std::result::Result<Response<pb::PutBundleResponse>, Status> {
        let principal = access::principal(&request);
        let audit = Arc::clone(&self.audit);
        let items = request.into_inner().map(move |m| match upload_item(m)? {
            // A scoped writer's uploads carry its scope's labels.
            UploadItem::Start(mut start) => {
                let asked = std::mem::take(&mut start.labels);
                start.labels = match &principal {
                    Some(p) => p.upload_labels(asked).map_err(|e| {
                        audit.refused(method::PUT_BUNDLE, Some(p), "upload".into(), &e);
                        NodeError::from(e)
                    })?,
                    None => asked,
                };
                start.agent = agent(principal.as_ref());
                Ok(UploadItem::Start(start))
            }
            other => Ok(other),
        });
        let outcome = self.coordinator.put_bundle(items).await?;
        let r = &outcome.bundle.record;
        Ok(Response::new(pb::PutBundleResponse {
            bundle_id: r.id.to_string(),
            length_bytes: r.length,
            file_count: outcome.file_count,
            bundle_sha256: hex::encode(&r.sha256),
            files: outcome
                .files
                .iter()
                .map(|f| pb::FileDigest {
                    path: f.path.clone(),
                    size_bytes: f.size_bytes,
                    sha256: hex::encode(f.sha256),
                })
                .collect(),
            code: Some(code_to_proto(&r.code)),
            missing_shards: outcome.missing_shards,
        }))
    }

    type GetFileStream = RpcStream<pb::GetFileResponse>;

    async fn get_file(
        &self,
        request: Request<pb::GetFileRequest>,
    ) -> std::result::Result<Response<Self::GetFileStream>, Status> {
        let principal = access::principal(&request);
        let req = request.into_inner();
        let id = parse_bundle_id(&req.bundle_id)?;
        self.may_read(principal.as_ref(), id).await?;
        let (bundle, entry) = self.coordinator.locate_file(id, &req.path).await?;
        let audit = (principal.as_ref(), id, &entry.path);
        if req.offset > entry.length {
            return Err(NodeError::BadRange {
                reason: format!(
                    "offset {} is beyond the end of {:?} ({} bytes)",
                    req.offset, entry.path, entry.length
                ),
            }
            .into());
        }
        let len = req
            .length
            .unwrap_or(u64::MAX)
            .min(entry.length - req.offset);
        self.audit.read(audit.0, audit.1, audit.2, req.offset, len);
        let whole = req.offset == 0 && len == entry.length;
        let info = file_info(&entry);
        if len <= READ_WINDOW_BYTES {
            // One read window: read it here and answer from memory (no streaming tasks on the
            // critical path of small reads). Its chunks passed their CRC32C; the client checks
            // the file's SHA-256 end to end (the first message carries it).
            let mut bytes = self
                .coordinator
                .read_range(&bundle, entry.offset + req.offset, len)
                .await?;
            // A whole file is checked here too: bytes that pass their CRCs but not the
            // file's SHA-256 are decoded around the shard that returned them.
            if whole && <[u8; 32]>::from(sha2::Sha256::digest(&bytes)) != entry.sha256 {
                bytes = self.coordinator.reread_verified(&bundle, &entry).await?;
            }
            let bytes = bytes::Bytes::from(bytes);
            bitmountain_metrics::global()
                .read_bytes
                .inc_by(bytes.len() as u64);
            let mut messages = Vec::new();
            let mut at = 0;
            loop {
                let end = (at + READ_PIECE_BYTES).min(bytes.len());
                messages.push(Ok(pb::GetFileResponse {
                    file: (at == 0).then(|| info.clone()),
                    data: bytes.slice(at..end),
                }));
                at = end;
                if at >= bytes.len() {
                    break;
                }
            }
            return Ok(Response::new(Box::pin(tokio_stream::iter(messages))));
        }
        // A larger whole file is also checked against its SHA-256 as it streams.
        let windows = self.coordinator.stream_range(
            bundle,
            entry.offset + req.offset,
            len,
            whole.then_some(entry.sha256),
        );
        let read_bytes = bitmountain_metrics::global();
        let stream = pieces_stream(
            windows,
            move |data, first| {
                read_bytes.read_bytes.inc_by(data.len() as u64);
                pb::GetFileResponse {
                    file: first.then(|| info.clone()),
                    data,
                }
            },
            true,
        );
        Ok(Response::new(stream))
    }

    type GetIndexStream = RpcStream<pb::GetIndexResponse>;

    async fn get_index(
        &self,
        request: Request<pb::GetIndexRequest>,
    ) -> std::result::Result<Response<Self::GetIndexStream>, Status> {
        let id = parse_bundle_id(&request.get_ref().bundle_id)?;
        let bundle = self.coordinator.sealed_bundle(id, false).await?;
        self.check(
            method::GET_INDEX,
            access::principal(&request).as_ref(),
            BundleAction::Read,
            id,
            &bundle.bundle.record.labels,
        )?;
        let index = self.coordinator.index(&bundle).await?;
        let (tx, rx) = mpsc::channel(2);
        tokio::spawn(async move {
            let entries = index.entries();
            if entries.is_empty() {
                let _ = tx
                    .send(Ok(pb::GetIndexResponse { files: Vec::new() }))
                    .await;
            }
            for page in entries.chunks(INDEX_PAGE_ENTRIES) {
                let files = page.iter().map(file_info).collect();
                if tx.send(Ok(pb::GetIndexResponse { files })).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn stat_bundle(
        &self,
        request: Request<pb::StatBundleRequest>,
    ) -> std::result::Result<Response<pb::StatBundleResponse>, Status> {
        let id = parse_bundle_id(&request.get_ref().bundle_id)?;
        let bundle = self.coordinator.sealed_bundle(id, true).await?;
        self.check(
            method::STAT_BUNDLE,
            access::principal(&request).as_ref(),
            BundleAction::Read,
            id,
            &bundle.bundle.record.labels,
        )?;
        Ok(Response::new(pb::StatBundleResponse {
            bundle: Some(bundle_to_proto(&bundle.bundle)),
        }))
    }

    async fn list_bundles(
        &self,
        request: Request<pb::ListBundlesRequest>,
    ) -> std::result::Result<Response<pb::ListBundlesResponse>, Status> {
        let principal = access::principal(&request);
        let req = request.into_inner();
        let token = if req.page_token.is_empty() {
            Vec::new()
        } else {
            hex::decode(&req.page_token).map_err(|_| NodeError::BadRequest {
                reason: "page_token is not one this API returned; start again with an empty token"
                    .into(),
            })?
        };
        let asked = req.label.map(|l| (l.key, l.value));
        let label = match access::list_plan(principal.as_ref(), asked) {
            access::ListPlan::Nothing => {
                return Ok(Response::new(pb::ListBundlesResponse::default()));
            }
            access::ListPlan::By(label) => label,
        };
        let (mut bundles, next) = self
            .coordinator
            .meta
            .list_bundles(
                label.as_ref().map(|(k, v)| (k.as_str(), v.as_str())),
                Some(BundleState::Sealed),
                &token,
                req.page_size,
            )
            .await
            .map_err(NodeError::from)?;
        if let Some(p) = &principal {
            bundles.retain(|b| p.sees(&b.record.labels));
        }
        Ok(Response::new(pb::ListBundlesResponse {
            bundles: bundles.iter().map(bundle_to_proto).collect(),
            next_page_token: hex::encode(next),
        }))
    }

    type ExportBundleStream = RpcStream<pb::ExportBundleResponse>;

    async fn export_bundle(
        &self,
        request: Request<pb::ExportBundleRequest>,
    ) -> std::result::Result<Response<Self::ExportBundleStream>, Status> {
        let id = parse_bundle_id(&request.get_ref().bundle_id)?;
        let bundle = self.coordinator.sealed_bundle(id, false).await?;
        let principal = access::principal(&request);
        self.check(
            method::EXPORT_BUNDLE,
            principal.as_ref(),
            BundleAction::Read,
            id,
            &bundle.bundle.record.labels,
        )?;
        let len = bundle.info.bundle_len;
        self.audit.read(principal.as_ref(), id, "", 0, len);
        let sha = bundle.info.sha256;
        let windows = self.coordinator.stream_range(bundle, 0, len, Some(sha));
        Ok(Response::new(pieces_stream(
            windows,
            |data, _| pb::ExportBundleResponse { data },
            false,
        )))
    }

    async fn delete_bundle(
        &self,
        request: Request<pb::DeleteBundleRequest>,
    ) -> std::result::Result<Response<pb::DeleteBundleResponse>, Status> {
        let id = parse_bundle_id(&request.get_ref().bundle_id)?;
        let reason = request.get_ref().reason.clone();
        check_reason("a delete", &reason)?;
        self.check_scope(method::DELETE_BUNDLE, &request, id)
            .await?;
        let agent = agent(access::principal(&request).as_ref());
        let bundle = self.coordinator.delete_bundle(id, &reason, &agent).await?;
        Ok(Response::new(pb::DeleteBundleResponse {
            bundle: Some(bundle_to_proto(&bundle)),
        }))
    }

    async fn set_retention(
        &self,
        request: Request<pb::SetRetentionRequest>,
    ) -> std::result::Result<Response<pb::SetRetentionResponse>, Status> {
        let id = parse_bundle_id(&request.get_ref().bundle_id)?;
        self.check_scope(method::SET_RETENTION, &request, id)
            .await?;
        let until = request.get_ref().retain_until_unix_ms;
        let governance = request.get_ref().governance_reason.clone();
        let principal = access::principal(&request);
        if !governance.is_empty() {
            check_reason("a governance-mode retention change", &governance)?;
            self.may_govern(principal.as_ref(), id)?;
        }
        let agent = agent(principal.as_ref());
        let bundle = self
            .coordinator
            .meta
            .set_retention(id, until, &governance, &agent)
            .await
            .map_err(NodeError::from)?;
        self.coordinator.forget_bundle(id);
        Ok(Response::new(pb::SetRetentionResponse {
            bundle: Some(bundle_to_proto(&bundle)),
        }))
    }

    async fn set_legal_hold(
        &self,
        request: Request<pb::SetLegalHoldRequest>,
    ) -> std::result::Result<Response<pb::SetLegalHoldResponse>, Status> {
        let id = parse_bundle_id(&request.get_ref().bundle_id)?;
        let (hold, reason) = (request.get_ref().hold, request.get_ref().reason.clone());
        check_reason("a legal hold change", &reason)?;
        self.check_scope(method::SET_LEGAL_HOLD, &request, id)
            .await?;
        let agent = agent(access::principal(&request).as_ref());
        let bundle = self
            .coordinator
            .meta
            .set_legal_hold(id, hold, &reason, &agent)
            .await
            .map_err(NodeError::from)?;
        self.coordinator.forget_bundle(id);
        tracing::info!(bundle = %id, hold, %reason, "legal hold changed");
        Ok(Response::new(pb::SetLegalHoldResponse {
            bundle: Some(bundle_to_proto(&bundle)),
        }))
    }

    async fn check_fixity(
        &self,
        request: Request<pb::CheckFixityRequest>,
    ) -> std::result::Result<Response<pb::CheckFixityResponse>, Status> {
        let id = parse_bundle_id(&request.get_ref().bundle_id)?;
        let principal = access::principal(&request);
        let bundle = self.coordinator.sealed_bundle(id, false).await?;
        let labels = &bundle.bundle.record.labels;
        self.check(
            method::CHECK_FIXITY,
            principal.as_ref(),
            BundleAction::Read,
            id,
            labels,
        )?;
        let report = self.coordinator.check_fixity(id, None).await?;
        let recorded =
            crate::fixity::record(&self.coordinator.meta, &report, agent(principal.as_ref())).await;
        Ok(Response::new(crate::fixity::report_to_proto(
            &report, recorded,
        )))
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> std::result::Result<Response<pb::ClusterStatusResponse>, Status> {
        let principal = access::principal(&request);
        let s = self
            .coordinator
            .meta
            .cluster_status()
            .await
            .map_err(NodeError::from)?;
        // A scoped token sees only the bundles it may read, in counts too.
        let counts = access::scoped_counts(&self.coordinator.meta, principal.as_ref())
            .await?
            .unwrap_or(s.bundles);
        Ok(Response::new(pb::ClusterStatusResponse {
            cluster_id: s.cluster_id,
            meta_leader_id: s.leader_id,
            meta_leader_address: s.leader_address,
            meta_term: s.term,
            nodes: s
                .nodes
                .iter()
                .map(|n| pb::NodeStatus {
                    node_id: n.node_id,
                    address: n.address.clone(),
                    state: node_state_name(n.state).into(),
                    zone: n.zone.clone(),
                    rack: n.rack.clone(),
                    host: n.host.clone(),
                    last_heartbeat_age_ms: n.last_heartbeat_age_ms,
                    disks: n
                        .disks
                        .iter()
                        .map(|d| pb::DiskStatus {
                            disk_id: d.disk_id,
                            path: d.path.clone(),
                            state: disk_state_name(d.state).into(),
                            capacity_bytes: d.capacity_bytes,
                            used_bytes: d.stored_bytes(),
                        })
                        .collect(),
                })
                .collect(),
            bundles_pending: counts.pending,
            bundles_sealed: counts.sealed,
            bundles_deleting: counts.deleting,
            repairs_queued: s.repairs_queued,
            answered_by: self.coordinator.address.clone(),
        }))
    }
}
