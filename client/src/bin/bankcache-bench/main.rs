//! `bankcache-bench`: a closed-loop load driver for bankcache, redis, memcached
//! and HTTP/1.1 file servers (GET and PUT of `<prefix>key:NNNNNNNN`).
//!
//! One thread runs a mio event loop over N TCP connections to one server. Each
//! connection keeps exactly `--pipeline` requests in flight: the next window is
//! written, in one write, only once every reply of the previous window is in.
//! Being closed-loop, the offered load follows the server, so the figures are
//! the server's throughput and latency at that concurrency, not those of a
//! queue growing without bound.
//!
//! The driver usually shares the machine with the server under test, so its hot
//! path is kept cheap: requests are assembled from templates built once, into
//! buffers that are reused; replies are parsed in place; nothing is allocated
//! per request; and each reply costs about one read and one write.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

/// Requests per window while prefilling, unless `--pipeline` is larger or the
/// requests are too large for `PREFILL_BYTES`: prefill is not measured, so it
/// may as well go fast.
const PREFILL_WINDOW: usize = 64;
/// Give up when connections wait this long without any reply, so that a hung
/// server cannot hang the driver.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A reply larger than this is taken for a broken stream rather than buffered.
const MAX_INPUT: usize = 64 << 20;
/// Initial size of each connection's input buffer; it grows on demand.
const MIN_INPUT: usize = 16 << 10;
/// Keys are `key:` followed by at least this many zero-padded digits.
const MIN_KEY_DIGITS: usize = 8;
/// The bank every JSON request addresses.
const JSON_BANK: &str = "bench";
/// The `Host` header of every HTTP request.
const HTTP_HOST: &str = "bench";
/// Most header fields an HTTP reply may have; more is taken for a broken stream.
const HTTP_MAX_HEADERS: usize = 32;
/// Prefill windows are cut to about this many bytes of requests, unless
/// `--pipeline` asks for more, so that prefilling large values does not hold
/// `PREFILL_WINDOW` of them per connection in memory.
const PREFILL_BYTES: usize = 4 << 20;

#[derive(Parser, Debug)]
#[command(
    name = "bankcache-bench",
    about = "Closed-loop load driver for bankcache (json), redis (resp), memcached and HTTP/1.1 file servers"
)]
struct Args {
    /// Server address, HOST:PORT.
    #[arg(long)]
    addr: String,
    /// Wire protocol the server speaks.
    #[arg(long, value_enum, default_value_t = Proto::Json)]
    proto: Proto,
    /// Number of TCP connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests kept outstanding per connection (the window size).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Size of stored values, in bytes.
    #[arg(long, default_value_t = 32)]
    value_size: usize,
    /// Size of the key space; keys are drawn uniformly from it.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Fraction of requests that are gets; the rest are sets.
    #[arg(long, default_value_t = 0.9)]
    get_ratio: f64,
    /// Length of the measured run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured load before the measured run, in seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Store every key once before the run, so that gets hit.
    #[arg(long)]
    prefill: bool,
    /// Seed of the request generator; equal seeds give equal request streams.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the result as one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// With --proto http: the URL path in front of each key, so that the
    /// default asks for `/key:00000123`.
    #[arg(long, default_value = "/")]
    http_prefix: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Proto {
    /// bankcache: one JSON object per line each way.
    Json,
    /// redis: RESP arrays out, RESP replies back.
    Resp,
    /// memcached text protocol.
    Memcache,
    /// HTTP/1.1 with keep-alive: `GET <prefix><key>` reads a value, `PUT` stores
    /// one; 2xx is a hit or a store, 404 a miss, anything else an error.
    Http,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Json => "json",
            Proto::Resp => "resp",
            Proto::Memcache => "memcache",
            Proto::Http => "http",
        }
    }
}

// ---------------------------------------------------------------------------
// Request generation

/// SplitMix64: tiny, fast and good enough to pick keys; hand-written so that a
/// seed gives the same request stream on every platform and crate version.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`, by multiply-shift (no division, negligible bias).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    Set,
}

/// What the timed run asks for; shared by all connections.
struct Workload {
    keys: u64,
    pipeline: usize,
    /// A request is a get when 53 random bits fall below this.
    get_threshold: u64,
}

impl Workload {
    fn new(args: &Args) -> Self {
        Workload {
            keys: args.keys,
            pipeline: args.pipeline,
            get_threshold: (args.get_ratio * (1u64 << 53) as f64) as u64,
        }
    }

    fn pick(&self, rng: &mut Rng) -> (Op, u64) {
        let op = if rng.next_u64() >> 11 < self.get_threshold { Op::Get } else { Op::Set };
        (op, rng.below(self.keys))
    }
}

/// A deterministic printable value, so that no protocol needs escaping.
fn make_value(size: usize, rng: &mut Rng) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..size).map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize]).collect()
}

// ---------------------------------------------------------------------------
// Protocols

/// How the server answered one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    /// A set was acknowledged.
    Stored,
    /// A get found its key.
    Hit,
    /// A get found no such key.
    Miss,
    /// The server reported an error.
    Error,
}

/// The bytes around the key of one kind of request. Key and value have fixed
/// sizes, so everything but the key digits is known up front.
struct Template {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

/// Encodes requests and parses replies of one protocol.
struct Codec {
    proto: Proto,
    key_digits: usize,
    /// The size of every stored value, which is what a get must return.
    value_len: usize,
    get: Template,
    set: Template,
}

impl Codec {
    /// `http_prefix` is the URL path before each key; only `Proto::Http` uses it.
    fn new(proto: Proto, keys: u64, value: &[u8], http_prefix: &str) -> Self {
        let key_digits = (keys.saturating_sub(1).to_string().len()).max(MIN_KEY_DIGITS);
        let key_len = "key:".len() + key_digits;
        let value_text = String::from_utf8_lossy(value);
        let vlen = value.len();
        let (get, set) = match proto {
            Proto::Json => (
                (format!(r#"{{"op":"get","bank":"{JSON_BANK}","key":""#), "\"}\n".to_string()),
                (
                    format!(r#"{{"op":"put","bank":"{JSON_BANK}","key":""#),
                    format!("\",\"value\":\"{value_text}\"}}\n"),
                ),
            ),
            Proto::Resp => (
                (format!("*2\r\n$3\r\nGET\r\n${key_len}\r\n"), "\r\n".to_string()),
                (format!("*3\r\n$3\r\nSET\r\n${key_len}\r\n"), format!("\r\n${vlen}\r\n{value_text}\r\n")),
            ),
            Proto::Memcache => (
                ("get ".to_string(), "\r\n".to_string()),
                ("set ".to_string(), format!(" 0 0 {vlen}\r\n{value_text}\r\n")),
            ),
            Proto::Http => (
                (format!("GET {http_prefix}"), format!(" HTTP/1.1\r\nHost: {HTTP_HOST}\r\n\r\n")),
                (
                    format!("PUT {http_prefix}"),
                    format!(" HTTP/1.1\r\nHost: {HTTP_HOST}\r\nContent-Length: {vlen}\r\n\r\n{value_text}"),
                ),
            ),
        };
        let template = |(prefix, suffix): (String, String)| Template {
            prefix: prefix.into_bytes(),
            suffix: suffix.into_bytes(),
        };
        Codec { proto, key_digits, value_len: vlen, get: template(get), set: template(set) }
    }

    fn template(&self, op: Op) -> &Template {
        match op {
            Op::Get => &self.get,
            Op::Set => &self.set,
        }
    }

    /// Length of every encoded request of kind `op`.
    fn request_len(&self, op: Op) -> usize {
        let template = self.template(op);
        template.prefix.len() + "key:".len() + self.key_digits + template.suffix.len()
    }

    /// Longest encoded request, to size output buffers once.
    fn max_request_len(&self) -> usize {
        self.request_len(Op::Get).max(self.request_len(Op::Set))
    }

    /// Appends one request to `out`, writing the key digits in place rather
    /// than through `format!`, which would allocate.
    fn encode(&self, out: &mut Vec<u8>, op: Op, key: u64) {
        let template = self.template(op);
        out.extend_from_slice(&template.prefix);
        out.extend_from_slice(b"key:");
        let start = out.len();
        out.resize(start + self.key_digits, b'0');
        let mut rest = key;
        for digit in out[start..].iter_mut().rev() {
            *digit = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&template.suffix);
    }

    /// Parses the reply to `op` at the start of `buf`: `Ok(None)` when it has
    /// not fully arrived yet, else the reply and the bytes it took.
    fn parse(&self, buf: &[u8], op: Op) -> io::Result<Option<(Reply, usize)>> {
        match self.proto {
            Proto::Json => Ok(parse_json(buf, op)),
            Proto::Resp => parse_resp(buf),
            Proto::Memcache => parse_memcache(buf),
            Proto::Http => parse_http(buf, op, self.value_len),
        }
    }
}

fn protocol_error(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// bankcache answers every request with exactly one line, so a reply is
/// complete at its `\n`. A failed get whose message says the key doesn't
/// exist (`Key key:00000123 doesn't exist`) is a miss; every other non-ok
/// reply, a missing bank included, is an error.
fn parse_json(buf: &[u8], op: Op) -> Option<(Reply, usize)> {
    let newline = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..newline];
    let ok = line.starts_with(br#"{"status": "ok""#) || line.starts_with(br#"{"status":"ok""#);
    let reply = match (ok, op) {
        (true, Op::Get) => Reply::Hit,
        (true, Op::Set) => Reply::Stored,
        (false, Op::Get) if is_missing_key(line) => Reply::Miss,
        (false, _) => Reply::Error,
    };
    Some((reply, newline + 1))
}

fn is_missing_key(line: &[u8]) -> bool {
    contains(line, br#""message": "Key "#) && contains(line, b"doesn't exist")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Splits off one `\r\n`-terminated line: the line without its terminator and
/// the bytes it took, or `None` while it is incomplete.
fn take_line(buf: &[u8]) -> io::Result<Option<(&[u8], usize)>> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        return Ok(None);
    };
    match buf[..newline].strip_suffix(b"\r") {
        Some(line) => Ok(Some((line, newline + 1))),
        None => Err(protocol_error("line not terminated by CRLF")),
    }
}

/// Parses a decimal, possibly negative, integer as written by RESP and memcached.
fn parse_int(text: &[u8]) -> io::Result<i64> {
    let bad = || protocol_error("bad length field");
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return Err(bad());
    }
    let mut value: i64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return Err(bad());
        }
        value = value * 10 + i64::from(b - b'0');
    }
    Ok(if negative { -value } else { value })
}

/// Checks that a body of `len` bytes followed by `trailer` has fully arrived
/// at `buf[start..]`; returns the end of the trailer.
fn body_end(buf: &[u8], start: usize, len: usize, trailer: &[u8]) -> io::Result<Option<usize>> {
    let end = start + len + trailer.len();
    if buf.len() < end {
        return Ok(None);
    }
    if &buf[start + len..end] != trailer {
        return Err(protocol_error("value not followed by its trailer"));
    }
    Ok(Some(end))
}

/// RESP replies to GET and SET: `+OK`, `$-1` (miss), `$N` + N bytes (hit),
/// `-ERR ...` (error); `:N` is accepted as a success too.
fn parse_resp(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some((line, used)) = take_line(buf)? else {
        return Ok(None);
    };
    let Some((&kind, rest)) = line.split_first() else {
        return Err(protocol_error("empty RESP line"));
    };
    match kind {
        b'+' | b':' => Ok(Some((Reply::Stored, used))),
        b'-' => Ok(Some((Reply::Error, used))),
        b'$' => {
            let Ok(len) = usize::try_from(parse_int(rest)?) else {
                return Ok(Some((Reply::Miss, used)));
            };
            Ok(body_end(buf, used, len, b"\r\n")?.map(|end| (Reply::Hit, end)))
        }
        _ => Err(protocol_error("unexpected RESP reply type")),
    }
}

/// memcached replies: `VALUE key flags bytes [cas]` + data + `END` (hit),
/// `END` (miss), `STORED`, or one of its error lines.
fn parse_memcache(buf: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some((line, used)) = take_line(buf)? else {
        return Ok(None);
    };
    match line {
        b"END" => Ok(Some((Reply::Miss, used))),
        b"STORED" => Ok(Some((Reply::Stored, used))),
        _ if line.starts_with(b"VALUE ") => {
            let bytes = line
                .split(|&b| b == b' ')
                .nth(3)
                .ok_or_else(|| protocol_error("VALUE line without a length"))?;
            let len =
                usize::try_from(parse_int(bytes)?).map_err(|_| protocol_error("negative VALUE length"))?;
            Ok(body_end(buf, used, len, b"\r\nEND\r\n")?.map(|end| (Reply::Hit, end)))
        }
        _ if is_memcache_error(line) => Ok(Some((Reply::Error, used))),
        _ => Err(protocol_error("unexpected memcached reply")),
    }
}

fn is_memcache_error(line: &[u8]) -> bool {
    const ERRORS: [&[u8]; 6] =
        [b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR", b"NOT_STORED", b"EXISTS", b"NOT_FOUND"];
    ERRORS.iter().any(|e| line.starts_with(e))
}

/// How the body of an HTTP reply is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// No body, whatever the headers say (1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the driver needs from an HTTP reply's status line and headers.
#[derive(Debug)]
struct HttpHead {
    code: u16,
    framing: Framing,
    /// The server closes the connection after this reply.
    close: bool,
}

/// One HTTP/1.x reply: its status line and headers, parsed by `httparse`, then
/// its body, framed by `Content-Length` or chunked encoding. Interim 1xx
/// replies are skipped. A get answered 2xx is a hit if its body has the
/// stored values' length, else an error; 404 is a miss; a set answered 2xx is
/// stored; every other status is an error. A reply that ends the connection
/// (`Connection: close`, or HTTP/1.0 without keep-alive) fails it, because
/// the requests behind it in the window would never be answered, and so does a
/// body delimited only by the connection's end.
fn parse_http(buf: &[u8], op: Op, value_len: usize) -> io::Result<Option<(Reply, usize)>> {
    let mut start = 0;
    loop {
        let Some((head, head_len)) = parse_http_head(&buf[start..])? else {
            return Ok(None);
        };
        let body_start = start + head_len;
        if head.code == 101 {
            return Err(protocol_error("HTTP server switched protocols"));
        }
        if head.code < 200 {
            start = body_start;
            continue;
        }
        let body = match head.framing {
            Framing::Empty => Some((0, body_start)),
            Framing::Length(len) => {
                let end = body_start + len;
                (buf.len() >= end).then_some((len, end))
            }
            Framing::Chunked => chunked_body(buf, body_start)?,
        };
        let Some((body_len, end)) = body else {
            return Ok(None);
        };
        if head.close {
            return Err(protocol_error(
                "HTTP server closes the connection after this reply (Connection: close); \
                 the driver needs keep-alive (nginx: raise keepalive_requests)",
            ));
        }
        let success = (200..300).contains(&head.code);
        let reply = match op {
            Op::Get if success && body_len == value_len => Reply::Hit,
            Op::Get if head.code == 404 => Reply::Miss,
            Op::Set if success => Reply::Stored,
            _ => Reply::Error,
        };
        return Ok(Some((reply, end)));
    }
}

/// Parses the status line and headers at the start of `buf`: `Ok(None)` until
/// they have fully arrived, else what they say and the bytes they took.
fn parse_http_head(buf: &[u8]) -> io::Result<Option<(HttpHead, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; HTTP_MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(protocol_error("too many HTTP reply headers")),
        Err(_) => return Err(protocol_error("malformed HTTP reply head")),
    };
    let code = response.code.ok_or_else(|| protocol_error("HTTP reply without a status"))?;
    let mut length = None;
    let mut transfer_encoding = false;
    let mut chunked = false;
    let mut close_token = false;
    let mut keep_alive_token = false;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let len = parse_content_length(header.value)?;
            if length.is_some_and(|known| known != len) {
                return Err(protocol_error("conflicting HTTP Content-Length headers"));
            }
            length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding applied decides how the message ends.
            for coding in header_tokens(header.value) {
                transfer_encoding = true;
                chunked = coding.eq_ignore_ascii_case(b"chunked");
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in header_tokens(header.value) {
                close_token |= option.eq_ignore_ascii_case(b"close");
                keep_alive_token |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let framing = if code < 200 || code == 204 || code == 304 {
        Framing::Empty
    } else if transfer_encoding {
        // Transfer-Encoding overrides Content-Length (RFC 9112, 6.3).
        if !chunked {
            return Err(protocol_error("HTTP reply body delimited by the connection's end"));
        }
        Framing::Chunked
    } else if let Some(len) = length {
        Framing::Length(len)
    } else {
        return Err(protocol_error("HTTP reply with neither Content-Length nor chunked encoding"));
    };
    let close = close_token || (response.version == Some(0) && !keep_alive_token);
    Ok(Some((HttpHead { code, framing, close }, head_len)))
}

/// The comma-separated, trimmed, non-empty elements of a header value.
fn header_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|token| !token.is_empty())
}

fn parse_content_length(value: &[u8]) -> io::Result<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(protocol_error("bad HTTP Content-Length"));
    }
    let mut len: usize = 0;
    for &digit in digits {
        len = len * 10 + usize::from(digit - b'0');
        if len > MAX_INPUT {
            return Err(protocol_error("HTTP reply larger than the input limit"));
        }
    }
    Ok(len)
}

/// Checks that a chunked body starting at `buf[start..]` has fully arrived,
/// trailer section included; returns its decoded length and its end.
fn chunked_body(buf: &[u8], start: usize) -> io::Result<Option<(usize, usize)>> {
    let mut at = start;
    let mut total = 0;
    loop {
        let (used, size) = match httparse::parse_chunk_size(&buf[at..]) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(protocol_error("bad HTTP chunk size")),
        };
        at += used;
        if size == 0 {
            break;
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&size| size <= MAX_INPUT - total)
            .ok_or_else(|| protocol_error("HTTP reply larger than the input limit"))?;
        total += size;
        let Some(end) = body_end(buf, at, size, b"\r\n")? else {
            return Ok(None);
        };
        at = end;
    }
    // The trailer section: field lines, ignored, up to an empty line.
    loop {
        let Some((line, used)) = take_line(&buf[at..])? else {
            return Ok(None);
        };
        at += used;
        if line.is_empty() {
            return Ok(Some((total, at)));
        }
    }
}

// ---------------------------------------------------------------------------
// Connections

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
    /// Operations of the current window in send order, which is reply order.
    window: Vec<Op>,
    answered: usize,
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
            codec.encode(&mut self.out, Op::Set, self.prefill.start);
            self.window.push(Op::Set);
            self.prefill.start += 1;
        }
    }

    /// Fills the (empty) window with random requests.
    fn fill_random(&mut self, codec: &Codec, workload: &Workload) {
        for _ in 0..workload.pipeline {
            let (op, key) = workload.pick(&mut self.rng);
            codec.encode(&mut self.out, op, key);
            self.window.push(op);
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

    /// Reads once into the free tail of the input buffer.
    /// Reads once; true if the read filled all the room it had.
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
                return Err(protocol_error("reply larger than the input limit"));
            }
            self.input.resize(len * 2, 0);
        }
        Ok(())
    }

    /// Parses the next reply of the window from the input, if it has arrived.
    fn next_reply(&mut self, codec: &Codec) -> io::Result<Option<Reply>> {
        if self.in_start == self.in_end {
            self.in_start = 0;
            self.in_end = 0;
            return Ok(None);
        }
        if !self.in_flight() {
            return Err(protocol_error("data received with no request outstanding"));
        }
        let op = self.window[self.answered];
        let Some((reply, used)) = codec.parse(&self.input[self.in_start..self.in_end], op)? else {
            return Ok(None);
        };
        self.in_start += used;
        self.answered += 1;
        Ok(Some(reply))
    }
}

// ---------------------------------------------------------------------------
// Measurement

/// Counters and latencies of the measured run.
struct Stats {
    stored: u64,
    hits: u64,
    misses: u64,
    errors: u64,
    /// Request latencies in nanoseconds.
    latency: Histogram<u64>,
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

    fn ops(&self) -> u64 {
        self.stored + self.hits + self.misses + self.errors
    }

    fn latency_us(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

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

/// Prints one progress line to stderr per second.
struct Progress {
    started: Instant,
    /// Start of the interval the next line reports on.
    interval_start: Instant,
    interval_replies: u64,
    next_tick: Instant,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(1);

    fn new(now: Instant) -> Self {
        Progress { started: now, interval_start: now, interval_replies: 0, next_tick: now + Self::EVERY }
    }

    /// Starts a fresh interval, so that no line mixes the rates of two phases.
    fn restart(&mut self, now: Instant, replies: u64) {
        self.interval_start = now;
        self.interval_replies = replies;
        self.next_tick = now + Self::EVERY;
    }

    fn tick(&mut self, now: Instant, phase: Phase, replies: u64) {
        if now < self.next_tick {
            return;
        }
        let rate = (replies - self.interval_replies) as f64 / (now - self.interval_start).as_secs_f64();
        eprintln!(
            "bankcache-bench: {:>7} {:6.1}s {:>10.0} ops/s",
            phase.name(),
            (now - self.started).as_secs_f64(),
            rate
        );
        self.restart(now, replies);
    }
}

// ---------------------------------------------------------------------------
// The event loop

struct Driver {
    poll: Poll,
    /// Indexed by token; `None` once a connection has failed.
    conns: Vec<Option<Conn>>,
    codec: Codec,
    workload: Workload,
    /// Requests per window while prefilling.
    prefill_window: usize,
    phase: Phase,
    /// Connections with requests in flight; the prefill ends when none are left.
    busy: usize,
    /// Replies in all phases, for the progress line.
    replies: u64,
    last_reply: Instant,
    prefill_failures: u64,
    conn_failures: u64,
    stats: Stats,
}

/// What a run measured.
struct Report {
    elapsed: Duration,
    stats: Stats,
    prefill_failures: u64,
    conn_failures: u64,
}

impl Driver {
    fn connect(args: &Args, addr: SocketAddr) -> io::Result<Self> {
        let poll = Poll::new()?;
        let mut master = Rng(args.seed);
        let value = make_value(args.value_size, &mut master);
        let codec = Codec::new(args.proto, args.keys, &value, &args.http_prefix);
        let prefill_window = prefill_window(args.pipeline, codec.request_len(Op::Set));
        let window = if args.prefill { prefill_window } else { args.pipeline };
        let mut conns = Vec::with_capacity(args.connections);
        for i in 0..args.connections {
            let mut conn = Conn::connect(addr, Token(i), poll.registry(), window, &codec)
                .map_err(|e| io::Error::new(e.kind(), format!("connecting to {addr}: {e}")))?;
            // Each connection draws its own stream, so that the requests do
            // not depend on the order in which replies happen to arrive.
            conn.rng = Rng(master.next_u64());
            conns.push(Some(conn));
        }
        Ok(Driver {
            poll,
            conns,
            codec,
            workload: Workload::new(args),
            prefill_window,
            phase: Phase::Prefill,
            busy: 0,
            replies: 0,
            last_reply: Instant::now(),
            prefill_failures: 0,
            conn_failures: 0,
            stats: Stats::new(),
        })
    }

    /// Stores every key once, spread evenly over the connections.
    fn prefill(&mut self, progress: &mut Progress) -> io::Result<()> {
        let keys = self.workload.keys;
        let n = self.conns.len() as u64;
        for (i, conn) in self.conns.iter_mut().flatten().enumerate() {
            let i = i as u64;
            conn.prefill = keys * i / n..keys * (i + 1) / n;
        }
        self.start_phase(Phase::Prefill)?;
        let mut events = Events::with_capacity(1024);
        while self.busy > 0 {
            let now = Instant::now();
            progress.tick(now, self.phase, self.replies);
            self.check_health(now)?;
            self.turn(&mut events, progress.next_tick.saturating_duration_since(now))?;
        }
        Ok(())
    }

    /// The timed run: `warmup` unmeasured, then `duration` measured.
    fn run(mut self, warmup: Duration, duration: Duration, progress: &mut Progress) -> io::Result<Report> {
        let run_start = Instant::now();
        let measure_start = run_start + warmup;
        let end = measure_start + duration;
        progress.restart(run_start, self.replies);
        self.start_phase(if warmup.is_zero() { Phase::Measure } else { Phase::Warmup })?;
        let mut measured_from = run_start;
        let mut events = Events::with_capacity(1024);
        let measured_until = loop {
            let now = Instant::now();
            progress.tick(now, self.phase, self.replies);
            if self.phase == Phase::Warmup && now >= measure_start {
                self.phase = Phase::Measure;
                measured_from = now;
                progress.restart(now, self.replies);
            }
            if now >= end {
                break now;
            }
            self.check_health(now)?;
            let deadline =
                progress.next_tick.min(if self.phase == Phase::Warmup { measure_start } else { end });
            self.turn(&mut events, deadline.saturating_duration_since(now))?;
        };
        Ok(Report {
            elapsed: measured_until - measured_from,
            stats: self.stats,
            prefill_failures: self.prefill_failures,
            conn_failures: self.conn_failures,
        })
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

    fn check_health(&self, now: Instant) -> io::Result<()> {
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
        // Taken out so that the handlers can borrow the rest of the driver.
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
        while let Some(reply) = conn.next_reply(&self.codec)? {
            self.replies += 1;
            match self.phase {
                Phase::Prefill if reply != Reply::Stored => self.prefill_failures += 1,
                Phase::Measure => self.stats.record(reply, now - conn.sent_at),
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
            Phase::Prefill => conn.fill_prefill(&self.codec, self.prefill_window),
            Phase::Warmup | Phase::Measure => conn.fill_random(&self.codec, &self.workload),
        }
        if conn.window.is_empty() {
            return Ok(());
        }
        self.busy += 1;
        conn.send(self.poll.registry())
    }

    fn fail(&mut self, idx: usize, mut conn: Conn, error: &io::Error) {
        eprintln!("bankcache-bench: connection {idx}: {error}; dropping it");
        if conn.in_flight() {
            self.busy -= 1;
        }
        self.conn_failures += 1;
        // Deregistering can only fail if the fd is already gone; it closes on drop anyway.
        let _ = self.poll.registry().deregister(&mut conn.stream);
    }
}

/// Requests per prefill window: `PREFILL_WINDOW`, fewer when that many sets
/// of `set_len` bytes would pass `PREFILL_BYTES`, but never fewer than `pipeline`.
fn prefill_window(pipeline: usize, set_len: usize) -> usize {
    (PREFILL_BYTES / set_len.max(1)).clamp(1, PREFILL_WINDOW).max(pipeline)
}

// ---------------------------------------------------------------------------
// Entry point

fn validate(args: &Args) -> Result<(), String> {
    if args.connections == 0 || args.pipeline == 0 || args.keys == 0 {
        return Err("--connections, --pipeline and --keys must be positive".into());
    }
    if !(0.0..=1.0).contains(&args.get_ratio) {
        return Err("--get-ratio must be between 0 and 1".into());
    }
    if !(args.duration > 0.0 && args.duration.is_finite()) {
        return Err("--duration must be a positive number of seconds".into());
    }
    if !(args.warmup >= 0.0 && args.warmup.is_finite()) {
        return Err("--warmup must be a non-negative number of seconds".into());
    }
    let prefix = args.http_prefix.as_bytes();
    if prefix.first() != Some(&b'/') || !prefix.iter().all(u8::is_ascii_graphic) {
        return Err("--http-prefix must start with '/' and hold no spaces or control characters".into());
    }
    Ok(())
}

fn resolve(addr: &str) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{addr}: no address")))
}

fn bench(args: &Args) -> io::Result<Report> {
    let addr = resolve(&args.addr)?;
    let mut driver = Driver::connect(args, addr)?;
    let mut progress = Progress::new(Instant::now());
    if args.prefill {
        driver.prefill(&mut progress)?;
    }
    driver.run(Duration::from_secs_f64(args.warmup), Duration::from_secs_f64(args.duration), &mut progress)
}

/// Value bytes moved per second, in MB (10^6 B): those of hits and of sets.
/// Protocol overhead (keys, headers, framing) is not counted.
fn value_mb_per_sec(args: &Args, report: &Report) -> f64 {
    let stats = &report.stats;
    (stats.hits + stats.stored) as f64 * args.value_size as f64 / report.elapsed.as_secs_f64() / 1e6
}

fn print_text(args: &Args, report: &Report) {
    let stats = &report.stats;
    let secs = report.elapsed.as_secs_f64();
    println!(
        "bankcache-bench: proto={} addr={} connections={} pipeline={} value_size={} keys={} get_ratio={}",
        args.proto.name(),
        args.addr,
        args.connections,
        args.pipeline,
        args.value_size,
        args.keys,
        args.get_ratio
    );
    println!("duration:   {secs:.2} s");
    println!("ops/s:      {:.0}", stats.ops() as f64 / secs);
    println!("MB/s:       {:.1} (values of hits and sets, 10^6 B)", value_mb_per_sec(args, report));
    println!("total ops:  {}", stats.ops());
    println!(
        "hits:       {}\nmisses:     {}\nsets:       {}\nerrors:     {}",
        stats.hits, stats.misses, stats.stored, stats.errors
    );
    println!(
        "latency us: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        stats.latency_us(0.5),
        stats.latency_us(0.99),
        stats.latency_us(0.999),
        stats.latency.max() as f64 / 1000.0
    );
    if report.prefill_failures > 0 || report.conn_failures > 0 {
        println!(
            "failures:   {} prefill sets, {} connections",
            report.prefill_failures, report.conn_failures
        );
    }
}

fn print_json(args: &Args, report: &Report) {
    let stats = &report.stats;
    let secs = report.elapsed.as_secs_f64();
    let line = serde_json::json!({
        "proto": args.proto.name(),
        "addr": args.addr,
        "connections": args.connections,
        "pipeline": args.pipeline,
        "value_size": args.value_size,
        "keys": args.keys,
        "get_ratio": args.get_ratio,
        "duration_s": secs,
        "ops_per_sec": stats.ops() as f64 / secs,
        "value_mb_per_sec": value_mb_per_sec(args, report),
        "ops": stats.ops(),
        "hits": stats.hits,
        "misses": stats.misses,
        "sets": stats.stored,
        "errors": stats.errors,
        "prefill_failures": report.prefill_failures,
        "connection_failures": report.conn_failures,
        "latency_us": {
            "p50": stats.latency_us(0.5),
            "p99": stats.latency_us(0.99),
            "p999": stats.latency_us(0.999),
            "max": stats.latency.max() as f64 / 1000.0,
        },
    });
    println!("{line}");
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(message) = validate(&args) {
        eprintln!("bankcache-bench: {message}");
        return ExitCode::from(2);
    }
    match bench(&args) {
        Ok(report) => {
            if args.json {
                print_json(&args, &report);
            } else {
                print_text(&args, &report);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bankcache-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(codec: &Codec, stream: &[u8], ops: &[Op]) -> Vec<Reply> {
        let mut replies = Vec::new();
        let mut at = 0;
        for &op in ops {
            let (reply, used) = codec.parse(&stream[at..], op).expect("valid").expect("complete");
            replies.push(reply);
            at += used;
        }
        assert_eq!(at, stream.len());
        replies
    }

    /// Every strict prefix of a reply must parse as incomplete, never as an error.
    fn assert_split_safe(codec: &Codec, reply: &[u8], op: Op) {
        for cut in 0..reply.len() {
            assert!(codec.parse(&reply[..cut], op).expect("prefix is valid").is_none(), "cut {cut}");
        }
    }

    #[test]
    fn encodes_fixed_width_keys() {
        let codec = Codec::new(Proto::Resp, 100_000, b"abc", "/");
        let mut out = Vec::new();
        codec.encode(&mut out, Op::Get, 123);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$12\r\nkey:00000123\r\n");
        out.clear();
        codec.encode(&mut out, Op::Set, 7);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$12\r\nkey:00000007\r\n$3\r\nabc\r\n");
        let json = Codec::new(Proto::Json, 10, b"v", "/");
        out.clear();
        json.encode(&mut out, Op::Set, 1);
        assert_eq!(
            out,
            br#"{"op":"put","bank":"bench","key":"key:00000001","value":"v"}"#
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<u8>>()
        );
        let memcache = Codec::new(Proto::Memcache, 1_000_000_000, b"xy", "/");
        out.clear();
        memcache.encode(&mut out, Op::Set, 5);
        assert_eq!(out, b"set key:000000005 0 0 2\r\nxy\r\n");
        assert!(out.len() <= memcache.max_request_len());
    }

    #[test]
    fn parses_resp() {
        let codec = Codec::new(Proto::Resp, 10, b"", "/");
        let stream = b"+OK\r\n$-1\r\n$3\r\na\r\n\r\n-ERR wrong\r\n";
        let replies = parse_all(&codec, stream, &[Op::Set, Op::Get, Op::Get, Op::Get]);
        assert_eq!(replies, [Reply::Stored, Reply::Miss, Reply::Hit, Reply::Error]);
        assert_split_safe(&codec, b"$5\r\nhello\r\n", Op::Get);
        assert!(codec.parse(b"$3\r\nabcXY", Op::Get).is_err());
        assert!(codec.parse(b"?\r\n", Op::Get).is_err());
    }

    #[test]
    fn parses_memcache() {
        let codec = Codec::new(Proto::Memcache, 10, b"", "/");
        let stream = b"STORED\r\nEND\r\nVALUE key:1 0 4\r\nab\r\n\r\nEND\r\nSERVER_ERROR out of memory\r\n";
        let replies = parse_all(&codec, stream, &[Op::Set, Op::Get, Op::Get, Op::Set]);
        assert_eq!(replies, [Reply::Stored, Reply::Miss, Reply::Hit, Reply::Error]);
        assert_split_safe(&codec, b"VALUE k 0 2\r\nhi\r\nEND\r\n", Op::Get);
        assert!(codec.parse(b"VALUE k 0 2\r\nhiEND\r\nxx", Op::Get).is_err());
    }

    #[test]
    fn parses_json() {
        let codec = Codec::new(Proto::Json, 10, b"", "/");
        let stream = concat!(
            "{\"status\": \"ok\", \"data\": \"v\"}\n",
            "{\"status\": \"ok\", \"data\": null}\n",
            "{\"status\": \"error\", \"message\": \"Key key:00000001 doesn't exist\"}\n",
            "{\"status\": \"error\", \"message\": \"Bank bench doesn't exist\"}\n",
            "{\"status\": \"error\", \"message\": \"bad request\"}\n",
        );
        let ops = [Op::Get, Op::Set, Op::Get, Op::Get, Op::Get];
        let replies = parse_all(&codec, stream.as_bytes(), &ops);
        assert_eq!(replies, [Reply::Hit, Reply::Stored, Reply::Miss, Reply::Error, Reply::Error]);
        assert_split_safe(&codec, b"{\"status\": \"ok\"}\n", Op::Get);
    }

    /// Feeds `stream` to the parser as consecutive reads of the given sizes,
    /// parsing every complete reply after each read, as a connection does.
    fn parse_in_reads(codec: &Codec, stream: &[u8], ops: &[Op], reads: &[usize]) -> Vec<Reply> {
        let mut replies = Vec::new();
        let (mut start, mut end) = (0, 0);
        let mut reads = reads.iter().copied().chain(std::iter::repeat(stream.len()));
        while end < stream.len() {
            end = (end + reads.next().expect("endless")).min(stream.len());
            while replies.len() < ops.len() {
                match codec.parse(&stream[start..end], ops[replies.len()]).expect("valid") {
                    Some((reply, used)) => {
                        replies.push(reply);
                        start += used;
                    }
                    None => break,
                }
            }
        }
        assert_eq!(start, stream.len(), "the stream is consumed");
        replies
    }

    #[test]
    fn encodes_http() {
        let codec = Codec::new(Proto::Http, 2000, b"abc", "/files/");
        let mut out = Vec::new();
        codec.encode(&mut out, Op::Get, 123);
        assert_eq!(out, b"GET /files/key:00000123 HTTP/1.1\r\nHost: bench\r\n\r\n");
        assert_eq!(out.len(), codec.request_len(Op::Get));
        out.clear();
        codec.encode(&mut out, Op::Set, 7);
        assert_eq!(out, b"PUT /files/key:00000007 HTTP/1.1\r\nHost: bench\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(out.len(), codec.request_len(Op::Set));
    }

    #[test]
    fn parses_pipelined_and_split_http() {
        let codec = Codec::new(Proto::Http, 10, b"hello", "/");
        let replies: [(&str, Op, Reply); 10] = [
            (
                "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
                Op::Get,
                Reply::Hit,
            ),
            (
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\ncontent-length: 9\r\n\r\nnot found",
                Op::Get,
                Reply::Miss,
            ),
            ("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", Op::Set, Reply::Stored),
            ("HTTP/1.1 204 No Content\r\n\r\n", Op::Set, Reply::Stored),
            // Chunked, with a chunk extension and a trailer; Content-Length is overridden.
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n\
                 2\r\nhe\r\n3;ext=1\r\nllo\r\n0\r\nX-Trailer: t\r\n\r\n",
                Op::Get,
                Reply::Hit,
            ),
            ("HTTP/1.1 200 OK\r\ntransfer-encoding: Chunked\r\n\r\n0\r\n\r\n", Op::Set, Reply::Stored),
            // A body of the wrong length is an error, not a hit.
            ("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhell", Op::Get, Reply::Error),
            // Interim replies are skipped.
            ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", Op::Set, Reply::Stored),
            ("HTTP/1.1 405 Not Allowed\r\nContent-Length: 3\r\n\r\nno!", Op::Set, Reply::Error),
            ("HTTP/1.0 500 Oops\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", Op::Get, Reply::Error),
        ];
        let stream: Vec<u8> = replies.iter().flat_map(|(text, _, _)| text.bytes()).collect();
        let ops: Vec<Op> = replies.iter().map(|&(_, op, _)| op).collect();
        let expected: Vec<Reply> = replies.iter().map(|&(_, _, reply)| reply).collect();
        assert_eq!(parse_all(&codec, &stream, &ops), expected);
        for (text, op, _) in replies {
            assert_split_safe(&codec, text.as_bytes(), op);
        }
        // Byte by byte, and in two reads split at every byte.
        assert_eq!(parse_in_reads(&codec, &stream, &ops, &[1; 4096]), expected);
        for cut in 0..=stream.len() {
            assert_eq!(parse_in_reads(&codec, &stream, &ops, &[cut]), expected, "cut {cut}");
        }
    }

    #[test]
    fn rejects_unusable_http() {
        let codec = Codec::new(Proto::Http, 10, b"v", "/");
        let bad: [&[u8]; 9] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv",
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nv",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nvv",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nv",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nvXY",
            b"HTTTP/1.1 200 OK\r\n\r\n",
        ];
        for reply in bad {
            assert!(codec.parse(reply, Op::Get).is_err(), "{}", String::from_utf8_lossy(reply));
        }
        // A reply that will close the connection is only refused once complete.
        assert!(codec
            .parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", Op::Get)
            .expect("incomplete")
            .is_none());
    }

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
}
