//! Replies: encoded in the original server's exact bytes, and decoded by clients.
//!
//! The original answered with Python's `json.dumps`: `status` first, `", "` and `": "` separators,
//! non-ASCII escaped as `\uXXXX`, floats in Python's `repr` form (`6.0`, `1e+16`). Clients compared those
//! replies as strings, so everything here writes that form, straight into the connection's output buffer,
//! followed by the `\n` that ends every reply.
//!
//! [`Reply`] is every reply the protocol has; [`Reply::encode`] writes it and [`decode`] reads it back, so
//! the server and the clients share one definition of the envelope, including the one error a client must
//! tell apart: a missing key ([`Reply::Missing`], recognised by [`is_missing`]).

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;

const OK_PREFIX: &[u8] = b"{\"status\": \"ok\", \"data\": ";
const ERROR_PREFIX: &[u8] = b"{\"status\": \"error\", \"message\": ";
/// What follows a base64 value's `data` in its reply.
const BASE64_MARK: &[u8] = b", \"encoding\": \"base64\"";
/// The missing-key message is `Key <key> doesn't exist`.
const MISSING_BEFORE: &str = "Key ";
const MISSING_AFTER: &str = " doesn't exist";

/// One reply, as the protocol writes it.
#[derive(Debug, Clone, Copy)]
pub enum Reply<'a> {
    /// `data` is `{}`: the op was done and has nothing to return.
    Done,
    /// A stored JSON value's text, exactly as stored.
    Json(&'a [u8]),
    /// Stored bytes, sent as base64 and marked with `"encoding": "base64"`.
    Bytes(&'a [u8]),
    /// A number (`incr`'s result), in Python's `repr` form.
    Float(f64),
    /// A string.
    Text(&'a str),
    /// A list of names given as bytes (keys), written as strings.
    Names(&'a [&'a [u8]]),
    /// A page of a `bank.scan`: `{"cursor": <next>, "keys": [...]}`, the keys given as bytes and written as
    /// strings. The cursor is 0 when the scan is done.
    Scan {
        /// Where the next call goes on from (0: done).
        cursor: u64,
        /// The keys of this page.
        keys: &'a [&'a [u8]],
    },
    /// A flat object of counters.
    Counters(&'a [(&'a str, u64)]),
    /// The op's key does not exist: `Key <key> doesn't exist`.
    Missing {
        /// The key, as the request named it.
        key: &'a str,
    },
    /// Any other error, with its message.
    Error(&'a str),
}

impl Reply<'_> {
    /// Writes the reply line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Done => ok_raw(out, b"{}"),
            Reply::Json(text) => ok_raw(out, text),
            Reply::Bytes(bytes) => {
                begin_ok(out);
                out.push(b'"');
                let start = out.len();
                out.resize(start + bytes.len().div_ceil(3) * 4, 0);
                let written = BASE64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
                out.truncate(start + written);
                out.push(b'"');
                out.extend_from_slice(BASE64_MARK);
                end(out);
            }
            Reply::Float(value) => {
                begin_ok(out);
                float(out, *value);
                end(out);
            }
            Reply::Text(text) => {
                begin_ok(out);
                string(out, text);
                end(out);
            }
            Reply::Names(names) => {
                begin_ok(out);
                byte_names(out, names);
                end(out);
            }
            Reply::Scan { cursor, keys } => {
                begin_ok(out);
                out.extend_from_slice(b"{\"cursor\": ");
                uint(out, *cursor);
                out.extend_from_slice(b", \"keys\": ");
                byte_names(out, keys);
                out.push(b'}');
                end(out);
            }
            Reply::Counters(fields) => {
                begin_ok(out);
                counters(out, fields.iter().copied());
                end(out);
            }
            Reply::Missing { key } => error(out, &missing_message(key)),
            Reply::Error(message) => error(out, message),
        }
    }

    /// True for an error reply (the op failed, or its key was missing).
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Missing { .. } | Reply::Error(_))
    }
}

/// The message of the missing-key error for `key` (`Key <key> doesn't exist`), as a client that was told
/// "missing" by a typed result shows it, without writing the protocol's words a second time.
pub fn missing_message(key: &str) -> String {
    let mut message = String::with_capacity(MISSING_BEFORE.len() + key.len() + MISSING_AFTER.len());
    message.push_str(MISSING_BEFORE);
    message.push_str(key);
    message.push_str(MISSING_AFTER);
    message
}

/// Whether an error `message` is the missing-key error for `key`.
pub fn is_missing(message: &str, key: &str) -> bool {
    message.strip_prefix(MISSING_BEFORE).and_then(|m| m.strip_suffix(MISSING_AFTER)) == Some(key)
}

/// A reply line as a client reads it.
#[derive(Debug, Clone)]
pub enum Decoded<'a> {
    /// `data`, as the JSON text the server sent; for a byte value (`base64`), a base64 string.
    Ok {
        /// The `data` field (`null` when absent).
        data: Cow<'a, RawValue>,
        /// The value is bytes, base64-encoded.
        base64: bool,
    },
    /// The server's error message.
    Error(String),
}

/// Why a line is not a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// One reply as it appears on the wire.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default, borrow)]
    encoding: Option<Cow<'a, str>>,
}

/// Reads one reply line (any JSON spacing; the trailing newline is optional).
pub fn decode(line: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let envelope: Envelope<'_> =
        serde_json::from_slice(line).map_err(|e| DecodeError(format!("not a reply: {e}")))?;
    match &*envelope.status {
        "ok" => {
            let base64 = match envelope.encoding.as_deref() {
                None | Some("json") => false,
                Some("base64") => true,
                Some(other) => return Err(DecodeError(format!("unknown encoding {other:?}"))),
            };
            let data = match envelope.data {
                Some(data) => Cow::Borrowed(data),
                None => Cow::Owned(null()),
            };
            Ok(Decoded::Ok { data, base64 })
        }
        "error" => Ok(Decoded::Error(envelope.message.unwrap_or_default())),
        other => Err(DecodeError(format!("unknown status {other:?}"))),
    }
}

fn null() -> Box<RawValue> {
    // `null` is valid JSON.
    RawValue::from_string("null".into()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// A reply line classified without parsing it, for load drivers that read millions of them: it relies on
/// the exact bytes [`Reply::encode`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peek {
    /// An ok reply; `data` is where its data lies in the line, `base64` whether it is a byte value.
    Ok {
        /// The data's byte range in the line.
        data: std::ops::Range<usize>,
        /// The value is bytes, base64-encoded.
        base64: bool,
    },
    /// The missing-key error (of any key).
    Missing,
    /// Any other error.
    Error,
}

/// Classifies one reply line (ending in `\n`) as [`Reply::encode`] writes it; `None` if it is not one.
pub fn peek(line: &[u8]) -> Option<Peek> {
    let body = line.strip_suffix(b"}\n")?;
    if let Some(data) = body.strip_prefix(OK_PREFIX) {
        let (len, base64) = match data.strip_suffix(BASE64_MARK) {
            Some(value) => (value.len(), true),
            None => (data.len(), false),
        };
        return Some(Peek::Ok { data: OK_PREFIX.len()..OK_PREFIX.len() + len, base64 });
    }
    let message = body.strip_prefix(ERROR_PREFIX)?;
    let missing = message.starts_with(b"\"Key ") && message.ends_with(b" doesn't exist\"");
    Some(if missing { Peek::Missing } else { Peek::Error })
}

/// Starts an ok reply; the caller writes the data and then calls [`end`].
pub fn begin_ok(out: &mut Vec<u8>) {
    out.extend_from_slice(OK_PREFIX);
}

/// Ends a reply started with [`begin_ok`].
pub fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(b"}\n");
}

/// Writes a whole ok reply whose data is already JSON text.
pub fn ok_raw(out: &mut Vec<u8>, data: &[u8]) {
    begin_ok(out);
    out.extend_from_slice(data);
    end(out);
}

/// Writes a whole error reply.
pub fn error(out: &mut Vec<u8>, message: &str) {
    out.extend_from_slice(ERROR_PREFIX);
    string(out, message);
    end(out);
}

/// Writes `s` as a JSON string the way Python's `json.dumps` does (`ensure_ascii`).
pub fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let escape: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{8}' => Some(b"\\b"),
            '\u{c}' => Some(b"\\f"),
            ' '..='~' => continue,
            _ => None,
        };
        out.extend_from_slice(&bytes[plain..i]);
        plain = i + c.len_utf8();
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    push_u_escape(out, *unit);
                }
            }
        }
    }
    out.extend_from_slice(&bytes[plain..]);
    out.push(b'"');
}

fn push_u_escape(out: &mut Vec<u8>, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

/// Writes a list of strings as Python writes a JSON array: `["a", "b"]`.
pub fn string_array<'a>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'a str>) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        string(out, item);
    }
    out.push(b']');
}

/// Writes names given as bytes (keys) as a JSON array of strings, as Python writes it: `["a", "b"]`.
fn byte_names(out: &mut Vec<u8>, names: &[&[u8]]) {
    out.push(b'[');
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        string(out, &String::from_utf8_lossy(name));
    }
    out.push(b']');
}

/// Writes a finite float the way Python's `repr` does: `6.0`, `0.1`, `1e+16`, `1.5e-05`.
///
/// Rust's `{:e}` gives the shortest digits that round-trip, as Python does; only the layout differs.
/// Python switches to exponent form when the decimal exponent is below -4 or at least 16.
pub fn float(out: &mut Vec<u8>, value: f64) {
    debug_assert!(value.is_finite(), "non-finite floats are not JSON");
    let mut sci = String::with_capacity(32);
    let _ = write!(sci, "{value:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push(b'-');
    }
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                out.extend_from_slice(digits.as_bytes());
                out.extend(std::iter::repeat_n(b'0', int_len - digits.len()));
                out.extend_from_slice(b".0");
            } else {
                out.extend_from_slice(&digits.as_bytes()[..int_len]);
                out.push(b'.');
                out.extend_from_slice(&digits.as_bytes()[int_len..]);
            }
        } else {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-exp - 1) as usize));
            out.extend_from_slice(digits.as_bytes());
        }
    } else {
        out.push(digits.as_bytes()[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits.as_bytes()[1..]);
        }
        let exp_text = format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
        out.extend_from_slice(exp_text.as_bytes());
    }
}

/// Writes an unsigned integer.
pub fn uint(out: &mut Vec<u8>, value: u64) {
    let mut s = String::with_capacity(20);
    let _ = write!(s, "{value}");
    out.extend_from_slice(s.as_bytes());
}

/// Writes a flat object of named counters as Python would: `{"a": 1, "b": 2}`.
pub fn counters<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = (&'a str, u64)>) {
    out.push(b'{');
    for (i, (name, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        string(out, name);
        out.extend_from_slice(b": ");
        uint(out, value);
    }
    out.push(b'}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn envelopes_match_the_seed_bytes() {
        assert_eq!(text(|o| ok_raw(o, b"{}")), "{\"status\": \"ok\", \"data\": {}}\n");
        assert_eq!(
            text(|o| error(o, "The value for key key3 isn't a number")),
            "{\"status\": \"error\", \"message\": \"The value for key key3 isn't a number\"}\n"
        );
    }

    #[test]
    fn strings_escape_like_python_ensure_ascii() {
        assert_eq!(text(|o| string(o, "plain")), "\"plain\"");
        assert_eq!(text(|o| string(o, "a\"b\\c\n\t\r\u{8}\u{c}")), r#""a\"b\\c\n\t\r\b\f""#);
        assert_eq!(text(|o| string(o, "\u{1}\u{7f}")), r#""\u0001\u007f""#);
        assert_eq!(text(|o| string(o, "ключ")), r#""\u043a\u043b\u044e\u0447""#);
        assert_eq!(text(|o| string(o, "😀")), r#""\ud83d\ude00""#);
    }

    #[test]
    fn arrays_and_counters_use_python_separators() {
        assert_eq!(text(|o| string_array(o, ["a", "b"])), r#"["a", "b"]"#);
        assert_eq!(text(|o| string_array(o, [])), "[]");
        assert_eq!(text(|o| counters(o, [("a", 1), ("b", 22)])), r#"{"a": 1, "b": 22}"#);
    }

    #[test]
    fn floats_match_python_repr() {
        let cases: &[(f64, &str)] = &[
            (6.0, "6.0"),
            (2.5, "2.5"),
            (-1.0, "-1.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e15, "1000000000000000.0"),
            (1234567890123456.0, "1234567890123456.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123.456, "123.456"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (1e100, "1e+100"),
        ];
        for (value, want) in cases {
            assert_eq!(text(|o| float(o, *value)), *want, "repr of {value:e}");
        }
    }

    fn line(reply: Reply<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        reply.encode(&mut out);
        out
    }

    #[test]
    fn every_reply_decodes_and_peeks_as_written() {
        let why = "Invalid json";
        let names: [&[u8]; 2] = [b"a", "\u{43a}".as_bytes()];
        let cases: Vec<(Reply<'_>, &str, bool, Option<Peek>)> = vec![
            (Reply::Done, "{}", false, None),
            (Reply::Json(br#"{"a" : 1}"#), r#"{"a" : 1}"#, false, None),
            (Reply::Bytes(&[0, 1, 2, 255]), r#""AAEC/w==""#, true, None),
            (Reply::Float(6.0), "6.0", false, None),
            (Reply::Text("pong"), r#""pong""#, false, None),
            (Reply::Names(&names), r#"["a", "\u043a"]"#, false, None),
            (
                Reply::Scan { cursor: 4096, keys: &names },
                r#"{"cursor": 4096, "keys": ["a", "\u043a"]}"#,
                false,
                None,
            ),
            (Reply::Scan { cursor: 0, keys: &[] }, r#"{"cursor": 0, "keys": []}"#, false, None),
            (Reply::Counters(&[("keys", 3)]), r#"{"keys": 3}"#, false, None),
            (Reply::Missing { key: "k\"1" }, "", false, Some(Peek::Missing)),
            (Reply::Error(why), "", false, Some(Peek::Error)),
        ];
        for (reply, data_text, is_base64, peeked) in cases {
            let bytes = line(reply);
            assert_eq!(bytes.last(), Some(&b'\n'));
            match decode(&bytes).unwrap() {
                Decoded::Ok { data, base64 } => {
                    assert_eq!((data.get(), base64), (data_text, is_base64), "{reply:?}");
                    let Some(Peek::Ok { data, base64 }) = peek(&bytes) else { panic!("{reply:?}") };
                    assert_eq!((&bytes[data], base64), (data_text.as_bytes(), is_base64));
                }
                Decoded::Error(message) => {
                    assert!(reply.is_error());
                    assert_eq!(peek(&bytes), peeked, "{reply:?}");
                    if let Reply::Missing { key } = reply {
                        assert!(is_missing(&message, key), "{message}");
                        assert!(!is_missing(&message, "k"), "{message}");
                    } else {
                        assert_eq!(message, why);
                    }
                }
            }
        }
    }

    #[test]
    fn missing_message_is_what_the_server_sends_and_is_missing_accepts() {
        for key in ["k", "", "key:00000001", "a b", "\u{43a}\"q", "Key x doesn't exist"] {
            let message = missing_message(key);
            assert!(is_missing(&message, key), "{message}");
            assert!(!is_missing(&message, "other"), "{message}");
            let Decoded::Error(sent) = decode(&line(Reply::Missing { key })).unwrap() else {
                panic!("{key}")
            };
            assert_eq!(sent, message);
        }
        assert_eq!(missing_message("nobody"), "Key nobody doesn't exist");
    }

    #[test]
    fn decode_refuses_what_is_not_a_reply() {
        for bad in [&b"nope"[..], b"{}", br#"{"status": "maybe"}"#, br#"{"status": "ok", "encoding": "hex"}"#]
        {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(peek(b"{\"status\": \"ok\"").is_none());
        let Decoded::Ok { data, .. } = decode(br#"{"status":"ok"}"#).unwrap() else { panic!() };
        assert_eq!(data.get(), "null");
    }
}
