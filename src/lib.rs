//! bankcache: a banked JSON-over-TCP cache server, with CacheFS's file API and volume store.
//!
//! ```text
//!  clients ──TCP──▶ reactor (net/, 1 thread, mio Poll)                   workers (dispatch/pool, N threads)
//!                   accept; read until drained;          ──Vec<Job>──▶  per request, its front:
//!                   split requests (proto::frame,                         json.rs or http/routes.rs
//!                   http::codec); one job per connection                  request → Op → cmd::execute
//!                   write replies, in request order      ◀──Vec<Job>──  → Outcome → reply bytes
//!                   (one send, at most one wake per batch)                        │
//!                                                                                 ▼
//!                                                        store/: bank table → one bank → volume writer
//! ```
//!
//! Where things are: `net/` the reactor thread (connections as a state machine, buffers), `dispatch/` the
//! hand-off (jobs, the worker pool, what the reactor may run itself), `json.rs` and `http/` the two fronts,
//! `cmd/` the ops (one file per family, each returning a typed [`cmd::Outcome`]), `store/` banks, the
//! memory tier and the volume store, `stats.rs` counters, `auth.rs` access control (the token, each
//! connection's standing, the brake on guessing), `access_log.rs` the HTTP access log (its writer thread,
//! the only one that writes it), `config.rs` and `server.rs` the wiring. The wire
//! protocol itself (frames, ops, replies) is the `bankcache-proto` crate, shared with the client.
//!
//! Dependencies point one way, and `tests/architecture.rs` checks it:
//! `server` → `net` → `dispatch` → `http` → `json` → `cmd` → {`store`, `stats`, `auth`} → `bankcache_proto`
//! (`net` also uses `http::codec` to split HTTP requests, and `dispatch` the `json` front directly, and
//! `access_log` to hand it lines).
//!
//! Invariants:
//! - Workers never touch a socket, nor the access log's file (they queue its lines). The reactor never
//!   touches a file, and runs an op itself only on a
//!   memory-only server, only for a connection's few requests, and only ops of bounded cost (one key, or
//!   none): the op's kind decides ([`bankcache_proto::Scope`]), never the request's bytes.
//! - A connection has at most one job out, so its ops run and are answered in the order sent. Requests
//!   arriving meanwhile are batched into its next job.
//! - Every job carries its connection's slot *and generation*: a reply for a closed connection is dropped
//!   instead of reaching a new connection that reused the slot.
//! - Lock order: bank table (read; write only to create a bank) → one bank → volume writer. No op holds
//!   two bank locks (see [`store`]).

pub mod access_log;
pub mod auth;
pub mod cmd;
pub mod config;
pub mod dispatch;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod json;
pub mod net;
pub mod server;
pub mod stats;
pub mod store;

pub use config::{Cli, Config, ConfigError};
pub use server::{Server, ServerError, ShutdownHandle};

/// The README's Rust snippets, compiled as doctests so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
