//! HTTP/1.1, as pure functions of bytes: splitting a connection's stream into requests, reading a request's
//! head, and writing responses. Parsing is httparse's; nothing here does I/O or touches the store.
//!
//! A request is split once its head and its whole body have arrived. A `Content-Length` body is used where it
//! lies; a chunked body is decoded in place (the chunks' data moved together over their framing) once its
//! last chunk has arrived, so the worker always sees one contiguous body and a 1 MB value is never copied
//! between the socket buffer and the store's write.
//!
//! **Strict framing.** bankcache is meant to sit behind a proxy, and a request whose framing two parsers could
//! read differently lets a client hide a second request inside the first (request smuggling, RFC 9112 §11.2).
//! So every such request is refused, and since the server then cannot know where the next request starts,
//! the connection is closed after the error ([`Split::Error`]):
//! - `Content-Length` and `Transfer-Encoding` together (RFC 9112 §6.1), on HTTP/1.0 too, and any
//!   `Transfer-Encoding` on HTTP/1.0 (§6.1: its framing is faulty);
//! - more than one `Content-Length`, even equal ones, or one that is not plain decimal digits that fit;
//! - `Transfer-Encoding` that is not exactly one field line holding exactly `chunked` (another coding, alone
//!   or before `chunked`, is 501; `chunked` twice, not last, or with parameters is 400);
//! - what httparse refuses: obsolete line folding, whitespace before a header's colon, a bare CR, control
//!   characters (0x00–0x1F but HTAB, and 0x7F) in a header value, and anything but visible ASCII in the
//!   method and target;
//! - a request target that is not origin-form (`/path?query`) or an `http`/`https` absolute-form (reduced to
//!   its path and query, RFC 9112 §3.2.2), or that holds a fragment (`#`);
//! - in a chunked body: a size line that is not hex digits (at least one, fitting in 64 bits), an optional
//!   `;` extension of visible characters, then CRLF; chunk data not followed by CRLF; a trailer section that
//!   does not parse as header fields. Extensions and trailer fields are checked and ignored: a trailer never
//!   changes how a request is framed or read.
//!
//! Lenient where nginx and httparse read a request alike and clients rely on it: a bare LF ends a line of the
//! head or the trailers (RFC 9112 §2.2 allows it), empty lines before a request line are skipped, header
//! values lose the spaces and tabs around them, `chunked` is matched without regard to case, and chunk sizes
//! may have leading zeros. `Host` is not checked: bankcache never reads it. A chunked body's framing is
//! bounded too (see [`Limits::max_body`]), so tiny chunks cannot fill memory.

use std::fmt::Write as _;

/// Most headers a request (or its trailer section) may carry.
const MAX_HEADERS: usize = 64;

/// Longest chunk-size line, extensions included. Real clients send a few bytes; the limit keeps a line that
/// never ends from growing the buffer.
const MAX_CHUNK_LINE: usize = 4096;

/// Size limits for requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest head (request line and headers), in bytes; also the longest trailer section.
    pub max_head: usize,
    /// Longest body, in bytes. A chunked body's framing (size lines, extensions, CRLFs) may take at most as
    /// much again plus `max_head`, so that tiny chunks cannot make a body's bytes in the buffer unbounded.
    pub max_body: usize,
}

/// A complete request found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed {
    /// Where the request starts.
    pub start: usize,
    /// Where its head ends (after the blank line).
    pub head_end: usize,
    /// Its body, contiguous (a chunked body has been decoded in place).
    pub body: (usize, usize),
    /// Where the next request starts.
    pub end: usize,
}

/// What splitting found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// A complete request.
    Request(Framed),
    /// More bytes are needed. `expects_continue`: the head is complete and asks for `100 Continue` before
    /// its client sends the body. `total`: the whole request's length, once its head says (so the reader can
    /// make room for the body in one allocation, and read it in place).
    NeedMore { expects_continue: bool, total: Option<usize> },
    /// The stream cannot be read on: answer with this status and close.
    Error(Status),
}

/// The error statuses the splitter can decide. Each closes the connection: after any of them, where the
/// next request would start is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A malformed or ambiguous request (400), and what was wrong with it.
    BadRequest(Malformed),
    /// Body over the limit.
    PayloadTooLarge,
    /// Head (or trailer section) over the limit.
    HeadersTooLarge,
    /// A transfer coding other than chunked: the framing may be sound, but the body cannot be decoded.
    NotImplemented,
}

impl Status {
    /// Status code and reason phrase.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Status::BadRequest(_) => (400, "Bad Request"),
            Status::PayloadTooLarge => (413, "Payload Too Large"),
            Status::HeadersTooLarge => (431, "Request Header Fields Too Large"),
            Status::NotImplemented => (501, "Not Implemented"),
        }
    }

    /// The error response's body: the reason phrase, then why where there is more to say, so that whoever
    /// reads it (a client, or a proxy's log) can tell what to fix.
    pub fn body(self) -> String {
        let (_, reason) = self.line();
        match self {
            Status::BadRequest(why) => format!("{reason}: {}", why.message()),
            Status::NotImplemented => format!("{reason}: only the chunked transfer coding is supported"),
            Status::PayloadTooLarge => format!("{reason}: the body is longer than max_value_bytes"),
            Status::HeadersTooLarge => format!("{reason}: the request line and headers are too long"),
        }
    }
}

/// Why a request was refused with 400: one variant per rule of the module's list, so tests and logs can tell
/// them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The request line's method or target holds a character not allowed there (a control character, a
    /// space, non-ASCII), or the line has the wrong number of parts.
    RequestLine,
    /// An HTTP version other than 1.0 and 1.1.
    Version,
    /// A line that does not end where it should (junk after the version, a bare CR between lines).
    LineEnding,
    /// A header name with whitespace before the colon, obsolete line folding, or a character not allowed.
    HeaderName,
    /// A header value with a control character or a bare CR.
    HeaderValue,
    /// A request target that is neither a path nor an `http`/`https` URL with a host and no user information.
    Target,
    /// A fragment (`#`) in the request target: clients never send one, and proxies disagree on what it means.
    Fragment,
    /// Both `Content-Length` and `Transfer-Encoding`: the classic smuggling request.
    LengthAndChunked,
    /// `Transfer-Encoding` in an HTTP/1.0 request, which cannot carry it.
    TransferEncodingOnHttp10,
    /// More than one `Content-Length` field line.
    DuplicateContentLength,
    /// A `Content-Length` that is not decimal digits, or does not fit.
    ContentLength,
    /// More than one `Transfer-Encoding` field line.
    DuplicateTransferEncoding,
    /// A `Transfer-Encoding` list where `chunked` is not the one and only coding (twice, not last, with
    /// parameters, an empty element).
    TransferCoding,
    /// A chunk-size line that is empty, not hex, too large for 64 bits, or not ended by CRLF.
    ChunkSize,
    /// A chunk extension holding a control character, a bare CR or an LF.
    ChunkExtension,
    /// A chunk-size line longer than the limit.
    ChunkLineTooLong,
    /// Chunk data not followed by CRLF (the data is longer or shorter than its size says).
    ChunkData,
    /// A trailer section that does not parse as header fields.
    Trailer,
}

impl Malformed {
    /// What the response's body says.
    pub fn message(self) -> &'static str {
        match self {
            Malformed::RequestLine => {
                "malformed request line (a control character, space or non-ASCII in the method or target)"
            }
            Malformed::Version => "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 only)",
            Malformed::LineEnding => {
                "malformed line ending (junk after the HTTP version, or a CR without an LF)"
            }
            Malformed::HeaderName => {
                "malformed header field (whitespace before the colon, obsolete line folding, or a bad name)"
            }
            Malformed::HeaderValue => "malformed header value (a control character or a bare CR)",
            Malformed::Target => {
                "the request target must be a path (/key) or an http(s):// URL with a host and no userinfo"
            }
            Malformed::Fragment => "a fragment (#) in the request target",
            Malformed::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Malformed::TransferEncodingOnHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            Malformed::DuplicateContentLength => "more than one Content-Length",
            Malformed::ContentLength => "Content-Length must be decimal digits",
            Malformed::DuplicateTransferEncoding => "more than one Transfer-Encoding",
            Malformed::TransferCoding => "Transfer-Encoding must be exactly chunked",
            Malformed::ChunkSize => {
                "malformed chunk size line (hex digits, an optional ;extension, then CRLF)"
            }
            Malformed::ChunkExtension => "malformed chunk extension (a control character, bare CR or LF)",
            Malformed::ChunkLineTooLong => "chunk size line too long",
            Malformed::ChunkData => "chunk data not followed by CRLF",
            Malformed::Trailer => "malformed trailer section",
        }
    }
}

fn bad(why: Malformed) -> Status {
    Status::BadRequest(why)
}

/// httparse's verdict on a head (or trailer section), as a status.
fn refused(e: httparse::Error) -> Status {
    match e {
        httparse::Error::TooManyHeaders => Status::HeadersTooLarge,
        httparse::Error::HeaderName => bad(Malformed::HeaderName),
        httparse::Error::HeaderValue => bad(Malformed::HeaderValue),
        httparse::Error::NewLine => bad(Malformed::LineEnding),
        httparse::Error::Version => bad(Malformed::Version),
        httparse::Error::Token | httparse::Error::Status => bad(Malformed::RequestLine),
    }
}

/// How the body of a request is delimited.
enum Body {
    Length(usize),
    Chunked,
}

/// The parts of a head the server acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head<'a> {
    /// `GET`, `PUT`, …
    pub method: &'a str,
    /// The path, without the query string, still percent-encoded; always starts with `/` (an absolute-form
    /// target is reduced to its path).
    pub path: &'a str,
    /// The query string, without `?` (empty when none).
    pub query: &'a str,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// The request asked for `100 Continue`.
    pub expects_continue: bool,
    /// The `X-Lifetime` header (the file API's lifetime of a PUT, in seconds).
    pub lifetime: Once<'a>,
    /// The `Authorization` header (read here, with the rest of the head, so that checking a bearer token
    /// costs no second parse).
    pub authorization: Once<'a>,
}

/// A header that means something only once: absent, given once (its value, trimmed), or given more than
/// once, which is refused rather than guessed at (two parsers could each pick another line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Once<'a> {
    /// No such line.
    Absent,
    /// One line, with this value.
    Value(&'a [u8]),
    /// More than one line.
    Repeated,
}

/// Splits the request starting at `start` of `buf`, decoding a chunked body in place.
pub fn split(buf: &mut [u8], start: usize, limits: &Limits) -> Split {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(&buf[start..]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() - start > limits.max_head {
                Split::Error(Status::HeadersTooLarge)
            } else {
                Split::NeedMore { expects_continue: false, total: None }
            };
        }
        Err(e) => return Split::Error(refused(e)),
    };
    if head_len > limits.max_head {
        return Split::Error(Status::HeadersTooLarge);
    }
    if let Err(why) = req.path.map_or(Err(Malformed::RequestLine), request_target) {
        return Split::Error(bad(why));
    }
    let body = match body_kind(req.headers, req.version.unwrap_or(1)) {
        Ok(body) => body,
        Err(status) => return Split::Error(status),
    };
    let expects_continue =
        header(req.headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    let head_end = start + head_len;
    match body {
        Body::Length(len) if len > limits.max_body => Split::Error(Status::PayloadTooLarge),
        Body::Length(len) if buf.len() - head_end < len => {
            Split::NeedMore { expects_continue, total: Some(head_len + len) }
        }
        Body::Length(len) => {
            Split::Request(Framed { start, head_end, body: (head_end, head_end + len), end: head_end + len })
        }
        Body::Chunked => match dechunk(buf, head_end, limits) {
            Ok(Some((body_end, end))) => {
                Split::Request(Framed { start, head_end, body: (head_end, body_end), end })
            }
            Ok(None) => Split::NeedMore { expects_continue, total: None },
            Err(status) => Split::Error(status),
        },
    }
}

/// The path and query a request target stands for (RFC 9112 §3.2). Origin-form (`/path?query`) is taken as
/// it is; absolute-form (`http://host/path?query`, what a client sends to a proxy) is reduced to its path and
/// query, `/` when it has no path. Any other form is refused rather than guessed at: asterisk-form
/// (`OPTIONS *`), authority-form (`CONNECT host:port`), a relative `key`, another scheme; and a target with
/// anything but visible ASCII in it is a malformed request line.
pub fn request_target(target: &str) -> Result<(&str, &str), Malformed> {
    // httparse takes any UTF-8 here; a target is visible ASCII (RFC 9112 §3.2), anything else percent-encoded.
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Malformed::RequestLine);
    }
    if target.contains('#') {
        return Err(Malformed::Fragment);
    }
    let path_and_query = if target.starts_with('/') {
        target
    } else {
        let rest = ["http://", "https://"]
            .iter()
            .find_map(|scheme| strip_prefix_ignore_case(target, scheme))
            .ok_or(Malformed::Target)?;
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        // RFC 9110 §4.2.4: user information in an http(s) URL is an error.
        if authority.is_empty() || authority.contains('@') {
            return Err(Malformed::Target);
        }
        &rest[authority_end..]
    };
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    Ok((if path.is_empty() { "/" } else { path }, query))
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let n = prefix.len();
    s.as_bytes().get(..n).filter(|p| p.eq_ignore_ascii_case(prefix.as_bytes())).and_then(|_| s.get(n..))
}

fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| trim_ows(h.value))
}

/// A value without the spaces and tabs around it (httparse already trims them; this does not rely on it).
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

/// How the body is framed (RFC 9112 §6.3), refusing every head two parsers could frame differently.
fn body_kind(headers: &[httparse::Header<'_>], version: u8) -> Result<Body, Status> {
    let named = |name: &'static str| headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name));
    let (mut codings, mut lengths) = (named("transfer-encoding"), named("content-length"));
    match (codings.next(), lengths.next()) {
        (Some(_), Some(_)) => Err(bad(Malformed::LengthAndChunked)),
        (Some(_), None) if version == 0 => Err(bad(Malformed::TransferEncodingOnHttp10)),
        (Some(_), None) if codings.next().is_some() => Err(bad(Malformed::DuplicateTransferEncoding)),
        (Some(coding), None) => transfer_coding(coding.value),
        (None, Some(_)) if lengths.next().is_some() => Err(bad(Malformed::DuplicateContentLength)),
        (None, Some(length)) => content_length(length.value).map(Body::Length),
        (None, None) => Ok(Body::Length(0)),
    }
}

/// `Transfer-Encoding`'s one value: exactly `chunked`. A list ending in `chunked` after other codings is
/// framed soundly but cannot be decoded here (501), and so is a list without `chunked`; `chunked` anywhere
/// else, twice, or a coding that is not a bare token (parameters, an empty element) is 400.
fn transfer_coding(value: &[u8]) -> Result<Body, Status> {
    let (mut codings, mut chunked, mut last_is_chunked) = (0, 0, false);
    for coding in value.split(|&b| b == b',').map(trim_ows) {
        if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
            return Err(bad(Malformed::TransferCoding));
        }
        codings += 1;
        last_is_chunked = coding.eq_ignore_ascii_case(b"chunked");
        chunked += usize::from(last_is_chunked);
    }
    match (codings, chunked, last_is_chunked) {
        (1, 1, _) => Ok(Body::Chunked),
        (_, 0, _) | (_, 1, true) => Err(Status::NotImplemented),
        _ => Err(bad(Malformed::TransferCoding)),
    }
}

/// RFC 9110's `tchar`: what a token (a method, a header name, a coding) is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `Content-Length`'s one value: decimal digits (no sign, no list) that fit in a `usize`.
fn content_length(value: &[u8]) -> Result<usize, Status> {
    let digits = trim_ows(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad(Malformed::ContentLength));
    }
    digits
        .iter()
        .try_fold(0usize, |n, &d| n.checked_mul(10)?.checked_add(usize::from(d - b'0')))
        .ok_or(bad(Malformed::ContentLength))
}

/// One step through a chunked body.
enum Step {
    /// A chunk of `size` bytes of data at `at`; the next chunk-size line starts at `next`.
    Data { at: usize, size: usize, next: usize },
    /// The last chunk and the trailer section, which end at `end`.
    Last { end: usize },
}

/// Decodes a complete chunked body that starts at `from`, moving the chunks' data together at `from`.
/// Returns where the decoded body ends and where the encoding ended, or `None` if it is not complete yet.
/// Nothing is moved until the whole body is there and sound, so a partial body can be scanned again later.
fn dechunk(buf: &mut [u8], from: usize, limits: &Limits) -> Result<Option<(usize, usize)>, Status> {
    let framing_allowed = limits.max_body.saturating_add(limits.max_head);
    let (mut pos, mut data) = (from, 0usize);
    let end = loop {
        match chunk(buf, pos, limits)? {
            None => return Ok(None),
            Some(Step::Data { size, next, .. }) => {
                data = data
                    .checked_add(size)
                    .filter(|&d| d <= limits.max_body)
                    .ok_or(Status::PayloadTooLarge)?;
                if next - from - data > framing_allowed {
                    return Err(Status::PayloadTooLarge);
                }
                pos = next;
            }
            Some(Step::Last { end }) => break end,
        }
    };
    // Each chunk's data moves down over the framing before it; a size line is always read before any data
    // is moved over it.
    let (mut write, mut pos) = (from, from);
    while let Ok(Some(Step::Data { at, size, next })) = chunk(buf, pos, limits) {
        buf.copy_within(at..at + size, write);
        write += size;
        pos = next;
    }
    Ok(Some((write, end)))
}

/// Reads the chunk whose size line starts at `pos` (the last chunk with its trailers, if its size is 0).
fn chunk(buf: &[u8], pos: usize, limits: &Limits) -> Result<Option<Step>, Status> {
    let Some((line, size)) = chunk_size_line(&buf[pos..])? else { return Ok(None) };
    let at = pos + line;
    if size == 0 {
        return Ok(trailers(buf, at, limits)?.map(|end| Step::Last { end }));
    }
    let size = usize::try_from(size).ok().filter(|&s| s <= limits.max_body).ok_or(Status::PayloadTooLarge)?;
    let data_end = at + size;
    match buf.get(data_end..data_end + 2) {
        Some(b"\r\n") => Ok(Some(Step::Data { at, size, next: data_end + 2 })),
        Some(_) => Err(bad(Malformed::ChunkData)),
        // Not all there yet; but a first byte after the data that is not CR is wrong already.
        None => match buf.get(data_end) {
            Some(&b) if b != b'\r' => Err(bad(Malformed::ChunkData)),
            _ => Ok(None),
        },
    }
}

/// Reads a chunk-size line at the start of `line`: `1*HEXDIG [ BWS ";" extension ] CRLF`. Returns its
/// length (CRLF included) and the size, or `None` if the line has not all arrived. The extension is
/// ignored, but may hold only visible characters, spaces and tabs (and obs-text): an LF or a bare CR in
/// it would end the line for some parsers and not for others.
fn chunk_size_line(line: &[u8]) -> Result<Option<(usize, u64)>, Status> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return if line.is_empty() { Ok(None) } else { Err(bad(Malformed::ChunkSize)) };
    }
    let size = line[..digits]
        .iter()
        .try_fold(0u64, |n, &d| n.checked_mul(16)?.checked_add(u64::from(char::from(d).to_digit(16)?)))
        .ok_or(bad(Malformed::ChunkSize))?;
    let (mut in_extension, mut space) = (false, false);
    let within_limit = &line[..line.len().min(MAX_CHUNK_LINE)];
    for (i, &b) in within_limit.iter().enumerate().skip(digits) {
        match b {
            b'\r' => {
                return match line.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') if in_extension || !space => Ok(Some((i + 2, size))),
                    // Whitespace after the size must lead to an extension.
                    Some(b'\n') => Err(bad(Malformed::ChunkSize)),
                    Some(_) if in_extension => Err(bad(Malformed::ChunkExtension)),
                    Some(_) => Err(bad(Malformed::ChunkSize)),
                };
            }
            b';' if !in_extension => in_extension = true,
            b' ' | b'\t' if !in_extension => space = true,
            b'\t' | b' '..=b'~' | 0x80.. if in_extension => {}
            _ if in_extension => return Err(bad(Malformed::ChunkExtension)),
            _ => return Err(bad(Malformed::ChunkSize)),
        }
    }
    if line.len() >= MAX_CHUNK_LINE {
        Err(bad(Malformed::ChunkLineTooLong))
    } else {
        Ok(None)
    }
}

/// Reads the trailer section at `at` (header fields, then an empty line), checked as the head's fields are
/// and then ignored. Returns where it ends, or `None` if it has not all arrived.
fn trailers(buf: &[u8], at: usize, limits: &Limits) -> Result<Option<usize>, Status> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(&buf[at..], &mut fields) {
        Ok(httparse::Status::Complete((len, _))) if len > limits.max_head => Err(Status::HeadersTooLarge),
        Ok(httparse::Status::Complete((len, _))) => Ok(Some(at + len)),
        Ok(httparse::Status::Partial) if buf.len() - at > limits.max_head => Err(Status::HeadersTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Status::HeadersTooLarge),
        Err(_) => Err(bad(Malformed::Trailer)),
    }
}

/// Reads the head of a request the splitter accepted.
pub fn head(bytes: &[u8]) -> Option<Head<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(bytes).ok()?;
    let (method, version) = (req.method?, req.version?);
    let (path, query) = request_target(req.path?).ok()?;
    // Every `Connection` line counts: `Connection: keep-alive` then `Connection: close` means close.
    let has = |token: &[u8]| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .any(|h| h.value.split(|&b| b == b',').any(|t| trim_ows(t).eq_ignore_ascii_case(token)))
    };
    // HTTP/1.1 keeps connections open unless told otherwise; HTTP/1.0 closes them unless told otherwise.
    let keep_alive = if version >= 1 { !has(b"close") } else { has(b"keep-alive") };
    let expects_continue =
        header(req.headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    let once = |name: &str| {
        let mut lines = req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name));
        match (lines.next(), lines.next()) {
            (None, _) => Once::Absent,
            (Some(h), None) => Once::Value(trim_ows(h.value)),
            (Some(_), Some(_)) => Once::Repeated,
        }
    };
    let (lifetime, authorization) = (once("x-lifetime"), once("authorization"));
    Some(Head { method, path, query, keep_alive, expects_continue, lifetime, authorization })
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Writes a response: status line, `Content-Length`, the extra headers, then the body (unless `head_only`,
/// for HEAD, which keeps the length of the body it would have had).
pub fn response(
    out: &mut Vec<u8>,
    code: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
    close: bool,
) {
    response_head(out, code, reason, headers, body.len(), close);
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// The head of a response whose body of `body_len` bytes follows (or not, for a HEAD request): what
/// [`response`] writes before the body.
pub fn response_head(
    out: &mut Vec<u8>,
    code: u16,
    reason: &str,
    headers: &[(&str, &str)],
    body_len: usize,
    close: bool,
) {
    let mut head = String::with_capacity(128);
    let _ = write!(head, "HTTP/1.1 {code} {reason}\r\nContent-Length: {body_len}\r\n");
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
}

/// An error response whose body is one line of plain text saying why, ending in a newline so that it reads
/// well in a terminal (`curl`) and in a proxy's log. Every error of the front that is not the REST API's
/// JSON envelope is written here, so that all of them look alike. Returns the body's length (what an access
/// log records, whether or not the body is sent).
pub fn text_error(
    out: &mut Vec<u8>,
    code: u16,
    reason: &str,
    headers: &[(&str, &str)],
    why: &str,
    head_only: bool,
    close: bool,
) -> usize {
    let mut all = Vec::with_capacity(headers.len() + 1);
    all.push(("Content-Type", "text/plain; charset=utf-8"));
    all.extend_from_slice(headers);
    let mut body = String::with_capacity(why.len() + 1);
    body.push_str(why);
    body.push('\n');
    response(out, code, reason, &all, body.as_bytes(), head_only, close);
    body.len()
}

/// A complete error response that closes the connection, for errors found while splitting: its body says
/// why ([`Status::body`]).
pub fn error_response(status: Status) -> Vec<u8> {
    let (code, reason) = status.line();
    let mut out = Vec::new();
    text_error(&mut out, code, reason, &[], &status.body(), false, true);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 1024, max_body: 100 };

    fn split_all(input: &[u8]) -> (Vec<(String, String)>, Split) {
        let mut buf = input.to_vec();
        let mut at = 0;
        let mut found = Vec::new();
        loop {
            match split(&mut buf, at, &LIMITS) {
                Split::Request(f) => {
                    let head = String::from_utf8_lossy(&buf[f.start..f.head_end]).into_owned();
                    let body = String::from_utf8_lossy(&buf[f.body.0..f.body.1]).into_owned();
                    found.push((head, body));
                    at = f.end;
                }
                other => return (found, other),
            }
        }
    }

    /// What splitting `input` alone gives: its one request's body, or the error.
    fn verdict(input: &[u8]) -> Result<String, Split> {
        match split_all(input) {
            (found, Split::NeedMore { .. }) if found.len() == 1 => Ok(found[0].1.clone()),
            (_, other) => Err(other),
        }
    }

    #[test]
    fn content_length_and_pipelining() {
        let (found, rest) =
            split_all(b"PUT /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /a HTTP/1.1\r\n\r\nGET /b HT");
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1, "hello");
        assert!(found[1].0.starts_with("GET /a"));
        assert_eq!(rest, Split::NeedMore { expects_continue: false, total: None });
    }

    #[test]
    fn chunked_bodies_are_decoded_in_place() {
        let input =
            b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n\
                      0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
        let (found, _) = split_all(input);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1, "hello world");
        assert!(found[1].0.starts_with("GET /next"));
    }

    #[test]
    fn every_cut_of_a_chunked_request_waits_then_completes() {
        let input = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for cut in 0..input.len() {
            let mut buf = input[..cut].to_vec();
            assert!(matches!(split(&mut buf, 0, &LIMITS), Split::NeedMore { .. }), "cut {cut}");
        }
        let (found, _) = split_all(input);
        assert_eq!(found[0].1, "abcde");
    }

    #[test]
    fn expect_continue_is_reported_while_the_body_is_missing() {
        let mut buf = b"PUT /k HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n".to_vec();
        let head_len = buf.len();
        assert_eq!(
            split(&mut buf, 0, &LIMITS),
            Split::NeedMore { expects_continue: true, total: Some(head_len + 3) }
        );
        buf.extend_from_slice(b"abc");
        assert!(matches!(split(&mut buf, 0, &LIMITS), Split::Request(_)));
    }

    #[test]
    fn limits() {
        let mut big = b"PUT /k HTTP/1.1\r\nContent-Length: 101\r\n\r\n".to_vec();
        assert_eq!(split(&mut big, 0, &LIMITS), Split::Error(Status::PayloadTooLarge));
        let mut chunked = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n".to_vec();
        assert_eq!(split(&mut chunked, 0, &LIMITS), Split::Error(Status::PayloadTooLarge));
        let mut long_head = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000)).into_bytes();
        assert_eq!(split(&mut long_head, 0, &LIMITS), Split::Error(Status::HeadersTooLarge));
        let too_many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: 1\r\n")).collect();
        let mut many = format!("GET / HTTP/1.1\r\n{too_many}\r\n").into_bytes();
        let roomy = Limits { max_head: 1 << 20, ..LIMITS };
        assert_eq!(split(&mut many, 0, &roomy), Split::Error(Status::HeadersTooLarge));
    }

    /// Every rule of the module's list, each with the reason it is refused for.
    #[test]
    fn refusals() {
        use Malformed::*;
        let chunked = "PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let cases: Vec<(String, Status)> = vec![
            ("NOT HTTP\r\n\r\n".into(), bad(RequestLine)),
            ("GET  / HTTP/1.1\r\n\r\n".into(), bad(RequestLine)),
            ("GET /a\x01b HTTP/1.1\r\n\r\n".into(), bad(RequestLine)),
            ("GET /a\x7fb HTTP/1.1\r\n\r\n".into(), bad(RequestLine)),
            // httparse takes any UTF-8 in the target; the rules take visible ASCII only (found by the http
            // fuzz target).
            ("GET /\u{e9} HTTP/1.1\r\n\r\n".into(), bad(RequestLine)),
            ("GET /k?\u{2028} HTTP/1.1\r\n\r\n".into(), bad(RequestLine)),
            ("GET http://h\u{e9}/k HTTP/1.1\r\n\r\n".into(), bad(RequestLine)),
            ("GET /a b HTTP/1.1\r\n\r\n".into(), bad(Version)),
            ("GET / HTTP/1.2\r\n\r\n".into(), bad(Version)),
            ("GET / HTTP/1.1 x\r\n\r\n".into(), bad(LineEnding)),
            ("GET / HTTP/1.1\rX: 1\r\n\r\n".into(), bad(LineEnding)),
            ("GET / HTTP/1.1\r\nX : 1\r\n\r\n".into(), bad(HeaderName)),
            ("GET / HTTP/1.1\r\nX\t: 1\r\n\r\n".into(), bad(HeaderName)),
            ("GET / HTTP/1.1\r\nX: 1\r\n 2\r\n\r\n".into(), bad(HeaderName)),
            ("GET / HTTP/1.1\r\nX: 1\r\n\t2\r\n\r\n".into(), bad(HeaderName)),
            ("GET / HTTP/1.1\r\n: 1\r\n\r\n".into(), bad(HeaderName)),
            ("GET / HTTP/1.1\r\nX: 1\r2\r\n\r\n".into(), bad(HeaderValue)),
            ("GET / HTTP/1.1\r\nX: \x00\r\n\r\n".into(), bad(HeaderValue)),
            ("GET / HTTP/1.1\r\nX: \x1b\r\n\r\n".into(), bad(HeaderValue)),
            ("GET / HTTP/1.1\r\nX: \x7f\r\n\r\n".into(), bad(HeaderValue)),
            ("GET rel HTTP/1.1\r\n\r\n".into(), bad(Target)),
            ("OPTIONS * HTTP/1.1\r\n\r\n".into(), bad(Target)),
            ("CONNECT h:80 HTTP/1.1\r\n\r\n".into(), bad(Target)),
            ("GET ftp://h/k HTTP/1.1\r\n\r\n".into(), bad(Target)),
            ("GET http:///k HTTP/1.1\r\n\r\n".into(), bad(Target)),
            ("GET http://u:p@h/k HTTP/1.1\r\n\r\n".into(), bad(Target)),
            ("GET /k#f HTTP/1.1\r\n\r\n".into(), bad(Fragment)),
            (
                "PUT /k HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
                bad(LengthAndChunked),
            ),
            (
                "PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\n".into(),
                bad(LengthAndChunked),
            ),
            (
                "PUT /k HTTP/1.0\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".into(),
                bad(LengthAndChunked),
            ),
            ("PUT /k HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n".into(), bad(TransferEncodingOnHttp10)),
            (
                "PUT /k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx".into(),
                bad(DuplicateContentLength),
            ),
            (
                "PUT /k HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\nxy".into(),
                bad(DuplicateContentLength),
            ),
            ("PUT /k HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\nx".into(), bad(ContentLength)),
            ("PUT /k HTTP/1.1\r\nContent-Length: +1\r\n\r\nx".into(), bad(ContentLength)),
            ("PUT /k HTTP/1.1\r\nContent-Length: -1\r\n\r\nx".into(), bad(ContentLength)),
            ("PUT /k HTTP/1.1\r\nContent-Length: 0x1\r\n\r\nx".into(), bad(ContentLength)),
            ("PUT /k HTTP/1.1\r\nContent-Length: \r\n\r\n".into(), bad(ContentLength)),
            ("PUT /k HTTP/1.1\r\nContent-Length: 1 1\r\n\r\nx".into(), bad(ContentLength)),
            ("PUT /k HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n".into(), bad(ContentLength)),
            (
                chunked.replace("\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n"),
                bad(DuplicateTransferEncoding),
            ),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n".into(), bad(TransferCoding)),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n".into(), bad(TransferCoding)),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n".into(), bad(TransferCoding)),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked,\r\n\r\n".into(), bad(TransferCoding)),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n".into(), bad(TransferCoding)),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n".into(), bad(TransferCoding)),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".into(), Status::NotImplemented),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".into(), Status::NotImplemented),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n".into(), Status::NotImplemented),
            (format!("{chunked}\r\n\r\n"), bad(ChunkSize)),
            (format!("{chunked};a\r\nx\r\n0\r\n\r\n"), bad(ChunkSize)),
            (format!("{chunked}zz\r\n"), bad(ChunkSize)),
            (format!("{chunked}+1\r\n"), bad(ChunkSize)),
            (format!("{chunked}-1\r\n"), bad(ChunkSize)),
            (format!("{chunked}0x1\r\n"), bad(ChunkSize)),
            (format!("{chunked}10000000000000000\r\n"), bad(ChunkSize)),
            (format!("{chunked}1 \r\nx\r\n"), bad(ChunkSize)),
            (format!("{chunked}1\nx\r\n"), bad(ChunkSize)),
            (format!("{chunked}1\rx"), bad(ChunkSize)),
            (format!("{chunked}1;a\nx\r\n"), bad(ChunkExtension)),
            (format!("{chunked}1;a\rx\r\n"), bad(ChunkExtension)),
            (format!("{chunked}1;a\x01\r\nx\r\n"), bad(ChunkExtension)),
            (format!("{chunked}1;a\x7f\r\nx\r\n"), bad(ChunkExtension)),
            (format!("{chunked}1;{}", "e".repeat(MAX_CHUNK_LINE)), bad(ChunkLineTooLong)),
            (format!("{chunked}{}1\r\n", "0".repeat(MAX_CHUNK_LINE)), bad(ChunkLineTooLong)),
            (format!("{chunked}1\r\nxy\r\n"), bad(ChunkData)),
            (format!("{chunked}1\r\nx\n"), bad(ChunkData)),
            (format!("{chunked}2\r\nx\r\n0\r\n\r\n"), bad(ChunkData)),
            (format!("{chunked}1\r\nx\r\n0\r\nnot a field\r\n\r\n"), bad(Trailer)),
            (format!("{chunked}1\r\nx\r\n0\r\nX: a\x01\r\n\r\n"), bad(Trailer)),
            (format!("{chunked}1\r\nx\r\n0\r\nX: a\r\n b\r\n\r\n"), bad(Trailer)),
            (format!("{chunked}1\r\nx\r\n0\r\nX: {}\r\n\r\n", "t".repeat(1100)), Status::HeadersTooLarge),
        ];
        for (input, status) in cases {
            let mut buf = input.clone().into_bytes();
            assert_eq!(split(&mut buf, 0, &LIMITS), Split::Error(status), "{input:?}");
        }
    }

    /// Every control character (but HTAB, and LF, which ends a line) anywhere in a header value or the
    /// target is refused.
    #[test]
    fn control_characters_are_refused() {
        for c in (0u8..0x20).chain([0x7f]).filter(|&c| c != b'\t' && c != b'\n') {
            let c = char::from(c);
            for value in [format!("{c}ab"), format!("a{c}b"), format!("ab{c}")] {
                let mut buf = format!("GET / HTTP/1.1\r\nX: {value}\r\nY: 1\r\n\r\n").into_bytes();
                let got = split(&mut buf, 0, &LIMITS);
                assert!(matches!(got, Split::Error(Status::BadRequest(_))), "{value:?} in a value: {got:?}");
            }
            for target in [format!("/{c}k"), format!("/k{c}"), format!("/k?{c}")] {
                let mut buf = format!("GET {target} HTTP/1.1\r\n\r\n").into_bytes();
                let got = split(&mut buf, 0, &LIMITS);
                assert!(
                    matches!(got, Split::Error(Status::BadRequest(_))),
                    "{target:?} as the target: {got:?}"
                );
            }
        }
    }

    /// What is lenient on purpose: every parser on the way agrees on it, and real clients send it.
    #[test]
    fn lenient_where_parsers_agree() {
        let chunked = "PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let cases: Vec<(String, &str)> = vec![
            ("PUT /k HTTP/1.1\nContent-Length: 1\n\nx".into(), "x"),
            ("\r\nPUT /k HTTP/1.1\r\nContent-Length: 1\r\n\r\nx".into(), "x"),
            ("PUT /k HTTP/1.1\r\nContent-Length:\t 1 \t\r\n\r\nx".into(), "x"),
            ("PUT /k HTTP/1.1\r\nContent-Length: 001\r\n\r\nx".into(), "x"),
            ("PUT /k HTTP/1.1\r\nX: a\tbé\r\nContent-Length: 1\r\n\r\nx".into(), "x"),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n1\r\nx\r\n0\r\n\r\n".into(), "x"),
            ("PUT /k HTTP/1.1\r\nTransfer-Encoding:  chunked \r\n\r\n1\r\nx\r\n0\r\n\r\n".into(), "x"),
            ("PUT /k HTTP/1.0\r\nContent-Length: 1\r\n\r\nx".into(), "x"),
            ("PUT http://h/k HTTP/1.1\r\nContent-Length: 1\r\n\r\nx".into(), "x"),
            ("GET /{}|\\^`\"<> HTTP/1.1\r\n\r\n".into(), ""),
            (format!("{chunked}0001\r\nx\r\n000\r\n\r\n"), "x"),
            (format!("{chunked}A\r\n0123456789\r\n0\r\n\r\n"), "0123456789"),
            (format!("{chunked}1;a=b;c=\"d e\"\r\nx\r\n0;last\r\n\r\n"), "x"),
            (format!("{chunked}1 ;a\r\nx\r\n0\r\n\r\n"), "x"),
            (format!("{chunked}1\t;\r\nx\r\n0\r\n\r\n"), "x"),
            (format!("{chunked}1\r\nx\r\n0\r\nContent-Length: 7\r\nTransfer-Encoding: gzip\r\n\r\n"), "x"),
            (format!("{chunked}1\r\nx\r\n0\r\n\n"), "x"),
        ];
        for (input, body) in cases {
            assert_eq!(verdict(input.as_bytes()), Ok(body.to_owned()), "{input:?}");
        }
    }

    /// Tiny chunks with long extensions cannot make a body's framing unbounded: it may take `max_body` plus
    /// `max_head` bytes beyond the data.
    #[test]
    fn chunk_framing_is_bounded() {
        let limits = Limits { max_head: 100, max_body: 100 };
        let chunk = format!("1;{}\r\nx\r\n", "e".repeat(40)); // 46 bytes of framing per byte of data
        let mut fits = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let head = fits.len();
        fits.extend(chunk.repeat(4).as_bytes());
        fits.extend_from_slice(b"0\r\n\r\n");
        assert!(matches!(split(&mut fits.clone(), 0, &limits), Split::Request(_)));
        let mut over = fits[..head].to_vec();
        over.extend(chunk.repeat(5).as_bytes());
        assert_eq!(split(&mut over, 0, &limits), Split::Error(Status::PayloadTooLarge));
    }

    #[test]
    fn request_targets() {
        for (target, want) in [
            ("/", Ok(("/", ""))),
            ("/a/b%20c?x=1&y", Ok(("/a/b%20c", "x=1&y"))),
            ("//k", Ok(("//k", ""))),
            ("/?", Ok(("/", ""))),
            ("http://127.0.0.1/abs-key", Ok(("/abs-key", ""))),
            ("HTTP://host:80/a/b?q", Ok(("/a/b", "q"))),
            ("https://h", Ok(("/", ""))),
            ("https://h?q=1", Ok(("/", "q=1"))),
            ("http://[::1]:8080/k", Ok(("/k", ""))),
            ("rel-key", Err(Malformed::Target)),
            ("*", Err(Malformed::Target)),
            ("h:80", Err(Malformed::Target)),
            ("http:/k", Err(Malformed::Target)),
            ("http://", Err(Malformed::Target)),
            ("http:///k", Err(Malformed::Target)),
            ("http://u@h/k", Err(Malformed::Target)),
            ("ftp://h/k", Err(Malformed::Target)),
            ("", Err(Malformed::Target)),
            ("/k#f", Err(Malformed::Fragment)),
            ("http://h/k#", Err(Malformed::Fragment)),
        ] {
            assert_eq!(request_target(target), want, "{target:?}");
        }
    }

    #[test]
    fn heads_and_keep_alive() {
        let h = head(b"GET /a/b%20c?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((h.method, h.path, h.query, h.keep_alive), ("GET", "/a/b%20c", "x=1", true));
        let h = head(b"PUT http://127.0.0.1/abs-key?q HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((h.path, h.query), ("/abs-key", "q"));
        assert!(head(b"PUT rel-key HTTP/1.1\r\n\r\n").is_none());
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().keep_alive);
        // Every Connection line counts.
        assert!(
            !head(b"GET / HTTP/1.1\r\nConnection: keep-alive\r\nConnection: x, close\r\n\r\n")
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn x_lifetime_is_read_once() {
        assert_eq!(head(b"PUT /k HTTP/1.1\r\n\r\n").unwrap().lifetime, Once::Absent);
        let h = head(b"PUT /k HTTP/1.1\r\nx-lifetime:  2.5 \r\n\r\n").unwrap();
        assert_eq!(h.lifetime, Once::Value(b"2.5"));
        let h = head(b"PUT /k HTTP/1.1\r\nX-Lifetime: 1\r\nX-LIFETIME: 1\r\n\r\n").unwrap();
        assert_eq!(h.lifetime, Once::Repeated);
    }

    #[test]
    fn authorization_is_read_once() {
        assert_eq!(head(b"GET /k HTTP/1.1\r\n\r\n").unwrap().authorization, Once::Absent);
        let h = head(b"GET /k HTTP/1.1\r\nauthorization:  Bearer t \r\n\r\n").unwrap();
        assert_eq!(h.authorization, Once::Value(b"Bearer t"));
        let h = head(b"GET /k HTTP/1.1\r\nAuthorization: a\r\nAUTHORIZATION: a\r\n\r\n").unwrap();
        assert_eq!(h.authorization, Once::Repeated);
    }

    #[test]
    fn error_responses_say_why_in_a_line_of_text_and_close() {
        let out = error_response(bad(Malformed::LengthAndChunked));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 400 Bad Request\r\nContent-Length: 55\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Connection: close\r\n\r\nBad Request: both Content-Length and Transfer-Encoding\n"
        );
        let out = error_response(Status::PayloadTooLarge);
        assert!(out.ends_with(
            b"Connection: close\r\n\r\nPayload Too Large: the body is longer than max_value_bytes\n"
        ));
        let out = error_response(Status::NotImplemented);
        assert!(out.ends_with(b"\r\n\r\nNot Implemented: only the chunked transfer coding is supported\n"));
    }

    #[test]
    fn responses() {
        let mut out = Vec::new();
        response(&mut out, 200, "OK", &[("X-Cache", "DISK")], b"body", false, false);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Cache: DISK\r\n\r\nbody");
        out.clear();
        response(&mut out, 200, "OK", &[], b"body", true, true);
        assert_eq!(out, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\n");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// `name` with each letter's case flipped where `mask` says.
        fn recase(name: &str, mask: &[bool]) -> String {
            name.chars()
                .zip(mask.iter().chain(std::iter::repeat(&false)))
                .map(|(c, &flip)| if flip { c.to_ascii_uppercase() } else { c.to_ascii_lowercase() })
                .collect()
        }

        /// Optional whitespace, as a sender may put around a header value.
        fn ows() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["", " ", "\t", "  ", " \t"])
        }

        /// A header that does not bear on framing.
        fn other_header() -> impl Strategy<Value = String> {
            ("[A-Za-z][A-Za-z0-9-]{0,10}", "[ -~]{0,20}")
                .prop_filter("not a framing header", |(n, _)| {
                    !["content-length", "transfer-encoding", "expect"]
                        .contains(&n.to_ascii_lowercase().as_str())
                })
                .prop_map(|(n, v)| format!("{n}: {}\r\n", v.trim()))
        }

        /// A valid request and the body it carries.
        fn request() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
            let target = prop_oneof![
                "/[a-z0-9/%._~-]{0,20}(\\?[a-z0-9=&]{0,8})?",
                "http://[a-z0-9.]{1,10}(:[0-9]{1,4})?/[a-z0-9/]{0,10}",
            ];
            (
                prop::sample::select(vec!["GET", "PUT", "POST", "DELETE", "HEAD"]),
                target,
                prop::collection::vec(other_header(), 0..4),
                prop::collection::vec(any::<u8>(), 0..60),
                any::<bool>(),
                prop::collection::vec(1usize..20, 1..8),
                prop::collection::vec(any::<bool>(), 17),
                ows(),
                prop::collection::vec(other_header(), 0..2),
            )
                .prop_map(
                    |(method, target, headers, body, chunked, sizes, mask, ows, trailers)| {
                        let mut out = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
                        for h in &headers {
                            out.extend_from_slice(h.as_bytes());
                        }
                        if chunked {
                            let name = recase("transfer-encoding", &mask);
                            out.extend(
                                format!("{name}:{ows}{}{ows}\r\n\r\n", recase("chunked", &mask)).as_bytes(),
                            );
                            let mut rest = &body[..];
                            for (i, size) in sizes.iter().cycle().enumerate() {
                                if rest.is_empty() {
                                    break;
                                }
                                let (piece, tail) = rest.split_at((*size).min(rest.len()));
                                let ext = if i % 3 == 1 { ";e=\"v\"" } else { "" };
                                out.extend(format!("{:x}{ext}\r\n", piece.len()).as_bytes());
                                out.extend_from_slice(piece);
                                out.extend_from_slice(b"\r\n");
                                rest = tail;
                            }
                            out.extend_from_slice(b"0\r\n");
                            for t in &trailers {
                                out.extend_from_slice(t.as_bytes());
                            }
                            out.extend_from_slice(b"\r\n");
                        } else {
                            let name = recase("content-length", &mask);
                            out.extend(format!("{name}:{ows}{}{ows}\r\n\r\n", body.len()).as_bytes());
                            out.extend_from_slice(&body);
                        }
                        (out, body)
                    },
                )
        }

        /// Feeds `input` to the splitter in the given pieces, as the reactor reads it, and returns the bodies
        /// of the requests framed, and the final state.
        fn feed(pieces: &[&[u8]]) -> (Vec<Vec<u8>>, Split) {
            let mut buf = Vec::new();
            let (mut at, mut bodies, mut last) =
                (0, Vec::new(), Split::NeedMore { expects_continue: false, total: None });
            for piece in pieces {
                buf.extend_from_slice(piece);
                loop {
                    last = split(&mut buf, at, &LIMITS);
                    match last {
                        Split::Request(f) => {
                            assert!(f.start <= f.head_end && f.head_end <= f.body.0);
                            assert!(f.body.0 <= f.body.1 && f.body.1 <= f.end && f.end <= buf.len());
                            bodies.push(buf[f.body.0..f.body.1].to_vec());
                            at = f.end;
                        }
                        Split::NeedMore { .. } => break,
                        Split::Error(_) => return (bodies, last),
                    }
                }
            }
            (bodies, last)
        }

        /// Codings sent along with a Content-Length: whichever it is, the pair is refused.
        const CODINGS: [&str; 7] =
            ["chunked", "Chunked", "CHUNKED", "gzip, chunked", "chunked, chunked", "identity", "gzip"];

        fn headers() -> impl Strategy<Value = Vec<String>> {
            prop::collection::vec(other_header(), 0..3)
        }

        /// Fragments a parser might trip on, strung together at random.
        fn noise() -> impl Strategy<Value = Vec<u8>> {
            let fragment = prop_oneof![
                Just(b"PUT /k HTTP/1.1\r\n".to_vec()),
                Just(b"Content-Length: ".to_vec()),
                Just(b"Transfer-Encoding: chunked".to_vec()),
                Just(b"\r\n".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\r".to_vec()),
                Just(b";".to_vec()),
                Just(b" ".to_vec()),
                "[0-9a-fA-F]{1,20}".prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 1..4),
            ];
            prop::collection::vec(fragment, 0..24).prop_map(|v| v.concat())
        }

        proptest! {
            /// Any valid pipeline, cut in two at every byte boundary (and fed a byte at a time), frames
            /// exactly as when it arrives whole, and gives back each request's body.
            #[test]
            fn any_cut_frames_the_same(requests in prop::collection::vec(request(), 1..4)) {
                let input: Vec<u8> = requests.iter().flat_map(|(r, _)| r.clone()).collect();
                let bodies: Vec<Vec<u8>> = requests.iter().map(|(_, b)| b.clone()).collect();
                let whole = feed(&[&input]);
                prop_assert_eq!(&whole.0, &bodies);
                prop_assert!(matches!(whole.1, Split::NeedMore { .. }), "the pipeline ends waiting for more");
                for cut in 0..=input.len() {
                    let (a, b) = input.split_at(cut);
                    prop_assert_eq!(&feed(&[a, b]), &whole, "cut at {}", cut);
                }
                let bytes: Vec<&[u8]> = input.chunks(1).collect();
                prop_assert_eq!(&feed(&bytes), &whole);
            }

            /// Any request with both Content-Length and Transfer-Encoding is refused, whatever the order, the
            /// case, the whitespace, the coding, duplicates, other headers or the version.
            #[test]
            fn length_and_chunked_are_always_refused(
                version in 0u8..2,
                te_first in any::<bool>(),
                mask_cl in prop::collection::vec(any::<bool>(), 14),
                mask_te in prop::collection::vec(any::<bool>(), 17),
                (ows1, ows2) in (ows(), ows()),
                length in "[0-9]{1,5}",
                coding in prop::sample::select(CODINGS.to_vec()),
                (before, between, after) in (headers(), headers(), headers()),
                twice in 0usize..3,
                body in prop::collection::vec(any::<u8>(), 0..40),
            ) {
                let cl = format!("{}:{ows1}{length}{ows2}\r\n", recase("content-length", &mask_cl));
                let te = format!("{}:{ows2}{coding}{ows1}\r\n", recase("transfer-encoding", &mask_te));
                let (first, second) = if te_first { (&te, &cl) } else { (&cl, &te) };
                let (before, between) = (before.concat(), between.concat());
                let mut input = format!("PUT /k HTTP/1.{version}\r\n{before}{first}{between}{second}");
                for _ in 0..twice {
                    input.push_str(if twice == 1 { first } else { second });
                }
                input.push_str(&after.concat());
                input.push_str("\r\n");
                let mut buf = input.clone().into_bytes();
                buf.extend_from_slice(&body);
                let refused = Split::Error(bad(Malformed::LengthAndChunked));
                prop_assert_eq!(split(&mut buf, 0, &LIMITS), refused, "{:?}", input);
            }

            /// A chunked body decodes to its bytes however it is cut into chunks.
            #[test]
            fn any_chunking_decodes_to_the_body(
                body in prop::collection::vec(any::<u8>(), 0..100),
                cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10),
            ) {
                let mut at: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
                at.extend([0, body.len()]);
                at.sort_unstable();
                at.dedup();
                let mut input = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for w in at.windows(2) {
                    input.extend(format!("{:X}\r\n", w[1] - w[0]).as_bytes());
                    input.extend_from_slice(&body[w[0]..w[1]]);
                    input.extend_from_slice(b"\r\n");
                }
                input.extend_from_slice(b"0\r\n\r\n");
                prop_assert_eq!(feed(&[&input]).0, vec![body]);
            }

            /// Whatever arrives, splitting never panics, and a request it frames lies within the buffer.
            #[test]
            fn any_bytes_are_split_safely(input in noise(), cut in any::<prop::sample::Index>()) {
                let (a, b) = input.split_at(cut.index(input.len() + 1));
                feed(&[a, b]);
                let mut headed = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                headed.extend_from_slice(&input);
                feed(&[&headed]);
            }
        }
    }
}
