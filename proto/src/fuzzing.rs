//! The checks the fuzz targets run (`fuzz/`, with `cargo fuzz`), written once here so that
//! `tests/fuzz_corpus.rs` runs exactly the same checks on every saved input and crash, in plain
//! `cargo test`. Not part of the API: hidden from the docs, and free to change with the fuzzers.
//!
//! Each check takes arbitrary bytes. It returns normally when the decoder behaved: it answered or refused
//! the input with a typed error and kept the properties stated on the check. It panics (an assertion, or
//! the decoder's own panic) when it did not, which is what libFuzzer reports as a crash.

use crate::frame::{Ending, Split, Splitter};
use crate::op::{self, Limits};
use crate::reply::{self, Decoded, Peek, Reply};

/// Fuzz bytes read as structured input: never fails, so any input drives a check. Past the end every
/// number reads as 0 and every slice as empty.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Input over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    /// True once every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A slice of at most `max` bytes, its length given by the next byte.
    pub fn short(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u8()) % (max + 1);
        self.bytes(n)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// What the caller of the splitter sees, in order: a request (absolute offsets), and the `\n` its reply
/// ends with. A frame that ended a line ([`Ending::Line`]) is a request then a line end; a line end that
/// came late ([`Split::LineEnd`]) is a line end on its own. Whatever the reads, the replies written from
/// these are the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Request(usize, usize),
    LineEnd,
}

/// What splitting a stream found: the events, whether it stopped at a request over the limit, and the
/// request left open at the end of the stream (what [`Splitter::finish`] hands on).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Framing {
    events: Vec<Event>,
    too_large: bool,
    open: Option<(usize, usize)>,
}

impl Framing {
    fn frames(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.events.iter().filter_map(|e| match *e {
            Event::Request(start, end) => Some((start, end)),
            Event::LineEnd => None,
        })
    }
}

/// JSON framing ([`Splitter`]): the first byte picks the size limit (tiny or 1 MiB), the second how the
/// stream is cut into reads, the rest is the stream.
///
/// - The splitter agrees with a byte-at-a-time model of the rules in `frame.rs` (which has none of the
///   splitter's `memchr` skipping): same requests, same line ends for their replies, same refusal, same
///   open request at the end.
/// - It finds the same whatever reads the stream arrives in (every byte a read, or reads of sizes drawn
///   from the input) and wherever the caller cuts its buffer with [`Splitter::rebase`], as the reactor
///   does: a reply answered bare whose line end comes in a later read gets it then ([`Split::LineEnd`]),
///   so the replies are the same bytes whatever the reads.
/// - Frames are in order, never overlap, never hold a newline, never start with whitespace, and only
///   whitespace lies between them.
pub fn frame(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let max_request = if mode & 0x80 == 0 { usize::from(mode) + 1 } else { 1 << 20 };
    let seed = input.u8();
    let stream = input.rest();

    let model = frames_model(stream, max_request);
    let whole = frames_fed(stream, max_request, |_| usize::MAX, |_| false);
    assert_eq!(whole, model, "the splitter disagrees with the model");
    let bytewise = frames_fed(stream, max_request, |_| 1, |i| i % 3 == 0);
    assert_eq!(bytewise, model, "fed a byte at a time");
    let sizes = [1, 2, 3, 5, 8, 13, 64, 4096];
    let chunked = frames_fed(
        stream,
        max_request,
        |i| sizes[(usize::from(seed) + i) % sizes.len()],
        |i| (usize::from(seed) >> (i % 8)) & 1 == 1,
    );
    assert_eq!(chunked, model, "fed in reads of varied sizes");

    let mut last = 0;
    for (start, end) in model.frames() {
        assert!(last <= start && start < end && end <= stream.len(), "frame {start}..{end} after {last}");
        assert!(stream[last..start].iter().all(|b| b" \t\r\n".contains(b)), "non-space between frames");
        let frame = &stream[start..end];
        assert!(!frame.contains(&b'\n'), "a frame holds a newline");
        assert!(!b" \t\r\n".contains(&frame[0]), "a frame starts with whitespace");
        last = end;
    }
}

/// Splits `stream` arriving in reads of `read_len(i)` bytes (the `i`-th read), cutting the consumed
/// front off the buffer after the reads `rebase_after(i)` picks.
fn frames_fed(
    stream: &[u8],
    max_request: usize,
    read_len: impl Fn(usize) -> usize,
    rebase_after: impl Fn(usize) -> bool,
) -> Framing {
    let mut splitter = Splitter::new(max_request);
    let mut buf: Vec<u8> = Vec::new();
    let (mut base, mut fed, mut reads) = (0usize, 0usize, 0usize);
    let mut events = Vec::new();
    // Whether the last request was answered bare with nothing after it yet: only then may a line end
    // come late.
    let mut bare = false;
    while fed < stream.len() {
        let n = read_len(reads).max(1).min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            match splitter.next(&buf) {
                Split::Frame { start, end, ending } => {
                    events.push(Event::Request(base + start, base + end));
                    bare = ending == Ending::Bare;
                    if !bare {
                        events.push(Event::LineEnd);
                    }
                }
                Split::LineEnd => {
                    assert!(bare, "a late line end, but no reply was answered bare: {events:?}");
                    bare = false;
                    events.push(Event::LineEnd);
                }
                Split::NeedMore => break,
                Split::TooLarge => return Framing { events, too_large: true, open: None },
            }
        }
        if rebase_after(reads) {
            let cut = splitter.keep_from();
            assert!(cut <= buf.len(), "keep_from {cut} past the buffer's {} bytes", buf.len());
            buf.drain(..cut);
            splitter.rebase(cut);
            base += cut;
        }
        reads += 1;
    }
    let open = splitter.finish(&buf).map(|(start, end)| (base + start, base + end));
    Framing { events, too_large: false, open }
}

/// The framing rules of `frame.rs`, one byte at a time, as plainly as they can be written: a request is
/// a value (an object, an array or a string) or a line; a newline ends whatever is open; a value that
/// closes is followed by a line end when blanks (space, tab, CR) then a newline come next.
fn frames_model(stream: &[u8], max_request: usize) -> Framing {
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Idle,
        Line,
        TopString { escape: bool },
        Nested { depth: u64, in_string: bool, escape: bool },
    }
    let mut events = Vec::new();
    let (mut mode, mut start) = (Mode::Idle, 0);
    let mut i = 0;
    while i < stream.len() {
        let b = stream[i];
        // Where the open request ends (exclusive), and whether a line end follows it (and where).
        let closed: Option<(usize, Option<usize>)> = match (mode, b) {
            (Mode::Idle, b' ' | b'\t' | b'\r' | b'\n') => None,
            (Mode::Idle, b'{' | b'[') => {
                (mode, start) = (Mode::Nested { depth: 1, in_string: false, escape: false }, i);
                None
            }
            (Mode::Idle, b'"') => {
                (mode, start) = (Mode::TopString { escape: false }, i);
                None
            }
            (Mode::Idle, _) => {
                (mode, start) = (Mode::Line, i);
                None
            }
            // A newline ends whatever is open; the frame stops before it, and the reply is a line.
            (_, b'\n') => Some((i, Some(i))),
            (Mode::Line, _) => None,
            (Mode::TopString { escape: true }, _) => {
                mode = Mode::TopString { escape: false };
                None
            }
            (Mode::TopString { escape: false }, b'\\') => {
                mode = Mode::TopString { escape: true };
                None
            }
            (Mode::TopString { escape: false }, b'"') => Some((i + 1, line_end_after(stream, i + 1))),
            (Mode::TopString { .. }, _) => None,
            (Mode::Nested { depth, in_string: true, escape }, _) => {
                let (in_string, escape) = match (escape, b) {
                    (true, _) => (true, false),
                    (false, b'\\') => (true, true),
                    (false, b'"') => (false, false),
                    (false, _) => (true, false),
                };
                mode = Mode::Nested { depth, in_string, escape };
                None
            }
            (Mode::Nested { depth, in_string: false, .. }, _) => {
                let (depth, in_string) = match b {
                    b'"' => (depth, true),
                    b'{' | b'[' => (depth + 1, false),
                    b'}' | b']' => (depth - 1, false),
                    _ => (depth, false),
                };
                mode = Mode::Nested { depth, in_string, escape: false };
                (depth == 0).then(|| (i + 1, line_end_after(stream, i + 1)))
            }
        };
        if let Some((end, line_end)) = closed {
            if end - start > max_request {
                return Framing { events, too_large: true, open: None };
            }
            events.push(Event::Request(start, end));
            mode = Mode::Idle;
            if let Some(at) = line_end {
                events.push(Event::LineEnd);
                i = at;
            }
        }
        i += 1;
    }
    if mode == Mode::Idle {
        return Framing { events, too_large: false, open: None };
    }
    if stream.len() - start > max_request {
        return Framing { events, too_large: true, open: None };
    }
    Framing { events, too_large: false, open: Some((start, stream.len())) }
}

/// Where the newline is when only blanks (space, tab, CR) lie between `from` and it.
fn line_end_after(stream: &[u8], from: usize) -> Option<usize> {
    let blanks = stream[from..].iter().take_while(|b| b" \t\r".contains(b)).count();
    (stream.get(from + blanks) == Some(&b'\n')).then_some(from + blanks)
}

/// Limits small enough that fuzz inputs reach every "too long" error.
const SMALL: Limits = Limits { max_key_bytes: 8, max_value_bytes: 32 };
/// Limits no fuzz input reaches.
const LARGE: Limits = Limits { max_key_bytes: 1 << 16, max_value_bytes: 1 << 20 };

/// Op parsing ([`op::parse`]) of the input as one frame, under small and large limits.
///
/// - It gives an op or a [`op::RequestError`] with a reply message, never a panic.
/// - An op that parses passes [`op::Op::check`] (every front refuses the same requests), and survives
///   [`op::Op::into_owned`] unchanged.
/// - Its encoding ([`op::Op::encode`], what clients send) is one line that the splitter takes as exactly
///   one frame, and that parses back to the same op (with a JSON value's line breaks made spaces).
pub fn op(data: &[u8]) {
    for limits in [SMALL, LARGE] {
        let parsed = match op::parse(data, &limits) {
            Ok(parsed) => parsed,
            Err(e) => {
                assert!(!e.to_string().is_empty(), "an error without a message: {e:?}");
                continue;
            }
        };
        assert_eq!(parsed.check(&limits), Ok(()), "parsed, then refused by check: {parsed:?}");
        assert_eq!(parsed.clone().into_owned(), parsed);

        let mut line = Vec::new();
        parsed.encode(&mut line);
        assert_eq!(line.pop(), Some(b'\n'), "an encoded op ends its line");
        assert!(!line.contains(&b'\n'), "the encoding of {parsed:?} spans lines: {:?}", lossy(&line));
        let mut framed = line.clone();
        framed.push(b'\n');
        let mut splitter = Splitter::new(framed.len());
        let one = Split::Frame { start: 0, end: line.len(), ending: Ending::Line };
        assert_eq!(splitter.next(&framed), one, "{:?}", lossy(&line));
        assert_eq!(splitter.next(&framed), Split::NeedMore);
        // The same op, but for line breaks in a JSON value, which the encoding makes spaces (the server
        // never parses a frame with a line break: the splitter cuts there).
        let mut expected = parsed.clone();
        if let op::Op::Put { value: op::Value::Json(text), .. } = &mut expected {
            if text.contains(&b'\n') {
                *text = text.iter().map(|&b| if b == b'\n' { b' ' } else { b }).collect::<Vec<u8>>().into();
            }
        }
        assert_eq!(op::parse(&line, &limits), Ok(expected), "encoded as {:?}", lossy(&line));
    }
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Reply decoding: the input as a raw reply line, then as the recipe of a [`Reply`] to encode.
///
/// - [`reply::decode`] and [`reply::peek`] take any bytes without a panic; a range `peek` gives lies in
///   the line.
/// - Every reply [`Reply::encode`] writes is one line that `decode` reads back as written (the data's
///   exact text, or the exact message) and that `peek` classifies as `decode` does.
pub fn reply(data: &[u8]) {
    let _ = reply::decode(data);
    if let Some(Peek::Ok { data: range, .. }) = reply::peek(data) {
        assert!(range.start <= range.end && range.end <= data.len(), "peek range {range:?}");
    }

    let mut input = Input::new(data);
    let kind = input.u8() % 10;
    let mut names_storage: Vec<Vec<u8>> = Vec::new();
    let count = usize::from(input.u8() % 5);
    for _ in 0..count {
        names_storage.push(input.short(12).to_vec());
    }
    let names: Vec<&[u8]> = names_storage.iter().map(Vec::as_slice).collect();
    let number = input.u64();
    let raw = input.rest();
    let text = String::from_utf8_lossy(raw);
    // A JSON value as a `put` stores it: the value's own text (a `RawValue`, without the whitespace around
    // it) when the bytes are JSON without a newline (a request never spans lines), else a JSON string.
    let json = match serde_json::from_slice::<&serde_json::value::RawValue>(raw) {
        Ok(value) if !raw.contains(&b'\n') => value.get().as_bytes().to_vec(),
        _ => serde_json::to_vec(&text).unwrap_or_else(|_| b"null".to_vec()),
    };
    let float = Some(f64::from_bits(number)).filter(|f| f.is_finite()).unwrap_or(0.0);
    let mut counters: Vec<(String, u64)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let name = String::from_utf8_lossy(name).into_owned();
        if !counters.iter().any(|(n, _)| *n == name) {
            counters.push((name, number.rotate_left(i as u32)));
        }
    }
    let counter_refs: Vec<(&str, u64)> = counters.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let built = match kind {
        0 => Reply::Done,
        1 => Reply::Json(&json),
        2 => Reply::Bytes(raw),
        3 => Reply::Float(float),
        4 => Reply::Text(&text),
        5 => Reply::Names(&names),
        6 => Reply::Scan { cursor: number, keys: &names },
        7 => Reply::Counters(&counter_refs),
        8 => Reply::Missing { key: &text },
        _ => Reply::Error(&text),
    };
    let mut line = Vec::new();
    built.encode(&mut line);
    assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1, "{built:?} is not one line");
    assert_eq!(line.last(), Some(&b'\n'));
    let decoded = reply::decode(&line).unwrap_or_else(|e| panic!("{built:?} wrote {:?}: {e}", lossy(&line)));
    let peeked = reply::peek(&line);
    let names_text = || names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect::<Vec<_>>();
    match (built, decoded) {
        (Reply::Missing { key }, Decoded::Error(message)) => {
            assert!(reply::is_missing(&message, key), "{message:?} is not the missing error of {key:?}");
            assert_eq!(peeked, Some(Peek::Missing));
        }
        (Reply::Error(why), Decoded::Error(message)) => {
            assert_eq!(message, why);
            let shaped = why.starts_with("Key ") && why.ends_with(" doesn't exist");
            assert_eq!(peeked, Some(if shaped { Peek::Missing } else { Peek::Error }));
        }
        (built, Decoded::Ok { data, base64 }) => {
            let Some(Peek::Ok { data: range, base64: peek_base64 }) = peeked else {
                panic!("{built:?} peeks as {peeked:?}")
            };
            assert_eq!((&line[range], peek_base64), (data.get().as_bytes(), base64), "{built:?}");
            assert_eq!(base64, matches!(built, Reply::Bytes(_)));
            let data = data.get();
            match built {
                Reply::Done => assert_eq!(data, "{}"),
                Reply::Json(text) => assert_eq!(data.as_bytes(), text),
                Reply::Bytes(bytes) => {
                    use base64::Engine as _;
                    let text: String = serde_json::from_str(data).unwrap_or_default();
                    let back = base64::engine::general_purpose::STANDARD.decode(text);
                    assert_eq!(back.as_deref(), Ok(bytes));
                }
                Reply::Float(value) => {
                    // Python's repr, read back exactly (Rust's parser is exact; serde_json's default is not).
                    let back: Result<f64, _> = data.parse();
                    assert_eq!(back.map(f64::to_bits), Ok(value.to_bits()), "{value:e} written as {data}");
                }
                Reply::Text(text) => {
                    assert_eq!(serde_json::from_str::<String>(data).ok().as_deref(), Some(text))
                }
                Reply::Names(_) => {
                    assert_eq!(serde_json::from_str::<Vec<String>>(data).ok(), Some(names_text()))
                }
                Reply::Scan { cursor, .. } => {
                    #[derive(serde::Deserialize, PartialEq, Debug)]
                    struct Page {
                        cursor: u64,
                        keys: Vec<String>,
                    }
                    let page = serde_json::from_str::<Page>(data).ok();
                    assert_eq!(page, Some(Page { cursor, keys: names_text() }));
                }
                Reply::Counters(fields) => {
                    let map: serde_json::Map<String, serde_json::Value> =
                        serde_json::from_str(data).unwrap_or_default();
                    assert_eq!(map.len(), fields.len());
                    for (name, value) in fields {
                        assert_eq!(
                            map.get(*name).and_then(serde_json::Value::as_u64),
                            Some(*value),
                            "{name}"
                        );
                    }
                }
                Reply::Missing { .. } | Reply::Error(_) => panic!("{built:?} decoded as ok"),
            }
        }
        (built, Decoded::Error(message)) => panic!("{built:?} decoded as the error {message:?}"),
    }
}
