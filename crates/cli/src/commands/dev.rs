//! `bitmountain dev`: the embedded local cluster, one command. One metadata member and N
//! storage nodes with D disks each, all in this process, on loopback ports, with every byte in
//! one data directory kept across restarts (`DATA/dev.json` remembers the ports and the code).
//! The nodes are real: each has its own disks, registers with the metadata group and talks to
//! the others over gRPC, exactly as separate processes would: over TLS, with certificates and
//! the admin token made in the data directory ([`super::dev_tls`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bitmountain_meta::{Code, DomainLevel, MemberOptions, MetaConfig};
use bitmountain_raftstore::{Members, RaftConfig};
use serde::{Deserialize, Serialize};

use super::dev_tls::DevPki;

const DEV_STATE_FILE: &str = "dev.json";
const DEV_STATE_FORMAT: &str = "bitmountain-dev";
const DEV_STATE_VERSION: u32 = 1;
/// How long to wait for every node to register before reporting failure.
const READY_TIMEOUT_MS: u64 = 60_000;
/// How often start-up asks whether the next node has registered.
const READY_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where everything is kept (default: ~/.local/share/bitmountain/dev).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Storage nodes (at least 3).
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// Disks per node.
    #[arg(long, default_value_t = 2)]
    disks_per_node: usize,
    /// Address of the first node's public API (the others take free ports).
    #[arg(long, default_value = super::common::DEFAULT_CLUSTER)]
    listen: SocketAddr,
    /// Serve the web console (and the process's metrics) on this address through node 1,
    /// e.g. 127.0.0.1:9100.
    #[arg(long)]
    console: Option<SocketAddr>,
}

/// What a dev cluster remembers across restarts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DevState {
    format: String,
    version: u32,
    meta_address: String,
    node_addresses: Vec<String>,
    disks_per_node: usize,
    code: String,
}

fn default_data_dir() -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("bitmountain").join("dev")
}

/// A code that fits `nodes` failure domains: about a third parity, k at most 10.
fn code_for(nodes: usize) -> String {
    let m = (nodes / 3).clamp(1, 4);
    let k = (nodes - m).min(10);
    format!("{k}+{m}")
}

/// A free loopback address not in `taken`, kept in `dev.json` for later starts. Chosen below
/// the kernel's ephemeral port range, where no outgoing connection takes a port as its source
/// port between now and the node binding it (or on a later start). The probe's listener is
/// closed before the next one, so `taken` (compared by port: the first node may listen on
/// another interface) keeps one start from handing a port out twice.
fn free_loopback_addr(taken: &[String]) -> anyhow::Result<String> {
    let port_of = |addr: &str| addr.rsplit_once(':').map(|(_, p)| p.to_string());
    let is_taken = |addr: &str| taken.iter().any(|t| port_of(t) == port_of(addr));
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = ephemeral_start.saturating_sub(12_000).max(1024);
    for _ in 0..64 {
        if ephemeral_start <= low {
            break;
        }
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = low + (random % u64::from(ephemeral_start - low)) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            let addr = l.local_addr()?.to_string();
            if !is_taken(&addr) {
                return Ok(addr);
            }
        }
    }
    // The kernel's own choice, from its ephemeral range.
    for _ in 0..64 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        let addr = l.local_addr()?.to_string();
        if !is_taken(&addr) {
            return Ok(addr);
        }
    }
    anyhow::bail!(
        "no free loopback port found for the dev cluster; free some ports and start again"
    )
}

fn load_or_create_state(dir: &Path, args: &DevArgs) -> anyhow::Result<DevState> {
    let path = dir.join(DEV_STATE_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let state: DevState = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; move the directory away to start afresh",
                path.display()
            )
        })?;
        if state.format != DEV_STATE_FORMAT || state.version != DEV_STATE_VERSION {
            bail!(
                "{} is {} version {}; this binary reads {DEV_STATE_FORMAT} version {DEV_STATE_VERSION}",
                path.display(),
                state.format,
                state.version
            );
        }
        if state.node_addresses.len() != args.nodes || state.disks_per_node != args.disks_per_node {
            eprintln!(
                "note: {} holds a cluster of {} nodes × {} disks; using it as it is (--nodes and --disks-per-node apply to a new data directory)",
                dir.display(),
                state.node_addresses.len(),
                state.disks_per_node
            );
        }
        return Ok(state);
    }
    if args.nodes < 3 {
        bail!("--nodes {}: a dev cluster needs at least 3 nodes (erasure coding spreads every bundle over several)", args.nodes);
    }
    if args.disks_per_node == 0 {
        bail!("--disks-per-node must be at least 1");
    }
    let mut node_addresses = vec![args.listen.to_string()];
    for _ in 1..args.nodes {
        node_addresses.push(free_loopback_addr(&node_addresses)?);
    }
    let meta_address = free_loopback_addr(&node_addresses)?;
    let state = DevState {
        format: DEV_STATE_FORMAT.into(),
        version: DEV_STATE_VERSION,
        meta_address,
        node_addresses,
        disks_per_node: args.disks_per_node,
        code: code_for(args.nodes),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = serde_json::to_string_pretty(&state)?;
    let temp = dir.join(format!(".{DEV_STATE_FILE}.tmp"));
    std::fs::write(&temp, text).with_context(|| format!("writing {}", temp.display()))?;
    std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(state)
}

pub fn run(args: DevArgs) -> anyhow::Result<()> {
    let dir = args.data.clone().unwrap_or_else(default_data_dir);
    let state = load_or_create_state(&dir, &args)?;
    super::common::daemon_runtime("dev")?.block_on(run_cluster(dir, state, args.console))
}

type Tasks = tokio::task::JoinSet<anyhow::Result<()>>;

async fn run_cluster(
    dir: PathBuf,
    state: DevState,
    console: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |tx: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = tx.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let pki = DevPki::ensure(&dir, &state.meta_address, &state.node_addresses)?;
    let mut meta_opts = meta_options(&dir, &state)?;
    meta_opts.tls = Some(pki.files("meta-1")?);
    let mut tasks = Tasks::new();
    {
        let shutdown = stopped(&stop_tx);
        tasks.spawn(async move {
            bitmountain_meta::serve(meta_opts, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("metadata member: {e}"))
        });
    }
    let first = state.node_addresses[0].clone();
    let credentials = match unless_stopped(pki.admin_credentials(), &mut tasks).await {
        Ok(c) => c,
        Err(e) => {
            let _ = stop_tx.send(());
            return Err(e);
        }
    };
    // The metadata group numbers nodes in the order they first register. Starting each node
    // once the one before it is registered makes `node-N` node N in `bitmountain status`. On
    // later starts every node is registered already and keeps its id, so none waits.
    for (i, address) in state.node_addresses.iter().enumerate() {
        let number = i + 1;
        let mut cfg = node_config(&dir, &state, number, address)?;
        cfg.tls = Some(pki.files(&format!("node-{number}"))?);
        if number == 1 {
            cfg.metrics_listen = console;
        }
        let shutdown = stopped(&stop_tx);
        let name = format!("node {number} ({address})");
        tasks.spawn(async move {
            bitmountain_node::run(cfg, shutdown)
                .await
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))
        });
        let ready = wait_ready(&first, &credentials, number);
        if let Err(e) = unless_stopped(ready, &mut tasks).await {
            let _ = stop_tx.send(());
            return Err(e);
        }
    }
    // Whoever started us may have stopped reading stdout; the cluster keeps running regardless.
    let mut out = std::io::stdout();
    let configured = pki.write_client_config(&first).unwrap_or_else(|e| {
        tracing::warn!(error = %format!("{e:#}"), "could not write the client config");
        false
    });
    let mut text = banner(&dir, &state, &pki, configured);
    if let Some(addr) = console {
        text.push_str(&format!(
            "Web console: http://{addr}/ (it asks for a token: the admin token above)\n"
        ));
    }
    let _ = std::io::Write::write_all(&mut out, text.as_bytes());
    let _ = std::io::Write::flush(&mut out);

    let result = tokio::select! {
        _ = super::common::shutdown_signal() => Ok(()),
        Some(done) = tasks.join_next() => {
            match done {
                Ok(Ok(())) => Err(anyhow::anyhow!("a cluster member stopped")),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a cluster member failed: {e}")),
            }
        }
    };
    let _ = stop_tx.send(());
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    result
}

/// The dev cluster's one metadata member: member 1, on the address `dev.json` keeps.
fn meta_options(dir: &Path, state: &DevState) -> anyhow::Result<MemberOptions> {
    let listen: SocketAddr = state
        .meta_address
        .parse()
        .with_context(|| format!("dev.json: bad metadata address {:?}", state.meta_address))?;
    let mut members = Members::new();
    members.insert(1, state.meta_address.clone());
    Ok(MemberOptions {
        id: Some(1),
        data_dir: dir.join("meta"),
        listen,
        advertise: None,
        bootstrap: Some(members),
        raft: RaftConfig::new(0, String::new()),
        meta: MetaConfig {
            default_code: state.code.parse::<Code>()?,
            domain_level: DomainLevel::Host,
            allocation_ttl_ms: bitmountain_meta::server::DEFAULT_ALLOCATION_TTL_MS,
            heartbeat_interval_ms: bitmountain_node::limits::HEARTBEAT_INTERVAL_MS,
            ..MetaConfig::default()
        },
        tls: None,
        metrics_listen: None,
    })
}

/// Node `number` (from 1): its state and disks under `DATA/node-N/`.
fn node_config(
    dir: &Path,
    state: &DevState,
    number: usize,
    address: &str,
) -> anyhow::Result<bitmountain_node::NodeConfig> {
    let node_dir = dir.join(format!("node-{number}"));
    let disks = (1..=state.disks_per_node)
        .map(|d| node_dir.join(format!("disk-{d}")))
        .collect();
    let listen: SocketAddr = address
        .parse()
        .with_context(|| format!("dev.json: bad node address {address:?}"))?;
    Ok(bitmountain_node::NodeConfig::new(
        node_dir.join("state"),
        disks,
        listen,
        vec![state.meta_address.clone()],
    ))
}

/// Waits for `ready`, unless a cluster member stops first: then that member's error.
async fn unless_stopped<T>(
    ready: impl std::future::Future<Output = anyhow::Result<T>>,
    tasks: &mut Tasks,
) -> anyhow::Result<T> {
    tokio::select! {
        r = ready => r,
        Some(done) = tasks.join_next() => Err(match done {
            Ok(Err(e)) => e,
            Ok(Ok(())) => anyhow::anyhow!("a cluster member stopped during start-up"),
            Err(e) => anyhow::anyhow!("{e}"),
        }),
    }
}

fn banner(dir: &Path, state: &DevState, pki: &DevPki, configured: bool) -> String {
    let first = &state.node_addresses[0];
    let mut banner = format!(
        "Bit Mountain dev cluster is up: {} nodes × {} disks, code RS({}), data in {}\n",
        state.node_addresses.len(),
        state.disks_per_node,
        state.code.replace('+', ","),
        dir.display()
    );
    banner.push_str(&format!(
        "  public API (any node): {}\n  metadata group:        {}\n\n",
        state.node_addresses.join(", "),
        state.meta_address
    ));
    banner.push_str("Try, in another terminal:\n");
    banner.push_str(
        "  bitmountain put ./some-directory --label collection=demo   # prints the bundle id\n",
    );
    banner.push_str("  bitmountain ls                                              # bundles\n");
    banner.push_str("  bitmountain ls BUNDLE_ID                                    # its files\n");
    banner.push_str("  bitmountain get BUNDLE_ID/PATH -o page.tif\n");
    banner.push_str("  bitmountain status\n");
    banner.push_str(&format!(
        "TLS is on; the admin token is in {}.\n",
        pki.token_file.display()
    ));
    match configured {
        true => banner.push_str(&format!(
            "(the client config points at this cluster: {}; Ctrl-C stops the cluster, the data stays)\n",
            super::config::ClientConfig::path().map(|p| p.display().to_string()).unwrap_or_default()
        )),
        false => banner.push_str(&format!(
            "(the client config names another cluster: pass --cluster {first} --ca {} --token-file {};\n Ctrl-C stops the cluster, the data stays)\n",
            pki.ca_file().display(),
            pki.token_file.display()
        )),
    }
    banner
}

/// Waits until `nodes` nodes have registered and the first one answers the public API.
async fn wait_ready(
    first_node: &str,
    credentials: &bitmountain_proto::Credentials,
    nodes: usize,
) -> anyhow::Result<()> {
    let client =
        bitmountain_client::ArchiveClient::new([first_node])?.with_credentials(credentials.clone());
    let deadline = Instant::now() + Duration::from_millis(READY_TIMEOUT_MS);
    loop {
        let last = match client.status().await {
            Ok(s) if s.nodes.len() >= nodes => return Ok(()),
            Ok(s) => format!("{} of {nodes} nodes registered", s.nodes.len()),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!("the dev cluster did not come up within {READY_TIMEOUT_MS} ms: {last}");
        }
        tokio::time::sleep(READY_POLL).await;
    }
}
