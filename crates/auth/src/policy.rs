//! The method policy: for every gRPC method any Bit Mountain process serves, who may call it.
//! Total by construction — a path without a rule is refused as unknown — and checked against
//! the compiled protos by a test, so a new RPC cannot ship without a decision.
//!
//! Who calls what (read from `crates/node`, `crates/cli`, `crates/meta`):
//! - Nodes (certificate role `node`): all of NodeService, and the metadata calls of their
//!   coordinators, heartbeat, garbage collection, repair worker and scrubber.
//! - Members (role `meta`): Raft to each other, and `ClusterStatus` of each other (a value
//!   format switch asks every member).
//! - Clients (tokens): the archive API, `status` (`ClusterStatus` of a member or a node), and
//!   the operator and admin commands of the CLI. `scrub` asks each node's
//!   `NodeService/StartScrub` directly, so that one method takes a node or an `operate` token.
//!
//! A certificate never stands for a client, nor a token for a member or node: the two kinds of
//! caller are kept apart, so a leaked node key does not read the archive through the client
//! API, and a leaked admin token cannot speak Raft or write shards.

use std::fmt;

use crate::cert::PeerRole;
use crate::permission::Permission;

/// Who may call one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    open: bool,
    members: bool,
    nodes: bool,
    token: Option<Permission>,
}

impl Access {
    /// Anyone, with no credentials checked (health and liveness probes).
    pub const OPEN: Access = Access {
        open: true,
        members: false,
        nodes: false,
        token: None,
    };
    /// Metadata members only (certificate role `meta`).
    pub const MEMBER: Access = Access {
        open: false,
        members: true,
        nodes: false,
        token: None,
    };
    /// Members and storage nodes (a certificate of either role).
    pub const PEER: Access = Access {
        open: false,
        members: true,
        nodes: true,
        token: None,
    };
    /// Storage nodes only (certificate role `node`).
    pub const NODE: Access = Access {
        open: false,
        members: false,
        nodes: true,
        token: None,
    };

    /// Clients whose token's role has `permission`.
    pub const fn token(permission: Permission) -> Access {
        Access {
            open: false,
            members: false,
            nodes: false,
            token: Some(permission),
        }
    }

    /// Storage nodes, or clients whose token has `permission`.
    pub const fn node_or_token(permission: Permission) -> Access {
        Access {
            nodes: true,
            ..Access::token(permission)
        }
    }

    /// Members, storage nodes, or clients whose token has `permission`.
    pub const fn peer_or_token(permission: Permission) -> Access {
        Access {
            members: true,
            nodes: true,
            ..Access::token(permission)
        }
    }

    /// Whether no credentials are checked.
    pub fn is_open(self) -> bool {
        self.open
    }

    /// Whether a certificate with `role` may call the method.
    pub fn allows_peer(self, role: PeerRole) -> bool {
        match role {
            PeerRole::Meta => self.members,
            PeerRole::Node => self.nodes,
        }
    }

    /// The permission a token needs, if tokens may call the method at all.
    pub fn token_permission(self) -> Option<Permission> {
        self.token
    }
}

/// What a caller needs, for messages: "a storage node's certificate (role node) or a token
/// with permission `operate`".
impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.open {
            return f.write_str("nothing");
        }
        let mut ways = Vec::new();
        if self.members {
            ways.push("a metadata member's certificate (role meta)".to_owned());
        }
        if self.nodes {
            ways.push("a storage node's certificate (role node)".to_owned());
        }
        if let Some(p) = self.token {
            ways.push(format!("a token with permission `{p}`"));
        }
        f.write_str(&ways.join(" or "))
    }
}

/// The metadata group's service (members serve it).
pub const META_SERVICE: &str = "bitmountain.v1.MetaService";
/// Membership, leadership, value format (members serve it).
pub const META_ADMIN: &str = "bitmountain.v1.MetaAdmin";
/// Raft between members (`crates/raftstore`'s transport).
pub const RAFT_TRANSPORT: &str = "bitmountain.v1.RaftTransport";
/// The liveness ping (members serve it).
pub const DIAGNOSTICS: &str = "bitmountain.v1.Diagnostics";
/// Shards between nodes (nodes serve it).
pub const NODE_SERVICE: &str = "bitmountain.v1.NodeService";
/// The public API (nodes serve it).
pub const ARCHIVE_SERVICE: &str = "bitmountain.archive.v1.ArchiveService";
/// Standard gRPC health (nodes serve it).
pub const HEALTH: &str = "grpc.health.v1.Health";
/// Standard gRPC server reflection, v1 only (nodes serve it).
pub const REFLECTION: &str = "grpc.reflection.v1.ServerReflection";

/// The services a metadata member serves (`crates/meta/src/server/serve.rs`).
pub const MEMBER_SERVICES: &[&str] = &[
    META_SERVICE,
    META_ADMIN,
    RAFT_TRANSPORT,
    DIAGNOSTICS,
    HEALTH,
];
/// The services a storage node serves (`crates/node/src/daemon.rs`).
pub const NODE_SERVICES: &[&str] = &[NODE_SERVICE, ARCHIVE_SERVICE, HEALTH, REFLECTION];

/// Declares the table once, as [`RULES`] (for tests and documentation) and as [`access`] (a
/// `match`, for the layer).
macro_rules! policy {
    ($( $service:literal { $( $method:literal => $access:expr, )* } )*) => {
        /// Every rule: `/package.Service/Method` and who may call it.
        pub const RULES: &[(&str, Access)] = &[
            $( $( (concat!("/", $service, "/", $method), $access), )* )*
        ];

        /// The rule for a request path (`/package.Service/Method`); `None`: no such method.
        pub fn access(path: &str) -> Option<Access> {
            match path {
                $( $( concat!("/", $service, "/", $method) => Some($access), )* )*
                _ => None,
            }
        }
    };
}

use Permission::{Admin, Delete, Operate, Read, Write};

policy! {
    "bitmountain.v1.MetaService" {
        // A node's registration, heartbeats and uploads.
        "RegisterNode" => Access::NODE,
        "Heartbeat" => Access::NODE,
        "ReportScan" => Access::NODE,
        "AllocateBundle" => Access::NODE,
        "CommitBundle" => Access::NODE,
        "Batch" => Access::NODE,
        "AbortBundle" => Access::NODE,
        // Reads and deletes of records: clients go through a node's archive API, which applies
        // their scope; the records here are unfiltered.
        "GetBundle" => Access::NODE,
        "ListBundles" => Access::NODE,
        "DeleteBundle" => Access::NODE,
        "SetRetention" => Access::NODE,
        "SetLegalHold" => Access::NODE,
        "PurgeBundle" => Access::NODE,
        // Repair and scrub workers.
        "UpdatePlacement" => Access::NODE,
        "ListDiskBundles" => Access::NODE,
        "ReportDamage" => Access::NODE,
        "ClaimRepairs" => Access::NODE,
        "FinishRepair" => Access::NODE,
        // Operator commands.
        "SetDiskState" => Access::token(Operate),
        "SetNodeState" => Access::token(Operate),
        "ListRepairs" => Access::token(Operate),
        "SetRepairSettings" => Access::token(Operate),
        "RepairStatus" => Access::token(Operate),
        "Rebalance" => Access::token(Operate),
        // `status` (clients), a node relaying its clients' status, members checking each other.
        "ClusterStatus" => Access::peer_or_token(Read),
        // Refused requests and fixity checks members and nodes saw, for the audit trail.
        "RecordEvents" => Access::PEER,
    }
    "bitmountain.v1.MetaAdmin" {
        "AddMember" => Access::token(Admin),
        "RemoveMember" => Access::token(Admin),
        "TransferLeader" => Access::token(Admin),
        // Test fault injection, refused anyway unless the member enables it.
        "SetPartition" => Access::token(Admin),
        "SetValueFormat" => Access::token(Admin),
        "CreateToken" => Access::token(Admin),
        "RevokeToken" => Access::token(Admin),
        // The whole state, token hashes included.
        "Backup" => Access::token(Admin),
        "Recovery" => Access::token(Admin),
        // Operators and auditors review who did what.
        "ListAudit" => Access::token(Operate),
        // Nodes fetch the table to check their clients' tokens.
        "ListTokens" => Access::node_or_token(Admin),
    }
    "bitmountain.v1.RaftTransport" {
        "Stream" => Access::MEMBER,
        "StreamSnapshot" => Access::MEMBER,
    }
    "bitmountain.v1.Diagnostics" {
        // A liveness probe: answers the version only.
        "Ping" => Access::OPEN,
    }
    "bitmountain.v1.NodeService" {
        "WriteShard" => Access::NODE,
        "ReadShard" => Access::NODE,
        "DeleteShard" => Access::NODE,
        "ListShards" => Access::NODE,
        // `bitmountain scrub` asks each node directly.
        "StartScrub" => Access::node_or_token(Operate),
    }
    "bitmountain.archive.v1.ArchiveService" {
        "PutBundle" => Access::token(Write),
        "GetFile" => Access::token(Read),
        "GetIndex" => Access::token(Read),
        "StatBundle" => Access::token(Read),
        "ListBundles" => Access::token(Read),
        "ExportBundle" => Access::token(Read),
        "DeleteBundle" => Access::token(Delete),
        // What may refuse a delete is decided by those who may delete.
        "SetRetention" => Access::token(Delete),
        "SetLegalHold" => Access::token(Delete),
        "ClusterStatus" => Access::token(Read),
        // Reads the bundle on the node; the outcome is audited with the caller as agent.
        "CheckFixity" => Access::token(Read),
    }
    "grpc.health.v1.Health" {
        // Open, so a probe or a constrained token never reads "forbidden" as "down".
        "Check" => Access::OPEN,
        "Watch" => Access::OPEN,
    }
    "grpc.reflection.v1.ServerReflection" {
        // The schema only, but not to anonymous callers.
        "ServerReflectionInfo" => Access::token(Read),
    }
}

/// The service part of a path: `bitmountain.v1.MetaService` of
/// `/bitmountain.v1.MetaService/Heartbeat`.
pub fn service_of(path: &str) -> Option<&str> {
    path.strip_prefix('/')?.split_once('/').map(|(s, _)| s)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeSet;

    use prost::Message as _;

    use super::*;

    /// `/package.Service/Method` of every method in the compiled protos.
    fn described_methods() -> BTreeSet<String> {
        let set =
            prost_types::FileDescriptorSet::decode(bitmountain_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut out = BTreeSet::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    out.insert(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn every_method_of_every_proto_service_has_a_rule() {
        let described = described_methods();
        assert!(described.len() > 40, "{described:?}");
        for path in &described {
            assert!(access(path).is_some(), "no rule for {path}");
        }
        // And no rule names a method our protos lack (a renamed RPC), other than the
        // standard services, whose protos live in tonic-health and tonic-reflection.
        for (path, _) in RULES {
            let service = service_of(path).unwrap();
            if service == HEALTH || service == REFLECTION {
                continue;
            }
            assert!(described.contains(*path), "stale rule {path}");
        }
        let rules: BTreeSet<&str> = RULES.iter().map(|(p, _)| *p).collect();
        assert_eq!(rules.len(), RULES.len(), "a path twice");
    }

    #[test]
    fn the_served_service_lists_cover_every_rule() {
        for (path, _) in RULES {
            let service = service_of(path).unwrap();
            let served = MEMBER_SERVICES.contains(&service) || NODE_SERVICES.contains(&service);
            assert!(served, "{path}: served by nobody");
        }
        assert_eq!(access("/bitmountain.v1.MetaService/NoSuch"), None);
        assert_eq!(access("bitmountain.v1.MetaService/Heartbeat"), None);
        assert_eq!(access(""), None);
        assert_eq!(service_of("/a.B/C"), Some("a.B"));
        assert_eq!(service_of("a.B/C"), None);
    }

    #[test]
    fn needs_read_as_people_would_say_them() {
        assert_eq!(
            Access::node_or_token(Permission::Operate).to_string(),
            "a storage node's certificate (role node) or a token with permission `operate`"
        );
        assert_eq!(
            Access::MEMBER.to_string(),
            "a metadata member's certificate (role meta)"
        );
    }
}

/// Every role and certificate against every method, through the whole check: allowed, or
/// refused with the right kind and a message naming what was missing.
#[cfg(test)]
mod role_tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::{BTreeSet, HashMap};
    use std::sync::Arc;

    use bitmountain_proto::ErrorKind;
    use http::HeaderMap;

    use super::*;
    use crate::authorizer::Authorizer;
    use crate::cert::test_cert;
    use crate::permission::{Principal, Role, Scope};
    use crate::token::{Token, TokenRecord};

    const OPEN: &str = "open";
    const MEMBER: &str = "meta";
    const NODE: &str = "node";
    const READ: &str = "reader writer curator operator admin";
    const WRITE: &str = "writer curator admin";
    const DELETE: &str = "curator admin";
    const OPERATE: &str = "operator admin";
    const ADMIN: &str = "admin";

    /// Who may call what, stated a second time, independently of the table above.
    const EXPECTED: &[(&str, &str)] = &[
        ("/bitmountain.v1.MetaService/RegisterNode", NODE),
        ("/bitmountain.v1.MetaService/Heartbeat", NODE),
        ("/bitmountain.v1.MetaService/ReportScan", NODE),
        ("/bitmountain.v1.MetaService/SetDiskState", OPERATE),
        ("/bitmountain.v1.MetaService/SetNodeState", OPERATE),
        ("/bitmountain.v1.MetaService/AllocateBundle", NODE),
        ("/bitmountain.v1.MetaService/CommitBundle", NODE),
        ("/bitmountain.v1.MetaService/Batch", NODE),
        ("/bitmountain.v1.MetaService/AbortBundle", NODE),
        ("/bitmountain.v1.MetaService/GetBundle", NODE),
        ("/bitmountain.v1.MetaService/ListBundles", NODE),
        ("/bitmountain.v1.MetaService/DeleteBundle", NODE),
        ("/bitmountain.v1.MetaService/SetRetention", NODE),
        ("/bitmountain.v1.MetaService/SetLegalHold", NODE),
        ("/bitmountain.v1.MetaService/PurgeBundle", NODE),
        ("/bitmountain.v1.MetaService/UpdatePlacement", NODE),
        ("/bitmountain.v1.MetaService/ListDiskBundles", NODE),
        ("/bitmountain.v1.MetaService/ListRepairs", OPERATE),
        ("/bitmountain.v1.MetaService/ReportDamage", NODE),
        ("/bitmountain.v1.MetaService/ClaimRepairs", NODE),
        ("/bitmountain.v1.MetaService/FinishRepair", NODE),
        ("/bitmountain.v1.MetaService/SetRepairSettings", OPERATE),
        ("/bitmountain.v1.MetaService/RepairStatus", OPERATE),
        ("/bitmountain.v1.MetaService/Rebalance", OPERATE),
        ("/bitmountain.v1.MetaService/RecordEvents", "meta node"),
        (
            "/bitmountain.v1.MetaService/ClusterStatus",
            "meta node reader writer curator operator admin",
        ),
        ("/bitmountain.v1.MetaAdmin/AddMember", ADMIN),
        ("/bitmountain.v1.MetaAdmin/RemoveMember", ADMIN),
        ("/bitmountain.v1.MetaAdmin/TransferLeader", ADMIN),
        ("/bitmountain.v1.MetaAdmin/SetPartition", ADMIN),
        ("/bitmountain.v1.MetaAdmin/SetValueFormat", ADMIN),
        ("/bitmountain.v1.MetaAdmin/CreateToken", ADMIN),
        ("/bitmountain.v1.MetaAdmin/RevokeToken", ADMIN),
        ("/bitmountain.v1.MetaAdmin/Backup", ADMIN),
        ("/bitmountain.v1.MetaAdmin/Recovery", ADMIN),
        ("/bitmountain.v1.MetaAdmin/ListAudit", OPERATE),
        ("/bitmountain.v1.MetaAdmin/ListTokens", "node admin"),
        ("/bitmountain.v1.RaftTransport/Stream", MEMBER),
        ("/bitmountain.v1.RaftTransport/StreamSnapshot", MEMBER),
        ("/bitmountain.v1.Diagnostics/Ping", OPEN),
        ("/bitmountain.v1.NodeService/WriteShard", NODE),
        ("/bitmountain.v1.NodeService/ReadShard", NODE),
        ("/bitmountain.v1.NodeService/DeleteShard", NODE),
        ("/bitmountain.v1.NodeService/ListShards", NODE),
        (
            "/bitmountain.v1.NodeService/StartScrub",
            "node operator admin",
        ),
        ("/bitmountain.archive.v1.ArchiveService/PutBundle", WRITE),
        ("/bitmountain.archive.v1.ArchiveService/GetFile", READ),
        ("/bitmountain.archive.v1.ArchiveService/GetIndex", READ),
        ("/bitmountain.archive.v1.ArchiveService/StatBundle", READ),
        ("/bitmountain.archive.v1.ArchiveService/ListBundles", READ),
        ("/bitmountain.archive.v1.ArchiveService/ExportBundle", READ),
        (
            "/bitmountain.archive.v1.ArchiveService/DeleteBundle",
            DELETE,
        ),
        (
            "/bitmountain.archive.v1.ArchiveService/SetRetention",
            DELETE,
        ),
        (
            "/bitmountain.archive.v1.ArchiveService/SetLegalHold",
            DELETE,
        ),
        ("/bitmountain.archive.v1.ArchiveService/ClusterStatus", READ),
        ("/bitmountain.archive.v1.ArchiveService/CheckFixity", READ),
        ("/grpc.health.v1.Health/Check", OPEN),
        ("/grpc.health.v1.Health/Watch", OPEN),
        (
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            READ,
        ),
    ];

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Caller {
        Nobody,
        Cert(PeerRole),
        Token(Role),
    }

    impl Caller {
        fn tag(self) -> &'static str {
            match self {
                Caller::Nobody => "nobody",
                Caller::Cert(r) => r.as_str(),
                Caller::Token(r) => r.as_str(),
            }
        }
    }

    #[test]
    fn every_caller_against_every_method() {
        let expected: HashMap<&str, &str> = EXPECTED.iter().copied().collect();
        let rules: BTreeSet<&str> = RULES.iter().map(|(p, _)| *p).collect();
        assert_eq!(
            rules,
            expected.keys().copied().collect(),
            "EXPECTED covers RULES"
        );

        let mut table = HashMap::new();
        let mut tokens = HashMap::new();
        for role in Role::ALL {
            let t = Token::generate().unwrap();
            table.insert(
                t.id(),
                TokenRecord::new(&t, "t", role, Scope::default(), 0, 0),
            );
            tokens.insert(role, t);
        }
        let auth = Authorizer::new(Arc::new(table));
        let meta = [test_cert("spiffe://bitmountain/meta/m1")];
        let node = [test_cert("spiffe://bitmountain/node/n1")];
        let mut callers = vec![
            Caller::Nobody,
            Caller::Cert(PeerRole::Meta),
            Caller::Cert(PeerRole::Node),
        ];
        callers.extend(Role::ALL.map(Caller::Token));

        for (path, access) in RULES {
            let allowed: Vec<&str> = expected[path].split(' ').collect();
            for &caller in &callers {
                let mut headers = HeaderMap::new();
                let certs: Option<&[_]> = match caller {
                    Caller::Nobody => None,
                    Caller::Cert(PeerRole::Meta) => Some(&meta),
                    Caller::Cert(PeerRole::Node) => Some(&node),
                    Caller::Token(role) => {
                        let value = tokens[&role].authorization_value().parse().unwrap();
                        headers.insert(http::header::AUTHORIZATION, value);
                        None
                    }
                };
                let got = auth.check(path, &headers, certs, 1);
                let ctx = format!("{} calling {path}", caller.tag());
                if allowed.contains(&OPEN) {
                    assert_eq!(got, Ok(Principal::Anonymous), "{ctx}");
                    continue;
                }
                if allowed.contains(&caller.tag()) {
                    match (got, caller) {
                        (Ok(Principal::Peer(id)), Caller::Cert(r)) => {
                            assert_eq!(id.role, r, "{ctx}")
                        }
                        (Ok(Principal::Token(t)), Caller::Token(r)) => {
                            assert_eq!(t.role, r, "{ctx}")
                        }
                        (other, _) => panic!("{ctx}: {other:?}"),
                    }
                    continue;
                }
                let err = got.expect_err(&ctx);
                let text = err.to_string();
                match caller {
                    Caller::Nobody => {
                        assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{ctx}: {text}");
                        assert!(text.starts_with("missing"), "{ctx}: {text}");
                        assert!(text.contains(&access.to_string()), "{ctx}: {text}");
                    }
                    Caller::Cert(_) => {
                        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{ctx}: {text}");
                        assert!(text.contains(&access.to_string()), "{ctx}: {text}");
                    }
                    Caller::Token(_) => {
                        assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{ctx}: {text}");
                        let needed = match access.token_permission() {
                            Some(p) => format!("lacks permission `{p}`"),
                            None => "certificate (role".to_owned(),
                        };
                        assert!(text.contains(&needed), "{ctx}: {text}");
                    }
                }
            }
        }
        let d = auth.denials();
        assert!(d.unauthenticated > 0 && d.permission_denied > 0, "{d:?}");
    }
}
