//! The HTTP front's routes, run by the workers: CacheFS's file API on `/<key>`, the original CacheServer's
//! REST API on `/bank/…` and `/banks` (also under `/api`), `/stats` and `/metrics`.
//!
//! Every route that runs an op builds the typed [`Op`] and runs it through [`cmd::execute`], as the JSON
//! port does; the status comes from the typed outcome. The REST API answers with the JSON port's envelope
//! as its body; the file API answers with the value's bytes and says where it lies (`X-Position`) and which
//! tier served it (`X-Cache`).
//!
//! With an `auth_token`, every request must carry `Authorization: Bearer <token>` (`/metrics` too, unless
//! `metrics_public`), checked before anything is routed; a request without it gets `401` with
//! `WWW-Authenticate`, and one with a wrong token gets the same, closes the connection and counts as a
//! failed attempt (see [`crate::auth`]).

use std::borrow::Cow;
use std::cell::Cell;

use bankcache_proto::number::python_float;
use bankcache_proto::op::{scan_count, scan_cursor, SCAN_COUNT_DEFAULT};
use bankcache_proto::{Limits, Op, RequestError, Value};
use percent_encoding::percent_decode_str;

use super::codec::{self, Head};
use super::metrics;
use crate::auth::Auth;
use crate::cmd::{self, Context, Outcome};
use crate::json::{self, Gate};
use crate::stats::WorkerCounters;
use crate::store::{Location, Tier};

const ALLOW: &str = "GET, HEAD, PUT, DELETE";

/// What a request runs against.
pub struct Env<'a> {
    /// The store and the counters.
    pub ctx: &'a Context,
    /// Size limits for keys and values, as on the JSON port.
    pub limits: &'a Limits,
    /// The bank the file API stores into.
    pub bank: &'a str,
    /// The running thread's counters.
    pub counters: &'a WorkerCounters,
    /// The time, Unix ms.
    pub now: u64,
    /// Which ops may run here (see [`Gate`]).
    pub gate: Gate,
    /// `metrics_public`: `/metrics` is served without the token.
    pub metrics_public: bool,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Answered; the connection stays open.
    Open,
    /// Answered; the connection closes after the response.
    Close,
    /// Not run: the gate keeps its op from running here. Nothing was written or counted.
    Declined,
}

/// One response being built.
struct Reply<'a> {
    out: &'a mut Vec<u8>,
    head_only: bool,
    close: bool,
}

impl Reply<'_> {
    fn send(&mut self, code: u16, headers: &[(&str, &str)], body: &[u8]) {
        codec::response(self.out, code, reason(code), headers, body, self.head_only, self.close);
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        507 => "Insufficient Storage",
        _ => "Error",
    }
}

/// Runs one HTTP request of a connection standing at `auth` and appends its response to `out`. A request
/// with the right bearer token opens the connection (so that the reactor no longer holds its requests);
/// one with a wrong token locks it, counts a failure, and closes it.
pub fn execute(env: &Env<'_>, raw_head: &[u8], body: &[u8], auth: &mut Auth, out: &mut Vec<u8>) -> Handled {
    let Some(head) = codec::head(raw_head) else {
        env.counters.error();
        codec::response(out, 400, "Bad Request", &[], b"Bad Request", false, true);
        return Handled::Close;
    };
    let mut reply = Reply { out, head_only: head.method == "HEAD", close: !head.keep_alive };
    if let Some(token) = &env.ctx.auth_token {
        let public = env.metrics_public && head.path == "/metrics";
        if !public && !authorized(env, token, raw_head, auth, &mut reply) {
            return if reply.close { Handled::Close } else { Handled::Open };
        }
    }
    let request = Request { env, head: &head, body, declined: Cell::new(false) };
    request.route(&mut reply);
    match (request.declined.get(), reply.close) {
        (true, _) => Handled::Declined,
        (false, true) => Handled::Close,
        (false, false) => Handled::Open,
    }
}

/// The `WWW-Authenticate` challenge of a request without the token (RFC 6750).
const CHALLENGE: &str = "Bearer realm=\"bankcache\"";
/// The challenge of a request with a wrong token.
const CHALLENGE_INVALID: &str = "Bearer realm=\"bankcache\", error=\"invalid_token\"";

/// Checks the request's bearer token against `token`, answering `401` when it is not the token: without
/// one, the connection stays open (a client may learn the scheme from the challenge, as curl and browsers
/// do); with a wrong one, the failure is counted on the connection's standing and the connection closes.
fn authorized(
    env: &Env<'_>,
    token: &crate::auth::AuthToken,
    raw_head: &[u8],
    auth: &mut Auth,
    reply: &mut Reply<'_>,
) -> bool {
    match bearer(raw_head) {
        Some(given) if token.matches(given) => {
            *auth = Auth::Open;
            true
        }
        Some(_) => {
            auth.fail();
            env.counters.error();
            reply.close = true;
            let body = b"Invalid token";
            reply.send(401, &[("WWW-Authenticate", CHALLENGE_INVALID)], body);
            false
        }
        None => {
            env.counters.error();
            let body = b"Authentication required: send Authorization: Bearer <token>";
            reply.send(401, &[("WWW-Authenticate", CHALLENGE)], body);
            false
        }
    }
}

/// The token of the request's `Authorization: Bearer <token>` header, if it has one (the scheme is
/// case-insensitive; another scheme is no token). The head is read again here rather than in `codec`,
/// and only when a token is set, so that a server without one pays nothing for it.
fn bearer(raw_head: &[u8]) -> Option<&[u8]> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    request.parse(raw_head).ok()?;
    let value = request.headers.iter().find(|h| h.name.eq_ignore_ascii_case("authorization"))?.value;
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    scheme.eq_ignore_ascii_case(b"bearer").then(|| rest.trim_ascii())
}

/// One request and what it runs against.
struct Request<'r> {
    env: &'r Env<'r>,
    head: &'r Head<'r>,
    body: &'r [u8],
    /// The gate kept the request's op from running: nothing was written (running an op is always the
    /// last thing a route does).
    declined: Cell<bool>,
}

impl Request<'_> {
    fn route(&self, reply: &mut Reply<'_>) {
        let raw = self.head.path;
        if raw == "/stats" {
            return self.stats(reply);
        }
        if raw == "/metrics" {
            return self.metrics(reply);
        }
        let rest = raw.strip_prefix("/api").filter(|r| r.is_empty() || r.starts_with('/')).unwrap_or(raw);
        let reserved = rest == "/banks" || rest == "/bank" || rest.starts_with("/bank/") || rest != raw;
        if !reserved {
            return self.file_api(reply);
        }
        let decoded: Option<Vec<Cow<'_, str>>> = rest
            .trim_start_matches('/')
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8().ok())
            .collect();
        match decoded {
            Some(segments) => self.rest_api(&segments, reply),
            None => self.bad(reply, "the path is not UTF-8"),
        }
    }

    fn bad(&self, reply: &mut Reply<'_>, why: &str) {
        self.env.counters.error();
        reply.send(400, &[], why.as_bytes());
    }

    /// Runs `op` if the gate lets it run here, else notes that the request was declined.
    fn run(&self, op: &Op<'_>, respond: impl FnOnce(Outcome<'_>)) {
        let ran = match self.env.gate.admits(op.kind()) {
            Some(access) => cmd::execute(self.env.ctx, self.env.counters, op, self.env.now, access, respond),
            None => Err(cmd::Busy),
        };
        self.declined.set(ran.is_err());
    }

    /// CacheFS's API: `PUT`, `GET`, `HEAD`, `DELETE` of `/<key>` in the HTTP bank, bodies as bytes.
    fn file_api(&self, reply: &mut Reply<'_>) {
        let path = self.head.path;
        let Ok(key) = percent_decode_str(&path[1.min(path.len())..]).decode_utf8() else {
            return self.bad(reply, "the path is not UTF-8");
        };
        if key.is_empty() {
            return self.bad(reply, "");
        }
        let max = self.env.limits.max_key_bytes;
        if key.len() > max {
            self.env.counters.error();
            let why = format!("Key too long: {} bytes, max_key_bytes is {max}", key.len());
            return reply.send(414, &[], why.as_bytes());
        }
        let bank = Cow::Borrowed(self.env.bank);
        match self.head.method {
            "GET" | "HEAD" => self.run(&Op::Get { bank, key: key.clone() }, |outcome| match outcome {
                Outcome::Value { value, served } => {
                    let position = served.location.map(position);
                    let tier = if served.tier == Tier::Memory { "MEMC" } else { "DISK" };
                    let mut headers = vec![("X-Cache", tier)];
                    if let Some(p) = &position {
                        headers.push(("X-Position", p));
                    }
                    if !served.is_bytes() {
                        headers.push(("Content-Type", "application/json"));
                    }
                    reply.send(200, &headers, value);
                }
                Outcome::Missing { key } => reply.send(404, &[], format!("{key} does not exist").as_bytes()),
                other => storage_error(reply, &other),
            }),
            "PUT" => {
                if self.body.is_empty() {
                    return self.bad(reply, "");
                }
                let value = Value::Bytes(Cow::Borrowed(self.body));
                self.run(&Op::Put { bank, key, value, lifetime: None }, |outcome| match outcome {
                    Outcome::Stored { location } => {
                        let position = location.map(position);
                        let headers: Vec<(&str, &str)> =
                            position.iter().map(|p| ("X-Position", p.as_str())).collect();
                        reply.send(200, &headers, b"ok");
                    }
                    other => storage_error(reply, &other),
                })
            }
            "DELETE" => self.run(&Op::Delete { bank, key }, |outcome| match outcome {
                Outcome::Done => reply.send(200, &[], b"ok"),
                Outcome::Missing { key } => {
                    reply.send(404, &[], format!("key {key} does not exist").as_bytes())
                }
                other => storage_error(reply, &other),
            }),
            _ => {
                self.env.counters.error();
                reply.send(405, &[("Allow", ALLOW)], b"Method Not Allowed");
            }
        }
    }

    fn stats(&self, reply: &mut Reply<'_>) {
        if self.head.method != "GET" && self.head.method != "HEAD" {
            return reply.send(405, &[("Allow", "GET, HEAD")], b"Method Not Allowed");
        }
        let mut body = Vec::new();
        json::encode(&Outcome::Stats(&cmd::snapshot(self.env.ctx)), &mut body);
        reply.send(200, &[("Content-Type", "application/json")], &body);
    }

    fn metrics(&self, reply: &mut Reply<'_>) {
        if self.head.method != "GET" && self.head.method != "HEAD" {
            return reply.send(405, &[("Allow", "GET, HEAD")], b"Method Not Allowed");
        }
        let body = metrics::prometheus(&cmd::snapshot(self.env.ctx), &self.env.ctx.stats.latency());
        reply.send(200, &[("Content-Type", "text/plain; version=0.0.4")], body.as_bytes());
    }

    /// The original CacheServer's REST API: each route is an op, answered with the JSON envelope.
    fn rest_api(&self, segments: &[Cow<'_, str>], reply: &mut Reply<'_>) {
        let query: Vec<(Cow<'_, str>, Cow<'_, str>)> =
            form_urlencoded::parse(self.head.query.as_bytes()).collect();
        let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref());
        // The original's README spelled the parameter `op`; its code read `operation`. Both work.
        let operation = param("operation").or_else(|| param("op"));
        let segments: Vec<&str> = segments.iter().map(|s| s.as_ref()).collect();
        let name = |s: &str| Cow::Owned(s.to_owned());
        // A field the route could not read, refused after the names are checked, as the JSON port does.
        let mut bad_field = None;
        let op = match (self.head.method, segments.as_slice()) {
            ("GET" | "HEAD", [""]) => return reply.send(200, &[], b"Cache system API"),
            ("GET" | "HEAD", ["banks"]) => Op::BankList,
            ("GET" | "HEAD", ["bank", bank, "entries"]) => Op::BankKeys { bank: name(bank) },
            ("GET" | "HEAD", ["bank", bank, "scan"]) => {
                // The JSON port's fields and defaults, read by the same functions and refused in the same
                // words, after the bank name as there.
                let cursor = param("cursor").map_or(Ok(0), scan_cursor);
                let count = param("count").map_or(Ok(SCAN_COUNT_DEFAULT), scan_count);
                bad_field = cursor.as_ref().err().or(count.as_ref().err()).cloned();
                let prefix = name(param("prefix").unwrap_or_default());
                let (cursor, count) = (cursor.unwrap_or(0), count.unwrap_or(SCAN_COUNT_DEFAULT));
                Op::BankScan { bank: name(bank), cursor, prefix, count }
            }
            ("GET" | "HEAD", ["bank", bank, "entry", key]) => Op::Get { bank: name(bank), key: name(key) },
            ("DELETE", ["bank", bank, "entry", key]) => Op::Delete { bank: name(bank), key: name(key) },
            ("POST", ["bank", bank, "entry", key]) => {
                // As the original: the body, as UTF-8 text, is stored as a JSON string.
                let Ok(text) = std::str::from_utf8(self.body) else {
                    return self.bad(reply, "the body is not UTF-8");
                };
                let lifetime = match param("lifetime").map(str::parse::<f64>) {
                    None => None,
                    Some(Ok(l)) if l.is_finite() => Some(l),
                    Some(_) => return self.bad(reply, "lifetime must be a number"),
                };
                let value = Value::Json(Cow::Owned(serde_json::to_vec(text).unwrap_or_default()));
                Op::Put { bank: name(bank), key: name(key), value, lifetime }
            }
            ("PUT", ["bank", bank, "entry", key]) => match operation {
                Some("touch") => Op::Touch { bank: name(bank), key: name(key) },
                Some("incr") => match param("value") {
                    Some(v) => {
                        // The JSON port checks the names before the delta; so does this route.
                        let delta = python_float(v).filter(|d| d.is_finite());
                        bad_field = delta.is_none().then_some(RequestError::BadDelta);
                        Op::Incr { bank: name(bank), key: name(key), delta: delta.unwrap_or(0.0) }
                    }
                    None => return self.bad(reply, "incr needs a value"),
                },
                _ => return self.bad(reply, "operation must be touch or incr"),
            },
            ("PUT", ["bank", bank]) => match operation {
                Some("reset") => Op::BankReset { bank: name(bank) },
                _ => return self.bad(reply, "operation must be reset"),
            },
            (_, ["banks"] | ["bank", _, "entries" | "scan"] | ["bank", _, "entry", _] | ["bank", _]) => {
                self.env.counters.error();
                return reply.send(405, &[("Allow", "GET, POST, PUT, DELETE")], b"Method Not Allowed");
            }
            _ => {
                self.env.counters.error();
                return reply.send(404, &[], b"Not Found");
            }
        };
        if let Err(why) = op.check(self.env.limits).and(bad_field.map_or(Ok(()), Err)) {
            return self.refuse(why, reply);
        }
        self.run(&op, |outcome| envelope(reply, &outcome));
    }

    /// Answers a REST request refused before it ran, with the JSON port's words.
    fn refuse(&self, why: RequestError, reply: &mut Reply<'_>) {
        cmd::refuse(self.env.counters, why, |outcome| envelope(reply, &outcome));
    }
}

/// The REST answer: the JSON envelope, with the status the outcome calls for.
fn envelope(reply: &mut Reply<'_>, outcome: &Outcome<'_>) {
    let code = match outcome {
        Outcome::Missing { .. } => 404,
        Outcome::Failed(_) => 400,
        _ => 200,
    };
    let mut body = Vec::new();
    json::encode(outcome, &mut body);
    reply.send(code, &[("Content-Type", "application/json")], &body);
}

/// `X-Position`: volume, offset and size of a record.
fn position(at: Location) -> String {
    format!("{},{},{}", at.volume, at.offset, at.len)
}

/// The file API's answer to an outcome other than the expected one: only a store error can be that.
fn storage_error(reply: &mut Reply<'_>, outcome: &Outcome<'_>) {
    let message = match outcome {
        Outcome::Failed(failure) => failure.to_string(),
        other => format!("unexpected outcome {other:?}"),
    };
    reply.send(507, &[], message.as_bytes());
}
