//! `export ID --bagit -o DIR`: a bundle as a BagIt bag. A bundle uploaded from a bag (its paths
//! are a bag's) comes back as that bag, byte for byte; any other becomes `data/<path>` with
//! SHA-256 and SHA-512 manifests (the SHA-256 the one recorded at ingest, which every read is
//! checked against), `bag-info.txt` (Bagging-Date, the bundle id, its labels, Payload-Oxum) and
//! tag manifests. The bag is written beside DIR and renamed into place once it validates.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use bitmountain_client::ArchiveClient;
use sha2::{Digest, Sha512};

use super::bagit;

/// What was written.
#[derive(Debug, Clone, Copy)]
pub struct Exported {
    pub payload_files: u64,
    pub payload_bytes: u64,
    /// The bundle was a bag and came back as it was uploaded.
    pub unchanged: bool,
}

/// A file's bytes written through, counted and hashed with SHA-512.
struct Sha512Writer<W> {
    inner: W,
    sha: Sha512,
}

impl<W: Write> Write for Sha512Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes bundle `id` as a bag in `dir`, which must not exist.
pub async fn export(client: &ArchiveClient, id: &str, dir: &Path) -> anyhow::Result<Exported> {
    if dir.exists() {
        bail!("{} exists: give a new directory for the bag", dir.display());
    }
    let partial = partial_dir(dir)?;
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the unfinished {}", partial.display()))?;
    }
    let written = write_into(client, id, &partial).await;
    let exported = match written {
        Ok(e) => e,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    // The bag must be one before it takes its name.
    if let Err(e) = bagit::validate(&partial) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e.context(format!("the bag written from {id} does not validate")));
    }
    std::fs::rename(&partial, dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
    Ok(exported)
}

fn partial_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: give a directory name", dir.display()))?;
    Ok(dir.with_file_name(format!(".{name}.partial")))
}

async fn write_into(client: &ArchiveClient, id: &str, root: &Path) -> anyhow::Result<Exported> {
    let info = client.stat(id).await?;
    let index = client.index(id).await?;
    let paths: Vec<&str> = index.iter().map(|f| f.path.as_str()).collect();
    let unchanged = bagit::is_bag(&paths);
    let mut payload = Vec::new();
    for f in index.iter() {
        if f.path.split('/').any(|c| c == ".." || c.is_empty()) {
            bail!("{id}: path {:?} cannot be written safely", f.path);
        }
        let rel = if unchanged {
            f.path.clone()
        } else {
            format!("data/{}", f.path)
        };
        let target = root.join(&rel);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let file = std::fs::File::create(&target)
            .with_context(|| format!("creating {}", target.display()))?;
        let mut out = Sha512Writer {
            inner: std::io::BufWriter::new(file),
            sha: Sha512::new(),
        };
        // Whole-file reads are checked against the SHA-256 recorded at ingest.
        client
            .get_file(id, &f.path, 0, None, &mut out)
            .await
            .with_context(|| format!("reading {id}/{}", f.path))?;
        out.flush()
            .with_context(|| format!("writing {}", target.display()))?;
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(&f.sha256, &mut sha256)
            .with_context(|| format!("{id}/{}: the index's SHA-256 is not hex", f.path))?;
        if !unchanged || rel.starts_with("data/") {
            payload.push(bagit::PayloadFile {
                path: rel,
                bytes: f.size_bytes,
                sha256,
                sha512: out.sha.finalize().into(),
            });
        }
    }
    let (payload_files, payload_bytes) = (
        payload.len() as u64,
        payload.iter().map(|p| p.bytes).sum::<u64>(),
    );
    if !unchanged {
        let today = humantime::format_rfc3339(std::time::SystemTime::now()).to_string();
        let mut fields = vec![
            (
                "Bag-Software-Agent".to_owned(),
                format!("bitmountain {}", env!("CARGO_PKG_VERSION")),
            ),
            ("Bagging-Date".to_owned(), today[..10].to_owned()),
            ("External-Identifier".to_owned(), id.to_owned()),
            ("Bit-Mountain-Bundle-Id".to_owned(), id.to_owned()),
        ];
        for (k, v) in &info.labels {
            fields.push(("Bit-Mountain-Label".to_owned(), format!("{k}={v}")));
        }
        for (name, bytes) in bagit::tag_files(&payload, &fields) {
            let path = root.join(&name);
            std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(Exported {
        payload_files,
        payload_bytes,
        unchanged,
    })
}
