//! `bank.scan`: a bank's keys a page at a time, with a cursor that stays valid while the bank changes.
//!
//! The cursor is a slot position. An entry keeps its slot for as long as it lives (a re-put replaces it in
//! place; only a delete, an expiry or an eviction frees the slot), so walking the slots in order, a page
//! at a time and with the bank's lock dropped in between, gives Redis's `SCAN` guarantee: a key present
//! from the first call of a scan to the last is returned exactly once, whatever else happens meanwhile; a
//! key added or removed meanwhile may or may not be (a key removed and added again may land in another
//! slot and be returned twice). Keys come in slot order, not insertion order.
//!
//! Each call does a bounded amount of work, [`VISITS_PER_KEY`] slots per key asked for, so a call is cheap
//! even when few keys match the prefix: it may return fewer keys than asked for, even none, with a cursor
//! that is not 0. Kept apart from `mod.rs` so that the listing is one piece that reads the store's
//! internals through the same calls as `Store::keys`.

use super::{Access, Store, SLICE};

/// Slots one call may visit per key it was asked for: enough that a call with a selective prefix still
/// makes progress, few enough that a call's cost stays proportional to its `count`.
pub const VISITS_PER_KEY: usize = 10;

impl Store {
    /// One page of `bank.scan`: the live keys of `bank` that start with `prefix`, walking slots from
    /// `cursor` (0 starts a scan), at most `count` keys (at least one is asked for) and, once their text
    /// passes `max_bytes`, no more (so a reply stays bounded whatever the key lengths). Returns the keys in
    /// slot order and the cursor to go on from, 0 when every slot has been visited. A bank that does not
    /// exist scans as empty. At most `count × VISITS_PER_KEY` slots are visited, [`SLICE`] at a time
    /// under the bank's lock, so ops on the bank keep flowing during a call. See the module docs for what
    /// the cursor guarantees.
    pub fn scan(
        &self,
        bank: &str,
        cursor: u64,
        prefix: &[u8],
        count: usize,
        max_bytes: usize,
        now: u64,
    ) -> (Vec<Box<[u8]>>, u64) {
        self.scan_sliced(bank, cursor, prefix, count, max_bytes, now, SLICE)
    }

    /// [`Store::scan`] with the slots visited per lock hold given, so tests can make slices small.
    #[allow(clippy::too_many_arguments)]
    fn scan_sliced(
        &self,
        bank: &str,
        cursor: u64,
        prefix: &[u8],
        count: usize,
        max_bytes: usize,
        now: u64,
        slice: usize,
    ) -> (Vec<Box<[u8]>>, u64) {
        let bank = match self.table(Access::Wait).ok().and_then(|t| t.get(bank).cloned()) {
            Some(bank) => bank,
            None => return (Vec::new(), 0),
        };
        let count = count.max(1);
        let mut budget = count.saturating_mul(VISITS_PER_KEY);
        // A cursor past every slot (or past what a `usize` holds) has nothing left to visit.
        let mut from = usize::try_from(cursor).unwrap_or(usize::MAX);
        let (mut keys, mut bytes) = (Vec::new(), 0usize);
        loop {
            let visit = budget.min(slice.max(1));
            let next = bank.lock_wait().scan_step(from, visit, prefix, now, self.gone(), |key| {
                keys.push(Box::<[u8]>::from(key));
                // A key's text in the reply: itself, its quotes and a separator (as `Store::keys` counts).
                bytes = bytes.saturating_add(key.len() + 4);
                keys.len() < count && bytes < max_bytes
            });
            let Some(at) = next else { return (keys, 0) };
            budget = budget.saturating_sub(at - from);
            from = at;
            if budget == 0 || keys.len() >= count || bytes >= max_bytes {
                // `at` is past `cursor`, so never 0: a page that is not the last always says where to go on.
                return (keys, at as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;
    use crate::store::{Keep, Ttl};

    fn put(store: &Store, bank: &str, key: &str, ttl: Ttl, now: u64) {
        store.put(bank, key.as_bytes(), b"1", 0, ttl, now, Access::Wait, Keep::Memory).unwrap();
    }

    fn text(keys: Vec<Box<[u8]>>) -> Vec<String> {
        keys.into_iter().map(|k| String::from_utf8(k.into_vec()).unwrap()).collect()
    }

    /// Every page of a scan, with the cursor after each.
    fn pages(store: &Store, bank: &str, prefix: &str, count: usize, now: u64) -> Vec<(Vec<String>, u64)> {
        let (mut out, mut cursor) = (Vec::new(), 0);
        loop {
            let (keys, next) = store.scan(bank, cursor, prefix.as_bytes(), count, usize::MAX, now);
            out.push((text(keys), next));
            if next == 0 {
                return out;
            }
            assert!(out.len() < 100_000, "the scan never ends");
            cursor = next;
        }
    }

    #[test]
    fn a_missing_bank_scans_as_empty() {
        let store = Store::new();
        assert_eq!(store.scan("ghost", 0, b"", 10, usize::MAX, 0), (Vec::new(), 0));
        assert_eq!(store.scan("ghost", 77, b"x", 10, usize::MAX, 0), (Vec::new(), 0));
        assert!(store.bank_names(usize::MAX).unwrap().is_empty(), "a scan creates no bank");
    }

    #[test]
    fn pages_cover_the_prefix_in_slot_order_and_skip_expired_entries() {
        let store = Store::new();
        for i in 0..50 {
            put(&store, "b", &format!("user:{i}"), Ttl::Forever, 0);
            put(&store, "b", &format!("item:{i}"), Ttl::Forever, 0);
        }
        put(&store, "b", "user:short", Ttl::Millis(10), 0);
        let all: Vec<String> = pages(&store, "b", "user:", 7, 100).into_iter().flat_map(|(k, _)| k).collect();
        let want: Vec<String> = (0..50).map(|i| format!("user:{i}")).collect();
        assert_eq!(all, want, "put order is slot order here; the expired key is not listed");
        // Before it expires, it is.
        let early: Vec<String> = pages(&store, "b", "user:", 7, 5).into_iter().flat_map(|(k, _)| k).collect();
        assert_eq!(early.len(), 51);
        // No prefix: everything, once.
        let every: BTreeSet<String> =
            pages(&store, "b", "", 1000, 100).into_iter().flat_map(|(k, _)| k).collect();
        assert_eq!(every.len(), 100);
    }

    #[test]
    fn a_call_is_bounded_by_count_and_by_its_visits() {
        let store = Store::new();
        for i in 0..1000 {
            put(&store, "b", &format!("k{i:04}"), Ttl::Forever, 0);
        }
        put(&store, "b", "needle", Ttl::Forever, 0);
        // Count caps the keys, and the cursor goes on right after the last one.
        let (keys, next) = store.scan("b", 0, b"", 5, usize::MAX, 0);
        assert_eq!((text(keys), next), ((0..5).map(|i| format!("k{i:04}")).collect(), 5));
        // A selective prefix: each call visits at most 10 × count slots, so it may answer nothing but a
        // cursor, and the needle (slot 1000) is found by call 101 with count 1.
        let pages = pages(&store, "b", "needle", 1, 0);
        assert_eq!(pages.len(), 101, "{:?}", &pages[..3]);
        assert!(pages[..100]
            .iter()
            .enumerate()
            .all(|(i, (k, next))| k.is_empty() && *next == 10 * (i as u64 + 1)));
        assert_eq!(pages[100], (vec!["needle".to_string()], 0));
        // A cursor past the end is done.
        assert_eq!(store.scan("b", 5000, b"", 5, usize::MAX, 0), (Vec::new(), 0));
        assert_eq!(store.scan("b", u64::MAX, b"", 5, usize::MAX, 0), (Vec::new(), 0));
    }

    #[test]
    fn max_bytes_ends_a_page_early_but_never_stalls_it() {
        let store = Store::new();
        for i in 0..10 {
            put(&store, "b", &format!("key-{i}"), Ttl::Forever, 0);
        }
        // Each key counts 5 bytes + 4: two keys pass 12 bytes.
        let (keys, next) = store.scan("b", 0, b"", 100, 12, 0);
        assert_eq!((keys.len(), next), (2, 2));
        // Even a budget smaller than one key returns that key, so a scan always moves on.
        let (keys, next) = store.scan("b", 2, b"", 100, 1, 0);
        assert_eq!((text(keys), next), (vec!["key-2".to_string()], 3));
    }

    #[derive(Debug, Clone)]
    enum Step {
        Put(u8),
        Delete(u8),
        Page(usize),
    }

    /// Keys from a small universe, so puts and deletes hit the same keys and slots are reused.
    fn key(n: u8) -> String {
        const PREFIXES: [&str; 4] = ["a", "ab", "b", ""];
        format!("{}{}", PREFIXES[usize::from(n) % 4], n / 4)
    }

    proptest! {
        /// Whatever puts and deletes run between the pages of a scan: every key present from its first
        /// call to its last and under the prefix is returned exactly once, no key outside the prefix is
        /// returned, and nothing that was never stored.
        #[test]
        fn keys_present_throughout_are_returned_exactly_once(
            initial in prop::collection::btree_set(0u8..64, 0..48),
            steps in prop::collection::vec(
                prop_oneof![
                    (0u8..64).prop_map(Step::Put),
                    (0u8..64).prop_map(Step::Delete),
                    (1usize..6).prop_map(Step::Page),
                ],
                0..200,
            ),
            prefix in prop::sample::select(vec!["", "a", "ab", "b", "a1", "zz"]),
            slice in 1usize..9,
        ) {
            let store = Store::new();
            let mut ever: BTreeSet<String> = BTreeSet::new();
            let mut present: BTreeSet<String> = BTreeSet::new();
            for &n in &initial {
                put(&store, "b", &key(n), Ttl::Forever, 0);
                ever.insert(key(n));
                present.insert(key(n));
            }
            // Keys present throughout: there at the scan's first call and never deleted after it (a re-put
            // keeps a key present). Until the first call, every present key is a candidate.
            let mut throughout: Option<BTreeSet<String>> = None;
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            let mut take = |keys: Vec<Box<[u8]>>| {
                for k in text(keys) {
                    *seen.entry(k).or_default() += 1;
                }
            };
            let (mut cursor, mut started) = (0u64, false);
            for step in &steps {
                match step {
                    Step::Put(n) => {
                        put(&store, "b", &key(*n), Ttl::Forever, 0);
                        ever.insert(key(*n));
                        present.insert(key(*n));
                    }
                    Step::Delete(n) => {
                        store.delete("b", key(*n).as_bytes(), 0, Access::Wait).unwrap();
                        present.remove(&key(*n));
                        if let Some(throughout) = &mut throughout {
                            throughout.remove(&key(*n));
                        }
                    }
                    Step::Page(count) => {
                        throughout.get_or_insert_with(|| present.clone());
                        let (keys, next) = store.scan_sliced("b", cursor, prefix.as_bytes(), *count, usize::MAX, 0, slice);
                        take(keys);
                        started = true;
                        cursor = next;
                        if next == 0 {
                            break;
                        }
                    }
                }
            }
            // Finish the scan with the bank left alone.
            while !started || cursor != 0 {
                started = true;
                throughout.get_or_insert_with(|| present.clone());
                let (keys, next) = store.scan_sliced("b", cursor, prefix.as_bytes(), 3, usize::MAX, 0, slice);
                take(keys);
                cursor = next;
            }
            for k in throughout.unwrap_or_default().iter().filter(|k| k.starts_with(prefix)) {
                prop_assert_eq!(seen.get(k).copied(), Some(1), "{} present throughout; seen {:?}", k, seen);
            }
            for k in seen.keys() {
                prop_assert!(k.starts_with(prefix), "{} is outside the prefix {:?}", k, prefix);
                prop_assert!(ever.contains(k), "{} was never stored", k);
            }
        }
    }
}
