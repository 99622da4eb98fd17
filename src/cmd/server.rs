//! `stats`: every counter of the server and its store; `auth`: the token check.

use std::sync::atomic::{AtomicU64, Ordering};

use bankcache_proto::RequestError;

use super::{Context, Failure, Outcome};
use crate::stats::{Snapshot, StoreFigures};

/// Answers whether `token` is the server's: done when it is, or when no token is set (so that clients can
/// be given the token before the server is, and a rollout needs no flag day); `Invalid token` otherwise.
/// What the connection may do next is its front's business ([`crate::auth::Auth`]).
pub fn auth(ctx: &Context, token: &str, respond: impl FnOnce(Outcome<'_>)) {
    match &ctx.auth_token {
        Some(expected) if !expected.matches(token.as_bytes()) => {
            respond(Outcome::Failed(Failure::Request(RequestError::WrongToken)))
        }
        Some(_) | None => respond(Outcome::Done),
    }
}

/// Answers every counter.
pub fn stats(ctx: &Context, respond: impl FnOnce(Outcome<'_>)) {
    let snapshot = snapshot(ctx);
    respond(Outcome::Stats(&snapshot))
}

/// Sums the server's counters and reads the store's.
pub fn snapshot(ctx: &Context) -> Snapshot {
    let store = &*ctx.store;
    let totals = store.totals();
    let counters = store.counters();
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let disk = store.disk();
    ctx.stats.snapshot(StoreFigures {
        expired_lazy: load(&counters.expired_lazy),
        expired_sweep: load(&counters.expired_sweep),
        keys: totals.keys,
        banks: totals.banks,
        value_bytes: totals.bytes,
        memory_bytes: totals.memory.ram as u64,
        memory_used: totals.memory.memory as u64,
        memory_max: store.memory_max() as u64,
        memory_index: totals.memory.index as u64,
        memory_banks: totals.memory.banks as u64,
        evictions: load(&counters.evictions),
        reads_memory: load(&counters.reads_memory),
        reads_disk: load(&counters.reads_disk),
        crc_failures: disk.map_or(0, |d| d.damaged_reads()),
        volume_reuses: disk.map_or(0, |d| d.reuses()),
        recovery_damaged: load(&counters.recovery_damaged),
        recovery_unprovable: load(&counters.recovery_unprovable),
        recovery_recycled: load(&counters.recovery_recycled),
    })
}
