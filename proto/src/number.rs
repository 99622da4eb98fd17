//! Numbers as the original read them for `incr`.
//!
//! The original passed both the delta and the stored value through Python's `float()`, so JSON numbers,
//! numeric strings (`"2"`, `" -1.0 "`, `"1_000"`, `"1e3"`) and booleans all count as numbers. Unlike the
//! original, bankcache never lets a non-finite number in: JSON has no text for it.

use serde_json::value::RawValue;

/// Why a stored value cannot take part in `incr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotANumber {
    /// A string (or a non-finite number) that Python's `float()` would refuse or that is not finite.
    Text,
    /// A JSON type `float()` rejects with a TypeError naming it, as Python does: `list`, `dict`, `NoneType`.
    Type(&'static str),
}

/// Reads an `incr` delta: a JSON number, a numeric string or a boolean. `None` if it is none of those or
/// not finite.
pub fn delta(raw: &RawValue) -> Option<f64> {
    match scalar(raw.get().as_bytes()) {
        Ok(v) if v.is_finite() => Some(v),
        _ => None,
    }
}

/// Reads a stored JSON value as a number for `incr`.
pub fn stored(value: &[u8]) -> Result<f64, NotANumber> {
    scalar(value).and_then(|v| if v.is_finite() { Ok(v) } else { Err(NotANumber::Text) })
}

fn scalar(json: &[u8]) -> Result<f64, NotANumber> {
    let json = json.trim_ascii();
    match json.first() {
        Some(b'"') => {
            let text: String = serde_json::from_slice(json).map_err(|_| NotANumber::Text)?;
            python_float(&text).ok_or(NotANumber::Text)
        }
        Some(b't') if json == b"true" => Ok(1.0),
        Some(b'f') if json == b"false" => Ok(0.0),
        Some(b'n') => Err(NotANumber::Type("NoneType")),
        Some(b'[') => Err(NotANumber::Type("list")),
        Some(b'{') => Err(NotANumber::Type("dict")),
        Some(_) => std::str::from_utf8(json).ok().and_then(|s| s.parse::<f64>().ok()).ok_or(NotANumber::Text),
        None => Err(NotANumber::Text),
    }
}

/// Parses text as Python's `float()` does: surrounding whitespace allowed, single underscores between
/// digits allowed, `inf`/`nan` spelled any case (the callers then refuse them as not finite).
pub fn python_float(text: &str) -> Option<f64> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    if !t.contains('_') {
        return t.parse().ok();
    }
    let bytes = t.as_bytes();
    let mut cleaned = String::with_capacity(t.len());
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let digit_before = i > 0 && bytes[i - 1].is_ascii_digit();
            let digit_after = bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !(digit_before && digit_after) {
                return None;
            }
        } else {
            cleaned.push(char::from(b));
        }
    }
    cleaned.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn deltas_accept_what_python_float_accepts() {
        assert_eq!(delta(&raw("1")), Some(1.0));
        assert_eq!(delta(&raw("-4.3")), Some(-4.3));
        assert_eq!(delta(&raw("\"2\"")), Some(2.0));
        assert_eq!(delta(&raw("\" -1.0 \"")), Some(-1.0));
        assert_eq!(delta(&raw("\"1e3\"")), Some(1000.0));
        assert_eq!(delta(&raw("\"1_000\"")), Some(1000.0));
        assert_eq!(delta(&raw("true")), Some(1.0));
        assert_eq!(delta(&raw("false")), Some(0.0));
    }

    #[test]
    fn deltas_refuse_non_numbers_and_non_finite() {
        for bad in
            ["\"1a\"", "\"\"", "null", "[1]", "{}", "\"nan\"", "\"inf\"", "1e400", "\"1__0\"", "\"_1\""]
        {
            assert_eq!(delta(&raw(bad)), None, "{bad}");
        }
    }

    #[test]
    fn stored_values() {
        assert_eq!(stored(b"5"), Ok(5.0));
        assert_eq!(stored(b"\"10\""), Ok(10.0));
        assert_eq!(stored(b"true"), Ok(1.0));
        assert_eq!(stored(b"\"abc\""), Err(NotANumber::Text));
        assert_eq!(stored(b"\"NaN\""), Err(NotANumber::Text));
        assert_eq!(stored(b"[1]"), Err(NotANumber::Type("list")));
        assert_eq!(stored(b"{\"a\":1}"), Err(NotANumber::Type("dict")));
        assert_eq!(stored(b"null"), Err(NotANumber::Type("NoneType")));
    }
}
