//! Commands: every op executed against the store, with a typed [`Outcome`].
//!
//! [`execute`] is the one place an [`Op`] meets the store; each family of ops has its own file with its
//! handlers (`kv`, `incr`, `bank`, `server`). The fronts (the JSON port, the HTTP routes) turn requests
//! into ops and encode the outcome their own way: the JSON envelope, or an HTTP status and body. Nothing
//! downstream decides anything by reading reply text.
//!
//! An outcome may borrow the value from the store (a `get` served from RAM hands over the bytes while the
//! bank's lock is held), so it is given to a callback rather than returned: the front encodes it straight
//! into its output, and the value is copied once.
//!
//! Counting happens here too, from the outcome, so every front counts alike: ops by kind, hits and misses
//! of reads, and error outcomes.

mod bank;
mod incr;
mod kv;
mod server;

use std::fmt;
use std::sync::Arc;

use bankcache_proto::number::NotANumber;
use bankcache_proto::{Op, OpKind, RequestError};

use crate::auth::AuthToken;
use crate::stats::{Snapshot, Stats, WorkerCounters};
use crate::store::{
    Access, BankFigures, FileSlice, Keep, Location, Served, Store, StoreError, TooLarge, VolumeRing,
};

/// What commands need: the store, the counters `stats` reports, how big a reply may grow, and the token
/// `auth` checks.
pub struct Context {
    /// The banks.
    pub store: Arc<Store>,
    /// The server's counters.
    pub stats: Arc<Stats>,
    /// The most bytes one reply may take (`max_output_bytes`): a listing that would be longer is refused.
    pub max_reply_bytes: usize,
    /// `auth_token`: what `auth` (and the HTTP front's bearer check) compares against; `None` when anyone
    /// may do anything.
    pub auth_token: Option<AuthToken>,
}

/// The op needs a lock that is taken, and the caller may not wait ([`Access::Try`]): nothing was done,
/// nothing answered, nothing counted. Run it again where waiting is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// What an op came to.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// A `put` was stored; `location` is where its record went, with a disk store.
    Stored {
        /// The record's place on disk.
        location: Option<Location>,
    },
    /// Done, with nothing to return (`delete`, `touch`, `bank.reset`).
    Done,
    /// A value that was read, and how it was served.
    Value {
        /// The stored bytes (JSON text unless `served` says bytes).
        value: &'a [u8],
        /// Tier, disk location, flags.
        served: Served,
        /// A value read from disk, as a pinned slice of its volume file: a front may send it from there
        /// instead of copying `value` (dropping it lets the volume go).
        file: Option<FileSlice>,
    },
    /// `incr`'s new value.
    Number(f64),
    /// `ping`'s answer.
    Pong,
    /// A bank's live keys, in insertion order.
    Keys(&'a [&'a [u8]]),
    /// A page of a bank's keys, in slot order, and the cursor the next page starts from (0: done).
    Scan {
        /// Where the next call goes on from; 0 when the scan is done.
        cursor: u64,
        /// The keys of this page.
        keys: &'a [&'a [u8]],
    },
    /// The bank names, in creation order.
    Banks(&'a [&'a [u8]]),
    /// Every counter.
    Stats(&'a Snapshot),
    /// The op's key does not exist (or has expired).
    Missing {
        /// The key, as the request named it.
        key: &'a str,
    },
    /// The op could not be done.
    Failed(Failure<'a>),
}

impl Outcome<'_> {
    /// True for outcomes a client sees as errors.
    pub fn is_error(&self) -> bool {
        matches!(self, Outcome::Missing { .. } | Outcome::Failed(_))
    }
}

/// Why an op could not be done. `Display` gives the reply's exact message.
#[derive(Debug)]
pub enum Failure<'a> {
    /// The request itself is wrong (it never reached the store).
    Request(RequestError),
    /// The store refused (disk full, value too large for memory, …).
    Store(StoreError),
    /// `incr` of a value that is not a number.
    NotANumber {
        /// The key.
        key: &'a str,
        /// What the value is instead.
        why: NotANumber,
    },
    /// `incr` whose result would not be finite.
    Overflow {
        /// The key.
        key: &'a str,
    },
    /// A listing longer than a reply may be.
    TooLarge(TooLarge),
}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Request(e) => e.fmt(f),
            Failure::Store(e) => e.fmt(f),
            Failure::NotANumber { key, why: NotANumber::Text } => {
                write!(f, "The value for key {key} isn't a number")
            }
            Failure::NotANumber { why: NotANumber::Type(t), .. } => {
                write!(f, "float() argument must be a string or a real number, not '{t}'")
            }
            Failure::Overflow { key } => write!(f, "Incr of key {key} would overflow"),
            Failure::TooLarge(TooLarge { max, listed }) => write!(
                f,
                "Reply too large: more than {listed} names, over max_output_bytes ({max}); \
                 list them a page at a time with bank.scan"
            ),
        }
    }
}

/// Executes `op` as of `now` and hands its outcome to `respond`, exactly once; with [`Access::Try`] it may
/// instead find a bank busy (or, with a disk store, the op in need of the disk) and do nothing ([`Busy`]). A
/// put keeps its value in RAM as `keep` says (the front's choice, see [`Keep`]).
#[allow(clippy::too_many_arguments)]
pub fn execute(
    ctx: &Context,
    counters: &WorkerCounters,
    op: &Op<'_>,
    now: u64,
    access: Access,
    keep: Keep,
    respond: impl FnOnce(Outcome<'_>),
) -> Result<(), Busy> {
    let kind = op.kind();
    // An op is counted before it runs, so that `stats` counts itself; one that may find a bank busy only
    // once it has run, so that a declined op counts nothing.
    let counted_at_start = access == Access::Wait;
    if counted_at_start {
        counters.op(kind);
    }
    let respond = |outcome: Outcome<'_>| {
        if !counted_at_start {
            counters.op(kind);
        }
        count(counters, kind, &outcome);
        respond(outcome)
    };
    let store = &*ctx.store;
    match op {
        Op::Put { bank, key, value, lifetime } => {
            kv::put(store, bank, key, value, *lifetime, now, access, keep, respond)?
        }
        Op::Get { bank, key } => kv::get(store, bank, key, now, false, access, respond)?,
        Op::GetTouch { bank, key } => kv::get(store, bank, key, now, true, access, respond)?,
        Op::Delete { bank, key } => kv::delete(store, bank, key, now, access, respond)?,
        Op::Touch { bank, key } => kv::touch(store, bank, key, now, access, respond)?,
        Op::Incr { bank, key, delta } => incr::run(store, bank, key, *delta, now, access, respond)?,
        // Whole-bank and server ops never run where waiting is not allowed (their scope is not bounded).
        Op::BankKeys { bank } => bank::keys(ctx, bank, now, respond),
        Op::BankScan { bank, cursor, prefix, count } => {
            bank::scan(ctx, bank, *cursor, prefix, *count, now, respond)
        }
        Op::BankList => bank::list(ctx, respond),
        Op::BankReset { bank } => bank::reset(store, bank, respond),
        Op::Ping => respond(Outcome::Pong),
        Op::Stats => server::stats(ctx, respond),
        Op::Auth { token } => server::auth(ctx, token.expose(), respond),
    }
    Ok(())
}

/// Executes `op` where waiting for a lock is allowed (the workers): it always answers.
pub fn run(
    ctx: &Context,
    counters: &WorkerCounters,
    op: &Op<'_>,
    now: u64,
    respond: impl FnOnce(Outcome<'_>),
) {
    let answered = execute(ctx, counters, op, now, Access::Wait, Keep::Memory, respond);
    debug_assert!(answered.is_ok(), "an op that may wait is never busy");
}

/// What a store call that may find a bank busy came to: the outcome, or [`Busy`].
fn settle<'a, T>(
    result: Result<T, StoreError>,
    outcome: impl FnOnce(T) -> Outcome<'a>,
) -> Result<Outcome<'a>, Busy> {
    match result {
        Ok(value) => Ok(outcome(value)),
        Err(StoreError::Busy) => Err(Busy),
        Err(e) => Ok(Outcome::Failed(Failure::Store(e))),
    }
}

/// Answers a request that was refused before it became an op (it counts as an error only).
pub fn refuse(counters: &WorkerCounters, why: RequestError, respond: impl FnOnce(Outcome<'_>)) {
    counters.error();
    respond(Outcome::Failed(Failure::Request(why)))
}

/// Counts an op's outcome: hits and misses of reads, and errors.
fn count(counters: &WorkerCounters, kind: OpKind, outcome: &Outcome<'_>) {
    let read = matches!(kind, OpKind::Get | OpKind::GetTouch);
    match outcome {
        Outcome::Value { .. } if read => counters.hit(),
        Outcome::Missing { .. } => {
            if read {
                counters.miss();
            }
            counters.error();
        }
        Outcome::Failed(_) => counters.error(),
        _ => {}
    }
}

/// Every counter of the server and its store.
pub fn snapshot(ctx: &Context) -> Snapshot {
    server::snapshot(ctx)
}

/// A page of banks with their figures, from `cursor` (see [`Store::bank_figures`]), at most `count`
/// (capped at [`BANK_PAGE_MAX`] so that one request's work stays bounded); and the cursor to go on from.
pub fn bank_figures(ctx: &Context, cursor: u64, count: u64) -> (Vec<BankFigures>, u64) {
    let cursor = usize::try_from(cursor).unwrap_or(usize::MAX);
    let count = usize::try_from(count.min(BANK_PAGE_MAX)).unwrap_or(1);
    let (page, next) = ctx.store.bank_figures(cursor, count);
    (page, next as u64)
}

/// The most banks one page of [`bank_figures`] lists.
pub const BANK_PAGE_MAX: u64 = 1000;

/// The ring of disk volumes as it stands; `None` for a memory-only store.
pub fn volume_ring(ctx: &Context) -> Option<VolumeRing> {
    ctx.store.disk().map(|d| d.ring())
}
