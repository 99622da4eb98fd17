//! The reactor thread: sockets, connections, buffers and timers. Nothing here runs an op; jobs go to
//! [`crate::dispatch`].

pub mod buffers;
pub mod conn;
pub mod fds;
pub mod reactor;
