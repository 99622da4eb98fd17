//! The volume store's file I/O: positioned reads and writes, atomic small files, and the test hook for a
//! full disk that every write goes through.
//!
//! Reads are plain positioned reads (`pread`), never loads through a memory map: a map turns a read of a
//! page the file no longer backs (a file cut short under the server, or a hole on a full tmpfs, which
//! faults in a page it cannot allocate) into SIGBUS, which kills the process; `pread` returns what is there
//! or an error. A read copies the record once either way.

use std::fs::{self, File};
use std::io::{self, IoSlice, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::VolumeError;

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
pub fn no_space() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

/// How many of `len` bytes fit on `disk` (all of them without a budget).
fn room(disk: Option<&DiskBudget>, len: usize) -> usize {
    disk.map_or(len, |d| d.take(len))
}

/// Writes every byte of `parts` at `offset`, normally in one `pwritev`: a put's value goes from the request
/// buffer to the page cache with no copy behind the record header first. On a full disk what fits is
/// written and the write fails, as a real one does.
pub fn write_parts_at(
    file: &File,
    disk: Option<&DiskBudget>,
    parts: &mut [IoSlice<'_>],
    offset: u64,
) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let fits = room(disk, total);
    if fits < total {
        let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        file.write_all_at(&joined[..fits], offset)?;
        return Err(no_space());
    }
    pwritev_all(file, parts, offset)
}

/// Writes `bytes` at `offset`, drawing on the budget.
pub fn write_at(file: &File, disk: Option<&DiskBudget>, bytes: &[u8], offset: u64) -> io::Result<()> {
    write_parts_at(file, disk, &mut [IoSlice::new(bytes)], offset)
}

/// Appends `bytes` to a writer, drawing on the budget.
pub fn append(out: &mut impl Write, disk: Option<&DiskBudget>, bytes: &[u8]) -> io::Result<()> {
    let fits = room(disk, bytes.len());
    out.write_all(&bytes[..fits])?;
    if fits < bytes.len() {
        return Err(no_space());
    }
    Ok(())
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

/// Whole pages only: a hole punched over part of a page zeroes that part in place, under any send that
/// refers to the page, so the hole is rounded up to this (the largest page size in use).
const PUNCH_ALIGN: u64 = 64 * 1024;

/// Punches the bytes `from..to` (widened to whole pages) out of `file`, keeping its size: the page-cache
/// pages leave the file, keeping their bytes for whoever still refers to them (a socket's queue), and the
/// range reads as zeros.
#[cfg(target_os = "linux")]
pub fn punch_hole(file: &File, from: u64, to: u64) -> io::Result<()> {
    let from = from / PUNCH_ALIGN * PUNCH_ALIGN;
    let to = to.div_ceil(PUNCH_ALIGN) * PUNCH_ALIGN;
    let offset = libc::off_t::try_from(from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len = libc::off_t::try_from(to - from).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: fallocate takes a file descriptor the file owns and plain integers.
    if unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Not done elsewhere: values are then always copied.
#[cfg(not(target_os = "linux"))]
pub fn punch_hole(_file: &File, _from: u64, _to: u64) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// True when the file system of `dir` can punch holes: tried on a scratch file there.
pub fn can_punch_holes(dir: &Path) -> bool {
    let path = dir.join(".punch-probe");
    let probe = File::options().read(true).write(true).create(true).truncate(true).open(&path);
    let ok = probe.and_then(|f| {
        f.set_len(2 * PUNCH_ALIGN)?;
        punch_hole(&f, 0, PUNCH_ALIGN)
    });
    let _ = fs::remove_file(&path);
    if let Err(e) = &ok {
        log::info!(
            "{} cannot punch holes ({e}): values are copied, never sent from the files",
            dir.display()
        );
    }
    ok.is_ok()
}

/// Reads up to `buf.len()` bytes at `offset`; returns how many were there (fewer at the end of the file).
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Replaces a small file atomically: write a temporary file, fsync it (unless `durable` is false), rename.
pub fn write_file_atomically(
    path: &Path,
    bytes: &[u8],
    disk: Option<&DiskBudget>,
    durable: bool,
) -> Result<(), VolumeError> {
    let tmp = path.with_extension("tmp");
    let io = |what: &str, p: &Path| {
        let context = format!("cannot {what} {}", p.display());
        move |source| VolumeError::Io { context, source }
    };
    let mut file = File::create(&tmp).map_err(io("create", &tmp))?;
    append(&mut file, disk, bytes).map_err(io("write", &tmp))?;
    if durable {
        file.sync_data().map_err(io("fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(io("rename to its place", &tmp))
}

/// Reads a volume file through a large buffer, for start-up scans.
pub struct Scanner<'a> {
    file: &'a File,
    size: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
}

impl<'a> Scanner<'a> {
    const CHUNK: usize = 4 << 20;

    /// A scanner of the first `size` bytes of `file`.
    pub fn new(file: &'a File, size: u64) -> Self {
        Scanner { file, size, buf: Vec::new(), start: 0 }
    }

    /// Up to `len` bytes from `offset` (fewer at the end of the volume, or where the file is short or
    /// cannot be read).
    pub fn read(&mut self, offset: u64, len: usize) -> &[u8] {
        let want_end = (offset.saturating_add(len as u64)).min(self.size);
        let have_end = self.start + self.buf.len() as u64;
        if offset < self.start || want_end > have_end {
            let read_len = (want_end.saturating_sub(offset) as usize).max(Self::CHUNK);
            let read_len = read_len.min(self.size.saturating_sub(offset) as usize);
            if self.buf.len() < read_len {
                // Zeroed by the allocator (calloc), not byte by byte.
                self.buf = vec![0; read_len];
            }
            self.buf.truncate(read_len);
            let filled = read_at(self.file, &mut self.buf, offset).unwrap_or(0);
            self.buf.truncate(filled);
            self.start = offset;
        }
        let from = offset.saturating_sub(self.start) as usize;
        let to = (want_end.saturating_sub(self.start) as usize).min(self.buf.len());
        &self.buf[from.min(to)..to]
    }

    /// The first offset at or after `from` where `pattern` occurs, reading forward a chunk at a time.
    pub fn find(&mut self, from: u64, pattern: &[u8]) -> Option<u64> {
        let mut at = from;
        while at < self.size {
            let chunk = self.read(at, Self::CHUNK);
            if chunk.len() < pattern.len() {
                return None;
            }
            if let Some(i) = memchr::memmem::find(chunk, pattern) {
                return Some(at + i as u64);
            }
            // Overlap by the pattern's length so a match across chunks is not missed.
            at += (chunk.len() - pattern.len() + 1) as u64;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_writes_what_fits_then_fails() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let disk = DiskBudget::new(5);
        let err = write_at(&file, Some(&disk), b"0123456789", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"01234");
        assert_eq!(disk.left(), 0);
        disk.set(100);
        write_at(&file, Some(&disk), b"abc", 5).unwrap();
        assert_eq!(disk.left(), 97);
    }

    #[test]
    fn the_scanner_finds_a_pattern_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut bytes = vec![0u8; Scanner::CHUNK + 100];
        bytes[Scanner::CHUNK - 2..Scanner::CHUNK + 2].copy_from_slice(b"BCR2");
        fs::write(&path, &bytes).unwrap();
        let file = File::open(&path).unwrap();
        let mut scan = Scanner::new(&file, bytes.len() as u64);
        assert_eq!(scan.find(0, b"BCR2"), Some(Scanner::CHUNK as u64 - 2));
        assert_eq!(scan.find(Scanner::CHUNK as u64, b"BCR2"), None);
    }
}
