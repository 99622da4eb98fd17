//! Black-box tests of every JSON op: exact reply bytes for the ok and error
//! cases documented in README.md ("Operations", "Details", "stats"), plus
//! lifetimes, expiry, bank bookkeeping, atomicity and pipelined reply order.

mod common;

use common::*;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

/// A fresh server with default settings and one connection to it.
fn fresh() -> (TestServer, Conn) {
    let s = TestServer::start(&[]);
    let c = s.connect();
    (s, c)
}

/// A fresh server whose background sweep effectively never runs, so the
/// lifetime tests exercise the per-op expiry checks (get, bank.keys, ...)
/// rather than the sweep hiding a missing check.
fn fresh_no_sweep() -> (TestServer, Conn) {
    let s = TestServer::start(&["--sweep-interval-ms", "3600000"]);
    let c = s.connect();
    (s, c)
}

/// Sends each op in lockstep and asserts its exact reply.
#[track_caller]
fn script(c: &mut Conn, steps: &[(&str, &str)]) {
    for (op, expected) in steps {
        c.check(op, expected);
    }
}

/// Asserts that every reply in `lines` is valid JSON (so no `NaN` or
/// `Infinity`, which the seed wrote and strict parsers reject).
#[track_caller]
fn assert_finite(lines: &[String]) {
    for l in lines {
        assert!(!l.contains("NaN") && !l.contains("Infinity"), "a reply carries a non-finite number: {l:?}");
        serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {l:?}"));
    }
}

// ---------------------------------------------------------------------------
// Basic ops and the seed's own byte strings
// ---------------------------------------------------------------------------

/// `ping` answers exactly `{"status": "ok", "data": "pong"}`.
#[test]
fn ping_replies_pong() {
    let (_s, mut c) = fresh();
    c.check(PING, PONG);
    c.check(PING, "{\"status\": \"ok\", \"data\": \"pong\"}\n");
}

/// put/get with the seed's exact byte strings (`ut_server.py` compares the
/// replies as strings): `{"status": "ok", "data": {}}` and `"value1"`.
#[test]
fn put_get_use_seed_byte_strings() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("Bank1", "key1", r#""value1""#), "{\"status\": \"ok\", \"data\": {}}\n"),
            (&get("Bank1", "key1"), "{\"status\": \"ok\", \"data\": \"value1\"}\n"),
        ],
    );
}

/// `get` returns the stored value as the exact bytes the client sent: key
/// order, spacing, number spelling and escapes untouched, ints stay ints.
#[test]
fn get_returns_value_bytes_exactly_as_sent() {
    let (_s, mut c) = fresh();
    let values = [
        r#"{"a":1,"b":[true,null]}"#,
        "5",
        "-17",
        "1.50",
        "1e2",
        "0.1",
        "12345678901234567890",
        "true",
        "false",
        "[]",
        "{}",
        r#"{ "x" : [ 1 , 2 ] ,"y":{}}"#,
        r#""a\"b\\c\u00e9\n""#,
        r#"{"z":1,"a":2}"#,
        r#"[1,"two",{"three":[3.0]},null]"#,
    ];
    for (i, v) in values.iter().enumerate() {
        let key = format!("k{i}");
        c.check(&put("b", &key, v), OK_EMPTY);
        c.check(&get("b", &key), &ok(v));
    }
}

/// A `null` value is a value (the seed allows it): stored and returned.
#[test]
fn put_accepts_null_value() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "n", "null"), OK_EMPTY),
            (&get("b", "n"), &ok("null")),
            (&bank_keys("b"), &ok(&names(&["n"]))),
        ],
    );
}

/// A re-put replaces the value.
#[test]
fn put_overwrites_value() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "k", "1"), OK_EMPTY),
            (&put("b", "k", r#""two""#), OK_EMPTY),
            (&get("b", "k"), &ok(r#""two""#)),
        ],
    );
}

/// The order of the fields in the request object does not matter (`op`
/// may come last), and extra fields are ignored.
#[test]
fn field_order_does_not_matter() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (r#"{"value":[1,2],"key":"k","bank":"b","op":"put"}"#, OK_EMPTY),
            (r#"{"key":"k","bank":"b","op":"get"}"#, &ok("[1,2]")),
            (r#"{"op":"get","extra":{"x":1},"bank":"b","key":"k"}"#, &ok("[1,2]")),
        ],
    );
}

/// `delete` answers `{}` and the key is gone afterwards; deleting again is
/// `Key k doesn't exist`.
#[test]
fn delete_removes_key() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "k", "1"), OK_EMPTY),
            (&put("b", "other", "2"), OK_EMPTY),
            (&delete("b", "k"), OK_EMPTY),
            (&get("b", "k"), &no_key("k")),
            (&delete("b", "k"), &no_key("k")),
            (&bank_keys("b"), &ok(&names(&["other"]))),
            (&get("b", "other"), &ok("2")),
        ],
    );
}

/// `get`, `delete`, `touch`, `getouch` and `incr` of a missing key answer
/// exactly `Key <key> doesn't exist` (literal apostrophe).
#[test]
fn missing_key_errors() {
    let (_s, mut c) = fresh();
    c.check(&put("b", "present", "1"), OK_EMPTY);
    c.check(&get("b", "k"), "{\"status\": \"error\", \"message\": \"Key k doesn't exist\"}\n");
    c.check(&delete("b", "k"), &no_key("k"));
    c.check(&touch("b", "k"), &no_key("k"));
    c.check(&getouch("b", "k"), &no_key("k"));
    c.check(&incr("b", "k", "1"), &no_key("k"));
    c.check(&get("b", "key1"), &no_key("key1"));
}

/// `touch` of an existing key answers `{}` and leaves the value alone.
#[test]
fn touch_existing_key() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "k", r#""v""#), OK_EMPTY),
            (&touch("b", "k"), OK_EMPTY),
            (&get("b", "k"), &ok(r#""v""#)),
        ],
    );
}

/// `getouch` returns the stored value (the seed always returned `null`; the
/// README fixes that).
#[test]
fn getouch_returns_value() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "k", r#"{"a":[1]}"#), OK_EMPTY),
            (&getouch("b", "k"), &ok(r#"{"a":[1]}"#)),
            (&put_ttl("b", "t", "7", "100"), OK_EMPTY),
            (&getouch("b", "t"), &ok("7")),
        ],
    );
}

// ---------------------------------------------------------------------------
// Missing fields
// ---------------------------------------------------------------------------

/// `put` without bank, key or value: `bank, key and value are required`.
#[test]
fn put_missing_fields() {
    let (_s, mut c) = fresh();
    let e = err("bank, key and value are required");
    for op in [
        r#"{"op":"put","key":"k","value":1}"#,
        r#"{"op":"put","bank":"b","value":1}"#,
        r#"{"op":"put","bank":"b","key":"k"}"#,
        r#"{"op":"put"}"#,
    ] {
        c.check(op, &e);
    }
    c.check(BANK_LIST, &ok("[]"));
}

/// `get`/`delete`/`touch`/`getouch` without bank or key:
/// `bank and key are required`.
#[test]
fn key_ops_missing_fields() {
    let (_s, mut c) = fresh();
    let e = err("bank and key are required");
    for op in ["get", "delete", "touch", "getouch"] {
        c.check(&format!(r#"{{"op":"{op}","key":"k"}}"#), &e);
        c.check(&format!(r#"{{"op":"{op}","bank":"b"}}"#), &e);
        c.check(&format!(r#"{{"op":"{op}"}}"#), &e);
    }
}

/// `incr` without bank, key or value: `bank, key, value are required`.
#[test]
fn incr_missing_fields() {
    let (_s, mut c) = fresh();
    c.check(&put("b", "k", "1"), OK_EMPTY);
    let e = err("bank, key, value are required");
    for op in [
        r#"{"op":"incr","key":"k","value":1}"#,
        r#"{"op":"incr","bank":"b","value":1}"#,
        r#"{"op":"incr","bank":"b","key":"k"}"#,
    ] {
        c.check(op, &e);
    }
    c.check(&get("b", "k"), &ok("1"));
}

/// `bank.keys` and `bank.reset` without bank: `bank are required` (the
/// seed's grammar, kept byte for byte).
#[test]
fn bank_ops_missing_bank() {
    let (_s, mut c) = fresh();
    c.check(r#"{"op":"bank.keys"}"#, &err("bank are required"));
    c.check(r#"{"op":"bank.reset"}"#, &err("bank are required"));
}

// ---------------------------------------------------------------------------
// Op names
// ---------------------------------------------------------------------------

/// Unknown ops, wrong case and non-string ops are `Invalid operation`, and
/// the connection keeps working.
#[test]
fn unknown_or_non_string_op_is_invalid_operation() {
    let (_s, mut c) = fresh();
    for op in [
        r#"{"op":"PING"}"#,
        r#"{"op":"Get","bank":"b","key":"k"}"#,
        r#"{"op":"fly"}"#,
        r#"{"op":""}"#,
        r#"{"op":"bank.Keys","bank":"b"}"#,
        r#"{"op":5}"#,
        r#"{"op":["ping"]}"#,
        r#"{"op":{"x":1}}"#,
        r#"{"op":true}"#,
    ] {
        c.check(op, INVALID_OP);
    }
    c.check(PING, PONG);
}

// ---------------------------------------------------------------------------
// incr
// ---------------------------------------------------------------------------

/// The seed's incr sequence: 1 + "1" = `2.0` (exact seed bytes), then -3,
/// then "1"; the result is always a float.
#[test]
fn incr_seed_sequence() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "key2", "1"), OK_EMPTY),
            (&incr("b", "key2", r#""1""#), "{\"status\": \"ok\", \"data\": 2.0}\n"),
            (&incr("b", "key2", "-3"), &ok("-1.0")),
            (&incr("b", "key2", r#""1""#), &ok("0.0")),
            (&get("b", "key2"), &ok("0.0")),
        ],
    );
}

/// incr of an int stores and returns a float (`5` + 1 = `6.0`; `get` then
/// returns `6.0`, not `6`).
#[test]
fn incr_result_is_stored_as_float() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "k", "5"), OK_EMPTY),
            (&incr("b", "k", "1"), &ok("6.0")),
            (&get("b", "k"), &ok("6.0")),
            (&incr("b", "k", "-4.3"), &ok("1.7000000000000002")),
            (&put("b", "z", "0"), OK_EMPTY),
            (&incr("b", "z", "-4.3"), &ok("-4.3")),
        ],
    );
}

/// Deltas may be numeric strings (`"1"`, `"-1.0"`, `"1e3"`) or booleans,
/// as Python's `float()` accepts them.
#[test]
fn incr_accepts_string_and_bool_deltas() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "k", "0"), OK_EMPTY),
            (&incr("b", "k", r#""1""#), &ok("1.0")),
            (&incr("b", "k", r#""-1.0""#), &ok("0.0")),
            (&incr("b", "k", r#""1e3""#), &ok("1000.0")),
            (&incr("b", "k", "true"), &ok("1001.0")),
            (&incr("b", "k", "false"), &ok("1001.0")),
            (&incr("b", "k", "2.5"), &ok("1003.5")),
        ],
    );
}

/// Stored values may be numeric strings or booleans: `"10"` + 1 = `11.0`
/// (and the stored value becomes the float), `true` + 1 = `2.0`, and the
/// seed's 1.3 + 1.2 = `2.5`.
#[test]
fn incr_of_numeric_string_bool_and_float_values() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "s", r#""10""#), OK_EMPTY),
            (&incr("b", "s", "1"), &ok("11.0")),
            (&get("b", "s"), &ok("11.0")),
            (&put("b", "t", "true"), OK_EMPTY),
            (&incr("b", "t", "1"), &ok("2.0")),
            (&put("b", "f", "false"), OK_EMPTY),
            (&incr("b", "f", r#""2""#), &ok("2.0")),
            (&put("b", "x", "1.3"), OK_EMPTY),
            (&incr("b", "x", "1.2"), &ok("2.5")),
            (&put("b", "e", r#""-2.5e1""#), OK_EMPTY),
            (&incr("b", "e", "5"), &ok("-20.0")),
        ],
    );
}

/// The float text is Python's `repr(float)` (json.dumps): shortest
/// round-trip digits, exponent form from 1e16 up and below 1e-4.
#[test]
fn incr_float_text_matches_python_repr() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "a", "0.1"), OK_EMPTY),
            (&incr("b", "a", "0.2"), &ok("0.30000000000000004")),
            (&put("b", "big", "0"), OK_EMPTY),
            (&incr("b", "big", r#""1e16""#), &ok("1e+16")),
            (&put("b", "mid", "0"), OK_EMPTY),
            (&incr("b", "mid", "123456789012345"), &ok("123456789012345.0")),
            (&put("b", "small", "0"), OK_EMPTY),
            (&incr("b", "small", r#""0.00001""#), &ok("1e-05")),
            (&put("b", "tiny", "0"), OK_EMPTY),
            (&incr("b", "tiny", "0.0001"), &ok("0.0001")),
            (&put("b", "huge", "0"), OK_EMPTY),
            (&incr("b", "huge", "1.5e300"), &ok("1.5e+300")),
        ],
    );
}

/// A delta that `float()` cannot read gives exactly the seed's message and
/// leaves the stored value unchanged.
#[test]
fn incr_bad_delta_is_refused() {
    let (_s, mut c) = fresh();
    c.check(&put("b", "k", "5"), OK_EMPTY);
    let e = err("The value must be an integer or a float");
    for delta in [r#""1a""#, r#""abc""#, r#""""#, "[1]", r#"{"a":1}"#] {
        c.check(&incr("b", "k", delta), &e);
    }
    c.check(&get("b", "k"), &ok("5"));
}

/// Non-finite deltas (`"nan"`, `"inf"`, `"1e400"`, ...) are refused with the
/// bad-delta message, the value is unchanged, and no reply ever carries
/// NaN/Infinity (which the seed wrote, making invalid JSON).
#[test]
fn incr_non_finite_delta_is_refused() {
    let (_s, mut c) = fresh();
    c.check(&put("b", "k", "5"), OK_EMPTY);
    let e = err("The value must be an integer or a float");
    let mut replies = Vec::new();
    for delta in
        [r#""nan""#, r#""NaN""#, r#""inf""#, r#""-inf""#, r#""Infinity""#, r#""1e400""#, r#""-1e400""#]
    {
        let r = c.request(&incr("b", "k", delta));
        assert_eq!(r, e, "incr by {delta}");
        replies.push(r);
    }
    let r = c.request(&get("b", "k"));
    assert_eq!(r, ok("5"));
    replies.push(r);
    assert_finite(&replies);
}

/// A stored value that is not a number (`"abc"`, `"nan"`, `"inf"`) gives
/// the seed's exact message (`The value for key key3 isn't a number`) and
/// stays unchanged.
#[test]
fn incr_of_non_numeric_stored_value() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("Bank1", "key3", r#""abc""#), OK_EMPTY),
            (
                &incr("Bank1", "key3", r#""1""#),
                "{\"status\": \"error\", \"message\": \"The value for key key3 isn't a number\"}\n",
            ),
            (&get("Bank1", "key3"), &ok(r#""abc""#)),
            (&put("Bank1", "n", r#""nan""#), OK_EMPTY),
            (&incr("Bank1", "n", "1"), &err("The value for key n isn't a number")),
            (&get("Bank1", "n"), &ok(r#""nan""#)),
            (&put("Bank1", "i", r#""inf""#), OK_EMPTY),
            (&incr("Bank1", "i", "1"), &err("The value for key i isn't a number")),
            (&put("Bank1", "mi", r#""-Infinity""#), OK_EMPTY),
            (&incr("Bank1", "mi", "1"), &err("The value for key mi isn't a number")),
            (&get("Bank1", "i"), &ok(r#""inf""#)),
        ],
    );
}

/// A stored list, object or null gives Python's TypeError text, e.g.
/// `float() argument must be a string or a real number, not 'list'`.
#[test]
fn incr_of_list_object_null_gives_python_type_error() {
    let (_s, mut c) = fresh();
    let msg = |t: &str| err(&format!("float() argument must be a string or a real number, not '{t}'"));
    script(
        &mut c,
        &[
            (&put("b", "l", "[1,2]"), OK_EMPTY),
            (&incr("b", "l", "1"), &msg("list")),
            (&get("b", "l"), &ok("[1,2]")),
            (&put("b", "o", r#"{"a":1}"#), OK_EMPTY),
            (&incr("b", "o", "1"), &msg("dict")),
            (&put("b", "n", "null"), OK_EMPTY),
            (&incr("b", "n", "1"), &msg("NoneType")),
            (&get("b", "n"), &ok("null")),
        ],
    );
}

/// incr of a missing key is an error and creates nothing: no key, and no
/// bank in `bank.list`.
#[test]
fn incr_of_missing_key_creates_nothing() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&incr("ghost", "k", "1"), &no_key("k")),
            (BANK_LIST, &ok("[]")),
            (&put("real", "x", "1"), OK_EMPTY),
            (&incr("real", "k", "1"), &no_key("k")),
            (&get("real", "k"), &no_key("k")),
            (&bank_keys("real"), &ok(&names(&["x"]))),
            (BANK_LIST, &ok(&names(&["real"]))),
        ],
    );
}

/// An overflowing incr (`1e308` + `1e308`) is `Incr of key K would
/// overflow` and the value is unchanged.
#[test]
fn incr_overflow_is_refused() {
    let (_s, mut c) = fresh();
    let mut replies = Vec::new();
    for (op, expected) in [
        (put("b", "big", "1e308"), OK_EMPTY.to_string()),
        (incr("b", "big", "1e308"), err("Incr of key big would overflow")),
        (incr("b", "big", r#""1.7e308""#), err("Incr of key big would overflow")),
        (get("b", "big"), ok("1e308")),
        (put("b", "neg", "-1e308"), OK_EMPTY.to_string()),
        (incr("b", "neg", "-1e308"), err("Incr of key neg would overflow")),
        (get("b", "neg"), ok("-1e308")),
    ] {
        let r = c.request(&op);
        assert_eq!(r, expected, "reply to {op}");
        replies.push(r);
    }
    assert_finite(&replies);
}

/// 50 connections × 200 lockstep `incr` by 1 on one key give exactly
/// 10000.0: increments are atomic across connections and workers.
#[test]
fn concurrent_incr_is_atomic() {
    let s = TestServer::start(&["--workers", "4"]);
    let mut c = s.connect();
    c.check(&put("ctr", "n", "0"), OK_EMPTY);
    let addr = s.addr();
    let barrier = Arc::new(Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                c.check(PING, PONG);
                barrier.wait();
                for _ in 0..200 {
                    let r = c.request(&incr("ctr", "n", "1"));
                    assert!(
                        r.starts_with("{\"status\": \"ok\", \"data\": ") && r.ends_with(".0}\n"),
                        "bad incr reply {r:?}"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a client thread failed");
    }
    c.check(&get("ctr", "n"), &ok("10000.0"));
}

// ---------------------------------------------------------------------------
// Bank and key names
// ---------------------------------------------------------------------------

/// A JSON number as bank or key stands for its decimal text as written:
/// `2` and `"2"` are the same key, `2.50` is `"2.50"`.
#[test]
fn number_bank_and_key_are_their_text() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (r#"{"op":"put","bank":2,"key":3,"value":"n"}"#, OK_EMPTY),
            (r#"{"op":"get","bank":"2","key":"3"}"#, &ok(r#""n""#)),
            (r#"{"op":"get","bank":2,"key":"3"}"#, &ok(r#""n""#)),
            (r#"{"op":"put","bank":"2","key":"3","value":"s"}"#, OK_EMPTY),
            (r#"{"op":"get","bank":2,"key":3}"#, &ok(r#""s""#)),
            (r#"{"op":"put","bank":2,"key":2.50,"value":1}"#, OK_EMPTY),
            (r#"{"op":"put","bank":2,"key":-1,"value":1}"#, OK_EMPTY),
            (r#"{"op":"bank.keys","bank":2}"#, &ok(&names(&["3", "2.50", "-1"]))),
            (r#"{"op":"get","bank":2,"key":"2.50"}"#, &ok("1")),
            (r#"{"op":"get","bank":2,"key":7}"#, &no_key("7")),
            (r#"{"op":"incr","bank":2,"key":-1,"value":1}"#, &ok("2.0")),
            (BANK_LIST, &ok(&names(&["2"]))),
        ],
    );
}

/// A bank or key that is a list, object, bool or null is refused with the
/// README's messages, the connection keeps working and nothing is created.
#[test]
fn bad_bank_and_key_types_are_rejected() {
    let (_s, mut c) = fresh();
    let bank_err = err("bank must be a string or a number");
    let key_err = err("key must be a string or a number");
    for bad in ["[1]", r#"{"a":1}"#, "true", "false", "null"] {
        c.check(&format!(r#"{{"op":"put","bank":{bad},"key":"k","value":1}}"#), &bank_err);
        c.check(&format!(r#"{{"op":"get","bank":{bad},"key":"k"}}"#), &bank_err);
        c.check(&format!(r#"{{"op":"incr","bank":{bad},"key":"k","value":1}}"#), &bank_err);
        c.check(&format!(r#"{{"op":"bank.keys","bank":{bad}}}"#), &bank_err);
        c.check(&format!(r#"{{"op":"bank.reset","bank":{bad}}}"#), &bank_err);
        c.check(&format!(r#"{{"op":"put","bank":"b","key":{bad},"value":1}}"#), &key_err);
        c.check(&format!(r#"{{"op":"get","bank":"b","key":{bad}}}"#), &key_err);
        c.check(&format!(r#"{{"op":"delete","bank":"b","key":{bad}}}"#), &key_err);
        c.check(&format!(r#"{{"op":"touch","bank":"b","key":{bad}}}"#), &key_err);
        c.check(&format!(r#"{{"op":"getouch","bank":"b","key":{bad}}}"#), &key_err);
        c.check(&format!(r#"{{"op":"incr","bank":"b","key":{bad},"value":1}}"#), &key_err);
    }
    c.check(BANK_LIST, &ok("[]"));
    c.check(PING, PONG);
}

/// Replies escape like Python's json.dumps: non-ASCII as lowercase
/// `\uXXXX` (surrogate pairs above U+FFFF), quotes and backslashes,
/// control characters; `"\u00e9"` and a raw `é` are the same key.
#[test]
fn names_in_replies_are_escaped_like_python() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&get("b", "é"), &no_key("\\u00e9")),
            (&put("b", "é", "1"), OK_EMPTY),
            (r#"{"op":"get","bank":"b","key":"\u00e9"}"#, &ok("1")),
            (&put("b", "a\"b\\c", "2"), OK_EMPTY),
            (&put("b", "tab\there", "3"), OK_EMPTY),
            (&put("b", "😀", "4"), OK_EMPTY),
            (&bank_keys("b"), &ok("[\"\\u00e9\", \"a\\\"b\\\\c\", \"tab\\there\", \"\\ud83d\\ude00\"]")),
            (&get("b", "a\"x"), &no_key("a\\\"x")),
            (&get("b", "ü😀"), &no_key("\\u00fc\\ud83d\\ude00")),
            (&get("b", "c\u{1}"), &no_key("c\\u0001")),
            (&put("bänk", "k", "1"), OK_EMPTY),
            (BANK_LIST, &ok("[\"b\", \"b\\u00e4nk\"]")),
        ],
    );
}

/// Python's json.dumps (ensure_ascii) also escapes DEL (0x7f) as `\u007f`.
#[test]
fn del_character_is_escaped_like_python() {
    let (_s, mut c) = fresh();
    c.check(&get("b", "x\u{7f}"), &no_key("x\\u007f"));
}

// ---------------------------------------------------------------------------
// Banks
// ---------------------------------------------------------------------------

/// The same key in two banks holds two independent values.
#[test]
fn banks_are_isolated() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("Bank1", "key1", r#""one""#), OK_EMPTY),
            (&put("Bank2", "key1", r#""two""#), OK_EMPTY),
            (&get("Bank1", "key1"), &ok(r#""one""#)),
            (&get("Bank2", "key1"), &ok(r#""two""#)),
            (&delete("Bank1", "key1"), OK_EMPTY),
            (&get("Bank1", "key1"), &no_key("key1")),
            (&get("Bank2", "key1"), &ok(r#""two""#)),
            (&bank_reset("Bank2"), OK_EMPTY),
            (&put("Bank1", "key1", "1"), OK_EMPTY),
            (&bank_keys("Bank1"), &ok(&names(&["key1"]))),
            (&bank_keys("Bank2"), &ok("[]")),
        ],
    );
}

/// Failed get/delete/touch/getouch/incr and bank.keys/bank.reset of an
/// unknown bank never create a bank (the seed created one each time).
#[test]
fn failed_ops_do_not_create_banks() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&get("g", "k"), &no_key("k")),
            (&delete("d", "k"), &no_key("k")),
            (&touch("t", "k"), &no_key("k")),
            (&getouch("gt", "k"), &no_key("k")),
            (&incr("i", "k", "1"), &no_key("k")),
            (&bank_keys("bk"), &ok("[]")),
            (&bank_reset("br"), OK_EMPTY),
            (BANK_LIST, &ok("[]")),
        ],
    );
    let st = stats(&mut c);
    assert_eq!(stat(&st, "banks"), 0.0, "stats: {st:?}");
}

/// A `bank.scan` request; `extra` is raw JSON text of more fields (`,"cursor":3`), or empty.
fn bank_scan(bank: &str, extra: &str) -> String {
    format!(r#"{{"op":"bank.scan","bank":{}{extra}}}"#, q(bank))
}

/// One page of a scan, read from its reply: the next cursor and the keys.
fn scan_page(c: &mut Conn, bank: &str, cursor: u64, prefix: &str, count: u64) -> (u64, Vec<String>) {
    let extra = format!(r#","cursor":{cursor},"prefix":{},"count":{count}"#, q(prefix));
    let line = c.request(&bank_scan(bank, &extra));
    let reply: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert_eq!(reply["status"], "ok", "{line}");
    let data = &reply["data"];
    let keys = data["keys"].as_array().unwrap_or_else(|| panic!("no keys: {line}"));
    let keys = keys.iter().map(|k| k.as_str().unwrap().to_owned()).collect();
    (data["cursor"].as_u64().unwrap_or_else(|| panic!("no cursor: {line}")), keys)
}

/// `bank.scan` answers `{"cursor": N, "keys": [...]}` in the original's reply style: keys under the prefix,
/// in slot order (put order on a fresh bank), at most `count` per call, the next cursor 0 once done.
/// Defaults: cursor 0, prefix "", count 100; `null` is the same as absent. A bank that does not exist scans
/// as empty and is not created.
#[test]
fn bank_scan_pages_by_prefix() {
    let (_s, mut c) = fresh();
    c.check(&bank_scan("ghost", r#","cursor":12"#), &ok(r#"{"cursor": 0, "keys": []}"#));
    c.check(BANK_LIST, &ok("[]"));
    for key in ["user:1", "item:1", "user:\\u00e9", "user:3", "item:2"] {
        c.check(&format!(r#"{{"op":"put","bank":"b","key":"{key}","value":1}}"#), OK_EMPTY);
    }
    script(
        &mut c,
        &[
            (
                &bank_scan("b", r#","prefix":"user:","count":2"#),
                &ok(r#"{"cursor": 3, "keys": ["user:1", "user:\u00e9"]}"#),
            ),
            (
                &bank_scan("b", r#","cursor":3,"prefix":"user:","count":2"#),
                &ok(r#"{"cursor": 0, "keys": ["user:3"]}"#),
            ),
            (
                &bank_scan("b", r#","cursor":null,"prefix":null,"count":null"#),
                &ok(r#"{"cursor": 0, "keys": ["user:1", "item:1", "user:\u00e9", "user:3", "item:2"]}"#),
            ),
            (&bank_scan("b", r#","prefix":"zzz""#), &ok(r#"{"cursor": 0, "keys": []}"#)),
            // A number for the bank stands for its text, as everywhere.
            (r#"{"op":"bank.scan","bank":7}"#, &ok(r#"{"cursor": 0, "keys": []}"#)),
        ],
    );
    // A large count is capped, not refused.
    let (cursor, keys) = scan_page(&mut c, "b", 0, "item:", 1_000_000_000);
    assert_eq!((cursor, keys), (0, vec!["item:1".to_string(), "item:2".to_string()]));
}

/// Bad fields of `bank.scan` are refused with their names, the connection goes on, and a refused scan
/// counts as an error, not as an op.
#[test]
fn bank_scan_bad_fields() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (r#"{"op":"bank.scan"}"#, &err("bank are required")),
            (r#"{"op":"bank.scan","cursor":0}"#, &err("bank are required")),
            (r#"{"op":"bank.scan","bank":null}"#, &err("bank must be a string or a number")),
            (&bank_scan("b", r#","cursor":-1"#), &err("cursor must be a non-negative integer")),
            (&bank_scan("b", r#","cursor":1.5"#), &err("cursor must be a non-negative integer")),
            (&bank_scan("b", r#","cursor":"3""#), &err("cursor must be a non-negative integer")),
            (&bank_scan("b", r#","count":0"#), &err("count must be a positive integer")),
            (&bank_scan("b", r#","count":-3"#), &err("count must be a positive integer")),
            (&bank_scan("b", r#","count":"10""#), &err("count must be a positive integer")),
            (&bank_scan("b", r#","prefix":5"#), &err("prefix must be a string")),
            (&bank_scan("b", r#","prefix":["a"]"#), &err("prefix must be a string")),
            (PING, PONG),
        ],
    );
    let st = stats(&mut c);
    assert_eq!(stat(&st, "ops_bank_scan"), 0.0, "{st:?}");
    assert_eq!(stat(&st, "errors"), 11.0, "{st:?}");
}

/// Expired entries are never listed by `bank.scan`, swept or not.
#[test]
fn bank_scan_skips_expired_entries() {
    let (_s, mut c) = fresh_no_sweep();
    c.check(&put_ttl("b", "short", "1", "0.2"), OK_EMPTY);
    c.check(&put("b", "long", "1"), OK_EMPTY);
    c.check(&bank_scan("b", ""), &ok(r#"{"cursor": 0, "keys": ["short", "long"]}"#));
    thread::sleep(Duration::from_millis(400));
    c.check(&bank_scan("b", ""), &ok(r#"{"cursor": 0, "keys": ["long"]}"#));
}

/// The cursor is stable while the bank changes: between the pages of a scan, other keys are deleted and
/// added (filling freed slots behind and ahead of the cursor) and kept keys are overwritten; every key
/// present throughout is returned exactly once, and nothing outside the prefix is.
#[test]
fn bank_scan_cursor_is_stable_while_the_bank_changes() {
    let (_s, mut c) = fresh();
    for i in 0..600 {
        let prefix = if i % 2 == 0 { "keep" } else { "churn" };
        c.check(&put("b", &format!("{prefix}:{i}"), "0"), OK_EMPTY);
    }
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let (mut pages, mut round) = (0, 0);
    for prefix in ["", "keep:"] {
        let mut cursor = 0;
        loop {
            let (next, keys) = scan_page(&mut c, "b", cursor, prefix, 25);
            for k in keys {
                assert!(k.starts_with(prefix), "{k} is outside {prefix:?}");
                *seen.entry(format!("{prefix}|{k}")).or_default() += 1;
            }
            // Churn between pages: delete some churn keys, add new ones (they reuse the freed slots),
            // overwrite a kept key.
            for j in 0..5 {
                let n = 2 * ((round * 5 + j) % 300) + 1;
                c.request(&delete("b", &format!("churn:{n}")));
                c.check(&put("b", &format!("new:{round}:{j}"), "1"), OK_EMPTY);
            }
            c.check(&put("b", &format!("keep:{}", 2 * (round % 300)), "2"), OK_EMPTY);
            round += 1;
            pages += 1;
            assert!(pages < 1000, "the scan never ends");
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    for prefix in ["", "keep:"] {
        for i in (0..600).step_by(2) {
            let key = format!("{prefix}|keep:{i}");
            assert_eq!(seen.get(&key), Some(&1), "{key} was present throughout");
        }
    }
    assert!(seen.keys().all(|k| !k.starts_with("keep:|") || k.starts_with("keep:|keep:")), "{seen:?}");
}

/// `bank.keys` lists keys in insertion order; a re-put keeps the key's
/// position; a delete then put moves it to the end.
#[test]
fn bank_keys_insertion_order() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b", "c", "1"), OK_EMPTY),
            (&put("b", "a", "1"), OK_EMPTY),
            (&put("b", "b", "1"), OK_EMPTY),
            (&bank_keys("b"), &ok(&names(&["c", "a", "b"]))),
            (&put("b", "a", "2"), OK_EMPTY),
            (&put("b", "c", "2"), OK_EMPTY),
            (&bank_keys("b"), &ok(&names(&["c", "a", "b"]))),
            (&delete("b", "a"), OK_EMPTY),
            (&bank_keys("b"), &ok(&names(&["c", "b"]))),
            (&put("b", "a", "3"), OK_EMPTY),
            (&bank_keys("b"), &ok(&names(&["c", "b", "a"]))),
        ],
    );
}

/// `bank.keys` keeps insertion order across many keys (not hash order).
#[test]
fn bank_keys_order_many_keys() {
    let (_s, mut c) = fresh();
    let keys: Vec<String> = (0..300).map(|i| format!("key{}", (i * 7919) % 1000)).collect();
    for k in &keys {
        c.check(&put("b", k, "0"), OK_EMPTY);
    }
    let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
    c.check(&bank_keys("b"), &ok(&names(&refs)));
}

/// `bank.reset` empties the bank but leaves it listed (as the seed did);
/// the bank is usable again afterwards.
#[test]
fn bank_reset_empties_but_keeps_bank() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("r", "a", "1"), OK_EMPTY),
            (&put("r", "b", "2"), OK_EMPTY),
            (&put("other", "a", "3"), OK_EMPTY),
            (&bank_reset("r"), "{\"status\": \"ok\", \"data\": {}}\n"),
            (&bank_keys("r"), &ok("[]")),
            (&get("r", "a"), &no_key("a")),
            (BANK_LIST, &ok(&names(&["r", "other"]))),
            (&get("other", "a"), &ok("3")),
            (&bank_reset("r"), OK_EMPTY),
            (&put("r", "c", "4"), OK_EMPTY),
            (&bank_keys("r"), &ok(&names(&["c"]))),
            (BANK_LIST, &ok(&names(&["r", "other"]))),
        ],
    );
}

/// `bank.list` gives the banks in creation order, each once.
#[test]
fn bank_list_creation_order() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (BANK_LIST, &ok("[]")),
            (&put("zeta", "k", "1"), OK_EMPTY),
            (&put("alpha", "k", "1"), OK_EMPTY),
            (&put("mid", "k", "1"), OK_EMPTY),
            (&put("alpha", "k2", "1"), OK_EMPTY),
            (BANK_LIST, &ok(&names(&["zeta", "alpha", "mid"]))),
        ],
    );
}

// ---------------------------------------------------------------------------
// Lifetime and expiry
// ---------------------------------------------------------------------------

/// A fractional lifetime (0.3 s) is honoured: present before, gone after,
/// and never listed once expired.
#[test]
fn float_lifetime_expires() {
    let (_s, mut c) = fresh_no_sweep();
    let start = Instant::now();
    c.check(&put_ttl("b", "k", r#""v""#, "0.3"), OK_EMPTY);
    c.check(&put("b", "perm", "1"), OK_EMPTY);
    c.check(&get("b", "k"), &ok(r#""v""#));
    sleep_until(start, Duration::from_millis(700));
    script(
        &mut c,
        &[
            (&bank_keys("b"), &ok(&names(&["perm"]))),
            (&get("b", "k"), &no_key("k")),
            (&bank_keys("b"), &ok(&names(&["perm"]))),
        ],
    );
}

/// Expired keys are never listed by `bank.keys`, and a second `bank.keys`
/// still answers (the seed listed them once, then crashed the connection);
/// get/touch/getouch/incr of them say the key doesn't exist.
#[test]
fn expired_keys_are_never_listed() {
    let (_s, mut c) = fresh_no_sweep();
    let start = Instant::now();
    c.check(&put("b", "a", "1"), OK_EMPTY);
    c.check(&put_ttl("b", "x", "1", "0.3"), OK_EMPTY);
    c.check(&put_ttl("b", "y", "2", "0.3"), OK_EMPTY);
    c.check(&put("b", "z", "3"), OK_EMPTY);
    sleep_until(start, Duration::from_millis(700));
    script(
        &mut c,
        &[
            (&bank_keys("b"), &ok(&names(&["a", "z"]))),
            (&bank_keys("b"), &ok(&names(&["a", "z"]))),
            (&get("b", "x"), &no_key("x")),
            (&touch("b", "x"), &no_key("x")),
            (&getouch("b", "y"), &no_key("y")),
            (&incr("b", "y", "1"), &no_key("y")),
            (&bank_keys("b"), &ok(&names(&["a", "z"]))),
            (&put("b", "x", "9"), OK_EMPTY),
            (&bank_keys("b"), &ok(&names(&["a", "z", "x"]))),
        ],
    );
}

/// `touch` restarts the entry's original lifetime from now (the seed's
/// sequence scaled to L = 1 s): touched at 0.6L it is alive at 1.2L, while
/// an untouched twin is gone; both are gone at 2L.
#[test]
fn touch_restarts_original_lifetime() {
    let (_s, mut c) = fresh_no_sweep();
    let l = Duration::from_millis(1000);
    let start = Instant::now();
    c.check(&put_ttl("b", "t", r#""touched""#, "1"), OK_EMPTY);
    c.check(&put_ttl("b", "u", r#""untouched""#, "1"), OK_EMPTY);
    sleep_until(start, l.mul_f64(0.6));
    c.check(&touch("b", "t"), OK_EMPTY);
    sleep_until(start, l.mul_f64(1.2));
    c.check(&get("b", "t"), &ok(r#""touched""#));
    c.check(&get("b", "u"), &no_key("u"));
    sleep_until(start, l.mul_f64(2.0));
    c.check(&get("b", "t"), &no_key("t"));
    c.check(&bank_keys("b"), &ok("[]"));
}

/// `getouch` restarts the lifetime too (it is touch + get).
#[test]
fn getouch_restarts_lifetime() {
    let (_s, mut c) = fresh_no_sweep();
    let start = Instant::now();
    c.check(&put_ttl("b", "t", "1", "0.5"), OK_EMPTY);
    sleep_until(start, Duration::from_millis(300));
    c.check(&getouch("b", "t"), &ok("1"));
    sleep_until(start, Duration::from_millis(600));
    c.check(&get("b", "t"), &ok("1"));
    sleep_until(start, Duration::from_millis(1100));
    c.check(&get("b", "t"), &no_key("t"));
}

/// A negative lifetime is already expired: the put answers ok and the key
/// is gone.
#[test]
fn negative_lifetime_is_already_expired() {
    let (_s, mut c) = fresh_no_sweep();
    script(
        &mut c,
        &[
            (&put_ttl("b", "k", "1", "-1"), OK_EMPTY),
            (&get("b", "k"), &no_key("k")),
            (&bank_keys("b"), &ok("[]")),
            (&put("b", "k2", "1"), OK_EMPTY),
            (&put_ttl("b", "k2", "2", "-0.5"), OK_EMPTY),
            (&get("b", "k2"), &no_key("k2")),
        ],
    );
}

/// An absurd lifetime (`1e300`) is just "very far away": the put works,
/// the key is readable, touch works, and the server does not crash.
#[test]
fn huge_lifetime_works() {
    let (s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put_ttl("b", "k", "1", "1e300"), OK_EMPTY),
            (&get("b", "k"), &ok("1")),
            (&touch("b", "k"), OK_EMPTY),
            (&getouch("b", "k"), &ok("1")),
            (&incr("b", "k", "1"), &ok("2.0")),
            (&put_ttl("b", "m", "1", "1.7976931348623157e308"), OK_EMPTY),
            (&get("b", "m"), &ok("1")),
            (&bank_keys("b"), &ok(&names(&["k", "m"]))),
            (PING, PONG),
        ],
    );
    let mut c2 = s.connect();
    c2.check(PING, PONG);
}

/// A lifetime that is not a number (`"5"`, `true`, a list) is answered with
/// `lifetime must be a number` (the seed dropped the connection) and the
/// connection keeps working; nothing is stored.
#[test]
fn non_number_lifetime_is_an_error() {
    let (_s, mut c) = fresh();
    let e = err("lifetime must be a number");
    for bad in [r#""5""#, "true", "[1]", r#"{"s":1}"#] {
        c.check(&put_ttl("b", "k", "1", bad), &e);
        c.check(&get("b", "k"), &no_key("k"));
    }
    c.check(PING, PONG);
}

/// Lifetime `0` and `null` mean "never expires", and a re-put without a
/// lifetime makes an expiring entry permanent (put replaces the whole
/// entry); touch does nothing to a permanent entry.
#[test]
fn zero_null_and_reput_without_lifetime_are_permanent() {
    let (_s, mut c) = fresh();
    let start = Instant::now();
    script(
        &mut c,
        &[
            (&put_ttl("b", "zero", "1", "0"), OK_EMPTY),
            (&put_ttl("b", "null", "2", "null"), OK_EMPTY),
            (&put_ttl("b", "re", r#""old""#, "0.3"), OK_EMPTY),
            (&put("b", "re", r#""new""#), OK_EMPTY),
            (&put_ttl("b", "re0", r#""old""#, "0.3"), OK_EMPTY),
            (&put_ttl("b", "re0", r#""new""#, "0"), OK_EMPTY),
            (&put("b", "perm", "3"), OK_EMPTY),
            (&touch("b", "perm"), OK_EMPTY),
        ],
    );
    sleep_until(start, Duration::from_millis(700));
    script(
        &mut c,
        &[
            (&get("b", "zero"), &ok("1")),
            (&get("b", "null"), &ok("2")),
            (&get("b", "re"), &ok(r#""new""#)),
            (&get("b", "re0"), &ok(r#""new""#)),
            (&get("b", "perm"), &ok("3")),
        ],
    );
}

/// A re-put with a lifetime makes a permanent entry expire.
#[test]
fn reput_with_lifetime_makes_entry_expire() {
    let (_s, mut c) = fresh_no_sweep();
    let start = Instant::now();
    c.check(&put("b", "k", "1"), OK_EMPTY);
    c.check(&put_ttl("b", "k", "2", "0.3"), OK_EMPTY);
    c.check(&get("b", "k"), &ok("2"));
    sleep_until(start, Duration::from_millis(700));
    c.check(&get("b", "k"), &no_key("k"));
}

/// `incr` keeps the entry's deadline: the counter still expires on time.
#[test]
fn incr_keeps_deadline() {
    let (_s, mut c) = fresh_no_sweep();
    let start = Instant::now();
    c.check(&put_ttl("b", "n", "1", "0.4"), OK_EMPTY);
    sleep_until(start, Duration::from_millis(200));
    c.check(&incr("b", "n", "1"), &ok("2.0"));
    sleep_until(start, Duration::from_millis(800));
    c.check(&get("b", "n"), &no_key("n"));
    c.check(&incr("b", "n", "1"), &no_key("n"));
    c.check(&bank_keys("b"), &ok("[]"));
}

/// Lazy expiry is counted in `expired_lazy` (sweep effectively off here).
#[test]
fn lazy_expiry_is_counted() {
    let s = TestServer::start(&["--sweep-interval-ms", "3600000"]);
    let mut c = s.connect();
    let start = Instant::now();
    c.check(&put_ttl("b", "k", "1", "0.2"), OK_EMPTY);
    sleep_until(start, Duration::from_millis(500));
    c.check(&get("b", "k"), &no_key("k"));
    let st = stats(&mut c);
    assert_eq!(stat(&st, "expired_lazy"), 1.0, "stats: {st:?}");
    assert_eq!(stat(&st, "expired_sweep"), 0.0, "stats: {st:?}");
    assert_eq!(stat(&st, "keys"), 0.0, "stats: {st:?}");
}

/// The background sweep removes expired entries nobody touches, so they do
/// not hold memory forever: `keys` drops back and `expired_sweep` counts.
#[test]
fn background_sweep_removes_untouched_expired_keys() {
    let s = TestServer::start(&["--sweep-interval-ms", "20"]);
    let mut c = s.connect();
    c.check(&put("b", "permanent", "1"), OK_EMPTY);
    let mut batch = String::new();
    for i in 0..200 {
        batch.push_str(&put_ttl("b", &format!("t{i}"), "1", "0.3"));
        batch.push('\n');
    }
    c.send(&batch);
    for i in 0..200 {
        c.expect_line(OK_EMPTY, &format!("put t{i}"));
    }
    let mut last = Map::new();
    let done = eventually(Duration::from_secs(10), || {
        last = stats(&mut c);
        // The two counters need not move in the same instant; wait for both.
        stat(&last, "keys") == 1.0 && stat(&last, "expired_sweep") + stat(&last, "expired_lazy") >= 200.0
    });
    assert!(done, "expired keys were never swept; last stats: {last:?}");
    assert_eq!(stat(&last, "expired_sweep"), 200.0, "stats: {last:?}");
    assert_eq!(stat(&last, "expired_lazy"), 0.0, "stats: {last:?}");
    c.check(&bank_keys("b"), &ok(&names(&["permanent"])));
}

// ---------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------

/// `stats` answers one flat object with every documented counter, each a
/// number.
#[test]
fn stats_has_all_fields() {
    let (_s, mut c) = fresh();
    let st = stats(&mut c);
    for f in [
        "uptime_s",
        "connections_current",
        "connections_total",
        "connections_rejected",
        "requests_too_large",
        "bytes_in",
        "bytes_out",
        "requests_inline",
        "ops_put",
        "ops_get",
        "ops_delete",
        "ops_touch",
        "ops_getouch",
        "ops_incr",
        "ops_bank_keys",
        "ops_bank_scan",
        "ops_bank_list",
        "ops_bank_reset",
        "ops_ping",
        "ops_stats",
        "errors",
        "hits",
        "misses",
        "expired_lazy",
        "expired_sweep",
        "keys",
        "banks",
        "value_bytes",
    ] {
        let v = stat(&st, f);
        assert!(v >= 0.0, "{f} is negative: {st:?}");
    }
    for (k, v) in &st {
        assert!(v.is_number(), "stats is not flat: {k} = {v}");
    }
}

/// The counters count: ops per kind, hits/misses of get and getouch,
/// errors, keys/banks, value bytes, and bytes in/out.
#[test]
fn stats_counts_ops() {
    let (_s, mut c) = fresh();
    script(
        &mut c,
        &[
            (&put("b1", "k1", r#""v1""#), OK_EMPTY),
            (&put("b1", "k2", "2"), OK_EMPTY),
            (&put("b2", "k1", "3"), OK_EMPTY),
            (&get("b1", "k1"), &ok(r#""v1""#)),
            (&get("b1", "nope"), &no_key("nope")),
            (&getouch("b1", "k2"), &ok("2")),
            (&getouch("b1", "nope"), &no_key("nope")),
            (&delete("b2", "k1"), OK_EMPTY),
            (&touch("b1", "k1"), OK_EMPTY),
            (&incr("b1", "k2", "1"), &ok("3.0")),
            (&incr("b1", "k2", r#""x""#), &err("The value must be an integer or a float")),
            (&bank_keys("b1"), &ok(&names(&["k1", "k2"]))),
            (&bank_scan("b1", r#","prefix":"k2""#), &ok(r#"{"cursor": 0, "keys": ["k2"]}"#)),
            (BANK_LIST, &ok(&names(&["b1", "b2"]))),
            (PING, PONG),
            (PING, PONG),
            (r#"{"op":"nope"}"#, INVALID_OP),
        ],
    );
    let st = stats(&mut c);
    let expect = [
        ("ops_put", 3.0),
        ("ops_get", 2.0),
        ("ops_getouch", 2.0),
        ("ops_delete", 1.0),
        ("ops_touch", 1.0),
        ("ops_bank_keys", 1.0),
        ("ops_bank_scan", 1.0),
        ("ops_bank_list", 1.0),
        ("ops_bank_reset", 0.0),
        ("ops_ping", 2.0),
        ("hits", 2.0),
        ("misses", 2.0),
        ("errors", 4.0),
        ("keys", 2.0),
        ("banks", 2.0),
        ("connections_current", 1.0),
        ("connections_total", 1.0),
        ("connections_rejected", 0.0),
    ];
    for (name, want) in expect {
        assert_eq!(stat(&st, name), want, "stats field {name}; all: {st:?}");
    }
    // `ops_*` count executed ops: the incr refused at validation (bad delta) counts only in `errors`.
    assert_eq!(stat(&st, "ops_incr"), 1.0, "{st:?}");
    assert!(stat(&st, "ops_stats") >= 1.0, "{st:?}");
    assert!(stat(&st, "bytes_in") > 0.0, "{st:?}");
    assert!(stat(&st, "bytes_out") > 0.0, "{st:?}");
    assert!(stat(&st, "value_bytes") > 0.0, "{st:?}");
    c.check(&bank_reset("b1"), OK_EMPTY);
    let st = stats(&mut c);
    assert_eq!(stat(&st, "keys"), 0.0, "{st:?}");
    assert_eq!(stat(&st, "value_bytes"), 0.0, "{st:?}");
    assert_eq!(stat(&st, "ops_bank_reset"), 1.0, "{st:?}");
    assert_eq!(stat(&st, "banks"), 2.0, "{st:?}");
}

/// `connections_current` follows connects and disconnects, and
/// `connections_total` counts every accepted connection.
#[test]
fn stats_counts_connections() {
    let s = TestServer::start(&[]);
    let mut c = s.connect();
    let mut others: Vec<Conn> = (0..3).map(|_| s.connect()).collect();
    for o in &mut others {
        o.check(PING, PONG);
    }
    let st = stats(&mut c);
    assert_eq!(stat(&st, "connections_current"), 4.0, "{st:?}");
    assert_eq!(stat(&st, "connections_total"), 4.0, "{st:?}");
    drop(others);
    let mut last = Map::new();
    let settled = eventually(Duration::from_secs(5), || {
        last = stats(&mut c);
        stat(&last, "connections_current") == 1.0
    });
    assert!(settled, "closed connections still counted: {last:?}");
    assert_eq!(stat(&last, "connections_total"), 4.0, "{last:?}");
}

// ---------------------------------------------------------------------------
// Pipelining with several workers
// ---------------------------------------------------------------------------

/// The ops and expected replies of one pipelined connection: 2000 mixed
/// puts, gets (of the key just put and of an older one) and incrs, all
/// distinct per connection, so any reordering shows.
fn pipeline_script(conn_id: usize) -> Vec<(String, String)> {
    let bank = format!("p{conn_id}");
    let val = |i: usize| format!(r#""v{conn_id}-{i}""#);
    let mut steps = vec![(put(&bank, "ctr", "0"), OK_EMPTY.to_string())];
    for i in 0..500 {
        let key = format!("k{i}");
        steps.push((put(&bank, &key, &val(i)), OK_EMPTY.to_string()));
        steps.push((get(&bank, &key), ok(&val(i))));
        steps.push((incr(&bank, "ctr", "1"), ok(&pyfloat_int(i as i64 + 1))));
        steps.push((get(&bank, &format!("k{}", i / 2)), ok(&val(i / 2))));
    }
    steps
}

/// Sends the whole script in one write (from a background thread) and
/// checks every reply, in order.
fn run_pipeline(addr: std::net::SocketAddr, conn_id: usize) {
    let steps = pipeline_script(conn_id);
    let mut c = Conn::connect(addr);
    let mut payload = String::new();
    for (op, _) in &steps {
        payload.push_str(op);
        payload.push('\n');
    }
    let writer = c.send_in_background(payload.into_bytes());
    for (n, (op, expected)) in steps.iter().enumerate() {
        let got = c.read_line();
        assert_eq!(&got, expected, "conn {conn_id}: reply #{n} (to {op}) out of order or wrong");
    }
    writer.join().unwrap().expect("pipelined write failed");
}

/// One connection pipelining 2000 mixed ops in a single write to a server
/// with 4 workers gets every reply right and in request order.
#[test]
fn pipelined_replies_in_order_with_workers() {
    let s = TestServer::start(&["--workers", "4"]);
    run_pipeline(s.addr(), 0);
}

/// Several connections pipelining at once (4 workers) each get their own
/// replies, in order.
#[test]
fn pipelined_replies_in_order_on_many_connections() {
    let s = TestServer::start(&["--workers", "4"]);
    let addr = s.addr();
    let handles: Vec<_> = (1..=6).map(|id| thread::spawn(move || run_pipeline(addr, id))).collect();
    for h in handles {
        h.join().expect("a pipelining connection failed");
    }
    let mut c = s.connect();
    c.check(&get("p3", "ctr"), &ok("500.0"));
}
