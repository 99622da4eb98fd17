//! A slab in memory mapped from the OS: an index names a cell for as long as its entry lives, as in the
//! `slab` crate, but the cells live in a vector whose big blocks come from [`OsPages`].
//!
//! `slab::Slab` keeps its cells in a `Vec` from the global allocator: each doubling copied every slot and
//! left the old block resident for a while (mimalloc purges freed memory lazily), which at a million keys
//! moved the RSS per key by tens of bytes between runs. Mapped, a doubling is an `mremap` that copies
//! nothing and leaves nothing behind, and only the cells in use are resident. (Fixed-size chunks, the other
//! way to avoid the copies, made lookups in a million keys 15–25% slower than one contiguous array.)

use std::ops::{Index, IndexMut};

use allocator_api2::vec::Vec;

use super::os_pages::OsPages;

/// Marks the end of the list of vacant cells.
const NONE: usize = usize::MAX;

enum Cell<T> {
    /// Free, with the index of the next free cell (or `NONE`).
    Vacant(usize),
    Occupied(T),
}

/// Entries at stable indices.
pub struct Slots<T> {
    cells: Vec<Cell<T>, OsPages>,
    /// Occupied cells.
    len: usize,
    /// The vacant cell to fill next: the last one freed (`NONE` when there is none).
    free: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots { cells: Vec::new_in(OsPages), len: 0, free: NONE }
    }
}

impl<T> Slots<T> {
    /// Makes room for `additional` more cells without moving the array again. The room is mapped, not
    /// touched: it costs no RAM until cells are made in it.
    pub fn reserve(&mut self, additional: usize) {
        self.cells.reserve(additional);
    }

    /// Occupied cells.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no cell is occupied.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Cells made so far, vacant or occupied: every index is below this.
    pub fn span(&self) -> usize {
        self.cells.len()
    }

    /// Bytes of the cells made so far. A big array is mapped from the OS and only the pages of cells made
    /// are ever touched, so this, not the capacity, is what it costs in RAM.
    pub fn touched_bytes(&self) -> usize {
        self.cells.len() * std::mem::size_of::<Cell<T>>()
    }

    /// Stores `value` in a vacant cell, or a new one, and returns its index.
    pub fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        if self.free == NONE {
            self.cells.push(Cell::Occupied(value));
            return self.cells.len() - 1;
        }
        let i = self.free;
        let cell = &mut self.cells[i];
        let Cell::Vacant(next) = *cell else { unreachable!("the free list holds vacant cells only") };
        *cell = Cell::Occupied(value);
        self.free = next;
        i
    }

    /// Empties the cell at `i` and returns what it held.
    ///
    /// # Panics
    /// If the cell is vacant: callers only remove indices they got from [`Slots::insert`] and still hold.
    pub fn remove(&mut self, i: usize) -> T {
        let cell = &mut self.cells[i];
        match std::mem::replace(cell, Cell::Vacant(self.free)) {
            Cell::Occupied(value) => {
                self.free = i;
                self.len -= 1;
                value
            }
            Cell::Vacant(next) => {
                *cell = Cell::Vacant(next);
                panic!("removing vacant slot {i}");
            }
        }
    }

    /// The entry at `i`, if the cell exists and is occupied.
    pub fn get(&self, i: usize) -> Option<&T> {
        match self.cells.get(i)? {
            Cell::Occupied(value) => Some(value),
            Cell::Vacant(_) => None,
        }
    }

    /// The entry at `i`, if the cell exists and is occupied.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        match self.cells.get_mut(i)? {
            Cell::Occupied(value) => Some(value),
            Cell::Vacant(_) => None,
        }
    }

    /// Every entry with its index, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.cells.iter().enumerate().filter_map(|(i, cell)| match cell {
            Cell::Occupied(value) => Some((i, value)),
            Cell::Vacant(_) => None,
        })
    }
}

/// Bytes a cell of `T` takes, vacant or not (for tests of entry sizes).
#[cfg(test)]
pub(super) const fn cell_size<T>() -> usize {
    std::mem::size_of::<Cell<T>>()
}

impl<T> Index<usize> for Slots<T> {
    type Output = T;

    fn index(&self, i: usize) -> &T {
        self.get(i).unwrap_or_else(|| panic!("no entry at slot {i}"))
    }
}

impl<T> IndexMut<usize> for Slots<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        self.get_mut(i).unwrap_or_else(|| panic!("no entry at slot {i}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_stable_and_vacant_cells_are_reused() {
        let mut s = Slots::default();
        let a = s.insert("a");
        let b = s.insert("b");
        let c = s.insert("c");
        assert_eq!((a, b, c, s.len(), s.span()), (0, 1, 2, 3, 3));
        assert_eq!(s.remove(b), "b");
        assert_eq!(s.get(b), None);
        assert_eq!((s.len(), s.span()), (2, 3));
        assert_eq!(s.insert("d"), b, "the freed cell is filled first");
        assert_eq!(s.insert("e"), 3);
        assert_eq!(
            s.iter().map(|(i, v)| (i, *v)).collect::<std::vec::Vec<_>>(),
            [(0, "a"), (1, "d"), (2, "c"), (3, "e")]
        );
        *s.get_mut(c).unwrap() = "C";
        assert_eq!(s[c], "C");
        assert_eq!(s.get(99), None);
    }

    #[test]
    fn entries_survive_growth_into_mapped_memory() {
        let mut s = Slots::default();
        for i in 0..200_000usize {
            assert_eq!(s.insert(i.to_string()), i);
        }
        for i in (0..s.span()).step_by(3) {
            assert_eq!(s.remove(i), i.to_string());
        }
        let freed = s.span() - s.len();
        for _ in 0..freed {
            assert!(s.insert(String::new()) < 200_000);
        }
        assert_eq!(s.span(), 200_000, "vacant cells are filled before new ones are made");
        assert!((0..200_000).filter(|i| i % 3 != 0).all(|i| s[i] == i.to_string()));
    }

    #[test]
    #[should_panic(expected = "vacant")]
    fn removing_a_vacant_cell_panics() {
        let mut s = Slots::default();
        let i = s.insert(1);
        s.remove(i);
        s.remove(i);
    }
}
