//! The bundle commands on the leader: validation and decisions before proposing (allocate
//! with its placement, commit, batches of both, expiry). Their apply is
//! `crate::state::apply::bundles`.

use bitmountain_proto::v1 as pb;

use bitmountain_worker::{Next, StepError, Worker};

use super::{
    unexpected, MetaServer, EXPIRY_BATCH, EXPIRY_SCAN_INTERVAL, MAX_ALLOCATION_TTL_MS,
    MAX_REQUEST_ID_BYTES,
};
use crate::command::{Allocate, Applied, Command, Commit};
use crate::error::{MetaError, Result};
use crate::rules;
use crate::state::KeyReader;
use crate::types::{now_unix_ms, BundleId, BundleRecord, Code};
use crate::wire::{item_error, labels_from_proto};

impl MetaServer {
    pub(super) async fn allocate(&self, req: pb::AllocateBundleRequest) -> Result<BundleRecord> {
        if req.request_id.is_empty() || req.request_id.len() > MAX_REQUEST_ID_BYTES {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::RequestId,
                reason: format!("required, 1..={MAX_REQUEST_ID_BYTES} bytes (a UUID per upload)"),
            });
        }
        let code = req
            .code
            .as_ref()
            .map(Code::from_proto)
            .unwrap_or(self.inner.cfg.default_code);
        code.validate()?;
        let labels = labels_from_proto(&req.labels)?;
        if req.ttl_ms > MAX_ALLOCATION_TTL_MS {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::TtlMs,
                reason: format!("at most {MAX_ALLOCATION_TTL_MS} ms"),
            });
        }
        let ttl = if req.ttl_ms == 0 {
            self.inner.cfg.allocation_ttl_ms
        } else {
            req.ttl_ms
        };
        self.require_leader()?;
        if let Some(id) = self.inner.store.request_bundle(&req.request_id)? {
            if let Some(b) = self.inner.store.bundle(id)? {
                return Ok(b);
            }
        }
        let mut attempt = 0;
        loop {
            let now = now_unix_ms();
            let id = BundleId::generate(now);
            let placement = self.place(&code, id)?;
            let cmd = Command::Allocate(Allocate {
                request_id: req.request_id.clone(),
                id,
                code,
                labels: labels.clone(),
                expected_length: req.expected_length,
                placement,
                now_ms: now,
                expires_ms: now + ttl,
                retain_until_unix_ms: req.retain_until_unix_ms,
            });
            match self.propose(cmd).await {
                Err(MetaError::PlacementStale { .. }) if attempt < 3 => {
                    self.forget_placement_map();
                    attempt += 1;
                }
                Ok(Applied::Bundle(b)) => return Ok(b),
                Ok(other) => return Err(unexpected(other)),
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) async fn bundle_cmd(&self, cmd: Command) -> Result<BundleRecord> {
        match self.propose(cmd).await? {
            Applied::Bundle(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    pub(super) async fn commit(
        &self,
        r: pb::CommitBundleRequest,
        principal: Option<&bitmountain_auth::Principal>,
    ) -> Result<BundleRecord> {
        let agent = super::audit::agent_of(principal, r.on_behalf_of.as_ref());
        let id = BundleId::from_proto(r.id.as_ref())?;
        if r.sha256.len() != 32 {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::Sha256,
                reason: format!("must be 32 bytes, got {}", r.sha256.len()),
            });
        }
        if r.index_offset
            .checked_add(r.index_length)
            .is_none_or(|end| end > r.length)
        {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::IndexOffset,
                reason: format!(
                    "index [{}, +{}) lies outside the bundle's {} bytes",
                    r.index_offset, r.index_length, r.length
                ),
            });
        }
        self.require_leader()?;
        self.bundle_cmd(Command::Commit(Commit {
            id,
            length: r.length,
            index_offset: r.index_offset,
            index_length: r.index_length,
            sha256: r.sha256,
            file_count: r.file_count,
            missing_shards: r.missing_shards,
            now_ms: now_unix_ms(),
            agent,
        }))
        .await
    }

    /// One item of a batch, handled as its unary call would be.
    pub(super) async fn batch_item(
        &self,
        item: pb::BatchItem,
        principal: Option<&bitmountain_auth::Principal>,
    ) -> pb::BatchResult {
        use pb::batch_item::Item;
        use pb::batch_result::Result as Answer;
        let answer = match item.item {
            Some(Item::Allocate(r)) => self.allocate(r).await.map(|b| {
                Answer::Allocate(pb::AllocateBundleResponse {
                    bundle: Some(self.to_proto(&b)),
                })
            }),
            Some(Item::Commit(r)) => self.commit(r, principal).await.map(|b| {
                Answer::Commit(pb::CommitBundleResponse {
                    bundle: Some(self.to_proto(&b)),
                })
            }),
            None => Err(MetaError::InvalidArgument {
                field: crate::error::Field::Item,
                reason: "a batch item must hold an allocation or a commit".into(),
            }),
        };
        pb::BatchResult {
            result: Some(answer.unwrap_or_else(|e| Answer::Error(item_error(e)))),
        }
    }

    /// Proposes expiry of allocations past their deadline (leader only).
    async fn expire_once(&self) -> Result<usize> {
        if !self.inner.raft.is_leader() {
            return Ok(0);
        }
        let now = now_unix_ms();
        let ids = self.inner.store.expired(now, EXPIRY_BATCH)?;
        let n = ids.len();
        if n > 0 {
            self.propose(Command::Expire { ids, now_ms: now }).await?;
            tracing::info!(count = n, "expired pending allocations");
        }
        Ok(n)
    }

    /// A repair's or move's compare-and-set of a placement: one disk per shard index, and
    /// distinct failure domains among the live copies (checked against the applied map).
    pub(crate) async fn change_placement(
        &self,
        r: pb::UpdatePlacementRequest,
        agent: crate::types::Agent,
    ) -> Result<BundleRecord> {
        let id = BundleId::from_proto(r.id.as_ref())?;
        let mut placement = vec![u64::MAX; r.placement.len()];
        for loc in &r.placement {
            let i = loc.shard_index as usize;
            if i >= placement.len() || placement[i] != u64::MAX {
                return Err(MetaError::MalformedPlacement {
                    id,
                    reason: format!(
                        "shard indexes must be 0..{} each exactly once (bad or repeated index {i})",
                        placement.len()
                    ),
                });
            }
            placement[i] = loc.disk_id;
        }
        let level = self.inner.cfg.domain_level;
        if let Some(shared) = rules::shared_domain(&self.inner.store.map(), &placement, level) {
            return Err(MetaError::MalformedPlacement {
                id,
                reason: format!(
                    "shards {} and {} would share failure domain {} ({level})",
                    shared.first, shared.second, shared.domain
                ),
            });
        }
        self.require_leader()?;
        self.bundle_cmd(Command::UpdatePlacement {
            id,
            expected_generation: r.expected_generation,
            placement,
            now_ms: now_unix_ms(),
            rewritten_shards: r.rewritten_shards,
            agent,
        })
        .await
    }
}

/// The expiry scan as a background worker: every [`EXPIRY_SCAN_INTERVAL`], the leader drops
/// pending allocations past their deadline (at most [`EXPIRY_BATCH`] per step).
#[derive(Debug)]
pub struct Expiry {
    server: MetaServer,
    expired: u64,
}

impl Expiry {
    /// The expiry scan of `server`.
    pub fn new(server: MetaServer) -> Self {
        Self { server, expired: 0 }
    }
}

impl Worker for Expiry {
    fn name(&self) -> &'static str {
        "expiry"
    }

    async fn step(&mut self) -> std::result::Result<Next, StepError> {
        let every = Next::Every(EXPIRY_SCAN_INTERVAL);
        match self.server.expire_once().await {
            Ok(n) => {
                self.expired += n as u64;
                Ok(every)
            }
            Err(e) => Err(StepError::new(e, every)),
        }
    }

    fn note(&self) -> String {
        format!(
            "{} allocations expired; {}",
            self.expired,
            crate::healing::detector::leader_note(&self.server)
        )
    }
}
