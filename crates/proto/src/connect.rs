//! How every Bit Mountain client reaches a server: [`Credentials`] (TLS settings and a bearer
//! token) turn an address into a tonic [`Endpoint`] and a channel into an [`AuthChannel`] that
//! carries the token on every call. One home for this, so the archive client, the metadata
//! client, the Raft transport and the node's shard client connect the same way.
//!
//! Members and nodes connect with their certificate (mutual TLS, no token); people and
//! scripts with the cluster CA and a token. `--insecure` clusters use [`Credentials::insecure`].

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A channel whose calls carry the caller's token (if it has one).
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// Largest HTTP/2 frame a Bit Mountain process accepts (it advertises this to its peers, who
/// may then send frames up to it). HTTP/2's default is 16 KiB: a 64 KiB read then crossed the
/// connection as four DATA frames, and under TLS each frame of 16 KiB plus its 9-byte header
/// became a full record and a 9-byte one. 256 KiB carries a 64 KiB read in one frame (five
/// records) and keeps one frame's hold on a shared connection short (a millisecond at 2 Gbit/s).
pub const H2_MAX_FRAME_BYTES: u32 = 256 << 10;

/// Longest a TLS handshake may take before the connection attempt fails.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`speaks_tls`] waits for the server's answer to a plaintext greeting.
pub const TLS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Adds `authorization: Bearer <token>` to every request; nothing when it holds no token.
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.write_str(if self.0.is_some() {
            "Bearer(***)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A token that cannot go into an HTTP header (it holds bytes a header may not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the token holds characters an HTTP header cannot carry; check the token file or variable")]
pub struct BadToken;

/// What a client presents: TLS settings (trusting the cluster CA, optionally with its own
/// certificate) and an optional bearer token. Cheap to clone.
#[derive(Clone, Default)]
pub struct Credentials {
    tls: Option<ClientTlsConfig>,
    bearer: Bearer,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("tls", &self.tls.is_some())
            .field("bearer", &self.bearer)
            .finish()
    }
}

impl Credentials {
    /// Plaintext, no token: for clusters run with `--insecure`.
    pub fn insecure() -> Credentials {
        Credentials::default()
    }

    /// TLS trusting the CA certificates in `ca_pem`, presenting the certificate and key in
    /// `identity` (`(cert_pem, key_pem)`) when given: members and nodes do, clients do not.
    pub fn tls(ca_pem: &[u8], identity: Option<(&[u8], &[u8])>) -> Credentials {
        install_tls_provider();
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .timeout(TLS_HANDSHAKE_TIMEOUT);
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        Credentials {
            tls: Some(tls),
            bearer: Bearer::default(),
        }
    }

    /// The same, carrying `token` (`bmt_...`) on every call.
    pub fn with_token(mut self, token: &str) -> Result<Credentials, BadToken> {
        let value = format!("Bearer {}", token.trim());
        self.bearer = Bearer(Some(value.parse().map_err(|_| BadToken)?));
        Ok(self)
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether calls carry a token.
    pub fn has_token(&self) -> bool {
        self.bearer.0.is_some()
    }

    /// The endpoint for `host:port` (`https://` with TLS, `http://` without), accepting
    /// frames up to [`H2_MAX_FRAME_BYTES`]. Connect and window settings are the caller's.
    pub fn endpoint(&self, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        let addr = addr
            .trim()
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let endpoint = match &self.tls {
            Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone()),
            None => Endpoint::from_shared(format!("http://{addr}")),
        }?;
        Ok(endpoint.max_frame_size(H2_MAX_FRAME_BYTES))
    }

    /// A channel to `endpoint` (from [`Credentials::endpoint`], with the caller's settings)
    /// that connects on first use. With TLS the TCP stream beneath is read through a buffer
    /// ([`crate::buffered`]): rustls alone reads 4 KiB per system call.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match self.tls {
            Some(_) => endpoint.connect_with_connector_lazy(crate::buffered::BufferedConnector),
            None => endpoint.connect_lazy(),
        }
    }

    /// The same, connected now.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match self.tls {
            Some(_) => {
                endpoint
                    .connect_with_connector(crate::buffered::BufferedConnector)
                    .await
            }
            None => endpoint.connect().await,
        }
    }

    /// `channel` with this caller's token on every call.
    pub fn wrap(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, self.bearer.clone())
    }
}

/// Makes rustls's aws-lc-rs provider the process's, with AES-128-GCM first among its TLS 1.3
/// suites (then AES-256-GCM, then ChaCha20-Poly1305). aws-lc-rs rather than ring (which
/// still verifies certificates and makes them): its AES-GCM sealed 16 KiB records at 11–11.7
/// GB/s here against ring's 8–9.7, and every uploaded byte crosses TLS about twice
/// (docs/benchmarks.md, "TLS and tokens"). rustls's own order puts AES-256 first;
/// AES-128-GCM is about 15 % faster on this hardware and as sound for the life of an archive's
/// connections. A server follows the client's order, so two Bit Mountain processes agree on it;
/// another client may still choose any of the three. Call before any TLS configuration is
/// built (the server's and the client's both take the process's provider); later calls do
/// nothing.
pub fn install_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use rustls::CipherSuite as S;
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites.sort_by_key(|s| match s.suite() {
            S::TLS13_AES_128_GCM_SHA256 => 0,
            S::TLS13_AES_256_GCM_SHA384 => 1,
            _ => 2,
        });
        // Err: a provider is already the process's (a test harness's, say); it stays.
        let _ = provider.install_default();
    });
}

/// Whether the server at `addr` answers a plaintext HTTP/2 greeting with a TLS alert: it
/// speaks TLS, and the caller, talking plaintext, should be told to pass `--ca` rather than
/// shown a transport error. `false` when it cannot tell (no connection, no answer).
pub async fn speaks_tls(addr: &str) -> bool {
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 2];
        s.read_exact(&mut head).await.ok()?;
        // A TLS record: content type alert (21) or handshake (22), major version 3.
        Some(matches!(head[0], 21 | 22) && head[1] == 3)
    };
    matches!(
        tokio::time::timeout(TLS_PROBE_TIMEOUT, probe).await,
        Ok(Some(true))
    )
}

/// The advice for a plaintext client whose server speaks TLS.
pub fn needs_ca_message(addr: &str) -> String {
    format!(
        "{addr} speaks TLS: pass the cluster CA with --ca FILE (or BITMOUNTAIN_CA, or \
         `bitmountain config set ca FILE`)"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_token_goes_into_the_header_and_never_into_debug_output() {
        let c = Credentials::insecure()
            .with_token("bmt_0123456789abcdef_secret")
            .unwrap();
        assert!(c.has_token() && !c.is_tls());
        assert!(!format!("{c:?}").contains("secret"));
        let mut b = c.bearer.clone();
        let req = b.call(tonic::Request::new(())).unwrap();
        assert_eq!(
            req.metadata().get("authorization").unwrap(),
            "Bearer bmt_0123456789abcdef_secret"
        );
        assert_eq!(
            Credentials::insecure().with_token("bad\ntoken").err(),
            Some(BadToken)
        );
    }

    #[test]
    fn the_process_prefers_aes_128_gcm() {
        let _ = Credentials::tls(b"", None);
        let provider = rustls::crypto::CryptoProvider::get_default().unwrap();
        let suites: Vec<rustls::CipherSuite> =
            provider.cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(suites[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(suites[1], rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    }

    #[test]
    fn no_token_no_header() {
        let mut b = Bearer::default();
        let req = b.call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("authorization").is_none());
    }

    #[tokio::test]
    async fn a_plaintext_server_is_not_taken_for_tls() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 24];
            let _ = s.read_exact(&mut buf).await;
            // An HTTP/2 SETTINGS frame header, as a plaintext server answers.
            let _ = s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
        });
        assert!(!speaks_tls(&addr).await);
    }
}
