//! Shared harness for the black-box integration tests of the JSON protocol.
//!
//! Every test starts its own server as a child process of the real binary
//! (`CARGO_BIN_EXE_bankcache`) on `127.0.0.1:0`, reads the one stdout line
//! `bankcache: json listening on 127.0.0.1:PORT` to learn the port, and talks
//! to it over plain TCP. Nothing in here knows the server's internals.
#![allow(dead_code)]

pub mod in_process;
pub mod nginx;

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use serde_json::{Map, Value};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bankcache");

/// The program actually started: `BIN`, unless `BANKCACHE_TEST_BIN` names
/// another executable (handy to run these tests against another build or a
/// reference implementation).
pub fn server_program() -> String {
    std::env::var("BANKCACHE_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}
/// How long a client waits for one reply line before the test fails: generous, because the tests run in
/// parallel on a 2-core machine (5 s was seen to run out under load); only a failing test waits it out.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server may take to print its listening line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
/// The documented prefix of the stdout line.
pub const LISTEN_PREFIX: &str = "bankcache: json listening on ";

// ---------------------------------------------------------------------------
// Exact reply strings (each includes the terminating `\n`).
// ---------------------------------------------------------------------------

/// `{"status": "ok", "data": {}}`
pub const OK_EMPTY: &str = "{\"status\": \"ok\", \"data\": {}}\n";
/// `{"status": "ok", "data": "pong"}`
pub const PONG: &str = "{\"status\": \"ok\", \"data\": \"pong\"}\n";
/// `{"status": "error", "message": "Invalid json"}`
pub const INVALID_JSON: &str = "{\"status\": \"error\", \"message\": \"Invalid json\"}\n";
/// The reply to a JSON value that is not an object, or an object without `op`.
pub const OP_REQUIRED: &str =
    "{\"status\": \"error\", \"message\": \"Operation required. Field op in json is required\"}\n";
/// The reply to an unknown or non-string `op`.
pub const INVALID_OP: &str = "{\"status\": \"error\", \"message\": \"Invalid operation\"}\n";

/// `{"status": "ok", "data": <data>}\n`, `data` given as raw JSON text.
pub fn ok(data: &str) -> String {
    format!("{{\"status\": \"ok\", \"data\": {data}}}\n")
}

/// `{"status": "error", "message": "<msg>"}\n`; `msg` must already be JSON-escaped.
pub fn err(msg: &str) -> String {
    format!("{{\"status\": \"error\", \"message\": \"{msg}\"}}\n")
}

/// `Key <key> doesn't exist` (key given as it appears inside the JSON string).
pub fn no_key(key: &str) -> String {
    err(&format!("Key {key} doesn't exist"))
}

// ---------------------------------------------------------------------------
// Request builders. Bank and key are given as Rust strings and sent as JSON
// strings; values, deltas and lifetimes are given as raw JSON text so a test
// controls their exact bytes.
// ---------------------------------------------------------------------------

/// JSON string literal for `s`.
pub fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

pub fn put(bank: &str, key: &str, value: &str) -> String {
    format!(r#"{{"op":"put","bank":{},"key":{},"value":{value}}}"#, q(bank), q(key))
}

pub fn put_ttl(bank: &str, key: &str, value: &str, lifetime: &str) -> String {
    format!(r#"{{"op":"put","bank":{},"key":{},"value":{value},"lifetime":{lifetime}}}"#, q(bank), q(key))
}

/// An op with just `bank` and `key` (`get`, `delete`, `touch`, `getouch`).
pub fn key_op(op: &str, bank: &str, key: &str) -> String {
    format!(r#"{{"op":"{op}","bank":{},"key":{}}}"#, q(bank), q(key))
}

pub fn get(bank: &str, key: &str) -> String {
    key_op("get", bank, key)
}

pub fn delete(bank: &str, key: &str) -> String {
    key_op("delete", bank, key)
}

pub fn touch(bank: &str, key: &str) -> String {
    key_op("touch", bank, key)
}

pub fn getouch(bank: &str, key: &str) -> String {
    key_op("getouch", bank, key)
}

pub fn incr(bank: &str, key: &str, delta: &str) -> String {
    format!(r#"{{"op":"incr","bank":{},"key":{},"value":{delta}}}"#, q(bank), q(key))
}

pub fn bank_keys(bank: &str) -> String {
    format!(r#"{{"op":"bank.keys","bank":{}}}"#, q(bank))
}

pub fn bank_reset(bank: &str) -> String {
    format!(r#"{{"op":"bank.reset","bank":{}}}"#, q(bank))
}

pub const BANK_LIST: &str = r#"{"op":"bank.list"}"#;
pub const PING: &str = r#"{"op":"ping"}"#;
pub const STATS: &str = r#"{"op":"stats"}"#;

/// The `data` of a `bank.keys` / `bank.list` reply for these names, as
/// Python's `json.dumps` writes it (`["a", "b"]`).
pub fn names(list: &[&str]) -> String {
    let items: Vec<String> = list.iter().map(|s| q(s)).collect();
    format!("[{}]", items.join(", "))
}

/// Python's `repr(float)` for an integral value below 1e16 (`6.0`).
pub fn pyfloat_int(n: i64) -> String {
    format!("{n}.0")
}

// ---------------------------------------------------------------------------
// Connections.
// ---------------------------------------------------------------------------

/// One client connection: a buffered reader for reply lines and a writer.
pub struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    /// Connects with a ~5 s read timeout and `TCP_NODELAY` (so separate
    /// writes really leave as separate segments).
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr)
            .unwrap_or_else(|e| panic!("cannot connect to the server at {addr}: {e}"));
        Conn::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        stream.set_nodelay(true).unwrap();
        let writer = stream.try_clone().unwrap();
        Conn { reader: BufReader::new(stream), writer }
    }

    /// Writes `s` exactly as given (no newline added).
    pub fn send(&mut self, s: &str) {
        self.send_bytes(s.as_bytes());
    }

    /// Writes raw bytes exactly as given.
    pub fn send_bytes(&mut self, b: &[u8]) {
        self.writer.write_all(b).unwrap_or_else(|e| panic!("write of {} bytes failed: {e}", b.len()));
    }

    /// Reads one reply line, including its `\n`. Fails the test on a
    /// timeout, on EOF before any byte, or on a non-UTF-8 reply. A partial
    /// line cut by EOF is returned as is (so the missing `\n` shows up in
    /// the assertion).
    #[track_caller]
    pub fn read_line(&mut self) -> String {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => panic!("server closed the connection while a reply line was expected"),
            Ok(_) => {
                String::from_utf8(buf).unwrap_or_else(|e| panic!("reply is not UTF-8: {:?}", e.as_bytes()))
            }
            Err(e) => panic!(
                "no complete reply line within {READ_TIMEOUT:?} ({e}); partial bytes: {:?}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }

    /// Reads exactly `n` bytes (a reply without its line end, say). Fails the test on a timeout or EOF.
    #[track_caller]
    pub fn read_exact(&mut self, n: usize) -> String {
        let mut buf = vec![0; n];
        self.reader
            .read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("no {n} reply bytes within {READ_TIMEOUT:?}: {e}"));
        String::from_utf8(buf).unwrap_or_else(|e| panic!("reply is not UTF-8: {:?}", e.as_bytes()))
    }

    /// Reads one line, or `None` on a clean EOF. I/O errors are returned.
    pub fn try_read_line(&mut self) -> io::Result<Option<String>> {
        let mut buf = Vec::new();
        let n = self.reader.read_until(b'\n', &mut buf)?;
        if n == 0 {
            Ok(None)
        } else {
            Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
        }
    }

    /// Sends `op` followed by `\n` and returns the reply line (lockstep).
    #[track_caller]
    pub fn request(&mut self, op: &str) -> String {
        self.send(op);
        self.send("\n");
        self.read_line()
    }

    /// Sends `op` (plus `\n`) and asserts the reply is exactly `expected`.
    #[track_caller]
    pub fn check(&mut self, op: &str, expected: &str) {
        let got = self.request(op);
        assert_eq!(got, expected, "unexpected reply to request {op}");
    }

    /// Reads the next reply line and asserts it is exactly `expected`.
    #[track_caller]
    pub fn expect_line(&mut self, expected: &str, what: &str) {
        let got = self.read_line();
        assert_eq!(got, expected, "unexpected reply ({what})");
    }

    /// Asserts the next bytes are the reply `expected` (a line, as the constants here are) *without* its
    /// `\n`: the reply to a request that had no line end after it.
    #[track_caller]
    pub fn expect_bare(&mut self, expected: &str, what: &str) {
        let want = expected.strip_suffix('\n').unwrap_or(expected);
        let mut got = vec![0; want.len()];
        if let Err(e) = self.reader.read_exact(&mut got) {
            panic!("no complete bare reply within {READ_TIMEOUT:?} ({e}) ({what})");
        }
        assert_eq!(String::from_utf8_lossy(&got), want, "unexpected reply ({what})");
    }

    /// Asserts the server closes the connection now: the next read is a
    /// clean EOF with no further bytes.
    #[track_caller]
    pub fn expect_eof(&mut self) {
        expect_eof(&mut self.reader);
    }

    /// Asserts the server closes the connection: EOF, or a reset (which
    /// can legitimately follow a close when the client was still sending).
    #[track_caller]
    pub fn expect_closed(&mut self) {
        expect_closed(&mut self.reader);
    }

    /// Half-closes the client's write side (the server sees EOF).
    pub fn shutdown_write(&self) {
        self.writer.shutdown(Shutdown::Write).unwrap();
    }

    /// A second handle on the socket, for writing from another thread.
    pub fn writer_clone(&self) -> TcpStream {
        self.writer.try_clone().unwrap()
    }

    /// Writes `bytes` from a background thread, so a test can read replies
    /// while a big pipelined write is still going (no buffer deadlock).
    pub fn send_in_background(&self, bytes: Vec<u8>) -> JoinHandle<io::Result<()>> {
        let mut w = self.writer_clone();
        thread::spawn(move || w.write_all(&bytes))
    }
}

/// Connects to `addr` (see [`Conn::connect`]).
pub fn connect(addr: SocketAddr) -> Conn {
    Conn::connect(addr)
}

/// Writes `s` exactly as given.
pub fn send(conn: &mut Conn, s: &str) {
    conn.send(s)
}

/// Reads one reply line including its `\n`.
#[track_caller]
pub fn read_line(conn: &mut Conn) -> String {
    conn.read_line()
}

/// Sends `op` plus `\n` and returns the reply line.
#[track_caller]
pub fn request(conn: &mut Conn, op: &str) -> String {
    conn.request(op)
}

/// Sends `stats` and returns its `data` object, checking the reply's shape.
#[track_caller]
pub fn stats(conn: &mut Conn) -> Map<String, Value> {
    let line = conn.request(STATS);
    assert!(
        line.starts_with("{\"status\": \"ok\", \"data\": {") && line.ends_with("}}\n"),
        "bad stats reply: {line:?}"
    );
    let v: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("stats reply is not JSON ({e}): {line:?}"));
    match v.get("data") {
        Some(Value::Object(m)) => m.clone(),
        _ => panic!("stats data is not an object: {line:?}"),
    }
}

/// One numeric counter out of a stats object.
#[track_caller]
pub fn stat(map: &Map<String, Value>, name: &str) -> f64 {
    match map.get(name) {
        Some(Value::Number(n)) => n.as_f64().unwrap(),
        other => panic!("stats field {name} missing or not a number: {other:?} in {map:?}"),
    }
}

/// Polls `f` every 25 ms until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Sleeps until `start + at`.
pub fn sleep_until(start: Instant, at: Duration) {
    let target = start + at;
    let now = Instant::now();
    if target > now {
        thread::sleep(target - now);
    }
}

// ---------------------------------------------------------------------------
// The server process.
// ---------------------------------------------------------------------------

/// A running server child process. Killed and reaped on drop; if the test is
/// panicking, the server's stderr is printed to help the diagnosis.
pub struct TestServer {
    child: Child,
    exited: Option<ExitStatus>,
    addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    listen_line: String,
    stdout_rx: mpsc::Receiver<String>,
    stderr_path: PathBuf,
    dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts the server on `127.0.0.1:0` with an empty config file (`{}`)
    /// and the extra flags in `args` (e.g. `&["--workers", "4"]`).
    pub fn start(args: &[&str]) -> TestServer {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        TestServer::start_with_config("{}", &all)
    }

    /// Starts the server with `config` as the contents of its config file
    /// and exactly the flags in `args` (no implicit `--listen`).
    pub fn start_with_config(config: &str, args: &[&str]) -> TestServer {
        TestServer::start_prepared(config, args, |_| {})
    }

    /// Like [`TestServer::start_with_config`], with `prepare` given the command before it is spawned (to
    /// set limits on the child with `pre_exec`, say).
    pub fn start_prepared(config: &str, args: &[&str], prepare: impl FnOnce(&mut Command)) -> TestServer {
        // The HTTP port defaults to 1234: give every test server its own free port instead.
        let mut args = args.to_vec();
        if !args.contains(&"--http-listen") {
            args.extend(["--http-listen", "127.0.0.1:0"]);
        }
        let args = args.as_slice();
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("config.json");
        fs::write(&config_path, config).unwrap();
        let stderr_path = dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).unwrap();
        let mut command = Command::new(server_program());
        command
            .args(args)
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        prepare(&mut command);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", server_program()));

        // Forward stdout lines through a channel so the first one can be
        // awaited with a timeout and the rest inspected later.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = String::new();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });

        let line = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                panic!(
                    "server exited ({status}) before printing its listening line; args {args:?}, \
                     config {config}; stderr:\n{}",
                    read_lossy(&stderr_path)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "server printed no listening line within {STARTUP_TIMEOUT:?}; stderr:\n{}",
                    read_lossy(&stderr_path)
                );
            }
        };
        let addr = parse_listen_line(&line).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "first stdout line is not `{LISTEN_PREFIX}IP:PORT\\n`: {line:?}; stderr:\n{}",
                read_lossy(&stderr_path)
            )
        });
        // The HTTP listening line follows, unless the HTTP port is off.
        let http_off = args.windows(2).any(|w| w == ["--http-listen", "none"]);
        let http_line = if http_off { None } else { rx.recv_timeout(STARTUP_TIMEOUT).ok() };
        let http_addr = http_line.as_deref().and_then(|l| l.strip_prefix("bankcache: http listening on "));
        let http_addr = http_addr.and_then(|a| a.trim_end().parse().ok());
        TestServer {
            child,
            exited: None,
            addr,
            http_addr,
            listen_line: line,
            stdout_rx: rx,
            stderr_path,
            dir,
        }
    }

    /// The HTTP port's address (tests start it on a free port unless they pass `--http-listen none`).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr.expect("the server has no HTTP port")
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The exact first stdout line, including its `\n`.
    pub fn listen_line(&self) -> &str {
        &self.listen_line
    }

    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -{sig} failed: {status}");
    }

    /// Waits for the process to exit; fails the test if it is still running
    /// after `limit`.
    #[track_caller]
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        if let Some(s) = self.exited {
            return s;
        }
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.exited = Some(s);
                return s;
            }
            if Instant::now() >= end {
                panic!(
                    "server still running {limit:?} after it was asked to stop; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything the server wrote to stdout after its listening line, once
    /// stdout is closed (call after the process exited).
    pub fn remaining_stdout(&self) -> String {
        let mut out = String::new();
        let end = Instant::now() + Duration::from_secs(5);
        while let Ok(line) = self.stdout_rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            out.push_str(&line);
        }
        out
    }

    /// The server's stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// The temp directory holding the config file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let log = self.stderr();
            let tail: String = if log.len() > 4000 {
                let mut i = log.len() - 4000;
                while !log.is_char_boundary(i) {
                    i += 1;
                }
                log[i..].to_string()
            } else {
                log
            };
            eprintln!("---- server stderr (tail) ----\n{tail}\n---- end of server stderr ----");
        }
    }
}

/// Parses `bankcache: json listening on IP:PORT\n` (exact form, port > 0).
pub fn parse_listen_line(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix(LISTEN_PREFIX)?.strip_suffix('\n')?;
    if rest.contains(char::is_whitespace) {
        return None;
    }
    let addr: SocketAddr = rest.parse().ok()?;
    if addr.port() == 0 {
        return None;
    }
    Some(addr)
}

fn read_lossy(path: &Path) -> String {
    fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// The result of running the binary to completion.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the binary with `args` (a config path, if wanted, must be among
/// them) and waits for it to exit; fails the test if it is still running
/// after `limit` (it is then killed).
#[track_caller]
pub fn run_to_exit(args: &[&str], limit: Duration) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout.log");
    let err_path = dir.path().join("stderr.log");
    let mut child = Command::new(server_program())
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::from(File::create(&out_path).unwrap()))
        .stderr(Stdio::from(File::create(&err_path).unwrap()))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_program()));
    let end = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`bankcache {}` was still running after {limit:?}; stdout: {:?}; stderr: {:?}",
                args.join(" "),
                read_lossy(&out_path),
                read_lossy(&err_path)
            );
        }
        thread::sleep(Duration::from_millis(10));
    };
    Finished { status, stdout: read_lossy(&out_path), stderr: read_lossy(&err_path) }
}

/// Asserts `reader` is at a clean EOF with no further bytes: the server closed the connection.
#[track_caller]
pub fn expect_eof(reader: &mut impl Read) {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => {}
        Ok(_) => panic!("expected EOF, got more bytes: {:?}", String::from_utf8_lossy(&rest)),
        Err(e) => panic!("expected EOF, got error {e} (after bytes {:?})", String::from_utf8_lossy(&rest)),
    }
}

/// Asserts the server closed the connection: EOF, or a reset (which can legitimately follow a close when the
/// client was still sending), with no further bytes.
#[track_caller]
pub fn expect_closed(reader: &mut impl Read) {
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(_) if rest.is_empty() => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset && rest.is_empty() => {}
        Ok(_) => panic!("expected a close, got more bytes: {:?}", String::from_utf8_lossy(&rest)),
        Err(e) => {
            panic!("expected a close, got error {e} (after bytes {:?})", String::from_utf8_lossy(&rest))
        }
    }
}
