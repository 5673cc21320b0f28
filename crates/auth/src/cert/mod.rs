//! The cluster CA and the certificates of members and nodes (`bitmountain cert init|issue`),
//! and reading a peer's role back out of its certificate.
//!
//! A certificate's role is its one URI SAN, `spiffe://bitmountain/<role>/<name>` (the SPIFFE
//! X.509-SVID convention: exactly one URI SAN). TLS verification ignores URI SANs; it checks
//! the chain to the CA and the IP or DNS SAN the peer was reached by, so `--host` must list
//! every address a member or node is reached at. Leaves carry both server and client EKUs:
//! members and nodes are both.
//!
//! Files, as `meta` and `node` read them from `--tls-dir`: `ca.pem`, `cert.pem`, `key.pem`
//! (0600). The CA directory holds `ca.pem` and `ca.key` (0600). Nothing is overwritten.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::TryRngCore as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use webpki::EndEntityCert;

/// The CA's certificate, in the CA directory and copied next to every leaf.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key (0600); only `cert issue` reads it.
pub const CA_KEY_FILE: &str = "ca.key";
/// A member's or node's certificate.
pub const CERT_FILE: &str = "cert.pem";
/// A member's or node's private key (0600).
pub const KEY_FILE: &str = "key.pem";
/// What a role URI starts with; the role and the name follow.
pub const URI_PREFIX: &str = "spiffe://bitmountain/";
/// The CA lives 20 years: replacing it means reissuing every certificate.
pub const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 86_400);
/// Members' and nodes' certificates live 10 years (never past the CA's end).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// Longest member or node name.
pub const MAX_NAME_BYTES: usize = 64;
/// Clocks of freshly started machines may be a little behind the issuer's.
const BACKDATE: Duration = Duration::from_secs(300);

/// What a certificate lets its holder be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// A member of the metadata group.
    Meta,
    /// A storage node.
    Node,
}

impl PeerRole {
    /// The name in the URI and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Meta => "meta",
            PeerRole::Node => "node",
        }
    }
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PeerRole {
    type Err = CertError;

    fn from_str(s: &str) -> Result<PeerRole, CertError> {
        match s {
            "meta" => Ok(PeerRole::Meta),
            "node" => Ok(PeerRole::Node),
            _ => Err(CertError::UnknownRole { role: s.to_owned() }),
        }
    }
}

/// Who a certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    pub role: PeerRole,
    pub name: String,
}

impl PeerIdentity {
    /// The URI SAN that carries this identity.
    pub fn uri(&self) -> String {
        format!("{URI_PREFIX}{}/{}", self.role, self.name)
    }
}

/// `metadata member m1's certificate`, `node n1's certificate`.
impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.role {
            PeerRole::Meta => "metadata member",
            PeerRole::Node => "node",
        };
        write!(f, "{what} {}'s certificate", self.name)
    }
}

/// Why a CA or certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("a CA already exists in {dir} ({file} is there); it is never overwritten: use it, or pick another directory")]
    CaExists { dir: PathBuf, file: &'static str },
    #[error("{path} already exists; it is never overwritten: remove it first to issue anew, or pick another directory")]
    Exists { path: PathBuf },
    #[error("no CA in {dir}: {reason} (create one with `bitmountain cert init --dir DIR`)")]
    NoCa { dir: PathBuf, reason: String },
    #[error("the CA in {dir} is unusable: {reason}")]
    BadCa { dir: PathBuf, reason: String },
    #[error("unknown role {role:?}: expected meta or node")]
    UnknownRole { role: String },
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("no host: a certificate needs every IP address or DNS name its holder is reached at (--host H[,H...])")]
    NoHost,
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },
    #[error("{context}: {reason}")]
    Generate {
        context: &'static str,
        reason: String,
    },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
}

fn io<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CertError + 'a {
    move |source| CertError::Io {
        context,
        path: path.to_owned(),
        source,
    }
}

fn generate(context: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |e| CertError::Generate {
        context,
        reason: e.to_string(),
    }
}

/// The files `init_ca` wrote.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA's common name (with a suffix from its key, so two clusters' CAs differ by name).
    pub common_name: String,
}

/// Creates a cluster CA in `dir` (created 0700 if missing): `ca.pem` and `ca.key` (0600).
/// Refuses if either file is already there.
pub fn init_ca(dir: &Path) -> Result<CaFiles, CertError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    for (path, file) in [(&cert_path, CA_CERT_FILE), (&key_path, CA_KEY_FILE)] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(CertError::CaExists {
                dir: dir.to_owned(),
                file,
            });
        }
    }
    let key = KeyPair::generate().map_err(generate("generating the CA key"))?;
    let mut params = ca_params(&key);
    let now = SystemTime::now();
    params.not_before = datetime(now - BACKDATE)?;
    params.not_after = datetime(now + CA_VALIDITY)?;
    params.serial_number = Some(serial()?);
    let cert = params
        .self_signed(&key)
        .map_err(generate("signing the CA certificate"))?;
    make_dir(dir)?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    if let Err(e) = write_new(&cert_path, cert.pem().as_bytes(), 0o644) {
        // Without its certificate the key is useless, and would block the next `init`.
        let _ = fs::remove_file(&key_path);
        return Err(e);
    }
    Ok(CaFiles {
        cert: cert_path,
        key: key_path,
        common_name: ca_common_name(&key),
    })
}

/// The CA's name, derived from its key: `cert issue` rebuilds the issuer from the key alone
/// (rcgen cannot read a name back out of a certificate without x509-parser, see Cargo.toml),
/// and two clusters' CAs still differ by name.
fn ca_common_name(key: &KeyPair) -> String {
    let digest = Sha256::digest(key.subject_public_key_info());
    format!("Bit Mountain cluster CA {}", hex::encode(&digest[..4]))
}

/// What identifies the CA as an issuer: its name, key usages, constraints.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, ca_common_name(key));
    // Leaves only, no intermediate CAs.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// The files `issue` wrote, and what the certificate says.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub identity: PeerIdentity,
    /// The IP and DNS names, as given.
    pub hosts: Vec<String>,
    pub not_after_unix: i64,
}

/// Issues a certificate for member or node `name` with role `role`, valid for `hosts` (IP
/// addresses become IP SANs, anything else DNS SANs), signed by the CA in `ca_dir`. Writes
/// `cert.pem`, `key.pem` (0600) and a copy of `ca.pem` into `out_dir` (created 0700 if
/// missing); refuses to overwrite a certificate or key, or a different `ca.pem`.
pub fn issue(
    ca_dir: &Path,
    name: &str,
    role: PeerRole,
    hosts: &[String],
    out_dir: &Path,
) -> Result<IssuedCert, CertError> {
    check_name(name)?;
    let hosts = check_hosts(hosts)?;
    let ca = LoadedCa::read(ca_dir)?;
    let identity = PeerIdentity {
        role,
        name: name.to_owned(),
    };
    let mut params = CertificateParams::new(hosts.clone()).map_err(|e| CertError::InvalidHost {
        host: hosts.join(","),
        reason: e.to_string(),
    })?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    // For people reading the certificate only; the URI SAN is what is checked.
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, role.as_str());
    let uri = identity
        .uri()
        .try_into()
        .map_err(generate("the role URI"))?;
    params.subject_alt_names.push(SanType::URI(uri));
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = datetime(now - BACKDATE)?;
    params.not_after = datetime(now + LEAF_VALIDITY)?;
    params.serial_number = Some(serial()?);
    let key = KeyPair::generate().map_err(generate("generating the key"))?;
    let issuer = Issuer::new(ca_params(&ca.key), &ca.key);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(generate("signing the certificate"))?;
    ca.check_issued(cert.der())
        .map_err(|reason| CertError::BadCa {
            dir: ca_dir.to_owned(),
            reason,
        })?;
    let written = write_leaf(out_dir, &cert.pem(), &key.serialize_pem(), &ca.cert_pem)?;
    Ok(IssuedCert {
        cert: written.0,
        key: written.1,
        ca: written.2,
        identity,
        hosts,
        not_after_unix: params.not_after.unix_timestamp(),
    })
}

/// Writes a leaf's files, refusing to replace any but an identical `ca.pem`.
fn write_leaf(
    out_dir: &Path,
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
) -> Result<(PathBuf, PathBuf, PathBuf), CertError> {
    let cert_path = out_dir.join(CERT_FILE);
    let key_path = out_dir.join(KEY_FILE);
    let ca_path = out_dir.join(CA_CERT_FILE);
    for path in [&cert_path, &key_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    let ca_present = match fs::read(&ca_path) {
        Ok(old) if old == ca_pem.as_bytes() => true,
        Ok(_) => return Err(CertError::Exists { path: ca_path }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io("reading", &ca_path)(e)),
    };
    make_dir(out_dir)?;
    write_new(&key_path, key_pem.as_bytes(), 0o600)?;
    let rest = write_new(&cert_path, cert_pem.as_bytes(), 0o644).and_then(|()| {
        if ca_present {
            Ok(())
        } else {
            write_new(&ca_path, ca_pem.as_bytes(), 0o644)
        }
    });
    if let Err(e) = rest {
        // Leave nothing half-issued behind: a retry would otherwise be refused.
        let _ = fs::remove_file(&key_path);
        let _ = fs::remove_file(&cert_path);
        return Err(e);
    }
    Ok((cert_path, key_path, ca_path))
}

/// The CA's certificate and key, checked to belong together.
struct LoadedCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

/// What a CA or leaf signature may use (rcgen's keys are ECDSA P-256; the rest cost nothing).
static SIGNATURE_ALGS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
];

impl LoadedCa {
    fn read(dir: &Path) -> Result<LoadedCa, CertError> {
        let read = |file: &str| {
            fs::read_to_string(dir.join(file)).map_err(|e| CertError::NoCa {
                dir: dir.to_owned(),
                reason: format!("reading {file}: {e}"),
            })
        };
        let cert_pem = read(CA_CERT_FILE)?;
        let key_pem = read(CA_KEY_FILE)?;
        let bad = |reason: String| CertError::BadCa {
            dir: dir.to_owned(),
            reason,
        };
        let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(format!("{CA_KEY_FILE}: {e}")))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| bad(format!("{CA_CERT_FILE}: {e}")))?;
        let cert =
            EndEntityCert::try_from(&cert_der).map_err(|e| bad(format!("{CA_CERT_FILE}: {e}")))?;
        if cert.subject_public_key_info().as_ref() != key.subject_public_key_info().as_slice() {
            return Err(bad(format!(
                "{CA_KEY_FILE} is not the key of {CA_CERT_FILE}"
            )));
        }
        Ok(LoadedCa {
            cert_pem,
            cert_der,
            key,
        })
    }

    /// Checks a freshly signed leaf as a peer will: it must chain to this CA's certificate
    /// (which fails, for example, for a CA `cert init` did not make: its name differs).
    fn check_issued(&self, leaf: &CertificateDer<'_>) -> Result<(), String> {
        let anchor = webpki::anchor_from_trusted_cert(&self.cert_der)
            .map_err(|e| format!("{CA_CERT_FILE} is not a usable CA certificate: {e}"))?;
        let leaf = EndEntityCert::try_from(leaf).map_err(|e| e.to_string())?;
        leaf.verify_for_usage(
            SIGNATURE_ALGS,
            &[anchor],
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
        .map_err(|e| {
            format!(
                "a certificate it signs does not verify against {CA_CERT_FILE} ({e}); was the CA made by `bitmountain cert init`?"
            )
        })
    }
}

/// Makes the CA in `dir` unless it is there; true if it made one.
pub fn ensure_ca(dir: &Path) -> Result<bool, CertError> {
    if dir.join(CA_CERT_FILE).exists() {
        return Ok(false);
    }
    init_ca(dir).map(|_| true)
}

/// Issues `name`'s certificate into `out` unless `out` already holds one; true if it issued.
/// Lets a deployment's set-up step run again without failing or replacing keys.
pub fn ensure_issued(
    ca_dir: &Path,
    name: &str,
    role: PeerRole,
    hosts: &[String],
    out: &Path,
) -> Result<bool, CertError> {
    if out.join(CERT_FILE).exists() {
        return Ok(false);
    }
    issue(ca_dir, name, role, hosts, out).map(|_| true)
}

/// The identity a DER certificate names: its one URI SAN `spiffe://bitmountain/<role>/<name>`.
/// `None` for anything else — unparsable, no such SAN, two URI SANs, another prefix, an
/// unknown role or an invalid name. Does not check the signature: TLS already verified the
/// chain to the cluster CA before a request reaches this.
pub fn peer_identity(der: &[u8]) -> Option<PeerIdentity> {
    let der = CertificateDer::from(der);
    let cert = EndEntityCert::try_from(&der).ok()?;
    let mut uris = cert.valid_uri_names();
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        return None;
    };
    let (role, name) = uri.strip_prefix(URI_PREFIX)?.split_once('/')?;
    check_name(name).ok()?;
    Some(PeerIdentity {
        role: role.parse().ok()?,
        name: name.to_owned(),
    })
}

/// The PEM files of a `--tls-dir`, read and checked enough that a mistake shows at start
/// rather than as a failed handshake later.
#[derive(Clone)]
pub struct TlsFiles {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// Who `cert.pem` says this process is.
    pub identity: PeerIdentity,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("identity", &self.identity)
            .field("key_pem", &"***")
            .finish_non_exhaustive()
    }
}

/// Reads `ca.pem`, `cert.pem` and `key.pem` from `dir`. `ca.pem` must hold at least one
/// certificate (an empty trust store would fail every handshake with an unhelpful error),
/// `cert.pem` must name a role.
pub fn read_tls_dir(dir: &Path) -> Result<TlsFiles, CertError> {
    let read = |file: &str| {
        let path = dir.join(file);
        fs::read(&path).map_err(io("reading", &path))
    };
    let ca_pem = read(CA_CERT_FILE)?;
    let cert_pem = read(CERT_FILE)?;
    let key_pem = read(KEY_FILE)?;
    let bad = |file: &str, reason: &str| CertError::BadFile {
        path: dir.join(file),
        reason: reason.to_owned(),
    };
    if !CertificateDer::pem_slice_iter(&ca_pem).any(|c| c.is_ok()) {
        return Err(bad(CA_CERT_FILE, "holds no PEM certificate"));
    }
    let leaf = CertificateDer::from_pem_slice(&cert_pem)
        .map_err(|_| bad(CERT_FILE, "holds no PEM certificate"))?;
    let identity = peer_identity(&leaf).ok_or_else(|| {
        bad(
            CERT_FILE,
            "names no role (issue it with `bitmountain cert issue --role meta|node`)",
        )
    })?;
    // Any PEM private key rustls reads (PKCS#8, SEC1, PKCS#1).
    PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| bad(KEY_FILE, "holds no PEM private key"))?;
    Ok(TlsFiles {
        ca_pem,
        cert_pem,
        key_pem,
        identity,
    })
}

/// Names go into a URI path and file names: letters, digits, `.`, `_`, `-`.
fn check_name(name: &str) -> Result<(), CertError> {
    let bad = |reason: &str| CertError::InvalidName {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(bad(&format!("1 to {MAX_NAME_BYTES} characters")));
    }
    if name == "." || name == ".." {
        return Err(bad("not a name"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad("only letters, digits, `.`, `_` and `-`"));
    }
    Ok(())
}

/// Trims the hosts and checks each is an IP address or a DNS name (no port, no scheme).
fn check_hosts(hosts: &[String]) -> Result<Vec<String>, CertError> {
    let hosts: Vec<String> = hosts
        .iter()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err(CertError::NoHost);
    }
    for host in &hosts {
        if host.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        let bad = |reason: &str| CertError::InvalidHost {
            host: host.clone(),
            reason: reason.to_owned(),
        };
        if host.contains(':') {
            return Err(bad("an IP address or DNS name without a port"));
        }
        let labels_ok = host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !labels_ok {
            return Err(bad("neither an IP address nor a DNS name"));
        }
    }
    Ok(hosts)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CertError> {
    let mut b = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| CertError::Generate {
            context: "reading the system's random source",
            reason: e.to_string(),
        })?;
    Ok(b)
}

/// A random positive 128-bit serial number (RFC 5280: unique per CA, at most 20 bytes).
fn serial() -> Result<SerialNumber, CertError> {
    let mut b = random_bytes::<16>()?;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    Ok(SerialNumber::from_slice(&b))
}

fn datetime(t: SystemTime) -> Result<OffsetDateTime, CertError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or(CertError::Generate {
            context: "the validity period",
            reason: "the clock is out of range".into(),
        })
}

/// Creates `dir` (and its parents) with mode 0700 if missing: it holds private keys.
fn make_dir(dir: &Path) -> Result<(), CertError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("creating directory", dir))
}

/// Writes a new file with `mode`, refusing to replace one, and syncs it.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CertError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CertError::Exists {
                path: path.to_owned(),
            },
            _ => io("creating", path)(e),
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io("writing", path))
}

/// A self-signed certificate whose one URI SAN is `uri`, for tests of the layer and the
/// policy (the chain is TLS's business, not theirs).
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_cert(uri: &str) -> tonic::transport::CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    p.subject_alt_names
        .push(SanType::URI(uri.try_into().unwrap()));
    p.self_signed(&key).unwrap().der().clone()
}

#[cfg(test)]
mod tests;
