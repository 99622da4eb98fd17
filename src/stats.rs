//! Server counters, exported by the `stats` op, `GET /stats` and `GET /metrics`.
//!
//! Each worker owns a cache-line-padded block of counters that only it writes, and the reactor owns the
//! network counters, so counting never bounces a cache line between threads; a [`Snapshot`] sums them up,
//! typed, so every export reads a counter by field and none can silently read as zero.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bankcache_proto::OpKind;
use crossbeam_utils::CachePadded;

/// Number of op kinds.
const OP_KINDS: usize = OpKind::ALL.len();

/// Upper bounds, in microseconds, of the request-duration histogram's buckets.
pub const LATENCY_BUCKETS_US: [u64; 13] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000];

/// Counters written by one worker (or by the reactor, for the requests it runs itself).
#[derive(Default)]
pub struct WorkerCounters {
    ops: [AtomicU64; OP_KINDS],
    errors: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Request durations: counts per bucket of [`LATENCY_BUCKETS_US`] (and one over the last), and the sum.
    latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

impl WorkerCounters {
    /// Counts one op of `kind`.
    pub fn op(&self, kind: OpKind) {
        bump(&self.ops[kind as usize]);
    }

    /// Counts one error reply.
    pub fn error(&self) {
        bump(&self.errors);
    }

    /// Counts a read that found its key.
    pub fn hit(&self) {
        bump(&self.hits);
    }

    /// Counts a read that did not find its key.
    pub fn miss(&self) {
        bump(&self.misses);
    }

    /// Records how long one request took to run.
    pub fn latency(&self, micros: u64) {
        let bucket =
            LATENCY_BUCKETS_US.iter().position(|&le| micros <= le).unwrap_or(LATENCY_BUCKETS_US.len());
        bump(&self.latency[bucket]);
        add(&self.latency_sum_us, micros);
    }
}

/// Counters written by the reactor.
#[derive(Default)]
pub struct NetCounters {
    /// Open client connections.
    pub connections_current: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused over `max_connections`.
    pub connections_rejected: AtomicU64,
    /// Connections closed because a request could not be read on from: a JSON request over
    /// `max_request_bytes`, or an HTTP request that is malformed or over its limits (400, 413, 431, 501).
    pub requests_too_large: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Requests the reactor ran itself rather than handing them to a worker (see `inline_ops`).
    pub requests_inline: AtomicU64,
    /// Clients closed for leaving `max_output_bytes` of replies unread for `output_timeout`.
    pub slow_clients_closed: AtomicU64,
    /// Connections closed for sending nothing for `idle_timeout` (JSON) or `http_idle_timeout` (HTTP).
    pub connections_closed_idle: AtomicU64,
    /// Connections accepted and closed at once because the process was out of file descriptors.
    pub connections_dropped_no_fd: AtomicU64,
    /// Wrong tokens: `auth` ops and HTTP bearer tokens that were not `auth_token`.
    pub auth_failures: AtomicU64,
}

/// Every counter of the server.
pub struct Stats {
    started: Instant,
    /// The reactor's counters.
    pub net: CachePadded<NetCounters>,
    workers: Box<[CachePadded<WorkerCounters>]>,
}

/// Figures the store reports for `stats` (filled in by the `stats` command, which can see the store).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreFigures {
    /// Expired entries removed when an op ran into them.
    pub expired_lazy: u64,
    /// Expired entries removed by the background sweep.
    pub expired_sweep: u64,
    /// Entries held, including expired ones the sweep has not reached yet.
    pub keys: u64,
    /// Banks.
    pub banks: u64,
    /// Bytes of keys and values held, in RAM or on disk.
    pub value_bytes: u64,
    /// Bytes of values held in RAM.
    pub memory_bytes: u64,
    /// Bytes counted against `memory_max_bytes`: entries, values, indexes and banks.
    pub memory_used: u64,
    /// `memory_max_bytes`.
    pub memory_max: u64,
    /// Of `memory_used`, the banks' slot arrays and hash indexes.
    pub memory_index: u64,
    /// Of `memory_used`, the banks' own structures.
    pub memory_banks: u64,
    /// Values dropped from RAM to stay within `memory_max_bytes`.
    pub evictions: u64,
    /// Reads served from RAM.
    pub reads_memory: u64,
    /// Reads served from disk.
    pub reads_disk: u64,
    /// Disk reads that found a damaged record.
    pub crc_failures: u64,
    /// Volumes reused since start.
    pub volume_reuses: u64,
    /// At start-up, damaged records and unreadable regions found.
    pub recovery_damaged: u64,
    /// At start-up, keys dropped because a gap in the log made their value unprovable.
    pub recovery_unprovable: u64,
    /// At start-up, stale index entries ignored.
    pub recovery_recycled: u64,
}

/// The reactor's counters at one instant.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetFigures {
    /// Open client connections.
    pub connections_current: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// Connections refused over `max_connections`.
    pub connections_rejected: u64,
    /// Connections closed because a request could not be read on from.
    pub requests_too_large: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Requests the reactor ran itself.
    pub requests_inline: u64,
    /// Clients closed for not reading their replies.
    pub slow_clients_closed: u64,
    /// Connections closed for sending nothing for their idle timeout.
    pub connections_closed_idle: u64,
    /// Connections closed at once for want of file descriptors.
    pub connections_dropped_no_fd: u64,
    /// Wrong tokens presented.
    pub auth_failures: u64,
}

/// Every counter summed at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Seconds since start.
    pub uptime_s: u64,
    /// The reactor's counters.
    pub net: NetFigures,
    /// Ops executed, per kind, in [`OpKind::ALL`] order (read them with [`Snapshot::op`]).
    ops: [u64; OP_KINDS],
    /// Error replies.
    pub errors: u64,
    /// Reads (`get`, `getouch`) that found their key.
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// The store's figures.
    pub store: StoreFigures,
}

impl Snapshot {
    /// Ops of `kind` executed.
    pub fn op(&self, kind: OpKind) -> u64 {
        self.ops[kind as usize]
    }

    /// Every counter with its name, in the order the `stats` op prints them: the one list of those names.
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        let (net, store) = (&self.net, &self.store);
        let mut fields = vec![
            ("uptime_s", self.uptime_s),
            ("connections_current", net.connections_current),
            ("connections_total", net.connections_total),
            ("connections_rejected", net.connections_rejected),
            ("requests_too_large", net.requests_too_large),
            ("bytes_in", net.bytes_in),
            ("bytes_out", net.bytes_out),
            ("requests_inline", net.requests_inline),
            ("slow_clients_closed", net.slow_clients_closed),
            ("connections_closed_idle", net.connections_closed_idle),
            ("connections_dropped_no_fd", net.connections_dropped_no_fd),
            ("auth_failures", net.auth_failures),
        ];
        fields.extend(OpKind::ALL.iter().map(|&kind| (kind.counter(), self.op(kind))));
        fields.extend([
            ("errors", self.errors),
            ("hits", self.hits),
            ("misses", self.misses),
            ("expired_lazy", store.expired_lazy),
            ("expired_sweep", store.expired_sweep),
            ("keys", store.keys),
            ("banks", store.banks),
            ("value_bytes", store.value_bytes),
            ("memory_bytes", store.memory_bytes),
            ("memory_used", store.memory_used),
            ("memory_max", store.memory_max),
            ("memory_index", store.memory_index),
            ("memory_banks", store.memory_banks),
            ("evictions", store.evictions),
            ("reads_memory", store.reads_memory),
            ("reads_disk", store.reads_disk),
            ("crc_failures", store.crc_failures),
            ("volume_reuses", store.volume_reuses),
            ("recovery_damaged", store.recovery_damaged),
            ("recovery_unprovable", store.recovery_unprovable),
            ("recovery_recycled", store.recovery_recycled),
        ]);
        fields
    }
}

impl Stats {
    /// Counters for `blocks` threads that run requests (the workers, and the reactor for its inline ones).
    pub fn new(blocks: usize) -> Self {
        Stats {
            started: Instant::now(),
            net: CachePadded::new(NetCounters::default()),
            workers: (0..blocks).map(|_| CachePadded::new(WorkerCounters::default())).collect(),
        }
    }

    /// The block of counters thread `id` writes.
    pub fn worker(&self, id: usize) -> &WorkerCounters {
        &self.workers[id]
    }

    /// The request-duration histogram summed over workers: per-bucket counts (not cumulative; the last is
    /// over the last bound) and the sum in microseconds.
    pub fn latency(&self) -> (Vec<u64>, u64) {
        let mut buckets = vec![0; LATENCY_BUCKETS_US.len() + 1];
        let mut sum = 0;
        for w in self.workers.iter() {
            for (total, bucket) in buckets.iter_mut().zip(&w.latency) {
                *total += bucket.load(Ordering::Relaxed);
            }
            sum += w.latency_sum_us.load(Ordering::Relaxed);
        }
        (buckets, sum)
    }

    /// Sums every counter; `store` comes from the store.
    pub fn snapshot(&self, store: StoreFigures) -> Snapshot {
        let sum = |f: &dyn Fn(&WorkerCounters) -> &AtomicU64| -> u64 {
            self.workers.iter().map(|w| f(w).load(Ordering::Relaxed)).sum()
        };
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let net = &self.net;
        let mut ops = [0; OP_KINDS];
        for (i, total) in ops.iter_mut().enumerate() {
            *total = sum(&|w| &w.ops[i]);
        }
        Snapshot {
            uptime_s: self.started.elapsed().as_secs(),
            net: NetFigures {
                connections_current: load(&net.connections_current),
                connections_total: load(&net.connections_total),
                connections_rejected: load(&net.connections_rejected),
                requests_too_large: load(&net.requests_too_large),
                bytes_in: load(&net.bytes_in),
                bytes_out: load(&net.bytes_out),
                requests_inline: load(&net.requests_inline),
                slow_clients_closed: load(&net.slow_clients_closed),
                connections_closed_idle: load(&net.connections_closed_idle),
                connections_dropped_no_fd: load(&net.connections_dropped_no_fd),
                auth_failures: load(&net.auth_failures),
            },
            ops,
            errors: sum(&|w| &w.errors),
            hits: sum(&|w| &w.hits),
            misses: sum(&|w| &w.misses),
            store,
        }
    }
}

/// Adds one to a counter only its owner writes: a plain load and store, no locked instruction.
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Adds `n` to a counter only its owner writes.
pub fn add(counter: &AtomicU64, n: u64) {
    counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sums_workers() {
        let stats = Stats::new(2);
        stats.worker(0).op(OpKind::Get);
        stats.worker(1).op(OpKind::Get);
        stats.worker(1).hit();
        add(&stats.net.bytes_in, 10);
        let snap = stats.snapshot(StoreFigures { keys: 3, ..StoreFigures::default() });
        let fields = snap.fields();
        let get = |name: &str| fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(get("ops_get"), Some(2));
        assert_eq!(get("hits"), Some(1));
        assert_eq!(get("bytes_in"), Some(10));
        assert_eq!(get("keys"), Some(3));
        assert_eq!(get("ops_bank_reset"), Some(0));
    }

    #[test]
    fn every_counter_name_is_listed_once() {
        let fields = Stats::new(1).snapshot(StoreFigures::default()).fields();
        let mut names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a counter name appears twice");
    }
}
