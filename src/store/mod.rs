//! The store: named banks, each behind its own lock; the optional volume store on disk; the memory tier;
//! and the background maintenance (expiry sweep, fsync).
//!
//! Lock order, the one rule that keeps this deadlock-free: **bank table → one bank → volume writer**. The
//! table lock is taken for reading to find a bank and for writing only to create one (never while a bank
//! lock is held); an op then locks exactly the one bank it names and never a second. Which ops write
//! their record where:
//!
//! - `delete`, `touch`, `getouch`, `incr` and `bank.reset` append their record while holding the bank's
//!   lock (bank → writer), so their order on disk is their order in memory.
//! - `put` writes its record with no bank lock held (the writer's lock only), so a large value does not
//!   stall its bank, and installs the entry under the bank's lock afterwards. Records are ordered
//!   store-wide by (volume generation, offset): a put overtaken meanwhile by a later put of the same key is
//!   not installed, and one overtaken by a record logged under its bank's lock is written again, so a
//!   restart replays what memory held.
//!
//! With a disk store, a put keeps its value in RAM too when its front asks for it ([`Keep`]): the log is
//! then what Redis's AOF is, and reads are served from memory. The reactor ([`Access::Try`]) never does
//! disk I/O: an op that would append a record or read one is [`StoreError::Busy`] before it does anything,
//! and a worker runs it.
//!
//! Disk reads happen outside every lock. `bank.list` takes only the table lock. The store knows nothing of
//! sockets or JSON: values are opaque bytes with a flags byte.

pub mod bank;
pub mod index;
mod maintenance;
pub mod memory;
mod os_pages;
pub mod record;
mod scan;
mod slots;
mod table;
pub mod volume;

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, TryLockError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use bank::{BankMap, Evict, KeyList, Lookup, NewValue, NewValueMeta, Swept, Ttl, View};
pub use maintenance::Maintenance;
use memory::{Usage, UsageFigures, BANK_BYTES};
use record::{Kind, Meta};
pub use table::{Access, Bank};
use table::{Ring, RingKind, Table};
pub use volume::{
    DiskBudget, FileSlice, Fsync, Location, ReadMiss, Recovered, RecoveryReport, Ring as VolumeRing,
    SendGate, VolumeConfig, VolumeError, VolumeFigures, Volumes,
};

/// Current time in Unix milliseconds: deadlines are absolute so they keep running across a restart.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// How the store is set up.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The volume store, or `None` for a memory-only cache.
    pub volumes: Option<VolumeConfig>,
    /// Bytes of values kept in RAM at most.
    pub memory_max_bytes: usize,
    /// Disk reads within the window after which a value is kept in RAM.
    pub admit_after_reads: u8,
    /// The window: the longest gap between counted reads, in milliseconds.
    pub admit_window_ms: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            volumes: None,
            memory_max_bytes: 1 << 30,
            admit_after_reads: 3,
            admit_window_ms: 60_000,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// The disk refused a write (full, I/O error, …). Nothing was changed.
    Disk(VolumeError),
    /// A value that cannot be kept: larger than the memory tier of a memory-only store.
    TooLargeForMemory {
        /// Its length.
        len: usize,
        /// `memory_max_bytes`.
        max: usize,
    },
    /// Nothing more fits: eviction cannot free enough (what is left is banks and indexes).
    OutOfMemory {
        /// `memory_max_bytes`.
        max: usize,
        /// Bytes in use.
        used: usize,
    },
    /// A lock was taken and the caller may not wait (the reactor thread): nothing was done.
    Busy,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Disk(VolumeError::TooLarge { len, max }) => {
                write!(f, "Value too large for the disk store: a record of {len} bytes, volume_size is {max}")
            }
            StoreError::Disk(e) => write!(f, "Storage error: {e}"),
            StoreError::TooLargeForMemory { len, max } => {
                write!(f, "Value too large for memory: {len} bytes, memory_max_bytes is {max}")
            }
            StoreError::OutOfMemory { max, used } => write!(
                f,
                "Out of memory: memory_max_bytes is {max} and {used} bytes are in use that eviction cannot free"
            ),
            StoreError::Busy => f.write_str("Busy: the bank is locked"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<VolumeError> for StoreError {
    fn from(e: VolumeError) -> Self {
        StoreError::Disk(e)
    }
}

/// What a put keeps in RAM when there is a disk store (without one, every value lives in RAM).
///
/// The fronts choose: the JSON port and the REST API write small values that are read back soon, so they
/// keep them in RAM and use the log as Redis uses its AOF; the file API keeps CacheFS's rule that a file
/// earns RAM only by being read from disk ([`StoreConfig::admit_after_reads`] times in the window).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The value stays in RAM beside its record, memory permitting (a value that would not fit stays on
    /// disk only); eviction drops such RAM copies before whole entries.
    Memory,
    /// The value goes to disk only and is kept in RAM once reads earn it a place.
    Earned,
}

/// Which tier served a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// RAM.
    Memory,
    /// The volume store.
    Disk,
}

/// How a read was served: the tier, and where the value's record lies on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// RAM or disk.
    pub tier: Tier,
    /// The record's place, with a disk store.
    pub location: Option<Location>,
    /// Value flags.
    pub flags: u8,
    /// When the entry expires, Unix ms (`None`: never), so that the HTTP front can answer `Cache-Control`
    /// and `Expires`; read from the entry the lookup found, in either tier.
    pub deadline: Option<u64>,
}

impl Served {
    /// True when the value is raw bytes rather than JSON text.
    pub fn is_bytes(&self) -> bool {
        self.flags & record::FLAG_BYTES != 0
    }
}

/// Counters the store keeps itself.
#[derive(Default)]
pub struct StoreCounters {
    /// Expired entries removed when an op ran into them.
    pub expired_lazy: AtomicU64,
    /// Expired entries removed by the background sweep.
    pub expired_sweep: AtomicU64,
    /// Values (with a disk store, RAM copies or entries) dropped to stay within `memory_max_bytes`.
    pub evictions: AtomicU64,
    /// Reads served from RAM.
    pub reads_memory: AtomicU64,
    /// Reads served from disk.
    pub reads_disk: AtomicU64,
    /// At start-up: damaged records and unreadable regions found (each lost its key or showed a gap).
    pub recovery_damaged: AtomicU64,
    /// At start-up: keys dropped because a gap in the log made their value unprovable.
    pub recovery_unprovable: AtomicU64,
    /// At start-up: index entries ignored as describing an earlier use of their volume, or another volume.
    pub recovery_recycled: AtomicU64,
}

/// Totals over every bank, for `stats`: read from store-wide tallies, so they cost the same with one bank
/// or a million.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Number of banks.
    pub banks: u64,
    /// Entries held, including expired ones the sweep has not reached yet.
    pub keys: u64,
    /// Bytes of keys and values held, in RAM or on disk.
    pub bytes: u64,
    /// Memory counted against `memory_max_bytes`, and what it is spent on.
    pub memory: UsageFigures,
}

/// What one pass of the expiry sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepPass {
    /// Slots looked at.
    pub visited: u64,
    /// Entries removed.
    pub removed: u64,
}

/// One bank's figures, for the admin page's bank list (`GET /stats/banks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankFigures {
    /// The bank's name.
    pub name: Box<str>,
    /// Entries held, including expired ones the sweep has not reached yet.
    pub keys: u64,
    /// Bytes of keys and values held, in RAM or on disk.
    pub bytes: u64,
    /// Of those, bytes of values held in RAM.
    pub ram_bytes: u64,
}

/// Why a listing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// The most bytes the reply may take.
    pub max: usize,
    /// Entries listed when the budget ran out.
    pub listed: usize,
}

/// Slots an op on a whole bank visits with the bank's lock held, before it lets others in.
const SLICE: usize = 4096;

/// All banks, and where their values live.
pub struct Store {
    table: RwLock<Table>,
    counters: StoreCounters,
    disk: Option<Volumes>,
    usage: Usage,
    memory_max: usize,
    admit_after: u8,
    admit_window: u32,
    started: Instant,
    /// Banks with entries, for eviction.
    evictable: Ring,
    /// Banks with entries that have a deadline, for the expiry sweep.
    expiring: Ring,
}

impl Default for Store {
    fn default() -> Self {
        Store::memory_only(StoreConfig::default())
    }
}

/// Appends a record when there is a disk store.
fn log_record(
    disk: Option<&Volumes>,
    meta: Meta,
    bank: &str,
    key: &[u8],
    value: &[u8],
) -> Result<Option<Location>, StoreError> {
    match disk {
        Some(d) => Ok(Some(d.append(meta, bank.as_bytes(), key, value)?)),
        None => Ok(None),
    }
}

/// The memory a new bank named `name` costs.
fn bank_cost(name: &str) -> usize {
    BANK_BYTES + 2 * name.len()
}

impl Store {
    /// An empty memory-only store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty memory-only store with this configuration's limits.
    pub fn memory_only(config: StoreConfig) -> Store {
        Store {
            table: RwLock::new(Table::default()),
            counters: StoreCounters::default(),
            disk: None,
            usage: Usage::default(),
            memory_max: config.memory_max_bytes.max(1),
            admit_after: config.admit_after_reads.max(1),
            admit_window: config.admit_window_ms,
            started: Instant::now(),
            evictable: Ring::new(RingKind::Evictable),
            expiring: Ring::new(RingKind::Expiring),
        }
    }

    /// Opens the store: with a disk store, replays it so every bank holds what it held before (minus
    /// what has expired and what reuse of volumes has dropped), then evicts what does not fit in
    /// `memory_max_bytes`.
    pub fn open(config: StoreConfig) -> Result<(Store, Option<RecoveryReport>), StoreError> {
        let mut store = Store::memory_only(config.clone());
        let Some(volumes) = &config.volumes else { return Ok((store, None)) };
        let now = now_ms();
        let mut table = Table::default();
        let mut replayer = Replayer { sizes: volume::census(&volumes.dir, volumes.volume_count), last: None };
        let (disk, mut report) = Volumes::open(volumes, |r| replayer.apply(&mut table, r, now))?;
        if let Some(floor) = report.floor() {
            // A gap in the log: no value written before it can be proven to be its key's newest.
            for bank in table.order() {
                report.unprovable_keys += bank.lock_wait().drop_written_before(floor) as u64;
            }
            log::warn!(
                "records were lost from the log: {} keys whose value predates the loss were dropped",
                report.unprovable_keys
            );
        }
        let counters = &store.counters;
        counters.recovery_damaged.store(report.damaged_records, Ordering::Relaxed);
        counters.recovery_unprovable.store(report.unprovable_keys, Ordering::Relaxed);
        counters.recovery_recycled.store(report.recycled_entries, Ordering::Relaxed);
        for bank in table.order() {
            store.usage.add_bank(bank_cost(bank.name()));
            let mut map = bank.lock_wait();
            map.trim();
            store.usage.apply(memory::Figures::default(), map.figures());
            store.join_rings(bank, &map);
        }
        *store.table.get_mut().unwrap_or_else(PoisonError::into_inner) = table;
        store.disk = Some(disk);
        if store.usage.memory() > store.memory_max {
            let before = store.usage.figures().keys;
            let _ = store.make_room(0, Access::Wait);
            let dropped = before.saturating_sub(store.usage.figures().keys);
            log::warn!(
                "recovery found more than memory_max_bytes ({}) holds: {dropped} keys were forgotten",
                store.memory_max
            );
        }
        Ok((store, Some(report)))
    }

    /// The store's own counters.
    pub fn counters(&self) -> &StoreCounters {
        &self.counters
    }

    /// The volume store, if there is one.
    pub fn disk(&self) -> Option<&Volumes> {
        self.disk.as_ref()
    }

    /// Bytes of values held in RAM.
    pub fn ram_bytes(&self) -> usize {
        self.usage.ram()
    }

    /// Bytes counted against `memory_max_bytes`.
    pub fn memory_bytes(&self) -> usize {
        self.usage.memory()
    }

    /// `memory_max_bytes`.
    pub fn memory_max(&self) -> usize {
        self.memory_max
    }

    fn table(&self, access: Access) -> Result<RwLockReadGuard<'_, Table>, StoreError> {
        match access {
            Access::Wait => Ok(self.table.read().unwrap_or_else(PoisonError::into_inner)),
            Access::Try => match self.table.try_read() {
                Ok(table) => Ok(table),
                Err(TryLockError::Poisoned(e)) => Ok(e.into_inner()),
                Err(TryLockError::WouldBlock) => Err(StoreError::Busy),
            },
        }
    }

    /// Runs `f` on a bank's map if the bank exists (reads never create a bank), keeping the store's
    /// tallies in step with what `f` did. With [`Access::Try`], a lock that is taken is
    /// [`StoreError::Busy`], before anything is done.
    fn with_bank<R>(
        &self,
        name: &str,
        access: Access,
        f: impl FnOnce(&mut BankMap) -> R,
    ) -> Result<Option<R>, StoreError> {
        let table = self.table(access)?;
        let Some(bank) = table.get(name) else { return Ok(None) };
        let mut map = bank.lock(access).ok_or(StoreError::Busy)?;
        Ok(Some(self.tracked(bank, &mut map, f)))
    }

    /// Runs `f` on a bank's map, creating the bank first if needed (only `put` does this); a new bank's
    /// structures count against the limit, and one that does not fit is [`StoreError::OutOfMemory`].
    fn with_bank_or_create<R>(
        &self,
        name: &str,
        access: Access,
        f: impl FnOnce(&mut BankMap) -> R,
    ) -> Result<R, StoreError> {
        {
            let table = self.table(access)?;
            if let Some(bank) = table.get(name) {
                let mut map = bank.lock(access).ok_or(StoreError::Busy)?;
                return Ok(self.tracked(bank, &mut map, f));
            }
        }
        self.make_room(bank_cost(name), access)?;
        let mut table = match access {
            Access::Wait => self.table.write().unwrap_or_else(PoisonError::into_inner),
            Access::Try => match self.table.try_write() {
                Ok(table) => table,
                Err(TryLockError::Poisoned(e)) => e.into_inner(),
                Err(TryLockError::WouldBlock) => return Err(StoreError::Busy),
            },
        };
        let (bank, created) = table.get_or_create(name);
        drop(table);
        if created {
            self.usage.add_bank(bank_cost(name));
        }
        // Banks are never removed, so the bank outlives the table lock; taking its lock afterwards keeps
        // the write lock short.
        let mut map = bank.lock(access).ok_or(StoreError::Busy)?;
        Ok(self.tracked(&bank, &mut map, f))
    }

    /// Runs `f` on a locked bank and applies what it changed to the store's tallies and rings.
    fn tracked<R>(&self, bank: &Arc<Bank>, map: &mut BankMap, f: impl FnOnce(&mut BankMap) -> R) -> R {
        let before = map.figures();
        let result = f(map);
        self.usage.apply(before, map.figures());
        self.join_rings(bank, map);
        result
    }

    /// Puts a bank in the rings whose work it now has (its lock is held, so it cannot leave meanwhile).
    fn join_rings(&self, bank: &Arc<Bank>, map: &BankMap) {
        if !map.is_empty() && !bank.in_ring(RingKind::Evictable) {
            self.evictable.join(bank);
        }
        if map.expiring() > 0 && !bank.in_ring(RingKind::Expiring) {
            self.expiring.join(bank);
        }
    }

    /// The reactor's rule under a disk store: an op that would append to the log or read the disk is
    /// [`StoreError::Busy`] with [`Access::Try`], so that a worker runs it; checked before anything is done.
    fn no_disk_io_on_try(&self, access: Access) -> Result<(), StoreError> {
        match (&self.disk, access) {
            (Some(_), Access::Try) => Err(StoreError::Busy),
            _ => Ok(()),
        }
    }

    /// True when the record at `at` can no longer be read (its volume has been reused).
    fn gone(&self) -> impl Fn(Location) -> bool + '_ {
        move |at| self.disk.as_ref().is_some_and(|d| !d.is_current(at))
    }

    /// Stores a value, replacing the whole entry. With a disk store the record is written first, and the
    /// value stays in RAM as `keep` says ([`Keep`]). Room is made for the entry first; one that cannot fit
    /// even then is refused. With a disk store and [`Access::Try`] (the reactor, which does no disk I/O)
    /// the put is [`StoreError::Busy`] before anything is done.
    #[allow(clippy::too_many_arguments)]
    pub fn put(
        &self,
        bank: &str,
        key: &[u8],
        value: &[u8],
        flags: u8,
        ttl: Ttl,
        now: u64,
        access: Access,
        keep: Keep,
    ) -> Result<Option<Location>, StoreError> {
        self.no_disk_io_on_try(access)?;
        if ttl == Ttl::Expired {
            self.delete(bank, key, now, access)?;
            return Ok(None);
        }
        // What the entry will cost, roughly (its slot and index share are ~37 bytes, its allocation is the
        // key and the value if kept in RAM): enough to make room before it goes in.
        let cost = |in_ram: usize| 48 + memory::alloc_size(key.len() + in_ram + 29);
        if self.disk.is_none() && cost(value.len()) > self.memory_max {
            return Err(StoreError::TooLargeForMemory { len: value.len(), max: self.memory_max });
        }
        // With a disk store a value is kept in RAM only if room can be made for it: otherwise it lives on
        // disk alone, as an earned one does until it is read.
        let in_ram = self.disk.is_none()
            || (keep == Keep::Memory && self.make_room(cost(value.len()), access).is_ok());
        self.make_room(cost(if in_ram { value.len() } else { 0 }), access)?;
        let Some(disk) = &self.disk else {
            self.with_bank_or_create(bank, access, |m| {
                m.put(key, NewValue { value, in_ram: true, location: None, flags }, ttl, now)
            })?;
            return Ok(None);
        };
        // The record is written with no bank lock held, so reads and writes of other keys go on while a
        // large value is copied to the page cache; the entry is installed afterwards. The writer's lock
        // orders the log, and `install` and `logged_since` make memory agree with that order.
        let (deadline, lifetime) = ttl.deadline(now);
        let seq = self.with_bank_or_create(bank, access, |m| m.reserve_seq(key, now))?;
        let meta = Meta { kind: Kind::Put, flags, deadline, lifetime, seq };
        let written = disk.append(meta, bank.as_bytes(), key, value)?;
        let location =
            self.with_bank_or_create(bank, Access::Wait, |m| -> Result<Location, StoreError> {
                let at = if m.logged_since(written) {
                    // A delete, touch, incr or reset of this bank was logged after the record: log the put
                    // again so that it comes last on disk as it does in memory.
                    let again = disk.append(meta, bank.as_bytes(), key, value)?;
                    m.note_logged(again);
                    again
                } else {
                    written
                };
                m.install(key, NewValue { value, in_ram, location: Some(at), flags }, ttl, now, seq);
                Ok(at)
            })??;
        Ok(Some(location))
    }

    /// Reads a value: `f` gets its bytes and flags, from RAM under the bank's lock, or from disk after
    /// the lock is dropped. With `touch`, restarts the entry's lifetime first. A disk read counts toward
    /// admission to RAM. With a disk store and [`Access::Try`], a read that would go to disk, and every
    /// `touch` (it logs), is [`StoreError::Busy`] with nothing done and `f` not called.
    pub fn get<R>(
        &self,
        bank: &str,
        key: &[u8],
        now: u64,
        touch: bool,
        access: Access,
        f: impl FnOnce(&[u8], &Served) -> R,
    ) -> Result<Lookup<(R, Served)>, StoreError> {
        self.get_with_file(bank, key, now, touch, access, |value, served, _| f(value, served))
    }

    /// As [`Store::get`], and a value read from disk also comes as a pinned slice of its volume file
    /// (when the file system allows it), for a front that sends it from there rather than copy it.
    pub fn get_with_file<R>(
        &self,
        bank: &str,
        key: &[u8],
        now: u64,
        touch: bool,
        access: Access,
        f: impl FnOnce(&[u8], &Served, Option<FileSlice>) -> R,
    ) -> Result<Lookup<(R, Served)>, StoreError> {
        enum Step<R> {
            Done(R, Served),
            FromDisk(Location, u8, Option<u64>),
            /// Neither in RAM nor on disk: cannot happen (eviction keeps disk-less entries whole), but a
            /// miss is the safe answer.
            Nowhere,
        }
        if touch {
            self.no_disk_io_on_try(access)?;
        }
        let mut f = Some(f);
        let first = self.with_bank(bank, access, |m| -> Result<Lookup<Step<R>>, StoreError> {
            let mut visit = |view: View<'_>| match (view.value, view.location) {
                (Some(value), location) => {
                    let f = f.take().expect("called once");
                    let served =
                        Served { tier: Tier::Memory, location, flags: view.flags, deadline: view.deadline };
                    Step::Done(f(value, &served, None), served)
                }
                (None, Some(at)) => Step::FromDisk(at, view.flags, view.deadline),
                (None, None) => Step::Nowhere,
            };
            if !touch {
                return Ok(m.get(key, now, self.gone(), visit));
            }
            let disk = self.disk.as_ref();
            let mut logged = None;
            let step = m.touch(key, now, self.gone(), |view, deadline, lifetime| {
                if lifetime != 0 {
                    let meta =
                        Meta { kind: Kind::Touch, flags: view.flags, deadline, lifetime, seq: view.seq };
                    logged = log_record(disk, meta, bank, key, &[])?;
                }
                Ok::<_, StoreError>(visit(view))
            });
            if let Some(at) = logged {
                m.note_logged(at);
            }
            Ok(match step {
                Lookup::Hit(step) => Lookup::Hit(step?),
                Lookup::Miss => Lookup::Miss,
                Lookup::Expired => Lookup::Expired,
            })
        })?;
        let step = match first.transpose()? {
            None | Some(Lookup::Miss) => return Ok(Lookup::Miss),
            Some(Lookup::Expired) => {
                self.counters.expired_lazy.fetch_add(1, Ordering::Relaxed);
                return Ok(Lookup::Expired);
            }
            Some(Lookup::Hit(step)) => step,
        };
        match step {
            Step::Done(r, served) => {
                self.counters.reads_memory.fetch_add(1, Ordering::Relaxed);
                Ok(Lookup::Hit((r, served)))
            }
            Step::Nowhere => Ok(Lookup::Miss),
            Step::FromDisk(at, flags, deadline) => {
                let Some(disk) = &self.disk else { return Ok(Lookup::Miss) };
                self.no_disk_io_on_try(access)?;
                let served = Served { tier: Tier::Disk, location: Some(at), flags, deadline };
                let read = disk.read_value(at, bank.as_bytes(), key, |value, slice| {
                    self.counters.reads_disk.fetch_add(1, Ordering::Relaxed);
                    let r = (f.take().expect("called once"))(value, &served, slice);
                    // Wraps after 49 days; the window only compares nearby instants.
                    let clock = self.started.elapsed().as_millis() as u32;
                    let (count, window) = (self.admit_after, self.admit_window);
                    // Admission is a bonus: when the bank is busy (or memory is short) the value just
                    // stays on disk.
                    let cost = memory::alloc_size(value.len());
                    if self.make_room(cost, access).is_ok() {
                        let admit = |m: &mut BankMap| m.note_disk_read(key, at, value, clock, count, window);
                        let _ = self.with_bank(bank, access, admit);
                    }
                    r
                });
                match read {
                    Ok(r) => Ok(Lookup::Hit((r, served))),
                    Err(miss) => {
                        if miss == ReadMiss::Damaged {
                            log::warn!(
                                "bank {bank:?}: the record of a key at {at:?} is damaged; the key is lost"
                            );
                        }
                        self.with_bank(bank, Access::Wait, |m| m.forget(key, at))?;
                        Ok(Lookup::Miss)
                    }
                }
            }
        }
    }

    /// Removes a key; with a disk store a tombstone is appended so the delete holds after a restart (and
    /// [`Access::Try`] is [`StoreError::Busy`], as for every op that logs).
    pub fn delete(&self, bank: &str, key: &[u8], now: u64, access: Access) -> Result<Lookup<()>, StoreError> {
        self.no_disk_io_on_try(access)?;
        let result = self.with_bank(bank, access, |m| -> Result<Lookup<()>, StoreError> {
            let found = m.get(key, now, self.gone(), |_| ());
            if let Lookup::Hit(()) = found {
                let meta =
                    Meta { kind: Kind::Delete, flags: 0, deadline: record::NO_DEADLINE, lifetime: 0, seq: 0 };
                if let Some(at) = log_record(self.disk.as_ref(), meta, bank, key, &[])? {
                    m.note_logged(at);
                }
                m.delete(key, now, self.gone());
            }
            Ok(found)
        })?;
        self.count_expired(result.transpose()?.unwrap_or(Lookup::Miss))
    }

    /// Restarts a key's lifetime (logged with a disk store: [`Access::Try`] is then [`StoreError::Busy`]).
    pub fn touch(&self, bank: &str, key: &[u8], now: u64, access: Access) -> Result<Lookup<()>, StoreError> {
        self.no_disk_io_on_try(access)?;
        let result = self.with_bank(bank, access, |m| {
            let disk = self.disk.as_ref();
            let mut logged = None;
            let found = m.touch(key, now, self.gone(), |view, deadline, lifetime| {
                if lifetime != 0 {
                    let meta =
                        Meta { kind: Kind::Touch, flags: view.flags, deadline, lifetime, seq: view.seq };
                    logged = log_record(disk, meta, bank, key, &[])?;
                }
                Ok::<_, StoreError>(())
            });
            if let Some(at) = logged {
                m.note_logged(at);
            }
            found
        })?;
        match result.unwrap_or(Lookup::Miss) {
            Lookup::Hit(r) => r.map(Lookup::Hit),
            other => self.count_expired(match other {
                Lookup::Expired => Lookup::Expired,
                _ => Lookup::Miss,
            }),
        }
    }

    fn count_expired<T>(&self, found: Lookup<T>) -> Result<Lookup<T>, StoreError> {
        if let Lookup::Expired = found {
            self.counters.expired_lazy.fetch_add(1, Ordering::Relaxed);
        }
        Ok(found)
    }

    /// Replaces a value with what `f` makes of it and its flags (incr) — new bytes and flags — keeping its
    /// lifetime; atomic under the bank's lock. A value only on disk is read there first. Logged with a disk
    /// store: [`Access::Try`] is then [`StoreError::Busy`].
    pub fn update<T, E>(
        &self,
        bank: &str,
        key: &[u8],
        now: u64,
        access: Access,
        f: impl FnOnce(&[u8], u8) -> Result<(Vec<u8>, u8, T), E>,
    ) -> Result<Lookup<Result<T, E>>, StoreError> {
        enum Fail<E> {
            User(E),
            Store(StoreError),
            Unreadable(Location),
            Nowhere,
        }
        self.no_disk_io_on_try(access)?;
        let disk = self.disk.as_ref();
        let result = self.with_bank(bank, access, |m| {
            m.update(key, now, self.gone(), |view, deadline, lifetime| {
                let old: Cow<'_, [u8]> = match (view.value, view.location) {
                    (Some(v), _) => Cow::Borrowed(v),
                    (None, Some(at)) => {
                        match disk.map(|d| d.read(at, bank.as_bytes(), key, |r| r.value.to_vec())) {
                            Some(Ok(v)) => Cow::Owned(v),
                            _ => return Err(Fail::Unreadable(at)),
                        }
                    }
                    (None, None) => return Err(Fail::Nowhere),
                };
                let (new, flags, out) = f(&old, view.flags).map_err(Fail::User)?;
                let meta = Meta { kind: Kind::Put, flags, deadline, lifetime, seq: view.seq };
                let location = log_record(disk, meta, bank, key, &new).map_err(Fail::Store)?;
                let keep = NewValueMeta { in_ram: view.value.is_some(), location, flags };
                Ok((new, keep, out))
            })
        })?;
        let found = match result {
            None | Some(Lookup::Miss) => return Ok(Lookup::Miss),
            Some(Lookup::Expired) => return self.count_expired(Lookup::Expired),
            Some(Lookup::Hit(r)) => r,
        };
        match found {
            Ok(out) => {
                let _ = self.make_room(0, access);
                Ok(Lookup::Hit(Ok(out)))
            }
            Err(Fail::User(e)) => Ok(Lookup::Hit(Err(e))),
            Err(Fail::Store(e)) => Err(e),
            Err(Fail::Unreadable(at)) => {
                self.with_bank(bank, Access::Wait, |m| m.forget(key, at))?;
                Ok(Lookup::Miss)
            }
            Err(Fail::Nowhere) => Ok(Lookup::Miss),
        }
    }

    /// A bank's live keys in insertion order (none for a bank that does not exist), listed a slice of
    /// slots at a time with the bank's lock dropped in between, so that ops on the bank keep flowing. A
    /// key present throughout is listed once; one added or removed meanwhile may or may not be. Refused
    /// once the listing would take more than `max_bytes` (a reply must not grow without bound).
    pub fn keys(&self, bank: &str, now: u64, max_bytes: usize) -> Result<KeyList, TooLarge> {
        let mut found = KeyList::default();
        let Some(bank) = self.table(Access::Wait).ok().and_then(|t| t.get(bank).cloned()) else {
            return Ok(found);
        };
        let (mut from, mut changes) = (Some(0), None);
        let mut changed = false;
        while let Some(at) = from {
            let map = bank.lock_wait();
            changed |= changes.is_some_and(|c| c != map.changes());
            changes = Some(map.changes());
            from = map.keys_step(at, SLICE, now, self.gone(), &mut found);
            drop(map);
            // A key's text in the reply: itself, its quotes and a separator.
            if found.name_bytes() + 4 * found.len() > max_bytes {
                return Err(TooLarge { max: max_bytes, listed: found.len() });
            }
        }
        // A key removed and put again between two slices can have been seen twice, in two slots: then keep
        // its newest place in the order.
        found.sort(changed);
        Ok(found)
    }

    /// Empties a bank (it stays listed); with a disk store a reset record makes it hold after a restart.
    /// The entries are taken out under the lock and freed after it is dropped.
    pub fn reset(&self, bank: &str) -> Result<(), StoreError> {
        let taken = self.with_bank(bank, Access::Wait, |m| -> Result<BankMap, StoreError> {
            let meta =
                Meta { kind: Kind::Reset, flags: 0, deadline: record::NO_DEADLINE, lifetime: 0, seq: 0 };
            let logged = log_record(self.disk.as_ref(), meta, bank, &[], &[])?;
            let taken = m.take_all();
            if let Some(at) = logged {
                m.note_logged(at);
            }
            Ok(taken)
        })?;
        drop(taken.transpose()?);
        Ok(())
    }

    /// Every bank name in creation order, copied a slice at a time so that the table's lock is never
    /// held for long; refused past `max_bytes` of names.
    pub fn bank_names(&self, max_bytes: usize) -> Result<Vec<Box<str>>, TooLarge> {
        let (mut names, mut bytes) = (Vec::new(), 0usize);
        loop {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            let order = table.order();
            let end = order.len().min(names.len() + SLICE);
            for bank in &order[names.len()..end] {
                bytes += bank.name().len() + 4;
                names.push(Box::<str>::from(bank.name()));
            }
            if bytes > max_bytes {
                return Err(TooLarge { max: max_bytes, listed: names.len() });
            }
            if end == order.len() {
                return Ok(names);
            }
        }
    }

    /// A page of banks with their figures, in creation order from `cursor` (a bank's place in that order:
    /// banks are never removed, so it stays valid), at most `count`; returns the cursor to go on from,
    /// 0 when every bank has been listed. Each bank's lock is taken for a moment, one at a time.
    pub fn bank_figures(&self, cursor: usize, count: usize) -> (Vec<BankFigures>, usize) {
        let (banks, total) = {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            let order = table.order();
            let from = cursor.min(order.len());
            let to = from.saturating_add(count).min(order.len());
            (order[from..to].to_vec(), order.len())
        };
        let figures: Vec<BankFigures> = banks
            .iter()
            .map(|bank| {
                let map = bank.lock_wait();
                BankFigures {
                    name: bank.name().into(),
                    keys: map.len() as u64,
                    bytes: map.bytes() as u64,
                    ram_bytes: map.ram_bytes() as u64,
                }
            })
            .collect();
        let next = cursor.saturating_add(figures.len());
        let next = if next >= total || figures.is_empty() { 0 } else { next };
        (figures, next)
    }

    /// Totals over every bank, from the store-wide tallies.
    pub fn totals(&self) -> Totals {
        let banks = self.table.read().unwrap_or_else(PoisonError::into_inner).order().len() as u64;
        let memory = self.usage.figures();
        Totals { banks, keys: memory.keys as u64, bytes: memory.stored as u64, memory }
    }

    /// Evicts until `need` more bytes fit under `memory_max_bytes`, CLOCK a slice at a time, bank by bank in
    /// turn over the banks that hold entries; a bank's lock is dropped between slices. Memory-only, whole
    /// entries go; with a disk store, RAM copies first and then, if that is not enough, whole entries (the
    /// keys are forgotten). With [`Access::Try`] a bank that is locked is skipped rather than waited for.
    /// Banks take turns by the slice, not by the entry, so an entry of a small bank is visited as often as a
    /// whole slice of a large bank's.
    ///
    /// Three turns round the ring, one slice per bank each, give the entries of banks of up to a slice
    /// their second chance and then take them. When that is not enough (a larger bank whose entries were
    /// all read since the hand last passed), a worker goes on round every bank to its last slot, three
    /// times, so that room is refused ([`StoreError::OutOfMemory`]) only when nothing evictable is left, not
    /// because everything was read lately (before, such a put was refused); the reactor, which must not
    /// take that long, hands the op to a worker instead ([`StoreError::Busy`]).
    fn make_room(&self, need: usize, access: Access) -> Result<(), StoreError> {
        let target = self.memory_max.saturating_sub(need);
        let over = || self.usage.memory().saturating_sub(target);
        if over() == 0 {
            return Ok(());
        }
        for _ in 0..self.evictable.len() * 3 + 1 {
            let Some(bank) = self.evictable.next() else { break };
            let Some(mut map) = bank.lock(access) else { continue };
            self.evict_slice(&bank, &mut map, over());
            drop(map);
            if over() == 0 {
                return Ok(());
            }
        }
        let out_of_memory = || StoreError::OutOfMemory { max: self.memory_max, used: self.usage.memory() };
        if self.evictable.len() == 0 {
            return Err(out_of_memory());
        }
        if matches!(access, Access::Try) {
            return Err(StoreError::Busy);
        }
        for _ in 0..self.evictable.len() * 3 + 1 {
            let Some(bank) = self.evictable.next() else { break };
            loop {
                let mut map = bank.lock_wait();
                let done = self.evict_slice(&bank, &mut map, over());
                drop(map);
                if over() == 0 {
                    return Ok(());
                }
                if done {
                    break;
                }
            }
        }
        Err(out_of_memory())
    }

    /// One slice of eviction in a locked bank, freeing up to `want` bytes; true when the bank's hand has
    /// reached its last slot, or the bank has nothing to evict.
    fn evict_slice(&self, bank: &Arc<Bank>, map: &mut BankMap, want: usize) -> bool {
        let mode = match &self.disk {
            Some(_) if self.usage.ram() > 0 => Evict::RamCopies,
            _ => Evict::Entries,
        };
        if mode == Evict::RamCopies && map.ram_bytes() == 0 {
            return true;
        }
        let (_, evicted) = self.tracked(bank, map, |m| m.evict_step(want, SLICE, mode));
        self.counters.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
        if map.is_empty() {
            self.evictable.leave(bank);
            return true;
        }
        map.clock_done()
    }

    /// One pass of the background sweep, within `budget`: the banks that hold entries with a deadline are
    /// visited in turn from where the last pass stopped, a slice at a time with the bank's lock dropped in
    /// between, and expired entries (and entries whose volume has been reused) are removed. A bank with
    /// nothing left to expire leaves the ring.
    pub fn sweep(&self, now: u64, budget: std::time::Duration) -> SweepPass {
        const STEP: usize = 1024;
        /// Slots of one bank visited per turn, so that one big bank does not starve the others.
        const PER_TURN: usize = 16 * STEP;
        let started = Instant::now();
        let mut pass = SweepPass::default();
        let members = self.expiring.len();
        for _ in 0..members {
            let Some(bank) = self.expiring.next() else { break };
            let mut visited = 0;
            loop {
                let mut map = bank.lock_wait();
                let (step, span) =
                    self.tracked(&bank, &mut map, |m| (m.sweep_step(now, STEP, self.gone()), m.sweep_span()));
                pass.removed += step.removed as u64;
                pass.visited += step.visited as u64;
                visited += step.visited;
                if map.expiring() == 0 {
                    self.expiring.leave(&bank);
                    break;
                }
                drop(map);
                if step.visited == 0 || visited >= span.min(PER_TURN) || started.elapsed() >= budget {
                    break;
                }
            }
            if started.elapsed() >= budget {
                break;
            }
        }
        self.counters.expired_sweep.fetch_add(pass.removed, Ordering::Relaxed);
        pass
    }

    /// Drops the store as a killed process would leave its files (see [`Volumes::abandon`]).
    #[doc(hidden)]
    pub fn crash(self) {
        if let Some(disk) = self.disk {
            disk.abandon();
        }
    }

    /// Holds bank `name`'s lock while `f` runs, as a long op would (for tests of what must not wait on it).
    #[doc(hidden)]
    pub fn hold_bank_for_test(&self, name: &str, f: impl FnOnce()) {
        let bank = self.table(Access::Wait).ok().and_then(|t| t.get(name).cloned());
        let _held = bank.as_ref().map(|bank| bank.lock_wait());
        f();
    }

    /// Writes buffered index entries and, unless the policy is `never`, fsyncs.
    pub fn sync(&self) -> Result<(), StoreError> {
        match &self.disk {
            Some(d) => d.sync().map_err(StoreError::Disk),
            None => Ok(()),
        }
    }
}

/// Rebuilds the bank table from the records start-up replays.
struct Replayer {
    /// Put records per bank in the index files ([`volume::census`]): a bank's table is made that big at
    /// once.
    sizes: std::collections::HashMap<Box<[u8]>, usize>,
    /// The bank of the record before: records of one bank mostly follow each other.
    last: Option<Arc<Bank>>,
}

impl Replayer {
    /// Applies one recovered record.
    fn apply(&mut self, table: &mut Table, r: &Recovered<'_>, now: u64) {
        let restore = |bank: &Bank| {
            let names = record::HEADER_LEN + r.bank.len() + r.key.len();
            let value_len = (r.location.len as usize).saturating_sub(names);
            bank.lock_wait().restore(&r.key, r.location, value_len, &r.meta);
        };
        let last = self.last.as_ref().filter(|b| b.name().as_bytes() == &*r.bank);
        if let (Some(bank), Kind::Put) = (last, r.meta.kind) {
            return restore(bank);
        }
        self.last = None;
        let Ok(name) = std::str::from_utf8(&r.bank) else {
            log::warn!("skipping a record whose bank name is not UTF-8");
            return;
        };
        match r.meta.kind {
            // A put is restored even when its deadline has passed: a later touch may have moved the
            // deadline on, and only the last record of the key says which deadline holds. Expired entries
            // are removed by reads and by the sweep.
            Kind::Put => {
                let (bank, created) = table.get_or_create(name);
                if created {
                    bank.lock_wait().reserve(self.sizes.remove(&*r.bank).unwrap_or(0));
                }
                restore(&bank);
                self.last = Some(bank);
            }
            Kind::Delete => {
                if let Some(b) = table.get(name) {
                    b.lock_wait().remove_key(&r.key, now);
                }
            }
            // Like a put, a touch whose deadline has passed is kept: a later touch may have moved it on.
            Kind::Touch => {
                if let Some(b) = table.get(name) {
                    b.lock_wait().restore_touch(&r.key, r.meta.deadline, r.meta.lifetime);
                }
            }
            Kind::Reset => {
                if let Some(b) = table.get(name) {
                    b.lock_wait().clear();
                }
            }
            Kind::Void => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;
    use std::time::Duration;

    fn get(store: &Store, bank: &str, key: &str) -> Option<(Vec<u8>, Tier)> {
        match store.get(bank, key.as_bytes(), now_ms(), false, Access::Wait, |v, _| v.to_vec()).unwrap() {
            Lookup::Hit((v, served)) => Some((v, served.tier)),
            _ => None,
        }
    }

    /// The admin page's bank list pages through the banks in creation order, with each bank's figures.
    #[test]
    fn bank_figures_page_in_creation_order() {
        let store = Store::new();
        for (bank, n) in [("b", 3), ("a", 1), ("c", 2)] {
            for i in 0..n {
                store
                    .put(
                        bank,
                        format!("k{i}").as_bytes(),
                        b"12345",
                        0,
                        Ttl::Forever,
                        0,
                        Access::Wait,
                        Keep::Earned,
                    )
                    .unwrap();
            }
        }
        let (page, next) = store.bank_figures(0, 2);
        let names: Vec<&str> = page.iter().map(|f| &*f.name).collect();
        assert_eq!((names, next), (vec!["b", "a"], 2));
        assert_eq!((page[0].keys, page[1].keys), (3, 1));
        assert!(page[0].bytes >= 3 * 7, "keys and values: {}", page[0].bytes);
        let (page, next) = store.bank_figures(next, 2);
        assert_eq!((page.len(), &*page[0].name, page[0].keys, next), (1, "c", 2, 0));
        assert_eq!(store.bank_figures(7, 2), (Vec::new(), 0));
    }

    /// The ring says which volume is written, how far each is filled, and how often each was started.
    #[test]
    fn volume_ring_follows_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = disk_config(dir.path());
        if let Some(v) = config.volumes.as_mut() {
            v.volume_size = 4096;
        }
        let (store, _) = Store::open(config.clone()).unwrap();
        let ring = store.disk().unwrap().ring();
        assert_eq!((ring.current, ring.size, ring.reuses, ring.volumes.len()), (0, 4096, 0, 3));
        assert_eq!(ring.volumes.iter().map(|v| v.starts).collect::<Vec<_>>(), [1, 0, 0]);
        let value = [7u8; 1000];
        // Four records of ~1 KB fill volume 0 to ~3 KB, the fourth goes to volume 1, and so on round the ring.
        for i in 0..12 {
            store
                .put("b", format!("k{i}").as_bytes(), &value, 0, Ttl::Forever, 0, Access::Wait, Keep::Earned)
                .unwrap();
        }
        let ring = store.disk().unwrap().ring();
        assert_eq!(ring.current, 0, "round the ring once: {ring:?}");
        assert_eq!(ring.reuses, 1);
        assert_eq!(ring.volumes[0].starts, 2, "written at start-up, and again");
        assert_eq!(ring.volumes[1].starts, 1);
        assert!(ring.volumes.iter().all(|v| v.used > 0 && v.used <= 4096), "{ring:?}");
        let (_, offset) = store.disk().unwrap().write_position();
        assert_eq!(ring.volumes[0].used, offset);
        let filled = ring.volumes[1].used;
        drop(store);
        // A restart finds how far each volume was filled by replaying it.
        let (store, _) = Store::open(config).unwrap();
        assert_eq!(store.disk().unwrap().ring().volumes[1].used, filled);
    }

    fn disk_config(dir: &std::path::Path) -> StoreConfig {
        StoreConfig {
            volumes: Some(VolumeConfig {
                dir: dir.to_owned(),
                volume_size: 1 << 20,
                volume_count: 3,
                fsync: Fsync::Never,
                disk: None,
            }),
            memory_max_bytes: 1 << 20,
            admit_after_reads: 3,
            admit_window_ms: 60_000,
        }
    }

    /// Puts are written outside the bank lock; racing puts, deletes, incrs, touches and resets of the same
    /// keys must leave memory agreeing with what a restart replays from the log. Rounds of a few ops per
    /// thread, started together, so that the last ops of each round race.
    #[test]
    fn racing_writers_leave_memory_and_log_in_agreement() {
        let keys: Vec<String> = (0..2).map(|k| format!("k{k}")).collect();
        let snapshot = |store: &Store| -> Vec<Option<Vec<u8>>> {
            keys.iter().map(|k| get(store, "b", k).map(|(v, _)| v)).collect()
        };
        let mut disagreements = 0;
        for round in 0..120u64 {
            // A fresh store per round keeps each restart's replay short.
            let dir = tempfile::tempdir().unwrap();
            let mut cfg = disk_config(dir.path());
            if let Some(v) = cfg.volumes.as_mut() {
                v.volume_size = 16 << 20;
            }
            let (store, _) = Store::open(cfg.clone()).unwrap();
            let barrier = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                for t in 0..4u64 {
                    let (store, keys, barrier) = (&store, &keys, &barrier);
                    s.spawn(move || {
                        let mut x = (round * 4 + t).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                        barrier.wait();
                        for i in 0..8u64 {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            let key = keys[(x % 2) as usize].as_bytes();
                            let now = now_ms();
                            match (x >> 8) % 8 {
                                0..=3 => {
                                    let mut value = format!("{round}.{t}.{i}.").into_bytes();
                                    value.resize(value.len() + (x >> 20) as usize % 30_000, b'x');
                                    store
                                        .put(
                                            "b",
                                            key,
                                            &value,
                                            0,
                                            Ttl::Forever,
                                            now,
                                            Access::Wait,
                                            Keep::Earned,
                                        )
                                        .unwrap();
                                }
                                4 => {
                                    store
                                        .put(
                                            "b",
                                            key,
                                            b"5",
                                            0,
                                            Ttl::Millis(60_000),
                                            now,
                                            Access::Wait,
                                            Keep::Earned,
                                        )
                                        .unwrap();
                                    store.touch("b", key, now, Access::Wait).unwrap();
                                }
                                5 => {
                                    store.delete("b", key, now, Access::Wait).unwrap();
                                }
                                6 => {
                                    let _ =
                                        store.update("b", key, now, Access::Wait, |v, f| -> Result<_, ()> {
                                            Ok(([v, &b"+"[..]].concat(), f, ()))
                                        });
                                }
                                _ => store.reset("b").unwrap(),
                            }
                        }
                    });
                }
            });
            let held = snapshot(&store);
            store.sync().unwrap();
            drop(store);
            let (store, _) = Store::open(cfg.clone()).unwrap();
            disagreements += usize::from(snapshot(&store) != held);
        }
        assert_eq!(disagreements, 0, "rounds whose restart did not replay what memory held");
    }

    #[test]
    fn reads_do_not_create_banks() {
        let store = Store::new();
        assert!(get(&store, "b", "k").is_none());
        store.put("b", b"k", b"1", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
        store.put("a", b"k", b"1", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
        let names = store.bank_names(1 << 20).unwrap();
        assert_eq!(names, [Box::from("b"), Box::from("a")]);
    }

    #[test]
    fn sweep_counts_what_it_removes() {
        let store = Store::new();
        for i in 0..500u32 {
            store.put("b", &i.to_be_bytes(), b"v", 0, Ttl::Millis(1), 0, Access::Wait, Keep::Earned).unwrap();
        }
        assert_eq!(store.sweep(10, Duration::from_secs(5)).removed, 500);
        assert_eq!(store.counters().expired_sweep.load(Ordering::Relaxed), 500);
        assert_eq!(store.totals().keys, 0);
        assert_eq!(store.ram_bytes(), 0);
    }

    #[test]
    fn concurrent_puts_in_many_banks() {
        let store = Arc::new(Store::new());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let store = Arc::clone(&store);
                thread::spawn(move || {
                    for i in 0..1000u32 {
                        let bank = format!("bank{}", i % 7);
                        store
                            .put(
                                &bank,
                                &(t * 1000 + i).to_be_bytes(),
                                b"v",
                                0,
                                Ttl::Forever,
                                0,
                                Access::Wait,
                                Keep::Earned,
                            )
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let totals = store.totals();
        assert_eq!((totals.banks, totals.keys), (7, 4000));
        assert_eq!(store.ram_bytes(), 4000);
    }

    #[test]
    fn memory_only_store_evicts_whole_entries_within_its_limit() {
        let store = Store::memory_only(StoreConfig { memory_max_bytes: 10_000, ..StoreConfig::default() });
        for i in 0..100u32 {
            store
                .put("b", &i.to_be_bytes(), &[7; 1000], 0, Ttl::Forever, 0, Access::Wait, Keep::Earned)
                .unwrap();
            assert!(store.ram_bytes() <= 10_000);
        }
        assert!(store.totals().keys <= 10);
        assert!(store.counters().evictions.load(Ordering::Relaxed) >= 90);
        let err = store
            .put("b", b"huge", &[0; 20_000], 0, Ttl::Forever, 0, Access::Wait, Keep::Earned)
            .unwrap_err();
        assert!(err.to_string().contains("memory_max_bytes"), "{err}");
    }

    #[test]
    fn disk_store_survives_a_restart_with_every_op_kind() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        {
            let (s, _) = Store::open(disk_config(dir.path())).unwrap();
            s.put("a", b"kept", b"1", 0, Ttl::Forever, now, Access::Wait, Keep::Earned).unwrap();
            s.put("a", b"deleted", b"2", 0, Ttl::Forever, now, Access::Wait, Keep::Earned).unwrap();
            s.delete("a", b"deleted", now, Access::Wait).unwrap();
            s.put("a", b"counter", b"5", 0, Ttl::Forever, now, Access::Wait, Keep::Earned).unwrap();
            let r = s
                .update("a", b"counter", now, Access::Wait, |old, _| {
                    Ok::<_, ()>(([old, &b"0"[..]].concat(), 0, ()))
                })
                .unwrap();
            assert_eq!(r, Lookup::Hit(Ok(())));
            s.put("a", b"short", b"3", 0, Ttl::Millis(100_000), now, Access::Wait, Keep::Earned).unwrap();
            s.touch("a", b"short", now + 50_000, Access::Wait).unwrap();
            s.put("b", b"gone", b"4", 0, Ttl::Forever, now, Access::Wait, Keep::Earned).unwrap();
            s.reset("b").unwrap();
            s.put("b", b"after-reset", b"5", 1, Ttl::Forever, now, Access::Wait, Keep::Earned).unwrap();
            s.sync().unwrap();
        }
        let (s, report) = Store::open(disk_config(dir.path())).unwrap();
        assert_eq!(report.unwrap().records, 10);
        assert_eq!(get(&s, "a", "kept"), Some((b"1".to_vec(), Tier::Disk)));
        assert_eq!(get(&s, "a", "deleted"), None);
        assert_eq!(get(&s, "a", "counter").unwrap().0, b"50");
        assert_eq!(get(&s, "b", "gone"), None);
        let keys = s.keys("b", now, 1 << 20).unwrap();
        assert_eq!(keys.names(), [&b"after-reset"[..]]);
        // The touch moved the deadline 50 s on: alive at +120 s, gone at +160 s.
        let alive = s.get("a", b"short", now + 120_000, false, Access::Wait, |_, _| ()).unwrap();
        assert!(matches!(alive, Lookup::Hit(_)));
        assert_eq!(
            s.get("a", b"short", now + 160_000, false, Access::Wait, |_, _| ()).unwrap(),
            Lookup::Expired
        );
    }

    #[test]
    fn start_up_sizes_each_bank_from_a_census_of_its_puts() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        {
            let (s, _) = Store::open(disk_config(dir.path())).unwrap();
            for i in 0..300 {
                s.put(
                    "a",
                    format!("k{i}").as_bytes(),
                    b"1",
                    0,
                    Ttl::Forever,
                    now,
                    Access::Wait,
                    Keep::Earned,
                )
                .unwrap();
            }
            s.put("b", b"x", b"1", 0, Ttl::Forever, now, Access::Wait, Keep::Earned).unwrap();
            s.put("b", b"y", b"1", 0, Ttl::Forever, now, Access::Wait, Keep::Earned).unwrap();
            s.delete("b", b"y", now, Access::Wait).unwrap();
            // One key written 2,000 times: the census counts every put.
            for _ in 0..2000 {
                s.put("c", b"same", b"1", 0, Ttl::Forever, now, Access::Wait, Keep::Earned).unwrap();
            }
            s.sync().unwrap();
        }
        let counts = volume::census(dir.path(), 3);
        let count = |bank: &str| counts.get(bank.as_bytes()).copied();
        assert_eq!((count("a"), count("b"), count("c"), count("d")), (Some(300), Some(2), Some(2000), None));
        let (s, _) = Store::open(disk_config(dir.path())).unwrap();
        let table = s.table.read().unwrap();
        let bank = |name: &str| table.get(name).unwrap().lock_wait();
        assert_eq!(bank("a").len(), 300);
        assert!(bank("a").index_capacity() >= 300);
        assert_eq!(bank("b").len(), 1);
        // Sized for 2,000 keys, then trimmed to what the one key needs.
        assert_eq!(bank("c").len(), 1);
        assert!(bank("c").index_capacity() < 16, "{}", bank("c").index_capacity());
    }

    #[test]
    fn disk_reads_are_admitted_to_memory_after_three() {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = Store::open(disk_config(dir.path())).unwrap();
        s.put("files", b"f", b"body", 1, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
        let tiers: Vec<Tier> = (0..4).map(|_| get(&s, "files", "f").unwrap().1).collect();
        assert_eq!(tiers, [Tier::Disk, Tier::Disk, Tier::Disk, Tier::Memory]);
        assert_eq!(s.ram_bytes(), 4);
        // An overwrite drops the RAM copy: the next read is from disk, with the new body.
        s.put("files", b"f", b"new body", 1, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
        assert_eq!(get(&s, "files", "f"), Some((b"new body".to_vec(), Tier::Disk)));
        assert_eq!(s.ram_bytes(), 0);
    }

    /// A put that asks for [`Keep::Memory`] is read from RAM at once under a disk store, and its record
    /// still brings it back after a restart; [`Keep::Earned`] keeps CacheFS's admission rule.
    #[test]
    fn a_put_kept_in_memory_is_read_from_ram_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (s, _) = Store::open(disk_config(dir.path())).unwrap();
            s.put("b", b"k", b"value", 0, Ttl::Forever, 0, Access::Wait, Keep::Memory).unwrap();
            s.put("b", b"f", b"file", 1, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
            assert_eq!(s.ram_bytes(), 5);
            assert_eq!(get(&s, "b", "k"), Some((b"value".to_vec(), Tier::Memory)));
            let tiers: Vec<Tier> = (0..4).map(|_| get(&s, "b", "f").unwrap().1).collect();
            assert_eq!(tiers, [Tier::Disk, Tier::Disk, Tier::Disk, Tier::Memory]);
            assert_eq!(s.counters().reads_disk.load(Ordering::Relaxed), 3);
            s.sync().unwrap();
        }
        let (s, _) = Store::open(disk_config(dir.path())).unwrap();
        assert_eq!(get(&s, "b", "k"), Some((b"value".to_vec(), Tier::Disk)));
    }

    /// With a disk store, values kept in RAM by their puts still stay within `memory_max_bytes`: eviction
    /// drops RAM copies, and every value can still be read (from disk).
    #[test]
    fn puts_kept_in_memory_stay_within_the_limit_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = disk_config(dir.path());
        config.memory_max_bytes = 256 << 10;
        let (s, _) = Store::open(config).unwrap();
        let value = |i: u32| vec![(i % 251) as u8; 1000];
        for i in 0..1000u32 {
            s.put("b", &i.to_be_bytes(), &value(i), 1, Ttl::Forever, 0, Access::Wait, Keep::Memory).unwrap();
        }
        // (Room is made before each put for its estimated cost; a slot array that doubles can overshoot by
        // its growth until the next put, as without a disk store.)
        assert!(s.memory_bytes() <= 256 << 10, "{} bytes", s.memory_bytes());
        assert!(s.ram_bytes() > 0, "recent values are in RAM");
        assert!(s.counters().evictions.load(Ordering::Relaxed) > 0);
        assert_eq!(s.totals().keys, 1000, "only RAM copies were dropped");
        for i in 0..1000u32 {
            let got = s.get("b", &i.to_be_bytes(), 0, false, Access::Wait, |v, _| v.to_vec()).unwrap();
            assert_eq!(got.hit().map(|(v, _)| v), Some(value(i)), "key {i}");
        }
    }

    /// The reactor's access under a disk store: whatever would append a record or read the disk is `Busy`
    /// before it does anything (nothing logged, changed, counted, nor handed to the reader), so a worker
    /// can run it afresh; a read of a value in RAM runs.
    #[test]
    fn try_access_refuses_disk_io_with_no_side_effect() {
        let dir = tempfile::tempdir().unwrap();
        let now = now_ms();
        let records = {
            let (s, _) = Store::open(disk_config(dir.path())).unwrap();
            s.put("b", b"k", b"1", 0, Ttl::Millis(60_000), now, Access::Wait, Keep::Memory).unwrap();
            s.put("b", b"f", b"2", 0, Ttl::Forever, now, Access::Wait, Keep::Earned).unwrap();
            fn busy<T>(r: Result<T, StoreError>) -> bool {
                matches!(r, Err(StoreError::Busy))
            }
            assert!(busy(s.put("b", b"k", b"3", 0, Ttl::Forever, now, Access::Try, Keep::Memory)));
            assert!(busy(s.put("b", b"n", b"3", 0, Ttl::Forever, now, Access::Try, Keep::Memory)));
            assert!(busy(s.put("b", b"k", b"3", 0, Ttl::Expired, now, Access::Try, Keep::Memory)));
            assert!(busy(s.delete("b", b"k", now, Access::Try)));
            assert!(busy(s.touch("b", b"k", now + 1000, Access::Try)));
            assert!(busy(s.update("b", b"k", now, Access::Try, |_, f| Ok::<_, ()>((b"9".to_vec(), f, ())))));
            let mut called = false;
            assert!(busy(s.get("b", b"k", now + 1000, true, Access::Try, |_, _| called = true)));
            assert!(busy(s.get("b", b"f", now, false, Access::Try, |_, _| called = true)));
            assert!(!called, "a refused read handed nothing on");
            assert_eq!(s.counters().reads_disk.load(Ordering::Relaxed), 0);
            assert_eq!(s.counters().reads_memory.load(Ordering::Relaxed), 0);
            // A value in RAM is read on the reactor.
            let hit = s.get("b", b"k", now, false, Access::Try, |v, _| v.to_vec()).unwrap();
            assert_eq!(hit.hit().map(|(v, served)| (v, served.tier)), Some((b"1".to_vec(), Tier::Memory)));
            // The refused disk read did not count toward admission: three reads still come from disk.
            let tiers: Vec<Tier> = (0..4).map(|_| get(&s, "b", "f").unwrap().1).collect();
            assert_eq!(tiers, [Tier::Disk, Tier::Disk, Tier::Disk, Tier::Memory]);
            assert_eq!(s.totals().keys, 2);
            s.sync().unwrap();
            drop(s);
            Store::open(disk_config(dir.path())).unwrap().1.unwrap().records
        };
        assert_eq!(records, 2, "only the two puts were logged");
        let (s, _) = Store::open(disk_config(dir.path())).unwrap();
        assert_eq!(get(&s, "b", "k").unwrap().0, b"1");
        // The deadline the refused touches would have moved is the put's.
        let at = |t: u64| s.get("b", b"k", t, false, Access::Wait, |_, _| ()).unwrap();
        assert_eq!(at(now + 60_000), Lookup::Expired);
    }

    /// Before, each pass of the sweep started at the first bank and spent its budget there, so expired
    /// entries in later banks were never reclaimed. Now it visits only banks with deadlines, in turn, from
    /// where the last pass stopped.
    #[test]
    fn the_sweep_reaches_every_bank_with_deadlines_whatever_comes_first() {
        let store = Store::new();
        for i in 0..300_000u32 {
            store.put("big", &i.to_be_bytes(), b"1", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
        }
        for b in 0..20 {
            for i in 0..2_000u32 {
                store
                    .put(
                        &format!("b{b}"),
                        &i.to_be_bytes(),
                        b"1",
                        0,
                        Ttl::Millis(1),
                        0,
                        Access::Wait,
                        Keep::Earned,
                    )
                    .unwrap();
            }
        }
        assert_eq!(store.expiring.len(), 20, "the big bank has no deadlines");
        let mut removed = 0;
        for _ in 0..1000 {
            removed += store.sweep(10, Duration::from_millis(5)).removed;
            if removed == 40_000 {
                break;
            }
        }
        assert_eq!(removed, 40_000);
        assert_eq!(store.totals().keys, 300_000);
        assert_eq!(store.expiring.len(), 0, "banks with nothing left to expire leave the ring");
    }

    /// Eviction visits only banks that hold entries: a hundred thousand empty banks cost it nothing, where
    /// before every eviction walked the whole bank list.
    #[test]
    fn eviction_ignores_empty_banks() {
        let store = Store::memory_only(StoreConfig { memory_max_bytes: 64 << 20, ..StoreConfig::default() });
        for b in 0..100_000 {
            let bank = format!("empty{b}");
            store.put(&bank, b"k", b"1", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
            store.reset(&bank).unwrap();
        }
        // Reset banks are left in the ring until an eviction pass finds them empty: one pass clears them.
        let _ = store.make_room(usize::MAX / 2, Access::Wait);
        assert_eq!(store.evictable.len(), 0);
        for i in 0..1000u32 {
            store
                .put("hot", &i.to_be_bytes(), &[0; 100], 0, Ttl::Forever, 0, Access::Wait, Keep::Earned)
                .unwrap();
        }
        assert_eq!(store.evictable.len(), 1);
        let used = store.memory_bytes();
        assert!(used > 100_000 * BANK_BYTES, "empty banks still count: {used}");
    }

    /// Fills a 4 MB memory-only store until it evicts, then reads every key, so that every entry has its
    /// second chance to come.
    fn full_of_entries_all_read() -> (Store, u32) {
        let store = Store::memory_only(StoreConfig { memory_max_bytes: 4 << 20, ..StoreConfig::default() });
        let mut n = 0u32;
        while store.counters().evictions.load(Ordering::Relaxed) == 0 {
            store.put("b", &n.to_be_bytes(), b"1", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
            n += 1;
        }
        for i in 0..n {
            let _ = store.get("b", &i.to_be_bytes(), 0, false, Access::Wait, |_, _| ());
        }
        (store, n)
    }

    /// A cache whose entries were all read recently still takes new ones: eviction goes on until it has
    /// given every entry its second chance. (Before, it gave up after one slice per bank and turn, and puts
    /// into a bank of more than 16k read entries were refused with `Out of memory`.)
    #[test]
    fn a_put_is_not_refused_because_every_entry_was_read() {
        let (store, n) = full_of_entries_all_read();
        assert!(n > 4 * SLICE as u32, "{n} keys: too few to need more than four slices");
        for i in 0..100u32 {
            let key = (n + i).to_be_bytes();
            if let Err(e) = store.put("b", &key, b"1", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned) {
                panic!("put {i} refused: {e}");
            }
        }
    }

    /// On the reactor ([`Access::Try`]) eviction stays within three turns of one slice per bank; an op that
    /// needs more is `Busy`, so that a worker runs it.
    #[test]
    fn eviction_on_the_reactor_is_bounded_and_hands_over() {
        let (store, n) = full_of_entries_all_read();
        assert!(n > 4 * SLICE as u32, "{n} keys: too few to need more than four slices");
        let key = n.to_be_bytes();
        assert!(matches!(
            store.put("b", &key, b"1", 0, Ttl::Forever, 0, Access::Try, Keep::Earned),
            Err(StoreError::Busy)
        ));
        store.put("b", &key, b"1", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
    }

    /// `bank.keys` walks a slice at a time and lets go of the bank between slices: writes to the same bank
    /// get in while it walks (before, the whole walk held the lock).
    #[test]
    fn listing_keys_lets_writes_to_the_bank_in_between_slices() {
        let store = Arc::new(Store::new());
        for i in 0..200_000u32 {
            store.put("b", &i.to_be_bytes(), b"1", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
        }
        let walking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let writer = {
            let (store, walking) = (Arc::clone(&store), Arc::clone(&walking));
            thread::spawn(move || {
                let mut during = 0u32;
                while walking.load(Ordering::Acquire) {
                    let key = (1_000_000 + during).to_be_bytes();
                    store.put("b", &key, b"2", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
                    during += 1;
                }
                during
            })
        };
        // Let the writer start, then walk.
        while store.totals().keys == 200_000 {
            std::hint::spin_loop();
        }
        let before = store.totals().keys;
        let keys = store.keys("b", 0, usize::MAX).unwrap();
        let after = store.totals().keys;
        walking.store(false, Ordering::Release);
        writer.join().unwrap();
        assert!(
            after > before,
            "no write got in while the keys were listed ({before} keys before and after)"
        );
        assert!(keys.len() as u64 >= before && keys.len() as u64 <= after, "{} keys listed", keys.len());
    }

    /// The reactor's access: a bank that is locked is `Busy` at once, never waited for, and nothing is done.
    #[test]
    fn try_access_never_waits_and_changes_nothing() {
        let store = Store::new();
        store.put("b", b"k", b"1", 0, Ttl::Forever, 0, Access::Wait, Keep::Earned).unwrap();
        let table = store.table(Access::Wait).unwrap();
        let bank = Arc::clone(table.get("b").unwrap());
        drop(table);
        let held = bank.lock_wait();
        assert!(matches!(
            store.put("b", b"k", b"2", 0, Ttl::Forever, 0, Access::Try, Keep::Earned),
            Err(StoreError::Busy)
        ));
        assert!(matches!(
            store.get("b", b"k", 0, false, Access::Try, |v, _| v.to_vec()),
            Err(StoreError::Busy)
        ));
        assert!(matches!(store.delete("b", b"k", 0, Access::Try), Err(StoreError::Busy)));
        drop(held);
        assert_eq!(get(&store, "b", "k").unwrap().0, b"1");
        // A new bank needs the table's write lock: held for reading elsewhere, the reactor does not wait.
        let reading = store.table(Access::Wait).unwrap();
        assert!(matches!(
            store.put("new", b"k", b"1", 0, Ttl::Forever, 0, Access::Try, Keep::Earned),
            Err(StoreError::Busy)
        ));
        drop(reading);
        assert!(store.put("new", b"k", b"1", 0, Ttl::Forever, 0, Access::Try, Keep::Earned).is_ok());
    }

    /// Before, a put whose own deadline had passed by the restart was skipped, so the touch that had moved
    /// its deadline on found nothing to apply to and the key was lost.
    #[test]
    fn a_touch_moves_the_deadline_for_good_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        // The puts' own deadlines have passed when the store reopens; the touches' have not.
        let t0 = now_ms() - 12_000;
        {
            let (s, _) = Store::open(disk_config(dir.path())).unwrap();
            s.put("b", b"k", b"1", 0, Ttl::Millis(10_000), t0, Access::Wait, Keep::Earned).unwrap();
            s.touch("b", b"k", t0 + 8_000, Access::Wait).unwrap();
            s.put("b", b"g", b"2", 0, Ttl::Millis(10_000), t0, Access::Wait, Keep::Earned).unwrap();
            let got = s.get("b", b"g", t0 + 9_000, true, Access::Wait, |v, _| v.to_vec()).unwrap();
            assert!(matches!(got, Lookup::Hit(_)));
            s.sync().unwrap();
        }
        let (s, _) = Store::open(disk_config(dir.path())).unwrap();
        let at = |key: &[u8], now: u64| s.get("b", key, now, false, Access::Wait, |v, _| v.to_vec()).unwrap();
        assert!(matches!(at(b"k", t0 + 12_000), Lookup::Hit(_)), "touch");
        assert!(matches!(at(b"g", t0 + 12_000), Lookup::Hit(_)), "getouch");
        assert_eq!(at(b"k", t0 + 18_001), Lookup::Expired);
        assert_eq!(at(b"g", t0 + 19_001), Lookup::Expired);
    }

    /// Only a key's last record says which deadline holds: a touch whose deadline has passed by the
    /// restart must not delete the entry that a later touch kept alive (fault seed 2409).
    #[test]
    fn a_stale_touch_does_not_undo_a_later_touch_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = now_ms() - 15_000;
        {
            let (s, _) = Store::open(disk_config(dir.path())).unwrap();
            s.put("b", b"k", b"1", 0, Ttl::Millis(10_000), t0, Access::Wait, Keep::Earned).unwrap();
            // Deadline t0 + 11 s: passed when the store reopens.
            s.touch("b", b"k", t0 + 1_000, Access::Wait).unwrap();
            // Deadline t0 + 19 s: still ahead.
            let got = s.get("b", b"k", t0 + 9_000, true, Access::Wait, |v, _| v.to_vec()).unwrap();
            assert!(matches!(got, Lookup::Hit(_)));
            s.sync().unwrap();
        }
        let (s, _) = Store::open(disk_config(dir.path())).unwrap();
        let at = |now: u64| s.get("b", b"k", now, false, Access::Wait, |v, _| v.to_vec()).unwrap();
        assert!(matches!(at(t0 + 16_000), Lookup::Hit(_)));
        assert_eq!(at(t0 + 19_001), Lookup::Expired);
    }
}
