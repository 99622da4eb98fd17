//! The reactor's own duties: slot reuse, back-pressure in both directions, many connections, the slow log.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

/// A connection that dies with replies still owed must not hand them to the next connection that
/// reuses its slot: each job carries the slot's generation, and a stale reply is dropped.
#[test]
fn replies_never_reach_a_connection_that_reused_the_slot() {
    // Every request through the workers, so that a job is in flight when the connection dies.
    let server = TestServer::start(&["--workers", "2", "--inline-ops", "0"]);
    let mut setup = server.connect();
    // A bank big enough that listing it keeps a worker busy for a while.
    let mut fill = String::new();
    for i in 0..20_000 {
        fill.push_str(&format!("{}\n", put("big", &format!("key{i}"), "1")));
    }
    let writer = setup.send_in_background(fill.into_bytes());
    for _ in 0..20_000 {
        setup.read_line();
    }
    writer.join().unwrap().unwrap();
    for round in 0..10 {
        let doomed = server.connect();
        doomed.writer_clone().write_all(bank_keys("big").repeat(20).as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        // Reset rather than close: the server drops the connection while its job is still running and
        // frees the slot at once, for the next connection to take.
        socket2::SockRef::from(&doomed.writer_clone()).set_linger(Some(Duration::ZERO)).unwrap();
        drop(doomed);
        let mut fresh = server.connect();
        fresh.send("{\"op\":\"ping\"}\n");
        fresh.expect_line(PONG, &format!("round {round}: the first reply on a new connection"));
    }
}

/// A client that pipelines more replies than the server will buffer (4 MiB) and reads them only later
/// gets every reply, in order: the server stops reading while that much output waits, and resumes once
/// the client has drained it (no readiness event reports the input that waited meanwhile).
#[test]
fn output_back_pressure_pauses_and_resumes_reading() {
    let server = TestServer::start(&["--workers", "2"]);
    let mut c = server.connect();
    let value = format!("\"{}\"", "v".repeat(50_000));
    c.check(&put("b", "big", &value), OK_EMPTY);
    c.check(&put("b", "small", "1"), OK_EMPTY);
    let burst = |from: usize| -> String {
        (from..from + 300)
            .map(|i| format!("{}\n", get("b", if i % 3 == 0 { "small" } else { "big" })))
            .collect()
    };
    // The first burst's replies (10 MB) pile up unread; the second burst arrives while they wait.
    let first = c.send_in_background(burst(0).into_bytes());
    std::thread::sleep(Duration::from_millis(300));
    let second = c.send_in_background(burst(300).into_bytes());
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..600 {
        let want = if i % 3 == 0 { ok("1") } else { ok(&value) };
        let got = c.read_line();
        assert!(got == want, "reply {i} is wrong ({} bytes)", got.len());
    }
    first.join().unwrap().unwrap();
    second.join().unwrap().unwrap();
    c.check("{\"op\":\"ping\"}\n", PONG);
}

/// More complete requests than the server will hold at once (1 MiB) in one burst: it pauses reading
/// and catches up, answering every one.
#[test]
fn input_back_pressure_pauses_and_resumes_reading() {
    let server = TestServer::start(&["--workers", "1"]);
    let mut c = server.connect();
    let n = 120_000;
    let burst = "{\"op\":\"ping\"}\n".repeat(n);
    let writer = c.send_in_background(burst.into_bytes());
    for i in 0..n {
        let got = c.read_line();
        assert!(got == PONG, "reply {i}: {got:?}");
    }
    writer.join().unwrap().unwrap();
    let st = stats(&mut c);
    assert_eq!(stat(&st, "ops_ping"), n as f64);
}

/// Hundreds of connections at once, each interleaving its own keys, all answered correctly.
#[test]
fn many_connections_at_once() {
    let server = TestServer::start(&["--workers", "3"]);
    let mut conns: Vec<Conn> = (0..300).map(|_| server.connect()).collect();
    for round in 0..5 {
        for (i, c) in conns.iter_mut().enumerate() {
            c.send(&format!("{}\n", put("many", &format!("k{i}"), &format!("{}", i * 10 + round))));
        }
        for c in conns.iter_mut() {
            c.expect_line(OK_EMPTY, "put");
        }
    }
    for (i, c) in conns.iter_mut().enumerate() {
        c.check(&get("many", &format!("k{i}")), &ok(&format!("{}", i * 10 + 4)));
    }
    let st = stats(&mut conns[0]);
    assert_eq!(stat(&st, "connections_current"), 300.0);
    drop(conns);
    let mut c = server.connect();
    assert!(eventually(Duration::from_secs(5), || stat(&stats(&mut c), "connections_current") == 1.0));
}

/// An op slower than `slow_log_ms` is logged at warn with the request that caused it.
#[test]
fn slow_ops_are_logged() {
    let server = TestServer::start(&["--slow-log-ms", "1", "--log-level", "warn"]);
    let mut c = server.connect();
    let mut burst = String::new();
    for i in 0..100_000 {
        burst.push_str(&format!("{}\n", put("slow", &format!("key{i}"), "1")));
    }
    let writer = c.send_in_background(burst.into_bytes());
    for _ in 0..100_000 {
        c.read_line();
    }
    writer.join().unwrap().unwrap();
    // Listing 100k keys (collect, sort, escape) takes well over a millisecond.
    let started = Instant::now();
    let keys = c.request(&bank_keys("slow"));
    assert!(keys.starts_with("{\"status\": \"ok\", \"data\": [\"key0\", \"key1\""));
    assert!(eventually(Duration::from_secs(20), || server.stderr().contains("slow op")), "{:?}", started);
    assert!(server.stderr().contains("bank.keys"), "the log names the op: {}", server.stderr());
}

/// A line end that arrives after its request was answered bare is owed a `\n`, not a request: the
/// reactor does not count it as one it ran (it did, once for each, when clients wrote a request and its
/// line end in two writes).
#[test]
fn a_late_line_end_is_not_counted_as_a_request() {
    let server = TestServer::start(&[]);
    let mut c = server.connect();
    for i in 0..5 {
        c.send(&put("late", &format!("k{i}"), "1"));
        // The bare reply proves the request ran before its line end arrived.
        assert_eq!(c.read_exact(OK_EMPTY.len() - 1), OK_EMPTY.trim_end());
        c.send("\n");
        assert_eq!(c.read_exact(1), "\n");
    }
    assert_eq!(stat(&stats(&mut c), "requests_inline"), 5.0);
}

/// A server runs a small turn's requests on the reactor thread; bank-wide ops, HTTP, everything with
/// `--inline-ops 0`, and with a disk store every op that writes the log or reads the disk go to the
/// workers. Every path answers byte for byte alike.
#[test]
fn small_turns_run_inline_and_answer_like_the_workers() {
    let script = [
        put("b", "k", "\"v\""),
        get("b", "k"),
        incr("b", "n", "1"),
        touch("b", "k"),
        get("b", "missing"),
        "{\"op\":\"nope\"}".to_string(),
        "{\"op\":}".to_string(),
        bank_keys("b"),
        delete("b", "k"),
    ];
    let answers = |args: &[&str]| -> (Vec<String>, f64) {
        let server = TestServer::start(args);
        let mut c = server.connect();
        // One request per turn: each is a small turn of its own.
        let replies = script.iter().map(|line| c.request(line)).collect();
        (replies, stat(&stats(&mut c), "requests_inline"))
    };
    let (inline, ran_inline) = answers(&[]);
    let (handed_off, ran_inline_off) = answers(&["--inline-ops", "0"]);
    assert_eq!(inline, handed_off);
    // Everything but bank.keys (bank-wide) and the stats request itself.
    assert_eq!(ran_inline, (script.len() - 1) as f64);
    assert_eq!(ran_inline_off, 0.0);
    let dir = tempfile::tempdir().unwrap();
    let (on_disk, ran_inline_disk) = answers(&["--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(on_disk, inline);
    // With a disk store: the two gets (`k` is in RAM, the other a miss) and the two malformed requests;
    // the put, incr, touch and delete log a record, and bank.keys is bank-wide.
    assert_eq!(ran_inline_disk, 4.0);
}
