//! The access log (`--access-log PATH`): one line per HTTP request, in the Common Log Format with the
//! microseconds the request took after it; JSON requests are not logged; a graceful stop writes every line
//! first; SIGHUP reopens the file (logrotate); without the flag there is no file and no writer thread; a
//! path that cannot be opened stops the start. Lines reach the file within a fraction of a second, so the
//! tests poll for them rather than time anything.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

/// How long a line may take to reach the file before a test fails (the writer looks every 200 ms).
const LINE_WAIT: Duration = Duration::from_secs(5);

/// A raw HTTP/1.1 connection that reads responses by their `Content-Length`.
struct Http {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Http {
    fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let writer = stream.try_clone().unwrap();
        Http { reader: BufReader::new(stream), writer }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads one response: its status code and body (none after a HEAD).
    fn read(&mut self, head_only: bool) -> (u16, Vec<u8>) {
        let mut length = 0;
        let mut status = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if status == 0 {
                status = line.split(' ').nth(1).unwrap().parse().unwrap();
            } else if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; if head_only { 0 } else { length }];
        self.reader.read_exact(&mut body).unwrap();
        (status, body)
    }

    /// Sends a request with `Content-Length` and reads its response.
    fn call(&mut self, method: &str, target: &str, body: &[u8]) -> (u16, Vec<u8>) {
        self.send(&request(method, target, body));
        self.read(method == "HEAD")
    }
}

fn request(method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
    out.push_str(std::str::from_utf8(body).unwrap());
    out.into_bytes()
}

/// A server with its access log at `dir/access.log`.
fn start_logging(dir: &Path, flags: &[&str]) -> (TestServer, PathBuf) {
    let path = dir.join("access.log");
    let mut args = vec!["--access-log", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    (TestServer::start(&args), path)
}

/// The file's lines once there are `n` of them (failing the test if that takes longer than [`LINE_WAIT`]).
#[track_caller]
fn wait_for_lines(path: &Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let arrived = eventually(LINE_WAIT, || {
        lines = std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_owned).collect();
        lines.len() >= n
    });
    assert!(
        arrived,
        "{} has {} lines, not {n}, after {LINE_WAIT:?}: {lines:#?}",
        path.display(),
        lines.len()
    );
    assert_eq!(lines.len(), n, "more lines than requests: {lines:#?}");
    lines
}

/// One line of the log, taken apart.
#[derive(Debug, PartialEq)]
struct Line {
    peer: String,
    time: String,
    request: String,
    status: u16,
    bytes: usize,
    micros: u64,
}

#[track_caller]
fn parse(line: &str) -> Line {
    let (peer, rest) = line.split_once(" - - [").unwrap_or_else(|| panic!("no ` - - [` in {line:?}"));
    let (time, rest) = rest.split_once("] \"").unwrap_or_else(|| panic!("no time in {line:?}"));
    let (request, rest) = rest.rsplit_once("\" ").unwrap_or_else(|| panic!("no request in {line:?}"));
    let numbers: Vec<&str> = rest.split(' ').collect();
    let [status, bytes, micros] = numbers[..] else { panic!("not STATUS BYTES MICROS in {line:?}") };
    Line {
        peer: peer.into(),
        time: time.into(),
        request: request.into(),
        status: status.parse().unwrap(),
        bytes: bytes.parse().unwrap(),
        micros: micros.parse().unwrap(),
    }
}

/// The Common Log Format's time of Unix second `secs`: `06/Nov/1994:08:49:37 +0000`.
fn clf(secs: u64) -> String {
    let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    format!("{}/{}/{}:{} +0000", &imf[5..7], &imf[8..11], &imf[12..16], &imf[17..25])
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// PUT, GET, HEAD, a 404, a 400, DELETE, a target with a query and percent-encoding, and two pipelined
/// requests: one line each, in order, with the peer, the time, the request line as sent, the status and
/// the body bytes exactly; JSON requests add no line; nothing is dropped.
#[test]
fn every_http_request_gets_one_line_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (s, path) = start_logging(dir.path(), &[]);
    let started = unix_now();
    let mut c = s.connect();
    c.check(PING, PONG);
    let mut h = Http::connect(s.http_addr());
    let missing = b"Key nope doesn't exist\n".len();
    let not_a_number = b"Bad Request: lifetime must be a number of seconds (?lifetime=)\n".len();
    let calls: [(&str, &str, &[u8], u16, usize); 7] = [
        ("PUT", "/foo", b"hello world", 200, 2),
        ("GET", "/foo", b"", 200, 11),
        ("HEAD", "/foo", b"", 200, 0),
        ("GET", "/nope", b"", 404, missing),
        ("PUT", "/foo?lifetime=soon", b"x", 400, not_a_number),
        ("GET", "/a%20b?x=1&y", b"", 404, b"Key a b doesn't exist\n".len()),
        ("DELETE", "/foo", b"", 200, 2),
    ];
    for (method, target, body, status, _) in calls {
        assert_eq!(h.call(method, target, body).0, status, "{method} {target}");
    }
    // Two requests in one write: one job, two lines, in order.
    let mut both = request("PUT", "/p", b"1");
    both.extend(request("GET", "/p", b""));
    h.send(&both);
    assert_eq!(h.read(false), (200, b"ok".to_vec()));
    assert_eq!(h.read(false), (200, b"1".to_vec()));
    c.check(PING, PONG);

    let lines = wait_for_lines(&path, calls.len() + 2);
    let ended = unix_now();
    let times: Vec<String> = (started..=ended).map(clf).collect();
    let mut want: Vec<(String, u16, usize)> =
        calls.iter().map(|(m, t, _, status, bytes)| (format!("{m} {t} HTTP/1.1"), *status, *bytes)).collect();
    want.push(("PUT /p HTTP/1.1".into(), 200, 2));
    want.push(("GET /p HTTP/1.1".into(), 200, 1));
    for (line, (request, status, bytes)) in lines.iter().zip(want) {
        let got = parse(line);
        assert_eq!(
            (got.peer.as_str(), got.request.as_str(), got.status, got.bytes),
            ("127.0.0.1", request.as_str(), status, bytes),
            "{line}"
        );
        assert!(times.contains(&got.time), "{line}: the time is not between {} and {}", times[0], clf(ended));
        assert!(got.micros < 60_000_000, "{line}");
    }
    assert_eq!(stat(&stats(&mut c), "access_log_dropped"), 0.0);
    let (status, metrics) = h.call("GET", "/metrics", b"");
    assert_eq!(status, 200);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("\nbankcache_access_log_dropped_total 0\n"), "{metrics}");
    assert!(
        s.stderr().contains(&format!(
            "access log {}: one line per HTTP request",
            path.canonicalize().unwrap().display()
        )),
        "the start-up summary names the log: {}",
        s.stderr()
    );
}

/// A graceful stop writes every line first: a request answered right before SIGTERM is in the file once
/// the process has exited.
#[test]
fn a_graceful_stop_writes_every_line() {
    let dir = tempfile::tempdir().unwrap();
    let (mut s, path) = start_logging(dir.path(), &[]);
    let mut h = Http::connect(s.http_addr());
    for i in 0..20 {
        assert_eq!(h.call("PUT", &format!("/k{i}"), b"v").0, 200);
    }
    s.signal("TERM");
    assert!(s.wait_exit(Duration::from_secs(10)).success());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 20, "{text}");
    assert!(text.lines().last().unwrap().contains("\"PUT /k19 HTTP/1.1\" 200 2 "), "{text}");
}

/// logrotate's way: rename the file, send SIGHUP; the server opens the path again and writes there, the
/// old file keeps what was written before, and the server goes on serving.
#[test]
fn sighup_reopens_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (s, path) = start_logging(dir.path(), &[]);
    let mut h = Http::connect(s.http_addr());
    assert_eq!(h.call("GET", "/before", b"").0, 404);
    wait_for_lines(&path, 1);
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    s.signal("HUP");
    assert!(eventually(LINE_WAIT, || path.exists()), "SIGHUP did not open {} again", path.display());
    assert_eq!(h.call("GET", "/after", b"").0, 404);
    let lines = wait_for_lines(&path, 1);
    assert!(lines[0].contains("\"GET /after HTTP/1.1\" 404 "), "{lines:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
    assert!(old.contains("\"GET /before HTTP/1.1\" 404 "), "{old}");
    s.connect().check(PING, PONG);
}

/// Without `--access-log` there is no log: no writer thread, no line in the summary, no file; with it,
/// there is one thread named `access-log`.
#[test]
fn without_the_flag_there_is_no_log_and_no_thread() {
    let threads = |pid: u32| -> Vec<String> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        tasks
            .map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).unwrap().trim().to_owned())
            .collect()
    };
    let s = TestServer::start(&[]);
    let mut h = Http::connect(s.http_addr());
    assert_eq!(h.call("PUT", "/k", b"v").0, 200);
    assert_eq!(h.call("GET", "/k", b"").0, 200);
    assert!(!threads(s.pid()).iter().any(|t| t == "access-log"), "{:?}", threads(s.pid()));
    assert!(!s.stderr().contains("access log"), "{}", s.stderr());
    let files: Vec<_> = std::fs::read_dir(s.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files.len(), 2, "only the config and stderr files: {files:?}");

    let dir = tempfile::tempdir().unwrap();
    let (s, _) = start_logging(dir.path(), &[]);
    let mut h = Http::connect(s.http_addr());
    assert_eq!(h.call("PUT", "/k", b"v").0, 200);
    // A thread names itself once it runs: look until it has.
    let one = eventually(LINE_WAIT, || threads(s.pid()).iter().filter(|t| *t == "access-log").count() == 1);
    assert!(one, "{:?}", threads(s.pid()));
}

/// A path that cannot be opened stops the start, saying which and why.
#[test]
fn an_unopenable_path_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("access.log");
    let args =
        ["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--access-log", path.to_str().unwrap()];
    let done = run_to_exit(&args, Duration::from_secs(20));
    assert!(!done.status.success(), "{}", done.stderr);
    assert!(
        done.stderr.contains(&format!("cannot open the access log {}", path.display())),
        "{}",
        done.stderr
    );
}
