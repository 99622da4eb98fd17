//! The allocator of a bank's big arrays (its slots and its hash index): big blocks come straight from the
//! OS and go straight back.
//!
//! Both arrays double as a bank grows. From the global allocator (mimalloc) each doubling leaves the block
//! before it committed for a while (it purges after a delay, and only when it is next called into), and big
//! blocks get transparent huge pages where the system allows them: at a million keys that moved the RSS by
//! tens of bytes per key from run to run. A block from `mmap` is faulted in a page at a time as it is
//! used, `munmap` returns it at once, and on Linux `mremap` grows it in place or moves its pages without
//! copying them, so an array costs what it holds and a doubling copies nothing. Small blocks (small banks)
//! stay with the global allocator, where a system call each would cost more than it saves.

use std::alloc::Layout;
use std::ptr::{self, NonNull};

use allocator_api2::alloc::{AllocError, Allocator, Global};

/// Blocks of this size and up are mapped: 64 pages or more, so whole pages waste little.
const MAP_FROM: usize = 256 * 1024;

/// `mmap` aligns to the page size, which is at least this on every system Rust supports.
const MAP_ALIGN: usize = 4096;

/// Maps big blocks, leaves small ones to the global allocator.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsPages;

/// Whether a block of `layout` is (or was) mapped: the same answer for its allocation and its release.
fn mapped(layout: Layout) -> bool {
    layout.size() >= MAP_FROM && layout.align() <= MAP_ALIGN
}

// SAFETY: a mapped block is valid and unaliased from `mmap` until the `munmap` in `deallocate`, which is
// given the same layout and so takes the same branch; everything else is `Global`'s, which meets the
// contract itself. `OsPages` holds no state, so its copies are interchangeable.
unsafe impl Allocator for OsPages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !mapped(layout) {
            return Global.allocate(layout);
        }
        // SAFETY: a fresh private anonymous mapping (no address hint, no file) cannot touch memory the
        // program already uses; failure is checked below.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(AllocError);
        }
        let p = NonNull::new(p.cast::<u8>()).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if !mapped(layout) {
            return Global.allocate_zeroed(layout);
        }
        // Fresh anonymous pages read as zeroes: writing zeroes would only fault them all in.
        self.allocate(layout)
    }

    unsafe fn grow(&self, ptr: NonNull<u8>, old: Layout, new: Layout) -> Result<NonNull<[u8]>, AllocError> {
        #[cfg(target_os = "linux")]
        if mapped(old) && mapped(new) {
            // SAFETY: the caller passes a block this allocator mapped for `old` (so `old.size()` bytes at
            // `ptr`) and a larger `new`; MREMAP_MAYMOVE lets the kernel extend the mapping or move its pages
            // whole to a new range, keeping their contents, and the old range is then gone. Failure is
            // checked below, and leaves the old mapping as it was.
            let p =
                unsafe { libc::mremap(ptr.as_ptr().cast(), old.size(), new.size(), libc::MREMAP_MAYMOVE) };
            if p == libc::MAP_FAILED {
                return Err(AllocError);
            }
            let p = NonNull::new(p.cast::<u8>()).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(p, new.size()));
        }
        let block = self.allocate(new)?;
        // SAFETY: the new block is at least `old.size()` bytes and distinct from the old one, which the
        // caller passes as a live block of this allocator for `old`, not used again after this call.
        unsafe {
            ptr::copy_nonoverlapping(ptr.as_ptr(), block.cast::<u8>().as_ptr(), old.size());
            self.deallocate(ptr, old);
        }
        Ok(block)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if !mapped(layout) {
            // SAFETY: the caller passes a block allocated with `layout`, which `mapped` says `Global` made.
            return unsafe { Global.deallocate(ptr, layout) };
        }
        // SAFETY: the caller passes a block this allocator mapped for `layout`: exactly `layout.size()`
        // bytes at `ptr`, which nothing uses any more. `munmap` can only fail for arguments that do not
        // name a mapping, which this one does.
        unsafe {
            libc::munmap(ptr.as_ptr().cast(), layout.size());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashbrown::HashTable;

    #[test]
    fn small_and_big_blocks_round_trip() {
        for size in [1, 100, MAP_FROM - 1, MAP_FROM, 3 * MAP_FROM + 5] {
            for zeroed in [false, true] {
                let layout = Layout::from_size_align(size, 16).unwrap();
                let block = if zeroed { OsPages.allocate_zeroed(layout) } else { OsPages.allocate(layout) };
                let block = block.unwrap();
                assert!(block.len() >= size);
                let p = block.cast::<u8>();
                assert_eq!(p.as_ptr() as usize % 16, 0);
                // SAFETY: the block holds `size` bytes, written before they are read, then released once
                // with the layout it was allocated with.
                unsafe {
                    if zeroed {
                        assert!(std::slice::from_raw_parts(p.as_ptr(), size).iter().all(|&b| b == 0));
                    }
                    p.as_ptr().write_bytes(0xa5, size);
                    assert_eq!(*p.as_ptr().add(size - 1), 0xa5);
                    OsPages.deallocate(p, layout);
                }
            }
        }
    }

    #[test]
    fn growing_keeps_the_contents_from_small_to_mapped_to_bigger() {
        let mut v: allocator_api2::vec::Vec<u64, OsPages> = allocator_api2::vec::Vec::new_in(OsPages);
        for i in 0..1_000_000u64 {
            v.push(i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        assert!(v.capacity() * 8 >= 4 * MAP_FROM, "grew through several mapped sizes");
        assert!(v.iter().enumerate().all(|(i, &x)| x == (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v.len(), 10);
        assert_eq!(v[9], 9u64.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }

    #[test]
    fn a_table_grows_through_mapped_blocks_and_keeps_its_entries() {
        let hash = |&k: &u32| u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut t: HashTable<u32, OsPages> = HashTable::new_in(OsPages);
        for k in 0..300_000 {
            t.insert_unique(hash(&k), k, hash);
        }
        assert!(t.capacity() * 5 >= MAP_FROM, "the table went through mapped blocks");
        for k in (0..300_000).step_by(2) {
            t.find_entry(hash(&k), |&x| x == k).unwrap().remove();
        }
        assert_eq!(t.len(), 150_000);
        assert!((0..300_000).all(|k| t.find(hash(&k), |&x| x == k).is_some() == (k % 2 == 1)));
        t.shrink_to_fit(hash);
        assert_eq!(t.len(), 150_000);
    }
}
