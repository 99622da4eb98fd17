//! Black-box tests of the configured limits (README "Limits"), each with a
//! small value: max_request_bytes, max_key_bytes, max_value_bytes and
//! max_connections, and the `connections_rejected` counter.

mod common;

use common::*;
use std::io::Write;
use std::thread;
use std::time::Duration;

fn too_large(n: usize) -> String {
    err(&format!("Request too large: max_request_bytes is {n}"))
}

/// A request over `max_request_bytes` gets `Request too large: ...` and then
/// EOF (the server cannot find the next request); a request well under the
/// limit is fine, and earlier pipelined requests are answered first.
#[test]
fn request_over_max_request_bytes_is_refused_then_closed() {
    let s = TestServer::start(&["--max-request-bytes", "1000"]);

    let mut c = s.connect();
    let fits = put("b", "k", &format!("\"{}\"", "x".repeat(500)));
    c.check(&fits, OK_EMPTY);

    let huge = put("b", "big", &format!("\"{}\"", "y".repeat(5000)));
    c.send(&format!("{PING}\n{huge}\n"));
    c.expect_line(PONG, "ping pipelined before the huge request");
    c.expect_line(&too_large(1000), "huge request");
    c.expect_eof();

    // The server is fine and the oversized put stored nothing.
    let mut c2 = s.connect();
    c2.check(&get("b", "big"), &no_key("big"));
    c2.check(&get("b", "k"), &ok(&format!("\"{}\"", "x".repeat(500))));
    assert_eq!(stat(&stats(&mut c2), "requests_too_large"), 1.0);
}

/// The same limit applies to a request with no newline at all (a bare
/// value that never ends), which must not be buffered forever.
#[test]
fn unterminated_request_over_limit_is_refused() {
    let s = TestServer::start(&["--max-request-bytes", "1000"]);
    let mut c = s.connect();
    c.send(&format!("{{\"op\":\"put\",\"bank\":\"b\",\"key\":\"k\",\"value\":\"{}", "z".repeat(3000)));
    c.expect_line(&too_large(1000), "unterminated 3 KB request");
    c.expect_closed();
    let mut c2 = s.connect();
    c2.check(PING, PONG);
}

/// The `Request too large` line must be readable before the close even
/// while the client is still sending a lot of data (a server that closes
/// with unread input makes the kernel send RST, which can destroy the
/// error line in flight).
#[test]
fn request_too_large_error_survives_client_still_sending() {
    let s = TestServer::start(&["--max-request-bytes", "1000"]);
    let mut c = s.connect();
    let mut w = c.writer_clone();
    let writer = thread::spawn(move || {
        let head = br#"{"op":"put","bank":"b","key":"k","value":""#;
        if w.write_all(head).is_err() {
            return;
        }
        let chunk = vec![b'q'; 64 * 1024];
        for _ in 0..64 {
            // 4 MB in total; stop as soon as the server has gone away.
            if w.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = w.shutdown(std::net::Shutdown::Write);
    });
    c.expect_line(&too_large(1000), "error line while the client is still sending");
    c.expect_closed();
    writer.join().unwrap();
    let mut c2 = s.connect();
    c2.check(PING, PONG);
}

/// Keys and bank names longer than `max_key_bytes` are refused with the
/// exact messages; the length is in UTF-8 bytes; exactly at the limit is ok.
#[test]
fn max_key_bytes_limits_keys_and_bank_names() {
    let s = TestServer::start(&["--max-key-bytes", "8"]);
    let mut c = s.connect();
    c.check(&put("b", "12345678", "1"), OK_EMPTY);
    c.check(&get("b", "12345678"), &ok("1"));
    c.check(&put("b", "123456789", "1"), &err("Key too long: 9 bytes, max_key_bytes is 8"));
    // 5 × "é" = 10 bytes although only 5 characters.
    c.check(&put("b", "ééééé", "1"), &err("Key too long: 10 bytes, max_key_bytes is 8"));
    c.check(&put("bankbank", "k", "1"), OK_EMPTY);
    c.check(&put("bankbank9", "k", "1"), &err("Bank name too long: 9 bytes, max_key_bytes is 8"));
    c.check(&put("bänkbänk", "k", "1"), &err("Bank name too long: 10 bytes, max_key_bytes is 8"));
    c.check(&bank_keys("b"), &ok(&names(&["12345678"])));
    c.check(BANK_LIST, &ok(&names(&["b", "bankbank"])));
}

/// Values whose JSON text is longer than `max_value_bytes` are refused with
/// the exact message and not stored; a value exactly at the limit is
/// accepted and returned.
#[test]
fn max_value_bytes_limits_values() {
    let s = TestServer::start(&["--max-value-bytes", "10"]);
    let mut c = s.connect();
    // `"12345678"` is 10 bytes of JSON text, quotes included.
    c.check(&put("b", "exact", r#""12345678""#), OK_EMPTY);
    c.check(&get("b", "exact"), &ok(r#""12345678""#));
    c.check(&put("b", "arr", "[1,2,3,45]"), OK_EMPTY);
    c.check(&put("b", "over", r#""123456789""#), &err("Value too large: 11 bytes, max_value_bytes is 10"));
    c.check(&get("b", "over"), &no_key("over"));
    c.check(&put("b", "exact", "[1,2,3,4,5,6]"), &err("Value too large: 13 bytes, max_value_bytes is 10"));
    c.check(&get("b", "exact"), &ok(r#""12345678""#));
    c.check(&bank_keys("b"), &ok(&names(&["exact", "arr"])));
}

/// With `max_connections` 2 the 3rd connection is accepted, told
/// `Too many connections: max_connections is 2`, and closed; stats counts
/// it in `connections_rejected`; after one client leaves, a new connection
/// works again.
#[test]
fn max_connections_rejects_extra_connections() {
    let s = TestServer::start(&["--max-connections", "2"]);
    let mut a = s.connect();
    let mut b = s.connect();
    a.check(PING, PONG);
    b.check(PING, PONG);

    let mut third = s.connect();
    third.expect_line(
        "{\"status\": \"error\", \"message\": \"Too many connections: max_connections is 2\"}\n",
        "third connection",
    );
    third.expect_eof();

    let st = stats(&mut a);
    assert_eq!(stat(&st, "connections_rejected"), 1.0, "{st:?}");
    assert_eq!(stat(&st, "connections_current"), 2.0, "{st:?}");

    drop(b);
    // The server notices the close asynchronously; a connection made after
    // that must be served (each rejected attempt is closed by the server).
    let mut served = false;
    for _ in 0..100 {
        let mut c = s.connect();
        let _ = c.writer_clone().write_all(format!("{PING}\n").as_bytes());
        match c.try_read_line() {
            Ok(Some(line)) if line == PONG => {
                served = true;
                c.check(&put("b", "k", "1"), OK_EMPTY);
                break;
            }
            Ok(Some(line)) => {
                assert_eq!(line, err("Too many connections: max_connections is 2"))
            }
            Ok(None) => panic!("connection closed without any reply"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("unexpected error while retrying: {e}"),
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(served, "no connection was served after a client left");
    a.check(PING, PONG);
    let st = stats(&mut a);
    assert!(stat(&st, "connections_rejected") >= 1.0, "{st:?}");
}
