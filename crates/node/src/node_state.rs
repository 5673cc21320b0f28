//! What a node remembers about itself between restarts, in `DATA/node-state.json` (versioned;
//! `docs/formats.md`, "Node state file"): its node id, its cluster, the disks it has served, and
//! a registration in flight (so a crash between registering new disks and writing their
//! identity files retries the same registration instead of creating more disk ids).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{NodeError, Result};

/// File name under the node's data directory.
pub const NODE_STATE_FILE: &str = "node-state.json";
/// `format` field of the file.
pub const NODE_STATE_FORMAT: &str = "bitmountain-node-state";
/// Version written by this code; other versions are refused.
pub const NODE_STATE_VERSION: u32 = 1;

/// A disk the node has served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownDisk {
    pub path: PathBuf,
    pub disk_id: u64,
}

/// A registration sent but not yet completed (identity files not all written).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRegistration {
    pub request_id: String,
    /// The new disks it registers, in request order.
    pub new_disks: Vec<PathBuf>,
}

/// The node's persisted state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStateFile {
    pub format: String,
    pub version: u32,
    /// 0 until the first registration.
    pub node_id: u64,
    /// Empty until the first registration.
    pub cluster_id: String,
    pub disks: Vec<KnownDisk>,
    pub pending_registration: Option<PendingRegistration>,
}

impl Default for NodeStateFile {
    fn default() -> Self {
        NodeStateFile {
            format: NODE_STATE_FORMAT.into(),
            version: NODE_STATE_VERSION,
            node_id: 0,
            cluster_id: String::new(),
            disks: Vec::new(),
            pending_registration: None,
        }
    }
}

impl NodeStateFile {
    /// Loads the state, or a fresh one when the file does not exist yet.
    pub fn load(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(NODE_STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(NodeError::BadRequest {
                    reason: format!("cannot read {}: {e}", path.display()),
                })
            }
        };
        let state: NodeStateFile =
            serde_json::from_str(&text).map_err(|e| NodeError::BadRequest {
                reason: format!(
                    "{} is damaged ({e}); restore it from a backup, or move it away to register this node as a new one",
                    path.display()
                ),
            })?;
        if state.format != NODE_STATE_FORMAT || state.version != NODE_STATE_VERSION {
            return Err(NodeError::BadRequest {
                reason: format!(
                    "{} is format {:?} version {}; this binary reads {NODE_STATE_FORMAT:?} version {NODE_STATE_VERSION} (upgrade bitmountain)",
                    path.display(),
                    state.format,
                    state.version
                ),
            });
        }
        Ok(state)
    }

    /// Writes the state atomically (temporary file, fsync, rename, directory fsync).
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        let io = |what: &str, e: std::io::Error| NodeError::BadRequest {
            reason: format!("{what} in {}: {e}", data_dir.display()),
        };
        fs::create_dir_all(data_dir).map_err(|e| io("creating the data directory", e))?;
        let path = data_dir.join(NODE_STATE_FILE);
        let temp = data_dir.join(format!(".{NODE_STATE_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| NodeError::Internal(format!("encoding the node state: {e}")))?;
        let mut file = fs::File::create(&temp).map_err(|e| io("writing the node state", e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("writing the node state", e))?;
        fs::rename(&temp, &path).map_err(|e| io("renaming the node state", e))?;
        fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the data directory", e))?;
        Ok(())
    }

    /// The disk id this node recorded for `path`, if any.
    pub fn known_disk(&self, path: &Path) -> Option<u64> {
        self.disks
            .iter()
            .find(|d| d.path == path)
            .map(|d| d.disk_id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            NodeStateFile::load(dir.path()).unwrap(),
            NodeStateFile::default()
        );
        let state = NodeStateFile {
            node_id: 7,
            cluster_id: "abc".into(),
            disks: vec![KnownDisk {
                path: "/d1".into(),
                disk_id: 3,
            }],
            pending_registration: Some(PendingRegistration {
                request_id: "r".into(),
                new_disks: vec!["/d2".into()],
            }),
            ..NodeStateFile::default()
        };
        state.save(dir.path()).unwrap();
        assert_eq!(NodeStateFile::load(dir.path()).unwrap(), state);
        assert_eq!(state.known_disk(Path::new("/d1")), Some(3));

        let text = std::fs::read_to_string(dir.path().join(NODE_STATE_FILE)).unwrap();
        std::fs::write(
            dir.path().join(NODE_STATE_FILE),
            text.replace("\"version\": 1", "\"version\": 9"),
        )
        .unwrap();
        let err = NodeStateFile::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");

        std::fs::write(dir.path().join(NODE_STATE_FILE), "{not json").unwrap();
        let err = NodeStateFile::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}
