//! The JSON front: a request frame becomes an op, the op's outcome becomes a reply line in the original's
//! envelope. The REST routes write the same envelope with [`encode`].
//!
//! Access control happens here too: on a connection that has not authenticated ([`Auth::Locked`]) every op
//! but `auth` is refused unrun; an `auth` moves the connection's standing on.

use bankcache_proto::{Limits, OpKind, Reply, RequestError};

use crate::auth::Auth;
use crate::cmd::{self, Context, Outcome};
use crate::stats::WorkerCounters;
use crate::store::{Access, Keep};

/// Which ops a caller lets run, and whether it may wait for a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Every op, waiting for locks as needed: a worker with nothing queued behind the job.
    Any,
    /// Only ops of bounded cost ([`bankcache_proto::Scope::is_bounded`]), waiting for locks: a worker with
    /// other connections' jobs behind this one, which a walk over a bank would hold up.
    Bounded,
    /// Only ops of bounded cost, and only when the locks they need are free: the reactor thread, which must
    /// never run a walk over a bank or wait on a lock.
    BoundedNoWait,
}

impl Gate {
    /// How an op of `kind` may run behind this gate, if at all.
    pub fn admits(self, kind: bankcache_proto::OpKind) -> Option<Access> {
        match self {
            Gate::Any => Some(Access::Wait),
            Gate::Bounded => kind.scope().is_bounded().then_some(Access::Wait),
            Gate::BoundedNoWait => kind.scope().is_bounded().then_some(Access::Try),
        }
    }
}

/// What [`run`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// The frame was answered.
    Answered,
    /// An `auth` op was answered ok. Its frame holds the token, so it is never logged.
    Authenticated,
    /// An `auth` op with the wrong token was answered with an error: the caller stops the job there, so
    /// that the reactor decides when the connection's next requests run ([`crate::auth::Throttle`]), and
    /// closes the connection after the reply when `close` (its last allowed failure).
    AuthFailed {
        /// The connection has used up its failures.
        close: bool,
    },
    /// The gate kept the op from running, or a lock it needed was taken: nothing was done, written or
    /// counted.
    Declined,
}

/// Runs one request frame as of `now` for a connection standing at `auth`, and appends its reply line to
/// `out`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    ctx: &Context,
    limits: &Limits,
    counters: &WorkerCounters,
    frame: &[u8],
    now: u64,
    gate: Gate,
    auth: &mut Auth,
    out: &mut Vec<u8>,
) -> Ran {
    let op = match bankcache_proto::parse(frame, limits) {
        Ok(op) => op,
        Err(why) => {
            cmd::refuse(counters, why, |outcome| encode(&outcome, out));
            return Ran::Answered;
        }
    };
    let kind = op.kind();
    // The one check an authenticated connection pays: a comparison of a byte.
    if auth.is_locked() && kind != OpKind::Auth {
        cmd::refuse(counters, RequestError::AuthRequired, |outcome| encode(&outcome, out));
        return Ran::Answered;
    }
    let Some(access) = gate.admits(kind) else { return Ran::Declined };
    let mut refused = false;
    let respond = |outcome: Outcome<'_>| {
        refused = outcome.is_error();
        encode(&outcome, out)
    };
    if cmd::execute(ctx, counters, &op, now, access, Keep::Memory, respond).is_err() {
        return Ran::Declined;
    }
    match kind {
        OpKind::Auth if refused => Ran::AuthFailed { close: auth.fail() },
        OpKind::Auth => {
            *auth = Auth::Open;
            Ran::Authenticated
        }
        _ => Ran::Answered,
    }
}

/// Writes an outcome as the original's reply line.
pub fn encode(outcome: &Outcome<'_>, out: &mut Vec<u8>) {
    let reply = match outcome {
        Outcome::Stored { .. } | Outcome::Done => Reply::Done,
        Outcome::Value { value, served, .. } if served.is_bytes() => Reply::Bytes(value),
        Outcome::Value { value, .. } => Reply::Json(value),
        Outcome::Number(value) => Reply::Float(*value),
        Outcome::Pong => Reply::Text("pong"),
        Outcome::Keys(names) | Outcome::Banks(names) => Reply::Names(names),
        Outcome::Scan { cursor, keys } => Reply::Scan { cursor: *cursor, keys },
        Outcome::Stats(snapshot) => return Reply::Counters(&snapshot.fields()).encode(out),
        Outcome::Missing { key } => Reply::Missing { key },
        Outcome::Failed(failure) => return Reply::Error(&failure.to_string()).encode(out),
    };
    reply.encode(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;

    use crate::stats::Stats;
    use crate::store::Store;

    const LIMITS: Limits = Limits { max_key_bytes: 64, max_value_bytes: 1024 };

    fn ctx() -> Context {
        Context {
            store: Arc::new(Store::new()),
            stats: Arc::new(Stats::new(1)),
            max_reply_bytes: 1 << 20,
            auth_token: None,
        }
    }

    fn run_gated(ctx: &Context, request: &str, gate: Gate) -> (Ran, String) {
        run_as(ctx, request, gate, &mut Auth::Open)
    }

    fn run_as(ctx: &Context, request: &str, gate: Gate, auth: &mut Auth) -> (Ran, String) {
        let mut out = Vec::new();
        let now = crate::store::now_ms();
        let counters = ctx.stats.worker(0);
        let ran = super::run(ctx, &LIMITS, counters, request.as_bytes(), now, gate, auth, &mut out);
        (ran, String::from_utf8(out).unwrap())
    }

    fn run(ctx: &Context, request: &str) -> String {
        run_gated(ctx, request, Gate::Any).1
    }

    #[test]
    fn seed_sequence() {
        let c = ctx();
        assert_eq!(
            run(&c, r#"{"op":"put","bank":"b","key":"key1","value":"value1"}"#),
            "{\"status\": \"ok\", \"data\": {}}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"get","bank":"b","key":"key1"}"#),
            "{\"status\": \"ok\", \"data\": \"value1\"}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"get","bank":"b","key":"nope"}"#),
            "{\"status\": \"error\", \"message\": \"Key nope doesn't exist\"}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"put","bank":"b","key":"n","value":1}"#),
            "{\"status\": \"ok\", \"data\": {}}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"incr","bank":"b","key":"n","value":"1"}"#),
            "{\"status\": \"ok\", \"data\": 2.0}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"incr","bank":"b","key":"key1","value":1}"#),
            "{\"status\": \"error\", \"message\": \"The value for key key1 isn't a number\"}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"bank.keys","bank":"b"}"#),
            "{\"status\": \"ok\", \"data\": [\"key1\", \"n\"]}\n"
        );
        assert_eq!(run(&c, r#"{"op":"bank.list"}"#), "{\"status\": \"ok\", \"data\": [\"b\"]}\n");
    }

    const PUT: &str = r#"{"op":"put","bank":"b","key":"k","value":1}"#;
    const AUTH_REQUIRED: &str = "{\"status\": \"error\", \"message\": \"Authentication required: send \
                                 {\\\"op\\\": \\\"auth\\\", \\\"token\\\": ...} first\"}\n";
    const INVALID_TOKEN: &str = "{\"status\": \"error\", \"message\": \"Invalid token\"}\n";
    const OK: &str = "{\"status\": \"ok\", \"data\": {}}\n";

    fn locked_ctx() -> Context {
        Context { auth_token: Some(crate::auth::AuthToken::new("s3cret".into())), ..ctx() }
    }

    /// Before `auth`, every op is refused in the seed's error envelope and nothing runs: a put is not
    /// stored, and is counted only as an error.
    #[test]
    fn a_locked_connection_runs_nothing_but_auth() {
        let c = locked_ctx();
        let mut auth = Auth::new(true);
        for request in [PUT, r#"{"op":"ping"}"#, r#"{"op":"stats"}"#, r#"{"op":"bank.reset","bank":"b"}"#] {
            assert_eq!(run_as(&c, request, Gate::Any, &mut auth), (Ran::Answered, AUTH_REQUIRED.into()));
        }
        assert_eq!(auth, Auth::Locked { failures: 0 });
        assert_eq!(c.store.totals().keys, 0, "the put ran");
        let snapshot = cmd::snapshot(&c);
        assert_eq!(snapshot.op(OpKind::Put), 0);
        assert_eq!(snapshot.errors, 4);
        // Bad JSON is still answered as bad JSON (nothing can run from it anyway).
        assert_eq!(
            run_as(&c, "nope", Gate::Any, &mut auth).1,
            "{\"status\": \"error\", \"message\": \"Invalid json\"}\n"
        );
    }

    #[test]
    fn the_right_token_opens_the_connection_and_a_wrong_one_counts_and_closes_at_the_last() {
        let c = locked_ctx();
        let mut auth = Auth::new(true);
        let wrong = r#"{"op":"auth","token":"guess"}"#;
        assert_eq!(
            run_as(&c, wrong, Gate::Any, &mut auth),
            (Ran::AuthFailed { close: false }, INVALID_TOKEN.into())
        );
        assert_eq!(auth, Auth::Locked { failures: 1 });
        let right = r#"{"op":"auth","token":"s3cret"}"#;
        assert_eq!(run_as(&c, right, Gate::BoundedNoWait, &mut auth), (Ran::Authenticated, OK.into()));
        assert_eq!(auth, Auth::Open);
        assert_eq!(run_as(&c, PUT, Gate::Any, &mut auth), (Ran::Answered, OK.into()));
        assert_eq!(c.store.totals().keys, 1);
        // A wrong token locks even an open connection again.
        assert_eq!(run_as(&c, wrong, Gate::Any, &mut auth).0, Ran::AuthFailed { close: false });
        assert_eq!(run_as(&c, PUT, Gate::Any, &mut auth).1, AUTH_REQUIRED);
        assert_eq!(run_as(&c, wrong, Gate::Any, &mut auth).0, Ran::AuthFailed { close: false });
        assert_eq!(run_as(&c, wrong, Gate::Any, &mut auth).0, Ran::AuthFailed { close: true });
        assert_eq!(cmd::snapshot(&c).op(OpKind::Auth), 5);
    }

    #[test]
    fn without_a_token_auth_answers_ok_whatever_it_is_given() {
        let c = ctx();
        let mut auth = Auth::new(false);
        assert_eq!(
            run_as(&c, r#"{"op":"auth","token":"anything"}"#, Gate::Any, &mut auth),
            (Ran::Authenticated, OK.into())
        );
        assert_eq!(auth, Auth::Open);
        assert_eq!(
            run_as(&c, r#"{"op":"auth"}"#, Gate::Any, &mut auth).1,
            "{\"status\": \"error\", \"message\": \"token is required\"}\n"
        );
    }

    #[test]
    fn incr_never_stores_non_finite() {
        let c = ctx();
        run(&c, r#"{"op":"put","bank":"b","key":"n","value":1e308}"#);
        assert_eq!(
            run(&c, r#"{"op":"incr","bank":"b","key":"n","value":1e308}"#),
            "{\"status\": \"error\", \"message\": \"Incr of key n would overflow\"}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"get","bank":"b","key":"n"}"#),
            "{\"status\": \"ok\", \"data\": 1e308}\n"
        );
    }

    #[test]
    fn bytes_are_answered_in_base64() {
        let c = ctx();
        let put = r#"{"op":"put","bank":"b","key":"k","value":"AAEC/w==","encoding":"base64"}"#;
        assert_eq!(run(&c, put), "{\"status\": \"ok\", \"data\": {}}\n");
        assert_eq!(
            run(&c, r#"{"op":"get","bank":"b","key":"k"}"#),
            "{\"status\": \"ok\", \"data\": \"AAEC/w==\", \"encoding\": \"base64\"}\n"
        );
        run(&c, r#"{"op":"put","bank":"b","key":"n","value":"MTI=","encoding":"base64"}"#); // "12"
        assert_eq!(
            run(&c, r#"{"op":"incr","bank":"b","key":"n","value":1}"#),
            "{\"status\": \"ok\", \"data\": 13.0}\n"
        );
        assert_eq!(run(&c, r#"{"op":"get","bank":"b","key":"n"}"#), "{\"status\": \"ok\", \"data\": 13.0}\n");
    }

    #[test]
    fn failed_reads_create_no_bank() {
        let c = ctx();
        for op in ["get", "delete", "touch", "getouch"] {
            run(&c, &format!(r#"{{"op":"{op}","bank":"ghost","key":"k"}}"#));
        }
        run(&c, r#"{"op":"incr","bank":"ghost","key":"k","value":1}"#);
        run(&c, r#"{"op":"bank.keys","bank":"ghost"}"#);
        run(&c, r#"{"op":"bank.reset","bank":"ghost"}"#);
        assert_eq!(run(&c, r#"{"op":"bank.list"}"#), "{\"status\": \"ok\", \"data\": []}\n");
    }

    #[test]
    fn bank_scan_pages_in_the_original_reply_style() {
        let c = ctx();
        for key in ["user:1", "item:1", "user:\\u043a", "user:2"] {
            run(&c, &format!(r#"{{"op":"put","bank":"b","key":"{key}","value":1}}"#));
        }
        assert_eq!(
            run(&c, r#"{"op":"bank.scan","bank":"b","prefix":"user:","count":2}"#),
            "{\"status\": \"ok\", \"data\": {\"cursor\": 3, \"keys\": [\"user:1\", \"user:\\u043a\"]}}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"bank.scan","bank":"b","prefix":"user:","count":2,"cursor":3}"#),
            "{\"status\": \"ok\", \"data\": {\"cursor\": 0, \"keys\": [\"user:2\"]}}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"bank.scan","bank":"ghost","cursor":7}"#),
            "{\"status\": \"ok\", \"data\": {\"cursor\": 0, \"keys\": []}}\n"
        );
        assert_eq!(
            run(&c, r#"{"op":"bank.scan","bank":"b","cursor":-1}"#),
            "{\"status\": \"error\", \"message\": \"cursor must be a non-negative integer\"}\n"
        );
        let s = run(&c, r#"{"op":"stats"}"#);
        assert!(s.contains("\"ops_bank_scan\": 3"), "the refused scan is an error, not an op: {s}");
    }

    #[test]
    fn stats_counts_ops() {
        let c = ctx();
        run(&c, r#"{"op":"put","bank":"b","key":"k","value":1}"#);
        run(&c, r#"{"op":"get","bank":"b","key":"k"}"#);
        run(&c, r#"{"op":"get","bank":"b","key":"x"}"#);
        let s = run(&c, r#"{"op":"stats"}"#);
        assert!(s.contains("\"ops_put\": 1, \"ops_get\": 2"), "{s}");
        assert!(s.contains("\"hits\": 1, \"misses\": 1"), "{s}");
        assert!(s.contains("\"keys\": 1, \"banks\": 1"), "{s}");
    }

    /// The reactor's gate lets one-key ops and `ping` run and declines every op that walks a bank or the
    /// server, whatever the request's bytes say: a value that mentions `bank.keys` is still a put.
    #[test]
    fn bounded_gate_is_decided_by_the_op_kind() {
        let c = ctx();
        let runs = |request: &str| run_gated(&c, request, Gate::BoundedNoWait);
        assert_eq!(runs(r#"{"op":"put","bank":"b","key":"k","value":"bank.keys stats"}"#).0, Ran::Answered);
        assert_eq!(runs(r#"{"op":"get","bank":"b","key":"k"}"#).0, Ran::Answered);
        assert_eq!(runs(r#"{"op":"ping"}"#).0, Ran::Answered);
        assert_eq!(runs("not json").0, Ran::Answered);
        for heavy in [
            r#"{"op":"bank.keys","bank":"b"}"#,
            r#"{"op":"bank.scan","bank":"b","cursor":0}"#,
            r#"{"op":"bank.list"}"#,
            r#"{"op":"bank.reset","bank":"b"}"#,
            r#"{"op":"stats"}"#,
        ] {
            assert_eq!(runs(heavy), (Ran::Declined, String::new()), "{heavy}");
        }
        assert_eq!(run(&c, r#"{"op":"bank.keys","bank":"b"}"#), "{\"status\": \"ok\", \"data\": [\"k\"]}\n");
    }

    /// On the reactor thread an op whose bank is locked by a worker is declined, not waited for: the
    /// worker runs it instead.
    #[test]
    fn the_reactor_declines_an_op_whose_bank_is_busy() {
        let c = ctx();
        run(&c, r#"{"op":"put","bank":"b","key":"k","value":1}"#);
        let gate = |c: &Context, request: &str| run_gated(c, request, Gate::BoundedNoWait);
        let (store, stats) = (Arc::clone(&c.store), Arc::clone(&c.stats));
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            // A worker in the middle of an op on bank "b", held still.
            store.hold_bank_for_test("b", || {
                locked_tx.send(()).unwrap();
                release_rx.recv().unwrap();
            });
            stats
        });
        locked_rx.recv().unwrap();
        assert_eq!(gate(&c, r#"{"op":"get","bank":"b","key":"k"}"#), (Ran::Declined, String::new()));
        assert_eq!(gate(&c, r#"{"op":"get","bank":"other","key":"k"}"#).0, Ran::Answered);
        release_tx.send(()).unwrap();
        holder.join().unwrap();
        assert_eq!(
            gate(&c, r#"{"op":"get","bank":"b","key":"k"}"#),
            (Ran::Answered, "{\"status\": \"ok\", \"data\": 1}\n".into())
        );
    }
}
