//! One bank: an independent key space with lifetimes.
//!
//! Entries live in a [`Slab`] and the hash index maps a key's hash to the entry's slab slot (4 bytes per
//! bucket), so a key and its value share one allocation and the index stays small however many keys a bank
//! holds. Slab slots are stable, which gives the background expiry sweep a cursor it can resume after
//! dropping the lock. Insertion order (for `bank.keys`) comes from a sequence number kept across re-puts.

use std::hash::BuildHasher;

use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::{DefaultHashBuilder, HashTable};
use slab::Slab;

/// Deadline of an entry that never expires.
const NEVER: u64 = u64::MAX;

/// How long a `put` keeps its entry, decided from the request's `lifetime` in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// No lifetime (absent or 0): the entry stays until deleted.
    Forever,
    /// Milliseconds from now; touch restarts it.
    Millis(u64),
    /// A negative lifetime: the entry is dead on arrival.
    Expired,
}

impl Ttl {
    /// Converts a lifetime in seconds. Fractions of a millisecond round up so a tiny positive lifetime
    /// still expires rather than reading as "forever"; huge values saturate instead of overflowing.
    pub fn from_secs(secs: Option<f64>) -> Ttl {
        match secs {
            None => Ttl::Forever,
            Some(0.0) => Ttl::Forever,
            Some(s) if s < 0.0 || s.is_nan() => Ttl::Expired,
            // `as` saturates: 1e300 s becomes u64::MAX ms, which `saturating_add` keeps at "far away".
            Some(s) => Ttl::Millis(((s * 1000.0).ceil() as u64).max(1)),
        }
    }
}

/// Result of a read that may have found an expired entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// The key is live.
    Hit(T),
    /// The key is absent.
    Miss,
    /// The key had expired; it has now been removed.
    Expired,
}

impl<T> Lookup<T> {
    /// The hit's value, if any.
    pub fn hit(self) -> Option<T> {
        match self {
            Lookup::Hit(t) => Some(t),
            Lookup::Miss | Lookup::Expired => None,
        }
    }
}

/// What a sweep step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Slots looked at.
    pub visited: usize,
    /// Expired entries removed.
    pub removed: usize,
}

struct Slot {
    /// The key's bytes followed by the value's bytes, in one allocation.
    data: Box<[u8]>,
    key_len: u32,
    /// Unix milliseconds; `NEVER` for none.
    deadline: u64,
    /// The lifetime `touch` restarts (0 when there is none).
    lifetime: u64,
    /// Insertion order, kept when the key is re-put.
    seq: u64,
}

impl Slot {
    fn key(&self) -> &[u8] {
        &self.data[..self.key_len as usize]
    }

    fn value(&self) -> &[u8] {
        &self.data[self.key_len as usize..]
    }

    fn expired(&self, now: u64) -> bool {
        self.deadline <= now
    }
}

/// The contents of one bank. Callers hold the bank's lock for every call.
#[derive(Default)]
pub struct BankMap {
    index: HashTable<u32>,
    slots: Slab<Slot>,
    hasher: DefaultHashBuilder,
    next_seq: u64,
    /// Entries that carry a deadline, so the sweep can skip banks without any.
    expiring: usize,
    /// Bytes of keys and values held.
    bytes: usize,
    sweep_cursor: usize,
}

impl BankMap {
    /// An empty bank.
    pub fn new() -> Self {
        Self::default()
    }

    /// Live and not-yet-swept entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the bank holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&i| self.slots[i as usize].key() == key).map(|&i| i as usize)
    }

    /// Finds a live entry, removing it if it has expired.
    fn live(&mut self, key: &[u8], now: u64) -> Lookup<usize> {
        match self.find(key) {
            None => Lookup::Miss,
            Some(i) if self.slots[i].expired(now) => {
                self.remove_slot(i);
                Lookup::Expired
            }
            Some(i) => Lookup::Hit(i),
        }
    }

    /// Stores `value` under `key`, replacing the whole entry (lifetime included) but keeping the key's
    /// place in insertion order. Returns whether an earlier live entry was replaced.
    pub fn put(&mut self, key: &[u8], value: &[u8], ttl: Ttl, now: u64) -> bool {
        let (deadline, lifetime) = match ttl {
            Ttl::Forever => (NEVER, 0),
            Ttl::Millis(ms) => (now.saturating_add(ms), ms),
            Ttl::Expired => return self.remove_at(key, now),
        };
        let mut data = Vec::with_capacity(key.len() + value.len());
        data.extend_from_slice(key);
        data.extend_from_slice(value);
        let data = data.into_boxed_slice();
        let hash = self.hasher.hash_one(key);
        let BankMap { index, slots, hasher, .. } = self;
        let entry = index.entry(
            hash,
            |&i| slots[i as usize].key() == key,
            |&i| hasher.hash_one(slots[i as usize].key()),
        );
        match entry {
            TableEntry::Occupied(found) => {
                let slot = &mut slots[*found.get() as usize];
                let was_live = !slot.expired(now);
                let old_len = slot.data.len();
                let had_deadline = slot.deadline != NEVER;
                slot.data = data;
                slot.deadline = deadline;
                slot.lifetime = lifetime;
                if !was_live {
                    // A dead entry's place in the order died with it.
                    slot.seq = self.next_seq;
                    self.next_seq += 1;
                }
                self.bytes = self.bytes - old_len + key.len() + value.len();
                self.expiring = self.expiring - usize::from(had_deadline) + usize::from(deadline != NEVER);
                was_live
            }
            TableEntry::Vacant(vacant) => {
                let seq = self.next_seq;
                self.next_seq += 1;
                let i = slots.insert(Slot { data, key_len: key.len() as u32, deadline, lifetime, seq });
                vacant.insert(i as u32);
                self.bytes += key.len() + value.len();
                self.expiring += usize::from(deadline != NEVER);
                false
            }
        }
    }

    /// Calls `f` with a live entry's value.
    pub fn get<R>(&mut self, key: &[u8], now: u64, f: impl FnOnce(&[u8]) -> R) -> Lookup<R> {
        match self.live(key, now) {
            Lookup::Hit(i) => Lookup::Hit(f(self.slots[i].value())),
            Lookup::Miss => Lookup::Miss,
            Lookup::Expired => Lookup::Expired,
        }
    }

    /// Restarts a live entry's original lifetime from `now`, then calls `f` with its value.
    pub fn touch<R>(&mut self, key: &[u8], now: u64, f: impl FnOnce(&[u8]) -> R) -> Lookup<R> {
        match self.live(key, now) {
            Lookup::Hit(i) => {
                let slot = &mut self.slots[i];
                if slot.lifetime != 0 {
                    slot.deadline = now.saturating_add(slot.lifetime);
                }
                Lookup::Hit(f(slot.value()))
            }
            Lookup::Miss => Lookup::Miss,
            Lookup::Expired => Lookup::Expired,
        }
    }

    /// Replaces a live entry's value with what `f` computes from it, keeping its deadline. When `f`
    /// fails the entry is left as it was.
    pub fn update<T, E>(
        &mut self,
        key: &[u8],
        now: u64,
        f: impl FnOnce(&[u8]) -> Result<(Vec<u8>, T), E>,
    ) -> Lookup<Result<T, E>> {
        let i = match self.live(key, now) {
            Lookup::Hit(i) => i,
            Lookup::Miss => return Lookup::Miss,
            Lookup::Expired => return Lookup::Expired,
        };
        let slot = &mut self.slots[i];
        match f(slot.value()) {
            Ok((value, out)) => {
                let key_len = slot.key_len as usize;
                let mut data = Vec::with_capacity(key_len + value.len());
                data.extend_from_slice(slot.key());
                data.extend_from_slice(&value);
                self.bytes = self.bytes - slot.data.len() + data.len();
                slot.data = data.into_boxed_slice();
                Lookup::Hit(Ok(out))
            }
            Err(e) => Lookup::Hit(Err(e)),
        }
    }

    /// Removes a live key.
    pub fn delete(&mut self, key: &[u8], now: u64) -> Lookup<()> {
        match self.live(key, now) {
            Lookup::Hit(i) => {
                self.remove_slot(i);
                Lookup::Hit(())
            }
            Lookup::Miss => Lookup::Miss,
            Lookup::Expired => Lookup::Expired,
        }
    }

    /// Removes a key whatever its state; true if it was live at `now`.
    fn remove_at(&mut self, key: &[u8], now: u64) -> bool {
        match self.find(key) {
            Some(i) => {
                let live = !self.slots[i].expired(now);
                self.remove_slot(i);
                live
            }
            None => false,
        }
    }

    fn remove_slot(&mut self, i: usize) {
        let slot = self.slots.remove(i);
        let hash = self.hasher.hash_one(slot.key());
        if let Ok(found) = self.index.find_entry(hash, |&j| j as usize == i) {
            found.remove();
        }
        self.bytes -= slot.data.len();
        self.expiring -= usize::from(slot.deadline != NEVER);
    }

    /// Calls `f` with every live key in insertion order. Expired entries are skipped (the sweep or the
    /// next access removes them).
    pub fn keys(&self, now: u64, mut f: impl FnMut(&[u8])) {
        let mut order: Vec<(u64, usize)> =
            self.slots.iter().filter(|(_, slot)| !slot.expired(now)).map(|(i, slot)| (slot.seq, i)).collect();
        order.sort_unstable();
        for (_, i) in order {
            f(self.slots[i].key());
        }
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        *self = BankMap { next_seq: self.next_seq, ..BankMap::default() };
    }

    /// One bounded step of the background expiry sweep: visits up to `max_visit` slots from where the last
    /// step stopped and removes the expired entries among them. A bank without entries that expire costs
    /// nothing.
    pub fn sweep_step(&mut self, now: u64, max_visit: usize) -> Swept {
        let mut swept = Swept::default();
        if self.expiring == 0 {
            return swept;
        }
        let end = self.slots.capacity();
        while swept.visited < max_visit {
            if self.sweep_cursor >= end {
                self.sweep_cursor = 0;
            }
            let i = self.sweep_cursor;
            self.sweep_cursor += 1;
            swept.visited += 1;
            if self.slots.get(i).is_some_and(|slot| slot.expired(now)) {
                self.remove_slot(i);
                swept.removed += 1;
            }
        }
        swept
    }

    /// Slots a full sweep cycle visits.
    pub fn sweep_span(&self) -> usize {
        self.slots.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(bank: &mut BankMap, key: &str, now: u64) -> Option<String> {
        bank.get(key.as_bytes(), now, |v| String::from_utf8(v.to_vec()).unwrap()).hit()
    }

    fn keys(bank: &BankMap, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        bank.keys(now, |k| out.push(String::from_utf8(k.to_vec()).unwrap()));
        out
    }

    #[test]
    fn put_get_delete() {
        let mut b = BankMap::new();
        assert!(!b.put(b"k", b"\"v\"", Ttl::Forever, 0));
        assert_eq!(get(&mut b, "k", 0).as_deref(), Some("\"v\""));
        assert!(b.put(b"k", b"2", Ttl::Forever, 0));
        assert_eq!(get(&mut b, "k", 0).as_deref(), Some("2"));
        assert_eq!(b.bytes(), 2);
        assert_eq!(b.delete(b"k", 0), Lookup::Hit(()));
        assert_eq!(b.delete(b"k", 0), Lookup::Miss);
        assert_eq!(get(&mut b, "k", 0), None);
        assert_eq!(b.bytes(), 0);
        assert!(b.is_empty());
    }

    #[test]
    fn lifetimes_expire_and_touch_restarts_them() {
        let mut b = BankMap::new();
        b.put(b"k", b"1", Ttl::Millis(2000), 10_000);
        assert!(get(&mut b, "k", 11_999).is_some());
        assert!(b.touch(b"k", 11_500, |_| ()).hit().is_some());
        assert!(get(&mut b, "k", 13_000).is_some());
        assert_eq!(b.get(b"k", 13_500, |_| ()), Lookup::Expired);
        assert_eq!(b.get(b"k", 13_500, |_| ()), Lookup::Miss);
        assert!(b.is_empty());
    }

    #[test]
    fn re_put_without_lifetime_is_permanent() {
        let mut b = BankMap::new();
        b.put(b"k", b"1", Ttl::Millis(10), 0);
        b.put(b"k", b"2", Ttl::Forever, 5);
        assert!(get(&mut b, "k", u64::MAX - 1).is_some());
    }

    #[test]
    fn negative_lifetime_removes() {
        let mut b = BankMap::new();
        b.put(b"k", b"1", Ttl::Forever, 0);
        b.put(b"k", b"2", Ttl::from_secs(Some(-1.0)), 0);
        assert_eq!(get(&mut b, "k", 0), None);
    }

    #[test]
    fn ttl_conversion_is_safe() {
        assert_eq!(Ttl::from_secs(None), Ttl::Forever);
        assert_eq!(Ttl::from_secs(Some(0.0)), Ttl::Forever);
        assert_eq!(Ttl::from_secs(Some(-0.5)), Ttl::Expired);
        assert_eq!(Ttl::from_secs(Some(0.0000001)), Ttl::Millis(1));
        assert_eq!(Ttl::from_secs(Some(1.5)), Ttl::Millis(1500));
        assert_eq!(Ttl::from_secs(Some(1e300)), Ttl::Millis(u64::MAX));
        assert_eq!(Ttl::from_secs(Some(f64::INFINITY)), Ttl::Millis(u64::MAX));
        let mut b = BankMap::new();
        b.put(b"k", b"1", Ttl::from_secs(Some(1e300)), 1_700_000_000_000);
        assert!(b.touch(b"k", 1_700_000_000_001, |_| ()).hit().is_some());
        assert!(get(&mut b, "k", u64::MAX - 1).is_some());
    }

    #[test]
    fn keys_keep_insertion_order_and_skip_expired() {
        let mut b = BankMap::new();
        b.put(b"a", b"1", Ttl::Forever, 0);
        b.put(b"b", b"1", Ttl::Millis(5), 0);
        b.put(b"c", b"1", Ttl::Forever, 0);
        b.put(b"a", b"2", Ttl::Forever, 0);
        assert_eq!(keys(&b, 1), ["a", "b", "c"]);
        assert_eq!(keys(&b, 10), ["a", "c"]);
        b.delete(b"a", 10);
        b.put(b"a", b"3", Ttl::Forever, 10);
        assert_eq!(keys(&b, 10), ["c", "a"]);
    }

    #[test]
    fn update_keeps_deadline_and_leaves_value_on_error() {
        let mut b = BankMap::new();
        b.put(b"k", b"5", Ttl::Millis(100), 0);
        let r = b.update(b"k", 10, |v| {
            assert_eq!(v, b"5");
            Ok::<_, ()>((b"6.0".to_vec(), ()))
        });
        assert_eq!(r, Lookup::Hit(Ok(())));
        assert_eq!(get(&mut b, "k", 50).as_deref(), Some("6.0"));
        assert_eq!(b.update(b"k", 50, |_| Err::<(Vec<u8>, ()), _>("no")), Lookup::Hit(Err("no")));
        assert_eq!(get(&mut b, "k", 50).as_deref(), Some("6.0"));
        assert_eq!(b.get(b"k", 100, |_| ()), Lookup::Expired);
        assert_eq!(b.update(b"missing", 0, |_| Ok::<_, ()>((vec![], ()))), Lookup::Miss);
    }

    #[test]
    fn sweep_removes_expired_entries_in_bounded_steps() {
        let mut b = BankMap::new();
        for i in 0..1000u32 {
            let ttl = if i % 2 == 0 { Ttl::Millis(10) } else { Ttl::Forever };
            b.put(&i.to_be_bytes(), b"v", ttl, 0);
        }
        let step = b.sweep_step(5, 64);
        assert_eq!(step, Swept { visited: 64, removed: 0 });
        let mut removed = 0;
        for _ in 0..b.sweep_span().div_ceil(64) {
            let s = b.sweep_step(20, 64);
            assert_eq!(s.visited, 64);
            removed += s.removed;
        }
        assert_eq!(removed, 500);
        assert_eq!(b.len(), 500);
        assert_eq!(b.sweep_step(20, 64), Swept::default());
    }

    #[test]
    fn clear_empties() {
        let mut b = BankMap::new();
        b.put(b"a", b"1", Ttl::Millis(5), 0);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.bytes(), 0);
        assert_eq!(b.sweep_step(100, 10), Swept::default());
    }
}
