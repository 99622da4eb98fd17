//! One bank: an independent key space with lifetimes, whose values live in RAM, on disk, or both.
//!
//! Entries live in `Slots` (a slab in memory mapped from the OS) and the hash index maps a key's hash to
//! the entry's slot (4 bytes per bucket), so the index stays small however many keys a bank holds. An
//! entry's key and its in-RAM value share one allocation. Slots are stable, which gives the background
//! sweep and the CLOCK eviction hand cursors they can resume after dropping the lock. Insertion order (for
//! `bank.keys`) comes from a sequence number kept across re-puts.

use std::hash::BuildHasher;

use super::memory::{alloc_size, Figures};
use super::os_pages::OsPages;
use super::record::{u32_at, u64_at};
use super::slots::Slots;
use super::volume::Location;
use hashbrown::hash_table::Entry as TableEntry;
use hashbrown::{DefaultHashBuilder, HashTable};

/// Deadline of an entry that never expires.
pub const NEVER: u64 = u64::MAX;

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
            None | Some(0.0) => Ttl::Forever,
            Some(s) if s < 0.0 || s.is_nan() => Ttl::Expired,
            // `as` saturates: 1e300 s becomes u64::MAX ms, which `saturating_add` keeps at "far away".
            Some(s) => Ttl::Millis(((s * 1000.0).ceil() as u64).max(1)),
        }
    }

    /// The deadline and the lifetime to keep, as of `now`.
    pub fn deadline(self, now: u64) -> (u64, u64) {
        match self {
            Ttl::Forever => (NEVER, 0),
            Ttl::Millis(ms) => (now.saturating_add(ms), ms),
            Ttl::Expired => (now, 0),
        }
    }
}

/// Result of a lookup that may have found an expired entry.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<T> {
    /// The key is live.
    Hit(T),
    /// The key is absent.
    Miss,
    /// The key had expired (or its disk copy was gone); it has now been removed.
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

/// What an entry holds, as a lookup sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View<'a> {
    /// The value, when it is held in RAM.
    pub value: Option<&'a [u8]>,
    /// Where its record lies on disk, when there is a disk store.
    pub location: Option<Location>,
    /// Value flags ([`super::record::FLAG_BYTES`]).
    pub flags: u8,
    /// The entry's place in the bank's insertion order.
    pub seq: u64,
    /// When the entry expires, Unix ms; `None` for an entry without a lifetime. Read from the slot the
    /// lookup already holds, so that a front can say how long a value stays fresh at no extra cost.
    pub deadline: Option<u64>,
}

/// What a sweep or eviction step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Slots looked at.
    pub visited: usize,
    /// Entries removed (expired, or their disk copy gone).
    pub removed: usize,
}

/// Slot flag: the value is held in RAM (after the key in `data`).
const IN_RAM: u8 = 0x80;
/// Slot flag: read since the CLOCK hand last passed (second chance).
const REFERENCED: u8 = 0x40;
/// Slot flag: `data` starts with the lifetime `touch` restarts (only a non-zero one is kept).
const HAS_LIFETIME: u8 = 0x20;
/// Slot flag: `data` holds where the record is on disk, after the lifetime if there is one.
const HAS_LOCATION: u8 = 0x10;
/// Slot flags that belong to the value (stored on disk too).
const VALUE_FLAGS: u8 = 0x0f;

/// Bytes of the lifetime in `data`: milliseconds, u64.
const LIFETIME_LEN: usize = 8;
/// Bytes of the location in `data`: volume, offset, len and generation (u32 each), then the store clock
/// of the last counted disk read (u32) and the disk reads counted toward admission to RAM (u8).
const LOCATION_LEN: usize = 21;

/// Bits of `Slot::deadline_flags` that hold the deadline; all ones stand for `NEVER`. Deadlines from 2^56
/// ms on (the year 2.28 million) are kept as none.
const DEADLINE_BITS: u64 = (1 << 56) - 1;
/// Bits of `Slot::seq_key_len` that hold the insertion order: as many as records carry.
const SEQ_BITS: u64 = (1 << 48) - 1;

/// One entry, in 32 bytes plus one allocation.
///
/// A million entries cost a megabyte per byte of slot, so only what every entry needs is inline, packed:
/// the allocation, the deadline, the flags, the insertion order and the key's length. What only some
/// entries have goes in front of the key in `data`, there only when a flag says so: the lifetime `touch`
/// restarts (most entries have none) and, with a disk store, the record's location with the read counters
/// of admission. Every put builds `data` anew, so the layout never changes in place.
struct Slot {
    /// `[lifetime][location, last read, reads][key][value, when held in RAM]`.
    data: Box<[u8]>,
    /// The deadline in Unix milliseconds (bits 0..56; all ones for `NEVER`), then the flags (bits 56..64).
    deadline_flags: u64,
    /// The place in insertion order (bits 0..48), kept when the key is re-put, then the key's length.
    seq_key_len: u64,
}

/// Lays out the `data` of an entry and returns it with the flags that say what it holds.
fn entry_data(
    lifetime: u64,
    location: Option<Location>,
    key: &[u8],
    value: Option<&[u8]>,
) -> (Box<[u8]>, u8) {
    let mut layout = 0;
    let header =
        if lifetime != 0 { LIFETIME_LEN } else { 0 } + if location.is_some() { LOCATION_LEN } else { 0 };
    let mut data = Vec::with_capacity(header + key.len() + value.map_or(0, <[u8]>::len));
    if lifetime != 0 {
        layout |= HAS_LIFETIME;
        data.extend_from_slice(&lifetime.to_le_bytes());
    }
    if let Some(at) = location {
        layout |= HAS_LOCATION;
        // The read counters start at zero: a new value earns its place in RAM anew.
        for n in [at.volume, at.offset, at.len, at.generation, 0] {
            data.extend_from_slice(&n.to_le_bytes());
        }
        data.push(0);
    }
    data.extend_from_slice(key);
    if let Some(value) = value {
        layout |= IN_RAM;
        data.extend_from_slice(value);
    }
    (data.into_boxed_slice(), layout)
}

impl Slot {
    /// An entry with no deadline; `data` and `flags` as [`entry_data`] made them.
    fn new(data: Box<[u8]>, flags: u8, key_len: usize, seq: u64) -> Slot {
        // Keys are at most u16::MAX bytes (the config's limit, as records store them).
        let seq_key_len = ((key_len as u16 as u64) << 48) | (seq & SEQ_BITS);
        Slot { data, deadline_flags: (u64::from(flags) << 56) | DEADLINE_BITS, seq_key_len }
    }

    fn flags(&self) -> u8 {
        (self.deadline_flags >> 56) as u8
    }

    fn set_flags(&mut self, flags: u8) {
        self.deadline_flags = (self.deadline_flags & DEADLINE_BITS) | (u64::from(flags) << 56);
    }

    fn deadline(&self) -> u64 {
        match self.deadline_flags & DEADLINE_BITS {
            DEADLINE_BITS => NEVER,
            deadline => deadline,
        }
    }

    /// Sets the deadline, keeping `expiring` (the bank's count of entries that have one) in step.
    fn set_deadline(&mut self, deadline: u64, expiring: &mut usize) {
        *expiring -= usize::from(self.deadline() != NEVER);
        self.deadline_flags = (self.deadline_flags & !DEADLINE_BITS) | deadline.min(DEADLINE_BITS);
        *expiring += usize::from(self.deadline() != NEVER);
    }

    fn seq(&self) -> u64 {
        self.seq_key_len & SEQ_BITS
    }

    fn set_seq(&mut self, seq: u64) {
        self.seq_key_len = (self.seq_key_len & !SEQ_BITS) | (seq & SEQ_BITS);
    }

    fn key_len(&self) -> usize {
        (self.seq_key_len >> 48) as usize
    }

    /// Where the location is in `data`.
    fn location_at(&self) -> usize {
        if self.flags() & HAS_LIFETIME != 0 {
            LIFETIME_LEN
        } else {
            0
        }
    }

    /// Where the key is in `data`.
    fn key_at(&self) -> usize {
        self.location_at() + if self.flags() & HAS_LOCATION != 0 { LOCATION_LEN } else { 0 }
    }

    fn key(&self) -> &[u8] {
        let at = self.key_at();
        &self.data[at..at + self.key_len()]
    }

    fn ram_value(&self) -> Option<&[u8]> {
        (self.flags() & IN_RAM != 0).then(|| &self.data[self.key_at() + self.key_len()..])
    }

    fn ram_bytes(&self) -> usize {
        self.ram_value().map_or(0, <[u8]>::len)
    }

    /// The lifetime `touch` restarts, 0 for none.
    fn lifetime(&self) -> u64 {
        if self.flags() & HAS_LIFETIME != 0 {
            u64_at(&self.data, 0)
        } else {
            0
        }
    }

    fn location(&self) -> Option<Location> {
        (self.flags() & HAS_LOCATION != 0).then(|| {
            let (d, at) = (&self.data, self.location_at());
            Location {
                volume: u32_at(d, at),
                offset: u32_at(d, at + 4),
                len: u32_at(d, at + 8),
                generation: u32_at(d, at + 12),
            }
        })
    }

    /// The disk reads counted toward admission and the store clock of the last one (none without a
    /// location).
    fn reads(&self) -> (u8, u32) {
        if self.flags() & HAS_LOCATION == 0 {
            return (0, 0);
        }
        let at = self.location_at();
        (self.data[at + 20], u32_at(&self.data, at + 16))
    }

    fn set_reads(&mut self, reads: u8, last_read: u32) {
        if self.flags() & HAS_LOCATION != 0 {
            let at = self.location_at();
            self.data[at + 16..at + 20].copy_from_slice(&last_read.to_le_bytes());
            self.data[at + 20] = reads;
        }
    }

    /// Lays `data` out anew around the same key, keeping the value flags and the CLOCK bit; the read
    /// counters start over.
    fn relayout(&mut self, lifetime: u64, location: Option<Location>, value: Option<&[u8]>) {
        let (data, layout) = entry_data(lifetime, location, self.key(), value);
        self.data = data;
        self.set_flags((self.flags() & (VALUE_FLAGS | REFERENCED)) | layout);
    }

    /// Replaces the lifetime `touch` restarts.
    fn set_lifetime(&mut self, lifetime: u64) {
        if self.flags() & HAS_LIFETIME != 0 && lifetime != 0 {
            self.data[..LIFETIME_LEN].copy_from_slice(&lifetime.to_le_bytes());
        } else if lifetime != self.lifetime() {
            self.relayout(lifetime, self.location(), self.ram_value().map(<[u8]>::to_vec).as_deref());
        }
    }

    fn view(&self) -> View<'_> {
        View {
            value: self.ram_value(),
            location: self.location(),
            flags: self.flags() & VALUE_FLAGS,
            seq: self.seq(),
            deadline: Some(self.deadline()).filter(|&d| d != NEVER),
        }
    }

    fn expired(&self, now: u64) -> bool {
        self.deadline() <= now
    }
}

/// A new value for an entry: what to keep in RAM, and where its record went on disk.
#[derive(Debug, Clone, Copy)]
pub struct NewValue<'a> {
    /// The value's bytes.
    pub value: &'a [u8],
    /// Keep a copy in RAM (always, without a disk store).
    pub in_ram: bool,
    /// The record written for it, if any.
    pub location: Option<Location>,
    /// Value flags.
    pub flags: u8,
}

/// The contents of one bank. Callers hold the bank's lock for every call.
#[derive(Default)]
pub struct BankMap {
    /// Slot numbers by key hash; big tables are mapped straight from the OS ([`OsPages`]).
    index: HashTable<u32, OsPages>,
    slots: Slots<Slot>,
    hasher: DefaultHashBuilder,
    next_seq: u64,
    /// Entries that carry a deadline, so the sweep can skip banks without any.
    expiring: usize,
    /// Bytes of values held in RAM.
    ram_bytes: usize,
    /// Bytes of keys and values (wherever they are).
    bytes: usize,
    sweep_cursor: usize,
    clock_hand: usize,
    /// Length of the bank's name, which every record of it carries: with it a value's length is known from
    /// its record's, and need not be kept per entry.
    name_len: usize,
    /// Log position of the last record written for this bank while its lock was held (delete, touch,
    /// incr, reset), so a put written outside the lock can tell whether it has been overtaken on disk.
    logged: u64,
    /// Bytes the entries' allocations take, as the allocator hands them out.
    entry_bytes: usize,
    /// Entries added and removed so far (see [`BankMap::changes`]).
    changes: u64,
}

impl BankMap {
    /// An empty bank.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty bank named with `name_len` bytes.
    pub fn named(name_len: usize) -> Self {
        BankMap { name_len, ..BankMap::default() }
    }

    /// Live and not-yet-swept entries.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the bank holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Bytes of keys and values held, in RAM or on disk.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of values held in RAM.
    pub fn ram_bytes(&self) -> usize {
        self.ram_bytes
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash_one(key);
        self.index.find(hash, |&i| self.slots[i as usize].key() == key).map(|&i| i as usize)
    }

    /// Finds a live entry, removing it if it has expired or `gone` says its disk copy is gone.
    fn live(&mut self, key: &[u8], now: u64, gone: &impl Fn(Location) -> bool) -> Lookup<usize> {
        match self.find(key) {
            None => Lookup::Miss,
            Some(i) if self.slots[i].expired(now) || self.slots[i].location().is_some_and(gone) => {
                self.remove_slot(i);
                Lookup::Expired
            }
            Some(i) => Lookup::Hit(i),
        }
    }

    /// Stores a value under `key`, replacing the whole entry (lifetime included) but keeping the key's
    /// place in insertion order. Returns whether an earlier live entry was replaced.
    pub fn put(&mut self, key: &[u8], new: NewValue<'_>, ttl: Ttl, now: u64) -> bool {
        if ttl == Ttl::Expired {
            return self.remove_key(key, now);
        }
        let (deadline, lifetime) = ttl.deadline(now);
        self.set(key, new, deadline, lifetime, now, None).0
    }

    /// The insertion-order number for a put of `key` whose record is about to be written outside the lock:
    /// the live entry's own, or a fresh one taken now so that two new keys never share one.
    pub fn reserve_seq(&mut self, key: &[u8], now: u64) -> u64 {
        match self.find(key) {
            Some(i) if !self.slots[i].expired(now) => self.slots[i].seq(),
            _ => take_seq(&mut self.next_seq),
        }
    }

    /// Notes that a record at `at` was written for this bank under its lock.
    pub fn note_logged(&mut self, at: Location) {
        self.logged = self.logged.max(at.log_position());
    }

    /// True when a record written under the lock lies after `at` in the log: a put logged at `at` outside
    /// the lock must then be logged again, or a restart would replay the two in the other order.
    pub fn logged_since(&self, at: Location) -> bool {
        self.logged > at.log_position()
    }

    /// Installs a put whose record was written (at `new.location`) outside the lock, with the insertion
    /// order `reserve_seq` gave it. A put of the same key that came later in the log and got here first
    /// wins, as it will when the log is replayed: returns false and leaves the entry alone then.
    pub fn install(&mut self, key: &[u8], new: NewValue<'_>, ttl: Ttl, now: u64, seq: u64) -> bool {
        if let (Some(i), Some(at)) = (self.find(key), new.location) {
            if self.slots[i].location().is_some_and(|held| held.log_position() > at.log_position()) {
                return false;
            }
        }
        if ttl == Ttl::Expired {
            self.remove_key(key, now);
            return true;
        }
        let (deadline, lifetime) = ttl.deadline(now);
        self.set(key, new, deadline, lifetime, now, Some(seq));
        true
    }

    /// Installs an entry; `seq`: the order a new (or dead) entry takes, `None` takes the next. Returns
    /// whether an earlier live entry was replaced, and the entry's slot (start-up, which sets millions of
    /// entries in a row, need not look each one up again).
    fn set(
        &mut self,
        key: &[u8],
        new: NewValue<'_>,
        deadline: u64,
        lifetime: u64,
        now: u64,
        seq: Option<u64>,
    ) -> (bool, usize) {
        let value = new.in_ram.then_some(new.value);
        let value_len = value.map_or(0, <[u8]>::len);
        let (data, layout) = entry_data(lifetime, new.location, key, value);
        let flags = (new.flags & VALUE_FLAGS) | layout;
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
                self.ram_bytes = self.ram_bytes - slot.ram_bytes() + value_len;
                // `bytes` is a statistic: saturate rather than trust every record length to agree.
                self.bytes = self.bytes.saturating_sub(value_len_of(slot, self.name_len)) + new.value.len();
                self.entry_bytes = self.entry_bytes - alloc_size(slot.data.len()) + alloc_size(data.len());
                slot.data = data;
                slot.set_flags(flags);
                slot.set_deadline(deadline, &mut self.expiring);
                if !was_live {
                    // A dead entry's place in the order died with it.
                    slot.set_seq(seq.unwrap_or_else(|| take_seq(&mut self.next_seq)));
                }
                (was_live, *found.get() as usize)
            }
            TableEntry::Vacant(vacant) => {
                let seq = seq.unwrap_or_else(|| take_seq(&mut self.next_seq));
                self.entry_bytes += alloc_size(data.len());
                self.changes += 1;
                let mut slot = Slot::new(data, flags, key.len(), seq);
                slot.set_deadline(deadline, &mut self.expiring);
                let i = slots.insert(slot);
                vacant.insert(i as u32);
                self.ram_bytes += value_len;
                self.bytes += key.len() + new.value.len();
                (false, i)
            }
        }
    }

    /// Restores an entry from its on-disk record at start-up (the value stays on disk).
    pub fn restore(&mut self, key: &[u8], location: Location, value_len: usize, meta: &super::record::Meta) {
        let new = NewValue { value: &[], in_ram: false, location: Some(location), flags: meta.flags };
        // `now` = 0: nothing restored counts as expired here; the caller skips entries already dead.
        let (_, i) = self.set(key, new, meta.deadline, meta.lifetime, 0, None);
        self.bytes += value_len;
        self.slots[i].set_seq(meta.seq);
        // Saturating: the number comes from the files, and the last one there is must not overflow. Keys
        // numbered alike list in either order.
        self.next_seq = self.next_seq.max(meta.seq.saturating_add(1));
    }

    /// Makes room for `additional` more entries at once. Start-up knows how many keys a bank's records
    /// hold; growing a table of millions of keys a step at a time would rehash every key about once more,
    /// each rehash reading every key back from its entry.
    pub fn reserve(&mut self, additional: usize) {
        let BankMap { index, slots, hasher, .. } = self;
        index.reserve(additional, |&i| hasher.hash_one(slots[i as usize].key()));
        slots.reserve(additional);
    }

    /// Gives back the index that [`BankMap::reserve`] made for keys start-up did not keep (puts later
    /// overwritten or deleted), when a table half the size would hold every key.
    pub fn trim(&mut self) {
        let BankMap { index, slots, hasher, .. } = self;
        if index.len() < index.capacity() / 2 {
            index.shrink_to(index.len(), |&i| hasher.hash_one(slots[i as usize].key()));
        }
    }

    /// Keys the index holds without growing.
    #[cfg(test)]
    pub fn index_capacity(&self) -> usize {
        self.index.capacity()
    }

    /// Applies a touch record at start-up.
    pub fn restore_touch(&mut self, key: &[u8], deadline: u64, lifetime: u64) {
        if let Some(i) = self.find(key) {
            let slot = &mut self.slots[i];
            slot.set_deadline(deadline, &mut self.expiring);
            let before = alloc_size(slot.data.len());
            slot.set_lifetime(lifetime);
            self.entry_bytes = self.entry_bytes - before + alloc_size(slot.data.len());
        }
    }

    /// Calls `f` with a live entry. A read from RAM marks the entry as recently used.
    pub fn get<R>(
        &mut self,
        key: &[u8],
        now: u64,
        gone: impl Fn(Location) -> bool,
        f: impl FnOnce(View<'_>) -> R,
    ) -> Lookup<R> {
        match self.live(key, now, &gone) {
            Lookup::Hit(i) => {
                let slot = &mut self.slots[i];
                slot.set_flags(slot.flags() | REFERENCED);
                Lookup::Hit(f(slot.view()))
            }
            Lookup::Miss => Lookup::Miss,
            Lookup::Expired => Lookup::Expired,
        }
    }

    /// Restarts a live entry's original lifetime from `now`, then calls `f` with the entry and its new
    /// deadline and lifetime.
    pub fn touch<R, E>(
        &mut self,
        key: &[u8],
        now: u64,
        gone: impl Fn(Location) -> bool,
        f: impl FnOnce(View<'_>, u64, u64) -> Result<R, E>,
    ) -> Lookup<Result<R, E>> {
        match self.live(key, now, &gone) {
            Lookup::Hit(i) => {
                let slot = &mut self.slots[i];
                let lifetime = slot.lifetime();
                let deadline = if lifetime != 0 { now.saturating_add(lifetime) } else { slot.deadline() };
                slot.set_flags(slot.flags() | REFERENCED);
                // The new deadline holds only once `f` (which logs it) has succeeded: a touch answered with
                // an error changes nothing.
                // `f` sees the deadline the touch sets (what a `getouch` answers holds from now on).
                let view = View { deadline: (lifetime != 0).then_some(deadline), ..slot.view() };
                let result = f(view, deadline, lifetime);
                if result.is_ok() && lifetime != 0 {
                    slot.set_deadline(deadline, &mut self.expiring);
                }
                Lookup::Hit(result)
            }
            Lookup::Miss => Lookup::Miss,
            Lookup::Expired => Lookup::Expired,
        }
    }

    /// Replaces a live entry's value with what `f` makes of it, keeping its deadline. `f` gets the entry,
    /// its deadline and lifetime; when it fails the entry is left as it was.
    pub fn update<T, E>(
        &mut self,
        key: &[u8],
        now: u64,
        gone: impl Fn(Location) -> bool,
        f: impl FnOnce(View<'_>, u64, u64) -> Result<(Vec<u8>, NewValueMeta, T), E>,
    ) -> Lookup<Result<T, E>> {
        let i = match self.live(key, now, &gone) {
            Lookup::Hit(i) => i,
            Lookup::Miss => return Lookup::Miss,
            Lookup::Expired => return Lookup::Expired,
        };
        let slot = &self.slots[i];
        let (deadline, lifetime) = (slot.deadline(), slot.lifetime());
        match f(slot.view(), deadline, lifetime) {
            Ok((value, meta, out)) => {
                let new = NewValue {
                    value: &value,
                    in_ram: meta.in_ram,
                    location: meta.location,
                    flags: meta.flags,
                };
                if let Some(at) = meta.location {
                    self.note_logged(at);
                }
                self.set(key, new, deadline, lifetime, now, None);
                Lookup::Hit(Ok(out))
            }
            Err(e) => Lookup::Hit(Err(e)),
        }
    }

    /// Counts a disk read of the entry whose record is at `at`; once `count` reads come with no gap longer
    /// than `window` ms between them (CacheFS's sliding idle timeout), keeps `value` in RAM and returns the
    /// RAM bytes added. An entry that has changed since the read was started is left alone.
    pub fn note_disk_read(
        &mut self,
        key: &[u8],
        at: Location,
        value: &[u8],
        now: u32,
        count: u8,
        window: u32,
    ) -> usize {
        let Some(i) = self.find(key) else { return 0 };
        let slot = &mut self.slots[i];
        if slot.location() != Some(at) || slot.flags() & IN_RAM != 0 {
            return 0;
        }
        let (mut reads, last_read) = slot.reads();
        if now.wrapping_sub(last_read) > window {
            reads = 0;
        }
        reads = reads.saturating_add(1);
        if reads < count {
            slot.set_reads(reads, now);
            return 0;
        }
        // The counters start over in the new layout.
        let before = alloc_size(slot.data.len());
        slot.relayout(slot.lifetime(), Some(at), Some(value));
        self.entry_bytes = self.entry_bytes - before + alloc_size(slot.data.len());
        self.ram_bytes += value.len();
        value.len()
    }

    /// Removes the entry of `key` if its record is still the one at `at` (its disk copy proved unreadable).
    pub fn forget(&mut self, key: &[u8], at: Location) -> bool {
        match self.find(key) {
            Some(i) if self.slots[i].location() == Some(at) => {
                self.remove_slot(i);
                true
            }
            _ => false,
        }
    }

    /// Removes a live key.
    pub fn delete(&mut self, key: &[u8], now: u64, gone: impl Fn(Location) -> bool) -> Lookup<()> {
        match self.live(key, now, &gone) {
            Lookup::Hit(i) => {
                self.remove_slot(i);
                Lookup::Hit(())
            }
            Lookup::Miss => Lookup::Miss,
            Lookup::Expired => Lookup::Expired,
        }
    }

    /// Removes a key whatever its state; true if it was live at `now`.
    pub fn remove_key(&mut self, key: &[u8], now: u64) -> bool {
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
        self.ram_bytes -= slot.ram_bytes();
        self.bytes = self.bytes.saturating_sub(slot.key_len() + value_len_of(&slot, self.name_len));
        self.expiring -= usize::from(slot.deadline() != NEVER);
        self.entry_bytes -= alloc_size(slot.data.len());
        self.changes += 1;
    }

    /// Calls `f` with every live key in insertion order. Expired entries and entries whose disk copy is
    /// gone are skipped (the sweep or the next access removes them).
    pub fn keys(&self, now: u64, gone: impl Fn(Location) -> bool, f: impl FnMut(&[u8])) {
        self.live_keys(now, gone).into_iter().for_each(f);
    }

    /// Every live key, in insertion order (see [`BankMap::keys`]).
    pub fn live_keys(&self, now: u64, gone: impl Fn(Location) -> bool) -> Vec<&[u8]> {
        let mut order: Vec<(u64, usize)> = self
            .slots
            .iter()
            .filter(|(_, slot)| !slot.expired(now) && !slot.location().is_some_and(&gone))
            .map(|(i, slot)| (slot.seq(), i))
            .collect();
        order.sort_unstable();
        order.into_iter().map(|(_, i)| self.slots[i].key()).collect()
    }

    /// Removes every entry whose record lies before log position `floor` (or that has no record), and
    /// returns how many: at start-up, after a gap in the log, their values cannot be proven newest.
    pub fn drop_written_before(&mut self, floor: u64) -> usize {
        let doomed: Vec<usize> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.location().is_none_or(|at| at.log_position() < floor))
            .map(|(i, _)| i)
            .collect();
        for &i in &doomed {
            self.remove_slot(i);
        }
        doomed.len()
    }

    /// Removes every entry, and hands them back so the caller can free them after dropping the lock
    /// (freeing millions of allocations takes a while).
    pub fn take_all(&mut self) -> BankMap {
        let empty = BankMap {
            next_seq: self.next_seq,
            name_len: self.name_len,
            changes: self.changes + 1,
            ..BankMap::default()
        };
        std::mem::replace(self, empty)
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        drop(self.take_all());
    }

    /// Copies, from slot `from` on, the live keys of at most `max_visit` slots into `out`, each with its
    /// place in insertion order; returns the slot to go on from, or `None` when every slot has been
    /// visited. Keys are copied so that the lock can be dropped between steps (see `Store::keys`).
    pub fn keys_step(
        &self,
        from: usize,
        max_visit: usize,
        now: u64,
        gone: impl Fn(Location) -> bool,
        out: &mut KeyList,
    ) -> Option<usize> {
        let end = self.slots.span().min(from.saturating_add(max_visit));
        for i in from..end {
            if let Some(slot) = self.slots.get(i) {
                if !slot.expired(now) && !slot.location().is_some_and(&gone) {
                    out.push(slot.seq(), slot.key());
                }
            }
        }
        (end < self.slots.span()).then_some(end)
    }

    /// Entries added and removed since the bank was made: a listing walked in slices compares it before
    /// and after to know whether the bank changed in between.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// One bounded step of `bank.scan`: from slot `from` on, visits at most `max_visit` slots and hands
    /// `take` each live key that starts with `prefix`, in slot order, until `take` says it has enough
    /// (returns false). Returns the slot to go on from, or `None` when every slot has been visited.
    ///
    /// A slot position is a cursor that stays valid while the bank changes: an entry keeps its slot for its
    /// whole life (a re-put replaces it in place), so a key that lives from the first step to the last is
    /// handed over exactly once, however the steps are spread out. Expired entries and entries whose disk
    /// copy is gone are skipped, as `bank.keys` skips them.
    pub fn scan_step(
        &self,
        from: usize,
        max_visit: usize,
        prefix: &[u8],
        now: u64,
        gone: impl Fn(Location) -> bool,
        mut take: impl FnMut(&[u8]) -> bool,
    ) -> Option<usize> {
        let span = self.slots.span();
        let end = span.min(from.saturating_add(max_visit));
        let mut at = from;
        while at < end {
            let slot = self.slots.get(at);
            at += 1;
            if let Some(slot) = slot {
                let key = slot.key();
                if key.starts_with(prefix)
                    && !slot.expired(now)
                    && !slot.location().is_some_and(&gone)
                    && !take(key)
                {
                    break;
                }
            }
        }
        (at < span).then_some(at)
    }

    /// This bank's figures for the store's tallies: what it costs in memory (entries' allocations, the
    /// touched part of the slot array, the hash index), its values in RAM, its entries and stored bytes.
    pub fn figures(&self) -> Figures {
        let index = self.slots.touched_bytes() + self.index.allocation_size();
        Figures {
            memory: self.entry_bytes + index,
            ram: self.ram_bytes,
            index,
            keys: self.slots.len(),
            stored: self.bytes,
        }
    }

    /// Entries with a deadline (the sweep's work).
    pub fn expiring(&self) -> usize {
        self.expiring
    }

    /// One bounded step of the background sweep: visits up to `max_visit` slots from where the last step
    /// stopped and removes entries that have expired or whose disk copy is gone.
    pub fn sweep_step(&mut self, now: u64, max_visit: usize, gone: impl Fn(Location) -> bool) -> Swept {
        let mut swept = Swept::default();
        if self.slots.is_empty() {
            return swept;
        }
        let end = self.slots.span();
        while swept.visited < max_visit {
            if self.sweep_cursor >= end {
                self.sweep_cursor = 0;
            }
            let i = self.sweep_cursor;
            self.sweep_cursor += 1;
            swept.visited += 1;
            let dead = self.slots.get(i).is_some_and(|s| s.expired(now) || s.location().is_some_and(&gone));
            if dead {
                self.remove_slot(i);
                swept.removed += 1;
            }
        }
        swept
    }

    /// Slots a full sweep cycle visits.
    pub fn sweep_span(&self) -> usize {
        self.slots.span()
    }

    /// One step of CLOCK eviction: moves the hand over up to `max_visit` slots, giving entries read since
    /// its last pass a second chance and evicting the others until `want` bytes of memory are freed. A step
    /// stops at the last slot ([`BankMap::clock_done`]) rather than go round again, so that a small bank's
    /// entries are not visited twice in one step; the next step starts from the first slot.
    /// [`Evict::RamCopies`] drops only the RAM copy of an entry that has a disk copy, and removes an entry
    /// that has none; [`Evict::Entries`] removes entries whole. Returns the memory freed and the entries
    /// evicted.
    pub fn evict_step(&mut self, want: usize, max_visit: usize, mode: Evict) -> (usize, usize) {
        let (mut freed, mut evicted) = (0, 0);
        let nothing = match mode {
            Evict::RamCopies => self.ram_bytes == 0,
            Evict::Entries => self.slots.is_empty(),
        };
        if nothing {
            return (0, 0);
        }
        let end = self.slots.span();
        if self.clock_hand >= end {
            self.clock_hand = 0;
        }
        for _ in 0..max_visit {
            if freed >= want || self.clock_hand >= end {
                break;
            }
            let i = self.clock_hand;
            self.clock_hand += 1;
            let Some(slot) = self.slots.get_mut(i) else { continue };
            if mode == Evict::RamCopies && slot.flags() & IN_RAM == 0 {
                continue;
            }
            if slot.flags() & REFERENCED != 0 {
                slot.set_flags(slot.flags() & !REFERENCED);
                continue;
            }
            let before = self.entry_bytes;
            match (mode, slot.location()) {
                (Evict::RamCopies, Some(at)) => {
                    let (old, bytes) = (alloc_size(slot.data.len()), slot.ram_bytes());
                    slot.relayout(slot.lifetime(), Some(at), None);
                    self.entry_bytes = self.entry_bytes - old + alloc_size(slot.data.len());
                    self.ram_bytes -= bytes;
                }
                _ => self.remove_slot(i),
            }
            freed += before - self.entry_bytes;
            evicted += 1;
        }
        (freed, evicted)
    }

    /// True when the CLOCK hand has gone past the last slot: one turn over this bank is done, and the
    /// next [`BankMap::evict_step`] starts from the first slot again.
    pub fn clock_done(&self) -> bool {
        self.clock_hand >= self.slots.span()
    }
}

/// Keys copied out of a bank, with their places in its insertion order: one buffer for all the names, so
/// that a listing of millions of keys costs a few allocations, not one per key.
#[derive(Debug, Default)]
pub struct KeyList {
    bytes: Vec<u8>,
    /// Per key: its insertion order, where its name starts in `bytes`, and its length.
    items: Vec<(u64, usize, usize)>,
}

impl KeyList {
    fn push(&mut self, seq: u64, key: &[u8]) {
        self.items.push((seq, self.bytes.len(), key.len()));
        self.bytes.extend_from_slice(key);
    }

    /// Keys listed.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes of the names.
    pub fn name_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Puts the keys in insertion order. With `dedup`, a key seen twice (removed and put again while the
    /// list was being made) is kept once, at its newest place.
    pub fn sort(&mut self, dedup: bool) {
        if dedup {
            let bytes = &self.bytes;
            let name = |&(_, at, len): &(u64, usize, usize)| &bytes[at..at + len];
            self.items.sort_unstable_by(|a, b| name(a).cmp(name(b)).then(b.0.cmp(&a.0)));
            self.items.dedup_by(|later, first| name(later) == name(first));
        }
        self.items.sort_unstable_by_key(|&(seq, _, _)| seq);
    }

    /// The names, in the list's order.
    pub fn names(&self) -> Vec<&[u8]> {
        self.items.iter().map(|&(_, at, len)| &self.bytes[at..at + len]).collect()
    }
}

/// What eviction drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evict {
    /// RAM copies of values that are also on disk (and entries that exist only in RAM).
    RamCopies,
    /// Whole entries: with a disk store, the key is forgotten (a cache may forget).
    Entries,
}

/// Takes the next insertion-order number.
fn take_seq(next: &mut u64) -> u64 {
    let seq = *next;
    // Saturating: after the last number (only a damaged or forged record brings it), keys share it.
    *next = seq.saturating_add(1);
    seq
}

/// A value's length, wherever it is: in RAM, or inferred from its record (header, bank, key, value).
fn value_len_of(slot: &Slot, name_len: usize) -> usize {
    match (slot.ram_value(), slot.location()) {
        (Some(v), _) => v.len(),
        (None, Some(at)) => {
            (at.len as usize).saturating_sub(super::record::HEADER_LEN + name_len + slot.key_len())
        }
        (None, None) => 0,
    }
}

/// What the new value of an [`BankMap::update`] is, besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct NewValueMeta {
    /// Keep it in RAM.
    pub in_ram: bool,
    /// Where its record went.
    pub location: Option<Location>,
    /// Value flags.
    pub flags: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_GONE: fn(Location) -> bool = |_| false;

    fn ram(value: &[u8]) -> NewValue<'_> {
        NewValue { value, in_ram: true, location: None, flags: 0 }
    }

    fn get(bank: &mut BankMap, key: &str, now: u64) -> Option<String> {
        bank.get(key.as_bytes(), now, NOT_GONE, |v| String::from_utf8(v.value.unwrap().to_vec()).unwrap())
            .hit()
    }

    fn keys(bank: &BankMap, now: u64) -> Vec<String> {
        let mut out = Vec::new();
        bank.keys(now, NOT_GONE, |k| out.push(String::from_utf8(k.to_vec()).unwrap()));
        out
    }

    /// A record's insertion-order number comes from the files: the last one there is (damage, or a
    /// forged record) restores, and the bank goes on taking keys, never a panic. Found by the `volume`
    /// fuzz target: `seq + 1` overflowed at start-up.
    #[test]
    fn the_last_insertion_order_number_restores_and_keys_go_on() {
        let mut b = BankMap::new();
        let meta = super::super::record::Meta {
            kind: super::super::record::Kind::Put,
            flags: 0,
            deadline: super::super::record::NO_DEADLINE,
            lifetime: 0,
            seq: u64::MAX,
        };
        let at = Location { volume: 0, offset: 0, len: 70, generation: 1 };
        b.restore(b"old", at, 3, &meta);
        b.put(b"new", ram(b"1"), Ttl::Forever, 0);
        b.put(b"newer", ram(b"2"), Ttl::Forever, 0);
        let mut listed = keys(&b, 0);
        listed.sort();
        assert_eq!(listed, ["new", "newer", "old"]);
        assert_eq!(get(&mut b, "newer", 0).as_deref(), Some("2"));
    }

    #[test]
    fn put_get_delete() {
        let mut b = BankMap::new();
        assert!(!b.put(b"k", ram(b"\"v\""), Ttl::Forever, 0));
        assert_eq!(get(&mut b, "k", 0).as_deref(), Some("\"v\""));
        assert!(b.put(b"k", ram(b"2"), Ttl::Forever, 0));
        assert_eq!(get(&mut b, "k", 0).as_deref(), Some("2"));
        assert_eq!((b.bytes(), b.ram_bytes()), (2, 1));
        assert_eq!(b.delete(b"k", 0, NOT_GONE), Lookup::Hit(()));
        assert_eq!(b.delete(b"k", 0, NOT_GONE), Lookup::Miss);
        assert_eq!(get(&mut b, "k", 0), None);
        assert_eq!((b.bytes(), b.ram_bytes()), (0, 0));
        assert!(b.is_empty());
    }

    #[test]
    fn lifetimes_expire_and_touch_restarts_them() {
        let mut b = BankMap::new();
        b.put(b"k", ram(b"1"), Ttl::Millis(2000), 10_000);
        assert!(get(&mut b, "k", 11_999).is_some());
        assert!(b.touch(b"k", 11_500, NOT_GONE, |_, _, _| Ok::<_, ()>(())).hit().is_some());
        assert!(get(&mut b, "k", 13_000).is_some());
        assert_eq!(b.get(b"k", 13_500, NOT_GONE, |_| ()), Lookup::Expired);
        assert_eq!(b.get(b"k", 13_500, NOT_GONE, |_| ()), Lookup::Miss);
        assert!(b.is_empty());
    }

    #[test]
    fn re_put_without_lifetime_is_permanent() {
        let mut b = BankMap::new();
        b.put(b"k", ram(b"1"), Ttl::Millis(10), 0);
        b.put(b"k", ram(b"2"), Ttl::Forever, 5);
        assert!(get(&mut b, "k", u64::MAX - 1).is_some());
    }

    #[test]
    fn negative_lifetime_removes() {
        let mut b = BankMap::new();
        b.put(b"k", ram(b"1"), Ttl::Forever, 0);
        b.put(b"k", ram(b"2"), Ttl::from_secs(Some(-1.0)), 0);
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
        b.put(b"k", ram(b"1"), Ttl::from_secs(Some(1e300)), 1_700_000_000_000);
        assert!(b.touch(b"k", 1_700_000_000_001, NOT_GONE, |_, _, _| Ok::<_, ()>(())).hit().is_some());
        assert!(get(&mut b, "k", u64::MAX - 1).is_some());
    }

    #[test]
    fn keys_keep_insertion_order_and_skip_expired() {
        let mut b = BankMap::new();
        b.put(b"a", ram(b"1"), Ttl::Forever, 0);
        b.put(b"b", ram(b"1"), Ttl::Millis(5), 0);
        b.put(b"c", ram(b"1"), Ttl::Forever, 0);
        b.put(b"a", ram(b"2"), Ttl::Forever, 0);
        assert_eq!(keys(&b, 1), ["a", "b", "c"]);
        assert_eq!(keys(&b, 10), ["a", "c"]);
        b.delete(b"a", 10, NOT_GONE);
        b.put(b"a", ram(b"3"), Ttl::Forever, 10);
        assert_eq!(keys(&b, 10), ["c", "a"]);
    }

    #[test]
    fn update_keeps_deadline_and_leaves_value_on_error() {
        let mut b = BankMap::new();
        b.put(b"k", ram(b"5"), Ttl::Millis(100), 0);
        let meta = NewValueMeta { in_ram: true, location: None, flags: 0 };
        let r = b.update(b"k", 10, NOT_GONE, |v, deadline, _| {
            assert_eq!(v.value, Some(&b"5"[..]));
            assert_eq!(deadline, 100);
            Ok::<_, ()>((b"6.0".to_vec(), meta, ()))
        });
        assert_eq!(r, Lookup::Hit(Ok(())));
        assert_eq!(get(&mut b, "k", 50).as_deref(), Some("6.0"));
        assert_eq!(
            b.update(b"k", 50, NOT_GONE, |_, _, _| Err::<(Vec<u8>, NewValueMeta, ()), _>("no")),
            Lookup::Hit(Err("no"))
        );
        assert_eq!(get(&mut b, "k", 50).as_deref(), Some("6.0"));
        assert_eq!(b.get(b"k", 100, NOT_GONE, |_| ()), Lookup::Expired);
    }

    #[test]
    fn sweep_removes_expired_entries_in_bounded_steps() {
        let mut b = BankMap::new();
        for i in 0..1000u32 {
            let ttl = if i % 2 == 0 { Ttl::Millis(10) } else { Ttl::Forever };
            b.put(&i.to_be_bytes(), ram(b"v"), ttl, 0);
        }
        assert_eq!(b.sweep_step(5, 64, NOT_GONE), Swept { visited: 64, removed: 0 });
        let mut removed = 0;
        for _ in 0..b.sweep_span().div_ceil(64) {
            let s = b.sweep_step(20, 64, NOT_GONE);
            assert_eq!(s.visited, 64);
            removed += s.removed;
        }
        assert_eq!(removed, 500);
        assert_eq!(b.len(), 500);
    }

    fn at(volume: u32, generation: u32) -> Location {
        Location { volume, offset: 0, len: 100, generation }
    }

    #[test]
    fn entries_whose_disk_copy_is_gone_vanish() {
        let mut b = BankMap::new();
        let disk = |loc| NewValue { value: b"v", in_ram: false, location: Some(loc), flags: 0 };
        b.put(b"old", disk(at(0, 1)), Ttl::Forever, 0);
        b.put(b"new", disk(at(1, 2)), Ttl::Forever, 0);
        let gone = |l: Location| l.generation == 1;
        let mut listed = Vec::new();
        b.keys(0, gone, |k| listed.push(k.to_vec()));
        assert_eq!(listed, [b"new".to_vec()]);
        assert_eq!(b.get(b"old", 0, gone, |_| ()), Lookup::Expired);
        assert_eq!(b.sweep_step(0, 10, |l: Location| l.generation == 2).removed, 1);
        assert!(b.is_empty());
    }

    #[test]
    fn admission_after_n_disk_reads_within_the_window() {
        let mut b = BankMap::new();
        let loc = at(0, 1);
        b.put(
            b"k",
            NewValue { value: b"value", in_ram: false, location: Some(loc), flags: 0 },
            Ttl::Forever,
            0,
        );
        assert_eq!(b.note_disk_read(b"k", loc, b"value", 100, 3, 60), 0);
        assert_eq!(
            b.note_disk_read(b"k", loc, b"value", 200, 3, 60),
            0,
            "a gap over the window: starts over"
        );
        assert_eq!(b.note_disk_read(b"k", loc, b"value", 250, 3, 60), 0);
        assert_eq!(b.note_disk_read(b"k", loc, b"value", 300, 3, 60), 5, "gaps within the window: admitted");
        assert_eq!(
            b.get(b"k", 0, NOT_GONE, |v| v.value.map(<[u8]>::to_vec)),
            Lookup::Hit(Some(b"value".to_vec()))
        );
        assert_eq!(b.ram_bytes(), 5);
        // A read of an older record of the key counts for nothing.
        assert_eq!(b.note_disk_read(b"k", at(0, 0), b"x", 203, 1, 60), 0);
    }

    /// A step stops at the last slot: in a bank smaller than the step, an entry read since the hand last
    /// passed loses its mark and stays (before, the step went round again at once and evicted it).
    #[test]
    fn a_step_does_not_go_round_a_bank_twice() {
        let mut b = BankMap::new();
        b.put(b"a", ram(b"0123456789"), Ttl::Forever, 0);
        get(&mut b, "a", 0);
        assert_eq!(b.evict_step(usize::MAX, 16, Evict::Entries), (0, 0));
        assert!(b.clock_done());
        assert_eq!(keys(&b, 0), ["a"]);
        // The next step starts from the first slot again, and this time takes it.
        assert_eq!(b.evict_step(usize::MAX, 16, Evict::Entries).1, 1);
        assert!(b.is_empty());
    }

    #[test]
    fn clock_gives_a_second_chance_then_evicts() {
        let mut b = BankMap::new();
        for k in [b"a", b"b", b"c"] {
            b.put(k, ram(b"0123456789"), Ttl::Forever, 0);
        }
        get(&mut b, "a", 0);
        // a was read: b goes first, then c; a survives one pass.
        // Each entry's allocation holds its key and value: 11 bytes, in a 16-byte block.
        assert_eq!(b.evict_step(10, 16, Evict::RamCopies), (16, 1));
        assert_eq!(keys(&b, 0), ["a", "c"]);
        assert_eq!(b.evict_step(10, 16, Evict::RamCopies), (16, 1));
        assert_eq!(keys(&b, 0), ["a"]);
        // With a disk copy only the RAM copy goes.
        let loc = at(0, 1);
        b.put(b"d", NewValue { value: b"xyz", in_ram: true, location: Some(loc), flags: 0 }, Ttl::Forever, 0);
        b.evict_step(100, 16, Evict::RamCopies);
        assert_eq!(b.ram_bytes(), 0);
        assert_eq!(keys(&b, 0), ["d"]);
        assert_eq!(
            b.get(b"d", 0, NOT_GONE, |v| (v.value.is_none(), v.location)),
            Lookup::Hit((true, Some(loc)))
        );
    }

    #[test]
    fn a_slot_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        // A vacant cell's free-list link fits in the pointer's niche: no tag byte on top.
        assert_eq!(super::super::slots::cell_size::<Slot>(), 32);
    }

    #[test]
    fn the_optional_parts_of_an_entry_round_trip() {
        let loc = Location { volume: 3, offset: 0x0102_0304, len: 77, generation: 9 };
        for lifetime in [0, 1, 60_000, u64::MAX] {
            for location in [None, Some(loc)] {
                for value in [None, Some(&b"value"[..]), Some(&b""[..])] {
                    let (data, layout) = entry_data(lifetime, location, b"key", value);
                    let mut slot = Slot::new(data, layout | 0x05, 3, 42);
                    let what = format!("lifetime {lifetime}, {location:?}, {value:?}");
                    assert_eq!(slot.key(), b"key", "{what}");
                    assert_eq!(
                        (slot.lifetime(), slot.location(), slot.ram_value()),
                        (lifetime, location, value)
                    );
                    assert_eq!((slot.flags() & VALUE_FLAGS, slot.seq(), slot.deadline()), (0x05, 42, NEVER));
                    assert_eq!(slot.reads(), (0, 0));
                    slot.set_reads(2, 1234);
                    assert_eq!(slot.reads(), if location.is_some() { (2, 1234) } else { (0, 0) }, "{what}");
                    // Changing the lifetime moves the rest of `data` but loses nothing.
                    for new_lifetime in [0, 5, lifetime] {
                        slot.set_lifetime(new_lifetime);
                        assert_eq!(slot.lifetime(), new_lifetime, "{what}");
                        assert_eq!(
                            (slot.key(), slot.location(), slot.ram_value()),
                            (&b"key"[..], location, value)
                        );
                        assert_eq!(slot.flags() & VALUE_FLAGS, 0x05);
                    }
                }
            }
        }
    }

    #[test]
    fn packed_fields_keep_to_their_bits() {
        let (data, layout) = entry_data(0, None, b"k", Some(b"v"));
        let mut slot = Slot::new(data, layout | VALUE_FLAGS, 1, SEQ_BITS);
        let mut expiring = 0;
        slot.set_deadline(1_700_000_000_000, &mut expiring);
        assert_eq!(
            (slot.deadline(), expiring, slot.seq(), slot.key_len()),
            (1_700_000_000_000, 1, SEQ_BITS, 1)
        );
        // Every flag but the two that say what `data` holds.
        let all = IN_RAM | REFERENCED | VALUE_FLAGS;
        slot.set_flags(all);
        slot.set_seq(7);
        assert_eq!(
            (slot.deadline(), slot.flags(), slot.seq(), slot.key()),
            (1_700_000_000_000, all, 7, &b"k"[..])
        );
        // Deadlines too far away to hold are none.
        slot.set_deadline(1 << 60, &mut expiring);
        assert_eq!((slot.deadline(), expiring, slot.flags()), (NEVER, 0, all));
        slot.set_deadline(DEADLINE_BITS - 1, &mut expiring);
        assert_eq!((slot.deadline(), expiring), (DEADLINE_BITS - 1, 1));
        slot.set_deadline(NEVER, &mut expiring);
        assert_eq!((slot.deadline(), expiring), (NEVER, 0));
    }

    #[test]
    fn a_lookup_sees_the_deadline_and_a_touch_the_new_one() {
        let mut b = BankMap::new();
        b.put(b"t", ram(b"1"), Ttl::Millis(1000), 0);
        b.put(b"f", ram(b"2"), Ttl::Forever, 0);
        assert_eq!(b.get(b"t", 10, NOT_GONE, |v| v.deadline), Lookup::Hit(Some(1000)));
        assert_eq!(b.get(b"f", 10, NOT_GONE, |v| v.deadline), Lookup::Hit(None));
        let touched = b.touch(b"t", 500, NOT_GONE, |v, _, _| Ok::<_, ()>(v.deadline));
        assert_eq!(touched, Lookup::Hit(Ok(Some(1500))));
        assert_eq!(b.get(b"t", 600, NOT_GONE, |v| v.deadline), Lookup::Hit(Some(1500)));
        let touched = b.touch(b"f", 500, NOT_GONE, |v, _, _| Ok::<_, ()>(v.deadline));
        assert_eq!(touched, Lookup::Hit(Ok(None)));
    }

    #[test]
    fn a_lifetime_survives_incr_and_touch_and_a_re_put_replaces_it() {
        let mut b = BankMap::new();
        b.put(b"k", ram(b"1"), Ttl::Millis(1000), 0);
        let meta = NewValueMeta { in_ram: true, location: None, flags: 0 };
        b.update(b"k", 500, NOT_GONE, |_, _, _| Ok::<_, ()>((b"2".to_vec(), meta, ())));
        assert_eq!(
            b.touch(b"k", 900, NOT_GONE, |_, deadline, lifetime| Ok::<_, ()>((deadline, lifetime))),
            Lookup::Hit(Ok((1900, 1000)))
        );
        assert_eq!(get(&mut b, "k", 1800).as_deref(), Some("2"));
        assert_eq!(b.expiring, 1);
        b.put(b"k", ram(b"3"), Ttl::Forever, 1800);
        assert_eq!(
            b.touch(b"k", 1900, NOT_GONE, |_, deadline, lifetime| Ok::<_, ()>((deadline, lifetime))),
            Lookup::Hit(Ok((NEVER, 0)))
        );
        assert_eq!(b.expiring, 0);
        b.restore_touch(b"k", 5000, 3000);
        assert_eq!(
            b.touch(b"k", 4000, NOT_GONE, |v, deadline, lifetime| Ok::<_, ()>((
                v.value.map(<[u8]>::to_vec),
                deadline,
                lifetime
            ))),
            Lookup::Hit(Ok((Some(b"3".to_vec()), 7000, 3000)))
        );
        assert_eq!(b.expiring, 1);
    }

    #[test]
    fn location_and_lifetime_survive_admission_and_eviction() {
        let mut b = BankMap::new();
        let loc = at(2, 5);
        let disk = NewValue { value: b"value", in_ram: false, location: Some(loc), flags: 3 };
        b.put(b"k", disk, Ttl::Millis(60_000), 1000);
        let seq = b.reserve_seq(b"k", 1000);
        for clock in [10, 20] {
            assert_eq!(b.note_disk_read(b"k", loc, b"value", clock, 3, 60), 0);
        }
        assert_eq!(b.note_disk_read(b"k", loc, b"value", 30, 3, 60), 5);
        let read = |b: &mut BankMap| {
            b.touch(b"k", 2000, NOT_GONE, |v, deadline, lifetime| {
                Ok::<_, ()>((v.value.map(<[u8]>::to_vec), v.location, v.flags, v.seq, deadline, lifetime))
            })
        };
        assert_eq!(
            read(&mut b),
            Lookup::Hit(Ok((Some(b"value".to_vec()), Some(loc), 3, seq, 62_000, 60_000)))
        );
        // Read since the hand last passed: the first pass only clears the mark.
        assert_eq!(b.evict_step(100, 1, Evict::RamCopies), (0, 0));
        // Lifetime, location and key stay (30 bytes, a 32-byte block); the value's 5 go (from 40).
        assert_eq!(b.evict_step(100, 1, Evict::RamCopies), (alloc_size(35) - alloc_size(30), 1));
        assert_eq!(read(&mut b), Lookup::Hit(Ok((None, Some(loc), 3, seq, 62_000, 60_000))));
        assert_eq!((b.ram_bytes(), b.bytes()), (0, 6));
        // The counters started over: three more reads to come back.
        assert_eq!(b.note_disk_read(b"k", loc, b"value", 40, 3, 60), 0);
    }

    #[test]
    fn a_re_put_keeps_the_order_and_takes_the_new_location() {
        let mut b = BankMap::new();
        let disk = |loc| NewValue { value: b"v", in_ram: false, location: Some(loc), flags: 0 };
        b.put(b"a", disk(at(0, 1)), Ttl::Millis(10), 0);
        b.put(b"b", disk(at(0, 2)), Ttl::Forever, 0);
        b.put(b"a", disk(at(1, 3)), Ttl::Forever, 5);
        assert_eq!(keys(&b, 100), ["a", "b"]);
        assert_eq!(b.get(b"a", 100, NOT_GONE, |v| v.location), Lookup::Hit(Some(at(1, 3))));
        assert_eq!(b.touch(b"a", 100, NOT_GONE, |_, d, l| Ok::<_, ()>((d, l))), Lookup::Hit(Ok((NEVER, 0))));
        assert_eq!(b.expiring, 0);
    }

    #[test]
    fn the_figures_count_every_allocation_and_come_back_to_the_arrays_alone() {
        let mut b = BankMap::new();
        assert_eq!(b.figures().memory, b.figures().index);
        let mut figures = Vec::new();
        for i in 0..1000u32 {
            b.put(&i.to_be_bytes(), ram(b"0123456789"), Ttl::Millis(60_000), 0);
            figures.push(b.figures());
        }
        let last = figures[999];
        // Every entry: a 4-byte key, 10 bytes of value and an 8-byte lifetime in one 24-byte block.
        assert_eq!(last.memory - last.index, 1000 * alloc_size(22));
        assert!(last.index >= 1000 * 32, "the slot array is counted: {last:?}");
        assert_eq!((last.keys, last.ram, last.stored), (1000, 10_000, 14_000));
        // Eviction of whole entries frees their blocks; the arrays stay as they grew.
        let (freed, evicted) = b.evict_step(usize::MAX, 10_000, Evict::Entries);
        assert_eq!((freed, evicted), (1000 * alloc_size(22), 1000));
        assert_eq!(b.figures().memory, last.index);
        let gone = b.take_all();
        assert_eq!(gone.figures().keys, 0);
        assert_eq!(b.figures().memory, b.figures().index);
    }

    #[test]
    fn keys_steps_cover_every_slot_once() {
        let mut b = BankMap::new();
        for i in 0..100u32 {
            b.put(format!("k{i}").as_bytes(), ram(b"v"), Ttl::Forever, 0);
        }
        b.delete(b"k50", 0, NOT_GONE);
        let (mut out, mut from) = (KeyList::default(), Some(0));
        while let Some(at) = from {
            from = b.keys_step(at, 7, 0, NOT_GONE, &mut out);
        }
        out.sort(false);
        let names: Vec<Vec<u8>> = out.names().into_iter().map(<[u8]>::to_vec).collect();
        let want: Vec<Vec<u8>> =
            (0..100).filter(|i| *i != 50).map(|i| format!("k{i}").into_bytes()).collect();
        assert_eq!(names, want);
    }

    #[test]
    fn scan_steps_filter_by_prefix_stop_when_full_and_resume() {
        let mut b = BankMap::new();
        for i in 0..30u32 {
            let key = if i % 3 == 0 { format!("a{i}") } else { format!("b{i}") };
            b.put(key.as_bytes(), ram(b"v"), Ttl::Forever, 0);
        }
        b.put(b"a-dead", ram(b"v"), Ttl::Millis(5), 0);
        // Four keys per step at most; visiting up to 7 slots.
        let (mut got, mut from, mut steps) = (Vec::new(), Some(0), 0);
        while let Some(at) = from {
            let mut page = Vec::new();
            from = b.scan_step(at, 7, b"a", 10, NOT_GONE, |k| {
                page.push(String::from_utf8(k.to_vec()).unwrap());
                page.len() < 4
            });
            assert!(page.len() <= 4);
            assert!(from.is_none_or(|next| next > at && next <= at + 7), "{at} -> {from:?}");
            got.extend(page);
            steps += 1;
        }
        let want: Vec<String> = (0..30).filter(|i| i % 3 == 0).map(|i| format!("a{i}")).collect();
        assert_eq!(got, want, "slot order, prefix only, the expired entry skipped");
        assert!(steps >= 5, "31 slots, 7 at a time");
        // A step that stops because the taker is full resumes right after the last key taken.
        let mut first = None;
        let next = b.scan_step(0, 100, b"", 0, NOT_GONE, |k| {
            first = Some(k.to_vec());
            false
        });
        assert_eq!((first.as_deref(), next), (Some(&b"a0"[..]), Some(1)));
        // Past the end: done, nothing taken.
        assert_eq!(b.scan_step(1000, 10, b"", 0, NOT_GONE, |_| panic!("nothing to take")), None);
    }

    /// A touch whose record cannot be written changes nothing: before, the deadline moved in memory and
    /// the key was served past the deadline its client had been told about.
    #[test]
    fn a_touch_that_fails_to_log_leaves_the_deadline() {
        let mut b = BankMap::new();
        b.put(b"k", ram(b"1"), Ttl::Millis(1000), 0);
        assert_eq!(
            b.touch(b"k", 900, NOT_GONE, |_, _, _| Err::<(), _>("disk full")),
            Lookup::Hit(Err("disk full"))
        );
        assert_eq!(get(&mut b, "k", 999).as_deref(), Some("1"));
        assert_eq!(get(&mut b, "k", 1000), None, "still expires at its first deadline");
    }
}
