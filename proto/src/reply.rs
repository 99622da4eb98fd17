//! Encodes replies in the original server's exact bytes.
//!
//! The original answered with Python's `json.dumps`: `status` first, `", "` and `": "` separators,
//! non-ASCII escaped as `\uXXXX`, floats in Python's `repr` form (`6.0`, `1e+16`). Clients compared those
//! replies as strings, so everything here writes that form, straight into the connection's output buffer,
//! followed by the `\n` that ends every reply.

use std::fmt::Write as _;

const OK_PREFIX: &[u8] = b"{\"status\": \"ok\", \"data\": ";
const ERROR_PREFIX: &[u8] = b"{\"status\": \"error\", \"message\": ";

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
}
