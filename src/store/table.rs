//! The bank table, the banks themselves, and the rings that let bank-wide maintenance (eviction, the expiry
//! sweep) visit only the banks that need it, in turn.
//!
//! A server may hold a million banks, most of them empty or without lifetimes. Eviction and the sweep must
//! cost the same with one bank or a million, so they never walk the table: each walks a [`Ring`] of the
//! banks that have something for it (entries to evict; entries with a deadline), round robin from where it
//! last stopped. A bank joins a ring when an op gives it something (under its lock) and leaves when the
//! walker finds it has nothing left (also under its lock), so membership never goes stale.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use hashbrown::HashMap;

use super::bank::BankMap;

/// How a caller may take a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Wait for it (workers, maintenance).
    Wait,
    /// Take it only if it is free (the reactor thread, which must never wait on a bank).
    Try,
}

/// Index of a ring in [`Bank::rings`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    /// Banks holding entries (or RAM copies) that eviction may drop.
    Evictable = 0,
    /// Banks holding entries with a deadline, for the expiry sweep.
    Expiring = 1,
}

/// Not in a ring.
const OUT: usize = usize::MAX;

/// A named bank behind its own lock.
pub struct Bank {
    name: Box<str>,
    map: Mutex<BankMap>,
    /// The bank's place in each ring ([`RingKind`]), or `OUT`. Changes between `OUT` and a place only
    /// under the bank's lock; a place changes (another member left) only under the ring's lock.
    rings: [AtomicUsize; 2],
}

impl Bank {
    fn new(name: &str) -> Bank {
        Bank {
            name: name.into(),
            map: Mutex::new(BankMap::named(name.len())),
            rings: [AtomicUsize::new(OUT), AtomicUsize::new(OUT)],
        }
    }

    /// The bank's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Locks the bank, waiting or not as `access` says. A worker that panicked while holding the lock
    /// leaves a map that is still structurally sound (every method restores its invariants before it can
    /// panic), so poisoning is ignored rather than taking the whole server down.
    pub fn lock(&self, access: Access) -> Option<MutexGuard<'_, BankMap>> {
        match access {
            Access::Wait => Some(self.map.lock().unwrap_or_else(PoisonError::into_inner)),
            Access::Try => match self.map.try_lock() {
                Ok(guard) => Some(guard),
                Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            },
        }
    }

    /// Locks the bank, waiting.
    pub fn lock_wait(&self) -> MutexGuard<'_, BankMap> {
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the bank is in ring `kind` (read under the bank's lock for a stable answer).
    pub fn in_ring(&self, kind: RingKind) -> bool {
        self.rings[kind as usize].load(Ordering::Relaxed) != OUT
    }
}

/// Banks by name, and in creation order.
#[derive(Default)]
pub struct Table {
    by_name: HashMap<Box<str>, Arc<Bank>>,
    /// Banks in creation order, for `bank.list`.
    order: Vec<Arc<Bank>>,
}

impl Table {
    /// The bank named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Bank>> {
        self.by_name.get(name)
    }

    /// The bank named `name`, created if needed; true when it was created.
    pub fn get_or_create(&mut self, name: &str) -> (Arc<Bank>, bool) {
        if let Some(bank) = self.by_name.get(name) {
            return (Arc::clone(bank), false);
        }
        let bank = Arc::new(Bank::new(name));
        self.by_name.insert(name.into(), Arc::clone(&bank));
        self.order.push(Arc::clone(&bank));
        (bank, true)
    }

    /// Banks in creation order.
    pub fn order(&self) -> &[Arc<Bank>] {
        &self.order
    }
}

/// Banks that have something for one kind of bank-wide work, visited round robin.
pub struct Ring {
    kind: RingKind,
    inner: Mutex<RingInner>,
}

#[derive(Default)]
struct RingInner {
    members: Vec<Arc<Bank>>,
    /// The next member to visit.
    cursor: usize,
}

impl Ring {
    /// An empty ring of `kind`.
    pub fn new(kind: RingKind) -> Ring {
        Ring { kind, inner: Mutex::new(RingInner::default()) }
    }

    fn inner(&self) -> MutexGuard<'_, RingInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `bank` if it is not a member. The caller holds the bank's lock (lock order: bank → ring).
    pub fn join(&self, bank: &Arc<Bank>) {
        let place = &bank.rings[self.kind as usize];
        if place.load(Ordering::Relaxed) != OUT {
            return;
        }
        let mut inner = self.inner();
        place.store(inner.members.len(), Ordering::Relaxed);
        inner.members.push(Arc::clone(bank));
    }

    /// Removes `bank` if it is a member. The caller holds the bank's lock.
    pub fn leave(&self, bank: &Bank) {
        let place = &bank.rings[self.kind as usize];
        if place.load(Ordering::Relaxed) == OUT {
            return;
        }
        let mut inner = self.inner();
        let at = place.load(Ordering::Relaxed);
        place.store(OUT, Ordering::Relaxed);
        inner.members.swap_remove(at);
        // The last member now stands where the one that left stood. The cursor stays: a member moved
        // behind it waits for the next round, which is all the fairness a ring needs.
        if let Some(moved) = inner.members.get(at) {
            moved.rings[self.kind as usize].store(at, Ordering::Relaxed);
        }
    }

    /// The next member in turn, if any.
    pub fn next(&self) -> Option<Arc<Bank>> {
        let mut inner = self.inner();
        if inner.members.is_empty() {
            return None;
        }
        if inner.cursor >= inner.members.len() {
            inner.cursor = 0;
        }
        let bank = Arc::clone(&inner.members[inner.cursor]);
        inner.cursor += 1;
        Some(bank)
    }

    /// Members now.
    pub fn len(&self) -> usize {
        self.inner().members.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_visit_members_in_turn_and_forget_those_that_leave() {
        let mut table = Table::default();
        let banks: Vec<Arc<Bank>> = (0..4).map(|i| table.get_or_create(&format!("b{i}")).0).collect();
        let ring = Ring::new(RingKind::Evictable);
        for bank in &banks {
            ring.join(bank);
            ring.join(bank);
        }
        assert_eq!(ring.len(), 4, "joining twice adds once");
        let names =
            |n: usize| -> Vec<String> { (0..n).map(|_| ring.next().unwrap().name().to_owned()).collect() };
        assert_eq!(names(2), ["b0", "b1"]);
        ring.leave(&banks[0]);
        assert!(!banks[0].in_ring(RingKind::Evictable));
        assert!(banks[3].in_ring(RingKind::Evictable));
        // b3 took b0's place; the turn goes on with b2, then round again.
        assert_eq!(names(4), ["b2", "b3", "b1", "b2"]);
        for bank in &banks {
            ring.leave(bank);
        }
        assert_eq!(ring.len(), 0);
        assert!(ring.next().is_none());
        assert!(!banks[2].in_ring(RingKind::Expiring));
    }

    #[test]
    fn try_lock_does_not_wait() {
        let bank = Bank::new("b");
        let held = bank.lock_wait();
        assert!(bank.lock(Access::Try).is_none());
        drop(held);
        assert!(bank.lock(Access::Try).is_some());
    }
}
