//! Buffers handed back and forth between the reactor and the workers, reused instead of reallocated.

use crate::dispatch::{Job, Span};

/// Buffers kept for reuse at most; more are freed.
const POOL_MAX: usize = 1024;
/// A buffer larger than this is freed rather than kept among the small ones, so one big request does not
/// pin memory.
const POOL_MAX_CAPACITY: usize = 64 * 1024;
/// Large buffers kept for reuse at most, and the largest kept: a few, so that replies of large values (a
/// 200 KB file) are written into memory already mapped instead of pages the allocator must fault in again
/// (it returns freed pages at once), while what is pinned stays a small fixed amount (4 × 512 KiB at most).
const LARGE_MAX: usize = 4;
const LARGE_MAX_CAPACITY: usize = 512 * 1024;

/// Free byte buffers and span lists, owned by the reactor.
#[derive(Default)]
pub struct BufferPool {
    bytes: Vec<Vec<u8>>,
    large: Vec<Vec<u8>>,
    spans: Vec<Vec<Span>>,
}

impl BufferPool {
    /// An empty byte buffer.
    pub fn take(&mut self) -> Vec<u8> {
        self.bytes.pop().unwrap_or_default()
    }

    /// An empty buffer for a job's output: a large one while there is one, since output is where large
    /// values go.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.large.pop().unwrap_or_else(|| self.take())
    }

    /// An empty span list.
    pub fn take_spans(&mut self) -> Vec<Span> {
        self.spans.pop().unwrap_or_default()
    }

    /// Returns a byte buffer.
    pub fn put(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if self.bytes.len() < POOL_MAX && capacity <= POOL_MAX_CAPACITY && capacity > 0 {
            buf.clear();
            self.bytes.push(buf);
        } else if self.large.len() < LARGE_MAX
            && capacity > POOL_MAX_CAPACITY
            && capacity <= LARGE_MAX_CAPACITY
        {
            buf.clear();
            self.large.push(buf);
        }
    }

    /// Returns a span list.
    pub fn put_spans(&mut self, mut spans: Vec<Span>) {
        if self.spans.len() < POOL_MAX && spans.capacity() <= POOL_MAX_CAPACITY && spans.capacity() > 0 {
            spans.clear();
            self.spans.push(spans);
        }
    }

    /// Returns every buffer of a finished job.
    pub fn put_job(&mut self, job: Job) {
        self.put(job.input);
        self.put(job.output);
        self.put_spans(job.spans);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large buffers come back for output, a few of them and none too large; small ones serve input.
    #[test]
    fn a_few_large_buffers_are_kept_for_output() {
        let mut pool = BufferPool::default();
        for _ in 0..LARGE_MAX + 2 {
            pool.put(Vec::with_capacity(200 * 1024));
        }
        pool.put(Vec::with_capacity(LARGE_MAX_CAPACITY + 1));
        pool.put(Vec::with_capacity(100));
        assert_eq!(pool.large.len(), LARGE_MAX, "at most LARGE_MAX are kept");
        assert!(pool.large.iter().all(|b| b.capacity() <= LARGE_MAX_CAPACITY));
        assert!(pool.take().capacity() < POOL_MAX_CAPACITY, "input takes a small one");
        for _ in 0..LARGE_MAX {
            let out = pool.take_output();
            assert!(out.is_empty() && out.capacity() >= 200 * 1024);
        }
        assert_eq!(pool.take_output().capacity(), 0, "then fresh ones");
    }
}
