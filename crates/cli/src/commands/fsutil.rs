//! Filesystem helpers shared by the commands: walking a tree into bundle paths and writing
//! output files atomically (temporary name, fsync, rename, fsync of the directory), so a failed
//! command never leaves a partial output file behind.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

pub use bitmountain_client::walk::WalkedFile;

/// Every regular file under `root`, sorted by path (`bitmountain_client::walk`: the offline
/// `bundle pack` and the online `put` see a tree the same way).
pub fn walk_files(root: &Path) -> anyhow::Result<Vec<WalkedFile>> {
    Ok(bitmountain_client::walk::walk_files(root)?)
}

/// Creates `dir`, or accepts it if it exists and is empty.
pub fn create_empty_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty; choose a new or empty output directory",
                dir.display()
            );
        }
        Ok(())
    } else {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
    }
}

/// An output file written under a temporary name and renamed into place by [`Self::commit`];
/// dropped without commit, it removes the temporary file.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Refuses to overwrite an existing file.
    pub fn create(target: &Path) -> anyhow::Result<Self> {
        if target.exists() {
            bail!(
                "{} already exists; remove it or choose another name",
                target.display()
            );
        }
        let name = target
            .file_name()
            .with_context(|| format!("{} is not a file name", target.display()))?
            .to_string_lossy();
        let temp = target.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        let file = File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
        Ok(AtomicFile {
            file,
            temp,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    pub fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    /// Fsyncs, renames into place and fsyncs the directory.
    pub fn commit(mut self) -> anyhow::Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("syncing {}", self.temp.display()))?;
        std::fs::rename(&self.temp, &self.target).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temp.display(),
                self.target.display()
            )
        })?;
        self.committed = true;
        sync_parent_dir(&self.target)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Fsyncs the directory holding `path`, so a rename survives a crash.
pub fn sync_parent_dir(path: &Path) -> anyhow::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", parent.display()))
}
