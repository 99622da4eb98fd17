//! Workers: the only place the protocol meets the store.
//!
//! A worker takes a batch of jobs (each job: the requests one connection sent in one reactor turn), runs
//! every request against the store in order, encodes each reply straight into the job's output buffer, and
//! sends the whole batch back in one message. Requests of one connection are never split across batches
//! running at the same time (the reactor keeps at most one job per connection in flight), so a
//! connection's ops run in the order it sent them.

use std::fmt::Write as _;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::stats::{Stats, WorkerCounters};
use crate::store::record::FLAG_BYTES;
use crate::store::{Store, Ttl};
use bankcache_proto::number::{self, NotANumber};
use bankcache_proto::{self as protocol, reply, Limits, Op, OpKind, RequestError};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

/// The protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// JSON ops, one reply line each.
    Json,
    /// HTTP/1.1: the file API and the REST API.
    Http,
}

/// Where one request lies in a job's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// First byte of the request.
    pub start: usize,
    /// An HTTP request's body (its head is `start..body.0`); empty for JSON.
    pub body: (usize, usize),
    /// One past the last byte (a JSON request is `start..end`).
    pub end: usize,
}

/// The requests one connection sent in one reactor turn, and the replies to them.
pub struct Job {
    /// The connection's slab slot.
    pub slot: usize,
    /// The connection's generation, so a reply never reaches a later connection that reused the slot.
    pub generation: u64,
    /// How to read the requests and write the replies.
    pub proto: Proto,
    /// The bytes the requests were read into.
    pub input: Vec<u8>,
    /// Where each request lies in `input`.
    pub frames: Vec<Frame>,
    /// Replies, in request order.
    pub output: Vec<u8>,
    /// Set by the worker: a reply asked to close the connection (HTTP `Connection: close`); requests after
    /// it were not run.
    pub close_after: bool,
}

/// What workers need to execute requests.
pub struct Context {
    /// The banks.
    pub store: Arc<Store>,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Size limits for keys and values.
    pub limits: Limits,
    /// Ops slower than this are logged at warn; `None` turns the slow log off.
    pub slow_op: Option<Duration>,
    /// The bank the HTTP file API stores into.
    pub http_bank: String,
}

/// Called after a worker has queued finished jobs, so the reactor wakes up to write them.
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// Starts `count` worker threads that take job batches from `jobs` and return them on `done`.
pub fn spawn(
    count: usize,
    ctx: Arc<Context>,
    jobs: Receiver<Vec<Job>>,
    done: Sender<Vec<Job>>,
    notify: Notify,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..count)
        .map(|id| {
            let (ctx, jobs, done, notify) =
                (Arc::clone(&ctx), jobs.clone(), done.clone(), Arc::clone(&notify));
            thread::Builder::new().name(format!("worker-{id}")).spawn(move || {
                let counters = ctx.stats.worker(id);
                // Ends when the reactor drops the job sender at shutdown.
                for mut batch in jobs.iter() {
                    for job in &mut batch {
                        run_job_guarded(&ctx, counters, job);
                    }
                    if done.send(batch).is_err() {
                        break;
                    }
                    notify();
                }
            })
        })
        .collect()
}

/// Runs a job; if a bug makes an op panic, every request of the job is answered with an error instead, so
/// the connection still gets one reply per request and the worker lives on.
pub fn run_job_guarded(ctx: &Context, counters: &WorkerCounters, job: &mut Job) {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_job(ctx, counters, job)));
    if ran.is_err() {
        log::error!("an op panicked; answering its batch of {} requests with errors", job.frames.len());
        job.output.clear();
        match job.proto {
            Proto::Json => {
                for _ in &job.frames {
                    counters.error();
                    reply::error(&mut job.output, "Internal error");
                }
            }
            Proto::Http => {
                counters.error();
                let body = b"Internal Server Error";
                crate::http::codec::response(
                    &mut job.output,
                    500,
                    "Internal Server Error",
                    &[],
                    body,
                    false,
                    true,
                );
                job.close_after = true;
            }
        }
    }
}

/// Runs every request of one job, in order.
pub fn run_job(ctx: &Context, counters: &WorkerCounters, job: &mut Job) {
    // One clock read per request: each one's end is the next one's start.
    let mut began = Instant::now();
    for f in &job.frames {
        let frame = &job.input[f.start..f.end];
        match job.proto {
            Proto::Json => execute(ctx, counters, frame, &mut job.output),
            Proto::Http => {
                let head = &job.input[f.start..f.body.0];
                let body = &job.input[f.body.0..f.body.1];
                if !crate::http::routes::execute(ctx, counters, head, body, &mut job.output) {
                    job.close_after = true;
                }
            }
        }
        let ended = Instant::now();
        let took = ended.saturating_duration_since(began);
        began = ended;
        counters.latency(took.as_micros() as u64);
        if let Some(limit) = ctx.slow_op {
            if took > limit {
                let shown = String::from_utf8_lossy(&frame[..frame.len().min(200)]);
                log::warn!("slow op: {:.1} ms: {shown}", took.as_secs_f64() * 1000.0);
            }
        }
        if job.close_after {
            break;
        }
    }
}

/// Executes one request frame and appends its reply line to `out`.
pub fn execute(ctx: &Context, counters: &WorkerCounters, frame: &[u8], out: &mut Vec<u8>) {
    let op = match protocol::parse(frame, &ctx.limits) {
        Ok(op) => op,
        Err(e) => {
            counters.error();
            return error(out, &e);
        }
    };
    let op_kind = op.kind();
    counters.op(op.kind());
    let now = crate::store::now_ms();
    let store = &*ctx.store;
    let result = match op {
        Op::Put { bank, key, value, lifetime } => {
            let flags = if value.is_bytes() { FLAG_BYTES } else { 0 };
            store
                .put(&bank, key.as_bytes(), value.bytes(), flags, Ttl::from_secs(lifetime), now)
                .map(|_| reply::ok_raw(out, b"{}"))
        }
        Op::Get { bank, key } | Op::GetTouch { bank, key } => {
            let touch = matches!(op_kind, OpKind::GetTouch);
            store
                .get(&bank, key.as_bytes(), now, touch, |value, served| reply_value(out, value, served.flags))
                .map(|found| {
                    if found.hit().is_some() {
                        counters.hit();
                    } else {
                        counters.miss();
                        missing(counters, out, &key);
                    }
                })
        }
        Op::Delete { bank, key } => store.delete(&bank, key.as_bytes(), now).map(|found| match found.hit() {
            Some(()) => reply::ok_raw(out, b"{}"),
            None => missing(counters, out, &key),
        }),
        Op::Touch { bank, key } => store.touch(&bank, key.as_bytes(), now).map(|found| match found.hit() {
            Some(()) => reply::ok_raw(out, b"{}"),
            None => missing(counters, out, &key),
        }),
        Op::Incr { bank, key, delta } => store
            .update(&bank, key.as_bytes(), now, |old, flags| incr(old, flags, delta))
            .map(|found| match found.hit() {
                None => missing(counters, out, &key),
                Some(Ok(value)) => {
                    reply::begin_ok(out);
                    reply::float(out, value);
                    reply::end(out);
                }
                Some(Err(e)) => {
                    counters.error();
                    reply::error(out, &e.message(&key));
                }
            }),
        Op::BankKeys { bank } => {
            reply::begin_ok(out);
            out.push(b'[');
            let mut first = true;
            store.keys(&bank, now, |k| {
                if !first {
                    out.extend_from_slice(b", ");
                }
                first = false;
                reply::string(out, &String::from_utf8_lossy(k));
            });
            out.push(b']');
            reply::end(out);
            Ok(())
        }
        Op::BankList => {
            let mut names = Vec::new();
            store.bank_names(|n| names.push(n.to_owned()));
            reply::begin_ok(out);
            reply::string_array(out, names.iter().map(String::as_str));
            reply::end(out);
            Ok(())
        }
        Op::BankReset { bank } => store.reset(&bank).map(|()| reply::ok_raw(out, b"{}")),
        Op::Ping => {
            reply::ok_raw(out, b"\"pong\"");
            Ok(())
        }
        Op::Stats => {
            stats(ctx, out);
            Ok(())
        }
    };
    if let Err(e) = result {
        counters.error();
        reply::error(out, &e.to_string());
    }
}

fn missing(counters: &WorkerCounters, out: &mut Vec<u8>, key: &str) {
    counters.error();
    let mut message = String::with_capacity(key.len() + 20);
    let _ = write!(message, "Key {key} doesn't exist");
    reply::error(out, &message);
}

fn error(out: &mut Vec<u8>, e: &RequestError) {
    reply::error(out, &e.to_string());
}

/// Why an `incr` cannot be done.
pub enum IncrError {
    /// The stored value is not a number.
    NotANumber(NotANumber),
    /// The result would not be finite.
    Overflow,
}

impl IncrError {
    /// The reply message, as the original phrased it.
    pub fn message(&self, key: &str) -> String {
        match self {
            IncrError::NotANumber(NotANumber::Text) => format!("The value for key {key} isn't a number"),
            IncrError::NotANumber(NotANumber::Type(t)) => {
                format!("float() argument must be a string or a real number, not '{t}'")
            }
            IncrError::Overflow => format!("Incr of key {key} would overflow"),
        }
    }
}

/// Writes a `get` reply: JSON values as stored; bytes as base64, marked with `"encoding": "base64"`.
pub fn reply_value(out: &mut Vec<u8>, value: &[u8], flags: u8) {
    if flags & FLAG_BYTES == 0 {
        return reply::ok_raw(out, value);
    }
    reply::begin_ok(out);
    out.push(b'"');
    let start = out.len();
    out.resize(start + value.len().div_ceil(3) * 4, 0);
    let written = BASE64.encode_slice(value, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
    out.extend_from_slice(b"\", \"encoding\": \"base64\"");
    reply::end(out);
}

/// The new value of an `incr`, stored as JSON: always a float, always finite. A stored byte value counts
/// if its text is a number.
pub fn incr(old: &[u8], flags: u8, delta: f64) -> Result<(Vec<u8>, u8, f64), IncrError> {
    let current = if flags & FLAG_BYTES != 0 {
        std::str::from_utf8(old)
            .ok()
            .and_then(number::python_float)
            .filter(|v| v.is_finite())
            .ok_or(IncrError::NotANumber(NotANumber::Text))?
    } else {
        number::stored(old).map_err(IncrError::NotANumber)?
    };
    let value = current + delta;
    if !value.is_finite() {
        return Err(IncrError::Overflow);
    }
    let mut text = Vec::with_capacity(24);
    reply::float(&mut text, value);
    Ok((text, 0, value))
}

/// Every counter of the server and its store, in `stats` order.
pub fn snapshot(ctx: &Context) -> crate::stats::Snapshot {
    let store = &*ctx.store;
    let totals = store.totals();
    let counters = store.counters();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let disk = store.disk();
    ctx.stats.snapshot(&[
        ("expired_lazy", load(&counters.expired_lazy)),
        ("expired_sweep", load(&counters.expired_sweep)),
        ("keys", totals.keys),
        ("banks", totals.banks),
        ("value_bytes", totals.bytes),
        ("memory_bytes", store.ram_bytes() as u64),
        ("evictions", load(&counters.evictions)),
        ("reads_memory", load(&counters.reads_memory)),
        ("reads_disk", load(&counters.reads_disk)),
        ("crc_failures", disk.map_or(0, |d| d.damaged_reads())),
        ("volume_reuses", disk.map_or(0, |d| d.reuses())),
    ])
}

/// Writes the `stats` reply: the counters as one JSON object in the envelope.
pub fn stats(ctx: &Context, out: &mut Vec<u8>) {
    let snapshot = snapshot(ctx);
    reply::begin_ok(out);
    reply::counters(out, snapshot.fields.iter().copied());
    reply::end(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            store: Arc::new(Store::new()),
            stats: Arc::new(Stats::new(1)),
            limits: Limits { max_key_bytes: 64, max_value_bytes: 1024 },
            slow_op: None,
            http_bank: "files".into(),
        }
    }

    fn run(ctx: &Context, request: &str) -> String {
        let mut out = Vec::new();
        execute(ctx, ctx.stats.worker(0), request.as_bytes(), &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn seed_sequence() {
        let c = ctx();
        assert_eq!(
            run(&c, r#"{"op":"put","bank":"b","key":"key1","value":"value1"}"#),
            "{\"status\": \"ok\", \"data\": {}}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"get","bank":"b","key":"key1"}"#),
            "{\"status\": \"ok\", \"data\": \"value1\"}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"get","bank":"b","key":"nope"}"#),
            "{\"status\": \"error\", \"message\": \"Key nope doesn't exist\"}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"put","bank":"b","key":"n","value":1}"#),
            "{\"status\": \"ok\", \"data\": {}}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"incr","bank":"b","key":"n","value":"1"}"#),
            "{\"status\": \"ok\", \"data\": 2.0}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"incr","bank":"b","key":"key1","value":1}"#),
            "{\"status\": \"error\", \"message\": \"The value for key key1 isn't a number\"}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"bank.keys","bank":"b"}"#),
            "{\"status\": \"ok\", \"data\": [\"key1\", \"n\"]}\n"
        );
        assert_eq!(run(&c, r#"{"op":"bank.list"}"#), "{\"status\": \"ok\", \"data\": [\"b\"]}\n");
    }

    #[test]
    fn incr_never_stores_non_finite() {
        let c = ctx();
        run(&c, r#"{"op":"put","bank":"b","key":"n","value":1e308}"#);
        assert_eq!(
            run(&c, r#"{"op":"incr","bank":"b","key":"n","value":1e308}"#),
            "{\"status\": \"error\", \"message\": \"Incr of key n would overflow\"}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"get","bank":"b","key":"n"}"#),
            "{\"status\": \"ok\", \"data\": 1e308}\n"
        );
    }

    #[test]
    fn bytes_are_answered_in_base64() {
        let c = ctx();
        let put = r#"{"op":"put","bank":"b","key":"k","value":"AAEC/w==","encoding":"base64"}"#;
        assert_eq!(run(&c, put), "{\"status\": \"ok\", \"data\": {}}\n");
        assert_eq!(
            run(&c, r#"{"op":"get","bank":"b","key":"k"}"#),
            "{\"status\": \"ok\", \"data\": \"AAEC/w==\", \"encoding\": \"base64\"}\n"
        );
        run(&c, r#"{"op":"put","bank":"b","key":"n","value":"MTI=","encoding":"base64"}"#); // "12"
        assert_eq!(
            run(&c, r#"{"op":"incr","bank":"b","key":"n","value":1}"#),
            "{\"status\": \"ok\", \"data\": 13.0}\n"
        );
        assert_eq!(run(&c, r#"{"op":"get","bank":"b","key":"n"}"#), "{\"status\": \"ok\", \"data\": 13.0}\n");
    }

    #[test]
    fn failed_reads_create_no_bank() {
        let c = ctx();
        for op in ["get", "delete", "touch", "getouch"] {
            run(&c, &format!(r#"{{"op":"{op}","bank":"ghost","key":"k"}}"#));
        }
        run(&c, r#"{"op":"incr","bank":"ghost","key":"k","value":1}"#);
        run(&c, r#"{"op":"bank.keys","bank":"ghost"}"#);
        run(&c, r#"{"op":"bank.reset","bank":"ghost"}"#);
        assert_eq!(run(&c, r#"{"op":"bank.list"}"#), "{\"status\": \"ok\", \"data\": []}\n");
    }

    #[test]
    fn stats_counts_ops() {
        let c = ctx();
        run(&c, r#"{"op":"put","bank":"b","key":"k","value":1}"#);
        run(&c, r#"{"op":"get","bank":"b","key":"k"}"#);
        run(&c, r#"{"op":"get","bank":"b","key":"x"}"#);
        let s = run(&c, r#"{"op":"stats"}"#);
        assert!(s.contains("\"ops_put\": 1, \"ops_get\": 2"), "{s}");
        assert!(s.contains("\"hits\": 1, \"misses\": 1"), "{s}");
        assert!(s.contains("\"keys\": 1, \"banks\": 1"), "{s}");
    }
}
