//! [`ArchiveClient`]: connections, failover, uploads, reads, caches.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitmountain_proto::archive::v1 as pb;
use bitmountain_proto::archive::v1::archive_service_client::ArchiveServiceClient;
use bitmountain_proto::{AuthChannel, Credentials};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::error::{ClientError, Result};
use crate::types::{BundleInfo, ClusterStatus, Code, FileInfo, PutResult};

/// Deadline of a unary call (stat, list, delete, status).
pub const CALL_TIMEOUT_MS: u64 = 30_000;
/// Deadline to connect to a node.
pub const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// A streaming read with no message for this long is abandoned.
pub const READ_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Deadline of a whole upload (long; a stalled one is ended by the node's idle timeout).
pub const UPLOAD_TIMEOUT_MS: u64 = 24 * 3_600_000;
/// File bytes per upload message (the node accepts at most 4 MiB).
pub const UPLOAD_PIECE_BYTES: usize = 1 << 20;
/// Upload messages buffered ahead of the network.
pub const UPLOAD_QUEUE_MESSAGES: usize = 8;
/// Largest response message accepted (an upload's per-file digests can be several MiB).
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// HTTP/2 flow-control window per stream and per connection.
pub const H2_STREAM_WINDOW_BYTES: u32 = 2 << 20;
pub const H2_CONNECTION_WINDOW_BYTES: u32 = 16 << 20;
/// Bundle indexes kept in the client's cache.
pub const INDEX_CACHE_BUNDLES: usize = 256;

/// Where an uploaded file's bytes come from. Both can be read again, so a failed upload can be
/// retried on another node.
#[derive(Debug, Clone)]
pub enum UploadSource {
    /// A file on disk (its size must not change during the upload).
    Path(PathBuf),
    /// Bytes in memory.
    Bytes(Bytes),
}

/// One file of a bundle to upload.
#[derive(Debug, Clone)]
pub struct UploadFile {
    /// Path inside the bundle (relative, `/`-separated UTF-8).
    pub path: String,
    /// `None`: guessed by the node from the extension.
    pub content_type: Option<String>,
    pub size_bytes: u64,
    pub source: UploadSource,
    /// The SHA-256 the file must have (fixity at ingest): the cluster refuses the upload with
    /// `digest_mismatch` if the bytes it receives hash otherwise.
    pub expected_sha256: Option<[u8; 32]>,
}

impl UploadFile {
    /// A file from memory.
    pub fn from_bytes(path: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        UploadFile {
            path: path.into(),
            content_type: None,
            size_bytes: bytes.len() as u64,
            source: UploadSource::Bytes(bytes),
            expected_sha256: None,
        }
    }

    /// The same file, to be checked against `sha256` when it arrives.
    pub fn with_sha256(mut self, sha256: [u8; 32]) -> Self {
        self.expected_sha256 = Some(sha256);
        self
    }
}

/// Options of an upload.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    pub labels: BTreeMap<String, String>,
    /// `None`: the cluster's default code.
    pub code: Option<Code>,
    /// Bytes of file content sent so far, for progress displays.
    pub progress: Option<Arc<AtomicU64>>,
    /// SHA-256 digests files must have, by path in the bundle (fixity at ingest, e.g. from a
    /// manifest): `put_dir` sends each with its file and refuses a path the directory lacks.
    pub expected_sha256: BTreeMap<String, [u8; 32]>,
    /// Deletes of the bundle are refused before this time (0: no retention).
    pub retain_until_unix_ms: u64,
}

#[derive(Debug, Default)]
struct Caches {
    indexes: HashMap<String, CachedIndex>,
    /// Bundle records (placement, code, length), to send reads where the bytes are.
    records: HashMap<String, Arc<BundleInfo>>,
    order: VecDeque<String>,
}

/// A cached index, with each file's bundle offset by path: every routed read looks its path up,
/// and a bundle may hold 100,000 files.
#[derive(Debug)]
struct CachedIndex {
    files: Arc<Vec<FileInfo>>,
    offsets: HashMap<String, u64>,
}

impl Caches {
    /// Keeps at most [`INDEX_CACHE_BUNDLES`] bundles, dropping the oldest.
    fn remember(&mut self, bundle_id: &str) {
        if !self.order.iter().any(|b| b == bundle_id) {
            if self.order.len() >= INDEX_CACHE_BUNDLES {
                if let Some(oldest) = self.order.pop_front() {
                    self.indexes.remove(&oldest);
                    self.records.remove(&oldest);
                }
            }
            self.order.push_back(bundle_id.to_owned());
        }
    }
}

/// A client of the public archive API. Cheap to share behind an `Arc`; safe for concurrent use.
#[derive(Debug)]
pub struct ArchiveClient {
    endpoints: Vec<String>,
    /// Index into `endpoints` of the node calls go to first.
    current: AtomicU64,
    channels: Mutex<HashMap<String, AuthChannel>>,
    credentials: Credentials,
    caches: Mutex<Caches>,
    /// Advertised node address → the address this client reaches it at.
    address_map: HashMap<String, String>,
}

fn strip(addr: &str) -> String {
    addr.trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned()
}

pub(crate) fn with_timeout<T>(message: T, timeout_ms: u64) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_millis(timeout_ms));
    request
}

impl ArchiveClient {
    /// A client of these nodes (`host:port`; comma-separated lists accepted). Connects lazily.
    pub fn new<I, S>(endpoints: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let endpoints: Vec<String> = endpoints
            .into_iter()
            .flat_map(|s| s.as_ref().split(',').map(strip).collect::<Vec<_>>())
            .filter(|s| !s.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::BadInput(
                "give at least one node address (host:port)".into(),
            ));
        }
        let credentials = Credentials::insecure();
        for e in &endpoints {
            credentials.endpoint(e).map_err(|err| {
                ClientError::BadInput(format!("{e:?} is not a node address (host:port): {err}"))
            })?;
        }
        Ok(ArchiveClient {
            endpoints,
            current: AtomicU64::new(0),
            channels: Mutex::default(),
            caches: Mutex::default(),
            address_map: HashMap::new(),
            credentials,
        })
    }

    /// Connects with `credentials` (the cluster CA and a token) instead of plaintext.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self.channels = Mutex::default();
        self
    }

    /// Where this client reaches nodes that advertise other addresses (`advertised →
    /// reachable`): a client outside the nodes' network (behind NAT, or reaching a container
    /// network through published ports) cannot use the names the nodes advertise, which reads
    /// that go straight to the node holding the bytes would otherwise try first.
    pub fn with_address_map(mut self, map: HashMap<String, String>) -> Self {
        self.address_map = map;
        self
    }

    /// The node addresses this client uses.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    fn channel(&self, addr: &str) -> Result<AuthChannel> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = self
            .credentials
            .endpoint(addr)
            .map_err(|e| ClientError::BadInput(format!("{addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            // The HTTP/2 default window (64 KiB) would stall every 1 MiB upload message and
            // every file larger than it on window updates.
            .initial_stream_window_size(Some(H2_STREAM_WINDOW_BYTES))
            .initial_connection_window_size(Some(H2_CONNECTION_WINDOW_BYTES));
        let channel = self.credentials.connect_lazy(endpoint);
        let channel = self.credentials.wrap(channel);
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    fn stub(&self, addr: &str) -> Result<ArchiveServiceClient<AuthChannel>> {
        Ok(ArchiveServiceClient::new(self.channel(addr)?)
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(8 << 20))
    }

    /// Runs `call` against the nodes in turn, starting with the last one that answered, until
    /// one answers (with a result or with an error of its own).
    pub(crate) async fn failover<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(ArchiveServiceClient<AuthChannel>, String) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        self.failover_from(None, call).await
    }

    /// Like [`Self::failover`], trying `preferred` first (a node that holds the bytes).
    async fn failover_from<T, F, Fut>(&self, preferred: Option<String>, call: F) -> Result<T>
    where
        F: Fn(ArchiveServiceClient<AuthChannel>, String) -> Fut,
        Fut: Future<Output = std::result::Result<T, tonic::Status>>,
    {
        if let Some(addr) = preferred {
            match call(self.stub(&addr)?, addr.clone()).await {
                Ok(v) => return Ok(v),
                Err(status) => {
                    let (err, transport) = ClientError::from_status(&addr, &status);
                    if !transport {
                        return Err(err);
                    }
                    tracing::debug!(node = %addr, error = %err, "preferred node unreachable");
                }
            }
        }
        let start = self.current.load(Ordering::Relaxed) as usize;
        let mut last = String::new();
        for step in 0..self.endpoints.len() {
            let i = (start + step) % self.endpoints.len();
            let addr = &self.endpoints[i];
            match call(self.stub(addr)?, addr.clone()).await {
                Ok(v) => {
                    self.current.store(i as u64, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(status) => {
                    let (err, transport) = ClientError::from_status(addr, &status);
                    if !transport {
                        return Err(err);
                    }
                    tracing::debug!(node = %addr, error = %err, "node unreachable; trying the next");
                    last = format!("{addr}: {}", status.message());
                }
            }
        }
        Err(self.unreachable(last).await)
    }

    /// The error when no node answered: advice to pass `--ca` if a node speaks TLS and this
    /// client does not, else the last transport error.
    async fn unreachable(&self, last: String) -> ClientError {
        if !self.credentials.is_tls() {
            for addr in &self.endpoints {
                if bitmountain_proto::connect::speaks_tls(addr).await {
                    return ClientError::TlsRequired { node: addr.clone() };
                }
            }
        }
        ClientError::Unreachable {
            tried: self.endpoints.join(","),
            last,
        }
    }

    // ---- Uploads ----

    /// Uploads every regular file under `dir` as one bundle (paths relative to `dir`).
    pub async fn put_dir(&self, dir: &Path, options: &PutOptions) -> Result<PutResult> {
        let dir = dir.to_path_buf();
        let walked = tokio::task::spawn_blocking(move || crate::walk::walk_files(&dir))
            .await
            .map_err(|e| ClientError::BadInput(format!("walking the directory failed: {e}")))??;
        if let Some(absent) = options
            .expected_sha256
            .keys()
            .find(|p| !walked.iter().any(|f| &f.relative == *p))
        {
            return Err(ClientError::BadInput(format!(
                "a digest is given for {absent:?}, which the directory does not hold"
            )));
        }
        let files: Vec<UploadFile> = walked
            .into_iter()
            .map(|f| UploadFile {
                expected_sha256: options.expected_sha256.get(&f.relative).copied(),
                path: f.relative,
                content_type: None,
                size_bytes: f.len_bytes,
                source: UploadSource::Path(f.absolute),
            })
            .collect();
        self.put_files(files, options).await
    }

    /// Uploads `files` as one bundle, in order. When a node dies during the upload, the upload
    /// starts again on the next node (nothing of the failed attempt becomes visible).
    pub async fn put_files(
        &self,
        files: impl IntoIterator<Item = UploadFile>,
        options: &PutOptions,
    ) -> Result<PutResult> {
        let files: Arc<Vec<UploadFile>> = Arc::new(files.into_iter().collect());
        let expected: u64 = files.iter().map(|f| f.size_bytes).sum();
        let start = self.current.load(Ordering::Relaxed) as usize;
        let mut last = String::new();
        for step in 0..self.endpoints.len() {
            let i = (start + step) % self.endpoints.len();
            let addr = self.endpoints[i].clone();
            if let Some(p) = &options.progress {
                p.store(0, Ordering::Relaxed);
            }
            let (tx, rx) = mpsc::channel(UPLOAD_QUEUE_MESSAGES);
            let producer = {
                let files = Arc::clone(&files);
                let options = options.clone();
                tokio::task::spawn_blocking(move || produce_upload(&files, &options, expected, tx))
            };
            let mut stub = self.stub(&addr)?;
            let call = stub
                .put_bundle(with_timeout(ReceiverStream::new(rx), UPLOAD_TIMEOUT_MS))
                .await;
            let produced = producer
                .await
                .map_err(|e| ClientError::BadInput(format!("reading the files failed: {e}")))?;
            match call {
                Ok(response) => {
                    // A successful answer means every byte was taken.
                    self.current.store(i as u64, Ordering::Relaxed);
                    return Ok(PutResult::from_proto(response.into_inner(), &addr));
                }
                Err(status) => {
                    // A local read failure is the real cause of the node's complaint.
                    produced?;
                    let (err, transport) = ClientError::from_status(&addr, &status);
                    if !transport {
                        return Err(err);
                    }
                    tracing::warn!(node = %addr, error = %err, "upload failed on an unreachable node; retrying on the next");
                    last = format!("{addr}: {}", status.message());
                }
            }
        }
        Err(self.unreachable(last).await)
    }

    // ---- Reads ----

    /// Writes a file (or `length` bytes of it from `offset`) to `out`; returns its index entry.
    /// A whole file is checked against its SHA-256 before this returns; on any error, what was
    /// written to `out` must be discarded.
    pub async fn get_file(
        &self,
        bundle_id: &str,
        path: &str,
        offset: u64,
        length: Option<u64>,
        out: &mut (dyn Write + Send),
    ) -> Result<FileInfo> {
        let request = pb::GetFileRequest {
            bundle_id: bundle_id.to_owned(),
            path: path.to_owned(),
            offset,
            length,
        };
        let holder = self.holder(bundle_id, path, offset);
        let (mut stream, node) = self
            .failover_from(holder, |mut stub, addr| {
                let request = with_timeout(request.clone(), READ_IDLE_TIMEOUT_MS);
                async move {
                    let first = stub.get_file(request).await?.into_inner();
                    Ok((first, addr))
                }
            })
            .await?;
        let mut info: Option<FileInfo> = None;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        loop {
            let Some(message) = next_message(&mut stream, &node).await? else {
                break;
            };
            if let Some(f) = message.file {
                info = Some(FileInfo::from_proto(f));
            }
            hasher.update(&message.data);
            received += message.data.len() as u64;
            out.write_all(&message.data).map_err(|e| ClientError::Io {
                context: "writing",
                path: PathBuf::from(path),
                source: e,
            })?;
        }
        let info = info.ok_or_else(|| {
            ClientError::Integrity(format!("node {node} sent no file information for {path:?}"))
        })?;
        let want = length
            .unwrap_or(u64::MAX)
            .min(info.size_bytes.saturating_sub(offset));
        if received != want {
            return Err(ClientError::Integrity(format!(
                "{path:?}: node {node} sent {received} bytes, {want} expected"
            )));
        }
        if offset == 0 && received == info.size_bytes {
            let got = hex::encode(hasher.finalize());
            if got != info.sha256 {
                return Err(ClientError::Integrity(format!(
                    "{path:?}: received bytes hash to {got}, the index says {}",
                    info.sha256
                )));
            }
        }
        Ok(info)
    }

    /// A whole file in memory.
    pub async fn read_file(&self, bundle_id: &str, path: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.get_file(bundle_id, path, 0, None, &mut out).await?;
        Ok(out)
    }

    /// A bundle's index (cached: later calls for the same bundle cost nothing).
    pub async fn index(&self, bundle_id: &str) -> Result<Arc<Vec<FileInfo>>> {
        if let Some(index) = self
            .caches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .indexes
            .get(bundle_id)
        {
            return Ok(Arc::clone(&index.files));
        }
        let request = pb::GetIndexRequest {
            bundle_id: bundle_id.to_owned(),
        };
        let files = self
            .failover(|mut stub, _| {
                let request = with_timeout(request.clone(), READ_IDLE_TIMEOUT_MS);
                async move {
                    let mut stream = stub.get_index(request).await?.into_inner();
                    let mut files = Vec::new();
                    while let Some(page) = stream.message().await? {
                        files.extend(page.files.into_iter().map(FileInfo::from_proto));
                    }
                    Ok(files)
                }
            })
            .await?;
        let files = Arc::new(files);
        let offsets = files
            .iter()
            .map(|f| (f.path.clone(), f.bundle_offset))
            .collect();
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.remember(bundle_id);
        caches.indexes.insert(
            bundle_id.to_owned(),
            CachedIndex {
                files: Arc::clone(&files),
                offsets,
            },
        );
        Ok(files)
    }

    /// A bundle's record.
    pub async fn stat(&self, bundle_id: &str) -> Result<BundleInfo> {
        let request = pb::StatBundleRequest {
            bundle_id: bundle_id.to_owned(),
        };
        let response = self
            .failover(|mut stub, _| {
                let request = with_timeout(request.clone(), CALL_TIMEOUT_MS);
                async move { Ok(stub.stat_bundle(request).await?.into_inner()) }
            })
            .await?;
        let info = BundleInfo::from_answer(response.bundle)?;
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.remember(bundle_id);
        caches
            .records
            .insert(bundle_id.to_owned(), Arc::new(info.clone()));
        Ok(info)
    }

    /// Reads the record and index of a bundle into the cache, so every later read of one of its
    /// files goes straight to the node holding the bytes (one round trip, no hop between nodes).
    pub async fn prepare(&self, bundle_id: &str) -> Result<()> {
        self.stat(bundle_id).await?;
        self.index(bundle_id).await?;
        Ok(())
    }

    /// The node holding the first byte of `path` at `offset` (from cached record and index).
    fn holder(&self, bundle_id: &str, path: &str, offset: u64) -> Option<String> {
        let (record, file_offset) = {
            let caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
            (
                caches.records.get(bundle_id).cloned()?,
                *caches.indexes.get(bundle_id)?.offsets.get(path)?,
            )
        };
        let code = record.code?;
        let code = bitmountain_erasure::Code::with_sizes(
            code.data_shards as usize,
            code.parity_shards as usize,
            u32::try_from(code.cell_bytes).ok()?,
            bitmountain_erasure::code::DEFAULT_CHUNK_BYTES,
        )
        .ok()?;
        let layout = bitmountain_erasure::BundleLayout::new(code, record.length_bytes).ok()?;
        let at = file_offset.checked_add(offset)?;
        if at >= record.length_bytes {
            return None;
        }
        let piece = layout
            .pieces(bitmountain_erasure::BundleId([0; 16]), at, 1)
            .ok()?
            .into_iter()
            .next()?;
        record
            .shards
            .iter()
            .find(|s| s.shard_index == u32::from(piece.shard))
            .map(|s| {
                let mapped = self.address_map.get(&s.node_address);
                mapped.unwrap_or(&s.node_address).clone()
            })
            .filter(|a| !a.is_empty())
    }

    /// One page of sealed bundles, optionally with one label; returns the next page token
    /// (empty on the last page).
    pub async fn list(
        &self,
        label: Option<(&str, &str)>,
        page_token: &str,
        page_size: u32,
    ) -> Result<(Vec<BundleInfo>, String)> {
        let request = pb::ListBundlesRequest {
            label: label.map(|(k, v)| pb::Label {
                key: k.to_owned(),
                value: v.to_owned(),
            }),
            page_token: page_token.to_owned(),
            page_size,
        };
        let response = self
            .failover(|mut stub, _| {
                let request = with_timeout(request.clone(), CALL_TIMEOUT_MS);
                async move { Ok(stub.list_bundles(request).await?.into_inner()) }
            })
            .await?;
        Ok((
            response
                .bundles
                .into_iter()
                .map(BundleInfo::from_proto)
                .collect(),
            response.next_page_token,
        ))
    }

    /// Every sealed bundle (all pages), optionally with one label.
    pub async fn list_all(&self, label: Option<(&str, &str)>) -> Result<Vec<BundleInfo>> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let (page, next) = self.list(label, &token, 1000).await?;
            out.extend(page);
            if next.is_empty() {
                return Ok(out);
            }
            token = next;
        }
    }

    /// Writes a bundle's whole MIME stream to `out`, checked against its SHA-256; returns its
    /// length. On error, what was written must be discarded.
    pub async fn export(&self, bundle_id: &str, out: &mut (dyn Write + Send)) -> Result<u64> {
        let info = self.stat(bundle_id).await?;
        let request = pb::ExportBundleRequest {
            bundle_id: bundle_id.to_owned(),
        };
        let (mut stream, node) = self
            .failover(|mut stub, addr| {
                let request = with_timeout(request.clone(), READ_IDLE_TIMEOUT_MS);
                async move { Ok((stub.export_bundle(request).await?.into_inner(), addr)) }
            })
            .await?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        loop {
            let Some(m) = next_message(&mut stream, &node).await? else {
                break;
            };
            hasher.update(&m.data);
            received += m.data.len() as u64;
            out.write_all(&m.data).map_err(|e| ClientError::Io {
                context: "writing the export of",
                path: PathBuf::from(bundle_id),
                source: e,
            })?;
        }
        let got = hex::encode(hasher.finalize());
        if received != info.length_bytes || got != info.sha256 {
            return Err(ClientError::Integrity(format!(
                "bundle {bundle_id}: received {received} bytes hashing to {got}; the record says {} bytes, {}",
                info.length_bytes, info.sha256
            )));
        }
        Ok(received)
    }

    /// Drops what the client cached of a bundle.
    pub(crate) fn forget(&self, bundle_id: &str) {
        let mut caches = self.caches.lock().unwrap_or_else(|p| p.into_inner());
        caches.indexes.remove(bundle_id);
        caches.records.remove(bundle_id);
        caches.order.retain(|b| b != bundle_id);
    }

    /// The cluster as a node sees it.
    pub async fn status(&self) -> Result<ClusterStatus> {
        let response = self
            .failover(|mut stub, _| {
                let request = with_timeout(pb::ClusterStatusRequest {}, CALL_TIMEOUT_MS);
                async move { Ok(stub.cluster_status(request).await?.into_inner()) }
            })
            .await?;
        Ok(ClusterStatus::from_proto(response))
    }
}

/// The next message of a server stream, within the read idle timeout.
async fn next_message<T>(stream: &mut tonic::Streaming<T>, node: &str) -> Result<Option<T>> {
    let message = tokio::time::timeout(
        Duration::from_millis(READ_IDLE_TIMEOUT_MS),
        stream.message(),
    )
    .await
    .map_err(|_| ClientError::Unreachable {
        tried: node.to_owned(),
        last: format!("no data for {READ_IDLE_TIMEOUT_MS} ms"),
    })?;
    message.map_err(|status| ClientError::from_status(node, &status).0)
}

fn item(item: pb::put_bundle_request::Item) -> pb::PutBundleRequest {
    pb::PutBundleRequest { item: Some(item) }
}

/// Feeds an upload stream from the files (on a blocking thread: file reads are sync). Ends
/// without the `end` message on any error, so the node discards the upload.
fn produce_upload(
    files: &[UploadFile],
    options: &PutOptions,
    expected_content_bytes: u64,
    tx: mpsc::Sender<pb::PutBundleRequest>,
) -> Result<()> {
    use pb::put_bundle_request::Item;
    let send = |msg| tx.blocking_send(msg).is_ok();
    let start = pb::BundleStart {
        labels: options
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        code: options.code.map(Code::to_proto),
        expected_content_bytes,
        retain_until_unix_ms: options.retain_until_unix_ms,
    };
    if !send(item(Item::Start(start))) {
        return Ok(());
    }
    for file in files {
        let header = pb::FileStart {
            path: file.path.clone(),
            content_type: file.content_type.clone().unwrap_or_default(),
            size_bytes: file.size_bytes,
            sha256: file.expected_sha256.map(|d| d.to_vec()).unwrap_or_default(),
        };
        if !send(item(Item::File(header))) {
            return Ok(());
        }
        let sent = match &file.source {
            UploadSource::Bytes(bytes) => {
                if bytes.len() as u64 != file.size_bytes {
                    return Err(ClientError::BadInput(format!(
                        "{:?}: {} bytes given but size_bytes says {}",
                        file.path,
                        bytes.len(),
                        file.size_bytes
                    )));
                }
                let mut at = 0;
                while at < bytes.len() {
                    let end = (at + UPLOAD_PIECE_BYTES).min(bytes.len());
                    if !send(item(Item::Data(bytes.slice(at..end)))) {
                        return Ok(());
                    }
                    add_progress(options, (end - at) as u64);
                    at = end;
                }
                true
            }
            UploadSource::Path(path) => send_file(path, file.size_bytes, options, &send)?,
        };
        if !sent {
            return Ok(());
        }
    }
    send(item(Item::End(pb::BundleEnd {})));
    Ok(())
}

fn add_progress(options: &PutOptions, bytes: u64) {
    if let Some(p) = &options.progress {
        p.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Sends a file's bytes; `Ok(false)` when the upload call ended early.
fn send_file(
    path: &Path,
    size_bytes: u64,
    options: &PutOptions,
    send: &dyn Fn(pb::PutBundleRequest) -> bool,
) -> Result<bool> {
    use pb::put_bundle_request::Item;
    let io = |source| ClientError::Io {
        context: "reading",
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut remaining = size_bytes;
    while remaining > 0 {
        let len = remaining.min(UPLOAD_PIECE_BYTES as u64) as usize;
        let mut buf = vec![0u8; len];
        file.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                ClientError::BadInput(format!(
                    "{} shrank while it was being uploaded; upload it again once it is complete",
                    path.display()
                ))
            } else {
                io(e)
            }
        })?;
        remaining -= len as u64;
        if !send(item(Item::Data(Bytes::from(buf)))) {
            return Ok(false);
        }
        add_progress(options, len as u64);
    }
    let mut probe = [0u8; 1];
    if file.read(&mut probe).map_err(io)? != 0 {
        return Err(ClientError::BadInput(format!(
            "{} grew while it was being uploaded; upload it again once it is complete",
            path.display()
        )));
    }
    Ok(true)
}
