//! Bounds that hold whatever clients send: `memory_max_bytes` bounds the whole process (keys, values,
//! entries, indexes, banks), a client that does not read its replies cannot grow the server, and a reply
//! that would be too long is refused. The real server binary (with its allocator) runs as a child, and its
//! resident memory is read from /proc.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{eventually, stat, stats, TestServer};

/// What the process may hold beyond `memory_max_bytes`: its code and threads, the allocator's own
/// metadata, connection buffers and pages not yet given back (the README's "fixed overhead").
const OVERHEAD: u64 = 24 << 20;

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kb * 1024
}

/// Sends `requests` in batches of `batch`, reading every reply; returns the error replies seen.
fn pipeline(stream: &mut TcpStream, requests: impl Iterator<Item = String>, batch: usize) -> Vec<String> {
    let mut errors = Vec::new();
    let mut requests = requests.peekable();
    let mut buf = Vec::new();
    let mut reply = vec![0u8; 1 << 16];
    while requests.peek().is_some() {
        buf.clear();
        let mut sent = 0;
        for r in requests.by_ref().take(batch) {
            buf.extend_from_slice(r.as_bytes());
            buf.push(b'\n');
            sent += 1;
        }
        stream.write_all(&buf).expect("write requests");
        let mut lines = 0;
        let mut tail = Vec::new();
        while lines < sent {
            let n = stream.read(&mut reply).expect("read replies");
            assert!(n > 0, "the server closed the connection");
            tail.extend_from_slice(&reply[..n]);
            while let Some(at) = tail.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = tail.drain(..=at).collect();
                if line.starts_with(b"{\"status\": \"error\"") {
                    errors.push(String::from_utf8_lossy(&line).into_owned());
                }
                lines += 1;
            }
        }
    }
    errors
}

fn server(memory_max: u64, extra: &[&str]) -> (TestServer, TcpStream) {
    let limit = memory_max.to_string();
    let mut args = vec!["--http-listen", "none", "--memory-max-bytes", &limit];
    // Memory-only unless `extra` names a data directory.
    if !extra.contains(&"--data-dir") {
        args.extend(["--data-dir", "none"]);
    }
    args.extend_from_slice(extra);
    let server = TestServer::start(&args);
    let stream = TcpStream::connect(server.addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    (server, stream)
}

/// 400,000 small keys into a 16 MB memory-only server: before, only value bytes were counted, and this
/// took the process past 100 MB with no eviction. Now keys, entries and indexes count: old keys are
/// evicted and the process stays within the limit plus the fixed overhead.
#[test]
fn a_flood_of_small_keys_stays_within_the_memory_limit() {
    let limit = 16u64 << 20;
    let (server, mut stream) = server(limit, &[]);
    let puts =
        (0..400_000).map(|i| format!(r#"{{"op":"put","bank":"b{}","key":"key:{i:09}","value":8}}"#, i % 7));
    let errors = pipeline(&mut stream, puts, 2000);
    assert!(errors.is_empty(), "puts refused: {:?}", &errors[..errors.len().min(3)]);
    let mut c = common::Conn::from_stream(stream);
    let st = stats(&mut c);
    assert!(stat(&st, "memory_used") <= limit as f64, "{st:?}");
    assert!(stat(&st, "evictions") > 50_000.0, "{st:?}");
    assert!(stat(&st, "memory_index") > 0.0 && stat(&st, "memory_banks") > 0.0, "{st:?}");
    let rss = rss(server.pid());
    assert!(rss <= limit + OVERHEAD, "RSS {} MB over a {} MB limit", rss >> 20, limit >> 20);
}

/// Large values, pipelined: the values in RAM, the requests being read and the buffers let go must all fit.
#[test]
fn a_flood_of_large_values_stays_within_the_memory_limit() {
    let limit = 32u64 << 20;
    let (server, mut stream) = server(limit, &[]);
    let value = format!("\"{}\"", "v".repeat(512 * 1024));
    let puts = (0..200).map(|i| format!(r#"{{"op":"put","bank":"b","key":"k{i}","value":{value}}}"#));
    let errors = pipeline(&mut stream, puts, 20);
    assert!(errors.is_empty(), "puts refused: {:?}", &errors[..errors.len().min(1)]);
    let rss = rss(server.pid());
    assert!(rss <= limit + OVERHEAD, "RSS {} MB over a {} MB limit", rss >> 20, limit >> 20);
    let mut c = common::Conn::from_stream(stream);
    let st = stats(&mut c);
    assert!(stat(&st, "memory_used") <= limit as f64 && stat(&st, "keys") >= 40.0, "{st:?}");
}

/// With a disk store, the JSON port's puts keep their values in RAM too (the log is their durable copy):
/// a flood of them far past the limit still leaves the process within it, by dropping RAM copies, and the
/// values whose copies went are read back from disk.
#[test]
fn a_disk_store_keeping_puts_in_ram_stays_within_the_memory_limit() {
    let limit = 16u64 << 20;
    let dir = tempfile::tempdir().expect("a temp dir");
    let data = dir.path().to_str().expect("a UTF-8 path").to_string();
    let (server, mut stream) = server(limit, &["--data-dir", &data, "--volume-size", "67108864"]);
    let value = |i: u32| format!("\"{i:06}{}\"", "v".repeat(4000));
    let puts = (0..12_000).map(|i| format!(r#"{{"op":"put","bank":"b","key":"k{i}","value":{}}}"#, value(i)));
    let errors = pipeline(&mut stream, puts, 50);
    assert!(errors.is_empty(), "puts refused: {:?}", &errors[..errors.len().min(1)]);
    let rss = rss(server.pid());
    assert!(rss <= limit + OVERHEAD, "RSS {} MB over a {} MB limit", rss >> 20, limit >> 20);
    let mut c = common::Conn::from_stream(stream);
    let st = stats(&mut c);
    assert!(stat(&st, "memory_used") <= limit as f64, "{st:?}");
    assert_eq!(stat(&st, "keys"), 12_000.0, "only RAM copies were dropped: {st:?}");
    for i in [0u32, 1, 5_000, 11_999] {
        let line = c.request(&format!(r#"{{"op":"get","bank":"b","key":"k{i}"}}"#));
        assert_eq!(line, format!("{{\"status\": \"ok\", \"data\": {}}}\n", value(i)), "key {i}");
    }
    let st = stats(&mut c);
    assert!(stat(&st, "reads_disk") >= 1.0 && stat(&st, "reads_memory") >= 1.0, "{st:?}");
}

/// A value larger than the limit, or one that cannot fit once everything evictable is gone, is an error.
#[test]
fn a_value_that_cannot_fit_is_refused() {
    let (_server, mut stream) = server(1 << 20, &["--max-value-bytes", "4194304"]);
    let value = format!("\"{}\"", "v".repeat(1 << 20));
    let errors = pipeline(
        &mut stream,
        std::iter::once(format!(r#"{{"op":"put","bank":"b","key":"k","value":{value}}}"#)),
        1,
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("Value too large for memory"), "{}", errors[0]);
}

/// A client that sends gets of large values and never reads: before, the server materialised every
/// reply (2,000 gets of 1 MB values grew it by gigabytes, kept after the client left). Now it stops
/// running the client's requests at `max_output_bytes` of unread replies, and lets go of them when the
/// client leaves.
#[test]
fn a_client_that_does_not_read_cannot_grow_the_server() {
    let (server, mut stream) = server(64 << 20, &["--max-output-bytes", "4194304", "--output-timeout", "0"]);
    let value = format!("\"{}\"", "v".repeat(1_000_000));
    let puts = (0..4).map(|i| format!(r#"{{"op":"put","bank":"b","key":"k{i}","value":{value}}}"#));
    assert!(pipeline(&mut stream, puts, 4).is_empty());
    let baseline = rss(server.pid());
    let mut greedy = TcpStream::connect(server.addr()).expect("connect");
    let gets: String =
        (0..2000).map(|i| format!("{{\"op\":\"get\",\"bank\":\"b\",\"key\":\"k{}\"}}\n", i % 4)).collect();
    greedy.write_all(gets.as_bytes()).expect("send the gets");
    // Let the server do all it will do for this client.
    std::thread::sleep(Duration::from_secs(2));
    let held = rss(server.pid());
    assert!(held <= baseline + (24 << 20), "RSS grew from {} MB to {} MB", baseline >> 20, held >> 20);
    // Others are still served meanwhile.
    let mut other = common::Conn::connect(server.addr());
    other.check(common::PING, common::PONG);
    drop(greedy);
    assert!(
        eventually(Duration::from_secs(10), || rss(server.pid()) <= baseline + (8 << 20)),
        "memory not given back: {} MB after, {} MB before",
        rss(server.pid()) >> 20,
        baseline >> 20
    );
}

/// A client that keeps `max_output_bytes` of replies unread for `output_timeout` is closed and counted.
#[test]
fn a_client_that_sits_on_its_replies_is_closed() {
    let (server, mut stream) = server(64 << 20, &["--max-output-bytes", "1048576", "--output-timeout", "1"]);
    let value = format!("\"{}\"", "v".repeat(256 * 1024));
    assert!(pipeline(
        &mut stream,
        std::iter::once(format!(r#"{{"op":"put","bank":"b","key":"k","value":{value}}}"#)),
        1
    )
    .is_empty());
    let mut idle = TcpStream::connect(server.addr()).expect("connect");
    idle.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let gets: String =
        (0..200).map(|_| "{\"op\":\"get\",\"bank\":\"b\",\"key\":\"k\"}\n".to_owned()).collect();
    idle.write_all(gets.as_bytes()).expect("send the gets");
    let mut c = common::Conn::from_stream(stream);
    let closed = eventually(Duration::from_secs(15), || stat(&stats(&mut c), "slow_clients_closed") == 1.0);
    assert!(closed, "not closed: {:?}", stats(&mut c));
    // The connection is gone: reading drains what was sent, then ends.
    let started = Instant::now();
    let mut sink = vec![0u8; 1 << 20];
    loop {
        match idle.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(started.elapsed() < Duration::from_secs(20), "still open"),
        }
    }
}

/// `bank.keys` of more keys than a reply may hold is refused, and says how to list them instead.
#[test]
fn a_listing_longer_than_max_output_bytes_is_refused() {
    let (_server, mut stream) = server(64 << 20, &["--max-output-bytes", "4096"]);
    let puts = (0..1000).map(|i| format!(r#"{{"op":"put","bank":"b","key":"key:{i:06}","value":1}}"#));
    assert!(pipeline(&mut stream, puts, 1000).is_empty());
    let mut c = common::Conn::from_stream(stream);
    let reply = c.request(r#"{"op":"bank.keys","bank":"b"}"#);
    assert!(reply.contains("Reply too large") && reply.contains("bank.scan"), "{reply}");
    let page = c.request(r#"{"op":"bank.scan","bank":"b","count":10}"#);
    assert!(page.starts_with("{\"status\": \"ok\""), "{page}");
}

/// A cache whose entries were all read recently still takes new ones. Before, eviction gave up after
/// one slice (4,096 entries) per bank and turn, and a put into a bank of more read entries than that was
/// refused with `Out of memory`.
#[test]
fn a_put_is_taken_when_every_entry_was_read() {
    let limit = 4u64 << 20;
    let (_server, mut stream) = server(limit, &[]);
    let mut c = common::Conn::from_stream(stream.try_clone().expect("clone"));
    let mut n = 0;
    while stat(&stats(&mut c), "evictions") == 0.0 {
        let puts =
            (n..n + 1000).map(|i| format!(r#"{{"op":"put","bank":"b","key":"key:{i:09}","value":1}}"#));
        assert!(pipeline(&mut stream, puts, 1000).is_empty());
        n += 1000;
        assert!(n < 1_000_000, "no eviction after {n} puts");
    }
    let gets = (0..n).map(|i| format!(r#"{{"op":"get","bank":"b","key":"key:{i:09}"}}"#));
    pipeline(&mut stream, gets, 1000);
    let puts = (n..n + 100).map(|i| format!(r#"{{"op":"put","bank":"b","key":"key:{i:09}","value":1}}"#));
    let errors = pipeline(&mut stream, puts, 100);
    assert!(errors.is_empty(), "{} puts refused, the first: {}", errors.len(), errors[0]);
}
