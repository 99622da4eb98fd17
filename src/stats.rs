//! Server counters, exported by the `stats` op.
//!
//! Each worker owns a cache-line-padded block of counters that only it writes, and the reactor owns the
//! network counters, so counting never bounces a cache line between threads; `stats` sums them up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_utils::CachePadded;

use bankcache_proto::OpKind;

/// Counters written by one worker.
#[derive(Default)]
pub struct WorkerCounters {
    ops: [AtomicU64; OpKind::ALL.len()],
    errors: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    /// Request durations: counts per bucket of [`LATENCY_BUCKETS_US`] (and one over the last), and the sum.
    latency: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    latency_sum_us: AtomicU64,
}

/// Upper bounds, in microseconds, of the request-duration histogram's buckets.
pub const LATENCY_BUCKETS_US: [u64; 13] =
    [10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000];

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
}

/// Every counter of the server.
pub struct Stats {
    started: Instant,
    /// The reactor's counters.
    pub net: CachePadded<NetCounters>,
    workers: Box<[CachePadded<WorkerCounters>]>,
}

/// A point-in-time sum of the counters, in the order `stats` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// `(name, value)` pairs.
    pub fields: Vec<(&'static str, u64)>,
}

impl Stats {
    /// Counters for `workers` worker threads.
    pub fn new(workers: usize) -> Self {
        Stats {
            started: Instant::now(),
            net: CachePadded::new(NetCounters::default()),
            workers: (0..workers).map(|_| CachePadded::new(WorkerCounters::default())).collect(),
        }
    }

    /// The block of counters worker `id` writes.
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

    /// Sums every counter; `store_fields` (keys, banks, expiries) come from the store.
    pub fn snapshot(&self, store_fields: &[(&'static str, u64)]) -> Snapshot {
        let sum = |f: &dyn Fn(&WorkerCounters) -> &AtomicU64| -> u64 {
            self.workers.iter().map(|w| f(w).load(Ordering::Relaxed)).sum()
        };
        let net = &self.net;
        let mut fields = vec![
            ("uptime_s", self.started.elapsed().as_secs()),
            ("connections_current", net.connections_current.load(Ordering::Relaxed)),
            ("connections_total", net.connections_total.load(Ordering::Relaxed)),
            ("connections_rejected", net.connections_rejected.load(Ordering::Relaxed)),
            ("requests_too_large", net.requests_too_large.load(Ordering::Relaxed)),
            ("bytes_in", net.bytes_in.load(Ordering::Relaxed)),
            ("bytes_out", net.bytes_out.load(Ordering::Relaxed)),
            ("requests_inline", net.requests_inline.load(Ordering::Relaxed)),
        ];
        for kind in OpKind::ALL {
            fields.push((op_field(kind), sum(&|w| &w.ops[kind as usize])));
        }
        fields.push(("errors", sum(&|w| &w.errors)));
        fields.push(("hits", sum(&|w| &w.hits)));
        fields.push(("misses", sum(&|w| &w.misses)));
        fields.extend_from_slice(store_fields);
        Snapshot { fields }
    }
}

fn op_field(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Put => "ops_put",
        OpKind::Get => "ops_get",
        OpKind::Delete => "ops_delete",
        OpKind::Touch => "ops_touch",
        OpKind::GetTouch => "ops_getouch",
        OpKind::Incr => "ops_incr",
        OpKind::BankKeys => "ops_bank_keys",
        OpKind::BankList => "ops_bank_list",
        OpKind::BankReset => "ops_bank_reset",
        OpKind::Ping => "ops_ping",
        OpKind::Stats => "ops_stats",
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
        let snap = stats.snapshot(&[("keys", 3)]);
        let get = |name: &str| snap.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| *v);
        assert_eq!(get("ops_get"), Some(2));
        assert_eq!(get("hits"), Some(1));
        assert_eq!(get("bytes_in"), Some(10));
        assert_eq!(get("keys"), Some(3));
        assert_eq!(get("ops_bank_reset"), Some(0));
    }
}
