//! Soak: minutes of mixed load on a disk-backed server with expiry, eviction and volume reuse all
//! happening at once, plus a client that never reads its replies and one that sits on half a request.
//! It proves that every request gets a well-formed reply that is right for the cache (a miss is fine, a
//! wrong value or a failed write is not), that the process's RSS stays within `memory_max_bytes` plus the
//! fixed overhead and stays flat (the last third of the run against the middle third), that a key's
//! lifetime holds under load, and that neither idle client is closed, grows the server or loses its
//! requests.
//!
//! It is ignored by default; run it with
//!
//! ```sh
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `BANKCACHE_SOAK_SECS` sets the duration (default 300; e.g. `BANKCACHE_SOAK_SECS=30` for a quick
//! check). `--nocapture` shows a table of samples: RSS (in all, anonymous, file-backed), `memory_used`,
//! keys, evictions, expiries (lifetimes and keys dropped with their volume alike), volume reuses and ops/s,
//! and a summary.
//!
//! What counts as a failure: a reply that is not one well-formed line, a connection that breaks or a reply
//! that takes over 10 s, an error reply other than a miss (`Key … doesn't exist`, HTTP `404`) where a miss
//! is possible, and a value other than the one put. Every put must succeed: values are under
//! `max_value_bytes`, records under `volume_size`, and with a disk store values need no RAM, so the only
//! refusals the server has left (`Out of memory`, `Storage error`) would be bugs here.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{q, stat, stats, Map, TestServer, Value};

/// Small next to the disk store (64 MB), so that the keys alone need more than this and are evicted.
const MEMORY_MAX: u64 = 16 << 20;
const VOLUME_SIZE: u64 = 16 << 20;
const VOLUME_COUNT: u64 = 4;
const MAX_OUTPUT: u64 = 1 << 20;
/// What the process may hold beyond `memory_max_bytes`: code, thread stacks, the allocator's metadata and
/// free pages, connection buffers (the README's fixed overhead; tests/bounds.rs allows the same).
const OVERHEAD: u64 = 24 << 20;
/// The longest any reply may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Every loop stops after this many rounds even if time is left (a bound on top of the deadline).
const MAX_ROUNDS: u64 = 100_000_000;

const SMALL_BANKS: u64 = 64;
const MEDIUM_BANKS: u64 = 8;
const MEDIUM_KEYS: u64 = 2_000;
const HOT_KEYS: u64 = 150;
const COUNTERS: u64 = 200;
const SMALL_BANK_KEYS: u64 = 20;
const BIG_KEYS: u64 = 4;
const BIG_VALUE: usize = 512 * 1024;
const HTTP_KEYS: u64 = 400;
const NON_READER_GETS: u64 = 1_000;

// ---------------------------------------------------------------------------
// Failures and randomness.
// ---------------------------------------------------------------------------

/// What the clients saw: requests sent and replies that were wrong.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    failures: AtomicU64,
    first: Mutex<Vec<String>>,
}

impl Tally {
    fn sent(&self, n: u64) {
        self.requests.fetch_add(n, Ordering::Relaxed);
    }

    fn fail(&self, who: &str, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first.lock().unwrap();
        if first.len() < 20 {
            let mut what = what;
            if what.len() > 300 {
                let mut cut = 300;
                while !what.is_char_boundary(cut) {
                    cut -= 1;
                }
                what.truncate(cut);
                what.push('…');
            }
            first.push(format!("{who}: {what}"));
        }
    }
}

/// xorshift64*: deterministic per thread, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------------------
// Values: each is determined by its key, so any value read back can be checked exactly.
// ---------------------------------------------------------------------------

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A medium JSON value, 512 B to 16 KB.
fn medium_value(key: &str) -> String {
    let pad = 512 + (hash(key) % (16 * 1024 - 512)) as usize;
    format!(r#"{{"key":{},"pad":"{}"}}"#, q(key), "m".repeat(pad))
}

fn big_value(key: &str) -> String {
    format!(r#"{{"key":{},"pad":"{}"}}"#, q(key), "B".repeat(BIG_VALUE))
}

/// The body of an HTTP file: about 100 KB of bytes that depend on the key.
fn http_body(key: &str) -> Vec<u8> {
    let len = 96 * 1024 + (hash(key) % 8192) as usize;
    let mut x = hash(key) | 1;
    let mut body = format!("{key}\n").into_bytes();
    body.extend((body.len()..len).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 24) as u8
    }));
    body
}

fn put(bank: &str, key: &str, value: &str, lifetime: Option<f64>) -> String {
    match lifetime {
        Some(s) => {
            format!(r#"{{"op":"put","bank":{},"key":{},"value":{value},"lifetime":{s}}}"#, q(bank), q(key))
        }
        None => format!(r#"{{"op":"put","bank":{},"key":{},"value":{value}}}"#, q(bank), q(key)),
    }
}

fn key_op(op: &str, bank: &str, key: &str) -> String {
    format!(r#"{{"op":"{op}","bank":{},"key":{}}}"#, q(bank), q(key))
}

// ---------------------------------------------------------------------------
// Replies.
// ---------------------------------------------------------------------------

const OK_EMPTY: &str = "{\"status\": \"ok\", \"data\": {}}\n";

enum Reply<'a> {
    Ok(&'a str),
    Error(&'a str),
    Malformed,
}

fn parse(line: &str) -> Reply<'_> {
    if let Some(data) =
        line.strip_prefix("{\"status\": \"ok\", \"data\": ").and_then(|r| r.strip_suffix("}\n"))
    {
        Reply::Ok(data)
    } else if let Some(m) =
        line.strip_prefix("{\"status\": \"error\", \"message\": \"").and_then(|r| r.strip_suffix("\"}\n"))
    {
        Reply::Error(m)
    } else {
        Reply::Malformed
    }
}

fn missing(key: &str) -> String {
    format!("Key {key} doesn't exist")
}

fn short(line: &str) -> String {
    if line.len() <= 200 {
        return format!("{line:?}");
    }
    let mut cut = 200;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}… ({} bytes)", &line[..cut], line.len())
}

/// Checks the reply to a get (or getouch) of a key whose value is `expected` when present.
fn check_get(tally: &Tally, who: &str, key: &str, expected: &str, line: &str) -> bool {
    match parse(line) {
        Reply::Ok(data) if data == expected => true,
        Reply::Error(m) if m == missing(key) => false,
        _ => {
            tally.fail(who, format!("get {key}: {}", short(line)));
            false
        }
    }
}

/// Checks a reply that is `{}` or, where the key may be missing, a miss.
fn check_empty(tally: &Tally, who: &str, what: &str, key: Option<&str>, line: &str) {
    let fine =
        line == OK_EMPTY || matches!((parse(line), key), (Reply::Error(m), Some(k)) if m == missing(k));
    if !fine {
        tally.fail(who, format!("{what}: {}", short(line)));
    }
}

// ---------------------------------------------------------------------------
// Clients.
// ---------------------------------------------------------------------------

/// The slowest reply to a request sent alone (not pipelined), in microseconds.
static SLOWEST_US: AtomicU64 = AtomicU64::new(0);

struct Json {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Json {
    fn connect(addr: SocketAddr) -> Json {
        let stream = TcpStream::connect(addr).expect("connect to the JSON port");
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Json { writer: stream.try_clone().unwrap(), reader: BufReader::new(stream) }
    }

    fn read_line(&mut self) -> Result<String, String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => Err("the server closed the connection".into()),
            Ok(_) if buf.ends_with(b"\n") => {
                String::from_utf8(buf).map_err(|_| "a reply that is not UTF-8".into())
            }
            Ok(_) => {
                Err(format!("the connection ended inside a reply: {}", short(&String::from_utf8_lossy(&buf))))
            }
            Err(e) => Err(format!("no reply within {REPLY_TIMEOUT:?}: {e}")),
        }
    }

    /// Sends the requests in one write and reads one reply each.
    fn batch(&mut self, requests: &[String]) -> Result<Vec<String>, String> {
        let mut out = Vec::with_capacity(requests.iter().map(|r| r.len() + 1).sum());
        for r in requests {
            out.extend_from_slice(r.as_bytes());
            out.push(b'\n');
        }
        self.writer.write_all(&out).map_err(|e| format!("write failed: {e}"))?;
        requests.iter().map(|_| self.read_line()).collect()
    }

    fn call(&mut self, request: &str) -> Result<String, String> {
        let started = Instant::now();
        self.writer.write_all(format!("{request}\n").as_bytes()).map_err(|e| format!("write failed: {e}"))?;
        let line = self.read_line();
        SLOWEST_US.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        line
    }
}

/// What every load thread shares.
struct Ctx {
    json: SocketAddr,
    http: SocketAddr,
    deadline: Instant,
    tally: Tally,
    /// Keys put with a short lifetime and read at once, and how many of them were there.
    probes: AtomicU64,
    probes_found: AtomicU64,
    /// How many keys the flood has put so far.
    flood_seq: AtomicU64,
}

impl Ctx {
    fn running(&self) -> bool {
        Instant::now() < self.deadline
    }
}

/// Pipelined puts of tiny values under ever new keys over many banks (a fifth with lifetimes of 1–3 s),
/// mixed with gets of recent keys: this fills memory with keys, so keys are evicted, and writes most of
/// the records, so volumes are reused.
fn flood(ctx: &Ctx, id: u64) {
    let who = format!("flood{id}");
    let mut c = Json::connect(ctx.json);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ id);
    let mut seq = 0u64;
    for _ in 0..MAX_ROUNDS {
        if !ctx.running() {
            break;
        }
        let mut requests = Vec::with_capacity(200);
        let mut keys = Vec::with_capacity(200);
        for i in 0..200u64 {
            if i % 4 == 3 && seq > 0 {
                let n = seq.saturating_sub(1 + rng.below(50_000.min(seq)));
                let key = format!("f{id}:{n}");
                requests.push(key_op("get", &format!("s{}", n % SMALL_BANKS), &key));
                keys.push((false, key));
            } else {
                let key = format!("f{id}:{seq}");
                let lifetime = (seq % 5 == 0).then_some(1.0 + (seq % 3) as f64);
                requests.push(put(&format!("s{}", seq % SMALL_BANKS), &key, &q(&key), lifetime));
                keys.push((true, key));
                seq += 1;
            }
        }
        ctx.tally.sent(requests.len() as u64);
        ctx.flood_seq.store(seq, Ordering::Relaxed);
        let replies = match c.batch(&requests) {
            Ok(r) => r,
            Err(e) => return ctx.tally.fail(&who, e),
        };
        for ((is_put, key), line) in keys.iter().zip(&replies) {
            if *is_put {
                if line != OK_EMPTY {
                    ctx.tally.fail(&who, format!("put {key}: {}", short(line)));
                }
            } else {
                check_get(&ctx.tally, &who, key, &q(key), line);
            }
        }
    }
}

/// One request at a time, a mix of every op on medium values (a hot set read often enough to be copied
/// into RAM), counters, listings of a small bank and paged scans.
fn mixed(ctx: &Ctx, id: u64) {
    let who = format!("mixed{id}");
    let mut c = Json::connect(ctx.json);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ (id + 1).wrapping_mul(0x1234_5678_9abc));
    for _ in 0..MAX_ROUNDS {
        if !ctx.running() {
            break;
        }
        let bank = format!("m{}", rng.below(MEDIUM_BANKS));
        let roll = rng.below(100);
        // Gets go mostly to a hot set, other ops to the rest, so hot values stay long enough to be
        // copied into RAM (a put drops the RAM copy).
        let hot = roll < 35 && rng.chance(70);
        let n = if hot { rng.below(HOT_KEYS) } else { HOT_KEYS + rng.below(MEDIUM_KEYS - HOT_KEYS) };
        let key = format!("{bank}:{n}");
        let result = match roll {
            // get, and put what was missing (a read-through cache)
            0..=34 => {
                let op = if roll < 30 { "get" } else { "getouch" };
                ctx.tally.sent(1);
                c.call(&key_op(op, &bank, &key)).and_then(|line| {
                    let value = medium_value(&key);
                    if check_get(&ctx.tally, &who, &key, &value, &line) || !rng.chance(60) {
                        return Ok(());
                    }
                    let lifetime = rng.chance(30).then(|| 0.3 + rng.below(27) as f64 / 10.0);
                    ctx.tally.sent(1);
                    let line = c.call(&put(&bank, &key, &value, lifetime))?;
                    check_empty(&ctx.tally, &who, &format!("put {key}"), None, &line);
                    Ok(())
                })
            }
            35..=49 => {
                let lifetime = rng.chance(30).then(|| 0.3 + rng.below(27) as f64 / 10.0);
                ctx.tally.sent(1);
                c.call(&put(&bank, &key, &medium_value(&key), lifetime)).map(|line| {
                    check_empty(&ctx.tally, &who, &format!("put {key}"), None, &line);
                })
            }
            50..=54 => {
                ctx.tally.sent(1);
                c.call(&key_op("delete", &bank, &key)).map(|line| {
                    check_empty(&ctx.tally, &who, &format!("delete {key}"), Some(&key), &line);
                })
            }
            55..=59 => {
                ctx.tally.sent(1);
                c.call(&key_op("touch", &bank, &key)).map(|line| {
                    check_empty(&ctx.tally, &who, &format!("touch {key}"), Some(&key), &line);
                })
            }
            60..=79 => counter(ctx, &who, &mut c, &mut rng),
            80..=82 => scan(ctx, &who, &mut c, &mut rng),
            83..=84 => small_bank(ctx, &who, &mut c, &mut rng),
            85 => {
                ctx.tally.sent(1);
                c.call(r#"{"op":"bank.list"}"#).map(|line| match parse(&line) {
                    Reply::Ok(data) if data.starts_with('[') && data.ends_with(']') => {}
                    _ => ctx.tally.fail(&who, format!("bank.list: {}", short(&line))),
                })
            }
            // a recent tiny key of the flood
            _ => {
                let n = ctx.flood_seq.load(Ordering::Relaxed).saturating_sub(rng.below(100_000));
                let key = format!("f0:{n}");
                ctx.tally.sent(1);
                c.call(&key_op("get", &format!("s{}", n % SMALL_BANKS), &key)).map(|line| {
                    check_get(&ctx.tally, &who, &key, &q(&key), &line);
                })
            }
        };
        if let Err(e) = result {
            return ctx.tally.fail(&who, e);
        }
    }
}

/// `incr` of a counter, putting 0 first when it is missing (expired or dropped with its volume).
fn counter(ctx: &Ctx, who: &str, c: &mut Json, rng: &mut Rng) -> Result<(), String> {
    let key = format!("c{}", rng.below(COUNTERS));
    ctx.tally.sent(1);
    let line = c.call(&format!(r#"{{"op":"incr","bank":"c","key":{},"value":1}}"#, q(&key)))?;
    match parse(&line) {
        Reply::Ok(data) if data.parse::<f64>().is_ok_and(|v| v.is_finite() && v >= 1.0) => Ok(()),
        Reply::Error(m) if m == missing(&key) => {
            ctx.tally.sent(1);
            let line = c.call(&put("c", &key, "0", None))?;
            check_empty(&ctx.tally, who, &format!("put {key}"), None, &line);
            Ok(())
        }
        _ => {
            ctx.tally.fail(who, format!("incr {key}: {}", short(&line)));
            Ok(())
        }
    }
}

/// A whole `bank.scan` of one medium bank by a prefix, at most 100 pages.
fn scan(ctx: &Ctx, who: &str, c: &mut Json, rng: &mut Rng) -> Result<(), String> {
    let bank = format!("m{}", rng.below(MEDIUM_BANKS));
    let prefix = format!("{bank}:{}", rng.below(10));
    let mut cursor = 0u64;
    for _ in 0..100 {
        ctx.tally.sent(1);
        let request = format!(
            r#"{{"op":"bank.scan","bank":{},"cursor":{cursor},"prefix":{},"count":50}}"#,
            q(&bank),
            q(&prefix)
        );
        let line = c.call(&request)?;
        let page = match parse(&line) {
            Reply::Ok(data) => serde_json::from_str::<Value>(data).ok(),
            _ => None,
        };
        let next = page.as_ref().and_then(|p| p.get("cursor")).and_then(Value::as_u64);
        let keys = page.as_ref().and_then(|p| p.get("keys")).and_then(Value::as_array);
        let (Some(next), Some(keys)) = (next, keys) else {
            ctx.tally.fail(who, format!("bank.scan {bank} {prefix}: {}", short(&line)));
            return Ok(());
        };
        if keys.len() > 50 || !keys.iter().all(|k| k.as_str().is_some_and(|k| k.starts_with(&prefix))) {
            ctx.tally
                .fail(who, format!("bank.scan {bank} {prefix}: a page off its prefix: {}", short(&line)));
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    Ok(())
}

/// Keeps the small bank filled and lists it with `bank.keys`.
fn small_bank(ctx: &Ctx, who: &str, c: &mut Json, rng: &mut Rng) -> Result<(), String> {
    let key = format!("small:{}", rng.below(SMALL_BANK_KEYS));
    ctx.tally.sent(2);
    let line = c.call(&put("small", &key, &q(&key), None))?;
    check_empty(&ctx.tally, who, &format!("put {key}"), None, &line);
    let line = c.call(r#"{"op":"bank.keys","bank":"small"}"#)?;
    let keys = match parse(&line) {
        Reply::Ok(data) => serde_json::from_str::<Vec<String>>(data).ok(),
        _ => None,
    };
    match keys {
        Some(keys)
            if keys.len() as u64 <= SMALL_BANK_KEYS && keys.iter().all(|k| k.starts_with("small:")) => {}
        _ => ctx.tally.fail(who, format!("bank.keys small: {}", short(&line))),
    }
    Ok(())
}

/// Every half second: rewrites one of the large values the non-reading client asks for and reads
/// another back; and probes expiry by lifetime: a key put with a lifetime of 0.3 s must be gone half a
/// second later (`stats` cannot show this apart: `expired_*` also count keys dropped with their volume).
/// It should also be there at once; a cache may evict anything, so the test only counts how often it was.
fn big(ctx: &Ctx) {
    let mut c = Json::connect(ctx.json);
    for i in 0..MAX_ROUNDS {
        if !ctx.running() {
            break;
        }
        let key = format!("big{}", i % BIG_KEYS);
        let other = format!("big{}", (i + 1) % BIG_KEYS);
        let probe = format!("probe{i}");
        let previous = format!("probe{}", i.wrapping_sub(1));
        ctx.tally.sent(5);
        let result = c.call(&put("big", &key, &big_value(&key), None)).and_then(|line| {
            check_empty(&ctx.tally, "big", &format!("put {key}"), None, &line);
            let line = c.call(&key_op("get", "big", &other))?;
            check_get(&ctx.tally, "big", &other, &big_value(&other), &line);
            let line = c.call(&put("ttl", &probe, &q(&probe), Some(0.3)))?;
            check_empty(&ctx.tally, "ttl", &format!("put {probe}"), None, &line);
            let line = c.call(&key_op("get", "ttl", &probe))?;
            ctx.probes.fetch_add(1, Ordering::Relaxed);
            if check_get(&ctx.tally, "ttl", &probe, &q(&probe), &line) {
                ctx.probes_found.fetch_add(1, Ordering::Relaxed);
            }
            if i > 0 {
                let line = c.call(&key_op("get", "ttl", &previous))?;
                if check_get(&ctx.tally, "ttl", &previous, &q(&previous), &line) {
                    ctx.tally.fail("ttl", format!("{previous} still there after its lifetime"));
                }
            }
            Ok(())
        });
        if let Err(e) = result {
            return ctx.tally.fail("big", e);
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// HTTP file API on one keep-alive connection: PUT, GET and DELETE of ~100 KB files.
fn http(ctx: &Ctx) {
    let stream = TcpStream::connect(ctx.http).expect("connect to the HTTP port");
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    for _ in 0..MAX_ROUNDS {
        if !ctx.running() {
            break;
        }
        let key = format!("h{}", rng.below(HTTP_KEYS));
        let roll = rng.below(100);
        let (method, body) = match roll {
            0..=39 => ("PUT", http_body(&key)),
            40..=89 => ("GET", Vec::new()),
            _ => ("DELETE", Vec::new()),
        };
        let mut request = format!("{method} /{key} HTTP/1.1\r\nHost: soak\r\n");
        if method == "PUT" {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(&body);
        ctx.tally.sent(1);
        let started = Instant::now();
        if let Err(e) = writer.write_all(&bytes) {
            return ctx.tally.fail("http", format!("{method} /{key}: write failed: {e}"));
        }
        let (status, got) = match read_response(&mut reader) {
            Ok(r) => r,
            Err(e) => return ctx.tally.fail("http", format!("{method} /{key}: {e}")),
        };
        SLOWEST_US.fetch_max(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        let fine = match method {
            "PUT" => status == 200 && got == b"ok",
            "GET" => {
                (status == 200 && got == http_body(&key))
                    || (status == 404 && got == format!("Key {key} doesn't exist\n").as_bytes())
            }
            _ => {
                (status == 200 && got == b"ok")
                    || (status == 404 && got == format!("Key {key} doesn't exist\n").as_bytes())
            }
        };
        if !fine {
            let shown = String::from_utf8_lossy(&got[..got.len().min(120)]).into_owned();
            ctx.tally.fail("http", format!("{method} /{key}: {status} {shown:?} ({} bytes)", got.len()));
        }
        // About 100 requests a second, 4 MB/s of PUTs: the flood is to write most of the records.
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reads one response with a `Content-Length` body: its status code and body.
fn read_response(reader: &mut BufReader<TcpStream>) -> Result<(u16, Vec<u8>), String> {
    let mut head = Vec::new();
    let mut length = None;
    let mut status = None;
    for _ in 0..100 {
        head.clear();
        match reader.read_until(b'\n', &mut head) {
            Ok(0) => return Err("the server closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("no response within {REPLY_TIMEOUT:?}: {e}")),
        }
        let line = String::from_utf8_lossy(&head);
        let line = line.trim_end();
        if status.is_none() {
            status = line.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok());
            if status.is_none() {
                return Err(format!("not a status line: {line:?}"));
            }
        } else if line.is_empty() {
            let Some(length) = length else { return Err("a response without Content-Length".into()) };
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).map_err(|e| format!("body cut short: {e}"))?;
            return Ok((status.unwrap_or_default(), body));
        } else if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().ok();
            }
        }
    }
    Err("a response head of over 100 lines".into())
}

// ---------------------------------------------------------------------------
// Sampling.
// ---------------------------------------------------------------------------

/// The server's resident memory, from /proc/<pid>/status, in bytes.
#[derive(Clone, Copy)]
struct Rss {
    /// VmRSS.
    total: u64,
    /// RssAnon: what the process allocated.
    anon: u64,
    /// RssFile: pages of files mapped (the binary, its libraries).
    file: u64,
}

impl Rss {
    fn read(pid: u32) -> Rss {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or_else(|| panic!("no {name} line in /proc/{pid}/status"))
        };
        Rss { total: field("VmRSS:"), anon: field("RssAnon:"), file: field("RssFile:") }
    }
}

struct Sample {
    t: f64,
    rss: Rss,
    st: Map<String, Value>,
    ops: f64,
}

fn ops_total(st: &Map<String, Value>) -> f64 {
    st.iter().filter(|(k, _)| k.starts_with("ops_")).filter_map(|(_, v)| v.as_f64()).sum()
}

fn mb(bytes: f64) -> f64 {
    bytes / (1u64 << 20) as f64
}

fn mean(xs: &[u64]) -> f64 {
    xs.iter().sum::<u64>() as f64 / xs.len().max(1) as f64
}

#[test]
#[ignore = "a soak of several minutes: cargo test --release --test soak -- --ignored --nocapture"]
fn mixed_load_for_minutes_keeps_rss_flat_and_every_request_answered() {
    let secs: u64 = std::env::var("BANKCACHE_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let interval = Duration::from_secs((secs / 40).clamp(1, 5));
    let data = tempfile::tempdir().unwrap();
    let (memory, volume, count, output) =
        (MEMORY_MAX.to_string(), VOLUME_SIZE.to_string(), VOLUME_COUNT.to_string(), MAX_OUTPUT.to_string());
    let server = TestServer::start(&[
        "--data-dir",
        data.path().to_str().unwrap(),
        "--volume-size",
        &volume,
        "--volume-count",
        &count,
        "--memory-max-bytes",
        &memory,
        "--fsync",
        "never",
        "--max-output-bytes",
        &output,
        "--output-timeout",
        "0",
        "--log-level",
        "warn",
    ]);
    let pid = server.pid();
    let mut admin = common::Conn::connect(server.addr());

    // The large values, then a client that asks for them a thousand times and never reads: at most
    // max_output_bytes of replies may wait for it.
    let mut setup = Json::connect(server.addr());
    for i in 0..BIG_KEYS {
        let key = format!("big{i}");
        assert_eq!(setup.call(&put("big", &key, &big_value(&key), None)).unwrap(), OK_EMPTY);
    }
    let mut non_reader = TcpStream::connect(server.addr()).expect("connect");
    non_reader.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let gets: String =
        (0..NON_READER_GETS).map(|i| key_op("get", "big", &format!("big{}", i % BIG_KEYS)) + "\n").collect();
    non_reader.write_all(gets.as_bytes()).expect("the non-reading client's gets");
    // A client that sends half a request and sits on it.
    let mut partial = TcpStream::connect(server.addr()).expect("connect");
    partial.write_all(br#"{"op":"get","bank":"small","key":"small:"#).expect("half a request");

    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        json: server.addr(),
        http: server.http_addr(),
        deadline: start + Duration::from_secs(secs),
        tally: Tally::default(),
        probes: AtomicU64::new(0),
        probes_found: AtomicU64::new(0),
        flood_seq: AtomicU64::new(0),
    });
    let mut threads = Vec::new();
    let mut spawn = |name: String, f: Box<dyn FnOnce(&Ctx) + Send>| {
        let ctx = Arc::clone(&ctx);
        threads.push(thread::Builder::new().name(name).spawn(move || f(&ctx)).unwrap());
    };
    spawn("flood0".into(), Box::new(|c| flood(c, 0)));
    for id in 0..3 {
        spawn(format!("mixed{id}"), Box::new(move |c| mixed(c, id)));
    }
    spawn("http".into(), Box::new(http));
    spawn("big".into(), Box::new(big));

    println!(
        "soak: {secs} s; memory_max_bytes {} MB, {VOLUME_COUNT} volumes of {} MB, max_output_bytes {} MB",
        MEMORY_MAX >> 20,
        VOLUME_SIZE >> 20,
        MAX_OUTPUT >> 20
    );
    println!(
        "{:>6} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9} {:>8} {:>7} {:>8}",
        "t s", "RSS MB", "anon", "file", "used MB", "keys", "evicted", "expired", "reuses", "ops/s"
    );
    let mut samples: Vec<Sample> = Vec::new();
    let mut last_ops = (Instant::now(), ops_total(&stats(&mut admin)));
    for i in 1..=(secs * 1000 / interval.as_millis() as u64 + 1) {
        common::sleep_until(start, interval * i as u32);
        let rss = Rss::read(pid);
        let st = stats(&mut admin);
        let now = Instant::now();
        let total = ops_total(&st);
        let ops = (total - last_ops.1) / now.duration_since(last_ops.0).as_secs_f64();
        last_ops = (now, total);
        let s = Sample { t: start.elapsed().as_secs_f64(), rss, st, ops };
        println!(
            "{:>6.0} {:>7.1} {:>7.1} {:>7.1} {:>8.1} {:>8} {:>9} {:>8} {:>7} {:>8.0}",
            s.t,
            mb(rss.total as f64),
            mb(rss.anon as f64),
            mb(rss.file as f64),
            mb(stat(&s.st, "memory_used")),
            stat(&s.st, "keys"),
            stat(&s.st, "evictions"),
            stat(&s.st, "expired_sweep") + stat(&s.st, "expired_lazy"),
            stat(&s.st, "volume_reuses"),
            s.ops
        );
        samples.push(s);
        if Instant::now() >= ctx.deadline {
            break;
        }
    }
    for t in threads {
        t.join().expect("a load thread panicked");
    }

    // The half request, finished now, is answered.
    partial.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    partial.write_all(b"1\"}\n").expect("the rest of the request");
    let mut line = String::new();
    BufReader::new(&partial).read_line(&mut line).expect("a reply to the finished request");
    let partial_ok = check_get(&ctx.tally, "partial", "small:1", &q("small:1"), &line)
        || line == format!("{{\"status\": \"error\", \"message\": \"{}\"}}\n", missing("small:1"));
    // The client that did not read gets every reply once it does.
    non_reader.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    let mut replies = BufReader::new(&non_reader);
    let mut answered = 0;
    for i in 0..NON_READER_GETS {
        let key = format!("big{}", i % BIG_KEYS);
        let mut line = String::new();
        match replies.read_line(&mut line) {
            Ok(n) if n > 0 => {}
            other => {
                ctx.tally.fail("non-reader", format!("reply {i} of {NON_READER_GETS}: {other:?}"));
                break;
            }
        }
        check_get(&ctx.tally, "non-reader", &key, &big_value(&key), &line);
        answered += 1;
    }
    let end = stats(&mut admin);
    let rss_end = Rss::read(pid);

    let requests = ctx.tally.requests.load(Ordering::Relaxed);
    let failures = ctx.tally.failures.load(Ordering::Relaxed);
    let peak_of = |f: fn(&Rss) -> u64| samples.iter().map(|s| f(&s.rss)).max().unwrap_or(0);
    let (peak, peak_anon, peak_file) = (peak_of(|r| r.total), peak_of(|r| r.anon), peak_of(|r| r.file));
    let peak_used = samples.iter().map(|s| stat(&s.st, "memory_used") as u64).max().unwrap_or(0);
    let third = samples.len() / 3;
    let mean_of = |range: std::ops::Range<usize>, f: fn(&Rss) -> u64| {
        mean(&samples[range].iter().map(|s| f(&s.rss)).collect::<Vec<_>>())
    };
    let (middle, last) =
        (mean_of(third..2 * third, |r| r.total), mean_of(2 * third..samples.len(), |r| r.total));
    let (middle_anon, last_anon) =
        (mean_of(third..2 * third, |r| r.anon), mean_of(2 * third..samples.len(), |r| r.anon));
    let expired = stat(&end, "expired_sweep") + stat(&end, "expired_lazy");
    let slowest = Duration::from_micros(SLOWEST_US.load(Ordering::Relaxed));
    let mean_ops = samples.iter().map(|s| s.ops).sum::<f64>() / samples.len().max(1) as f64;
    println!(
        "summary: {requests} requests from the clients, {failures} failed; ops/s mean {mean_ops:.0}, min {:.0}; \
         slowest reply to a lone request {slowest:?}",
        samples.iter().map(|s| s.ops).fold(f64::INFINITY, f64::min)
    );
    println!(
        "  RSS peak {:.1} MB (anon {:.1} MB, file {:.1} MB) against {} MB + {} MB overhead; memory_used peak \
         {:.1} MB; RSS at the end {:.1} MB",
        mb(peak as f64),
        mb(peak_anon as f64),
        mb(peak_file as f64),
        MEMORY_MAX >> 20,
        OVERHEAD >> 20,
        mb(peak_used as f64),
        mb(rss_end.total as f64)
    );
    println!(
        "  RSS mean: middle third {:.1} MB, last third {:.1} MB (anon {:.1} → {:.1} MB)",
        mb(middle),
        mb(last),
        mb(middle_anon),
        mb(last_anon)
    );
    println!(
        "  evictions {}, expired {} (sweep {}, lazy {}), volume_reuses {}, slow_clients_closed {}, \
         connections_closed_idle {}, errors {} (misses {}), hits {}",
        stat(&end, "evictions"),
        expired,
        stat(&end, "expired_sweep"),
        stat(&end, "expired_lazy"),
        stat(&end, "volume_reuses"),
        stat(&end, "slow_clients_closed"),
        stat(&end, "connections_closed_idle"),
        stat(&end, "errors"),
        stat(&end, "misses"),
        stat(&end, "hits")
    );
    println!("  the non-reading client got {answered} of {NON_READER_GETS} replies once it read; the half request was answered: {partial_ok}");
    let (probes, found) = (ctx.probes.load(Ordering::Relaxed), ctx.probes_found.load(Ordering::Relaxed));
    println!(
        "  keys put with a 0.3 s lifetime, alone in their bank: {found} of {probes} there when read at once, \
         none after their lifetime"
    );
    let first = ctx.tally.first.lock().unwrap();
    for f in first.iter() {
        println!("  failure: {f}");
    }

    assert_eq!(failures, 0, "requests failed, first ones: {first:#?}");
    assert!(
        samples.len() >= 6,
        "too few samples ({}) for a soak: set BANKCACHE_SOAK_SECS higher",
        samples.len()
    );
    assert!(
        peak <= MEMORY_MAX + OVERHEAD,
        "RSS peaked at {:.1} MB, over {} MB + {} MB",
        mb(peak as f64),
        MEMORY_MAX >> 20,
        OVERHEAD >> 20
    );
    assert!(
        samples.iter().all(|s| stat(&s.st, "memory_used") <= MEMORY_MAX as f64),
        "memory_used went over memory_max_bytes"
    );
    let slack = (middle * 0.10).max((4u64 << 20) as f64);
    assert!(
        (last - middle).abs() <= slack,
        "RSS not flat: middle third {:.1} MB, last third {:.1} MB",
        mb(middle),
        mb(last)
    );
    assert!(stat(&end, "evictions") > 0.0, "no eviction happened: {end:?}");
    assert!(expired > 0.0, "no expiry happened: {end:?}");
    assert!(stat(&end, "volume_reuses") > 0.0, "no volume was reused: {end:?}");
    assert_eq!(stat(&end, "slow_clients_closed"), 0.0, "a client was closed with output_timeout 0");
    assert!(samples.iter().all(|s| s.ops > 0.0), "a sample saw no op run: the server stalled");
    assert_eq!(answered, NON_READER_GETS);
    // A cache may evict anything, so this is only a sanity bound. Eviction takes the banks in turn a slice
    // at a time, so a new key (not yet read) alone in its bank is evicted whenever its bank's turn comes
    // between its put and its get: in 5-minute runs 16% and 21% of these keys were gone at once, where a
    // clock over all entries alike would keep a new key for a turn over some 180k keys, seconds here.
    assert!(found * 2 >= probes, "only {found} of {probes} keys were there right after their put");
    assert!(partial_ok, "the half request, finished, got {line:?}");
}
