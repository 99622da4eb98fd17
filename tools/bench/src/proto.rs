//! The four wire protocols the driver speaks: requests encoded from templates
//! built once, replies parsed in place, and (with `--verify`) every byte of a
//! get's value checked against what that key must hold.
//!
//! Values are per key so that a reply carrying another key's value is caught:
//! every value is one filler, drawn once from the seed, whose first bytes are
//! overwritten by the key's digits. A set copies the digits it has just written
//! for the key into the value's place in the request, so per-key values cost a
//! copy of a few bytes and no allocation.
//!
//! bankcache's JSON protocol is not written here: its two templates are lines
//! encoded once by `bankcache_proto::Op::encode`, and its replies are
//! classified by `bankcache_proto::reply::peek`, the server's own definition of
//! its reply bytes. RESP, memcached and HTTP are the other servers' protocols,
//! spoken only by this tool, so they stay here.

use std::borrow::Cow;
use std::io;
use std::ops::Range;

use bankcache_proto::reply::{self, Decoded, Peek};
use clap::ValueEnum;

/// A reply larger than this is taken for a broken stream rather than buffered.
pub const MAX_INPUT: usize = 64 << 20;
/// Keys are `key:` followed by at least this many zero-padded digits.
const MIN_KEY_DIGITS: usize = 8;
/// Most digits a `u64` key can have, so digits fit in a stack buffer.
const MAX_KEY_DIGITS: usize = 20;
/// The bank every JSON request addresses.
const JSON_BANK: &str = "bench";
/// The `Host` header of every HTTP request.
const HTTP_HOST: &str = "bench";
/// Most header fields an HTTP reply may have; more is taken for a broken stream.
const HTTP_MAX_HEADERS: usize = 32;

/// The wire protocol of the server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Proto {
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
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Json => "json",
            Proto::Resp => "resp",
            Proto::Memcache => "memcache",
            Proto::Http => "http",
        }
    }
}

/// The two requests the driver sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Get,
    Set,
}

/// How the server answered one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A set was acknowledged.
    Stored,
    /// A get found its key.
    Hit,
    /// A get found no such key.
    Miss,
    /// The server reported an error.
    Error,
}

/// Where a hit's value lies in the input buffer, so that `--verify` can check
/// it without the parser copying anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// No value (not a hit), or none could be located.
    None,
    /// The value's bytes, as is (RESP, memcached, HTTP `Content-Length`).
    Raw(Range<usize>),
    /// The JSON text of a bankcache reply's `data`: the value as a JSON string,
    /// quotes included.
    JsonString(Range<usize>),
    /// An HTTP chunked body: chunk-size lines, chunks and trailer.
    Chunked(Range<usize>),
}

/// One reply parsed at the start of a buffer.
#[derive(Debug)]
pub struct Parsed {
    pub reply: Reply,
    /// Bytes the reply took.
    pub used: usize,
    /// Where its value lies, for verification; offsets into the parsed buffer.
    pub body: Body,
}

impl Parsed {
    fn new(reply: Reply, used: usize) -> Self {
        Parsed { reply, used, body: Body::None }
    }
}

/// Writes `key` as zero-padded decimal digits filling `out`, without allocating.
fn write_digits(out: &mut [u8], key: u64) {
    let mut rest = key;
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
}

/// The bytes around the key of one kind of request. Key and value have fixed
/// sizes, so everything but the key digits (and the value's stamp) is known
/// up front.
struct Template {
    prefix: Vec<u8>,
    suffix: Vec<u8>,
}

/// Encodes requests and parses (and verifies) replies of one protocol.
pub struct Codec {
    proto: Proto,
    key_digits: usize,
    /// The filler every value starts from; each key stamps its digits on the
    /// first `stamp_len` bytes.
    value: Vec<u8>,
    /// `min(value_len, key_digits)`: values shorter than the key's digits take
    /// its last (least significant) digits.
    stamp_len: usize,
    /// Where the value starts in the set template's suffix.
    set_value_at: usize,
    get: Template,
    set: Template,
    /// What a new connection sends first and waits for (bankcache's JSON `auth` with the token), if
    /// anything: over HTTP the token rides in every request's header instead.
    handshake: Option<Vec<u8>>,
}

impl Codec {
    /// `value` is the filler every key's value is stamped on; `http_prefix` is
    /// the URL path before each key, used only by `Proto::Http`; `auth_token`
    /// is bankcache's token, sent by `auth` on each JSON connection and as
    /// `Authorization: Bearer` on each HTTP request (other protocols ignore it).
    pub fn new(proto: Proto, keys: u64, value: &[u8], http_prefix: &str, auth_token: Option<&str>) -> Self {
        let key_digits = (keys.saturating_sub(1).to_string().len()).max(MIN_KEY_DIGITS);
        let key_len = "key:".len() + key_digits;
        let value_text = String::from_utf8_lossy(value);
        let vlen = value.len();
        // Every set suffix ends with the value and a fixed trailer, whose length each protocol gives.
        let (get, set, trailer) = match proto {
            Proto::Json => json_templates(key_digits, value),
            Proto::Resp => (
                (format!("*2\r\n$3\r\nGET\r\n${key_len}\r\n"), "\r\n".to_string()),
                (format!("*3\r\n$3\r\nSET\r\n${key_len}\r\n"), format!("\r\n${vlen}\r\n{value_text}\r\n")),
                "\r\n".len(),
            ),
            Proto::Memcache => (
                ("get ".to_string(), "\r\n".to_string()),
                ("set ".to_string(), format!(" 0 0 {vlen}\r\n{value_text}\r\n")),
                "\r\n".len(),
            ),
            Proto::Http => {
                let auth = auth_token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
                (
                    (format!("GET {http_prefix}"), format!(" HTTP/1.1\r\nHost: {HTTP_HOST}\r\n{auth}\r\n")),
                    (
                        format!("PUT {http_prefix}"),
                        format!(
                            " HTTP/1.1\r\nHost: {HTTP_HOST}\r\n{auth}Content-Length: {vlen}\r\n\r\n{value_text}"
                        ),
                    ),
                    0,
                )
            }
        };
        let handshake = auth_token.filter(|_| proto == Proto::Json).map(|token| {
            let mut line = Vec::new();
            let token = bankcache_proto::Token(Cow::Borrowed(token));
            bankcache_proto::Op::Auth { token }.encode(&mut line);
            line
        });
        let set_value_at = set.1.len() - trailer - vlen;
        let template = |(prefix, suffix): (String, String)| Template {
            prefix: prefix.into_bytes(),
            suffix: suffix.into_bytes(),
        };
        Codec {
            proto,
            key_digits,
            value: value.to_vec(),
            stamp_len: vlen.min(key_digits),
            set_value_at,
            get: template(get),
            set: template(set),
            handshake,
        }
    }

    /// The request a new connection sends and waits for the answer to before its load, if any.
    pub fn handshake(&self) -> Option<&[u8]> {
        self.handshake.as_deref()
    }

    /// Whether a handshake's reply line (with its `\n`) says ok.
    pub fn handshake_ok(line: &[u8]) -> bool {
        matches!(reply::peek(line), Some(Peek::Ok { .. }))
    }

    fn template(&self, op: Op) -> &Template {
        match op {
            Op::Get => &self.get,
            Op::Set => &self.set,
        }
    }

    /// Length of every encoded request of kind `op`.
    pub fn request_len(&self, op: Op) -> usize {
        let template = self.template(op);
        template.prefix.len() + "key:".len() + self.key_digits + template.suffix.len()
    }

    /// Longest encoded request, to size output buffers once.
    pub fn max_request_len(&self) -> usize {
        self.request_len(Op::Get).max(self.request_len(Op::Set))
    }

    /// Appends one request to `out`, writing the key digits in place rather
    /// than through `format!`, which would allocate; a set then copies the
    /// digits onto the start of its value, which makes the value the key's own.
    pub fn encode(&self, out: &mut Vec<u8>, op: Op, key: u64) {
        let template = self.template(op);
        out.extend_from_slice(&template.prefix);
        out.extend_from_slice(b"key:");
        let start = out.len();
        out.resize(start + self.key_digits, b'0');
        write_digits(&mut out[start..], key);
        let digits_end = out.len();
        out.extend_from_slice(&template.suffix);
        if op == Op::Set {
            let at = digits_end + self.set_value_at;
            out.copy_within(digits_end - self.stamp_len..digits_end, at);
        }
    }

    /// The value `key` holds, as sets write it (tests and diagnostics; the
    /// verify path compares in place instead).
    #[cfg(test)]
    pub fn value_of(&self, key: u64) -> Vec<u8> {
        let mut digits = [0u8; MAX_KEY_DIGITS];
        let mut value = self.value.clone();
        value[..self.stamp_len].copy_from_slice(self.stamp(key, &mut digits));
        value
    }

    /// The bytes `key` stamps on the start of its value.
    fn stamp<'a>(&self, key: u64, digits: &'a mut [u8; MAX_KEY_DIGITS]) -> &'a [u8] {
        let all = &mut digits[..self.key_digits];
        write_digits(all, key);
        &all[self.key_digits - self.stamp_len..]
    }

    /// Parses the reply to `op` at the start of `buf`: `Ok(None)` when it has
    /// not fully arrived yet.
    pub fn parse(&self, buf: &[u8], op: Op) -> io::Result<Option<Parsed>> {
        match self.proto {
            Proto::Json => Ok(parse_json(buf, op)),
            Proto::Resp => parse_resp(buf),
            Proto::Memcache => parse_memcache(buf),
            Proto::Http => parse_http(buf, op, self.value.len()),
        }
    }

    /// Whether the hit whose value `body` locates in `buf` holds exactly the
    /// bytes `key` was stored with. A value that cannot be located fails.
    pub fn verify(&self, buf: &[u8], body: &Body, key: u64) -> bool {
        let mut digits = [0u8; MAX_KEY_DIGITS];
        let stamp = self.stamp(key, &mut digits);
        let len = self.value.len();
        match body {
            Body::None => false,
            Body::Raw(range) => {
                let Some(got) = buf.get(range.clone()) else { return false };
                got.len() == len && self.matches_at(stamp, 0, got)
            }
            Body::JsonString(range) => {
                let Some(got) = buf.get(range.clone()) else { return false };
                got.len() == len + 2
                    && got[0] == b'"'
                    && got[len + 1] == b'"'
                    && self.matches_at(stamp, 0, &got[1..=len])
            }
            Body::Chunked(range) => {
                let Some(got) = buf.get(range.clone()) else { return false };
                self.chunks_match(stamp, got)
            }
        }
    }

    /// Whether `got` equals the stamped value's bytes from `offset` on.
    fn matches_at(&self, stamp: &[u8], offset: usize, got: &[u8]) -> bool {
        let end = offset + got.len();
        if end > self.value.len() {
            return false;
        }
        let split = stamp.len().clamp(offset, end);
        got[..split - offset] == stamp[offset..split] && got[split - offset..] == self.value[split..end]
    }

    /// Walks a chunked body, comparing each chunk with its part of the value.
    fn chunks_match(&self, stamp: &[u8], mut rest: &[u8]) -> bool {
        let mut offset = 0;
        loop {
            let Ok(httparse::Status::Complete((used, size))) = httparse::parse_chunk_size(rest) else {
                return false;
            };
            if size == 0 {
                return offset == self.value.len();
            }
            let Some(chunk) = usize::try_from(size).ok().and_then(|size| rest.get(used..used + size)) else {
                return false;
            };
            if !self.matches_at(stamp, offset, chunk) {
                return false;
            }
            offset += chunk.len();
            // The chunk's CRLF; the parser already checked it.
            rest = rest.get(used + chunk.len() + 2..).unwrap_or_default();
        }
    }
}

/// The text before and after the key's text of one kind of request.
type Affixes = (String, String);

/// bankcache's get and set of `key:` and `key_digits` zeros, encoded by proto's `Op::encode` (the request
/// lines the client library sends) and split around the key's text; and the set's trailer, what follows
/// the value's bytes (its closing quote and the end of the object).
///
/// The value is the filler as a JSON string, so the server stores (and a get answers) the filler in quotes.
/// The filler is printable ASCII without quotes or backslashes (see the driver's `make_value`), so the
/// string is the filler's bytes between two quotes and a set can stamp the key's digits in place.
fn json_templates(key_digits: usize, value: &[u8]) -> (Affixes, Affixes, usize) {
    let key = format!("key:{}", "0".repeat(key_digits));
    let text = String::from_utf8_lossy(value);
    let value_json = format!("\"{text}\"");
    let (bank, name) = (Cow::Borrowed(JSON_BANK), Cow::Borrowed(key.as_str()));
    let mut get = Vec::new();
    bankcache_proto::Op::Get { bank: bank.clone(), key: name.clone() }.encode(&mut get);
    let mut set = Vec::new();
    let put_value = bankcache_proto::Value::Json(Cow::Borrowed(value_json.as_bytes()));
    bankcache_proto::Op::Put { bank, key: name, value: put_value, lifetime: None }.encode(&mut set);
    // The key's text starts after the first quote of `"key:000…"`: the key field's value, since the bank
    // is not a key and the filler has no colon.
    let quoted_key = format!("\"{key}\"");
    let split = |line: &[u8]| {
        let at = find(line, quoted_key.as_bytes()).expect("Op::encode writes the key as a JSON string") + 1;
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (text(&line[..at]), text(&line[at + key.len()..]))
    };
    let (get, set) = (split(&get), split(&set));
    // The value's text is written last, so its last occurrence is the value.
    let value_at =
        rfind(set.1.as_bytes(), value_json.as_bytes()).expect("Op::encode writes the value's text");
    let trailer = set.1.len() - (value_at + value_json.len()) + "\"".len();
    (get, set, trailer)
}

fn protocol_error(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// bankcache answers every request with exactly one line, so a reply is
/// complete at its `\n`. Proto's `reply::peek` classifies it from the exact
/// bytes the server writes, without parsing or allocating: a get answered with
/// the missing-key error (`Key key:00000123 doesn't exist`) is a miss; every
/// other error reply, a missing bank included, is an error. A hit's body is
/// its `data`; a byte value (base64) is no JSON string a set stored, so it has
/// none and fails `--verify`. A line not in that exact form (another spacing)
/// is decoded in full by `reply::decode`, and its errors all count as errors.
fn parse_json(buf: &[u8], op: Op) -> Option<Parsed> {
    let newline = memchr_newline(buf)?;
    let line = &buf[..=newline];
    let (ok, data) = match reply::peek(line) {
        Some(Peek::Ok { data, base64 }) => (true, (!base64).then_some(data)),
        Some(Peek::Missing) if op == Op::Get => {
            return Some(Parsed::new(Reply::Miss, line.len()));
        }
        Some(Peek::Missing | Peek::Error) => (false, None),
        None => decode_json(line),
    };
    let reply = match (ok, op) {
        (true, Op::Get) => Reply::Hit,
        (true, Op::Set) => Reply::Stored,
        (false, _) => Reply::Error,
    };
    let body = match data {
        Some(range) if reply == Reply::Hit => Body::JsonString(range),
        _ => Body::None,
    };
    Some(Parsed { reply, used: line.len(), body })
}

/// The slow path of [`parse_json`], for a line `reply::peek` does not know:
/// whether it is an ok reply, and where its JSON `data` lies in it.
fn decode_json(line: &[u8]) -> (bool, Option<Range<usize>>) {
    match reply::decode(line) {
        Ok(Decoded::Ok { data: Cow::Borrowed(data), base64: false }) => {
            (true, range_in(line, data.get().as_bytes()))
        }
        Ok(Decoded::Ok { .. }) => (true, None),
        Ok(Decoded::Error(_)) | Err(_) => (false, None),
    }
}

/// Where `part`, a slice borrowed from `whole`, lies in it.
fn range_in(whole: &[u8], part: &[u8]) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= whole.len()).then_some(start..end)
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

/// The first position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The last position of `needle` in `haystack`.
fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// Splits off one `\r\n`-terminated line: the line without its terminator and
/// the bytes it took, or `None` while it is incomplete.
fn take_line(buf: &[u8]) -> io::Result<Option<(&[u8], usize)>> {
    let Some(newline) = memchr_newline(buf) else {
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
fn parse_resp(buf: &[u8]) -> io::Result<Option<Parsed>> {
    let Some((line, used)) = take_line(buf)? else {
        return Ok(None);
    };
    let Some((&kind, rest)) = line.split_first() else {
        return Err(protocol_error("empty RESP line"));
    };
    match kind {
        b'+' | b':' => Ok(Some(Parsed::new(Reply::Stored, used))),
        b'-' => Ok(Some(Parsed::new(Reply::Error, used))),
        b'$' => {
            let Ok(len) = usize::try_from(parse_int(rest)?) else {
                return Ok(Some(Parsed::new(Reply::Miss, used)));
            };
            if len > MAX_INPUT {
                return Err(protocol_error("RESP value larger than the input limit"));
            }
            Ok(body_end(buf, used, len, b"\r\n")?.map(|end| Parsed {
                reply: Reply::Hit,
                used: end,
                body: Body::Raw(used..used + len),
            }))
        }
        _ => Err(protocol_error("unexpected RESP reply type")),
    }
}

/// memcached replies: `VALUE key flags bytes [cas]` + data + `END` (hit),
/// `END` (miss), `STORED`, or one of its error lines.
fn parse_memcache(buf: &[u8]) -> io::Result<Option<Parsed>> {
    let Some((line, used)) = take_line(buf)? else {
        return Ok(None);
    };
    match line {
        b"END" => Ok(Some(Parsed::new(Reply::Miss, used))),
        b"STORED" => Ok(Some(Parsed::new(Reply::Stored, used))),
        _ if line.starts_with(b"VALUE ") => {
            let bytes = line
                .split(|&b| b == b' ')
                .nth(3)
                .ok_or_else(|| protocol_error("VALUE line without a length"))?;
            let len =
                usize::try_from(parse_int(bytes)?).map_err(|_| protocol_error("negative VALUE length"))?;
            if len > MAX_INPUT {
                return Err(protocol_error("memcached value larger than the input limit"));
            }
            Ok(body_end(buf, used, len, b"\r\nEND\r\n")?.map(|end| Parsed {
                reply: Reply::Hit,
                used: end,
                body: Body::Raw(used..used + len),
            }))
        }
        _ if is_memcache_error(line) => Ok(Some(Parsed::new(Reply::Error, used))),
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
fn parse_http(buf: &[u8], op: Op, value_len: usize) -> io::Result<Option<Parsed>> {
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
            Framing::Empty => Some((0, body_start, Body::None)),
            Framing::Length(len) => {
                let end = body_start + len;
                (buf.len() >= end).then_some((len, end, Body::Raw(body_start..end)))
            }
            Framing::Chunked => {
                chunked_body(buf, body_start)?.map(|(len, end)| (len, end, Body::Chunked(body_start..end)))
            }
        };
        let Some((body_len, end, body)) = body else {
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
        let body = if reply == Reply::Hit { body } else { Body::None };
        return Ok(Some(Parsed { reply, used: end, body }));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(codec: &Codec, stream: &[u8], ops: &[Op]) -> Vec<Reply> {
        let mut replies = Vec::new();
        let mut at = 0;
        for &op in ops {
            let parsed = codec.parse(&stream[at..], op).expect("valid").expect("complete");
            replies.push(parsed.reply);
            at += parsed.used;
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
    fn encodes_fixed_width_keys_and_per_key_values() {
        let codec = Codec::new(Proto::Resp, 100_000, b"abc", "/", None);
        let mut out = Vec::new();
        codec.encode(&mut out, Op::Get, 123);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$12\r\nkey:00000123\r\n");
        out.clear();
        // A value shorter than the key's digits takes its last digits.
        codec.encode(&mut out, Op::Set, 7);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$12\r\nkey:00000007\r\n$3\r\n007\r\n");
        let json = Codec::new(Proto::Json, 10, b"vvvvvvvvvvvv", "/", None);
        out.clear();
        json.encode(&mut out, Op::Set, 1);
        assert_eq!(
            out,
            b"{\"op\":\"put\",\"bank\":\"bench\",\"key\":\"key:00000001\",\"value\":\"00000001vvvv\"}\n"
        );
        assert_eq!(json.value_of(1), b"00000001vvvv");
        let memcache = Codec::new(Proto::Memcache, 1_000_000_000, b"xy", "/", None);
        out.clear();
        memcache.encode(&mut out, Op::Set, 5);
        assert_eq!(out, b"set key:000000005 0 0 2\r\n05\r\n");
        assert!(out.len() <= memcache.max_request_len());
        let empty = Codec::new(Proto::Memcache, 10, b"", "/", None);
        out.clear();
        empty.encode(&mut out, Op::Set, 5);
        assert_eq!(out, b"set key:00000005 0 0 0\r\n\r\n");
    }

    #[test]
    fn parses_resp() {
        let codec = Codec::new(Proto::Resp, 10, b"", "/", None);
        let stream = b"+OK\r\n$-1\r\n$3\r\na\r\n\r\n-ERR wrong\r\n";
        let replies = parse_all(&codec, stream, &[Op::Set, Op::Get, Op::Get, Op::Get]);
        assert_eq!(replies, [Reply::Stored, Reply::Miss, Reply::Hit, Reply::Error]);
        assert_split_safe(&codec, b"$5\r\nhello\r\n", Op::Get);
        assert!(codec.parse(b"$3\r\nabcXY", Op::Get).is_err());
        assert!(codec.parse(b"?\r\n", Op::Get).is_err());
    }

    #[test]
    fn parses_memcache() {
        let codec = Codec::new(Proto::Memcache, 10, b"", "/", None);
        let stream = b"STORED\r\nEND\r\nVALUE key:1 0 4\r\nab\r\n\r\nEND\r\nSERVER_ERROR out of memory\r\n";
        let replies = parse_all(&codec, stream, &[Op::Set, Op::Get, Op::Get, Op::Set]);
        assert_eq!(replies, [Reply::Stored, Reply::Miss, Reply::Hit, Reply::Error]);
        assert_split_safe(&codec, b"VALUE k 0 2\r\nhi\r\nEND\r\n", Op::Get);
        assert!(codec.parse(b"VALUE k 0 2\r\nhiEND\r\nxx", Op::Get).is_err());
    }

    #[test]
    fn parses_json() {
        let codec = Codec::new(Proto::Json, 10, b"", "/", None);
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

    /// The JSON requests are exactly what proto's `Op::encode` writes for the
    /// same get and the same put (so what the client library sends), for any
    /// key width, with each key's own value in the put.
    #[test]
    fn json_requests_are_protos_encoding() {
        for (keys, filler) in [(10, &b"vvvvvvvvvvvv"[..]), (100_000_000_000, b"abc"), (1000, b"")] {
            let codec = Codec::new(Proto::Json, keys, filler, "/", None);
            for key in [0, 7, keys / 3, keys - 1] {
                let name = format!("key:{key:0width$}", width = codec.key_digits);
                let value = format!("\"{}\"", String::from_utf8(codec.value_of(key)).unwrap());
                let mut want = Vec::new();
                bankcache_proto::Op::Get { bank: JSON_BANK.into(), key: name.as_str().into() }
                    .encode(&mut want);
                let mut got = Vec::new();
                codec.encode(&mut got, Op::Get, key);
                assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
                assert_eq!(got.len(), codec.request_len(Op::Get));
                want.clear();
                bankcache_proto::Op::Put {
                    bank: JSON_BANK.into(),
                    key: name.as_str().into(),
                    value: bankcache_proto::Value::Json(Cow::Borrowed(value.as_bytes())),
                    lifetime: None,
                }
                .encode(&mut want);
                got.clear();
                codec.encode(&mut got, Op::Set, key);
                assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
                assert_eq!(got.len(), codec.request_len(Op::Set));
            }
        }
    }

    /// Every reply proto's `Reply::encode` writes is classified as the text
    /// search before `reply::peek` did, and so are the edges of the fast path:
    /// a byte value has no body to verify, a set's missing key is an error,
    /// another spacing goes the slow way (where a missing key is an error, as
    /// before). One edge is new: a hit ending in CRLF now has its value found.
    #[test]
    fn json_replies_as_the_server_writes_them() {
        use bankcache_proto::Reply as Wire;
        let codec = Codec::new(Proto::Json, 1000, b"abcdefghij", "/", None);
        let line = |reply: Wire<'_>| {
            let mut out = Vec::new();
            reply.encode(&mut out);
            out
        };
        let value = codec.value_of(42);
        let cases = [
            (
                line(Wire::Json(format!("\"{}\"", String::from_utf8_lossy(&value)).as_bytes())),
                Op::Get,
                Reply::Hit,
                true,
            ),
            (line(Wire::Json(b"{\"x\": 1}")), Op::Get, Reply::Hit, false),
            (line(Wire::Bytes(&value)), Op::Get, Reply::Hit, false),
            (line(Wire::Done), Op::Set, Reply::Stored, false),
            (line(Wire::Missing { key: "key:00000042" }), Op::Get, Reply::Miss, false),
            (line(Wire::Missing { key: "key:00000042" }), Op::Set, Reply::Error, false),
            (
                line(Wire::Error("Value too large: 9 bytes, max_value_bytes is 8")),
                Op::Set,
                Reply::Error,
                false,
            ),
            (line(Wire::Error("Key too long: 9 bytes, max_key_bytes is 8")), Op::Get, Reply::Error, false),
            (b"{\"status\":\"ok\",\"data\":\"00000042ij\"}\n".to_vec(), Op::Get, Reply::Hit, true),
            (b"{\"status\": \"ok\", \"data\": \"00000042ij\"}\r\n".to_vec(), Op::Get, Reply::Hit, true),
            (
                b"{\"status\":\"error\",\"message\":\"Key key:00000042 doesn't exist\"}\n".to_vec(),
                Op::Get,
                Reply::Error,
                false,
            ),
            (b"not json\n".to_vec(), Op::Get, Reply::Error, false),
        ];
        let mut stream = Vec::new();
        for (text, op, want, verifies) in &cases {
            let parsed = codec.parse(text, *op).expect("valid").expect("complete");
            assert_eq!((parsed.reply, parsed.used), (*want, text.len()), "{}", String::from_utf8_lossy(text));
            assert_eq!(codec.verify(text, &parsed.body, 42), *verifies, "{}", String::from_utf8_lossy(text));
            assert_split_safe(&codec, text, *op);
            stream.extend_from_slice(text);
        }
        let ops: Vec<Op> = cases.iter().map(|c| c.1).collect();
        let wants: Vec<Reply> = cases.iter().map(|c| c.2).collect();
        assert_eq!(parse_all(&codec, &stream, &ops), wants);
    }

    /// Parses one complete hit and verifies it as the reply to a get of `key`.
    fn verify_reply(codec: &Codec, reply: &[u8], key: u64) -> bool {
        let parsed = codec.parse(reply, Op::Get).expect("valid").expect("complete");
        assert_eq!(parsed.reply, Reply::Hit, "{}", String::from_utf8_lossy(reply));
        assert_eq!(parsed.used, reply.len());
        codec.verify(reply, &parsed.body, key)
    }

    #[test]
    fn verify_catches_wrong_bytes_and_other_keys_values() {
        let filler = b"abcdefghijklmnopqrst";
        for proto in [Proto::Json, Proto::Resp, Proto::Memcache, Proto::Http] {
            let codec = Codec::new(proto, 1000, filler, "/", None);
            let frame = |value: &[u8]| -> Vec<u8> {
                let v = String::from_utf8_lossy(value);
                let text = match proto {
                    Proto::Json => format!("{{\"status\": \"ok\", \"data\": \"{v}\"}}\n"),
                    Proto::Resp => format!("${}\r\n{v}\r\n", value.len()),
                    Proto::Memcache => format!("VALUE key:00000042 0 {}\r\n{v}\r\nEND\r\n", value.len()),
                    Proto::Http => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{v}", value.len()),
                };
                text.into_bytes()
            };
            let right = codec.value_of(42);
            assert_eq!(&right[..8], b"00000042");
            assert!(verify_reply(&codec, &frame(&right), 42), "{proto:?}");
            // Another key's value: same length, same filler, other digits.
            assert!(!verify_reply(&codec, &frame(&codec.value_of(43)), 42), "{proto:?}");
            // One flipped byte in the filler, and one in the stamp.
            for at in [3, 15] {
                let mut wrong = right.clone();
                wrong[at] = b'Z';
                assert!(!verify_reply(&codec, &frame(&wrong), 42), "{proto:?} byte {at}");
            }
            // What a set of key 42 writes is what a get of it must return.
            let mut set = Vec::new();
            codec.encode(&mut set, Op::Set, 42);
            assert!(set.windows(right.len()).any(|w| w == right.as_slice()), "{proto:?}");
        }
        // A JSON value of the wrong length or shape fails too, as does a chunked body off by a byte.
        let json = Codec::new(Proto::Json, 1000, b"abcdefghij", "/", None);
        assert!(!verify_reply(&json, b"{\"status\": \"ok\", \"data\": \"00000042abcdefghij\"}\n", 42));
        assert!(!verify_reply(&json, b"{\"status\": \"ok\", \"data\": {\"x\": 1}}\n", 42));
        assert!(verify_reply(&json, b"{\"status\":\"ok\",\"data\":\"00000042ij\"}\n", 42));
        let http = Codec::new(Proto::Http, 1000, b"abcdefghij", "/", None);
        let chunked = |body: [&str; 2]| {
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n{:x}\r\n{}\r\n0\r\n\r\n",
                body[0].len(),
                body[0],
                body[1].len(),
                body[1]
            )
        };
        assert!(verify_reply(&http, chunked(["0000", "0042ij"]).as_bytes(), 42));
        assert!(!verify_reply(&http, chunked(["0000", "0043ij"]).as_bytes(), 42));
        assert!(!verify_reply(&http, chunked(["0000", "0042iX"]).as_bytes(), 42));
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
                    Some(parsed) => {
                        replies.push(parsed.reply);
                        start += parsed.used;
                    }
                    None => break,
                }
            }
        }
        assert_eq!(start, stream.len(), "the stream is consumed");
        replies
    }

    /// With a token, a JSON connection's handshake is the `auth` op and every HTTP request carries the
    /// bearer header; without one there is no handshake and no header.
    #[test]
    fn a_token_is_sent_once_per_json_connection_and_on_every_http_request() {
        let json = Codec::new(Proto::Json, 10, b"v", "/", Some("s3cret"));
        assert_eq!(json.handshake(), Some(&b"{\"op\":\"auth\",\"token\":\"s3cret\"}\n"[..]));
        assert!(Codec::handshake_ok(b"{\"status\": \"ok\", \"data\": {}}\n"));
        assert!(!Codec::handshake_ok(b"{\"status\": \"error\", \"message\": \"Invalid token\"}\n"));
        assert_eq!(Codec::new(Proto::Json, 10, b"v", "/", None).handshake(), None);
        let http = Codec::new(Proto::Http, 10, b"hello", "/", Some("s3cret"));
        assert_eq!(http.handshake(), None);
        for op in [Op::Get, Op::Set] {
            let mut out = Vec::new();
            http.encode(&mut out, op, 3);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("\r\nAuthorization: Bearer s3cret\r\n"), "{text}");
            assert_eq!(text.len(), http.request_len(op));
        }
        let mut set = Vec::new();
        http.encode(&mut set, Op::Set, 3);
        assert!(
            set.ends_with(b"\r\n\r\n00003"),
            "the value is stamped in place: {:?}",
            String::from_utf8_lossy(&set)
        );
        assert_eq!(Codec::new(Proto::Resp, 10, b"v", "/", Some("s3cret")).handshake(), None);
    }

    #[test]
    fn encodes_http() {
        let codec = Codec::new(Proto::Http, 2000, b"abc", "/files/", None);
        let mut out = Vec::new();
        codec.encode(&mut out, Op::Get, 123);
        assert_eq!(out, b"GET /files/key:00000123 HTTP/1.1\r\nHost: bench\r\n\r\n");
        assert_eq!(out.len(), codec.request_len(Op::Get));
        out.clear();
        codec.encode(&mut out, Op::Set, 7);
        assert_eq!(out, b"PUT /files/key:00000007 HTTP/1.1\r\nHost: bench\r\nContent-Length: 3\r\n\r\n007");
        assert_eq!(out.len(), codec.request_len(Op::Set));
    }

    #[test]
    fn parses_pipelined_and_split_http() {
        let codec = Codec::new(Proto::Http, 10, b"hello", "/", None);
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
        let codec = Codec::new(Proto::Http, 10, b"v", "/", None);
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
}
