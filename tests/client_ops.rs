//! `bankcache_client::Client`: every op, typed values, bytes, errors, options, against an in-process server.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bankcache_client::{Client, Error};
use common::in_process::InProcess;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    customer: String,
    lines: Vec<Line>,
    note: Option<String>,
    tags: BTreeMap<String, bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Line {
    sku: String,
    quantity: u32,
    price: f64,
}

fn order() -> Order {
    Order {
        id: 7,
        customer: "Zoë \"Z\" Ünal".into(),
        lines: vec![
            Line { sku: "a-1".into(), quantity: 2, price: 9.5 },
            Line { sku: "b\n2".into(), quantity: 1, price: 0.25 },
        ],
        note: None,
        tags: [("gift".to_string(), true), ("rush".to_string(), false)].into(),
    }
}

/// Structs, enums, strings, numbers, null, nested maps: each comes back as it went in.
#[test]
fn typed_values_round_trip() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    let o = order();
    c.put("orders", "7", &o, None).unwrap();
    assert_eq!(c.get::<Order>("orders", "7").unwrap(), Some(o.clone()));
    c.put("t", "str", "hello \u{1F600}", None).unwrap();
    assert_eq!(c.get::<String>("t", "str").unwrap().as_deref(), Some("hello \u{1F600}"));
    c.put("t", "neg", &-12i64, None).unwrap();
    assert_eq!(c.get::<i64>("t", "neg").unwrap(), Some(-12));
    c.put("t", "u64", &u64::MAX, None).unwrap();
    assert_eq!(c.get::<u64>("t", "u64").unwrap(), Some(u64::MAX), "no float round trip on the way");
    c.put("t", "null", &(), None).unwrap();
    assert_eq!(c.get::<Option<u8>>("t", "null").unwrap(), Some(None), "a stored null is a value, not a miss");
    c.put("t", "list", &vec![1, 2, 3], None).unwrap();
    assert_eq!(c.get::<Vec<u8>>("t", "list").unwrap(), Some(vec![1, 2, 3]));
    c.put("t", "tuple", &("a", 1, true), None).unwrap();
    assert_eq!(c.get::<(String, i32, bool)>("t", "tuple").unwrap(), Some(("a".into(), 1, true)));
    // A key and bank with characters the seed client could not send.
    c.put("b\"q", "k\"ey\\", &json!({"x": [1, {"y": null}]}), None).unwrap();
    assert_eq!(c.get::<serde_json::Value>("b\"q", "k\"ey\\").unwrap(), Some(json!({"x": [1, {"y": null}]})));
    // A value of another shape is a protocol error, and the connection stays usable.
    match c.get::<u32>("orders", "7") {
        Err(e @ Error::Protocol(_)) => assert!(!e.is_retryable()),
        other => panic!("expected a protocol error, got {other:?}"),
    }
    assert!(c.is_connected());
    c.ping().unwrap();
}

/// Bytes go base64 on the wire and come back as bytes; the two models meet as documented.
#[test]
fn bytes_round_trip() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    let all: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    c.put_bytes("files", "all", &all, None).unwrap();
    assert_eq!(c.get_bytes("files", "all").unwrap(), Some(all));
    c.put_bytes("files", "empty", b"", None).unwrap();
    assert_eq!(c.get_bytes("files", "empty").unwrap(), Some(Vec::new()));
    assert_eq!(c.get_bytes("files", "none").unwrap(), None);
    // get_bytes of a JSON value: its JSON text exactly as stored.
    c.request(&json!({"op": "put", "bank": "files", "key": "j", "value": {"a": 1}})).unwrap();
    assert_eq!(c.get_bytes("files", "j").unwrap().unwrap(), br#"{"a":1}"#);
    // get::<T> of a byte value: the bytes parsed as JSON, or a protocol error when they are not.
    c.put_bytes("files", "json-bytes", br#"{"sku":"z","quantity":3,"price":1.5}"#, None).unwrap();
    assert_eq!(
        c.get::<Line>("files", "json-bytes").unwrap(),
        Some(Line { sku: "z".into(), quantity: 3, price: 1.5 })
    );
    c.put_bytes("files", "png", b"\x89PNG\r\n", None).unwrap();
    assert!(matches!(c.get::<serde_json::Value>("files", "png"), Err(Error::Protocol(_))));
    // request() shows the wire: the base64 text.
    assert_eq!(c.request(&json!({"op": "get", "bank": "files", "key": "png"})).unwrap(), json!("iVBORw0K"));
    // incr accepts a byte value whose text is a number.
    c.put_bytes("files", "n", b"41", None).unwrap();
    assert_eq!(c.incr("files", "n", 1.0).unwrap(), 42.0);
}

/// `bank_scan` pages by prefix with the server's cursor; `scan_keys` pages for the caller, even through
/// pages with no match; a pipeline queues a scan; a bad count is the server's error.
#[test]
fn bank_scan_and_scan_keys() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    assert_eq!(c.bank_scan("nope", 0, "", 10).unwrap(), (0, Vec::new()));
    for i in 0..2500 {
        c.put("b", &format!("item:{i}"), &i, None).unwrap();
    }
    for i in 0..5 {
        c.put("b", &format!("user:{i}"), &i, None).unwrap();
    }
    // Slots are filled in put order here: the first page is the first three items.
    assert_eq!(
        c.bank_scan("b", 0, "item:", 3).unwrap(),
        (3, vec!["item:0".into(), "item:1".into(), "item:2".into()])
    );
    // Ten slots visited per key asked: no user key in the first 10 slots, so an empty page and a cursor.
    assert_eq!(c.bank_scan("b", 0, "user:", 1).unwrap(), (10, Vec::new()));

    let users: Vec<String> = c.scan_keys("b", "user:").collect::<Result<_, _>>().unwrap();
    assert_eq!(users, (0..5).map(|i| format!("user:{i}")).collect::<Vec<_>>());
    let mut items: Vec<String> = c.scan_keys("b", "item:").map(Result::unwrap).collect();
    assert_eq!(items.len(), 2500);
    items.sort();
    items.dedup();
    assert_eq!(items.len(), 2500, "each key once");
    assert_eq!(c.scan_keys("b", "").count(), 2505);
    assert_eq!(c.scan_keys("b", "zzz").count(), 0);

    let replies = c.pipeline().bank_scan("b", 2500, "user:", 2).bank_scan("b", 0, "", 0).run().unwrap();
    assert_eq!(
        replies[0],
        bankcache_client::Reply::Value(json!({"cursor": 2502, "keys": ["user:0", "user:1"]}))
    );
    assert_eq!(replies[1], bankcache_client::Reply::Error("count must be a positive integer".into()));
    match c.bank_scan("b", 0, "", 0) {
        Err(Error::Server(m)) => assert_eq!(m, "count must be a positive integer"),
        other => panic!("a zero count: {other:?}"),
    }
}

/// Every op of the protocol, and the seed client's names for them.
#[test]
fn every_op_and_the_seed_aliases() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    c.ping().unwrap();
    assert_eq!(c.bank_list().unwrap(), Vec::<String>::new());
    c.put("b1", "k1", "v1", None).unwrap();
    c.entry_set("b1", "k2", &2, Some(30.0)).unwrap();
    c.put("b2", "k", &true, None).unwrap();
    assert_eq!(c.entry_get::<String>("b1", "k1").unwrap().as_deref(), Some("v1"));
    assert_eq!(c.getouch::<i32>("b1", "k2").unwrap(), Some(2));
    assert_eq!(c.getouch::<i32>("b1", "zz").unwrap(), None);
    assert_eq!(c.bank_keys("b1").unwrap(), ["k1", "k2"]);
    assert_eq!(c.bank_keys("nope").unwrap(), Vec::<String>::new());
    assert_eq!(c.bank_list().unwrap(), ["b1", "b2"]);
    assert_eq!(c.entry_incr("b1", "k2", 3.0).unwrap(), 5.0);
    assert_eq!(c.incr("b1", "k2", -0.5).unwrap(), 4.5);
    match c.incr("b1", "missing", 1.0) {
        Err(Error::Server(m)) => assert_eq!(m, "Key missing doesn't exist"),
        other => panic!("incr of a missing key: {other:?}"),
    }
    match c.incr("b1", "k1", 1.0) {
        Err(e @ Error::Server(_)) => {
            assert_eq!(e.server_message(), Some("The value for key k1 isn't a number"));
            assert!(!e.is_retryable());
        }
        other => panic!("incr of a string: {other:?}"),
    }
    assert!(c.entry_touch("b1", "k2").unwrap());
    assert!(!c.touch("b1", "gone").unwrap());
    assert!(c.entry_delete("b1", "k1").unwrap());
    assert!(!c.delete("b1", "k1").unwrap());
    assert_eq!(c.get::<String>("b1", "k1").unwrap(), None);
    c.bank_reset("b1").unwrap();
    assert!(c.bank_keys("b1").unwrap().is_empty());
    assert_eq!(c.bank_list().unwrap(), ["b1", "b2"]);
    let stats = c.stats().unwrap();
    assert_eq!(stats["ops_put"], 3);
    assert_eq!(stats["ops_incr"], 4);
    assert_eq!(stats["ops_getouch"], 2);
    assert_eq!(stats["ops_ping"], 1);
    // request() with any op.
    assert_eq!(c.request(&json!({"op": "ping"})).unwrap(), json!("pong"));
    match c.request(&json!({"op": "nope"})) {
        Err(Error::Server(m)) => assert_eq!(m, "Invalid operation"),
        other => panic!("{other:?}"),
    }
}

/// Lifetimes: a put with a lifetime expires, touch and getouch restart it.
#[test]
fn lifetimes() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    c.put("l", "short", &1, Some(0.3)).unwrap();
    c.put("l", "forever", &1, None).unwrap();
    c.put("l", "gone", &1, Some(-1.0)).unwrap();
    assert_eq!(c.get::<i32>("l", "gone").unwrap(), None);
    std::thread::sleep(Duration::from_millis(200));
    assert!(c.touch("l", "short").unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(c.getouch::<i32>("l", "short").unwrap(), Some(1), "touch restarted the lifetime");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.get::<i32>("l", "short").unwrap(), None);
    assert_eq!(c.get::<i32>("l", "forever").unwrap(), Some(1));
}

/// The builder's options, and errors for a server that is not there.
#[test]
fn builder_and_connection_errors() {
    let server = InProcess::start();
    let mut c = Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .read_timeout(Duration::from_secs(5))
        .write_timeout(Duration::from_secs(5))
        .nodelay(false)
        .connect(server.addr)
        .unwrap();
    c.put("b", "k", &1, None).unwrap();
    assert_eq!(c.get::<i32>("b", "k").unwrap(), Some(1));
    assert_eq!(c.addr(), server.addr);

    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    match Client::connect(free) {
        Err(e @ Error::Connect(_)) => {
            assert!(e.is_retryable());
            assert!(e.to_string().starts_with("cannot connect: "), "{e}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(matches!(Client::connect("no-such-host.invalid:1"), Err(Error::Connect(_))));
    assert!(Error::Io(std::io::ErrorKind::BrokenPipe.into()).is_retryable());
    assert!(!Error::Protocol("x".into()).is_retryable());
}
