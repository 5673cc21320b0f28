//! A small bounded cache with least-recently-used eviction, measured in caller-given weights
//! (entries, or bytes). Lookups are O(1); an insert over the limit evicts the least recently used
//! entries by scanning, which happens at most once per eviction batch of a tenth of the cache.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

#[derive(Debug)]
struct Entry<V> {
    value: V,
    weight: usize,
    last_used: u64,
}

#[derive(Debug)]
struct Inner<K, V> {
    map: HashMap<K, Entry<V>>,
    total_weight: usize,
    clock: u64,
}

/// A cache whose entries' weights sum to at most `limit`.
#[derive(Debug)]
pub struct BoundedCache<K, V> {
    inner: Mutex<Inner<K, V>>,
    limit: usize,
}

impl<K: Hash + Eq + Clone, V: Clone> BoundedCache<K, V> {
    pub fn new(limit: usize) -> Self {
        BoundedCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                total_weight: 0,
                clock: 0,
            }),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K, V>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &K) -> Option<V> {
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        inner.map.get_mut(key).map(|e| {
            e.last_used = now;
            e.value.clone()
        })
    }

    /// Inserts (or replaces) an entry. An entry heavier than the whole cache is not kept (and
    /// an older entry under its key is dropped).
    pub fn insert(&self, key: K, value: V, weight: usize) {
        if weight > self.limit {
            self.remove(&key);
            return;
        }
        let mut inner = self.lock();
        inner.clock += 1;
        let now = inner.clock;
        if let Some(old) = inner.map.insert(
            key,
            Entry {
                value,
                weight,
                last_used: now,
            },
        ) {
            inner.total_weight -= old.weight;
        }
        inner.total_weight += weight;
        if inner.total_weight > self.limit {
            // Evict the least recently used entries down to 90% of the limit.
            let target = self.limit - self.limit / 10;
            let mut by_age: Vec<(u64, K)> = inner
                .map
                .iter()
                .map(|(k, e)| (e.last_used, k.clone()))
                .collect();
            by_age.sort_unstable_by_key(|(t, _)| *t);
            for (_, k) in by_age {
                if inner.total_weight <= target {
                    break;
                }
                if let Some(e) = inner.map.remove(&k) {
                    inner.total_weight -= e.weight;
                }
            }
        }
        assert!(inner.total_weight <= self.limit, "cache over its limit");
    }

    pub fn remove(&self, key: &K) {
        let mut inner = self.lock();
        if let Some(e) = inner.map.remove(key) {
            inner.total_weight -= e.weight;
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_and_stays_within_limit() {
        let cache = BoundedCache::new(10);
        for i in 0..10 {
            cache.insert(i, i * 10, 1);
        }
        // Touch 0 so it is the most recently used.
        assert_eq!(cache.get(&0), Some(0));
        cache.insert(100, 1000, 1);
        assert!(cache.len() <= 10);
        assert_eq!(cache.get(&0), Some(0), "recently used entry kept");
        assert_eq!(cache.get(&1), None, "oldest entry evicted");
        assert_eq!(cache.get(&100), Some(1000));
    }

    #[test]
    fn weights_count_and_heavy_entries_are_not_kept() {
        let cache = BoundedCache::new(100);
        cache.insert("a", 1, 60);
        cache.insert("b", 2, 60);
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.get(&"b"), Some(2));
        cache.insert("huge", 3, 101);
        assert_eq!(cache.get(&"huge"), None);
        cache.insert("b", 4, 10);
        assert_eq!(cache.get(&"b"), Some(4));
        cache.remove(&"b");
        assert!(cache.is_empty());
    }
}
