//! Splits a connection's byte stream into requests.
//!
//! A request is one complete top-level JSON value. Requests may be separated by newlines (NDJSON, netcat) or
//! sent back to back with no separator at all, as the original's raw clients did. A newline always ends a
//! request: a value still open at a newline is cut there and handed on as it is, so the parser answers it
//! with `Invalid json` and the next line starts fresh. The splitter only tracks nesting, strings and escapes;
//! it never validates JSON (the parser does), so it costs one pass over the bytes and keeps no copies.
//!
//! A reply ends as its request did ([`Ending`]): a request followed by a line end is answered with a line,
//! and a request with nothing after it (the original's raw clients, `sock.send('{...}')`) with the bare
//! reply, the original's exact bytes. A line end that arrives after its request was answered bare is
//! reported on its own ([`Split::LineEnd`]), so that the reply's `\n` follows then: whatever the segments,
//! the reply stream is the same bytes.

/// Where the scan stands between calls: what kind of value is open, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Between requests: whitespace is skipped.
    Idle,
    /// Inside an object or array, `depth` levels deep.
    Nested,
    /// Inside a top-level string.
    TopString,
    /// A top-level scalar or garbage: runs to the end of the line.
    Line,
    /// A value just ended at the end of the bytes scanned, with no line end after it yet: blanks then a
    /// line end mean the line end came late ([`Split::LineEnd`]); anything else starts the next request.
    Trailing,
}

/// How a request ended, and so how its reply ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A line end (`\n`, perhaps after blanks and a `\r`) followed the request: the reply is a line.
    Line,
    /// Nothing followed the request yet, or another request followed at once: the reply has no `\n`, as
    /// the original's did not.
    Bare,
}

/// Outcome of feeding bytes to the splitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// A request occupies `start..end` of the buffer, and ended as `ending` says.
    Frame { start: usize, end: usize, ending: Ending },
    /// A line end after a request that was handed on as [`Ending::Bare`]: its reply's `\n` is owed now.
    LineEnd,
    /// Everything up to the buffer's end has been scanned; more bytes are needed.
    NeedMore,
    /// The open request already exceeds the size limit and can never be completed.
    TooLarge,
}

/// Incremental request splitter for one connection.
///
/// Offsets are relative to the caller's buffer, which only grows between calls until the caller cuts
/// scanned bytes off its front with [`Splitter::rebase`].
#[derive(Debug, Clone)]
pub struct Splitter {
    mode: Mode,
    /// Position of the next byte to scan.
    pos: usize,
    /// Start of the open request (meaningful unless `mode` is `Idle`).
    start: usize,
    depth: u32,
    in_string: bool,
    escape: bool,
    max_request: usize,
}

impl Splitter {
    /// A splitter that refuses requests longer than `max_request` bytes.
    pub fn new(max_request: usize) -> Self {
        Splitter {
            mode: Mode::Idle,
            pos: 0,
            start: 0,
            depth: 0,
            in_string: false,
            escape: false,
            max_request: max_request.max(1),
        }
    }

    /// The size limit this splitter enforces.
    pub fn max_request(&self) -> usize {
        self.max_request
    }

    /// Scans `buf` from where the last call stopped and returns the next complete request, if any.
    pub fn next(&mut self, buf: &[u8]) -> Split {
        while self.pos < buf.len() {
            // Inside a string only a quote, a backslash or a newline matters, and in a line only the newline:
            // skip to the next one with memchr instead of looking at every byte of a large value.
            let skip = match self.mode {
                Mode::TopString | Mode::Nested if self.in_string && !self.escape => {
                    memchr::memchr3(b'"', b'\\', b'\n', &buf[self.pos..])
                }
                Mode::Line => memchr::memchr(b'\n', &buf[self.pos..]),
                _ => Some(0),
            };
            match skip {
                Some(n) => self.pos += n,
                None => {
                    self.pos = buf.len();
                    break;
                }
            }
            let b = buf[self.pos];
            let at = self.pos;
            self.pos += 1;
            if self.mode == Mode::Trailing {
                match b {
                    b' ' | b'\t' | b'\r' => continue,
                    b'\n' => {
                        self.mode = Mode::Idle;
                        return Split::LineEnd;
                    }
                    // The next request, back to back: the last reply stays bare.
                    _ => self.mode = Mode::Idle,
                }
            }
            match self.mode {
                Mode::Idle | Mode::Trailing => match b {
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    b'{' | b'[' => self.open(Mode::Nested, at, 1),
                    b'"' => {
                        self.open(Mode::TopString, at, 0);
                        self.in_string = true;
                    }
                    _ => self.open(Mode::Line, at, 0),
                },
                Mode::Line => {
                    if b == b'\n' {
                        return self.close(at, Ending::Line);
                    }
                }
                Mode::TopString | Mode::Nested => {
                    if b == b'\n' {
                        // An op never spans lines: hand the open value on, unfinished, to be refused.
                        return self.close(at, Ending::Line);
                    }
                    if self.in_string {
                        if self.escape {
                            self.escape = false;
                        } else if b == b'\\' {
                            self.escape = true;
                        } else if b == b'"' {
                            self.in_string = false;
                            if self.mode == Mode::TopString {
                                return self.close_value(buf);
                            }
                        }
                    } else {
                        match b {
                            b'"' => self.in_string = true,
                            b'{' | b'[' => self.depth += 1,
                            b'}' | b']' => {
                                self.depth -= 1;
                                if self.depth == 0 {
                                    return self.close_value(buf);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if self.is_open() && self.pos - self.start > self.max_request {
            return Split::TooLarge;
        }
        Split::NeedMore
    }

    /// At end of input, hands on whatever request is still open (it will be refused as incomplete JSON,
    /// or parsed if it is a bare scalar such as `42`).
    pub fn finish(&mut self, buf: &[u8]) -> Option<(usize, usize)> {
        if !self.is_open() {
            return None;
        }
        let start = self.start;
        self.reset();
        self.pos = buf.len();
        Some((start, buf.len()))
    }

    /// The first byte the caller must keep: the start of the open request, or the scan position.
    pub fn keep_from(&self) -> usize {
        if !self.is_open() {
            self.pos
        } else {
            self.start
        }
    }

    /// Tells the splitter that the caller dropped the first `cut` bytes of its buffer.
    pub fn rebase(&mut self, cut: usize) {
        debug_assert!(cut <= self.keep_from());
        self.pos -= cut;
        self.start = self.start.saturating_sub(cut);
    }

    /// Bytes of the open, unfinished request (0 when idle).
    pub fn open_len(&self) -> usize {
        if !self.is_open() {
            0
        } else {
            self.pos - self.start
        }
    }

    fn open(&mut self, mode: Mode, at: usize, depth: u32) {
        self.mode = mode;
        self.start = at;
        self.depth = depth;
    }

    /// Whether a request is open (between requests, and after one that ended bare, none is).
    fn is_open(&self) -> bool {
        !matches!(self.mode, Mode::Idle | Mode::Trailing)
    }

    /// Ends the open request at `end`, a line end.
    fn close(&mut self, end: usize, ending: Ending) -> Split {
        let start = self.start;
        self.reset();
        if self.max_request < end - start {
            return Split::TooLarge;
        }
        Split::Frame { start, end, ending }
    }

    /// Ends the open request where its value closed, at the scan position, and looks at what follows in
    /// `buf`: blanks then a line end (consumed) make it a line; the end of `buf` leaves the question open
    /// ([`Mode::Trailing`]); anything else is the next request.
    fn close_value(&mut self, buf: &[u8]) -> Split {
        let end = self.pos;
        let blanks = buf[end..].iter().take_while(|&&b| matches!(b, b' ' | b'\t' | b'\r')).count();
        let ending = match buf.get(end + blanks) {
            Some(b'\n') => {
                self.pos = end + blanks + 1;
                Ending::Line
            }
            Some(_) => Ending::Bare,
            None => Ending::Bare,
        };
        let at_end = buf.get(end + blanks).is_none();
        let split = self.close(end, ending);
        if at_end && matches!(split, Split::Frame { .. }) {
            self.mode = Mode::Trailing;
        }
        split
    }

    fn reset(&mut self) {
        self.mode = Mode::Idle;
        self.depth = 0;
        self.in_string = false;
        self.escape = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(input: &[u8]) -> Vec<String> {
        let mut s = Splitter::new(1 << 20);
        let mut out = Vec::new();
        loop {
            match s.next(input) {
                Split::Frame { start, end, .. } => {
                    out.push(String::from_utf8_lossy(&input[start..end]).into_owned())
                }
                Split::LineEnd => {}
                Split::NeedMore => break,
                Split::TooLarge => panic!("too large"),
            }
        }
        out
    }

    #[test]
    fn newline_delimited() {
        assert_eq!(frames(b"{\"a\":1}\n{\"b\":2}\n"), ["{\"a\":1}", "{\"b\":2}"]);
    }

    #[test]
    fn back_to_back_without_separator() {
        assert_eq!(frames(b"{\"a\":1}{\"b\":[2]}[3]"), ["{\"a\":1}", "{\"b\":[2]}", "[3]"]);
    }

    #[test]
    fn crlf_and_blank_lines_yield_nothing_extra() {
        assert_eq!(frames(b"\r\n\n  \t\r\n{\"a\":1}\r\n\r\n"), ["{\"a\":1}"]);
    }

    #[test]
    fn braces_inside_strings_do_not_count() {
        assert_eq!(frames(br#"{"a":"}{][\"\\"}{"b":1}"#), [r#"{"a":"}{][\"\\"}"#, r#"{"b":1}"#]);
    }

    #[test]
    fn a_value_open_at_a_newline_is_cut_there() {
        assert_eq!(frames(b"{\"a\":\n{\"b\":1}\n"), ["{\"a\":", "{\"b\":1}"]);
        assert_eq!(frames(b"{\"a\":\"x\ny\"}\n"), ["{\"a\":\"x", "y\"}"]);
    }

    #[test]
    fn scalars_and_garbage_run_to_the_end_of_the_line() {
        assert_eq!(frames(b"42\nhello world\n\"s\"\n"), ["42", "hello world", "\"s\""]);
        // Without a newline a bare scalar is not complete yet.
        assert!(frames(b"42").is_empty());
    }

    #[test]
    fn split_at_every_byte_gives_the_same_frames() {
        let input = br#"{"op":"put","bank":"b","key":"k\"}","value":[1,{"x":"]"}]}{"op":"get"}"#;
        let mut s = Splitter::new(1 << 20);
        let mut got = Vec::new();
        for n in 1..=input.len() {
            let buf = &input[..n];
            while let Split::Frame { start, end, .. } = s.next(buf) {
                got.push(&input[start..end]);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], br#"{"op":"get"}"#);
    }

    #[test]
    fn rebase_keeps_the_open_request() {
        let mut s = Splitter::new(1 << 20);
        let mut buf = b"{\"a\":1}\n{\"b\":".to_vec();
        assert_eq!(s.next(&buf), Split::Frame { start: 0, end: 7, ending: Ending::Line });
        assert_eq!(s.next(&buf), Split::NeedMore);
        let cut = s.keep_from();
        assert_eq!(cut, 8);
        buf.drain(..cut);
        s.rebase(cut);
        buf.extend_from_slice(b"2}");
        assert_eq!(s.next(&buf), Split::Frame { start: 0, end: 7, ending: Ending::Bare });
    }

    #[test]
    fn too_large_open_request() {
        let mut s = Splitter::new(8);
        assert_eq!(s.next(b"{\"a\":\"123456789"), Split::TooLarge);
        let mut s = Splitter::new(8);
        assert_eq!(s.next(b"{\"a\":\"12\"}"), Split::TooLarge);
        let mut s = Splitter::new(8);
        assert_eq!(s.next(b"{\"a\":1}"), Split::Frame { start: 0, end: 7, ending: Ending::Bare });
    }

    #[test]
    fn finish_hands_on_the_open_request() {
        let mut s = Splitter::new(100);
        let buf = b"{\"a\":1}42";
        assert_eq!(s.next(buf), Split::Frame { start: 0, end: 7, ending: Ending::Bare });
        assert_eq!(s.next(buf), Split::NeedMore);
        assert_eq!(s.finish(buf), Some((7, 9)));
        assert_eq!(s.finish(buf), None);
    }

    mod properties {
        use super::super::*;
        use crate::op::{parse, Limits, Op};
        use crate::strategies::op;
        use proptest::prelude::*;

        const LIMITS: Limits = Limits { max_key_bytes: 1 << 16, max_value_bytes: 1 << 20 };

        /// What may come between requests: newlines (LF or CRLF), blank lines, spaces, or nothing at all.
        fn separator() -> impl Strategy<Value = &'static [u8]> {
            const SEPARATORS: &[&[u8]] = &[b"\n", b"\r\n", b"", b" ", b"\n\n", b"\t\r\n", b"\r\n\r\n"];
            prop::sample::select(SEPARATORS)
        }

        /// Splits `stream` arriving as the reads `cuts` marks (each cut starts a read), cutting the consumed
        /// front off the buffer after every read as the reactor may, and parses each frame: the ops, each
        /// with whether its reply ends with a line end (at once, or when it came late).
        fn ops_read_in_pieces(stream: &[u8], cuts: &[usize]) -> Vec<(Op<'static>, bool)> {
            let mut splitter = Splitter::new(1 << 20);
            let mut buf = Vec::new();
            let mut ops: Vec<(Op<'static>, bool)> = Vec::new();
            let mut from = 0;
            for &to in cuts.iter().chain([&stream.len()]) {
                buf.extend_from_slice(&stream[from..to]);
                from = to;
                loop {
                    match splitter.next(&buf) {
                        Split::Frame { start, end, ending } => {
                            let op =
                                parse(&buf[start..end], &LIMITS).map(Op::into_owned).expect("a frame parses");
                            ops.push((op, ending == Ending::Line));
                        }
                        Split::LineEnd => {
                            let last = ops.last_mut().expect("a line end after a request");
                            assert!(!last.1, "a second line end for one request");
                            last.1 = true;
                        }
                        Split::NeedMore => break,
                        Split::TooLarge => panic!("too large"),
                    }
                }
                let keep = splitter.keep_from();
                buf.drain(..keep);
                splitter.rebase(keep);
            }
            assert_eq!(splitter.finish(&buf), None, "complete requests leave none open");
            ops
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

            /// Ops as clients encode them (names and values with `\r`, quotes, escapes and non-ASCII,
            /// values laid out with tabs and raw carriage returns, large values), separated every way the
            /// protocol allows, give the same ops, and the same line ends for their replies (a request
            /// followed by a line end gets a line), however the stream is cut into reads: in one read, a
            /// byte per read (every byte boundary at once), and in two reads at any boundary.
            #[test]
            fn split_at_every_byte_boundary_gives_the_same_ops(
                ops in prop::collection::vec(op(), 1..6),
                separators in prop::collection::vec(separator(), 6),
                boundary in any::<prop::sample::Index>(),
            ) {
                let mut stream = Vec::new();
                let mut expected = Vec::new();
                for (op, separator) in ops.iter().zip(&separators) {
                    op.encode(&mut stream);
                    prop_assert_eq!(stream.pop(), Some(b'\n'));
                    stream.extend_from_slice(separator);
                    let line = separator.iter().find(|b| !b" \t\r".contains(b)) == Some(&b'\n');
                    expected.push((op.clone(), line));
                }
                prop_assert_eq!(&ops_read_in_pieces(&stream, &[]), &expected);
                let every: Vec<usize> = (1..stream.len()).collect();
                prop_assert_eq!(&ops_read_in_pieces(&stream, &every), &expected);
                // Two reads at every boundary costs the stream's length squared: all of them for a short
                // stream, a spread and a drawn one for a long one.
                let step = (stream.len() / 256).max(1);
                let mut twos: Vec<usize> = (0..=stream.len()).step_by(step).collect();
                twos.push(boundary.index(stream.len() + 1));
                for cut in twos {
                    prop_assert_eq!(&ops_read_in_pieces(&stream, &[cut]), &expected, "cut at {}", cut);
                }
            }
        }
    }

    /// Every frame and line end, as the caller sees them.
    fn splits(input: &[u8]) -> Vec<String> {
        let mut s = Splitter::new(1 << 20);
        let mut out = Vec::new();
        loop {
            match s.next(input) {
                Split::Frame { start, end, ending } => {
                    out.push(format!("{}{ending:?}", String::from_utf8_lossy(&input[start..end])))
                }
                Split::LineEnd => out.push("LineEnd".into()),
                Split::NeedMore => break,
                Split::TooLarge => panic!("too large"),
            }
        }
        out
    }

    #[test]
    fn a_reply_ends_as_its_request_did() {
        assert_eq!(
            splits(
                b"{}
"
            ),
            ["{}Line"]
        );
        assert_eq!(splits(b"{} \t\r\n"), ["{}Line"]);
        assert_eq!(splits(b"{}"), ["{}Bare"]);
        assert_eq!(splits(b"{}{}\n"), ["{}Bare", "{}Line"]);
        assert_eq!(splits(b"{} {}"), ["{}Bare", "{}Bare"]);
        assert_eq!(splits(b"\"s\"\n[1]"), ["\"s\"Line", "[1]Bare"]);
        assert_eq!(splits(b"42\n"), ["42Line"]);
        assert_eq!(splits(b"{\"a\":\n"), ["{\"a\":Line"]);
        // Blank lines after a line are not line ends of anything.
        assert_eq!(splits(b"{}\n\n\r\n"), ["{}Line"]);
    }

    #[test]
    fn a_line_end_that_comes_late_is_reported_once() {
        let mut s = Splitter::new(100);
        let mut buf = b"{}".to_vec();
        assert_eq!(s.next(&buf), Split::Frame { start: 0, end: 2, ending: Ending::Bare });
        assert_eq!(s.next(&buf), Split::NeedMore);
        buf.extend_from_slice(b" \r");
        assert_eq!(s.next(&buf), Split::NeedMore);
        buf.extend_from_slice(b"\n\n");
        assert_eq!(s.next(&buf), Split::LineEnd);
        assert_eq!(s.next(&buf), Split::NeedMore);
        // After a bare reply, the next request starts the question over.
        buf.extend_from_slice(b"[]");
        assert_eq!(s.next(&buf), Split::Frame { start: 6, end: 8, ending: Ending::Bare });
        buf.extend_from_slice(b"{}");
        assert_eq!(s.next(&buf), Split::Frame { start: 8, end: 10, ending: Ending::Bare });
        buf.extend_from_slice(b"\n");
        assert_eq!(s.next(&buf), Split::LineEnd);
    }

    /// The reply stream's line ends, for a request stream read in the given pieces: `L` for a line end
    /// after a reply, `B` for a bare reply, `+` for a line end owed late.
    fn endings_in_pieces(input: &[u8], cuts: &[usize]) -> String {
        let mut s = Splitter::new(1 << 20);
        let mut out = String::new();
        for &n in cuts.iter().chain(std::iter::once(&input.len())) {
            loop {
                match s.next(&input[..n]) {
                    Split::Frame { ending: Ending::Line, .. } => out.push('L'),
                    Split::Frame { ending: Ending::Bare, .. } => out.push('B'),
                    Split::LineEnd => out.push('+'),
                    Split::NeedMore => break,
                    Split::TooLarge => panic!("too large"),
                }
            }
        }
        // A bare reply whose line end came late ends with the same bytes as a line.
        out.replace("B+", "L")
    }

    #[test]
    fn every_cut_gives_the_same_reply_endings() {
        let input = b"{\"a\":1} \r\n[2]{\"b\":\"}\"}\n\n\"s\" \n{}";
        let whole = endings_in_pieces(input, &[]);
        assert_eq!(whole, "LBLLB");
        for cut in 0..=input.len() {
            assert_eq!(endings_in_pieces(input, &[cut]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn deep_nesting_costs_nothing() {
        let mut input = vec![b'['; 100_000];
        input.extend(vec![b']'; 100_000]);
        assert_eq!(frames(&input).len(), 1);
    }
}
