//! Index files: `index/<n>` lists, in write order, every record of volume `n`, so start-up rebuilds the
//! in-memory index by reading a few bytes per key instead of every value.
//!
//! The file starts with a header naming the volume generation it describes (an index left over from an
//! earlier use of the volume, or another volume's index put in its place, is recognised and ignored), and
//! each entry carries its own CRC32C and the LSN of its record, so a torn or damaged entry ends the list
//! cleanly and the LSNs prove the entries follow each other. An index is only ever a faster way to read
//! its volume's headers: where it ends, start-up reads the volume itself.
//!
//! ```text
//! header: magic "BCI2" | version u32 = 2 | generation u32 | crc32c of the 12 bytes before   (16 bytes)
//! entry:  crc32c u32 over 4..len | len u32 | kind u8 | flags u8 | bank_len u16 | key_len u16 | 0 u16
//!         | offset u32 | record_len u32 | lsn u64 | deadline u64 | lifetime u64 | seq u64
//!         | bank | key                                                                   (56 + names)
//! ```

use super::record::{u16_at, u32_at as le32, u64_at as le64, Kind, Meta};

/// First four bytes of an index file.
pub const MAGIC: [u8; 4] = *b"BCI2";
const VERSION: u32 = 2;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 16;
/// Bytes of an entry before its names.
pub const ENTRY_HEADER: usize = 56;

/// One index entry, borrowing its names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The record's kind, flags, deadline and lifetime.
    pub meta: Meta,
    /// Where the record starts in the volume.
    pub offset: u32,
    /// The record's whole length.
    pub len: u32,
    /// The record's place in the store's log.
    pub lsn: u64,
    /// Bank name.
    pub bank: &'a [u8],
    /// Key (empty for a reset).
    pub key: &'a [u8],
}

/// Writes an index file header for a volume generation.
pub fn encode_header(out: &mut Vec<u8>, generation: u32) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&generation.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..start + 12]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Reads a header: the generation it describes, or `None` if it is not a valid header.
pub fn decode_header(buf: &[u8]) -> Option<u32> {
    if buf.len() < HEADER_LEN || buf[..4] != MAGIC || le32(buf, 4) != VERSION {
        return None;
    }
    (crc32c::crc32c(&buf[..12]) == le32(buf, 12)).then(|| le32(buf, 8))
}

/// Appends one entry. Names longer than u16 cannot occur: records refuse them first.
pub fn encode_entry(out: &mut Vec<u8>, entry: &Entry<'_>) {
    let start = out.len();
    let len = ENTRY_HEADER + entry.bank.len() + entry.key.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.push(entry.meta.kind as u8);
    out.push(entry.meta.flags);
    out.extend_from_slice(&(entry.bank.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entry.key.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(&entry.offset.to_le_bytes());
    out.extend_from_slice(&entry.len.to_le_bytes());
    out.extend_from_slice(&entry.lsn.to_le_bytes());
    out.extend_from_slice(&entry.meta.deadline.to_le_bytes());
    out.extend_from_slice(&entry.meta.lifetime.to_le_bytes());
    out.extend_from_slice(&entry.meta.seq.to_le_bytes());
    out.extend_from_slice(entry.bank);
    out.extend_from_slice(entry.key);
    let crc = crc32c::crc32c(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The length the entry at the start of `buf` declares: `None` when the lengths in its fixed part (which
/// `buf` must hold) do not agree, as in a damaged entry.
pub fn entry_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < ENTRY_HEADER {
        return None;
    }
    let len = le32(buf, 4) as usize;
    (len == ENTRY_HEADER + u16_at(buf, 10) + u16_at(buf, 12)).then_some(len)
}

/// Reads the entry at the start of `buf`: the entry and its length, or `None` at a torn or damaged entry
/// (which ends the usable part of the file).
pub fn decode_entry(buf: &[u8]) -> Option<(Entry<'_>, usize)> {
    if buf.len() < ENTRY_HEADER {
        return None;
    }
    let len = le32(buf, 4) as usize;
    let (bank_len, key_len) = (u16_at(buf, 10), u16_at(buf, 12));
    if len != ENTRY_HEADER + bank_len + key_len || buf.len() < len {
        return None;
    }
    if crc32c::crc32c(&buf[4..len]) != le32(buf, 0) {
        return None;
    }
    let kind = Kind::from_u8(buf[8])?;
    let bank_end = ENTRY_HEADER + bank_len;
    Some((
        Entry {
            meta: Meta {
                kind,
                flags: buf[9],
                deadline: le64(buf, 32),
                lifetime: le64(buf, 40),
                seq: le64(buf, 48),
            },
            offset: le32(buf, 16),
            len: le32(buf, 20),
            lsn: le64(buf, 24),
            bank: &buf[ENTRY_HEADER..bank_end],
            key: &buf[bank_end..len],
        },
        len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::NO_DEADLINE;

    fn entry<'a>(kind: Kind, bank: &'a str, key: &'a str, offset: u32) -> Entry<'a> {
        Entry {
            meta: Meta { kind, flags: 0, deadline: NO_DEADLINE, lifetime: 0, seq: 7 },
            offset,
            len: 77,
            lsn: u64::from(offset) + 1000,
            bank: bank.as_bytes(),
            key: key.as_bytes(),
        }
    }

    #[test]
    fn header_round_trip_and_damage() {
        let mut h = Vec::new();
        encode_header(&mut h, 42);
        assert_eq!(decode_header(&h), Some(42));
        for i in 0..h.len() {
            let mut bad = h.clone();
            bad[i] ^= 0x10;
            assert_eq!(decode_header(&bad), None, "byte {i}");
        }
    }

    #[test]
    fn entries_round_trip_in_order() {
        let mut buf = Vec::new();
        let written = [
            entry(Kind::Put, "b", "k1", 0),
            entry(Kind::Delete, "b", "ключ", 77),
            entry(Kind::Reset, "b", "", 154),
        ];
        for e in &written {
            encode_entry(&mut buf, e);
        }
        let mut at = 0;
        let mut read = Vec::new();
        while let Some((e, n)) = decode_entry(&buf[at..]) {
            read.push(e);
            at += n;
        }
        assert_eq!(read, written);
        assert_eq!(at, buf.len());
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn entry() -> impl Strategy<Value = (Meta, u32, u32, u64, Vec<u8>, Vec<u8>)> {
            let meta = crate::store::record::tests::properties::meta();
            let name = || prop::collection::vec(any::<u8>(), 0..40);
            (meta, any::<u32>(), any::<u32>(), any::<u64>(), name(), name())
        }

        fn encoded(e: &(Meta, u32, u32, u64, Vec<u8>, Vec<u8>)) -> Vec<u8> {
            let (meta, offset, len, lsn, bank, key) = e;
            let mut buf = Vec::new();
            encode_entry(&mut buf, &Entry { meta: *meta, offset: *offset, len: *len, lsn: *lsn, bank, key });
            buf
        }

        proptest! {
            /// Any entry round-trips, and so does a header of any generation.
            #[test]
            fn any_entry_and_header_round_trip(e in entry(), generation in any::<u32>()) {
                let buf = encoded(&e);
                let (meta, offset, len, lsn, bank, key) = &e;
                let want = Entry { meta: *meta, offset: *offset, len: *len, lsn: *lsn, bank, key };
                prop_assert_eq!(decode_entry(&buf), Some((want, buf.len())));
                let mut header = Vec::new();
                encode_header(&mut header, generation);
                prop_assert_eq!(decode_header(&header), Some(generation));
            }

            /// Any single corruption of an entry or of a header (a changed byte anywhere, or a cut at any
            /// length) is detected: it ends the list, never reads as another entry or generation.
            #[test]
            fn any_single_corruption_of_an_entry_or_header_is_detected(
                e in entry(),
                generation in any::<u32>(),
                at in any::<prop::sample::Index>(),
                xor in 1u8..,
            ) {
                let buf = encoded(&e);
                let mut bad = buf.clone();
                bad[at.index(buf.len())] ^= xor;
                prop_assert_eq!(decode_entry(&bad), None);
                for cut in 0..buf.len() {
                    prop_assert_eq!(decode_entry(&buf[..cut]), None, "cut at {}", cut);
                }
                let mut header = Vec::new();
                encode_header(&mut header, generation);
                let mut bad = header.clone();
                bad[at.index(header.len())] ^= xor;
                prop_assert_eq!(decode_header(&bad), None);
                for cut in 0..header.len() {
                    prop_assert_eq!(decode_header(&header[..cut]), None, "cut at {}", cut);
                }
            }
        }
    }

    #[test]
    fn a_torn_or_flipped_entry_ends_the_list() {
        let mut buf = Vec::new();
        encode_entry(&mut buf, &entry(Kind::Put, "b", "key", 0));
        for cut in 0..buf.len() {
            assert!(decode_entry(&buf[..cut]).is_none(), "cut {cut}");
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(decode_entry(&bad).is_none(), "flip in byte {i}");
        }
    }
}
