//! Reader pins on volumes, so that a value can be sent straight from its volume file (`sendfile`) after
//! the read that checked it, without the writer reusing the volume under the send.
//!
//! A reader pins the volume before it checks the record's generation; the writer, once it has moved the
//! generation on (so no new pin can find the old records), asks the pins to go ([`Pins::reclaim`]) and
//! waits for them, for a bounded time. A pin holder that is asked (the reactor, for a client that reads
//! slowly) copies the rest of its bytes into memory and drops the pin. Should the wait run out all the
//! same, the writer revokes the old pins ([`Pins::revoke`]) before it writes: a send checks its lease under
//! the gate ([`FileSlice::gate`]) and a revoked one is never sent from.
//!
//! Bytes already handed to the kernel stay right even after the volume is reused, because the writer
//! punches the old data out of the file ahead of its writes (see `Volumes::clear_ahead`): the page-cache
//! pages a send refers to leave the file and keep their bytes, and new records go into fresh pages.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

/// The pins of one volume.
#[derive(Debug, Default)]
pub(super) struct Pins {
    count: AtomicUsize,
    /// The writer is waiting to reuse the volume: holders should let go soon.
    wanted: AtomicBool,
    /// Bumped when the volume's old bytes are gone; a lease of an older epoch is revoked. Sends take it
    /// for reading, the writer for writing, so no send runs while the bytes change.
    epoch: RwLock<u64>,
    lock: Mutex<()>,
    freed: Condvar,
}

impl Pins {
    /// Pins the volume. The caller checks the generation after this (SeqCst both ways: a writer that moved
    /// it on before sees this pin, or this reader sees the new generation).
    pub(super) fn pin(self: &Arc<Self>) -> Lease {
        self.count.fetch_add(1, Ordering::SeqCst);
        let epoch = *self.epoch.read().unwrap_or_else(PoisonError::into_inner);
        Lease { pins: Arc::clone(self), epoch }
    }

    /// Asks the holders to let go and waits up to `bound` for them; true if none is left.
    pub(super) fn reclaim(&self, bound: Duration) -> bool {
        if self.count.load(Ordering::SeqCst) == 0 {
            return true;
        }
        self.wanted.store(true, Ordering::SeqCst);
        let until = Instant::now() + bound;
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.count.load(Ordering::SeqCst) > 0 {
            let now = Instant::now();
            if now >= until {
                break;
            }
            guard = self.freed.wait_timeout(guard, until - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        drop(guard);
        self.wanted.store(false, Ordering::SeqCst);
        self.count.load(Ordering::SeqCst) == 0
    }

    /// The volume's old bytes are about to change: every lease taken so far is revoked. Returns once no
    /// send is in progress.
    pub(super) fn revoke(&self) {
        *self.epoch.write().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    fn unpin(&self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.wanted.load(Ordering::SeqCst) {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.freed.notify_all();
        }
    }
}

/// A pin on a volume: while it is held, the volume is not reused (within the writer's bound).
#[derive(Debug)]
pub struct Lease {
    pins: Arc<Pins>,
    epoch: u64,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pins.unpin();
    }
}

/// A checked value, to be sent straight from its volume file: `len` bytes at `offset` of `file`, pinned.
#[derive(Debug)]
pub struct FileSlice {
    file: Arc<File>,
    offset: u64,
    len: usize,
    lease: Lease,
}

/// Held while a send reads from a [`FileSlice`]: the writer cannot revoke the lease meanwhile.
pub struct SendGate<'a> {
    _guard: RwLockReadGuard<'a, u64>,
}

impl FileSlice {
    pub(super) fn new(file: Arc<File>, offset: u64, len: usize, lease: Lease) -> FileSlice {
        FileSlice { file, offset, len, lease }
    }

    /// A slice of a file outside any volume, which nothing reuses: for tests of the code that sends
    /// slices (the reactor's), which need no store.
    pub fn detached(file: Arc<File>, offset: u64, len: usize) -> FileSlice {
        FileSlice::new(file, offset, len, Arc::new(Pins::default()).pin())
    }

    /// The volume of this slice is wanted back, as the writer asks (for tests of the fallback).
    #[doc(hidden)]
    pub fn want_back(&self) {
        self.lease.pins.wanted.store(true, Ordering::SeqCst);
    }

    /// Revokes this slice's lease, as the writer does past its bound (for tests).
    #[doc(hidden)]
    pub fn revoke(&self) {
        self.lease.pins.revoke();
    }

    /// The file the bytes are in.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the bytes not yet sent start in the file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes not yet sent.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when every byte has been sent.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Notes that `n` more bytes were sent.
    pub fn advance(&mut self, n: usize) {
        let n = n.min(self.len);
        self.offset += n as u64;
        self.len -= n;
    }

    /// True when the writer waits to reuse the volume: the holder should copy the rest and let go.
    pub fn wanted(&self) -> bool {
        self.lease.pins.wanted.load(Ordering::Relaxed)
    }

    /// Permission to read the file now: `None` once the lease has been revoked (the bytes may have
    /// changed; the send must not go on).
    pub fn gate(&self) -> Option<SendGate<'_>> {
        let guard = self.lease.pins.epoch.read().unwrap_or_else(PoisonError::into_inner);
        (*guard == self.lease.epoch).then_some(SendGate { _guard: guard })
    }

    /// Reads the bytes not yet sent into `out` (the fallback for a slow client), so the lease can go.
    /// Fails if the lease was revoked or the file could not give them all.
    pub fn read_rest(&self, out: &mut Vec<u8>) -> std::io::Result<()> {
        let Some(_gate) = self.gate() else {
            return Err(std::io::Error::other("the volume was reused under the send"));
        };
        let start = out.len();
        out.resize(start + self.len, 0);
        let got = super::io::read_at(&self.file, &mut out[start..], self.offset)?;
        if got < self.len {
            out.truncate(start);
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's wait ends when the last pin goes, and at its bound when one stays; a revoked lease
    /// may no longer be sent from.
    #[test]
    fn reclaim_waits_for_pins_within_its_bound() {
        let pins = Arc::new(Pins::default());
        assert!(pins.reclaim(Duration::ZERO), "no pin: free at once");
        let lease = pins.pin();
        assert!(!pins.reclaim(Duration::from_millis(1)), "a pin that stays: the bound ends the wait");
        let waiter = {
            let pins = Arc::clone(&pins);
            std::thread::spawn(move || pins.reclaim(Duration::from_secs(600)))
        };
        while !pins.wanted.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        drop(lease);
        assert!(waiter.join().unwrap(), "the last pin let go");

        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(File::create(dir.path().join("f")).unwrap());
        let slice = FileSlice::new(file, 0, 0, pins.pin());
        assert!(slice.gate().is_some());
        pins.revoke();
        assert!(slice.gate().is_none(), "revoked");
        assert!(slice.read_rest(&mut Vec::new()).is_err());
    }
}
