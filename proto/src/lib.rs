//! bankcache's JSON wire protocol, as pure functions of bytes, shared by the server, the client library
//! and the tools so that it is written once:
//!
//! - [`frame`]: cutting a connection's byte stream into request frames;
//! - [`op`]: the table of ops ([`Op`], [`OpKind`]), parsing a frame into an op and encoding an op as a
//!   request line;
//! - [`reply`]: every reply ([`Reply`]) in the original server's exact bytes, and decoding a reply line;
//! - [`number`]: numbers read as the original's Python `float()` read them.
//!
//! Nothing here does I/O or touches a store, so each piece is tested alone and fuzzable.

pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod number;
pub mod op;
pub mod reply;
#[cfg(test)]
mod strategies;

pub use frame::{Ending, Split, Splitter};
pub use op::{parse, Limits, Name, Op, OpKind, RequestError, Scope, Token, Value};
pub use reply::Reply;
