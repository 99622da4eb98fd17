//! The HTTP front's routes, run by the workers: CacheFS's file API on `/<key>`, the original CacheServer's
//! REST API on `/bank/…` and `/banks` (also under `/api`), `/stats`, `/stats/banks` and `/stats/volumes` (for
//! the admin page), `/metrics`, and the admin page's files under `/ui/` (see [`super::ui`]).
//!
//! Every route that runs an op builds the typed [`Op`] and runs it through [`cmd::execute`], as the JSON
//! port does; the status comes from the typed outcome. The REST API answers with the JSON port's envelope
//! as its body; the file API answers with the value's bytes and says where it lies (`X-Position`) and which
//! tier served it (`X-Cache`).
//!
//! With an `auth_token`, every request but those of the admin page's files must carry
//! `Authorization: Bearer <token>` (`/metrics` too, unless `metrics_public`), checked before anything is
//! routed; a request without it gets `401` with `WWW-Authenticate`, and one with a wrong token gets the
//! same, closes the connection and counts as a failed attempt (see [`crate::auth`]).

use std::borrow::Cow;
use std::cell::Cell;

use bankcache_proto::number::python_float;
use bankcache_proto::op::{lifetime_secs, scan_count, scan_cursor, SCAN_COUNT_DEFAULT};
use bankcache_proto::reply::{self, Reply};
use bankcache_proto::{Limits, Op, RequestError, Value};
use percent_encoding::percent_decode_str;

use super::codec::{self, Head, Once};
use super::{metrics, ui};
use crate::auth::Auth;
use crate::cmd::{self, Context, Outcome};
use crate::json::{self, Gate};
use crate::stats::WorkerCounters;
use crate::store::{FileSlice, Keep, Location, Tier};

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
    Open(Sent),
    /// Answered; the connection closes after the response.
    Close(Sent),
    /// Not run: the gate keeps its op from running here. Nothing was written or counted.
    Declined,
}

/// What a response said, for the access log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The status.
    pub status: u16,
    /// Bytes of body written (none for a HEAD).
    pub body_bytes: usize,
}

/// A body sent from a volume file rather than from the output bytes: it goes out after the first `at`
/// bytes of the output (the reactor sends it with `sendfile`).
#[derive(Debug)]
pub struct Segment {
    /// Output bytes before it.
    pub at: usize,
    /// The checked value, pinned in its volume.
    pub slice: FileSlice,
}

/// A value read from disk at least this large is sent from its file: below it, the copy costs less than
/// the system call it saves.
pub const SEND_FILE_MIN: usize = 16 * 1024;

/// One response being built.
struct Response<'a> {
    out: &'a mut Vec<u8>,
    /// Bodies that follow parts of `out`, sent from files.
    segments: &'a mut Vec<Segment>,
    head_only: bool,
    close: bool,
    sent: Sent,
}

impl Response<'_> {
    fn send(&mut self, code: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.note(code, body.len());
        codec::response(self.out, code, reason(code), headers, body, self.head_only, self.close);
    }

    /// As [`Response::send`], with the body sent from `file` (the same bytes, checked) when there is one
    /// and the body is large enough to be worth it.
    fn send_value(&mut self, code: u16, headers: &[(&str, &str)], body: &[u8], file: Option<FileSlice>) {
        match file {
            Some(slice) if !self.head_only && slice.len() >= SEND_FILE_MIN && slice.len() == body.len() => {
                self.note(code, body.len());
                codec::response_head(self.out, code, reason(code), headers, body.len(), self.close);
                self.segments.push(Segment { at: self.out.len(), slice });
            }
            _ => self.send(code, headers, body),
        }
    }

    /// An error of the file API or of the front: a line of plain text saying why.
    fn text_error(&mut self, code: u16, headers: &[(&str, &str)], why: &str) {
        let body_bytes =
            codec::text_error(self.out, code, reason(code), headers, why, self.head_only, self.close);
        self.note(code, body_bytes);
    }

    fn note(&mut self, status: u16, body_bytes: usize) {
        self.sent = Sent { status, body_bytes: if self.head_only { 0 } else { body_bytes } };
    }

    /// An error of the REST API: the JSON port's error envelope, as every other REST answer.
    fn rest_error(&mut self, code: u16, headers: &[(&str, &str)], why: &str) {
        let mut body = Vec::new();
        Reply::Error(why).encode(&mut body);
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.send(code, &all, &body);
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        301 => "Moved Permanently",
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
///
/// A value read from disk may be answered as its head in `out` and its body in `segments`, to be sent from
/// its volume file.
pub fn execute(
    env: &Env<'_>,
    raw_head: &[u8],
    body: &[u8],
    auth: &mut Auth,
    out: &mut Vec<u8>,
    segments: &mut Vec<Segment>,
) -> Handled {
    let Some(head) = codec::head(raw_head) else {
        env.counters.error();
        let mut reply = Response { out, segments, head_only: false, close: true, sent: Sent::default() };
        reply.text_error(400, &[], "Bad Request: the request head does not parse");
        return Handled::Close(reply.sent);
    };
    let head_only = head.method == "HEAD";
    let mut reply = Response { out, segments, head_only, close: !head.keep_alive, sent: Sent::default() };
    if let Some(token) = &env.ctx.auth_token {
        // The admin page's files hold no data: the page asks for the token and sends it on every request.
        let public = (env.metrics_public && head.path == "/metrics") || ui::is_ui(head.path);
        if !public && !authorized(env, token, head.authorization, auth, &mut reply) {
            return if reply.close { Handled::Close(reply.sent) } else { Handled::Open(reply.sent) };
        }
    }
    let request = Request { env, head: &head, body, declined: Cell::new(false) };
    request.route(&mut reply);
    match (request.declined.get(), reply.close) {
        (true, _) => Handled::Declined,
        (false, true) => Handled::Close(reply.sent),
        (false, false) => Handled::Open(reply.sent),
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
    authorization: Once<'_>,
    auth: &mut Auth,
    reply: &mut Response<'_>,
) -> bool {
    match bearer(authorization) {
        Some(given) if token.matches(given) => {
            *auth = Auth::Open;
            true
        }
        Some(_) => {
            auth.fail();
            env.counters.error();
            reply.close = true;
            reply.text_error(401, &[("WWW-Authenticate", CHALLENGE_INVALID)], "Invalid token");
            false
        }
        None => {
            env.counters.error();
            let why = "Authentication required: send Authorization: Bearer <token>";
            reply.text_error(401, &[("WWW-Authenticate", CHALLENGE)], why);
            false
        }
    }
}

/// A final answer to a request that asked for `100 Continue` without the right bearer token.
pub struct ContinueRefusal {
    /// The `401` response; the connection closes after it.
    pub response: Vec<u8>,
    /// The request carried a token, and it was wrong: a failed attempt, to count.
    pub wrong_token: bool,
}

/// Checks the bearer token of a request that waits for `100 Continue` (its `head`, perhaps followed by body
/// bytes), before the client is told to send the body: `None` when it carries `token` (or the head cannot
/// be read, which the request's own run then answers), else the `401` to send instead, as a worker would
/// answer it (with `Connection: close`).
pub fn refuse_continue(token: &crate::auth::AuthToken, head: &[u8]) -> Option<ContinueRefusal> {
    let head = codec::head(head)?;
    let head_only = head.method == "HEAD";
    let (challenge, why, wrong_token) = match bearer(head.authorization) {
        Some(given) if token.matches(given) => return None,
        Some(_) => (CHALLENGE_INVALID, "Invalid token", true),
        None => (CHALLENGE, "Authentication required: send Authorization: Bearer <token>", false),
    };
    let mut response = Vec::new();
    codec::text_error(
        &mut response,
        401,
        "Unauthorized",
        &[("WWW-Authenticate", challenge)],
        why,
        head_only,
        true,
    );
    Some(ContinueRefusal { response, wrong_token })
}

/// The token of the request's `Authorization: Bearer <token>` header, if it has one (the scheme is
/// case-insensitive; another scheme is no token, and so are two `Authorization` lines).
fn bearer(authorization: Once<'_>) -> Option<&[u8]> {
    let Once::Value(value) = authorization else { return None };
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
    fn route(&self, reply: &mut Response<'_>) {
        let raw = self.head.path;
        if raw == "/stats" {
            return self.stats(reply);
        }
        if raw == "/metrics" {
            return self.metrics(reply);
        }
        if ui::is_ui(raw) {
            return self.ui(reply);
        }
        if let Some(what) = raw.strip_prefix("/stats/") {
            return self.stats_of(what, reply);
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
            None => self.rest_error(reply, 400, "the path is not UTF-8 once percent-decoded"),
        }
    }

    /// Counts and answers an error of the file API (plain text).
    fn file_error(&self, reply: &mut Response<'_>, code: u16, headers: &[(&str, &str)], why: &str) {
        self.env.counters.error();
        reply.text_error(code, headers, why);
    }

    /// Counts and answers an error of the REST API (the JSON envelope).
    fn rest_error(&self, reply: &mut Response<'_>, code: u16, why: &str) {
        self.env.counters.error();
        reply.rest_error(code, &[], why);
    }

    /// Runs `op` if the gate lets it run here, else notes that the request was declined. A put keeps its
    /// value in RAM (the REST API is the JSON port's); the file API's puts go through [`Self::run_keeping`].
    fn run(&self, op: &Op<'_>, respond: impl FnOnce(Outcome<'_>)) {
        self.run_keeping(op, Keep::Memory, respond)
    }

    /// [`Self::run`], with a put keeping its value in RAM as `keep` says.
    fn run_keeping(&self, op: &Op<'_>, keep: Keep, respond: impl FnOnce(Outcome<'_>)) {
        let (ctx, counters, now) = (self.env.ctx, self.env.counters, self.env.now);
        let ran = match self.env.gate.admits(op.kind()) {
            Some(access) => cmd::execute(ctx, counters, op, now, access, keep, respond),
            None => Err(cmd::Busy),
        };
        self.declined.set(ran.is_err());
    }

    /// CacheFS's API: `PUT`, `GET`, `HEAD`, `DELETE` of `/<key>` in the HTTP bank, bodies as bytes.
    fn file_api(&self, reply: &mut Response<'_>) {
        let path = self.head.path;
        let Ok(key) = percent_decode_str(&path[1.min(path.len())..]).decode_utf8() else {
            return self.file_error(
                reply,
                400,
                &[],
                "Bad Request: the path is not UTF-8 once percent-decoded",
            );
        };
        if key.is_empty() {
            return match self.head.method {
                "GET" | "HEAD" => reply.send(200, &[("Content-Type", "text/plain; charset=utf-8")], INDEX),
                _ => self.file_error(
                    reply,
                    400,
                    &[],
                    "Bad Request: no key; the path is the key, as in PUT /<key>",
                ),
            };
        }
        let max = self.env.limits.max_key_bytes;
        if key.len() > max {
            let why = format!("Key too long: {} bytes, max_key_bytes is {max}", key.len());
            return self.file_error(reply, 414, &[], &why);
        }
        let bank = Cow::Borrowed(self.env.bank);
        match self.head.method {
            "GET" | "HEAD" => self.run(&Op::Get { bank, key: key.clone() }, |outcome| match outcome {
                Outcome::Value { value, served, file } => {
                    let position = served.location.map(position);
                    let mut headers = vec![("X-Cache", tier(served.tier))];
                    if let Some(p) = &position {
                        headers.push(("X-Position", p));
                    }
                    if !served.is_bytes() {
                        headers.push(("Content-Type", "application/json"));
                    }
                    let fresh = served.deadline.map(|deadline| freshness(deadline, self.env.now));
                    if let Some((cache_control, expires)) = &fresh {
                        headers.push(("Cache-Control", cache_control));
                        headers.push(("Expires", expires));
                    }
                    reply.send_value(200, &headers, value, file);
                }
                Outcome::Missing { key } => missing(reply, key),
                other => storage_error(reply, &other),
            }),
            "PUT" => {
                if self.body.is_empty() {
                    let why =
                        "Bad Request: the body is empty; a file is at least one byte (DELETE removes one)";
                    return self.file_error(reply, 400, &[], why);
                }
                let lifetime = match self.lifetime() {
                    Ok(lifetime) => lifetime,
                    Err(why) => return self.file_error(reply, 400, &[], why),
                };
                let value = Value::Bytes(Cow::Borrowed(self.body));
                // CacheFS's rule: a file earns RAM by being read, not by being written.
                let put = Op::Put { bank, key, value, lifetime };
                self.run_keeping(&put, Keep::Earned, |outcome| match outcome {
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
                Outcome::Missing { key } => missing(reply, key),
                other => storage_error(reply, &other),
            }),
            method => {
                let why = format!("Method Not Allowed: a file takes {ALLOW}, not {method}");
                self.file_error(reply, 405, &[("Allow", ALLOW)], &why);
            }
        }
    }

    /// The lifetime a file API `PUT` asks for, in seconds: `?lifetime=S` or `X-Lifetime: S`, read as the
    /// JSON port reads `lifetime` (so `0` is none, a negative one is already expired). Both may be given if
    /// they say the same; anything else that could be read two ways is refused, saying why. The rest of the
    /// query string is ignored, as CacheFS did.
    fn lifetime(&self) -> Result<Option<f64>, &'static str> {
        let mut given = form_urlencoded::parse(self.head.query.as_bytes())
            .filter(|(name, _)| name == "lifetime")
            .map(|(_, value)| lifetime_secs(&value));
        let query = match (given.next(), given.next()) {
            (None, _) => None,
            (Some(Some(secs)), None) => Some(secs),
            (Some(None), None) => {
                return Err("Bad Request: lifetime must be a number of seconds (?lifetime=)")
            }
            (Some(_), Some(_)) => return Err("Bad Request: ?lifetime= is given more than once"),
        };
        let header = match self.head.lifetime {
            Once::Absent => None,
            Once::Value(text) => match std::str::from_utf8(text).ok().and_then(lifetime_secs) {
                Some(secs) => Some(secs),
                None => return Err("Bad Request: lifetime must be a number of seconds (X-Lifetime)"),
            },
            Once::Repeated => return Err("Bad Request: X-Lifetime is given more than once"),
        };
        match (query, header) {
            (Some(q), Some(h)) if q != h => {
                Err("Bad Request: ?lifetime= and X-Lifetime differ; give one of them, or the same number")
            }
            (query, header) => Ok(query.or(header)),
        }
    }

    fn stats(&self, reply: &mut Response<'_>) {
        if self.head.method != "GET" && self.head.method != "HEAD" {
            let why = format!("Method Not Allowed: {} takes GET or HEAD", self.head.path);
            return self.file_error(reply, 405, &[("Allow", "GET, HEAD")], &why);
        }
        let mut body = Vec::new();
        json::encode(&Outcome::Stats(&cmd::snapshot(self.env.ctx)), &mut body);
        reply.send(200, &[("Content-Type", "application/json")], &body);
    }

    /// The admin page's files, each with the page's security headers.
    fn ui(&self, reply: &mut Response<'_>) {
        if self.head.method != "GET" && self.head.method != "HEAD" {
            let why = format!("Method Not Allowed: {} takes GET or HEAD", self.head.path);
            return self.file_error(reply, 405, &[("Allow", "GET, HEAD"), ui::CSP_HEADER], &why);
        }
        match ui::find(self.head.path) {
            ui::Found::File(file) => {
                let mut headers = vec![("Content-Type", file.content_type)];
                headers.extend_from_slice(&ui::HEADERS);
                reply.send(200, &headers, file.body);
            }
            ui::Found::Redirect(to) => {
                let mut headers = vec![("Location", to)];
                headers.extend_from_slice(&ui::HEADERS);
                reply.text_error(301, &headers, &format!("Moved Permanently: the admin page is at {to}"));
            }
            ui::Found::Missing => {
                let why = format!("Not Found: no file {}; the admin page is /ui/", self.head.path);
                self.file_error(reply, 404, &ui::HEADERS, &why);
            }
        }
    }

    /// `GET /stats/banks` (a page of banks with their figures) and `GET /stats/volumes` (the ring of disk
    /// volumes): JSON envelopes, as the REST API answers.
    fn stats_of(&self, what: &str, reply: &mut Response<'_>) {
        if what != "banks" && what != "volumes" {
            let why =
                format!("Not Found: no route {}; /stats/banks and /stats/volumes exist", self.head.path);
            self.env.counters.error();
            return reply.rest_error(404, &[], &why);
        }
        if self.head.method != "GET" && self.head.method != "HEAD" {
            let why = format!("Method Not Allowed: {} takes GET or HEAD", self.head.path);
            self.env.counters.error();
            return reply.rest_error(405, &[("Allow", "GET, HEAD")], &why);
        }
        let data = if what == "banks" {
            let query: Vec<(Cow<'_, str>, Cow<'_, str>)> =
                form_urlencoded::parse(self.head.query.as_bytes()).collect();
            let param = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_ref());
            let number = |name: &str, default: u64| match param(name) {
                None => Ok(default),
                Some(text) => text.parse::<u64>().map_err(|_| format!("{name} must be a whole number")),
            };
            let (cursor, count) = match (number("cursor", 0), number("count", BANK_PAGE_DEFAULT)) {
                (Ok(cursor), Ok(count)) => (cursor, count),
                (Err(why), _) | (_, Err(why)) => return self.rest_error(reply, 400, &why),
            };
            let (banks, cursor) = cmd::bank_figures(self.env.ctx, cursor, count.max(1));
            let banks: Vec<BankJson<'_>> = banks
                .iter()
                .map(|b| BankJson { name: &b.name, keys: b.keys, bytes: b.bytes, ram_bytes: b.ram_bytes })
                .collect();
            serde_json::to_vec(&BanksJson { cursor, banks })
        } else {
            serde_json::to_vec(&cmd::volume_ring(self.env.ctx).map(|ring| {
                RingJson {
                    current: ring.current,
                    size: ring.size,
                    reuses: ring.reuses,
                    volumes: ring
                        .volumes
                        .iter()
                        .map(|v| VolumeJson { generation: v.generation, used: v.used, starts: v.starts })
                        .collect(),
                }
            }))
        };
        // The envelope as every other route writes it, around the data (compact, in the fields' order).
        let mut body = b"{\"status\": \"ok\", \"data\": ".to_vec();
        // Serializing these plain structs cannot fail; `null` if it ever did.
        body.extend_from_slice(&data.unwrap_or_else(|_| b"null".to_vec()));
        body.push(b'}');
        reply.send(200, &[("Content-Type", "application/json")], &body);
    }

    fn metrics(&self, reply: &mut Response<'_>) {
        if self.head.method != "GET" && self.head.method != "HEAD" {
            let why = format!("Method Not Allowed: {} takes GET or HEAD", self.head.path);
            return self.file_error(reply, 405, &[("Allow", "GET, HEAD")], &why);
        }
        let body = metrics::prometheus(&cmd::snapshot(self.env.ctx), &self.env.ctx.stats.latency());
        reply.send(200, &[("Content-Type", "text/plain; version=0.0.4")], body.as_bytes());
    }

    /// The original CacheServer's REST API: each route is an op, answered with the JSON envelope.
    fn rest_api(&self, segments: &[Cow<'_, str>], reply: &mut Response<'_>) {
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
                // As the original: the body, as UTF-8 text, is stored as a JSON string; with `?as=json`
                // the body is JSON, stored as it is (the admin page edits JSON values so).
                let as_json = match param("as") {
                    None | Some("text") => false,
                    Some("json") => true,
                    Some(_) => return self.rest_error(reply, 400, "as must be text or json: ?as=json"),
                };
                let Ok(text) = std::str::from_utf8(self.body) else {
                    return self.rest_error(
                        reply,
                        400,
                        "the body is not UTF-8 (it is stored as a JSON string)",
                    );
                };
                let json = match as_json {
                    false => serde_json::to_vec(text).unwrap_or_default(),
                    true => match serde_json::from_str::<&serde_json::value::RawValue>(text) {
                        Ok(raw) => raw.get().as_bytes().to_vec(),
                        Err(_) => return self.rest_error(reply, 400, "the body is not JSON (?as=json)"),
                    },
                };
                // Read as the JSON port and the file API read a lifetime.
                let lifetime = match param("lifetime").map(lifetime_secs) {
                    None => None,
                    Some(Some(l)) => Some(l),
                    Some(None) => return self.rest_error(reply, 400, "lifetime must be a number of seconds"),
                };
                let value = Value::Json(Cow::Owned(json));
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
                    None => {
                        return self.rest_error(
                            reply,
                            400,
                            "incr needs a value: ?operation=incr&value=<number>",
                        )
                    }
                },
                _ => return self.rest_error(reply, 400, "operation must be touch or incr: ?operation=touch"),
            },
            ("PUT", ["bank", bank]) => match operation {
                Some("reset") => Op::BankReset { bank: name(bank) },
                _ => return self.rest_error(reply, 400, "operation must be reset: ?operation=reset"),
            },
            (method, route) => {
                self.env.counters.error();
                let allow = match route {
                    ["banks"] | ["bank", _, "entries" | "scan"] | [""] => "GET, HEAD",
                    ["bank", _, "entry", _] => "GET, HEAD, POST, PUT, DELETE",
                    ["bank", _] => "PUT",
                    _ => {
                        let why = format!("Not Found: no route {}; GET / lists the routes", self.head.path);
                        return reply.rest_error(404, &[], &why);
                    }
                };
                let why = format!("Method Not Allowed: {} takes {allow}, not {method}", self.head.path);
                return reply.rest_error(405, &[("Allow", allow)], &why);
            }
        };
        if let Err(why) = op.check(self.env.limits).and(bad_field.map_or(Ok(()), Err)) {
            return self.refuse(why, reply);
        }
        self.run(&op, |outcome| match outcome {
            // An entry's GET says how it is held, as the file API's does (the admin page shows it).
            Outcome::Value { value, served, file } => {
                let fresh = served.deadline.map(|deadline| freshness(deadline, self.env.now));
                let position = served.location.map(position);
                let size = value.len().to_string();
                let mut headers = vec![("X-Cache", tier(served.tier)), ("X-Value-Bytes", size.as_str())];
                if let Some(p) = &position {
                    headers.push(("X-Position", p));
                }
                if let Some((cache_control, expires)) = &fresh {
                    headers.push(("Cache-Control", cache_control));
                    headers.push(("Expires", expires));
                }
                envelope_with(reply, &Outcome::Value { value, served, file }, &headers)
            }
            outcome => envelope(reply, &outcome),
        });
    }

    /// Answers a REST request refused before it ran, with the JSON port's words.
    fn refuse(&self, why: RequestError, reply: &mut Response<'_>) {
        cmd::refuse(self.env.counters, why, |outcome| envelope(reply, &outcome));
    }
}

/// The REST answer: the JSON envelope, with the status the outcome calls for.
fn envelope(reply: &mut Response<'_>, outcome: &Outcome<'_>) {
    envelope_with(reply, outcome, &[])
}

/// [`envelope`], with more headers.
fn envelope_with(reply: &mut Response<'_>, outcome: &Outcome<'_>, headers: &[(&str, &str)]) {
    let code = match outcome {
        Outcome::Missing { .. } => 404,
        Outcome::Failed(_) => 400,
        _ => 200,
    };
    let mut body = Vec::new();
    json::encode(outcome, &mut body);
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    reply.send(code, &all, &body);
}

/// `X-Cache`: the tier that served a read.
fn tier(tier: Tier) -> &'static str {
    match tier {
        Tier::Memory => "MEMC",
        Tier::Disk => "DISK",
    }
}

/// Banks a page of `GET /stats/banks` lists unless `count` says otherwise.
const BANK_PAGE_DEFAULT: u64 = 100;

/// `GET /stats/banks`'s data.
#[derive(serde::Serialize)]
struct BanksJson<'a> {
    cursor: u64,
    banks: Vec<BankJson<'a>>,
}

/// One bank of `GET /stats/banks`.
#[derive(serde::Serialize)]
struct BankJson<'a> {
    name: &'a str,
    keys: u64,
    bytes: u64,
    ram_bytes: u64,
}

/// `GET /stats/volumes`'s data (`null` without a disk store).
#[derive(serde::Serialize)]
struct RingJson {
    current: u32,
    size: u64,
    reuses: u64,
    volumes: Vec<VolumeJson>,
}

/// One volume of `GET /stats/volumes`.
#[derive(serde::Serialize)]
struct VolumeJson {
    generation: u32,
    used: u64,
    starts: u64,
}

/// The latest instant an IMF-fixdate can say: 9999-12-31 23:59:59 UTC, in Unix seconds.
const LAST_HTTP_DATE_SECS: u64 = 253_402_300_799;
/// The largest `max-age` a cache must understand (RFC 9111 §1.2.2: greater ones are sent as this).
const MAX_AGE_CAP: u64 = 1 << 31;

/// `Cache-Control` and `Expires` of a value that expires at `deadline` (Unix ms), as of `now`: `max-age`
/// is the whole seconds left, rounded down, and `Expires` the deadline rounded down to its second, so that
/// no cache keeps the value past its deadline. An absurd deadline is capped where each format ends.
fn freshness(deadline: u64, now: u64) -> (String, String) {
    let max_age = (deadline.saturating_sub(now) / 1000).min(MAX_AGE_CAP);
    let at =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs((deadline / 1000).min(LAST_HTTP_DATE_SECS));
    (format!("max-age={max_age}"), httpdate::fmt_http_date(at))
}

/// `X-Position`: volume, offset and size of a record.
fn position(at: Location) -> String {
    format!("{},{},{}", at.volume, at.offset, at.len)
}

/// The file API's answer to an outcome other than the expected one: only a store error can be that.
fn storage_error(reply: &mut Response<'_>, outcome: &Outcome<'_>) {
    let message = match outcome {
        Outcome::Failed(failure) => failure.to_string(),
        other => format!("unexpected outcome {other:?}"),
    };
    reply.text_error(507, &[], &message);
}

/// The file API's 404, for GET, HEAD and DELETE alike: the JSON port's words for a missing key.
fn missing(reply: &mut Response<'_>, key: &str) {
    reply.text_error(404, &[], &reply::missing_message(key));
}

/// What `GET /` answers: where everything is, for whoever points curl or a browser at the port.
const INDEX: &[u8] = b"bankcache\n\
    files:    PUT /<key> stores the body (?lifetime=S or X-Lifetime: S for S seconds), GET /<key> reads it, \
    DELETE /<key> removes it\n\
    REST API: /bank/<bank>/entry/<key>, /bank/<bank>/entries, /bank/<bank>/scan, /bank/<bank>, /banks \
    (also under /api)\n\
    counters: /stats (JSON), /stats/banks, /stats/volumes, /metrics (Prometheus)\n\
    admin page: /ui/\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_rounds_down_and_caps() {
        // RFC 9110's example date, half a second ahead.
        let at = 784_111_777_000;
        assert_eq!(freshness(at, at - 500), ("max-age=0".into(), "Sun, 06 Nov 1994 08:49:37 GMT".into()));
        assert_eq!(freshness(at + 999, at - 1_001).0, "max-age=2");
        assert_eq!(freshness(at, at + 5).0, "max-age=0", "never negative");
        let far = freshness((1 << 56) - 2, 0);
        assert_eq!(far, ("max-age=2147483648".into(), "Fri, 31 Dec 9999 23:59:59 GMT".into()));
    }
}
