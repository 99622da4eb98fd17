//! The on-disk record: one mutation of one bank, appended to a volume.
//!
//! Every record is self-checking, so a reader never has to trust the index that pointed at it: a magic, the
//! generation of the volume it was written in (a volume reused since reads as a miss, not as someone else's
//! data), its own length, its place in the whole store's log (the LSN), the bank and the key, and two
//! CRC32Cs: one over the header and the names, one over the value. A torn or flipped record fails a check.
//!
//! Two checksums, because what recovery may do depends on which part is damaged: with the header intact,
//! the damage is known to concern this key at this point of the log (its value is lost, nothing else); with
//! the header damaged, nothing about the bytes can be trusted, not even which key they were for.
//!
//! The LSN is one more than the LSN of the record written before it, store-wide, so a gap in the LSNs of
//! what recovery finds proves that records were lost there (see `volume::replay`).
//!
//! Layout, little-endian, 64-byte header then the payload:
//!
//! ```text
//!  0  magic       u32  "BCR2"
//!  4  head_crc    u32  over bytes 8..64, then the bank and the key
//!  8  len         u32  whole record, header included
//! 12  generation  u32  of the volume when written
//! 16  lsn         u64  the record's place in the store's log
//! 24  kind        u8   1 put, 2 delete, 3 bank reset, 4 touch, 5 void
//! 25  flags       u8   bit 0: the value is raw bytes (else JSON text)
//! 26  bank_len    u16
//! 28  key_len     u16
//! 30  reserved    u16  0
//! 32  value_len   u32
//! 36  value_crc   u32  over the value
//! 40  seq         u64  the entry's place in its bank's insertion order
//! 48  deadline    u64  Unix ms; u64::MAX for none
//! 56  lifetime    u64  ms, what `touch` restarts; 0 for none
//! 64  bank, key, value bytes
//! ```

use std::fmt;

/// First four bytes of every record.
pub const MAGIC: [u8; 4] = *b"BCR2";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 64;
/// Deadline of a record that never expires.
pub const NO_DEADLINE: u64 = u64::MAX;

/// What a record does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Sets a key (a put, or the result of touch/incr).
    Put = 1,
    /// Removes a key (a tombstone).
    Delete = 2,
    /// Removes every key of a bank written before it.
    Reset = 3,
    /// Restarts a key's lifetime: carries the new deadline, not the value.
    Touch = 4,
    /// Does nothing: written over a record whose write was answered with an error, so that it never counts
    /// while its LSN stays accounted for.
    Void = 5,
}

impl Kind {
    /// The kind a stored byte names.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Put),
            2 => Some(Kind::Delete),
            3 => Some(Kind::Reset),
            4 => Some(Kind::Touch),
            5 => Some(Kind::Void),
            _ => None,
        }
    }
}

/// Flag bit: the value is raw bytes rather than JSON text.
pub const FLAG_BYTES: u8 = 1;

/// The fields of a record other than its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// What it does.
    pub kind: Kind,
    /// [`FLAG_BYTES`] or 0.
    pub flags: u8,
    /// Unix ms, or [`NO_DEADLINE`].
    pub deadline: u64,
    /// Lifetime in ms that `touch` restarts; 0 for none.
    pub lifetime: u64,
    /// The entry's insertion order in its bank, so `bank.keys` keeps its order across a restart.
    pub seq: u64,
}

/// A record's header and names, checked by the header's CRC (the value is not read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// Kind, flags, deadline, lifetime, insertion order.
    pub meta: Meta,
    /// Generation of the volume it was written in.
    pub generation: u32,
    /// Its place in the store's log.
    pub lsn: u64,
    /// The bank's name.
    pub bank: &'a [u8],
    /// The key (empty for a reset).
    pub key: &'a [u8],
    /// Length of the whole record.
    pub len: usize,
    /// Length of the value.
    pub value_len: usize,
    /// CRC32C of the value.
    value_crc: u32,
}

/// A decoded record borrowing its payload from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Kind, flags, deadline, lifetime, insertion order.
    pub meta: Meta,
    /// Generation of the volume it was written in.
    pub generation: u32,
    /// Its place in the store's log.
    pub lsn: u64,
    /// The bank's name.
    pub bank: &'a [u8],
    /// The key (empty for a reset).
    pub key: &'a [u8],
    /// The value (empty unless a put).
    pub value: &'a [u8],
    /// Length of the whole record.
    pub len: usize,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// Not a record start (zeroes past the end of written data look like this).
    BadMagic,
    /// The buffer ends before the record does (a torn tail).
    Truncated,
    /// Lengths that contradict each other.
    BadLength,
    /// The header's checksum does not match: nothing in it can be trusted.
    BadHeader,
    /// The header is sound (its key and place in the log are known) but the value's checksum does not
    /// match.
    BadValue,
    /// An unknown kind byte.
    BadKind,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordError::BadMagic => "no record magic",
            RecordError::Truncated => "record cut short",
            RecordError::BadLength => "record lengths disagree",
            RecordError::BadHeader => "record header checksum mismatch",
            RecordError::BadValue => "record value checksum mismatch",
            RecordError::BadKind => "unknown record kind",
        })
    }
}

impl std::error::Error for RecordError {}

/// Length of a record with this payload.
pub fn encoded_len(bank: &[u8], key: &[u8], value: &[u8]) -> usize {
    HEADER_LEN + bank.len() + key.len() + value.len()
}

/// Appends one record to `out`. Bank and key must fit in u16 lengths and the value in u32 (the caller's
/// limits guarantee it; anything longer is refused with `BadLength`).
pub fn encode(
    out: &mut Vec<u8>,
    generation: u32,
    lsn: u64,
    meta: Meta,
    bank: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<(), RecordError> {
    encode_head(out, generation, lsn, meta, bank, key, value)?;
    out.extend_from_slice(value);
    Ok(())
}

/// Appends everything of a record but its value to `out` (the header, then bank and key), so a writer can
/// hand the kernel the value where it already lies instead of copying it behind the header first.
pub fn encode_head(
    out: &mut Vec<u8>,
    generation: u32,
    lsn: u64,
    meta: Meta,
    bank: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<(), RecordError> {
    let len = encoded_len(bank, key, value);
    let (Ok(bank_len), Ok(key_len), Ok(value_len), Ok(total)) =
        (u16::try_from(bank.len()), u16::try_from(key.len()), u32::try_from(value.len()), u32::try_from(len))
    else {
        return Err(RecordError::BadLength);
    };
    let start = out.len();
    out.reserve(HEADER_LEN + bank.len() + key.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[0; 4]); // the header's CRC, filled in below
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.push(meta.kind as u8);
    out.push(meta.flags);
    out.extend_from_slice(&bank_len.to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(value).to_le_bytes());
    out.extend_from_slice(&meta.seq.to_le_bytes());
    out.extend_from_slice(&meta.deadline.to_le_bytes());
    out.extend_from_slice(&meta.lifetime.to_le_bytes());
    out.extend_from_slice(bank);
    out.extend_from_slice(key);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Little-endian field readers shared with the index codec; callers check lengths first.
pub(super) fn u16_at(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(bytes)
}

/// The length of the header and names the record at the start of `buf` claims, unchecked, so a reader
/// knows how much to read for [`decode_head`]. `None` when `buf` does not even start like a record.
pub fn head_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < HEADER_LEN || buf[..4] != MAGIC {
        return None;
    }
    Some(HEADER_LEN + u16_at(buf, 26) + u16_at(buf, 28))
}

/// Reads and checks the header and names of the record at the start of `buf` (which must hold at least
/// [`head_len`] bytes), without its value.
pub fn decode_head(buf: &[u8]) -> Result<Head<'_>, RecordError> {
    if buf.len() < 4 {
        return Err(RecordError::Truncated);
    }
    if buf[..4] != MAGIC {
        return Err(RecordError::BadMagic);
    }
    if buf.len() < HEADER_LEN {
        return Err(RecordError::Truncated);
    }
    let (bank_len, key_len) = (u16_at(buf, 26), u16_at(buf, 28));
    let names_end = HEADER_LEN + bank_len + key_len;
    if buf.len() < names_end {
        return Err(RecordError::Truncated);
    }
    if crc32c::crc32c(&buf[8..names_end]) != u32_at(buf, 4) {
        return Err(RecordError::BadHeader);
    }
    let len = u32_at(buf, 8) as usize;
    let value_len = u32_at(buf, 32) as usize;
    if len != names_end + value_len {
        return Err(RecordError::BadLength);
    }
    let kind = Kind::from_u8(buf[24]).ok_or(RecordError::BadKind)?;
    let bank_end = HEADER_LEN + bank_len;
    Ok(Head {
        meta: Meta {
            kind,
            flags: buf[25],
            seq: u64_at(buf, 40),
            deadline: u64_at(buf, 48),
            lifetime: u64_at(buf, 56),
        },
        generation: u32_at(buf, 12),
        lsn: u64_at(buf, 16),
        bank: &buf[HEADER_LEN..bank_end],
        key: &buf[bank_end..names_end],
        len,
        value_len,
        value_crc: u32_at(buf, 36),
    })
}

impl<'a> Head<'a> {
    /// Checks `value` (the bytes after the names) against the header and makes the whole record.
    pub fn with_value(self, value: &'a [u8]) -> Result<Record<'a>, RecordError> {
        if value.len() < self.value_len {
            return Err(RecordError::Truncated);
        }
        let value = &value[..self.value_len];
        if crc32c::crc32c(value) != self.value_crc {
            return Err(RecordError::BadValue);
        }
        Ok(Record {
            meta: self.meta,
            generation: self.generation,
            lsn: self.lsn,
            bank: self.bank,
            key: self.key,
            value,
            len: self.len,
        })
    }
}

/// Reads the record at the start of `buf`, checking everything.
pub fn decode(buf: &[u8]) -> Result<Record<'_>, RecordError> {
    let head = decode_head(buf)?;
    let names_end = head.len - head.value_len;
    head.with_value(&buf[names_end..buf.len().min(head.len)])
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const PUT: Meta = Meta { kind: Kind::Put, flags: 0, deadline: NO_DEADLINE, lifetime: 0, seq: 0 };

    fn one(generation: u32, lsn: u64, meta: Meta, bank: &str, key: &str, value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, generation, lsn, meta, bank.as_bytes(), key.as_bytes(), value.as_bytes()).unwrap();
        out
    }

    #[test]
    fn round_trip() {
        let meta = Meta {
            kind: Kind::Put,
            flags: FLAG_BYTES,
            deadline: 1_700_000_000_123,
            lifetime: 5000,
            seq: 0xabcd_1234_5678,
        };
        let buf = one(7, 123_456_789_012, meta, "bank", "ключ", "{\"a\":1}");
        assert_eq!(buf.len(), encoded_len(b"bank", "ключ".as_bytes(), b"{\"a\":1}"));
        let r = decode(&buf).unwrap();
        assert_eq!(r.meta, meta);
        assert_eq!((r.generation, r.lsn), (7, 123_456_789_012));
        assert_eq!((r.bank, r.key, r.value), (&b"bank"[..], "ключ".as_bytes(), &b"{\"a\":1}"[..]));
        assert_eq!(r.len, buf.len());
        assert_eq!(head_len(&buf), Some(HEADER_LEN + 4 + "ключ".len()));
    }

    #[test]
    fn records_follow_each_other() {
        let mut buf = one(1, 1, PUT, "b", "k1", "1");
        buf.extend(one(1, 2, Meta { kind: Kind::Delete, ..PUT }, "b", "k1", ""));
        buf.extend(one(1, 3, Meta { kind: Kind::Reset, ..PUT }, "b", "", ""));
        buf.extend(one(1, 4, Meta { kind: Kind::Void, ..PUT }, "b", "k", ""));
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < buf.len() {
            let r = decode(&buf[at..]).unwrap();
            kinds.push((r.meta.kind, r.lsn));
            at += r.len;
        }
        assert_eq!(kinds, [(Kind::Put, 1), (Kind::Delete, 2), (Kind::Reset, 3), (Kind::Void, 4)]);
    }

    /// Every flip is caught, and only a flip in the value leaves the header (the key and the LSN) standing.
    #[test]
    fn every_single_bit_flip_is_caught_and_a_value_flip_keeps_the_header() {
        let buf = one(3, 9, PUT, "bank", "key", "some value");
        let value_at = buf.len() - "some value".len();
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                let decoded = decode(&bad);
                assert!(decoded.is_err(), "flip of bit {bit} in byte {byte} went unnoticed");
                let head = decode_head(&bad);
                if byte >= value_at {
                    assert_eq!(decoded, Err(RecordError::BadValue), "byte {byte}");
                    assert_eq!(head.map(|h| (h.key, h.lsn)), Ok((&b"key"[..], 9)));
                } else if byte >= 4 {
                    assert!(head.is_err(), "a header flip in byte {byte} left the header trusted");
                }
            }
        }
    }

    #[test]
    fn torn_tails_and_zeroes() {
        let buf = one(3, 1, PUT, "bank", "key", "some value");
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(&[0; 100]), Err(RecordError::BadMagic));
        assert_eq!(decode(&[]), Err(RecordError::Truncated));
        assert_eq!(head_len(&[0; 100]), None);
    }

    #[test]
    fn oversized_fields_are_refused() {
        let long = vec![b'k'; 70_000];
        assert_eq!(encode(&mut Vec::new(), 0, 0, PUT, b"b", &long, b""), Err(RecordError::BadLength));
    }

    pub(in crate::store) mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Any meta of a record or index entry (one strategy for both).
        pub(in crate::store) fn meta() -> impl Strategy<Value = Meta> {
            (1u8..=5, any::<u8>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(kind, flags, deadline, lifetime, seq)| Meta {
                    kind: Kind::from_u8(kind).unwrap(),
                    flags,
                    deadline,
                    lifetime,
                    seq,
                },
            )
        }

        proptest! {
            /// Any record round-trips.
            #[test]
            fn any_record_round_trips(
                generation in any::<u32>(),
                lsn in any::<u64>(),
                meta in meta(),
                bank in prop::collection::vec(any::<u8>(), 0..40),
                key in prop::collection::vec(any::<u8>(), 0..40),
                value in prop::collection::vec(any::<u8>(), 0..300),
            ) {
                let mut buf = Vec::new();
                encode(&mut buf, generation, lsn, meta, &bank, &key, &value).unwrap();
                let r = decode(&buf).unwrap();
                prop_assert_eq!((r.meta, r.generation, r.lsn), (meta, generation, lsn));
                prop_assert_eq!((r.bank, r.key, r.value, r.len), (&bank[..], &key[..], &value[..], buf.len()));
            }

            /// Any single corruption of a record (a changed byte anywhere) is detected: the record reads as
            /// damaged, never as another record. A change in the value keeps the header (the key and its
            /// place in the log), so recovery knows which key lost its value; one before it keeps nothing.
            #[test]
            fn any_single_corruption_is_detected(
                meta in meta(),
                key in prop::collection::vec(any::<u8>(), 0..40),
                value in prop::collection::vec(any::<u8>(), 0..300),
                at in any::<prop::sample::Index>(),
                xor in 1u8..,
            ) {
                let mut buf = Vec::new();
                encode(&mut buf, 1, 1, meta, b"bank", &key, &value).unwrap();
                let i = at.index(buf.len());
                buf[i] ^= xor;
                let decoded = decode(&buf);
                prop_assert!(decoded.is_err());
                if i >= buf.len() - value.len() {
                    prop_assert_eq!(decoded, Err(RecordError::BadValue));
                    prop_assert_eq!(decode_head(&buf).map(|h| (h.key, h.lsn)), Ok((&key[..], 1)));
                } else {
                    prop_assert!(decode_head(&buf).is_err());
                }
            }

            /// A record cut short at any length (a torn write) is detected, and its header is read only when
            /// the cut leaves the header and names whole.
            #[test]
            fn any_truncation_is_detected(
                meta in meta(),
                key in prop::collection::vec(any::<u8>(), 0..40),
                value in prop::collection::vec(any::<u8>(), 0..300),
            ) {
                let mut buf = Vec::new();
                encode(&mut buf, 1, 1, meta, b"bank", &key, &value).unwrap();
                let names_end = buf.len() - value.len();
                for cut in 0..buf.len() {
                    prop_assert!(decode(&buf[..cut]).is_err(), "cut at {}", cut);
                    prop_assert_eq!(decode_head(&buf[..cut]).is_ok(), cut >= names_end, "cut at {}", cut);
                }
            }
        }
    }
}
