//! bankcache: a banked JSON-over-TCP cache server.
//!
//! ```text
//!  clients ──TCP──▶ reactor (1 thread, mio Poll)                  workers (N threads)
//!                   accept, read until WouldBlock,  ──Vec<Job>──▶ parse → store → reply bytes
//!                   split requests (protocol::frame)
//!                   write replies, in order        ◀──Vec<Job>── (one send + at most one wake per batch)
//!                                                                        │
//!                                                         store: bank table → one bank lock
//! ```
//!
//! Invariants:
//! - The reactor owns every socket and never touches the store; workers never touch a socket.
//! - A connection has at most one job in flight, so its ops run and are answered in the order sent.
//!   Requests arriving meanwhile are batched into its next job.
//! - Every job carries its connection's slot *and generation*: a reply for a closed connection is dropped
//!   instead of reaching a new connection that reused the slot.
//! - Lock order: bank table (read; write only to create a bank) → one bank. No op holds two bank locks.
//!
//! Dependencies point one way: `server` → `reactor`/`worker` → `protocol` / `store`.

pub mod cmd;
pub mod config;
pub mod dispatch;
pub mod http;
pub mod json;
pub mod net;
pub mod server;
pub mod stats;
pub mod store;

pub use config::{Cli, Config, ConfigError};
pub use server::{Server, ServerError, ShutdownHandle};
