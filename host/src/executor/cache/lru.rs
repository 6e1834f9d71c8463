//! A map bounded by total weight and by entry count that evicts the least recently used
//! entries first: the in-memory compile cache (weighed by compiled size) and the executor's
//! file-identity map (weighed by one) are both this.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A bounded map, least recently used evicted first. Every operation is O(log n).
pub struct Lru<K, V> {
    entries: HashMap<K, Slot<V>>,
    /// Keys by when they were last used: the first is the next to evict.
    order: BTreeMap<u64, K>,
    /// Counts uses; each use stamps its entry with the next value.
    clock: u64,
    weight: u64,
    max_weight: u64,
    max_entries: usize,
}

struct Slot<V> {
    value: V,
    weight: u64,
    used: u64,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    /// An empty map holding at most `max_weight` in total and `max_entries` entries.
    pub fn new(max_weight: u64, max_entries: usize) -> Lru<K, V> {
        Lru {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            weight: 0,
            max_weight,
            max_entries,
        }
    }

    /// The value under `key`, marked as just used.
    pub fn get(&mut self, key: &K) -> Option<&mut V> {
        let now = self.tick();
        let slot = self.entries.get_mut(key)?;
        self.order.remove(&slot.used);
        self.order.insert(now, key.clone());
        slot.used = now;
        Some(&mut slot.value)
    }

    /// Inserts `value` under `key` as just used (replacing any value there), then evicts the
    /// least recently used entries until both bounds hold again. Returns what left the map,
    /// for the caller to drop outside any lock: the evicted values, and `value` itself when
    /// it alone weighs more than the map may hold (it is then not kept).
    pub fn insert(&mut self, key: K, value: V, weight: u64) -> Vec<V> {
        let mut out = Vec::new();
        if let Some(old) = self.remove(&key) {
            out.push(old);
        }
        if weight > self.max_weight || self.max_entries == 0 {
            out.push(value);
            return out;
        }
        let used = self.tick();
        self.order.insert(used, key.clone());
        self.entries.insert(
            key,
            Slot {
                value,
                weight,
                used,
            },
        );
        self.weight += weight;
        while self.weight > self.max_weight || self.entries.len() > self.max_entries {
            // The entry just inserted is the most recent, so it is never the oldest here
            // unless it is alone, and alone it fits.
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some(slot) = self.entries.remove(&oldest) {
                self.weight -= slot.weight;
                out.push(slot.value);
            }
        }
        out
    }

    /// Removes and returns the value under `key`.
    pub fn remove(&mut self, key: &K) -> Option<V> {
        let slot = self.entries.remove(key)?;
        self.order.remove(&slot.used);
        self.weight -= slot.weight;
        Some(slot.value)
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The total weight of the entries.
    pub fn weight(&self) -> u64 {
        self.weight
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(lru: &Lru<u32, &'static str>) -> Vec<u32> {
        lru.order.values().copied().collect()
    }

    #[test]
    fn evicts_the_least_recently_used_first() {
        let mut lru = Lru::new(30, 10);
        assert!(lru.insert(1, "a", 10).is_empty());
        assert!(lru.insert(2, "b", 10).is_empty());
        assert!(lru.insert(3, "c", 10).is_empty());
        // A use makes 1 the most recent: 2 is now the oldest.
        assert_eq!(lru.get(&1).map(|v| *v), Some("a"));
        assert_eq!(lru.insert(4, "d", 10), vec!["b"]);
        assert_eq!(keys(&lru), vec![3, 1, 4]);
        assert!(lru.get(&2).is_none());
    }

    #[test]
    fn accounts_weight_through_replace_and_remove() {
        let mut lru = Lru::new(100, 10);
        lru.insert(1, "a", 40);
        lru.insert(2, "b", 30);
        assert_eq!(lru.weight(), 70);
        // Replacing returns the old value and counts only the new weight.
        assert_eq!(lru.insert(1, "A", 10), vec!["a"]);
        assert_eq!(lru.weight(), 40);
        assert_eq!(lru.remove(&2), Some("b"));
        assert_eq!((lru.weight(), lru.len()), (10, 1));
        // Several small entries go to make room for one big one.
        lru.insert(2, "b", 20);
        lru.insert(3, "c", 20);
        assert_eq!(lru.insert(4, "d", 90), vec!["A", "b", "c"]);
        assert_eq!((lru.weight(), lru.len()), (90, 1));
    }

    #[test]
    fn bounds_the_entry_count() {
        let mut lru = Lru::new(u64::MAX, 2);
        lru.insert(1, "a", 1);
        lru.insert(2, "b", 1);
        assert_eq!(lru.insert(3, "c", 1), vec!["a"]);
        assert_eq!(lru.len(), 2);
    }

    #[test]
    fn a_value_heavier_than_the_cap_is_handed_back_not_kept() {
        let mut lru = Lru::new(10, 10);
        lru.insert(1, "a", 5);
        assert_eq!(lru.insert(2, "huge", 11), vec!["huge"]);
        assert_eq!((lru.weight(), lru.len()), (5, 1));
        assert!(lru.get(&1).is_some());
        let mut none = Lru::new(10, 0);
        assert_eq!(none.insert(1, "a", 1), vec!["a"]);
        assert_eq!(none.len(), 0);
    }
}
