//! TLS for the servers and clients of members and nodes, from a `--tls-dir`'s files: the
//! server side (its certificate; client certificates optional but, when presented, verified
//! against the cluster CA: members and nodes present theirs, people carry tokens instead) and
//! the client side (the same certificate, trusting the same CA). `--insecure` runs neither and
//! says so at start and every hour ([`InsecureWarning`]).

use std::time::Duration;

use bitmountain_proto::Credentials;
use bitmountain_worker::{Next, StepError, Worker};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::cert::TlsFiles;

/// Longest a client may take over its TLS handshake before the server drops it.
pub const SERVER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a process without TLS repeats its warning.
pub const INSECURE_WARNING_INTERVAL: Duration = Duration::from_secs(3600);

impl TlsFiles {
    /// The server's TLS: this certificate; a client certificate is optional (tokens are for
    /// people) but must chain to the cluster CA when presented, so a certificate from another
    /// CA fails the handshake.
    pub fn server_config(&self) -> ServerTlsConfig {
        bitmountain_proto::connect::install_tls_provider();
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(true)
            .timeout(SERVER_HANDSHAKE_TIMEOUT)
    }

    /// How this member or node calls the others: its certificate, trusting the cluster CA.
    pub fn credentials(&self) -> Credentials {
        Credentials::tls(&self.ca_pem, Some((&self.cert_pem, &self.key_pem)))
    }
}

/// Logs that this process runs without TLS or access control: at start and every
/// [`INSECURE_WARNING_INTERVAL`].
#[derive(Debug)]
pub struct InsecureWarning {
    /// What runs insecurely (`metadata member 1`, `storage node at 10.0.0.5:7000`).
    pub what: String,
}

impl Worker for InsecureWarning {
    fn name(&self) -> &'static str {
        "insecure-warning"
    }

    async fn step(&mut self) -> Result<Next, StepError> {
        tracing::warn!(
            what = %self.what,
            "running with --insecure: no TLS and no access control; anyone who can reach this \
             port can read, write and delete (give --tls-dir to secure it)"
        );
        Ok(Next::Every(INSECURE_WARNING_INTERVAL))
    }
}
