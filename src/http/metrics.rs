//! `GET /metrics`: every counter in Prometheus's text format, read from the typed [`Snapshot`].

use std::fmt::Write as _;

use bankcache_proto::OpKind;

use crate::stats::{Snapshot, LATENCY_BUCKETS_US};

/// The counters, and the request-duration histogram (`latency`: per-bucket counts and the sum in µs, as
/// [`crate::stats::Stats::latency`] gives them), in Prometheus's text format.
pub fn prometheus(s: &Snapshot, latency: &(Vec<u64>, u64)) -> String {
    let mut out = String::with_capacity(4096);
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP bankcache_{name} {help}\n# TYPE bankcache_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "bankcache_{name}{labels} {value}");
        }
    };
    let (net, store) = (&s.net, &s.store);
    family("uptime_seconds", "gauge", "Seconds since the server started.", &[("", s.uptime_s)]);
    family("connections", "gauge", "Open client connections.", &[("", net.connections_current)]);
    let accepted = [("", net.connections_total)];
    family("connections_accepted_total", "counter", "Connections accepted.", &accepted);
    let refused = [("", net.connections_rejected)];
    family("connections_refused_total", "counter", "Connections refused over max_connections.", &refused);
    let bytes = [("{direction=\"in\"}", net.bytes_in), ("{direction=\"out\"}", net.bytes_out)];
    family("network_bytes_total", "counter", "Bytes read from and written to clients.", &bytes);
    let inline = [("", net.requests_inline)];
    family("requests_inline_total", "counter", "Requests the reactor ran itself.", &inline);
    let slow = [("", net.slow_clients_closed)];
    family("slow_clients_closed_total", "counter", "Clients closed for leaving replies unread.", &slow);
    let idle = [("", net.connections_closed_idle)];
    family("connections_closed_idle_total", "counter", "Connections closed for sending nothing.", &idle);
    let no_fd = [("", net.connections_dropped_no_fd)];
    let help = "Connections closed at once for want of file descriptors.";
    family("connections_dropped_no_fd_total", "counter", help, &no_fd);
    let auth = [("", net.auth_failures)];
    family(
        "auth_failures_total",
        "counter",
        "Wrong tokens presented (auth ops and HTTP bearer tokens).",
        &auth,
    );
    let labels: Vec<String> = OpKind::ALL.iter().map(|k| format!("{{op=\"{}\"}}", k.name())).collect();
    let ops: Vec<(&str, u64)> =
        OpKind::ALL.iter().zip(&labels).map(|(k, l)| (l.as_str(), s.op(*k))).collect();
    family("ops_total", "counter", "Ops executed, by kind.", &ops);
    family("errors_total", "counter", "Error replies.", &[("", s.errors)]);
    family("hits_total", "counter", "Reads that found their key.", &[("", s.hits)]);
    family("misses_total", "counter", "Reads that did not find their key.", &[("", s.misses)]);
    let tiers = [("{tier=\"memory\"}", store.reads_memory), ("{tier=\"disk\"}", store.reads_disk)];
    family("reads_total", "counter", "Reads served, by tier.", &tiers);
    family("evictions_total", "counter", "Values dropped from RAM.", &[("", store.evictions)]);
    let expired = [("{how=\"lazy\"}", store.expired_lazy), ("{how=\"sweep\"}", store.expired_sweep)];
    family("expired_total", "counter", "Expired entries removed.", &expired);
    family("keys", "gauge", "Entries held.", &[("", store.keys)]);
    family("banks", "gauge", "Banks.", &[("", store.banks)]);
    family("memory_bytes", "gauge", "Bytes of values held in RAM.", &[("", store.memory_bytes)]);
    let used = [
        ("{part=\"entries\"}", store.memory_used.saturating_sub(store.memory_index + store.memory_banks)),
        ("{part=\"index\"}", store.memory_index),
        ("{part=\"banks\"}", store.memory_banks),
    ];
    family("memory_used_bytes", "gauge", "Bytes counted against memory_max_bytes, by part.", &used);
    family("memory_max_bytes", "gauge", "memory_max_bytes.", &[("", store.memory_max)]);
    let stored = [("", store.value_bytes)];
    family("stored_bytes", "gauge", "Bytes of keys and values held, in RAM or on disk.", &stored);
    family("volume_reuses_total", "counter", "Volumes reused.", &[("", store.volume_reuses)]);
    family("crc_failures_total", "counter", "Damaged records found.", &[("", store.crc_failures)]);
    let dropped = [
        ("{cause=\"damaged\"}", store.recovery_damaged),
        ("{cause=\"unprovable\"}", store.recovery_unprovable),
        ("{cause=\"recycled\"}", store.recovery_recycled),
    ];
    family("recovery_dropped", "gauge", "What start-up dropped, by cause.", &dropped);
    let (buckets, sum_us) = latency;
    let _ = writeln!(out, "# HELP bankcache_request_duration_seconds Time to run one request in a worker.");
    let _ = writeln!(out, "# TYPE bankcache_request_duration_seconds histogram");
    let mut cumulative = 0;
    for (i, count) in buckets.iter().enumerate() {
        cumulative += count;
        let le =
            LATENCY_BUCKETS_US.get(i).map_or_else(|| "+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
        let _ = writeln!(out, "bankcache_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "bankcache_request_duration_seconds_sum {}", *sum_us as f64 / 1e6);
    let _ = writeln!(out, "bankcache_request_duration_seconds_count {cumulative}");
    out
}
