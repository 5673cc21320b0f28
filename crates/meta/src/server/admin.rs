//! `MetaAdmin` (membership, leadership, the value format, test fault injection) and the
//! `Diagnostics` ping.

use std::time::{Duration, Instant};

use bitmountain_proto::v1 as pb;
use bitmountain_proto::v1::meta_admin_server::MetaAdmin;
use tonic::Request;

use super::audit::agent_of;
use super::meta_service::principal;
use super::{ok, MetaServer, Rpc, MEMBER_CHECK_TIMEOUT};
use crate::command::Command;
use crate::error::{MetaError, Result};
use crate::types::{now_unix_ms, Agent, Outcome};

impl MetaServer {
    /// Switches the group to `requested` once every other member confirms its binary reads
    /// it; asking for the current format re-checks the members and changes nothing.
    async fn switch_value_format(&self, requested: u32, agent: Agent) -> Result<u32> {
        self.require_leader()?;
        let current = self.inner.store.value_format();
        let value_format = crate::state::value_format_switch(current, requested)?;
        // A member that cannot read a committed command stops, so every member must confirm
        // before any of them writes the new format.
        let st = self.inner.raft.status();
        let mut behind = Vec::new();
        for (id, address) in st.members.iter().filter(|(id, _)| **id != st.id) {
            match crate::client::member_status(
                address,
                &self.inner.cfg.credentials,
                MEMBER_CHECK_TIMEOUT,
            )
            .await
            {
                // Binaries from before value formats answer 0: they read JSON only.
                Ok(s) if s.newest_value_format.max(1) >= requested => {}
                Ok(s) => behind.push(format!(
                    "member {id} at {address} reads formats up to {} (upgrade its binary first)",
                    s.newest_value_format.max(1)
                )),
                Err(e) => behind.push(format!(
                    "member {id} at {address} did not answer ({e}); start it, or remove it from \
                     the group"
                )),
            }
        }
        if !behind.is_empty() {
            return Err(MetaError::ValueFormatRefused {
                requested,
                reason: behind.join("; "),
            });
        }
        if value_format > current {
            self.propose(Command::SetValueFormat {
                value_format,
                now_ms: now_unix_ms(),
                agent,
            })
            .await?;
        }
        Ok(u32::from(self.inner.store.value_format()))
    }
}

#[tonic::async_trait]
impl MetaAdmin for MetaServer {
    async fn add_member(&self, req: Request<pb::AddMemberRequest>) -> Rpc<pb::AddMemberResponse> {
        let agent = agent_of(principal(&req), None);
        let r = req.into_inner();
        if r.id == 0 || r.address.is_empty() {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::Member,
                reason: "a non-zero id and an address are required".into(),
            }
            .into());
        }
        self.require_leader()?;
        let raft = &self.inner.raft;
        let st = raft.status();
        if st.voters.contains(&r.id) {
            return Err(MetaError::Raft {
                kind: crate::error::ErrorKind::BadMembership,
                leader: None,
                message: format!("member {} is already a voter", r.id),
            }
            .into());
        }
        if !st.learners.contains(&r.id) {
            raft.add_learner(r.id, &r.address)
                .await
                .map_err(crate::raft_error)?;
        }
        if !r.learner_only {
            let timeout = Duration::from_millis(if r.catch_up_timeout_ms == 0 {
                60_000
            } else {
                r.catch_up_timeout_ms
            });
            let deadline = Instant::now() + timeout;
            loop {
                let st = raft.status();
                if !st.is_leader() {
                    return Err(crate::raft_error(raft.not_leader()).into());
                }
                let matched = st.progress.get(&r.id).copied().unwrap_or(0);
                if matched >= st.commit.saturating_sub(10) && matched > 0 {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(MetaError::Raft {
                        kind: crate::error::ErrorKind::Timeout,
                        leader: None,
                        message: format!(
                            "member {} (learner) did not catch up within {} ms (matched {matched} of {}): is it running at {}? it stays a learner; retry `member add` to promote it",
                            r.id, timeout.as_millis(), st.commit, r.address
                        ),
                    }
                    .into());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let cs = raft
                .promote(r.id, &r.address)
                .await
                .map_err(crate::raft_error)?;
            let detail = format!("member {} at {} added as a voter", r.id, r.address);
            self.record_member_change(agent, r.id, Outcome::Success, detail)
                .await;
            return ok(pb::AddMemberResponse {
                members: Self::members_of(&cs, &raft.status(), Some((r.id, &r.address))),
            });
        }
        let detail = format!("member {} at {} added as a learner", r.id, r.address);
        self.record_member_change(agent, r.id, Outcome::Success, detail)
            .await;
        ok(pb::AddMemberResponse {
            members: Self::members_proto(&raft.status()),
        })
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Rpc<pb::RemoveMemberResponse> {
        let agent = agent_of(principal(&req), None);
        let r = req.into_inner();
        self.require_leader()?;
        let raft = &self.inner.raft;
        let st = raft.status();
        if !st.voters.contains(&r.id) && !st.learners.contains(&r.id) {
            return Err(
                crate::raft_error(bitmountain_raftstore::RaftStoreError::UnknownMember {
                    id: r.id,
                })
                .into(),
            );
        }
        if st.voters.len() == 1 && st.voters.contains(&r.id) {
            return Err(MetaError::Raft {
                kind: crate::error::ErrorKind::BadMembership,
                leader: None,
                message: "cannot remove the last voter".into(),
            }
            .into());
        }
        // A leader removing itself can no longer propose once the change applies: its event
        // is recorded while it still leads, and a removal that then fails is recorded too.
        let removes_itself = r.id == raft.id();
        if removes_itself {
            let detail = format!("member {} (the leader) is being removed", r.id);
            self.record_member_change(agent.clone(), r.id, Outcome::Success, detail)
                .await;
        }
        let cs = match raft.remove(r.id).await {
            Ok(cs) => cs,
            Err(e) => {
                if removes_itself {
                    let detail = format!("member {} was not removed: {e}", r.id);
                    self.record_member_change(agent, r.id, Outcome::Failure, detail)
                        .await;
                }
                return Err(crate::raft_error(e).into());
            }
        };
        if !removes_itself {
            let detail = format!("member {} removed", r.id);
            self.record_member_change(agent, r.id, Outcome::Success, detail)
                .await;
        }
        ok(pb::RemoveMemberResponse {
            members: Self::members_of(&cs, &raft.status(), None),
        })
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Rpc<pb::TransferLeaderResponse> {
        let agent = agent_of(principal(&req), None);
        let r = req.into_inner();
        let raft = &self.inner.raft;
        let st = raft.status();
        if !st.voters.contains(&r.to_id) {
            return Err(
                crate::raft_error(bitmountain_raftstore::RaftStoreError::UnknownMember {
                    id: r.to_id,
                })
                .into(),
            );
        }
        self.require_leader()?;
        let timeout = Duration::from_millis(if r.timeout_ms == 0 {
            10_000
        } else {
            r.timeout_ms
        });
        // Recorded while this member still leads; a transfer that then fails is recorded too,
        // with its error, by the answer the operator gets (the event says it was asked for).
        let detail = format!("leadership asked to move to member {}", r.to_id);
        self.record_member_change(agent, r.to_id, Outcome::Success, detail)
            .await;
        raft.transfer_leader(r.to_id, timeout)
            .await
            .map_err(crate::raft_error)?;
        ok(pb::TransferLeaderResponse {
            leader_id: raft.status().leader_id,
        })
    }

    async fn set_value_format(
        &self,
        req: Request<pb::SetValueFormatRequest>,
    ) -> Rpc<pb::SetValueFormatResponse> {
        let agent = agent_of(principal(&req), None);
        let value_format = self
            .switch_value_format(req.into_inner().value_format, agent)
            .await?;
        ok(pb::SetValueFormatResponse { value_format })
    }

    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Rpc<pb::CreateTokenResponse> {
        let agent = agent_of(principal(&req), None);
        ok(MetaServer::create_token(self, req.into_inner(), agent).await?)
    }

    async fn list_tokens(
        &self,
        _req: Request<pb::ListTokensRequest>,
    ) -> Rpc<pb::ListTokensResponse> {
        ok(MetaServer::list_tokens(self).await?)
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Rpc<pb::RevokeTokenResponse> {
        let agent = agent_of(principal(&req), None);
        ok(MetaServer::revoke_token(self, req.into_inner(), agent).await?)
    }

    async fn recovery(&self, req: Request<pb::RecoveryRequest>) -> Rpc<pb::RecoveryResponse> {
        ok(MetaServer::recovery(self, req.into_inner().finish).await?)
    }

    type BackupStream = super::backup::BackupStream;

    async fn backup(&self, _req: Request<pb::BackupRequest>) -> Rpc<Self::BackupStream> {
        ok(MetaServer::backup(self).await?)
    }

    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Rpc<pb::ListAuditResponse> {
        ok(MetaServer::list_audit(self, req.into_inner()).await?)
    }

    async fn set_partition(
        &self,
        req: Request<pb::SetPartitionRequest>,
    ) -> Rpc<pb::SetPartitionResponse> {
        self.inner
            .raft
            .set_partition(&req.get_ref().blocked_member_ids)
            .map_err(crate::raft_error)?;
        ok(pb::SetPartitionResponse {})
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Diagnostics;

#[tonic::async_trait]
impl pb::diagnostics_server::Diagnostics for Diagnostics {
    async fn ping(&self, _req: Request<pb::PingRequest>) -> Rpc<pb::PingResponse> {
        ok(pb::PingResponse {
            version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }
}
