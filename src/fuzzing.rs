//! The checks the server's fuzz targets run (`fuzz/`, with `cargo fuzz`), written once here so that
//! `tests/fuzz_corpus.rs` runs exactly the same checks on every saved input and crash, in plain
//! `cargo test`. The protocol's checks live in `bankcache_proto::fuzzing`, the client's in
//! `bankcache_client::fuzzing`. Not part of the API: hidden from the docs, free to change with the fuzzers.
//!
//! Each check takes arbitrary bytes. It returns normally when the decoder behaved: it answered or refused
//! the input with a typed error and kept the properties stated on the check. It panics (an assertion, or
//! the decoder's own panic) when it did not, which is what libFuzzer reports as a crash.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bankcache_proto::fuzzing::Input;

use crate::http::codec::{self, Framed, Limits, Split};
use crate::store::index::{self, Entry};
use crate::store::record::{self, Kind, Meta, RecordError, NO_DEADLINE};
use crate::store::volume::{self, Checkpoint, CHECKPOINT_LEN};
use crate::store::{now_ms, Access, Fsync, Keep, Lookup, Store, StoreConfig, Ttl, VolumeConfig};

// ---- HTTP ----

/// HTTP request splitting ([`codec::split`]): the first four bytes pick the limits, the rest is the
/// stream, split request after request as a connection is.
///
/// - A split request lies in the buffer in order (start, head, body, end), within the limits; its head is
///   one [`codec::head`] reads, and one the strict rules allow (written again plainly here: no
///   `Content-Length` with `Transfer-Encoding`, one of each at most, `chunked` exactly, no bare CR, no
///   folding, no whitespace before a colon, no control characters, an origin- or http(s) absolute-form
///   target); its body is the `Content-Length` bytes where they lie, or the chunked body decoded as the
///   strict rules read the chunked coding (size lines, extensions, data, CRLFs, trailers); nothing past
///   its end was touched.
/// - What arrives in pieces is split the same: every prefix of a request that is shorter than the request
///   waits for more (never an error, never another request), with a `total` that is the request's length
///   when it gives one, and any prefix that holds the whole request splits it the same.
/// - A request the strict rules allow, all there and well within the limits, is split (to the length the
///   rules give it), never refused and never waited on: the codec is no stricter than its rules.
pub fn http(data: &[u8]) {
    let mut input = Input::new(data);
    let limits =
        Limits { max_head: 16 + usize::from(input.u16() % 2048), max_body: usize::from(input.u16() % 4096) };
    let mut buf = input.rest().to_vec();
    let mut at = 0;
    loop {
        let before = buf.clone();
        let result = codec::split(&mut buf, at, &limits);
        check_pieces(&before[at..], &limits, result, at);
        if let Some(len) = strict_request(&before[at..], &limits) {
            match result {
                Split::Request(f) => assert_eq!(f.end - at, len, "the length of {f:?}"),
                _ => panic!("a request the strict rules allow ({len} bytes at {at}) split as {result:?}"),
            }
        }
        let Split::Request(f) = result else { return };
        assert!(
            f.start == at && f.start < f.head_end && f.head_end <= f.body.0,
            "request {f:?} split at {at}"
        );
        assert!(f.body.0 <= f.body.1 && f.body.1 <= f.end && f.end <= buf.len(), "request {f:?}");
        assert!(f.head_end - f.start <= limits.max_head, "a head over the limit: {f:?}");
        assert!(f.body.1 - f.body.0 <= limits.max_body, "a body over the limit: {f:?}");
        assert_eq!(buf[f.start..f.head_end], before[f.start..f.head_end], "the head was changed");
        assert_eq!(buf[f.end..], before[f.end..], "bytes past the request were changed");
        let head = codec::head(&buf[f.start..f.head_end]);
        assert!(head.is_some(), "the splitter took a head codec::head refuses: {f:?}");
        let body = &buf[f.body.0..f.body.1];
        match strict_head(&before[f.start..f.head_end]) {
            Err(why) => panic!("the splitter took a head the strict rules refuse ({why}): {f:?}"),
            Ok(BodyModel::Chunked) => {
                let strict = strict_chunks(&before[f.head_end..f.end]);
                let strict = strict.map(|c| (c.len, c.data));
                assert_eq!(strict, Ok((f.end - f.head_end, body.to_vec())), "chunked body of {f:?}");
            }
            Ok(BodyModel::Length(len)) => {
                assert_eq!(body, &before[f.head_end..f.end], "body of {f:?}");
                assert_eq!(body.len(), len, "Content-Length of {f:?}");
            }
        }
        at = f.end;
    }
}

/// Splits prefixes of `request` (the bytes from where a request starts), as if it had arrived in pieces,
/// and checks each against `whole`, the split of everything there is (made at offset `at`).
fn check_pieces(request: &[u8], limits: &Limits, whole: Split, at: usize) {
    let whole_len = match whole {
        Split::Request(f) => f.end - at,
        Split::NeedMore { .. } | Split::Error(_) => request.len(),
    };
    for cut in cuts(request.len()) {
        let mut piece = request[..cut].to_vec();
        let got = codec::split(&mut piece, 0, limits);
        match (whole, got) {
            (Split::Request(f), Split::Request(g)) => {
                assert!(cut >= whole_len, "a request of {whole_len} bytes split from {cut} of them");
                let shift = |x: usize| x - at;
                let expected = Framed {
                    start: 0,
                    head_end: shift(f.head_end),
                    body: (shift(f.body.0), shift(f.body.1)),
                    end: shift(f.end),
                };
                assert_eq!(g, expected, "split from {cut} bytes");
            }
            (Split::Request(_), Split::NeedMore { total, .. }) => {
                assert!(cut < whole_len, "{cut} bytes hold the whole request, yet more are wanted");
                if let Some(total) = total {
                    assert_eq!(total, whole_len, "the total announced from {cut} bytes");
                }
            }
            (Split::Request(_), Split::Error(status)) => {
                panic!("the first {cut} of a request's {whole_len} bytes are refused with {status:?}")
            }
            (Split::NeedMore { .. }, got) => {
                assert!(matches!(got, Split::NeedMore { .. }), "a prefix of {cut} bytes split as {got:?}")
            }
            (Split::Error(_), Split::NeedMore { .. } | Split::Error(_)) => {}
            (Split::Error(status), Split::Request(g)) => {
                panic!("{cut} bytes split as {g:?}, all of them are refused with {status:?}")
            }
        }
    }
}

/// The prefix lengths to try: all of them for a short request, else the first and last bytes and a spread
/// in between (a long body changes nothing between its first and last bytes).
fn cuts(len: usize) -> Vec<usize> {
    if len <= 256 {
        return (0..=len).collect();
    }
    let mut cuts: Vec<usize> = (0..128).chain(len - 64..=len).collect();
    cuts.extend((1..64).map(|i| 128 + (len - 192) * i / 64));
    cuts
}

/// How a body is framed, as the strict rules read a head.
enum BodyModel {
    Length(usize),
    Chunked,
}

/// The strict rules of `codec`'s module docs, written again plainly: whether the splitter may have taken
/// `head`, and how its body is framed then; `Err` says which rule it breaks. Lines end in CRLF or a bare LF
/// (a CR anywhere else is refused); empty lines before the request line are skipped; the request line is a
/// method (a token), a target of visible ASCII and `HTTP/1.0` or `HTTP/1.1`, one space apart; a header is a
/// token, a colon at once (no whitespace before it, no folding), and a value of visible characters, spaces,
/// tabs and obs-text (no other control character). At most one `Content-Length`, of decimal digits that
/// fit; at most one `Transfer-Encoding`, exactly `chunked` (any case), never with a `Content-Length` and
/// never on HTTP/1.0. The target is a path or an `http`/`https` URL with a host and no user information,
/// without a fragment.
fn strict_head(mut head: &[u8]) -> Result<BodyModel, String> {
    while let Some(rest) = head.strip_prefix(b"\r\n").or_else(|| head.strip_prefix(b"\n")) {
        head = rest;
    }
    let (lines, used) = field_lines(head)?;
    if used != head.len() {
        return Err("bytes after the empty line".into());
    }
    let (request_line, fields) = lines.split_first().ok_or("no request line")?;
    let parts: Vec<&[u8]> = request_line.split(|&b| b == b' ').collect();
    let [method, target, version] = parts[..] else {
        return Err("not three parts in the request line".into());
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(format!("method {method:?}"));
    }
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(format!("target {target:?}"));
    }
    strict_target(target)?;
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(format!("version {version:?}")),
    };
    let fields = strict_fields(fields)?;
    let named =
        |name: &'static str| fields.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()));
    let lengths: Vec<_> = named("content-length").collect();
    let codings: Vec<_> = named("transfer-encoding").collect();
    match (&codings[..], &lengths[..]) {
        ([], []) => Ok(BodyModel::Length(0)),
        ([], [(_, value)]) => {
            let digits = trim_ows(value);
            let len = (!digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
                .then(|| std::str::from_utf8(digits).ok()?.parse::<usize>().ok())
                .flatten();
            len.map(BodyModel::Length).ok_or_else(|| format!("Content-Length {value:?}"))
        }
        ([(_, value)], []) if !http10 && trim_ows(value).eq_ignore_ascii_case(b"chunked") => {
            Ok(BodyModel::Chunked)
        }
        _ => Err(format!("framing: {} Transfer-Encoding, {} Content-Length", codings.len(), lengths.len())),
    }
}

/// The lines of a head or trailer section, up to the empty line that ends it, and the length of the
/// section (that line included); each line ends in CRLF or LF, and holds no other CR.
fn field_lines(bytes: &[u8]) -> Result<(Vec<&[u8]>, usize), String> {
    let (mut lines, mut used) = (Vec::new(), 0);
    loop {
        let lf = bytes[used..].iter().position(|&b| b == b'\n').ok_or("a line without its end")?;
        let line = &bytes[used..used + lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&b'\r') {
            return Err(format!("a bare CR in {line:?}"));
        }
        used += lf + 1;
        if line.is_empty() {
            return Ok((lines, used));
        }
        lines.push(line);
    }
}

/// A header (or trailer) field: its name and its value.
type Field<'a> = (&'a [u8], &'a [u8]);

/// Header (or trailer) field lines as name and value (without the whitespace around it).
fn strict_fields<'a>(lines: &[&'a [u8]]) -> Result<Vec<Field<'a>>, String> {
    lines
        .iter()
        .map(|line| {
            let colon =
                line.iter().position(|&b| b == b':').ok_or_else(|| format!("no colon in {line:?}"))?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Err(format!("header name {name:?}"));
            }
            if !value.iter().all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80) {
                return Err(format!("header value {value:?}"));
            }
            Ok((name, trim_ows(value)))
        })
        .collect()
}

/// A request target: origin-form, or an `http`/`https` absolute-form with a host and no user information;
/// no fragment either way.
fn strict_target(target: &[u8]) -> Result<(), String> {
    if target.contains(&b'#') {
        return Err(format!("a fragment in {target:?}"));
    }
    if target.starts_with(b"/") {
        return Ok(());
    }
    let lower = target.to_ascii_lowercase();
    let rest = lower
        .strip_prefix(b"http://")
        .or_else(|| lower.strip_prefix(b"https://"))
        .ok_or_else(|| format!("target form of {target:?}"))?;
    let authority = rest.split(|&b| b == b'/' || b == b'?').next().unwrap_or_default();
    if authority.is_empty() || authority.contains(&b'@') {
        return Err(format!("authority of {target:?}"));
    }
    Ok(())
}

/// RFC 9110's `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !is_ows(b)).map_or(start, |i| i + 1);
    &value[start..end]
}

/// A chunked body (RFC 9112 §7.1) at the start of `bytes`, read by the strict rules: a chunk is a size in
/// hex digits (at least one, fitting in 64 bits), then either CRLF or optional spaces and tabs, `;` and an
/// extension of visible characters, spaces, tabs and obs-text, then CRLF; that many bytes of data; CRLF.
/// The last chunk (size 0) is followed by a trailer section (field lines as in a head, then an empty line).
/// The body's data, and what its encoding takes: the size of every chunk, how many bytes it takes without
/// the data and the trailer section's length and number of fields. `Err` says what breaks the rules, or
/// that the body has not all arrived.
fn strict_chunks(bytes: &[u8]) -> Result<Chunked, String> {
    let mut chunked = Chunked { data: Vec::new(), len: 0, longest_line: 0, trailer: (0, 0) };
    loop {
        let rest = &bytes[chunked.len..];
        let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        let size = rest[..digits]
            .iter()
            .try_fold(0u64, |n, &d| n.checked_mul(16)?.checked_add(u64::from(char::from(d).to_digit(16)?)))
            .filter(|_| digits > 0)
            .ok_or_else(|| format!("chunk size {:?}", &rest[..digits]))?;
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("a size line without CRLF")?;
        let after = &rest[digits..line_end];
        if !after.is_empty() {
            let ows = after.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
            let extension =
                after[ows..].strip_prefix(b";").ok_or_else(|| format!("after the size: {after:?}"))?;
            if !extension.iter().all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b) || b >= 0x80) {
                return Err(format!("chunk extension {extension:?}"));
            }
        }
        chunked.longest_line = chunked.longest_line.max(line_end + 2);
        chunked.len += line_end + 2;
        let rest = &bytes[chunked.len..];
        if size == 0 {
            let (lines, used) = field_lines(rest)?;
            strict_fields(&lines)?;
            chunked.len += used;
            chunked.trailer = (used, lines.len());
            return Ok(chunked);
        }
        let size = usize::try_from(size).map_err(|e| e.to_string())?;
        chunked.data.extend_from_slice(rest.get(..size).ok_or("chunk data cut short")?);
        rest.get(size..).and_then(|r| r.strip_prefix(b"\r\n")).ok_or("chunk data without CRLF")?;
        chunked.len += size + 2;
    }
}

/// A chunked body read by [`strict_chunks`].
struct Chunked {
    /// The chunks' data, together.
    data: Vec<u8>,
    /// The length of the whole encoding, trailer section included.
    len: usize,
    /// The longest chunk-size line, CRLF included.
    longest_line: usize,
    /// The trailer section's length and number of fields.
    trailer: (usize, usize),
}

/// The length of the request at the start of `bytes` if the strict rules allow it, it has all arrived and
/// it is well within `limits` and the codec's fixed bounds (64 fields, chunk-size lines under 4 KB);
/// `None` if it is refused, not all there, or near a limit (where only the codec knows).
fn strict_request(bytes: &[u8], limits: &Limits) -> Option<usize> {
    let skipped = bytes.len() - {
        let mut rest = bytes;
        while let Some(r) = rest.strip_prefix(b"\r\n").or_else(|| rest.strip_prefix(b"\n")) {
            rest = r;
        }
        rest.len()
    };
    let (lines, used) = field_lines(&bytes[skipped..]).ok()?;
    let head_len = skipped + used;
    if head_len > limits.max_head || lines.len() > 64 {
        return None;
    }
    match strict_head(&bytes[..head_len]).ok()? {
        BodyModel::Length(len) => {
            (len <= limits.max_body && bytes.len() - head_len >= len).then_some(head_len + len)
        }
        BodyModel::Chunked => {
            let c = strict_chunks(&bytes[head_len..]).ok()?;
            let within = c.data.len() <= limits.max_body
                && c.len - c.data.len() <= limits.max_body.saturating_add(limits.max_head)
                && c.longest_line < 4096
                && c.trailer.0 <= limits.max_head
                && c.trailer.1 <= 64;
            within.then_some(head_len + c.len)
        }
    }
}

// ---- records ----

/// A record's fields read from fuzz input.
fn record_fields<'a>(input: &mut Input<'a>) -> (u32, u64, Meta, &'a [u8], &'a [u8], &'a [u8]) {
    let generation = input.u32();
    let lsn = input.u64();
    let kinds = [Kind::Put, Kind::Delete, Kind::Reset, Kind::Touch, Kind::Void];
    let kind = kinds[usize::from(input.u8()) % kinds.len()];
    let meta =
        Meta { kind, flags: input.u8(), deadline: input.u64(), lifetime: input.u64(), seq: input.u64() };
    (generation, lsn, meta, input.short(40), input.short(40), input.short(255))
}

/// A nonzero byte to flip bits with.
fn flip(input: &mut Input<'_>) -> u8 {
    input.u8().max(1)
}

/// On-disk records ([`record::decode`], [`record::decode_head`], [`record::head_len`]). The first byte
/// picks: raw bytes decoded as a record, or a record built from the input, round-tripped, then damaged once.
///
/// - Any bytes decode to a record or a [`RecordError`], never a panic. A record decoded from them is
///   exactly what [`record::encode`] writes for its fields (but for the reserved field, which the header's
///   checksum covers), and `decode_head` agrees with `decode`.
/// - Any record round-trips. Any single damage to it, one byte changed anywhere or the record cut short at
///   any length, is refused: read as damaged, never as a record. A change in the value leaves the header
///   standing (the key's loss is known) and is `BadValue`; a change before it leaves no header.
pub fn record(data: &[u8]) {
    let mut input = Input::new(data);
    if input.u8() % 2 == 0 {
        return record_bytes(input.rest());
    }
    let (generation, lsn, meta, bank, key, value) = record_fields(&mut input);
    let mut buf = Vec::new();
    let encoded = record::encode(&mut buf, generation, lsn, meta, bank, key, value);
    assert_eq!(encoded, Ok(()));
    let r = record::decode(&buf).unwrap_or_else(|e| panic!("a record just written does not decode: {e}"));
    assert_eq!((r.generation, r.lsn, r.meta), (generation, lsn, meta));
    assert_eq!((r.bank, r.key, r.value, r.len), (bank, key, value, buf.len()));
    let names_end = buf.len() - value.len();

    let at = usize::from(input.u16()) % buf.len();
    let mut bad = buf.clone();
    bad[at] ^= flip(&mut input);
    let decoded = record::decode(&bad);
    assert!(decoded.is_err(), "byte {at} changed, yet the record decodes: {decoded:?}");
    if at >= names_end {
        assert_eq!(decoded, Err(RecordError::BadValue), "byte {at} of the value changed");
        let head = record::decode_head(&bad).map(|h| (h.bank, h.key, h.lsn));
        assert_eq!(head, Ok((bank, key, lsn)), "a change in the value lost the header");
    } else {
        assert!(record::decode_head(&bad).is_err(), "byte {at} of the header changed, yet it decodes");
    }

    let cut = usize::from(input.u16()) % buf.len();
    assert!(record::decode(&buf[..cut]).is_err(), "the record cut to {cut} bytes decodes");
    assert_eq!(record::decode_head(&buf[..cut]).is_ok(), cut >= names_end, "the header cut to {cut} bytes");
}

fn record_bytes(buf: &[u8]) {
    let head = record::decode_head(buf);
    let claimed = record::head_len(buf);
    let r = match record::decode(buf) {
        Ok(r) => r,
        Err(e) => {
            if head.is_ok() {
                assert!(
                    matches!(e, RecordError::Truncated | RecordError::BadValue),
                    "{e:?} past a sound header"
                );
            }
            return;
        }
    };
    let h = head.unwrap_or_else(|e| panic!("decode took a record whose header decode_head refuses: {e}"));
    assert_eq!((h.meta, h.generation, h.lsn, h.bank, h.key), (r.meta, r.generation, r.lsn, r.bank, r.key));
    assert_eq!((h.len, h.value_len), (r.len, r.value.len()));
    assert!(r.len <= buf.len());
    assert_eq!(claimed, Some(r.len - r.value.len()), "head_len disagrees with the record");
    let mut again = Vec::new();
    let encoded = record::encode(&mut again, r.generation, r.lsn, r.meta, r.bank, r.key, r.value);
    assert_eq!(encoded, Ok(()));
    let mut read = buf[..r.len].to_vec();
    if read[30..32] != [0, 0] {
        // A reserved field that is not 0 is covered by the header's checksum: the record was written so.
        read[4..8].copy_from_slice(&again[4..8]);
        read[30..32].copy_from_slice(&[0, 0]);
    }
    assert_eq!(read, again, "a record decoded from bytes that its encoding does not give");
}

// ---- index files ----

/// Index files ([`index::decode_header`], [`index::decode_entry`]). The first byte picks: raw bytes read
/// as an index file (a header, then entries as start-up reads them), or a header and an entry built from
/// the input, round-tripped, then damaged once.
///
/// - Any bytes give a generation or nothing, entries or the end of the usable list, never a panic; an
///   entry read from them is exactly what [`index::encode_entry`] writes for its fields (but for the
///   reserved field, which the entry's checksum covers) and never runs past the bytes.
/// - Any header and any entry round-trip. Any single damage to them (one byte changed, or cut short at any
///   length) is refused: read as the end of the list, never as another entry.
pub fn index(data: &[u8]) {
    let mut input = Input::new(data);
    if input.u8() % 2 == 0 {
        return index_bytes(input.rest());
    }
    let generation = input.u32();
    let mut header = Vec::new();
    index::encode_header(&mut header, generation);
    assert_eq!(header.len(), index::HEADER_LEN);
    assert_eq!(index::decode_header(&header), Some(generation));
    let at = usize::from(input.u8()) % header.len();
    let mut bad = header.clone();
    bad[at] ^= flip(&mut input);
    assert_eq!(index::decode_header(&bad), None, "byte {at} of the header changed, yet it reads");
    let cut = usize::from(input.u8()) % header.len();
    assert_eq!(index::decode_header(&header[..cut]), None, "the header cut to {cut} bytes reads");

    let (_, lsn, meta, bank, key, _) = record_fields(&mut input);
    let entry = Entry { meta, offset: input.u32(), len: input.u32(), lsn, bank, key };
    let mut buf = Vec::new();
    index::encode_entry(&mut buf, &entry);
    assert_eq!(index::decode_entry(&buf), Some((entry, buf.len())), "an entry just written");
    let at = usize::from(input.u16()) % buf.len();
    let mut bad = buf.clone();
    bad[at] ^= flip(&mut input);
    let read = index::decode_entry(&bad);
    assert_eq!(read, None, "byte {at} of the entry changed, yet it reads");
    let cut = usize::from(input.u16()) % buf.len();
    assert_eq!(index::decode_entry(&buf[..cut]), None, "the entry cut to {cut} bytes reads");
}

fn index_bytes(buf: &[u8]) {
    let _ = index::decode_header(buf);
    let mut pos = index::HEADER_LEN.min(buf.len());
    while let Some((e, used)) = index::decode_entry(&buf[pos..]) {
        assert!(used <= buf.len() - pos, "an entry of {used} bytes past the end");
        let mut again = Vec::new();
        index::encode_entry(&mut again, &e);
        let mut read = buf[pos..pos + used].to_vec();
        if read[14..16] != [0, 0] {
            // As for records: the reserved field is covered by the entry's checksum.
            read[..4].copy_from_slice(&again[..4]);
            read[14..16].copy_from_slice(&[0, 0]);
        }
        assert_eq!(read, again, "an entry decoded from bytes that its encoding does not give");
        pos += used;
    }
}

// ---- CHECKPOINT and META.txt ----

/// The `CHECKPOINT` file ([`Checkpoint::decode`]). The first byte picks: raw bytes read as the file, or a
/// checkpoint built from the input, round-tripped, then damaged once.
///
/// - Any bytes give a checkpoint or nothing, never a panic; a checkpoint read from them is exactly what
///   [`Checkpoint::encode`] writes for it.
/// - Any checkpoint round-trips; any single damage (one byte changed, cut short, one byte too many) is
///   refused.
pub fn checkpoint(data: &[u8]) {
    let mut input = Input::new(data);
    if input.u8() % 2 == 0 {
        let buf = input.rest();
        if let Some(ck) = Checkpoint::decode(buf) {
            assert_eq!(ck.encode()[..], *buf, "a checkpoint read from bytes its encoding does not give");
        }
        return;
    }
    let ck = Checkpoint {
        lsn: input.u64(),
        generation: input.u32(),
        volume: input.u32(),
        dead_up_to: input.u64(),
    };
    let buf = ck.encode();
    assert_eq!(Checkpoint::decode(&buf), Some(ck));
    let at = usize::from(input.u8()) % CHECKPOINT_LEN;
    let mut bad = buf;
    bad[at] ^= flip(&mut input);
    assert_eq!(Checkpoint::decode(&bad), None, "byte {at} changed, yet the checkpoint reads");
    let cut = usize::from(input.u8()) % CHECKPOINT_LEN;
    assert_eq!(Checkpoint::decode(&buf[..cut]), None, "cut to {cut} bytes, yet the checkpoint reads");
    let mut longer = buf.to_vec();
    longer.push(input.u8());
    assert_eq!(Checkpoint::decode(&longer), None, "a byte too many, yet the checkpoint reads");
}

/// `META.txt` ([`volume::parse_meta`]): any bytes give a volume number or nothing, never a panic; a
/// number read back from what the store writes (its decimal text) is that number, and only text that is
/// a number (with whitespace around it) reads as one.
pub fn meta(data: &[u8]) {
    let got = volume::parse_meta(data);
    if let Some(n) = got {
        assert_eq!(volume::parse_meta(n.to_string().as_bytes()), Some(n));
        let text = std::str::from_utf8(data).map(str::trim);
        assert!(
            text.is_ok_and(|t| t.trim_start_matches('+').bytes().all(|b| b.is_ascii_digit())),
            "{data:?}"
        );
    }
    let n = u32::from_le_bytes([0, 1, 2, 3].map(|i| data.get(i).copied().unwrap_or(0)));
    assert_eq!(volume::parse_meta(n.to_string().as_bytes()), Some(n));
}

// ---- a whole data directory ----

/// A directory for one check, removed when dropped: under `/dev/shm` where there is one (a check writes
/// and fsyncs a few files, which costs nothing there), else the system's temporary directory.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> ScratchDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_owned() } else { std::env::temp_dir() };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("bankcache-fuzz-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The files of a data directory, as the volume target builds them.
struct Files {
    data: Vec<Option<Vec<u8>>>,
    index: Vec<Option<Vec<u8>>>,
    checkpoint: Option<Vec<u8>>,
    meta: Option<Vec<u8>>,
}

impl Files {
    fn write(&self, dir: &Path) {
        let put = |path: PathBuf, bytes: &[u8]| {
            fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()))
        };
        for sub in ["data", "index"] {
            let _ = fs::create_dir_all(dir.join(sub));
        }
        for (n, bytes) in self.data.iter().enumerate() {
            if let Some(bytes) = bytes {
                put(dir.join("data").join(n.to_string()), bytes);
            }
        }
        for (n, bytes) in self.index.iter().enumerate() {
            if let Some(bytes) = bytes {
                put(dir.join("index").join(n.to_string()), bytes);
            }
        }
        if let Some(bytes) = &self.checkpoint {
            put(dir.join("CHECKPOINT"), bytes);
        }
        if let Some(bytes) = &self.meta {
            put(dir.join("META.txt"), bytes);
        }
    }
}

/// A value as written: bank, key, value and flags.
type Value = (Vec<u8>, Vec<u8>, Vec<u8>, u8);

/// What the files say was written: the values of the sound put records at any offset of any volume file
/// (bank, key, value, flags), and the keys a put was written for, by those records or by the sound put
/// entries of an index (a record damaged under a sound entry loses its value, not its key: it is listed,
/// and read as a miss).
#[derive(Default)]
struct Written {
    values: HashSet<Value>,
    keys: HashSet<(Vec<u8>, Vec<u8>)>,
}

impl Written {
    fn from_files(files: &Files) -> Written {
        let mut written = Written::default();
        for bytes in files.data.iter().flatten() {
            for at in memchr::memmem::find_iter(bytes, &record::MAGIC) {
                if let Ok(r) = record::decode(&bytes[at..]) {
                    if r.meta.kind == Kind::Put {
                        written.put(r.bank, r.key, r.value, r.meta.flags);
                    }
                }
            }
        }
        for bytes in files.index.iter().flatten() {
            let mut pos = index::HEADER_LEN.min(bytes.len());
            while let Some((e, used)) = index::decode_entry(&bytes[pos..]) {
                if e.meta.kind == Kind::Put {
                    written.keys.insert((e.bank.to_vec(), e.key.to_vec()));
                }
                pos += used;
            }
        }
        written
    }

    fn put(&mut self, bank: &[u8], key: &[u8], value: &[u8], flags: u8) {
        self.values.insert((bank.to_vec(), key.to_vec(), value.to_vec(), flags));
        self.keys.insert((bank.to_vec(), key.to_vec()));
    }
}

/// Banks and keys the volume target's records use mostly, so records meet each other's keys.
const NAMES: [&[u8]; 4] = [b"b", b"c", b"k1", b"k2"];

/// A whole data directory ([`Store::open`] and what it replays): the input builds the files, records
/// (valid, so that replay has something to do) in volumes of a few hundred bytes, their index entries,
/// a checkpoint and `META.txt`, then damages them (bytes changed or overwritten, files cut short or
/// missing, stale or garbage indexes and checkpoints). Then the store is opened, read, written and
/// opened again.
///
/// - The store opens, whatever the files hold: it never panics and never refuses to start.
/// - It never lies: every key it lists had a put written (a record or an index entry says so), and every
///   value it returns (twice, from disk and then from RAM) is the value of a sound put record of that
///   bank and key in the files, with its flags; never bytes that were not written as that key's value.
/// - It goes on working: a value put after the start is read back, and after a restart the store again
///   returns only values that were written.
pub fn volume(data: &[u8]) {
    let mut input = Input::new(data);
    let count = 1 + usize::from(input.u8() % 3);
    let size = 128 + u64::from(input.u16() % 1024);
    let now = now_ms();
    let mut files =
        Files { data: vec![Some(Vec::new()); count], index: vec![None; count], checkpoint: None, meta: None };
    let (mut lsn, mut last) = (0u64, None::<(u32, u32)>);
    let mut checkpoint_set = false;
    let mut steps = 0;
    while !input.is_empty() && steps < 64 {
        steps += 1;
        let v = usize::from(input.u8()) % count;
        match input.u8() % 12 {
            0..=4 => {
                let g = input.u8();
                let generation = if g >= 0xf0 { input.u32() } else { u32::from(g % 4) + 1 };
                let step = input.u8();
                lsn = match step {
                    0..=199 => lsn.wrapping_add(1),
                    200..=239 => lsn.wrapping_add(u64::from(step - 198)),
                    _ => input.u64(),
                };
                let kinds =
                    [Kind::Put, Kind::Put, Kind::Put, Kind::Delete, Kind::Touch, Kind::Reset, Kind::Void];
                let kind = kinds[usize::from(input.u8()) % kinds.len()];
                let name = |input: &mut Input<'_>| match input.u8() {
                    n @ 0..=239 => NAMES[usize::from(n) % NAMES.len()].to_vec(),
                    _ => input.short(6).to_vec(),
                };
                let (bank, key) = (name(&mut input), name(&mut input));
                let value = input.short(24).to_vec();
                let deadline = match input.u8() % 4 {
                    0 | 1 => NO_DEADLINE,
                    2 => now.saturating_add(600_000),
                    _ => input.u64(),
                };
                let lifetime = if deadline == NO_DEADLINE { 0 } else { u64::from(input.u16()) * 1000 };
                let seq = match input.u8() {
                    s @ 0..=239 => u64::from(s),
                    _ => input.u64(),
                };
                let meta = Meta { kind, flags: input.u8() & 1, deadline, lifetime, seq };
                let volume = files.data[v].get_or_insert_with(Vec::new);
                let offset = volume.len() as u32;
                if record::encode(volume, generation, lsn, meta, &bank, &key, &value).is_err() {
                    continue;
                }
                let len = volume.len() as u32 - offset;
                last = Some((generation, v as u32));
                if input.u8() % 4 != 0 {
                    let index = files.index[v].get_or_insert_with(|| {
                        let mut header = Vec::new();
                        index::encode_header(&mut header, generation);
                        header
                    });
                    index::encode_entry(index, &Entry { meta, offset, len, lsn, bank: &bank, key: &key });
                }
            }
            5 => {
                let mut header = Vec::new();
                index::encode_header(&mut header, u32::from(input.u8() % 6));
                files.index[v] = Some(header);
            }
            6 => {
                let file = if input.u8() % 4 == 0 { &mut files.index[v] } else { &mut files.data[v] };
                if let Some(bytes) = file.as_mut().filter(|b| !b.is_empty()) {
                    let at = usize::from(input.u16()) % bytes.len();
                    bytes[at] ^= flip(&mut input);
                }
            }
            7 => {
                let at = usize::from(input.u16() % 2048);
                let patch = input.short(32);
                let bytes = files.data[v].get_or_insert_with(Vec::new);
                if bytes.len() < at + patch.len() {
                    bytes.resize(at + patch.len(), 0);
                }
                bytes[at..at + patch.len()].copy_from_slice(patch);
            }
            8 => {
                checkpoint_set = true;
                files.checkpoint = match input.u8() % 4 {
                    0 => None,
                    1 => Some(input.short(40).to_vec()),
                    _ => {
                        let (generation, volume) = last.unwrap_or((1, 0));
                        let ck = Checkpoint {
                            lsn: if input.u8() % 2 == 0 { lsn } else { input.u64() },
                            generation: if input.u8() % 2 == 0 { generation } else { input.u32() },
                            volume: if input.u8() % 2 == 0 { volume } else { input.u32() },
                            dead_up_to: if input.u8() % 2 == 0 { 0 } else { input.u64() },
                        };
                        Some(ck.encode().to_vec())
                    }
                };
            }
            9 => {
                files.meta = Some(if input.u8() % 2 == 0 {
                    v.to_string().into_bytes()
                } else {
                    input.short(12).to_vec()
                })
            }
            10 => {
                let file = if input.u8() % 2 == 0 { &mut files.index[v] } else { &mut files.data[v] };
                match file.as_mut() {
                    Some(bytes) if input.u8() % 4 != 0 => {
                        bytes.truncate(usize::from(input.u16()) % (bytes.len() + 1))
                    }
                    _ => *file = None,
                }
            }
            _ => {
                let junk = input.short(64).to_vec();
                let file = if input.u8() % 2 == 0 { &mut files.index[v] } else { &mut files.data[v] };
                file.get_or_insert_with(Vec::new).extend_from_slice(&junk);
            }
        }
    }
    if !checkpoint_set {
        // As the store leaves it: the last record written is the log's tail.
        let (generation, volume) = last.unwrap_or((1, 0));
        files.checkpoint = Some(Checkpoint { lsn, generation, volume, dead_up_to: 0 }.encode().to_vec());
    }

    let mut written = Written::from_files(&files);
    let dir = ScratchDir::new();
    files.write(&dir.0);
    let config = StoreConfig {
        volumes: Some(VolumeConfig {
            dir: dir.0.clone(),
            volume_size: size,
            volume_count: count as u32,
            fsync: Fsync::Never,
            disk: None,
        }),
        memory_max_bytes: 1 << 20,
        admit_after_reads: 1,
        admit_window_ms: 60_000,
    };
    let (store, _) = Store::open(config.clone()).unwrap_or_else(|e| panic!("the store did not open: {e}"));
    reads_only_written(&store, &written, now);

    let (bank, key, value) = ("fuzz", b"fresh".as_slice(), b"\"fresh value\"".as_slice());
    let put = store.put(bank, key, value, 0, Ttl::Forever, now, Access::Wait, Keep::Earned);
    put.unwrap_or_else(|e| panic!("a put after the start failed: {e}"));
    let read = store.get(bank, key, now, false, Access::Wait, |v, _| v.to_vec());
    assert!(matches!(read, Ok(Lookup::Hit((ref v, _))) if v == value), "a put was read back as {read:?}");
    written.put(bank.as_bytes(), key, value, 0);
    drop(store);

    let (store, _) = Store::open(config).unwrap_or_else(|e| panic!("the store did not open again: {e}"));
    reads_only_written(&store, &written, now);
}

/// Every key `store` lists has a put record, and every value it returns was written as that key's value.
fn reads_only_written(store: &Store, written: &Written, now: u64) {
    let banks = store.bank_names(usize::MAX).unwrap_or_else(|e| panic!("bank.list refused: {e:?}"));
    for bank in banks {
        let keys = store.keys(&bank, now, usize::MAX).unwrap_or_else(|e| panic!("bank.keys refused: {e:?}"));
        for key in keys.names() {
            assert!(
                written.keys.contains(&(bank.as_bytes().to_vec(), key.to_vec())),
                "bank {bank:?} lists key {:?}, for which no put was written",
                String::from_utf8_lossy(key)
            );
            // Twice: the first read comes from disk and admits the value to RAM, the second from RAM.
            for _ in 0..2 {
                let read =
                    store.get(&bank, key, now, false, Access::Wait, |v, served| (v.to_vec(), served.flags));
                match read {
                    Ok(Lookup::Hit(((value, flags), _))) => {
                        let found = (bank.as_bytes().to_vec(), key.to_vec(), value, flags);
                        assert!(written.values.contains(&found), "a value that was never written: {found:?}");
                    }
                    Ok(Lookup::Miss | Lookup::Expired) => {}
                    Err(e) => panic!("a read failed: {e}"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits { max_head: 1024, max_body: 100 };

    /// The http check's model of the strict rules takes what they allow (so the check that the codec
    /// splits such requests is not empty) and refuses what they refuse.
    #[test]
    fn the_strict_model_reads_requests_as_the_rules_do() {
        let allowed: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n\r\n",
            b"\r\n\nPUT /k?x=1 HTTP/1.0\nContent-Length: 002\n\nab",
            b"PUT http://h:80/k HTTP/1.1\r\nX: a\tb\xe9 \r\ncontent-length:\t1\r\n\r\nx",
            b"PUT /k HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n3 ;a=\"b c\"\r\nabc\r\n01\r\nd\r\n0\r\nT: 1\r\n\r\n",
        ];
        for request in allowed {
            let len = strict_request(request, &LIMITS);
            assert_eq!(len, Some(request.len()), "{:?}", String::from_utf8_lossy(request));
            let mut longer = request.to_vec();
            longer.extend_from_slice(b"GET");
            assert_eq!(strict_request(&longer, &LIMITS), len);
            assert_eq!(strict_request(&request[..request.len() - 1], &LIMITS), None);
            let mut buf = request.to_vec();
            assert!(
                matches!(codec::split(&mut buf, 0, &LIMITS), Split::Request(f) if f.end == request.len())
            );
        }
        let refused: &[&[u8]] = &[
            b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n",
            b"GET /k#f HTTP/1.1\r\n\r\n",
            b"GET http://u@h/ HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX : 1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: 1\r\n 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: 1\r2\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: \x7f\r\n\r\n",
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
            b"PUT / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx",
            b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 \r\nx\r\n0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;\x01\r\nx\r\n0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy\r\n0\r\n\r\n",
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT 1\r\n\r\n",
        ];
        for request in refused {
            assert_eq!(strict_request(request, &LIMITS), None, "{:?}", String::from_utf8_lossy(request));
            let mut buf = request.to_vec();
            assert!(matches!(codec::split(&mut buf, 0, &LIMITS), Split::Error(_)), "{request:?}");
        }
    }
}
