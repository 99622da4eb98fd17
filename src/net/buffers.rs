//! Buffers handed back and forth between the reactor and the workers, reused instead of reallocated.

use crate::dispatch::{Job, Span};

/// Buffers kept for reuse at most; more are freed.
const POOL_MAX: usize = 1024;
/// A buffer larger than this is freed rather than kept, so one big request does not pin memory.
const POOL_MAX_CAPACITY: usize = 64 * 1024;

/// Free byte buffers and span lists, owned by the reactor.
#[derive(Default)]
pub struct BufferPool {
    bytes: Vec<Vec<u8>>,
    spans: Vec<Vec<Span>>,
}

impl BufferPool {
    /// An empty byte buffer.
    pub fn take(&mut self) -> Vec<u8> {
        self.bytes.pop().unwrap_or_default()
    }

    /// An empty span list.
    pub fn take_spans(&mut self) -> Vec<Span> {
        self.spans.pop().unwrap_or_default()
    }

    /// Returns a byte buffer.
    pub fn put(&mut self, mut buf: Vec<u8>) {
        if self.bytes.len() < POOL_MAX && buf.capacity() <= POOL_MAX_CAPACITY && buf.capacity() > 0 {
            buf.clear();
            self.bytes.push(buf);
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
