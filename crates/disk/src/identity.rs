//! The disk identity file: versioned text, one `key=value` a line, closed by a CRC32C of the
//! lines before it so a torn or edited file is noticed.
//!
//! ```text
//! bitmountain-disk/1
//! cluster-id=<32 hex>
//! disk-id=<decimal>
//! created-unix-ms=<decimal>
//! crc32c=<8 hex>
//! ```

use std::fmt;
use std::path::Path;

use crate::error::{DiskError, Result};

pub const IDENTITY_FILE: &str = "bitmountain-disk.id";
pub const IDENTITY_VERSION: u32 = 1;
const IDENTITY_MAGIC: &str = "bitmountain-disk/";
/// An identity file is a few lines; anything larger is not one.
const MAX_IDENTITY_BYTES: u64 = 4096;

/// A cluster's 128-bit id, chosen when the metadata group is created.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ClusterId(pub [u8; 16]);

impl ClusterId {
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 16];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(ClusterId(bytes))
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterId({self})")
    }
}

/// Who a disk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskIdentity {
    pub cluster_id: ClusterId,
    pub disk_id: u64,
    pub created_unix_ms: u64,
}

impl DiskIdentity {
    pub fn encode(&self) -> String {
        let body = format!(
            "{IDENTITY_MAGIC}{IDENTITY_VERSION}\ncluster-id={}\ndisk-id={}\ncreated-unix-ms={}\n",
            self.cluster_id, self.disk_id, self.created_unix_ms
        );
        format!("{body}crc32c={:08x}\n", crc32c::crc32c(body.as_bytes()))
    }

    pub fn decode(text: &str, path: &Path) -> Result<DiskIdentity> {
        let bad = |reason: &str| DiskError::BadIdentity {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        let (body, crc_line) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or_else(|| bad("too short"))?;
        let body = format!("{body}\n");
        let crc = crc_line
            .strip_prefix("crc32c=")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| bad("no crc32c line"))?;
        if crc != crc32c::crc32c(body.as_bytes()) {
            return Err(bad("checksum mismatch: the file is corrupt or was edited"));
        }
        let mut lines = body.lines();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix(IDENTITY_MAGIC))
            .ok_or_else(|| bad("not a Bit Mountain identity file"))?;
        if version != IDENTITY_VERSION.to_string() {
            return Err(DiskError::BadIdentity {
                path: path.to_path_buf(),
                reason: format!("identity version {version} is not supported by this build; upgrade bitmountain"),
            });
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|l| l.strip_prefix('='))
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("missing {name}")))
        };
        let cluster_id =
            ClusterId::from_hex(&field("cluster-id")?).ok_or_else(|| bad("bad cluster-id"))?;
        let disk_id = field("disk-id")?.parse().map_err(|_| bad("bad disk-id"))?;
        let created_unix_ms = field("created-unix-ms")?
            .parse()
            .map_err(|_| bad("bad created-unix-ms"))?;
        Ok(DiskIdentity {
            cluster_id,
            disk_id,
            created_unix_ms,
        })
    }

    /// Reads `<root>/bitmountain-disk.id`.
    pub fn read(root: &Path) -> Result<DiskIdentity> {
        let path = root.join(IDENTITY_FILE);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DiskError::NoIdentity {
                    path: root.to_path_buf(),
                })
            }
            Err(e) => {
                return Err(DiskError::Io {
                    disk_id: 0,
                    path,
                    context: "reading the identity file".into(),
                    source: e,
                })
            }
        };
        if meta.len() > MAX_IDENTITY_BYTES {
            return Err(DiskError::BadIdentity {
                path,
                reason: format!("{} bytes is too large for an identity file", meta.len()),
            });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| DiskError::Io {
            disk_id: 0,
            path: path.clone(),
            context: "reading the identity file".into(),
            source: e,
        })?;
        DiskIdentity::decode(&text, &path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_rejects_edits() {
        let id = DiskIdentity {
            cluster_id: ClusterId([7; 16]),
            disk_id: 42,
            created_unix_ms: 1_700_000_000_000,
        };
        let text = id.encode();
        assert_eq!(DiskIdentity::decode(&text, Path::new("/d")).unwrap(), id);
        let edited = text.replace("disk-id=42", "disk-id=43");
        assert!(matches!(
            DiskIdentity::decode(&edited, Path::new("/d")),
            Err(DiskError::BadIdentity { .. })
        ));
        assert!(DiskIdentity::decode("", Path::new("/d")).is_err());
        assert!(DiskIdentity::decode(&text[..text.len() / 2], Path::new("/d")).is_err());
    }
}
