//! Black-box tests of a graceful stop (SIGTERM, SIGINT) under load.
//!
//! The promise: a stop stops reading new requests, answers every request that was read, writes each
//! connection's replies whole (never part of a line), fsyncs, and exits 0. So after a stop in the middle
//! of a pipelined stream of puts, and a restart on the same data directory, the keys present are exactly
//! the keys whose puts were answered: an answered put that is missing was acknowledged and lost, and a
//! present key whose put was not answered was executed behind the client's back (a client that retries
//! unanswered writes would then run them twice).

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The bank every put of these tests goes to.
const BANK: &str = "stop";
/// Most puts a client sends; the stop comes long before.
const MAX_PUTS: usize = 2_000_000;
/// Puts per write: big enough that the client is always far ahead of the server.
const PUTS_PER_WRITE: usize = 1000;
/// How long a test waits for anything (replies, the end of a stream, the server's exit); never reached by
/// a server that behaves.
const BOUND: Duration = Duration::from_secs(60);

/// Room for more than `MAX_PUTS` records without reusing a volume (a reuse would drop answered puts).
const STORE: &[&str] = &["--volume-size", "67108864", "--volume-count", "4", "--workers", "2"];

/// The store, and a stop given all the time it needs: a client that reads is done long before, and a
/// slow test machine must not make it look as if the server had cut it off.
fn patient() -> Vec<&'static str> {
    [STORE, &["--shutdown-timeout", "120"]].concat()
}

fn key(i: usize) -> String {
    format!("k{i}")
}

/// The put of key `i`; its value is `i`.
fn put_line(i: usize) -> String {
    let mut line = put(BANK, &key(i), &i.to_string());
    line.push('\n');
    line
}

/// A data directory that outlives the servers started on it.
struct DataDir(tempfile::TempDir);

impl DataDir {
    fn new() -> DataDir {
        DataDir(tempfile::tempdir().unwrap())
    }

    fn start(&self, flags: &[&str]) -> TestServer {
        let dir = self.0.path().to_str().unwrap().to_string();
        let mut args = vec!["--data-dir", dir.as_str()];
        args.extend_from_slice(flags);
        TestServer::start(&args)
    }
}

/// How a reply stream ended, as the client saw it.
#[derive(Debug)]
struct Stream {
    /// Complete reply lines, each checked to be the put's `ok`.
    answered: usize,
    /// Bytes after the last newline: a reply cut in the middle.
    partial: Vec<u8>,
    /// `None` for a clean end of stream, else the error that ended it.
    error: Option<ErrorKind>,
    /// A line that was not the put's `ok`, if any.
    bad: Option<String>,
}

/// How the client reads its replies once it has sent the stop.
#[derive(Debug, Clone, Copy)]
struct Pace {
    /// The client socket's receive buffer, set before connecting: small, it keeps the kernel from growing
    /// it to megabytes on loopback, so that replies the client has not read wait on the server's side,
    /// as they do across a real network.
    receive_buffer: usize,
    /// How long the client reads nothing once the stop is sent (a client busy elsewhere), so that the
    /// server has finished running what it had read, and written the replies, before the client takes
    /// them.
    stall: Duration,
}

/// Reads replies until the end of the stream (or an error), counting complete `ok` lines in `answered`
/// as they come, and keeping what follows the last newline. Once `stall_at` replies are read, reads
/// nothing for `stall`.
fn read_replies(
    mut socket: TcpStream,
    answered: Arc<AtomicUsize>,
    stall_at: usize,
    stall: Duration,
) -> Stream {
    socket.set_read_timeout(Some(BOUND)).unwrap();
    let mut stream = Stream { answered: 0, partial: Vec::new(), error: None, bad: None };
    let mut buf = vec![0; 256 * 1024];
    let mut stalled = false;
    loop {
        if !stalled && stream.answered >= stall_at {
            stalled = true;
            thread::sleep(stall);
        }
        let n = match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                stream.error = Some(e.kind());
                break;
            }
        };
        stream.partial.extend_from_slice(&buf[..n]);
        let whole = stream.partial.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        for line in stream.partial[..whole].split_inclusive(|&b| b == b'\n') {
            if line != OK_EMPTY.as_bytes() && stream.bad.is_none() {
                stream.bad = Some(String::from_utf8_lossy(line).into_owned());
            }
            stream.answered += 1;
        }
        stream.partial.drain(..whole);
        answered.store(stream.answered, Ordering::Release);
    }
    stream
}

/// Pipelines puts of keys 0, 1, 2, ... until a write fails (the server stopped and the reader shut the
/// socket) or `MAX_PUTS`; returns how many puts were handed to the socket, the last write's perhaps in
/// part.
fn write_puts(mut socket: TcpStream, sent: Arc<AtomicUsize>) -> usize {
    socket.set_write_timeout(Some(BOUND)).unwrap();
    let mut next = 0;
    while next < MAX_PUTS {
        let chunk: String = (next..next + PUTS_PER_WRITE).map(put_line).collect();
        if socket.write_all(chunk.as_bytes()).is_err() {
            return next + PUTS_PER_WRITE;
        }
        next += PUTS_PER_WRITE;
        sent.store(next, Ordering::Release);
    }
    next
}

/// Gets keys `from..upto` pipelined and returns, for each, whether it holds its value (any other reply
/// but a miss fails the test).
fn present_keys(c: &Conn, from: usize, upto: usize) -> Vec<bool> {
    let mut writer = c.writer_clone();
    let sender = thread::spawn(move || {
        for start in (from..upto).step_by(PUTS_PER_WRITE) {
            let chunk: String = (start..upto.min(start + PUTS_PER_WRITE))
                .map(|i| format!("{}\n", get(BANK, &key(i))))
                .collect();
            writer.write_all(chunk.as_bytes()).unwrap();
        }
    });
    let mut reader = std::io::BufReader::new(c.writer_clone());
    let mut present = Vec::with_capacity(upto - from);
    for i in from..upto {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
        if line == ok(&i.to_string()) {
            present.push(true);
        } else if line == no_key(&key(i)) {
            present.push(false);
        } else {
            panic!("get of {} answered {line:?}", key(i));
        }
    }
    sender.join().unwrap();
    present
}

/// One client pipelines puts of distinct keys from one thread while another reads the replies; the server
/// is sent `signal` once `stop_after` puts are answered, and the reader goes on at `pace`;
/// then the server must exit 0, the reply stream must end cleanly after a whole line, and after a restart
/// the keys present must be exactly the answered ones.
fn stop_mid_stream(signal: &str, stop_after: usize, pace: Pace) {
    let data = DataDir::new();
    let mut s = data.start(&patient());
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    if pace.receive_buffer > 0 {
        socket.set_recv_buffer_size(pace.receive_buffer).unwrap();
    }
    socket.connect(&s.addr().into()).unwrap();
    let socket = TcpStream::from(socket);
    socket.set_nodelay(true).unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (socket, answered) = (socket.try_clone().unwrap(), Arc::clone(&answered));
        thread::spawn(move || read_replies(socket, answered, stop_after, pace.stall))
    };
    let writer = {
        let (socket, sent) = (socket.try_clone().unwrap(), Arc::clone(&sent));
        thread::spawn(move || write_puts(socket, sent))
    };
    let started = Instant::now();
    while answered.load(Ordering::Acquire) < stop_after {
        assert!(started.elapsed() < BOUND, "only {} puts answered", answered.load(Ordering::Acquire));
        assert!(!reader.is_finished(), "the reply stream ended before the stop");
        thread::sleep(Duration::from_millis(5));
    }
    let at_stop = (answered.load(Ordering::Acquire), sent.load(Ordering::Acquire));
    s.signal(signal);
    let stream = reader.join().unwrap();
    // The client is done reading: close, which also ends the writer's last write.
    let _ = socket.shutdown(Shutdown::Both);
    let sent = writer.join().unwrap();
    let status = s.wait_exit(BOUND);
    eprintln!(
        "at the stop: {} answered, {} sent; at the end: {} answered, {sent} sent; stream ended by {:?} \
         with {} bytes of a cut line",
        at_stop.0,
        at_stop.1,
        stream.answered,
        stream.error,
        stream.partial.len()
    );
    let mut failures = Vec::new();
    if !status.success() {
        failures.push(format!("the server exited with {status}"));
    }
    if let Some(bad) = &stream.bad {
        failures.push(format!("a reply was not the put's ok: {bad:?}"));
    }
    if let Some(error) = stream.error {
        failures.push(format!("the reply stream ended with an error ({error:?}), not an end of stream"));
    }
    if !stream.partial.is_empty() {
        failures.push(format!(
            "the reply stream ended in the middle of a line: {:?}",
            String::from_utf8_lossy(&stream.partial)
        ));
    }
    let log = s.stderr();
    drop(s);

    let s = data.start(STORE);
    let mut c = s.connect();
    let reuses = stat(&stats(&mut c), "volume_reuses");
    assert_eq!(reuses, 0.0, "a volume was reused: the test's volumes are too small");
    // Every answered put is there, and there is nothing else: the count of keys proves it without
    // getting each key the client sent (the server read and dropped many during the stop).
    let present = present_keys(&c, 0, stream.answered);
    let lost: Vec<usize> = (0..stream.answered).filter(|&i| !present[i]).collect();
    let keys = stat(&stats(&mut c), "keys") as usize;
    let expected = stream.answered - lost.len();
    if keys != expected {
        failures.push(format!("{keys} keys after the restart, {expected} expected"));
    }
    if !lost.is_empty() {
        failures.push(format!(
            "{} answered puts are missing after the restart (first: {})",
            lost.len(),
            key(lost[0])
        ));
    }
    if keys > expected {
        // Which: the puts run after the last one answered.
        let beyond = stream.answered..sent.min(stream.answered + (keys - expected) * 2 + 10_000);
        let present = present_keys(&c, beyond.start, beyond.end);
        let unanswered: Vec<usize> = beyond.clone().filter(|&i| present[i - beyond.start]).collect();
        if let (Some(first), Some(last)) = (unanswered.first(), unanswered.last()) {
            failures.push(format!(
                "{} puts were executed but never answered (keys {}..={})",
                unanswered.len(),
                key(*first),
                key(*last)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "after SIG{signal} mid-stream:\n- {}\nstopped server's log:\n{log}",
        failures.join("\n- ")
    );
}

/// SIGTERM while one client pipelines puts and then reads nothing for a while: the server has run
/// what it had read and written the replies by the time the client reads them.
#[test]
fn sigterm_mid_stream_answers_every_executed_put_and_keeps_every_answered_one() {
    let stall = Duration::from_millis(500);
    stop_mid_stream("TERM", 20_000, Pace { receive_buffer: 32 * 1024, stall });
}

/// SIGINT is the same stop; here the client reads all along, with the buffers the kernel picks.
#[test]
fn sigint_mid_stream_answers_every_executed_put_and_keeps_every_answered_one() {
    stop_mid_stream("INT", 20_000, Pace { receive_buffer: 0, stall: Duration::ZERO });
}

/// A client that pipelines puts and reads nothing cannot hold the stop past `shutdown_timeout`: the
/// server exits 0 in time and says so, and what the client did get is replies of puts that are there
/// after a restart.
#[test]
fn a_client_that_never_reads_cannot_hold_the_stop() {
    let data = DataDir::new();
    let flags = [STORE, &["--shutdown-timeout", "1"]].concat();
    let mut s = data.start(&flags);
    // A small receive buffer, so that replies wait unacknowledged on the server's side.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(32 * 1024).unwrap();
    socket.connect(&s.addr().into()).unwrap();
    let socket = TcpStream::from(socket);
    let writer = {
        let (socket, sent) = (socket.try_clone().unwrap(), Arc::new(AtomicUsize::new(0)));
        thread::spawn(move || write_puts(socket, sent))
    };
    // Puts are being run, and their replies fill the client's receive buffer, which it never reads.
    let mut c = s.connect();
    assert!(eventually(BOUND, || stat(&stats(&mut c), "keys") >= 20_000.0), "the puts are not being run");
    drop(c);
    let signalled = Instant::now();
    s.signal("TERM");
    let status = s.wait_exit(BOUND);
    let took = signalled.elapsed();
    assert!(status.success(), "exited with {status}; stderr:\n{}", s.stderr());
    assert!(took < Duration::from_secs(30), "the stop took {took:?}");
    let log = s.stderr();
    assert!(log.contains("shutdown grace period over"), "the end of the grace is not logged:\n{log}");
    drop(s);
    let _ = socket.shutdown(Shutdown::Write);
    writer.join().unwrap();
    let stream = read_replies(socket, Arc::new(AtomicUsize::new(0)), usize::MAX, Duration::ZERO);
    assert_eq!(stream.bad, None, "a reply was not the put's ok");

    let s = data.start(STORE);
    let c = s.connect();
    let present = present_keys(&c, 0, stream.answered);
    let lost = present.iter().filter(|&&p| !p).count();
    assert_eq!(lost, 0, "{lost} of the {} answered puts are missing after the restart", stream.answered);
}
