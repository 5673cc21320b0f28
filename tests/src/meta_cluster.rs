//! A metadata group of real `bitmountain meta` processes on loopback, for tests: spawn members
//! on free ports with their own temp data directories, kill -9, restart, add new members, wait
//! for a leader with deadlines, and "partition" members through the test-only fault-injection
//! RPC (every member is started with `--enable-fault-injection`, which makes the member drop all
//! Raft traffic to and from the members it is told to block).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bitmountain_meta_client::client::member_status;
use bitmountain_meta_client::types::{DiskReport, Registration};
use bitmountain_meta_client::{AllocateRequest, Code, CommitRequest, DiskState, MetaClient};
use bitmountain_proto::Credentials;

use crate::pki::{self, TestPki};

/// How long a test waits for the first leader's admin token (and every member to know it).
const ADMIN_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);

/// One member process.
#[derive(Debug)]
pub struct MetaMember {
    /// Member id.
    pub id: u64,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Data directory.
    pub data: PathBuf,
    /// Log file (stderr).
    pub log: PathBuf,
    child: Option<Child>,
}

impl MetaMember {
    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

/// A group of members under one temp directory. Dropping it kills every process.
#[derive(Debug)]
pub struct MetaCluster {
    /// Root of every member's data and logs.
    pub dir: tempfile::TempDir,
    /// Members by id.
    pub members: BTreeMap<u64, MetaMember>,
    /// Extra arguments for every member (e.g. `--compact-log-entries 50`).
    pub extra_args: Vec<String>,
    /// The cluster's CA and certificates.
    pub pki: TestPki,
    /// The admin token, once read.
    admin_token: OnceLock<String>,
    /// Run with `--insecure` (no TLS, no tokens): only the benchmark that compares the two.
    pub insecure: bool,
}

/// How long a port handed to one test stays out of other tests' reach.
const PORT_RESERVATION: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Claims `port` for this test process across all test processes on the machine. A free port
/// is only free until its process binds it; tests run in parallel processes, and two of them
/// picking the same port before either bound it made one test talk to the other's server.
/// The claim is a file created exclusively; claims older than [`PORT_RESERVATION`] lapse.
fn reserve_port(port: u16) -> bool {
    let dir = std::env::temp_dir().join("bitmountain-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let claim = dir.join(port.to_string());
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&claim)
            .is_ok()
    };
    if create() {
        return true;
    }
    let lapsed = std::fs::metadata(&claim)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > PORT_RESERVATION);
    lapsed && std::fs::remove_file(&claim).is_ok() && create()
}

/// A free loopback port (bound then released; the process binds it right after).
///
/// Chosen at random below the kernel's ephemeral range: a port from `bind(0)` comes from the
/// range the kernel also gives outgoing connections their source ports from, so with many tests
/// running at once another process's client socket could take it before the server binds it.
/// Each pick is also claimed across test processes ([`reserve_port`]).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = ephemeral_start.saturating_sub(12_000).max(1024);
    if ephemeral_start > low {
        for _ in 0..64 {
            let random = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let port = low + (random % u64::from(ephemeral_start - low)) as u16;
            if reserve_port(port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// A grace no test outlasts: storage nodes are declared down only where a test asks for it.
pub const NO_FAILURE_DETECTION: &[&str] = &["--node-down-grace-ms", "86400000"];

impl MetaCluster {
    /// Starts `n` members bootstrapped together (ids 1..=n).
    pub fn start(n: u64, extra_args: &[&str]) -> Self {
        Self::start_with_security(n, extra_args, false)
    }

    /// Like [`MetaCluster::start`]; `insecure` runs every member with `--insecure` (the TLS
    /// benchmark's baseline), else with TLS and tokens like every test.
    pub fn start_with_security(n: u64, extra_args: &[&str], insecure: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = TestPki::create(&dir.path().join("pki"));
        pki::set_current(&pki, dir.path());
        let mut c = Self {
            pki,
            admin_token: OnceLock::new(),
            insecure,
            dir,
            members: BTreeMap::new(),
            // Members run at the binary's default Raft timing, the one the failover target
            // is stated for. Fake nodes never heartbeat: unless a test sets its own grace,
            // nodes are never declared down by silence (self-healing tests set a short one).
            extra_args: NO_FAILURE_DETECTION
                .iter()
                .filter(|_| !extra_args.contains(&"--node-down-grace-ms"))
                .chain(extra_args)
                .map(|s| s.to_string())
                .collect(),
        };
        for id in 1..=n {
            c.define(id);
        }
        let bootstrap = c.bootstrap_list();
        for id in 1..=n {
            c.spawn(id, Some(&bootstrap));
        }
        c
    }

    fn define(&mut self, id: u64) {
        let data = self.dir.path().join(format!("m{id}"));
        let log = self.dir.path().join(format!("m{id}.log"));
        self.members.insert(
            id,
            MetaMember {
                id,
                addr: format!("127.0.0.1:{}", free_port()),
                data,
                log,
                child: None,
            },
        );
    }

    /// `1=addr,2=addr,...` of the defined members.
    pub fn bootstrap_list(&self) -> String {
        self.members
            .values()
            .map(|m| format!("{}={}", m.id, m.addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, id: u64, bootstrap: Option<&str>) {
        let id_arg = id.to_string();
        let mut tail: Vec<std::ffi::OsString> = Vec::new();
        if let Some(b) = bootstrap {
            tail.extend(["--bootstrap".into(), b.into()]);
        }
        self.launch(
            id,
            &["meta", "--id", &id_arg, "--enable-fault-injection"],
            &tail,
        );
    }

    /// Starts member `id`: `bitmountain <head> --data DATA --listen ADDR <security> <the
    /// cluster's extra arguments> <tail>`, its output appended to its log.
    fn launch(&mut self, id: u64, head: &[&str], tail: &[std::ffi::OsString]) {
        let extra = self.extra_args.clone();
        let security = self.security_args(&self.pki.meta_dir);
        let m = self.members.get_mut(&id).expect("member defined");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("open member log");
        let mut cmd = crate::bitmountain();
        cmd.args(head)
            .arg("--data")
            .arg(&m.data)
            .args(["--listen", &m.addr])
            .args(&security)
            .args(&extra)
            .args(tail)
            .env(
                "BITMOUNTAIN_LOG",
                std::env::var("BITMOUNTAIN_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        m.child = Some(cmd.spawn().expect("spawn bitmountain meta"));
    }

    /// Defines and starts a new, empty member (no bootstrap) to be added with `member add`.
    pub fn spawn_new(&mut self, id: u64) -> String {
        self.define(id);
        self.spawn(id, None);
        self.members[&id].addr.clone()
    }

    /// kill -9.
    pub fn kill(&mut self, id: u64) {
        if let Some(m) = self.members.get_mut(&id) {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Restarts a killed member from its data directory alone (same address).
    pub fn restart(&mut self, id: u64) {
        self.kill(id);
        self.launch(id, &["meta", "--enable-fault-injection"], &[]);
    }

    /// Starts member `id` with `meta recover` into its (empty) data directory, at its address,
    /// from `backup` if given: a new group of one that rebuilds itself from the nodes' disks.
    /// Its first leader makes a new admin token ([`MetaCluster::forget_admin_token`]).
    pub fn recover(&mut self, id: u64, backup: Option<&std::path::Path>, extra: &[&str]) {
        self.kill(id);
        let mut tail: Vec<std::ffi::OsString> = extra.iter().map(Into::into).collect();
        if let Some(b) = backup {
            tail.extend(["--from".into(), b.into()]);
        }
        let id_arg = id.to_string();
        self.launch(id, &["meta", "recover", "--id", &id_arg], &tail);
    }

    /// Forgets the admin token read so far (a group rebuilt without a backup makes a new one).
    pub fn forget_admin_token(&mut self) {
        self.admin_token = OnceLock::new();
    }

    /// Address of a member.
    pub fn addr(&self, id: u64) -> String {
        self.members[&id].addr.clone()
    }

    /// Addresses of every defined member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.values().map(|m| m.addr.clone()).collect()
    }

    /// A client over every member, with the node certificate and the admin token.
    pub fn client(&self) -> MetaClient {
        MetaClient::new(self.endpoints())
            .expect("client")
            .with_credentials(self.credentials())
    }

    /// A client of exactly these members, with the node certificate and the admin token.
    pub fn client_of(&self, ids: &[u64]) -> MetaClient {
        MetaClient::new(ids.iter().map(|id| self.addr(*id)))
            .expect("client")
            .with_credentials(self.credentials())
    }

    /// The node certificate and the admin token: node calls and admin calls alike.
    pub fn credentials(&self) -> Credentials {
        if self.insecure {
            return Credentials::insecure();
        }
        self.pki.node_and_token(&self.admin_token())
    }

    /// `--tls-dir DIR` of a member or node, or `--insecure`.
    pub fn security_args(&self, tls_dir: &std::path::Path) -> Vec<std::ffi::OsString> {
        if self.insecure {
            return vec!["--insecure".into()];
        }
        vec!["--tls-dir".into(), tls_dir.into()]
    }

    /// The status of member `id` alone (asked with the node certificate).
    pub async fn status_of(
        &self,
        id: u64,
        timeout: Duration,
    ) -> bitmountain_meta_client::Result<bitmountain_meta_client::types::ClusterStatus> {
        let creds = if self.insecure {
            Credentials::insecure()
        } else {
            self.pki.node()
        };
        member_status(&self.addr(id), &creds, timeout).await
    }

    /// The admin token the first leader wrote, once every running member has applied it (so
    /// any of them accepts it). Waits for both; callable from sync and async code.
    pub fn admin_token(&self) -> String {
        if self.insecure {
            return String::new();
        }
        self.admin_token
            .get_or_init(|| {
                let deadline = Instant::now() + ADMIN_TOKEN_TIMEOUT;
                let file = loop {
                    if let Some(f) = pki::find_admin_token(self.dir.path()) {
                        break f;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no member wrote admin.token within {ADMIN_TOKEN_TIMEOUT:?}\n{}",
                        self.log_tail(*self.members.keys().next().expect("a member"), 30)
                    );
                    std::thread::sleep(Duration::from_millis(50));
                };
                let token = std::fs::read_to_string(&file).expect("admin.token");
                let token = token.trim().to_owned();
                let creds = self.pki.with_token(&token);
                let addrs = self.endpoints();
                crate::on_own_runtime(|| async {
                    for addr in &addrs {
                        // A member that is not running has nothing to apply.
                        if !crate::pki::answers(addr) {
                            continue;
                        }
                        while member_status(addr, &creds, Duration::from_millis(500))
                            .await
                            .is_err()
                        {
                            assert!(
                                Instant::now() < deadline,
                                "member {addr} did not accept the admin token within {ADMIN_TOKEN_TIMEOUT:?}"
                            );
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                });
                token
            })
            .clone()
    }

    /// The last lines of a member's log (for assertion messages).
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.members[&id].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until the running members in `among` agree on one leader among them; returns it.
    pub async fn wait_leader(&self, among: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for id in among {
                if let Ok(st) = self.status_of(*id, Duration::from_millis(500)).await {
                    leaders.push(st.leader_id);
                } else {
                    leaders.push(0);
                }
            }
            let first = leaders[0];
            if first != 0 && among.contains(&first) && leaders.iter().all(|l| *l == first) {
                // Confirm the leader thinks so too.
                if let Ok(st) = self.status_of(first, Duration::from_millis(500)).await {
                    if st.role == "leader" {
                        // Its first leader makes the admin token: CLI commands of the test
                        // carry it from here on.
                        self.admin_token();
                        return first;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?} within {timeout:?} (saw {leaders:?})\n--- log of member {}:\n{}",
                among[0],
                self.log_tail(among[0], 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until member `id` has applied at least `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let applied = self
                .status_of(id, Duration::from_millis(500))
                .await
                .map(|s| s.applied_index)
                .unwrap_or(0);
            if applied >= index {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "member {id} applied {applied} < {index} after {timeout:?}\n{}",
                self.log_tail(id, 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for MetaCluster {
    /// Kills every member, then checks each one's stored state with `bitmountain meta check`
    /// (unless the test already failed): a violated invariant fails the test.
    fn drop(&mut self) {
        let ids: Vec<u64> = self.members.keys().copied().collect();
        for id in ids {
            self.kill(id);
        }
        if std::thread::panicking() {
            return;
        }
        for m in self.members.values() {
            check_member_data(&m.data);
        }
    }
}

/// Runs `bitmountain meta check` on a stopped member's data directory (if it holds any) and
/// fails the test on a violated invariant.
///
/// `BITMOUNTAIN_SKIP_META_CHECK=1` skips it: benchmarks that compare with an older binary
/// (`BITMOUNTAIN_BIN`) run members that have no `meta check`.
pub fn check_member_data(data: &std::path::Path) {
    if !data.join("db").join("CURRENT").is_file()
        || std::env::var_os("BITMOUNTAIN_SKIP_META_CHECK").is_some()
    {
        return;
    }
    let out = crate::bitmountain()
        .args(["meta", "check", "--data"])
        .arg(data)
        .output()
        .expect("spawn bitmountain meta check");
    assert!(
        out.status.success(),
        "bitmountain meta check --data {} failed ({}):\n{}{}",
        data.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The RS(4,2) code with 1 MiB cells that most metadata tests allocate with.
pub const RS_4_2: Code = Code {
    data_shards: 4,
    parity_shards: 2,
    cell_bytes: 1 << 20,
};

/// One allocation of a 64 MiB RS(4,2) bundle and its commit, as a storage node makes them (the
/// metadata benchmarks' unit of work); whether both succeeded.
pub async fn alloc_commit_pair(client: &MetaClient, request_id: String) -> bool {
    let Ok(b) = client
        .allocate_bundle(&AllocateRequest {
            request_id,
            code: Some(RS_4_2),
            expected_length: 64 << 20,
            ..Default::default()
        })
        .await
    else {
        return false;
    };
    client
        .commit_bundle(
            b.record.id,
            &CommitRequest {
                length: 64 << 20,
                index_offset: 1000,
                index_length: 1000,
                sha256: vec![3; 32],
                file_count: 1000,
                missing_shards: vec![],
                ..Default::default()
            },
        )
        .await
        .is_ok()
}

/// An allocation request for `code`, everything else left at its default.
pub fn allocation(request_id: &str, code: Code) -> AllocateRequest {
    AllocateRequest {
        request_id: request_id.into(),
        code: Some(code),
        ..Default::default()
    }
}

/// A valid commit of a 10,000-byte bundle holding `file_count` files (index in its last
/// 1,000 bytes).
pub fn commit_request(file_count: u64) -> CommitRequest {
    CommitRequest {
        length: 10_000,
        index_offset: 9_000,
        index_length: 1_000,
        sha256: vec![1; 32],
        file_count,
        missing_shards: vec![],
        ..Default::default()
    }
}

/// Registers `nodes` fake storage nodes with `disks` disks each (1 TiB), one host per node, so
/// allocations can be placed without running storage nodes.
pub async fn register_fake_nodes(client: &MetaClient, nodes: u64, disks: u64) -> Vec<u64> {
    let mut disk_ids = Vec::new();
    for n in 0..nodes {
        let r = client
            .register_node(&Registration {
                request_id: format!("fake-node-{n}"),
                node_id: 0,
                address: format!("127.0.0.1:{}", 40000 + n),
                zone: "z1".into(),
                rack: format!("r{}", n % 3),
                host: format!("host-{n}"),
                disks: (0..disks)
                    .map(|d| DiskReport {
                        disk_id: 0,
                        path: format!("/srv/disk{d}"),
                        // 16 TiB: room for a million 64 MiB bundles on 12 nodes × 4 disks.
                        capacity_bytes: 16 << 40,
                        used_bytes: 0,
                        state: DiskState::Ok,
                        last_scrub_unix_ms: 0,
                        last_scrub_damaged_shards: 0,
                    })
                    .collect(),
                cluster_id: String::new(),
            })
            .await
            .expect("register node");
        disk_ids.extend(r.disk_ids);
    }
    disk_ids
}
