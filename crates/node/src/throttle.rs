//! Pacing background reads (scrub, fixity, repair copies) to a byte rate, so they leave the
//! disks and cores to clients.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Paces bytes to a rate: each caller waits until its bytes fit the rate since the last ones.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_sec: AtomicU64,
    next_free: Mutex<Instant>,
}

impl Throttle {
    pub fn new(bytes_per_sec: u64) -> Self {
        Throttle {
            bytes_per_sec: AtomicU64::new(bytes_per_sec),
            next_free: Mutex::new(Instant::now()),
        }
    }

    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.bytes_per_sec.store(bytes_per_sec, Ordering::Relaxed);
    }

    /// Waits until `bytes` may pass (at once when the rate is 0: unlimited).
    pub async fn take(&self, bytes: u64) {
        let rate = self.bytes_per_sec.load(Ordering::Relaxed);
        if rate == 0 || bytes == 0 {
            return;
        }
        let start = {
            let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Credit for idle time is capped at one second, so a burst after a pause is bounded.
            let earliest = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            let start = (*next).max(earliest);
            *next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            start
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
    }
}
