//! The access log (`access_log`): one line per HTTP request, in the Common Log Format with the request's
//! time in microseconds after it, written off the hot path.
//!
//! A worker formats its lines into a [`Batch`] as it runs requests and hands the batch over in one
//! channel send when its batch of jobs is done (a send costs no system call: the writer thread never waits
//! on the channel, it looks every [`TICK`]). Only the writer thread touches the file, through a
//! `BufWriter`, flushed after every look that found lines and at shutdown, so a worker never waits on a
//! disk. The queue is bounded in batches and in bytes; a batch that does not fit is dropped and its lines
//! counted (`access_log_dropped`), rather than make a worker wait or memory grow.
//!
//! SIGHUP makes the writer reopen the file by its path, so that logrotate can rename it and signal (or use
//! `copytruncate`, which needs nothing: the file is opened to append).
//!
//! ```text
//! 127.0.0.1 - - [02/Dec/2026:09:12:01 +0000] "GET /foo HTTP/1.1" 200 11 48
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use crate::stats::WorkerCounters;

/// How often the writer looks for lines (and so the longest a line waits before it is written).
pub const TICK: Duration = Duration::from_millis(200);
/// Batches the queue holds at most.
const MAX_BATCHES: usize = 4096;
/// Bytes of lines the queue holds at most: past it, lines are dropped and counted.
const MAX_QUEUED_BYTES: usize = 8 << 20;
/// Most bytes of a request line written; a longer one is cut there and ends in `...`.
const MAX_REQUEST_LINE: usize = 4096;
/// A write error is logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

/// The workers' side of the log: where batches go, and how many bytes wait there.
#[derive(Clone)]
pub struct AccessLog {
    tx: Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
}

/// One request as the log shows it.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    /// The client's address (`-` when unknown).
    pub peer: Option<IpAddr>,
    /// The request's first line, as received (without its line end).
    pub request_line: &'a [u8],
    /// The response's status.
    pub status: u16,
    /// Bytes of the response's body sent (0 for a HEAD).
    pub body_bytes: usize,
    /// Time the request took to run, in microseconds.
    pub micros: u64,
    /// When it ran, Unix ms.
    pub now_ms: u64,
}

/// Lines one worker gathers while it runs a batch of jobs, handed to the writer in one piece.
#[derive(Default)]
pub struct Batch {
    bytes: Vec<u8>,
    lines: u64,
    /// The second whose time stamp is in `stamp`, so a stamp is formatted once a second, not per line.
    stamp_secs: u64,
    /// `[02/Dec/2026:09:12:01 +0000]`.
    stamp: String,
}

impl Batch {
    /// Appends one line, formatted straight into the batch (writing to a `Vec` cannot fail).
    pub fn push(&mut self, entry: &Entry<'_>) {
        let secs = entry.now_ms / 1000;
        if self.stamp.is_empty() || secs != self.stamp_secs {
            self.stamp_secs = secs;
            self.stamp = clf_time(secs);
        }
        let out = &mut self.bytes;
        let _ = match entry.peer {
            Some(ip) => write!(out, "{ip} - - {} \"", self.stamp),
            None => write!(out, "- - - {} \"", self.stamp),
        };
        escape_into(out, entry.request_line);
        let _ = writeln!(out, "\" {} {} {}", entry.status, entry.body_bytes, entry.micros);
        self.lines += 1;
    }

    /// True when there are no lines.
    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }
}

impl AccessLog {
    /// Hands the batch's lines to the writer, leaving the batch empty; if the queue is full they are
    /// dropped and counted in `counters`. Never waits.
    pub fn send(&self, batch: &mut Batch, counters: &WorkerCounters) {
        if batch.is_empty() {
            return;
        }
        let (bytes, lines) = (std::mem::take(&mut batch.bytes), std::mem::take(&mut batch.lines));
        let len = bytes.len();
        if self.queued.fetch_add(len, Ordering::AcqRel) + len > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            counters.access_log_dropped(lines);
            return;
        }
        // Full, or the writer gone: either way the lines are lost, and counted.
        if self.tx.try_send(bytes).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            counters.access_log_dropped(lines);
        }
    }
}

/// The writer thread: owns the file, stops (after writing everything queued) when dropped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The SIGHUP handler, removed with the writer.
    hangup: signal_hook::SigId,
}

impl Drop for Writer {
    fn drop(&mut self) {
        signal_hook::low_level::unregister(self.hangup);
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            if thread.join().is_err() {
                log::error!("the access log's writer thread panicked");
            }
        }
    }
}

/// The file opened to append, created if need be.
pub fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Starts the writer on `file` (opened by [`open`] from `path`, which SIGHUP opens again), and returns
/// the workers' side of it.
pub fn start(path: PathBuf, file: File) -> io::Result<(AccessLog, Writer)> {
    let (tx, rx) = crossbeam_channel::bounded(MAX_BATCHES);
    let queued = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reopen = Arc::new(AtomicBool::new(false));
    let hangup = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reopen))?;
    let state = WriterState {
        path,
        out: BufWriter::with_capacity(64 * 1024, file),
        rx,
        queued: Arc::clone(&queued),
        stop: Arc::clone(&stop),
        reopen,
        error_logged: None,
    };
    let thread = thread::Builder::new().name("access-log".into()).spawn(move || state.run())?;
    Ok((AccessLog { tx, queued }, Writer { stop, thread: Some(thread), hangup }))
}

struct WriterState {
    path: PathBuf,
    out: BufWriter<File>,
    rx: Receiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
    error_logged: Option<Instant>,
}

impl WriterState {
    fn run(mut self) {
        loop {
            // Read before draining: once the stop is seen, every batch sent before it is in the queue.
            let stopping = self.stop.load(Ordering::Acquire);
            let mut wrote = false;
            while let Ok(batch) = self.rx.try_recv() {
                self.queued.fetch_sub(batch.len(), Ordering::AcqRel);
                let written = self.out.write_all(&batch);
                self.check(written);
                wrote = true;
            }
            if wrote {
                let flushed = self.out.flush();
                self.check(flushed);
            }
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.reopen_file();
            }
            if stopping {
                return;
            }
            thread::park_timeout(TICK);
        }
    }

    /// After SIGHUP: what is buffered goes to the old file, then the path is opened again (logrotate has
    /// renamed the old one). If it cannot be, the old file is kept.
    fn reopen_file(&mut self) {
        let flushed = self.out.flush();
        self.check(flushed);
        match open(&self.path) {
            Ok(file) => {
                self.out = BufWriter::with_capacity(64 * 1024, file);
                log::info!("access log {} reopened", self.path.display());
            }
            Err(e) => log::warn!(
                "cannot reopen the access log {}: {e}; writing on to the old file",
                self.path.display()
            ),
        }
    }

    fn check(&mut self, result: io::Result<()>) {
        if let Err(e) = result {
            if self.error_logged.is_none_or(|at| at.elapsed() >= ERROR_LOG_EVERY) {
                self.error_logged = Some(Instant::now());
                log::warn!(
                    "cannot write the access log {}: {e} (lines are lost meanwhile)",
                    self.path.display()
                );
            }
        }
    }
}

/// `[02/Dec/2026:09:12:01 +0000]` for Unix second `secs`: the Common Log Format's time, rearranged from
/// the IMF-fixdate `httpdate` writes (`Wed, 02 Dec 2026 09:12:01 GMT`), so no calendar is computed here.
fn clf_time(secs: u64) -> String {
    let imf = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    match (imf.get(5..7), imf.get(8..11), imf.get(12..16), imf.get(17..25)) {
        (Some(day), Some(month), Some(year), Some(time)) => format!("[{day}/{month}/{year}:{time} +0000]"),
        _ => format!("[{imf}]"),
    }
}

/// Appends the request line with `"`, `\` and bytes outside printable ASCII written as `\xHH` (as nginx
/// does), so that a line always parses and cannot be forged by a request, cut at [`MAX_REQUEST_LINE`].
fn escape_into(out: &mut Vec<u8>, line: &[u8]) {
    let (shown, cut) = match line.get(..MAX_REQUEST_LINE) {
        Some(head) if line.len() > MAX_REQUEST_LINE => (head, true),
        _ => (line, false),
    };
    for &b in shown {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
    if cut {
        out.extend_from_slice(b"...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    fn entry(line: &[u8]) -> Entry<'_> {
        Entry {
            peer: Some("127.0.0.1".parse().unwrap()),
            request_line: line,
            status: 200,
            body_bytes: 11,
            micros: 48,
            now_ms: 784_111_777_123,
        }
    }

    #[test]
    fn a_line_is_the_common_log_format_with_the_time_taken() {
        let mut batch = Batch::default();
        batch.push(&entry(b"GET /foo HTTP/1.1"));
        batch.push(&Entry { peer: None, status: 404, body_bytes: 0, ..entry(b"HEAD /x?a=\"b\"\\ HTTP/1.0") });
        assert_eq!(
            String::from_utf8(batch.bytes.clone()).unwrap(),
            "127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /foo HTTP/1.1\" 200 11 48\n\
             - - - [06/Nov/1994:08:49:37 +0000] \"HEAD /x?a=\\x22b\\x22\\x5C HTTP/1.0\" 404 0 48\n"
        );
        assert_eq!(batch.lines, 2);
        let mut v6 = Batch::default();
        v6.push(&Entry { peer: Some("::1".parse().unwrap()), ..entry(b"GET / HTTP/1.1") });
        assert!(v6.bytes.starts_with(b"::1 - - [06/Nov/1994:08:49:37 +0000] "));
    }

    #[test]
    fn a_long_or_odd_request_line_is_cut_and_escaped() {
        let mut out = Vec::new();
        escape_into(&mut out, b"\x01\xff");
        assert_eq!(out, b"\\x01\\xFF");
        let mut out = Vec::new();
        escape_into(&mut out, &vec![b'a'; MAX_REQUEST_LINE + 10]);
        assert_eq!(out.len(), MAX_REQUEST_LINE + 3);
        assert!(out.ends_with(b"a..."));
    }

    #[test]
    fn batches_past_the_bound_are_dropped_and_counted() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let log = AccessLog { tx, queued: Arc::new(AtomicUsize::new(0)) };
        let stats = Stats::new(1);
        let counters = stats.worker(0);
        let mut batch = Batch::default();
        batch.push(&entry(b"GET /a HTTP/1.1"));
        log.send(&mut batch, counters);
        assert!(batch.is_empty(), "sent, the batch starts again");
        batch.push(&entry(b"GET /b HTTP/1.1"));
        batch.push(&entry(b"GET /c HTTP/1.1"));
        log.send(&mut batch, counters);
        let snapshot = stats.snapshot(Default::default());
        assert_eq!(snapshot.access_log_dropped, 2, "the queue held one batch");
        assert_eq!(rx.len(), 1);
        log.queued.store(MAX_QUEUED_BYTES, Ordering::Relaxed);
        drop(rx.try_recv());
        batch.push(&entry(b"GET /d HTTP/1.1"));
        log.send(&mut batch, counters);
        assert_eq!(stats.snapshot(Default::default()).access_log_dropped, 3, "over the byte bound");
    }

    #[test]
    fn the_writer_writes_everything_sent_before_it_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let (log, writer) = start(path.clone(), open(&path).unwrap()).unwrap();
        let stats = Stats::new(1);
        let mut batch = Batch::default();
        for _ in 0..3 {
            batch.push(&entry(b"GET /foo HTTP/1.1"));
            log.send(&mut batch, stats.worker(0));
        }
        drop(writer);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
