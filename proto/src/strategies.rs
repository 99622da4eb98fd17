//! proptest strategies for ops, shared by the property tests of `op.rs` (encode, then parse) and
//! `frame.rs` (split, then parse).

use std::borrow::Cow;

use proptest::prelude::*;
use serde::Serialize as _;

use crate::op::{Op, Token, Value};

/// A JSON value's text as a client may send it: compact, or laid out with tabs and raw carriage returns
/// between its tokens (JSON whitespace, which a request line may hold; only a newline ends it). Strings
/// hold any characters, `\r` and `\n` among them (escaped, as JSON writes them).
pub fn json_value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".*".prop_map(serde_json::Value::from),
        "[a\r\n\"\\\\]{0,8}".prop_map(serde_json::Value::from),
    ];
    let tree = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".*", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    (tree, any::<bool>()).prop_map(|(v, spaced)| {
        if !spaced {
            return serde_json::to_vec(&v).unwrap();
        }
        // Pretty-printed with tabs, then every line break (never inside a string: strings escape theirs)
        // made a carriage return.
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut out,
            serde_json::ser::PrettyFormatter::with_indent(b"\t"),
        );
        v.serialize(&mut ser).unwrap();
        out.iter().map(|&b| if b == b'\n' { b'\r' } else { b }).collect()
    })
}

/// A large value: a JSON string of up to 64 KiB, mostly of one character.
pub fn large_value() -> impl Strategy<Value = Vec<u8>> {
    (1usize..64 * 1024, "[^\n]{0,4}")
        .prop_map(|(len, tail)| serde_json::to_vec(&format!("{}{tail}", "x".repeat(len))).unwrap())
}

/// A bank, key or prefix: any characters (`\r`, quotes, backslashes and non-ASCII among them).
fn name() -> impl Strategy<Value = Cow<'static, str>> {
    prop_oneof![".{0,12}", "[\r\t\"\\\\ék]{0,6}"].prop_map(Cow::Owned)
}

/// Any op, with values of every kind (JSON text, bytes, sometimes large).
pub fn op() -> impl Strategy<Value = Op<'static>> {
    let value = prop_oneof![
        8 => json_value().prop_map(|v| Value::Json(Cow::Owned(v))),
        4 => prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| Value::Bytes(Cow::Owned(b))),
        1 => large_value().prop_map(|v| Value::Json(Cow::Owned(v))),
    ];
    let lifetime = prop::option::of(any::<f64>().prop_filter("finite", |f| f.is_finite()));
    let delta = any::<f64>().prop_filter("finite", |f| f.is_finite());
    prop_oneof![
        (name(), name(), value, lifetime).prop_map(|(bank, key, value, lifetime)| Op::Put {
            bank,
            key,
            value,
            lifetime
        }),
        (name(), name()).prop_map(|(bank, key)| Op::Get { bank, key }),
        (name(), name()).prop_map(|(bank, key)| Op::Delete { bank, key }),
        (name(), name()).prop_map(|(bank, key)| Op::Touch { bank, key }),
        (name(), name()).prop_map(|(bank, key)| Op::GetTouch { bank, key }),
        (name(), name(), delta).prop_map(|(bank, key, delta)| Op::Incr { bank, key, delta }),
        name().prop_map(|bank| Op::BankKeys { bank }),
        (name(), any::<u64>(), name(), 1..=u64::MAX).prop_map(|(bank, cursor, prefix, count)| Op::BankScan {
            bank,
            cursor,
            prefix,
            count
        }),
        name().prop_map(|bank| Op::BankReset { bank }),
        Just(Op::BankList),
        Just(Op::Ping),
        Just(Op::Stats),
        prop_oneof![".{0,40}", "[\r\t\"\\\\é]{0,6}"].prop_map(|t| Op::Auth { token: Token(Cow::Owned(t)) }),
    ]
}
