//! A whole cluster of real processes on loopback for tests: a metadata group of `bitmountain
//! meta` members ([`MetaCluster`]) and storage nodes, each a `bitmountain node` process with its
//! own disk directories under one temp directory. Nodes can be killed (-9), restarted, and their
//! shard files found, deleted or corrupted.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use bitmountain_client::ArchiveClient;

use crate::meta_cluster::{free_port, MetaCluster};

/// One storage node process.
#[derive(Debug)]
pub struct NodeProc {
    /// 1-based position in the cluster (not the node id the metadata group assigns).
    pub index: usize,
    pub addr: String,
    pub data: PathBuf,
    pub disks: Vec<PathBuf>,
    pub log: PathBuf,
    pub extra_args: Vec<String>,
    child: Option<Child>,
}

impl NodeProc {
    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// Test timing for nodes: fast heartbeats.
pub const NODE_TEST_ARGS: &[&str] = &["--heartbeat-interval-ms", "200"];

/// A metadata group and storage nodes. Dropping it kills every process.
#[derive(Debug)]
pub struct Cluster {
    pub meta: MetaCluster,
    pub nodes: Vec<NodeProc>,
}

impl Cluster {
    /// One metadata member (default code `code`, e.g. "4+2") and `nodes` nodes with
    /// `disks_per_node` disks each; waits until every node has registered.
    pub fn start(nodes: usize, disks_per_node: usize, code: &str) -> Self {
        Self::start_with(nodes, disks_per_node, code, &[], &[])
    }

    /// Like [`Cluster::start`], with extra arguments for the metadata member and the nodes.
    pub fn start_with(
        nodes: usize,
        disks_per_node: usize,
        code: &str,
        meta_args: &[&str],
        node_args: &[&str],
    ) -> Self {
        Self::start_members(1, nodes, disks_per_node, code, meta_args, node_args)
    }

    /// Like [`Cluster::start_with`], with a metadata group of `members` members.
    pub fn start_members(
        members: u64,
        nodes: usize,
        disks_per_node: usize,
        code: &str,
        meta_args: &[&str],
        node_args: &[&str],
    ) -> Self {
        Self::start_secured(
            members,
            nodes,
            disks_per_node,
            code,
            meta_args,
            node_args,
            false,
        )
    }

    /// Like [`Cluster::start_members`]; `insecure` runs every process with `--insecure` (only
    /// for the benchmark comparing TLS and tokens with plaintext).
    pub fn start_secured(
        members: u64,
        nodes: usize,
        disks_per_node: usize,
        code: &str,
        meta_args: &[&str],
        node_args: &[&str],
        insecure: bool,
    ) -> Self {
        let mut args = vec!["--default-code", code];
        args.extend_from_slice(meta_args);
        let meta = MetaCluster::start_with_security(members, &args, insecure);
        // Nodes load the token table when they start; the admin token must be in it.
        meta.admin_token();
        let mut cluster = Cluster {
            meta,
            nodes: Vec::new(),
        };
        for _ in 0..nodes {
            cluster.add_node(disks_per_node, node_args);
        }
        cluster.wait_nodes_registered(nodes, Duration::from_secs(60));
        cluster
    }

    fn root(&self) -> &Path {
        self.meta.dir.path()
    }

    /// Defines and starts one more node; returns its 1-based index.
    pub fn add_node(&mut self, disks: usize, extra_args: &[&str]) -> usize {
        let index = self.nodes.len() + 1;
        let base = self.root().join(format!("node{index}"));
        let node = NodeProc {
            index,
            addr: format!("127.0.0.1:{}", free_port()),
            data: base.join("state"),
            disks: (1..=disks).map(|d| base.join(format!("disk{d}"))).collect(),
            log: self.root().join(format!("node{index}.log")),
            extra_args: NODE_TEST_ARGS
                .iter()
                .chain(extra_args)
                .map(|s| s.to_string())
                .collect(),
            child: None,
        };
        self.nodes.push(node);
        self.spawn_node(index);
        index
    }

    fn spawn_node(&mut self, index: usize) {
        let meta = self.meta.endpoints().join(",");
        let security = self.meta.security_args(&self.meta.pki.node_dir);
        let node = &mut self.nodes[index - 1];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open node log");
        let mut cmd = crate::bitmountain();
        cmd.arg("node")
            .arg("--data")
            .arg(&node.data)
            .args(["--listen", &node.addr, "--meta", &meta])
            .args(&security);
        for d in &node.disks {
            cmd.arg("--disk").arg(d);
        }
        cmd.args(&node.extra_args)
            .env(
                "BITMOUNTAIN_LOG",
                std::env::var("BITMOUNTAIN_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        node.child = Some(cmd.spawn().expect("spawn bitmountain node"));
    }

    /// kill -9 of a node.
    pub fn kill_node(&mut self, index: usize) {
        if let Some(mut c) = self.nodes[index - 1].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a node from its data and disks (same address).
    pub fn restart_node(&mut self, index: usize) {
        self.kill_node(index);
        self.spawn_node(index);
    }

    /// Address of a node.
    pub fn addr(&self, index: usize) -> String {
        self.nodes[index - 1].addr.clone()
    }

    /// Every node address, comma-separated (for `--cluster`).
    pub fn all_addrs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A client of one node, with the admin token.
    pub fn client(&self, index: usize) -> ArchiveClient {
        self.client_of(&self.addr(index))
    }

    /// A client of every node (fails over), with the admin token.
    pub fn client_all(&self) -> ArchiveClient {
        self.client_of(&self.all_addrs())
    }

    /// A client of `addrs` (comma-separated), with the admin token.
    pub fn client_of(&self, addrs: &str) -> ArchiveClient {
        ArchiveClient::new([addrs])
            .expect("client")
            .with_credentials(self.token_credentials())
    }

    /// The CA and the admin token: what clients carry.
    pub fn token_credentials(&self) -> bitmountain_proto::Credentials {
        if self.meta.insecure {
            return bitmountain_proto::Credentials::insecure();
        }
        self.meta.pki.with_token(&self.meta.admin_token())
    }

    /// Waits until every running node accepts `token` (its copy of the token table has it).
    pub async fn wait_token_everywhere(&self, token: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            let client = ArchiveClient::new([node.addr.as_str()])
                .expect("client")
                .with_credentials(self.meta.pki.with_token(token));
            while let Err(e) = client.status().await {
                assert!(
                    Instant::now() < deadline,
                    "node {} refuses the token: {e}",
                    node.index
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// Waits until every running node refuses `token` as `unauthenticated`; fails the test if
    /// one still accepts it at `deadline`.
    pub async fn wait_refused_everywhere(&self, token: &str, deadline: Instant) {
        for node in &self.nodes {
            let client = ArchiveClient::new([node.addr.as_str()])
                .expect("client")
                .with_credentials(self.meta.pki.with_token(token));
            loop {
                match client.status().await {
                    Err(e) if e.kind() == Some("unauthenticated") => break,
                    other => assert!(
                        Instant::now() < deadline,
                        "node {} still answers the token past its deadline: {other:?}",
                        node.index
                    ),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The last lines of a node's log.
    pub fn node_log_tail(&self, index: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[index - 1].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `count` nodes are registered and every running node serves the public API
    /// (a restarted node is registered long before it listens again). Callable from sync code
    /// and from inside a tokio runtime (it polls on a thread of its own).
    pub fn wait_nodes_registered(&mut self, count: usize, timeout: Duration) {
        if count == 0 {
            return; // a cluster started without nodes (the test adds its own)
        }
        let deadline = Instant::now() + timeout;
        loop {
            let addrs: Vec<String> = self
                .nodes
                .iter_mut()
                .filter_map(|n| n.is_running().then(|| n.addr.clone()))
                .collect();
            // A runtime of its own, and clients made in it (a client's connections belong to
            // the runtime that first used them). The smallest count any node reports, if all
            // answer.
            let creds = self.token_credentials();
            let seen = crate::on_own_runtime(|| async {
                let mut least: Option<usize> = None;
                for addr in &addrs {
                    let client = ArchiveClient::new([addr.as_str()])
                        .ok()?
                        .with_credentials(creds.clone());
                    let n = client.status().await.ok()?.nodes.len();
                    least = Some(least.map_or(n, |l| l.min(n)));
                }
                least
            });
            if seen.is_some_and(|n| n >= count) {
                return;
            }
            for node in &mut self.nodes {
                if !node.is_running() && node.child.is_some() {
                    let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                    panic!("node {} exited during start-up:\n{log}", node.index);
                }
            }
            assert!(
                Instant::now() < deadline,
                "only {seen:?} of {count} nodes registered within {timeout:?}\n--- node 1 log:\n{}\n--- meta log:\n{}",
                self.node_log_tail(1, 30),
                self.meta.log_tail(1, 30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every shard file on every disk: (node index, path).
    pub fn shard_files(&self) -> Vec<(usize, PathBuf)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            for disk in &node.disks {
                let shards = disk.join("shards");
                let Ok(fans) = std::fs::read_dir(&shards) else {
                    continue;
                };
                for fan in fans.flatten() {
                    let Ok(files) = std::fs::read_dir(fan.path()) else {
                        continue;
                    };
                    for f in files.flatten() {
                        if f.path().extension().is_some_and(|e| e == "shard") {
                            out.push((node.index, f.path()));
                        }
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// Shard files of one bundle: (node index, shard index, path).
    pub fn bundle_shards(&self, bundle_id: &str) -> Vec<(usize, u32, PathBuf)> {
        self.shard_files()
            .into_iter()
            .filter_map(|(node, path)| {
                let name = path.file_name()?.to_str()?.to_owned();
                let rest = name.strip_prefix(bundle_id)?.strip_prefix('.')?;
                let shard = rest.strip_suffix(".shard")?.parse().ok()?;
                Some((node, shard, path))
            })
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 1..=self.nodes.len() {
            self.kill_node(i);
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no RNG crate and failures
/// reproduce.
pub fn pseudo_random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Files of a scanned book for tests: paths `pages/NNNN.tif`, sizes from empty to more than
/// five 64 KiB cells, deterministic contents (`seed`).
pub fn sample_files(count: usize, seed: u64) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let size = [0, 10, 5_000, 65_536, 200_001, 333_333][i % 6];
            (
                format!("pages/{i:04}.tif"),
                pseudo_random_bytes(seed * 1000 + i as u64, size),
            )
        })
        .collect()
}

/// Reads every file of bundle `id` back through `client` and asserts it is byte-identical.
pub async fn assert_files_read_back(client: &ArchiveClient, id: &str, files: &[(String, Vec<u8>)]) {
    for (path, bytes) in files {
        let back = client
            .read_file(id, path)
            .await
            .unwrap_or_else(|e| panic!("reading {id}/{path}: {e}"));
        assert!(back == *bytes, "{id}/{path}: bytes differ");
    }
}
