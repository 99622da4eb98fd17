//! The JSON wire protocol, as pure functions of bytes: framing, request parsing and reply encoding.
//!
//! Nothing here does I/O or touches the store, so each piece is tested alone and fuzzable.

pub mod frame;
pub mod number;
pub mod op;
pub mod reply;

pub use frame::{Split, Splitter};
pub use op::{parse, Limits, Name, Op, OpKind, RequestError, Value};
