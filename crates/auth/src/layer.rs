//! [`AuthLayer`]: the tower layer that checks every request of a tonic server in one place.
//!
//! Installed with `Server::builder().layer(AuthLayer::new(..))`, it wraps the whole router
//! (health and reflection included) and sees what a tonic interceptor cannot: the method path.
//! For each request it reads the path, the `authorization` header and the peer's verified
//! certificate chain (`TlsConnectInfo<TcpConnectInfo>`, which tonic's TLS server puts into
//! every request's extensions), asks the [`Authorizer`], and either passes the request on
//! with the [`Principal`] in its extensions (handlers read it with
//! `request.extensions().get::<Principal>()`) or answers the refusal itself, as a gRPC
//! trailers-only response carrying the status and its `x-bitmountain-error` kind.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::Either;
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::transport::CertificateDer;

use crate::authorizer::{Authorizer, Denials};

/// A connection's verified TLS chain (leaf first), for a server that accepts connections
/// itself rather than through tonic's TLS, and for tests. Only server code can put it into a
/// request's extensions (clients send headers, not extensions); tonic's own
/// `TlsConnectInfo` is preferred when both are present.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// The layer: one [`Authorizer`] shared by every connection of a server.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    authorizer: Arc<Authorizer>,
}

impl AuthLayer {
    /// A layer deciding with `authorizer`.
    pub fn new(authorizer: Authorizer) -> AuthLayer {
        AuthLayer {
            authorizer: Arc::new(authorizer),
        }
    }

    /// The authorizer (its denial counters).
    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// Requests refused so far.
    pub fn denials(&self) -> Denials {
        self.authorizer.denials()
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            authorizer: Arc::clone(&self.authorizer),
        }
    }
}

/// The layer's service around the server's router.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    authorizer: Arc<Authorizer>,
}

impl<S> tower::Service<http::Request<Body>> for AuthService<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<std::future::Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let certs = peer_certs(req.extensions());
        let decision = self.authorizer.check(
            req.uri().path(),
            req.headers(),
            certs.as_deref().map(Vec::as_slice),
            now_unix_ms(),
        );
        match decision {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
                // Call the service that was polled ready, leaving a fresh clone in its place
                // (the usual tower pattern for cloned inner services).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Either::Right(inner.call(req))
            }
            Err(e) => Either::Left(std::future::ready(Ok(tonic::Status::from(&e).into_http()))),
        }
    }
}

/// The client's verified certificate chain, if it presented one.
fn peer_certs(ext: &http::Extensions) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|info| info.peer_certs())
        .or_else(|| ext.get::<PeerCertificates>().map(|p| Arc::clone(&p.0)))
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;
    use std::convert::Infallible;

    use tower::{Layer as _, ServiceExt as _};

    use super::*;
    use crate::permission::{Principal, Role, Scope};
    use crate::token::{Token, TokenRecord};

    const GET_FILE: &str = "/bitmountain.archive.v1.ArchiveService/GetFile";
    const PUT_BUNDLE: &str = "/bitmountain.archive.v1.ArchiveService/PutBundle";
    const WRITE_SHARD: &str = "/bitmountain.v1.NodeService/WriteShard";
    const RAFT_STREAM: &str = "/bitmountain.v1.RaftTransport/Stream";

    struct Fixture {
        layer: AuthLayer,
        tokens: HashMap<Role, Token>,
    }

    fn fixture() -> Fixture {
        let mut table = HashMap::new();
        let mut tokens = HashMap::new();
        for role in Role::ALL {
            let t = Token::generate().unwrap();
            let rec = TokenRecord::new(&t, role.as_str(), role, Scope::default(), 0, 0);
            table.insert(t.id(), rec);
            tokens.insert(role, t);
        }
        Fixture {
            layer: AuthLayer::new(Authorizer::new(Arc::new(table))),
            tokens,
        }
    }

    fn cert_with_uri(uri: &str) -> PeerCertificates {
        PeerCertificates(Arc::new(vec![crate::cert::test_cert(uri)]))
    }

    /// Sends one request through the layer to a service that answers with the principal it
    /// was given; returns the status (`Ok` when the inner service ran), the kind header, and
    /// the principal.
    async fn send(
        layer: &AuthLayer,
        path: &str,
        authorization: Option<&str>,
        certs: Option<PeerCertificates>,
    ) -> (tonic::Status, Option<String>, Option<Principal>) {
        let inner = tower::service_fn(|req: http::Request<Body>| async move {
            let mut resp = http::Response::new(Body::default());
            if let Some(p) = req.extensions().get::<Principal>() {
                resp.extensions_mut().insert(p.clone());
            }
            Ok::<_, Infallible>(resp)
        });
        let mut req = http::Request::builder().uri(format!("http://node{path}"));
        if let Some(a) = authorization {
            req = req.header(http::header::AUTHORIZATION, a);
        }
        let mut req = req.body(Body::default()).unwrap();
        if let Some(c) = certs {
            req.extensions_mut().insert(c);
        }
        let resp = layer.layer(inner).oneshot(req).await.unwrap();
        let status =
            tonic::Status::from_header_map(resp.headers()).unwrap_or_else(|| tonic::Status::ok(""));
        let kind = resp
            .headers()
            .get(bitmountain_proto::ERROR_KIND_KEY)
            .map(|v| v.to_str().unwrap().to_owned());
        (status, kind, resp.extensions().get::<Principal>().cloned())
    }

    fn bearer(t: &Token) -> String {
        t.authorization_value()
    }

    #[tokio::test]
    async fn requests_are_refused_or_passed_with_their_principal() {
        use tonic::Code;
        let f = fixture();
        let l = &f.layer;

        // No token.
        let (st, kind, p) = send(l, GET_FILE, None, None).await;
        assert_eq!(
            (st.code(), kind.as_deref(), p),
            (Code::Unauthenticated, Some("unauthenticated"), None)
        );
        assert!(st.message().contains("missing token"), "{}", st.message());
        assert!(st.message().contains("`read`"), "{}", st.message());

        // 10,000 bytes of garbage.
        let garbage = format!("Bearer {}", "x".repeat(10_000));
        let (st, kind, _) = send(l, GET_FILE, Some(&garbage), None).await;
        assert_eq!(
            (st.code(), kind.as_deref()),
            (Code::Unauthenticated, Some("unauthenticated"))
        );
        assert!(st.message().contains("malformed"), "{}", st.message());

        // A good token without the `Bearer ` scheme.
        let reader = &f.tokens[&Role::Reader];
        let (st, _, _) = send(l, GET_FILE, Some(&reader.expose_secret()), None).await;
        assert_eq!(st.code(), Code::Unauthenticated);
        assert!(st.message().contains("malformed"), "{}", st.message());

        // An id nobody issued, well formed.
        let stranger = Token::generate().unwrap();
        let (st, _, _) = send(l, GET_FILE, Some(&bearer(&stranger)), None).await;
        assert_eq!(st.code(), Code::Unauthenticated);
        assert!(st.message().contains("unknown token"), "{}", st.message());

        // The wrong permission: a reader uploading.
        let (st, kind, _) = send(l, PUT_BUNDLE, Some(&bearer(reader)), None).await;
        assert_eq!(
            (st.code(), kind.as_deref()),
            (Code::PermissionDenied, Some("permission_denied"))
        );
        assert!(st.message().contains("`write`"), "{}", st.message());
        assert!(
            st.message().contains(&reader.id().to_string()),
            "{}",
            st.message()
        );

        // A good token: the handler gets its principal.
        let writer = &f.tokens[&Role::Writer];
        let (st, _, p) = send(l, PUT_BUNDLE, Some(&bearer(writer)), None).await;
        assert_eq!(st.code(), Code::Ok, "{}", st.message());
        assert_eq!(p.and_then(|p| p.token_id()), Some(writer.id()));

        // A node's certificate on a node-only method.
        let node = cert_with_uri("spiffe://bitmountain/node/n1");
        let (st, _, p) = send(l, WRITE_SHARD, None, Some(node.clone())).await;
        assert_eq!(st.code(), Code::Ok, "{}", st.message());
        assert!(
            matches!(p, Some(Principal::Peer(ref id)) if id.name == "n1"),
            "{p:?}"
        );

        // The strongest token on a member-only method.
        let admin = &f.tokens[&Role::Admin];
        let (st, kind, _) = send(l, RAFT_STREAM, Some(&bearer(admin)), None).await;
        assert_eq!(
            (st.code(), kind.as_deref()),
            (Code::PermissionDenied, Some("permission_denied"))
        );
        assert!(st.message().contains("role meta"), "{}", st.message());

        // A node's certificate on a member-only method, and on the client API.
        let (st, _, _) = send(l, RAFT_STREAM, None, Some(node.clone())).await;
        assert_eq!(st.code(), Code::PermissionDenied);
        assert!(
            st.message().contains("node n1's certificate"),
            "{}",
            st.message()
        );
        let (st, _, _) = send(l, GET_FILE, None, Some(node.clone())).await;
        assert_eq!(st.code(), Code::PermissionDenied);
        // ... where a token still counts.
        let (st, _, p) = send(l, GET_FILE, Some(&bearer(reader)), Some(node)).await;
        assert_eq!(st.code(), Code::Ok, "{}", st.message());
        assert_eq!(p.and_then(|p| p.token_id()), Some(reader.id()));

        // A client certificate of our CA without a role, on NodeService.
        let plain = cert_with_uri("https://example.com/");
        let (st, _, _) = send(l, WRITE_SHARD, None, Some(plain)).await;
        assert_eq!(st.code(), Code::PermissionDenied);
        assert!(
            st.message().contains("without a Bit Mountain role"),
            "{}",
            st.message()
        );

        // Health is open; an unknown method is unimplemented, with no kind header.
        let (st, _, p) = send(l, "/grpc.health.v1.Health/Check", None, None).await;
        assert_eq!((st.code(), p), (Code::Ok, Some(Principal::Anonymous)));
        let (st, kind, _) = send(
            l,
            "/bitmountain.v1.NodeService/Nope",
            Some(&bearer(admin)),
            None,
        )
        .await;
        assert_eq!((st.code(), kind), (Code::Unimplemented, None));

        let d = l.denials();
        assert_eq!((d.unauthenticated, d.permission_denied), (4, 5), "{d:?}");
    }

    #[tokio::test]
    async fn a_server_refuses_services_it_does_not_have() {
        let table: HashMap<_, _> = HashMap::new();
        let layer = AuthLayer::new(
            Authorizer::new(Arc::new(table)).serving(crate::policy::MEMBER_SERVICES),
        );
        // Without credentials, as a client probing whether an address is a node or a member.
        let (st, _, _) = send(
            &layer,
            "/bitmountain.archive.v1.ArchiveService/ClusterStatus",
            None,
            None,
        )
        .await;
        assert_eq!(st.code(), tonic::Code::Unimplemented);
        let (st, _, _) = send(&layer, "/bitmountain.v1.Diagnostics/Ping", None, None).await;
        assert_eq!(st.code(), tonic::Code::Ok);
        assert_eq!(layer.denials(), Denials::default());
    }

    #[tokio::test]
    async fn expired_and_revoked_tokens_say_so() {
        let t = Token::generate().unwrap();
        let mut rec = TokenRecord::new(&t, "old", Role::Admin, Scope::default(), 0, 1);
        let mut table = HashMap::new();
        table.insert(t.id(), rec.clone());
        let layer = AuthLayer::new(Authorizer::new(Arc::new(table)));
        let (st, _, _) = send(&layer, GET_FILE, Some(&bearer(&t)), None).await;
        assert_eq!(st.code(), tonic::Code::Unauthenticated);
        assert!(st.message().contains("expired"), "{}", st.message());
        rec.expires_unix_ms = 0;
        rec.revoked_unix_ms = 5;
        let mut table = HashMap::new();
        table.insert(t.id(), rec);
        let layer = AuthLayer::new(Authorizer::new(Arc::new(table)));
        let (st, _, _) = send(&layer, GET_FILE, Some(&bearer(&t)), None).await;
        assert!(st.message().contains("revoked"), "{}", st.message());
    }
}
