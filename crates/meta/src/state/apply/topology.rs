//! The topology: node registration, disk and node state changes, and the group's value
//! format. These commands scan key ranges (the disk → bundles map), so each has a log entry
//! of its own (`Command::may_share_entry`).

use super::Applier;
use crate::command::{Applied, ApplyResult, RegisterNode};
use crate::error::{Field, MetaError, Result};
use crate::keys;
use crate::rules;
use crate::state::{first_value_format, value_format_switch, KeyReader};
use crate::types::{
    Agent, AgentKind, AuditAction, DiskRecord, DiskState, NewEvent, NodeRecord, NodeState, Outcome,
};

impl Applier<'_> {
    pub(crate) fn register(&mut self, r: RegisterNode) -> ApplyResult {
        let recovering = self.map.cluster.recovery.is_some();
        let cluster_id = match self.map.cluster.cluster_id.as_str() {
            // A group rebuilding itself from the disks takes their cluster's id.
            "" if recovering && !r.cluster_id.is_empty() => r.cluster_id.clone(),
            "" => r.cluster_id_candidate.clone(),
            id => id.to_owned(),
        };
        if !r.cluster_id.is_empty() && r.cluster_id != cluster_id {
            return Err(MetaError::InvalidArgument {
                field: crate::error::Field::ClusterId,
                reason: format!(
                    "the node's disks belong to cluster {}, this metadata group is cluster \
                     {cluster_id}; point the node at its own cluster's members (or rebuild that \
                     cluster's group with `bitmountain meta recover`)",
                    r.cluster_id
                ),
            });
        }
        if self.map.cluster.cluster_id.is_empty() {
            // The group's first registration: unless its first admin token came first, it
            // sets the value format written from here on (every member applies this same
            // entry, so all switch at the same index).
            if self.map.cluster.value_format == 0 {
                self.map.cluster.value_format = first_value_format(r.first_value_format)?;
            }
            self.map.cluster.cluster_id = cluster_id;
        }
        let prior: Option<u64> = if r.request_id.is_empty() {
            None
        } else {
            self.get(&keys::request(&r.request_id), "request record")?
        };
        let id = self.registering_node(prior, &r)?;
        if !r.request_id.is_empty() {
            self.put(&keys::request(&r.request_id), &id);
        }
        let node = NodeRecord {
            id,
            address: r.address,
            zone: r.zone,
            rack: r.rack,
            host: if r.host.is_empty() {
                format!("node-{id}")
            } else {
                r.host
            },
            state: NodeState::Up,
        };
        self.map.nodes.insert(id, node.clone());
        self.dirty.nodes.insert(id);
        let prior_disks: Vec<u64> = if prior.is_some() {
            self.map
                .disks
                .values()
                .filter(|d| d.node_id == id)
                .map(|d| d.id)
                .collect()
        } else {
            Vec::new()
        };
        let mut reuse = prior_disks.into_iter();
        let mut out = Vec::new();
        for spec in r.disks {
            let disk_id = if spec.disk_id != 0 {
                spec.disk_id
            } else if let Some(r) = reuse.next() {
                r // a retried registration: the disks it created, in order
            } else {
                next_id(&mut self.map.cluster.next_disk_id)
            };
            let entry = self.map.disks.entry(disk_id).or_insert(DiskRecord {
                id: disk_id,
                node_id: id,
                path: spec.path.clone(),
                capacity_bytes: spec.capacity_bytes,
                accounted_bytes: 0,
                state: DiskState::Ok,
                added_unix_ms: r.now_ms,
                reported_failed_from: None,
                returns_in_window: 0,
                return_window_unix_ms: 0,
            });
            entry.path = spec.path;
            entry.capacity_bytes = spec.capacity_bytes;
            out.push(entry.clone());
            self.dirty.disks.insert(disk_id);
        }
        let disk_ids: Vec<u64> = out.iter().map(|d| d.id).collect();
        let detail = format!(
            "{} at {}, zone {:?}, rack {:?}, disks {disk_ids:?}",
            node.host, node.address, node.zone, node.rack
        );
        let object = format!("node {id}");
        let event = topology_event(
            r.now_ms,
            r.agent,
            AuditAction::NodeRegistration,
            object,
            detail,
        );
        self.audit(event, "");
        Ok(Applied::Node {
            node,
            disks: out,
            cluster_id: self.map.cluster.cluster_id.clone(),
        })
    }

    /// The id a registration gets (a new one for a new node), refused before anything changes
    /// if it names a node or disk the map does not hold, or another node's disk.
    fn registering_node(&mut self, prior: Option<u64>, r: &RegisterNode) -> Result<u64> {
        // A recovering group learns nodes and disks from the nodes themselves.
        let recovering = self.map.cluster.recovery.is_some();
        let id = match (prior, r.node_id) {
            (Some(p), _) => p,
            (None, 0) => 0,
            (None, n) if self.map.nodes.contains_key(&n) || recovering => n,
            (None, n) => return Err(MetaError::UnknownNode { id: n }),
        };
        for d in r.disks.iter().filter(|d| d.disk_id != 0) {
            let disk = match self.map.disks.get(&d.disk_id) {
                Some(disk) => disk,
                None if recovering => continue,
                None => return Err(MetaError::UnknownDisk { id: d.disk_id }),
            };
            if id != 0 && disk.node_id != id {
                return Err(MetaError::DiskOwnedByOtherNode {
                    disk_id: d.disk_id,
                    owner: disk.node_id,
                    node_id: id,
                });
            }
        }
        if recovering {
            // Ids the nodes bring are never handed out again.
            let c = &mut self.map.cluster;
            c.next_node_id = c.next_node_id.max(id.saturating_add(1));
            for d in &r.disks {
                c.next_disk_id = c.next_disk_id.max(d.disk_id.saturating_add(1));
            }
        }
        Ok(if id == 0 {
            next_id(&mut self.map.cluster.next_node_id)
        } else {
            id
        })
    }

    pub(crate) fn set_disk_state(
        &mut self,
        disk_id: u64,
        state: DiskState,
        now_ms: u64,
        agent: Agent,
    ) -> ApplyResult {
        let was = self
            .map
            .disks
            .get(&disk_id)
            .ok_or(MetaError::UnknownDisk { id: disk_id })?
            .state;
        if state == DiskState::Removed {
            let shards = self.store.disk_shard_count(disk_id, usize::MAX)?;
            if shards > 0 {
                return Err(MetaError::StillHoldsShards {
                    what: format!("disk {disk_id}"),
                    command: "disk".into(),
                    id: disk_id,
                    shards,
                });
            }
        }
        let disk = {
            let Some(disk) = self.map.disks.get_mut(&disk_id) else {
                return Err(MetaError::UnknownDisk { id: disk_id });
            };
            let by_system = agent.kind == AgentKind::System;
            *disk = rules::disk_state_change(disk, state, by_system, now_ms).map_err(|reason| {
                MetaError::InvalidArgument {
                    field: Field::State,
                    reason,
                }
            })?;
            disk.clone()
        };
        if state == DiskState::Failed && was != DiskState::Failed {
            self.map.cluster.disk_failures = self.map.cluster.disk_failures.saturating_add(1);
        }
        self.dirty.disks.insert(disk_id);
        let queued = if state != was {
            self.requeue_disks(&[disk_id], now_ms)?
        } else {
            0
        };
        if state != was {
            let mut detail = format!("{was:?} → {state:?}; {queued} repairs queued");
            if state == DiskState::Failed && agent.kind == AgentKind::System {
                detail.push_str(match disk.reported_failed_from {
                    Some(_) => "; returns once its node reports it healthy and checked",
                    None => "; it flaps: stays failed until `bitmountain disk ok`",
                });
            }
            let object = format!("disk {disk_id}");
            let event = topology_event(now_ms, agent, AuditAction::DiskStateChange, object, detail);
            self.audit(event, "");
        }
        Ok(Applied::Disk {
            disk,
            repairs_queued: queued,
        })
    }

    pub(crate) fn set_node_state(
        &mut self,
        node_id: u64,
        state: NodeState,
        now_ms: u64,
        agent: Agent,
    ) -> ApplyResult {
        let was = self
            .map
            .nodes
            .get(&node_id)
            .ok_or(MetaError::UnknownNode { id: node_id })?
            .state;
        let disks: Vec<u64> = self
            .map
            .disks
            .values()
            .filter(|d| d.node_id == node_id)
            .map(|d| d.id)
            .collect();
        if state == NodeState::Removed {
            let mut shards = 0;
            for d in &disks {
                shards += self.store.disk_shard_count(*d, usize::MAX)?;
            }
            if shards > 0 {
                return Err(MetaError::StillHoldsShards {
                    what: format!("node {node_id}"),
                    command: "node".into(),
                    id: node_id,
                    shards,
                });
            }
        }
        let node = {
            let Some(n) = self.map.nodes.get_mut(&node_id) else {
                return Err(MetaError::UnknownNode { id: node_id });
            };
            n.state = state;
            n.clone()
        };
        self.dirty.nodes.insert(node_id);
        if state == NodeState::Removed {
            for d in &disks {
                if let Some(disk) = self.map.disks.get_mut(d) {
                    disk.state = DiskState::Removed;
                    self.dirty.disks.insert(*d);
                }
            }
        }
        if state != was {
            let queued = self.requeue_disks(&disks, now_ms)?;
            let detail = format!("{was:?} → {state:?}; {queued} repairs queued");
            let object = format!("node {node_id}");
            let event = topology_event(now_ms, agent, AuditAction::NodeStateChange, object, detail);
            self.audit(event, "");
        }
        Ok(Applied::NodeUpdated(node))
    }

    /// Writes values in `value_format` from this entry on (never an older one).
    /// The trail starts with the switch to format 3, which is its first event.
    pub(crate) fn set_value_format(
        &mut self,
        value_format: u8,
        now_ms: u64,
        agent: Agent,
    ) -> ApplyResult {
        let was = self.map.cluster.value_format();
        self.map.cluster.value_format = value_format_switch(was, value_format.into())?;
        if value_format != was {
            let detail = format!("value format {was} → {value_format}");
            let object = "cluster".to_owned();
            let event = topology_event(now_ms, agent, AuditAction::SettingsChange, object, detail);
            self.audit(event, "");
        }
        Ok(Applied::Done)
    }
}

/// A successful change of the cluster, for the trail.
pub(super) fn topology_event(
    now_ms: u64,
    agent: Agent,
    action: AuditAction,
    object: String,
    detail: String,
) -> NewEvent {
    NewEvent {
        time_unix_ms: now_ms,
        agent,
        action,
        object,
        bundle: None,
        outcome: Outcome::Success,
        detail,
    }
}

/// Hands out the next id of a counter that starts at 1.
fn next_id(counter: &mut u64) -> u64 {
    *counter = (*counter).max(1);
    let id = *counter;
    *counter += 1;
    id
}
