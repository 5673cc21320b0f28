//! The member process: open the store, start the replica, the background workers and the
//! gRPC server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bitmountain_proto::v1 as pb;
use bitmountain_proto::v1::meta_admin_server::MetaAdminServer;
use bitmountain_proto::v1::meta_service_server::MetaServiceServer;
use bitmountain_raftstore::{Members, RaftConfig};

use bitmountain_auth::cert::TlsFiles;
use bitmountain_auth::{policy, AuthLayer, Authorizer, InsecureWarning};

use super::access::{FirstAdminToken, StoreTokens};
use super::admin::Diagnostics;
use super::bundles::Expiry;
use super::{MetaConfig, MetaServer, WORKER_SHUTDOWN_GRACE};
use crate::error::{MetaError, Result};
use crate::healing::detector::FailureDetector;
use crate::state::{MetaStateMachine, MetaStore};

/// How to run a member.
#[derive(Debug, Clone)]
pub struct MemberOptions {
    /// Member id (required on first start).
    pub id: Option<u64>,
    /// Data directory.
    pub data_dir: std::path::PathBuf,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address other members and clients use (default: `listen`).
    pub advertise: Option<String>,
    /// Initial members of a new group.
    pub bootstrap: Option<Members>,
    /// Raft tunables (id and address are filled in).
    pub raft: RaftConfig,
    /// Service settings.
    pub meta: MetaConfig,
    /// TLS and access control (`--tls-dir`); `None` runs plaintext and open (`--insecure`).
    pub tls: Option<TlsFiles>,
    /// Where to serve Prometheus metrics, `/healthz` and `/readyz` (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
}

/// Runs a member until `shutdown` resolves or the server fails.
pub async fn serve(
    opts: MemberOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let advertise = opts
        .advertise
        .clone()
        .unwrap_or_else(|| opts.listen.to_string());
    // Bound first: a taken port stops the member before it opens anything.
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => {
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| MetaError::Raft {
                        kind: crate::error::ErrorKind::Internal,
                        leader: None,
                        message: format!("--metrics-listen {addr}: {e} (is the address in use?)"),
                    })?,
            )
        }
        None => None,
    };
    let data_dir = opts.data_dir.clone();
    let bootstrap = opts.bootstrap.clone();
    let (engine, id) = tokio::task::spawn_blocking(move || {
        bitmountain_raftstore::prepare(&data_dir, opts.id, bootstrap.as_ref())
    })
    .await
    .map_err(|e| MetaError::Corrupt {
        what: format!("startup task: {e}"),
    })?
    .map_err(crate::raft_error)?;
    let started = Instant::now();
    let store = MetaStore::load(engine.db().clone())?;
    let credentials = opts
        .tls
        .as_ref()
        .map(TlsFiles::credentials)
        .unwrap_or_default();
    let mut rcfg = opts.raft.clone();
    rcfg.id = id;
    rcfg.address = advertise.clone();
    rcfg.credentials = credentials.clone();
    let mut meta_cfg = opts.meta.clone();
    meta_cfg.credentials = credentials;
    let (raft, raft_service) = bitmountain_raftstore::start(
        engine,
        rcfg,
        MetaStateMachine::new(Arc::clone(&store)),
        tokio::runtime::Handle::current(),
    )
    .map_err(crate::raft_error)?;
    let auth = opts.tls.as_ref().map(|_| {
        AuthLayer::new(
            Authorizer::new(Arc::new(StoreTokens::new(Arc::clone(&store))))
                .serving(policy::MEMBER_SERVICES),
        )
    });
    let server = MetaServer::new(raft, store, meta_cfg);
    if let Some(request) = super::recovery::RecoveryRequest::read(&opts.data_dir) {
        let request = request?;
        tracing::warn!(path = %opts.data_dir.display(), "a recovery was asked for: entering it once this member leads");
        *server
            .inner
            .pending_recovery
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(request);
    }
    tracing::info!(member = id, listen = %opts.listen, advertise = %advertise, load_ms = started.elapsed().as_millis() as u64, "metadata member starting");
    let workers = &server.inner.workers;
    workers.spawn(FailureDetector::new(server.clone()));
    workers.spawn(Expiry::new(server.clone()));
    workers.spawn(FirstAdminToken::new(server.clone(), opts.data_dir.clone()));
    workers.spawn(super::recovery::RecoveryDriver::new(
        server.clone(),
        opts.data_dir.clone(),
    ));
    if let Some(auth) = &auth {
        // Requests this member refuses go to the audit trail, through whichever member leads.
        let reporter = server.clone();
        workers.spawn(bitmountain_meta_client::audit::RefusalReporter::new(
            Arc::clone(auth.authorizer().refusals()),
            Box::new(move || reporter.members_client()),
        ));
    }
    if opts.tls.is_none() {
        workers.spawn(InsecureWarning {
            what: format!("metadata member {id} at {advertise}"),
        });
    }
    // Serving from here on: health checks (container and Kubernetes probes) ask it.
    let (_health_reporter, health) = tonic_health::server::health_reporter();
    let metrics = bitmountain_metrics::global();
    let metrics_task = metrics_listener.map(|listener| {
        let (refresh_server, ready_server) = (server.clone(), server.clone());
        let refresh_metrics = metrics.clone();
        let endpoint = bitmountain_metrics::Endpoint {
            metrics: metrics.clone(),
            refresh: Some(Arc::new(move || {
                refresh_server.refresh_metrics(&refresh_metrics)
            })),
            // Ready while the member knows a leader: it can serve reads and forward writes.
            ready: Arc::new(move || ready_server.inner.raft.status().leader_id != 0),
            pages: None,
        };
        tokio::spawn(bitmountain_metrics::serve(
            listener,
            endpoint,
            std::future::pending(),
        ))
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &opts.tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(|e| MetaError::Raft {
                kind: crate::error::ErrorKind::Internal,
                leader: None,
                message: format!("TLS settings from --tls-dir: {e}"),
            })?;
    }
    let router = builder
        .tcp_nodelay(true)
        .max_frame_size(Some(bitmountain_proto::connect::H2_MAX_FRAME_BYTES))
        .initial_stream_window_size(Some(
            bitmountain_raftstore::transport::H2_STREAM_WINDOW_BYTES,
        ))
        .initial_connection_window_size(Some(
            bitmountain_raftstore::transport::H2_CONNECTION_WINDOW_BYTES,
        ))
        // Counted and timed here, refusals included; then checked, before any handler (no
        // check with --insecure).
        .layer(bitmountain_metrics::MetricsLayer::new(metrics))
        .layer(tower::util::option_layer(auth))
        .add_service(MetaServiceServer::new(server.clone()))
        .add_service(MetaAdminServer::new(server.clone()))
        .add_service(raft_service.into_server())
        .add_service(pb::diagnostics_server::DiagnosticsServer::new(Diagnostics))
        .add_service(health);
    // Read through a buffer under TLS (rustls alone reads 4 KiB per system call).
    let served: std::result::Result<(), String> =
        match tokio::net::TcpListener::bind(opts.listen).await {
            Ok(listener) => router
                .serve_with_incoming_shutdown(
                    bitmountain_proto::buffered::incoming(listener, opts.tls.is_some()),
                    shutdown,
                )
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("cannot listen: {e}")),
        };
    if let Some(task) = metrics_task {
        task.abort();
    }
    server.inner.workers.shutdown(WORKER_SHUTDOWN_GRACE).await;
    served.map_err(|e| MetaError::Raft {
        kind: crate::error::ErrorKind::Internal,
        leader: None,
        message: format!(
            "gRPC server on {}: {e} (is the address in use?)",
            opts.listen
        ),
    })
}
