//! Start-up: rebuilding the store's state from its volumes, trusting nothing that cannot be proven.
//!
//! The invariant recovery keeps: after any crash and any damage to the files, every key holds the value of
//! its newest acknowledged write (with its newest acknowledged lifetime), or nothing. Never an older value,
//! never bytes that were not written as that key's value. Forgetting is allowed (it is a cache); lying is
//! not. How the log proves what is newest:
//!
//! - **Every record carries an LSN**, one more than the record written before it, store-wide. Replayed in
//!   generation and offset order, the LSNs of what survives must follow each other. Where they do not, the
//!   records in between are lost (unreadable damage, a volume deleted or replaced, a file cut short), and
//!   any of them may have been a newer write of any key. So every key whose value was written before the
//!   last such gap is *unprovable* and is dropped; keys written after it stand. Volumes that were reused
//!   (the oldest, in turn) are not a gap: everything before them was recycled, older values included.
//! - **Two checksums per record.** A record whose header (with its key and LSN) is sound but whose value
//!   is damaged is a known loss: that key's newest value is gone, so the key is dropped, and nothing else.
//!   A record whose header is damaged could have been for any key: the scan finds the next sound record of
//!   the volume's generation and the LSNs show the gap.
//! - **Index files are only a faster way to read headers.** An index is used when its header names the
//!   volume's generation, its entries' offsets and LSNs follow each other, and its first and last entries
//!   agree with the records they point to (a sound header that disagrees means the index or the volume was
//!   replaced); past its end the volume itself is read. Entries have their own CRCs, so a torn or damaged
//!   entry simply ends the index. A damaged record under a sound entry is found when it is read: a miss.
//! - **Newer evidence than the data.** The checkpoint (the LSN of the last record written, saved with
//!   every sync) and the LSNs of index entries that describe more than the volumes hold prove that records
//!   existed past the end of what could be read: then the tail of the log was lost and every key is
//!   unprovable.
//! - **A torn tail is not a gap.** A write cut short by a crash was never acknowledged: it is the last thing
//!   in the log, and nothing after it proves it existed. Its bytes are cleared so that they are not found
//!   again behind the records written next.
//!
//! The cost stays what it was for an undamaged store: the index files are read, plus the part of each
//! volume past its index and one record header per end of an index.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::Path;

use super::io::{self, Scanner};
use super::{index_path, Location, Recovered};
use crate::store::index::{self, Entry};
use crate::store::record::{self, Head, Kind, Meta};

/// Why recovery dropped what it dropped, and what it found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Volumes holding data of their current generation.
    pub volumes: u32,
    /// Records recovered.
    pub records: u64,
    /// Index files that were missing, did not match, or stopped short, and were rewritten.
    pub rebuilt_indexes: u32,
    /// Bytes at the end of the current volume that did not form a record (a write cut short) and were cut.
    pub torn_tail_bytes: u64,
    /// Damaged records and unreadable regions found (each loses its key, or shows a gap).
    pub damaged_records: u64,
    /// Keys dropped because a gap in the log made their value unprovable (filled in by the store).
    pub unprovable_keys: u64,
    /// Index entries that described an earlier use of their volume, or another volume, and were ignored.
    pub recycled_entries: u64,
    /// Records stepped over as dead: an earlier start-up found the log broken after them.
    pub dead_records: u64,
    /// Log positions of the gaps found: every key whose value was written before the last one is dropped.
    pub(crate) floor: Option<u64>,
    /// One line per volume, for the start-up log.
    pub lines: Vec<String>,
}

impl RecoveryReport {
    /// The log position before which no value can be proven newest (`u64::MAX`: none can), if any.
    pub fn floor(&self) -> Option<u64> {
        self.floor
    }
}

/// Follows the LSNs of what is replayed, in order, and notes where they do not follow each other.
#[derive(Debug, Default)]
pub(super) struct Chain {
    /// The LSN of the last record replayed.
    last: Option<u64>,
    /// The highest LSN seen anywhere: records, index entries, the checkpoint.
    pub(super) highest: u64,
    /// Records with an LSN up to this one are dead: an earlier start-up found the log broken after them
    /// (the checkpoint keeps this), so they are stepped over, not applied.
    pub(super) dead_up_to: u64,
    /// Position of the record after the last gap found now, and the LSN before it.
    gap: Option<(u64, u64)>,
    /// The log's tail is known to be lost (or cannot be known): no value can be proven newest.
    tail_lost: bool,
}

impl Chain {
    /// Notes a record (or a known loss) with `lsn` at `at`; returns whether it is to be applied (records
    /// declared dead by an earlier start-up are not).
    fn note(&mut self, lsn: u64, at: Location) -> bool {
        if let Some(last) = self.last {
            // Records missing up to `dead_up_to` were given up by an earlier start-up: not a new gap.
            if last.checked_add(1) != Some(lsn) && lsn.saturating_sub(1) > self.dead_up_to {
                log::warn!(
                    "the log jumps from LSN {last} to {lsn} at data/{} offset {}: records in between are lost",
                    at.volume,
                    at.offset
                );
                self.gap = Some((at.log_position(), lsn.saturating_sub(1)));
            }
        }
        self.last = Some(lsn);
        self.highest = self.highest.max(lsn);
        lsn > self.dead_up_to
    }

    /// Notes evidence that a record with `lsn` existed.
    pub(super) fn evidence(&mut self, lsn: u64) {
        self.highest = self.highest.max(lsn);
    }

    /// Notes that the log's tail is lost, or cannot be known, and why.
    pub(super) fn lose_tail(&mut self, why: &str) {
        log::warn!("{why}: the end of the log cannot be trusted, so no value can be proven newest");
        self.tail_lost = true;
    }

    /// Once everything is replayed: the log position before which no value can be proven newest (past the
    /// last gap; or everything, when evidence shows the log went on past what could be read), and the LSN
    /// up to which records are dead from now on, for the checkpoint to keep.
    pub(super) fn finish(&self) -> (Option<u64>, u64) {
        let lost_tail = self.tail_lost
            || match self.last {
                Some(last) if self.highest > last => {
                    log::warn!(
                        "records up to LSN {} were written but the log ends at {last}: its tail is lost",
                        self.highest
                    );
                    true
                }
                None => self.highest > self.dead_up_to,
                Some(_) => false,
            };
        if lost_tail {
            return (Some(u64::MAX), self.highest.max(self.dead_up_to));
        }
        match self.gap {
            Some((position, dead)) => (Some(position), dead.max(self.dead_up_to)),
            None => (None, self.dead_up_to),
        }
    }
}

/// What replaying one volume found.
pub(super) struct Replayed {
    /// Records (and known losses) applied.
    pub records: u64,
    /// Records stepped over as dead (an earlier start-up found the log broken after them).
    pub dead: u64,
    /// Damaged records and unreadable regions.
    pub damaged: u64,
    /// Where valid data ends.
    pub end: u64,
    /// The index did not cover the volume and was written anew.
    pub rebuilt: bool,
    /// Index entries ignored as belonging elsewhere.
    pub recycled: u64,
}

/// Bytes of an index file read at a time at start-up: an index of millions of keys is hundreds of MB, which
/// start-up must not hold beside the tables it builds.
const INDEX_CHUNK: usize = 1 << 20;

/// An index file, read a chunk at a time.
struct IndexFile {
    file: File,
    len: u64,
    /// The chunk being read, reused from pass to pass.
    buf: Vec<u8>,
}

impl IndexFile {
    /// Opens an index file; `None` when it is missing or cannot be read, or is too short for a header.
    fn open(path: &Path) -> Option<(IndexFile, [u8; index::HEADER_LEN])> {
        let file = File::open(path).ok()?;
        let len = file.metadata().ok()?.len();
        let mut header = [0; index::HEADER_LEN];
        if io::read_at(&file, &mut header, 0).ok()? < header.len() {
            return None;
        }
        Some((IndexFile { file, len, buf: Vec::new() }, header))
    }

    /// Calls `f` with each entry from offset `from` on, in order, with the entry's offset, until `to` (or
    /// the file's end), the first entry that is torn or damaged (or cannot be read), or until `f` returns
    /// false. Returns where the entries given to `f` and accepted end: the offset of the entry `f` refused,
    /// or of the first one not read.
    fn entries(&mut self, from: u64, to: u64, mut f: impl FnMut(Entry<'_>, u64) -> bool) -> u64 {
        self.entries_in_chunks(from, to, INDEX_CHUNK, &mut f)
    }

    fn entries_in_chunks(
        &mut self,
        from: u64,
        to: u64,
        chunk: usize,
        f: &mut impl FnMut(Entry<'_>, u64) -> bool,
    ) -> u64 {
        let to = to.min(self.len);
        if self.buf.len() < chunk {
            self.buf.resize(chunk, 0);
        }
        // `buf[start..filled]` holds the file's bytes from `base + start` on, read and not yet handed on.
        let (mut base, mut start, mut filled) = (from, 0usize, 0usize);
        loop {
            while filled - start >= index::ENTRY_HEADER {
                let rest = &self.buf[start..filled];
                let at = base + start as u64;
                let Some(len) = index::entry_len(rest) else { return at };
                if rest.len() < len {
                    break;
                }
                let Some((entry, used)) = index::decode_entry(rest) else { return at };
                if !f(entry, at) {
                    return at;
                }
                start += used;
            }
            let next = base + filled as u64;
            if next >= to {
                return base + start as u64;
            }
            self.buf.copy_within(start..filled, 0);
            (base, filled, start) = (base + start as u64, filled - start, 0);
            if filled == self.buf.len() {
                // One entry longer than a chunk (names of up to 128 KiB).
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let want = ((to - next) as usize).min(self.buf.len() - filled);
            match io::read_at(&self.file, &mut self.buf[filled..filled + want], next) {
                Ok(0) | Err(_) => return base,
                Ok(got) => filled += got,
            }
        }
    }

    /// The bytes of the entry at offset `at`, if it is whole and sound there.
    fn entry_at(&self, at: u64) -> Option<Vec<u8>> {
        let mut bytes = vec![0; index::ENTRY_HEADER];
        if io::read_at(&self.file, &mut bytes, at).ok()? < bytes.len() {
            return None;
        }
        let len = index::entry_len(&bytes)?;
        bytes.resize(len, 0);
        if io::read_at(&self.file, &mut bytes, at).ok()? < len {
            return None;
        }
        index::decode_entry(&bytes)?;
        Some(bytes)
    }

    /// The bytes from `from` to `to`.
    fn range(&self, from: u64, to: u64) -> Option<Vec<u8>> {
        let mut bytes = vec![0; usize::try_from(to.checked_sub(from)?).ok()?];
        (io::read_at(&self.file, &mut bytes, from).ok()? == bytes.len()).then_some(bytes)
    }
}

/// How much of an index file recovery may use: entries of its generation whose offsets and LSNs follow
/// each other from the start of the volume, up to the last one that agrees with its record. Returns the
/// byte length of the usable part (after the header) and how many entries were ignored as belonging to
/// another use of the volume. Entries are not kept: the caller reads them again, already checked.
fn usable_index(
    ix: &mut IndexFile,
    header: &[u8],
    generation: u32,
    scan: &mut Scanner<'_>,
    chain: &mut Chain,
) -> (u64, u64) {
    let start = index::HEADER_LEN as u64;
    let (mut offset, mut lsn) = (0u64, None::<u64>);
    let (mut decoded, mut ends) = (0u64, std::collections::VecDeque::new());
    let pos = ix.entries(start, u64::MAX, |e, at| {
        decoded += 1;
        chain.evidence(e.lsn);
        let follows = u64::from(e.offset) == offset
            && lsn.is_none_or(|l| l.checked_add(1) == Some(e.lsn))
            && e.len as usize >= record::HEADER_LEN;
        if !follows {
            return false;
        }
        offset += u64::from(e.len);
        lsn = Some(e.lsn);
        // Where each entry starts, for the last ones only: enough to step back from a bad end.
        if ends.len() == 64 {
            ends.pop_front();
        }
        ends.push_back(at);
        true
    });
    if index::decode_header(header) != Some(generation) {
        // Another use of the volume, or another volume's index: its LSNs are still evidence (above), its
        // entries describe nothing here.
        return (0, decoded);
    }
    // The first and the last entries must agree with their records. A record whose header is damaged
    // proves nothing either way (the entry stands, and a read of it is a miss); a sound header that says
    // something else, or nothing at all where a record should be (the volume file was lost or cut short),
    // means the index does not describe this volume's data there.
    let agrees = |scan: &mut Scanner<'_>, at: u64| {
        let Some(bytes) = ix.entry_at(at) else { return false };
        let Some((e, _)) = index::decode_entry(&bytes) else { return false };
        match read_head(scan, u64::from(e.offset)) {
            HeadAt::Sound(h) => same(&h, &e, generation),
            HeadAt::Damaged => true,
            HeadAt::Empty => false,
        }
    };
    if pos > start && !agrees(scan, start) {
        return (0, decoded);
    }
    let mut end = pos;
    while let Some(&last) = ends.back() {
        if agrees(scan, last) {
            break;
        }
        end = last;
        ends.pop_back();
    }
    if ends.is_empty() && end != pos {
        // More than the last 64 entries disagree: the index is not to be trusted at all.
        return (0, decoded);
    }
    (end - start, 0)
}

fn same(h: &Head<'_>, e: &Entry<'_>, generation: u32) -> bool {
    h.generation == generation
        && h.lsn == e.lsn
        && h.len == e.len as usize
        && h.meta == e.meta
        && h.bank == e.bank
        && h.key == e.key
}

/// What lies at an offset.
enum HeadAt<'a> {
    /// A record whose header checks out.
    Sound(Head<'a>),
    /// Bytes that do not form a sound header.
    Damaged,
    /// Zeroes: no record was written here.
    Empty,
}

fn read_head<'s>(scan: &'s mut Scanner<'_>, at: u64) -> HeadAt<'s> {
    let first = scan.read(at, record::HEADER_LEN);
    if first.iter().all(|&b| b == 0) {
        return HeadAt::Empty;
    }
    let Some(len) = record::head_len(first) else { return HeadAt::Damaged };
    match record::decode_head(scan.read(at, len)) {
        Ok(h) => HeadAt::Sound(h),
        Err(_) => HeadAt::Damaged,
    }
}

/// Replays volume `n` of `generation`, oldest record first, calling `apply` for each record and noting
/// LSNs in `chain`. Uses the index as far as it can be trusted, then reads the volume from there until its
/// data ends. If the index had to be completed it is rewritten (best effort: on a full disk the next
/// start-up reads the volume again).
#[allow(clippy::too_many_arguments)]
pub(super) fn replay(
    dir: &Path,
    disk: Option<&io::DiskBudget>,
    n: u32,
    generation: u32,
    file: &File,
    size: u64,
    chain: &mut Chain,
    apply: &mut impl FnMut(&Recovered<'_>),
) -> Replayed {
    let mut out = Replayed { records: 0, dead: 0, damaged: 0, end: 0, rebuilt: false, recycled: 0 };
    let mut scan = Scanner::new(file, size);
    let mut entries_out: Vec<u8> = Vec::new();
    let mut index_file = IndexFile::open(&index_path(dir, n));
    let mut at = 0u64;
    let start = index::HEADER_LEN as u64;
    let mut indexed = start..start;
    match &mut index_file {
        Some((ix, header)) => {
            let (usable, recycled) = usable_index(ix, header, generation, &mut scan, chain);
            out.recycled = recycled;
            // Where the entries applied end: the usable part, unless it cannot be read a second time.
            let end = ix.entries(start, start + usable, |e, _| {
                let location = Location { volume: n, offset: e.offset, len: e.len, generation };
                if chain.note(e.lsn, location) {
                    apply(&Recovered {
                        meta: e.meta,
                        bank: Cow::Borrowed(e.bank),
                        key: Cow::Borrowed(e.key),
                        location,
                    });
                    out.records += 1;
                } else {
                    out.dead += 1;
                }
                at = u64::from(e.offset) + u64::from(e.len);
                true
            });
            indexed = start..end;
            out.rebuilt = index::decode_header(header) != Some(generation) || end != ix.len;
        }
        None => {
            log::warn!("index/{n} is missing; reading data/{n} instead");
            out.rebuilt = true;
        }
    }
    loop {
        if at + record::HEADER_LEN as u64 > size {
            break;
        }
        let found = match read_head(&mut scan, at) {
            HeadAt::Empty => break,
            HeadAt::Sound(h) if h.generation != generation => break, // an earlier use of the volume
            HeadAt::Sound(h) if at + h.len as u64 > size => Found::Unreadable,
            HeadAt::Sound(h) => {
                let (meta, bank, key, lsn, len) = (h.meta, h.bank.to_vec(), h.key.to_vec(), h.lsn, h.len);
                let names_end = len - h.value_len;
                let whole = scan.read(at, len);
                let value_ok = whole.len() == len
                    && record::decode_head(whole).and_then(|h| h.with_value(&whole[names_end..])).is_ok();
                Found::Record { meta, bank, key, lsn, len, value_ok }
            }
            HeadAt::Damaged => Found::Unreadable,
        };
        match found {
            Found::Record { meta, bank, key, lsn, len, value_ok } => {
                let location = Location { volume: n, offset: at as u32, len: len as u32, generation };
                // A sound header with a damaged value: this key's newest value is lost, and only that.
                let meta = if value_ok {
                    meta
                } else {
                    log::warn!(
                        "data/{n}: the value of the record at offset {at} is damaged; its key is dropped"
                    );
                    out.damaged += 1;
                    Meta { kind: Kind::Delete, ..meta }
                };
                if chain.note(lsn, location) {
                    apply(&Recovered {
                        meta,
                        bank: Cow::Borrowed(&bank),
                        key: Cow::Borrowed(&key),
                        location,
                    });
                } else {
                    out.dead += 1;
                }
                index::encode_entry(
                    &mut entries_out,
                    &Entry { meta, offset: location.offset, len: location.len, lsn, bank: &bank, key: &key },
                );
                out.records += 1;
                out.rebuilt = true;
                at += len as u64;
            }
            Found::Unreadable => {
                // Find the next sound record of this generation; what lies between is unreadable, and the
                // LSNs will show what it held. With none after it, this is the torn tail.
                match resync(&mut scan, at + 1, generation, size) {
                    Some(next) => {
                        log::warn!("data/{n}: bytes {at}..{next} are damaged and cannot be read");
                        out.damaged += 1;
                        out.rebuilt = true;
                        at = next;
                    }
                    None => break,
                }
            }
        }
    }
    if out.rebuilt {
        // The entries kept are read again: only a rewrite (after a crash, or damage) holds them in memory.
        let kept = match &index_file {
            Some((ix, _)) => ix.range(indexed.start, indexed.end),
            None => Some(Vec::new()),
        };
        let Some(kept) = kept else {
            log::warn!(
                "cannot read index/{n} again to rewrite it; the next start-up will read data/{n} again"
            );
            out.end = at;
            return out;
        };
        let mut buf = Vec::with_capacity(index::HEADER_LEN + kept.len() + entries_out.len());
        index::encode_header(&mut buf, generation);
        buf.extend_from_slice(&kept);
        buf.extend_from_slice(&entries_out);
        if let Err(e) = io::write_file_atomically(&index_path(dir, n), &buf, disk, true) {
            log::warn!("cannot rewrite index/{n} ({e}); the next start-up will read data/{n} again");
        }
    }
    out.end = at;
    out
}

/// How many put records each bank has in the index files of `dir`, so that start-up can size each bank's
/// table once before replaying instead of growing it step by step. A hint, not a proof: a file's count
/// stops at its first damaged entry, index files of earlier uses of a volume count too, and so do puts
/// later overwritten or deleted. Files are read a chunk at a time, as replay reads them.
pub fn census(dir: &Path, volume_count: u32) -> HashMap<Box<[u8]>, usize> {
    census_in_chunks(dir, volume_count, INDEX_CHUNK)
}

fn census_in_chunks(dir: &Path, volume_count: u32, chunk: usize) -> HashMap<Box<[u8]>, usize> {
    let mut counts: HashMap<Box<[u8]>, usize> = HashMap::new();
    for n in 0..volume_count {
        let Some((mut ix, header)) = IndexFile::open(&index_path(dir, n)) else { continue };
        if index::decode_header(&header).is_none() {
            continue;
        }
        ix.entries_in_chunks(index::HEADER_LEN as u64, u64::MAX, chunk, &mut |e, _| {
            if e.meta.kind == Kind::Put {
                match counts.get_mut(e.bank) {
                    Some(count) => *count += 1,
                    None => drop(counts.insert(e.bank.into(), 1)),
                }
            }
            true
        });
    }
    counts
}

/// What the scan found at an offset.
enum Found {
    /// A record with a sound header; `value_ok` whether its value checks out too.
    Record { meta: Meta, bank: Vec<u8>, key: Vec<u8>, lsn: u64, len: usize, value_ok: bool },
    /// Bytes that are not a sound record.
    Unreadable,
}

/// The offset of the next record of `generation` with a sound header at or after `from`.
fn resync(scan: &mut Scanner<'_>, from: u64, generation: u32, size: u64) -> Option<u64> {
    let mut at = from;
    loop {
        let found = scan.find(at, &record::MAGIC)?;
        if let HeadAt::Sound(h) = read_head(scan, found) {
            if h.generation == generation && found + h.len as u64 <= size {
                return Some(found);
            }
        }
        at = found + 1;
    }
}

/// The first generation the data of a volume holds: that of its first sound record (damaged bytes at the
/// start are stepped over), or 0 for an empty volume.
pub(super) fn first_generation(file: &File, size: u64) -> u32 {
    let mut scan = Scanner::new(file, size);
    match read_head(&mut scan, 0) {
        HeadAt::Sound(h) => h.generation,
        HeadAt::Empty => 0,
        HeadAt::Damaged => match scan.find(1, &record::MAGIC) {
            Some(_) => {
                let mut at = 1;
                while let Some(found) = scan.find(at, &record::MAGIC) {
                    if let HeadAt::Sound(h) = read_head(&mut scan, found) {
                        return h.generation;
                    }
                    at = found + 1;
                }
                0
            }
            None => 0,
        },
    }
}

/// Clears bytes past the end of the current volume's data that are not records of an earlier use (a write
/// cut short), so that a later scan does not find them behind the records written next. Returns how many.
pub(super) fn clear_torn_tail(
    file: &File,
    disk: Option<&io::DiskBudget>,
    end: u64,
    size: u64,
    generation: u32,
) -> u64 {
    /// How far past the end of valid data to look.
    const WINDOW: usize = 1 << 20;
    let mut scan = Scanner::new(file, size);
    if let HeadAt::Sound(h) = read_head(&mut scan, end) {
        if h.generation != generation {
            return 0; // records of an earlier use of the volume: not torn
        }
    }
    let window = scan.read(end, WINDOW).to_vec();
    let Some(last) = window.iter().rposition(|&b| b != 0) else { return 0 };
    if let Err(e) = io::write_at(file, disk, &vec![0; last + 1], end) {
        // On a full disk the next start-up simply finds them again.
        log::warn!("cannot clear the torn tail of the current volume: {e}");
    }
    last as u64 + 1
}

/// The checkpoint file: where the log's tail is. Rewritten in place after every record (one small positioned
/// write into a page of the kernel's cache, which needs no new space on a full disk), so it is the
/// evidence of how far the log went even when the volume holding the tail is damaged or replaced.
pub(super) const CHECKPOINT: &str = "CHECKPOINT";
const CHECKPOINT_MAGIC: [u8; 4] = *b"BCK3";
/// Bytes of a checkpoint: magic, LSN, generation, volume, dead-up-to LSN, CRC32C of the bytes before it.
pub const CHECKPOINT_LEN: usize = 32;

/// The log's tail as the checkpoint records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The LSN of the last record written.
    pub lsn: u64,
    /// The generation being written.
    pub generation: u32,
    /// The volume being written.
    pub volume: u32,
    /// Records with an LSN up to this one are dead: a start-up found the log broken after them.
    pub dead_up_to: u64,
}

impl Checkpoint {
    /// The checkpoint's bytes.
    pub fn encode(&self) -> [u8; CHECKPOINT_LEN] {
        let mut out = [0u8; CHECKPOINT_LEN];
        out[..4].copy_from_slice(&CHECKPOINT_MAGIC);
        out[4..12].copy_from_slice(&self.lsn.to_le_bytes());
        out[12..16].copy_from_slice(&self.generation.to_le_bytes());
        out[16..20].copy_from_slice(&self.volume.to_le_bytes());
        out[20..28].copy_from_slice(&self.dead_up_to.to_le_bytes());
        let crc = crc32c::crc32c(&out[..28]);
        out[28..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// A checkpoint from its bytes, if they are sound.
    pub fn decode(buf: &[u8]) -> Option<Checkpoint> {
        if buf.len() != CHECKPOINT_LEN || buf[..4] != CHECKPOINT_MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(buf[28..32].try_into().ok()?);
        if crc32c::crc32c(&buf[..28]) != crc {
            return None;
        }
        Some(Checkpoint {
            lsn: u64::from_le_bytes(buf[4..12].try_into().ok()?),
            generation: u32::from_le_bytes(buf[12..16].try_into().ok()?),
            volume: u32::from_le_bytes(buf[16..20].try_into().ok()?),
            dead_up_to: u64::from_le_bytes(buf[20..28].try_into().ok()?),
        })
    }
}

/// What the checkpoint file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tail {
    /// There is none: a new store (or one whose checkpoint was deleted).
    Missing,
    /// There is one, but it cannot be read.
    Damaged,
    /// The log's tail.
    Known(Checkpoint),
}

/// Reads the checkpoint.
pub(super) fn read_checkpoint(dir: &Path) -> Tail {
    match fs::read(dir.join(CHECKPOINT)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Tail::Missing,
        Err(_) => Tail::Damaged,
        Ok(buf) => Checkpoint::decode(&buf).map_or(Tail::Damaged, Tail::Known),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn checkpoint() -> impl Strategy<Value = Checkpoint> {
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
            |(lsn, generation, volume, dead_up_to)| Checkpoint { lsn, generation, volume, dead_up_to },
        )
    }

    proptest! {
        /// Any checkpoint round-trips.
        #[test]
        fn any_checkpoint_round_trips(ck in checkpoint()) {
            prop_assert_eq!(Checkpoint::decode(&ck.encode()), Some(ck));
        }

        /// Any single corruption of a checkpoint (a changed byte anywhere, cut at any length, or a byte too
        /// many) is detected: it reads as damaged, never as another tail of the log.
        #[test]
        fn any_single_corruption_of_a_checkpoint_is_detected(
            ck in checkpoint(),
            at in 0..CHECKPOINT_LEN,
            xor in 1u8..,
            extra in any::<u8>(),
        ) {
            let buf = ck.encode();
            let mut bad = buf;
            bad[at] ^= xor;
            prop_assert_eq!(Checkpoint::decode(&bad), None);
            for cut in 0..CHECKPOINT_LEN {
                prop_assert_eq!(Checkpoint::decode(&buf[..cut]), None, "cut at {}", cut);
            }
            let mut longer = buf.to_vec();
            longer.push(extra);
            prop_assert_eq!(Checkpoint::decode(&longer), None);
        }

        /// An index file read a chunk at a time gives the same entries, at the same offsets, stopping at
        /// the same place, as the whole file decoded at once, whatever the chunk size and whatever follows
        /// the entries (a torn entry, garbage, nothing).
        #[test]
        fn index_chunks_read_what_the_whole_file_holds(
            entries in prop::collection::vec((0usize..300, any::<u64>()), 0..120),
            tail in prop::collection::vec(any::<u8>(), 0..300),
            chunk in prop::sample::select(vec![56usize, 57, 100, 1000, 1 << 20]),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut buf = Vec::new();
            index::encode_header(&mut buf, 1);
            for (n, &(key_len, lsn)) in entries.iter().enumerate() {
                let meta = Meta { kind: Kind::Put, flags: 0, deadline: record::NO_DEADLINE, lifetime: 0, seq: n as u64 };
                let key = vec![b'k'; key_len];
                let e = Entry { meta, offset: n as u32, len: 64, lsn, bank: b"b", key: &key };
                index::encode_entry(&mut buf, &e);
            }
            buf.extend_from_slice(&tail);
            let path = dir.path().join("index");
            fs::write(&path, &buf).unwrap();
            let mut whole = Vec::new();
            let mut pos = index::HEADER_LEN;
            while let Some((e, used)) = index::decode_entry(&buf[pos..]) {
                whole.push((pos as u64, e.lsn, e.key.len()));
                pos += used;
            }
            let (mut ix, _) = IndexFile::open(&path).unwrap();
            let mut chunked = Vec::new();
            let end = ix.entries_in_chunks(index::HEADER_LEN as u64, u64::MAX, chunk, &mut |e, at| {
                chunked.push((at, e.lsn, e.key.len()));
                true
            });
            prop_assert_eq!(&chunked, &whole);
            prop_assert_eq!(end, pos as u64);
            // Stopping early, and stopping at `to`, give the same prefix.
            if let Some(&(third, _, _)) = whole.get(2) {
                let mut seen = 0;
                let stop = ix.entries_in_chunks(index::HEADER_LEN as u64, u64::MAX, chunk, &mut |_, _| {
                    seen += 1;
                    seen < 3
                });
                prop_assert_eq!(stop, third);
                let mut upto = 0;
                let stop = ix.entries_in_chunks(index::HEADER_LEN as u64, third, chunk, &mut |_, _| {
                    upto += 1;
                    true
                });
                prop_assert_eq!((stop, upto), (third, 2));
            }
        }

        /// The census counts every put entry of an index file, read in chunks of any size, and stops
        /// without a panic where the file turns to garbage (any bytes, any length).
        #[test]
        fn census_counts_puts_and_survives_any_tail(
            entries in prop::collection::vec((0u8..3, 0usize..40, any::<bool>()), 0..200),
            tail in prop::collection::vec(any::<u8>(), 0..400),
        ) {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("index")).unwrap();
            let mut buf = Vec::new();
            index::encode_header(&mut buf, 1);
            let mut expected: HashMap<Box<[u8]>, usize> = HashMap::new();
            for (n, &(bank, key_len, put)) in entries.iter().enumerate() {
                let bank = format!("bank{bank}").into_bytes();
                let kind = if put { Kind::Put } else { Kind::Delete };
                let meta = Meta { kind, flags: 0, deadline: record::NO_DEADLINE, lifetime: 0, seq: n as u64 };
                let key = vec![b'k'; key_len];
                let e = Entry { meta, offset: 0, len: 64, lsn: n as u64, bank: &bank, key: &key };
                index::encode_entry(&mut buf, &e);
                if put {
                    *expected.entry(bank.into()).or_default() += 1;
                }
            }
            fs::write(index_path(dir.path(), 0), &buf).unwrap();
            // Chunks of 1 KiB, and of 64 bytes: smaller than most entries.
            for chunk in [1024, 64] {
                prop_assert_eq!(census_in_chunks(dir.path(), 2, chunk), expected.clone());
            }
            buf.extend_from_slice(&tail);
            fs::write(index_path(dir.path(), 1), &buf).unwrap();
            let both = census_in_chunks(dir.path(), 2, 64);
            for (bank, &count) in &expected {
                prop_assert!(both.get(bank).copied().unwrap_or(0) >= 2 * count);
            }
        }
    }
}
