//! Access control against the real binary (issue 13, point 1): `auth_token` from the file, the flag and
//! `BANKCACHE_AUTH_TOKEN`; the JSON port's `auth` op (nothing runs before it, pipelined or not, a wrong
//! token counted, logged without the token and closing the connection at its third); the HTTP port's
//! bearer tokens on every kind of route, with `401` and `WWW-Authenticate`, and `metrics_public`; the
//! throttle that holds guessers, which lets a right token in once it opens. No test asserts a timing.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::*;

const TOKEN: &str = "s3cret-T0ken";

fn auth(token: &str) -> String {
    format!(r#"{{"op":"auth","token":{}}}"#, q(token))
}

/// The seed's error envelope of an op sent before `auth`.
fn auth_required() -> String {
    err(r#"Authentication required: send {\"op\": \"auth\", \"token\": ...} first"#)
}

fn invalid_token() -> String {
    err("Invalid token")
}

fn locked_server(extra: &[&str]) -> TestServer {
    let mut args = vec!["--auth-token", TOKEN];
    args.extend_from_slice(extra);
    TestServer::start(&args)
}

/// The stats of the server, read on a connection of its own that authenticates first.
fn stats_as(s: &TestServer, token: &str) -> Map<String, Value> {
    let mut c = s.connect();
    c.check(&auth(token), OK_EMPTY);
    stats(&mut c)
}

#[test]
fn before_auth_nothing_runs_and_every_op_gets_the_error() {
    let s = locked_server(&[]);
    let mut c = s.connect();
    for op in [
        put("b", "k", "1"),
        get("b", "k"),
        incr("b", "k", "1"),
        bank_keys("b"),
        bank_reset("b"),
        r#"{"op":"bank.list"}"#.into(),
        r#"{"op":"ping"}"#.into(),
        r#"{"op":"stats"}"#.into(),
    ] {
        c.check(&op, &auth_required());
    }
    // Not JSON is still just not JSON; a malformed auth says what is wrong with it.
    c.check("nope", INVALID_JSON);
    c.check(r#"{"op":"auth"}"#, &err("token is required"));
    // The same connection, once authenticated, finds that the put never ran.
    c.check(&auth(TOKEN), OK_EMPTY);
    c.check(&get("b", "k"), &no_key("k"));
    let st = stats(&mut c);
    assert_eq!(stat(&st, "ops_put"), 0.0, "{st:?}");
    assert_eq!(stat(&st, "keys"), 0.0);
    assert_eq!(stat(&st, "auth_failures"), 0.0, "refusals before auth are not failed attempts");
    // The auth without a token was refused before it ran: an error, not an op (as for every op).
    assert_eq!(stat(&st, "ops_auth"), 1.0);
    assert_eq!(stat(&st, "errors"), 11.0, "{st:?}");
}

#[test]
fn the_right_token_opens_the_connection_for_good() {
    let s = locked_server(&[]);
    let mut c = s.connect();
    c.check(&auth(TOKEN), OK_EMPTY);
    c.check(&put("b", "k", "\"v\""), OK_EMPTY);
    c.check(&get("b", "k"), &ok("\"v\""));
    c.check(r#"{"op":"ping"}"#, PONG);
    c.check(&bank_keys("b"), &ok("[\"k\"]"));
    // Another connection is locked until it authenticates itself.
    let mut other = s.connect();
    other.check(&get("b", "k"), &auth_required());
}

/// `auth` and the ops after it in one write: the ops run, in order, as authenticated; ops before it in
/// the same write are refused.
#[test]
fn a_pipelined_auth_lets_the_ops_after_it_run() {
    let s = locked_server(&[]);
    let mut c = s.connect();
    let write = [put("b", "early", "0"), auth(TOKEN), put("b", "k", "1"), incr("b", "k", "2"), get("b", "k")]
        .map(|r| r + "\n")
        .concat();
    c.send(&write);
    c.expect_line(&auth_required(), "the put before auth");
    c.expect_line(OK_EMPTY, "auth");
    c.expect_line(OK_EMPTY, "put");
    c.expect_line(&ok("3.0"), "incr");
    c.expect_line(&ok("3.0"), "get");
    c.check(&get("b", "early"), &no_key("early"));
}

/// A wrong token gets `Invalid token` and runs nothing; it is counted and logged at warn with the
/// peer's address and without the token; the third on a connection is its last reply, even with more
/// requests pipelined behind it, which are never run.
#[test]
fn wrong_tokens_are_refused_counted_logged_and_the_third_closes() {
    let s = locked_server(&[]);
    let mut c = s.connect();
    c.check(&auth("guess-one"), &invalid_token());
    c.check(&put("b", "k", "1"), &auth_required());
    let write =
        [auth("guess-two"), auth("guess-three"), put("b", "k", "1"), auth(TOKEN)].map(|r| r + "\n").concat();
    c.send(&write);
    c.expect_line(&invalid_token(), "the second wrong token");
    c.expect_line(&invalid_token(), "the third wrong token");
    c.expect_closed();
    let st = stats_as(&s, TOKEN);
    assert_eq!(stat(&st, "auth_failures"), 3.0, "{st:?}");
    assert_eq!(stat(&st, "keys"), 0.0, "the put after the last failure ran");
    let log = s.stderr();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("authentication failed")).collect();
    assert_eq!(warnings.len(), 3, "{log}");
    for line in &warnings {
        assert!(line.contains("WARN") && line.contains("from 127.0.0.1:"), "{line}");
    }
    assert!(warnings[2].contains("closing"), "{}", warnings[2]);
    for secret in ["guess-one", "guess-two", "guess-three", TOKEN] {
        assert!(!log.contains(secret), "the log shows a token: {log}");
    }
}

/// More wrong tokens than the throttle's burst, from several connections at once: every one is
/// answered and counted, those past the burst once the throttle lets them (the test does not time it),
/// and a right token still gets in afterwards: a guesser slows others down, never locks them out.
#[test]
fn guesses_past_the_burst_are_held_and_a_right_token_still_gets_in() {
    let s = locked_server(&[]);
    let guessers: Vec<_> = (0..5)
        .map(|i| {
            let mut c = s.connect();
            let write = (0..3).map(|j| auth(&format!("guess-{i}-{j}")) + "\n").collect::<String>();
            c.send(&write);
            c
        })
        .collect();
    for mut c in guessers {
        for _ in 0..3 {
            assert_eq!(c.read_line(), invalid_token());
        }
        c.expect_closed();
    }
    let mut c = s.connect();
    c.send(&format!("{}\n{}\n", auth(TOKEN), put("b", "k", "1")));
    c.expect_line(OK_EMPTY, "auth after the guessers");
    c.expect_line(OK_EMPTY, "put");
    assert_eq!(stat(&stats(&mut c), "auth_failures"), 15.0);
}

/// Without a token, `auth` answers ok whatever it is given, and nothing else changes.
#[test]
fn without_a_token_auth_is_ok_and_nothing_is_locked() {
    let s = TestServer::start(&[]);
    let mut c = s.connect();
    c.check(&put("b", "k", "1"), OK_EMPTY);
    c.check(&auth("anything"), OK_EMPTY);
    c.check(&get("b", "k"), &ok("1"));
    assert_eq!(stat(&stats(&mut c), "auth_failures"), 0.0);
}

// ---------------------------------------------------------------------------
// The token's sources: the file, the environment, the flag.
// ---------------------------------------------------------------------------

/// Which of `tokens` the server takes: the one `auth` accepts (the others are wrong, but fewer than a
/// connection's three failures are tried per connection).
fn accepted(s: &TestServer, tokens: &[&str]) -> Vec<String> {
    tokens
        .iter()
        .filter(|token| {
            let mut c = s.connect();
            c.request(&auth(token)) == OK_EMPTY
        })
        .map(|t| t.to_string())
        .collect()
}

#[test]
fn the_token_comes_from_the_file_the_environment_or_the_flag_and_the_flag_wins() {
    let from_env = |command: &mut std::process::Command| {
        command.env("BANKCACHE_AUTH_TOKEN", "env-token");
    };
    let listen = ["--listen", "127.0.0.1:0"];
    let file = r#"{"auth_token":"file-token"}"#;
    let s = TestServer::start_with_config(file, &listen);
    assert_eq!(accepted(&s, &["file-token", "env-token"]), ["file-token"]);
    let s = TestServer::start_prepared("{}", &listen, from_env);
    assert_eq!(accepted(&s, &["env-token", "file-token"]), ["env-token"]);
    let s = TestServer::start_prepared(file, &listen, from_env);
    assert_eq!(
        accepted(&s, &["env-token", "file-token"]),
        ["env-token"],
        "the environment wins over the file"
    );
    let with_flag = ["--listen", "127.0.0.1:0", "--auth-token", "flag-token"];
    let s = TestServer::start_prepared(file, &with_flag, from_env);
    assert_eq!(
        accepted(&s, &["flag-token", "env-token"]),
        ["flag-token"],
        "the flag wins over the environment"
    );
}

#[test]
fn a_bad_token_stops_the_server_at_start_without_showing_it() {
    let finished = run_to_exit(
        &["--listen", "127.0.0.1:0", "--auth-token", "has space"],
        std::time::Duration::from_secs(20),
    );
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    assert!(finished.stderr.contains("auth_token"), "{}", finished.stderr);
    assert!(!finished.stderr.contains("has space"), "{}", finished.stderr);
}

/// A server on loopback without a token does not warn (the warning for other addresses is tested on
/// the address check itself: a test does not listen beyond loopback).
#[test]
fn no_warning_on_loopback_and_the_start_up_summary_says_who_may_do_what() {
    let s = TestServer::start(&[]);
    assert!(
        eventually(std::time::Duration::from_secs(5), || s.stderr().contains("access: ")),
        "{}",
        s.stderr()
    );
    assert!(s.stderr().contains("access: open, no auth_token"), "{}", s.stderr());
    assert!(!s.stderr().contains("beyond loopback"), "{}", s.stderr());
    let s = locked_server(&[]);
    assert!(
        eventually(std::time::Duration::from_secs(5), || s.stderr().contains("access: ")),
        "{}",
        s.stderr()
    );
    assert!(s.stderr().contains("access: clients must show the auth_token"), "{}", s.stderr());
    assert!(!s.stderr().contains(TOKEN), "{}", s.stderr());
}

/// The README's curl line of the Access control section runs as written (its address aside), with the
/// token in the environment as the README's set-up puts it.
#[test]
fn the_readme_s_bearer_curl_line_runs_as_written() {
    let readme = include_str!("../README.md");
    let prefix = "curl -H \"Authorization: Bearer $BANKCACHE_AUTH_TOKEN\" localhost:1234/";
    let line = readme.lines().map(str::trim).find(|l| l.starts_with(prefix)).expect("the README's curl line");
    let Some(curl) = ["/usr/bin/curl", "/usr/local/bin/curl", "/bin/curl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        panic!("this test needs curl (scripts/test.sh installs it)");
    };
    let s = TestServer::start(&["--auth-token", "s3cret-T0ken"]);
    let line = line.replacen("curl", curl, 1).replace("localhost:1234", &s.http_addr().to_string());
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("{line} --silent --show-error --fail")])
        .env("BANKCACHE_AUTH_TOKEN", "s3cret-T0ken")
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "{\"status\": \"ok\", \"data\": []}\n");
}

// ---------------------------------------------------------------------------
// HTTP.
// ---------------------------------------------------------------------------

/// One response: status code, headers (lower-case names) and body.
struct Response {
    code: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Sends one request on `stream` and reads its response (by `Content-Length`; a HEAD's has no body).
fn exchange(reader: &mut BufReader<TcpStream>, request: &str) -> Response {
    reader.get_mut().write_all(request.as_bytes()).unwrap();
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let code = status.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{status:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap();
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let len: usize =
        headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; if request.starts_with("HEAD") { 0 } else { len }];
    reader.read_exact(&mut body).unwrap();
    Response { code, headers, body }
}

fn http_connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    BufReader::new(stream)
}

/// A request of `method` and `target`, with `auth` as its `Authorization` header if any, and `body`.
fn request(method: &str, target: &str, auth: Option<&str>, body: &str) -> String {
    let auth = auth.map_or_else(String::new, |a| format!("Authorization: {a}\r\n"));
    format!("{method} {target} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {}\r\n\r\n{body}", body.len())
}

/// A request of every kind of route: the file API, the REST API (and under `/api`), `/stats`, `/metrics`.
const ROUTES: &[(&str, &str, &str)] = &[
    ("PUT", "/file-key", "bytes"),
    ("GET", "/file-key", ""),
    ("HEAD", "/file-key", ""),
    ("DELETE", "/file-key", ""),
    ("POST", "/bank/b/entry/k", "text"),
    ("GET", "/bank/b/entry/k", ""),
    ("PUT", "/bank/b/entry/k?op=touch", ""),
    ("GET", "/bank/b/entries", ""),
    ("GET", "/bank/b/scan", ""),
    ("GET", "/banks", ""),
    ("GET", "/api/banks", ""),
    ("PUT", "/bank/b?op=reset", ""),
    ("GET", "/stats", ""),
    ("GET", "/metrics", ""),
];

#[test]
fn every_http_route_needs_the_bearer_token() {
    let s = locked_server(&[]);
    let mut c = http_connect(s.http_addr());
    for &(method, target, body) in ROUTES {
        for auth in [None, Some("Basic dXNlcjpwYXNz"), Some("Bearer")] {
            let r = exchange(&mut c, &request(method, target, auth, body));
            assert_eq!(r.code, 401, "{method} {target} with {auth:?}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"bankcache\""), "{method} {target}");
            assert_eq!(
                r.header("connection"),
                None,
                "{method} {target}: a missing token keeps the connection"
            );
            if method != "HEAD" {
                assert_eq!(r.body, b"Authentication required: send Authorization: Bearer <token>");
            }
        }
    }
    // Nothing ran: with the token, the file and the entry are not there.
    let bearer = format!("Bearer {TOKEN}");
    let r = exchange(&mut c, &request("GET", "/file-key", Some(&bearer), ""));
    assert_eq!(r.code, 404);
    let r = exchange(&mut c, &request("GET", "/bank/b/entry/k", Some(&bearer), ""));
    assert_eq!(r.code, 404);
    assert_eq!(stat(&stats_as(&s, TOKEN), "auth_failures"), 0.0, "no token is no failed attempt");
}

#[test]
fn the_bearer_token_works_on_every_route_and_a_wrong_one_closes_and_counts() {
    let s = locked_server(&[]);
    let mut c = http_connect(s.http_addr());
    // The scheme is case-insensitive, as RFC 7235 says.
    for (i, &(method, target, body)) in ROUTES.iter().enumerate() {
        let bearer = if i % 2 == 0 { format!("Bearer {TOKEN}") } else { format!("bearer {TOKEN}") };
        let r = exchange(&mut c, &request(method, target, Some(&bearer), body));
        assert!(r.code == 200 || r.code == 404, "{method} {target}: {}", r.code);
        assert_eq!(r.header("www-authenticate"), None);
    }
    let r = exchange(&mut c, &request("GET", "/metrics", Some(&format!("Bearer {TOKEN}")), ""));
    let metrics = String::from_utf8_lossy(&r.body).into_owned();
    assert!(metrics.contains("\nbankcache_auth_failures_total 0\n"), "{metrics}");
    // A wrong token: 401 with the invalid_token challenge, the connection closes, the attempt counts.
    let r = exchange(&mut c, &request("GET", "/banks", Some("Bearer guess"), ""));
    assert_eq!(r.code, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"bankcache\", error=\"invalid_token\""));
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(r.body, b"Invalid token");
    expect_closed(&mut c);
    let mut c = http_connect(s.http_addr());
    let r = exchange(&mut c, &request("GET", "/metrics", Some(&format!("Bearer {TOKEN}")), ""));
    let metrics = String::from_utf8_lossy(&r.body).into_owned();
    assert!(metrics.contains("\nbankcache_auth_failures_total 1\n"), "{metrics}");
    assert!(!s.stderr().contains("guess"), "the log shows the token");
    assert!(s.stderr().contains("authentication failed on the HTTP port from 127.0.0.1:"), "{}", s.stderr());
}

#[test]
fn metrics_public_serves_metrics_alone_without_the_token() {
    let s = locked_server(&["--metrics-public", "true"]);
    let mut c = http_connect(s.http_addr());
    let r = exchange(&mut c, &request("GET", "/metrics", None, ""));
    assert_eq!(r.code, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("bankcache_auth_failures_total"));
    for target in ["/stats", "/banks", "/file-key", "/api/metrics"] {
        assert_eq!(exchange(&mut c, &request("GET", target, None, "")).code, 401, "{target}");
    }
}

#[test]
fn without_a_token_http_needs_no_header() {
    let s = TestServer::start(&[]);
    let mut c = http_connect(s.http_addr());
    assert_eq!(exchange(&mut c, &request("PUT", "/file-key", None, "bytes")).code, 200);
    assert_eq!(exchange(&mut c, &request("GET", "/metrics", None, "")).code, 200);
}
