//! `MetaService`: the API of storage nodes and clients. Handlers are thin: decode, call the
//! family's leader-side function (`bundles`, `topology`, `crate::healing`) or read the store,
//! encode.

use bitmountain_auth::Principal;
use bitmountain_proto::v1 as pb;
use bitmountain_proto::v1::meta_service_server::MetaService;
use tonic::Request;

use super::audit::agent_of;
use super::{ok, page_size, MetaServer, Rpc};
use crate::client::MAX_BATCH_ITEMS;
use crate::command::{Applied, Command};
use crate::error::MetaError;
use crate::state::{KeyReader, ListFilter};
use crate::types::{now_unix_ms, BundleId, BundleState};

#[tonic::async_trait]
impl MetaService for MetaServer {
    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Rpc<pb::RegisterNodeResponse> {
        let agent = agent_of(principal(&req), None);
        ok(self.register(req.into_inner(), agent).await?)
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Rpc<pb::HeartbeatResponse> {
        ok(self.heard(req.into_inner())?)
    }

    async fn set_disk_state(
        &self,
        req: Request<pb::SetDiskStateRequest>,
    ) -> Rpc<pb::SetDiskStateResponse> {
        let agent = agent_of(principal(&req), None);
        ok(self.change_disk_state(req.into_inner(), agent).await?)
    }

    async fn set_node_state(
        &self,
        req: Request<pb::SetNodeStateRequest>,
    ) -> Rpc<pb::SetNodeStateResponse> {
        let agent = agent_of(principal(&req), None);
        ok(self.change_node_state(req.into_inner(), agent).await?)
    }

    async fn allocate_bundle(
        &self,
        req: Request<pb::AllocateBundleRequest>,
    ) -> Rpc<pb::AllocateBundleResponse> {
        let b = self.allocate(req.into_inner()).await?;
        ok(pb::AllocateBundleResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn commit_bundle(
        &self,
        req: Request<pb::CommitBundleRequest>,
    ) -> Rpc<pb::CommitBundleResponse> {
        let p = principal(&req).cloned();
        let b = self.commit(req.into_inner(), p.as_ref()).await?;
        ok(pb::CommitBundleResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn batch(&self, req: Request<pb::BatchRequest>) -> Rpc<pb::BatchResponse> {
        let p = principal(&req).cloned();
        let items = req.into_inner().items;
        if items.len() > MAX_BATCH_ITEMS {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::Items,
                reason: format!(
                    "{} items in one batch, at most {MAX_BATCH_ITEMS}: split the batch",
                    items.len()
                ),
            }
            .into());
        }
        // A member that does not lead redirects the whole batch, like a unary call; an item
        // that meets a lost leadership later gets `not_leader` on its own.
        self.require_leader()?;
        let results = futures::future::join_all(
            items
                .into_iter()
                .map(|item| self.batch_item(item, p.as_ref())),
        );
        ok(pb::BatchResponse {
            results: results.await,
        })
    }

    async fn abort_bundle(
        &self,
        req: Request<pb::AbortBundleRequest>,
    ) -> Rpc<pb::AbortBundleResponse> {
        let id = BundleId::from_proto(req.get_ref().id.as_ref())?;
        self.require_leader()?;
        self.propose(Command::Abort { id }).await?;
        ok(pb::AbortBundleResponse {})
    }

    async fn get_bundle(&self, req: Request<pb::GetBundleRequest>) -> Rpc<pb::GetBundleResponse> {
        let r = req.into_inner();
        let id = BundleId::from_proto(r.id.as_ref())?;
        self.read_barrier(r.stale_ok).await?;
        let b = self
            .inner
            .store
            .bundle(id)?
            .ok_or(MetaError::UnknownBundle { id })?;
        ok(pb::GetBundleResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn list_bundles(
        &self,
        req: Request<pb::ListBundlesRequest>,
    ) -> Rpc<pb::ListBundlesResponse> {
        let r = req.into_inner();
        let filter = ListFilter {
            label: r.label.as_ref().map(|l| (l.key.clone(), l.value.clone())),
            state: BundleState::from_proto(r.state()),
        };
        self.read_barrier(r.stale_ok).await?;
        let (bundles, next) =
            self.inner
                .store
                .list_bundles(&filter, &r.page_token, page_size(r.page_size))?;
        ok(pb::ListBundlesResponse {
            bundles: bundles.iter().map(|b| self.to_proto(b)).collect(),
            next_page_token: next,
        })
    }

    async fn delete_bundle(
        &self,
        req: Request<pb::DeleteBundleRequest>,
    ) -> Rpc<pb::DeleteBundleResponse> {
        let id = BundleId::from_proto(req.get_ref().id.as_ref())?;
        self.require_leader()?;
        let agent = agent_of(principal(&req), req.get_ref().on_behalf_of.as_ref());
        let reason = &req.get_ref().reason;
        let b = self
            .bundle_cmd(Command::Delete {
                id,
                now_ms: now_unix_ms(),
                reason: reason.clone(),
                agent,
            })
            .await?;
        tracing::info!(bundle = %id, reason = %reason, "bundle deleted");
        ok(pb::DeleteBundleResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn set_retention(
        &self,
        req: Request<pb::SetRetentionRequest>,
    ) -> Rpc<pb::SetRetentionResponse> {
        let agent = agent_of(principal(&req), req.get_ref().on_behalf_of.as_ref());
        let r = req.into_inner();
        let id = BundleId::from_proto(r.id.as_ref())?;
        if !r.governance_reason.is_empty() {
            check_reason(&r.governance_reason)?;
        }
        self.require_leader()?;
        let b = self
            .bundle_cmd(Command::SetRetention {
                id,
                retain_until_unix_ms: r.retain_until_unix_ms,
                governance_reason: r.governance_reason,
                now_ms: now_unix_ms(),
                agent,
            })
            .await?;
        ok(pb::SetRetentionResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn set_legal_hold(
        &self,
        req: Request<pb::SetLegalHoldRequest>,
    ) -> Rpc<pb::SetLegalHoldResponse> {
        let agent = agent_of(principal(&req), req.get_ref().on_behalf_of.as_ref());
        let r = req.into_inner();
        let id = BundleId::from_proto(r.id.as_ref())?;
        check_reason(&r.reason)?;
        self.require_leader()?;
        let now_ms = now_unix_ms();
        let hold = r.hold.then(|| crate::types::LegalHold {
            reason: r.reason.clone(),
            since_unix_ms: now_ms,
        });
        let b = self
            .bundle_cmd(Command::SetLegalHold {
                id,
                hold,
                reason: r.reason.clone(),
                now_ms,
                agent,
            })
            .await?;
        tracing::info!(bundle = %id, hold = r.hold, reason = %r.reason, "legal hold changed");
        ok(pb::SetLegalHoldResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn purge_bundle(
        &self,
        req: Request<pb::PurgeBundleRequest>,
    ) -> Rpc<pb::PurgeBundleResponse> {
        let id = BundleId::from_proto(req.get_ref().id.as_ref())?;
        self.require_leader()?;
        self.propose(Command::Purge { id }).await?;
        ok(pb::PurgeBundleResponse {})
    }

    async fn update_placement(
        &self,
        req: Request<pb::UpdatePlacementRequest>,
    ) -> Rpc<pb::UpdatePlacementResponse> {
        // A repair's or move's worker runs on the node that asks.
        let agent = crate::types::Agent {
            name: agent_of(principal(&req), None).id,
            ..crate::types::Agent::system("repair")
        };
        let b = self.change_placement(req.into_inner(), agent).await?;
        ok(pb::UpdatePlacementResponse {
            bundle: Some(self.to_proto(&b)),
        })
    }

    async fn list_disk_bundles(
        &self,
        req: Request<pb::ListDiskBundlesRequest>,
    ) -> Rpc<pb::ListDiskBundlesResponse> {
        let r = req.into_inner();
        self.read_barrier(false).await?;
        if !self.inner.store.map().disks.contains_key(&r.disk_id) {
            return Err(MetaError::UnknownDisk { id: r.disk_id }.into());
        }
        let (shards, next) =
            self.inner
                .store
                .list_disk_bundles(r.disk_id, &r.page_token, page_size(r.page_size))?;
        ok(pb::ListDiskBundlesResponse {
            shards: shards
                .into_iter()
                .map(|(id, i)| pb::DiskShard {
                    bundle_id: Some(id.to_proto()),
                    shard_index: i,
                })
                .collect(),
            next_page_token: next,
        })
    }

    async fn list_repairs(
        &self,
        req: Request<pb::ListRepairsRequest>,
    ) -> Rpc<pb::ListRepairsResponse> {
        let r = req.into_inner();
        self.read_barrier(false).await?;
        let (tasks, next) = self
            .inner
            .store
            .list_repairs(&r.page_token, page_size(r.page_size))?;
        ok(pb::ListRepairsResponse {
            repairs: tasks.iter().map(|t| t.to_proto()).collect(),
            next_page_token: next,
            total: self.inner.store.map().cluster.repairs,
        })
    }

    async fn report_damage(
        &self,
        req: Request<pb::ReportDamageRequest>,
    ) -> Rpc<pb::ReportDamageResponse> {
        let r = req.into_inner();
        let id = BundleId::from_proto(r.id.as_ref())?;
        self.require_leader()?;
        tracing::warn!(bundle = %id, shards = ?r.shard_indexes, reason = %r.reason, "damage reported");
        let queued = match self
            .propose(Command::ReportDamage {
                id,
                shards: r.shard_indexes,
                now_ms: now_unix_ms(),
            })
            .await?
        {
            Applied::Damage { queued } => queued,
            _ => false,
        };
        ok(pb::ReportDamageResponse { queued })
    }

    async fn report_scan(
        &self,
        req: Request<pb::ReportScanRequest>,
    ) -> Rpc<pb::ReportScanResponse> {
        ok(MetaServer::report_scan(self, req.into_inner()).await?)
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Rpc<pb::ClusterStatusResponse> {
        let mut status = self.status_proto();
        // A scoped token sees only the bundles it may read, in counts too.
        if let Some(counts) = self.scoped_counts(req.extensions().get())? {
            status.bundles = Some(counts);
        }
        ok(status)
    }

    async fn claim_repairs(
        &self,
        req: Request<pb::ClaimRepairsRequest>,
    ) -> Rpc<pb::ClaimRepairsResponse> {
        ok(self.claim(req.into_inner())?)
    }

    async fn finish_repair(
        &self,
        req: Request<pb::FinishRepairRequest>,
    ) -> Rpc<pb::FinishRepairResponse> {
        self.finish(req.into_inner())?;
        ok(pb::FinishRepairResponse {})
    }

    async fn set_repair_settings(
        &self,
        req: Request<pb::SetRepairSettingsRequest>,
    ) -> Rpc<pb::SetRepairSettingsResponse> {
        let settings = crate::types::RepairSettings::from_proto(req.get_ref().settings.as_ref());
        self.require_leader()?;
        self.propose(Command::SetRepairSettings {
            settings,
            now_ms: now_unix_ms(),
            agent: agent_of(principal(&req), None),
        })
        .await?;
        ok(pb::SetRepairSettingsResponse {
            settings: Some(self.inner.store.map().cluster.repair_settings.to_proto()),
        })
    }

    async fn repair_status(
        &self,
        _req: Request<pb::RepairStatusRequest>,
    ) -> Rpc<pb::RepairStatusResponse> {
        self.require_leader()?;
        ok(self.repair_status_now()?)
    }

    async fn rebalance(&self, req: Request<pb::RebalanceRequest>) -> Rpc<pb::RebalanceResponse> {
        ok(self.rebalance_now(req.into_inner()).await?)
    }

    async fn record_events(
        &self,
        req: Request<pb::RecordEventsRequest>,
    ) -> Rpc<pb::RecordEventsResponse> {
        let p = principal(&req).cloned();
        let recorded = MetaServer::record_events(self, p.as_ref(), req.into_inner()).await?;
        ok(pb::RecordEventsResponse { recorded })
    }
}

/// The caller, as the access layer found it (none without access control).
pub(super) fn principal<T>(req: &Request<T>) -> Option<&Principal> {
    req.extensions().get::<Principal>()
}

/// A reason a delete or a legal hold must give: not empty, at most `MAX_REASON_BYTES`.
pub(crate) fn check_reason(reason: &str) -> crate::error::Result<()> {
    if !crate::types::reason_is_acceptable(reason) {
        return Err(MetaError::InvalidArgument {
            field: crate::error::Field::Reason,
            reason: format!(
                "required: say why, in at most {} bytes",
                crate::types::MAX_REASON_BYTES
            ),
        });
    }
    Ok(())
}
