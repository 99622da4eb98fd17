//! The on-disk record: one mutation of one bank, appended to a volume.
//!
//! Every record is self-checking, so a reader never has to trust the index that pointed at it: a magic, the
//! generation of the volume it was written in (a volume reused since reads as a miss, not as someone else's
//! data), its own length, the bank and the key (the original's "consistency check", extended to banks), and
//! a CRC32C over everything after the CRC field. A torn or flipped record fails the check and is a miss.
//!
//! Layout, little-endian, 48-byte header then the payload:
//!
//! ```text
//!  0  magic       u32  "BCR1"
//!  4  crc32c      u32  over bytes 8..len
//!  8  len         u32  whole record, header included
//! 12  generation  u32  of the volume when written
//! 16  kind        u8   1 put, 2 delete, 3 bank reset, 4 touch
//! 17  flags       u8   bit 0: the value is raw bytes (else JSON text)
//! 18  bank_len    u16
//! 20  key_len     u16
//! 22  seq_high    u16  bits 32..48 of seq
//! 24  value_len   u32
//! 28  seq_low     u32  bits 0..32 of seq: the entry's place in its bank's insertion order
//! 32  deadline    u64  Unix ms; u64::MAX for none
//! 40  lifetime    u64  ms, what `touch` restarts; 0 for none
//! 48  bank, key, value bytes
//! ```

use std::fmt;

/// First four bytes of every record.
pub const MAGIC: [u8; 4] = *b"BCR1";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 48;
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
}

impl Kind {
    /// The kind a stored byte names.
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Put),
            2 => Some(Kind::Delete),
            3 => Some(Kind::Reset),
            4 => Some(Kind::Touch),
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
    /// The entry's insertion order in its bank (48 bits), so `bank.keys` keeps its order across a restart.
    pub seq: u64,
}

/// A decoded record borrowing its payload from the buffer it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Kind, flags, deadline, lifetime.
    pub meta: Meta,
    /// Generation of the volume it was written in.
    pub generation: u32,
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
    /// The checksum does not match: damaged or torn.
    BadChecksum,
    /// An unknown kind byte.
    BadKind,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordError::BadMagic => "no record magic",
            RecordError::Truncated => "record cut short",
            RecordError::BadLength => "record lengths disagree",
            RecordError::BadChecksum => "record checksum mismatch",
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
    meta: Meta,
    bank: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<(), RecordError> {
    encode_head(out, generation, meta, bank, key, value)?;
    out.extend_from_slice(value);
    Ok(())
}

/// Appends everything of a record but its value to `out` (the header, whose CRC covers the value too, then
/// bank and key), so a writer can hand the kernel the value where it already lies instead of copying it
/// behind the header first.
pub fn encode_head(
    out: &mut Vec<u8>,
    generation: u32,
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
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    out.extend_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    out.push(meta.kind as u8);
    out.push(meta.flags);
    out.extend_from_slice(&bank_len.to_le_bytes());
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&((meta.seq >> 32) as u16).to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(&(meta.seq as u32).to_le_bytes());
    out.extend_from_slice(&meta.deadline.to_le_bytes());
    out.extend_from_slice(&meta.lifetime.to_le_bytes());
    out.extend_from_slice(bank);
    out.extend_from_slice(key);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start + 8..]), value);
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

/// The record header's claims, unchecked: its whole length, generation, bank and key. Used at start-up to
/// step over a damaged record whose header still hangs together, so that the records after it are not
/// lost and its key can be treated as gone.
pub fn peek(buf: &[u8]) -> Option<(usize, u32, &[u8], &[u8])> {
    let (len, generation) = peek_len(buf)?;
    let (bank_len, key_len) = (u16_at(buf, 18), u16_at(buf, 20));
    let bank_end = HEADER_LEN + bank_len;
    let names = buf.get(HEADER_LEN..bank_end).zip(buf.get(bank_end..bank_end + key_len))?;
    Some((len, generation, names.0, names.1))
}

/// The header's claimed record length and generation, when the header (the first 48 bytes) hangs together.
pub fn peek_len(buf: &[u8]) -> Option<(usize, u32)> {
    if buf.len() < HEADER_LEN || buf[..4] != MAGIC {
        return None;
    }
    let len = u32_at(buf, 8) as usize;
    let (bank_len, key_len, value_len) = (u16_at(buf, 18), u16_at(buf, 20), u32_at(buf, 24) as usize);
    (len == HEADER_LEN + bank_len + key_len + value_len).then(|| (len, u32_at(buf, 12)))
}

/// Reads the record at the start of `buf`, checking everything.
pub fn decode(buf: &[u8]) -> Result<Record<'_>, RecordError> {
    if buf.len() < HEADER_LEN {
        return Err(if buf.len() >= 4 && buf[..4] != MAGIC {
            RecordError::BadMagic
        } else {
            RecordError::Truncated
        });
    }
    if buf[..4] != MAGIC {
        return Err(RecordError::BadMagic);
    }
    let len = u32_at(buf, 8) as usize;
    let (bank_len, key_len, value_len) = (u16_at(buf, 18), u16_at(buf, 20), u32_at(buf, 24) as usize);
    if len != HEADER_LEN + bank_len + key_len + value_len {
        return Err(RecordError::BadLength);
    }
    if buf.len() < len {
        return Err(RecordError::Truncated);
    }
    if crc32c::crc32c(&buf[8..len]) != u32_at(buf, 4) {
        return Err(RecordError::BadChecksum);
    }
    let kind = Kind::from_u8(buf[16]).ok_or(RecordError::BadKind)?;
    let bank_end = HEADER_LEN + bank_len;
    let key_end = bank_end + key_len;
    Ok(Record {
        meta: Meta {
            kind,
            flags: buf[17],
            deadline: u64_at(buf, 32),
            lifetime: u64_at(buf, 40),
            seq: (u64::from(u16_at(buf, 22) as u16) << 32) | u64::from(u32_at(buf, 28)),
        },
        generation: u32_at(buf, 12),
        bank: &buf[HEADER_LEN..bank_end],
        key: &buf[bank_end..key_end],
        value: &buf[key_end..len],
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUT: Meta = Meta { kind: Kind::Put, flags: 0, deadline: NO_DEADLINE, lifetime: 0, seq: 0 };

    fn one(generation: u32, meta: Meta, bank: &str, key: &str, value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode(&mut out, generation, meta, bank.as_bytes(), key.as_bytes(), value.as_bytes()).unwrap();
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
        let buf = one(7, meta, "bank", "ключ", "{\"a\":1}");
        assert_eq!(buf.len(), encoded_len(b"bank", "ключ".as_bytes(), b"{\"a\":1}"));
        let r = decode(&buf).unwrap();
        assert_eq!(r.meta, meta);
        assert_eq!(r.generation, 7);
        assert_eq!((r.bank, r.key, r.value), (&b"bank"[..], "ключ".as_bytes(), &b"{\"a\":1}"[..]));
        assert_eq!(r.len, buf.len());
    }

    #[test]
    fn records_follow_each_other() {
        let mut buf = one(1, PUT, "b", "k1", "1");
        buf.extend(one(1, Meta { kind: Kind::Delete, ..PUT }, "b", "k1", ""));
        buf.extend(one(1, Meta { kind: Kind::Reset, ..PUT }, "b", "", ""));
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < buf.len() {
            let r = decode(&buf[at..]).unwrap();
            kinds.push(r.meta.kind);
            at += r.len;
        }
        assert_eq!(kinds, [Kind::Put, Kind::Delete, Kind::Reset]);
    }

    #[test]
    fn every_single_bit_flip_is_caught() {
        let buf = one(3, PUT, "bank", "key", "some value");
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip of bit {bit} in byte {byte} went unnoticed");
            }
        }
    }

    #[test]
    fn torn_tails_and_zeroes() {
        let buf = one(3, PUT, "bank", "key", "some value");
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode(&[0; 100]), Err(RecordError::BadMagic));
        assert_eq!(decode(&[]), Err(RecordError::Truncated));
    }

    #[test]
    fn oversized_fields_are_refused() {
        let long = vec![b'k'; 70_000];
        assert_eq!(encode(&mut Vec::new(), 0, PUT, b"b", &long, b""), Err(RecordError::BadLength));
    }
}
