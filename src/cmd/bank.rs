//! `bank.keys`, `bank.scan`, `bank.list` and `bank.reset`: ops on a whole bank, or on the list of banks.
//! Each walks its bank (or the table) a slice at a time, so that ops on the same bank keep flowing
//! meanwhile.

use bankcache_proto::op::SCAN_COUNT_MAX;

use super::{Context, Failure, Outcome};
use crate::store::Store;

/// Lists a bank's live keys in insertion order (none for a bank that does not exist); refused when the
/// list would be longer than a reply may be.
pub fn keys(ctx: &Context, bank: &str, now: u64, respond: impl FnOnce(Outcome<'_>)) {
    match ctx.store.keys(bank, now, ctx.max_reply_bytes) {
        Ok(keys) => respond(Outcome::Keys(&keys.names())),
        Err(too_large) => respond(Outcome::Failed(Failure::TooLarge(too_large))),
    }
}

/// One page of a bank's keys that start with `prefix`, from `cursor` on: at most `count` keys (capped at
/// [`SCAN_COUNT_MAX`], so one call's work is bounded whatever the client asks) and never more than a
/// reply may hold, so unlike `bank.keys` it is never refused. A bank that does not exist scans as empty.
pub fn scan(
    ctx: &Context,
    bank: &str,
    cursor: u64,
    prefix: &str,
    count: u64,
    now: u64,
    respond: impl FnOnce(Outcome<'_>),
) {
    // `SCAN_COUNT_MAX` fits any `usize` a server runs on.
    let count = usize::try_from(count.min(SCAN_COUNT_MAX)).unwrap_or(usize::MAX);
    let (keys, cursor) = ctx.store.scan(bank, cursor, prefix.as_bytes(), count, ctx.max_reply_bytes, now);
    let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    respond(Outcome::Scan { cursor, keys: &keys })
}

/// Lists the banks in creation order.
pub fn list(ctx: &Context, respond: impl FnOnce(Outcome<'_>)) {
    match ctx.store.bank_names(ctx.max_reply_bytes) {
        Ok(names) => {
            let names: Vec<&[u8]> = names.iter().map(|n| n.as_bytes()).collect();
            respond(Outcome::Banks(&names))
        }
        Err(too_large) => respond(Outcome::Failed(Failure::TooLarge(too_large))),
    }
}

/// Empties a bank; it stays listed. A bank that never existed is not created.
pub fn reset(store: &Store, bank: &str, respond: impl FnOnce(Outcome<'_>)) {
    match store.reset(bank) {
        Ok(()) => respond(Outcome::Done),
        Err(e) => respond(Outcome::Failed(Failure::Store(e))),
    }
}
