//! Walking a directory tree into bundle paths: every regular file, sorted by its `/`-separated
//! relative path. Symlinks and special files are refused by name: silently skipping them would
//! lose data from an archive.

use std::path::{Path, PathBuf};

use crate::error::{ClientError, Result};

/// A regular file found under a directory.
#[derive(Debug, Clone)]
pub struct WalkedFile {
    pub absolute: PathBuf,
    /// Path relative to the walked directory, `/`-separated UTF-8: the path inside a bundle.
    pub relative: String,
    pub len_bytes: u64,
}

fn io(context: &'static str, path: &Path, source: std::io::Error) -> ClientError {
    ClientError::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}

/// Every regular file under `root`, sorted by relative path.
pub fn walk_files(root: &Path) -> Result<Vec<WalkedFile>> {
    let meta = std::fs::metadata(root).map_err(|e| io("reading directory", root, e))?;
    if !meta.is_dir() {
        return Err(ClientError::BadInput(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| io("reading directory", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io("reading directory", &dir, e))?;
            let path = entry.path();
            let file_type = entry.file_type().map_err(|e| io("reading", &path, e))?;
            if file_type.is_dir() {
                stack.push(path);
            } else if file_type.is_file() {
                let relative = path
                    .strip_prefix(root)
                    .ok()
                    .and_then(|p| p.to_str())
                    .map(|p| p.replace(std::path::MAIN_SEPARATOR, "/"))
                    .ok_or_else(|| {
                        ClientError::BadInput(format!(
                            "{} is not a UTF-8 path; rename it",
                            path.display()
                        ))
                    })?;
                let len_bytes = entry.metadata().map_err(|e| io("reading", &path, e))?.len();
                out.push(WalkedFile {
                    absolute: path,
                    relative,
                    len_bytes,
                });
            } else if file_type.is_symlink() {
                return Err(ClientError::BadInput(format!(
                    "{} is a symbolic link; bundles hold regular files only: replace it with the file it points to or remove it",
                    path.display()
                )));
            } else {
                return Err(ClientError::BadInput(format!(
                    "{} is not a regular file (device, socket or pipe); remove it",
                    path.display()
                )));
            }
        }
    }
    out.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(out)
}
