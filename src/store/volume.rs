//! Volume files: the CacheFS layout, `data/<n>`, `index/<n>` and `META.txt`, used cyclically.
//!
//! Records are appended to the current volume with one positioned write each (so a reply is sent only
//! after its record is in the kernel: a killed process loses nothing acknowledged) and read back through
//! one memory map per volume, mapped once at start-up. When the current volume is full the next one, the
//! oldest, is reused from offset 0 under a new *generation*: every index entry that points into it carries
//! the old generation and reads as a miss from then on, without a scan of the index.
//!
//! Each volume file is sized to `volume_size` up front (sparse), so a map never has to grow. The generation
//! of a volume is the one in its first record; `META.txt` names the current volume, as in CacheFS, but the
//! generations decide when the two disagree (a crash between the steps of a rotation).

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use memmap2::Mmap;

use super::index::{self, Entry};
use super::record::{self, Meta, Record};

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

/// Bytes that may still be written, shared by every write of the store: a test's full disk.
#[derive(Debug)]
pub struct DiskBudget {
    left: AtomicU64,
}

impl DiskBudget {
    /// A disk with `bytes` of room.
    pub fn new(bytes: u64) -> DiskBudget {
        DiskBudget { left: AtomicU64::new(bytes) }
    }

    /// Sets the room left (refilling a full disk, or filling an empty one).
    pub fn set(&self, bytes: u64) {
        self.left.store(bytes, Ordering::SeqCst);
    }

    /// Room left.
    pub fn left(&self) -> u64 {
        self.left.load(Ordering::SeqCst)
    }

    /// Takes room for a write of `len` bytes: how many of them fit.
    fn take(&self, len: usize) -> usize {
        let mut left = self.left.load(Ordering::SeqCst);
        loop {
            let granted = left.min(len as u64);
            match self.left.compare_exchange(left, left - granted, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return granted as usize,
                Err(now) => left = now,
            }
        }
    }
}

/// The error a full disk gives.
fn no_space() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// Room for a write of `len` bytes on `disk`: `Ok(len)` when it all fits (always without a budget), else the
/// bytes that fit, to be written before failing with [`no_space`].
fn room(disk: Option<&DiskBudget>, len: usize) -> usize {
    disk.map_or(len, |d| d.take(len))
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

/// Writes every byte of `parts` at `offset`, normally in one `pwritev`: a put's value goes from the request
/// buffer to the page cache with no copy behind the record header first.
fn write_all_vectored_at(
    file: &File,
    disk: Option<&DiskBudget>,
    parts: &mut [IoSlice<'_>],
    offset: u64,
) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let fits = room(disk, total);
    if fits < total {
        // A full disk: what fits is written, then the write fails, as a real one does.
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        file.write_all_at(&joined[..fits], offset)?;
        return Err(no_space());
    }
    pwritev_all(file, parts, offset)
}

fn pwritev_all(file: &File, mut parts: &mut [IoSlice<'_>], mut offset: u64) -> io::Result<()> {
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        let count = parts.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
        let at = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, and every slice outlives the call.
        let n = unsafe { libc::pwritev(file.as_raw_fd(), parts.as_ptr().cast::<libc::iovec>(), count, at) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        offset += n as u64;
        IoSlice::advance_slices(&mut parts, n as usize);
    }
    Ok(())
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
        source: io::Error,
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

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> VolumeError {
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
    /// Kind, flags, deadline, lifetime.
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

/// What start-up found, for the log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Volumes holding data of their current generation.
    pub volumes: u32,
    /// Records recovered.
    pub records: u64,
    /// Index files that were missing or did not match and were rebuilt from their volume.
    pub rebuilt_indexes: u32,
    /// Bytes at the end of the current volume that did not form a valid record and were cut off.
    pub torn_tail_bytes: u64,
    /// Damaged records stepped over; their keys are treated as deleted.
    pub damaged_records: u64,
}

impl RecoveryReport {
    fn add(&mut self, replayed: &Replayed) {
        self.records += replayed.records;
        self.damaged_records += replayed.damaged;
        self.rebuilt_indexes += u32::from(replayed.rebuilt);
    }
}

/// A volume's open file and its map. Swapped for fresh ones when the file vanishes under the server; readers
/// hold an `Arc` while they copy, so a map is never unmapped under a read.
struct Files {
    file: File,
    map: Mmap,
}

struct Volume {
    path: PathBuf,
    files: RwLock<Arc<Files>>,
    generation: AtomicU32,
    /// A file found cut short under the server has been reported (once, not on every read).
    reported_short: AtomicBool,
}

impl Volume {
    fn files(&self) -> Arc<Files> {
        Arc::clone(&self.files.read().unwrap_or_else(PoisonError::into_inner))
    }
}

struct Writer {
    current: u32,
    offset: u64,
    next_generation: u32,
    index: BufWriter<File>,
    /// Written since the last fsync.
    dirty: bool,
    /// Volumes left by a rotation with writes not yet fsynced: the next `sync` does them, outside the lock.
    unsynced: Vec<u32>,
    /// The header, bank and key of the record being written; reused.
    scratch: Vec<u8>,
}

/// The volume store.
pub struct Volumes {
    dir: PathBuf,
    /// The test hook for a full disk.
    disk: Option<Arc<DiskBudget>>,
    size: u64,
    fsync: Fsync,
    vols: Box<[Volume]>,
    writer: Mutex<Writer>,
    /// Reads (and start-up scans) that found damaged records.
    damaged_reads: AtomicU64,
    /// Volumes reused since start.
    reuses: AtomicU64,
}

/// How far past the end of valid data start-up looks for torn bytes to count and clear.
const TORN_TAIL_WINDOW: usize = 1 << 20;

fn data_path(dir: &Path, n: u32) -> PathBuf {
    dir.join("data").join(n.to_string())
}

fn index_path(dir: &Path, n: u32) -> PathBuf {
    dir.join("index").join(n.to_string())
}

impl Volumes {
    /// Opens (or creates) the store and replays what it holds: `apply` is called once per record, oldest
    /// first, so applying them in turn rebuilds the state the store had.
    pub fn open(
        config: &VolumeConfig,
        mut apply: impl FnMut(&Recovered<'_>),
    ) -> Result<(Volumes, RecoveryReport), VolumeError> {
        if config.volume_count == 0 || config.volume_size < record::HEADER_LEN as u64 {
            return Err(VolumeError::Config(
                "volume_count must be at least 1 and volume_size at least 48".into(),
            ));
        }
        if config.volume_size > u64::from(u32::MAX) {
            return Err(VolumeError::Config("volume_size must be at most 4 GiB".into()));
        }
        let dir = config.dir.clone();
        for sub in ["data", "index"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_err(format!("cannot create {}", path.display())))?;
        }
        let mut vols = Vec::with_capacity(config.volume_count as usize);
        for n in 0..config.volume_count {
            vols.push(open_volume(&data_path(&dir, n), config.volume_size)?);
        }
        // A reused volume's index is rewritten with the new generation before any record of it is written,
        // so the index can be newer than the data; a volume's generation is the newer of the two. Start-up
        // reads the files, never the maps: reading a hole of a sparse file through a map can fault (SIGBUS on
        // a full tmpfs), a plain read returns zeroes.
        let generations: Vec<u32> = (0..config.volume_count)
            .map(|n| {
                let indexed = read_index_header(&dir, n);
                let files = vols[n as usize].files();
                let mut scan = Scanner::new(&files.file, config.volume_size);
                scan.first_generation().max(indexed.unwrap_or(0))
            })
            .collect();
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
        let mut next_generation = generations.iter().copied().max().unwrap_or(0) + 1;

        let mut report = RecoveryReport::default();
        let mut order: Vec<u32> =
            (0..config.volume_count).filter(|&n| n != current && generations[n as usize] > 0).collect();
        order.sort_by_key(|&n| generations[n as usize]);
        for &n in &order {
            let generation = generations[n as usize];
            vols[n as usize].generation.store(generation, Ordering::Relaxed);
            report.volumes += 1;
            let replayed = replay(
                &dir,
                config.disk.as_deref(),
                n,
                generation,
                &vols[n as usize].files().file,
                config.volume_size,
                &mut apply,
            );
            report.add(&replayed);
        }

        // The current volume: its index may lag its data (entries are buffered), so the data after the last
        // indexed record is scanned; whatever does not form a valid record after that is a torn tail.
        let mut current_generation = generations[current as usize];
        let offset = if current_generation == 0 {
            current_generation = next_generation;
            next_generation += 1;
            best_effort_rewrite_index(&dir, current, current_generation, &[], config.disk.as_deref());
            0
        } else {
            report.volumes += 1;
            let vol = &vols[current as usize];
            let files = vol.files();
            let replayed = replay(
                &dir,
                config.disk.as_deref(),
                current,
                current_generation,
                &files.file,
                config.volume_size,
                &mut apply,
            );
            report.add(&replayed);
            let end = replayed.end;
            let mut scan = Scanner::new(&files.file, config.volume_size);
            let window = scan.read(end, TORN_TAIL_WINDOW).to_vec();
            // Records of an earlier use of the volume also lie past the end; only other bytes are torn.
            let old_record = matches!(record::decode(&window), Ok(r) if r.generation != current_generation);
            if let Some(last) = window.iter().rposition(|&b| b != 0).filter(|_| !old_record) {
                report.torn_tail_bytes = last as u64 + 1;
                // Zero the torn bytes so that a later scan does not find them again behind new records
                // (best effort: on a full disk the next start-up simply cuts them again).
                if let Err(e) = files.file.write_all_at(&vec![0; last + 1], end) {
                    log::warn!("cannot clear the torn tail of {}: {e}", vol.path.display());
                }
            }
            end
        };
        vols[current as usize].generation.store(current_generation, Ordering::Relaxed);
        if meta_current != Some(current) {
            // Best effort: the generations, not META.txt, decide at the next start-up.
            if let Err(e) = write_meta(&dir, current, config.disk.as_deref()) {
                log::warn!("cannot update META.txt: {e}");
            }
        }
        let index = open_index_for_append(&dir, current)?;
        let volumes = Volumes {
            dir,
            disk: config.disk.clone(),
            size: config.volume_size,
            fsync: config.fsync,
            vols: vols.into_boxed_slice(),
            writer: Mutex::new(Writer {
                current,
                offset,
                next_generation,
                index,
                dirty: false,
                unsynced: Vec::new(),
                scratch: Vec::new(),
            }),
            // Damaged records stepped over at start-up count with those found by reads.
            damaged_reads: AtomicU64::new(report.damaged_records),
            reuses: AtomicU64::new(0),
        };
        Ok((volumes, report))
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one record and returns where it lies. The record is in the kernel when this returns (and on
    /// the disk with `fsync: always`); a failed write leaves the store as it was.
    pub fn append(&self, meta: Meta, bank: &[u8], key: &[u8], value: &[u8]) -> Result<Location, VolumeError> {
        let len = record::encoded_len(bank, key, value);
        if len as u64 > self.size {
            return Err(VolumeError::TooLarge { len, max: self.size });
        }
        let mut w = self.writer();
        if w.offset + len as u64 > self.size {
            self.rotate(&mut w)?;
        }
        let generation = self.vols[w.current as usize].generation.load(Ordering::Relaxed);
        let mut head = std::mem::take(&mut w.scratch);
        head.clear();
        let encoded = record::encode_head(&mut head, generation, meta, bank, key, value);
        if encoded.is_err() {
            w.scratch = head;
            return Err(VolumeError::Config(format!(
                "bank or key too long for a record ({} / {})",
                bank.len(),
                key.len()
            )));
        }
        let vol = &self.vols[w.current as usize];
        let written = write_all_vectored_at(
            &vol.files().file,
            self.disk.as_deref(),
            &mut [IoSlice::new(&head), IoSlice::new(value)],
            w.offset,
        );
        w.scratch = head;
        written.map_err(io_err(format!("cannot write {}", vol.path.display())))?;
        let location = Location { volume: w.current, offset: w.offset as u32, len: len as u32, generation };
        let mut entry = Vec::with_capacity(64 + bank.len() + key.len());
        index::encode_entry(
            &mut entry,
            &Entry { meta, offset: location.offset, len: location.len, bank, key },
        );
        let fits = room(self.disk.as_deref(), entry.len());
        let appended = w.index.write_all(&entry[..fits]).and_then(|()| {
            if fits < entry.len() {
                Err(no_space())
            } else {
                Ok(())
            }
        });
        appended.map_err(io_err("cannot write the index"))?;
        w.offset += len as u64;
        w.dirty = true;
        if self.fsync == Fsync::Always {
            drop(w);
            self.sync()?;
        }
        Ok(location)
    }

    /// Moves to the next volume, the oldest, and reuses it under a new generation.
    fn rotate(&self, w: &mut Writer) -> Result<(), VolumeError> {
        // The fsync of the volume left behind (a whole volume's worth of page cache) would hold every
        // writer for as long as it takes; the next `sync` does it outside the lock instead.
        w.index.flush().map_err(io_err("cannot write the index"))?;
        if std::mem::take(&mut w.dirty) && !w.unsynced.contains(&w.current) {
            w.unsynced.push(w.current);
        }
        let next = (w.current + 1) % self.vols.len() as u32;
        let generation = w.next_generation;
        // From here on, every location in the reused volume reads as recycled.
        let held_data = self.vols[next as usize].generation.swap(generation, Ordering::AcqRel) != 0;
        w.next_generation += 1;
        rewrite_index(&self.dir, next, generation, &[], self.disk.as_deref())?;
        w.index = open_index_for_append(&self.dir, next)?;
        write_meta(&self.dir, next, self.disk.as_deref())?;
        w.current = next;
        w.offset = 0;
        if held_data {
            self.reuses.fetch_add(1, Ordering::Relaxed);
        }
        log::info!("now writing volume {next} (generation {generation})");
        Ok(())
    }

    /// Flushes buffered index entries and fsyncs the current volume and its index, if anything was written.
    ///
    /// Only the flush of the index buffer happens under the writer's lock; the fsyncs themselves (which can
    /// take many milliseconds) run after it is dropped, so appends go on meanwhile.
    pub fn sync(&self) -> Result<(), VolumeError> {
        let (current, dirty, left_behind) = {
            let mut w = self.writer();
            w.index.flush().map_err(io_err("cannot write the index"))?;
            (w.current, std::mem::take(&mut w.dirty), std::mem::take(&mut w.unsynced))
        };
        if self.fsync != Fsync::Never {
            for n in left_behind {
                self.fsync_volume(n)?;
            }
            if dirty {
                self.fsync_volume(current)?;
            }
        }
        Ok(())
    }

    fn fsync_volume(&self, n: u32) -> Result<(), VolumeError> {
        let vol = &self.vols[n as usize];
        vol.files().file.sync_data().map_err(io_err(format!("cannot fsync {}", vol.path.display())))?;
        let index = index_path(&self.dir, n);
        File::open(&index)
            .and_then(|f| f.sync_data())
            .map_err(io_err(format!("cannot fsync {}", index.display())))
    }

    /// Checks that every volume file is still the one the server opened. A file that vanished or was
    /// replaced under the server is reported and treated as empty: the entries that point into it read as
    /// misses from now on (the sweep clears them), and a fresh file takes its place, so writes never go into
    /// a file that no longer has a name. A file cut short is reported and sized again; the records that were
    /// cut read as misses. Called by the maintenance thread once a second.
    pub fn check_files(&self) {
        for (n, vol) in self.vols.iter().enumerate() {
            let files = vol.files();
            let ours = files.file.metadata().map(|m| (m.ino(), m.dev())).ok();
            let problem = match fs::metadata(&vol.path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Some("vanished"),
                Err(_) => None,
                Ok(m) if Some((m.ino(), m.dev())) != ours => Some("was replaced"),
                Ok(m) if m.len() < self.size => {
                    // Cut short: what was cut is lost (those reads fail their check and are misses); the
                    // file is sized again so the map stays readable and writes go on.
                    log::error!(
                        "{} was cut short under the server; the records past {} bytes are lost",
                        vol.path.display(),
                        m.len()
                    );
                    if let Err(e) = files.file.set_len(self.size) {
                        log::error!("cannot size {} again: {e}", vol.path.display());
                    }
                    None
                }
                Ok(_) => None,
            };
            let Some(problem) = problem else { continue };
            drop(files);
            let n = n as u32;
            log::error!("{} {problem} under the server; the volume is treated as empty", vol.path.display());
            if let Err(e) = self.replace_volume(n) {
                log::error!("cannot replace {}: {e}", vol.path.display());
            }
        }
    }

    /// Gives volume `n` a fresh empty file. The current volume starts again at offset 0 under a new
    /// generation; any other volume becomes unused (generation 0), as if never written.
    fn replace_volume(&self, n: u32) -> Result<(), VolumeError> {
        let vol = &self.vols[n as usize];
        let mut w = self.writer();
        let fresh = open_files(&vol.path, self.size)?;
        *vol.files.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        vol.reported_short.store(false, Ordering::Relaxed);
        if n == w.current {
            let generation = w.next_generation;
            w.next_generation += 1;
            vol.generation.store(generation, Ordering::Release);
            rewrite_index(&self.dir, n, generation, &[], self.disk.as_deref())?;
            w.index = open_index_for_append(&self.dir, n)?;
            w.offset = 0;
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
        let (copy, _) = self.read_copy(at, bank, key)?;
        record::decode(&copy).map(|r| f(&r)).map_err(|_| ReadMiss::Damaged)
    }

    /// Copies the record at `at` out of its volume's map and checks it (magic, CRC, generation, names):
    /// the copy, and where the value lies in it.
    fn read_copy(
        &self,
        at: Location,
        bank: &[u8],
        key: &[u8],
    ) -> Result<(Vec<u8>, std::ops::Range<usize>), ReadMiss> {
        let vol = self.vols.get(at.volume as usize).ok_or(ReadMiss::Damaged)?;
        if vol.generation.load(Ordering::Acquire) != at.generation {
            return Err(ReadMiss::Recycled);
        }
        let (start, end) = (at.offset as usize, at.offset as usize + at.len as usize);
        let files = vol.files();
        // A file cut short under the server would turn a read of the map past its end into SIGBUS.
        let file_len = files.file.metadata().map_or(0, |m| m.len());
        if end as u64 > file_len || end > files.map.len() {
            self.damaged();
            if !vol.reported_short.swap(true, Ordering::Relaxed) {
                log::error!(
                    "{} was cut short under the server ({file_len} bytes); the records past its end are lost",
                    vol.path.display()
                );
            }
            return Err(ReadMiss::Damaged);
        }
        // Copy first, then check the copy: the writer may be reusing this volume at this very moment.
        let copy = files.map[start..end].to_vec();
        if vol.generation.load(Ordering::Acquire) != at.generation {
            return Err(ReadMiss::Recycled);
        }
        let value = match record::decode(&copy) {
            Ok(r)
                if r.generation == at.generation && r.bank == bank && r.key == key && r.len == copy.len() =>
            {
                r.len - r.value.len()..r.len
            }
            Ok(_) | Err(_) => {
                self.damaged();
                return Err(ReadMiss::Damaged);
            }
        };
        Ok((copy, value))
    }

    /// Reads the value of the record at `at`, checked as [`Volumes::read`] checks it, without copying it
    /// twice: the copy of the record is returned with the value's place in it.
    pub fn read_value(
        &self,
        at: Location,
        bank: &[u8],
        key: &[u8],
    ) -> Result<(Vec<u8>, std::ops::Range<usize>), ReadMiss> {
        self.read_copy(at, bank, key)
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
}

fn open_volume(path: &Path, size: u64) -> Result<Volume, VolumeError> {
    Ok(Volume {
        path: path.to_owned(),
        files: RwLock::new(Arc::new(open_files(path, size)?)),
        generation: AtomicU32::new(0),
        reported_short: AtomicBool::new(false),
    })
}

fn open_files(path: &Path, size: u64) -> Result<Files, VolumeError> {
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
    // SAFETY: the map is only read through copies that are checked (CRC, generation, names) before use, so
    // concurrent writes to the file by this process or others cannot produce unchecked data.
    let map = unsafe { Mmap::map(&file) }.map_err(io_err(format!("cannot map {}", path.display())))?;
    Ok(Files { file, map })
}

/// What replaying one volume found.
struct Replayed {
    records: u64,
    damaged: u64,
    /// Where valid data ends.
    end: u64,
    /// The index did not cover the volume and was written anew.
    rebuilt: bool,
}

/// Replays one volume, oldest record first. Its index is used while its entries follow each other from
/// offset 0 without a gap (an index is only a faster way to read the volume's headers); from the first
/// gap, or from the end of the index, the volume itself is scanned until its data ends. A damaged record
/// whose header still hangs together is stepped over and its key treated as deleted, so neither the records
/// after it nor an older value of that key come back. If the index had to be completed it is rewritten (best
/// effort: on a full disk the next start-up scans again).
fn replay(
    dir: &Path,
    disk: Option<&DiskBudget>,
    n: u32,
    generation: u32,
    file: &File,
    size: u64,
    apply: &mut impl FnMut(&Recovered<'_>),
) -> Replayed {
    let mut out = Replayed { records: 0, damaged: 0, end: 0, rebuilt: false };
    let mut scan = Scanner::new(file, size);
    let mut entries: Vec<u8> = Vec::new();
    let index_file = fs::read(index_path(dir, n)).ok();
    let indexed = index_file.as_deref().filter(|buf| index::decode_header(buf) == Some(generation));
    let mut at = 0u64;
    match indexed {
        Some(buf) => {
            let mut pos = index::HEADER_LEN;
            // An index whose first record has vanished from the data (the volume file was lost or replaced
            // while the server was down) describes nothing that can be read: the volume is empty.
            if let Some((first, _)) = index::decode_entry(&buf[pos..]) {
                if scan.read(u64::from(first.offset), record::HEADER_LEN).iter().all(|&b| b == 0) {
                    log::error!(
                        "data/{n} does not hold the records index/{n} lists: the volume is treated as empty"
                    );
                    best_effort_rewrite_index(dir, n, generation, &[], disk);
                    out.rebuilt = true;
                    return out;
                }
            }
            while let Some((e, used)) = index::decode_entry(&buf[pos..]) {
                if u64::from(e.offset) != at {
                    break;
                }
                let location = Location { volume: n, offset: e.offset, len: e.len, generation };
                apply(&Recovered {
                    meta: e.meta,
                    bank: Cow::Borrowed(e.bank),
                    key: Cow::Borrowed(e.key),
                    location,
                });
                out.records += 1;
                at += u64::from(e.len);
                pos += used;
            }
            entries.extend_from_slice(&buf[index::HEADER_LEN..pos]);
            out.rebuilt = pos < buf.len();
        }
        None => {
            log::warn!("index/{n} is missing or stale; rebuilding it from data/{n}");
            out.rebuilt = true;
        }
    }
    loop {
        let bytes = scan.read(at, record::HEADER_LEN);
        let Some((len, record_generation)) = record::peek_len(bytes) else { break };
        if record_generation != generation || at + len as u64 > size {
            break; // zeroes, or a record of an earlier use of the volume: the end
        }
        let bytes = scan.read(at, len);
        let location = Location { volume: n, offset: at as u32, len: len as u32, generation };
        let recovered = match record::decode(bytes) {
            Ok(r) => {
                Recovered { meta: r.meta, bank: r.bank.to_vec().into(), key: r.key.to_vec().into(), location }
            }
            Err(_) => {
                let Some((_, _, bank, key)) = record::peek(bytes) else { break };
                let (bank, key) = (bank.to_vec(), key.to_vec());
                // Damage with valid records after it is stepped over; a damaged last record is a torn tail
                // (a write that never completed, so never acknowledged) and is cut off with the rest.
                let next = at + len as u64;
                let header = scan.read(next, record::HEADER_LEN);
                let followed = match record::peek_len(header) {
                    Some((next_len, g)) if g == generation => {
                        record::decode(scan.read(next, next_len)).is_ok()
                    }
                    _ => false,
                };
                if !followed {
                    break;
                }
                log::warn!("data/{n}: damaged record at offset {at}; its key is treated as deleted");
                out.damaged += 1;
                let meta = Meta {
                    kind: record::Kind::Delete,
                    flags: 0,
                    deadline: record::NO_DEADLINE,
                    lifetime: 0,
                    seq: 0,
                };
                Recovered { meta, bank: bank.into(), key: key.into(), location }
            }
        };
        apply(&recovered);
        index::encode_entry(
            &mut entries,
            &Entry {
                meta: recovered.meta,
                offset: location.offset,
                len: location.len,
                bank: &recovered.bank,
                key: &recovered.key,
            },
        );
        out.records += 1;
        out.rebuilt = true;
        at += len as u64;
    }
    if out.rebuilt {
        best_effort_rewrite_index(dir, n, generation, &entries, disk);
    }
    out.end = at;
    out
}

/// Reads a volume file through a large buffer, for start-up scans.
struct Scanner<'a> {
    file: &'a File,
    size: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
}

impl<'a> Scanner<'a> {
    const CHUNK: usize = 4 << 20;

    fn new(file: &'a File, size: u64) -> Self {
        Scanner { file, size, buf: Vec::new(), start: 0 }
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the volume, or where the file is short).
    fn read(&mut self, offset: u64, len: usize) -> &[u8] {
        let want_end = (offset + len as u64).min(self.size);
        let have_end = self.start + self.buf.len() as u64;
        if offset < self.start || want_end > have_end {
            let read_len = (want_end.saturating_sub(offset) as usize).max(Self::CHUNK);
            let read_len = read_len.min(self.size.saturating_sub(offset) as usize);
            if self.buf.len() < read_len {
                // Zeroed by the allocator (calloc), not byte by byte.
                self.buf = vec![0; read_len];
            }
            self.buf.truncate(read_len);
            let mut filled = 0;
            while filled < read_len {
                match self.file.read_at(&mut self.buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(k) => filled += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            self.buf.truncate(filled);
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        let to = ((want_end - self.start) as usize).min(self.buf.len());
        &self.buf[from.min(to)..to]
    }

    /// The generation of the first record that can be read at the start of the volume, 0 if none: a damaged
    /// first record is stepped over.
    fn first_generation(&mut self) -> u32 {
        let mut at = 0u64;
        for _ in 0..16 {
            let header = self.read(at, record::HEADER_LEN);
            let Some((len, _)) = record::peek_len(header) else { return 0 };
            if let Ok(r) = record::decode(self.read(at, len)) {
                return r.generation;
            }
            at += len as u64;
        }
        0
    }
}

/// The generation an index file's header names, reading only the header.
fn read_index_header(dir: &Path, n: u32) -> Option<u32> {
    let mut header = [0; index::HEADER_LEN];
    let mut file = File::open(index_path(dir, n)).ok()?;
    io::Read::read_exact(&mut file, &mut header).ok()?;
    index::decode_header(&header)
}

fn best_effort_rewrite_index(dir: &Path, n: u32, generation: u32, entries: &[u8], disk: Option<&DiskBudget>) {
    if let Err(e) = rewrite_index(dir, n, generation, entries, disk) {
        log::warn!("cannot rewrite index/{n} ({e}); the next start-up will scan data/{n} again");
    }
}

/// Replaces an index file atomically (write a temporary file, fsync, rename).
fn rewrite_index(
    dir: &Path,
    n: u32,
    generation: u32,
    entries: &[u8],
    disk: Option<&DiskBudget>,
) -> Result<(), VolumeError> {
    let path = index_path(dir, n);
    let tmp = path.with_extension("tmp");
    let mut buf = Vec::with_capacity(index::HEADER_LEN + entries.len());
    index::encode_header(&mut buf, generation);
    buf.extend_from_slice(entries);
    write_file_atomically(&tmp, &path, &buf, disk)
}

fn write_file_atomically(
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
    disk: Option<&DiskBudget>,
) -> Result<(), VolumeError> {
    let mut file = File::create(tmp).map_err(io_err(format!("cannot create {}", tmp.display())))?;
    let fits = room(disk, bytes.len());
    let written =
        file.write_all(&bytes[..fits])
            .and_then(|()| if fits < bytes.len() { Err(no_space()) } else { Ok(()) });
    written.map_err(io_err(format!("cannot write {}", tmp.display())))?;
    file.sync_data().map_err(io_err(format!("cannot fsync {}", tmp.display())))?;
    fs::rename(tmp, path).map_err(io_err(format!("cannot rename {} to {}", tmp.display(), path.display())))
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

/// The current volume as `META.txt` names it: decimal, no newline, as CacheFS wrote it.
fn read_meta(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("META.txt")).ok()?.trim().parse().ok()
}

fn write_meta(dir: &Path, current: u32, disk: Option<&DiskBudget>) -> Result<(), VolumeError> {
    write_file_atomically(
        &dir.join("META.txt.tmp"),
        &dir.join("META.txt"),
        current.to_string().as_bytes(),
        disk,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{Kind, NO_DEADLINE};

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
            v.rotate(&mut w).unwrap();
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
        assert_eq!(value(&v, a, "a").unwrap(), b"1");
        // The next record overwrites the torn one, and the torn bytes are gone for good.
        assert_eq!(v.append(PUT, b"b", b"c", b"3").unwrap().offset, b.offset);
        drop(v);
        let (_, seen, report) = open(&cfg);
        assert_eq!(seen.iter().map(|r| r.key.as_ref()).collect::<Vec<_>>(), [&b"a"[..], b"c"]);
        assert_eq!(report.torn_tail_bytes, 0);
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
