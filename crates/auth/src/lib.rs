//! Access control for Bit Mountain: who may call which RPC, and on which bundles.
//!
//! Two kinds of caller, never mixed:
//! - **Members and nodes** prove who they are with a certificate from the cluster CA whose one
//!   URI SAN names their role (`spiffe://bitmountain/meta/<name>`, `.../node/<name>`; see
//!   [`cert`]). The role decides which internal RPCs they may make (Raft for members,
//!   NodeService and the node-facing metadata calls for nodes).
//! - **Clients** (people, scripts, the CLI) carry a bearer token ([`token`]):
//!   `authorization: Bearer bmt_<id>_<secret>`. Its record (held by the metadata group, only a
//!   hash of the secret) gives a role — a fixed set of [`Permission`]s — and an optional label
//!   [`Scope`] limiting the bundles it may read, write and delete ([`permission`]).
//!
//! Every RPC is checked in one place: [`AuthLayer`] ([`layer`]), a tower layer around a whole
//! tonic server. It asks the total method table ([`policy`]) who may call the method, checks
//! the certificate or the token ([`Authorizer`]), and hands the handler a [`Principal`] in the
//! request's extensions, or answers `UNAUTHENTICATED` / `PERMISSION_DENIED` itself. What the
//! layer cannot see — a bundle's labels — is decided by the handlers with
//! [`Principal::may_access`] and [`Principal::upload_labels`], pure functions too.
//!
//! Refused requests go to a bounded [`RefusalLog`] the server's audit reporter drains.
//!
//! [`tls`] turns a `--tls-dir` into the server's and client's TLS settings.
//!
//! Nothing here does network or disk I/O except [`cert`] (which writes key files); the token
//! table is reached through the [`TokenVerifier`] trait, implemented over the metadata store on
//! members and over a cached copy on nodes.

pub mod authorizer;
pub mod cert;
pub mod error;
pub mod layer;
pub mod permission;
pub mod policy;
pub mod refusals;
pub mod tls;
pub mod token;

pub use authorizer::{Authorizer, Denials, LookupError, TokenVerifier};
pub use cert::{CertError, PeerIdentity, PeerRole};
pub use error::AuthError;
pub use layer::{AuthLayer, AuthService, PeerCertificates};
pub use permission::{BundleAction, Permission, Principal, Role, Scope, TokenPrincipal};
pub use policy::Access;
pub use refusals::{Refusal, RefusalLog, RefusedCaller};
pub use tls::InsecureWarning;
pub use token::{Token, TokenError, TokenHash, TokenId, TokenRecord};
