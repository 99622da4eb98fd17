//! One client connection as the reactor sees it: buffers, framing state, limits and lifecycle.
//!
//! A connection has at most one job in flight. Requests that arrive meanwhile wait here, already split,
//! and leave together as the next job when the reply to the current one comes back: that keeps a
//! connection's ops in order and batches them without any timer.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::Instant;

use mio::net::TcpStream;

use crate::dispatch::{Front, Job, Span};
use crate::http::codec as http;
use bankcache_proto::{reply, Split, Splitter};

/// Bytes the input buffer grows by when it is nearly full.
const READ_CHUNK: usize = 32 * 1024;
/// Grow the input buffer before a read when less room than this is left.
const MIN_READ_ROOM: usize = 4 * 1024;
/// Stop reading from a connection while this many bytes of complete requests wait for a worker.
const MAX_WAITING_INPUT: usize = 1024 * 1024;
/// Stop reading from a connection while this many reply bytes wait for the socket.
const MAX_PENDING_OUTPUT: usize = 4 * 1024 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading requests and writing replies.
    Open,
    /// Shutting down: the write side is closed and input is read and dropped until the peer closes or the
    /// deadline passes, so closing does not reset the connection before the peer has read our last line.
    Lingering { until: Instant },
}

/// Outcome of reading from the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Read until the socket had nothing more, or paused on a limit.
    Ok,
    /// The socket failed; close now.
    Broken,
}

/// How a connection's byte stream is cut into requests.
enum Framer {
    /// JSON values (see [`bankcache_proto::frame`]).
    Json(Splitter),
    /// HTTP/1.1 requests.
    Http(HttpFramer),
}

struct HttpFramer {
    /// Where the next request starts in the input.
    pos: usize,
    limits: http::Limits,
    /// The request being read asked for `100 Continue`, which has not been sent yet.
    wants_continue: bool,
}

/// A client connection.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Distinguishes this connection from earlier ones that used the same slot.
    pub generation: u64,
    /// Where it is in its life.
    pub phase: Phase,
    /// A job of this connection is with a worker.
    pub in_flight: bool,
    /// Counted in `max_connections` (false for connections refused at accept).
    pub counted: bool,
    /// The protocol the connection speaks.
    pub front: Front,
    /// When the peer last sent anything (for the HTTP idle timeout).
    pub last_active: Instant,
    input: Vec<u8>,
    framer: Framer,
    /// Complete requests not yet handed to a worker, as ranges of `input`.
    spans: Vec<Span>,
    output: Vec<u8>,
    written: usize,
    /// WRITABLE interest is registered (only while output is pending).
    pub write_interest: bool,
    /// The peer closed its side, or a fatal error means nothing more will be read.
    input_done: bool,
    /// Reading stopped on a limit before the socket was drained; read again once below it.
    read_paused: bool,
    /// An error reply to send after every pending reply, before closing (the connection cannot resync).
    fatal: Option<Vec<u8>>,
    /// Linger rather than close once everything is written (after a fatal error).
    linger_when_done: bool,
    /// The fatal error has been counted in the stats.
    failure_counted: bool,
}

impl Conn {
    /// A new open connection. `max_request` bounds a JSON request; `http` bounds HTTP heads and bodies.
    pub fn new(
        stream: TcpStream,
        generation: u64,
        front: Front,
        max_request: usize,
        http: http::Limits,
        buffers: &mut BufferPool,
    ) -> Conn {
        let framer = match front {
            Front::Json => Framer::Json(Splitter::new(max_request)),
            Front::Http => Framer::Http(HttpFramer { pos: 0, limits: http, wants_continue: false }),
        };
        Conn {
            stream,
            generation,
            phase: Phase::Open,
            in_flight: false,
            counted: true,
            front,
            last_active: Instant::now(),
            input: buffers.take(),
            framer,
            spans: Vec::new(),
            output: Vec::new(),
            written: 0,
            write_interest: false,
            input_done: false,
            read_paused: false,
            fatal: None,
            linger_when_done: false,
            failure_counted: false,
        }
    }

    /// Reads until the socket is drained (edge-triggered readiness demands it), splitting requests as they
    /// complete. Stops early, and remembers to come back, when too much waits already.
    ///
    /// A read that fills less than the buffer has emptied the socket's receive queue, and anything that
    /// arrives later raises a fresh readiness edge, so the reactor stops there instead of paying another
    /// system call to hear `WouldBlock` (the same reasoning as tokio's). The exception is a peer that has
    /// closed: `peer_closed` (the event's read-closed flag) makes it read on to the end of the stream.
    pub fn read(&mut self, scratch: &mut [u8], bytes_in: &mut u64, peer_closed: bool) -> ReadOutcome {
        if let Phase::Lingering { .. } = self.phase {
            return self.discard_input(scratch);
        }
        while !self.input_done {
            if self.must_pause() {
                self.read_paused = true;
                return ReadOutcome::Ok;
            }
            let room = self.make_room();
            match self.read_in_place() {
                Ok(0) => {
                    self.input_done = true;
                    // A JSON value still open at the end of the stream is handed on to be answered; an
                    // HTTP request cut short cannot be.
                    if let Framer::Json(splitter) = &mut self.framer {
                        if let Some((start, end)) = splitter.finish(&self.input) {
                            self.spans.push(Span { start, body: (end, end), end });
                        }
                    }
                }
                Ok(n) => {
                    *bytes_in += n as u64;
                    // Only HTTP connections have an idle timeout; a JSON read saves the clock read.
                    if self.front == Front::Http {
                        self.last_active = Instant::now();
                    }
                    self.split();
                    if n < room && !peer_closed {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Broken,
            }
        }
        self.read_paused = false;
        ReadOutcome::Ok
    }

    /// Makes sure the input buffer has room to read into; returns how much.
    fn make_room(&mut self) -> usize {
        if self.input.capacity() - self.input.len() < MIN_READ_ROOM {
            self.input.reserve(READ_CHUNK);
        }
        self.input.capacity() - self.input.len()
    }

    /// Reads from the socket straight into the input buffer's spare room: the bytes are copied once, by the
    /// kernel, rather than into a scratch buffer first.
    fn read_in_place(&mut self) -> io::Result<usize> {
        let spare = self.input.spare_capacity_mut();
        // SAFETY: the kernel writes at most `spare.len()` bytes through the raw pointer into memory the
        // vector owns; only the `n` bytes it reports written are then counted as part of the vector.
        let n = unsafe { libc::read(self.stream.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: the first `n` bytes of the spare capacity were just initialized by `read`.
        unsafe { self.input.set_len(self.input.len() + n) };
        Ok(n)
    }

    /// While lingering: drop whatever arrives; an EOF or error means the peer is gone.
    fn discard_input(&mut self, scratch: &mut [u8]) -> ReadOutcome {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return ReadOutcome::Broken,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Ok,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Broken,
            }
        }
    }

    fn split(&mut self) {
        loop {
            let failure = match &mut self.framer {
                Framer::Json(splitter) => match splitter.next(&self.input) {
                    Split::Frame { start, end } => {
                        self.spans.push(Span { start, body: (end, end), end });
                        continue;
                    }
                    Split::NeedMore => return,
                    Split::TooLarge => {
                        let mut line = Vec::new();
                        let max = splitter.max_request();
                        reply::error(&mut line, &format!("Request too large: max_request_bytes is {max}"));
                        line
                    }
                },
                Framer::Http(framer) => match http::split(&mut self.input, framer.pos, &framer.limits) {
                    http::Split::Request(f) => {
                        self.spans.push(Span { start: f.start, body: f.body, end: f.end });
                        framer.pos = f.end;
                        framer.wants_continue = false;
                        continue;
                    }
                    http::Split::NeedMore { expects_continue, total } => {
                        framer.wants_continue |= expects_continue;
                        // Room for the whole body now: it is then read in place, with no copy as the
                        // buffer grows.
                        if let Some(total) = total {
                            let end = framer.pos + total;
                            self.input.reserve(end.saturating_sub(self.input.len()));
                        }
                        return;
                    }
                    http::Split::Error(status) => http::error_response(status),
                },
            };
            self.fail(failure);
            return;
        }
    }

    /// True when the request being read waits for `100 Continue` and every earlier request has been
    /// answered, so sending it now keeps responses in order.
    pub fn continue_due(&self) -> bool {
        matches!(&self.framer, Framer::Http(f) if f.wants_continue)
            && !self.in_flight
            && self.spans.is_empty()
            && self.pending_output() == 0
            && !self.input_done
    }

    /// Notes that `100 Continue` has been sent for the request being read.
    pub fn continue_sent(&mut self) {
        if let Framer::Http(f) = &mut self.framer {
            f.wants_continue = false;
        }
    }

    /// Stops reading; after the replies already owed, `reply` (a whole error reply) is sent and the
    /// connection closed.
    pub fn fail(&mut self, reply: Vec<u8>) {
        self.input_done = true;
        self.fatal = Some(reply);
        self.linger_when_done = true;
    }

    /// Closes the connection once the replies already sent to the socket are written (an HTTP response
    /// said `Connection: close`): requests that came after it are dropped unanswered.
    pub fn close_after_replies(&mut self) {
        self.input_done = true;
        self.spans.clear();
        self.linger_when_done = true;
        self.failure_counted = true;
    }

    /// True once, after the connection has failed on an oversized request, so the reactor counts it.
    pub fn take_new_failure(&mut self) -> bool {
        let new = self.linger_when_done && !self.failure_counted;
        self.failure_counted |= new;
        new
    }

    /// After a fatal error the connection lingers once done, so the peer reads the error line before the
    /// close (a close with unread input resets the connection and can destroy that line).
    pub fn lingers_when_done(&self) -> bool {
        self.linger_when_done
    }

    fn must_pause(&self) -> bool {
        self.keep_from() >= MAX_WAITING_INPUT || self.pending_output() >= MAX_PENDING_OUTPUT
    }

    /// Reading was paused on a limit that no longer holds: the caller should read again.
    pub fn should_resume(&self) -> bool {
        self.read_paused && !self.must_pause()
    }

    /// Stops reading new requests (server shutdown); requests already read are still answered.
    pub fn stop_reading(&mut self) {
        self.input_done = true;
        self.read_paused = false;
    }

    /// Hands the waiting requests to a worker as one job, unless one is already in flight.
    pub fn take_job(&mut self, slot: usize, buffers: &mut BufferPool) -> Option<Job> {
        if self.in_flight || self.spans.is_empty() {
            return None;
        }
        // The job takes the whole input buffer; only the unfinished request's bytes are copied forward.
        let keep = self.keep_from();
        let mut rest = buffers.take();
        rest.extend_from_slice(&self.input[keep..]);
        let input = std::mem::replace(&mut self.input, rest);
        match &mut self.framer {
            Framer::Json(splitter) => splitter.rebase(keep),
            Framer::Http(framer) => framer.pos -= keep,
        }
        let spans = std::mem::replace(&mut self.spans, buffers.take_spans());
        self.in_flight = true;
        Some(Job {
            slot,
            generation: self.generation,
            front: self.front,
            input,
            spans,
            next: 0,
            output: buffers.take(),
            close_after: false,
        })
    }

    /// The first input byte that must be kept: the start of the request being read.
    fn keep_from(&self) -> usize {
        match &self.framer {
            Framer::Json(splitter) => splitter.keep_from(),
            Framer::Http(framer) => framer.pos,
        }
    }

    /// True when nothing more will happen on this connection but flushing what is pending.
    pub fn finished(&self) -> bool {
        self.input_done && !self.in_flight && self.spans.is_empty()
    }

    /// Queues the fatal error line, if any, once every reply before it is queued.
    pub fn queue_fatal(&mut self) {
        if self.finished() {
            if let Some(reply) = self.fatal.take() {
                self.output.extend_from_slice(&reply);
            }
        }
    }

    /// Bytes queued for the socket.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.written
    }

    /// Writes `data` after whatever is pending, straight from `data` when nothing is. Returns false if
    /// the socket failed.
    pub fn send(&mut self, data: &[u8], bytes_out: &mut u64) -> bool {
        match self.send_direct(data, bytes_out) {
            Direct::Failed => false,
            Direct::Queued => true,
            Direct::Wrote(sent) => {
                self.output.extend_from_slice(&data[sent..]);
                true
            }
        }
    }

    /// Like [`Conn::send`], but what the socket does not take is kept by swapping buffers rather than
    /// copying (a large reply rarely fits in one write): `data` may come back holding another buffer.
    pub fn send_buf(&mut self, data: &mut Vec<u8>, bytes_out: &mut u64) -> bool {
        match self.send_direct(data, bytes_out) {
            Direct::Failed => false,
            Direct::Queued => true,
            Direct::Wrote(sent) => {
                if sent < data.len() {
                    std::mem::swap(&mut self.output, data);
                    self.written = sent;
                }
                true
            }
        }
    }

    /// Queues `data` behind pending output, or, when nothing is pending, writes as much of it as the
    /// socket takes now and leaves the (empty) output buffer for the caller to keep the rest in.
    fn send_direct(&mut self, data: &[u8], bytes_out: &mut u64) -> Direct {
        if self.pending_output() > 0 {
            self.output.extend_from_slice(data);
            return if self.flush(bytes_out) { Direct::Queued } else { Direct::Failed };
        }
        let mut sent = 0;
        while sent < data.len() {
            match self.stream.write(&data[sent..]) {
                Ok(n) => {
                    sent += n;
                    *bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Direct::Failed,
            }
        }
        self.output.clear();
        self.written = 0;
        Direct::Wrote(sent)
    }

    /// Writes pending output until done or the socket would block. Returns false if the socket failed.
    pub fn flush(&mut self, bytes_out: &mut u64) -> bool {
        while self.written < self.output.len() {
            match self.stream.write(&self.output[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    *bytes_out += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.output.clear();
        self.written = 0;
        if self.output.capacity() > MAX_PENDING_OUTPUT {
            self.output = Vec::new();
        }
        true
    }

    /// Closes the write side and starts lingering (see [`Phase::Lingering`]).
    pub fn linger(&mut self, until: Instant) {
        let _ = self.stream.shutdown(Shutdown::Write);
        self.phase = Phase::Lingering { until };
        self.input_done = true;
    }

    /// Gives the connection's buffers back for reuse.
    pub fn recycle(self, buffers: &mut BufferPool) {
        buffers.put(self.input);
        buffers.put_spans(self.spans);
    }
}

/// What [`Conn::send_direct`] did with the bytes it was given.
enum Direct {
    /// The socket failed.
    Failed,
    /// Queued behind earlier output (and flushed as far as the socket allowed).
    Queued,
    /// This many bytes went straight to the socket; the rest is the caller's to keep.
    Wrote(usize),
}

/// Buffers handed back and forth between the reactor and the workers, reused instead of reallocated.
#[derive(Default)]
pub struct BufferPool {
    bytes: Vec<Vec<u8>>,
    spans: Vec<Vec<Span>>,
}

/// Buffers kept for reuse at most; more are freed.
const POOL_MAX: usize = 1024;
/// A buffer larger than this is freed rather than kept, so one big request does not pin memory.
const POOL_MAX_CAPACITY: usize = 64 * 1024;

impl BufferPool {
    /// An empty byte buffer.
    pub fn take(&mut self) -> Vec<u8> {
        self.bytes.pop().unwrap_or_default()
    }

    /// An empty frame list.
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

    /// Returns a frame list.
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
