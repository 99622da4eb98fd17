//! The closed-loop load driver: `--threads` OS threads, each a mio event loop
//! over its share of the TCP connections to one server, with counters and HDR
//! histograms merged at the end. Both the run mode and `compare` call
//! [`run_bench`], so they share one code path.
//!
//! Each connection keeps exactly `--pipeline` requests in flight: the next
//! window is written, in one write, only once every reply of the previous
//! window is in. Being closed-loop, the offered load follows the server, so the
//! figures are the server's throughput and latency at that concurrency, not
//! those of a queue growing without bound.
//!
//! The driver usually shares the machine with the server under test, so its hot
//! path is kept cheap: requests are assembled from templates built once, into
//! buffers that are reused; replies are parsed in place; nothing is allocated
//! per request; each reply costs about one read and one write; and the threads
//! share nothing but a few counters touched once per poll turn (and, with
//! `--requests`, once per window).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::proto::{Codec, Op, Parsed, Proto, Reply, MAX_INPUT};

/// Requests per window while prefilling, unless `--pipeline` is larger or the
/// requests are too large for `PREFILL_BYTES`: prefill is not measured, so it
/// may as well go fast.
const PREFILL_WINDOW: usize = 64;
/// Prefill windows are cut to about this many bytes of requests, unless
/// `--pipeline` asks for more, so that prefilling large values does not hold
/// `PREFILL_WINDOW` of them per connection in memory.
const PREFILL_BYTES: usize = 4 << 20;
/// Give up when connections wait this long without any reply, so that a hung
/// server cannot hang the driver.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Initial size of each connection's input buffer; it grows on demand.
const MIN_INPUT: usize = 16 << 10;
/// Longest a poll waits, so that a thread notices a failed sibling or a
/// ctrl-c soon, and publishes its progress.
const MAX_POLL_WAIT: Duration = Duration::from_millis(100);
/// Verification failures each thread describes on stderr; the rest are only counted.
const VERIFY_FAILURES_SHOWN: u64 = 3;

/// Set by `compare`'s SIGINT/SIGTERM handler: every driver thread stops at its
/// next poll turn, so that the servers it started are killed on the way out.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// When a run's measurement ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// After this long.
    Duration(Duration),
    /// After this many measured replies, over all threads (0: prefill only).
    Requests(u64),
}

/// Everything one run needs; built from the run mode's flags or by `compare`.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub addr: SocketAddr,
    pub proto: Proto,
    pub connections: usize,
    pub pipeline: usize,
    pub value_size: usize,
    pub keys: u64,
    pub get_ratio: f64,
    pub stop: Stop,
    pub warmup: Duration,
    pub prefill: bool,
    pub seed: u64,
    /// Check every byte of every get hit against the key's value.
    pub verify: bool,
    /// Driver threads; at most one per connection.
    pub threads: usize,
    pub http_prefix: String,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// bankcache's `auth_token`: sent by `auth` first on each JSON connection, and as a bearer header on
    /// each HTTP request.
    pub auth_token: Option<String>,
}

// ---------------------------------------------------------------------------
// Request generation

/// SplitMix64: tiny, fast and good enough to pick keys; hand-written so that a
/// seed gives the same request stream on every platform and crate version.
pub struct Rng(pub u64);

impl Rng {
    /// 64 fresh bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`, by multiply-shift (no division, negligible bias).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The filler every key's value is stamped on: deterministic and printable,
/// so that no protocol needs escaping.
fn make_value(size: usize, rng: &mut Rng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..size).map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize]).collect()
}

/// What the timed run asks for; shared by all connections.
struct Workload {
    keys: u64,
    pipeline: usize,
    /// A request is a get when 53 random bits fall below this.
    get_threshold: u64,
}

impl Workload {
    fn new(cfg: &BenchConfig) -> Self {
        Workload {
            keys: cfg.keys,
            pipeline: cfg.pipeline,
            get_threshold: (cfg.get_ratio * (1u64 << 53) as f64) as u64,
        }
    }

    fn pick(&self, rng: &mut Rng) -> (Op, u64) {
        let op = if rng.next_u64() >> 11 < self.get_threshold { Op::Get } else { Op::Set };
        (op, rng.below(self.keys))
    }
}

/// Requests per prefill window: `PREFILL_WINDOW`, fewer when that many sets
/// of `set_len` bytes would pass `PREFILL_BYTES`, but never fewer than `pipeline`.
fn prefill_window(pipeline: usize, set_len: usize) -> usize {
    (PREFILL_BYTES / set_len.max(1)).clamp(1, PREFILL_WINDOW).max(pipeline)
}

/// Takes up to `want` requests from the shared `--requests` budget.
fn claim(budget: &AtomicU64, want: u64) -> u64 {
    let mut left = budget.load(Ordering::Relaxed);
    loop {
        if left == 0 {
            return 0;
        }
        let take = left.min(want);
        match budget.compare_exchange_weak(left, left - take, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return take,
            Err(now) => left = now,
        }
    }
}

// ---------------------------------------------------------------------------
// Connections

/// What `--verify` made of one reply.
enum Verdict {
    /// Not a hit, or verification is off.
    Unchecked,
    Good,
    /// The start of what came back, for the diagnostic.
    Bad(String),
}

/// Sends a connection's first request (bankcache's `auth`) and waits, blocking and within a few seconds,
/// for its one reply line, which must be ok: a load on a connection the server refuses would measure
/// nothing but errors.
fn handshake(stream: &std::net::TcpStream, request: &[u8]) -> io::Result<()> {
    use std::io::{Read, Write};
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    (&*stream).write_all(request)?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so that nothing after the line is read into a buffer that would then be lost.
    while line.last() != Some(&b'\n') {
        if (&*stream).read(&mut byte)? == 0 || line.len() > 4096 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no reply to auth"));
        }
        line.push(byte[0]);
    }
    stream.set_read_timeout(None)?;
    if Codec::handshake_ok(&line) {
        Ok(())
    } else {
        let reply = String::from_utf8_lossy(&line).trim_end().to_owned();
        Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("auth refused: {reply}")))
    }
}

/// One TCP connection and its window of in-flight requests.
struct Conn {
    stream: TcpStream,
    token: Token,
    rng: Rng,
    /// Keys this connection still has to store while prefilling.
    prefill: Range<u64>,
    /// The current window's requests, and how much of them is written.
    out: Vec<u8>,
    written: usize,
    /// Received bytes; `input[in_start..in_end]` is not parsed yet.
    input: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// Operations and keys of the current window in send order, which is reply order.
    window: Vec<(Op, u64)>,
    answered: usize,
    /// Whether the current window was drawn in the measured phase (with
    /// `--requests`, only those replies count, so that exactly N do).
    window_measured: bool,
    /// When the current window was written: the start of its requests' latency.
    sent_at: Instant,
    /// Whether WRITABLE interest is registered; it is only while output is pending.
    want_write: bool,
}

impl Conn {
    fn connect(
        addr: SocketAddr,
        token: Token,
        registry: &Registry,
        window: usize,
        codec: &Codec,
    ) -> io::Result<Self> {
        // A blocking connect keeps setup simple; it is not part of the measurement.
        let std_stream = std::net::TcpStream::connect(addr)?;
        std_stream.set_nodelay(true)?;
        if let Some(request) = codec.handshake() {
            handshake(&std_stream, request)?;
        }
        std_stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(std_stream);
        registry.register(&mut stream, token, Interest::READABLE)?;
        Ok(Conn {
            stream,
            token,
            rng: Rng(0),
            prefill: 0..0,
            out: Vec::with_capacity(window * codec.max_request_len()),
            written: 0,
            input: vec![0; MIN_INPUT],
            in_start: 0,
            in_end: 0,
            window: Vec::with_capacity(window),
            answered: 0,
            window_measured: false,
            sent_at: Instant::now(),
            want_write: false,
        })
    }

    fn in_flight(&self) -> bool {
        self.answered < self.window.len()
    }

    /// Adds the next prefill sets, up to `size`, to the (empty) window.
    fn fill_prefill(&mut self, codec: &Codec, size: usize) {
        while self.window.len() < size && !self.prefill.is_empty() {
            let key = self.prefill.start;
            codec.encode(&mut self.out, Op::Set, key);
            self.window.push((Op::Set, key));
            self.prefill.start += 1;
        }
    }

    /// Fills the (empty) window with `count` random requests.
    fn fill_random(&mut self, codec: &Codec, workload: &Workload, count: usize) {
        for _ in 0..count {
            let (op, key) = workload.pick(&mut self.rng);
            codec.encode(&mut self.out, op, key);
            self.window.push((op, key));
        }
    }

    /// Starts writing a freshly filled window.
    fn send(&mut self, registry: &Registry) -> io::Result<()> {
        self.sent_at = Instant::now();
        self.written = 0;
        self.flush(registry)
    }

    /// Writes pending output until done or the socket is full; WRITABLE
    /// interest is held only for the latter case, to avoid useless wake-ups.
    fn flush(&mut self, registry: &Registry) -> io::Result<()> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return self.set_write_interest(registry, true)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.written = 0;
        self.set_write_interest(registry, false)
    }

    fn set_write_interest(&mut self, registry: &Registry, want: bool) -> io::Result<()> {
        if self.want_write == want {
            return Ok(());
        }
        let interest = if want { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        registry.reregister(&mut self.stream, self.token, interest)?;
        self.want_write = want;
        Ok(())
    }

    /// Reads once into the free tail of the input buffer; true if the read
    /// filled all the room it had.
    fn read_some(&mut self) -> io::Result<bool> {
        if self.in_end == self.input.len() {
            self.make_room()?;
        }
        let room = self.input.len() - self.in_end;
        let n = self.stream.read(&mut self.input[self.in_end..])?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"));
        }
        self.in_end += n;
        Ok(n == room)
    }

    /// Moves unparsed bytes to the front, and grows the buffer when a partial
    /// reply still fills most of it (a value larger than the buffer).
    fn make_room(&mut self) -> io::Result<()> {
        if self.in_start > 0 {
            self.input.copy_within(self.in_start..self.in_end, 0);
            self.in_end -= self.in_start;
            self.in_start = 0;
        }
        let len = self.input.len();
        if len - self.in_end < len / 4 {
            if len >= MAX_INPUT {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "reply larger than the input limit"));
            }
            self.input.resize(len * 2, 0);
        }
        Ok(())
    }

    /// Parses the next reply of the window from the input, if it has arrived,
    /// and with `verify` checks a hit's value against its key's.
    fn next_reply(&mut self, codec: &Codec, verify: bool) -> io::Result<Option<(Reply, u64, Verdict)>> {
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
            return Ok(None);
        }
        if !self.in_flight() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data received with no request outstanding",
            ));
        }
        let (op, key) = self.window[self.answered];
        let input = &self.input[self.in_start..self.in_end];
        let Some(Parsed { reply, used, body }) = codec.parse(input, op)? else {
            return Ok(None);
        };
        let verdict = if !verify || reply != Reply::Hit {
            Verdict::Unchecked
        } else if codec.verify(input, &body, key) {
            Verdict::Good
        } else {
            Verdict::Bad(String::from_utf8_lossy(&input[..used.min(120)]).into_owned())
        };
        self.in_start += used;
        self.answered += 1;
        Ok(Some((reply, key, verdict)))
    }
}

// ---------------------------------------------------------------------------
// Measurement

/// Counters and latencies of the measured run.
pub struct Stats {
    pub stored: u64,
    pub hits: u64,
    pub misses: u64,
    pub errors: u64,
    /// Request latencies in nanoseconds.
    pub latency: Histogram<u64>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            stored: 0,
            hits: 0,
            misses: 0,
            errors: 0,
            // 1 ns to 60 s at 3 significant digits: a few hundred KiB, allocated once.
            latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
        }
    }

    fn record(&mut self, reply: Reply, latency: Duration) {
        match reply {
            Reply::Stored => self.stored += 1,
            Reply::Hit => self.hits += 1,
            Reply::Miss => self.misses += 1,
            Reply::Error => self.errors += 1,
        }
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency.saturating_record(nanos.max(1));
    }

    /// Adds another thread's counts and latencies to these.
    fn merge(&mut self, other: &Stats) -> io::Result<()> {
        self.stored += other.stored;
        self.hits += other.hits;
        self.misses += other.misses;
        self.errors += other.errors;
        self.latency
            .add(&other.latency)
            .map_err(|e| io::Error::other(format!("merging latency histograms: {e:?}")))
    }

    /// Every measured reply, whatever it said.
    pub fn ops(&self) -> u64 {
        self.stored + self.hits + self.misses + self.errors
    }

    /// The latency at `quantile` (0.99 for p99), in microseconds.
    pub fn latency_us(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// The longest latency, in microseconds.
    pub fn max_us(&self) -> f64 {
        self.latency.max() as f64 / 1000.0
    }
}

/// What a run measured, over all threads.
pub struct Report {
    pub elapsed: Duration,
    pub stats: Stats,
    pub prefill_failures: u64,
    pub conn_failures: u64,
    /// Get hits whose value was checked (`--verify`), in every phase.
    pub verified: u64,
    /// Of those, the ones whose bytes were not the key's value.
    pub verify_failures: u64,
}

impl Report {
    /// Measured replies per second of the measured span; 0 if nothing was measured.
    pub fn ops_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.ops() as f64 / secs
        } else {
            0.0
        }
    }
}

/// What the connections are doing: only `Measure` is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Prefill,
    Warmup,
    Measure,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
        }
    }
}

/// The few things the threads of one run share.
struct Shared {
    threads: usize,
    /// Replies in all phases, summed over threads, for the progress line.
    replies: AtomicU64,
    /// With `--requests`: measured requests not yet sent.
    budget: Option<AtomicU64>,
    /// Threads done with connecting and prefilling.
    ready: AtomicUsize,
    /// Threads finished, well or not.
    done: AtomicUsize,
    /// A thread failed: the others stop too.
    failed: AtomicBool,
    /// When the warmup (or the measurement) starts, the same for every thread.
    start: OnceLock<Instant>,
}

/// The error a thread stops with because another one failed; the coordinator
/// reports the other one's error instead.
#[derive(Debug)]
struct PeerFailed;

impl std::fmt::Display for PeerFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another driver thread failed")
    }
}

impl std::error::Error for PeerFailed {}

fn is_peer_failed(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<PeerFailed>())
}

fn interrupted_error() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "interrupted")
}

// ---------------------------------------------------------------------------
// One thread's event loop

/// What one thread measured; merged into a `Report`.
struct ThreadReport {
    measured: Option<Range<Instant>>,
    stats: Stats,
    prefill_failures: u64,
    conn_failures: u64,
    verified: u64,
    verify_failures: u64,
}

/// One driver thread: a mio loop over connections `first_conn..` of the run.
struct Worker<'a> {
    cfg: &'a BenchConfig,
    codec: &'a Codec,
    shared: &'a Shared,
    poll: Poll,
    /// Indexed by token; `None` once a connection has failed.
    conns: Vec<Option<Conn>>,
    first_conn: usize,
    workload: Workload,
    /// Requests per window while prefilling.
    prefill_window: usize,
    phase: Phase,
    /// Connections with requests in flight; the prefill ends when none are left.
    busy: usize,
    /// Replies in all phases, and how many of them `shared.replies` has.
    replies: u64,
    published: u64,
    last_reply: Instant,
    prefill_failures: u64,
    conn_failures: u64,
    verified: u64,
    verify_failures: u64,
    stats: Stats,
}

impl<'a> Worker<'a> {
    fn connect(
        cfg: &'a BenchConfig,
        codec: &'a Codec,
        shared: &'a Shared,
        conns: Range<usize>,
        seeds: &[u64],
    ) -> io::Result<Self> {
        let poll = Poll::new()?;
        let prefill_window = prefill_window(cfg.pipeline, codec.request_len(Op::Set));
        let window = if cfg.prefill { prefill_window } else { cfg.pipeline };
        let first_conn = conns.start;
        let mut list = Vec::with_capacity(conns.len());
        for i in conns {
            let token = Token(i - first_conn);
            let mut conn = Conn::connect(cfg.addr, token, poll.registry(), window, codec)
                .map_err(|e| io::Error::new(e.kind(), format!("connecting to {}: {e}", cfg.addr)))?;
            // Each connection draws its own stream, so that the requests do
            // not depend on the order in which replies happen to arrive, nor
            // on the number of threads.
            conn.rng = Rng(seeds[i]);
            list.push(Some(conn));
        }
        Ok(Worker {
            cfg,
            codec,
            shared,
            poll,
            conns: list,
            first_conn,
            workload: Workload::new(cfg),
            prefill_window,
            phase: Phase::Prefill,
            busy: 0,
            replies: 0,
            published: 0,
            last_reply: Instant::now(),
            prefill_failures: 0,
            conn_failures: 0,
            verified: 0,
            verify_failures: 0,
            stats: Stats::new(),
        })
    }

    /// Prefills, waits for every other thread to be ready, then runs.
    fn run_all(mut self) -> io::Result<ThreadReport> {
        if self.cfg.prefill {
            self.prefill()?;
        }
        self.publish();
        self.shared.ready.fetch_add(1, Ordering::SeqCst);
        while self.shared.ready.load(Ordering::SeqCst) < self.shared.threads {
            self.check_flags()?;
            thread::sleep(Duration::from_millis(1));
        }
        let start = *self.shared.start.get_or_init(Instant::now);
        self.run(start)
    }

    /// Stores every key once, spread evenly over all the run's connections.
    fn prefill(&mut self) -> io::Result<()> {
        let keys = self.cfg.keys;
        let n = self.cfg.connections as u64;
        for (local, conn) in self.conns.iter_mut().enumerate() {
            let i = (self.first_conn + local) as u64;
            if let Some(conn) = conn {
                conn.prefill = keys * i / n..keys * (i + 1) / n;
            }
        }
        self.start_phase(Phase::Prefill)?;
        let mut events = Events::with_capacity(1024);
        while self.busy > 0 {
            self.check_health(Instant::now())?;
            self.turn(&mut events, MAX_POLL_WAIT)?;
            self.publish();
        }
        Ok(())
    }

    /// The timed run from `start`: the warmup unmeasured, then until the
    /// duration has passed or the request budget is answered.
    fn run(mut self, start: Instant) -> io::Result<ThreadReport> {
        let measure_start = start + self.cfg.warmup;
        let end = match self.cfg.stop {
            Stop::Duration(duration) => Some(measure_start + duration),
            Stop::Requests(_) => None,
        };
        self.start_phase(if self.cfg.warmup.is_zero() { Phase::Measure } else { Phase::Warmup })?;
        let mut measured_from = start;
        let mut events = Events::with_capacity(1024);
        let measured_until = loop {
            let now = Instant::now();
            if self.phase == Phase::Warmup && now >= measure_start {
                self.phase = Phase::Measure;
                measured_from = now;
            }
            match end {
                Some(end) if now >= end => break now,
                None if self.phase == Phase::Measure && self.busy == 0 && self.budget_spent() => {
                    break self.last_reply.max(measured_from)
                }
                _ => {}
            }
            self.check_health(now)?;
            let deadline = if self.phase == Phase::Warmup { Some(measure_start) } else { end };
            let wait =
                deadline.map_or(MAX_POLL_WAIT, |d| d.saturating_duration_since(now).min(MAX_POLL_WAIT));
            self.turn(&mut events, wait)?;
            self.publish();
        };
        self.publish();
        let measured = (self.phase == Phase::Measure).then_some(measured_from..measured_until);
        Ok(ThreadReport {
            measured,
            stats: self.stats,
            prefill_failures: self.prefill_failures,
            conn_failures: self.conn_failures,
            verified: self.verified,
            verify_failures: self.verify_failures,
        })
    }

    fn budget_spent(&self) -> bool {
        self.shared.budget.as_ref().is_none_or(|budget| budget.load(Ordering::Relaxed) == 0)
    }

    /// Adds this thread's new replies to the shared count, once per turn.
    fn publish(&mut self) {
        if self.replies != self.published {
            self.shared.replies.fetch_add(self.replies - self.published, Ordering::Relaxed);
            self.published = self.replies;
        }
    }

    /// Sends a first window on every idle connection.
    fn start_phase(&mut self, phase: Phase) -> io::Result<()> {
        self.phase = phase;
        self.last_reply = Instant::now();
        for idx in 0..self.conns.len() {
            let Some(mut conn) = self.conns[idx].take() else {
                continue;
            };
            if conn.in_flight() {
                self.conns[idx] = Some(conn);
                continue;
            }
            match self.next_window(&mut conn) {
                Ok(()) => self.conns[idx] = Some(conn),
                Err(e) => self.fail(idx, conn, &e),
            }
        }
        self.check_health(Instant::now())
    }

    /// Stops on a ctrl-c (`compare`) or when another thread has failed.
    fn check_flags(&self) -> io::Result<()> {
        if INTERRUPTED.load(Ordering::Relaxed) {
            return Err(interrupted_error());
        }
        if self.shared.failed.load(Ordering::Relaxed) {
            return Err(io::Error::other(PeerFailed));
        }
        Ok(())
    }

    fn check_health(&self, now: Instant) -> io::Result<()> {
        self.check_flags()?;
        if self.conns.iter().all(Option::is_none) {
            return Err(io::Error::other("every connection failed"));
        }
        if self.busy > 0 && now - self.last_reply > STALL_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no reply for {} s", STALL_TIMEOUT.as_secs()),
            ));
        }
        Ok(())
    }

    /// Waits up to `timeout` for readiness and serves every ready connection.
    fn turn(&mut self, events: &mut Events, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            other => other?,
        }
        for event in events.iter() {
            // Errors and hang-ups surface through the read that follows.
            let closed = event.is_read_closed() || event.is_error();
            let readable = event.is_readable() || closed;
            self.serve(event.token().0, readable, closed, event.is_writable());
        }
        Ok(())
    }

    /// Serves one connection; a connection that fails is reported and dropped.
    fn serve(&mut self, idx: usize, readable: bool, closed: bool, writable: bool) {
        // Taken out so that the handlers can borrow the rest of the worker.
        let Some(mut conn) = self.conns.get_mut(idx).and_then(Option::take) else {
            return;
        };
        let result = self.serve_conn(&mut conn, readable, closed, writable);
        match result {
            Ok(()) => self.conns[idx] = Some(conn),
            Err(e) => self.fail(idx, conn, &e),
        }
    }

    fn serve_conn(
        &mut self,
        conn: &mut Conn,
        readable: bool,
        closed: bool,
        writable: bool,
    ) -> io::Result<()> {
        if writable && conn.want_write {
            conn.flush(self.poll.registry())?;
        }
        if readable {
            self.read_replies(conn, closed)?;
        }
        Ok(())
    }

    /// Reads until the socket is drained, as edge-triggered readiness requires,
    /// handling the replies of each read as it comes. A read that leaves room
    /// in the buffer has drained the socket, and later data raises a new edge,
    /// so the loop stops there rather than paying a system call to hear
    /// `WouldBlock` (as the server does) — unless the peer has closed.
    fn read_replies(&mut self, conn: &mut Conn, closed: bool) -> io::Result<()> {
        loop {
            match conn.read_some() {
                Ok(filled) => {
                    self.handle_replies(conn, Instant::now())?;
                    if !filled && !closed {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Accounts every complete reply in the input; `now` is their arrival time.
    fn handle_replies(&mut self, conn: &mut Conn, now: Instant) -> io::Result<()> {
        self.last_reply = now;
        // With --requests only the replies to measured windows count, so that exactly N do.
        let count_all = self.shared.budget.is_none();
        while let Some((reply, key, verdict)) = conn.next_reply(self.codec, self.cfg.verify)? {
            self.replies += 1;
            match verdict {
                Verdict::Unchecked => {}
                Verdict::Good => self.verified += 1,
                Verdict::Bad(got) => {
                    self.verified += 1;
                    self.verify_failures += 1;
                    if self.verify_failures <= VERIFY_FAILURES_SHOWN {
                        eprintln!("bankcache-bench: verify: get of key {key} returned other bytes: {got:?}");
                    }
                }
            }
            match self.phase {
                Phase::Prefill if reply != Reply::Stored => self.prefill_failures += 1,
                Phase::Measure if count_all || conn.window_measured => {
                    self.stats.record(reply, now - conn.sent_at)
                }
                _ => {}
            }
            if !conn.in_flight() {
                self.next_window(conn)?;
            }
        }
        Ok(())
    }

    /// Replaces a finished (or never started) window by the next one, if the
    /// phase has one for this connection, and writes it.
    fn next_window(&mut self, conn: &mut Conn) -> io::Result<()> {
        if !conn.window.is_empty() {
            self.busy -= 1;
        }
        conn.window.clear();
        conn.answered = 0;
        match self.phase {
            Phase::Prefill => conn.fill_prefill(self.codec, self.prefill_window),
            Phase::Warmup => {
                conn.window_measured = false;
                conn.fill_random(self.codec, &self.workload, self.workload.pipeline);
            }
            Phase::Measure => {
                let count = match &self.shared.budget {
                    None => self.workload.pipeline,
                    // At most `pipeline`, so the claim fits in usize.
                    Some(budget) => claim(budget, self.workload.pipeline as u64) as usize,
                };
                conn.window_measured = true;
                conn.fill_random(self.codec, &self.workload, count);
            }
        }
        if conn.window.is_empty() {
            return Ok(());
        }
        self.busy += 1;
        conn.send(self.poll.registry())
    }

    fn fail(&mut self, idx: usize, mut conn: Conn, error: &io::Error) {
        eprintln!("bankcache-bench: connection {}: {error}; dropping it", self.first_conn + idx);
        if conn.in_flight() {
            self.busy -= 1;
        }
        self.conn_failures += 1;
        // Deregistering can only fail if the fd is already gone; it closes on drop anyway.
        let _ = self.poll.registry().deregister(&mut conn.stream);
    }
}

// ---------------------------------------------------------------------------
// The coordinator

/// Checks a configuration, with the run mode's flag names in the messages.
pub fn validate(cfg: &BenchConfig) -> Result<(), String> {
    if cfg.connections == 0 || cfg.pipeline == 0 || cfg.keys == 0 || cfg.threads == 0 {
        return Err("--connections, --pipeline, --keys and --threads must be positive".into());
    }
    if !(0.0..=1.0).contains(&cfg.get_ratio) {
        return Err("--get-ratio must be between 0 and 1".into());
    }
    if cfg.stop == Stop::Duration(Duration::ZERO) {
        return Err("--duration must be a positive number of seconds".into());
    }
    let prefix = cfg.http_prefix.as_bytes();
    if prefix.first() != Some(&b'/') || !prefix.iter().all(u8::is_ascii_graphic) {
        return Err("--http-prefix must start with '/' and hold no spaces or control characters".into());
    }
    Ok(())
}

/// Runs one benchmark: `cfg.threads` driver threads (at most one per
/// connection), each over its share of the connections, and merges what they
/// measured. The calling thread prints the summed progress line.
pub fn run_bench(cfg: &BenchConfig) -> io::Result<Report> {
    validate(cfg).map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))?;
    let mut master = Rng(cfg.seed);
    let value = make_value(cfg.value_size, &mut master);
    let codec = Codec::new(cfg.proto, cfg.keys, &value, &cfg.http_prefix, cfg.auth_token.as_deref());
    let seeds: Vec<u64> = (0..cfg.connections).map(|_| master.next_u64()).collect();
    let threads = cfg.threads.min(cfg.connections);
    let shared = Shared {
        threads,
        replies: AtomicU64::new(0),
        budget: match cfg.stop {
            Stop::Requests(n) => Some(AtomicU64::new(n)),
            Stop::Duration(_) => None,
        },
        ready: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        failed: AtomicBool::new(false),
        start: OnceLock::new(),
    };
    let results: Vec<io::Result<ThreadReport>> = thread::scope(|scope| {
        let mut handles = Vec::with_capacity(threads);
        let mut results = Vec::new();
        for t in 0..threads {
            let conns = cfg.connections * t / threads..cfg.connections * (t + 1) / threads;
            let (codec, shared, seeds) = (&codec, &shared, &seeds);
            let spawned = thread::Builder::new().name(format!("bench-{t}")).spawn_scoped(scope, move || {
                let result = Worker::connect(cfg, codec, shared, conns, seeds).and_then(Worker::run_all);
                if result.is_err() {
                    shared.failed.store(true, Ordering::SeqCst);
                }
                shared.done.fetch_add(1, Ordering::SeqCst);
                result
            });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    shared.failed.store(true, Ordering::SeqCst);
                    shared.done.fetch_add(threads - t, Ordering::SeqCst);
                    results.push(Err(io::Error::new(e.kind(), format!("starting a driver thread: {e}"))));
                    break;
                }
            }
        }
        show_progress(cfg, &shared);
        for handle in handles {
            results.push(handle.join().unwrap_or_else(|_| Err(io::Error::other("a driver thread panicked"))));
        }
        results
    });
    merge(results)
}

/// Prints one progress line per second, summed over threads, until every
/// thread is done; a new phase starts a fresh interval, so that no line mixes
/// the rates of two phases.
fn show_progress(cfg: &BenchConfig, shared: &Shared) {
    const EVERY: Duration = Duration::from_secs(1);
    let started = Instant::now();
    let phase_at = |now: Instant| {
        if shared.ready.load(Ordering::Relaxed) < shared.threads {
            return Phase::Prefill;
        }
        match shared.start.get() {
            Some(&start) if now >= start + cfg.warmup => Phase::Measure,
            Some(_) => Phase::Warmup,
            None => Phase::Prefill,
        }
    };
    let mut phase = Phase::Prefill;
    let (mut interval_start, mut interval_replies) = (started, 0);
    while shared.done.load(Ordering::SeqCst) < shared.threads {
        thread::sleep(Duration::from_millis(20));
        if !cfg.progress {
            continue;
        }
        let now = Instant::now();
        let replies = shared.replies.load(Ordering::Relaxed);
        let current = phase_at(now);
        if current != phase {
            phase = current;
            (interval_start, interval_replies) = (now, replies);
        } else if now - interval_start >= EVERY {
            let rate = (replies - interval_replies) as f64 / (now - interval_start).as_secs_f64();
            eprintln!(
                "bankcache-bench: {:>7} {:6.1}s {:>10.0} ops/s",
                phase.name(),
                (now - started).as_secs_f64(),
                rate
            );
            (interval_start, interval_replies) = (now, replies);
        }
    }
}

/// Sums the threads' reports; the run failed if any thread did, with that
/// thread's own error rather than a sibling's "another thread failed".
fn merge(results: Vec<io::Result<ThreadReport>>) -> io::Result<Report> {
    let mut reports = Vec::with_capacity(results.len());
    let mut error: Option<io::Error> = None;
    for result in results {
        match result {
            Ok(report) => reports.push(report),
            Err(e) => {
                if error.as_ref().is_none_or(|kept| is_peer_failed(kept) && !is_peer_failed(&e)) {
                    error = Some(e);
                }
            }
        }
    }
    if let Some(e) = error {
        return Err(e);
    }
    let mut total = Report {
        elapsed: Duration::ZERO,
        stats: Stats::new(),
        prefill_failures: 0,
        conn_failures: 0,
        verified: 0,
        verify_failures: 0,
    };
    let mut measured: Option<Range<Instant>> = None;
    for report in reports {
        total.stats.merge(&report.stats)?;
        total.prefill_failures += report.prefill_failures;
        total.conn_failures += report.conn_failures;
        total.verified += report.verified;
        total.verify_failures += report.verify_failures;
        if let Some(span) = report.measured {
            measured = Some(match measured {
                None => span,
                Some(all) => all.start.min(span.start)..all.end.max(span.end),
            });
        }
    }
    total.elapsed = measured.map_or(Duration::ZERO, |span| span.end - span.start);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefill_windows_are_cut_by_size() {
        assert_eq!(prefill_window(1, 60), PREFILL_WINDOW);
        assert_eq!(prefill_window(1, 204_900), PREFILL_BYTES / 204_900);
        assert_eq!(prefill_window(1, 64 << 20), 1);
        assert_eq!(prefill_window(100, 60), 100);
    }

    #[test]
    fn rng_is_deterministic_and_in_range() {
        let (mut a, mut b) = (Rng(42), Rng(42));
        for _ in 0..1000 {
            let x = a.below(7);
            assert_eq!(x, b.below(7));
            assert!(x < 7);
        }
    }

    #[test]
    fn the_request_budget_is_handed_out_exactly() {
        let budget = AtomicU64::new(10);
        assert_eq!(claim(&budget, 4), 4);
        assert_eq!(claim(&budget, 4), 4);
        assert_eq!(claim(&budget, 4), 2);
        assert_eq!(claim(&budget, 4), 0);
    }

    #[test]
    fn merged_reports_add_up() {
        let t0 = Instant::now();
        let thread = |from: u64, to: u64, hits: u64, latency: u64| {
            let mut stats = Stats::new();
            for _ in 0..hits {
                stats.record(Reply::Hit, Duration::from_micros(latency));
            }
            Ok(ThreadReport {
                measured: Some(t0 + Duration::from_millis(from)..t0 + Duration::from_millis(to)),
                stats,
                prefill_failures: 1,
                conn_failures: 0,
                verified: hits,
                verify_failures: 1,
            })
        };
        let report = merge(vec![thread(0, 900, 10, 100), thread(100, 1000, 30, 300)]).expect("merged");
        assert_eq!(report.elapsed, Duration::from_secs(1));
        assert_eq!(report.stats.hits, 40);
        assert_eq!((report.verified, report.verify_failures, report.prefill_failures), (40, 2, 2));
        assert!((report.ops_per_sec() - 40.0).abs() < 1e-9);
        assert!((report.stats.latency_us(0.5) - 300.0).abs() < 1.0);
        // A thread's own error wins over a sibling's "another thread failed".
        let own = io::Error::other("connection refused");
        let err = merge(vec![Err(io::Error::other(PeerFailed)), Err(own), thread(0, 1, 1, 1)])
            .err()
            .expect("failed");
        assert_eq!(err.to_string(), "connection refused");
    }
}
