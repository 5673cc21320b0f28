//! The rules a chaos run is judged by, checked on its history and on what the cluster holds
//! after healing. Pure: the harness gathers the facts, this decides.
//!
//! Each bundle is a register that only moves forward — absent, present, deleted — so a
//! history is linearizable when no observation contradicts an acknowledged write that ended
//! before it began, and no observation goes back to a state an earlier one (ended before it
//! began) had already left.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::history::{Entry, Op, Outcome, Recorded};

/// What the cluster holds once every fault is healed.
#[derive(Debug, Default, Clone)]
pub struct FinalState {
    /// Every bundle listed, with its upload's tag.
    pub listed: Vec<(String, String)>,
    /// Listed bundles that did not read back whole (every file of its upload, byte for byte,
    /// and no other file), with what differed.
    pub not_whole: BTreeMap<String, String>,
    /// Every election a member logged: (member, term).
    pub leaders: Vec<(String, u64)>,
}

/// A broken rule, with the entries that show it.
#[derive(Debug, Clone)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
    pub entries: Vec<Entry>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.rule, self.detail)?;
        for e in &self.entries {
            writeln!(
                f,
                "    client {} [{} ms, {} ms] {:?} -> {:?}",
                e.client, e.start_ms, e.end_ms, e.op, e.outcome
            )?;
        }
        Ok(())
    }
}

/// Everything the history says about one bundle.
#[derive(Default)]
struct Bundle<'a> {
    /// The upload it came from (found by tag when its client never learned the id).
    put: Option<&'a Entry>,
    acknowledged: bool,
    /// Deletes begun (acknowledged or not).
    deletes: Vec<&'a Entry>,
    /// (entry, present?) for every read and stat of it, and the listings kept in `listings`.
    seen: Vec<(&'a Entry, bool)>,
    /// The listing items naming it (one, unless listings disagreed on its tag).
    items: Vec<usize>,
    listings: ListingsSeen<'a>,
}

/// Of all listings that showed a bundle present or absent, the only ones that can break a rule
/// in [`check_register`] (an hour's run has ~10,000 listings of ~15,000 bundles: one
/// observation per pair would not fit in memory).
#[derive(Default)]
struct ListingsSeen<'a> {
    /// Present, latest begun: any present observation after a delete or a disappearance is
    /// then this one.
    latest_present: Option<&'a Entry>,
    /// Absent, earliest ended: an absence before any delete began is then this one.
    first_absent: Option<&'a Entry>,
    /// Absent after a delete began, earliest ended: any return after such an absence follows
    /// this one.
    first_absent_after_delete: Option<&'a Entry>,
}

impl<'a> ListingsSeen<'a> {
    fn note(&mut self, listing: &'a Entry, present: bool, deleted_from: Option<u64>) {
        fn keep<'a>(
            slot: &mut Option<&'a Entry>,
            e: &'a Entry,
            better: fn(&Entry, &Entry) -> bool,
        ) {
            if slot.is_none_or(|old| better(e, old)) {
                *slot = Some(e);
            }
        }
        if present {
            keep(&mut self.latest_present, listing, |e, old| {
                e.start_ms > old.start_ms
            });
            return;
        }
        keep(&mut self.first_absent, listing, |e, old| {
            e.end_ms < old.end_ms
        });
        if deleted_from.is_some_and(|d| d < listing.end_ms) {
            keep(&mut self.first_absent_after_delete, listing, |e, old| {
                e.end_ms < old.end_ms
            });
        }
    }

    fn observations(&self) -> impl Iterator<Item = (&'a Entry, bool)> {
        let present = self.latest_present.map(|e| (e, true));
        // The two absences may be one listing: counted once.
        let after_delete = self
            .first_absent_after_delete
            .filter(|e| !self.first_absent.is_some_and(|f| std::ptr::eq(f, *e)));
        let absent = [self.first_absent, after_delete]
            .into_iter()
            .flatten()
            .map(|e| (e, false));
        present.into_iter().chain(absent)
    }
}

impl Bundle<'_> {
    fn first_delete_start(&self) -> Option<u64> {
        self.deletes.iter().map(|d| d.start_ms).min()
    }

    fn acknowledged_delete(&self) -> Option<&Entry> {
        self.deletes
            .iter()
            .copied()
            .filter(|d| d.outcome == Outcome::Deleted)
            .min_by_key(|d| d.end_ms)
    }
}

/// Every rule the run broke (none: it passed).
pub fn check(recorded: &Recorded, end: &FinalState) -> Vec<Violation> {
    let history = &recorded.entries;
    let mut out = Vec::new();
    let puts_by_tag: BTreeMap<&str, &Entry> = history
        .iter()
        .filter_map(|e| match &e.op {
            Op::Put { tag, .. } => Some((tag.as_str(), e)),
            _ => None,
        })
        .collect();
    let mut bundles = observed(history, &mut out);
    check_listings(recorded, &puts_by_tag, &mut bundles, &mut out);
    for (id, b) in &mut bundles {
        let kept: Vec<_> = b.listings.observations().collect();
        b.seen.extend(kept);
        check_register(id, b, &mut out);
    }
    check_final(&bundles, &puts_by_tag, end, &mut out);
    check_leaders(&end.leaders, &mut out);
    out
}

/// What acknowledged uploads, deletes, reads and stats say about each bundle.
fn observed<'a>(history: &'a [Entry], out: &mut Vec<Violation>) -> BTreeMap<String, Bundle<'a>> {
    let mut bundles: BTreeMap<String, Bundle> = BTreeMap::new();
    for e in history {
        match (&e.op, &e.outcome) {
            (Op::Put { .. }, Outcome::Put { bundle }) => {
                let b = bundles.entry(bundle.clone()).or_default();
                b.put = Some(e);
                b.acknowledged = true;
            }
            (Op::Delete { bundle }, Outcome::Deleted | Outcome::Indeterminate { .. }) => {
                bundles.entry(bundle.clone()).or_default().deletes.push(e);
            }
            (Op::Read { bundle, .. }, Outcome::Read { same_bytes }) => {
                if !same_bytes {
                    out.push(violation(
                        "wrong_bytes",
                        format!("{bundle}: a read returned other bytes than were uploaded"),
                        [e],
                    ));
                }
                bundles
                    .entry(bundle.clone())
                    .or_default()
                    .seen
                    .push((e, true));
            }
            (Op::Stat { bundle }, Outcome::Exists(present)) => {
                bundles
                    .entry(bundle.clone())
                    .or_default()
                    .seen
                    .push((e, *present));
            }
            _ => {}
        }
    }
    bundles
}

/// Listings: a bundle listed is present then; a bundle acknowledged before the listing began
/// and missing from it is absent then. A listed item no upload explains is reported once.
fn check_listings<'a>(
    recorded: &'a Recorded,
    puts_by_tag: &BTreeMap<&str, &'a Entry>,
    bundles: &mut BTreeMap<String, Bundle<'a>>,
    out: &mut Vec<Violation>,
) {
    for (n, item) in recorded.items.iter().enumerate() {
        if let Some(put) = puts_by_tag.get(item.tag.as_str()) {
            let b = bundles.entry(item.bundle.clone()).or_default();
            b.put.get_or_insert(put);
            b.items.push(n);
        }
    }
    let mut reported = BTreeSet::new();
    for e in &recorded.entries {
        let Outcome::Listed(set) = &e.outcome else {
            continue;
        };
        for n in set.iter() {
            let item = &recorded.items[n];
            let (id, tag) = (&item.bundle, &item.tag);
            let broken = match puts_by_tag.get(tag.as_str()) {
                Some(put) if put.start_ms > e.end_ms => violation(
                    "visible_before_upload",
                    format!("{id} was listed before its upload began"),
                    [*put, e],
                ),
                Some(_) => continue,
                None => violation(
                    "unknown_bundle_visible",
                    format!("{id} (tag {tag:?}) was listed but no client uploaded it"),
                    [e],
                ),
            };
            if reported.insert(n) {
                out.push(broken);
            }
        }
        for b in bundles.values_mut() {
            let present = b.items.iter().any(|&n| set.contains(n));
            let acked_before = b.acknowledged && b.put.is_some_and(|p| p.end_ms < e.start_ms);
            if present || acked_before {
                let deleted_from = b.first_delete_start();
                b.listings.note(e, present, deleted_from);
            }
        }
    }
}

/// One bundle's observations against its acknowledged writes and against each other.
fn check_register(id: &str, b: &Bundle, out: &mut Vec<Violation>) {
    let deleted_from = b.first_delete_start();
    if let Some(put) = b.put.filter(|_| b.acknowledged) {
        for (seen, present) in &b.seen {
            let may_be_deleted = deleted_from.is_some_and(|d| d < seen.end_ms);
            if !present && seen.start_ms > put.end_ms && !may_be_deleted {
                out.push(violation(
                    "acknowledged_upload_missing",
                    format!(
                        "{id} was absent after its upload was acknowledged, with no delete begun"
                    ),
                    [put, seen],
                ));
            }
        }
    }
    if let Some(del) = b.acknowledged_delete() {
        for (seen, present) in &b.seen {
            if *present && seen.start_ms > del.end_ms {
                out.push(violation(
                    "deleted_bundle_returned",
                    format!("{id} was seen after its delete was acknowledged"),
                    [del, seen],
                ));
            }
        }
    }
    // Forward only: absent (after a delete began) and then present again.
    for (gone, present) in &b.seen {
        let after_delete = deleted_from.is_some_and(|d| d < gone.end_ms);
        if *present || !after_delete {
            continue;
        }
        if let Some((back, _)) = b
            .seen
            .iter()
            .find(|(later, p)| *p && later.start_ms > gone.end_ms)
        {
            out.push(violation(
                "deleted_bundle_returned",
                format!("{id} was seen deleted and later present again"),
                [*gone, *back],
            ));
        }
    }
}

/// After healing: every acknowledged upload not deleted is there and whole; nothing
/// acknowledged deleted is; whatever is there is whole.
fn check_final(
    bundles: &BTreeMap<String, Bundle>,
    puts_by_tag: &BTreeMap<&str, &Entry>,
    end: &FinalState,
    out: &mut Vec<Violation>,
) {
    let listed: BTreeMap<&str, &str> = end
        .listed
        .iter()
        .map(|(id, tag)| (id.as_str(), tag.as_str()))
        .collect();
    for (id, b) in bundles {
        let Some(put) = b.put else { continue };
        if b.acknowledged && b.deletes.is_empty() && !listed.contains_key(id.as_str()) {
            out.push(violation(
                "acknowledged_upload_lost",
                format!("{id} is not listed after healing"),
                [put],
            ));
        }
        if let Some(del) = b.acknowledged_delete() {
            if listed.contains_key(id.as_str()) {
                out.push(violation(
                    "deleted_bundle_returned",
                    format!("{id} is listed after healing"),
                    [del],
                ));
            }
        }
    }
    for (id, tag) in &listed {
        let Some(put) = puts_by_tag.get(tag) else {
            out.push(violation(
                "unknown_bundle_visible",
                format!("{id} (tag {tag:?}) is listed after healing but no client uploaded it"),
                [],
            ));
            continue;
        };
        if let Some(why) = end.not_whole.get(*id) {
            out.push(violation(
                "not_whole",
                format!("{id} is listed after healing but does not read back whole: {why}"),
                [*put],
            ));
        }
    }
}

/// Raft's election safety: at most one leader per term.
fn check_leaders(leaders: &[(String, u64)], out: &mut Vec<Violation>) {
    let mut by_term: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for (member, term) in leaders {
        by_term.entry(*term).or_default().insert(member);
    }
    for (term, members) in by_term.into_iter().filter(|(_, m)| m.len() > 1) {
        out.push(violation(
            "two_leaders_in_a_term",
            format!("members {members:?} were all elected leader in term {term}"),
            [],
        ));
    }
}

fn violation<'a>(
    rule: &'static str,
    detail: String,
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Violation {
    Violation {
        rule,
        detail,
        entries: entries.into_iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::{FileSpec, Items, ListedItem};
    use std::cell::RefCell;

    fn entry(op: Op, start_ms: u64, end_ms: u64, outcome: Outcome) -> Entry {
        Entry {
            client: 0,
            op,
            start_ms,
            end_ms,
            outcome,
        }
    }

    fn put(tag: &str, start: u64, end: u64, outcome: Outcome) -> Entry {
        let files = vec![FileSpec {
            path: "a".into(),
            seed: 1,
            len: 10,
        }];
        let op = Op::Put {
            tag: tag.into(),
            files,
        };
        entry(op, start, end, outcome)
    }

    fn acked(bundle: &str) -> Outcome {
        Outcome::Put {
            bundle: bundle.into(),
        }
    }

    fn stat(bundle: &str, start: u64, end: u64, present: bool) -> Entry {
        let op = Op::Stat {
            bundle: bundle.into(),
        };
        entry(op, start, end, Outcome::Exists(present))
    }

    fn delete(bundle: &str, start: u64, end: u64, outcome: Outcome) -> Entry {
        let op = Op::Delete {
            bundle: bundle.into(),
        };
        entry(op, start, end, outcome)
    }

    thread_local! {
        /// The items the test's listings name (each test runs on its own thread).
        static ITEMS: RefCell<Items> = RefCell::default();
    }

    fn list(start: u64, end: u64, bundles: &[(&str, &str)]) -> Entry {
        let set = ITEMS.with_borrow_mut(|items| {
            items.set(bundles.iter().map(|(id, tag)| ListedItem {
                bundle: id.to_string(),
                tag: tag.to_string(),
            }))
        });
        entry(Op::List, start, end, Outcome::Listed(set))
    }

    fn listed(pairs: &[(&str, &str)]) -> FinalState {
        FinalState {
            listed: pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..FinalState::default()
        }
    }

    fn rules(history: &[Entry], end: &FinalState) -> Vec<&'static str> {
        let recorded = Recorded {
            entries: history.to_vec(),
            items: ITEMS.with_borrow(|items| items.items().to_vec()),
        };
        check(&recorded, end).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_clean_history_passes() {
        let indeterminate = Outcome::Indeterminate {
            error: "reset".into(),
        };
        let history = [
            put("t1", 0, 10, acked("b1")),
            stat("b1", 11, 12, true),
            list(13, 14, &[("b1", "t1")]),
            put("t2", 15, 30, indeterminate.clone()),
            // Concurrent with the delete: either answer is fine.
            delete("b1", 20, 40, Outcome::Deleted),
            stat("b1", 25, 26, true),
            stat("b1", 41, 42, false),
            put("t3", 50, 60, acked("b3")),
            delete("b3", 61, 70, indeterminate),
            stat("b3", 71, 72, true),
        ];
        // t2 committed after all (whole); b3's delete did not happen.
        let end = listed(&[("b2", "t2"), ("b3", "t3")]);
        assert_eq!(rules(&history, &end), Vec::<&str>::new());
    }

    #[test]
    fn lost_stale_and_returning_bundles_are_caught() {
        let history = [put("t1", 0, 10, acked("b1")), stat("b1", 11, 12, false)];
        assert_eq!(
            rules(&history, &listed(&[("b1", "t1")])),
            ["acknowledged_upload_missing"]
        );
        assert_eq!(
            rules(&history[..1], &listed(&[])),
            ["acknowledged_upload_lost"]
        );
        let history = [
            put("t1", 0, 10, acked("b1")),
            delete("b1", 11, 20, Outcome::Deleted),
            stat("b1", 21, 22, true),
        ];
        assert_eq!(
            rules(&history, &listed(&[("b1", "t1")])),
            ["deleted_bundle_returned", "deleted_bundle_returned"]
        );
        // An indeterminate delete: seen gone, then back.
        let history = [
            put("t1", 0, 10, acked("b1")),
            delete("b1", 11, 30, Outcome::Indeterminate { error: "x".into() }),
            stat("b1", 12, 13, false),
            stat("b1", 14, 15, true),
        ];
        assert_eq!(
            rules(&history, &listed(&[("b1", "t1")])),
            ["deleted_bundle_returned"]
        );
    }

    #[test]
    fn listings_count_as_observations() {
        let history = [
            put("t1", 0, 10, acked("b1")),
            list(11, 12, &[]),
            list(13, 14, &[("b1", "t1"), ("b2", "t2")]),
            put("t2", 20, 30, acked("b2")),
            list(31, 32, &[("b1", "t1"), ("b2", "t2"), ("b9", "nobody")]),
        ];
        let got = rules(&history, &listed(&[("b1", "t1"), ("b2", "t2")]));
        assert_eq!(
            got,
            [
                "visible_before_upload",
                "unknown_bundle_visible",
                "acknowledged_upload_missing",
            ]
        );
    }

    #[test]
    fn half_uploads_wrong_bytes_and_two_leaders_are_caught() {
        let read = Op::Read {
            bundle: "b1".into(),
            path: "a".into(),
        };
        let history = [
            put("t1", 0, 10, acked("b1")),
            entry(read, 11, 12, Outcome::Read { same_bytes: false }),
            put("t2", 20, 30, Outcome::Indeterminate { error: "x".into() }),
        ];
        let mut end = listed(&[("b1", "t1"), ("b2", "t2")]);
        end.not_whole.insert("b2".into(), "a: 3 of 10 bytes".into());
        end.leaders = vec![("m1".into(), 2), ("m2".into(), 3), ("m3".into(), 3)];
        assert_eq!(
            rules(&history, &end),
            ["wrong_bytes", "not_whole", "two_leaders_in_a_term"]
        );
    }

    #[test]
    fn many_listings_of_a_bundle_break_a_rule_once() {
        let gone_for_good = Outcome::Indeterminate { error: "x".into() };
        let mut history = vec![
            put("t1", 0, 10, acked("b1")),
            delete("b1", 100, 300, gone_for_good),
        ];
        for i in 0..50 {
            history.push(list(20 + i, 21 + i, &[("b1", "t1")]));
        }
        // Gone after the delete began, many times; then back.
        for i in 0..50 {
            history.push(list(110 + i, 111 + i, &[]));
        }
        history.push(list(400, 410, &[("b1", "t1")]));
        assert_eq!(rules(&history, &listed(&[])), ["deleted_bundle_returned"]);
        // The same absences before any delete: missing, reported once.
        let history: Vec<Entry> = [put("t2", 0, 10, acked("b2"))]
            .into_iter()
            .chain((0..50).map(|i| list(20 + i, 21 + i, &[])))
            .collect();
        assert_eq!(
            rules(&history, &listed(&[("b2", "t2")])),
            ["acknowledged_upload_missing"]
        );
    }
}
