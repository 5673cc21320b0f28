//! `bitmountain node`: opens the disks, registers with the metadata group, then serves
//! NodeService (shards), ArchiveService (the public API), gRPC health and reflection on one
//! port, with heartbeats and garbage collection in the background.
//!
//! Disks: a directory with an identity file of this cluster is opened; an empty directory this
//! node has never served becomes a new disk (registered, then its identity file written); a
//! directory this node served before that lost its identity file (unmounted?), a non-empty
//! directory without one, or one of another cluster is refused and the node does not start.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bitmountain_auth::cert::TlsFiles;
use bitmountain_auth::{policy, AuthLayer, Authorizer, InsecureWarning};
use bitmountain_disk::{ClusterId, DiskError, DiskStore, IDENTITY_FILE};
use bitmountain_meta_client::types::{DiskReport, Registration};
use bitmountain_meta_client::{DiskState, MetaClient};
use bitmountain_proto::v1 as pb;

use bitmountain_worker::Workers;

use crate::console::{Console, ConsolePages};
use crate::coordinator::{Coordinator, CoordinatorConfig};
use crate::error::{NodeError, Result};
use crate::gc::{GcGrace, GcWorker};
use crate::heal::repair::RepairWorker;
use crate::heal::scrub::Scrubber;
use crate::heal::{HealConfig, Healer};
use crate::heartbeat::Heartbeats;
use crate::limits::{
    GC_INTERVAL_MS, HEARTBEAT_INTERVAL_MS, MAX_MESSAGE_BYTES, MAX_UPLOAD_PIECE_BYTES,
    ORPHAN_GRACE_MS, STALE_COPY_GRACE_MS, SUSPECT_NODE_MS, UPLOAD_IDLE_TIMEOUT_MS,
    WORKER_SHUTDOWN_GRACE,
};
use crate::node_state::{KnownDisk, NodeStateFile, PendingRegistration};
use crate::recovery::{RecoveryControl, ScanReporter};
use crate::shard_io::{Peers, ShardIo};
use crate::shard_service::{DiskSet, NodeShardService};
use crate::tokens::{max_table_age, TokenCache};

/// Entries a fresh disk directory may hold and still count as empty.
const IGNORED_IN_EMPTY_DISK: &[&str] = &["lost+found"];
/// Pause between attempts to reach the metadata group at start-up.
const REGISTER_RETRY_MS: u64 = 1_000;

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The node's own state (node id, known disks).
    pub data_dir: PathBuf,
    /// Disk directories.
    pub disks: Vec<PathBuf>,
    pub listen: SocketAddr,
    /// Address others reach this node at (default: the bound listen address).
    pub advertise: Option<String>,
    /// Metadata group members.
    pub meta: Vec<String>,
    pub zone: String,
    pub rack: String,
    /// Failure-domain host; empty: one host per node.
    pub host: String,
    pub heartbeat_interval: Duration,
    pub gc_interval: Duration,
    /// Shards of bundles the metadata group does not know are kept this long after their
    /// allocation time.
    pub orphan_grace: Duration,
    /// A shard write stream silent this long is abandoned.
    pub shard_idle_timeout: Duration,
    /// Shard files of sealed bundles the placement does not name here are kept this long after
    /// their last write.
    pub stale_copy_grace: Duration,
    pub coordinator: CoordinatorConfig,
    pub heal: HealConfig,
    /// TLS and access control (`--tls-dir`); `None` runs plaintext and open (`--insecure`).
    pub tls: Option<TlsFiles>,
    /// Where to serve Prometheus metrics, `/healthz` and `/readyz` (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
}

impl NodeConfig {
    /// Defaults for everything but the essentials.
    pub fn new(
        data_dir: PathBuf,
        disks: Vec<PathBuf>,
        listen: SocketAddr,
        meta: Vec<String>,
    ) -> Self {
        NodeConfig {
            data_dir,
            disks,
            listen,
            advertise: None,
            meta,
            zone: String::new(),
            rack: String::new(),
            host: String::new(),
            heartbeat_interval: Duration::from_millis(HEARTBEAT_INTERVAL_MS),
            gc_interval: Duration::from_millis(GC_INTERVAL_MS),
            orphan_grace: Duration::from_millis(ORPHAN_GRACE_MS),
            shard_idle_timeout: Duration::from_millis(UPLOAD_IDLE_TIMEOUT_MS),
            stale_copy_grace: Duration::from_millis(STALE_COPY_GRACE_MS),
            coordinator: CoordinatorConfig::default(),
            heal: HealConfig::default(),
            tls: None,
            metrics_listen: None,
        }
    }
}

/// A disk directory as found at start-up.
#[derive(Debug)]
enum FoundDisk {
    Existing(DiskStore),
    New(PathBuf),
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| NodeError::BadRequest {
        reason: format!("disk path {}: {e}", path.display()),
    })
}

fn is_empty_dir(path: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(path).map_err(|e| NodeError::BadRequest {
        reason: format!("cannot list disk directory {}: {e}", path.display()),
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| NodeError::BadRequest {
            reason: format!("cannot list disk directory {}: {e}", path.display()),
        })?;
        if !IGNORED_IN_EMPTY_DISK.contains(&entry.file_name().to_string_lossy().as_ref()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Classifies each disk directory; refuses the ones that must not be used.
fn find_disks(cfg: &NodeConfig, state: &NodeStateFile) -> Result<Vec<FoundDisk>> {
    let expected_cluster = if state.cluster_id.is_empty() {
        None
    } else {
        Some(
            ClusterId::from_hex(&state.cluster_id).ok_or_else(|| NodeError::BadRequest {
                reason: format!(
                    "the node state names cluster {:?}, which is not a cluster id",
                    state.cluster_id
                ),
            })?,
        )
    };
    let mut found = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for path in &cfg.disks {
        let path = absolute(path)?;
        if !seen.insert(path.clone()) {
            return Err(NodeError::BadRequest {
                reason: format!("disk {} is given twice", path.display()),
            });
        }
        let known = state.known_disk(&path);
        if path.join(IDENTITY_FILE).exists() {
            found.push(FoundDisk::Existing(DiskStore::open(
                &path,
                expected_cluster,
            )?));
            continue;
        }
        if let Some(disk_id) = known {
            return Err(NodeError::BadRequest {
                reason: format!(
                    "disk {disk_id} at {} has no identity file any more: is the disk mounted? Mount it and restart; if the disk is lost, remove it from --disk (the cluster repairs its shards)",
                    path.display()
                ),
            });
        }
        if !path.exists() {
            std::fs::create_dir_all(&path).map_err(|e| NodeError::BadRequest {
                reason: format!("cannot create disk directory {}: {e}", path.display()),
            })?;
        }
        if !is_empty_dir(&path)? {
            return Err(DiskError::NoIdentity { path }.into());
        }
        found.push(FoundDisk::New(path));
    }
    if found.is_empty() {
        return Err(NodeError::BadRequest {
            reason: "a node needs at least one --disk".into(),
        });
    }
    Ok(found)
}

pub(crate) fn disk_info(path: &Path, disk_id: u64) -> DiskReport {
    let (capacity, free) = match (fs4::total_space(path), fs4::available_space(path)) {
        (Ok(c), Ok(f)) => (c, f),
        _ => (0, 0),
    };
    DiskReport {
        disk_id,
        path: path.display().to_string(),
        capacity_bytes: capacity,
        used_bytes: capacity.saturating_sub(free),
        state: DiskState::Ok,
        last_scrub_unix_ms: 0,
        last_scrub_damaged_shards: 0,
    }
}

/// Registers the node and its disks, retrying until the metadata group answers; writes the
/// identity files of new disks and the node state.
async fn register(
    cfg: &NodeConfig,
    meta: &MetaClient,
    address: &str,
    state: &mut NodeStateFile,
    found: Vec<FoundDisk>,
) -> Result<(Vec<DiskStore>, bool)> {
    let new_disks: Vec<PathBuf> = found
        .iter()
        .filter_map(|d| match d {
            FoundDisk::New(p) => Some(p.clone()),
            FoundDisk::Existing(_) => None,
        })
        .collect();
    let request_id = match &state.pending_registration {
        Some(p) if p.new_disks == new_disks => p.request_id.clone(),
        _ => format!("register-{:032x}", rand::random::<u128>()),
    };
    if !new_disks.is_empty() {
        state.pending_registration = Some(PendingRegistration {
            request_id: request_id.clone(),
            new_disks: new_disks.clone(),
        });
        state.save(&cfg.data_dir)?;
    }
    let disks: Vec<DiskReport> = found
        .iter()
        .map(|d| match d {
            FoundDisk::Existing(store) => disk_info(store.root(), store.disk_id()),
            FoundDisk::New(path) => disk_info(path, 0),
        })
        .collect();
    // The cluster the node's disks belong to: a group rebuilding itself takes it.
    let cluster_id = match found.iter().find_map(|d| match d {
        FoundDisk::Existing(store) => Some(store.identity().cluster_id.to_string()),
        FoundDisk::New(_) => None,
    }) {
        Some(id) => id,
        None => state.cluster_id.clone(),
    };
    let request = Registration {
        request_id,
        node_id: state.node_id,
        address: address.to_owned(),
        zone: cfg.zone.clone(),
        rack: cfg.rack.clone(),
        host: cfg.host.clone(),
        disks,
        cluster_id,
    };
    let response = loop {
        match meta.register_node(&request).await {
            Ok(r) => break r,
            Err(e @ bitmountain_meta_client::MetaError::NoMember { .. }) => {
                tracing::warn!(error = %e, "waiting for the metadata group");
                tokio::time::sleep(Duration::from_millis(REGISTER_RETRY_MS)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let cluster = ClusterId::from_hex(&response.cluster_id).ok_or_else(|| {
        NodeError::Internal(format!(
            "the metadata group answered with cluster id {:?}",
            response.cluster_id
        ))
    })?;
    if response.disk_ids.len() != found.len() {
        return Err(NodeError::Internal(format!(
            "registered {} disks but the metadata group answered for {}",
            found.len(),
            response.disk_ids.len()
        )));
    }
    let now_ms = bitmountain_meta_client::types::now_unix_ms();
    let mut stores = Vec::new();
    for (disk, disk_id) in found.into_iter().zip(&response.disk_ids) {
        let store = match disk {
            FoundDisk::Existing(store) => {
                if store.identity().cluster_id != cluster {
                    return Err(DiskError::WrongCluster {
                        path: store.root().to_path_buf(),
                        found: store.identity().cluster_id.to_string(),
                        expected: cluster.to_string(),
                    }
                    .into());
                }
                store
            }
            FoundDisk::New(path) => DiskStore::init(&path, cluster, *disk_id, now_ms)?,
        };
        stores.push(store);
    }
    state.node_id = response.node_id;
    state.cluster_id = response.cluster_id.clone();
    state.pending_registration = None;
    for store in &stores {
        let path = store.root().to_path_buf();
        state.disks.retain(|d| d.path != path);
        state.disks.push(KnownDisk {
            path,
            disk_id: store.disk_id(),
        });
    }
    state.save(&cfg.data_dir)?;
    Ok((stores, response.recovering))
}

/// Runs a node until `shutdown` resolves or the server fails.
pub async fn run(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| NodeError::BadRequest {
            reason: format!(
                "cannot listen on {}: {e} (is the address in use?)",
                cfg.listen
            ),
        })?;
    // The metrics endpoint answers from the start (`/readyz` says not ready until the node
    // serves), so a probe can tell "starting" from "dead".
    let ready = Arc::new(AtomicBool::new(false));
    let console = Console::new();
    let metrics_task = match cfg.metrics_listen {
        Some(addr) => Some(start_metrics(addr, Arc::clone(&ready), Arc::clone(&console)).await?),
        None => None,
    };
    let bound = listener
        .local_addr()
        .map_err(|e| NodeError::Internal(format!("listen address: {e}")))?;
    let address = cfg.advertise.clone().unwrap_or_else(|| bound.to_string());
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| NodeError::BadRequest {
        reason: format!(
            "cannot create data directory {}: {e}",
            cfg.data_dir.display()
        ),
    })?;
    let mut state = NodeStateFile::load(&cfg.data_dir)?;
    let found = find_disks(&cfg, &state)?;
    let credentials = cfg
        .tls
        .as_ref()
        .map(TlsFiles::credentials)
        .unwrap_or_default();
    let meta = Arc::new(MetaClient::new(&cfg.meta)?.with_credentials(credentials.clone()));
    let (stores, recovering) = register(&cfg, &meta, &address, &mut state, found).await?;
    let recovery = Arc::new(RecoveryControl::default());
    if recovering {
        tracing::warn!("the metadata group is recovering: this node reports its disks' scans");
        recovery.observe(true, u64::MAX);
    }
    for store in &stores {
        match store.clean_temp() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                disk = store.disk_id(),
                removed = n,
                "removed unfinished shard writes"
            ),
            Err(e) => {
                tracing::warn!(disk = store.disk_id(), error = %e, "could not clean temporary files")
            }
        }
    }
    let disk_ids: Vec<u64> = stores.iter().map(|s| s.disk_id()).collect();
    // Kept-open shard files take at most a quarter of the open-file limit.
    let soft_limit = bitmountain_disk::open_file_soft_limit();
    let kept = bitmountain_disk::kept_files_per_disk(soft_limit, stores.len());
    if kept < bitmountain_disk::MAX_OPEN_SHARD_FILES_PER_DISK {
        tracing::warn!(
            open_file_limit = ?soft_limit,
            disks = stores.len(),
            kept_files_per_disk = kept,
            "the open-file limit is low for this many disks: fewer shard files are kept open \
             for reads (raise it, e.g. LimitNOFILE in the systemd unit)"
        );
    }
    for store in &stores {
        store.limit_open_files(kept);
    }
    let disks = DiskSet::new(stores);
    let io = Arc::new(ShardIo::new(
        disks.clone(),
        Peers::new(Duration::from_millis(SUSPECT_NODE_MS), credentials),
    ));
    let coordinator = Arc::new(Coordinator::new(
        state.node_id,
        address.clone(),
        Arc::clone(&meta),
        Arc::clone(&io),
        cfg.coordinator.clone(),
    ));
    tracing::info!(node = state.node_id, %address, disks = ?disk_ids, cluster = %state.cluster_id, "storage node serving");

    let healer = Healer::new(Arc::clone(&coordinator), cfg.heal.clone());
    let tokens = match &cfg.tls {
        Some(_) => Some(load_tokens(&meta, cfg.heartbeat_interval).await),
        None => None,
    };
    let workers = start_workers(
        &cfg,
        &state,
        &disks,
        &coordinator,
        &healer,
        tokens.clone(),
        recovery,
    )?;
    if cfg.tls.is_none() {
        workers.spawn(InsecureWarning {
            what: format!("storage node {} at {address}", state.node_id),
        });
    }
    let auth = tokens.map(|t| AuthLayer::new(Authorizer::new(t).serving(policy::NODE_SERVICES)));
    // Refusals (the layer's and the handlers') go to the group's audit trail; reads to the
    // node's own access log.
    let refusals = auth.as_ref().map(|a| Arc::clone(a.authorizer().refusals()));
    if let Some(log) = &refusals {
        let client = Arc::clone(&meta);
        workers.spawn(bitmountain_meta_client::audit::RefusalReporter::new(
            Arc::clone(log),
            Box::new(move || Ok(Arc::clone(&client))),
        ));
    }
    let audit = crate::audit::NodeAudit::new(refusals, Some(&cfg.data_dir)).map_err(|e| {
        NodeError::BadRequest {
            reason: format!(
                "read access log under {}: {e} (is the data directory writable?)",
                cfg.data_dir.display()
            ),
        }
    })?;
    // The console judges tokens with the same authorizer (and counts its refusals with it).
    console.start(
        Arc::clone(&meta),
        address.clone(),
        auth.as_ref().map(|a| Arc::clone(a.authorizer())),
    );
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = serve(
        listener,
        &cfg,
        auth,
        disks,
        &healer,
        (coordinator, Arc::new(audit)),
        shutdown,
    )
    .await;
    if let Some(task) = metrics_task {
        task.abort();
    }
    workers.shutdown(WORKER_SHUTDOWN_GRACE).await;
    served
}

/// Serves the process's metrics and the web console on `addr`; `/readyz` follows `ready`.
async fn start_metrics(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    console: Arc<Console>,
) -> Result<tokio::task::JoinHandle<()>> {
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| NodeError::BadRequest {
                reason: format!("--metrics-listen {addr}: {e} (is the address in use?)"),
            })?;
    let endpoint = bitmountain_metrics::Endpoint {
        metrics: bitmountain_metrics::global(),
        refresh: None,
        ready: Arc::new(move || ready.load(std::sync::atomic::Ordering::Relaxed)),
        pages: Some(Arc::new(ConsolePages(console))),
    };
    Ok(tokio::spawn(bitmountain_metrics::serve(
        listener,
        endpoint,
        std::future::pending(),
    )))
}

/// The token table, fetched before the node serves so that clients are not refused while
/// the first heartbeat is on its way; if the group does not answer, the heartbeat fetches it.
async fn load_tokens(meta: &MetaClient, heartbeat_interval: Duration) -> Arc<TokenCache> {
    let cache = Arc::new(TokenCache::new(max_table_age(heartbeat_interval)));
    match meta.list_tokens().await {
        Ok(table) => cache.replace(table),
        Err(e) => tracing::warn!(error = %e, "could not load the token table yet"),
    }
    cache
}

/// Starts the node's background workers: heartbeats, garbage collection, repairs, scrub.
fn start_workers(
    cfg: &NodeConfig,
    state: &NodeStateFile,
    disks: &DiskSet,
    coordinator: &Arc<Coordinator>,
    healer: &Arc<Healer>,
    tokens: Option<Arc<TokenCache>>,
    recovery: Arc<RecoveryControl>,
) -> Result<Arc<Workers>> {
    let workers = Arc::new(Workers::new());
    let cluster_ok = Arc::new(AtomicBool::new(true));
    workers.spawn(Heartbeats {
        // A client of its own: a heartbeat that cannot get through in a few intervals is
        // dropped, the next one follows.
        meta: MetaClient::new(&cfg.meta)?
            .with_credentials(coordinator.meta.credentials().clone())
            .with_timeout(
                cfg.heartbeat_interval
                    .saturating_mul(3)
                    .max(Duration::from_secs(1)),
            ),
        node_id: state.node_id,
        cluster_id: state.cluster_id.clone(),
        disks: disks.clone(),
        interval: cfg.heartbeat_interval,
        cluster_ok: Arc::clone(&cluster_ok),
        healer: Arc::clone(healer),
        workers: Arc::downgrade(&workers),
        tokens,
        recovery: Arc::clone(&recovery),
        address: coordinator.address.clone(),
        zone: cfg.zone.clone(),
        rack: cfg.rack.clone(),
        host: cfg.host.clone(),
    });
    workers.spawn(GcWorker::new(
        Arc::clone(coordinator),
        Arc::clone(healer),
        cfg.gc_interval,
        GcGrace {
            orphan: cfg.orphan_grace,
            stale_copy: cfg.stale_copy_grace,
        },
        cluster_ok,
        Arc::clone(&recovery),
    ));
    workers.spawn(ScanReporter {
        meta: Arc::clone(&coordinator.meta),
        node_id: state.node_id,
        disks: disks.clone(),
        control: recovery,
        note: String::new(),
    });
    workers.spawn(RepairWorker::new(Arc::clone(healer)));
    workers.spawn(Scrubber::new(Arc::clone(healer)));
    workers.spawn(crate::heal::returning::ReturnChecker::new(Arc::clone(
        healer,
    )));
    workers.spawn(crate::heal::fixity::FixityPass::new(
        Arc::clone(healer),
        cfg.data_dir.clone(),
    ));
    Ok(workers)
}

/// Serves NodeService, ArchiveService, health and reflection on `listener` until `shutdown`.
async fn serve(
    listener: tokio::net::TcpListener,
    cfg: &NodeConfig,
    auth: Option<AuthLayer>,
    disks: DiskSet,
    healer: &Arc<Healer>,
    (coordinator, audit): (Arc<Coordinator>, Arc<crate::audit::NodeAudit>),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<bitmountain_proto::archive::v1::archive_service_server::ArchiveServiceServer<
            crate::archive_service::ArchiveApi,
        >>()
        .await;
    health_reporter
        .set_serving::<pb::node_service_server::NodeServiceServer<NodeShardService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(bitmountain_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Internal(format!("reflection service: {e}")))?;

    let shard_service = NodeShardService::with_idle_timeout(disks, cfg.shard_idle_timeout)
        .with_scrub(Arc::clone(&healer.scrub_control));
    let archive = crate::archive_service::ArchiveApi::new(coordinator, audit);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &cfg.tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(|e| NodeError::BadRequest {
                reason: format!("TLS settings from --tls-dir: {e}"),
            })?;
    }
    let router = builder
        .tcp_nodelay(true)
        .max_frame_size(Some(bitmountain_proto::connect::H2_MAX_FRAME_BYTES))
        .initial_stream_window_size(Some(crate::limits::H2_STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(crate::limits::H2_CONNECTION_WINDOW_BYTES))
        // Counted and timed here, refusals included; then checked, before any handler (no
        // check with --insecure).
        .layer(bitmountain_metrics::MetricsLayer::new(
            bitmountain_metrics::global(),
        ))
        .layer(tower::util::option_layer(auth))
        .add_service(
            pb::node_service_server::NodeServiceServer::new(shard_service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            bitmountain_proto::archive::v1::archive_service_server::ArchiveServiceServer::new(
                archive,
            )
            // A 4 MiB data piece plus its framing.
            .max_decoding_message_size(MAX_UPLOAD_PIECE_BYTES + (64 << 10))
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(health_service)
        .add_service(reflection);
    // With TCP_NODELAY (without it small responses waited for delayed ACKs: 40 ms per read),
    // read through a buffer under TLS (rustls alone reads 4 KiB per system call).
    let incoming = bitmountain_proto::buffered::incoming(listener, cfg.tls.is_some());
    let served = router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    served.map_err(|e| NodeError::Internal(format!("gRPC server: {e}")))
}
