//! Background workers of Bit Mountain's processes: one trait ([`Worker`]) and one lifecycle
//! ([`Workers`]) for every loop that runs beside the gRPC services — the metadata leader's
//! failure detector and expiry scan, a storage node's heartbeats, garbage collection, repair
//! worker and scrubber.
//!
//! A worker is written as one *step* (one pass, one claim, one heartbeat) that says when it
//! wants to run again; the runner owns the loop: the pause between steps, errors (recorded,
//! then the worker's own pause before the next try), the status every process reports
//! (`bitmountain status --json`: name, state, steps, errors, last run, last error) and
//! shutdown (no new step starts; a step under way finishes or is cut off after a grace).
//!
//! Where code goes: a new background loop is a type implementing [`Worker`] in the crate that
//! owns its concern, started with [`Workers::spawn`] where the process assembles itself.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinSet;

/// Longest error message a status keeps (a step's error may quote a whole response).
pub const MAX_ERROR_BYTES: usize = 512;

/// When a worker wants its next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// This long after the step began: a fixed rate, like `tokio::time::interval` (a step
    /// longer than the period is followed at once by the next).
    Every(Duration),
    /// This long after the step ended.
    After(Duration),
    /// Never: the worker is done.
    Stop,
}

/// A step that failed: what went wrong, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepError {
    /// What went wrong (kept in the worker's status).
    pub message: String,
    /// When to try again.
    pub next: Next,
}

impl StepError {
    /// An error after which the worker tries again on its usual schedule `next`.
    pub fn new(message: impl std::fmt::Display, next: Next) -> Self {
        Self {
            message: message.to_string(),
            next,
        }
    }
}

/// A background loop, written as one step.
pub trait Worker: Send + 'static {
    /// A stable name (`heartbeat`, `gc`, `repair`, `scrub`, `failure-detector`, `expiry`).
    fn name(&self) -> &'static str;

    /// One unit of work.
    fn step(&mut self) -> impl Future<Output = Result<Next, StepError>> + Send;

    /// How long to wait before the first step.
    fn first_pause(&self) -> Duration {
        Duration::ZERO
    }

    /// Waits `pause` before the next step. A worker that can be woken early (a scrub asked
    /// for by an operator) returns sooner.
    fn wait(&mut self, pause: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(pause)
    }

    /// A short line on what the worker is doing now (shown in its status).
    fn note(&self) -> String {
        String::new()
    }
}

/// Where a worker is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Waiting for its next step.
    Idle,
    /// In a step.
    Running,
    /// Ended (done, or the process is shutting down).
    Stopped,
}

impl WorkerState {
    /// The name shown in status.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Idle => "idle",
            WorkerState::Running => "running",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// What a worker reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// Its name.
    pub name: &'static str,
    /// Its state.
    pub state: WorkerState,
    /// Steps finished (with or without error).
    pub steps: u64,
    /// Steps that failed.
    pub errors: u64,
    /// When the last step ended (0: none yet).
    pub last_run_unix_ms: u64,
    /// How long it took.
    pub last_duration_ms: u64,
    /// The last error (empty: none), at most [`MAX_ERROR_BYTES`].
    pub last_error: String,
    /// When it happened (0: never).
    pub last_error_unix_ms: u64,
    /// The worker's own note after its last step.
    pub note: String,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `message` cut to at most [`MAX_ERROR_BYTES`] on a character boundary.
fn bounded(message: &str) -> String {
    let mut end = message.len().min(MAX_ERROR_BYTES);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_string()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The workers of one process: starts them, reports their status, stops them.
#[derive(Debug)]
pub struct Workers {
    statuses: Mutex<Vec<Arc<Mutex<WorkerStatus>>>>,
    tasks: Mutex<JoinSet<()>>,
    stop: watch::Sender<bool>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    /// No workers yet.
    pub fn new() -> Self {
        Self {
            statuses: Mutex::new(Vec::new()),
            tasks: Mutex::new(JoinSet::new()),
            stop: watch::channel(false).0,
        }
    }

    /// Starts `worker` on the current tokio runtime.
    pub fn spawn<W: Worker>(&self, worker: W) {
        let status = Arc::new(Mutex::new(WorkerStatus {
            name: worker.name(),
            state: WorkerState::Idle,
            steps: 0,
            errors: 0,
            last_run_unix_ms: 0,
            last_duration_ms: 0,
            last_error: String::new(),
            last_error_unix_ms: 0,
            note: worker.note(),
        }));
        lock(&self.statuses).push(Arc::clone(&status));
        let stop = self.stop.subscribe();
        lock(&self.tasks).spawn(run(worker, status, stop));
    }

    /// Every worker's status, in the order they were started.
    pub fn statuses(&self) -> Vec<WorkerStatus> {
        lock(&self.statuses)
            .iter()
            .map(|s| lock(s).clone())
            .collect()
    }

    /// Stops every worker: none starts another step; steps under way get `grace` to finish
    /// and are then cut off.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.send_replace(true);
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        let all_done = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            tasks.abort_all();
        }
        for s in lock(&self.statuses).iter() {
            lock(s).state = WorkerState::Stopped;
        }
    }
}

/// The loop every worker runs in.
async fn run<W: Worker>(
    mut worker: W,
    status: Arc<Mutex<WorkerStatus>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut pause = worker.first_pause();
    loop {
        if !pause.is_zero() {
            tokio::select! {
                _ = worker.wait(pause) => {}
                _ = stop.wait_for(|stopped| *stopped) => break,
            }
        }
        if *stop.borrow() {
            break;
        }
        lock(&status).state = WorkerState::Running;
        let began = Instant::now();
        let result = worker.step().await;
        let took = began.elapsed();
        let next = {
            let mut s = lock(&status);
            s.state = WorkerState::Idle;
            s.steps += 1;
            s.last_run_unix_ms = unix_ms();
            s.last_duration_ms = took.as_millis() as u64;
            s.note = worker.note();
            match result {
                Ok(next) => next,
                Err(e) => {
                    // The step logs what matters at its own level; the status keeps the error.
                    tracing::debug!(worker = s.name, error = %e.message, "background step failed");
                    s.errors += 1;
                    s.last_error = bounded(&e.message);
                    s.last_error_unix_ms = s.last_run_unix_ms;
                    e.next
                }
            }
        };
        pause = match next {
            Next::Every(period) => period.saturating_sub(took),
            Next::After(pause) => pause,
            Next::Stop => break,
        };
    }
    lock(&status).state = WorkerState::Stopped;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Fails every third step, stops after `stop_after` steps.
    struct Counter {
        steps: Arc<AtomicU64>,
        stop_after: u64,
    }

    impl Worker for Counter {
        fn name(&self) -> &'static str {
            "counter"
        }

        async fn step(&mut self) -> Result<Next, StepError> {
            let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.stop_after {
                return Ok(Next::Stop);
            }
            if n.is_multiple_of(3) {
                return Err(StepError::new(
                    format!("step {n} failed"),
                    Next::After(Duration::from_millis(1)),
                ));
            }
            Ok(Next::Every(Duration::from_millis(1)))
        }

        fn note(&self) -> String {
            format!("{} steps", self.steps.load(Ordering::SeqCst))
        }
    }

    async fn until(deadline: Duration, mut done: impl FnMut() -> bool) {
        let end = Instant::now() + deadline;
        while !done() {
            assert!(
                Instant::now() < end,
                "condition not met within {deadline:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[tokio::test]
    async fn steps_errors_and_the_end_are_reported() {
        let workers = Workers::new();
        let steps = Arc::new(AtomicU64::new(0));
        workers.spawn(Counter {
            steps: Arc::clone(&steps),
            stop_after: 7,
        });
        until(Duration::from_secs(5), || {
            workers.statuses()[0].state == WorkerState::Stopped
        })
        .await;
        let s = &workers.statuses()[0];
        assert_eq!((s.name, s.steps, s.errors), ("counter", 7, 2));
        assert_eq!(s.last_error, "step 6 failed");
        assert!(s.last_error_unix_ms > 0 && s.last_run_unix_ms >= s.last_error_unix_ms);
        assert_eq!(s.note, "7 steps");
    }

    /// Waits for a long time between steps; shutdown must not wait for the pause.
    struct Sleeper;

    impl Worker for Sleeper {
        fn name(&self) -> &'static str {
            "sleeper"
        }

        async fn step(&mut self) -> Result<Next, StepError> {
            Ok(Next::After(Duration::from_secs(3600)))
        }
    }

    /// A step that never ends: shutdown cuts it off after the grace.
    struct Stuck;

    impl Worker for Stuck {
        fn name(&self) -> &'static str {
            "stuck"
        }

        async fn step(&mut self) -> Result<Next, StepError> {
            std::future::pending::<()>().await;
            Ok(Next::Stop)
        }
    }

    #[tokio::test]
    async fn shutdown_ends_pauses_at_once_and_cuts_off_stuck_steps() {
        let workers = Workers::new();
        workers.spawn(Sleeper);
        workers.spawn(Stuck);
        until(Duration::from_secs(5), || {
            let s = workers.statuses();
            s[0].steps == 1 && s[1].state == WorkerState::Running
        })
        .await;
        let began = Instant::now();
        workers.shutdown(Duration::from_millis(100)).await;
        assert!(began.elapsed() < Duration::from_secs(5));
        assert!(workers
            .statuses()
            .iter()
            .all(|s| s.state == WorkerState::Stopped));
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_ERROR_BYTES && cut.chars().all(|c| c == 'é'));
    }
}
