//! The dev cluster's security, made on its first start and kept in its data directory: a CA
//! (`DATA/tls/ca`), a certificate per member and node (`DATA/tls/meta-1`, `DATA/tls/node-N`),
//! the first admin token (`DATA/meta/admin.token`, written by the metadata member), and the
//! client config file pointing at them, so every command works after `scripts/dev` unchanged.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bitmountain_auth::cert::{self, TlsFiles, CA_CERT_FILE};
use bitmountain_auth::PeerRole;
use bitmountain_proto::Credentials;

use super::config::ClientConfig;

/// How long start-up waits for the metadata member to write the first admin token.
const ADMIN_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
const ADMIN_TOKEN_POLL: Duration = Duration::from_millis(50);

/// Where the dev cluster's CA, certificates and admin token are.
#[derive(Debug, Clone)]
pub struct DevPki {
    tls: PathBuf,
    /// The admin token file.
    pub token_file: PathBuf,
}

impl DevPki {
    /// The CA and a certificate for the member and every node at `node_addresses`, made if
    /// missing (a data directory from before TLS gets them on its next start).
    pub fn ensure(
        dir: &Path,
        meta_address: &str,
        node_addresses: &[String],
    ) -> anyhow::Result<DevPki> {
        let tls = dir.join("tls");
        let ca = tls.join("ca");
        cert::ensure_ca(&ca).context("making the dev cluster's CA")?;
        let pki = DevPki {
            tls,
            token_file: dir
                .join("meta")
                .join(bitmountain_meta::server::ADMIN_TOKEN_FILE),
        };
        pki.issue("meta-1", PeerRole::Meta, meta_address)?;
        for (i, address) in node_addresses.iter().enumerate() {
            pki.issue(&format!("node-{}", i + 1), PeerRole::Node, address)?;
        }
        Ok(pki)
    }

    fn issue(&self, name: &str, role: PeerRole, address: &str) -> anyhow::Result<()> {
        let out = self.tls.join(name);
        let mut hosts = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        if let Some((host, _)) = address.rsplit_once(':') {
            let unspecified = host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_unspecified());
            if !unspecified && !hosts.iter().any(|h| h == host) {
                hosts.push(host.to_owned());
            }
        }
        cert::ensure_issued(&self.tls.join("ca"), name, role, &hosts, &out)
            .with_context(|| format!("issuing the dev certificate of {name}"))?;
        Ok(())
    }

    /// The cluster CA certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.tls.join("ca").join(CA_CERT_FILE)
    }

    /// The TLS files of `name` (`meta-1`, `node-3`).
    pub fn files(&self, name: &str) -> anyhow::Result<TlsFiles> {
        let dir = self.tls.join(name);
        cert::read_tls_dir(&dir)
            .with_context(|| format!("the dev certificate in {}", dir.display()))
    }

    /// Waits for the metadata member to write the first admin token (at once on later
    /// starts); then the credentials of a client holding it.
    pub async fn admin_credentials(&self) -> anyhow::Result<Credentials> {
        let deadline = Instant::now() + ADMIN_TOKEN_TIMEOUT;
        loop {
            match std::fs::read_to_string(&self.token_file) {
                Ok(t) if !t.trim().is_empty() => {
                    let ca = std::fs::read(self.ca_file()).context("reading the dev CA")?;
                    return Ok(Credentials::tls(&ca, None).with_token(t.trim())?);
                }
                _ if Instant::now() > deadline => anyhow::bail!(
                    "the metadata member did not write the admin token {} within {} s",
                    self.token_file.display(),
                    ADMIN_TOKEN_TIMEOUT.as_secs()
                ),
                _ => tokio::time::sleep(ADMIN_TOKEN_POLL).await,
            }
        }
    }

    /// Points the client config file at this cluster, unless it names another cluster (then
    /// the banner prints the flags instead). Returns whether the file is ours.
    pub fn write_client_config(&self, cluster: &str) -> anyhow::Result<bool> {
        let path = ClientConfig::path()?;
        let current = ClientConfig::load_from(&path).unwrap_or_default();
        let ours = ClientConfig {
            cluster: Some(cluster.to_owned()),
            ca: Some(std::path::absolute(self.ca_file())?),
            token_file: Some(std::path::absolute(&self.token_file)?),
        };
        let elsewhere = current.cluster.as_deref().is_some_and(|c| c != cluster)
            && current != ClientConfig::default();
        if elsewhere {
            return Ok(false);
        }
        if current != ours {
            ours.save_to(&path)?;
        }
        Ok(true)
    }
}
