//! The HTTP front's routes, run by the workers: CacheFS's file API on `/<key>`, the original CacheServer's
//! REST API on `/bank/…` and `/banks` (also under `/api`), and `/stats`.
//!
//! The REST API is a translation: each route becomes the JSON op it stands for, run by the same code as the
//! JSON port, and its reply is the response body. The file API talks to the store directly, because it
//! needs to know where a value lies (`X-Position`) and which tier served it (`X-Cache`).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use serde_json::json;

use crate::http::codec::{self as http, Head};
use crate::stats::WorkerCounters;
use crate::store::record::FLAG_BYTES;
use crate::store::{Lookup, Served, Tier, Ttl};
use crate::worker::{self, Context};

const ALLOW: &str = "GET, HEAD, PUT, DELETE";

/// One response being built.
struct Reply<'a> {
    out: &'a mut Vec<u8>,
    head_only: bool,
    close: bool,
}

impl Reply<'_> {
    fn send(&mut self, code: u16, headers: &[(&str, &str)], body: &[u8]) {
        http::response(self.out, code, reason(code), headers, body, self.head_only, self.close);
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        507 => "Insufficient Storage",
        _ => "Error",
    }
}

/// Runs one HTTP request and appends its response to `out`. Returns whether the connection stays open.
pub fn execute(
    ctx: &Context,
    counters: &WorkerCounters,
    head: &[u8],
    body: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let Some(head) = http::head(head) else {
        counters.error();
        http::response(out, 400, "Bad Request", &[], b"Bad Request", false, true);
        return false;
    };
    let mut reply = Reply { out, head_only: head.method == "HEAD", close: !head.keep_alive };
    route(ctx, counters, &head, body, &mut reply);
    !reply.close
}

fn route(ctx: &Context, counters: &WorkerCounters, head: &Head<'_>, body: &[u8], reply: &mut Reply<'_>) {
    let raw = head.path;
    if raw == "/stats" {
        return stats(ctx, head, reply);
    }
    if raw == "/metrics" {
        return metrics(ctx, head, reply);
    }
    let rest = raw.strip_prefix("/api").filter(|r| r.is_empty() || r.starts_with('/')).unwrap_or(raw);
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    let reserved = rest == "/banks" || rest == "/bank" || rest.starts_with("/bank/") || rest != raw;
    if reserved {
        let decoded: Option<Vec<Cow<'_, str>>> =
            segments.iter().map(|s| percent_decode_str(s).decode_utf8().ok()).collect();
        return match decoded {
            Some(segments) => rest_api(ctx, counters, head, body, &segments, reply),
            None => bad(counters, reply, "the path is not UTF-8"),
        };
    }
    file_api(ctx, counters, head, body, reply);
}

fn bad(counters: &WorkerCounters, reply: &mut Reply<'_>, why: &str) {
    counters.error();
    reply.send(400, &[], why.as_bytes());
}

/// CacheFS's API: `PUT`, `GET`, `HEAD`, `DELETE` of `/<key>` in the HTTP bank, bodies as bytes.
fn file_api(ctx: &Context, counters: &WorkerCounters, head: &Head<'_>, body: &[u8], reply: &mut Reply<'_>) {
    let Ok(key) = percent_decode_str(&head.path[1.min(head.path.len())..]).decode_utf8() else {
        return bad(counters, reply, "the path is not UTF-8");
    };
    if key.is_empty() {
        return bad(counters, reply, "");
    }
    if key.len() > ctx.limits.max_key_bytes {
        counters.error();
        let why = format!("Key too long: {} bytes, max_key_bytes is {}", key.len(), ctx.limits.max_key_bytes);
        return reply.send(414, &[], why.as_bytes());
    }
    let (store, bank, now) = (&*ctx.store, ctx.http_bank.as_str(), crate::store::now_ms());
    match head.method {
        "GET" | "HEAD" => {
            counters.op(bankcache_proto::OpKind::Get);
            // The response is written while the value is at hand (in RAM under the bank's lock, or in the
            // checked copy of its record), so its bytes are copied once, into the output.
            let found = store.get(bank, key.as_bytes(), now, false, |value, served| {
                let position = position(served);
                let tier = if served.tier == Tier::Memory { "MEMC" } else { "DISK" };
                let mut headers = vec![("X-Cache", tier)];
                if let Some(p) = &position {
                    headers.push(("X-Position", p));
                }
                if served.flags & FLAG_BYTES == 0 {
                    headers.push(("Content-Type", "application/json"));
                }
                reply.send(200, &headers, value);
            });
            match found {
                Ok(Lookup::Hit(_)) => counters.hit(),
                Ok(_) => {
                    counters.miss();
                    reply.send(404, &[], format!("{key} does not exist").as_bytes());
                }
                Err(e) => storage_error(counters, reply, &e),
            }
        }
        "PUT" => {
            counters.op(bankcache_proto::OpKind::Put);
            if body.is_empty() {
                return bad(counters, reply, "");
            }
            match store.put(bank, key.as_bytes(), body, FLAG_BYTES, Ttl::Forever, now) {
                Ok(location) => {
                    let position = location.map(|at| format!("{},{},{}", at.volume, at.offset, at.len));
                    let headers: Vec<(&str, &str)> =
                        position.iter().map(|p| ("X-Position", p.as_str())).collect();
                    reply.send(200, &headers, b"ok");
                }
                Err(e) => storage_error(counters, reply, &e),
            }
        }
        "DELETE" => {
            counters.op(bankcache_proto::OpKind::Delete);
            match store.delete(bank, key.as_bytes(), now) {
                Ok(Lookup::Hit(())) => reply.send(200, &[], b"ok"),
                Ok(_) => {
                    counters.error();
                    reply.send(404, &[], format!("key {key} does not exist").as_bytes());
                }
                Err(e) => storage_error(counters, reply, &e),
            }
        }
        _ => {
            counters.error();
            reply.send(405, &[("Allow", ALLOW)], b"Method Not Allowed");
        }
    }
}

fn position(served: &Served) -> Option<String> {
    served.location.map(|at| format!("{},{},{}", at.volume, at.offset, at.len))
}

fn storage_error(counters: &WorkerCounters, reply: &mut Reply<'_>, e: &crate::store::StoreError) {
    counters.error();
    reply.send(507, &[], e.to_string().as_bytes());
}

fn stats(ctx: &Context, head: &Head<'_>, reply: &mut Reply<'_>) {
    if head.method != "GET" && head.method != "HEAD" {
        return reply.send(405, &[("Allow", "GET, HEAD")], b"Method Not Allowed");
    }
    let mut body = Vec::new();
    worker::stats(ctx, &mut body);
    reply.send(200, &[("Content-Type", "application/json")], &body);
}

fn metrics(ctx: &Context, head: &Head<'_>, reply: &mut Reply<'_>) {
    if head.method != "GET" && head.method != "HEAD" {
        return reply.send(405, &[("Allow", "GET, HEAD")], b"Method Not Allowed");
    }
    let body = prometheus(ctx);
    reply.send(200, &[("Content-Type", "text/plain; version=0.0.4")], body.as_bytes());
}

/// The counters in Prometheus's text format.
fn prometheus(ctx: &Context) -> String {
    use std::fmt::Write as _;
    let snapshot = worker::snapshot(ctx);
    let get = |name: &str| snapshot.fields.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v);
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP bankcache_{name} {help}\n# TYPE bankcache_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "bankcache_{name}{labels} {value}");
        }
    };
    family("uptime_seconds", "gauge", "Seconds since the server started.", &[("", get("uptime_s"))]);
    family("connections", "gauge", "Open client connections.", &[("", get("connections_current"))]);
    let accepted = [("", get("connections_total"))];
    family("connections_accepted_total", "counter", "Connections accepted.", &accepted);
    let refused = [("", get("connections_rejected"))];
    family("connections_refused_total", "counter", "Connections refused over max_connections.", &refused);
    let bytes = [("{direction=\"in\"}", get("bytes_in")), ("{direction=\"out\"}", get("bytes_out"))];
    family("network_bytes_total", "counter", "Bytes read from and written to clients.", &bytes);
    let inline = [("", get("requests_inline"))];
    family("requests_inline_total", "counter", "Requests the reactor ran itself.", &inline);
    let ops: Vec<(String, u64)> = bankcache_proto::OpKind::ALL
        .iter()
        .map(|k| (format!("{{op=\"{}\"}}", k.name()), get(&format!("ops_{}", k.name().replace('.', "_")))))
        .collect();
    let ops: Vec<(&str, u64)> = ops.iter().map(|(l, v)| (l.as_str(), *v)).collect();
    family("ops_total", "counter", "Ops executed, by kind.", &ops);
    family("errors_total", "counter", "Error replies.", &[("", get("errors"))]);
    family("hits_total", "counter", "Reads that found their key.", &[("", get("hits"))]);
    family("misses_total", "counter", "Reads that did not find their key.", &[("", get("misses"))]);
    let tiers = [("{tier=\"memory\"}", get("reads_memory")), ("{tier=\"disk\"}", get("reads_disk"))];
    family("reads_total", "counter", "Reads served, by tier.", &tiers);
    family("evictions_total", "counter", "Values dropped from RAM.", &[("", get("evictions"))]);
    let expired = [("{how=\"lazy\"}", get("expired_lazy")), ("{how=\"sweep\"}", get("expired_sweep"))];
    family("expired_total", "counter", "Expired entries removed.", &expired);
    family("keys", "gauge", "Entries held.", &[("", get("keys"))]);
    family("banks", "gauge", "Banks.", &[("", get("banks"))]);
    family("memory_bytes", "gauge", "Bytes of values held in RAM.", &[("", get("memory_bytes"))]);
    family(
        "stored_bytes",
        "gauge",
        "Bytes of keys and values held, in RAM or on disk.",
        &[("", get("value_bytes"))],
    );
    family("volume_reuses_total", "counter", "Volumes reused.", &[("", get("volume_reuses"))]);
    family("crc_failures_total", "counter", "Damaged records found.", &[("", get("crc_failures"))]);
    let (buckets, sum_us) = ctx.stats.latency();
    let _ = writeln!(out, "# HELP bankcache_request_duration_seconds Time to run one request in a worker.");
    let _ = writeln!(out, "# TYPE bankcache_request_duration_seconds histogram");
    let mut cumulative = 0;
    for (i, count) in buckets.iter().enumerate() {
        cumulative += count;
        let le = crate::stats::LATENCY_BUCKETS_US
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
        let _ = writeln!(out, "bankcache_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "bankcache_request_duration_seconds_sum {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "bankcache_request_duration_seconds_count {cumulative}");
    out
}

/// The original CacheServer's REST API, translated into JSON ops.
fn rest_api(
    ctx: &Context,
    counters: &WorkerCounters,
    head: &Head<'_>,
    body: &[u8],
    segments: &[Cow<'_, str>],
    reply: &mut Reply<'_>,
) {
    let query: Vec<(Cow<'_, str>, Cow<'_, str>)> = form_urlencoded::parse(head.query.as_bytes()).collect();
    let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref());
    // The original's README spelled the parameter `op`; its code read `operation`. Both work.
    let operation = param("operation").or_else(|| param("op"));
    let segments: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
    let op = match (head.method, segments.as_slice()) {
        ("GET" | "HEAD", [""]) => return reply.send(200, &[], b"Cache system API"),
        ("GET" | "HEAD", ["banks"]) => json!({"op": "bank.list"}),
        ("GET" | "HEAD", ["bank", bank, "entries"]) => json!({"op": "bank.keys", "bank": bank}),
        ("GET" | "HEAD", ["bank", bank, "entry", key]) => json!({"op": "get", "bank": bank, "key": key}),
        ("DELETE", ["bank", bank, "entry", key]) => json!({"op": "delete", "bank": bank, "key": key}),
        ("POST", ["bank", bank, "entry", key]) => {
            // As the original: the body, as UTF-8 text, is stored as a JSON string.
            let Ok(text) = std::str::from_utf8(body) else {
                return bad(counters, reply, "the body is not UTF-8");
            };
            let mut op = json!({"op": "put", "bank": bank, "key": key, "value": text});
            if let Some(lifetime) = param("lifetime") {
                match lifetime.parse::<f64>() {
                    Ok(l) if l.is_finite() => op["lifetime"] = json!(l),
                    _ => return bad(counters, reply, "lifetime must be a number"),
                }
            }
            op
        }
        ("PUT", ["bank", bank, "entry", key]) => match operation {
            Some("touch") => json!({"op": "touch", "bank": bank, "key": key}),
            Some("incr") => match param("value") {
                Some(v) => json!({"op": "incr", "bank": bank, "key": key, "value": v}),
                None => return bad(counters, reply, "incr needs a value"),
            },
            _ => return bad(counters, reply, "operation must be touch or incr"),
        },
        ("PUT", ["bank", bank]) => match operation {
            Some("reset") => json!({"op": "bank.reset", "bank": bank}),
            _ => return bad(counters, reply, "operation must be reset"),
        },
        (_, ["banks"] | ["bank", _, "entries"] | ["bank", _, "entry", _] | ["bank", _]) => {
            counters.error();
            return reply.send(405, &[("Allow", "GET, POST, PUT, DELETE")], b"Method Not Allowed");
        }
        _ => {
            counters.error();
            return reply.send(404, &[], b"Not Found");
        }
    };
    let request = op.to_string();
    let mut body = Vec::new();
    worker::execute(ctx, counters, request.as_bytes(), &mut body);
    let code = if body.starts_with(b"{\"status\": \"ok\"") {
        200
    } else if is_missing_key(&body) {
        404
    } else {
        400
    };
    reply.send(code, &[("Content-Type", "application/json")], &body);
}

/// True for the `Key <k> doesn't exist` error envelope.
fn is_missing_key(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    text.starts_with("{\"status\": \"error\", \"message\": \"Key ")
        && text.trim_end().ends_with(" doesn't exist\"}")
}
