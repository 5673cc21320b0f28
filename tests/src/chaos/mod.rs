//! Chaos across real hosts: the compose cluster's containers on a private network
//! ([`hosts`]), concurrent clients recording every operation ([`workload`], [`history`]),
//! faults drawn from a seed and injected for real — kill -9, SIGSTOP, iptables cuts both ways
//! and one way, rate limits and loss, a full disk, a disk that vanishes ([`faults`],
//! [`disks`]) — and, after healing, a checker ([`checker`]) that
//! judges the history and what the cluster holds, plus the repair queue drained, every bundle
//! at full redundancy and `meta check` on every member's data.
//!
//! [`run`] does one run: `tests/tests/chaos.rs` runs fixed seeds in CI, `scripts/chaos` soaks.

pub mod checker;
pub mod disks;
pub mod faults;
pub mod history;
pub mod hosts;
pub mod workload;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitmountain_client::ArchiveClient;

use checker::{FinalState, Violation};
use faults::Planned;
use history::{Entry, FileSpec, History, Op, Outcome};
use hosts::{Hosts, Image, MEMBERS, NODES};
use workload::{Shared, OP_LABEL, OP_TIMEOUT, RUN_LABEL};

/// The compose cluster's code: 4 data and 2 parity shards per bundle.
const SHARDS_PER_BUNDLE: usize = 6;
/// The members' default: a node silent this long is down and its shards are rebuilt.
const NODE_DOWN_GRACE: Duration = Duration::from_secs(30);
/// How long the healed cluster may take to have every node up and the repair queue empty.
const HEAL_TIMEOUT: Duration = Duration::from_secs(300);

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    /// How long the clients and the faults go on.
    pub length: Duration,
    pub clients: usize,
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct Injected {
    pub planned: Planned,
    pub services: Vec<&'static str>,
    pub at_ms: u64,
    pub healed_ms: u64,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub seed: u64,
    /// (operation, outcome) → count.
    pub operations: BTreeMap<(&'static str, &'static str), u64>,
    pub faults: Vec<Injected>,
    /// From healing every fault to every node up and the repair queue empty.
    pub time_to_heal: Duration,
    pub bundles_at_end: usize,
    /// Elections the members logged (the two-leaders rule judges them).
    pub elections: usize,
    /// The most frequent errors clients saw, with their counts.
    pub errors: Vec<(String, u64)>,
    pub violations: Vec<Violation>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "chaos run, seed {}", self.seed)?;
        writeln!(f, "operations:")?;
        for ((op, outcome), n) in &self.operations {
            writeln!(f, "  {op:<7} {outcome:<14} {n}")?;
        }
        let mut kinds: BTreeMap<&str, u64> = BTreeMap::new();
        for i in &self.faults {
            *kinds.entry(i.planned.fault.kind()).or_default() += 1;
        }
        writeln!(f, "faults injected ({}):", self.faults.len())?;
        for (kind, n) in kinds {
            writeln!(f, "  {kind:<40} {n}")?;
        }
        writeln!(f, "time to heal: {:.1} s", self.time_to_heal.as_secs_f64())?;
        writeln!(f, "bundles at the end: {}", self.bundles_at_end)?;
        writeln!(f, "elections logged: {}", self.elections)?;
        writeln!(f, "most frequent errors:")?;
        for (error, n) in &self.errors {
            writeln!(f, "  {n:>5} {error}")?;
        }
        if self.violations.is_empty() {
            writeln!(f, "checker: every rule held")
        } else {
            writeln!(f, "checker: {} violations", self.violations.len())?;
            writeln!(f, "fault schedule:")?;
            for i in &self.faults {
                writeln!(
                    f,
                    "  [{} ms, {} ms] {} on {:?}",
                    i.at_ms, i.healed_ms, i.planned.fault, i.services
                )?;
            }
            for v in self.violations.iter().take(20) {
                write!(f, "{v}")?;
            }
            Ok(())
        }
    }
}

/// One run: a fresh image and cluster, the workload under the seed's faults, healing, the
/// checks. The summary lists any violation (the caller fails on them).
pub fn run(settings: &Settings) -> Summary {
    let unique = format!(
        "bmchaos{}x{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let image = Image::build(&unique);
    let hosts = Hosts::start(&unique, &image);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let summary = runtime.block_on(run_on(&hosts, settings, &unique));
    drop(runtime);
    summary
}

async fn run_on(hosts: &Hosts, settings: &Settings, run: &str) -> Summary {
    if let Err(e) = hosts.wait_all_up(Duration::from_secs(120)).await {
        panic!(
            "the cluster did not come up: {e}\n{}",
            hosts.log_tail("m1", 30)
        );
    }
    let started = Instant::now();
    let shared = Arc::new(Shared::new(run.to_owned(), History::new(started)));
    let clients: Vec<_> = (0..settings.clients)
        .map(|i| {
            let client = hosts.client();
            let shared = Arc::clone(&shared);
            tokio::spawn(workload::client_loop(i, settings.seed, client, shared))
        })
        .collect();
    let schedule = faults::schedule(settings.seed, settings.length, NODE_DOWN_GRACE);
    let mut injected = Vec::new();
    for planned in schedule {
        tokio::time::sleep_until((started + planned.at).into()).await;
        let at_ms = shared.history.now_ms();
        let done = faults::inject(hosts, &planned.fault).await;
        tokio::time::sleep(planned.hold).await;
        faults::heal(hosts, &done);
        injected.push(Injected {
            planned,
            services: done.services,
            at_ms,
            healed_ms: shared.history.now_ms(),
        });
    }
    tokio::time::sleep_until((started + settings.length).into()).await;
    shared
        .stop
        .store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let _ = tokio::time::timeout(OP_TIMEOUT * 2, c).await;
    }

    // Heal everything, then wait for the cluster to be whole again.
    let healing = Instant::now();
    for s in MEMBERS.iter().chain(NODES.iter()) {
        hosts.heal(s);
    }
    let mut extra = Vec::new();
    let client = hosts.client();
    if let Err(e) = hosts.wait_all_up(HEAL_TIMEOUT).await {
        extra.push(plain(
            "not_healed",
            format!("nodes not all up after healing: {e}"),
        ));
    }
    if let Err(e) = wait_repairs_drained(&client, HEAL_TIMEOUT).await {
        extra.push(plain("repair_queue_not_drained", e));
    }
    let time_to_heal = healing.elapsed();

    let recorded = shared.history.take();
    let history = &recorded.entries;
    let client = Arc::new(client);
    let (end, mut redundancy) = final_state(&client, run, history).await;
    extra.append(&mut redundancy);
    let mut end = end;
    end.leaders = hosts.elections();
    if end.leaders.is_empty() {
        extra.push(plain(
            "no_elections_logged",
            "no member logged \"became leader\": the two-leaders rule judged nothing".into(),
        ));
    }
    let mut violations = checker::check(&recorded, &end);
    violations.append(&mut extra);
    for (member, printed) in hosts.meta_check() {
        violations.push(plain("meta_check", format!("{member}: {printed}")));
    }
    Summary {
        seed: settings.seed,
        operations: count_operations(history),
        faults: injected,
        time_to_heal,
        bundles_at_end: end.listed.len(),
        elections: end.leaders.len(),
        errors: frequent_errors(history, 8),
        violations,
    }
}

fn plain(rule: &'static str, detail: String) -> Violation {
    Violation {
        rule,
        detail,
        entries: Vec::new(),
    }
}

async fn wait_repairs_drained(client: &ArchiveClient, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.status().await {
            Ok(s) if s.repairs_queued == 0 => return Ok(()),
            Ok(s) => format!("{} repairs still queued", s.repairs_queued),
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            return Err(format!("after {timeout:?}: {last}"));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Lists the run's bundles and reads every one back against its upload
/// ([`FINAL_READS_IN_FLIGHT`] at a time: an hour's run leaves ~15,000); bundles not at full
/// redundancy become violations.
async fn final_state(
    client: &Arc<ArchiveClient>,
    run: &str,
    history: &[Entry],
) -> (FinalState, Vec<Violation>) {
    let specs: BTreeMap<&str, &Vec<FileSpec>> = history
        .iter()
        .filter_map(|e| match &e.op {
            Op::Put { tag, files } => Some((tag.as_str(), files)),
            _ => None,
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let listed = loop {
        match client.list_all(Some((RUN_LABEL, run))).await {
            Ok(l) => break l,
            Err(e) if Instant::now() > deadline => {
                let v = plain("not_healed", format!("listing after healing failed: {e}"));
                return (FinalState::default(), vec![v]);
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    let mut end = FinalState::default();
    let mut violations = Vec::new();
    let mut reads = tokio::task::JoinSet::new();
    for b in listed {
        let tag = b.labels.get(OP_LABEL).cloned().unwrap_or_default();
        end.listed.push((b.bundle_id.clone(), tag.clone()));
        let files = specs.get(tag.as_str()).map(|f| (*f).clone());
        if reads.len() >= FINAL_READS_IN_FLIGHT {
            if let Some(done) = reads.join_next().await {
                gather(done, &mut end, &mut violations);
            }
        }
        reads.spawn(check_bundle(Arc::clone(client), b.bundle_id, files));
    }
    while let Some(done) = reads.join_next().await {
        gather(done, &mut end, &mut violations);
    }
    (end, violations)
}

/// Bundles the final check reads back at once.
const FINAL_READS_IN_FLIGHT: usize = 16;

/// One listed bundle after healing: its redundancy problem, if any, and why it is not whole,
/// if it is not.
struct BundleCheck {
    bundle: String,
    redundancy: Option<Violation>,
    not_whole: Option<String>,
}

async fn check_bundle(
    client: Arc<ArchiveClient>,
    bundle: String,
    files: Option<Vec<FileSpec>>,
) -> BundleCheck {
    let redundancy = match client.stat(&bundle).await {
        Ok(s) if s.shards.len() == SHARDS_PER_BUNDLE => None,
        Ok(s) => Some(plain(
            "not_at_full_redundancy",
            format!(
                "{bundle} has {} of {SHARDS_PER_BUNDLE} shards placed",
                s.shards.len()
            ),
        )),
        Err(e) => Some(plain(
            "not_healed",
            format!("{bundle} is listed but its stat failed: {e}"),
        )),
    };
    let not_whole = match files {
        Some(files) => read_whole(&client, &bundle, &files).await.err(),
        None => None,
    };
    BundleCheck {
        bundle,
        redundancy,
        not_whole,
    }
}

fn gather(
    done: Result<BundleCheck, tokio::task::JoinError>,
    end: &mut FinalState,
    violations: &mut Vec<Violation>,
) {
    match done {
        Ok(c) => {
            violations.extend(c.redundancy);
            if let Some(why) = c.not_whole {
                end.not_whole.insert(c.bundle, why);
            }
        }
        Err(e) => violations.push(plain(
            "final_check_failed",
            format!("a read-back task: {e}"),
        )),
    }
}

/// Every file of the upload, byte for byte, and no other file.
async fn read_whole(
    client: &ArchiveClient,
    bundle: &str,
    files: &[FileSpec],
) -> Result<(), String> {
    let index = client
        .index(bundle)
        .await
        .map_err(|e| format!("index: {e}"))?;
    let mut paths: Vec<&str> = index.iter().map(|f| f.path.as_str()).collect();
    paths.sort_unstable();
    let mut expected: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    expected.sort_unstable();
    if paths != expected {
        return Err(format!("holds {paths:?}, the upload sent {expected:?}"));
    }
    for f in files {
        let bytes = client
            .read_file(bundle, &f.path)
            .await
            .map_err(|e| format!("{}: {e}", f.path))?;
        if bytes != crate::cluster::pseudo_random_bytes(f.seed, f.len) {
            return Err(format!(
                "{}: other bytes than were uploaded ({} bytes)",
                f.path,
                bytes.len()
            ));
        }
    }
    Ok(())
}

fn count_operations(history: &[Entry]) -> BTreeMap<(&'static str, &'static str), u64> {
    let mut out = BTreeMap::new();
    for e in history {
        let op = match e.op {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Read { .. } => "read",
            Op::Stat { .. } => "stat",
            Op::List => "list",
        };
        let outcome = match e.outcome {
            Outcome::Failed { .. } => "failed",
            Outcome::Indeterminate { .. } => "indeterminate",
            Outcome::Exists(false) => "ok (absent)",
            _ => "ok",
        };
        *out.entry((op, outcome)).or_default() += 1;
    }
    out
}

/// The `limit` most frequent client errors (their first 100 characters, ids, addresses and
/// numbers masked so that one error is counted as one).
fn frequent_errors(history: &[Entry], limit: usize) -> Vec<(String, u64)> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for e in history {
        if let Outcome::Failed { error } | Outcome::Indeterminate { error } = &e.outcome {
            let words: Vec<&str> = error.split_whitespace().collect();
            let masked: Vec<&str> = words
                .iter()
                .map(|w| {
                    let digits = w.chars().filter(char::is_ascii_digit).count();
                    let hex = w.chars().filter(char::is_ascii_hexdigit).count();
                    if digits > 0 && (hex >= 8 || digits * 2 >= w.len()) {
                        "<n>"
                    } else {
                        w
                    }
                })
                .collect();
            let key: String = masked.join(" ").chars().take(100).collect();
            *counts.entry(key).or_default() += 1;
        }
    }
    let mut list: Vec<(String, u64)> = counts.into_iter().collect();
    list.sort_by_key(|e| std::cmp::Reverse(e.1));
    list.truncate(limit);
    list
}
