//! HTTP/1.1, as pure functions of bytes: splitting a connection's stream into requests, reading a request's
//! head, and writing responses. Parsing is httparse's; nothing here does I/O or touches the store.
//!
//! A request is split once its head and its whole body have arrived. A `Content-Length` body is used where it
//! lies; a chunked body is decoded in place (the chunks' data moved together over their framing) once its
//! last chunk has arrived, so the worker always sees one contiguous body and a 1 MB value is never copied
//! between the socket buffer and the store's write.

use std::fmt::Write as _;

/// Most headers a request may carry.
const MAX_HEADERS: usize = 64;

/// Size limits for requests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest head (request line and headers), in bytes.
    pub max_head: usize,
    /// Longest body, in bytes.
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

/// The error statuses the splitter can decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Malformed request.
    BadRequest,
    /// Body over the limit.
    PayloadTooLarge,
    /// Head over the limit.
    HeadersTooLarge,
    /// A transfer coding other than chunked.
    NotImplemented,
}

impl Status {
    /// Status code and reason phrase.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Status::BadRequest => (400, "Bad Request"),
            Status::PayloadTooLarge => (413, "Payload Too Large"),
            Status::HeadersTooLarge => (431, "Request Header Fields Too Large"),
            Status::NotImplemented => (501, "Not Implemented"),
        }
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
    /// The path, without the query string, still percent-encoded.
    pub path: &'a str,
    /// The query string, without `?` (empty when none).
    pub query: &'a str,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// The request asked for `100 Continue`.
    pub expects_continue: bool,
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
        Err(httparse::Error::TooManyHeaders) => return Split::Error(Status::HeadersTooLarge),
        Err(_) => return Split::Error(Status::BadRequest),
    };
    if head_len > limits.max_head {
        return Split::Error(Status::HeadersTooLarge);
    }
    let body = match body_kind(req.headers) {
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
        Body::Chunked => match dechunk(buf, head_end, limits.max_body) {
            Ok(Some((body_end, end))) => {
                Split::Request(Framed { start, head_end, body: (head_end, body_end), end })
            }
            Ok(None) => Split::NeedMore { expects_continue, total: None },
            Err(status) => Split::Error(status),
        },
    }
}

fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.trim_ascii())
}

fn body_kind(headers: &[httparse::Header<'_>]) -> Result<Body, Status> {
    if let Some(te) = header(headers, "transfer-encoding") {
        return if te.eq_ignore_ascii_case(b"chunked") {
            Ok(Body::Chunked)
        } else {
            Err(Status::NotImplemented)
        };
    }
    let mut lengths = headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok(Body::Length(0)),
        (Some(h), None) => std::str::from_utf8(h.value.trim_ascii())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map(Body::Length)
            .ok_or(Status::BadRequest),
        // Two lengths are a request-smuggling hazard: refuse.
        (Some(_), Some(_)) => Err(Status::BadRequest),
    }
}

/// Decodes a complete chunked body that starts at `from`, moving the chunks' data together at `from`.
/// Returns where the decoded body ends and where the encoding ended, or `None` if it is not complete yet.
/// Nothing is moved until the whole body is there, so a partial body can be scanned again later.
fn dechunk(buf: &mut [u8], from: usize, max_body: usize) -> Result<Option<(usize, usize)>, Status> {
    let mut chunks: Vec<(usize, usize)> = Vec::new();
    let mut pos = from;
    let mut total = 0usize;
    loop {
        let (used, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(found)) => found,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(Status::BadRequest),
        };
        let size = usize::try_from(size).map_err(|_| Status::PayloadTooLarge)?;
        pos += used;
        if size == 0 {
            // Optional trailer fields, then the blank line that ends the body.
            loop {
                let Some(line_end) = find_crlf(&buf[pos..]) else { return Ok(None) };
                pos += line_end + 2;
                if line_end == 0 {
                    break;
                }
            }
            break;
        }
        total = total.checked_add(size).filter(|&t| t <= max_body).ok_or(Status::PayloadTooLarge)?;
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(Status::BadRequest);
        }
        chunks.push((pos, size));
        pos += size + 2;
    }
    let mut write = from;
    for (at, size) in chunks {
        buf.copy_within(at..at + size, write);
        write += size;
    }
    Ok(Some((write, pos)))
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Reads the head of a request the splitter accepted.
pub fn head(bytes: &[u8]) -> Option<Head<'_>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(bytes).ok()?;
    let (method, target, version) = (req.method?, req.path?, req.version?);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let connection = header(req.headers, "connection");
    let has = |token: &[u8]| {
        connection
            .is_some_and(|v| v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token)))
    };
    // HTTP/1.1 keeps connections open unless told otherwise; HTTP/1.0 closes them unless told otherwise.
    let keep_alive = if version >= 1 { !has(b"close") } else { has(b"keep-alive") };
    let expects_continue =
        header(req.headers, "expect").is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    Some(Head { method, path, query, keep_alive, expects_continue })
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
    let mut head = String::with_capacity(128);
    let _ = write!(head, "HTTP/1.1 {code} {reason}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    out.extend_from_slice(head.as_bytes());
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// A complete error response that closes the connection, for errors found while splitting.
pub fn error_response(status: Status) -> Vec<u8> {
    let (code, reason) = status.line();
    let mut out = Vec::new();
    response(&mut out, code, reason, &[], reason.as_bytes(), false, true);
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
        let input = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
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
    fn limits_and_malformed_requests() {
        let mut big = b"PUT /k HTTP/1.1\r\nContent-Length: 101\r\n\r\n".to_vec();
        assert_eq!(split(&mut big, 0, &LIMITS), Split::Error(Status::PayloadTooLarge));
        let mut chunked = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n".to_vec();
        assert_eq!(split(&mut chunked, 0, &LIMITS), Split::Error(Status::PayloadTooLarge));
        let mut long_head = format!("GET /{} HTTP/1.1\r\n", "a".repeat(2000)).into_bytes();
        assert_eq!(split(&mut long_head, 0, &LIMITS), Split::Error(Status::HeadersTooLarge));
        for bad in [
            &b"NOT HTTP\r\n\r\n"[..],
            b"PUT /k HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"PUT /k HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
            b"PUT /k HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert_eq!(split(&mut bad.to_vec(), 0, &LIMITS), Split::Error(Status::BadRequest), "{bad:?}");
        }
        let mut gzip = b"PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec();
        assert_eq!(split(&mut gzip, 0, &LIMITS), Split::Error(Status::NotImplemented));
    }

    #[test]
    fn heads_and_keep_alive() {
        let h = head(b"GET /a/b%20c?x=1 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((h.method, h.path, h.query, h.keep_alive), ("GET", "/a/b%20c", "x=1", true));
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap().keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().keep_alive);
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
}
