//! The clients of a chaos run: each uploads bundles, reads files, stats, lists and deletes,
//! against every node, while the faults go on; every operation goes into the history.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bitmountain_client::{ArchiveClient, ClientError, PutOptions, UploadFile};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::history::{FileSpec, History, ListedItem, Op, Outcome};
use crate::cluster::pseudo_random_bytes;

/// The label every bundle of a run carries (value: the run's name), so listings see only it.
pub const RUN_LABEL: &str = "chaos-run";
/// The label naming the upload a bundle came from.
pub const OP_LABEL: &str = "chaos-op";
/// The longest one operation may take before the client gives up on it.
pub const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Most files in one upload, and their largest size.
const MAX_FILES: usize = 4;
const MAX_FILE_BYTES: usize = 192 * 1024;

/// Bundles uploaded and acknowledged, with their files, shared by the clients.
#[derive(Debug, Default)]
pub struct Known {
    bundles: Mutex<Vec<(String, Vec<FileSpec>)>>,
    /// Bundles a delete was sent for: stats and reads of them check that none comes back.
    deleted: Mutex<Vec<(String, Vec<FileSpec>)>>,
}

impl Known {
    fn pick(&self, rng: &mut StdRng) -> Option<(String, Vec<FileSpec>)> {
        let list = self.bundles.lock().unwrap_or_else(|p| p.into_inner());
        (!list.is_empty()).then(|| list[rng.random_range(0..list.len())].clone())
    }

    fn add(&self, bundle: String, files: Vec<FileSpec>) {
        self.bundles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((bundle, files));
    }

    fn pick_deleted(&self, rng: &mut StdRng) -> Option<(String, Vec<FileSpec>)> {
        let list = self.deleted.lock().unwrap_or_else(|p| p.into_inner());
        (!list.is_empty()).then(|| list[rng.random_range(0..list.len())].clone())
    }

    fn forget(&self, bundle: &str) {
        let mut list = self.bundles.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = list.iter().position(|(b, _)| b == bundle) {
            let gone = list.swap_remove(i);
            self.deleted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(gone);
        }
    }
}

/// What the clients share.
#[derive(Debug)]
pub struct Shared {
    pub run: String,
    pub history: History,
    pub known: Known,
    pub stop: AtomicBool,
    next_tag: AtomicU64,
}

impl Shared {
    pub fn new(run: String, history: History) -> Shared {
        Shared {
            run,
            history,
            known: Known::default(),
            stop: AtomicBool::new(false),
            next_tag: AtomicU64::new(1),
        }
    }
}

/// One client's loop, until `shared.stop`.
pub async fn client_loop(id: usize, seed: u64, client: ArchiveClient, shared: Arc<Shared>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    while !shared.stop.load(Ordering::Relaxed) {
        let roll = rng.random_range(0..100);
        // A quarter of reads and stats ask for a deleted bundle: it must stay gone.
        let picked = if rng.random_bool(0.25) {
            shared.known.pick_deleted(&mut rng)
        } else {
            None
        }
        .or_else(|| shared.known.pick(&mut rng));
        match (roll, picked) {
            (0..=34, _) | (_, None) => put(id, &mut rng, &client, &shared).await,
            (35..=59, Some((bundle, files))) => {
                let file = files[rng.random_range(0..files.len())].clone();
                read(id, &client, &shared, bundle, file).await;
            }
            (60..=74, Some((bundle, _))) => stat(id, &client, &shared, bundle).await,
            (75..=84, _) => list(id, &client, &shared).await,
            (_, Some((bundle, _))) => delete(id, &client, &shared, bundle).await,
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
    }
}

async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {OP_TIMEOUT:?}")),
    }
}

async fn put(id: usize, rng: &mut StdRng, client: &ArchiveClient, shared: &Shared) {
    let tag = format!("{}-{}", id, shared.next_tag.fetch_add(1, Ordering::Relaxed));
    let files: Vec<FileSpec> = (0..rng.random_range(1..=MAX_FILES))
        .map(|i| FileSpec {
            path: format!("pages/{i:04}.tif"),
            seed: rng.random(),
            len: rng.random_range(0..=MAX_FILE_BYTES),
        })
        .collect();
    let upload: Vec<UploadFile> = files
        .iter()
        .map(|f| UploadFile::from_bytes(f.path.clone(), pseudo_random_bytes(f.seed, f.len)))
        .collect();
    let options = PutOptions {
        labels: [
            (RUN_LABEL.to_owned(), shared.run.clone()),
            (OP_LABEL.to_owned(), tag.clone()),
        ]
        .into(),
        ..PutOptions::default()
    };
    let start = shared.history.now_ms();
    let outcome = match timed(client.put_files(upload, &options)).await {
        Ok(r) => {
            shared.known.add(r.bundle_id.clone(), files.clone());
            Outcome::Put {
                bundle: r.bundle_id,
            }
        }
        Err(error) => Outcome::Indeterminate { error },
    };
    shared
        .history
        .record(id, Op::Put { tag, files }, start, outcome);
}

async fn read(id: usize, client: &ArchiveClient, shared: &Shared, bundle: String, file: FileSpec) {
    let start = shared.history.now_ms();
    let outcome = match timed(client.read_file(&bundle, &file.path)).await {
        Ok(bytes) => Outcome::Read {
            same_bytes: bytes == pseudo_random_bytes(file.seed, file.len),
        },
        Err(error) => Outcome::Failed { error },
    };
    let op = Op::Read {
        bundle,
        path: file.path,
    };
    shared.history.record(id, op, start, outcome);
}

async fn stat(id: usize, client: &ArchiveClient, shared: &Shared, bundle: String) {
    let start = shared.history.now_ms();
    let outcome = match tokio::time::timeout(OP_TIMEOUT, client.stat(&bundle)).await {
        Ok(Ok(_)) => Outcome::Exists(true),
        // A deleted bundle is unknown, or (while its shards go) in the wrong state for a stat.
        Ok(Err(e)) if matches!(e.kind(), Some("unknown_bundle" | "wrong_state")) => {
            Outcome::Exists(false)
        }
        Ok(Err(e)) => Outcome::Failed {
            error: e.to_string(),
        },
        Err(_) => Outcome::Failed {
            error: format!("no answer within {OP_TIMEOUT:?}"),
        },
    };
    shared
        .history
        .record(id, Op::Stat { bundle }, start, outcome);
}

async fn list(id: usize, client: &ArchiveClient, shared: &Shared) {
    let start = shared.history.now_ms();
    let outcome = match timed(client.list_all(Some((RUN_LABEL, &shared.run)))).await {
        Ok(all) => {
            Outcome::Listed(
                shared
                    .history
                    .listed_items(all.into_iter().map(|b| ListedItem {
                        tag: b.labels.get(OP_LABEL).cloned().unwrap_or_default(),
                        bundle: b.bundle_id,
                    })),
            )
        }
        Err(error) => Outcome::Failed { error },
    };
    shared.history.record(id, Op::List, start, outcome);
}

async fn delete(id: usize, client: &ArchiveClient, shared: &Shared, bundle: String) {
    // Whatever the answer, no client reads it as present any more.
    shared.known.forget(&bundle);
    let start = shared.history.now_ms();
    let outcome = match timed(client.delete(&bundle, "chaos: weeded")).await {
        Ok(_) => Outcome::Deleted,
        Err(error) => Outcome::Indeterminate { error },
    };
    shared
        .history
        .record(id, Op::Delete { bundle }, start, outcome);
}
