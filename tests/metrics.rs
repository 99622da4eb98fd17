//! `GET /metrics`: the counters in Prometheus's text format.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;

fn get_metrics(server: &TestServer) -> String {
    let mut stream = TcpStream::connect(server.http_addr()).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.contains("Content-Type: text/plain; version=0.0.4\r\n"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
}

/// Ops, hits and misses, reads by tier and the request-duration histogram count what was done; every family
/// has its HELP and TYPE lines.
#[test]
fn metrics_count_what_was_done() {
    let server = TestServer::start(&[]);
    let mut c = server.connect();
    c.check(&put("b", "k", "1"), OK_EMPTY);
    c.check(&get("b", "k"), &ok("1"));
    c.check(&get("b", "nope"), &no_key("nope"));
    c.check(PING, PONG);
    c.check(r#"{"op":"bank.scan","bank":"b"}"#, &ok(r#"{"cursor": 0, "keys": ["k"]}"#));
    let m = get_metrics(&server);
    assert_eq!(sample(&m, "bankcache_ops_total{op=\"put\"}"), 1.0);
    assert_eq!(sample(&m, "bankcache_ops_total{op=\"get\"}"), 2.0);
    assert_eq!(sample(&m, "bankcache_ops_total{op=\"bank.scan\"}"), 1.0);
    assert_eq!(sample(&m, "bankcache_hits_total"), 1.0);
    assert_eq!(sample(&m, "bankcache_misses_total"), 1.0);
    assert_eq!(sample(&m, "bankcache_reads_total{tier=\"memory\"}"), 1.0);
    assert_eq!(sample(&m, "bankcache_keys"), 1.0);
    // Five JSON requests ran before the metrics request itself was timed.
    assert_eq!(sample(&m, "bankcache_request_duration_seconds_count"), 5.0);
    assert_eq!(sample(&m, "bankcache_request_duration_seconds_bucket{le=\"+Inf\"}"), 5.0);
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        assert!(m.contains(&format!("# TYPE {family} ")), "no TYPE line for {name}");
    }
}

/// A line end that arrives after its request was answered bare is not a request: it is neither timed nor
/// counted (it only completes the reply's line).
#[test]
fn a_late_line_end_is_not_counted_as_a_request() {
    let server = TestServer::start(&[]);
    let mut c = server.connect();
    for _ in 0..3 {
        c.send(PING);
        std::thread::sleep(std::time::Duration::from_millis(30));
        c.send("\n");
        c.expect_line(PONG, "ping, its line end apart");
    }
    let m = get_metrics(&server);
    assert_eq!(sample(&m, "bankcache_request_duration_seconds_count"), 3.0);
    assert_eq!(sample(&m, "bankcache_ops_total{op=\"ping\"}"), 3.0);
}
