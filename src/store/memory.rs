//! What the store's memory costs, as counted against `memory_max_bytes`, and the store-wide tallies.
//!
//! Everything the store holds is counted: each entry's allocation (key, value in RAM, lifetime, disk
//! location) at the size the allocator really hands out, each entry's 32-byte slot, each bank's hash
//! index and slot array at their capacity (they do not shrink as entries leave), and each bank's own
//! structures. What is not counted is the process's fixed overhead (code, thread stacks, the allocator's
//! own metadata) and connection buffers, which have their own bounds; the README gives the figures.
//!
//! The tallies are store-wide atomics updated from each op's change to its bank, so `stats` and the
//! eviction check cost the same with one bank or a million.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes a bank costs besides its entries and arrays: the `Bank` (its lock, map header and counters), its
/// place in the bank table (a hash entry and an `Arc`) and in the creation-order list. Measured as the sum
/// of the structures' sizes, rounded up; the name is counted on top, twice (the bank and the table key).
pub const BANK_BYTES: usize = 320;

/// The bytes the allocator hands out for a request of `n` bytes: mimalloc's size classes (the server's
/// allocator). Up to 64 bytes classes are 8 bytes apart; above that there are four classes per doubling,
/// so the rounding never adds more than a quarter. Zero-sized requests allocate nothing.
pub fn alloc_size(n: usize) -> usize {
    const WORD: usize = 8;
    if n == 0 {
        return 0;
    }
    let words = n.div_ceil(WORD);
    if words <= 8 {
        return words * WORD;
    }
    // The class step is a quarter of the largest power of two below `words`.
    let top = usize::BITS - 1 - (words - 1).leading_zeros();
    let step = 1usize << (top - 2);
    words.div_ceil(step) * step * WORD
}

/// The store-wide tallies, kept in step with every bank by [`Usage::apply`].
#[derive(Default)]
pub struct Usage {
    /// Bytes counted against `memory_max_bytes`.
    memory: AtomicUsize,
    /// Bytes of values held in RAM.
    ram: AtomicUsize,
    /// Bytes of the banks' slot arrays and hash indexes.
    index: AtomicUsize,
    /// Bytes of the banks' own structures and names.
    banks: AtomicUsize,
    /// Entries held (including expired ones not yet removed).
    keys: AtomicUsize,
    /// Bytes of keys and values held, in RAM or on disk.
    stored: AtomicUsize,
}

/// One bank's figures, before and after an op, so the difference can be applied to [`Usage`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Bytes counted against the limit.
    pub memory: usize,
    /// Bytes of values in RAM.
    pub ram: usize,
    /// Bytes of the slot array and the hash index.
    pub index: usize,
    /// Entries.
    pub keys: usize,
    /// Bytes of keys and values.
    pub stored: usize,
}

/// A point-in-time copy of [`Usage`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageFigures {
    /// Bytes counted against `memory_max_bytes`.
    pub memory: usize,
    /// Bytes of values held in RAM.
    pub ram: usize,
    /// Bytes of slot arrays and hash indexes.
    pub index: usize,
    /// Bytes of the banks' own structures.
    pub banks: usize,
    /// Entries held.
    pub keys: usize,
    /// Bytes of keys and values held.
    pub stored: usize,
}

fn shift(counter: &AtomicUsize, before: usize, after: usize) {
    // Only a change touches the shared cache line: reads change nothing.
    if after > before {
        counter.fetch_add(after - before, Ordering::Relaxed);
    } else if before > after {
        counter.fetch_sub(before - after, Ordering::Relaxed);
    }
}

impl Usage {
    /// Applies one bank's change.
    pub fn apply(&self, before: Figures, after: Figures) {
        if before == after {
            return;
        }
        shift(&self.memory, before.memory, after.memory);
        shift(&self.ram, before.ram, after.ram);
        shift(&self.index, before.index, after.index);
        shift(&self.keys, before.keys, after.keys);
        shift(&self.stored, before.stored, after.stored);
    }

    /// Counts a new bank's own structures.
    pub fn add_bank(&self, bytes: usize) {
        self.banks.fetch_add(bytes, Ordering::Relaxed);
        self.memory.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes counted against the limit.
    pub fn memory(&self) -> usize {
        self.memory.load(Ordering::Relaxed)
    }

    /// Bytes of values in RAM.
    pub fn ram(&self) -> usize {
        self.ram.load(Ordering::Relaxed)
    }

    /// Every tally.
    pub fn figures(&self) -> UsageFigures {
        let load = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        UsageFigures {
            memory: load(&self.memory),
            ram: load(&self.ram),
            index: load(&self.index),
            banks: load(&self.banks),
            keys: load(&self.keys),
            stored: load(&self.stored),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_mimalloc_classes() {
        let cases = [
            (0, 0),
            (1, 8),
            (8, 8),
            (9, 16),
            (44, 48),
            (64, 64),
            (65, 80),
            (80, 80),
            (81, 96),
            (128, 128),
            (129, 160),
            (1000, 1024),
            (1025, 1280),
            (200 * 1024, 224 * 1024),
        ];
        for (n, want) in cases {
            assert_eq!(alloc_size(n), want, "alloc_size({n})");
        }
        for n in 1..100_000 {
            let size = alloc_size(n);
            assert!(size >= n && size <= n + n / 4 + 8, "alloc_size({n}) = {size}");
        }
    }

    #[test]
    fn usage_follows_changes() {
        let usage = Usage::default();
        let a = Figures { memory: 100, ram: 10, index: 50, keys: 1, stored: 10 };
        usage.apply(Figures::default(), a);
        usage.add_bank(300);
        let f = usage.figures();
        assert_eq!((f.memory, f.ram, f.index, f.banks, f.keys, f.stored), (400, 10, 50, 300, 1, 10));
        usage.apply(a, Figures { memory: 60, ..a });
        assert_eq!(usage.memory(), 360);
    }
}
