//! One client connection as the reactor sees it: buffers, framing, limits, and its life as a state machine.
//!
//! A connection has at most one job in flight. Requests that arrive meanwhile wait here, already split,
//! and leave together as the next job when the reply to the current one comes back: that keeps a
//! connection's ops in order and batches them without any timer.
//!
//! Its life is one [`Phase`], and every change of phase happens in the methods of the "transitions" block
//! below; the reactor only reports events (bytes arrived, a job came back, a deadline passed) and acts on
//! what [`Conn::settle`] says. A connection is generic over its [`Socket`], so the state machine is tested
//! without sockets (see the tests at the end).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Shutdown};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bankcache_proto::{reply, Split, Splitter};
use mio::net::TcpStream;

use super::buffers::BufferPool;
use crate::auth::Auth;
use crate::dispatch::{Ending, Front, Job, Span};
use crate::http::codec as http;
use crate::http::routes::Segment;

/// Bytes the input buffer grows by when it is nearly full.
const READ_CHUNK: usize = 32 * 1024;
/// Grow the input buffer before a read when less room than this is left.
const MIN_READ_ROOM: usize = 4 * 1024;
/// Stop reading from a connection while this many bytes of complete requests wait for a worker.
const MAX_WAITING_INPUT: usize = 1024 * 1024;
/// An output buffer larger than this is freed once written rather than kept for the next reply.
const KEEP_OUTPUT_CAPACITY: usize = 1024 * 1024;
/// A reply body sent from a volume file that has waited this long for the client is copied into memory,
/// so that a slow client does not keep the volume from being reused.
pub const FILE_SEND_PATIENCE: Duration = Duration::from_millis(100);
/// Output bytes before the first file body that are copied rather than taken over (heads are small).
const COPY_HEADS_UP_TO: usize = 64 * 1024;

/// What a connection needs of its socket: the only I/O it does.
pub trait Socket {
    /// Reads into the spare capacity of `buf` (at most all of it), extending its length by what was read.
    fn read_into(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Writes some of `data`.
    fn write(&mut self, data: &[u8]) -> io::Result<usize>;
    /// Writes some of `data`, which more bytes follow at once (a head before its body from a file): the
    /// system may hold it back to send it with them, one packet instead of two.
    fn write_more(&mut self, data: &[u8]) -> io::Result<usize> {
        self.write(data)
    }
    /// Writes some of the `len` bytes at `offset` of `file`, straight from the file.
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize>;
    /// Shuts down the write side (the peer reads an end of stream after what was written).
    fn shutdown_write(&mut self);
    /// Bytes written that the peer has not acknowledged yet, when the system says. Closing a socket that
    /// has unread input resets the connection, and a reset destroys what the peer has not acknowledged,
    /// so a stop closes a lingering connection early only once this is zero.
    fn unacknowledged(&self) -> Option<usize>;
}

impl Socket for TcpStream {
    /// Reads from the socket straight into the buffer's spare room: the bytes are copied once, by the
    /// kernel, rather than into a scratch buffer first.
    fn read_into(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let spare = buf.spare_capacity_mut();
        // SAFETY: the kernel writes at most `spare.len()` bytes through the raw pointer into memory the
        // vector owns; only the `n` bytes it reports written are then counted as part of the vector.
        let n = unsafe { libc::read(self.as_raw_fd(), spare.as_mut_ptr().cast(), spare.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        // SAFETY: the first `n` bytes of the spare capacity were just initialized by `read`.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }

    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        io::Write::write(self, data)
    }

    /// `send` with `MSG_MORE`.
    #[cfg(target_os = "linux")]
    fn write_more(&mut self, data: &[u8]) -> io::Result<usize> {
        // SAFETY: the kernel reads at most `data.len()` bytes from the slice's pointer.
        let n = unsafe { libc::send(self.as_raw_fd(), data.as_ptr().cast(), data.len(), libc::MSG_MORE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// `sendfile`: the socket takes references to the file's page-cache pages, so the server copies none
    /// of the bytes.
    #[cfg(target_os = "linux")]
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        let mut at =
            libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both descriptors are open for the call; the kernel writes the new offset into `at`.
        let n = unsafe { libc::sendfile(self.as_raw_fd(), file.as_raw_fd(), &mut at, len) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Elsewhere the bytes are read and written (no values are sent from files there: holes cannot be
    /// punched, see the store).
    #[cfg(not(target_os = "linux"))]
    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        let mut buf = vec![0; len.min(256 * 1024)];
        let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, offset)?;
        io::Write::write(self, &buf[..n])
    }

    fn shutdown_write(&mut self) {
        let _ = self.shutdown(Shutdown::Write);
    }

    /// `TIOCOUTQ` (alias `SIOCOUTQ`): the send queue's bytes not yet acknowledged, the FIN included.
    #[cfg(target_os = "linux")]
    fn unacknowledged(&self) -> Option<usize> {
        let mut queued: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int through the pointer, which points at one.
        let r = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
        (r == 0).then(|| usize::try_from(queued).unwrap_or(0))
    }

    /// Unknown elsewhere: a lingering connection then waits for its peer to close, or for the deadline.
    #[cfg(not(target_os = "linux"))]
    fn unacknowledged(&self) -> Option<usize> {
        None
    }
}

/// Where a connection is in its life.
///
/// ```text
///            fatal error / Connection: close / stop ──────────────────┐
///  Reading ──────────end of input───────▶ Writing ──all owed written──▶ Lingering ──peer closed / deadline──▶ Closed
///     │   (job Idle ⇄ InFlight in both)    │ (then Close)                                                  ▲
///     └── refused at accept ──▶ Lingering  └───────────────────────────────────────────────────────────────┘
///  Reading / Writing ──cut (a stop's grace is ending)──▶ Writing (then Drain: nothing left to run)
///  any phase ──socket error──▶ Closed
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Reading requests, writing replies as their jobs come back.
    Reading {
        /// Whether a job of the connection is with a worker (waiting for a job).
        job: JobState,
        /// Whether reading has stopped on a limit, to go on once below it.
        intake: Intake,
    },
    /// No more requests will be read: finishing the job in flight, the requests already split and the
    /// replies owed, then `then`.
    Writing {
        /// Whether a job of the connection is with a worker.
        job: JobState,
        /// What happens once everything owed is written.
        then: Then,
    },
    /// The write side is shut and input is read and dropped until the peer closes or `until` passes, so
    /// that closing does not reset the connection before the peer has read the last reply.
    Lingering {
        /// When to give up waiting for the peer.
        until: Instant,
    },
    /// Done; the reactor removes the connection.
    Closed,
}

/// Whether a job of the connection is with a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// None: the next requests may leave as a job.
    Idle,
    /// One is out; requests arriving meanwhile wait for it to come back.
    InFlight,
    /// One came back unfinished: it stopped at `max_output_bytes` of replies, and goes out again to run the
    /// rest once the client has read enough of them. Requests arriving meanwhile wait behind it.
    Parked,
}

/// Whether requests are being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intake {
    /// Reading.
    Open,
    /// Stopped on a limit (too much input waiting, or too much output unwritten) before the socket was
    /// drained; reading resumes once below it.
    Paused,
}

/// What a connection does once it has written everything it owes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Closes: the peer ended its side (so no unread input can turn the close into a reset).
    Close,
    /// Writes `fatal` (an error reply for a request the stream cannot be read past), if any, then lingers:
    /// after an error, after `Connection: close`, and when the server stops while the peer may still be
    /// sending.
    Linger {
        /// The error reply still to write.
        fatal: Option<Vec<u8>>,
    },
    /// A stop's grace is ending ([`Conn::cut`]): nothing more is run, and replies are written whole. The
    /// client has a second left to take them; once its socket refuses part of a JSON reply, that reply is
    /// the last one written (the rest are dropped), so that the client, if it reads at all, ends with whole
    /// lines. Then the connection lingers.
    Drain,
}

/// What reading did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Read until the socket had nothing more, or paused on a limit.
    Ok,
    /// The socket failed; close now.
    Broken,
}

/// What [`Conn::settle`] found the connection should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Stay as it is (`failed`: a fatal error reply was just queued, for the reactor to count).
    Open {
        /// A fatal error reply was queued by this call.
        failed: bool,
    },
    /// Everything owed is written and the connection should linger now.
    Linger {
        /// A fatal error reply was queued by this call.
        failed: bool,
    },
    /// Close now.
    Close,
}

/// What [`Conn::cut`] dropped, for the stop's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cut {
    /// Requests read but never run (so neither applied nor answered).
    pub unrun: usize,
    /// A job was out: it stops before its next request, and its replies are written whole or dropped.
    pub job_out: bool,
    /// Bytes of replies dropped before reaching the socket (their requests ran).
    pub dropped_output: usize,
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

/// A client connection over socket `S`.
pub struct Conn<S = TcpStream> {
    socket: S,
    /// Distinguishes this connection from earlier ones that used the same slot.
    pub generation: u64,
    /// The protocol the connection speaks.
    pub front: Front,
    /// Counted in `max_connections` (false for connections refused at accept).
    pub counted: bool,
    /// When the peer last sent anything (for the HTTP idle timeout).
    pub last_active: Instant,
    /// WRITABLE interest is registered (only while output is pending); mirrors the poll's registration.
    pub write_interest: bool,
    /// Since when replies of `max_output` bytes or more have waited for the client to read them.
    pub output_over_since: Option<Instant>,
    phase: Phase,
    /// The job that came back unfinished ([`JobState::Parked`]).
    parked: Option<Job>,
    /// Bytes of replies that may wait for the socket before reading and running stop.
    max_output: usize,
    /// Shared with the connection's jobs: set when it closes, so a worker stops running a job for no one.
    abandoned: Arc<AtomicBool>,
    input: Vec<u8>,
    framer: Framer,
    /// Complete requests not yet handed to a worker, as ranges of `input`.
    spans: Vec<Span>,
    output: Vec<u8>,
    written: usize,
    /// Reply bodies sent from volume files, each after its place in `output` (all at or past `written`).
    segments: VecDeque<Segment>,
    /// Bytes of `segments` not yet sent.
    segment_bytes: usize,
    /// Since when the socket has refused a file body (see [`FILE_SEND_PATIENCE`]).
    files_blocked_since: Option<Instant>,
    /// The reactor keeps the connection on its list of those holding file bodies.
    pub listed_for_files: bool,
    /// Input arrived while lingering since [`Conn::done_lingering`] last looked.
    heard: bool,
    /// Where the connection stands with access control; its jobs carry it out and back.
    auth: Auth,
    /// The client's address, which its jobs carry for the access log.
    pub peer: Option<IpAddr>,
}

impl<S: Socket> Conn<S> {
    /// A new connection, reading, standing at `auth`. `max_request` bounds a JSON request; `http` bounds
    /// HTTP heads and bodies; `max_output` bounds the replies waiting for the socket.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        socket: S,
        generation: u64,
        front: Front,
        max_request: usize,
        http: http::Limits,
        max_output: usize,
        auth: Auth,
        buffers: &mut BufferPool,
    ) -> Conn<S> {
        let framer = match front {
            Front::Json => Framer::Json(Splitter::new(max_request)),
            Front::Http => Framer::Http(HttpFramer { pos: 0, limits: http, wants_continue: false }),
        };
        Conn {
            socket,
            generation,
            front,
            counted: true,
            last_active: Instant::now(),
            write_interest: false,
            output_over_since: None,
            phase: Phase::Reading { job: JobState::Idle, intake: Intake::Open },
            parked: None,
            max_output: max_output.max(1),
            abandoned: Arc::default(),
            input: buffers.take(),
            framer,
            spans: Vec::new(),
            output: Vec::new(),
            written: 0,
            segments: VecDeque::new(),
            segment_bytes: 0,
            files_blocked_since: None,
            listed_for_files: false,
            heard: false,
            auth,
            peer: None,
        }
    }

    /// Where the connection stands with access control.
    pub fn auth(&self) -> Auth {
        self.auth
    }

    /// The socket, to register it with the poll.
    pub fn socket_mut(&mut self) -> &mut S {
        &mut self.socket
    }

    /// Where the connection is in its life.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    // ---- transitions: every change of `phase` happens in this block ----

    /// Input is over (`then` says why): the connection finishes what it owes. Only a reading connection
    /// changes; one that is already finishing keeps its plan.
    fn end_input(&mut self, then: Then) {
        if let Phase::Reading { job, .. } = self.phase {
            self.phase = Phase::Writing { job, then };
        }
    }

    /// A request cannot be read past: after the replies already owed, `reply` (a whole error reply) is
    /// sent and the connection lingers.
    fn fail(&mut self, reply: Vec<u8>) {
        self.end_input(Then::Linger { fatal: Some(reply) });
    }

    /// The peer ended its side: requests already read are still answered, then the connection closes.
    fn peer_ended(&mut self) {
        self.end_input(Then::Close);
    }

    /// Stops reading new requests (server shutdown); requests already read are still answered. Then the
    /// connection lingers rather than close: the peer may still be sending, and closing a socket with
    /// unread input resets the connection, which destroys the replies the peer has not yet received.
    pub fn stop_reading(&mut self) {
        self.end_input(Then::Linger { fatal: None });
    }

    /// A stop's grace is ending: nothing more is run, and what is written is whole replies ([`Then::Drain`]).
    /// Requests waiting, and the rest of a parked job, are dropped unrun, as is a fatal reply not yet
    /// queued; a job out (which the cancelled queue stops before its next request) is still waited for.
    /// HTTP replies are written on as they are, since their ends are not known here (a client tells a
    /// cut one by its length).
    pub fn cut(&mut self) -> Cut {
        let job = match &self.phase {
            Phase::Reading { job, .. } | Phase::Writing { job, .. } => *job,
            Phase::Lingering { .. } | Phase::Closed => return Cut::default(),
        };
        let mut unrun = self.spans.len();
        self.spans.clear();
        if let Some(parked) = self.parked.take() {
            unrun += parked.spans.len() - parked.next;
        }
        let job = if job == JobState::Parked { JobState::Idle } else { job };
        self.phase = Phase::Writing { job, then: Then::Drain };
        let dropped_output = self.keep_whole_replies();
        Cut { unrun, job_out: job == JobState::InFlight, dropped_output }
    }

    /// A reply said `Connection: close`: it is the last one. Requests after it are dropped unanswered,
    /// and the connection lingers once the reply is written.
    fn close_after_replies(&mut self) {
        self.spans.clear();
        match &mut self.phase {
            Phase::Reading { job, .. } | Phase::Writing { job, .. } => {
                self.phase = Phase::Writing { job: *job, then: Then::Linger { fatal: None } };
            }
            Phase::Lingering { .. } | Phase::Closed => {}
        }
    }

    /// Reading stopped on a limit, or may go on.
    fn set_intake(&mut self, to: Intake) {
        if let Phase::Reading { intake, .. } = &mut self.phase {
            *intake = to;
        }
    }

    /// A job of the connection left for a worker (or the reactor's own run).
    fn job_sent(&mut self) {
        self.set_job(JobState::InFlight);
    }

    fn set_job(&mut self, to: JobState) {
        if let Phase::Reading { job, .. } | Phase::Writing { job, .. } = &mut self.phase {
            *job = to;
        }
    }

    /// The job came back: its replies are sent, and a `Connection: close` among them ends the connection.
    /// A job that stopped at `max_output` bytes of replies is kept ([`JobState::Parked`]) to run the rest
    /// once the client has read them. Returns false if the socket failed (the connection is then closed).
    ///
    /// While draining ([`Then::Drain`]), a job that comes back unfinished (stopped by the cancel, or at the
    /// output cap) is done all the same: the rest of it stays unrun. A job that comes back to a connection
    /// that no longer waits for it (lingering, closed) is dropped, replies and all.
    pub fn job_done(&mut self, mut job: Job, bytes_out: &mut u64, buffers: &mut BufferPool) -> bool {
        let draining = match &self.phase {
            Phase::Lingering { .. } | Phase::Closed => {
                buffers.put_job(job);
                return true;
            }
            Phase::Writing { then, .. } => *then == Then::Drain,
            Phase::Reading { .. } => false,
        };
        self.auth = job.auth;
        let sent = if job.segments.is_empty() {
            self.send_buf(&mut job.output, bytes_out)
        } else {
            self.send_with_files(&mut job.output, &mut job.segments, bytes_out)
        };
        if !sent {
            buffers.put_job(job);
            self.close();
            return false;
        }
        if draining {
            self.set_job(JobState::Idle);
            self.keep_whole_replies();
            buffers.put_job(job);
        } else if job.finished() {
            self.set_job(JobState::Idle);
            if job.close_after {
                self.close_after_replies();
            }
            buffers.put_job(job);
        } else {
            buffers.put(std::mem::take(&mut job.output));
            self.parked = Some(job);
            self.set_job(JobState::Parked);
        }
        true
    }

    /// Shuts the write side and lingers until `until` (after everything owed is written, or at once for a
    /// connection refused at accept).
    pub fn linger(&mut self, until: Instant) {
        self.socket.shutdown_write();
        self.phase = Phase::Lingering { until };
    }

    /// The connection is done; a job of it still with a worker is abandoned.
    pub fn close(&mut self) {
        self.phase = Phase::Closed;
        self.abandoned.store(true, Ordering::Relaxed);
    }

    // ---- events ----

    /// Reads until the socket is drained (edge-triggered readiness demands it), splitting requests as they
    /// complete. Stops early, and remembers to come back, when too much waits already. While lingering,
    /// input is read and dropped.
    ///
    /// A read that fills less than the buffer has emptied the socket's receive queue, and anything that
    /// arrives later raises a fresh readiness edge, so reading stops there instead of paying another system
    /// call to hear `WouldBlock` (the same reasoning as tokio's). The exception is a peer that has closed:
    /// `peer_closed` (the event's read-closed flag) makes it read on to the end of the stream.
    pub fn read(&mut self, bytes_in: &mut u64, peer_closed: bool) -> ReadOutcome {
        match self.phase {
            Phase::Reading { .. } => {}
            Phase::Lingering { .. } => return self.discard_input(),
            Phase::Writing { .. } | Phase::Closed => return ReadOutcome::Ok,
        }
        while let Phase::Reading { .. } = self.phase {
            if self.must_pause() {
                self.set_intake(Intake::Paused);
                return ReadOutcome::Ok;
            }
            let room = self.make_room();
            match self.socket.read_into(&mut self.input) {
                Ok(0) => {
                    // A JSON value still open at the end of the stream is handed on to be answered; an
                    // HTTP request cut short cannot be.
                    if let Framer::Json(splitter) = &mut self.framer {
                        if let Some((start, end)) = splitter.finish(&self.input) {
                            self.spans.push(Span::json(start, end, Ending::Bare));
                        }
                    }
                    self.peer_ended();
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
                Err(_) => {
                    self.close();
                    return ReadOutcome::Broken;
                }
            }
        }
        self.set_intake(Intake::Open);
        ReadOutcome::Ok
    }

    /// Makes sure the input buffer has room to read into; returns how much.
    fn make_room(&mut self) -> usize {
        if self.input.capacity() - self.input.len() < MIN_READ_ROOM {
            self.input.reserve(READ_CHUNK);
        }
        self.input.capacity() - self.input.len()
    }

    /// While lingering: drop whatever arrives; an end of stream or an error means the peer is gone.
    fn discard_input(&mut self) -> ReadOutcome {
        loop {
            self.input.clear();
            self.make_room();
            match self.socket.read_into(&mut self.input) {
                Ok(0) => break,
                Ok(_) => self.heard = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Ok,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.input.clear();
        self.close();
        ReadOutcome::Broken
    }

    /// While lingering during a stop: drops the input that arrived and says whether closing now can no
    /// longer cost the peer a reply: it has closed its side (the connection is then closed), or it has
    /// acknowledged every byte written, FIN included, and sent nothing since the last look (closing with
    /// unread input would reset the connection; a peer still sending is given until it closes or the
    /// grace ends).
    pub fn done_lingering(&mut self) -> bool {
        match self.phase {
            Phase::Lingering { .. } => {}
            Phase::Closed => return true,
            Phase::Reading { .. } | Phase::Writing { .. } => return false,
        }
        if self.discard_input() == ReadOutcome::Broken {
            return true;
        }
        let quiet = !std::mem::take(&mut self.heard);
        quiet && self.socket.unacknowledged() == Some(0)
    }

    /// Cuts complete requests off the input; a request the stream cannot be read past fails the
    /// connection.
    fn split(&mut self) {
        loop {
            let failure = match &mut self.framer {
                Framer::Json(splitter) => match splitter.next(&self.input) {
                    Split::Frame { start, end, ending } => {
                        self.spans.push(Span::json(start, end, ending.into()));
                        continue;
                    }
                    Split::LineEnd => {
                        let at = splitter.keep_from();
                        self.spans.push(Span::json(at, at, Ending::LateLine));
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
                        self.spans.push(Span::http(f.start, f.body, f.end));
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
            && self.phase == Phase::Reading { job: JobState::Idle, intake: Intake::Open }
            && self.spans.is_empty()
            && self.pending_output() == 0
    }

    /// The head of the request waiting for `100 Continue` (followed by whatever of its body has arrived).
    pub fn waiting_head(&self) -> Option<&[u8]> {
        match &self.framer {
            Framer::Http(f) if f.wants_continue => self.input.get(f.pos..),
            _ => None,
        }
    }

    /// Answers the request waiting for `100 Continue` with a final `response` instead, and closes the
    /// connection after it: the client may send the body all the same, so the stream cannot be read past
    /// it. Returns false if the socket failed.
    pub fn refuse_continue(&mut self, response: &[u8], bytes_out: &mut u64) -> bool {
        if let Framer::Http(f) = &mut self.framer {
            f.wants_continue = false;
        }
        let sent = self.send(response, bytes_out);
        self.close_after_replies();
        sent
    }

    /// Sends `100 Continue` for the request being read. Returns false if the socket failed.
    pub fn send_continue(&mut self, bytes_out: &mut u64) -> bool {
        if let Framer::Http(f) = &mut self.framer {
            f.wants_continue = false;
        }
        self.send(http::CONTINUE, bytes_out)
    }

    fn must_pause(&self) -> bool {
        self.keep_from() >= MAX_WAITING_INPUT || self.pending_output() >= self.max_output
    }

    /// Reading was paused on a limit that no longer holds: the caller should read again (no readiness
    /// event will report the input that waited meanwhile).
    pub fn should_resume(&self) -> bool {
        matches!(self.phase, Phase::Reading { intake: Intake::Paused, .. }) && !self.must_pause()
    }

    /// Hands the waiting requests on as one job, unless one is already out or the connection is past
    /// answering; a parked job goes out again first, once the client has read enough of the replies.
    pub fn take_job(&mut self, slot: usize, buffers: &mut BufferPool) -> Option<Job> {
        let job = match &self.phase {
            Phase::Reading { job, .. } | Phase::Writing { job, .. } => *job,
            Phase::Lingering { .. } | Phase::Closed => return None,
        };
        match job {
            JobState::InFlight => return None,
            JobState::Parked if self.pending_output() >= self.max_output => return None,
            JobState::Parked => {
                let mut job = self.parked.take()?;
                job.output = buffers.take_output();
                job.auth = self.auth;
                self.job_sent();
                return Some(job);
            }
            JobState::Idle if self.spans.is_empty() => return None,
            JobState::Idle => {}
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
        self.job_sent();
        Some(Job {
            slot,
            generation: self.generation,
            front: self.front,
            input,
            spans,
            next: 0,
            output: buffers.take_output(),
            segments: Vec::new(),
            close_after: false,
            auth: self.auth,
            abandoned: Arc::clone(&self.abandoned),
            peer: self.peer,
        })
    }

    /// The first input byte that must be kept: the start of the request being read.
    fn keep_from(&self) -> usize {
        match &self.framer {
            Framer::Json(splitter) => splitter.keep_from(),
            Framer::Http(framer) => framer.pos,
        }
    }

    /// True when a job could leave now: requests wait and none is out, or a parked job may go on.
    pub fn has_work(&self) -> bool {
        match &self.phase {
            Phase::Reading { job, .. } | Phase::Writing { job, .. } => match job {
                JobState::Idle => !self.spans.is_empty(),
                JobState::Parked => self.pending_output() < self.max_output,
                JobState::InFlight => false,
            },
            Phase::Lingering { .. } | Phase::Closed => false,
        }
    }

    /// True when a job of the connection is out, or back unfinished.
    pub fn job_in_flight(&self) -> bool {
        matches!(
            self.phase,
            Phase::Reading { job: JobState::InFlight | JobState::Parked, .. }
                | Phase::Writing { job: JobState::InFlight | JobState::Parked, .. }
        )
    }

    /// True when nothing of the connection is in progress: reading, no job out, nothing to write.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Reading { job: JobState::Idle, .. })
            && self.spans.is_empty()
            && self.pending_output() == 0
    }

    /// After anything happened: queues the fatal error reply once every reply before it is queued,
    /// writes what the socket takes, and says whether the connection is done.
    pub fn settle(&mut self, bytes_out: &mut u64) -> Settled {
        let mut failed = false;
        if let Phase::Writing { job: JobState::Idle, then: Then::Linger { fatal } } = &mut self.phase {
            if self.spans.is_empty() {
                if let Some(reply) = fatal.take() {
                    self.output.extend_from_slice(&reply);
                    failed = true;
                }
            }
        }
        if !self.flush(bytes_out) {
            self.close();
            return Settled::Close;
        }
        self.keep_whole_replies();
        self.watch_output(Instant::now);
        let owes_nothing = self.spans.is_empty() && self.pending_output() == 0;
        match &self.phase {
            Phase::Writing { job: JobState::Idle, then: Then::Close } if owes_nothing => {
                self.close();
                Settled::Close
            }
            Phase::Writing { job: JobState::Idle, then: Then::Linger { fatal: None } | Then::Drain }
                if owes_nothing =>
            {
                Settled::Linger { failed }
            }
            Phase::Closed => Settled::Close,
            _ => Settled::Open { failed },
        }
    }

    // ---- output ----

    /// Bytes queued for the socket, file bodies included.
    pub fn pending_output(&self) -> usize {
        self.output.len() - self.written + self.segment_bytes
    }

    /// True while reply bodies wait to be sent from volume files (holding their volumes).
    pub fn holds_files(&self) -> bool {
        !self.segments.is_empty()
    }

    /// True when the file bodies waiting should be copied into memory now: the writer wants a volume
    /// back, or the client has kept the socket full for [`FILE_SEND_PATIENCE`].
    pub fn should_unpin(&self, now: Instant) -> bool {
        self.holds_files()
            && (self.segments.iter().any(|s| s.slice.wanted())
                || self
                    .files_blocked_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= FILE_SEND_PATIENCE))
    }

    /// Copies the file bodies not yet sent into the output, letting their volumes go; the bytes the
    /// client gets are the same. Returns false if a file could not give them (the volume was reused
    /// regardless, after the writer's bound): the connection must close then, rather than send anything
    /// else.
    pub fn unpin(&mut self) -> bool {
        if self.segments.is_empty() {
            return true;
        }
        let mut out = Vec::with_capacity(self.pending_output());
        let mut from = self.written;
        for segment in self.segments.drain(..) {
            out.extend_from_slice(&self.output[from..segment.at]);
            if segment.slice.read_rest(&mut out).is_err() {
                return false;
            }
            from = segment.at;
        }
        out.extend_from_slice(&self.output[from..]);
        self.output = out;
        self.written = 0;
        self.segment_bytes = 0;
        self.files_blocked_since = None;
        true
    }

    /// Queues replies whose bodies are partly in `segments` (positions in `data`), and writes what the
    /// socket takes. Small heads are copied; a large `data` is taken over when nothing is pending.
    fn send_with_files(
        &mut self,
        data: &mut Vec<u8>,
        segments: &mut Vec<Segment>,
        bytes_out: &mut u64,
    ) -> bool {
        let base = if self.pending_output() == 0 && data.len() > COPY_HEADS_UP_TO {
            self.output.clear();
            self.written = 0;
            std::mem::swap(&mut self.output, data);
            0
        } else {
            let base = self.output.len();
            self.output.extend_from_slice(data);
            base
        };
        for mut segment in segments.drain(..) {
            segment.at += base;
            self.segment_bytes += segment.slice.len();
            self.segments.push_back(segment);
        }
        self.flush(bytes_out)
    }

    /// While draining a JSON connection whose socket has refused part of what was written: drops the
    /// replies after the one being written (every reply to a line is one line, and the client has little
    /// time left to take even that one; bare replies, which a lockstep client gets one at a time, are kept
    /// to the next line end). Returns the bytes dropped.
    fn keep_whole_replies(&mut self) -> usize {
        let draining = matches!(self.phase, Phase::Writing { then: Then::Drain, .. });
        if !draining || self.front != Front::Json || self.pending_output() == 0 {
            return 0;
        }
        let at_boundary = self.written == 0 || self.output[self.written - 1] == b'\n';
        let keep = if at_boundary {
            self.written
        } else {
            memchr::memchr(b'\n', &self.output[self.written..])
                .map_or(self.output.len(), |i| self.written + i + 1)
        };
        let dropped = self.output.len() - keep;
        self.output.truncate(keep);
        dropped
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
    fn send_buf(&mut self, data: &mut Vec<u8>, bytes_out: &mut u64) -> bool {
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
            match self.socket.write(&data[sent..]) {
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

    /// Writes pending output until done or the socket would block, file bodies in their places. Returns
    /// false if the socket failed, or a file body can no longer be sent (its lease was revoked).
    pub fn flush(&mut self, bytes_out: &mut u64) -> bool {
        loop {
            let (upto, body_follows) =
                self.segments.front().map_or((self.output.len(), false), |s| (s.at, true));
            while self.written < upto {
                let bytes = &self.output[self.written..upto];
                let wrote =
                    if body_follows { self.socket.write_more(bytes) } else { self.socket.write(bytes) };
                match wrote {
                    Ok(n) => {
                        self.written += n;
                        *bytes_out += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if body_follows {
                            self.files_blocked_since.get_or_insert_with(Instant::now);
                        }
                        return true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            let Some(segment) = self.segments.front_mut() else { break };
            while !segment.slice.is_empty() {
                let sent = {
                    // Held across the send: the writer cannot revoke the lease (and change the bytes)
                    // meanwhile.
                    let slice = &segment.slice;
                    let Some(_gate) = slice.gate() else { return false };
                    self.socket.send_file(slice.file(), slice.offset(), slice.len())
                };
                match sent {
                    // The file is shorter than the record it held: cut under the server.
                    Ok(0) => return false,
                    Ok(n) => {
                        segment.slice.advance(n);
                        self.segment_bytes -= n;
                        *bytes_out += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.files_blocked_since.get_or_insert_with(Instant::now);
                        return true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            self.segments.pop_front();
            self.files_blocked_since = None;
        }
        self.output.clear();
        self.written = 0;
        if self.output.capacity() > KEEP_OUTPUT_CAPACITY {
            self.output = Vec::new();
        }
        true
    }

    /// Notes whether replies of `max_output` bytes or more wait for the client, and since when.
    fn watch_output(&mut self, now: impl FnOnce() -> Instant) {
        if self.pending_output() >= self.max_output {
            self.output_over_since.get_or_insert_with(now);
        } else {
            self.output_over_since = None;
        }
    }

    /// Gives the connection's buffers back for reuse.
    pub fn recycle(self, buffers: &mut BufferPool) {
        buffers.put(self.input);
        buffers.put_spans(self.spans);
        if let Some(job) = self.parked {
            buffers.put_job(job);
        }
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

#[cfg(test)]
mod tests {
    //! Every transition of [`Phase`], driven through a scripted socket.

    use std::collections::VecDeque;
    use std::time::Duration;

    use super::*;

    /// A socket that hands out scripted reads and takes at most `room` bytes of writes before blocking;
    /// `unacked` bytes of what it took are still on their way to the peer.
    #[derive(Default)]
    struct Fake {
        reads: VecDeque<io::Result<Vec<u8>>>,
        written: Vec<u8>,
        room: usize,
        write_error: bool,
        shut: bool,
        unacked: usize,
    }

    impl Socket for Fake {
        fn read_into(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
            match self.reads.pop_front() {
                None => Err(io::ErrorKind::WouldBlock.into()),
                Some(Err(e)) => Err(e),
                Some(Ok(mut chunk)) => {
                    let n = chunk.len().min(buf.capacity() - buf.len());
                    buf.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.reads.push_front(Ok(chunk.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }

        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.write_error {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = data.len().min(self.room);
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.written.extend_from_slice(&data[..n]);
            Ok(n)
        }

        fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
            let mut buf = vec![0; len.min(self.room.max(1))];
            let n = std::os::unix::fs::FileExt::read_at(file, &mut buf, offset)?;
            self.write(&buf[..n])
        }

        fn shutdown_write(&mut self) {
            self.shut = true;
        }

        fn unacknowledged(&self) -> Option<usize> {
            Some(self.unacked)
        }
    }

    const HTTP: http::Limits = http::Limits { max_head: 1024, max_body: 1 << 20 };
    const MAX_OUTPUT: usize = 1 << 20;
    const READING: Phase = Phase::Reading { job: JobState::Idle, intake: Intake::Open };
    const WAITING: Phase = Phase::Reading { job: JobState::InFlight, intake: Intake::Open };

    fn conn(front: Front, reads: &[&[u8]]) -> (Conn<Fake>, BufferPool) {
        let mut buffers = BufferPool::default();
        let fake = Fake {
            reads: reads.iter().map(|r| Ok(r.to_vec())).collect(),
            room: usize::MAX,
            ..Fake::default()
        };
        (Conn::new(fake, 1, front, 64, HTTP, MAX_OUTPUT, Auth::Open, &mut buffers), buffers)
    }

    /// Reads everything the script has ready (as after a read-closed event, which reads to the end).
    fn read(c: &mut Conn<Fake>) -> ReadOutcome {
        c.read(&mut 0, true)
    }

    /// Plays a worker: answers every request of the job with its own bytes and a newline.
    fn answer(c: &mut Conn<Fake>, mut job: Job) -> bool {
        for span in &job.spans[job.next..] {
            job.output.extend_from_slice(&job.input[span.start..span.end]);
            job.output.push(b'\n');
        }
        job.next = job.spans.len();
        c.job_done(job, &mut 0, &mut BufferPool::default())
    }

    #[test]
    fn a_new_connection_is_reading_with_no_job() {
        let (c, _) = conn(Front::Json, &[]);
        assert_eq!(c.phase(), &READING);
        assert!(c.is_idle());
    }

    #[test]
    fn a_job_goes_out_and_comes_back_and_requests_wait_meanwhile() {
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n{\"b\":2}\n"]);
        assert_eq!(read(&mut c), ReadOutcome::Ok);
        let job = c.take_job(7, &mut buffers).expect("a job");
        assert_eq!((job.slot, job.spans.len()), (7, 2));
        assert_eq!(c.phase(), &WAITING);
        assert!(c.job_in_flight());
        // More requests arrive while the job is out: they wait, in order, for the next job.
        c.socket_mut().reads.push_back(Ok(b"{\"c\":3}\n".to_vec()));
        read(&mut c);
        assert!(c.take_job(7, &mut buffers).is_none(), "one job at a time");
        assert!(answer(&mut c, job));
        assert_eq!(c.phase(), &READING);
        let next = c.take_job(7, &mut buffers).expect("the waiting request");
        assert_eq!(&next.input[next.spans[0].start..next.spans[0].end], b"{\"c\":3}");
        assert!(answer(&mut c, next));
        assert_eq!(c.settle(&mut 0), Settled::Open { failed: false });
        assert_eq!(c.socket_mut().written, b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    }

    #[test]
    fn the_end_of_input_finishes_what_was_read_then_closes() {
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}", b""]);
        read(&mut c);
        // The value still open at the end of the stream is handed on.
        assert_eq!(c.phase(), &Phase::Writing { job: JobState::Idle, then: Then::Close });
        assert_eq!(c.settle(&mut 0), Settled::Open { failed: false }, "a request is still owed");
        let job = c.take_job(0, &mut buffers).expect("the last request");
        assert_eq!(c.phase(), &Phase::Writing { job: JobState::InFlight, then: Then::Close });
        assert_eq!(c.settle(&mut 0), Settled::Open { failed: false }, "its reply is still owed");
        assert!(answer(&mut c, job));
        assert_eq!(c.settle(&mut 0), Settled::Close);
        assert_eq!(c.phase(), &Phase::Closed);
        assert_eq!(c.socket_mut().written, b"{\"a\":1}\n");
    }

    #[test]
    fn a_fatal_error_is_sent_after_the_replies_owed_then_the_connection_lingers() {
        let big = format!("{{\"v\":\"{}\"}}\n", "x".repeat(100));
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n", big.as_bytes()]);
        read(&mut c);
        let fatal = match c.phase() {
            Phase::Writing { job: JobState::Idle, then: Then::Linger { fatal: Some(f) } } => f.clone(),
            other => panic!("{other:?}"),
        };
        assert!(String::from_utf8_lossy(&fatal).contains("Request too large: max_request_bytes is 64"));
        let job = c.take_job(0, &mut buffers).expect("the request before the bad one");
        assert_eq!(c.settle(&mut 0), Settled::Open { failed: false }, "the fatal reply waits its turn");
        assert!(answer(&mut c, job));
        assert_eq!(c.settle(&mut 0), Settled::Linger { failed: true });
        let mut want = b"{\"a\":1}\n".to_vec();
        want.extend_from_slice(&fatal);
        assert_eq!(c.socket_mut().written, want);
        // Counted once: settling again queues nothing more.
        assert_eq!(c.settle(&mut 0), Settled::Linger { failed: false });
    }

    #[test]
    fn lingering_drops_input_and_closes_when_the_peer_does() {
        let (mut c, _) = conn(Front::Json, &[]);
        let until = Instant::now() + Duration::from_secs(2);
        c.linger(until);
        assert!(c.socket_mut().shut, "the write side is shut");
        assert_eq!(c.phase(), &Phase::Lingering { until });
        c.socket_mut().reads.push_back(Ok(b"{\"ignored\":1}\n".to_vec()));
        assert_eq!(read(&mut c), ReadOutcome::Ok);
        assert_eq!(c.phase(), &Phase::Lingering { until }, "input is dropped, not answered");
        c.socket_mut().reads.push_back(Ok(Vec::new()));
        assert_eq!(read(&mut c), ReadOutcome::Broken);
        assert_eq!(c.phase(), &Phase::Closed);
    }

    #[test]
    fn connection_close_drops_later_requests_and_lingers() {
        let head = b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        let (mut c, mut buffers) = conn(Front::Http, &[head]);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        assert_eq!(job.spans.len(), 2);
        job.output = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".to_vec();
        job.next = 1;
        job.close_after = true;
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert_eq!(c.phase(), &Phase::Writing { job: JobState::Idle, then: Then::Linger { fatal: None } });
        assert!(c.take_job(0, &mut buffers).is_none(), "nothing after the close is run");
        assert_eq!(c.settle(&mut 0), Settled::Linger { failed: false });
    }

    const STOPPING: Then = Then::Linger { fatal: None };

    #[test]
    fn shutdown_stops_reading_but_answers_what_was_read_then_lingers() {
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n{\"b\":2}\n"]);
        read(&mut c);
        let job = c.take_job(0, &mut buffers).expect("a job");
        c.socket_mut().reads.push_back(Ok(b"{\"c\":3}\n".to_vec()));
        c.read(&mut 0, false);
        c.stop_reading();
        assert_eq!(c.phase(), &Phase::Writing { job: JobState::InFlight, then: STOPPING });
        c.socket_mut().reads.push_back(Ok(b"{\"late\":1}\n".to_vec()));
        read(&mut c);
        assert!(answer(&mut c, job));
        // The request read before the stop, and waiting behind the job, is run and answered too.
        let job = c.take_job(0, &mut buffers).expect("the request read before the stop");
        assert_eq!(c.settle(&mut 0), Settled::Open { failed: false }, "its reply is owed");
        assert!(answer(&mut c, job));
        assert!(c.take_job(0, &mut buffers).is_none(), "nothing read after the stop");
        // Not closed: the peer is still sending, and a close with unread input would reset the connection.
        assert_eq!(c.settle(&mut 0), Settled::Linger { failed: false });
        assert_eq!(c.socket_mut().written, b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    }

    #[test]
    fn during_a_stop_lingering_ends_once_the_peer_has_everything_and_is_quiet_or_has_closed() {
        let (mut c, _) = conn(Front::Json, &[]);
        c.stop_reading();
        assert_eq!(c.settle(&mut 0), Settled::Linger { failed: false });
        c.linger(Instant::now() + Duration::from_secs(5));
        assert!(c.socket_mut().shut, "the peer reads an end of stream after the replies");
        // Replies still on their way: closing now could destroy them.
        c.socket_mut().unacked = 10;
        assert!(!c.done_lingering());
        // All acknowledged, but the peer is still sending: it may not have read them yet.
        c.socket_mut().unacked = 0;
        c.socket_mut().reads.push_back(Ok(b"{\"more\":1}\n".to_vec()));
        assert!(!c.done_lingering());
        assert!(matches!(c.phase(), Phase::Lingering { .. }), "the input was dropped, not answered");
        // Input that arrived between looks (read on a readiness event) counts too.
        c.socket_mut().reads.push_back(Ok(b"{\"more\":2}\n".to_vec()));
        assert_eq!(read(&mut c), ReadOutcome::Ok);
        assert!(!c.done_lingering());
        // Quiet since the last look, everything acknowledged: closing costs the peer nothing.
        assert!(c.done_lingering());

        // A peer that closes ends it whatever is unacknowledged.
        let (mut c, _) = conn(Front::Json, &[]);
        c.linger(Instant::now() + Duration::from_secs(5));
        c.socket_mut().unacked = 10;
        c.socket_mut().reads.push_back(Ok(Vec::new()));
        assert!(c.done_lingering());
        assert_eq!(c.phase(), &Phase::Closed);

        // Not lingering: not done.
        let (mut c, _) = conn(Front::Json, &[]);
        assert!(!c.done_lingering());
    }

    const DRAIN: Then = Then::Drain;

    #[test]
    fn a_cut_drops_what_was_not_run_and_waits_for_the_job_out() {
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n{\"b\":2}\n"]);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        c.socket_mut().reads.push_back(Ok(b"{\"c\":3}\n".to_vec()));
        c.read(&mut 0, false);
        c.stop_reading();
        assert_eq!(c.cut(), Cut { unrun: 1, job_out: true, dropped_output: 0 });
        assert_eq!(c.phase(), &Phase::Writing { job: JobState::InFlight, then: DRAIN });
        assert!(c.take_job(0, &mut buffers).is_none(), "the request waiting is not run");
        assert_eq!(c.settle(&mut 0), Settled::Open { failed: false }, "the job out is waited for");
        // The cancel stopped the job after its first request: that reply is written, the rest stays
        // unrun (the job is not parked to go out again).
        job.output = b"{\"a\":1}\n".to_vec();
        job.next = 1;
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert_eq!(c.phase(), &Phase::Writing { job: JobState::Idle, then: DRAIN });
        assert!(c.take_job(0, &mut buffers).is_none());
        assert_eq!(c.settle(&mut 0), Settled::Linger { failed: false });
        assert_eq!(c.socket_mut().written, b"{\"a\":1}\n");
    }

    #[test]
    fn while_draining_the_reply_the_socket_takes_part_of_is_the_last() {
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n"]);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        // The socket takes 10 bytes of two replies: the first is cut in the middle.
        c.socket_mut().room = 10;
        job.output = b"{\"r\":\"first\"}\n{\"r\":\"second\"}\n".to_vec();
        job.next = 1;
        assert!(c.job_done(job, &mut 0, &mut buffers));
        c.stop_reading();
        assert_eq!(c.cut(), Cut { unrun: 0, job_out: false, dropped_output: 15 });
        assert_eq!(c.pending_output(), 4, "the rest of the first reply");
        c.socket_mut().room = usize::MAX;
        assert_eq!(c.settle(&mut 0), Settled::Linger { failed: false });
        assert_eq!(c.socket_mut().written, b"{\"r\":\"first\"}\n");

        // Replies coming back while the socket keeps up are written whole; once it refuses part of one,
        // that one is finished and the rest dropped.
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n"]);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        c.stop_reading();
        assert_eq!(c.cut(), Cut { unrun: 0, job_out: true, dropped_output: 0 });
        c.socket_mut().room = 16;
        job.output = b"{\"r\":\"first\"}\n{\"r\":\"second\"}\n{\"r\":\"third\"}\n".to_vec();
        job.next = 1;
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert_eq!(c.pending_output(), 13, "the rest of the second reply");
        c.socket_mut().room = usize::MAX;
        assert_eq!(c.settle(&mut 0), Settled::Linger { failed: false });
        assert_eq!(c.socket_mut().written, b"{\"r\":\"first\"}\n{\"r\":\"second\"}\n");

        // Written up to a reply's end when the socket refuses: nothing more is written.
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n"]);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        c.socket_mut().room = 14;
        job.output = b"{\"r\":\"first\"}\n{\"r\":\"second\"}\n".to_vec();
        job.next = 1;
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert_eq!(c.cut().dropped_output, 15);
        assert_eq!(c.pending_output(), 0);

        // HTTP replies are written on whole: their ends are not known here.
        let (mut c, mut buffers) = conn(Front::Http, &[b"GET /a HTTP/1.1\r\n\r\n"]);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        c.socket_mut().room = 5;
        job.output = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec();
        job.next = 1;
        assert!(c.job_done(job, &mut 0, &mut buffers));
        let pending = c.pending_output();
        assert_eq!(c.cut(), Cut::default());
        assert_eq!(c.pending_output(), pending);
    }

    #[test]
    fn a_cut_drops_the_rest_of_a_parked_job_unrun_and_a_pending_fatal_reply() {
        let big = format!("{{\"v\":\"{}\"}}\n", "x".repeat(100));
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n", big.as_bytes()]);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        // The job stops at the output cap after one request, which the client does not read.
        c.socket_mut().room = 0;
        job.output = vec![b'x'; MAX_OUTPUT - 1];
        job.output.push(b'\n');
        job.next = 1;
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert!(matches!(
            c.phase(),
            Phase::Writing { job: JobState::Parked, then: Then::Linger { fatal: Some(_) } }
        ));
        assert_eq!(c.cut(), Cut { unrun: 2, job_out: false, dropped_output: MAX_OUTPUT });
        assert_eq!(c.phase(), &Phase::Writing { job: JobState::Idle, then: DRAIN });
        assert_eq!(c.settle(&mut 0), Settled::Linger { failed: false }, "no fatal reply is queued");
        assert!(c.socket_mut().written.is_empty());
    }

    #[test]
    fn a_job_that_comes_back_to_a_lingering_connection_is_dropped() {
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n"]);
        read(&mut c);
        let job = c.take_job(0, &mut buffers).expect("a job");
        c.linger(Instant::now() + Duration::from_secs(1));
        assert!(answer(&mut c, job));
        assert!(c.socket_mut().written.is_empty());
        assert!(matches!(c.phase(), Phase::Lingering { .. }));
    }

    #[test]
    fn shutdown_keeps_a_failed_connection_s_plan() {
        let big = format!("{{\"v\":\"{}\"}}\n", "x".repeat(100));
        let (mut c, _) = conn(Front::Json, &[big.as_bytes()]);
        read(&mut c);
        c.stop_reading();
        assert!(matches!(c.phase(), Phase::Writing { then: Then::Linger { fatal: Some(_) }, .. }));
    }

    #[test]
    fn reading_pauses_over_the_output_limit_and_resumes_below_it() {
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n"]);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        // The peer reads nothing: a big reply stays pending.
        c.socket_mut().room = 0;
        job.output = vec![b'x'; MAX_OUTPUT];
        job.next = 1;
        assert!(c.job_done(job, &mut 0, &mut buffers));
        c.socket_mut().reads.push_back(Ok(b"{\"b\":2}\n".to_vec()));
        read(&mut c);
        assert_eq!(c.phase(), &Phase::Reading { job: JobState::Idle, intake: Intake::Paused });
        assert!(!c.should_resume());
        // The peer drains: reading may go on.
        c.socket_mut().room = usize::MAX;
        assert!(c.flush(&mut 0));
        assert!(c.should_resume());
        read(&mut c);
        assert_eq!(c.phase(), &READING);
        assert!(c.take_job(0, &mut buffers).is_some(), "the request that waited is read");
    }

    #[test]
    fn reading_pauses_over_the_waiting_input_limit() {
        let line = format!("{{\"v\":\"{}\"}}\n", "x".repeat(50));
        let lots = line.repeat(MAX_WAITING_INPUT / line.len() + 2);
        let (mut c, mut buffers) = conn(Front::Json, &[lots.as_bytes(), b"{\"more\":1}\n"]);
        read(&mut c);
        assert_eq!(c.phase(), &Phase::Reading { job: JobState::Idle, intake: Intake::Paused });
        let job = c.take_job(0, &mut buffers).expect("a job");
        assert!(c.should_resume(), "handing the input on lifts the limit");
        read(&mut c);
        assert_eq!(c.phase(), &WAITING);
        drop(job);
    }

    #[test]
    fn socket_errors_close() {
        let (mut c, _) = conn(Front::Json, &[]);
        c.socket_mut().reads.push_back(Err(io::ErrorKind::ConnectionReset.into()));
        assert_eq!(read(&mut c), ReadOutcome::Broken);
        assert_eq!(c.phase(), &Phase::Closed);

        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n"]);
        read(&mut c);
        let job = c.take_job(0, &mut buffers).expect("a job");
        c.socket_mut().write_error = true;
        assert!(!answer(&mut c, job), "the reply cannot be written");
        assert_eq!(c.phase(), &Phase::Closed);
        assert_eq!(c.settle(&mut 0), Settled::Close);
    }

    #[test]
    fn continue_is_due_only_when_everything_before_is_answered() {
        let expect = b"PUT /k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        let (mut c, _) = conn(Front::Http, &[expect]);
        read(&mut c);
        assert!(c.continue_due());
        assert!(c.send_continue(&mut 0));
        assert!(!c.continue_due(), "sent once");
        assert_eq!(c.socket_mut().written, http::CONTINUE);

        let both = [&b"GET /a HTTP/1.1\r\n\r\n"[..], expect].concat();
        let (mut c, mut buffers) = conn(Front::Http, &[&both]);
        read(&mut c);
        assert!(!c.continue_due(), "the GET is not answered yet");
        let job = c.take_job(0, &mut buffers).expect("the GET");
        assert!(!c.continue_due(), "its job is out");
        assert!(answer(&mut c, job));
        assert!(c.continue_due());
    }

    /// A request waiting for `100 Continue` may be refused with a final response instead: it is written,
    /// nothing more is asked for or read as a request, and the connection lingers once it is out.
    #[test]
    fn a_refused_continue_answers_and_then_lingers() {
        let expect = b"PUT /k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        let (mut c, _) = conn(Front::Http, &[expect]);
        read(&mut c);
        assert_eq!(c.waiting_head(), Some(&expect[..]));
        assert!(c.refuse_continue(b"HTTP/1.1 401 Unauthorized\r\n\r\n", &mut 0));
        assert_eq!(c.waiting_head(), None);
        assert!(!c.continue_due());
        assert_eq!(c.socket_mut().written, b"HTTP/1.1 401 Unauthorized\r\n\r\n");
        assert!(matches!(c.settle(&mut 0), Settled::Linger { failed: false }));
        assert!(!c.has_work(), "the refused request is not run");
    }

    #[test]
    fn a_short_read_ends_the_turn_without_asking_for_would_block() {
        let (mut c, _) = conn(Front::Json, &[b"{\"a\":1}\n", b"{\"b\":2}\n"]);
        assert_eq!(c.read(&mut 0, false), ReadOutcome::Ok);
        assert_eq!(c.spans.len(), 1, "the second chunk waits for the next readiness edge");
        assert_eq!(c.socket_mut().reads.len(), 1);
    }

    /// A job that stopped at a wrong token comes back unfinished: its reply is written, the connection
    /// takes the job's standing, and the rest waits parked until the reactor takes it again (when the
    /// throttle lets it), carrying that standing.
    #[test]
    fn a_job_stopped_at_a_wrong_token_is_parked_with_the_connection_s_new_standing() {
        let mut buffers = BufferPool::default();
        let fake = Fake {
            reads: [Ok(b"{\"auth\":1}\n{\"put\":2}\n".to_vec())].into(),
            room: usize::MAX,
            ..Fake::default()
        };
        let mut c = Conn::new(fake, 1, Front::Json, 64, HTTP, MAX_OUTPUT, Auth::new(true), &mut buffers);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        assert_eq!(job.auth, Auth::Locked { failures: 0 });
        job.output = b"{\"no\":1}\n".to_vec();
        job.next = 1;
        job.auth = Auth::Locked { failures: 1 };
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert_eq!(c.auth(), Auth::Locked { failures: 1 });
        assert_eq!(c.phase(), &Phase::Reading { job: JobState::Parked, intake: Intake::Open });
        assert_eq!(c.socket_mut().written, b"{\"no\":1}\n", "the refusal is written at once");
        assert!(c.has_work());
        let job = c.take_job(0, &mut buffers).expect("the rest");
        assert_eq!((job.next, job.auth), (1, Auth::Locked { failures: 1 }));
    }

    #[test]
    fn a_job_stopped_at_the_output_cap_waits_parked_for_the_client_to_read() {
        let (mut c, mut buffers) = conn(Front::Json, &[b"{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"]);
        read(&mut c);
        let mut job = c.take_job(0, &mut buffers).expect("a job");
        // The worker ran one request and stopped: its reply filled the cap, and the client reads nothing.
        c.socket_mut().room = 0;
        job.output = vec![b'x'; MAX_OUTPUT];
        job.next = 1;
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert_eq!(c.phase(), &Phase::Reading { job: JobState::Parked, intake: Intake::Open });
        assert!(c.job_in_flight());
        assert!(c.take_job(0, &mut buffers).is_none(), "not while the replies wait");
        assert_eq!(c.settle(&mut 0), Settled::Open { failed: false });
        assert!(c.output_over_since.is_some(), "the wait is timed");
        // The client reads: the rest of the same job goes out again, from where it stopped.
        c.socket_mut().room = usize::MAX;
        assert_eq!(c.settle(&mut 0), Settled::Open { failed: false });
        assert!(c.output_over_since.is_none());
        let job = c.take_job(0, &mut buffers).expect("the parked job");
        assert_eq!((job.next, job.spans.len(), job.output.len()), (1, 3, 0));
        assert_eq!(c.phase(), &WAITING);
        assert!(answer(&mut c, job));
        assert_eq!(c.phase(), &READING);
        let written = &c.socket_mut().written;
        assert!(written.ends_with(b"{\"b\":2}\n{\"c\":3}\n"), "replies in order");
    }

    /// A file of `len` bytes of noise, and the bytes.
    fn noise_file(len: usize, seed: u8) -> (Arc<File>, Vec<u8>, tempfile::NamedTempFile) {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        io::Write::write_all(&mut tmp, &bytes).unwrap();
        (Arc::new(tmp.reopen().unwrap()), bytes, tmp)
    }

    /// An HTTP job answering each of its requests with `head` and a body sent from `file`.
    fn file_job(
        c: &mut Conn<Fake>,
        buffers: &mut BufferPool,
        file: &Arc<File>,
        bodies: &[(u64, usize)],
    ) -> Job {
        let mut job = c.take_job(1, buffers).expect("a job");
        for (i, &(offset, len)) in bodies.iter().enumerate() {
            job.output.extend_from_slice(format!("head {i}\n").as_bytes());
            let slice = crate::store::FileSlice::detached(Arc::clone(file), offset, len);
            job.segments.push(Segment { at: job.output.len(), slice });
        }
        job.next = job.spans.len();
        job
    }

    const TWO_GETS: &[u8] = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";

    /// Pipelined replies with bodies from files leave in order, heads between bodies, whatever the socket
    /// takes at a time; a later job's reply never overtakes a body still being sent.
    #[test]
    fn file_bodies_leave_in_their_places() {
        let (file, bytes, _tmp) = noise_file(10_000, 3);
        let (mut c, mut buffers) = conn(Front::Http, &[TWO_GETS]);
        c.socket_mut().room = 5_000;
        read(&mut c);
        let job = file_job(&mut c, &mut buffers, &file, &[(0, 4_000), (4_000, 6_000)]);
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert!(c.holds_files());
        assert_eq!(c.pending_output(), 10_000 + 14 - 5_000);
        // The next request's reply queues behind the body being sent.
        c.socket_mut().reads.push_back(Ok(b"GET /c HTTP/1.1\r\n\r\n".to_vec()));
        read(&mut c);
        let mut next = c.take_job(1, &mut buffers).expect("the third request");
        next.output.extend_from_slice(b"third");
        next.next = next.spans.len();
        assert!(c.job_done(next, &mut 0, &mut buffers));
        c.socket_mut().room = usize::MAX;
        let mut out = 0;
        assert!(c.flush(&mut out));
        assert!(!c.holds_files() && c.pending_output() == 0);
        let mut expected = b"head 0\n".to_vec();
        expected.extend_from_slice(&bytes[..4_000]);
        expected.extend_from_slice(b"head 1\n");
        expected.extend_from_slice(&bytes[4_000..]);
        expected.extend_from_slice(b"third");
        assert_eq!(c.socket_mut().written, expected);
        assert_eq!(out as usize, expected.len() - 5_000);
    }

    /// A slow client's file bodies are copied into memory when the writer wants the volume back: the
    /// bytes are the same, and the lease is let go. A revoked lease is never sent from: the connection
    /// fails instead.
    #[test]
    fn file_bodies_fall_back_to_memory_and_never_outlive_their_lease() {
        let (file, bytes, _tmp) = noise_file(8_000, 9);
        let (mut c, mut buffers) = conn(Front::Http, &[TWO_GETS]);
        c.socket_mut().room = 3_000;
        read(&mut c);
        let job = file_job(&mut c, &mut buffers, &file, &[(0, 5_000), (5_000, 3_000)]);
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert!(!c.should_unpin(Instant::now()), "neither wanted nor waiting long");
        assert!(c.should_unpin(Instant::now() + FILE_SEND_PATIENCE), "waiting too long");
        c.segments[0].slice.want_back();
        assert!(c.should_unpin(Instant::now()), "wanted back");
        assert!(c.unpin());
        assert!(!c.holds_files());
        c.socket_mut().room = usize::MAX;
        assert!(c.flush(&mut 0));
        let mut expected = b"head 0\n".to_vec();
        expected.extend_from_slice(&bytes[..5_000]);
        expected.extend_from_slice(b"head 1\n");
        expected.extend_from_slice(&bytes[5_000..]);
        assert_eq!(c.socket_mut().written, expected);

        let (mut c, mut buffers) = conn(Front::Http, &[TWO_GETS]);
        c.socket_mut().room = 3_000;
        read(&mut c);
        let job = file_job(&mut c, &mut buffers, &file, &[(0, 5_000)]);
        assert!(c.job_done(job, &mut 0, &mut buffers));
        c.segments[0].slice.revoke();
        c.socket_mut().room = usize::MAX;
        assert!(!c.flush(&mut 0), "a revoked body is not sent");
        assert_eq!(c.socket_mut().written.len(), 3_000, "nothing more was written");
        assert!(!c.unpin(), "nor read back");
    }

    /// A client that has not even taken the head before a file body holds the body's volume as much as
    /// one stuck in the body: its patience runs as well.
    #[test]
    fn a_head_stuck_before_a_file_body_starts_the_patience() {
        let (file, _, _tmp) = noise_file(1_000, 2);
        let (mut c, mut buffers) = conn(Front::Http, &[TWO_GETS]);
        c.socket_mut().room = 3;
        read(&mut c);
        let job = file_job(&mut c, &mut buffers, &file, &[(0, 1_000)]);
        assert!(c.job_done(job, &mut 0, &mut buffers));
        assert_eq!(c.socket_mut().written, b"hea");
        assert!(c.should_unpin(Instant::now() + FILE_SEND_PATIENCE));
    }

    proptest::proptest! {
        /// Whatever the mix of heads and file bodies, however many jobs, and whatever the socket takes
        /// per call, the bytes written are the replies in order, and the counts agree.
        #[test]
        fn mixed_output_keeps_its_framing(
            jobs in proptest::collection::vec(proptest::collection::vec((0usize..300, 0usize..3_000), 0..4), 1..5),
            rooms in proptest::collection::vec(1usize..4_000, 1..40),
        ) {
            let (file, bytes, _tmp) = noise_file(3_000, 1);
            let (mut c, mut buffers) = conn(Front::Http, &[]);
            let mut expected = Vec::new();
            let mut out = 0;
            let mut rooms = rooms.into_iter().cycle();
            for (j, parts) in jobs.iter().enumerate() {
                c.socket_mut().room = rooms.next().unwrap_or(1);
                c.socket_mut().reads.push_back(Ok(b"GET / HTTP/1.1\r\n\r\n".to_vec()));
                read(&mut c);
                let mut job = c.take_job(1, &mut buffers).expect("a job");
                for (i, &(head, body)) in parts.iter().enumerate() {
                    let text: Vec<u8> = (0..head).map(|k| b'a' + ((j + i + k) % 26) as u8).collect();
                    job.output.extend_from_slice(&text);
                    expected.extend_from_slice(&text);
                    let offset = (head * 7) % (3_000 - body);
                    if body > 0 {
                        let slice = crate::store::FileSlice::detached(Arc::clone(&file), offset as u64, body);
                        job.segments.push(Segment { at: job.output.len(), slice });
                        expected.extend_from_slice(&bytes[offset..offset + body]);
                    }
                }
                job.next = job.spans.len();
                let before = c.pending_output();
                proptest::prop_assert!(c.job_done(job, &mut out, &mut buffers));
                proptest::prop_assert!(c.pending_output() <= before + expected.len());
                // Drain a little between jobs, so jobs pile up behind unsent bodies.
                c.socket_mut().room = rooms.next().unwrap_or(1);
                proptest::prop_assert!(c.flush(&mut out));
            }
            c.socket_mut().room = usize::MAX;
            proptest::prop_assert!(c.flush(&mut out));
            proptest::prop_assert_eq!(c.pending_output(), 0);
            proptest::prop_assert_eq!(&c.socket_mut().written, &expected);
            proptest::prop_assert_eq!(out as usize, expected.len());
        }
    }
}
