//! Black-box tests of request framing (README "Protocol"): a request is one
//! complete top-level JSON value, newline-separated or back to back; CRLF
//! and blank lines are fine; requests may be split, large, or pipelined;
//! a newline always ends a request; bad input never kills the connection
//! or the server.

mod common;

use common::*;
use std::thread;
use std::time::Duration;

fn fresh() -> (TestServer, Conn) {
    let s = TestServer::start(&[]);
    let c = s.connect();
    (s, c)
}

/// A `get` of a missing, uniquely named key: its reply identifies which
/// request it answers, so a stray extra reply cannot go unnoticed.
fn marker(n: usize) -> (String, String) {
    let key = format!("marker{n}");
    (get("m", &key), no_key(&key))
}

/// Asserts the connection is still in sync: the next request's reply is
/// the very next line.
#[track_caller]
fn assert_in_sync(c: &mut Conn, n: usize) {
    let (op, reply) = marker(n);
    c.check(&op, &reply);
}

/// Several newline-separated ops in one write get one reply each, in order.
#[test]
fn newline_delimited_ops_in_one_write() {
    let (_s, mut c) = fresh();
    let payload =
        format!("{}\n{}\n{}\n{}\n", put("b", "k", r#""v""#), get("b", "k"), PING, get("b", "missing"));
    c.send(&payload);
    c.expect_line(OK_EMPTY, "put");
    c.expect_line(&ok(r#""v""#), "get");
    c.expect_line(PONG, "ping");
    c.expect_line(&no_key("missing"), "get missing");
    assert_in_sync(&mut c, 1);
}

/// Ops sent back to back with no separator at all in one write
/// (`{"op":"ping"}{"op":"ping"}`) get one reply each, and, like their
/// requests, the replies have no line end; spaces between values are fine
/// too. A line end that comes later is answered with the reply's `\n`.
#[test]
fn concatenated_ops_without_newlines() {
    let (_s, mut c) = fresh();
    c.send(r#"{"op":"ping"}{"op":"ping"}"#);
    c.expect_bare(PONG, "first ping");
    c.expect_bare(PONG, "second ping");
    c.send(&format!("{}{}  {} \t{}", put("b", "k", "[1,{}]"), get("b", "k"), PING, get("b", "x")));
    c.expect_bare(OK_EMPTY, "put");
    c.expect_bare(&ok("[1,{}]"), "get");
    c.expect_bare(PONG, "ping");
    c.expect_bare(&no_key("x"), "get x");
    // The last request's line end, late: its reply becomes a line.
    c.send(" \r\n");
    c.expect_line("\n", "the late line end");
    // Two back to back, then a line end in the same write: only the last reply is a line.
    c.send(&format!("{PING}{PING}\n"));
    c.expect_bare(PONG, "ping before another");
    c.expect_line(PONG, "ping before a line end");
    assert_in_sync(&mut c, 1);
}

/// The seed's raw clients write one bare object (no newline) and wait for
/// the reply before the next: each object must be answered as soon as it
/// is complete, without waiting for a separator.
#[test]
fn lockstep_bare_objects_without_newline() {
    let (_s, mut c) = fresh();
    let steps = [
        (
            r#"{"op":"put","bank":"Bank1","key":"key1","value":"value1","lifetime":0}"#.to_string(),
            OK_EMPTY.to_string(),
        ),
        (r#"{"op":"get","bank":"Bank1","key":"key1"}"#.to_string(), ok(r#""value1""#)),
        (
            r#"{"op":"put","bank":"Bank1","key":"key2","value":1,"lifetime":0}"#.to_string(),
            OK_EMPTY.to_string(),
        ),
        (r#"{"op":"incr","bank":"Bank1","key":"key2","value":"1"}"#.to_string(), ok("2.0")),
        (r#"{"op":"bank.keys","bank":"Bank1"}"#.to_string(), ok(&names(&["key1", "key2"]))),
        (r#"{"op":"bank.list"}"#.to_string(), ok(&names(&["Bank1"]))),
        (r#"{"op":"delete","bank":"Bank1","key":"key1"}"#.to_string(), OK_EMPTY.to_string()),
        (r#"{"op":"bank.reset","bank":"Bank1"}"#.to_string(), OK_EMPTY.to_string()),
        (PING.to_string(), PONG.to_string()),
    ];
    // The original's exact bytes: no line end after a reply whose request had none.
    for (op, expected) in &steps {
        c.send(op);
        c.expect_bare(expected, op);
    }
}

/// A request's line end that arrives in a later segment than the request
/// (a large put split by TCP, or a client writing the `\n` apart) still
/// ends the reply's line: a client reading lines never waits forever.
#[test]
fn a_line_end_in_its_own_segment_still_ends_the_reply_line() {
    let (_s, mut c) = fresh();
    for (i, op) in [put("b", "k", r#""v""#), get("b", "k"), PING.to_string()].iter().enumerate() {
        c.send(op);
        thread::sleep(Duration::from_millis(20));
        c.send("\r\n");
        let want = [OK_EMPTY.to_string(), ok(r#""v""#), PONG.to_string()];
        c.expect_line(&want[i], op);
    }
    assert_in_sync(&mut c, 1);
}

/// CRLF line ends work, and the `\r` does not leak into the stored value,
/// key or bank.
#[test]
fn crlf_line_endings() {
    let (_s, mut c) = fresh();
    c.send(&format!("{}\r\n{}\r\n{}\r\n", put("b", "k", "42"), get("b", "k"), bank_keys("b")));
    c.expect_line(OK_EMPTY, "put");
    c.expect_line(&ok("42"), "get");
    c.expect_line(&ok(&names(&["k"])), "bank.keys");
    c.send("{\"op\":\"ping\"}\r\n\r\n");
    c.expect_line(PONG, "ping");
    c.send(&format!("{}\r\n", BANK_LIST));
    c.expect_line(&ok(&names(&["b"])), "bank.list");
}

/// Blank and whitespace-only lines (LF, CRLF, spaces, tabs) get no reply:
/// the reply to the next real request is the very next line.
#[test]
fn blank_lines_get_no_reply() {
    let (_s, mut c) = fresh();
    let (op, reply) = marker(1);
    c.send(&format!("\n\n   \n\t\n\r\n \r\n{op}\n"));
    c.expect_line(&reply, "first request after blank lines");
    // Blank lines after a request must not produce late replies either.
    c.send("\n\n \n");
    assert_in_sync(&mut c, 2);
    // A leading blank line sent on its own, then the request.
    c.send("\n");
    thread::sleep(Duration::from_millis(20));
    assert_in_sync(&mut c, 3);
}

/// An op split across many writes (byte by byte, with short pauses) is
/// reassembled, including a split inside a multi-byte UTF-8 character.
#[test]
fn op_split_across_writes() {
    let (_s, mut c) = fresh();
    // The key has a 2-byte character, so byte-by-byte writes split it.
    let op = put("b", "clé", r#"{"text":"hello world","n":[1,2,3]}"#);
    for byte in op.as_bytes() {
        c.send_bytes(&[*byte]);
        thread::sleep(Duration::from_millis(2));
    }
    c.send("\n");
    c.expect_line(OK_EMPTY, "byte-by-byte put");
    // A get split at arbitrary points, with no trailing newline at all.
    let g = get("b", "clé");
    let bytes = g.as_bytes();
    for chunk in bytes.chunks(7) {
        c.send_bytes(chunk);
        thread::sleep(Duration::from_millis(5));
    }
    c.expect_bare(&ok(r#"{"text":"hello world","n":[1,2,3]}"#), "split get");
}

/// An op far larger than the seed's 4 KB read (a 100 KB string value)
/// round-trips byte for byte.
#[test]
fn op_larger_than_4kb_round_trips() {
    let (_s, mut c) = fresh();
    let big: String = (0..100_000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let value = format!("\"{big}\"");
    c.check(&put("b", "big", &value), OK_EMPTY);
    c.check(&get("b", "big"), &ok(&value));
    // Same value again without any newline, back to back with a ping.
    c.send(&format!("{}{}", put("b", "big2", &value), PING));
    c.expect_bare(OK_EMPTY, "bare big put");
    c.expect_bare(PONG, "ping after big put");
    c.check(&get("b", "big2"), &ok(&value));
}

/// 1000 ops pipelined in one write all get their replies, in order.
#[test]
fn thousand_pipelined_ops_in_one_write() {
    let (_s, mut c) = fresh();
    let mut payload = String::new();
    for i in 0..1000 {
        payload.push_str(&get("p", &format!("k{i}")));
        payload.push('\n');
    }
    let writer = c.send_in_background(payload.into_bytes());
    for i in 0..1000 {
        c.expect_line(&no_key(&format!("k{i}")), &format!("pipelined get #{i}"));
    }
    writer.join().unwrap().expect("pipelined write failed");
    assert_in_sync(&mut c, 1);
}

/// A value still open at a newline is `Invalid json`, and the next line
/// is read as a fresh request.
#[test]
fn value_open_at_newline_is_invalid_json() {
    let (_s, mut c) = fresh();
    c.send(&format!("{{\"op\":\"put\",\"bank\":\"b\",\"key\":\"k\",\"value\":[1,\n{PING}\n"));
    c.expect_line(INVALID_JSON, "request cut by a newline");
    c.expect_line(PONG, "next line is a fresh request");
    c.check(&get("b", "k"), &no_key("k"));
    // A string cannot span lines either.
    c.send("{\"op\":\"ping\",\"x\":\"ab\ncd\"}\n");
    c.expect_line(INVALID_JSON, "string cut by a newline");
    c.expect_line(INVALID_JSON, "the rest of the broken string");
    assert_in_sync(&mut c, 1);
    // An open object with nothing else on its line.
    c.send("{\n");
    c.expect_line(INVALID_JSON, "lone {");
    assert_in_sync(&mut c, 2);
}

/// Garbage, invalid UTF-8 and broken JSON each get `Invalid json` and the
/// connection keeps working (the seed went silent after this).
#[test]
fn garbage_is_invalid_json_and_connection_survives() {
    let (_s, mut c) = fresh();
    let inputs: &[&[u8]] = &[
        b"oops\n",
        b"\xff\xfe\xfd\n",
        b"{\"op\":\"get\",\"bank\":\"\xff\",\"key\":\"k\"}\n",
        b"{\"op\":\"put\",\"bank\":\"b\",\"key\":\"k\",\"value\":\"\xff\"}\n",
        b"{\"op\":}\n",
        b"{'op':'ping'}\n",
        b"nul\n",
        b"}\n",
        b"]\n",
        b"{\"op\":\"ping\",}\n",
        // Invalid UTF-8 inside a field the op does not use.
        b"{\"op\":\"ping\",\"x\":\"\xc3\x28\"}\n",
    ];
    for (n, input) in inputs.iter().enumerate() {
        c.send_bytes(input);
        c.expect_line(INVALID_JSON, &format!("input {:?}", String::from_utf8_lossy(input)));
        assert_in_sync(&mut c, n);
    }
    // The put with an invalid UTF-8 value stored nothing.
    c.check(&get("b", "k"), &no_key("k"));
}

/// JSON that is not an object, or an object without `op`, gets the seed's
/// `Operation required. Field op in json is required`; the connection
/// continues.
#[test]
fn non_object_or_missing_op() {
    let (_s, mut c) = fresh();
    for (n, input) in
        ["[1,2]", "\"s\"", "42", "{\"bank\":\"x\"}", "{}", "null", "true", "-1.5"].iter().enumerate()
    {
        c.send(&format!("{input}\n"));
        c.expect_line(OP_REQUIRED, input);
        assert_in_sync(&mut c, n);
    }
}

/// 100000 `[` then a newline (a depth bomb) is answered `Invalid json`
/// without crashing; the same and new connections still work. Likewise a
/// bomb of nested open objects inside a put.
#[test]
fn depth_bomb_does_not_crash() {
    let (s, mut c) = fresh();
    let mut bomb = "[".repeat(100_000);
    bomb.push('\n');
    c.send(&bomb);
    c.expect_line(INVALID_JSON, "100000 open arrays");
    assert_in_sync(&mut c, 1);

    let mut bomb2 = String::from(r#"{"op":"put","bank":"b","key":"k","value":"#);
    bomb2.push_str(&"{\"a\":".repeat(50_000));
    bomb2.push('\n');
    c.send(&bomb2);
    c.expect_line(INVALID_JSON, "50000 open objects");
    assert_in_sync(&mut c, 2);

    let mut fresh_conn = s.connect();
    fresh_conn.check(PING, PONG);
}

/// A well-formed put whose value is 10000 nested arrays never crashes the
/// server: it is either stored (and then returned byte for byte) or
/// refused with a proper error line; either way the server keeps serving.
#[test]
fn deeply_nested_value_does_not_crash() {
    let (s, mut c) = fresh();
    let value = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let reply = c.request(&put("b", "deep", &value));
    if reply == OK_EMPTY {
        c.check(&get("b", "deep"), &ok(&value));
    } else {
        assert!(
            reply.starts_with("{\"status\": \"error\", \"message\": \"") && reply.ends_with("\"}\n"),
            "deep put answered with a malformed line: {reply:?}"
        );
    }
    // Deep nesting in a request that is not a put, too.
    let reply = c.request(&format!(r#"{{"op":"ping","junk":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000)));
    assert!(
        reply == PONG || reply.starts_with("{\"status\": \"error\", \"message\": \""),
        "deep junk field answered with {reply:?}"
    );
    assert_in_sync(&mut c, 1);
    let mut other = s.connect();
    other.check(PING, PONG);
}

/// A client that sends ops and then half-closes its write side still
/// receives every reply (including one for a final op with no newline),
/// and then the server closes the connection.
#[test]
fn half_closed_client_gets_all_replies() {
    let (_s, mut c) = fresh();
    c.send(&format!("{}\n{}\n{}\n{}", put("b", "k", "1"), get("b", "k"), incr("b", "k", "2"), PING));
    c.shutdown_write();
    c.expect_line(OK_EMPTY, "put");
    c.expect_line(&ok("1"), "get");
    c.expect_line(&ok("3.0"), "incr");
    c.expect_bare(PONG, "final ping without newline");
    c.expect_eof();
}

/// A big pipelined batch followed by a half-close: every reply arrives.
#[test]
fn half_closed_client_gets_all_pipelined_replies() {
    let (_s, mut c) = fresh();
    let mut payload = String::new();
    for i in 0..500 {
        payload.push_str(&put("h", &format!("k{i}"), &i.to_string()));
        payload.push_str(&get("h", &format!("k{i}")));
    }
    let mut w = c.writer_clone();
    let writer = thread::spawn(move || {
        use std::io::Write;
        w.write_all(payload.as_bytes()).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    for i in 0..500 {
        c.expect_bare(OK_EMPTY, &format!("put #{i}"));
        c.expect_bare(&ok(&i.to_string()), &format!("get #{i}"));
    }
    writer.join().unwrap();
    c.expect_eof();
}
