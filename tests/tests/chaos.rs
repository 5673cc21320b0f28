//! Chaos across real hosts (`bitmountain_tests::chaos`): the compose cluster's containers under
//! faults drawn from a seed while clients upload, read, stat, list and delete; after healing a
//! checker judges the history. CI runs two fixed seeds; `scripts/chaos --minutes N --seed S`
//! runs [`soak`] for as long as asked and prints its summary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bitmountain_tests::chaos::{run, Settings};

fn run_and_judge(settings: &Settings) {
    let summary = run(settings);
    println!("{summary}");
    assert!(
        summary.violations.is_empty(),
        "seed {} broke the rules:\n{summary}",
        settings.seed
    );
    let acknowledged = summary
        .operations
        .iter()
        .filter(|((op, outcome), _)| *op == "put" && *outcome == "ok")
        .map(|(_, n)| *n)
        .sum::<u64>();
    assert!(acknowledged > 0, "no upload was acknowledged:\n{summary}");
    assert!(
        !summary.faults.is_empty(),
        "no fault was injected:\n{summary}"
    );
}

#[test]
fn fixed_seeds_keep_every_rule() {
    // Between them (see the schedule): kill -9 of nodes (one, and more than the code
    // survives) and of members (one, and a majority), a paused member and node, a slow zone,
    // the leader cut off (both ways and one way), a node cut from the group, a zone cut, a full
    // disk, a disk that vanishes and returns, and two faults at once (a disk vanishing while a
    // majority of members is killed, a node killed while another is paused).
    for seed in [6, 360] {
        run_and_judge(&Settings {
            seed,
            length: Duration::from_secs(75),
            clients: 4,
        });
    }
}

/// A long run: `CHAOS_MINUTES` (default 10) and `CHAOS_SEED` (default: from the clock).
#[test]
#[ignore]
fn soak() {
    let minutes: u64 = std::env::var("CHAOS_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(10);
    let seed = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        });
    run_and_judge(&Settings {
        seed,
        length: Duration::from_secs(minutes * 60),
        clients: 4,
    });
}
