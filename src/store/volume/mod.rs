//! Volume files: the CacheFS layout, `data/<n>`, `index/<n>` and `META.txt`, used cyclically, plus a
//! `CHECKPOINT` of how far the log has gone.
//!
//! Records are appended to the current volume with one positioned write each (so a reply is sent only
//! after its record is in the kernel: a killed process loses nothing acknowledged) and read back with
//! positioned reads. When the current volume is full the next one, the oldest, is reused from offset 0
//! under a new *generation*: every location that points into it carries the old generation and reads as a
//! miss from then on, without a scan of the index.
//!
//! The data write is the commit point of a mutation. Its index entry is only a faster way to find it at
//! start-up: a failure to write the index (a full disk) stops that volume's index there and fails nothing,
//! since start-up reads the volume past the end of its index. A write that fails leaves the writer where it
//! was, so the next record overwrites whatever part of it reached the file, and takes its LSN.
//!
//! A read checks its record in a buffer its thread reuses. A value read for the HTTP file API may then be
//! sent straight from the volume file (`sendfile`, see [`lease`]): the read pins the volume, the writer
//! waits (bounded) for the pins before it reuses a volume and punches the old data out of the file ahead of
//! its writes, so
//! that bytes already handed to a socket keep their contents and the rest of a send is never read from
//! reused space. Where holes cannot be punched, values are always copied.
//!
//! Each volume file is sized to `volume_size` up front (sparse). The generation of a volume is the newer of
//! the one in its first record and the one its index names (a reused volume's index is rewritten before its
//! first record); `META.txt` names the current volume, as in CacheFS, but the generations decide. How
//! start-up proves what it recovers is in [`replay`].

mod io;
mod lease;
mod replay;

use std::borrow::Cow;
use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, IoSlice, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

pub use io::DiskBudget;
pub use lease::{FileSlice, Lease, SendGate};
pub use replay::{census, RecoveryReport};
/// The checkpoint's codec, for the fuzz targets (the `fuzzing` module); nothing else outside this module
/// needs it.
#[doc(hidden)]
pub use replay::{Checkpoint, CHECKPOINT_LEN};

use super::index::{self, Entry};
use super::record::{self, Kind, Meta, Record};
use lease::Pins;
use replay::Chain;

/// How long the writer waits for the sends from a volume to let go of it before reusing it anyway (their
/// leases are then revoked, and those sends end with their connections). The reactor lets go within a
/// tick of being asked, so this bound is only reached when it is stuck.
const RECLAIM_BOUND: Duration = Duration::from_secs(2);

/// The old data of a reused volume is punched out this far ahead of the write head at a time.
const CLEAR_STEP: u64 = 8 << 20;

/// A disk read's buffer is kept per thread for the next read, up to this capacity.
const KEEP_SCRATCH: usize = 1 << 20;

thread_local! {
    /// The buffer disk reads check records in: reused, so a read of a large value touches memory already
    /// mapped instead of pages the allocator must fault in (and zero) again.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// When data reaches the disk itself, not only the kernel, as Redis's `appendfsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Never call fsync; the kernel writes back when it likes.
    Never,
    /// fsync once a second from a background thread: a machine crash loses at most about a second.
    EverySec,
    /// fsync after every write, before the reply.
    Always,
}

/// Where and how big the volumes are.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// Directory holding `data/`, `index/` and `META.txt`.
    pub dir: PathBuf,
    /// Bytes per volume (at most 4 GiB: offsets are 32-bit).
    pub volume_size: u64,
    /// Number of volumes used in turn.
    pub volume_count: u32,
    /// fsync policy.
    pub fsync: Fsync,
    /// A disk that fills up, for tests: every write the store makes draws on it, and fails with "no space
    /// left" (after writing what is left) once it is spent. `None` in the server.
    pub disk: Option<Arc<DiskBudget>>,
}

/// Where a record lies: enough to read it back and to tell whether it is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Volume number.
    pub volume: u32,
    /// Byte offset of the record in the volume.
    pub offset: u32,
    /// Length of the whole record.
    pub len: u32,
    /// Generation of the volume when the record was written.
    pub generation: u32,
}

impl Location {
    /// The record's place in the whole log: generations grow store-wide with every volume started, and
    /// offsets within a volume, so a later record always has a larger position.
    pub fn log_position(&self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.offset)
    }
}

/// Errors of the volume store.
#[derive(Debug)]
pub enum VolumeError {
    /// A file operation failed.
    Io {
        /// What was being done, with the path.
        context: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// A record that can never fit in a volume.
    TooLarge {
        /// The record's length.
        len: usize,
        /// The volume size.
        max: u64,
    },
    /// Settings that cannot work.
    Config(String),
}

impl std::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VolumeError::Io { context, source } => write!(f, "{context}: {source}"),
            VolumeError::TooLarge { len, max } => {
                write!(f, "record of {len} bytes does not fit in a volume of {max} bytes")
            }
            VolumeError::Config(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for VolumeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VolumeError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
    let context = context.into();
    move |source| VolumeError::Io { context, source }
}

/// Why a read found nothing usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMiss {
    /// The volume has been reused since the record was written.
    Recycled,
    /// The bytes there are not the expected record: damaged, torn, or the file was cut short.
    Damaged,
}

/// One record found at start-up, in the order records must be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered<'a> {
    /// Kind, flags, deadline, lifetime. A record whose value was found damaged comes as a delete of its
    /// key: its newest value is lost.
    pub meta: Meta,
    /// Bank name (borrowed from the index file while it is read: start-up allocates nothing per record).
    pub bank: Cow<'a, [u8]>,
    /// Key.
    pub key: Cow<'a, [u8]>,
    /// Where the record is.
    pub location: Location,
}

impl Recovered<'_> {
    /// A copy that owns its names.
    pub fn into_owned(self) -> Recovered<'static> {
        Recovered {
            meta: self.meta,
            bank: Cow::Owned(self.bank.into_owned()),
            key: Cow::Owned(self.key.into_owned()),
            location: self.location,
        }
    }
}

struct Volume {
    path: PathBuf,
    /// The open file; swapped for a fresh one when the file vanishes under the server. Readers hold an
    /// `Arc` while they read.
    file: RwLock<Arc<File>>,
    generation: AtomicU32,
    /// A file found cut short under the server has been reported (once, not on every read).
    reported_short: AtomicBool,
    /// Where its records end, for [`Volumes::ring`]: set when start-up replays it and when the writer
    /// leaves it; the current volume's is the writer's offset instead.
    end: AtomicU64,
    /// Times it was written into since start: the volume written at start-up once, and once more each time
    /// the writer moves into it.
    starts: AtomicU64,
    /// Reads whose value may be sent straight from the file (see [`lease`]).
    pins: Arc<Pins>,
}

impl Volume {
    fn file(&self) -> Arc<File> {
        Arc::clone(&self.file.read().unwrap_or_else(PoisonError::into_inner))
    }
}

struct Writer {
    current: u32,
    offset: u64,
    /// The generation the next volume started takes: past `u32::MAX` there is none, and the log starts
    /// over (see [`Volumes::new_generation`]).
    next_generation: u64,
    /// The LSN the next record takes.
    next_lsn: u64,
    /// The current volume's index, while it can be written: `None` once a write of it failed (the rest of
    /// the volume is found by reading the volume at start-up).
    index: Option<BufWriter<File>>,
    /// Written since the last fsync.
    dirty: bool,
    /// Volumes left by a rotation with writes not yet fsynced: the next `sync` does them, outside the lock.
    unsynced: Vec<u32>,
    /// The header, bank and key of the record being written; reused.
    scratch: Vec<u8>,
    /// The checkpoint file, rewritten in place after every record; `None` if it could not be opened.
    checkpoint: Option<File>,
    /// Records up to this LSN are dead (see [`replay`]): kept in every checkpoint.
    dead_up_to: u64,
    /// The current volume's old data is punched out up to here (see [`Volumes::clear_ahead`]).
    cleared_to: u64,
}

/// The volume store.
pub struct Volumes {
    dir: PathBuf,
    size: u64,
    fsync: Fsync,
    /// The test hook for a full disk.
    disk: Option<Arc<DiskBudget>>,
    vols: Box<[Volume]>,
    writer: Mutex<Writer>,
    /// Reads (and start-up scans) that found damaged records.
    damaged_reads: AtomicU64,
    /// Volumes reused since start.
    reuses: AtomicU64,
    /// The file system can punch the old data out of a volume before it is reused, so values may be sent
    /// straight from the files (see [`lease`]); without it every read is copied.
    zero_copy: bool,
}

pub(super) fn data_path(dir: &Path, n: u32) -> PathBuf {
    dir.join("data").join(n.to_string())
}

pub(super) fn index_path(dir: &Path, n: u32) -> PathBuf {
    dir.join("index").join(n.to_string())
}

impl Volumes {
    /// Opens (or creates) the store and replays what it holds: `apply` is called once per record, oldest
    /// first, so applying them in turn rebuilds the state the store had. The report's
    /// [`RecoveryReport::floor`] says which values the replay could not prove newest: the caller drops
    /// them.
    pub fn open(
        config: &VolumeConfig,
        mut apply: impl FnMut(&Recovered<'_>),
    ) -> Result<(Volumes, RecoveryReport), VolumeError> {
        if config.volume_count == 0 || config.volume_size < record::HEADER_LEN as u64 {
            return Err(VolumeError::Config(
                "volume_count must be at least 1 and volume_size at least 64".into(),
            ));
        }
        if config.volume_size > u64::from(u32::MAX) {
            return Err(VolumeError::Config("volume_size must be at most 4 GiB".into()));
        }
        let dir = config.dir.clone();
        let disk = config.disk.as_deref();
        for sub in ["data", "index"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_err(format!("cannot create {}", path.display())))?;
        }
        let mut vols = Vec::with_capacity(config.volume_count as usize);
        for n in 0..config.volume_count {
            vols.push(open_volume(&data_path(&dir, n), config.volume_size)?);
        }
        let mut chain = Chain::default();
        let tail = replay::read_checkpoint(&dir);
        // A volume's generation is that of its first record. The one exception is the volume being
        // written right after a move to it, before its first record: it still holds records of its previous
        // use, and only the checkpoint (or, without one, its index, which is rewritten first) says so.
        let data_generations: Vec<u32> = (0..config.volume_count)
            .map(|n| replay::first_generation(&vols[n as usize].file(), config.volume_size))
            .collect();
        let mut generations: Vec<u32> = (0..config.volume_count)
            .map(|n| {
                let data = data_generations[n as usize];
                match tail {
                    replay::Tail::Known(ck) if ck.volume == n => data.max(ck.generation),
                    replay::Tail::Known(_) => data,
                    replay::Tail::Missing | replay::Tail::Damaged => {
                        data.max(read_index_header(&dir, n).unwrap_or(0))
                    }
                }
            })
            .collect();
        // Two volumes cannot hold the same generation: one was put in the other's place, and what the
        // replaced one held is lost, perhaps the tail of the log. The later one (by number) is treated as
        // empty, and no value can be proven newest.
        for n in 0..generations.len() {
            if data_generations[n] != 0 && data_generations[..n].contains(&data_generations[n]) {
                chain.lose_tail(&format!("data/{n} holds the same generation as another volume"));
                generations[n] = 0;
            }
        }
        let holds_data = data_generations.iter().any(|&g| g != 0);
        match tail {
            replay::Tail::Known(ck) => {
                chain.evidence(ck.lsn);
                chain.dead_up_to = ck.dead_up_to;
                if generations.get(ck.volume as usize) != Some(&ck.generation) {
                    chain.lose_tail(&format!(
                        "the checkpoint says generation {} was being written in data/{}, which does not hold it",
                        ck.generation, ck.volume
                    ));
                }
            }
            replay::Tail::Damaged if holds_data => chain.lose_tail("the checkpoint is damaged"),
            replay::Tail::Missing if holds_data => chain.lose_tail("the checkpoint is missing"),
            replay::Tail::Damaged | replay::Tail::Missing => {}
        }
        let newest = (0..config.volume_count).max_by_key(|&n| generations[n as usize]).unwrap_or(0);
        let meta_current = read_meta(&dir);
        let current = if generations[newest as usize] == 0 {
            meta_current.unwrap_or(0) % config.volume_count
        } else {
            newest
        };
        if meta_current.is_some_and(|m| m != current) {
            log::warn!("META.txt names volume {meta_current:?}; the newest data is in volume {current}, which is used");
        }
        let max_generation = generations.iter().copied().max().unwrap_or(0);

        let mut report = RecoveryReport::default();
        let mut order: Vec<u32> = (0..config.volume_count).filter(|&n| generations[n as usize] > 0).collect();
        order.sort_by_key(|&n| generations[n as usize]);
        let mut offset = 0;
        for &n in &order {
            let generation = generations[n as usize];
            vols[n as usize].generation.store(generation, Ordering::Relaxed);
            let file = vols[n as usize].file();
            let replayed =
                replay::replay(&dir, disk, n, generation, &file, config.volume_size, &mut chain, &mut apply);
            vols[n as usize].end.store(replayed.end, Ordering::Relaxed);
            report.volumes += 1;
            report.records += replayed.records;
            report.dead_records += replayed.dead;
            report.damaged_records += replayed.damaged;
            report.rebuilt_indexes += u32::from(replayed.rebuilt);
            report.recycled_entries += replayed.recycled;
            let mut line = format!(
                "data/{n} (generation {generation}): {} records, {} damaged",
                replayed.records, replayed.damaged
            );
            if replayed.dead > 0 {
                line.push_str(&format!(", {} dead since an earlier start-up", replayed.dead));
            }
            if replayed.rebuilt {
                line.push_str(", index rewritten");
            }
            if replayed.recycled > 0 {
                line.push_str(&format!(", {} stale index entries ignored", replayed.recycled));
            }
            if n == current {
                // Whatever does not form a record after the data of the current volume is a write cut short.
                offset = replayed.end;
                let torn = replay::clear_torn_tail(&file, disk, replayed.end, config.volume_size, generation);
                report.torn_tail_bytes = torn;
                if torn > 0 {
                    line.push_str(&format!(", {torn} torn bytes cut at offset {}", replayed.end));
                }
            }
            report.lines.push(line);
        }
        let (mut floor, mut dead_up_to) = chain.finish();
        let mut next_lsn = chain.highest.saturating_add(1);
        let mut current_generation = generations[current as usize];
        // An LSN past half the range was never written by a store (it would take millennia): only damage
        // or a forged file says so. And no generation can follow the last one, should the current volume
        // need a new one. The log cannot go on from there, so it starts over in erased volumes, and what
        // was recovered is dropped (a cache may forget; it must not stop, nor wrap its generations and
        // replay old records as new ones). Generations that run out later do the same (`new_generation`).
        let lsn_exhausted = chain.highest >= LSN_LIMIT;
        let restart = lsn_exhausted || (current_generation == 0 && max_generation == u32::MAX);
        if restart {
            log::warn!(
                "the files claim generation {max_generation} and LSN {}, the last there are: the log starts \
                 over in erased volumes, and every key is dropped",
                chain.highest
            );
            erase_volumes(&dir, &vols, config.volume_size)?;
            report
                .lines
                .push(format!("every volume erased: the log had reached generation {max_generation}"));
            floor = Some(u64::MAX);
            if lsn_exhausted {
                (next_lsn, dead_up_to) = (1, 0);
            } else {
                // The LSNs go on; every record before is gone (a volume that could not be erased has
                // stopped the start-up above), and dead besides.
                dead_up_to = chain.highest;
            }
            (current_generation, offset, report.torn_tail_bytes) = (0, 0, 0);
        }
        report.floor = floor;
        let mut next_generation = if restart { 1 } else { u64::from(max_generation) + 1 };
        if current_generation == 0 {
            // At most `u32::MAX`: the last generation has started the log over.
            current_generation = u32::try_from(next_generation).unwrap_or(u32::MAX);
            next_generation += 1;
            if let Err(e) = rewrite_index(&dir, current, current_generation, disk) {
                log::warn!("cannot write index/{current}: {e}");
            }
            offset = 0;
        }
        vols[current as usize].generation.store(current_generation, Ordering::Relaxed);
        vols[current as usize].starts.store(1, Ordering::Relaxed);
        if meta_current != Some(current) {
            // Best effort: the generations, not META.txt, decide at the next start-up.
            if let Err(e) = write_meta(&dir, current, disk) {
                log::warn!("cannot update META.txt: {e}");
            }
        }
        let index = match open_index_for_append(&dir, current) {
            Ok(index) => Some(index),
            Err(e) => {
                log::warn!("{e}; data/{current} will be read at the next start-up instead");
                None
            }
        };
        let checkpoint = match open_checkpoint(&dir) {
            Ok(file) => Some(file),
            Err(e) => {
                log::warn!(
                    "{e}; the next start-up will not know where the log ends, and will forget every key"
                );
                None
            }
        };
        let volumes = Volumes {
            dir,
            size: config.volume_size,
            fsync: config.fsync,
            disk: config.disk.clone(),
            vols: vols.into_boxed_slice(),
            writer: Mutex::new(Writer {
                current,
                offset,
                next_generation,
                next_lsn,
                index,
                dirty: false,
                unsynced: Vec::new(),
                scratch: Vec::new(),
                checkpoint,
                dead_up_to,
                // No send of this process reads the volumes yet: nothing needs clearing.
                cleared_to: u64::MAX,
            }),
            // Damaged records found at start-up count with those found by reads.
            damaged_reads: AtomicU64::new(report.damaged_records),
            reuses: AtomicU64::new(0),
            zero_copy: io::can_punch_holes(&config.dir.join("data")),
        };
        {
            let mut w = volumes.writer();
            let lsn = w.next_lsn - 1;
            volumes.mark_tail(&mut w, lsn);
        }
        Ok((volumes, report))
    }

    /// Records the log's tail in the checkpoint: the LSN of the last record, and the volume and generation
    /// being written. A failure only weakens what the next start-up can prove.
    fn mark_tail(&self, w: &mut Writer, lsn: u64) {
        let Some(file) = &w.checkpoint else { return };
        let generation = self.vols[w.current as usize].generation.load(Ordering::Relaxed);
        let ck = replay::Checkpoint { lsn, generation, volume: w.current, dead_up_to: w.dead_up_to };
        if let Err(e) = std::os::unix::fs::FileExt::write_all_at(file, &ck.encode(), 0) {
            log::warn!("cannot write the checkpoint: {e}");
        }
    }

    /// Drops the store as a killed process would leave it: index entries still in the buffer are lost, and
    /// nothing is flushed or synced (for tests of crashes, without leaking the files as `mem::forget`
    /// would).
    #[doc(hidden)]
    pub fn abandon(self) {
        let writer = self.writer.into_inner().unwrap_or_else(PoisonError::into_inner);
        if let Some(index) = writer.index {
            drop(index.into_parts());
        }
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one record and returns where it lies. The record is in the kernel when this returns (and on
    /// the disk with `fsync: always`). A write that fails leaves nothing that counts: the writer stays
    /// where it was, so the next record overwrites whatever part of it reached the file.
    pub fn append(&self, meta: Meta, bank: &[u8], key: &[u8], value: &[u8]) -> Result<Location, VolumeError> {
        let len = record::encoded_len(bank, key, value);
        if len as u64 > self.size {
            return Err(VolumeError::TooLarge { len, max: self.size });
        }
        let mut w = self.writer();
        if w.offset + len as u64 > self.size {
            self.rotate(&mut w);
        }
        let generation = self.vols[w.current as usize].generation.load(Ordering::Relaxed);
        let lsn = w.next_lsn;
        let mut head = std::mem::take(&mut w.scratch);
        head.clear();
        let encoded = record::encode_head(&mut head, generation, lsn, meta, bank, key, value);
        if encoded.is_err() {
            w.scratch = head;
            return Err(VolumeError::Config(format!(
                "bank or key too long for a record ({} / {})",
                bank.len(),
                key.len()
            )));
        }
        let end = w.offset + len as u64;
        self.clear_ahead(&mut w, end);
        let vol = &self.vols[w.current as usize];
        let written = io::write_parts_at(
            &vol.file(),
            self.disk.as_deref(),
            &mut [IoSlice::new(&head), IoSlice::new(value)],
            w.offset,
        );
        w.scratch = head;
        if let Err(e) = written {
            // Whatever part of the record reached the file must not look like a record: clear its magic
            // (those bytes were just written, so this needs no new space), and the next record goes here.
            let file = vol.file();
            if let Err(clear) = io::write_at(&file, None, &[0; 4], w.offset) {
                log::warn!("cannot clear a record cut short in {}: {clear}", vol.path.display());
            }
            return Err(VolumeError::Io {
                context: format!("cannot write {}", vol.path.display()),
                source: e,
            });
        }
        // The record is in the kernel: from here on it counts.
        let location = Location { volume: w.current, offset: w.offset as u32, len: len as u32, generation };
        w.next_lsn += 1;
        w.offset += len as u64;
        w.dirty = true;
        self.mark_tail(&mut w, lsn);
        self.index_entry(&mut w, &Entry { meta, offset: location.offset, len: location.len, lsn, bank, key });
        if self.fsync == Fsync::Always {
            drop(w);
            if let Err(e) = self.sync() {
                // The reply will be an error, so the record must not count: make it a void record, which
                // keeps its LSN (the log stays whole) and does nothing. Best effort: the disk is failing.
                self.void(location, lsn, meta, bank, key, value.len());
                return Err(e);
            }
        }
        Ok(location)
    }

    /// Adds the entry of a record just written to the current volume's index. A failure stops the index:
    /// the rest of the volume is read from the volume itself at start-up.
    fn index_entry(&self, w: &mut Writer, entry: &Entry<'_>) {
        let Some(index) = &mut w.index else { return };
        let mut buf = Vec::with_capacity(64 + entry.bank.len() + entry.key.len());
        index::encode_entry(&mut buf, entry);
        if let Err(e) = io::append(index, self.disk.as_deref(), &buf) {
            log::warn!(
                "cannot write index/{} ({e}); start-up will read data/{} past its end",
                w.current,
                w.current
            );
            w.index = None;
        }
    }

    /// Overwrites the header of the record at `at` with a void record of the same length and LSN.
    fn void(&self, at: Location, lsn: u64, meta: Meta, bank: &[u8], key: &[u8], value_len: usize) {
        let mut head = Vec::new();
        let zeros = vec![0; value_len];
        let void = Meta { kind: Kind::Void, ..meta };
        if record::encode(&mut head, at.generation, lsn, void, bank, key, &zeros).is_err() {
            return;
        }
        let vol = &self.vols[at.volume as usize];
        if let Err(e) = io::write_at(&vol.file(), self.disk.as_deref(), &head, u64::from(at.offset)) {
            log::error!("cannot void a record whose write failed in {}: {e}", vol.path.display());
        }
    }

    /// Moves to the next volume, the oldest, and reuses it under a new generation. Nothing here can fail
    /// the write that asked for it: the index and `META.txt` are conveniences.
    fn rotate(&self, w: &mut Writer) {
        // The fsync of the volume left behind (a whole volume's worth of page cache) would hold every
        // writer for as long as it takes; the next `sync` does it outside the lock instead.
        if let Some(index) = &mut w.index {
            if let Err(e) = index.flush() {
                log::warn!("cannot write index/{}: {e}", w.current);
            }
        }
        if std::mem::take(&mut w.dirty) && !w.unsynced.contains(&w.current) {
            w.unsynced.push(w.current);
        }
        let next = (w.current + 1) % self.vols.len() as u32;
        self.vols[w.current as usize].end.store(w.offset, Ordering::Relaxed);
        self.vols[next as usize].end.store(0, Ordering::Relaxed);
        self.vols[next as usize].starts.fetch_add(1, Ordering::Relaxed);
        let generation = self.new_generation(w);
        // From here on, every location in the reused volume reads as recycled.
        let vol = &self.vols[next as usize];
        let held_data = vol.generation.swap(generation, Ordering::SeqCst) != 0;
        w.cleared_to = u64::MAX;
        if held_data && self.zero_copy {
            self.reclaim(next);
            w.cleared_to = 0;
        }
        let disk = self.disk.as_deref();
        w.index = match rewrite_index(&self.dir, next, generation, disk)
            .and_then(|()| open_index_for_append(&self.dir, next))
        {
            Ok(index) => Some(index),
            Err(e) => {
                log::warn!("{e}; data/{next} will be read at the next start-up instead");
                None
            }
        };
        if let Err(e) = write_meta(&self.dir, next, disk) {
            log::warn!("cannot update META.txt: {e}");
        }
        w.current = next;
        w.offset = 0;
        let lsn = w.next_lsn - 1;
        self.mark_tail(w, lsn);
        if held_data {
            self.reuses.fetch_add(1, Ordering::Relaxed);
        }
        log::info!("now writing volume {next} (generation {generation})");
    }

    /// Makes a volume safe to overwrite while values of its old records may still be on their way to
    /// clients: waits (bounded) for the sends reading from it to let go, revokes whatever lease is left,
    /// and punches the old data out, so that the page-cache pages already handed to sockets keep their
    /// bytes and new records go into fresh pages.
    fn reclaim(&self, n: u32) {
        let vol = &self.vols[n as usize];
        if !vol.pins.reclaim(RECLAIM_BOUND) {
            log::warn!(
                "sends from {} held it for {RECLAIM_BOUND:?}; reusing it, and ending them",
                vol.path.display()
            );
        }
        vol.pins.revoke();
    }

    /// Punches the reused current volume's old data out ahead of the write head, up to `end` and a step
    /// beyond, so that no write lands in a page a socket may still be sending (a volume's worth at once
    /// would hold the writer for a fraction of a second).
    fn clear_ahead(&self, w: &mut Writer, end: u64) {
        if w.cleared_to >= end {
            return;
        }
        let to = end.div_ceil(CLEAR_STEP).saturating_mul(CLEAR_STEP).min(self.size);
        let vol = &self.vols[w.current as usize];
        if let Err(e) = io::punch_hole(&vol.file(), w.cleared_to, to) {
            log::warn!("cannot clear {} before reuse: {e}", vol.path.display());
        }
        w.cleared_to = if to >= self.size { u64::MAX } else { to };
    }

    /// The generation of a volume started now. Generations are 32-bit: when they run out (billions of volume
    /// reuses, or files that claimed the last ones), the log starts over. Every volume is erased and every
    /// location reads as recycled, so every key is forgotten; generations start again at 1, and the LSNs go
    /// on, those written so far dead (should a volume fail to be erased, its records are never replayed).
    fn new_generation(&self, w: &mut Writer) -> u32 {
        if let Ok(generation) = u32::try_from(w.next_generation) {
            w.next_generation += 1;
            return generation;
        }
        log::warn!(
            "volume generations have run out: the log starts over in erased volumes, every key is dropped"
        );
        if let Err(e) = erase_volumes(&self.dir, &self.vols, self.size) {
            log::error!("{e}");
        }
        w.dead_up_to = w.next_lsn - 1;
        w.next_generation = 2;
        1
    }

    /// Flushes buffered index entries, fsyncs (unless the policy is `never`) the current volume and its
    /// index if anything was written, and records the checkpoint.
    ///
    /// Only the flush of the index buffer happens under the writer's lock; the fsyncs themselves (which can
    /// take many milliseconds) run after it is dropped, so appends go on meanwhile.
    pub fn sync(&self) -> Result<(), VolumeError> {
        let (current, dirty, left_behind) = {
            let mut w = self.writer();
            if let Some(index) = &mut w.index {
                if let Err(e) = index.flush() {
                    log::warn!(
                        "cannot write index/{} ({e}); start-up will read data/{} past its end",
                        w.current,
                        w.current
                    );
                    w.index = None;
                }
            }
            (w.current, std::mem::take(&mut w.dirty), std::mem::take(&mut w.unsynced))
        };
        let durable = self.fsync != Fsync::Never;
        if durable {
            for n in left_behind {
                self.fsync_volume(n)?;
            }
            if dirty {
                self.fsync_volume(current)?;
            }
        }
        if durable {
            let checkpoint = self.writer().checkpoint.as_ref().and_then(|f| f.try_clone().ok());
            if let Some(file) = checkpoint {
                if let Err(e) = file.sync_data() {
                    log::warn!("cannot fsync the checkpoint: {e}");
                }
            }
        }
        Ok(())
    }

    fn fsync_volume(&self, n: u32) -> Result<(), VolumeError> {
        let vol = &self.vols[n as usize];
        vol.file().sync_data().map_err(io_err(format!("cannot fsync {}", vol.path.display())))?;
        let index = index_path(&self.dir, n);
        if let Err(e) = File::open(&index).and_then(|f| f.sync_data()) {
            // The index only speeds start-up up.
            log::warn!("cannot fsync {}: {e}", index.display());
        }
        Ok(())
    }

    /// Checks that every volume file is still the one the server opened. A file that vanished or was
    /// replaced under the server is reported and treated as empty: the entries that point into it read as
    /// misses from now on (the sweep clears them), and a fresh file takes its place, so writes never go into
    /// a file that no longer has a name. A file cut short is reported and sized again; the records that were
    /// cut read as misses. Called by the maintenance thread once a second.
    pub fn check_files(&self) {
        for (n, vol) in self.vols.iter().enumerate() {
            let file = vol.file();
            let ours = file.metadata().map(|m| (m.ino(), m.dev())).ok();
            let problem = match fs::metadata(&vol.path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some("vanished"),
                Err(_) => None,
                Ok(m) if Some((m.ino(), m.dev())) != ours => Some("was replaced"),
                Ok(m) if m.len() < self.size => {
                    // Cut short: what was cut is lost (those reads fail their check and are misses); the
                    // file is sized again so writes go on.
                    log::error!(
                        "{} was cut short under the server; the records past {} bytes are lost",
                        vol.path.display(),
                        m.len()
                    );
                    if let Err(e) = file.set_len(self.size) {
                        log::error!("cannot size {} again: {e}", vol.path.display());
                    }
                    None
                }
                Ok(_) => None,
            };
            let Some(problem) = problem else { continue };
            drop(file);
            let n = n as u32;
            log::error!("{} {problem} under the server; the volume is treated as empty", vol.path.display());
            if let Err(e) = self.replace_volume(n) {
                log::error!("cannot replace {}: {e}", vol.path.display());
            }
        }
    }

    /// Gives volume `n` a fresh empty file. The current volume starts again at offset 0 under a new
    /// generation; any other volume becomes unused (generation 0), as if never written. The LSNs go on, so
    /// the next start-up sees the records that were lost as a gap.
    fn replace_volume(&self, n: u32) -> Result<(), VolumeError> {
        let vol = &self.vols[n as usize];
        let mut w = self.writer();
        // A truly empty file, not whatever now has the volume's name (a copy of another volume, say).
        let tmp = vol.path.with_extension("new");
        let _ = fs::remove_file(&tmp);
        let fresh = open_file(&tmp, self.size)?;
        fs::rename(&tmp, &vol.path)
            .map_err(io_err(format!("cannot put a fresh {} in place", vol.path.display())))?;
        *vol.file.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        vol.reported_short.store(false, Ordering::Relaxed);
        if n == w.current {
            let generation = self.new_generation(&mut w);
            vol.generation.store(generation, Ordering::Release);
            w.index = match rewrite_index(&self.dir, n, generation, self.disk.as_deref())
                .and_then(|()| open_index_for_append(&self.dir, n))
            {
                Ok(index) => Some(index),
                Err(e) => {
                    log::warn!("{e}");
                    None
                }
            };
            w.offset = 0;
            let lsn = w.next_lsn - 1;
            self.mark_tail(&mut w, lsn);
        } else {
            vol.generation.store(0, Ordering::Release);
            let _ = fs::remove_file(index_path(&self.dir, n));
        }
        Ok(())
    }

    /// The fsync policy.
    pub fn fsync_policy(&self) -> Fsync {
        self.fsync
    }

    /// Reads the record at `at` and checks it is the record of `bank`/`key` written there; `f` gets it.
    pub fn read<R>(
        &self,
        at: Location,
        bank: &[u8],
        key: &[u8],
        f: impl FnOnce(&Record<'_>) -> R,
    ) -> Result<R, ReadMiss> {
        self.with_record(at, bank, key, false, |record, _, _| {
            record::decode(record).map(|r| f(&r)).map_err(|_| ReadMiss::Damaged)
        })?
    }

    /// Reads the value of the record at `at`, checked as [`Volumes::read`] checks it: `f` gets the value
    /// (in this thread's reused read buffer) and, when the file system allows it, the same bytes as a
    /// pinned [`FileSlice`] of the volume file, which may be sent from the file instead of copied.
    pub fn read_value<R>(
        &self,
        at: Location,
        bank: &[u8],
        key: &[u8],
        f: impl FnOnce(&[u8], Option<FileSlice>) -> R,
    ) -> Result<R, ReadMiss> {
        self.with_record(at, bank, key, self.zero_copy, |record, value, slice| f(&record[value], slice))
    }

    /// Reads the record at `at` with one positioned read into this thread's read buffer and checks it
    /// (magic, CRCs, generation, names); `f` gets the record, where the value lies in it, and with
    /// `slice` a pinned slice of the file holding the value.
    fn with_record<R>(
        &self,
        at: Location,
        bank: &[u8],
        key: &[u8],
        slice: bool,
        f: impl FnOnce(&[u8], std::ops::Range<usize>, Option<FileSlice>) -> R,
    ) -> Result<R, ReadMiss> {
        let vol = self.vols.get(at.volume as usize).ok_or(ReadMiss::Damaged)?;
        // Pinned before the generation is checked: a writer that moves it on after this waits for the pin.
        let lease = slice.then(|| vol.pins.pin());
        if vol.generation.load(Ordering::SeqCst) != at.generation {
            return Err(ReadMiss::Recycled);
        }
        let file = vol.file();
        let len = at.len as usize;
        SCRATCH.with_borrow_mut(|buf| {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            let result = self.check_record(vol, &file, at, bank, key, &mut buf[..len]).map(|value| {
                let slice = lease.map(|lease| {
                    let start = u64::from(at.offset) + value.start as u64;
                    FileSlice::new(Arc::clone(&file), start, value.len(), lease)
                });
                f(&buf[..len], value, slice)
            });
            if buf.capacity() > KEEP_SCRATCH {
                *buf = Vec::new();
            }
            result
        })
    }

    /// Reads the record at `at` into `copy` (its length) and checks it: where the value lies in it.
    fn check_record(
        &self,
        vol: &Volume,
        file: &File,
        at: Location,
        bank: &[u8],
        key: &[u8],
        copy: &mut [u8],
    ) -> Result<std::ops::Range<usize>, ReadMiss> {
        let got = io::read_at(file, copy, u64::from(at.offset)).unwrap_or(0);
        if got < copy.len() {
            // The file was cut short under the server.
            self.damaged();
            if !vol.reported_short.swap(true, Ordering::Relaxed) {
                log::error!(
                    "{} was cut short under the server; the records past its end are lost",
                    vol.path.display()
                );
            }
            return Err(ReadMiss::Damaged);
        }
        // Checked after the read: the writer may be reusing this volume at this very moment.
        if vol.generation.load(Ordering::SeqCst) != at.generation {
            return Err(ReadMiss::Recycled);
        }
        match record::decode(copy) {
            Ok(r)
                if r.generation == at.generation && r.bank == bank && r.key == key && r.len == copy.len() =>
            {
                Ok(r.len - r.value.len()..r.len)
            }
            Ok(_) | Err(_) => {
                self.damaged();
                Err(ReadMiss::Damaged)
            }
        }
    }

    fn damaged(&self) {
        self.damaged_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// True while records at `at` can still be read (its volume has not been reused).
    pub fn is_current(&self, at: Location) -> bool {
        self.vols
            .get(at.volume as usize)
            .is_some_and(|v| v.generation.load(Ordering::Relaxed) == at.generation)
    }

    /// Reads that found damaged bytes since start.
    pub fn damaged_reads(&self) -> u64 {
        self.damaged_reads.load(Ordering::Relaxed)
    }

    /// Volumes reused since start.
    pub fn reuses(&self) -> u64 {
        self.reuses.load(Ordering::Relaxed)
    }

    /// The volume being written and the offset of the next record (CacheFS's `/info`).
    pub fn write_position(&self) -> (u32, u64) {
        let w = self.writer();
        (w.current, w.offset)
    }

    /// The ring of volumes as it stands: which one is being written, and how far each is filled, for the
    /// admin page's picture of the ring (`GET /stats/volumes`). Takes the writer's lock for a moment.
    pub fn ring(&self) -> Ring {
        let (current, offset) = self.write_position();
        let volumes = self
            .vols
            .iter()
            .enumerate()
            .map(|(n, v)| {
                let generation = v.generation.load(Ordering::Relaxed);
                let used = if n as u32 == current {
                    offset
                } else if generation == 0 {
                    0
                } else {
                    v.end.load(Ordering::Relaxed)
                };
                VolumeFigures { generation, used, starts: v.starts.load(Ordering::Relaxed) }
            })
            .collect();
        Ring { current, size: self.size, reuses: self.reuses(), volumes }
    }
}

/// The ring of volumes at one instant ([`Volumes::ring`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// The volume being written.
    pub current: u32,
    /// `volume_size`: what each volume can hold.
    pub size: u64,
    /// Volumes reused since start (the writer came back to one that held data).
    pub reuses: u64,
    /// Each volume, in ring order.
    pub volumes: Vec<VolumeFigures>,
}

/// One volume of the [`Ring`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeFigures {
    /// Its generation: 0 when it holds nothing; the newest is the one being written.
    pub generation: u32,
    /// Bytes of records written into it (live or dead).
    pub used: u64,
    /// Times it was written into since start (the volume written at start-up counts once).
    pub starts: u64,
}

/// LSNs at or past this were never written by a store (it would take a million records a second for
/// hundreds of thousands of years): start-up takes them for damage, and starts the log over.
const LSN_LIMIT: u64 = u64::MAX / 2;

/// Erases every volume, when the log starts over: its file emptied (and sized again, sparse), its index
/// removed, its generation 0 (unused), so no location reads from it and no start-up replays it.
fn erase_volumes(dir: &Path, vols: &[Volume], size: u64) -> Result<(), VolumeError> {
    for (n, vol) in vols.iter().enumerate() {
        vol.generation.store(0, Ordering::Release);
        vol.end.store(0, Ordering::Relaxed);
        // Sends still reading from the file would read the zeros it is about to hold.
        vol.pins.revoke();
        let file = vol.file();
        file.set_len(0)
            .and_then(|()| file.set_len(size))
            .map_err(io_err(format!("cannot erase {}", vol.path.display())))?;
        vol.reported_short.store(false, Ordering::Relaxed);
        let index = index_path(dir, n as u32);
        match fs::remove_file(&index) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(format!("cannot remove {}", index.display()))(e));
            }
            _ => {}
        }
    }
    Ok(())
}

fn open_volume(path: &Path, size: u64) -> Result<Volume, VolumeError> {
    Ok(Volume {
        path: path.to_owned(),
        file: RwLock::new(Arc::new(open_file(path, size)?)),
        generation: AtomicU32::new(0),
        reported_short: AtomicBool::new(false),
        end: AtomicU64::new(0),
        starts: AtomicU64::new(0),
        pins: Arc::default(),
    })
}

fn open_file(path: &Path, size: u64) -> Result<File, VolumeError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    let len = file.metadata().map_err(io_err(format!("cannot stat {}", path.display())))?.len();
    if len < size {
        file.set_len(size).map_err(io_err(format!("cannot size {}", path.display())))?;
    }
    Ok(file)
}

/// The generation an index file's header names, reading only the header.
fn read_index_header(dir: &Path, n: u32) -> Option<u32> {
    let mut header = [0; index::HEADER_LEN];
    let mut file = File::open(index_path(dir, n)).ok()?;
    std::io::Read::read_exact(&mut file, &mut header).ok()?;
    index::decode_header(&header)
}

/// Starts an empty index file for a volume generation (atomically, durably).
fn rewrite_index(dir: &Path, n: u32, generation: u32, disk: Option<&DiskBudget>) -> Result<(), VolumeError> {
    let mut buf = Vec::with_capacity(index::HEADER_LEN);
    index::encode_header(&mut buf, generation);
    io::write_file_atomically(&index_path(dir, n), &buf, disk, true)
}

fn open_index_for_append(dir: &Path, n: u32) -> Result<BufWriter<File>, VolumeError> {
    let path = index_path(dir, n);
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    Ok(BufWriter::with_capacity(64 * 1024, file))
}

/// Opens the checkpoint file for rewriting in place, creating it (at its full size) if needed.
fn open_checkpoint(dir: &Path) -> Result<File, VolumeError> {
    let path = dir.join(replay::CHECKPOINT);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(format!("cannot open {}", path.display())))?;
    file.set_len(replay::CHECKPOINT_LEN as u64).map_err(io_err(format!("cannot size {}", path.display())))?;
    Ok(file)
}

/// The current volume as `META.txt` names it: decimal, no newline, as CacheFS wrote it.
fn read_meta(dir: &Path) -> Option<u32> {
    parse_meta(&fs::read(dir.join("META.txt")).ok()?)
}

/// Reads the contents of `META.txt`: a volume number in decimal, surrounding whitespace allowed; `None` for
/// anything else. Public (hidden) for the fuzz targets.
#[doc(hidden)]
pub fn parse_meta(bytes: &[u8]) -> Option<u32> {
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

fn write_meta(dir: &Path, current: u32, disk: Option<&DiskBudget>) -> Result<(), VolumeError> {
    io::write_file_atomically(&dir.join("META.txt"), current.to_string().as_bytes(), disk, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{Kind, NO_DEADLINE};
    use std::os::unix::fs::FileExt;

    const PUT: Meta = Meta { kind: Kind::Put, flags: 0, deadline: NO_DEADLINE, lifetime: 0, seq: 0 };

    fn config(dir: &Path, size: u64, count: u32) -> VolumeConfig {
        VolumeConfig {
            dir: dir.to_owned(),
            volume_size: size,
            volume_count: count,
            fsync: Fsync::Never,
            disk: None,
        }
    }

    fn open(cfg: &VolumeConfig) -> (Volumes, Vec<Recovered<'static>>, RecoveryReport) {
        let mut seen = Vec::new();
        let (v, report) = Volumes::open(cfg, |r| seen.push(r.clone().into_owned())).unwrap();
        (v, seen, report)
    }

    fn value(v: &Volumes, at: Location, key: &str) -> Result<Vec<u8>, ReadMiss> {
        v.read(at, b"b", key.as_bytes(), |r| r.value.to_vec())
    }

    /// A value read as a file slice pins its volume: the writer, about to reuse it, asks for it back and
    /// waits; the holder copies the rest (the original bytes) and lets go; then the volume is reused and
    /// the old location reads as recycled.
    #[test]
    fn the_writer_waits_for_a_pinned_volume_and_the_holder_gets_the_original_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (v, _, _) = open(&config(dir.path(), 4096, 2));
        assert!(v.zero_copy, "the test's file system punches holes");
        let original = vec![7u8; 1000];
        let at = v.append(PUT, b"b", b"k", &original).unwrap();
        let slice = v.read_value(at, b"b", b"k", |value, slice| {
            assert_eq!(value, &original[..]);
            slice.expect("a slice")
        });
        let slice = slice.unwrap();
        let holder = std::thread::spawn(move || {
            while !slice.wanted() {
                std::thread::yield_now();
            }
            let mut rest = Vec::new();
            slice.read_rest(&mut rest).unwrap();
            rest
        });
        // Fill volume 0, then volume 1, then come back to volume 0: the writer waits for the holder.
        for i in 0..12u8 {
            v.append(PUT, b"b", &[b'x', i], &[i; 1000]).unwrap();
        }
        assert_eq!(holder.join().unwrap(), original, "the holder got the original bytes");
        assert_eq!(value(&v, at, "k"), Err(ReadMiss::Recycled));
    }

    #[test]
    fn append_read_and_layout() {
        let dir = tempfile::tempdir().unwrap();
        let (v, seen, _) = open(&config(dir.path(), 1 << 20, 3));
        assert!(seen.is_empty());
        let a = v.append(PUT, b"b", b"foo", b"hello world").unwrap();
        let b = v.append(PUT, b"b", b"bar", b"what the hell").unwrap();
        assert_eq!((a.volume, a.offset), (0, 0));
        assert_eq!(b.offset, a.len);
        assert_eq!(value(&v, a, "foo").unwrap(), b"hello world");
        assert_eq!(value(&v, b, "bar").unwrap(), b"what the hell");
        // The names are checked: a location never yields another key's value.
        assert_eq!(v.read(a, b"b", b"bar", |_| ()), Err(ReadMiss::Damaged));
        assert_eq!(fs::read_to_string(dir.path().join("META.txt")).unwrap(), "0");
        for n in 0..3 {
            assert!(dir.path().join("data").join(n.to_string()).exists());
        }
        assert_eq!(v.write_position(), (0, u64::from(a.len + b.len)));
    }

    #[test]
    fn reopen_replays_everything_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1 << 20, 2);
        let (v, _, _) = open(&cfg);
        let first = v.append(PUT, b"b", b"k", b"1").unwrap();
        v.append(Meta { kind: Kind::Delete, ..PUT }, b"b", b"k", b"").unwrap();
        v.sync().unwrap();
        v.append(PUT, b"b", b"j", b"2").unwrap(); // indexed only in the buffer: found by the scan
        drop(v);
        let (v, seen, report) = open(&cfg);
        let kinds: Vec<(Kind, &[u8])> = seen.iter().map(|r| (r.meta.kind, r.key.as_ref())).collect();
        assert_eq!(kinds, [(Kind::Put, &b"k"[..]), (Kind::Delete, b"k"), (Kind::Put, b"j")]);
        assert_eq!(report.records, 3);
        assert_eq!(report.torn_tail_bytes, 0);
        assert_eq!(value(&v, first, "k").unwrap(), b"1");
        // New writes go after the old ones.
        let next = v.append(PUT, b"b", b"z", b"3").unwrap();
        assert_eq!(u64::from(next.offset), seen.iter().map(|r| u64::from(r.location.len)).sum::<u64>());
    }

    #[test]
    fn reuse_bumps_the_generation_and_old_locations_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 4096, 2);
        let (v, _, _) = open(&cfg);
        let big = vec![b'x'; 1500];
        let mut locs = Vec::new();
        for i in 0..6 {
            locs.push(v.append(PUT, b"b", format!("k{i}").as_bytes(), &big).unwrap());
        }
        // Two records fit per volume: k0,k1 in 0; k2,k3 in 1; k4,k5 in 0 again.
        assert_eq!(locs.iter().map(|l| l.volume).collect::<Vec<_>>(), [0, 0, 1, 1, 0, 0]);
        assert_eq!(value(&v, locs[0], "k0"), Err(ReadMiss::Recycled));
        assert_eq!(value(&v, locs[2], "k2").unwrap(), big);
        assert_eq!(value(&v, locs[5], "k5").unwrap(), big);
        assert_eq!(v.reuses(), 1, "the first move into the never-used volume 1 is not a reuse");
        drop(v);
        let (v, seen, _) = open(&cfg);
        let keys: Vec<String> = seen.iter().map(|r| String::from_utf8(r.key.to_vec()).unwrap()).collect();
        assert_eq!(keys, ["k2", "k3", "k4", "k5"], "oldest first, recycled records gone");
        assert_eq!(value(&v, seen[3].location, "k5").unwrap(), big);
        assert_eq!(fs::read_to_string(dir.path().join("META.txt")).unwrap(), "0");
    }

    #[test]
    fn a_restart_right_after_a_reuse_does_not_bring_dropped_records_back() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 4096, 2);
        let (v, _, _) = open(&cfg);
        let big = vec![b'x'; 1500];
        for i in 0..4 {
            v.append(PUT, b"b", format!("k{i}").as_bytes(), &big).unwrap();
        }
        // k0,k1 in volume 0; k2,k3 in volume 1. Force the move to volume 0 without writing to it.
        {
            let mut w = v.writer();
            v.rotate(&mut w);
        }
        drop(v);
        let (v, seen, _) = open(&cfg);
        let keys: Vec<&[u8]> = seen.iter().map(|r| r.key.as_ref()).collect();
        assert_eq!(keys, [&b"k2"[..], b"k3"]);
        assert_eq!(v.write_position(), (0, 0));
    }

    #[test]
    fn a_record_larger_than_a_volume_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (v, _, _) = open(&config(dir.path(), 1024, 2));
        let err = v.append(PUT, b"b", b"k", &[0; 2000]).unwrap_err();
        assert!(matches!(err, VolumeError::TooLarge { .. }), "{err}");
        assert!(v.append(PUT, b"b", b"k", &[0; 900]).is_ok());
    }

    #[test]
    fn torn_tail_is_cut_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1 << 20, 2);
        let (v, _, _) = open(&cfg);
        let a = v.append(PUT, b"b", b"a", b"1").unwrap();
        let b = v.append(PUT, b"b", b"b", b"2").unwrap();
        drop(v);
        // Tear the second record: keep only half of it, and drop the index so the scan must find the end.
        let data = dir.path().join("data/0");
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        let half = u64::from(b.offset + b.len / 2);
        f.set_len(half).unwrap();
        f.set_len(1 << 20).unwrap();
        let mut bytes = fs::read(&data).unwrap();
        bytes[half as usize - 1] ^= 0xff;
        fs::write(&data, &bytes).unwrap();
        fs::remove_file(dir.path().join("index/0")).unwrap();
        let (v, seen, report) = open(&cfg);
        assert_eq!(seen.len(), 1);
        assert_eq!(report.rebuilt_indexes, 1);
        assert!(report.torn_tail_bytes > 0);
        // The checkpoint says record 2 was written: it could have been a newer value of any key, so no
        // value read can be proven newest.
        assert_eq!(report.floor(), Some(u64::MAX));
        assert_eq!(value(&v, a, "a").unwrap(), b"1");
        // The next record overwrites the torn one, and the torn bytes are gone for good.
        assert_eq!(v.append(PUT, b"b", b"c", b"3").unwrap().offset, b.offset);
        drop(v);
        // The next start-up steps over what the first one could not prove, and keeps what came after.
        let (_, seen, report) = open(&cfg);
        assert_eq!(seen.iter().map(|r| r.key.as_ref()).collect::<Vec<_>>(), [&b"c"[..]]);
        assert_eq!((report.torn_tail_bytes, report.dead_records, report.floor()), (0, 1, None));
    }

    #[test]
    fn flipped_bytes_read_as_damaged_not_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1 << 20, 2);
        let (v, _, _) = open(&cfg);
        let a = v.append(PUT, b"b", b"a", b"important").unwrap();
        v.sync().unwrap();
        let data = dir.path().join("data/0");
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        f.write_all_at(b"X", u64::from(a.offset + a.len - 2)).unwrap();
        assert_eq!(value(&v, a, "a"), Err(ReadMiss::Damaged));
        assert_eq!(v.damaged_reads(), 1);
    }

    #[test]
    fn a_truncated_volume_reads_as_damaged_without_crashing() {
        let dir = tempfile::tempdir().unwrap();
        let (v, _, _) = open(&config(dir.path(), 1 << 20, 2));
        let a = v.append(PUT, b"b", b"a", b"1").unwrap();
        OpenOptions::new().write(true).open(dir.path().join("data/0")).unwrap().set_len(0).unwrap();
        assert_eq!(value(&v, a, "a"), Err(ReadMiss::Damaged));
    }

    #[test]
    fn a_volume_file_lost_while_stopped_is_treated_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 4096, 3);
        let (v, _, _) = open(&cfg);
        for i in 0..4 {
            v.append(PUT, b"b", format!("k{i}").as_bytes(), &[b'x'; 1500]).unwrap();
        }
        drop(v);
        // k0, k1 in volume 0; k2, k3 in volume 1 (current). Lose volume 0's data.
        fs::remove_file(dir.path().join("data/0")).unwrap();
        let (v, seen, _) = open(&cfg);
        let keys: Vec<&[u8]> = seen.iter().map(|r| r.key.as_ref()).collect();
        assert_eq!(keys, [&b"k2"[..], b"k3"]);
        assert_eq!(v.damaged_reads(), 0);
    }

    #[test]
    fn a_volume_file_that_vanishes_under_the_server_is_treated_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (v, _, _) = open(&config(dir.path(), 1 << 16, 2));
        let a = v.append(PUT, b"b", b"a", b"1").unwrap();
        v.check_files();
        assert_eq!(value(&v, a, "a").unwrap(), b"1", "nothing to report yet");
        fs::remove_file(dir.path().join("data/0")).unwrap();
        v.check_files();
        assert_eq!(value(&v, a, "a"), Err(ReadMiss::Recycled));
        assert!(dir.path().join("data/0").exists(), "a fresh file takes its place");
        let b = v.append(PUT, b"b", b"b", b"2").unwrap();
        assert_eq!((b.volume, b.offset), (0, 0));
        assert_eq!(value(&v, b, "b").unwrap(), b"2");
        drop(v);
        let (_, seen, _) = open(&config(dir.path(), 1 << 16, 2));
        assert_eq!(seen.iter().map(|r| r.key.as_ref()).collect::<Vec<_>>(), [&b"b"[..]]);
    }

    #[test]
    fn missing_meta_with_existing_folders_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("data")).unwrap();
        fs::create_dir_all(dir.path().join("index")).unwrap();
        let (v, seen, _) = open(&config(dir.path(), 4096, 2));
        assert!(seen.is_empty());
        assert!(v.append(PUT, b"b", b"k", b"v").is_ok());
    }

    /// Writes volume `n` as one put record of `key` with this generation and LSN, sound (as only a forged
    /// or a strangely damaged file has them), and a checkpoint that agrees.
    fn forge(dir: &Path, n: u32, generation: u32, lsn: u64, key: &str) {
        let mut buf = Vec::new();
        record::encode(&mut buf, generation, lsn, PUT, b"b", key.as_bytes(), b"forged").unwrap();
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::write(data_path(dir, n), &buf).unwrap();
        let ck = replay::Checkpoint { lsn, generation, volume: n, dead_up_to: 0 };
        fs::write(dir.join(replay::CHECKPOINT), ck.encode()).unwrap();
    }

    /// Generations are 32-bit and LSNs 64-bit. Files that claim the last of them (at start-up, or within a
    /// few volume reuses) do not stop the store: the log starts over, what the files held is forgotten (a
    /// cache may forget), and what is written next is read back, before and after a restart. Found by the
    /// `volume` fuzz target: the start-up panicked on the generation after `u32::MAX`.
    #[test]
    fn the_last_generations_and_lsns_start_the_log_over() {
        let cases = [(u32::MAX, 1), (u32::MAX - 1, 1), (u32::MAX - 2, 1), (1, u64::MAX), (1, u64::MAX / 2)];
        for (generation, lsn) in cases {
            let dir = tempfile::tempdir().unwrap();
            let cfg = config(dir.path(), 4096, 2);
            forge(dir.path(), 0, generation, lsn, "forged");
            let (v, _, _) = open(&cfg);
            // Two records a volume: eight of them reuse the volumes three times.
            let mut last = None;
            for i in 0..8u8 {
                last = Some(v.append(PUT, b"b", b"new", &[b'0' + i; 1500]).unwrap());
            }
            let last = last.unwrap();
            assert_eq!(value(&v, last, "new").unwrap(), [b'7'; 1500], "case {generation}, {lsn}");
            drop(v);
            let (v, seen, report) = open(&cfg);
            let newest = seen.iter().rev().find(|r| r.key.as_ref() == b"new").map(|r| r.location);
            assert_eq!(newest, Some(last), "case {generation}, {lsn}");
            assert!(report.floor().is_none_or(|floor| floor <= last.log_position()), "{report:?}");
            assert_eq!(value(&v, last, "new").unwrap(), [b'7'; 1500], "case {generation}, {lsn}");
        }
    }

    #[test]
    fn any_utf8_key_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1 << 16, 2);
        let (v, _, _) = open(&cfg);
        let key = "ключ/😀 with spaces";
        let at = v.append(PUT, b"b", key.as_bytes(), b"v").unwrap();
        drop(v);
        let (v, seen, _) = open(&cfg);
        assert_eq!(seen[0].key.as_ref(), key.as_bytes());
        assert_eq!(value(&v, at, key).unwrap(), b"v");
    }
}
