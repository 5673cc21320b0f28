//! How commands get their security settings: the daemons' `--tls-dir` / `--insecure`
//! ([`ServeTlsArgs`]), and the clients' cluster CA and token ([`AuthArgs`]: flags, then
//! environment variables, then the client config file of [`super::config`]).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bitmountain_auth::cert::{read_tls_dir, TlsFiles};
use bitmountain_auth::PeerRole;
use bitmountain_proto::Credentials;

use super::config::ClientConfig;

/// Largest token file read (a token is under 100 bytes; this refuses a wrong file quickly).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// `--tls-dir` / `--insecure` of `meta` and `node`: secure by default.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeTlsArgs {
    /// Directory holding `ca.pem`, `cert.pem` and `key.pem` (`bitmountain cert init` and
    /// `cert issue`): TLS on every connection, mutual with members and nodes, and access
    /// control on every request.
    #[arg(long, value_name = "DIR", conflicts_with = "insecure")]
    pub tls_dir: Option<PathBuf>,
    /// Run without TLS and without access control: anyone who can reach the port can read,
    /// write and delete. Warned about at start and every hour.
    #[arg(long)]
    pub insecure: bool,
}

impl ServeTlsArgs {
    /// The TLS files for a process of `role`, `None` with `--insecure`; an error naming what
    /// to do when neither is given or the files are wrong.
    pub fn tls(&self, role: PeerRole) -> anyhow::Result<Option<TlsFiles>> {
        let Some(dir) = &self.tls_dir else {
            anyhow::ensure!(
                self.insecure,
                "refusing to start without TLS: give --tls-dir DIR (its ca.pem, cert.pem and \
                 key.pem come from `bitmountain cert init` and `bitmountain cert issue --role \
                 {role}`), or --insecure to run with neither TLS nor access control"
            );
            return Ok(None);
        };
        let files = read_tls_dir(dir).with_context(|| format!("--tls-dir {}", dir.display()))?;
        anyhow::ensure!(
            files.identity.role == role,
            "--tls-dir {}: cert.pem is {}'s, a {} certificate; this process needs one issued \
             with --role {role}",
            dir.display(),
            files.identity.name,
            files.identity.role,
        );
        Ok(Some(files))
    }
}

/// A client's credentials: the cluster CA and a token.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AuthArgs {
    /// The cluster CA certificate (its `ca.pem`): connect with TLS and verify the server.
    #[arg(long, value_name = "FILE", env = "BITMOUNTAIN_CA")]
    pub ca: Option<PathBuf>,
    /// An access token (`bmt_...`). A command line is visible to other users of the machine:
    /// prefer --token-file or BITMOUNTAIN_TOKEN.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "BITMOUNTAIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// A file holding the access token (`bitmountain dev` writes one).
    #[arg(long, value_name = "FILE", env = "BITMOUNTAIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl AuthArgs {
    /// The credentials these flags give, completed from the client config file.
    pub fn credentials(&self, config: &ClientConfig) -> anyhow::Result<Credentials> {
        let ca = self.ca.as_ref().or(config.ca.as_ref());
        let credentials = match ca {
            Some(path) => {
                let pem = std::fs::read(path).with_context(|| {
                    format!("reading the cluster CA certificate {}", path.display())
                })?;
                anyhow::ensure!(
                    String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----"),
                    "{} holds no PEM certificate; give the cluster's ca.pem",
                    path.display()
                );
                Credentials::tls(&pem, None)
            }
            None => Credentials::insecure(),
        };
        let token = match (
            &self.token,
            self.token_file.as_ref().or(config.token_file.as_ref()),
        ) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(read_token_file(path)?),
            (None, None) => None,
        };
        match token {
            Some(t) => credentials
                .with_token(&t)
                .context("the access token (--token, BITMOUNTAIN_TOKEN or --token-file)"),
            None => Ok(credentials),
        }
    }
}

/// The token in `path`: its first line, trimmed.
fn read_token_file(path: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    anyhow::ensure!(
        meta.len() <= MAX_TOKEN_FILE_BYTES,
        "the token file {} holds {} bytes; a token file holds one token",
        path.display(),
        meta.len()
    );
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        path.display()
    );
    Ok(token)
}
