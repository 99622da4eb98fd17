//! `bankcache_client::Pipeline`: many ops in one write, replies in order, against an in-process server.

mod common;

use std::borrow::Cow;

use bankcache_client::proto::Value;
use bankcache_client::{Client, Error, Op, Reply};
use common::in_process::InProcess;
use serde_json::json;

/// 1000 mixed ops in one pipeline: every reply in the order of its op.
#[test]
fn thousand_ops_in_order() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    let mut p = c.pipeline();
    for i in 0..250 {
        p.put("p", &format!("k{i}"), &i, None)
            .get("p", &format!("k{i}"))
            .incr("p", &format!("k{i}"), 0.5)
            .get("p", &format!("absent{i}"));
    }
    assert_eq!(p.len(), 1000);
    let replies = p.run().unwrap();
    assert!(p.is_empty(), "run empties the pipeline");
    assert_eq!(replies.len(), 1000);
    for i in 0..250 {
        let r = &replies[i * 4..i * 4 + 4];
        assert_eq!(r[0], Reply::Value(json!({})), "put {i}");
        assert_eq!(r[1], Reply::Value(json!(i)), "get {i}");
        assert_eq!(r[2], Reply::Value(json!(i as f64 + 0.5)), "incr {i}");
        assert_eq!(r[3], Reply::Missing, "get absent{i}");
    }
    // The connection is still in step afterwards.
    assert_eq!(c.get::<f64>("p", "k249").unwrap(), Some(249.5));
    assert_eq!(c.stats().unwrap()["ops_get"], 501);
}

/// Every kind of op in a pipeline, and what each reply says.
#[test]
fn every_op_and_reply_kind() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    let replies = c
        .pipeline()
        .ping()
        .put("b", "k", &json!({"a": 1}), Some(60.0))
        .put_bytes("b", "bin", &[0, 1, 2, 255], None)
        .get("b", "bin")
        .getouch("b", "k")
        .touch("b", "k")
        .touch("b", "nope")
        .incr("b", "k", 1.0)
        .incr("b", "nope", 1.0)
        .bank_keys("b")
        .bank_list()
        .delete("b", "bin")
        .delete("b", "bin")
        .op(&json!({"op": "bogus"}))
        .bank_reset("b")
        .get("b", "k")
        .stats()
        .run()
        .unwrap();
    assert_eq!(replies.len(), 17);
    assert_eq!(replies[0], Reply::Value(json!("pong")));
    assert_eq!(replies[1], Reply::Value(json!({})));
    assert_eq!(replies[2], Reply::Value(json!({})));
    assert_eq!(replies[3], Reply::Bytes(vec![0, 1, 2, 255]));
    assert_eq!(replies[4], Reply::Value(json!({"a": 1})));
    assert_eq!(replies[5], Reply::Value(json!({})));
    assert_eq!(replies[6], Reply::Missing);
    assert_eq!(
        replies[7],
        Reply::Error("float() argument must be a string or a real number, not 'dict'".into())
    );
    assert_eq!(replies[8], Reply::Missing);
    assert_eq!(replies[9], Reply::Value(json!(["k", "bin"])));
    assert_eq!(replies[10], Reply::Value(json!(["b"])));
    assert_eq!(replies[11], Reply::Value(json!({})));
    assert_eq!(replies[12], Reply::Missing);
    assert_eq!(replies[13], Reply::Error("Invalid operation".into()));
    assert!(!replies[13].is_ok());
    assert_eq!(replies[14], Reply::Value(json!({})));
    assert_eq!(replies[15], Reply::Missing);
    assert!(matches!(&replies[16], Reply::Value(v) if v["ops_put"] == 2));

    // Reply's conversions mirror Client::get and get_bytes.
    assert_eq!(replies[4].clone().decode::<serde_json::Value>().unwrap(), Some(json!({"a": 1})));
    assert_eq!(replies[4].clone().into_bytes().unwrap(), Some(br#"{"a":1}"#.to_vec()));
    assert_eq!(replies[3].clone().into_bytes().unwrap(), Some(vec![0, 1, 2, 255]));
    assert_eq!(replies[6].clone().decode::<i32>().unwrap(), None);
    assert!(matches!(replies[13].clone().decode::<i32>(), Err(Error::Server(m)) if m == "Invalid operation"));

    // An empty pipeline sends nothing.
    assert!(c.pipeline().run().unwrap().is_empty());
}

/// Ops built as `Op` (for a caller that picks the op at run time): `Client::send` answers each as the same
/// op in a pipeline does, a missing key and a refusal included, and neither is an `Err`.
#[test]
fn typed_ops_by_send_and_push_op() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    let text = |s: &str| Value::Json(Cow::Owned(s.as_bytes().to_vec()));
    let ops = [
        Op::Put {
            bank: "b".into(),
            key: "k\"1".into(),
            value: text(r#"{"z": 1, "a": [true]}"#),
            lifetime: None,
        },
        Op::Put {
            bank: "b".into(),
            key: "bin".into(),
            value: Value::Bytes(Cow::Borrowed(b"\xff\x00")),
            lifetime: Some(60.0),
        },
        Op::Get { bank: "b".into(), key: "k\"1".into() },
        Op::GetTouch { bank: "b".into(), key: "bin".into() },
        Op::Get { bank: "b".into(), key: "nope".into() },
        Op::Incr { bank: "b".into(), key: "nope".into(), delta: 1.0 },
        Op::Incr { bank: "b".into(), key: "k\"1".into(), delta: 1.0 },
        Op::Delete { bank: "b".into(), key: "nope".into() },
        Op::Touch { bank: "b".into(), key: "bin".into() },
        Op::Incr { bank: "b".into(), key: "k\"1".into(), delta: f64::NAN },
        Op::BankKeys { bank: "b".into() },
        Op::BankList,
        Op::Ping,
    ];
    let expected = [
        Reply::Value(json!({})),
        Reply::Value(json!({})),
        Reply::Value(json!({"z": 1, "a": [true]})),
        Reply::Bytes(vec![0xff, 0]),
        Reply::Missing,
        Reply::Missing,
        Reply::Error("float() argument must be a string or a real number, not 'dict'".into()),
        Reply::Missing,
        Reply::Value(json!({})),
        Reply::Error("The value must be an integer or a float".into()),
        Reply::Value(json!(["k\"1", "bin"])),
        Reply::Value(json!(["b"])),
        Reply::Value(json!("pong")),
    ];
    let one_by_one: Vec<Reply> = ops.iter().map(|op| c.send(op).unwrap()).collect();
    assert_eq!(one_by_one, expected);
    // The JSON text of a put is stored as it was given, spacing included.
    assert_eq!(c.get_bytes("b", "k\"1").unwrap().unwrap(), br#"{"z": 1, "a": [true]}"#);
    let mut pipeline = c.pipeline();
    for op in &ops {
        pipeline.push_op(op);
    }
    assert_eq!(pipeline.run().unwrap(), expected);
    assert!(matches!(c.send(&Op::Stats).unwrap(), Reply::Value(v) if v["ops_ping"] == 2));
}

/// A pipeline far larger than the socket buffers in both directions (about 40 MB each way) does not
/// deadlock: the ops are written while the replies are read.
#[test]
fn big_pipeline_does_not_deadlock() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    let value = "x".repeat(200_000);
    let mut p = c.pipeline();
    for i in 0..200 {
        p.put("big", &format!("k{i}"), &value, None);
    }
    for i in 0..200 {
        p.get("big", &format!("k{i}"));
    }
    let replies = p.run().unwrap();
    assert_eq!(replies.len(), 400);
    assert!(replies[..200].iter().all(|r| *r == Reply::Value(json!({}))));
    assert!(replies[200..].iter().all(|r| *r == Reply::Value(json!(value))));
    // And a second one on the same connection.
    let mut p = c.pipeline();
    for i in 0..200 {
        p.get("big", &format!("k{i}"));
    }
    assert_eq!(p.run().unwrap().len(), 200);
}

/// A value that cannot be serialized fails the run before anything is sent.
#[test]
fn serialization_error_fails_the_run() {
    let server = InProcess::start();
    let mut c = Client::connect(server.addr).unwrap();
    let mut bad = std::collections::HashMap::new();
    bad.insert((1, 2), 3); // a map with non-string keys is not JSON
    let result = c.pipeline().put("b", "ok", &1, None).put("b", "bad", &bad, None).run();
    assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
    assert_eq!(c.get::<i32>("b", "ok").unwrap(), None, "nothing was sent");
}
