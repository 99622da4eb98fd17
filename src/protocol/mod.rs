//! The JSON wire protocol, as pure functions of bytes: framing, request parsing and reply encoding.
//!
//! Nothing here does I/O or touches the store, so each piece is tested alone and fuzzable.

pub mod frame;
pub mod number;
pub mod reply;
pub mod request;

pub use frame::{Split, Splitter};
pub use request::{parse, Limits, Name, Op, OpKind, RequestError, Value};
