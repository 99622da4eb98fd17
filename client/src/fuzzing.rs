//! The check the `client_reply` fuzz target runs, written once here so that the server's
//! `tests/fuzz_corpus.rs` runs exactly the same check on every saved input in plain `cargo test` (see
//! `bankcache_proto::fuzzing`). Not part of the API.

use std::io::{self, BufReader};

use bankcache_proto::fuzzing::Input;
use bankcache_proto::reply::{self, Reply as Wire};
use serde_json::Value;

use crate::{decode_bytes, decode_typed, incr_result, read_replies, scan, Error, RawReply, Reply};

/// How reading a stream of replies ended, without the replies themselves.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Read,
    CutShort,
    NotAReply,
}

/// The client's reply reading, over a stream from the input: the first byte picks how many replies to
/// read, the second the read buffer's size (so lines straddle refills), the next eight a float for
/// `incr`, and the rest is what the "server" sent.
///
/// - Reading `count` replies gives them, or [`Error::Io`] (`UnexpectedEof`) at a stream that ends before
///   the `count`-th newline, or [`Error::Protocol`] at the first line that is not a reply, whichever comes
///   first: never a panic, and never a reply the line does not hold.
/// - Every way a client call reads a reply (`get`, `get_bytes`, `incr`, `bank_keys`, `bank_scan`,
///   `stats`, a pipeline's [`Reply`]) gives a value or a typed error, never a panic.
/// - An `incr` result, and a number in a pipeline's reply, read as exactly the float the server wrote.
pub fn replies(data: &[u8]) {
    let mut input = Input::new(data);
    let count = usize::from(input.u8() % 8) + 1;
    let capacity = usize::from(input.u8() % 64) + 1;
    let float = f64::from_bits(input.u64());
    let stream = input.rest();

    let lines: Vec<&[u8]> = stream.split_inclusive(|&b| b == b'\n').collect();
    let expected = (0..count)
        .map(|i| match lines.get(i) {
            Some(line) if line.ends_with(b"\n") => reply::decode(line).is_ok().then_some(Outcome::Read),
            _ => Some(Outcome::CutShort),
        })
        .find(|o| *o != Some(Outcome::Read))
        .map_or(Outcome::Read, |o| o.unwrap_or(Outcome::NotAReply));
    let mut reader = BufReader::with_capacity(capacity, stream);
    let mut line = Vec::new();
    let got = match read_replies(&mut reader, count, &mut line) {
        Ok(replies) => {
            assert_eq!(replies.len(), count);
            Outcome::Read
        }
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Outcome::CutShort,
        Err(Error::Protocol(_)) => Outcome::NotAReply,
        Err(e) => panic!("reading replies from memory failed with {e:?}"),
    };
    assert_eq!(got, expected, "reading {count} replies");

    for line in lines.iter().filter(|l| l.ends_with(b"\n")) {
        every_reading(line);
    }

    if float.is_finite() {
        let mut line = Vec::new();
        Wire::Float(float).encode(&mut line);
        let Ok(RawReply::Ok { data, .. }) = RawReply::parse(&line) else {
            panic!("the reply {:?} did not parse", String::from_utf8_lossy(&line))
        };
        match incr_result(&data) {
            Ok(value) => assert_eq!(value.to_bits(), float.to_bits(), "incr wrote {float:e}, read {value:e}"),
            Err(e) => panic!("incr's reply {} refused: {e}", data.get()),
        }
        match RawReply::parse(&line).and_then(|raw| Reply::from_raw(raw, None)) {
            Ok(Reply::Value(value)) => {
                let read = value.as_f64().map(f64::to_bits);
                assert_eq!(read, Some(float.to_bits()), "a pipeline read {float:e} as {value}");
            }
            other => panic!("a pipeline read {float:e} as {other:?}"),
        }
    }
}

/// Reads one reply line every way a client call does; each must answer or refuse, never panic.
fn every_reading(line: &[u8]) {
    let raw = || RawReply::parse(line);
    if raw().is_err() {
        return;
    }
    for key in [None, Some("k")] {
        if let Ok(reply) = raw().and_then(|raw| Reply::from_raw(raw, key)) {
            let _ = reply.clone().decode::<Value>();
            let _ = reply.into_bytes();
        }
    }
    let _ = raw().and_then(scan::scan_page);
    if let Ok(RawReply::Ok { data, base64 }) = raw() {
        let _ = decode_typed::<Value>(&data, base64);
        let _ = decode_typed::<Vec<String>>(&data, base64);
        let _ = decode_typed::<String>(&data, base64);
        let _ = decode_typed::<serde_json::Map<String, Value>>(&data, base64);
        let _ = decode_bytes(&data, base64);
        let _ = incr_result(&data);
    }
}
