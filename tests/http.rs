//! Black-box tests of the HTTP/1.1 front (the second listener): CacheFS's file API on `/<key>`, the
//! original CacheServer's REST API on `/bank/…`, `/banks` and `/api/…`, `/stats`, the one value model
//! shared with the JSON port, and the HTTP framing itself (keep-alive, pipelining, chunked bodies,
//! `Expect: 100-continue`, limits, closes, the idle timeout). Everything goes over raw TCP with the
//! small helpers below, except one test that drives the real `curl`.

mod common;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;

// ---------------------------------------------------------------------------
// Raw HTTP helpers.
// ---------------------------------------------------------------------------

/// One HTTP response as read off the wire.
#[derive(Debug)]
struct Response {
    /// The status line without its CRLF, e.g. `HTTP/1.1 200 OK`.
    status: String,
    /// Headers with lower-cased names (a repeated header's values joined with `, `).
    headers: BTreeMap<String, String>,
    /// Every header line in order, names as sent (to check for duplicates).
    raw_headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// The header names present, lower-case, sorted.
    fn header_names(&self) -> Vec<&str> {
        self.headers.keys().map(String::as_str).collect()
    }

    fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status line and the exact body.
    #[track_caller]
    fn expect(&self, status: &str, body: &[u8]) {
        assert_eq!(self.status, status, "status line; response {}", self.show());
        assert_eq!(
            self.body,
            body,
            "body: got {:?}, expected {:?}; response {}",
            self.body_text(),
            String::from_utf8_lossy(body),
            self.show()
        );
    }

    /// Asserts a header's exact value (`None`: the header is absent).
    #[track_caller]
    fn expect_header(&self, name: &str, value: Option<&str>) {
        assert_eq!(self.header(name), value, "header {name}; response {}", self.show());
    }

    /// Asserts a REST reply: status, `Content-Type: application/json` and the exact envelope.
    #[track_caller]
    fn expect_json(&self, status: &str, envelope: &str) {
        self.expect(status, envelope.as_bytes());
        self.expect_header("content-type", Some("application/json"));
    }

    /// A short printable summary for assertion messages.
    fn show(&self) -> String {
        let body = if self.body.len() > 200 {
            format!("{:?}… ({} bytes)", String::from_utf8_lossy(&self.body[..200]), self.body.len())
        } else {
            format!("{:?}", self.body_text())
        };
        format!("{{{:?} {:?} body {body}}}", self.status, self.raw_headers)
    }
}

/// A raw HTTP client connection.
struct Http {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Http {
    fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr)
            .unwrap_or_else(|e| panic!("cannot connect to the HTTP port at {addr}: {e}"));
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_nodelay(true).unwrap();
        let writer = stream.try_clone().unwrap();
        Http { reader: BufReader::new(stream), writer }
    }

    /// Writes `bytes` exactly as given.
    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap_or_else(|e| panic!("write of {} bytes failed: {e}", bytes.len()));
    }

    /// Reads one CRLF-terminated line (returned without the CRLF).
    #[track_caller]
    fn read_crlf_line(&mut self, what: &str) -> String {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => panic!("connection closed while reading the {what}"),
            Ok(_) => {}
            Err(e) => panic!(
                "no {what} within {READ_TIMEOUT:?} ({e}); partial: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
        assert!(buf.ends_with(b"\r\n"), "{what} does not end in CRLF: {:?}", String::from_utf8_lossy(&buf));
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).unwrap_or_else(|e| panic!("{what} is not UTF-8: {:?}", e.as_bytes()))
    }

    /// Reads a status line and headers.
    #[track_caller]
    fn read_head(&mut self) -> Response {
        let status = self.read_crlf_line("status line");
        let mut headers = BTreeMap::new();
        let mut raw_headers = Vec::new();
        loop {
            let line = self.read_crlf_line("header line");
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("malformed header line {line:?} after {status:?}"));
            let value = value.trim().to_string();
            raw_headers.push((name.to_string(), value.clone()));
            headers
                .entry(name.to_ascii_lowercase())
                .and_modify(|v: &mut String| {
                    v.push_str(", ");
                    v.push_str(&value)
                })
                .or_insert(value);
        }
        Response { status, headers, raw_headers, body: Vec::new() }
    }

    /// Reads one complete response, its body by `Content-Length` (none if `head_only`, for HEAD). An
    /// interim `100 Continue` fails the test (see [`Http::read_response_after_continue`]).
    #[track_caller]
    fn read_response_opt(&mut self, head_only: bool) -> Response {
        let mut r = self.read_head();
        assert!(!r.status.starts_with("HTTP/1.1 1"), "unexpected interim response {}", r.show());
        let lengths = r.raw_headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")).count();
        assert_eq!(lengths, 1, "a response needs exactly one Content-Length: {}", r.show());
        let len: usize = r.header("content-length").unwrap().parse().expect("Content-Length is a number");
        if !head_only {
            let mut body = vec![0; len];
            if let Err(e) = self.reader.read_exact(&mut body) {
                panic!("body of {len} bytes not received ({e}); head {}", r.show());
            }
            r.body = body;
        }
        r
    }

    #[track_caller]
    fn read_response(&mut self) -> Response {
        self.read_response_opt(false)
    }

    /// Reads the exact interim response `HTTP/1.1 100 Continue\r\n\r\n`.
    #[track_caller]
    fn read_continue(&mut self) {
        let mut got = vec![0; http_continue().len()];
        if let Err(e) = self.reader.read_exact(&mut got) {
            panic!(
                "no `100 Continue` within {READ_TIMEOUT:?} ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            );
        }
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(http_continue()));
    }

    /// Reads a response that may be preceded by one `100 Continue` (whether one came is returned).
    #[track_caller]
    fn read_response_after_continue(&mut self) -> (bool, Response) {
        let head = self.read_head();
        if head.status == "HTTP/1.1 100 Continue" {
            assert!(head.headers.is_empty(), "100 Continue with headers: {}", head.show());
            (true, self.read_response())
        } else {
            // Not interim: finish reading it as a final response.
            let len: usize = head.header("content-length").expect("Content-Length").parse().unwrap();
            let mut body = vec![0; len];
            self.reader.read_exact(&mut body).unwrap();
            (false, Response { body, ..head })
        }
    }

    /// Sends one request and reads its response.
    #[track_caller]
    fn call(&mut self, method: &str, target: &str, body: &[u8]) -> Response {
        self.send(&request(method, target, &[], body));
        self.read_response_opt(method == "HEAD")
    }

    #[track_caller]
    fn get(&mut self, target: &str) -> Response {
        self.call("GET", target, b"")
    }

    #[track_caller]
    fn put(&mut self, target: &str, body: &[u8]) -> Response {
        self.call("PUT", target, body)
    }

    #[track_caller]
    fn delete(&mut self, target: &str) -> Response {
        self.call("DELETE", target, b"")
    }

    /// Asserts the server closes the connection now: a clean EOF with no further bytes.
    #[track_caller]
    fn expect_eof(&mut self) {
        common::expect_eof(&mut self.reader);
    }

    /// Asserts the server closes the connection: EOF, or a reset, with no further bytes.
    #[track_caller]
    fn expect_closed(&mut self) {
        common::expect_closed(&mut self.reader);
    }

    /// Asserts nothing arrives within `wait` (the connection is still open and quiet).
    #[track_caller]
    fn expect_quiet(&mut self, wait: Duration) {
        self.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut b = [0u8; 1];
        match self.reader.read(&mut b) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Ok(0) => panic!("the server closed a connection that should have stayed open"),
            Ok(_) => panic!("unexpected byte {:?} from the server", b[0] as char),
            Err(e) => panic!("unexpected error {e}"),
        }
        self.reader.get_ref().set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    }
}

/// The exact interim response to `Expect: 100-continue`.
fn http_continue() -> &'static [u8] {
    b"HTTP/1.1 100 Continue\r\n\r\n"
}

/// An HTTP/1.1 request with `Host`, the extra header lines, and `Content-Length` when there is a body
/// (or always for PUT/POST).
fn request(method: &str, target: &str, extra: &[&str], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: test\r\n");
    for h in extra {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if !body.is_empty() || method == "PUT" || method == "POST" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Every byte value, 0 to 255, twice (in two orders).
fn all_bytes() -> Vec<u8> {
    let mut v: Vec<u8> = (0..=255u8).collect();
    v.extend((0..=255u8).rev());
    v
}

/// `n` deterministic pseudo-random bytes.
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The file API's 404 body: the JSON port's words for a missing key, as one line.
fn gone(key: &str) -> Vec<u8> {
    format!("Key {key} doesn't exist\n").into_bytes()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The JSON `get` reply of a byte value.
fn ok_b64(bytes: &[u8]) -> String {
    format!("{{\"status\": \"ok\", \"data\": \"{}\", \"encoding\": \"base64\"}}\n", b64(bytes))
}

/// The size of a record on disk: 64-byte header, bank, key, value.
fn record_size(bank: &str, key: &str, value_len: usize) -> usize {
    64 + bank.len() + key.len() + value_len
}

/// Starts a server with a fresh data directory (returned so it outlives the server).
fn start_with_data_dir(flags: &[&str]) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let mut args = vec!["--data-dir", path.as_str()];
    args.extend_from_slice(flags);
    (TestServer::start(&args), dir)
}

// ---------------------------------------------------------------------------
// File API.
// ---------------------------------------------------------------------------

/// Without a data dir: PUT → `200 OK` `ok` with no X-Position; GET → the bytes with `X-Cache: MEMC`,
/// no X-Position, no Content-Type; HEAD → same Content-Length, no body; DELETE → `ok`; then GET and
/// DELETE → 404 with the same line, `Key <key> doesn't exist`. All on one connection.
#[test]
fn file_api_memory_only() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());

    let r = h.get("/foo");
    r.expect("HTTP/1.1 404 Not Found", &gone("foo"));
    r.expect_header("x-cache", None);

    let r = h.put("/foo", b"hello world");
    r.expect("HTTP/1.1 200 OK", b"ok");
    assert_eq!(r.header_names(), ["content-length"], "PUT without a data dir: {}", r.show());

    for _ in 0..2 {
        let r = h.get("/foo");
        r.expect("HTTP/1.1 200 OK", b"hello world");
        r.expect_header("x-cache", Some("MEMC"));
        r.expect_header("x-position", None);
        r.expect_header("content-type", None);
    }

    let r = h.call("HEAD", "/foo", b"");
    r.expect("HTTP/1.1 200 OK", b"");
    r.expect_header("content-length", Some("11"));
    r.expect_header("x-cache", Some("MEMC"));
    let r = h.call("HEAD", "/nope", b"");
    assert_eq!(r.status, "HTTP/1.1 404 Not Found");
    r.expect_header("content-length", Some(&gone("nope").len().to_string()));

    // The HEADs left no body bytes behind: the next response parses cleanly.
    h.delete("/foo").expect("HTTP/1.1 200 OK", b"ok");
    h.get("/foo").expect("HTTP/1.1 404 Not Found", &gone("foo"));
    h.delete("/foo").expect("HTTP/1.1 404 Not Found", &gone("foo"));
}

/// With a data dir, PUT answers `X-Position: <volume>,<offset>,<size>` with size = 64 + bank + key +
/// body: the first record at `0,0,83`, the next right after it; GET from disk repeats it with
/// `X-Cache: DISK`.
#[test]
fn file_api_positions_with_data_dir() {
    let (s, _dir) = start_with_data_dir(&[]);
    let mut h = Http::connect(s.http_addr());

    let first = record_size("files", "foo", 11);
    assert_eq!(first, 83);
    let r = h.put("/foo", b"hello world");
    r.expect("HTTP/1.1 200 OK", b"ok");
    r.expect_header("x-position", Some("0,0,83"));

    let second = record_size("files", "bar", 13);
    let r = h.put("/bar", b"what the hell");
    r.expect("HTTP/1.1 200 OK", b"ok");
    r.expect_header("x-position", Some(&format!("0,{first},{second}")));

    let r = h.get("/foo");
    r.expect("HTTP/1.1 200 OK", b"hello world");
    r.expect_header("x-cache", Some("DISK"));
    r.expect_header("x-position", Some("0,0,83"));
    let r = h.get("/bar");
    r.expect("HTTP/1.1 200 OK", b"what the hell");
    r.expect_header("x-position", Some(&format!("0,{first},{second}")));
    r.expect_header("x-cache", Some("DISK"));

    let r = h.call("HEAD", "/bar", b"");
    r.expect("HTTP/1.1 200 OK", b"");
    r.expect_header("content-length", Some("13"));
    r.expect_header("x-position", Some(&format!("0,{first},{second}")));
}

/// With a data dir and the default cache_after_miss_count 3: GETs 1–3 say `X-Cache: DISK`, the 4th
/// and later `MEMC`; an overwrite makes the next GET `DISK` with the new body and position; a
/// delete gives 404.
#[test]
fn file_api_memory_admission_after_three_disk_reads() {
    let (s, _dir) = start_with_data_dir(&[]);
    let mut h = Http::connect(s.http_addr());
    h.put("/k", b"v1").expect("HTTP/1.1 200 OK", b"ok");
    let mut tiers = Vec::new();
    for _ in 0..5 {
        let r = h.get("/k");
        r.expect("HTTP/1.1 200 OK", b"v1");
        tiers.push(r.header("x-cache").unwrap_or("(none)").to_string());
        // The position is given whenever there is a disk store, memory hits included.
        r.expect_header("x-position", Some(&format!("0,0,{}", record_size("files", "k", 2))));
    }
    assert_eq!(tiers, ["DISK", "DISK", "DISK", "MEMC", "MEMC"]);

    let r = h.put("/k", b"version two");
    r.expect("HTTP/1.1 200 OK", b"ok");
    let at = record_size("files", "k", 2);
    let new_position = format!("0,{at},{}", record_size("files", "k", 11));
    r.expect_header("x-position", Some(&new_position));
    let r = h.get("/k");
    r.expect("HTTP/1.1 200 OK", b"version two");
    r.expect_header("x-cache", Some("DISK"));
    r.expect_header("x-position", Some(&new_position));

    h.delete("/k").expect("HTTP/1.1 200 OK", b"ok");
    h.get("/k").expect("HTTP/1.1 404 Not Found", &gone("k"));
}

/// `--cache-after-miss-count 1`: the first GET comes from disk, the second from memory.
#[test]
fn file_api_cache_after_miss_count_flag() {
    let (s, _dir) = start_with_data_dir(&["--cache-after-miss-count", "1"]);
    let mut h = Http::connect(s.http_addr());
    h.put("/k", b"abc").expect("HTTP/1.1 200 OK", b"ok");
    let tiers: Vec<String> = (0..3)
        .map(|_| {
            let r = h.get("/k");
            r.expect("HTTP/1.1 200 OK", b"abc");
            r.header("x-cache").unwrap_or("(none)").to_string()
        })
        .collect();
    assert_eq!(tiers, ["DISK", "MEMC", "MEMC"]);
}

/// The key is the path after the first `/`, percent-decoded, slashes allowed, the query string
/// ignored; the same key is seen by the JSON port in bank `files`.
#[test]
fn file_api_keys_decode_and_ignore_the_query() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();

    h.put("/a/b/c?ignored=1", b"nested").expect("HTTP/1.1 200 OK", b"ok");
    h.get("/a%2Fb%2Fc").expect("HTTP/1.1 200 OK", b"nested");
    h.get("/a/b/c?x=y&z").expect("HTTP/1.1 200 OK", b"nested");
    c.check(&get("files", "a/b/c"), &ok_b64(b"nested"));
    c.check(&get("files", "a/b/c?ignored=1"), &no_key("a/b/c?ignored=1"));

    h.put("/sp%20ace", b"spaced").expect("HTTP/1.1 200 OK", b"ok");
    c.check(&get("files", "sp ace"), &ok_b64(b"spaced"));
    h.put("/caf%C3%A9", b"utf8").expect("HTTP/1.1 200 OK", b"ok");
    c.check(&get("files", "café"), &ok_b64(b"utf8"));
    h.get("/caf%c3%a9").expect("HTTP/1.1 200 OK", b"utf8");

    // Missing-key texts show the decoded key.
    h.get("/no%20such").expect("HTTP/1.1 404 Not Found", &gone("no such"));
    h.delete("/no%20such").expect("HTTP/1.1 404 Not Found", &gone("no such"));
}

/// The whole seconds of a response's `Cache-Control: max-age=N`.
#[track_caller]
fn max_age(r: &Response) -> u64 {
    let value = r.header("cache-control").unwrap_or_else(|| panic!("no Cache-Control: {}", r.show()));
    let n = value.strip_prefix("max-age=").unwrap_or_else(|| panic!("not a max-age: {}", r.show()));
    n.parse().unwrap_or_else(|_| panic!("max-age is not whole seconds: {}", r.show()))
}

/// A response's `Expires`, read back as an IMF-fixdate, in Unix seconds.
#[track_caller]
fn expires(r: &Response) -> u64 {
    let value = r.header("expires").unwrap_or_else(|| panic!("no Expires: {}", r.show()));
    let at = httpdate::parse_http_date(value).unwrap_or_else(|e| panic!("Expires {value:?}: {e}"));
    at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// `PUT /<key>?lifetime=S` and `X-Lifetime: S` give a file a lifetime, read as the JSON port reads
/// `lifetime`: GET and HEAD then answer `Cache-Control: max-age=<whole seconds left>` and `Expires` (an
/// IMF-fixdate), and once it has passed the file is a 404. Without a lifetime (or with 0) neither header
/// is sent; a negative lifetime stores a file already gone; a very long one is capped where each header's
/// format ends, and an absurd one (past the store's deadlines) is kept as none. Other query parameters are still ignored, and both ways may be given if they agree.
#[test]
fn file_api_lifetime_gives_cache_control_and_expires() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());

    let before = unix_now();
    h.put("/short?lifetime=1", b"brief").expect("HTTP/1.1 200 OK", b"ok");
    let r = h.get("/short");
    r.expect("HTTP/1.1 200 OK", b"brief");
    assert!(max_age(&r) <= 1, "{}", r.show());
    assert!((before..=unix_now() + 1).contains(&expires(&r)), "{}", r.show());
    let r = h.call("HEAD", "/short", b"");
    r.expect("HTTP/1.1 200 OK", b"");
    assert!(max_age(&r) <= 1 && r.header("expires").is_some(), "HEAD: {}", r.show());
    let gone_in_time =
        eventually(Duration::from_secs(5), || h.get("/short").status == "HTTP/1.1 404 Not Found");
    assert!(gone_in_time, "a file put with lifetime=1 is still there after 5 s");
    h.get("/short").expect("HTTP/1.1 404 Not Found", &gone("short"));

    // The header, alone or with the same number as the parameter.
    h.send(&request("PUT", "/header", &["X-Lifetime: 100"], b"h"));
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    let r = h.get("/header");
    assert!((98..=100).contains(&max_age(&r)), "{}", r.show());
    let deadline = expires(&r);
    assert!((before + 99..=unix_now() + 100).contains(&deadline), "{}", r.show());
    h.send(&request("PUT", "/both?x=1&lifetime=100&y", &["x-lifetime: 1e2"], b"b"));
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    assert!((98..=100).contains(&max_age(&h.get("/both"))));

    // No lifetime, or 0: the file never expires and says nothing about it.
    h.put("/plain?other=1", b"p").expect("HTTP/1.1 200 OK", b"ok");
    h.put("/zero?lifetime=0", b"z").expect("HTTP/1.1 200 OK", b"ok");
    for key in ["/plain", "/zero"] {
        for method in ["GET", "HEAD"] {
            let r = h.call(method, key, b"");
            assert_eq!(r.status, "HTTP/1.1 200 OK", "{method} {key}: {}", r.show());
            r.expect_header("cache-control", None);
            r.expect_header("expires", None);
        }
    }
    // Overwritten without a lifetime, the file loses it (a put replaces the whole entry).
    h.put("/header", b"h2").expect("HTTP/1.1 200 OK", b"ok");
    h.get("/header").expect_header("cache-control", None);

    // Negative: already expired. Absurd: as far as each format reaches.
    h.put("/dead?lifetime=-1", b"d").expect("HTTP/1.1 200 OK", b"ok");
    h.get("/dead").expect("HTTP/1.1 404 Not Found", &gone("dead"));
    // 1e13 s is some 300,000 years: past what either header can say.
    h.put("/far?lifetime=1e13", b"f").expect("HTTP/1.1 200 OK", b"ok");
    let r = h.get("/far");
    r.expect_header("cache-control", Some("max-age=2147483648"));
    r.expect_header("expires", Some("Fri, 31 Dec 9999 23:59:59 GMT"));
    // 1e300 s is past what the store keeps a deadline for: it keeps the file as it would with none.
    h.put("/farther?lifetime=1e300", b"f").expect("HTTP/1.1 200 OK", b"ok");
    let r = h.get("/farther");
    r.expect("HTTP/1.1 200 OK", b"f");
    r.expect_header("cache-control", None);
}

/// A lifetime that is not a number, given twice, or given both ways with different numbers is a `400`
/// with a line of text saying why, nothing is stored, and the connection goes on.
#[test]
fn file_api_bad_lifetimes_are_400_saying_why() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let cases: [(&str, &[&str], &str); 8] = [
        ("/k?lifetime=soon", &[], "Bad Request: lifetime must be a number of seconds (?lifetime=)"),
        ("/k?lifetime=", &[], "Bad Request: lifetime must be a number of seconds (?lifetime=)"),
        ("/k?lifetime=inf", &[], "Bad Request: lifetime must be a number of seconds (?lifetime=)"),
        ("/k", &["X-Lifetime: 10s"], "Bad Request: lifetime must be a number of seconds (X-Lifetime)"),
        ("/k", &["X-Lifetime:"], "Bad Request: lifetime must be a number of seconds (X-Lifetime)"),
        ("/k?lifetime=1&lifetime=1", &[], "Bad Request: ?lifetime= is given more than once"),
        ("/k", &["X-Lifetime: 1", "X-Lifetime: 1"], "Bad Request: X-Lifetime is given more than once"),
        (
            "/k?lifetime=1",
            &["X-Lifetime: 2"],
            "Bad Request: ?lifetime= and X-Lifetime differ; give one of them, or the same number",
        ),
    ];
    for (target, headers, why) in cases {
        h.send(&request("PUT", target, headers, b"v"));
        let r = h.read_response();
        r.expect("HTTP/1.1 400 Bad Request", format!("{why}\n").as_bytes());
        r.expect_header("content-type", Some("text/plain; charset=utf-8"));
        r.expect_header("connection", None);
        h.get("/k").expect("HTTP/1.1 404 Not Found", &gone("k"));
    }
    // A GET's query and X-Lifetime are not read: it is a read.
    h.put("/k", b"v").expect("HTTP/1.1 200 OK", b"ok");
    h.send(&request("GET", "/k?lifetime=soon", &["X-Lifetime: never"], b""));
    h.read_response().expect("HTTP/1.1 200 OK", b"v");
}

/// With a data dir, the deadline comes with the value from either tier (the first read is from disk, the
/// second from memory with `--cache-after-miss-count 1`); a JSON `touch` restarts it, and the GET says
/// so; and after a restart the file still answers with the same `Expires` (deadlines are in the records).
#[test]
fn file_api_lifetime_with_data_dir_touch_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_str().unwrap().to_string();
    let flags = ["--data-dir", path.as_str(), "--cache-after-miss-count", "1"];
    let mut s = TestServer::start(&flags);
    let mut h = Http::connect(s.http_addr());
    h.put("/d?lifetime=100", b"durable").expect("HTTP/1.1 200 OK", b"ok");
    h.put("/forever", b"always").expect("HTTP/1.1 200 OK", b"ok");
    let disk = h.get("/d");
    disk.expect_header("x-cache", Some("DISK"));
    let memory = h.get("/d");
    memory.expect_header("x-cache", Some("MEMC"));
    for r in [&disk, &memory] {
        r.expect("HTTP/1.1 200 OK", b"durable");
        assert!((98..=100).contains(&max_age(r)), "{}", r.show());
    }
    let first = expires(&disk);
    assert_eq!(expires(&memory), first);
    for _ in 0..2 {
        let r = h.get("/forever");
        r.expect_header("cache-control", None);
        r.expect_header("expires", None);
    }

    // A touch a bit over a second later moves the deadline by that much: Expires moves by a second or more.
    thread::sleep(Duration::from_millis(1100));
    s.connect().check(&touch("files", "d"), OK_EMPTY);
    let touched = expires(&h.get("/d"));
    assert!(touched > first, "touch did not move Expires: {first} then {touched}");

    drop(h);
    s.signal("TERM");
    assert!(s.wait_exit(Duration::from_secs(10)).success());
    let s = TestServer::start(&flags);
    let mut h = Http::connect(s.http_addr());
    let r = h.get("/d");
    r.expect("HTTP/1.1 200 OK", b"durable");
    assert!((96..=100).contains(&max_age(&r)), "after a restart: {}", r.show());
    assert_eq!(expires(&r), touched, "after a restart: {}", r.show());
    h.get("/forever").expect_header("cache-control", None);
}

/// A PUT with an empty body (Content-Length 0, or none at all) → `400 Bad Request` saying so, and nothing
/// is stored; a PUT or DELETE of the empty key (`/`) is a 400 saying the path is the key, while `GET /`
/// lists the routes; the connection stays usable.
#[test]
fn file_api_empty_put_and_empty_key_are_400_saying_why() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let empty = b"Bad Request: the body is empty; a file is at least one byte (DELETE removes one)\n";
    h.put("/k", b"").expect("HTTP/1.1 400 Bad Request", empty);
    h.send(b"PUT /k HTTP/1.1\r\nHost: test\r\n\r\n");
    h.read_response().expect("HTTP/1.1 400 Bad Request", empty);
    h.get("/k").expect("HTTP/1.1 404 Not Found", &gone("k"));
    let no_key = b"Bad Request: no key; the path is the key, as in PUT /<key>\n";
    h.put("/", b"v").expect("HTTP/1.1 400 Bad Request", no_key);
    h.delete("/?q=1").expect("HTTP/1.1 400 Bad Request", no_key);
    for target in ["/", "/?q=1"] {
        let r = h.get(target);
        assert_eq!(r.status, "HTTP/1.1 200 OK", "{}", r.show());
        r.expect_header("content-type", Some("text/plain; charset=utf-8"));
        let index = String::from_utf8(r.body).unwrap();
        for route in ["PUT /<key>", "/bank/<bank>/entry/<key>", "/banks", "/stats", "/metrics"] {
            assert!(index.contains(route), "GET / does not mention {route}: {index}");
        }
    }
    h.put("/k", b"v").expect("HTTP/1.1 200 OK", b"ok");
}

/// Methods other than GET, HEAD, PUT, DELETE on a file key → `405 Method Not Allowed` with
/// `Allow: GET, HEAD, PUT, DELETE`, and the connection stays open.
#[test]
fn file_api_other_methods_are_405() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    h.put("/k", b"v").expect("HTTP/1.1 200 OK", b"ok");
    for method in ["POST", "PATCH", "OPTIONS", "PROPFIND"] {
        let r = h.call(method, "/k", b"x");
        assert_eq!(r.status, "HTTP/1.1 405 Method Not Allowed", "{method}: {}", r.show());
        r.expect_header("allow", Some("GET, HEAD, PUT, DELETE"));
    }
    h.get("/k").expect("HTTP/1.1 200 OK", b"v");
}

/// A key longer than max_key_bytes (counted in decoded bytes) → `414 URI Too Long`, for PUT and GET;
/// a key of exactly the limit works.
#[test]
fn file_api_key_too_long_is_414() {
    let s = TestServer::start(&["--max-key-bytes", "16"]);
    let mut h = Http::connect(s.http_addr());
    let max = "k".repeat(16);
    h.put(&format!("/{max}"), b"v").expect("HTTP/1.1 200 OK", b"ok");
    h.get(&format!("/{max}")).expect("HTTP/1.1 200 OK", b"v");
    // 16 decoded bytes written as 48 characters.
    h.get(&format!("/{}", "%6B".repeat(16))).expect("HTTP/1.1 200 OK", b"v");

    let long = "k".repeat(17);
    for method in ["PUT", "GET", "DELETE"] {
        let r = h.call(method, &format!("/{long}"), if method == "PUT" { b"v" } else { b"" });
        assert_eq!(r.status, "HTTP/1.1 414 URI Too Long", "{method}: {}", r.show());
    }
    // Still usable afterwards.
    h.get(&format!("/{max}")).expect("HTTP/1.1 200 OK", b"v");
}

/// `--http-bank web` makes the file API store into bank `web` (not `files`).
#[test]
fn file_api_http_bank_flag() {
    let s = TestServer::start(&["--http-bank", "web"]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    h.put("/k", b"bytes").expect("HTTP/1.1 200 OK", b"ok");
    c.check(&get("web", "k"), &ok_b64(b"bytes"));
    c.check(&get("files", "k"), &no_key("k"));
    c.check(BANK_LIST, &ok(&names(&["web"])));
    c.check(&put("web", "j", "[1, 2]"), OK_EMPTY);
    h.get("/j").expect("HTTP/1.1 200 OK", b"[1, 2]");
}

// ---------------------------------------------------------------------------
// One value model across the ports.
// ---------------------------------------------------------------------------

/// A value put as JSON on the JSON port is served by HTTP GET as its JSON text, exactly as sent, with
/// `Content-Type: application/json`.
#[test]
fn json_values_are_served_as_json_text() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    for (key, value) in
        [("obj", r#"{"a": [1, 2.50, "x"]}"#), ("str", r#""hi""#), ("num", "42"), ("null", "null")]
    {
        c.check(&put("files", key, value), OK_EMPTY);
        let r = h.get(&format!("/{key}"));
        r.expect("HTTP/1.1 200 OK", value.as_bytes());
        r.expect_header("content-type", Some("application/json"));
        r.expect_header("x-cache", Some("MEMC"));
    }
}

/// A value PUT over HTTP (bytes: every byte value) is answered by the JSON `get` base64-encoded with
/// `"encoding": "base64"`; a JSON `put` with `"encoding": "base64"` is served by HTTP GET as the raw
/// bytes, without Content-Type. Both with a data dir (so the byte flag goes through the disk too).
#[test]
fn binary_values_round_trip_between_the_ports() {
    let (s, _dir) = start_with_data_dir(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    let bytes = all_bytes();

    h.put("/bin", &bytes).expect("HTTP/1.1 200 OK", b"ok");
    c.check(&get("files", "bin"), &ok_b64(&bytes));
    let r = h.get("/bin");
    r.expect("HTTP/1.1 200 OK", &bytes);
    r.expect_header("content-type", None);

    let reversed: Vec<u8> = bytes.iter().rev().copied().collect();
    let req = format!(
        r#"{{"op":"put","bank":"files","key":"b64","value":"{}","encoding":"base64"}}"#,
        b64(&reversed)
    );
    c.check(&req, OK_EMPTY);
    for _ in 0..4 {
        // DISK three times, then MEMC: the same bytes either way.
        let r = h.get("/b64");
        r.expect("HTTP/1.1 200 OK", &reversed);
        r.expect_header("content-type", None);
    }
    c.check(&get("files", "b64"), &ok_b64(&reversed));
}

// ---------------------------------------------------------------------------
// REST API.
// ---------------------------------------------------------------------------

/// `GET/POST/DELETE /bank/<b>/entry/<k>`, with and without the `/api` prefix: a missing key → 404 with
/// the `Key <k> doesn't exist` envelope; POST stores the body as a JSON string; replies are the JSON
/// envelope with `Content-Type: application/json`.
#[test]
fn rest_entry_get_post_delete() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    for (prefix, bank) in [("", "b1"), ("/api", "b2")] {
        let entry = format!("{prefix}/bank/{bank}/entry/key1");
        h.get(&entry).expect_json("HTTP/1.1 404 Not Found", &no_key("key1"));
        h.call("POST", &entry, b"value 1").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
        h.get(&entry).expect_json("HTTP/1.1 200 OK", &ok("\"value 1\""));
        c.check(&get(bank, "key1"), &ok("\"value 1\""));
        // Quotes and non-ASCII in the body are stored as a proper JSON string.
        h.call("POST", &entry, "say \"hé\"\n".as_bytes()).expect_json("HTTP/1.1 200 OK", OK_EMPTY);
        let r = h.get(&entry);
        assert_eq!(r.status, "HTTP/1.1 200 OK");
        let v: Value = serde_json::from_slice(&r.body).expect("the envelope is JSON");
        assert_eq!(v["data"], Value::String("say \"hé\"\n".into()), "{}", r.show());
        h.delete(&entry).expect_json("HTTP/1.1 200 OK", OK_EMPTY);
        h.get(&entry).expect_json("HTTP/1.1 404 Not Found", &no_key("key1"));
        h.delete(&entry).expect_json("HTTP/1.1 404 Not Found", &no_key("key1"));
    }
    // A value put on the JSON port is visible over REST unchanged.
    c.check(&put("b1", "n", "[1, 2]"), OK_EMPTY);
    h.get("/bank/b1/entry/n").expect_json("HTTP/1.1 200 OK", &ok("[1, 2]"));
}

/// `POST …?lifetime=SECONDS` sets a lifetime (the entry goes away); a non-number lifetime → 400.
#[test]
fn rest_post_lifetime() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    h.call("POST", "/bank/b/entry/t?lifetime=0.3", b"short").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.call("POST", "/api/bank/b/entry/f?lifetime=0", b"forever").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.get("/bank/b/entry/t").expect_json("HTTP/1.1 200 OK", &ok("\"short\""));
    let gone =
        eventually(Duration::from_secs(3), || h.get("/bank/b/entry/t").status == "HTTP/1.1 404 Not Found");
    assert!(gone, "an entry posted with lifetime=0.3 still exists after 3 s");
    h.get("/bank/b/entry/f").expect_json("HTTP/1.1 200 OK", &ok("\"forever\""));
    let r = h.call("POST", "/bank/b/entry/x?lifetime=soon", b"v");
    assert_eq!(r.status, "HTTP/1.1 400 Bad Request", "{}", r.show());
    h.get("/bank/b/entry/x").expect_json("HTTP/1.1 404 Not Found", &no_key("x"));
}

/// `PUT /bank/<b>/entry/<k>` with `operation=` or `op=`: touch → `{}`; incr by 2 after a JSON put of 1
/// → `3.0`; a non-number delta → 400 with the envelope; a missing key → 404; a missing or unknown
/// operation, or incr without a value → 400.
#[test]
fn rest_touch_and_incr() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    c.check(&put("b", "n", "1"), OK_EMPTY);

    h.call("PUT", "/bank/b/entry/n?operation=incr&value=2", b"").expect_json("HTTP/1.1 200 OK", &ok("3.0"));
    h.call("PUT", "/api/bank/b/entry/n?op=incr&value=-0.5", b"").expect_json("HTTP/1.1 200 OK", &ok("2.5"));
    h.call("PUT", "/bank/b/entry/n?op=incr&value=a", b"")
        .expect_json("HTTP/1.1 400 Bad Request", &err("The value must be an integer or a float"));
    c.check(&get("b", "n"), &ok("2.5"));

    h.call("PUT", "/bank/b/entry/n?operation=touch", b"").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.call("PUT", "/api/bank/b/entry/n?op=touch", b"").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.call("PUT", "/bank/b/entry/missing?op=touch", b"")
        .expect_json("HTTP/1.1 404 Not Found", &no_key("missing"));
    h.call("PUT", "/bank/b/entry/missing?op=incr&value=1", b"")
        .expect_json("HTTP/1.1 404 Not Found", &no_key("missing"));

    // A REST-posted numeric string counts too.
    h.call("POST", "/bank/b/entry/s", b"10").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.call("PUT", "/bank/b/entry/s?operation=incr&value=1", b"").expect_json("HTTP/1.1 200 OK", &ok("11.0"));
    h.call("POST", "/bank/b/entry/w", b"word").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.call("PUT", "/bank/b/entry/w?operation=incr&value=1", b"")
        .expect_json("HTTP/1.1 400 Bad Request", &err("The value for key w isn't a number"));

    for target in [
        "/bank/b/entry/n",
        "/bank/b/entry/n?operation=frob",
        "/bank/b/entry/n?op=reset",
        "/bank/b/entry/n?operation=incr",
    ] {
        let r = h.call("PUT", target, b"");
        assert_eq!(r.status, "HTTP/1.1 400 Bad Request", "PUT {target}: {}", r.show());
    }
    c.check(&get("b", "n"), &ok("2.5"));
}

/// `GET /bank/<b>/entries` (insertion order; an unknown bank → 200 with `[]`), `GET /banks`,
/// `PUT /bank/<b>?operation=reset` (and `op=reset`; no operation → 400), with and without `/api`.
#[test]
fn rest_banks_entries_and_reset() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    h.get("/bank/nobody/entries").expect_json("HTTP/1.1 200 OK", &ok("[]"));
    h.get("/api/banks").expect_json("HTTP/1.1 200 OK", &ok("[]"));

    for key in ["z", "a", "m"] {
        h.call("POST", &format!("/bank/one/entry/{key}"), b"v").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    }
    h.call("POST", "/api/bank/two/entry/x", b"v").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.get("/bank/one/entries").expect_json("HTTP/1.1 200 OK", &ok(&names(&["z", "a", "m"])));
    h.get("/api/bank/two/entries").expect_json("HTTP/1.1 200 OK", &ok(&names(&["x"])));
    h.get("/banks").expect_json("HTTP/1.1 200 OK", &ok(&names(&["one", "two"])));

    let r = h.call("PUT", "/bank/one", b"");
    assert_eq!(r.status, "HTTP/1.1 400 Bad Request", "{}", r.show());
    h.call("PUT", "/bank/one?operation=reset", b"").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.get("/bank/one/entries").expect_json("HTTP/1.1 200 OK", &ok("[]"));
    h.call("PUT", "/api/bank/two?op=reset", b"").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.get("/api/bank/two/entries").expect_json("HTTP/1.1 200 OK", &ok("[]"));
}

/// `GET /bank/<b>/scan?cursor=&prefix=&count=` (also under `/api`, `HEAD` too): `bank.scan`'s envelope
/// with 200, paging by the cursor it answers; defaults for absent parameters; an unknown bank scans as
/// empty; bad parameters → 400 with the JSON port's words; other methods → 405.
#[test]
fn rest_scan_pages_by_prefix() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    h.get("/bank/nobody/scan").expect_json("HTTP/1.1 200 OK", &ok(r#"{"cursor": 0, "keys": []}"#));
    for key in ["user:1", "item:1", "user:2", "user:3", "item:2", "user:4"] {
        c.check(&put("b", key, "1"), OK_EMPTY);
    }
    // Slot order is put order here: user keys at slots 0, 2, 3, 5.
    h.get("/bank/b/scan?prefix=user%3A&count=2")
        .expect_json("HTTP/1.1 200 OK", &ok(r#"{"cursor": 3, "keys": ["user:1", "user:2"]}"#));
    h.get("/api/bank/b/scan?cursor=3&prefix=user:&count=2")
        .expect_json("HTTP/1.1 200 OK", &ok(r#"{"cursor": 0, "keys": ["user:3", "user:4"]}"#));
    // A cursor at or past the last slot is done.
    h.get("/bank/b/scan?cursor=6&prefix=user:&count=2")
        .expect_json("HTTP/1.1 200 OK", &ok(r#"{"cursor": 0, "keys": []}"#));
    // No parameters: from the start, every key, the default count.
    let all = r#"{"cursor": 0, "keys": ["user:1", "item:1", "user:2", "user:3", "item:2", "user:4"]}"#;
    h.get("/bank/b/scan").expect_json("HTTP/1.1 200 OK", &ok(all));
    h.get("/bank/b/scan?prefix=&cursor=0").expect_json("HTTP/1.1 200 OK", &ok(all));
    let r = h.call("HEAD", "/bank/b/scan?prefix=item", b"");
    assert_eq!(r.status, "HTTP/1.1 200 OK", "{}", r.show());
    r.expect_header(
        "content-length",
        Some(&ok(r#"{"cursor": 0, "keys": ["item:1", "item:2"]}"#).len().to_string()),
    );

    for (query, why) in [
        ("cursor=-1", "cursor must be a non-negative integer"),
        ("cursor=next", "cursor must be a non-negative integer"),
        ("cursor=1.5", "cursor must be a non-negative integer"),
        ("cursor=", "cursor must be a non-negative integer"),
        ("count=0", "count must be a positive integer"),
        ("count=ten", "count must be a positive integer"),
        ("prefix=user&count=-5", "count must be a positive integer"),
    ] {
        h.get(&format!("/bank/b/scan?{query}")).expect_json("HTTP/1.1 400 Bad Request", &err(why));
    }
    // The bank name is checked first, as on the JSON port.
    let long = "x".repeat(1025);
    h.get(&format!("/bank/{long}/scan?cursor=x")).expect_json(
        "HTTP/1.1 400 Bad Request",
        &err("Bank name too long: 1025 bytes, max_key_bytes is 1024"),
    );
    for method in ["POST", "PUT", "DELETE"] {
        let r = h.call(method, "/api/bank/b/scan", b"");
        assert_eq!(r.status, "HTTP/1.1 405 Method Not Allowed", "{method}: {}", r.show());
    }
    let st = stats(&mut c);
    assert_eq!(stat(&st, "ops_bank_scan"), 7.0, "the refused requests count as errors only: {st:?}");
}

/// `GET /api/` → 200 `Cache system API`; an unknown REST-like path → 404; a wrong method on a REST
/// path → 405 with the methods it takes in `Allow`; bad parameters → 400. Every one of these errors is the
/// JSON envelope, with `Content-Type: application/json`, saying why (the connection stays open through all
/// of it).
#[test]
fn rest_errors_are_the_json_envelope_saying_why() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    h.get("/api/").expect("HTTP/1.1 200 OK", b"Cache system API");
    for target in ["/bank/x/nope", "/api/bank/x/nope", "/bank/x/entry/k/extra", "/api/nothing"] {
        let why = format!("Not Found: no route {target}; GET / lists the routes");
        h.get(target).expect_json("HTTP/1.1 404 Not Found", &err(&why));
    }
    for (method, target, allow) in [
        ("PATCH", "/bank/x/entry/k", "GET, HEAD, POST, PUT, DELETE"),
        ("POST", "/banks", "GET, HEAD"),
        ("DELETE", "/api/bank/x/entries", "GET, HEAD"),
        ("POST", "/bank/x", "PUT"),
    ] {
        let r = h.call(method, target, b"");
        let why = format!("Method Not Allowed: {target} takes {allow}, not {method}");
        r.expect_json("HTTP/1.1 405 Method Not Allowed", &err(&why));
        r.expect_header("allow", Some(allow));
    }
    for (method, target, body, why) in [
        ("PUT", "/bank/x/entry/k?op=bogus", &b""[..], "operation must be touch or incr: ?operation=touch"),
        ("PUT", "/bank/x/entry/k?op=incr", b"", "incr needs a value: ?operation=incr&value=<number>"),
        ("PUT", "/bank/x", b"", "operation must be reset: ?operation=reset"),
        ("POST", "/bank/x/entry/k?lifetime=soon", b"v", "lifetime must be a number of seconds"),
        ("POST", "/bank/x/entry/k?lifetime=%2B5", b"v", "lifetime must be a number of seconds"),
        ("POST", "/bank/x/entry/k?lifetime=.5", b"v", "lifetime must be a number of seconds"),
        ("POST", "/bank/x/entry/k?lifetime=inf", b"v", "lifetime must be a number of seconds"),
        ("POST", "/bank/x/entry/k", b"\xff", "the body is not UTF-8 (it is stored as a JSON string)"),
        ("GET", "/bank/%FF/entries", b"", "the path is not UTF-8 once percent-decoded"),
    ] {
        h.call(method, target, body).expect_json("HTTP/1.1 400 Bad Request", &err(why));
    }
    h.get("/api/").expect("HTTP/1.1 200 OK", b"Cache system API");
}

/// Every error of the file API and of the front is one line of plain text saying why, ending in a newline,
/// with `Content-Type: text/plain; charset=utf-8`: an empty PUT, a missing key, a wrong method, a key too
/// long, the wrong method on `/stats`, and a request the codec refuses.
#[test]
fn file_api_and_front_errors_are_a_line_of_text() {
    let s = TestServer::start(&["--max-key-bytes", "8"]);
    let mut h = Http::connect(s.http_addr());
    let cases: [(&str, &str, &[u8], &str); 5] = [
        ("PUT", "/k", b"", "400 Bad Request"),
        ("GET", "/missing", b"", "404 Not Found"),
        ("POST", "/k", b"v", "405 Method Not Allowed"),
        ("GET", "/much-too-long", b"", "414 URI Too Long"),
        ("PUT", "/stats", b"v", "405 Method Not Allowed"),
    ];
    for (method, target, body, status) in cases {
        let r = h.call(method, target, body);
        assert_eq!(r.status, format!("HTTP/1.1 {status}"), "{method} {target}: {}", r.show());
        r.expect_header("content-type", Some("text/plain; charset=utf-8"));
        let text = String::from_utf8(r.body.clone()).unwrap();
        assert!(text.ends_with('\n') && text.trim_end().len() > 10, "{method} {target}: {text:?}");
        assert_eq!(text.lines().count(), 1, "{method} {target}: {text:?}");
    }
    h.send(b"GET /k HTTP/1.1\r\nHost: a\r\nHost : b\r\n\r\n");
    let r = h.read_response();
    assert_eq!(r.status, "HTTP/1.1 400 Bad Request", "{}", r.show());
    r.expect_header("content-type", Some("text/plain; charset=utf-8"));
    assert!(r.body.starts_with(b"Bad Request: ") && r.body.ends_with(b"\n"), "{}", r.show());
}

/// Percent-encoded bank and key segments are decoded (`%2F` in a key is a slash inside the key).
#[test]
fn rest_percent_encoded_segments() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    h.call("POST", "/bank/my%20bank/entry/a%2Fb", b"v").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    c.check(&get("my bank", "a/b"), &ok("\"v\""));
    h.get("/api/bank/my%20bank/entry/a%2Fb").expect_json("HTTP/1.1 200 OK", &ok("\"v\""));
    h.get("/bank/my%20bank/entries").expect_json("HTTP/1.1 200 OK", &ok(&names(&["a/b"])));
    h.get("/bank/my%20bank/entry/caf%C3%A9").expect_json("HTTP/1.1 404 Not Found", &no_key("caf\\u00e9"));
}

/// `GET /stats` → 200 with the same envelope as the JSON `stats` op, as JSON.
#[test]
fn stats_over_http() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    h.put("/k", b"v").expect("HTTP/1.1 200 OK", b"ok");
    let r = h.get("/stats");
    assert_eq!(r.status, "HTTP/1.1 200 OK", "{}", r.show());
    r.expect_header("content-type", Some("application/json"));
    let text = r.body_text();
    assert!(text.starts_with("{\"status\": \"ok\", \"data\": {"), "{}", r.show());
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    let over_http = v["data"].as_object().expect("data is an object").clone();
    let over_json = stats(&mut c);
    let mut a: Vec<&String> = over_http.keys().collect();
    let mut b: Vec<&String> = over_json.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the HTTP and JSON stats have different fields");
    assert_eq!(stat(&over_http, "keys"), 1.0);
}

// ---------------------------------------------------------------------------
// HTTP framing.
// ---------------------------------------------------------------------------

/// Keep-alive: many requests, one after the other, on one connection.
#[test]
fn keep_alive_serves_many_requests() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    for i in 0..25 {
        let key = format!("/k{i}");
        let body = format!("value {i}");
        h.put(&key, body.as_bytes()).expect("HTTP/1.1 200 OK", b"ok");
        let r = h.get(&key);
        r.expect("HTTP/1.1 200 OK", body.as_bytes());
        r.expect_header("connection", None);
    }
    h.expect_quiet(Duration::from_millis(100));
}

/// Pipelining: many requests in one write are all answered, in order.
#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut batch = Vec::new();
    batch.extend(request("PUT", "/a", &[], b"first"));
    batch.extend(request("PUT", "/b", &[], b"second"));
    batch.extend(request("GET", "/a", &[], b""));
    batch.extend(request("GET", "/b", &[], b""));
    batch.extend(request("GET", "/missing", &[], b""));
    batch.extend(request("HEAD", "/a", &[], b""));
    batch.extend(request("DELETE", "/a", &[], b""));
    batch.extend(request("GET", "/a", &[], b""));
    batch.extend(request("GET", "/bank/files/entries", &[], b""));
    for i in 0..30 {
        batch.extend(request("GET", "/b", &[&format!("X-Seq: {i}")], b""));
    }
    h.send(&batch);
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    h.read_response().expect("HTTP/1.1 200 OK", b"first");
    h.read_response().expect("HTTP/1.1 200 OK", b"second");
    h.read_response().expect("HTTP/1.1 404 Not Found", &gone("missing"));
    let r = h.read_response_opt(true);
    r.expect("HTTP/1.1 200 OK", b"");
    r.expect_header("content-length", Some("5"));
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    h.read_response().expect("HTTP/1.1 404 Not Found", &gone("a"));
    h.read_response().expect_json("HTTP/1.1 200 OK", &ok(&names(&["b"])));
    for _ in 0..30 {
        h.read_response().expect("HTTP/1.1 200 OK", b"second");
    }
    h.expect_quiet(Duration::from_millis(100));
}

/// `Transfer-Encoding: chunked` request bodies: several chunks, a chunk extension and a trailer are
/// decoded; the body may arrive in pieces; a request pipelined after it is read correctly.
#[test]
fn chunked_request_bodies() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut req = b"PUT /chunky HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(b"3\r\nhel\r\n4;name=value\r\nlo w\r\nA\r\norld, and \r\n");
    req.extend_from_slice(b"5\r\nmore!\r\n0\r\nX-Trailer: yes\r\n\r\n");
    req.extend(request("GET", "/chunky", &[], b""));
    h.send(&req);
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    h.read_response().expect("HTTP/1.1 200 OK", b"hello world, and more!");

    // Binary data in chunks (upper-case hex sizes), sent in small pieces with pauses.
    let bytes = all_bytes();
    let mut req = b"PUT /bin HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in bytes.chunks(200) {
        req.extend_from_slice(format!("{:X}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    for piece in req.chunks(97) {
        h.send(piece);
        thread::sleep(Duration::from_millis(5));
    }
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    h.get("/bin").expect("HTTP/1.1 200 OK", &bytes);

    // A chunked REST POST.
    h.send(b"POST /bank/b/entry/k HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n");
    h.read_response().expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    h.get("/bank/b/entry/k").expect_json("HTTP/1.1 200 OK", &ok("\"abc\""));
}

/// `Expect: 100-continue`: after the head alone the server sends exactly `HTTP/1.1 100 Continue\r\n\r\n`,
/// then the body gets its final `200 OK`; and the value is stored.
#[test]
fn expect_100_continue() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let body = noise(5000, 7);
    h.send(
        format!(
            "PUT /big HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    h.read_continue();
    h.send(&body);
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    h.get("/big").expect("HTTP/1.1 200 OK", &body);

    // Chunked, with Expect too.
    h.send(b"PUT /c HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n");
    h.read_continue();
    h.send(b"4\r\ndata\r\n0\r\n\r\n");
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    h.get("/c").expect("HTTP/1.1 200 OK", b"data");

    // A client that sends the body along with the head anyway still gets its 200 (a 100 before it
    // is allowed, not required).
    let mut req =
        b"PUT /d HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n".to_vec();
    req.extend_from_slice(b"xyz");
    h.send(&req);
    let (_, r) = h.read_response_after_continue();
    r.expect("HTTP/1.1 200 OK", b"ok");
    h.get("/d").expect("HTTP/1.1 200 OK", b"xyz");
}

/// A body over `--max-value-bytes` → `413 Payload Too Large` with `Connection: close`, then the server
/// closes; a body of exactly the limit is fine. Also for a chunked body.
#[test]
fn body_over_max_value_bytes_is_413_then_close() {
    let s = TestServer::start(&["--max-value-bytes", "1000"]);
    let mut h = Http::connect(s.http_addr());
    let at_limit = noise(1000, 1);
    h.put("/ok", &at_limit).expect("HTTP/1.1 200 OK", b"ok");
    h.get("/ok").expect("HTTP/1.1 200 OK", &at_limit);

    h.send(&request("PUT", "/big", &[], &noise(1001, 2)));
    let r = h.read_response();
    r.expect(
        "HTTP/1.1 413 Payload Too Large",
        b"Payload Too Large: the body is longer than max_value_bytes\n",
    );
    r.expect_header("connection", Some("close"));
    h.expect_closed();

    let mut h = Http::connect(s.http_addr());
    let mut req = b"PUT /big HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"190\r\n");
        req.extend_from_slice(&[b'x'; 400]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    h.send(&req);
    let r = h.read_response();
    r.expect(
        "HTTP/1.1 413 Payload Too Large",
        b"Payload Too Large: the body is longer than max_value_bytes\n",
    );
    r.expect_header("connection", Some("close"));
    h.expect_closed();

    let mut h = Http::connect(s.http_addr());
    h.get("/big").expect("HTTP/1.1 404 Not Found", &gone("big"));
}

/// A malformed request line (or Content-Length) → `400 Bad Request` with `Connection: close` and a body that
/// says why, then the server closes; requests before it on the same connection are answered first. A
/// transfer coding other than chunked → `501 Not Implemented`, then close. (tests/http_strict.rs has every
/// other case.)
#[test]
fn malformed_request_is_400_then_close() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    h.send(b"NOT AN HTTP REQUEST\r\n\r\n");
    let r = h.read_response();
    r.expect(
        "HTTP/1.1 400 Bad Request",
        b"Bad Request: unsupported HTTP version (HTTP/1.0 and HTTP/1.1 only)\n",
    );
    r.expect_header("connection", Some("close"));
    h.expect_closed();

    let mut h = Http::connect(s.http_addr());
    let mut batch = request("PUT", "/k", &[], b"v");
    batch.extend_from_slice(b"GET /k HTTP/1.1 extra junk\r\n\r\nGET /k HTTP/1.1\r\n\r\n");
    h.send(&batch);
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    let r = h.read_response();
    r.expect(
        "HTTP/1.1 400 Bad Request",
        b"Bad Request: malformed line ending (junk after the HTTP version, or a CR without an LF)\n",
    );
    r.expect_header("connection", Some("close"));
    h.expect_closed();

    // A bad Content-Length too.
    let mut h = Http::connect(s.http_addr());
    h.send(b"PUT /k HTTP/1.1\r\nContent-Length: lots\r\n\r\n");
    h.read_response()
        .expect("HTTP/1.1 400 Bad Request", b"Bad Request: Content-Length must be decimal digits\n");
    h.expect_closed();

    // A transfer coding other than chunked → 501, then close.
    let mut h = Http::connect(s.http_addr());
    h.send(b"PUT /k HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nabc");
    let r = h.read_response();
    r.expect(
        "HTTP/1.1 501 Not Implemented",
        b"Not Implemented: only the chunked transfer coding is supported\n",
    );
    r.expect_header("connection", Some("close"));
    h.expect_closed();
}

/// A head of about 20 KB (one huge header) → `431 Request Header Fields Too Large`, then close.
#[test]
fn huge_header_is_431_then_close() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let req = format!("GET /k HTTP/1.1\r\nHost: test\r\nX-Big: {}\r\n\r\n", "a".repeat(20 * 1024));
    h.send(req.as_bytes());
    let r = h.read_response();
    r.expect(
        "HTTP/1.1 431 Request Header Fields Too Large",
        b"Request Header Fields Too Large: the request line and headers are too long\n",
    );
    r.expect_header("connection", Some("close"));
    h.expect_closed();
    // The server lives on.
    let mut h = Http::connect(s.http_addr());
    h.get("/k").expect("HTTP/1.1 404 Not Found", &gone("k"));
}

/// `Connection: close` on a request → its response carries `Connection: close` and the server closes;
/// a request pipelined after it is not answered.
#[test]
fn connection_close_is_honoured() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    h.put("/k", b"v").expect("HTTP/1.1 200 OK", b"ok");
    let mut batch = request("GET", "/k", &["Connection: close"], b"");
    batch.extend(request("DELETE", "/k", &[], b""));
    h.send(&batch);
    let r = h.read_response();
    r.expect("HTTP/1.1 200 OK", b"v");
    r.expect_header("connection", Some("close"));
    h.expect_closed();

    // The DELETE after it never ran.
    let mut h = Http::connect(s.http_addr());
    h.get("/k").expect("HTTP/1.1 200 OK", b"v");
    // `Connection: close` among other tokens, on an error response too.
    h.send(&request("GET", "/missing", &["Connection: TE, Close"], b""));
    let r = h.read_response();
    r.expect("HTTP/1.1 404 Not Found", &gone("missing"));
    r.expect_header("connection", Some("close"));
    h.expect_eof();
}

/// HTTP/1.0 without `Connection: keep-alive` → the server closes after the response; with
/// `Connection: keep-alive` the connection stays open.
#[test]
fn http_1_0_closes_unless_keep_alive() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    h.put("/k", b"v").expect("HTTP/1.1 200 OK", b"ok");

    let mut h = Http::connect(s.http_addr());
    h.send(b"GET /k HTTP/1.0\r\n\r\n");
    let r = h.read_response();
    r.expect("HTTP/1.1 200 OK", b"v");
    r.expect_header("connection", Some("close"));
    h.expect_eof();

    let mut h = Http::connect(s.http_addr());
    for _ in 0..3 {
        h.send(b"GET /k HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        let r = h.read_response();
        r.expect("HTTP/1.1 200 OK", b"v");
        r.expect_header("connection", None);
    }
    h.expect_quiet(Duration::from_millis(100));
}

/// `--http-idle-timeout 0.5`: an idle connection (one that sent a request, or nothing at all) is
/// closed soon after half a second, not at once; a busy one is not.
#[test]
fn idle_connections_are_closed() {
    let s = TestServer::start(&["--http-idle-timeout", "0.5"]);
    let start = Instant::now();
    let mut used = Http::connect(s.http_addr());
    let mut silent = Http::connect(s.http_addr());
    let mut busy = Http::connect(s.http_addr());
    used.put("/k", b"v").expect("HTTP/1.1 200 OK", b"ok");
    // `busy` keeps sending every 150 ms for 1.2 s: it stays open.
    for _ in 0..8 {
        busy.get("/k").expect("HTTP/1.1 200 OK", b"v");
        thread::sleep(Duration::from_millis(150));
    }
    busy.get("/k").expect("HTTP/1.1 200 OK", b"v");
    used.expect_eof();
    silent.expect_eof();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "idle connections closed only after {took:?}");
    // And a fresh one is not closed at once.
    let mut fresh = Http::connect(s.http_addr());
    fresh.expect_quiet(Duration::from_millis(300));
    fresh.get("/k").expect("HTTP/1.1 200 OK", b"v");
}

/// A 1 MB body round-trips byte-exact through the disk store (and again from memory).
#[test]
fn one_megabyte_body_round_trips() {
    let (s, _dir) = start_with_data_dir(&["--max-value-bytes", "2000000"]);
    let mut h = Http::connect(s.http_addr());
    let body = noise(1 << 20, 42);
    let r = h.put("/mega", &body);
    r.expect("HTTP/1.1 200 OK", b"ok");
    r.expect_header("x-position", Some(&format!("0,0,{}", record_size("files", "mega", body.len()))));
    for expected_tier in ["DISK", "DISK", "DISK", "MEMC"] {
        let r = h.get("/mega");
        assert_eq!(r.status, "HTTP/1.1 200 OK");
        assert_eq!(r.body.len(), body.len());
        assert!(r.body == body, "the 1 MB body came back different");
        r.expect_header("x-cache", Some(expected_tier));
    }
    // The same in chunks.
    let mut req = b"PUT /mega2 HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in body.chunks(65536) {
        req.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        req.extend_from_slice(part);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    h.send(&req);
    h.read_response().expect("HTTP/1.1 200 OK", b"ok");
    let r = h.get("/mega2");
    assert!(r.body == body, "the chunked 1 MB body came back different");
}

/// The real `curl`: PUT of a 300 KB file with `--data-binary @file` (curl sends
/// `Expect: 100-continue`), GET (same bytes), DELETE, then GET → 404.
#[test]
fn curl_put_get_delete() {
    let version = Command::new("curl").arg("--version").output();
    match version {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("`curl --version` failed ({}); this test needs curl installed", out.status),
        Err(e) => panic!("cannot run `curl` ({e}); this test needs the curl binary on PATH"),
    }
    let s = TestServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    let body = noise(300 * 1024, 3);
    std::fs::write(&input, &body).unwrap();
    let url = format!("http://{}/dir/file.bin", s.http_addr());
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-v"])
            .args(args)
            .output()
            .expect("cannot run curl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status, stdout, stderr)
    };

    // curl 7.x adds `Expect: 100-continue` by itself to `--data-binary` bodies only from 1 MiB on (and
    // always to `-T` uploads), so the header is asked for explicitly here; `-T` below gets curl's own.
    let data = format!("@{}", input.display());
    let (status, stdout, stderr) = curl(&[
        "-X",
        "PUT",
        "--data-binary",
        &data,
        "-H",
        "Expect: 100-continue",
        "-w",
        "\n%{http_code}",
        &url,
    ]);
    assert!(status.success(), "curl PUT failed ({status}): {stderr}");
    assert_eq!(stdout, "ok\n200", "curl PUT output; stderr: {stderr}");
    assert!(stderr.contains("> Expect: 100-continue"), "curl did not send Expect: 100-continue:\n{stderr}");
    assert!(stderr.contains("< HTTP/1.1 100 Continue"), "the server sent no 100 Continue to curl:\n{stderr}");

    let out_path = output.to_str().unwrap();
    let (status, stdout, stderr) = curl(&["--fail", "-o", out_path, "-w", "%{http_code}", &url]);
    assert!(status.success(), "curl GET failed ({status}): {stderr}");
    assert_eq!(stdout, "200");
    let got = std::fs::read(&output).unwrap();
    assert_eq!(got.len(), body.len(), "curl GET body length");
    assert!(got == body, "curl GET returned different bytes");
    assert!(stderr.contains("< X-Cache: MEMC"), "no X-Cache header seen by curl:\n{stderr}");

    // An upload with `-T` (curl's own Expect) overwrites it with the same bytes reversed.
    let reversed: Vec<u8> = body.iter().rev().copied().collect();
    std::fs::write(&input, &reversed).unwrap();
    let (status, stdout, stderr) = curl(&["-T", input.to_str().unwrap(), "-w", "\n%{http_code}", &url]);
    assert!(status.success(), "curl -T failed ({status}): {stderr}");
    assert_eq!(stdout, "ok\n200", "curl -T output; stderr: {stderr}");
    assert!(
        stderr.contains("< HTTP/1.1 100 Continue"),
        "the server sent no 100 Continue to curl -T:\n{stderr}"
    );
    let (status, _, stderr) = curl(&["--fail", "-o", out_path, &url]);
    assert!(status.success(), "curl GET failed ({status}): {stderr}");
    assert!(std::fs::read(&output).unwrap() == reversed, "curl GET after -T returned different bytes");

    let (status, stdout, stderr) = curl(&["-X", "DELETE", "-w", "\n%{http_code}", &url]);
    assert!(status.success(), "curl DELETE failed ({status}): {stderr}");
    assert_eq!(stdout, "ok\n200");

    let (status, stdout, stderr) = curl(&["-w", "\n%{http_code}", &url]);
    assert!(status.success(), "curl GET of a deleted key failed ({status}): {stderr}");
    assert_eq!(stdout, "Key dir/file.bin doesn't exist\n\n404");
}

// ---------------------------------------------------------------------------
// The admin page (/ui/) and the routes it reads (/stats/banks, /stats/volumes, entry headers, ?as=json).
// ---------------------------------------------------------------------------

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Every `/ui/` response carries the policy and `nosniff`; the page, its script and its style sheet come
/// with their types; `/ui` redirects to `/ui/`; anything else under `/ui/` is 404 and a write is 405,
/// with the policy too; the files are served without the token while every data route still needs it.
#[test]
fn ui_files_carry_the_policy() {
    for args in [&[][..], &["--auth-token", "s3cret-T0ken"][..]] {
        let s = TestServer::start(args);
        let mut h = Http::connect(s.http_addr());
        for (path, status, content_type) in [
            ("/ui/", "HTTP/1.1 200 OK", "text/html; charset=utf-8"),
            ("/ui/index.html", "HTTP/1.1 200 OK", "text/html; charset=utf-8"),
            ("/ui/app.js", "HTTP/1.1 200 OK", "text/javascript; charset=utf-8"),
            ("/ui/app.css", "HTTP/1.1 200 OK", "text/css; charset=utf-8"),
            ("/ui", "HTTP/1.1 301 Moved Permanently", "text/plain; charset=utf-8"),
            ("/ui/nope.js", "HTTP/1.1 404 Not Found", "text/plain; charset=utf-8"),
        ] {
            let r = h.get(path);
            assert_eq!(r.status, status, "{path}: {}", r.show());
            assert_eq!(r.header("Content-Type"), Some(content_type), "{path}: {}", r.show());
            assert_eq!(r.header("Content-Security-Policy"), Some(CSP), "{path}: {}", r.show());
            assert_eq!(r.header("X-Content-Type-Options"), Some("nosniff"), "{path}");
        }
        assert_eq!(h.get("/ui").header("Location"), Some("/ui/"));
        let page = String::from_utf8(h.get("/ui/").body).unwrap();
        assert!(page.contains("<script src=\"app.js\"></script>"), "{page}");
        let r = h.call("POST", "/ui/", b"x");
        assert_eq!(r.status, "HTTP/1.1 405 Method Not Allowed", "{}", r.show());
        assert_eq!(r.header("Content-Security-Policy"), Some(CSP));
        // The data routes the page reads are as protected as before.
        let stats = h.get("/stats/banks");
        if args.is_empty() {
            assert_eq!(stats.status, "HTTP/1.1 200 OK", "{}", stats.show());
        } else {
            assert_eq!(stats.status, "HTTP/1.1 401 Unauthorized", "{}", stats.show());
            for path in ["/stats", "/stats/volumes", "/bank/b/scan", "/bank/b/entry/k"] {
                assert_eq!(h.get(path).status, "HTTP/1.1 401 Unauthorized", "{path}");
            }
            let auth = "Authorization: Bearer s3cret-T0ken";
            h.send(&request("GET", "/stats/banks", &[auth], b""));
            let r = h.read_response();
            assert_eq!(r.status, "HTTP/1.1 200 OK", "{}", r.show());
        }
    }
}

/// `GET /stats/banks` pages through the banks with their entry counts and bytes; bad parameters are 400;
/// `/stats/volumes` is `null` without a disk store; other `/stats/…` paths are 404 and writes 405.
#[test]
fn stats_banks_pages_with_figures() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    for (bank, n) in [("b", 3), ("a", 1), ("c", 2)] {
        for i in 0..n {
            c.check(&put(bank, &format!("k{i}"), "\"12345\""), OK_EMPTY);
        }
    }
    let r = h.get("/stats/banks?count=2");
    assert_eq!(r.status, "HTTP/1.1 200 OK", "{}", r.show());
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "ok");
    let banks = v["data"]["banks"].as_array().unwrap();
    let names: Vec<&str> = banks.iter().map(|b| b["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b", "a"]);
    assert_eq!(banks[0]["keys"], 3);
    assert!(banks[0]["bytes"].as_u64().unwrap() >= 3 * 9, "{}", r.show());
    assert!(banks[0]["ram_bytes"].is_u64());
    assert_eq!(v["data"]["cursor"], 2);
    let v: Value = serde_json::from_slice(&h.get("/stats/banks?count=2&cursor=2").body).unwrap();
    assert_eq!(v["data"]["banks"][0]["name"], "c");
    assert_eq!(v["data"]["cursor"], 0, "the last page ends the listing");
    for bad in ["/stats/banks?count=x", "/stats/banks?cursor=-1"] {
        let r = h.get(bad);
        assert_eq!(r.status, "HTTP/1.1 400 Bad Request", "{bad}: {}", r.show());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["status"], "error", "{}", r.show());
    }
    let r = h.get("/stats/volumes");
    assert_eq!(r.status, "HTTP/1.1 200 OK");
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap(),
        serde_json::json!({"status": "ok", "data": null})
    );
    assert_eq!(h.get("/stats/nope").status, "HTTP/1.1 404 Not Found");
    let r = h.call("PUT", "/stats/banks", b"");
    assert_eq!(r.status, "HTTP/1.1 405 Method Not Allowed", "{}", r.show());
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
}

/// With a disk store, `/stats/volumes` shows the ring: the volume being written, each one's fill, the
/// reuses; and a REST GET of an entry says its tier, position, size and lifetime in headers.
#[test]
fn stats_volumes_and_entry_headers_with_data_dir() {
    let (s, _dir) = start_with_data_dir(&["--volume-size", "4096", "--volume-count", "3"]);
    let mut h = Http::connect(s.http_addr());
    let value = "v".repeat(1000);
    for i in 0..4 {
        h.call("POST", &format!("/bank/b/entry/k{i}"), value.as_bytes())
            .expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    }
    let v: Value = serde_json::from_slice(&h.get("/stats/volumes").body).unwrap();
    let ring = &v["data"];
    assert_eq!(ring["current"], 1, "{v}");
    assert_eq!(ring["size"], 4096);
    assert_eq!(ring["reuses"], 0);
    let volumes = ring["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 3);
    let k3 = record_size("b", "k3", value.len() + 2) as u64;
    assert_eq!(volumes[1]["used"], k3, "{v}");
    assert!(volumes[0]["used"].as_u64().unwrap() >= 3 * k3, "{v}");
    assert_eq!(volumes[2]["used"], 0);
    assert_eq!(volumes[1]["starts"], 1);

    let r = h.get("/bank/b/entry/k3");
    assert_eq!(r.status, "HTTP/1.1 200 OK", "{}", r.show());
    // A REST put keeps its value in RAM (the disk store is its log); the record's place is still said.
    assert_eq!(r.header("X-Cache"), Some("MEMC"));
    assert_eq!(r.header("X-Position"), Some(format!("1,0,{k3}").as_str()));
    assert_eq!(r.header("X-Value-Bytes"), Some("1002"), "the JSON string's text, quotes included");
    assert_eq!(r.header("Cache-Control"), None, "no lifetime");
    h.call("POST", "/bank/b/entry/t?lifetime=3600", b"x").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    let r = h.get("/bank/b/entry/t");
    let left = r.header("Cache-Control").and_then(|c| c.strip_prefix("max-age=")).unwrap();
    assert!((3590..=3600).contains(&left.parse::<u64>().unwrap()), "{}", r.show());
    assert!(r.header("Expires").is_some());
}

/// `POST …?as=json` stores the body as JSON, read back as JSON by the JSON port; a body that is not JSON
/// is 400 and stores nothing; `?as=text` is the original's string; another `as` is 400.
#[test]
fn rest_post_as_json() {
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    let mut c = s.connect();
    let body = b" {\"a\": [1, 2], \"b\": \"<script>\"}\n";
    h.call("POST", "/bank/b/entry/j?as=json&lifetime=60", body).expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    c.check(&get("b", "j"), &ok(r#"{"a": [1, 2], "b": "<script>"}"#));
    let r = h.get("/bank/b/entry/j");
    assert_eq!(r.header("X-Cache"), Some("MEMC"));
    assert_eq!(r.header("X-Position"), None, "memory only");
    h.call("POST", "/bank/b/entry/t?as=text", b"[1]").expect_json("HTTP/1.1 200 OK", OK_EMPTY);
    c.check(&get("b", "t"), &ok("\"[1]\""));
    for (target, body) in [("/bank/b/entry/x?as=json", &b"{nope"[..]), ("/bank/b/entry/x?as=xml", b"1")] {
        let r = h.call("POST", target, body);
        assert_eq!(r.status, "HTTP/1.1 400 Bad Request", "{target}: {}", r.show());
    }
    c.check(&get("b", "x"), &no_key("x"));
}

// ---------------------------------------------------------------------------
// Values sent straight from the volume files.
// ---------------------------------------------------------------------------

/// Large values read from disk (sent from their volume file) answer pipelined GETs and HEADs in order,
/// byte for byte, heads between bodies, with a small value among them; the same again from memory.
#[test]
fn pipelined_disk_reads_of_large_values_come_back_whole_and_in_order() {
    let (s, _dir) = start_with_data_dir(&[]);
    let mut h = Http::connect(s.http_addr());
    let values: Vec<Vec<u8>> = (0..3).map(|i| noise(100_000 + i * 7_001, 50 + i as u64)).collect();
    for (i, v) in values.iter().enumerate() {
        h.put(&format!("/big{i}"), v).expect("HTTP/1.1 200 OK", b"ok");
    }
    h.put("/small", b"tiny").expect("HTTP/1.1 200 OK", b"ok");
    for round in 0..4 {
        let mut batch = Vec::new();
        for i in 0..3 {
            batch.extend(request("GET", &format!("/big{i}"), &[], b""));
            batch.extend(request("HEAD", &format!("/big{i}"), &[], b""));
        }
        batch.extend(request("GET", "/small", &[], b""));
        batch.extend(request("GET", "/big0", &[], b""));
        h.send(&batch);
        for (i, v) in values.iter().enumerate() {
            let r = h.read_response();
            assert!(r.status == "HTTP/1.1 200 OK" && r.body == *v, "round {round}, GET big{i}: {}", r.show());
            if round == 0 {
                r.expect_header("x-cache", Some("DISK"));
            }
            let head = h.read_response_opt(true);
            assert_eq!(head.status, "HTTP/1.1 200 OK");
            head.expect_header("content-length", Some(&v.len().to_string()));
            assert!(matches!(head.header("x-cache"), Some("DISK" | "MEMC")), "{}", head.show());
        }
        h.read_response().expect("HTTP/1.1 200 OK", b"tiny");
        let r = h.read_response();
        assert!(r.body == values[0], "round {round}: the last GET");
    }
    // Still a working connection.
    h.get("/small").expect("HTTP/1.1 200 OK", b"tiny");
}

/// A flipped byte in a large value's record is found before anything is sent from the file: a miss, the
/// key forgotten, the damage counted; the damaged bytes never reach the client.
#[test]
fn a_damaged_large_value_is_a_miss_not_sent_from_the_file() {
    let (s, dir) = start_with_data_dir(&[]);
    let mut h = Http::connect(s.http_addr());
    let value = noise(120_000, 7);
    h.put("/hurt", &value).expect("HTTP/1.1 200 OK", b"ok");
    h.put("/fine", &value).expect("HTTP/1.1 200 OK", b"ok");
    let at = (record_size("files", "hurt", 0) + 60_000) as u64;
    let volume = dir.path().join("data").join("0");
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&volume).unwrap();
    let mut byte = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut byte, at).unwrap();
    assert_eq!(byte[0], value[60_000], "the byte flipped is the value's");
    std::os::unix::fs::FileExt::write_all_at(&file, &[byte[0] ^ 0x20], at).unwrap();
    h.get("/hurt").expect("HTTP/1.1 404 Not Found", &gone("hurt"));
    h.get("/hurt").expect("HTTP/1.1 404 Not Found", &gone("hurt"));
    let r = h.get("/fine");
    assert!(r.status == "HTTP/1.1 200 OK" && r.body == value, "the other record: {}", r.show());
    let mut c = s.connect();
    assert_eq!(stat(&stats(&mut c), "crc_failures"), 1.0);
}

/// A client that stops reading in the middle of replies sent from a volume while the writer reuses that
/// volume over and over: the writer goes on (its PUTs are answered), and the client, once it reads,
/// gets the original bytes of every reply (the rest of a send is copied into memory when the volume is
/// wanted, and what was already handed to the socket keeps its bytes).
#[test]
fn a_stalled_reader_gets_the_original_bytes_while_its_volume_is_reused() {
    let (s, _dir) = start_with_data_dir(&[
        "--volume-size",
        "1048576",
        "--volume-count",
        "2",
        "--cache-after-miss-count",
        "255",
    ]);
    let mut stalled = Http::connect(s.http_addr());
    let value = noise(300_000, 99);
    stalled.put("/held", &value).expect("HTTP/1.1 200 OK", b"ok");
    // Far more than the sockets buffer: most of the replies wait in the server, mid-send.
    const GETS: usize = 40;
    let mut batch = Vec::new();
    for _ in 0..GETS {
        batch.extend(request("GET", "/held", &[], b""));
    }
    stalled.send(&batch);
    // The writer fills and reuses both volumes several times meanwhile.
    let mut writer = Http::connect(s.http_addr());
    let other = noise(200_000, 5);
    for i in 0..30 {
        writer.put(&format!("/other{i}"), &other).expect("HTTP/1.1 200 OK", b"ok");
    }
    let mut c = s.connect();
    assert!(stat(&stats(&mut c), "volume_reuses") >= 2.0, "the volumes were reused");
    // Requests past the replies the server holds for a client (max_output_bytes) run once it reads: by
    // then the key may be gone with its volume, a miss from there on.
    let mut gone_from = None;
    for i in 0..GETS {
        let r = stalled.read_response();
        if r.status == "HTTP/1.1 404 Not Found" {
            assert!(i > 0, "the first replies were sent (or being sent) before the writer went on");
            gone_from.get_or_insert(i);
            continue;
        }
        assert_eq!(r.status, "HTTP/1.1 200 OK", "reply {i}");
        assert!(gone_from.is_none(), "reply {i} found the key after reply {gone_from:?} missed it");
        assert!(r.body == value, "reply {i} is not the original value ({} bytes)", r.body.len());
    }
    // The key itself is gone with its volume.
    stalled.get("/held").expect("HTTP/1.1 404 Not Found", &gone("held"));
}
