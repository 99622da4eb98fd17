//! The reactor thread: sockets, connections and timers. Nothing here runs an op.

pub mod conn;
pub mod reactor;
