//! The reactor: the one thread that owns every socket.
//!
//! One mio loop accepts connections, reads until each socket would block, splits the bytes into requests,
//! and hands the requests of the whole turn to the workers in as few channel sends as possible (one send
//! and one wake-up per chunk of work, never one per request). Workers send finished jobs back on a channel
//! and wake the reactor through a [`Waker`] only when it is not already due to look, so a busy reactor is
//! never interrupted per reply. The reactor then writes each connection's replies with one write.
//!
//! The reactor never touches a file (beyond holding one spare descriptor on `/dev/null`, see
//! [`SpareFd`]); workers never touch a socket. One exception, for speed: the
//! server runs a connection's few one-key JSON requests on the reactor thread itself
//! ([`Inline`]), because a hand-off costs two thread wake-ups (tens of microseconds each on a small
//! machine) and such a request well under one. Bank-wide ops, HTTP, pipelined batches and anything
//! touching the disk store (a write, or a read of a value not in RAM) go to the workers.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::buffers::BufferPool;
use super::conn::{Conn, Cut, Phase, ReadOutcome, Settled};
use super::fds::{self, SpareFd};
use crate::auth::{Auth, AuthToken, Throttle};
use crate::dispatch::{Front, Inline, Job, Queue};
use crate::http::codec as http;
use crate::http::routes;
use crate::stats::Stats;
use bankcache_proto::reply;

/// Wakes the reactor when workers have finished jobs (or a shutdown is asked for).
pub const WAKER: Token = Token(0);
/// SIGINT / SIGTERM.
pub const SIGNALS: Token = Token(1);
/// The JSON listener.
pub const JSON_LISTENER: Token = Token(2);
/// The HTTP listener.
pub const HTTP_LISTENER: Token = Token(3);
/// Connection `slot` is registered as `Token(FIRST_CONN + slot)`.
const FIRST_CONN: usize = 16;

/// Requests per chunk when a turn's work is spread over several workers. Smaller turns go to one worker
/// in one send: on a machine with few cores, waking a second worker for a handful of requests costs more
/// than it saves.
const SPANS_PER_CHUNK: usize = 256;
/// How long a connection closed after an error waits for the peer to read the error line and close.
const LINGER_AFTER_ERROR: Duration = Duration::from_secs(2);
/// How long a connection refused at accept lingers.
const LINGER_AFTER_REFUSAL: Duration = Duration::from_secs(1);
/// Most refused connections kept lingering at once; beyond this they are closed at once.
const MAX_LINGERING: usize = 1024;
/// The last part of a shutdown's grace (`shutdown_timeout`) kept for delivering, at most: from then on
/// nothing more is started, and what is written is whole replies (see [`Reactor::wind_up`]). A fifth of
/// the grace when that is shorter.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);
/// Poll timeout while timers are pending (lingering connections, accept back-off, shutdown).
const TICK: Duration = Duration::from_millis(50);
/// How often idle connections are looked for (when an idle timeout applies).
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// Running out of file descriptors is logged at most this often (a flood of connections would otherwise
/// flood the log too); `connections_dropped_no_fd` counts every one.
const NO_FD_LOG_EVERY: Duration = Duration::from_secs(1);

/// Limits the reactor enforces itself.
#[derive(Debug, Clone)]
pub struct NetLimits {
    /// Most counted connections open at once.
    pub max_connections: usize,
    /// Longest JSON request in bytes.
    pub max_request_bytes: usize,
    /// HTTP head and body limits.
    pub http: http::Limits,
    /// An HTTP connection with nothing in progress for this long is closed.
    pub http_idle: Duration,
    /// A JSON connection with nothing in progress for this long is closed; `None` never (the default).
    pub idle: Option<Duration>,
    /// Bytes of replies a connection may have waiting before its reading and its job stop.
    pub max_output: usize,
    /// A client that keeps `max_output` bytes unread this long is closed; `None` never.
    pub output_timeout: Option<Duration>,
    /// How long a graceful shutdown may take (`shutdown_timeout`): requests already read are run and
    /// answered, and each connection's replies delivered, until then at most. A client that reads its
    /// replies is done long before; one that does not cannot hold the process longer. See
    /// [`Reactor::begin_shutdown`].
    pub shutdown_grace: Duration,
    /// The `auth_token`, if one is set: new connections then start locked ([`Auth::Locked`]), and a request
    /// that asks for `100 Continue` has its bearer token checked before the body is asked for.
    pub auth_token: Option<AuthToken>,
}

/// Set by a shutdown handle (`ShutdownHandle`); the reactor looks at it on every turn.
pub struct StopFlag {
    /// Asked to stop.
    pub requested: AtomicBool,
    /// The waker that makes the reactor look (shared with the workers).
    pub waker: Arc<Waker>,
}

/// The reactor's state; [`Reactor::run`] is its loop.
pub struct Reactor {
    poll: Poll,
    /// The JSON and HTTP listeners, indexed by [`Front`]; `None` once closed (or never opened).
    listeners: [Option<TcpListener>; 2],
    /// Open HTTP connections (they need the idle timer).
    http_conns: usize,
    last_idle_check: Instant,
    /// When `idle_timeout` is on, the time of this turn, stamped on JSON connections that sent something
    /// (one clock read per turn, not per read); `None` when it is off, so JSON reads read no clock.
    turn_clock: Option<Instant>,
    /// Closed to accept (and at once close) connections when the process is out of descriptors.
    spare_fd: SpareFd,
    /// When running out of descriptors was last logged, and connections dropped since.
    no_fd_logged: Option<Instant>,
    no_fd_dropped: u64,
    last_slow_check: Instant,
    signals: Option<Signals>,
    conns: Slab<Conn>,
    next_generation: u64,
    counted: usize,
    lingering: usize,
    buffers: BufferPool,
    /// The workers' queue; `None` once stopped.
    queue: Option<Queue>,
    done: Receiver<Vec<Job>>,
    /// Set by a worker that has queued finished jobs and woken the reactor; cleared before draining.
    notified: Arc<AtomicBool>,
    turn: Vec<Job>,
    turn_spans: usize,
    workers: usize,
    inline: Option<Inline>,
    /// Requests this turn may still run inline.
    inline_left: usize,
    stats: Arc<Stats>,
    limits: NetLimits,
    stop: Arc<StopFlag>,
    shutdown_deadline: Option<Instant>,
    /// The shutdown's grace is ending: nothing more is run or answered ([`Reactor::wind_up`] was called).
    wound_up: bool,
    accept_blocked: bool,
    bytes_in: u64,
    bytes_out: u64,
    requests_inline: u64,
    /// Failed authentications, server-wide: while it is shut, connections that have not authenticated
    /// wait with their requests unrun.
    throttle: Throttle,
    /// Some connection that has not authenticated has requests waiting for the throttle to open (the
    /// tick then moves them on).
    held_for_auth: bool,
    /// Connections holding reply bodies still to be sent from volume files (slots; may name closed ones).
    holding_files: Vec<usize>,
    /// Connections to close once a pass over a list is done.
    stale: Vec<usize>,
}

/// Everything the reactor is built from.
pub struct Parts {
    /// The poll the listener and waker are registered with.
    pub poll: Poll,
    /// The JSON listener, registered as [`JSON_LISTENER`].
    pub listener: TcpListener,
    /// The HTTP listener, registered as [`HTTP_LISTENER`], if any.
    pub http_listener: Option<TcpListener>,
    /// Signals registered as [`SIGNALS`], when the process wants them.
    pub signals: Option<Signals>,
    /// Where jobs go.
    pub queue: Queue,
    /// Where finished jobs come back.
    pub done: Receiver<Vec<Job>>,
    /// The flag workers set before waking the reactor.
    pub notified: Arc<AtomicBool>,
    /// Number of workers.
    pub workers: usize,
    /// Set to let the reactor run small turns itself (with a disk store, only what needs no disk).
    pub inline: Option<Inline>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Limits.
    pub limits: NetLimits,
    /// Shutdown request.
    pub stop: Arc<StopFlag>,
}

impl Reactor {
    /// Builds the reactor from its parts.
    pub fn new(parts: Parts) -> Reactor {
        Reactor {
            poll: parts.poll,
            listeners: [Some(parts.listener), parts.http_listener],
            http_conns: 0,
            last_idle_check: Instant::now(),
            turn_clock: None,
            spare_fd: SpareFd::open(),
            no_fd_logged: None,
            no_fd_dropped: 0,
            last_slow_check: Instant::now(),
            signals: parts.signals,
            conns: Slab::with_capacity(1024),
            next_generation: 0,
            counted: 0,
            lingering: 0,
            buffers: BufferPool::default(),
            queue: Some(parts.queue),
            done: parts.done,
            notified: parts.notified,
            turn: Vec::new(),
            turn_spans: 0,
            workers: parts.workers.max(1),
            inline: parts.inline,
            inline_left: 0,
            stats: parts.stats,
            limits: parts.limits,
            stop: parts.stop,
            shutdown_deadline: None,
            wound_up: false,
            accept_blocked: false,
            bytes_in: 0,
            bytes_out: 0,
            requests_inline: 0,
            throttle: Throttle::new(Instant::now()),
            held_for_auth: false,
            holding_files: Vec::new(),
            stale: Vec::new(),
        }
    }

    /// Runs until a shutdown has finished: every connection answered, its replies delivered and closed,
    /// or the grace period over. The workers are told to stop on the way out; the caller joins them.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.needs_tick().then_some(TICK);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.inline_left = self.inline.as_ref().map_or(0, Inline::max_per_turn);
            self.turn_clock = self.limits.idle.map(|_| Instant::now());
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    SIGNALS => self.on_signals(),
                    JSON_LISTENER => self.accept(Front::Json),
                    HTTP_LISTENER => self.accept(Front::Http),
                    Token(t) => {
                        let closed = event.is_read_closed() || event.is_error();
                        let readable = event.is_readable() || closed;
                        self.on_conn_event(t - FIRST_CONN, readable, closed, event.is_writable());
                    }
                }
            }
            if self.stop.requested.load(Ordering::Acquire) {
                self.begin_shutdown();
            }
            self.drain_done();
            self.dispatch_turn();
            let now = Instant::now();
            let over = self.shutdown_deadline.is_some_and(|deadline| now >= deadline);
            // Once the grace is over, what is left is closed below, and logged.
            if !over {
                self.tick();
            }
            self.publish_counters();
            if let Some(deadline) = self.shutdown_deadline {
                if !self.wound_up && now + self.drain() >= deadline {
                    self.wind_up();
                }
                if self.conns.is_empty() || over {
                    break;
                }
            }
        }
        self.close_all();
        self.publish_counters();
        // Every connection is gone, so nothing not yet started is run (it could never be answered); the
        // workers finish the job in hand, then stop.
        if let Some(queue) = self.queue.take() {
            queue.cancel();
            queue.stop(self.workers);
        }
        Ok(())
    }

    /// The part of the grace kept for delivering: [`SHUTDOWN_DRAIN`], or a fifth of a shorter grace.
    fn drain(&self) -> Duration {
        (self.limits.shutdown_grace / 5).min(SHUTDOWN_DRAIN)
    }

    /// The grace is over: closes the connections left, which are those whose client has not read its
    /// replies (or not closed after reading them, or not acknowledged them) in time. Input waiting is read
    /// and dropped first,
    /// so that the close is an orderly one (closing with unread input resets the connection, and a reset
    /// destroys what the kernel still holds for the peer), and the kernel goes on delivering what was
    /// written after the process exits, unless the peer sends more. A client that read nothing during the
    /// drain (the grace's last second) may find the reply it was in the middle of receiving cut.
    fn close_all(&mut self) {
        if self.conns.is_empty() {
            return;
        }
        let unwritten = self.conns.iter().filter(|(_, c)| c.pending_output() > 0).count();
        log::warn!(
            "shutdown grace period over: closing {} connections whose clients have not taken all their \
             replies ({unwritten} of them with replies not yet written to the socket)",
            self.conns.len()
        );
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        let now = Instant::now();
        for slot in slots {
            if let Some(conn) = self.conns.get_mut(slot) {
                if !matches!(conn.phase(), Phase::Lingering { .. }) {
                    // One last write of what the socket takes now, whole replies as the drain writes them.
                    let _ = conn.settle(&mut self.bytes_out);
                    conn.linger(now);
                    self.lingering += 1;
                }
                let _ = conn.read(&mut self.bytes_in, true);
            }
            self.close(slot);
        }
    }

    fn needs_tick(&self) -> bool {
        self.lingering > 0
            || self.held_for_auth
            || self.accept_blocked
            || self.shutdown_deadline.is_some()
            || self.http_conns > 0
            || (self.limits.idle.is_some() && self.counted > self.http_conns)
            || (self.limits.output_timeout.is_some() && !self.conns.is_empty())
    }

    fn on_signals(&mut self) {
        let mut stop = false;
        if let Some(signals) = &mut self.signals {
            for signal in signals.pending() {
                log::info!("received signal {signal}; shutting down");
                stop = true;
            }
        }
        if stop {
            self.begin_shutdown();
        }
    }

    /// Stops accepting and reading; what was already read is still run and answered.
    ///
    /// A stop then goes: each connection finishes the requests it had read and writes their replies, then
    /// lingers (its write side shut, input read and dropped) until its client has closed, or has
    /// acknowledged every byte and gone quiet, and is closed; the workers are stopped only once the
    /// reactor is done, and the caller then syncs the store. All within the grace (`shutdown_timeout`):
    /// its last second ([`SHUTDOWN_DRAIN`]) is for delivering only ([`Reactor::wind_up`]), and at its end
    /// what is left is closed ([`Reactor::close_all`]).
    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(Instant::now() + self.limits.shutdown_grace);
        for listener in &mut self.listeners {
            if let Some(mut listener) = listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            if let Some(conn) = self.conns.get_mut(slot) {
                conn.stop_reading();
            }
            self.progress(slot);
        }
    }

    /// The grace is ending: nothing more is started, and what is written is whole replies. Requests not
    /// yet run are dropped unrun (those waiting on connections, those gathered for the workers, and, as the
    /// queue is cancelled, those of jobs in the workers' hands, which stop before their next request);
    /// replies go on being written, but once a client's socket refuses part of a JSON reply, that reply
    /// is its last ([`Conn::cut`]), so that the drain left delivers whole lines. Only a client that does
    /// not keep up can thus be left with requests run and not answered; the log counts them.
    fn wind_up(&mut self) {
        self.wound_up = true;
        if let Some(queue) = &self.queue {
            queue.cancel();
        }
        let mut unrun: usize = 0;
        for job in std::mem::take(&mut self.turn) {
            unrun += job.spans.len() - job.next;
            self.buffers.put_job(job);
        }
        self.turn_spans = 0;
        let (mut cut, mut jobs_out, mut dropped_output) = (0, 0, 0);
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            let Some(conn) = self.conns.get_mut(slot) else { continue };
            let dropped = conn.cut();
            if dropped != Cut::default() {
                cut += 1;
                unrun += dropped.unrun;
                jobs_out += usize::from(dropped.job_out);
                dropped_output += dropped.dropped_output;
            }
            self.progress(slot);
        }
        if cut > 0 {
            log::warn!(
                "shutdown: {:.1} s left of the grace period, and {cut} connections still owed replies: {unrun} \
                 requests dropped unrun, {jobs_out} jobs stopped before their next request, {dropped_output} \
                 bytes of replies dropped unsent (their clients were not keeping up)",
                self.drain().as_secs_f64()
            );
        }
    }

    fn accept(&mut self, proto: Front) {
        self.accept_blocked = false;
        loop {
            let accepted = match &self.listeners[proto as usize] {
                Some(listener) => listener.accept(),
                None => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.admit(stream, peer, proto);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) if fds::out_of_fds(&e) && self.shed_backlog(proto, &e) => return,
                Err(e) => {
                    // No spare descriptor to shed the backlog with, or another failure (ENOBUFS, ENOMEM):
                    // back off and retry on the next tick, since no new readiness event will come for
                    // connections already in the backlog. A tick is 50 ms, so this never spins.
                    if !fds::out_of_fds(&e) {
                        log::warn!("accept on the {} port failed: {e}; retrying shortly", port_name(proto));
                    }
                    self.accept_blocked = true;
                    return;
                }
            }
        }
    }

    /// Out of file descriptors: closes the spare to free one, then accepts every connection waiting in the
    /// backlog and closes it at once, telling it why, so those clients learn now instead of hanging in the
    /// backlog, and the listener is drained (with edge-triggered readiness, a listener left undrained
    /// would report nothing new, and retrying it at once would spin). Then takes the spare back. Returns
    /// false when there was no spare, or the freed descriptor was taken meanwhile (the caller backs off).
    fn shed_backlog(&mut self, proto: Front, cause: &io::Error) -> bool {
        if !self.spare_fd.release() {
            self.no_fd_log(proto, cause, None);
            return false;
        }
        let mut dropped = 0;
        let drained = loop {
            let accepted = match &self.listeners[proto as usize] {
                Some(listener) => listener.accept(),
                None => break true,
            };
            match accepted {
                Ok((stream, _)) => {
                    refuse_at_once(stream, proto);
                    dropped += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(_) => break false,
            }
        };
        let restored = self.spare_fd.restore();
        // Linux reserves the descriptor before it looks at the backlog, so an accept loop that has just
        // taken the last connection the limit allows ends on EMFILE rather than WouldBlock: nothing was
        // refused then, and nothing is logged.
        if dropped > 0 {
            self.stats.net.connections_dropped_no_fd.fetch_add(dropped, Ordering::Relaxed);
            self.no_fd_log(proto, cause, Some(dropped));
        }
        drained && restored
    }

    /// Logs running out of descriptors, at most once per [`NO_FD_LOG_EVERY`]: with the connections closed
    /// at once since the last report (`dropped`), or, without a spare descriptor (`None`), saying that
    /// connections wait in the backlog.
    fn no_fd_log(&mut self, proto: Front, cause: &io::Error, dropped: Option<u64>) {
        self.no_fd_dropped += dropped.unwrap_or(0);
        if self.no_fd_logged.is_some_and(|at| at.elapsed() < NO_FD_LOG_EVERY) {
            return;
        }
        self.no_fd_logged = Some(Instant::now());
        let (port, open) = (port_name(proto), self.conns.len());
        let advice = "raise the descriptor limit or lower max_connections";
        match dropped {
            Some(_) => log::warn!(
                "out of file descriptors accepting on the {port} port ({cause}) with {open} connections open: \
                 {} new connections closed at once since the last report ({advice})",
                std::mem::take(&mut self.no_fd_dropped),
            ),
            None => log::warn!(
                "out of file descriptors accepting on the {port} port ({cause}) with {open} connections open, \
                 and no spare descriptor to refuse new ones with: they wait in the backlog ({advice})"
            ),
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, proto: Front) {
        let _ = stream.set_nodelay(true);
        self.next_generation += 1;
        let net = &self.stats.net;
        let refuse = self.counted >= self.limits.max_connections;
        if refuse {
            net.connections_rejected.fetch_add(1, Ordering::Relaxed);
            if self.lingering >= MAX_LINGERING {
                return; // dropped: closes at once
            }
        } else {
            net.connections_total.fetch_add(1, Ordering::Relaxed);
            net.connections_current.fetch_add(1, Ordering::Relaxed);
        }
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        let limits = &self.limits;
        let mut conn = Conn::new(
            stream,
            self.next_generation,
            proto,
            limits.max_request_bytes,
            limits.http,
            limits.max_output,
            Auth::new(limits.auth_token.is_some()),
            &mut self.buffers,
        );
        conn.peer = Some(peer.ip().to_canonical());
        let token = Token(FIRST_CONN + slot);
        if let Err(e) = self.poll.registry().register(conn.socket_mut(), token, Interest::READABLE) {
            log::warn!("cannot register a new connection: {e}");
            if !refuse {
                net.connections_current.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        if refuse {
            conn.counted = false;
            let why = format!("Too many connections: max_connections is {}", self.limits.max_connections);
            let mut line = Vec::new();
            match proto {
                Front::Json => reply::error(&mut line, &why),
                Front::Http => {
                    http::text_error(&mut line, 503, "Service Unavailable", &[], &why, false, true);
                }
            }
            conn.send(&line, &mut self.bytes_out);
            conn.linger(Instant::now() + LINGER_AFTER_REFUSAL);
            self.lingering += 1;
            if conn.read(&mut self.bytes_in, true) == ReadOutcome::Broken {
                // The peer is already gone.
                self.lingering -= 1;
                return;
            }
        } else {
            self.counted += 1;
            self.http_conns += usize::from(proto == Front::Http);
            log::debug!("connection {} opened in slot {slot}", self.next_generation);
        }
        entry.insert(conn);
    }

    fn on_conn_event(&mut self, slot: usize, readable: bool, closed: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        if writable && !conn.flush(&mut self.bytes_out) {
            return self.close(slot);
        }
        if readable && read_stamped(conn, &mut self.bytes_in, closed, self.turn_clock) == ReadOutcome::Broken
        {
            return self.close(slot);
        }
        self.progress(slot);
    }

    /// Moves a connection along after anything happened to it: resume a paused read, send `100 Continue`,
    /// hand waiting requests on, and act on what the connection says it needs (write interest, lingering,
    /// closing).
    fn progress(&mut self, slot: usize) {
        let Some(conn) = self.conns.get_mut(slot) else { return };
        // Reading paused on a limit that a reply, a write or a job just taken has since lifted. No
        // readiness event will report the input that waited meanwhile, so read it now, and again as long
        // as handing requests on lifts the limit.
        while conn.should_resume() || conn.continue_due() || conn.has_work() {
            if conn.should_resume()
                && read_stamped(conn, &mut self.bytes_in, true, self.turn_clock) == ReadOutcome::Broken
            {
                return self.close(slot);
            }
            if conn.continue_due() {
                // With a token, the body is asked for only with the right one: a client without it is
                // answered 401 at once instead of uploading a body to be refused. A connection that has
                // not authenticated waits for the throttle first, as its requests would.
                let refusal = match (&self.limits.auth_token, conn.waiting_head()) {
                    (Some(_), Some(_))
                        if conn.auth().is_locked() && !self.throttle.admits(Instant::now()) =>
                    {
                        self.held_for_auth = true;
                        break;
                    }
                    (Some(token), Some(head)) => routes::refuse_continue(token, head),
                    _ => None,
                };
                let sent = match refusal {
                    None => conn.send_continue(&mut self.bytes_out),
                    Some(refusal) => {
                        if refusal.wrong_token {
                            note_continue_failure(&self.stats, &mut self.throttle, conn);
                        }
                        conn.refuse_continue(&refusal.response, &mut self.bytes_out)
                    }
                };
                if !sent {
                    return self.close(slot);
                }
            }
            // A connection that has not authenticated runs nothing while failures come too fast: it
            // waits, unread requests and all, and the tick moves it on once the throttle opens.
            if conn.auth().is_locked() && conn.has_work() && !self.throttle.admits(Instant::now()) {
                self.held_for_auth = true;
                break;
            }
            let Some(mut job) = conn.take_job(slot, &mut self.buffers) else { break };
            if let Some(inline) = &self.inline {
                self.requests_inline += inline.run(&mut job, &mut self.inline_left) as u64;
            }
            let failures = new_failures(conn.auth(), &job);
            // What the reactor did not run goes to a worker, unless it stopped at the output cap (then the
            // job waits, parked on the connection, for the client to read) or at a wrong token (then it
            // waits for the throttle).
            if !job.finished() && job.output_bytes() < self.limits.max_output && failures == 0 {
                self.turn_spans += job.spans.len() - job.next;
                self.turn.push(job);
                continue;
            }
            if failures > 0 {
                note_failures(&self.stats, &mut self.throttle, conn, &job, failures);
            }
            if !conn.job_done(job, &mut self.bytes_out, &mut self.buffers) {
                return self.close(slot);
            }
        }
        let failed = match conn.settle(&mut self.bytes_out) {
            Settled::Close => return self.close(slot),
            Settled::Open { failed } => failed,
            Settled::Linger { failed } => {
                // During a stop, until the peer has everything (see `tick`), within the grace.
                conn.linger(self.shutdown_deadline.unwrap_or_else(|| Instant::now() + LINGER_AFTER_ERROR));
                self.lingering += 1;
                failed
            }
        };
        if failed {
            self.stats.net.requests_too_large.fetch_add(1, Ordering::Relaxed);
        }
        if let Phase::Lingering { .. } = conn.phase() {
            // Input may already be waiting, and edge-triggered readiness will not report it again.
            if conn.read(&mut self.bytes_in, true) == ReadOutcome::Broken {
                return self.close(slot);
            }
            if self.shutdown_deadline.is_some() && conn.done_lingering() {
                return self.close(slot);
            }
        }
        if conn.holds_files() && !conn.listed_for_files {
            conn.listed_for_files = true;
            self.holding_files.push(slot);
        }
        let pending = conn.pending_output() > 0;
        if pending != conn.write_interest {
            let interest = if pending { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
            let token = Token(FIRST_CONN + slot);
            if self.poll.registry().reregister(conn.socket_mut(), token, interest).is_err() {
                return self.close(slot);
            }
            conn.write_interest = pending;
        }
    }

    fn close(&mut self, slot: usize) {
        if !self.conns.contains(slot) {
            return;
        }
        let mut conn = self.conns.remove(slot);
        conn.close();
        let _ = self.poll.registry().deregister(conn.socket_mut());
        if conn.counted {
            self.counted -= 1;
            self.http_conns -= usize::from(conn.front == Front::Http);
            self.stats.net.connections_current.fetch_sub(1, Ordering::Relaxed);
        }
        if let Phase::Lingering { .. } = conn.phase() {
            self.lingering -= 1;
        }
        log::debug!("connection {} in slot {slot} closed", conn.generation);
        conn.recycle(&mut self.buffers);
    }

    /// Takes every finished job the workers have sent back and writes its replies.
    fn drain_done(&mut self) {
        // Clear first: a worker that queues after this point sees the flag down and wakes us again.
        self.notified.store(false, Ordering::SeqCst);
        while let Ok(batch) = self.done.try_recv() {
            if let Some(queue) = &self.queue {
                queue.returned();
            }
            for job in batch {
                self.complete(job);
            }
        }
    }

    fn complete(&mut self, job: Job) {
        let slot = job.slot;
        let conn = match self.conns.get_mut(slot) {
            Some(conn) if conn.generation == job.generation => conn,
            // The connection closed (and its slot may have been reused): the reply is for no one.
            _ => return self.buffers.put_job(job),
        };
        let failures = new_failures(conn.auth(), &job);
        if failures > 0 {
            note_failures(&self.stats, &mut self.throttle, conn, &job, failures);
        }
        if !conn.job_done(job, &mut self.bytes_out, &mut self.buffers) {
            return self.close(slot);
        }
        self.progress(slot);
    }

    /// Sends waiting jobs to the workers, at most one batch per idle worker. While every worker is busy,
    /// jobs keep gathering here, so the next batch carries everything that arrived meanwhile: under load
    /// batches grow and hand-offs (each a wake-up costing microseconds) per request shrink, and when the
    /// server is idle a request leaves at once.
    fn dispatch_turn(&mut self) {
        let Some(queue) = &self.queue else { return };
        let idle = self.workers.saturating_sub(queue.outstanding());
        if self.turn.is_empty() || idle == 0 {
            return;
        }
        // Spread a big turn over the idle workers; a small one goes whole to one worker.
        let chunks = (self.turn_spans / SPANS_PER_CHUNK).clamp(1, idle);
        let per_chunk = self.turn_spans.div_ceil(chunks);
        let mut turn = std::mem::take(&mut self.turn);
        self.turn_spans = 0;
        let mut sent_ok = true;
        for chunk in (0..chunks).rev() {
            let rest = if chunk == 0 { Vec::new() } else { turn.split_off(cut_after(&turn, per_chunk)) };
            if turn.is_empty() {
                break;
            }
            sent_ok &= queue.send(turn);
            turn = rest;
        }
        if !sent_ok {
            log::error!("the worker pool is gone; shutting down");
            self.begin_shutdown();
        }
    }

    fn tick(&mut self) {
        if self.accept_blocked {
            self.spare_fd.restore();
            self.accept(Front::Json);
            self.accept(Front::Http);
        }
        self.close_idle();
        self.close_slow_clients();
        self.release_held_for_auth();
        self.release_files();
        if self.lingering == 0 && self.shutdown_deadline.is_none() {
            return;
        }
        let now = Instant::now();
        let shutting_down = self.shutdown_deadline.is_some();
        let lingering: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.phase(), Phase::Lingering { .. }))
            .map(|(slot, _)| slot)
            .collect();
        for slot in lingering {
            let Some(conn) = self.conns.get_mut(slot) else { continue };
            let expired = matches!(conn.phase(), Phase::Lingering { until } if *until <= now);
            // During a stop, a connection closes as soon as closing costs its client nothing.
            if expired || (shutting_down && conn.done_lingering()) {
                self.close(slot);
            }
        }
    }

    /// Copies into memory the file bodies of connections whose clients read too slowly, or whose volume
    /// the writer wants back, so that no client holds a volume from being reused (see
    /// [`crate::store::FileSlice`]). A body that can no longer be read closes its connection.
    fn release_files(&mut self) {
        if self.holding_files.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut listed = std::mem::take(&mut self.holding_files);
        listed.retain(|&slot| {
            let Some(conn) = self.conns.get_mut(slot) else { return false };
            if !conn.listed_for_files {
                return false;
            }
            if conn.holds_files() && conn.should_unpin(now) && !conn.unpin() {
                log::warn!("connection {}: a reply body could not be read back; closing it", conn.generation);
                conn.listed_for_files = false;
                self.stale.push(slot);
                return false;
            }
            conn.listed_for_files = conn.holds_files();
            conn.listed_for_files
        });
        self.holding_files = listed;
        for slot in std::mem::take(&mut self.stale) {
            self.close(slot);
        }
    }

    /// Once the throttle has opened again, moves on the connections that waited for it (each may find it
    /// shut again after a few more failures, and wait on).
    fn release_held_for_auth(&mut self) {
        if !self.held_for_auth || !self.throttle.admits(Instant::now()) {
            return;
        }
        self.held_for_auth = false;
        let held: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.auth().is_locked() && (c.has_work() || c.continue_due()))
            .map(|(slot, _)| slot)
            .collect();
        for slot in held {
            self.progress(slot);
        }
    }

    /// Closes connections that have sent nothing for their idle timeout while nothing of theirs is in
    /// progress: idle keep-alive HTTP connections and HTTP clients stuck in the middle of a request
    /// (`http_idle_timeout`), and silent JSON connections (`idle_timeout`, off by default).
    fn close_idle(&mut self) {
        let json_idle = self.limits.idle.filter(|_| self.counted > self.http_conns);
        if (self.http_conns == 0 && json_idle.is_none()) || self.last_idle_check.elapsed() < IDLE_CHECK {
            return;
        }
        self.last_idle_check = Instant::now();
        let http_idle = self.limits.http_idle;
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let limit = match c.front {
                    Front::Http => Some(http_idle),
                    Front::Json => json_idle,
                };
                limit.is_some_and(|limit| c.is_idle() && c.last_active.elapsed() > limit)
            })
            .map(|(slot, _)| slot)
            .collect();
        for slot in stale {
            log::debug!("closing an idle connection in slot {slot}");
            self.stats.net.connections_closed_idle.fetch_add(1, Ordering::Relaxed);
            self.close(slot);
        }
    }

    /// Closes clients that have kept `max_output` bytes of replies unread for `output_timeout`: they hold
    /// memory and, with their job parked, a place in line, and are not reading.
    fn close_slow_clients(&mut self) {
        let Some(timeout) = self.limits.output_timeout else { return };
        if self.last_slow_check.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last_slow_check = Instant::now();
        let slow: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.output_over_since.is_some_and(|since| since.elapsed() > timeout))
            .map(|(slot, _)| slot)
            .collect();
        for slot in slow {
            log::info!(
                "closing a client that left {} s of replies unread in slot {slot}",
                timeout.as_secs_f64()
            );
            self.stats.net.slow_clients_closed.fetch_add(1, Ordering::Relaxed);
            self.close(slot);
        }
    }

    fn publish_counters(&mut self) {
        let net = &self.stats.net;
        if self.bytes_in > 0 {
            net.bytes_in.fetch_add(std::mem::take(&mut self.bytes_in), Ordering::Relaxed);
        }
        if self.bytes_out > 0 {
            net.bytes_out.fetch_add(std::mem::take(&mut self.bytes_out), Ordering::Relaxed);
        }
        if self.requests_inline > 0 {
            net.requests_inline.fetch_add(std::mem::take(&mut self.requests_inline), Ordering::Relaxed);
        }
    }
}

/// Reads from `conn`, and stamps it active at `clock` (the turn's time) when anything arrived: that is how a
/// JSON connection's idle time is kept, and only when `idle_timeout` is on (HTTP connections stamp
/// themselves).
fn read_stamped(
    conn: &mut Conn,
    bytes_in: &mut u64,
    peer_closed: bool,
    clock: Option<Instant>,
) -> ReadOutcome {
    let before = *bytes_in;
    let outcome = conn.read(bytes_in, peer_closed);
    if let Some(now) = clock {
        if *bytes_in != before {
            conn.last_active = now;
        }
    }
    outcome
}

/// Wrong tokens a job came back with: its connection's failures then, less those before.
fn new_failures(before: Auth, job: &Job) -> u32 {
    u32::from(job.auth.failures().saturating_sub(before.failures()))
}

/// Counts wrong tokens, spends the throttle's credit for them, and logs them with the peer's address (never
/// the token). The log cannot flood: the throttle bounds how often failures can happen at all.
fn note_failures(stats: &Stats, throttle: &mut Throttle, conn: &mut Conn, job: &Job, failures: u32) {
    stats.net.auth_failures.fetch_add(u64::from(failures), Ordering::Relaxed);
    throttle.failed(Instant::now(), failures);
    let peer = conn.socket_mut().peer_addr().map_or_else(|_| "an unknown peer".into(), |a| a.to_string());
    let closing = if job.close_after { "; closing it" } else { "" };
    log::warn!(
        "authentication failed on the {} port from {peer}: wrong token, {} on this connection{closing}",
        port_name(conn.front),
        job.auth.failures(),
    );
}

/// Counts, throttles and logs a wrong token seen in a request waiting for `100 Continue` (answered 401, and
/// the connection closes), as [`note_failures`] does for one a worker saw.
fn note_continue_failure(stats: &Stats, throttle: &mut Throttle, conn: &mut Conn) {
    stats.net.auth_failures.fetch_add(1, Ordering::Relaxed);
    throttle.failed(Instant::now(), 1);
    let peer = conn.socket_mut().peer_addr().map_or_else(|_| "an unknown peer".into(), |a| a.to_string());
    log::warn!(
        "authentication failed on the HTTP port from {peer}: wrong token before 100 Continue; closing it"
    );
}

/// The port a front listens on, as the logs name it.
fn port_name(proto: Front) -> &'static str {
    match proto {
        Front::Json => "JSON",
        Front::Http => "HTTP",
    }
}

/// Closes a connection accepted when the process had no descriptor to serve it with, telling it why
/// first (best effort: one non-blocking write, which a fresh socket's empty send buffer takes). Input
/// already waiting is read first, so the close sends a FIN after the line rather than a reset that could
/// destroy it.
fn refuse_at_once(stream: TcpStream, proto: Front) {
    let why = "Too many connections: the server is out of file descriptors";
    let mut line = Vec::new();
    match proto {
        Front::Json => reply::error(&mut line, why),
        Front::Http => {
            http::text_error(&mut line, 503, "Service Unavailable", &[], why, false, true);
        }
    }
    let _ = io::Write::write(&mut &stream, &line);
    let _ = io::Read::read(&mut &stream, &mut [0; 4096]);
}

/// How many leading jobs of `jobs` make up at least `spans` requests.
fn cut_after(jobs: &[Job], spans: usize) -> usize {
    let mut seen = 0;
    for (i, job) in jobs.iter().enumerate() {
        seen += job.spans.len() - job.next;
        if seen >= spans {
            return i + 1;
        }
    }
    jobs.len()
}
