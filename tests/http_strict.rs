//! Strict HTTP/1.1 framing and request targets (issue 13, point 2): a request whose framing two parsers could
//! read differently (request smuggling), or whose target is not a path, is refused with `400` (`501` for a
//! transfer coding bankcache does not implement) and the connection is closed, since the server can no
//! longer know where the next request starts. Each case is checked on a raw socket against bankcache, and
//! again through a real nginx running `docs/nginx.conf`: nginx either refuses it itself, or rewrites it into a
//! clean request, or passes it on and bankcache refuses it; either way nothing hidden in it is ever run.

mod common;

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::nginx::{http, Nginx};
use common::TestServer;

/// One response off the wire.
struct Response {
    code: u16,
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Reads one response (its body by `Content-Length`).
fn read_response(reader: &mut impl BufRead) -> io::Result<Response> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a status line"));
    }
    let code = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("status line {line:?}")))?;
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let len = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Response { code, headers, body })
}

/// Sends `request` on a fresh connection and reads one response; the reader is returned to look for the close.
fn exchange(addr: SocketAddr, request: &[u8]) -> io::Result<(Response, BufReader<TcpStream>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(request)?;
    let mut reader = BufReader::new(stream);
    let response = read_response(&mut reader)?;
    Ok((response, reader))
}

/// True when the peer closes with no further bytes (EOF or a reset), within the read timeout.
fn closes(reader: &mut impl Read) -> bool {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) => rest.is_empty(),
        Err(e) => e.kind() == io::ErrorKind::ConnectionReset && rest.is_empty(),
    }
}

/// What bankcache must answer when the request reaches it directly.
#[derive(Clone, Copy)]
enum Direct {
    /// This status, `Connection: close`, a body that says why (contains the text), then the close.
    Refused(u16, &'static str),
    /// Accepted: the file API's key then holds this value.
    Stored(&'static str, &'static str),
}

/// What happens to it behind nginx.
#[derive(Clone, Copy)]
enum Proxied {
    /// nginx refuses it itself with this status: nothing of it reaches bankcache.
    AtNginx(u16),
    /// nginx passes it on and bankcache refuses it: the response is bankcache's `400` (with `X-Upstream`).
    AtBankcache,
    /// nginx rewrites it into a clean request, which stores this value under this key.
    Normalized(&'static str, &'static str),
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    direct: Direct,
    proxied: Proxied,
    /// Keys that a server misreading the framing would have written: they must never exist.
    hidden: &'static [&'static str],
}

/// A request smuggled behind another: if any parser takes the bytes before it as a whole request, it runs.
const HIDDEN_PUT: &str = "PUT /hidden HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nhidden";

fn case(name: &'static str, request: &str, direct: Direct, proxied: Proxied) -> Case {
    Case { name, request: request.as_bytes().to_vec(), direct, proxied, hidden: &[] }
}

fn smuggling(name: &'static str, request: &str, direct: Direct, proxied: Proxied) -> Case {
    Case { hidden: &["hidden"], ..case(name, request, direct, proxied) }
}

use Direct::{Refused, Stored};
use Proxied::{AtBankcache, AtNginx, Normalized};

/// Every case: one line of the README's table of what bad HTTP gets, or a lenient form real clients use.
fn cases() -> Vec<Case> {
    let h = HIDDEN_PUT;
    let chunked = "PUT /visible HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    vec![
        // Content-Length and Transfer-Encoding together: whichever a proxy honours, the other hides a PUT.
        smuggling(
            "CL then TE",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{h}"),
            Refused(400, "Content-Length and Transfer-Encoding"),
            AtNginx(400),
        ),
        smuggling(
            "TE then CL, odd case",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\ntransfer-encoding: CHUNKED\r\ncontent-LENGTH: 80\r\n\r\n0\r\n\r\n{h}"),
            Refused(400, "Content-Length and Transfer-Encoding"),
            AtNginx(400),
        ),
        smuggling(
            "CL and TE on HTTP/1.0",
            &format!("PUT /visible HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{h}"),
            Refused(400, "Content-Length and Transfer-Encoding"),
            AtNginx(400),
        ),
        smuggling(
            "TE on HTTP/1.0",
            &format!("PUT /visible HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n{h}"),
            Refused(400, "Transfer-Encoding in an HTTP/1.0 request"),
            AtNginx(400),
        ),
        // Content-Length itself.
        smuggling(
            "two equal Content-Lengths",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx{h}"),
            Refused(400, "more than one Content-Length"),
            AtNginx(400),
        ),
        smuggling(
            "two different Content-Lengths",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 0\r\n\r\nx{h}"),
            Refused(400, "more than one Content-Length"),
            AtNginx(400),
        ),
        smuggling(
            "Content-Length list",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nContent-Length: 1, 1\r\n\r\nx{h}"),
            Refused(400, "Content-Length"),
            AtNginx(400),
        ),
        smuggling(
            "Content-Length with a plus sign",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nContent-Length: +1\r\n\r\nx{h}"),
            Refused(400, "Content-Length"),
            AtNginx(400),
        ),
        smuggling(
            "negative Content-Length",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\nx{h}"),
            Refused(400, "Content-Length"),
            AtNginx(400),
        ),
        smuggling(
            "Content-Length overflow",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nContent-Length: 18446744073709551617\r\n\r\nx{h}"),
            Refused(400, "Content-Length"),
            AtNginx(400),
        ),
        smuggling(
            "hex Content-Length",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nContent-Length: 0x1\r\n\r\nx{h}"),
            Refused(400, "Content-Length"),
            AtNginx(400),
        ),
        // Header syntax that parsers read differently.
        smuggling(
            "obsolete line folding",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nX-A: a\r\n b\r\nContent-Length: 1\r\n\r\nx{h}"),
            Refused(400, "line folding"),
            AtNginx(400),
        ),
        smuggling(
            "Transfer-Encoding folded onto the next line",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding:\r\n chunked\r\n\r\nx{h}"),
            Refused(400, "line folding"),
            AtNginx(400),
        ),
        smuggling(
            "bare CR in a header value",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nX-A: a\rTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\nx{h}"),
            Refused(400, "bare CR"),
            AtNginx(400),
        ),
        smuggling(
            "whitespace before the colon",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nTransfer-Encoding : chunked\r\nContent-Length: 1\r\n\r\nx{h}"),
            Refused(400, "whitespace before the colon"),
            AtNginx(400),
        ),
        // Transfer-Encoding: exactly one coding, chunked.
        smuggling(
            "two Transfer-Encoding lines",
            &format!("{}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n{h}", &chunked[..chunked.len() - 2]),
            Refused(400, "more than one Transfer-Encoding"),
            AtNginx(400),
        ),
        smuggling(
            "chunked, then another Transfer-Encoding line",
            &format!("{}Transfer-Encoding: gzip\r\n\r\n0\r\n\r\n{h}", &chunked[..chunked.len() - 2]),
            Refused(400, "more than one Transfer-Encoding"),
            AtNginx(400),
        ),
        smuggling(
            "chunked, gzip",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n{h}"),
            Refused(400, "Transfer-Encoding must be exactly chunked"),
            AtNginx(501),
        ),
        smuggling(
            "chunked, chunked",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n{h}"),
            Refused(400, "Transfer-Encoding must be exactly chunked"),
            AtNginx(501),
        ),
        smuggling(
            "chunked with a parameter",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n{h}"),
            Refused(400, "Transfer-Encoding must be exactly chunked"),
            AtNginx(501),
        ),
        smuggling(
            "gzip, chunked",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{h}"),
            Refused(501, "only the chunked transfer coding"),
            AtNginx(501),
        ),
        smuggling(
            "gzip",
            &format!("PUT /visible HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n{h}"),
            Refused(501, "only the chunked transfer coding"),
            AtNginx(501),
        ),
        // Chunked bodies.
        smuggling(
            "empty chunk size line",
            &format!("{chunked}\r\n\r\n{h}"),
            Refused(400, "chunk size"),
            AtNginx(400),
        ),
        smuggling(
            "non-hex chunk size",
            &format!("{chunked}zz\r\nx\r\n0\r\n\r\n{h}"),
            Refused(400, "chunk size"),
            AtNginx(400),
        ),
        smuggling(
            "chunk size overflow",
            &format!("{chunked}10000000000000001\r\nx\r\n0\r\n\r\n{h}"),
            Refused(400, "chunk size"),
            AtNginx(400),
        ),
        smuggling(
            "chunk size with a sign",
            &format!("{chunked}+1\r\nx\r\n0\r\n\r\n{h}"),
            Refused(400, "chunk size"),
            AtNginx(400),
        ),
        smuggling(
            "chunk data longer than its size",
            &format!("{chunked}1\r\nxyz\r\n0\r\n\r\n{h}"),
            Refused(400, "chunk data not followed by CRLF"),
            AtNginx(400),
        ),
        // A parser that lets the extension run on to the CRLF reads `0\r\n\r\n` as the data and then the
        // hidden PUT; one that ends the line at the LF (nginx) reads `hello`, then junk.
        smuggling(
            "LF inside a chunk extension",
            &format!("{chunked}5;a\nhello\r\n0\r\n\r\n\r\n0\r\n\r\n{h}"),
            Refused(400, "chunk extension"),
            Normalized("visible", "hello"),
        ),
        case(
            "control character in a chunk extension",
            &format!("{chunked}1;a\x01\r\nx\r\n0\r\n\r\n"),
            Refused(400, "chunk extension"),
            Normalized("visible", "x"),
        ),
        case(
            "bare LF ends a chunk size line",
            &format!("{chunked}1\nx\r\n0\r\n\r\n"),
            Refused(400, "chunk size"),
            Normalized("visible", "x"),
        ),
        case(
            "bare LF after chunk data",
            &format!("{chunked}1\r\nx\n0\r\n\r\n"),
            Refused(400, "chunk data not followed by CRLF"),
            Normalized("visible", "x"),
        ),
        case(
            "whitespace after a chunk size",
            &format!("{chunked}1 \r\nx\r\n0\r\n\r\n"),
            Refused(400, "chunk size"),
            Normalized("visible", "x"),
        ),
        case(
            "malformed trailer",
            &format!("{chunked}1\r\nx\r\n0\r\nnot a field\r\n\r\n"),
            Refused(400, "trailer"),
            Normalized("visible", "x"),
        ),
        // Control characters.
        case(
            "control character in a header value",
            "GET /visible HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n",
            Refused(400, "control character"),
            AtBankcache,
        ),
        case(
            "DEL in a header value",
            "GET /visible HTTP/1.1\r\nHost: t\r\nX-A: a\x7fb\r\n\r\n",
            Refused(400, "control character"),
            AtBankcache,
        ),
        case(
            "NUL in a header value",
            "GET /visible HTTP/1.1\r\nHost: t\r\nX-A: a\0b\r\n\r\n",
            Refused(400, "control character"),
            AtNginx(400),
        ),
        case(
            "control character in the target",
            "PUT /visi\x01ble HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            Refused(400, "request line"),
            AtNginx(400),
        ),
        case(
            "DEL in the target",
            "PUT /visi\x7fble HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            Refused(400, "request line"),
            AtNginx(400),
        ),
        // Request targets.
        case(
            "absolute-form target",
            "PUT http://127.0.0.1/abs-key HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabs",
            Stored("abs-key", "abs"),
            Normalized("abs-key", "abs"),
        ),
        case(
            "absolute-form https target with a query",
            "PUT HTTPS://example.com:8443/abs-key-2?x=1 HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            Stored("abs-key-2", "x"),
            Normalized("abs-key-2", "x"),
        ),
        case(
            "relative target",
            "PUT rel-key HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            Refused(400, "request target"),
            AtNginx(400),
        ),
        case("asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n", Refused(400, "request target"), AtNginx(400)),
        case(
            "authority-form",
            "CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: t\r\n\r\n",
            Refused(400, "request target"),
            AtNginx(400),
        ),
        case(
            "absolute-form with userinfo",
            "PUT http://user@127.0.0.1/visible HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            Refused(400, "request target"),
            AtNginx(400),
        ),
        case(
            "absolute-form of another scheme",
            "PUT ftp://127.0.0.1/ftp-key HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            Refused(400, "request target"),
            Normalized("ftp-key", "x"),
        ),
        case(
            "fragment in the target",
            "PUT /visible#frag HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
            Refused(400, "fragment"),
            AtBankcache,
        ),
        // Lenient but safe, as curl, nginx and Python send: these must keep working.
        case(
            "chunk extension and trailer",
            &format!("{chunked}2;name=\"v a\"\r\nok\r\n0\r\nContent-Length: 9\r\n\r\n"),
            Stored("visible", "ok"),
            Normalized("visible", "ok"),
        ),
        case(
            "HTAB around a header value",
            "PUT /tabbed HTTP/1.1\r\nHost: t\r\nContent-Length:\t1\t\r\n\r\nx",
            Stored("tabbed", "x"),
            AtNginx(400),
        ),
        case(
            "upper-case chunked and leading zeros",
            "PUT /zeros HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked\r\n\r\n001\r\nz\r\n000\r\n\r\n",
            Stored("zeros", "z"),
            Normalized("zeros", "z"),
        ),
    ]
}

/// The file API's value of `key` on a server (`None`: a miss).
fn value(server: &TestServer, key: &str) -> Option<Vec<u8>> {
    let (status, _, body) = http(server.http_addr(), "GET", &format!("/{key}"), b"");
    match status {
        200 => Some(body),
        404 => None,
        other => panic!("GET /{key} answered {other}"),
    }
}

/// Removes what the case may have stored, so the next case starts clean.
fn forget(server: &TestServer, keys: &[&str]) {
    for key in keys {
        http(server.http_addr(), "DELETE", &format!("/{key}"), b"");
    }
}

/// How many HTTP requests bankcache refused and closed the connection on (`requests_too_large`).
fn refused(server: &TestServer) -> f64 {
    common::stat(&common::stats(&mut server.connect()), "requests_too_large")
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Straight to bankcache's HTTP port: every case gets its answer, a refusal closes the connection, and
/// nothing smuggled runs.
#[test]
fn bad_http_is_refused_and_the_connection_closed() {
    let server = TestServer::start(&[]);
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.name;
        let (response, mut rest) = match exchange(server.http_addr(), &case.request) {
            Ok(got) => got,
            Err(e) => {
                failures.push(format!("{name}: no response ({e})"));
                continue;
            }
        };
        let body = show(&response.body);
        match case.direct {
            Refused(code, why) => {
                if response.code != code || !body.contains(why) {
                    failures
                        .push(format!("{name}: got {} {body:?}, want {code} saying {why:?}", response.code));
                }
                if response.headers.get("connection").map(String::as_str) != Some("close") {
                    failures.push(format!("{name}: the refusal does not say `Connection: close`"));
                }
                if !closes(&mut rest) {
                    failures.push(format!("{name}: the connection stayed open after the refusal"));
                }
                if let Some(stored) = value(&server, "visible") {
                    failures.push(format!("{name}: the refused request stored {:?}", show(&stored)));
                }
            }
            Stored(key, want) => {
                let got = value(&server, key);
                if response.code != 200 || got.as_deref() != Some(want.as_bytes()) {
                    failures.push(format!(
                        "{name}: got {} {body:?} and /{key} = {got:?}, want {want:?}",
                        response.code
                    ));
                }
            }
        }
        smuggled_nothing(&server, name, case.hidden, &mut failures);
    }
    report(&failures);
}

/// The same requests through nginx running `docs/nginx.conf`: nginx refuses each smuggling attempt itself
/// (and bankcache sees nothing of it), or rewrites it into a clean request, or passes it on and bankcache
/// refuses it. Nothing hidden in a request ever runs.
#[test]
fn bad_http_is_refused_through_nginx_too() {
    let server = TestServer::start(&[]);
    let nginx = Nginx::start(&[server.http_addr(); 3]);
    let mut failures = Vec::new();
    for case in cases() {
        let name = case.name;
        let before = refused(&server);
        let response = match exchange(nginx.addr, &case.request) {
            Ok((response, _)) => response,
            Err(e) => {
                failures.push(format!("{name}: no response from nginx ({e})"));
                continue;
            }
        };
        let upstream = response.headers.contains_key("x-upstream");
        let body = show(&response.body);
        let refused_here = refused(&server) - before;
        match case.proxied {
            AtNginx(code) => {
                if (response.code, upstream, refused_here) != (code, false, 0.0) {
                    failures.push(format!(
                        "{name}: got {} (reached bankcache: {upstream}, refused there: {refused_here}), want nginx's \
                         own {code}",
                        response.code
                    ));
                }
            }
            AtBankcache => {
                if (response.code, upstream, refused_here) != (400, true, 1.0)
                    || !body.starts_with("Bad Request: ")
                {
                    failures.push(format!(
                        "{name}: got {} {body:?} (reached bankcache: {upstream}, refused there: {refused_here}), want \
                         bankcache's 400",
                        response.code
                    ));
                }
            }
            Normalized(key, want) => {
                let got = value(&server, key);
                if response.code != 200 || got.as_deref() != Some(want.as_bytes()) {
                    failures.push(format!(
                        "{name}: got {} {body:?} and /{key} = {got:?}, want {want:?}",
                        response.code
                    ));
                }
            }
        }
        if let (AtNginx(_) | AtBankcache, Some(stored)) = (case.proxied, value(&server, "visible")) {
            failures.push(format!("{name}: the refused request stored {:?}", show(&stored)));
        }
        smuggled_nothing(&server, name, case.hidden, &mut failures);
    }
    report(&failures);
}

/// Notes a failure for each key of `hidden` that a smuggled request stored, then clears the keys a case uses.
fn smuggled_nothing(server: &TestServer, name: &str, hidden: &[&str], failures: &mut Vec<String>) {
    for key in hidden {
        if value(server, key).is_some() {
            failures.push(format!("{name}: the smuggled request for /{key} ran"));
        }
    }
    forget(server, &["visible", "hidden"]);
}

/// Fails the test with every case that failed, not only the first.
fn report(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases().len(),
        failures.join("\n")
    );
}
