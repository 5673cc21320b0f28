//! [`MetaClient`]: what storage nodes, the CLI and tests use to talk to the metadata group.
//!
//! Give it any members' addresses. Every method is one RPC: it builds the request (with
//! [`crate::wire`]), sends it through the transport (leader redirect, member rotation,
//! retries with backoff until the call's deadline: [`crate::transport`]) and converts the
//! answer back. Allocations and commits go through the batch sender ([`crate::batch`]).

use std::sync::Arc;
use std::time::Duration;

use bitmountain_auth::{Role, Scope, Token, TokenId, TokenRecord};
use bitmountain_proto::v1 as pb;
use bitmountain_proto::Credentials;

use crate::batch::{BatchStats, Batcher};
use crate::error::{Field, MetaError, Result};
use crate::transport::{self, Transport};
use crate::types::{
    Agent, AllocateRequest, Bundle, BundleId, BundleState, ClusterStatus, CommitRequest, DiskState,
    FinishedRepair, Heartbeat, HeartbeatReply, MemberInfo, NodeState, RebalancePlan,
    RegisteredNode, Registration, RepairClaim, RepairPage, RepairSettings, RepairStatus,
    TokenTable,
};
use crate::wire;

pub use crate::batch::{MAX_BATCHES_IN_FLIGHT, MAX_BATCH_ITEMS, MAX_QUEUED_ITEMS};
pub use crate::transport::{CONNECT_TIMEOUT, DEFAULT_CALL_TIMEOUT, MAX_BACKOFF, MIN_BACKOFF};

/// A client of the metadata group. Cheap to share (`Arc`); safe for concurrent use.
///
/// Allocations and commits of concurrent callers leave together: while earlier batches are in
/// flight, new ones queue and go out as one `Batch` call (see [`MAX_BATCHES_IN_FLIGHT`]). A
/// caller alone is sent at once, so batching adds no wait; it only saves per-call work on both
/// ends when many callers share one client.
#[derive(Debug)]
pub struct MetaClient {
    transport: Arc<Transport>,
    batcher: Batcher,
}

impl MetaClient {
    /// A client for these members (`host:port`, comma lists accepted). Connects lazily.
    pub fn new<I, S>(endpoints: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let transport = Transport::new(
            transport::parse_endpoints(endpoints)?,
            DEFAULT_CALL_TIMEOUT,
            Credentials::insecure(),
        );
        Ok(Self::over(transport, true))
    }

    /// Connects with `credentials` (TLS, a token or a certificate) instead of plaintext.
    pub fn with_credentials(self, credentials: Credentials) -> Self {
        self.rebuilt(
            self.transport.timeout(),
            credentials,
            self.batcher.batching(),
        )
    }

    /// A client of the same members and deadline that connects with `credentials` (a node
    /// asking on a caller's behalf, with the caller's token). Its connections are its own.
    pub fn as_caller(&self, credentials: Credentials) -> MetaClient {
        self.rebuilt(self.transport.timeout(), credentials, false)
    }

    /// A client of the same members with these settings (new connections).
    fn rebuilt(&self, timeout: Duration, credentials: Credentials, batching: bool) -> Self {
        let transport = Transport::new(self.transport.endpoints().to_vec(), timeout, credentials);
        Self::over(transport, batching)
    }

    /// How this client connects.
    pub fn credentials(&self) -> &Credentials {
        self.transport.credentials()
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    fn over(transport: Arc<Transport>, batching: bool) -> Self {
        Self {
            batcher: Batcher::new(Arc::clone(&transport), batching),
            transport,
        }
    }

    /// Sets the deadline of each call (retries included).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.rebuilt(
            timeout,
            self.transport.credentials().clone(),
            self.batcher.batching(),
        )
    }

    /// Whether concurrent allocations and commits share `Batch` calls (on by default; off
    /// sends each as its own call, which the throughput benchmark compares against).
    pub fn with_batching(mut self, batching: bool) -> Self {
        self.batcher.set_batching(batching);
        self
    }

    /// The member this client currently sends to first.
    pub fn current_leader(&self) -> Option<String> {
        self.transport.leader()
    }

    /// What batching has done so far.
    pub fn batch_stats(&self) -> BatchStats {
        self.batcher.stats()
    }

    /// Registers (or re-registers) a node and its disks.
    pub async fn register_node(&self, registration: &Registration) -> Result<RegisteredNode> {
        let r = registration.to_proto();
        self.transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.register_node(r).await }
            })
            .await
            .map(RegisteredNode::from_proto)
    }

    /// Reports liveness and disk usage to the leader (soft state, no Raft write).
    pub async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<HeartbeatReply> {
        let r = heartbeat.to_proto();
        self.transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.heartbeat(r).await }
            })
            .await
            .map(HeartbeatReply::from_proto)
    }

    /// Allocates a pending bundle and its placement.
    pub async fn allocate_bundle(&self, req: &AllocateRequest) -> Result<Bundle> {
        let resp = self.batcher.allocate(req.to_proto()).await?;
        Bundle::from_response(resp.bundle)
    }

    /// Seals a pending bundle.
    pub async fn commit_bundle(&self, id: BundleId, req: &CommitRequest) -> Result<Bundle> {
        let resp = self.batcher.commit(req.to_proto(id)).await?;
        Bundle::from_response(resp.bundle)
    }

    /// Drops a pending bundle (unknown ids are fine: it expired or was already aborted).
    pub async fn abort_bundle(&self, id: BundleId) -> Result<()> {
        let r = pb::AbortBundleRequest {
            id: Some(id.to_proto()),
        };
        self.transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.abort_bundle(r).await }
            })
            .await?;
        Ok(())
    }

    /// Reports shards of a sealed bundle found missing or corrupt; returns whether a repair was
    /// queued (false when the bundle is not sealed or the repair already covers them).
    pub async fn report_damage(&self, id: BundleId, shards: &[u32], reason: &str) -> Result<bool> {
        let r = pb::ReportDamageRequest {
            id: Some(id.to_proto()),
            shard_indexes: shards.to_vec(),
            reason: reason.to_owned(),
        };
        let resp = self
            .transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.report_damage(r).await }
            })
            .await?;
        Ok(resp.queued)
    }

    /// Reads a bundle record; linearizable unless `stale_ok`.
    pub async fn get_bundle(&self, id: BundleId, stale_ok: bool) -> Result<Bundle> {
        let r = pb::GetBundleRequest {
            id: Some(id.to_proto()),
            stale_ok,
        };
        let resp = self
            .transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.get_bundle(r).await }
            })
            .await?;
        Bundle::from_response(resp.bundle)
    }

    /// One page of bundles; returns the next page token (empty at the end).
    pub async fn list_bundles(
        &self,
        label: Option<(&str, &str)>,
        state: Option<BundleState>,
        page_token: &[u8],
        page_size: u32,
    ) -> Result<(Vec<Bundle>, Vec<u8>)> {
        let r = wire::list_bundles_request(label, state, page_token, page_size);
        let resp = self
            .transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.list_bundles(r).await }
            })
            .await?;
        let bundles = resp
            .bundles
            .into_iter()
            .map(Bundle::from_proto)
            .collect::<Result<Vec<_>>>()?;
        Ok((bundles, resp.next_page_token))
    }

    /// Every bundle matching the filter (all pages).
    pub async fn list_all_bundles(
        &self,
        label: Option<(&str, &str)>,
        state: Option<BundleState>,
    ) -> Result<Vec<Bundle>> {
        let mut out = Vec::new();
        let mut token = Vec::new();
        loop {
            let (page, next) = self.list_bundles(label, state, &token, 1000).await?;
            out.extend(page);
            if next.is_empty() {
                return Ok(out);
            }
            token = next;
        }
    }

    /// Marks a sealed bundle deleting.
    /// `agent`: the client a node deletes for (the deletion event's agent).
    pub async fn delete_bundle(&self, id: BundleId, reason: &str, agent: &Agent) -> Result<Bundle> {
        let r = pb::DeleteBundleRequest {
            id: Some(id.to_proto()),
            reason: reason.to_owned(),
            on_behalf_of: Some(wire::agent_to_proto(agent)),
        };
        let resp = self
            .transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.delete_bundle(r).await }
            })
            .await?;
        Bundle::from_response(resp.bundle)
    }

    /// Extends a sealed bundle's retention (an earlier date is refused).
    /// With a `governance_reason`, the date may be earlier (governance mode: the node lets
    /// only admins ask).
    pub async fn set_retention(
        &self,
        id: BundleId,
        retain_until_unix_ms: u64,
        governance_reason: &str,
        agent: &Agent,
    ) -> Result<Bundle> {
        let r = pb::SetRetentionRequest {
            id: Some(id.to_proto()),
            retain_until_unix_ms,
            on_behalf_of: Some(wire::agent_to_proto(agent)),
            governance_reason: governance_reason.to_owned(),
        };
        let resp = self
            .transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.set_retention(r).await }
            })
            .await?;
        Bundle::from_response(resp.bundle)
    }

    /// Sets (`hold`) or clears a sealed bundle's legal hold; `reason` is required either way.
    pub async fn set_legal_hold(
        &self,
        id: BundleId,
        hold: bool,
        reason: &str,
        agent: &Agent,
    ) -> Result<Bundle> {
        let r = pb::SetLegalHoldRequest {
            id: Some(id.to_proto()),
            hold,
            reason: reason.to_owned(),
            on_behalf_of: Some(wire::agent_to_proto(agent)),
        };
        let resp = self
            .transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.set_legal_hold(r).await }
            })
            .await?;
        Bundle::from_response(resp.bundle)
    }

    /// Removes a deleted bundle's record; call once every shard of it is gone. Purging a bundle
    /// already purged succeeds.
    pub async fn purge_bundle(&self, id: BundleId) -> Result<()> {
        let r = pb::PurgeBundleRequest {
            id: Some(id.to_proto()),
        };
        self.transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.purge_bundle(r).await }
            })
            .await?;
        Ok(())
    }

    /// Compare-and-set of a bundle's placement (disk per shard index).
    pub async fn update_placement(
        &self,
        id: BundleId,
        expected_generation: u64,
        disks: &[u64],
    ) -> Result<Bundle> {
        self.update_placement_repaired(id, expected_generation, disks, &[])
            .await
    }

    /// Compare-and-set of a bundle's placement after a repair: `disks` is the full new
    /// placement, `rewritten` the shards rebuilt in place on the disk they were on.
    pub async fn update_placement_repaired(
        &self,
        id: BundleId,
        expected_generation: u64,
        disks: &[u64],
        rewritten: &[u32],
    ) -> Result<Bundle> {
        let r = wire::update_placement_request(id, expected_generation, disks, rewritten);
        let resp = self
            .transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.update_placement(r).await }
            })
            .await?;
        Bundle::from_response(resp.bundle)
    }

    /// Takes repair work for a node's worker (renewing the leases of `running`).
    pub async fn claim_repairs(
        &self,
        node_id: u64,
        max: u32,
        running: &[BundleId],
    ) -> Result<RepairClaim> {
        let r = pb::ClaimRepairsRequest {
            node_id,
            max,
            running: running.iter().map(|id| id.to_proto()).collect(),
        };
        self.transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.claim_repairs(r).await }
            })
            .await
            .map(RepairClaim::from_proto)
    }

    /// Reports a repair done (or failed) so its leases go.
    pub async fn finish_repair(&self, finished: &FinishedRepair) -> Result<()> {
        let r = finished.to_proto();
        self.transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.finish_repair(r).await }
            })
            .await?;
        Ok(())
    }

    /// Changes the repair throttles; returns the ones now in force.
    pub async fn set_repair_settings(&self, settings: RepairSettings) -> Result<RepairSettings> {
        let r = pb::SetRepairSettingsRequest {
            settings: Some(settings.to_proto()),
        };
        let resp = self
            .transport
            .service(|mut c| async move { c.set_repair_settings(r).await })
            .await?;
        Ok(RepairSettings::from_proto(resp.settings.as_ref()))
    }

    /// Repair progress as the leader sees it.
    pub async fn repair_status(&self) -> Result<RepairStatus> {
        self.transport
            .service(|mut c| async move { c.repair_status(pb::RepairStatusRequest {}).await })
            .await
            .and_then(RepairStatus::from_proto)
    }

    /// Plans (and unless `dry_run`, queues) moves onto emptier disks.
    pub async fn rebalance(&self, max_bytes: u64, dry_run: bool) -> Result<RebalancePlan> {
        let r = pb::RebalanceRequest { max_bytes, dry_run };
        self.transport
            .service(|mut c| async move { c.rebalance(r).await })
            .await
            .and_then(RebalancePlan::from_proto)
    }

    /// One page of the shards on a disk: (bundle, shard index), and the next page token
    /// (empty at the end).
    pub async fn list_disk_bundles(
        &self,
        disk_id: u64,
        page_token: &[u8],
        page_size: u32,
    ) -> Result<(Vec<(BundleId, u32)>, Vec<u8>)> {
        let r = pb::ListDiskBundlesRequest {
            disk_id,
            page_token: page_token.to_vec(),
            page_size,
        };
        self.transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.list_disk_bundles(r).await }
            })
            .await
            .and_then(wire::disk_shards_from_proto)
    }

    /// One page of the repair queue.
    pub async fn list_repairs(&self, page_token: &[u8], page_size: u32) -> Result<RepairPage> {
        let r = pb::ListRepairsRequest {
            page_token: page_token.to_vec(),
            page_size,
        };
        self.transport
            .service(|mut c| {
                let r = r.clone();
                async move { c.list_repairs(r).await }
            })
            .await
            .and_then(RepairPage::from_proto)
    }

    /// Records a decision about a disk (failed disks queue their bundles for repair);
    /// returns how many bundles were queued for repair or moves.
    pub async fn set_disk_state(&self, disk_id: u64, state: DiskState) -> Result<u64> {
        let r = pb::SetDiskStateRequest {
            disk_id,
            state: state.to_proto() as i32,
        };
        let resp = self
            .transport
            .service(|mut c| async move { c.set_disk_state(r).await })
            .await?;
        Ok(resp.repairs_queued)
    }

    /// Records a decision about a node.
    pub async fn set_node_state(&self, node_id: u64, state: NodeState) -> Result<()> {
        let r = pb::SetNodeStateRequest {
            node_id,
            state: state.to_proto() as i32,
        };
        self.transport
            .service(|mut c| async move { c.set_node_state(r).await })
            .await?;
        Ok(())
    }

    /// Status as one member sees it: the first member that answers (no redirect).
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        self.transport
            .service(|mut c| async move { c.cluster_status(pb::ClusterStatusRequest {}).await })
            .await
            .map(ClusterStatus::from_proto)
    }

    /// Adds a member (learner, then voter once caught up); returns the members after.
    pub async fn add_member(
        &self,
        id: u64,
        address: &str,
        learner_only: bool,
    ) -> Result<Vec<MemberInfo>> {
        let r = pb::AddMemberRequest {
            id,
            address: address.to_string(),
            learner_only,
            catch_up_timeout_ms: 0,
        };
        self.transport
            .admin(|mut c| {
                let r = r.clone();
                async move { c.add_member(r).await }
            })
            .await
            .map(|r| MemberInfo::all_from_proto(r.members))
    }

    /// Removes a member; returns the members after.
    pub async fn remove_member(&self, id: u64) -> Result<Vec<MemberInfo>> {
        self.transport
            .admin(|mut c| async move { c.remove_member(pb::RemoveMemberRequest { id }).await })
            .await
            .map(|r| MemberInfo::all_from_proto(r.members))
    }

    /// Switches the group to `value_format` once every member reads it.
    pub async fn set_value_format(&self, value_format: u32) -> Result<u32> {
        self.transport
            .admin(|mut c| async move {
                c.set_value_format(pb::SetValueFormatRequest { value_format })
                    .await
            })
            .await
            .map(|r| r.value_format)
    }

    /// Creates an access token; returns its record and the token itself (shown once: the
    /// group keeps only its hash).
    pub async fn create_token(
        &self,
        name: &str,
        role: Role,
        scope: &Scope,
        expires_unix_ms: u64,
    ) -> Result<(TokenRecord, Token)> {
        let request = pb::CreateTokenRequest {
            name: name.to_string(),
            role: role.as_str().to_string(),
            scope: wire::labels_to_proto(scope.labels()),
            expires_unix_ms,
        };
        let r = self
            .transport
            .admin(|mut c| {
                let request = request.clone();
                async move { c.create_token(request).await }
            })
            .await?;
        let record = wire::token_from_proto(&r.token.unwrap_or_default())?;
        let token = Token::parse(&r.secret).map_err(|e| MetaError::InvalidArgument {
            field: Field::Token,
            reason: format!("the member answered a token that does not parse: {e}"),
        })?;
        Ok((record, token))
    }

    /// The whole access-token table (hashes, never secrets).
    pub async fn list_tokens(&self) -> Result<TokenTable> {
        let r = self
            .transport
            .admin(|mut c| async move { c.list_tokens(pb::ListTokensRequest {}).await })
            .await?;
        Ok(TokenTable {
            tokens: r
                .tokens
                .iter()
                .map(wire::token_from_proto)
                .collect::<Result<_>>()?,
            version: r.tokens_version,
            fingerprint: r.tokens_fingerprint,
        })
    }

    /// Revokes a token; returns its record (revoking a revoked token changes nothing).
    pub async fn revoke_token(&self, id: TokenId) -> Result<TokenRecord> {
        let r = self
            .transport
            .admin(|mut c| async move {
                c.revoke_token(pb::RevokeTokenRequest { id: id.to_string() })
                    .await
            })
            .await?;
        wire::token_from_proto(&r.token.unwrap_or_default())
    }

    /// Hands leadership to `to`; returns the leader after.
    pub async fn transfer_leader(&self, to: u64) -> Result<u64> {
        self.transport
            .admin(|mut c| async move {
                c.transfer_leader(pb::TransferLeaderRequest {
                    to_id: to,
                    timeout_ms: 0,
                })
                .await
            })
            .await
            .map(|r| r.leader_id)
    }
}

/// Test-only: tells the member at `addr` (started with fault injection) to drop Raft traffic
/// to and from `blocked` (empty heals).
pub async fn set_partition(addr: &str, credentials: &Credentials, blocked: &[u64]) -> Result<()> {
    let r = pb::SetPartitionRequest {
        blocked_member_ids: blocked.to_vec(),
    };
    transport::admin_once(addr, credentials, |mut c| async move {
        c.set_partition(r).await
    })
    .await?;
    Ok(())
}

/// Status of exactly the member at `addr` (no redirect, no retry beyond `timeout`).
pub async fn member_status(
    addr: &str,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<ClusterStatus> {
    MetaClient::new([addr])?
        .with_credentials(credentials.clone())
        .with_timeout(timeout)
        .cluster_status()
        .await
}
