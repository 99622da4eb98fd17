//! A slab whose cells live in fixed-size chunks: an index names a cell for as long as its entry lives, as in
//! the `slab` crate, but growing never moves a cell. One doubling `Vec` of a million 64-byte slots would
//! hold up to twice what it needs, copy everything on each doubling, and leave the freed old half resident
//! for a while (the allocator returns big blocks lazily): at a million keys that alone moved the RSS per key
//! by tens of bytes from run to run. Here the overshoot is at most one chunk, and growth copies nothing past
//! the first chunk.

use std::ops::{Index, IndexMut};

/// Cells per chunk: 4096 cells of 32 bytes are 128 KiB, small beside a big bank and allocated whole.
const CHUNK: usize = 4096;

/// Marks the end of the list of vacant cells.
const NONE: usize = usize::MAX;

enum Cell<T> {
    /// Free, with the index of the next free cell (or `NONE`).
    Vacant(usize),
    Occupied(T),
}

/// Entries at stable indices, in chunks of [`CHUNK`] cells.
pub struct Slots<T> {
    /// Every chunk is full but the last. The first chunk grows by doubling up to `CHUNK` cells (so a small
    /// bank stays small); later chunks are allocated whole, and none is ever reallocated past `CHUNK`.
    chunks: Vec<Vec<Cell<T>>>,
    /// Occupied cells.
    len: usize,
    /// The vacant cell to fill next: the last one freed (`NONE` when there is none).
    free: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots { chunks: Vec::new(), len: 0, free: NONE }
    }
}

impl<T> Slots<T> {
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
        match self.chunks.last() {
            Some(last) => (self.chunks.len() - 1) * CHUNK + last.len(),
            None => 0,
        }
    }

    /// Stores `value` in a vacant cell, or a new one, and returns its index.
    pub fn insert(&mut self, value: T) -> usize {
        self.len += 1;
        if self.free != NONE {
            let i = self.free;
            let cell = self.cell_mut(i);
            let Cell::Vacant(next) = *cell else { unreachable!("the free list holds vacant cells only") };
            *cell = Cell::Occupied(value);
            self.free = next;
            return i;
        }
        let i = self.span();
        let last = match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last,
            _ => {
                // The first chunk starts small; later ones are only made once a bank is big.
                let cells = if self.chunks.is_empty() { 4 } else { CHUNK };
                self.chunks.push(Vec::with_capacity(cells));
                let n = self.chunks.len() - 1;
                &mut self.chunks[n]
            }
        };
        if last.len() == last.capacity() {
            // Doubling, but never past `CHUNK`, where `Vec::push` would go on doubling.
            last.reserve_exact(last.capacity().clamp(1, CHUNK - last.len()));
        }
        last.push(Cell::Occupied(value));
        i
    }

    /// Empties the cell at `i` and returns what it held.
    ///
    /// # Panics
    /// If the cell is vacant: callers only remove indices they got from [`Slots::insert`] and still hold.
    pub fn remove(&mut self, i: usize) -> T {
        let free = self.free;
        let cell = self.cell_mut(i);
        match std::mem::replace(cell, Cell::Vacant(free)) {
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
        match self.chunks.get(i / CHUNK)?.get(i % CHUNK)? {
            Cell::Occupied(value) => Some(value),
            Cell::Vacant(_) => None,
        }
    }

    /// The entry at `i`, if the cell exists and is occupied.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        match self.chunks.get_mut(i / CHUNK)?.get_mut(i % CHUNK)? {
            Cell::Occupied(value) => Some(value),
            Cell::Vacant(_) => None,
        }
    }

    /// Every entry with its index, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.chunks.iter().flatten().enumerate().filter_map(|(i, cell)| match cell {
            Cell::Occupied(value) => Some((i, value)),
            Cell::Vacant(_) => None,
        })
    }

    fn cell_mut(&mut self, i: usize) -> &mut Cell<T> {
        &mut self.chunks[i / CHUNK][i % CHUNK]
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
            s.iter().map(|(i, v)| (i, *v)).collect::<Vec<_>>(),
            [(0, "a"), (1, "d"), (2, "c"), (3, "e")]
        );
        *s.get_mut(c).unwrap() = "C";
        assert_eq!(s[c], "C");
        assert_eq!(s.get(99), None);
    }

    #[test]
    fn chunks_never_grow_past_their_size() {
        let mut s = Slots::default();
        for i in 0..CHUNK * 2 + 10 {
            assert_eq!(s.insert(i), i);
        }
        assert_eq!(s.chunks.len(), 3);
        assert!(s.chunks.iter().all(|c| c.capacity() == CHUNK), "full chunks are allocated exactly");
        assert_eq!(s[CHUNK], CHUNK);
        for i in (0..s.span()).step_by(3) {
            assert_eq!(s.remove(i), i);
        }
        let freed = s.span() - s.len();
        for _ in 0..freed {
            assert!(s.insert(0) < CHUNK * 2 + 10);
        }
        assert_eq!(s.span(), CHUNK * 2 + 10, "vacant cells are filled before new ones are made");
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
