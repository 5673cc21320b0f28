//! Certificates and tokens for the test clusters: every integration and fault test runs with
//! TLS and tokens on. Each [`crate::meta_cluster::MetaCluster`] makes a CA and two
//! certificates (one for its members, one for its nodes, both valid for 127.0.0.1) in its temp
//! directory; its first leader writes the admin token, which the tests' clients carry.
//!
//! The cluster a test started last is the "current" one: [`crate::bitmountain`] hands its CA
//! and admin token to every CLI command it runs (through `BITMOUNTAIN_CA` and
//! `BITMOUNTAIN_TOKEN_FILE`), as `scripts/dev`'s config file does for people.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bitmountain_auth::cert::{self, CA_CERT_FILE};
use bitmountain_auth::PeerRole;
use bitmountain_proto::{AuthChannel, Credentials};

/// Where one test cluster's CA and certificates are.
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA (`ca.pem`, `ca.key`).
    pub ca_dir: PathBuf,
    /// `--tls-dir` of every member.
    pub meta_dir: PathBuf,
    /// `--tls-dir` of every node.
    pub node_dir: PathBuf,
}

impl TestPki {
    /// A CA and the member and node certificates under `root`.
    pub fn create(root: &Path) -> TestPki {
        let pki = TestPki {
            ca_dir: root.join("ca"),
            meta_dir: root.join("meta"),
            node_dir: root.join("node"),
        };
        cert::init_ca(&pki.ca_dir).expect("test CA");
        let hosts = ["127.0.0.1".to_owned(), "localhost".to_owned()];
        cert::issue(
            &pki.ca_dir,
            "test-meta",
            PeerRole::Meta,
            &hosts,
            &pki.meta_dir,
        )
        .expect("member certificate");
        cert::issue(
            &pki.ca_dir,
            "test-node",
            PeerRole::Node,
            &hosts,
            &pki.node_dir,
        )
        .expect("node certificate");
        pki
    }

    /// The CA certificate file (`--ca`).
    pub fn ca_file(&self) -> PathBuf {
        self.ca_dir.join(CA_CERT_FILE)
    }

    fn read(&self, path: PathBuf) -> Vec<u8> {
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// A client trusting the CA, with no certificate and no token.
    pub fn anonymous(&self) -> Credentials {
        Credentials::tls(&self.read(self.ca_file()), None)
    }

    /// A client with the CA and `token` (people and scripts).
    pub fn with_token(&self, token: &str) -> Credentials {
        self.anonymous().with_token(token).expect("token")
    }

    /// A storage node's credentials (its certificate).
    pub fn node(&self) -> Credentials {
        Credentials::tls(
            &self.read(self.ca_file()),
            Some((
                &self.read(self.node_dir.join(cert::CERT_FILE)),
                &self.read(self.node_dir.join(cert::KEY_FILE)),
            )),
        )
    }

    /// The node certificate and the admin token at once: what the metadata tests' clients
    /// use (node calls through the certificate, admin calls through the token).
    pub fn node_and_token(&self, token: &str) -> Credentials {
        self.node().with_token(token).expect("token")
    }
}

/// The current cluster: its certificates and its root directory (where the admin token is).
static CURRENT: Mutex<Option<(TestPki, PathBuf)>> = Mutex::new(None);

/// Makes the cluster under `root` with `pki` the one CLI commands and raw stubs talk to.
pub fn set_current(pki: &TestPki, root: &Path) {
    *CURRENT.lock().unwrap_or_else(|p| p.into_inner()) = Some((pki.clone(), root.into()));
}

/// The current cluster's CA file and admin token file (`None` until a leader wrote it).
pub fn current() -> Option<(PathBuf, Option<PathBuf>)> {
    let (pki, root) = CURRENT.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
    Some((pki.ca_file(), find_admin_token(&root)))
}

fn current_pki() -> (TestPki, PathBuf) {
    CURRENT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .expect("no test cluster started")
}

/// The current cluster's CA and admin token (a client's credentials, for raw stubs).
pub fn token_credentials() -> Credentials {
    let (pki, root) = current_pki();
    let file = find_admin_token(&root).expect("the cluster has no admin token yet");
    let token = std::fs::read_to_string(file).expect("admin.token");
    pki.with_token(token.trim())
}

/// The current cluster's node certificate (a node's credentials, for raw stubs).
pub fn node_credentials() -> Credentials {
    current_pki().0.node()
}

/// A raw stub's channel to `addr` carrying the current cluster's admin token.
pub fn client_channel(addr: &str) -> AuthChannel {
    channel(addr, &token_credentials())
}

/// A raw stub's channel to `addr` presenting the current cluster's node certificate.
pub fn node_channel(addr: &str) -> AuthChannel {
    channel(addr, &node_credentials())
}

/// The admin token file some member of the cluster under `root` wrote (`root/m<ID>/`).
pub fn find_admin_token(root: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|d| d.join("admin.token"))
        .find(|f| std::fs::metadata(f).is_ok_and(|m| m.len() > 0))
}

/// A lazily connected channel to `addr` with `credentials` (for raw gRPC stubs).
pub fn channel(addr: &str, credentials: &Credentials) -> AuthChannel {
    let endpoint = credentials
        .endpoint(addr)
        .expect("endpoint")
        .connect_timeout(std::time::Duration::from_secs(3));
    credentials.wrap(credentials.connect_lazy(endpoint))
}

/// A channel to `addr` with `credentials`, connected now (its TLS handshake done).
pub async fn connect(addr: &str, credentials: &Credentials) -> AuthChannel {
    let endpoint = credentials
        .endpoint(addr)
        .expect("endpoint")
        .connect_timeout(std::time::Duration::from_secs(3));
    let channel = credentials
        .connect(endpoint)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    credentials.wrap(channel)
}

/// Whether something accepts connections at `addr` (a running member or node).
pub fn answers(addr: &str) -> bool {
    addr.parse::<std::net::SocketAddr>()
        .ok()
        .and_then(|a| {
            std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_millis(300)).ok()
        })
        .is_some()
}
