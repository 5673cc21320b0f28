//! The decision for one request: its method's rule, its certificate, its token. Pure but for
//! the token lookup (a trait the servers implement) and the denial log and counters.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::HeaderMap;
use tonic::transport::CertificateDer;

use crate::cert::{peer_identity, PeerIdentity};
use crate::error::AuthError;
use crate::permission::{Principal, TokenPrincipal};
use crate::policy::{self, Access};
use crate::refusals::{Refusal, RefusalLog, RefusedCaller};
use crate::token::{self, Token, TokenError, TokenId, TokenRecord};

/// Where the token records are: the metadata store on a member, a cached copy on a node.
pub trait TokenVerifier: Send + Sync {
    /// The record of token `id`, `Ok(None)` if there is none. Called for every request that
    /// carries a well-formed token, so it must be quick (a map or key lookup, no network).
    /// An error means the table cannot be trusted now (a node's copy too old to use).
    fn lookup(&self, id: TokenId) -> Result<Option<TokenRecord>, LookupError>;
}

/// The token table could not be consulted; the reason goes to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// A fixed table: tests, and a starting point for a node's cache.
impl TokenVerifier for HashMap<TokenId, TokenRecord> {
    fn lookup(&self, id: TokenId) -> Result<Option<TokenRecord>, LookupError> {
        Ok(self.get(&id).cloned())
    }
}

/// Requests refused since the authorizer was made, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Denials {
    /// No usable credentials (`UNAUTHENTICATED`).
    pub unauthenticated: u64,
    /// Known caller, not allowed (`PERMISSION_DENIED`).
    pub permission_denied: u64,
}

/// Decides who may make a request, from the method policy, the peer's certificate and the
/// token table. Shared by every connection of a server (through [`crate::AuthLayer`]).
pub struct Authorizer {
    tokens: Arc<dyn TokenVerifier>,
    /// The services this server has; other paths are unknown methods. `None`: every service.
    served: Option<&'static [&'static str]>,
    unauthenticated: AtomicU64,
    permission_denied: AtomicU64,
    refusals: Arc<RefusalLog>,
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorizer")
            .field("served", &self.served)
            .field("denials", &self.denials())
            .finish_non_exhaustive()
    }
}

impl Authorizer {
    /// An authorizer for every service in the policy, looking tokens up in `tokens`.
    pub fn new(tokens: Arc<dyn TokenVerifier>) -> Authorizer {
        Authorizer {
            tokens,
            served: None,
            unauthenticated: AtomicU64::new(0),
            permission_denied: AtomicU64::new(0),
            refusals: Arc::default(),
        }
    }

    /// Limits the authorizer to the services of one kind of server
    /// ([`policy::MEMBER_SERVICES`], [`policy::NODE_SERVICES`]): a call of another service
    /// is an unknown method before any credential is looked at, as without the layer.
    pub fn serving(mut self, services: &'static [&'static str]) -> Authorizer {
        self.served = Some(services);
        self
    }

    /// The refusals waiting for the audit trail (handlers add theirs here too).
    pub fn refusals(&self) -> &Arc<RefusalLog> {
        &self.refusals
    }

    /// Requests refused so far.
    pub fn denials(&self) -> Denials {
        Denials {
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            permission_denied: self.permission_denied.load(Ordering::Relaxed),
        }
    }

    /// Who the request to `path` runs as, or why it is refused. `headers` are the request's
    /// (only `authorization` is read), `peer_certs` the client's verified TLS chain (leaf
    /// first), `now_unix_ms` the time expiry is judged at. Denials are logged with the
    /// token's id or the certificate's name, and counted.
    pub fn check(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer_certs: Option<&[CertificateDer<'_>]>,
        now_unix_ms: u64,
    ) -> Result<Principal, AuthError> {
        let mut seen = Seen::default();
        let result = self.decide(path, headers, peer_certs, now_unix_ms, &mut seen);
        if let Err(e) = &result {
            let token = seen.token_id.map(|id| id.to_string());
            let token = token.as_deref();
            let peer = seen.peer.as_ref().map(|p| p.to_string());
            let peer = peer.as_deref();
            match e.kind() {
                bitmountain_proto::ErrorKind::Unauthenticated => {
                    self.unauthenticated.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(method = path, token, peer, error = %e, "request refused");
                }
                bitmountain_proto::ErrorKind::PermissionDenied => {
                    self.permission_denied.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(method = path, token, peer, error = %e, "request refused");
                }
                _ => tracing::debug!(method = path, token, error = %e, "request refused"),
            }
            if e.is_denial() {
                self.refusals.push(Refusal {
                    time_unix_ms: now_unix_ms,
                    method: path.to_owned(),
                    caller: seen.caller(),
                    object: None,
                    message: e.to_string(),
                });
            }
        }
        result
    }

    /// [`Authorizer::check`] of a request without a certificate, judged now: a request that
    /// comes to the server another way than gRPC (the node's web console) but is allowed what
    /// the gRPC method `path` is.
    pub fn check_as(&self, path: &str, headers: &HeaderMap) -> Result<Principal, AuthError> {
        self.check(path, headers, None, crate::layer::now_unix_ms())
    }

    fn rule(&self, path: &str) -> Option<Access> {
        if let Some(served) = self.served {
            let service = policy::service_of(path)?;
            if !served.contains(&service) {
                return None;
            }
        }
        policy::access(path)
    }

    /// The decision, noting the token id and peer seen for the log.
    fn decide(
        &self,
        path: &str,
        headers: &HeaderMap,
        peer_certs: Option<&[CertificateDer<'_>]>,
        now_unix_ms: u64,
        seen: &mut Seen,
    ) -> Result<Principal, AuthError> {
        let access = self.rule(path).ok_or_else(|| AuthError::UnknownMethod {
            path: path.to_owned(),
        })?;
        if access.is_open() {
            return Ok(Principal::Anonymous);
        }
        // A certificate with no role, or not ours to parse, is a client certificate: no
        // identity, but worth naming in a refusal.
        let leaf = peer_certs.and_then(|c| c.first());
        seen.peer = leaf.and_then(|der| peer_identity(der));
        let peer = seen.peer.as_ref();
        if let Some(id) = peer.filter(|id| access.allows_peer(id.role)) {
            return Ok(Principal::Peer(id.clone()));
        }
        let Some(header) = authorization(headers)? else {
            return Err(match (peer, leaf) {
                (Some(id), _) => AuthError::WrongCaller {
                    who: id.to_string(),
                    method: path.to_owned(),
                    needs: access.to_string(),
                },
                (None, Some(_)) => AuthError::WrongCaller {
                    who: "a certificate without a Bit Mountain role".into(),
                    method: path.to_owned(),
                    needs: access.to_string(),
                },
                (None, None) => no_credentials(path, access),
            });
        };
        let token = Token::from_authorization(Some(header))?;
        seen.token_id = Some(token.id());
        let record = self
            .tokens
            .lookup(token.id())
            .map_err(|e| AuthError::Unavailable { reason: e.0 })?;
        let principal = TokenPrincipal::from(token::verify(&token, record.as_ref(), now_unix_ms)?);
        seen.token_name = Some(principal.name.clone());
        match access.token_permission() {
            Some(p) if principal.role.has(p) => Ok(Principal::Token(principal)),
            Some(permission) => Err(AuthError::MissingPermission {
                who: principal.to_string(),
                permission,
                what: path.to_owned(),
            }),
            None => Err(AuthError::WrongCaller {
                who: principal.to_string(),
                method: path.to_owned(),
                needs: access.to_string(),
            }),
        }
    }
}

/// Who a request claimed to be, for the denial log.
#[derive(Default)]
struct Seen {
    token_id: Option<TokenId>,
    /// The token's name, once its secret was verified.
    token_name: Option<String>,
    peer: Option<PeerIdentity>,
}

impl Seen {
    fn caller(&self) -> RefusedCaller {
        match (&self.token_id, &self.peer) {
            (Some(id), _) => RefusedCaller::Token {
                id: *id,
                name: self.token_name.clone(),
            },
            (None, Some(p)) => RefusedCaller::Peer(p.clone()),
            (None, None) => RefusedCaller::Anonymous,
        }
    }
}

/// The one `authorization` header's value; several are malformed (which one would count?).
fn authorization(headers: &HeaderMap) -> Result<Option<&[u8]>, TokenError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.as_bytes())),
        (Some(_), Some(_)) => Err(TokenError::Malformed),
    }
}

fn no_credentials(path: &str, access: Access) -> AuthError {
    let (what, hint) = match access.token_permission() {
        Some(_) => (
            "token",
            " (pass one with --token, BITMOUNTAIN_TOKEN or --token-file)",
        ),
        None => ("certificate", ""),
    };
    AuthError::NoCredentials {
        what,
        method: path.to_owned(),
        needs: format!("{access}{hint}"),
    }
}
