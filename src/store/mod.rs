//! The store: named banks, each behind its own lock, and the background expiry sweep.
//!
//! Lock order, the one rule that keeps this deadlock-free: **bank table → one bank**. The table lock is
//! taken for reading to find a bank and for writing only to create one (never while a bank lock is held);
//! an op then locks exactly the one bank it names and never a second. `bank.list` takes only the table
//! lock. The store knows nothing of sockets or JSON: values are opaque bytes.

pub mod bank;
pub mod index;
pub mod record;
pub mod volume;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use hashbrown::HashMap;

pub use bank::{BankMap, Lookup, Swept, Ttl};

/// Current time in Unix milliseconds: deadlines are absolute so they can outlive a restart.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A named bank behind its own lock.
pub struct Bank {
    name: Box<str>,
    map: Mutex<BankMap>,
}

impl Bank {
    /// The bank's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Locks the bank. A worker that panicked while holding the lock leaves a map that is still
    /// structurally sound (every method restores its invariants before it can panic), so poisoning is
    /// ignored rather than taking the whole server down.
    pub fn lock(&self) -> MutexGuard<'_, BankMap> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct Table {
    by_name: HashMap<Box<str>, Arc<Bank>>,
    /// Banks in creation order, for `bank.list`.
    order: Vec<Arc<Bank>>,
}

/// Counters the store keeps itself.
#[derive(Default)]
pub struct StoreCounters {
    /// Expired entries removed when an op ran into them.
    pub expired_lazy: AtomicU64,
    /// Expired entries removed by the background sweep.
    pub expired_sweep: AtomicU64,
}

/// Totals over every bank, for `stats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Totals {
    /// Number of banks.
    pub banks: u64,
    /// Entries held, including expired ones the sweep has not reached yet.
    pub keys: u64,
    /// Bytes of keys and values held.
    pub bytes: u64,
}

/// All banks.
#[derive(Default)]
pub struct Store {
    table: RwLock<Table>,
    counters: StoreCounters,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store's own counters.
    pub fn counters(&self) -> &StoreCounters {
        &self.counters
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a bank's map if the bank exists. Reads never create a bank.
    pub fn with_bank<R>(&self, name: &str, f: impl FnOnce(&mut BankMap) -> R) -> Option<R> {
        let table = self.table();
        let bank = table.by_name.get(name)?;
        let mut map = bank.lock();
        Some(f(&mut map))
    }

    /// Runs `f` on a bank's map, creating the bank first if needed (only `put` does this).
    pub fn with_bank_or_create<R>(&self, name: &str, f: impl FnOnce(&mut BankMap) -> R) -> R {
        {
            let table = self.table();
            if let Some(bank) = table.by_name.get(name) {
                return f(&mut bank.lock());
            }
        }
        let bank = {
            let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
            match table.by_name.get(name) {
                Some(bank) => Arc::clone(bank),
                None => {
                    let bank = Arc::new(Bank { name: name.into(), map: Mutex::new(BankMap::new()) });
                    table.by_name.insert(name.into(), Arc::clone(&bank));
                    table.order.push(Arc::clone(&bank));
                    bank
                }
            }
        };
        // Banks are never removed, so the bank outlives the table lock; taking its lock afterwards keeps
        // the write lock short.
        let mut map = bank.lock();
        f(&mut map)
    }

    /// Calls `f` with every bank name in creation order.
    pub fn bank_names(&self, mut f: impl FnMut(&str)) {
        for bank in &self.table().order {
            f(bank.name());
        }
    }

    /// Counts lazily expired entries.
    pub fn note_lazy_expiry(&self) {
        self.counters.expired_lazy.fetch_add(1, Ordering::Relaxed);
    }

    /// Totals over every bank; locks each bank briefly, one at a time.
    pub fn totals(&self) -> Totals {
        let banks: Vec<Arc<Bank>> = self.table().order.clone();
        let mut totals = Totals { banks: banks.len() as u64, ..Totals::default() };
        for bank in banks {
            let map = bank.lock();
            totals.keys += map.len() as u64;
            totals.bytes += map.bytes() as u64;
        }
        totals
    }

    /// One pass of the background sweep: each bank is scanned in small locked steps (the lock is dropped
    /// between steps, so ops wait microseconds at most), a full cycle per pass, until the pass's time
    /// budget is spent. Scanning a slot costs nanoseconds, so even ten million keys are covered within
    /// a few passes, and the budget bounds the CPU the sweep can take however many entries expire.
    pub fn sweep(&self, now: u64, budget: Duration) -> u64 {
        const STEP: usize = 1024;
        let started = Instant::now();
        let banks: Vec<Arc<Bank>> = self.table().order.clone();
        let mut removed = 0u64;
        'banks: for bank in banks {
            let mut visited = 0;
            loop {
                let (step, span) = {
                    let mut map = bank.lock();
                    (map.sweep_step(now, STEP), map.sweep_span())
                };
                removed += step.removed as u64;
                visited += step.visited;
                if started.elapsed() >= budget {
                    break 'banks;
                }
                if step.visited == 0 || visited >= span {
                    break;
                }
            }
        }
        self.counters.expired_sweep.fetch_add(removed, Ordering::Relaxed);
        removed
    }
}

/// The background thread that runs [`Store::sweep`] every interval; stops when dropped.
pub struct Sweeper {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Sweeper {
    /// Starts sweeping `store` every `interval`.
    pub fn start(store: Arc<Store>, interval: Duration) -> std::io::Result<Sweeper> {
        let (stop, stopped): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(1);
        // At most a tenth of one core, however many entries expire.
        let budget = (interval / 10).max(Duration::from_millis(1));
        let thread = thread::Builder::new().name("sweeper".into()).spawn(move || {
            // Ends when the `Sweeper` is dropped (the channel disconnects).
            while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let removed = store.sweep(now_ms(), budget);
                if removed > 0 {
                    log::debug!("expiry sweep removed {removed} entries");
                }
            }
        })?;
        Ok(Sweeper { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Sweeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_do_not_create_banks() {
        let store = Store::new();
        assert!(store.with_bank("b", |m| m.len()).is_none());
        store.with_bank_or_create("b", |m| m.put(b"k", b"1", Ttl::Forever, 0));
        store.with_bank_or_create("a", |m| m.put(b"k", b"1", Ttl::Forever, 0));
        let mut names = Vec::new();
        store.bank_names(|n| names.push(n.to_owned()));
        assert_eq!(names, ["b", "a"]);
        assert_eq!(store.with_bank("b", |m| m.len()), Some(1));
    }

    #[test]
    fn sweep_counts_what_it_removes() {
        let store = Store::new();
        store.with_bank_or_create("b", |m| {
            for i in 0..500u32 {
                m.put(&i.to_be_bytes(), b"v", Ttl::Millis(1), 0);
            }
        });
        let removed = store.sweep(10, Duration::from_secs(5));
        assert_eq!(removed, 500);
        assert_eq!(store.counters().expired_sweep.load(Ordering::Relaxed), 500);
        assert_eq!(store.totals().keys, 0);
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
                        store.with_bank_or_create(&bank, |m| {
                            m.put(&(t * 1000 + i).to_be_bytes(), b"v", Ttl::Forever, 0)
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let totals = store.totals();
        assert_eq!(totals.banks, 7);
        assert_eq!(totals.keys, 4000);
    }
}
