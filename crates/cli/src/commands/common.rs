//! What the commands share: the `--cluster` argument, the async runtimes, the shutdown signal of
//! the daemons, and standard output (JSON, and noticing that its reader went away).

use std::future::Future;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bitmountain_client::{ArchiveClient, ClientError};
use bitmountain_meta::MetaClient;
use bitmountain_proto::Credentials;
use serde::Serialize;

use super::config::ClientConfig;
use super::credentials::AuthArgs;

/// Default node address: where `bitmountain dev` serves the public API.
pub const DEFAULT_CLUSTER: &str = "127.0.0.1:7700";

/// How a client command reaches the cluster: where, and with which CA and token. Flags and
/// environment variables first, then the client config file ([`ClientConfig`]).
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Any storage node (host:port; a comma-separated list to fail over). `status` and the
    /// operator commands also take a metadata member. Default: the config file's, else
    /// 127.0.0.1:7700.
    #[arg(long, value_name = "ADDR[,ADDR...]", env = "BITMOUNTAIN_CLUSTER")]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub auth: AuthArgs,
}

impl ClusterArgs {
    /// The address(es) to use.
    pub fn address(&self) -> anyhow::Result<String> {
        if let Some(c) = &self.cluster {
            return Ok(c.clone());
        }
        Ok(ClientConfig::load()?
            .cluster
            .unwrap_or_else(|| DEFAULT_CLUSTER.to_owned()))
    }

    /// The CA and token to connect with.
    pub fn credentials(&self) -> anyhow::Result<Credentials> {
        self.auth.credentials(&ClientConfig::load()?)
    }

    /// A client of the public API, which storage nodes serve.
    pub fn archive_client(&self) -> anyhow::Result<ArchiveClient> {
        Ok(ArchiveClient::new([self.address()?])?.with_credentials(self.credentials()?))
    }

    /// A client of exactly the metadata members at `addr`.
    pub fn meta_client_at(&self, addr: &str) -> anyhow::Result<MetaClient> {
        Ok(MetaClient::new([addr])?.with_credentials(self.credentials()?))
    }

    /// The metadata member to ask: the address itself if it is one, else the leader a storage
    /// node names.
    pub async fn metadata_address(&self) -> anyhow::Result<String> {
        let addr = self.address()?;
        let addr = addr.as_str();
        let unimplemented = bitmountain_proto::ErrorKind::Grpc(tonic::Code::Unimplemented);
        match self.archive_client()?.status().await {
            Ok(s) if !s.meta_leader_address.is_empty() => Ok(s.meta_leader_address),
            Ok(_) => anyhow::bail!(
                "node {addr} knows no metadata leader (election in progress or no quorum); try again or ask a metadata member directly"
            ),
            // Not a storage node (a metadata member answers its own status), or nothing answers:
            // the metadata status call reports that.
            Err(e) if e.kind() == Some(unimplemented.as_str()) => Ok(addr.to_owned()),
            Err(ClientError::Unreachable { .. }) => Ok(addr.to_owned()),
            Err(e) => {
                Err(anyhow::anyhow!(e).context(format!("asking {addr} for the cluster status")))
            }
        }
    }

    /// A client of the metadata group, through whichever member `metadata_address` finds.
    pub async fn meta_client(&self) -> anyhow::Result<MetaClient> {
        let address = self.metadata_address().await?;
        Ok(self
            .meta_client_at(&address)?
            .with_timeout(Duration::from_secs(30)))
    }

    /// Runs an operator command's requests: `ask` gets a client of the metadata group, on a
    /// client runtime.
    pub fn ask_meta<T, F, Fut>(&self, ask: F) -> anyhow::Result<T>
    where
        F: FnOnce(MetaClient) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        client_runtime()?.block_on(async { ask(self.meta_client().await?).await })
    }
}

/// A disk's or a node's id, for the commands that change its state.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// The id `bitmountain status` shows.
    pub id: u64,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The runtime of a client command: two workers move a transfer's bytes while the main thread
/// waits.
pub fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The runtime of a daemon (`node`, `meta`, `dev`), its threads named after it for `top -H`.
pub fn daemon_runtime(name: &str) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .context("starting the async runtime")
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending::<()>().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// Set once a write to standard output found its reader gone.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Standard output, for everything a command prints. A write into a pipe whose reader has gone
/// (`bitmountain ls | head -1`) fails as any write error does, and is remembered: `main` then
/// ends quietly, since the reader has what it wanted.
#[derive(Debug)]
pub struct Stdout(io::Stdout);

/// Standard output (see [`Stdout`]); `println!` would panic where this returns the error.
pub fn stdout() -> Stdout {
    Stdout(io::stdout())
}

/// Whether a write to standard output failed because its reader went away.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

fn noting_closed<T>(result: io::Result<T>) -> io::Result<T> {
    if let Err(e) = &result {
        if e.kind() == io::ErrorKind::BrokenPipe {
            STDOUT_CLOSED.store(true, Ordering::Relaxed);
        }
    }
    result
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        noting_closed(self.0.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        noting_closed(self.0.flush())
    }
}

/// Prints a value as pretty JSON on standard output: the `--json` of every command.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let mut out = BufWriter::new(stdout());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// Parses one `KEY=VALUE` label.
pub fn parse_label(text: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = text
        .split_once('=')
        .with_context(|| format!("label {text:?}: expected KEY=VALUE"))?;
    if k.is_empty() {
        anyhow::bail!("label {text:?}: the key is empty");
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Parses repeated `KEY=VALUE` labels; a key given twice is refused.
pub fn parse_labels(
    texts: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut labels = std::collections::BTreeMap::new();
    for l in texts {
        let (k, v) = parse_label(l)?;
        if labels.insert(k.clone(), v).is_some() {
            anyhow::bail!("label {k:?} is given twice");
        }
    }
    Ok(labels)
}
