//! Parses one request frame into an [`Op`].
//!
//! Fields are borrowed from the frame: names without escapes and the value's JSON text are never copied.
//! The stored value is the exact text the client sent, so a `get` answers it byte for byte. Every way a
//! request can be wrong is a [`RequestError`] whose `Display` is the reply's exact message.

use std::borrow::Cow;
use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::number;

/// A bank or key name. A JSON number stands for its decimal text as written.
pub type Name<'a> = Cow<'a, str>;

/// A value to store: JSON text as the client sent it, or raw bytes (HTTP bodies, base64 in JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    /// The value's JSON text, borrowed from the request.
    Json(&'a [u8]),
    /// Raw bytes, decoded from base64.
    Bytes(Vec<u8>),
}

impl Value<'_> {
    /// The bytes to store.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Value::Json(text) => text,
            Value::Bytes(bytes) => bytes,
        }
    }

    /// True for raw bytes.
    pub fn is_bytes(&self) -> bool {
        matches!(self, Value::Bytes(_))
    }
}

/// One decoded request.
#[derive(Debug, PartialEq)]
pub enum Op<'a> {
    /// Store `value` under `key`, for `lifetime` seconds if given: the request's JSON text of the value, or
    /// with `"encoding": "base64"` the bytes the base64 string stands for.
    Put { bank: Name<'a>, key: Name<'a>, value: Value<'a>, lifetime: Option<f64> },
    /// Read a value.
    Get { bank: Name<'a>, key: Name<'a> },
    /// Remove a key.
    Delete { bank: Name<'a>, key: Name<'a> },
    /// Restart a key's lifetime.
    Touch { bank: Name<'a>, key: Name<'a> },
    /// Restart a key's lifetime and read its value (the original's undocumented `getouch`).
    GetTouch { bank: Name<'a>, key: Name<'a> },
    /// Add `delta` to a numeric value.
    Incr { bank: Name<'a>, key: Name<'a>, delta: f64 },
    /// List a bank's live keys.
    BankKeys { bank: Name<'a> },
    /// List the banks.
    BankList,
    /// Empty a bank.
    BankReset { bank: Name<'a> },
    /// Liveness check.
    Ping,
    /// Server counters.
    Stats,
}

impl Op<'_> {
    /// The op's kind, for counters and logs.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Put { .. } => OpKind::Put,
            Op::Get { .. } => OpKind::Get,
            Op::Delete { .. } => OpKind::Delete,
            Op::Touch { .. } => OpKind::Touch,
            Op::GetTouch { .. } => OpKind::GetTouch,
            Op::Incr { .. } => OpKind::Incr,
            Op::BankKeys { .. } => OpKind::BankKeys,
            Op::BankList => OpKind::BankList,
            Op::BankReset { .. } => OpKind::BankReset,
            Op::Ping => OpKind::Ping,
            Op::Stats => OpKind::Stats,
        }
    }
}

/// The kinds of op, in the order `stats` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Put,
    Get,
    Delete,
    Touch,
    GetTouch,
    Incr,
    BankKeys,
    BankList,
    BankReset,
    Ping,
    Stats,
}

impl OpKind {
    /// Every kind, in `stats` order.
    pub const ALL: [OpKind; 11] = [
        OpKind::Put,
        OpKind::Get,
        OpKind::Delete,
        OpKind::Touch,
        OpKind::GetTouch,
        OpKind::Incr,
        OpKind::BankKeys,
        OpKind::BankList,
        OpKind::BankReset,
        OpKind::Ping,
        OpKind::Stats,
    ];

    /// The op's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Put => "put",
            OpKind::Get => "get",
            OpKind::Delete => "delete",
            OpKind::Touch => "touch",
            OpKind::GetTouch => "getouch",
            OpKind::Incr => "incr",
            OpKind::BankKeys => "bank.keys",
            OpKind::BankList => "bank.list",
            OpKind::BankReset => "bank.reset",
            OpKind::Ping => "ping",
            OpKind::Stats => "stats",
        }
    }

    fn from_name(name: &str) -> Option<OpKind> {
        OpKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// Size limits checked while parsing, so an oversized name or value is refused before it is stored.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest key or bank name, in bytes.
    pub max_key_bytes: usize,
    /// Longest value (its JSON text), in bytes.
    pub max_value_bytes: usize,
}

/// A request that cannot be executed. `Display` gives the exact reply message.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestError {
    /// Not JSON, invalid UTF-8, or trailing bytes after the value.
    InvalidJson,
    /// Valid JSON that is not an object, or an object without `op`.
    OpRequired,
    /// `op` names no operation.
    InvalidOperation,
    /// A required field is missing; the text lists the op's fields as the original did.
    Missing(&'static str),
    /// `bank` is neither a string nor a number.
    BadBank,
    /// `key` is neither a string nor a number.
    BadKey,
    /// `lifetime` is not a number.
    BadLifetime,
    /// The `incr` delta is not a finite number.
    BadDelta,
    /// A key longer than `max_key_bytes`.
    KeyTooLong { len: usize, max: usize },
    /// A bank name longer than `max_key_bytes`.
    BankTooLong { len: usize, max: usize },
    /// A value longer than `max_value_bytes`.
    ValueTooLarge { len: usize, max: usize },
    /// `encoding` is neither `"json"` nor `"base64"`.
    BadEncoding,
    /// A base64 value that is not a string of valid base64.
    BadBase64,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::InvalidJson => f.write_str("Invalid json"),
            RequestError::OpRequired => f.write_str("Operation required. Field op in json is required"),
            RequestError::InvalidOperation => f.write_str("Invalid operation"),
            RequestError::Missing(text) => f.write_str(text),
            RequestError::BadBank => f.write_str("bank must be a string or a number"),
            RequestError::BadKey => f.write_str("key must be a string or a number"),
            RequestError::BadLifetime => f.write_str("lifetime must be a number"),
            RequestError::BadDelta => f.write_str("The value must be an integer or a float"),
            RequestError::KeyTooLong { len, max } => {
                write!(f, "Key too long: {len} bytes, max_key_bytes is {max}")
            }
            RequestError::BankTooLong { len, max } => {
                write!(f, "Bank name too long: {len} bytes, max_key_bytes is {max}")
            }
            RequestError::ValueTooLarge { len, max } => {
                write!(f, "Value too large: {len} bytes, max_value_bytes is {max}")
            }
            RequestError::BadEncoding => f.write_str("encoding must be \"json\" or \"base64\""),
            RequestError::BadBase64 => f.write_str("The value is not a base64 string"),
        }
    }
}

impl std::error::Error for RequestError {}

const NEED_PUT: RequestError = RequestError::Missing("bank, key and value are required");
const NEED_KEY: RequestError = RequestError::Missing("bank and key are required");
const NEED_INCR: RequestError = RequestError::Missing("bank, key, value are required");
const NEED_BANK: RequestError = RequestError::Missing("bank are required");

/// Parses one frame (one top-level JSON value) into an op.
pub fn parse<'a>(frame: &'a [u8], limits: &Limits) -> Result<Op<'a>, RequestError> {
    // Validating the whole frame first also covers strings in fields that are skipped, not decoded.
    let json = std::str::from_utf8(frame).map_err(|_| RequestError::InvalidJson)?;
    let fields: Fields<'a> = serde_json::from_str(json).map_err(|_| RequestError::InvalidJson)?;
    if !fields.object {
        return Err(RequestError::OpRequired);
    }
    let op = fields.op.ok_or(RequestError::OpRequired)?;
    let kind = text(op).and_then(|name| OpKind::from_name(&name)).ok_or(RequestError::InvalidOperation)?;

    let bank = |missing: RequestError| -> Result<Name<'a>, RequestError> {
        let raw = fields.bank.ok_or(missing)?;
        let name = name(raw).ok_or(RequestError::BadBank)?;
        if name.len() > limits.max_key_bytes {
            return Err(RequestError::BankTooLong { len: name.len(), max: limits.max_key_bytes });
        }
        Ok(name)
    };
    let key = |missing: RequestError| -> Result<Name<'a>, RequestError> {
        let raw = fields.key.ok_or(missing)?;
        let name = name(raw).ok_or(RequestError::BadKey)?;
        if name.len() > limits.max_key_bytes {
            return Err(RequestError::KeyTooLong { len: name.len(), max: limits.max_key_bytes });
        }
        Ok(name)
    };
    let bank_key = |missing: RequestError| -> Result<(Name<'a>, Name<'a>), RequestError> {
        if fields.bank.is_none() || fields.key.is_none() {
            return Err(missing);
        }
        Ok((bank(missing.clone())?, key(missing)?))
    };

    Ok(match kind {
        OpKind::Put => {
            let value = fields.value.ok_or(NEED_PUT)?;
            let (bank, key) = bank_key(NEED_PUT)?;
            let value = match fields.encoding.map(text) {
                None => Value::Json(value.get().as_bytes()),
                Some(Some(e)) if e == "json" => Value::Json(value.get().as_bytes()),
                Some(Some(e)) if e == "base64" => {
                    let encoded = text(value).ok_or(RequestError::BadBase64)?;
                    Value::Bytes(BASE64.decode(encoded.as_bytes()).map_err(|_| RequestError::BadBase64)?)
                }
                Some(_) => return Err(RequestError::BadEncoding),
            };
            let len = value.bytes().len();
            if len > limits.max_value_bytes {
                return Err(RequestError::ValueTooLarge { len, max: limits.max_value_bytes });
            }
            let lifetime = match fields.lifetime {
                None => None,
                Some(raw) if raw.get() == "null" => None,
                Some(raw) => Some(lifetime(raw).ok_or(RequestError::BadLifetime)?),
            };
            Op::Put { bank, key, value, lifetime }
        }
        OpKind::Get => {
            let (bank, key) = bank_key(NEED_KEY)?;
            Op::Get { bank, key }
        }
        OpKind::Delete => {
            let (bank, key) = bank_key(NEED_KEY)?;
            Op::Delete { bank, key }
        }
        OpKind::Touch => {
            let (bank, key) = bank_key(NEED_KEY)?;
            Op::Touch { bank, key }
        }
        OpKind::GetTouch => {
            let (bank, key) = bank_key(NEED_KEY)?;
            Op::GetTouch { bank, key }
        }
        OpKind::Incr => {
            let delta = fields.value.ok_or(NEED_INCR)?;
            let (bank, key) = bank_key(NEED_INCR)?;
            let delta = number::delta(delta).ok_or(RequestError::BadDelta)?;
            Op::Incr { bank, key, delta }
        }
        OpKind::BankKeys => Op::BankKeys { bank: bank(NEED_BANK)? },
        OpKind::BankReset => Op::BankReset { bank: bank(NEED_BANK)? },
        OpKind::BankList => Op::BankList,
        OpKind::Ping => Op::Ping,
        OpKind::Stats => Op::Stats,
    })
}

/// A JSON string's text, borrowed when it has no escapes.
fn text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let json = raw.get();
    if !json.starts_with('"') {
        return None;
    }
    match serde_json::from_str::<&str>(json) {
        Ok(s) => Some(Cow::Borrowed(s)),
        Err(_) => serde_json::from_str::<String>(json).ok().map(Cow::Owned),
    }
}

/// A bank or key: a string, or a number standing for its text as written.
fn name(raw: &RawValue) -> Option<Cow<'_, str>> {
    let json = raw.get();
    match json.as_bytes().first() {
        Some(b'"') => text(raw),
        Some(b'-' | b'0'..=b'9') => Some(Cow::Borrowed(json)),
        _ => None,
    }
}

fn lifetime(raw: &RawValue) -> Option<f64> {
    let json = raw.get();
    match json.as_bytes().first() {
        // JSON number syntax is a subset of what `f64::from_str` takes; 1e400 saturates to infinity.
        Some(b'-' | b'0'..=b'9') => json.parse().ok(),
        _ => None,
    }
}

/// The fields bankcache reads from a request; every other field is skipped without being decoded.
#[derive(Default)]
struct Fields<'a> {
    object: bool,
    op: Option<&'a RawValue>,
    bank: Option<&'a RawValue>,
    key: Option<&'a RawValue>,
    value: Option<&'a RawValue>,
    lifetime: Option<&'a RawValue>,
    encoding: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Op,
    Bank,
    Key,
    Value,
    Lifetime,
    Encoding,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldsVisitor)
    }
}

/// Accepts any JSON value so that syntax is always checked to the end; only an object yields fields.
/// A repeated field keeps its last value, as Python's `json.loads` does.
struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields { object: true, ..Fields::default() };
        while let Some(field) = map.next_key::<Field>()? {
            let slot = match field {
                Field::Op => &mut fields.op,
                Field::Bank => &mut fields.bank,
                Field::Key => &mut fields.key,
                Field::Value => &mut fields.value,
                Field::Lifetime => &mut fields.lifetime,
                Field::Encoding => &mut fields.encoding,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value()?);
        }
        Ok(fields)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Fields::default())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Fields::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_key_bytes: 16, max_value_bytes: 32 };

    fn parse_str(s: &str) -> Result<Op<'_>, RequestError> {
        parse(s.as_bytes(), &LIMITS)
    }

    fn err(s: &str) -> String {
        parse_str(s).unwrap_err().to_string()
    }

    #[test]
    fn put_borrows_the_value_text() {
        let op =
            parse_str(r#"{"op":"put","bank":"b","key":"k","value": {"a" : [1, 2]},"lifetime":1.5}"#).unwrap();
        assert_eq!(
            op,
            Op::Put {
                bank: "b".into(),
                key: "k".into(),
                value: Value::Json(br#"{"a" : [1, 2]}"#),
                lifetime: Some(1.5)
            }
        );
    }

    #[test]
    fn numbers_stand_for_their_text() {
        let op = parse_str(r#"{"op":"get","bank":2,"key":-1.50}"#).unwrap();
        assert_eq!(op, Op::Get { bank: "2".into(), key: "-1.50".into() });
    }

    #[test]
    fn escaped_names_are_decoded() {
        let op = parse_str(r#"{"op":"get","bank":"a\"b","key":"\u043a"}"#).unwrap();
        assert_eq!(op, Op::Get { bank: "a\"b".into(), key: "к".into() });
    }

    #[test]
    fn seed_error_texts() {
        assert_eq!(err("{nope"), "Invalid json");
        assert_eq!(err("{\"op\":\"ping\"} x"), "Invalid json");
        assert_eq!(err("[1,2]"), "Operation required. Field op in json is required");
        assert_eq!(err("\"s\""), "Operation required. Field op in json is required");
        assert_eq!(err("42"), "Operation required. Field op in json is required");
        assert_eq!(err("{\"bank\":\"x\"}"), "Operation required. Field op in json is required");
        assert_eq!(err("{\"op\":\"PUT\"}"), "Invalid operation");
        assert_eq!(err("{\"op\":5}"), "Invalid operation");
        assert_eq!(err("{\"op\":\"put\",\"bank\":\"b\",\"key\":\"k\"}"), "bank, key and value are required");
        assert_eq!(err("{\"op\":\"get\",\"bank\":\"b\"}"), "bank and key are required");
        assert_eq!(err("{\"op\":\"incr\",\"bank\":\"b\",\"key\":\"k\"}"), "bank, key, value are required");
        assert_eq!(err("{\"op\":\"bank.keys\"}"), "bank are required");
        assert_eq!(
            err("{\"op\":\"incr\",\"bank\":\"b\",\"key\":\"k\",\"value\":\"1a\"}"),
            "The value must be an integer or a float"
        );
    }

    #[test]
    fn wrong_types_are_named() {
        assert_eq!(err(r#"{"op":"get","bank":[1],"key":"k"}"#), "bank must be a string or a number");
        assert_eq!(err(r#"{"op":"get","bank":"b","key":{"a":1}}"#), "key must be a string or a number");
        assert_eq!(err(r#"{"op":"get","bank":"b","key":null}"#), "key must be a string or a number");
        assert_eq!(err(r#"{"op":"get","bank":true,"key":"k"}"#), "bank must be a string or a number");
        assert_eq!(
            err(r#"{"op":"put","bank":"b","key":"k","value":1,"lifetime":"5"}"#),
            "lifetime must be a number"
        );
    }

    #[test]
    fn null_lifetime_means_none_and_huge_ones_parse() {
        let op = parse_str(r#"{"op":"put","bank":"b","key":"k","value":1,"lifetime":null}"#).unwrap();
        assert!(matches!(op, Op::Put { lifetime: None, .. }));
        let op = parse_str(r#"{"op":"put","bank":"b","key":"k","value":1,"lifetime":1e400}"#).unwrap();
        assert!(matches!(op, Op::Put { lifetime: Some(l), .. } if l.is_infinite()));
    }

    #[test]
    fn limits() {
        assert_eq!(
            err(r#"{"op":"get","bank":"b","key":"12345678901234567"}"#),
            "Key too long: 17 bytes, max_key_bytes is 16"
        );
        assert_eq!(
            err(r#"{"op":"bank.keys","bank":"12345678901234567"}"#),
            "Bank name too long: 17 bytes, max_key_bytes is 16"
        );
        let at_limit = format!(r#"{{"op":"put","bank":"b","key":"k","value":"{}"}}"#, "x".repeat(30));
        assert!(parse_str(&at_limit).is_ok());
        let over = format!(r#"{{"op":"put","bank":"b","key":"k","value":"{}"}}"#, "x".repeat(31));
        assert_eq!(err(&over), "Value too large: 33 bytes, max_value_bytes is 32");
    }

    #[test]
    fn base64_values_are_decoded_to_bytes() {
        let op =
            parse_str(r#"{"op":"put","bank":"b","key":"k","value":"AAEC/w==","encoding":"base64"}"#).unwrap();
        assert!(matches!(op, Op::Put { value: Value::Bytes(ref b), .. } if b == &[0, 1, 2, 255]));
        let op = parse_str(r#"{"op":"put","bank":"b","key":"k","value":[1],"encoding":"json"}"#).unwrap();
        assert!(matches!(op, Op::Put { value: Value::Json(b"[1]"), .. }));
        assert_eq!(
            err(r#"{"op":"put","bank":"b","key":"k","value":"!!","encoding":"base64"}"#),
            "The value is not a base64 string"
        );
        assert_eq!(
            err(r#"{"op":"put","bank":"b","key":"k","value":1,"encoding":"base64"}"#),
            "The value is not a base64 string"
        );
        assert_eq!(
            err(r#"{"op":"put","bank":"b","key":"k","value":1,"encoding":"hex"}"#),
            "encoding must be \"json\" or \"base64\""
        );
        // The limit applies to the decoded bytes.
        let big = format!(
            r#"{{"op":"put","bank":"b","key":"k","value":"{}","encoding":"base64"}}"#,
            "A".repeat(44)
        );
        assert_eq!(err(&big), "Value too large: 33 bytes, max_value_bytes is 32");
    }

    #[test]
    fn repeated_fields_keep_the_last() {
        let op = parse_str(r#"{"op":"get","op":"ping"}"#).unwrap();
        assert_eq!(op, Op::Ping);
    }

    #[test]
    fn invalid_utf8_and_control_characters_are_invalid_json() {
        assert_eq!(
            parse(b"{\"op\":\"get\",\"bank\":\"\xff\",\"key\":\"k\"}", &LIMITS),
            Err(RequestError::InvalidJson)
        );
        assert_eq!(
            parse(b"{\"op\":\"get\",\"bank\":\"a\x01\",\"key\":\"k\"}", &LIMITS),
            Err(RequestError::InvalidJson)
        );
    }

    #[test]
    fn deep_nesting_is_refused_or_skipped_without_overflow() {
        let mut deep = "[".repeat(100_000);
        deep.push_str(&"]".repeat(100_000));
        let frame = format!(r#"{{"op":"ping","x":{deep}}}"#);
        // Either answer is fine; what matters is that parsing returns.
        let _ = parse(frame.as_bytes(), &LIMITS);
        let _ = parse(deep.as_bytes(), &LIMITS);
    }
}
